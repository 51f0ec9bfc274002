/* SPDX-License-Identifier: MIT */
/*
 * The configuration: an INI file parsed into one immutable struct crd_config.
 *
 * Loading reports every problem in the file, not only the first, each as
 * "FILE:LINE: [section] key = 'value': problem; fix". Secrets are read from
 * the files the configuration names, or from $CREDENTIALS_DIRECTORY, into
 * struct crd_secret; the main file never contains them.
 *
 * A loaded struct crd_config is never modified, so any thread may read it
 * without locking. A reload builds a new one and swaps the pointer.
 */
#ifndef CRD_CONF_H
#define CRD_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "assertion.h"
#include "error.h"
#include "log.h"
#include "secret.h"

#define CRD_CONFIG_DEFAULT_PATH "/etc/callrecd/callrecd.conf"

enum crd_cloud {
    CRD_CLOUD_GLOBAL,
    CRD_CLOUD_USGOV,     /* US Gov L4 (GCC High) */
    CRD_CLOUD_USGOVDOD,  /* US Gov L5 (DoD) */
    CRD_CLOUD_CHINA,     /* 21Vianet: has no call records API, rejected by validation */
    CRD_CLOUD__COUNT
};

enum crd_durability {
    CRD_DURABILITY_PROCESS,  /* survives a killed process: WAL with synchronous=NORMAL */
    CRD_DURABILITY_FULL,     /* survives power loss: synchronous=FULL */
    CRD_DURABILITY__COUNT
};

enum crd_sink_type {
    CRD_SINK_FILE,
    CRD_SINK_STDOUT,
    CRD_SINK_TYPE__COUNT
};

enum crd_fsync_policy {
    CRD_FSYNC_NEVER,   /* leave flushing to the kernel */
    CRD_FSYNC_RECORD,  /* fsync after every record */
    CRD_FSYNC__COUNT
};

struct crd_config_sink {
    char *name;            /* from "[sink NAME]" */
    enum crd_sink_type type;
    char *path;            /* file: the JSON Lines file */
    enum crd_fsync_policy fsync;
    unsigned max_attempts; /* then a failing delivery is dead-lettered; 0: unlimited */
    unsigned max_backlog;  /* undelivered rows that pause fetching; 0: no bound */
    uint64_t max_backlog_age_ms; /* age of the oldest undelivered row that pauses it; 0: no bound */
    unsigned line;         /* line of the section header, for messages */
};

/* One tenant callrecd serves: a [tenant NAME] section, or the [graph] credentials. */
struct crd_config_tenant {
    char *name;                       /* from "[tenant NAME]"; "default" for the [graph] form */
    char *tenant;                     /* GUID; in the [graph] form also a domain name */
    char *client_id;                  /* GUID */
    char *client_secret_file;         /* NULL when the secret came from $CREDENTIALS_DIRECTORY */
    struct crd_secret *client_secret; /* NULL only when a client certificate is used */
    char *client_certificate_file;    /* NULL when from $CREDENTIALS_DIRECTORY or unused */
    char *client_certificate;         /* PEM; non-NULL selects certificate credentials */
    char *client_key_file;            /* NULL when from $CREDENTIALS_DIRECTORY or unused */
    struct crd_secret *client_key;    /* PEM private key of client_certificate */
    enum crd_assertion_algorithm assertion;
    char *participant_filter;         /* comma list of Entra object ids; NULL: none */
    char *resource;                   /* the subscription resource, built from participant_filter */
    char *client_state_file;          /* NULL: from $CREDENTIALS_DIRECTORY or the store */
    struct crd_secret *client_state;  /* NULL: generated once and kept in the store */
    char *setting_prefix;             /* store keys: "" for the [graph] form, "tenant.NAME." otherwise */
    unsigned line;                    /* line of the section header; 0 for the [graph] form */
};

struct crd_config {
    char *path;  /* the file this was loaded from */

    struct {
        enum crd_cloud cloud;
        char *login_url;                  /* cloud default unless overridden, no trailing slash */
        char *graph_url;                  /* cloud default unless overridden, no trailing slash */
        char *ca_file;                    /* NULL: the system trust store */
        char *proxy;                      /* NULL: libcurl's environment defaults */
        uint64_t connect_timeout_ms;
        uint64_t timeout_ms;              /* one HTTP request, retried after it */
    } graph;

