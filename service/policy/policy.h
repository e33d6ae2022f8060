/* policy.h — placement policy of kvtier: pure functions, no I/O.
 *
 * The policy sees one sequence as a matrix of blocks [n_layers][n_blocks],
 * stored sparsely: in chunks of POLICY_CHUNK_BLOCKS consecutive blocks of one
 * layer, found through a hash table (policy_state). A block in no chunk is
 * not stored: it is HOT or NONE (or DROPPED) with no bytes, and never the
 * subject of a decision. Given a summary of the worker's attention over the
 * last window and the parameters, the policy decides which blocks move
 * between tiers. Nothing here allocates or touches a file: the caller
 * owns every buffer. The facade (tier.c) applies the decisions to storage.
 *
 * One policy, two deciders, one set of defaults (policy_params_init):
 *
 *   The worker holds the hot pool (which blocks leave it), with
 *   policy_hot_colder (the one ranking: least recently active first, then
 *   least accumulated mass) under a per-layer hot budget, and
 *   policy_hot_expired (inactive for more than hot_inactive_steps). The sink
 *   blocks (first sink_blocks) and the last recent_blocks blocks of every
 *   layer are protected (policy_is_protected). The worker's local dropping
 *   policies (worker/kvcache/local_policy.h) use the same defaults, protection and,
 *   for the "recently activated" cache, the same ranking.
 *
 *   The service decides where a demoted block lives (policy_decide):
 *   1. HOST bytes over host_budget_bytes -> DEMOTE_SSD, coldest first by
 *      effective age (step - last_active) / (1 + revivals).
 *   2. SSD bytes over ssd_budget_bytes -> DROP, least valuable first
 *      (fewest revivals, then oldest last activity).
 *   3. SSD block with revivals >= prefetch_min_revivals -> PREFETCH (to HOST)
 *      when the host budget allows.
 *   Each block gets at most one decision per round. DEMOTE_HOST stays in the
 *   protocol (a worker reports its own demotions by putting the block) but
 *   policy_decide never emits it.
 */
#ifndef KVTIER_POLICY_H
#define KVTIER_POLICY_H

#include <stddef.h>
#include <stdint.h>

#define POLICY_MAX_LAYERS 256 /* largest n_layers a per-layer hot budget covers */

/* Where a block lives. Shared with tier.h. */
typedef enum tier_level {
    TIER_HOT = 0,     /* worker memory (GPU, or RAM on the CPU backend) */
    TIER_HOST = 1,    /* service RAM */
    TIER_SSD = 2,     /* service RocksDB */
    TIER_DROPPED = 3, /* gone; the worker masks it out */
    TIER_NONE = 4,    /* unknown to the index (never reported, or lost in a crash) */
    TIER_NLEVELS = 5
} tier_level;

/* What a decision asks for. KEEP_HOT is implicit (never emitted). */
typedef enum policy_kind {
    POLICY_KEEP_HOT = 0,
    POLICY_DEMOTE_HOST = 1, /* HOT -> HOST: the worker must Put the block, then free it */
    POLICY_DEMOTE_SSD = 2,  /* HOST -> SSD: service-side move, informational for the worker */
    POLICY_DROP = 3,        /* HOST/SSD -> DROPPED: payload deleted; the worker masks it */
    POLICY_PREFETCH = 4,    /* SSD -> HOST: service-side promotion, a hint to the worker */
    POLICY_NKINDS = 5
} policy_kind;

/* Tunables. All budgets: 0 = unlimited. */
typedef struct policy_params {
    double top_p;                /* worker side: attention mass that makes a block active (0.95) */
    uint32_t window_steps;       /* worker side: steps per summary W (16) */
    uint32_t hot_inactive_steps; /* T_hot: demote after this many inactive steps (50) */
    uint32_t recent_blocks;      /* R: last R blocks of each layer stay HOT (4) */
    uint32_t sink_blocks;        /* first blocks of each layer that stay HOT (1) */
    uint32_t prefetch_min_revivals; /* rule 5 threshold; 0 = never prefetch (2) */
    uint64_t host_budget_bytes;     /* per-sequence HOST budget (0) */
    uint64_t ssd_budget_bytes;      /* per-sequence SSD budget (0) */
    int retain_on_close;            /* keep stored blocks when the sequence closes (0) */
    uint32_t n_layer_budgets;       /* entries used in layer_hot_budget (0 = none) */
    uint32_t layer_hot_budget[POLICY_MAX_LAYERS]; /* max HOT blocks per layer; 0 = unlimited */
} policy_params;

