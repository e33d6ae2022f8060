/* engine.h - the generation loop: chunked prefill, decode, sampling, stop
 * conditions, statistics, and the hooks a tier client plugs into.
 *
 * One engine = one model (borrowed), one thread pool, one forward state and
 * one paged KV cache. engine_generate runs one sequence at a time:
 *
 *   seq = kvcache_seq_new ; policy / stats on
 *   prefill prompt in chunks      (hooks.before_attention per layer and chunk)
 *   hooks.after_prefill
 *   loop: sample -> on_token / on_text -> stop? -> forward(token)
 *         (hooks.before_attention per layer) -> hooks.after_step
 *   hooks.before_end
 *   kvcache_seq_free
 *
 * Hooks run on the generating thread, between kernels (no kernel runs while a
 * hook does), so a hook may call any kvcache_* function on the sequence:
 * take blocks out, put them back, drop them, read and reset the summary.
 */
#ifndef KVTIER_ENGINE_H
#define KVTIER_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "kvcache.h"
#include "local_policy.h"
#include "model.h"
#include "sampler.h"
#include "threadpool.h"

typedef struct engine engine_t;

typedef struct {
    int threads;            /* pool threads; 0 = online CPUs */
    int prefill_chunk;      /* tokens per prefill chunk; 0 = 256 */
    dtype_t kv_dtype;       /* KV storage: DT_F32 (default) or DT_BF16 */
    int max_context;        /* prompt + generated limit; 0 = max_position_embeddings */
    backend_kind_t backend; /* BACKEND_CPU (default), BACKEND_CUDA or BACKEND_AUTO */
} engine_opts_t;

/* Why a generation ended. */
typedef enum {
    ENGINE_STOP_EOS = 0,        /* an end-of-sequence / stop id was sampled */
    ENGINE_STOP_STRING = 1,     /* a stop string appeared in the text */
    ENGINE_STOP_MAX_TOKENS = 2, /* max_new_tokens generated */
    ENGINE_STOP_CONTEXT = 3,    /* max_context reached */
    ENGINE_STOP_HOOK = 4,       /* a hook asked to stop (returned > 0) */
} engine_stop_t;

/* Callbacks (all optional). Return values of the int hooks: 0 = go on,
 * > 0 = stop gracefully (ENGINE_STOP_HOOK), < 0 = fail the generation. */
typedef struct {
    void *ud;
    /* Before the attention of `layer` reads the cache, after this chunk's K/V
     * were appended; q [n][n_heads*head_dim] post-RoPE queries of positions
     * pos0..pos0+n-1 (borrowed). Non-zero fails the generation. */
    int (*before_attention)(void *ud, engine_t *e, int seq, int layer, int pos0, int n,
                            const float *q);
    /* After the prompt's n_prompt positions are in the cache. */
    int (*after_prefill)(void *ud, engine_t *e, int seq, int n_prompt);
    /* After decode step `step` (0-based) ran `token` at position pos. */
    int (*after_step)(void *ud, engine_t *e, int seq, int step, int pos, int token);
    /* The generation is over (also after a failure), the sequence is still
     * in the cache: the last chance to read or release what refers to it. */
    void (*before_end)(void *ud, engine_t *e, int seq);
    /* Sees the logits [n_vocab] of each decode position and the sampled
     * token; returns the token to use instead (teacher forcing, quality
     * benchmarks) or `sampled`. Runs before on_token. */
    int (*on_logits)(void *ud, const float *logits, int n_vocab, int sampled);
    /* Between prefill chunks: > 0 stops the generation (ENGINE_STOP_HOOK,
     * nothing generated), e.g. the client went away during a long prompt. */
    int (*poll)(void *ud);
    /* A token was sampled (before it runs through the model). */
    int (*on_token)(void *ud, int token);
    /* Detokenizer: bytes of `token` that became complete (e.g.
     * tokenizer_stream_put); NULL = no text (then stop strings are unused). */
    const char *(*token_piece)(void *ud, int token, size_t *len);
    /* Remaining bytes at the end (e.g. tokenizer_stream_flush); may be NULL. */
    const char *(*piece_flush)(void *ud, size_t *len);
    /* Text that can no longer be part of a stop string, in order; the stop
     * string itself is never emitted. */
    void (*on_text)(void *ud, const char *text, size_t len);
} engine_hooks_t;

