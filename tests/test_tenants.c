/* SPDX-License-Identifier: MIT */
/*
 * Two tenants side by side: one callrecd with two [tenant NAME] sections
 * against one fakegraph that serves both. Each tenant gets its own
 * subscription and records. A notification whose subscriptionId, tenantId
 * and clientState do not belong to one tenant is dropped. A Graph outage of
 * one tenant leaves the other fetching, and a restart adopts both
 * subscriptions.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "graph_env.h"
#include "util.h"

#define TENANT_A CRD_TEST_TENANT_ID
#define TENANT_B "5b8f4c1e-7a2d-4e90-8c3b-1f6a9d2e4b70"
#define CLIENT_STATE_A "state-of-contoso-7c1d9e2f4a6b8c0d"
#define CLIENT_STATE_B "state-of-fabrikam-3e5a7c9d1f2b4d6e"
#define TIMEOUT_MS 30000

static struct crd_test_env env;
static struct crd_test_graph graph;
static char *sink_dir;
static char *sink_path;
static json_t *template;

static void start_all(void)
{
    crd_test_graph_prepare(&graph);
    char *graph_keys = crd_test_graph_config(&graph);
    sink_dir = crd_test_make_tmpdir("crd-tenants-sink");
    char *state_dir = crd_test_make_tmpdir("crd-tenants-states");
    char *state_a = crd_test_write_file(state_dir, "state_a", CLIENT_STATE_A "\n", 0600);
    char *state_b = crd_test_write_file(state_dir, "state_b", CLIENT_STATE_B "\n", 0600);
    char *tenants = NULL;
    char *sections = NULL;
    /* Both tenants sign in as one multi-tenant app, with the secret fakegraph expects. */
    if (asprintf(&sink_path, "%s/records.jsonl", sink_dir) < 0 ||
        asprintf(&tenants,
                 "[tenant contoso]\ntenant = %s\nclient_id = %s\n"
                 "client_secret_file = %s/client_secret\nclient_state_file = %s\n\n"
                 "[tenant fabrikam]\ntenant = %s\nclient_id = %s\n"
                 "client_secret_file = %s/client_secret\nclient_state_file = %s\n\n",
                 TENANT_A, CRD_TEST_CLIENT_ID, state_dir, state_a, TENANT_B, CRD_TEST_CLIENT_ID,
                 state_dir, state_b) < 0 ||
        asprintf(&sections,
                 "[fetch]\nworkers = 2\nretry_base = 100ms\nretry_max = 1s\n"
                 "outage_min_attempts = 2\noutage_backoff_max = 1s\n\n"
                 "[reconcile]\ninterval = 0\n\n"
                 "[sink archive]\ntype = file\npath = %s\n",
                 sink_path) < 0) {
        abort();
    }
    free(crd_test_write_file(state_dir, "client_secret", CRD_TEST_CLIENT_SECRET "\n", 0600));
    struct crd_test_env_options options = {
        .graph = graph_keys, .tenants = tenants, .sections = sections};
    crd_test_env_create_with(&env, &options);
    const char *second_tenant[] = {"--tenant", TENANT_B, NULL};
    crd_test_graph_start(&graph, &env, second_tenant);
    if (crd_test_env_start(&env) != 0 || !crd_test_env_wait_for_subscriptions(&env, 2)) {
        exit(1);
    }
    char *fixture = crd_test_fixture_path("callrecord-pstn.json");
    template = json_load_file(fixture, 0, NULL);
    free(fixture);
    free(graph_keys);
    free(tenants);
    free(sections);
    free(state_a);
    free(state_b);
    free(state_dir);
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

static void publish(const char *tenant, const char *call_id)
{
    json_t *record = json_deep_copy(template);
    json_object_set_new(record, "id", json_string(call_id));
    json_object_set_new(record, "version", json_integer(1));
    json_t *body = json_pack("{s:o, s:s}", "record", record, "tenant", tenant);
    long status = crd_test_graph_control(&graph, "records", body, NULL);
    ck_assert_msg(status >= 200 && status < 300, "publishing %s answered HTTP %ld", call_id,
                  status);
    json_decref(body);
}

