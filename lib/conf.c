/* SPDX-License-Identifier: MIT */
/*
 * The configuration loader: a strict INI reader, one option table per
 * section that drives parsing, defaults and unknown-key errors, then checks
 * that look at several keys at once, and finally the secrets and the TLS
 * material, read and verified while the file is still at hand to blame.
 *
 * We read INI ourselves instead of using libinih: Debian's libinih 55 is
 * built with INI_MAX_LINE 200, so a line of several KiB (a long proxy URL or
 * path) cannot work, and its multi-line mode would silently join an indented
 * line to the previous value.
 *
 * Nothing here touches global state; the environment comes in through
 * struct crd_config_env (env == NULL means neither variable is set). Loading
 * is thread-safe.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "conf.h"
#include "util.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* The whole file, so that a runaway file (a log named by mistake) is refused. */
#define CONF_MAX_FILE_SIZE (1024 * 1024)
/* A certificate chain file; real ones are a few KiB. */
#define CONF_MAX_CERT_SIZE (1024 * 1024)
/* Longest value quoted in a message; longer ones are cut with "...". */
#define CONF_SHOWN_VALUE_MAX 120
/* Longest option table of a section. */
#define CONF_MAX_OPTIONS 16
#define CONF_SINK_NAME_MAX 64
#define CONF_HTTP_PATH_MAX 1024
#define CONF_CLIENT_STATE_MAX 128
#define CONF_DEFAULT_STATE_DIRECTORY "/var/lib/callrecd"

/* ------------------------------------------------------------------------ */
/* Names of enum values, shared with crd_*_name()                           */

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

enum conf_type {
    CONF_STRING,       /* non-empty, printable */
    CONF_PATH,         /* non-empty file name */
    CONF_ABS_PATH,     /* file name starting with '/' */
    CONF_URL,          /* https, or http to a loopback host; no query; trailing '/' dropped */
    CONF_PROXY_URL,    /* http, https, socks4, socks4a, socks5 or socks5h */
    CONF_TENANT,       /* GUID or DNS domain name, stored in lower case */
    CONF_GUID,         /* 8-4-4-4-12 hexadecimal, stored in lower case */
    CONF_BOOL,         /* on/off, true/false, yes/no, 1/0 */
    CONF_UNSIGNED,     /* decimal, min..max */
    CONF_SIZE,         /* bytes with an optional K, KiB, M or MiB suffix, min..max */
    CONF_SECONDS,      /* decimal with an optional "s", min..max */
    CONF_MINUTES,      /* decimal with an optional "min", min..max */
    CONF_ENUM,         /* one of names[] */
    CONF_LOG_LEVEL,    /* crd_log_level_from_string() */
    CONF_LOG_DEBUG,    /* comma list of crd_log_subsystem_mask_from_string() */
    CONF_ADDRESS,      /* numeric IPv4 or IPv6 address, brackets allowed */
    CONF_HTTP_PATH,    /* starts with '/', no '?', '#' or white space */
    CONF_CHANGE_TYPE,  /* comma list of created, updated */
};

#define CONF_REQUIRED (1u << 0)

struct conf_option {
    const char *name;
    enum conf_type type;
    unsigned flags;
    const char *default_value;  /* as written in the file; NULL: none, or computed later */
    const char *unit;           /* for documentation and numeric suffixes */
    size_t offset;              /* into struct crd_config, or struct crd_config_sink */
    size_t size;                /* of that member */
    uint64_t min;
    uint64_t max;
    const char *const *names;   /* CONF_ENUM */
    size_t n_names;
    unsigned sink_types;        /* [sink]: bit (1 << enum crd_sink_type) per type; 0: all */
    const char *description;
};

#define CONF_FIELD(type, member)                                                                   \
    .offset = offsetof(type, member), .size = sizeof(((type *)NULL)->member)
#define CONF_CFG(member) CONF_FIELD(struct crd_config, member)
#define CONF_SINK(member) CONF_FIELD(struct crd_config_sink, member)
#define CONF_NAMES(array) .names = (array), .n_names = ARRAY_SIZE(array)

static const struct conf_option graph_options[] = {
    {.name = "tenant", .type = CONF_TENANT, .flags = CONF_REQUIRED, CONF_CFG(graph.tenant),
     .description = "Directory (tenant) ID, or a verified domain of the tenant"},
    {.name = "client_id", .type = CONF_GUID, .flags = CONF_REQUIRED, CONF_CFG(graph.client_id),
     .description = "Application (client) ID of the app registration"},
    {.name = "client_secret_file", .type = CONF_PATH, CONF_CFG(graph.client_secret_file),
     .description = "File holding the client secret; default $CREDENTIALS_DIRECTORY/client_secret"},
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
    {.name = "threads", .type = CONF_UNSIGNED, .default_value = "2", CONF_CFG(listener.threads),
     .min = 1, .max = 64, .description = "Listener threads"},
};

static const struct conf_option subscription_options[] = {
    {.name = "resource", .type = CONF_HTTP_PATH, .default_value = "/communications/callRecords",
     CONF_CFG(subscription.resource), .description = "Graph resource subscribed to"},
    {.name = "change_type", .type = CONF_CHANGE_TYPE, .default_value = "updated",
     CONF_CFG(subscription.change_type), .description = "created, updated, or both"},
    {.name = "lifetime", .type = CONF_MINUTES, .default_value = "4230", .unit = "min",
     CONF_CFG(subscription.lifetime_min), .min = 45, .max = 4230,
     .description = "Subscription lifetime requested at each renewal"},
    {.name = "renew_before", .type = CONF_MINUTES, .unit = "min",
     CONF_CFG(subscription.renew_before_min), .min = 1, .max = 4229,
     .description = "Renew this long before expiry; default a quarter of lifetime"},
    {.name = "client_state_file", .type = CONF_PATH, CONF_CFG(subscription.client_state_file),
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
};

enum conf_kind {
    CONF_KIND_GRAPH,
    CONF_KIND_LISTENER,
    CONF_KIND_SUBSCRIPTION,
    CONF_KIND_STORE,
    CONF_KIND_FETCH,
    CONF_KIND_LOG,
    CONF_KIND_SINK,
    CONF_KIND__COUNT
};

static const struct {
    const char *name;
    const struct conf_option *options;
    size_t n_options;
} section_defs[CONF_KIND__COUNT] = {
    [CONF_KIND_GRAPH] = {"graph", graph_options, ARRAY_SIZE(graph_options)},
    [CONF_KIND_LISTENER] = {"listener", listener_options, ARRAY_SIZE(listener_options)},
    [CONF_KIND_SUBSCRIPTION] = {"subscription", subscription_options,
                                ARRAY_SIZE(subscription_options)},
    [CONF_KIND_STORE] = {"store", store_options, ARRAY_SIZE(store_options)},
    [CONF_KIND_FETCH] = {"fetch", fetch_options, ARRAY_SIZE(fetch_options)},
    [CONF_KIND_LOG] = {"log", log_options, ARRAY_SIZE(log_options)},
    [CONF_KIND_SINK] = {"sink", sink_options, ARRAY_SIZE(sink_options)},
};

_Static_assert(ARRAY_SIZE(graph_options) <= CONF_MAX_OPTIONS, "graph table");
_Static_assert(ARRAY_SIZE(listener_options) <= CONF_MAX_OPTIONS, "listener table");
_Static_assert(ARRAY_SIZE(subscription_options) <= CONF_MAX_OPTIONS, "subscription table");
_Static_assert(ARRAY_SIZE(store_options) <= CONF_MAX_OPTIONS, "store table");
_Static_assert(ARRAY_SIZE(fetch_options) <= CONF_MAX_OPTIONS, "fetch table");
_Static_assert(ARRAY_SIZE(log_options) <= CONF_MAX_OPTIONS, "log table");
_Static_assert(ARRAY_SIZE(sink_options) <= CONF_MAX_OPTIONS, "sink table");

/* ------------------------------------------------------------------------ */
/* The file as read: sections of entries, before any value is interpreted   */

struct conf_entry {
    char *key;
    char *value;
    unsigned line;
};

enum conf_status {
    CONF_UNSET,    /* not in the file: the default applies */
    CONF_SET,      /* parsed and stored */
    CONF_INVALID,  /* in the file, but wrong: already reported */
};

struct conf_section {
    enum conf_kind kind;
    char *label;          /* "graph" or "sink NAME", as messages show it */
    unsigned line;        /* of the header; 0 when the section is not in the file */
    size_t sink_index;    /* CONF_KIND_SINK: index into config->sinks */
    struct conf_entry *entries;
    size_t n_entries;
    unsigned char status[CONF_MAX_OPTIONS];  /* enum conf_status per option */
};

struct loader {
    const char *path;
    const char *credentials_directory;  /* NULL or non-empty */
    const char *state_directory;        /* NULL or non-empty */
    struct crd_config *config;
    struct crd_diagnostics *diag;
    size_t first_diag;   /* diagnostics of this load start here */
    size_t n_errors;     /* errors added by this load */
    bool oom;

    struct conf_section *sections;  /* in file order; the fixed kinds first, see below */
    size_t n_sections;
};

/* ------------------------------------------------------------------------ */
/* Small string helpers                                                     */

static bool conf_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

/* Trims s in place and returns the start of the trimmed text. */
static char *conf_trim(char *s)
{
    while (conf_is_space(*s)) {
        s++;
    }
    size_t len = strlen(s);
    while (len > 0 && conf_is_space(s[len - 1])) {
        s[--len] = '\0';
    }
    return s;
}

static bool conf_is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static char conf_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static void conf_lowercase(char *s)
{
    for (; *s != '\0'; s++) {
        *s = conf_lower(*s);
    }
}

/* True when every byte is printable ASCII other than a space. */
static bool conf_is_token(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f) {
            return false;
        }
    }
    return true;
}

