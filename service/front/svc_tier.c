/* svc_tier.c - Tier service handlers: OpenSequence, Summarize, PutBlocks,
 * FetchBlocks, their batched forms PutBlockBatches / FetchBlockBatches (many
 * blocks per message), CloseSequence. Each maps onto one tier.h call per
 * block, except the puts: one tier_put_batch per stream (see there); errors become
 * gRPC status codes (svc_status_code) with the library's message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvtier.pb-c.h"
#include "svc.h"
#include "svc_authz.h"
#include "svc_map.h"
#include "tier_size.h"

#define ERRLEN 512

uint64_t svc_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Resolves the tenant of a call (svc_authz_tenant: a tenant token's own, or
 * the one the request names) or answers INVALID_ARGUMENT / PERMISSION_DENIED.
 * Returns 0/-1. */
static int call_tenant(rpc_call *c, const char *field, char *out) {
    char err[ERRLEN];
    grpc_status_code code =
        svc_authz_tenant(rpc_call_identity(c), field, rpc_call_tenant(c), out, err, sizeof err);
    if (code != GRPC_STATUS_OK) {
        rpc_call_finish(c, code, "%s", err);
        return -1;
    }
    return 0;
}

/* Checks the x-kvtier-sequence metadata (the load balancer routes by it)
 * against the message's sequence id, or answers INVALID_ARGUMENT. Returns 0/-1. */
static int call_sequence_ok(rpc_call *c, uint64_t seq) {
    const char *md = rpc_call_sequence(c);
    if (!md)
        return 0;
    char *end;
    unsigned long long v = strtoull(md, &end, 10);
    if (end == md || *end || v != seq) {
        rpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
                        "x-kvtier-sequence \"%s\" does not match sequence_id %llu", md,
                        (unsigned long long)seq);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- OpenSequence */

static void h_open(rpc_call *c, const ProtobufCMessage *msg, void *user) {
    svc_ctx *ctx = user;
    const Kvtier__V1__OpenSequenceRequest *r = (const Kvtier__V1__OpenSequenceRequest *)msg;
    char tenant[TIER_TENANT_MAX + 1], err[ERRLEN];
    if (call_tenant(c, r->tenant, tenant) != 0 || call_sequence_ok(c, r->sequence_id) != 0)
        return;
    if (r->sequence_id == 0) {
        rpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "sequence_id must be non-zero");
        return;
    }
    if (r->block_bytes > UINT32_MAX) {
        rpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "block_bytes %llu exceeds 4 GiB",
                        (unsigned long long)r->block_bytes);
        return;
    }
    policy_params params;
    if (svc_params_merge(&ctx->defaults, r->params, &params, err, sizeof err) != 0) {
        rpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "sequence %llu: %s",
                        (unsigned long long)r->sequence_id, err);
        return;
    }
    tier_seq_info info = {.n_layers = r->layers,
                          .n_kv_heads = r->kv_heads,
                          .head_dim = r->head_dim,
                          .block_tokens = r->block_tokens ? r->block_tokens : 16,
                          .max_blocks = 0,
                          .block_bytes = (uint32_t)r->block_bytes,
                          .params = &params};
    tier_seq_desc desc;
    int existed = tier_seq_get(ctx->tier, tenant, r->sequence_id, &desc, NULL, 0) == TIER_OK;
    tier_status s = tier_seq_open(ctx->tier, tenant, r->sequence_id, &info, err, sizeof err);
    if (s == TIER_OK)
        s = tier_seq_get(ctx->tier, tenant, r->sequence_id, &desc, err, sizeof err);
    if (s != TIER_OK) {
        rpc_call_finish(c, svc_status_code(s), "open %s/%llu: %s", tenant,
                        (unsigned long long)r->sequence_id, err);
        return;
    }
    Kvtier__V1__OpenSequenceResponse resp = KVTIER__V1__OPEN_SEQUENCE_RESPONSE__INIT;
    Kvtier__V1__PolicyParams pp = KVTIER__V1__POLICY_PARAMS__INIT;
    resp.created = !existed;
    resp.blocks_host = desc.blocks[TIER_HOST];
    resp.blocks_ssd = desc.blocks[TIER_SSD];
    resp.blocks_lost = existed ? desc.blocks[TIER_NONE] : 0;
    svc_params_to_proto(&desc.params, &pp);
    resp.effective_params = &pp;
    rpc_call_reply(c, &resp.base);
}