/* Makes fakegraph notify the subscriptions of tenant about call_id; returns callrecd's status. */
static long notify_subscription(const char *tenant, const char *call_id)
{
    json_t *body = json_pack("{s:s, s:s, s:s}", "callId", call_id, "changeType", "updated",
                             "tenant", tenant);
    json_t *answer = NULL;
    long status = crd_test_graph_control(&graph, "notify", body, &answer);
    ck_assert_msg(status == 200, "fakegraph's notify answered HTTP %ld", status);
    long received = (long)json_integer_value(json_object_get(answer, "status"));
    json_decref(answer);
    json_decref(body);
    return received;
}

/* Sends a notification with the given triple straight to callrecd's notification URL. */
static long notify_pair(const char *subscription_id, const char *tenant, const char *client_state,
                        const char *call_id)
{
    char *url = NULL;
    ck_assert_int_ge(asprintf(&url, "%s/notify", env.base_url), 0);
    json_t *body = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "callId", call_id, "changeType",
                             "updated", "notificationUrl", url, "subscriptionId",
                             subscription_id, "tenant", tenant, "clientState", client_state);
    json_t *answer = NULL;
    long status = crd_test_graph_control(&graph, "notify", body, &answer);
    ck_assert_msg(status == 200, "fakegraph's notify answered HTTP %ld", status);
    long received = (long)json_integer_value(json_object_get(answer, "status"));
    json_decref(answer);
    json_decref(body);
    free(url);
    return received;
}

/* GETs /_fakegraph/subscriptions. */
static json_t *list_subscriptions(void)
{
    json_t *answer = crd_test_get_json(graph.base_url, "/_fakegraph/subscriptions", graph.ca_file);
    json_t *list = json_is_array(answer) ? answer : json_incref(json_object_get(answer, "value"));
    if (list != answer) {
        json_decref(answer);
    }
    ck_assert_msg(json_is_array(list), "GET /_fakegraph/subscriptions gave no array");
    return list;
}

/* The ids of tenant's subscriptions into id (the last one found); returns how many it has. */
static size_t subscriptions_of(const char *tenant, char id[CRD_GUID_LEN + 1])
{
    json_t *list = list_subscriptions();
    size_t count = 0;
    size_t index;
    json_t *subscription;
    json_array_foreach(list, index, subscription) {
        const char *owner = json_string_value(json_object_get(subscription, "tenant"));
        if (owner != NULL && strcasecmp(owner, tenant) == 0) {
            snprintf(id, CRD_GUID_LEN + 1, "%s",
                     json_string_value(json_object_get(subscription, "id")));
            count++;
        }
    }
    json_decref(list);
    return count;
}

/* Waits until both tenants hold exactly one subscription; fills their ids. */
static void wait_for_subscriptions(char id_a[CRD_GUID_LEN + 1], char id_b[CRD_GUID_LEN + 1])
{
    for (int waited = 0; waited < TIMEOUT_MS; waited += 100) {
        if (subscriptions_of(TENANT_A, id_a) == 1 && subscriptions_of(TENANT_B, id_b) == 1 &&
            crd_test_wait_for_text(env.log_path, id_a, 0) &&
            crd_test_wait_for_text(env.log_path, id_b, 0)) {
            return;
        }
        nanosleep(&(struct timespec){.tv_nsec = 100 * 1000 * 1000}, NULL);
    }
    ck_abort_msg("the two tenants did not each get one subscription");
}

