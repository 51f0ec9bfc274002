/* SPDX-License-Identifier: MIT */
/*
 * A circuit breaker for Graph outages, as a pure state machine: the caller
 * passes the time (any monotonic clock in ms) and the random value for the
 * jitter, so tests drive it without sleeping.
 *
 * Closed: every fetch may start, and the outcomes of the last window_ms are
 * counted. When at least min_attempts fetches ended in that window and at
 * least failure_percent of them failed, the breaker opens.
 *
 * Open: no fetch may start until the back-off period ends. The first period
 * is backoff_base_ms, each failed probe doubles it up to backoff_max_ms, and
 * the period actually waited is drawn between half of it and all of it.
 * Outcomes of fetches that were already running when it opened are ignored.
 *
 * Half-open: one fetch, the probe, may start. Its success closes the breaker
 * and clears the window. Its failure opens the breaker again for a longer
 * period. A probe that ends without an outcome (cancelled) lets the next
 * fetch become the probe.
 *
 * Not thread-safe: the caller serializes every call on one breaker.
 */
#ifndef CRD_BREAKER_H
#define CRD_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

/* Buckets of the sliding window; the window slides by window_ms / CRD_BREAKER_BUCKETS. */
#define CRD_BREAKER_BUCKETS 60

enum crd_breaker_state {
    CRD_BREAKER_STATE_CLOSED,
    CRD_BREAKER_STATE_OPEN,
    CRD_BREAKER_STATE_HALF_OPEN,
};

/* Outcome of a fetch, as the breaker counts it. */
enum crd_breaker_outcome {
    CRD_BREAKER_ANSWERED,    /* a response from Graph: success, 404, 403, another 4xx */
    CRD_BREAKER_FAILED,      /* 5xx, 429 after retries, timeout or transport error */
    CRD_BREAKER_ABANDONED,   /* no outcome, such as a fetch cancelled by shutdown */
};

/* State change made by crd_breaker_record(). */
enum crd_breaker_event {
    CRD_BREAKER_EVENT_NONE,
    CRD_BREAKER_EVENT_OPENED,        /* closed to open: an outage starts */
    CRD_BREAKER_EVENT_PROBE_FAILED,  /* half-open to open, with a longer period */
    CRD_BREAKER_EVENT_CLOSED,        /* half-open to closed: the outage ended */
};

struct crd_breaker_options {
    unsigned failure_percent;    /* 1 to 100; 0: 80 */
    unsigned min_attempts;       /* 0: 10 */
    int64_t window_ms;           /* 0: 60 s */
    int64_t backoff_base_ms;     /* first open period; 0: 5 s */
    int64_t backoff_max_ms;      /* 0: 5 minutes; raised to backoff_base_ms when lower */
};

struct crd_breaker_bucket {
    int64_t start_ms;            /* start of the bucket's slice of time */
    unsigned attempts;
    unsigned failures;
};

struct crd_breaker {
    struct crd_breaker_options options;
    enum crd_breaker_state state;
    int64_t changed_at_ms;       /* time of the last state change */
    int64_t outage_start_ms;     /* when it last opened from closed */
    int64_t open_until_ms;       /* open: when the next probe may start */
    int64_t period_ms;           /* open: the period drawn for the current opening */
    unsigned failed_probes;      /* since it opened from closed */
    bool probe_running;          /* half-open: the probe was let through */
    struct crd_breaker_bucket buckets[CRD_BREAKER_BUCKETS];
};

/* Starts closed at now_ms with an empty window. options may be NULL for the defaults. */
void crd_breaker_init(struct crd_breaker *breaker, const struct crd_breaker_options *options,
                      int64_t now_ms);

/*
 * Decides whether a fetch may start at now_ms. An open breaker whose period
 * has ended becomes half-open here. Returns true when the fetch may start;
 * then *ret_probe is true for the half-open probe, whose outcome the
 * caller must pass to crd_breaker_record() with probe = true. Returns false
 * when it may not; then *ret_wait_ms is the time until the period ends, or
 * -1 while a probe runs (wait until its outcome is recorded).
 */
bool crd_breaker_allow(struct crd_breaker *breaker, int64_t now_ms, bool *ret_probe,
                       int64_t *ret_wait_ms);

/*
 * Records how a fetch that crd_breaker_allow() let through ended. random_value
 * draws the jitter of a new open period. Returns the state change it caused.
 */
enum crd_breaker_event crd_breaker_record(struct crd_breaker *breaker, bool probe,
                                          enum crd_breaker_outcome outcome, int64_t now_ms,
                                          uint32_t random_value);

/* Counts the attempts and failures of the window that ends at now_ms. */
void crd_breaker_window(const struct crd_breaker *breaker, int64_t now_ms, unsigned *ret_attempts,
                        unsigned *ret_failures);

/* "closed", "open" or "half-open". */
const char *crd_breaker_state_name(enum crd_breaker_state state);

#endif