/* ---------------------------------------------------------------- Summarize */

/* Answers one summary with its decisions. Returns 0, -1 when the call ended. */
static int summarize_one(rpc_call *c, svc_ctx *ctx, const Kvtier__V1__SummaryRequest *r) {
    char tenant[TIER_TENANT_MAX + 1], err[ERRLEN];
    if (call_tenant(c, r->tenant, tenant) != 0 || call_sequence_ok(c, r->sequence_id) != 0)
        return -1;
    svc_summary sum;
    if (svc_summary_from_proto(r, &sum, err, sizeof err) != 0) {
        rpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "summary of %s/%llu step %llu: %s", tenant,
                        (unsigned long long)r->sequence_id, (unsigned long long)r->step, err);
        return -1;
    }
    tier_decision *dec = NULL;
    size_t n = 0;
    tier_status s =
        tier_summarize(ctx->tier, tenant, r->sequence_id, &sum.s, &dec, &n, err, sizeof err);
    svc_summary_free(&sum);
    if (s != TIER_OK) {
        rpc_call_finish(c, svc_status_code(s), "summary of %s/%llu step %llu: %s", tenant,
                        (unsigned long long)r->sequence_id, (unsigned long long)r->step, err);
        return -1;
    }
    Kvtier__V1__BlockDecision *bd = calloc(n ? n : 1, sizeof *bd);
    Kvtier__V1__BlockDecision **bdp = calloc(n ? n : 1, sizeof *bdp);
    if (!bd || !bdp) {
        free(bd);
        free(bdp);
        tier_buf_free(dec);
        rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for %zu decisions", n);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        kvtier__v1__block_decision__init(&bd[i]);
        bd[i].layer = dec[i].layer;
        bd[i].block = dec[i].block;
        bd[i].decision = svc_kind_to_proto(dec[i].kind);
        bd[i].from_tier = svc_tier_to_proto(dec[i].from);
        bd[i].to_tier = svc_tier_to_proto(dec[i].to);
        bdp[i] = &bd[i];
    }
    Kvtier__V1__Decisions d = KVTIER__V1__DECISIONS__INIT;
    d.sequence_id = r->sequence_id;
    d.step = r->step;
    d.n_decisions = n;
    d.decisions = bdp;
    int rc = rpc_call_write(c, &d.base);
    free(bd);
    free(bdp);
    tier_buf_free(dec);
    return rc;
}

static void h_summarize(rpc_call *c, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    svc_ctx *ctx = user;
    Kvtier__V1__SummaryRequest *r;
    int rc;
    while ((rc = rpc_call_read(c, &kvtier__v1__summary_request__descriptor,
                               (ProtobufCMessage **)&r)) == 1) {
        int w = summarize_one(c, ctx, r);
        protobuf_c_message_free_unpacked(&r->base, NULL);
        if (w != 0)
            return;
    }
    if (rc == 0)
        rpc_call_finish(c, GRPC_STATUS_OK, NULL);
}

/* ---------------------------------------------------------------- PutBlocks */

/* The stream is the unit of durability: PutBlocks answers once, at the end,
 * so a block counts as acknowledged only when the final PutResponse lists it.
 * The handler therefore stages the whole stream (each message validated as it
 * arrives: a bad one is answered at once and nothing is stored) and commits it
 * with ONE tier_put_batch after the client half-closed: all blocks or none.
 * A cancelled or broken stream, or a kvtierd killed before the reply, stores
 * nothing. Staging is bounded: SVC_PUT_STREAM_MSGS max-size messages of
 * payload (16 x 16 MiB = 256 MiB by default) and SVC_PUT_STREAM_MAX_BLOCKS
 * blocks; beyond that RESOURCE_EXHAUSTED asks the client to split the stream. */
