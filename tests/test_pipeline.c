/* SPDX-License-Identifier: MIT */
/*
 * End-to-end tests of the main job. fakegraph serves tokens and call records
 * and sends notifications. The real callrecd fetches every page of each
 * record and delivers it to a file sink, and the tests read the JSON Lines
 * that the sink wrote.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "graph_env.h"

#define TENANT_ID CRD_TEST_TENANT_ID
#define P2P_CALL_ID "7e633194-32cf-5bee-86e6-f491790b2813"
#define DELIVERY_TIMEOUT_MS 30000

/* The daemon, its sink file and the emulator, shared by the whole suite. */
static struct crd_test_env env;
static struct crd_test_graph graph;
static char *sink_path;

static void start_all(void)
{
    crd_test_graph_prepare(&graph);
    char *graph_keys = crd_test_graph_config(&graph);

    /* The sink file lives in the env's directory, which exists only once the env is created. */
    struct crd_test_env_options options = {.graph = graph_keys};
    crd_test_env_create_with(&env, &options);
    if (asprintf(&sink_path, "%s/records.jsonl", env.dir) < 0) {
        abort();
    }
    char *config = crd_test_read_file(env.config_path, NULL);
    char *full = NULL;
    if (asprintf(&full,
                 "%s[fetch]\nworkers = 2\nretry_base = 100ms\nretry_max = 1s\n"
                 "not_found_horizon = 4s\n\n[sink archive]\ntype = file\npath = %s\n",
                 config, sink_path) < 0) {
        abort();
    }
    free(crd_test_write_file(env.dir, "callrecd.conf", full, 0600));
    free(full);
    free(config);
    free(graph_keys);

    crd_test_graph_start(&graph, &env, NULL);
    if (crd_test_env_start(&env) != 0) {
        fprintf(stderr, "callrecd did not become ready\n");
        exit(1);
    }
    if (!crd_test_env_wait_for_subscriptions(&env, 1)) {
        fprintf(stderr, "callrecd did not get its subscription\n");
        exit(1);
    }
}

static void stop_all(void)
{
    (void)crd_test_env_stop(&env);
    crd_test_graph_stop(&graph);
    crd_test_env_destroy(&env);
    free(sink_path);
}

/* Runs a fakegraph client command against the running emulator; returns its exit status. */
static int fakegraph(const char *command, const char *const *arguments)
{
    char *program = crd_test_build_path("tests/fakegraph");
    const char *argv[32] = {program, command, "--control", graph.base_url, "--cafile",
                            graph.ca_file};
    size_t n = 6;
    for (size_t i = 0; arguments[i] != NULL && n < 30; i++) {
        argv[n++] = arguments[i];
    }
    argv[n] = NULL;
    char *output = NULL;
    int status = crd_test_run((char *const *)argv, &output);
    if (status != 0) {
        fprintf(stderr, "fakegraph %s exited %d: %s\n", command, status, output);
    }
    free(output);
    free(program);
    return status;
}

static void publish(const char *const *fixture_arguments)
{
    const char *arguments[16];
    size_t n = 0;
    char *paths[16] = {NULL};
    for (size_t i = 0; fixture_arguments[i] != NULL && n < 15; i++) {
        const char *word = fixture_arguments[i];
        if (strstr(word, ".json") != NULL) {
            paths[n] = crd_test_fixture_path(word);
            arguments[n] = paths[n];
        } else {
            arguments[n] = word;
        }
        n++;
    }
    arguments[n] = NULL;
    ck_assert_int_eq(fakegraph("publish", arguments), 0);
    for (size_t i = 0; i < n; i++) {
        free(paths[i]);
    }
}

static void trigger(const char *call_id, const char *change_type, const char *repeat)
{
    char *url = NULL;
    if (asprintf(&url, "%s/notify", env.base_url) < 0) {
        abort();
    }
    const char *arguments[] = {"--call-id", call_id, "--change-type", change_type,
                               "--repeat", repeat, "--notification-url", url,
                               "--client-state", CRD_TEST_CLIENT_STATE, NULL};
    ck_assert_int_eq(fakegraph("trigger", arguments), 0);
    free(url);
}

