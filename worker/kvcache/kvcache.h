/* kvcache.h - paged KV cache (PagedAttention-style) with per-block digests,
 * take-out / put-back of blocks, attention summaries and local policies.
 *
 * Storage: per layer one pool of physical slots. A slot holds one block of
 * KV_BLOCK_TOKENS positions of one layer, all KV heads, K then V:
 *     K [n_kv_heads][KV_BLOCK_TOKENS][head_dim]   then
 *     V [n_kv_heads][KV_BLOCK_TOKENS][head_dim]
 * in the storage dtype (f32, or bf16 = the upper 16 bits of the f32, rounded
 * to nearest even), little-endian. This is also the exact byte layout that
 * kvcache_block_take hands out and kvcache_block_put takes back
 * (kvcache_block_bytes() bytes; positions not yet written are zero).
 * Qwen3-4B in bf16: 2 x 8 x 16 x 128 x 2 B = 64 KiB.
 *
 * Each sequence has, per layer, a block table: logical block -> physical slot
 * and a state (HOT / OUT / DROPPED). The pool size is the hot budget: when a
 * new tail block or a put-back needs a slot and none is free, the call fails
 * with KV_EFULL -- the cache never evicts silently. kvcache_make_room (or a
 * policy attached with kvcache_seq_set_policy, applied by kvcache_append when a
 * new block starts) chooses victims with local_policy.h and drops them.
 *
 * Digests: per block and KV head the element-wise min and max of the stored
 * (post-RoPE, after dtype rounding) keys, kept for HOT and OUT blocks and
 * updated as the tail fills. For query head h (KV head g = h / (n_heads /
 * n_kv_heads)) the bound sum_d max(q_d*min_d, q_d*max_d) * scale is >= the
 * logit q.k * scale of every key of the block (plus a tiny margin for f32
 * rounding).
 *
 * Threading: one cache may be used by one thread at a time (the caller's);
 * kvcache_attend parallelizes internally over the given thread pool.
 */
#ifndef KVTIER_KVCACHE_H
#define KVTIER_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "attention.h"
#include "local_policy.h"
#include "model.h"
#include "summary.h"
#include "threadpool.h"

#define KV_BLOCK_TOKENS 16

/* Status codes (0 = success). */
#define KV_OK 0
#define KV_EINVAL (-1) /* bad argument: handle, layer, block, position order, length */
#define KV_EFULL (-2)  /* no free slot in the layer's pool (hot budget reached) */
#define KV_ENOMEM (-3) /* allocation failed; nothing changed */
#define KV_ESTATE (-4) /* block in the wrong state (e.g. take of an OUT block, append into OUT) */

typedef enum {
    KV_BLOCK_HOT = 0,
    KV_BLOCK_OUT = 1,
    KV_BLOCK_DROPPED = 2,
    KV_BLOCK_NONE = 3
} kv_block_state_t;

typedef struct kvcache kvcache_t;

typedef struct {
    int n_layers, n_kv_heads, head_dim, n_heads; /* n_heads % n_kv_heads == 0 */
    int block_tokens;                            /* must be 0 or KV_BLOCK_TOKENS (0 = default) */
    dtype_t kv_dtype;                            /* DT_F32 or DT_BF16 */
    int pool_blocks; /* physical slots per layer = hot budget; 0 = unlimited (grows) */
    int max_seqs;    /* sequences at once; 0 = 64 */
} kvcache_opts;

/* ---- lifetime --------------------------------------------------------- */

/* Creates an empty cache. Slots are allocated lazily (in chunks) up to
 * pool_blocks per layer. Returns NULL with a message in err on bad options or
 * allocation failure. Free with kvcache_free. */
kvcache_t *kvcache_new(const kvcache_opts *o, char *err, size_t errlen);

/* Frees the cache and all sequences. NULL is a no-op. */
void kvcache_free(kvcache_t *kv);

/* Static text for a KV_* code. */
const char *kvcache_strerror(int code);

/* Text of the last failure of any call on kv (borrowed, valid until the next
 * call; "" when none). */
const char *kvcache_errmsg(const kvcache_t *kv);

/* Bytes of one block payload (K then V, all KV heads, storage dtype). */
size_t kvcache_block_bytes(const kvcache_t *kv);

/* ---- sequences -------------------------------------------------------- */

/* Opens a sequence; returns its handle >= 0, or -1 when max_seqs are open or
 * memory is short. */
int kvcache_seq_new(kvcache_t *kv);

/* Closes a sequence and frees its slots, digests and summary. Invalid handle:
 * no-op. */
void kvcache_seq_free(kvcache_t *kv, int seq);

/* Positions appended so far to `layer` (-1 for bad handle/layer). */
int kvcache_seq_len(const kvcache_t *kv, int seq, int layer);

