/* SPDX-License-Identifier: MIT */
/*
 * Reconciliation. Graph does not promise a change notification for every
 * call record. So a thread named "reconciler" lists the call records of a
 * recent window at an interval, and enqueues a job for every (call id,
 * version) the store has not stored yet. At start its first pass reaches
 * back to the watermark of the previous run, kept in the store's settings.
 * Listings go through the Graph client's List call records budget.
 *
 * crd_reconcile_since() is the listing step alone, shared with the
 * subscription manager's backfill.
 */
#ifndef CRD_RECONCILER_H
#define CRD_RECONCILER_H

#include <stdint.h>

#include "error.h"
#include "graph.h"
#include "store.h"

/* Progress of one listing; kept up to date while it runs, so it is valid after a failure too. */
struct crd_reconcile_counts {
    int64_t listed;   /* call records Graph listed */
    int64_t enqueued; /* of them, versions newer than the stored one, enqueued as jobs */
};

/*
 * Lists the call records that started at or after since_ms (wall clock, ms
 * since the epoch) and enqueues a job for each whose listed version is newer
 * than the stored one. A call that already has a job coalesces into it.
 * Items whose id is not a GUID are skipped. tenant_id must be a GUID;
 * subscription_id (may be NULL) and change_type are recorded on the jobs.
 * counts (not NULL) is set to zero first. Returns 0 or the error of the
 * listing (see crd_graph_list_call_records()) or of the store.
 * Thread-safe with one session per thread.
 */
int crd_reconcile_since(struct crd_graph_session *session, struct crd_store *store,
                        const char *tenant_id, const char *subscription_id,
                        const char *change_type, int64_t since_ms,
                        struct crd_reconcile_counts *counts, struct crd_error *err);

struct crd_reconciler;

struct crd_reconciler_options {
    struct crd_graph *graph; /* borrowed; stopping the reconciler cancels it, so give it its own */
    struct crd_store *store; /* borrowed */
    const char *tenant;      /* the tenant: a GUID or a domain name; borrowed */
    const char *setting_prefix; /* prepended to the watermark's store key; NULL or "" for none */
    int64_t interval_ms;     /* between passes; > 0 */
    int64_t window_ms;       /* a pass lists the calls started this long ago or later */
    int64_t startup_max_ms;  /* how far back the first pass may reach */
    void (*on_jobs)(void *context); /* called after a pass that enqueued jobs; may be NULL */
    void *on_jobs_context;
};

/*
 * Starts the thread; its first pass runs at once. The borrowed pointers must
 * outlive crd_reconciler_stop(). Returns 0, -EINVAL or -ENOMEM.
 */
int crd_reconciler_start(const struct crd_reconciler_options *options,
                         struct crd_reconciler **ret_reconciler, struct crd_error *err);

/* Stops the thread, cancelling a listing in progress, and frees it. Accepts NULL. */
void crd_reconciler_stop(struct crd_reconciler *reconciler);

#endif
