/* svc_opts.c - kvtierd flags. */
#include "svc_opts.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "tier_size.h"

void kvtierd_usage(FILE *f) {
    fprintf(
        f, "usage: kvtierd [options]\n"
           "kvtier cache-tier service: keeps demoted KV blocks of Qwen3 sequences in host RAM\n"
           "and RocksDB and decides their placement (gRPC services kvtier.v1.Tier and Admin).\n"
           "\n"
           "  --listen ADDR              gRPC address (127.0.0.1:7070; port 0 = any free port,\n"
           "                             the bound address is printed on stdout)\n"
           "  --data-dir DIR             RocksDB directory, created if missing (./kvtier-data)\n"
           "  --host-budget SIZE         RAM for demoted blocks, e.g. 512MiB (512MiB)\n"
           "  --ssd-budget SIZE          RocksDB bytes for demoted blocks (20GiB)\n"
           "  --host-write-policy P      through: ack after RocksDB write (default);\n"
           "                             back: ack at RAM speed, write to RocksDB on eviction\n"
           "  --fsync                    fsync RocksDB's WAL on every write (power-loss safe)\n"
           "  --disk-reserve SIZE        space kept free on the data dir's filesystem: a put\n"
           "                             that would leave less is refused (RESOURCE_EXHAUSTED,\n"
           "                             \"disk full\"; kvtier.v1.Tier health NOT_SERVING) while\n"
           "                             reads, closes and evictions go on and free space;\n"
           "                             room for RocksDB's compaction and a restart (256MiB;\n"
           "                             0 = off)\n"
           "  --max-block SIZE           largest block payload accepted (1MiB)\n"
           "  --metrics-listen ADDR      serve Prometheus text at http://ADDR/metrics (off)\n"
           "  --top-p X                  hot-pool parameters recorded for sequences whose\n"
           "  --window-steps N           worker sends none (the worker holds its hot pool\n"
           "  --hot-inactive-steps N     itself): active-set mass (0.95), steps per summary\n"
           "  --recent-blocks N          (16), idle steps before a hot block leaves (50),\n"
           "  --sink-blocks N            last (4) and first (1) blocks always hot\n"
           "  --prefetch-min-revivals N  prefetch SSD blocks revived N times; 0 = never (2)\n"
           "  --max-message SIZE         gRPC max message size each way (16MiB)\n"
           "  --threads N                pre-started handler threads; grows on demand (4)\n"
           "  --auth-tokens FILE         tenants and their tokens: one 'TOKEN TENANT ROLE' a\n"
           "                             line (ROLE tenant or operator); a call's tenant is\n"
           "                             its token's; re-read on SIGHUP; chmod 600 it\n"
           "  --auth-token T             legacy: one operator token for every tenant (shows\n"
           "                             in ps: prefer env KVTIERD_AUTH_TOKEN or the file)\n"
           "  --tls-cert FILE            serve over TLS with this PEM certificate chain\n"
           "  --tls-key FILE             ... and its PEM private key\n"
           "  --tls-client-ca FILE       mutual TLS: clients need a certificate signed by this CA\n"
           "  --grace-ms N               on SIGTERM, let in-flight calls finish for N ms (10000)\n"
           "limits (a call over one gets RESOURCE_EXHAUSTED and changes nothing):\n"
           "  --max-seq-blocks N         index entries one sequence may hold: the blocks it\n"
           "                             stores, in chunks of 64 of a layer, plus growth\n"
           "                             records; ~48 bytes of RAM each (2097152 = 96 MiB)\n"
           "  --max-fetch-refs N         block refs one FetchBlocks request may list (16384)\n"
           "  --max-staged SIZE          payload all open PutBlocks streams may hold before\n"
           "                             their commit, together (256MiB; one stream: 16 x\n"
           "                             --max-message)\n"
           "  --tenant-max-sequences N   sequences (open or retained) per tenant; 0 = no\n"
           "                             limit (10000)\n"
           "  --tenant-max-bytes SIZE    payload stored in RAM + RocksDB per tenant; 0 = only\n"
           "                             the service budgets (0)\n"
           "streams (each open stream holds one of the 256 handler threads):\n"
           "  --max-streams N            open streams of all clients together; more are\n"
           "                             refused at once with RESOURCE_EXHAUSTED (192; 0 = no\n"
           "                             cap; at most 224, the other threads stay for unary\n"
           "                             calls)\n"
           "  --max-streams-per-client N open streams of one client connection (128: a worker\n"
           "                             holds up to 2 per slot, --slots 64 at most; 0 = no cap)\n"
           "  --stream-idle-timeout S    a call whose client sends (or reads) nothing for S\n"
           "                             seconds while the server waits is ended with status\n"
           "                             CANCELLED (120; 0 = never)\n"
           "  Health checks (grpc.health.v1.Health/Check, Admin/Health) have threads of their\n"
           "  own and answer whatever the streams hold.\n"
           "  --version                  print the version\n"
           "  --help                     this text\n"
           "\n"
           "SIZE: bytes, or with a unit: K/KiB, M/MiB, G/GiB, T/TiB (1024^n), KB/MB/GB (1000^n).\n"
           "SIGTERM/SIGINT: stop accepting, finish in-flight calls, flush to RocksDB, exit 0.\n"
           "SIGHUP: re-read --auth-tokens FILE (a bad file keeps the old tokens).\n");
}

