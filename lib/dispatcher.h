/* SPDX-License-Identifier: MIT */
/*
 * The sink dispatcher: one thread per sink instance, named "sink-NAME", that
 * moves the sink's due outbox rows into the sink. Each row is claimed from
 * the store, wrapped in its JSON Lines envelope, handed to the sink's
 * deliver(), and then removed (OK), rescheduled with exponential backoff and
 * full jitter (RETRY), or moved to the dead letters (FATAL). A RETRY also
 * moves the row there once [sink NAME] max_attempts is used up. Versions of one call reach the sink
 * in ascending order, because the store offers no version while an older one
 * is waiting for the same sink. A sink that fails does not hold up the others.
 *
 * While nothing is due, the thread waits on a condition variable until the
 * next due time, crd_dispatcher_wake(), crd_dispatcher_reopen() or
 * crd_dispatcher_stop(). The thread blocks all signals, so they go to the
 * daemon's main thread, and a sink writing to a closed pipe gets EPIPE rather
 * than SIGPIPE.
 *
 * Logging: unlike the rest of lib/, the dispatcher logs at info, warning and
 * error level, because delivery errors end here and no caller receives them:
 * each retry at warning (rate-limited), each dead-lettered delivery at error
 * with CRD_DISPATCHER_MESSAGE_ID_DEAD_LETTER, a delivery that succeeds after
 * retries at info, and store failures at error (rate-limited).
 */
#ifndef CRD_DISPATCHER_H
#define CRD_DISPATCHER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf.h"
#include "error.h"
#include "sink.h"
#include "store.h"

/* MESSAGE_ID of the log entry for a dead-lettered delivery, for `journalctl MESSAGE_ID=`. */
#define CRD_DISPATCHER_MESSAGE_ID_DEAD_LETTER "2015811b222b41efb79b6dc0309afb6e"

struct crd_dispatcher;

struct crd_dispatcher_options {
    int64_t backoff_base_ms;          /* maximum delay of the first retry; 0: 1 s */
    int64_t backoff_max_ms;           /* maximum delay of any retry; 0: 5 minutes */
    /*
     * Called on the dispatcher thread after each delivery attempt has been
     * recorded in the store (removed, rescheduled or dead-lettered), with the
     * sink's result. For metrics and tests; may be NULL.
     */
    void (*after_delivery)(void *context, enum crd_sink_result result);
    void *after_delivery_context;
    /*
     * Called on the dispatcher thread when nothing is due and it is about to
     * wait, with the dispatcher's lock held: a wake, reopen or stop request
     * made after this call returned finds the thread waiting. It must not
     * call crd_dispatcher_* functions. For status and tests; may be NULL.
     */
    void (*on_idle)(void *context);
    void *on_idle_context;
    /*
     * Called on the dispatcher thread when the sink's backlog reaches one of
     * [sink NAME] max_backlog and max_backlog_age (over_bound true), and when
     * it is under both again (false). May be NULL.
     */
    void (*on_backlog)(void *context, bool over_bound);
    void *on_backlog_context;
};

/*
 * MESSAGE_IDs of the log entries for a backlog at its bound (repeated every
 * few minutes while it lasts) and for its end.
 */
#define CRD_DISPATCHER_MESSAGE_ID_BACKLOG "e69a194af8894a0580131e6e3678e191"
#define CRD_DISPATCHER_MESSAGE_ID_BACKLOG_RECOVERED "a316e4f763514698897afa8b51fe44bc"

/* The sink's backlog as last measured. */
struct crd_dispatcher_backlog {
    int64_t rows;                     /* outbox rows waiting for the sink */
    int64_t oldest_created_at_ms;     /* wall clock; 0 when no row waits */
    bool over_bound;
};

struct crd_dispatcher_counters {
    atomic_uint_fast64_t delivered;   /* deliveries the sink confirmed */
    atomic_uint_fast64_t retried;     /* deliveries rescheduled after RETRY */
    atomic_uint_fast64_t failed;      /* deliveries moved to the dead letters */
};

/*
 * Creates the sink instance with descriptor->create(config) and starts its
 * thread. config is read during this call only. descriptor and store are
 * borrowed and must outlive the dispatcher. options may be NULL for the
 * defaults. On success the caller owns *ret_dispatcher and ends it with
 * crd_dispatcher_stop(). Returns 0, -EINVAL for an invalid argument or a
 * descriptor of another ABI version, the error of create(), or -ENOMEM and
 * -EAGAIN when memory or threads run out.
 */
int crd_dispatcher_start(const struct crd_config_sink *config,
                         const struct crd_sink_descriptor *descriptor, struct crd_store *store,
                         const struct crd_dispatcher_options *options,
                         struct crd_dispatcher **ret_dispatcher, struct crd_error *err);

/* Announces new outbox rows, as the fetcher does after storing a version. Thread-safe. */
void crd_dispatcher_wake(struct crd_dispatcher *dispatcher);

/*
 * Asks the thread to call the sink's reopen() before its next delivery, as on
 * SIGHUP after logrotate. The thread does so at once, also while idle.
 * Thread-safe.
 */
void crd_dispatcher_reopen(struct crd_dispatcher *dispatcher);

/*
 * Reads the backlog as the dispatcher thread last measured it, at most about
 * a second ago while it delivers, and at most a minute ago while it waits.
 * Thread-safe.
 */
void crd_dispatcher_get_backlog(struct crd_dispatcher *dispatcher,
                                struct crd_dispatcher_backlog *ret_backlog);

/* The sink's name, borrowed for the dispatcher's lifetime. */
const char *crd_dispatcher_name(const struct crd_dispatcher *dispatcher);

/* The counters, for reading with atomic_load() from any thread while the dispatcher runs. */
const struct crd_dispatcher_counters *crd_dispatcher_counters(
    const struct crd_dispatcher *dispatcher);

/*
 * Lets the delivery in progress, if any, finish and be recorded, stops the
 * thread, destroys the sink instance and frees the dispatcher. Rows still
 * waiting stay in the outbox for the next start. Accepts NULL.
 */
void crd_dispatcher_stop(struct crd_dispatcher *dispatcher);

/*
 * The delay before retry number `attempt` (1 for the first): a value drawn
 * from random_value between 0 and min(max_ms, base_ms * 2^(attempt - 1)),
 * which is exponential backoff with full jitter.
 */
int64_t crd_dispatcher_backoff_ms(unsigned attempt, int64_t base_ms, int64_t max_ms,
                                  uint64_t random_value);

#endif
