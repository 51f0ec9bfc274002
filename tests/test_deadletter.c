/* SPDX-License-Identifier: MIT */
/*
 * Tests of the store's dead letters against real SQLite files: moving jobs
 * and deliveries there, listing and counting them, and retrying them.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "store.h"
#include "util.h"

#define TENANT_ID "72f988bf-86f1-41af-91ab-2d7cd011db47"
#define CALL_A "2f1a1100-b174-40a0-aba7-0b405e01ed92"
#define CALL_B "b5d5a3d1-6c28-4a4b-9a8e-1f0c2f9e7d33"
#define NOTIFIED_AT 1700000000123LL

static const char *const SINKS[] = {"archive", "siem"};

struct test_env {
    char *tmpdir;
    struct crd_store *store;
};

static void env_init(struct test_env *env)
{
    env->tmpdir = crd_test_make_tmpdir("test_deadletter");
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
}

static void enqueue_ok(struct test_env *env, const char *call_id)
{
    struct crd_job_notice notice = {
        .tenant_id = TENANT_ID,
        .call_id = call_id,
        .notified_at_ms = NOTIFIED_AT,
    };
    struct crd_error err = {0};
    int r = crd_store_enqueue_jobs(env->store, &notice, 1, &err);
    ck_assert_msg(r == 0, "crd_store_enqueue_jobs failed (%d): %s", r, err.message);
}

static void claim_job_ok(struct test_env *env, struct crd_job *job)
{
    struct crd_error err = {0};
    int r = crd_store_claim_job(env->store, crd_time_now_ms(), job, NULL, &err);
    ck_assert_msg(r == 0, "crd_store_claim_job failed (%d): %s", r, err.message);
}

/* Stores one version of a call for both sinks, as the fetcher does. */
static void store_version(struct test_env *env, const char *call_id, int64_t version)
{
    enqueue_ok(env, call_id);
    struct crd_job job;
    claim_job_ok(env, &job);
    char text[128];
    snprintf(text, sizeof(text), "{\"id\":\"%s\",\"version\":%lld}", call_id, (long long)version);
    struct crd_record_version record = {
        .version = version,
        .record_json = text,
        .record_json_len = strlen(text),
        .fetched_at_ms = NOTIFIED_AT + 1000,
    };
    bool stored = false;
    struct crd_error err = {0};
    int r = crd_store_complete_job(env->store, &job, &record, SINKS, 2, &stored, &err);
    ck_assert_msg(r == 0, "crd_store_complete_job failed (%d): %s", r, err.message);
}

static int64_t count_dead(struct test_env *env, enum crd_dead_letter_kind kind, const char *sink)
{
    struct crd_error err = {0};
    int64_t count = -1;
    int r = crd_store_count_dead_letters(env->store, kind, sink, &count, &err);
    ck_assert_msg(r == 0, "crd_store_count_dead_letters failed (%d): %s", r, err.message);
    return count;
}

static int64_t count_jobs(struct test_env *env, const char *state)
{
    struct crd_error err = {0};
    int64_t count = -1;
    int r = crd_store_count_jobs(env->store, state, &count, &err);
    ck_assert_msg(r == 0, "crd_store_count_jobs failed (%d): %s", r, err.message);
    return count;
}

static int64_t count_outbox(struct test_env *env, const char *sink)
{
    struct crd_error err = {0};
    int64_t count = -1;
    int r = crd_store_count_deliveries(env->store, sink, &count, &err);
    ck_assert_msg(r == 0, "crd_store_count_deliveries failed (%d): %s", r, err.message);
    return count;
}

/* Copies of up to four listed dead letters, with their last errors. */
struct listing {
    struct crd_dead_letter letters[4];
    char errors[4][64];
    size_t n;
};

static int collect(const struct crd_dead_letter *letter, void *context)
{
    struct listing *listing = context;
    if (listing->n == 4) {
        return -E2BIG;
    }
    listing->letters[listing->n] = *letter;
    snprintf(listing->errors[listing->n], sizeof(listing->errors[0]), "%s", letter->last_error);
    listing->n++;
    return 0;
}

static void list_ok(struct test_env *env, struct listing *listing)
{
    *listing = (struct listing){0};
    struct crd_error err = {0};
    int r = crd_store_list_dead_letters(env->store, collect, listing, &err);
    ck_assert_msg(r == 0, "crd_store_list_dead_letters failed (%d): %s", r, err.message);
}

/* Claims a job and fails it transiently twice, then dead-letters it. */
static void dead_letter_job(struct test_env *env, const char *call_id)
{
    enqueue_ok(env, call_id);
    struct crd_job job;
    struct crd_error err = {0};
    for (int i = 0; i < 2; i++) {
        claim_job_ok(env, &job);
        ck_assert_int_eq(crd_store_reschedule_job(env->store, &job, 0, "HTTP 500", &err), 0);
    }
    claim_job_ok(env, &job);
    bool moved = false;
    int r = crd_store_dead_letter_job(env->store, &job, "HTTP 503", &moved, &err);
    ck_assert_msg(r == 0, "crd_store_dead_letter_job failed (%d): %s", r, err.message);
    ck_assert(moved);
}

