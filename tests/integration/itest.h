/* itest.h — harness of the kvtier integration tests: temp dirs, free ports,
 * real kvtierd processes (spawn, wait healthy, kill -9, SIGTERM, restart),
 * running kvtierctl and capturing its output, deterministic block payloads.
 *
 * Every process and directory made here is registered and removed at exit
 * (atexit), also when a test fails; children get SIGKILL if the test process
 * dies (PR_SET_PDEATHSIG). */
#ifndef KVTIER_ITEST_H
#define KVTIER_ITEST_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kvtier.h"

#define ITEST_MAX_ARGS 24

typedef struct itest_server {
    pid_t pid; /* 0 when not running */
    int port;
    char addr[64];                     /* "127.0.0.1:<port>" */
    char dir[512];                     /* data dir (RocksDB) */
    char log[600];                     /* stderr+stdout of kvtierd */
    const char *extra[ITEST_MAX_ARGS]; /* extra flags, borrowed (NULL-terminated) */
    const char *token;                 /* auth token the harness' own calls send (NULL = none) */
} itest_server;

/* itest_tmpdir: creates a fresh directory under $TMPDIR (or /tmp), registered
 * for removal at exit. Returns 0, -1 on error. */
int itest_tmpdir(char *out, size_t len);

/* itest_rmrf: removes a directory tree. Returns 0 or -1. */
int itest_rmrf(const char *dir);

/* itest_free_port: a TCP port on 127.0.0.1 that was free a moment ago. */
int itest_free_port(void);

/* itest_server_start: spawns kvtierd on a free loopback port with data dir
 * s->dir (made with itest_tmpdir when empty) and the flags in s->extra, then
 * waits (up to 20 s) until Health answers OK. Returns 0, -1 when it did not
 * come up (its log is printed). */
int itest_server_start(itest_server *s, const char *const *extra);

/* itest_server_restart: starts kvtierd again on the same data dir, port and
 * flags (after a kill). Returns 0 or -1. */
int itest_server_restart(itest_server *s);

/* itest_server_signal: sends sig and waits (up to timeout_ms) for the exit.
 * *status gets the waitpid status. Returns 0, -1 when it did not exit (then
 * it is killed with SIGKILL). */
int itest_server_signal(itest_server *s, int sig, int timeout_ms, int *status);

/* itest_server_stop: SIGKILL if running; idempotent. */
void itest_server_stop(itest_server *s);

/* itest_client: a libkvtier client for s (tenant may be NULL). Aborts the
 * test process with a message on failure (harness bug). */
kvtier_client *itest_client(const itest_server *s, const char *tenant);

/* itest_run: runs argv (argv[0] a path), captures stdout and stderr into new
 * NUL-terminated buffers (caller frees), waits. Returns the exit status (0..255),
 * or -1 when it could not run or died by a signal. */
int itest_run(const char *const *argv, char **out, char **err);

/* itest_payload: deterministic pseudo-random payload of len bytes for
 * (seq, layer, block, version). */
void itest_payload(void *buf, size_t len, uint64_t seq, uint32_t layer, uint32_t block,
                   uint32_t version);

/* Block helpers (itest_blocks.c): blocks of ITEST_BLOCK bytes (8 KV heads x
 * 128 dims x 16 tokens, bf16-sized), payloads from itest_payload version 0. */
#define ITEST_BLOCK (64 * 1024)

/* itest_open_seq: OpenSequence of `layers` layers of ITEST_BLOCK blocks;
 * asserts OK. */
void itest_open_seq(kvtier_client *c, uint64_t seq, uint32_t layers);

/* itest_put_range: puts blocks [b0, b1) of every layer in one PutBlocks
 * stream; asserts OK and every block acknowledged. */
void itest_put_range(kvtier_client *c, uint64_t seq, uint32_t layers, uint32_t b0, uint32_t b1);

/* itest_fetch_one: fetches block (l, b). Returns the status; *identical says
 * whether the payload was the expected one (only meaningful on OK). */
kvtier_code itest_fetch_one(kvtier_client *c, uint64_t seq, uint32_t l, uint32_t b, int *identical);

/* itest_now_ms: monotonic milliseconds. */
uint64_t itest_now_ms(void);

/* Paths of the binaries under test (from the build). */
const char *itest_kvtierd(void);
const char *itest_kvtierctl(void);

#endif
