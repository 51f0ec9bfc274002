/* SPDX-License-Identifier: MIT */
/*
 * POST /_fakegraph/notify: fakegraph serve sends change notifications (or
 * lifecycle notifications) as Graph does, to the notificationUrl of its
 * subscriptions or to a URL the request names, and returns the statuses the
 * receiver responded with.
 *
 * Request body:
 *   {"callId": ID, "changeType": "created"|"updated", "repeat": N, "batch": BOOL,
 *    "subscriptionId"?, "notificationUrl"?, "clientState"?, "tenant"?, "tenantId"?}
 * or, for a lifecycle notification, "lifecycleEvent" in place of callId and changeType.
 * Response: {"status": S, "statuses": [...]}, where S is the first status that
 * is not 2xx, or else the last status.
 *
 * Only the subscriptions of one tenant receive a notification: "tenant", or
 * else the tenant in which the call record with callId is published, or
 * else the default tenant. A named "subscriptionId" without "tenant" is
 * found in any tenant. Each item's tenantId is its subscription's tenant.
 * With "notificationUrl", "tenant" is any string and becomes the items'
 * tenantId (default: the default tenant), and the subscriptionId is the named
 * one, else that of the tenant's subscription with this notificationUrl, else
 * FAKEGRAPH_FIXTURE_SUBSCRIPTION. "tenantId" overrides the items'
 * tenantId in both cases, for tests of a notification from a wrong tenant.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fakegraph_server.h"

#define REPEAT_MAX 1000

/* subscriptionExpirationDateTime of items sent to a notificationUrl given in the request. */
#define OVERRIDE_EXPIRY_AHEAD_MS (24LL * 60 * 60 * 1000)

/* The fields of one /_fakegraph/notify request. */
struct notify_request {
    const char *call_id;           /* NULL for a lifecycle notification */
    const char *change_type;
    const char *lifecycle_event;   /* NULL for a change notification */
    unsigned repeat;
    bool batch;
    const char *subscription_id;
    const char *notification_url;
    const char *client_state;
    const char *tenant;            /* "tenant": the tenant whose subscriptions receive it */
    const char *tenant_id;         /* "tenantId": the items' tenantId in place of the tenant */
};

/* Where one notification POST goes, and what its items carry. */
struct fakegraph_delivery {
    char *url;
    char *subscription_id;
    char *client_state;        /* NULL: items carry no clientState */
    const char *tenant_id;     /* a --tenant value or a string of the request body */
    int64_t expires_at_ms;     /* for subscriptionExpirationDateTime */
};

static void fakegraph_delivery_clear(struct fakegraph_delivery *delivery)
{
    free(delivery->url);
    free(delivery->subscription_id);
    free(delivery->client_state);
    *delivery = (struct fakegraph_delivery){0};
}

static void deliveries_free(struct fakegraph_delivery *deliveries, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        fakegraph_delivery_clear(&deliveries[i]);
    }
    free(deliveries);
}

static const char *string_member(const json_t *body, const char *name)
{
    return json_string_value(json_object_get(body, name));
}

static bool is_lifecycle_event(const char *event)
{
    return strcmp(event, "reauthorizationRequired") == 0 ||
           strcmp(event, "subscriptionRemoved") == 0 || strcmp(event, "missed") == 0;
}

