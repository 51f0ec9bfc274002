/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#include "graph_mock.h"
#include "harness.h"
#include "util.h"

#define TOKEN_PATH_SUFFIX "/oauth2/v2.0/token"

struct mock_route {
    char *path;
    struct graph_mock_reply *replies; /* strings owned by the route */
    size_t count;
    size_t served; /* the next reply is replies[min(served, count - 1)] */
};

struct graph_mock {
    struct MHD_Daemon *daemon;
    char url[64];

    pthread_mutex_t lock;   /* protects everything below */
    pthread_cond_t changed; /* on CLOCK_MONOTONIC: a request recorded, or stopping */
    bool stopping;
    struct mock_route *routes;
    size_t route_count;
    struct graph_mock_request **requests;
    size_t request_count;
    size_t request_capacity;
    char *required_authorization; /* "Bearer <token>" or NULL */
};

/* A request while it is being received; becomes a struct graph_mock_request when complete. */
struct mock_pending {
    struct graph_mock_request *request;
    bool headers_seen;
};

static void *xmalloc(size_t size)
{
    void *p = calloc(1, size);
    if (p == NULL) {
        abort();
    }
    return p;
}

static char *xstrdup(const char *s)
{
    if (s == NULL) {
        return NULL;
    }
    char *copy = strdup(s);
    if (copy == NULL) {
        abort();
    }
    return copy;
}

static void mock_request_free(struct graph_mock_request *request)
{
    if (request == NULL) {
        return;
    }
    free(request->target);
    free(request->path);
    free(request->headers);
    free(request->authorization);
    free(request->client_request_id);
    free(request->content_type);
    free(request->accept);
    free(request->prefer);
    free(request->body);
    free(request);
}

static void *mock_uri_logged(void *cls, const char *uri, struct MHD_Connection *connection)
{
    struct mock_pending *pending = xmalloc(sizeof(*pending));
    pending->request = xmalloc(sizeof(*pending->request));
    pending->request->target = xstrdup(uri);
    pending->request->received_ms = crd_time_monotonic_ms();
    pending->request->body = xstrdup("");
    return pending;
}

static void mock_completed(void *cls, struct MHD_Connection *connection, void **req_cls,
                           enum MHD_RequestTerminationCode code)
{
    struct mock_pending *pending = *req_cls;
    if (pending != NULL) {
        mock_request_free(pending->request);
        free(pending);
        *req_cls = NULL;
    }
}

static enum MHD_Result mock_collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                           const char *value)
{
    struct graph_mock_request *request = cls;
    size_t old = strlen(request->headers);
    size_t add = strlen(key) + 2 + strlen(value) + 1;
    char *headers = realloc(request->headers, old + add + 1);
    if (headers == NULL) {
        abort();
    }
    snprintf(headers + old, add + 1, "%s: %s\n", key, value);
    request->headers = headers;
    return MHD_YES;
}

