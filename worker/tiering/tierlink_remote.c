/* tierlink_remote.c - tier sessions over libkvtier (client/kvtier.h) to a
 * kvtierd: the worker has no gRPC client of its own.
 *
 * Per session: one Summarize stream, opened with the session and reopened
 * once after a failure; one FetchBlocks call per fetch batch; one PutBlocks
 * stream per put batch (run on the session thread, tierlink.c). Every call
 * carries the tenant and the sequence id as metadata (the load balancer
 * hashes x-kvtier-sequence to pick the shard). Conversions between
 * libkvtier's enums and the tier library's happen here, once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvtier.h"
#include "tier_breaker.h"
#include "tierlink_internal.h"

typedef struct {
    kvtier_summarize_stream *z; /* NULL until first use or after a failure */
} rsess_t;

/* l->remote: the client, and the breaker shared by every session of the link
 * (one kvtierd or load balancer) */
typedef struct {
    kvtier_client *c;
    tier_breaker br;
} rlink_t;

static kvtier_client *client_of(const tiersess_t *s) {
    return ((rlink_t *)s->l->remote)->c;
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* 1 (err set) when the service timed out a moment ago: the call is skipped
 * instead of waiting a deadline again (tier_breaker.h). */
static int skip_call(tiersess_t *s, const char *what, char *err, size_t errlen) {
    int64_t left = tier_breaker_check(&((rlink_t *)s->l->remote)->br, mono_ms());
    if (!left)
        return 0;
    snprintf(err, errlen,
             "kvtierd %s skipped: the service timed out or was unavailable; next try in %lld ms",
             what, (long long)left);
    return 1;
}

/* Only a timeout trips the breaker: an UNAVAILABLE answer costs no wait, and
 * behind the load balancer it may concern one shard's sequences only. */
static void note_call(tiersess_t *s, kvtier_code c) {
    tier_breaker_record(&((rlink_t *)s->l->remote)->br, mono_ms(), c == KVTIER_DEADLINE_EXCEEDED);
}

static tier_status from_kvtier(kvtier_code code, const kvtier_error *e, const char *what, char *err,
                               size_t errlen) {
    if (code == KVTIER_OK)
        return TIER_OK;
    snprintf(err, errlen, "kvtierd %s: %s: %s", what, kvtier_code_name(code), e->message);
    return tierlink_status_from_code((int)code);
}

static int decision_from_client(int k) {
    switch (k) {
    case KVTIER_DECISION_DEMOTE_HOST:
        return POLICY_DEMOTE_HOST;
    case KVTIER_DECISION_DEMOTE_SSD:
        return POLICY_DEMOTE_SSD;
    case KVTIER_DECISION_DROP:
        return POLICY_DROP;
    case KVTIER_DECISION_PREFETCH:
        return POLICY_PREFETCH;
    default:
        return POLICY_KEEP_HOT;
    }
}

static int tier_from_client(int t) {
    switch (t) {
    case KVTIER_TIER_HOT:
        return TIER_HOT;
    case KVTIER_TIER_HOST:
        return TIER_HOST;
    case KVTIER_TIER_SSD:
        return TIER_SSD;
    case KVTIER_TIER_DROPPED:
        return TIER_DROPPED;
    default:
        return TIER_NONE;
    }
}

/* ---------------------------------------------------------------- open */

static tier_status rem_open(tiersess_t *s, const tier_seq_info *info, char *err, size_t errlen) {
    rsess_t *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory opening a tier session");
        return TIER_EIO;
    }
    s->tx = r;
    kvtier_seq_shape sh;
    memset(&sh, 0, sizeof sh);
    sh.sequence_id = s->seq;
    sh.layers = info->n_layers;
    sh.kv_heads = info->n_kv_heads;
    sh.head_dim = info->head_dim;
    sh.block_tokens = info->block_tokens;
    sh.block_bytes = info->block_bytes;
    if (info->params) {
        const policy_params *p = info->params;
        sh.top_p = (float)p->top_p;
        sh.hot_inactive_steps = p->hot_inactive_steps;
        sh.recent_blocks = p->recent_blocks;
        sh.sink_blocks = p->sink_blocks;
        sh.layer_hot_budget = p->layer_hot_budget;
        sh.n_layer_hot_budget = p->n_layer_budgets;
        sh.retain_on_close = p->retain_on_close;
    }
    kvtier_error e;
    if (skip_call(s, "OpenSequence", err, errlen))
        return tierlink_status_from_code(KVTIER_UNAVAILABLE);
    tiersess_count(s, &s->cnt.other_calls, 1);
    kvtier_code c = kvtier_open_sequence(client_of(s), &sh, NULL, &e);
    note_call(s, c);
    return from_kvtier(c, &e, "OpenSequence", err, errlen);
}

