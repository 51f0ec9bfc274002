/* SPDX-License-Identifier: MIT */
/*
 * The durable state: one SQLite database (WAL mode) in the state directory.
 * Every change is one transaction, except that concurrent enqueues share
 * one (group commit). The schema is versioned with
 * PRAGMA user_version and upgraded by ordered migrations when opened.
 *
 * Thread safety: every function except crd_store_close() may be called from
 * any thread; a mutex inside struct crd_store serializes access to its
 * connection. Concurrent calls of crd_store_enqueue_jobs() are grouped into
 * one transaction (see there and store.c).
 */
#ifndef CRD_STORE_H
#define CRD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "error.h"
#include "util.h"

#define CRD_STORE_FILE_NAME "callrecd.db"

struct crd_store;

struct crd_store_options {
    const char *state_directory;      /* created with mode 0700 when missing */
    enum crd_durability durability;
    unsigned busy_timeout_ms;         /* 0: a default of 5000 */
    /*
     * A new or re-armed job becomes due this long after its first
     * notification, so that a burst of notifications for one call, which
     * coalesce into the pending job, costs one fetch. 0: due at once.
     */
    uint64_t job_coalesce_ms;
};

/* Summary of the database as crd_store_open() found it. */
struct crd_store_open_report {
    int schema_version_before;        /* 0 for a new database */
    int schema_version;               /* after migrations */
    int64_t pending_jobs;             /* jobs waiting for a fetch */
};

/*
 * Opens or creates the database, applies migrations and sets the journal
 * mode and synchronous level. report may be NULL. On success the caller owns
 * *ret_store and closes it with crd_store_close(). Returns 0, -EINVAL for bad
 * options, -ENOTSUP for a schema newer than this build or a file system
 * without WAL support, or -EACCES, -EROFS, -ENOSPC, -ENOENT, -ENOTDIR, -EBUSY,
 * -EIO, -ENOMEM with a message naming the path and a fix.
 */
int crd_store_open(const struct crd_store_options *options, struct crd_store **ret_store,
                   struct crd_store_open_report *report, struct crd_error *err);

/*
 * Closes the database cleanly (checkpointing the WAL). Accepts NULL. No other
 * thread may use the store during or after this call.
 */
void crd_store_close(struct crd_store *store);

/* The schema version this build writes. */
int crd_store_schema_version(void);

/* One accepted change notification, as the listener hands it over. */
struct crd_job_notice {
    const char *tenant_id;            /* GUID */
    const char *call_id;              /* GUID */
    const char *subscription_id;      /* GUID */
    const char *change_type;          /* "created", "updated", ... */
    int64_t notified_at_ms;           /* when the listener received it, ms since the epoch */
};

/*
 * Inserts one job per notice, all or none. A notice for a (tenant, call id)
 * that already has a job coalesces into it: the notification count and
 * last-notified time are updated and a finished job is made due again, but no
 * second row appears. subscription_id and change_type may be NULL.
 *
 * Group commit: concurrent calls share one transaction and one commit, so
 * that with durability = full one fsync covers several callers. Each call's
 * notices are written inside their own savepoint, so a call whose notices
 * fail is rolled back alone while the other calls in the transaction still
 * commit. A call returns 0 only after the transaction containing its notices
 * has committed, and err gets a message about its own failure only.
 *
 * Returns 0 or a negative code. -EINVAL means a tenant or call id is missing
 * or not a GUID, a subscription id is not a GUID, or a time is negative; all
 * notices are checked before anything is written. -EIO, -ENOSPC, -EROFS,
 * -EBUSY and -ENOMEM mean none of this call's notices were stored: its
 * savepoint or the whole transaction was rolled back. A failed COMMIT fails
 * every call in that transaction.
 */
int crd_store_enqueue_jobs(struct crd_store *store, const struct crd_job_notice *notices,
                           size_t n_notices, struct crd_error *err);

/* Counters of crd_store_enqueue_jobs() since the store was opened. */
struct crd_store_enqueue_counts {
    uint64_t batches;                 /* calls with at least one valid notice */
    uint64_t transactions;            /* transactions started, one per group of calls */
    uint64_t commits;                 /* transactions committed */
};

