/* loader_fixture.h - builds tiny Qwen3 checkpoints (config.json +
 * safetensors, single or sharded) in temp dirs for the loader tests, in C,
 * so the tests need neither torch nor python.
 *
 * Tiny shape: vocab 32, hidden 16, intermediate 24, 2 layers, 4 q heads,
 * 2 kv heads, head_dim 8 (explicit: != hidden/heads).
 * Element i of tensor `name` holds fx_value(name, i), a multiple of 1/64 in
 * [-0.5, 0.5), exact in F32, F16 and BF16.
 */
#ifndef KVTIER_LOADER_FIXTURE_H
#define KVTIER_LOADER_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#define FX_VOCAB 32
#define FX_HIDDEN 16
#define FX_INTER 24
#define FX_LAYERS 2
#define FX_HEADS 4
#define FX_KV 2
#define FX_HEAD_DIM 8

typedef struct {
    char name[96];
    char dtype[16]; /* safetensors spelling; "F32", "BF16", "I64", ... */
    int ndim;
    int64_t shape[4];
    unsigned char *data; /* owned */
    size_t nbytes;
} fx_tensor_t;

typedef struct {
    fx_tensor_t *t;
    int n;
} fx_list_t;

float fx_value(const char *name, int64_t i);

/* The full tensor list of the tiny model in dtype ("F32", "F16", "BF16");
 * with_lm_head adds lm_head.weight. Free with fx_list_free. */
fx_list_t fx_model_list(const char *dtype, int with_lm_head);
void fx_list_free(fx_list_t *l);

/* Index of `name` in l, or -1. Removes it when asked (fx_list_remove). */
int fx_find(const fx_list_t *l, const char *name);
void fx_list_remove(fx_list_t *l, const char *name);

/* Writes one safetensors file with the tensors of l in order (consecutive
 * offsets; header padded to 8 with spaces). Returns 0 or -1. */
int fx_write_st(const char *path, const fx_tensor_t *ts, int n);

/* Writes a safetensors file from a raw header text (padded) and data. */
int fx_write_raw(const char *path, const char *header, const void *data, size_t nbytes);

/* Writes raw bytes to path. */
int fx_write_file(const char *path, const void *data, size_t n);

/* config.json text for the tiny model: style 0 = top-level rope_theta and
 * torch_dtype, style 1 = rope_parameters and dtype. Static buffer. */
const char *fx_config(int style, int tied, double rope_theta);

/* Writes config.json + weights into dir: shards == 1 -> model.safetensors,
 * else model-0000k-of-0000n.safetensors + index.json. */
int fx_write_model(const char *dir, const fx_list_t *l, int shards, const char *config);

/* mkdtemp under TMPDIR; rm -rf. */
char *fx_tmpdir(void);
void fx_rmtree(const char *dir);

/* dir/name into buf. */
const char *fx_path(char *buf, size_t n, const char *dir, const char *name);

#endif
