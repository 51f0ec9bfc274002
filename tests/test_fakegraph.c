/* SPDX-License-Identifier: MIT */
/*
 * Tests of "fakegraph serve" and its client commands: the real fakegraph
 * binary on a free loopback port with a certificate generated at test time,
 * driven over HTTPS with libcurl. A small libmicrohttpd HTTPS server in the
 * test plays the daemon's listener for the validation handshakes and the
 * notifications that fakegraph sends. The tenant tests start a second
 * fakegraph that serves two tenants.
 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "harness.h"
#include "util.h"

#define TENANT_ID "2a37c3b7-f073-59a1-b249-42c4e33881c2"
#define OTHER_TENANT_ID "6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
#define UNSERVED_TENANT_ID "99999999-2222-4333-8444-555555555555"
#define CLIENT_ID "eb5b5317-1c3f-591e-bda6-b36a341728fd"
#define CLIENT_SECRET "fakegraph test secret+/="
#define CLIENT_STATE "cr-4b8e1f0c9d2a47e6b3c5a7d9e1f20384"
#define P2P_CALL_ID "7e633194-32cf-5bee-86e6-f491790b2813"
#define LARGE_CALL_ID "5c206c87-289f-5842-ab94-50a686cb3f92"
#define UNKNOWN_CALL_ID "00000000-1111-4222-8333-444444444444"
#define EXPAND_ENCODED "%24expand=sessions(%24expand%3Dsegments)"
#define EXPAND_PLAIN "$expand=sessions($expand=segments)"

#define READY_TIMEOUT_MS 10000
#define CONDITION_TIMEOUT_MS 10000

/* One fakegraph process. */
struct fakegraph_process {
    pid_t pid;
    char *dir;          /* ready file, log and secret */
    char *base_url;     /* https://127.0.0.1:PORT */
};

/* Started in the parent before Check forks each test. */
static struct fakegraph_process server;
static char *cert_dir;
static char *ca_file;

/* ---- helpers: processes and files --------------------------------------------------- */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits up to 20 ms without sleeping through an event: the step of the polling loops below. */
static void poll_step(void)
{
    struct pollfd none = {.fd = -1};
    (void)poll(&none, 0, 20);
}

static char *format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *format(const char *fmt, ...)
{
    char *text = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (len < 0) {
        abort();
    }
    return text;
}

/*
 * Starts "fakegraph serve" on port 0 with extra arguments (NULL-terminated)
 * and waits for its ready file. Returns 0, or -ETIMEDOUT / -ECHILD.
 */
static int fakegraph_start(struct fakegraph_process *process, const char *const *extra)
{
    *process = (struct fakegraph_process){.pid = -1};
    process->dir = crd_test_make_tmpdir("fakegraph");
    char *secret = crd_test_write_file(process->dir, "secret", CLIENT_SECRET "\n", 0600);
    char *ready = format("%s/ready", process->dir);
    char *log = format("%s/log", process->dir);
    char *cert = format("%s/server.pem", cert_dir);
    char *key = format("%s/server.key", cert_dir);
    char *program = crd_test_build_path("tests/fakegraph");

    char *argv[40] = {program, "serve", "--listen", "127.0.0.1:0", "--cert", cert, "--key", key,
                      "--cafile", ca_file, "--tenant", TENANT_ID, "--client-id", CLIENT_ID,
                      "--client-secret-file", secret, "--ready-file", ready, "--log", log};
    size_t argc = 20;
    for (size_t i = 0; extra != NULL && extra[i] != NULL && argc < 39; i++) {
        argv[argc++] = (char *)extra[i];
    }
    argv[argc] = NULL;

    process->pid = fork();
    if (process->pid < 0) {
        abort();
    }
    if (process->pid == 0) {
        execv(program, argv);
        fprintf(stderr, "cannot run '%s': %s\n", program, strerror(errno));
        _exit(127);
    }

    int r = -ETIMEDOUT;
    long long deadline = now_ms() + READY_TIMEOUT_MS;
    while (now_ms() < deadline) {
        char *port = crd_test_read_file(ready, NULL);
        if (port != NULL) {
            process->base_url = format("https://127.0.0.1:%u", (unsigned)strtoul(port, NULL, 10));
            free(port);
            r = 0;
            break;
        }
        if (waitpid(process->pid, NULL, WNOHANG) == process->pid) {
            process->pid = -1;
            r = -ECHILD;
            break;
        }
        poll_step();
    }
    free(program);
    free(key);
    free(cert);
    free(log);
    free(ready);
    free(secret);
    return r;
}

/* Sends SIGTERM and returns the exit status, or -1 when it had to be killed. */
static int fakegraph_stop(struct fakegraph_process *process)
{
    int result = -1;
    if (process->pid > 0) {
        kill(process->pid, SIGTERM);
        long long deadline = now_ms() + READY_TIMEOUT_MS;
        int status = 0;
        while (now_ms() < deadline) {
            if (waitpid(process->pid, &status, WNOHANG) == process->pid) {
                result = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                break;
            }
            poll_step();
        }
        if (result == -1) {
            kill(process->pid, SIGKILL);
            waitpid(process->pid, NULL, 0);
        }
    }
    crd_test_remove_tree(process->dir);
    free(process->dir);
    free(process->base_url);
    *process = (struct fakegraph_process){.pid = -1};
    return result;
}

/* Runs the fakegraph binary with args (NULL-terminated) and captures stdout and stderr. */
static int run_fakegraph(const char *const *args, char **ret_output)
{
    char *argv[48] = {crd_test_build_path("tests/fakegraph")};
    size_t argc = 1;
    for (size_t i = 0; args[i] != NULL && argc < 47; i++) {
        argv[argc++] = (char *)args[i];
    }
    argv[argc] = NULL;
    int status = crd_test_run_with_stderr(argv, ret_output);
    free(argv[0]);
    return status;
}

/* ---- helpers: HTTP ------------------------------------------------------------------ */

struct http_result {
    int curl_code;           /* CURLE_OK, or why no complete response arrived */
    long status;
    char *body;
    size_t body_len;
    char retry_after[32];    /* "" when absent */
    char content_type[128];
    double seconds;
};

static size_t collect_body(char *data, size_t size, size_t count, void *user)
{
    struct http_result *result = user;
    size_t n = size * count;
    result->body = realloc(result->body, result->body_len + n + 1);
    memcpy(result->body + result->body_len, data, n);
    result->body_len += n;
    result->body[result->body_len] = '\0';
    return n;
}

static void copy_header(const char *line, size_t len, const char *name, char *out, size_t size)
{
    size_t name_len = strlen(name);
    if (len > name_len && strncasecmp(line, name, name_len) == 0) {
        size_t value_len = len - name_len;
        while (value_len > 0 && (line[name_len + value_len - 1] == '\r' ||
                                 line[name_len + value_len - 1] == '\n')) {
            value_len--;
        }
        snprintf(out, size, "%.*s", (int)value_len, line + name_len);
    }
}

static size_t collect_header(char *data, size_t size, size_t count, void *user)
{
    struct http_result *result = user;
    size_t n = size * count;
    copy_header(data, n, "Retry-After: ", result->retry_after, sizeof(result->retry_after));
    copy_header(data, n, "Content-Type: ", result->content_type, sizeof(result->content_type));
    return n;
}

/* Sends one request; headers is NULL or NULL-terminated. */
static void http(const char *method, const char *url, const char *const *headers,
                 const char *body, struct http_result *result)
{
    *result = (struct http_result){.body = calloc(1, 1)};
    CURL *curl = curl_easy_init();
    struct curl_slist *list = curl_slist_append(NULL, "Expect:");
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
        list = curl_slist_append(list, headers[i]);
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
    if (body != NULL) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    }
    curl_easy_setopt(curl, CURLOPT_CAINFO, ca_file);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 20L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, result);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, collect_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, result);
    result->curl_code = (int)curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &result->status);
    curl_easy_getinfo(curl, CURLINFO_TOTAL_TIME, &result->seconds);
    curl_slist_free_all(list);
    curl_easy_cleanup(curl);
}

static void http_result_clear(struct http_result *result)
{
    free(result->body);
    *result = (struct http_result){0};
}

static json_t *parse_json(const struct http_result *result)
{
    json_t *value = json_loadb(result->body, result->body_len, 0, NULL);
    ck_assert_msg(value != NULL, "response is not JSON: %.300s", result->body);
    return value;
}

static const char *json_path_string(const json_t *root, const char *first, const char *second,
                                    const char *third)
{
    const json_t *value = json_object_get(root, first);
    if (second != NULL) {
        value = json_object_get(value, second);
    }
    if (third != NULL) {
        value = json_object_get(value, third);
    }
    return json_string_value(value);
}

static char *url_at(const struct fakegraph_process *process, const char *path)
{
    return format("%s%s", process->base_url, path);
}

static char *token_form(const struct fakegraph_process *process, const char *client_id,
                        const char *secret, const char *grant_type, const char *scope)
{
    char *escaped_secret = curl_easy_escape(NULL, secret, 0);
    char *default_scope = format("%s/.default", process->base_url);
    char *escaped_scope = curl_easy_escape(NULL, scope != NULL ? scope : default_scope, 0);
    char *form = format("client_id=%s&client_secret=%s&grant_type=%s&scope=%s", client_id,
                        escaped_secret, grant_type, escaped_scope);
    curl_free(escaped_scope);
    curl_free(escaped_secret);
    free(default_scope);
    return form;
}

