/* model_load.c - Qwen3 checkpoint directory -> qwen3_model_t.
 *
 * config.json + model.safetensors, or shards listed by
 * model.safetensors.index.json (each shard opened once). Every tensor the
 * engine needs is looked up by its Hugging Face name, checked for a supported
 * dtype, element alignment and the shape the config implies, and bound as a
 * view into the mmap (no copies). Pages are touched once, with a progress
 * line, so that the first forward pass does not page-fault through the file.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "model.h"
#include "safetensors.h"

typedef struct {
    st_file_t **files; /* [n_files], owned */
    int n_files;
    int sharded; /* loaded through model.safetensors.index.json */
    char *dir;   /* for messages (owned) */
} load_priv_t;

static void ld_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void ld_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static char *ld_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int ld_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static double ld_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Reads a whole (small) file; NULL with err on failure. Caller frees. */
static char *ld_slurp(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        ld_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= (256u << 20)) {
                ld_err(err, errlen, "%s: too large", path);
                break;
            }
            cap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, cap);
            if (!nb) {
                ld_err(err, errlen, "%s: out of memory", path);
                break;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, fp);
        n += got;
        if (got == 0) {
            if (ferror(fp)) {
                ld_err(err, errlen, "%s: read error", path);
                break;
            }
            fclose(fp);
            *len = n;
            return buf;
        }
    }
    free(buf);
    fclose(fp);
    return NULL;
}

/* ------------------------------------------------------------------ shards */

/* Opens every shard named by the index's weight_map once and checks that
 * each listed tensor is in the shard the map names. */
static int ld_open_sharded(load_priv_t *p, const char *index_path, char *err, size_t errlen) {
    size_t len = 0;
    char *txt = ld_slurp(index_path, &len, err, errlen);
    if (!txt)
        return -1;
    const char *iname = "model.safetensors.index.json";
    cJSON *root = cJSON_ParseWithLength(txt, len);
    free(txt);
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!root || !cJSON_IsObject(wm)) {
        ld_err(err, errlen, "%s: not valid JSON with a \"weight_map\" object", iname);
        cJSON_Delete(root);
        return -1;
    }
    int cap = cJSON_GetArraySize(wm);
    p->files = calloc(cap > 0 ? (size_t)cap : 1, sizeof *p->files);
    if (!p->files) {
        ld_err(err, errlen, "%s: out of memory", iname);
        cJSON_Delete(root);
        return -1;
    }
    int rc = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e)) {
            ld_err(err, errlen, "%s: weight_map entry %s is not a file name", iname, e->string);
            rc = -1;
            break;
        }
        const char *fn = e->valuestring;
        if (fn[0] == '\0' || strchr(fn, '/') || strcmp(fn, ".") == 0 || strcmp(fn, "..") == 0) {
            ld_err(err, errlen,
                   "%s: weight_map entry %s names '%.64s', not a file in the model directory",
                   iname, e->string, fn);
            rc = -1;
            break;
        }
        st_file_t *f = NULL;
        for (int i = 0; i < p->n_files && !f; i++)
            if (strcmp(p->files[i]->label, fn) == 0)
                f = p->files[i];
        if (!f) {
            char *path = ld_join(p->dir, fn);
            if (!path || st_open(path, &f, err, errlen) != 0) {
                if (!path)
                    ld_err(err, errlen, "%s: out of memory", iname);
                free(path);
                rc = -1;
                break;
            }
            free(path);
            p->files[p->n_files++] = f;
        }
        if (!st_find(f, e->string)) {
            ld_err(err, errlen, "%s: tensor %s is listed in %s but is not in the file", fn,
                   e->string, iname);
            rc = -1;
            break;
        }
    }
    if (rc == 0 && p->n_files == 0) {
        ld_err(err, errlen, "%s: weight_map is empty", iname);
        rc = -1;
    }
    cJSON_Delete(root);
    return rc;
}

static int ld_open_files(load_priv_t *p, char *err, size_t errlen) {
    char *index = ld_join(p->dir, "model.safetensors.index.json");
    char *single = ld_join(p->dir, "model.safetensors");
    int rc = -1;
    if (!index || !single) {
        ld_err(err, errlen, "out of memory");
    } else if (ld_exists(index)) {
        p->sharded = 1;
        rc = ld_open_sharded(p, index, err, errlen);
    } else if (ld_exists(single)) {
        p->files = calloc(1, sizeof *p->files);
        if (!p->files) {
            ld_err(err, errlen, "out of memory");
        } else if (st_open(single, &p->files[0], err, errlen) == 0) {
            p->n_files = 1;
            rc = 0;
        }
    } else {
        ld_err(err, errlen, "%s: no model.safetensors or model.safetensors.index.json", p->dir);
    }
    free(index);
    free(single);
    return rc;
}

/* ------------------------------------------------------------------ binding */

static const st_tensor_t *ld_find(const load_priv_t *p, const char *name, const st_file_t **in) {
    for (int i = 0; i < p->n_files; i++) {
        const st_tensor_t *t = st_find(p->files[i], name);
        if (t) {
            *in = p->files[i];
            return t;
        }
    }
    return NULL;
}

