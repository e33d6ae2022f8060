/* svc_opts.h - kvtierd command line (pure parsing, no I/O besides usage text). */
#ifndef KVTIER_SVC_OPTS_H
#define KVTIER_SVC_OPTS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tier.h"

/* Largest --max-streams / --max-streams-per-client: 32 of the RPC layer's 256
 * handler threads (RPC_MAX_THREADS) stay for unary calls. */
#define KVTIERD_MAX_STREAMS_CAP 224

typedef struct kvtierd_opts {
    const char *listen;              /* gRPC address (127.0.0.1:7070); port 0 = any free port */
    const char *data_dir;            /* RocksDB directory (./kvtier-data) */
    uint64_t host_budget;            /* bytes (512 MiB) */
    uint64_t ssd_budget;             /* bytes (20 GiB) */
    int write_policy;                /* tier_write_policy (through) */
    int fsync;                       /* fsync every write (0) */
    uint32_t max_block;              /* largest block payload accepted (1 MiB) */
    const char *metrics_listen;      /* HTTP address of /metrics, NULL = off */
    policy_params params;            /* service-wide policy defaults */
    size_t max_message;              /* gRPC max message bytes (16 MiB) */
    int threads;                     /* pre-started handler threads (4) */
    const char *auth_token;          /* legacy: one operator token, NULL = none */
    int auth_token_argv;             /* 1 when auth_token came from the command line */
    const char *auth_tokens_file;    /* --auth-tokens: TOKEN TENANT ROLE lines, NULL = none */
    const char *tls_cert, *tls_key;  /* PEM files: serve over TLS (NULL = plaintext) */
    const char *tls_client_ca;       /* PEM: mutual TLS, clients need a certificate it signed */
    int grace_ms;                    /* shutdown grace for in-flight calls (10000) */
    uint64_t max_seq_blocks;         /* index entries per sequence (2Mi) */
    uint32_t max_fetch_refs;         /* block refs per FetchRequest (16384) */
    uint64_t max_staged;             /* bytes staged by all open PutBlocks streams (256 MiB) */
    uint32_t tenant_max_seqs;        /* sequences per tenant, 0 = unlimited (10000) */
    uint64_t tenant_max_bytes;       /* stored payload bytes per tenant, 0 = unlimited (0) */
    uint32_t max_streams;            /* open streams, all clients; 0 = no cap (192) */
    uint32_t max_streams_per_client; /* open streams per client connection; 0 = no cap (128) */
    uint64_t disk_reserve;           /* bytes kept free on the data dir's filesystem (256 MiB) */
    uint32_t stream_idle_s;          /* idle stream ended after this many s; 0 = never (120) */
    int help, version;
} kvtierd_opts;

/* kvtierd_opts_parse: fills *o from argv (defaults first). The environment
 * variable KVTIERD_AUTH_TOKEN sets the token when --auth-token is absent;
 * --auth-tokens with either is an error.
 * Returns 0, or -1 with a message in err naming the flag and the problem.
 * Strings in *o are borrowed from argv / the environment. */
int kvtierd_opts_parse(int argc, char **argv, kvtierd_opts *o, char *err, size_t errlen);

/* kvtierd_usage: prints the --help text. */
void kvtierd_usage(FILE *f);

#endif
