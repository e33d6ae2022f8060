/* kvtier_blocks.c — libkvtier: Tier service calls for sequences and blocks
 * (OpenSequence, CloseSequence, PutBlocks client stream, PutBlockBatches
 * (kvtier_put_blocks), FetchBlockBatches (FetchBlocks from an older kvtierd) server
 * stream with crc32c and key verification). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvtier_internal.h"

#define FREE_MSG(m) protobuf_c_message_free_unpacked((ProtobufCMessage *)(m), NULL)

/* ---------------------------------------------------------------- sequences */

kvtier_code kvtier_open_sequence(kvtier_client *c, const kvtier_seq_shape *sh,
                                 kvtier_open_result *out, kvtier_error *err) {
    if (!c || !sh)
        return kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: NULL argument");
    Kvtier__V1__PolicyParams pp = KVTIER__V1__POLICY_PARAMS__INIT;
    pp.top_p = sh->top_p;
    pp.hot_inactive_steps = sh->hot_inactive_steps;
    pp.recent_blocks = sh->recent_blocks;
    pp.sink_blocks = sh->sink_blocks;
    pp.n_layer_hot_budget_blocks = sh->layer_hot_budget ? sh->n_layer_hot_budget : 0;
    pp.layer_hot_budget_blocks = (uint32_t *)sh->layer_hot_budget;
    pp.retain_on_close = sh->retain_on_close ? 1 : 0;
    Kvtier__V1__OpenSequenceRequest req = KVTIER__V1__OPEN_SEQUENCE_REQUEST__INIT;
    req.tenant = kvc_tenant(c);
    req.sequence_id = sh->sequence_id;
    req.layers = sh->layers;
    req.kv_heads = sh->kv_heads;
    req.head_dim = sh->head_dim;
    req.block_tokens = sh->block_tokens;
    req.block_bytes = sh->block_bytes;
    req.params = &pp;
    Kvtier__V1__OpenSequenceResponse *r = NULL;
    kvtier_code code =
        kvc_unary(c, KVC_TIER "OpenSequence", sh->sequence_id, &req.base,
                  &kvtier__v1__open_sequence_response__descriptor, (ProtobufCMessage **)&r, err);
    if (code != KVTIER_OK)
        return code;
    if (out) {
        out->created = r->created ? 1 : 0;
        out->blocks_host = r->blocks_host;
        out->blocks_ssd = r->blocks_ssd;
        out->blocks_lost = r->blocks_lost;
    }
    FREE_MSG(r);
    return KVTIER_OK;
}

kvtier_code kvtier_close_sequence(kvtier_client *c, uint64_t seq, int retain, uint64_t *dropped,
                                  uint64_t *retained, kvtier_error *err) {
    if (!c)
        return kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: NULL argument");
    Kvtier__V1__CloseSequenceRequest req = KVTIER__V1__CLOSE_SEQUENCE_REQUEST__INIT;
    req.tenant = kvc_tenant(c);
    req.sequence_id = seq;
    req.retain = retain ? 1 : 0;
    Kvtier__V1__CloseSequenceResponse *r = NULL;
    kvtier_code code =
        kvc_unary(c, KVC_TIER "CloseSequence", seq, &req.base,
                  &kvtier__v1__close_sequence_response__descriptor, (ProtobufCMessage **)&r, err);
    if (code != KVTIER_OK)
        return code;
    if (dropped)
        *dropped = r->blocks_dropped;
    if (retained)
        *retained = r->blocks_retained;
    FREE_MSG(r);
    return KVTIER_OK;
}

/* ---------------------------------------------------------------- put */

struct kvtier_put_stream {
    kvtier_client *c;
    rpc_stream *s;
    uint64_t seq;
    int ended; /* the call ended early; st holds why */
    rpc_status st;
};

kvtier_put_stream *kvtier_put_open(kvtier_client *c, uint64_t seq, kvtier_error *err) {
    if (!c) {
        kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: NULL argument");
        return NULL;
    }
    kvtier_put_stream *p = calloc(1, sizeof *p);
    if (!p) {
        kvc_errf(err, KVTIER_RESOURCE_EXHAUSTED, "libkvtier: out of memory");
        return NULL;
    }
    char seqbuf[24];
    rpc_opts o = kvc_opts(c, seq, seqbuf, 1);
    p->s = rpc_stream_open(c->ch, KVC_TIER "PutBlocks", &o, &p->st);
    if (!p->s) {
        kvc_err_from(err, &p->st);
        free(p);
        return NULL;
    }
    rpc_stream_set_op_timeout(p->s, c->timeout_ms > 0 ? c->timeout_ms : 0);
    p->c = c;
    p->seq = seq;
    kvc_ok(err);
    return p;
}