/* Binds tensor `name` with the expected shape (ndim 1 or 2) into out.
 * `what` explains the expected shape in config terms. */
static int ld_bind(const load_priv_t *p, const char *name, int ndim, int64_t d0, int64_t d1,
                   const char *what, tensor_t *out, char *err, size_t errlen) {
    const st_file_t *f = NULL;
    const st_tensor_t *t = ld_find(p, name, &f);
    if (!t) {
        ld_err(err, errlen, "%s: required tensor %s is missing",
               p->sharded ? "model.safetensors.index.json" : "model.safetensors", name);
        return -1;
    }
    if (!t->supported) {
        ld_err(err, errlen, "%s: tensor %s has dtype %s; kvtier supports F32, F16 and BF16 weights",
               f->label, name, t->dtype_str);
        return -1;
    }
    int64_t want[2] = {d0, d1};
    if (t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1)) {
        char got[128], exp[64];
        st_shape_str(t->ndim, t->shape, got, sizeof got);
        st_shape_str(ndim, want, exp, sizeof exp);
        ld_err(err, errlen, "%s: tensor %s has shape %s, config.json implies %s (%s)", f->label,
               name, got, exp, what);
        return -1;
    }
    size_t es = dtype_size(t->dtype);
    if ((uintptr_t)t->data % es != 0) {
        ld_err(err, errlen,
               "%s: tensor %s is not aligned to its %zu-byte elements (file offset %llu)", f->label,
               name, es, (unsigned long long)(8 + f->header_len + t->begin));
        return -1;
    }
    memset(out, 0, sizeof *out);
    out->data = t->data;
    out->dtype = t->dtype;
    out->ndim = ndim;
    out->shape[0] = d0;
    if (ndim == 2)
        out->shape[1] = d1;
    out->name = t->name;
    return 0;
}

static int ld_bind_layer(const load_priv_t *p, const qwen3_config_t *c, int l, qwen3_layer_t *L,
                         char *err, size_t errlen) {
    const int64_t H = c->hidden, Q = (int64_t)c->n_heads * c->head_dim,
                  KV = (int64_t)c->n_kv_heads * c->head_dim, I = c->intermediate, D = c->head_dim;
    struct {
        const char *suffix;
        int ndim;
        int64_t d0, d1;
        const char *what;
        tensor_t *dst;
    } specs[] = {
        {"input_layernorm.weight", 1, H, 0, "hidden_size", &L->input_norm},
        {"self_attn.q_proj.weight", 2, Q, H, "num_attention_heads*head_dim, hidden_size", &L->wq},
        {"self_attn.k_proj.weight", 2, KV, H, "num_key_value_heads*head_dim, hidden_size", &L->wk},
        {"self_attn.v_proj.weight", 2, KV, H, "num_key_value_heads*head_dim, hidden_size", &L->wv},
        {"self_attn.o_proj.weight", 2, H, Q, "hidden_size, num_attention_heads*head_dim", &L->wo},
        {"self_attn.q_norm.weight", 1, D, 0, "head_dim", &L->q_norm},
        {"self_attn.k_norm.weight", 1, D, 0, "head_dim", &L->k_norm},
        {"post_attention_layernorm.weight", 1, H, 0, "hidden_size", &L->post_norm},
        {"mlp.gate_proj.weight", 2, I, H, "intermediate_size, hidden_size", &L->w_gate},
        {"mlp.up_proj.weight", 2, I, H, "intermediate_size, hidden_size", &L->w_up},
        {"mlp.down_proj.weight", 2, H, I, "hidden_size, intermediate_size", &L->w_down},
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        char name[128];
        snprintf(name, sizeof name, "model.layers.%d.%s", l, specs[i].suffix);
        if (ld_bind(p, name, specs[i].ndim, specs[i].d0, specs[i].d1, specs[i].what, specs[i].dst,
                    err, errlen) != 0)
            return -1;
    }
    return 0;
}

