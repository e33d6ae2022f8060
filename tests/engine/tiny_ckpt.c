/* tiny_ckpt.c - random tiny Qwen3 checkpoints and a naive reference forward. */
#include "tiny_ckpt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dtype.h"

tiny_cfg tiny_cfg_default(void) {
    tiny_cfg c = {.vocab = 96,
                  .hidden = 64,
                  .inter = 96,
                  .layers = 2,
                  .heads = 4,
                  .kv_heads = 2,
                  .head_dim = 16,
                  .rope_theta = 10000.0,
                  .eos_id = 95,
                  .tied = 1,
                  .dtype = DT_F32,
                  .seed = 1,
                  .scale = 0.25f};
    return c;
}

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}
static float rng_unif(uint64_t *s) {
    return (float)(rng_next(s) >> 40) * 0x1p-24f * 2.0f - 1.0f;
}

typedef struct {
    char name[96];
    int64_t d0, d1; /* d1 == 0: 1-D */
    int norm;       /* values around 1 */
} tspec;

static int specs(const tiny_cfg *c, tspec *t) {
    int n = 0;
#define ADD(nm, a, b, nrm)                                                                         \
    (snprintf(t[n].name, sizeof t[n].name, "%s", nm), t[n].d0 = (a), t[n].d1 = (b),                \
     t[n].norm = (nrm), n++)
    char nm[96];
    ADD("model.embed_tokens.weight", c->vocab, c->hidden, 0);
    ADD("model.norm.weight", c->hidden, 0, 1);
    if (!c->tied)
        ADD("lm_head.weight", c->vocab, c->hidden, 0);
    int q = c->heads * c->head_dim, kvw = c->kv_heads * c->head_dim;
    for (int l = 0; l < c->layers; l++) {
#define L(suffix, a, b, nrm)                                                                       \
    (snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix), ADD(nm, a, b, nrm))
        L("input_layernorm.weight", c->hidden, 0, 1);
        L("self_attn.q_proj.weight", q, c->hidden, 0);
        L("self_attn.k_proj.weight", kvw, c->hidden, 0);
        L("self_attn.v_proj.weight", kvw, c->hidden, 0);
        L("self_attn.o_proj.weight", c->hidden, q, 0);
        L("self_attn.q_norm.weight", c->head_dim, 0, 1);
        L("self_attn.k_norm.weight", c->head_dim, 0, 1);
        L("post_attention_layernorm.weight", c->hidden, 0, 1);
        L("mlp.gate_proj.weight", c->inter, c->hidden, 0);
        L("mlp.up_proj.weight", c->inter, c->hidden, 0);
        L("mlp.down_proj.weight", c->hidden, c->inter, 0);
#undef L
    }
#undef ADD
    return n;
}

static int write_file(const char *dir, const char *name, const void *buf, size_t len) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(buf, 1, len, f);
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