static void request_token(const struct fakegraph_process *process, const char *tenant,
                          const char *form, struct http_result *result)
{
    char *url = format("%s/%s/oauth2/v2.0/token", process->base_url, tenant);
    const char *headers[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
    http("POST", url, headers, form, result);
    free(url);
}

/* Returns "Authorization: Bearer <token>" for a token of tenant issued by process. */
static char *bearer_header_for(const struct fakegraph_process *process, const char *tenant)
{
    char *form = token_form(process, CLIENT_ID, CLIENT_SECRET, "client_credentials", NULL);
    struct http_result result;
    request_token(process, tenant, form, &result);
    ck_assert_int_eq(result.status, 200);
    json_t *body = parse_json(&result);
    const char *token = json_string_value(json_object_get(body, "access_token"));
    ck_assert_ptr_nonnull(token);
    char *header = format("Authorization: Bearer %s", token);
    json_decref(body);
    http_result_clear(&result);
    free(form);
    return header;
}

/* Returns "Authorization: Bearer <token>" for a token of the default tenant. */
static char *bearer_header(const struct fakegraph_process *process)
{
    return bearer_header_for(process, TENANT_ID);
}

/* GETs a Graph URL (absolute, or a path on the shared server) with a token. */
static void graph_get(const char *url_or_path, const char *extra_header,
                      struct http_result *result)
{
    char *authorization = bearer_header(&server);
    char *url = url_or_path[0] == '/' ? url_at(&server, url_or_path) : strdup(url_or_path);
    const char *headers[] = {authorization, extra_header, NULL};
    http("GET", url, headers, NULL, result);
    free(url);
    free(authorization);
}

/* Sends a Graph request with a JSON body and a token. */
static void graph_send(const char *method, const char *path, const char *body,
                       struct http_result *result)
{
    char *authorization = bearer_header(&server);
    char *url = url_at(&server, path);
    const char *headers[] = {authorization, "Content-Type: application/json", NULL};
    http(method, url, headers, body, result);
    free(url);
    free(authorization);
}

/* Sends a control API request to process. Returns the status and, when wanted, the result. */
static long control_on(const struct fakegraph_process *process, const char *method,
                       const char *path, const char *body, struct http_result *ret_result)
{
    char *url = url_at(process, path);
    const char *headers[] = {"Content-Type: application/json", NULL};
    struct http_result result;
    http(method, url, headers, body, &result);
    free(url);
    long status = result.status;
    if (ret_result != NULL) {
        *ret_result = result;
    } else {
        http_result_clear(&result);
    }
    return status;
}

static long control(const char *method, const char *path, const char *body,
                    struct http_result *ret_result)
{
    return control_on(&server, method, path, body, ret_result);
}

static void reset_server(void)
{
    ck_assert_int_eq(control("POST", "/_fakegraph/reset", NULL, NULL), 204);
}

static json_t *request_log(void)
{
    struct http_result result;
    ck_assert_int_eq(control("GET", "/_fakegraph/requests", NULL, &result), 200);
    json_t *log = parse_json(&result);
    http_result_clear(&result);
    return log;
}

/* Counts the request log entries for path (a prefix) with the given fault ("" for any). */
static size_t count_logged(const json_t *log, const char *path_prefix, const char *fault)
{
    size_t count = 0;
    size_t index;
    const json_t *entry;
    json_array_foreach(log, index, entry) {
        const char *path = json_string_value(json_object_get(entry, "path"));
        const char *entry_fault = json_string_value(json_object_get(entry, "fault"));
        if (path != NULL && strncmp(path, path_prefix, strlen(path_prefix)) == 0 &&
            (fault[0] == '\0' || (entry_fault != NULL && strcmp(entry_fault, fault) == 0))) {
            count++;
        }
    }
    return count;
}

/*
 * Publishes fixture files through "fakegraph publish" to process, in tenant
 * unless it is NULL. args are the command's extra arguments.
 */
static void publish_on(const struct fakegraph_process *process, const char *tenant,
                       const char *const *args)
{
    const char *argv[32] = {"publish", "--control", process->base_url, "--cafile", ca_file};
    size_t argc = 5;
    if (tenant != NULL) {
        argv[argc++] = "--tenant";
        argv[argc++] = tenant;
    }
    char *paths[24] = {0};
    size_t path_count = 0;
    for (size_t i = 0; args[i] != NULL && argc < 30; i++) {
        const char *arg = args[i];
        if (strstr(arg, ".json") != NULL) {
            paths[path_count] = crd_test_fixture_path(arg);
            arg = paths[path_count++];
        }
        argv[argc++] = arg;
    }
    argv[argc] = NULL;
    char *output = NULL;
    int status = run_fakegraph(argv, &output);
    ck_assert_msg(status == 0, "fakegraph publish exited %d: %s", status, output);
    ck_assert_ptr_nonnull(strstr(output, "publish: "));
    free(output);
    for (size_t i = 0; i < path_count; i++) {
        free(paths[i]);
    }
}

/* Publishes fixture files to the shared server's default tenant. */
static void publish(const char *const *args)
{
    publish_on(&server, NULL, args);
}

/* ---- the validation responder ---------------------------------------------------------- */

enum responder_mode {
    RESPONDER_ECHO,          /* echoes validation tokens, 202 for notifications */
    RESPONDER_WRONG_ECHO,    /* responds to validation requests with another body */
    RESPONDER_FAIL,          /* 500 for notifications */
};

/* A small HTTPS server in the test that plays callrecd's listener. */
struct responder {
    struct MHD_Daemon *daemon;
    unsigned port;
    enum responder_mode mode;
    pthread_mutex_t lock;           /* protects the fields below */
    unsigned validations;
    char last_token[512];
    char last_validation_content_type[128];
    unsigned notifications;
    char *last_notification;
};

struct responder_request {
    char *body;
    size_t len;
};

static enum MHD_Result queue_text_response(struct MHD_Connection *connection, unsigned status,
                                           const char *content_type, const char *body)
{
    struct MHD_Response *response =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    enum MHD_Result result = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return result;
}

static enum MHD_Result on_responder_request(void *cls, struct MHD_Connection *connection,
                                            const char *url, const char *method,
                                            const char *version, const char *upload_data,
                                            size_t *upload_data_size, void **req_cls)
{
    struct responder *responder = cls;
    struct responder_request *request = *req_cls;
    if (request == NULL) {
        *req_cls = calloc(1, sizeof(*request));
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        request->body = realloc(request->body, request->len + *upload_data_size + 1);
        memcpy(request->body + request->len, upload_data, *upload_data_size);
        request->len += *upload_data_size;
        request->body[request->len] = '\0';
        *upload_data_size = 0;
        return MHD_YES;
    }

    const char *token =
        MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND, "validationToken");
    pthread_mutex_lock(&responder->lock);
    enum responder_mode mode = responder->mode;
    if (token != NULL) {
        const char *content_type = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                                               MHD_HTTP_HEADER_CONTENT_TYPE);
        responder->validations++;
        snprintf(responder->last_token, sizeof(responder->last_token), "%s", token);
        snprintf(responder->last_validation_content_type,
                 sizeof(responder->last_validation_content_type), "%s",
                 content_type != NULL ? content_type : "");
    } else {
        responder->notifications++;
        free(responder->last_notification);
        responder->last_notification = strdup(request->body != NULL ? request->body : "");
    }
    pthread_mutex_unlock(&responder->lock);

    if (token != NULL) {
        return queue_text_response(connection, 200, "text/plain",
                      mode == RESPONDER_WRONG_ECHO ? "not the token" : token);
    }
    return queue_text_response(connection, mode == RESPONDER_FAIL ? 500 : 202, "text/plain", "");
}

static void on_responder_completed(void *cls, struct MHD_Connection *connection,
                                   void **req_cls, enum MHD_RequestTerminationCode code)
{
    struct responder_request *request = *req_cls;
    if (request != NULL) {
        free(request->body);
        free(request);
        *req_cls = NULL;
    }
}

static void responder_start(struct responder *responder, enum responder_mode mode)
{
    *responder = (struct responder){.mode = mode};
    pthread_mutex_init(&responder->lock, NULL);
    char *cert_path = format("%s/server.pem", cert_dir);
    char *key_path = format("%s/server.key", cert_dir);
    char *cert = crd_test_read_file(cert_path, NULL);
    char *key = crd_test_read_file(key_path, NULL);
    ck_assert_ptr_nonnull(cert);
    ck_assert_ptr_nonnull(key);

    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = 0};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    responder->daemon = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
            MHD_USE_TLS,
        0, NULL, NULL, on_responder_request, responder, MHD_OPTION_SOCK_ADDR, &address,
        MHD_OPTION_HTTPS_MEM_CERT, cert, MHD_OPTION_HTTPS_MEM_KEY, key,
        MHD_OPTION_NOTIFY_COMPLETED, on_responder_completed, responder, MHD_OPTION_END);
    ck_assert_ptr_nonnull(responder->daemon);
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(responder->daemon, MHD_DAEMON_INFO_BIND_PORT);
    responder->port = info->port;
    free(key);
    free(cert);
    free(key_path);
    free(cert_path);
}

static void responder_stop(struct responder *responder)
{
    MHD_stop_daemon(responder->daemon);
    free(responder->last_notification);
    pthread_mutex_destroy(&responder->lock);
}

static char *responder_url(const struct responder *responder, const char *path)
{
    return format("https://127.0.0.1:%u%s", responder->port, path);
}

/* Deletes every subscription, so that a test starts without conflicts. */
static void delete_all_subscriptions(void)
{
    struct http_result result;
    graph_get("/v1.0/subscriptions", NULL, &result);
    ck_assert_int_eq(result.status, 200);
    json_t *list = parse_json(&result);
    size_t index;
    json_t *item;
    json_array_foreach(json_object_get(list, "value"), index, item) {
        char *path = format("/v1.0/subscriptions/%s",
                            json_string_value(json_object_get(item, "id")));
        struct http_result deleted;
        graph_send("DELETE", path, NULL, &deleted);
        ck_assert_int_eq(deleted.status, 204);
        http_result_clear(&deleted);
        free(path);
    }
    json_decref(list);
    http_result_clear(&result);
}

static char *subscription_body(const char *notification_url, const char *lifecycle_url,
                               const char *resource, long long minutes_ahead)
{
    char expiry[40];
    crd_time_format_iso8601(crd_time_now_ms() + minutes_ahead * 60 * 1000, expiry,
                            sizeof(expiry));
    json_t *body = json_pack("{s:s, s:s, s:s*, s:s, s:s, s:s, s:s}", "changeType",
                             "created,updated", "notificationUrl", notification_url,
                             "lifecycleNotificationUrl", lifecycle_url, "resource", resource,
                             "expirationDateTime", expiry, "clientState", CLIENT_STATE,
                             "latestSupportedTlsVersion", "v1_2");
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return text;
}

/* ---- tests: tokens ------------------------------------------------------------------- */

START_TEST(token_issued_for_right_secret)
{
    char *form = token_form(&server, CLIENT_ID, CLIENT_SECRET, "client_credentials", NULL);
    struct http_result result;
    request_token(&server, TENANT_ID, form, &result);
    ck_assert_int_eq(result.status, 200);
    json_t *body = parse_json(&result);
    ck_assert_str_eq(json_string_value(json_object_get(body, "token_type")), "Bearer");
    ck_assert_int_eq(json_integer_value(json_object_get(body, "expires_in")), 3599);
    ck_assert_int_eq(json_integer_value(json_object_get(body, "ext_expires_in")), 3599);
    const char *token = json_string_value(json_object_get(body, "access_token"));
    ck_assert_ptr_nonnull(token);
    ck_assert_uint_ge(strlen(token), 32);
    json_decref(body);
    http_result_clear(&result);
    free(form);
}
END_TEST

START_TEST(token_rejected_for_wrong_secret)
{
    char *form = token_form(&server, CLIENT_ID, "wrong secret", "client_credentials", NULL);
    struct http_result result;
    request_token(&server, TENANT_ID, form, &result);
    ck_assert_int_eq(result.status, 401);
    json_t *body = parse_json(&result);
    ck_assert_str_eq(json_string_value(json_object_get(body, "error")), "invalid_client");
    const char *description = json_string_value(json_object_get(body, "error_description"));
    ck_assert_ptr_nonnull(description);
    ck_assert_ptr_nonnull(strstr(description, "AADSTS7000215: Invalid client secret provided."));
    ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(body, "error_codes"), 0)),
                     7000215);
    ck_assert_ptr_nonnull(json_string_value(json_object_get(body, "timestamp")));
    const char *trace_id = json_string_value(json_object_get(body, "trace_id"));
    ck_assert_ptr_nonnull(trace_id);
    ck_assert(crd_guid_is_valid(trace_id, strlen(trace_id)));
    ck_assert_ptr_nonnull(json_string_value(json_object_get(body, "correlation_id")));
    ck_assert_ptr_null(strstr(result.body, "wrong secret"));
    json_decref(body);
    http_result_clear(&result);
    free(form);
}
END_TEST

/* Each case breaks one field of an otherwise valid token request. */
static const struct {
    const char *tenant;
    const char *client_id;
    const char *grant_type;
    const char *scope;         /* NULL: the right one */
    long status;
    const char *error;
} bad_token_requests[] = {
    {TENANT_ID, "11111111-2222-4333-8444-555555555555", "client_credentials", NULL, 400,
     "unauthorized_client"},
    {"99999999-2222-4333-8444-555555555555", CLIENT_ID, "client_credentials", NULL, 400,
     "invalid_request"},
    {TENANT_ID, CLIENT_ID, "password", NULL, 400, "unsupported_grant_type"},
    {TENANT_ID, CLIENT_ID, "client_credentials", "https://graph.microsoft.com/.default", 400,
     "invalid_resource"},
    {TENANT_ID, CLIENT_ID, "client_credentials", "User.Read", 400, "invalid_scope"},
};

START_TEST(token_rejected_for_wrong_field)
{
    char *form = token_form(&server, bad_token_requests[_i].client_id, CLIENT_SECRET,
                            bad_token_requests[_i].grant_type, bad_token_requests[_i].scope);
    struct http_result result;
    request_token(&server, bad_token_requests[_i].tenant, form, &result);
    ck_assert_int_eq(result.status, bad_token_requests[_i].status);
    json_t *body = parse_json(&result);
    ck_assert_str_eq(json_string_value(json_object_get(body, "error")),
                     bad_token_requests[_i].error);
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(body, "error_description")),
                                 "AADSTS"));
    json_decref(body);
    http_result_clear(&result);
    free(form);
}
END_TEST

