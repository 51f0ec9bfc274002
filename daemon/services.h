/* SPDX-License-Identifier: MIT */
/*
 * The running parts of callrecd and the order in which they start and stop:
 * store, sink dispatchers, then each tenant's Graph clients, fetch workers
 * and reconciler (daemon/tenant.h), the listener, and last each tenant's
 * subscription manager. The listener starts after every part that handles a
 * notification runs, so none is accepted too early. The subscription
 * managers start last because Graph validates the listener's URLs while a
 * subscription is created, and stop first. The listener stops next, so no
 * notification arrives while the others wind down.
 */
#ifndef CRD_DAEMON_SERVICES_H
#define CRD_DAEMON_SERVICES_H

#include <pthread.h>
#include <stddef.h>

#include "conf.h"
#include "dispatcher.h"
#include "listener.h"
#include "store.h"
#include "tenant.h"

struct services {
    const struct crd_config *config;
    struct crd_store *store;
    char *notification_url;                /* public_url + notification_path */
    char *lifecycle_url;                   /* public_url + lifecycle_path */
    struct crd_dispatcher **dispatchers;   /* one per [sink NAME], in file order */
    const char **sink_names;
    size_t n_sinks;
    struct tenant_shared shared;           /* what the tenants borrow from the fields above */
    struct tenant *tenants;                /* one per configured tenant */
    size_t n_tenants;
    struct crd_listener_tenant *listener_tenants;
    pthread_mutex_t backpressure_lock;     /* protects n_started_tenants and sinks_over_bound */
    size_t n_started_tenants;              /* tenants whose fetcher backpressure applies to */
    size_t sinks_over_bound;               /* sinks whose backlog is at a bound */
    struct crd_listener *listener;
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
