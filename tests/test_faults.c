/* SPDX-License-Identifier: MIT */
/*
 * The fault matrix: fakegraph fails each record's first requests with one
 * kind of failure (429 with and without Retry-After, 500, 503, a slow response, a timeout,
 * a dropped connection, a truncated body that is invalid JSON), and every
 * record must still reach the file sink exactly once per version. A version
 * that goes backwards is never delivered again.
 */
#include "config.h"

#include <check.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph_env.h"
#include "util.h"

#define DELIVERY_TIMEOUT_MS 30000

static struct crd_test_world world;
static json_t *template;

static void start_all(void)
{
    /* A short request timeout, so that a slow enough response times out. */
    crd_test_world_start(&world, "timeout = 1s\n",
                         "[fetch]\nworkers = 4\nretry_base = 100ms\nretry_max = 1s\n");
    char *fixture = crd_test_fixture_path("callrecord-pstn.json");
    template = json_load_file(fixture, 0, NULL);
    free(fixture);
}

static void stop_all(void)
{
    crd_test_world_stop(&world);
    json_decref(template);
}

/* Queues `fault` (a JSON object without "match") for the next requests for call_id. */
static void queue_fault(const char *call_id, json_t *fault)
{
    char match[128];
    snprintf(match, sizeof(match), "/v1.0/communications/callRecords/%s", call_id);
    json_object_set_new(fault, "match", json_string(match));
    long status = crd_test_graph_control(&world.graph, "faults", fault, NULL);
    ck_assert_msg(status >= 200 && status < 300, "fault answered %ld", status);
    json_decref(fault);
}

/* Number of Graph requests fakegraph served for the record, from its request log. */
static size_t requests_for(const char *call_id)
{
    char *url = NULL;
    ck_assert_int_ge(asprintf(&url, "%s/_fakegraph/requests", world.graph.base_url), 0);
    struct crd_test_response response;
    ck_assert_int_eq(crd_test_http("GET", url, NULL, NULL, 0, world.graph.ca_file, &response),
                     0);
    json_t *log = json_loads(response.body, 0, NULL);
    ck_assert_ptr_nonnull(log);
    size_t count = 0;
    size_t index;
    json_t *entry;
    json_array_foreach(log, index, entry) {
        const char *path = json_string_value(json_object_get(entry, "path"));
        if (path != NULL && strncmp(path, "/v1.0/", 6) == 0 && strstr(path, call_id) != NULL) {
            count++;
        }
    }
    json_decref(log);
    crd_test_response_clear(&response);
    free(url);
    return count;
}

/* Publishes a record, queues the fault, notifies, and expects one delivery. */
static void check_fault(const char *name, const char *call_id, json_t *fault)
{
    crd_test_world_publish(&world, template, call_id, 1);
    size_t faults = (size_t)json_integer_value(json_object_get(fault, "count"));
    /* A slow response still succeeds; the other faults each cost one more request. */
    size_t expected = json_object_get(fault, "delayMs") != NULL ? 2 : faults + 2;
    queue_fault(call_id, fault);
    ck_assert_int_eq(crd_test_world_notify(&world, call_id), 202);
    ck_assert_msg(crd_test_world_wait_delivered(&world, call_id, 1, DELIVERY_TIMEOUT_MS),
                  "%s: the record never arrived", name);
    ck_assert_msg(crd_test_world_deliveries(&world, call_id, 1) == 1, "%s: delivered %zu times",
                  name, crd_test_world_deliveries(&world, call_id, 1));
    /* Every fault was served, and the record was then fetched with its participants. */
    ck_assert_msg(requests_for(call_id) >= expected, "%s: only %zu requests for %zu faults",
                  name, requests_for(call_id), faults);
}

START_TEST(throttled_with_retry_after)
{
    check_fault("429 with Retry-After", "a1000000-0000-4000-8000-000000000001",
                json_pack("{s:i, s:i, s:i}", "status", 429, "retryAfter", 1, "count", 3));
}
END_TEST

