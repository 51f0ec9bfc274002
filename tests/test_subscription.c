/* SPDX-License-Identifier: MIT */
/*
 * End-to-end tests of the subscription manager. Every test starts its own
 * fakegraph (with --min-lifetime 1, so that lifetimes of seconds stick) and
 * its own callrecd, and reads fakegraph's control API and the daemon's log.
 * Each test ends with exactly one subscription in fakegraph.
 */
#include "config.h"

#include <check.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_env.h"
#include "util.h"

#define CLIENT_ID "0b7f0d3a-5a55-4e4e-9d7d-3f2c1b0a9e8d"
#define TENANT_ID "2a37c3b7-f073-59a1-b249-42c4e33881c2"
#define PARTICIPANT_ID "5b2a1e4c-37d2-4c3e-9a61-0f6d8e2b7c41"
#define EVENT_TIMEOUT_MS 30000

static struct crd_test_env env;
static char *graph_dir;
static char *graph_ca;
static char graph_base[64];
static char *sink_path;
static pid_t graph_pid = -1;

static void start_fakegraph(uint16_t port)
{
    char *program = crd_test_build_path("tests/fakegraph");
    char listen_on[32];
    snprintf(listen_on, sizeof(listen_on), "127.0.0.1:%u", port);
    char *cert = NULL;
    char *key = NULL;
    char *secret = NULL;
    char *ready = NULL;
    char *log = NULL;
    if (asprintf(&cert, "%s/server.pem", graph_dir) < 0 ||
        asprintf(&key, "%s/server.key", graph_dir) < 0 ||
        asprintf(&secret, "%s/client_secret", env.dir) < 0 ||
        asprintf(&ready, "%s/ready", graph_dir) < 0 ||
        asprintf(&log, "%s/fakegraph.log", graph_dir) < 0) {
        abort();
    }
    graph_pid = fork();
    if (graph_pid < 0) {
        abort();
    }
    if (graph_pid == 0) {
        execl(program, program, "serve", "--listen", listen_on, "--cert", cert, "--key", key,
              "--cafile", env.ca_file, "--tenant", TENANT_ID, "--client-id", CLIENT_ID,
              "--client-secret-file", secret, "--ready-file", ready, "--log", log,
              "--min-lifetime", "1", (char *)NULL);
        _exit(127);
    }
    if (!crd_test_wait_for_text(ready, "\n", 15000)) {
        fprintf(stderr, "fakegraph did not become ready\n");
        exit(1);
    }
    free(program);
    free(cert);
    free(key);
    free(secret);
    free(ready);
    free(log);
}

/* Creates fakegraph and the daemon's environment; subscription_keys go to [subscription]. */
static void create_world(const char *subscription_keys)
{
    graph_dir = crd_test_make_tmpdir("crd-fakegraph");
    char *testcert = crd_test_build_path("tests/testcert");
    char *argv[] = {testcert, graph_dir, NULL};
    if (crd_test_run(argv, NULL) != 0) {
        abort();
    }
    free(testcert);
    if (asprintf(&graph_ca, "%s/ca.pem", graph_dir) < 0) {
        abort();
    }
    uint16_t graph_port = crd_test_free_port();
    snprintf(graph_base, sizeof(graph_base), "https://127.0.0.1:%u", graph_port);

    char *graph_keys = NULL;
    if (asprintf(&graph_keys, "login_url = %s\ngraph_url = %s\nca_file = %s\n", graph_base,
                 graph_base, graph_ca) < 0) {
        abort();
    }
    struct crd_test_env_options options = {.graph = graph_keys, .sections = ""};
    crd_test_env_create_with(&env, &options);
    if (asprintf(&sink_path, "%s/records.jsonl", env.dir) < 0) {
        abort();
    }

    /* [subscription] comes from the generated file; its keys are appended there. */
    char *config = crd_test_read_file(env.config_path, NULL);
    const char *at = strstr(config, "[store]");
    char *full = NULL;
    if (at == NULL ||
        asprintf(&full, "%.*s%s\n%s[fetch]\nretry_base = 100ms\nretry_max = 1s\n\n"
                        "[sink archive]\ntype = file\npath = %s\n",
                 (int)(at - config), config, subscription_keys, at, sink_path) < 0) {
        abort();
    }
    free(crd_test_write_file(env.dir, "callrecd.conf", full, 0600));
    free(full);
    free(config);
    free(graph_keys);

    start_fakegraph(graph_port);
}

