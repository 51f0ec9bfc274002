/* SPDX-License-Identifier: MIT */
/*
 * Shared by the store's source files: store.c (opening, schema, enqueue,
 * settings), store_jobs.c (the fetcher's side of the job queue) and
 * store_outbox.c (the dispatchers' side of the outbox).
 */
#ifndef CRD_STORE_INTERNAL_H
#define CRD_STORE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <sqlite3.h>

#include "store.h"

/* Statements prepared on first use and kept until the store is closed. */
enum crd_store_statement {
    CRD_STORE_STMT_RECOVER_JOBS,
    CRD_STORE_STMT_SELECT_DUE_JOB,
    CRD_STORE_STMT_MARK_JOB_RUNNING,
    CRD_STORE_STMT_NEXT_JOB_DUE,
    CRD_STORE_STMT_NEWEST_VERSION,
    CRD_STORE_STMT_INSERT_RECORD,
    CRD_STORE_STMT_INSERT_OUTBOX,
    CRD_STORE_STMT_FINISH_JOB,
    CRD_STORE_STMT_RESCHEDULE_JOB,
    CRD_STORE_STMT_POSTPONE_JOB,
    CRD_STORE_STMT_FAIL_JOB,
    CRD_STORE_STMT_SELECT_DUE_DELIVERY,
    CRD_STORE_STMT_NEXT_DELIVERY_DUE,
    CRD_STORE_STMT_ACK_DELIVERY,
    CRD_STORE_STMT_RETRY_DELIVERY,
    CRD_STORE_STMT_COUNT_DELIVERIES,
    CRD_STORE_STMT_NEWEST_NOTIFIED_JOB,
    CRD_STORE_STMT_JOB_PENDING,
    CRD_STORE_STMT__COUNT
};

/* One caller's batch in the group commit queue, defined in store.c. */
struct crd_store_batch;

struct crd_store {
    /*
     * The group commit queue of crd_store_enqueue_jobs(). enqueue_lock
     * protects the fields up to n_commits. No code path holds both locks at
     * once (store_lead_group() releases one before taking the other).
     */
    pthread_mutex_t enqueue_lock;
    pthread_cond_t enqueue_done;          /* a group finished: its batches have results */
    pthread_cond_t enqueue_changed;       /* a batch was queued or a group started */
    struct crd_store_batch *queue_head;   /* batches waiting for the next group */
    struct crd_store_batch **queue_tail;
    size_t n_queued;
    bool group_running;                   /* a leader has taken a group and not finished it */
    uint64_t n_batches;
    uint64_t n_groups;
    uint64_t n_commits;

    /*
     * Serializes every call on this store, and so protects all fields below.
     * The connection is opened with SQLITE_OPEN_NOMUTEX, so SQLite does no
     * locking of its own for it and must never see two threads at once.
     */
    pthread_mutex_t lock;
    sqlite3 *db;
    char *path;                       /* <state_directory>/callrecd.db, for messages */
    int64_t job_coalesce_ms;          /* options.job_coalesce_ms */
    sqlite3_stmt *enqueue_job;
    sqlite3_stmt *get_setting;
    sqlite3_stmt *set_setting;
    sqlite3_stmt *statements[CRD_STORE_STMT__COUNT];
};

/*
 * Fills err for a failed SQLite call, naming the database, the step and a
 * fix, and returns the negative errno value that store.h promises for rc.
 */
int crd_store_fail(const struct crd_store *store, int rc, const char *what, struct crd_error *err);

/* Runs SQL without results (BEGIN, COMMIT, a migration). Returns 0 or crd_store_fail()'s code. */
int crd_store_exec(struct crd_store *store, const char *sql, const char *what,
                   struct crd_error *err);

/* Ends an open transaction, if any. The error is already in err, so this one is dropped. */
void crd_store_rollback(struct crd_store *store);

/* Binds a string that must stay valid until the statement is reset. NULL binds SQL NULL. */
int crd_store_bind_text(sqlite3_stmt *stmt, int index, const char *value);

/*
 * Returns in *ret_stmt the cached statement `which`, preparing it from sql on
 * first use. The caller holds the lock, and resets the statement and clears
 * its bindings when done. The store owns the statement.
 */
int crd_store_statement_locked(struct crd_store *store, enum crd_store_statement which,
                               const char *sql, sqlite3_stmt **ret_stmt, struct crd_error *err);

/* Resets a cached statement and clears its bindings, ready for the next use. */
void crd_store_statement_done(sqlite3_stmt *stmt);

#endif
