/* SPDX-License-Identifier: MIT */
/*
 * Tests of the Graph client's request budgets (struct crd_graph_limits)
 * against the scripted responder of tests/graph_mock.c. The budgets are
 * scaled down to a few requests per 600 ms, and the tests check the arrival
 * times that the mock recorded. One more test runs the daemon against
 * fakegraph with quotas equal to the daemon's budgets and checks that a burst
 * of call records is fetched without a single 429.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "graph.h"
#include "graph_env.h"
#include "graph_mock.h"
#include "secret.h"
#include "util.h"

#define TENANT_ID "2a37c3b7-f073-59a1-b249-42c4e33881c2"
#define CLIENT_ID "eb5b5317-1c3f-591e-bda6-b36a341728fd"
#define CLIENT_SECRET "ratelimit-test-secret"
#define P2P_ID "7e633194-32cf-5bee-86e6-f491790b2813"
#define OTHER_ID "0bf46869-eea5-5992-811e-178fec3d9176"
#define TOKEN_PATH "/" TENANT_ID "/oauth2/v2.0/token"
#define LIST_PATH "/v1.0/communications/callRecords"
#define RECORDS LIST_PATH "/"
#define WINDOW_MS 600

static const char participants[] = "{\"value\": [{\"id\": \"7b2336f9-ca34-5358-9e58-574b31b09076\"}]}";

struct test_env {
    struct graph_mock *mock;
    struct crd_secret *secret;
    struct crd_graph_limits *limits;
    struct crd_graph *graphs[2];
    struct crd_graph_session *sessions[2];
};

static struct test_env env;
/* fakegraph for the daemon test. */
static struct crd_test_graph daemon_graph;

/* Two clients sharing one set of budgets, as the daemon's fetch and subscription clients do. */
static void open_clients(const struct crd_graph_limits_options *limits_options)
{
    struct crd_error err = {0};
    env.mock = graph_mock_start();
    ck_assert_int_eq(crd_secret_new(CLIENT_SECRET, strlen(CLIENT_SECRET), &env.secret, &err), 0);
    ck_assert_int_eq(crd_graph_limits_new(limits_options, &env.limits, &err), 0);

    struct crd_graph_options options = {
        .graph_url = graph_mock_url(env.mock),
        .login_url = graph_mock_url(env.mock),
        .tenant = TENANT_ID,
        .client_id = CLIENT_ID,
        .client_secret = env.secret,
        .connect_timeout_ms = 1000,
        .total_timeout_ms = 2000,
        .limits = env.limits,
    };
    for (size_t i = 0; i < 2; i++) {
        int r = crd_graph_new(&options, &env.graphs[i], &err);
        ck_assert_msg(r == 0, "crd_graph_new: %s", err.message);
        r = crd_graph_session_new(env.graphs[i], &env.sessions[i], &err);
        ck_assert_msg(r == 0, "crd_graph_session_new: %s", err.message);
    }

    char *token = graph_mock_fixture("token-response.json", NULL);
    graph_mock_add_body(env.mock, TOKEN_PATH, 200, token);
    free(token);
    graph_mock_add_body(env.mock, LIST_PATH, 200, "{\"value\": []}");
}

static void teardown(void)
{
    for (size_t i = 0; i < 2; i++) {
        crd_graph_session_free(env.sessions[i]);
        crd_graph_free(env.graphs[i]);
    }
    crd_graph_limits_free(env.limits);
    graph_mock_stop(env.mock);
    crd_secret_free(env.secret);
    memset(&env, 0, sizeof(env));
}

static int ignore_record(const char *id, int64_t version, void *context, struct crd_error *err)
{
    (void)id;
    (void)version;
    (void)context;
    (void)err;
    return 0;
}

static int list_once(struct crd_graph_session *session)
{
    struct crd_error err = {0};
    return crd_graph_list_call_records(session, crd_time_now_ms() - 3600 * 1000, ignore_record,
                                       NULL, NULL, &err);
}

