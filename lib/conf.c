/* SPDX-License-Identifier: MIT */
/*
 * The configuration loader: a strict INI reader, one option table per
 * section that drives parsing, defaults and unknown-key errors, then checks
 * that look at several keys at once, and finally the secrets and the TLS
 * material, read and verified while the file is still at hand to blame.
 *
 * This file contains the option tables, applies each table to its section,
 * runs the checks across keys and defines crd_config_load(). conf_reader.c
 * reads the INI syntax, conf_values.c parses typed values, conf_tenants.c
 * checks the tenants ([tenant NAME] sections, or the [graph] form),
 * conf_secrets.c reads the secret files and TLS material, and
 * conf_diagnostics.c formats the messages.
 *
 * Nothing here touches global state; the environment comes in through
 * struct crd_config_env (env == NULL means neither variable is set). Loading
 * is thread-safe.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf_internal.h"
#include "util.h"

#define CONF_DEFAULT_STATE_DIRECTORY "/var/lib/callrecd"

/* ------------------------------------------------------------------------ */
/* Names of enum values, shared with crd_*_name()                           */

static const char *const assertion_names[CRD_ASSERTION_ALGORITHM__COUNT] = {
    [CRD_ASSERTION_PS256] = "ps256",
    [CRD_ASSERTION_RS256] = "rs256",
};

static const char *const cloud_names[CRD_CLOUD__COUNT] = {
    [CRD_CLOUD_GLOBAL] = "global",
    [CRD_CLOUD_USGOV] = "usgov",
    [CRD_CLOUD_USGOVDOD] = "usgovdod",
    [CRD_CLOUD_CHINA] = "china",
};

static const char *const durability_names[CRD_DURABILITY__COUNT] = {
    [CRD_DURABILITY_PROCESS] = "process",
    [CRD_DURABILITY_FULL] = "full",
};

static const char *const sink_type_names[CRD_SINK_TYPE__COUNT] = {
    [CRD_SINK_FILE] = "file",
    [CRD_SINK_STDOUT] = "stdout",
};

static const char *const fsync_names[CRD_FSYNC__COUNT] = {
    [CRD_FSYNC_NEVER] = "never",
    [CRD_FSYNC_RECORD] = "record",
};

/* Base URLs per cloud; China has none because it has no call records API. */
static const struct {
    const char *login;
    const char *graph;
} cloud_endpoints[CRD_CLOUD__COUNT] = {
    [CRD_CLOUD_GLOBAL] = {"https://login.microsoftonline.com", "https://graph.microsoft.com"},
    [CRD_CLOUD_USGOV] = {"https://login.microsoftonline.us", "https://graph.microsoft.us"},
    [CRD_CLOUD_USGOVDOD] = {"https://login.microsoftonline.us", "https://dod-graph.microsoft.us"},
    [CRD_CLOUD_CHINA] = {NULL, NULL},
};

/* Enums are stored through an int; the compiler must agree. */
_Static_assert(sizeof(enum crd_cloud) == sizeof(int), "enum size");
_Static_assert(sizeof(enum crd_durability) == sizeof(int), "enum size");
_Static_assert(sizeof(enum crd_sink_type) == sizeof(int), "enum size");
_Static_assert(sizeof(enum crd_fsync_policy) == sizeof(int), "enum size");
_Static_assert(sizeof(enum crd_log_level) == sizeof(int), "enum size");

/* ------------------------------------------------------------------------ */
/* Option tables                                                            */

#define CONF_FIELD(type, member)                                                                   \
    .offset = offsetof(type, member), .size = sizeof(((type *)NULL)->member)
#define CONF_CFG(member) CONF_FIELD(struct crd_config, member)
#define CONF_SINK(member) CONF_FIELD(struct crd_config_sink, member)
#define CONF_TENANT_MEMBER(member) CONF_FIELD(struct crd_config_tenant, member)
/* In [graph] and [subscription]: the keys that move into [tenant NAME] sections. */
#define CONF_MOVES_TO_TENANT (CONF_TENANT_FIELD | CONF_TENANT_KEY)
#define CONF_NAMES(array) .names = (array), .n_names = ARRAY_SIZE(array)