kvtier_code kvtier_put_send(kvtier_put_stream *p, const kvtier_block *b, kvtier_error *err) {
    if (!p || !b || (!b->payload && b->len))
        return kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: NULL argument");
    if (p->ended)
        return kvc_err_from(err, &p->st);
    Kvtier__V1__BlockKey key = KVTIER__V1__BLOCK_KEY__INIT;
    key.tenant = kvc_tenant(p->c);
    key.sequence_id = p->seq;
    key.layer = b->layer;
    key.block = b->block;
    Kvtier__V1__Block m = KVTIER__V1__BLOCK__INIT;
    m.key = &key;
    m.payload.data = (uint8_t *)b->payload;
    m.payload.len = b->len;
    m.crc32c = b->crc_set ? b->crc32c : kvtier_crc32c(0, b->payload, b->len);
    m.token_count = b->token_count;
    m.target = (Kvtier__V1__TierKind)b->target;
    if (rpc_stream_write(p->s, &m.base) != 0) {
        /* The call is over (server answered early, or it broke): learn why. */
        rpc_stream_finish(p->s, &p->st);
        if (p->st.code == GRPC_STATUS_OK) { /* answered OK before reading everything */
            p->st.code = GRPC_STATUS_ABORTED;
            snprintf(p->st.message, sizeof p->st.message,
                     "server ended PutBlocks before block (%u,%u) was sent", b->layer, b->block);
        }
        p->ended = 1;
        return kvc_err_from(err, &p->st);
    }
    return kvc_ok(err);
}

void kvtier_put_result_free(kvtier_put_result *r) {
    if (!r)
        return;
    free(r->acks);
    memset(r, 0, sizeof *r);
}

kvtier_code kvtier_put_finish(kvtier_put_stream *p, kvtier_put_result *out, kvtier_error *err) {
    if (out)
        memset(out, 0, sizeof *out);
    if (!p)
        return kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: NULL argument");
    kvtier_code code;
    if (p->ended) {
        code = kvc_err_from(err, &p->st);
    } else {
        Kvtier__V1__PutResponse *r = NULL;
        rpc_stream_close_and_recv(p->s, &kvtier__v1__put_response__descriptor,
                                  (ProtobufCMessage **)&r, &p->st);
        code = kvc_err_from(err, &p->st);
        if (code == KVTIER_OK && r && out) {
            out->acked = r->acked;
            if (r->n_blocks) {
                out->acks = calloc(r->n_blocks, sizeof *out->acks);
                if (!out->acks) {
                    code = kvc_errf(err, KVTIER_RESOURCE_EXHAUSTED, "libkvtier: out of memory");
                } else {
                    out->n_acks = r->n_blocks;
                    for (size_t i = 0; i < r->n_blocks; i++) {
                        out->acks[i].layer = r->blocks[i]->layer;
                        out->acks[i].block = r->blocks[i]->block;
                        out->acks[i].tier = (kvtier_tier)r->blocks[i]->tier;
                    }
                }
            }
        }
        if (r)
            FREE_MSG(r);
    }
    rpc_stream_free(p->s);
    free(p);
    return code;
}

void kvtier_put_abort(kvtier_put_stream *p) {
    if (!p)
        return;
    if (!p->ended)
        rpc_stream_cancel(p->s);
    rpc_stream_free(p->s);
    free(p);
}

/* Payload bytes per PutBlockBatches / FetchBlockBatches message (a block
 * larger than that goes alone). */
#define KVC_BATCH_BYTES (1u << 20)

/* KVTIER_PER_BLOCK_RPCS=1: PutBlocks / FetchBlocks with one block per
 * message, as before the batched methods (to compare; an older kvtierd is
 * detected without it). */
static int per_block_rpcs(void) {
    const char *e = getenv("KVTIER_PER_BLOCK_RPCS");
    return e && *e && strcmp(e, "0") != 0;
}

