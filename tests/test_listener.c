/* SPDX-License-Identifier: MIT */
/*
 * Integration tests of the listener: the real callrecd on a free loopback
 * port with a certificate generated at test time, fakegraph playing Graph's
 * sending side, and the jobs checked in the daemon's own SQLite file.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "daemon_env.h"

#define P2P_CALL_ID "7e633194-32cf-5bee-86e6-f491790b2813"
#define TENANT_ID "2a37c3b7-f073-59a1-b249-42c4e33881c2"

/* One daemon for the whole suite, started in the parent before Check forks each test. */
static struct crd_test_env env;

static void start_daemon(void)
{
    crd_test_env_create(&env, "connection_timeout = 5\nmax_body_size = 1M\n");
    if (crd_test_env_start(&env) != 0) {
        fprintf(stderr, "callrecd did not become ready\n");
        exit(1);
    }
}

static void stop_daemon(void)
{
    crd_test_env_destroy(&env);
}

static char *url_for(const char *path)
{
    char *url = NULL;
    if (asprintf(&url, "%s%s", env.base_url, path) < 0) {
        abort();
    }
    return url;
}

static int run_fakegraph(const char *command, const char *path, const char *option,
                         const char *value, char **ret_output)
{
    char *program = crd_test_build_path("tests/fakegraph");
    char *url = url_for(path);
    char *argv[] = {program, (char *)command, "--url", url, "--cafile", env.ca_file,
                    (char *)option, (char *)value, NULL};
    int status = crd_test_run(argv, ret_output);
    free(url);
    free(program);
    return status;
}

static long post(const char *path, const char *content_type, const char *body, size_t len,
                 struct crd_test_response *ret_response)
{
    char *url = url_for(path);
    struct crd_test_response response;
    int code = crd_test_http("POST", url, content_type, body, len, env.ca_file, &response);
    free(url);
    ck_assert_msg(code == 0, "curl failed with code %d on POST %s", code, path);
    long status = response.status;
    if (ret_response != NULL) {
        *ret_response = response;
    } else {
        crd_test_response_clear(&response);
    }
    return status;
}

static char *read_fixture(const char *name)
{
    char *path = crd_test_fixture_path(name);
    char *body = crd_test_read_file(path, NULL);
    ck_assert_msg(body != NULL, "cannot read fixture %s", path);
    free(path);
    return body;
}

/* Replaces every occurrence of from in text with to; returns a new string. */
static char *replace(const char *text, const char *from, const char *to)
{
    ck_assert_msg(strstr(text, from) != NULL, "'%s' not found in the fixture", from);
    size_t from_len = strlen(from);
    size_t to_len = strlen(to);
    char *out = malloc(strlen(text) * (to_len > from_len ? to_len / from_len + 2 : 1) + 1);
    size_t used = 0;
    for (const char *p = text; *p != '\0';) {
        if (strncmp(p, from, from_len) == 0) {
            memcpy(out + used, to, to_len);
            used += to_len;
            p += from_len;
        } else {
            out[used++] = *p++;
        }
    }
    out[used] = '\0';
    return out;
}

/* ---- validation handshake ------------------------------------------------ */

START_TEST(validation_echoes_token_with_spaces_colon_plus)
{
    static const char *const paths[] = {"/notify", "/lifecycle"};
    const char *token = "Validation: Testing client application reachability for "
                        "subscription Request-Id: 9d4f+a1b:c 2";
    for (size_t i = 0; i < 2; i++) {
        char *output = NULL;
        int status = run_fakegraph("validate", paths[i], "--token", token, &output);
        ck_assert_msg(status == 0, "fakegraph validate on %s exited %d: %s", paths[i], status,
                      output);
        ck_assert_ptr_nonnull(strstr(output, "validate: ok"));
        free(output);
    }
}
END_TEST

START_TEST(validation_decodes_plus_and_percent)
{
    struct crd_test_response response;
    long status = post("/notify?validationToken=a+b%20c%2Bd%3Ae", "text/plain; charset=utf-8",
                       NULL, 0, &response);
    ck_assert_int_eq(status, 200);
    ck_assert_str_eq(response.body, "a b c+d:e");
    ck_assert_ptr_nonnull(strstr(response.content_type, "text/plain"));
    ck_assert_str_eq(response.nosniff, "nosniff");
    crd_test_response_clear(&response);
}
END_TEST