typedef struct {
    int max_new_tokens; /* > 0 */
    sampler_opts_t sampling;
    int ignore_eos;      /* do not stop on EOS / stop ids */
    const int *stop_ids; /* besides config eos_id; borrowed */
    int n_stop_ids;
    const char *const *stop_strings; /* borrowed, NUL-terminated, non-empty */
    int n_stop_strings;
    local_policy_params policy; /* local eviction policy (kind LP_FULL = none) */
    int stats;                  /* record attention summaries (active sets) */
    float active_top_p;         /* summary top_p (0 = 0.95) */
    int window;                 /* summary window W (0 = 16); reset every W steps
                                   unless reset_windows is 0 (a tier client resets) */
    int no_window_reset;
    engine_hooks_t hooks;
} engine_gen_opts_t;

typedef struct {
    int n_prompt;
    int *tokens; /* generated ids [n_tokens], malloc'd (engine_result_free) */
    int n_tokens;
    char *text; /* emitted text (stop string excluded), NUL-terminated; "" without a detokenizer */
    size_t text_len;
    engine_stop_t stop;
    int stop_index;                     /* ENGINE_STOP_STRING: which stop string matched, else -1 */
    double prefill_s;                   /* wall time of the prefill (all chunks) */
    double decode_s;                    /* wall time of the decode forward steps */
    int decode_steps;                   /* forward passes of single tokens */
    size_t kv_hot_bytes, kv_peak_bytes; /* at the end / peak, all layers */
    int n_layers;
    int *layer_hot_blocks;     /* [n_layers] hot blocks at the end */
    int *layer_blocks;         /* [n_layers] logical blocks at the end */
    double *layer_active_mean; /* [n_layers] mean active-set size (blocks) over decode steps; stats
                                  only */
    int *layer_active_max;     /* [n_layers]; stats only */
} engine_result_t;

/* Defaults: online CPUs, chunk 256, f32 KV, context = model max. */
void engine_opts_defaults(engine_opts_t *o);

/* Defaults: 256 new tokens, greedy, full cache, stats off. */
void engine_gen_defaults(engine_gen_opts_t *g);

/* Creates an engine over model m (borrowed; must outlive the engine).
 * o NULL = defaults. Returns NULL with a message in err on failure. */
engine_t *engine_new(const qwen3_model_t *m, const engine_opts_t *o, char *err, size_t errlen);

void engine_free(engine_t *e);

/* Borrowed parts, for hooks and tests. */
kvcache_t *engine_kvcache(engine_t *e);
threadpool_t *engine_pool(engine_t *e);
const qwen3_model_t *engine_model(const engine_t *e);
struct fwd *engine_forward(engine_t *e);

/* The backend that runs the forward pass (BACKEND_CPU or BACKEND_CUDA). */
backend_kind_t engine_backend(const engine_t *e);

/* Generates a continuation of prompt[0..n_prompt). Fills *res (free with
 * engine_result_free, also after a failure). Returns 0, or -1 with a message
 * in err (bad options, token id out of range, prompt longer than the
 * context, KV cache full under a budget without a policy, a hook failure);
 * res then holds what was generated before the failure. */
int engine_generate(engine_t *e, const int *prompt, int n_prompt, const engine_gen_opts_t *g,
                    engine_result_t *res, char *err, size_t errlen);

void engine_result_free(engine_result_t *res);

/* OpenAI's finish_reason for a stop: "stop" (an eos id or a stop string),
 * "length" (max_new_tokens or the context limit), "cancelled" (a hook). The
 * gRPC Generate response and `run --json` use it; engine_stop_name tells the
 * exact cause. */
const char *engine_finish_reason(engine_stop_t s);

/* "eos", "stop_string", "max_tokens", "context", "hook". */
const char *engine_stop_name(engine_stop_t s);

#endif
