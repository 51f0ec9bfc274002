/* SPDX-License-Identifier: MIT */
/*
 * Tests of the store's outbox against real SQLite files: the order in which
 * each sink receives versions, independence of sinks and calls, retries and
 * acknowledgements. Rows are created the way the fetcher creates them, by
 * completing claimed jobs.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "harness.h"
#include "store.h"
#include "util.h"

#define TENANT_ID "72f988bf-86f1-41af-91ab-2d7cd011db47"
#define SUBSCRIPTION_ID "7f105c7d-2dc5-4530-97cd-4e7ae6534c07"
#define CALL_A "2f1a1100-b174-40a0-aba7-0b405e01ed92"
#define CALL_B "b5d5a3d1-6c28-4a4b-9a8e-1f0c2f9e7d33"

#define NOTIFIED_AT 1700000000123LL
#define FETCHED_AT 1700000009000LL
#define HOUR_MS (3600LL * 1000)

static const char *const SINKS[] = {"archive", "siem"};

struct test_env {
    char *tmpdir;
    char *db_path;
    struct crd_store *store;
};

static void env_init(struct test_env *env)
{
    env->tmpdir = crd_test_make_tmpdir("test_outbox");
    ck_assert_int_ge(asprintf(&env->db_path, "%s/%s", env->tmpdir, CRD_STORE_FILE_NAME), 0);
    struct crd_store_options options = {
        .state_directory = env->tmpdir,
        .durability = CRD_DURABILITY_PROCESS,
    };
    struct crd_error err = {0};
    env->store = NULL;
    int r = crd_store_open(&options, &env->store, NULL, &err);
    ck_assert_msg(r == 0, "crd_store_open failed (%d): %s", r, err.message);
}

static void env_reopen(struct test_env *env)
{
    crd_store_close(env->store);
    struct crd_store_options options = {
        .state_directory = env->tmpdir,
        .durability = CRD_DURABILITY_PROCESS,
    };
    struct crd_error err = {0};
    env->store = NULL;
    int r = crd_store_open(&options, &env->store, NULL, &err);
    ck_assert_msg(r == 0, "crd_store_open failed (%d): %s", r, err.message);
}

static void env_cleanup(struct test_env *env)
{
    crd_store_close(env->store);
    crd_test_remove_tree(env->tmpdir);
    free(env->tmpdir);
    free(env->db_path);
}

/* The record text of one version, distinct per call and version. */
static void make_record(char *buf, size_t size, const char *call_id, int64_t version)
{
    snprintf(buf, size, "{\"id\":\"%s\",\"version\":%lld,\"type\":\"peerToPeer\"}", call_id,
             (long long)version);
}

/* Stores one version of a call for n_sinks of SINKS, as the fetcher does. */
static void store_version(struct test_env *env, const char *call_id, int64_t version,
                          size_t n_sinks)
{
    struct crd_job_notice notice = {
        .tenant_id = TENANT_ID,
        .call_id = call_id,
        .subscription_id = SUBSCRIPTION_ID,
        .change_type = "created",
        .notified_at_ms = NOTIFIED_AT,
    };
    struct crd_error err = {0};
    int r = crd_store_enqueue_jobs(env->store, &notice, 1, &err);
    ck_assert_msg(r == 0, "crd_store_enqueue_jobs failed (%d): %s", r, err.message);
    struct crd_job job;
    r = crd_store_claim_job(env->store, crd_time_now_ms(), &job, NULL, &err);
    ck_assert_msg(r == 0, "crd_store_claim_job failed (%d): %s", r, err.message);

    char text[256];
    make_record(text, sizeof(text), call_id, version);
    struct crd_record_version record = {
        .version = version,
        .record_json = text,
        .record_json_len = strlen(text),
        .fetched_at_ms = FETCHED_AT,
    };
    bool stored = false;
    r = crd_store_complete_job(env->store, &job, &record, SINKS, n_sinks, &stored, &err);
    ck_assert_msg(r == 0, "crd_store_complete_job failed (%d): %s", r, err.message);
    ck_assert(stored);
}