START_TEST(record_without_token_gets_401)
{
    char *url = url_at(&server, "/v1.0/communications/callRecords/" P2P_CALL_ID);
    const char *missing[] = {NULL};
    const char *unknown[] = {"Authorization: Bearer not-a-token-from-fakegraph", NULL};
    const char *const *cases[] = {missing, unknown};
    for (size_t i = 0; i < 2; i++) {
        struct http_result result;
        http("GET", url, cases[i], NULL, &result);
        ck_assert_int_eq(result.status, 401);
        json_t *body = parse_json(&result);
        ck_assert_str_eq(json_path_string(body, "error", "code", NULL),
                         "InvalidAuthenticationToken");
        ck_assert_ptr_nonnull(json_path_string(body, "error", "innerError", "request-id"));
        json_decref(body);
        http_result_clear(&result);
    }
    free(url);
}
END_TEST

START_TEST(token_expires_after_lifetime)
{
    struct fakegraph_process short_lived;
    const char *extra[] = {"--token-lifetime", "1", NULL};
    ck_assert_int_eq(fakegraph_start(&short_lived, extra), 0);
    char *authorization = bearer_header(&short_lived);
    char *url = url_at(&short_lived, "/v1.0/communications/callRecords/" UNKNOWN_CALL_ID);
    const char *headers[] = {authorization, NULL};

    struct http_result result;
    http("GET", url, headers, NULL, &result);
    ck_assert_int_eq(result.status, 404); /* the token was accepted */
    http_result_clear(&result);

    long long deadline = now_ms() + CONDITION_TIMEOUT_MS;
    long status = 0;
    while (now_ms() < deadline) {
        http("GET", url, headers, NULL, &result);
        status = result.status;
        http_result_clear(&result);
        if (status == 401) {
            break;
        }
        poll_step();
    }
    ck_assert_int_eq(status, 401);
    free(url);
    free(authorization);
    ck_assert_int_eq(fakegraph_stop(&short_lived), 0);
}
END_TEST

START_TEST(serve_any_port_and_sigterm)
{
    struct fakegraph_process process;
    ck_assert_int_eq(fakegraph_start(&process, NULL), 0);
    ck_assert_ptr_nonnull(process.base_url);
    ck_assert_ptr_null(strstr(process.base_url, ":0"));
    char *log_path = format("%s/log", process.dir);
    char *log_before = crd_test_read_file(log_path, NULL);
    ck_assert_ptr_nonnull(strstr(log_before, "listening on"));

    /* The log contains neither the secret nor a token. */
    char *authorization = bearer_header(&process);
    char *log = crd_test_read_file(log_path, NULL);
    ck_assert_ptr_null(strstr(log, CLIENT_SECRET));
    ck_assert_ptr_null(strstr(log, authorization + strlen("Authorization: Bearer ")));
    ck_assert_ptr_nonnull(strstr(log, "/oauth2/v2.0/token -> 200"));
    free(log);
    free(authorization);
    free(log_before);
    free(log_path);
    ck_assert_int_eq(fakegraph_stop(&process), 0);
}
END_TEST

/* ---- tests: records ------------------------------------------------------------------- */

/* Follows nextLinks from url, appending each page's "value" items to all. Returns the pages. */
static unsigned follow_pages(const char *url, const char *prefer, json_t *all)
{
    unsigned pages = 0;
    char *next = strdup(url);
    while (next != NULL && pages < 10) {
        struct http_result result;
        graph_get(next, prefer, &result);
        ck_assert_int_eq(result.status, 200);
        json_t *page = parse_json(&result);
        ck_assert(json_is_array(json_object_get(page, "value")));
        json_array_extend(all, json_object_get(page, "value"));
        pages++;
        free(next);
        const char *link = json_string_value(json_object_get(page, "@odata.nextLink"));
        next = link != NULL ? strdup(link) : NULL;
        json_decref(page);
        http_result_clear(&result);
    }
    free(next);
    return pages;
}

static void publish_large_meeting(void)
{
    const char *args[] = {"--record", "callrecord-large-page1.json", "--record",
                          "callrecord-large-page2.json", "--participants",
                          "participants-page1.json", "--participants", "participants-page2.json",
                          NULL};
    publish(args);
}

START_TEST(large_meeting_in_two_session_pages)
{
    reset_server();
    publish_large_meeting();
    const char *queries[] = {EXPAND_ENCODED, EXPAND_PLAIN};
    for (size_t q = 0; q < 2; q++) {
        char *path = format("/v1.0/communications/callRecords/%s?%s", LARGE_CALL_ID, queries[q]);
        struct http_result result;
        graph_get(path, NULL, &result);
        ck_assert_int_eq(result.status, 200);
        json_t *record = parse_json(&result);
        ck_assert_str_eq(json_string_value(json_object_get(record, "id")), LARGE_CALL_ID);
        json_t *sessions = json_object_get(record, "sessions");
        ck_assert_uint_eq(json_array_size(sessions), 60);
        const char *next = json_string_value(json_object_get(record, "sessions@odata.nextLink"));
        ck_assert_ptr_nonnull(next);
        ck_assert_ptr_nonnull(strstr(next, "/sessions?$expand=segments&$skiptoken="));
        ck_assert(strncmp(next, server.base_url, strlen(server.base_url)) == 0);

        json_t *all = json_deep_copy(sessions);
        ck_assert_uint_eq(follow_pages(next, NULL, all), 1);
        ck_assert_uint_eq(json_array_size(all), 75);
        ck_assert(json_is_array(json_object_get(json_array_get(all, 74), "segments")));

        /* The merged sessions are the fixture's, in order. */
        char *page2_path = crd_test_fixture_path("callrecord-large-page2.json");
        json_t *page2 = json_load_file(page2_path, 0, NULL);
        ck_assert_ptr_nonnull(page2);
        ck_assert(json_equal(json_array_get(all, 60),
                             json_array_get(json_object_get(page2, "value"), 0)));
        json_decref(page2);
        free(page2_path);
        json_decref(all);
        json_decref(record);
        http_result_clear(&result);
        free(path);
    }
}
END_TEST

START_TEST(large_meeting_in_two_participant_pages)
{
    reset_server();
    publish_large_meeting();
    char *url = url_at(&server, "/v1.0/communications/callRecords/" LARGE_CALL_ID
                                "/participants_v2");
    json_t *all = json_array();
    ck_assert_uint_eq(follow_pages(url, "Prefer: odata.maxpagesize=50", all), 2);
    ck_assert_uint_eq(json_array_size(all), 73);
    json_decref(all);

    /* Without the Prefer header one page holds up to 130. */
    all = json_array();
    ck_assert_uint_eq(follow_pages(url, NULL, all), 1);
    ck_assert_uint_eq(json_array_size(all), 73);
    json_decref(all);
    free(url);
}
END_TEST

START_TEST(record_without_expand_has_no_sessions)
{
    reset_server();
    const char *args[] = {"--record", "callrecord-p2p-v1.json", NULL};
    publish(args);
    struct http_result result;
    graph_get("/v1.0/communications/callRecords/" P2P_CALL_ID, NULL, &result);
    ck_assert_int_eq(result.status, 200);
    ck_assert_ptr_nonnull(strstr(result.content_type, "application/json"));
    json_t *record = parse_json(&result);
    ck_assert_ptr_null(json_object_get(record, "sessions"));
    ck_assert_int_eq(json_integer_value(json_object_get(record, "version")), 1);
    json_decref(record);
    http_result_clear(&result);

    /* Published without participants: participants_v2 responds 404. */
    graph_get("/v1.0/communications/callRecords/" P2P_CALL_ID "/participants_v2", NULL, &result);
    ck_assert_int_eq(result.status, 404);
    http_result_clear(&result);
}
END_TEST

START_TEST(newest_publish_wins)
{
    reset_server();
    const char *v1[] = {"--record", "callrecord-p2p-v1.json", NULL};
    const char *v2[] = {"--record", "callrecord-p2p-v2.json", NULL};
    publish(v1);
    publish(v2);
    struct http_result result;
    graph_get("/v1.0/communications/callRecords/" P2P_CALL_ID "?" EXPAND_PLAIN, NULL, &result);
    ck_assert_int_eq(result.status, 200);
    json_t *record = parse_json(&result);
    ck_assert_int_eq(json_integer_value(json_object_get(record, "version")), 2);
    json_decref(record);
    http_result_clear(&result);
}
END_TEST

START_TEST(unpublished_record_gets_404)
{
    reset_server();
    char request_ids[2][64];
    for (int i = 0; i < 2; i++) {
        struct http_result result;
        graph_get("/v1.0/communications/callRecords/" UNKNOWN_CALL_ID "?" EXPAND_ENCODED,
                  "client-request-id: 2c57aaee-770c-5337-8d45-013fee95067f", &result);
        ck_assert_int_eq(result.status, 404);
        json_t *body = parse_json(&result);
        ck_assert_str_eq(json_path_string(body, "error", "code", NULL), "NotFound");
        ck_assert_ptr_nonnull(json_path_string(body, "error", "message", NULL));
        const char *date = json_path_string(body, "error", "innerError", "date");
        ck_assert_ptr_nonnull(date);
        ck_assert_uint_eq(strlen(date), strlen("2025-06-03T18:02:44"));
        const char *request_id = json_path_string(body, "error", "innerError", "request-id");
        ck_assert(request_id != NULL && crd_guid_is_valid(request_id, strlen(request_id)));
        snprintf(request_ids[i], sizeof(request_ids[i]), "%s", request_id);
        ck_assert_str_eq(json_path_string(body, "error", "innerError", "client-request-id"),
                         "2c57aaee-770c-5337-8d45-013fee95067f");
        json_decref(body);
        http_result_clear(&result);
    }
    ck_assert_str_ne(request_ids[0], request_ids[1]);
}
END_TEST

START_TEST(not_found_for_then_200)
{
    reset_server();
    const char *args[] = {"--record", "callrecord-group-poor.json", "--not-found-for", "1500",
                          NULL};
    long long published = now_ms();
    publish(args);
    char *path = crd_test_fixture_path("callrecord-group-poor.json");
    json_t *fixture = json_load_file(path, 0, NULL);
    char *record_path = format("/v1.0/communications/callRecords/%s",
                               json_string_value(json_object_get(fixture, "id")));

    struct http_result result;
    graph_get(record_path, NULL, &result);
    ck_assert_int_eq(result.status, 404);
    http_result_clear(&result);

    long status = 0;
    long long deadline = now_ms() + CONDITION_TIMEOUT_MS;
    while (now_ms() < deadline) {
        graph_get(record_path, NULL, &result);
        status = result.status;
        http_result_clear(&result);
        if (status != 404) {
            break;
        }
        poll_step();
    }
    ck_assert_int_eq(status, 200);
    ck_assert_int_ge(now_ms() - published, 1400);
    free(record_path);
    json_decref(fixture);
    free(path);
}
END_TEST

/* ---- tests: faults --------------------------------------------------------------------- */

/* Each case queues one fault for 2 requests; the third request is served normally. */
static const struct {
    const char *fault_json;
    const char *logged;        /* the "fault" field of the request log */
    long status;               /* 0: no HTTP response */
    int curl_code;
    const char *retry_after;   /* "" when the header must be absent */
    double min_seconds;
} fault_cases[] = {
    {"\"status\":429,\"retryAfter\":7", "status 429", 429, CURLE_OK, "7", 0},
    {"\"status\":429", "status 429", 429, CURLE_OK, "", 0},
    {"\"status\":500", "status 500", 500, CURLE_OK, "", 0},
    {"\"status\":503,\"retryAfter\":2", "status 503", 503, CURLE_OK, "2", 0},
    {"\"delayMs\":600", "delay 600 ms", 200, CURLE_OK, "", 0.6},
    {"\"drop\":true", "drop", 0, CURLE_GOT_NOTHING, "", 0},
    {"\"truncate\":true", "truncate", 200, CURLE_PARTIAL_FILE, "", 0},
};

