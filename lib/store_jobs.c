/* SPDX-License-Identifier: MIT */
/*
 * The fetcher's side of the job queue: claiming due jobs, and finishing them
 * with a stored record version and its outbox rows, a retry or a failure.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <sqlite3.h>

#include "log.h"
#include "store.h"
#include "store_internal.h"
#include "util.h"

/* Maximum sink name length, because struct crd_delivery.sink has room for it and the NUL. */
#define STORE_SINK_NAME_MAX 64

static const char recover_jobs_sql[] =
    "UPDATE jobs SET state = 'pending', due_at = ?1, updated_at = ?1 WHERE state = 'running'";

/* The job belongs to the tenant id in parameter p, or p is NULL (any tenant). */
#define STORE_JOB_OF_TENANT(p) "(" p " IS NULL OR tenant_id = " p " COLLATE NOCASE)"

static const char select_due_job_sql[] =
    "SELECT tenant_id, call_id, subscription_id, first_notified_at, last_notified_at, attempts,"
    "       notification_count"
    " FROM jobs WHERE state = 'pending' AND due_at <= ?1 AND " STORE_JOB_OF_TENANT("?2")
    " ORDER BY due_at LIMIT 1";

static const char mark_job_running_sql[] =
    "UPDATE jobs SET state = 'running', claimed_at = ?3, last_attempt_at = ?3, updated_at = ?3"
    " WHERE tenant_id = ?1 AND call_id = ?2";

static const char next_job_due_sql[] =
    "SELECT min(due_at) FROM jobs WHERE state = 'pending' AND " STORE_JOB_OF_TENANT("?1");

static const char newest_version_sql[] =
    "SELECT max(version) FROM records WHERE tenant_id = ?1 AND call_id = ?2";

static const char insert_record_sql[] =
    "INSERT INTO records (tenant_id, call_id, version, record, fetched_at, first_notified_at)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

static const char insert_outbox_sql[] =
    "INSERT INTO outbox (sink, tenant_id, call_id, version, due_at, attempts, created_at)"
    " VALUES (?1, ?2, ?3, ?4, ?5, 0, ?5)";

/*
 * True when a notification reached the job after it was claimed (?3 is the
 * notification count at the claim). The count catches what the time
 * comparison misses: a notice in the claim's millisecond, or one stamped
 * earlier because the wall clock stepped back. A NULL claimed_at (a job
 * that never went through crd_store_claim_job) re-arms too, because an
 * extra fetch is cheap and a missed one loses a version.
 */
#define STORE_NOTIFIED_SINCE_CLAIM                                                                 \
    "(claimed_at IS NULL OR last_notified_at > claimed_at OR notification_count > ?3)"

/*
 * Ends a fetch that succeeded: done, or pending again when notified since
 * the claim. Then it is due once the coalescing window ?5 after the latest
 * notification has passed, but not before ?4 (now).
 */
static const char finish_job_sql[] =
    "UPDATE jobs SET"
    "  state = CASE WHEN " STORE_NOTIFIED_SINCE_CLAIM " THEN 'pending' ELSE 'done' END,"
    "  due_at = CASE WHEN " STORE_NOTIFIED_SINCE_CLAIM " THEN max(?4, last_notified_at + ?5)"
    "           ELSE due_at END,"
    "  attempts = 0, last_error = NULL, first_failed_at = NULL, updated_at = ?4"
    " WHERE tenant_id = ?1 AND call_id = ?2 AND state = 'running'";

static const char reschedule_job_sql[] =
    "UPDATE jobs SET state = 'pending', due_at = ?3, attempts = attempts + 1, last_error = ?5,"
    "  first_failed_at = coalesce(first_failed_at, ?4), updated_at = ?4"
    " WHERE tenant_id = ?1 AND call_id = ?2";

/* As reschedule_job_sql, but the failure does not count as an attempt of the job. */
static const char postpone_job_sql[] =
    "UPDATE jobs SET state = 'pending', due_at = ?3, last_error = ?5,"
    "  first_failed_at = coalesce(first_failed_at, ?4), updated_at = ?4"
    " WHERE tenant_id = ?1 AND call_id = ?2";

