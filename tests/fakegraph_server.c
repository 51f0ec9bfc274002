/* SPDX-License-Identifier: MIT */
/*
 * fakegraph serve, HTTP side: libmicrohttpd with one thread per connection,
 * request bodies, routing, the queued faults, the per-tenant quotas,
 * responses, the request log and the log lines. Routing finds a request's
 * tenant before it applies the faults, so that a fault scoped to a tenant
 * applies to that tenant's requests only.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fakegraph_server.h"

/* Idle keep-alive connections are closed after this many seconds. */
#define CONNECTION_TIMEOUT_S 60

/* Each connection has its own thread, so this also limits the threads. */
#define CONNECTION_LIMIT 256

/* Characters of the query that a log line shows. */
#define LOGGED_QUERY_MAX 200

/* ---- logging -------------------------------------------------------------- */

void fakegraph_server_log(struct fakegraph_server *server, const char *fmt, ...)
{
    char line[1024];
    char now[40];
    crd_time_format_iso8601(crd_time_now_ms(), now, sizeof(now));
    int prefix_len = snprintf(line, sizeof(line), "%s fakegraph: ", now);

    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(line + prefix_len, sizeof(line) - (size_t)prefix_len - 1, fmt, ap);
    va_end(ap);

    size_t total = (size_t)prefix_len + (size_t)len;
    if (total > sizeof(line) - 2) {
        total = sizeof(line) - 2;
    }
    line[total++] = '\n';
    /* One write() per line, so that lines of concurrent requests do not interleave. */
    ssize_t written = write(server->log_fd, line, total);
    (void)written;
}

void fakegraph_format_error_date(int64_t ms, char *buf, size_t size)
{
    time_t seconds = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&seconds, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
}

void fakegraph_server_wait(struct fakegraph_server *server, unsigned ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += ms / 1000;
    deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec += 1;
        deadline.tv_nsec -= 1000000000L;
    }

    pthread_mutex_lock(&server->lock);
    while (!server->stopping) {
        if (pthread_cond_timedwait(&server->stopping_changed, &server->lock, &deadline) ==
            ETIMEDOUT) {
            break;
        }
    }
    pthread_mutex_unlock(&server->lock);
}

/* Appends the request to the request log served by GET /_fakegraph/requests. */
static void record_request(struct fakegraph_server *server, const struct fakegraph_request *request,
                           unsigned status)
{
    char at[40];
    crd_time_format_iso8601(crd_time_now_ms(), at, sizeof(at));
    json_t *entry = json_pack("{s:s, s:s, s:s, s:I, s:s}", "method", request->method, "path",
                              request->path, "query", request->query, "status", (json_int_t)status,
                              "at", at);
    if (entry != NULL && request->fault[0] != '\0') {
        (void)json_object_set_new(entry, "fault", json_string(request->fault));
    }
    if (entry != NULL && request->tenant != FAKEGRAPH_NO_TENANT) {
        (void)json_object_set_new(entry, "tenant",
                                  json_string(server->tenants[request->tenant]));
    }

    pthread_mutex_lock(&server->lock);
    if (entry == NULL || json_array_size(server->request_log) >= FAKEGRAPH_REQUEST_LOG_MAX ||
        json_array_append(server->request_log, entry) < 0) {
        server->request_log_dropped++;
    }
    pthread_mutex_unlock(&server->lock);
    json_decref(entry);
}

/* Writes the request's log line: method, path, query, status, duration and fault. */
static void log_request(struct fakegraph_server *server, const struct fakegraph_request *request,
                        unsigned status)
{
    size_t query_len = strlen(request->query);
    fakegraph_server_log(server, "%s %.200s%s%.*s%s -> %u in %lld ms%s%s", request->method,
                         request->path, query_len > 0 ? "?" : "",
                         (int)(query_len < LOGGED_QUERY_MAX ? query_len : LOGGED_QUERY_MAX),
                         request->query, query_len > LOGGED_QUERY_MAX ? "..." : "", status,
                         (long long)(crd_time_monotonic_ms() - request->started_ms),
                         request->fault[0] != '\0' ? ", fault: " : "", request->fault);
}