START_TEST(fault_served_count_times)
{
    reset_server();
    const char *args[] = {"--record", "callrecord-p2p-v1.json", NULL};
    publish(args);
    char *fault = format("{\"match\":\"/v1.0/communications/callRecords\",\"count\":2,%s}",
                         fault_cases[_i].fault_json);
    ck_assert_int_eq(control("POST", "/_fakegraph/faults", fault, NULL), 201);

    for (int attempt = 0; attempt < 3; attempt++) {
        struct http_result result;
        graph_get("/v1.0/communications/callRecords/" P2P_CALL_ID "?" EXPAND_PLAIN, NULL,
                  &result);
        if (attempt == 2) {
            ck_assert_int_eq(result.curl_code, CURLE_OK);
            ck_assert_int_eq(result.status, 200);
            ck_assert_str_eq(result.retry_after, "");
            http_result_clear(&result);
            continue;
        }
        ck_assert_int_eq(result.curl_code, fault_cases[_i].curl_code);
        if (fault_cases[_i].status != 0) {
            ck_assert_int_eq(result.status, fault_cases[_i].status);
        }
        ck_assert_str_eq(result.retry_after, fault_cases[_i].retry_after);
        ck_assert(result.seconds >= fault_cases[_i].min_seconds);
        if (fault_cases[_i].status >= 400) {
            json_t *body = parse_json(&result);
            ck_assert_ptr_nonnull(json_path_string(body, "error", "code", NULL));
            json_decref(body);
        }
        http_result_clear(&result);
    }

    json_t *log = request_log();
    ck_assert_uint_eq(count_logged(log, "/v1.0/communications/callRecords/",
                                   fault_cases[_i].logged), 2);
    ck_assert_uint_eq(count_logged(log, "/v1.0/communications/callRecords/", ""), 3);
    json_decref(log);
    free(fault);
}
END_TEST

START_TEST(fault_command_queues_fault)
{
    reset_server();
    const char *args[] = {"fault", "--control", server.base_url, "--cafile", ca_file,
                          "--match", "/v1.0/communications/callRecords/" UNKNOWN_CALL_ID,
                          "--status", "503", "--retry-after", "4", "--count", "1", NULL};
    char *output = NULL;
    ck_assert_int_eq(run_fakegraph(args, &output), 0);
    ck_assert_ptr_nonnull(strstr(output, "fault: queued"));
    free(output);

    struct http_result result;
    graph_get("/v1.0/communications/callRecords/" UNKNOWN_CALL_ID, NULL, &result);
    ck_assert_int_eq(result.status, 503);
    ck_assert_str_eq(result.retry_after, "4");
    http_result_clear(&result);
    /* A fault on another path prefix does not apply. */
    graph_get("/v1.0/communications/callRecords/" UNKNOWN_CALL_ID, NULL, &result);
    ck_assert_int_eq(result.status, 404);
    http_result_clear(&result);
}
END_TEST

/* ---- tests: subscriptions and notifications ----------------------------------------------- */

START_TEST(subscription_handshake_and_conflict)
{
    delete_all_subscriptions();
    struct responder responder;
    responder_start(&responder, RESPONDER_ECHO);
    char *notify_url = responder_url(&responder, "/notify?tenant=" TENANT_ID);
    char *lifecycle_url = responder_url(&responder, "/lifecycle");
    char *body = subscription_body(notify_url, lifecycle_url, "/communications/callRecords",
                                   4000);

    struct http_result result;
    graph_send("POST", "/v1.0/subscriptions", body, &result);
    ck_assert_msg(result.status == 201, "status %ld: %s", result.status, result.body);
    json_t *created = parse_json(&result);
    const char *id = json_string_value(json_object_get(created, "id"));
    ck_assert(id != NULL && crd_guid_is_valid(id, strlen(id)));
    ck_assert_str_eq(json_string_value(json_object_get(created, "clientState")), CLIENT_STATE);
    ck_assert_str_eq(json_string_value(json_object_get(created, "applicationId")), CLIENT_ID);
    ck_assert_str_eq(json_string_value(json_object_get(created, "notificationUrl")), notify_url);
    ck_assert_str_eq(json_string_value(json_object_get(created, "lifecycleNotificationUrl")),
                     lifecycle_url);
    ck_assert_ptr_nonnull(json_string_value(json_object_get(created, "expirationDateTime")));
    ck_assert_ptr_nonnull(json_string_value(json_object_get(created, "creatorId")));
    ck_assert_str_eq(json_string_value(json_object_get(created, "notificationContentType")),
                     "application/json");
    http_result_clear(&result);

    /* One handshake per URL, with a token that has spaces and a plus, done before the 201. */
    pthread_mutex_lock(&responder.lock);
    ck_assert_uint_eq(responder.validations, 2);
    ck_assert_ptr_nonnull(strchr(responder.last_token, ' '));
    ck_assert_ptr_nonnull(strchr(responder.last_token, '+'));
    ck_assert_ptr_nonnull(strstr(responder.last_validation_content_type, "text/plain"));
    pthread_mutex_unlock(&responder.lock);

    graph_send("POST", "/v1.0/subscriptions", body, &result);
    ck_assert_int_eq(result.status, 409);
    json_t *conflict = parse_json(&result);
    char *message = format("Subscription Id %s already exists for the requested combination", id);
    ck_assert_str_eq(json_path_string(conflict, "error", "message", NULL), message);
    free(message);
    json_decref(conflict);
    http_result_clear(&result);

    graph_get("/v1.0/subscriptions", NULL, &result);
    ck_assert_int_eq(result.status, 200);
    json_t *list = parse_json(&result);
    json_t *listed = json_array_get(json_object_get(list, "value"), 0);
    ck_assert_uint_eq(json_array_size(json_object_get(list, "value")), 1);
    ck_assert_str_eq(json_string_value(json_object_get(listed, "id")), id);
    ck_assert(json_is_null(json_object_get(listed, "clientState")));
    json_decref(list);
    http_result_clear(&result);

    char *path = format("/v1.0/subscriptions/%s", id);
    graph_send("DELETE", path, NULL, &result);
    ck_assert_int_eq(result.status, 204);
    http_result_clear(&result);
    graph_get(path, NULL, &result);
    ck_assert_int_eq(result.status, 404);
    http_result_clear(&result);

    free(path);
    json_decref(created);
    free(body);
    free(lifecycle_url);
    free(notify_url);
    responder_stop(&responder);
}
END_TEST

START_TEST(subscription_failed_handshake_gets_400)
{
    delete_all_subscriptions();
    struct responder responder;
    responder_start(&responder, RESPONDER_WRONG_ECHO);
    char *notify_url = responder_url(&responder, "/notify");
    char *body = subscription_body(notify_url, NULL, "communications/callRecords", 60);

    struct http_result result;
    graph_send("POST", "/v1.0/subscriptions", body, &result);
    ck_assert_int_eq(result.status, 400);
    json_t *error = parse_json(&result);
    ck_assert_ptr_nonnull(strstr(json_path_string(error, "error", "message", NULL),
                                 "validation"));
    json_decref(error);
    http_result_clear(&result);
    ck_assert_uint_eq(responder.validations, 1);

    graph_get("/v1.0/subscriptions", NULL, &result);
    json_t *list = parse_json(&result);
    ck_assert_uint_eq(json_array_size(json_object_get(list, "value")), 0);
    json_decref(list);
    http_result_clear(&result);
    free(body);
    free(notify_url);
    responder_stop(&responder);
}
END_TEST