/* Waits until the sink file has a line for (call id, version). */
static bool wait_delivered(const char *call_id, long long version)
{
    char needle[128];
    snprintf(needle, sizeof(needle), "\"idempotencyKey\":\"%s/%s/%lld\"", TENANT_ID, call_id,
             version);
    return crd_test_wait_for_text(sink_path, needle, DELIVERY_TIMEOUT_MS);
}

static size_t count_deliveries(const char *call_id, long long version)
{
    char needle[128];
    snprintf(needle, sizeof(needle), "\"idempotencyKey\":\"%s/%s/%lld\"", TENANT_ID, call_id,
             version);
    const char *needles[] = {needle, NULL};
    return crd_test_count_lines(sink_path, needles);
}

/* The delivered record of (call id, version), parsed; the caller json_decref()s it. */
static json_t *delivered_record(const char *call_id, long long version)
{
    char *text = crd_test_read_file(sink_path, NULL);
    ck_assert_ptr_nonnull(text);
    json_t *found = NULL;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line != NULL && found == NULL;
         line = strtok_r(NULL, "\n", &save)) {
        json_error_t error;
        json_t *envelope = json_loads(line, 0, &error);
        ck_assert_msg(envelope != NULL, "sink line is not JSON: %s", error.text);
        const char *id = json_string_value(json_object_get(envelope, "callId"));
        json_int_t v = json_integer_value(json_object_get(envelope, "version"));
        if (id != NULL && strcmp(id, call_id) == 0 && v == version) {
            found = json_incref(json_object_get(envelope, "record"));
        }
        json_decref(envelope);
    }
    free(text);
    ck_assert_msg(found != NULL, "no delivery of %s version %lld", call_id, version);
    return found;
}

static json_t *load_fixture(const char *name)
{
    char *path = crd_test_fixture_path(name);
    json_error_t error;
    json_t *json = json_load_file(path, 0, &error);
    ck_assert_msg(json != NULL, "%s: %s", path, error.text);
    free(path);
    return json;
}

/*
 * Checks that every member of the fixture reached the sink unchanged, except
 * OData metadata that names the serving host.
 */
static void assert_record_matches(json_t *record, json_t *fixture)
{
    const char *key;
    json_t *value;
    json_object_foreach(fixture, key, value) {
        if (strstr(key, "@odata.nextLink") != NULL || strstr(key, "@odata.context") != NULL) {
            continue;
        }
        ck_assert_msg(json_equal(json_object_get(record, key), value),
                      "member '%s' of the delivered record differs from the fixture", key);
    }
}

START_TEST(p2p_versions_delivered_once_each)
{
    publish((const char *[]){"--record", "callrecord-p2p-v1.json", NULL});
    trigger(P2P_CALL_ID, "created", "1");
    trigger(P2P_CALL_ID, "updated", "1");
    ck_assert(wait_delivered(P2P_CALL_ID, 1));

    publish((const char *[]){"--record", "callrecord-p2p-v2.json", NULL});
    trigger(P2P_CALL_ID, "updated", "1");
    ck_assert(wait_delivered(P2P_CALL_ID, 2));

    /* A duplicate notification for the same version is fetched again, but not delivered. */
    trigger(P2P_CALL_ID, "updated", "3");
    ck_assert(crd_test_wait_for_text(env.log_path, "not newer than the stored one", 10000));
    ck_assert_uint_eq(count_deliveries(P2P_CALL_ID, 1), 1);
    ck_assert_uint_eq(count_deliveries(P2P_CALL_ID, 2), 1);

    /* Version 2 comes after version 1 in the file. */
    char *text = crd_test_read_file(sink_path, NULL);
    char *first = strstr(text, "/" P2P_CALL_ID "/1\"");
    char *second = strstr(text, "/" P2P_CALL_ID "/2\"");
    ck_assert_ptr_nonnull(first);
    ck_assert_ptr_nonnull(second);
    ck_assert_msg(first < second, "version 2 was written before version 1");
    free(text);

    json_t *record = delivered_record(P2P_CALL_ID, 2);
    json_t *fixture = load_fixture("callrecord-p2p-v2.json");
    assert_record_matches(record, fixture);
    /* No participants_v2 was published, so the list comes from the session's two ends. */
    ck_assert_str_eq(json_string_value(json_object_get(record, "participants_v2@callrecd.source")),
                     "sessions");
    ck_assert_uint_eq(json_array_size(json_object_get(record, "participants_v2")), 2);
    json_decref(record);
    json_decref(fixture);
}
END_TEST