static void start_world(const char *subscription_keys)
{
    create_world(subscription_keys);
    if (crd_test_env_start(&env) != 0) {
        fprintf(stderr, "callrecd did not become ready\n");
        exit(1);
    }
}

static void stop_world(void)
{
    (void)crd_test_env_stop(&env);
    if (graph_pid > 0) {
        kill(graph_pid, SIGTERM);
        waitpid(graph_pid, NULL, 0);
        graph_pid = -1;
    }
    crd_test_env_destroy(&env);
    if (getenv("CRD_KEEP_TEST_DIRS") == NULL) {
        crd_test_remove_tree(graph_dir);
    }
    free(graph_dir);
    free(graph_ca);
    free(sink_path);
    graph_dir = NULL;
    graph_ca = NULL;
    sink_path = NULL;
}

/* Sends a control request to fakegraph and returns the parsed JSON body (NULL when empty). */
static json_t *control(const char *method, const char *path, const char *body, long expect)
{
    char *url = NULL;
    if (asprintf(&url, "%s/_fakegraph%s", graph_base, path) < 0) {
        abort();
    }
    struct crd_test_response response;
    int r = crd_test_http(method, url, body != NULL ? "application/json" : NULL, body,
                          body != NULL ? strlen(body) : 0, graph_ca, &response);
    ck_assert_int_eq(r, 0);
    ck_assert_msg(response.status == expect, "%s %s: HTTP %ld, expected %ld: %s", method, path,
                  response.status, expect, response.body);
    json_t *json = response.body_len > 0 ? json_loads(response.body, 0, NULL) : NULL;
    crd_test_response_clear(&response);
    free(url);
    return json;
}

/* The subscriptions in fakegraph; the caller json_decref()s the array. */
static json_t *subscriptions(void)
{
    json_t *list = control("GET", "/subscriptions", NULL, 200);
    json_t *value = json_incref(json_object_get(list, "value"));
    json_decref(list);
    ck_assert_ptr_nonnull(value);
    return value;
}

static void assert_one_subscription(void)
{
    json_t *list = subscriptions();
    ck_assert_uint_eq(json_array_size(list), 1);
    json_decref(list);
}

static void current_id(char id[CRD_GUID_LEN + 1])
{
    json_t *list = subscriptions();
    const char *text = json_string_value(json_object_get(json_array_get(list, 0), "id"));
    ck_assert_ptr_nonnull(text);
    snprintf(id, CRD_GUID_LEN + 1, "%s", text);
    json_decref(list);
}

/* Requests fakegraph received whose "METHOD PATH" starts with prefix. */
static long count_requests(const char *prefix)
{
    json_t *counts = control("GET", "/request-counts", NULL, 200);
    long total = 0;
    const char *key;
    json_t *value;
    json_object_foreach(counts, key, value) {
        if (strncmp(key, prefix, strlen(prefix)) == 0) {
            total += (long)json_integer_value(value);
        }
    }
    json_decref(counts);
    return total;
}

/* Publishes the p2p fixture as call_id, started now, so that a backfill lists it. */
static void publish_recent(const char *call_id)
{
    char *fixture = crd_test_fixture_path("callrecord-p2p-v1.json");
    json_t *record = json_load_file(fixture, 0, NULL);
    ck_assert_ptr_nonnull(record);
    char now[40];
    crd_time_format_iso8601(crd_time_now_ms(), now, sizeof(now));
    json_object_set_new(record, "id", json_string(call_id));
    json_object_set_new(record, "startDateTime", json_string(now));
    char *text = json_dumps(record, JSON_COMPACT);
    char *body = NULL;
    if (asprintf(&body, "{\"record\":%s}", text) < 0) {
        abort();
    }
    json_decref(control("POST", "/records", body, 201));
    free(body);
    free(text);
    json_decref(record);
    free(fixture);
}

static void send_lifecycle(const char *event, const char *subscription_id, int repeat)
{
    char *body = NULL;
    if (asprintf(&body, "{\"lifecycleEvent\":\"%s\",\"subscriptionId\":\"%s\",\"repeat\":%d}",
                 event, subscription_id, repeat) < 0) {
        abort();
    }
    json_decref(control("POST", "/notify", body, 200));
    free(body);
}

static bool wait_in_log(const char *needle)
{
    return crd_test_wait_for_text(env.log_path, needle, EVENT_TIMEOUT_MS);
}

/* ---- tests ------------------------------------------------------------------------------ */

