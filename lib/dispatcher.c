/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "dispatcher.h"
#include "log.h"
#include "util.h"

#define DISPATCHER_DEFAULT_BACKOFF_BASE_MS 1000
#define DISPATCHER_DEFAULT_BACKOFF_MAX_MS (5 * 60 * 1000)

/* Maximum sink name length, because the outbox copies the name into struct crd_delivery.sink. */
#define DISPATCHER_SINK_NAME_MAX (sizeof(((struct crd_delivery *)NULL)->sink) - 1)

/* Pause after the store failed, before the thread claims again. */
#define DISPATCHER_STORE_ERROR_PAUSE_MS 1000

/*
 * Maximum wait while a row is scheduled for later or none is waiting. Due
 * times are wall-clock times, and the wait runs on the monotonic clock, so a
 * step of the wall clock is noticed within this, and so are rows that
 * callrecctl retry put back into the outbox.
 */
#define DISPATCHER_MAX_WAIT_MS (60 * 1000)

/*
 * The backlog is measured at most this often, and this often while it is
 * over a bound, so that its end is noticed soon.
 */
#define DISPATCHER_BACKLOG_CHECK_MS 1000

/* Minimum time between two error messages about the same backlog over its bound. */
#define DISPATCHER_BACKLOG_LOG_INTERVAL_MS (5 * 60 * 1000)

/* Retry warnings and store errors: at most a burst of each per interval and sink. */
#define DISPATCHER_LOG_INTERVAL_MS (60 * 1000)
#define DISPATCHER_LOG_BURST 10

struct crd_dispatcher {
    char *name;                                /* the [sink NAME] */
    const struct crd_sink_descriptor *descriptor;
    void *context;                             /* the sink instance */
    struct crd_store *store;
    struct crd_dispatcher_options options;
    unsigned max_attempts;                     /* [sink NAME] max_attempts; 0: unlimited */
    int64_t max_backlog;                       /* [sink NAME] max_backlog; 0: no bound */
    int64_t max_backlog_age_ms;                /* [sink NAME] max_backlog_age; 0: no bound */
    int64_t backlog_checked_ms;                /* monotonic; 0: never; dispatcher thread only */
    int64_t backlog_logged_ms;                 /* monotonic; dispatcher thread only */
    struct crd_dispatcher_counters counters;
    struct crd_ratelimit retry_log;
    struct crd_ratelimit store_error_log;

    pthread_t thread;
    bool thread_started;
    bool sync_initialized;                     /* lock and changed exist */

    pthread_mutex_t lock;                      /* protects the three flags and backlog */
    pthread_cond_t changed;                    /* signalled when a flag is set */
    bool stopping;
    bool wake_pending;
    bool reopen_pending;
    struct crd_dispatcher_backlog backlog;     /* written by the dispatcher thread */
};

int64_t crd_dispatcher_backoff_ms(unsigned attempt, int64_t base_ms, int64_t max_ms,
                                  uint64_t random_value)
{
    if (base_ms <= 0 || max_ms <= 0) {
        return 0;
    }
    int64_t cap = base_ms < max_ms ? base_ms : max_ms;
    for (unsigned i = 1; i < attempt && cap < max_ms; i++) {
        cap = cap > max_ms / 2 ? max_ms : cap * 2;
    }
    return (int64_t)(random_value % ((uint64_t)cap + 1));
}

/* A random value for the jitter. Retries are rare enough for one system call each. */
static uint64_t dispatcher_random(void)
{
    uint64_t value = 0;
    if (getrandom(&value, sizeof(value), GRND_NONBLOCK) != (ssize_t)sizeof(value)) {
        value = (uint64_t)crd_time_monotonic_ms() * 0x9e3779b97f4a7c15u;
    }
    return value;
}

static void dispatcher_signal(struct crd_dispatcher *dispatcher, bool *flag)
{
    pthread_mutex_lock(&dispatcher->lock);
    *flag = true;
    pthread_cond_signal(&dispatcher->changed);
    pthread_mutex_unlock(&dispatcher->lock);
}

void crd_dispatcher_wake(struct crd_dispatcher *dispatcher)
{
    if (dispatcher != NULL) {
        dispatcher_signal(dispatcher, &dispatcher->wake_pending);
    }
}

