/* SPDX-License-Identifier: MIT */
/*
 * Handling of a complete notification POST: parse, check each item, commit the
 * accepted ones as jobs in one transaction, and only then respond 202.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "listener_internal.h"
#include "notification.h"
#include "util.h"

static bool client_state_matches(const struct crd_listener_tenant *tenant,
                                 const struct crd_notification *item)
{
    if (!item->has_client_state) {
        return false;
    }
    return crd_timingsafe_equal(item->client_state, item->client_state_len,
                                crd_secret_bytes(tenant->client_state),
                                crd_secret_len(tenant->client_state));
}

/* The served tenant that the item's tenantId names, or NULL. */
static const struct crd_listener_tenant *find_tenant(const struct crd_listener *listener,
                                                     const struct crd_notification *item)
{
    for (size_t i = 0; i < listener->n_tenants; i++) {
        const struct crd_listener_tenant *tenant = &listener->tenants[i];
        if (tenant->tenant_id == NULL || strcasecmp(tenant->tenant_id, item->tenant_id) == 0) {
            return tenant;
        }
    }
    return NULL;
}

/*
 * Checks that the item's tenantId, clientState and subscriptionId belong to
 * one served tenant, counting and logging a mismatch. Returns the tenant, or
 * NULL when the item is to be dropped.
 */
static const struct crd_listener_tenant *check_item_tenant(struct crd_listener *listener,
                                                           const struct crd_request *request,
                                                           const struct crd_notification *item,
                                                           const struct crd_log_ids *ids)
{
    const struct crd_listener_tenant *tenant = find_tenant(listener, item);
    if (tenant == NULL) {
        atomic_fetch_add(&listener->counters.tenant_mismatches, 1);
        crd_listener_log_rejection(listener, ids, "dropped a notification item from %s: tenant "
                                   "'%s' is not one this instance serves; add a [tenant NAME] "
                                   "section for it or remove its subscription", request->peer,
                                   item->tenant_id);
        return NULL;
    }
    if (!client_state_matches(tenant, item)) {
        atomic_fetch_add(&listener->counters.client_state_mismatches, 1);
        crd_listener_log_rejection(listener, ids, "dropped a notification item from %s: "
                                   "clientState %s for tenant '%s'; it may be forged or from "
                                   "another subscriber", request->peer,
                                   item->has_client_state ? "does not match" : "is missing",
                                   tenant->name);
        return NULL;
    }
    if (tenant->has_subscription != NULL &&
        !tenant->has_subscription(tenant->context, item->subscription_id)) {
        atomic_fetch_add(&listener->counters.subscription_mismatches, 1);
        crd_listener_log_rejection(listener, ids, "dropped a notification item from %s: "
                                   "subscription %s is not the subscription of tenant '%s'",
                                   request->peer, item->subscription_id, tenant->name);
        return NULL;
    }
    return tenant;
}

static void log_lifecycle_event(const struct crd_notification *item)
{
    struct crd_log_ids ids = {.tenant = item->tenant_id, .subscription = item->subscription_id};
    char expiry[40] = "unknown";
    if (item->subscription_expiration_ms != 0) {
        crd_time_format_iso8601(item->subscription_expiration_ms, expiry, sizeof(expiry));
    }
    crd_log_notice(&ids, "lifecycle event '%s' received for subscription %s (expires %s)",
                   crd_lifecycle_event_name(item->lifecycle_event), item->subscription_id, expiry);
}

/*
 * Sorts one valid item: a lifecycle event is logged, a change to a call
 * record becomes a job notice, anything else is ignored. Returns true when a
 * notice was written to *ret_notice.
 */
static bool accept_item(struct crd_listener *listener, struct crd_request *request,
                        const struct crd_notification *item, int64_t now_ms,
                        struct crd_job_notice *ret_notice)
{
    struct crd_log_ids ids = {
        .tenant = item->tenant_id[0] != '\0' ? item->tenant_id : NULL,
        .subscription = item->subscription_id[0] != '\0' ? item->subscription_id : NULL,
        .call_id = item->call_id[0] != '\0' ? item->call_id : NULL,
    };

    if (item->reject_reason != NULL) {
        atomic_fetch_add(&listener->counters.notifications_invalid, 1);
        crd_listener_log_rejection(listener, &ids, "dropped a notification item from %s: %s",
                                   request->peer, item->reject_reason);
        return false;
    }
    const struct crd_listener_tenant *tenant = check_item_tenant(listener, request, item, &ids);
    if (tenant == NULL) {
        return false;
    }

