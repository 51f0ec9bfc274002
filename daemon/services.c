/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "log.h"
#include "services.h"
#include "util.h"

/* Returns a socket passed by systemd (socket activation), -1 when there is none. */
static int adopt_systemd_socket(struct crd_error *err)
{
    int n = sd_listen_fds(1);
    if (n < 0) {
        return crd_error_set(err, n, "cannot read the sockets passed by systemd: %s",
                             strerror(-n));
    }
    if (n == 0) {
        return -1;
    }
    if (n > 1) {
        return crd_error_set(err, -EINVAL, "systemd passed %d sockets but callrecd uses one; "
                             "list a single ListenStream= in the socket unit", n);
    }
    return SD_LISTEN_FDS_START;
}

static void wake_dispatchers(void *context)
{
    struct services *services = context;
    for (size_t i = 0; i < services->n_sinks; i++) {
        crd_dispatcher_wake(services->dispatchers[i]);
    }
}

/* Wakes every tenant's fetch workers: the listener commits jobs of any tenant. */
static void wake_fetchers(void *context)
{
    struct services *services = context;
    for (size_t i = 0; i < services->n_tenants; i++) {
        tenant_wake_fetcher(&services->tenants[i]);
    }
}

static int open_store(struct services *services, struct crd_error *err)
{
    const struct crd_config *config = services->config;
    struct crd_store_options options = {
        .state_directory = config->store.state_directory,
        .durability = config->store.durability,
        /* Give up on a locked database well inside the 3 s Graph waits for a response. */
        .busy_timeout_ms = 1000,
        .job_coalesce_ms = config->fetch.coalesce_window_ms,
    };
    struct crd_store_open_report report = {0};
    int r = crd_store_open(&options, &services->store, &report, err);
    if (r < 0) {
        return crd_error_prefix(err, "cannot open the store");
    }
    if (report.schema_version_before == 0) {
        crd_log_notice(NULL, "created a new store (schema version %d)", report.schema_version);
    } else if (report.schema_version_before != report.schema_version) {
        crd_log_notice(NULL, "store schema upgraded from version %d to %d",
                       report.schema_version_before, report.schema_version);
    }

    int64_t recovered = 0;
    r = crd_store_recover_jobs(services->store, &recovered, err);
    if (r < 0) {
        return crd_error_prefix(err, "cannot recover interrupted jobs");
    }
    crd_log_info(NULL, "store opened in '%s' (durability %s): %lld jobs waiting, %lld of them "
                 "interrupted by the previous run", config->store.state_directory,
                 crd_durability_name(config->store.durability), (long long)report.pending_jobs,
                 (long long)recovered);
    return 0;
}

/*
 * Counts the sinks over a backlog bound and sets the fetcher's backpressure
 * while there is one. Called on the dispatcher threads.
 */
static void note_backlog(void *context, bool over_bound)
{
    struct services *services = context;
    pthread_mutex_lock(&services->backpressure_lock);
    if (over_bound) {
        services->sinks_over_bound++;
    } else if (services->sinks_over_bound > 0) {
        services->sinks_over_bound--;
    }
    for (size_t i = 0; i < services->n_started_tenants; i++) {
        if (services->tenants[i].fetcher != NULL) {
            crd_fetcher_set_backpressure(services->tenants[i].fetcher,
                                         services->sinks_over_bound > 0);
        }
    }
    pthread_mutex_unlock(&services->backpressure_lock);
}

/* Adds "backpressure": {sink, rows, oldestAgeS} of the first sink over a bound, or null. */
static void add_backpressure_health(struct services *services, json_t *health)
{
    json_t *object = NULL;
    for (size_t i = 0; i < services->n_sinks && object == NULL; i++) {
        struct crd_dispatcher_backlog backlog;
        crd_dispatcher_get_backlog(services->dispatchers[i], &backlog);
        if (!backlog.over_bound) {
            continue;
        }
        int64_t age_ms = backlog.oldest_created_at_ms > 0
                             ? crd_time_now_ms() - backlog.oldest_created_at_ms
                             : 0;
        object = json_pack("{s:s, s:I, s:I}", "sink",
                           crd_dispatcher_name(services->dispatchers[i]), "rows",
                           (json_int_t)backlog.rows, "oldestAgeS",
                           (json_int_t)(age_ms > 0 ? age_ms / 1000 : 0));
    }
    (void)json_object_set_new(health, "backpressure", object != NULL ? object : json_null());
}

