/* stage_cmd.c - `kvtier-worker stage`: flags, model load, pipe_stage_run. */
#include "stage_cmd.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipe_stage.h"

#define STAGE_PROG "kvtier-worker stage"

static void stage_usage(FILE *f) {
    fprintf(f,
            "usage: kvtier-worker stage --model DIR --layers A-B --rank R --world-size N\n"
            "           (--pipe-listen ADDR --pipe-next ADDR | --transport nccl --pipe-coordinator "
            "ADDR)\n"
            "           [--threads N] [--tier embedded|ADDR --hot-budget BLOCKS\n"
            "           [--tier-data-dir DIR] [--tenant NAME] [--tau T]] [--quiet]\n"
            "\n"
            "One rank > 0 of a model split by layer ranges over processes. Rank 0 is\n"
            "`kvtier-worker run` with the same pipeline flags: it embeds, runs its layers\n"
            "and the generation loop; each stage runs its layers on the hidden states it\n"
            "receives from the previous rank and sends them to the next one (the last\n"
            "rank back to rank 0). A stage's KV cache holds only its layers; with --tier\n"
            "it tiers them (exact recall, its own tier sequence per generation). The\n"
            "stage exits 0 when rank 0 is done, 1 when the ring breaks.\n"
            "\n"
            "options:\n"
            "  --model DIR            the checkpoint (the same on every rank)\n"
            "%s"
            "  --threads N            compute threads (default: online CPUs)\n"
            "  --tier embedded|ADDR   tier this stage's layers: the tier library in-process\n"
            "                         or a kvtierd at HOST:PORT (default: all hot)\n"
            "  --tier-data-dir DIR    embedded tier: its RocksDB directory (required)\n"
            "  --hot-budget BLOCKS    hot KV blocks per layer with --tier (>= 6)\n"
            "  --tenant NAME          tenant of the stage's tier sequences (default)\n"
            "  --tau T                revival margin (default ln 1000)\n"
            "  --quiet                no line per sequence on stderr\n"
            "  --help                 this text\n"
            "\n"
            "exit codes: 0 done, 1 failure, 2 usage error\n",
            PIPE_CONF_USAGE);
}

int stage_cmd_main(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"threads", required_argument, 0, 't'},
                                         {"tier", required_argument, 0, 'T'},
                                         {"tier-data-dir", required_argument, 0, 'D'},
                                         {"hot-budget", required_argument, 0, 'b'},
                                         {"tenant", required_argument, 0, 'n'},
                                         {"tau", required_argument, 0, 'u'},
                                         {"quiet", no_argument, 0, 'q'},
                                         {"help", no_argument, 0, 'h'},
                                         {"layers", required_argument, 0, 'P'},
                                         {"rank", required_argument, 0, 'P'},
                                         {"world-size", required_argument, 0, 'P'},
                                         {"transport", required_argument, 0, 'P'},
                                         {"pipe-listen", required_argument, 0, 'P'},
                                         {"pipe-next", required_argument, 0, 'P'},
                                         {"pipe-coordinator", required_argument, 0, 'P'},
                                         {"device", required_argument, 0, 'P'},
                                         {"pipe-timeout-ms", required_argument, 0, 'P'},
                                         {0, 0, 0, 0}};
    pipe_stage_opts so;
    memset(&so, 0, sizeof so);
    pipe_conf_defaults(&so.conf);
    const char *model = NULL;
    int c, idx;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, &idx)) != -1) {
        char *end;
        switch (c) {
        case 'm':
            model = optarg;
            break;
        case 't':
            so.threads = (int)strtol(optarg, &end, 10);
            if (*end || so.threads < 1 || so.threads > 1024) {
                fprintf(stderr, STAGE_PROG ": --threads needs 1..1024 (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 'T':
            so.tier = optarg;
            break;
        case 'D':
            so.tier_data_dir = optarg;
            break;
        case 'b':
            so.hot_blocks = (int)strtol(optarg, &end, 10);
            if (*end || so.hot_blocks < 6) {
                fprintf(stderr,
                        STAGE_PROG ": --hot-budget needs a number of blocks >= 6 (got '%s')\n",
                        optarg);
                return 2;
            }
            break;
        case 'n':
            so.tenant = optarg;
            break;
        case 'u':
            so.tau = strtof(optarg, &end);
            if (*end || !(so.tau > 0)) {
                fprintf(stderr, STAGE_PROG ": --tau needs a number > 0 (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 'q':
            so.quiet = 1;
            break;
        case 'h':
            stage_usage(stdout);
            return 0;
        case 'P': {
            char flag[64];
            snprintf(flag, sizeof flag, "--%s", opts[idx].name);
            if (pipe_conf_set(&so.conf, STAGE_PROG, flag, optarg) < 0)
                return 2;
            break;
        }
        default:
            fprintf(stderr, STAGE_PROG ": unknown or incomplete option '%s' (see --help)\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, STAGE_PROG ": unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!model) {
        fprintf(stderr, STAGE_PROG ": --model DIR is required (see --help)\n");
        return 2;
    }
    if (so.tier && !so.hot_blocks) {
        fprintf(stderr, STAGE_PROG ": --tier needs --hot-budget BLOCKS\n");
        return 2;
    }
    if (!so.tier && so.hot_blocks) {
        fprintf(stderr, STAGE_PROG ": --hot-budget needs --tier (a stage never drops blocks)\n");
        return 2;
    }
    if (so.tier && !strcmp(so.tier, "embedded") && !so.tier_data_dir) {
        fprintf(stderr, STAGE_PROG ": --tier embedded needs --tier-data-dir DIR\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char err[1024];
    qwen3_model_t *m = NULL;
    if (qwen3_model_load(model, 0, &m, err, sizeof err) != 0) {
        fprintf(stderr, STAGE_PROG ": %s\n", err);
        return 1;
    }
    if (pipe_conf_check(&so.conf, m->cfg.n_layers, err, sizeof err) != 0) {
        fprintf(stderr, STAGE_PROG ": %s\n", err);
        qwen3_model_free(m);
        return 2;
    }
    so.model = m;
    int rc = pipe_stage_run(&so, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, STAGE_PROG ": %s\n", err);
    qwen3_model_free(m);
    return rc == 0 ? 0 : 1;
}