/* Gives a fetch up, unless a notification since the claim makes the job due again at ?4. */
static const char fail_job_sql[] =
    "UPDATE jobs SET"
    "  state = CASE WHEN " STORE_NOTIFIED_SINCE_CLAIM " THEN 'pending' ELSE 'failed' END,"
    "  due_at = CASE WHEN " STORE_NOTIFIED_SINCE_CLAIM " THEN ?4 ELSE due_at END,"
    "  attempts = CASE WHEN " STORE_NOTIFIED_SINCE_CLAIM " THEN 0 ELSE attempts + 1 END,"
    "  first_failed_at = coalesce(first_failed_at, ?4), last_error = ?5, updated_at = ?4"
    " WHERE tenant_id = ?1 AND call_id = ?2";

/* Copies a text column into buf. Returns false when it is longer than size - 1. */
static bool store_copy_column(sqlite3_stmt *stmt, int column, char *buf, size_t size)
{
    const char *text = (const char *)sqlite3_column_text(stmt, column);
    if (text == NULL) {
        buf[0] = '\0';
        return true;
    }
    size_t len = (size_t)sqlite3_column_bytes(stmt, column);
    if (len >= size) {
        return false;
    }
    memcpy(buf, text, len + 1);
    return true;
}

static int store_check_job(const struct crd_job *job, const char *caller, struct crd_error *err)
{
    if (job == NULL) {
        return crd_error_set(err, -EINVAL, "store: %s called without a job", caller);
    }
    if (!crd_guid_is_valid(job->tenant_id, strnlen(job->tenant_id, sizeof(job->tenant_id))) ||
        !crd_guid_is_valid(job->call_id, strnlen(job->call_id, sizeof(job->call_id)))) {
        return crd_error_set(err, -EINVAL, "store: %s: the job's tenant or call id is not a GUID",
                             caller);
    }
    return 0;
}

int crd_store_recover_jobs(struct crd_store *store, int64_t *ret_count, struct crd_error *err)
{
    if (store == NULL) {
        return crd_error_set(err, -EINVAL, "store: recover_jobs called without a store");
    }

    pthread_mutex_lock(&store->lock);

    sqlite3_stmt *stmt = NULL;
    int r = crd_store_statement_locked(store, CRD_STORE_STMT_RECOVER_JOBS, recover_jobs_sql,
                                       &stmt, err);
    if (r < 0) {
        goto out;
    }
    int rc = sqlite3_bind_int64(stmt, 1, crd_time_now_ms());
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc != SQLITE_DONE) {
        r = crd_store_fail(store, rc, "recovering running jobs", err);
        goto out;
    }

    int64_t count = sqlite3_changes(store->db);
    crd_log_debug(CRD_LOG_STORE, NULL, "recovered %lld jobs left running", (long long)count);
    if (ret_count != NULL) {
        *ret_count = count;
    }

out:
    if (stmt != NULL) {
        crd_store_statement_done(stmt);
    }
    pthread_mutex_unlock(&store->lock);
    return r;
}

/* Reads the earliest due time of the pending jobs into *ret_next_due_ms, or 0 for none. */
static int store_next_job_due_locked(struct crd_store *store, const char *tenant_id,
                                     int64_t *ret_next_due_ms, struct crd_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int r = crd_store_statement_locked(store, CRD_STORE_STMT_NEXT_JOB_DUE, next_job_due_sql,
                                       &stmt, err);
    if (r < 0) {
        return r;
    }

    int rc = crd_store_bind_text(stmt, 1, tenant_id);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc != SQLITE_ROW) {
        r = crd_store_fail(store, rc, "finding the next due job", err);
        goto out;
    }
    *ret_next_due_ms = sqlite3_column_int64(stmt, 0); /* min() of no rows is NULL, read as 0 */

