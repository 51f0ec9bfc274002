/* SPDX-License-Identifier: MIT */
/*
 * Tests of the durable store against real SQLite files in temporary
 * directories. What the store wrote is read back through a second, raw
 * sqlite3 connection, as another process would see it.
 */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "harness.h"
#include "store.h"
#include "util.h"

#define TENANT_ID "72f988bf-86f1-41af-91ab-2d7cd011db47"
#define SUBSCRIPTION_ID "7f105c7d-2dc5-4530-97cd-4e7ae6534c07"
#define OTHER_SUBSCRIPTION_ID "0f3e0c2b-5a4e-4b43-9d5b-3b8e2a1c6d11"
#define CALL_A "2f1a1100-b174-40a0-aba7-0b405e01ed92"
#define CALL_B "b5d5a3d1-6c28-4a4b-9a8e-1f0c2f9e7d33"
#define CALL_C "c0ffee00-1234-4abc-8def-0123456789ab"
#define CALL_D "d1e2f3a4-0000-4000-8000-00000000000d"

/* A notification time well away from "now", so that it cannot be confused with created_at. */
#define NOTIFIED_AT 1700000000123LL

/* A temporary directory with a state directory path inside it that does not exist yet. */
struct test_env {
    char *tmpdir;
    char *state_dir;
    char *db_path;
};

static void env_init(struct test_env *env)
{
    env->tmpdir = crd_test_make_tmpdir("test_store");
    ck_assert_int_ge(asprintf(&env->state_dir, "%s/state", env->tmpdir), 0);
    ck_assert_int_ge(asprintf(&env->db_path, "%s/%s", env->state_dir, CRD_STORE_FILE_NAME), 0);
}

static void env_cleanup(struct test_env *env)
{
    crd_test_remove_tree(env->tmpdir);
    free(env->tmpdir);
    free(env->state_dir);
    free(env->db_path);
}

static struct crd_store *open_store_with(const char *state_dir, enum crd_durability durability,
                                         unsigned busy_timeout_ms,
                                         struct crd_store_open_report *report)
{
    struct crd_store_options options = {
        .state_directory = state_dir,
        .durability = durability,
        .busy_timeout_ms = busy_timeout_ms,
    };
    struct crd_store *store = NULL;
    struct crd_error err = {0};
    int r = crd_store_open(&options, &store, report, &err);
    ck_assert_msg(r == 0, "crd_store_open failed (%d): %s", r, err.message);
    ck_assert_ptr_nonnull(store);
    return store;
}

static struct crd_store *open_store(const struct test_env *env)
{
    return open_store_with(env->state_dir, CRD_DURABILITY_PROCESS, 0, NULL);
}

static int try_open(const char *state_dir, struct crd_store **ret_store, struct crd_error *err)
{
    struct crd_store_options options = {
        .state_directory = state_dir,
        .durability = CRD_DURABILITY_PROCESS,
    };
    return crd_store_open(&options, ret_store, NULL, err);
}

static struct crd_job_notice make_notice(const char *call_id, int64_t notified_at_ms)
{
    struct crd_job_notice notice = {
        .tenant_id = TENANT_ID,
        .call_id = call_id,
        .subscription_id = SUBSCRIPTION_ID,
        .change_type = "created",
        .notified_at_ms = notified_at_ms,
    };
    return notice;
}

static void enqueue_ok(struct crd_store *store, const struct crd_job_notice *notices, size_t n)
{
    struct crd_error err = {0};
    int r = crd_store_enqueue_jobs(store, notices, n, &err);
    ck_assert_msg(r == 0, "crd_store_enqueue_jobs failed (%d): %s", r, err.message);
}

/* Writes a distinct, valid GUID for number n into buf. */
static void make_guid(char buf[CRD_GUID_LEN + 1], unsigned group, unsigned n)
{
    snprintf(buf, CRD_GUID_LEN + 1, "%08x-0000-4000-8000-%012x", group, n);
}

/* --- a second, raw connection to the same database ------------------------------------------ */

static sqlite3 *raw_open(const char *path)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
    ck_assert_msg(rc == SQLITE_OK, "sqlite3_open_v2 '%s': %s", path, sqlite3_errstr(rc));
    ck_assert_int_eq(sqlite3_busy_timeout(db, 2000), SQLITE_OK);
    return db;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *message = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &message);
    ck_assert_msg(rc == SQLITE_OK, "'%s' failed: %s", sql, message != NULL ? message : "?");
    sqlite3_free(message);
}

static sqlite3_stmt *raw_query(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    ck_assert_msg(rc == SQLITE_OK, "preparing '%s' failed: %s", sql, sqlite3_errmsg(db));
    rc = sqlite3_step(stmt);
    ck_assert_msg(rc == SQLITE_ROW, "'%s' returned no row: %s", sql, sqlite3_errmsg(db));
    return stmt;
}

static int64_t raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *stmt = raw_query(db, sql);
    int64_t value = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    return value;
}

/* Returns the first column of the first row as a malloc'ed string, or NULL for SQL NULL. */
static char *raw_text(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *stmt = raw_query(db, sql);
    const unsigned char *text = sqlite3_column_text(stmt, 0);
    char *value = text != NULL ? strdup((const char *)text) : NULL;
    sqlite3_finalize(stmt);
    return value;
}

static int64_t count_jobs(const char *db_path)
{
    sqlite3 *db = raw_open(db_path);
    int64_t n = raw_int(db, "SELECT count(*) FROM jobs");
    sqlite3_close(db);
    return n;
}

/* One row of the jobs table. Text columns that are SQL NULL read as NULL pointers. */
struct job_row {
    char *tenant_id;
    char *call_id;
    char *subscription_id;
    char *change_type;
    int64_t first_notified_at;
    int64_t last_notified_at;
    int64_t notification_count;
    char *state;
    int64_t due_at;
    int64_t attempts;
    bool last_attempt_at_is_null;
    int64_t last_attempt_at;
    char *last_error;
    int64_t created_at;
    int64_t updated_at;
};

static char *column_strdup(sqlite3_stmt *stmt, int column)
{
    const unsigned char *text = sqlite3_column_text(stmt, column);
    return text != NULL ? strdup((const char *)text) : NULL;
}

/* Reads the job for (TENANT_ID, call_id), and fails the test when there is none. */
static void read_job(const char *db_path, const char *call_id, struct job_row *row)
{
    static const char sql[] =
        "SELECT tenant_id, call_id, subscription_id, change_type, first_notified_at,"
        " last_notified_at, notification_count, state, due_at, attempts, last_attempt_at,"
        " last_error, created_at, updated_at FROM jobs WHERE tenant_id = ?1 AND call_id = ?2";
    sqlite3 *db = raw_open(db_path);
    sqlite3_stmt *stmt = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_bind_text(stmt, 1, TENANT_ID, -1, SQLITE_STATIC), SQLITE_OK);
    ck_assert_int_eq(sqlite3_bind_text(stmt, 2, call_id, -1, SQLITE_STATIC), SQLITE_OK);
    ck_assert_msg(sqlite3_step(stmt) == SQLITE_ROW, "no job for call %s", call_id);

    row->tenant_id = column_strdup(stmt, 0);
    row->call_id = column_strdup(stmt, 1);
    row->subscription_id = column_strdup(stmt, 2);
    row->change_type = column_strdup(stmt, 3);
    row->first_notified_at = sqlite3_column_int64(stmt, 4);
    row->last_notified_at = sqlite3_column_int64(stmt, 5);
    row->notification_count = sqlite3_column_int64(stmt, 6);
    row->state = column_strdup(stmt, 7);
    row->due_at = sqlite3_column_int64(stmt, 8);
    row->attempts = sqlite3_column_int64(stmt, 9);
    row->last_attempt_at_is_null = sqlite3_column_type(stmt, 10) == SQLITE_NULL;
    row->last_attempt_at = sqlite3_column_int64(stmt, 10);
    row->last_error = column_strdup(stmt, 11);
    row->created_at = sqlite3_column_int64(stmt, 12);
    row->updated_at = sqlite3_column_int64(stmt, 13);

    ck_assert_int_eq(sqlite3_step(stmt), SQLITE_DONE);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
}

static void job_row_free(struct job_row *row)
{
    free(row->tenant_id);
    free(row->call_id);
    free(row->subscription_id);
    free(row->change_type);
    free(row->state);
    free(row->last_error);
}

