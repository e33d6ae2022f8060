/* kvtier_stream.c — libkvtier: the Tier.Summarize bidi stream (summaries in,
 * decisions out) and Inference.Generate (tokens streamed to a callback). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvtier_internal.h"

#define FREE_MSG(m) protobuf_c_message_free_unpacked((ProtobufCMessage *)(m), NULL)

/* ---------------------------------------------------------------- summarize */

struct kvtier_summarize_stream {
    kvtier_client *c;
    rpc_stream *s;
    uint64_t seq;
    int ended;
    rpc_status st;
};

kvtier_summarize_stream *kvtier_summarize_open(kvtier_client *c, uint64_t seq, kvtier_error *err) {
    if (!c) {
        kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: NULL argument");
        return NULL;
    }
    kvtier_summarize_stream *z = calloc(1, sizeof *z);
    if (!z) {
        kvc_errf(err, KVTIER_RESOURCE_EXHAUSTED, "libkvtier: out of memory");
        return NULL;
    }
    char seqbuf[24];
    rpc_opts o = kvc_opts(c, seq, seqbuf, 1);
    z->s = rpc_stream_open(c->ch, KVC_TIER "Summarize", &o, &z->st);
    if (!z->s) {
        kvc_err_from(err, &z->st);
        free(z);
        return NULL;
    }
    /* long-lived: no whole-call deadline fits, each message gets the unary one */
    rpc_stream_set_op_timeout(z->s, c->timeout_ms > 0 ? c->timeout_ms : 0);
    z->c = c;
    z->seq = seq;
    kvc_ok(err);
    return z;
}

/* Ends the stream after a failed write/read: fetches the status. */
static kvtier_code sz_fail(kvtier_summarize_stream *z, kvtier_error *err, const char *what) {
    if (!z->ended) {
        rpc_stream_finish(z->s, &z->st);
        z->ended = 1;
        if (z->st.code == GRPC_STATUS_OK) {
            z->st.code = GRPC_STATUS_ABORTED;
            snprintf(z->st.message, sizeof z->st.message, "Summarize stream ended by the server %s",
                     what);
        }
    }
    return kvc_err_from(err, &z->st);
}

kvtier_code kvtier_summarize_send(kvtier_summarize_stream *z, const kvtier_summary *sum,
                                  kvtier_decisions *out, kvtier_error *err) {
    if (out)
        memset(out, 0, sizeof *out);
    if (!z || !sum || (!sum->layers && sum->n_layers))
        return kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: NULL argument");
    if (z->ended)
        return kvc_err_from(err, &z->st);
    size_t nl = sum->n_layers;
    Kvtier__V1__LayerSummary *lv = calloc(nl ? nl : 1, sizeof *lv);
    Kvtier__V1__LayerSummary **lp = calloc(nl ? nl : 1, sizeof *lp);
    size_t n_act = 0;
    for (size_t i = 0; i < nl; i++)
        n_act += sum->layers[i].n_active;
    Kvtier__V1__ActiveBlock *av = calloc(n_act ? n_act : 1, sizeof *av);
    Kvtier__V1__ActiveBlock **ap = calloc(n_act ? n_act : 1, sizeof *ap);
    kvtier_code code = KVTIER_OK;
    if (!lv || !lp || !av || !ap) {
        code = kvc_errf(err, KVTIER_RESOURCE_EXHAUSTED, "libkvtier: out of memory");
        goto out;
    }
    size_t k = 0;
    for (size_t i = 0; i < nl; i++) {
        const kvtier_layer_summary *ls = &sum->layers[i];
        Kvtier__V1__LayerSummary init = KVTIER__V1__LAYER_SUMMARY__INIT;
        lv[i] = init;
        lv[i].layer = ls->layer;
        lv[i].n_active = ls->n_active;
        lv[i].active = &ap[k];
        for (size_t j = 0; j < ls->n_active; j++, k++) {
            Kvtier__V1__ActiveBlock ainit = KVTIER__V1__ACTIVE_BLOCK__INIT;
            av[k] = ainit;
            av[k].block = ls->active[j];
            av[k].peak_mass = ls->peak_mass ? ls->peak_mass[j] : 0.0f;
            ap[k] = &av[k];
        }
        lv[i].n_recalled = ls->recalled ? ls->n_recalled : 0;
        lv[i].recalled = (uint32_t *)ls->recalled;
        lv[i].n_locally_demoted = ls->locally_demoted ? ls->n_locally_demoted : 0;
        lv[i].locally_demoted = (uint32_t *)ls->locally_demoted;
        lv[i].n_locally_dropped = ls->locally_dropped ? ls->n_locally_dropped : 0;
        lv[i].locally_dropped = (uint32_t *)ls->locally_dropped;
        lv[i].block_count = ls->block_count;
        lv[i].n_revived = ls->revived ? ls->n_revived : 0;
        lv[i].revived = (uint32_t *)ls->revived;
        lp[i] = &lv[i];
    }
    Kvtier__V1__SummaryRequest req = KVTIER__V1__SUMMARY_REQUEST__INIT;
    req.tenant = kvc_tenant(z->c);
    req.sequence_id = z->seq;
    req.step = sum->step;
    req.n_layers = nl;
    req.layers = lp;
    if (rpc_stream_write(z->s, &req.base) != 0) {
        code = sz_fail(z, err, "before the summary was sent");
        goto out;
    }
    Kvtier__V1__Decisions *d = NULL;
    int r = rpc_stream_read(z->s, &kvtier__v1__decisions__descriptor, (ProtobufCMessage **)&d);
    if (r <= 0) {
        code = sz_fail(z, err, "without answering the summary");
        goto out;
    }
    if (out) {
        out->step = d->step;
        if (d->n_decisions) {
            out->d = calloc(d->n_decisions, sizeof *out->d);
            if (!out->d) {
                FREE_MSG(d);
                code = kvc_errf(err, KVTIER_RESOURCE_EXHAUSTED, "libkvtier: out of memory");
                goto out;
            }
            out->n = d->n_decisions;
            for (size_t i = 0; i < d->n_decisions; i++) {
                out->d[i].layer = d->decisions[i]->layer;
                out->d[i].block = d->decisions[i]->block;
                out->d[i].kind = (kvtier_decision_kind)d->decisions[i]->decision;
                out->d[i].from = (kvtier_tier)d->decisions[i]->from_tier;
                out->d[i].to = (kvtier_tier)d->decisions[i]->to_tier;
            }
        }
    }
    FREE_MSG(d);
    code = kvc_ok(err);
out:
    free(lv);
    free(lp);
    free(av);
    free(ap);
    return code;
}

