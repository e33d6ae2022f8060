/* safetensors.h - validating reader for the safetensors format.
 *
 * Layout: u64 little-endian header length N, N bytes of UTF-8 JSON
 * {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
 * then the data buffer; offsets are relative to the buffer start.
 *
 * st_parse is pure (no I/O; the fuzz target drives it); st_open maps a file
 * read-only and parses it. Every check names the file (its label) and the
 * tensor: header size limits, JSON syntax, dtype, shape x dtype size ==
 * end - begin, offsets inside the buffer, no overlaps, no gaps, no duplicates.
 * Tensors keep their own dtype code; the F32/F16/BF16 ones are "supported",
 * others (I64, F64, U8, ...) are parsed and size-checked but flagged, so a
 * caller that needs them can report "dtype I64 is not supported".
 */
#ifndef KVTIER_SAFETENSORS_H
#define KVTIER_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

#define ST_MAX_HEADER 100000000ull /* the format's own limit on N */
#define ST_MAX_DIMS 4              /* Qwen3 needs 2 */

typedef struct {
    const char *name;      /* owned by the st_file_t */
    const char *dtype_str; /* "BF16", "I64", ... (static string) */
    int supported;         /* 1 when dtype is F32, F16 or BF16 */
    dtype_t dtype;         /* valid when supported */
    int ndim;              /* 0..ST_MAX_DIMS */
    int64_t shape[ST_MAX_DIMS];
    uint64_t begin, end; /* byte range in the data buffer */
    const void *data;    /* borrowed: buffer + begin */
} st_tensor_t;

typedef struct st_file {
    char *label; /* file name used in messages (owned) */
    void *map;   /* mmap base, NULL for st_parse on a borrowed buffer */
    size_t map_len;
    uint64_t header_len;      /* N */
    const unsigned char *buf; /* data buffer start (borrowed from map / caller) */
    uint64_t buf_len;
    st_tensor_t *tensors; /* [n_tensors], sorted by name (owned) */
    int n_tensors;
} st_file_t;

/* Parses a whole safetensors image `bytes[len]` (borrowed: must outlive the
 * result). `label` names it in messages. Returns 0 and *out (free with
 * st_close), or -1, *out = NULL and a message "label: ..." in err. */
int st_parse(const void *bytes, size_t len, const char *label, st_file_t **out, char *err,
             size_t errlen);

/* Opens `path`, maps it read-only (MAP_PRIVATE) and parses it; messages use
 * the file's base name. Returns 0 and *out, or -1 with err. */
int st_open(const char *path, st_file_t **out, char *err, size_t errlen);

/* Unmaps and frees. NULL is a no-op. */
void st_close(st_file_t *f);

/* The tensor called `name`, or NULL. Borrowed from f. */
const st_tensor_t *st_find(const st_file_t *f, const char *name);

/* Formats a shape as "[576,192]" into buf (always NUL-terminated). */
void st_shape_str(int ndim, const int64_t *shape, char *buf, size_t buflen);

#endif