/* ---------------------------------------------------------------- fetch */

typedef struct {
    tiersess_t *s;
    tiersess_fetch_cb cb;
    void *ud;
    uint64_t bytes;
    size_t got;
    int oom;
} fetch_ctx;

static int on_block(const kvtier_fetched *f, void *user) {
    fetch_ctx *fc = user;
    void *p = malloc(f->len ? f->len : 1);
    if (!p) {
        fc->oom = 1;
        return 1; /* cancel: the rest counts as not fetched */
    }
    memcpy(p, f->payload, f->len);
    fc->bytes += f->len;
    fc->got++;
    fc->cb(fc->ud, f->layer, f->block, TIER_OK, p, f->len);
    return 0;
}

/* The server answers in request order and stops at the first block it
 * cannot serve: that block is reported, the rest asked again. */
static tier_status rem_fetch(tiersess_t *s, const tiersess_ref *want, size_t n,
                             tiersess_fetch_cb cb, void *ud, char *err, size_t errlen) {
    kvtier_block_ref stack[128], *refs = n <= 128 ? stack : malloc(n * sizeof *refs);
    if (!refs) {
        snprintf(err, errlen, "out of memory fetching %zu blocks", n);
        return TIER_EIO;
    }
    for (size_t i = 0; i < n; i++)
        refs[i] = (kvtier_block_ref){want[i].layer, want[i].block};
    tier_status ts = TIER_OK;
    size_t at = 0;
    while (at < n && ts == TIER_OK) {
        fetch_ctx fc = {s, cb, ud, 0, 0, 0};
        kvtier_error e;
        size_t got = 0;
        if (skip_call(s, "FetchBlocks", err, errlen)) {
            ts = TIER_EIO;
            break;
        }
        kvtier_code c =
            kvtier_fetch_blocks(client_of(s), s->seq, refs + at, n - at, on_block, &fc, &got, &e);
        note_call(s, c);
        pthread_mutex_lock(&s->mu);
        s->cnt.fetch_calls++;
        s->cnt.fetch_blocks += fc.got;
        s->cnt.fetch_bytes += fc.bytes;
        pthread_mutex_unlock(&s->mu);
        at += fc.got;
        if (fc.oom) {
            snprintf(err, errlen, "out of memory receiving layer %u blocks", refs[at].layer);
            ts = TIER_EIO;
        } else if (c == KVTIER_OK) {
            if (at < n) {
                snprintf(err, errlen, "kvtierd FetchBlocks ended after %zu of %zu blocks", at, n);
                ts = TIER_EIO;
            }
        } else if (c == KVTIER_NOT_FOUND || c == KVTIER_DATA_LOSS) {
            /* the block at `at` is gone or corrupt: say so, ask for the rest */
            cb(ud, refs[at].layer, refs[at].block,
               c == KVTIER_NOT_FOUND ? TIER_ENOTFOUND : TIER_EDATALOSS, NULL, 0);
            at++;
        } else {
            ts = from_kvtier(c, &e, "FetchBlocks", err, errlen);
            if (ts != TIER_EINVAL)
                ts = TIER_EIO;
        }
    }
    if (refs != stack)
        free(refs);
    return ts;
}

/* ---------------------------------------------------------------- put */