/* Runs one UPDATE (or other statement) on the database through a raw connection. */
static void raw_exec_on(const char *db_path, const char *sql)
{
    sqlite3 *db = raw_open(db_path);
    raw_exec(db, sql);
    sqlite3_close(db);
}

/* --- opening ------------------------------------------------------------------------------- */

START_TEST(test_open_new_database_uses_wal)
{
    struct test_env env;
    env_init(&env);
    struct crd_store_open_report report = {-1, -1, -1};
    struct crd_store *store = open_store_with(env.state_dir, CRD_DURABILITY_PROCESS, 0, &report);

    ck_assert_int_ge(crd_store_schema_version(), 1);
    ck_assert_int_eq(report.schema_version_before, 0);
    ck_assert_int_eq(report.schema_version, crd_store_schema_version());
    ck_assert_int_eq(report.pending_jobs, 0);

    sqlite3 *db = raw_open(env.db_path);
    char *mode = raw_text(db, "PRAGMA journal_mode");
    ck_assert_str_eq(mode, "wal");
    ck_assert_int_eq(raw_int(db, "PRAGMA user_version"), crd_store_schema_version());
    ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM sqlite_schema WHERE name = 'jobs'"), 1);
    ck_assert_int_eq(
        raw_int(db, "SELECT count(*) FROM sqlite_schema WHERE name = 'settings'"), 1);
    ck_assert_int_eq(
        raw_int(db, "SELECT count(*) FROM sqlite_schema WHERE name = 'jobs_state_due_at'"), 1);
    free(mode);
    sqlite3_close(db);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_open_creates_directory_0700)
{
    struct test_env env;
    env_init(&env);
    struct stat st;
    ck_assert_int_eq(stat(env.state_dir, &st), -1);

    struct crd_store *store = open_store(&env);

    ck_assert_int_eq(stat(env.state_dir, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    ck_assert_uint_eq(st.st_mode & 07777, 0700);
    ck_assert_int_eq(stat(env.db_path, &st), 0);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

/* Counts this process's open descriptors of files in dir, and those of them without FD_CLOEXEC. */
static void count_descriptors_in(const char *dir, unsigned *ret_total, unsigned *ret_inheritable)
{
    DIR *fds = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(fds);
    size_t dir_len = strlen(dir);
    unsigned total = 0;
    unsigned inheritable = 0;
    struct dirent *entry;
    while ((entry = readdir(fds)) != NULL) {
        char target[4096];
        ssize_t n = readlinkat(dirfd(fds), entry->d_name, target, sizeof(target) - 1);
        if (n < 0) {
            continue;
        }
        target[n] = '\0';
        if (strncmp(target, dir, dir_len) != 0 || target[dir_len] != '/') {
            continue;
        }
        total++;
        int flags = fcntl((int)strtol(entry->d_name, NULL, 10), F_GETFD);
        if (flags < 0 || (flags & FD_CLOEXEC) == 0) {
            inheritable++;
        }
    }
    closedir(fds);
    *ret_total = total;
    *ret_inheritable = inheritable;
}

START_TEST(test_open_files_close_on_exec)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice notice = make_notice(CALL_A, NOTIFIED_AT);
    enqueue_ok(store, &notice, 1);

    unsigned total = 0;
    unsigned inheritable = 0;
    count_descriptors_in(env.state_dir, &total, &inheritable);

    ck_assert_uint_ge(total, 1);
    ck_assert_uint_eq(inheritable, 0);
    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_open_missing_parent_fails)
{
    struct test_env env;
    env_init(&env);
    char *state_dir = NULL;
    ck_assert_int_ge(asprintf(&state_dir, "%s/no/such/parent", env.tmpdir), 0);
    struct crd_store *store = NULL;
    struct crd_error err = {0};

    int r = try_open(state_dir, &store, &err);

    ck_assert_int_eq(r, -ENOENT);
    ck_assert_int_eq(err.code, -ENOENT);
    ck_assert_ptr_null(store);
    ck_assert_ptr_nonnull(strstr(err.message, state_dir));
    free(state_dir);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_open_state_dir_is_file_fails)
{
    struct test_env env;
    env_init(&env);
    char *file = crd_test_write_file(env.tmpdir, "state", "not a directory\n", 0600);
    struct crd_store *store = NULL;
    struct crd_error err = {0};

    int r = try_open(env.state_dir, &store, &err);

    ck_assert_int_eq(r, -ENOTDIR);
    ck_assert_ptr_null(store);
    ck_assert_ptr_nonnull(strstr(err.message, env.state_dir));
    free(file);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_open_invalid_options_fail)
{
    struct crd_store *store = NULL;
    struct crd_error err = {0};

    ck_assert_int_eq(crd_store_open(NULL, &store, NULL, &err), -EINVAL);

    struct crd_store_options options = {.state_directory = ""};
    ck_assert_int_eq(crd_store_open(&options, &store, NULL, &err), -EINVAL);

    options.state_directory = "/tmp";
    options.durability = CRD_DURABILITY__COUNT;
    ck_assert_int_eq(crd_store_open(&options, &store, NULL, &err), -EINVAL);

    options.durability = CRD_DURABILITY_PROCESS;
    ck_assert_int_eq(crd_store_open(&options, NULL, NULL, &err), -EINVAL);

    ck_assert_ptr_null(store);
}
END_TEST

START_TEST(test_open_not_a_database_fails)
{
    struct test_env env;
    env_init(&env);
    ck_assert_int_eq(mkdir(env.state_dir, 0700), 0);
    char junk[8192];
    memset(junk, 'x', sizeof(junk) - 1);
    junk[sizeof(junk) - 1] = '\0';
    char *file = crd_test_write_file(env.state_dir, CRD_STORE_FILE_NAME, junk, 0600);
    struct crd_store *store = NULL;
    struct crd_error err = {0};

    int r = try_open(env.state_dir, &store, &err);

    ck_assert_int_eq(r, -EIO);
    ck_assert_ptr_null(store);
    ck_assert_ptr_nonnull(strstr(err.message, env.db_path));
    free(file);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_reopen_keeps_data)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice notice = make_notice(CALL_A, NOTIFIED_AT);
    enqueue_ok(store, &notice, 1);
    struct crd_error err = {0};
    ck_assert_int_eq(crd_store_set_setting(store, "client_state", "s3cr3t", &err), 0);
    crd_store_close(store);

    struct crd_store_open_report report = {-1, -1, -1};
    store = open_store_with(env.state_dir, CRD_DURABILITY_PROCESS, 0, &report);

    ck_assert_int_eq(report.schema_version_before, crd_store_schema_version());
    ck_assert_int_eq(report.schema_version, crd_store_schema_version());
    ck_assert_int_eq(report.pending_jobs, 1);
    char *value = NULL;
    ck_assert_int_eq(crd_store_get_setting(store, "client_state", &value, &err), 0);
    ck_assert_str_eq(value, "s3cr3t");
    ck_assert_int_eq(count_jobs(env.db_path), 1);

    free(value);
    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_open_newer_schema_fails)
{
    struct test_env env;
    env_init(&env);
    crd_store_close(open_store(&env));
    int newer = crd_store_schema_version() + 1;
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", newer);
    raw_exec_on(env.db_path, sql);

    struct crd_store *store = NULL;
    struct crd_error err = {0};
    int r = try_open(env.state_dir, &store, &err);

    ck_assert_int_eq(r, -ENOTSUP);
    ck_assert_ptr_null(store);
    ck_assert_ptr_nonnull(strstr(err.message, env.db_path));
    ck_assert_ptr_nonnull(strstr(err.message, "newer"));
    sqlite3 *db = raw_open(env.db_path);
    ck_assert_int_eq(raw_int(db, "PRAGMA user_version"), newer);
    sqlite3_close(db);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_synchronous_follows_durability)
{
    struct test_env env;
    env_init(&env);
    struct crd_error err = {0};
    int level = -1;

    struct crd_store *store = open_store_with(env.state_dir, CRD_DURABILITY_PROCESS, 0, NULL);
    ck_assert_int_eq(crd_store_get_synchronous(store, &level, &err), 0);
    ck_assert_int_eq(level, 1); /* NORMAL */
    crd_store_close(store);

    store = open_store_with(env.state_dir, CRD_DURABILITY_FULL, 0, NULL);
    ck_assert_int_eq(crd_store_get_synchronous(store, &level, &err), 0);
    ck_assert_int_eq(level, 2); /* FULL */
    crd_store_close(store);

    env_cleanup(&env);
}
END_TEST

START_TEST(test_pending_jobs_counts_running)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice notices[] = {
        make_notice(CALL_A, NOTIFIED_AT),
        make_notice(CALL_B, NOTIFIED_AT),
        make_notice(CALL_C, NOTIFIED_AT),
        make_notice(CALL_D, NOTIFIED_AT),
    };
    enqueue_ok(store, notices, 4);
    crd_store_close(store);
    raw_exec_on(env.db_path, "UPDATE jobs SET state = 'running' WHERE call_id = '" CALL_B "'");
    raw_exec_on(env.db_path, "UPDATE jobs SET state = 'done' WHERE call_id = '" CALL_C "'");
    raw_exec_on(env.db_path, "UPDATE jobs SET state = 'failed' WHERE call_id = '" CALL_D "'");

    struct crd_store_open_report report = {-1, -1, -1};
    store = open_store_with(env.state_dir, CRD_DURABILITY_PROCESS, 0, &report);

    ck_assert_int_eq(report.pending_jobs, 2);
    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_close_accepts_null)
{
    crd_store_close(NULL);
}
END_TEST

