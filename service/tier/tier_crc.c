/* tier_crc.c — crc32c through ISA-L.
 *
 * ISA-L's crc32_iscsi() works on the raw register: it neither inverts the
 * seed on entry nor the result on exit. The standard crc32c (init ~0, final
 * xor ~0, check value 0xE3069283 for "123456789") is therefore
 * ~crc32_iscsi(buf, len, ~crc). Passing the previous standard result as
 * `crc` chains calls over split buffers. */
#include <isa-l/crc.h>
#include <limits.h>

#include "tier.h"

uint32_t tier_crc32c(uint32_t crc, const void *data, size_t len) {
    const unsigned char *p = data;
    uint32_t reg = ~crc;
    while (len > 0) { /* crc32_iscsi takes an int length */
        int n = len > (size_t)INT_MAX ? INT_MAX : (int)len;
        reg = crc32_iscsi((unsigned char *)p, n, reg);
        p += n;
        len -= (size_t)n;
    }
    return ~reg;
}