out:
    crd_store_statement_done(stmt);
    return r;
}

/* Reads the earliest due job into *ret_job. Returns 0, -ENOENT when none is due, or an error. */
static int store_select_due_job_locked(struct crd_store *store, const char *tenant_id,
                                       int64_t now_ms, struct crd_job *ret_job,
                                       struct crd_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int r = crd_store_statement_locked(store, CRD_STORE_STMT_SELECT_DUE_JOB, select_due_job_sql,
                                       &stmt, err);
    if (r < 0) {
        return r;
    }

    int rc = sqlite3_bind_int64(stmt, 1, now_ms);
    if (rc == SQLITE_OK) {
        rc = crd_store_bind_text(stmt, 2, tenant_id);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc == SQLITE_DONE) {
        r = crd_error_set(err, -ENOENT, "database '%s': no job is due", store->path);
        goto out;
    }
    if (rc != SQLITE_ROW) {
        r = crd_store_fail(store, rc, "selecting a due job", err);
        goto out;
    }

    struct crd_job job = {0};
    if (!store_copy_column(stmt, 0, job.tenant_id, sizeof(job.tenant_id)) ||
        !store_copy_column(stmt, 1, job.call_id, sizeof(job.call_id)) ||
        !store_copy_column(stmt, 2, job.subscription_id, sizeof(job.subscription_id))) {
        r = crd_error_set(err, -EIO,
                          "database '%s': a job row has an id longer than a GUID; the database "
                          "was changed by something other than callrecd",
                          store->path);
        goto out;
    }
    job.first_notified_at_ms = sqlite3_column_int64(stmt, 3);
    job.last_notified_at_ms = sqlite3_column_int64(stmt, 4);
    job.attempts = (unsigned)sqlite3_column_int64(stmt, 5);
    job.notification_count = sqlite3_column_int64(stmt, 6);
    job.claimed_at_ms = now_ms;
    *ret_job = job;

out:
    crd_store_statement_done(stmt);
    return r;
}

static int store_mark_job_running_locked(struct crd_store *store, const struct crd_job *job,
                                         struct crd_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int r = crd_store_statement_locked(store, CRD_STORE_STMT_MARK_JOB_RUNNING,
                                       mark_job_running_sql, &stmt, err);
    if (r < 0) {
        return r;
    }

    int rc = crd_store_bind_text(stmt, 1, job->tenant_id);
    if (rc == SQLITE_OK) {
        rc = crd_store_bind_text(stmt, 2, job->call_id);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_bind_int64(stmt, 3, job->claimed_at_ms);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc != SQLITE_DONE) {
        r = crd_store_fail(store, rc, "marking the job running", err);
    }

    crd_store_statement_done(stmt);
    return r;
}

int crd_store_claim_job(struct crd_store *store, int64_t now_ms, struct crd_job *ret_job,
                        int64_t *ret_next_due_ms, struct crd_error *err)
{
    return crd_store_claim_tenant_job(store, NULL, now_ms, ret_job, ret_next_due_ms, err);
}

int crd_store_claim_tenant_job(struct crd_store *store, const char *tenant_id, int64_t now_ms,
                               struct crd_job *ret_job, int64_t *ret_next_due_ms,
                               struct crd_error *err)
{
    if (store == NULL || ret_job == NULL) {
        return crd_error_set(err, -EINVAL, "store: claim_job called without a store or job");
    }

    pthread_mutex_lock(&store->lock);

    struct crd_job job;
    int64_t next_due_ms = 0;
    int r = crd_store_exec(store, "BEGIN IMMEDIATE", "starting to claim a job", err);
    if (r < 0) {
        goto out;
    }

    r = store_select_due_job_locked(store, tenant_id, now_ms, &job, err);
    if (r == -ENOENT) {
        int r_next = store_next_job_due_locked(store, tenant_id, &next_due_ms, err);
        r = r_next < 0 ? r_next : r;
    } else if (r == 0) {
        r = store_mark_job_running_locked(store, &job, err);
    }
    if (r < 0 && r != -ENOENT) {
        goto out;
    }

