/* SPDX-License-Identifier: MIT */
/*
 * The fetch worker pool: each worker claims a due job from the store,
 * fetches the complete call record from Graph, and stores a new version
 * together with its outbox rows in one transaction. A failed fetch
 * reschedules the job, so a job is never lost, whatever a worker meets.
 *
 * Workers wait on a condition variable until the next job is due or
 * crd_fetcher_wake() announces new jobs. The fetcher logs what it handles
 * (retries, give-ups, stored versions) itself, as the place where those
 * errors end.
 */
#ifndef CRD_FETCHER_H
#define CRD_FETCHER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "breaker.h"
#include "error.h"
#include "graph.h"
#include "store.h"

struct crd_fetcher;

struct crd_fetcher_options {
    struct crd_store *store;                 /* borrowed */
    struct crd_graph *graph;                 /* borrowed */
    /*
     * The tenant whose jobs these workers claim (borrowed), or NULL for
     * every tenant's. With several tenants each has its own fetcher, Graph
     * client and breaker, so one tenant's outage does not stop the others.
     */
    const char *tenant_id;
    unsigned workers;
    const char *const *sink_names;           /* borrowed; one outbox row per sink and version */
    size_t n_sinks;
    /* Called after a new version was stored, to wake the sink dispatchers. May be NULL. */
    void (*on_stored)(void *context);
    void *on_stored_context;
    /*
     * How long after the first notification a 404 is still "not available
     * yet". Graph documents up to 150 minutes from call end to the first
     * version. 0: 4 hours.
     */
    int64_t not_found_horizon_ms;
    int64_t retry_base_ms;                   /* first retry after a transient failure; 0: 5 s */
    int64_t retry_max_ms;                    /* cap of the retry backoff; 0: 10 minutes */
    /*
     * Fetch attempts of a job, 404s included, after which a failure other
     * than a 404 moves it to the dead letters; 0: unlimited.
     */
    unsigned max_attempts;
    /*
     * The circuit breaker for Graph outages (see breaker.h) opens when at
     * least outage_min_attempts fetches ended in a sliding minute and at
     * least outage_failure_percent of them failed. Failures are a 5xx, a 429
     * that outlasted the retries, a timeout or a transport error. The open
     * breaker starts no fetch for retry_base_ms, doubled per failed probe up
     * to outage_backoff_max_ms. 0 selects the defaults of breaker.h.
     */
    unsigned outage_failure_percent;
    unsigned outage_min_attempts;
    int64_t outage_backoff_max_ms;
};

/* MESSAGE_ID of the log entry for a job moved to the dead letters, for `journalctl MESSAGE_ID=`. */
#define CRD_FETCHER_MESSAGE_ID_DEAD_LETTER "9c1f3e0a7b2d4c58a6e4f2b1d0c3a957"

/* MESSAGE_IDs of the log entries for the start and the end of a Graph outage. */
#define CRD_FETCHER_MESSAGE_ID_GRAPH_OUTAGE "1694f692cd8548ee87b05c844c67c707"
#define CRD_FETCHER_MESSAGE_ID_GRAPH_RECOVERED "7b0bcddb0e9248afb30658818639594a"

struct crd_fetcher_counters {
    atomic_uint_fast64_t fetched;            /* records fetched completely */
    atomic_uint_fast64_t stored;             /* new versions stored */
    atomic_uint_fast64_t duplicates;         /* versions equal to or older than the stored one */
    atomic_uint_fast64_t not_found;          /* 404 responses, each rescheduled or given up */
    atomic_uint_fast64_t retried;            /* jobs rescheduled after a failure */
    atomic_uint_fast64_t failed;             /* jobs given up */
};

int crd_fetcher_start(const struct crd_fetcher_options *options, struct crd_fetcher **ret_fetcher,
                      struct crd_error *err);

/* Announces new due jobs; thread-safe, cheap, callable from the listener's threads. */
void crd_fetcher_wake(struct crd_fetcher *fetcher);

/*
 * Sets or clears backpressure: while it is set, no worker claims a job, so
 * jobs stay pending in the store. Clearing it wakes the workers. Thread-safe.
 */
void crd_fetcher_set_backpressure(struct crd_fetcher *fetcher, bool on);

/* The circuit breaker's state, for /healthz. */
struct crd_fetcher_graph_status {
    enum crd_breaker_state state;
    int64_t since_ms;                        /* wall clock, ms since the epoch */
};

/* Reads the circuit breaker's state. Thread-safe. */
void crd_fetcher_graph_status(struct crd_fetcher *fetcher,
                              struct crd_fetcher_graph_status *ret_status);

const struct crd_fetcher_counters *crd_fetcher_counters(const struct crd_fetcher *fetcher);

/*
 * Stops the workers: fetches in flight are cancelled and their jobs stay
 * pending in the store for the next start. Joins the threads and frees.
 * Accepts NULL.
 */
void crd_fetcher_stop(struct crd_fetcher *fetcher);

/*
 * Returns the delay before retry number `attempt` (1 for the first retry).
 * It doubles from base_ms up to max_ms, and its random half comes from
 * random_value, which the caller supplies so that tests are repeatable.
 */
int64_t crd_fetcher_backoff_ms(unsigned attempt, int64_t base_ms, int64_t max_ms,
                               uint32_t random_value);

#endif
