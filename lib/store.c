/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "log.h"
#include "store.h"
#include "store_internal.h"
#include "util.h"

#define STORE_DEFAULT_BUSY_TIMEOUT_MS 5000

/*
 * Schema migrations in order: store_migrations[i] upgrades a database from
 * user_version i to i + 1. Append new steps and never edit one that has
 * shipped, because databases in the field already ran it.
 *
 * All times are integer milliseconds since the Unix epoch (UTC).
 */
static const char *const store_migrations[] = {
    /* 1: settings and the job queue */
    "CREATE TABLE settings ("
    "  key TEXT PRIMARY KEY,"
    "  value TEXT NOT NULL,"
    "  updated_at INTEGER NOT NULL"
    ");"
    "CREATE TABLE jobs ("
    "  tenant_id TEXT NOT NULL,"
    "  call_id TEXT NOT NULL,"
    "  subscription_id TEXT,"
    "  change_type TEXT,"
    "  first_notified_at INTEGER NOT NULL,"
    "  last_notified_at INTEGER NOT NULL,"
    "  notification_count INTEGER NOT NULL DEFAULT 1,"
    "  state TEXT NOT NULL DEFAULT 'pending'"
    "    CHECK (state IN ('pending', 'running', 'done', 'failed')),"
    "  due_at INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  last_attempt_at INTEGER,"
    "  last_error TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  PRIMARY KEY (tenant_id, call_id)"
    ") WITHOUT ROWID;"
    "CREATE INDEX jobs_state_due_at ON jobs (state, due_at);",

    /*
     * 2: stored record versions and the per-sink outbox. claimed_at is when
     * the running fetch claimed its job, so that completing the job can tell
     * whether a notification arrived during the fetch. An outbox row refers
     * to a row of records and contains no copy of the record.
     */
    "ALTER TABLE jobs ADD COLUMN claimed_at INTEGER;"
    "CREATE TABLE records ("
    "  tenant_id TEXT NOT NULL,"
    "  call_id TEXT NOT NULL,"
    "  version INTEGER NOT NULL,"
    "  record TEXT NOT NULL,"
    "  fetched_at INTEGER NOT NULL,"
    "  first_notified_at INTEGER NOT NULL,"
    "  PRIMARY KEY (tenant_id, call_id, version)"
    ") WITHOUT ROWID;"
    "CREATE TABLE outbox ("
    "  id INTEGER PRIMARY KEY,"
    "  sink TEXT NOT NULL,"
    "  tenant_id TEXT NOT NULL,"
    "  call_id TEXT NOT NULL,"
    "  version INTEGER NOT NULL,"
    "  due_at INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  last_error TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  UNIQUE (sink, tenant_id, call_id, version),"
    "  FOREIGN KEY (tenant_id, call_id, version) REFERENCES records (tenant_id, call_id, version)"
    ");"
    "CREATE INDEX outbox_sink_due_at ON outbox (sink, due_at);",

    /*
     * 3: dead letters, the jobs and deliveries given up after their retries or
     * a permanent failure, kept until an operator retries them. A job's
     * dead letter has no version and no sink. first_failed_at on jobs and
     * outbox is the time of the first failed attempt since the last success.
     */
    "ALTER TABLE jobs ADD COLUMN first_failed_at INTEGER;"
    "ALTER TABLE outbox ADD COLUMN first_failed_at INTEGER;"
    "CREATE TABLE dead_letters ("
    "  id INTEGER PRIMARY KEY,"
    "  kind TEXT NOT NULL CHECK (kind IN ('job', 'delivery')),"
    "  tenant_id TEXT NOT NULL,"
    "  call_id TEXT NOT NULL,"
    "  version INTEGER,"
    "  sink TEXT,"
    "  attempts INTEGER NOT NULL,"
    "  last_error TEXT,"
    "  first_failed_at INTEGER NOT NULL,"
    "  last_failed_at INTEGER NOT NULL,"
    "  CHECK ((kind = 'job') = (sink IS NULL AND version IS NULL))"
    ");"
    "CREATE UNIQUE INDEX dead_letters_job ON dead_letters (tenant_id, call_id)"
    "  WHERE kind = 'job';"
    "CREATE UNIQUE INDEX dead_letters_delivery ON dead_letters (sink, tenant_id, call_id, version)"
    "  WHERE kind = 'delivery';",
};

#define STORE_SCHEMA_VERSION ((int)(sizeof(store_migrations) / sizeof(store_migrations[0])))