static tier_status rem_put(tiersess_t *s, const tiersess_block *b, size_t n, char *err,
                           size_t errlen) {
    kvtier_block stack[64], *kb = n <= 64 ? stack : malloc(n * sizeof *kb);
    if (!kb) {
        snprintf(err, errlen, "out of memory putting %zu blocks", n);
        return TIER_EIO;
    }
    memset(kb, 0, n * sizeof *kb);
    for (size_t i = 0; i < n; i++) {
        kb[i].layer = b[i].layer;
        kb[i].block = b[i].block;
        kb[i].payload = b[i].data;
        kb[i].len = b[i].len;
        kb[i].token_count = b[i].ntokens;
        kb[i].target = KVTIER_TIER_ABSENT; /* the service places it */
    }
    kvtier_put_result res;
    memset(&res, 0, sizeof res);
    kvtier_error e;
    if (skip_call(s, "PutBlocks", err, errlen)) {
        if (kb != stack)
            free(kb);
        return tierlink_status_from_code(KVTIER_UNAVAILABLE);
    }
    kvtier_code c = kvtier_put_blocks(client_of(s), s->seq, kb, n, &res, &e);
    note_call(s, c);
    pthread_mutex_lock(&s->mu);
    s->cnt.put_calls++;
    s->cnt.put_blocks += n;
    pthread_mutex_unlock(&s->mu);
    if (kb != stack)
        free(kb);
    uint32_t acked = res.acked;
    kvtier_put_result_free(&res);
    if (c == KVTIER_OK && acked < n) { /* the batch is all or nothing */
        snprintf(err, errlen, "kvtierd acknowledged %u of %zu blocks", acked, n);
        return TIER_EIO;
    }
    return from_kvtier(c, &e, "PutBlocks", err, errlen);
}

/* ---------------------------------------------------------------- summarize */

static tier_status rem_summarize(tiersess_t *s, const tier_summary *sum, tier_decision **out,
                                 size_t *n, char *err, size_t errlen) {
    rsess_t *r = s->tx;
    kvtier_error e;
    if (skip_call(s, "Summarize", err, errlen))
        return tierlink_status_from_code(KVTIER_UNAVAILABLE);
    int fresh = !r->z;
    if (!r->z) {
        r->z = kvtier_summarize_open(client_of(s), s->seq, &e);
        if (!r->z) {
            note_call(s, e.code ? e.code : KVTIER_UNAVAILABLE);
            return from_kvtier(e.code ? e.code : KVTIER_UNAVAILABLE, &e, "Summarize", err, errlen);
        }
        tiersess_count(s, &s->cnt.summarize_streams, 1);
    }
    size_t nl = sum->n_layers;
    kvtier_layer_summary *ls = calloc(nl ? nl : 1, sizeof *ls);
    if (!ls) {
        snprintf(err, errlen, "out of memory building a summary");
        return TIER_EIO;
    }
    for (size_t i = 0; i < nl; i++) {
        const tier_layer_summary *src = &sum->layers[i];
        ls[i].layer = src->layer;
        ls[i].active = src->active;
        ls[i].peak_mass = src->peak_mass;
        ls[i].n_active = src->n_active;
        ls[i].recalled = src->recalled;
        ls[i].n_recalled = src->n_recalled;
        ls[i].locally_dropped = src->dropped;
        ls[i].n_locally_dropped = src->n_dropped;
        ls[i].revived = src->revived;
        ls[i].n_revived = src->n_revived;
        ls[i].block_count = sum->n_blocks;
    }
    kvtier_summary ks = {sum->step, ls, nl};
    kvtier_decisions d;
    tiersess_count(s, &s->cnt.summary_msgs, 1);
    kvtier_code c = kvtier_summarize_send(r->z, &ks, &d, &e);
    if (c == KVTIER_CANCELLED && !fresh) {
        /* kvtierd ends a stream idle for --stream-idle-timeout (CANCELLED):
         * a session quiet that long sends this summary on a new stream */
        kvtier_error fe;
        kvtier_summarize_finish(r->z, &fe);
        r->z = kvtier_summarize_open(client_of(s), s->seq, &e);
        if (r->z) {
            tiersess_count(s, &s->cnt.summarize_streams, 1);
            c = kvtier_summarize_send(r->z, &ks, &d, &e);
        } else {
            c = e.code ? e.code : KVTIER_UNAVAILABLE;
        }
    }
    note_call(s, c);
    free(ls);
    if (c != KVTIER_OK) {
        kvtier_error fe;
        if (r->z)
            kvtier_summarize_finish(r->z, &fe); /* dead: the next summary opens a new one */
        r->z = NULL;
        return from_kvtier(c, &e, "Summarize", err, errlen);
    }
    if (d.n) {
        *out = calloc(d.n, sizeof **out);
        if (!*out) {
            kvtier_free(d.d);
            snprintf(err, errlen, "out of memory reading %zu decisions", d.n);
            return TIER_EIO;
        }
        for (size_t i = 0; i < d.n; i++) {
            (*out)[i].layer = d.d[i].layer;
            (*out)[i].block = d.d[i].block;
            (*out)[i].kind = (uint8_t)decision_from_client(d.d[i].kind);
            (*out)[i].from = (uint8_t)tier_from_client(d.d[i].from);
            (*out)[i].to = (uint8_t)tier_from_client(d.d[i].to);
        }
        *n = d.n;
    }
    kvtier_free(d.d);
    return TIER_OK;
}

