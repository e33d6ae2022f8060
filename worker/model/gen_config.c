/* gen_config.c - see gen_config.h. */
#include "gen_config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int gc_err(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Optional finite number in [lo, hi] into *out (absent or null: unchanged). */
static int gc_num(const cJSON *root, const char *key, double lo, double hi, float *out,
                  const char *path, char *err, size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi)
        return gc_err(err, errlen, "%s: %s must be a number in [%g, %g]", path, key, lo, hi);
    *out = (float)v->valuedouble;
    return 0;
}

int gen_config_load(const char *dir, int vocab_size, gen_config_t *g, char *err, size_t errlen) {
    memset(g, 0, sizeof *g);
    g->temperature = 1.0f;
    g->top_p = 1.0f;
    g->top_k = 50;
    char path[4096];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        return gc_err(err, errlen, "%s: %s", path, strerror(errno));
    }
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 4096 > cap) {
            cap = cap ? cap * 2 : 8192;
            if (cap > (1u << 20)) {
                free(buf);
                fclose(f);
                return gc_err(err, errlen, "%s: larger than 1 MiB", path);
            }
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return gc_err(err, errlen, "%s: out of memory", path);
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    cJSON *root = cJSON_ParseWithLength(buf, n);
    free(buf);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return gc_err(err, errlen, "%s: not a JSON object", path);
    }
    int rc = 0;
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    if (eos && !cJSON_IsNull(eos)) {
        const cJSON *it;
        int cnt = cJSON_IsArray(eos) ? cJSON_GetArraySize(eos) : 1;
        if (cnt > GEN_CONFIG_MAX_EOS)
            rc = gc_err(err, errlen, "%s: more than %d eos_token_id values", path,
                        GEN_CONFIG_MAX_EOS);
        for (int i = 0; rc == 0 && i < cnt; i++) {
            it = cJSON_IsArray(eos) ? cJSON_GetArrayItem(eos, i) : eos;
            if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble >= vocab_size ||
                it->valuedouble != (double)(int)it->valuedouble)
                rc = gc_err(err, errlen,
                            "%s: eos_token_id must be a token id in [0, %d) or a list of them",
                            path, vocab_size);
            else
                g->eos[g->n_eos++] = (int)it->valuedouble;
        }
    }
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(root, "do_sample");
    if (rc == 0 && ds && !cJSON_IsNull(ds)) {
        if (!cJSON_IsBool(ds))
            rc = gc_err(err, errlen, "%s: do_sample must be true or false", path);
        else
            g->do_sample = cJSON_IsTrue(ds);
    }
    float k = (float)g->top_k;
    if (rc == 0)
        rc = gc_num(root, "temperature", 0, 1e6, &g->temperature, path, err, errlen);
    if (rc == 0)
        rc = gc_num(root, "top_p", 0, 1, &g->top_p, path, err, errlen);
    if (rc == 0 && g->top_p <= 0.0f)
        rc = gc_err(err, errlen, "%s: top_p must be in (0, 1]", path);
    if (rc == 0)
        rc = gc_num(root, "top_k", 0, 1e9, &k, path, err, errlen);
    if (rc == 0 && k != (float)(int)k)
        rc = gc_err(err, errlen, "%s: top_k must be an integer", path);
    g->top_k = (int)k;
    cJSON_Delete(root);
    if (rc == 0)
        g->present = 1;
    return rc;
}
