/* serve_grpc.c - kvtier.v1.Inference/Generate over the RPC layer: the proto
 * request to a serve_req, deltas to GenerateResponse messages, the outcome to
 * a gRPC status. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvtier.pb-c.h"
#include "rpc.h"
#include "serve_gen.h"
#include "serve_grpc.h"

typedef struct {
    rpc_call *call;
    uint64_t seq_id;
} grpc_sink;

static int g_delta(void *ud, const char *text, size_t len, const int32_t *ids,
                   const serve_logprob *lps, size_t n_ids) {
    (void)lps;
    grpc_sink *g = ud;
    Kvtier__V1__GenerateResponse r = KVTIER__V1__GENERATE_RESPONSE__INIT;
    char *t = malloc(len + 1);
    uint32_t *u = malloc((n_ids ? n_ids : 1) * sizeof *u);
    int rc = -1;
    if (t && u) {
        memcpy(t, text, len);
        t[len] = 0;
        for (size_t i = 0; i < n_ids; i++)
            u[i] = (uint32_t)ids[i];
        r.text_delta = t;
        r.token_ids = u;
        r.n_token_ids = n_ids;
        r.sequence_id = g->seq_id;
        rc = rpc_call_write(g->call, &r.base);
    }
    free(t);
    free(u);
    return rc;
}

static void g_start(void *ud, uint64_t seq_id, int n_prompt) {
    (void)n_prompt;
    ((grpc_sink *)ud)->seq_id = seq_id;
}

static int g_cancelled(void *ud) {
    grpc_sink *g = ud;
    if (!rpc_call_cancelled(g->call))
        return 0;
    return rpc_call_deadline_ms(g->call) <= 0 ? 2 : 1;
}

static grpc_status_code code_of(serve_status_t st) {
    switch (st) {
    case SERVE_OK:
        return GRPC_STATUS_OK;
    case SERVE_INVALID:
        return GRPC_STATUS_INVALID_ARGUMENT;
    case SERVE_EXHAUSTED:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case SERVE_UNAVAILABLE:
        return GRPC_STATUS_UNAVAILABLE;
    case SERVE_CANCELLED:
        return GRPC_STATUS_CANCELLED;
    case SERVE_DEADLINE:
        return GRPC_STATUS_DEADLINE_EXCEEDED;
    case SERVE_ALREADY_EXISTS:
        return GRPC_STATUS_ALREADY_EXISTS;
    default:
        return GRPC_STATUS_INTERNAL;
    }
}

void serve_grpc_generate(rpc_call *call, const ProtobufCMessage *req, void *user) {
    serve_ctx *s = user;
    const Kvtier__V1__GenerateRequest *rq = (const Kvtier__V1__GenerateRequest *)req;
    serve_req q;
    memset(&q, 0, sizeof q);
    q.mode = -1;
    q.prompt = rq->prompt;
    q.enable_thinking = rq->enable_thinking;
    q.sequence_id = rq->sequence_id;
    chat_msg *msgs = NULL;
    if (rq->n_messages) {
        msgs = calloc(rq->n_messages, sizeof *msgs);
        if (!msgs) {
            rpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        for (size_t i = 0; i < rq->n_messages; i++) {
            msgs[i].role = rq->messages[i]->role;
            msgs[i].content = rq->messages[i]->content;
        }
        q.messages = msgs;
        q.n_messages = rq->n_messages;
    }
    const Kvtier__V1__SamplingParams *sp = rq->sampling;
    if (sp) {
        q.has_max_new = sp->max_new_tokens > 0;
        q.max_new = sp->max_new_tokens > 0x7fffffffu ? 0x7fffffff : (int)sp->max_new_tokens;
        q.has_temperature =
            sp->temperature_set_case == KVTIER__V1__SAMPLING_PARAMS__TEMPERATURE_SET_TEMPERATURE;
        q.temperature = sp->temperature;
        q.has_top_p = sp->top_p_set_case == KVTIER__V1__SAMPLING_PARAMS__TOP_P_SET_TOP_P;
        q.top_p = sp->top_p;
        q.has_top_k = sp->top_k_set_case == KVTIER__V1__SAMPLING_PARAMS__TOP_K_SET_TOP_K;
        q.top_k = sp->top_k > 0x7fffffffu ? -1 : (int)sp->top_k;
        q.has_seed = sp->has_seed;
        q.seed = sp->seed;
        if (sp->n_stop > SERVE_MAX_STOPS) {
            free(msgs);
            rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "at most %d stop strings (got %zu)",
                            SERVE_MAX_STOPS, sp->n_stop);
            return;
        }
        for (size_t i = 0; i < sp->n_stop; i++)
            q.stops[q.n_stops++] = sp->stop[i];
    }
    const Kvtier__V1__TieringOverrides *t = rq->tiering;
    if (t) {
        q.policy = t->policy;
        q.hot_frac = t->hot_budget_fraction;
        q.hot_blocks = t->hot_budget_blocks > 0x7fffffffu ? -1 : (int)t->hot_budget_blocks;
        q.mode = t->mode == KVTIER__V1__RECALL_MODE__RECALL_MODE_UNSPECIFIED ? -1
                 : t->mode == KVTIER__V1__RECALL_MODE__RECALL_MODE_EXACT     ? TIERING_EXACT
                 : t->mode == KVTIER__V1__RECALL_MODE__RECALL_MODE_PREFETCH  ? TIERING_PREFETCH
                                                                             : 100 + (int)t->mode;
        q.tau = t->tau;
    }
    grpc_sink g = {call, 0};
    serve_out out;
    serve_sink sink = {&g, g_start, g_delta, g_cancelled};
    serve_status_t st = serve_run(s, &q, &sink, &out);
    free(msgs);
    if (st == SERVE_OK) {
        Kvtier__V1__GenerateResponse r = KVTIER__V1__GENERATE_RESPONSE__INIT;
        Kvtier__V1__Usage u = KVTIER__V1__USAGE__INIT;
        Kvtier__V1__TierRunStats ts = KVTIER__V1__TIER_RUN_STATS__INIT;
        u.prompt_tokens = (uint32_t)out.n_prompt;
        u.generated_tokens = (uint32_t)out.n_tokens;
        u.prefill_tokens_per_s = out.prefill_s > 0 ? out.n_prompt / out.prefill_s : 0;
        u.decode_tokens_per_s = out.decode_s > 0 ? out.decode_steps / out.decode_s : 0;
        ts.peak_hot_bytes = out.kv_peak_bytes;
        ts.blocks_demoted_host = out.ts.demoted_host;
        ts.blocks_demoted_ssd = out.ts.demoted_ssd;
        ts.blocks_recalled = out.ts.recalled;
        ts.blocks_dropped = out.ts.dropped;
        ts.recall_latency_p50_ms = out.ts.recall_ms_p50;
        ts.recall_latency_p99_ms = out.ts.recall_ms_p99;
        ts.degraded = out.ts.degraded;
        ts.degraded_reason = out.ts.degraded_reason;
        uint32_t *u32 = malloc((out.n_rest ? out.n_rest : 1) * sizeof *u32);
        for (size_t i = 0; u32 && i < out.n_rest; i++)
            u32[i] = (uint32_t)out.rest_ids[i];
        r.text_delta = "";
        r.token_ids = u32;
        r.n_token_ids = u32 ? out.n_rest : 0;
        r.sequence_id = out.seq_id;
        r.done = 1;
        r.finish_reason = (char *)out.finish_reason;
        r.stop = (char *)(out.stop_matched ? out.stop_matched : "");
        r.usage = &u;
        r.tier_stats = &ts;
        rpc_call_write(call, &r.base);
        rpc_call_finish(call, GRPC_STATUS_OK, NULL);
        free(u32);
    } else {
        rpc_call_finish(call, code_of(st), "%s", out.err);
    }
    serve_out_free(&out);
}