START_TEST(subscription_body_validated)
{
    delete_all_subscriptions();
    struct responder responder;
    responder_start(&responder, RESPONDER_ECHO);
    char *url = responder_url(&responder, "/notify");
    char long_state[140];
    memset(long_state, 'a', 129);
    long_state[129] = '\0';
    char soon[40];
    char far[40];
    crd_time_format_iso8601(crd_time_now_ms() + 60LL * 60 * 1000, soon, sizeof(soon));
    crd_time_format_iso8601(crd_time_now_ms() + 4231LL * 60 * 1000, far, sizeof(far));

    /* Each case breaks one field of an otherwise valid body; expected names the message. */
    const struct {
        const char *change_type;
        const char *notification_url;
        const char *resource;
        const char *expiry;
        const char *client_state;
        const char *expected;
    } cases[] = {
        {"deleted", url, "/communications/callRecords", soon, "s", "ChangeType 'deleted'"},
        {"created", "http://127.0.0.1/x", "/communications/callRecords", soon, "s", "https"},
        {"created", url, "/communications/presences", soon, "s", "Resource"},
        {"created", url, "/communications/callRecords", "2001-01-01T00:00:00Z", "s", "future"},
        {"created", url, "/communications/callRecords", far, "s", "4230 minutes"},
        {"created", url, "/communications/callRecords", soon, long_state, "128 characters"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *body = format("{\"changeType\":\"%s\",\"notificationUrl\":\"%s\",\"resource\":"
                            "\"%s\",\"expirationDateTime\":\"%s\",\"clientState\":\"%s\"}",
                            cases[i].change_type, cases[i].notification_url, cases[i].resource,
                            cases[i].expiry, cases[i].client_state);
        struct http_result result;
        graph_send("POST", "/v1.0/subscriptions", body, &result);
        ck_assert_msg(result.status == 400, "case %zu: status %ld", i, result.status);
        ck_assert_msg(strstr(result.body, cases[i].expected) != NULL, "case %zu: %s", i,
                      result.body);
        http_result_clear(&result);
        free(body);
    }
    ck_assert_uint_eq(responder.validations, 0);

    /* 10 minutes ahead is raised to 45, and the participant filter form is accepted. */
    struct http_result result;
    char *raised = subscription_body(url, NULL, "/communications/callRecords?$filter="
                                     "participants/any(p:p/id eq '819b0ac3-6f10-5922-bc4b-"
                                     "8594ee8d17fe')", 10);
    graph_send("POST", "/v1.0/subscriptions", raised, &result);
    ck_assert_msg(result.status == 201, "status %ld: %s", result.status, result.body);
    json_t *created = parse_json(&result);
    int64_t expiry = 0;
    ck_assert_int_eq(crd_time_parse_iso8601(json_string_value(json_object_get(
                                                created, "expirationDateTime")), &expiry), 0);
    ck_assert_int_ge(expiry, crd_time_now_ms() + 44LL * 60 * 1000);
    json_decref(created);
    http_result_clear(&result);

    free(raised);
    free(url);
    responder_stop(&responder);
    delete_all_subscriptions();
}
END_TEST

START_TEST(notify_override_reaches_responder)
{
    struct responder responder;
    responder_start(&responder, RESPONDER_ECHO);
    char *url = responder_url(&responder, "/notify");
    const char *args[] = {"trigger", "--control", server.base_url, "--cafile", ca_file,
                          "--call-id", P2P_CALL_ID, "--change-type", "updated",
                          "--notification-url", url, "--client-state", CLIENT_STATE, NULL};
    char *output = NULL;
    ck_assert_int_eq(run_fakegraph(args, &output), 0);
    ck_assert_str_eq(output, "trigger: HTTP 202\n");
    free(output);

    pthread_mutex_lock(&responder.lock);
    ck_assert_uint_eq(responder.notifications, 1);
    json_t *body = json_loads(responder.last_notification, 0, NULL);
    pthread_mutex_unlock(&responder.lock);
    ck_assert_ptr_nonnull(body);
    json_t *item = json_array_get(json_object_get(body, "value"), 0);
    ck_assert_uint_eq(json_array_size(json_object_get(body, "value")), 1);
    ck_assert_str_eq(json_string_value(json_object_get(item, "changeType")), "updated");
    ck_assert_str_eq(json_string_value(json_object_get(item, "clientState")), CLIENT_STATE);
    ck_assert_str_eq(json_string_value(json_object_get(item, "tenantId")), TENANT_ID);
    ck_assert_str_eq(json_string_value(json_object_get(item, "resource")),
                     "communications/callRecords/" P2P_CALL_ID);
    ck_assert_str_eq(json_path_string(item, "resourceData", "id", NULL), P2P_CALL_ID);
    ck_assert_str_eq(json_path_string(item, "resourceData", "@odata.type", NULL),
                     "#Microsoft.Graph.callrecord");
    ck_assert_ptr_nonnull(json_string_value(json_object_get(item, "subscriptionId")));
    ck_assert_ptr_nonnull(
        strstr(json_string_value(json_object_get(item, "subscriptionExpirationDateTime")),
               "+00:00"));
    json_decref(body);

    /* --batch puts the repeats into one POST. */
    const char *batch_args[] = {"trigger", "--control", server.base_url, "--cafile", ca_file,
                                "--call-id", P2P_CALL_ID, "--repeat", "3", "--batch",
                                "--notification-url", url, "--client-state", CLIENT_STATE, NULL};
    ck_assert_int_eq(run_fakegraph(batch_args, &output), 0);
    ck_assert_str_eq(output, "trigger: HTTP 202\n");
    free(output);
    pthread_mutex_lock(&responder.lock);
    ck_assert_uint_eq(responder.notifications, 2);
    body = json_loads(responder.last_notification, 0, NULL);
    pthread_mutex_unlock(&responder.lock);
    ck_assert_uint_eq(json_array_size(json_object_get(body, "value")), 3);
    json_decref(body);
    free(url);
    responder_stop(&responder);
}
END_TEST

START_TEST(notify_uses_subscription)
{
    delete_all_subscriptions();
    struct responder responder;
    responder_start(&responder, RESPONDER_ECHO);
    char *url = responder_url(&responder, "/notify");
    char *body = subscription_body(url, NULL, "/communications/callRecords", 120);
    struct http_result result;
    graph_send("POST", "/v1.0/subscriptions", body, &result);
    ck_assert_int_eq(result.status, 201);
    json_t *created = parse_json(&result);
    http_result_clear(&result);

    ck_assert_int_eq(control("POST", "/_fakegraph/notify",
                             "{\"callId\":\"" P2P_CALL_ID "\",\"changeType\":\"created\","
                             "\"repeat\":2}", &result), 200);
    json_t *answer_body = parse_json(&result);
    ck_assert_int_eq(json_integer_value(json_object_get(answer_body, "status")), 202);
    ck_assert_uint_eq(json_array_size(json_object_get(answer_body, "statuses")), 2);
    json_decref(answer_body);
    http_result_clear(&result);

    pthread_mutex_lock(&responder.lock);
    ck_assert_uint_eq(responder.notifications, 2);
    json_t *notification = json_loads(responder.last_notification, 0, NULL);
    pthread_mutex_unlock(&responder.lock);
    json_t *item = json_array_get(json_object_get(notification, "value"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(item, "subscriptionId")),
                     json_string_value(json_object_get(created, "id")));
    ck_assert_str_eq(json_string_value(json_object_get(item, "clientState")), CLIENT_STATE);
    json_decref(notification);

    json_decref(created);
    free(body);
    free(url);
    responder_stop(&responder);
    delete_all_subscriptions();
}
END_TEST

/* ---- tests: request log and scenarios --------------------------------------------------- */

START_TEST(request_log_records_requests)
{
    reset_server();
    struct http_result result;
    graph_get("/v1.0/communications/callRecords/" UNKNOWN_CALL_ID "?" EXPAND_ENCODED, NULL,
              &result);
    ck_assert_int_eq(result.status, 404);
    http_result_clear(&result);

    json_t *log = request_log();
    ck_assert_uint_eq(json_array_size(log), 3); /* reset, token, GET */
    json_t *token = json_array_get(log, 1);
    ck_assert_str_eq(json_string_value(json_object_get(token, "method")), "POST");
    ck_assert_str_eq(json_string_value(json_object_get(token, "path")),
                     "/" TENANT_ID "/oauth2/v2.0/token");
    ck_assert_int_eq(json_integer_value(json_object_get(token, "status")), 200);
    json_t *get = json_array_get(log, 2);
    ck_assert_str_eq(json_string_value(json_object_get(get, "method")), "GET");
    ck_assert_str_eq(json_string_value(json_object_get(get, "path")),
                     "/v1.0/communications/callRecords/" UNKNOWN_CALL_ID);
    ck_assert_str_eq(json_string_value(json_object_get(get, "query")), EXPAND_ENCODED);
    ck_assert_int_eq(json_integer_value(json_object_get(get, "status")), 404);
    int64_t at = 0;
    ck_assert_int_eq(crd_time_parse_iso8601(json_string_value(json_object_get(get, "at")), &at),
                     0);
    json_decref(log);
}
END_TEST

static int run_scenario(const char *scenario_path, const char *notification_url,
                        char **ret_output)
{
    char *fixtures = format("%s/tests/fixtures", crd_test_srcdir());
    const char *args[] = {"scenario", "--control", server.base_url, "--cafile", ca_file,
                          "--fixtures", fixtures, "--file", scenario_path,
                          "--notification-url", notification_url, "--client-state",
                          CLIENT_STATE, NULL};
    int status = run_fakegraph(args, ret_output);
    free(fixtures);
    return status;
}

START_TEST(demo_scenario_runs)
{
    reset_server();
    struct responder responder;
    responder_start(&responder, RESPONDER_ECHO);
    char *url = responder_url(&responder, "/notify");
    char *scenario = crd_test_fixture_path("scenarios/demo.scenario");
    char *output = NULL;
    int status = run_scenario(scenario, url, &output);
    ck_assert_msg(status == 0, "scenario exited %d: %s", status, output);
    ck_assert_ptr_nonnull(strstr(output, "publish: " LARGE_CALL_ID " version 2: 75 sessions, "
                                         "73 participants"));
    ck_assert_ptr_null(strstr(output, "trigger: HTTP 5"));
    pthread_mutex_lock(&responder.lock);
    ck_assert_uint_ge(responder.notifications, 8);
    pthread_mutex_unlock(&responder.lock);

    /* Every record of the demo is served, the one published with not-found-for 3000 soon. */
    const char *ids[] = {P2P_CALL_ID, LARGE_CALL_ID, "0bf46869-eea5-5992-811e-178fec3d9176",
                         "f0bb1479-0b23-5d38-8445-31e7f07e6f04",
                         "e523d2ed-2966-4b6b-925b-754a88034cc5",
                         "45735e13-57fc-50c3-9675-de885fcb1ab8"};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        char *path = format("/v1.0/communications/callRecords/%s?%s", ids[i], EXPAND_PLAIN);
        long record_status = 0;
        long long deadline = now_ms() + CONDITION_TIMEOUT_MS;
        while (record_status != 200 && now_ms() < deadline) {
            struct http_result result;
            graph_get(path, NULL, &result);
            record_status = result.status;
            http_result_clear(&result);
            if (record_status == 404) {
                poll_step();
            }
        }
        ck_assert_msg(record_status == 200, "%s: status %ld", ids[i], record_status);
        free(path);
    }
    free(output);
    free(scenario);
    free(url);
    responder_stop(&responder);
}
END_TEST

START_TEST(scenario_fails_without_202)
{
    struct responder responder;
    responder_start(&responder, RESPONDER_FAIL);
    char *url = responder_url(&responder, "/notify");
    char *dir = crd_test_make_tmpdir("fakegraph-scenario");
    char *scenario = crd_test_write_file(dir, "fail.scenario",
                                         "# the responder answers 500\n"
                                         "publish callrecord-pstn.json\n"
                                         "notify @callrecord-pstn.json updated\n", 0644);
    char *output = NULL;
    ck_assert_int_eq(run_scenario(scenario, url, &output), 1);
    ck_assert_ptr_nonnull(strstr(output, "trigger: HTTP 500"));
    ck_assert_ptr_nonnull(strstr(output, "step (line 3): notify @callrecord-pstn.json updated"));
    free(output);

    /* A step that is not known stops the run with status 2. */
    free(scenario);
    scenario = crd_test_write_file(dir, "bad.scenario", "wait 100\n", 0644);
    ck_assert_int_eq(run_scenario(scenario, url, &output), 2);
    ck_assert_ptr_nonnull(strstr(output, "unknown step 'wait'"));
    free(output);
    crd_test_remove_tree(dir);
    free(scenario);
    free(dir);
    free(url);
    responder_stop(&responder);
}
END_TEST

/* ---- tests: quotas --------------------------------------------------------------------- */

/* GETs url with the headers and returns the status; copies Retry-After into retry_after. */
static long get_status(const char *url, const char *const *headers, char *retry_after,
                       size_t size)
{
    struct http_result result;
    http("GET", url, headers, NULL, &result);
    ck_assert_int_eq(result.curl_code, CURLE_OK);
    long status = result.status;
    snprintf(retry_after, size, "%s", result.retry_after);
    if (status == 429) {
        json_t *body = parse_json(&result);
        ck_assert_str_eq(json_path_string(body, "error", "code", NULL), "TooManyRequests");
        json_decref(body);
    }
    http_result_clear(&result);
    return status;
}

START_TEST(quota_429_per_record_and_tenant)
{
    struct fakegraph_process limited;
    const char *extra[] = {"--quota-tenant", "5/60", "--quota-record", "3/60", NULL};
    ck_assert_int_eq(fakegraph_start(&limited, extra), 0);
    char *authorization = bearer_header(&limited);
    const char *headers[] = {authorization, NULL};
    char *first = url_at(&limited, "/v1.0/communications/callRecords/" UNKNOWN_CALL_ID);
    char *second = url_at(&limited, "/v1.0/communications/callRecords/" P2P_CALL_ID
                                    "/participants_v2");
    char retry_after[32];

    /* Nothing is published, so admitted requests get 404; they count all the same. */
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(get_status(first, headers, retry_after, sizeof(retry_after)), 404);
    }
    ck_assert_int_eq(get_status(first, headers, retry_after, sizeof(retry_after)), 429);
    ck_assert_int_ge(atoi(retry_after), 1);
    ck_assert_int_le(atoi(retry_after), 60);

    /* The rejected request did not count: the tenant has 2 of its 5 requests left. */
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(get_status(second, headers, retry_after, sizeof(retry_after)), 404);
    }
    ck_assert_int_eq(get_status(second, headers, retry_after, sizeof(retry_after)), 429);
    ck_assert_int_ge(atoi(retry_after), 1);
    ck_assert_int_le(atoi(retry_after), 60);

    /* The token endpoint is outside the call-record quotas. */
    char *again = bearer_header(&limited);
    free(again);

    char *log_url = url_at(&limited, "/_fakegraph/requests");
    struct http_result result;
    http("GET", log_url, NULL, NULL, &result);
    ck_assert_int_eq(result.status, 200);
    json_t *log = parse_json(&result);
    ck_assert_uint_eq(count_logged(log, "/v1.0/communications/callRecords/", "quota record"), 1);
    ck_assert_uint_eq(count_logged(log, "/v1.0/communications/callRecords/", "quota tenant"), 1);
    ck_assert_uint_eq(count_logged(log, "/v1.0/communications/callRecords/", ""), 7);
    json_decref(log);
    http_result_clear(&result);

    free(log_url);
    free(second);
    free(first);
    free(authorization);
    ck_assert_int_eq(fakegraph_stop(&limited), 0);
}
END_TEST

START_TEST(quota_window_slides)
{
    struct fakegraph_process limited;
    const char *extra[] = {"--quota-tenant", "2/1", NULL};
    ck_assert_int_eq(fakegraph_start(&limited, extra), 0);
    char *authorization = bearer_header(&limited);
    const char *headers[] = {authorization, NULL};
    char *url = url_at(&limited, "/v1.0/communications/callRecords/" UNKNOWN_CALL_ID);
    char retry_after[32];

    ck_assert_int_eq(get_status(url, headers, retry_after, sizeof(retry_after)), 404);
    ck_assert_int_eq(get_status(url, headers, retry_after, sizeof(retry_after)), 404);
    ck_assert_int_eq(get_status(url, headers, retry_after, sizeof(retry_after)), 429);
    ck_assert_str_eq(retry_after, "1");

    /* Once the first admission is a second old, one more request fits. */
    long long deadline = now_ms() + 1100;
    while (now_ms() < deadline) {
        poll_step();
    }
    ck_assert_int_eq(get_status(url, headers, retry_after, sizeof(retry_after)), 404);

    free(url);
    free(authorization);
    ck_assert_int_eq(fakegraph_stop(&limited), 0);
}
END_TEST

static const char *const invalid_quotas[] = {"0/20", "1500", "1500/0", "x/20", "/20", "15/3601"};

