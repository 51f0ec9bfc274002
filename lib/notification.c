/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "notification.h"

/* Call record paths in "resource" are relative to https://graph.microsoft.com. */
static const char CALL_RECORD_PATH_PREFIX[] = "communications/callRecords/";

static const char *const change_type_names[CRD_CHANGE__COUNT] = {
    [CRD_CHANGE_CREATED] = "created",
    [CRD_CHANGE_UPDATED] = "updated",
    [CRD_CHANGE_DELETED] = "deleted",
    [CRD_CHANGE_UNKNOWN] = "unknown",
};

static const char *const lifecycle_event_names[CRD_LIFECYCLE__COUNT] = {
    [CRD_LIFECYCLE_REAUTHORIZATION_REQUIRED] = "reauthorizationRequired",
    [CRD_LIFECYCLE_SUBSCRIPTION_REMOVED] = "subscriptionRemoved",
    [CRD_LIFECYCLE_MISSED] = "missed",
    [CRD_LIFECYCLE_UNKNOWN] = "unknown",
};

static struct crd_notification_limits notification_limits_resolve(
    const struct crd_notification_limits *limits)
{
    struct crd_notification_limits resolved = {0};
    if (limits != NULL) {
        resolved = *limits;
    }
    if (resolved.max_body_size == 0) {
        resolved.max_body_size = CRD_NOTIFICATION_DEFAULT_MAX_BODY_SIZE;
    }
    if (resolved.max_items == 0) {
        resolved.max_items = CRD_NOTIFICATION_DEFAULT_MAX_ITEMS;
    }
    if (resolved.max_string_length == 0) {
        resolved.max_string_length = CRD_NOTIFICATION_DEFAULT_MAX_STRING_LENGTH;
    }
    if (resolved.max_depth == 0) {
        resolved.max_depth = CRD_NOTIFICATION_DEFAULT_MAX_DEPTH;
    }
    return resolved;
}

/*
 * Scans the raw bytes for nesting deeper than max_depth, so that jansson never builds
 * the tree of such a body. Jansson 2.14 only has a compile-time limit, JSON_PARSER_MAX_DEPTH
 * (2048 in the Debian build).
 * Brackets inside strings do not count. Malformed JSON is left for jansson to reject.
 */
static bool notification_depth_exceeds(const char *body, size_t len, size_t max_depth)
{
    size_t depth = 0;
    bool in_string = false;

    for (size_t i = 0; i < len; i++) {
        char c = body[i];
        if (in_string) {
            if (c == '\\') {
                i++;
            } else if (c == '"') {
                in_string = false;
            }
            continue;
        }

        if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            depth++;
            if (depth > max_depth) {
                return true;
            }
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
        }
    }
    return false;
}

/* Returns true when a string or an object key anywhere under value is longer than max_length. */
static bool notification_has_long_string(json_t *value, size_t max_length)
{
    switch (json_typeof(value)) {
    case JSON_STRING:
        return json_string_length(value) > max_length;

    case JSON_ARRAY: {
        size_t index;
        json_t *element;
        json_array_foreach(value, index, element) {
            if (notification_has_long_string(element, max_length)) {
                return true;
            }
        }
        return false;
    }

    case JSON_OBJECT: {
        const char *key;
        size_t key_len;
        json_t *member;
        json_object_keylen_foreach(value, key, key_len, member) {
            if (key_len > max_length || notification_has_long_string(member, max_length)) {
                return true;
            }
        }
        return false;
    }

    default:
        return false;
    }
}

/* Returns the member named key, or NULL when it is missing or JSON null. */
static json_t *notification_member(const json_t *object, const char *key)
{
    json_t *member = json_object_get(object, key);
    return json_is_null(member) ? NULL : member;
}

/* Keeps the first reason, so the caller sees the earliest problem of the item. */
static void notification_reject(struct crd_notification *item, const char *reason)
{
    if (item->reject_reason == NULL) {
        item->reject_reason = reason;
    }
}

