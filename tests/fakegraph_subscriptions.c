/* SPDX-License-Identifier: MIT */
/*
 * fakegraph serve as the Graph subscription API for callRecords: create
 * (with the validation handshake of fakegraph_handshake.c against
 * notificationUrl and lifecycleNotificationUrl before the response), list,
 * get, update (renewal), reauthorize and delete. Each subscription belongs
 * to the tenant of the token that created it. The Graph API finds, lists,
 * counts and checks for duplicates only within the token's tenant, and the
 * control API covers every tenant. An expired subscription is removed before
 * any request reads the list, so it is neither found nor notified.
 */
#include "config.h"

#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fakegraph_server.h"

/* Graph's limits for callRecord subscriptions, in minutes from the request. */
#define EXPIRY_MAX_MINUTES 4230
#define MINUTE_MS (60LL * 1000)

#define CLIENT_STATE_MAX_CHARS 128

/* callRecord subscriptions allowed per organization (tenant). */
#define SUBSCRIPTION_COUNT_MAX 100

/*
 * The participant-filtered resource, after "communications/callRecords?$filter=":
 * participants/any(p:p/id eq 'A'), joined with "or", or the "in ('A','B')" form.
 */
#define PARTICIPANT_FILTER_PATTERN                                                                 \
    "^participants/any\\(([a-zA-Z]+):\\1/id (eq '[^']+'( or \\1/id eq '[^']+')*"                   \
    "|in \\('[^']+'(, ?'[^']+')*\\))\\)$"

/* ---- the store -------------------------------------------------------------------- */

void fakegraph_subscription_clear(struct fakegraph_subscription *subscription)
{
    free(subscription->resource);
    free(subscription->change_type);
    free(subscription->client_state);
    free(subscription->notification_url);
    free(subscription->lifecycle_url);
    free(subscription->tls_version);
    *subscription = (struct fakegraph_subscription){0};
}

void fakegraph_subscriptions_expire_locked(struct fakegraph_server *server)
{
    int64_t now = crd_time_now_ms();
    size_t kept = 0;
    for (size_t i = 0; i < server->subscription_count; i++) {
        struct fakegraph_subscription *subscription = &server->subscriptions[i];
        if (subscription->expires_at_ms > now) {
            server->subscriptions[kept++] = *subscription;
            continue;
        }
        fakegraph_server_log(server, "subscription %s expired and was removed", subscription->id);
        fakegraph_subscription_clear(subscription);
    }
    server->subscription_count = kept;
}

/*
 * Returns the index of the subscription with id in tenant (FAKEGRAPH_NO_TENANT:
 * in any tenant), or -1. Call with server->lock held.
 */
static ssize_t find_subscription_locked(struct fakegraph_server *server, int tenant,
                                        const char *id)
{
    for (size_t i = 0; i < server->subscription_count; i++) {
        const struct fakegraph_subscription *subscription = &server->subscriptions[i];
        if ((tenant == FAKEGRAPH_NO_TENANT || subscription->tenant == tenant) &&
            strcasecmp(subscription->id, id) == 0) {
            return (ssize_t)i;
        }
    }
    return -1;
}

/* The resource without its optional leading '/', which Graph treats as the same resource. */
static const char *resource_key(const char *resource)
{
    return resource[0] == '/' ? resource + 1 : resource;
}

/*
 * Returns the index of a subscription of the same tenant with the same change
 * types and resource, or -1. Call with server->lock held.
 */
static ssize_t find_duplicate_locked(struct fakegraph_server *server,
                                     const struct fakegraph_subscription *subscription)
{
    const char *resource = subscription->resource;
    for (size_t i = 0; i < server->subscription_count; i++) {
        const struct fakegraph_subscription *other = &server->subscriptions[i];
        if (other->tenant == subscription->tenant &&
            strcmp(other->change_type, subscription->change_type) == 0 &&
            strcmp(resource_key(other->resource), resource_key(resource)) == 0) {
            return (ssize_t)i;
        }
    }
    return -1;
}

