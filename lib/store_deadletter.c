/* SPDX-License-Identifier: MIT */
/*
 * Dead letters: deliveries a sink rejected for good or that ran out of
 * retries, and the listing, counting and retrying of every dead letter for
 * callrecctl. The job side of moving a job into the dead letters is in
 * store_jobs.c. These calls are rare, so their statements are prepared per
 * call instead of cached.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <sqlite3.h>

#include "store.h"
#include "store_internal.h"
#include "util.h"

#define DEADLETTER_COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))

/* ?1 the outbox row id, ?2 the last error, ?3 now. The failed attempt is counted here. */
static const char insert_delivery_dead_letter_sql[] =
    "INSERT INTO dead_letters (kind, tenant_id, call_id, version, sink, attempts, last_error,"
    "                          first_failed_at, last_failed_at)"
    " SELECT 'delivery', tenant_id, call_id, version, sink, attempts + 1, ?2,"
    "        coalesce(first_failed_at, ?3), ?3"
    " FROM outbox WHERE id = ?1"
    " ON CONFLICT (sink, tenant_id, call_id, version) WHERE kind = 'delivery' DO UPDATE SET"
    "  attempts = dead_letters.attempts + excluded.attempts, last_error = excluded.last_error,"
    "  last_failed_at = excluded.last_failed_at";

static const char delete_outbox_row_sql[] = "DELETE FROM outbox WHERE id = ?1";

static const char list_dead_letters_sql[] =
    "SELECT id, kind, tenant_id, call_id, version, sink, attempts, last_error, first_failed_at,"
    "       last_failed_at"
    " FROM dead_letters ORDER BY last_failed_at, id";

static const char count_dead_letters_sql[] =
    "SELECT count(*) FROM dead_letters WHERE kind = ?1 AND (?2 IS NULL OR sink = ?2)";

static const char count_jobs_sql[] = "SELECT count(*) FROM jobs WHERE state = ?1";

/*
 * Retry selection: ?1 now, ?2 the call id or NULL for every call, ?3 the sink
 * or NULL. A sink selects only deliveries, so jobs match only when ?3 is NULL.
 */
#define DEAD_LETTER_SELECTED_JOBS                                                                  \
    " kind = 'job' AND (?2 IS NULL OR call_id = ?2) AND ?3 IS NULL"
#define DEAD_LETTER_SELECTED_DELIVERIES                                                            \
    " kind = 'delivery' AND (?2 IS NULL OR call_id = ?2) AND (?3 IS NULL OR sink = ?3)"

/*
 * Makes each selected job pending and due now with no attempts. A running
 * job keeps its state, and its fetch decides. A job row that is gone is
 * created again.
 */
static const char retry_jobs_sql[] =
    "INSERT INTO jobs (tenant_id, call_id, first_notified_at, last_notified_at,"
    "                  notification_count, state, due_at, attempts, created_at, updated_at)"
    " SELECT tenant_id, call_id, ?1, ?1, 1, 'pending', ?1, 0, ?1, ?1"
    " FROM dead_letters WHERE" DEAD_LETTER_SELECTED_JOBS
    " ON CONFLICT (tenant_id, call_id) DO UPDATE SET"
    "  state = CASE WHEN state = 'running' THEN state ELSE 'pending' END,"
    "  due_at = CASE WHEN state = 'running' THEN due_at ELSE excluded.due_at END,"
    "  attempts = CASE WHEN state = 'running' THEN attempts ELSE 0 END,"
    "  first_failed_at = CASE WHEN state = 'running' THEN first_failed_at ELSE NULL END,"
    "  updated_at = excluded.updated_at";

/* Puts each selected delivery back into the outbox, due now with no attempts. */
static const char retry_deliveries_sql[] =
    "INSERT INTO outbox (sink, tenant_id, call_id, version, due_at, attempts, created_at)"
    " SELECT sink, tenant_id, call_id, version, ?1, 0, ?1"
    " FROM dead_letters WHERE" DEAD_LETTER_SELECTED_DELIVERIES
    " ON CONFLICT (sink, tenant_id, call_id, version) DO UPDATE SET due_at = excluded.due_at";

