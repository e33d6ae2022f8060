/* model.h - Qwen3 dense model: configuration and weights as loaded from a
 * Hugging Face checkpoint directory (config.json + safetensors).
 *
 * This header is the contract between the loader (model_config.c,
 * safetensors.c, model_load.c) and the engine (forward pass, KV cache).
 * Weights are never expanded: each tensor is a typed view into the mmap'd
 * safetensors buffer (BF16, F16 or F32), converted on the fly by the kernels.
 */
#ifndef KVTIER_MODEL_H
#define KVTIER_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "rope_scaling.h"

typedef enum { DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2 } dtype_t;

/* A borrowed, read-only view of one tensor (row-major). */
typedef struct {
    const void *data; /* points into an mmap'd file; owned by the model */
    dtype_t dtype;
    int ndim;
    int64_t shape[4];
    const char *name; /* borrowed, lives as long as the model */
} tensor_t;

typedef struct {
    int vocab_size;              /* 151936 for real Qwen3 */
    int hidden;                  /* hidden_size, e.g. 1024 */
    int intermediate;            /* intermediate_size, e.g. 3072 */
    int n_layers;                /* num_hidden_layers */
    int n_heads;                 /* num_attention_heads (query heads) */
    int n_kv_heads;              /* num_key_value_heads */
    int head_dim;                /* head_dim (128 for real Qwen3; q width = n_heads*head_dim) */
    float rms_eps;               /* rms_norm_eps */
    double rope_theta;           /* rope_theta or rope_parameters.rope_theta */
    rope_scaling_t rope_scaling; /* rope_scaling / rope_parameters: default, linear, yarn */
    int max_pos;                 /* max_position_embeddings (as given, also under rope scaling) */
    int tie_embeddings;          /* tie_word_embeddings (also forced when lm_head is absent) */
    int bos_id, eos_id;          /* -1 when absent */
    dtype_t dtype;               /* torch_dtype / dtype as declared */
} qwen3_config_t;

typedef struct {
    tensor_t input_norm; /* [hidden] */
    tensor_t wq;         /* [n_heads*head_dim, hidden] */
    tensor_t wk;         /* [n_kv_heads*head_dim, hidden] */
    tensor_t wv;         /* [n_kv_heads*head_dim, hidden] */
    tensor_t wo;         /* [hidden, n_heads*head_dim] */
    tensor_t q_norm;     /* [head_dim] */
    tensor_t k_norm;     /* [head_dim] */
    tensor_t post_norm;  /* [hidden] */
    tensor_t w_gate;     /* [intermediate, hidden] */
    tensor_t w_up;       /* [intermediate, hidden] */
    tensor_t w_down;     /* [hidden, intermediate] */
} qwen3_layer_t;

typedef struct qwen3_model {
    qwen3_config_t cfg;
    tensor_t embed;        /* [vocab, hidden] */
    tensor_t final_norm;   /* [hidden] */
    tensor_t lm_head;      /* [vocab, hidden]; == embed when tied */
    qwen3_layer_t *layers; /* [n_layers] */
    void *priv;            /* loader state: mmaps, parsed headers */
} qwen3_model_t;

/* Loads config.json and the safetensors weights (single file or sharded via
 * model.safetensors.index.json) from directory `dir`. On success returns 0 and
 * sets *out (free with qwen3_model_free). On failure returns -1, sets *out to
 * NULL and writes a message naming the file and tensor into err (errlen bytes).
 * `progress` non-zero prints a bytes / MB/s line to stderr while loading. */
int qwen3_model_load(const char *dir, int progress, qwen3_model_t **out, char *err, size_t errlen);

/* Releases the model and unmaps its files. NULL is a no-op. */
void qwen3_model_free(qwen3_model_t *m);

/* Parses a Qwen3 config.json text (both key styles). Returns 0 or -1 with err. */
int qwen3_config_parse(const char *json, size_t len, qwen3_config_t *cfg, char *err, size_t errlen);

/* Element i of view t converted to f32; i is the flat row-major index
 * (row r, column j of a 2-D view is i = r*shape[1] + j). No bounds check. */
float tensor_get_f32(const tensor_t *t, int64_t i);

/* ---- additive helpers (loader) ---- */

/* Bytes per element of dtype d (4, 2, 2). */
size_t dtype_size(dtype_t d);

/* "F32", "F16", "BF16" (the safetensors spelling). Static string. */
const char *dtype_name(dtype_t d);

/* Number of elements of t (product of its shape; 1 for ndim 0). */
int64_t tensor_numel(const tensor_t *t);

/* Converts row r of a 2-D view to f32 into out[shape[1]] (e.g. an embedding
 * lookup). r must be in [0, shape[0]); the caller owns out. */
void tensor_row_f32(const tensor_t *t, int64_t r, float *out);

/* Reads and parses `path` (a config.json). Returns 0, or -1 with a message
 * naming the file in err. */
int qwen3_config_load(const char *path, qwen3_config_t *cfg, char *err, size_t errlen);

/* Number of distinct weight elements of the model (a tied lm_head counted
 * once): 596,049,920 for Qwen3-0.6B. */
int64_t qwen3_model_n_params(const qwen3_model_t *m);

/* Total bytes of the distinct weights (what one decode step streams). */
int64_t qwen3_model_weight_bytes(const qwen3_model_t *m);

#endif