static const struct conf_option graph_options[] = {
    {.name = "tenant", .type = CONF_TENANT, .flags = CONF_REQUIRED | CONF_MOVES_TO_TENANT,
     CONF_TENANT_MEMBER(tenant),
     .description = "Directory (tenant) ID, or a verified domain of the tenant"},
    {.name = "client_id", .type = CONF_GUID, .flags = CONF_REQUIRED | CONF_MOVES_TO_TENANT,
     CONF_TENANT_MEMBER(client_id),
     .description = "Application (client) ID of the app registration"},
    {.name = "client_secret_file", .type = CONF_PATH, .flags = CONF_MOVES_TO_TENANT,
     CONF_TENANT_MEMBER(client_secret_file),
     .description = "File holding the client secret; default $CREDENTIALS_DIRECTORY/client_secret"},
    {.name = "client_certificate_file", .type = CONF_PATH, .flags = CONF_MOVES_TO_TENANT,
     CONF_TENANT_MEMBER(client_certificate_file),
     .description = "PEM certificate for certificate credentials, in place of a client secret; "
                    "default $CREDENTIALS_DIRECTORY/client_certificate"},
    {.name = "client_key_file", .type = CONF_PATH, .flags = CONF_MOVES_TO_TENANT,
     CONF_TENANT_MEMBER(client_key_file),
     .description = "PEM RSA private key of client_certificate_file; "
                    "default $CREDENTIALS_DIRECTORY/client_key"},
    {.name = "assertion", .type = CONF_ENUM, .flags = CONF_MOVES_TO_TENANT,
     .default_value = "ps256", CONF_TENANT_MEMBER(assertion), CONF_NAMES(assertion_names),
     .description = "Client assertion signature: ps256 (x5t#S256) or rs256 (x5t)"},
    {.name = "cloud", .type = CONF_ENUM, .default_value = "global", CONF_CFG(graph.cloud),
     CONF_NAMES(cloud_names), .description = "National cloud, which picks the default URLs"},
    {.name = "login_url", .type = CONF_URL, CONF_CFG(graph.login_url),
     .description = "Entra ID login base URL; default: the cloud's"},
    {.name = "graph_url", .type = CONF_URL, CONF_CFG(graph.graph_url),
     .description = "Microsoft Graph base URL; default: the cloud's"},
    {.name = "ca_file", .type = CONF_PATH, CONF_CFG(graph.ca_file),
     .description = "PEM CA bundle for outgoing HTTPS; default: the system trust store"},
    {.name = "proxy", .type = CONF_PROXY_URL, CONF_CFG(graph.proxy),
     .description = "Proxy for outgoing HTTPS; default: libcurl's environment variables"},
    {.name = "connect_timeout", .type = CONF_DURATION, .default_value = "10s", .unit = "ms",
     CONF_CFG(graph.connect_timeout_ms), .min = 100, .max = 600 * 1000,
     .description = "Time allowed to connect to Entra ID or Graph, TLS handshake included"},
    {.name = "timeout", .type = CONF_DURATION, .default_value = "60s", .unit = "ms",
     CONF_CFG(graph.timeout_ms), .min = 100, .max = 600 * 1000,
     .description = "Time allowed for one request to Entra ID or Graph; then it is retried"},
};

static const struct conf_option listener_options[] = {
    {.name = "address", .type = CONF_ADDRESS, .default_value = "::", CONF_CFG(listener.address),
     .description = "Numeric IPv4 or IPv6 address to listen on"},
    {.name = "port", .type = CONF_UNSIGNED, .default_value = "8443", CONF_CFG(listener.port),
     .min = 1, .max = 65535, .description = "TCP port to listen on"},
    {.name = "tls", .type = CONF_BOOL, .default_value = "on", CONF_CFG(listener.tls),
     .description = "Serve HTTPS; off only behind a TLS-terminating proxy"},
    {.name = "tls_certificate", .type = CONF_PATH, CONF_CFG(listener.tls_certificate_file),
     .description = "PEM certificate chain; default $CREDENTIALS_DIRECTORY/tls_certificate"},
    {.name = "tls_key", .type = CONF_PATH, CONF_CFG(listener.tls_key_file),
     .description = "PEM private key; default $CREDENTIALS_DIRECTORY/tls_key"},
    {.name = "notification_path", .type = CONF_HTTP_PATH, .default_value = "/notify",
     CONF_CFG(listener.notification_path), .description = "URL path of change notifications"},
    {.name = "lifecycle_path", .type = CONF_HTTP_PATH, .default_value = "/lifecycle",
     CONF_CFG(listener.lifecycle_path), .description = "URL path of lifecycle notifications"},
    {.name = "public_url", .type = CONF_URL, .flags = CONF_REQUIRED, CONF_CFG(listener.public_url),
     .description = "HTTPS base URL at which Microsoft Graph reaches this listener"},
    {.name = "connection_timeout", .type = CONF_SECONDS, .default_value = "10", .unit = "s",
     CONF_CFG(listener.connection_timeout_s), .min = 1, .max = 3600,
     .description = "Idle time after which a connection is closed"},
    {.name = "max_connections", .type = CONF_UNSIGNED, .default_value = "512",
     CONF_CFG(listener.max_connections), .min = 1, .max = 100000,
     .description = "Simultaneous connections in all"},
    {.name = "max_connections_per_ip", .type = CONF_UNSIGNED, .default_value = "64",
     CONF_CFG(listener.max_connections_per_ip), .min = 1, .max = 100000,
     .description = "Simultaneous connections from one IP address"},
    {.name = "max_body_size", .type = CONF_SIZE, .default_value = "1M", .unit = "bytes",
     CONF_CFG(listener.max_body_size), .min = 1024, .max = 64 * 1024 * 1024,
     .description = "Largest request body accepted"},
    {.name = "max_notifications", .type = CONF_UNSIGNED, .default_value = "1000",
     CONF_CFG(listener.max_notifications), .min = 1, .max = 100000,
     .description = "Most notifications accepted in one request"},
    {.name = "threads", .type = CONF_UNSIGNED, .default_value = "4", CONF_CFG(listener.threads),
     .min = 1, .max = 64, .description = "Listener threads"},
};