/* ---- responses ------------------------------------------------------------- */

/* A response body that a truncate fault cuts after send_len bytes. */
struct truncated_body {
    char *data;
    size_t send_len;
};

static ssize_t read_truncated_body(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct truncated_body *truncated = cls;
    if (pos >= truncated->send_len) {
        /* libmicrohttpd closes the connection, so the client sees a short body. */
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t left = truncated->send_len - (size_t)pos;
    size_t n = left < max ? left : max;
    memcpy(buf, truncated->data + pos, n);
    return (ssize_t)n;
}

static void free_truncated_body(void *cls)
{
    struct truncated_body *truncated = cls;
    free(truncated->data);
    free(truncated);
}

/* Creates the response object; with request->truncate the body stops halfway. */
static struct MHD_Response *create_response(const struct fakegraph_request *request, char *body)
{
    size_t len = body != NULL ? strlen(body) : 0;
    if (!request->truncate || len == 0) {
        if (body == NULL) {
            return MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        }
        struct MHD_Response *response =
            MHD_create_response_from_buffer_with_free_callback(len, body, free);
        if (response == NULL) {
            free(body);
        }
        return response;
    }

    struct truncated_body *truncated = malloc(sizeof(*truncated));
    if (truncated == NULL) {
        free(body);
        return NULL;
    }
    truncated->data = body;
    truncated->send_len = len / 2;
    /* The Content-Length announces the whole body. */
    struct MHD_Response *response = MHD_create_response_from_callback(
        len, 4096, read_truncated_body, truncated, free_truncated_body);
    if (response == NULL) {
        free_truncated_body(truncated);
    }
    return response;
}

enum MHD_Result fakegraph_respond(struct fakegraph_server *server,
                                  struct MHD_Connection *connection,
                                  struct fakegraph_request *request, unsigned status,
                                  const char *content_type, char *body,
                                  const char *const *headers)
{
    record_request(server, request, status);
    log_request(server, request, status);

    struct MHD_Response *response = create_response(request, body);
    if (response == NULL) {
        return MHD_NO;
    }
    if (content_type != NULL) {
        (void)MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    }
    (void)MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i += 2) {
        (void)MHD_add_response_header(response, headers[i], headers[i + 1]);
    }

    enum MHD_Result result = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return result;
}

enum MHD_Result fakegraph_respond_json(struct fakegraph_server *server,
                                       struct MHD_Connection *connection,
                                       struct fakegraph_request *request, unsigned status,
                                       json_t *value)
{
    char *body = value != NULL ? json_dumps(value, JSON_COMPACT) : NULL;
    json_decref(value);
    if (body == NULL) {
        return MHD_NO;
    }
    return fakegraph_respond(server, connection, request, status,
                             "application/json; charset=utf-8", body, NULL);
}

enum MHD_Result fakegraph_respond_graph(struct fakegraph_server *server,
                                        struct MHD_Connection *connection,
                                        struct fakegraph_request *request, unsigned status,
                                        json_t *value, const char *const *headers)
{
    char *body = NULL;
    if (value != NULL) {
        body = json_dumps(value, JSON_COMPACT);
        json_decref(value);
        if (body == NULL) {
            return MHD_NO;
        }
    }

    const char *all_headers[16] = {
        "request-id", request->request_id,
        "client-request-id", request->client_request_id,
    };
    size_t n = 4;
    for (size_t i = 0; headers != NULL && headers[i] != NULL && n + 3 < 16; i += 2) {
        all_headers[n++] = headers[i];
        all_headers[n++] = headers[i + 1];
    }
    all_headers[n] = NULL;
    return fakegraph_respond(server, connection, request, status,
                             body != NULL ? FAKEGRAPH_GRAPH_CONTENT_TYPE : NULL, body,
                             all_headers);
}

