/* model_config.c - Qwen3 config.json parsing and validation (pure, plus a
 * small file reader).
 *
 * Accepts both key styles of Hugging Face configs: older top-level
 * `rope_theta` / `torch_dtype`, newer `rope_parameters: {rope_theta,
 * rope_type}` / `dtype`. RoPE scaling (`rope_scaling`, or the scaling keys of
 * `rope_parameters`) of type linear or yarn is read into rope_scaling_t
 * (rope_scaling.h). Rejects anything that is not a dense Qwen3 model and
 * every feature the engine does not implement (sliding window, attention
 * biases, other RoPE scaling types), so a model never runs silently wrong.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

#define CFG_MAX_DIM (1 << 20) /* sanity bound on every size */
#define CFG_MAX_VOCAB (1 << 24)

static void cfg_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void cfg_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0)
        return;
    int n = snprintf(err, errlen, "config.json: ");
    if (n < 0 || (size_t)n >= errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

/* Integer key: 0 ok, 1 absent (or null), -1 present but not an integer in [lo, hi]. */
static int cfg_int(const cJSON *root, const char *key, int lo, int hi, int *out, char *err,
                   size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v))
        return 1;
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1e300;
    if (!cJSON_IsNumber(v) || !(d >= lo && d <= hi) || d != (double)(int)d) {
        cfg_err(err, errlen, "%s must be an integer in [%d, %d]", key, lo, hi);
        return -1;
    }
    *out = (int)d;
    return 0;
}

static int cfg_req_int(const cJSON *root, const char *key, int lo, int hi, int *out, char *err,
                       size_t errlen) {
    int rc = cfg_int(root, key, lo, hi, out, err, errlen);
    if (rc == 1)
        cfg_err(err, errlen, "required key %s is missing", key);
    return rc == 0 ? 0 : -1;
}

/* A token id key that may be an int or a list of ints (first one is used). */
static int cfg_token(const cJSON *root, const char *key, int *out, char *err, size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = -1;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (cJSON_IsArray(v))
        v = cJSON_GetArrayItem(v, 0);
    if (!v)
        return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > CFG_MAX_VOCAB ||
        v->valuedouble != (double)(int)v->valuedouble) {
        cfg_err(err, errlen, "%s must be a token id (integer) or a list of them", key);
        return -1;
    }
    *out = (int)v->valuedouble;
    return 0;
}

static int cfg_dtype(const char *s, dtype_t *out) {
    if (strcmp(s, "bfloat16") == 0)
        *out = DT_BF16;
    else if (strcmp(s, "float16") == 0 || strcmp(s, "half") == 0)
        *out = DT_F16;
    else if (strcmp(s, "float32") == 0 || strcmp(s, "float") == 0)
        *out = DT_F32;
    else
        return -1;
    return 0;
}

/* Model identity: model_type "qwen3" and/or architectures containing
 * "Qwen3ForCausalLM"; whatever is given must agree. */
static int cfg_check_arch(const cJSON *root, char *err, size_t errlen) {
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    const cJSON *ar = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    int seen = 0;
    if (mt && !cJSON_IsNull(mt)) {
        if (!cJSON_IsString(mt)) {
            cfg_err(err, errlen, "model_type must be a string");
            return -1;
        }
        if (strcmp(mt->valuestring, "qwen3") != 0) {
            cfg_err(err, errlen,
                    "model_type '%.64s' is not supported: kvtier runs Qwen3 dense models "
                    "(model_type qwen3)",
                    mt->valuestring);
            return -1;
        }
        seen = 1;
    }
    if (ar && !cJSON_IsNull(ar)) {
        if (!cJSON_IsArray(ar)) {
            cfg_err(err, errlen, "architectures must be a list of strings");
            return -1;
        }
        const cJSON *a;
        cJSON_ArrayForEach(a, ar) {
            if (!cJSON_IsString(a)) {
                cfg_err(err, errlen, "architectures must be a list of strings");
                return -1;
            }
            if (strcmp(a->valuestring, "Qwen3ForCausalLM") != 0) {
                cfg_err(err, errlen,
                        "architecture '%.64s' is not supported: kvtier runs Qwen3 dense models "
                        "(Qwen3ForCausalLM)",
                        a->valuestring);
                return -1;
            }
            seen = 1;
        }
    }
    if (!seen) {
        cfg_err(err, errlen,
                "neither model_type nor architectures is given; expected model_type qwen3");
        return -1;
    }
    return 0;
}

/* Number key of a rope scaling object: 0 ok, 1 absent (or null), -1 present
 * but not a number (message written, naming `where`). */
