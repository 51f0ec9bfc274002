/* SPDX-License-Identifier: MIT */
/*
 * Tests of the group commit in crd_store_enqueue_jobs(), against real SQLite
 * files: concurrent callers share one transaction, each caller's batch is
 * all or none, and a failed COMMIT fails every caller in it.
 *
 * The line-up tests make grouping deterministic without sleeping. A raw
 * connection holds the write lock, so the first caller's transaction waits in
 * BEGIN IMMEDIATE (SQLite's busy handler). crd_store_wait_enqueue_queue()
 * then waits until the other callers are queued behind it, and releasing the
 * lock lets them run as exactly one second transaction.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "harness.h"
#include "store.h"
#include "util.h"

#define TENANT_ID "72f988bf-86f1-41af-91ab-2d7cd011db47"
#define SUBSCRIPTION_ID "7f105c7d-2dc5-4530-97cd-4e7ae6534c07"
#define POISON_CALL "dead0000-0000-4000-8000-00000000beef"
#define NOTIFIED_AT 1700000000123LL

/* Long enough for the line-up: the first caller waits in BEGIN until the test releases it. */
#define LINEUP_BUSY_TIMEOUT_MS 30000

struct test_env {
    char *tmpdir;
    char *state_dir;
    char *db_path;
};

static void env_init(struct test_env *env)
{
    env->tmpdir = crd_test_make_tmpdir("test_group_commit");
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

static struct crd_store *open_store(const struct test_env *env, enum crd_durability durability,
                                    unsigned busy_timeout_ms)
{
    struct crd_store_options options = {
        .state_directory = env->state_dir,
        .durability = durability,
        .busy_timeout_ms = busy_timeout_ms,
    };
    struct crd_store *store = NULL;
    struct crd_error err = {0};
    int r = crd_store_open(&options, &store, NULL, &err);
    ck_assert_msg(r == 0, "crd_store_open failed (%d): %s", r, err.message);
    return store;
}

static sqlite3 *raw_open(const char *path)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
    ck_assert_msg(rc == SQLITE_OK, "sqlite3_open_v2 '%s': %s", path, sqlite3_errstr(rc));
    ck_assert_int_eq(sqlite3_busy_timeout(db, 5000), SQLITE_OK);
    return db;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *message = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &message);
    ck_assert_msg(rc == SQLITE_OK, "'%s' failed: %s", sql, message != NULL ? message : "?");
    sqlite3_free(message);
}

static void raw_exec_on(const char *db_path, const char *sql)
{
    sqlite3 *db = raw_open(db_path);
    raw_exec(db, sql);
    sqlite3_close(db);
}

/* Runs a query that returns one integer, with call_id bound to ?1 when not NULL. */
static int64_t raw_int(const char *db_path, const char *sql, const char *call_id)
{
    sqlite3 *db = raw_open(db_path);
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    ck_assert_msg(rc == SQLITE_OK, "preparing '%s' failed: %s", sql, sqlite3_errmsg(db));
    if (call_id != NULL) {
        ck_assert_int_eq(sqlite3_bind_text(stmt, 1, call_id, -1, SQLITE_STATIC), SQLITE_OK);
    }
    rc = sqlite3_step(stmt);
    ck_assert_msg(rc == SQLITE_ROW, "'%s' returned no row: %s", sql, sqlite3_errmsg(db));
    int64_t value = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return value;
}

static int64_t count_job(const char *db_path, const char *call_id)
{
    return raw_int(db_path, "SELECT count(*) FROM jobs WHERE call_id = ?1", call_id);
}

