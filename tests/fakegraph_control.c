/* SPDX-License-Identifier: MIT */
/*
 * fakegraph serve's control API under /_fakegraph/, for tests and the demo.
 * It needs no token, and the server listens on loopback only.
 *
 *   POST /_fakegraph/records    publish or replace a record
 *   POST /_fakegraph/notify     send change or lifecycle notifications (fakegraph_notify_out.c)
 *   POST /_fakegraph/faults     queue a fault; GET lists the queued ones
 *   GET  /_fakegraph/requests   the request log
 *   GET  /_fakegraph/request-counts  {"METHOD PATH": count} over the request log
 *   GET, POST /_fakegraph/subscriptions, POST /_fakegraph/subscriptions/remove
 *                               list, insert (no handshake), remove silently
 *   POST /_fakegraph/reset      clear the records of every tenant, the faults,
 *                               the request log and the quota windows
 *
 * records, faults, notify and the subscription insert take an optional
 * "tenant": a served tenant GUID. A record is published in that tenant (by
 * default the first --tenant), and a fault then applies only to token
 * requests for /{tenant}/... and Graph requests with that tenant's token.
 * An unknown tenant is a 400 that lists the served ones.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fakegraph_server.h"

/* Maximum delay of a fault, so that a typo cannot hang a test run. */
#define FAULT_DELAY_MAX_MS 600000

/* Maximum notFoundForMs of a publish. */
#define NOT_FOUND_FOR_MAX_MS (24 * 60 * 60 * 1000)

/* ---- faults --------------------------------------------------------------------- */

void fakegraph_faults_clear_locked(struct fakegraph_server *server)
{
    for (size_t i = 0; i < server->fault_count; i++) {
        free(server->faults[i].match);
    }
    free(server->faults);
    server->faults = NULL;
    server->fault_count = 0;
}

bool fakegraph_faults_take(struct fakegraph_server *server, const char *path, int tenant,
                           struct fakegraph_fault *ret_fault)
{
    bool found = false;
    pthread_mutex_lock(&server->lock);
    for (size_t i = 0; i < server->fault_count; i++) {
        struct fakegraph_fault *fault = &server->faults[i];
        if (strncmp(path, fault->match, strlen(fault->match)) != 0 ||
            (fault->tenant != FAKEGRAPH_NO_TENANT && fault->tenant != tenant)) {
            continue;
        }
        *ret_fault = *fault;
        ret_fault->match = NULL; /* freed below once the fault is used up */
        found = true;
        fault->remaining--;
        if (fault->remaining == 0) {
            free(fault->match);
            memmove(fault, fault + 1, (server->fault_count - i - 1) * sizeof(*fault));
            server->fault_count--;
        }
        break;
    }
    pthread_mutex_unlock(&server->lock);
    return found;
}

static json_t *fault_json(const struct fakegraph_server *server,
                          const struct fakegraph_fault *fault)
{
    json_t *object = json_pack("{s:s, s:I, s:I, s:b, s:b}", "match", fault->match, "count",
                               (json_int_t)fault->remaining, "delayMs",
                               (json_int_t)fault->delay_ms, "drop", fault->drop, "truncate",
                               fault->truncate);
    if (object != NULL && fault->status != 0) {
        (void)json_object_set_new(object, "status", json_integer(fault->status));
    }
    if (object != NULL && fault->retry_after_s >= 0) {
        (void)json_object_set_new(object, "retryAfter", json_integer(fault->retry_after_s));
    }
    if (object != NULL && fault->tenant != FAKEGRAPH_NO_TENANT) {
        (void)json_object_set_new(object, "tenant", json_string(server->tenants[fault->tenant]));
    }
    return object;
}

/*
 * Reads an optional integer member within [min, max] into *ret_value, which
 * keeps its default when the member is absent. Returns 0 or -EINVAL.
 */