/* Levenshtein distance of two short strings; SIZE_MAX when either is too long. */
static size_t conf_edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a);
    size_t lb = strlen(b);
    if (la > 64 || lb > 64) {
        return SIZE_MAX;
    }
    size_t row[65];
    for (size_t j = 0; j <= lb; j++) {
        row[j] = j;
    }
    for (size_t i = 1; i <= la; i++) {
        size_t diagonal = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t above = row[j];
            size_t cost = conf_lower(a[i - 1]) == conf_lower(b[j - 1]) ? 0 : 1;
            size_t best = diagonal + cost;
            if (above + 1 < best) {
                best = above + 1;
            }
            if (row[j - 1] + 1 < best) {
                best = row[j - 1] + 1;
            }
            row[j] = best;
            diagonal = above;
        }
    }
    return row[lb];
}

static size_t conf_common_prefix(const char *a, const char *b)
{
    size_t n = 0;
    while (a[n] != '\0' && conf_lower(a[n]) == conf_lower(b[n])) {
        n++;
    }
    return n;
}

/*
 * The candidate an operator most likely meant, or NULL: the nearest one within
 * an edit distance of 3 and of about half the word's length (so that "foo"
 * does not become "tls"), else the one sharing the longest prefix of at least
 * 4 characters, or of which the word is a prefix (or the other way round).
 */
static const char *conf_closest(const char *word, const char *const *candidates, size_t n)
{
    const char *best = NULL;
    size_t best_distance = SIZE_MAX;
    size_t word_len = strlen(word);
    for (size_t i = 0; i < n; i++) {
        size_t d = conf_edit_distance(word, candidates[i]);
        if (d <= 3 && 2 * d <= word_len + 1 && d < best_distance) {
            best = candidates[i];
            best_distance = d;
        }
    }
    if (best != NULL) {
        return best;
    }

    size_t best_prefix = 0;
    for (size_t i = 0; i < n; i++) {
        size_t p = conf_common_prefix(word, candidates[i]);
        size_t shorter = word_len < strlen(candidates[i]) ? word_len : strlen(candidates[i]);
        bool whole = p == shorter && p >= 3;
        if ((p >= 4 || whole) && p > best_prefix) {
            best = candidates[i];
            best_prefix = p;
        }
    }
    return best;
}

/* ------------------------------------------------------------------------ */
/* Diagnostics                                                              */

struct conf_buf {
    char *data;
    size_t len;
    size_t cap;
    bool failed;
};

static void buf_append_n(struct conf_buf *b, const char *s, size_t n)
{
    if (b->failed) {
        return;
    }
    if (b->data == NULL || b->len + n + 1 > b->cap) {
        size_t cap = b->cap == 0 ? 128 : b->cap;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        char *data = realloc(b->data, cap);
        if (data == NULL) {
            b->failed = true;
            return;
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_append(struct conf_buf *b, const char *s)
{
    buf_append_n(b, s, strlen(s));
}

/* Appends a value as messages show it: escaped, and cut when long. Returns true when cut. */
static bool buf_append_shown(struct conf_buf *b, const char *value)
{
    size_t len = strlen(value);
    size_t shown = len > CONF_SHOWN_VALUE_MAX ? CONF_SHOWN_VALUE_MAX : len;
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c < 0x20 || c == 0x7f) {
            char escaped[8];
            snprintf(escaped, sizeof(escaped), "\\x%02x", c);
            buf_append(b, escaped);
        } else {
            buf_append_n(b, &value[i], 1);
        }
    }
    if (shown < len) {
        buf_append(b, "...");
    }
    return shown < len;
}

/*
 * Appends one diagnostic "FILE:LINE: [section] key = 'value': problem; fix",
 * leaving out the parts that are 0 or NULL. value is shown as given, so a
 * caller must never pass a secret (proxy passwords are masked by the caller).
 */
__attribute__((format(printf, 7, 8))) static void
add_diag(struct loader *ld, enum crd_diagnostic_severity severity, unsigned line,
         const char *section, const char *key, const char *value, const char *fmt, ...)
{
    struct conf_buf b = {0};
    char number[32];

    buf_append(&b, ld->path);
    if (line > 0) {
        snprintf(number, sizeof(number), ":%u", line);
        buf_append(&b, number);
    }
    buf_append(&b, ": ");
    if (section != NULL) {
        buf_append(&b, "[");
        (void)buf_append_shown(&b, section);  /* an unknown section's name is the user's text */
        buf_append(&b, "]");
    }
    if (key != NULL) {
        if (section != NULL) {
            buf_append(&b, " ");
        }
        buf_append(&b, key);
        if (value != NULL) {
            buf_append(&b, " = '");
            bool cut = buf_append_shown(&b, value);
            buf_append(&b, "'");
            if (cut) {
                snprintf(number, sizeof(number), " (%zu bytes)", strlen(value));
                buf_append(&b, number);
            }
        }
    }
    if (section != NULL || key != NULL) {
        buf_append(&b, ": ");
    }

    char *problem = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&problem, fmt, ap);
    va_end(ap);
    if (n < 0) {
        problem = NULL;
        b.failed = true;
    } else {
        buf_append(&b, problem);
    }
    free(problem);

    struct crd_diagnostic item = {
        .severity = severity,
        .line = line,
        .section = section != NULL ? strdup(section) : NULL,
        .key = key != NULL ? strdup(key) : NULL,
        .message = b.data,
    };
    struct crd_diagnostic *items = NULL;
    bool complete = (section == NULL || item.section != NULL) && (key == NULL || item.key != NULL);
    if (!b.failed && complete) {
        items = realloc(ld->diag->items, (ld->diag->n_items + 1) * sizeof(*items));
    }
    if (items == NULL) {
        free(item.section);
        free(item.key);
        free(item.message);
        ld->oom = true;
        if (severity == CRD_DIAGNOSTIC_ERROR) {
            ld->n_errors++;  /* the load must still fail */
        }
        return;
    }
    items[ld->diag->n_items] = item;
    ld->diag->items = items;
    ld->diag->n_items++;
    if (severity == CRD_DIAGNOSTIC_ERROR) {
        ld->diag->n_errors++;
        ld->n_errors++;
    } else {
        ld->diag->n_warnings++;
    }
}

/* Stable insertion sort of this load's diagnostics by line; lines 0 go last. */
static void sort_diagnostics(struct loader *ld)
{
    struct crd_diagnostic *items = ld->diag->items;
    for (size_t i = ld->first_diag + 1; i < ld->diag->n_items; i++) {
        struct crd_diagnostic item = items[i];
        unsigned key = item.line == 0 ? UINT_MAX : item.line;
        size_t j = i;
        while (j > ld->first_diag &&
               (items[j - 1].line == 0 ? UINT_MAX : items[j - 1].line) > key) {
            items[j] = items[j - 1];
            j--;
        }
        items[j] = item;
    }
}

void crd_diagnostics_clear(struct crd_diagnostics *diag)
{
    if (diag == NULL) {
        return;
    }
    for (size_t i = 0; i < diag->n_items; i++) {
        free(diag->items[i].section);
        free(diag->items[i].key);
        free(diag->items[i].message);
    }
    free(diag->items);
    *diag = (struct crd_diagnostics){0};
}

/* ------------------------------------------------------------------------ */
/* Reading the file into sections                                           */

static void section_free(struct conf_section *s)
{
    for (size_t i = 0; i < s->n_entries; i++) {
        free(s->entries[i].key);
        free(s->entries[i].value);
    }
    free(s->entries);
    free(s->label);
}

static struct conf_section *add_section(struct loader *ld, enum conf_kind kind, const char *label,
                                        unsigned line)
{
    char *copy = strdup(label);
    struct conf_section *sections =
        copy != NULL ? realloc(ld->sections, (ld->n_sections + 1) * sizeof(*sections)) : NULL;
    if (sections == NULL) {
        free(copy);
        ld->oom = true;
        return NULL;
    }
    ld->sections = sections;
    struct conf_section *s = &sections[ld->n_sections++];
    *s = (struct conf_section){.kind = kind, .line = line, .label = copy};
    return s;
}

/* The one section of a fixed kind; made for every fixed kind before reading. */
static struct conf_section *fixed_section(struct loader *ld, enum conf_kind kind)
{
    return &ld->sections[kind];
}

static const struct conf_entry *find_entry(const struct conf_section *s, const char *key)
{
    for (size_t i = 0; i < s->n_entries; i++) {
        if (strcmp(s->entries[i].key, key) == 0) {
            return &s->entries[i];
        }
    }
    return NULL;
}

static bool is_valid_sink_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > CONF_SINK_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!conf_is_alnum(name[i]) && name[i] != '_' && name[i] != '-') {
            return false;
        }
    }
    return true;
}

static bool is_valid_key_name(const char *key)
{
    if (*key == '\0') {
        return false;
    }
    for (; *key != '\0'; key++) {
        if (!conf_is_alnum(*key) && *key != '_') {
            return false;
        }
    }
    return true;
}

/* The sections whose table has this key, for "it belongs in [listener]". */
static const char *section_owning_key(const char *key)
{
    for (size_t k = 0; k < CONF_KIND__COUNT; k++) {
        for (size_t i = 0; i < section_defs[k].n_options; i++) {
            if (strcmp(section_defs[k].options[i].name, key) == 0) {
                return k == CONF_KIND_SINK ? "sink NAME" : section_defs[k].name;
            }
        }
    }
    return NULL;
}

/*
 * Handles a "[...]" line. Returns the index of the section later keys go to,
 * or CONF_SKIP when they are to be skipped (an unknown or malformed header,
 * already reported). An index, as adding a section moves them all.
 */
#define CONF_SKIP SIZE_MAX