/* State of one block. */
typedef struct policy_block {
    uint8_t tier;         /* tier_level */
    uint32_t bytes;       /* payload size in bytes (0 = not stored yet) */
    uint64_t last_active; /* decode step of last activity (or of creation) */
    uint32_t hits;        /* summary windows in which the block was active */
    uint32_t revivals;    /* times it was recalled from HOST/SSD back to HOT */
} policy_block;

#define POLICY_CHUNK_BLOCKS 64 /* blocks per chunk: consecutive blocks of one layer */

/* Stored blocks [first, first + POLICY_CHUNK_BLOCKS) of one layer; first is a
 * multiple of POLICY_CHUNK_BLOCKS. Entries at or past the state's n_blocks
 * mean nothing (the owner initialises them when the sequence grows). */
typedef struct policy_chunk {
    uint32_t layer;
    uint32_t first;
    policy_block blocks[POLICY_CHUNK_BLOCKS];
} policy_chunk;

/* One sequence: n_layers x n_blocks blocks, the stored ones in chunks.
 * chunks is an open-addressing hash table (linear probing, key (layer,
 * first / POLICY_CHUNK_BLOCKS), see policy_chunk_insert) of table_size
 * slots (0 or a power of two; NULL = empty slot) holding n_chunks chunks;
 * chunks are never removed one by one. Table and chunks are borrowed: the
 * owner (the tier index) allocates them. */
typedef struct policy_state {
    policy_chunk **chunks; /* [table_size] */
    size_t table_size;
    size_t n_chunks;
    uint32_t n_layers;
    uint32_t n_blocks; /* blocks per layer that exist (tail included) */
    uint64_t step;     /* current decode step */
} policy_state;

/* The stored block (layer, block), or NULL when its chunk is not stored
 * (the block then has no bytes; it is HOT, NONE or DROPPED as its owner
 * says). O(1) expected. Does not check block < n_blocks. */
policy_block *policy_block_at(const policy_state *st, uint32_t layer, uint32_t block);

/* The chunk holding (layer, block), or NULL when it is not stored. */
policy_chunk *policy_chunk_find(const policy_state *st, uint32_t layer, uint32_t block);

/* Put chunk c (its layer and first set, not in the table yet) into the
 * table. The caller keeps room: returns 0, or -1 (nothing changed) when
 * n_chunks + 1 > table_size / 2. Allocates nothing. */
int policy_chunk_insert(policy_state *st, policy_chunk *c);

/* What the worker reports for one layer over one window. Arrays borrowed. */
typedef struct policy_layer_summary {
    uint32_t layer;
    const uint32_t *active; /* [n_active] block indices active in the window */
    const float *peak_mass; /* [n_active] peak softmax mass, or NULL */
    uint32_t n_active;
    const uint32_t *recalled; /* [n_recalled] blocks fetched back: HOT again, +1 revival */
    uint32_t n_recalled;
    const uint32_t *dropped; /* [n_dropped] blocks the worker dropped on its own */
    uint32_t n_dropped;
    const uint32_t *revived; /* [n_revived] fetched back and demoted again within the window:
                                tier unchanged (HOST/SSD), +1 revival */
    uint32_t n_revived;
} policy_layer_summary;

/* One summary: every W steps, all layers (or those with news). Borrowed. */
typedef struct policy_summary {
    uint64_t step;                      /* decode step at the end of the window */
    uint32_t n_blocks;                  /* blocks per layer now, tail included; 0 = unchanged */
    const policy_layer_summary *layers; /* [n_layers] */
    uint32_t n_layers;
} policy_summary;

/* One decision for one block. */
typedef struct policy_decision {
    uint8_t kind; /* policy_kind */
    uint8_t from; /* tier_level before */
    uint8_t to;   /* tier_level after */
    uint32_t layer;
    uint32_t block;
} policy_decision;

/* Fill *p with the defaults listed in policy_params. */
void policy_params_init(policy_params *p);

/* Check parameters. Returns 0, or -1 with a message in err (top_p not in
 * (0,1], n_layer_budgets > POLICY_MAX_LAYERS, ...). */
