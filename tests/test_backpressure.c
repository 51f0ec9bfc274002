/* SPDX-License-Identifier: MIT */
/*
 * Bounded sink backlogs, end to end: the file sink's path is a symbolic link
 * to /dev/full, where every write fails with ENOSPC, and max_backlog is 3.
 * Once the backlog reaches it, callrecd logs the error, /healthz reports the
 * backpressure, and new notifications are stored but not fetched. Then the
 * link is replaced by a regular file and SIGHUP reopens the sink, which
 * drains the backlog, ends the backpressure and lets the waiting jobs
 * through.
 */
#include "config.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph_env.h"

#define FIRST_CALLS 6
#define LATE_CALLS 2
#define MAX_BACKLOG 3
#define TIMEOUT_MS 60000

static struct crd_test_env env;
static struct crd_test_graph graph;
static char *sink_dir;
static char *sink_path;
static json_t *template;

static void start_all(void)
{
    crd_test_graph_prepare(&graph);
    char *graph_keys = crd_test_graph_config(&graph);
    sink_dir = crd_test_make_tmpdir("crd-backpressure-sink");
    char *sections = NULL;
    if (asprintf(&sink_path, "%s/records.jsonl", sink_dir) < 0 ||
        symlink("/dev/full", sink_path) < 0 ||
        asprintf(&sections,
                 "[fetch]\nworkers = 2\nretry_base = 100ms\nretry_max = 1s\n\n"
                 "[reconcile]\ninterval = 0\n\n"
                 "[sink archive]\ntype = file\npath = %s\nmax_backlog = %d\n",
                 sink_path, MAX_BACKLOG) < 0) {
        abort();
    }
    struct crd_test_env_options options = {.graph = graph_keys, .sections = sections};
    crd_test_env_create_with(&env, &options);
    free(graph_keys);
    free(sections);
    crd_test_graph_start(&graph, &env, NULL);
    if (crd_test_env_start(&env) != 0) {
        exit(1);
    }
    if (!crd_test_env_wait_for_subscriptions(&env, 1)) {
        fprintf(stderr, "callrecd did not get its subscription\n");
        exit(1);
    }
    char *fixture = crd_test_fixture_path("callrecord-pstn.json");
    template = json_load_file(fixture, 0, NULL);
    free(fixture);
}

static void stop_all(void)
{
    (void)crd_test_env_stop(&env);
    crd_test_env_destroy(&env);
    crd_test_graph_stop(&graph);
    crd_test_remove_tree(sink_dir);
    free(sink_dir);
    free(sink_path);
    json_decref(template);
}

static void call_id_of(unsigned index, char *out, size_t size)
{
    snprintf(out, size, "c3000000-0000-4000-8000-%012u", index);
}

/* Publishes the record of call number index and sends its notification. */
static void publish_and_notify(unsigned index)
{
    char call_id[64];
    call_id_of(index, call_id, sizeof(call_id));
    json_t *record = json_deep_copy(template);
    json_object_set_new(record, "id", json_string(call_id));
    json_object_set_new(record, "version", json_integer(1));
    json_t *body = json_pack("{s:o}", "record", record);
    long status = crd_test_graph_control(&graph, "records", body, NULL);
    ck_assert_msg(status >= 200 && status < 300, "publish answered %ld", status);
    json_decref(body);

    char *url = NULL;
    ck_assert_int_ge(asprintf(&url, "%s/notify", env.base_url), 0);
    body = json_pack("{s:s, s:s, s:s, s:s}", "callId", call_id, "changeType", "updated",
                     "notificationUrl", url, "clientState", CRD_TEST_CLIENT_STATE);
    json_t *answer = NULL;
    ck_assert_int_eq(crd_test_graph_control(&graph, "notify", body, &answer), 200);
    ck_assert_int_eq(json_integer_value(json_object_get(answer, "status")), 202);
    json_decref(answer);
    json_decref(body);
    free(url);
}