static int cfg_rope_num(const cJSON *s, const char *where, const char *key, double *out, char *err,
                        size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, key);
    if (!v || cJSON_IsNull(v))
        return 1;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
        cfg_err(err, errlen, "%s.%s must be a number", where, key);
        return -1;
    }
    *out = v->valuedouble;
    return 0;
}

/* The rope type of a scaling object: `rope_type`, else the legacy `type`;
 * NULL when neither is given. -1 when the one given is not a string. */
static int cfg_rope_type(const cJSON *s, const char *where, const char **out, char *err,
                         size_t errlen) {
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(s, "rope_type");
    if (!ty || cJSON_IsNull(ty))
        ty = cJSON_GetObjectItemCaseSensitive(s, "type");
    *out = NULL;
    if (!ty || cJSON_IsNull(ty))
        return 0;
    if (!cJSON_IsString(ty)) {
        cfg_err(err, errlen, "%s.rope_type must be a string", where);
        return -1;
    }
    *out = ty->valuestring;
    return 0;
}

/* Fills out from one scaling object whose type is linear or yarn, with the
 * defaults of transformers' _compute_yarn_parameters. */
static int cfg_rope_factors(const cJSON *s, const char *where, int max_pos, rope_scaling_t *out,
                            char *err, size_t errlen) {
    double factor = 0;
    int rc = cfg_rope_num(s, where, "factor", &factor, err, errlen);
    if (rc < 0)
        return -1;
    if (rc == 1 || !(factor > 0)) {
        cfg_err(err, errlen, "%s.factor must be a number > 0 for rope_type %s", where,
                rope_scaling_kind_name(out->kind));
        return -1;
    }
    out->factor = factor;
    if (out->kind != ROPE_SCALING_YARN)
        return 0;
    double omax = 0, af = 0, ms = 0, msa = 0, bf = 0, bs = 0;
    if (cfg_rope_num(s, where, "original_max_position_embeddings", &omax, err, errlen) < 0 ||
        cfg_rope_num(s, where, "mscale", &ms, err, errlen) < 0 ||
        cfg_rope_num(s, where, "mscale_all_dim", &msa, err, errlen) < 0 ||
        cfg_rope_num(s, where, "beta_fast", &bf, err, errlen) < 0 ||
        cfg_rope_num(s, where, "beta_slow", &bs, err, errlen) < 0)
        return -1;
    if (!(omax >= 0 && omax <= (1 << 30) && omax == (double)(int)omax)) {
        cfg_err(err, errlen, "%s.original_max_position_embeddings must be a positive integer",
                where);
        return -1;
    }
    out->original_max_pos = omax > 0 ? (int)omax : max_pos; /* python: `or` */
    out->beta_fast = bf != 0 ? bf : 32.0;
    out->beta_slow = bs != 0 ? bs : 1.0;
    if (!(out->beta_fast > 0) || !(out->beta_slow > 0)) {
        cfg_err(err, errlen, "%s.beta_fast and beta_slow must be > 0", where);
        return -1;
    }
    rc = cfg_rope_num(s, where, "attention_factor", &af, err, errlen);
    if (rc < 0)
        return -1;
    if (rc == 0 && !(af > 0)) {
        cfg_err(err, errlen, "%s.attention_factor must be a number > 0", where);
        return -1;
    }
    out->attention_factor = rc == 0 ? af : rope_yarn_attention_factor(factor, ms, msa);
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(s, "truncate");
    if (tr && !cJSON_IsNull(tr) && !cJSON_IsBool(tr)) {
        cfg_err(err, errlen, "%s.truncate must be true or false", where);
        return -1;
    }
    out->truncate = !tr || cJSON_IsNull(tr) || cJSON_IsTrue(tr);
    return 0;
}

/* Scaling from rope_parameters (newer configs) or rope_scaling (older; the
 * type under `rope_type` or the legacy `type`): default, linear or yarn, as
 * transformers computes them; every other type is refused by name. When both
 * objects name a scaling, they must name the same type (rope_parameters is
 * used). */