/* Copies the enqueue counters into *ret_counts, for tests and diagnostics. */
void crd_store_get_enqueue_counts(struct crd_store *store,
                                  struct crd_store_enqueue_counts *ret_counts);

/*
 * Test hook: blocks until at least n_transactions enqueue transactions have
 * started and at least n_queued calls of crd_store_enqueue_jobs() wait for
 * the next one. It waits on a condition variable, without a timeout, so a
 * test can line up concurrent callers without sleeping.
 */
void crd_store_wait_enqueue_queue(struct crd_store *store, uint64_t n_transactions,
                                  size_t n_queued);

/*
 * Small key-value settings that must survive restarts (the generated
 * clientState, the subscription id). *ret_value is a malloc'ed string the
 * caller frees; -ENOENT when the key is absent.
 */
int crd_store_get_setting(struct crd_store *store, const char *key, char **ret_value,
                          struct crd_error *err);
int crd_store_set_setting(struct crd_store *store, const char *key, const char *value,
                          struct crd_error *err);

/*
 * Reads the connection's PRAGMA synchronous level into *ret_level: 1 (NORMAL)
 * for CRD_DURABILITY_PROCESS, 2 (FULL) for CRD_DURABILITY_FULL. This is a
 * read-only diagnostic for tests, because the level belongs to the connection
 * and no other connection can read it.
 */
int crd_store_get_synchronous(struct crd_store *store, int *ret_level, struct crd_error *err);

/* ---- jobs: claiming, finishing, rescheduling (the fetcher's side) ---------------------------- */

/* A job claimed by a fetch worker. */
struct crd_job {
    char tenant_id[CRD_GUID_LEN + 1];
    char call_id[CRD_GUID_LEN + 1];
    char subscription_id[CRD_GUID_LEN + 1];   /* "" when unknown */
    int64_t first_notified_at_ms;
    int64_t last_notified_at_ms;
    int64_t claimed_at_ms;
    unsigned attempts;                         /* fetch attempts before this one */
    int64_t notification_count;                /* notices coalesced into the job when claimed */
};

/*
 * Marks every job left in state 'running' (by a process that died) as pending
 * again and due now. Called once at start-up. *ret_count (may be NULL) gets
 * the number of jobs recovered.
 */
int crd_store_recover_jobs(struct crd_store *store, int64_t *ret_count, struct crd_error *err);

/*
 * Claims the pending job with the earliest due time not after now_ms and
 * marks it running, claimed at now_ms (wall-clock ms since the epoch, the
 * clock of crd_job_notice.notified_at_ms). Returns 0, or -ENOENT when no job
 * is due; then *ret_next_due_ms (may be NULL) gets the earliest future due
 * time, or 0 when there are no pending jobs at all.
 */
int crd_store_claim_job(struct crd_store *store, int64_t now_ms, struct crd_job *ret_job,
                        int64_t *ret_next_due_ms, struct crd_error *err);

/*
 * As crd_store_claim_job(), for the jobs of one tenant only (tenant ids
 * compare case-insensitively); NULL claims a job of any tenant.
 */
int crd_store_claim_tenant_job(struct crd_store *store, const char *tenant_id, int64_t now_ms,
                               struct crd_job *ret_job, int64_t *ret_next_due_ms,
                               struct crd_error *err);

/* One fetched version of a call record, ready to be stored. */
struct crd_record_version {
    int64_t version;
    const char *record_json;                   /* the complete record, compact JSON */
    size_t record_json_len;
    int64_t fetched_at_ms;
};

/*
 * Finishes a job in one transaction. When record is newer than the newest
 * version stored for the call, it is stored, one outbox row per sink name is
 * created, and *ret_stored is true. An equal or older version is a
 * duplicate, and *ret_stored is false. The job becomes 'done', or 'pending'
 * and due now when a notification for the call arrived after it was claimed.
 * That is the case when its notification time is later than the claim time,
 * or when the job's notification count grew since the claim. The count also
 * catches a notice in the claim's millisecond or one stamped after the wall
 * clock stepped back. Sink names must be 1 to 64 bytes long and distinct,
 * or the call returns -EINVAL.
 */
