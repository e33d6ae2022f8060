/* loader_fixture.c - tiny Qwen3 checkpoints written from C (see header). */
#include "loader_fixture.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dtype.h"

static uint32_t fx_hash(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

float fx_value(const char *name, int64_t i) {
    uint32_t h = fx_hash(name) + (uint32_t)i * 2654435761u;
    h ^= h >> 15;
    return (float)((int)(h % 64u) - 32) / 64.0f;
}

static size_t fx_esize(const char *dtype) {
    if (strcmp(dtype, "F32") == 0 || strcmp(dtype, "I32") == 0)
        return 4;
    if (strcmp(dtype, "I64") == 0 || strcmp(dtype, "F64") == 0)
        return 8;
    if (strcmp(dtype, "U8") == 0 || strcmp(dtype, "I8") == 0 || strcmp(dtype, "BOOL") == 0)
        return 1;
    return 2;
}

static void fx_add(fx_list_t *l, const char *name, const char *dtype, int ndim, int64_t d0,
                   int64_t d1) {
    fx_tensor_t *t = &l->t[l->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    int64_t numel = ndim == 2 ? d0 * d1 : d0;
    size_t es = fx_esize(dtype);
    t->nbytes = (size_t)numel * es;
    t->data = malloc(t->nbytes ? t->nbytes : 1);
    for (int64_t i = 0; i < numel; i++) {
        float v = fx_value(name, i);
        if (es == 4) {
            memcpy(t->data + 4 * i, &v, 4);
        } else if (strcmp(dtype, "F16") == 0) {
            uint16_t h = dtype_f32_to_f16(v);
            memcpy(t->data + 2 * i, &h, 2);
        } else {
            uint16_t h = dtype_f32_to_bf16(v);
            memcpy(t->data + 2 * i, &h, 2);
        }
    }
}

fx_list_t fx_model_list(const char *dtype, int with_lm_head) {
    fx_list_t l;
    l.n = 0;
    l.t = calloc(4 + 11 * FX_LAYERS, sizeof *l.t);
    const int64_t H = FX_HIDDEN, Q = FX_HEADS * FX_HEAD_DIM, KV = FX_KV * FX_HEAD_DIM, I = FX_INTER;
    fx_add(&l, "model.embed_tokens.weight", dtype, 2, FX_VOCAB, H);
    fx_add(&l, "model.norm.weight", dtype, 1, H, 0);
    if (with_lm_head)
        fx_add(&l, "lm_head.weight", dtype, 2, FX_VOCAB, H);
    for (int li = 0; li < FX_LAYERS; li++) {
        char n[96];
#define FX_L(suffix, nd, a, b)                                                                     \
    do {                                                                                           \
        snprintf(n, sizeof n, "model.layers.%d.%s", li, suffix);                                   \
        fx_add(&l, n, dtype, nd, a, b);                                                            \
    } while (0)
        FX_L("input_layernorm.weight", 1, H, 0);
        FX_L("self_attn.q_proj.weight", 2, Q, H);
        FX_L("self_attn.k_proj.weight", 2, KV, H);
        FX_L("self_attn.v_proj.weight", 2, KV, H);
        FX_L("self_attn.o_proj.weight", 2, H, Q);
        FX_L("self_attn.q_norm.weight", 1, FX_HEAD_DIM, 0);
        FX_L("self_attn.k_norm.weight", 1, FX_HEAD_DIM, 0);
        FX_L("post_attention_layernorm.weight", 1, H, 0);
        FX_L("mlp.gate_proj.weight", 2, I, H);
        FX_L("mlp.up_proj.weight", 2, I, H);
        FX_L("mlp.down_proj.weight", 2, H, I);
#undef FX_L
    }
    return l;
}

void fx_list_free(fx_list_t *l) {
    for (int i = 0; i < l->n; i++)
        free(l->t[i].data);
    free(l->t);
    l->t = NULL;
    l->n = 0;
}

int fx_find(const fx_list_t *l, const char *name) {
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->t[i].name, name) == 0)
            return i;
    return -1;
}

void fx_list_remove(fx_list_t *l, const char *name) {
    int i = fx_find(l, name);
    if (i < 0)
        return;
    free(l->t[i].data);
    memmove(&l->t[i], &l->t[i + 1], (size_t)(l->n - i - 1) * sizeof *l->t);
    l->n--;
}

int fx_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int rc = (n == 0 || fwrite(data, 1, n, f) == n) ? 0 : -1;
    if (fclose(f) != 0)
        rc = -1;
    return rc;
}