START_TEST(renewal_precedes_expiry)
{
    start_world("lifetime = 10s\nrenew_before = 6s\n");
    ck_assert(wait_in_log("created subscription"));
    ck_assert(crd_test_env_wait_for_lines(&env, "renewed subscription", 3, EVENT_TIMEOUT_MS));

    ck_assert_int_ge(count_requests("PATCH /v1.0/subscriptions/"), 3);
    ck_assert_int_eq(count_requests("POST /v1.0/subscriptions"), 1);
    const char *gone[] = {"is gone", NULL};
    ck_assert_uint_eq(crd_test_count_lines(env.log_path, gone), 0);
    assert_one_subscription();
    stop_world();
}
END_TEST

START_TEST(restart_adopts_subscription)
{
    start_world("");
    ck_assert(wait_in_log("created subscription"));
    char first[CRD_GUID_LEN + 1];
    current_id(first);

    ck_assert_int_eq(crd_test_env_stop(&env), 0);
    ck_assert_int_eq(crd_test_env_start(&env), 0);
    ck_assert(wait_in_log("adopted existing subscription"));

    char second[CRD_GUID_LEN + 1];
    current_id(second);
    ck_assert_str_eq(first, second);
    ck_assert_int_eq(count_requests("POST /v1.0/subscriptions"), 1);
    assert_one_subscription();
    stop_world();
}
END_TEST

START_TEST(conflict_on_create_adopts)
{
    create_world("");
    /* Same resource and change type, another notificationUrl: Graph answers 409 to a create. */
    char *body = NULL;
    char expiry[40];
    crd_time_format_iso8601(crd_time_now_ms() + 3600 * 1000, expiry, sizeof(expiry));
    if (asprintf(&body, "{\"changeType\":\"updated\",\"resource\":\"/communications/callRecords\","
                        "\"notificationUrl\":\"%s/notify?source=other\",\"expirationDateTime\":"
                        "\"%s\"}",
                 env.base_url, expiry) < 0) {
        abort();
    }
    json_decref(control("POST", "/subscriptions", body, 201));
    free(body);
    char inserted[CRD_GUID_LEN + 1];
    current_id(inserted);

    ck_assert_int_eq(crd_test_env_start(&env), 0);
    ck_assert(wait_in_log("adopted existing subscription"));

    char adopted[CRD_GUID_LEN + 1];
    current_id(adopted);
    ck_assert_str_eq(adopted, inserted);
    json_t *list = subscriptions();
    char *expected_url = NULL;
    if (asprintf(&expected_url, "%s/notify", env.base_url) < 0) {
        abort();
    }
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 0), "notificationUrl")),
                     expected_url);
    free(expected_url);
    json_decref(list);
    ck_assert_int_eq(count_requests("POST /v1.0/subscriptions"), 1);
    assert_one_subscription();
    stop_world();
}
END_TEST

START_TEST(new_client_state_replaces_subscription)
{
    create_world("");
    /* No client_state_file: callrecd generates a clientState on this first start. */
    char *config = crd_test_read_file(env.config_path, NULL);
    char *line = strstr(config, "client_state_file = ");
    ck_assert_ptr_nonnull(line);
    char *end = strchr(line, '\n');
    memmove(line, end + 1, strlen(end + 1) + 1);
    free(crd_test_write_file(env.dir, "callrecd.conf", config, 0600));
    free(config);
    /* A subscription for this instance's URL, made with some other clientState. */
    char *body = NULL;
    char expiry[40];
    crd_time_format_iso8601(crd_time_now_ms() + 3600 * 1000, expiry, sizeof(expiry));
    if (asprintf(&body, "{\"changeType\":\"updated\",\"resource\":\"/communications/callRecords\","
                        "\"notificationUrl\":\"%s/notify\",\"lifecycleNotificationUrl\":"
                        "\"%s/lifecycle\",\"clientState\":\"an-old-secret\","
                        "\"expirationDateTime\":\"%s\"}",
                 env.base_url, env.base_url, expiry) < 0) {
        abort();
    }
    json_decref(control("POST", "/subscriptions", body, 201));
    free(body);
    char old[CRD_GUID_LEN + 1];
    current_id(old);

    ck_assert_int_eq(crd_test_env_start(&env), 0);
    ck_assert(wait_in_log("the clientState is new"));
    ck_assert(wait_in_log("created subscription"));

    char created[CRD_GUID_LEN + 1];
    current_id(created);
    ck_assert_str_ne(created, old);
    ck_assert_int_eq(count_requests("DELETE /v1.0/subscriptions/"), 1);
    assert_one_subscription();
    stop_world();
}
END_TEST

