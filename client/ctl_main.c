/* ctl_main.c — kvtierctl: operator CLI for kvtierd (health, stats, sequences,
 * tier map, evict, drain, cluster, migrate). Argument parsing, help texts, error reporting.
 *
 * Exit codes: 0 success, 1 the operation failed (server unreachable, NOT_FOUND,
 * any error status, health not SERVING), 2 usage error. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "ctl_map.h"
#include "ctl_cluster.h"
#include "ctl_migrate.h"
#include "ctl_print.h"
#include "kvtier.h"

#ifndef KVTIER_VERSION
#define KVTIER_VERSION "unknown"
#endif

typedef struct ctl_args {
    const char *server, *token, *tenant;
    const char *token_file; /* --token-file: the token is its first line */
    int token_flag;         /* 1 when --token was given */
    int json, plain, width;
    const char *color; /* auto | always | never | 256 | truecolor */
    int64_t timeout_ms;
    int has_layer, layer;
    const char *to;   /* evict: a tier; migrate: the destination address */
    const char *from; /* migrate: the source shard */
    int include_open; /* migrate */
    uint32_t batch;   /* migrate: blocks per call */
    int help, version;
    /* positionals */
    const char *cmd;
    char **pos;
    int npos;
} ctl_args;

/* ---------------------------------------------------------------- help */

static const char k_usage[] =
    "usage: kvtierctl [--server ADDR] [--json] [--token-file F] [--tenant T] COMMAND [ARGS]\n"
    "\n"
    "Inspect and steer a kvtierd cache-tier service.\n"
    "\n"
    "commands:\n"
    "  health                         is the service up (exit 0 when SERVING)\n"
    "  stats                          per-tier blocks, bytes, hits, fetch latency\n"
    "  sequences                      sequences the service holds\n"
    "  map SEQ                        layer x block tier map of a sequence (heatmap)\n"
    "  evict SEQ [--layer L] [--to host|ssd|drop]\n"
    "                                 move a sequence's stored blocks down\n"
    "  drain                          write every RAM block to SSD\n"
    "  migrate --from ADDR --to ADDR [--include-open] [--batch N]\n"
    "                                 move a shard's sequences to another kvtierd / the LB\n"
    "  cluster [RUNDIR/cluster.env | ADDR...]\n"
    "                                 every shard's health, bytes per tier, sequences\n"
    "\n"
    "options:\n"
    "  -s, --server ADDR   kvtierd address (default $KVTIER_SERVER, else 127.0.0.1:7070)\n"
    "      --json          print JSON for scripts\n"
    "      --token-file F  auth token: the first line of F (default $KVTIER_TOKEN)\n"
    "      --token T       auth token on the command line (shows in ps: prefer the above)\n"
    "      --tenant T      tenant (default $KVTIER_TENANT, else the server's default)\n"
    "      --timeout MS    deadline per call in milliseconds (default 10000)\n"
    "  -h, --help          this help; `kvtierctl COMMAND --help` for a command\n"
    "      --version       print kvtierctl's version\n"
    "\n"
    "NO_COLOR (non-empty) turns the map's colors off unless --color asks for them.\n"
    "\n"
    "exit status: 0 ok, 1 the operation failed, 2 usage error\n";