/* --- enqueueing ---------------------------------------------------------------------------- */

START_TEST(test_enqueue_stores_exact_row)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice notice = make_notice(CALL_A, NOTIFIED_AT);

    int64_t before_ms = crd_time_now_ms();
    enqueue_ok(store, &notice, 1);
    int64_t after_ms = crd_time_now_ms();

    struct job_row row;
    read_job(env.db_path, CALL_A, &row);
    ck_assert_str_eq(row.tenant_id, TENANT_ID);
    ck_assert_str_eq(row.call_id, CALL_A);
    ck_assert_str_eq(row.subscription_id, SUBSCRIPTION_ID);
    ck_assert_str_eq(row.change_type, "created");
    ck_assert_int_eq(row.first_notified_at, NOTIFIED_AT);
    ck_assert_int_eq(row.last_notified_at, NOTIFIED_AT);
    ck_assert_int_eq(row.notification_count, 1);
    ck_assert_str_eq(row.state, "pending");
    ck_assert_int_eq(row.due_at, NOTIFIED_AT);
    ck_assert_int_eq(row.attempts, 0);
    ck_assert(row.last_attempt_at_is_null);
    ck_assert_ptr_null(row.last_error);
    ck_assert_int_ge(row.created_at, before_ms);
    ck_assert_int_le(row.created_at, after_ms);
    ck_assert_int_eq(row.updated_at, row.created_at);
    ck_assert_int_eq(count_jobs(env.db_path), 1);

    job_row_free(&row);
    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_enqueue_null_optional_fields)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice notice = make_notice(CALL_A, NOTIFIED_AT);
    notice.subscription_id = NULL;
    notice.change_type = NULL;

    enqueue_ok(store, &notice, 1);

    struct job_row row;
    read_job(env.db_path, CALL_A, &row);
    ck_assert_ptr_null(row.subscription_id);
    ck_assert_ptr_null(row.change_type);
    ck_assert_str_eq(row.state, "pending");
    job_row_free(&row);
    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_enqueue_coalesces_pending_job)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice first = make_notice(CALL_A, NOTIFIED_AT);
    enqueue_ok(store, &first, 1);

    struct crd_job_notice second = make_notice(CALL_A, NOTIFIED_AT + 5000);
    second.subscription_id = OTHER_SUBSCRIPTION_ID;
    second.change_type = "updated";
    enqueue_ok(store, &second, 1);

    struct job_row row;
    read_job(env.db_path, CALL_A, &row);
    ck_assert_int_eq(count_jobs(env.db_path), 1);
    ck_assert_int_eq(row.notification_count, 2);
    ck_assert_int_eq(row.first_notified_at, NOTIFIED_AT);
    ck_assert_int_eq(row.last_notified_at, NOTIFIED_AT + 5000);
    ck_assert_int_eq(row.due_at, NOTIFIED_AT);
    ck_assert_int_eq(row.attempts, 0);
    ck_assert_str_eq(row.state, "pending");
    ck_assert_str_eq(row.subscription_id, OTHER_SUBSCRIPTION_ID);
    ck_assert_str_eq(row.change_type, "updated");
    ck_assert_int_ge(row.updated_at, row.created_at);
    job_row_free(&row);

    /* A late notice with an older time keeps the newest last_notified_at. */
    struct crd_job_notice late = make_notice(CALL_A, NOTIFIED_AT - 1000);
    enqueue_ok(store, &late, 1);
    read_job(env.db_path, CALL_A, &row);
    ck_assert_int_eq(row.notification_count, 3);
    ck_assert_int_eq(row.last_notified_at, NOTIFIED_AT + 5000);
    ck_assert_int_eq(row.first_notified_at, NOTIFIED_AT);
    job_row_free(&row);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_enqueue_coalesces_within_batch)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice notices[] = {
        make_notice(CALL_A, NOTIFIED_AT),
        make_notice(CALL_B, NOTIFIED_AT),
        make_notice(CALL_A, NOTIFIED_AT + 10),
    };

    enqueue_ok(store, notices, 3);

    ck_assert_int_eq(count_jobs(env.db_path), 2);
    struct job_row row;
    read_job(env.db_path, CALL_A, &row);
    ck_assert_int_eq(row.notification_count, 2);
    ck_assert_int_eq(row.last_notified_at, NOTIFIED_AT + 10);
    job_row_free(&row);
    read_job(env.db_path, CALL_B, &row);
    ck_assert_int_eq(row.notification_count, 1);
    job_row_free(&row);
    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_enqueue_keeps_running_job)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice first = make_notice(CALL_A, NOTIFIED_AT);
    enqueue_ok(store, &first, 1);
    raw_exec_on(env.db_path, "UPDATE jobs SET state = 'running', attempts = 2, due_at = 42,"
                             " last_attempt_at = 41, last_error = 'HTTP 404'");

    struct crd_job_notice second = make_notice(CALL_A, NOTIFIED_AT + 5000);
    enqueue_ok(store, &second, 1);

    struct job_row row;
    read_job(env.db_path, CALL_A, &row);
    ck_assert_str_eq(row.state, "running");
    ck_assert_int_eq(row.attempts, 2);
    ck_assert_int_eq(row.due_at, 42);
    ck_assert_int_eq(row.notification_count, 2);
    ck_assert_int_eq(row.last_notified_at, NOTIFIED_AT + 5000);
    job_row_free(&row);
    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_enqueue_rearms_finished_job)
{
    static const char *const finished_states[] = {"done", "failed"};
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice first = make_notice(CALL_A, NOTIFIED_AT);
    enqueue_ok(store, &first, 1);

    for (size_t i = 0; i < 2; i++) {
        char sql[128];
        snprintf(sql, sizeof(sql), "UPDATE jobs SET state = '%s', attempts = 3, due_at = 7",
                 finished_states[i]);
        raw_exec_on(env.db_path, sql);
        int64_t notified_at = NOTIFIED_AT + 60000 * (int64_t)(i + 1);
        struct crd_job_notice again = make_notice(CALL_A, notified_at);

        enqueue_ok(store, &again, 1);

        struct job_row row;
        read_job(env.db_path, CALL_A, &row);
        ck_assert_msg(strcmp(row.state, "pending") == 0, "a '%s' job became '%s'",
                      finished_states[i], row.state);
        ck_assert_int_eq(row.due_at, notified_at);
        ck_assert_int_eq(row.attempts, 0);
        ck_assert_int_eq(row.notification_count, (int64_t)i + 2);
        ck_assert_int_eq(row.last_notified_at, notified_at);
        ck_assert_int_eq(row.first_notified_at, NOTIFIED_AT);
        job_row_free(&row);
    }
    ck_assert_int_eq(count_jobs(env.db_path), 1);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_enqueue_invalid_notice_stores_nothing)
{
    struct invalid_case {
        const char *tenant_id;
        const char *call_id;
        const char *subscription_id;
        int64_t notified_at_ms;
    };
    static const struct invalid_case cases[] = {
        {NULL, CALL_C, SUBSCRIPTION_ID, NOTIFIED_AT},
        {TENANT_ID, NULL, SUBSCRIPTION_ID, NOTIFIED_AT},
        {TENANT_ID, "not-a-guid", SUBSCRIPTION_ID, NOTIFIED_AT},
        {TENANT_ID, "", SUBSCRIPTION_ID, NOTIFIED_AT},
        {TENANT_ID, "c0ffee00-1234-4abc-8def-0123456789ab0", SUBSCRIPTION_ID, NOTIFIED_AT},
        {TENANT_ID, "c0ffee00-1234-4abc-8def-0123456789ag", SUBSCRIPTION_ID, NOTIFIED_AT},
        {"72f988bf_86f1_41af_91ab_2d7cd011db47", CALL_C, SUBSCRIPTION_ID, NOTIFIED_AT},
        {TENANT_ID, CALL_C, "subscription", NOTIFIED_AT},
        {TENANT_ID, CALL_C, SUBSCRIPTION_ID, -1},
    };
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct crd_job_notice notices[] = {
            make_notice(CALL_A, NOTIFIED_AT),
            make_notice(CALL_B, NOTIFIED_AT),
            {
                .tenant_id = cases[i].tenant_id,
                .call_id = cases[i].call_id,
                .subscription_id = cases[i].subscription_id,
                .change_type = "created",
                .notified_at_ms = cases[i].notified_at_ms,
            },
        };
        struct crd_error err = {0};

        int r = crd_store_enqueue_jobs(store, notices, 3, &err);

        ck_assert_msg(r == -EINVAL, "case %zu: expected -EINVAL, got %d", i, r);
        ck_assert_int_eq(err.code, -EINVAL);
        ck_assert_msg(strstr(err.message, "notice 2") != NULL, "case %zu: message '%s'", i,
                      err.message);
        ck_assert_int_eq(count_jobs(env.db_path), 0);
    }

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_enqueue_empty_batch)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_error err = {0};

    ck_assert_int_eq(crd_store_enqueue_jobs(store, NULL, 0, &err), 0);
    ck_assert_int_eq(crd_store_enqueue_jobs(store, NULL, 1, &err), -EINVAL);
    ck_assert_int_eq(count_jobs(env.db_path), 0);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