/*
 * Inserts a job, or coalesces a notice into the existing job for the same
 * call. A new or re-armed job is due ?7 (the coalescing window) after the
 * notice; a pending one keeps its due time. SQLite evaluates every SET expression against the row as it was before
 * the update, so the CASE tests below all see the old state.
 */
static const char store_enqueue_sql[] =
    "INSERT INTO jobs (tenant_id, call_id, subscription_id, change_type,"
    "                  first_notified_at, last_notified_at, notification_count, state,"
    "                  due_at, attempts, created_at, updated_at)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?5, 1, 'pending', ?5 + ?7, 0, ?6, ?6)"
    " ON CONFLICT (tenant_id, call_id) DO UPDATE SET"
    "  last_notified_at = max(last_notified_at, excluded.last_notified_at),"
    "  notification_count = notification_count + 1,"
    "  subscription_id = excluded.subscription_id,"
    "  change_type = excluded.change_type,"
    "  state = CASE WHEN state IN ('done', 'failed') THEN 'pending' ELSE state END,"
    "  due_at = CASE WHEN state IN ('done', 'failed') THEN excluded.due_at ELSE due_at END,"
    "  attempts = CASE WHEN state IN ('done', 'failed') THEN 0 ELSE attempts END,"
    "  first_failed_at = CASE WHEN state IN ('done', 'failed') THEN NULL ELSE first_failed_at END,"
    "  updated_at = excluded.updated_at";

static const char store_get_setting_sql[] = "SELECT value FROM settings WHERE key = ?1";

static const char store_set_setting_sql[] =
    "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at";

static int store_code_from_errno(int errnum)
{
    switch (errnum) {
    case EACCES:
    case EPERM:
        return -EACCES;
    case EROFS:
        return -EROFS;
    case ENOSPC:
    case EDQUOT:
        return -ENOSPC;
    case ENOENT:
        return -ENOENT;
    case ENOTDIR:
        return -ENOTDIR;
    default:
        return -EIO;
    }
}

/* Maps a SQLite result code to the negative errno value store.h promises. */
static int store_code_from_sqlite(sqlite3 *db, int rc)
{
    switch (rc & 0xff) {
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_READONLY:
        return -EROFS;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return -EACCES;
    case SQLITE_CANTOPEN:
        return store_code_from_errno(db != NULL ? sqlite3_system_errno(db) : 0);
    default:
        return -EIO;
    }
}

/* The next step an operator can take for a failure with this code. */
static const char *store_fix_hint(int code)
{
    switch (code) {
    case -EACCES:
        return "make the state directory and the database file writable by the service user";
    case -EROFS:
        return "the file system or the database file is read-only; make it writable or "
               "choose another state directory";
    case -ENOSPC:
        return "the file system is full; free space on it";
    case -EBUSY:
        return "another process holds the database write lock; stop it (a second callrecd "
               "or an sqlite3 shell) or raise the busy timeout";
    case -ENOENT:
        return "create the parent directory first";
    case -ENOTDIR:
        return "a component of the path is not a directory";
    case -ENOMEM:
        return "the process ran out of memory";
    default:
        return "check the kernel log for disk errors, and restore the database from a backup "
               "if it is corrupt";
    }
}

int crd_store_fail(const struct crd_store *store, int rc, const char *what, struct crd_error *err)
{
    int code = store_code_from_sqlite(store->db, rc);
    const char *detail = store->db != NULL ? sqlite3_errmsg(store->db) : sqlite3_errstr(rc);
    return crd_error_set(err, code, "database '%s': %s failed: %s; %s", store->path, what,
                         detail, store_fix_hint(code));
}

int crd_store_exec(struct crd_store *store, const char *sql, const char *what,
                   struct crd_error *err)
{
    int rc = sqlite3_exec(store->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        return crd_store_fail(store, rc, what, err);
    }
    return 0;
}

void crd_store_rollback(struct crd_store *store)
{
    if (sqlite3_get_autocommit(store->db) == 0) {
        (void)sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
    }
}

/* Runs a statement that returns one integer in its first row. */
static int store_query_int64(struct crd_store *store, const char *sql, const char *what,
                             int64_t *ret_value, struct crd_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int r = 0;

    int rc = sqlite3_prepare_v2(store->db, sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc == SQLITE_DONE) {
        r = crd_error_set(err, -EIO, "database '%s': %s returned no row", store->path, what);
        goto out;
    }
    if (rc != SQLITE_ROW) {
        r = crd_store_fail(store, rc, what, err);
        goto out;
    }

    *ret_value = sqlite3_column_int64(stmt, 0);

out:
    sqlite3_finalize(stmt);
    return r;
}