START_TEST(validation_keeps_other_query_parameters)
{
    struct crd_test_response response;
    long status = post("/notify?instance=eu1&validationToken=tok%26en&x=1", "text/plain", NULL,
                       0, &response);
    ck_assert_int_eq(status, 200);
    ck_assert_str_eq(response.body, "tok&en");
    crd_test_response_clear(&response);
}
END_TEST

START_TEST(validation_ignores_request_body)
{
    struct crd_test_response response;
    const char *body = "{\"not\": \"used\"}";
    long status = post("/notify?validationToken=abc", "text/plain", body, strlen(body), &response);
    ck_assert_int_eq(status, 200);
    ck_assert_str_eq(response.body, "abc");
    crd_test_response_clear(&response);
}
END_TEST

START_TEST(validation_rejects_bad_tokens)
{
    char long_token[3000];
    memset(long_token, 'a', sizeof(long_token) - 1);
    long_token[sizeof(long_token) - 1] = '\0';
    char *long_path = NULL;
    if (asprintf(&long_path, "/notify?validationToken=%s", long_token) < 0) {
        abort();
    }

    ck_assert_int_eq(post(long_path, "text/plain", NULL, 0, NULL), 400);
    ck_assert_int_eq(post("/notify?validationToken=%zz", "text/plain", NULL, 0, NULL), 400);
    ck_assert_int_eq(post("/notify?validationToken=abc%2", "text/plain", NULL, 0, NULL), 400);
    ck_assert_int_eq(post("/notify?validationToken=", "text/plain", NULL, 0, NULL), 400);
    ck_assert_int_eq(post("/notify?validationToken=a%00b", "text/plain", NULL, 0, NULL), 400);
    free(long_path);
}
END_TEST

/* ---- notifications ----------------------------------------------------------- */

struct job_row {
    char tenant_id[64];
    char call_id[64];
    long notification_count;
    char state[16];
};