/* Counts the subscriptions of tenant. Call with server->lock held. */
static size_t count_subscriptions_locked(struct fakegraph_server *server, int tenant)
{
    size_t count = 0;
    for (size_t i = 0; i < server->subscription_count; i++) {
        if (server->subscriptions[i].tenant == tenant) {
            count++;
        }
    }
    return count;
}

/* ---- JSON ------------------------------------------------------------------------ */

/* The subscription as Graph returns it; clientState only when with_client_state (on create). */
static json_t *subscription_json(struct fakegraph_server *server,
                                 const struct fakegraph_subscription *subscription,
                                 bool with_context, bool with_client_state)
{
    char expiry[40];
    crd_time_format_iso8601(subscription->expires_at_ms, expiry, sizeof(expiry));
    json_t *object = json_object();
    if (object == NULL) {
        return NULL;
    }
    if (with_context) {
        char context[160];
        snprintf(context, sizeof(context), "%s/v1.0/$metadata#subscriptions/$entity",
                 server->base_url);
        (void)json_object_set_new(object, "@odata.context", json_string(context));
    }
    /* "s?" writes null for a NULL string, as Graph shows absent values. */
    json_t *fields = json_pack(
        "{s:s, s:s, s:s, s:s, s:s?, s:s, s:n, s:s?, s:s, s:s, s:b, s:s, s:n, s:n, s:n, s:s}",
        "id", subscription->id, "resource", subscription->resource, "applicationId",
        server->client_id, "changeType", subscription->change_type, "clientState",
        with_client_state ? subscription->client_state : NULL, "notificationUrl",
        subscription->notification_url, "notificationQueryOptions", "lifecycleNotificationUrl",
        subscription->lifecycle_url, "expirationDateTime", expiry, "creatorId",
        server->creator_id, "includeResourceData", 0, "latestSupportedTlsVersion",
        subscription->tls_version, "encryptionCertificate", "encryptionCertificateId",
        "notificationUrlAppId", "notificationContentType", "application/json");
    if (fields == NULL || json_object_update(object, fields) < 0) {
        json_decref(fields);
        json_decref(object);
        return NULL;
    }
    json_decref(fields);
    return object;
}

/* ---- validation of a create or update body ------------------------------------------- */

/* Checks changeType: a comma-separated list of "created" and "updated", each at most once. */
static int check_change_type(const char *change_type, char *message, size_t size)
{
    bool created = false;
    bool updated = false;
    const char *p = change_type;
    while (true) {
        size_t len = strcspn(p, ",");
        if (len == 7 && strncmp(p, "created", 7) == 0 && !created) {
            created = true;
        } else if (len == 7 && strncmp(p, "updated", 7) == 0 && !updated) {
            updated = true;
        } else {
            snprintf(message, size, "ChangeType '%.*s' is not supported for resource "
                     "'communications/callRecords'. Supported change types: created, updated, "
                     "each at most once.", (int)(len < 40 ? len : 40), p);
            return -EINVAL;
        }
        if (p[len] == '\0') {
            return 0;
        }
        p += len + 1;
    }
}

static int check_resource(const char *resource, char *message, size_t size)
{
    const char *key = resource_key(resource);
    if (strcmp(key, "communications/callRecords") == 0) {
        return 0;
    }
    const char *filter_prefix = "communications/callRecords?$filter=";
    if (strncmp(key, filter_prefix, strlen(filter_prefix)) == 0) {
        regex_t regex;
        if (regcomp(&regex, PARTICIPANT_FILTER_PATTERN, REG_EXTENDED | REG_NOSUB) != 0) {
            snprintf(message, size, "fakegraph could not compile its participant filter pattern");
            return -EINVAL;
        }
        int match = regexec(&regex, key + strlen(filter_prefix), 0, NULL, 0);
        regfree(&regex);
        if (match == 0) {
            return 0;
        }
    }
    snprintf(message, size, "Resource '%.200s' is not supported. Use /communications/callRecords "
             "or /communications/callRecords?$filter=participants/any(p:p/id eq '{id}').",
             resource);
    return -EINVAL;
}

static int check_https_url(const char *name, const char *url, char *message, size_t size)
{
    if (strncasecmp(url, "https://", 8) != 0) {
        snprintf(message, size, "Subscription %s must be an https URL; received '%.200s'.", name,
                 url);
        return -EINVAL;
    }
    return 0;
}