static int optional_integer(const json_t *body, const char *name, json_int_t min, json_int_t max,
                            json_int_t *ret_value, char *message, size_t size)
{
    const json_t *value = json_object_get(body, name);
    if (value == NULL || json_is_null(value)) {
        return 0;
    }
    if (!json_is_integer(value) || json_integer_value(value) < min ||
        json_integer_value(value) > max) {
        snprintf(message, size, "\"%s\" must be an integer from %lld to %lld", name,
                 (long long)min, (long long)max);
        return -EINVAL;
    }
    *ret_value = json_integer_value(value);
    return 0;
}

static int optional_boolean(const json_t *body, const char *name, bool *ret_value,
                            char *message, size_t size)
{
    const json_t *value = json_object_get(body, name);
    if (value == NULL || json_is_null(value)) {
        *ret_value = false;
        return 0;
    }
    if (!json_is_boolean(value)) {
        snprintf(message, size, "\"%s\" must be true or false", name);
        return -EINVAL;
    }
    *ret_value = json_is_true(value);
    return 0;
}

static int parse_fault(const struct fakegraph_server *server, const json_t *body,
                       struct fakegraph_fault *fault, char *message, size_t size)
{
    const char *match = json_string_value(json_object_get(body, "match"));
    if (match == NULL || match[0] != '/') {
        snprintf(message, size, "\"match\" must be a path prefix starting with '/', such as "
                 "\"/v1.0/communications/callRecords\"");
        return -EINVAL;
    }
    json_int_t status = 0;
    json_int_t retry_after = -1;
    json_int_t count = 1;
    json_int_t delay_ms = 0;
    if (optional_integer(body, "status", 100, 599, &status, message, size) < 0 ||
        optional_integer(body, "retryAfter", 0, 86400, &retry_after, message, size) < 0 ||
        optional_integer(body, "count", 1, 1000000, &count, message, size) < 0 ||
        optional_integer(body, "delayMs", 0, FAULT_DELAY_MAX_MS, &delay_ms, message, size) < 0 ||
        optional_boolean(body, "drop", &fault->drop, message, size) < 0 ||
        optional_boolean(body, "truncate", &fault->truncate, message, size) < 0 ||
        fakegraph_control_tenant(server, body, &fault->tenant, message, size) < 0) {
        return -EINVAL;
    }
    if (status == 0 && delay_ms == 0 && !fault->drop && !fault->truncate) {
        snprintf(message, size, "a fault needs \"status\", \"delayMs\", \"drop\" or "
                 "\"truncate\"");
        return -EINVAL;
    }
    if (fault->drop && (status != 0 || fault->truncate)) {
        snprintf(message, size, "\"drop\" sends no response, so it cannot be combined with "
                 "\"status\" or \"truncate\"");
        return -EINVAL;
    }
    if (retry_after >= 0 && status == 0) {
        snprintf(message, size, "\"retryAfter\" needs a \"status\" such as 429 or 503");
        return -EINVAL;
    }

    fault->match = strdup(match);
    if (fault->match == NULL) {
        snprintf(message, size, "out of memory");
        return -ENOMEM;
    }
    fault->status = (unsigned)status;
    fault->retry_after_s = (long)retry_after;
    fault->remaining = (unsigned)count;
    fault->delay_ms = (unsigned)delay_ms;
    return 0;
}

static enum MHD_Result handle_add_fault(struct fakegraph_server *server,
                                        struct MHD_Connection *connection,
                                        struct fakegraph_request *request, const json_t *body)
{
    struct fakegraph_fault fault = {0};
    char message[512];
    if (parse_fault(server, body, &fault, message, sizeof(message)) < 0) {
        free(fault.match);
        return fakegraph_respond_control_error(server, connection, request,
                                               MHD_HTTP_BAD_REQUEST, "%s", message);
    }

    request->tenant = fault.tenant;
    json_t *queued = fault_json(server, &fault);
    pthread_mutex_lock(&server->lock);
    struct fakegraph_fault *grown =
        realloc(server->faults, (server->fault_count + 1) * sizeof(*grown));
    if (grown != NULL) {
        server->faults = grown;
        server->faults[server->fault_count++] = fault;
        fault.match = NULL;
    }
    pthread_mutex_unlock(&server->lock);