/* Serves the p2p fixture as call record id, with one participant. */
static void serve_record(const char *id)
{
    char *fixture = graph_mock_fixture("callrecord-p2p-v1.json", NULL);
    char *record = graph_mock_replace(fixture, P2P_ID, id);
    char path[128];
    snprintf(path, sizeof(path), RECORDS "%s", id);
    graph_mock_add_body(env.mock, path, 200, record);
    snprintf(path, sizeof(path), RECORDS "%s/participants_v2", id);
    graph_mock_add_body(env.mock, path, 200, participants);
    free(record);
    free(fixture);
}

static void fetch_ok(struct crd_graph_session *session, const char *id)
{
    json_t *record = NULL;
    struct crd_error err = {0};
    int r = crd_graph_fetch_call_record(session, id, &record, NULL, &err);
    ck_assert_msg(r == 0, "fetching '%s' failed (%d): %s", id, r, err.message);
    json_decref(record);
}

static int64_t arrival_ms(const char *path, size_t index)
{
    const struct graph_mock_request *request = graph_mock_request(env.mock, path, index);
    ck_assert_ptr_nonnull(request);
    return request->received_ms;
}

/* ---- tests ------------------------------------------------------------------------------ */

START_TEST(tenant_burst_waits_for_window)
{
    const unsigned limit = 4;
    const size_t burst = 10;
    open_clients(&(struct crd_graph_limits_options){.tenant_requests = limit,
                                                    .window_ms = WINDOW_MS});

    /* The two clients take turns: the budget is one for both. */
    for (size_t i = 0; i < burst; i++) {
        ck_assert_int_eq(list_once(env.sessions[i % 2]), 0);
    }

    ck_assert_uint_eq(graph_mock_count(env.mock, LIST_PATH), burst);
    int64_t first = arrival_ms(LIST_PATH, 0);
    ck_assert_int_lt(arrival_ms(LIST_PATH, limit - 1) - first, WINDOW_MS / 2);
    ck_assert_int_ge(arrival_ms(LIST_PATH, limit) - first, WINDOW_MS);
    for (size_t i = limit; i < burst; i++) {
        int64_t gap = arrival_ms(LIST_PATH, i) - arrival_ms(LIST_PATH, i - limit);
        ck_assert_msg(gap >= WINDOW_MS, "requests %zu and %zu arrived %lld ms apart", i - limit,
                      i, (long long)gap);
    }
}
END_TEST

START_TEST(list_budget_paces_listings)
{
    open_clients(&(struct crd_graph_limits_options){.list_requests = 2, .window_ms = WINDOW_MS});

    for (size_t i = 0; i < 3; i++) {
        ck_assert_int_eq(list_once(env.sessions[0]), 0);
    }
    /* A record fetch uses another budget and is not held back by the listings. */
    serve_record(P2P_ID);
    fetch_ok(env.sessions[1], P2P_ID);

    int64_t first = arrival_ms(LIST_PATH, 0);
    ck_assert_int_lt(arrival_ms(LIST_PATH, 1) - first, WINDOW_MS / 2);
    ck_assert_int_ge(arrival_ms(LIST_PATH, 2) - first, WINDOW_MS);
    ck_assert_int_lt(arrival_ms(RECORDS P2P_ID, 0) - arrival_ms(LIST_PATH, 2), WINDOW_MS / 2);
}
END_TEST

START_TEST(record_budget_applies_per_id)
{
    /* A fetch is two requests (record and participants): one fetch uses the budget up. */
    open_clients(&(struct crd_graph_limits_options){.record_requests = 2, .window_ms = WINDOW_MS});
    serve_record(P2P_ID);
    serve_record(OTHER_ID);

    fetch_ok(env.sessions[0], P2P_ID);
    fetch_ok(env.sessions[1], OTHER_ID);
    fetch_ok(env.sessions[0], P2P_ID);

    int64_t p2p_first = arrival_ms(RECORDS P2P_ID, 0);
    int64_t other = arrival_ms(RECORDS OTHER_ID, 0);
    int64_t p2p_second = arrival_ms(RECORDS P2P_ID, 1);
    ck_assert_int_lt(other - p2p_first, WINDOW_MS / 2);
    ck_assert_int_ge(p2p_second - p2p_first, WINDOW_MS);
    int64_t participants_gap = arrival_ms(RECORDS P2P_ID "/participants_v2", 1) -
                               arrival_ms(RECORDS P2P_ID "/participants_v2", 0);
    ck_assert_int_ge(participants_gap, WINDOW_MS);
}
END_TEST

