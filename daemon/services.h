/* SPDX-License-Identifier: MIT */
/*
 * The running parts of callrecd and the order in which they start and stop:
 * store, Graph client, sink dispatchers, fetch workers, listener. The
 * listener starts last, so no notification is accepted before every part
 * that handles it runs, and stops first, so none arrives while the others
 * wind down.
 */
#ifndef CRD_DAEMON_SERVICES_H
#define CRD_DAEMON_SERVICES_H

#include "conf.h"
#include "dispatcher.h"
#include "fetcher.h"
#include "graph.h"
#include "listener.h"
#include "secret.h"
#include "store.h"

struct services {
    const struct crd_config *config;
    struct crd_store *store;
    struct crd_secret *client_state;
    struct crd_graph *graph;
    struct crd_dispatcher **dispatchers;   /* one per [sink NAME], in file order */
    const char **sink_names;
    size_t n_sinks;
    struct crd_fetcher *fetcher;
    struct crd_listener *listener;
};

/* Starts everything; on failure logs why, stops what started, and returns the error. */
int services_start(const struct crd_config *config, struct services *services);

/* Asks every sink to reopen its files or connections (SIGHUP, for logrotate). */
void services_reopen_sinks(struct services *services);

/* Stops everything in reverse order. Safe on a partly started set. */
void services_stop(struct services *services);

#endif
