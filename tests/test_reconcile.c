/* SPDX-License-Identifier: MIT */
/*
 * End-to-end test of the reconciler: fakegraph publishes call records
 * without sending any change notification, and the real callrecd, listing
 * every second, must deliver each of them to its file sink exactly once.
 */
#include "config.h"

#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph_env.h"
#include "util.h"

#define EVENT_TIMEOUT_MS 30000
#define FIRST_CALL "4e1f7a2b-3c5d-4e6f-8a9b-1c2d3e4f5a6b"
#define SECOND_CALL "5f2a8b3c-4d6e-4f70-9b8c-2d3e4f5a6b7c"

static struct crd_test_env env;
static struct crd_test_graph graph;
static char *sink_path;

static void start_world(void)
{
    crd_test_graph_prepare(&graph);
    char *graph_keys = crd_test_graph_config(&graph);
    char *dir = crd_test_make_tmpdir("crd-reconcile-sink");
    char *sections = NULL;
    ck_assert_int_ge(asprintf(&sink_path, "%s/records.jsonl", dir), 0);
    ck_assert_int_ge(asprintf(&sections,
                              "[fetch]\nretry_base = 50ms\nretry_max = 500ms\n\n"
                              "[reconcile]\ninterval = 1s\nwindow = 1h\n\n"
                              "[sink archive]\ntype = file\npath = %s\n",
                              sink_path),
                     0);
    free(dir);
    struct crd_test_env_options options = {.graph = graph_keys, .sections = sections};
    crd_test_env_create_with(&env, &options);
    free(graph_keys);
    free(sections);
    crd_test_graph_start(&graph, &env, NULL);
    ck_assert_int_eq(crd_test_env_start(&env), 0);
}

static void stop_world(void)
{
    ck_assert_int_eq(crd_test_env_stop(&env), 0);
    crd_test_graph_stop(&graph);
    crd_test_env_destroy(&env);
    if (getenv("CRD_KEEP_TEST_DIRS") == NULL) {
        char *sink_dir = strdup(sink_path);
        *strrchr(sink_dir, '/') = '\0';
        crd_test_remove_tree(sink_dir);
        free(sink_dir);
    }
    free(sink_path);
    sink_path = NULL;
}

/* Publishes the p2p fixture as call_id, started now, and sends no notification. */
static void publish_recent(const char *call_id)
{
    char *fixture = crd_test_fixture_path("callrecord-p2p-v1.json");
    json_t *record = json_load_file(fixture, 0, NULL);
    ck_assert_ptr_nonnull(record);
    char now[40];
    crd_time_format_iso8601(crd_time_now_ms(), now, sizeof(now));
    json_object_set_new(record, "id", json_string(call_id));
    json_object_set_new(record, "startDateTime", json_string(now));
    json_t *body = json_pack("{s:o}", "record", record);
    ck_assert_int_eq(crd_test_graph_control(&graph, "records", body, NULL), 201);
    json_decref(body);
    free(fixture);
}

START_TEST(unnotified_records_delivered_once)
{
    start_world();
    /* A first pass before the records exist: they can only come from a later one. */
    ck_assert(crd_test_env_wait_for_lines(&env, "reconcile: ", 1, EVENT_TIMEOUT_MS));
    publish_recent(FIRST_CALL);
    publish_recent(SECOND_CALL);

    ck_assert(crd_test_wait_for_text(sink_path, FIRST_CALL, EVENT_TIMEOUT_MS));
    ck_assert(crd_test_wait_for_text(sink_path, SECOND_CALL, EVENT_TIMEOUT_MS));

    /* Three more passes list both records again; neither may be delivered a second time. */
    const char *passes[] = {"reconcile: ", NULL};
    size_t seen = crd_test_count_lines(env.log_path, passes);
    ck_assert(crd_test_env_wait_for_lines(&env, "reconcile: ", seen + 3, EVENT_TIMEOUT_MS));
    const char *first[] = {FIRST_CALL, NULL};
    const char *second[] = {SECOND_CALL, NULL};
    ck_assert_uint_eq(crd_test_count_lines(sink_path, first), 1);
    ck_assert_uint_eq(crd_test_count_lines(sink_path, second), 1);
    const char *none_new[] = {"2 call records started since", NULL};
    ck_assert_uint_ge(crd_test_count_lines(env.log_path, none_new), 1);
    stop_world();
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("reconcile");
    TCase *tcase = tcase_create("daemon with fakegraph");
    tcase_set_timeout(tcase, 120);
    tcase_add_test(tcase, unnotified_records_delivered_once);
    suite_add_tcase(suite, tcase);

    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