json_t *fakegraph_graph_error_body(const struct fakegraph_request *request, const char *code,
                                const char *message)
{
    char date[32];
    fakegraph_format_error_date(crd_time_now_ms(), date, sizeof(date));
    return json_pack("{s:{s:s, s:s, s:{s:s, s:s, s:s}}}", "error", "code", code, "message",
                     message, "innerError", "date", date, "request-id", request->request_id,
                     "client-request-id", request->client_request_id);
}

static enum MHD_Result respond_graph_error_with(struct fakegraph_server *server,
                                                struct MHD_Connection *connection,
                                                struct fakegraph_request *request,
                                                unsigned status, const char *code,
                                                const char *message, const char *const *headers)
{
    json_t *body = fakegraph_graph_error_body(request, code, message);
    if (body == NULL) {
        return MHD_NO;
    }
    return fakegraph_respond_graph(server, connection, request, status, body, headers);
}

enum MHD_Result fakegraph_respond_graph_error(struct fakegraph_server *server,
                                              struct MHD_Connection *connection,
                                              struct fakegraph_request *request, unsigned status,
                                              const char *code, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    return respond_graph_error_with(server, connection, request, status, code, message, NULL);
}

enum MHD_Result fakegraph_respond_control_error(struct fakegraph_server *server,
                                                struct MHD_Connection *connection,
                                                struct fakegraph_request *request,
                                                unsigned status, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);

    fakegraph_server_log(server, "control: %s %s: %s", request->method, request->path, message);
    const char *code = status == MHD_HTTP_NOT_FOUND            ? "notFound"
                       : status == MHD_HTTP_METHOD_NOT_ALLOWED ? "methodNotAllowed"
                       : status >= 500                         ? "deliveryFailed"
                                                               : "invalidRequest";
    return fakegraph_respond_json(server, connection, request, status,
                                  json_pack("{s:{s:s, s:s}}", "error", "code", code, "message",
                                            message));
}

/* ---- faults ------------------------------------------------------------------ */

/* Graph's error code and message for an injected status. */
static void describe_fault_status(unsigned status, const char **ret_code, const char **ret_message)
{
    switch (status) {
    case 429:
        *ret_code = "TooManyRequests";
        *ret_message = "Please retry again later.";
        break;
    case 500:
        *ret_code = "generalException";
        *ret_message = "General exception while processing.";
        break;
    case 502:
        *ret_code = "badGateway";
        *ret_message = "The server received an invalid response from an upstream server.";
        break;
    case 503:
        *ret_code = "serviceNotAvailable";
        *ret_message = "The service is temporarily unavailable. You may repeat the request "
                       "after a delay, which may be specified in a Retry-After header.";
        break;
    case 504:
        *ret_code = "gatewayTimeout";
        *ret_message = "The server, while acting as a proxy, did not receive a timely response "
                       "from the upstream server.";
        break;
    case 509:
        *ret_code = "bandwidthLimitExceeded";
        *ret_message = "Your app has been throttled for exceeding the maximum bandwidth cap.";
        break;
    default:
        *ret_code = "injectedFault";
        *ret_message = "fakegraph responded with a status queued through /_fakegraph/faults.";
        break;
    }
}

/* Responds with the fault's status and a Graph error body, as error-429.json shows for 429. */
static enum MHD_Result respond_fault_status(struct fakegraph_server *server,
                                            struct MHD_Connection *connection,
                                            struct fakegraph_request *request,
                                            const struct fakegraph_fault *fault)
{
    const char *code = NULL;
    const char *message = NULL;
    describe_fault_status(fault->status, &code, &message);

    json_t *body = fakegraph_graph_error_body(request, code, message);
    if (body == NULL) {
        return MHD_NO;
    }
    if (fault->status == 429) {
        /* Graph's throttling sample adds these to innerError. */
        json_t *inner = json_object_get(json_object_get(body, "error"), "innerError");
        (void)json_object_set_new(inner, "code", json_string("429"));
        (void)json_object_set_new(inner, "message", json_string("Please retry after"));
        (void)json_object_set_new(inner, "status", json_string("429"));
    }

    char retry_after[24];
    snprintf(retry_after, sizeof(retry_after), "%ld", fault->retry_after_s);
    const char *headers[] = {"Retry-After", retry_after, NULL};
    return fakegraph_respond_graph(server, connection, request, fault->status, body,
                                   fault->retry_after_s >= 0 ? headers : NULL);
}

