/* SPDX-License-Identifier: MIT */
/* HTTP plumbing of the listener: sockets, libmicrohttpd, routing, the validation handshake. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "listener_internal.h"
#include "util.h"

/* TLS 1.2 and 1.3 only, in GnuTLS priority syntax (libmicrohttpd's TLS backend). */
#define TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

#define LISTEN_BACKLOG 1024

/* ---- small helpers ---------------------------------------------------- */

/* Routes that serve GET and HEAD; the others take POST only. */
static bool is_read_route(enum crd_route route)
{
    return route == CRD_ROUTE_HEALTHZ || route == CRD_ROUTE_METRICS;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int crd_listener_form_decode(const char *in, size_t in_len, char *out, size_t out_size)
{
    size_t used = 0;
    for (size_t i = 0; i < in_len; i++) {
        char c = in[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (i + 2 >= in_len) {
                return -EINVAL;
            }
            int high = hex_value(in[i + 1]);
            int low = hex_value(in[i + 2]);
            if (high < 0 || low < 0) {
                return -EINVAL;
            }
            c = (char)(high * 16 + low);
            i += 2;
        }
        if (used + 1 >= out_size) {
            return -E2BIG;
        }
        out[used++] = c;
    }
    if (out_size == 0) {
        return -E2BIG;
    }
    out[used] = '\0';
    return (int)used;
}

/*
 * Finds `name` in the raw query of uri and decodes its value into out.
 * Returns the decoded length, -ENOENT when absent, or a decoding error.
 */
static int find_query_parameter(const char *uri, const char *name, char *out, size_t out_size)
{
    const char *query = strchr(uri, '?');
    if (query == NULL) {
        return -ENOENT;
    }
    query++;

    size_t name_len = strlen(name);
    while (*query != '\0') {
        const char *end = strchr(query, '&');
        size_t len = end != NULL ? (size_t)(end - query) : strlen(query);
        if (len > name_len && strncmp(query, name, name_len) == 0 && query[name_len] == '=') {
            return crd_listener_form_decode(query + name_len + 1, len - name_len - 1, out,
                                            out_size);
        }
        if (end == NULL) {
            break;
        }
        query = end + 1;
    }
    return -ENOENT;
}

static bool uri_has_query_parameter(const char *uri, const char *name)
{
    const char *query = strchr(uri, '?');
    size_t name_len = strlen(name);
    while (query != NULL) {
        query++;
        if (strncmp(query, name, name_len) == 0 && (query[name_len] == '=' ||
                                                     query[name_len] == '&' ||
                                                     query[name_len] == '\0')) {
            return true;
        }
        query = strchr(query, '&');
    }
    return false;
}

static void format_peer(struct MHD_Connection *connection, char *out, size_t out_size)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, out_size, "unknown");
    if (info == NULL || info->client_addr == NULL) {
        return;
    }

    const struct sockaddr *addr = info->client_addr;
    char host[INET6_ADDRSTRLEN] = "";
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)(const void *)addr;
        inet_ntop(AF_INET, &in4->sin_addr, host, sizeof(host));
        snprintf(out, out_size, "%s:%u", host, ntohs(in4->sin_port));
    } else if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)addr;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(out, out_size, "[%s]:%u", host, ntohs(in6->sin6_port));
    }
}

/* ---- responses and logging -------------------------------------------- */

enum MHD_Result crd_listener_respond(struct crd_listener *listener, struct MHD_Connection *connection,
                                     struct crd_request *request, unsigned status,
                                     const char *content_type, const char *body)
{
    struct MHD_Response *response =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (response == NULL) {
        return MHD_NO;
    }
    (void)MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    (void)MHD_add_response_header(response, "X-Content-Type-Options", "nosniff");
    (void)MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) {
        (void)MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW,
                                      is_read_route(request->route) ? "GET, HEAD" : "POST");
    }

    enum MHD_Result result = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);

    if (status >= 400 && status < 500) {
        atomic_fetch_add(&listener->counters.rejected_requests, 1);
    }
    crd_log_debug(CRD_LOG_LISTENER, NULL, "%s '%s'%s from %s: HTTP %u after %lld ms",
                  request->method, request->path,
                  request->is_validation ? " (validation)" : "", request->peer, status,
                  (long long)(crd_time_monotonic_ms() - request->started_at_ms));
    return result;
}