static const char delete_retried_sql[] =
    "DELETE FROM dead_letters WHERE (" DEAD_LETTER_SELECTED_JOBS ") OR ("
    DEAD_LETTER_SELECTED_DELIVERIES ")";

static const char *const dead_letter_kind_names[CRD_DEAD_LETTER_KIND__COUNT] = {
    [CRD_DEAD_LETTER_JOB] = "job",
    [CRD_DEAD_LETTER_DELIVERY] = "delivery",
};

const char *crd_dead_letter_kind_name(enum crd_dead_letter_kind kind)
{
    return (unsigned)kind < CRD_DEAD_LETTER_KIND__COUNT ? dead_letter_kind_names[kind] : "unknown";
}

/* One parameter of a statement prepared per call: text (NULL binds SQL NULL) or an integer. */
struct deadletter_value {
    const char *text;
    int64_t integer;
    bool is_text;
};

#define DEADLETTER_TEXT(value) ((struct deadletter_value){.text = (value), .is_text = true})
#define DEADLETTER_INT(value) ((struct deadletter_value){.integer = (value)})

/* Prepares sql and binds values to ?1, ?2, ... The caller holds the lock and finalizes. */
static int deadletter_prepare_locked(struct crd_store *store, const char *sql,
                                     const struct deadletter_value *values, size_t n_values,
                                     const char *what, sqlite3_stmt **ret_stmt,
                                     struct crd_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(store->db, sql, -1, &stmt, NULL);
    for (size_t i = 0; i < n_values && rc == SQLITE_OK; i++) {
        if (values[i].is_text) {
            rc = crd_store_bind_text(stmt, (int)i + 1, values[i].text);
        } else {
            rc = sqlite3_bind_int64(stmt, (int)i + 1, values[i].integer);
        }
    }
    if (rc != SQLITE_OK) {
        int r = crd_store_fail(store, rc, what, err);
        sqlite3_finalize(stmt);
        return r;
    }
    *ret_stmt = stmt;
    return 0;
}

/* Runs a statement without results; *ret_changes (may be NULL) gets the rows it changed. */
static int deadletter_run_locked(struct crd_store *store, const char *sql,
                                 const struct deadletter_value *values, size_t n_values,
                                 const char *what, int64_t *ret_changes, struct crd_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int r = deadletter_prepare_locked(store, sql, values, n_values, what, &stmt, err);
    if (r < 0) {
        return r;
    }
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE) {
        r = crd_store_fail(store, rc, what, err);
    } else if (ret_changes != NULL) {
        *ret_changes = sqlite3_changes(store->db);
    }
    sqlite3_finalize(stmt);
    return r;
}

/* Runs a count(*) query into *ret_count. */
static int deadletter_count(struct crd_store *store, const char *sql,
                            const struct deadletter_value *values, size_t n_values,
                            const char *what, int64_t *ret_count, struct crd_error *err)
{
    pthread_mutex_lock(&store->lock);

    sqlite3_stmt *stmt = NULL;
    int r = deadletter_prepare_locked(store, sql, values, n_values, what, &stmt, err);
    if (r < 0) {
        goto out;
    }
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW) {
        r = crd_store_fail(store, rc, what, err);
        goto out;
    }
    *ret_count = sqlite3_column_int64(stmt, 0);

out:
    sqlite3_finalize(stmt);
    pthread_mutex_unlock(&store->lock);
    return r;
}

int crd_store_dead_letter_delivery(struct crd_store *store, int64_t id, const char *last_error,
                                   struct crd_error *err)
{
    if (store == NULL) {
        return crd_error_set(err, -EINVAL, "store: dead_letter_delivery called without a store");
    }

    pthread_mutex_lock(&store->lock);