    if (grown == NULL || queued == NULL) {
        free(fault.match);
        json_decref(queued);
        return MHD_NO;
    }
    fakegraph_server_log(server, "fault queued: %.300s", request->body);
    return fakegraph_respond_json(server, connection, request, MHD_HTTP_CREATED, queued);
}

static enum MHD_Result handle_list_faults(struct fakegraph_server *server,
                                          struct MHD_Connection *connection,
                                          struct fakegraph_request *request)
{
    json_t *value = json_array();
    pthread_mutex_lock(&server->lock);
    for (size_t i = 0; value != NULL && i < server->fault_count; i++) {
        if (json_array_append_new(value, fault_json(server, &server->faults[i])) < 0) {
            json_decref(value);
            value = NULL;
        }
    }
    pthread_mutex_unlock(&server->lock);
    if (value == NULL) {
        return MHD_NO;
    }
    return fakegraph_respond_json(server, connection, request, MHD_HTTP_OK,
                                  json_pack("{s:o}", "value", value));
}

/* ---- records, request log, reset ----------------------------------------------------- */

static enum MHD_Result handle_publish(struct fakegraph_server *server,
                                      struct MHD_Connection *connection,
                                      struct fakegraph_request *request, const json_t *body)
{
    char message[512] = "";
    json_int_t not_found_for_ms = 0;
    int tenant = FAKEGRAPH_NO_TENANT;
    json_t *record = json_object_get(body, "record");
    json_t *participants = json_object_get(body, "participants");
    if (json_is_null(participants)) {
        participants = NULL;
    }
    if (optional_integer(body, "notFoundForMs", 0, NOT_FOUND_FOR_MAX_MS, &not_found_for_ms,
                         message, sizeof(message)) < 0 ||
        fakegraph_control_tenant(server, body, &tenant, message, sizeof(message)) < 0) {
        return fakegraph_respond_control_error(server, connection, request,
                                               MHD_HTTP_BAD_REQUEST, "%s", message);
    }
    request->tenant = tenant != FAKEGRAPH_NO_TENANT ? tenant : 0;

    /* The store keeps the values unmodified and shares them between threads. */
    struct crd_error err = {0};
    if (fakegraph_records_publish(server, request->tenant, json_incref(record),
                                  json_incref(participants), (unsigned)not_found_for_ms,
                                  &err) < 0) {
        return fakegraph_respond_control_error(server, connection, request,
                                               err.code == -ENOMEM ? 500 : MHD_HTTP_BAD_REQUEST,
                                               "%s", err.message);
    }

    const char *id = json_string_value(json_object_get(record, "id"));
    size_t sessions = json_array_size(json_object_get(record, "sessions"));
    fakegraph_server_log(server, "record %s published in tenant %s: version %lld, %zu sessions, "
                         "%s participants, not found for %lld ms", id,
                         server->tenants[request->tenant],
                         (long long)json_integer_value(json_object_get(record, "version")),
                         sessions, participants != NULL ? "with" : "without",
                         (long long)not_found_for_ms);
    json_t *summary = json_pack("{s:s, s:O, s:I, s:I, s:s}", "id", id, "version",
                                json_object_get(record, "version") != NULL
                                    ? json_object_get(record, "version")
                                    : json_null(),
                                "sessions", (json_int_t)sessions, "notFoundForMs",
                                not_found_for_ms, "tenant", server->tenants[request->tenant]);
    if (summary != NULL) {
        (void)json_object_set_new(summary, "participants",
                                  participants != NULL
                                      ? json_integer((json_int_t)json_array_size(participants))
                                      : json_null());
    }
    return fakegraph_respond_json(server, connection, request, MHD_HTTP_CREATED, summary);
}

static enum MHD_Result handle_requests(struct fakegraph_server *server,
                                       struct MHD_Connection *connection,
                                       struct fakegraph_request *request)
{
    pthread_mutex_lock(&server->lock);
    char *body = json_dumps(server->request_log, JSON_COMPACT);
    pthread_mutex_unlock(&server->lock);
    if (body == NULL) {
        return MHD_NO;
    }
    return fakegraph_respond(server, connection, request, MHD_HTTP_OK,
                             "application/json; charset=utf-8", body, NULL);
}