kvtier_code kvtier_summarize_finish(kvtier_summarize_stream *z, kvtier_error *err) {
    if (!z)
        return kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: NULL argument");
    if (!z->ended) {
        rpc_stream_finish(z->s, &z->st);
        z->ended = 1;
    }
    kvtier_code code = kvc_err_from(err, &z->st);
    rpc_stream_free(z->s);
    free(z);
    return code;
}

/* ---------------------------------------------------------------- generate */

static void gen_result(const Kvtier__V1__GenerateResponse *m, kvtier_generate_result *out) {
    out->sequence_id = m->sequence_id ? m->sequence_id : out->sequence_id;
    if (m->finish_reason && *m->finish_reason)
        kvc_copy(out->finish_reason, sizeof out->finish_reason, m->finish_reason);
    if (m->stop && *m->stop)
        kvc_copy(out->stop, sizeof out->stop, m->stop);
    if (m->usage) {
        out->prompt_tokens = m->usage->prompt_tokens;
        out->generated_tokens = m->usage->generated_tokens;
        out->prefill_tokens_per_s = m->usage->prefill_tokens_per_s;
        out->decode_tokens_per_s = m->usage->decode_tokens_per_s;
    }
    if (m->tier_stats) {
        const Kvtier__V1__TierRunStats *t = m->tier_stats;
        out->peak_hot_bytes = t->peak_hot_bytes;
        out->blocks_demoted_host = t->blocks_demoted_host;
        out->blocks_demoted_ssd = t->blocks_demoted_ssd;
        out->blocks_recalled = t->blocks_recalled;
        out->blocks_dropped = t->blocks_dropped;
        out->recall_latency_p50_ms = t->recall_latency_p50_ms;
        out->recall_latency_p99_ms = t->recall_latency_p99_ms;
        out->degraded = t->degraded ? 1 : 0;
        kvc_copy(out->degraded_reason, sizeof out->degraded_reason, t->degraded_reason);
    }
}

