/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <string.h>

#include "breaker.h"

#define BREAKER_DEFAULT_FAILURE_PERCENT 80
#define BREAKER_DEFAULT_MIN_ATTEMPTS 10
#define BREAKER_DEFAULT_WINDOW_MS (60 * 1000)
#define BREAKER_DEFAULT_BACKOFF_BASE_MS (5 * 1000)
#define BREAKER_DEFAULT_BACKOFF_MAX_MS (5 * 60 * 1000)

void crd_breaker_init(struct crd_breaker *breaker, const struct crd_breaker_options *options,
                      int64_t now_ms)
{
    memset(breaker, 0, sizeof(*breaker));
    if (options != NULL) {
        breaker->options = *options;
    }
    struct crd_breaker_options *o = &breaker->options;
    if (o->failure_percent == 0 || o->failure_percent > 100) {
        o->failure_percent = BREAKER_DEFAULT_FAILURE_PERCENT;
    }
    if (o->min_attempts == 0) {
        o->min_attempts = BREAKER_DEFAULT_MIN_ATTEMPTS;
    }
    if (o->window_ms < CRD_BREAKER_BUCKETS) {
        o->window_ms = BREAKER_DEFAULT_WINDOW_MS;
    }
    if (o->backoff_base_ms <= 0) {
        o->backoff_base_ms = BREAKER_DEFAULT_BACKOFF_BASE_MS;
    }
    if (o->backoff_max_ms <= 0) {
        o->backoff_max_ms = BREAKER_DEFAULT_BACKOFF_MAX_MS;
    }
    if (o->backoff_max_ms < o->backoff_base_ms) {
        o->backoff_max_ms = o->backoff_base_ms;
    }
    breaker->state = CRD_BREAKER_STATE_CLOSED;
    breaker->changed_at_ms = now_ms;
}

static int64_t bucket_width_ms(const struct crd_breaker *breaker)
{
    return breaker->options.window_ms / CRD_BREAKER_BUCKETS;
}

void crd_breaker_window(const struct crd_breaker *breaker, int64_t now_ms, unsigned *ret_attempts,
                        unsigned *ret_failures)
{
    unsigned attempts = 0;
    unsigned failures = 0;
    int64_t oldest_start = now_ms - breaker->options.window_ms;
    for (size_t i = 0; i < CRD_BREAKER_BUCKETS; i++) {
        const struct crd_breaker_bucket *bucket = &breaker->buckets[i];
        if (bucket->attempts > 0 && bucket->start_ms > oldest_start) {
            attempts += bucket->attempts;
            failures += bucket->failures;
        }
    }
    *ret_attempts = attempts;
    *ret_failures = failures;
}

static void count_outcome(struct crd_breaker *breaker, bool failed, int64_t now_ms)
{
    int64_t width = bucket_width_ms(breaker);
    int64_t slice = now_ms >= 0 ? now_ms / width : (now_ms - width + 1) / width;
    struct crd_breaker_bucket *bucket = &breaker->buckets[(uint64_t)slice % CRD_BREAKER_BUCKETS];
    if (bucket->start_ms != slice * width || bucket->attempts == 0) {
        *bucket = (struct crd_breaker_bucket){.start_ms = slice * width};
    }
    bucket->attempts++;
    if (failed) {
        bucket->failures++;
    }
}

/* Opens for period number failed_probes + 1: base doubled per failed probe, capped, jittered. */
static void open_breaker(struct crd_breaker *breaker, int64_t now_ms, uint32_t random_value)
{
    int64_t period = breaker->options.backoff_base_ms;
    for (unsigned i = 0; i < breaker->failed_probes && period < breaker->options.backoff_max_ms;
         i++) {
        period *= 2;
    }
    if (period > breaker->options.backoff_max_ms) {
        period = breaker->options.backoff_max_ms;
    }
    int64_t half = period / 2;
    breaker->period_ms = half + (int64_t)(random_value % (uint64_t)(half + 1));
    breaker->open_until_ms = now_ms + breaker->period_ms;
    breaker->state = CRD_BREAKER_STATE_OPEN;
    breaker->changed_at_ms = now_ms;
    breaker->probe_running = false;
}

bool crd_breaker_allow(struct crd_breaker *breaker, int64_t now_ms, bool *ret_probe,
                       int64_t *ret_wait_ms)
{
    if (breaker->state == CRD_BREAKER_STATE_OPEN) {
        if (now_ms < breaker->open_until_ms) {
            *ret_wait_ms = breaker->open_until_ms - now_ms;
            return false;
        }
        breaker->state = CRD_BREAKER_STATE_HALF_OPEN;
        breaker->changed_at_ms = now_ms;
        breaker->probe_running = false;
    }
    if (breaker->state == CRD_BREAKER_STATE_HALF_OPEN) {
        if (breaker->probe_running) {
            *ret_wait_ms = -1;
            return false;
        }
        breaker->probe_running = true;
        *ret_probe = true;
        return true;
    }
    *ret_probe = false;
    return true;
}

enum crd_breaker_event crd_breaker_record(struct crd_breaker *breaker, bool probe,
                                          enum crd_breaker_outcome outcome, int64_t now_ms,
                                          uint32_t random_value)
{
    if (breaker->state == CRD_BREAKER_STATE_HALF_OPEN && probe) {
        switch (outcome) {
        case CRD_BREAKER_ANSWERED:
            breaker->state = CRD_BREAKER_STATE_CLOSED;
            breaker->changed_at_ms = now_ms;
            breaker->probe_running = false;
            breaker->failed_probes = 0;
            memset(breaker->buckets, 0, sizeof(breaker->buckets));
            return CRD_BREAKER_EVENT_CLOSED;
        case CRD_BREAKER_FAILED:
            breaker->failed_probes++;
            open_breaker(breaker, now_ms, random_value);
            return CRD_BREAKER_EVENT_PROBE_FAILED;
        default:
            breaker->probe_running = false;
            return CRD_BREAKER_EVENT_NONE;
        }
    }
    if (breaker->state != CRD_BREAKER_STATE_CLOSED || outcome == CRD_BREAKER_ABANDONED) {
        return CRD_BREAKER_EVENT_NONE;
    }

    count_outcome(breaker, outcome == CRD_BREAKER_FAILED, now_ms);
    unsigned attempts = 0;
    unsigned failures = 0;
    crd_breaker_window(breaker, now_ms, &attempts, &failures);
    if (attempts < breaker->options.min_attempts ||
        (uint64_t)failures * 100 < (uint64_t)attempts * breaker->options.failure_percent) {
        return CRD_BREAKER_EVENT_NONE;
    }
    breaker->failed_probes = 0;
    breaker->outage_start_ms = now_ms;
    open_breaker(breaker, now_ms, random_value);
    return CRD_BREAKER_EVENT_OPENED;
}

const char *crd_breaker_state_name(enum crd_breaker_state state)
{
    switch (state) {
    case CRD_BREAKER_STATE_OPEN:
        return "open";
    case CRD_BREAKER_STATE_HALF_OPEN:
        return "half-open";
    default:
        return "closed";
    }
}