#define SVC_PUT_STREAM_MSGS 16u
#define SVC_PUT_STREAM_MAX_BLOCKS 65536u

typedef struct {
    Kvtier__V1__Block *msg;           /* payload borrowed by the batch */
    int owned;                        /* msg unpacked on its own (PutBlocks), not part of a
                                         BlockBatch of the stage (PutBlockBatches) */
    char tenant[TIER_TENANT_MAX + 1]; /* resolved tenant (message or metadata) */
} staged_block;

typedef struct {
    staged_block *b; /* [n] in stream order */
    size_t n, cap;
    Kvtier__V1__BlockBatch **bat; /* [nbat] owned batches (PutBlockBatches) */
    size_t nbat, capbat;
    uint64_t bytes; /* payload bytes staged */
    uint64_t limit; /* payload bytes allowed */
    int released;   /* bytes given back to ctx->staged (stage_release) */
} put_stage;

/* Gives the stage's bytes back to the service-wide count, once: before the
 * stream is answered, so that a client's next stream finds them free. */
static void stage_release(svc_ctx *ctx, put_stage *st) {
    if (!st->released)
        atomic_fetch_sub(&ctx->staged, st->bytes);
    st->released = 1;
}

/* Frees the stage (its bytes given back). */
static void stage_free(svc_ctx *ctx, put_stage *st) {
    stage_release(ctx, st);
    for (size_t i = 0; i < st->n; i++)
        if (st->b[i].owned)
            protobuf_c_message_free_unpacked(&st->b[i].msg->base, NULL);
    for (size_t i = 0; i < st->nbat; i++)
        protobuf_c_message_free_unpacked(&st->bat[i]->base, NULL);
    free(st->b);
    free(st->bat);
    memset(st, 0, sizeof *st);
}

/* Block.target -> tier_put_item.target: 0 (unspecified: the service picks),
 * TIER_HOST, TIER_SSD; -1 for anything else (HOT, DROPPED, unknown). */
static int put_target(Kvtier__V1__TierKind k) {
    if (k == KVTIER__V1__TIER_KIND__TIER_UNSPECIFIED)
        return 0;
    int t = svc_tier_from_proto(k);
    return t == TIER_HOST || t == TIER_SSD ? t : -1;
}

/* Answers the call with a refused block's error (nothing of the stream is
 * stored) and counts it. */
static void put_refuse(rpc_call *c, svc_ctx *ctx, put_stage *st, grpc_status_code code,
                       size_t count, const char *what, const char *err) {
    stage_release(ctx, st);
    atomic_fetch_add(&ctx->m->put_errors[code], count);
    rpc_call_finish(c, code,
                    "put %s: %s; nothing of this stream was stored (a PutBlocks stream "
                    "is stored whole or not at all)",
                    what, err);
}

/* Frees b when the stage would have owned it (a block of a batch is freed
 * with its batch). */
static void msg_drop(Kvtier__V1__Block *b, int owned) {
    if (owned)
        protobuf_c_message_free_unpacked(&b->base, NULL);
}

/* Validates block #i of the stream and stages it (owned: taking ownership of
 * b; else b belongs to a batch the stage holds). Returns 0, or -1 after
 * answering the call (an owned b freed). */