static void claim_ok(struct test_env *env, const char *sink, struct crd_delivery *delivery)
{
    struct crd_error err = {0};
    int r = crd_store_claim_delivery(env->store, sink, crd_time_now_ms(), delivery, NULL, &err);
    ck_assert_msg(r == 0, "crd_store_claim_delivery '%s' failed (%d): %s", sink, r, err.message);
}

static void ack_ok(struct test_env *env, int64_t id)
{
    struct crd_error err = {0};
    int r = crd_store_ack_delivery(env->store, id, &err);
    ck_assert_msg(r == 0, "crd_store_ack_delivery failed (%d): %s", r, err.message);
}

static void retry_ok(struct test_env *env, int64_t id, int64_t due_at_ms, const char *error)
{
    struct crd_error err = {0};
    int r = crd_store_retry_delivery(env->store, id, due_at_ms, error, &err);
    ck_assert_msg(r == 0, "crd_store_retry_delivery failed (%d): %s", r, err.message);
}

static int64_t count_ok(struct test_env *env, const char *sink)
{
    struct crd_error err = {0};
    int64_t count = -1;
    int r = crd_store_count_deliveries(env->store, sink, &count, &err);
    ck_assert_msg(r == 0, "crd_store_count_deliveries failed (%d): %s", r, err.message);
    return count;
}

/* Expects no claimable row for sink. Returns the next due time that the store reported. */
static int64_t claim_none(struct test_env *env, const char *sink)
{
    struct crd_error err = {0};
    struct crd_delivery delivery = {0};
    int64_t next_due = -1;
    int r = crd_store_claim_delivery(env->store, sink, crd_time_now_ms(), &delivery, &next_due,
                                     &err);
    ck_assert_msg(r == -ENOENT, "expected no due delivery for '%s', got %d (version %lld)", sink,
                  r, (long long)delivery.version);
    crd_delivery_clear(&delivery);
    return next_due;
}

static int64_t raw_int(const char *db_path, const char *sql)
{
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *stmt = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(stmt), SQLITE_ROW);
    int64_t value = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return value;
}

START_TEST(test_claim_delivery_fills_fields)
{
    struct test_env env;
    env_init(&env);
    store_version(&env, CALL_A, 3, 2);
    char expected[256];
    make_record(expected, sizeof(expected), CALL_A, 3);
    struct crd_delivery delivery;

    claim_ok(&env, "siem", &delivery);

    ck_assert_int_gt(delivery.id, 0);
    ck_assert_str_eq(delivery.sink, "siem");
    ck_assert_str_eq(delivery.tenant_id, TENANT_ID);
    ck_assert_str_eq(delivery.call_id, CALL_A);
    ck_assert_int_eq(delivery.version, 3);
    ck_assert_int_eq(delivery.first_notified_at_ms, NOTIFIED_AT);
    ck_assert_int_eq(delivery.fetched_at_ms, FETCHED_AT);
    ck_assert_uint_eq(delivery.attempts, 0);
    ck_assert_str_eq(delivery.record_json, expected);
    ck_assert_uint_eq(delivery.record_json_len, strlen(expected));

    crd_delivery_clear(&delivery);
    ck_assert_ptr_null(delivery.record_json);
    crd_delivery_clear(NULL);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_claim_does_not_change_row)
{
    struct test_env env;
    env_init(&env);
    store_version(&env, CALL_A, 1, 1);
    struct crd_delivery first;
    struct crd_delivery second;

    claim_ok(&env, "archive", &first);
    env_reopen(&env); /* as after a crash between delivery and acknowledgement */
    claim_ok(&env, "archive", &second);

    ck_assert_int_eq(second.id, first.id);
    ck_assert_uint_eq(second.attempts, 0);
    ck_assert_int_eq(count_ok(&env, "archive"), 1);
    crd_delivery_clear(&first);
    crd_delivery_clear(&second);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_versions_delivered_in_order)
{
    struct test_env env;
    env_init(&env);
    store_version(&env, CALL_A, 1, 1);
    store_version(&env, CALL_A, 2, 1);
    struct crd_delivery delivery;

    for (int64_t version = 1; version <= 2; version++) {
        claim_ok(&env, "archive", &delivery);
        ck_assert_int_eq(delivery.version, version);
        /* Until acknowledged, the same version is offered again and the next waits. */
        struct crd_delivery again;
        claim_ok(&env, "archive", &again);
        ck_assert_int_eq(again.version, version);
        crd_delivery_clear(&again);
        ack_ok(&env, delivery.id);
        crd_delivery_clear(&delivery);
    }

    ck_assert_int_eq(claim_none(&env, "archive"), 0);
    ck_assert_int_eq(count_ok(&env, "archive"), 0);
    ck_assert_int_eq(raw_int(env.db_path, "SELECT count(*) FROM records"), 2);
    env_cleanup(&env);
}
END_TEST

