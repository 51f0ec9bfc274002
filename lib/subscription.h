/* SPDX-License-Identifier: MIT */
/*
 * The subscription manager: keeps one Graph change-notification
 * subscription alive for this instance, with its own thread ("subscription").
 *
 * At start it lists the application's subscriptions, adopts the one whose
 * resource, change types and notificationUrl match the configuration,
 * deletes the others that point at this instance's notification or
 * lifecycle URL, and creates one only when none matched. It renews by PATCH
 * when the renewal margin before expiry is reached, checks every
 * check_interval that the subscription still exists, and acts on lifecycle
 * events. When the subscription was lost (404, subscriptionRemoved) it
 * creates a new one and backfills: it lists the call records that started
 * since the last known notification and enqueues them as jobs.
 *
 * Only a 404 from Graph makes the manager forget its subscription. Other
 * failures are retried with exponential backoff and jitter, logged, and
 * reported through crd_subscription_get_status().
 *
 * State in the store settings: subscription_id, subscription_expiry,
 * subscription_last_renewal and backfill_watermark (ms since the epoch),
 * each key prefixed with the tenant's setting_prefix.
 *
 * Thread safety: crd_subscription_lifecycle() and
 * crd_subscription_get_status() may be called from any thread while the
 * manager exists; the other functions from one thread.
 */
#ifndef CRD_SUBSCRIPTION_H
#define CRD_SUBSCRIPTION_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "graph.h"
#include "notification.h"
#include "secret.h"
#include "store.h"

/* MESSAGE_IDs of the key log entries, for `journalctl MESSAGE_ID=`. */
#define CRD_SUBSCRIPTION_MESSAGE_ID_CREATED "3d4c06d82292406fab5f6b2f6deda6e7"
#define CRD_SUBSCRIPTION_MESSAGE_ID_RENEWED "097a36143ebe48e1b1be7617dedcd5cd"
#define CRD_SUBSCRIPTION_MESSAGE_ID_REMOVED "a34890c38a654d81b7886075e54487fc"
#define CRD_SUBSCRIPTION_MESSAGE_ID_RECREATED "17a7b0597b4d4246a16e3f1623ed0b90"

struct crd_subscription;

/* Every pointer is borrowed and must outlive the manager. */
struct crd_subscription_options {
    struct crd_graph *graph;               /* used by this manager alone: stopping cancels it */
    struct crd_store *store;
    const char *tenant;                    /* tenant GUID or domain, for logs and backfilled jobs */
    const char *setting_prefix;            /* prepended to the store keys below; "" for none */
    const char *resource;
    const char *change_type;
    const char *notification_url;          /* public_url + notification_path */
    const char *lifecycle_url;             /* public_url + lifecycle_path */
    const struct crd_secret *client_state;
    /*
     * The clientState was generated at this start, so no subscription in
     * Graph carries it: one that matches is deleted and replaced, not
     * adopted, since its notifications would fail the clientState check.
     */
    bool client_state_generated;
    int64_t lifetime_ms;                   /* requested at each creation and renewal */
    int64_t renew_before_ms;               /* renew this long before expiry */
    int64_t check_interval_ms;             /* GET of the subscription; 0: never */
    int64_t backfill_margin_ms;            /* a backfill starts this long before its watermark */
    int64_t retry_base_ms;                 /* first retry delay after a failure; 0: 1 s */
    int64_t retry_max_ms;                  /* cap of the doubled delays; 0: 5 min */
    /* Called from the manager's thread after a backfill enqueued jobs. May be NULL. */
    void (*on_jobs)(void *context);
    void *on_jobs_context;
};

enum crd_subscription_state {
    CRD_SUBSCRIPTION_STARTING,  /* no subscription yet, first attempt in progress */
    CRD_SUBSCRIPTION_ACTIVE,
    CRD_SUBSCRIPTION_RENEWING,  /* a PATCH is in flight */
    CRD_SUBSCRIPTION_FAILING,   /* the last Graph call failed; retrying with backoff */
    CRD_SUBSCRIPTION_EXPIRED,   /* failing, and the known expiry has passed */
    CRD_SUBSCRIPTION_STATE__COUNT
};

struct crd_subscription_status {
    enum crd_subscription_state state;
    char id[CRD_GUID_LEN + 1];             /* "" when there is none */
    int64_t expires_at_ms;                 /* ms since the epoch; 0 when unknown */
    int64_t last_renewed_at_ms;            /* 0 when never renewed by this instance */
    int64_t failing_since_ms;              /* 0 unless failing or expired */
    char last_error[256];                  /* "" when the last call succeeded */
};

/*
 * Creates the manager without starting its thread, so that the listener can
 * hand it lifecycle events from the start. Loads the persisted state.
 * Returns 0, -EINVAL or -ENOMEM. Free with crd_subscription_free().
 */
int crd_subscription_new(const struct crd_subscription_options *options,
                         struct crd_subscription **ret_manager, struct crd_error *err);

/* Starts the thread. Call after the listener serves: Graph validates both URLs on creation. */
int crd_subscription_start(struct crd_subscription *manager, struct crd_error *err);

/*
 * Stops the thread, cancelling its Graph request in flight. The subscription
 * stays in Graph and in the store for the next start. Accepts NULL.
 */
void crd_subscription_stop(struct crd_subscription *manager);

/* Stops the thread if needed and frees the manager. Accepts NULL. */
void crd_subscription_free(struct crd_subscription *manager);

/*
 * Hands over a lifecycle event whose clientState matched. Events for another
 * subscription id are logged and ignored. Returns at once; the manager's
 * thread acts on it.
 */
void crd_subscription_lifecycle(struct crd_subscription *manager, enum crd_lifecycle_event event,
                                const char *subscription_id, const char *tenant_id);

/*
 * Returns whether a notification with subscription_id (compared
 * case-insensitively) is for this manager's subscription: the current one,
 * one of the few before it, or the one loaded from the store. While the
 * manager has no subscription yet (first start, Graph unreachable or the
 * creation in flight), every id is accepted, as there is none to compare.
 */
bool crd_subscription_accepts_id(struct crd_subscription *manager, const char *subscription_id);

void crd_subscription_get_status(struct crd_subscription *manager,
                                 struct crd_subscription_status *ret_status);

/* "starting", "active", "renewing", "failing" or "expired". */
const char *crd_subscription_state_name(enum crd_subscription_state state);

#endif