static size_t read_header(struct loader *ld, char *line, unsigned number)
{
    char *close = strchr(line, ']');
    if (close == NULL) {
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, NULL, NULL, NULL,
                 "section header without ']'; write it as [name] or [sink NAME]");
        return CONF_SKIP;
    }
    if (close[1] != '\0') {
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, NULL, NULL, NULL,
                 "text after the section header's ']'; put comments on a line of their own");
        return CONF_SKIP;
    }
    *close = '\0';
    char *inner = conf_trim(line + 1);
    if (strchr(inner, '[') != NULL) {
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, NULL, NULL, NULL,
                 "'[' inside a section header; write it as [name] or [sink NAME]");
        return CONF_SKIP;
    }

    char *name = inner;
    char *argument = inner;
    while (*argument != '\0' && !conf_is_space(*argument)) {
        argument++;
    }
    if (*argument != '\0') {
        *argument++ = '\0';
        argument = conf_trim(argument);
    }

    if (*name == '\0') {
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, NULL, NULL, NULL,
                 "empty section header '[]'; name the section, e.g. [graph]");
        return CONF_SKIP;
    }

    if (strcmp(name, "sink") == 0) {
        if (*argument == '\0') {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, "sink", NULL, NULL,
                     "a sink section needs a name; write it as [sink NAME], e.g. [sink archive]");
            return CONF_SKIP;
        }
        char label[CONF_SINK_NAME_MAX + 16];
        if (!is_valid_sink_name(argument)) {
            /* Not shown: whatever sits in brackets might be anything. */
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, "sink", NULL, NULL,
                     "invalid sink name; use 1 to %d letters, digits, '_' or '-', e.g. "
                     "[sink archive]",
                     CONF_SINK_NAME_MAX);
            return CONF_SKIP;
        }
        snprintf(label, sizeof(label), "sink %s", argument);
        for (size_t i = 0; i < ld->n_sections; i++) {
            if (ld->sections[i].kind == CONF_KIND_SINK &&
                strcmp(ld->sections[i].label, label) == 0) {
                add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, label, NULL, NULL,
                         "duplicate sink name; [%s] is already on line %u; give each sink its own "
                         "name",
                         label, ld->sections[i].line);
                return i;
            }
        }
        if (add_section(ld, CONF_KIND_SINK, label, number) == NULL) {
            return CONF_SKIP;
        }
        return ld->n_sections - 1;
    }

    for (size_t k = 0; k < CONF_KIND_SINK; k++) {
        if (strcmp(name, section_defs[k].name) != 0) {
            continue;
        }
        if (*argument != '\0') {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, name, NULL, NULL,
                     "[%s] takes no name; write it as [%s]", name, name);
        }
        struct conf_section *s = fixed_section(ld, (enum conf_kind)k);
        if (s->line != 0) {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, name, NULL, NULL,
                     "duplicate section; [%s] already starts on line %u; merge the two", name,
                     s->line);
        } else {
            s->line = number;
        }
        return k;
    }

    const char *names[CONF_KIND__COUNT];
    for (size_t k = 0; k < CONF_KIND__COUNT; k++) {
        names[k] = section_defs[k].name;
    }
    const char *guess = conf_closest(name, names, CONF_KIND__COUNT);
    if (guess != NULL) {
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, name, NULL, NULL,
                 "unknown section; did you mean [%s]?",
                 strcmp(guess, "sink") == 0 ? "sink NAME" : guess);
    } else {
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, name, NULL, NULL,
                 "unknown section; the sections are [graph], [listener], [subscription], "
                 "[store], [fetch], [log] and [sink NAME]");
    }
    return CONF_SKIP;
}

static void read_key_value(struct loader *ld, struct conf_section *s, bool skipping, char *line,
                           char *equals, unsigned number)
{
    *equals = '\0';
    char *key = conf_trim(line);
    char *value = conf_trim(equals + 1);
    const char *label = s != NULL ? s->label : NULL;

    if (*key == '\0') {
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, label, NULL, NULL,
                 "'=' without a key before it; write key = value");
        return;
    }
    if (!is_valid_key_name(key)) {
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, label, NULL, NULL,
                 "invalid key name '%.*s'; keys are made of letters, digits and '_'",
                 CONF_SHOWN_VALUE_MAX, key);
        return;
    }

    size_t len = strlen(value);
    if (len > 0 && value[0] == '"') {
        if (len < 2 || value[len - 1] != '"') {
            /* No value shown: an unterminated quote may hold anything. */
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, label, key, NULL,
                     "the value opens a double quote but does not close it; add the closing '\"'");
            return;
        }
        value[len - 1] = '\0';
        value++;
    }

    if (skipping) {
        return;  /* inside an unknown section, already reported */
    }
    if (s == NULL) {
        const char *owner = section_owning_key(key);
        if (owner != NULL) {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, NULL, key, NULL,
                     "key outside of any section; put it below the [%s] header", owner);
        } else {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, NULL, key, NULL,
                     "key outside of any section; put it below a section header such as "
                     "[graph]");
        }
        return;
    }

    const struct conf_entry *earlier = find_entry(s, key);
    if (earlier != NULL) {
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, s->label, key, NULL,
                 "duplicate key; '%s' is already set on line %u; keep only one of them", key,
                 earlier->line);
        return;
    }

    struct conf_entry *entries = realloc(s->entries, (s->n_entries + 1) * sizeof(*entries));
    if (entries == NULL) {
        ld->oom = true;
        return;
    }
    s->entries = entries;
    struct conf_entry *e = &entries[s->n_entries];
    e->key = strdup(key);
    e->value = strdup(value);
    e->line = number;
    if (e->key == NULL || e->value == NULL) {
        free(e->key);
        free(e->value);
        ld->oom = true;
        return;
    }
    s->n_entries++;
}

/* Reads the file into ld->sections, reporting syntax errors. Returns 0 or -errno. */
static int read_file(struct loader *ld)
{
    int r = 0;
    char *line = NULL;
    size_t line_cap = 0;

    FILE *f = fopen(ld->path, "re");
    if (f == NULL) {
        r = -errno;
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, 0, NULL, NULL, NULL,
                 "cannot open the configuration file: %s; check the path, or start from the "
                 "example callrecd.conf",
                 strerror(-r));
        goto out;
    }
    struct stat st;
    if (fstat(fileno(f), &st) < 0) {
        r = -errno;
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, 0, NULL, NULL, NULL,
                 "cannot read the configuration file: %s", strerror(-r));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        r = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, 0, NULL, NULL, NULL,
                 "not a regular file; name the configuration file itself");
        goto out;
    }
    if (st.st_size > CONF_MAX_FILE_SIZE) {
        r = -EFBIG;
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, 0, NULL, NULL, NULL,
                 "the file is larger than %d bytes; is it the right file?", CONF_MAX_FILE_SIZE);
        goto out;
    }

    size_t current = CONF_SKIP;  /* index of the section keys go to */
    bool skipping = false;       /* after an unknown or malformed section header */
    unsigned number = 0;
    size_t total = 0;
    for (;;) {
        errno = 0;
        ssize_t n = getline(&line, &line_cap, f);
        if (n < 0) {
            if (errno != 0 && !feof(f)) {
                r = -errno;
                add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, NULL, NULL, NULL,
                         "cannot read the configuration file: %s", strerror(-r));
                goto out;
            }
            break;
        }
        number++;
        total += (size_t)n;
        if (total > CONF_MAX_FILE_SIZE) {
            r = -EFBIG;
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, NULL, NULL, NULL,
                     "the file is larger than %d bytes; is it the right file?", CONF_MAX_FILE_SIZE);
            goto out;
        }
        if (strlen(line) != (size_t)n) {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, number,
                     current != CONF_SKIP ? ld->sections[current].label : NULL, NULL, NULL,
                     "the line contains a NUL byte; is this a text file?");
            continue;
        }

        char *text = line;
        if (number == 1 && strncmp(text, "\xef\xbb\xbf", 3) == 0) {
            text += 3;  /* a UTF-8 byte order mark, as some editors write */
        }
        text = conf_trim(text);

        if (*text == '\0' || *text == '#' || *text == ';') {
            continue;
        }
        if (*text == '[') {
            current = read_header(ld, text, number);
            skipping = current == CONF_SKIP;
            continue;
        }
        char *equals = strchr(text, '=');
        if (equals != NULL) {
            read_key_value(ld, current != CONF_SKIP ? &ld->sections[current] : NULL, skipping,
                           text, equals, number);
            continue;
        }
        /* The text is not shown: a stray line may well be a pasted secret. */
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, number,
                 current != CONF_SKIP ? ld->sections[current].label : NULL, NULL, NULL,
                 "cannot parse this line; write key = value, a [section] header, or a comment "
                 "starting with '#' or ';' (a value cannot continue on the next line)");
    }

out:
    free(line);
    if (f != NULL) {
        fclose(f);
    }
    return r;
}

/* ------------------------------------------------------------------------ */
/* Values                                                                   */

struct conf_problem {
    char text[1024];
};