/*
 * Adds "tenants": [{name, tenant, subscription, graph}] and, with a single
 * tenant, its "subscription" and "graph" at the top level as well.
 */
static void add_tenants_health(struct services *services, json_t *health)
{
    json_t *list = json_array();
    for (size_t i = 0; list != NULL && i < services->n_tenants; i++) {
        (void)json_array_append_new(list, tenant_health(&services->tenants[i]));
    }
    if (services->n_tenants == 1) {
        json_t *only = json_array_get(list, 0);
        (void)json_object_set(health, "subscription", json_object_get(only, "subscription"));
        (void)json_object_set(health, "graph", json_object_get(only, "graph"));
    }
    (void)json_object_set_new(health, "tenants", list != NULL ? list : json_null());
}

static void add_health(void *context, json_t *health)
{
    struct services *services = context;
    add_tenants_health(services, health);
    add_backpressure_health(services, health);
}

static int make_urls(struct services *services, struct crd_error *err)
{
    const struct crd_config *config = services->config;
    if (asprintf(&services->notification_url, "%s%s", config->listener.public_url,
                 config->listener.notification_path) < 0 ||
        asprintf(&services->lifecycle_url, "%s%s", config->listener.public_url,
                 config->listener.lifecycle_path) < 0) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    return 0;
}

static int start_dispatchers(struct services *services, struct crd_error *err)
{
    const struct crd_config *config = services->config;
    services->dispatchers = calloc(config->n_sinks + 1, sizeof(*services->dispatchers));
    services->sink_names = calloc(config->n_sinks + 1, sizeof(*services->sink_names));
    if (services->dispatchers == NULL || services->sink_names == NULL) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }

    for (size_t i = 0; i < config->n_sinks; i++) {
        const struct crd_config_sink *sink = &config->sinks[i];
        const struct crd_sink_descriptor *descriptor = crd_sink_builtin(sink->type);
        if (descriptor == NULL) {
            return crd_error_set(err, -EINVAL, "[sink %s]: type '%s' has no implementation",
                                 sink->name, crd_sink_type_name(sink->type));
        }
        struct crd_dispatcher_options options = {
            .on_backlog = note_backlog,
            .on_backlog_context = services,
        };
        int r = crd_dispatcher_start(sink, descriptor, services->store, &options,
                                     &services->dispatchers[i], err);
        if (r < 0) {
            return crd_error_prefix(err, "cannot start [sink %s]", sink->name);
        }
        services->sink_names[i] = sink->name;
        services->n_sinks++;
        crd_log_info(&(const struct crd_log_ids){.sink = sink->name}, "sink '%s' (%s) started",
                     sink->name, descriptor->name);
    }
    return 0;
}

/* Starts every tenant's parts except the subscription managers. */
static int start_tenants(struct services *services, struct crd_error *err)
{
    const struct crd_config *config = services->config;
    services->shared = (struct tenant_shared){
        .config = config,
        .store = services->store,
        .notification_url = services->notification_url,
        .lifecycle_url = services->lifecycle_url,
        .sink_names = services->sink_names,
        .n_sinks = services->n_sinks,
        .on_stored = wake_dispatchers,
        .on_stored_context = services,
    };
    services->tenants = calloc(config->n_tenants, sizeof(*services->tenants));
    services->listener_tenants = calloc(config->n_tenants, sizeof(*services->listener_tenants));
    if (services->tenants == NULL || services->listener_tenants == NULL) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    services->n_tenants = config->n_tenants;
    for (size_t i = 0; i < config->n_tenants; i++) {
        struct tenant *tenant = &services->tenants[i];
        int r = tenant_start(tenant, &config->tenants[i], &services->shared, err);
        /* A sink may have reported its backlog over a bound before the fetcher existed. */
        pthread_mutex_lock(&services->backpressure_lock);
        services->n_started_tenants = i + 1;
        if (r == 0 && services->sinks_over_bound > 0) {
            crd_fetcher_set_backpressure(tenant->fetcher, true);
        }
        pthread_mutex_unlock(&services->backpressure_lock);
        if (r < 0) {
            return r;
        }
        tenant_describe_for_listener(tenant, &services->listener_tenants[i]);
        struct crd_log_ids ids = {.tenant = tenant->config->tenant};
        crd_log_info(&ids, "tenant '%s' started: %u fetch workers, subscription resource '%s'",
                     tenant->config->name, config->fetch.workers, tenant->config->resource);
    }
    return 0;
}