int fx_write_raw(const char *path, const char *header, const void *data, size_t nbytes) {
    size_t hl = strlen(header), pad = (8 - hl % 8) % 8, n = hl + pad;
    size_t total = 8 + n + nbytes;
    unsigned char *buf = malloc(total);
    if (!buf)
        return -1;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, header, hl);
    memset(buf + 8 + hl, ' ', pad);
    if (nbytes)
        memcpy(buf + 8 + n, data, nbytes);
    int rc = fx_write_file(path, buf, total);
    free(buf);
    return rc;
}

int fx_write_st(const char *path, const fx_tensor_t *ts, int n) {
    size_t cap = 256 + (size_t)n * 256, len = 0, data_len = 0;
    char *h = malloc(cap);
    for (int i = 0; i < n; i++)
        data_len += ts[i].nbytes;
    unsigned char *data = malloc(data_len ? data_len : 1);
    len += (size_t)snprintf(h + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const fx_tensor_t *t = &ts[i];
        len += (size_t)snprintf(h + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                                t->name, t->dtype);
        for (int d = 0; d < t->ndim; d++)
            len += (size_t)snprintf(h + len, cap - len, "%s%lld", d ? "," : "",
                                    (long long)t->shape[d]);
        len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%zu,%zu]}", off,
                                off + t->nbytes);
        memcpy(data + off, t->data, t->nbytes);
        off += t->nbytes;
    }
    snprintf(h + len, cap - len, "}");
    int rc = fx_write_raw(path, h, data, data_len);
    free(h);
    free(data);
    return rc;
}

const char *fx_config(int style, int tied, double rope_theta) {
    static char buf[2048];
    const char *common =
        "\"architectures\":[\"Qwen3ForCausalLM\"],\"model_type\":\"qwen3\","
        "\"vocab_size\":32,\"hidden_size\":16,\"intermediate_size\":24,"
        "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
        "\"head_dim\":8,\"rms_norm_eps\":1e-06,\"max_position_embeddings\":512,"
        "\"hidden_act\":\"silu\",\"attention_bias\":false,\"use_sliding_window\":false,"
        "\"bos_token_id\":1,\"eos_token_id\":2";
    if (style == 0)
        snprintf(buf, sizeof buf,
                 "{%s,\"rope_theta\":%.17g,\"rope_scaling\":null,\"torch_dtype\":\"bfloat16\","
                 "\"tie_word_embeddings\":%s}",
                 common, rope_theta, tied ? "true" : "false");
    else
        snprintf(buf, sizeof buf,
                 "{%s,\"rope_parameters\":{\"rope_theta\":%.17g,\"rope_type\":\"default\"},"
                 "\"dtype\":\"float16\",\"layer_types\":[\"full_attention\",\"full_attention\"],"
                 "\"tie_word_embeddings\":%s}",
                 common, rope_theta, tied ? "true" : "false");
    return buf;
}

const char *fx_path(char *buf, size_t n, const char *dir, const char *name) {
    snprintf(buf, n, "%s/%s", dir, name);
    return buf;
}

int fx_write_model(const char *dir, const fx_list_t *l, int shards, const char *config) {
    char p[512];
    if (fx_write_file(fx_path(p, sizeof p, dir, "config.json"), config, strlen(config)) != 0)
        return -1;
    if (shards <= 1)
        return fx_write_st(fx_path(p, sizeof p, dir, "model.safetensors"), l->t, l->n);
    size_t cap = 256 + (size_t)l->n * 160, len = 0;
    char *idx = malloc(cap);
    len +=
        (size_t)snprintf(idx + len, cap - len, "{\"metadata\":{\"total_size\":0},\"weight_map\":{");
    int per = (l->n + shards - 1) / shards, rc = 0;
    for (int s = 0; s < shards; s++) {
        int lo = s * per, hi = lo + per < l->n ? lo + per : l->n;
        char fn[64];
        snprintf(fn, sizeof fn, "model-%05d-of-%05d.safetensors", s + 1, shards);
        if (fx_write_st(fx_path(p, sizeof p, dir, fn), l->t + lo, hi - lo) != 0)
            rc = -1;
        for (int i = lo; i < hi; i++)
            len += (size_t)snprintf(idx + len, cap - len, "%s\"%s\":\"%s\"", i ? "," : "",
                                    l->t[i].name, fn);
    }
    snprintf(idx + len, cap - len, "}}");
    if (fx_write_file(fx_path(p, sizeof p, dir, "model.safetensors.index.json"), idx,
                      strlen(idx)) != 0)
        rc = -1;
    free(idx);
    return rc;
}

char *fx_tmpdir(void) {
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/kvtier-loader-XXXXXX", base && *base ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static int fx_rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void fx_rmtree(const char *dir) {
    if (dir)
        nftw(dir, fx_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}
