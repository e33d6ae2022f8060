/* example_admin.c — a small program using libkvtier: connect to kvtierd,
 * check health, print per-tier statistics and the sequences it holds.
 *
 *   example_admin [ADDR]        (default $KVTIER_SERVER, else 127.0.0.1:7070)
 *
 * Build: link the `kvtier` library (see client/CMakeLists.txt). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvtier.h"

int main(int argc, char **argv) {
    if (argc > 2 || (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))) {
        printf("usage: example_admin [ADDR]\n"
               "Prints health, tier statistics and sequences of the kvtierd at ADDR\n"
               "(default $KVTIER_SERVER, else %s).\n",
               KVTIER_DEFAULT_ADDRESS);
        return argc > 2 ? 2 : 0;
    }
    kvtier_connect_opts opts = {0};
    opts.address = argc == 2 ? argv[1] : NULL;
    opts.token = getenv("KVTIER_TOKEN"); /* NULL = none */
    kvtier_error err;
    kvtier_client *c = kvtier_connect(&opts, &err);
    if (!c) {
        fprintf(stderr, "example_admin: %s\n", err.message);
        return 1;
    }

    kvtier_health h;
    if (kvtier_health_check(c, &h, &err) != KVTIER_OK) {
        fprintf(stderr, "example_admin: %s: %s: %s\n", kvtier_client_address(c),
                kvtier_code_name(err.code), err.message);
        kvtier_client_free(c);
        return 1;
    }
    printf("%s: %s (version %s, up %" PRIu64 " s)\n", kvtier_client_address(c), h.status, h.version,
           h.uptime_s);

    kvtier_stats s;
    if (kvtier_stats_get(c, &s, &err) == KVTIER_OK) {
        for (int t = KVTIER_TIER_HOT; t < KVTIER_NTIERS; t++)
            printf("  %-8s %8" PRIu64 " blocks %12" PRIu64 " bytes\n", kvtier_tier_name(t),
                   s.tier[t].blocks, s.tier[t].bytes);
    }

    kvtier_seq_info *seqs = NULL;
    size_t n = 0;
    if (kvtier_list_sequences(c, NULL, &seqs, &n, &err) == KVTIER_OK) {
        printf("%zu sequence(s)\n", n);
        for (size_t i = 0; i < n; i++)
            printf("  %s/%" PRIu64 ": %u layers, %" PRIu64 " on SSD\n", seqs[i].tenant,
                   seqs[i].sequence_id, seqs[i].layers, seqs[i].blocks[KVTIER_TIER_SSD]);
        kvtier_free(seqs);
    }
    kvtier_client_free(c);
    return 0;
}