/* Copies value into buf when it is a GUID string. buf must hold CRD_GUID_LEN + 1 bytes. */
static bool notification_copy_guid(const json_t *value, char *buf)
{
    if (!json_is_string(value)) {
        return false;
    }
    const char *text = json_string_value(value);
    size_t len = json_string_length(value);
    if (!crd_guid_is_valid(text, len)) {
        return false;
    }
    memcpy(buf, text, CRD_GUID_LEN);
    buf[CRD_GUID_LEN] = '\0';
    return true;
}

static void notification_parse_guid_member(struct crd_notification *item, const json_t *object,
                                           const char *key, char *buf,
                                           const char *reason_missing,
                                           const char *reason_invalid)
{
    json_t *member = notification_member(object, key);
    if (member == NULL) {
        notification_reject(item, reason_missing);
    } else if (!notification_copy_guid(member, buf)) {
        notification_reject(item, reason_invalid);
    }
}

static void notification_parse_client_state(struct crd_notification *item, const json_t *object)
{
    /* A missing clientState is not rejected here, because the caller counts it as a mismatch. */
    json_t *client_state = notification_member(object, "clientState");
    if (client_state == NULL) {
        return;
    }
    if (!json_is_string(client_state)) {
        notification_reject(item, "clientState is not a string");
        return;
    }

    size_t len = json_string_length(client_state);
    if (len > CRD_CLIENT_STATE_MAX) {
        notification_reject(item, "clientState is longer than the maximum length");
        return;
    }
    memcpy(item->client_state, json_string_value(client_state), len);
    item->client_state[len] = '\0';
    item->client_state_len = len;
    item->has_client_state = true;
}

static void notification_parse_expiration(struct crd_notification *item, const json_t *object)
{
    /* An invalid expiry leaves 0 and does not reject the item, which is still actionable. */
    json_t *expiration = notification_member(object, "subscriptionExpirationDateTime");
    int64_t ms = 0;
    if (json_is_string(expiration) &&
        crd_time_parse_iso8601(json_string_value(expiration), &ms) == 0) {
        item->subscription_expiration_ms = ms;
    }
}

/*
 * Copies the GUID out of "communications/callRecords/{GUID}", with or without a leading
 * slash. Anything else (other segments, "..", a query string) does not match.
 */
static bool notification_call_id_from_resource(const json_t *resource, char *buf)
{
    const char *path = json_string_value(resource);
    size_t len = json_string_length(resource);
    size_t prefix_len = sizeof(CALL_RECORD_PATH_PREFIX) - 1;

    if (len > 0 && path[0] == '/') {
        path++;
        len--;
    }
    if (len != prefix_len + CRD_GUID_LEN ||
        strncasecmp(path, CALL_RECORD_PATH_PREFIX, prefix_len) != 0 ||
        !crd_guid_is_valid(path + prefix_len, CRD_GUID_LEN)) {
        return false;
    }
    memcpy(buf, path + prefix_len, CRD_GUID_LEN);
    buf[CRD_GUID_LEN] = '\0';
    return true;
}