void crd_dispatcher_reopen(struct crd_dispatcher *dispatcher)
{
    if (dispatcher != NULL) {
        dispatcher_signal(dispatcher, &dispatcher->reopen_pending);
    }
}

const struct crd_dispatcher_counters *crd_dispatcher_counters(
    const struct crd_dispatcher *dispatcher)
{
    return &dispatcher->counters;
}

/* Waits until a flag is set or delay_ms has passed. A negative delay waits for a flag only. */
static void dispatcher_wait(struct crd_dispatcher *dispatcher, int64_t delay_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    if (delay_ms >= 0) {
        until.tv_sec += (time_t)(delay_ms / 1000);
        until.tv_nsec += (long)(delay_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec += 1;
            until.tv_nsec -= 1000000000L;
        }
    }

    pthread_mutex_lock(&dispatcher->lock);
    bool idle = !dispatcher->stopping && !dispatcher->wake_pending && !dispatcher->reopen_pending;
    if (idle && dispatcher->options.on_idle != NULL) {
        dispatcher->options.on_idle(dispatcher->options.on_idle_context);
    }
    while (!dispatcher->stopping && !dispatcher->wake_pending && !dispatcher->reopen_pending) {
        if (delay_ms < 0) {
            pthread_cond_wait(&dispatcher->changed, &dispatcher->lock);
        } else if (pthread_cond_timedwait(&dispatcher->changed, &dispatcher->lock, &until) ==
                   ETIMEDOUT) {
            break;
        }
    }
    pthread_mutex_unlock(&dispatcher->lock);
}

/* "" or the number of messages a rate limit dropped, for the end of the next message. */
static const char *dispatcher_suppressed_note(unsigned suppressed, char *buf, size_t size)
{
    if (suppressed == 0) {
        return "";
    }
    snprintf(buf, size, " (%u similar messages were suppressed)", suppressed);
    return buf;
}

static void dispatcher_log_store_error(struct crd_dispatcher *dispatcher,
                                       const struct crd_log_ids *ids, const char *what,
                                       const struct crd_error *err)
{
    unsigned suppressed = 0;
    char note[64];
    if (crd_ratelimit_allow(&dispatcher->store_error_log, &suppressed)) {
        crd_log_err(ids, "sink '%s': %s: %s%s", dispatcher->name, what, err->message,
                    dispatcher_suppressed_note(suppressed, note, sizeof(note)));
    }
}

/* Calls the sink's reopen() when crd_dispatcher_reopen() asked for it since the last call. */
static void dispatcher_reopen_if_requested(struct crd_dispatcher *dispatcher)
{
    pthread_mutex_lock(&dispatcher->lock);
    bool requested = dispatcher->reopen_pending;
    dispatcher->reopen_pending = false;
    pthread_mutex_unlock(&dispatcher->lock);

    if (!requested || dispatcher->descriptor->reopen == NULL) {
        return;
    }
    struct crd_error err = {0};
    struct crd_log_ids ids = {.sink = dispatcher->name};
    if (dispatcher->descriptor->reopen(dispatcher->context, &err) < 0) {
        crd_log_err(&ids, "sink '%s': reopening failed: %s; deliveries are retried meanwhile",
                    dispatcher->name, err.message);
        return;
    }
    crd_log_info(&ids, "sink '%s': reopened", dispatcher->name);
}

/* Builds the envelope and calls the sink. err explains RETRY and FATAL. */
static enum crd_sink_result dispatcher_call_sink(struct crd_dispatcher *dispatcher,
                                                 const struct crd_delivery *delivery,
                                                 struct crd_error *err)
{
    char *line = NULL;
    size_t line_len = 0;
    int r = crd_sink_format_envelope(delivery->tenant_id, delivery->call_id, delivery->version,
                                     delivery->first_notified_at_ms, delivery->fetched_at_ms,
                                     delivery->record_json, delivery->record_json_len, &line,
                                     &line_len, err);
    if (r < 0) {
        /* A stored record that is not a JSON object will not become one. */
        return r == -ENOMEM ? CRD_SINK_RETRY : CRD_SINK_FATAL;
    }

