/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "fetcher.h"
#include "log.h"
#include "util.h"

#define DEFAULT_NOT_FOUND_HORIZON_MS (4LL * 3600 * 1000)
#define DEFAULT_RETRY_BASE_MS 5000
#define DEFAULT_RETRY_MAX_MS (10LL * 60 * 1000)
/* A 403 needs an administrator to grant a permission, so retrying often cannot help. */
#define PERMISSION_RETRY_MS (15LL * 60 * 1000)
/* After a store error, wait this long before claiming again. */
#define STORE_ERROR_PAUSE_MS 1000

struct crd_fetcher {
    struct crd_fetcher_options options;
    struct crd_fetcher_counters counters;

    pthread_mutex_t lock;          /* protects the fields up to paused_log */
    pthread_cond_t changed;        /* signalled by wake, stop, backpressure and the breaker */
    uint64_t generation;           /* bumped by every wake, so no wake-up is lost */
    bool stopping;
    bool backpressure;             /* no job is claimed while set */
    struct crd_breaker breaker;    /* on the monotonic clock */
    uint64_t paused_logged_generation;
    struct crd_ratelimit paused_log;

    pthread_t *threads;
    size_t n_threads;
    struct crd_ratelimit store_error_log;
};

struct worker {
    struct crd_fetcher *fetcher;
    unsigned index;
};

int64_t crd_fetcher_backoff_ms(unsigned attempt, int64_t base_ms, int64_t max_ms,
                               uint32_t random_value)
{
    int64_t delay = base_ms;
    for (unsigned i = 1; i < attempt && delay < max_ms; i++) {
        delay *= 2;
    }
    if (delay > max_ms) {
        delay = max_ms;
    }
    /* Half fixed and half random: spreads retries without retrying at once. */
    int64_t half = delay / 2;
    return half + (int64_t)(random_value % (uint64_t)(half + 1));
}

static uint32_t random_u32(void)
{
    uint32_t value = 0;
    if (RAND_bytes((unsigned char *)&value, sizeof(value)) != 1) {
        value = (uint32_t)crd_time_monotonic_ms();
    }
    return value;
}

/* Waits until deadline_ms (monotonic; 0 = no deadline), a wake, or stop. */
static void wait_for_work(struct crd_fetcher *fetcher, uint64_t seen_generation,
                          int64_t deadline_ms)
{
    pthread_mutex_lock(&fetcher->lock);
    while (!fetcher->stopping && fetcher->generation == seen_generation) {
        if (deadline_ms == 0) {
            pthread_cond_wait(&fetcher->changed, &fetcher->lock);
            continue;
        }
        int64_t now = crd_time_monotonic_ms();
        if (now >= deadline_ms) {
            break;
        }
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        int64_t wait_ms = deadline_ms - now;
        until.tv_sec += (time_t)(wait_ms / 1000);
        until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        (void)pthread_cond_timedwait(&fetcher->changed, &fetcher->lock, &until);
    }
    pthread_mutex_unlock(&fetcher->lock);
}

static bool is_stopping(struct crd_fetcher *fetcher, uint64_t *ret_generation)
{
    pthread_mutex_lock(&fetcher->lock);
    bool stopping = fetcher->stopping;
    *ret_generation = fetcher->generation;
    pthread_mutex_unlock(&fetcher->lock);
    return stopping;
}

/* Logs, once per wake, that new jobs wait because backpressure holds. Called with the lock held. */
static void log_wake_while_paused(struct crd_fetcher *fetcher)
{
    if (fetcher->paused_logged_generation == fetcher->generation) {
        return;
    }
    fetcher->paused_logged_generation = fetcher->generation;
    unsigned suppressed = 0;
    if (crd_ratelimit_allow(&fetcher->paused_log, &suppressed)) {
        crd_log_debug(CRD_LOG_FETCH, NULL, "new jobs wait in the store: fetching is paused while "
                      "a sink's backlog is over its bound%s",
                      suppressed > 0 ? " (similar messages were suppressed)" : "");
    }
}