START_TEST(patch_not_found_recreates_and_backfills)
{
    const char *call_id = "3f8a2c1e-5b6d-4e7f-8a9b-0c1d2e3f4a5b";
    start_world("lifetime = 10s\nrenew_before = 6s\n");
    ck_assert(wait_in_log("created subscription"));
    char id[CRD_GUID_LEN + 1];
    current_id(id);

    /* Published without a change notification: only a backfill can find it. */
    publish_recent(call_id);
    char *body = NULL;
    if (asprintf(&body, "{\"subscriptionId\":\"%s\"}", id) < 0) {
        abort();
    }
    json_decref(control("POST", "/subscriptions/remove", body, 204));
    free(body);

    ck_assert(wait_in_log("PATCH returned 404"));
    ck_assert(wait_in_log("recreated the subscription"));
    ck_assert(crd_test_wait_for_text(sink_path, call_id, EVENT_TIMEOUT_MS));
    char now_id[CRD_GUID_LEN + 1];
    current_id(now_id);
    ck_assert_str_ne(now_id, id);
    assert_one_subscription();
    stop_world();
}
END_TEST

START_TEST(removed_and_missed_events_backfill)
{
    const char *removed_call = "7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f";
    const char *missed_call = "8d2e3f4a-5b6c-4d7e-9f80-a1b2c3d4e5f6";
    start_world("");
    ck_assert(wait_in_log("created subscription"));
    char id[CRD_GUID_LEN + 1];
    current_id(id);

    publish_recent(removed_call);
    send_lifecycle("subscriptionRemoved", id, 1);
    ck_assert(wait_in_log("recreated the subscription"));
    ck_assert(crd_test_wait_for_text(sink_path, removed_call, EVENT_TIMEOUT_MS));

    char second[CRD_GUID_LEN + 1];
    current_id(second);
    ck_assert_str_ne(second, id);
    publish_recent(missed_call);
    send_lifecycle("missed", second, 1);
    ck_assert(crd_test_wait_for_text(sink_path, missed_call, EVENT_TIMEOUT_MS));
    assert_one_subscription();
    stop_world();
}
END_TEST

START_TEST(reauthorization_burst_makes_one_patch)
{
    start_world("");
    ck_assert(wait_in_log("created subscription"));
    char id[CRD_GUID_LEN + 1];
    current_id(id);

    /* The control call returns after the listener accepted all five events. */
    send_lifecycle("reauthorizationRequired", id, 5);
    ck_assert(wait_in_log("renewed subscription"));
    ck_assert(crd_test_env_wait_for_lines(&env, "lifecycle event 'reauthorizationRequired'", 5,
                                          EVENT_TIMEOUT_MS));
    ck_assert_int_eq(count_requests("PATCH /v1.0/subscriptions/"), 1);
    ck_assert_int_eq(count_requests("POST /v1.0/subscriptions/"), 0);
    assert_one_subscription();
    stop_world();
}
END_TEST

START_TEST(participant_filter_in_resource)
{
    start_world("participant_filter = " PARTICIPANT_ID "\n");
    ck_assert(wait_in_log("created subscription"));
    json_t *list = subscriptions();
    const char *resource =
        json_string_value(json_object_get(json_array_get(list, 0), "resource"));
    ck_assert_ptr_nonnull(resource);
    ck_assert_ptr_nonnull(strstr(resource, "participants/any(p:p/id eq '" PARTICIPANT_ID "')"));
    json_decref(list);
    assert_one_subscription();
    stop_world();
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("subscription");
    TCase *tcase = tcase_create("daemon with fakegraph");
    tcase_set_timeout(tcase, 120);
    tcase_add_test(tcase, renewal_precedes_expiry);
    tcase_add_test(tcase, restart_adopts_subscription);
    tcase_add_test(tcase, conflict_on_create_adopts);
    tcase_add_test(tcase, new_client_state_replaces_subscription);
    tcase_add_test(tcase, patch_not_found_recreates_and_backfills);
    tcase_add_test(tcase, removed_and_missed_events_backfill);
    tcase_add_test(tcase, reauthorization_burst_makes_one_patch);
    tcase_add_test(tcase, participant_filter_in_resource);
    suite_add_tcase(suite, tcase);

    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