static int parse_notify_request(const json_t *body, struct notify_request *notify,
                                char *message, size_t size)
{
    *notify = (struct notify_request){
        .call_id = string_member(body, "callId"),
        .change_type = string_member(body, "changeType"),
        .lifecycle_event = string_member(body, "lifecycleEvent"),
        .repeat = 1,
        .batch = json_is_true(json_object_get(body, "batch")),
        .subscription_id = string_member(body, "subscriptionId"),
        .notification_url = string_member(body, "notificationUrl"),
        .client_state = string_member(body, "clientState"),
        .tenant = string_member(body, "tenant"),
        .tenant_id = string_member(body, "tenantId"),
    };

    const json_t *tenant = json_object_get(body, "tenant");
    if (tenant != NULL && !json_is_null(tenant) &&
        (notify->tenant == NULL || notify->tenant[0] == '\0')) {
        snprintf(message, size, "\"tenant\" must be a non-empty string: a tenant GUID");
        return -EINVAL;
    }

    const json_t *repeat = json_object_get(body, "repeat");
    if (repeat != NULL) {
        if (!json_is_integer(repeat) || json_integer_value(repeat) < 1 ||
            json_integer_value(repeat) > REPEAT_MAX) {
            snprintf(message, size, "\"repeat\" must be an integer from 1 to %d", REPEAT_MAX);
            return -EINVAL;
        }
        notify->repeat = (unsigned)json_integer_value(repeat);
    }
    if (notify->lifecycle_event != NULL) {
        if (notify->call_id != NULL || notify->change_type != NULL ||
            !is_lifecycle_event(notify->lifecycle_event)) {
            snprintf(message, size, "\"lifecycleEvent\" must be reauthorizationRequired, "
                     "subscriptionRemoved or missed, without \"callId\" or \"changeType\"");
            return -EINVAL;
        }
        return 0;
    }
    if (notify->call_id == NULL || notify->call_id[0] == '\0') {
        snprintf(message, size, "\"callId\" (a string) is required");
        return -EINVAL;
    }
    if (notify->change_type == NULL) {
        notify->change_type = "created";
    }
    if (strcmp(notify->change_type, "created") != 0 &&
        strcmp(notify->change_type, "updated") != 0) {
        snprintf(message, size, "\"changeType\" must be \"created\" or \"updated\"");
        return -EINVAL;
    }
    return 0;
}

/* True when the subscription's comma-separated changeType list contains change_type. */
static bool subscription_wants(const struct fakegraph_subscription *subscription,
                               const char *change_type)
{
    const char *p = subscription->change_type;
    size_t len = strlen(change_type);
    while (true) {
        size_t item_len = strcspn(p, ",");
        if (item_len == len && strncmp(p, change_type, len) == 0) {
            return true;
        }
        if (p[item_len] == '\0') {
            return false;
        }
        p += item_len + 1;
    }
}

static int add_delivery(struct fakegraph_delivery **deliveries, size_t *count, const char *url,
                        const char *subscription_id, const char *client_state,
                        const char *tenant_id, int64_t expires_at_ms)
{
    struct fakegraph_delivery *grown = realloc(*deliveries, (*count + 1) * sizeof(*grown));
    if (grown == NULL) {
        return -ENOMEM;
    }
    *deliveries = grown;
    struct fakegraph_delivery *delivery = &grown[(*count)++];
    *delivery = (struct fakegraph_delivery){
        .url = strdup(url),
        .subscription_id = strdup(subscription_id),
        .client_state = client_state != NULL ? strdup(client_state) : NULL,
        .tenant_id = tenant_id,
        .expires_at_ms = expires_at_ms,
    };
    if (delivery->url == NULL || delivery->subscription_id == NULL ||
        (client_state != NULL && delivery->client_state == NULL)) {
        return -ENOMEM;
    }
    return 0;
}

/*
 * Picks the tenant whose subscriptions receive the notification: "tenant",
 * else any tenant for a named subscription, else the tenant in which the
 * call record is published, else the default tenant. Stores the index, or
 * FAKEGRAPH_NO_TENANT for any tenant, in *ret_tenant. Returns 0, or -EINVAL
 * with message set.
 */
static int pick_tenant(struct fakegraph_server *server, const json_t *body,
                       const struct notify_request *notify, int *ret_tenant, char *message,
                       size_t size)
{
    if (fakegraph_control_tenant(server, body, ret_tenant, message, size) < 0) {
        return -EINVAL;
    }
    if (*ret_tenant != FAKEGRAPH_NO_TENANT || notify->subscription_id != NULL) {
        return 0;
    }
    *ret_tenant = 0;
    if (notify->call_id == NULL) {
        return 0;
    }

    int tenants[FAKEGRAPH_TENANT_MAX];
    size_t count = fakegraph_records_tenants(server, notify->call_id, tenants);
    if (count == 1) {
        *ret_tenant = tenants[0];
    } else if (count > 1) {
        char names[FAKEGRAPH_TENANT_MAX * (CRD_GUID_LEN + 2) + 1] = "";
        size_t used = 0;
        for (size_t i = 0; i < count && used < sizeof(names); i++) {
            used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s",
                                     i > 0 ? ", " : "", server->tenants[tenants[i]]);
        }
        snprintf(message, size, "call record %.60s is published in tenants %s; name one with "
                 "\"tenant\"", notify->call_id, names);
        return -EINVAL;
    }
    return 0;
}