    char key[2 * CRD_GUID_LEN + 32];
    snprintf(key, sizeof(key), "%s/%s/%lld", delivery->tenant_id, delivery->call_id,
             (long long)delivery->version);
    struct crd_sink_delivery sink_delivery = {
        .tenant_id = delivery->tenant_id,
        .call_id = delivery->call_id,
        .version = delivery->version,
        .idempotency_key = key,
        .line = line,
        .line_len = line_len,
        .attempt = delivery->attempts + 1,
    };
    /* Checked here too, so that a reopen requested before the row was claimed comes first. */
    dispatcher_reopen_if_requested(dispatcher);
    enum crd_sink_result result = dispatcher->descriptor->deliver(dispatcher->context,
                                                                  &sink_delivery, err);
    free(line);

    if (result != CRD_SINK_OK && result != CRD_SINK_RETRY && result != CRD_SINK_FATAL) {
        crd_error_set(err, -EPROTO, "sink returned the unknown result %d", (int)result);
        return CRD_SINK_RETRY;
    }
    if (result != CRD_SINK_OK && err->message[0] == '\0') {
        crd_error_set(err, -EIO, "the sink returned no error message");
    }
    return result;
}

/* Each of these returns false when the store failed, so that the caller pauses. */

static bool dispatcher_ack(struct crd_dispatcher *dispatcher, const struct crd_delivery *delivery,
                           const struct crd_log_ids *ids)
{
    atomic_fetch_add(&dispatcher->counters.delivered, 1);
    if (delivery->attempts > 0) {
        crd_log_info(ids, "sink '%s': delivered call '%s' version %lld at attempt %u",
                     dispatcher->name, delivery->call_id, (long long)delivery->version,
                     delivery->attempts + 1);
    }

    struct crd_error err = {0};
    if (crd_store_ack_delivery(dispatcher->store, delivery->id, &err) < 0) {
        dispatcher_log_store_error(dispatcher, ids,
                                   "delivered, but removing the outbox row failed, so the "
                                   "version will be delivered again", &err);
        return false;
    }
    return true;
}

/*
 * NOTE: the backoff belongs to the row, not to the sink. While a sink is down,
 * every waiting row is tried once per backoff period of its own, so a long
 * outbox makes many attempts per period.
 */
static bool dispatcher_retry(struct crd_dispatcher *dispatcher, const struct crd_delivery *delivery,
                             const struct crd_log_ids *ids, const struct crd_error *sink_err)
{
    atomic_fetch_add(&dispatcher->counters.retried, 1);
    unsigned attempt = delivery->attempts + 1;
    int64_t delay_ms = crd_dispatcher_backoff_ms(attempt, dispatcher->options.backoff_base_ms,
                                                 dispatcher->options.backoff_max_ms,
                                                 dispatcher_random());
    unsigned suppressed = 0;
    char note[64];
    if (crd_ratelimit_allow(&dispatcher->retry_log, &suppressed)) {
        crd_log_warn(ids, "sink '%s': delivering call '%s' version %lld failed at attempt %u: %s; "
                     "retrying in %lld ms%s", dispatcher->name, delivery->call_id,
                     (long long)delivery->version, attempt, sink_err->message,
                     (long long)delay_ms,
                     dispatcher_suppressed_note(suppressed, note, sizeof(note)));
    }

    struct crd_error err = {0};
    if (crd_store_retry_delivery(dispatcher->store, delivery->id, crd_time_now_ms() + delay_ms,
                                 sink_err->message, &err) < 0) {
        dispatcher_log_store_error(dispatcher, ids, "scheduling the retry failed", &err);
        return false;
    }
    return true;
}

/*
 * Moves the row to the dead letters after FATAL or the last attempt that
 * max_attempts allows. The row leaves the outbox, so newer versions of the
 * call go on to the sink.
 */