    int r_commit = crd_store_exec(store, "COMMIT", "committing the claimed job", err);
    if (r_commit < 0) {
        r = r_commit;
        goto out;
    }

    if (r == 0) {
        *ret_job = job;
    } else if (ret_next_due_ms != NULL) {
        *ret_next_due_ms = next_due_ms;
    }

out:
    if (r < 0 && r != -ENOENT) {
        crd_store_rollback(store);
    }
    pthread_mutex_unlock(&store->lock);
    return r;
}

/* Reads max(version) of the call into *ret_version. Returns -ENOENT when none is stored. */
static int store_newest_version_locked(struct crd_store *store, const char *tenant_id,
                                       const char *call_id, int64_t *ret_version,
                                       struct crd_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int r = crd_store_statement_locked(store, CRD_STORE_STMT_NEWEST_VERSION, newest_version_sql,
                                       &stmt, err);
    if (r < 0) {
        return r;
    }

    int rc = crd_store_bind_text(stmt, 1, tenant_id);
    if (rc == SQLITE_OK) {
        rc = crd_store_bind_text(stmt, 2, call_id);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc != SQLITE_ROW) {
        r = crd_store_fail(store, rc, "reading the newest stored version", err);
        goto out;
    }
    if (sqlite3_column_type(stmt, 0) == SQLITE_NULL) {
        r = crd_error_set(err, -ENOENT, "database '%s': no version of call '%s' is stored",
                          store->path, call_id);
        goto out;
    }
    *ret_version = sqlite3_column_int64(stmt, 0);

out:
    crd_store_statement_done(stmt);
    return r;
}

static const char job_pending_sql[] =
    "SELECT count(*) FROM jobs WHERE tenant_id = ?1 AND call_id = ?2 AND state = 'pending'";

int crd_store_job_pending(struct crd_store *store, const char *tenant_id, const char *call_id,
                          bool *ret_pending, struct crd_error *err)
{
    if (store == NULL || tenant_id == NULL || call_id == NULL || ret_pending == NULL) {
        return crd_error_set(err, -EINVAL,
                             "store: job_pending called without a store, tenant or call id");
    }

    pthread_mutex_lock(&store->lock);
    sqlite3_stmt *stmt = NULL;
    int r = crd_store_statement_locked(store, CRD_STORE_STMT_JOB_PENDING, job_pending_sql, &stmt,
                                       err);
    if (r < 0) {
        goto out;
    }
    int rc = crd_store_bind_text(stmt, 1, tenant_id);
    if (rc == SQLITE_OK) {
        rc = crd_store_bind_text(stmt, 2, call_id);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc != SQLITE_ROW) {
        r = crd_store_fail(store, rc, "looking up the call's pending job", err);
        goto out;
    }
    *ret_pending = sqlite3_column_int64(stmt, 0) > 0;

out:
    if (stmt != NULL) {
        crd_store_statement_done(stmt);
    }
    pthread_mutex_unlock(&store->lock);
    return r;
}

int crd_store_newest_version(struct crd_store *store, const char *tenant_id, const char *call_id,
                             int64_t *ret_version, struct crd_error *err)
{
    if (store == NULL || tenant_id == NULL || call_id == NULL || ret_version == NULL) {
        return crd_error_set(err, -EINVAL,
                             "store: newest_version called without a store, tenant or call id");
    }

    pthread_mutex_lock(&store->lock);
    int r = store_newest_version_locked(store, tenant_id, call_id, ret_version, err);
    pthread_mutex_unlock(&store->lock);
    return r;
}