/*
 * Picks the subscriptions of tenant (FAKEGRAPH_NO_TENANT: of any tenant) a
 * notification goes to, as Graph would: the named one, or every subscription
 * whose changeType includes the requested one (for lifecycle events: every
 * subscription with a lifecycleNotificationUrl). For subscriptionRemoved the
 * targets are removed before the event is sent. Returns 0, -ENOENT (message
 * set) or -ENOMEM.
 */
static int collect_subscription_deliveries(struct fakegraph_server *server,
                                           const struct notify_request *notify, int tenant,
                                           struct fakegraph_delivery **ret_deliveries,
                                           size_t *ret_count, char *message, size_t size)
{
    struct fakegraph_delivery *deliveries = NULL;
    size_t count = 0;
    bool named_found = false;
    int r = 0;

    pthread_mutex_lock(&server->lock);
    fakegraph_subscriptions_expire_locked(server);
    for (size_t i = 0; r == 0 && i < server->subscription_count; i++) {
        const struct fakegraph_subscription *subscription = &server->subscriptions[i];
        if ((tenant != FAKEGRAPH_NO_TENANT && subscription->tenant != tenant) ||
            (notify->subscription_id != NULL &&
             strcasecmp(subscription->id, notify->subscription_id) != 0)) {
            continue;
        }
        named_found = true;
        const char *url = notify->lifecycle_event != NULL ? subscription->lifecycle_url
                                                          : subscription->notification_url;
        if (url == NULL || (notify->change_type != NULL &&
                            !subscription_wants(subscription, notify->change_type))) {
            continue;
        }
        const char *tenant_id = notify->tenant_id != NULL ? notify->tenant_id
                                                          : server->tenants[subscription->tenant];
        r = add_delivery(&deliveries, &count, url, subscription->id, subscription->client_state,
                         tenant_id, subscription->expires_at_ms);
    }
    /* Graph sends subscriptionRemoved after it removed the subscription. */
    bool removing = r == 0 && notify->lifecycle_event != NULL &&
                    strcmp(notify->lifecycle_event, "subscriptionRemoved") == 0;
    for (size_t i = 0; removing && i < count; i++) {
        for (size_t j = 0; j < server->subscription_count; j++) {
            if (strcasecmp(server->subscriptions[j].id, deliveries[i].subscription_id) == 0) {
                fakegraph_subscription_clear(&server->subscriptions[j]);
                server->subscriptions[j] = server->subscriptions[--server->subscription_count];
                break;
            }
        }
    }
    pthread_mutex_unlock(&server->lock);

    if (r == 0 && count == 0) {
        r = -ENOENT;
        /* The messages name the tenant only when there is more than one. */
        char where[64] = "";
        if (server->tenant_count > 1 && tenant != FAKEGRAPH_NO_TENANT) {
            snprintf(where, sizeof(where), " in tenant %s", server->tenants[tenant]);
        }
        if (notify->subscription_id != NULL && !named_found) {
            snprintf(message, size, "no subscription %.60s%s; list them with GET "
                     "/_fakegraph/subscriptions", notify->subscription_id, where);
        } else if (notify->lifecycle_event != NULL) {
            snprintf(message, size, "no subscription%s has a lifecycleNotificationUrl; give "
                     "\"notificationUrl\" to send the event anyway", where);
        } else {
            snprintf(message, size, "no subscription%s receives \"%s\" notifications; create "
                     "one or give \"notificationUrl\" and \"clientState\"", where,
                     notify->change_type);
        }
    }
    if (r < 0) {
        deliveries_free(deliveries, count);
        return r;
    }
    *ret_deliveries = deliveries;
    *ret_count = count;
    return 0;
}

