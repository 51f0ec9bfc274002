/* SPDX-License-Identifier: MIT */
/*
 * Certificate credentials end to end: callrecd signs client assertions with
 * an RSA certificate's key, fakegraph verifies them against the registered
 * certificate, and a record is fetched and delivered. A key pair that is not
 * the registered one is refused with a clear error, and a key that does not
 * belong to its certificate fails the configuration check.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph_env.h"

#define P2P_CALL_ID "7e633194-32cf-5bee-86e6-f491790b2813"

/* An RSA certificate and key made by testcert --rsa in a fresh directory. */
static char *make_rsa_material(void)
{
    char *dir = crd_test_make_tmpdir("crd-client-cert");
    char *testcert = crd_test_build_path("tests/testcert");
    char *argv[] = {testcert, "--rsa", dir, NULL};
    ck_assert_int_eq(crd_test_run(argv, NULL), 0);
    free(testcert);
    return dir;
}

static char *credentials_for(const char *cert_dir, const char *key_dir, const char *algorithm)
{
    char *text = NULL;
    ck_assert_int_ge(asprintf(&text,
                              "client_certificate_file = %s/server.pem\n"
                              "client_key_file = %s/server.key\n"
                              "assertion = %s\n",
                              cert_dir, key_dir, algorithm),
                     0);
    return text;
}

/*
 * Runs callrecd with certificate credentials against fakegraph registered
 * for registered_dir; when it signs_in, waits until it has its subscription.
 */
static void run_with_certificate(const char *client_dir, const char *registered_dir,
                                 const char *algorithm, bool signs_in, struct crd_test_env *env,
                                 struct crd_test_graph *graph, char **ret_sink)
{
    crd_test_graph_prepare(graph);
    char *graph_keys = crd_test_graph_config(graph);
    char *credentials = credentials_for(client_dir, client_dir, algorithm);
    char *sink_dir = crd_test_make_tmpdir("crd-cert-sink");
    char *sections = NULL;
    ck_assert_int_ge(asprintf(ret_sink, "%s/records.jsonl", sink_dir), 0);
    ck_assert_int_ge(asprintf(&sections,
                              "[fetch]\nretry_base = 100ms\nretry_max = 1s\n\n"
                              "[sink archive]\ntype = file\npath = %s\n",
                              *ret_sink),
                     0);
    struct crd_test_env_options options = {
        .graph = graph_keys, .credentials = credentials, .sections = sections};
    crd_test_env_create_with(env, &options);

    char *registered = NULL;
    ck_assert_int_ge(asprintf(&registered, "%s/server.pem", registered_dir), 0);
    const char *extra[] = {"--client-certificate", registered, NULL};
    crd_test_graph_start(graph, env, extra);
    ck_assert_int_eq(crd_test_env_start(env), 0);
    if (signs_in) {
        ck_assert(crd_test_env_wait_for_subscriptions(env, 1));
    }

    char *fixture = crd_test_fixture_path("callrecord-p2p-v1.json");
    json_t *record = json_load_file(fixture, 0, NULL);
    ck_assert_ptr_nonnull(record);
    json_t *publish = json_pack("{s:o}", "record", record);
    long status = crd_test_graph_control(graph, "records", publish, NULL);
    ck_assert_msg(status >= 200 && status < 300, "publish answered %ld", status);

    char *url = NULL;
    ck_assert_int_ge(asprintf(&url, "%s/notify", env->base_url), 0);
    json_t *notify = json_pack("{s:s, s:s, s:s, s:s}", "callId", P2P_CALL_ID, "changeType",
                               "created", "notificationUrl", url, "clientState",
                               CRD_TEST_CLIENT_STATE);
    json_t *answer = NULL;
    ck_assert_int_eq(crd_test_graph_control(graph, "notify", notify, &answer), 200);
    ck_assert_int_eq(json_integer_value(json_object_get(answer, "status")), 202);

