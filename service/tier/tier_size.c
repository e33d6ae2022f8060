/* tier_size.c — parse and format human-readable byte sizes. */
#include "tier_size.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static int fail(char *err, size_t errlen, const char *fmt, const char *s) {
    if (err && errlen)
        snprintf(err, errlen, fmt, s);
    return -1;
}

typedef struct unit {
    const char *name;
    uint64_t mult;
} unit;

static const unit UNITS[] = {
    {"", 1ULL},          {"b", 1ULL},
    {"k", 1ULL << 10},   {"ki", 1ULL << 10},
    {"kib", 1ULL << 10}, {"kb", 1000ULL},
    {"m", 1ULL << 20},   {"mi", 1ULL << 20},
    {"mib", 1ULL << 20}, {"mb", 1000000ULL},
    {"g", 1ULL << 30},   {"gi", 1ULL << 30},
    {"gib", 1ULL << 30}, {"gb", 1000000000ULL},
    {"t", 1ULL << 40},   {"ti", 1ULL << 40},
    {"tib", 1ULL << 40}, {"tb", 1000000000000ULL},
    {"p", 1ULL << 50},   {"pi", 1ULL << 50},
    {"pib", 1ULL << 50}, {"pb", 1000000000000000ULL},
};

int tier_size_parse(const char *s, uint64_t *out, char *err, size_t errlen) {
    if (!s || !*s)
        return fail(err, errlen, "empty size%s", "");
    const char *p = s;
    /* integer part and optional fraction, digits only (no sign, no exponent) */
    uint64_t ip = 0;
    int nd = 0;
    while (isdigit((unsigned char)*p)) {
        unsigned d = (unsigned)(*p - '0');
        if (ip > (UINT64_MAX - d) / 10)
            return fail(err, errlen, "size '%s' is too large", s);
        ip = ip * 10 + d;
        p++;
        nd++;
    }
    uint64_t fnum = 0, fden = 1; /* fraction fnum/fden */
    int nf = 0;
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) {
            if (fden <= UINT64_MAX / 100) { /* keep 18 digits, ignore the rest */
                fnum = fnum * 10 + (uint64_t)(*p - '0');
                fden *= 10;
            }
            p++;
            nf++;
        }
        if (nf == 0)
            return fail(err, errlen, "size '%s': digits expected after '.'", s);
    }
    if (nd == 0 && nf == 0)
        return fail(err, errlen, "size '%s' must start with a number (e.g. 512MiB, 20GiB, 4096)",
                    s);
    if (*p == ' ')
        p++;
    char u[8];
    size_t ul = strlen(p);
    if (ul >= sizeof u)
        return fail(err, errlen,
                    "size '%s': unknown unit (use B, KiB, MiB, GiB, TiB, K, M, G, KB, MB, GB)", s);
    memcpy(u, p, ul + 1);
    const unit *found = NULL;
    for (size_t i = 0; i < sizeof UNITS / sizeof UNITS[0]; i++)
        if (strcasecmp(u, UNITS[i].name) == 0)
            found = &UNITS[i];
    if (!found)
        return fail(err, errlen,
                    "size '%s': unknown unit (use B, KiB, MiB, GiB, TiB, K, M, G, KB, MB, GB)", s);
    uint64_t m = found->mult;
    if (ip != 0 && m > UINT64_MAX / ip)
        return fail(err, errlen, "size '%s' is too large", s);
    uint64_t whole = ip * m;
    /* fraction * m, exact in 128-bit to avoid float rounding of large values */
    unsigned __int128 fr = (unsigned __int128)fnum * m;
    if (fr % fden != 0)
        return fail(err, errlen, "size '%s' is not a whole number of bytes", s);
    uint64_t fb = (uint64_t)(fr / fden);
    if (whole > UINT64_MAX - fb)
        return fail(err, errlen, "size '%s' is too large", s);
    *out = whole + fb;
    return 0;
}

char *tier_size_format(uint64_t bytes, char *buf, size_t buflen) {
    static const char *names[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (!buf || buflen == 0)
        return buf;
    if (bytes < 1024) {
        snprintf(buf, buflen, "%llu B", (unsigned long long)bytes);
        return buf;
    }
    int i = 0;
    double v = (double)bytes;
    while (v >= 1024.0 && i < 6) {
        v /= 1024.0;
        i++;
    }
    if (v >= 999.5 && i < 6) { /* "1000 KiB" reads badly: show "0.98 MiB" */
        v /= 1024.0;
        i++;
    }
    const char *fmt = v < 9.995 ? "%.2f %s" : v < 99.95 ? "%.1f %s" : "%.0f %s";
    snprintf(buf, buflen, fmt, v, names[i]);
    return buf;
}