/* Appends one item to items: a changeNotification or a lifecycle notification. */
static int append_item(json_t *items, struct fakegraph_server *server,
                       const struct notify_request *notify,
                       const struct fakegraph_delivery *delivery, struct crd_error *err)
{
    char expiry[48];
    fakegraph_format_notification_time(delivery->expires_at_ms, expiry, sizeof(expiry));
    const char *tenant = delivery->tenant_id;

    if (notify->lifecycle_event == NULL) {
        struct fakegraph_change_item fields = {
            .subscription = delivery->subscription_id,
            .expiry = expiry,
            .change_type = notify->change_type,
            .call_id = notify->call_id,
            .client_state = delivery->client_state,
            .tenant = tenant,
        };
        return fakegraph_append_change_item(items, &fields, err);
    }

    json_t *item = json_pack("{s:s, s:s, s:s, s:s?, s:s}", "subscriptionId",
                             delivery->subscription_id, "subscriptionExpirationDateTime", expiry,
                             "tenantId", tenant, "clientState", delivery->client_state,
                             "lifecycleEvent", notify->lifecycle_event);
    if (item == NULL || json_array_append_new(items, item) < 0) {
        return crd_error_set(err, -ENOMEM, "building a lifecycle notification failed");
    }
    return 0;
}

/* Builds {"value": [item * count]} serialized. The caller frees the result. */
static int build_collection(struct fakegraph_server *server, const struct notify_request *notify,
                            const struct fakegraph_delivery *delivery, unsigned count,
                            char **ret_body, struct crd_error *err)
{
    json_t *items = json_array();
    if (items == NULL) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    int r = 0;
    for (unsigned i = 0; r == 0 && i < count; i++) {
        r = append_item(items, server, notify, delivery, err);
    }
    if (r < 0) {
        json_decref(items);
        return r;
    }

    json_t *collection = json_pack("{s:o}", "value", items); /* takes items, also on failure */
    char *body = collection != NULL ? json_dumps(collection, JSON_COMPACT) : NULL;
    json_decref(collection);
    if (body == NULL) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    *ret_body = body;
    return 0;
}

/* Sends the POSTs of one delivery and appends each status to statuses. */
static int deliver(struct fakegraph_server *server, const struct notify_request *notify,
                   const struct fakegraph_delivery *delivery, json_t *statuses,
                   struct crd_error *err)
{
    struct fakegraph_http *http = NULL;
    char *body = NULL;
    unsigned posts = notify->batch ? 1 : notify->repeat;
    unsigned items_per_post = notify->batch ? notify->repeat : 1;

    int r = fakegraph_http_new(delivery->url, server->cafile, FAKEGRAPH_NOTIFY_CONTENT_TYPE, &http,
                               err);
    if (r == 0) {
        r = build_collection(server, notify, delivery, items_per_post, &body, err);
    }
    for (unsigned i = 0; r == 0 && i < posts; i++) {
        struct fakegraph_response response = {0};
        int64_t started = crd_time_monotonic_ms();
        r = fakegraph_http_post(http, body, strlen(body), false, &response, err);
        if (r < 0) {
            break;
        }
        fakegraph_server_log(server, "notification (%u %s, tenantId %s) for subscription %s to "
                             "%.200s: HTTP %ld in %lld ms", items_per_post,
                             notify->lifecycle_event != NULL ? notify->lifecycle_event
                                                             : notify->change_type,
                             delivery->tenant_id, delivery->subscription_id, delivery->url,
                             response.status,
                             (long long)(crd_time_monotonic_ms() - started));
        (void)json_array_append_new(statuses, json_integer(response.status));
        fakegraph_response_clear(&response);
    }

    free(body);
    fakegraph_http_free(http);
    return r;
}

/* The status the control API reports: the first that is not 2xx, or else the last one. */
static json_int_t summary_status(const json_t *statuses)
{
    json_int_t last = 0;
    size_t index;
    const json_t *status;
    json_array_foreach(statuses, index, status) {
        last = json_integer_value(status);
        if (last < 200 || last > 299) {
            return last;
        }
    }
    return last;
}

