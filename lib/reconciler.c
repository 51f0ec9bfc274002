/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "reconciler.h"
#include "util.h"

/* Wall-clock start (ms since the epoch) of the last pass that listed every page. */
#define SETTING_WATERMARK "reconcile_watermark"
/* A setting prefix ("tenant.NAME.", NAME at most 64 characters) and SETTING_WATERMARK. */
#define SETTING_KEY_MAX 128

/* ---- the listing step ------------------------------------------------------------------- */

struct reconcile_listing {
    struct crd_store *store;
    const char *tenant_id;
    const char *subscription_id;
    const char *change_type;
    struct crd_reconcile_counts *counts;
};

static int reconcile_record(const char *id, int64_t version, void *context, struct crd_error *err)
{
    struct reconcile_listing *listing = context;
    listing->counts->listed++;
    if (!crd_guid_is_valid(id, strlen(id))) {
        crd_log_debug(CRD_LOG_FETCH, NULL,
                      "ignoring listed call record id '%.60s', which is not a GUID", id);
        return 0;
    }
    int64_t stored = 0;
    struct crd_error lookup_err = {0};
    if (crd_store_newest_version(listing->store, listing->tenant_id, id, &stored, &lookup_err) ==
            0 &&
        stored >= version) {
        return 0;
    }
    /* A pending job fetches the newest version anyway, so the call is not new work. */
    bool pending = false;
    if (crd_store_job_pending(listing->store, listing->tenant_id, id, &pending, &lookup_err) ==
            0 &&
        pending) {
        return 0;
    }
    struct crd_job_notice notice = {
        .tenant_id = listing->tenant_id,
        .call_id = id,
        .subscription_id = listing->subscription_id,
        .change_type = listing->change_type,
        .notified_at_ms = crd_time_now_ms(),
    };
    int r = crd_store_enqueue_jobs(listing->store, &notice, 1, err);
    if (r < 0) {
        return crd_error_prefix(err, "cannot enqueue call record '%s'", id);
    }
    listing->counts->enqueued++;
    return 0;
}

int crd_reconcile_since(struct crd_graph_session *session, struct crd_store *store,
                        const char *tenant_id, const char *subscription_id,
                        const char *change_type, int64_t since_ms,
                        struct crd_reconcile_counts *counts, struct crd_error *err)
{
    *counts = (struct crd_reconcile_counts){0};
    struct reconcile_listing listing = {
        .store = store,
        .tenant_id = tenant_id,
        .subscription_id = subscription_id,
        .change_type = change_type,
        .counts = counts,
    };
    return crd_graph_list_call_records(session, since_ms, reconcile_record, &listing, NULL, err);
}

/* ---- the thread ------------------------------------------------------------------------- */

struct crd_reconciler {
    struct crd_reconciler_options options;
    struct crd_graph_session *session;
    pthread_t thread;
    bool thread_started;

    pthread_mutex_t lock;   /* protects stopping */
    pthread_cond_t changed; /* on CLOCK_MONOTONIC; signalled by crd_reconciler_stop() */
    bool stopping;
};

/* The store key of the watermark: the tenant's setting prefix, then SETTING_WATERMARK. */
static void watermark_key(const struct crd_reconciler_options *options, char *buf, size_t size)
{
    snprintf(buf, size, "%s%s", options->setting_prefix != NULL ? options->setting_prefix : "",
             SETTING_WATERMARK);
}

static int get_watermark(const struct crd_reconciler_options *options, int64_t *ret_watermark_ms)
{
    char *text = NULL;
    struct crd_error err = {0};
    char key[SETTING_KEY_MAX];
    watermark_key(options, key, sizeof(key));
    int r = crd_store_get_setting(options->store, key, &text, &err);
    if (r < 0) {
        return r;
    }
    char *end = NULL;
    long long value = strtoll(text, &end, 10);
    r = end != text && *end == '\0' ? 0 : -EINVAL;
    free(text);
    if (r == 0) {
        *ret_watermark_ms = value;
    }
    return r;
}

/* The tenant GUID for jobs: [graph] tenant, or that of the newest job when tenant is a domain. */
static int resolve_tenant(struct crd_reconciler *reconciler, char tenant[CRD_GUID_LEN + 1],
                          struct crd_error *err)
{
    const char *configured = reconciler->options.tenant;
    if (crd_guid_is_valid(configured, strlen(configured))) {
        snprintf(tenant, CRD_GUID_LEN + 1, "%s", configured);
        return 0;
    }
    int64_t notified_at_ms = 0;
    struct crd_error lookup_err = {0};
    if (crd_store_newest_notified_job(reconciler->options.store, NULL, &notified_at_ms, tenant,
                                      &lookup_err) == 0) {
        return 0;
    }
    return crd_error_set(err, -EINVAL,
                         "[graph] tenant '%s' is not a GUID and no notification showed the "
                         "tenant id yet; set tenant to the directory (tenant) id",
                         configured);
}