    int64_t inserted = 0;
    struct deadletter_value values[] = {DEADLETTER_INT(id), DEADLETTER_TEXT(last_error),
                                        DEADLETTER_INT(crd_time_now_ms())};
    int r = crd_store_exec(store, "BEGIN IMMEDIATE", "starting to dead-letter a delivery", err);
    if (r < 0) {
        goto out;
    }
    r = deadletter_run_locked(store, insert_delivery_dead_letter_sql, values, DEADLETTER_COUNT_OF(values),
                              "recording the delivery's dead letter", &inserted, err);
    if (r < 0) {
        goto out;
    }
    if (inserted == 0) {
        r = crd_error_set(err, -ENOENT, "database '%s': outbox row %lld not found, so it cannot "
                          "be dead-lettered", store->path, (long long)id);
        goto out;
    }
    r = deadletter_run_locked(store, delete_outbox_row_sql, values, 1,
                              "removing the dead-lettered outbox row", NULL, err);
    if (r < 0) {
        goto out;
    }
    r = crd_store_exec(store, "COMMIT", "committing the dead-lettered delivery", err);

out:
    if (r < 0) {
        crd_store_rollback(store);
    }
    pthread_mutex_unlock(&store->lock);
    return r;
}

/* Copies a text column into buf; false when it does not fit. NULL becomes "". */
static bool deadletter_copy_column(sqlite3_stmt *stmt, int column, char *buf, size_t size)
{
    const char *text = (const char *)sqlite3_column_text(stmt, column);
    size_t len = text != NULL ? (size_t)sqlite3_column_bytes(stmt, column) : 0;
    if (len >= size) {
        return false;
    }
    memcpy(buf, text != NULL ? text : "", len + 1);
    return true;
}

/* Reads the row the listing statement is on into *letter, borrowing last_error. */
static int deadletter_read_row(const struct crd_store *store, sqlite3_stmt *stmt,
                               struct crd_dead_letter *letter, struct crd_error *err)
{
    *letter = (struct crd_dead_letter){0};
    letter->id = sqlite3_column_int64(stmt, 0);
    const char *kind = (const char *)sqlite3_column_text(stmt, 1);
    letter->kind = kind != NULL && strcmp(kind, "job") == 0 ? CRD_DEAD_LETTER_JOB
                                                           : CRD_DEAD_LETTER_DELIVERY;
    if (!deadletter_copy_column(stmt, 2, letter->tenant_id, sizeof(letter->tenant_id)) ||
        !deadletter_copy_column(stmt, 3, letter->call_id, sizeof(letter->call_id)) ||
        !deadletter_copy_column(stmt, 5, letter->sink, sizeof(letter->sink))) {
        return crd_error_set(err, -EIO, "database '%s': dead letter %lld has an id or sink name "
                             "that is too long; the database was changed by something other "
                             "than callrecd", store->path, (long long)letter->id);
    }
    letter->version = sqlite3_column_type(stmt, 4) == SQLITE_NULL ? -1
                                                                  : sqlite3_column_int64(stmt, 4);
    letter->attempts = (unsigned)sqlite3_column_int64(stmt, 6);
    const char *last_error = (const char *)sqlite3_column_text(stmt, 7);
    letter->last_error = last_error != NULL ? last_error : "";
    letter->first_failed_at_ms = sqlite3_column_int64(stmt, 8);
    letter->last_failed_at_ms = sqlite3_column_int64(stmt, 9);
    return 0;
}

int crd_store_list_dead_letters(struct crd_store *store, crd_dead_letter_fn fn, void *context,
                                struct crd_error *err)
{
    if (store == NULL || fn == NULL) {
        return crd_error_set(err, -EINVAL, "store: list_dead_letters called without a store or "
                             "callback");
    }

    pthread_mutex_lock(&store->lock);

    sqlite3_stmt *stmt = NULL;
    int r = deadletter_prepare_locked(store, list_dead_letters_sql, NULL, 0,
                                      "listing the dead letters", &stmt, err);
    if (r < 0) {
        goto out;
    }
    for (;;) {
        int rc = sqlite3_step(stmt);
        if (rc == SQLITE_DONE) {
            break;
        }
        if (rc != SQLITE_ROW) {
            r = crd_store_fail(store, rc, "listing the dead letters", err);
            goto out;
        }
        struct crd_dead_letter letter;
        r = deadletter_read_row(store, stmt, &letter, err);
        if (r < 0) {
            goto out;
        }
        r = fn(&letter, context);
        if (r < 0) {
            crd_error_set(err, r, "listing the dead letters was stopped by its callback");
            goto out;
        }
    }

out:
    sqlite3_finalize(stmt);
    pthread_mutex_unlock(&store->lock);
    return r;
}

