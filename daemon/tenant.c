/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "log.h"
#include "tenant.h"
#include "util.h"

#define CLIENT_STATE_SETTING "client_state"
#define CLIENT_STATE_RANDOM_BYTES 32

static struct crd_log_ids tenant_ids(const struct tenant *tenant)
{
    return (struct crd_log_ids){.tenant = tenant->config->tenant};
}

/*
 * Returns the clientState to expect: the configured one, else the one kept in
 * the store, else a new random one that is stored before it is ever used.
 */
static int obtain_client_state(struct tenant *tenant, struct crd_error *err)
{
    const struct crd_config_tenant *config = tenant->config;
    if (config->client_state != NULL) {
        return crd_secret_new(crd_secret_bytes(config->client_state),
                              crd_secret_len(config->client_state), &tenant->client_state, err);
    }

    struct crd_store *store = tenant->shared->store;
    char key[128];
    snprintf(key, sizeof(key), "%s%s", config->setting_prefix, CLIENT_STATE_SETTING);
    char *stored = NULL;
    int r = crd_store_get_setting(store, key, &stored, err);
    if (r == 0) {
        r = crd_secret_new(stored, strlen(stored), &tenant->client_state, err);
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
    r = crd_store_set_setting(store, key, encoded, err);
    if (r == 0) {
        tenant->client_state_generated = true;
        r = crd_secret_new(encoded, strlen(encoded), &tenant->client_state, err);
        struct crd_log_ids ids = tenant_ids(tenant);
        crd_log_info(&ids, "generated a new clientState for tenant '%s' and saved it in the store",
                     config->name);
    }
    explicit_bzero(random_bytes, sizeof(random_bytes));
    explicit_bzero(encoded, sizeof(encoded));
    return r;
}

static int start_graph(struct tenant *tenant, struct crd_error *err)
{
    const struct crd_config *config = tenant->shared->config;
    const struct crd_config_tenant *credentials = tenant->config;
    struct crd_log_ids ids = tenant_ids(tenant);
    if (credentials->client_certificate != NULL) {
        int r = crd_assertion_signer_new(credentials->client_certificate, credentials->client_key,
                                         credentials->assertion, &tenant->assertion_signer, err);
        if (r < 0) {
            return crd_error_prefix(err, "cannot use the client certificate");
        }
        crd_log_info(&ids, "tenant '%s': signing in with the client certificate (%s client "
                     "assertions)", credentials->name,
                     crd_assertion_algorithm_name(credentials->assertion));
    }
    /*
     * Graph counts the requests of the application in this tenant together,
     * so the fetch workers', the subscription manager's and the reconciler's
     * clients share one set of budgets.
     */
    struct crd_graph_limits_options limits_options = {
        .tenant_requests = config->fetch.requests_per_window,
        .record_requests = config->fetch.record_requests_per_window,
        .list_requests = CRD_GRAPH_LIST_REQUESTS,
        .window_ms = (unsigned)config->fetch.rate_window_ms,
    };
    int r = crd_graph_limits_new(&limits_options, &tenant->graph_limits, err);
    if (r < 0) {
        return crd_error_prefix(err, "cannot set up the Graph request budgets");
    }
    struct crd_graph_options options = {
        .graph_url = config->graph.graph_url,
        .login_url = config->graph.login_url,
        .tenant = credentials->tenant,
        .client_id = credentials->client_id,
        .client_secret = credentials->client_secret,
        .assertion_signer = tenant->assertion_signer,
        .ca_file = config->graph.ca_file,
        .proxy = config->graph.proxy,
        .connect_timeout_ms = (unsigned)config->graph.connect_timeout_ms,
        .total_timeout_ms = (unsigned)config->graph.timeout_ms,
        /* Retries within one fetch start no slower than those between fetches, and are capped alike. */
        .backoff_base_ms = (unsigned)(config->fetch.retry_base_ms < 500 ? config->fetch.retry_base_ms
                                                                         : 500),
        .backoff_max_ms = (unsigned)(config->fetch.retry_max_ms < 30000 ? config->fetch.retry_max_ms
                                                                         : 30000),
        .limits = tenant->graph_limits,
    };
    r = crd_graph_new(&options, &tenant->graph, err);
    if (r == 0) {
        r = crd_graph_new(&options, &tenant->subscription_graph, err);
    }
    if (r == 0) {
        r = crd_graph_new(&options, &tenant->reconcile_graph, err);
    }
    if (r < 0) {
        return crd_error_prefix(err, "cannot set up the Graph client");
    }
    return 0;
}

static void wake_fetcher(void *context)
{
    tenant_wake_fetcher(context);
}

static int start_fetcher(struct tenant *tenant, struct crd_error *err)
{
    const struct crd_config *config = tenant->shared->config;
    struct crd_fetcher_options options = {
        .store = tenant->shared->store,
        .graph = tenant->graph,
        /* A tenant configured by domain name is the only one, so it takes every job. */
        .tenant_id = tenant->guid,
        .workers = config->fetch.workers,
        .sink_names = tenant->shared->sink_names,
        .n_sinks = tenant->shared->n_sinks,
        .on_stored = tenant->shared->on_stored,
        .on_stored_context = tenant->shared->on_stored_context,
        .not_found_horizon_ms = (int64_t)config->fetch.not_found_horizon_ms,
        .retry_base_ms = (int64_t)config->fetch.retry_base_ms,
        .retry_max_ms = (int64_t)config->fetch.retry_max_ms,
        .max_attempts = config->fetch.max_attempts,
        .outage_failure_percent = config->fetch.outage_failure_percent,
        .outage_min_attempts = config->fetch.outage_min_attempts,
        .outage_backoff_max_ms = (int64_t)config->fetch.outage_backoff_max_ms,
    };
    int r = crd_fetcher_start(&options, &tenant->fetcher, err);
    if (r < 0) {
        return crd_error_prefix(err, "cannot start the fetch workers");
    }
    return 0;
}

static int start_reconciler(struct tenant *tenant, struct crd_error *err)
{
    const struct crd_config *config = tenant->shared->config;
    struct crd_log_ids ids = tenant_ids(tenant);
    if (config->reconcile.interval_ms == 0) {
        crd_log_info(&ids, "reconciling is off ([reconcile] interval = 0)");
        return 0;
    }
    struct crd_reconciler_options options = {
        .graph = tenant->reconcile_graph,
        .store = tenant->shared->store,
        .tenant = tenant->config->tenant,
        .setting_prefix = tenant->config->setting_prefix,
        .interval_ms = (int64_t)config->reconcile.interval_ms,
        .window_ms = (int64_t)config->reconcile.window_ms,
        .startup_max_ms = (int64_t)config->reconcile.startup_max_ms,
        .on_jobs = wake_fetcher,
        .on_jobs_context = tenant,
    };
    int r = crd_reconciler_start(&options, &tenant->reconciler, err);
    if (r < 0) {
        return crd_error_prefix(err, "cannot start the reconciler");
    }
    return 0;
}

/* Creates the manager, so that the listener can hand it lifecycle events from its start. */
static int create_subscription_manager(struct tenant *tenant, struct crd_error *err)
{
    const struct crd_config *config = tenant->shared->config;
    struct crd_subscription_options options = {
        .graph = tenant->subscription_graph,
        .store = tenant->shared->store,
        .tenant = tenant->config->tenant,
        .setting_prefix = tenant->config->setting_prefix,
        .resource = tenant->config->resource,
        .change_type = config->subscription.change_type,
        .notification_url = tenant->shared->notification_url,
        .lifecycle_url = tenant->shared->lifecycle_url,
        .client_state = tenant->client_state,
        .client_state_generated = tenant->client_state_generated,
        .lifetime_ms = (int64_t)config->subscription.lifetime_ms,
        .renew_before_ms = (int64_t)config->subscription.renew_before_ms,
        .check_interval_ms = (int64_t)config->subscription.check_interval_ms,
        .backfill_margin_ms = (int64_t)config->subscription.backfill_margin_ms,
        .retry_base_ms = (int64_t)config->fetch.retry_base_ms,
        .on_jobs = wake_fetcher,
        .on_jobs_context = tenant,
    };
    int r = crd_subscription_new(&options, &tenant->subscription, err);
    if (r < 0) {
        return crd_error_prefix(err, "cannot set up the subscription manager");
    }
    return 0;
}

int tenant_start(struct tenant *tenant, const struct crd_config_tenant *config,
                 const struct tenant_shared *shared, struct crd_error *err)
{
    *tenant = (struct tenant){.config = config, .shared = shared};
    if (crd_guid_is_valid(config->tenant, strlen(config->tenant))) {
        tenant->guid = strdup(config->tenant);
        if (tenant->guid == NULL) {
            return crd_error_set(err, -ENOMEM, "out of memory");
        }
    }
    int r = obtain_client_state(tenant, err);
    if (r == 0) {
        r = start_graph(tenant, err);
    }
    if (r == 0) {
        r = create_subscription_manager(tenant, err);
    }
    if (r == 0) {
        r = start_fetcher(tenant, err);
    }
    if (r == 0) {
        r = start_reconciler(tenant, err);
    }
    if (r < 0) {
        return crd_error_prefix(err, "tenant '%s'", config->name);
    }
    return 0;
}

int tenant_start_subscription(struct tenant *tenant, struct crd_error *err)
{
    int r = crd_subscription_start(tenant->subscription, err);
    if (r < 0) {
        return crd_error_prefix(err, "tenant '%s': cannot start the subscription manager",
                                tenant->config->name);
    }
    return 0;
}

void tenant_stop_subscription(struct tenant *tenant)
{
    crd_subscription_stop(tenant->subscription);
}

void tenant_stop(struct tenant *tenant)
{
    crd_subscription_free(tenant->subscription);
    tenant->subscription = NULL;
    crd_reconciler_stop(tenant->reconciler);
    tenant->reconciler = NULL;
    crd_fetcher_stop(tenant->fetcher);
    tenant->fetcher = NULL;
    crd_graph_free(tenant->graph);
    crd_graph_free(tenant->subscription_graph);
    crd_graph_free(tenant->reconcile_graph);
    tenant->graph = tenant->subscription_graph = tenant->reconcile_graph = NULL;
    crd_graph_limits_free(tenant->graph_limits);
    tenant->graph_limits = NULL;
    crd_assertion_signer_free(tenant->assertion_signer);
    tenant->assertion_signer = NULL;
    crd_secret_free(tenant->client_state);
    tenant->client_state = NULL;
    free(tenant->guid);
    tenant->guid = NULL;
}

void tenant_wake_fetcher(struct tenant *tenant)
{
    if (tenant->fetcher != NULL) {
        crd_fetcher_wake(tenant->fetcher);
    }
}

/* The listener's subscription check, from its handler threads. */
static bool has_subscription(void *context, const char *subscription_id)
{
    struct tenant *tenant = context;
    return crd_subscription_accepts_id(tenant->subscription, subscription_id);
}

static void hand_lifecycle_event(void *context, enum crd_lifecycle_event event,
                                 const char *subscription_id, const char *tenant_id)
{
    struct tenant *tenant = context;
    crd_subscription_lifecycle(tenant->subscription, event, subscription_id, tenant_id);
}

void tenant_describe_for_listener(struct tenant *tenant, struct crd_listener_tenant *ret_entry)
{
    *ret_entry = (struct crd_listener_tenant){
        .name = tenant->config->name,
        .tenant_id = tenant->guid,
        .client_state = tenant->client_state,
        .has_subscription = has_subscription,
        .on_lifecycle = hand_lifecycle_event,
        .context = tenant,
    };
}

/* {state, id, expires, lastRenewal, failingSince, lastError} of the subscription. */
static json_t *subscription_health(struct tenant *tenant)
{
    struct crd_subscription_status status;
    crd_subscription_get_status(tenant->subscription, &status);

    json_t *object = json_pack("{s:s, s:s?}", "state", crd_subscription_state_name(status.state),
                               "id", status.id[0] != '\0' ? status.id : NULL);
    if (object == NULL) {
        return NULL;
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
    return object;
}

/* {state, since} of the fetch workers' circuit breaker. */
static json_t *graph_health(struct tenant *tenant)
{
    struct crd_fetcher_graph_status status;
    crd_fetcher_graph_status(tenant->fetcher, &status);
    char since[40];
    crd_time_format_iso8601(status.since_ms, since, sizeof(since));
    return json_pack("{s:s, s:s}", "state", crd_breaker_state_name(status.state), "since", since);
}

json_t *tenant_health(struct tenant *tenant)
{
    return json_pack("{s:s, s:s, s:o*, s:o*}", "name", tenant->config->name, "tenant",
                     tenant->config->tenant, "subscription", subscription_health(tenant), "graph",
                     graph_health(tenant));
}
