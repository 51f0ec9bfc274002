/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "graph_env.h"

void crd_test_graph_prepare(struct crd_test_graph *graph)
{
    memset(graph, 0, sizeof(*graph));
    graph->pid = -1;
    graph->dir = crd_test_make_tmpdir("crd-fakegraph");
    char *testcert = crd_test_build_path("tests/testcert");
    char *argv[] = {testcert, graph->dir, NULL};
    ck_assert_int_eq(crd_test_run(argv, NULL), 0);
    free(testcert);
    ck_assert_int_ge(asprintf(&graph->ca_file, "%s/ca.pem", graph->dir), 0);
    ck_assert_int_ge(asprintf(&graph->log_path, "%s/fakegraph.log", graph->dir), 0);
    graph->port = crd_test_free_port();
    snprintf(graph->base_url, sizeof(graph->base_url), "https://127.0.0.1:%u", graph->port);
}

char *crd_test_graph_config(const struct crd_test_graph *graph)
{
    char *text = NULL;
    ck_assert_int_ge(asprintf(&text, "login_url = %s\ngraph_url = %s\nca_file = %s\n",
                              graph->base_url, graph->base_url, graph->ca_file),
                     0);
    return text;
}

void crd_test_graph_start(struct crd_test_graph *graph, const struct crd_test_env *env,
                          const char *const *extra_arguments)
{
    char *program = crd_test_build_path("tests/fakegraph");
    char listen_on[32];
    snprintf(listen_on, sizeof(listen_on), "127.0.0.1:%u", graph->port);
    char *cert = NULL;
    char *key = NULL;
    char *secret = NULL;
    char *ready = NULL;
    ck_assert_int_ge(asprintf(&cert, "%s/server.pem", graph->dir), 0);
    ck_assert_int_ge(asprintf(&key, "%s/server.key", graph->dir), 0);
    ck_assert_int_ge(asprintf(&secret, "%s/client_secret", env->dir), 0);
    ck_assert_int_ge(asprintf(&ready, "%s/ready", graph->dir), 0);

    const char *argv[40] = {program, "serve", "--listen", listen_on, "--cert", cert, "--key", key,
                            "--cafile", env->ca_file, "--tenant", CRD_TEST_TENANT_ID,
                            "--client-id", CRD_TEST_CLIENT_ID, "--client-secret-file", secret,
                            "--ready-file", ready, "--log", graph->log_path};
    size_t n = 20;
    for (size_t i = 0; extra_arguments != NULL && extra_arguments[i] != NULL && n < 39; i++) {
        argv[n++] = extra_arguments[i];
    }
    argv[n] = NULL;

    graph->pid = fork();
    ck_assert_int_ge(graph->pid, 0);
    if (graph->pid == 0) {
        execv(program, (char *const *)argv);
        _exit(127);
    }
    ck_assert_msg(crd_test_wait_for_text(ready, "\n", 15000), "fakegraph did not become ready");
    free(program);
    free(cert);
    free(key);
    free(secret);
    free(ready);
}

json_t *crd_test_get_json(const char *base_url, const char *path, const char *ca_file)
{
    char *url = NULL;
    ck_assert_int_ge(asprintf(&url, "%s%s", base_url, path), 0);
    struct crd_test_response response;
    int code = crd_test_http("GET", url, NULL, NULL, 0, ca_file, &response);
    ck_assert_msg(code == 0, "GET %s failed with curl code %d", url, code);
    json_t *value = json_loads(response.body, 0, NULL);
    ck_assert_msg(value != NULL, "GET %s answered HTTP %ld without JSON", url, response.status);
    crd_test_response_clear(&response);
    free(url);
    return value;
}

long crd_test_graph_control(const struct crd_test_graph *graph, const char *path, json_t *body,
                            json_t **ret_answer)
{
    char *url = NULL;
    ck_assert_int_ge(asprintf(&url, "%s/_fakegraph/%s", graph->base_url, path), 0);
    char *text = json_dumps(body, JSON_COMPACT);
    struct crd_test_response response;
    int code = crd_test_http("POST", url, "application/json", text, strlen(text), graph->ca_file,
                             &response);
    ck_assert_msg(code == 0, "control request %s failed with curl code %d", path, code);
    long status = response.status;
    if (ret_answer != NULL) {
        *ret_answer = json_loads(response.body, 0, NULL);
    }
    crd_test_response_clear(&response);
    free(text);
    free(url);
    return status;
}