static enum MHD_Result handle_request_counts(struct fakegraph_server *server,
                                             struct MHD_Connection *connection,
                                             struct fakegraph_request *request)
{
    json_t *counts = json_object();
    pthread_mutex_lock(&server->lock);
    size_t index;
    const json_t *entry;
    json_array_foreach(server->request_log, index, entry) {
        char key[512];
        snprintf(key, sizeof(key), "%s %s",
                 json_string_value(json_object_get(entry, "method")),
                 json_string_value(json_object_get(entry, "path")));
        json_int_t count = json_integer_value(json_object_get(counts, key));
        if (counts != NULL && json_object_set_new(counts, key, json_integer(count + 1)) < 0) {
            json_decref(counts);
            counts = NULL;
        }
    }
    pthread_mutex_unlock(&server->lock);
    if (counts == NULL) {
        return MHD_NO;
    }
    return fakegraph_respond_json(server, connection, request, MHD_HTTP_OK, counts);
}

static enum MHD_Result handle_reset(struct fakegraph_server *server,
                                    struct MHD_Connection *connection,
                                    struct fakegraph_request *request)
{
    pthread_mutex_lock(&server->lock);
    fakegraph_records_clear_locked(server);
    fakegraph_faults_clear_locked(server);
    fakegraph_quota_clear_locked(server);
    json_array_clear(server->request_log);
    server->request_log_dropped = 0;
    pthread_mutex_unlock(&server->lock);

    fakegraph_server_log(server, "reset: the records of every tenant, faults, quota windows and "
                         "the request log cleared");
    return fakegraph_respond(server, connection, request, MHD_HTTP_NO_CONTENT, NULL, NULL, NULL);
}

/* ---- routing -------------------------------------------------------------------- */

enum MHD_Result fakegraph_handle_control(struct fakegraph_server *server,
                                         struct MHD_Connection *connection,
                                         struct fakegraph_request *request, const char *rest)
{
    bool is_get = strcmp(request->method, MHD_HTTP_METHOD_GET) == 0;
    bool is_post = strcmp(request->method, MHD_HTTP_METHOD_POST) == 0;
    bool takes_body = is_post && strcmp(rest, "/reset") != 0;

    json_t *body = NULL;
    if (takes_body) {
        json_error_t error;
        body = request->body != NULL ? json_loadb(request->body, request->body_len, 0, &error)
                                     : NULL;
        if (!json_is_object(body)) {
            json_decref(body);
            return fakegraph_respond_control_error(server, connection, request,
                                                   MHD_HTTP_BAD_REQUEST, "the request body must "
                                                   "be a JSON object");
        }
    }

    enum MHD_Result result = MHD_NO;
    if (is_post && strcmp(rest, "/records") == 0) {
        result = handle_publish(server, connection, request, body);
    } else if (is_post && strcmp(rest, "/notify") == 0) {
        result = fakegraph_handle_notify(server, connection, request, body);
    } else if (is_post && strcmp(rest, "/faults") == 0) {
        result = handle_add_fault(server, connection, request, body);
    } else if (is_get && strcmp(rest, "/faults") == 0) {
        result = handle_list_faults(server, connection, request);
    } else if (is_get && strcmp(rest, "/requests") == 0) {
        result = handle_requests(server, connection, request);
    } else if (is_get && strcmp(rest, "/request-counts") == 0) {
        result = handle_request_counts(server, connection, request);
    } else if (strncmp(rest, "/subscriptions", strlen("/subscriptions")) == 0) {
        result = fakegraph_handle_control_subscriptions(server, connection, request,
                                                        rest + strlen("/subscriptions"), body);
    } else if (is_post && strcmp(rest, "/reset") == 0) {
        result = handle_reset(server, connection, request);
    } else {
        result = fakegraph_respond_control_error(server, connection, request,
                                                 MHD_HTTP_NOT_FOUND, "no control endpoint %s "
                                                 "/_fakegraph%.100s; see 'fakegraph help'",
                                                 request->method, rest);
    }
    json_decref(body);
    return result;
}
