/* SPDX-License-Identifier: MIT */
/*
 * Parsing of Microsoft Graph change notification collections and lifecycle
 * notifications ({"value": [...]}) into plain C structs, under explicit
 * limits. A call id leaves this module only after it was checked to be a
 * GUID, so it is safe to put into a URL or a file name.
 *
 * A collection that is not valid JSON, is not an object, or has a missing,
 * non-array or empty "value" is rejected as a whole. A single item that is
 * wrong (wrong types, a non-GUID id, a resource that is not a call record
 * path) is kept in the batch with reject_reason set, so the caller can count
 * and log it and accept the rest. An unknown changeType or lifecycleEvent is
 * not a rejection: it parses as the UNKNOWN value, and the caller decides. A rejected item keeps the fields that were valid, for the caller's
 * log. A member whose value is JSON null counts as missing. The clientState
 * is not compared here: the caller knows the expected value. Thread-safe: no
 * shared state.
 */
#ifndef CRD_NOTIFICATION_H
#define CRD_NOTIFICATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "util.h"

enum crd_notification_kind {
    CRD_NOTIFICATION_CHANGE,     /* has "changeType" */
    CRD_NOTIFICATION_LIFECYCLE,  /* has "lifecycleEvent" */
};

enum crd_change_type {
    CRD_CHANGE_CREATED,
    CRD_CHANGE_UPDATED,
    CRD_CHANGE_DELETED,
    CRD_CHANGE_UNKNOWN,          /* unknownFutureValue or a value newer than this code */
    CRD_CHANGE__COUNT
};

enum crd_lifecycle_event {
    CRD_LIFECYCLE_REAUTHORIZATION_REQUIRED,
    CRD_LIFECYCLE_SUBSCRIPTION_REMOVED,
    CRD_LIFECYCLE_MISSED,
    CRD_LIFECYCLE_UNKNOWN,
    CRD_LIFECYCLE__COUNT
};

/* Upper bounds applied while parsing; zero fields take the defaults below. */
struct crd_notification_limits {
    size_t max_body_size;       /* bytes; default 1 MiB */
    size_t max_items;           /* items in "value"; default 1000 */
    size_t max_string_length;   /* any string or key in an item; default 2048 bytes */
    size_t max_depth;           /* JSON nesting; default 16 */
};

#define CRD_NOTIFICATION_DEFAULT_MAX_BODY_SIZE (1024 * 1024)
#define CRD_NOTIFICATION_DEFAULT_MAX_ITEMS 1000
#define CRD_NOTIFICATION_DEFAULT_MAX_STRING_LENGTH 2048
#define CRD_NOTIFICATION_DEFAULT_MAX_DEPTH 16

/* clientState may be up to 255 characters per the changeNotification resource page. */
#define CRD_CLIENT_STATE_MAX 255

struct crd_notification {
    enum crd_notification_kind kind;
    enum crd_change_type change_type;          /* UNKNOWN unless kind is CHANGE */
    enum crd_lifecycle_event lifecycle_event;  /* UNKNOWN unless kind is LIFECYCLE */

    char subscription_id[CRD_GUID_LEN + 1];    /* "" when invalid */
    char tenant_id[CRD_GUID_LEN + 1];          /* "" when invalid */
    char call_id[CRD_GUID_LEN + 1];            /* CHANGE only: from resourceData.id, else resource (lowercased) */

    bool has_client_state;                     /* false when missing or null */
    char client_state[CRD_CLIENT_STATE_MAX + 1];
    size_t client_state_len;

    int64_t subscription_expiration_ms;        /* 0 when missing or invalid */

    /* NULL for a usable item; otherwise a static string saying why it is not. */
    const char *reject_reason;
};

struct crd_notification_batch {
    struct crd_notification *items;
    size_t n_items;
    size_t n_rejected;  /* items with reject_reason set */
};

/*
 * Parses body[0..len). On success returns 0 and sets *ret_batch, freed with
 * crd_notification_batch_free(). Errors:
 *   -EMSGSIZE  the body or the item count exceeds the limits (HTTP 413);
 *   -EBADMSG   not JSON (duplicate keys included), nested deeper than max_depth, not an
 *              object, or "value" missing, not an array or empty (HTTP 400);
 *   -EINVAL    body is NULL with len > 0, or ret_batch is NULL;
 *   -ENOMEM.
 * limits may be NULL for the defaults. body need not be NUL-terminated.
 */
int crd_notification_parse(const char *body, size_t len,
                           const struct crd_notification_limits *limits,
                           struct crd_notification_batch **ret_batch, struct crd_error *err);

/* Frees a batch and its items. Accepts NULL. */
void crd_notification_batch_free(struct crd_notification_batch *batch);

/* The Graph spelling ("created", "reauthorizationRequired"), or "unknown" for UNKNOWN. */
const char *crd_change_type_name(enum crd_change_type type);
const char *crd_lifecycle_event_name(enum crd_lifecycle_event event);

#endif