static int stage_one(rpc_call *c, svc_ctx *ctx, put_stage *st, Kvtier__V1__Block *b, int owned) {
    char tenant[TIER_TENANT_MAX + 1], err[ERRLEN], what[160];
    size_t i = st->n;
    if (!b->key) {
        msg_drop(b, owned);
        snprintf(what, sizeof what, "block #%zu of the stream", i);
        put_refuse(c, ctx, st, GRPC_STATUS_INVALID_ARGUMENT, 1, what, "the block has no key");
        return -1;
    }
    if (call_tenant(c, b->key->tenant, tenant) != 0 ||
        call_sequence_ok(c, b->key->sequence_id) != 0) {
        msg_drop(b, owned);
        return -1;
    }
    snprintf(what, sizeof what, "%s/%llu layer %u block %u (block #%zu of the stream)", tenant,
             (unsigned long long)b->key->sequence_id, b->key->layer, b->key->block, i);
    if (i >= SVC_PUT_STREAM_MAX_BLOCKS || b->payload.len > st->limit - st->bytes) {
        char lim[32];
        snprintf(err, sizeof err,
                 "the stream exceeds what one PutBlocks call may carry (%u blocks, %s of "
                 "payload); split it into several streams",
                 SVC_PUT_STREAM_MAX_BLOCKS, tier_size_format(st->limit, lim, sizeof lim));
        msg_drop(b, owned);
        put_refuse(c, ctx, st, GRPC_STATUS_RESOURCE_EXHAUSTED, 1, what, err);
        return -1;
    }
    int target = put_target(b->target);
    if (target < 0) {
        snprintf(err, sizeof err,
                 "target %d is not a placement: TIER_HOST, TIER_SSD or unspecified (the "
                 "service picks)",
                 (int)b->target);
        msg_drop(b, owned);
        put_refuse(c, ctx, st, GRPC_STATUS_INVALID_ARGUMENT, 1, what, err);
        return -1;
    }
    tier_put_item it = {{tenant, b->key->sequence_id, b->key->layer, b->key->block},
                        b->payload.data,
                        b->payload.len,
                        b->crc32c,
                        b->token_count,
                        (uint8_t)target};
    tier_status s = tier_put_check(ctx->tier, &it, err, sizeof err);
    if (s == TIER_OK && st->n == st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 64;
        staged_block *nb = realloc(st->b, cap * sizeof *nb);
        if (!nb) {
            snprintf(err, sizeof err, "out of memory staging %zu blocks", i + 1);
            s = TIER_EFULL;
        } else {
            st->b = nb;
            st->cap = cap;
        }
    }
    if (s != TIER_OK) {
        msg_drop(b, owned);
        put_refuse(c, ctx, st, svc_status_code(s), 1, what, err);
        return -1;
    }
    /* the service-wide bound: all open streams together */
    uint64_t len = b->payload.len;
    uint64_t now = atomic_fetch_add(&ctx->staged, len) + len;
    if (ctx->max_staged && now > ctx->max_staged) {
        atomic_fetch_sub(&ctx->staged, len);
        char lim[32];
        snprintf(err, sizeof err,
                 "the open PutBlocks streams together hold %llu bytes staged for commit, over "
                 "kvtierd's --max-staged %s; retry when other streams finished, or send smaller "
                 "streams",
                 (unsigned long long)(now - len),
                 tier_size_format(ctx->max_staged, lim, sizeof lim));
        msg_drop(b, owned);
        put_refuse(c, ctx, st, GRPC_STATUS_RESOURCE_EXHAUSTED, 1, what, err);
        return -1;
    }
    st->b[i].msg = b;
    st->b[i].owned = owned;
    memcpy(st->b[i].tenant, tenant, sizeof tenant);
    st->bytes += b->payload.len;
    st->n++;
    return 0;
}

/* Commits the staged stream with one tier_put_batch and replies with the acks
 * (in stream order), or answers the error (nothing stored). */