static const struct {
    const char *cmd, *help;
} k_cmd_help[] = {
    {"health", "usage: kvtierctl health [--json]\n"
               "Asks kvtierd for its health. Prints status, version and uptime.\n"
               "Exit 0 when the status is SERVING, 1 otherwise (or when unreachable).\n"},
    {"stats", "usage: kvtierctl stats [--json]\n"
              "Per tier (HOT, HOST, SSD, DROPPED): blocks, bytes, budget, hits, puts, fetches\n"
              "and fetch latency p50/p99; then sequences, revivals, checksum failures and\n"
              "decision counts.\n"},
    {"sequences", "usage: kvtierctl sequences [--tenant T] [--json]\n"
                  "Lists the sequences kvtierd holds (all tenants unless --tenant), with blocks\n"
                  "per tier, last summary step and whether the sequence is open or retained.\n"},
    {"map", "usage: kvtierctl map SEQ [--plain] [--color auto|always|never|256|truecolor]\n"
            "                     [--width N] [--json]\n"
            "Draws the tier of every block of sequence SEQ: one row per layer, one cell per\n"
            "block, wrapped into bands with a block-index ruler. Colors: HOT red, HOST\n"
            "orange, SSD blue, DROPPED gray, absent dark. Plain characters (# hot, h host,\n"
            "s ssd, . dropped, blank absent) when stdout is not a terminal, with --plain,\n"
            "--color never, or NO_COLOR set (and no --color); colored cells keep the same\n"
            "characters, so a capture without the escapes reads as --plain. Truecolor when "
            "$COLORTERM says truecolor/24bit, else 256 colors.\n"
            "--width N: columns to fill (default: the terminal's, or 100).\n"
            "--json: {\"counts\":{...},\"rows\":[{\"layer\":L,\"cells\":\"##hs..\",...}]}.\n"},
    {"evict", "usage: kvtierctl evict SEQ [--layer L] [--to host|ssd|drop] [--json]\n"
              "Moves the stored blocks of sequence SEQ (all layers, or layer L) to the\n"
              "SSD tier (default), back to host RAM (SSD blocks, as many as fit the RAM\n"
              "budget; nothing else leaves RAM for them), or drops them. HOT blocks (on\n"
              "the worker) are not touched. Prints the number of blocks moved.\n"},
    {"drain", "usage: kvtierctl drain [--json]\n"
              "Writes every block held in service RAM to SSD (before a restart or\n"
              "maintenance). Prints the number of blocks flushed.\n"},
    {"migrate",
     "usage: kvtierctl migrate --from ADDR --to ADDR [--tenant T] [--include-open]\n"
     "                         [--batch N] [--json]\n"
     "Moves the stored blocks (HOST and SSD) of every sequence on the kvtierd at --from\n"
     "(one tenant with --tenant) to --to, normally the load balancer's tier port once\n"
     "the shard is out of its upstream list: each sequence is opened there with the same\n"
     "shape, its blocks are read in batches of N (default 256; at most the source's\n"
     "--max-fetch-refs) and put with their crc32c (target SSD); when every block is\n"
     "acknowledged and shows in the destination's map, the sequence is closed retained\n"
     "there (open ones stay open) and deleted on the source. Any failure leaves that\n"
     "sequence on the source untouched; a rerun overwrites a partial copy.\n"
     "Refuses a sequence that --to routes back to --from (a probe sequence checks).\n"
     "Open sequences (a worker generating) are skipped unless --include-open: then blocks\n"
     "the worker stores on the source after they were read are not moved.\n"
     "Prints one line per sequence, then a summary (--json: {\"sequences\",\"moved\",\n"
     "\"skipped_open\",\"failed\",\"blocks\",\"bytes\",\"seconds\",\"failures\"}).\n"
     "Exit 0 when every sequence was moved, 1 when one failed or was skipped.\n"
     "--token-file: with auth on, an operator token valid on both sides.\n"},
    {"cluster", "usage: kvtierctl cluster [RUNDIR/cluster.env | ADDR...] [--json]\n"
                "Asks every tier shard directly (not through the load balancer): health,\n"
                "blocks and bytes in HOST and SSD, sequences, checksum failures; then the\n"
                "total. Shards: the KVTIER_SHARDS line of an ops/cluster.sh cluster.env, the\n"
                "addresses given, or $KVTIER_SHARDS. Exit 0 when every shard is SERVING.\n"},
};

static const char *cmd_help(const char *cmd) {
    for (size_t i = 0; i < sizeof k_cmd_help / sizeof k_cmd_help[0]; i++)
        if (!strcmp(k_cmd_help[i].cmd, cmd))
            return k_cmd_help[i].help;
    return NULL;
}

static int usage_error(const char *fmt, const char *arg) {
    fputs("kvtierctl: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\nTry 'kvtierctl --help'.\n", stderr);
    return 2;
}

/* ---------------------------------------------------------------- parsing */