/* Reads every job row ordered by call id; returns the count (at most max). */
static size_t read_jobs(struct job_row *rows, size_t max)
{
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open_v2(env.db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *stmt = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(db,
                                        "SELECT tenant_id, call_id, notification_count, state "
                                        "FROM jobs ORDER BY call_id",
                                        -1, &stmt, NULL),
                     SQLITE_OK);
    size_t n = 0;
    while (sqlite3_step(stmt) == SQLITE_ROW && n < max) {
        snprintf(rows[n].tenant_id, sizeof(rows[n].tenant_id), "%s",
                 (const char *)sqlite3_column_text(stmt, 0));
        snprintf(rows[n].call_id, sizeof(rows[n].call_id), "%s",
                 (const char *)sqlite3_column_text(stmt, 1));
        rows[n].notification_count = (long)sqlite3_column_int64(stmt, 2);
        snprintf(rows[n].state, sizeof(rows[n].state), "%s",
                 (const char *)sqlite3_column_text(stmt, 3));
        n++;
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return n;
}

/* The group call record id that the updated batch names in its second item. */
static char *group_call_id(void)
{
    char *batch = read_fixture("notification-updated-batch.json");
    char *group = NULL;
    /* The second "resourceData" id that differs from the p2p id. */
    for (char *p = strstr(batch, "\"id\": \""); p != NULL; p = strstr(p + 1, "\"id\": \"")) {
        if (strncmp(p + 7, P2P_CALL_ID, 36) != 0) {
            group = strndup(p + 7, 36);
            break;
        }
    }
    free(batch);
    ck_assert_ptr_nonnull(group);
    return group;
}

START_TEST(fixture_notifications_become_jobs)
{
    ck_assert_int_eq(crd_test_env_count_jobs(&env), 0);

    char *path = crd_test_fixture_path("notification-created.json");
    char *output = NULL;
    int status = run_fakegraph("notify", "/notify", "--file", path, &output);
    ck_assert_msg(status == 0, "fakegraph notify exited %d: %s", status, output);
    free(output);
    free(path);

    path = crd_test_fixture_path("notification-updated-batch.json");
    status = run_fakegraph("notify", "/notify", "--file", path, &output);
    ck_assert_msg(status == 0, "fakegraph notify exited %d: %s", status, output);
    free(output);
    free(path);

    /* Acknowledged, but its one item has the wrong clientState: no job. */
    path = crd_test_fixture_path("notification-wrong-clientstate.json");
    status = run_fakegraph("notify", "/notify", "--file", path, &output);
    ck_assert_msg(status == 0, "fakegraph notify exited %d: %s", status, output);
    free(output);
    free(path);

    /* Lifecycle events are acknowledged and logged, but make no jobs. */
    static const char *const lifecycle[] = {"lifecycle-reauthorization-required.json",
                                            "lifecycle-subscription-removed.json",
                                            "lifecycle-missed.json"};
    for (size_t i = 0; i < 3; i++) {
        path = crd_test_fixture_path(lifecycle[i]);
        status = run_fakegraph("notify", "/lifecycle", "--file", path, &output);
        ck_assert_msg(status == 0, "lifecycle %s: fakegraph exited %d: %s", lifecycle[i], status,
                      output);
        free(output);
        free(path);
    }

    char *group = group_call_id();
    struct job_row rows[8];
    size_t n = read_jobs(rows, 8);
    ck_assert_uint_eq(n, 2);

    /* Rows come ordered by call id; find which is which. */
    struct job_row *p2p = strcmp(rows[0].call_id, P2P_CALL_ID) == 0 ? &rows[0] : &rows[1];
    struct job_row *meeting = p2p == &rows[0] ? &rows[1] : &rows[0];
    ck_assert_str_eq(p2p->call_id, P2P_CALL_ID);
    ck_assert_str_eq(p2p->tenant_id, TENANT_ID);
    ck_assert_int_eq(p2p->notification_count, 3);  /* created + two duplicates in the batch */
    /* The fetch workers may be trying the job (Graph is unreachable in this test). */
    ck_assert_msg(strcmp(p2p->state, "pending") == 0 || strcmp(p2p->state, "running") == 0,
                  "unexpected job state '%s'", p2p->state);
    ck_assert_str_eq(meeting->call_id, group);
    ck_assert_str_eq(meeting->tenant_id, TENANT_ID);
    ck_assert_int_eq(meeting->notification_count, 1);
    free(group);
}
END_TEST

/* A request whose response must have `status`, with nothing stored. */
struct bad_input {
    const char *name;
    const char *method;
    const char *path;
    char *body;      /* malloc'ed; NULL for none */
    size_t len;
    long status;
};

/* Number of jobs plus the sum of their notification counts: changes on any insert or coalesce. */
static long job_fingerprint(void)
{
    struct job_row rows[64];
    size_t n = read_jobs(rows, 64);
    long fingerprint = (long)n;
    for (size_t i = 0; i < n; i++) {
        fingerprint += rows[i].notification_count;
    }
    return fingerprint;
}

static void check_bad_input(const struct bad_input *input)
{
    long before = job_fingerprint();
    ck_assert_int_gt(before, 0);
    char *url = url_for(input->path);
    struct crd_test_response response;
    int code = crd_test_http(input->method, url, "application/json", input->body, input->len,
                             env.ca_file, &response);
    free(url);
    ck_assert_msg(code == 0, "%s: curl failed with code %d", input->name, code);
    ck_assert_msg(response.status == input->status, "%s: expected HTTP %ld, got %ld", input->name,
                  input->status, response.status);
    ck_assert_msg(job_fingerprint() == before, "%s: a job was stored or changed", input->name);
    crd_test_response_clear(&response);
}

static struct bad_input make_input(const char *name, const char *method, const char *path,
                                   char *body, long status)
{
    return (struct bad_input){name, method, path, body, body != NULL ? strlen(body) : 0, status};
}

/* A collection of `count` copies of the created item, as one JSON document. */
static char *repeat_items(size_t count)
{
    char *created = read_fixture("notification-created.json");
    char *start = strchr(strchr(created, '[') + 1, '{');
    char *end = strrchr(created, ']');
    while (end > start && end[-1] != '}') {
        end--;
    }
    size_t item_len = (size_t)(end - start);
    char *body = malloc(count * (item_len + 1) + 32);
    size_t used = (size_t)sprintf(body, "{\"value\":[");
    for (size_t i = 0; i < count; i++) {
        memcpy(body + used, start, item_len);
        used += item_len;
        body[used++] = i + 1 < count ? ',' : ']';
    }
    body[used++] = '}';
    body[used] = '\0';
    free(created);
    return body;
}

START_TEST(bad_inputs_get_status_and_store_nothing)
{
    char *created = read_fixture("notification-created.json");
    char *truncated = strndup(created, strlen(created) / 2);

    char *huge = malloc(10 * 1024 * 1024 + 1);
    memset(huge, ' ', 10 * 1024 * 1024);
    huge[0] = '{';
    huge[10 * 1024 * 1024] = '\0';

    struct bad_input inputs[] = {
        make_input("malformed JSON", "POST", "/notify", strdup("{\"value\": [}"), 400),
        make_input("truncated JSON", "POST", "/notify", truncated, 400),
        make_input("empty value", "POST", "/notify", strdup("{\"value\": []}"), 400),
        make_input("missing value", "POST", "/notify", strdup("{\"values\": [{}]}"), 400),
        make_input("value not an array", "POST", "/notify", strdup("{\"value\": {}}"), 400),
        make_input("top level array", "POST", "/notify", strdup("[{\"value\": []}]"), 400),
        make_input("empty body", "POST", "/notify", strdup(""), 400),
        make_input("10 MB body", "POST", "/notify", huge, 413),
        make_input("10,000 items", "POST", "/notify", repeat_items(10000), 413),
        make_input("non-GUID id", "POST", "/notify",
                   replace(created, P2P_CALL_ID, "not-a-guid"), 202),
        make_input("dot-dot in resource", "POST", "/notify",
                   replace(created, "communications/callRecords/" P2P_CALL_ID,
                           "communications/callRecords/../subscriptions/" P2P_CALL_ID), 202),
        make_input("missing clientState", "POST", "/notify",
                   replace(created, "\"clientState\": \"cr-4b8e1f0c9d2a47e6b3c5a7d9e1f20384\",",
                           ""), 202),
        make_input("null clientState", "POST", "/notify",
                   replace(created, "\"cr-4b8e1f0c9d2a47e6b3c5a7d9e1f20384\"", "null"), 202),
        make_input("wrong clientState", "POST", "/notify",
                   replace(created, "cr-4b8e1f0c9d2a47e6b3c5a7d9e1f20384", "cr-forged"), 202),
        make_input("GET on notify", "GET", "/notify", NULL, 405),
        make_input("PUT on notify", "PUT", "/notify", strdup("{}"), 405),
        make_input("DELETE on lifecycle", "DELETE", "/lifecycle", NULL, 405),
        make_input("POST on healthz", "POST", "/healthz", strdup("{}"), 405),
        make_input("POST on metrics", "POST", "/metrics", strdup("{}"), 405),
        make_input("unknown path", "POST", "/notify/../etc", strdup("{}"), 404),
        make_input("unknown path 2", "POST", "/callRecords", strdup("{}"), 404),
    };
    size_t n_inputs = sizeof(inputs) / sizeof(inputs[0]);

    /* The fixture test ran first, so jobs exist and a coalesced duplicate would show too. */
    for (size_t i = 0; i < n_inputs; i++) {
        check_bad_input(&inputs[i]);
        free(inputs[i].body);
    }
    free(created);
}
END_TEST

START_TEST(chunked_body_over_limit_gets_413)
{
    /* No Content-Length, so the listener can only notice the size while reading. */
    size_t len = 1024 * 1024 + 4096;
    char *body = malloc(len + 1);
    memset(body, ' ', len);
    body[0] = '{';
    body[len] = '\0';
    long before = job_fingerprint();

    char *url = url_for("/notify");
    struct crd_test_response response;
    int code = crd_test_http_with_header("POST", url, "application/json",
                                         "Transfer-Encoding: chunked", body, len, env.ca_file,
                                         &response);
    ck_assert_int_eq(code, 0);
    ck_assert_int_eq(response.status, 413);
    ck_assert_int_eq(job_fingerprint(), before);
    crd_test_response_clear(&response);
    free(url);
    free(body);
}
END_TEST

START_TEST(store_failure_answers_503)
{
    char *created = read_fixture("notification-created.json");
    char *fresh = replace(created, P2P_CALL_ID, "0d7f4c1e-9a2b-4c3d-8e5f-6a7b8c9d0e1f");
    long before = job_fingerprint();

    /* Another writer holds the database, so the daemon's transaction cannot commit. */
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open(env.db_path, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
    ck_assert_int_eq(post("/notify", "application/json", fresh, strlen(fresh), NULL), 503);
    ck_assert_int_eq(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    ck_assert_int_eq(job_fingerprint(), before);

    /* Graph retries, and the retry is stored. */
    ck_assert_int_eq(post("/notify", "application/json", fresh, strlen(fresh), NULL), 202);
    ck_assert_int_eq(job_fingerprint(), before + 2);
    free(fresh);
    free(created);
}
END_TEST

START_TEST(healthz_answers_ok)
{
    char *url = url_for("/healthz");
    struct crd_test_response response;
    ck_assert_int_eq(crd_test_http("GET", url, NULL, NULL, 0, env.ca_file, &response), 0);
    ck_assert_int_eq(response.status, 200);
    ck_assert_ptr_nonnull(strstr(response.body, "\"ok\""));
    crd_test_response_clear(&response);
    free(url);
}
END_TEST

START_TEST(metrics_in_prometheus_format)
{
    char *url = url_for("/metrics");
    struct crd_test_response response;
    ck_assert_int_eq(crd_test_http("GET", url, NULL, NULL, 0, env.ca_file, &response), 0);
    ck_assert_int_eq(response.status, 200);
    ck_assert_ptr_nonnull(strstr(response.content_type, "text/plain; version=0.0.4"));
    ck_assert_ptr_nonnull(strstr(response.body, "# TYPE callrecd_http_requests_total counter\n"));
    /* The fixture test stored four accepted items (created, and three in the batch). */
    const char *accepted = strstr(response.body, "callrecd_notifications_total{outcome=\"accepted\"} ");
    ck_assert_ptr_nonnull(accepted);
    ck_assert_int_ge(strtol(accepted + strlen("callrecd_notifications_total{outcome=\"accepted\"} "),
                            NULL, 10),
                     4);
    ck_assert_ptr_nonnull(
        strstr(response.body, "callrecd_notifications_total{outcome=\"client_state_mismatch\"}"));
    crd_test_response_clear(&response);
    free(url);
}
END_TEST

START_TEST(plain_http_is_refused_on_tls_port)
{
    char *url = NULL;
    if (asprintf(&url, "http://127.0.0.1:%u/healthz", env.port) < 0) {
        abort();
    }
    struct crd_test_response response;
    (void)crd_test_http("GET", url, NULL, NULL, 0, NULL, &response);
    ck_assert_int_ne(response.status, 200);
    crd_test_response_clear(&response);
    free(url);
}
END_TEST

START_TEST(log_has_no_secrets)
{
    char *log = crd_test_read_file(env.log_path, NULL);
    ck_assert_ptr_nonnull(log);
    ck_assert_ptr_nonnull(strstr(log, "listening on"));
    ck_assert_ptr_null(strstr(log, CRD_TEST_CLIENT_SECRET));
    ck_assert_ptr_null(strstr(log, CRD_TEST_CLIENT_STATE));
    ck_assert_ptr_null(strstr(log, "PRIVATE KEY"));
    free(log);
}
END_TEST

START_TEST(sigterm_stops_cleanly)
{
    struct crd_test_env own;
    crd_test_env_create(&own, NULL);
    ck_assert_int_eq(crd_test_env_start(&own), 0);
    ck_assert_int_eq(crd_test_env_stop(&own), 0);
    char *log = crd_test_read_file(own.log_path, NULL);
    ck_assert_ptr_nonnull(strstr(log, "stopped cleanly"));
    /* In a sanitizer build, leaks and undefined behaviour are reported here at exit. */
    ck_assert_ptr_null(strstr(log, "Sanitizer"));
    ck_assert_ptr_null(strstr(log, "runtime error"));
    free(log);
    crd_test_env_destroy(&own);
}
END_TEST

START_TEST(invalid_config_fails_to_start)
{
    struct crd_test_env own;
    crd_test_env_create(&own, "port_number = 1\n");
    struct crd_test_daemon daemon;
    ck_assert_int_eq(crd_test_daemon_start(own.config_path, own.log_path, 15000, &daemon),
                     -ECHILD);
    char *log = crd_test_read_file(own.log_path, NULL);
    ck_assert_ptr_nonnull(strstr(log, "port_number"));
    free(log);
    crd_test_daemon_stop(&daemon, 1000);
    crd_test_env_destroy(&own);
}
END_TEST

/* Runs `callrecd --check-config -c path` and returns its exit status and output. */
static int check_config(const char *path, char **ret_output)
{
    char *program = crd_test_build_path("daemon/callrecd");
    char *argv[] = {program, "--check-config", "-c", (char *)path, NULL};
    int status = crd_test_run_with_stderr(argv, ret_output);
    free(program);
    return status;
}

START_TEST(check_config_accepts_example)
{
    /* The example file takes its secrets from systemd credentials. */
    char *dir = crd_test_make_tmpdir("crd-credentials");
    char *tls_dir = NULL;
    if (asprintf(&tls_dir, "%s/tls", dir) < 0 || mkdir(tls_dir, 0700) < 0) {
        abort();
    }
    char *testcert = crd_test_build_path("tests/testcert");
    char *argv[] = {testcert, tls_dir, NULL};
    ck_assert_int_eq(crd_test_run(argv, NULL), 0);
    char *from = NULL;
    char *to = NULL;
    if (asprintf(&from, "%s/server.pem", tls_dir) < 0 ||
        asprintf(&to, "%s/tls_certificate", dir) < 0 || rename(from, to) < 0) {
        abort();
    }
    free(from);
    free(to);
    if (asprintf(&from, "%s/server.key", tls_dir) < 0 || asprintf(&to, "%s/tls_key", dir) < 0 ||
        rename(from, to) < 0) {
        abort();
    }
    free(from);
    free(to);
    free(crd_test_write_file(dir, "client_secret", "example-secret\n", 0600));
    setenv("CREDENTIALS_DIRECTORY", dir, 1);

    char *example = NULL;
    if (asprintf(&example, "%s/config/callrecd.conf", crd_test_srcdir()) < 0) {
        abort();
    }
    char *output = NULL;
    int status = check_config(example, &output);
    ck_assert_msg(status == 0, "--check-config exited %d: %s", status, output);
    ck_assert_ptr_nonnull(strstr(output, "test is successful"));
    ck_assert_ptr_null(strstr(output, "example-secret"));

    free(output);
    free(example);
    free(testcert);
    free(tls_dir);
    crd_test_remove_tree(dir);
    free(dir);
}
END_TEST

START_TEST(check_config_reports_every_error)
{
    char *dir = crd_test_make_tmpdir("crd-config");
    char *path = crd_test_write_file(dir, "bad.conf",
                                     "[graph]\n"
                                     "tenant = contoso.onmicrosoft.com\n"
                                     "clientid = 0b7f0d3a-5a55-4e4e-9d7d-3f2c1b0a9e8d\n"
                                     "[listener]\n"
                                     "port = 99999\n",
                                     0600);
    char *output = NULL;
    int status = check_config(path, &output);
    ck_assert_int_eq(status, 1);
    char *line3 = NULL;
    char *line5 = NULL;
    if (asprintf(&line3, "%s:3:", path) < 0 || asprintf(&line5, "%s:5:", path) < 0) {
        abort();
    }
    ck_assert_msg(strstr(output, line3) != NULL, "no error on line 3 in: %s", output);
    ck_assert_ptr_nonnull(strstr(output, "client_id"));
    ck_assert_msg(strstr(output, line5) != NULL, "no error on line 5 in: %s", output);
    ck_assert_ptr_nonnull(strstr(output, "test failed"));

    free(line3);
    free(line5);
    free(output);
    free(path);
    crd_test_remove_tree(dir);
    free(dir);
}
END_TEST

static Suite *listener_suite(void)
{
    Suite *suite = suite_create("listener");

    TCase *running = tcase_create("running daemon");
    tcase_add_unchecked_fixture(running, start_daemon, stop_daemon);
    tcase_set_timeout(running, 120);
    tcase_add_test(running, validation_echoes_token_with_spaces_colon_plus);
    tcase_add_test(running, validation_decodes_plus_and_percent);
    tcase_add_test(running, validation_keeps_other_query_parameters);
    tcase_add_test(running, validation_ignores_request_body);
    tcase_add_test(running, validation_rejects_bad_tokens);
    tcase_add_test(running, fixture_notifications_become_jobs);
    tcase_add_test(running, bad_inputs_get_status_and_store_nothing);
    tcase_add_test(running, chunked_body_over_limit_gets_413);
    tcase_add_test(running, store_failure_answers_503);
    tcase_add_test(running, healthz_answers_ok);
    tcase_add_test(running, metrics_in_prometheus_format);
    tcase_add_test(running, plain_http_is_refused_on_tls_port);
    tcase_add_test(running, log_has_no_secrets);
    suite_add_tcase(suite, running);

    TCase *lifecycle = tcase_create("process lifecycle");
    tcase_set_timeout(lifecycle, 60);
    tcase_add_test(lifecycle, sigterm_stops_cleanly);
    tcase_add_test(lifecycle, invalid_config_fails_to_start);
    tcase_add_test(lifecycle, check_config_accepts_example);
    tcase_add_test(lifecycle, check_config_reports_every_error);
    suite_add_tcase(suite, lifecycle);
    return suite;
}

int main(void)
{
    SRunner *runner = srunner_create(listener_suite());
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
