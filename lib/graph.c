/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/crypto.h>

#include "auth.h"
#include "graph_internal.h"
#include "log.h"
#include "util.h"

#define GRAPH_DEFAULT_CONNECT_TIMEOUT_MS 10000
#define GRAPH_DEFAULT_TOTAL_TIMEOUT_MS 60000
#define GRAPH_DEFAULT_MAX_ATTEMPTS 5
#define GRAPH_DEFAULT_BACKOFF_BASE_MS 500
#define GRAPH_DEFAULT_BACKOFF_MAX_MS 30000
/* Per response page, after content decoding. */
#define GRAPH_MAX_BODY_SIZE (64 * 1024 * 1024)
/* A longer Retry-After counts as this much, so that one odd header cannot stall every worker. */
#define GRAPH_MAX_RETRY_AFTER_MS (10 * 60 * 1000)


static uint64_t session_random(struct crd_graph_session *session)
{
    uint64_t z = (session->random_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A version 4 GUID for the client-request-id header. */
static void session_new_guid(struct crd_graph_session *session, char guid[CRD_GUID_LEN + 1])
{
    uint64_t high = session_random(session);
    uint64_t low = session_random(session);
    high = (high & ~0xf000ULL) | 0x4000ULL;           /* version 4 */
    low = (low & ~(0xc0ULL << 56)) | (0x80ULL << 56); /* RFC 4122 variant */
    snprintf(guid, CRD_GUID_LEN + 1, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(high >> 32),
             (unsigned)((high >> 16) & 0xffff), (unsigned)(high & 0xffff), (unsigned)(low >> 48),
             (unsigned long long)(low & 0xffffffffffffULL));
}

/* Full jitter: a uniform delay in [0, min(max, base * 2^(failures - 1))]. */
static int64_t session_backoff_ms(struct crd_graph_session *session, unsigned failures)
{
    const struct crd_graph *graph = session->graph;
    int64_t cap = graph->backoff_base_ms;
    for (unsigned i = 1; i < failures && cap < graph->backoff_max_ms; i++) {
        cap *= 2;
    }
    if (cap > graph->backoff_max_ms) {
        cap = graph->backoff_max_ms;
    }
    return (int64_t)(session_random(session) % (uint64_t)(cap + 1));
}

/* Retry-After as delay-seconds or an HTTP date; -1 when absent or unreadable. */
static int64_t graph_parse_retry_after(const char *value)
{
    if (value[0] == '\0') {
        return -1;
    }
    int64_t ms = -1;
    if (strspn(value, "0123456789") == strlen(value)) {
        ms = strlen(value) > 6 ? GRAPH_MAX_RETRY_AFTER_MS : strtoll(value, NULL, 10) * 1000;
    } else {
        time_t date = curl_getdate(value, NULL);
        if (date == (time_t)-1) {
            return -1;
        }
        ms = (int64_t)date * 1000 - crd_time_now_ms();
        if (ms < 0) {
            ms = 0;
        }
    }
    return ms > GRAPH_MAX_RETRY_AFTER_MS ? GRAPH_MAX_RETRY_AFTER_MS : ms;
}

/* Copies the value of header `name` from one header line, when the line is that header. */
static void graph_capture_header(const char *line, size_t len, const char *name, char *dst,
                                 size_t size)
{
    size_t name_len = strlen(name);
    if (len <= name_len || strncasecmp(line, name, name_len) != 0 || line[name_len] != ':') {
        return;
    }
    const char *value = line + name_len + 1;
    const char *end = line + len;
    while (value < end && (*value == ' ' || *value == '\t')) {
        value++;
    }
    while (end > value &&
           (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t')) {
        end--;
    }
    size_t n = (size_t)(end - value);
    if (n >= size) {
        n = size - 1;
    }
    char copy[128];
    if (n >= sizeof(copy)) {
        n = sizeof(copy) - 1;
    }
    memcpy(copy, value, n);
    copy[n] = '\0';
    crd_http_sanitize(dst, size, copy);
}

static size_t session_header(char *buffer, size_t size, size_t nitems, void *userdata)
{
    struct crd_graph_session *session = userdata;
    size_t len = size * nitems;
    graph_capture_header(buffer, len, "retry-after", session->retry_after,
                         sizeof(session->retry_after));
    graph_capture_header(buffer, len, "request-id", session->request_id,
                         sizeof(session->request_id));
    return len;
}

static void graph_copy_string(char *dst, size_t size, const json_t *value)
{
    if (dst[0] == '\0' && json_is_string(value)) {
        crd_http_sanitize(dst, size, json_string_value(value));
    }
}

static const json_t *graph_inner_error(const json_t *object)
{
    const json_t *inner = json_object_get(object, "innerError");
    return json_is_object(inner) ? inner : json_object_get(object, "innererror");
}

/* Reads Graph's error body ({"error": {"code", "message", "innerError": {...}}}) into failure. */
static void graph_parse_error_body(const struct crd_http_body *body,
                                   struct crd_graph_failure *failure)
{
    json_t *root = json_loadb(body->data != NULL ? body->data : "", body->len, 0, NULL);
    const json_t *error = json_object_get(root, "error");
    if (json_is_object(error)) {
        graph_copy_string(failure->code, sizeof(failure->code), json_object_get(error, "code"));
        /* innerError may nest further; the ids sit at the first level in practice. */
        const json_t *inner = graph_inner_error(error);
        for (int depth = 0; json_is_object(inner) && depth < 4; depth++) {
            graph_copy_string(failure->request_id, sizeof(failure->request_id),
                              json_object_get(inner, "request-id"));
            graph_copy_string(failure->client_request_id, sizeof(failure->client_request_id),
                              json_object_get(inner, "client-request-id"));
            graph_copy_string(failure->date, sizeof(failure->date), json_object_get(inner, "date"));
            inner = graph_inner_error(inner);
        }
    }
    json_decref(root);
}

/* ---- the shared client ---------------------------------------------------------------- */

/* Splits an http(s) URL into scheme, host and port (the default one when absent). */
static int graph_split_url(const char *url, char **ret_scheme, char **ret_host, char **ret_port)
{
    CURLU *u = curl_url();
    if (u == NULL) {
        return -ENOMEM;
    }
    char *scheme = NULL;
    char *host = NULL;
    char *port = NULL;
    int r = 0;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
        r = -EINVAL;
    } else if (strcasecmp(scheme, "https") != 0 && strcasecmp(scheme, "http") != 0) {
        r = -EINVAL;
    }
    if (r == 0) {
        *ret_scheme = scheme;
        *ret_host = host;
        *ret_port = port;
        scheme = host = port = NULL;
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return r;
}

int crd_graph_new(const struct crd_graph_options *options, struct crd_graph **ret_graph,
                  struct crd_error *err)
{
    int r = 0;
    char *scope = NULL;
    struct crd_graph *graph = NULL;
    pthread_condattr_t attr;
    bool attr_ready = false;

    if (options->graph_url == NULL || options->graph_url[0] == '\0') {
        r = crd_error_set(err, -EINVAL, "the Graph URL is required");
        goto out;
    }

    graph = calloc(1, sizeof(*graph));
    if (graph == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    atomic_init(&graph->cancelled, false);
    pthread_mutex_init(&graph->lock, NULL);
    if (pthread_condattr_init(&attr) != 0) {
        r = crd_error_set(err, -ENOMEM, "cannot initialize a condition variable");
        goto out;
    }
    attr_ready = true;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&graph->wake, &attr);

    graph->graph_url = strdup(options->graph_url);
    if (graph->graph_url == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    size_t len = strlen(graph->graph_url);
    if (len > 0 && graph->graph_url[len - 1] == '/') {
        graph->graph_url[len - 1] = '\0';
    }
    r = graph_split_url(graph->graph_url, &graph->graph_scheme, &graph->graph_host,
                        &graph->graph_port);
    if (r < 0) {
        r = crd_error_set(err, r, "Graph URL '%s' is not an http or https URL with a host",
                          options->graph_url);
        goto out;
    }

    graph->limits = options->limits;
    graph->max_attempts =
        options->max_attempts != 0 ? options->max_attempts : GRAPH_DEFAULT_MAX_ATTEMPTS;
    graph->backoff_base_ms =
        options->backoff_base_ms != 0 ? options->backoff_base_ms : GRAPH_DEFAULT_BACKOFF_BASE_MS;
    graph->backoff_max_ms =
        options->backoff_max_ms != 0 ? options->backoff_max_ms : GRAPH_DEFAULT_BACKOFF_MAX_MS;
    if (graph->backoff_max_ms < graph->backoff_base_ms) {
        graph->backoff_max_ms = graph->backoff_base_ms;
    }
    graph->http = (struct crd_http_settings){
        .ca_file = options->ca_file,
        .proxy = options->proxy,
        .connect_timeout_ms = options->connect_timeout_ms != 0 ? options->connect_timeout_ms
                                                               : GRAPH_DEFAULT_CONNECT_TIMEOUT_MS,
        .total_timeout_ms = options->total_timeout_ms != 0 ? options->total_timeout_ms
                                                           : GRAPH_DEFAULT_TOTAL_TIMEOUT_MS,
        .cancelled = &graph->cancelled,
    };

    if (asprintf(&scope, "%s/.default", graph->graph_url) < 0) {
        scope = NULL;
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    struct crd_auth_options auth_options = {
        .login_url = options->login_url,
        .tenant = options->tenant,
        .client_id = options->client_id,
        .client_secret = options->client_secret,
        .assertion_signer = options->assertion_signer,
        .scope = scope,
        .ca_file = options->ca_file,
        .proxy = options->proxy,
        .connect_timeout_ms = graph->http.connect_timeout_ms,
        .total_timeout_ms = graph->http.total_timeout_ms,
    };
    r = crd_auth_new(&auth_options, &graph->auth, err);
    if (r < 0) {
        goto out;
    }

    *ret_graph = graph;
    graph = NULL;
out:
    if (attr_ready) {
        pthread_condattr_destroy(&attr);
    }
    free(scope);
    crd_graph_free(graph);
    return r;
}

void crd_graph_free(struct crd_graph *graph)
{
    if (graph == NULL) {
        return;
    }
    crd_auth_free(graph->auth);
    free(graph->graph_url);
    curl_free(graph->graph_scheme);
    curl_free(graph->graph_host);
    curl_free(graph->graph_port);
    pthread_cond_destroy(&graph->wake);
    pthread_mutex_destroy(&graph->lock);
    free(graph);
}

void crd_graph_cancel(struct crd_graph *graph)
{
    atomic_store(&graph->cancelled, true);
    pthread_mutex_lock(&graph->lock);
    pthread_cond_broadcast(&graph->wake);
    pthread_mutex_unlock(&graph->lock);
    if (graph->limits != NULL) {
        crd_graph_limits_wake(graph->limits);
    }
    crd_auth_cancel(graph->auth);
}

int64_t crd_graph_throttled_for_ms(struct crd_graph *graph)
{
    pthread_mutex_lock(&graph->lock);
    int64_t left = graph->gate_open_at_ms - crd_time_monotonic_ms();
    pthread_mutex_unlock(&graph->lock);
    return left > 0 ? left : 0;
}

static void graph_close_gate(struct crd_graph *graph, int64_t open_at_ms)
{
    pthread_mutex_lock(&graph->lock);
    if (open_at_ms > graph->gate_open_at_ms) {
        graph->gate_open_at_ms = open_at_ms;
    }
    pthread_mutex_unlock(&graph->lock);
}

/* Waits until not_before_ms (monotonic) and the throttle gate have both passed. */
static int graph_wait(struct crd_graph *graph, int64_t not_before_ms, struct crd_error *err)
{
    int r = 0;
    pthread_mutex_lock(&graph->lock);
    for (;;) {
        if (atomic_load(&graph->cancelled)) {
            r = crd_error_set(err, -ECANCELED, "cancelled");
            break;
        }
        int64_t until =
            not_before_ms > graph->gate_open_at_ms ? not_before_ms : graph->gate_open_at_ms;
        if (crd_time_monotonic_ms() >= until) {
            break;
        }
        struct timespec deadline = {
            .tv_sec = (time_t)(until / 1000),
            .tv_nsec = (long)(until % 1000) * 1000000L,
        };
        (void)pthread_cond_timedwait(&graph->wake, &graph->lock, &deadline);
    }
    pthread_mutex_unlock(&graph->lock);
    return r;
}

/* ---- sessions ----------------------------------------------------------------------------- */

int crd_graph_session_new(struct crd_graph *graph, struct crd_graph_session **ret_session,
                          struct crd_error *err)
{
    int r = 0;
    struct crd_graph_session *session = calloc(1, sizeof(*session));
    if (session == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    session->graph = graph;
    session->body.limit = GRAPH_MAX_BODY_SIZE;
    if (getrandom(&session->random_state, sizeof(session->random_state), 0) !=
        (ssize_t)sizeof(session->random_state)) {
        session->random_state = (uint64_t)crd_time_now_ms() ^ (uint64_t)(uintptr_t)session;
    }

    r = crd_http_easy_new(&graph->http, &session->curl, err);
    if (r < 0) {
        goto out;
    }
    if (curl_easy_setopt(session->curl, CURLOPT_WRITEDATA, &session->body) != CURLE_OK ||
        curl_easy_setopt(session->curl, CURLOPT_HEADERFUNCTION, session_header) != CURLE_OK ||
        curl_easy_setopt(session->curl, CURLOPT_HEADERDATA, session) != CURLE_OK ||
        curl_easy_setopt(session->curl, CURLOPT_ERRORBUFFER, session->curl_error) != CURLE_OK ||
        curl_easy_setopt(session->curl, CURLOPT_MAXFILESIZE_LARGE,
                         (curl_off_t)GRAPH_MAX_BODY_SIZE) != CURLE_OK) {
        r = crd_error_set(err, -ENOMEM, "cannot configure libcurl");
        goto out;
    }

    *ret_session = session;
    session = NULL;
out:
    crd_graph_session_free(session);
    return r;
}

void crd_graph_session_free(struct crd_graph_session *session)
{
    if (session == NULL) {
        return;
    }
    if (session->curl != NULL) {
        curl_easy_cleanup(session->curl);
    }
    crd_http_body_free(&session->body);
    free(session);
}

/* ---- one request ---------------------------------------------------------------------------- */

/* The request headers; the Authorization line is copied from the token cache's secret. */
static struct curl_slist *graph_request_headers(const struct crd_secret *authorization,
                                                const char *client_request_id, bool with_body)
{
    char id_line[64];
    snprintf(id_line, sizeof(id_line), "client-request-id: %s", client_request_id);
    const char *lines[] = {
        "Accept: application/json",
        crd_secret_bytes(authorization),
        id_line,
        "Prefer: include-unknown-enum-members",
        "Content-Type: application/json",
    };
    size_t n_lines = sizeof(lines) / sizeof(lines[0]) - (with_body ? 0 : 1);
    struct curl_slist *list = NULL;
    for (size_t i = 0; i < n_lines; i++) {
        struct curl_slist *more = curl_slist_append(list, lines[i]);
        if (more == NULL) {
            curl_slist_free_all(list);
            return NULL;
        }
        list = more;
    }
    return list;
}

/* Wipes libcurl's copy of the Authorization line, then frees the list. */
static void graph_free_request_headers(struct curl_slist *list)
{
    for (struct curl_slist *item = list; item != NULL; item = item->next) {
        if (strncasecmp(item->data, "Authorization:", strlen("Authorization:")) == 0) {
            OPENSSL_cleanse(item->data, strlen(item->data));
        }
    }
    curl_slist_free_all(list);
}

/* Describes a failed response for err: status, Graph's code and the request ids. */
static void graph_describe_status(const struct crd_graph_failure *failure, char *buf, size_t size)
{
    snprintf(buf, size, "HTTP %ld%s%s (request-id '%s', client-request-id '%s')",
             failure->http_status, failure->code[0] != '\0' ? " " : "", failure->code,
             failure->request_id, failure->client_request_id);
}

/* Sets the method and body of the next transfer on the reused easy handle. */
static CURLcode graph_set_method(CURL *curl, const char *method, const char *body)
{
    if (body == NULL && strcmp(method, "POST") == 0) {
        body = "";
    }
    if (body == NULL) {
        CURLcode code = curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
        if (code == CURLE_OK && strcmp(method, "GET") != 0) {
            code = curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
        }
        return code;
    }
    CURLcode code = curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    if (code == CURLE_OK) {
        code = curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    }
    if (code == CURLE_OK && strcmp(method, "POST") != 0) {
        code = curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    }
    return code;
}

/*
 * Sends one request and classifies the response. err is filled for every
 * outcome but OK; for FAILED its code is final. *ret_retry_after_ms gets the
 * Retry-After delay, or -1 when the response had none.
 */
static enum graph_attempt request_attempt(struct graph_fetch *f, const char *method,
                                          const char *url, const char *body, const char *what,
                                          uint64_t *ret_generation, long *ret_status,
                                          json_t **ret_json, int64_t *ret_retry_after_ms,
                                          struct crd_error *err)
{
    struct crd_graph_session *session = f->session;
    struct crd_graph_failure *failure = f->failure;
    struct crd_secret *authorization = NULL;
    struct curl_slist *headers = NULL;
    enum graph_attempt result = GRAPH_ATTEMPT_FAILED;
    char client_request_id[CRD_GUID_LEN + 1];

    *ret_retry_after_ms = -1;
    failure->http_status = 0;
    failure->code[0] = '\0';
    failure->request_id[0] = '\0';
    failure->client_request_id[0] = '\0';
    failure->date[0] = '\0';
    failure->retry_after_ms = 0;

    int r = crd_auth_get_header(f->graph->auth, &authorization, ret_generation, err);
    if (r < 0) {
        (void)crd_error_prefix(err, "%s: cannot get an access token", what);
        result = r == -EAGAIN ? GRAPH_ATTEMPT_TRANSIENT : GRAPH_ATTEMPT_FAILED;
        goto out;
    }

    session_new_guid(session, client_request_id);
    headers = graph_request_headers(authorization, client_request_id, body != NULL);
    if (headers == NULL) {
        (void)crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }

    crd_http_body_reset(&session->body);
    session->curl_error[0] = '\0';
    session->retry_after[0] = '\0';
    session->request_id[0] = '\0';
    CURLcode code = curl_easy_setopt(session->curl, CURLOPT_URL, url);
    if (code == CURLE_OK) {
        code = graph_set_method(session->curl, method, body);
    }
    if (code == CURLE_OK) {
        code = curl_easy_setopt(session->curl, CURLOPT_HTTPHEADER, headers);
    }
    if (code == CURLE_OK) {
        code = curl_easy_perform(session->curl);
        failure->attempts++;
    }
    (void)curl_easy_setopt(session->curl, CURLOPT_HTTPHEADER, NULL);
    (void)curl_easy_setopt(session->curl, CURLOPT_CUSTOMREQUEST, NULL);
    (void)curl_easy_setopt(session->curl, CURLOPT_POSTFIELDS, NULL);

    long status = 0;
    if (code == CURLE_OK) {
        (void)curl_easy_getinfo(session->curl, CURLINFO_RESPONSE_CODE, &status);
    }
    failure->http_status = status;

    if (code != CURLE_OK) {
        snprintf(failure->client_request_id, sizeof(failure->client_request_id), "%s",
                 client_request_id);
        const char *why =
            session->curl_error[0] != '\0' ? session->curl_error : curl_easy_strerror(code);
        if (code == CURLE_ABORTED_BY_CALLBACK && atomic_load(&f->graph->cancelled)) {
            (void)crd_error_set(err, -ECANCELED, "%s: cancelled", what);
        } else if (session->body.too_large || code == CURLE_FILESIZE_EXCEEDED) {
            (void)crd_error_set(err, -EPROTO,
                                "%s: response larger than %d MiB (client-request-id '%s')", what,
                                GRAPH_MAX_BODY_SIZE / (1024 * 1024), client_request_id);
        } else if (crd_http_transport_is_transient(code)) {
            (void)crd_error_set(err, -EAGAIN, "%s: %s (client-request-id '%s')", what, why,
                                client_request_id);
            result = GRAPH_ATTEMPT_TRANSIENT;
        } else {
            (void)crd_error_set(err, code == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EPROTO,
                                "%s: %s (client-request-id '%s')", what, why, client_request_id);
        }
        goto out;
    }

    if (status >= 200 && status <= 299 && session->body.len == 0 && status != 200) {
        /* 201 and 204 may come without a body; 200 always carries one. */
        *ret_status = status;
        *ret_json = NULL;
        result = GRAPH_ATTEMPT_OK;
        goto out;
    }
    if (status >= 200 && status <= 299) {
        json_error_t json_error;
        json_t *json = json_loadb(session->body.data != NULL ? session->body.data : "",
                                  session->body.len, 0, &json_error);
        if (json == NULL) {
            /* Most likely cut off on the way: worth another try. */
            (void)crd_error_set(err, -EAGAIN,
                                "%s: HTTP %ld with invalid JSON at byte %d of %zu: %s "
                                "(client-request-id '%s')",
                                what, status, json_error.position, session->body.len,
                                json_error.text, client_request_id);
            snprintf(failure->client_request_id, sizeof(failure->client_request_id), "%s",
                     client_request_id);
            result = GRAPH_ATTEMPT_TRANSIENT;
            goto out;
        }
        if (!json_is_object(json)) {
            json_decref(json);
            (void)crd_error_set(err, -EPROTO,
                                "%s: HTTP %ld with a JSON body that is not an object", what,
                                status);
            goto out;
        }
        *ret_status = status;
        *ret_json = json;
        result = GRAPH_ATTEMPT_OK;
        goto out;
    }

    graph_parse_error_body(&session->body, failure);
    if (failure->request_id[0] == '\0') {
        snprintf(failure->request_id, sizeof(failure->request_id), "%s", session->request_id);
    }
    if (failure->client_request_id[0] == '\0') {
        snprintf(failure->client_request_id, sizeof(failure->client_request_id), "%s",
                 client_request_id);
    }
    *ret_retry_after_ms = graph_parse_retry_after(session->retry_after);
    failure->retry_after_ms = *ret_retry_after_ms > 0 ? *ret_retry_after_ms : 0;

    char described[256];
    graph_describe_status(failure, described, sizeof(described));
    if (status == 401) {
        (void)crd_error_set(err, -EACCES, "%s: %s: Graph rejected the access token", what,
                            described);
        result = GRAPH_ATTEMPT_UNAUTHORIZED;
    } else if (status == 429) {
        (void)crd_error_set(err, -EAGAIN, "%s: %s: throttled", what, described);
        result = GRAPH_ATTEMPT_THROTTLED;
    } else if (status == 408 || status >= 500) {
        (void)crd_error_set(err, -EAGAIN, "%s: %s", what, described);
        result = GRAPH_ATTEMPT_TRANSIENT;
    } else if (status == 403) {
        (void)crd_error_set(err, -EACCES,
                            "%s: %s: access denied; the application needs the CallRecords.Read.All "
                            "application permission, with admin consent",
                            what, described);
    } else if (status == 404) {
        (void)crd_error_set(err, -ENOENT, "%s: %s: not found%s", what, described,
                            f->not_found_hint != NULL ? f->not_found_hint : "");
    } else if (status == 409) {
        (void)crd_error_set(err, -EEXIST, "%s: %s: conflict with an existing resource", what,
                            described);
    } else if (status >= 400) {
        (void)crd_error_set(err, -EINVAL, "%s: %s: request rejected", what, described);
    } else {
        /* Redirects are never followed, and nothing else is expected. */
        (void)crd_error_set(err, -EPROTO, "%s: unexpected %s", what, described);
    }

out:
    graph_free_request_headers(headers);
    crd_secret_free(authorization);
    return result;
}

int crd_graph_send(struct graph_fetch *f, const char *method, const char *url, const char *body,
                   const char *what, long *ret_status, json_t **ret_json, struct crd_error *err)
{
    struct crd_graph *graph = f->graph;
    unsigned failures = 0;
    bool refreshed = false;
    int64_t not_before_ms = 0;

    for (;;) {
        int r = graph_wait(graph, not_before_ms, err);
        if (r < 0) {
            return crd_error_prefix(err, "%s", what);
        }

        struct graph_ticket ticket = {.record = -1};
        if (graph->limits != NULL) {
            int64_t wait_started_ms = crd_time_monotonic_ms();
            r = crd_graph_limits_acquire(graph->limits, f->budget, f->call_id, &graph->cancelled,
                                         &ticket, err);
            if (r < 0) {
                return crd_error_prefix(err, "%s", what);
            }
            int64_t waited_ms = crd_time_monotonic_ms() - wait_started_ms;
            if (waited_ms > 0) {
                crd_log_debug(CRD_LOG_GRAPH, &f->ids, "%s: waited %lld ms for the request budget",
                              what, (long long)waited_ms);
            }
        }

        uint64_t generation = 0;
        int64_t retry_after_ms = -1;
        enum graph_attempt result = request_attempt(f, method, url, body, what, &generation,
                                                    ret_status, ret_json, &retry_after_ms, err);
        if (graph->limits != NULL) {
            crd_graph_limits_release(graph->limits, &ticket);
        }
        int64_t delay_ms = 0;
        switch (result) {
        case GRAPH_ATTEMPT_OK:
            return 0;
        case GRAPH_ATTEMPT_FAILED:
            return err->code;
        case GRAPH_ATTEMPT_UNAUTHORIZED:
            if (refreshed) {
                return crd_error_prefix(err, "a new access token was rejected too");
            }
            crd_log_debug(CRD_LOG_GRAPH, &f->ids, "%s; requesting a new token", err->message);
            refreshed = true;
            crd_auth_invalidate(graph->auth, generation);
            not_before_ms = 0;
            continue;
        case GRAPH_ATTEMPT_THROTTLED:
            failures++;
            delay_ms =
                retry_after_ms > 0 ? retry_after_ms : session_backoff_ms(f->session, failures);
            graph_close_gate(graph, crd_time_monotonic_ms() + delay_ms);
            not_before_ms = 0;
            break;
        case GRAPH_ATTEMPT_TRANSIENT:
            failures++;
            delay_ms =
                retry_after_ms > 0 ? retry_after_ms : session_backoff_ms(f->session, failures);
            not_before_ms = crd_time_monotonic_ms() + delay_ms;
            break;
        }

        if (failures >= graph->max_attempts) {
            return crd_error_prefix(err, "giving up after %u attempts", failures);
        }
        crd_log_debug(CRD_LOG_GRAPH, &f->ids, "%s; retrying in %lld ms (attempt %u of %u)",
                      err->message, (long long)delay_ms, failures + 1, graph->max_attempts);
    }
}

/* ---- paging ----------------------------------------------------------------------------- */

int crd_graph_check_host(const struct crd_graph *graph, const char *url, const char *what,
                         struct crd_error *err)
{
    char *scheme = NULL;
    char *host = NULL;
    char *port = NULL;
    int r = graph_split_url(url, &scheme, &host, &port);
    if (r == -ENOMEM) {
        return crd_error_set(err, r, "out of memory");
    }
    if (r < 0) {
        return crd_error_set(err, -EPROTO, "%s: '%.160s' is not an http(s) URL", what, url);
    }
    bool same = strcasecmp(scheme, graph->graph_scheme) == 0 &&
                strcasecmp(host, graph->graph_host) == 0 && strcmp(port, graph->graph_port) == 0;
    if (!same) {
        r = crd_error_set(err, -EPROTO,
                          "%s: '%.160s' points to another host (%s://%s:%s, not %s://%s:%s); "
                          "not following it",
                          what, url, scheme, host, port, graph->graph_scheme, graph->graph_host,
                          graph->graph_port);
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    return r;
}

void crd_graph_fetch_clear(struct graph_fetch *f)
{
    for (size_t i = 0; i < f->visited_count; i++) {
        free(f->visited[i]);
    }
    free(f->visited);
    f->visited = NULL;
    f->visited_count = 0;
    f->visited_capacity = 0;
}

int crd_graph_request(struct crd_graph_session *session, const char *method,
                      const char *url_or_path, const json_t *body, long *ret_status,
                      json_t **ret_json, struct crd_graph_failure *failure, struct crd_error *err)
{
    struct crd_graph *graph = session->graph;
    struct crd_graph_failure local_failure;
    struct crd_error local_err = {0};
    char *url = NULL;
    char *text = NULL;
    json_t *json = NULL;
    long status = 0;
    int r = 0;
    if (err == NULL) {
        /* The retry logic reads the last attempt's message back. */
        err = &local_err;
    }
    if (failure == NULL) {
        failure = &local_failure;
    }
    memset(failure, 0, sizeof(*failure));

    char what[192];
    snprintf(what, sizeof(what), "%s %.160s", method, url_or_path);
    struct graph_fetch f = {.session = session, .graph = graph, .failure = failure};

    if (atomic_load(&graph->cancelled)) {
        r = crd_error_set(err, -ECANCELED, "%s: cancelled", what);
        goto out;
    }
    if (url_or_path[0] == '/') {
        if (asprintf(&url, "%s%s", graph->graph_url, url_or_path) < 0) {
            url = NULL;
            r = crd_error_set(err, -ENOMEM, "out of memory");
            goto out;
        }
    } else {
        r = crd_graph_check_host(graph, url_or_path, what, err);
        if (r < 0) {
            goto out;
        }
        url = strdup(url_or_path);
        if (url == NULL) {
            r = crd_error_set(err, -ENOMEM, "out of memory");
            goto out;
        }
    }
    if (body != NULL) {
        text = json_dumps(body, JSON_COMPACT);
        if (text == NULL) {
            r = crd_error_set(err, -ENOMEM, "out of memory");
            goto out;
        }
    }

    r = crd_graph_send(&f, method, url, text, what, &status, &json, err);
    if (r < 0) {
        goto out;
    }

    unsigned attempts = failure->attempts;
    memset(failure, 0, sizeof(*failure));
    failure->attempts = attempts;
    if (ret_status != NULL) {
        *ret_status = status;
    }
    if (ret_json != NULL) {
        *ret_json = json;
        json = NULL;
    }
out:
    json_decref(json);
    if (text != NULL) {
        /* A request body may carry the clientState. */
        OPENSSL_cleanse(text, strlen(text));
    }
    free(text);
    free(url);
    return r;
}