static int store_check_record(const struct crd_record_version *record,
                              const char *const *sink_names, size_t n_sinks,
                              struct crd_error *err)
{
    if (record == NULL || record->record_json == NULL || record->record_json_len == 0) {
        return crd_error_set(err, -EINVAL, "store: complete_job called without a record");
    }
    if (record->version < 0 || record->fetched_at_ms < 0) {
        return crd_error_set(err, -EINVAL, "store: invalid record version %lld or fetch time %lld",
                             (long long)record->version, (long long)record->fetched_at_ms);
    }
    if (sink_names == NULL && n_sinks > 0) {
        return crd_error_set(err, -EINVAL, "store: complete_job called without sink names");
    }
    for (size_t i = 0; i < n_sinks; i++) {
        size_t len = sink_names[i] != NULL ? strlen(sink_names[i]) : 0;
        if (len == 0 || len > STORE_SINK_NAME_MAX) {
            return crd_error_set(err, -EINVAL, "store: sink name %zu is empty or longer than %d "
                                 "bytes", i, STORE_SINK_NAME_MAX);
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(sink_names[i], sink_names[j]) == 0) {
                return crd_error_set(err, -EINVAL, "store: sink name '%s' is given twice",
                                     sink_names[i]);
            }
        }
    }
    return 0;
}

static int store_insert_record_locked(struct crd_store *store, const struct crd_job *job,
                                      const struct crd_record_version *record,
                                      struct crd_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int r = crd_store_statement_locked(store, CRD_STORE_STMT_INSERT_RECORD, insert_record_sql,
                                       &stmt, err);
    if (r < 0) {
        return r;
    }

    int rc = crd_store_bind_text(stmt, 1, job->tenant_id);
    if (rc == SQLITE_OK) {
        rc = crd_store_bind_text(stmt, 2, job->call_id);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_bind_int64(stmt, 3, record->version);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_bind_text64(stmt, 4, record->record_json, record->record_json_len,
                                 SQLITE_STATIC, SQLITE_UTF8);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_bind_int64(stmt, 5, record->fetched_at_ms);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_bind_int64(stmt, 6, job->first_notified_at_ms);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc != SQLITE_DONE) {
        r = crd_store_fail(store, rc, "storing the record version", err);
    }

    crd_store_statement_done(stmt);
    return r;
}

static int store_insert_outbox_locked(struct crd_store *store, const struct crd_job *job,
                                      int64_t version, const char *sink, int64_t now_ms,
                                      struct crd_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int r = crd_store_statement_locked(store, CRD_STORE_STMT_INSERT_OUTBOX, insert_outbox_sql,
                                       &stmt, err);
    if (r < 0) {
        return r;
    }

    int rc = crd_store_bind_text(stmt, 1, sink);
    if (rc == SQLITE_OK) {
        rc = crd_store_bind_text(stmt, 2, job->tenant_id);
    }
    if (rc == SQLITE_OK) {
        rc = crd_store_bind_text(stmt, 3, job->call_id);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_bind_int64(stmt, 4, version);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_bind_int64(stmt, 5, now_ms);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc != SQLITE_DONE) {
        char what[128];
        snprintf(what, sizeof(what), "creating the outbox row for sink '%s'", sink);
        r = crd_store_fail(store, rc, what, err);
    }

    crd_store_statement_done(stmt);
    return r;
}

/*
 * Runs one of the job UPDATEs above. Their parameters are ?1 the tenant id,
 * ?2 the call id, then the n_values integers, then text (SQL NULL for NULL)
 * when the statement has a parameter left for it. Sets *ret_changed to
 * whether a row was updated.
 */
static int store_update_job_locked(struct crd_store *store, enum crd_store_statement which,
                                   const char *sql, const struct crd_job *job,
                                   const int64_t *values, int n_values, const char *text,
                                   const char *what, bool *ret_changed, struct crd_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int r = crd_store_statement_locked(store, which, sql, &stmt, err);
    if (r < 0) {
        return r;
    }

    int rc = crd_store_bind_text(stmt, 1, job->tenant_id);
    if (rc == SQLITE_OK) {
        rc = crd_store_bind_text(stmt, 2, job->call_id);
    }
    for (int i = 0; i < n_values && rc == SQLITE_OK; i++) {
        rc = sqlite3_bind_int64(stmt, 3 + i, values[i]);
    }
    if (rc == SQLITE_OK && sqlite3_bind_parameter_count(stmt) > 2 + n_values) {
        rc = crd_store_bind_text(stmt, 3 + n_values, text);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc != SQLITE_DONE) {
        r = crd_store_fail(store, rc, what, err);
        goto out;
    }
    *ret_changed = sqlite3_changes(store->db) > 0;

out:
    crd_store_statement_done(stmt);
    return r;
}