START_TEST(quota_option_rejects_invalid)
{
    const char *args[] = {"serve", "--quota-tenant", invalid_quotas[_i], NULL};
    char *output = NULL;
    ck_assert_int_eq(run_fakegraph(args, &output), 2);  /* usage error */
    ck_assert_ptr_nonnull(strstr(output, "invalid --quota-tenant"));
    free(output);
}
END_TEST

/* ---- tests: several tenants ---------------------------------------------------------------- */

#define PSTN_CALL_ID "0bf46869-eea5-5992-811e-178fec3d9176"

/* Starts a fakegraph that serves TENANT_ID (the default) and OTHER_TENANT_ID. */
static void start_two_tenants(struct fakegraph_process *process, const char *const *extra)
{
    const char *args[16] = {"--tenant", OTHER_TENANT_ID};
    size_t count = 2;
    for (size_t i = 0; extra != NULL && extra[i] != NULL && count < 15; i++) {
        args[count++] = extra[i];
    }
    args[count] = NULL;
    ck_assert_int_eq(fakegraph_start(process, args), 0);
}

/* Sends a Graph request to process with the Authorization header; body may be NULL. */
static void tenant_request(const struct fakegraph_process *process, const char *authorization,
                           const char *method, const char *path, const char *body,
                           struct http_result *result)
{
    char *url = url_at(process, path);
    const char *headers[] = {authorization, "Content-Type: application/json", NULL};
    http(method, url, headers, body, result);
    free(url);
}

/* Returns the status of a Graph request to process. */
static long tenant_status(const struct fakegraph_process *process, const char *authorization,
                          const char *method, const char *path, const char *body)
{
    struct http_result result;
    tenant_request(process, authorization, method, path, body, &result);
    long status = result.status;
    http_result_clear(&result);
    return status;
}

/* GETs a call record of process and returns its version, or -status when it is not 200. */
static long long record_version(const struct fakegraph_process *process,
                                const char *authorization, const char *call_id)
{
    char *path = format("/v1.0/communications/callRecords/%s", call_id);
    struct http_result result;
    tenant_request(process, authorization, "GET", path, NULL, &result);
    long long version = -result.status;
    if (result.status == 200) {
        json_t *record = parse_json(&result);
        version = json_integer_value(json_object_get(record, "version"));
        json_decref(record);
    }
    http_result_clear(&result);
    free(path);
    return version;
}

/* Counts the request log entries of process with the path prefix, tenant and fault ("": any). */
static size_t count_tenant_logged(const struct fakegraph_process *process,
                                  const char *path_prefix, const char *tenant, const char *fault)
{
    struct http_result result;
    ck_assert_int_eq(control_on(process, "GET", "/_fakegraph/requests", NULL, &result), 200);
    json_t *log = parse_json(&result);
    size_t count = 0;
    size_t index;
    const json_t *entry;
    json_array_foreach(log, index, entry) {
        const char *path = json_string_value(json_object_get(entry, "path"));
        const char *entry_tenant = json_string_value(json_object_get(entry, "tenant"));
        const char *entry_fault = json_string_value(json_object_get(entry, "fault"));
        if (path != NULL && strncmp(path, path_prefix, strlen(path_prefix)) == 0 &&
            entry_tenant != NULL && strcmp(entry_tenant, tenant) == 0 &&
            (fault[0] == '\0' || (entry_fault != NULL && strcmp(entry_fault, fault) == 0))) {
            count++;
        }
    }
    json_decref(log);
    http_result_clear(&result);
    return count;
}

/* Creates a subscription in the token's tenant and returns its id. */
static char *create_subscription(const struct fakegraph_process *process,
                                 const char *authorization, const char *notification_url,
                                 const char *lifecycle_url)
{
    char *body = subscription_body(notification_url, lifecycle_url,
                                   "/communications/callRecords", 120);
    struct http_result result;
    tenant_request(process, authorization, "POST", "/v1.0/subscriptions", body, &result);
    ck_assert_msg(result.status == 201, "status %ld: %s", result.status, result.body);
    json_t *created = parse_json(&result);
    char *id = strdup(json_string_value(json_object_get(created, "id")));
    json_decref(created);
    http_result_clear(&result);
    free(body);
    return id;
}

/* Returns the number of subscriptions that GET /v1.0/subscriptions lists for the token. */
static size_t listed_subscriptions(const struct fakegraph_process *process,
                                   const char *authorization)
{
    struct http_result result;
    tenant_request(process, authorization, "GET", "/v1.0/subscriptions", NULL, &result);
    ck_assert_int_eq(result.status, 200);
    json_t *list = parse_json(&result);
    size_t count = json_array_size(json_object_get(list, "value"));
    json_decref(list);
    http_result_clear(&result);
    return count;
}

/* Copies the first item of the responder's last notification; the caller json_decref()s it. */
static json_t *last_notification_item(struct responder *responder)
{
    pthread_mutex_lock(&responder->lock);
    json_t *body = json_loads(responder->last_notification != NULL
                                  ? responder->last_notification
                                  : "",
                              0, NULL);
    pthread_mutex_unlock(&responder->lock);
    ck_assert_ptr_nonnull(body);
    json_t *item = json_incref(json_array_get(json_object_get(body, "value"), 0));
    json_decref(body);
    ck_assert_ptr_nonnull(item);
    return item;
}

static unsigned notifications_received(struct responder *responder)
{
    pthread_mutex_lock(&responder->lock);
    unsigned count = responder->notifications;
    pthread_mutex_unlock(&responder->lock);
    return count;
}

START_TEST(tenants_each_issue_tokens)
{
    struct fakegraph_process two;
    start_two_tenants(&two, NULL);
    char *form = token_form(&two, CLIENT_ID, CLIENT_SECRET, "client_credentials", NULL);
    /* The path's tenant is compared without case, as Entra ID does with GUIDs. */
    const char *paths[] = {TENANT_ID, OTHER_TENANT_ID, "6F1C2D3E-4A5B-4C6D-8E7F-9A0B1C2D3E4F"};
    const char *logged[] = {TENANT_ID, OTHER_TENANT_ID, OTHER_TENANT_ID};
    struct http_result result;
    for (size_t i = 0; i < 3; i++) {
        request_token(&two, paths[i], form, &result);
        ck_assert_msg(result.status == 200, "%s: status %ld", paths[i], result.status);
        json_t *body = parse_json(&result);
        ck_assert_ptr_nonnull(json_string_value(json_object_get(body, "access_token")));
        json_decref(body);
        http_result_clear(&result);
    }

    /* A tenant that is not served keeps Entra's "tenant not found" error. */
    request_token(&two, UNSERVED_TENANT_ID, form, &result);
    ck_assert_int_eq(result.status, 400);
    json_t *body = parse_json(&result);
    ck_assert_str_eq(json_string_value(json_object_get(body, "error")), "invalid_request");
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(body, "error_description")),
                                 "AADSTS90002"));
    json_decref(body);
    http_result_clear(&result);

    /* The request log names the tenant of each token request to a served tenant. */
    ck_assert_int_eq(control_on(&two, "GET", "/_fakegraph/requests", NULL, &result), 200);
    json_t *log = parse_json(&result);
    ck_assert_uint_eq(json_array_size(log), 4);
    for (size_t i = 0; i < 3; i++) {
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(log, i), "tenant")),
                         logged[i]);
    }
    ck_assert_ptr_null(json_object_get(json_array_get(log, 3), "tenant"));
    json_decref(log);
    http_result_clear(&result);

    char *log_path = format("%s/log", two.dir);
    char *text = crd_test_read_file(log_path, NULL);
    ck_assert_ptr_nonnull(strstr(text, "(tenants " TENANT_ID ", " OTHER_TENANT_ID ","));
    free(text);
    free(log_path);
    free(form);
    ck_assert_int_eq(fakegraph_stop(&two), 0);
}
END_TEST

START_TEST(record_of_one_tenant_404_for_other)
{
    struct fakegraph_process two;
    start_two_tenants(&two, NULL);
    char *a = bearer_header_for(&two, TENANT_ID);
    char *b = bearer_header_for(&two, OTHER_TENANT_ID);

    /* The large meeting is published in the second tenant only. */
    const char *large[] = {"--record", "callrecord-large-page1.json", "--record",
                           "callrecord-large-page2.json", "--participants",
                           "participants-page1.json", "--participants", "participants-page2.json",
                           NULL};
    publish_on(&two, OTHER_TENANT_ID, large);
    const char *record = "/v1.0/communications/callRecords/" LARGE_CALL_ID "?" EXPAND_PLAIN;
    ck_assert_int_eq(tenant_status(&two, b, "GET", record, NULL), 200);
    ck_assert_int_eq(tenant_status(&two, a, "GET", record, NULL), 404);
    ck_assert_int_eq(tenant_status(&two, a, "GET", "/v1.0/communications/callRecords/"
                                   LARGE_CALL_ID "/sessions", NULL), 404);

    /* The second page of participants_v2 is the second tenant's too. */
    char *url = url_at(&two, "/v1.0/communications/callRecords/" LARGE_CALL_ID
                             "/participants_v2");
    const char *first_headers[] = {b, "Prefer: odata.maxpagesize=50", NULL};
    struct http_result result;
    http("GET", url, first_headers, NULL, &result);
    ck_assert_int_eq(result.status, 200);
    json_t *page = parse_json(&result);
    ck_assert_uint_eq(json_array_size(json_object_get(page, "value")), 50);
    char *next = strdup(json_string_value(json_object_get(page, "@odata.nextLink")));
    json_decref(page);
    http_result_clear(&result);
    const char *b_headers[] = {b, NULL};
    http("GET", next, b_headers, NULL, &result);
    ck_assert_int_eq(result.status, 200);
    page = parse_json(&result);
    ck_assert_uint_eq(json_array_size(json_object_get(page, "value")), 23);
    json_decref(page);
    http_result_clear(&result);
    const char *a_headers[] = {a, NULL};
    http("GET", next, a_headers, NULL, &result);
    ck_assert_int_eq(result.status, 404);
    http_result_clear(&result);

    /* One call id in both tenants: each tenant keeps its own version. */
    const char *v1[] = {"--record", "callrecord-p2p-v1.json", NULL};
    const char *v2[] = {"--record", "callrecord-p2p-v2.json", NULL};
    publish_on(&two, NULL, v1);
    publish_on(&two, OTHER_TENANT_ID, v2);
    ck_assert_int_eq(record_version(&two, a, P2P_CALL_ID), 1);
    ck_assert_int_eq(record_version(&two, b, P2P_CALL_ID), 2);

    /* The list shows the token's tenant's records only. */
    const char *list = "/v1.0/communications/callRecords?$filter=startDateTime%20ge%20"
                       "2000-01-01T00:00:00Z";
    const char *tokens[] = {a, b};
    const size_t expected_rows[] = {1, 2};
    for (size_t i = 0; i < 2; i++) {
        tenant_request(&two, tokens[i], "GET", list, NULL, &result);
        ck_assert_int_eq(result.status, 200);
        json_t *rows = parse_json(&result);
        ck_assert_uint_eq(json_array_size(json_object_get(rows, "value")), expected_rows[i]);
        json_decref(rows);
        http_result_clear(&result);
    }

    /* A tenant that is not served is a usage error that names the served ones. */
    char *fixture = crd_test_fixture_path("callrecord-pstn.json");
    const char *args[] = {"publish", "--control", two.base_url, "--cafile", ca_file,
                          "--record", fixture, "--tenant", UNSERVED_TENANT_ID, NULL};
    char *output = NULL;
    ck_assert_int_eq(run_fakegraph(args, &output), 2);
    ck_assert_ptr_nonnull(strstr(output, "'" UNSERVED_TENANT_ID "' is not served"));
    ck_assert_ptr_nonnull(strstr(output, TENANT_ID ", " OTHER_TENANT_ID));
    free(output);

    free(fixture);
    free(next);
    free(url);
    free(b);
    free(a);
    ck_assert_int_eq(fakegraph_stop(&two), 0);
}
END_TEST