/* A statement that fails in the middle of a batch must undo the rows already written. */
START_TEST(test_enqueue_failure_rolls_back)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    raw_exec_on(env.db_path, "CREATE TRIGGER inject_failure BEFORE INSERT ON jobs"
                             " WHEN NEW.call_id = '" CALL_B "'"
                             " BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    struct crd_job_notice notices[] = {
        make_notice(CALL_A, NOTIFIED_AT),
        make_notice(CALL_B, NOTIFIED_AT),
        make_notice(CALL_C, NOTIFIED_AT),
    };
    struct crd_error err = {0};

    int r = crd_store_enqueue_jobs(store, notices, 3, &err);

    ck_assert_int_eq(r, -EIO);
    ck_assert_ptr_nonnull(strstr(err.message, env.db_path));
    ck_assert_ptr_nonnull(strstr(err.message, "injected failure"));
    ck_assert_int_eq(count_jobs(env.db_path), 0);

    raw_exec_on(env.db_path, "DROP TRIGGER inject_failure");
    enqueue_ok(store, notices, 3);
    ck_assert_int_eq(count_jobs(env.db_path), 3);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

/* Another connection holds the write lock, so the enqueue times out and changes nothing. */
START_TEST(test_enqueue_locked_database_busy)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store_with(env.state_dir, CRD_DURABILITY_PROCESS, 50, NULL);
    struct crd_job_notice first = make_notice(CALL_A, NOTIFIED_AT);
    enqueue_ok(store, &first, 1);

    sqlite3 *locker = raw_open(env.db_path);
    raw_exec(locker, "BEGIN EXCLUSIVE");
    struct crd_job_notice notices[] = {
        make_notice(CALL_A, NOTIFIED_AT + 1000),
        make_notice(CALL_B, NOTIFIED_AT + 1000),
    };
    struct crd_error err = {0};

    int r = crd_store_enqueue_jobs(store, notices, 2, &err);

    ck_assert_int_eq(r, -EBUSY);
    ck_assert_int_eq(err.code, -EBUSY);
    ck_assert_ptr_nonnull(strstr(err.message, env.db_path));
    raw_exec(locker, "ROLLBACK");
    sqlite3_close(locker);

    ck_assert_int_eq(count_jobs(env.db_path), 1);
    struct job_row row;
    read_job(env.db_path, CALL_A, &row);
    ck_assert_int_eq(row.notification_count, 1);
    ck_assert_int_eq(row.last_notified_at, NOTIFIED_AT);
    job_row_free(&row);

    /* With the lock released the store works again, so no transaction was left open. */
    enqueue_ok(store, notices, 2);
    ck_assert_int_eq(count_jobs(env.db_path), 2);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_enqueue_ten_thousand_notices)
{
    enum { N_NOTICES = 10000 };
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    char(*call_ids)[CRD_GUID_LEN + 1] = calloc(N_NOTICES, sizeof(*call_ids));
    struct crd_job_notice *notices = calloc(N_NOTICES, sizeof(*notices));
    ck_assert_ptr_nonnull(call_ids);
    ck_assert_ptr_nonnull(notices);
    for (unsigned i = 0; i < N_NOTICES; i++) {
        make_guid(call_ids[i], 0xa, i);
        notices[i] = make_notice(call_ids[i], NOTIFIED_AT + i);
    }

    enqueue_ok(store, notices, N_NOTICES);

    sqlite3 *db = raw_open(env.db_path);
    ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM jobs"), N_NOTICES);
    ck_assert_int_eq(raw_int(db, "SELECT sum(notification_count) FROM jobs"), N_NOTICES);
    ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM jobs WHERE state = 'pending'"), N_NOTICES);
    sqlite3_close(db);

    free(notices);
    free(call_ids);
    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

enum {
    CONCURRENT_THREADS = 4,
    CONCURRENT_NOTICES_PER_THREAD = 500,
    CONCURRENT_DISTINCT_CALLS = 100,
};

struct enqueue_worker {
    struct crd_store *store;
    unsigned index;
    unsigned failures;
    struct crd_error first_error;
};

/* Enqueues one notice per call, so that the threads interleave as much as possible. */
static void *enqueue_worker_run(void *arg)
{
    struct enqueue_worker *worker = arg;
    for (unsigned i = 0; i < CONCURRENT_NOTICES_PER_THREAD; i++) {
        unsigned n = worker->index * CONCURRENT_NOTICES_PER_THREAD + i;
        char call_id[CRD_GUID_LEN + 1];
        make_guid(call_id, 0xb, n % CONCURRENT_DISTINCT_CALLS);
        struct crd_job_notice notice = make_notice(call_id, NOTIFIED_AT + n);
        struct crd_error err = {0};
        if (crd_store_enqueue_jobs(worker->store, &notice, 1, &err) < 0) {
            if (worker->failures == 0) {
                worker->first_error = err;
            }
            worker->failures++;
        }
    }
    return NULL;
}

START_TEST(test_enqueue_concurrent_threads)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct enqueue_worker workers[CONCURRENT_THREADS];
    pthread_t threads[CONCURRENT_THREADS];

    for (unsigned i = 0; i < CONCURRENT_THREADS; i++) {
        workers[i] = (struct enqueue_worker){.store = store, .index = i};
        ck_assert_int_eq(pthread_create(&threads[i], NULL, enqueue_worker_run, &workers[i]), 0);
    }
    for (unsigned i = 0; i < CONCURRENT_THREADS; i++) {
        ck_assert_int_eq(pthread_join(threads[i], NULL), 0);
    }

    for (unsigned i = 0; i < CONCURRENT_THREADS; i++) {
        ck_assert_msg(workers[i].failures == 0, "thread %u: %u failures, first: %s", i,
                      workers[i].failures, workers[i].first_error.message);
    }
    sqlite3 *db = raw_open(env.db_path);
    ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM jobs"), CONCURRENT_DISTINCT_CALLS);
    ck_assert_int_eq(raw_int(db, "SELECT sum(notification_count) FROM jobs"),
                     CONCURRENT_THREADS * CONCURRENT_NOTICES_PER_THREAD);
    sqlite3_close(db);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

/* --- settings ------------------------------------------------------------------------------ */

START_TEST(test_settings_round_trip)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_error err = {0};
    char sentinel[] = "untouched";
    char *value = sentinel;

    ck_assert_int_eq(crd_store_get_setting(store, "subscription_id", &value, &err), -ENOENT);
    ck_assert_int_eq(err.code, -ENOENT);
    ck_assert_ptr_eq(value, sentinel);

    int64_t before_ms = crd_time_now_ms();
    ck_assert_int_eq(crd_store_set_setting(store, "subscription_id", SUBSCRIPTION_ID, &err), 0);
    int64_t after_ms = crd_time_now_ms();
    ck_assert_int_eq(crd_store_get_setting(store, "subscription_id", &value, &err), 0);
    ck_assert_str_eq(value, SUBSCRIPTION_ID);
    free(value);

    sqlite3 *db = raw_open(env.db_path);
    int64_t updated_at =
        raw_int(db, "SELECT updated_at FROM settings WHERE key = 'subscription_id'");
    ck_assert_int_ge(updated_at, before_ms);
    ck_assert_int_le(updated_at, after_ms);
    sqlite3_close(db);

    ck_assert_int_eq(
        crd_store_set_setting(store, "subscription_id", OTHER_SUBSCRIPTION_ID, &err), 0);
    ck_assert_int_eq(crd_store_get_setting(store, "subscription_id", &value, &err), 0);
    ck_assert_str_eq(value, OTHER_SUBSCRIPTION_ID);
    free(value);

    ck_assert_int_eq(crd_store_set_setting(store, "empty", "", &err), 0);
    ck_assert_int_eq(crd_store_get_setting(store, "empty", &value, &err), 0);
    ck_assert_str_eq(value, "");
    free(value);

    db = raw_open(env.db_path);
    ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM settings"), 2);
    sqlite3_close(db);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_settings_invalid_arguments)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_error err = {0};
    char *value = NULL;

    ck_assert_int_eq(crd_store_set_setting(store, NULL, "v", &err), -EINVAL);
    ck_assert_int_eq(crd_store_set_setting(store, "", "v", &err), -EINVAL);
    ck_assert_int_eq(crd_store_set_setting(store, "k", NULL, &err), -EINVAL);
    ck_assert_int_eq(crd_store_get_setting(store, NULL, &value, &err), -EINVAL);
    ck_assert_int_eq(crd_store_get_setting(store, "k", NULL, &err), -EINVAL);
    ck_assert_int_eq(crd_store_get_setting(NULL, "k", &value, &err), -EINVAL);
    ck_assert_ptr_null(value);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