static bool dispatcher_dead_letter(struct crd_dispatcher *dispatcher,
                                   const struct crd_delivery *delivery,
                                   const struct crd_log_ids *ids, const struct crd_error *sink_err,
                                   const char *why)
{
    atomic_fetch_add(&dispatcher->counters.failed, 1);
    CRD_LOG_AT(CRD_LOG_ERR, CRD_DISPATCHER_MESSAGE_ID_DEAD_LETTER, ids,
               "sink '%s': delivering call '%s' version %lld of tenant '%s' failed %s at attempt "
               "%u: %s; moved to the dead letters (callrecctl retry --call %s --sink %s re-arms "
               "it)", dispatcher->name, delivery->call_id, (long long)delivery->version,
               delivery->tenant_id, why, delivery->attempts + 1, sink_err->message,
               delivery->call_id, dispatcher->name);

    struct crd_error err = {0};
    if (crd_store_dead_letter_delivery(dispatcher->store, delivery->id, sink_err->message,
                                       &err) < 0) {
        dispatcher_log_store_error(dispatcher, ids, "moving the delivery to the dead letters "
                                   "failed, so it will be tried again", &err);
        return false;
    }
    return true;
}

static bool dispatcher_deliver(struct crd_dispatcher *dispatcher,
                               const struct crd_delivery *delivery)
{
    struct crd_log_ids ids = {
        .tenant = delivery->tenant_id,
        .call_id = delivery->call_id,
        .sink = dispatcher->name,
    };
    struct crd_error err = {0};
    enum crd_sink_result result = dispatcher_call_sink(dispatcher, delivery, &err);

    bool store_ok = false;
    switch (result) {
    case CRD_SINK_OK:
        store_ok = dispatcher_ack(dispatcher, delivery, &ids);
        break;
    case CRD_SINK_FATAL:
        store_ok = dispatcher_dead_letter(dispatcher, delivery, &ids, &err, "for good");
        break;
    default:
        if (dispatcher->max_attempts > 0 && delivery->attempts + 1 >= dispatcher->max_attempts) {
            store_ok = dispatcher_dead_letter(dispatcher, delivery, &ids, &err,
                                              "and has no attempts left");
            break;
        }
        store_ok = dispatcher_retry(dispatcher, delivery, &ids, &err);
        break;
    }

    if (dispatcher->options.after_delivery != NULL) {
        dispatcher->options.after_delivery(dispatcher->options.after_delivery_context, result);
    }
    return store_ok;
}

/*
 * Delivers the next due row, if any. Returns how long to wait before the
 * next claim: 0 to go on at once, a positive delay, or -1 to wait until woken.
 */
static int64_t dispatcher_step(struct crd_dispatcher *dispatcher)
{
    struct crd_delivery delivery = {0};
    struct crd_error err = {0};
    int64_t now_ms = crd_time_now_ms();
    int64_t next_due_ms = 0;
    int r = crd_store_claim_delivery(dispatcher->store, dispatcher->name, now_ms, &delivery,
                                     &next_due_ms, &err);
    if (r == -ENOENT) {
        if (next_due_ms == 0) {
            /* callrecctl retry may add rows from another process, without a wake. */
            return DISPATCHER_MAX_WAIT_MS;
        }
        int64_t delay_ms = next_due_ms - now_ms;
        if (delay_ms < 1) {
            delay_ms = 1; /* the store reports only future due times; this rules out a spin */
        }
        return delay_ms < DISPATCHER_MAX_WAIT_MS ? delay_ms : DISPATCHER_MAX_WAIT_MS;
    }
    if (r < 0) {
        struct crd_log_ids ids = {.sink = dispatcher->name};
        dispatcher_log_store_error(dispatcher, &ids, "claiming the next delivery failed; "
                                   "retrying in a second", &err);
        return DISPATCHER_STORE_ERROR_PAUSE_MS;
    }

    bool store_ok = dispatcher_deliver(dispatcher, &delivery);
    crd_delivery_clear(&delivery);
    return store_ok ? 0 : DISPATCHER_STORE_ERROR_PAUSE_MS;
}

void crd_dispatcher_get_backlog(struct crd_dispatcher *dispatcher,
                                struct crd_dispatcher_backlog *ret_backlog)
{
    pthread_mutex_lock(&dispatcher->lock);
    *ret_backlog = dispatcher->backlog;
    pthread_mutex_unlock(&dispatcher->lock);
}

const char *crd_dispatcher_name(const struct crd_dispatcher *dispatcher)
{
    return dispatcher->name;
}