static void put_commit(rpc_call *c, svc_ctx *ctx, put_stage *st) {
    size_t n = st->n;
    tier_put_item *items = calloc(n ? n : 1, sizeof *items);
    int *tiers = calloc(n ? n : 1, sizeof *tiers);
    Kvtier__V1__BlockAck *acks = calloc(n ? n : 1, sizeof *acks);
    Kvtier__V1__BlockAck **ap = calloc(n ? n : 1, sizeof *ap);
    if (!items || !tiers || !acks || !ap) {
        put_refuse(c, ctx, st, GRPC_STATUS_RESOURCE_EXHAUSTED, n, "stream",
                   "out of memory for the acks");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const Kvtier__V1__Block *b = st->b[i].msg;
        items[i] =
            (tier_put_item){{st->b[i].tenant, b->key->sequence_id, b->key->layer, b->key->block},
                            b->payload.data,
                            b->payload.len,
                            b->crc32c,
                            b->token_count,
                            (uint8_t)put_target(b->target)};
    }
    char err[ERRLEN], what[160];
    size_t bad = n;
    uint64_t t0 = svc_now_ns();
    tier_status s = tier_put_batch(ctx->tier, items, n, tiers, &bad, err, sizeof err);
    if (s != TIER_OK) {
        if (bad < n)
            snprintf(what, sizeof what, "%s/%llu layer %u block %u (block #%zu of the stream)",
                     items[bad].key.tenant, (unsigned long long)items[bad].key.seq,
                     items[bad].key.layer, items[bad].key.block, bad);
        else
            snprintf(what, sizeof what, "stream of %zu blocks (%llu bytes)", n,
                     (unsigned long long)st->bytes);
        put_refuse(c, ctx, st, svc_status_code(s), n, what, err);
        goto out;
    }
    stage_release(ctx, st);
    uint64_t ns = svc_now_ns() - t0; /* each block became durable with the commit */
    for (size_t i = 0; i < n; i++) {
        metrics_observe(&ctx->m->put, ns);
        kvtier__v1__block_ack__init(&acks[i]);
        acks[i].layer = items[i].key.layer;
        acks[i].block = items[i].key.block;
        acks[i].tier = svc_tier_to_proto(tiers[i]);
        ap[i] = &acks[i];
    }
    atomic_fetch_add(&ctx->m->put_bytes, st->bytes);
    Kvtier__V1__PutResponse resp = KVTIER__V1__PUT_RESPONSE__INIT;
    resp.acked = (uint32_t)n;
    resp.n_blocks = n;
    resp.blocks = ap;
    rpc_call_reply(c, &resp.base);
out:
    free(items);
    free(tiers);
    free(acks);
    free(ap);
}

/* After the last message (rc == 0: end of stream): commits the stage unless
 * the client cancelled. rc < 0: cancelled, broken or already answered. */
static void put_end(rpc_call *c, svc_ctx *ctx, put_stage *st, int rc,
                    const ProtobufCMessageDescriptor *desc) {
    /* The RPC layer reports a client's cancel (gRPC RST_STREAM) as an end of
     * stream too; the cancel shows in rpc_call_cancelled once the call's
     * close event was dispatched. That event is queued right behind the end
     * of stream, so one more read (it returns at once after the end of
     * stream, through the same queue) lets it be seen before the commit.
     * This relies on that queue order, not on a gRPC guarantee; the real fix
     * belongs in rpc_call_read (proto/). */
    if (rc == 0) {
        ProtobufCMessage *extra = NULL;
        int again = rpc_call_read(c, desc, &extra);
        if (extra)
            protobuf_c_message_free_unpacked(extra, NULL);
        if (again == 1)
            rpc_call_finish(c, GRPC_STATUS_INTERNAL,
                            "%s: a message after the end of the stream; nothing stored",
                            desc->short_name);
        else if (again == 0 && !rpc_call_cancelled(c))
            put_commit(c, ctx, st);
    }
    /* rc < 0: nothing was stored */
    stage_free(ctx, st);
}

static void h_put(rpc_call *c, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    svc_ctx *ctx = user;
    put_stage st = {0};
    st.limit = (uint64_t)SVC_PUT_STREAM_MSGS * rpc_call_max_msg(c);
    Kvtier__V1__Block *b;
    int rc;
    while ((rc = rpc_call_read(c, &kvtier__v1__block__descriptor, (ProtobufCMessage **)&b)) == 1)
        if (stage_one(c, ctx, &st, b, 1) != 0)
            break;
    put_end(c, ctx, &st, rc, &kvtier__v1__block__descriptor);
}

