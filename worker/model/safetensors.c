/* safetensors.c - validating safetensors parser (pure) and mmap opener. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static void st_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void st_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ dtypes */

typedef struct {
    const char *name;
    int size;      /* bytes per element */
    int supported; /* maps to a dtype_t */
    dtype_t dt;
} st_dtype_info_t;

/* Every dtype of the safetensors spec with a whole-byte element size. */
static const st_dtype_info_t st_dtypes[] = {
    {"F32", 4, 1, DT_F32},     {"F16", 2, 1, DT_F16},     {"BF16", 2, 1, DT_BF16},
    {"F64", 8, 0, DT_F32},     {"I64", 8, 0, DT_F32},     {"U64", 8, 0, DT_F32},
    {"I32", 4, 0, DT_F32},     {"U32", 4, 0, DT_F32},     {"I16", 2, 0, DT_F32},
    {"U16", 2, 0, DT_F32},     {"I8", 1, 0, DT_F32},      {"U8", 1, 0, DT_F32},
    {"BOOL", 1, 0, DT_F32},    {"F8_E4M3", 1, 0, DT_F32}, {"F8_E5M2", 1, 0, DT_F32},
    {"F8_E8M0", 1, 0, DT_F32},
};

static const st_dtype_info_t *st_dtype_lookup(const char *s) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(st_dtypes[i].name, s) == 0)
            return &st_dtypes[i];
    return NULL;
}

/* ------------------------------------------------------------------ helpers */