/*
 * Records a job that fail_job_sql just left 'failed' as a dead letter, or
 * updates its earlier dead letter. ?3 is now. A job that was re-armed instead
 * matches no row, so it gets no dead letter.
 */
static const char insert_job_dead_letter_sql[] =
    "INSERT INTO dead_letters (kind, tenant_id, call_id, attempts, last_error, first_failed_at,"
    "                          last_failed_at)"
    " SELECT 'job', tenant_id, call_id, attempts, last_error, coalesce(first_failed_at, ?3), ?3"
    " FROM jobs WHERE tenant_id = ?1 AND call_id = ?2 AND state = 'failed'"
    " ON CONFLICT (tenant_id, call_id) WHERE kind = 'job' DO UPDATE SET"
    "  attempts = excluded.attempts, last_error = excluded.last_error,"
    "  last_failed_at = excluded.last_failed_at";

/* A completed fetch makes an earlier dead letter of the call's job obsolete. */
static const char delete_job_dead_letter_sql[] =
    "DELETE FROM dead_letters WHERE kind = 'job' AND tenant_id = ?1 AND call_id = ?2";

/*
 * Runs a statement that is prepared for this call only, with ?1 the tenant
 * id, ?2 the call id and ?3 now_ms. These statements run once per given-up
 * or completed job, so they are not worth a cached slot.
 */