START_TEST(throttled_without_retry_after)
{
    check_fault("429 without Retry-After", "a1000000-0000-4000-8000-000000000002",
                json_pack("{s:i, s:i}", "status", 429, "count", 4));
}
END_TEST

START_TEST(server_errors)
{
    check_fault("500", "a1000000-0000-4000-8000-000000000003",
                json_pack("{s:i, s:i}", "status", 500, "count", 4));
    check_fault("503", "a1000000-0000-4000-8000-000000000004",
                json_pack("{s:i, s:i, s:i}", "status", 503, "retryAfter", 1, "count", 3));
}
END_TEST

START_TEST(slow_answers)
{
    check_fault("slow answers", "a1000000-0000-4000-8000-000000000005",
                json_pack("{s:i, s:i}", "delayMs", 600, "count", 2));
}
END_TEST

START_TEST(timeouts)
{
    /* Each of the first two requests takes longer than [graph] timeout = 1s. */
    const char *call_id = "a1000000-0000-4000-8000-000000000009";
    check_fault("timeouts", call_id, json_pack("{s:i, s:i}", "delayMs", 2500, "count", 2));
    /*
     * Abandoned requests were repeated: without the timeout, two requests would
     * have done. fakegraph logs a delayed request only when its delay ends, so
     * wait for the log to catch up.
     */
    long long deadline = crd_time_monotonic_ms() + 10000;
    while (requests_for(call_id) < 4 && crd_time_monotonic_ms() < deadline) {
        struct pollfd none = {.fd = -1};
        (void)poll(&none, 0, 100);
    }
    ck_assert_msg(requests_for(call_id) >= 4, "only %zu requests: the slow ones did not time out",
                  requests_for(call_id));
}
END_TEST

START_TEST(dropped_connections)
{
    check_fault("dropped connections", "a1000000-0000-4000-8000-000000000006",
                json_pack("{s:b, s:i}", "drop", 1, "count", 3));
}
END_TEST

START_TEST(truncated_invalid_json)
{
    check_fault("truncated bodies", "a1000000-0000-4000-8000-000000000007",
                json_pack("{s:b, s:i}", "truncate", 1, "count", 3));
}
END_TEST

START_TEST(version_going_backwards_not_delivered)
{
    const char *call_id = "a1000000-0000-4000-8000-000000000008";
    crd_test_world_publish(&world, template, call_id, 3);
    ck_assert_int_eq(crd_test_world_notify(&world, call_id), 202);
    ck_assert(crd_test_world_wait_delivered(&world, call_id, 3, DELIVERY_TIMEOUT_MS));

    /* Graph now serves an older version; the daemon must drop it as stale. */
    crd_test_world_publish(&world, template, call_id, 2);
    ck_assert_int_eq(crd_test_world_notify(&world, call_id), 202);
    ck_assert(crd_test_wait_for_text(world.env.log_path,
                                     "version 2 is not newer than the stored one",
                                     DELIVERY_TIMEOUT_MS));
    ck_assert_uint_eq(crd_test_world_deliveries(&world, call_id, 2), 0);
    ck_assert_uint_eq(crd_test_world_deliveries(&world, call_id, 3), 1);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("faults");
    TCase *tcase = tcase_create("fault matrix");
    tcase_add_unchecked_fixture(tcase, start_all, stop_all);
    tcase_set_timeout(tcase, 90);
    tcase_add_test(tcase, throttled_with_retry_after);
    tcase_add_test(tcase, throttled_without_retry_after);
    tcase_add_test(tcase, server_errors);
    tcase_add_test(tcase, slow_answers);
    tcase_add_test(tcase, timeouts);
    tcase_add_test(tcase, dropped_connections);
    tcase_add_test(tcase, truncated_invalid_json);
    tcase_add_test(tcase, version_going_backwards_not_delivered);
    suite_add_tcase(suite, tcase);

    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