kvtier_code kvtier_put_blocks(kvtier_client *c, uint64_t seq, const kvtier_block *blocks, size_t n,
                              kvtier_put_result *out, kvtier_error *err) {
    if (out)
        memset(out, 0, sizeof *out);
    if (!c || (!blocks && n))
        return kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: NULL argument");
    for (size_t i = 0; i < n; i++)
        if (!blocks[i].payload && blocks[i].len)
            return kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: block %zu has no payload", i);
    if (per_block_rpcs()) {
        kvtier_error e;
        kvtier_put_stream *p = kvtier_put_open(c, seq, &e);
        if (!p) {
            if (err)
                *err = e;
            return e.code;
        }
        for (size_t i = 0; i < n; i++)
            if (kvtier_put_send(p, &blocks[i], NULL) != KVTIER_OK)
                break; /* finish says why */
        return kvtier_put_finish(p, out, err);
    }
    size_t cap = n ? n : 1;
    Kvtier__V1__Block *mv = calloc(cap, sizeof *mv);
    Kvtier__V1__Block **mp = calloc(cap, sizeof *mp);
    Kvtier__V1__BlockKey *kv = calloc(cap, sizeof *kv);
    if (!mv || !mp || !kv) {
        free(mv), free(mp), free(kv);
        return kvc_errf(err, KVTIER_RESOURCE_EXHAUSTED, "libkvtier: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        const kvtier_block *b = &blocks[i];
        kvtier__v1__block_key__init(&kv[i]);
        kv[i].tenant = kvc_tenant(c);
        kv[i].sequence_id = seq;
        kv[i].layer = b->layer;
        kv[i].block = b->block;
        kvtier__v1__block__init(&mv[i]);
        mv[i].key = &kv[i];
        mv[i].payload.data = (uint8_t *)b->payload;
        mv[i].payload.len = b->len;
        mv[i].crc32c = b->crc_set ? b->crc32c : kvtier_crc32c(0, b->payload, b->len);
        mv[i].token_count = b->token_count;
        mv[i].target = (Kvtier__V1__TierKind)b->target;
        mp[i] = &mv[i];
    }
    kvtier_put_stream *p = calloc(1, sizeof *p);
    kvtier_code code = KVTIER_OK;
    if (!p) {
        code = kvc_errf(err, KVTIER_RESOURCE_EXHAUSTED, "libkvtier: out of memory");
        goto out;
    }
    char seqbuf[24];
    rpc_opts o = kvc_opts(c, seq, seqbuf, 1);
    p->s = rpc_stream_open(c->ch, KVC_TIER "PutBlockBatches", &o, &p->st);
    if (!p->s) {
        code = kvc_err_from(err, &p->st);
        free(p);
        goto out;
    }
    rpc_stream_set_op_timeout(p->s, c->timeout_ms > 0 ? c->timeout_ms : 0);
    p->c = c;
    p->seq = seq;
    /* one message per KVC_BATCH_BYTES of payload */
    for (size_t first = 0; first < n && !p->ended;) {
        size_t end = first, bytes = 0;
        while (end < n && (end == first || bytes + mv[end].payload.len <= KVC_BATCH_BYTES))
            bytes += mv[end++].payload.len;
        Kvtier__V1__BlockBatch bb = KVTIER__V1__BLOCK_BATCH__INIT;
        bb.n_blocks = end - first;
        bb.blocks = mp + first;
        if (rpc_stream_write(p->s, &bb.base) != 0) {
            rpc_stream_finish(p->s, &p->st);
            if (p->st.code == GRPC_STATUS_OK) {
                p->st.code = GRPC_STATUS_ABORTED;
                snprintf(p->st.message, sizeof p->st.message,
                         "server ended PutBlockBatches before block (%u,%u) was sent",
                         blocks[first].layer, blocks[first].block);
            }
            p->ended = 1;
        }
        first = end;
    }
    code = kvtier_put_finish(p, out, err);
out:
    free(mv), free(mp), free(kv);
    return code;
}

/* ---------------------------------------------------------------- fetch */

static int ref_cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Checks and hands one received block to cb. Returns KVTIER_OK, or the code
 * that ends the call (err set). */
static kvtier_code fetch_deliver(const Kvtier__V1__Block *b, uint64_t seq, const uint64_t *want,
                                 size_t n, kvtier_fetch_cb cb, void *user, size_t *got,
                                 kvtier_error *err) {
    uint64_t k = 0;
    int key_ok = b && b->key && b->key->sequence_id == seq;
    if (key_ok) {
        k = (uint64_t)b->key->layer << 32 | b->key->block;
        key_ok = bsearch(&k, want, n, sizeof *want, ref_cmp) != NULL;
    }
    if (!key_ok)
        return kvc_errf(err, KVTIER_DATA_LOSS,
                        "libkvtier: FetchBlocks returned a block with a key not asked for "
                        "(sequence %llu, layer %u, block %u)",
                        (unsigned long long)(b && b->key ? b->key->sequence_id : 0),
                        b && b->key ? b->key->layer : 0, b && b->key ? b->key->block : 0);
    uint32_t crc = kvtier_crc32c(0, b->payload.data, b->payload.len);
    if (crc != b->crc32c)
        return kvc_errf(err, KVTIER_DATA_LOSS,
                        "libkvtier: block (layer %u, block %u): payload crc32c 0x%08x != "
                        "declared 0x%08x",
                        b->key->layer, b->key->block, crc, b->crc32c);
    kvtier_fetched f = {0};
    f.layer = b->key->layer;
    f.block = b->key->block;
    f.payload = b->payload.data;
    f.len = b->payload.len;
    f.crc32c = b->crc32c;
    f.token_count = b->token_count;
    f.tier = (kvtier_tier)b->tier;
    (*got)++;
    if (cb(&f, user) != 0)
        return kvc_errf(err, KVTIER_CANCELLED, "libkvtier: fetch cancelled by the callback");
    return KVTIER_OK;
}

/* One fetch call: FetchBlockBatches (batched: many blocks per message) or
 * FetchBlocks (one block per message). *unimplemented is set when the
 * server does not know the method and nothing was received. */
static kvtier_code fetch_call(kvtier_client *c, uint64_t seq, const Kvtier__V1__FetchRequest *req,
                              const uint64_t *want, size_t n, int batched, kvtier_fetch_cb cb,
                              void *user, size_t *got, int *unimplemented, kvtier_error *err) {
    char seqbuf[24];
    rpc_opts o = kvc_opts(c, seq, seqbuf, 1);
    rpc_status st;
    memset(&st, 0, sizeof st);
    *unimplemented = 0;
    rpc_stream *s = rpc_stream_open(
        c->ch, batched ? KVC_TIER "FetchBlockBatches" : KVC_TIER "FetchBlocks", &o, &st);
    if (!s)
        return kvc_err_from(err, &st);
    rpc_stream_set_op_timeout(s, c->timeout_ms > 0 ? c->timeout_ms : 0);
    if (rpc_stream_write(s, &req->base) == 0)
        rpc_stream_close_send(s);
    kvtier_code code = KVTIER_OK;
    const ProtobufCMessageDescriptor *d =
        batched ? &kvtier__v1__block_batch__descriptor : &kvtier__v1__block__descriptor;
    while (code == KVTIER_OK) {
        ProtobufCMessage *m = NULL;
        if (rpc_stream_read(s, d, &m) <= 0)
            break;
        if (batched) {
            const Kvtier__V1__BlockBatch *bb = (const Kvtier__V1__BlockBatch *)m;
            for (size_t i = 0; i < bb->n_blocks && code == KVTIER_OK; i++)
                code = fetch_deliver(bb->blocks[i], seq, want, n, cb, user, got, err);
        } else {
            code = fetch_deliver((const Kvtier__V1__Block *)m, seq, want, n, cb, user, got, err);
        }
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if (code != KVTIER_OK) {
        rpc_stream_cancel(s);
    } else {
        rpc_stream_finish(s, &st);
        *unimplemented = st.code == GRPC_STATUS_UNIMPLEMENTED && *got == 0;
        code = kvc_err_from(err, &st);
    }
    rpc_stream_free(s);
    return code;
}

kvtier_code kvtier_fetch_blocks(kvtier_client *c, uint64_t seq, const kvtier_block_ref *refs,
                                size_t n, kvtier_fetch_cb cb, void *user, size_t *n_got,
                                kvtier_error *err) {
    if (n_got)
        *n_got = 0;
    if (!c || (!refs && n) || !cb)
        return kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: NULL argument");
    Kvtier__V1__BlockRef *rv = calloc(n ? n : 1, sizeof *rv);
    Kvtier__V1__BlockRef **rp = calloc(n ? n : 1, sizeof *rp);
    uint64_t *want = calloc(n ? n : 1, sizeof *want);
    kvtier_code code = KVTIER_OK;
    if (!rv || !rp || !want) {
        code = kvc_errf(err, KVTIER_RESOURCE_EXHAUSTED, "libkvtier: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        Kvtier__V1__BlockRef init = KVTIER__V1__BLOCK_REF__INIT;
        rv[i] = init;
        rv[i].layer = refs[i].layer;
        rv[i].block = refs[i].block;
        rp[i] = &rv[i];
        want[i] = (uint64_t)refs[i].layer << 32 | refs[i].block;
    }
    qsort(want, n, sizeof *want, ref_cmp);
    Kvtier__V1__FetchRequest req = KVTIER__V1__FETCH_REQUEST__INIT;
    req.tenant = kvc_tenant(c);
    req.sequence_id = seq;
    req.n_blocks = n;
    req.blocks = rp;
    size_t got = 0;
    int unimpl = 0;
    code = fetch_call(c, seq, &req, want, n, !per_block_rpcs(), cb, user, &got, &unimpl, err);
    if (unimpl) /* a kvtierd from before FetchBlockBatches */
        code = fetch_call(c, seq, &req, want, n, 0, cb, user, &got, &unimpl, err);
    if (n_got)
        *n_got = got;
out:
    free(rv);
    free(rp);
    free(want);
    return code;
}