static int cfg_rope_scaling(const cJSON *params, const cJSON *scaling, int max_pos,
                            rope_scaling_t *out, char *err, size_t errlen) {
    rope_scaling_none(out);
    const cJSON *use = NULL;
    const char *use_where = NULL, *use_type = NULL;
    for (int i = 0; i < 2; i++) {
        const cJSON *s = i == 0 ? params : scaling;
        const char *where = i == 0 ? "rope_parameters" : "rope_scaling";
        if (!s || cJSON_IsNull(s))
            continue;
        if (!cJSON_IsObject(s)) {
            cfg_err(err, errlen, "%s must be an object or null", where);
            return -1;
        }
        const char *ty;
        if (cfg_rope_type(s, where, &ty, err, errlen) != 0)
            return -1;
        if (!ty && i == 1) {
            cfg_err(err, errlen, "rope_scaling has no rope_type (or type)");
            return -1;
        }
        if (!ty || strcmp(ty, "default") == 0)
            continue;
        if (use) {
            if (strcmp(ty, use_type) != 0) {
                cfg_err(err, errlen,
                        "rope_parameters (rope_type '%.32s') and rope_scaling (rope_type "
                        "'%.32s') disagree",
                        use_type, ty);
                return -1;
            }
            continue;
        }
        use = s, use_where = where, use_type = ty;
    }
    if (!use)
        return 0;
    if (strcmp(use_type, "linear") == 0)
        out->kind = ROPE_SCALING_LINEAR;
    else if (strcmp(use_type, "yarn") == 0)
        out->kind = ROPE_SCALING_YARN;
    else {
        cfg_err(err, errlen,
                "%s: rope_type '%.32s' is not supported (kvtier implements default, linear "
                "and yarn)",
                use_where, use_type);
        return -1;
    }
    return cfg_rope_factors(use, use_where, max_pos, out, err, errlen);
}

/* rope_theta from the top level or rope_parameters, then the scaling. */
static int cfg_rope(const cJSON *root, qwen3_config_t *cfg, char *err, size_t errlen) {
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    const cJSON *scaling = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    const cJSON *theta = cJSON_GetObjectItemCaseSensitive(root, "rope_theta");
    if (params && !cJSON_IsNull(params)) {
        if (!cJSON_IsObject(params)) {
            cfg_err(err, errlen, "rope_parameters must be an object");
            return -1;
        }
        const cJSON *t2 = cJSON_GetObjectItemCaseSensitive(params, "rope_theta");
        if (t2 && !cJSON_IsNull(t2))
            theta = t2;
    }
    if (cfg_rope_scaling(params, scaling, cfg->max_pos, &cfg->rope_scaling, err, errlen) != 0)
        return -1;
    if (!theta || cJSON_IsNull(theta)) {
        cfg_err(err, errlen,
                "rope_theta is missing (neither rope_theta nor rope_parameters.rope_theta)");
        return -1;
    }
    if (!cJSON_IsNumber(theta) || !(theta->valuedouble > 1.0) || !(theta->valuedouble < 1e12)) {
        cfg_err(err, errlen, "rope_theta must be a number > 1");
        return -1;
    }
    cfg->rope_theta = theta->valuedouble;
    return 0;
}

/* Features the engine does not implement must be off. */
static int cfg_check_features(const cJSON *root, int n_layers, char *err, size_t errlen) {
    const char *bool_off[] = {"use_sliding_window", "attention_bias", "mlp_bias"};
    for (size_t i = 0; i < sizeof bool_off / sizeof bool_off[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, bool_off[i]);
        if (v && cJSON_IsTrue(v)) {
            cfg_err(err, errlen,
                    "%s is true: not supported by kvtier (Qwen3 dense models have it false)",
                    bool_off[i]);
            return -1;
        }
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (act && !cJSON_IsNull(act) &&
        (!cJSON_IsString(act) || strcmp(act->valuestring, "silu") != 0)) {
        cfg_err(err, errlen, "hidden_act '%.32s' is not supported (only silu)",
                cJSON_IsString(act) ? act->valuestring : "?");
        return -1;
    }
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(root, "layer_types");
    if (lt && !cJSON_IsNull(lt)) {
        if (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != n_layers) {
            cfg_err(err, errlen, "layer_types must list one type per layer (%d)", n_layers);
            return -1;
        }
        int i = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, lt) {
            if (!cJSON_IsString(t) || strcmp(t->valuestring, "full_attention") != 0) {
                cfg_err(err, errlen, "layer_types[%d] is '%.32s': only full_attention is supported",
                        i, cJSON_IsString(t) ? t->valuestring : "?");
                return -1;
            }
            i++;
        }
    }
    return 0;
}