__attribute__((format(printf, 2, 3))) static int fail(struct conf_problem *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->text, sizeof(p->text), fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static int store_string(struct loader *ld, const struct conf_option *opt, void *base,
                        const char *text, size_t len)
{
    char *copy = strndup(text, len);
    if (copy == NULL) {
        ld->oom = true;
        return -ENOMEM;
    }
    char **slot = (char **)(void *)((char *)base + opt->offset);
    free(*slot);
    *slot = copy;
    return 0;
}

static void store_number(const struct conf_option *opt, void *base, uint64_t value)
{
    char *slot = (char *)base + opt->offset;
    if (opt->size == sizeof(uint16_t)) {
        uint16_t v = (uint16_t)value;
        memcpy(slot, &v, sizeof(v));
    } else if (opt->size == sizeof(uint32_t)) {
        uint32_t v = (uint32_t)value;
        memcpy(slot, &v, sizeof(v));
    } else {
        uint64_t v = value;
        memcpy(slot, &v, sizeof(v));
    }
}

static void store_int(const struct conf_option *opt, void *base, int value)
{
    memcpy((char *)base + opt->offset, &value, sizeof(value));
}

static void format_size(uint64_t bytes, char *buf, size_t size)
{
    if (bytes >= 1024 * 1024 && bytes % (1024 * 1024) == 0) {
        snprintf(buf, size, "%lluM", (unsigned long long)(bytes / (1024 * 1024)));
    } else if (bytes >= 1024 && bytes % 1024 == 0) {
        snprintf(buf, size, "%lluK", (unsigned long long)(bytes / 1024));
    } else {
        snprintf(buf, size, "%llu", (unsigned long long)bytes);
    }
}

/*
 * Parses a decimal number, then an optional unit suffix (white space between
 * allowed) that must be one of suffixes[] with its multiplier.
 */
struct conf_suffix {
    const char *text;
    uint64_t multiplier;
};

static int parse_number(const char *value, const struct conf_suffix *suffixes, size_t n_suffixes,
                        uint64_t *ret, struct conf_problem *p, const char *expected)
{
    const char *s = value;
    uint64_t n = 0;
    if (*s < '0' || *s > '9') {
        return fail(p, "not a number; write %s", expected);
    }
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned digit = (unsigned)(*s - '0');
        if (n > (UINT64_MAX - digit) / 10) {
            return fail(p, "the number is far too large; write %s", expected);
        }
        n = n * 10 + digit;
    }
    while (conf_is_space(*s)) {
        s++;
    }
    uint64_t multiplier = 1;
    if (*s != '\0') {
        bool known = false;
        for (size_t i = 0; i < n_suffixes; i++) {
            if (strcasecmp(s, suffixes[i].text) == 0) {
                multiplier = suffixes[i].multiplier;
                known = true;
                break;
            }
        }
        if (!known) {
            return fail(p, "unexpected '%.*s' after the number; write %s", CONF_SHOWN_VALUE_MAX, s,
                        expected);
        }
    }
    if (n > UINT64_MAX / multiplier) {
        return fail(p, "the number is far too large; write %s", expected);
    }
    *ret = n * multiplier;
    return 0;
}

static int parse_ranged(const struct conf_option *opt, const char *value, void *base,
                        struct conf_problem *p)
{
    static const struct conf_suffix size_suffixes[] = {
        {"K", 1024}, {"KiB", 1024}, {"M", 1024 * 1024}, {"MiB", 1024 * 1024},
    };
    static const struct conf_suffix second_suffixes[] = {{"s", 1}};
    static const struct conf_suffix minute_suffixes[] = {{"min", 1}};
    uint64_t n = 0;
    int r = 0;
    char expected[128];

    switch (opt->type) {
    case CONF_SIZE: {
        char lo[32];
        char hi[32];
        format_size(opt->min, lo, sizeof(lo));
        format_size(opt->max, hi, sizeof(hi));
        snprintf(expected, sizeof(expected), "a size from %s to %s bytes, e.g. 512K or 2M", lo, hi);
        r = parse_number(value, size_suffixes, ARRAY_SIZE(size_suffixes), &n, p, expected);
        if (r == 0 && (n < opt->min || n > opt->max)) {
            return fail(p, "out of range; write %s", expected);
        }
        break;
    }
    case CONF_SECONDS:
    case CONF_MINUTES: {
        bool seconds = opt->type == CONF_SECONDS;
        snprintf(expected, sizeof(expected), "a number of %s from %llu to %llu",
                 seconds ? "seconds" : "minutes", (unsigned long long)opt->min,
                 (unsigned long long)opt->max);
        r = parse_number(value, seconds ? second_suffixes : minute_suffixes, 1, &n, p, expected);
        break;
    }
    default:
        snprintf(expected, sizeof(expected), "a whole number from %llu to %llu",
                 (unsigned long long)opt->min, (unsigned long long)opt->max);
        r = parse_number(value, NULL, 0, &n, p, expected);
        break;
    }
    if (r < 0) {
        return r;
    }
    if (n < opt->min || n > opt->max) {
        return fail(p, "out of range; write %s", expected);
    }
    store_number(opt, base, n);
    return 0;
}

static int parse_bool(const char *value, bool *ret)
{
    static const char *const yes[] = {"on", "true", "yes", "1"};
    static const char *const no[] = {"off", "false", "no", "0"};
    for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
        if (strcasecmp(value, yes[i]) == 0) {
            *ret = true;
            return 0;
        }
        if (strcasecmp(value, no[i]) == 0) {
            *ret = false;
            return 0;
        }
    }
    return -EINVAL;
}

static void join_names(const char *const *names, size_t n, char *buf, size_t size)
{
    buf[0] = '\0';
    size_t used = 0;
    for (size_t i = 0; i < n && used < size; i++) {
        const char *sep = i == 0 ? "" : (i + 1 == n ? " or " : ", ");
        int w = snprintf(buf + used, size - used, "%s%s", sep, names[i]);
        if (w < 0) {
            break;
        }
        used += (size_t)w;
    }
}

static bool is_domain_name(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 253) {
        return false;
    }
    size_t labels = 0;
    const char *label = s;
    for (;;) {
        const char *dot = strchr(label, '.');
        size_t label_len = dot != NULL ? (size_t)(dot - label) : strlen(label);
        if (label_len == 0 || label_len > 63 || label[0] == '-' || label[label_len - 1] == '-') {
            return false;
        }
        bool all_digits = true;
        for (size_t i = 0; i < label_len; i++) {
            if (!conf_is_alnum(label[i]) && label[i] != '-') {
                return false;
            }
            if (label[i] < '0' || label[i] > '9') {
                all_digits = false;
            }
        }
        labels++;
        if (dot == NULL) {
            /* A top-level domain is never all digits: that would be an IPv4 address. */
            return labels >= 2 && !all_digits;
        }
        label = dot + 1;
    }
}

/* URL pieces, pointing into the parsed string. */
struct conf_url {
    char scheme[16];
    const char *host;     /* without brackets for IPv6 */
    size_t host_len;
    bool ipv6;
    bool userinfo;
    const char *path;     /* from the first '/', '?' or '#' after the authority */
    bool query_or_fragment;
};

static int parse_url(const char *value, struct conf_url *u, struct conf_problem *p,
                     const char *example)
{
    *u = (struct conf_url){0};
    for (const char *c = value; *c != '\0'; c++) {
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f) {
            return fail(p, "a URL cannot contain spaces or control characters; percent-encode "
                           "them (%%20)");
        }
    }
    const char *sep = strstr(value, "://");
    size_t scheme_len = sep != NULL ? (size_t)(sep - value) : 0;
    if (sep == NULL || scheme_len == 0 || scheme_len >= sizeof(u->scheme)) {
        return fail(p, "not an absolute URL; write it with its scheme, e.g. '%s'", example);
    }
    for (size_t i = 0; i < scheme_len; i++) {
        u->scheme[i] = conf_lower(value[i]);
    }

    const char *authority = sep + 3;
    size_t authority_len = strcspn(authority, "/?#");
    u->path = authority + authority_len;
    u->query_or_fragment = strpbrk(u->path, "?#") != NULL;

    const char *at = memchr(authority, '@', authority_len);
    const char *host = authority;
    if (at != NULL) {
        /* There may be more than one '@' in a password; the host follows the last. */
        for (const char *c = authority; c < authority + authority_len; c++) {
            if (*c == '@') {
                at = c;
            }
        }
        u->userinfo = true;
        host = at + 1;
    }
    const char *end = authority + authority_len;
    const char *port = NULL;
    if (host < end && *host == '[') {
        const char *close = memchr(host, ']', (size_t)(end - host));
        if (close == NULL) {
            return fail(p, "an IPv6 address in a URL needs its closing ']'; e.g. '%s'", example);
        }
        char address[INET6_ADDRSTRLEN + 1];
        size_t len = (size_t)(close - host - 1);
        struct in6_addr in6;
        if (len >= sizeof(address)) {
            return fail(p, "invalid IPv6 address in the URL; e.g. 'https://[2001:db8::1]:8443'");
        }
        memcpy(address, host + 1, len);
        address[len] = '\0';
        if (inet_pton(AF_INET6, address, &in6) != 1) {
            return fail(p, "invalid IPv6 address in the URL; e.g. 'https://[2001:db8::1]:8443'");
        }
        u->host = host + 1;
        u->host_len = len;
        u->ipv6 = true;
        if (close + 1 < end) {
            if (close[1] != ':') {
                return fail(p, "unexpected text after the IPv6 address; e.g. '%s'", example);
            }
            port = close + 2;
        }
    } else {
        const char *colon = memchr(host, ':', (size_t)(end - host));
        u->host = host;
        u->host_len = (size_t)((colon != NULL ? colon : end) - host);
        if (colon != NULL) {
            port = colon + 1;
        }
        for (size_t i = 0; i < u->host_len; i++) {
            char c = host[i];
            if (!conf_is_alnum(c) && c != '-' && c != '.' && c != '_') {
                return fail(p, "invalid character '%c' in the host name; e.g. '%s'", c, example);
            }
        }
    }
    if (u->host_len == 0) {
        return fail(p, "the URL has no host; e.g. '%s'", example);
    }
    if (port != NULL) {
        unsigned long n = 0;
        size_t digits = 0;
        for (const char *c = port; c < end; c++, digits++) {
            if (*c < '0' || *c > '9' || digits >= 5) {
                return fail(p, "invalid port in the URL; use 1 to 65535, e.g. '%s'", example);
            }
            n = n * 10 + (unsigned long)(*c - '0');
        }
        if (digits == 0 || n < 1 || n > 65535) {
            return fail(p, "invalid port in the URL; use 1 to 65535, e.g. '%s'", example);
        }
    }
    return 0;
}