/* PutBlockBatches: PutBlocks with many blocks per message; the same staging,
 * limits and all-or-nothing commit. */
static void h_put_batches(rpc_call *c, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    svc_ctx *ctx = user;
    put_stage st = {0};
    st.limit = (uint64_t)SVC_PUT_STREAM_MSGS * rpc_call_max_msg(c);
    Kvtier__V1__BlockBatch *bb;
    int rc, bad = 0;
    while (!bad && (rc = rpc_call_read(c, &kvtier__v1__block_batch__descriptor,
                                       (ProtobufCMessage **)&bb)) == 1) {
        if (st.nbat == st.capbat) {
            size_t cap = st.capbat ? st.capbat * 2 : 8;
            Kvtier__V1__BlockBatch **nb = realloc(st.bat, cap * sizeof *nb);
            if (!nb) {
                protobuf_c_message_free_unpacked(&bb->base, NULL);
                put_refuse(c, ctx, &st, GRPC_STATUS_RESOURCE_EXHAUSTED, 1, "stream",
                           "out of memory staging a batch");
                rc = -1;
                break;
            }
            st.bat = nb;
            st.capbat = cap;
        }
        st.bat[st.nbat++] = bb; /* freed with the stage */
        for (size_t i = 0; i < bb->n_blocks; i++)
            if (stage_one(c, ctx, &st, bb->blocks[i], 0) != 0) {
                bad = 1;
                rc = -1;
                break;
            }
    }
    put_end(c, ctx, &st, rc, &kvtier__v1__block_batch__descriptor);
}

/* ---------------------------------------------------------------- FetchBlocks */

/* Checks a FetchRequest; fills tenant. Returns 0, or -1 after answering. */
static int fetch_check(rpc_call *c, svc_ctx *ctx, const Kvtier__V1__FetchRequest *r,
                       char tenant[TIER_TENANT_MAX + 1]) {
    if (call_tenant(c, r->tenant, tenant) != 0 || call_sequence_ok(c, r->sequence_id) != 0)
        return -1;
    if (ctx->max_fetch_refs && r->n_blocks > ctx->max_fetch_refs) {
        rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
                        "fetch %s/%llu: %zu block references in one request, over kvtierd's "
                        "--max-fetch-refs %u; split the request",
                        tenant, (unsigned long long)r->sequence_id, r->n_blocks,
                        ctx->max_fetch_refs);
        return -1;
    }
    return 0;
}

/* Reads block reference #i of r into *b (key in *key, payload in *data: the
 * caller frees it with tier_buf_free once sent). Returns TIER_OK, or why it
 * cannot be served (err; TIER_EINVAL: an empty reference). */
static tier_status fetch_one(svc_ctx *ctx, const char *tenant, const Kvtier__V1__FetchRequest *r,
                             size_t i, Kvtier__V1__Block *b, Kvtier__V1__BlockKey *key, void **data,
                             char *err, size_t errlen) {
    *data = NULL;
    if (!r->blocks[i]) {
        snprintf(err, errlen, "block reference #%zu is empty", i);
        return TIER_EINVAL;
    }
    tier_block_key k = {tenant, r->sequence_id, r->blocks[i]->layer, r->blocks[i]->block};
    size_t len = 0;
    uint32_t crc = 0;
    int tier = -1;
    uint64_t t0 = svc_now_ns();
    tier_status s = tier_fetch(ctx->tier, &k, data, &len, &crc, &tier, err, errlen);
    if (s != TIER_OK)
        return s;
    if (tier >= 0 && tier < TIER_NLEVELS)
        metrics_observe(&ctx->m->fetch[tier], svc_now_ns() - t0);
    atomic_fetch_add(&ctx->m->fetch_bytes, len);
    kvtier__v1__block_key__init(key);
    key->tenant = (char *)tenant;
    key->sequence_id = k.seq;
    key->layer = k.layer;
    key->block = k.block;
    kvtier__v1__block__init(b);
    b->key = key;
    b->payload.data = *data;
    b->payload.len = len;
    b->crc32c = crc;
    b->tier = svc_tier_to_proto(tier);
    tier_block_meta bm; /* filled positions, so a copy (kvtierctl migrate) keeps them */
    if (tier_block_stat(ctx->tier, &k, &bm, NULL, 0) == TIER_OK)
        b->token_count = bm.ntokens;
    return TIER_OK;
}