static void dispatcher_log_backlog(struct crd_dispatcher *dispatcher,
                                   const struct crd_dispatcher_backlog *backlog, int64_t age_s,
                                   bool was_over_bound, int64_t now_ms)
{
    struct crd_log_ids ids = {.sink = dispatcher->name};
    if (backlog->over_bound && (!was_over_bound ||
                                now_ms - dispatcher->backlog_logged_ms >=
                                    DISPATCHER_BACKLOG_LOG_INTERVAL_MS)) {
        dispatcher->backlog_logged_ms = now_ms;
        CRD_LOG_AT(CRD_LOG_ERR, CRD_DISPATCHER_MESSAGE_ID_BACKLOG, &ids,
                   "sink '%s': backlog at its bound: %lld records wait, the oldest for %lld s "
                   "(max_backlog %lld, max_backlog_age %lld s); fetching is paused, and new "
                   "notifications are stored, until the sink catches up", dispatcher->name,
                   (long long)backlog->rows, (long long)age_s, (long long)dispatcher->max_backlog,
                   (long long)(dispatcher->max_backlog_age_ms / 1000));
    } else if (!backlog->over_bound && was_over_bound) {
        CRD_LOG_AT(CRD_LOG_NOTICE, CRD_DISPATCHER_MESSAGE_ID_BACKLOG_RECOVERED, &ids,
                   "sink '%s': backlog recovered: %lld records wait, the oldest for %lld s, "
                   "under max_backlog %lld and max_backlog_age %lld s", dispatcher->name,
                   (long long)backlog->rows, (long long)age_s, (long long)dispatcher->max_backlog,
                   (long long)(dispatcher->max_backlog_age_ms / 1000));
    }
}

/*
 * Measures the backlog, at most once per DISPATCHER_BACKLOG_CHECK_MS. When
 * it reaches or leaves its bounds, logs it and calls on_backlog. Returns
 * whether it is over a bound.
 */
static bool dispatcher_check_backlog(struct crd_dispatcher *dispatcher)
{
    if (dispatcher->max_backlog == 0 && dispatcher->max_backlog_age_ms == 0) {
        return false;
    }
    int64_t now_ms = crd_time_monotonic_ms();
    bool was_over_bound = dispatcher->backlog.over_bound; /* only this thread writes it */
    if (dispatcher->backlog_checked_ms != 0 &&
        now_ms - dispatcher->backlog_checked_ms < DISPATCHER_BACKLOG_CHECK_MS) {
        return was_over_bound;
    }
    dispatcher->backlog_checked_ms = now_ms;

    struct crd_dispatcher_backlog backlog = {0};
    struct crd_error err = {0};
    if (crd_store_outbox_backlog(dispatcher->store, dispatcher->name, &backlog.rows,
                                 &backlog.oldest_created_at_ms, &err) < 0) {
        struct crd_log_ids ids = {.sink = dispatcher->name};
        dispatcher_log_store_error(dispatcher, &ids, "measuring the backlog failed", &err);
        return was_over_bound;
    }
    int64_t age_ms = 0;
    if (backlog.oldest_created_at_ms > 0 && crd_time_now_ms() > backlog.oldest_created_at_ms) {
        age_ms = crd_time_now_ms() - backlog.oldest_created_at_ms;
    }
    backlog.over_bound =
        (dispatcher->max_backlog > 0 && backlog.rows >= dispatcher->max_backlog) ||
        (dispatcher->max_backlog_age_ms > 0 && backlog.rows > 0 &&
         age_ms >= dispatcher->max_backlog_age_ms);

    pthread_mutex_lock(&dispatcher->lock);
    dispatcher->backlog = backlog;
    pthread_mutex_unlock(&dispatcher->lock);

    dispatcher_log_backlog(dispatcher, &backlog, age_ms / 1000, was_over_bound, now_ms);
    if (backlog.over_bound != was_over_bound && dispatcher->options.on_backlog != NULL) {
        dispatcher->options.on_backlog(dispatcher->options.on_backlog_context,
                                       backlog.over_bound);
    }
    return backlog.over_bound;
}