struct background_list {
    pthread_t thread;
    struct crd_graph_session *session;
    int result;
};

static void *background_list_main(void *arg)
{
    struct background_list *b = arg;
    b->result = list_once(b->session);
    return NULL;
}

START_TEST(cancel_wakes_a_budget_waiter)
{
    /*
     * A budget of one request per minute: the second listing waits for a
     * minute unless the cancel wakes it. When the cancel comes before the
     * wait starts, the listing must fail all the same.
     */
    open_clients(&(struct crd_graph_limits_options){.tenant_requests = 1, .window_ms = 60000});
    ck_assert_int_eq(list_once(env.sessions[0]), 0);

    struct background_list b = {.session = env.sessions[0], .result = 1};
    ck_assert_int_eq(pthread_create(&b.thread, NULL, background_list_main, &b), 0);
    int64_t cancelled_at = crd_time_monotonic_ms();
    crd_graph_cancel(env.graphs[0]);
    pthread_join(b.thread, NULL);
    int64_t took = crd_time_monotonic_ms() - cancelled_at;

    ck_assert_int_eq(b.result, -ECANCELED);
    ck_assert_msg(took < 2000, "the listing took %lld ms to notice", (long long)took);
    ck_assert_uint_eq(graph_mock_count(env.mock, LIST_PATH), 1);
}
END_TEST

/* ---- the daemon against fakegraph's quotas ----------------------------------------------- */

#define BURST_RECORDS 60
#define DELIVERY_TIMEOUT_MS 60000

static void publish_record(const json_t *template, const char *call_id)
{
    json_t *record = json_deep_copy(template);
    ck_assert_ptr_nonnull(record);
    json_object_set_new(record, "id", json_string(call_id));
    json_t *body = json_pack("{s:o}", "record", record);
    ck_assert_int_eq(crd_test_graph_control(&daemon_graph, "records", body, NULL), 201);
    json_decref(body);
}

static void notify_record(const struct crd_test_env *daemon_env, const char *call_id)
{
    char url[128];
    snprintf(url, sizeof(url), "%s/notify", daemon_env->base_url);
    json_t *body = json_pack("{s:s, s:s, s:s, s:s}", "callId", call_id, "changeType", "updated",
                             "notificationUrl", url, "clientState", CRD_TEST_CLIENT_STATE);
    json_t *answer = NULL;
    ck_assert_int_eq(crd_test_graph_control(&daemon_graph, "notify", body, &answer), 200);
    ck_assert_int_eq(json_integer_value(json_object_get(answer, "status")), 202);
    json_decref(answer);
    json_decref(body);
}

/* Counts fakegraph's logged requests with the given status, and every call-record request. */
static void count_logged_requests(long status, size_t *ret_with_status, size_t *ret_records)
{
    char url[128];
    snprintf(url, sizeof(url), "%s/_fakegraph/requests", daemon_graph.base_url);
    struct crd_test_response response;
    ck_assert_int_eq(crd_test_http("GET", url, NULL, NULL, 0, daemon_graph.ca_file, &response), 0);
    ck_assert_int_eq(response.status, 200);
    json_t *log = json_loadb(response.body, response.body_len, 0, NULL);
    crd_test_response_clear(&response);
    ck_assert_ptr_nonnull(log);

    size_t with_status = 0;
    size_t records = 0;
    size_t index;
    const json_t *entry;
    json_array_foreach (log, index, entry) {
        const char *path = json_string_value(json_object_get(entry, "path"));
        if (json_integer_value(json_object_get(entry, "status")) == status) {
            with_status++;
        }
        if (path != NULL && strncmp(path, RECORDS, strlen(RECORDS)) == 0) {
            records++;
        }
    }
    json_decref(log);
    *ret_with_status = with_status;
    *ret_records = records;
}

