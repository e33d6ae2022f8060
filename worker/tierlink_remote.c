/* tierlink_remote.c - tierlink over gRPC to a kvtierd (Tier service).
 *
 * Every call carries a deadline, the tenant and the sequence id as metadata
 * (the load balancer hashes x-kvtier-sequence to pick the shard). Transport
 * failures map to TIER_EIO so that the caller can run degraded.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvtier.pb-c.h"
#include "rpc.h"
#include "tierlink_internal.h"

typedef struct {
    rpc_channel *ch;
    char auth[256];
    int timeout_ms;
} remote_t;

static tier_status status_from_grpc(const rpc_status *st, char *err, size_t errlen) {
    tier_status ts;
    switch (st->code) {
    case GRPC_STATUS_OK: return TIER_OK;
    case GRPC_STATUS_INVALID_ARGUMENT:
    case GRPC_STATUS_OUT_OF_RANGE: ts = TIER_EINVAL; break;
    case GRPC_STATUS_NOT_FOUND: ts = TIER_ENOTFOUND; break;
    case GRPC_STATUS_DATA_LOSS: ts = TIER_EDATALOSS; break;
    case GRPC_STATUS_RESOURCE_EXHAUSTED: ts = TIER_EFULL; break;
    case GRPC_STATUS_ALREADY_EXISTS: ts = TIER_EEXIST; break;
    default: ts = TIER_EIO; break; /* UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, ... */
    }
    snprintf(err, errlen, "kvtierd: %s: %s", rpc_status_name(st->code), st->message);
    return ts;
}

static void opts_for(const tierlink_t *l, uint64_t seq, char *seqbuf, size_t seqlen,
                     rpc_opts *o) {
    const remote_t *r = l->remote;
    snprintf(seqbuf, seqlen, "%" PRIu64, seq);
    memset(o, 0, sizeof *o);
    o->tenant = l->tenant;
    o->sequence = seqbuf;
    o->auth = r->auth[0] ? r->auth : NULL;
    o->timeout_ms = r->timeout_ms;
}

/* One unary Tier call on seq's behalf; the response is discarded. */
static tier_status rem_unary(tierlink_t *l, uint64_t seq, const char *method,
                             const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                             char *err, size_t errlen) {
    remote_t *r = l->remote;
    char sb[32];
    rpc_opts o;
    rpc_status st;
    ProtobufCMessage *resp = NULL;
    opts_for(l, seq, sb, sizeof sb, &o);
    rpc_unary(r->ch, method, &o, req, resp_desc, &resp, &st);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return status_from_grpc(&st, err, errlen);
}

static tier_status rem_open(tierlink_t *l, uint64_t seq, const tier_seq_info *info, char *err,
                            size_t errlen) {
    Kvtier__V1__OpenSequenceRequest req = KVTIER__V1__OPEN_SEQUENCE_REQUEST__INIT;
    Kvtier__V1__PolicyParams pp = KVTIER__V1__POLICY_PARAMS__INIT;
    req.tenant = l->tenant;
    req.sequence_id = seq;
    req.layers = info->n_layers;
    req.kv_heads = info->n_kv_heads;
    req.head_dim = info->head_dim;
    req.block_tokens = info->block_tokens;
    req.block_bytes = info->block_bytes;
    if (info->params) {
        const policy_params *p = info->params;
        pp.top_p = (float)p->top_p;
        pp.hot_inactive_steps = p->hot_inactive_steps;
        pp.recent_blocks = p->recent_blocks;
        pp.sink_blocks = p->sink_blocks;
        pp.retain_on_close = p->retain_on_close;
        pp.n_layer_hot_budget_blocks = p->n_layer_budgets;
        pp.layer_hot_budget_blocks = (uint32_t *)p->layer_hot_budget;
        req.params = &pp;
    }
    return rem_unary(l, seq, "/kvtier.v1.Tier/OpenSequence", &req.base,
                     &kvtier__v1__open_sequence_response__descriptor, err, errlen);
}