START_TEST(subscriptions_scoped_to_tenant)
{
    struct fakegraph_process two;
    start_two_tenants(&two, NULL);
    char *a = bearer_header_for(&two, TENANT_ID);
    char *b = bearer_header_for(&two, OTHER_TENANT_ID);
    struct responder responder;
    responder_start(&responder, RESPONDER_ECHO);
    char *url = responder_url(&responder, "/notify");

    char *id_a = create_subscription(&two, a, url, NULL);
    ck_assert_uint_eq(listed_subscriptions(&two, a), 1);
    ck_assert_uint_eq(listed_subscriptions(&two, b), 0);

    /* The same subscription in the other tenant is not a duplicate, but a second one there is. */
    char *id_b = create_subscription(&two, b, url, NULL);
    ck_assert_str_ne(id_a, id_b);
    char *body = subscription_body(url, NULL, "/communications/callRecords", 120);
    ck_assert_int_eq(tenant_status(&two, b, "POST", "/v1.0/subscriptions", body), 409);
    ck_assert_uint_eq(listed_subscriptions(&two, a), 1);
    ck_assert_uint_eq(listed_subscriptions(&two, b), 1);

    /* Another tenant's subscription id is not found with this tenant's token. */
    char *path_a = format("/v1.0/subscriptions/%s", id_a);
    char expiry[40];
    crd_time_format_iso8601(crd_time_now_ms() + 90LL * 60 * 1000, expiry, sizeof(expiry));
    char *renewal = format("{\"expirationDateTime\":\"%s\"}", expiry);
    ck_assert_int_eq(tenant_status(&two, b, "GET", path_a, NULL), 404);
    ck_assert_int_eq(tenant_status(&two, b, "PATCH", path_a, renewal), 404);
    ck_assert_int_eq(tenant_status(&two, b, "DELETE", path_a, NULL), 404);
    ck_assert_int_eq(tenant_status(&two, a, "PATCH", path_a, renewal), 200);
    ck_assert_int_eq(tenant_status(&two, a, "GET", path_a, NULL), 200);

    /* The control API lists both, each with its tenant, and removes by id in any tenant. */
    struct http_result result;
    ck_assert_int_eq(control_on(&two, "GET", "/_fakegraph/subscriptions", NULL, &result), 200);
    json_t *list = parse_json(&result);
    ck_assert_uint_eq(json_array_size(json_object_get(list, "value")), 2);
    size_t index;
    json_t *item;
    json_array_foreach(json_object_get(list, "value"), index, item) {
        const char *id = json_string_value(json_object_get(item, "id"));
        const char *tenant = json_string_value(json_object_get(item, "tenant"));
        ck_assert_ptr_nonnull(tenant);
        ck_assert_str_eq(tenant, strcmp(id, id_a) == 0 ? TENANT_ID : OTHER_TENANT_ID);
    }
    json_decref(list);
    http_result_clear(&result);
    char *remove = format("{\"subscriptionId\":\"%s\"}", id_b);
    ck_assert_int_eq(control_on(&two, "POST", "/_fakegraph/subscriptions/remove", remove, NULL),
                     204);
    ck_assert_uint_eq(listed_subscriptions(&two, b), 0);
    ck_assert_uint_eq(listed_subscriptions(&two, a), 1);

    /* The control API inserts into the tenant it names. */
    char *insert = format("{\"tenant\":\"%s\",%s", OTHER_TENANT_ID, body + 1);
    ck_assert_int_eq(control_on(&two, "POST", "/_fakegraph/subscriptions", insert, &result), 201);
    json_t *inserted = parse_json(&result);
    ck_assert_str_eq(json_string_value(json_object_get(inserted, "tenant")), OTHER_TENANT_ID);
    json_decref(inserted);
    http_result_clear(&result);
    ck_assert_uint_eq(listed_subscriptions(&two, b), 1);

    free(insert);
    free(remove);
    free(renewal);
    free(path_a);
    free(body);
    free(id_b);
    free(id_a);
    free(url);
    responder_stop(&responder);
    free(b);
    free(a);
    ck_assert_int_eq(fakegraph_stop(&two), 0);
}
END_TEST

START_TEST(notify_reaches_record_tenant_only)
{
    struct fakegraph_process two;
    start_two_tenants(&two, NULL);
    char *a = bearer_header_for(&two, TENANT_ID);
    char *b = bearer_header_for(&two, OTHER_TENANT_ID);
    struct responder receiver_a;
    struct responder receiver_b;
    responder_start(&receiver_a, RESPONDER_ECHO);
    responder_start(&receiver_b, RESPONDER_ECHO);
    char *url_a = responder_url(&receiver_a, "/notify");
    char *url_b = responder_url(&receiver_b, "/notify");
    char *lifecycle_b = responder_url(&receiver_b, "/lifecycle");
    char *id_a = create_subscription(&two, a, url_a, NULL);
    char *id_b = create_subscription(&two, b, url_b, lifecycle_b);

    /* A record of the second tenant: only that tenant's subscription is notified. */
    const char *pstn[] = {"--record", "callrecord-pstn.json", NULL};
    publish_on(&two, OTHER_TENANT_ID, pstn);
    struct http_result result;
    ck_assert_int_eq(control_on(&two, "POST", "/_fakegraph/notify",
                                "{\"callId\":\"" PSTN_CALL_ID "\",\"changeType\":\"updated\"}",
                                &result), 200);
    json_t *answer = parse_json(&result);
    ck_assert_uint_eq(json_array_size(json_object_get(answer, "statuses")), 1);
    json_decref(answer);
    http_result_clear(&result);
    ck_assert_uint_eq(notifications_received(&receiver_a), 0);
    ck_assert_uint_eq(notifications_received(&receiver_b), 1);
    json_t *item = last_notification_item(&receiver_b);
    ck_assert_str_eq(json_string_value(json_object_get(item, "tenantId")), OTHER_TENANT_ID);
    ck_assert_str_eq(json_string_value(json_object_get(item, "subscriptionId")), id_b);
    json_decref(item);

    /* trigger --tenant picks the tenant, and a call id published nowhere goes to the default. */
    const char *args[] = {"trigger", "--control", two.base_url, "--cafile", ca_file,
                          "--call-id", PSTN_CALL_ID, "--tenant", TENANT_ID, NULL};
    char *output = NULL;
    ck_assert_int_eq(run_fakegraph(args, &output), 0);
    ck_assert_str_eq(output, "trigger: HTTP 202\n");
    free(output);
    ck_assert_int_eq(control_on(&two, "POST", "/_fakegraph/notify",
                                "{\"callId\":\"" UNKNOWN_CALL_ID "\"}", NULL), 200);
    ck_assert_uint_eq(notifications_received(&receiver_a), 2);
    ck_assert_uint_eq(notifications_received(&receiver_b), 1);
    item = last_notification_item(&receiver_a);
    ck_assert_str_eq(json_string_value(json_object_get(item, "tenantId")), TENANT_ID);
    ck_assert_str_eq(json_string_value(json_object_get(item, "subscriptionId")), id_a);
    json_decref(item);

    /* A lifecycle event goes to the named tenant's subscriptions only. */
    ck_assert_int_eq(control_on(&two, "POST", "/_fakegraph/notify",
                                "{\"lifecycleEvent\":\"reauthorizationRequired\",\"tenant\":\""
                                OTHER_TENANT_ID "\"}", NULL), 200);
    ck_assert_uint_eq(notifications_received(&receiver_b), 2);
    item = last_notification_item(&receiver_b);
    ck_assert_str_eq(json_string_value(json_object_get(item, "lifecycleEvent")),
                     "reauthorizationRequired");
    ck_assert_str_eq(json_string_value(json_object_get(item, "tenantId")), OTHER_TENANT_ID);
    json_decref(item);
    ck_assert_uint_eq(notifications_received(&receiver_a), 2);

    /* A tenant that is not served is a 400 that names the served ones. */
    ck_assert_int_eq(control_on(&two, "POST", "/_fakegraph/notify",
                                "{\"callId\":\"" PSTN_CALL_ID "\",\"tenant\":\""
                                UNSERVED_TENANT_ID "\"}", &result), 400);
    ck_assert_ptr_nonnull(strstr(result.body, TENANT_ID ", " OTHER_TENANT_ID));
    http_result_clear(&result);

    /* A record published in both tenants needs "tenant". */
    publish_on(&two, NULL, pstn);
    ck_assert_int_eq(control_on(&two, "POST", "/_fakegraph/notify",
                                "{\"callId\":\"" PSTN_CALL_ID "\"}", &result), 400);
    ck_assert_ptr_nonnull(strstr(result.body, "name one with"));
    http_result_clear(&result);
    ck_assert_uint_eq(notifications_received(&receiver_a), 2);
    ck_assert_uint_eq(notifications_received(&receiver_b), 2);

    free(id_b);
    free(id_a);
    free(lifecycle_b);
    free(url_b);
    free(url_a);
    responder_stop(&receiver_b);
    responder_stop(&receiver_a);
    free(b);
    free(a);
    ck_assert_int_eq(fakegraph_stop(&two), 0);
}
END_TEST

START_TEST(fault_scoped_to_one_tenant)
{
    struct fakegraph_process two;
    start_two_tenants(&two, NULL);
    const char *v1[] = {"--record", "callrecord-p2p-v1.json", NULL};
    publish_on(&two, NULL, v1);
    publish_on(&two, OTHER_TENANT_ID, v1);
    char *a = bearer_header_for(&two, TENANT_ID);
    char *b = bearer_header_for(&two, OTHER_TENANT_ID);

    const char *args[] = {"fault", "--control", two.base_url, "--cafile", ca_file, "--match",
                          "/v1.0/communications/callRecords", "--status", "503", "--count", "2",
                          "--tenant", OTHER_TENANT_ID, NULL};
    char *output = NULL;
    ck_assert_int_eq(run_fakegraph(args, &output), 0);
    ck_assert_ptr_nonnull(strstr(output, "\"tenant\":\"" OTHER_TENANT_ID "\""));
    free(output);

    /* The first tenant keeps working while the second one's Graph is down. */
    const char *path = "/v1.0/communications/callRecords/" P2P_CALL_ID;
    ck_assert_int_eq(tenant_status(&two, a, "GET", path, NULL), 200);
    ck_assert_int_eq(tenant_status(&two, b, "GET", path, NULL), 503);
    ck_assert_int_eq(tenant_status(&two, a, "GET", path, NULL), 200);
    ck_assert_int_eq(tenant_status(&two, b, "GET", path, NULL), 503);
    ck_assert_int_eq(tenant_status(&two, b, "GET", path, NULL), 200);
    ck_assert_uint_eq(count_tenant_logged(&two, path, OTHER_TENANT_ID, "status 503"), 2);
    ck_assert_uint_eq(count_tenant_logged(&two, path, TENANT_ID, ""), 2);

    /* A fault of the first tenant's token endpoint leaves the second one's working. */
    ck_assert_int_eq(control_on(&two, "POST", "/_fakegraph/faults",
                                "{\"match\":\"/\",\"status\":500,\"tenant\":\"" TENANT_ID "\"}",
                                NULL), 201);
    char *form = token_form(&two, CLIENT_ID, CLIENT_SECRET, "client_credentials", NULL);
    struct http_result result;
    request_token(&two, OTHER_TENANT_ID, form, &result);
    ck_assert_int_eq(result.status, 200);
    http_result_clear(&result);
    request_token(&two, TENANT_ID, form, &result);
    ck_assert_int_eq(result.status, 500);
    http_result_clear(&result);

    ck_assert_int_eq(control_on(&two, "POST", "/_fakegraph/faults",
                                "{\"match\":\"/\",\"status\":500,\"tenant\":\""
                                UNSERVED_TENANT_ID "\"}", &result), 400);
    ck_assert_ptr_nonnull(strstr(result.body, "is not served"));
    http_result_clear(&result);

    free(form);
    free(b);
    free(a);
    ck_assert_int_eq(fakegraph_stop(&two), 0);
}
END_TEST

