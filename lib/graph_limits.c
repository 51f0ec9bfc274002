/* SPDX-License-Identifier: MIT */
/*
 * Request budgets that pace the Graph clients below Graph's call-record
 * limits: one sliding window for the tenant, one for List call records, and
 * one per call record in a bounded table.
 *
 * A window remembers the completion times of its last `limit` requests and
 * counts the requests in flight. A new request may start while the
 * completions younger than the window plus the requests in flight are fewer
 * than the limit. Graph counts a request when it arrives, which is never
 * later than its response here, so Graph never sees more than `limit`
 * requests within one window length.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "graph_internal.h"
#include "util.h"

/*
 * Call records tracked at once. A record fetch takes at least two requests
 * (the record and its participants), so the default tenant budget of 1,500
 * per window keeps at most 750 records active in one window.
 * NOTE: without a tenant budget, more than this many records within one
 * window make the next new record wait for an entry to become idle.
 */
#define RECORD_TABLE_SIZE 1024

struct rate_window {
    int64_t *done_ms;   /* ring of completion times (monotonic), capacity `limit` */
    unsigned limit;     /* 0: unlimited */
    unsigned head;      /* oldest completion */
    unsigned count;     /* completions in the ring */
    unsigned in_flight; /* requests started and not yet released */
};

struct record_entry {
    char call_id[CRD_GUID_LEN + 1]; /* "" when the entry is free */
    struct rate_window window;
};

struct crd_graph_limits {
    int64_t window_ms;
    pthread_mutex_t lock;
    pthread_cond_t changed; /* on CLOCK_MONOTONIC: a release, or a cancel */
    struct rate_window tenant;
    struct rate_window list;
    unsigned record_limit;
    struct record_entry *records; /* RECORD_TABLE_SIZE entries; NULL without a record budget */
};

/* ---- one window ------------------------------------------------------------------------- */

static int window_init(struct rate_window *window, unsigned limit)
{
    *window = (struct rate_window){.limit = limit};
    if (limit == 0) {
        return 0;
    }
    window->done_ms = calloc(limit, sizeof(*window->done_ms));
    return window->done_ms != NULL ? 0 : -ENOMEM;
}

static void window_forget_before(struct rate_window *window, int64_t oldest_kept_ms)
{
    while (window->count > 0 && window->done_ms[window->head] <= oldest_kept_ms) {
        window->head = (window->head + 1) % window->limit;
        window->count--;
    }
}

/* Monotonic time from which the window has room for one more request; INT64_MAX: after a release. */
static int64_t window_ready_at(struct rate_window *window, int64_t window_ms, int64_t now_ms)
{
    if (window->limit == 0) {
        return now_ms;
    }
    window_forget_before(window, now_ms - window_ms);
    if (window->count + window->in_flight < window->limit) {
        return now_ms;
    }
    if (window->count == 0) {
        return INT64_MAX;
    }
    return window->done_ms[window->head] + window_ms;
}

static bool window_is_idle(struct rate_window *window, int64_t window_ms, int64_t now_ms)
{
    window_forget_before(window, now_ms - window_ms);
    return window->count == 0 && window->in_flight == 0;
}

static void window_take(struct rate_window *window)
{
    if (window->limit > 0) {
        window->in_flight++;
    }
}

/* count + in_flight never exceeds limit, so the ring has room for the completion. */
static void window_release(struct rate_window *window, int64_t now_ms)
{
    if (window->limit == 0 || window->in_flight == 0) {
        return;
    }
    window->in_flight--;
    window->done_ms[(window->head + window->count) % window->limit] = now_ms;
    window->count++;
}

/* ---- the record table ------------------------------------------------------------------- */

/*
 * Finds the entry of call_id, or claims a free or idle one for it. Returns
 * its index, or -1 when every entry is busy; then *ret_idle_at_ms is the
 * earliest time one becomes idle (INT64_MAX: after a release).
 */
static long records_find_locked(struct crd_graph_limits *limits, const char *call_id,
                                int64_t now_ms, int64_t *ret_idle_at_ms)
{
    long reusable = -1;
    int64_t idle_at_ms = INT64_MAX;
    for (long i = 0; i < RECORD_TABLE_SIZE; i++) {
        struct record_entry *entry = &limits->records[i];
        if (entry->call_id[0] != '\0' && strcasecmp(entry->call_id, call_id) == 0) {
            return i;
        }
        if (reusable >= 0) {
            continue;
        }
        if (entry->call_id[0] == '\0' || window_is_idle(&entry->window, limits->window_ms, now_ms)) {
            reusable = i;
        } else if (entry->window.in_flight == 0) {
            const struct rate_window *w = &entry->window;
            int64_t newest_ms = w->done_ms[(w->head + w->count - 1) % w->limit];
            if (newest_ms + limits->window_ms < idle_at_ms) {
                idle_at_ms = newest_ms + limits->window_ms;
            }
        }
    }
    if (reusable < 0) {
        *ret_idle_at_ms = idle_at_ms;
        return -1;
    }

    struct record_entry *entry = &limits->records[reusable];
    if (entry->window.done_ms == NULL && window_init(&entry->window, limits->record_limit) < 0) {
        /* Out of memory: pace this request by the tenant budget alone. */
        *ret_idle_at_ms = now_ms;
        return -1;
    }
    snprintf(entry->call_id, sizeof(entry->call_id), "%s", call_id);
    entry->window.head = 0;
    entry->window.count = 0;
    return reusable;
}