static int store_prepare(struct crd_store *store, const char *sql, sqlite3_stmt **ret_stmt,
                         struct crd_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v3(store->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(stmt);
        return crd_store_fail(store, rc, "preparing a statement", err);
    }
    *ret_stmt = stmt;
    return 0;
}

int crd_store_statement_locked(struct crd_store *store, enum crd_store_statement which,
                               const char *sql, sqlite3_stmt **ret_stmt, struct crd_error *err)
{
    if (store->statements[which] == NULL) {
        int r = store_prepare(store, sql, &store->statements[which], err);
        if (r < 0) {
            return r;
        }
    }
    *ret_stmt = store->statements[which];
    return 0;
}

void crd_store_statement_done(sqlite3_stmt *stmt)
{
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
}

/* Creates the state directory with mode 0700 unless it exists. Parents must exist. */
static int store_make_directory(const char *dir, struct crd_error *err)
{
    if (mkdir(dir, 0700) == 0) {
        return 0;
    }

    int errnum = errno;
    if (errnum != EEXIST) {
        int code = store_code_from_errno(errnum);
        return crd_error_set(err, code, "state directory '%s': cannot create it: %s; %s", dir,
                             strerror(errnum), store_fix_hint(code));
    }

    struct stat st;
    if (stat(dir, &st) < 0) {
        errnum = errno;
        int code = store_code_from_errno(errnum);
        return crd_error_set(err, code, "state directory '%s': cannot stat it: %s; %s", dir,
                             strerror(errnum), store_fix_hint(code));
    }
    if (!S_ISDIR(st.st_mode)) {
        return crd_error_set(err, -ENOTDIR,
                             "state directory '%s' exists but is not a directory; remove it or "
                             "choose another state directory",
                             dir);
    }
    return 0;
}

static int store_open_connection(struct crd_store *store, unsigned busy_timeout_ms,
                                 struct crd_error *err)
{
    /* SQLite's unix VFS opens its files with O_CLOEXEC, as test_open_files_close_on_exec checks. */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(store->path, &store->db, flags, NULL);
    if (rc != SQLITE_OK) {
        return crd_store_fail(store, rc, "opening", err);
    }
    (void)sqlite3_extended_result_codes(store->db, 1);

    /*
     * SQLite opens an unwritable file read-only instead of failing. Reject it
     * here, because a read-only store would lose every job.
     */
    if (sqlite3_db_readonly(store->db, "main") == 1) {
        return crd_error_set(err, -EROFS, "database '%s': opened read-only; %s", store->path,
                             store_fix_hint(-EROFS));
    }

    unsigned timeout_ms = busy_timeout_ms == 0 ? STORE_DEFAULT_BUSY_TIMEOUT_MS : busy_timeout_ms;
    rc = sqlite3_busy_timeout(store->db, timeout_ms > INT_MAX ? INT_MAX : (int)timeout_ms);
    if (rc != SQLITE_OK) {
        return crd_store_fail(store, rc, "setting the busy timeout", err);
    }
    return 0;
}

/* Rejects a database written by a newer build before anything in it is changed. */
static int store_check_not_newer(struct crd_store *store, struct crd_error *err)
{
    int64_t version = 0;
    int r = store_query_int64(store, "PRAGMA user_version", "reading the schema version",
                              &version, err);
    if (r < 0) {
        return r;
    }
    if (version > STORE_SCHEMA_VERSION) {
        return crd_error_set(err, -ENOTSUP,
                             "database '%s': schema version %lld is newer than version %d, the "
                             "newest this callrecd build supports; run the newer callrecd that "
                             "wrote it, or restore a backup taken before the upgrade",
                             store->path, (long long)version, STORE_SCHEMA_VERSION);
    }
    return 0;
}

static int store_enable_wal(struct crd_store *store, struct crd_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int r = 0;

    int rc = sqlite3_prepare_v2(store->db, "PRAGMA journal_mode = WAL", -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        r = crd_store_fail(store, rc, "setting the WAL journal mode", err);
        goto out;
    }

    /* The pragma returns the journal mode in force, which stays the old one on failure. */
    const char *mode = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(stmt, 0) : NULL;
    if (mode == NULL || strcmp(mode, "wal") != 0) {
        r = crd_error_set(err, -ENOTSUP,
                          "database '%s': SQLite kept journal mode '%s' instead of WAL; put the "
                          "state directory on a local file system that supports shared memory "
                          "mappings (not NFS)",
                          store->path, mode != NULL ? mode : "unknown");
    }

out:
    sqlite3_finalize(stmt);
    return r;
}