int policy_params_check(const policy_params *p, char *err, size_t errlen);

/* Hot budget of `layer` (0 = unlimited). */
uint32_t policy_layer_budget(const policy_params *p, uint32_t layer);

/* 1 when block `block` is protected (sink or one of the last R) for a layer
 * of n_blocks blocks. */
int policy_is_protected(const policy_params *p, uint32_t n_blocks, uint32_t block);

/* The one ranking of blocks that compete for a layer's hot budget (the
 * worker holds the budget with it): the key of a block is its last active
 * step and its accumulated attention mass (H2O's score). */
typedef struct policy_hot_key {
    int32_t last_active; /* step of last activity (creation step when never active) */
    float cum_mass;      /* attention mass summed over heads and rows */
} policy_hot_key;

/* 1 when block a leaves the hot pool before block b: it was active longer
 * ago, or as recently and with less accumulated mass; 0 otherwise. */
int policy_hot_colder(const policy_hot_key *a, const policy_hot_key *b);

/* Splits a hot budget of `total` blocks over n layers by need (e.g. each
 * layer's mean active-set size: layers attend differently, PyramidInfer's
 * point): every layer gets at least `floor`, the rest goes in proportion to
 * need[l] (>= 0; largest remainders first, ties to the lower layer), and no
 * layer more than cap[l] (its blocks; cap NULL: no limit), what a capped layer
 * cannot take going to the others. Sum of out <= max(total, n * floor).
 * Returns 0, or -1 for bad arguments (n <= 0, floor < 0, NULL out/need). */
int policy_layer_budgets(const double *need, const int *cap, int n, int total, int floor, int *out);

/* 1 when a hot block with key k has been inactive for more than
 * p->hot_inactive_steps at `step` (it leaves the hot pool whatever the
 * budget; protected blocks excepted, the caller checks). */
int policy_hot_expired(const policy_params *p, int64_t step, const policy_hot_key *k);

/* Check a summary against the state without changing it: every layer and
 * block index in range (layer < n_layers, block < n_blocks). Returns 0, or -1
 * with a message in err. */
int policy_summary_check(const policy_state *st, const policy_summary *s, char *err, size_t errlen);

/* Apply a summary to the state: s->step becomes the current step (never goes
 * back), active blocks get last_active = step and +1 hit (and an unknown,
 * TIER_NONE, active block becomes HOT: the worker holds it), recalled blocks
 * become HOT with +1 revival, revived blocks (fetched and demoted again within
 * the window) stay where they are with +1 revival and last_active = step,
 * worker-dropped blocks become DROPPED. New blocks
 * (index >= st->n_blocks, < s->n_blocks) must already have been initialised
 * by the caller (tier HOT, last_active = step) and st->n_blocks raised.
 * Every block the summary names must be stored (the caller stores their
 * chunks first). Returns the number of revivals counted, or -1 with a
 * message in err when an index is out of range (layer >= n_layers, block >=
 * n_blocks) or a named block is not stored: then the state is unchanged (the
 * summary is validated before anything is applied). */
int policy_apply_summary(policy_state *st, const policy_summary *s, char *err, size_t errlen);

/* Bytes of scratch memory policy_decide needs for this state (it follows
 * the stored chunks, not n_layers x n_blocks). */
size_t policy_scratch_size(const policy_state *st);

/* Decide moves for the state as it is: only stored blocks can be the subject
 * of one. Writes at most `cap` decisions to out (cap >= n_chunks *
 * POLICY_CHUNK_BLOCKS is always enough: one decision per block) and
 * returns how many, ordered by rule (1, 2, 3). `scratch` is caller
 * memory of policy_scratch_size(st) bytes (8-byte aligned, e.g. malloc'd).
 * Allocates nothing; does not modify the state. */
size_t policy_decide(const policy_params *p, const policy_state *st, policy_decision *out,
                     size_t cap, void *scratch);

/* Apply one decision to the state (tier = d->to). Returns 0, or -1 if the
 * decision does not address a stored block of the state. */
int policy_apply_decision(policy_state *st, const policy_decision *d);

/* Names for logs and the admin API: "HOT", "DEMOTE_HOST", ... */
const char *policy_tier_name(int tier);
const char *policy_kind_name(int kind);

#endif