int crd_store_complete_job(struct crd_store *store, const struct crd_job *job,
                           const struct crd_record_version *record,
                           const char *const *sink_names, size_t n_sinks, bool *ret_stored,
                           struct crd_error *err);

/*
 * Makes the job pending again, due at due_at_ms, counting one more attempt
 * and keeping last_error (may be NULL). -ENOENT when the job does not exist.
 */
int crd_store_reschedule_job(struct crd_store *store, const struct crd_job *job, int64_t due_at_ms,
                             const char *last_error, struct crd_error *err);

/*
 * As crd_store_reschedule_job(), but the failure does not count as an
 * attempt: for failures that are not the job's fault, such as a Graph
 * outage or a shutdown. -ENOENT when the job does not exist.
 */
int crd_store_postpone_job(struct crd_store *store, const struct crd_job *job, int64_t due_at_ms,
                           const char *last_error, struct crd_error *err);

/*
 * Gives the job up: state 'failed' with last_error. A later notification
 * re-arms it, and so does one that arrived during this fetch: then the job
 * is pending and due now instead. -ENOENT when the job does not exist.
 */
int crd_store_fail_job(struct crd_store *store, const struct crd_job *job, const char *last_error,
                       struct crd_error *err);

/*
 * The job notified last, of tenant_id or of any tenant when it is NULL: its
 * last_notified_at (ms since the epoch) and its tenant id, the starting
 * point of a backfill. -ENOENT when there are no such jobs.
 */
int crd_store_newest_notified_job(struct crd_store *store, const char *tenant_id,
                                  int64_t *ret_notified_at_ms,
                                  char ret_tenant_id[CRD_GUID_LEN + 1], struct crd_error *err);

/*
 * Sets *ret_pending to whether the call has a job waiting for its fetch
 * (state pending), which will fetch the newest version anyway.
 */
int crd_store_job_pending(struct crd_store *store, const char *tenant_id, const char *call_id,
                          bool *ret_pending, struct crd_error *err);

/* Newest stored version of a call, or -ENOENT. */
int crd_store_newest_version(struct crd_store *store, const char *tenant_id, const char *call_id,
                             int64_t *ret_version, struct crd_error *err);

/* ---- outbox: one row per (sink, record version) until the sink confirms ------------------------ */

struct crd_delivery {
    int64_t id;                                /* outbox row id */
    char sink[65];
    char tenant_id[CRD_GUID_LEN + 1];
    char call_id[CRD_GUID_LEN + 1];
    int64_t version;
    int64_t first_notified_at_ms;
    int64_t fetched_at_ms;
    unsigned attempts;                         /* delivery attempts before this one */
    char *record_json;                         /* malloc'ed; freed by crd_delivery_clear() */
    size_t record_json_len;
};

/*
 * Claims the next due delivery of one sink: the oldest row whose due time
 * has come, and never a version of a call while an older version of the same
 * call is still waiting for that sink. Returns 0, or -ENOENT when none is due;
 * then *ret_next_due_ms (may be NULL) gets the earliest future due time, or 0.
 */
int crd_store_claim_delivery(struct crd_store *store, const char *sink, int64_t now_ms,
                             struct crd_delivery *ret_delivery, int64_t *ret_next_due_ms,
                             struct crd_error *err);

/* Removes the row after the sink confirmed delivery. */
int crd_store_ack_delivery(struct crd_store *store, int64_t id, struct crd_error *err);

/* Keeps the row for a later attempt at due_at_ms, counting one more attempt. */
int crd_store_retry_delivery(struct crd_store *store, int64_t id, int64_t due_at_ms,
                             const char *last_error, struct crd_error *err);

/* Number of rows waiting for one sink, for status and tests. */
int crd_store_count_deliveries(struct crd_store *store, const char *sink, int64_t *ret_count,
                               struct crd_error *err);

/*
 * Measures one sink's backlog with one query: the number of its outbox rows
 * and the created_at (ms since the epoch) of the oldest, 0 when it has none.
 */
int crd_store_outbox_backlog(struct crd_store *store, const char *sink, int64_t *ret_rows,
                             int64_t *ret_oldest_created_at_ms, struct crd_error *err);