/*
 * Copies the subscriptionId for a notification to an explicit
 * notificationUrl into id: the named one, else that of the tenant's
 * subscription with this notificationUrl (the one the receiver created),
 * else the fixture's.
 */
static void url_subscription_id(struct fakegraph_server *server,
                                const struct notify_request *notify, int tenant,
                                char id[CRD_GUID_LEN + 1])
{
    snprintf(id, CRD_GUID_LEN + 1, "%s",
             notify->subscription_id != NULL ? notify->subscription_id
                                             : FAKEGRAPH_FIXTURE_SUBSCRIPTION);
    if (notify->subscription_id != NULL) {
        return;
    }
    pthread_mutex_lock(&server->lock);
    fakegraph_subscriptions_expire_locked(server);
    for (size_t i = 0; i < server->subscription_count; i++) {
        const struct fakegraph_subscription *subscription = &server->subscriptions[i];
        if (subscription->tenant == tenant &&
            strcmp(subscription->notification_url, notify->notification_url) == 0) {
            snprintf(id, CRD_GUID_LEN + 1, "%s", subscription->id);
            break;
        }
    }
    pthread_mutex_unlock(&server->lock);
}

enum MHD_Result fakegraph_handle_notify(struct fakegraph_server *server,
                                        struct MHD_Connection *connection,
                                        struct fakegraph_request *request, json_t *body)
{
    struct notify_request notify;
    struct fakegraph_delivery *deliveries = NULL;
    size_t count = 0;
    json_t *statuses = json_array();
    char message[512];
    struct crd_error err = {0};
    enum MHD_Result result = MHD_NO;
    int r = 0;

    if (parse_notify_request(body, &notify, message, sizeof(message)) < 0) {
        result = fakegraph_respond_control_error(server, connection, request,
                                                 MHD_HTTP_BAD_REQUEST, "%s", message);
        goto out;
    }
    int tenant = FAKEGRAPH_NO_TENANT;
    if (notify.notification_url != NULL) {
        const char *tenant_id = notify.tenant_id != NULL ? notify.tenant_id
                                : notify.tenant != NULL  ? notify.tenant
                                                         : server->tenants[0];
        request->tenant = fakegraph_tenant_find(server, tenant_id);
        char subscription_id[CRD_GUID_LEN + 1];
        url_subscription_id(server, &notify, request->tenant, subscription_id);
        r = add_delivery(&deliveries, &count, notify.notification_url, subscription_id,
                         notify.client_state, tenant_id,
                         crd_time_now_ms() + OVERRIDE_EXPIRY_AHEAD_MS);
    } else if (pick_tenant(server, body, &notify, &tenant, message, sizeof(message)) < 0) {
        result = fakegraph_respond_control_error(server, connection, request,
                                                 MHD_HTTP_BAD_REQUEST, "%s", message);
        goto out;
    } else {
        request->tenant = tenant;
        r = collect_subscription_deliveries(server, &notify, tenant, &deliveries, &count,
                                            message, sizeof(message));
    }
    if (r == -ENOENT) {
        result = fakegraph_respond_control_error(server, connection, request, MHD_HTTP_NOT_FOUND,
                                                 "%s", message);
        goto out;
    }
    if (r < 0 || statuses == NULL) {
        goto out;
    }

    for (size_t i = 0; r == 0 && i < count; i++) {
        r = deliver(server, &notify, &deliveries[i], statuses, &err);
    }
    if (r < 0) {
        result = fakegraph_respond_control_error(server, connection, request,
                                                 MHD_HTTP_BAD_GATEWAY, "%s", err.message);
        goto out;
    }
    result = fakegraph_respond_json(server, connection, request, MHD_HTTP_OK,
                                    json_pack("{s:I, s:O}", "status", summary_status(statuses),
                                              "statuses", statuses));

out:
    json_decref(statuses);
    deliveries_free(deliveries, count);
    return result;
}