START_TEST(daemon_burst_meets_quotas)
{
    /* Graph's budgets scaled from 20 s to 2 s: 1500 becomes 30 and 40 becomes 4. */
    crd_test_graph_prepare(&daemon_graph);
    char *graph_keys = crd_test_graph_config(&daemon_graph);
    char *dir = crd_test_make_tmpdir("crd-ratelimit-sink");
    char *sink_path = NULL;
    char *sections = NULL;
    ck_assert_int_ge(asprintf(&sink_path, "%s/records.jsonl", dir), 0);
    ck_assert_int_ge(asprintf(&sections,
                              "[fetch]\nworkers = 8\nretry_base = 50ms\nretry_max = 500ms\n"
                              "requests_per_20s = 30\nrecord_requests_per_20s = 4\n"
                              "rate_window = 2s\n\n"
                              "[sink archive]\ntype = file\npath = %s\n",
                              sink_path),
                     0);
    struct crd_test_env daemon_env;
    struct crd_test_env_options options = {.graph = graph_keys, .sections = sections};
    crd_test_env_create_with(&daemon_env, &options);
    const char *const quotas[] = {"--quota-tenant", "30/2", "--quota-record", "4/2", NULL};
    crd_test_graph_start(&daemon_graph, &daemon_env, quotas);
    ck_assert_int_eq(crd_test_env_start(&daemon_env), 0);
    ck_assert(crd_test_env_wait_for_subscriptions(&daemon_env, 1));

    char *fixture = crd_test_fixture_path("callrecord-p2p-v1.json");
    json_t *template = json_load_file(fixture, 0, NULL);
    ck_assert_ptr_nonnull(template);
    char ids[BURST_RECORDS][CRD_GUID_LEN + 1];
    for (unsigned i = 0; i < BURST_RECORDS; i++) {
        snprintf(ids[i], sizeof(ids[i]), "%08x-5a1e-4c3d-8b2a-%012x", 0x7a7e0000u + i, i);
        publish_record(template, ids[i]);
    }
    for (unsigned i = 0; i < BURST_RECORDS; i++) {
        notify_record(&daemon_env, ids[i]);
    }

    int64_t deadline = crd_time_monotonic_ms() + DELIVERY_TIMEOUT_MS;
    for (unsigned i = 0; i < BURST_RECORDS; i++) {
        int left = (int)(deadline - crd_time_monotonic_ms());
        ck_assert_msg(crd_test_wait_for_text(sink_path, ids[i], left > 0 ? left : 0),
                      "call record %s did not reach the sink", ids[i]);
    }

    size_t throttled = 0;
    size_t record_requests = 0;
    count_logged_requests(429, &throttled, &record_requests);
    ck_assert_uint_eq(throttled, 0);
    /* Each record takes a GET of the record and one of its participants. */
    ck_assert_uint_ge(record_requests, 2 * BURST_RECORDS);

    ck_assert_int_eq(crd_test_env_stop(&daemon_env), 0);
    crd_test_graph_stop(&daemon_graph);
    crd_test_env_destroy(&daemon_env);
    json_decref(template);
    free(fixture);
    if (getenv("CRD_KEEP_TEST_DIRS") == NULL) {
        crd_test_remove_tree(dir);
    }
    free(dir);
    free(sink_path);
    free(sections);
    free(graph_keys);
}
END_TEST

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    Suite *suite = suite_create("ratelimit");
    TCase *tcase = tcase_create("budgets");
    tcase_add_checked_fixture(tcase, NULL, teardown);
    tcase_set_timeout(tcase, 30);
    tcase_add_test(tcase, tenant_burst_waits_for_window);
    tcase_add_test(tcase, list_budget_paces_listings);
    tcase_add_test(tcase, record_budget_applies_per_id);
    tcase_add_test(tcase, cancel_wakes_a_budget_waiter);
    suite_add_tcase(suite, tcase);
    TCase *daemon = tcase_create("daemon with fakegraph");
    tcase_set_timeout(daemon, 120);
    tcase_add_test(daemon, daemon_burst_meets_quotas);
    suite_add_tcase(suite, daemon);

    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    curl_global_cleanup();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