void crd_test_graph_stop(struct crd_test_graph *graph)
{
    if (graph->pid > 0) {
        kill(graph->pid, SIGTERM);
        waitpid(graph->pid, NULL, 0);
        graph->pid = -1;
    }
    if (getenv("CRD_KEEP_TEST_DIRS") == NULL) {
        crd_test_remove_tree(graph->dir);
    }
    free(graph->dir);
    free(graph->ca_file);
    free(graph->log_path);
    memset(graph, 0, sizeof(*graph));
}

void crd_test_world_start(struct crd_test_world *world, const char *graph_extra,
                          const char *sections)
{
    memset(world, 0, sizeof(*world));
    crd_test_graph_prepare(&world->graph);
    char *base_keys = crd_test_graph_config(&world->graph);
    char *graph_keys = NULL;
    char *all_sections = NULL;
    world->sink_dir = crd_test_make_tmpdir("crd-sink");
    if (asprintf(&graph_keys, "%s%s", base_keys, graph_extra != NULL ? graph_extra : "") < 0 ||
        asprintf(&world->sink_path, "%s/records.jsonl", world->sink_dir) < 0 ||
        asprintf(&all_sections, "%s\n[sink archive]\ntype = file\npath = %s\n",
                 sections != NULL ? sections : "", world->sink_path) < 0) {
        abort();
    }
    struct crd_test_env_options options = {.graph = graph_keys, .sections = all_sections};
    crd_test_env_create_with(&world->env, &options);
    free(base_keys);
    free(graph_keys);
    free(all_sections);

    crd_test_graph_start(&world->graph, &world->env, NULL);
    if (crd_test_env_start(&world->env) != 0) {
        fprintf(stderr, "callrecd did not become ready\n");
        exit(1);
    }
    if (!crd_test_env_wait_for_subscriptions(&world->env, 1)) {
        fprintf(stderr, "callrecd did not get its subscription\n");
        exit(1);
    }
}

void crd_test_world_stop(struct crd_test_world *world)
{
    (void)crd_test_env_stop(&world->env);
    crd_test_env_destroy(&world->env);
    crd_test_graph_stop(&world->graph);
    if (getenv("CRD_KEEP_TEST_DIRS") == NULL) {
        crd_test_remove_tree(world->sink_dir);
    }
    free(world->sink_dir);
    free(world->sink_path);
    memset(world, 0, sizeof(*world));
}

void crd_test_world_publish(struct crd_test_world *world, const json_t *record,
                            const char *call_id, long long version)
{
    json_t *copy = json_deep_copy(record);
    json_object_set_new(copy, "id", json_string(call_id));
    json_object_set_new(copy, "version", json_integer(version));
    json_t *body = json_pack("{s:o}", "record", copy);
    long status = crd_test_graph_control(&world->graph, "records", body, NULL);
    ck_assert_msg(status >= 200 && status < 300, "publishing %s answered HTTP %ld", call_id,
                  status);
    json_decref(body);
}

long crd_test_world_notify(struct crd_test_world *world, const char *call_id)
{
    char *url = NULL;
    ck_assert_int_ge(asprintf(&url, "%s/notify", world->env.base_url), 0);
    json_t *body = json_pack("{s:s, s:s, s:s, s:s}", "callId", call_id, "changeType", "updated",
                             "notificationUrl", url, "clientState", CRD_TEST_CLIENT_STATE);
    json_t *answer = NULL;
    long status = crd_test_graph_control(&world->graph, "notify", body, &answer);
    ck_assert_msg(status == 200, "fakegraph's notify answered HTTP %ld", status);
    long received = (long)json_integer_value(json_object_get(answer, "status"));
    json_decref(answer);
    json_decref(body);
    free(url);
    return received;
}

static char *delivery_key(const char *call_id, long long version)
{
    char *needle = NULL;
    ck_assert_int_ge(asprintf(&needle, "\"idempotencyKey\":\"%s/%s/%lld\"", CRD_TEST_TENANT_ID,
                              call_id, version),
                     0);
    return needle;
}

size_t crd_test_world_deliveries(const struct crd_test_world *world, const char *call_id,
                                 long long version)
{
    char *needle = delivery_key(call_id, version);
    const char *needles[] = {needle, NULL};
    size_t count = crd_test_count_lines(world->sink_path, needles);
    free(needle);
    return count;
}

bool crd_test_world_wait_delivered(const struct crd_test_world *world, const char *call_id,
                                   long long version, int timeout_ms)
{
    char *needle = delivery_key(call_id, version);
    bool found = crd_test_wait_for_text(world->sink_path, needle, timeout_ms);
    free(needle);
    return found;
}