/* Logical blocks of `layer` = ceil(len / KV_BLOCK_TOKENS) (-1 if bad). */
int kvcache_seq_blocks(const kvcache_t *kv, int seq, int layer);

/* Enables (enable != 0) or disables attention summaries for the sequence:
 * kvcache_attend then records per-block masses (summary.h). top_p / window
 * <= 0 take the defaults (0.95, 16). Enabling resets an existing summary.
 * Returns KV_OK, KV_EINVAL or KV_ENOMEM. */
int kvcache_seq_stats(kvcache_t *kv, int seq, int enable, float top_p, int window);

/* The sequence's summary (borrowed; NULL when stats are off or bad seq). Use
 * summary.h to read it and summary_reset_window to start a new window. */
summary_t *kvcache_summary(kvcache_t *kv, int seq);

/* Attaches a local policy (copied; p->layer_hot_blocks is borrowed and must
 * outlive the sequence) that kvcache_append applies with need = 1 whenever a
 * new block starts: it drops the policy's victims first, so an append only
 * fails with KV_EFULL when even that does not free a slot. NULL detaches.
 * Returns KV_OK or KV_EINVAL. */
int kvcache_seq_set_policy(kvcache_t *kv, int seq, const local_policy_params *p);

/* ---- append and attention --------------------------------------------- */

/* Appends the post-norm, post-RoPE key k [n_kv_heads*head_dim] and value v
 * [n_kv_heads*head_dim] of position pos to `layer`. Positions of a layer are
 * appended in order: pos must equal kvcache_seq_len(kv, seq, layer). A new
 * block takes a free slot (KV_EFULL when none, after the attached policy, if
 * any, had its chance). Returns KV_OK or a KV_* error (nothing changed). */
int kvcache_append(kvcache_t *kv, int seq, int layer, int pos, const float *k, const float *v);

/* Appends n positions pos0.. with k, v [n][n_kv_heads*head_dim]. On error
 * the positions appended before the failing one stay appended. */
int kvcache_append_n(kvcache_t *kv, int seq, int layer, int pos0, int n, const float *k,
                     const float *v);

/* Causal attention for nq query rows at positions pos0 .. pos0+nq-1 (all
 * already appended): q [nq][n_heads*head_dim] (post-norm, post-RoPE), out
 * [nq][n_heads*head_dim]. Row i attends to positions <= pos0+i of HOT blocks
 * only (OUT and DROPPED blocks contribute nothing, exactly). Scale
 * 1/sqrt(head_dim), softmax in f32, GQA. A row with no visible key gets zeros.
 * When stats are on, records masses into the summary (see summary.h); when
 * revival tracking is on, records the last row's revival candidates.
 * tp may be NULL (inline). Returns KV_OK or KV_EINVAL / KV_ENOMEM. */
int kvcache_attend(kvcache_t *kv, int seq, int layer, const float *q, int nq, int pos0, float *out,
                   threadpool_t *tp);

/* ---- blocks: state, take-out, put-back, drop --------------------------- */

/* State of a block; KV_BLOCK_NONE for an index beyond the layer's blocks or a
 * bad handle. */
kv_block_state_t kvcache_block_state(const kvcache_t *kv, int seq, int layer, int block);

/* Tokens a block holds (KV_BLOCK_TOKENS except a partial tail); -1 if bad. */
int kvcache_block_tokens(const kvcache_t *kv, int seq, int layer, int block);

/* Takes a HOT block out: *bytes gets a malloc'd copy of its payload (layout
 * above, caller frees), *len = kvcache_block_bytes(); the slot is freed and
 * the block becomes OUT (digest kept; the key sketch is encoded, or kept
 * when the block was taken out before and not appended to since). Errors: KV_EINVAL, KV_ESTATE (not
 * HOT), KV_ENOMEM; on error nothing changed and *bytes = NULL. */
int kvcache_block_take(kvcache_t *kv, int seq, int layer, int block, void **bytes, size_t *len);

/* Puts an OUT block back from bytes (len must equal kvcache_block_bytes();
 * copied, not retained): it becomes HOT, bit-identical to before take; a
 * loan (kvcache_block_lend) ends. Errors:
 * KV_EINVAL (length, indices), KV_ESTATE (not OUT), KV_EFULL (no slot). */
int kvcache_block_put(kvcache_t *kv, int seq, int layer, int block, const void *bytes, size_t len);

/* Forgets a HOT or OUT block for good (slot and digest released, state
 * DROPPED). Dropping a DROPPED block is a no-op (KV_OK). */
int kvcache_block_drop(kvcache_t *kv, int seq, int layer, int block);