static int store_apply_pragmas(struct crd_store *store, enum crd_durability durability,
                               struct crd_error *err)
{
    int r = store_enable_wal(store, err);
    if (r < 0) {
        return r;
    }

    /*
     * The SQLite documentation of PRAGMA synchronous: in WAL mode, NORMAL
     * keeps committed transactions when the application crashes but may roll
     * back the last ones after a power loss. FULL syncs the WAL after every
     * commit.
     */
    const char *sync_sql = durability == CRD_DURABILITY_FULL ? "PRAGMA synchronous = FULL"
                                                             : "PRAGMA synchronous = NORMAL";
    r = crd_store_exec(store, sync_sql, "setting the synchronous level", err);
    if (r < 0) {
        return r;
    }

    return crd_store_exec(store, "PRAGMA foreign_keys = ON", "enabling foreign keys", err);
}

/*
 * Applies one migration, together with its user_version bump, in one
 * transaction. The version is read inside that transaction, so two processes
 * that open the same new database cannot both apply a step. Sets *ret_version
 * to the version found and *ret_done when no migration was left to apply.
 */
static int store_migrate_step(struct crd_store *store, int *ret_version, int *ret_done,
                              struct crd_error *err)
{
    int r = crd_store_exec(store, "BEGIN IMMEDIATE", "starting a migration", err);
    if (r < 0) {
        return r;
    }

    int64_t version = 0;
    r = store_query_int64(store, "PRAGMA user_version", "reading the schema version", &version,
                          err);
    if (r < 0) {
        goto out;
    }
    if (version < 0 || version > STORE_SCHEMA_VERSION) {
        r = crd_error_set(err, -ENOTSUP,
                          "database '%s': schema version %lld is not one this callrecd build "
                          "supports (0 to %d); run the callrecd that wrote it",
                          store->path, (long long)version, STORE_SCHEMA_VERSION);
        goto out;
    }

    int done = version == STORE_SCHEMA_VERSION;
    if (!done) {
        char what[64];
        snprintf(what, sizeof(what), "migration to schema version %lld", (long long)version + 1);
        r = crd_store_exec(store, store_migrations[version], what, err);
        if (r < 0) {
            goto out;
        }

        char bump[64];
        snprintf(bump, sizeof(bump), "PRAGMA user_version = %lld", (long long)version + 1);
        r = crd_store_exec(store, bump, what, err);
        if (r < 0) {
            goto out;
        }
    }

    r = crd_store_exec(store, "COMMIT", "committing a migration", err);
    if (r < 0) {
        goto out;
    }

    *ret_version = (int)version;
    *ret_done = done;

out:
    if (r < 0) {
        crd_store_rollback(store);
    }
    return r;
}

static int store_migrate(struct crd_store *store, int *ret_version_before, struct crd_error *err)
{
    int version_before = -1;
    int done = 0;
    while (!done) {
        int version = 0;
        int r = store_migrate_step(store, &version, &done, err);
        if (r < 0) {
            return r;
        }
        if (version_before < 0) {
            version_before = version;
        }
    }
    *ret_version_before = version_before;
    return 0;
}

static int store_prepare_all(struct crd_store *store, struct crd_error *err)
{
    int r = store_prepare(store, store_enqueue_sql, &store->enqueue_job, err);
    if (r < 0) {
        return r;
    }
    r = store_prepare(store, store_get_setting_sql, &store->get_setting, err);
    if (r < 0) {
        return r;
    }
    return store_prepare(store, store_set_setting_sql, &store->set_setting, err);
}

/*
 * Allocates a store with its lock and path, but no connection yet. Returns
 * NULL when memory (or, for the mutex, another resource) is exhausted.
 */