/*
 * Waits while backpressure is set, the circuit breaker is open, or its
 * probe runs. Returns false when stopping. Else a fetch may start, and
 * *ret_probe is true when it is the breaker's probe.
 */
static bool wait_for_permission(struct crd_fetcher *fetcher, bool *ret_probe)
{
    bool allowed = false;
    pthread_mutex_lock(&fetcher->lock);
    while (!fetcher->stopping) {
        if (fetcher->backpressure) {
            log_wake_while_paused(fetcher);
            pthread_cond_wait(&fetcher->changed, &fetcher->lock);
            continue;
        }
        bool probe = false;
        int64_t wait_ms = 0;
        if (crd_breaker_allow(&fetcher->breaker, crd_time_monotonic_ms(), &probe, &wait_ms)) {
            *ret_probe = probe;
            allowed = true;
            break;
        }
        if (wait_ms < 0) {
            pthread_cond_wait(&fetcher->changed, &fetcher->lock);
            continue;
        }
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += (time_t)(wait_ms / 1000);
        until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        (void)pthread_cond_timedwait(&fetcher->changed, &fetcher->lock, &until);
    }
    pthread_mutex_unlock(&fetcher->lock);
    return allowed;
}

/* 5xx, 429 after retries, timeouts and transport errors count as failures of Graph. */
static enum crd_breaker_outcome breaker_outcome(int r)
{
    if (r == -EAGAIN) {
        return CRD_BREAKER_FAILED;
    }
    if (r == -ECANCELED) {
        return CRD_BREAKER_ABANDONED;
    }
    return CRD_BREAKER_ANSWERED;
}

/*
 * Feeds the outcome of a fetch to the breaker and logs the start and end of
 * an outage. Returns true while the breaker is open or half-open.
 */
static bool record_outcome(struct crd_fetcher *fetcher, const struct crd_job *job, bool probe,
                           enum crd_breaker_outcome outcome, const char *error_message)
{
    pthread_mutex_lock(&fetcher->lock);
    int64_t now_ms = crd_time_monotonic_ms();
    enum crd_breaker_event event = crd_breaker_record(&fetcher->breaker, probe, outcome, now_ms,
                                                      random_u32());
    unsigned attempts = 0;
    unsigned failures = 0;
    crd_breaker_window(&fetcher->breaker, now_ms, &attempts, &failures);
    int64_t period_ms = fetcher->breaker.period_ms;
    int64_t outage_s = (now_ms - fetcher->breaker.outage_start_ms) / 1000;
    bool outage = fetcher->breaker.state != CRD_BREAKER_STATE_CLOSED;
    if (event != CRD_BREAKER_EVENT_NONE) {
        pthread_cond_broadcast(&fetcher->changed);
    }
    pthread_mutex_unlock(&fetcher->lock);

    struct crd_log_ids ids = {.tenant = job->tenant_id, .call_id = job->call_id};
    switch (event) {
    case CRD_BREAKER_EVENT_OPENED:
        CRD_LOG_AT(CRD_LOG_ERR, CRD_FETCHER_MESSAGE_ID_GRAPH_OUTAGE, &ids,
                   "Graph outage: %u of the last %u fetches failed within a minute (%u %%), the "
                   "last one for call '%s': %s; no fetch starts for %lld ms, then one probe "
                   "fetch; jobs stay pending", failures, attempts,
                   attempts > 0 ? failures * 100 / attempts : 0, job->call_id, error_message,
                   (long long)period_ms);
        break;
    case CRD_BREAKER_EVENT_PROBE_FAILED:
        crd_log_warn(&ids, "Graph outage continues after %lld s: the probe fetch of call '%s' "
                     "failed: %s; next probe in %lld ms", (long long)outage_s, job->call_id,
                     error_message, (long long)period_ms);
        break;
    case CRD_BREAKER_EVENT_CLOSED:
        CRD_LOG_AT(CRD_LOG_NOTICE, CRD_FETCHER_MESSAGE_ID_GRAPH_RECOVERED, &ids,
                   "Graph outage ended after %lld s: the probe fetch of call '%s' got an answer; "
                   "fetching resumes", (long long)outage_s, job->call_id);
        break;
    default:
        break;
    }
    return outage;
}