/* Sets item->call_id from resourceData.id and resource, which must agree when both are given. */
static void notification_parse_call_id(struct crd_notification *item, const json_t *object)
{
    char id_from_data[CRD_GUID_LEN + 1] = "";
    char id_from_resource[CRD_GUID_LEN + 1] = "";

    json_t *resource_data = notification_member(object, "resourceData");
    if (resource_data != NULL) {
        if (!json_is_object(resource_data)) {
            notification_reject(item, "resourceData is not an object");
            return;
        }
        json_t *id = notification_member(resource_data, "id");
        if (id != NULL && !notification_copy_guid(id, id_from_data)) {
            notification_reject(item, "resourceData.id is not a GUID");
            return;
        }
    }

    json_t *resource = notification_member(object, "resource");
    if (resource != NULL) {
        if (!json_is_string(resource)) {
            notification_reject(item, "resource is not a string");
            return;
        }
        if (!notification_call_id_from_resource(resource, id_from_resource)) {
            notification_reject(item, "resource is not a call record path");
            return;
        }
    }

    if (id_from_data[0] == '\0' && id_from_resource[0] == '\0') {
        notification_reject(item, "resource and resourceData.id are missing");
        return;
    }
    if (id_from_data[0] != '\0' && id_from_resource[0] != '\0' &&
        strcasecmp(id_from_data, id_from_resource) != 0) {
        notification_reject(item, "resource and resourceData.id name different call records");
        return;
    }
    memcpy(item->call_id, id_from_data[0] != '\0' ? id_from_data : id_from_resource,
           sizeof(item->call_id));

    /* One spelling per call, so that jobs keyed by call id coalesce whatever case Graph sends. */
    for (size_t i = 0; i < CRD_GUID_LEN; i++) {
        item->call_id[i] = (char)tolower((unsigned char)item->call_id[i]);
    }
}

static void notification_parse_change(struct crd_notification *item, const json_t *object,
                                      const json_t *change_type)
{
    item->kind = CRD_NOTIFICATION_CHANGE;
    if (!json_is_string(change_type)) {
        notification_reject(item, "changeType is not a string");
    } else {
        /* unknownFutureValue and values newer than this code stay CRD_CHANGE_UNKNOWN. */
        const char *name = json_string_value(change_type);
        for (int type = 0; type < CRD_CHANGE_UNKNOWN; type++) {
            if (strcmp(name, change_type_names[type]) == 0) {
                item->change_type = (enum crd_change_type)type;
                break;
            }
        }
    }
    notification_parse_call_id(item, object);
}

static void notification_parse_lifecycle(struct crd_notification *item,
                                         const json_t *lifecycle_event)
{
    item->kind = CRD_NOTIFICATION_LIFECYCLE;
    if (!json_is_string(lifecycle_event)) {
        notification_reject(item, "lifecycleEvent is not a string");
        return;
    }
    const char *name = json_string_value(lifecycle_event);
    for (int event = 0; event < CRD_LIFECYCLE_UNKNOWN; event++) {
        if (strcmp(name, lifecycle_event_names[event]) == 0) {
            item->lifecycle_event = (enum crd_lifecycle_event)event;
            break;
        }
    }
}

/*
 * Fills item from one element of "value". Every field is read even after a problem,
 * so a rejected item still carries the ids that were valid, for the caller's log.
 */
static void notification_parse_item(struct crd_notification *item, json_t *value,
                                    const struct crd_notification_limits *limits)
{
    item->change_type = CRD_CHANGE_UNKNOWN;
    item->lifecycle_event = CRD_LIFECYCLE_UNKNOWN;

    if (!json_is_object(value)) {
        notification_reject(item, "notification is not a JSON object");
        return;
    }
    if (notification_has_long_string(value, limits->max_string_length)) {
        notification_reject(item, "notification has a string longer than the maximum length");
    }

    notification_parse_guid_member(item, value, "subscriptionId", item->subscription_id,
                                   "subscriptionId is missing", "subscriptionId is not a GUID");
    notification_parse_guid_member(item, value, "tenantId", item->tenant_id,
                                   "tenantId is missing", "tenantId is not a GUID");
    notification_parse_client_state(item, value);
    notification_parse_expiration(item, value);

    json_t *change_type = notification_member(value, "changeType");
    json_t *lifecycle_event = notification_member(value, "lifecycleEvent");
    if (change_type != NULL && lifecycle_event != NULL) {
        notification_reject(item, "notification has both changeType and lifecycleEvent");
    } else if (change_type != NULL) {
        notification_parse_change(item, value, change_type);
    } else if (lifecycle_event != NULL) {
        notification_parse_lifecycle(item, lifecycle_event);
    } else {
        notification_reject(item, "notification has neither changeType nor lifecycleEvent");
    }
}