/* Answers the call with why block reference #i could not be served; every
 * block before it was sent (the client asks again from there). */
static void fetch_refuse(rpc_call *c, tier_status s, const char *tenant,
                         const Kvtier__V1__FetchRequest *r, size_t i, const char *err) {
    if (s == TIER_EINVAL && !r->blocks[i]) {
        rpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "%s", err);
        return;
    }
    rpc_call_finish(c, svc_status_code(s),
                    "fetch %s/%llu layer %u block %u: %s; %zu blocks before it were sent", tenant,
                    (unsigned long long)r->sequence_id, r->blocks[i]->layer, r->blocks[i]->block,
                    err, i);
}

static void h_fetch(rpc_call *c, const ProtobufCMessage *msg, void *user) {
    svc_ctx *ctx = user;
    const Kvtier__V1__FetchRequest *r = (const Kvtier__V1__FetchRequest *)msg;
    char tenant[TIER_TENANT_MAX + 1], err[ERRLEN];
    if (fetch_check(c, ctx, r, tenant) != 0)
        return;
    for (size_t i = 0; i < r->n_blocks; i++) {
        Kvtier__V1__Block b;
        Kvtier__V1__BlockKey key;
        void *data;
        tier_status s = fetch_one(ctx, tenant, r, i, &b, &key, &data, err, sizeof err);
        if (s != TIER_OK) {
            fetch_refuse(c, s, tenant, r, i, err);
            return;
        }
        int w = rpc_call_write(c, &b.base);
        tier_buf_free(data);
        if (w != 0)
            return;
    }
    rpc_call_finish(c, GRPC_STATUS_OK, NULL);
}

/* Payload bytes per FetchBlockBatches message (at most; one block alone may
 * be larger, up to the message limit). */
#define SVC_FETCH_BATCH_BYTES (1u << 20)

/* FetchBlockBatches: FetchBlocks with the blocks packed into messages of up
 * to SVC_FETCH_BATCH_BYTES (and under the channel's message limit), in
 * request order; a block that cannot be served ends the call after every
 * block before it was sent, as FetchBlocks does. */
static void h_fetch_batches(rpc_call *c, const ProtobufCMessage *msg, void *user) {
    svc_ctx *ctx = user;
    const Kvtier__V1__FetchRequest *r = (const Kvtier__V1__FetchRequest *)msg;
    char tenant[TIER_TENANT_MAX + 1], err[ERRLEN];
    if (fetch_check(c, ctx, r, tenant) != 0)
        return;
    size_t n = r->n_blocks, cap = n ? n : 1;
    Kvtier__V1__Block *bv = malloc(cap * sizeof *bv);
    Kvtier__V1__Block **bp = malloc(cap * sizeof *bp);
    Kvtier__V1__BlockKey *kv = malloc(cap * sizeof *kv);
    void **data = calloc(cap, sizeof *data);
    if (!bv || !bp || !kv || !data) {
        rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
                        "fetch: out of memory for a batch of %zu blocks", n);
        goto out;
    }
    size_t limit = rpc_call_max_msg(c);
    limit = limit > (64u << 10) ? limit - (64u << 10) : limit; /* framing headroom */
    if (limit > SVC_FETCH_BATCH_BYTES)
        limit = SVC_FETCH_BATCH_BYTES;
    size_t first = 0, bytes = 0; /* blocks [first, i) wait in the current batch */
    for (size_t i = 0; i <= n; i++) {
        tier_status s = TIER_OK;
        if (i < n)
            s = fetch_one(ctx, tenant, r, i, &bv[i], &kv[i], &data[i], err, sizeof err);
        size_t len = i < n && s == TIER_OK ? bv[i].payload.len : 0;
        /* what waits goes out when this block would not fit, before a
         * failure, and at the end */
        if (i > first && (i == n || s != TIER_OK || bytes + len > limit)) {
            Kvtier__V1__BlockBatch bb = KVTIER__V1__BLOCK_BATCH__INIT;
            for (size_t j = first; j < i; j++)
                bp[j] = &bv[j];
            bb.n_blocks = i - first;
            bb.blocks = bp + first;
            int w = rpc_call_write(c, &bb.base);
            for (size_t j = first; j < i; j++) {
                tier_buf_free(data[j]);
                data[j] = NULL;
            }
            if (w != 0)
                goto out;
            first = i;
            bytes = 0;
        }
        if (s != TIER_OK) {
            fetch_refuse(c, s, tenant, r, i, err);
            goto out;
        }
        bytes += len;
    }
    rpc_call_finish(c, GRPC_STATUS_OK, NULL);