/* Gives back a probe that fetched nothing, so that the next fetch becomes the probe. */
static void release_probe(struct crd_fetcher *fetcher)
{
    pthread_mutex_lock(&fetcher->lock);
    (void)crd_breaker_record(&fetcher->breaker, true, CRD_BREAKER_ABANDONED,
                             crd_time_monotonic_ms(), 0);
    pthread_cond_broadcast(&fetcher->changed);
    pthread_mutex_unlock(&fetcher->lock);
}

static void describe_failure(const struct crd_graph_failure *failure, char *out, size_t size)
{
    snprintf(out, size, "HTTP %ld%s%s%s%s", failure->http_status,
             failure->code[0] != '\0' ? ", code " : "", failure->code,
             failure->request_id[0] != '\0' ? ", request-id " : "", failure->request_id);
}

/*
 * Makes the job due again after delay_ms. A failure that is not the job's
 * fault (a Graph outage, a shutdown) is not counted as an attempt, so the
 * job has as many attempts left afterwards as before.
 */
static void reschedule(struct crd_fetcher *fetcher, const struct crd_job *job, int64_t delay_ms,
                       const char *why, bool counts_as_attempt)
{
    struct crd_error err = {0};
    struct crd_log_ids ids = {.tenant = job->tenant_id, .call_id = job->call_id};
    int64_t due_at_ms = crd_time_now_ms() + delay_ms;
    int r = counts_as_attempt
                ? crd_store_reschedule_job(fetcher->options.store, job, due_at_ms, why, &err)
                : crd_store_postpone_job(fetcher->options.store, job, due_at_ms, why, &err);
    if (r < 0) {
        /* The job stays 'running' and is recovered as pending at the next start. */
        crd_log_err(&ids, "cannot reschedule the job: %s", err.message);
        return;
    }
    atomic_fetch_add(&fetcher->counters.retried, 1);
}

/* Moves the job to the dead letters, unless a notification since its claim re-armed it. */
static void give_up(struct crd_fetcher *fetcher, const struct crd_job *job, const char *why)
{
    struct crd_error err = {0};
    struct crd_log_ids ids = {.tenant = job->tenant_id, .call_id = job->call_id};
    atomic_fetch_add(&fetcher->counters.failed, 1);
    bool moved = false;
    if (crd_store_dead_letter_job(fetcher->options.store, job, why, &moved, &err) < 0) {
        /* The job stays 'running' and is recovered as pending at the next start. */
        crd_log_err(&ids, "giving up on call record '%s' after %u attempts (%s), but moving the "
                    "job to the dead letters failed: %s", job->call_id, job->attempts + 1, why,
                    err.message);
        return;
    }
    if (!moved) {
        crd_log_info(&ids, "call record '%s' failed (%s), but a notification arrived meanwhile; "
                     "fetching it again", job->call_id, why);
        return;
    }
    CRD_LOG_AT(CRD_LOG_ERR, CRD_FETCHER_MESSAGE_ID_DEAD_LETTER, &ids,
               "giving up on call record '%s' of tenant '%s' after %u attempts: %s; moved to the "
               "dead letters (callrecctl retry --call %s re-arms it)", job->call_id,
               job->tenant_id, job->attempts + 1, why, job->call_id);
}

/* True when the attempt that just failed was the last one max_attempts allows. */
static bool attempts_exhausted(const struct crd_fetcher *fetcher, unsigned attempt)
{
    return fetcher->options.max_attempts > 0 && attempt >= fetcher->options.max_attempts;
}