/* The /metrics text of callrecd; malloc'ed. */
static char *metrics_text(void)
{
    char *url = NULL;
    ck_assert_int_ge(asprintf(&url, "%s/metrics", env.base_url), 0);
    struct crd_test_response response;
    ck_assert_int_eq(crd_test_http("GET", url, NULL, NULL, 0, env.ca_file, &response), 0);
    ck_assert_int_eq(response.status, 200);
    char *text = strdup(response.body);
    crd_test_response_clear(&response);
    free(url);
    return text;
}

static bool delivered(const char *tenant, const char *call_id)
{
    char *needle = NULL;
    ck_assert_int_ge(asprintf(&needle, "\"idempotencyKey\":\"%s/%s/1\"", tenant, call_id), 0);
    bool found = crd_test_wait_for_text(sink_path, needle, TIMEOUT_MS);
    free(needle);
    return found;
}

START_TEST(each_tenant_gets_its_subscription_and_records)
{
    char id_a[CRD_GUID_LEN + 1];
    char id_b[CRD_GUID_LEN + 1];
    wait_for_subscriptions(id_a, id_b);
    ck_assert_str_ne(id_a, id_b);

    const char *call_a = "a1000000-0000-4000-8000-000000000001";
    const char *call_b = "b1000000-0000-4000-8000-000000000001";
    publish(TENANT_A, call_a);
    publish(TENANT_B, call_b);
    ck_assert_int_eq(notify_subscription(TENANT_A, call_a), 202);
    ck_assert_int_eq(notify_subscription(TENANT_B, call_b), 202);

    ck_assert_msg(delivered(TENANT_A, call_a), "contoso's record never arrived");
    ck_assert_msg(delivered(TENANT_B, call_b), "fabrikam's record never arrived");

    json_t *health = crd_test_get_json(env.base_url, "/healthz", env.ca_file);
    json_t *tenants = json_object_get(health, "tenants");
    ck_assert_uint_eq(json_array_size(tenants), 2);
    const char *names[] = {"contoso", "fabrikam"};
    const char *ids[] = {id_a, id_b};
    for (size_t i = 0; i < 2; i++) {
        json_t *tenant = json_array_get(tenants, i);
        json_t *subscription = json_object_get(tenant, "subscription");
        ck_assert_str_eq(json_string_value(json_object_get(tenant, "name")), names[i]);
        ck_assert_str_eq(json_string_value(json_object_get(subscription, "state")), "active");
        ck_assert_str_eq(json_string_value(json_object_get(subscription, "id")), ids[i]);
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(tenant, "graph"),
                                                           "state")),
                         "closed");
    }
    json_decref(health);
}
END_TEST

START_TEST(mismatched_pairs_are_dropped)
{
    char id_a[CRD_GUID_LEN + 1];
    char id_b[CRD_GUID_LEN + 1];
    wait_for_subscriptions(id_a, id_b);
    const char *call = "b2000000-0000-4000-8000-000000000002";
    publish(TENANT_B, call);

    /* fabrikam's tenantId and clientState, but contoso's subscription. */
    ck_assert_int_eq(notify_pair(id_a, TENANT_B, CLIENT_STATE_B, call), 202);
    ck_assert(crd_test_wait_for_text(env.log_path, "is not the subscription of tenant 'fabrikam'",
                                     TIMEOUT_MS));
    /* contoso's subscription and tenantId, but fabrikam's clientState. */
    ck_assert_int_eq(notify_pair(id_a, TENANT_A, CLIENT_STATE_B, call), 202);
    ck_assert(crd_test_wait_for_text(env.log_path, "clientState does not match for tenant "
                                     "'contoso'", TIMEOUT_MS));
    /* A tenant this instance does not serve. */
    ck_assert_int_eq(notify_pair(id_b, "0c0c0c0c-0000-4000-8000-0000000000cc", CLIENT_STATE_B,
                                 call),
                     202);
    ck_assert(crd_test_wait_for_text(env.log_path, "is not one this instance serves",
                                     TIMEOUT_MS));
    ck_assert_int_eq(crd_test_count_lines(sink_path, (const char *[]){call, NULL}), 0);
    char *metrics = metrics_text();
    ck_assert_ptr_nonnull(
        strstr(metrics, "callrecd_notifications_total{outcome=\"subscription_mismatch\"} 1\n"));
    ck_assert_ptr_nonnull(
        strstr(metrics, "callrecd_notifications_total{outcome=\"client_state_mismatch\"} 1\n"));
    ck_assert_ptr_nonnull(
        strstr(metrics, "callrecd_notifications_total{outcome=\"tenant_mismatch\"} 1\n"));
    free(metrics);

    /* The matching triple is accepted. */
    ck_assert_int_eq(notify_pair(id_b, TENANT_B, CLIENT_STATE_B, call), 202);
    ck_assert_msg(delivered(TENANT_B, call), "the matching notification was not delivered");
}
END_TEST