START_TEST(test_job_moves_to_dead_letters)
{
    struct test_env env;
    env_init(&env);
    dead_letter_job(&env, CALL_A);

    struct listing listing;
    list_ok(&env, &listing);
    ck_assert_uint_eq(listing.n, 1);
    const struct crd_dead_letter *letter = &listing.letters[0];
    ck_assert_int_eq(letter->kind, CRD_DEAD_LETTER_JOB);
    ck_assert_str_eq(letter->tenant_id, TENANT_ID);
    ck_assert_str_eq(letter->call_id, CALL_A);
    ck_assert_int_eq(letter->version, -1);
    ck_assert_str_eq(letter->sink, "");
    ck_assert_uint_eq(letter->attempts, 3);
    ck_assert_str_eq(listing.errors[0], "HTTP 503");
    ck_assert_int_gt(letter->first_failed_at_ms, 0);
    ck_assert_int_le(letter->first_failed_at_ms, letter->last_failed_at_ms);
    ck_assert_int_eq(count_dead(&env, CRD_DEAD_LETTER_JOB, NULL), 1);
    ck_assert_int_eq(count_jobs(&env, "failed"), 1);
    ck_assert_int_eq(count_jobs(&env, "pending"), 0);
    env_cleanup(&env);
}
END_TEST

/* A notification during the fetch wins: the job is fetched again and not dead-lettered. */
START_TEST(test_job_notified_during_fetch_rearmed)
{
    struct test_env env;
    env_init(&env);
    enqueue_ok(&env, CALL_A);
    struct crd_job job;
    claim_job_ok(&env, &job);
    enqueue_ok(&env, CALL_A);

    bool moved = true;
    struct crd_error err = {0};
    ck_assert_int_eq(crd_store_dead_letter_job(env.store, &job, "HTTP 500", &moved, &err), 0);
    ck_assert(!moved);
    ck_assert_int_eq(count_dead(&env, CRD_DEAD_LETTER_JOB, NULL), 0);
    ck_assert_int_eq(count_jobs(&env, "pending"), 1);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_job_retry_rearms)
{
    struct test_env env;
    env_init(&env);
    dead_letter_job(&env, CALL_A);
    dead_letter_job(&env, CALL_B);

    int64_t jobs = -1;
    int64_t deliveries = -1;
    struct crd_error err = {0};
    int64_t now = crd_time_now_ms();
    ck_assert_int_eq(crd_store_retry_dead_letters(env.store, CALL_B, NULL, now, &jobs,
                                                  &deliveries, &err), 0);
    ck_assert_int_eq(jobs, 1);
    ck_assert_int_eq(deliveries, 0);
    ck_assert_int_eq(count_dead(&env, CRD_DEAD_LETTER_JOB, NULL), 1);

    struct crd_job job;
    claim_job_ok(&env, &job);
    ck_assert_str_eq(job.call_id, CALL_B);
    ck_assert_uint_eq(job.attempts, 0);
    env_cleanup(&env);
}
END_TEST