void crd_listener_log_rejection(struct crd_listener *listener, const struct crd_log_ids *ids,
                                const char *fmt, ...)
{
    unsigned suppressed = 0;
    if (!crd_log_enabled(CRD_LOG_WARNING) ||
        !crd_ratelimit_allow(&listener->rejection_log, &suppressed)) {
        return;
    }

    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);

    if (suppressed > 0) {
        crd_log_warn(ids, "%s (%u similar messages suppressed)", message, suppressed);
    } else {
        crd_log_warn(ids, "%s", message);
    }
}

/* ---- the validation handshake ----------------------------------------- */

/* GET /healthz: {"status":"ok"} and what add_health contributes. */
static enum MHD_Result answer_health(struct crd_listener *listener,
                                     struct MHD_Connection *connection, struct crd_request *request)
{
    json_t *health = json_pack("{s:s}", "status", "ok");
    char *text = NULL;
    char *line = NULL;
    if (health != NULL && listener->add_health != NULL) {
        listener->add_health(listener->add_health_context, health);
    }
    if (health != NULL) {
        text = json_dumps(health, JSON_COMPACT);
    }
    if (text != NULL && asprintf(&line, "%s\n", text) < 0) {
        line = NULL;
    }

    enum MHD_Result result;
    if (line == NULL) {
        result = crd_listener_respond(listener, connection, request,
                                      MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain",
                                      "temporarily unavailable\n");
    } else {
        result = crd_listener_respond(listener, connection, request, MHD_HTTP_OK,
                                      "application/json", line);
    }
    free(line);
    free(text);
    json_decref(health);
    return result;
}

/* The listener's own counters, as Prometheus samples. */
static void add_listener_metrics(const struct crd_listener *listener, struct crd_metrics *metrics)
{
    const struct crd_listener_counters *c = &listener->counters;
    static const char counter[] = "counter";
    crd_metrics_sample(metrics, "callrecd_http_requests_total", counter,
                       "HTTP requests received by the listener.", NULL, NULL,
                       (double)atomic_load(&c->requests));
    crd_metrics_sample(metrics, "callrecd_validations_total", counter,
                       "Validation handshakes answered.", NULL, NULL,
                       (double)atomic_load(&c->validations));
    const char *name = "callrecd_notifications_total";
    const char *help = "Notification items received, by outcome.";
    crd_metrics_sample(metrics, name, counter, help, "outcome", "accepted",
                       (double)atomic_load(&c->notifications_accepted));
    crd_metrics_sample(metrics, name, counter, help, "outcome", "ignored",
                       (double)atomic_load(&c->notifications_ignored));
    crd_metrics_sample(metrics, name, counter, help, "outcome", "invalid",
                       (double)atomic_load(&c->notifications_invalid));
    crd_metrics_sample(metrics, name, counter, help, "outcome", "client_state_mismatch",
                       (double)atomic_load(&c->client_state_mismatches));
    crd_metrics_sample(metrics, name, counter, help, "outcome", "tenant_mismatch",
                       (double)atomic_load(&c->tenant_mismatches));
    crd_metrics_sample(metrics, name, counter, help, "outcome", "subscription_mismatch",
                       (double)atomic_load(&c->subscription_mismatches));
    crd_metrics_sample(metrics, "callrecd_lifecycle_events_total", counter,
                       "Lifecycle notifications received.", NULL, NULL,
                       (double)atomic_load(&c->lifecycle_events));
    crd_metrics_sample(metrics, "callrecd_http_rejected_total", counter,
                       "Requests answered with a 4xx status.", NULL, NULL,
                       (double)atomic_load(&c->rejected_requests));
    crd_metrics_sample(metrics, "callrecd_store_failures_total", counter,
                       "Notification collections answered 503 because the store failed.", NULL,
                       NULL, (double)atomic_load(&c->store_failures));
}