static void *dispatcher_main(void *argument)
{
    struct crd_dispatcher *dispatcher = argument;

    char thread_name[16];
    snprintf(thread_name, sizeof(thread_name), "sink-%s", dispatcher->name);
    pthread_setname_np(pthread_self(), thread_name);

    for (;;) {
        pthread_mutex_lock(&dispatcher->lock);
        bool stopping = dispatcher->stopping;
        dispatcher->wake_pending = false;
        pthread_mutex_unlock(&dispatcher->lock);

        if (stopping) {
            break;
        }
        dispatcher_reopen_if_requested(dispatcher);
        bool over_bound = dispatcher_check_backlog(dispatcher);

        int64_t delay_ms = dispatcher_step(dispatcher);
        if (over_bound && delay_ms > DISPATCHER_BACKLOG_CHECK_MS) {
            delay_ms = DISPATCHER_BACKLOG_CHECK_MS;
        }
        if (delay_ms != 0) {
            dispatcher_wait(dispatcher, delay_ms);
        }
    }
    return NULL;
}

static void dispatcher_free(struct crd_dispatcher *dispatcher)
{
    if (dispatcher == NULL) {
        return;
    }
    if (dispatcher->descriptor != NULL && dispatcher->descriptor->destroy != NULL) {
        dispatcher->descriptor->destroy(dispatcher->context);
    }
    if (dispatcher->sync_initialized) {
        pthread_cond_destroy(&dispatcher->changed);
        pthread_mutex_destroy(&dispatcher->lock);
    }
    pthread_mutex_destroy(&dispatcher->retry_log.lock);
    pthread_mutex_destroy(&dispatcher->store_error_log.lock);
    free(dispatcher->name);
    free(dispatcher);
}

static int dispatcher_check_arguments(const struct crd_config_sink *config,
                                      const struct crd_sink_descriptor *descriptor,
                                      struct crd_store *store,
                                      const struct crd_dispatcher_options *options,
                                      struct crd_dispatcher **ret_dispatcher,
                                      struct crd_error *err)
{
    if (config == NULL || config->name == NULL || descriptor == NULL || store == NULL ||
        ret_dispatcher == NULL) {
        return crd_error_set(err, -EINVAL, "dispatcher: missing configuration, sink or store");
    }
    size_t name_len = strlen(config->name);
    if (name_len == 0 || name_len > DISPATCHER_SINK_NAME_MAX) {
        return crd_error_set(err, -EINVAL, "sink '%.64s': the name must be 1 to %zu bytes long",
                             config->name, DISPATCHER_SINK_NAME_MAX);
    }
    if (descriptor->abi_version != CRD_SINK_ABI_VERSION) {
        return crd_error_set(err, -EINVAL, "sink '%s': the descriptor has ABI version %u, but "
                             "this build supports version %d", config->name,
                             (unsigned)descriptor->abi_version, CRD_SINK_ABI_VERSION);
    }
    if (descriptor->struct_size < sizeof(struct crd_sink_descriptor)) {
        return crd_error_set(err, -EINVAL, "sink '%s': the descriptor has %u bytes, fewer than "
                             "the %zu of ABI version %d", config->name,
                             (unsigned)descriptor->struct_size, sizeof(struct crd_sink_descriptor),
                             CRD_SINK_ABI_VERSION);
    }
    if (descriptor->create == NULL || descriptor->deliver == NULL) {
        return crd_error_set(err, -EINVAL, "sink '%s': the descriptor has no create() or "
                             "deliver() callback", config->name);
    }
    if (options != NULL && (options->backoff_base_ms < 0 || options->backoff_max_ms < 0 ||
                            (options->backoff_max_ms > 0 &&
                             options->backoff_base_ms > options->backoff_max_ms))) {
        return crd_error_set(err, -EINVAL, "sink '%s': invalid backoff %lld ms to %lld ms",
                             config->name, (long long)options->backoff_base_ms,
                             (long long)options->backoff_max_ms);
    }
    return 0;
}

/* Starts the thread with every signal blocked, so that it inherits that mask. */
static int dispatcher_start_thread(struct crd_dispatcher *dispatcher, struct crd_error *err)
{
    sigset_t all;
    sigset_t previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    int rc = pthread_create(&dispatcher->thread, NULL, dispatcher_main, dispatcher);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (rc != 0) {
        return crd_error_set(err, -rc, "sink '%s': cannot start its thread: %s", dispatcher->name,
                             strerror(rc));
    }
    dispatcher->thread_started = true;
    return 0;
}

