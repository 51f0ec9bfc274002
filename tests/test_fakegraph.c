/* SPDX-License-Identifier: MIT */
/*
 * Tests of "fakegraph serve" and its client commands: the real fakegraph
 * binary on a free loopback port with a certificate generated at test time,
 * driven over HTTPS with libcurl. A small libmicrohttpd HTTPS server in the
 * test plays the daemon's listener for the validation handshakes and the
 * notifications that fakegraph sends.
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

/* Returns "Authorization: Bearer <token>" for a token issued by process. */
static char *bearer_header(const struct fakegraph_process *process)
{
    char *form = token_form(process, CLIENT_ID, CLIENT_SECRET, "client_credentials", NULL);
    struct http_result result;
    request_token(process, TENANT_ID, form, &result);
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

static long control(const char *method, const char *path, const char *body,
                    struct http_result *ret_result)
{
    char *url = url_at(&server, path);
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

/* Publishes fixture files through "fakegraph publish"; args are its extra arguments. */
static void publish(const char *const *args)
{
    const char *argv[32] = {"publish", "--control", server.base_url, "--cafile", ca_file};
    size_t argc = 5;
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