static int ld_bind_all(qwen3_model_t *m, char *err, size_t errlen) {
    const load_priv_t *p = m->priv;
    qwen3_config_t *c = &m->cfg;
    if (ld_bind(p, "model.embed_tokens.weight", 2, c->vocab_size, c->hidden,
                "vocab_size, hidden_size", &m->embed, err, errlen) != 0 ||
        ld_bind(p, "model.norm.weight", 1, c->hidden, 0, "hidden_size", &m->final_norm, err,
                errlen) != 0)
        return -1;
    for (int l = 0; l < c->n_layers; l++)
        if (ld_bind_layer(p, c, l, &m->layers[l], err, errlen) != 0)
            return -1;
    const st_file_t *f;
    if (c->tie_embeddings) {
        m->lm_head = m->embed; /* tied: lm_head.weight, if present, is not used (as in HF) */
    } else if (ld_find(p, "lm_head.weight", &f)) {
        if (ld_bind(p, "lm_head.weight", 2, c->vocab_size, c->hidden, "vocab_size, hidden_size",
                    &m->lm_head, err, errlen) != 0)
            return -1;
    } else {
        /* Hugging Face would start a random lm_head here: refuse, do not guess */
        ld_err(err, errlen,
               "config.json has tie_word_embeddings false (or absent: the Qwen3 default) but the "
               "checkpoint has no lm_head.weight; set \"tie_word_embeddings\": true if the "
               "output layer shares the embeddings");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ paging */

/* Touches every page of every shard (readahead hinted), printing a live
 * bytes / MB/s line when stderr is a TTY and a summary when `progress`. */
static void ld_touch(const load_priv_t *p, int progress) {
    uint64_t total = 0, done = 0;
    for (int i = 0; i < p->n_files; i++)
        total += p->files[i]->map_len;
    int tty = progress && isatty(2);
    long pg = sysconf(_SC_PAGESIZE);
    size_t step = pg > 0 ? (size_t)pg : 4096;
    double t0 = ld_now(), last = t0;
    volatile unsigned char sink = 0;
    for (int i = 0; i < p->n_files; i++) {
        const st_file_t *f = p->files[i];
        if (!f->map)
            continue;
        madvise(f->map, f->map_len, MADV_WILLNEED);
        const unsigned char *b = f->map;
        for (size_t off = 0; off < f->map_len; off += step) {
            sink ^= b[off];
            if (((off / step) & 16383) == 16383) { /* every 64 MiB of 4K pages */
                double now = ld_now();
                if (tty && now - last >= 0.1) {
                    double mb = (double)(done + off) / 1e6;
                    fprintf(stderr, "\rloading weights: %7.0f / %.0f MB  %6.0f MB/s  ", mb,
                            (double)total / 1e6, mb / (now - t0));
                    last = now;
                }
            }
        }
        done += f->map_len;
    }
    (void)sink;
    if (progress) {
        double dt = ld_now() - t0;
        fprintf(stderr, "%sloaded %s: %.1f MB in %.2f s (%.0f MB/s), %d file%s\n",
                tty ? "\r\033[K" : "", p->dir, (double)total / 1e6, dt,
                dt > 0 ? (double)total / 1e6 / dt : 0.0, p->n_files, p->n_files == 1 ? "" : "s");
    }
}

/* ------------------------------------------------------------------ api */

int qwen3_model_load(const char *dir, int progress, qwen3_model_t **out, char *err, size_t errlen) {
    *out = NULL;
    qwen3_model_t *m = calloc(1, sizeof *m);
    load_priv_t *p = calloc(1, sizeof *p);
    if (!m || !p || !(p->dir = strdup(dir))) {
        ld_err(err, errlen, "out of memory");
        free(p);
        free(m);
        return -1;
    }
    m->priv = p;
    char *cfg_path = ld_join(dir, "config.json");
    int rc = cfg_path ? qwen3_config_load(cfg_path, &m->cfg, err, errlen) : -1;
    free(cfg_path);
    if (rc == 0)
        rc = ld_open_files(p, err, errlen);
    if (rc == 0) {
        m->layers = calloc((size_t)m->cfg.n_layers, sizeof *m->layers);
        if (!m->layers) {
            ld_err(err, errlen, "out of memory");
            rc = -1;
        }
    }
    if (rc == 0)
        rc = ld_bind_all(m, err, errlen);
    if (rc != 0) {
        qwen3_model_free(m);
        return -1;
    }
    ld_touch(p, progress);
    *out = m;
    return 0;
}

void qwen3_model_free(qwen3_model_t *m) {
    if (!m)
        return;
    load_priv_t *p = m->priv;
    if (p) {
        for (int i = 0; i < p->n_files; i++)
            st_close(p->files[i]);
        free(p->files);
        free(p->dir);
        free(p);
    }
    free(m->layers);
    free(m);
}

static void ld_count(const tensor_t *t, int64_t *n, int64_t *bytes) {
    int64_t e = tensor_numel(t);
    *n += e;
    *bytes += e * (int64_t)dtype_size(t->dtype);
}

static void ld_totals(const qwen3_model_t *m, int64_t *n, int64_t *bytes) {
    *n = 0;
    *bytes = 0;
    ld_count(&m->embed, n, bytes);
    ld_count(&m->final_norm, n, bytes);
    if (m->lm_head.data != m->embed.data)
        ld_count(&m->lm_head, n, bytes);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const qwen3_layer_t *L = &m->layers[l];
        const tensor_t *ts[] = {&L->input_norm, &L->wq,     &L->wk,     &L->wv,
                                &L->wo,         &L->q_norm, &L->k_norm, &L->post_norm,
                                &L->w_gate,     &L->w_up,   &L->w_down};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
            ld_count(ts[i], n, bytes);
    }
}

int64_t qwen3_model_n_params(const qwen3_model_t *m) {
    int64_t n, b;
    ld_totals(m, &n, &b);
    return n;
}

int64_t qwen3_model_weight_bytes(const qwen3_model_t *m) {
    int64_t n, b;
    ld_totals(m, &n, &b);
    return b;
}