static const struct conf_option subscription_options[] = {
    {.name = "resource", .type = CONF_HTTP_PATH, .flags = CONF_TENANT_FIELD,
     .default_value = "/communications/callRecords", CONF_TENANT_MEMBER(resource),
     .description = "Graph resource subscribed to, for every tenant"},
    {.name = "change_type", .type = CONF_CHANGE_TYPE, .default_value = "updated",
     CONF_CFG(subscription.change_type), .description = "created, updated, or both"},
    {.name = "lifetime", .type = CONF_DURATION, .flags = CONF_BARE_MINUTES,
     .default_value = "4230min", .unit = "ms", CONF_CFG(subscription.lifetime_ms),
     .min = 10 * 1000, .max = 4230ULL * 60 * 1000,
     .description = "Subscription lifetime requested at each creation and renewal; a bare "
                    "number is in minutes"},
    {.name = "renew_before", .type = CONF_DURATION, .flags = CONF_BARE_MINUTES, .unit = "ms",
     CONF_CFG(subscription.renew_before_ms), .min = 1000, .max = 4229ULL * 60 * 1000,
     .description = "Renew this long before expiry; default a quarter of lifetime; a bare "
                    "number is in minutes"},
    {.name = "check_interval", .type = CONF_DURATION, .default_value = "15min", .unit = "ms",
     CONF_CFG(subscription.check_interval_ms), .min = 1000, .max = 24ULL * 60 * 60 * 1000,
     .description = "How often callrecd checks that the subscription still exists"},
    {.name = "backfill_margin", .type = CONF_DURATION, .default_value = "10min", .unit = "ms",
     CONF_CFG(subscription.backfill_margin_ms), .min = 0, .max = 24ULL * 60 * 60 * 1000,
     .description = "A backfill starts this long before the last notification or backfill"},
    {.name = "participant_filter", .type = CONF_STRING, .flags = CONF_MOVES_TO_TENANT,
     CONF_TENANT_MEMBER(participant_filter),
     .description = "Comma list of Entra object ids; only their calls are notified"},
    {.name = "client_state_file", .type = CONF_PATH, .flags = CONF_MOVES_TO_TENANT,
     CONF_TENANT_MEMBER(client_state_file),
     .description = "File holding the clientState; default $CREDENTIALS_DIRECTORY/client_state, "
                    "else generated once and kept in the store"},
};

static const struct conf_option store_options[] = {
    {.name = "state_directory", .type = CONF_ABS_PATH, CONF_CFG(store.state_directory),
     .description = "Directory of the database; default $STATE_DIRECTORY, else "
                    CONF_DEFAULT_STATE_DIRECTORY},
    {.name = "durability", .type = CONF_ENUM, .default_value = "process",
     CONF_CFG(store.durability), CONF_NAMES(durability_names),
     .description = "process: survives a crash; full: survives a power loss"},
};

static const struct conf_option fetch_options[] = {
    {.name = "workers", .type = CONF_UNSIGNED, .default_value = "4", CONF_CFG(fetch.workers),
     .min = 1, .max = 64, .description = "Threads that fetch call records"},
    {.name = "coalesce_window", .type = CONF_DURATION, .default_value = "1s", .unit = "ms",
     CONF_CFG(fetch.coalesce_window_ms), .min = 0, .max = 10 * 60 * 1000,
     .description = "How long a job waits after its first notification, so that a burst for one "
                    "call makes one fetch"},
    {.name = "not_found_horizon", .type = CONF_DURATION, .default_value = "4h", .unit = "ms",
     CONF_CFG(fetch.not_found_horizon_ms), .min = 1000, .max = 31ULL * 24 * 3600 * 1000,
     .description = "How long after the first notification a 404 still means not available yet"},
    {.name = "retry_base", .type = CONF_DURATION, .default_value = "5s", .unit = "ms",
     CONF_CFG(fetch.retry_base_ms), .min = 10, .max = 3600 * 1000,
     .description = "First delay before fetching again after a failure or a 404"},
    {.name = "retry_max", .type = CONF_DURATION, .default_value = "10min", .unit = "ms",
     CONF_CFG(fetch.retry_max_ms), .min = 10, .max = 24 * 3600 * 1000,
     .description = "Maximum delay between fetch attempts"},
    {.name = "max_attempts", .type = CONF_UNSIGNED, .default_value = "20",
     CONF_CFG(fetch.max_attempts), .min = 0, .max = 1000000,
     .description = "Fetch attempts after which a failing job goes to the dead letters; "
                    "0: unlimited"},
    {.name = "requests_per_20s", .type = CONF_UNSIGNED, .default_value = "1500",
     CONF_CFG(fetch.requests_per_window), .min = 0, .max = 15000,
     .description = "Call-record requests per 20 s for this application and tenant (Graph allows "
                    "1500); lower it to leave room for other applications, 0 turns pacing off"},
    {.name = "record_requests_per_20s", .type = CONF_UNSIGNED, .default_value = "40",
     CONF_CFG(fetch.record_requests_per_window), .min = 0, .max = 15000,
     .description = "Requests per 20 s for one call record (Graph allows 40); 0 turns it off"},
    {.name = "rate_window", .type = CONF_DURATION, .default_value = "20s", .unit = "ms",
     CONF_CFG(fetch.rate_window_ms), .min = 100, .max = 3600 * 1000,
     .description = "Window of the two request limits above; keep 20s outside of tests"},
    {.name = "outage_failure_percent", .type = CONF_UNSIGNED, .default_value = "80",
     CONF_CFG(fetch.outage_failure_percent), .min = 1, .max = 100,
     .description = "Percentage of failed fetches in a minute (5xx, 429 after retries, timeouts, "
                    "transport errors) at which fetching stops for an outage back-off"},
    {.name = "outage_min_attempts", .type = CONF_UNSIGNED, .default_value = "10",
     CONF_CFG(fetch.outage_min_attempts), .min = 1, .max = 1000000,
     .description = "Fetches that must end within a minute before their failures can stop "
                    "fetching"},
    {.name = "outage_backoff_max", .type = CONF_DURATION, .default_value = "5min", .unit = "ms",
     CONF_CFG(fetch.outage_backoff_max_ms), .min = 10, .max = 24 * 3600 * 1000,
     .description = "Maximum pause of fetching during an outage; the first pause is retry_base, "
                    "doubled after each failed probe fetch"},
};