void crd_delivery_clear(struct crd_delivery *delivery);

/*
 * Number of jobs in one state ("pending", "running", "done" or "failed"), for
 * status. -EINVAL for another state.
 */
int crd_store_count_jobs(struct crd_store *store, const char *state, int64_t *ret_count,
                         struct crd_error *err);

/* ---- dead letters: jobs and deliveries given up, kept until an operator retries them ---------- */

enum crd_dead_letter_kind {
    CRD_DEAD_LETTER_JOB,
    CRD_DEAD_LETTER_DELIVERY,
    CRD_DEAD_LETTER_KIND__COUNT
};

/* One dead letter, as crd_store_list_dead_letters() hands it to its callback. */
struct crd_dead_letter {
    int64_t id;
    enum crd_dead_letter_kind kind;
    char tenant_id[CRD_GUID_LEN + 1];
    char call_id[CRD_GUID_LEN + 1];
    int64_t version;                           /* deliveries; -1 for a job */
    char sink[65];                             /* deliveries; "" for a job */
    unsigned attempts;                         /* failed attempts in all */
    const char *last_error;                    /* borrowed for the callback; "" when none */
    int64_t first_failed_at_ms;                /* first failed attempt since the last success */
    int64_t last_failed_at_ms;                 /* when it was moved to the dead letters */
};

/*
 * Called once per dead letter, with the store's lock held: it must not call
 * the store. Returns 0 to go on, or a negative code that stops the listing
 * and becomes its result.
 */
typedef int (*crd_dead_letter_fn)(const struct crd_dead_letter *letter, void *context);

/* "job" or "delivery". */
const char *crd_dead_letter_kind_name(enum crd_dead_letter_kind kind);

/*
 * Gives the claimed job up into the dead letters, in one transaction: the
 * job becomes 'failed' with one more attempt and last_error, and a dead
 * letter of kind job records it. A job notified since its claim is made
 * pending and due now instead, as in crd_store_fail_job(), and gets no dead
 * letter. *ret_moved (may be NULL) is set to whether the job moved. A later
 * notification re-arms the failed job as before, and the job's dead letter
 * is removed when a fetch of the call completes. -ENOENT when the job does
 * not exist.
 */
int crd_store_dead_letter_job(struct crd_store *store, const struct crd_job *job,
                              const char *last_error, bool *ret_moved, struct crd_error *err);

/*
 * Moves outbox row id into the dead letters in one transaction, counting
 * the attempt that just failed and keeping last_error. The row leaves the
 * outbox, so newer versions of the call go on to the sink; the stored
 * record stays for a retry. -ENOENT when the row does not exist.
 */
int crd_store_dead_letter_delivery(struct crd_store *store, int64_t id, const char *last_error,
                                   struct crd_error *err);

/* Calls fn for every dead letter, oldest last failure first. */
int crd_store_list_dead_letters(struct crd_store *store, crd_dead_letter_fn fn, void *context,
                                struct crd_error *err);

/*
 * Number of dead letters of one kind. For deliveries, sink selects one
 * sink's; NULL counts every sink's. sink must be NULL for jobs.
 */
int crd_store_count_dead_letters(struct crd_store *store, enum crd_dead_letter_kind kind,
                                 const char *sink, int64_t *ret_count, struct crd_error *err);

/*
 * Re-arms dead letters in one transaction and removes them: a job becomes
 * pending with no attempts and due at now_ms (a running job is left alone),
 * and a delivery goes back to the outbox due at now_ms. call_id (NULL: every
 * call) and sink (NULL: jobs and every sink's deliveries; else only that
 * sink's deliveries) select them. *ret_jobs and *ret_deliveries (each may
 * be NULL) get the numbers re-armed.
 *
 * NOTE: a re-armed delivery goes out even when a newer version of the call
 * already reached the sink, so that sink then receives the versions out of order.
 */
int crd_store_retry_dead_letters(struct crd_store *store, const char *call_id, const char *sink,
                                 int64_t now_ms, int64_t *ret_jobs, int64_t *ret_deliveries,
                                 struct crd_error *err);

#endif