static bool url_host_is_loopback(const struct conf_url *u)
{
    char host[256];
    if (u->host_len >= sizeof(host)) {
        return false;
    }
    memcpy(host, u->host, u->host_len);
    host[u->host_len] = '\0';
    if (u->ipv6) {
        struct in6_addr in6;
        return inet_pton(AF_INET6, host, &in6) == 1 && memcmp(&in6, &in6addr_loopback, 16) == 0;
    }
    if (strcasecmp(host, "localhost") == 0 || strcasecmp(host, "localhost.") == 0) {
        return true;
    }
    struct in_addr in4;
    return inet_pton(AF_INET, host, &in4) == 1 && (ntohl(in4.s_addr) >> 24) == 127;
}

/*
 * A URL value as messages may show it: a proxy password is replaced by "***".
 * Returns a malloc'ed string, or NULL on OOM.
 */
static char *url_for_display(const char *value)
{
    const char *sep = strstr(value, "://");
    const char *authority = sep != NULL ? sep + 3 : value;
    size_t authority_len = strcspn(authority, "/?#");
    const char *at = NULL;
    for (const char *c = authority; c < authority + authority_len; c++) {
        if (*c == '@') {
            at = c;
        }
    }
    if (at == NULL) {
        return strdup(value);
    }
    const char *colon = memchr(authority, ':', (size_t)(at - authority));
    size_t keep = (size_t)((colon != NULL ? colon : at) - value);
    char *shown = NULL;
    if (asprintf(&shown, "%.*s%s%s", (int)keep, value, colon != NULL ? ":***" : "", at) < 0) {
        return NULL;
    }
    return shown;
}

static int parse_http_url(struct loader *ld, const struct conf_option *opt, const char *value,
                          void *base, struct conf_problem *p)
{
    const char *example = strcmp(opt->name, "public_url") == 0
                              ? "https://callrecd.example.com:8443"
                              : "https://graph.microsoft.com";
    struct conf_url u;
    int r = parse_url(value, &u, p, example);
    if (r < 0) {
        return r;
    }
    if (strcmp(u.scheme, "http") == 0) {
        if (!url_host_is_loopback(&u)) {
            return fail(p, "plain http is allowed only for a loopback host (127.0.0.1, ::1, "
                           "localhost), for tests; use https, e.g. '%s'",
                        example);
        }
    } else if (strcmp(u.scheme, "https") != 0) {
        return fail(p, "unsupported scheme '%s'; use https, e.g. '%s'", u.scheme, example);
    }
    if (u.userinfo) {
        return fail(p, "user names or passwords in this URL are not supported; remove the part "
                       "before '@'");
    }
    if (u.query_or_fragment) {
        return fail(p, "the URL has a query or fragment ('?' or '#'); give the base URL only, "
                       "e.g. '%s'",
                    example);
    }
    size_t len = strlen(value);
    while (len > (size_t)(u.path - value) && value[len - 1] == '/') {
        len--;
    }
    return store_string(ld, opt, base, value, len);
}

static int parse_proxy_url(struct loader *ld, const struct conf_option *opt, const char *value,
                           void *base, struct conf_problem *p)
{
    static const char *const schemes[] = {"http", "https", "socks4", "socks4a", "socks5",
                                          "socks5h"};
    const char *example = "http://proxy.example.com:3128";
    struct conf_url u;
    int r = parse_url(value, &u, p, example);
    if (r < 0) {
        return r;
    }
    bool known = false;
    for (size_t i = 0; i < ARRAY_SIZE(schemes); i++) {
        known = known || strcmp(u.scheme, schemes[i]) == 0;
    }
    if (!known) {
        return fail(p, "unsupported proxy scheme '%s'; use http, https, socks4, socks4a, socks5 "
                       "or socks5h, e.g. '%s'",
                    u.scheme, example);
    }
    if (u.query_or_fragment) {
        return fail(p, "a proxy URL has no query or fragment; e.g. '%s'", example);
    }
    return store_string(ld, opt, base, value, strlen(value));
}

static int parse_http_path(struct loader *ld, const struct conf_option *opt, const char *value,
                           void *base, struct conf_problem *p)
{
    size_t len = strlen(value);
    if (len == 0 || value[0] != '/') {
        return fail(p, "must start with '/', e.g. '%s'",
                    opt->default_value != NULL ? opt->default_value : "/notify");
    }
    if (len > CONF_HTTP_PATH_MAX) {
        return fail(p, "longer than %d characters; use a shorter path", CONF_HTTP_PATH_MAX);
    }
    if (!conf_is_token(value, len)) {
        return fail(p, "contains a space or a control character; use plain ASCII such as '%s'",
                    opt->default_value != NULL ? opt->default_value : "/notify");
    }
    if (strpbrk(value, "?#") != NULL) {
        return fail(p, "a path cannot contain '?' or '#'; remove the query or fragment");
    }
    return store_string(ld, opt, base, value, len);
}

static int parse_change_type(struct loader *ld, const struct conf_option *opt, const char *value,
                             void *base, struct conf_problem *p)
{
    bool created = false;
    bool updated = false;
    char *copy = strdup(value);
    if (copy == NULL) {
        ld->oom = true;
        return -ENOMEM;
    }
    int r = 0;
    char *item = copy;
    for (;;) {
        char *comma = strchr(item, ',');
        if (comma != NULL) {
            *comma = '\0';
        }
        char *name = conf_trim(item);
        bool *flag = NULL;
        if (strcmp(name, "created") == 0) {
            flag = &created;
        } else if (strcmp(name, "updated") == 0) {
            flag = &updated;
        } else if (*name == '\0') {
            r = fail(p, "empty change type in the list; write created, updated or "
                        "created,updated");
            goto out;
        } else if (strcmp(name, "deleted") == 0) {
            r = fail(p, "call records support only the change types created and updated; remove "
                        "'deleted'");
            goto out;
        } else {
            r = fail(p, "unknown change type '%.*s'; call records support created and updated; "
                        "write created, updated or created,updated",
                     CONF_SHOWN_VALUE_MAX, name);
            goto out;
        }
        if (*flag) {
            r = fail(p, "'%s' is listed twice; name it once", name);
            goto out;
        }
        *flag = true;
        if (comma == NULL) {
            break;
        }
        item = comma + 1;
    }
    const char *normal = created && updated ? "created,updated" : (created ? "created" : "updated");
    r = store_string(ld, opt, base, normal, strlen(normal));
out:
    free(copy);
    return r;
}

static int parse_log_debug(struct loader *ld, const struct conf_option *opt, const char *value,
                           void *base, struct conf_problem *p)
{
    unsigned mask = 0;
    char *copy = strdup(value);
    if (copy == NULL) {
        ld->oom = true;
        return -ENOMEM;
    }
    int r = 0;
    if (*conf_trim(copy) == '\0') {
        goto done;  /* an empty list: no debug messages */
    }
    char *item = copy;
    for (;;) {
        char *comma = strchr(item, ',');
        if (comma != NULL) {
            *comma = '\0';
        }
        char *name = conf_trim(item);
        unsigned bit = 0;
        if (crd_log_subsystem_mask_from_string(name, &bit) < 0) {
            const char *names[CRD_LOG_SUBSYSTEM__COUNT + 1];
            for (unsigned i = 0; i < CRD_LOG_SUBSYSTEM__COUNT; i++) {
                names[i] = crd_log_subsystem_name((enum crd_log_subsystem)i);
            }
            names[CRD_LOG_SUBSYSTEM__COUNT] = "all";
            char list[256];
            join_names(names, ARRAY_SIZE(names), list, sizeof(list));
            const char *guess = conf_closest(name, names, ARRAY_SIZE(names));
            if (*name == '\0') {
                r = fail(p, "empty name in the list; write names separated by commas, from %s",
                         list);
            } else if (guess != NULL) {
                r = fail(p, "unknown subsystem '%.*s'; did you mean '%s'? The subsystems are %s",
                         CONF_SHOWN_VALUE_MAX, name, guess, list);
            } else {
                r = fail(p, "unknown subsystem '%.*s'; use a comma list of %s",
                         CONF_SHOWN_VALUE_MAX, name, list);
            }
            goto out;
        }
        mask |= bit;
        if (comma == NULL) {
            break;
        }
        item = comma + 1;
    }
done:
    store_number(opt, base, mask);
out:
    free(copy);
    return r;
}