/* --- jobs: claiming, completing, rescheduling ------------------------------------------------ */

static const char *const TWO_SINKS[] = {"archive", "siem"};

#define RECORD_V1 "{\"id\":\"" CALL_A "\",\"version\":1,\"type\":\"groupCall\"}"
#define RECORD_V2 "{\"id\":\"" CALL_A "\",\"version\":2,\"type\":\"groupCall\"}"

static void claim_ok(struct crd_store *store, int64_t now_ms, struct crd_job *job)
{
    struct crd_error err = {0};
    int r = crd_store_claim_job(store, now_ms, job, NULL, &err);
    ck_assert_msg(r == 0, "crd_store_claim_job failed (%d): %s", r, err.message);
}

/* Completes job with a record text and returns whether it was stored as a new version. */
static bool complete_ok(struct crd_store *store, const struct crd_job *job, int64_t version,
                        const char *record_json)
{
    struct crd_record_version record = {
        .version = version,
        .record_json = record_json,
        .record_json_len = strlen(record_json),
        .fetched_at_ms = NOTIFIED_AT + 5000,
    };
    struct crd_error err = {0};
    bool stored = false;
    int r = crd_store_complete_job(store, job, &record, TWO_SINKS, 2, &stored, &err);
    ck_assert_msg(r == 0, "crd_store_complete_job failed (%d): %s", r, err.message);
    return stored;
}

/* Reads one integer with a statement that has the call id as ?1. */
static int64_t raw_int_for_call(const char *db_path, const char *sql, const char *call_id)
{
    sqlite3 *db = raw_open(db_path);
    sqlite3_stmt *stmt = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_bind_text(stmt, 1, call_id, -1, SQLITE_STATIC), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(stmt), SQLITE_ROW);
    int64_t value = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return value;
}

static int64_t count_outbox(const char *db_path)
{
    sqlite3 *db = raw_open(db_path);
    int64_t n = raw_int(db, "SELECT count(*) FROM outbox");
    sqlite3_close(db);
    return n;
}

static int64_t count_records(const char *db_path)
{
    sqlite3 *db = raw_open(db_path);
    int64_t n = raw_int(db, "SELECT count(*) FROM records");
    sqlite3_close(db);
    return n;
}

START_TEST(test_claim_job_earliest_due_first)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice notices[] = {
        make_notice(CALL_A, NOTIFIED_AT + 300),
        make_notice(CALL_B, NOTIFIED_AT + 100),
        make_notice(CALL_C, NOTIFIED_AT + 200),
    };
    enqueue_ok(store, notices, 3);
    struct crd_error err = {0};
    struct crd_job job;
    int64_t now = NOTIFIED_AT + 250;

    claim_ok(store, now, &job);
    ck_assert_str_eq(job.call_id, CALL_B);
    claim_ok(store, now, &job);
    ck_assert_str_eq(job.call_id, CALL_C);
    int64_t next_due = -1;
    ck_assert_int_eq(crd_store_claim_job(store, now, &job, &next_due, &err), -ENOENT);
    ck_assert_int_eq(next_due, NOTIFIED_AT + 300);

    claim_ok(store, NOTIFIED_AT + 300, &job);
    ck_assert_str_eq(job.call_id, CALL_A);
    next_due = -1;
    ck_assert_int_eq(crd_store_claim_job(store, INT64_MAX, &job, &next_due, &err), -ENOENT);
    ck_assert_int_eq(next_due, 0);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_claim_job_fills_job_and_row)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice notices[] = {
        make_notice(CALL_A, NOTIFIED_AT),
        make_notice(CALL_A, NOTIFIED_AT + 40),
    };
    enqueue_ok(store, notices, 2);
    int64_t now = NOTIFIED_AT + 1000;

    struct crd_job job;
    claim_ok(store, now, &job);

    ck_assert_str_eq(job.tenant_id, TENANT_ID);
    ck_assert_str_eq(job.call_id, CALL_A);
    ck_assert_str_eq(job.subscription_id, SUBSCRIPTION_ID);
    ck_assert_int_eq(job.first_notified_at_ms, NOTIFIED_AT);
    ck_assert_int_eq(job.last_notified_at_ms, NOTIFIED_AT + 40);
    ck_assert_int_eq(job.claimed_at_ms, now);
    ck_assert_uint_eq(job.attempts, 0);
    ck_assert_int_eq(job.notification_count, 2);
    struct job_row row;
    read_job(env.db_path, CALL_A, &row);
    ck_assert_str_eq(row.state, "running");
    ck_assert_int_eq(row.last_attempt_at, now);
    job_row_free(&row);
    ck_assert_int_eq(raw_int_for_call(env.db_path, "SELECT claimed_at FROM jobs WHERE call_id = ?1",
                                      CALL_A),
                     now);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_claim_job_without_subscription)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice notice = make_notice(CALL_A, NOTIFIED_AT);
    notice.subscription_id = NULL;
    enqueue_ok(store, &notice, 1);

    struct crd_job job;
    claim_ok(store, NOTIFIED_AT, &job);

    ck_assert_str_eq(job.subscription_id, "");
    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_complete_job_stores_newer_version)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice notice = make_notice(CALL_A, NOTIFIED_AT);
    enqueue_ok(store, &notice, 1);
    struct crd_job job;
    claim_ok(store, NOTIFIED_AT + 1000, &job);
    int64_t before = crd_time_now_ms();

    ck_assert(complete_ok(store, &job, 1, RECORD_V1));

    int64_t after = crd_time_now_ms();
    sqlite3 *db = raw_open(env.db_path);
    char *record = raw_text(db, "SELECT record FROM records");
    ck_assert_str_eq(record, RECORD_V1);
    free(record);
    ck_assert_int_eq(raw_int(db, "SELECT version FROM records"), 1);
    ck_assert_int_eq(raw_int(db, "SELECT fetched_at FROM records"), NOTIFIED_AT + 5000);
    ck_assert_int_eq(raw_int(db, "SELECT first_notified_at FROM records"), NOTIFIED_AT);
    ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM outbox WHERE sink = 'archive'"), 1);
    ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM outbox WHERE sink = 'siem'"), 1);
    ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM outbox WHERE version = 1 AND call_id = '"
                                 CALL_A "' AND tenant_id = '" TENANT_ID "'"), 2);
    ck_assert_int_eq(raw_int(db, "SELECT sum(attempts) FROM outbox"), 0);
    ck_assert_int_ge(raw_int(db, "SELECT min(due_at) FROM outbox"), before);
    ck_assert_int_le(raw_int(db, "SELECT max(due_at) FROM outbox"), after);
    sqlite3_close(db);
    struct job_row row;
    read_job(env.db_path, CALL_A, &row);
    ck_assert_str_eq(row.state, "done");
    job_row_free(&row);
    int64_t newest = 0;
    struct crd_error err = {0};
    ck_assert_int_eq(crd_store_newest_version(store, TENANT_ID, CALL_A, &newest, &err), 0);
    ck_assert_int_eq(newest, 1);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_complete_job_drops_equal_or_older)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job job;
    static const int64_t versions[] = {2, 2, 1};
    static const bool expected[] = {true, false, false};

    for (size_t i = 0; i < 3; i++) {
        struct crd_job_notice notice = make_notice(CALL_A, NOTIFIED_AT + 10 * (int64_t)i);
        enqueue_ok(store, &notice, 1);
        claim_ok(store, NOTIFIED_AT + 1000 + 10 * (int64_t)i, &job);
        bool stored = complete_ok(store, &job, versions[i], versions[i] == 2 ? RECORD_V2
                                                                             : RECORD_V1);
        ck_assert_msg(stored == expected[i], "completion %zu with version %lld: stored %d", i,
                      (long long)versions[i], stored);
    }

    ck_assert_int_eq(count_records(env.db_path), 1);
    ck_assert_int_eq(count_outbox(env.db_path), 2);
    struct job_row row;
    read_job(env.db_path, CALL_A, &row);
    ck_assert_str_eq(row.state, "done");
    job_row_free(&row);
    int64_t newest = 0;
    struct crd_error err = {0};
    ck_assert_int_eq(crd_store_newest_version(store, TENANT_ID, CALL_A, &newest, &err), 0);
    ck_assert_int_eq(newest, 2);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_newest_version_unknown_call)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_error err = {0};
    int64_t newest = -7;

    ck_assert_int_eq(crd_store_newest_version(store, TENANT_ID, CALL_B, &newest, &err), -ENOENT);
    ck_assert_int_eq(newest, -7);
    ck_assert_int_eq(crd_store_newest_version(store, NULL, CALL_B, &newest, &err), -EINVAL);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_notification_during_fetch_rearms)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice notice = make_notice(CALL_A, NOTIFIED_AT);
    enqueue_ok(store, &notice, 1);
    struct crd_job job;
    claim_ok(store, NOTIFIED_AT + 1000, &job);
    struct crd_job_notice during = make_notice(CALL_A, NOTIFIED_AT + 2000);
    enqueue_ok(store, &during, 1);
    int64_t before = crd_time_now_ms();

    ck_assert(complete_ok(store, &job, 1, RECORD_V1));

    struct job_row row;
    read_job(env.db_path, CALL_A, &row);
    ck_assert_str_eq(row.state, "pending");
    ck_assert_int_ge(row.due_at, before);
    ck_assert_int_le(row.due_at, crd_time_now_ms());
    ck_assert_int_eq(row.attempts, 0);
    job_row_free(&row);
    struct crd_job again;
    claim_ok(store, crd_time_now_ms(), &again);
    ck_assert_str_eq(again.call_id, CALL_A);
    ck_assert_int_eq(again.last_notified_at_ms, NOTIFIED_AT + 2000);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