void st_shape_str(int ndim, const int64_t *shape, char *buf, size_t buflen) {
    size_t off = 0;
    if (buflen == 0)
        return;
    buf[0] = '\0';
    off += (size_t)snprintf(buf + off, buflen - off, "[");
    for (int i = 0; i < ndim && off < buflen; i++)
        off +=
            (size_t)snprintf(buf + off, buflen - off, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (off < buflen)
        snprintf(buf + off, buflen - off, "]");
}

/* A JSON number that is a non-negative integer <= 2^53 (exact in a double). */
static int st_json_u64(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    if (!(d >= 0.0 && d <= 9007199254740992.0))
        return -1; /* also rejects NaN */
    uint64_t u = (uint64_t)d;
    if ((double)u != d)
        return -1;
    *out = u;
    return 0;
}

static int st_cmp_name(const void *a, const void *b) {
    return strcmp(((const st_tensor_t *)a)->name, ((const st_tensor_t *)b)->name);
}

static int st_cmp_begin(const void *a, const void *b) {
    const st_tensor_t *x = *(const st_tensor_t *const *)a, *y = *(const st_tensor_t *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

/* Parses one header entry into t. Returns 0 or -1 with err. */
static int st_parse_entry(const cJSON *e, const char *label, st_tensor_t *t, char *err,
                          size_t errlen) {
    const char *name = e->string;
    if (!cJSON_IsObject(e)) {
        st_err(err, errlen, "%s: tensor %s: header entry is not a JSON object", label, name);
        return -1;
    }
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(jd) || !cJSON_IsArray(js) || !cJSON_IsArray(jo)) {
        st_err(err, errlen,
               "%s: tensor %s: header entry needs \"dtype\" (string), \"shape\" and "
               "\"data_offsets\" (arrays)",
               label, name);
        return -1;
    }
    const st_dtype_info_t *di = st_dtype_lookup(jd->valuestring);
    if (!di) {
        st_err(err, errlen, "%s: tensor %s: unknown dtype '%.32s'", label, name, jd->valuestring);
        return -1;
    }
    t->dtype_str = di->name;
    t->supported = di->supported;
    t->dtype = di->dt;
    int nd = cJSON_GetArraySize(js);
    if (nd > ST_MAX_DIMS) {
        st_err(err, errlen, "%s: tensor %s: %d dimensions, at most %d supported", label, name, nd,
               ST_MAX_DIMS);
        return -1;
    }
    t->ndim = nd;
    uint64_t numel = 1;
    int i = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, js) {
        uint64_t v;
        if (st_json_u64(d, &v) != 0 || v > (uint64_t)INT64_MAX) {
            st_err(err, errlen, "%s: tensor %s: shape entry %d is not a non-negative integer",
                   label, name, i);
            return -1;
        }
        t->shape[i++] = (int64_t)v;
        if (__builtin_mul_overflow(numel, v, &numel)) {
            st_err(err, errlen, "%s: tensor %s: shape overflows", label, name);
            return -1;
        }
    }
    uint64_t off[2];
    if (cJSON_GetArraySize(jo) != 2 || st_json_u64(cJSON_GetArrayItem(jo, 0), &off[0]) != 0 ||
        st_json_u64(cJSON_GetArrayItem(jo, 1), &off[1]) != 0) {
        st_err(err, errlen, "%s: tensor %s: data_offsets must be two non-negative integers", label,
               name);
        return -1;
    }
    if (off[1] < off[0]) {
        st_err(err, errlen, "%s: tensor %s: data_offsets [%llu,%llu] end before they begin", label,
               name, (unsigned long long)off[0], (unsigned long long)off[1]);
        return -1;
    }
    t->begin = off[0];
    t->end = off[1];
    uint64_t need;
    if (__builtin_mul_overflow(numel, (uint64_t)di->size, &need) || need != off[1] - off[0]) {
        char sh[128];
        st_shape_str(t->ndim, t->shape, sh, sizeof sh);
        st_err(err, errlen, "%s: tensor %s: shape %s of %s needs %llu bytes, header gives %llu",
               label, name, sh, di->name, (unsigned long long)need,
               (unsigned long long)(off[1] - off[0]));
        return -1;
    }
    return 0;
}

/* Sorted by begin: overlaps, gaps, and entries past the buffer. */
static int st_check_layout(st_file_t *f, char *err, size_t errlen) {
    int n = f->n_tensors;
    if (n == 0) {
        if (f->buf_len != 0) {
            st_err(err, errlen, "%s: no tensors but %llu bytes of data", f->label,
                   (unsigned long long)f->buf_len);
            return -1;
        }
        return 0;
    }
    st_tensor_t **order = malloc((size_t)n * sizeof *order);
    if (!order) {
        st_err(err, errlen, "%s: out of memory", f->label);
        return -1;
    }
    for (int i = 0; i < n; i++)
        order[i] = &f->tensors[i];
    qsort(order, (size_t)n, sizeof *order, st_cmp_begin);
    int rc = 0;
    uint64_t pos = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const st_tensor_t *t = order[i];
        if (t->end > f->buf_len) {
            st_err(err, errlen,
                   "%s: tensor %s: data_offsets [%llu,%llu] go beyond the data buffer (%llu "
                   "bytes): file truncated?",
                   f->label, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                   (unsigned long long)f->buf_len);
            rc = -1;
        } else if (i > 0 && t->begin < pos) {
            st_err(err, errlen,
                   "%s: tensor %s: data_offsets [%llu,%llu] overlap tensor %s ending at %llu",
                   f->label, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                   order[i - 1]->name, (unsigned long long)pos);
            rc = -1;
        } else if (t->begin > pos) {
            st_err(err, errlen,
                   "%s: bytes [%llu,%llu) of the data buffer belong to no tensor (before %s)",
                   f->label, (unsigned long long)pos, (unsigned long long)t->begin, t->name);
            rc = -1;
        }
        pos = t->end;
    }
    if (rc == 0 && pos != f->buf_len) {
        st_err(err, errlen,
               "%s: data buffer is %llu bytes but the tensors end at %llu (trailing bytes)",
               f->label, (unsigned long long)f->buf_len, (unsigned long long)pos);
        rc = -1;
    }
    free(order);
    return rc;
}

/* ------------------------------------------------------------------ parse */