/* A retried v1 keeps v2 back, and the next due time is v1's, not v2's overdue one. */
START_TEST(test_retried_version_holds_back_newer)
{
    struct test_env env;
    env_init(&env);
    store_version(&env, CALL_A, 1, 1);
    store_version(&env, CALL_A, 2, 1);
    struct crd_delivery delivery;
    claim_ok(&env, "archive", &delivery);
    int64_t later = crd_time_now_ms() + HOUR_MS;

    retry_ok(&env, delivery.id, later, "disk full");

    ck_assert_int_eq(claim_none(&env, "archive"), later);
    struct crd_error err = {0};
    struct crd_delivery retried;
    ck_assert_int_eq(crd_store_claim_delivery(env.store, "archive", later, &retried, NULL, &err),
                     0);
    ck_assert_int_eq(retried.version, 1);
    ck_assert_uint_eq(retried.attempts, 1);
    crd_delivery_clear(&retried);
    crd_delivery_clear(&delivery);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_calls_do_not_block_each_other)
{
    struct test_env env;
    env_init(&env);
    store_version(&env, CALL_A, 1, 1);
    store_version(&env, CALL_B, 1, 1);
    struct crd_delivery delivery;
    claim_ok(&env, "archive", &delivery);
    ck_assert_str_eq(delivery.call_id, CALL_A); /* the older row first */

    retry_ok(&env, delivery.id, crd_time_now_ms() + HOUR_MS, "timed out");
    crd_delivery_clear(&delivery);
    claim_ok(&env, "archive", &delivery);

    ck_assert_str_eq(delivery.call_id, CALL_B);
    crd_delivery_clear(&delivery);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_sinks_are_independent)
{
    struct test_env env;
    env_init(&env);
    store_version(&env, CALL_A, 1, 2);
    store_version(&env, CALL_A, 2, 2);
    struct crd_delivery delivery;

    claim_ok(&env, "archive", &delivery);
    ack_ok(&env, delivery.id);
    crd_delivery_clear(&delivery);
    claim_ok(&env, "archive", &delivery);
    ack_ok(&env, delivery.id);
    crd_delivery_clear(&delivery);

    ck_assert_int_eq(count_ok(&env, "archive"), 0);
    ck_assert_int_eq(count_ok(&env, "siem"), 2);
    claim_ok(&env, "siem", &delivery);
    ck_assert_int_eq(delivery.version, 1);
    ck_assert_str_eq(delivery.sink, "siem");
    retry_ok(&env, delivery.id, crd_time_now_ms() + HOUR_MS, "HTTP 503");
    crd_delivery_clear(&delivery);
    ck_assert_int_gt(claim_none(&env, "siem"), 0);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_retry_keeps_row_and_counts)
{
    struct test_env env;
    env_init(&env);
    store_version(&env, CALL_A, 1, 1);
    struct crd_delivery delivery;
    claim_ok(&env, "archive", &delivery);
    int64_t now = crd_time_now_ms();

    retry_ok(&env, delivery.id, now - 2, "first error");
    retry_ok(&env, delivery.id, now - 1, "second error");

    ck_assert_int_eq(count_ok(&env, "archive"), 1);
    ck_assert_int_eq(raw_int(env.db_path, "SELECT attempts FROM outbox"), 2);
    ck_assert_int_eq(raw_int(env.db_path, "SELECT due_at FROM outbox"), now - 1);
    ck_assert_int_eq(raw_int(env.db_path,
                             "SELECT count(*) FROM outbox WHERE last_error = 'second error'"),
                     1);
    struct crd_delivery again;
    claim_ok(&env, "archive", &again);
    ck_assert_int_eq(again.id, delivery.id);
    ck_assert_uint_eq(again.attempts, 2);
    crd_delivery_clear(&again);
    crd_delivery_clear(&delivery);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_ack_keeps_record)
{
    struct test_env env;
    env_init(&env);
    store_version(&env, CALL_A, 1, 2);
    struct crd_delivery delivery;
    claim_ok(&env, "archive", &delivery);

    ack_ok(&env, delivery.id);

    ck_assert_int_eq(raw_int(env.db_path, "SELECT count(*) FROM records"), 1);
    ck_assert_int_eq(raw_int(env.db_path, "SELECT count(*) FROM outbox"), 1);
    struct crd_error err = {0};
    ck_assert_int_eq(crd_store_ack_delivery(env.store, delivery.id, &err), -ENOENT);
    ck_assert_int_eq(crd_store_retry_delivery(env.store, delivery.id, 0, "x", &err), -ENOENT);
    crd_delivery_clear(&delivery);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_count_deliveries_per_sink)
{
    struct test_env env;
    env_init(&env);

    ck_assert_int_eq(count_ok(&env, "archive"), 0);
    store_version(&env, CALL_A, 1, 2);
    store_version(&env, CALL_A, 2, 1);
    store_version(&env, CALL_B, 7, 2);

    ck_assert_int_eq(count_ok(&env, "archive"), 3);
    ck_assert_int_eq(count_ok(&env, "siem"), 2);
    ck_assert_int_eq(count_ok(&env, "unknown"), 0);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_claim_delivery_invalid_arguments)
{
    struct test_env env;
    env_init(&env);
    struct crd_error err = {0};
    struct crd_delivery delivery = {0};
    char long_name[80];
    memset(long_name, 'x', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';

    ck_assert_int_eq(crd_store_claim_delivery(env.store, "", 0, &delivery, NULL, &err), -EINVAL);
    ck_assert_int_eq(crd_store_claim_delivery(env.store, long_name, 0, &delivery, NULL, &err),
                     -EINVAL);
    ck_assert_int_eq(crd_store_claim_delivery(env.store, NULL, 0, &delivery, NULL, &err), -EINVAL);
    ck_assert_int_eq(crd_store_claim_delivery(NULL, "siem", 0, &delivery, NULL, &err), -EINVAL);
    ck_assert_int_eq(crd_store_count_deliveries(env.store, NULL, NULL, &err), -EINVAL);
    ck_assert_int_eq(crd_store_ack_delivery(NULL, 1, &err), -EINVAL);
    env_cleanup(&env);
}
END_TEST

static Suite *outbox_suite(void)
{
    Suite *suite = suite_create("outbox");

    TCase *claim = tcase_create("claim");
    tcase_add_test(claim, test_claim_delivery_fills_fields);
    tcase_add_test(claim, test_claim_does_not_change_row);
    tcase_add_test(claim, test_versions_delivered_in_order);
    tcase_add_test(claim, test_retried_version_holds_back_newer);
    tcase_add_test(claim, test_calls_do_not_block_each_other);
    tcase_add_test(claim, test_sinks_are_independent);
    tcase_add_test(claim, test_claim_delivery_invalid_arguments);
    suite_add_tcase(suite, claim);

    TCase *finish = tcase_create("finish");
    tcase_add_test(finish, test_retry_keeps_row_and_counts);
    tcase_add_test(finish, test_ack_keeps_record);
    tcase_add_test(finish, test_count_deliveries_per_sink);
    suite_add_tcase(suite, finish);

    return suite;
}

int main(void)
{
    SRunner *runner = srunner_create(outbox_suite());
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