static struct crd_store *store_new(const char *state_directory)
{
    struct crd_store *store = calloc(1, sizeof(*store));
    if (store == NULL) {
        return NULL;
    }
    if (pthread_mutex_init(&store->lock, NULL) != 0) {
        free(store);
        return NULL;
    }
    if (pthread_mutex_init(&store->enqueue_lock, NULL) != 0) {
        pthread_mutex_destroy(&store->lock);
        free(store);
        return NULL;
    }
    if (pthread_cond_init(&store->enqueue_done, NULL) != 0) {
        pthread_mutex_destroy(&store->enqueue_lock);
        pthread_mutex_destroy(&store->lock);
        free(store);
        return NULL;
    }
    if (pthread_cond_init(&store->enqueue_changed, NULL) != 0) {
        pthread_cond_destroy(&store->enqueue_done);
        pthread_mutex_destroy(&store->enqueue_lock);
        pthread_mutex_destroy(&store->lock);
        free(store);
        return NULL;
    }
    store->queue_tail = &store->queue_head;
    if (asprintf(&store->path, "%s/%s", state_directory, CRD_STORE_FILE_NAME) < 0) {
        store->path = NULL;
        crd_store_close(store);
        return NULL;
    }
    return store;
}

static int store_check_options(const struct crd_store_options *options, struct crd_error *err)
{
    if (options == NULL || options->state_directory == NULL ||
        options->state_directory[0] == '\0') {
        return crd_error_set(err, -EINVAL, "store: no state directory given");
    }
    if ((unsigned)options->durability >= CRD_DURABILITY__COUNT) {
        return crd_error_set(err, -EINVAL, "store: invalid durability value %d",
                             (int)options->durability);
    }
    if (options->job_coalesce_ms > INT32_MAX) {
        return crd_error_set(err, -EINVAL, "store: job coalescing window of %llu ms is too long",
                             (unsigned long long)options->job_coalesce_ms);
    }
    return 0;
}

int crd_store_open(const struct crd_store_options *options, struct crd_store **ret_store,
                   struct crd_store_open_report *report, struct crd_error *err)
{
    struct crd_store *store = NULL;
    int version_before = 0;
    int64_t pending_jobs = 0;

    int r = store_check_options(options, err);
    if (r < 0) {
        goto out;
    }
    if (ret_store == NULL) {
        r = crd_error_set(err, -EINVAL, "store: no output pointer for the store");
        goto out;
    }

    if (sqlite3_threadsafe() == 0) {
        r = crd_error_set(err, -ENOTSUP,
                          "store: libsqlite3 was built with SQLITE_THREADSAFE=0, which callrecd "
                          "cannot use from several threads; install a thread-safe build");
        goto out;
    }

    r = store_make_directory(options->state_directory, err);
    if (r < 0) {
        goto out;
    }
    store = store_new(options->state_directory);
    if (store == NULL) {
        r = crd_error_set(err, -ENOMEM, "store: out of memory allocating the store");
        goto out;
    }
    store->job_coalesce_ms = (int64_t)options->job_coalesce_ms;
    r = store_open_connection(store, options->busy_timeout_ms, err);
    if (r < 0) {
        goto out;
    }
    r = store_check_not_newer(store, err);
    if (r < 0) {
        goto out;
    }
    r = store_apply_pragmas(store, options->durability, err);
    if (r < 0) {
        goto out;
    }
    r = store_migrate(store, &version_before, err);
    if (r < 0) {
        goto out;
    }
    r = store_prepare_all(store, err);
    if (r < 0) {
        goto out;
    }
    r = store_query_int64(store, "SELECT count(*) FROM jobs WHERE state IN ('pending', 'running')",
                          "counting pending jobs", &pending_jobs, err);
    if (r < 0) {
        goto out;
    }

    crd_log_debug(CRD_LOG_STORE, NULL, "opened '%s': schema version %d to %d, %lld pending jobs",
                  store->path, version_before, STORE_SCHEMA_VERSION, (long long)pending_jobs);
    if (report != NULL) {
        report->schema_version_before = version_before;
        report->schema_version = STORE_SCHEMA_VERSION;
        report->pending_jobs = pending_jobs;
    }
    *ret_store = store;
    store = NULL;

out:
    crd_store_close(store);
    return r;
}

