/* tokenizer_utf8.c — UTF-8 validation, lossy conversion (U+FFFD for maximal
 * invalid subparts) and the GPT-2 byte<->unicode table. Pure logic. */
#include "tokenizer_internal.h"

#include <string.h>

/* ---------------------------------------------------------------- UTF-8 */

int tok_utf8_seq(const uint8_t *s, size_t n) {
    uint8_t b = s[0];
    if (b < 0x80)
        return 1;
    int need;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (b >= 0xC2 && b <= 0xDF) {
        need = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        if (b == 0xE0)
            lo = 0xA0; /* no overlongs */
        else if (b == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        if (b == 0xF0)
            lo = 0x90; /* no overlongs */
        else if (b == 0xF4)
            hi = 0x8F; /* <= U+10FFFF */
    } else {
        return 0; /* stray continuation, C0/C1, F5..FF */
    }
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= n)
            return -k; /* valid so far, input ends */
        uint8_t c = s[k];
        uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (c < l || c > h)
            return 0;
    }
    return need + 1;
}

size_t tok_utf8_check(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) { /* ASCII run fast path */
            i++;
            continue;
        }
        int k = tok_utf8_seq(s + i, n - i);
        if (k <= 0)
            return i;
        i += (size_t)k;
    }
    return n;
}

/* Length of the maximal subpart (valid prefix of a sequence) at s, >= 1. */
static size_t maximal_subpart(const uint8_t *s, size_t n) {
    /* tok_utf8_seq returned 0: count how many bytes form a valid prefix. */
    size_t len = 1;
    for (size_t k = 2; k <= 4 && k <= n; k++) {
        int r = tok_utf8_seq(s, k);
        if (r == -(int)k)
            len = k;
        else
            break;
    }
    return len;
}

size_t tok_utf8_lossy(const uint8_t *s, size_t n, int hold_tail, uint8_t *out, size_t *consumed) {
    size_t i = 0, o = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            out[o++] = s[i++];
            continue;
        }
        int k = tok_utf8_seq(s + i, n - i);
        if (k > 0) {
            memcpy(out + o, s + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
        } else if (k < 0) { /* unfinished sequence at the very end */
            if (hold_tail)
                break;
            out[o++] = 0xEF, out[o++] = 0xBF, out[o++] = 0xBD;
            i = n;
        } else {
            out[o++] = 0xEF, out[o++] = 0xBF, out[o++] = 0xBD;
            i += maximal_subpart(s + i, n - i);
        }
    }
    if (consumed)
        *consumed = i;
    return o;
}

/* ---------------------------------------------------------------- byte level */

/* bytes_to_unicode: printable bytes '!'..'~', 0xA1..0xAC, 0xAE..0xFF stand for
 * themselves; the other 68 bytes map, in order, to U+0100, U+0101, ... */
static int byte_is_self(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tok_byte_to_cp(uint8_t b) {
    if (byte_is_self(b))
        return b;
    unsigned n = 0; /* rank of b among the non-self bytes */
    for (unsigned x = 0; x < b; x++)
        if (!byte_is_self(x))
            n++;
    return 0x100 + n;
}

int tok_cp_to_byte(uint32_t cp) {
    if (cp < 0x100)
        return byte_is_self(cp) ? (int)cp : -1;
    if (cp >= 0x100 + 68)
        return -1;
    unsigned want = cp - 0x100, n = 0;
    for (unsigned x = 0; x < 256; x++) {
        if (byte_is_self(x))
            continue;
        if (n == want)
            return (int)x;
        n++;
    }
    return -1;
}

long tok_bytelevel_to_raw(const char *s, size_t n, uint8_t *out) {
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0, o = 0;
    while (i < n) {
        int k = tok_utf8_seq(p + i, n - i);
        if (k <= 0 || k > 2)
            return -1; /* table code points are < U+0800 */
        uint32_t cp = k == 1 ? p[i] : ((uint32_t)(p[i] & 0x1F) << 6) | (p[i + 1] & 0x3F);
        int b = tok_cp_to_byte(cp);
        if (b < 0)
            return -1;
        out[o++] = (uint8_t)b;
        i += (size_t)k;
    }
    return (long)o;
}