/*
 * Applies the next queued fault for the request's path and tenant, if any.
 * Returns true when the fault has queued a response or dropped the
 * connection. Otherwise the request continues, possibly delayed and marked
 * for truncation.
 */
static bool apply_fault(struct fakegraph_server *server, struct MHD_Connection *connection,
                        struct fakegraph_request *request, enum MHD_Result *ret_result)
{
    struct fakegraph_fault fault;
    if (!fakegraph_faults_take(server, request->path, request->tenant, &fault)) {
        return false;
    }

    size_t used = 0;
    if (fault.delay_ms > 0) {
        used += (size_t)snprintf(request->fault + used, sizeof(request->fault) - used,
                                 "delay %u ms, ", fault.delay_ms);
        fakegraph_server_wait(server, fault.delay_ms);
    }
    if (fault.drop) {
        snprintf(request->fault + used, sizeof(request->fault) - used, "drop");
        record_request(server, request, 0);
        log_request(server, request, 0);
        *ret_result = MHD_NO; /* libmicrohttpd closes the connection without a response */
        return true;
    }
    if (fault.status != 0) {
        used += (size_t)snprintf(request->fault + used, sizeof(request->fault) - used,
                                 "status %u, ", fault.status);
    }
    if (fault.truncate) {
        used += (size_t)snprintf(request->fault + used, sizeof(request->fault) - used,
                                 "truncate, ");
        request->truncate = true;
    }
    if (used >= 2) {
        request->fault[used - 2] = '\0';
    }

    if (fault.status != 0) {
        *ret_result = respond_fault_status(server, connection, request, &fault);
        return true;
    }
    return false;
}

/* ---- quotas ------------------------------------------------------------------ */

void fakegraph_quota_clear_locked(struct fakegraph_server *server)
{
    for (size_t i = 0; i < FAKEGRAPH_TENANT_MAX; i++) {
        free(server->tenant_windows[i].admitted_ms);
        server->tenant_windows[i] = (struct fakegraph_quota_window){0};
    }
    for (size_t i = 0; i < server->record_window_count; i++) {
        free(server->record_windows[i].admitted_ms);
    }
    free(server->record_windows);
    server->record_windows = NULL;
    server->record_window_count = 0;
}

/*
 * Returns 0 when the window has room for one more request at now_ms, else
 * the milliseconds until its oldest admission leaves the window.
 */
static int64_t quota_wait_ms(const struct fakegraph_quota_window *window,
                             const struct fakegraph_quota *quota, int64_t now_ms)
{
    if (quota->limit == 0 || window->count < quota->limit) {
        return 0;
    }
    int64_t leaves_at = window->admitted_ms[window->next] + (int64_t)quota->window_s * 1000;
    return leaves_at > now_ms ? leaves_at - now_ms : 0;
}

/* Records an admission at now_ms, replacing the oldest one once the ring is full. */
static int quota_admit(struct fakegraph_quota_window *window, const struct fakegraph_quota *quota,
                       int64_t now_ms)
{
    if (quota->limit == 0) {
        return 0;
    }
    if (window->admitted_ms == NULL) {
        window->admitted_ms = calloc(quota->limit, sizeof(*window->admitted_ms));
        if (window->admitted_ms == NULL) {
            return -ENOMEM;
        }
    }
    window->admitted_ms[window->next] = now_ms;
    window->next = (window->next + 1) % quota->limit;
    if (window->count < quota->limit) {
        window->count++;
    }
    return 0;
}