static int cfg_fill(const cJSON *root, qwen3_config_t *c, char *err, size_t errlen) {
    if (!cJSON_IsObject(root)) {
        cfg_err(err, errlen, "not a JSON object");
        return -1;
    }
    if (cfg_check_arch(root, err, errlen) != 0)
        return -1;
    if (cfg_req_int(root, "vocab_size", 1, CFG_MAX_VOCAB, &c->vocab_size, err, errlen) ||
        cfg_req_int(root, "hidden_size", 1, CFG_MAX_DIM, &c->hidden, err, errlen) ||
        cfg_req_int(root, "intermediate_size", 1, CFG_MAX_DIM, &c->intermediate, err, errlen) ||
        cfg_req_int(root, "num_hidden_layers", 1, 4096, &c->n_layers, err, errlen) ||
        cfg_req_int(root, "num_attention_heads", 1, 4096, &c->n_heads, err, errlen))
        return -1;
    int rc = cfg_int(root, "num_key_value_heads", 1, 4096, &c->n_kv_heads, err, errlen);
    if (rc < 0)
        return -1;
    if (rc == 1)
        c->n_kv_heads = c->n_heads; /* HF default */
    if (c->n_heads % c->n_kv_heads != 0) {
        cfg_err(err, errlen, "num_attention_heads %d is not a multiple of num_key_value_heads %d",
                c->n_heads, c->n_kv_heads);
        return -1;
    }
    rc = cfg_int(root, "head_dim", 2, 65536, &c->head_dim, err, errlen);
    if (rc < 0)
        return -1;
    if (rc == 1) {
        if (c->hidden % c->n_heads != 0) {
            cfg_err(
                err, errlen,
                "head_dim is absent and hidden_size %d is not a multiple of num_attention_heads %d",
                c->hidden, c->n_heads);
            return -1;
        }
        c->head_dim = c->hidden / c->n_heads;
    }
    if (c->head_dim % 2 != 0) {
        cfg_err(err, errlen, "head_dim %d must be even (RoPE rotates pairs)", c->head_dim);
        return -1;
    }
    if ((long long)c->n_heads * c->head_dim > CFG_MAX_DIM) {
        cfg_err(err, errlen, "num_attention_heads x head_dim = %lld is too large",
                (long long)c->n_heads * c->head_dim);
        return -1;
    }
    rc = cfg_int(root, "max_position_embeddings", 1, 1 << 30, &c->max_pos, err, errlen);
    if (rc < 0)
        return -1;
    if (rc == 1)
        c->max_pos = 32768; /* HF Qwen3Config default */

    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(root, "rms_norm_eps");
    c->rms_eps = 1e-6f;
    if (eps && !cJSON_IsNull(eps)) {
        if (!cJSON_IsNumber(eps) || !(eps->valuedouble > 0.0) || !(eps->valuedouble < 1.0)) {
            cfg_err(err, errlen, "rms_norm_eps must be a number in (0, 1)");
            return -1;
        }
        c->rms_eps = (float)eps->valuedouble;
    }
    if (cfg_rope(root, c, err, errlen) != 0)
        return -1;

    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
    if (tie && !cJSON_IsNull(tie) && !cJSON_IsBool(tie)) {
        cfg_err(err, errlen, "tie_word_embeddings must be true or false");
        return -1;
    }
    c->tie_embeddings = tie && cJSON_IsTrue(tie); /* HF Qwen3Config default: false */

    if (cfg_token(root, "bos_token_id", &c->bos_id, err, errlen) ||
        cfg_token(root, "eos_token_id", &c->eos_id, err, errlen))
        return -1;

    c->dtype = DT_BF16;
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(root, "dtype");
    if (!dt || cJSON_IsNull(dt))
        dt = cJSON_GetObjectItemCaseSensitive(root, "torch_dtype");
    if (dt && !cJSON_IsNull(dt)) {
        if (!cJSON_IsString(dt) || cfg_dtype(dt->valuestring, &c->dtype) != 0) {
            cfg_err(err, errlen, "dtype '%.32s' is not supported (bfloat16, float16, float32)",
                    cJSON_IsString(dt) ? dt->valuestring : "?");
            return -1;
        }
    }
    return cfg_check_features(root, c->n_layers, err, errlen);
}

int qwen3_config_parse(const char *json, size_t len, qwen3_config_t *cfg, char *err,
                       size_t errlen) {
    memset(cfg, 0, sizeof *cfg);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        cfg_err(err, errlen, "not valid JSON (error near byte %zu)", at);
        return -1;
    }
    int rc = cfg_fill(root, cfg, err, errlen);
    cJSON_Delete(root);
    if (rc != 0)
        memset(cfg, 0, sizeof *cfg);
    return rc;
}

int qwen3_config_load(const char *path, qwen3_config_t *cfg, char *err, size_t errlen) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            if (cap >= (16u << 20)) {
                snprintf(err, errlen, "%s: larger than 16 MiB, not a config.json", path);
                free(buf);
                fclose(fp);
                return -1;
            }
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) {
                snprintf(err, errlen, "%s: out of memory", path);
                free(buf);
                fclose(fp);
                return -1;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, fp);
        len += got;
        if (got == 0)
            break;
    }
    int ioerr = ferror(fp);
    fclose(fp);
    if (ioerr) {
        snprintf(err, errlen, "%s: read error", path);
        free(buf);
        return -1;
    }
    int rc = qwen3_config_parse(buf, len, cfg, err, errlen);
    free(buf);
    return rc;
}