char *tiny_ckpt_make(const tiny_cfg *c) {
    const char *tmp = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/kvtier-tiny-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(tmpl))
        return NULL;
    char *dir = strdup(tmpl);
    char cfg[1024], eos[16] = "null";
    if (c->eos_id >= 0)
        snprintf(eos, sizeof eos, "%d", c->eos_id);
    int n = snprintf(
        cfg, sizeof cfg,
        "{\"architectures\":[\"Qwen3ForCausalLM\"],\"model_type\":\"qwen3\",\"vocab_size\":%d,"
        "\"hidden_size\":%d,\"intermediate_size\":%d,\"num_hidden_layers\":%d,"
        "\"num_attention_heads\":%d,\"num_key_value_heads\":%d,\"head_dim\":%d,"
        "\"rms_norm_eps\":1e-6,\"rope_theta\":%.1f,\"max_position_embeddings\":4096,"
        "\"tie_word_embeddings\":%s,\"eos_token_id\":%s,\"bos_token_id\":null,"
        "\"torch_dtype\":\"%s\",\"hidden_act\":\"silu\",\"attention_bias\":false}\n",
        c->vocab, c->hidden, c->inter, c->layers, c->heads, c->kv_heads, c->head_dim, c->rope_theta,
        c->tied ? "true" : "false", eos,
        c->dtype == DT_F32    ? "float32"
        : c->dtype == DT_BF16 ? "bfloat16"
                              : "float16");
    if (write_file(dir, "config.json", cfg, (size_t)n) != 0)
        goto fail;
    tspec *t = calloc(16 + 11 * (size_t)c->layers, sizeof *t);
    int nt = specs(c, t);
    size_t esz = c->dtype == DT_F32 ? 4 : 2;
    /* header */
    size_t hcap = 256 + (size_t)nt * 200, hl = 0, off = 0;
    char *hdr = malloc(hcap);
    hl += (size_t)snprintf(hdr + hl, hcap - hl, "{");
    for (int i = 0; i < nt; i++) {
        size_t bytes = (size_t)t[i].d0 * (size_t)(t[i].d1 ? t[i].d1 : 1) * esz;
        char shape[64];
        if (t[i].d1)
            snprintf(shape, sizeof shape, "[%lld,%lld]", (long long)t[i].d0, (long long)t[i].d1);
        else
            snprintf(shape, sizeof shape, "[%lld]", (long long)t[i].d0);
        hl += (size_t)snprintf(
            hdr + hl, hcap - hl,
            "%s\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}", i ? "," : "",
            t[i].name, dtype_name(c->dtype), shape, off, off + bytes);
        off += bytes;
    }
    hl += (size_t)snprintf(hdr + hl, hcap - hl, "}");
    while (hl % 8)
        hdr[hl++] = ' ';
    size_t total = 8 + hl + off;
    unsigned char *buf = malloc(total);
    uint64_t hl64 = hl;
    memcpy(buf, &hl64, 8);
    memcpy(buf + 8, hdr, hl);
    unsigned char *p = buf + 8 + hl;
    uint64_t s = c->seed * 0x9e3779b97f4a7c15ULL + 12345;
    for (int i = 0; i < nt; i++) {
        size_t ne = (size_t)t[i].d0 * (size_t)(t[i].d1 ? t[i].d1 : 1);
        for (size_t e = 0; e < ne; e++) {
            float v = t[i].norm ? 1.0f + 0.2f * rng_unif(&s) : c->scale * rng_unif(&s);
            if (c->dtype == DT_F32)
                memcpy(p, &v, 4);
            else {
                uint16_t h = c->dtype == DT_BF16 ? dtype_f32_to_bf16(v) : dtype_f32_to_f16(v);
                memcpy(p, &h, 2);
            }
            p += esz;
        }
    }
    int rc = write_file(dir, "model.safetensors", buf, total);
    free(buf);
    free(hdr);
    free(t);
    if (rc == 0)
        return dir;
fail:
    tiny_ckpt_remove(dir);
    return NULL;
}

void tiny_ckpt_remove(char *dir) {
    if (!dir)
        return;
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/generation_config.json", dir); /* a test may add one */
    unlink(p);
    rmdir(dir);
    free(dir);
}

/* ---------------------------------------------------------------- reference */

static double W(const tensor_t *t, int64_t r, int64_t c) {
    return tensor_get_f32(t, r * t->shape[1] + c);
}

static void ref_linear(const tensor_t *w, const double *x, double *y) {
    for (int64_t r = 0; r < w->shape[0]; r++) {
        double s = 0;
        for (int64_t c = 0; c < w->shape[1]; c++)
            s += W(w, r, c) * x[c];
        y[r] = s;
    }
}

static void ref_rms(const tensor_t *w, double *x, int n, double eps) {
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        x[i] = x[i] * inv * tensor_get_f32(w, i);
}

static void ref_rope(double *v, int hd, int pos, double theta) {
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        double ang = pos * pow(theta, -2.0 * i / hd);
        double a = v[i], b = v[i + half];
        v[i] = a * cos(ang) - b * sin(ang);
        v[i + half] = b * cos(ang) + a * sin(ang);
    }
}

