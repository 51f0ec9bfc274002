/* SPDX-License-Identifier: MIT */
/*
 * The running parts of callrecd and the order in which they start and stop:
 * store, Graph clients, sink dispatchers, fetch workers, reconciler,
 * listener, subscription manager. The reconciler stops before the fetch
 * workers, whose queue it fills. The listener starts after every part that handles a
 * notification runs, so none is accepted too early. The subscription
 * manager starts last because Graph validates the listener's URLs while a
 * subscription is created, and stops first. The listener stops next, so no
 * notification arrives while the others wind down.
 */
#ifndef CRD_DAEMON_SERVICES_H
#define CRD_DAEMON_SERVICES_H

#include <pthread.h>
#include <stddef.h>

#include "conf.h"
#include "dispatcher.h"
#include "fetcher.h"
#include "graph.h"
#include "listener.h"
#include "reconciler.h"
#include "secret.h"
#include "store.h"
#include "subscription.h"

struct services {
    const struct crd_config *config;
    struct crd_store *store;
    struct crd_secret *client_state;
    struct crd_assertion_signer *assertion_signer;  /* NULL with a client secret */
    struct crd_graph_limits *graph_limits; /* request budgets shared by both Graph clients */
    struct crd_graph *graph;
    struct crd_graph *subscription_graph;  /* the manager's own client: stopping cancels it */
    struct crd_graph *reconcile_graph;     /* the reconciler's own client, for the same reason */
    char *notification_url;                /* public_url + notification_path */
    char *lifecycle_url;                   /* public_url + lifecycle_path */
    struct crd_dispatcher **dispatchers;   /* one per [sink NAME], in file order */
    const char **sink_names;
    size_t n_sinks;
    pthread_mutex_t backpressure_lock;     /* protects fetcher's assignment and sinks_over_bound */
    size_t sinks_over_bound;               /* sinks whose backlog is at a bound */
    struct crd_fetcher *fetcher;
    struct crd_reconciler *reconciler;     /* NULL when [reconcile] interval is 0 */
    struct crd_listener *listener;
    struct crd_subscription *subscription;
};

/* Starts everything; on failure logs why, stops what started, and returns the error. */
int services_start(const struct crd_config *config, struct services *services);

/* Asks every sink to reopen its files or connections (SIGHUP, for logrotate). */
void services_reopen_sinks(struct services *services);

/* Stops everything in reverse order. Safe on a partly started set. */
void services_stop(struct services *services);

/* Adds the fetch, delivery and Graph samples to GET /metrics (listener callback). */
void services_add_metrics(void *context, struct crd_metrics *metrics);

#endif