/* GET /metrics: Prometheus text format with the listener's counters and the owner's. */
static enum MHD_Result answer_metrics(struct crd_listener *listener,
                                      struct MHD_Connection *connection,
                                      struct crd_request *request)
{
    struct crd_metrics metrics;
    char *text = NULL;
    if (crd_metrics_begin(&metrics) == 0) {
        add_listener_metrics(listener, &metrics);
        if (listener->add_metrics != NULL) {
            listener->add_metrics(listener->add_metrics_context, &metrics);
        }
        (void)crd_metrics_end(&metrics, &text);
    }
    if (text == NULL) {
        return crd_listener_respond(listener, connection, request, MHD_HTTP_SERVICE_UNAVAILABLE,
                                    "text/plain", "temporarily unavailable\n");
    }
    enum MHD_Result result = crd_listener_respond(listener, connection, request, MHD_HTTP_OK,
                                                  "text/plain; version=0.0.4; charset=utf-8",
                                                  text);
    free(text);
    return result;
}

static enum MHD_Result answer_validation(struct crd_listener *listener,
                                         struct MHD_Connection *connection,
                                         struct crd_request *request)
{
    char token[CRD_VALIDATION_TOKEN_MAX + 1];
    int len = find_query_parameter(request->raw_uri, "validationToken", token, sizeof(token));
    if (len == -E2BIG) {
        crd_listener_log_rejection(listener, NULL,
                                   "rejected validation request from %s: validationToken longer "
                                   "than %d bytes; responding 400",
                                   request->peer, CRD_VALIDATION_TOKEN_MAX);
        return crd_listener_respond(listener, connection, request, MHD_HTTP_BAD_REQUEST,
                                    "text/plain", "validationToken too long\n");
    }
    if (len < 0) {
        crd_listener_log_rejection(listener, NULL,
                                   "rejected validation request from %s: malformed "
                                   "validationToken; responding 400",
                                   request->peer);
        return crd_listener_respond(listener, connection, request, MHD_HTTP_BAD_REQUEST,
                                    "text/plain", "malformed validationToken\n");
    }
    if (len == 0 || memchr(token, '\0', (size_t)len) != NULL) {
        crd_listener_log_rejection(listener, NULL,
                                   "rejected validation request from %s: empty validationToken "
                                   "or one with a NUL byte; responding 400",
                                   request->peer);
        return crd_listener_respond(listener, connection, request, MHD_HTTP_BAD_REQUEST,
                                    "text/plain", "invalid validationToken\n");
    }

    atomic_fetch_add(&listener->counters.validations, 1);
    crd_log_info(NULL, "validation request from %s on '%s': returned the token", request->peer,
                 request->route == CRD_ROUTE_LIFECYCLE ? listener->config->listener.lifecycle_path
                                                       : listener->config->listener.notification_path);
    return crd_listener_respond(listener, connection, request, MHD_HTTP_OK, "text/plain", token);
}

/* ---- libmicrohttpd callbacks ------------------------------------------ */

static enum crd_route route_for(const struct crd_listener *listener, const char *url)
{
    if (strcmp(url, listener->config->listener.notification_path) == 0) {
        return CRD_ROUTE_NOTIFY;
    }
    if (strcmp(url, listener->config->listener.lifecycle_path) == 0) {
        return CRD_ROUTE_LIFECYCLE;
    }
    if (strcmp(url, "/healthz") == 0) {
        return CRD_ROUTE_HEALTHZ;
    }
    if (strcmp(url, "/metrics") == 0) {
        return CRD_ROUTE_METRICS;
    }
    return CRD_ROUTE_UNKNOWN;
}

/* Called once per request before the access handler, with the URI still undecoded. */
static void *on_request_start(void *cls, const char *uri, struct MHD_Connection *connection)
{
    struct crd_request *request = calloc(1, sizeof(*request));
    if (request == NULL) {
        return NULL;
    }
    request->raw_uri = strdup(uri != NULL ? uri : "");
    request->started_at_ms = crd_time_monotonic_ms();
    format_peer(connection, request->peer, sizeof(request->peer));
    return request;
}