kvtier_code kvtier_generate(kvtier_client *c, const kvtier_generate_params *p, kvtier_token_cb cb,
                            void *user, kvtier_generate_result *out, kvtier_error *err) {
    kvtier_generate_result res;
    memset(&res, 0, sizeof res);
    if (out)
        memset(out, 0, sizeof *out);
    if (!c || !p)
        return kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: NULL argument");
    if ((!p->prompt || !*p->prompt) && p->n_messages == 0)
        return kvc_errf(err, KVTIER_INVALID_ARGUMENT,
                        "libkvtier: generate needs a prompt or messages");
    size_t nm = p->messages ? p->n_messages : 0;
    Kvtier__V1__ChatMessage *mv = calloc(nm ? nm : 1, sizeof *mv);
    Kvtier__V1__ChatMessage **mp = calloc(nm ? nm : 1, sizeof *mp);
    if (!mv || !mp) {
        free(mv);
        free(mp);
        return kvc_errf(err, KVTIER_RESOURCE_EXHAUSTED, "libkvtier: out of memory");
    }
    for (size_t i = 0; i < nm; i++) {
        Kvtier__V1__ChatMessage init = KVTIER__V1__CHAT_MESSAGE__INIT;
        mv[i] = init;
        mv[i].role = (char *)(p->messages[i].role ? p->messages[i].role : "user");
        mv[i].content = (char *)(p->messages[i].content ? p->messages[i].content : "");
        mp[i] = &mv[i];
    }
    Kvtier__V1__SamplingParams sp = KVTIER__V1__SAMPLING_PARAMS__INIT;
    /* a non-zero value is always sent; a zero only with its has_ flag (else
     * the model's generation_config.json decides) */
    sp.max_new_tokens = p->max_new_tokens;
    if (p->has_temperature || p->temperature != 0) {
        sp.temperature_set_case = KVTIER__V1__SAMPLING_PARAMS__TEMPERATURE_SET_TEMPERATURE;
        sp.temperature = p->temperature;
    }
    if (p->has_top_k || p->top_k != 0) {
        sp.top_k_set_case = KVTIER__V1__SAMPLING_PARAMS__TOP_K_SET_TOP_K;
        sp.top_k = p->top_k;
    }
    if (p->has_top_p || p->top_p != 0) {
        sp.top_p_set_case = KVTIER__V1__SAMPLING_PARAMS__TOP_P_SET_TOP_P;
        sp.top_p = p->top_p;
    }
    sp.seed = p->seed;
    sp.has_seed = p->has_seed ? 1 : 0;
    sp.n_stop = p->stop ? p->n_stop : 0;
    sp.stop = (char **)p->stop;
    Kvtier__V1__TieringOverrides to = KVTIER__V1__TIERING_OVERRIDES__INIT;
    to.policy = (char *)(p->policy ? p->policy : "");
    to.hot_budget_fraction = p->hot_budget_fraction;
    to.hot_budget_blocks = p->hot_budget_blocks;
    to.mode = (Kvtier__V1__RecallMode)p->recall_mode;
    to.tau = p->tau;
    Kvtier__V1__GenerateRequest req = KVTIER__V1__GENERATE_REQUEST__INIT;
    req.prompt = (char *)(p->prompt ? p->prompt : "");
    req.n_messages = nm;
    req.messages = mp;
    req.sampling = &sp;
    req.tiering = &to;
    req.sequence_id = p->sequence_id;
    req.enable_thinking = p->enable_thinking ? 1 : 0;

    char seqbuf[24];
    rpc_opts o = kvc_opts(c, p->sequence_id, seqbuf, 1);
    rpc_status st;
    memset(&st, 0, sizeof st);
    kvtier_code code = KVTIER_OK;
    rpc_stream *s = rpc_stream_open(c->ch, KVC_INFERENCE "Generate", &o, &st);
    if (!s) {
        code = kvc_err_from(err, &st);
        goto out;
    }
    if (rpc_stream_write(s, &req.base) == 0)
        rpc_stream_close_send(s);
    for (;;) {
        Kvtier__V1__GenerateResponse *m = NULL;
        if (rpc_stream_read(s, &kvtier__v1__generate_response__descriptor,
                            (ProtobufCMessage **)&m) <= 0)
            break;
        gen_result(m, &res);
        int stop = 0;
        if (cb && ((m->text_delta && *m->text_delta) || m->n_token_ids)) {
            kvtier_token_event ev = {m->text_delta ? m->text_delta : "", m->token_ids,
                                     m->n_token_ids, m->sequence_id};
            stop = cb(&ev, user);
        }
        FREE_MSG(m);
        if (stop) {
            rpc_stream_cancel(s);
            code =
                kvc_errf(err, KVTIER_CANCELLED, "libkvtier: generation cancelled by the callback");
            break;
        }
    }
    if (code == KVTIER_OK) {
        rpc_stream_finish(s, &st);
        code = kvc_err_from(err, &st);
    }
    rpc_stream_free(s);
out:
    if (out)
        *out = res;
    free(mv);
    free(mp);
    return code;
}