/* Parses value by opt's type and stores it into base (a config or a sink). */
static int parse_option(struct loader *ld, const struct conf_option *opt, const char *value,
                        void *base, struct conf_problem *p)
{
    size_t len = strlen(value);

    switch (opt->type) {
    case CONF_STRING:
        if (len == 0) {
            return fail(p, "empty value; give a value or remove the line to use the default");
        }
        return store_string(ld, opt, base, value, len);

    case CONF_PATH:
    case CONF_ABS_PATH:
        if (len == 0) {
            return fail(p, "empty path; give a file name or remove the line");
        }
        if (opt->type == CONF_ABS_PATH && value[0] != '/') {
            return fail(p, "not an absolute path; write the full path starting with '/'");
        }
        if (len >= PATH_MAX) {
            return fail(p, "the path is longer than %d bytes; use a shorter one", PATH_MAX - 1);
        }
        for (size_t i = 0; i < len; i++) {
            if ((unsigned char)value[i] < 0x20 || value[i] == 0x7f) {
                return fail(p, "the path contains a control character; remove it");
            }
        }
        return store_string(ld, opt, base, value, len);

    case CONF_URL:
        return parse_http_url(ld, opt, value, base, p);

    case CONF_PROXY_URL:
        return parse_proxy_url(ld, opt, value, base, p);

    case CONF_TENANT: {
        char *lower = strdup(value);
        if (lower == NULL) {
            ld->oom = true;
            return -ENOMEM;
        }
        conf_lowercase(lower);
        int r = 0;
        if (strcmp(lower, "common") == 0 || strcmp(lower, "organizations") == 0 ||
            strcmp(lower, "consumers") == 0) {
            r = fail(p, "'%s' names no single tenant and cannot get an app-only token; use the "
                        "Directory (tenant) ID or a domain such as contoso.onmicrosoft.com",
                     lower);
        } else if (!crd_guid_is_valid(lower, len) && !is_domain_name(lower)) {
            r = fail(p, "neither a GUID nor a domain name; use the Directory (tenant) ID, e.g. "
                        "'00000000-0000-0000-0000-000000000000', or a domain such as "
                        "contoso.onmicrosoft.com");
        } else {
            r = store_string(ld, opt, base, lower, len);
        }
        free(lower);
        return r;
    }

    case CONF_GUID: {
        if (!crd_guid_is_valid(value, len)) {
            return fail(p, "not a GUID; copy the Application (client) ID from the app "
                           "registration's overview, e.g. '00000000-0000-0000-0000-000000000000'");
        }
        int r = store_string(ld, opt, base, value, len);
        if (r == 0) {
            conf_lowercase(*(char **)(void *)((char *)base + opt->offset));
        }
        return r;
    }

    case CONF_BOOL: {
        bool b = false;
        if (parse_bool(value, &b) < 0) {
            return fail(p, "not a boolean; write on or off (also true/false, yes/no, 1/0)");
        }
        memcpy((char *)base + opt->offset, &b, sizeof(b));
        return 0;
    }

    case CONF_UNSIGNED:
    case CONF_SIZE:
    case CONF_SECONDS:
    case CONF_MINUTES:
        return parse_ranged(opt, value, base, p);

    case CONF_ENUM: {
        for (size_t i = 0; i < opt->n_names; i++) {
            if (strcasecmp(value, opt->names[i]) == 0) {
                store_int(opt, base, (int)i);
                return 0;
            }
        }
        char list[256];
        join_names(opt->names, opt->n_names, list, sizeof(list));
        const char *guess = conf_closest(value, opt->names, opt->n_names);
        if (guess != NULL) {
            return fail(p, "unknown value; did you mean '%s'? Use %s", guess, list);
        }
        return fail(p, "unknown value; use %s", list);
    }

    case CONF_LOG_LEVEL: {
        enum crd_log_level level = CRD_LOG_INFO;
        char *lower = strdup(value);
        if (lower == NULL) {
            ld->oom = true;
            return -ENOMEM;
        }
        conf_lowercase(lower);
        int r = crd_log_level_from_string(lower, &level);
        free(lower);
        if (r < 0) {
            return fail(p, "unknown log level; use error, warning, notice, info or debug");
        }
        store_int(opt, base, (int)level);
        return 0;
    }

    case CONF_LOG_DEBUG:
        return parse_log_debug(ld, opt, value, base, p);

    case CONF_ADDRESS: {
        const char *address = value;
        size_t address_len = len;
        if (len >= 2 && value[0] == '[' && value[len - 1] == ']') {
            address++;
            address_len -= 2;
        }
        char buf[INET6_ADDRSTRLEN + 1];
        unsigned char scratch[sizeof(struct in6_addr)];
        if (address_len >= sizeof(buf)) {
            return fail(p, "not a numeric IP address; use e.g. '::' (all), '0.0.0.0' or "
                           "'127.0.0.1' (host names are not looked up)");
        }
        memcpy(buf, address, address_len);
        buf[address_len] = '\0';
        if (inet_pton(AF_INET6, buf, scratch) != 1 && inet_pton(AF_INET, buf, scratch) != 1) {
            return fail(p, "not a numeric IP address; use e.g. '::' (all), '0.0.0.0' or "
                           "'127.0.0.1' (host names are not looked up)");
        }
        return store_string(ld, opt, base, buf, address_len);
    }

    case CONF_HTTP_PATH:
        return parse_http_path(ld, opt, value, base, p);

    case CONF_CHANGE_TYPE:
        return parse_change_type(ld, opt, value, base, p);
    }
    return fail(p, "internal error: unknown option type");
}

/* ------------------------------------------------------------------------ */
/* Applying the option tables                                               */

static const struct conf_option *find_option(enum conf_kind kind, const char *key,
                                             size_t *ret_index)
{
    for (size_t i = 0; i < section_defs[kind].n_options; i++) {
        if (strcmp(section_defs[kind].options[i].name, key) == 0) {
            *ret_index = i;
            return &section_defs[kind].options[i];
        }
    }
    return NULL;
}

static void report_unknown_key(struct loader *ld, const struct conf_section *s,
                               const struct conf_entry *e)
{
    const char *names[CONF_MAX_OPTIONS];
    size_t n = section_defs[s->kind].n_options;
    for (size_t i = 0; i < n; i++) {
        names[i] = section_defs[s->kind].options[i].name;
    }
    /* The value is never shown: an unknown key may be a secret pasted inline. */
    const char *guess = conf_closest(e->key, names, n);
    const char *owner = section_owning_key(e->key);
    const char *hint = "";
    if (strstr(e->key, "secret") != NULL || strstr(e->key, "password") != NULL ||
        strstr(e->key, "token") != NULL) {
        hint = ". Secrets do not belong in this file: delete the line and put the secret in a "
               "file of mode 0600 named by a *_file key, or in $CREDENTIALS_DIRECTORY";
    }
    if (owner != NULL) {
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, e->line, s->label, e->key, NULL,
                 "unknown key in this section; '%s' belongs in [%s], move it there%s", e->key,
                 owner, hint);
    } else if (guess != NULL) {
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, e->line, s->label, e->key, NULL,
                 "unknown key; did you mean '%s'?%s", guess, hint);
    } else {
        char list[512];
        join_names(names, n, list, sizeof(list));
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, e->line, s->label, e->key, NULL,
                 "unknown key; the keys of this section are %s%s", list, hint);
    }
}

/* Parses one entry, reporting what is wrong with it. */
static void apply_entry(struct loader *ld, struct conf_section *s, void *base,
                        const struct conf_entry *e, const struct conf_option *opt, size_t index)
{
    struct conf_problem p = {{0}};
    int r = parse_option(ld, opt, e->value, base, &p);
    if (r == 0) {
        s->status[index] = CONF_SET;
        return;
    }
    s->status[index] = CONF_INVALID;
    if (r != -EINVAL) {
        return;  /* out of memory, noted in ld */
    }
    if (opt->type == CONF_PROXY_URL) {
        char *shown = url_for_display(e->value);
        if (shown == NULL) {
            ld->oom = true;
            return;
        }
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, e->line, s->label, e->key, shown, "%s", p.text);
        free(shown);
        return;
    }
    add_diag(ld, CRD_DIAGNOSTIC_ERROR, e->line, s->label, e->key, e->value, "%s", p.text);
}

static const char *required_example(const struct conf_option *opt)
{
    if (strcmp(opt->name, "tenant") == 0) {
        return "tenant = contoso.onmicrosoft.com (or the Directory (tenant) ID)";
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

/*
 * Applies one section's table: parses each entry, then fills defaults and
 * reports missing required keys. base is the config, or the sink.
 */
static void apply_section(struct loader *ld, struct conf_section *s, void *base)
{
    enum conf_kind kind = s->kind;
    int sink_type = -1;

    if (kind == CONF_KIND_SINK) {
        /* The type decides which other keys are allowed, so it goes first. */
        const struct conf_entry *e = find_entry(s, "type");
        if (e != NULL) {
            size_t index = 0;
            const struct conf_option *opt = find_option(kind, "type", &index);
            apply_entry(ld, s, base, e, opt, index);
            if (s->status[index] == CONF_SET) {
                sink_type = (int)((struct crd_config_sink *)base)->type;
            }
        }
    }

    for (size_t i = 0; i < s->n_entries; i++) {
        const struct conf_entry *e = &s->entries[i];
        size_t index = 0;
        const struct conf_option *opt = find_option(kind, e->key, &index);
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
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, e->line, s->label, e->key, e->value,
                     "'%s' belongs to sinks of type %s, but this sink has type = %s; remove the "
                     "line",
                     e->key, owner, sink_type_names[sink_type]);
            continue;
        }
        apply_entry(ld, s, base, e, opt, index);
    }

    for (size_t i = 0; i < section_defs[kind].n_options; i++) {
        const struct conf_option *opt = &section_defs[kind].options[i];
        if (s->status[i] != CONF_UNSET) {
            continue;
        }
        if ((opt->flags & CONF_REQUIRED) && s->line == 0) {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, 0, s->label, opt->name, NULL,
                     "required key is missing; add a [%s] section with %s", s->label,
                     required_example(opt));
            continue;
        }
        if (opt->flags & CONF_REQUIRED) {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, s->line, s->label, opt->name, NULL,
                     "required key is missing; add %s", required_example(opt));
            continue;
        }
        if (opt->default_value == NULL) {
            continue;  /* computed in validation */
        }
        if (opt->sink_types != 0 && (sink_type < 0 || (opt->sink_types & (1u << sink_type)) == 0)) {
            continue;
        }
        struct conf_problem p = {{0}};
        if (parse_option(ld, opt, opt->default_value, base, &p) == -EINVAL) {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, 0, s->label, opt->name, opt->default_value,
                     "internal error: the built-in default is invalid: %s", p.text);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Secrets, files and TLS                                                   */

/* The line and shown value of a key for messages: its entry, else the header. */
static unsigned key_line(const struct conf_section *s, const char *key)
{
    const struct conf_entry *e = find_entry(s, key);
    return e != NULL ? e->line : s->line;
}

static const char *key_value(const struct conf_section *s, const char *key)
{
    const struct conf_entry *e = find_entry(s, key);
    return e != NULL ? e->value : NULL;
}

static bool option_set(const struct conf_section *s, const char *key)
{
    size_t index = 0;
    return find_option(s->kind, key, &index) != NULL && s->status[index] == CONF_SET;
}

static bool option_invalid(const struct conf_section *s, const char *key)
{
    size_t index = 0;
    return find_option(s->kind, key, &index) != NULL && s->status[index] == CONF_INVALID;
}