/*
 * Parses expirationDateTime and applies Graph's limits: in the future, at
 * most 4230 minutes ahead, and raised to min_lifetime_ms ahead when sooner
 * (Graph's 45 minutes unless --min-lifetime lowers it).
 */
static int check_expiry(const char *text, int64_t min_lifetime_ms, int64_t *ret_ms,
                        char *message, size_t size)
{
    int64_t expiry = 0;
    if (crd_time_parse_iso8601(text, &expiry) < 0) {
        snprintf(message, size, "expirationDateTime '%.60s' is not a valid date and time.", text);
        return -EINVAL;
    }
    int64_t now = crd_time_now_ms();
    if (expiry <= now) {
        snprintf(message, size, "Subscription expiration time must be in the future.");
        return -EINVAL;
    }
    if (expiry > now + EXPIRY_MAX_MINUTES * MINUTE_MS) {
        snprintf(message, size, "Subscription expiration can only be %d minutes in the future.",
                 EXPIRY_MAX_MINUTES);
        return -EINVAL;
    }
    if (expiry < now + min_lifetime_ms) {
        expiry = now + min_lifetime_ms;
    }
    *ret_ms = expiry;
    return 0;
}

/* Counts UTF-8 characters: every byte that does not continue a sequence. */
static size_t utf8_length(const char *text)
{
    size_t count = 0;
    for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++) {
        if ((*p & 0xc0) != 0x80) {
            count++;
        }
    }
    return count;
}

/* Reads an optional string member. Returns -EINVAL when present but not a string. */
static int optional_string(const json_t *body, const char *name, const char **ret_value,
                           char *message, size_t size)
{
    const json_t *value = json_object_get(body, name);
    *ret_value = NULL;
    if (value == NULL || json_is_null(value)) {
        return 0;
    }
    if (!json_is_string(value)) {
        snprintf(message, size, "Property '%s' must be a string.", name);
        return -EINVAL;
    }
    *ret_value = json_string_value(value);
    return 0;
}

static int check_tls_version(const char *version, char *message, size_t size)
{
    static const char *const versions[] = {"v1_0", "v1_1", "v1_2", "v1_3"};
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
        if (strcmp(version, versions[i]) == 0) {
            return 0;
        }
    }
    snprintf(message, size, "latestSupportedTlsVersion '%.20s' is not valid; use v1_0, v1_1, "
             "v1_2 or v1_3.", version);
    return -EINVAL;
}

