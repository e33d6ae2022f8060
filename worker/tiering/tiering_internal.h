/* tiering_internal.h - the tiering driver's state, shared by tiering.c
 * (lifecycle, session, hooks) and tiering_blocks.c (staging, demotion,
 * recall, summaries). Not part of the API (tiering.h). */
#ifndef KVTIER_TIERING_INTERNAL_H
#define KVTIER_TIERING_INTERNAL_H

#include <stdint.h>

#include "tiering.h"

#define F_SVC_COPY 1u   /* the service holds these exact bytes */
#define F_RECALLED 2u   /* read back during the current window (HOT: promoted) */
#define F_LOST 4u       /* the service no longer had it: dropped here */
#define F_REVIVED 8u    /* read back and out again within the current window */
#define F_PUTTING 16u   /* put in flight: stage[] points at the session's copy */
#define F_CAND 32u      /* candidate of the current layer pass (scratch) */
#define F_OUTRANKED 64u /* lent, ranked out of the budget pass (scratch) */
#define F_PENDING 128u  /* lent pending (kvcache_block_lend_pending): its fetch is in flight */

/* Per layer: block flags and the staging area (indexed by block). */
typedef struct {
    uint8_t *flags; /* [cap] F_* */
    void **stage;   /* [cap] bytes of an OUT block held by the worker, or NULL */
    int32_t *seen;  /* [cap] last step the staged block was a candidate */
    int cap;
    int n_staged;
    int budget; /* hot blocks this layer may hold (hot_blocks, or its adaptive share) */
    int *last;  /* [n_last] out blocks read by the last decode step's attention */
    int n_last, cap_last;
} tl_layer;

struct tiering {
    tiering_opts_t o;
    policy_params prot; /* sink / recent protection, for policy_is_protected */
    engine_t *e;
    kvcache_t *kv;
    int seq;
    int n_layers;
    int started;
    tiersess_t *sess; /* NULL until opened, and after a failure until re-opened */
    int need_reopen;
    double next_try; /* monotonic seconds; no service call before */
    double backoff;
    tl_layer *L; /* [n_layers] */
    int *cand;   /* [cand_cap] candidate scratch (exact mode: every block of a layer) */
    int cand_cap;
    uint32_t *miss; /* [miss_cap] */
    int miss_cap;
    tiersess_block *puts; /* one budget pass's demotions */
    size_t n_puts, cap_puts;
    int cur_step;       /* position of the current decode row (staging clock) */
    tiersess_ref *spec; /* the step's speculative fetch */
    size_t cap_spec;
    int fx_on;      /* started fetches are in flight (not collected to their end) */
    int spec_on;    /* ... and the step's speculative fetch is one of them */
    double spec_t0; /* when it started (its latency is one fetch batch's) */
    double pend_t0; /* when the current layer's background fetch started */
    int n_pend;     /* its blocks (t->miss[0..n_pend)) */
    size_t block_bytes, staged_bytes;
    tiering_stats_t st;
    tiersess_counts done_counts; /* of sessions already closed */
    double *lat;
    size_t nlat, caplat;
    int finished;
    engine_hooks_t inner; /* the caller's hooks, chained after ours */
};

/* ---- tiering.c */

/* Monotonic seconds. */
double tl_now_s(void);

/* The service failed in a way that says nothing about the data: degraded,
 * back off, re-open the sequence before the next call. */
void tl_svc_failed(tiering_t *t, const char *what, const char *msg);

/* 1 when the service may be called now (re-opening first after a failure). */
int tl_svc_ready(tiering_t *t);

/* 1 when block is the sink or one of the last recent blocks. */
int tl_is_protected(const tiering_t *t, int n_blocks, int block);

/* ---- tiering_blocks.c */

/* Flags of (layer, block), growing the layer's arrays; NULL on OOM. */
uint8_t *tl_flag_at(tiering_t *t, int layer, int block);

/* Frees a block's staged copy (not one whose put is in flight). */
void tl_stage_free(tiering_t *t, int layer, int block);

/* Applies finished puts (wait: all queued ones). */
void tl_take_acks(tiering_t *t, int wait);

/* Sends the demotions of one budget pass as one put batch. */
void tl_flush_puts(tiering_t *t);

/* Holds layer to its hot budget over blocks [0, limit). */
void tl_enforce_budget(tiering_t *t, int layer, int limit);

/* Makes exactly the F_CAND blocks of layer readable (staged or fetched).
 * overlap: the missing ones are fetched in the background and lent pending
 * (the attention reads the others meanwhile, then waits: tl_on_pending). */
void tl_reconcile(tiering_t *t, int layer, int overlap);

/* kvcache's pending callback (kv_pending_fn): waits for the layer's
 * background fetch and lends what arrived. */
void tl_on_pending(void *ud, int seq, int layer);

/* Decode step start (exact mode): fetches the last step's out candidates of
 * every layer that are not staged, in ONE call, in the background. */
void tl_spec_start(tiering_t *t);

/* Takes what the started fetches (speculative, background) delivered so far;
 * wait: first until every block they asked for in `layer` (layer < 0: all)
 * arrived or they ended. */
void tl_collect(tiering_t *t, int layer, int wait);

/* Marks blocks[0..n) as candidates of layer. */
void tl_mark_cand(tiering_t *t, int layer, const int *blocks, int n);

/* Queues one summary for all layers (its decisions come back later), then
 * the expiry pass. */
void tl_send_summary(tiering_t *t, int step);

/* Applies the decisions of finished summaries (wait: of every queued one). */
void tl_take_summaries(tiering_t *t, int wait);

#endif