int crd_store_count_dead_letters(struct crd_store *store, enum crd_dead_letter_kind kind,
                                 const char *sink, int64_t *ret_count, struct crd_error *err)
{
    if (store == NULL || ret_count == NULL || (unsigned)kind >= CRD_DEAD_LETTER_KIND__COUNT ||
        (kind == CRD_DEAD_LETTER_JOB && sink != NULL)) {
        return crd_error_set(err, -EINVAL, "store: count_dead_letters called without a store, "
                             "with an invalid kind, or with a sink for jobs");
    }
    struct deadletter_value values[] = {DEADLETTER_TEXT(dead_letter_kind_names[kind]),
                                        DEADLETTER_TEXT(sink)};
    return deadletter_count(store, count_dead_letters_sql, values, DEADLETTER_COUNT_OF(values),
                            "counting the dead letters", ret_count, err);
}

int crd_store_count_jobs(struct crd_store *store, const char *state, int64_t *ret_count,
                         struct crd_error *err)
{
    static const char *const states[] = {"pending", "running", "done", "failed"};
    bool known = false;
    for (size_t i = 0; i < DEADLETTER_COUNT_OF(states) && state != NULL; i++) {
        known = known || strcmp(state, states[i]) == 0;
    }
    if (store == NULL || ret_count == NULL || !known) {
        return crd_error_set(err, -EINVAL, "store: count_jobs called without a store or with "
                             "the unknown state '%s'; use pending, running, done or failed",
                             state != NULL ? state : "(null)");
    }
    struct deadletter_value values[] = {DEADLETTER_TEXT(state)};
    return deadletter_count(store, count_jobs_sql, values, DEADLETTER_COUNT_OF(values),
                            "counting the jobs", ret_count, err);
}

int crd_store_retry_dead_letters(struct crd_store *store, const char *call_id, const char *sink,
                                 int64_t now_ms, int64_t *ret_jobs, int64_t *ret_deliveries,
                                 struct crd_error *err)
{
    if (store == NULL || now_ms < 0) {
        return crd_error_set(err, -EINVAL, "store: retry_dead_letters called without a store or "
                             "with a negative time");
    }

    pthread_mutex_lock(&store->lock);

    int64_t jobs = 0;
    int64_t deliveries = 0;
    struct deadletter_value values[] = {DEADLETTER_INT(now_ms), DEADLETTER_TEXT(call_id),
                                        DEADLETTER_TEXT(sink)};
    int r = crd_store_exec(store, "BEGIN IMMEDIATE", "starting to retry dead letters", err);
    if (r < 0) {
        goto out;
    }
    r = deadletter_run_locked(store, retry_jobs_sql, values, DEADLETTER_COUNT_OF(values),
                              "re-arming dead-lettered jobs", &jobs, err);
    if (r < 0) {
        goto out;
    }
    r = deadletter_run_locked(store, retry_deliveries_sql, values, DEADLETTER_COUNT_OF(values),
                              "putting dead-lettered deliveries back into the outbox",
                              &deliveries, err);
    if (r < 0) {
        goto out;
    }
    r = deadletter_run_locked(store, delete_retried_sql, values, DEADLETTER_COUNT_OF(values),
                              "removing the retried dead letters", NULL, err);
    if (r < 0) {
        goto out;
    }
    r = crd_store_exec(store, "COMMIT", "committing the retried dead letters", err);
    if (r < 0) {
        goto out;
    }

    if (ret_jobs != NULL) {
        *ret_jobs = jobs;
    }
    if (ret_deliveries != NULL) {
        *ret_deliveries = deliveries;
    }

out:
    if (r < 0) {
        crd_store_rollback(store);
    }
    pthread_mutex_unlock(&store->lock);
    return r;
}