static int parse_u64(const char *s, uint64_t *out) {
    if (!s || !*s || *s == '-' || *s == '+')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, ctl_args *a) {
    enum {
        O_JSON = 256,
        O_TOKEN,
        O_TOKENFILE,
        O_TENANT,
        O_TIMEOUT,
        O_PLAIN,
        O_COLOR,
        O_WIDTH,
        O_LAYER,
        O_TO,
        O_FROM,
        O_INCLUDE_OPEN,
        O_BATCH,
        O_VERSION
    };
    static const struct option opts[] = {{"server", required_argument, 0, 's'},
                                         {"json", no_argument, 0, O_JSON},
                                         {"token", required_argument, 0, O_TOKEN},
                                         {"token-file", required_argument, 0, O_TOKENFILE},
                                         {"tenant", required_argument, 0, O_TENANT},
                                         {"timeout", required_argument, 0, O_TIMEOUT},
                                         {"plain", no_argument, 0, O_PLAIN},
                                         {"color", required_argument, 0, O_COLOR},
                                         {"width", required_argument, 0, O_WIDTH},
                                         {"layer", required_argument, 0, O_LAYER},
                                         {"to", required_argument, 0, O_TO},
                                         {"from", required_argument, 0, O_FROM},
                                         {"include-open", no_argument, 0, O_INCLUDE_OPEN},
                                         {"batch", required_argument, 0, O_BATCH},
                                         {"help", no_argument, 0, 'h'},
                                         {"version", no_argument, 0, O_VERSION},
                                         {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    a->server = getenv("KVTIER_SERVER");
    a->token = getenv("KVTIER_TOKEN");
    a->tenant = getenv("KVTIER_TENANT");
    a->color = "auto";
    opterr = 0;
    int c;
    uint64_t v;
    while ((c = getopt_long(argc, argv, ":s:h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            a->server = optarg;
            break;
        case O_JSON:
            a->json = 1;
            break;
        case O_TOKEN:
            a->token = optarg;
            a->token_flag = 1;
            break;
        case O_TOKENFILE:
            a->token_file = optarg;
            break;
        case O_TENANT:
            a->tenant = optarg;
            break;
        case O_TIMEOUT:
            if (parse_u64(optarg, &v) || v == 0 || v > 86400000)
                return usage_error("--timeout wants milliseconds in 1..86400000, got '%s'", optarg);
            a->timeout_ms = (int64_t)v;
            break;
        case O_PLAIN:
            a->plain = 1;
            break;
        case O_COLOR:
            if (strcmp(optarg, "auto") && strcmp(optarg, "always") && strcmp(optarg, "never") &&
                strcmp(optarg, "256") && strcmp(optarg, "truecolor"))
                return usage_error("--color wants auto, always, never, 256 or truecolor, got '%s'",
                                   optarg);
            a->color = optarg;
            break;
        case O_WIDTH:
            if (parse_u64(optarg, &v) || v < 20 || v > 100000)
                return usage_error("--width wants columns in 20..100000, got '%s'", optarg);
            a->width = (int)v;
            break;
        case O_LAYER:
            if (parse_u64(optarg, &v) || v > 1000000)
                return usage_error("--layer wants a layer number, got '%s'", optarg);
            a->has_layer = 1;
            a->layer = (int)v;
            break;
        case O_TO: /* checked with the command: a tier (evict) or an address (migrate) */
            a->to = optarg;
            break;
        case O_FROM:
            a->from = optarg;
            break;
        case O_INCLUDE_OPEN:
            a->include_open = 1;
            break;
        case O_BATCH:
            if (parse_u64(optarg, &v) || v == 0 || v > (1u << 24))
                return usage_error("--batch wants blocks in 1..16777216, got '%s'", optarg);
            a->batch = (uint32_t)v;
            break;
        case 'h':
            a->help = 1;
            break;
        case O_VERSION:
            a->version = 1;
            break;
        case ':':
            return usage_error("option '%s' needs a value", argv[optind - 1]);
        default:
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) {
        a->cmd = argv[optind];
        a->pos = argv + optind + 1;
        a->npos = argc - optind - 1;
    }
    if (!a->server || !*a->server)
        a->server = KVTIER_DEFAULT_ADDRESS;
    if (a->token_flag && a->token_file)
        return usage_error("--token and --token-file exclude each other%s", "");
    return 0;
}

/* Reads the first line of path (the token, without the line end) into
 * buf[len]. Returns 0, or 1 with a message (unreadable file, empty line). */
static int read_token_file(const char *path, char *buf, size_t len) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "kvtierctl: --token-file %s: %s\n", path, strerror(errno));
        return 1;
    }
    int ok = fgets(buf, (int)len, f) != NULL;
    fclose(f);
    size_t n = ok ? strcspn(buf, "\r\n") : 0;
    buf[n] = 0;
    if (n == 0) {
        fprintf(stderr, "kvtierctl: --token-file %s: the first line is empty\n", path);
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- errors */

/* Reports a failed call and returns exit status 1. */
static int fail(const ctl_args *a, const char *what, const kvtier_error *e, uint64_t seq) {
    switch (e->code) {
    case KVTIER_UNAVAILABLE:
    case KVTIER_DEADLINE_EXCEEDED:
        fprintf(stderr, "kvtierctl: cannot reach kvtierd at %s: %s (%s)\n", a->server, e->message,
                kvtier_code_name(e->code));
        break;
    case KVTIER_NOT_FOUND:
        if (seq)
            fprintf(stderr,
                    "kvtierctl: %s: sequence %" PRIu64 " not found on kvtierd at %s%s%s: %s\n",
                    what, seq, a->server, a->tenant && *a->tenant ? " for tenant " : "",
                    a->tenant && *a->tenant ? a->tenant : "", e->message);
        else
            fprintf(stderr, "kvtierctl: %s: not found: %s\n", what, e->message);
        break;
    case KVTIER_UNAUTHENTICATED:
        fprintf(stderr,
                "kvtierctl: kvtierd at %s refused the call (UNAUTHENTICATED): %s; "
                "pass --token-file or set KVTIER_TOKEN\n",
                a->server, e->message);
        break;
    case KVTIER_PERMISSION_DENIED:
        fprintf(stderr,
                "kvtierctl: %s: kvtierd at %s refused the call (PERMISSION_DENIED): %s; a tenant "
                "token acts on its own tenant only, 'drain' needs an operator token\n",
                what, a->server, e->message);
        break;
    default:
        fprintf(stderr, "kvtierctl: %s failed: %s: %s\n", what, kvtier_code_name(e->code),
                e->message);
    }
    return 1;
}

/* ---------------------------------------------------------------- commands */

static ctl_color pick_color(const ctl_args *a) {
    if (a->plain || !strcmp(a->color, "never"))
        return CTL_COLOR_NONE;
    const char *no_color = getenv("NO_COLOR"); /* no-color.org: flags override it */
    if (!strcmp(a->color, "auto") && no_color && *no_color)
        return CTL_COLOR_NONE;
    if (!strcmp(a->color, "256"))
        return CTL_COLOR_256;
    if (!strcmp(a->color, "truecolor"))
        return CTL_COLOR_TRUE;
    if (!strcmp(a->color, "auto") && !isatty(STDOUT_FILENO))
        return CTL_COLOR_NONE;
    const char *ct = getenv("COLORTERM");
    if (ct && (!strcmp(ct, "truecolor") || !strcmp(ct, "24bit")))
        return CTL_COLOR_TRUE;
    return CTL_COLOR_256;
}

static int term_width(const ctl_args *a) {
    if (a->width)
        return a->width;
    struct winsize ws;
    if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
        return ws.ws_col;
    const char *cols = getenv("COLUMNS");
    uint64_t v;
    if (cols && parse_u64(cols, &v) == 0 && v >= 20 && v <= 100000)
        return (int)v;
    return 100;
}

static int need_seq(const ctl_args *a, uint64_t *seq) {
    if (a->npos < 1)
        return usage_error("%s: missing sequence id", a->cmd);
    if (a->npos > 1)
        return usage_error("unexpected argument '%s'", a->pos[1]);
    if (parse_u64(a->pos[0], seq) || *seq == 0)
        return usage_error("sequence id must be a positive decimal integer, got '%s'", a->pos[0]);
    return 0;
}

static int cmd_health(kvtier_client *c, const ctl_args *a) {
    kvtier_health h;
    kvtier_error e;
    if (kvtier_health_check(c, &h, &e) != KVTIER_OK)
        return fail(a, "health", &e, 0);
    if (a->json)
        ctl_json_print(stdout, ctl_json_health(&h));
    else
        ctl_print_health(stdout, a->server, &h);
    return strcmp(h.status, "SERVING") == 0 && !h.degraded ? 0 : 1;
}

static int cmd_stats(kvtier_client *c, const ctl_args *a) {
    kvtier_stats s;
    kvtier_error e;
    if (kvtier_stats_get(c, &s, &e) != KVTIER_OK)
        return fail(a, "stats", &e, 0);
    if (a->json)
        return ctl_json_print(stdout, ctl_json_stats(&s)) ? 1 : 0;
    ctl_print_stats(stdout, &s);
    return 0;
}

static int cmd_sequences(kvtier_client *c, const ctl_args *a) {
    kvtier_seq_info *v = NULL;
    size_t n = 0;
    kvtier_error e;
    if (kvtier_list_sequences(c, a->tenant, &v, &n, &e) != KVTIER_OK)
        return fail(a, "sequences", &e, 0);
    int rc = 0;
    if (a->json)
        rc = ctl_json_print(stdout, ctl_json_sequences(v, n)) ? 1 : 0;
    else
        ctl_print_sequences(stdout, v, n);
    kvtier_free(v);
    return rc;
}

static int cmd_map(kvtier_client *c, const ctl_args *a, uint64_t seq) {
    kvtier_tier_map m;
    kvtier_error e;
    if (kvtier_tier_map_get(c, seq, &m, &e) != KVTIER_OK)
        return fail(a, "map", &e, seq);
    int rc;
    if (a->json) {
        rc = ctl_json_print(stdout, ctl_json_map(&m)) ? 1 : 0;
    } else {
        ctl_map_style st = {pick_color(a), term_width(a), a->tenant};
        rc = ctl_map_render(stdout, &m, &st) ? 1 : 0;
    }
    kvtier_tier_map_free(&m);
    return rc;
}

static int cmd_evict(kvtier_client *c, const ctl_args *a, uint64_t seq) {
    int to = a->to ? kvtier_tier_parse(a->to) : KVTIER_TIER_SSD;
    uint64_t moved = 0;
    kvtier_error e;
    if (kvtier_evict(c, seq, a->has_layer ? a->layer : -1, (kvtier_tier)to, &moved, &e) !=
        KVTIER_OK)
        return fail(a, "evict", &e, seq);
    if (a->json) {
        cJSON *j = cJSON_CreateObject();
        ctl_json_u64(j, "sequence_id", seq);
        if (a->has_layer)
            cJSON_AddNumberToObject(j, "layer", a->layer);
        cJSON_AddStringToObject(j, "to", kvtier_tier_name(to));
        ctl_json_u64(j, "blocks_moved", moved);
        return ctl_json_print(stdout, j) ? 1 : 0;
    }
    if (a->has_layer)
        printf("sequence %" PRIu64 " layer %d: %" PRIu64 " block%s moved to %s\n", seq, a->layer,
               moved, moved == 1 ? "" : "s", kvtier_tier_name(to));
    else
        printf("sequence %" PRIu64 ": %" PRIu64 " block%s moved to %s\n", seq, moved,
               moved == 1 ? "" : "s", kvtier_tier_name(to));
    return 0;
}

static int cmd_drain(kvtier_client *c, const ctl_args *a) {
    uint64_t n = 0;
    kvtier_error e;
    if (kvtier_drain(c, &n, &e) != KVTIER_OK)
        return fail(a, "drain", &e, 0);
    if (a->json) {
        cJSON *j = cJSON_CreateObject();
        ctl_json_u64(j, "blocks_flushed", n);
        return ctl_json_print(stdout, j) ? 1 : 0;
    }
    printf("drained: %" PRIu64 " block%s written to SSD\n", n, n == 1 ? "" : "s");
    return 0;
}

static int cmd_migrate(const ctl_args *a) {
    if (!a->from || !*a->from || !a->to || !*a->to)
        return usage_error("migrate needs --from ADDR and --to ADDR%s", "");
    if (!strcmp(a->from, a->to))
        return usage_error("migrate: --from and --to are the same address '%s'", a->from);
    ctl_migrate_opts o = {0};
    o.from = a->from;
    o.to = a->to;
    o.tenant = a->tenant;
    o.base.token = a->token;
    o.base.timeout_ms = a->timeout_ms;
    o.batch = a->batch;
    o.include_open = a->include_open;
    o.json = a->json;
    return ctl_migrate_run(stdout, stderr, &o);
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv) {
    ctl_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc;
    if (a.cmd && !strcmp(a.cmd, "help")) { /* kvtierctl help [COMMAND] */
        a.help = 1;
        a.cmd = a.npos ? a.pos[0] : NULL;
    }
    if (a.version) {
        printf("kvtierctl %s\n", KVTIER_VERSION);
        return 0;
    }
    if (a.help) {
        const char *h = a.cmd ? cmd_help(a.cmd) : NULL;
        if (a.cmd && !h)
            return usage_error("unknown command '%s'", a.cmd);
        fputs(h ? h : k_usage, stdout);
        return 0;
    }
    if (!a.cmd) {
        fputs(k_usage, stderr);
        return 2;
    }
    if (!cmd_help(a.cmd))
        return usage_error("unknown command '%s'", a.cmd);
    int is_map = !strcmp(a.cmd, "map"), is_evict = !strcmp(a.cmd, "evict");
    if (!is_map && (a.plain || a.width || strcmp(a.color, "auto")))
        return usage_error("--plain, --color and --width apply to 'map' only (command '%s')",
                           a.cmd);
    int is_migrate = !strcmp(a.cmd, "migrate");
    if (!is_evict && a.has_layer)
        return usage_error("--layer applies to 'evict' only (command '%s')", a.cmd);
    if (!is_evict && !is_migrate && a.to)
        return usage_error("--to applies to 'evict' and 'migrate' only (command '%s')", a.cmd);
    if (is_evict && a.to && kvtier_tier_parse(a.to) < KVTIER_TIER_HOST)
        return usage_error("--to wants host, ssd or drop, got '%s'", a.to);
    if (!is_migrate && (a.from || a.include_open || a.batch))
        return usage_error("--from, --include-open and --batch apply to 'migrate' only "
                           "(command '%s')",
                           a.cmd);
    uint64_t seq = 0;
    if (!strcmp(a.cmd, "cluster")) {
        kvtier_connect_opts co = {0};
        co.token = a.token;
        co.tenant = a.tenant;
        co.timeout_ms = a.timeout_ms;
        char **servers = NULL, err[300] = "";
        int n = ctl_cluster_servers((const char *const *)a.pos, (size_t)a.npos, &servers, err,
                                    sizeof err);
        if (n <= 0) {
            fprintf(stderr, "kvtierctl: %s\n", n < 0 ? "out of memory" : err);
            return n < 0 ? 1 : 2;
        }
        rc = ctl_cluster_report(stdout, servers, n, &co, a.json);
        ctl_cluster_free_list(servers, n);
        return rc;
    }
    if (is_map || is_evict) {
        if ((rc = need_seq(&a, &seq)))
            return rc;
    } else if (a.npos > 0) {
        return usage_error("unexpected argument '%s'", a.pos[0]);
    }

    static char token_buf[1024];
    if (a.token_file) {
        if (read_token_file(a.token_file, token_buf, sizeof token_buf) != 0)
            return 1;
        a.token = token_buf;
    }
    if (is_migrate)
        return cmd_migrate(&a);
    kvtier_connect_opts o = {0};
    o.address = a.server;
    o.token = a.token;
    o.tenant = a.tenant;
    o.timeout_ms = a.timeout_ms;
    kvtier_error e;
    kvtier_client *c = kvtier_connect(&o, &e);
    if (!c) {
        fprintf(stderr, "kvtierctl: %s\n", e.message);
        return e.code == KVTIER_INVALID_ARGUMENT ? 2 : 1;
    }
    if (!strcmp(a.cmd, "health"))
        rc = cmd_health(c, &a);
    else if (!strcmp(a.cmd, "stats"))
        rc = cmd_stats(c, &a);
    else if (!strcmp(a.cmd, "sequences"))
        rc = cmd_sequences(c, &a);
    else if (is_map)
        rc = cmd_map(c, &a, seq);
    else if (is_evict)
        rc = cmd_evict(c, &a, seq);
    else
        rc = cmd_drain(c, &a);
    kvtier_client_free(c);
    return rc;
}