static tier_status rem_put(tierlink_t *l, uint64_t seq, const tierlink_block *b, size_t n,
                           size_t *acked, char *err, size_t errlen) {
    remote_t *r = l->remote;
    char sb[32];
    rpc_opts o;
    rpc_status st;
    opts_for(l, seq, sb, sizeof sb, &o);
    rpc_stream *s = rpc_stream_open(r->ch, "/kvtier.v1.Tier/PutBlocks", &o, &st);
    if (!s)
        return status_from_grpc(&st, err, errlen);
    for (size_t i = 0; i < n; i++) {
        Kvtier__V1__BlockKey key = KVTIER__V1__BLOCK_KEY__INIT;
        Kvtier__V1__Block m = KVTIER__V1__BLOCK__INIT;
        key.tenant = l->tenant;
        key.sequence_id = seq;
        key.layer = b[i].layer;
        key.block = b[i].block;
        m.key = &key;
        m.payload.data = (uint8_t *)b[i].data;
        m.payload.len = b[i].len;
        m.crc32c = tier_crc32c(0, b[i].data, b[i].len);
        m.token_count = b[i].ntokens;
        if (rpc_stream_write(s, &m.base) != 0)
            break; /* the status below says why */
    }
    ProtobufCMessage *resp = NULL;
    rpc_stream_close_and_recv(s, &kvtier__v1__put_response__descriptor, &resp, &st);
    size_t got = 0;
    if (resp) {
        got = ((Kvtier__V1__PutResponse *)resp)->acked;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    rpc_stream_free(s);
    if (acked)
        *acked = st.code == GRPC_STATUS_OK ? (got < n ? got : n) : 0;
    if (st.code == GRPC_STATUS_OK && got < n) {
        snprintf(err, errlen, "kvtierd acknowledged %zu of %zu blocks", got, n);
        return TIER_EIO;
    }
    return status_from_grpc(&st, err, errlen);
}

static tier_status rem_fetch(tierlink_t *l, uint64_t seq, uint32_t layer, uint32_t block,
                             void **data, size_t *len, char *err, size_t errlen) {
    remote_t *r = l->remote;
    Kvtier__V1__FetchRequest req = KVTIER__V1__FETCH_REQUEST__INIT;
    Kvtier__V1__BlockRef ref = KVTIER__V1__BLOCK_REF__INIT;
    Kvtier__V1__BlockRef *refs[1] = {&ref};
    ref.layer = layer;
    ref.block = block;
    req.tenant = l->tenant;
    req.sequence_id = seq;
    req.n_blocks = 1;
    req.blocks = refs;
    char sb[32];
    rpc_opts o;
    rpc_status st;
    opts_for(l, seq, sb, sizeof sb, &o);
    rpc_stream *s = rpc_stream_open(r->ch, "/kvtier.v1.Tier/FetchBlocks", &o, &st);
    if (!s)
        return status_from_grpc(&st, err, errlen);
    tier_status ts = TIER_OK;
    if (rpc_stream_write(s, &req.base) != 0 || rpc_stream_close_send(s) != 0) {
        /* fall through: finish reports the reason */
    }
    ProtobufCMessage *m = NULL;
    int rr = rpc_stream_read(s, &kvtier__v1__block__descriptor, &m);
    if (rr == 1) {
        Kvtier__V1__Block *blk = (Kvtier__V1__Block *)m;
        if (blk->key && (blk->key->layer != layer || blk->key->block != block)) {
            snprintf(err, errlen, "kvtierd answered layer %u block %u for layer %u block %u",
                     blk->key->layer, blk->key->block, layer, block);
            ts = TIER_EDATALOSS;
        } else {
            ts = tierlink_check_crc(blk->payload.data, blk->payload.len, blk->crc32c, layer,
                                    block, err, errlen);
        }
        if (ts == TIER_OK) {
            *data = malloc(blk->payload.len ? blk->payload.len : 1);
            if (!*data) {
                snprintf(err, errlen, "out of memory fetching layer %u block %u", layer, block);
                ts = TIER_EIO;
            } else {
                memcpy(*data, blk->payload.data, blk->payload.len);
                *len = blk->payload.len;
            }
        }
        protobuf_c_message_free_unpacked(m, NULL);
    }
    rpc_stream_finish(s, &st);
    rpc_stream_free(s);
    if (ts != TIER_OK) {
        free(*data);
        *data = NULL;
        return ts;
    }
    if (st.code != GRPC_STATUS_OK) {
        free(*data);
        *data = NULL;
        return status_from_grpc(&st, err, errlen);
    }
    if (rr != 1) {
        snprintf(err, errlen, "kvtierd sent no payload for layer %u block %u", layer, block);
        return TIER_ENOTFOUND;
    }
    return TIER_OK;
}

static int decision_from_proto(int k) {
    switch (k) {
    case KVTIER__V1__DECISION_KIND__DECISION_DEMOTE_HOST: return POLICY_DEMOTE_HOST;
    case KVTIER__V1__DECISION_KIND__DECISION_DEMOTE_SSD: return POLICY_DEMOTE_SSD;
    case KVTIER__V1__DECISION_KIND__DECISION_DROP: return POLICY_DROP;
    case KVTIER__V1__DECISION_KIND__DECISION_PREFETCH: return POLICY_PREFETCH;
    default: return POLICY_KEEP_HOT;
    }
}

static tier_status rem_summarize(tierlink_t *l, uint64_t seq, const tier_summary *s,
                                 tier_decision **out, size_t *n, char *err, size_t errlen) {
    remote_t *r = l->remote;
    Kvtier__V1__SummaryRequest req = KVTIER__V1__SUMMARY_REQUEST__INIT;
    size_t nl = s->n_layers, total_active = 0;
    for (size_t i = 0; i < nl; i++)
        total_active += s->layers[i].n_active;
    Kvtier__V1__LayerSummary *ls = calloc(nl ? nl : 1, sizeof *ls);
    Kvtier__V1__LayerSummary **lp = calloc(nl ? nl : 1, sizeof *lp);
    Kvtier__V1__ActiveBlock *ab = calloc(total_active ? total_active : 1, sizeof *ab);
    Kvtier__V1__ActiveBlock **abp = calloc(total_active ? total_active : 1, sizeof *abp);
    if (!ls || !lp || !ab || !abp) {
        free(ls), free(lp), free(ab), free(abp);
        snprintf(err, errlen, "out of memory building a summary");
        return TIER_EIO;
    }
    size_t k = 0;
    for (size_t i = 0; i < nl; i++) {
        const tier_layer_summary *src = &s->layers[i];
        kvtier__v1__layer_summary__init(&ls[i]);
        ls[i].layer = src->layer;
        ls[i].block_count = s->n_blocks;
        ls[i].n_active = src->n_active;
        ls[i].active = &abp[k];
        for (uint32_t j = 0; j < src->n_active; j++, k++) {
            kvtier__v1__active_block__init(&ab[k]);
            ab[k].block = src->active[j];
            ab[k].peak_mass = src->peak_mass ? src->peak_mass[j] : 0.0f;
            abp[k] = &ab[k];
        }
        ls[i].n_recalled = src->n_recalled;
        ls[i].recalled = (uint32_t *)src->recalled;
        ls[i].n_locally_dropped = src->n_dropped;
        ls[i].locally_dropped = (uint32_t *)src->dropped;
        ls[i].n_revived = src->n_revived;
        ls[i].revived = (uint32_t *)src->revived;
        lp[i] = &ls[i];
    }
    req.tenant = l->tenant;
    req.sequence_id = seq;
    req.step = s->step;
    req.n_layers = nl;
    req.layers = lp;

    char sb[32];
    rpc_opts o;
    rpc_status st;
    tier_status ts = TIER_OK;
    opts_for(l, seq, sb, sizeof sb, &o);
    rpc_stream *stream = rpc_stream_open(r->ch, "/kvtier.v1.Tier/Summarize", &o, &st);
    if (!stream) {
        ts = status_from_grpc(&st, err, errlen);
        goto out;
    }
    ProtobufCMessage *m = NULL;
    if (rpc_stream_write(stream, &req.base) == 0 &&
        rpc_stream_read(stream, &kvtier__v1__decisions__descriptor, &m) == 1) {
        Kvtier__V1__Decisions *d = (Kvtier__V1__Decisions *)m;
        if (d->n_decisions) {
            *out = calloc(d->n_decisions, sizeof **out);
            if (!*out) {
                snprintf(err, errlen, "out of memory reading decisions");
                ts = TIER_EIO;
            } else {
                for (size_t i = 0; i < d->n_decisions; i++) {
                    (*out)[i].layer = d->decisions[i]->layer;
                    (*out)[i].block = d->decisions[i]->block;
                    (*out)[i].kind = (uint8_t)decision_from_proto(d->decisions[i]->decision);
                }
                *n = d->n_decisions;
            }
        }
        protobuf_c_message_free_unpacked(m, NULL);
    }
    rpc_stream_close_send(stream);
    rpc_stream_finish(stream, &st);
    rpc_stream_free(stream);
    if (ts == TIER_OK && st.code != GRPC_STATUS_OK) {
        free(*out);
        *out = NULL;
        *n = 0;
        ts = status_from_grpc(&st, err, errlen);
    }
out:
    free(ls), free(lp), free(ab), free(abp);
    return ts;
}

static tier_status rem_close(tierlink_t *l, uint64_t seq, int retain, char *err, size_t errlen) {
    Kvtier__V1__CloseSequenceRequest req = KVTIER__V1__CLOSE_SEQUENCE_REQUEST__INIT;
    req.tenant = l->tenant;
    req.sequence_id = seq;
    req.retain = retain > 0;
    return rem_unary(l, seq, "/kvtier.v1.Tier/CloseSequence", &req.base,
                     &kvtier__v1__close_sequence_response__descriptor, err, errlen);
}

static void rem_free(tierlink_t *l) {
    remote_t *r = l->remote;
    if (r) {
        rpc_channel_free(r->ch);
        free(r);
    }
}

static const tierlink_ops rem_ops = {rem_open, rem_put, rem_fetch, rem_summarize, rem_close,
                                     rem_free};

tierlink_t *tierlink_remote_new(const char *addr, const char *tenant, const char *auth,
                                int timeout_ms) {
    tierlink_t *l = calloc(1, sizeof *l);
    remote_t *r = calloc(1, sizeof *r);
    if (!l || !r) {
        free(l), free(r);
        return NULL;
    }
    r->ch = rpc_channel_new(addr, 0);
    if (!r->ch) {
        free(l), free(r);
        return NULL;
    }
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
    if (auth && *auth)
        snprintf(r->auth, sizeof r->auth, "Bearer %s", auth);
    l->ops = &rem_ops;
    l->remote = r;
    snprintf(l->tenant, sizeof l->tenant, "%s", tenant && *tenant ? tenant : "default");
    snprintf(l->name, sizeof l->name, "%s", addr);
    return l;
}