static void store_record(struct crd_fetcher *fetcher, const struct crd_job *job, json_t *record)
{
    struct crd_log_ids ids = {.tenant = job->tenant_id, .call_id = job->call_id};
    struct crd_error err = {0};
    char *text = json_dumps(record, JSON_COMPACT);
    if (text == NULL) {
        reschedule(fetcher, job, DEFAULT_RETRY_BASE_MS, "out of memory serializing the record",
                   true);
        return;
    }

    struct crd_record_version version = {
        .version = json_integer_value(json_object_get(record, "version")),
        .record_json = text,
        .record_json_len = strlen(text),
        .fetched_at_ms = crd_time_now_ms(),
    };
    bool stored = false;
    int r = crd_store_complete_job(fetcher->options.store, job, &version,
                                   fetcher->options.sink_names, fetcher->options.n_sinks, &stored,
                                   &err);
    free(text);
    if (r < 0) {
        crd_log_err(&ids, "cannot store version %lld: %s; retrying", (long long)version.version,
                    err.message);
        reschedule(fetcher, job, DEFAULT_RETRY_BASE_MS, err.message, false);
        return;
    }

    size_t sessions = json_array_size(json_object_get(record, "sessions"));
    size_t participants = json_array_size(json_object_get(record, "participants_v2"));
    if (!stored) {
        atomic_fetch_add(&fetcher->counters.duplicates, 1);
        crd_log_info(&ids, "call record version %lld is not newer than the stored one; dropped "
                     "as a duplicate", (long long)version.version);
        return;
    }
    atomic_fetch_add(&fetcher->counters.stored, 1);
    crd_log_info(&ids, "stored call record version %lld (sessions: %zu, participants: %zu, "
                 "sinks: %zu)", (long long)version.version, sessions, participants,
                 fetcher->options.n_sinks);
    if (fetcher->options.on_stored != NULL) {
        fetcher->options.on_stored(fetcher->options.on_stored_context);
    }
}

/*
 * Reschedules or gives up a failed job. During an outage (the breaker is
 * open or half-open) a transient failure or a 404 never gives the job up
 * and does not count as one of its attempts.
 */
static void handle_failure(struct crd_fetcher *fetcher, const struct crd_job *job, int r,
                           const struct crd_graph_failure *failure, const struct crd_error *err,
                           bool outage)
{
    const struct crd_fetcher_options *options = &fetcher->options;
    struct crd_log_ids ids = {.tenant = job->tenant_id, .call_id = job->call_id};
    char detail[256];
    describe_failure(failure, detail, sizeof(detail));
    unsigned attempt = job->attempts + 1;

    switch (-r) {
    case ENOENT: {
        atomic_fetch_add(&fetcher->counters.not_found, 1);
        int64_t age = crd_time_now_ms() - job->first_notified_at_ms;
        if (!outage && age >= options->not_found_horizon_ms) {
            give_up(fetcher, job, "still not found (HTTP 404) after the availability horizon");
            return;
        }
        int64_t delay = crd_fetcher_backoff_ms(attempt, options->retry_base_ms,
                                               options->retry_max_ms, random_u32());
        crd_log_info(&ids, "call record not available yet (%s); retrying in %lld ms", detail,
                     (long long)delay);
        reschedule(fetcher, job, delay, "not found (HTTP 404)", !outage);
        return;
    }
    case EAGAIN: {
        if (!outage && attempts_exhausted(fetcher, attempt)) {
            give_up(fetcher, job, err->message);
            return;
        }
        int64_t delay = crd_fetcher_backoff_ms(attempt, options->retry_base_ms,
                                               options->retry_max_ms, random_u32());
        if (failure->retry_after_ms > delay) {
            delay = failure->retry_after_ms;
        }
        if (outage) {
            crd_log_warn(&ids, "fetch failed during the Graph outage: %s; retrying in %lld ms "
                         "(not counted as an attempt)", err->message, (long long)delay);
        } else {
            crd_log_warn(&ids, "fetch failed: %s; retrying in %lld ms (attempt %u)", err->message,
                         (long long)delay, attempt);
        }
        reschedule(fetcher, job, delay, err->message, !outage);
        return;
    }
    case EACCES:
        if (attempts_exhausted(fetcher, attempt)) {
            give_up(fetcher, job, err->message);
            return;
        }
        crd_log_err(&ids, "fetch failed, permission denied: %s; retrying in %lld minutes", err->message,
                    (long long)(PERMISSION_RETRY_MS / 60000));
        reschedule(fetcher, job, PERMISSION_RETRY_MS, err->message, true);
        return;
    case ECANCELED:
        /* Shutting down: the job is due again at the next start. */
        reschedule(fetcher, job, 0, "cancelled by shutdown", false);
        return;
    default:
        give_up(fetcher, job, err->message);
        return;
    }
}