static int start_listener(struct services *services, struct crd_error *err)
{
    int listen_fd = adopt_systemd_socket(err);
    if (listen_fd < -1) {
        return listen_fd;
    }
    struct crd_listener_options options = {
        .config = services->config,
        .store = services->store,
        .tenants = services->listener_tenants,
        .n_tenants = services->n_tenants,
        .listen_fd = listen_fd,
        .on_jobs = wake_fetchers,
        .on_jobs_context = services,
        .add_health = add_health,
        .add_health_context = services,
        .add_metrics = services_add_metrics,
        .add_metrics_context = services,
    };
    int r = crd_listener_start(&options, &services->listener, err);
    if (r < 0) {
        return crd_error_prefix(err, "cannot start the listener");
    }
    return 0;
}

int services_start(const struct crd_config *config, struct services *services)
{
    struct crd_error err = {0};
    *services = (struct services){.config = config};
    pthread_mutex_init(&services->backpressure_lock, NULL);

    int r = open_store(services, &err);
    if (r == 0) {
        r = make_urls(services, &err);
    }
    if (r == 0) {
        r = start_dispatchers(services, &err);
    }
    if (r == 0) {
        r = start_tenants(services, &err);
    }
    if (r == 0) {
        r = start_listener(services, &err);
    }
    for (size_t i = 0; r == 0 && i < services->n_tenants; i++) {
        r = tenant_start_subscription(&services->tenants[i], &err);
    }
    if (r < 0) {
        crd_log_err(NULL, "%s", err.message);
        services_stop(services);
    }
    return r;
}

void services_reopen_sinks(struct services *services)
{
    for (size_t i = 0; i < services->n_sinks; i++) {
        crd_dispatcher_reopen(services->dispatchers[i]);
    }
}

void services_stop(struct services *services)
{
    /* From here on notifications get 503 and Graph retries them after the restart. */
    crd_listener_drain(services->listener);
    for (size_t i = 0; i < services->n_started_tenants; i++) {
        tenant_stop_subscription(&services->tenants[i]);
    }
    crd_listener_stop(services->listener);
    services->listener = NULL;
    /* Under the lock, because a dispatcher may set the backpressure of the fetchers meanwhile. */
    pthread_mutex_lock(&services->backpressure_lock);
    size_t n_started = services->n_started_tenants;
    services->n_started_tenants = 0;
    pthread_mutex_unlock(&services->backpressure_lock);
    for (size_t i = 0; i < n_started; i++) {
        tenant_stop(&services->tenants[i]);
    }
    free(services->tenants);
    free(services->listener_tenants);
    services->tenants = NULL;
    services->listener_tenants = NULL;
    services->n_tenants = 0;
    for (size_t i = 0; i < services->n_sinks; i++) {
        crd_dispatcher_stop(services->dispatchers[i]);
    }
    free(services->dispatchers);
    free(services->sink_names);
    services->dispatchers = NULL;
    services->sink_names = NULL;
    services->n_sinks = 0;
    free(services->notification_url);
    free(services->lifecycle_url);
    services->notification_url = NULL;
    services->lifecycle_url = NULL;
    crd_store_close(services->store);
    services->store = NULL;
    services->sinks_over_bound = 0;
}