out:
    for (size_t j = 0; data && j < n; j++)
        tier_buf_free(data[j]);
    free(bv);
    free(bp);
    free(kv);
    free(data);
}

/* ---------------------------------------------------------------- CloseSequence */

static void h_close(rpc_call *c, const ProtobufCMessage *msg, void *user) {
    svc_ctx *ctx = user;
    const Kvtier__V1__CloseSequenceRequest *r = (const Kvtier__V1__CloseSequenceRequest *)msg;
    char tenant[TIER_TENANT_MAX + 1], err[ERRLEN];
    if (call_tenant(c, r->tenant, tenant) != 0 || call_sequence_ok(c, r->sequence_id) != 0)
        return;
    tier_seq_desc desc;
    tier_status s = tier_seq_get(ctx->tier, tenant, r->sequence_id, &desc, err, sizeof err);
    int retain = r->retain ? 1 : (s == TIER_OK && desc.params.retain_on_close ? 1 : 0);
    if (s == TIER_OK)
        s = tier_seq_close(ctx->tier, tenant, r->sequence_id, retain, err, sizeof err);
    if (s != TIER_OK) {
        rpc_call_finish(c, svc_status_code(s), "close %s/%llu: %s", tenant,
                        (unsigned long long)r->sequence_id, err);
        return;
    }
    uint64_t stored = desc.blocks[TIER_HOST] + desc.blocks[TIER_SSD];
    Kvtier__V1__CloseSequenceResponse resp = KVTIER__V1__CLOSE_SEQUENCE_RESPONSE__INIT;
    resp.blocks_retained = retain ? stored : 0;
    resp.blocks_dropped = retain ? 0 : stored;
    rpc_call_reply(c, &resp.base);
}

int svc_tier_register(rpc_server *srv, svc_ctx *ctx) {
    const ProtobufCServiceDescriptor *d = &kvtier__v1__tier__descriptor;
    if (rpc_server_register_service(srv, d, "OpenSequence", h_open, ctx) != 0)
        return -1;
    if (rpc_server_register_service(srv, d, "Summarize", h_summarize, ctx) != 0)
        return -1;
    if (rpc_server_register_service(srv, d, "PutBlocks", h_put, ctx) != 0)
        return -1;
    if (rpc_server_register_service(srv, d, "FetchBlocks", h_fetch, ctx) != 0)
        return -1;
    if (rpc_server_register_service(srv, d, "PutBlockBatches", h_put_batches, ctx) != 0)
        return -1;
    if (rpc_server_register_service(srv, d, "FetchBlockBatches", h_fetch_batches, ctx) != 0)
        return -1;
    if (rpc_server_register_service(srv, d, "CloseSequence", h_close, ctx) != 0)
        return -1;
    return 0;
}