static void process_job(struct crd_fetcher *fetcher, struct crd_graph_session *session,
                        const struct crd_job *job, bool probe)
{
    struct crd_error err = {0};
    struct crd_graph_failure failure = {0};
    json_t *record = NULL;

    struct crd_log_ids ids = {.tenant = job->tenant_id, .call_id = job->call_id};
    crd_log_debug(CRD_LOG_FETCH, &ids, "fetching call record (attempt %u)", job->attempts + 1);
    int r = crd_graph_fetch_call_record(session, job->call_id, &record, &failure, &err);
    bool outage = record_outcome(fetcher, job, probe, breaker_outcome(r), err.message);
    if (r < 0) {
        handle_failure(fetcher, job, r, &failure, &err, outage);
        return;
    }
    atomic_fetch_add(&fetcher->counters.fetched, 1);
    store_record(fetcher, job, record);
    json_decref(record);
}

static void *worker_main(void *argument)
{
    struct worker *worker = argument;
    struct crd_fetcher *fetcher = worker->fetcher;
    struct crd_graph_session *session = NULL;
    struct crd_error err = {0};

    char name[16];
    snprintf(name, sizeof(name), "fetch-%u", worker->index);
    pthread_setname_np(pthread_self(), name);
    free(worker);

    if (crd_graph_session_new(fetcher->options.graph, &session, &err) < 0) {
        crd_log_err(NULL, "fetch worker %s cannot start: %s", name, err.message);
        return NULL;
    }

    uint64_t generation = 0;
    while (!is_stopping(fetcher, &generation)) {
        bool probe = false;
        if (!wait_for_permission(fetcher, &probe)) {
            break;
        }
        struct crd_job job;
        int64_t next_due_ms = 0;
        int r = crd_store_claim_tenant_job(fetcher->options.store, fetcher->options.tenant_id,
                                           crd_time_now_ms(), &job, &next_due_ms, &err);
        if (r < 0 && probe) {
            release_probe(fetcher);
        }
        if (r == -ENOENT) {
            /*
             * Another process (callrecctl retry) may make a job due without
             * waking this one, so the wait never exceeds retry_max_ms.
             */
            int64_t delay = fetcher->options.retry_max_ms;
            if (next_due_ms > 0 && next_due_ms - crd_time_now_ms() < delay) {
                delay = next_due_ms - crd_time_now_ms();
            }
            wait_for_work(fetcher, generation, crd_time_monotonic_ms() + (delay > 1 ? delay : 1));
            continue;
        }
        if (r < 0) {
            unsigned suppressed = 0;
            if (crd_ratelimit_allow(&fetcher->store_error_log, &suppressed)) {
                crd_log_err(NULL, "cannot claim a job from the store: %s; retrying in %d ms",
                            err.message, STORE_ERROR_PAUSE_MS);
            }
            wait_for_work(fetcher, generation, crd_time_monotonic_ms() + STORE_ERROR_PAUSE_MS);
            continue;
        }
        process_job(fetcher, session, &job, probe);
    }

    crd_graph_session_free(session);
    return NULL;
}

int crd_fetcher_start(const struct crd_fetcher_options *options, struct crd_fetcher **ret_fetcher,
                      struct crd_error *err)
{
    int r = 0;
    struct crd_fetcher *fetcher = calloc(1, sizeof(*fetcher));
    if (fetcher == NULL) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    fetcher->options = *options;
    if (fetcher->options.not_found_horizon_ms <= 0) {
        fetcher->options.not_found_horizon_ms = DEFAULT_NOT_FOUND_HORIZON_MS;
    }
    if (fetcher->options.retry_base_ms <= 0) {
        fetcher->options.retry_base_ms = DEFAULT_RETRY_BASE_MS;
    }
    if (fetcher->options.retry_max_ms <= 0) {
        fetcher->options.retry_max_ms = DEFAULT_RETRY_MAX_MS;
    }