static int dispatcher_init_sync(struct crd_dispatcher *dispatcher, struct crd_error *err)
{
    pthread_condattr_t attributes;
    int rc = pthread_condattr_init(&attributes);
    if (rc == 0) {
        rc = pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
        if (rc == 0) {
            rc = pthread_cond_init(&dispatcher->changed, &attributes);
        }
        pthread_condattr_destroy(&attributes);
    }
    if (rc != 0) {
        return crd_error_set(err, -rc, "sink '%s': cannot create a condition variable: %s",
                             dispatcher->name, strerror(rc));
    }
    rc = pthread_mutex_init(&dispatcher->lock, NULL);
    if (rc != 0) {
        pthread_cond_destroy(&dispatcher->changed);
        return crd_error_set(err, -rc, "sink '%s': cannot create a mutex: %s", dispatcher->name,
                             strerror(rc));
    }
    dispatcher->sync_initialized = true;
    return 0;
}

int crd_dispatcher_start(const struct crd_config_sink *config,
                         const struct crd_sink_descriptor *descriptor, struct crd_store *store,
                         const struct crd_dispatcher_options *options,
                         struct crd_dispatcher **ret_dispatcher, struct crd_error *err)
{
    int r = dispatcher_check_arguments(config, descriptor, store, options, ret_dispatcher, err);
    if (r < 0) {
        return r;
    }

    struct crd_dispatcher *dispatcher = calloc(1, sizeof(*dispatcher));
    if (dispatcher == NULL) {
        return crd_error_set(err, -ENOMEM, "sink '%s': out of memory", config->name);
    }
    crd_ratelimit_init(&dispatcher->retry_log, DISPATCHER_LOG_INTERVAL_MS, DISPATCHER_LOG_BURST);
    crd_ratelimit_init(&dispatcher->store_error_log, DISPATCHER_LOG_INTERVAL_MS,
                       DISPATCHER_LOG_BURST);
    dispatcher->name = strdup(config->name);
    if (dispatcher->name == NULL) {
        r = crd_error_set(err, -ENOMEM, "sink '%s': out of memory", config->name);
        goto out;
    }
    dispatcher->store = store;
    dispatcher->max_attempts = config->max_attempts;
    dispatcher->max_backlog = (int64_t)config->max_backlog;
    dispatcher->max_backlog_age_ms = (int64_t)config->max_backlog_age_ms;
    if (options != NULL) {
        dispatcher->options = *options;
    }
    if (dispatcher->options.backoff_base_ms == 0) {
        dispatcher->options.backoff_base_ms = DISPATCHER_DEFAULT_BACKOFF_BASE_MS;
    }
    if (dispatcher->options.backoff_max_ms == 0) {
        dispatcher->options.backoff_max_ms = DISPATCHER_DEFAULT_BACKOFF_MAX_MS;
    }
    if (dispatcher->options.backoff_max_ms < dispatcher->options.backoff_base_ms) {
        dispatcher->options.backoff_max_ms = dispatcher->options.backoff_base_ms;
    }

    r = descriptor->create(config, &dispatcher->context, err);
    if (r < 0) {
        goto out;
    }
    dispatcher->descriptor = descriptor;
    r = dispatcher_init_sync(dispatcher, err);
    if (r < 0) {
        goto out;
    }
    r = dispatcher_start_thread(dispatcher, err);
    if (r < 0) {
        goto out;
    }

    crd_log_debug(CRD_LOG_SINK, &(struct crd_log_ids){.sink = dispatcher->name},
                  "sink '%s' (%s) started", dispatcher->name, descriptor->name);
    *ret_dispatcher = dispatcher;
    dispatcher = NULL;

out:
    dispatcher_free(dispatcher);
    return r;
}

void crd_dispatcher_stop(struct crd_dispatcher *dispatcher)
{
    if (dispatcher == NULL) {
        return;
    }
    if (dispatcher->thread_started) {
        dispatcher_signal(dispatcher, &dispatcher->stopping);
        pthread_join(dispatcher->thread, NULL);
    }
    crd_log_debug(CRD_LOG_SINK, &(struct crd_log_ids){.sink = dispatcher->name},
                  "sink '%s' stopped", dispatcher->name);
    dispatcher_free(dispatcher);
}