/* Finds or adds the window of one call record of tenant. Call with server->lock held. */
static struct fakegraph_quota_window *record_window_locked(struct fakegraph_server *server,
                                                          int tenant, const char *id,
                                                          size_t id_len)
{
    for (size_t i = 0; i < server->record_window_count; i++) {
        struct fakegraph_quota_window *window = &server->record_windows[i];
        if (window->tenant == tenant && strlen(window->key) == id_len &&
            memcmp(window->key, id, id_len) == 0) {
            return window;
        }
    }
    struct fakegraph_quota_window *grown =
        realloc(server->record_windows,
                (server->record_window_count + 1) * sizeof(*server->record_windows));
    if (grown == NULL) {
        return NULL;
    }
    server->record_windows = grown;
    struct fakegraph_quota_window *window = &grown[server->record_window_count++];
    *window = (struct fakegraph_quota_window){.tenant = tenant};
    memcpy(window->key, id, id_len);
    return window;
}

/*
 * Counts a call-record request of tenant (rest: the path after "callRecords")
 * against the tenant's quota and, for a request about one record, against
 * that record's quota in the tenant. A request that either quota rejects
 * counts against neither. Returns 0 when admitted, else the seconds for
 * Retry-After (at least 1) and the name of the quota that rejected it in
 * *ret_quota.
 */
static long check_quotas(struct fakegraph_server *server, int tenant, const char *rest,
                         const char **ret_quota)
{
    const char *id = rest[0] == '/' ? rest + 1 : "";
    size_t id_len = strcspn(id, "/");
    bool per_record = server->record_quota.limit > 0 && id_len > 0 &&
                      id_len < sizeof(((struct fakegraph_quota_window *)NULL)->key);
    if (server->tenant_quota.limit == 0 && !per_record) {
        return 0;
    }

    int64_t now_ms = crd_time_monotonic_ms();
    int64_t wait_ms = 0;
    pthread_mutex_lock(&server->lock);
    struct fakegraph_quota_window *tenant_window = &server->tenant_windows[tenant];
    struct fakegraph_quota_window *record =
        per_record ? record_window_locked(server, tenant, id, id_len) : NULL;
    wait_ms = quota_wait_ms(tenant_window, &server->tenant_quota, now_ms);
    *ret_quota = "quota tenant";
    if (wait_ms == 0 && record != NULL) {
        wait_ms = quota_wait_ms(record, &server->record_quota, now_ms);
        *ret_quota = "quota record";
    }
    if (wait_ms == 0) {
        /* Out of memory only loosens the quota, which is fine for an emulator. */
        (void)quota_admit(tenant_window, &server->tenant_quota, now_ms);
        if (record != NULL) {
            (void)quota_admit(record, &server->record_quota, now_ms);
        }
    }
    pthread_mutex_unlock(&server->lock);
    return wait_ms == 0 ? 0 : (long)((wait_ms + 999) / 1000);
}

/* ---- routing ---------------------------------------------------------------- */

static bool has_path_prefix(const char *path, const char *prefix, const char **ret_rest)
{
    size_t len = strlen(prefix);
    if (strncmp(path, prefix, len) != 0 || (path[len] != '\0' && path[len] != '/')) {
        return false;
    }
    *ret_rest = path + len;
    return true;
}

/* Matches "/{tenant}/oauth2/v2.0/token" and copies the tenant. */
static bool match_token_path(const char *path, char *tenant, size_t size)
{
    const char *suffix = "/oauth2/v2.0/token";
    if (path[0] != '/') {
        return false;
    }
    const char *slash = strchr(path + 1, '/');
    if (slash == NULL || slash == path + 1 || strcmp(slash, suffix) != 0 ||
        (size_t)(slash - path - 1) >= size) {
        return false;
    }
    snprintf(tenant, size, "%.*s", (int)(slash - path - 1), path + 1);
    return true;
}

static enum MHD_Result route_graph(struct fakegraph_server *server,
                                   struct MHD_Connection *connection,
                                   struct fakegraph_request *request)
{
    enum MHD_Result result = MHD_NO;
    if (!fakegraph_check_bearer(server, connection, request, &result)) {
        return result;
    }