static void mock_capture_headers(struct graph_mock_request *request,
                                 struct MHD_Connection *connection)
{
    request->headers = xstrdup("");
    (void)MHD_get_connection_values(connection, MHD_HEADER_KIND, mock_collect_header, request);
    request->authorization =
        xstrdup(MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Authorization"));
    request->client_request_id =
        xstrdup(MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "client-request-id"));
    request->content_type =
        xstrdup(MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Content-Type"));
    request->accept = xstrdup(MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Accept"));
    request->prefer = xstrdup(MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Prefer"));
}

static bool mock_is_token_path(const char *path)
{
    size_t len = strlen(path);
    size_t suffix = strlen(TOKEN_PATH_SUFFIX);
    return len >= suffix && strcmp(path + len - suffix, TOKEN_PATH_SUFFIX) == 0;
}

/* Picks the reply for a request and records the request; called with the lock held. */
static struct graph_mock_reply mock_choose_locked(struct graph_mock *mock,
                                                  struct graph_mock_request *request,
                                                  char **ret_body, char **ret_headers)
{
    struct graph_mock_reply reply = {
        .status = 501,
        .body = "{\"error\":{\"code\":\"mockNoReply\",\"message\":\"no reply queued for this "
                "path\"}}",
    };

    bool authorized = mock->required_authorization == NULL || mock_is_token_path(request->path) ||
                      (request->authorization != NULL &&
                       strcmp(request->authorization, mock->required_authorization) == 0);
    if (!authorized) {
        reply.status = 401;
        reply.body = "{\"error\":{\"code\":\"InvalidAuthenticationToken\",\"message\":\"Access "
                     "token has expired or is not yet valid.\",\"innerError\":{\"request-id\":"
                     "\"6a1d4f3e-0000-4000-8000-000000000401\"}}}";
    } else {
        for (size_t i = 0; i < mock->route_count; i++) {
            struct mock_route *route = &mock->routes[i];
            if (strcmp(route->path, request->path) == 0) {
                reply =
                    route->replies[route->served < route->count ? route->served : route->count - 1];
                route->served++;
                break;
            }
        }
    }
    if (reply.status == 0) {
        reply.status = 200;
    }
    request->status = reply.drop ? 0 : reply.status;

    /* Copies, for building the response after the lock is released. */
    *ret_body = xstrdup(reply.body != NULL ? reply.body : "");
    *ret_headers = xstrdup(reply.headers);

    if (mock->request_count == mock->request_capacity) {
        mock->request_capacity = mock->request_capacity == 0 ? 32 : 2 * mock->request_capacity;
        mock->requests = realloc(mock->requests, mock->request_capacity * sizeof(*mock->requests));
        if (mock->requests == NULL) {
            abort();
        }
    }
    mock->requests[mock->request_count++] = request;
    pthread_cond_broadcast(&mock->changed);
    return reply;
}

/* Waits delay_ms, or less when the mock stops; called with the lock held. */
static void mock_delay_locked(struct graph_mock *mock, unsigned delay_ms)
{
    int64_t until = crd_time_monotonic_ms() + delay_ms;
    struct timespec deadline = {.tv_sec = (time_t)(until / 1000),
                                .tv_nsec = (long)(until % 1000) * 1000000L};
    while (!mock->stopping && crd_time_monotonic_ms() < until) {
        (void)pthread_cond_timedwait(&mock->changed, &mock->lock, &deadline);
    }
}

static void mock_add_headers(struct MHD_Response *response, const char *headers)
{
    bool has_type = false;
    for (const char *line = headers; line != NULL && *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
        char *copy = strndup(line, len);
        char *colon = copy != NULL ? strchr(copy, ':') : NULL;
        if (colon != NULL) {
            *colon = '\0';
            const char *value = colon + 1;
            while (*value == ' ') {
                value++;
            }
            has_type = has_type || strcasecmp(copy, "Content-Type") == 0;
            (void)MHD_add_response_header(response, copy, value);
        }
        free(copy);
        line = end != NULL ? end + 1 : line + len;
    }
    if (!has_type) {
        (void)MHD_add_response_header(response, "Content-Type", "application/json");
    }
}

static enum MHD_Result mock_handle(void *cls, struct MHD_Connection *connection, const char *url,
                                   const char *method, const char *version, const char *upload_data,
                                   size_t *upload_data_size, void **req_cls)
{
    struct graph_mock *mock = cls;
    struct mock_pending *pending = *req_cls;
    struct graph_mock_request *request = pending->request;

    if (!pending->headers_seen) {
        pending->headers_seen = true;
        snprintf(request->method, sizeof(request->method), "%s", method);
        request->path = xstrdup(url);
        mock_capture_headers(request, connection);
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        char *body = realloc(request->body, request->body_len + *upload_data_size + 1);
        if (body == NULL) {
            abort();
        }
        memcpy(body + request->body_len, upload_data, *upload_data_size);
        request->body_len += *upload_data_size;
        body[request->body_len] = '\0';
        request->body = body;
        *upload_data_size = 0;
        return MHD_YES;
    }

    /* The whole request is here: the mock's list takes it over. */
    pending->request = NULL;
    char *body = NULL;
    char *headers = NULL;
    pthread_mutex_lock(&mock->lock);
    struct graph_mock_reply reply = mock_choose_locked(mock, request, &body, &headers);
    if (reply.delay_ms > 0) {
        mock_delay_locked(mock, reply.delay_ms);
    }
    pthread_mutex_unlock(&mock->lock);

    enum MHD_Result result = MHD_NO;
    if (!reply.drop) {
        struct MHD_Response *response =
            MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
        if (response != NULL) {
            mock_add_headers(response, headers);
            result = MHD_queue_response(connection, reply.status, response);
            MHD_destroy_response(response);
        }
    }
    free(body);
    free(headers);
    return result; /* MHD_NO without a response closes the connection */
}

struct graph_mock *graph_mock_start(void)
{
    struct graph_mock *mock = xmalloc(sizeof(*mock));
    pthread_mutex_init(&mock->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&mock->changed, &attr);
    pthread_condattr_destroy(&attr);

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    mock->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL, mock_handle,
        mock, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_URI_LOG_CALLBACK,
        mock_uri_logged, mock, MHD_OPTION_NOTIFY_COMPLETED, mock_completed, mock, MHD_OPTION_END);
    if (mock->daemon == NULL) {
        fprintf(stderr, "graph mock: cannot start libmicrohttpd on 127.0.0.1\n");
        abort();
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(mock->daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (info == NULL || info->port == 0) {
        fprintf(stderr, "graph mock: cannot learn the port\n");
        abort();
    }
    snprintf(mock->url, sizeof(mock->url), "http://127.0.0.1:%u", (unsigned)info->port);
    return mock;
}

void graph_mock_stop(struct graph_mock *mock)
{
    if (mock == NULL) {
        return;
    }
    pthread_mutex_lock(&mock->lock);
    mock->stopping = true;
    pthread_cond_broadcast(&mock->changed);
    pthread_mutex_unlock(&mock->lock);
    MHD_stop_daemon(mock->daemon);

    for (size_t i = 0; i < mock->route_count; i++) {
        struct mock_route *route = &mock->routes[i];
        for (size_t j = 0; j < route->count; j++) {
            free((char *)route->replies[j].body);
            free((char *)route->replies[j].headers);
        }
        free(route->replies);
        free(route->path);
    }
    free(mock->routes);
    for (size_t i = 0; i < mock->request_count; i++) {
        mock_request_free(mock->requests[i]);
    }
    free(mock->requests);
    free(mock->required_authorization);
    pthread_cond_destroy(&mock->changed);
    pthread_mutex_destroy(&mock->lock);
    free(mock);
}

const char *graph_mock_url(const struct graph_mock *mock)
{
    return mock->url;
}

void graph_mock_add(struct graph_mock *mock, const char *path, const struct graph_mock_reply *reply)
{
    pthread_mutex_lock(&mock->lock);
    struct mock_route *route = NULL;
    for (size_t i = 0; i < mock->route_count; i++) {
        if (strcmp(mock->routes[i].path, path) == 0) {
            route = &mock->routes[i];
        }
    }
    if (route == NULL) {
        mock->routes = realloc(mock->routes, (mock->route_count + 1) * sizeof(*mock->routes));
        if (mock->routes == NULL) {
            abort();
        }
        route = &mock->routes[mock->route_count++];
        *route = (struct mock_route){.path = xstrdup(path)};
    }
    route->replies = realloc(route->replies, (route->count + 1) * sizeof(*route->replies));
    if (route->replies == NULL) {
        abort();
    }
    struct graph_mock_reply *copy = &route->replies[route->count++];
    *copy = *reply;
    copy->body = xstrdup(reply->body);
    copy->headers = xstrdup(reply->headers);
    pthread_mutex_unlock(&mock->lock);
}

void graph_mock_add_body(struct graph_mock *mock, const char *path, unsigned status,
                         const char *body)
{
    struct graph_mock_reply reply = {.status = status, .body = body};
    graph_mock_add(mock, path, &reply);
}

void graph_mock_require_bearer(struct graph_mock *mock, const char *token)
{
    char *value = NULL;
    if (token != NULL && asprintf(&value, "Bearer %s", token) < 0) {
        abort();
    }
    pthread_mutex_lock(&mock->lock);
    free(mock->required_authorization);
    mock->required_authorization = value;
    pthread_mutex_unlock(&mock->lock);
}

static size_t mock_count_locked(struct graph_mock *mock, const char *path)
{
    size_t n = 0;
    for (size_t i = 0; i < mock->request_count; i++) {
        if (path == NULL || strcmp(mock->requests[i]->path, path) == 0) {
            n++;
        }
    }
    return n;
}

size_t graph_mock_count(struct graph_mock *mock, const char *path)
{
    pthread_mutex_lock(&mock->lock);
    size_t n = mock_count_locked(mock, path);
    pthread_mutex_unlock(&mock->lock);
    return n;
}

bool graph_mock_wait_count(struct graph_mock *mock, const char *path, size_t count, int timeout_ms)
{
    int64_t until = crd_time_monotonic_ms() + timeout_ms;
    struct timespec deadline = {.tv_sec = (time_t)(until / 1000),
                                .tv_nsec = (long)(until % 1000) * 1000000L};
    pthread_mutex_lock(&mock->lock);
    bool reached;
    while (!(reached = mock_count_locked(mock, path) >= count) && crd_time_monotonic_ms() < until) {
        (void)pthread_cond_timedwait(&mock->changed, &mock->lock, &deadline);
    }
    pthread_mutex_unlock(&mock->lock);
    return reached;
}

const struct graph_mock_request *graph_mock_request(struct graph_mock *mock, const char *path,
                                                    size_t index)
{
    const struct graph_mock_request *found = NULL;
    pthread_mutex_lock(&mock->lock);
    for (size_t i = 0, n = 0; i < mock->request_count && found == NULL; i++) {
        if (path == NULL || strcmp(mock->requests[i]->path, path) == 0) {
            if (n++ == index) {
                found = mock->requests[i];
            }
        }
    }
    pthread_mutex_unlock(&mock->lock);
    return found;
}

char *graph_mock_replace(const char *s, const char *from, const char *to)
{
    size_t from_len = strlen(from);
    size_t to_len = strlen(to);
    size_t count = 0;
    for (const char *p = strstr(s, from); p != NULL; p = strstr(p + from_len, from)) {
        count++;
    }
    char *out = xmalloc(strlen(s) + count * to_len + 1);
    char *w = out;
    for (const char *p = s;;) {
        const char *hit = strstr(p, from);
        if (hit == NULL) {
            memcpy(w, p, strlen(p) + 1);
            break;
        }
        memcpy(w, p, (size_t)(hit - p));
        w += hit - p;
        memcpy(w, to, to_len);
        w += to_len;
        p = hit + from_len;
    }
    return out;
}

char *graph_mock_fixture(const char *name, const char *base_url)
{
    char *path = crd_test_fixture_path(name);
    char *content = crd_test_read_file(path, NULL);
    if (content == NULL) {
        fprintf(stderr, "graph mock: cannot read fixture '%s'\n", path);
        abort();
    }
    free(path);
    if (base_url == NULL) {
        return content;
    }
    char *rewritten = graph_mock_replace(content, "https://graph.microsoft.com", base_url);
    free(content);
    return rewritten;
}
