/* SPDX-License-Identifier: MIT */
/*
 * The parts callrecd runs for one tenant ([tenant NAME], or the [graph]
 * credentials): its clientState, credentials, Graph clients and request
 * budgets, fetch workers with their circuit breaker, reconciler and
 * subscription manager. Tenants share only the store, the sinks and the
 * listener, so a Graph outage or a bad credential in one tenant leaves the
 * others running.
 */
#ifndef CRD_DAEMON_TENANT_H
#define CRD_DAEMON_TENANT_H

#include <jansson.h>
#include <stdbool.h>

#include "assertion.h"
#include "conf.h"
#include "fetcher.h"
#include "graph.h"
#include "listener.h"
#include "reconciler.h"
#include "secret.h"
#include "store.h"
#include "subscription.h"

/* The parts of the daemon that every tenant borrows. */
struct tenant_shared {
    const struct crd_config *config;
    struct crd_store *store;
    const char *notification_url;          /* public_url + notification_path */
    const char *lifecycle_url;             /* public_url + lifecycle_path */
    const char *const *sink_names;
    size_t n_sinks;
    /* Called after new versions were stored, to wake the sink dispatchers. */
    void (*on_stored)(void *context);
    void *on_stored_context;
};

struct tenant {
    const struct crd_config_tenant *config;
    const struct tenant_shared *shared;
    char *guid;                            /* the tenant id when configured as a GUID, else NULL */
    struct crd_secret *client_state;
    bool client_state_generated;           /* made at this start: no subscription carries it */
    struct crd_assertion_signer *assertion_signer;  /* NULL with a client secret */
    struct crd_graph_limits *graph_limits; /* Graph counts one app's requests per tenant */
    struct crd_graph *graph;               /* the fetch workers' client */
    struct crd_graph *subscription_graph;  /* the manager's own client: stopping cancels it */
    struct crd_graph *reconcile_graph;     /* the reconciler's own client, for the same reason */
    struct crd_fetcher *fetcher;
    struct crd_reconciler *reconciler;     /* NULL when [reconcile] interval is 0 */
    struct crd_subscription *subscription;
};

/*
 * Loads or makes the clientState, sets up the credentials and Graph
 * clients, creates the subscription manager (not yet started) and starts
 * the fetch workers and the reconciler. On failure the error names the
 * tenant; tenant_stop() cleans up what was set up.
 */
int tenant_start(struct tenant *tenant, const struct crd_config_tenant *config,
                 const struct tenant_shared *shared, struct crd_error *err);

/* Starts the subscription manager; call once the listener serves. */
int tenant_start_subscription(struct tenant *tenant, struct crd_error *err);

/* Stops the subscription manager, so that no Graph call for it runs. Safe to repeat. */
void tenant_stop_subscription(struct tenant *tenant);

/* Stops the reconciler and the fetch workers and frees everything else. Safe on a partial start. */
void tenant_stop(struct tenant *tenant);

/* Fills the listener's entry for this tenant: its id, clientState and callbacks. */
void tenant_describe_for_listener(struct tenant *tenant, struct crd_listener_tenant *ret_entry);

/* Wakes the fetch workers after new jobs were committed. */
void tenant_wake_fetcher(struct tenant *tenant);

/* Builds {"name", "tenant", "subscription": {...}, "graph": {...}} for /healthz. */
json_t *tenant_health(struct tenant *tenant);

#endif