START_TEST(quota_counted_per_tenant)
{
    struct fakegraph_process two;
    const char *extra[] = {"--quota-tenant", "3/60", "--quota-record", "2/60", NULL};
    start_two_tenants(&two, extra);
    char *a = bearer_header_for(&two, TENANT_ID);
    char *b = bearer_header_for(&two, OTHER_TENANT_ID);
    const char *a_headers[] = {a, NULL};
    const char *b_headers[] = {b, NULL};
    char *first = url_at(&two, "/v1.0/communications/callRecords/" UNKNOWN_CALL_ID);
    char *second = url_at(&two, "/v1.0/communications/callRecords/" P2P_CALL_ID);
    char retry_after[32];

    /* Each tenant has its own window per record. Nothing is published, so 404 means admitted. */
    ck_assert_int_eq(get_status(first, a_headers, retry_after, sizeof(retry_after)), 404);
    ck_assert_int_eq(get_status(first, a_headers, retry_after, sizeof(retry_after)), 404);
    ck_assert_int_eq(get_status(first, a_headers, retry_after, sizeof(retry_after)), 429);
    ck_assert_int_eq(get_status(first, b_headers, retry_after, sizeof(retry_after)), 404);
    ck_assert_int_eq(get_status(first, b_headers, retry_after, sizeof(retry_after)), 404);

    /* Each tenant also has its own tenant window of 3 requests. */
    ck_assert_int_eq(get_status(second, a_headers, retry_after, sizeof(retry_after)), 404);
    ck_assert_int_eq(get_status(second, a_headers, retry_after, sizeof(retry_after)), 429);
    ck_assert_int_eq(get_status(second, b_headers, retry_after, sizeof(retry_after)), 404);
    ck_assert_int_eq(get_status(second, b_headers, retry_after, sizeof(retry_after)), 429);
    const char *prefix = "/v1.0/communications/callRecords/";
    ck_assert_uint_eq(count_tenant_logged(&two, prefix, TENANT_ID, "quota record"), 1);
    ck_assert_uint_eq(count_tenant_logged(&two, prefix, TENANT_ID, "quota tenant"), 1);
    ck_assert_uint_eq(count_tenant_logged(&two, prefix, OTHER_TENANT_ID, "quota record"), 0);
    ck_assert_uint_eq(count_tenant_logged(&two, prefix, OTHER_TENANT_ID, "quota tenant"), 1);

    /* reset empties the quota windows of every tenant. */
    ck_assert_int_eq(control_on(&two, "POST", "/_fakegraph/reset", NULL, NULL), 204);
    ck_assert_int_eq(get_status(second, a_headers, retry_after, sizeof(retry_after)), 404);
    ck_assert_int_eq(get_status(second, b_headers, retry_after, sizeof(retry_after)), 404);

    free(second);
    free(first);
    free(b);
    free(a);
    ck_assert_int_eq(fakegraph_stop(&two), 0);
}
END_TEST

START_TEST(reset_clears_every_tenant)
{
    struct fakegraph_process two;
    start_two_tenants(&two, NULL);
    const char *pstn[] = {"--record", "callrecord-pstn.json", NULL};
    publish_on(&two, NULL, pstn);
    publish_on(&two, OTHER_TENANT_ID, pstn);
    char *a = bearer_header_for(&two, TENANT_ID);
    char *b = bearer_header_for(&two, OTHER_TENANT_ID);
    ck_assert_int_eq(record_version(&two, a, PSTN_CALL_ID), 2);
    ck_assert_int_eq(record_version(&two, b, PSTN_CALL_ID), 2);
    ck_assert_int_eq(control_on(&two, "POST", "/_fakegraph/faults",
                                "{\"match\":\"/v1.0/\",\"status\":500,\"tenant\":\""
                                OTHER_TENANT_ID "\"}", NULL), 201);

    ck_assert_int_eq(control_on(&two, "POST", "/_fakegraph/reset", NULL, NULL), 204);
    ck_assert_int_eq(record_version(&two, a, PSTN_CALL_ID), -404);
    ck_assert_int_eq(record_version(&two, b, PSTN_CALL_ID), -404);
    struct http_result result;
    ck_assert_int_eq(control_on(&two, "GET", "/_fakegraph/faults", NULL, &result), 200);
    json_t *faults = parse_json(&result);
    ck_assert_uint_eq(json_array_size(json_object_get(faults, "value")), 0);
    json_decref(faults);
    http_result_clear(&result);

    free(b);
    free(a);
    ck_assert_int_eq(fakegraph_stop(&two), 0);
}
END_TEST

START_TEST(scenario_names_tenant)
{
    struct fakegraph_process two;
    start_two_tenants(&two, NULL);
    struct responder responder;
    responder_start(&responder, RESPONDER_ECHO);
    char *url = responder_url(&responder, "/notify");
    char *dir = crd_test_make_tmpdir("fakegraph-scenario");
    char *scenario = crd_test_write_file(dir, "tenant.scenario",
                                         "publish callrecord-pstn.json tenant " OTHER_TENANT_ID
                                         "\n"
                                         "notify @callrecord-pstn.json updated tenant "
                                         OTHER_TENANT_ID "\n", 0644);
    char *fixtures = format("%s/tests/fixtures", crd_test_srcdir());
    const char *args[] = {"scenario", "--control", two.base_url, "--cafile", ca_file,
                          "--fixtures", fixtures, "--file", scenario,
                          "--notification-url", url, "--client-state", CLIENT_STATE, NULL};
    char *output = NULL;
    int status = run_fakegraph(args, &output);
    ck_assert_msg(status == 0, "scenario exited %d: %s", status, output);
    ck_assert_ptr_nonnull(strstr(output, ", tenant " OTHER_TENANT_ID));
    free(output);

    /* With a notification URL, the tenant becomes the items' tenantId. */
    ck_assert_uint_eq(notifications_received(&responder), 1);
    json_t *item = last_notification_item(&responder);
    ck_assert_str_eq(json_string_value(json_object_get(item, "tenantId")), OTHER_TENANT_ID);
    json_decref(item);
    char *a = bearer_header_for(&two, TENANT_ID);
    char *b = bearer_header_for(&two, OTHER_TENANT_ID);
    ck_assert_int_eq(record_version(&two, b, PSTN_CALL_ID), 2);
    ck_assert_int_eq(record_version(&two, a, PSTN_CALL_ID), -404);

    free(b);
    free(a);
    crd_test_remove_tree(dir);
    free(fixtures);
    free(scenario);
    free(dir);
    free(url);
    responder_stop(&responder);
    ck_assert_int_eq(fakegraph_stop(&two), 0);
}
END_TEST

/* Each case is a list of --tenant values that serve rejects, and the message it prints. */
static const struct {
    const char *tenants[10];
    const char *expected;
} invalid_tenant_lists[] = {
    {{TENANT_ID, "2A37C3B7-F073-59A1-B249-42C4E33881C2"}, "is given twice"},
    {{"00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002",
      "00000000-0000-4000-8000-000000000003", "00000000-0000-4000-8000-000000000004",
      "00000000-0000-4000-8000-000000000005", "00000000-0000-4000-8000-000000000006",
      "00000000-0000-4000-8000-000000000007", "00000000-0000-4000-8000-000000000008",
      "00000000-0000-4000-8000-000000000009"},
     "at most 8 tenants"},
    {{"not-a-guid"}, "invalid --tenant 'not-a-guid'"},
};

START_TEST(serve_rejects_invalid_tenants)
{
    const char *args[32] = {"serve"};
    size_t count = 1;
    for (size_t i = 0; i < 10 && invalid_tenant_lists[_i].tenants[i] != NULL; i++) {
        args[count++] = "--tenant";
        args[count++] = invalid_tenant_lists[_i].tenants[i];
    }
    args[count] = NULL;
    char *output = NULL;
    ck_assert_int_eq(run_fakegraph(args, &output), 2);  /* usage error */
    ck_assert_msg(strstr(output, invalid_tenant_lists[_i].expected) != NULL, "output: %s",
                  output);
    free(output);
}
END_TEST

/* ---- suite ------------------------------------------------------------------------------- */

static Suite *fakegraph_suite(void)
{
    Suite *suite = suite_create("fakegraph");

    TCase *tokens = tcase_create("tokens");
    tcase_add_test(tokens, token_issued_for_right_secret);
    tcase_add_test(tokens, token_rejected_for_wrong_secret);
    tcase_add_loop_test(tokens, token_rejected_for_wrong_field, 0,
                        sizeof(bad_token_requests) / sizeof(bad_token_requests[0]));
    tcase_add_test(tokens, record_without_token_gets_401);
    tcase_add_test(tokens, token_expires_after_lifetime);
    tcase_add_test(tokens, serve_any_port_and_sigterm);
    suite_add_tcase(suite, tokens);

    TCase *records = tcase_create("records");
    tcase_add_test(records, large_meeting_in_two_session_pages);
    tcase_add_test(records, large_meeting_in_two_participant_pages);
    tcase_add_test(records, record_without_expand_has_no_sessions);
    tcase_add_test(records, newest_publish_wins);
    tcase_add_test(records, unpublished_record_gets_404);
    tcase_add_test(records, not_found_for_then_200);
    suite_add_tcase(suite, records);

    TCase *faults = tcase_create("faults");
    tcase_add_loop_test(faults, fault_served_count_times, 0,
                        sizeof(fault_cases) / sizeof(fault_cases[0]));
    tcase_add_test(faults, fault_command_queues_fault);
    suite_add_tcase(suite, faults);

    TCase *subscriptions = tcase_create("subscriptions");
    tcase_add_test(subscriptions, subscription_handshake_and_conflict);
    tcase_add_test(subscriptions, subscription_failed_handshake_gets_400);
    tcase_add_test(subscriptions, subscription_body_validated);
    tcase_add_test(subscriptions, notify_override_reaches_responder);
    tcase_add_test(subscriptions, notify_uses_subscription);
    suite_add_tcase(suite, subscriptions);

    TCase *control_api = tcase_create("control");
    tcase_set_timeout(control_api, 60);  /* the demo scenario pauses on purpose */
    tcase_add_test(control_api, request_log_records_requests);
    tcase_add_test(control_api, demo_scenario_runs);
    tcase_add_test(control_api, scenario_fails_without_202);
    suite_add_tcase(suite, control_api);

    TCase *quotas = tcase_create("quotas");
    tcase_add_test(quotas, quota_429_per_record_and_tenant);
    tcase_add_test(quotas, quota_window_slides);
    tcase_add_loop_test(quotas, quota_option_rejects_invalid, 0,
                        sizeof(invalid_quotas) / sizeof(invalid_quotas[0]));
    suite_add_tcase(suite, quotas);

    TCase *tenants = tcase_create("tenants");
    tcase_set_timeout(tenants, 30);
    tcase_add_test(tenants, tenants_each_issue_tokens);
    tcase_add_test(tenants, record_of_one_tenant_404_for_other);
    tcase_add_test(tenants, subscriptions_scoped_to_tenant);
    tcase_add_test(tenants, notify_reaches_record_tenant_only);
    tcase_add_test(tenants, fault_scoped_to_one_tenant);
    tcase_add_test(tenants, quota_counted_per_tenant);
    tcase_add_test(tenants, reset_clears_every_tenant);
    tcase_add_test(tenants, scenario_names_tenant);
    tcase_add_loop_test(tenants, serve_rejects_invalid_tenants, 0,
                        sizeof(invalid_tenant_lists) / sizeof(invalid_tenant_lists[0]));
    suite_add_tcase(suite, tenants);
    return suite;
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    cert_dir = crd_test_make_tmpdir("fakegraph-cert");
    char *testcert = crd_test_build_path("tests/testcert");
    char *argv[] = {testcert, cert_dir, NULL};
    if (crd_test_run(argv, NULL) != 0) {
        fprintf(stderr, "tests/testcert failed\n");
        return 1;
    }
    free(testcert);
    ca_file = format("%s/ca.pem", cert_dir);

    if (fakegraph_start(&server, NULL) != 0) {
        fprintf(stderr, "fakegraph serve did not become ready\n");
        return 1;
    }

    SRunner *runner = srunner_create(fakegraph_suite());
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);

    int stopped = fakegraph_stop(&server);
    if (stopped != 0) {
        fprintf(stderr, "fakegraph serve exited with %d after SIGTERM\n", stopped);
        failed++;
    }
    crd_test_remove_tree(cert_dir);
    free(cert_dir);
    free(ca_file);
    curl_global_cleanup();
    return failed == 0 ? 0 : 1;
}