/* A notice stamped before the claim time (same millisecond, or the clock stepped back). */
START_TEST(test_notification_with_earlier_stamp_rearms)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice notice = make_notice(CALL_A, NOTIFIED_AT);
    enqueue_ok(store, &notice, 1);
    struct crd_job job;
    claim_ok(store, NOTIFIED_AT + 1000, &job);
    struct crd_job_notice during = make_notice(CALL_A, NOTIFIED_AT + 500);
    enqueue_ok(store, &during, 1);

    ck_assert(complete_ok(store, &job, 1, RECORD_V1));

    struct job_row row;
    read_job(env.db_path, CALL_A, &row);
    ck_assert_str_eq(row.state, "pending");
    job_row_free(&row);
    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_reschedule_job_counts_attempts)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice notice = make_notice(CALL_A, NOTIFIED_AT);
    enqueue_ok(store, &notice, 1);
    struct crd_error err = {0};
    struct crd_job job;
    int64_t due_at = NOTIFIED_AT + 60000;

    for (unsigned i = 0; i < 2; i++) {
        claim_ok(store, due_at - 60000 + 60000 * (int64_t)i, &job);
        ck_assert_uint_eq(job.attempts, i);
        int r = crd_store_reschedule_job(store, &job, due_at + 60000 * (int64_t)i, "HTTP 503",
                                         &err);
        ck_assert_msg(r == 0, "crd_store_reschedule_job failed (%d): %s", r, err.message);
    }

    struct job_row row;
    read_job(env.db_path, CALL_A, &row);
    ck_assert_str_eq(row.state, "pending");
    ck_assert_int_eq(row.due_at, due_at + 60000);
    ck_assert_int_eq(row.attempts, 2);
    ck_assert_str_eq(row.last_error, "HTTP 503");
    job_row_free(&row);
    int64_t next_due = 0;
    ck_assert_int_eq(crd_store_claim_job(store, due_at + 59999, &job, &next_due, &err), -ENOENT);
    ck_assert_int_eq(next_due, due_at + 60000);
    claim_ok(store, due_at + 60000, &job);
    ck_assert_uint_eq(job.attempts, 2);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_postpone_job_keeps_attempts)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice notice = make_notice(CALL_A, NOTIFIED_AT);
    enqueue_ok(store, &notice, 1);
    struct crd_error err = {0};
    struct crd_job job;
    claim_ok(store, NOTIFIED_AT, &job);
    ck_assert_int_eq(crd_store_reschedule_job(store, &job, NOTIFIED_AT, "HTTP 500", &err), 0);
    claim_ok(store, NOTIFIED_AT, &job);
    ck_assert_uint_eq(job.attempts, 1);

    int r = crd_store_postpone_job(store, &job, NOTIFIED_AT + 30000, "HTTP 503 during an outage",
                                   &err);

    ck_assert_msg(r == 0, "crd_store_postpone_job failed (%d): %s", r, err.message);
    struct job_row row;
    read_job(env.db_path, CALL_A, &row);
    ck_assert_str_eq(row.state, "pending");
    ck_assert_int_eq(row.due_at, NOTIFIED_AT + 30000);
    ck_assert_int_eq(row.attempts, 1);
    ck_assert_str_eq(row.last_error, "HTTP 503 during an outage");
    job_row_free(&row);
    claim_ok(store, NOTIFIED_AT + 30000, &job);
    ck_assert_uint_eq(job.attempts, 1);
    ck_assert_int_eq(crd_store_postpone_job(store, NULL, NOTIFIED_AT, "x", &err), -EINVAL);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

/* Opens a store whose jobs wait coalesce_ms after their first notification. */
static struct crd_store *open_coalescing_store(const struct test_env *env, uint64_t coalesce_ms)
{
    struct crd_store_options options = {
        .state_directory = env->state_dir,
        .durability = CRD_DURABILITY_PROCESS,
        .job_coalesce_ms = coalesce_ms,
    };
    struct crd_store *store = NULL;
    struct crd_error err = {0};
    int r = crd_store_open(&options, &store, NULL, &err);
    ck_assert_msg(r == 0, "crd_store_open failed (%d): %s", r, err.message);
    return store;
}