static const struct conf_option reconcile_options[] = {
    {.name = "interval", .type = CONF_DURATION, .default_value = "15min", .unit = "ms",
     CONF_CFG(reconcile.interval_ms), .min = 0, .max = 24ULL * 3600 * 1000,
     .description = "Time between two listings of recent call records; 0 turns reconciling off"},
    {.name = "window", .type = CONF_DURATION, .default_value = "3h", .unit = "ms",
     CONF_CFG(reconcile.window_ms), .min = 1000, .max = 720ULL * 3600 * 1000,
     .description = "Each listing covers the calls that started this long ago or later"},
    {.name = "startup_max", .type = CONF_DURATION, .default_value = "720h", .unit = "ms",
     CONF_CFG(reconcile.startup_max_ms), .min = 1000, .max = 720ULL * 3600 * 1000,
     .description = "How far back the listing at start may reach after an outage (Graph keeps "
                    "call records for 30 days)"},
};

static const struct conf_option log_options[] = {
    {.name = "level", .type = CONF_LOG_LEVEL, .default_value = "info", CONF_CFG(log.level),
     .description = "error, warning, notice, info or debug"},
    {.name = "debug", .type = CONF_LOG_DEBUG, .default_value = "", CONF_CFG(log.debug_mask),
     .description = "Subsystems whose debug messages are shown, or all"},
};

static const struct conf_option sink_options[] = {
    {.name = "type", .type = CONF_ENUM, .flags = CONF_REQUIRED, CONF_SINK(type),
     CONF_NAMES(sink_type_names), .description = "file or stdout"},
    {.name = "path", .type = CONF_ABS_PATH, CONF_SINK(path), .sink_types = 1u << CRD_SINK_FILE,
     .description = "JSON Lines file the records are appended to"},
    {.name = "fsync", .type = CONF_ENUM, .default_value = "never", CONF_SINK(fsync),
     CONF_NAMES(fsync_names), .sink_types = 1u << CRD_SINK_FILE,
     .description = "never, or record: fsync after every record"},
    {.name = "max_attempts", .type = CONF_UNSIGNED, .default_value = "0",
     CONF_SINK(max_attempts), .min = 0, .max = 1000000,
     .description = "Delivery attempts after which a failing delivery goes to the dead letters; "
                    "0: unlimited"},
    {.name = "max_backlog", .type = CONF_UNSIGNED, .default_value = "100000",
     CONF_SINK(max_backlog), .min = 0, .max = 1000000000,
     .description = "Undelivered records at which fetching pauses until the sink catches up; "
                    "0: no bound"},
    {.name = "max_backlog_age", .type = CONF_DURATION, .default_value = "24h", .unit = "ms",
     CONF_SINK(max_backlog_age_ms), .min = 0, .max = 720ULL * 3600 * 1000,
     .description = "Age of the oldest undelivered record at which fetching pauses until the "
                    "sink catches up; 0: no bound"},
};

/* [tenant NAME]: the per-tenant keys of [graph] and [subscription], with the tenant as a GUID. */
static const struct conf_option tenant_options[] = {
    {.name = "tenant", .type = CONF_TENANT_ID, .flags = CONF_REQUIRED | CONF_TENANT_FIELD,
     CONF_TENANT_MEMBER(tenant), .description = "Directory (tenant) ID, a GUID"},
    {.name = "client_id", .type = CONF_GUID, .flags = CONF_REQUIRED | CONF_TENANT_FIELD,
     CONF_TENANT_MEMBER(client_id),
     .description = "Application (client) ID of the app registration"},
    {.name = "client_secret_file", .type = CONF_PATH, .flags = CONF_TENANT_FIELD,
     CONF_TENANT_MEMBER(client_secret_file),
     .description = "File holding the client secret; "
                    "default $CREDENTIALS_DIRECTORY/client_secret.NAME"},
    {.name = "client_certificate_file", .type = CONF_PATH, .flags = CONF_TENANT_FIELD,
     CONF_TENANT_MEMBER(client_certificate_file),
     .description = "PEM certificate for certificate credentials, in place of a client secret; "
                    "default $CREDENTIALS_DIRECTORY/client_certificate.NAME"},
    {.name = "client_key_file", .type = CONF_PATH, .flags = CONF_TENANT_FIELD,
     CONF_TENANT_MEMBER(client_key_file),
     .description = "PEM RSA private key of client_certificate_file; "
                    "default $CREDENTIALS_DIRECTORY/client_key.NAME"},
    {.name = "assertion", .type = CONF_ENUM, .flags = CONF_TENANT_FIELD, .default_value = "ps256",
     CONF_TENANT_MEMBER(assertion), CONF_NAMES(assertion_names),
     .description = "Client assertion signature: ps256 (x5t#S256) or rs256 (x5t)"},
    {.name = "participant_filter", .type = CONF_STRING, .flags = CONF_TENANT_FIELD,
     CONF_TENANT_MEMBER(participant_filter),
     .description = "Comma list of Entra object ids of this tenant; only their calls are notified"},
    {.name = "client_state_file", .type = CONF_PATH, .flags = CONF_TENANT_FIELD,
     CONF_TENANT_MEMBER(client_state_file),
     .description = "File holding the clientState; default "
                    "$CREDENTIALS_DIRECTORY/client_state.NAME, else generated once and kept in "
                    "the store"},
};

const struct conf_section_def conf_section_defs[CONF_KIND__COUNT] = {
    [CONF_KIND_GRAPH] = {"graph", graph_options, ARRAY_SIZE(graph_options)},
    [CONF_KIND_LISTENER] = {"listener", listener_options, ARRAY_SIZE(listener_options)},
    [CONF_KIND_SUBSCRIPTION] = {"subscription", subscription_options,
                                ARRAY_SIZE(subscription_options)},
    [CONF_KIND_STORE] = {"store", store_options, ARRAY_SIZE(store_options)},
    [CONF_KIND_FETCH] = {"fetch", fetch_options, ARRAY_SIZE(fetch_options)},
    [CONF_KIND_RECONCILE] = {"reconcile", reconcile_options, ARRAY_SIZE(reconcile_options)},
    [CONF_KIND_LOG] = {"log", log_options, ARRAY_SIZE(log_options)},
    [CONF_KIND_SINK] = {"sink", sink_options, ARRAY_SIZE(sink_options)},
    [CONF_KIND_TENANT] = {"tenant", tenant_options, ARRAY_SIZE(tenant_options)},
};

