/* tier_breaker.c - skip a tier service that just timed out (see the header). */
#include "tier_breaker.h"

void tier_breaker_init(tier_breaker *b, int base_ms, int max_ms) {
    pthread_mutex_init(&b->mu, NULL);
    b->base_ms = base_ms > 0 ? base_ms : 1;
    b->max_ms = max_ms > b->base_ms ? max_ms : b->base_ms;
    b->open_until_ms = 0;
    b->backoff_ms = b->base_ms;
    b->skipped = b->trips = 0;
}

void tier_breaker_destroy(tier_breaker *b) {
    pthread_mutex_destroy(&b->mu);
}

int64_t tier_breaker_check(tier_breaker *b, int64_t now_ms) {
    pthread_mutex_lock(&b->mu);
    int64_t left = b->open_until_ms > now_ms ? b->open_until_ms - now_ms : 0;
    if (left)
        b->skipped++;
    pthread_mutex_unlock(&b->mu);
    return left;
}

void tier_breaker_record(tier_breaker *b, int64_t now_ms, int timed_out) {
    pthread_mutex_lock(&b->mu);
    if (timed_out) {
        b->open_until_ms = now_ms + b->backoff_ms;
        b->backoff_ms = b->backoff_ms * 2 > b->max_ms ? b->max_ms : b->backoff_ms * 2;
        b->trips++;
    } else {
        b->open_until_ms = 0;
        b->backoff_ms = b->base_ms;
    }
    pthread_mutex_unlock(&b->mu);
}
