/* ctl_migrate.h - `kvtierctl migrate`: moves the stored blocks of a tier
 * shard's sequences to another kvtierd (normally the load balancer's tier
 * port, which routes each sequence to its new owner), so that removing the
 * shard loses nothing.
 *
 * Per sequence listed on the source (ListSequences, one tenant or all):
 *   1. skip it when it is open (a worker is generating), unless include_open;
 *   2. refuse when the destination routes the sequence back to the source
 *      (a probe sequence with the same id, in tenant CTL_MIGRATE_PROBE_TENANT,
 *      opened on the source and looked up through the destination);
 *   3. OpenSequence on the destination with the source's shape, retained;
 *   4. GetTierMap on the source: the HOST and SSD blocks; FetchBlocks them in
 *      batches, PutBlocks each batch to the destination (target SSD, crc32c
 *      and token count carried) and check that every block was acknowledged;
 *   5. GetTierMap on the destination: every moved block stored there;
 *   6. a retained source sequence is closed retained on the destination (an
 *      open one stays open there); CloseSequence on the source, not retained.
 * A failure anywhere in 2-5 leaves the source sequence as it was (the
 * destination may hold a partial copy: a rerun overwrites it). */
#ifndef KVTIER_CTL_MIGRATE_H
#define KVTIER_CTL_MIGRATE_H

#include <stdint.h>
#include <stdio.h>

#include "kvtier.h"

/* The tenant of the routing probe (step 2); never holds data for long. */
#define CTL_MIGRATE_PROBE_TENANT "kvtier-migrate-probe"

typedef struct ctl_migrate_opts {
    const char *from, *to;    /* source shard, destination (addresses) */
    const char *tenant;       /* only this tenant's sequences; NULL/"" = all */
    kvtier_connect_opts base; /* token, timeouts, TLS (address and tenant are set per call) */
    uint32_t batch;           /* blocks per FetchBlocks / PutBlocks call; 0 = 256; must be
                                 <= the source's --max-fetch-refs */
    uint64_t batch_bytes;     /* payload bytes per batch at most (0 = 64 MiB; >= 1 block) */
    int include_open;         /* also move open sequences (see the README's caveats) */
    int json;                 /* summary as JSON on out, progress on log */
} ctl_migrate_opts;

/* ctl_migrate_run: runs the migration described by *o; prints one progress
 * line per sequence (to out, or to log when o->json) and a summary (to out:
 * text, or JSON {"from","to","sequences","moved","skipped_open","failed",
 * "blocks","bytes","seconds","failures":[{"tenant","sequence_id","error"}]}).
 * Returns 0 when every listed sequence was moved (the source holds none of
 * them any more), 1 when one failed or was skipped, or the listing failed. */
int ctl_migrate_run(FILE *out, FILE *log, const ctl_migrate_opts *o);

#endif