START_TEST(meeting_pages_merged)
{
    json_t *page1 = load_fixture("callrecord-large-page1.json");
    json_t *page2 = load_fixture("callrecord-large-page2.json");
    const char *call_id = json_string_value(json_object_get(page1, "id"));
    long long version = json_integer_value(json_object_get(page1, "version"));
    publish((const char *[]){"--record", "callrecord-large-page1.json", "--record",
                             "callrecord-large-page2.json", "--participants",
                             "participants-page1.json", "--participants",
                             "participants-page2.json", NULL});
    trigger(call_id, "updated", "1");
    ck_assert(wait_delivered(call_id, version));

    json_t *record = delivered_record(call_id, version);
    json_t *sessions = json_object_get(record, "sessions");
    ck_assert_uint_eq(json_array_size(sessions), 75);
    json_t *expected = json_deep_copy(json_object_get(page1, "sessions"));
    json_array_extend(expected, json_object_get(page2, "value"));
    ck_assert(json_equal(sessions, expected));
    ck_assert_uint_eq(json_array_size(json_object_get(record, "participants_v2")), 73);
    ck_assert_ptr_null(json_object_get(record, "sessions@odata.nextLink"));
    ck_assert_uint_eq(count_deliveries(call_id, version), 1);

    json_decref(expected);
    json_decref(record);
    json_decref(page1);
    json_decref(page2);
}
END_TEST

static void fault(const char *status, const char *retry_after, const char *count)
{
    const char *with_header[] = {"--match", "/v1.0/communications/callRecords", "--status", status,
                                 "--count", count, "--retry-after", retry_after, NULL};
    const char *without_header[] = {"--match", "/v1.0/communications/callRecords", "--status",
                                    status, "--count", count, NULL};
    ck_assert_int_eq(fakegraph("fault", retry_after != NULL ? with_header : without_header), 0);
}

START_TEST(throttling_and_outages_end_in_delivery)
{
    json_t *pstn = load_fixture("callrecord-pstn.json");
    const char *call_id = json_string_value(json_object_get(pstn, "id"));
    long long version = json_integer_value(json_object_get(pstn, "version"));

    fault("429", "1", "3");
    fault("429", NULL, "2");
    fault("503", NULL, "4");
    publish((const char *[]){"--record", "callrecord-pstn.json", NULL});
    trigger(call_id, "updated", "1");
    ck_assert(wait_delivered(call_id, version));
    ck_assert_uint_eq(count_deliveries(call_id, version), 1);

    json_t *record = delivered_record(call_id, version);
    assert_record_matches(record, pstn);
    json_decref(record);
    json_decref(pstn);
}
END_TEST

START_TEST(not_found_phase_ends_in_delivery)
{
    json_t *group = load_fixture("callrecord-group-poor.json");
    const char *call_id = json_string_value(json_object_get(group, "id"));
    long long version = json_integer_value(json_object_get(group, "version"));

    publish((const char *[]){"--record", "callrecord-group-poor.json", "--not-found-for", "1500",
                             NULL});
    trigger(call_id, "updated", "1");
    ck_assert(wait_delivered(call_id, version));
    ck_assert(crd_test_wait_for_text(env.log_path, "not available yet", 1000));
    ck_assert_uint_eq(count_deliveries(call_id, version), 1);
    json_decref(group);
}
END_TEST

