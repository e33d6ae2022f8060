/* main.c - kvtier-worker: subcommand dispatch. */
#include <stdio.h>
#include <string.h>

#include "run_cmd.h"
#include "trace_cmd.h"
#ifdef KVTIER_HAVE_TOKENIZER
#include "tokenize_cmd.h"
#endif
#ifdef KVTIER_HAVE_SERVE
#include "serve_cmd.h"
#endif
#ifdef KVTIER_HAVE_PIPELINE
#include "stage_cmd.h"
#endif

static void main_usage(FILE *f) {
    fprintf(f, "usage: kvtier-worker <command> [options]\n"
               "\n"
               "Qwen3 inference worker of kvtier (CPU engine, paged KV cache).\n"
               "\n"
               "commands:\n"
               "  run        generate text from a prompt with a local checkpoint\n"
               "  trace      attention statistics on a text: active sets, entropy, revivals\n"
               "  tokenize   tokenize stdin lines with a tokenizer.json (JSON lines out)\n"
               "  serve      serve Inference.Generate over gRPC with a tiered KV cache\n"
               "  stage      one rank > 0 of a model split by layer ranges over processes\n"
               "\n"
               "Run 'kvtier-worker <command> --help' for the options of a command.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        main_usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        main_usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "run"))
        return run_cmd_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "trace"))
        return trace_cmd_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize")) {
#ifdef KVTIER_HAVE_TOKENIZER
        return tokenize_cmd_main(argc - 1, argv + 1);
#else
        fprintf(stderr, "kvtier-worker: this build has no tokenizer (tokenize is unavailable)\n");
        return 2;
#endif
    }
#ifdef KVTIER_HAVE_PIPELINE
    if (!strcmp(cmd, "stage"))
        return stage_cmd_main(argc - 1, argv + 1);
#endif
#ifdef KVTIER_HAVE_SERVE
    if (!strcmp(cmd, "serve"))
        return serve_cmd_main(argc - 1, argv + 1);
#endif
    fprintf(stderr, "kvtier-worker: unknown command '%s'\n", cmd);
    main_usage(stderr);
    return 2;
}