void tiny_ref_forward(const qwen3_model_t *m, const int *ids, int n, double *out) {
    const qwen3_config_t *c = &m->cfg;
    int H = c->hidden, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads, I = c->intermediate,
        V = c->vocab_size;
    int QW = nh * hd, KW = nkv * hd, grp = nh / nkv;
    double *x = calloc((size_t)n * H, sizeof(double)),
           *h = malloc(sizeof(double) * (size_t)(H > QW ? H : QW));
    double *q = malloc(sizeof(double) * (size_t)n * QW),
           *k = malloc(sizeof(double) * (size_t)n * KW);
    double *v = malloc(sizeof(double) * (size_t)n * KW), *att = malloc(sizeof(double) * QW);
    double *tmp = malloc(sizeof(double) * (size_t)(H > I ? H : I) * 2),
           *g = malloc(sizeof(double) * I), *u = malloc(sizeof(double) * I),
           *sc = malloc(sizeof(double) * n);
    for (int t = 0; t < n; t++)
        for (int i = 0; i < H; i++)
            x[(size_t)t * H + i] = W(&m->embed, ids[t], i);
    for (int l = 0; l < c->n_layers; l++) {
        const qwen3_layer_t *L = &m->layers[l];
        for (int t = 0; t < n; t++) {
            memcpy(h, x + (size_t)t * H, sizeof(double) * H);
            ref_rms(&L->input_norm, h, H, c->rms_eps);
            ref_linear(&L->wq, h, q + (size_t)t * QW);
            ref_linear(&L->wk, h, k + (size_t)t * KW);
            ref_linear(&L->wv, h, v + (size_t)t * KW);
            for (int hh = 0; hh < nh; hh++) {
                ref_rms(&L->q_norm, q + (size_t)t * QW + hh * hd, hd, c->rms_eps);
                ref_rope(q + (size_t)t * QW + hh * hd, hd, t, c->rope_theta);
            }
            for (int hh = 0; hh < nkv; hh++) {
                ref_rms(&L->k_norm, k + (size_t)t * KW + hh * hd, hd, c->rms_eps);
                ref_rope(k + (size_t)t * KW + hh * hd, hd, t, c->rope_theta);
            }
        }
        for (int t = 0; t < n; t++) {
            for (int hh = 0; hh < nh; hh++) {
                int gk = hh / grp;
                double mx = -INFINITY, den = 0;
                for (int s = 0; s <= t; s++) {
                    double d = 0;
                    for (int i = 0; i < hd; i++)
                        d += q[(size_t)t * QW + hh * hd + i] * k[(size_t)s * KW + gk * hd + i];
                    sc[s] = d / sqrt((double)hd);
                    if (sc[s] > mx)
                        mx = sc[s];
                }
                for (int s = 0; s <= t; s++)
                    den += (sc[s] = exp(sc[s] - mx));
                for (int i = 0; i < hd; i++) {
                    double a = 0;
                    for (int s = 0; s <= t; s++)
                        a += sc[s] / den * v[(size_t)s * KW + gk * hd + i];
                    att[hh * hd + i] = a;
                }
            }
            ref_linear(&L->wo, att, tmp);
            for (int i = 0; i < H; i++)
                x[(size_t)t * H + i] += tmp[i];
        }
        for (int t = 0; t < n; t++) {
            memcpy(h, x + (size_t)t * H, sizeof(double) * H);
            ref_rms(&L->post_norm, h, H, c->rms_eps);
            ref_linear(&L->w_gate, h, g);
            ref_linear(&L->w_up, h, u);
            for (int i = 0; i < I; i++)
                g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            ref_linear(&L->w_down, g, tmp);
            for (int i = 0; i < H; i++)
                x[(size_t)t * H + i] += tmp[i];
        }
    }
    for (int t = 0; t < n; t++) {
        memcpy(h, x + (size_t)t * H, sizeof(double) * H);
        ref_rms(&m->final_norm, h, H, c->rms_eps);
        ref_linear(&m->lm_head, h, out + (size_t)t * V);
    }
    free(x), free(h), free(q), free(k), free(v), free(att), free(tmp), free(g), free(u), free(sc);
}