    pthread_mutex_init(&fetcher->lock, NULL);
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&fetcher->changed, &attributes);
    pthread_condattr_destroy(&attributes);
    crd_ratelimit_init(&fetcher->store_error_log, 60000, 3);
    crd_ratelimit_init(&fetcher->paused_log, 60000, 20);
    struct crd_breaker_options breaker_options = {
        .failure_percent = options->outage_failure_percent,
        .min_attempts = options->outage_min_attempts,
        .backoff_base_ms = fetcher->options.retry_base_ms,
        .backoff_max_ms = options->outage_backoff_max_ms,
    };
    crd_breaker_init(&fetcher->breaker, &breaker_options, crd_time_monotonic_ms());

    unsigned workers = options->workers > 0 ? options->workers : 1;
    fetcher->threads = calloc(workers, sizeof(*fetcher->threads));
    if (fetcher->threads == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    for (unsigned i = 0; i < workers; i++) {
        struct worker *worker = malloc(sizeof(*worker));
        if (worker == NULL) {
            r = crd_error_set(err, -ENOMEM, "out of memory");
            goto out;
        }
        *worker = (struct worker){.fetcher = fetcher, .index = i};
        int e = pthread_create(&fetcher->threads[i], NULL, worker_main, worker);
        if (e != 0) {
            free(worker);
            r = crd_error_set(err, -e, "cannot start fetch worker %u: %s", i, strerror(e));
            goto out;
        }
        fetcher->n_threads++;
    }

    *ret_fetcher = fetcher;
    fetcher = NULL;
out:
    crd_fetcher_stop(fetcher);
    return r;
}

void crd_fetcher_wake(struct crd_fetcher *fetcher)
{
    pthread_mutex_lock(&fetcher->lock);
    fetcher->generation++;
    pthread_cond_broadcast(&fetcher->changed);
    pthread_mutex_unlock(&fetcher->lock);
}

void crd_fetcher_set_backpressure(struct crd_fetcher *fetcher, bool on)
{
    pthread_mutex_lock(&fetcher->lock);
    bool changed = fetcher->backpressure != on;
    fetcher->backpressure = on;
    pthread_cond_broadcast(&fetcher->changed);
    pthread_mutex_unlock(&fetcher->lock);

    if (changed && on) {
        crd_log_warn(NULL, "fetching paused: a sink's backlog reached its bound; new jobs stay "
                     "pending in the store");
    } else if (changed) {
        crd_log_info(NULL, "fetching resumed: every sink's backlog is under its bounds");
    }
}

void crd_fetcher_graph_status(struct crd_fetcher *fetcher,
                              struct crd_fetcher_graph_status *ret_status)
{
    pthread_mutex_lock(&fetcher->lock);
    enum crd_breaker_state state = fetcher->breaker.state;
    int64_t changed_ago_ms = crd_time_monotonic_ms() - fetcher->breaker.changed_at_ms;
    pthread_mutex_unlock(&fetcher->lock);

    ret_status->state = state;
    ret_status->since_ms = crd_time_now_ms() - changed_ago_ms;
}

const struct crd_fetcher_counters *crd_fetcher_counters(const struct crd_fetcher *fetcher)
{
    return &fetcher->counters;
}

void crd_fetcher_stop(struct crd_fetcher *fetcher)
{
    if (fetcher == NULL) {
        return;
    }
    pthread_mutex_lock(&fetcher->lock);
    fetcher->stopping = true;
    pthread_cond_broadcast(&fetcher->changed);
    pthread_mutex_unlock(&fetcher->lock);
    crd_graph_cancel(fetcher->options.graph);

    for (size_t i = 0; i < fetcher->n_threads; i++) {
        pthread_join(fetcher->threads[i], NULL);
    }
    free(fetcher->threads);
    pthread_cond_destroy(&fetcher->changed);
    pthread_mutex_destroy(&fetcher->lock);
    pthread_mutex_destroy(&fetcher->store_error_log.lock);
    pthread_mutex_destroy(&fetcher->paused_log.lock);
    free(fetcher);
}