static int parse_u32(const char *flag, const char *s, uint32_t lo, uint32_t hi, uint32_t *out,
                     char *err, size_t errlen) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi) {
        snprintf(err, errlen, "%s: \"%s\" is not an integer in [%u, %u]", flag, s, lo, hi);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static int parse_size(const char *flag, const char *s, uint64_t *out, char *err, size_t errlen) {
    char e[256];
    if (tier_size_parse(s, out, e, sizeof e) != 0) {
        snprintf(err, errlen, "%s: %s", flag, e);
        return -1;
    }
    return 0;
}

enum {
    O_LISTEN = 256,
    O_DATA,
    O_HOSTB,
    O_SSDB,
    O_WP,
    O_FSYNC,
    O_MAXBLOCK,
    O_METRICS,
    O_TOPP,
    O_WINDOW,
    O_HOTIN,
    O_RECENT,
    O_SINK,
    O_PREFETCH,
    O_MAXMSG,
    O_THREADS,
    O_AUTH,
    O_AUTHFILE,
    O_TLSCERT,
    O_TLSKEY,
    O_TLSCA,
    O_GRACE,
    O_MAXSEQBLK,
    O_MAXREFS,
    O_MAXSTAGED,
    O_TMAXSEQ,
    O_TMAXBYTES,
    O_MAXSTREAMS,
    O_DISKRESERVE,
    O_MAXSTREAMSPC,
    O_STREAMIDLE,
    O_VERSION,
    O_HELP
};

int kvtierd_opts_parse(int argc, char **argv, kvtierd_opts *o, char *err, size_t errlen) {
    static const struct option longopts[] = {
        {"listen", required_argument, 0, O_LISTEN},
        {"data-dir", required_argument, 0, O_DATA},
        {"host-budget", required_argument, 0, O_HOSTB},
        {"ssd-budget", required_argument, 0, O_SSDB},
        {"host-write-policy", required_argument, 0, O_WP},
        {"fsync", no_argument, 0, O_FSYNC},
        {"max-block", required_argument, 0, O_MAXBLOCK},
        {"metrics-listen", required_argument, 0, O_METRICS},
        {"top-p", required_argument, 0, O_TOPP},
        {"window-steps", required_argument, 0, O_WINDOW},
        {"hot-inactive-steps", required_argument, 0, O_HOTIN},
        {"recent-blocks", required_argument, 0, O_RECENT},
        {"sink-blocks", required_argument, 0, O_SINK},
        {"prefetch-min-revivals", required_argument, 0, O_PREFETCH},
        {"max-message", required_argument, 0, O_MAXMSG},
        {"threads", required_argument, 0, O_THREADS},
        {"auth-token", required_argument, 0, O_AUTH},
        {"auth-tokens", required_argument, 0, O_AUTHFILE},
        {"tls-cert", required_argument, 0, O_TLSCERT},
        {"tls-key", required_argument, 0, O_TLSKEY},
        {"tls-client-ca", required_argument, 0, O_TLSCA},
        {"grace-ms", required_argument, 0, O_GRACE},
        {"max-seq-blocks", required_argument, 0, O_MAXSEQBLK},
        {"max-fetch-refs", required_argument, 0, O_MAXREFS},
        {"max-staged", required_argument, 0, O_MAXSTAGED},
        {"tenant-max-sequences", required_argument, 0, O_TMAXSEQ},
        {"tenant-max-bytes", required_argument, 0, O_TMAXBYTES},
        {"max-streams", required_argument, 0, O_MAXSTREAMS},
        {"disk-reserve", required_argument, 0, O_DISKRESERVE},
        {"max-streams-per-client", required_argument, 0, O_MAXSTREAMSPC},
        {"stream-idle-timeout", required_argument, 0, O_STREAMIDLE},
        {"version", no_argument, 0, O_VERSION},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->listen = "127.0.0.1:7070";
    o->data_dir = "kvtier-data";
    o->host_budget = 512ULL << 20;
    o->ssd_budget = 20ULL << 30;
    o->write_policy = TIER_WRITE_THROUGH;
    o->max_block = 1u << 20;
    o->max_message = 16u << 20;
    o->threads = 4;
    o->grace_ms = 10000;
    o->max_seq_blocks = 2u << 20;
    o->max_fetch_refs = 16384;
    o->max_staged = 256u << 20;
    o->tenant_max_seqs = 10000;
    o->tenant_max_bytes = 0;
    o->disk_reserve = 256u << 20;
    o->max_streams = 192;
    o->max_streams_per_client = 128;
    o->stream_idle_s = 120;
    policy_params_init(&o->params);

    optind = 1;
    opterr = 0;
    int c;
    uint64_t v;
    uint32_t u;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        const char *flag = optind > 1 && optind - 1 < argc ? argv[optind - 1] : "?";
        switch (c) {
        case O_LISTEN:
            o->listen = optarg;
            break;
        case O_DATA:
            o->data_dir = optarg;
            break;
        case O_HOSTB:
            if (parse_size("--host-budget", optarg, &o->host_budget, err, errlen))
                return -1;
            break;
        case O_SSDB:
            if (parse_size("--ssd-budget", optarg, &o->ssd_budget, err, errlen))
                return -1;
            break;
        case O_WP:
            if (strcmp(optarg, "through") == 0)
                o->write_policy = TIER_WRITE_THROUGH;
            else if (strcmp(optarg, "back") == 0)
                o->write_policy = TIER_WRITE_BACK;
            else {
                snprintf(err, errlen, "--host-write-policy: \"%s\" is neither through nor back",
                         optarg);
                return -1;
            }
            break;
        case O_FSYNC:
            o->fsync = 1;
            break;
        case O_MAXBLOCK:
            if (parse_size("--max-block", optarg, &v, err, errlen))
                return -1;
            if (v == 0 || v > (256u << 20)) {
                snprintf(err, errlen, "--max-block: %s is not in (0, 256MiB]", optarg);
                return -1;
            }
            o->max_block = (uint32_t)v;
            break;
        case O_METRICS:
            o->metrics_listen = optarg;
            break;
        case O_TOPP: {
            char *end;
            errno = 0;
            double x = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(x > 0.0 && x <= 1.0)) {
                snprintf(err, errlen, "--top-p: \"%s\" is not a number in (0, 1]", optarg);
                return -1;
            }
            o->params.top_p = x;
            break;
        }
        case O_WINDOW:
            if (parse_u32("--window-steps", optarg, 1, 1u << 20, &o->params.window_steps, err,
                          errlen))
                return -1;
            break;
        case O_HOTIN:
            if (parse_u32("--hot-inactive-steps", optarg, 1, 1u << 30,
                          &o->params.hot_inactive_steps, err, errlen))
                return -1;
            break;
        case O_RECENT:
            if (parse_u32("--recent-blocks", optarg, 0, 1u << 20, &o->params.recent_blocks, err,
                          errlen))
                return -1;
            break;
        case O_SINK:
            if (parse_u32("--sink-blocks", optarg, 0, 1u << 20, &o->params.sink_blocks, err,
                          errlen))
                return -1;
            break;
        case O_PREFETCH:
            if (parse_u32("--prefetch-min-revivals", optarg, 0, 1u << 20,
                          &o->params.prefetch_min_revivals, err, errlen))
                return -1;
            break;
        case O_MAXMSG:
            if (parse_size("--max-message", optarg, &v, err, errlen))
                return -1;
            if (v < 4096 || v > 0x7fffffff) {
                snprintf(err, errlen, "--max-message: %s is not in [4KiB, 2GiB)", optarg);
                return -1;
            }
            o->max_message = (size_t)v;
            break;
        case O_THREADS:
            if (parse_u32("--threads", optarg, 1, 256, &u, err, errlen))
                return -1;
            o->threads = (int)u;
            break;
        case O_AUTH:
            if (!*optarg) {
                snprintf(err, errlen, "--auth-token: empty token");
                return -1;
            }
            o->auth_token = optarg;
            o->auth_token_argv = 1;
            break;
        case O_AUTHFILE:
            if (!*optarg) {
                snprintf(err, errlen, "--auth-tokens: empty path");
                return -1;
            }
            o->auth_tokens_file = optarg;
            break;
        case O_TLSCERT:
            o->tls_cert = optarg;
            break;
        case O_TLSKEY:
            o->tls_key = optarg;
            break;
        case O_TLSCA:
            o->tls_client_ca = optarg;
            break;
        case O_GRACE:
            if (parse_u32("--grace-ms", optarg, 0, 3600000, &u, err, errlen))
                return -1;
            o->grace_ms = (int)u;
            break;
        case O_MAXSEQBLK:
            if (parse_u32("--max-seq-blocks", optarg, 1, 1u << 30, &u, err, errlen))
                return -1;
            o->max_seq_blocks = u;
            break;
        case O_MAXREFS:
            if (parse_u32("--max-fetch-refs", optarg, 1, 1u << 24, &o->max_fetch_refs, err, errlen))
                return -1;
            break;
        case O_MAXSTAGED:
            if (parse_size("--max-staged", optarg, &o->max_staged, err, errlen))
                return -1;
            if (o->max_staged == 0) {
                snprintf(err, errlen, "--max-staged: must be > 0");
                return -1;
            }
            break;
        case O_TMAXSEQ:
            if (parse_u32("--tenant-max-sequences", optarg, 0, 1u << 30, &o->tenant_max_seqs, err,
                          errlen))
                return -1;
            break;
        case O_TMAXBYTES:
            if (parse_size("--tenant-max-bytes", optarg, &o->tenant_max_bytes, err, errlen))
                return -1;
            break;
        case O_DISKRESERVE:
            if (parse_size("--disk-reserve", optarg, &o->disk_reserve, err, errlen))
                return -1;
            break;
        case O_MAXSTREAMS:
            if (parse_u32("--max-streams", optarg, 0, KVTIERD_MAX_STREAMS_CAP, &o->max_streams, err,
                          errlen))
                return -1;
            break;
        case O_MAXSTREAMSPC:
            if (parse_u32("--max-streams-per-client", optarg, 0, KVTIERD_MAX_STREAMS_CAP,
                          &o->max_streams_per_client, err, errlen))
                return -1;
            break;
        case O_STREAMIDLE:
            if (parse_u32("--stream-idle-timeout", optarg, 0, 86400, &o->stream_idle_s, err,
                          errlen))
                return -1;
            break;
        case O_VERSION:
            o->version = 1;
            break;
        case 'h':
        case O_HELP:
            o->help = 1;
            break;
        case ':':
            snprintf(err, errlen, "%s needs a value", flag);
            return -1;
        default:
            snprintf(err, errlen, "unknown option %s", flag);
            return -1;
        }
    }
    if (optind < argc) {
        snprintf(err, errlen, "unexpected argument \"%s\"", argv[optind]);
        return -1;
    }
    const char *env = getenv("KVTIERD_AUTH_TOKEN");
    if (o->auth_tokens_file && (o->auth_token || (env && *env))) {
        snprintf(err, errlen,
                 "--auth-tokens and %s exclude each other: put the operator token in the file "
                 "with role operator",
                 o->auth_token ? "--auth-token" : "KVTIERD_AUTH_TOKEN");
        return -1;
    }
    if (!o->auth_token && env && *env)
        o->auth_token = env;
    if (!o->tls_cert != !o->tls_key || (o->tls_client_ca && !o->tls_cert)) {
        snprintf(err, errlen,
                 "--tls-cert and --tls-key go together (and --tls-client-ca needs them)");
        return -1;
    }
    if (!*o->data_dir) {
        snprintf(err, errlen, "--data-dir: empty path");
        return -1;
    }
    char e[256];
    if (policy_params_check(&o->params, e, sizeof e) != 0) {
        snprintf(err, errlen, "policy parameters: %s", e);
        return -1;
    }
    return 0;
}
