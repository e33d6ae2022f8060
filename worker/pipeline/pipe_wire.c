/* pipe_wire.c - encoding and checks of pipeline messages (see pipe_wire.h). */
#include "pipe_wire.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p) {
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

const char *pipe_op_name(uint32_t op) {
    switch (op) {
    case PIPE_OP_HELLO:
        return "HELLO";
    case PIPE_OP_FWD:
        return "FWD";
    case PIPE_OP_RESULT:
        return "RESULT";
    case PIPE_OP_CLOSE:
        return "CLOSE";
    case PIPE_OP_BYE:
        return "BYE";
    case PIPE_OP_ERROR:
        return "ERROR";
    }
    return "?";
}

void pipe_hdr_init(pipe_hdr_t *h, pipe_op op, uint32_t rank) {
    memset(h, 0, sizeof *h);
    h->version = PIPE_WIRE_VERSION;
    h->op = (uint16_t)op;
    h->rank = rank;
}

void pipe_hdr_encode(const pipe_hdr_t *h, unsigned char *out) {
    put32(out, PIPE_WIRE_MAGIC);
    out[4] = (unsigned char)h->version;
    out[5] = (unsigned char)(h->version >> 8);
    out[6] = (unsigned char)h->op;
    out[7] = (unsigned char)(h->op >> 8);
    put32(out + 8, h->rank);
    put32(out + 12, h->seq);
    put32(out + 16, (uint32_t)h->pos0);
    put32(out + 20, h->n);
    put32(out + 24, h->want);
    put32(out + 28, h->flags);
    put32(out + 32, h->width);
    put32(out + 36, 0);
    put64(out + 40, h->payload_bytes);
}

int pipe_hdr_decode(const unsigned char *in, uint64_t max_payload, pipe_hdr_t *h, char *err,
                    size_t errlen) {
    memset(h, 0, sizeof *h);
    uint32_t magic = get32(in);
    if (magic != PIPE_WIRE_MAGIC) {
        snprintf(err, errlen,
                 "bad message header: magic 0x%08x is not 0x%08x (not a kvtier pipeline peer?)",
                 magic, PIPE_WIRE_MAGIC);
        return -1;
    }
    h->version = (uint16_t)(in[4] | in[5] << 8);
    h->op = (uint16_t)(in[6] | in[7] << 8);
    if (h->version != PIPE_WIRE_VERSION) {
        snprintf(err, errlen, "bad message header: wire version %u, this build speaks %d",
                 (unsigned)h->version, PIPE_WIRE_VERSION);
        return -1;
    }
    h->rank = get32(in + 8);
    h->seq = get32(in + 12);
    h->pos0 = (int32_t)get32(in + 16);
    h->n = get32(in + 20);
    h->want = get32(in + 24);
    h->flags = get32(in + 28);
    h->width = get32(in + 32);
    uint32_t reserved = get32(in + 36);
    h->payload_bytes = get64(in + 40);
    const char *name = pipe_op_name(h->op);
    if (name[0] == '?') {
        snprintf(err, errlen, "bad message header: unknown op %u", h->op);
        return -1;
    }
    if (reserved != 0) {
        snprintf(err, errlen, "bad %s header: reserved field is %u, not 0", name, reserved);
        return -1;
    }
    if (h->payload_bytes > max_payload || h->payload_bytes > PIPE_MAX_PAYLOAD) {
        snprintf(
            err, errlen, "bad %s header: payload of %llu bytes exceeds the limit of %llu", name,
            (unsigned long long)h->payload_bytes,
            (unsigned long long)(max_payload < PIPE_MAX_PAYLOAD ? max_payload : PIPE_MAX_PAYLOAD));
        return -1;
    }
    switch (h->op) {
    case PIPE_OP_FWD:
    case PIPE_OP_RESULT: {
        uint64_t need = (uint64_t)h->n * h->width * sizeof(float);
        if ((h->n == 0 && h->op == PIPE_OP_FWD) || h->width == 0 || h->payload_bytes != need) {
            snprintf(err, errlen,
                     "bad %s header: %u rows x %u floats need %llu payload bytes, header gives "
                     "%llu",
                     name, h->n, h->width, (unsigned long long)need,
                     (unsigned long long)h->payload_bytes);
            return -1;
        }
        if (h->op == PIPE_OP_FWD && h->want > h->n) {
            snprintf(err, errlen, "bad FWD header: %u rows wanted back of %u sent", h->want, h->n);
            return -1;
        }
        if (h->pos0 < 0) {
            snprintf(err, errlen, "bad %s header: position %d < 0", name, h->pos0);
            return -1;
        }
        break;
    }
    case PIPE_OP_HELLO:
        if (h->payload_bytes != PIPE_HELLO_BYTES) {
            snprintf(err, errlen, "bad HELLO header: payload of %llu bytes, expected %d",
                     (unsigned long long)h->payload_bytes, PIPE_HELLO_BYTES);
            return -1;
        }
        break;
    case PIPE_OP_CLOSE:
    case PIPE_OP_BYE:
        if (h->payload_bytes != 0) {
            snprintf(err, errlen, "bad %s header: payload of %llu bytes, expected none", name,
                     (unsigned long long)h->payload_bytes);
            return -1;
        }
        break;
    case PIPE_OP_ERROR:
        if (h->payload_bytes > PIPE_ERRTEXT_MAX) {
            snprintf(err, errlen, "bad ERROR header: text of %llu bytes (at most %d)",
                     (unsigned long long)h->payload_bytes, PIPE_ERRTEXT_MAX);
            return -1;
        }
        break;
    }
    return 0;
}

long pipe_first_nonfinite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return (long)i;
    return -1;
}

void pipe_hello_encode(const pipe_hello_t *hl, unsigned char *out) {
    const uint32_t v[12] = {hl->world,    hl->hidden,     hl->n_layers, hl->vocab,
                            hl->n_heads,  hl->n_kv_heads, hl->head_dim, hl->max_chunk,
                            hl->kv_dtype, hl->next_layer, hl->hops,     hl->fingerprint};
    for (int i = 0; i < 12; i++)
        put32(out + 4 * i, v[i]);
}

void pipe_hello_decode(const unsigned char *in, pipe_hello_t *hl) {
    uint32_t v[12];
    for (int i = 0; i < 12; i++)
        v[i] = get32(in + 4 * i);
    hl->world = v[0];
    hl->hidden = v[1];
    hl->n_layers = v[2];
    hl->vocab = v[3];
    hl->n_heads = v[4];
    hl->n_kv_heads = v[5];
    hl->head_dim = v[6];
    hl->max_chunk = v[7];
    hl->kv_dtype = v[8];
    hl->next_layer = v[9];
    hl->hops = v[10];
    hl->fingerprint = v[11];
}
