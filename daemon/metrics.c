/* SPDX-License-Identifier: MIT */
/* The daemon's samples for GET /metrics: fetching, delivery and Graph's state. */
#include "config.h"

#include <stdatomic.h>

#include "services.h"

/* The fetch counters, summed over the tenants. */
static void add_fetcher_metrics(struct services *services, struct crd_metrics *metrics)
{
    double fetched = 0, not_found = 0, retried = 0, failed = 0, stored = 0, duplicates = 0;
    for (size_t i = 0; i < services->n_tenants; i++) {
        if (services->tenants[i].fetcher == NULL) {
            continue;
        }
        const struct crd_fetcher_counters *c = crd_fetcher_counters(services->tenants[i].fetcher);
        fetched += (double)atomic_load(&c->fetched);
        not_found += (double)atomic_load(&c->not_found);
        retried += (double)atomic_load(&c->retried);
        failed += (double)atomic_load(&c->failed);
        stored += (double)atomic_load(&c->stored);
        duplicates += (double)atomic_load(&c->duplicates);
    }
    const char *name = "callrecd_fetches_total";
    const char *help = "Call record fetches, by outcome.";
    static const char counter[] = "counter";
    crd_metrics_sample(metrics, name, counter, help, "outcome", "fetched", fetched);
    crd_metrics_sample(metrics, name, counter, help, "outcome", "not_found", not_found);
    crd_metrics_sample(metrics, name, counter, help, "outcome", "retried", retried);
    crd_metrics_sample(metrics, name, counter, help, "outcome", "failed", failed);
    crd_metrics_sample(metrics, "callrecd_record_versions_stored_total", counter,
                       "New call record versions stored for delivery.", NULL, NULL, stored);
    crd_metrics_sample(metrics, "callrecd_record_versions_duplicate_total", counter,
                       "Fetched versions not newer than the stored one, dropped.", NULL, NULL,
                       duplicates);
}

/* One gauge per tenant: 1 while its circuit breaker pauses its fetching. */
static void add_outage_metrics(struct services *services, struct crd_metrics *metrics)
{
    for (size_t i = 0; i < services->n_tenants; i++) {
        const struct tenant *tenant = &services->tenants[i];
        if (tenant->fetcher == NULL) {
            continue;
        }
        struct crd_fetcher_graph_status status;
        crd_fetcher_graph_status(tenant->fetcher, &status);
        crd_metrics_sample(metrics, "callrecd_graph_outage", "gauge",
                           "1 while the circuit breaker holds fetching back (open or half-open).",
                           "tenant", tenant->config->name,
                           status.state == CRD_BREAKER_STATE_CLOSED ? 0 : 1);
    }
}

static void add_sink_metrics(struct services *services, struct crd_metrics *metrics)
{
    static const struct {
        const char *name;
        const char *help;
    } families[] = {
        {"callrecd_deliveries_total", "Deliveries the sink confirmed."},
        {"callrecd_delivery_retries_total", "Deliveries rescheduled after a failed attempt."},
        {"callrecd_delivery_dead_letters_total", "Deliveries moved to the dead letters."},
        {"callrecd_sink_backlog", "Record versions waiting in the sink's outbox."},
        {"callrecd_sink_backlog_over_bound", "1 while the sink's backlog is at a bound."},
    };
    /* One family at a time, so that each gets its HELP and TYPE lines once. */
    for (size_t f = 0; f < sizeof(families) / sizeof(families[0]); f++) {
        for (size_t i = 0; i < services->n_sinks; i++) {
            struct crd_dispatcher *dispatcher = services->dispatchers[i];
            const struct crd_dispatcher_counters *c = crd_dispatcher_counters(dispatcher);
            struct crd_dispatcher_backlog backlog;
            crd_dispatcher_get_backlog(dispatcher, &backlog);
            double values[] = {
                (double)atomic_load(&c->delivered),
                (double)atomic_load(&c->retried),
                (double)atomic_load(&c->failed),
                (double)backlog.rows,
                backlog.over_bound ? 1 : 0,
            };
            crd_metrics_sample(metrics, families[f].name, f < 3 ? "counter" : "gauge",
                               families[f].help, "sink", crd_dispatcher_name(dispatcher),
                               values[f]);
        }
    }
}

void services_add_metrics(void *context, struct crd_metrics *metrics)
{
    struct services *services = context;
    add_fetcher_metrics(services, metrics);
    add_outage_metrics(services, metrics);
    add_sink_metrics(services, metrics);
}
