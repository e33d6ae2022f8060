/* kvtierd.c - the kvtier cache-tier service: flags, tier library, gRPC server
 * (Tier + Admin + grpc.health.v1.Health), Prometheus metrics, signal-driven
 * graceful shutdown.
 *
 * Startup prints one line per endpoint on stdout, e.g.
 *   kvtierd: listening on 127.0.0.1:40123
 *   kvtierd: metrics on http://127.0.0.1:40124/metrics
 * so that tests and scripts can start it with port 0.
 *
 * Authentication: --auth-tokens FILE (svc_auth.h; re-read on SIGHUP) or the
 * legacy single --auth-token; either installs svc_auth_authorize on the RPC
 * layer, the handlers apply the tenancy rules (svc_authz.h).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics.h"
#include "rpc.h"
#include "svc.h"
#include "svc_auth.h"
#include "svc_health.h"
#include "svc_opts.h"
#include "tier.h"
#include "tier_size.h"

typedef struct {
    svc_ctx *ctx;
    metrics *m;
} render_arg;

static char *render_metrics(void *user, size_t *len) {
    render_arg *a = user;
    tier_stats st;
    tier_stats_get(a->ctx->tier, &st);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    return metrics_render(a->m, &st, (now_ms - a->ctx->start_ms) / 1000u, KVTIERD_VERSION, len);
}

static void observe_call(const char *method, grpc_status_code code, uint64_t ns, void *user) {
    metrics_rpc(user, method, code, ns);
}

/* "host:port" with the port replaced by the bound one. */
static void bound_addr(const char *listen, int port, char *out, size_t len) {
    const char *colon = strrchr(listen, ':');
    int hl = colon ? (int)(colon - listen) : (int)strlen(listen);
    snprintf(out, len, "%.*s:%d", hl, listen, port);
}

/* SIGHUP: re-reads the tokens file; a bad one keeps the old table. Says
 * what happened on stdout / stderr (never a token). */
static void reload_tokens(svc_auth *auth, const char *path) {
    char warn[600], msg[600];
    if (!path) {
        printf("kvtierd: SIGHUP: no --auth-tokens file to reload\n");
    } else if (svc_auth_reload(auth, warn, sizeof warn, msg, sizeof msg) == 0) {
        if (warn[0])
            fprintf(stderr, "kvtierd: warning: %s\n", warn);
        printf("kvtierd: SIGHUP: reloaded %s: %s\n", path, msg);
    } else {
        fprintf(stderr, "kvtierd: SIGHUP: cannot reload the tokens, keeping the old ones: %s\n",
                msg);
    }
    fflush(stdout);
    fflush(stderr);
}