static void make_guid(char buf[CRD_GUID_LEN + 1], unsigned group, unsigned n)
{
    snprintf(buf, CRD_GUID_LEN + 1, "%08x-0000-4000-8000-%012x", group, n);
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

/* --- many threads, many calls ------------------------------------------------------------- */

enum {
    MANY_THREADS = 8,
    MANY_CALLS_PER_THREAD = 100,
    MANY_SHARED_CALLS = 10,
};

struct many_worker {
    struct crd_store *store;
    unsigned index;
    unsigned failures;
    struct crd_error first_error;
};

/*
 * Each call enqueues two notices: one for a call id of its own and one for
 * one of MANY_SHARED_CALLS call ids that every thread notifies, so that the
 * shared jobs coalesce notices from many groups.
 */
static void *many_worker_run(void *arg)
{
    struct many_worker *worker = arg;
    for (unsigned i = 0; i < MANY_CALLS_PER_THREAD; i++) {
        unsigned n = worker->index * MANY_CALLS_PER_THREAD + i;
        char own_call[CRD_GUID_LEN + 1];
        char shared_call[CRD_GUID_LEN + 1];
        make_guid(own_call, 0xa, n);
        make_guid(shared_call, 0xb, n % MANY_SHARED_CALLS);
        struct crd_job_notice notices[] = {
            make_notice(own_call, NOTIFIED_AT + n),
            make_notice(shared_call, NOTIFIED_AT + n),
        };
        struct crd_error err = {0};
        if (crd_store_enqueue_jobs(worker->store, notices, 2, &err) < 0) {
            if (worker->failures == 0) {
                worker->first_error = err;
            }
            worker->failures++;
        }
    }
    return NULL;
}

/*
 * With eight threads calling at once, some calls must share a commit. The
 * last check can fail only if no two of the 800 calls ever overlapped.
 */
START_TEST(test_group_many_threads_store_once)
{
    enum { N_CALLS = MANY_THREADS * MANY_CALLS_PER_THREAD };
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env, CRD_DURABILITY_FULL, 0);
    struct many_worker workers[MANY_THREADS];
    pthread_t threads[MANY_THREADS];

    for (unsigned i = 0; i < MANY_THREADS; i++) {
        workers[i] = (struct many_worker){.store = store, .index = i};
        ck_assert_int_eq(pthread_create(&threads[i], NULL, many_worker_run, &workers[i]), 0);
    }
    for (unsigned i = 0; i < MANY_THREADS; i++) {
        ck_assert_int_eq(pthread_join(threads[i], NULL), 0);
    }

    for (unsigned i = 0; i < MANY_THREADS; i++) {
        ck_assert_msg(workers[i].failures == 0, "thread %u: %u failures, first: %s", i,
                      workers[i].failures, workers[i].first_error.message);
    }
    ck_assert_int_eq(raw_int(env.db_path, "SELECT count(*) FROM jobs", NULL),
                     N_CALLS + MANY_SHARED_CALLS);
    ck_assert_int_eq(raw_int(env.db_path,
                             "SELECT count(*) FROM jobs WHERE call_id LIKE '0000000a-%'"
                             " AND notification_count = 1",
                             NULL),
                     N_CALLS);
    ck_assert_int_eq(raw_int(env.db_path,
                             "SELECT sum(notification_count) FROM jobs"
                             " WHERE call_id LIKE '0000000b-%'",
                             NULL),
                     N_CALLS);
    ck_assert_int_eq(raw_int(env.db_path,
                             "SELECT min(notification_count) FROM jobs"
                             " WHERE call_id LIKE '0000000b-%'",
                             NULL),
                     N_CALLS / MANY_SHARED_CALLS);

    struct crd_store_enqueue_counts counts;
    crd_store_get_enqueue_counts(store, &counts);
    ck_assert_uint_eq(counts.batches, N_CALLS);
    ck_assert_uint_eq(counts.commits, counts.transactions);
    ck_assert_uint_lt(counts.commits, N_CALLS);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

/* --- line-up: one caller in a transaction, the others queued behind it -------------------- */

enum { LINEUP_QUEUED = 5, LINEUP_MAX_NOTICES = 3 };

struct lineup_caller {
    struct crd_store *store;
    struct crd_job_notice notices[LINEUP_MAX_NOTICES];
    char call_ids[LINEUP_MAX_NOTICES][CRD_GUID_LEN + 1];
    size_t n_notices;
    pthread_t thread;
    int result;
    struct crd_error err;
};

static void *lineup_caller_run(void *arg)
{
    struct lineup_caller *caller = arg;
    caller->result = crd_store_enqueue_jobs(caller->store, caller->notices, caller->n_notices,
                                            &caller->err);
    return NULL;
}

/* Gives the caller n distinct call ids of its own, numbered after index. */
static void lineup_caller_init(struct lineup_caller *caller, struct crd_store *store,
                               unsigned index, size_t n)
{
    *caller = (struct lineup_caller){.store = store, .n_notices = n};
    for (size_t i = 0; i < n; i++) {
        make_guid(caller->call_ids[i], 0xc, index * LINEUP_MAX_NOTICES + (unsigned)i);
        caller->notices[i] = make_notice(caller->call_ids[i], NOTIFIED_AT + index);
    }
}

/* Puts call_id in place of the caller's middle notice. */
static void lineup_caller_poison(struct lineup_caller *caller, const char *call_id)
{
    ck_assert_uint_eq(caller->n_notices, 3);
    caller->notices[1].call_id = call_id;
}

/*
 * Runs first alone as the first transaction and then every caller of queued
 * as the second, as the header comment describes.
 */
static void lineup_run(const struct test_env *env, struct crd_store *store,
                       struct lineup_caller *first, struct lineup_caller *queued, size_t n_queued)
{
    sqlite3 *locker = raw_open(env->db_path);
    raw_exec(locker, "BEGIN EXCLUSIVE");

    ck_assert_int_eq(pthread_create(&first->thread, NULL, lineup_caller_run, first), 0);
    crd_store_wait_enqueue_queue(store, 1, 0);
    for (size_t i = 0; i < n_queued; i++) {
        ck_assert_int_eq(pthread_create(&queued[i].thread, NULL, lineup_caller_run, &queued[i]),
                         0);
    }
    crd_store_wait_enqueue_queue(store, 1, n_queued);

    raw_exec(locker, "COMMIT");
    sqlite3_close(locker);

    ck_assert_int_eq(pthread_join(first->thread, NULL), 0);
    for (size_t i = 0; i < n_queued; i++) {
        ck_assert_int_eq(pthread_join(queued[i].thread, NULL), 0);
    }
}

/* Callers queued behind a running transaction all share the next one. */
START_TEST(test_group_queued_callers_share_commit)
{
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env, CRD_DURABILITY_FULL, LINEUP_BUSY_TIMEOUT_MS);
    struct lineup_caller first;
    struct lineup_caller queued[LINEUP_QUEUED];
    lineup_caller_init(&first, store, 0, 1);
    for (unsigned i = 0; i < LINEUP_QUEUED; i++) {
        lineup_caller_init(&queued[i], store, i + 1, 2);
    }

    lineup_run(&env, store, &first, queued, LINEUP_QUEUED);

    ck_assert_msg(first.result == 0, "first caller failed (%d): %s", first.result,
                  first.err.message);
    for (unsigned i = 0; i < LINEUP_QUEUED; i++) {
        ck_assert_msg(queued[i].result == 0, "queued caller %u failed (%d): %s", i,
                      queued[i].result, queued[i].err.message);
    }
    ck_assert_int_eq(raw_int(env.db_path, "SELECT count(*) FROM jobs", NULL),
                     1 + 2 * LINEUP_QUEUED);

    struct crd_store_enqueue_counts counts;
    crd_store_get_enqueue_counts(store, &counts);
    ck_assert_uint_eq(counts.batches, 1 + LINEUP_QUEUED);
    ck_assert_uint_eq(counts.transactions, 2);
    ck_assert_uint_eq(counts.commits, 2);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

/* A batch whose insert fails is rolled back alone; the rest of its group commits. */
START_TEST(test_group_failed_batch_fails_alone)
{
    enum { POISONED = 2 };
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env, CRD_DURABILITY_FULL, LINEUP_BUSY_TIMEOUT_MS);
    raw_exec_on(env.db_path, "CREATE TRIGGER inject_failure BEFORE INSERT ON jobs"
                             " WHEN NEW.call_id = '" POISON_CALL "'"
                             " BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    struct lineup_caller first;
    struct lineup_caller queued[LINEUP_QUEUED];
    lineup_caller_init(&first, store, 0, 1);
    for (unsigned i = 0; i < LINEUP_QUEUED; i++) {
        lineup_caller_init(&queued[i], store, i + 1, 3);
    }
    lineup_caller_poison(&queued[POISONED], POISON_CALL);

    lineup_run(&env, store, &first, queued, LINEUP_QUEUED);

    ck_assert_int_eq(first.result, 0);
    for (unsigned i = 0; i < LINEUP_QUEUED; i++) {
        if (i == POISONED) {
            continue;
        }
        ck_assert_msg(queued[i].result == 0, "queued caller %u failed (%d): %s", i,
                      queued[i].result, queued[i].err.message);
        ck_assert_int_eq(count_job(env.db_path, queued[i].call_ids[0]), 1);
        ck_assert_int_eq(count_job(env.db_path, queued[i].call_ids[2]), 1);
    }

    const struct lineup_caller *poisoned = &queued[POISONED];
    ck_assert_int_eq(poisoned->result, -EIO);
    ck_assert_int_eq(poisoned->err.code, -EIO);
    ck_assert_ptr_nonnull(strstr(poisoned->err.message, "injected failure"));
    ck_assert_ptr_nonnull(strstr(poisoned->err.message, POISON_CALL));
    ck_assert_ptr_nonnull(strstr(poisoned->err.message, env.db_path));
    ck_assert_int_eq(count_job(env.db_path, poisoned->call_ids[0]), 0);
    ck_assert_int_eq(count_job(env.db_path, POISON_CALL), 0);
    ck_assert_int_eq(count_job(env.db_path, poisoned->call_ids[2]), 0);
    ck_assert_int_eq(raw_int(env.db_path, "SELECT count(*) FROM jobs", NULL),
                     1 + 3 * (LINEUP_QUEUED - 1));

    /* The other callers' messages stay empty: each caller sees only its own failure. */
    for (unsigned i = 0; i < LINEUP_QUEUED; i++) {
        if (i != POISONED) {
            ck_assert_str_eq(queued[i].err.message, "");
        }
    }

    struct crd_store_enqueue_counts counts;
    crd_store_get_enqueue_counts(store, &counts);
    ck_assert_uint_eq(counts.transactions, 2);
    ck_assert_uint_eq(counts.commits, 2);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

/*
 * A COMMIT that fails fails every batch of its group. In WAL mode a lock held
 * by another connection blocks BEGIN IMMEDIATE but never the COMMIT after it,
 * so the test makes COMMIT fail with a deferred foreign key instead. A
 * trigger inserts a child row without a parent for one call id, and SQLite
 * checks deferred foreign keys only at COMMIT.
 */
START_TEST(test_group_failed_commit_fails_all)
{
    enum { POISONED = 3 };
    struct test_env env;
    env_init(&env);
    struct crd_store *store = open_store(&env, CRD_DURABILITY_FULL, LINEUP_BUSY_TIMEOUT_MS);
    raw_exec_on(env.db_path,
                "CREATE TABLE commit_parent (id INTEGER PRIMARY KEY);"
                "CREATE TABLE commit_child (parent_id INTEGER"
                "  REFERENCES commit_parent (id) DEFERRABLE INITIALLY DEFERRED);"
                "CREATE TRIGGER fail_commit AFTER INSERT ON jobs"
                " WHEN NEW.call_id = '" POISON_CALL "'"
                " BEGIN INSERT INTO commit_child VALUES (42); END");
    struct lineup_caller first;
    struct lineup_caller queued[LINEUP_QUEUED];
    lineup_caller_init(&first, store, 0, 1);
    for (unsigned i = 0; i < LINEUP_QUEUED; i++) {
        lineup_caller_init(&queued[i], store, i + 1, 3);
    }
    lineup_caller_poison(&queued[POISONED], POISON_CALL);

    lineup_run(&env, store, &first, queued, LINEUP_QUEUED);

    ck_assert_int_eq(first.result, 0);
    ck_assert_int_eq(count_job(env.db_path, first.call_ids[0]), 1);
    for (unsigned i = 0; i < LINEUP_QUEUED; i++) {
        ck_assert_int_eq(queued[i].result, -EIO);
        ck_assert_int_eq(queued[i].err.code, -EIO);
        ck_assert_ptr_nonnull(strstr(queued[i].err.message, "committing the enqueued jobs"));
        ck_assert_ptr_nonnull(strstr(queued[i].err.message, "FOREIGN KEY constraint failed"));
    }
    ck_assert_int_eq(raw_int(env.db_path, "SELECT count(*) FROM jobs", NULL), 1);
    ck_assert_int_eq(raw_int(env.db_path, "SELECT count(*) FROM commit_child", NULL), 0);

    struct crd_store_enqueue_counts counts;
    crd_store_get_enqueue_counts(store, &counts);
    ck_assert_uint_eq(counts.transactions, 2);
    ck_assert_uint_eq(counts.commits, 1);

    /* The failed transaction was rolled back, so the next call starts a fresh one. */
    raw_exec_on(env.db_path, "DROP TRIGGER fail_commit");
    struct crd_error err = {0};
    int r = crd_store_enqueue_jobs(store, queued[0].notices, queued[0].n_notices, &err);
    ck_assert_msg(r == 0, "enqueue after the failed commit failed (%d): %s", r, err.message);
    ck_assert_int_eq(raw_int(env.db_path, "SELECT count(*) FROM jobs", NULL), 4);

    crd_store_close(store);
    env_cleanup(&env);
}
END_TEST

static Suite *group_commit_suite(void)
{
    Suite *suite = suite_create("group_commit");
    TCase *tcase = tcase_create("group_commit");
    tcase_set_timeout(tcase, 60);
    tcase_add_test(tcase, test_group_many_threads_store_once);
    tcase_add_test(tcase, test_group_queued_callers_share_commit);
    tcase_add_test(tcase, test_group_failed_batch_fails_alone);
    tcase_add_test(tcase, test_group_failed_commit_fails_all);
    suite_add_tcase(suite, tcase);
    return suite;
}

int main(void)
{
    SRunner *runner = srunner_create(group_commit_suite());
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