/*
 * Finds the file a secret comes from: the configured path, else the named
 * credential in $CREDENTIALS_DIRECTORY. Returns 1 and a malloc'ed path in
 * *ret_path, or 0 when there is neither (or the key was invalid), or -ENOMEM.
 */
static int locate_credential(struct loader *ld, const char *configured, const char *credential,
                             char **ret_path)
{
    char *path = NULL;
    if (configured != NULL) {
        path = strdup(configured);
    } else if (ld->credentials_directory != NULL) {
        if (asprintf(&path, "%s/%s", ld->credentials_directory, credential) < 0) {
            path = NULL;
        } else if (access(path, F_OK) < 0 && errno == ENOENT) {
            free(path);
            return 0;
        }
    } else {
        return 0;
    }
    if (path == NULL) {
        ld->oom = true;
        return -ENOMEM;
    }
    *ret_path = path;
    return 1;
}

/* "; $CREDENTIALS_DIRECTORY ('...') has no 'NAME'", or "" when it is not set. */
static char *credentials_note(struct loader *ld, const char *credential)
{
    char *note = NULL;
    int r = ld->credentials_directory != NULL
                ? asprintf(&note, " ($CREDENTIALS_DIRECTORY '%s' has no file '%s')",
                           ld->credentials_directory, credential)
                : asprintf(&note, " ($CREDENTIALS_DIRECTORY is not set)");
    if (r < 0) {
        ld->oom = true;
        return NULL;
    }
    return note;
}

/*
 * Reads a secret file and reports problems at the key (its line when the
 * path was configured, else the section header). Returns the secret or NULL.
 */
static struct crd_secret *read_secret(struct loader *ld, const struct conf_section *s,
                                      const char *key, const char *path, bool strip_newline)
{
    struct crd_secret *secret = NULL;
    struct crd_error err = {0};
    bool loose = false;
    const char *value = key_value(s, key);
    unsigned line = key_line(s, key);

    int r = crd_secret_read_file(path, strip_newline, &secret, &loose, &err);
    if (r < 0) {
        const char *fix = "point the key at the file that holds the secret";
        if (r == -ENOENT) {
            fix = "create it, or correct the path";
        } else if (r == -EACCES) {
            fix = "let the service user read it (chown, or systemd LoadCredential=)";
        }
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, line, s->label, key, value, "%s; %s", err.message, fix);
        return NULL;
    }
    if (loose) {
        add_diag(ld, CRD_DIAGNOSTIC_WARNING, line, s->label, key, value,
                 "the group or others have access to the secret file '%s'; run 'chmod 600 %s'",
                 path, path);
    }
    return secret;
}

static void load_client_secret(struct loader *ld)
{
    struct conf_section *s = fixed_section(ld, CONF_KIND_GRAPH);
    struct crd_config *config = ld->config;
    if (option_invalid(s, "client_secret_file")) {
        return;
    }

    char *path = NULL;
    int r = locate_credential(ld, config->graph.client_secret_file, "client_secret", &path);
    if (r < 0) {
        return;
    }
    if (r == 0) {
        char *note = credentials_note(ld, "client_secret");
        if (note != NULL) {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, s->line, s->label, "client_secret_file", NULL,
                     "no client secret%s; set client_secret_file = /etc/callrecd/client_secret "
                     "(mode 0600), or pass the credential 'client_secret' with systemd "
                     "(LoadCredential=client_secret:/etc/callrecd/client_secret)",
                     note);
        }
        free(note);
        return;
    }

    struct crd_secret *secret = read_secret(ld, s, "client_secret_file", path, true);
    if (secret != NULL) {
        const char *bytes = crd_secret_bytes(secret);
        size_t len = crd_secret_len(secret);
        bool clean = len > 0;
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)bytes[i];
            clean = clean && c >= 0x20 && c != 0x7f;
        }
        if (!clean) {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, key_line(s, "client_secret_file"), s->label,
                     "client_secret_file", key_value(s, "client_secret_file"),
                     "the client secret in '%s' is %s; the file must hold the secret's value on "
                     "one line and nothing else",
                     path, len == 0 ? "empty" : "not on one line (or has control characters)");
            crd_secret_free(secret);
            secret = NULL;
        }
    }
    config->graph.client_secret = secret;
    free(path);
}

static void load_client_state(struct loader *ld)
{
    struct conf_section *s = fixed_section(ld, CONF_KIND_SUBSCRIPTION);
    struct crd_config *config = ld->config;
    if (option_invalid(s, "client_state_file")) {
        return;
    }

    char *path = NULL;
    int r = locate_credential(ld, config->subscription.client_state_file, "client_state", &path);
    if (r <= 0) {
        return;  /* none: the daemon generates one and keeps it in the store */
    }
    struct crd_secret *secret = read_secret(ld, s, "client_state_file", path, true);
    if (secret != NULL) {
        const char *bytes = crd_secret_bytes(secret);
        size_t len = crd_secret_len(secret);
        if (len == 0 || len > CONF_CLIENT_STATE_MAX || !conf_is_token(bytes, len)) {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, key_line(s, "client_state_file"), s->label,
                     "client_state_file", key_value(s, "client_state_file"),
                     "the client state in '%s' must be 1 to %d printable ASCII characters without "
                     "spaces; write such a value into the file, or remove the key to let callrecd "
                     "generate one",
                     path, CONF_CLIENT_STATE_MAX);
            crd_secret_free(secret);
            secret = NULL;
        }
    }
    config->subscription.client_state = secret;
    free(path);
}

/* Reads a small public file (a certificate). Returns 0, or -errno with *ret_why set. */
static int read_text_file(const char *path, size_t max, char **ret_text, const char **ret_why)
{
    int r = 0;
    char *text = NULL;
    size_t used = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        r = -errno;
        *ret_why = strerror(errno);
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        r = -EINVAL;
        *ret_why = "not a regular file";
        goto out;
    }
    text = malloc(max + 1);
    if (text == NULL) {
        r = -ENOMEM;
        *ret_why = "out of memory";
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, text + used, max + 1 - used);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            r = -errno;
            *ret_why = strerror(errno);
            goto out;
        }
        if (n == 0) {
            break;
        }
        used += (size_t)n;
        if (used > max) {
            r = -EFBIG;
            *ret_why = "the file is too large";
            goto out;
        }
    }
    text[used] = '\0';
    *ret_text = text;
    text = NULL;
out:
    free(text);
    if (fd >= 0) {
        close(fd);
    }
    return r;
}

/* A PEM password callback that never prompts: an encrypted key is an error, not a question. */
static int no_password(char *buf, int size, int rwflag, void *userdata)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)userdata;
    return -1;
}

/*
 * Checks with OpenSSL that the certificate is PEM X.509, the key a PEM
 * private key, and that they belong together. Messages name the files,
 * never the key's bytes.
 */
static void check_tls_pair(struct loader *ld, const struct conf_section *s, const char *cert_path,
                           const char *key_path)
{
    const struct crd_config *config = ld->config;
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    BIO *bio = NULL;

    bio = BIO_new_mem_buf(config->listener.tls_certificate, -1);
    if (bio == NULL) {
        ld->oom = true;
        goto out;
    }
    cert = PEM_read_bio_X509(bio, NULL, no_password, NULL);
    BIO_free(bio);
    bio = NULL;
    if (cert == NULL) {
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, key_line(s, "tls_certificate"), s->label,
                 "tls_certificate", key_value(s, "tls_certificate"),
                 "'%s' holds no PEM X.509 certificate (-----BEGIN CERTIFICATE-----); name the PEM "
                 "certificate chain, or convert a DER file with 'openssl x509 -inform der -in "
                 "FILE -out FILE.pem'",
                 cert_path);
    } else if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0) {
        add_diag(ld, CRD_DIAGNOSTIC_WARNING, key_line(s, "tls_certificate"), s->label,
                 "tls_certificate", key_value(s, "tls_certificate"),
                 "the certificate in '%s' has expired, so Microsoft Graph will not deliver "
                 "notifications; renew it",
                 cert_path);
    }

    const struct crd_secret *secret = config->listener.tls_key;
    bio = BIO_new_mem_buf(crd_secret_bytes(secret), (int)crd_secret_len(secret));
    if (bio == NULL) {
        ld->oom = true;
        goto out;
    }
    key = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL);
    if (key == NULL) {
        const char *bytes = crd_secret_bytes(secret);
        if (strstr(bytes, "ENCRYPTED") != NULL) {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, key_line(s, "tls_key"), s->label, "tls_key",
                     key_value(s, "tls_key"),
                     "the private key in '%s' is encrypted with a passphrase, which callrecd "
                     "cannot ask for; store it decrypted with 'openssl pkey -in KEY -out "
                     "KEY.plain' and chmod 600 the result",
                     key_path);
        } else {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, key_line(s, "tls_key"), s->label, "tls_key",
                     key_value(s, "tls_key"),
                     "'%s' holds no PEM private key (-----BEGIN PRIVATE KEY-----); name the key "
                     "file that belongs to the certificate",
                     key_path);
        }
        goto out;
    }

    if (cert != NULL && X509_check_private_key(cert, key) != 1) {
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, key_line(s, "tls_key"), s->label, "tls_key",
                 key_value(s, "tls_key"),
                 "the private key in '%s' does not match the certificate in '%s'; use the key "
                 "the certificate was issued for (compare 'openssl x509 -noout -pubkey -in CERT' "
                 "with 'openssl pkey -pubout -in KEY')",
                 key_path, cert_path);
    }

out:
    BIO_free(bio);
    EVP_PKEY_free(key);
    X509_free(cert);
    ERR_clear_error();
}