int main(int argc, char **argv) {
    /* Signals are taken synchronously by sigwait below; block them before any
     * thread (gRPC, RocksDB, microhttpd) exists so that all inherit the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    kvtierd_opts o;
    char err[512];
    if (kvtierd_opts_parse(argc, argv, &o, err, sizeof err) != 0) {
        fprintf(stderr, "kvtierd: %s\nTry 'kvtierd --help'.\n", err);
        return 2;
    }
    if (o.help) {
        kvtierd_usage(stdout);
        return 0;
    }
    if (o.version) {
        printf("kvtierd %s\n", KVTIERD_VERSION);
        return 0;
    }

    svc_auth *auth = NULL;
    char warn[600] = "";
    if (o.auth_tokens_file) {
        auth = svc_auth_open_file(o.auth_tokens_file, warn, sizeof warn, err, sizeof err);
        if (!auth) {
            fprintf(stderr, "kvtierd: --auth-tokens %s\n", err);
            return 2;
        }
        if (warn[0])
            fprintf(stderr, "kvtierd: warning: %s\n", warn);
    } else if (o.auth_token) {
        if (o.auth_token_argv)
            fprintf(stderr, "kvtierd: warning: --auth-token shows in the process list; use "
                            "--auth-tokens FILE (or KVTIERD_AUTH_TOKEN)\n");
        if (!(auth = svc_auth_open_token(o.auth_token))) {
            fprintf(stderr, "kvtierd: out of memory\n");
            return 1;
        }
    }

    tier_options to;
    tier_options_init(&to);
    to.data_dir = o.data_dir;
    to.host_budget = o.host_budget;
    to.ssd_budget = o.ssd_budget;
    to.write_policy = (tier_write_policy)o.write_policy;
    to.fsync = o.fsync;
    to.max_block_bytes = o.max_block;
    to.params = o.params;
    to.max_seq_blocks = o.max_seq_blocks;
    to.tenant_max_seqs = o.tenant_max_seqs;
    to.tenant_max_bytes = o.tenant_max_bytes;
    to.disk_reserve = o.disk_reserve;
    tier_t *tier = NULL;
    if (tier_open(&to, &tier, err, sizeof err) != TIER_OK) {
        fprintf(stderr, "kvtierd: cannot open the store in %s: %s\n", o.data_dir, err);
        svc_auth_free(auth);
        return 1;
    }

    static metrics m;
    metrics_init(&m);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    svc_ctx ctx = {.tier = tier,
                   .defaults = o.params,
                   .m = &m,
                   .max_fetch_refs = o.max_fetch_refs,
                   .max_staged = o.max_staged};
    ctx.start_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    atomic_init(&ctx.draining, 0);

    rpc_tls tls = {o.tls_client_ca, o.tls_cert, o.tls_key, o.tls_client_ca != NULL};
    rpc_server *srv = rpc_server_new_tls(o.listen, o.threads, o.max_message, &tls, err, sizeof err);
    if (!srv) {
        fprintf(stderr, "kvtierd: %s\n", err);
        tier_close(tier);
        svc_auth_free(auth);
        return 1;
    }
    svc_health *health = NULL;
    rpc_limits lim = {(int)o.max_streams, (int)o.max_streams_per_client,
                      (int)(o.stream_idle_s * 1000u)};
    if ((auth && rpc_server_set_authorizer(srv, svc_auth_authorize, auth) != 0) ||
        rpc_server_set_limits(srv, &lim) != 0 ||
        rpc_server_set_observer(srv, observe_call, &m) != 0 || svc_tier_register(srv, &ctx) != 0 ||
        svc_admin_register(srv, &ctx) != 0 ||
        !(health = svc_health_new(srv, &ctx, SVC_HEALTH_PERIOD_MS, err, sizeof err)) ||
        /* health answers without a token, whichever auth is on (probes send none) */
        (auth && rpc_server_set_public(srv, "/kvtier.v1.Admin/Health") != 0) ||
        rpc_server_start(srv) != 0) {
        fprintf(stderr, "kvtierd: cannot start the gRPC server on %s\n", o.listen);
        rpc_server_free(srv);
        svc_health_free(health);
        tier_close(tier);
        svc_auth_free(auth);
        return 1;
    }
    char addr[300];
    bound_addr(o.listen, rpc_server_port(srv), addr, sizeof addr);
    printf("kvtierd: listening on %s\n", addr);

    render_arg ra = {&ctx, &m};
    metrics_http *mh = NULL;
    if (o.metrics_listen) {
        int mport = 0;
        mh = metrics_http_start(o.metrics_listen, render_metrics, &ra, &mport, err, sizeof err);
        if (!mh) {
            fprintf(stderr, "kvtierd: %s\n", err);
            rpc_server_free(srv);
            svc_health_free(health);
            tier_close(tier);
            svc_auth_free(auth);
            return 1;
        }
        bound_addr(o.metrics_listen, mport, addr, sizeof addr);
        printf("kvtierd: metrics on http://%s/metrics\n", addr);
    }
    char hb[32], sb[32], authd[128] = "";
    if (auth) {
        char d[100];
        svc_auth_describe(auth, d, sizeof d);
        snprintf(authd, sizeof authd, ", auth on: %s", o.auth_tokens_file ? d : "one token");
    }
    printf("kvtierd: data %s, host budget %s, ssd budget %s, write-%s%s%s\n", o.data_dir,
           tier_size_format(o.host_budget, hb, sizeof hb),
           tier_size_format(o.ssd_budget, sb, sizeof sb),
           o.write_policy == TIER_WRITE_BACK ? "back" : "through", authd,
           o.tls_client_ca ? ", mutual TLS"
           : o.tls_cert    ? ", TLS"
                           : "");
    fflush(stdout);

    int sig = 0;
    for (;;) {
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig != SIGHUP)
            break;
        reload_tokens(auth, o.auth_tokens_file);
    }
    printf("kvtierd: %s: stopping (grace %d ms)\n", sig == SIGINT ? "SIGINT" : "SIGTERM",
           o.grace_ms);
    fflush(stdout);
    atomic_store(&ctx.draining, 1);
    rpc_server_shutdown(srv, o.grace_ms); /* health: NOT_SERVING, Watch streams end */
    metrics_http_stop(mh);
    rpc_server_free(srv);
    svc_health_free(health);
    svc_auth_free(auth);
    tier_status s = tier_close(tier);
    if (s != TIER_OK) {
        fprintf(stderr, "kvtierd: flushing the store failed (%s); RAM-only blocks may be lost\n",
                tier_status_name(s));
        return 1;
    }
    printf("kvtierd: stopped\n");
    return 0;
}