/* Number of Graph requests for one call, from fakegraph's request log. */
static size_t requests_for(unsigned index)
{
    char call_id[64];
    call_id_of(index, call_id, sizeof(call_id));
    json_t *log = crd_test_get_json(graph.base_url, "/_fakegraph/requests", graph.ca_file);
    size_t count = 0;
    size_t i;
    json_t *entry;
    json_array_foreach(log, i, entry) {
        const char *path = json_string_value(json_object_get(entry, "path"));
        if (path != NULL && strstr(path, call_id) != NULL) {
            count++;
        }
    }
    json_decref(log);
    return count;
}

/* The "backpressure" member of /healthz; the caller json_decref()s it. */
static json_t *backpressure_health(void)
{
    json_t *health = crd_test_get_json(env.base_url, "/healthz", env.ca_file);
    json_t *backpressure = json_incref(json_object_get(health, "backpressure"));
    ck_assert_ptr_nonnull(backpressure);
    json_decref(health);
    return backpressure;
}

static const char paused_wake_line[] = "new jobs wait in the store";

START_TEST(backlog_bound_pauses_fetching_until_drained)
{
    for (unsigned i = 0; i < FIRST_CALLS; i++) {
        publish_and_notify(i);
    }
    ck_assert_msg(crd_test_wait_for_text(env.log_path, "sink 'archive': backlog at its bound",
                                         TIMEOUT_MS),
                  "no backlog error was logged");
    ck_assert_msg(crd_test_wait_for_text(env.log_path, "fetching paused", TIMEOUT_MS),
                  "the fetcher did not pause");

    json_t *backpressure = backpressure_health();
    ck_assert_str_eq(json_string_value(json_object_get(backpressure, "sink")), "archive");
    ck_assert_int_ge(json_integer_value(json_object_get(backpressure, "rows")), MAX_BACKLOG);
    ck_assert_ptr_nonnull(json_object_get(backpressure, "oldestAgeS"));
    json_decref(backpressure);

    /* A paused worker logs once when it starts waiting. */
    ck_assert_msg(crd_test_wait_for_text(env.log_path, paused_wake_line, TIMEOUT_MS),
                  "no worker waits");
    /* Each late notification is stored (202) and wakes a worker, which goes on waiting. */
    for (unsigned i = FIRST_CALLS; i < FIRST_CALLS + LATE_CALLS; i++) {
        const char *needles[] = {paused_wake_line, NULL};
        size_t wakes = crd_test_count_lines(env.log_path, needles);
        publish_and_notify(i);
        ck_assert_msg(crd_test_env_wait_for_lines(&env, paused_wake_line, wakes + 1, TIMEOUT_MS),
                      "no worker noticed the notification of call %u", i);
        ck_assert_uint_eq(requests_for(i), 0);
    }

    /* Recover: a regular file replaces the link, and SIGHUP reopens the sink. */
    char *fixed_path = NULL;
    ck_assert_int_ge(asprintf(&fixed_path, "%s.new", sink_path), 0);
    FILE *fixed = fopen(fixed_path, "w");
    ck_assert_ptr_nonnull(fixed);
    ck_assert_int_eq(fclose(fixed), 0);
    ck_assert_int_eq(rename(fixed_path, sink_path), 0);
    free(fixed_path);
    ck_assert_int_eq(kill(env.daemon.pid, SIGHUP), 0);

    ck_assert_msg(crd_test_wait_for_text(env.log_path, "sink 'archive': backlog recovered",
                                         TIMEOUT_MS),
                  "the backlog never recovered");
    ck_assert_msg(crd_test_wait_for_text(env.log_path, "fetching resumed", TIMEOUT_MS),
                  "the fetcher did not resume");
    for (unsigned i = 0; i < FIRST_CALLS + LATE_CALLS; i++) {
        char call_id[64];
        call_id_of(i, call_id, sizeof(call_id));
        ck_assert_msg(crd_test_wait_for_text(sink_path, call_id, TIMEOUT_MS),
                      "call %s never reached the sink", call_id);
    }
    backpressure = backpressure_health();
    ck_assert(json_is_null(backpressure));
    json_decref(backpressure);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("backpressure");
    TCase *tcase = tcase_create("bounded backlog");
    tcase_add_unchecked_fixture(tcase, start_all, stop_all);
    tcase_set_timeout(tcase, 180);
    tcase_add_test(tcase, backlog_bound_pauses_fetching_until_drained);
    suite_add_tcase(suite, tcase);

    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