/* Lists one window and enqueues what is new; the first pass starts at the last watermark. */
static int reconcile_pass(struct crd_reconciler *reconciler, bool first, struct crd_error *err)
{
    const struct crd_reconciler_options *options = &reconciler->options;
    char tenant[CRD_GUID_LEN + 1] = "";
    int r = resolve_tenant(reconciler, tenant, err);
    if (r < 0) {
        return r;
    }

    int64_t started_at_ms = crd_time_now_ms();
    int64_t since_ms = started_at_ms - options->window_ms;
    int64_t watermark_ms = 0;
    if (first && get_watermark(options, &watermark_ms) == 0 &&
        watermark_ms - options->window_ms < since_ms) {
        /* A call may be listed only hours after it started, so keep the window's overlap. */
        since_ms = watermark_ms - options->window_ms;
    }
    if (since_ms < started_at_ms - options->startup_max_ms) {
        since_ms = started_at_ms - options->startup_max_ms;
    }
    char shown[40];
    crd_time_format_iso8601(since_ms, shown, sizeof(shown));

    struct crd_reconcile_counts counts;
    r = crd_reconcile_since(reconciler->session, options->store, tenant, NULL, "reconcile",
                            since_ms, &counts, err);
    if (counts.enqueued > 0 && options->on_jobs != NULL) {
        options->on_jobs(options->on_jobs_context);
    }
    if (r < 0) {
        return crd_error_prefix(err,
                                "listing the call records started since %s (%" PRId64
                                " listed, %" PRId64 " enqueued so far)",
                                shown, counts.listed, counts.enqueued);
    }

    char text[24];
    snprintf(text, sizeof(text), "%" PRId64, started_at_ms);
    char key[SETTING_KEY_MAX];
    watermark_key(options, key, sizeof(key));
    r = crd_store_set_setting(options->store, key, text, err);
    if (r < 0) {
        return crd_error_prefix(err, "cannot save the reconcile watermark");
    }
    crd_log_info(&(const struct crd_log_ids){.tenant = options->tenant},
                 "reconcile: %" PRId64 " call records started since %s listed, %" PRId64
                 " of them new or changed and enqueued",
                 counts.listed, shown, counts.enqueued);
    return 0;
}

/* Waits up to delay_ms; returns false when the reconciler is stopping. */
static bool reconciler_wait(struct crd_reconciler *reconciler, int64_t delay_ms)
{
    int64_t due_ms = crd_time_monotonic_ms() + delay_ms;
    struct timespec deadline = {
        .tv_sec = (time_t)(due_ms / 1000),
        .tv_nsec = (long)(due_ms % 1000) * 1000000L,
    };
    pthread_mutex_lock(&reconciler->lock);
    while (!reconciler->stopping && crd_time_monotonic_ms() < due_ms) {
        (void)pthread_cond_timedwait(&reconciler->changed, &reconciler->lock, &deadline);
    }
    bool running = !reconciler->stopping;
    pthread_mutex_unlock(&reconciler->lock);
    return running;
}

static void *reconciler_main(void *arg)
{
    struct crd_reconciler *reconciler = arg;
    pthread_setname_np(pthread_self(), "reconciler");

    bool first = true;
    do {
        struct crd_error err = {0};
        int r = reconcile_pass(reconciler, first, &err);
        if (r == 0) {
            first = false;
        } else if (r != -ECANCELED) {
            crd_log_warn(&(const struct crd_log_ids){.tenant = reconciler->options.tenant},
                         "reconcile pass failed: %s; trying again in %" PRId64 " s",
                         err.message, reconciler->options.interval_ms / 1000);
        }
    } while (reconciler_wait(reconciler, reconciler->options.interval_ms));
    return NULL;
}

static void reconciler_free(struct crd_reconciler *reconciler)
{
    crd_graph_session_free(reconciler->session);
    pthread_cond_destroy(&reconciler->changed);
    pthread_mutex_destroy(&reconciler->lock);
    free(reconciler);
}

int crd_reconciler_start(const struct crd_reconciler_options *options,
                         struct crd_reconciler **ret_reconciler, struct crd_error *err)
{
    int r = 0;
    pthread_condattr_t attr;
    bool attr_ready = false;
    struct crd_reconciler *reconciler = NULL;
    if (options->interval_ms <= 0 || options->window_ms <= 0 || options->startup_max_ms <= 0) {
        r = crd_error_set(err, -EINVAL, "the reconcile interval, window and startup_max must be "
                          "positive");
        goto out;
    }
    if (pthread_condattr_init(&attr) != 0) {
        r = crd_error_set(err, -ENOMEM, "cannot initialize a condition variable");
        goto out;
    }
    attr_ready = true;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    reconciler = calloc(1, sizeof(*reconciler));
    if (reconciler == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    reconciler->options = *options;
    pthread_mutex_init(&reconciler->lock, NULL);
    pthread_cond_init(&reconciler->changed, &attr);

    r = crd_graph_session_new(options->graph, &reconciler->session, err);
    if (r < 0) {
        goto out;
    }
    r = -pthread_create(&reconciler->thread, NULL, reconciler_main, reconciler);
    if (r < 0) {
        r = crd_error_set(err, r, "cannot start the reconciler thread: %s", strerror(-r));
        goto out;
    }
    reconciler->thread_started = true;

    *ret_reconciler = reconciler;
    reconciler = NULL;
out:
    if (attr_ready) {
        pthread_condattr_destroy(&attr);
    }
    if (reconciler != NULL) {
        reconciler_free(reconciler);
    }
    return r;
}

void crd_reconciler_stop(struct crd_reconciler *reconciler)
{
    if (reconciler == NULL) {
        return;
    }
    pthread_mutex_lock(&reconciler->lock);
    reconciler->stopping = true;
    pthread_cond_broadcast(&reconciler->changed);
    pthread_mutex_unlock(&reconciler->lock);
    crd_graph_cancel(reconciler->options.graph);
    if (reconciler->thread_started) {
        pthread_join(reconciler->thread, NULL);
    }
    reconciler_free(reconciler);
}