START_TEST(one_tenants_outage_leaves_the_other_running)
{
    char id_a[CRD_GUID_LEN + 1];
    char id_b[CRD_GUID_LEN + 1];
    wait_for_subscriptions(id_a, id_b);
    json_t *fault = json_pack("{s:s, s:i, s:i, s:s}", "match", "/v1.0/communications/callRecords/",
                              "status", 503, "count", 1000000, "tenant", TENANT_A);
    long status = crd_test_graph_control(&graph, "faults", fault, NULL);
    ck_assert_msg(status >= 200 && status < 300, "fault answered %ld", status);
    json_decref(fault);

    const char *down[] = {"a3000000-0000-4000-8000-000000000001",
                          "a3000000-0000-4000-8000-000000000002",
                          "a3000000-0000-4000-8000-000000000003"};
    for (size_t i = 0; i < 3; i++) {
        publish(TENANT_A, down[i]);
        ck_assert_int_eq(notify_subscription(TENANT_A, down[i]), 202);
    }
    ck_assert(crd_test_wait_for_text(env.log_path, "Graph outage: ", TIMEOUT_MS));

    const char *up = "b3000000-0000-4000-8000-000000000001";
    publish(TENANT_B, up);
    ck_assert_int_eq(notify_subscription(TENANT_B, up), 202);
    ck_assert_msg(delivered(TENANT_B, up), "fabrikam stopped during contoso's outage");
    ck_assert_int_eq(crd_test_count_lines(sink_path, (const char *[]){down[0], NULL}), 0);
}
END_TEST

START_TEST(restart_adopts_both_subscriptions)
{
    char id_a[CRD_GUID_LEN + 1];
    char id_b[CRD_GUID_LEN + 1];
    wait_for_subscriptions(id_a, id_b);
    ck_assert_int_eq(crd_test_env_stop(&env), 0);
    ck_assert_int_eq(crd_test_env_start(&env), 0);
    ck_assert(crd_test_env_wait_for_lines(&env, "adopted existing subscription", 2, TIMEOUT_MS));

    char again_a[CRD_GUID_LEN + 1];
    char again_b[CRD_GUID_LEN + 1];
    ck_assert_int_eq(subscriptions_of(TENANT_A, again_a), 1);
    ck_assert_int_eq(subscriptions_of(TENANT_B, again_b), 1);
    ck_assert_str_eq(again_a, id_a);
    ck_assert_str_eq(again_b, id_b);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("tenants");
    TCase *side_by_side = tcase_create("side by side");
    tcase_add_unchecked_fixture(side_by_side, start_all, stop_all);
    tcase_set_timeout(side_by_side, 120);
    tcase_add_test(side_by_side, each_tenant_gets_its_subscription_and_records);
    tcase_add_test(side_by_side, mismatched_pairs_are_dropped);
    tcase_add_test(side_by_side, restart_adopts_both_subscriptions);
    tcase_add_test(side_by_side, one_tenants_outage_leaves_the_other_running);
    suite_add_tcase(suite, side_by_side);

    SRunner *runner = srunner_create(suite);
    srunner_set_fork_status(runner, CK_NOFORK);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
