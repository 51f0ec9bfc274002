/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include <openssl/rand.h>

#include "log.h"
#include "services.h"
#include "util.h"

#define CLIENT_STATE_SETTING "client_state"
#define CLIENT_STATE_RANDOM_BYTES 32

/*
 * Returns the clientState to expect: the configured one, else the one kept in
 * the store, else a new random one that is stored before it is ever used.
 */
static int obtain_client_state(const struct crd_config *config, struct crd_store *store,
                               struct crd_secret **ret_state, struct crd_error *err)
{
    if (config->subscription.client_state != NULL) {
        const struct crd_secret *configured = config->subscription.client_state;
        return crd_secret_new(crd_secret_bytes(configured), crd_secret_len(configured), ret_state,
                              err);
    }

    char *stored = NULL;
    int r = crd_store_get_setting(store, CLIENT_STATE_SETTING, &stored, err);
    if (r == 0) {
        r = crd_secret_new(stored, strlen(stored), ret_state, err);
        explicit_bzero(stored, strlen(stored));
        free(stored);
        return r;
    }
    if (r != -ENOENT) {
        return r;
    }

    unsigned char random_bytes[CLIENT_STATE_RANDOM_BYTES];
    char encoded[2 * CLIENT_STATE_RANDOM_BYTES];
    if (RAND_bytes(random_bytes, sizeof(random_bytes)) != 1) {
        return crd_error_set(err, -EIO, "cannot generate a clientState: the OpenSSL random "
                             "generator failed");
    }
    crd_base64url_encode(random_bytes, sizeof(random_bytes), encoded);
    r = crd_store_set_setting(store, CLIENT_STATE_SETTING, encoded, err);
    if (r == 0) {
        r = crd_secret_new(encoded, strlen(encoded), ret_state, err);
        crd_log_info(NULL, "generated a new clientState and saved it in the store");
    }
    explicit_bzero(random_bytes, sizeof(random_bytes));
    explicit_bzero(encoded, sizeof(encoded));
    return r;
}

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

static void wake_fetcher(void *context)
{
    struct services *services = context;
    crd_fetcher_wake(services->fetcher);
}

