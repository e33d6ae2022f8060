/* tier_breaker.h - when to stop calling a tier service that just timed out.
 *
 * A worker whose kvtierd stalls (SIGSTOP, a full disk, a network partition)
 * must not wait a whole deadline on every call: after a call times out,
 * calls are skipped (they fail at once, the
 * generation goes on degraded with what is hot) for a backoff that starts at
 * base_ms and doubles with each failed probe up to max_ms; the first call
 * after the window probes, and a success closes the breaker. Thread-safe;
 * time comes from the caller (tests drive it). */
#ifndef KVTIER_TIER_BREAKER_H
#define KVTIER_TIER_BREAKER_H

#include <pthread.h>
#include <stdint.h>

typedef struct {
    pthread_mutex_t mu;
    int64_t open_until_ms; /* calls before this are skipped */
    int64_t backoff_ms;    /* the next window's length */
    int base_ms, max_ms;
    uint64_t skipped, trips;
} tier_breaker;

/* Closed breaker with a first window of base_ms (>= 1) growing to max_ms. */
void tier_breaker_init(tier_breaker *b, int base_ms, int max_ms);

void tier_breaker_destroy(tier_breaker *b);

/* 0 when a call may go out at now_ms, else the milliseconds left of the skip
 * window (the call is counted as skipped). */
int64_t tier_breaker_check(tier_breaker *b, int64_t now_ms);

/* The outcome of a call that went out: timed_out 1 (its deadline passed)
 * opens the breaker for the current backoff and doubles it;
 * 0 (any answer, even an error) closes it and resets the backoff. */
void tier_breaker_record(tier_breaker *b, int64_t now_ms, int timed_out);

#endif
