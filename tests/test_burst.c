/* SPDX-License-Identifier: MIT */
/*
 * A burst of notifications for one call within [fetch] coalesce_window makes
 * one fetch: the notifications join the pending job, which becomes due once
 * the window after the first one has passed.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "graph_env.h"

#define TIMEOUT_MS 30000
#define BURST 5

static struct crd_test_world world;
static json_t *template;

static void start_all(void)
{
    crd_test_world_start(&world, NULL,
                         "[fetch]\ncoalesce_window = 800ms\n\n[reconcile]\ninterval = 0\n");
    char *fixture = crd_test_fixture_path("callrecord-pstn.json");
    template = json_load_file(fixture, 0, NULL);
    free(fixture);
}

static void stop_all(void)
{
    crd_test_world_stop(&world);
    json_decref(template);
}

/* GET requests fakegraph received for the call record itself (not its pages). */
static long record_fetches(const char *call_id)
{
    char *key = NULL;
    ck_assert_int_ge(asprintf(&key, "GET /v1.0/communications/callRecords/%s", call_id), 0);
    json_t *counts = crd_test_get_json(world.graph.base_url, "/_fakegraph/request-counts",
                                       world.graph.ca_file);
    long count = (long)json_integer_value(json_object_get(counts, key));
    json_decref(counts);
    free(key);
    return count;
}

START_TEST(burst_makes_one_fetch)
{
    const char *call_id = "c0a1e5ce-0000-4000-8000-000000000001";
    crd_test_world_publish(&world, template, call_id, 1);

    for (int i = 0; i < BURST; i++) {
        ck_assert_int_eq(crd_test_world_notify(&world, call_id), 202);
        nanosleep(&(struct timespec){.tv_nsec = 100 * 1000 * 1000}, NULL);
    }

    ck_assert_msg(crd_test_world_wait_delivered(&world, call_id, 1, TIMEOUT_MS),
                  "the record never arrived");
    /* Long enough for a second fetch, had a notification of the burst armed one. */
    nanosleep(&(struct timespec){.tv_sec = 2}, NULL);
    ck_assert_int_eq(record_fetches(call_id), 1);
    ck_assert_uint_eq(crd_test_world_deliveries(&world, call_id, 1), 1);
}
END_TEST

START_TEST(notification_after_the_fetch_fetches_again)
{
    const char *call_id = "c0a1e5ce-0000-4000-8000-000000000002";
    crd_test_world_publish(&world, template, call_id, 1);
    ck_assert_int_eq(crd_test_world_notify(&world, call_id), 202);
    ck_assert(crd_test_world_wait_delivered(&world, call_id, 1, TIMEOUT_MS));

    crd_test_world_publish(&world, template, call_id, 2);
    ck_assert_int_eq(crd_test_world_notify(&world, call_id), 202);
    ck_assert_msg(crd_test_world_wait_delivered(&world, call_id, 2, TIMEOUT_MS),
                  "the update after the window was not fetched");
    ck_assert_int_eq(record_fetches(call_id), 2);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("burst");
    TCase *tcase = tcase_create("coalescing");
    tcase_add_unchecked_fixture(tcase, start_all, stop_all);
    tcase_set_timeout(tcase, 90);
    tcase_add_test(tcase, burst_makes_one_fetch);
    tcase_add_test(tcase, notification_after_the_fetch_fetches_again);
    suite_add_tcase(suite, tcase);

    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