_Static_assert(ARRAY_SIZE(graph_options) <= CONF_MAX_OPTIONS, "graph table");
_Static_assert(ARRAY_SIZE(listener_options) <= CONF_MAX_OPTIONS, "listener table");
_Static_assert(ARRAY_SIZE(subscription_options) <= CONF_MAX_OPTIONS, "subscription table");
_Static_assert(ARRAY_SIZE(store_options) <= CONF_MAX_OPTIONS, "store table");
_Static_assert(ARRAY_SIZE(fetch_options) <= CONF_MAX_OPTIONS, "fetch table");
_Static_assert(ARRAY_SIZE(reconcile_options) <= CONF_MAX_OPTIONS, "reconcile table");
_Static_assert(ARRAY_SIZE(log_options) <= CONF_MAX_OPTIONS, "log table");
_Static_assert(ARRAY_SIZE(sink_options) <= CONF_MAX_OPTIONS, "sink table");
_Static_assert(ARRAY_SIZE(tenant_options) <= CONF_MAX_OPTIONS, "tenant table");

/* ------------------------------------------------------------------------ */
/* Applying the option tables                                               */

const struct conf_option *conf_find_option(enum conf_kind kind, const char *key,
                                           size_t *ret_index)
{
    for (size_t i = 0; i < conf_section_defs[kind].n_options; i++) {
        if (strcmp(conf_section_defs[kind].options[i].name, key) == 0) {
            *ret_index = i;
            return &conf_section_defs[kind].options[i];
        }
    }
    return NULL;
}

static void report_unknown_key(struct loader *ld, const struct conf_section *s,
                               const struct conf_entry *e)
{
    const char *names[CONF_MAX_OPTIONS];
    size_t n = conf_section_defs[s->kind].n_options;
    for (size_t i = 0; i < n; i++) {
        names[i] = conf_section_defs[s->kind].options[i].name;
    }
    /* The value is never shown: an unknown key may be a secret pasted inline. */
    const char *guess = conf_closest(e->key, names, n);
    const char *owner = conf_section_owning_key(e->key);
    const char *hint = "";
    if (strstr(e->key, "secret") != NULL || strstr(e->key, "password") != NULL ||
        strstr(e->key, "token") != NULL) {
        hint = ". Secrets do not belong in this file: delete the line and put the secret in a "
               "file of mode 0600 named by a *_file key, or in $CREDENTIALS_DIRECTORY";
    }
    if (owner != NULL) {
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, e->line, s->label, e->key, NULL,
                      "unknown key in this section; '%s' belongs in [%s], move it there%s", e->key,
                      owner, hint);
    } else if (guess != NULL) {
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, e->line, s->label, e->key, NULL,
                      "unknown key; did you mean '%s'?%s", guess, hint);
    } else {
        char list[512];
        conf_join_names(names, n, list, sizeof(list));
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, e->line, s->label, e->key, NULL,
                      "unknown key; the keys of this section are %s%s", list, hint);
    }
}

/* Parses one entry, reporting what is wrong with it. */
static void apply_entry(struct loader *ld, struct conf_section *s, void *base,
                        const struct conf_entry *e, const struct conf_option *opt, size_t index)
{
    struct conf_problem p = {{0}};
    int r = conf_parse_option(ld, opt, e->value, base, &p);
    if (r == 0) {
        s->status[index] = CONF_SET;
        return;
    }
    s->status[index] = CONF_INVALID;
    if (r != -EINVAL) {
        return;  /* out of memory, noted in ld */
    }
    if (opt->type == CONF_PROXY_URL) {
        char *shown = conf_url_for_display(e->value);
        if (shown == NULL) {
            ld->oom = true;
            return;
        }
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, e->line, s->label, e->key, shown, "%s", p.text);
        free(shown);
        return;
    }
    conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, e->line, s->label, e->key, e->value, "%s", p.text);
}

static const char *required_example(const struct conf_section *s, const struct conf_option *opt)
{
    if (strcmp(opt->name, "tenant") == 0) {
        return s->kind == CONF_KIND_TENANT
                   ? "tenant = <Directory (tenant) ID, a GUID>"
                   : "tenant = contoso.onmicrosoft.com (or the Directory (tenant) ID)";
    }
    if (strcmp(opt->name, "client_id") == 0) {
        return "client_id = <Application (client) ID of the app registration>";
    }
    if (strcmp(opt->name, "public_url") == 0) {
        return "public_url = https://callrecd.example.com:8443";
    }
    if (strcmp(opt->name, "type") == 0) {
        return "type = file (or stdout)";
    }
    return opt->name;
}

/* True for a key of [tenant NAME] in [graph] or [subscription] of a file that has such sections. */
static bool is_moved_tenant_key(const struct loader *ld, const struct conf_section *s,
                                const struct conf_option *opt)
{
    return (opt->flags & CONF_TENANT_KEY) != 0 && s->kind != CONF_KIND_TENANT &&
           ld->n_tenant_sections > 0;
}

/*
 * Applies one section's table: parses each entry, then fills defaults and
 * reports missing required keys. base is the config, the sink or the tenant;
 * options flagged CONF_TENANT_FIELD are stored into tenant_base instead.
 */