/* ---- the shared object ------------------------------------------------------------------ */

int crd_graph_limits_new(const struct crd_graph_limits_options *options,
                         struct crd_graph_limits **ret_limits, struct crd_error *err)
{
    int r = 0;
    pthread_condattr_t attr;
    bool attr_ready = false;
    struct crd_graph_limits *limits = calloc(1, sizeof(*limits));
    if (limits == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    limits->window_ms = options->window_ms != 0 ? options->window_ms : CRD_GRAPH_RATE_WINDOW_MS;
    limits->record_limit = options->record_requests;
    pthread_mutex_init(&limits->lock, NULL);
    if (pthread_condattr_init(&attr) != 0) {
        r = crd_error_set(err, -ENOMEM, "cannot initialize a condition variable");
        goto out;
    }
    attr_ready = true;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&limits->changed, &attr);

    if (window_init(&limits->tenant, options->tenant_requests) < 0 ||
        window_init(&limits->list, options->list_requests) < 0) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    if (options->record_requests > 0) {
        limits->records = calloc(RECORD_TABLE_SIZE, sizeof(*limits->records));
        if (limits->records == NULL) {
            r = crd_error_set(err, -ENOMEM, "out of memory");
            goto out;
        }
    }

    *ret_limits = limits;
    limits = NULL;
out:
    if (attr_ready) {
        pthread_condattr_destroy(&attr);
    }
    crd_graph_limits_free(limits);
    return r;
}

void crd_graph_limits_free(struct crd_graph_limits *limits)
{
    if (limits == NULL) {
        return;
    }
    if (limits->records != NULL) {
        for (size_t i = 0; i < RECORD_TABLE_SIZE; i++) {
            free(limits->records[i].window.done_ms);
        }
        free(limits->records);
    }
    free(limits->tenant.done_ms);
    free(limits->list.done_ms);
    pthread_cond_destroy(&limits->changed);
    pthread_mutex_destroy(&limits->lock);
    free(limits);
}

void crd_graph_limits_wake(struct crd_graph_limits *limits)
{
    pthread_mutex_lock(&limits->lock);
    pthread_cond_broadcast(&limits->changed);
    pthread_mutex_unlock(&limits->lock);
}

static int64_t latest(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

int crd_graph_limits_acquire(struct crd_graph_limits *limits, enum graph_budget budget,
                             const char *call_id, const atomic_bool *cancelled,
                             struct graph_ticket *ret_ticket, struct crd_error *err)
{
    struct graph_ticket ticket = {.record = -1};
    if (budget == GRAPH_BUDGET_NONE) {
        *ret_ticket = ticket;
        return 0;
    }
    bool per_record = budget == GRAPH_BUDGET_RECORD && limits->records != NULL && call_id != NULL;

    int r = 0;
    pthread_mutex_lock(&limits->lock);
    for (;;) {
        if (atomic_load(cancelled)) {
            r = crd_error_set(err, -ECANCELED, "cancelled while waiting for the request budget");
            break;
        }
        int64_t now_ms = crd_time_monotonic_ms();
        int64_t ready_ms = window_ready_at(&limits->tenant, limits->window_ms, now_ms);
        if (budget == GRAPH_BUDGET_LIST) {
            ready_ms = latest(ready_ms, window_ready_at(&limits->list, limits->window_ms, now_ms));
        }
        long record = -1;
        if (per_record) {
            int64_t idle_at_ms = now_ms;
            record = records_find_locked(limits, call_id, now_ms, &idle_at_ms);
            ready_ms = latest(ready_ms, record >= 0 ? window_ready_at(&limits->records[record].window,
                                                                      limits->window_ms, now_ms)
                                                    : idle_at_ms);
        }

        if (ready_ms <= now_ms) {
            window_take(&limits->tenant);
            ticket.tenant = limits->tenant.limit > 0;
            if (budget == GRAPH_BUDGET_LIST) {
                window_take(&limits->list);
                ticket.list = limits->list.limit > 0;
            }
            if (record >= 0) {
                window_take(&limits->records[record].window);
                ticket.record = record;
            }
            break;
        }
        if (ready_ms == INT64_MAX) {
            (void)pthread_cond_wait(&limits->changed, &limits->lock);
        } else {
            struct timespec deadline = {
                .tv_sec = (time_t)(ready_ms / 1000),
                .tv_nsec = (long)(ready_ms % 1000) * 1000000L,
            };
            (void)pthread_cond_timedwait(&limits->changed, &limits->lock, &deadline);
        }
    }
    pthread_mutex_unlock(&limits->lock);
    if (r == 0) {
        *ret_ticket = ticket;
    }
    return r;
}

void crd_graph_limits_release(struct crd_graph_limits *limits, const struct graph_ticket *ticket)
{
    if (!ticket->tenant && !ticket->list && ticket->record < 0) {
        return;
    }
    pthread_mutex_lock(&limits->lock);
    int64_t now_ms = crd_time_monotonic_ms();
    if (ticket->tenant) {
        window_release(&limits->tenant, now_ms);
    }
    if (ticket->list) {
        window_release(&limits->list, now_ms);
    }
    if (ticket->record >= 0) {
        window_release(&limits->records[ticket->record].window, now_ms);
    }
    pthread_cond_broadcast(&limits->changed);
    pthread_mutex_unlock(&limits->lock);
}