/* Checks the collection as a whole and returns its "value" array, borrowed from root. */
static int notification_get_value(json_t *root, const struct crd_notification_limits *limits,
                                  json_t **ret_value, struct crd_error *err)
{
    if (!json_is_object(root)) {
        return crd_error_set(err, -EBADMSG, "notification body is not a JSON object");
    }

    json_t *value = json_object_get(root, "value");
    if (value == NULL) {
        return crd_error_set(err, -EBADMSG, "notification body has no \"value\" member");
    }
    if (!json_is_array(value)) {
        return crd_error_set(err, -EBADMSG, "\"value\" in the notification body is not an array");
    }

    size_t n_items = json_array_size(value);
    if (n_items == 0) {
        return crd_error_set(err, -EBADMSG, "\"value\" in the notification body is empty");
    }
    if (n_items > limits->max_items) {
        return crd_error_set(err, -EMSGSIZE,
                             "\"value\" in the notification body has %zu items, more than the "
                             "maximum of %zu",
                             n_items, limits->max_items);
    }
    *ret_value = value;
    return 0;
}

int crd_notification_parse(const char *body, size_t len,
                           const struct crd_notification_limits *limits,
                           struct crd_notification_batch **ret_batch, struct crd_error *err)
{
    int r = 0;
    json_t *root = NULL;
    struct crd_notification_batch *batch = NULL;

    if ((body == NULL && len > 0) || ret_batch == NULL) {
        r = crd_error_set(err, -EINVAL, "notification body or result pointer is NULL");
        goto out;
    }

    struct crd_notification_limits resolved = notification_limits_resolve(limits);
    if (len > resolved.max_body_size) {
        r = crd_error_set(err, -EMSGSIZE,
                          "notification body is %zu bytes, more than the maximum of %zu", len,
                          resolved.max_body_size);
        goto out;
    }
    if (body != NULL && notification_depth_exceeds(body, len, resolved.max_depth)) {
        r = crd_error_set(err, -EBADMSG, "notification body is nested deeper than %zu levels",
                          resolved.max_depth);
        goto out;
    }

    json_error_t json_error;
    root = json_loadb(body != NULL ? body : "", len, JSON_REJECT_DUPLICATES, &json_error);
    if (root == NULL) {
        r = crd_error_set(err, -EBADMSG,
                          "notification body is not valid JSON: %s (line %d, column %d)",
                          json_error.text, json_error.line, json_error.column);
        goto out;
    }

    json_t *value = NULL;
    r = notification_get_value(root, &resolved, &value, err);
    if (r < 0) {
        goto out;
    }

    size_t n_items = json_array_size(value);
    batch = calloc(1, sizeof(*batch));
    if (batch == NULL) {
        r = crd_error_set(err, -ENOMEM, "cannot allocate a notification batch");
        goto out;
    }
    batch->items = calloc(n_items, sizeof(*batch->items));
    if (batch->items == NULL) {
        r = crd_error_set(err, -ENOMEM, "cannot allocate %zu notifications", n_items);
        goto out;
    }
    batch->n_items = n_items;

    for (size_t i = 0; i < n_items; i++) {
        struct crd_notification *item = &batch->items[i];
        notification_parse_item(item, json_array_get(value, i), &resolved);
        if (item->reject_reason != NULL) {
            batch->n_rejected++;
        }
    }

    *ret_batch = batch;
    batch = NULL;
out:
    crd_notification_batch_free(batch);
    json_decref(root);
    return r;
}

void crd_notification_batch_free(struct crd_notification_batch *batch)
{
    if (batch == NULL) {
        return;
    }
    free(batch->items);
    free(batch);
}

const char *crd_change_type_name(enum crd_change_type type)
{
    if ((unsigned)type >= CRD_CHANGE__COUNT) {
        return "unknown";
    }
    return change_type_names[type];
}

const char *crd_lifecycle_event_name(enum crd_lifecycle_event event)
{
    if ((unsigned)event >= CRD_LIFECYCLE__COUNT) {
        return "unknown";
    }
    return lifecycle_event_names[event];
}
