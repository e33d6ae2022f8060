/* bench_kv.h - what the engine benchmarks share (engine_bench on the CPU,
 * gpu_bench on the CUDA backend): a clock, a deterministic random stream,
 * a KV cache shaped for a model, and random K/V to fill it with. */
#ifndef KVTIER_BENCH_KV_H
#define KVTIER_BENCH_KV_H

#include <stdint.h>

#include "kvcache.h"
#include "model.h"

/* Monotonic seconds. */
double bench_now_s(void);

/* The next number of one xorshift64 stream (the same sequence every run). */
uint64_t bench_rnd(void);

/* A KV cache for model m (KV dtype dt, pool_blocks 0 = grow on demand); NULL
 * with the reason on stderr after "prog: ". */
kvcache_t *bench_kv_new(const qwen3_model_t *m, dtype_t dt, int pool_blocks, const char *prog);

/* Appends ctx positions of random K/V in [-1, 1] to every layer of (kv, seq).
 * Returns 0, or -1 with the reason on stderr after "prog: ". */
int bench_kv_fill_random(kvcache_t *kv, int seq, const qwen3_model_t *m, int ctx, const char *prog);

#endif