void crd_store_close(struct crd_store *store)
{
    if (store == NULL) {
        return;
    }

    sqlite3_finalize(store->enqueue_job);
    sqlite3_finalize(store->get_setting);
    sqlite3_finalize(store->set_setting);
    for (size_t i = 0; i < CRD_STORE_STMT__COUNT; i++) {
        sqlite3_finalize(store->statements[i]);
    }

    if (store->db != NULL) {
        /* Best effort: a WAL left behind is replayed by the next open. */
        (void)sqlite3_exec(store->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
        (void)sqlite3_close(store->db);
    }

    pthread_cond_destroy(&store->enqueue_changed);
    pthread_cond_destroy(&store->enqueue_done);
    pthread_mutex_destroy(&store->enqueue_lock);
    pthread_mutex_destroy(&store->lock);
    free(store->path);
    free(store);
}

int crd_store_schema_version(void)
{
    return STORE_SCHEMA_VERSION;
}

/* Checks one id field of a notice. A NULL value is accepted only when optional. */
static int store_check_guid(const char *value, const char *field, int required, size_t index,
                            struct crd_error *err)
{
    if (value == NULL) {
        if (!required) {
            return 0;
        }
        return crd_error_set(err, -EINVAL, "notice %zu: %s is missing", index, field);
    }
    if (!crd_guid_is_valid(value, strnlen(value, CRD_GUID_LEN + 1))) {
        return crd_error_set(err, -EINVAL,
                             "notice %zu: invalid %s '%.64s': expected a GUID in "
                             "8-4-4-4-12 hexadecimal form",
                             index, field, value);
    }
    return 0;
}

static int store_check_notice(const struct crd_job_notice *notice, size_t index,
                              struct crd_error *err)
{
    int r = store_check_guid(notice->tenant_id, "tenant id", 1, index, err);
    if (r < 0) {
        return r;
    }
    r = store_check_guid(notice->call_id, "call id", 1, index, err);
    if (r < 0) {
        return r;
    }
    r = store_check_guid(notice->subscription_id, "subscription id", 0, index, err);
    if (r < 0) {
        return r;
    }
    if (notice->notified_at_ms < 0) {
        return crd_error_set(err, -EINVAL, "notice %zu: invalid notification time %lld ms",
                             index, (long long)notice->notified_at_ms);
    }
    return 0;
}

int crd_store_bind_text(sqlite3_stmt *stmt, int index, const char *value)
{
    if (value == NULL) {
        return sqlite3_bind_null(stmt, index);
    }
    return sqlite3_bind_text(stmt, index, value, -1, SQLITE_STATIC);
}

static int store_upsert_job_locked(struct crd_store *store, const struct crd_job_notice *notice,
                                   int64_t now_ms, struct crd_error *err)
{
    sqlite3_stmt *stmt = store->enqueue_job;
    int r = 0;

    int rc = crd_store_bind_text(stmt, 1, notice->tenant_id);
    if (rc == SQLITE_OK) {
        rc = crd_store_bind_text(stmt, 2, notice->call_id);
    }
    if (rc == SQLITE_OK) {
        rc = crd_store_bind_text(stmt, 3, notice->subscription_id);
    }
    if (rc == SQLITE_OK) {
        rc = crd_store_bind_text(stmt, 4, notice->change_type);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_bind_int64(stmt, 5, notice->notified_at_ms);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_bind_int64(stmt, 6, now_ms);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_bind_int64(stmt, 7, store->job_coalesce_ms);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc != SQLITE_DONE) {
        char what[96];
        snprintf(what, sizeof(what), "storing the job for call '%s'", notice->call_id);
        r = crd_store_fail(store, rc, what, err);
    }

    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return r;
}

/*
 * Group commit of crd_store_enqueue_jobs(), a leader/follower scheme.
 *
 * Each caller puts its batch on store->queue_head under enqueue_lock. A
 * caller that finds no group running becomes the leader: it takes every
 * queued batch as its group, releases enqueue_lock, and writes the group in
 * one transaction while holding store->lock. Each batch runs inside its own
 * savepoint, so a failing batch is rolled back alone. The leader then marks
 * every batch of the group done, with its result already in place, and
 * broadcasts enqueue_done. Callers that queued while the group ran are the
 * followers. They wait on enqueue_done until their batch is done, or until no
 * group runs any more, and then the first of them to wake leads the next
 * group. No caller sleeps: a follower waits only for a running group.
 *
 * A batch lives on its caller's stack. The caller cannot return before the
 * leader sets done under enqueue_lock, so the leader may write the batch's
 * result and error until then.
 */
struct crd_store_batch {
    const struct crd_job_notice *notices;
    size_t n_notices;
    int result;
    struct crd_error error;           /* copied to the caller's err when result < 0 */
    bool done;                        /* result is final; set under enqueue_lock */
    struct crd_store_batch *next;
};

/* Copies one failure into every batch of the list that has not failed on its own. */
static void store_fail_batches(struct crd_store_batch *first, const struct crd_error *failure)
{
    for (struct crd_store_batch *batch = first; batch != NULL; batch = batch->next) {
        if (batch->result < 0) {
            continue;
        }
        batch->result = failure->code;
        batch->error = *failure;
    }
}

/*
 * Writes one batch inside the savepoint enqueue_batch. On failure the
 * savepoint is rolled back and batch->result and batch->error are set. Returns
 * false when the enclosing transaction did not survive the failure, because
 * SQLite rolled it back itself (as it may on SQLITE_FULL, SQLITE_IOERR or
 * SQLITE_NOMEM) or the rollback to the savepoint failed.
 */
static bool store_write_batch_locked(struct crd_store *store, struct crd_store_batch *batch,
                                     int64_t now_ms)
{
    int r = crd_store_exec(store, "SAVEPOINT enqueue_batch", "starting the batch savepoint",
                           &batch->error);
    if (r < 0) {
        batch->result = r;
        return sqlite3_get_autocommit(store->db) == 0;
    }

    for (size_t i = 0; i < batch->n_notices && r == 0; i++) {
        r = store_upsert_job_locked(store, &batch->notices[i], now_ms, &batch->error);
    }
    if (r == 0) {
        r = crd_store_exec(store, "RELEASE enqueue_batch", "releasing the batch savepoint",
                           &batch->error);
    }
    if (r == 0) {
        return true;
    }

    batch->result = r;
    if (sqlite3_get_autocommit(store->db) != 0) {
        return false;
    }
    int rc = sqlite3_exec(store->db, "ROLLBACK TO enqueue_batch; RELEASE enqueue_batch", NULL,
                          NULL, NULL);
    return rc == SQLITE_OK;
}

/*
 * Writes every batch of a group in one transaction and commits it when at
 * least one batch was written. The caller holds store->lock. Returns true
 * when a transaction was committed.
 */
static bool store_run_group_locked(struct crd_store *store, struct crd_store_batch *group)
{
    struct crd_error failure = {0};
    int r = crd_store_exec(store, "BEGIN IMMEDIATE", "starting the enqueue transaction", &failure);
    if (r < 0) {
        store_fail_batches(group, &failure);
        return false;
    }

    int64_t now_ms = crd_time_now_ms();
    size_t n_written = 0;
    for (struct crd_store_batch *batch = group; batch != NULL; batch = batch->next) {
        if (store_write_batch_locked(store, batch, now_ms)) {
            if (batch->result == 0) {
                n_written++;
            }
            continue;
        }

        /* The transaction is gone, and with it the batches written before this one. */
        crd_error_set(&failure, batch->result,
                      "database '%s': the enqueue transaction was rolled back after another "
                      "batch in it failed: %s",
                      store->path, batch->error.message);
        store_fail_batches(group, &failure);
        crd_store_rollback(store);
        return false;
    }

    if (n_written == 0) {
        crd_store_rollback(store);
        return false;
    }
    r = crd_store_exec(store, "COMMIT", "committing the enqueued jobs", &failure);
    if (r < 0) {
        store_fail_batches(group, &failure);
        crd_store_rollback(store);
        return false;
    }
    return true;
}

/*
 * Takes every queued batch as one group and writes it. Called and returns
 * with enqueue_lock held, but releases it while the transaction runs.
 */
static void store_lead_group(struct crd_store *store)
{
    struct crd_store_batch *group = store->queue_head;
    size_t n_batches = store->n_queued;
    store->queue_head = NULL;
    store->queue_tail = &store->queue_head;
    store->n_queued = 0;
    store->group_running = true;
    store->n_groups++;
    pthread_cond_broadcast(&store->enqueue_changed);
    pthread_mutex_unlock(&store->enqueue_lock);

    pthread_mutex_lock(&store->lock);
    bool committed = store_run_group_locked(store, group);
    pthread_mutex_unlock(&store->lock);

    if (committed) {
        crd_log_debug(CRD_LOG_STORE, NULL, "committed a group of %zu enqueue calls", n_batches);
    }

    pthread_mutex_lock(&store->enqueue_lock);
    if (committed) {
        store->n_commits++;
    }
    for (struct crd_store_batch *batch = group; batch != NULL; batch = batch->next) {
        batch->done = true;
    }
    store->group_running = false;
    pthread_cond_broadcast(&store->enqueue_done);
}

int crd_store_enqueue_jobs(struct crd_store *store, const struct crd_job_notice *notices,
                           size_t n_notices, struct crd_error *err)
{
    if (store == NULL || (notices == NULL && n_notices > 0)) {
        return crd_error_set(err, -EINVAL, "store: enqueue called without a store or notices");
    }

    /* Check every notice first, so that an invalid one leaves nothing half written. */
    for (size_t i = 0; i < n_notices; i++) {
        int r = store_check_notice(&notices[i], i, err);
        if (r < 0) {
            return r;
        }
    }
    if (n_notices == 0) {
        return 0;
    }

    struct crd_store_batch batch = {
        .notices = notices,
        .n_notices = n_notices,
    };

    pthread_mutex_lock(&store->enqueue_lock);
    *store->queue_tail = &batch;
    store->queue_tail = &batch.next;
    store->n_queued++;
    store->n_batches++;
    pthread_cond_broadcast(&store->enqueue_changed);

    while (!batch.done && store->group_running) {
        pthread_cond_wait(&store->enqueue_done, &store->enqueue_lock);
    }
    /* Not done and no group running: the batch is still queued, so this caller leads. */
    if (!batch.done) {
        store_lead_group(store);
    }
    pthread_mutex_unlock(&store->enqueue_lock);

    if (batch.result < 0) {
        if (err != NULL) {
            *err = batch.error;
        }
        return batch.result;
    }
    crd_log_debug(CRD_LOG_STORE, NULL, "enqueued %zu notices", n_notices);
    return 0;
}

void crd_store_get_enqueue_counts(struct crd_store *store,
                                  struct crd_store_enqueue_counts *ret_counts)
{
    pthread_mutex_lock(&store->enqueue_lock);
    ret_counts->batches = store->n_batches;
    ret_counts->transactions = store->n_groups;
    ret_counts->commits = store->n_commits;
    pthread_mutex_unlock(&store->enqueue_lock);
}

void crd_store_wait_enqueue_queue(struct crd_store *store, uint64_t n_transactions,
                                  size_t n_queued)
{
    pthread_mutex_lock(&store->enqueue_lock);
    while (store->n_groups < n_transactions || store->n_queued < n_queued) {
        pthread_cond_wait(&store->enqueue_changed, &store->enqueue_lock);
    }
    pthread_mutex_unlock(&store->enqueue_lock);
}

int crd_store_get_setting(struct crd_store *store, const char *key, char **ret_value,
                          struct crd_error *err)
{
    if (store == NULL || key == NULL || ret_value == NULL) {
        return crd_error_set(err, -EINVAL, "store: get_setting called without a store or key");
    }

    pthread_mutex_lock(&store->lock);

    sqlite3_stmt *stmt = store->get_setting;
    char *value = NULL;
    int r = 0;

    int rc = sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc == SQLITE_DONE) {
        r = crd_error_set(err, -ENOENT, "database '%s': setting '%s' not found", store->path,
                          key);
        goto out;
    }
    if (rc != SQLITE_ROW) {
        r = crd_store_fail(store, rc, "reading a setting", err);
        goto out;
    }

    /* The column is NOT NULL, so a NULL here means SQLite could not allocate the text. */
    const char *text = (const char *)sqlite3_column_text(stmt, 0);
    value = text != NULL ? strdup(text) : NULL;
    if (value == NULL) {
        r = crd_error_set(err, -ENOMEM, "database '%s': out of memory reading setting '%s'",
                          store->path, key);
        goto out;
    }

    *ret_value = value;
    value = NULL;

out:
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    pthread_mutex_unlock(&store->lock);
    free(value);
    return r;
}