static void apply_section(struct loader *ld, struct conf_section *s, void *base,
                          void *tenant_base)
{
    enum conf_kind kind = s->kind;
    int sink_type = -1;

    if (kind == CONF_KIND_SINK) {
        /* The type decides which other keys are allowed, so it goes first. */
        const struct conf_entry *e = conf_find_entry(s, "type");
        if (e != NULL) {
            size_t index = 0;
            const struct conf_option *opt = conf_find_option(kind, "type", &index);
            apply_entry(ld, s, base, e, opt, index);
            if (s->status[index] == CONF_SET) {
                sink_type = (int)((struct crd_config_sink *)base)->type;
            }
        }
    }

    for (size_t i = 0; i < s->n_entries; i++) {
        const struct conf_entry *e = &s->entries[i];
        size_t index = 0;
        const struct conf_option *opt = conf_find_option(kind, e->key, &index);
        if (opt == NULL) {
            report_unknown_key(ld, s, e);
            continue;
        }
        if (kind == CONF_KIND_SINK && strcmp(opt->name, "type") == 0) {
            continue;  /* done above */
        }
        if (opt->sink_types != 0 && sink_type >= 0 && (opt->sink_types & (1u << sink_type)) == 0) {
            const char *owner = "another type";
            for (size_t t = 0; t < CRD_SINK_TYPE__COUNT; t++) {
                if (opt->sink_types & (1u << t)) {
                    owner = sink_type_names[t];
                }
            }
            s->status[index] = CONF_INVALID;
            conf_add_diag(
                ld, CRD_DIAGNOSTIC_ERROR, e->line, s->label, e->key, e->value,
                "'%s' belongs to sinks of type %s, but this sink has type = %s; remove the "
                "line",
                e->key, owner, sink_type_names[sink_type]);
            continue;
        }
        if (is_moved_tenant_key(ld, s, opt)) {
            s->status[index] = CONF_INVALID;
            conf_report_tenant_key(ld, s, e);
            continue;
        }
        void *target = (opt->flags & CONF_TENANT_FIELD) != 0 ? tenant_base : base;
        apply_entry(ld, s, target, e, opt, index);
    }

    for (size_t i = 0; i < conf_section_defs[kind].n_options; i++) {
        const struct conf_option *opt = &conf_section_defs[kind].options[i];
        void *target = (opt->flags & CONF_TENANT_FIELD) != 0 ? tenant_base : base;
        if (s->status[i] != CONF_UNSET || is_moved_tenant_key(ld, s, opt)) {
            continue;
        }
        if ((opt->flags & CONF_REQUIRED) && s->line == 0) {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, 0, s->label, opt->name, NULL,
                          "required key is missing; add a [%s] section with %s", s->label,
                          required_example(s, opt));
            continue;
        }
        if (opt->flags & CONF_REQUIRED) {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, s->line, s->label, opt->name, NULL,
                          "required key is missing; add %s", required_example(s, opt));
            continue;
        }
        if (opt->default_value == NULL) {
            continue;  /* computed in validation */
        }
        if (opt->sink_types != 0 && (sink_type < 0 || (opt->sink_types & (1u << sink_type)) == 0)) {
            continue;
        }
        struct conf_problem p = {{0}};
        if (conf_parse_option(ld, opt, opt->default_value, target, &p) == -EINVAL) {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, 0, s->label, opt->name, opt->default_value,
                          "internal error: the built-in default is invalid: %s", p.text);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Checks across keys                                                       */

static void validate_graph(struct loader *ld)
{
    struct conf_section *s = conf_fixed_section(ld, CONF_KIND_GRAPH);
    struct crd_config *config = ld->config;

    if (conf_option_set(s, "cloud") && config->graph.cloud == CRD_CLOUD_CHINA) {
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, "cloud"), s->label, "cloud",
                      conf_key_value(s, "cloud"),
                      "the China (21Vianet) cloud has no call records API; use global, usgov or "
                      "usgovdod");
    } else if (!conf_option_invalid(s, "cloud")) {
        const char *login = cloud_endpoints[config->graph.cloud].login;
        const char *graph = cloud_endpoints[config->graph.cloud].graph;
        if (config->graph.login_url == NULL && !conf_option_invalid(s, "login_url")) {
            config->graph.login_url = strdup(login);
            ld->oom = ld->oom || config->graph.login_url == NULL;
        }
        if (config->graph.graph_url == NULL && !conf_option_invalid(s, "graph_url")) {
            config->graph.graph_url = strdup(graph);
            ld->oom = ld->oom || config->graph.graph_url == NULL;
        }
    }

    if (config->graph.ca_file != NULL) {
        const char *path = config->graph.ca_file;
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        struct stat st;
        if (fd < 0) {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, "ca_file"), s->label,
                          "ca_file", path, "cannot open the CA file: %s; %s", strerror(errno),
                          errno == ENOENT ? "correct the path, or remove the key to use the system "
                                            "trust store"
                                          : "let the service user read it");
        } else if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, "ca_file"), s->label,
                          "ca_file", path, "not a regular file; name a PEM CA bundle file");
        }
        if (fd >= 0) {
            close(fd);
        }
    }
}