    struct {
        char *address;                    /* numeric IPv4 or IPv6 address */
        uint16_t port;
        bool tls;                         /* false behind a TLS-terminating proxy */
        char *tls_certificate_file;
        char *tls_certificate;            /* PEM, read at load time; NULL when tls is off */
        char *tls_key_file;               /* NULL when the key came from $CREDENTIALS_DIRECTORY */
        struct crd_secret *tls_key;       /* PEM; NULL when tls is off */
        char *notification_path;          /* starts with '/' */
        char *lifecycle_path;             /* starts with '/' */
        char *public_url;                 /* https base URL that Graph posts to, no trailing slash */
        unsigned connection_timeout_s;
        unsigned max_connections;
        unsigned max_connections_per_ip;
        size_t max_body_size;             /* bytes */
        unsigned max_notifications;       /* items per notification collection */
        unsigned threads;                 /* listener threads */
    } listener;

    struct {
        char *change_type;
        uint64_t lifetime_ms;             /* 10 s to 4230 min */
        uint64_t renew_before_ms;         /* default: a quarter of lifetime_ms */
        uint64_t check_interval_ms;       /* how often the subscription's existence is checked */
        uint64_t backfill_margin_ms;      /* a backfill starts this long before its watermark */
    } subscription;

    struct {
        char *state_directory;
        enum crd_durability durability;
    } store;

    struct {
        unsigned workers;
        uint64_t coalesce_window_ms;      /* a job waits this long after its first notification */
        uint64_t not_found_horizon_ms;    /* 404 means "not available yet" this long after the first notification */
        uint64_t retry_base_ms;           /* first retry delay, doubled per attempt with jitter */
        uint64_t retry_max_ms;            /* cap of that delay */
        unsigned max_attempts;            /* then a failing job is dead-lettered; 0: unlimited */
        unsigned requests_per_window;     /* call-record requests per rate window; 0: unpaced */
        unsigned record_requests_per_window; /* requests per call record per rate window; 0: unpaced */
        uint64_t rate_window_ms;          /* the window both limits count over; 20 s for Graph */
        unsigned outage_failure_percent;  /* failed share of a minute's fetches that opens the breaker */
        unsigned outage_min_attempts;     /* fetches in that minute before it can open */
        uint64_t outage_backoff_max_ms;   /* cap of the breaker's back-off */
    } fetch;

    struct {
        uint64_t interval_ms;             /* between reconciliation passes; 0: no reconciler */
        uint64_t window_ms;               /* a pass lists the calls started this long ago or later */
        uint64_t startup_max_ms;          /* how far back the first pass may reach */
    } reconcile;

    struct {
        enum crd_log_level level;
        unsigned debug_mask;              /* 1 << enum crd_log_subsystem */
    } log;

    /*
     * The tenants, in file order: one per [tenant NAME] section, or the one
     * that [graph] and [subscription] describe when the file has no such
     * section. At least one after a successful load.
     */
    struct crd_config_tenant *tenants;
    size_t n_tenants;

    struct crd_config_sink *sinks;
    size_t n_sinks;
};

enum crd_diagnostic_severity {
    CRD_DIAGNOSTIC_WARNING,
    CRD_DIAGNOSTIC_ERROR,
};

/* One problem found while loading, already formatted as "FILE:LINE: ...". */
struct crd_diagnostic {
    enum crd_diagnostic_severity severity;
    unsigned line;      /* 0 when the problem is not tied to a line */
    char *section;      /* NULL when not tied to a section */
    char *key;          /* NULL when not tied to a key */
    char *message;
};

struct crd_diagnostics {
    struct crd_diagnostic *items;
    size_t n_items;
    size_t n_errors;
    size_t n_warnings;
};

/*
 * Environment that influences loading, so tests need not change the real one.
 * credentials_directory: $CREDENTIALS_DIRECTORY, or NULL.
 * state_directory: $STATE_DIRECTORY (systemd's StateDirectory=), or NULL.
 */
struct crd_config_env {
    const char *credentials_directory;
    const char *state_directory;
    /*
     * Leaves every tenant's secrets and clientState, and the TLS material,
     * unread and their fields NULL, for tools such as callrecctl that only
     * need the state directory and the sinks.
     */
    bool skip_secrets;
};

/*
 * Loads and validates the file at path. On success returns 0 and sets
 * *ret_config, which the caller frees with crd_config_free(). Returns -EINVAL
 * when the file has errors, -errno when it cannot be read. Either way every
 * problem found, errors and warnings, is appended to diag, which the caller
 * frees with crd_diagnostics_clear(). env may be NULL. Thread-safe.
 */
int crd_config_load(const char *path, const struct crd_config_env *env,
                    struct crd_config **ret_config, struct crd_diagnostics *diag);

/* Frees the config and wipes its secrets. Accepts NULL. */
void crd_config_free(struct crd_config *config);

void crd_diagnostics_clear(struct crd_diagnostics *diag);

/* The name used in the file for each enum value ("usgovdod", "process", "file", ...). */
const char *crd_cloud_name(enum crd_cloud cloud);
const char *crd_durability_name(enum crd_durability durability);
const char *crd_sink_type_name(enum crd_sink_type type);

#endif