/* Lending: an OUT block can be made readable without entering the pool.
 * kvcache_block_lend gives it a borrowed payload (layout above, len must
 * equal kvcache_block_bytes(); must stay valid and unchanged until the block
 * is unlent, put back or dropped): kvcache_attend then reads it like a HOT
 * block, in block order, and records its mass in the summary. It stays OUT
 * for everything else: it takes no slot, kvcache_hot_blocks does not count
 * it, kvcache_revival_candidates leaves it out of the hot log-sum-exp and
 * still tests it like any OUT block. A tier client uses this to attend over
 * recalled blocks where they landed (no copy into the pool) and to keep a
 * block readable while its demotion is in flight. Errors: KV_EINVAL (length,
 * indices), KV_ESTATE (not OUT). Lending a lent block replaces the pointer. */
int kvcache_block_lend(kvcache_t *kv, int seq, int layer, int block, const void *bytes, size_t len);

/* Lends an OUT block whose bytes are on their way (an asynchronous fetch):
 * it counts as lent (kvcache_block_lent returns a non-NULL mark that is not
 * its payload) and kvcache_attend reads it once the sequence's pending
 * callback lent its bytes (kvcache_seq_set_pending). Errors as
 * kvcache_block_lend. */
int kvcache_block_lend_pending(kvcache_t *kv, int seq, int layer, int block);

/* The pending callback of a sequence: kvcache_attend calls fn(ud, seq,
 * layer) when blocks of `layer` it is to read are pending, after it attended
 * (one decode row) every chunk of blocks without a pending one, so the wait
 * overlaps that work (several rows: before attending). fn must lend each
 * pending block's bytes (kvcache_block_lend) or leave it; blocks still
 * pending when it returns are unlent and not read. The output equals an
 * attention over the blocks readable when fn returns, bit for bit. fn NULL
 * = none (pending blocks are then unlent when attended). */
typedef void (*kv_pending_fn)(void *ud, int seq, int layer);
void kvcache_seq_set_pending(kvcache_t *kv, int seq, kv_pending_fn fn, void *ud);

/* 1 when the block is lent with kvcache_block_lend_pending and its bytes
 * were not lent yet. */
int kvcache_block_pending(const kvcache_t *kv, int seq, int layer, int block);

/* Ends a loan (no-op when the block is not lent). KV_EINVAL for bad indices. */
int kvcache_block_unlend(kvcache_t *kv, int seq, int layer, int block);

/* The lent payload of a block, or NULL. */
const void *kvcache_block_lent(const kvcache_t *kv, int seq, int layer, int block);

/* 1 when the attention reads the block now (HOT, or OUT and lent), else 0. */
int kvcache_block_readable(const kvcache_t *kv, int seq, int layer, int block);

/* OUT blocks of (seq, layer) with a lent payload (-1 if bad). */
int kvcache_lent_blocks(const kvcache_t *kv, int seq, int layer);

/* Borrowed digest of a HOT or OUT block for KV head g: mins and maxs
 * [head_dim] each. Returns KV_OK, KV_EINVAL or KV_ESTATE (dropped). */
int kvcache_block_digest(const kvcache_t *kv, int seq, int layer, int block, int g,
                         const float **mins, const float **maxs);

/* Upper bound of the scaled logit of query row q [n_heads*head_dim] over the
 * block, maximised over query heads: the min/max digest bound, tightened by
 * the 4-bit key sketch for an OUT block (-INFINITY for a DROPPED/unknown one). */
float kvcache_block_bound(const kvcache_t *kv, int seq, int layer, int block, const float *q);

/* ---- accounting -------------------------------------------------------- */

/* HOT blocks of (seq, layer) (-1 if bad). */
int kvcache_hot_blocks(const kvcache_t *kv, int seq, int layer);

/* Free slots of layer's pool: pool_blocks - used, or INT32_MAX when
 * unlimited (-1 for a bad layer). */
int kvcache_free_slots(const kvcache_t *kv, int layer);

/* Bytes of all slots in use (all layers, all sequences), and the peak since
 * creation. */
size_t kvcache_bytes_hot(const kvcache_t *kv);
size_t kvcache_bytes_hot_peak(const kvcache_t *kv);

/* Restarts the peak at the current hot bytes (e.g. per generation when one
 * cache serves many sequences one after another). */
void kvcache_reset_peak(kvcache_t *kv);

/* ---- revival ------------------------------------------------------------ */