START_TEST(test_burst_within_window_makes_one_due_job)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_coalescing_store(&env, 2000);
    struct crd_error err = {0};
    struct crd_job job;
    int64_t next_due = 0;

    for (int64_t i = 0; i < 5; i++) {
        struct crd_job_notice notice = make_notice(CALL_A, NOTIFIED_AT + 300 * i);
        enqueue_ok(store, &notice, 1);
    }

    ck_assert_int_eq(crd_store_claim_job(store, NOTIFIED_AT + 1999, &job, &next_due, &err),
                     -ENOENT);
    ck_assert_int_eq(next_due, NOTIFIED_AT + 2000);
    claim_ok(store, NOTIFIED_AT + 2000, &job);
    ck_assert_int_eq(job.notification_count, 5);
    ck_assert_int_eq(crd_store_claim_job(store, INT64_MAX, &job, &next_due, &err), -ENOENT);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_notice_during_fetch_waits_for_window)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_coalescing_store(&env, 60000);
    int64_t now = crd_time_now_ms();
    struct crd_job_notice first = make_notice(CALL_A, now - 60000);
    enqueue_ok(store, &first, 1);
    struct crd_job job;
    claim_ok(store, now, &job);
    struct crd_job_notice during = make_notice(CALL_A, now);
    enqueue_ok(store, &during, 1);

    ck_assert(complete_ok(store, &job, 1, "{\"id\":\"" CALL_A "\",\"version\":1}"));

    struct job_row row;
    read_job(env.db_path, CALL_A, &row);
    ck_assert_str_eq(row.state, "pending");
    ck_assert_int_eq(row.due_at, now + 60000);
    job_row_free(&row);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_job_pending_until_claimed)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_error err = {0};
    bool pending = true;
    ck_assert_int_eq(crd_store_job_pending(store, TENANT_ID, CALL_A, &pending, &err), 0);
    ck_assert(!pending);

    struct crd_job_notice notice = make_notice(CALL_A, NOTIFIED_AT);
    enqueue_ok(store, &notice, 1);
    ck_assert_int_eq(crd_store_job_pending(store, TENANT_ID, CALL_A, &pending, &err), 0);
    ck_assert(pending);
    ck_assert_int_eq(crd_store_job_pending(store, TENANT_ID, CALL_B, &pending, &err), 0);
    ck_assert(!pending);

    struct crd_job job;
    claim_ok(store, NOTIFIED_AT, &job);
    ck_assert_int_eq(crd_store_job_pending(store, TENANT_ID, CALL_A, &pending, &err), 0);
    ck_assert(!pending);
    ck_assert_int_eq(crd_store_job_pending(store, NULL, CALL_A, &pending, &err), -EINVAL);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_fail_job_marks_failed)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice notice = make_notice(CALL_A, NOTIFIED_AT);
    enqueue_ok(store, &notice, 1);
    struct crd_error err = {0};
    struct crd_job job;
    claim_ok(store, NOTIFIED_AT + 1000, &job);

    int r = crd_store_fail_job(store, &job, "HTTP 404 after the retention period", &err);

    ck_assert_msg(r == 0, "crd_store_fail_job failed (%d): %s", r, err.message);
    struct job_row row;
    read_job(env.db_path, CALL_A, &row);
    ck_assert_str_eq(row.state, "failed");
    ck_assert_int_eq(row.attempts, 1);
    ck_assert_str_eq(row.last_error, "HTTP 404 after the retention period");
    job_row_free(&row);
    int64_t next_due = -1;
    ck_assert_int_eq(crd_store_claim_job(store, INT64_MAX, &job, &next_due, &err), -ENOENT);
    ck_assert_int_eq(next_due, 0);
    ck_assert_int_eq(count_records(env.db_path), 0);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_fail_job_notified_during_fetch_rearms)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice notice = make_notice(CALL_A, NOTIFIED_AT);
    enqueue_ok(store, &notice, 1);
    struct crd_error err = {0};
    struct crd_job job;
    claim_ok(store, NOTIFIED_AT + 1000, &job);
    ck_assert_int_eq(crd_store_reschedule_job(store, &job, NOTIFIED_AT + 1000, "HTTP 503", &err),
                     0);
    claim_ok(store, NOTIFIED_AT + 1000, &job);
    ck_assert_uint_eq(job.attempts, 1);
    struct crd_job_notice during = make_notice(CALL_A, NOTIFIED_AT + 2000);
    enqueue_ok(store, &during, 1);

    ck_assert_int_eq(crd_store_fail_job(store, &job, "HTTP 403", &err), 0);

    struct job_row row;
    read_job(env.db_path, CALL_A, &row);
    ck_assert_str_eq(row.state, "pending");
    ck_assert_int_eq(row.attempts, 0);
    ck_assert_str_eq(row.last_error, "HTTP 403");
    job_row_free(&row);
    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_change_unknown_job_fails)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_error err = {0};
    struct crd_job job = {.tenant_id = TENANT_ID, .call_id = CALL_D};

    ck_assert_int_eq(crd_store_reschedule_job(store, &job, NOTIFIED_AT, "x", &err), -ENOENT);
    ck_assert_int_eq(crd_store_fail_job(store, &job, "x", &err), -ENOENT);
    struct crd_job bad = {.tenant_id = TENANT_ID, .call_id = "not-a-guid"};
    ck_assert_int_eq(crd_store_reschedule_job(store, &bad, NOTIFIED_AT, "x", &err), -EINVAL);
    ck_assert_int_eq(crd_store_fail_job(store, NULL, "x", &err), -EINVAL);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_complete_job_invalid_arguments)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice notice = make_notice(CALL_A, NOTIFIED_AT);
    enqueue_ok(store, &notice, 1);
    struct crd_job job;
    claim_ok(store, NOTIFIED_AT + 1000, &job);
    struct crd_error err = {0};
    bool stored = false;
    struct crd_record_version record = {
        .version = 1,
        .record_json = RECORD_V1,
        .record_json_len = strlen(RECORD_V1),
        .fetched_at_ms = NOTIFIED_AT,
    };
    const char *duplicate[] = {"siem", "siem"};
    const char *empty[] = {""};
    const char *too_long[] = {"a-sink-name-longer-than-sixty-four-bytes-which-is-the-maximum-length"};
    struct crd_record_version negative = record;
    negative.version = -1;

    ck_assert_int_eq(crd_store_complete_job(store, &job, &record, duplicate, 2, &stored, &err),
                     -EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "siem"));
    ck_assert_int_eq(crd_store_complete_job(store, &job, &record, empty, 1, &stored, &err),
                     -EINVAL);
    ck_assert_int_eq(crd_store_complete_job(store, &job, &record, too_long, 1, &stored, &err),
                     -EINVAL);
    ck_assert_int_eq(crd_store_complete_job(store, &job, &negative, TWO_SINKS, 2, &stored, &err),
                     -EINVAL);
    ck_assert_int_eq(crd_store_complete_job(store, &job, NULL, TWO_SINKS, 2, &stored, &err),
                     -EINVAL);
    ck_assert_int_eq(crd_store_complete_job(store, NULL, &record, TWO_SINKS, 2, &stored, &err),
                     -EINVAL);
    ck_assert_int_eq(count_records(env.db_path), 0);
    ck_assert_int_eq(count_outbox(env.db_path), 0);
    struct job_row row;
    read_job(env.db_path, CALL_A, &row);
    ck_assert_str_eq(row.state, "running");
    job_row_free(&row);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