/* ---------------------------------------------------------------- close */

static tier_status rem_close(tiersess_t *s, int retain, char *err, size_t errlen) {
    kvtier_error e;
    if (skip_call(s, "CloseSequence", err, errlen))
        return tierlink_status_from_code(KVTIER_UNAVAILABLE);
    tiersess_count(s, &s->cnt.other_calls, 1);
    kvtier_code c = kvtier_close_sequence(client_of(s), s->seq, retain > 0, NULL, NULL, &e);
    note_call(s, c);
    return from_kvtier(c, &e, "CloseSequence", err, errlen);
}

static void rem_sess_free(tiersess_t *s) {
    rsess_t *r = s->tx;
    if (!r)
        return;
    if (r->z) {
        kvtier_error e;
        kvtier_summarize_finish(r->z, &e);
    }
    free(r);
    s->tx = NULL;
}

static void rem_free(tierlink_t *l) {
    rlink_t *rl = l->remote;
    if (!rl)
        return;
    kvtier_client_free(rl->c);
    tier_breaker_destroy(&rl->br);
    free(rl);
}

static void rem_breaker(tierlink_t *l, uint64_t *skipped, uint64_t *timeouts) {
    rlink_t *rl = l->remote;
    pthread_mutex_lock(&rl->br.mu);
    *skipped = rl->br.skipped;
    *timeouts = rl->br.trips;
    pthread_mutex_unlock(&rl->br.mu);
}

static const tierlink_ops rem_ops = {
    .open = rem_open,
    .fetch = rem_fetch,
    .put = rem_put,
    .summarize = rem_summarize,
    .close = rem_close,
    .sess_free = rem_sess_free,
    .free = rem_free,
    .breaker = rem_breaker,
    .async = 1,
};

tierlink_t *tierlink_remote_new(const char *addr, const char *tenant, const char *auth,
                                int timeout_ms) {
    char err[300];
    return tierlink_remote_new_tls(addr, tenant, auth, timeout_ms, NULL, NULL, NULL, err,
                                   sizeof err);
}

tierlink_t *tierlink_remote_new_tls(const char *addr, const char *tenant, const char *auth,
                                    int timeout_ms, const char *tls_ca, const char *tls_cert,
                                    const char *tls_key, char *err, size_t errlen) {
    tierlink_t *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(l->tenant, sizeof l->tenant, "%s", tenant && *tenant ? tenant : "default");
    kvtier_connect_opts o;
    memset(&o, 0, sizeof o);
    o.address = addr;
    o.token = auth && *auth ? auth : NULL;
    o.tenant = l->tenant;
    o.timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
    o.stream_timeout_ms = 0; /* streams: each message waits at most timeout_ms */
    o.tls_ca = tls_ca;
    o.tls_cert = tls_cert;
    o.tls_key = tls_key;
    kvtier_error e;
    kvtier_client *c = kvtier_connect(&o, &e);
    rlink_t *rl = c ? calloc(1, sizeof *rl) : NULL;
    if (!rl) {
        snprintf(err, errlen, "%s", c ? "out of memory" : e.message);
        kvtier_client_free(c);
        free(l);
        return NULL;
    }
    rl->c = c;
    /* skip a service that timed out for one deadline at first, doubling to 5 s */
    int base = (int)o.timeout_ms;
    tier_breaker_init(&rl->br, base < 250 ? 250 : base > 5000 ? 5000 : base, 5000);
    l->ops = &rem_ops;
    l->remote = rl;
    snprintf(l->name, sizeof l->name, "%s", addr);
    return l;
}