static void validate_listener(struct loader *ld, bool load_secrets)
{
    struct conf_section *s = conf_fixed_section(ld, CONF_KIND_LISTENER);
    struct crd_config *config = ld->config;
    static const char *const reserved[] = {"/healthz", "/metrics"};
    const char *keys[] = {"notification_path", "lifecycle_path"};
    const char *paths[] = {config->listener.notification_path, config->listener.lifecycle_path};

    for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
        if (paths[i] == NULL) {
            continue;
        }
        for (size_t j = 0; j < ARRAY_SIZE(reserved); j++) {
            if (strcmp(paths[i], reserved[j]) == 0) {
                conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, keys[i]), s->label,
                              keys[i], paths[i],
                              "%s is served by callrecd itself; choose another path", reserved[j]);
            }
        }
    }
    if (paths[0] != NULL && paths[1] != NULL && strcmp(paths[0], paths[1]) == 0) {
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, "lifecycle_path"), s->label,
                      "lifecycle_path", paths[1],
                      "the same as notification_path; give the two kinds of notification different "
                      "paths, e.g. /notify and /lifecycle");
    }

    if (load_secrets) {
        conf_load_tls(ld);
    }
}

static void validate_subscription(struct loader *ld)
{
    struct conf_section *s = conf_fixed_section(ld, CONF_KIND_SUBSCRIPTION);
    struct crd_config *config = ld->config;

    if (!conf_option_invalid(s, "lifetime") && !conf_option_invalid(s, "renew_before")) {
        uint64_t lifetime = config->subscription.lifetime_ms;
        if (!conf_option_set(s, "renew_before")) {
            config->subscription.renew_before_ms = lifetime / 4;
        } else if (config->subscription.renew_before_ms >= lifetime) {
            conf_add_diag(
                ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, "renew_before"), s->label,
                "renew_before", conf_key_value(s, "renew_before"),
                "must be shorter than lifetime (%llu s), or the subscription is renewed all the "
                "time; use e.g. %llus (a quarter of the lifetime, the default)",
                (unsigned long long)(lifetime / 1000), (unsigned long long)(lifetime / 4000));
        }
    }
    if (conf_option_set(s, "lifetime") && !conf_option_invalid(s, "lifetime") &&
        config->subscription.lifetime_ms < 45ULL * 60 * 1000) {
        conf_add_diag(ld, CRD_DIAGNOSTIC_WARNING, conf_key_line(s, "lifetime"), s->label,
                      "lifetime", conf_key_value(s, "lifetime"),
                      "Graph raises expiries under 45 minutes to 45; short lifetimes are for "
                      "testing with an emulator");
    }
}

static void validate_fetch(struct loader *ld)
{
    struct conf_section *s = conf_fixed_section(ld, CONF_KIND_FETCH);
    const struct crd_config *config = ld->config;
    if (conf_option_invalid(s, "retry_base") || conf_option_invalid(s, "retry_max")) {
        return;
    }
    if (config->fetch.retry_base_ms > config->fetch.retry_max_ms) {
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, "retry_base"), s->label,
                      "retry_base", conf_key_value(s, "retry_base"),
                      "is longer than retry_max (%llu ms); make retry_base shorter or raise "
                      "retry_max", (unsigned long long)config->fetch.retry_max_ms);
    }
}

static void validate_store(struct loader *ld)
{
    struct conf_section *s = conf_fixed_section(ld, CONF_KIND_STORE);
    struct crd_config *config = ld->config;
    if (config->store.state_directory != NULL || conf_option_invalid(s, "state_directory")) {
        return;
    }

    const char *dir = CONF_DEFAULT_STATE_DIRECTORY;
    size_t len = strlen(dir);
    if (ld->state_directory != NULL) {
        /* systemd joins several StateDirectory= entries with ':'; ours is the first. */
        dir = ld->state_directory;
        len = strcspn(dir, ":");
        if (dir[0] != '/') {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, s->line, s->label, "state_directory", NULL,
                          "$STATE_DIRECTORY ('%s') is not an absolute path; set state_directory in "
                          "this file, or fix the environment",
                          dir);
            return;
        }
    }
    config->store.state_directory = strndup(dir, len);
    ld->oom = ld->oom || config->store.state_directory == NULL;
}

static void validate_sinks(struct loader *ld)
{
    struct crd_config *config = ld->config;
    size_t n_sinks = 0;

    for (size_t i = 0; i < ld->n_sections; i++) {
        struct conf_section *s = &ld->sections[i];
        if (s->kind != CONF_KIND_SINK) {
            continue;
        }
        n_sinks++;
        struct crd_config_sink *sink = &config->sinks[s->sink_index];
        if (!conf_option_set(s, "type") || sink->type != CRD_SINK_FILE) {
            continue;
        }
        if (sink->path == NULL) {
            if (!conf_option_invalid(s, "path")) {
                conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, s->line, s->label, "path", NULL,
                              "a sink of type file needs a path; add path = "
                              "/var/lib/callrecd/callrecords.jsonl (an absolute path)");
            }
            continue;
        }
        for (size_t j = 0; j < i; j++) {
            const struct conf_section *o = &ld->sections[j];
            if (o->kind != CONF_KIND_SINK || !conf_option_set(o, "type")) {
                continue;
            }
            const struct crd_config_sink *other = &config->sinks[o->sink_index];
            if (other->type == CRD_SINK_FILE && other->path != NULL &&
                strcmp(other->path, sink->path) == 0) {
                conf_add_diag(
                    ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, "path"), s->label, "path",
                    sink->path,
                    "[sink %s] on line %u writes to the same file; give each file sink its "
                    "own path",
                    other->name, other->line);
            }
        }
    }

    if (n_sinks == 0) {
        conf_add_diag(
            ld, CRD_DIAGNOSTIC_WARNING, 0, NULL, NULL, NULL,
            "no [sink NAME] section, so call records are fetched and stored but delivered "
            "nowhere; add e.g. [sink archive] with type = file and a path");
    }
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                  */

