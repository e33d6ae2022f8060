/* tier_key.c — block key encoding (see tier_key.h). */
#include "tier_key.h"

#include <stdio.h>
#include <string.h>

void tier_be64_put(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}
void tier_be32_put(uint8_t *p, uint32_t v) {
    for (int i = 3; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}
uint64_t tier_be64_get(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}
uint32_t tier_be32_get(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = (v << 8) | p[i];
    return v;
}

int tier_key_check_tenant(const char *tenant, char *err, size_t errlen) {
    if (!tenant || !*tenant) {
        if (err && errlen)
            snprintf(err, errlen, "tenant is empty (1..%d bytes needed)", TIER_KEY_TENANT_MAX);
        return -1;
    }
    size_t n = strnlen(tenant, TIER_KEY_TENANT_MAX + 1);
    if (n > TIER_KEY_TENANT_MAX) {
        if (err && errlen)
            snprintf(err, errlen, "tenant '%.16s...' is longer than %d bytes", tenant,
                     TIER_KEY_TENANT_MAX);
        return -1;
    }
    return 0;
}

int tier_key_tenant_name_check(const char *tenant, char *err, size_t errlen) {
    if (tier_key_check_tenant(tenant, err, errlen) != 0)
        return -1;
    for (const char *p = tenant; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '.' || ch == '_' || ch == '-')
            continue;
        if (err && errlen)
            snprintf(err, errlen,
                     "tenant name has byte 0x%02x at offset %zu; allowed: 1..%d characters of "
                     "[A-Za-z0-9._-]",
                     ch, (size_t)(p - tenant), TIER_KEY_TENANT_MAX);
        return -1;
    }
    return 0;
}

size_t tier_key_prefix_tenant(const char *tenant, uint8_t *buf) {
    if (tier_key_check_tenant(tenant, NULL, 0) != 0)
        return 0;
    size_t n = strlen(tenant);
    memcpy(buf, tenant, n);
    buf[n] = 0;
    return n + 1;
}

size_t tier_key_prefix_seq(const char *tenant, uint64_t seq, uint8_t *buf) {
    size_t n = tier_key_prefix_tenant(tenant, buf);
    if (!n)
        return 0;
    tier_be64_put(buf + n, seq);
    return n + 8;
}

size_t tier_key_prefix_layer(const char *tenant, uint64_t seq, uint32_t layer, uint8_t *buf) {
    size_t n = tier_key_prefix_seq(tenant, seq, buf);
    if (!n)
        return 0;
    tier_be32_put(buf + n, layer);
    return n + 4;
}

size_t tier_key_encode(const char *tenant, uint64_t seq, uint32_t layer, uint32_t block,
                       uint8_t *buf) {
    size_t n = tier_key_prefix_layer(tenant, seq, layer, buf);
    if (!n)
        return 0;
    tier_be32_put(buf + n, block);
    return n + 4;
}

size_t tier_key_upper_bound(const uint8_t *prefix, size_t len, uint8_t *out) {
    if (out != prefix)
        memmove(out, prefix, len);
    while (len > 0) {
        if (out[len - 1] != 0xFF) {
            out[len - 1]++;
            return len;
        }
        len--; /* drop trailing 0xFF and carry into the byte before */
    }
    return 0;
}

int tier_key_decode(const uint8_t *buf, size_t len, char *tenant_out, uint64_t *seq,
                    uint32_t *layer, uint32_t *block) {
    const uint8_t *nul =
        memchr(buf, 0, len < TIER_KEY_TENANT_MAX + 1 ? len : TIER_KEY_TENANT_MAX + 1);
    if (!nul || nul == buf)
        return -1;
    size_t tn = (size_t)(nul - buf);
    if (len != tn + 1 + 16)
        return -1;
    memcpy(tenant_out, buf, tn);
    tenant_out[tn] = 0;
    const uint8_t *p = nul + 1;
    *seq = tier_be64_get(p);
    *layer = tier_be32_get(p + 8);
    *block = tier_be32_get(p + 12);
    return 0;
}