int st_parse(const void *bytes, size_t len, const char *label, st_file_t **out, char *err,
             size_t errlen) {
    *out = NULL;
    const unsigned char *b = bytes;
    if (len < 8) {
        st_err(err, errlen, "%s: file is %zu bytes, too short for a safetensors header", label,
               len);
        return -1;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | b[i];
    if (n > ST_MAX_HEADER) {
        st_err(err, errlen,
               "%s: header length %llu exceeds the safetensors limit of %llu bytes: not a "
               "safetensors file?",
               label, (unsigned long long)n, ST_MAX_HEADER);
        return -1;
    }
    if (n > len - 8) {
        st_err(
            err, errlen,
            "%s: header length %llu goes beyond the end of the file (%zu bytes): file truncated?",
            label, (unsigned long long)n, len);
        return -1;
    }
    if (n < 2 || b[8] != '{') {
        st_err(err, errlen, "%s: header does not start with a JSON object", label);
        return -1;
    }
    const char *hdr = (const char *)b + 8;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)n, &end, 0);
    if (!root) {
        size_t at = end && end >= hdr ? (size_t)(end - hdr) : 0;
        st_err(err, errlen, "%s: header is not valid JSON (error near byte %zu of %llu)", label, at,
               (unsigned long long)n);
        return -1;
    }
    /* only padding (whitespace) may follow the object */
    for (const char *p = end; p && p < hdr + n; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            st_err(err, errlen,
                   "%s: header has trailing bytes after its JSON object (byte %zu of %llu)", label,
                   (size_t)(p - hdr), (unsigned long long)n);
            cJSON_Delete(root);
            return -1;
        }
    }
    if (!cJSON_IsObject(root)) {
        st_err(err, errlen, "%s: header is not a JSON object", label);
        cJSON_Delete(root);
        return -1;
    }

    st_file_t *f = calloc(1, sizeof *f);
    int count = cJSON_GetArraySize(root);
    if (f)
        f->label = strdup(label);
    if (f)
        f->tensors = calloc(count > 0 ? (size_t)count : 1, sizeof *f->tensors);
    if (!f || !f->label || !f->tensors) {
        st_err(err, errlen, "%s: out of memory", label);
        st_close(f);
        cJSON_Delete(root);
        return -1;
    }
    f->header_len = n;
    f->buf = b + 8 + n;
    f->buf_len = (uint64_t)len - 8 - n;

    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (!e->string)
            continue;
        if (strcmp(e->string, "__metadata__") == 0)
            continue;
        st_tensor_t *t = &f->tensors[f->n_tensors];
        if (st_parse_entry(e, label, t, err, errlen) != 0)
            goto fail;
        t->name = strdup(e->string);
        if (!t->name) {
            st_err(err, errlen, "%s: out of memory", label);
            goto fail;
        }
        f->n_tensors++;
    }
    cJSON_Delete(root);
    root = NULL;

    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, st_cmp_name);
    for (int i = 1; i < f->n_tensors; i++) {
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0) {
            st_err(err, errlen, "%s: tensor %s appears twice in the header", label,
                   f->tensors[i].name);
            goto fail;
        }
    }
    if (st_check_layout(f, err, errlen) != 0)
        goto fail;
    for (int i = 0; i < f->n_tensors; i++)
        f->tensors[i].data = f->buf + f->tensors[i].begin;
    *out = f;
    return 0;
fail:
    cJSON_Delete(root);
    st_close(f);
    return -1;
}

/* ------------------------------------------------------------------ files */

int st_open(const char *path, st_file_t **out, char *err, size_t errlen) {
    *out = NULL;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        st_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st_err(err, errlen, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    size_t len = (size_t)sb.st_size;
    void *map = NULL;
    if (len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            st_err(err, errlen, "%s: mmap of %zu bytes failed: %s", path, len, strerror(errno));
            close(fd);
            return -1;
        }
    }
    close(fd);
    st_file_t *f = NULL;
    static const unsigned char empty[1];
    if (st_parse(map ? map : empty, len, base, &f, err, errlen) != 0) {
        if (map)
            munmap(map, len);
        return -1;
    }
    f->map = map;
    f->map_len = len;
    *out = f;
    return 0;
}

void st_close(st_file_t *f) {
    if (!f)
        return;
    if (f->tensors)
        for (int i = 0; i < f->n_tensors; i++)
            free((void *)f->tensors[i].name);
    free(f->tensors);
    free(f->label);
    if (f->map)
        munmap(f->map, f->map_len);
    free(f);
}

const st_tensor_t *st_find(const st_file_t *f, const char *name) {
    st_tensor_t key;
    memset(&key, 0, sizeof key);
    key.name = name;
    return bsearch(&key, f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, st_cmp_name);
}