static int open_store(struct services *services, struct crd_error *err)
{
    const struct crd_config *config = services->config;
    struct crd_store_options options = {
        .state_directory = config->store.state_directory,
        .durability = config->store.durability,
        /* Give up on a locked database well inside the 3 s Graph waits for a response. */
        .busy_timeout_ms = 1000,
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

static void wake_fetcher_after_backfill(void *context)
{
    struct services *services = context;
    if (services->fetcher != NULL) {
        crd_fetcher_wake(services->fetcher);
    }
}

static void hand_lifecycle_event(void *context, enum crd_lifecycle_event event,
                                 const char *subscription_id, const char *tenant_id)
{
    struct services *services = context;
    crd_subscription_lifecycle(services->subscription, event, subscription_id, tenant_id);
}

/* Adds "subscription": {state, id, expires, lastRenewal, failingSince, lastError} to /healthz. */
static void add_subscription_health(void *context, json_t *health)
{
    struct services *services = context;
    struct crd_subscription_status status;
    crd_subscription_get_status(services->subscription, &status);

    json_t *object = json_pack("{s:s, s:s?}", "state", crd_subscription_state_name(status.state),
                               "id", status.id[0] != '\0' ? status.id : NULL);
    if (object == NULL) {
        return;
    }
    const struct {
        const char *key;
        int64_t ms;
    } times[] = {
        {"expires", status.expires_at_ms},
        {"lastRenewal", status.last_renewed_at_ms},
        {"failingSince", status.failing_since_ms},
    };
    for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
        if (times[i].ms != 0) {
            char text[40];
            crd_time_format_iso8601(times[i].ms, text, sizeof(text));
            (void)json_object_set_new(object, times[i].key, json_string(text));
        }
    }
    if (status.last_error[0] != '\0') {
        (void)json_object_set_new(object, "lastError", json_string(status.last_error));
    }
    (void)json_object_set_new(health, "subscription", object);
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
    if (services->fetcher != NULL) {
        crd_fetcher_set_backpressure(services->fetcher, services->sinks_over_bound > 0);
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

/* Adds "graph": {state, since} from the fetcher's circuit breaker. */
static void add_graph_health(struct services *services, json_t *health)
{
    struct crd_fetcher_graph_status status;
    crd_fetcher_graph_status(services->fetcher, &status);
    char since[40];
    crd_time_format_iso8601(status.since_ms, since, sizeof(since));
    json_t *object = json_pack("{s:s, s:s}", "state", crd_breaker_state_name(status.state),
                               "since", since);
    if (object != NULL) {
        (void)json_object_set_new(health, "graph", object);
    }
}

static void add_health(void *context, json_t *health)
{
    struct services *services = context;
    add_subscription_health(services, health);
    add_backpressure_health(services, health);
    add_graph_health(services, health);
}

static int start_graph(struct services *services, struct crd_error *err)
{
    const struct crd_config *config = services->config;
    if (config->graph.client_certificate != NULL) {
        int r = crd_assertion_signer_new(config->graph.client_certificate, config->graph.client_key,
                                         config->graph.assertion, &services->assertion_signer,
                                         err);
        if (r < 0) {
            return crd_error_prefix(err, "cannot use the client certificate");
        }
        crd_log_info(NULL, "signing in with the client certificate (%s client assertions)",
                     crd_assertion_algorithm_name(config->graph.assertion));
    }
    /*
     * Graph counts the requests of the application in this tenant together,
     * so the fetch workers' client and the subscription manager's client
     * share one set of budgets.
     */
    struct crd_graph_limits_options limits_options = {
        .tenant_requests = config->fetch.requests_per_window,
        .record_requests = config->fetch.record_requests_per_window,
        .list_requests = CRD_GRAPH_LIST_REQUESTS,
        .window_ms = (unsigned)config->fetch.rate_window_ms,
    };
    int r = crd_graph_limits_new(&limits_options, &services->graph_limits, err);
    if (r < 0) {
        return crd_error_prefix(err, "cannot set up the Graph request budgets");
    }
    struct crd_graph_options options = {
        .graph_url = config->graph.graph_url,
        .login_url = config->graph.login_url,
        .tenant = config->graph.tenant,
        .client_id = config->graph.client_id,
        .client_secret = config->graph.client_secret,
        .assertion_signer = services->assertion_signer,
        .ca_file = config->graph.ca_file,
        .proxy = config->graph.proxy,
        .connect_timeout_ms = (unsigned)config->graph.connect_timeout_ms,
        .total_timeout_ms = (unsigned)config->graph.timeout_ms,
        /* Retries within one fetch start no slower than those between fetches, and are capped alike. */
        .backoff_base_ms = (unsigned)(config->fetch.retry_base_ms < 500 ? config->fetch.retry_base_ms
                                                                         : 500),
        .backoff_max_ms = (unsigned)(config->fetch.retry_max_ms < 30000 ? config->fetch.retry_max_ms
                                                                         : 30000),
        .limits = services->graph_limits,
    };
    r = crd_graph_new(&options, &services->graph, err);
    if (r == 0) {
        r = crd_graph_new(&options, &services->subscription_graph, err);
    }
    if (r == 0) {
        r = crd_graph_new(&options, &services->reconcile_graph, err);
    }
    if (r < 0) {
        return crd_error_prefix(err, "cannot set up the Graph client");
    }
    return 0;
}

/* Creates the manager, so that the listener can hand it lifecycle events from its start. */
static int create_subscription_manager(struct services *services, struct crd_error *err)
{
    const struct crd_config *config = services->config;
    if (asprintf(&services->notification_url, "%s%s", config->listener.public_url,
                 config->listener.notification_path) < 0 ||
        asprintf(&services->lifecycle_url, "%s%s", config->listener.public_url,
                 config->listener.lifecycle_path) < 0) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    struct crd_subscription_options options = {
        .graph = services->subscription_graph,
        .store = services->store,
        .tenant = config->graph.tenant,
        .resource = config->subscription.resource,
        .change_type = config->subscription.change_type,
        .notification_url = services->notification_url,
        .lifecycle_url = services->lifecycle_url,
        .client_state = services->client_state,
        .lifetime_ms = (int64_t)config->subscription.lifetime_ms,
        .renew_before_ms = (int64_t)config->subscription.renew_before_ms,
        .check_interval_ms = (int64_t)config->subscription.check_interval_ms,
        .backfill_margin_ms = (int64_t)config->subscription.backfill_margin_ms,
        .retry_base_ms = (int64_t)config->fetch.retry_base_ms,
        .on_jobs = wake_fetcher_after_backfill,
        .on_jobs_context = services,
    };
    int r = crd_subscription_new(&options, &services->subscription, err);
    if (r < 0) {
        return crd_error_prefix(err, "cannot set up the subscription manager");
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

static int start_fetcher(struct services *services, struct crd_error *err)
{
    const struct crd_config *config = services->config;
    struct crd_fetcher_options options = {
        .store = services->store,
        .graph = services->graph,
        .workers = config->fetch.workers,
        .sink_names = services->sink_names,
        .n_sinks = services->n_sinks,
        .on_stored = wake_dispatchers,
        .on_stored_context = services,
        .not_found_horizon_ms = (int64_t)config->fetch.not_found_horizon_ms,
        .retry_base_ms = (int64_t)config->fetch.retry_base_ms,
        .retry_max_ms = (int64_t)config->fetch.retry_max_ms,
        .max_attempts = config->fetch.max_attempts,
        .outage_failure_percent = config->fetch.outage_failure_percent,
        .outage_min_attempts = config->fetch.outage_min_attempts,
        .outage_backoff_max_ms = (int64_t)config->fetch.outage_backoff_max_ms,
    };
    struct crd_fetcher *fetcher = NULL;
    int r = crd_fetcher_start(&options, &fetcher, err);
    if (r < 0) {
        return crd_error_prefix(err, "cannot start the fetch workers");
    }
    /* A sink may have reported its backlog over a bound before the fetcher existed. */
    pthread_mutex_lock(&services->backpressure_lock);
    services->fetcher = fetcher;
    if (services->sinks_over_bound > 0) {
        crd_fetcher_set_backpressure(fetcher, true);
    }
    pthread_mutex_unlock(&services->backpressure_lock);
    return 0;
}

static int start_reconciler(struct services *services, struct crd_error *err)
{
    const struct crd_config *config = services->config;
    if (config->reconcile.interval_ms == 0) {
        crd_log_info(NULL, "reconciling is off ([reconcile] interval = 0)");
        return 0;
    }
    struct crd_reconciler_options options = {
        .graph = services->reconcile_graph,
        .store = services->store,
        .tenant = config->graph.tenant,
        .interval_ms = (int64_t)config->reconcile.interval_ms,
        .window_ms = (int64_t)config->reconcile.window_ms,
        .startup_max_ms = (int64_t)config->reconcile.startup_max_ms,
        .on_jobs = wake_fetcher_after_backfill,
        .on_jobs_context = services,
    };
    int r = crd_reconciler_start(&options, &services->reconciler, err);
    if (r < 0) {
        return crd_error_prefix(err, "cannot start the reconciler");
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
        .client_state = services->client_state,
        .listen_fd = listen_fd,
        .on_jobs = wake_fetcher,
        .on_jobs_context = services,
        .on_lifecycle = hand_lifecycle_event,
        .on_lifecycle_context = services,
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
        r = obtain_client_state(config, services->store, &services->client_state, &err);
    }
    if (r == 0) {
        r = start_graph(services, &err);
    }
    if (r == 0) {
        r = start_dispatchers(services, &err);
    }
    if (r == 0) {
        r = start_fetcher(services, &err);
    }
    if (r == 0) {
        r = start_reconciler(services, &err);
    }
    if (r == 0) {
        r = create_subscription_manager(services, &err);
    }
    if (r == 0) {
        r = start_listener(services, &err);
    }
    if (r == 0) {
        r = crd_subscription_start(services->subscription, &err);
        if (r < 0) {
            (void)crd_error_prefix(&err, "cannot start the subscription manager");
        }
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
    crd_subscription_stop(services->subscription);
    crd_listener_stop(services->listener);
    services->listener = NULL;
    crd_subscription_free(services->subscription);
    services->subscription = NULL;
    free(services->notification_url);
    free(services->lifecycle_url);
    services->notification_url = NULL;
    services->lifecycle_url = NULL;
    crd_reconciler_stop(services->reconciler);
    services->reconciler = NULL;
    pthread_mutex_lock(&services->backpressure_lock);
    struct crd_fetcher *fetcher = services->fetcher;
    services->fetcher = NULL;
    pthread_mutex_unlock(&services->backpressure_lock);
    crd_fetcher_stop(fetcher);
    for (size_t i = 0; i < services->n_sinks; i++) {
        crd_dispatcher_stop(services->dispatchers[i]);
    }
    free(services->dispatchers);
    free(services->sink_names);
    services->dispatchers = NULL;
    services->sink_names = NULL;
    services->n_sinks = 0;
    crd_graph_free(services->graph);
    services->graph = NULL;
    crd_graph_free(services->subscription_graph);
    services->subscription_graph = NULL;
    crd_graph_free(services->reconcile_graph);
    services->reconcile_graph = NULL;
    crd_graph_limits_free(services->graph_limits);
    services->graph_limits = NULL;
    crd_assertion_signer_free(services->assertion_signer);
    services->assertion_signer = NULL;
    crd_secret_free(services->client_state);
    services->client_state = NULL;
    crd_store_close(services->store);
    services->store = NULL;
    services->sinks_over_bound = 0;
}