    json_decref(answer);
    json_decref(notify);
    json_decref(publish);
    free(url);
    free(fixture);
    free(registered);
    free(sections);
    free(sink_dir);
    free(credentials);
    free(graph_keys);
}

static void finish(struct crd_test_env *env, struct crd_test_graph *graph, char *sink)
{
    ck_assert_int_eq(crd_test_env_stop(env), 0);
    crd_test_env_destroy(env);
    crd_test_graph_stop(graph);
    char *slash = strrchr(sink, '/');
    *slash = '\0';
    crd_test_remove_tree(sink);
    free(sink);
}

static void check_login_delivers(const char *algorithm)
{
    char *client = make_rsa_material();
    struct crd_test_env env;
    struct crd_test_graph graph;
    char *sink = NULL;
    run_with_certificate(client, client, algorithm, true, &env, &graph, &sink);

    ck_assert_msg(crd_test_wait_for_text(sink, "\"idempotencyKey\":\"" CRD_TEST_TENANT_ID
                                               "/" P2P_CALL_ID "/1\"", 20000),
                  "no delivery with %s certificate credentials", algorithm);
    ck_assert(crd_test_wait_for_text(env.log_path, "signing in with the client certificate", 1000));

    finish(&env, &graph, sink);
    crd_test_remove_tree(client);
    free(client);
}

START_TEST(ps256_certificate_login_delivers)
{
    check_login_delivers("ps256");
}
END_TEST

START_TEST(rs256_certificate_login_delivers)
{
    check_login_delivers("rs256");
}
END_TEST

START_TEST(unregistered_certificate_refused)
{
    char *client = make_rsa_material();
    char *registered = make_rsa_material();
    struct crd_test_env env;
    struct crd_test_graph graph;
    char *sink = NULL;
    run_with_certificate(client, registered, "ps256", false, &env, &graph, &sink);

    ck_assert_msg(crd_test_wait_for_text(env.log_path, "Client assertion failed signature "
                                                       "validation", 20000),
                  "the refused login is not logged");
    ck_assert(crd_test_wait_for_text(env.log_path, "does not name the registered certificate",
                                     1000));
    char *delivered = crd_test_read_file(sink, NULL);
    ck_assert_msg(delivered == NULL || strstr(delivered, P2P_CALL_ID) == NULL,
                  "a record was delivered without a valid login");
    free(delivered);

    finish(&env, &graph, sink);
    crd_test_remove_tree(client);
    crd_test_remove_tree(registered);
    free(client);
    free(registered);
}
END_TEST

START_TEST(mismatched_key_fails_config_check)
{
    char *cert = make_rsa_material();
    char *key = make_rsa_material();
    char *credentials = credentials_for(cert, key, "ps256");
    struct crd_test_env env;
    struct crd_test_env_options options = {.credentials = credentials};
    crd_test_env_create_with(&env, &options);

    char *program = crd_test_build_path("daemon/callrecd");
    char *argv[] = {program, "--check-config", "-c", env.config_path, NULL};
    char *output = NULL;
    ck_assert_int_eq(crd_test_run_with_stderr(argv, &output), 1);
    ck_assert_msg(strstr(output, "does not belong to the client certificate") != NULL,
                  "unclear error: %s", output);
    ck_assert_ptr_nonnull(strstr(output, "client_certificate_file"));
    ck_assert_ptr_null(strstr(output, "PRIVATE KEY"));

    free(output);
    free(program);
    crd_test_env_destroy(&env);
    free(credentials);
    crd_test_remove_tree(cert);
    crd_test_remove_tree(key);
    free(cert);
    free(key);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("certificate");
    TCase *tcase = tcase_create("certificate credentials");
    tcase_set_timeout(tcase, 90);
    tcase_add_test(tcase, ps256_certificate_login_delivers);
    tcase_add_test(tcase, rs256_certificate_login_delivers);
    tcase_add_test(tcase, unregistered_certificate_refused);
    tcase_add_test(tcase, mismatched_key_fails_config_check);
    suite_add_tcase(suite, tcase);

    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