static void load_tls(struct loader *ld)
{
    struct conf_section *s = fixed_section(ld, CONF_KIND_LISTENER);
    struct crd_config *config = ld->config;
    char *cert_path = NULL;
    char *key_path = NULL;

    if (option_invalid(s, "tls")) {
        return;  /* already reported; whether TLS material is needed is unknown */
    }
    if (!config->listener.tls) {
        static const char *const ignored[] = {"tls_certificate", "tls_key"};
        for (size_t i = 0; i < ARRAY_SIZE(ignored); i++) {
            if (option_set(s, ignored[i])) {
                add_diag(ld, CRD_DIAGNOSTIC_WARNING, key_line(s, ignored[i]), s->label,
                         ignored[i], key_value(s, ignored[i]),
                         "ignored because tls is off; remove the line, or set tls = on");
            }
        }
        return;
    }
    if (option_invalid(s, "tls_certificate") || option_invalid(s, "tls_key")) {
        return;
    }

    int r = locate_credential(ld, config->listener.tls_certificate_file, "tls_certificate",
                              &cert_path);
    if (r == 0) {
        char *note = credentials_note(ld, "tls_certificate");
        if (note != NULL) {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, s->line, s->label, "tls_certificate", NULL,
                     "tls is on but there is no certificate%s; set tls_certificate = "
                     "/etc/callrecd/tls/fullchain.pem, pass the credential 'tls_certificate' "
                     "with systemd LoadCredential=, or set tls = off behind a TLS-terminating "
                     "proxy",
                     note);
        }
        free(note);
    }
    int k = locate_credential(ld, config->listener.tls_key_file, "tls_key", &key_path);
    if (k == 0) {
        char *note = credentials_note(ld, "tls_key");
        if (note != NULL) {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, s->line, s->label, "tls_key", NULL,
                     "tls is on but there is no private key%s; set tls_key = "
                     "/etc/callrecd/tls/privkey.pem (mode 0600), pass the credential 'tls_key' "
                     "with systemd LoadCredential=, or set tls = off behind a TLS-terminating "
                     "proxy",
                     note);
        }
        free(note);
    }

    bool have_cert = false;
    if (r > 0) {
        const char *why = NULL;
        char *text = NULL;
        int rr = read_text_file(cert_path, CONF_MAX_CERT_SIZE, &text, &why);
        if (rr < 0) {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, key_line(s, "tls_certificate"), s->label,
                     "tls_certificate", key_value(s, "tls_certificate"),
                     "cannot read the certificate '%s': %s; %s", cert_path, why,
                     rr == -ENOENT ? "create it, or correct the path"
                                   : "name a readable PEM certificate file");
        } else {
            config->listener.tls_certificate = text;
            have_cert = true;
            if (config->listener.tls_certificate_file == NULL) {
                config->listener.tls_certificate_file = cert_path;
                cert_path = NULL;
            }
        }
    }
    if (k > 0) {
        config->listener.tls_key = read_secret(ld, s, "tls_key", key_path, false);
    }
    if (have_cert && config->listener.tls_key != NULL) {
        check_tls_pair(ld, s,
                       cert_path != NULL ? cert_path : config->listener.tls_certificate_file,
                       key_path);
    }
    free(cert_path);
    free(key_path);
}

/* ------------------------------------------------------------------------ */
/* Checks across keys                                                       */

static void validate_graph(struct loader *ld)
{
    struct conf_section *s = fixed_section(ld, CONF_KIND_GRAPH);
    struct crd_config *config = ld->config;

    if (option_set(s, "cloud") && config->graph.cloud == CRD_CLOUD_CHINA) {
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, key_line(s, "cloud"), s->label, "cloud",
                 key_value(s, "cloud"),
                 "the China (21Vianet) cloud has no call records API; use global, usgov or "
                 "usgovdod");
    } else if (!option_invalid(s, "cloud")) {
        const char *login = cloud_endpoints[config->graph.cloud].login;
        const char *graph = cloud_endpoints[config->graph.cloud].graph;
        if (config->graph.login_url == NULL && !option_invalid(s, "login_url")) {
            config->graph.login_url = strdup(login);
            ld->oom = ld->oom || config->graph.login_url == NULL;
        }
        if (config->graph.graph_url == NULL && !option_invalid(s, "graph_url")) {
            config->graph.graph_url = strdup(graph);
            ld->oom = ld->oom || config->graph.graph_url == NULL;
        }
    }

    if (config->graph.ca_file != NULL) {
        const char *path = config->graph.ca_file;
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        struct stat st;
        if (fd < 0) {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, key_line(s, "ca_file"), s->label, "ca_file", path,
                     "cannot open the CA file: %s; %s", strerror(errno),
                     errno == ENOENT ? "correct the path, or remove the key to use the system "
                                       "trust store"
                                     : "let the service user read it");
        } else if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, key_line(s, "ca_file"), s->label, "ca_file", path,
                     "not a regular file; name a PEM CA bundle file");
        }
        if (fd >= 0) {
            close(fd);
        }
    }

    load_client_secret(ld);
}

static void validate_listener(struct loader *ld)
{
    struct conf_section *s = fixed_section(ld, CONF_KIND_LISTENER);
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
                add_diag(ld, CRD_DIAGNOSTIC_ERROR, key_line(s, keys[i]), s->label, keys[i],
                         paths[i], "%s is served by callrecd itself; choose another path",
                         reserved[j]);
            }
        }
    }
    if (paths[0] != NULL && paths[1] != NULL && strcmp(paths[0], paths[1]) == 0) {
        add_diag(ld, CRD_DIAGNOSTIC_ERROR, key_line(s, "lifecycle_path"), s->label,
                 "lifecycle_path", paths[1],
                 "the same as notification_path; give the two kinds of notification different "
                 "paths, e.g. /notify and /lifecycle");
    }

    load_tls(ld);
}

static void validate_subscription(struct loader *ld)
{
    struct conf_section *s = fixed_section(ld, CONF_KIND_SUBSCRIPTION);
    struct crd_config *config = ld->config;

    if (!option_invalid(s, "lifetime") && !option_invalid(s, "renew_before")) {
        unsigned lifetime = config->subscription.lifetime_min;
        if (!option_set(s, "renew_before")) {
            config->subscription.renew_before_min = lifetime / 4;
        } else if (config->subscription.renew_before_min >= lifetime) {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, key_line(s, "renew_before"), s->label,
                     "renew_before", key_value(s, "renew_before"),
                     "must be shorter than lifetime (%u minutes), or the subscription is renewed "
                     "all the time; use e.g. %u (a quarter of the lifetime, the default)",
                     lifetime, lifetime / 4);
        }
    }

    load_client_state(ld);
}

static void validate_store(struct loader *ld)
{
    struct conf_section *s = fixed_section(ld, CONF_KIND_STORE);
    struct crd_config *config = ld->config;
    if (config->store.state_directory != NULL || option_invalid(s, "state_directory")) {
        return;
    }

    const char *dir = CONF_DEFAULT_STATE_DIRECTORY;
    size_t len = strlen(dir);
    if (ld->state_directory != NULL) {
        /* systemd joins several StateDirectory= entries with ':'; ours is the first. */
        dir = ld->state_directory;
        len = strcspn(dir, ":");
        if (dir[0] != '/') {
            add_diag(ld, CRD_DIAGNOSTIC_ERROR, s->line, s->label, "state_directory", NULL,
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
        if (!option_set(s, "type") || sink->type != CRD_SINK_FILE) {
            continue;
        }
        if (sink->path == NULL) {
            if (!option_invalid(s, "path")) {
                add_diag(ld, CRD_DIAGNOSTIC_ERROR, s->line, s->label, "path", NULL,
                         "a sink of type file needs a path; add path = "
                         "/var/lib/callrecd/callrecords.jsonl (an absolute path)");
            }
            continue;
        }
        for (size_t j = 0; j < i; j++) {
            const struct conf_section *o = &ld->sections[j];
            if (o->kind != CONF_KIND_SINK || !option_set(o, "type")) {
                continue;
            }
            const struct crd_config_sink *other = &config->sinks[o->sink_index];
            if (other->type == CRD_SINK_FILE && other->path != NULL &&
                strcmp(other->path, sink->path) == 0) {
                add_diag(ld, CRD_DIAGNOSTIC_ERROR, key_line(s, "path"), s->label, "path",
                         sink->path,
                         "[sink %s] on line %u writes to the same file; give each file sink its "
                         "own path",
                         other->name, other->line);
            }
        }
    }

    if (n_sinks == 0) {
        add_diag(ld, CRD_DIAGNOSTIC_WARNING, 0, NULL, NULL, NULL,
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
        if (add_section(&ld, (enum conf_kind)k, section_defs[k].name, 0) == NULL) {
            r = -ENOMEM;
            goto out;
        }
    }

    r = read_file(&ld);
    if (r < 0) {
        goto out;
    }
    if (setup_sinks(&ld) < 0) {
        r = -ENOMEM;
        goto out;
    }

    for (size_t i = 0; i < ld.n_sections; i++) {
        struct conf_section *s = &ld.sections[i];
        void *base = s->kind == CONF_KIND_SINK ? (void *)&ld.config->sinks[s->sink_index]
                                               : (void *)ld.config;
        apply_section(&ld, s, base);
    }

    validate_graph(&ld);
    validate_listener(&ld);
    validate_subscription(&ld);
    validate_store(&ld);
    validate_sinks(&ld);

    if (ld.oom) {
        r = -ENOMEM;
    } else if (ld.n_errors > 0) {
        r = -EINVAL;
    }

out:
    sort_diagnostics(&ld);
    if (r == 0) {
        *ret_config = ld.config;
        ld.config = NULL;
    }
    crd_config_free(ld.config);
    for (size_t i = 0; i < ld.n_sections; i++) {
        section_free(&ld.sections[i]);
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

    free(config->graph.tenant);
    free(config->graph.client_id);
    free(config->graph.client_secret_file);
    crd_secret_free(config->graph.client_secret);
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

    free(config->subscription.resource);
    free(config->subscription.change_type);
    free(config->subscription.client_state_file);
    crd_secret_free(config->subscription.client_state);

    free(config->store.state_directory);

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