/* Fills subscription from a create body. Returns 0, or -EINVAL with message set. */
static int parse_create_body(const json_t *body, struct fakegraph_subscription *subscription,
                             int64_t min_lifetime_ms, char *message, size_t size)
{
    const char *change_type = NULL;
    const char *url = NULL;
    const char *resource = NULL;
    const char *expiry = NULL;
    const char *client_state = NULL;
    const char *lifecycle_url = NULL;
    const char *tls_version = NULL;
    if (!json_is_object(body) ||
        optional_string(body, "changeType", &change_type, message, size) < 0 ||
        optional_string(body, "notificationUrl", &url, message, size) < 0 ||
        optional_string(body, "resource", &resource, message, size) < 0 ||
        optional_string(body, "expirationDateTime", &expiry, message, size) < 0 ||
        optional_string(body, "clientState", &client_state, message, size) < 0 ||
        optional_string(body, "lifecycleNotificationUrl", &lifecycle_url, message, size) < 0 ||
        optional_string(body, "latestSupportedTlsVersion", &tls_version, message, size) < 0) {
        if (!json_is_object(body)) {
            snprintf(message, size, "The request body must be a JSON object.");
        }
        return -EINVAL;
    }

    const char *missing = change_type == NULL ? "changeType"
                          : url == NULL       ? "notificationUrl"
                          : resource == NULL  ? "resource"
                          : expiry == NULL    ? "expirationDateTime"
                                              : NULL;
    if (missing != NULL) {
        snprintf(message, size, "The property '%s' is required.", missing);
        return -EINVAL;
    }
    if (json_is_true(json_object_get(body, "includeResourceData"))) {
        snprintf(message, size, "Rich notifications (includeResourceData) are not supported "
                 "for resource 'communications/callRecords'.");
        return -EINVAL;
    }
    if (check_change_type(change_type, message, size) < 0 ||
        check_resource(resource, message, size) < 0 ||
        check_https_url("notificationUrl", url, message, size) < 0 ||
        (lifecycle_url != NULL &&
         check_https_url("lifecycleNotificationUrl", lifecycle_url, message, size) < 0) ||
        (tls_version != NULL && check_tls_version(tls_version, message, size) < 0) ||
        check_expiry(expiry, min_lifetime_ms, &subscription->expires_at_ms, message, size) < 0) {
        return -EINVAL;
    }
    if (client_state != NULL && utf8_length(client_state) > CLIENT_STATE_MAX_CHARS) {
        snprintf(message, size, "clientState must be at most %d characters long.",
                 CLIENT_STATE_MAX_CHARS);
        return -EINVAL;
    }

    subscription->change_type = strdup(change_type);
    subscription->notification_url = strdup(url);
    subscription->resource = strdup(resource);
    subscription->client_state = client_state != NULL ? strdup(client_state) : NULL;
    subscription->lifecycle_url = lifecycle_url != NULL ? strdup(lifecycle_url) : NULL;
    subscription->tls_version = strdup(tls_version != NULL ? tls_version : "v1_2");
    if (subscription->change_type == NULL || subscription->notification_url == NULL ||
        subscription->resource == NULL || subscription->tls_version == NULL ||
        (client_state != NULL && subscription->client_state == NULL) ||
        (lifecycle_url != NULL && subscription->lifecycle_url == NULL)) {
        snprintf(message, size, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

/* ---- handlers ------------------------------------------------------------------- */

static json_t *parse_body(const struct fakegraph_request *request)
{
    if (request->body == NULL) {
        return NULL;
    }
    return json_loadb(request->body, request->body_len, 0, NULL);
}

static enum MHD_Result respond_invalid(struct fakegraph_server *server,
                                       struct MHD_Connection *connection,
                                       struct fakegraph_request *request, const char *message)
{
    return fakegraph_respond_graph_error(server, connection, request, MHD_HTTP_BAD_REQUEST,
                                         "InvalidRequest", "%s", message);
}

/* NOTE: Graph's error code for the 409 is not documented; the message is. */
static enum MHD_Result respond_conflict(struct fakegraph_server *server,
                                       struct MHD_Connection *connection,
                                       struct fakegraph_request *request, const char *id)
{
    return fakegraph_respond_graph_error(server, connection, request, MHD_HTTP_CONFLICT,
                                         "ExtensionError", "Subscription Id %s already exists "
                                         "for the requested combination", id);
}

/* Checks duplicates and the quota. Returns true when it queued an error. */
static bool reject_conflict(struct fakegraph_server *server, struct MHD_Connection *connection,
                            struct fakegraph_request *request,
                            const struct fakegraph_subscription *subscription,
                            enum MHD_Result *ret_result)
{
    char existing[CRD_GUID_LEN + 1] = "";
    bool full = false;
    pthread_mutex_lock(&server->lock);
    fakegraph_subscriptions_expire_locked(server);
    ssize_t index = find_duplicate_locked(server, subscription);
    if (index >= 0) {
        memcpy(existing, server->subscriptions[index].id, sizeof(existing));
    }
    full = count_subscriptions_locked(server, subscription->tenant) >= SUBSCRIPTION_COUNT_MAX;
    pthread_mutex_unlock(&server->lock);

    if (existing[0] != '\0') {
        *ret_result = respond_conflict(server, connection, request, existing);
        return true;
    }
    if (full) {
        *ret_result = fakegraph_respond_graph_error(
            server, connection, request, MHD_HTTP_FORBIDDEN, "ExtensionError",
            "Subscription limit of %d per organization reached for resource "
            "'communications/callRecords'.", SUBSCRIPTION_COUNT_MAX);
        return true;
    }
    return false;
}

static enum MHD_Result handle_create(struct fakegraph_server *server,
                                     struct MHD_Connection *connection,
                                     struct fakegraph_request *request)
{
    struct fakegraph_subscription subscription = {0};
    char message[1024];
    enum MHD_Result result = MHD_NO;
    json_t *body = parse_body(request);

    if (parse_create_body(body, &subscription, server->min_lifetime_s * 1000LL, message,
                          sizeof(message)) < 0) {
        result = respond_invalid(server, connection, request, message);
        goto out;
    }
    subscription.tenant = request->tenant;
    if (reject_conflict(server, connection, request, &subscription, &result)) {
        goto out;
    }
    if (fakegraph_run_handshake(server, subscription.notification_url, message,
                                sizeof(message)) < 0 ||
        (subscription.lifecycle_url != NULL &&
         fakegraph_run_handshake(server, subscription.lifecycle_url, message,
                                 sizeof(message)) < 0)) {
        result = respond_invalid(server, connection, request, message);
        goto out;
    }
    if (fakegraph_random_guid(subscription.id, NULL) < 0) {
        goto out;
    }

    /* Another create may have finished during the handshake, so check again while storing. */
    json_t *created = NULL;
    char existing[CRD_GUID_LEN + 1] = "";
    pthread_mutex_lock(&server->lock);
    ssize_t index = find_duplicate_locked(server, &subscription);
    if (index >= 0) {
        memcpy(existing, server->subscriptions[index].id, sizeof(existing));
    } else {
        struct fakegraph_subscription *grown = realloc(
            server->subscriptions, (server->subscription_count + 1) * sizeof(*grown));
        if (grown != NULL) {
            server->subscriptions = grown;
            created = subscription_json(server, &subscription, true, true);
            server->subscriptions[server->subscription_count++] = subscription;
            subscription = (struct fakegraph_subscription){0};
        }
    }
    pthread_mutex_unlock(&server->lock);

    if (existing[0] != '\0') {
        result = respond_conflict(server, connection, request, existing);
    } else if (created != NULL) {
        fakegraph_server_log(server, "subscription %s created in tenant %s",
                             json_string_value(json_object_get(created, "id")),
                             server->tenants[request->tenant]);
        result = fakegraph_respond_graph(server, connection, request, MHD_HTTP_CREATED, created,
                                         NULL);
    }

out:
    fakegraph_subscription_clear(&subscription);
    json_decref(body);
    return result;
}

static enum MHD_Result handle_list(struct fakegraph_server *server,
                                   struct MHD_Connection *connection,
                                   struct fakegraph_request *request)
{
    json_t *value = json_array();
    pthread_mutex_lock(&server->lock);
    fakegraph_subscriptions_expire_locked(server);
    for (size_t i = 0; value != NULL && i < server->subscription_count; i++) {
        if (server->subscriptions[i].tenant != request->tenant) {
            continue;
        }
        /* Graph withholds clientState when listing. */
        json_t *item = subscription_json(server, &server->subscriptions[i], false, false);
        if (item == NULL || json_array_append_new(value, item) < 0) {
            json_decref(value);
            value = NULL;
        }
    }
    pthread_mutex_unlock(&server->lock);

    char context[160];
    snprintf(context, sizeof(context), "%s/v1.0/$metadata#subscriptions", server->base_url);
    json_t *body = value != NULL ? json_pack("{s:s, s:o}", "@odata.context", context, "value",
                                             value)
                                 : NULL;
    if (body == NULL) {
        return MHD_NO;
    }
    return fakegraph_respond_graph(server, connection, request, MHD_HTTP_OK, body, NULL);
}

static enum MHD_Result respond_unknown_subscription(struct fakegraph_server *server,
                                                   struct MHD_Connection *connection,
                                                   struct fakegraph_request *request,
                                                   const char *id)
{
    return fakegraph_respond_graph_error(server, connection, request, MHD_HTTP_NOT_FOUND,
                                         "ResourceNotFound", "The object was not found. No "
                                         "subscription with id '%.60s'.", id);
}

/* Reads a PATCH body's expirationDateTime and notificationUrl. Returns 0 or -EINVAL. */
static int parse_update_body(const json_t *body, int64_t min_lifetime_ms, int64_t *ret_expiry,
                             const char **ret_url, char *message, size_t size)
{
    const char *expiry = NULL;
    *ret_expiry = 0;
    *ret_url = NULL;
    if (!json_is_object(body)) {
        snprintf(message, size, "The request body must be a JSON object.");
        return -EINVAL;
    }
    if (optional_string(body, "expirationDateTime", &expiry, message, size) < 0 ||
        optional_string(body, "notificationUrl", ret_url, message, size) < 0) {
        return -EINVAL;
    }
    if (json_object_get(body, "lifecycleNotificationUrl") != NULL) {
        snprintf(message, size, "lifecycleNotificationUrl cannot be changed; delete the "
                 "subscription and create it again.");
        return -EINVAL;
    }
    if (expiry == NULL && *ret_url == NULL) {
        snprintf(message, size, "The request body must contain expirationDateTime or "
                 "notificationUrl.");
        return -EINVAL;
    }
    if (expiry != NULL && check_expiry(expiry, min_lifetime_ms, ret_expiry, message, size) < 0) {
        return -EINVAL;
    }
    if (*ret_url != NULL && check_https_url("notificationUrl", *ret_url, message, size) < 0) {
        return -EINVAL;
    }
    return 0;
}

static enum MHD_Result handle_update(struct fakegraph_server *server,
                                     struct MHD_Connection *connection,
                                     struct fakegraph_request *request, const char *id)
{
    char message[1024];
    json_t *body = parse_body(request);
    int64_t expiry = 0;
    const char *url = NULL;
    enum MHD_Result result = MHD_NO;

    if (parse_update_body(body, server->min_lifetime_s * 1000LL, &expiry, &url, message,
                          sizeof(message)) < 0) {
        result = respond_invalid(server, connection, request, message);
        goto out;
    }
    /* NOTE: whether Graph repeats the handshake for a new notificationUrl is not documented. */
    if (url != NULL && fakegraph_run_handshake(server, url, message, sizeof(message)) < 0) {
        result = respond_invalid(server, connection, request, message);
        goto out;
    }

    char *url_copy = url != NULL ? strdup(url) : NULL;
    json_t *updated = NULL;
    bool found = false;
    pthread_mutex_lock(&server->lock);
    fakegraph_subscriptions_expire_locked(server);
    ssize_t index = find_subscription_locked(server, request->tenant, id);
    if (index >= 0 && (url == NULL || url_copy != NULL)) {
        struct fakegraph_subscription *subscription = &server->subscriptions[index];
        found = true;
        if (expiry != 0) {
            subscription->expires_at_ms = expiry;
        }
        if (url_copy != NULL) {
            free(subscription->notification_url);
            subscription->notification_url = url_copy;
            url_copy = NULL;
        }
        updated = subscription_json(server, subscription, true, false);
    }
    pthread_mutex_unlock(&server->lock);
    free(url_copy);

    if (!found) {
        result = respond_unknown_subscription(server, connection, request, id);
    } else if (updated != NULL) {
        fakegraph_server_log(server, "subscription %s updated", id);
        result = fakegraph_respond_graph(server, connection, request, MHD_HTTP_OK, updated, NULL);
    }

out:
    json_decref(body);
    return result;
}

/* GET, DELETE and POST .../reauthorize of one subscription; PATCH goes to handle_update. */
static enum MHD_Result handle_one(struct fakegraph_server *server,
                                  struct MHD_Connection *connection,
                                  struct fakegraph_request *request, const char *id,
                                  bool reauthorize)
{
    const char *method = request->method;
    if (strcmp(method, MHD_HTTP_METHOD_PATCH) == 0 && !reauthorize) {
        return handle_update(server, connection, request, id);
    }
    bool is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 && !reauthorize;
    bool is_delete = strcmp(method, MHD_HTTP_METHOD_DELETE) == 0 && !reauthorize;
    bool is_reauthorize = strcmp(method, MHD_HTTP_METHOD_POST) == 0 && reauthorize;
    if (!is_get && !is_delete && !is_reauthorize) {
        return fakegraph_respond_graph_error(server, connection, request,
                                             MHD_HTTP_METHOD_NOT_ALLOWED, "MethodNotAllowed",
                                             "The HTTP method '%s' is not supported here.",
                                             method);
    }

    json_t *found = NULL;
    struct fakegraph_subscription removed = {0};
    pthread_mutex_lock(&server->lock);
    fakegraph_subscriptions_expire_locked(server);
    ssize_t index = find_subscription_locked(server, request->tenant, id);
    if (index >= 0) {
        /* GET withholds clientState as the list does. */
        found = is_get ? subscription_json(server, &server->subscriptions[index], true, false)
                       : json_null();
        if (is_delete) {
            removed = server->subscriptions[index];
            server->subscriptions[index] = server->subscriptions[--server->subscription_count];
        }
    }
    pthread_mutex_unlock(&server->lock);

    if (index < 0) {
        return respond_unknown_subscription(server, connection, request, id);
    }
    if (is_delete) {
        fakegraph_server_log(server, "subscription %s deleted", removed.id);
        fakegraph_subscription_clear(&removed);
    }
    if (is_get) {
        if (found == NULL) {
            return MHD_NO;
        }
        return fakegraph_respond_graph(server, connection, request, MHD_HTTP_OK, found, NULL);
    }
    json_decref(found);
    return fakegraph_respond_graph(server, connection, request, MHD_HTTP_NO_CONTENT, NULL, NULL);
}

enum MHD_Result fakegraph_handle_subscriptions(struct fakegraph_server *server,
                                               struct MHD_Connection *connection,
                                               struct fakegraph_request *request,
                                               const char *rest)
{
    if (rest[0] == '\0' || strcmp(rest, "/") == 0) {
        if (strcmp(request->method, MHD_HTTP_METHOD_POST) == 0) {
            return handle_create(server, connection, request);
        }
        if (strcmp(request->method, MHD_HTTP_METHOD_GET) == 0) {
            return handle_list(server, connection, request);
        }
        return fakegraph_respond_graph_error(server, connection, request,
                                             MHD_HTTP_METHOD_NOT_ALLOWED, "MethodNotAllowed",
                                             "The HTTP method '%s' is not supported on "
                                             "subscriptions.", request->method);
    }

    char id[80];
    const char *id_start = rest + 1;
    size_t id_len = strcspn(id_start, "/");
    const char *tail = id_start + id_len;
    if (id_len == 0 || id_len >= sizeof(id) ||
        (tail[0] != '\0' && strcmp(tail, "/reauthorize") != 0)) {
        return fakegraph_respond_graph_error(server, connection, request, MHD_HTTP_BAD_REQUEST,
                                             "BadRequest", "Resource not found for the segment "
                                             "'%.100s'.", id_start);
    }
    snprintf(id, sizeof(id), "%.*s", (int)id_len, id_start);
    return handle_one(server, connection, request, id, tail[0] != '\0');
}

/* ---- the control API's view ------------------------------------------------------------ */

/* The subscription as the list returns it, with its "tenant" added. */
static json_t *control_subscription_json(struct fakegraph_server *server,
                                         const struct fakegraph_subscription *subscription)
{
    json_t *item = subscription_json(server, subscription, false, false);
    const char *tenant = server->tenants[subscription->tenant];
    if (item != NULL && json_object_set_new(item, "tenant", json_string(tenant)) < 0) {
        json_decref(item);
        return NULL;
    }
    return item;
}

/*
 * POST /_fakegraph/subscriptions: stores a subscription as create does,
 * without a handshake, in the body's "tenant" (default: the default tenant).
 */
static enum MHD_Result control_insert(struct fakegraph_server *server,
                                      struct MHD_Connection *connection,
                                      struct fakegraph_request *request, const json_t *body)
{
    struct fakegraph_subscription subscription = {0};
    char message[1024];
    enum MHD_Result result = MHD_NO;
    json_t *created = NULL;
    int tenant = FAKEGRAPH_NO_TENANT;
    if (fakegraph_control_tenant(server, body, &tenant, message, sizeof(message)) < 0 ||
        parse_create_body(body, &subscription, server->min_lifetime_s * 1000LL, message,
                          sizeof(message)) < 0) {
        result = fakegraph_respond_control_error(server, connection, request,
                                                 MHD_HTTP_BAD_REQUEST, "%s", message);
        goto out;
    }
    subscription.tenant = tenant != FAKEGRAPH_NO_TENANT ? tenant : 0;
    request->tenant = subscription.tenant;
    if (fakegraph_random_guid(subscription.id, NULL) < 0) {
        goto out;
    }
    pthread_mutex_lock(&server->lock);
    struct fakegraph_subscription *grown =
        realloc(server->subscriptions, (server->subscription_count + 1) * sizeof(*grown));
    if (grown != NULL) {
        server->subscriptions = grown;
        created = control_subscription_json(server, &subscription);
        server->subscriptions[server->subscription_count++] = subscription;
        subscription = (struct fakegraph_subscription){0};
    }
    pthread_mutex_unlock(&server->lock);
    if (created != NULL) {
        fakegraph_server_log(server, "subscription %s inserted in tenant %s through the control "
                             "API", json_string_value(json_object_get(created, "id")),
                             server->tenants[request->tenant]);
        result = fakegraph_respond_json(server, connection, request, MHD_HTTP_CREATED, created);
    }
out:
    fakegraph_subscription_clear(&subscription);
    return result;
}

/*
 * POST /_fakegraph/subscriptions/remove {"subscriptionId"}: deletes the
 * subscription of any tenant without telling anyone.
 */
static enum MHD_Result control_remove(struct fakegraph_server *server,
                                      struct MHD_Connection *connection,
                                      struct fakegraph_request *request, const json_t *body)
{
    const char *id = json_string_value(json_object_get(body, "subscriptionId"));
    if (id == NULL) {
        return fakegraph_respond_control_error(server, connection, request,
                                               MHD_HTTP_BAD_REQUEST,
                                               "\"subscriptionId\" (a string) is required");
    }
    struct fakegraph_subscription removed = {0};
    pthread_mutex_lock(&server->lock);
    ssize_t index = find_subscription_locked(server, FAKEGRAPH_NO_TENANT, id);
    if (index >= 0) {
        removed = server->subscriptions[index];
        server->subscriptions[index] = server->subscriptions[--server->subscription_count];
    }
    pthread_mutex_unlock(&server->lock);
    if (index < 0) {
        return fakegraph_respond_control_error(server, connection, request, MHD_HTTP_NOT_FOUND,
                                               "no subscription %.60s", id);
    }
    request->tenant = removed.tenant;
    fakegraph_server_log(server, "subscription %s of tenant %s removed silently through the "
                         "control API", removed.id, server->tenants[removed.tenant]);
    fakegraph_subscription_clear(&removed);
    return fakegraph_respond(server, connection, request, MHD_HTTP_NO_CONTENT, NULL, NULL, NULL);
}

/*
 * GET /_fakegraph/subscriptions: the unexpired subscriptions of every tenant
 * as the list returns them, each with its "tenant".
 */
static enum MHD_Result control_list(struct fakegraph_server *server,
                                    struct MHD_Connection *connection,
                                    struct fakegraph_request *request)
{
    json_t *value = json_array();
    pthread_mutex_lock(&server->lock);
    fakegraph_subscriptions_expire_locked(server);
    for (size_t i = 0; value != NULL && i < server->subscription_count; i++) {
        json_t *item = control_subscription_json(server, &server->subscriptions[i]);
        if (item == NULL || json_array_append_new(value, item) < 0) {
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

enum MHD_Result fakegraph_handle_control_subscriptions(struct fakegraph_server *server,
                                                       struct MHD_Connection *connection,
                                                       struct fakegraph_request *request,
                                                       const char *rest, json_t *body)
{
    bool is_get = strcmp(request->method, MHD_HTTP_METHOD_GET) == 0;
    bool is_post = strcmp(request->method, MHD_HTTP_METHOD_POST) == 0;
    if (is_get && rest[0] == '\0') {
        return control_list(server, connection, request);
    }
    if (is_post && rest[0] == '\0') {
        return control_insert(server, connection, request, body);
    }
    if (is_post && strcmp(rest, "/remove") == 0) {
        return control_remove(server, connection, request, body);
    }
    return fakegraph_respond_control_error(server, connection, request, MHD_HTTP_NOT_FOUND,
                                           "no control endpoint %s /_fakegraph/subscriptions%.100s",
                                           request->method, rest);
}