/* The state of a job in the daemon's store, or "" when there is none. */
static void job_state(const char *call_id, char *out, size_t size)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    snprintf(out, size, "%s", "");
    ck_assert_int_eq(sqlite3_open_v2(env.db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT state FROM jobs WHERE call_id = ?", -1, &stmt,
                                        NULL),
                     SQLITE_OK);
    sqlite3_bind_text(stmt, 1, call_id, -1, SQLITE_STATIC);
    if (sqlite3_step(stmt) == SQLITE_ROW) {
        snprintf(out, size, "%s", (const char *)sqlite3_column_text(stmt, 0));
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
}

START_TEST(not_found_past_horizon_gives_up)
{
    const char *call_id = "5d1c9e3a-0b7f-4e2d-9c8a-6f4e3d2c1b0a";  /* never published */
    trigger(call_id, "updated", "1");
    ck_assert(crd_test_wait_for_text(env.log_path, "still not found (HTTP 404) after", 15000));

    char state[16];
    job_state(call_id, state, sizeof(state));
    ck_assert_str_eq(state, "failed");
}
END_TEST

START_TEST(metrics_count_deliveries)
{
    char *url = NULL;
    ck_assert_int_ge(asprintf(&url, "%s/metrics", env.base_url), 0);
    struct crd_test_response response;
    ck_assert_int_eq(crd_test_http("GET", url, NULL, NULL, 0, env.ca_file, &response), 0);
    ck_assert_int_eq(response.status, 200);
    static const char *const samples[] = {
        /* Sample lines, not the HELP lines that also name the family. */
        "\ncallrecd_record_versions_stored_total ",
        "\ncallrecd_deliveries_total{sink=\"archive\"} ",
        "\ncallrecd_fetches_total{outcome=\"fetched\"} ",
    };
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        const char *at = strstr(response.body, samples[i]);
        ck_assert_msg(at != NULL, "no sample '%s' in /metrics", samples[i]);
        /* Earlier tests delivered at least five record versions. */
        ck_assert_msg(strtol(at + strlen(samples[i]), NULL, 10) >= 5, "%s is below 5 in:\n%s",
                      samples[i], response.body);
    }
    ck_assert_ptr_nonnull(strstr(response.body, "callrecd_graph_outage{tenant=\"default\"} 0\n"));
    crd_test_response_clear(&response);
    free(url);
}
END_TEST

START_TEST(outputs_contain_no_secret)
{
    char *files[3] = {crd_test_read_file(env.log_path, NULL), crd_test_read_file(sink_path, NULL),
                      crd_test_read_file(graph.log_path, NULL)};
    for (size_t i = 0; i < 3; i++) {
        ck_assert_ptr_nonnull(files[i]);
        ck_assert_ptr_null(strstr(files[i], CRD_TEST_CLIENT_SECRET));
        ck_assert_ptr_null(strstr(files[i], "Bearer "));
        free(files[i]);
    }
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("pipeline");
    TCase *tcase = tcase_create("daemon with fakegraph");
    tcase_add_unchecked_fixture(tcase, start_all, stop_all);
    tcase_set_timeout(tcase, 90);
    tcase_add_test(tcase, p2p_versions_delivered_once_each);
    tcase_add_test(tcase, meeting_pages_merged);
    tcase_add_test(tcase, throttling_and_outages_end_in_delivery);
    tcase_add_test(tcase, not_found_phase_ends_in_delivery);
    tcase_add_test(tcase, not_found_past_horizon_gives_up);
    tcase_add_test(tcase, metrics_count_deliveries);
    tcase_add_test(tcase, outputs_contain_no_secret);
    suite_add_tcase(suite, tcase);

    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