int crd_store_set_setting(struct crd_store *store, const char *key, const char *value,
                          struct crd_error *err)
{
    if (store == NULL || key == NULL || key[0] == '\0' || value == NULL) {
        return crd_error_set(err, -EINVAL,
                             "store: set_setting called without a store, key or value");
    }

    pthread_mutex_lock(&store->lock);

    sqlite3_stmt *stmt = store->set_setting;
    int r = 0;

    int rc = sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) {
        rc = sqlite3_bind_text(stmt, 2, value, -1, SQLITE_STATIC);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_bind_int64(stmt, 3, crd_time_now_ms());
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc != SQLITE_DONE) {
        r = crd_store_fail(store, rc, "writing a setting", err);
    }

    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    pthread_mutex_unlock(&store->lock);
    return r;
}

int crd_store_get_synchronous(struct crd_store *store, int *ret_level, struct crd_error *err)
{
    if (store == NULL || ret_level == NULL) {
        return crd_error_set(err, -EINVAL, "store: get_synchronous called without a store");
    }

    pthread_mutex_lock(&store->lock);
    int64_t level = 0;
    int r = store_query_int64(store, "PRAGMA synchronous", "reading the synchronous level",
                              &level, err);
    pthread_mutex_unlock(&store->lock);

    if (r == 0) {
        *ret_level = (int)level;
    }
    return r;
}