/* Gives each [sink NAME] section its struct crd_config_sink, in file order. */
static int setup_sinks(struct loader *ld)
{
    struct crd_config *config = ld->config;
    size_t n = 0;
    for (size_t i = 0; i < ld->n_sections; i++) {
        n += ld->sections[i].kind == CONF_KIND_SINK;
    }
    if (n == 0) {
        return 0;
    }
    config->sinks = calloc(n, sizeof(*config->sinks));
    if (config->sinks == NULL) {
        ld->oom = true;
        return -ENOMEM;
    }
    for (size_t i = 0; i < ld->n_sections; i++) {
        struct conf_section *s = &ld->sections[i];
        if (s->kind != CONF_KIND_SINK) {
            continue;
        }
        char *name = strdup(s->label + strlen("sink "));
        if (name == NULL) {
            ld->oom = true;
            return -ENOMEM;
        }
        s->sink_index = config->n_sinks++;
        config->sinks[s->sink_index].name = name;
        config->sinks[s->sink_index].line = s->line;
    }
    return 0;
}

int crd_config_load(const char *path, const struct crd_config_env *env,
                    struct crd_config **ret_config, struct crd_diagnostics *diag)
{
    int r = 0;
    struct crd_diagnostics scratch = {0};
    if (diag == NULL) {
        diag = &scratch;  /* the caller wants only the result */
    }
    struct loader ld = {
        .path = path,
        .diag = diag,
        .first_diag = diag->n_items,
    };
    if (env != NULL) {
        /* Empty counts as unset, as systemd treats empty environment variables. */
        const char *creds = env->credentials_directory;
        const char *state = env->state_directory;
        ld.credentials_directory = creds != NULL && creds[0] != '\0' ? creds : NULL;
        ld.state_directory = state != NULL && state[0] != '\0' ? state : NULL;
    }

    ld.config = calloc(1, sizeof(*ld.config));
    if (ld.config == NULL) {
        r = -ENOMEM;
        goto out;
    }
    ld.config->path = strdup(path);
    if (ld.config->path == NULL) {
        r = -ENOMEM;
        goto out;
    }

    /* One section per fixed kind, at index == kind, whether or not the file has it. */
    for (size_t k = 0; k < CONF_KIND_SINK; k++) {
        if (conf_add_section(&ld, (enum conf_kind)k, conf_section_defs[k].name, 0) == NULL) {
            r = -ENOMEM;
            goto out;
        }
    }

    r = conf_read_file(&ld);
    if (r < 0) {
        goto out;
    }
    if (setup_sinks(&ld) < 0 || conf_setup_tenants(&ld) < 0) {
        r = -ENOMEM;
        goto out;
    }

    /* Without [tenant NAME] sections, [graph] and [subscription] describe tenants[0]. */
    void *fixed_tenant = ld.n_tenant_sections == 0 ? (void *)&ld.config->tenants[0]
                                                   : (void *)&ld.shared_tenant;
    for (size_t i = 0; i < ld.n_sections; i++) {
        struct conf_section *s = &ld.sections[i];
        if (s->kind == CONF_KIND_SINK) {
            apply_section(&ld, s, &ld.config->sinks[s->sink_index], NULL);
        } else if (s->kind == CONF_KIND_TENANT) {
            struct crd_config_tenant *tenant = &ld.config->tenants[s->tenant_index];
            apply_section(&ld, s, tenant, tenant);
        } else {
            apply_section(&ld, s, ld.config, fixed_tenant);
        }
    }

    bool skip_secrets = env != NULL && env->skip_secrets;
    validate_graph(&ld);
    validate_listener(&ld, !skip_secrets);
    validate_subscription(&ld);
    conf_validate_tenants(&ld, !skip_secrets);
    validate_fetch(&ld);
    validate_store(&ld);
    validate_sinks(&ld);

    if (ld.oom) {
        r = -ENOMEM;
    } else if (ld.n_errors > 0) {
        r = -EINVAL;
    }

out:
    conf_sort_diagnostics(&ld);
    if (r == 0) {
        *ret_config = ld.config;
        ld.config = NULL;
    }
    crd_config_free(ld.config);
    conf_tenant_clear(&ld.shared_tenant);
    for (size_t i = 0; i < ld.n_sections; i++) {
        conf_section_free(&ld.sections[i]);
    }
    free(ld.sections);
    crd_diagnostics_clear(&scratch);
    return r;
}

void crd_config_free(struct crd_config *config)
{
    if (config == NULL) {
        return;
    }
    free(config->path);

    free(config->graph.login_url);
    free(config->graph.graph_url);
    free(config->graph.ca_file);
    free(config->graph.proxy);

    free(config->listener.address);
    free(config->listener.tls_certificate_file);
    free(config->listener.tls_certificate);
    free(config->listener.tls_key_file);
    crd_secret_free(config->listener.tls_key);
    free(config->listener.notification_path);
    free(config->listener.lifecycle_path);
    free(config->listener.public_url);

    free(config->subscription.change_type);

    free(config->store.state_directory);

    for (size_t i = 0; i < config->n_tenants; i++) {
        conf_tenant_clear(&config->tenants[i]);
    }
    free(config->tenants);

    for (size_t i = 0; i < config->n_sinks; i++) {
        free(config->sinks[i].name);
        free(config->sinks[i].path);
    }
    free(config->sinks);
    free(config);
}

const char *crd_cloud_name(enum crd_cloud cloud)
{
    return (unsigned)cloud < CRD_CLOUD__COUNT ? cloud_names[cloud] : "unknown";
}

const char *crd_durability_name(enum crd_durability durability)
{
    return (unsigned)durability < CRD_DURABILITY__COUNT ? durability_names[durability] : "unknown";
}

const char *crd_sink_type_name(enum crd_sink_type type)
{
    return (unsigned)type < CRD_SINK_TYPE__COUNT ? sink_type_names[type] : "unknown";
}