/* A failing outbox insert rolls the record back too, and the job stays running. */
START_TEST(test_complete_job_failure_rolls_back)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice notice = make_notice(CALL_A, NOTIFIED_AT);
    enqueue_ok(store, &notice, 1);
    struct crd_job job;
    claim_ok(store, NOTIFIED_AT + 1000, &job);
    raw_exec_on(env.db_path, "CREATE TRIGGER reject_siem BEFORE INSERT ON outbox"
                             " WHEN NEW.sink = 'siem' BEGIN SELECT RAISE(ABORT, 'rejected'); END");
    struct crd_record_version record = {
        .version = 1,
        .record_json = RECORD_V1,
        .record_json_len = strlen(RECORD_V1),
        .fetched_at_ms = NOTIFIED_AT,
    };
    struct crd_error err = {0};
    bool stored = false;

    int r = crd_store_complete_job(store, &job, &record, TWO_SINKS, 2, &stored, &err);

    ck_assert_int_eq(r, -EIO);
    ck_assert_ptr_nonnull(strstr(err.message, "siem"));
    ck_assert_int_eq(count_records(env.db_path), 0);
    ck_assert_int_eq(count_outbox(env.db_path), 0);
    struct job_row row;
    read_job(env.db_path, CALL_A, &row);
    ck_assert_str_eq(row.state, "running");
    job_row_free(&row);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_recover_jobs_after_crash)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env);
    struct crd_job_notice notices[] = {
        make_notice(CALL_A, NOTIFIED_AT),
        make_notice(CALL_B, NOTIFIED_AT + 1),
        make_notice(CALL_C, NOTIFIED_AT + 2),
    };
    enqueue_ok(store, notices, 3);
    struct crd_job job;
    claim_ok(store, NOTIFIED_AT + 1000, &job);
    claim_ok(store, NOTIFIED_AT + 1000, &job);
    crd_store_close(store); /* the process dies with two fetches running */

    store = open_store(&env);
    int64_t before = crd_time_now_ms();
    int64_t recovered = -1;
    struct crd_error err = {0};
    int r = crd_store_recover_jobs(store, &recovered, &err);

    ck_assert_msg(r == 0, "crd_store_recover_jobs failed (%d): %s", r, err.message);
    ck_assert_int_eq(recovered, 2);
    static const char *const calls[] = {CALL_A, CALL_B};
    for (size_t i = 0; i < 2; i++) {
        struct job_row row;
        read_job(env.db_path, calls[i], &row);
        ck_assert_str_eq(row.state, "pending");
        ck_assert_int_ge(row.due_at, before);
        job_row_free(&row);
    }
    struct job_row untouched;
    read_job(env.db_path, CALL_C, &untouched);
    ck_assert_int_eq(untouched.due_at, NOTIFIED_AT + 2);
    job_row_free(&untouched);
    ck_assert_int_eq(crd_store_recover_jobs(store, NULL, &err), 0);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

/* --- migration ------------------------------------------------------------------------------ */

/* The schema of version 1 as it shipped, to build a database as the previous release left it. */
static const char schema_version_1[] =
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
    "  updated_at INTEGER NOT NULL);"
    "CREATE TABLE jobs (tenant_id TEXT NOT NULL, call_id TEXT NOT NULL, subscription_id TEXT,"
    "  change_type TEXT, first_notified_at INTEGER NOT NULL, last_notified_at INTEGER NOT NULL,"
    "  notification_count INTEGER NOT NULL DEFAULT 1, state TEXT NOT NULL DEFAULT 'pending'"
    "    CHECK (state IN ('pending', 'running', 'done', 'failed')),"
    "  due_at INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_attempt_at INTEGER,"
    "  last_error TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
    "  PRIMARY KEY (tenant_id, call_id)) WITHOUT ROWID;"
    "CREATE INDEX jobs_state_due_at ON jobs (state, due_at);"
    "PRAGMA user_version = 1;"
    "INSERT INTO jobs (tenant_id, call_id, first_notified_at, last_notified_at, state, due_at,"
    "                  attempts, created_at, updated_at)"
    " VALUES ('" TENANT_ID "', '" CALL_A "', 1000, 1000, 'pending', 1000, 0, 1000, 1000),"
    "        ('" TENANT_ID "', '" CALL_B "', 2000, 2000, 'running', 2000, 1, 2000, 2000),"
    "        ('" TENANT_ID "', '" CALL_C "', 3000, 3000, 'done', 3000, 0, 3000, 3000);";

START_TEST(test_migrate_version_1_keeps_jobs)
{
    struct test_env env;
    env_init(&env);
    ck_assert_int_eq(mkdir(env.state_dir, 0700), 0);
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open(env.db_path, &db), SQLITE_OK);
    raw_exec(db, schema_version_1);
    sqlite3_close(db);

    struct crd_store_open_report report = {-1, -1, -1};
    struct crd_store *store = open_store_with(env.state_dir, CRD_DURABILITY_PROCESS, 0, &report);

    ck_assert_int_eq(report.schema_version_before, 1);
    ck_assert_int_eq(report.schema_version, crd_store_schema_version());
    ck_assert_int_eq(report.pending_jobs, 2);
    ck_assert_int_eq(count_jobs(env.db_path), 3);
    db = raw_open(env.db_path);
    ck_assert_int_eq(raw_int(db, "PRAGMA user_version"), crd_store_schema_version());
    ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM jobs WHERE claimed_at IS NULL"), 3);
    ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM records"), 0);
    ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM outbox"), 0);
    sqlite3_close(db);
    struct crd_error err = {0};
    int64_t recovered = 0;
    ck_assert_int_eq(crd_store_recover_jobs(store, &recovered, &err), 0);
    ck_assert_int_eq(recovered, 1);
    struct crd_job job;
    claim_ok(store, 1500, &job);
    ck_assert_str_eq(job.call_id, CALL_A);
    ck_assert(complete_ok(store, &job, 1, RECORD_V1));
    ck_assert_int_eq(count_outbox(env.db_path), 2);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

static Suite *store_suite(void)
{
    Suite *suite = suite_create("store");

    TCase *open = tcase_create("open");
    tcase_add_test(open, test_open_new_database_uses_wal);
    tcase_add_test(open, test_open_creates_directory_0700);
    tcase_add_test(open, test_open_files_close_on_exec);
    tcase_add_test(open, test_open_missing_parent_fails);
    tcase_add_test(open, test_open_state_dir_is_file_fails);
    tcase_add_test(open, test_open_invalid_options_fail);
    tcase_add_test(open, test_open_not_a_database_fails);
    tcase_add_test(open, test_reopen_keeps_data);
    tcase_add_test(open, test_open_newer_schema_fails);
    tcase_add_test(open, test_synchronous_follows_durability);
    tcase_add_test(open, test_pending_jobs_counts_running);
    tcase_add_test(open, test_close_accepts_null);
    suite_add_tcase(suite, open);

    TCase *enqueue = tcase_create("enqueue");
    tcase_add_test(enqueue, test_enqueue_stores_exact_row);
    tcase_add_test(enqueue, test_enqueue_null_optional_fields);
    tcase_add_test(enqueue, test_enqueue_coalesces_pending_job);
    tcase_add_test(enqueue, test_enqueue_coalesces_within_batch);
    tcase_add_test(enqueue, test_enqueue_keeps_running_job);
    tcase_add_test(enqueue, test_enqueue_rearms_finished_job);
    tcase_add_test(enqueue, test_enqueue_invalid_notice_stores_nothing);
    tcase_add_test(enqueue, test_enqueue_empty_batch);
    tcase_add_test(enqueue, test_enqueue_failure_rolls_back);
    tcase_add_test(enqueue, test_enqueue_locked_database_busy);
    tcase_add_test(enqueue, test_enqueue_ten_thousand_notices);
    tcase_add_test(enqueue, test_enqueue_concurrent_threads);
    suite_add_tcase(suite, enqueue);

    TCase *settings = tcase_create("settings");
    tcase_add_test(settings, test_settings_round_trip);
    tcase_add_test(settings, test_settings_invalid_arguments);
    suite_add_tcase(suite, settings);

    TCase *jobs = tcase_create("jobs");
    tcase_add_test(jobs, test_claim_job_earliest_due_first);
    tcase_add_test(jobs, test_claim_job_fills_job_and_row);
    tcase_add_test(jobs, test_claim_job_without_subscription);
    tcase_add_test(jobs, test_complete_job_stores_newer_version);
    tcase_add_test(jobs, test_complete_job_drops_equal_or_older);
    tcase_add_test(jobs, test_newest_version_unknown_call);
    tcase_add_test(jobs, test_notification_during_fetch_rearms);
    tcase_add_test(jobs, test_notification_with_earlier_stamp_rearms);
    tcase_add_test(jobs, test_reschedule_job_counts_attempts);
    tcase_add_test(jobs, test_postpone_job_keeps_attempts);
    tcase_add_test(jobs, test_job_pending_until_claimed);
    tcase_add_test(jobs, test_burst_within_window_makes_one_due_job);
    tcase_add_test(jobs, test_notice_during_fetch_waits_for_window);
    tcase_add_test(jobs, test_fail_job_marks_failed);
    tcase_add_test(jobs, test_fail_job_notified_during_fetch_rearms);
    tcase_add_test(jobs, test_change_unknown_job_fails);
    tcase_add_test(jobs, test_complete_job_invalid_arguments);
    tcase_add_test(jobs, test_complete_job_failure_rolls_back);
    tcase_add_test(jobs, test_recover_jobs_after_crash);
    tcase_add_test(jobs, test_migrate_version_1_keeps_jobs);
    suite_add_tcase(suite, jobs);

    return suite;
}

int main(void)
{
    SRunner *runner = srunner_create(store_suite());
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
