/* pipe_conf.c - pipeline flags, checks, transport setup, stage model view
 * (see pipe_conf.h). */
#include "pipe_conf.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char PIPE_CONF_USAGE[] =
    "  --layers A-B              this rank's layers, A..B inclusive (rank 0 starts at 0;\n"
    "                            the ranks' ranges must follow each other)\n"
    "  --rank R                  0 = the driver (`run` or `serve`)\n"
    "  --world-size N            ranks in the pipeline (>= 2)\n"
    "  --transport T             socket (default: TCP, CPU processes) or nccl (GPUs)\n"
    "  --pipe-listen ADDR        socket: HOST:PORT where the previous rank connects;\n"
    "                            nccl, rank 0: gRPC address serving the NCCL id\n"
    "  --pipe-next ADDR          socket: the next rank's --pipe-listen (the last\n"
    "                            rank's next is rank 0)\n"
    "  --pipe-coordinator ADDR   nccl, ranks > 0: rank 0's --pipe-listen\n"
    "  --device N                nccl: CUDA device (default: rank % visible devices)\n"
    "  --pipe-timeout-ms N       longest wait for another rank during a generation\n"
    "                            (default 30000; setting the ring up: twice that)\n";

void pipe_conf_defaults(pipe_conf_t *c) {
    memset(c, 0, sizeof *c);
    c->transport = "socket";
    c->device = -1;
    c->timeout_ms = 30000;
    c->connect_timeout_ms = 60000;
}

static int pc_int(const char *prog, const char *flag, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "%s: %s needs an integer in [%ld, %ld] (got '%s')\n", prog, flag, lo, hi,
                s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int pipe_conf_set(pipe_conf_t *c, const char *prog, const char *flag, const char *val) {
    if (!strcmp(flag, "--layers")) {
        int a, b, n = 0;
        if (sscanf(val, "%d-%d%n", &a, &b, &n) != 2 || val[n] || a < 0 || b < a) {
            fprintf(stderr, "%s: --layers needs A-B with 0 <= A <= B (got '%s')\n", prog, val);
            return -1;
        }
        c->l0 = a;
        c->l1 = b + 1;
        c->layers_set = 1;
        return 1;
    }
    if (!strcmp(flag, "--rank"))
        return pc_int(prog, flag, val, 0, 1023, &c->rank) ? -1 : 1;
    if (!strcmp(flag, "--world-size"))
        return pc_int(prog, flag, val, 2, 1024, &c->world) ? -1 : 1;
    if (!strcmp(flag, "--device"))
        return pc_int(prog, flag, val, 0, 1023, &c->device) ? -1 : 1;
    if (!strcmp(flag, "--pipe-timeout-ms")) {
        if (pc_int(prog, flag, val, 1, INT_MAX / 2, &c->timeout_ms))
            return -1;
        c->connect_timeout_ms = 2 * c->timeout_ms;
        return 1;
    }
    if (!strcmp(flag, "--transport")) {
        if (strcmp(val, "socket") && strcmp(val, "nccl")) {
            fprintf(stderr, "%s: --transport must be socket or nccl (got '%s')\n", prog, val);
            return -1;
        }
        c->transport = val;
        return 1;
    }
    const char **dst = !strcmp(flag, "--pipe-listen")        ? &c->listen
                       : !strcmp(flag, "--pipe-next")        ? &c->next
                       : !strcmp(flag, "--pipe-coordinator") ? &c->coordinator
                                                             : NULL;
    if (!dst)
        return 0;
    if (!val[0] || !strchr(val, ':')) {
        fprintf(stderr, "%s: %s needs HOST:PORT (got '%s')\n", prog, flag, val);
        return -1;
    }
    *dst = val;
    return 1;
}

int pipe_conf_check(const pipe_conf_t *c, int n_layers, char *err, size_t errlen) {
    if (c->world < 2) {
        snprintf(err, errlen, "a pipeline needs --world-size N >= 2");
        return -1;
    }
    if (c->rank >= c->world) {
        snprintf(err, errlen, "--rank %d is not below --world-size %d", c->rank, c->world);
        return -1;
    }
    if (!c->layers_set) {
        snprintf(err, errlen, "--layers A-B is required in a pipeline");
        return -1;
    }
    if (c->l1 > n_layers) {
        snprintf(err, errlen, "--layers %d-%d: the model has layers 0-%d", c->l0, c->l1 - 1,
                 n_layers - 1);
        return -1;
    }
    if (c->rank == 0 && c->l0 != 0) {
        snprintf(err, errlen, "rank 0 embeds the tokens: its --layers must start at 0 (got %d)",
                 c->l0);
        return -1;
    }
    if (c->rank == 0 && c->l1 == n_layers) {
        snprintf(err, errlen,
                 "rank 0 has every layer (--layers 0-%d): leave layers to the other ranks",
                 n_layers - 1);
        return -1;
    }
    if (!strcmp(c->transport, "socket") && (!c->listen || !c->next)) {
        snprintf(err, errlen, "--transport socket needs --pipe-listen ADDR and --pipe-next ADDR");
        return -1;
    }
    if (!strcmp(c->transport, "nccl")) {
        if (c->rank == 0 && !c->listen) {
            snprintf(err, errlen,
                     "--transport nccl: rank 0 needs --pipe-listen ADDR (serves the id)");
            return -1;
        }
        if (c->rank > 0 && !c->coordinator) {
            snprintf(err, errlen,
                     "--transport nccl: rank %d needs --pipe-coordinator ADDR (rank 0)", c->rank);
            return -1;
        }
    }
    return 0;
}

pipe_transport_t *pipe_conf_connect(const pipe_conf_t *c, char *err, size_t errlen) {
    if (!strcmp(c->transport, "nccl"))
        return pipe_nccl_ring(c->rank, c->world, c->rank == 0 ? c->listen : c->coordinator,
                              c->device, c->connect_timeout_ms, err, errlen);
    return pipe_socket_ring(c->listen, c->next, c->connect_timeout_ms, err, errlen);
}

void pipe_model_view(const qwen3_model_t *m, int l0, int l1, qwen3_model_t *out) {
    *out = *m;
    out->cfg.n_layers = l1 - l0;
    out->layers = m->layers + l0;
    out->priv = NULL;
}

static uint32_t fnv(uint32_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}

uint32_t pipe_model_fingerprint(const qwen3_model_t *m) {
    const qwen3_config_t *c = &m->cfg;
    int v[8] = {c->vocab_size, c->hidden,     c->intermediate, c->n_layers,
                c->n_heads,    c->n_kv_heads, c->head_dim,     (int)c->dtype};
    uint32_t h = fnv(2166136261u, v, sizeof v);
    int64_t n = tensor_numel(&m->final_norm);
    for (int64_t i = 0; i < n && i < 256; i++) {
        float f = tensor_get_f32(&m->final_norm, i);
        h = fnv(h, &f, sizeof f);
    }
    for (int l = 0; l < c->n_layers; l++) {
        float f = tensor_get_f32(&m->layers[l].input_norm, 0);
        h = fnv(h, &f, sizeof f);
    }
    return h;
}