    const char *rest = NULL;
    if (has_path_prefix(request->path, "/v1.0/communications/callRecords", &rest)) {
        const char *quota = NULL;
        long retry_after_s = check_quotas(server, request->tenant, rest, &quota);
        if (retry_after_s > 0) {
            /* Logged like a fault, so that the request log tells quota 429s from queued ones. */
            snprintf(request->fault, sizeof(request->fault), "%s", quota);
            struct fakegraph_fault throttled = {.status = 429, .retry_after_s = retry_after_s};
            return respond_fault_status(server, connection, request, &throttled);
        }
        return fakegraph_handle_call_records(server, connection, request, rest);
    }
    if (has_path_prefix(request->path, "/v1.0/subscriptions", &rest)) {
        return fakegraph_handle_subscriptions(server, connection, request, rest);
    }

    /* Graph names the first path segment it does not know. */
    const char *segment = request->path + strlen("/v1.0/");
    size_t segment_len = strcspn(segment, "/");
    return fakegraph_respond_graph_error(server, connection, request, MHD_HTTP_BAD_REQUEST,
                                         "BadRequest", "Resource not found for the segment "
                                         "'%.*s'.", (int)(segment_len < 100 ? segment_len : 100),
                                         segment);
}

static enum MHD_Result route(struct fakegraph_server *server, struct MHD_Connection *connection,
                             struct fakegraph_request *request)
{
    const char *rest = NULL;
    if (has_path_prefix(request->path, "/_fakegraph", &rest)) {
        return fakegraph_handle_control(server, connection, request, rest);
    }

    /* Finds the tenant before the faults, because a fault may be scoped to one tenant. */
    char tenant[128];
    bool is_token = match_token_path(request->path, tenant, sizeof(tenant));
    bool is_graph = strncmp(request->path, "/v1.0/", strlen("/v1.0/")) == 0;
    if (is_token) {
        request->tenant = fakegraph_tenant_find(server, tenant);
    } else if (is_graph) {
        fakegraph_bearer_tenant(server, connection, request);
    }

    enum MHD_Result result = MHD_NO;
    if (apply_fault(server, connection, request, &result)) {
        return result;
    }
    if (is_token) {
        return fakegraph_handle_token(server, connection, request, tenant);
    }
    if (is_graph) {
        return route_graph(server, connection, request);
    }
    return fakegraph_respond_graph_error(server, connection, request, MHD_HTTP_NOT_FOUND,
                                         "NotFound", "fakegraph serves /{tenant}/oauth2/v2.0/"
                                         "token, /v1.0/ and /_fakegraph/ only.");
}

/* ---- request lifecycle -------------------------------------------------------- */

/* Called once per request before the access handler, with the URI still undecoded. */
static void *on_request_start(void *cls, const char *uri, struct MHD_Connection *connection)
{
    struct fakegraph_request *request = calloc(1, sizeof(*request));
    if (request == NULL) {
        return NULL;
    }
    request->raw_uri = strdup(uri != NULL ? uri : "");
    if (request->raw_uri == NULL) {
        free(request);
        return NULL;
    }
    const char *question = strchr(request->raw_uri, '?');
    request->query = question != NULL ? question + 1 : "";
    request->started_ms = crd_time_monotonic_ms();
    request->tenant = FAKEGRAPH_NO_TENANT;
    if (fakegraph_random_guid(request->request_id, NULL) < 0) {
        snprintf(request->request_id, sizeof(request->request_id),
                 "00000000-0000-4000-8000-000000000000");
    }
    return request;
}

static void on_request_completed(void *cls, struct MHD_Connection *connection, void **req_cls,
                                 enum MHD_RequestTerminationCode code)
{
    struct fakegraph_request *request = *req_cls;
    if (request == NULL) {
        return;
    }
    free(request->raw_uri);
    free(request->path);
    free(request->body);
    free(request);
    *req_cls = NULL;
}

static void append_body(struct fakegraph_request *request, const char *data, size_t size)
{
    if (request->body_too_large || request->body_len + size > FAKEGRAPH_REQUEST_BODY_MAX) {
        request->body_too_large = true;
        return;
    }
    /* One byte more than the data, so that handlers can parse the body as a C string. */
    if (request->body_len + size + 1 > request->body_cap) {
        size_t cap = request->body_cap > 0 ? request->body_cap : 4096;
        while (cap < request->body_len + size + 1) {
            cap *= 2;
        }
        char *grown = realloc(request->body, cap);
        if (grown == NULL) {
            request->body_too_large = true;
            return;
        }
        request->body = grown;
        request->body_cap = cap;
    }
    memcpy(request->body + request->body_len, data, size);
    request->body_len += size;
    request->body[request->body_len] = '\0';
}