/* Revival check for one query row q [n_heads*head_dim] of `layer`. Each OUT
 * block's bound (digest, tightened by its key sketch) gives, per query head h,
 * an upper bound ntok * e^(bound - Z_h) of its mass relative to the hot mass
 * (Z_h: log-sum-exp of head h's logits over the HOT keys visible at position
 * pos); per head, the blocks with the smallest bounds are left out while their
 * sum stays <= e^-tau, the others are candidates (a block is a candidate when
 * it is one for some head). Writes the candidates to blocks_out (at most max,
 * ascending) and returns their count (may exceed max). The blocks that are not
 * candidates hold, together, at most e^-tau of the hot mass of every head
 * (tighter than leaving out each block under Z_h - tau - ln(N): the sum of
 * the actual bounds is used, not N times the worst one). *max_bound
 * (may be NULL) gets the largest bound - Z margin over all OUT blocks and
 * heads (-INFINITY when none). Costs one attention pass over the hot keys plus
 * the digests and sketches; tau = ln(1/eps), eps default 1e-3
 * (KV_REVIVAL_TAU). The hot pass runs on tp (NULL: the calling thread).
 * Returns -1 when bad. */
#define KV_REVIVAL_TAU 6.9077553f
int kvcache_revival_candidates(kvcache_t *kv, int seq, int layer, const float *q, int pos,
                               float tau, int *blocks_out, int max, float *max_bound,
                               threadpool_t *tp);

/* Prefetch mode: with tau > 0, kvcache_attend also checks the OUT blocks
 * against its last row's hot log-sum-exp (free: it is computed anyway) and
 * keeps the candidates per layer; tau <= 0 turns it off. */
int kvcache_seq_set_revival(kvcache_t *kv, int seq, float tau);

/* Candidates recorded by the last kvcache_attend of (seq, layer) in prefetch
 * mode: writes up to max block indices and returns the count (-1 if bad). */
int kvcache_revival_last(const kvcache_t *kv, int seq, int layer, int *blocks_out, int max);

/* ---- local policies ----------------------------------------------------- */

/* Applies policy p to (seq, layer) now: asks local_policy_decide for victims
 * with `need` slots to be taken next and drops them (marking them demoted in
 * the summary). Returns the number of blocks dropped (>= 0), or KV_EFULL when
 * fewer than `need` slots are free afterwards, or KV_EINVAL. */
int kvcache_make_room(kvcache_t *kv, int seq, int layer, const local_policy_params *p, int need);

/* ---- attention provider (a GPU backend) ------------------------------- */

/* A backend that runs the attention kernels elsewhere (worker/cuda: on the
 * GPU, over its device copies of the readable blocks). The cache keeps its
 * host payloads, block tables, digests, sketches and summaries as always, so
 * take / put / lend / drop, the tier bytes and the revival checks are the same
 * code for every backend. */
typedef struct {
    void *ud;
    /* Runs one kvcache_attend call in place of attention_run: `a` is exactly
     * what attention_run would get (the readable blocks in block order with
     * their host payloads, the queries, out, and the optional mass, cum (the
     * provider adds into row 0), row_lse, probs_last). Also called by
     * kvcache_revival_candidates for its hot pass (lse_only: only row_lse;
     * the blocks are the HOT ones, lent blocks left out but still readable).
     * Returns 0 when every requested output was written, 1 to decline (the
     * CPU kernels then run on the host payloads: same answer, e.g. for
     * probs_last), -1 on failure with a message in err. */
    int (*attend)(void *ud, int seq, int layer, const attn_args_t *a, char *err, size_t errlen);
    /* Sequence seq was closed (its handle may be reused): forget its state. */
    void (*seq_closed)(void *ud, int seq);
    /* The provider is replaced or the cache freed: forget everything. */
    void (*detached)(void *ud);
} kvcache_attn_provider_t;

/* 1 when nothing but appends can change what the attention of seq reads:
 * no summary, no policy, no revival tracking, no debug capture, and every
 * block of every layer HOT (none out, lent or dropped); else 0 (also for a
 * bad handle). A GPU backend may then run the attention from its own copy of
 * the block table without asking the cache. */
int kvcache_seq_plain(const kvcache_t *kv, int seq);

/* Installs p (copied; NULL removes it; the previous one, if any, gets
 * detached()). kvcache_attend then asks p first. */
void kvcache_set_attn_provider(kvcache_t *kv, const kvcache_attn_provider_t *p);

/* The installed provider's ud, or NULL when none. */
void *kvcache_attn_provider_ud(const kvcache_t *kv);

/* ---- debugging ---------------------------------------------------------- */

/* Turns on (enable != 0) capture of the last attended row's probabilities,
 * per layer and query head, for golden checks. Returns KV_OK / KV_EINVAL /
 * KV_ENOMEM. */
int kvcache_debug_enable(kvcache_t *kv, int seq, int enable);

/* Copies the captured probabilities of query head `head` of the last row
 * attended in `layer` into probs_out [n] where n = that row's position + 1
 * (absent positions 0). Returns n, or -1 when capture is off / nothing
 * captured / bad arguments. probs_out must hold kvcache_seq_len() floats. */
int kvcache_debug_capture(const kvcache_t *kv, int seq, int layer, int head, float *probs_out);

#endif