static int store_run_job_sql_locked(struct crd_store *store, const char *sql,
                                    const struct crd_job *job, int64_t now_ms, const char *what,
                                    int64_t *ret_changes, struct crd_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(store->db, sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
        rc = crd_store_bind_text(stmt, 1, job->tenant_id);
    }
    if (rc == SQLITE_OK) {
        rc = crd_store_bind_text(stmt, 2, job->call_id);
    }
    if (rc == SQLITE_OK && sqlite3_bind_parameter_count(stmt) >= 3) {
        rc = sqlite3_bind_int64(stmt, 3, now_ms);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    int r = 0;
    if (rc != SQLITE_DONE) {
        r = crd_store_fail(store, rc, what, err);
    } else if (ret_changes != NULL) {
        *ret_changes = sqlite3_changes(store->db);
    }
    sqlite3_finalize(stmt);
    return r;
}

/* Stores the record and its outbox rows when it is newer than the stored versions. */
static int store_add_version_locked(struct crd_store *store, const struct crd_job *job,
                                    const struct crd_record_version *record,
                                    const char *const *sink_names, size_t n_sinks, int64_t now_ms,
                                    bool *ret_stored, struct crd_error *err)
{
    int64_t newest = 0;
    int r = store_newest_version_locked(store, job->tenant_id, job->call_id, &newest, err);
    if (r < 0 && r != -ENOENT) {
        return r;
    }
    if (r == 0 && record->version <= newest) {
        *ret_stored = false;
        return 0;
    }

    r = store_insert_record_locked(store, job, record, err);
    if (r < 0) {
        return r;
    }
    for (size_t i = 0; i < n_sinks; i++) {
        r = store_insert_outbox_locked(store, job, record->version, sink_names[i], now_ms, err);
        if (r < 0) {
            return r;
        }
    }
    *ret_stored = true;
    return 0;
}

int crd_store_complete_job(struct crd_store *store, const struct crd_job *job,
                           const struct crd_record_version *record,
                           const char *const *sink_names, size_t n_sinks, bool *ret_stored,
                           struct crd_error *err)
{
    if (store == NULL || ret_stored == NULL) {
        return crd_error_set(err, -EINVAL, "store: complete_job called without a store");
    }
    int r = store_check_job(job, "complete_job", err);
    if (r < 0) {
        return r;
    }
    r = store_check_record(record, sink_names, n_sinks, err);
    if (r < 0) {
        return r;
    }

    pthread_mutex_lock(&store->lock);

    int64_t now_ms = crd_time_now_ms();
    bool stored = false;
    bool finished = false;
    r = crd_store_exec(store, "BEGIN IMMEDIATE", "starting to complete a job", err);
    if (r < 0) {
        goto out;
    }
    r = store_add_version_locked(store, job, record, sink_names, n_sinks, now_ms, &stored, err);
    if (r < 0) {
        goto out;
    }
    int64_t values[] = {job->notification_count, now_ms, store->job_coalesce_ms};
    r = store_update_job_locked(store, CRD_STORE_STMT_FINISH_JOB, finish_job_sql, job, values, 3,
                                NULL, "finishing the job", &finished, err);
    if (r < 0) {
        goto out;
    }
    r = store_run_job_sql_locked(store, delete_job_dead_letter_sql, job, now_ms,
                                 "removing the job's dead letter", NULL, err);
    if (r < 0) {
        goto out;
    }
    r = crd_store_exec(store, "COMMIT", "committing the completed job", err);
    if (r < 0) {
        goto out;
    }

    if (!finished) {
        /* The record is kept, but the job's state is left to the caller that changed it. */
        struct crd_log_ids ids = {.tenant = job->tenant_id, .call_id = job->call_id};
        crd_log_debug(CRD_LOG_STORE, &ids, "completed a job that was no longer running");
    }
    *ret_stored = stored;

out:
    if (r < 0) {
        crd_store_rollback(store);
    }
    pthread_mutex_unlock(&store->lock);
    return r;
}

/* Runs one job UPDATE in its own implicit transaction. Returns -ENOENT for an unknown job. */
static int store_change_job(struct crd_store *store, enum crd_store_statement which,
                            const char *sql, const struct crd_job *job, const int64_t *values,
                            int n_values, const char *text, const char *what,
                            struct crd_error *err)
{
    pthread_mutex_lock(&store->lock);

    bool changed = false;
    int r = store_update_job_locked(store, which, sql, job, values, n_values, text, what, &changed,
                                    err);
    if (r == 0 && !changed) {
        r = crd_error_set(err, -ENOENT, "database '%s': %s: no job for call '%s'", store->path,
                          what, job->call_id);
    }

    pthread_mutex_unlock(&store->lock);
    return r;
}

int crd_store_reschedule_job(struct crd_store *store, const struct crd_job *job, int64_t due_at_ms,
                             const char *last_error, struct crd_error *err)
{
    if (store == NULL) {
        return crd_error_set(err, -EINVAL, "store: reschedule_job called without a store");
    }
    int r = store_check_job(job, "reschedule_job", err);
    if (r < 0) {
        return r;
    }

    int64_t values[] = {due_at_ms, crd_time_now_ms()};
    return store_change_job(store, CRD_STORE_STMT_RESCHEDULE_JOB, reschedule_job_sql, job, values,
                            2, last_error, "rescheduling the job", err);
}

int crd_store_postpone_job(struct crd_store *store, const struct crd_job *job, int64_t due_at_ms,
                           const char *last_error, struct crd_error *err)
{
    if (store == NULL) {
        return crd_error_set(err, -EINVAL, "store: postpone_job called without a store");
    }
    int r = store_check_job(job, "postpone_job", err);
    if (r < 0) {
        return r;
    }

    int64_t values[] = {due_at_ms, crd_time_now_ms()};
    return store_change_job(store, CRD_STORE_STMT_POSTPONE_JOB, postpone_job_sql, job, values, 2,
                            last_error, "postponing the job", err);
}

int crd_store_fail_job(struct crd_store *store, const struct crd_job *job, const char *last_error,
                       struct crd_error *err)
{
    if (store == NULL) {
        return crd_error_set(err, -EINVAL, "store: fail_job called without a store");
    }
    int r = store_check_job(job, "fail_job", err);
    if (r < 0) {
        return r;
    }

    int64_t values[] = {job->notification_count, crd_time_now_ms()};
    return store_change_job(store, CRD_STORE_STMT_FAIL_JOB, fail_job_sql, job, values, 2,
                            last_error, "marking the job failed", err);
}

int crd_store_dead_letter_job(struct crd_store *store, const struct crd_job *job,
                              const char *last_error, bool *ret_moved, struct crd_error *err)
{
    if (store == NULL) {
        return crd_error_set(err, -EINVAL, "store: dead_letter_job called without a store");
    }
    int r = store_check_job(job, "dead_letter_job", err);
    if (r < 0) {
        return r;
    }

    pthread_mutex_lock(&store->lock);

    int64_t now_ms = crd_time_now_ms();
    bool changed = false;
    int64_t inserted = 0;
    r = crd_store_exec(store, "BEGIN IMMEDIATE", "starting to dead-letter a job", err);
    if (r < 0) {
        goto out;
    }
    int64_t values[] = {job->notification_count, now_ms};
    r = store_update_job_locked(store, CRD_STORE_STMT_FAIL_JOB, fail_job_sql, job, values, 2,
                                last_error, "marking the job failed", &changed, err);
    if (r < 0) {
        goto out;
    }
    if (!changed) {
        r = crd_error_set(err, -ENOENT, "database '%s': no job for call '%s' to dead-letter",
                          store->path, job->call_id);
        goto out;
    }
    r = store_run_job_sql_locked(store, insert_job_dead_letter_sql, job, now_ms,
                                 "recording the job's dead letter", &inserted, err);
    if (r < 0) {
        goto out;
    }
    r = crd_store_exec(store, "COMMIT", "committing the dead-lettered job", err);
    if (r < 0) {
        goto out;
    }
    if (ret_moved != NULL) {
        *ret_moved = inserted > 0;
    }

out:
    if (r < 0) {
        crd_store_rollback(store);
    }
    pthread_mutex_unlock(&store->lock);
    return r;
}

static const char newest_notified_job_sql[] =
    "SELECT last_notified_at, tenant_id FROM jobs WHERE " STORE_JOB_OF_TENANT("?1")
    " ORDER BY last_notified_at DESC LIMIT 1";

int crd_store_newest_notified_job(struct crd_store *store, const char *tenant_id,
                                  int64_t *ret_notified_at_ms,
                                  char ret_tenant_id[CRD_GUID_LEN + 1], struct crd_error *err)
{
    if (store == NULL || ret_notified_at_ms == NULL || ret_tenant_id == NULL) {
        return crd_error_set(err, -EINVAL, "store: newest_notified_job called without a store");
    }

    pthread_mutex_lock(&store->lock);
    sqlite3_stmt *stmt = NULL;
    int r = crd_store_statement_locked(store, CRD_STORE_STMT_NEWEST_NOTIFIED_JOB,
                                       newest_notified_job_sql, &stmt, err);
    if (r < 0) {
        goto out;
    }
    int rc = crd_store_bind_text(stmt, 1, tenant_id);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc == SQLITE_DONE) {
        r = crd_error_set(err, -ENOENT, "database '%s': no jobs", store->path);
        goto out;
    }
    if (rc != SQLITE_ROW) {
        r = crd_store_fail(store, rc, "reading the newest notified job", err);
        goto out;
    }
    const char *tenant = (const char *)sqlite3_column_text(stmt, 1);
    *ret_notified_at_ms = sqlite3_column_int64(stmt, 0);
    snprintf(ret_tenant_id, CRD_GUID_LEN + 1, "%s", tenant != NULL ? tenant : "");

out:
    if (stmt != NULL) {
        crd_store_statement_done(stmt);
    }
    pthread_mutex_unlock(&store->lock);
    return r;
}
