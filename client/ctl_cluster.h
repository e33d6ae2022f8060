/* ctl_cluster.h - `kvtierctl cluster`: one line per tier shard (health, bytes
 * per tier, sequences) and the total, gathered from each shard directly. */
#ifndef KVTIER_CTL_CLUSTER_H
#define KVTIER_CTL_CLUSTER_H

#include <stddef.h>
#include <stdio.h>

#include "kvtier.h"

/* The shard addresses of a cluster: args is one readable file (an
 * ops/cluster.sh RUNDIR/cluster.env: its KVTIER_SHARDS="a b" line), or
 * addresses; none: $KVTIER_SHARDS. *out (malloc'd strings, free with
 * ctl_cluster_free_list). Returns the count, 0 with a message in err when
 * there is none, -1 on OOM. */
int ctl_cluster_servers(const char *const *args, size_t nargs, char ***out, char *err,
                        size_t errlen);

void ctl_cluster_free_list(char **v, int n);

/* Asks every shard (health, stats, sequences) with the connection options of
 * base (address replaced) and prints a table, or JSON when json. Returns 0
 * when every shard is SERVING, 1 otherwise. */
int ctl_cluster_report(FILE *out, char **servers, int n, const kvtier_connect_opts *base, int json);

#endif
