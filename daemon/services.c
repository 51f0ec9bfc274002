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

/* Encodes bytes as unpadded base64url, the alphabet Graph accepts in clientState. */
static void base64url_encode(const unsigned char *in, size_t len, char *out)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < len) {
            v |= (unsigned)in[i + 1] << 8;
        }
        if (i + 2 < len) {
            v |= in[i + 2];
        }
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        if (i + 1 < len) {
            out[o++] = alphabet[(v >> 6) & 63];
        }
        if (i + 2 < len) {
            out[o++] = alphabet[v & 63];
        }
    }
    out[o] = '\0';
}

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
    base64url_encode(random_bytes, sizeof(random_bytes), encoded);
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
    if (report.schema_version_before != report.schema_version) {
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

static int start_graph(struct services *services, struct crd_error *err)
{
    const struct crd_config *config = services->config;
    struct crd_graph_options options = {
        .graph_url = config->graph.graph_url,
        .login_url = config->graph.login_url,
        .tenant = config->graph.tenant,
        .client_id = config->graph.client_id,
        .client_secret = config->graph.client_secret,
        .ca_file = config->graph.ca_file,
        .proxy = config->graph.proxy,
        /* Retries within one fetch start no slower than those between fetches, and are capped alike. */
        .backoff_base_ms = (unsigned)(config->fetch.retry_base_ms < 500 ? config->fetch.retry_base_ms
                                                                         : 500),
        .backoff_max_ms = (unsigned)(config->fetch.retry_max_ms < 30000 ? config->fetch.retry_max_ms
                                                                         : 30000),
    };
    int r = crd_graph_new(&options, &services->graph, err);
    if (r < 0) {
        return crd_error_prefix(err, "cannot set up the Graph client");
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
        int r = crd_dispatcher_start(sink, descriptor, services->store, NULL,
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
    };
    int r = crd_fetcher_start(&options, &services->fetcher, err);
    if (r < 0) {
        return crd_error_prefix(err, "cannot start the fetch workers");
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
        r = start_listener(services, &err);
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
    crd_listener_stop(services->listener);
    services->listener = NULL;
    crd_fetcher_stop(services->fetcher);
    services->fetcher = NULL;
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
    crd_secret_free(services->client_state);
    services->client_state = NULL;
    crd_store_close(services->store);
    services->store = NULL;
}