    if (item->kind == CRD_NOTIFICATION_LIFECYCLE) {
        atomic_fetch_add(&listener->counters.lifecycle_events, 1);
        log_lifecycle_event(item);
        if (tenant->on_lifecycle != NULL) {
            tenant->on_lifecycle(tenant->context, item->lifecycle_event, item->subscription_id,
                                 item->tenant_id);
        }
        return false;
    }
    if (item->change_type != CRD_CHANGE_CREATED && item->change_type != CRD_CHANGE_UPDATED) {
        atomic_fetch_add(&listener->counters.notifications_ignored, 1);
        crd_log_debug(CRD_LOG_LISTENER, &ids, "ignoring change type '%s': call records are only "
                      "created and updated", crd_change_type_name(item->change_type));
        return false;
    }

    *ret_notice = (struct crd_job_notice){
        .tenant_id = item->tenant_id,
        .call_id = item->call_id,
        .subscription_id = item->subscription_id,
        .change_type = crd_change_type_name(item->change_type),
        .notified_at_ms = now_ms,
    };
    return true;
}

enum MHD_Result crd_listener_handle_notifications(struct crd_listener *listener,
                                                  struct MHD_Connection *connection,
                                                  struct crd_request *request)
{
    struct crd_error err = {0};
    struct crd_notification_batch *batch = NULL;
    struct crd_job_notice *notices = NULL;
    enum MHD_Result result = MHD_NO;

    struct crd_notification_limits limits = {
        .max_body_size = listener->config->listener.max_body_size,
        .max_items = listener->config->listener.max_notifications,
    };
    int r = crd_notification_parse(request->body != NULL ? request->body : "", request->body_len,
                                   &limits, &batch, &err);
    if (r == -EMSGSIZE) {
        crd_listener_log_rejection(listener, NULL, "rejected notification collection from %s: "
                                   "%s; responding 413", request->peer, err.message);
        result = crd_listener_respond(listener, connection, request, MHD_HTTP_CONTENT_TOO_LARGE,
                                      "text/plain", "notification collection too large\n");
        goto out;
    }
    if (r == -ENOMEM) {
        crd_log_err(NULL, "cannot parse a notification collection from %s: out of memory; "
                    "responding 503 so that Graph retries", request->peer);
        result = crd_listener_respond(listener, connection, request,
                                      MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain",
                                      "temporarily unavailable\n");
        goto out;
    }
    if (r < 0) {
        crd_listener_log_rejection(listener, NULL, "rejected notification collection from %s: "
                                   "%s; responding 400", request->peer, err.message);
        result = crd_listener_respond(listener, connection, request, MHD_HTTP_BAD_REQUEST,
                                      "text/plain", "invalid notification collection\n");
        goto out;
    }

    notices = calloc(batch->n_items, sizeof(*notices));
    if (notices == NULL) {
        result = crd_listener_respond(listener, connection, request,
                                      MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain",
                                      "temporarily unavailable\n");
        goto out;
    }

    int64_t now_ms = crd_time_now_ms();
    size_t n_notices = 0;
    for (size_t i = 0; i < batch->n_items; i++) {
        if (accept_item(listener, request, &batch->items[i], now_ms, &notices[n_notices])) {
            n_notices++;
        }
    }

    if (n_notices > 0) {
        r = crd_store_enqueue_jobs(listener->store, notices, n_notices, &err);
        if (r < 0) {
            atomic_fetch_add(&listener->counters.store_failures, 1);
            unsigned suppressed = 0;
            if (crd_ratelimit_allow(&listener->store_error_log, &suppressed)) {
                char note[64] = "";
                if (suppressed > 0) {
                    snprintf(note, sizeof(note), " (%u similar messages suppressed)", suppressed);
                }
                crd_log_err(NULL, "cannot store %zu notifications from %s: %s; responding 503 so "
                            "that Graph retries%s", n_notices, request->peer, err.message, note);
            }
            result = crd_listener_respond(listener, connection, request,
                                          MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain",
                                          "temporarily unavailable\n");
            goto out;
        }
        atomic_fetch_add(&listener->counters.notifications_accepted, n_notices);
        if (listener->on_jobs != NULL) {
            listener->on_jobs(listener->on_jobs_context);
        }
    }

    crd_log_debug(CRD_LOG_LISTENER, NULL, "accepted %zu of %zu notification items from %s",
                  n_notices, batch->n_items, request->peer);
    result = crd_listener_respond(listener, connection, request, MHD_HTTP_ACCEPTED, "text/plain",
                                  "");

out:
    free(notices);
    crd_notification_batch_free(batch);
    return result;
}