static void on_request_completed(void *cls, struct MHD_Connection *connection, void **req_cls,
                                 enum MHD_RequestTerminationCode code)
{
    struct crd_request *request = *req_cls;
    if (request == NULL) {
        return;
    }
    if (code != MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        crd_log_debug(CRD_LOG_LISTENER, NULL, "request from %s ended early (libmicrohttpd code %d)",
                      request->peer, (int)code);
    }
    free(request->raw_uri);
    free(request->body);
    free(request);
    *req_cls = NULL;
}

/* Appends a piece of the request body, or marks the request too large. */
static void append_body(struct crd_listener *listener, struct crd_request *request,
                        const char *data, size_t size)
{
    size_t limit = listener->config->listener.max_body_size;
    if (request->body_too_large || request->body_len + size > limit) {
        request->body_too_large = true;
        return;
    }
    if (request->body_len + size > request->body_cap) {
        size_t cap = request->body_cap > 0 ? request->body_cap : 4096;
        while (cap < request->body_len + size) {
            cap *= 2;
        }
        if (cap > limit) {
            cap = limit;
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
}

/* Checks route and method on the first call; returns true when a response was queued. */
static bool reject_early(struct crd_listener *listener, struct MHD_Connection *connection,
                         struct crd_request *request, const char *url, const char *method,
                         enum MHD_Result *ret_result)
{
    bool is_post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    bool is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
                  strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;

    if (request->route == CRD_ROUTE_UNKNOWN) {
        crd_listener_log_rejection(listener, NULL, "rejected %s '%.200s' from %s: unknown path; "
                                   "responding 404", method, url, request->peer);
        *ret_result = crd_listener_respond(listener, connection, request, MHD_HTTP_NOT_FOUND,
                                           "text/plain", "not found\n");
        return true;
    }
    if ((is_read_route(request->route) && !is_get) ||
        (!is_read_route(request->route) && !is_post)) {
        crd_listener_log_rejection(listener, NULL, "rejected %s '%.200s' from %s: method not "
                                   "allowed; responding 405", method, url, request->peer);
        *ret_result = crd_listener_respond(listener, connection, request,
                                           MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain",
                                           "method not allowed\n");
        return true;
    }

    const char *length = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (is_post && !request->is_validation && length != NULL) {
        char *end = NULL;
        errno = 0;
        unsigned long long declared = strtoull(length, &end, 10);
        if (errno == 0 && end != length && declared > listener->config->listener.max_body_size) {
            crd_listener_log_rejection(listener, NULL, "rejected POST '%.200s' from %s: body of "
                                       "%llu bytes exceeds max_body_size %zu; responding 413",
                                       url, request->peer, declared,
                                       listener->config->listener.max_body_size);
            *ret_result = crd_listener_respond(listener, connection, request,
                                               MHD_HTTP_CONTENT_TOO_LARGE, "text/plain",
                                               "request body too large\n");
            return true;
        }
    }
    return false;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    struct crd_listener *listener = cls;
    struct crd_request *request = *req_cls;
    if (request == NULL || request->raw_uri == NULL) {
        return MHD_NO;  /* out of memory in on_request_start: drop the connection */
    }

    if (!request->started) {
        request->started = true;
        snprintf(request->method, sizeof(request->method), "%s", method);
        snprintf(request->path, sizeof(request->path), "%s", url);
        request->route = route_for(listener, url);
        request->is_validation = !is_read_route(request->route) &&
                                 uri_has_query_parameter(request->raw_uri, "validationToken");
        atomic_fetch_add(&listener->counters.requests, 1);

        enum MHD_Result result;
        if (reject_early(listener, connection, request, url, method, &result)) {
            return result;
        }
        return MHD_YES;
    }

    if (*upload_data_size > 0) {
        /* A validation request's body, if any, is ignored. */
        if (!request->is_validation) {
            append_body(listener, request, upload_data, *upload_data_size);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }

    if (atomic_load(&listener->draining) && !request->is_validation) {
        /* Graph retries a 503, and the next instance stores what this one no longer can. */
        crd_log_debug(CRD_LOG_LISTENER, NULL, "responding 503 to %s: shutting down",
                      request->peer);
        return crd_listener_respond(listener, connection, request, MHD_HTTP_SERVICE_UNAVAILABLE,
                                    request->route == CRD_ROUTE_HEALTHZ ? "application/json"
                                                                        : "text/plain",
                                    request->route == CRD_ROUTE_HEALTHZ
                                        ? "{\"status\":\"stopping\"}\n"
                                        : "shutting down, retry later\n");
    }
    if (request->route == CRD_ROUTE_HEALTHZ) {
        return answer_health(listener, connection, request);
    }
    if (request->route == CRD_ROUTE_METRICS) {
        return answer_metrics(listener, connection, request);
    }
    if (request->is_validation) {
        return answer_validation(listener, connection, request);
    }
    if (request->body_too_large) {
        crd_listener_log_rejection(listener, NULL, "rejected POST '%.200s' from %s: body exceeds "
                                   "max_body_size %zu; responding 413", url, request->peer,
                                   listener->config->listener.max_body_size);
        return crd_listener_respond(listener, connection, request, MHD_HTTP_CONTENT_TOO_LARGE,
                                    "text/plain", "request body too large\n");
    }
    return crd_listener_handle_notifications(listener, connection, request);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char message[512];
    vsnprintf(message, sizeof(message), fmt, ap);
    size_t len = strlen(message);
    while (len > 0 && (message[len - 1] == '\n' || message[len - 1] == '\r')) {
        message[--len] = '\0';
    }
    crd_log_debug(CRD_LOG_LISTENER, NULL, "libmicrohttpd: %s", message);
}

/* ---- start and stop --------------------------------------------------- */

static int bind_socket(const struct crd_config *config, int *ret_fd, struct crd_error *err)
{
    struct sockaddr_storage storage;
    memset(&storage, 0, sizeof(storage));
    socklen_t addr_len = 0;
    int family = AF_INET6;

    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&storage;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&storage;
    if (inet_pton(AF_INET6, config->listener.address, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(config->listener.port);
        addr_len = sizeof(*in6);
    } else if (inet_pton(AF_INET, config->listener.address, &in4->sin_addr) == 1) {
        family = AF_INET;
        in4->sin_family = AF_INET;
        in4->sin_port = htons(config->listener.port);
        addr_len = sizeof(*in4);
    } else {
        return crd_error_set(err, -EINVAL, "[listener] address = '%s' is not a numeric IP address",
                             config->listener.address);
    }

    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return crd_error_set(err, -errno, "cannot create a socket: %s", strerror(errno));
    }
    int on = 1;
    int off = 0;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (family == AF_INET6) {
        /* "::" also accepts IPv4 clients, as operators expect of a wildcard address. */
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
    }
    if (bind(fd, (struct sockaddr *)&storage, addr_len) < 0) {
        int r = -errno;
        close(fd);
        return crd_error_set(err, r, "cannot bind to [%s]:%u: %s; is another process using the "
                             "port?", config->listener.address, config->listener.port,
                             strerror(-r));
    }
    if (listen(fd, LISTEN_BACKLOG) < 0) {
        int r = -errno;
        close(fd);
        return crd_error_set(err, r, "cannot listen on [%s]:%u: %s", config->listener.address,
                             config->listener.port, strerror(-r));
    }
    *ret_fd = fd;
    return 0;
}

static uint16_t socket_port(int fd)
{
    struct sockaddr_storage storage;
    socklen_t len = sizeof(storage);
    if (getsockname(fd, (struct sockaddr *)&storage, &len) < 0) {
        return 0;
    }
    if (storage.ss_family == AF_INET6) {
        return ntohs(((struct sockaddr_in6 *)&storage)->sin6_port);
    }
    return ntohs(((struct sockaddr_in *)&storage)->sin_port);
}

int crd_listener_start(const struct crd_listener_options *options,
                       struct crd_listener **ret_listener, struct crd_error *err)
{
    int r = 0;
    int fd = options->listen_fd;
    const struct crd_config *config = options->config;

    struct crd_listener *listener = NULL;
    if (options->tenants == NULL || options->n_tenants == 0) {
        r = crd_error_set(err, -EINVAL, "listener: no tenant to accept notifications for");
        goto out;
    }
    listener = calloc(1, sizeof(*listener));
    if (listener == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    listener->config = config;
    listener->store = options->store;
    listener->tenants = options->tenants;
    listener->n_tenants = options->n_tenants;
    listener->on_jobs = options->on_jobs;
    listener->on_jobs_context = options->on_jobs_context;
    listener->add_health = options->add_health;
    listener->add_health_context = options->add_health_context;
    listener->add_metrics = options->add_metrics;
    listener->add_metrics_context = options->add_metrics_context;
    crd_ratelimit_init(&listener->rejection_log, 10000, 20);
    crd_ratelimit_init(&listener->store_error_log, 10000, 5);

    if (fd < 0) {
        r = bind_socket(config, &fd, err);
        if (r < 0) {
            goto out;
        }
    }
    listener->port = socket_port(fd);

    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (config->listener.tls) {
        flags |= MHD_USE_TLS;
    }

    /* Options common to both modes; TLS options are appended below when enabled. */
    struct MHD_OptionItem items[16];
    size_t n = 0;
    items[n++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET, fd, NULL};
    items[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT,
                                         (intptr_t)config->listener.connection_timeout_s, NULL};
    items[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT,
                                         (intptr_t)config->listener.max_connections, NULL};
    items[n++] = (struct MHD_OptionItem){MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                                         (intptr_t)config->listener.max_connections_per_ip, NULL};
    items[n++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE,
                                         (intptr_t)config->listener.threads, NULL};
    items[n++] = (struct MHD_OptionItem){MHD_OPTION_URI_LOG_CALLBACK,
                                         (intptr_t)(void *)on_request_start, listener};
    items[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED,
                                         (intptr_t)(void *)on_request_completed, listener};
    items[n++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)(void *)on_mhd_log,
                                         listener};
    items[n++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_BACKLOG_SIZE, LISTEN_BACKLOG, NULL};
    if (config->listener.tls) {
        items[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0,
                                             (void *)config->listener.tls_certificate};
        items[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0,
                                             (void *)crd_secret_bytes(config->listener.tls_key)};
        items[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0,
                                             (void *)TLS_PRIORITIES};
    }
    items[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};

    listener->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, listener,
                                        MHD_OPTION_ARRAY, items, MHD_OPTION_END);
    if (listener->daemon == NULL) {
        r = crd_error_set(err, -EIO, "libmicrohttpd could not start on port %u (check the TLS "
                          "certificate and key, and the log at debug level 'listener')",
                          listener->port);
        goto out;
    }
    fd = -1;  /* MHD_stop_daemon() closes the listening socket */

    *ret_listener = listener;
    listener = NULL;

out:
    if (fd >= 0) {
        close(fd);
    }
    crd_listener_stop(listener);
    return r;
}

void crd_listener_drain(struct crd_listener *listener)
{
    if (listener != NULL) {
        atomic_store(&listener->draining, true);
    }
}

uint16_t crd_listener_port(const struct crd_listener *listener)
{
    return listener->port;
}

const struct crd_listener_counters *crd_listener_counters(const struct crd_listener *listener)
{
    return &listener->counters;
}

void crd_listener_stop(struct crd_listener *listener)
{
    if (listener == NULL) {
        return;
    }
    if (listener->daemon != NULL) {
        MHD_stop_daemon(listener->daemon);
    }
    pthread_mutex_destroy(&listener->rejection_log.lock);
    pthread_mutex_destroy(&listener->store_error_log.lock);
    free(listener);
}