/* A later successful fetch of the call removes the job's dead letter. */
START_TEST(test_job_completed_clears_dead_letter)
{
    struct test_env env;
    env_init(&env);
    dead_letter_job(&env, CALL_A);

    store_version(&env, CALL_A, 1);

    ck_assert_int_eq(count_dead(&env, CRD_DEAD_LETTER_JOB, NULL), 0);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_delivery_moves_and_unblocks_newer)
{
    struct test_env env;
    env_init(&env);
    store_version(&env, CALL_A, 1);
    store_version(&env, CALL_A, 2);
    struct crd_delivery delivery;
    struct crd_error err = {0};
    ck_assert_int_eq(crd_store_claim_delivery(env.store, "siem", crd_time_now_ms(), &delivery,
                                              NULL, &err), 0);
    ck_assert_int_eq(delivery.version, 1);
    ck_assert_int_eq(crd_store_retry_delivery(env.store, delivery.id, 0, "HTTP 503", &err), 0);

    int r = crd_store_dead_letter_delivery(env.store, delivery.id, "HTTP 400", &err);
    ck_assert_msg(r == 0, "crd_store_dead_letter_delivery failed (%d): %s", r, err.message);
    crd_delivery_clear(&delivery);

    ck_assert_int_eq(crd_store_claim_delivery(env.store, "siem", crd_time_now_ms(), &delivery,
                                              NULL, &err), 0);
    ck_assert_int_eq(delivery.version, 2);
    crd_delivery_clear(&delivery);
    struct listing listing;
    list_ok(&env, &listing);
    ck_assert_uint_eq(listing.n, 1);
    ck_assert_int_eq(listing.letters[0].kind, CRD_DEAD_LETTER_DELIVERY);
    ck_assert_str_eq(listing.letters[0].sink, "siem");
    ck_assert_int_eq(listing.letters[0].version, 1);
    ck_assert_uint_eq(listing.letters[0].attempts, 2);
    ck_assert_str_eq(listing.errors[0], "HTTP 400");
    ck_assert_int_eq(count_dead(&env, CRD_DEAD_LETTER_DELIVERY, "siem"), 1);
    ck_assert_int_eq(count_dead(&env, CRD_DEAD_LETTER_DELIVERY, "archive"), 0);
    ck_assert_int_eq(count_dead(&env, CRD_DEAD_LETTER_DELIVERY, NULL), 1);
    ck_assert_int_eq(count_outbox(&env, "siem"), 1);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_delivery_retry_back_to_outbox)
{
    struct test_env env;
    env_init(&env);
    store_version(&env, CALL_A, 1);
    struct crd_delivery delivery;
    struct crd_error err = {0};
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(crd_store_claim_delivery(env.store, SINKS[i], crd_time_now_ms(),
                                                  &delivery, NULL, &err), 0);
        ck_assert_int_eq(crd_store_dead_letter_delivery(env.store, delivery.id, "full", &err), 0);
        crd_delivery_clear(&delivery);
    }
    dead_letter_job(&env, CALL_B);

    int64_t jobs = -1;
    int64_t deliveries = -1;
    ck_assert_int_eq(crd_store_retry_dead_letters(env.store, NULL, "archive", crd_time_now_ms(),
                                                  &jobs, &deliveries, &err), 0);

    ck_assert_int_eq(jobs, 0);
    ck_assert_int_eq(deliveries, 1);
    ck_assert_int_eq(count_outbox(&env, "archive"), 1);
    ck_assert_int_eq(count_outbox(&env, "siem"), 0);
    ck_assert_int_eq(count_dead(&env, CRD_DEAD_LETTER_DELIVERY, "siem"), 1);
    ck_assert_int_eq(count_dead(&env, CRD_DEAD_LETTER_JOB, NULL), 1);
    ck_assert_int_eq(crd_store_claim_delivery(env.store, "archive", crd_time_now_ms(), &delivery,
                                              NULL, &err), 0);
    ck_assert_int_eq(delivery.version, 1);
    ck_assert_uint_eq(delivery.attempts, 0);
    crd_delivery_clear(&delivery);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_retry_all)
{
    struct test_env env;
    env_init(&env);
    store_version(&env, CALL_A, 1);
    struct crd_delivery delivery;
    struct crd_error err = {0};
    ck_assert_int_eq(crd_store_claim_delivery(env.store, "siem", crd_time_now_ms(), &delivery,
                                              NULL, &err), 0);
    ck_assert_int_eq(crd_store_dead_letter_delivery(env.store, delivery.id, "full", &err), 0);
    crd_delivery_clear(&delivery);
    dead_letter_job(&env, CALL_B);

    int64_t jobs = -1;
    int64_t deliveries = -1;
    ck_assert_int_eq(crd_store_retry_dead_letters(env.store, NULL, NULL, crd_time_now_ms(), &jobs,
                                                  &deliveries, &err), 0);

    ck_assert_int_eq(jobs, 1);
    ck_assert_int_eq(deliveries, 1);
    struct listing listing;
    list_ok(&env, &listing);
    ck_assert_uint_eq(listing.n, 0);
    ck_assert_int_eq(count_jobs(&env, "pending"), 1);
    ck_assert_int_eq(count_outbox(&env, "siem"), 1);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_dead_letter_invalid_arguments)
{
    struct test_env env;
    env_init(&env);
    struct crd_error err = {0};
    int64_t count = 0;

    ck_assert_int_eq(crd_store_dead_letter_delivery(env.store, 42, "x", &err), -ENOENT);
    ck_assert_int_eq(crd_store_count_dead_letters(env.store, CRD_DEAD_LETTER_JOB, "siem", &count,
                                                  &err), -EINVAL);
    ck_assert_int_eq(crd_store_count_jobs(env.store, "parked", &count, &err), -EINVAL);
    ck_assert_int_eq(crd_store_list_dead_letters(env.store, NULL, NULL, &err), -EINVAL);
    ck_assert_str_eq(crd_dead_letter_kind_name(CRD_DEAD_LETTER_DELIVERY), "delivery");
    env_cleanup(&env);
}
END_TEST

static Suite *deadletter_suite(void)
{
    Suite *suite = suite_create("deadletter");

    TCase *jobs = tcase_create("jobs");
    tcase_add_test(jobs, test_job_moves_to_dead_letters);
    tcase_add_test(jobs, test_job_notified_during_fetch_rearmed);
    tcase_add_test(jobs, test_job_retry_rearms);
    tcase_add_test(jobs, test_job_completed_clears_dead_letter);
    suite_add_tcase(suite, jobs);

    TCase *deliveries = tcase_create("deliveries");
    tcase_add_test(deliveries, test_delivery_moves_and_unblocks_newer);
    tcase_add_test(deliveries, test_delivery_retry_back_to_outbox);
    tcase_add_test(deliveries, test_retry_all);
    tcase_add_test(deliveries, test_dead_letter_invalid_arguments);
    suite_add_tcase(suite, deliveries);

    return suite;
}

int main(void)
{
    SRunner *runner = srunner_create(deadletter_suite());
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