/* Stores what the first call of the access handler provides. Returns false when out of memory. */
static bool start_request(struct MHD_Connection *connection, struct fakegraph_request *request,
                          const char *url, const char *method)
{
    request->started = true;
    snprintf(request->method, sizeof(request->method), "%s", method);
    request->path = strdup(url);
    if (request->path == NULL) {
        return false;
    }

    const char *client_request_id =
        MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "client-request-id");
    snprintf(request->client_request_id, sizeof(request->client_request_id), "%s",
             client_request_id != NULL && client_request_id[0] != '\0' ? client_request_id
                                                                        : request->request_id);
    return true;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    struct fakegraph_server *server = cls;
    struct fakegraph_request *request = *req_cls;
    if (request == NULL) {
        return MHD_NO; /* out of memory in on_request_start: drop the connection */
    }

    if (!request->started) {
        if (!start_request(connection, request, url, method)) {
            return MHD_NO;
        }
        const char *length = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                                         MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (length != NULL && strtoull(length, NULL, 10) > FAKEGRAPH_REQUEST_BODY_MAX) {
            request->body_too_large = true;
            return fakegraph_respond_control_error(server, connection, request,
                                                   MHD_HTTP_CONTENT_TOO_LARGE,
                                                   "request body of %s bytes exceeds the "
                                                   "maximum of %d", length,
                                                   FAKEGRAPH_REQUEST_BODY_MAX);
        }
        return MHD_YES;
    }

    if (*upload_data_size > 0) {
        append_body(request, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }

    if (request->body_too_large) {
        return fakegraph_respond_control_error(server, connection, request,
                                               MHD_HTTP_CONTENT_TOO_LARGE,
                                               "request body exceeds the maximum of %d bytes",
                                               FAKEGRAPH_REQUEST_BODY_MAX);
    }
    return route(server, connection, request);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char message[512];
    vsnprintf(message, sizeof(message), fmt, ap);
    size_t len = strlen(message);
    while (len > 0 && (message[len - 1] == '\n' || message[len - 1] == '\r')) {
        message[--len] = '\0';
    }
    fakegraph_server_log(cls, "libmicrohttpd: %s", message);
}

int fakegraph_server_start(struct fakegraph_server *server, int listen_fd, const char *cert_pem,
                           const char *key_pem, struct MHD_Daemon **ret_daemon,
                           struct crd_error *err)
{
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_TLS | MHD_USE_ERROR_LOG;
    /* The logger goes first, so that libmicrohttpd reports option errors through it. */
    struct MHD_OptionItem items[] = {
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)(void *)on_mhd_log, server},
        {MHD_OPTION_LISTEN_SOCKET, listen_fd, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, CONNECTION_TIMEOUT_S, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, CONNECTION_LIMIT, NULL},
        {MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)(void *)on_request_start, server},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)(void *)on_request_completed, server},
        {MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)cert_pem},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)key_pem},
        {MHD_OPTION_END, 0, NULL},
    };

    struct MHD_Daemon *daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, server,
                                                 MHD_OPTION_ARRAY, items, MHD_OPTION_END);
    if (daemon == NULL) {
        close(listen_fd);
        return crd_error_set(err, -EIO, "libmicrohttpd could not start; check that --cert and "
                             "--key hold a matching PEM certificate and private key");
    }
    *ret_daemon = daemon;
    return 0;
}

void fakegraph_server_stop(struct fakegraph_server *server, struct MHD_Daemon *daemon)
{
    pthread_mutex_lock(&server->lock);
    server->stopping = true;
    pthread_cond_broadcast(&server->stopping_changed);
    pthread_mutex_unlock(&server->lock);

    if (daemon != NULL) {
        MHD_stop_daemon(daemon);
    }
}
