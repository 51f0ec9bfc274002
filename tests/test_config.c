/* SPDX-License-Identifier: MIT */
/*
 * Tests of the configuration loader (lib/conf*.c): a table of invalid files,
 * each of which must fail with a diagnostic on the right line, section and
 * key; valid files with their defaults and values; secrets from files and from $CREDENTIALS_DIRECTORY;
 * TLS material made here with OpenSSL; [tenant NAME] sections; and the shipped example file.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "conf.h"
#include "harness.h"
#include "secret.h"

/* Recognisable, so a test can prove that it appears in no message. */
#define TEST_SECRET "Zq7-SECRET-VALUE~do.not.print_91x"
#define TEST_CLIENT_ID "6f1e2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b"

/* Lines 1 to 4 */
#define GRAPH                                                                                      \
    "[graph]\n"                                                                                    \
    "tenant = contoso.onmicrosoft.com\n"                                                           \
    "client_id = " TEST_CLIENT_ID "\n"                                                             \
    "client_secret_file = @SECRET@\n"
/* Lines 5 to 7 after GRAPH */
#define SINK                                                                                       \
    "[sink archive]\n"                                                                             \
    "type = file\n"                                                                                \
    "path = /var/lib/callrecd/records.jsonl\n"
/* Lines 8 to 10 after GRAPH SINK; keys appended to BASE land in [listener] from line 11 */
#define LISTENER                                                                                   \
    "[listener]\n"                                                                                 \
    "tls = off\n"                                                                                  \
    "public_url = https://callrecd.example.com\n"
#define BASE GRAPH SINK LISTENER

#define TENANT_A_ID "2a37c3b7-f073-59a1-b249-42c4e33881c2"
#define TENANT_B_ID "9c1d4e5f-7a8b-4c9d-8e0f-1a2b3c4d5e6f"
/* Lines 1 to 8: two tenants that share the secret file */
#define TENANTS                                                                                    \
    "[tenant contoso]\n"                                                                           \
    "tenant = " TENANT_A_ID "\n"                                                                   \
    "client_id = " TEST_CLIENT_ID "\n"                                                             \
    "client_secret_file = @SECRET@\n"                                                              \
    "[tenant fabrikam]\n"                                                                          \
    "tenant = " TENANT_B_ID "\n"                                                                   \
    "client_id = " TEST_CLIENT_ID "\n"                                                             \
    "client_secret_file = @SECRET@\n"
/* Sink on lines 9 to 11, listener on 12 to 14. Keys appended land in [listener] from line 15 */
#define MULTI TENANTS SINK LISTENER

static char *tmpdir;
static char *secret_path;

static void setup(void)
{
    tmpdir = crd_test_make_tmpdir("test_config");
    secret_path = crd_test_write_file(tmpdir, "client_secret", TEST_SECRET "\n", 0600);
}

static void teardown(void)
{
    crd_test_remove_tree(tmpdir);
    free(secret_path);
    free(tmpdir);
    secret_path = NULL;
    tmpdir = NULL;
}

/* Replaces each "@SECRET@" with the secret file's path and "@DIR@" with the temporary dir. */
static char *expand(const char *text)
{
    size_t cap = strlen(text) + 1;
    size_t extra = strlen(secret_path) + strlen(tmpdir);
    for (const char *p = text; (p = strchr(p, '@')) != NULL; p++) {
        cap += extra;
    }
    char *out = malloc(cap);
    ck_assert_ptr_nonnull(out);
    size_t used = 0;
    while (*text != '\0') {
        const char *with = NULL;
        size_t skip = 0;
        if (strncmp(text, "@SECRET@", 8) == 0) {
            with = secret_path;
            skip = 8;
        } else if (strncmp(text, "@DIR@", 5) == 0) {
            with = tmpdir;
            skip = 5;
        }
        if (with != NULL) {
            memcpy(out + used, with, strlen(with));
            used += strlen(with);
            text += skip;
        } else {
            out[used++] = *text++;
        }
    }
    out[used] = '\0';
    return out;
}

/* Writes the expanded text as DIR/callrecd.conf and returns its path. */
static char *write_config(const char *text)
{
    char *expanded = expand(text);
    char *path = crd_test_write_file(tmpdir, "callrecd.conf", expanded, 0644);
    free(expanded);
    return path;
}

/* Every message joined, for failure output. */
static char *all_messages(const struct crd_diagnostics *diag)
{
    size_t len = 1;
    for (size_t i = 0; i < diag->n_items; i++) {
        len += strlen(diag->items[i].message) + 16;
    }
    char *out = calloc(1, len);
    ck_assert_ptr_nonnull(out);
    for (size_t i = 0; i < diag->n_items; i++) {
        bool error = diag->items[i].severity == CRD_DIAGNOSTIC_ERROR;
        strncat(out, error ? "\n  error: " : "\n  warning: ", len - strlen(out) - 1);
        strncat(out, diag->items[i].message, len - strlen(out) - 1);
    }
    return out;
}

static bool same_or_null(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static const struct crd_diagnostic *find_diag(const struct crd_diagnostics *diag,
                                              enum crd_diagnostic_severity severity, unsigned line,
                                              const char *section, const char *key,
                                              const char *needle)
{
    for (size_t i = 0; i < diag->n_items; i++) {
        const struct crd_diagnostic *d = &diag->items[i];
        if (d->severity == severity && d->line == line && same_or_null(d->section, section) &&
            same_or_null(d->key, key) && strstr(d->message, needle) != NULL) {
            return d;
        }
    }
    return NULL;
}

/* Fails the test, listing every message, unless diag has the described diagnostic. */
static void assert_diag(const struct crd_diagnostics *diag, enum crd_diagnostic_severity severity,
                        unsigned line, const char *section, const char *key, const char *needle)
{
    if (find_diag(diag, severity, line, section, key, needle) != NULL) {
        return;
    }
    char *all = all_messages(diag);
    ck_abort_msg("no %s on line %u [%s] %s containing \"%s\"; got:%s",
                 severity == CRD_DIAGNOSTIC_ERROR ? "error" : "warning", line,
                 section != NULL ? section : "-", key != NULL ? key : "-", needle, all);
    free(all);
}

static bool has_key(const struct crd_diagnostics *diag, const char *key, const char *needle)
{
    for (size_t i = 0; i < diag->n_items; i++) {
        const struct crd_diagnostic *d = &diag->items[i];
        if (same_or_null(d->key, key) && strstr(d->message, needle) != NULL) {
            return true;
        }
    }
    return false;
}

static void assert_no_secret(const struct crd_diagnostics *diag)
{
    for (size_t i = 0; i < diag->n_items; i++) {
        ck_assert_msg(strstr(diag->items[i].message, TEST_SECRET) == NULL &&
                          strstr(diag->items[i].message, "SECRET-VALUE") == NULL,
                      "a message shows the secret: %s", diag->items[i].message);
    }
}

/* Loads text with the given credentials directory and expects success without warnings. */
static struct crd_config *load_ok(const char *text, const struct crd_config_env *env)
{
    char *path = write_config(text);
    struct crd_diagnostics diag = {0};
    struct crd_config *config = NULL;
    int r = crd_config_load(path, env, &config, &diag);
    char *all = all_messages(&diag);
    ck_assert_msg(r == 0, "load failed with %d:%s", r, all);
    ck_assert_msg(diag.n_items == 0, "unexpected diagnostics:%s", all);
    ck_assert_ptr_nonnull(config);
    ck_assert_str_eq(config->path, path);
    free(all);
    crd_diagnostics_clear(&diag);
    free(path);
    return config;
}

/* Loads text and expects -EINVAL; the caller clears diag. */
static void load_invalid(const char *text, const struct crd_config_env *env,
                         struct crd_diagnostics *diag)
{
    char *path = write_config(text);
    struct crd_config *config = NULL;
    int r = crd_config_load(path, env, &config, diag);
    char *all = all_messages(diag);
    ck_assert_msg(r == -EINVAL, "load returned %d, not -EINVAL:%s", r, all);
    ck_assert_ptr_null(config);
    ck_assert_msg(diag->n_errors > 0, "no error reported");
    free(all);
    free(path);
    assert_no_secret(diag);
}

/* ------------------------------------------------------------------------ */
/* Invalid files                                                            */

struct invalid_case {
    const char *name;
    const char *text;
    unsigned line;
    const char *section;
    const char *key;
    const char *needle;  /* part of the message */
    size_t n_errors;
};

static const struct invalid_case invalid_cases[] = {
    {"unknown key with a suggestion", BASE "[fetch]\nworkerz = 4\n", 12, "fetch", "workerz",
     "unknown key; did you mean 'workers'?", 1},
    {"inline secret, never shown", GRAPH "client_secret = " TEST_SECRET "\n" SINK LISTENER, 5,
     "graph", "client_secret", "did you mean 'client_secret_file'?", 1},
    {"key of another section", GRAPH "port = 8443\n" SINK LISTENER, 5, "graph", "port",
     "'port' belongs in [listener]", 1},
    {"coalescing window too long", BASE "[fetch]\ncoalesce_window = 20min\n", 12, "fetch",
     "coalesce_window", "20min", 1},
    {"unknown key without a suggestion", BASE "[reconcile]\nbanana = 4\n", 12, "reconcile",
     "banana", "the keys of this section are interval, window or startup_max", 1},
    {"unknown section with a suggestion", BASE "[listner]\nport = 1\nwhatever = 2\n", 11,
     "listner", NULL, "unknown section; did you mean [listener]?", 1},
    {"unknown section", BASE "[zzz]\n", 11, "zzz", NULL, "the sections are [graph]", 1},
    {"missing required key", "[graph]\ntenant = contoso.onmicrosoft.com\n"
                             "client_secret_file = @SECRET@\n" SINK LISTENER,
     1, "graph", "client_id", "required key is missing; add client_id = ", 1},
    {"missing required section", GRAPH SINK, 0, "listener", "public_url",
     "add a [listener] section with public_url = ", 3 /* and no TLS certificate or key */},
    {"missing sink type", BASE "[sink x]\npath = /var/log/x.jsonl\n", 11, "sink x", "type",
     "required key is missing", 1},
    {"file sink without a path", BASE "[sink x]\ntype = file\n", 11, "sink x", "path",
     "a sink of type file needs a path", 1},
    {"two file sinks on one file",
     BASE "[sink copy]\ntype = file\npath = /var/lib/callrecd/records.jsonl\n", 13, "sink copy",
     "path", "[sink archive] on line 5 writes to the same file", 1},
    {"bad GUID", "[graph]\ntenant = contoso.onmicrosoft.com\nclient_id = 6f1e2a3b-4c5d-4e6f\n"
                 "client_secret_file = @SECRET@\n" SINK LISTENER,
     3, "graph", "client_id", "not a GUID", 1},
    {"multi-tenant alias", "[graph]\ntenant = common\nclient_id = " TEST_CLIENT_ID "\n"
                           "client_secret_file = @SECRET@\n" SINK LISTENER,
     2, "graph", "tenant", "names no single tenant", 1},
    {"bad tenant", "[graph]\ntenant = contoso\nclient_id = " TEST_CLIENT_ID "\n"
                   "client_secret_file = @SECRET@\n" SINK LISTENER,
     2, "graph", "tenant", "neither a GUID nor a domain name", 1},
    {"port zero", BASE "port = 0\n", 11, "listener", "port", "out of range", 1},
    {"port too large", BASE "port = 70000\n", 11, "listener", "port", "from 1 to 65535", 1},
    {"port not a number", BASE "port = https\n", 11, "listener", "port", "not a number", 1},
    {"negative number", BASE "threads = -1\n", 11, "listener", "threads", "not a number", 1},
    {"bad enum", BASE "[store]\ndurability = quick\n", 12, "store", "durability",
     "unknown value; use process or full", 1},
    {"bad enum with a suggestion", GRAPH "cloud = globl\n" SINK LISTENER, 5, "graph", "cloud",
     "did you mean 'global'?", 1},
    {"bad bool with TLS files",
     GRAPH SINK "[listener]\ntls = 2\npublic_url = https://a.example.com\ntls_key = /x.pem\n", 9,
     "listener", "tls", "not a boolean", 1},
    {"bad bool", GRAPH SINK "[listener]\npublic_url = https://callrecd.example.com\ntls = maybe\n",
     10, "listener", "tls", "not a boolean; write on or off", 1},
    {"bad size suffix", BASE "max_body_size = 2G\n", 11, "listener", "max_body_size",
     "unexpected 'G' after the number", 1},
    {"size suffix KB", BASE "max_body_size = 1KB\n", 11, "listener", "max_body_size",
     "unexpected 'KB'", 1},
    {"size below range", BASE "max_body_size = 100\n", 11, "listener", "max_body_size",
     "out of range; write a size from 1K to 64M", 1},
    {"size above range", BASE "max_body_size = 65M\n", 11, "listener", "max_body_size",
     "out of range", 1},
    {"threads above range", BASE "threads = 65\n", 11, "listener", "threads",
     "from 1 to 64", 1},
    {"timeout below range", BASE "connection_timeout = 0\n", 11, "listener",
     "connection_timeout", "a number of seconds from 1 to 3600", 1},
    {"timeout with a wrong unit", BASE "connection_timeout = 10min\n", 11, "listener",
     "connection_timeout", "unexpected 'min'", 1},
    {"lifetime below range", BASE "[subscription]\nlifetime = 9s\n", 12, "subscription",
     "lifetime", "out of range; write a duration from 10000 ms", 1},
    {"renew_before not below lifetime",
     BASE "[subscription]\nlifetime = 60\nrenew_before = 60\n", 13, "subscription",
     "renew_before", "must be shorter than lifetime (3600 s)", 1},
    {"participant_filter with a resource",
     BASE "[subscription]\nresource = /communications/other\n"
          "participant_filter = 5b2a1e4c-37d2-4c3e-9a61-0f6d8e2b7c41\n",
     13, "subscription", "participant_filter", "cannot be combined with resource", 1},
    {"participant_filter without a GUID",
     BASE "[subscription]\nparticipant_filter = 5b2a1e4c-37d2-4c3e-9a61-0f6d8e2b7c41, alice\n",
     12, "subscription", "participant_filter", "'alice' is not an Entra object id", 1},
    {"relative state_directory", BASE "[store]\nstate_directory = var/lib/callrecd\n", 12,
     "store", "state_directory", "not an absolute path", 1},
    {"duplicate key", BASE "port = 1\nport = 2\n", 12, "listener", "port",
     "duplicate key; 'port' is already set on line 11", 1},
    {"duplicate section", BASE "[graph]\n", 11, "graph", NULL,
     "duplicate section; [graph] already starts on line 1", 1},
    {"duplicate sink name", BASE "[sink archive]\nfsync = record\n", 11, "sink archive", NULL,
     "duplicate sink name; [sink archive] is already on line 5", 1},
    {"sink key of the wrong type", BASE "[sink console]\ntype = stdout\npath = /tmp/x.jsonl\n", 13,
     "sink console", "path",
     "'path' belongs to sinks of type file, but this sink has type = stdout", 1},
    {"sink fsync on stdout", BASE "[sink console]\nfsync = record\ntype = stdout\n", 12,
     "sink console", "fsync", "belongs to sinks of type file", 1},
    {"bad sink type", BASE "[sink x]\ntype = syslog\n", 12, "sink x", "type",
     "use file or stdout", 1},
    {"bad sink name", BASE "[sink bad.name]\ntype = stdout\n", 11, "sink", NULL,
     "invalid sink name", 1},
    {"sink without a name", BASE "[sink]\n", 11, "sink", NULL, "needs a name", 1},
    {"named fixed section", BASE "[store main]\n", 11, "store", NULL, "[store] takes no name", 1},
    {"china cloud", GRAPH "cloud = china\n" SINK LISTENER, 5, "graph", "cloud",
     "the China (21Vianet) cloud has no call records API", 1},
    {"http public_url on a public host",
     GRAPH SINK "[listener]\ntls = off\npublic_url = http://callrecd.example.com\n", 10,
     "listener", "public_url", "plain http is allowed only for a loopback host", 1},
    {"http public_url on a private address",
     GRAPH SINK "[listener]\ntls = off\npublic_url = http://10.0.0.1:8080\n", 10, "listener",
     "public_url", "loopback", 1},
    {"public_url with a query",
     GRAPH SINK "[listener]\ntls = off\npublic_url = https://callrecd.example.com/?a=1\n", 10,
     "listener", "public_url", "query or fragment", 1},
    {"public_url without a scheme",
     GRAPH SINK "[listener]\ntls = off\npublic_url = callrecd.example.com\n", 10, "listener",
     "public_url", "not an absolute URL", 1},
    {"http graph_url", GRAPH "graph_url = http://graph.example.com\n" SINK LISTENER, 5, "graph",
     "graph_url", "loopback", 1},
    {"proxy with a bad scheme, password masked",
     GRAPH "proxy = ftp://user:" TEST_SECRET "@proxy.example.com\n" SINK LISTENER, 5, "graph",
     "proxy", "unsupported proxy scheme 'ftp'", 1},
    {"garbage line", BASE "this is garbage\n", 11, "listener", NULL, "cannot parse this line", 1},
    {"secret pasted as a line", BASE TEST_SECRET "\n", 11, "listener", NULL,
     "cannot parse this line", 1},
    {"indented line is no continuation", BASE "port = 8443\n    9443\n", 12, "listener", NULL,
     "cannot parse this line", 1},
    {"key outside of any section", "port = 8443\n" BASE, 1, NULL, "port",
     "put it below the [listener] header", 1},
    {"invalid key name", BASE "max connections = 5\n", 11, "listener", NULL, "invalid key name", 1},
    {"unterminated quote", BASE "address = \"::\n", 11, "listener", "address",
     "does not close it", 1},
    {"header without ']'", BASE "[store\n", 11, NULL, NULL, "without ']'", 1},
    {"text after a header", BASE "[store] # the store\n", 11, NULL, NULL, "text after", 1},
    {"empty header", BASE "[]\n", 11, NULL, NULL, "empty section header", 1},
    {"change type deleted", BASE "[subscription]\nchange_type = updated,deleted\n", 12,
     "subscription", "change_type", "support only the change types created and updated", 1},
    {"unknown change type", BASE "[subscription]\nchange_type = modified\n", 12, "subscription",
     "change_type", "unknown change type 'modified'", 1},
    {"unknown debug subsystem", BASE "[log]\ndebug = graph, stroe\n", 12, "log", "debug",
     "did you mean 'store'?", 1},
    {"bad log level", BASE "[log]\nlevel = verbose\n", 12, "log", "level", "unknown log level",
     1},
    {"equal notification paths", BASE "notification_path = /hook\nlifecycle_path = /hook\n", 12,
     "listener", "lifecycle_path", "the same as notification_path", 1},
    {"reserved path", BASE "notification_path = /metrics\n", 11, "listener",
     "notification_path", "/metrics is served by callrecd itself", 1},
    {"path with a query", BASE "lifecycle_path = /life?x=1\n", 11, "listener", "lifecycle_path",
     "cannot contain '?' or '#'", 1},
    {"path without a slash", BASE "notification_path = notify\n", 11, "listener",
     "notification_path", "must start with '/'", 1},
    {"host name as address", BASE "address = callrecd.example.com\n", 11, "listener", "address",
     "not a numeric IP address", 1},
    {"duration without a known unit", BASE "[fetch]\nretry_base = 5 days\n", 12, "fetch",
     "retry_base", "with a unit, e.g. 500ms", 1},
    {"duration out of range", BASE "[fetch]\nretry_max = 2ms\n", 12, "fetch", "retry_max",
     "out of range", 1},
    {"retry base above max", BASE "[fetch]\nretry_base = 5min\nretry_max = 1min\n", 12, "fetch",
     "retry_base", "is longer than retry_max", 1},
    {"bad fetch workers", BASE "[fetch]\nworkers = 0\n", 12, "fetch", "workers", "from 1 to 64",
     1},
    {"fetch max_attempts not a number", BASE "[fetch]\nmax_attempts = many\n", 12, "fetch",
     "max_attempts", "from 0 to 1000000", 1},
    {"sink max_attempts out of range", BASE "[sink extra]\ntype = stdout\nmax_attempts = 2000000\n",
     13, "sink extra", "max_attempts", "from 0 to 1000000", 1},
    {"record budget out of range", BASE "[fetch]\nrecord_requests_per_20s = 20000\n", 12, "fetch",
     "record_requests_per_20s", "from 0 to 15000", 1},
    {"outage percent above 100", BASE "[fetch]\noutage_failure_percent = 101\n", 12, "fetch",
     "outage_failure_percent", "from 1 to 100", 1},
    {"rate window too short", BASE "[fetch]\nrate_window = 10ms\n", 12, "fetch", "rate_window",
     "out of range", 1},
    {"reconcile window past retention", BASE "[reconcile]\nwindow = 800h\n", 12, "reconcile",
     "window", "out of range", 1},
    {"unknown reconcile key", BASE "[reconcile]\nintervall = 5min\n", 12, "reconcile",
     "intervall", "did you mean 'interval'", 1},
    {"missing secret file", "[graph]\ntenant = contoso.onmicrosoft.com\nclient_id = " TEST_CLIENT_ID
                            "\nclient_secret_file = @DIR@/missing\n" SINK LISTENER,
     4, "graph", "client_secret_file", "No such file or directory; create it", 1},
    {"no secret at all", "[graph]\ntenant = contoso.onmicrosoft.com\nclient_id = " TEST_CLIENT_ID
                         "\n" SINK LISTENER,
     1, "graph", "client_secret_file", "or pass the credential 'client_secret'", 1},
    {"missing CA file", GRAPH "ca_file = @DIR@/missing.pem\n" SINK LISTENER, 5, "graph",
     "ca_file", "cannot open the CA file", 1},
    {"tls on without a certificate", GRAPH SINK "[listener]\npublic_url = https://a.example.com\n",
     8, "listener", "tls_certificate", "tls is on but there is no certificate", 2},
    {"missing client state file", BASE "[subscription]\nclient_state_file = @DIR@/missing\n", 12,
     "subscription", "client_state_file", "No such file or directory", 1},
    {"tenant section with a domain name",
     "[tenant contoso]\ntenant = contoso.onmicrosoft.com\nclient_id = " TEST_CLIENT_ID "\n"
     "client_secret_file = @SECRET@\n" SINK LISTENER,
     2, "tenant contoso", "tenant",
     "a domain name; a [tenant NAME] section needs the Directory (tenant) ID, a GUID, because "
     "notifications name the tenant by its directory id", 1},
    {"tenant section with a multi-tenant alias",
     "[tenant contoso]\ntenant = organizations\nclient_id = " TEST_CLIENT_ID "\n"
     "client_secret_file = @SECRET@\n" SINK LISTENER,
     2, "tenant contoso", "tenant", "not a GUID; a [tenant NAME] section needs", 1},
    {"tenant section without client_id",
     "[tenant contoso]\ntenant = " TENANT_A_ID "\nclient_secret_file = @SECRET@\n" SINK LISTENER,
     1, "tenant contoso", "client_id", "required key is missing; add client_id = ", 1},
    {"tenant section without tenant", MULTI "[tenant other]\nclient_id = " TEST_CLIENT_ID "\n"
                                      "client_secret_file = @SECRET@\n",
     15, "tenant other", "tenant", "add tenant = <Directory (tenant) ID, a GUID>", 1},
    {"tenant client_id not a GUID",
     "[tenant contoso]\ntenant = " TENANT_A_ID "\nclient_id = app\n"
     "client_secret_file = @SECRET@\n" SINK LISTENER,
     3, "tenant contoso", "client_id", "not a GUID; copy the Application (client) ID", 1},
    {"duplicate tenant name",
     MULTI "[tenant contoso]\ntenant = 0d9c8b7a-6f5e-4d3c-8b2a-1f0e9d8c7b6a\n"
           "client_id = " TEST_CLIENT_ID "\nclient_secret_file = @SECRET@\n",
     15, "tenant contoso", NULL, "duplicate tenant name; [tenant contoso] is already on line 1",
     1},
    {"duplicate tenant GUID",
     MULTI "[tenant northwind]\ntenant = 9C1D4E5F-7A8B-4C9D-8E0F-1A2B3C4D5E6F\n"
           "client_id = " TEST_CLIENT_ID "\nclient_secret_file = @SECRET@\n",
     16, "tenant northwind", "tenant", "the same tenant as [tenant fabrikam] on line 6", 1},
    {"tenant section without a name", MULTI "[tenant]\n", 15, "tenant", NULL,
     "a tenant section needs a name; write it as [tenant NAME]", 1},
    {"bad tenant name", MULTI "[tenant contoso.com]\n", 15, "tenant", NULL,
     "invalid tenant name; use 1 to 64 letters", 1},
    {"tenant name too long",
     MULTI "[tenant a1234567890123456789012345678901234567890123456789012345678901234]\n", 15,
     "tenant", NULL, "invalid tenant name", 1},
    {"graph key in a tenant section",
     MULTI "[tenant other]\ntenant = 0d9c8b7a-6f5e-4d3c-8b2a-1f0e9d8c7b6a\n"
           "client_id = " TEST_CLIENT_ID "\nclient_secret_file = @SECRET@\ncloud = usgov\n",
     19, "tenant other", "cloud", "'cloud' belongs in [graph]", 1},
    {"inline secret in a tenant section",
     MULTI "[tenant other]\ntenant = 0d9c8b7a-6f5e-4d3c-8b2a-1f0e9d8c7b6a\n"
           "client_id = " TEST_CLIENT_ID "\nclient_secret_file = @SECRET@\n"
           "client_secret = " TEST_SECRET "\n",
     19, "tenant other", "client_secret", "Secrets do not belong in this file", 1},
    {"graph tenant beside tenant sections", MULTI "[graph]\ntenant = contoso.onmicrosoft.com\n",
     16, "graph", "tenant",
     "the file has [tenant NAME] sections (the first on line 1), so each tenant's credentials and "
     "subscription keys belong in its own section; move this key into the [tenant NAME] sections",
     1},
    {"subscription client_state_file beside tenant sections",
     MULTI "[subscription]\nclient_state_file = @DIR@/missing\n", 16, "subscription",
     "client_state_file", "move this key into the [tenant NAME] sections", 1},
    {"tenant section without a secret",
     "[tenant contoso]\ntenant = " TENANT_A_ID "\nclient_id = " TEST_CLIENT_ID "\n" SINK LISTENER,
     1, "tenant contoso", "client_secret_file",
     "no client secret ($CREDENTIALS_DIRECTORY is not set); set client_secret_file = "
     "/etc/callrecd/client_secret.contoso (mode 0600), or pass the credential "
     "'client_secret.contoso' with systemd "
     "(LoadCredential=client_secret.contoso:/etc/callrecd/client_secret.contoso)", 1},
    {"tenant participant_filter without a GUID",
     MULTI "[tenant other]\ntenant = 0d9c8b7a-6f5e-4d3c-8b2a-1f0e9d8c7b6a\n"
           "client_id = " TEST_CLIENT_ID "\nclient_secret_file = @SECRET@\n"
           "participant_filter = bob\n",
     19, "tenant other", "participant_filter", "'bob' is not an Entra object id", 1},
};

START_TEST(test_invalid)
{
    const struct invalid_case *c = &invalid_cases[_i];
    struct crd_diagnostics diag = {0};
    load_invalid(c->text, NULL, &diag);

    char *all = all_messages(&diag);
    ck_assert_msg(diag.n_errors == c->n_errors, "case '%s': %zu errors, expected %zu:%s", c->name,
                  diag.n_errors, c->n_errors, all);
    free(all);
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, c->line, c->section, c->key, c->needle);

    /* Every message starts with the file name. */
    char *path = NULL;
    ck_assert_int_ge(asprintf(&path, "%s/callrecd.conf", tmpdir), 0);
    for (size_t i = 0; i < diag.n_items; i++) {
        ck_assert_msg(strncmp(diag.items[i].message, path, strlen(path)) == 0, "%s",
                      diag.items[i].message);
    }
    free(path);
    crd_diagnostics_clear(&diag);
}
END_TEST

START_TEST(test_message_format)
{
    struct crd_diagnostics diag = {0};
    load_invalid(BASE "port = 70000\n", NULL, &diag);
    ck_assert_uint_eq(diag.n_items, 1);

    char *expected = NULL;
    ck_assert_int_ge(asprintf(&expected,
                              "%s/callrecd.conf:11: [listener] port = '70000': out of range; "
                              "write a whole number from 1 to 65535",
                              tmpdir),
                     0);
    ck_assert_str_eq(diag.items[0].message, expected);
    ck_assert_str_eq(diag.items[0].section, "listener");
    ck_assert_str_eq(diag.items[0].key, "port");
    ck_assert_uint_eq(diag.items[0].line, 11);
    free(expected);
    crd_diagnostics_clear(&diag);

    /* A missing section: no line, no value. */
    load_invalid(GRAPH LISTENER "[sink x]\n", NULL, &diag);
    ck_assert_uint_eq(diag.n_errors, 1);
    ck_assert_int_ge(asprintf(&expected,
                              "%s/callrecd.conf:8: [sink x] type: required key is missing; add "
                              "type = file (or stdout)",
                              tmpdir),
                     0);
    ck_assert_str_eq(diag.items[0].message, expected);
    free(expected);
    crd_diagnostics_clear(&diag);

    load_invalid(GRAPH SINK, NULL, &diag);
    ck_assert_int_ge(asprintf(&expected,
                              "%s/callrecd.conf: [listener] public_url: required key is missing; "
                              "add a [listener] section with public_url = "
                              "https://callrecd.example.com:8443",
                              tmpdir),
                     0);
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 0, "listener", "public_url", expected);
    free(expected);
    crd_diagnostics_clear(&diag);
}
END_TEST

START_TEST(test_all_errors_reported)
{
    const char *text = "[graph]\n"                                /* 1 */
                       "tenant = not_a_domain\n"                  /* 2 */
                       "client_id = " TEST_CLIENT_ID "\n"         /* 3 */
                       "client_secret_file = @SECRET@\n"          /* 4 */
                       "cloud = mars\n"                           /* 5 */
                       "[listener]\n"                             /* 6 */
                       "tls = off\n"                              /* 7 */
                       "public_url = https://callrecd.example.com\n" /* 8 */
                       "port = 0\n"                               /* 9 */
                       "max_body_size = 1T\n"                     /* 10 */
                       "prot = 1\n"                               /* 11 */
                       "garbage\n"                                /* 12 */
                       "[sink archive]\n"                         /* 13 */
                       "type = stdout\n"                          /* 14 */
                       "path = /var/log/x\n"                      /* 15 */
                       "[subscription]\n"                         /* 16 */
                       "lifetime = 5000\n"                        /* 17 */
                       "[nonsense]\n"                             /* 18 */
                       "[store]\n"                                /* 19 */
                       "state_directory = relative\n";            /* 20 */
    struct crd_diagnostics diag = {0};
    load_invalid(text, NULL, &diag);

    char *all = all_messages(&diag);
    ck_assert_msg(diag.n_errors == 10, "%zu errors:%s", diag.n_errors, all);
    free(all);
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 2, "graph", "tenant", "neither a GUID");
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 5, "graph", "cloud", "unknown value");
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 9, "listener", "port", "out of range");
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 10, "listener", "max_body_size", "unexpected 'T'");
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 11, "listener", "prot", "did you mean 'port'?");
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 12, "listener", NULL, "cannot parse");
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 15, "sink archive", "path", "type file");
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 17, "subscription", "lifetime", "out of range");
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 18, "nonsense", NULL, "unknown section");
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 20, "store", "state_directory", "absolute");

    /* In file order; lines 0 last. */
    for (size_t i = 1; i < diag.n_items; i++) {
        unsigned a = diag.items[i - 1].line == 0 ? ~0u : diag.items[i - 1].line;
        unsigned b = diag.items[i].line == 0 ? ~0u : diag.items[i].line;
        ck_assert_uint_le(a, b);
    }
    crd_diagnostics_clear(&diag);
}
END_TEST

START_TEST(test_missing_file)
{
    struct crd_diagnostics diag = {0};
    struct crd_config *config = NULL;
    char *path = NULL;
    ck_assert_int_ge(asprintf(&path, "%s/absent.conf", tmpdir), 0);
    int r = crd_config_load(path, NULL, &config, &diag);
    ck_assert_int_eq(r, -ENOENT);
    ck_assert_ptr_null(config);
    ck_assert_uint_eq(diag.n_errors, 1);
    ck_assert_uint_eq(diag.items[0].line, 0);
    ck_assert_ptr_nonnull(strstr(diag.items[0].message, "cannot open the configuration file"));
    crd_diagnostics_clear(&diag);

    /* A directory is no configuration file. */
    r = crd_config_load(tmpdir, NULL, &config, &diag);
    ck_assert_int_eq(r, -EISDIR);
    ck_assert_uint_eq(diag.n_errors, 1);
    crd_diagnostics_clear(&diag);
    free(path);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Valid files                                                              */

START_TEST(test_defaults)
{
    struct crd_config *config = load_ok(BASE, NULL);

    ck_assert_str_eq(config->tenants[0].tenant, "contoso.onmicrosoft.com");
    ck_assert_str_eq(config->tenants[0].client_id, TEST_CLIENT_ID);
    ck_assert_str_eq(config->tenants[0].client_secret_file, secret_path);
    ck_assert_str_eq(crd_secret_bytes(config->tenants[0].client_secret), TEST_SECRET);
    ck_assert_uint_eq(crd_secret_len(config->tenants[0].client_secret), strlen(TEST_SECRET));
    ck_assert_int_eq(config->graph.cloud, CRD_CLOUD_GLOBAL);
    ck_assert_str_eq(config->graph.login_url, "https://login.microsoftonline.com");
    ck_assert_str_eq(config->graph.graph_url, "https://graph.microsoft.com");
    ck_assert_ptr_null(config->graph.ca_file);
    ck_assert_ptr_null(config->graph.proxy);

    ck_assert_str_eq(config->listener.address, "::");
    ck_assert_uint_eq(config->listener.port, 8443);
    ck_assert(!config->listener.tls);
    ck_assert_ptr_null(config->listener.tls_certificate_file);
    ck_assert_ptr_null(config->listener.tls_certificate);
    ck_assert_ptr_null(config->listener.tls_key_file);
    ck_assert_ptr_null(config->listener.tls_key);
    ck_assert_str_eq(config->listener.notification_path, "/notify");
    ck_assert_str_eq(config->listener.lifecycle_path, "/lifecycle");
    ck_assert_str_eq(config->listener.public_url, "https://callrecd.example.com");
    ck_assert_uint_eq(config->listener.connection_timeout_s, 10);
    ck_assert_uint_eq(config->listener.max_connections, 512);
    ck_assert_uint_eq(config->listener.max_connections_per_ip, 64);
    ck_assert_uint_eq(config->listener.max_body_size, 1024 * 1024);
    ck_assert_uint_eq(config->listener.max_notifications, 1000);
    ck_assert_uint_eq(config->listener.threads, 4);

    ck_assert_str_eq(config->tenants[0].resource, "/communications/callRecords");
    ck_assert_str_eq(config->subscription.change_type, "updated");
    ck_assert_uint_eq(config->subscription.lifetime_ms, 4230ULL * 60 * 1000);
    ck_assert_uint_eq(config->subscription.renew_before_ms, 4230ULL * 60 * 1000 / 4);
    ck_assert_uint_eq(config->subscription.check_interval_ms, 15ULL * 60 * 1000);
    ck_assert_uint_eq(config->subscription.backfill_margin_ms, 10ULL * 60 * 1000);
    ck_assert_ptr_null(config->tenants[0].participant_filter);
    ck_assert_str_eq(config->tenants[0].resource, "/communications/callRecords");
    ck_assert_ptr_null(config->tenants[0].client_state_file);
    ck_assert_ptr_null(config->tenants[0].client_state);

    ck_assert_str_eq(config->store.state_directory, "/var/lib/callrecd");
    ck_assert_int_eq(config->store.durability, CRD_DURABILITY_PROCESS);
    ck_assert_uint_eq(config->graph.connect_timeout_ms, 10000);
    ck_assert_uint_eq(config->graph.timeout_ms, 60000);
    ck_assert_uint_eq(config->fetch.workers, 4);
    ck_assert_uint_eq(config->fetch.not_found_horizon_ms, 4ULL * 3600 * 1000);
    ck_assert_uint_eq(config->fetch.retry_base_ms, 5000);
    ck_assert_uint_eq(config->fetch.retry_max_ms, 10ULL * 60 * 1000);
    ck_assert_uint_eq(config->fetch.requests_per_window, 1500);
    ck_assert_uint_eq(config->fetch.record_requests_per_window, 40);
    ck_assert_uint_eq(config->fetch.rate_window_ms, 20000);
    ck_assert_uint_eq(config->reconcile.interval_ms, 15ULL * 60 * 1000);
    ck_assert_uint_eq(config->reconcile.window_ms, 3ULL * 3600 * 1000);
    ck_assert_uint_eq(config->reconcile.startup_max_ms, 30ULL * 24 * 3600 * 1000);
    ck_assert_int_eq(config->log.level, CRD_LOG_INFO);
    ck_assert_uint_eq(config->log.debug_mask, 0);

    ck_assert_uint_eq(config->n_sinks, 1);
    ck_assert_str_eq(config->sinks[0].name, "archive");
    ck_assert_int_eq(config->sinks[0].type, CRD_SINK_FILE);
    ck_assert_str_eq(config->sinks[0].path, "/var/lib/callrecd/records.jsonl");
    ck_assert_int_eq(config->sinks[0].fsync, CRD_FSYNC_NEVER);
    ck_assert_uint_eq(config->sinks[0].line, 5);

    crd_config_free(config);
}
END_TEST

START_TEST(dead_letter_limits)
{
    struct crd_config *defaults = load_ok(BASE, NULL);
    ck_assert_uint_eq(defaults->fetch.max_attempts, 20);
    ck_assert_uint_eq(defaults->sinks[0].max_attempts, 0);
    crd_config_free(defaults);

    const char *text = BASE "[fetch]\n"
                            "max_attempts = 0\n"
                            "[sink extra]\n"
                            "type = stdout\n"
                            "max_attempts = 3\n";
    struct crd_config *config = load_ok(text, NULL);
    ck_assert_uint_eq(config->fetch.max_attempts, 0);
    ck_assert_uint_eq(config->n_sinks, 2);
    ck_assert_uint_eq(config->sinks[1].max_attempts, 3);
    crd_config_free(config);
}
END_TEST

START_TEST(outage_and_backlog_values)
{
    struct crd_config *defaults = load_ok(BASE, NULL);
    ck_assert_uint_eq(defaults->fetch.outage_failure_percent, 80);
    ck_assert_uint_eq(defaults->fetch.outage_min_attempts, 10);
    ck_assert_uint_eq(defaults->fetch.outage_backoff_max_ms, 5ULL * 60 * 1000);
    ck_assert_uint_eq(defaults->fetch.coalesce_window_ms, 1000);
    ck_assert_uint_eq(defaults->sinks[0].max_backlog, 100000);
    ck_assert_uint_eq(defaults->sinks[0].max_backlog_age_ms, 24ULL * 3600 * 1000);
    crd_config_free(defaults);

    const char *text = BASE "[fetch]\n"
                            "outage_failure_percent = 50\n"
                            "outage_min_attempts = 3\n"
                            "outage_backoff_max = 90s\n"
                            "coalesce_window = 0\n"
                            "[sink extra]\n"
                            "type = stdout\n"
                            "max_backlog = 0\n"
                            "max_backlog_age = 2h\n";
    struct crd_config *config = load_ok(text, NULL);
    ck_assert_uint_eq(config->fetch.outage_failure_percent, 50);
    ck_assert_uint_eq(config->fetch.outage_min_attempts, 3);
    ck_assert_uint_eq(config->fetch.outage_backoff_max_ms, 90000);
    ck_assert_uint_eq(config->fetch.coalesce_window_ms, 0);
    ck_assert_uint_eq(config->sinks[1].max_backlog, 0);
    ck_assert_uint_eq(config->sinks[1].max_backlog_age_ms, 2ULL * 3600 * 1000);
    crd_config_free(config);
}
END_TEST

START_TEST(rate_and_reconcile_values)
{
    const char *text = BASE "[fetch]\n"
                            "requests_per_20s = 0\n"
                            "record_requests_per_20s = 10\n"
                            "rate_window = 2s\n"
                            "[reconcile]\n"
                            "interval = 0\n"
                            "window = 90min\n"
                            "startup_max = 48h\n";
    struct crd_config *config = load_ok(text, NULL);
    ck_assert_uint_eq(config->fetch.requests_per_window, 0);
    ck_assert_uint_eq(config->fetch.record_requests_per_window, 10);
    ck_assert_uint_eq(config->fetch.rate_window_ms, 2000);
    ck_assert_uint_eq(config->reconcile.interval_ms, 0);
    ck_assert_uint_eq(config->reconcile.window_ms, 90ULL * 60 * 1000);
    ck_assert_uint_eq(config->reconcile.startup_max_ms, 48ULL * 3600 * 1000);
    crd_config_free(config);
}
END_TEST

START_TEST(test_values)
{
    const char *text =
        "\xef\xbb\xbf# a comment, after a byte order mark\r\n"
        "; another comment\r\n"
        "\r\n"
        "  [graph]  \r\n"
        "  tenant = 2A37C3B7-F073-59A1-B249-42C4E33881C2\r\n"
        "client_id=\"6F1E2A3B-4C5D-4E6F-8A9B-0C1D2E3F4A5B\"\n"
        "client_secret_file = \"@SECRET@\"\n"
        "cloud = usgovdod\n"
        "login_url = http://127.0.0.1:9999/login//\n"
        "proxy = socks5h://user:pw@proxy.example.com:1080\n"
        "ca_file = @SECRET@\n"
        "[listener]\n"
        "address = [::1]\n"
        "port = 9443\n"
        "tls = no\n"
        "public_url = http://localhost:8080/\n"
        "notification_path = /graph/notify\n"
        "lifecycle_path = /graph/lifecycle\n"
        "connection_timeout = 30 s\n"
        "max_connections = 100000\n"
        "max_connections_per_ip = 1\n"
        "max_body_size = 512K\n"
        "max_notifications = 5\n"
        "threads = 64\n"
        "[subscription]\n"
        "resource = /communications/callRecords\n"
        "change_type = created , updated\n"
        "lifetime = 100min\n"
        "[store]\n"
        "state_directory = /srv/callrecd\n"
        "durability = FULL\n"
        "[fetch]\n"
        "workers = 1\n"
        "not_found_horizon = 90min\n"
        "retry_base = 250ms\n"
        "retry_max = 30\n"
        "[log]\n"
        "level = debug\n"
        "debug = graph, store\n"
        "[sink console]\n"
        "type = stdout\n"
        "[sink my-archive_2]\n"
        "type = file\n"
        "path = /var/log/callrecd/records.jsonl\n"
        "fsync = record\n";
    struct crd_config *config = load_ok(text, NULL);

    ck_assert_str_eq(config->tenants[0].tenant, "2a37c3b7-f073-59a1-b249-42c4e33881c2");
    ck_assert_str_eq(config->tenants[0].client_id, TEST_CLIENT_ID);
    ck_assert_str_eq(config->tenants[0].client_secret_file, secret_path);
    ck_assert_int_eq(config->graph.cloud, CRD_CLOUD_USGOVDOD);
    ck_assert_str_eq(config->graph.login_url, "http://127.0.0.1:9999/login");
    ck_assert_str_eq(config->graph.graph_url, "https://dod-graph.microsoft.us");
    ck_assert_str_eq(config->graph.proxy, "socks5h://user:pw@proxy.example.com:1080");
    ck_assert_str_eq(config->graph.ca_file, secret_path);

    ck_assert_str_eq(config->listener.address, "::1");
    ck_assert_uint_eq(config->listener.port, 9443);
    ck_assert(!config->listener.tls);
    ck_assert_str_eq(config->listener.public_url, "http://localhost:8080");
    ck_assert_str_eq(config->listener.notification_path, "/graph/notify");
    ck_assert_str_eq(config->listener.lifecycle_path, "/graph/lifecycle");
    ck_assert_uint_eq(config->listener.connection_timeout_s, 30);
    ck_assert_uint_eq(config->listener.max_connections, 100000);
    ck_assert_uint_eq(config->listener.max_connections_per_ip, 1);
    ck_assert_uint_eq(config->listener.max_body_size, 512 * 1024);
    ck_assert_uint_eq(config->listener.max_notifications, 5);
    ck_assert_uint_eq(config->listener.threads, 64);

    ck_assert_str_eq(config->subscription.change_type, "created,updated");
    ck_assert_uint_eq(config->subscription.lifetime_ms, 100ULL * 60 * 1000);
    ck_assert_uint_eq(config->subscription.renew_before_ms, 25ULL * 60 * 1000);

    ck_assert_str_eq(config->store.state_directory, "/srv/callrecd");
    ck_assert_int_eq(config->store.durability, CRD_DURABILITY_FULL);
    ck_assert_uint_eq(config->fetch.workers, 1);
    ck_assert_uint_eq(config->fetch.not_found_horizon_ms, 90ULL * 60 * 1000);
    ck_assert_uint_eq(config->fetch.retry_base_ms, 250);
    ck_assert_uint_eq(config->fetch.retry_max_ms, 30000);
    ck_assert_int_eq(config->log.level, CRD_LOG_DEBUG);
    ck_assert_uint_eq(config->log.debug_mask, (1u << CRD_LOG_GRAPH) | (1u << CRD_LOG_STORE));

    ck_assert_uint_eq(config->n_sinks, 2);
    ck_assert_str_eq(config->sinks[0].name, "console");
    ck_assert_int_eq(config->sinks[0].type, CRD_SINK_STDOUT);
    ck_assert_ptr_null(config->sinks[0].path);
    ck_assert_str_eq(config->sinks[1].name, "my-archive_2");
    ck_assert_int_eq(config->sinks[1].type, CRD_SINK_FILE);
    ck_assert_int_eq(config->sinks[1].fsync, CRD_FSYNC_RECORD);
    ck_assert_uint_eq(config->sinks[1].line, 42);

    ck_assert_str_eq(crd_cloud_name(config->graph.cloud), "usgovdod");
    ck_assert_str_eq(crd_durability_name(config->store.durability), "full");
    ck_assert_str_eq(crd_sink_type_name(config->sinks[0].type), "stdout");
    crd_config_free(config);

    /* The other clouds, bools, units and IPv6 loopback. */
    config = load_ok("[graph]\ntenant = contoso.onmicrosoft.com\nclient_id = " TEST_CLIENT_ID
                     "\nclient_secret_file = @SECRET@\ncloud = usgov\n"
                     "graph_url = http://[::1]:8080/v1.0/\n" SINK
                     "[listener]\ntls = FALSE\npublic_url = https://[2001:db8::1]:8443/x/\n"
                     "max_body_size = 2MiB\n[subscription]\nlifetime = 45\nrenew_before = 44\n"
                     "change_type = created\n[log]\ndebug = all\nlevel = warning\n",
                     NULL);
    ck_assert_str_eq(config->graph.login_url, "https://login.microsoftonline.us");
    ck_assert_str_eq(config->graph.graph_url, "http://[::1]:8080/v1.0");
    ck_assert_str_eq(config->listener.public_url, "https://[2001:db8::1]:8443/x");
    ck_assert_uint_eq(config->listener.max_body_size, 2 * 1024 * 1024);
    ck_assert_uint_eq(config->subscription.renew_before_ms, 44ULL * 60 * 1000);
    ck_assert_str_eq(config->subscription.change_type, "created");
    ck_assert_uint_eq(config->log.debug_mask, (1u << CRD_LOG_SUBSYSTEM__COUNT) - 1);
    ck_assert_int_eq(config->log.level, CRD_LOG_WARNING);
    crd_config_free(config);
}
END_TEST

START_TEST(test_subscription_durations)
{
    /* Short lifetimes load, with a warning, and units work on every duration key. */
    char *path = write_config(BASE "[subscription]\nlifetime = 10s\nrenew_before = 4s\n"
                                   "check_interval = 500ms\nbackfill_margin = 0\n");
    struct crd_diagnostics diag = {0};
    struct crd_config *config = NULL;
    ck_assert_int_eq(crd_config_load(path, NULL, &config, &diag), -EINVAL);
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 14, "subscription", "check_interval",
                "out of range");
    crd_diagnostics_clear(&diag);
    free(path);

    path = write_config(BASE "[subscription]\nlifetime = 10s\nrenew_before = 4s\n"
                             "check_interval = 1h\nbackfill_margin = 0\n");
    ck_assert_int_eq(crd_config_load(path, NULL, &config, &diag), 0);
    ck_assert_uint_eq(diag.n_errors, 0);
    ck_assert_uint_eq(diag.n_warnings, 1);
    assert_diag(&diag, CRD_DIAGNOSTIC_WARNING, 12, "subscription", "lifetime",
                "Graph raises expiries under 45 minutes to 45");
    ck_assert_uint_eq(config->subscription.lifetime_ms, 10000);
    ck_assert_uint_eq(config->subscription.renew_before_ms, 4000);
    ck_assert_uint_eq(config->subscription.check_interval_ms, 60ULL * 60 * 1000);
    ck_assert_uint_eq(config->subscription.backfill_margin_ms, 0);
    crd_config_free(config);
    crd_diagnostics_clear(&diag);
    free(path);

    /* A bare number stays minutes for lifetime and renew_before. */
    config = load_ok(BASE "[subscription]\nlifetime = 2000\nrenew_before = 90\n", NULL);
    ck_assert_uint_eq(config->subscription.lifetime_ms, 2000ULL * 60 * 1000);
    ck_assert_uint_eq(config->subscription.renew_before_ms, 90ULL * 60 * 1000);
    crd_config_free(config);
}
END_TEST

START_TEST(test_participant_filter)
{
    struct crd_config *config = load_ok(
        BASE "[subscription]\nparticipant_filter = 5b2a1e4c-37d2-4c3e-9a61-0f6d8e2b7c41, "
             "0d9c8b7a-6f5e-4d3c-8b2a-1f0e9d8c7b6a\n",
        NULL);
    ck_assert_str_eq(config->tenants[0].resource,
                     "/communications/callRecords?$filter=participants/any(p:p/id eq "
                     "'5b2a1e4c-37d2-4c3e-9a61-0f6d8e2b7c41' or p/id eq "
                     "'0d9c8b7a-6f5e-4d3c-8b2a-1f0e9d8c7b6a')");
    crd_config_free(config);

    /* The default resource written out is no conflict. */
    config = load_ok(BASE "[subscription]\nresource = /communications/callRecords\n"
                          "participant_filter = 5b2a1e4c-37d2-4c3e-9a61-0f6d8e2b7c41\n",
                     NULL);
    ck_assert_str_eq(config->tenants[0].resource,
                     "/communications/callRecords?$filter=participants/any(p:p/id eq "
                     "'5b2a1e4c-37d2-4c3e-9a61-0f6d8e2b7c41')");
    crd_config_free(config);
}
END_TEST

START_TEST(test_state_directory_from_env)
{
    struct crd_config_env env = {.state_directory = "/var/lib/callrecd-env:/var/lib/other"};
    struct crd_config *config = load_ok(BASE, &env);
    ck_assert_str_eq(config->store.state_directory, "/var/lib/callrecd-env");
    crd_config_free(config);

    /* The file wins over the environment. */
    config = load_ok(BASE "[store]\nstate_directory = /srv/state\n", &env);
    ck_assert_str_eq(config->store.state_directory, "/srv/state");
    crd_config_free(config);

    struct crd_diagnostics diag = {0};
    env.state_directory = "relative/state";
    load_invalid(BASE, &env, &diag);
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 0, "store", "state_directory", "STATE_DIRECTORY");
    crd_diagnostics_clear(&diag);
}
END_TEST

/* Appends n copies of c, or the string s when n is 0, at *p. */
static void put(char **p, const char *s, char c, size_t n)
{
    if (n == 0) {
        memcpy(*p, s, strlen(s));
        *p += strlen(s);
    } else {
        memset(*p, c, n);
        *p += n;
    }
    **p = '\0';
}

START_TEST(test_long_lines)
{
    /* A 9 KiB public_url and a 10 KiB comment, then an error whose line must still be right. */
    size_t url_path = 9 * 1024;
    size_t comment = 10 * 1024;
    size_t cap = strlen(BASE) + url_path + comment + 512;
    char *text = malloc(cap);
    ck_assert_ptr_nonnull(text);
    char *p = text;
    put(&p, GRAPH SINK "[listener]\ntls = off\npublic_url = https://callrecd.example.com/", 0, 0);
    put(&p, NULL, 'a', url_path);
    put(&p, "/\n#", 0, 0);
    put(&p, NULL, 'c', comment);
    put(&p, "\n", 0, 0);

    struct crd_config *config = load_ok(text, NULL);
    ck_assert_uint_eq(strlen(config->listener.public_url),
                      strlen("https://callrecd.example.com/") + url_path);
    crd_config_free(config);

    /* Line 10 is the URL, line 11 the comment, line 12 the error. */
    put(&p, "port = 0\n", 0, 0);
    struct crd_diagnostics diag = {0};
    load_invalid(text, NULL, &diag);
    ck_assert_uint_eq(diag.n_errors, 1);
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 12, "listener", "port", "out of range");
    crd_diagnostics_clear(&diag);

    /* A long bad value is cut in the message. */
    p = text;
    put(&p, BASE "[store]\nstate_directory = ", 0, 0);
    put(&p, NULL, 'r', url_path);
    put(&p, "\n", 0, 0);
    load_invalid(text, NULL, &diag);
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 12, "store", "state_directory",
                "rrr...' (9216 bytes)");
    ck_assert_uint_lt(strlen(diag.items[0].message), 600);
    crd_diagnostics_clear(&diag);
    free(text);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Secrets                                                                  */

static char *make_credentials_dir(void)
{
    char *dir = NULL;
    ck_assert_int_ge(asprintf(&dir, "%s/credentials", tmpdir), 0);
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    return dir;
}

START_TEST(test_secret_from_credentials)
{
    char *creds = make_credentials_dir();
    free(crd_test_write_file(creds, "client_secret", "from-credentials\r\n", 0400));
    free(crd_test_write_file(creds, "client_state", "state-from-credentials\n", 0400));
    struct crd_config_env env = {.credentials_directory = creds};

    struct crd_config *config =
        load_ok("[graph]\ntenant = contoso.onmicrosoft.com\nclient_id = " TEST_CLIENT_ID
                "\n" SINK LISTENER,
                &env);
    ck_assert_ptr_null(config->tenants[0].client_secret_file);
    ck_assert_str_eq(crd_secret_bytes(config->tenants[0].client_secret), "from-credentials");
    ck_assert_ptr_null(config->tenants[0].client_state_file);
    ck_assert_ptr_nonnull(config->tenants[0].client_state);
    ck_assert_str_eq(crd_secret_bytes(config->tenants[0].client_state),
                     "state-from-credentials");
    crd_config_free(config);

    /* A configured file wins over the credential. */
    config = load_ok(BASE, &env);
    ck_assert_str_eq(crd_secret_bytes(config->tenants[0].client_secret), TEST_SECRET);
    crd_config_free(config);

    /* A credentials directory without the file: the message names both ways. */
    char *gone = NULL;
    ck_assert_int_ge(asprintf(&gone, "%s/client_secret", creds), 0);
    ck_assert_int_eq(unlink(gone), 0);
    free(gone);
    struct crd_diagnostics diag = {0};
    load_invalid("[graph]\ntenant = contoso.onmicrosoft.com\nclient_id = " TEST_CLIENT_ID
                 "\n" SINK LISTENER,
                 &env, &diag);
    ck_assert_uint_eq(diag.n_errors, 1);
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 1, "graph", "client_secret_file",
                "has no file 'client_secret'); set client_secret_file = ");
    crd_diagnostics_clear(&diag);
    crd_test_remove_tree(creds);
    free(creds);
}
END_TEST

START_TEST(test_secret_loose_mode)
{
    char *loose = crd_test_write_file(tmpdir, "loose_secret", TEST_SECRET, 0644);
    char *text = NULL;
    ck_assert_int_ge(asprintf(&text,
                              "[graph]\ntenant = contoso.onmicrosoft.com\n"
                              "client_id = " TEST_CLIENT_ID "\n"
                              "client_secret_file = %s\n" SINK LISTENER,
                              loose),
                     0);
    char *path = write_config(text);
    struct crd_diagnostics diag = {0};
    struct crd_config *config = NULL;
    ck_assert_int_eq(crd_config_load(path, NULL, &config, &diag), 0);
    ck_assert_ptr_nonnull(config);
    ck_assert_uint_eq(diag.n_errors, 0);
    ck_assert_uint_eq(diag.n_warnings, 1);
    char *needle = NULL;
    ck_assert_int_ge(asprintf(&needle, "have access to the secret file '%s'; run 'chmod 600 %s'",
                              loose, loose),
                     0);
    assert_diag(&diag, CRD_DIAGNOSTIC_WARNING, 4, "graph", "client_secret_file", needle);
    assert_no_secret(&diag);
    ck_assert_str_eq(crd_secret_bytes(config->tenants[0].client_secret), TEST_SECRET);

    free(needle);
    crd_diagnostics_clear(&diag);
    crd_config_free(config);
    free(path);
    free(text);
    free(loose);
}
END_TEST

START_TEST(test_client_state_file)
{
    char *good = crd_test_write_file(tmpdir, "state_good",
                                     "cr-4b8e1f0c9d2a47e6b3c5a7d9e1f20384\n", 0600);
    char *text = NULL;
    ck_assert_int_ge(asprintf(&text, BASE "[subscription]\nclient_state_file = %s\n", good), 0);
    struct crd_config *config = load_ok(text, NULL);
    ck_assert_str_eq(config->tenants[0].client_state_file, good);
    ck_assert_str_eq(crd_secret_bytes(config->tenants[0].client_state),
                     "cr-4b8e1f0c9d2a47e6b3c5a7d9e1f20384");
    crd_config_free(config);
    free(text);
    free(good);

    char long_state[130];
    memset(long_state, 'x', 129);
    long_state[129] = '\0';
    const char *bad_states[] = {"has a space", "", long_state, "tab\there"};
    for (size_t i = 0; i < sizeof(bad_states) / sizeof(bad_states[0]); i++) {
        char *bad = crd_test_write_file(tmpdir, "state_bad", bad_states[i], 0600);
        ck_assert_int_ge(asprintf(&text, BASE "[subscription]\nclient_state_file = %s\n", bad), 0);
        struct crd_diagnostics diag = {0};
        load_invalid(text, NULL, &diag);
        ck_assert_uint_eq(diag.n_errors, 1);
        assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 12, "subscription", "client_state_file",
                    "must be 1 to 128 printable ASCII characters without spaces");
        crd_diagnostics_clear(&diag);
        free(text);
        free(bad);
    }

    /* Exactly 128 characters is fine. */
    long_state[128] = '\0';
    char *edge = crd_test_write_file(tmpdir, "state_edge", long_state, 0600);
    ck_assert_int_ge(asprintf(&text, BASE "[subscription]\nclient_state_file = %s\n", edge), 0);
    config = load_ok(text, NULL);
    ck_assert_uint_eq(crd_secret_len(config->tenants[0].client_state), 128);
    crd_config_free(config);
    free(text);
    free(edge);
}
END_TEST

START_TEST(test_secret_never_shown)
{
    /* Every way a secret could reach a message, in one file. */
    char *creds = make_credentials_dir();
    free(crd_test_write_file(tmpdir, "bad_secret", TEST_SECRET "\nsecond line\n", 0644));
    free(crd_test_write_file(tmpdir, "bad_state", TEST_SECRET " with spaces", 0644));
    free(crd_test_write_file(tmpdir, "bad_key", TEST_SECRET "\n", 0644));
    free(crd_test_write_file(tmpdir, "bad_cert", TEST_SECRET "\n", 0644));
    const char *text = "[graph]\n"
                       "tenant = contoso.onmicrosoft.com\n"
                       "client_id = " TEST_CLIENT_ID "\n"
                       "client_secret_file = @DIR@/bad_secret\n"
                       "client_secret = " TEST_SECRET "\n"
                       "password = \"" TEST_SECRET "\n"
                       "proxy = gopher://me:" TEST_SECRET "@proxy.example.com\n"
                       TEST_SECRET "\n"
                       "[listener]\n"
                       "public_url = https://callrecd.example.com\n"
                       "tls_certificate = @DIR@/bad_cert\n"
                       "tls_key = @DIR@/bad_key\n"
                       "[subscription]\n"
                       "client_state_file = @DIR@/bad_state\n"
                       "[unknown]\n"
                       "secret = " TEST_SECRET "\n"
                       "[sink " TEST_SECRET "]\n";
    struct crd_config_env env = {.credentials_directory = creds};
    struct crd_diagnostics diag = {0};
    load_invalid(text, &env, &diag);
    char *all = all_messages(&diag);
    ck_assert_msg(diag.n_errors >= 8, "%zu errors:%s", diag.n_errors, all);
    ck_assert_msg(strstr(all, TEST_SECRET) == NULL, "secret shown:%s", all);
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 7, "graph", "proxy", "unsupported proxy scheme");
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 7, "graph", "proxy", "gopher://me:***@proxy");
    assert_diag(&diag, CRD_DIAGNOSTIC_WARNING, 4, "graph", "client_secret_file", "chmod 600");
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 12, "listener", "tls_key", "holds no PEM private key");
    free(all);
    crd_diagnostics_clear(&diag);
    crd_test_remove_tree(creds);
    free(creds);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* TLS                                                                      */

static EVP_PKEY *make_ec_key(void)
{
    EVP_PKEY *key = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_EC, NULL);
    ck_assert_ptr_nonnull(ctx);
    ck_assert_int_eq(EVP_PKEY_keygen_init(ctx), 1);
    ck_assert_int_eq(EVP_PKEY_CTX_set_ec_paramgen_curve_nid(ctx, NID_X9_62_prime256v1), 1);
    ck_assert_int_eq(EVP_PKEY_keygen(ctx, &key), 1);
    EVP_PKEY_CTX_free(ctx);
    return key;
}

/* A self-signed certificate for key, valid from not_before_days to not_after_days from now. */
static X509 *make_cert(EVP_PKEY *key, long not_before_days, long not_after_days)
{
    X509 *cert = X509_new();
    ck_assert_ptr_nonnull(cert);
    ck_assert_int_eq(X509_set_version(cert, 2), 1);
    ck_assert_int_eq(ASN1_INTEGER_set(X509_get_serialNumber(cert), 1), 1);
    ck_assert_ptr_nonnull(X509_gmtime_adj(X509_getm_notBefore(cert), not_before_days * 86400));
    ck_assert_ptr_nonnull(X509_gmtime_adj(X509_getm_notAfter(cert), not_after_days * 86400));
    ck_assert_int_eq(X509_set_pubkey(cert, key), 1);
    X509_NAME *name = X509_get_subject_name(cert);
    ck_assert_int_eq(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                                (const unsigned char *)"localhost", -1, -1, 0),
                     1);
    ck_assert_int_eq(X509_set_issuer_name(cert, name), 1);
    ck_assert_int_ne(X509_sign(cert, key, EVP_sha256()), 0);
    return cert;
}

static char *bio_text(BIO *bio)
{
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    ck_assert_int_gt(len, 0);
    char *text = strndup(data, (size_t)len);
    ck_assert_ptr_nonnull(text);
    BIO_free(bio);
    return text;
}

static char *cert_pem(X509 *cert)
{
    BIO *bio = BIO_new(BIO_s_mem());
    ck_assert_int_eq(PEM_write_bio_X509(bio, cert), 1);
    return bio_text(bio);
}

static char *key_pem(EVP_PKEY *key, const char *passphrase)
{
    BIO *bio = BIO_new(BIO_s_mem());
    const EVP_CIPHER *cipher = passphrase != NULL ? EVP_aes_256_cbc() : NULL;
    int passphrase_len = passphrase != NULL ? (int)strlen(passphrase) : 0;
    ck_assert_int_eq(PEM_write_bio_PrivateKey(bio, key, cipher, (unsigned char *)passphrase,
                                              passphrase_len, NULL, NULL),
                     1);
    return bio_text(bio);
}

struct tls_material {
    char *cert_path;
    char *key_path;
    char *cert_text;
    char *key_text;
};

/* Writes cert.pem (of cert_key, valid or expired) and key.pem (of file_key) into dir. */
static void write_tls(const char *dir, EVP_PKEY *cert_key, EVP_PKEY *file_key, bool expired,
                      const char *passphrase, struct tls_material *m)
{
    X509 *cert = expired ? make_cert(cert_key, -30, -1) : make_cert(cert_key, -1, 30);
    m->cert_text = cert_pem(cert);
    m->key_text = key_pem(file_key, passphrase);
    m->cert_path = crd_test_write_file(dir, "tls_certificate", m->cert_text, 0644);
    m->key_path = crd_test_write_file(dir, "tls_key", m->key_text, 0600);
    X509_free(cert);
}

static void free_tls(struct tls_material *m)
{
    free(m->cert_path);
    free(m->key_path);
    free(m->cert_text);
    free(m->key_text);
}

static char *tls_config(const struct tls_material *m)
{
    char *text = NULL;
    ck_assert_int_ge(asprintf(&text,
                              GRAPH SINK "[listener]\n"                   /* 8 */
                                         "public_url = https://callrecd.example.com:8443\n" /* 9 */
                                         "tls_certificate = %s\n"        /* 10 */
                                         "tls_key = %s\n",               /* 11 */
                              m->cert_path, m->key_path),
                     0);
    return text;
}

START_TEST(test_tls_matching)
{
    EVP_PKEY *key = make_ec_key();
    struct tls_material m = {0};
    write_tls(tmpdir, key, key, false, NULL, &m);
    char *text = tls_config(&m);

    struct crd_config *config = load_ok(text, NULL);
    ck_assert(config->listener.tls);
    ck_assert_str_eq(config->listener.tls_certificate_file, m.cert_path);
    ck_assert_str_eq(config->listener.tls_certificate, m.cert_text);
    ck_assert_str_eq(config->listener.tls_key_file, m.key_path);
    ck_assert_str_eq(crd_secret_bytes(config->listener.tls_key), m.key_text);
    crd_config_free(config);

    free(text);
    free_tls(&m);
    EVP_PKEY_free(key);
}
END_TEST

START_TEST(test_tls_mismatch)
{
    EVP_PKEY *key = make_ec_key();
    EVP_PKEY *other = make_ec_key();
    struct tls_material m = {0};
    write_tls(tmpdir, key, other, false, NULL, &m);
    char *text = tls_config(&m);

    struct crd_diagnostics diag = {0};
    load_invalid(text, NULL, &diag);
    ck_assert_uint_eq(diag.n_errors, 1);
    char *needle = NULL;
    ck_assert_int_ge(asprintf(&needle,
                              "the private key in '%s' does not match the certificate in '%s'",
                              m.key_path, m.cert_path),
                     0);
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 11, "listener", "tls_key", needle);
    /* No key bytes in any message. */
    for (size_t i = 0; i < diag.n_items; i++) {
        ck_assert_ptr_null(strstr(diag.items[i].message, "PRIVATE KEY-----\n"));
        ck_assert_ptr_null(strstr(diag.items[i].message, m.key_text + 28));
    }
    free(needle);
    crd_diagnostics_clear(&diag);
    free(text);
    free_tls(&m);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
}
END_TEST

START_TEST(test_tls_from_credentials)
{
    char *creds = make_credentials_dir();
    EVP_PKEY *key = make_ec_key();
    struct tls_material m = {0};
    write_tls(creds, key, key, false, NULL, &m);
    struct crd_config_env env = {.credentials_directory = creds};

    struct crd_config *config =
        load_ok(GRAPH SINK "[listener]\npublic_url = https://callrecd.example.com:8443\n", &env);
    ck_assert(config->listener.tls);
    ck_assert_str_eq(config->listener.tls_certificate_file, m.cert_path);
    ck_assert_str_eq(config->listener.tls_certificate, m.cert_text);
    ck_assert_ptr_null(config->listener.tls_key_file);
    ck_assert_str_eq(crd_secret_bytes(config->listener.tls_key), m.key_text);
    crd_config_free(config);

    free_tls(&m);
    EVP_PKEY_free(key);
    crd_test_remove_tree(creds);
    free(creds);
}
END_TEST

START_TEST(test_tls_problems)
{
    EVP_PKEY *key = make_ec_key();
    struct tls_material m = {0};
    struct crd_diagnostics diag = {0};

    /* An expired certificate loads, with a warning. */
    write_tls(tmpdir, key, key, true, NULL, &m);
    char *text = tls_config(&m);
    char *path = write_config(text);
    struct crd_config *config = NULL;
    ck_assert_int_eq(crd_config_load(path, NULL, &config, &diag), 0);
    ck_assert_uint_eq(diag.n_warnings, 1);
    assert_diag(&diag, CRD_DIAGNOSTIC_WARNING, 10, "listener", "tls_certificate", "has expired");
    crd_config_free(config);
    crd_diagnostics_clear(&diag);
    free(path);
    free(text);
    free_tls(&m);

    /* An encrypted key is refused without prompting for a passphrase. */
    write_tls(tmpdir, key, key, false, "passphrase", &m);
    text = tls_config(&m);
    load_invalid(text, NULL, &diag);
    ck_assert_uint_eq(diag.n_errors, 1);
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 11, "listener", "tls_key", "encrypted");
    crd_diagnostics_clear(&diag);
    free(text);
    free_tls(&m);

    /* A certificate file that is no PEM certificate. */
    write_tls(tmpdir, key, key, false, NULL, &m);
    free(crd_test_write_file(tmpdir, "tls_certificate", "not a certificate\n", 0644));
    text = tls_config(&m);
    load_invalid(text, NULL, &diag);
    ck_assert_uint_eq(diag.n_errors, 1);
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 10, "listener", "tls_certificate",
                "holds no PEM X.509 certificate");
    crd_diagnostics_clear(&diag);

    /* A missing key file, and tls = off with TLS keys, which is only a warning. */
    unlink(m.key_path);
    free(crd_test_write_file(tmpdir, "tls_certificate", m.cert_text, 0644));
    load_invalid(text, NULL, &diag);
    ck_assert_uint_eq(diag.n_errors, 1);
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 11, "listener", "tls_key", "No such file");
    crd_diagnostics_clear(&diag);
    free(text);

    ck_assert_int_ge(asprintf(&text, BASE "tls_certificate = %s\n", m.cert_path), 0);
    path = write_config(text);
    ck_assert_int_eq(crd_config_load(path, NULL, &config, &diag), 0);
    ck_assert_uint_eq(diag.n_warnings, 1);
    assert_diag(&diag, CRD_DIAGNOSTIC_WARNING, 11, "listener", "tls_certificate",
                "ignored because tls is off");
    crd_config_free(config);
    crd_diagnostics_clear(&diag);
    free(path);
    free(text);
    free_tls(&m);
    EVP_PKEY_free(key);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Tenants                                                                  */

START_TEST(graph_form_default_tenant)
{
    struct crd_config *config = load_ok(BASE, NULL);
    ck_assert_uint_eq(config->n_tenants, 1);
    const struct crd_config_tenant *tenant = &config->tenants[0];
    ck_assert_str_eq(tenant->name, "default");
    ck_assert_str_eq(tenant->setting_prefix, "");
    ck_assert_uint_eq(tenant->line, 0);
    ck_assert_str_eq(tenant->tenant, "contoso.onmicrosoft.com");
    ck_assert_str_eq(tenant->client_id, TEST_CLIENT_ID);
    ck_assert_int_eq(tenant->assertion, CRD_ASSERTION_PS256);
    ck_assert_str_eq(tenant->resource, "/communications/callRecords");
    crd_config_free(config);

    /* assertion and participant_filter of the [graph] form reach tenants[0] too. */
    config = load_ok(GRAPH "assertion = rs256\n" SINK LISTENER "[subscription]\n"
                           "participant_filter = 5b2a1e4c-37d2-4c3e-9a61-0f6d8e2b7c41\n",
                     NULL);
    ck_assert_uint_eq(config->n_tenants, 1);
    ck_assert_int_eq(config->tenants[0].assertion, CRD_ASSERTION_RS256);
    ck_assert_str_eq(config->tenants[0].participant_filter,
                     "5b2a1e4c-37d2-4c3e-9a61-0f6d8e2b7c41");
    ck_assert_str_eq(config->tenants[0].resource,
                     "/communications/callRecords?$filter=participants/any(p:p/id eq "
                     "'5b2a1e4c-37d2-4c3e-9a61-0f6d8e2b7c41')");
    crd_config_free(config);
}
END_TEST

START_TEST(two_tenants_with_own_secrets)
{
    /* contoso names its files; fabrikam's secrets come from $CREDENTIALS_DIRECTORY. */
    char *creds = make_credentials_dir();
    free(crd_test_write_file(creds, "client_secret.fabrikam", "fabrikam-secret\n", 0400));
    free(crd_test_write_file(creds, "client_state.fabrikam", "fabrikam-state\n", 0400));
    /* The names of the [graph] form are not used for [tenant NAME] sections. */
    free(crd_test_write_file(creds, "client_secret", "graph-form-secret\n", 0400));
    free(crd_test_write_file(creds, "client_state", "graph-form-state\n", 0400));
    char *state = crd_test_write_file(tmpdir, "contoso_state", "contoso-state\n", 0600);
    struct crd_config_env env = {.credentials_directory = creds};

    const char *text = "[tenant contoso]\n"                                    /* 1 */
                       "tenant = " TENANT_A_ID "\n"                            /* 2 */
                       "client_id = " TEST_CLIENT_ID "\n"                      /* 3 */
                       "client_secret_file = @SECRET@\n"                       /* 4 */
                       "client_state_file = @DIR@/contoso_state\n"             /* 5 */
                       "assertion = rs256\n"                                   /* 6 */
                       SINK LISTENER                                           /* 7-12 */
                       "[tenant fabrikam]\n"                                   /* 13 */
                       "tenant = 9C1D4E5F-7A8B-4C9D-8E0F-1A2B3C4D5E6F\n"       /* 14 */
                       "client_id = 0d9c8b7a-6f5e-4d3c-8b2a-1f0e9d8c7b6a\n";   /* 15 */
    struct crd_config *config = load_ok(text, &env);
    ck_assert_uint_eq(config->n_tenants, 2);

    const struct crd_config_tenant *contoso = &config->tenants[0];
    ck_assert_str_eq(contoso->name, "contoso");
    ck_assert_str_eq(contoso->setting_prefix, "tenant.contoso.");
    ck_assert_uint_eq(contoso->line, 1);
    ck_assert_str_eq(contoso->tenant, TENANT_A_ID);
    ck_assert_str_eq(contoso->client_id, TEST_CLIENT_ID);
    ck_assert_str_eq(contoso->client_secret_file, secret_path);
    ck_assert_str_eq(crd_secret_bytes(contoso->client_secret), TEST_SECRET);
    ck_assert_ptr_null(contoso->client_certificate);
    ck_assert_int_eq(contoso->assertion, CRD_ASSERTION_RS256);
    ck_assert_ptr_null(contoso->participant_filter);
    ck_assert_str_eq(contoso->resource, "/communications/callRecords");
    ck_assert_str_eq(contoso->client_state_file, state);
    ck_assert_str_eq(crd_secret_bytes(contoso->client_state), "contoso-state");

    const struct crd_config_tenant *fabrikam = &config->tenants[1];
    ck_assert_str_eq(fabrikam->name, "fabrikam");
    ck_assert_str_eq(fabrikam->setting_prefix, "tenant.fabrikam.");
    ck_assert_uint_eq(fabrikam->line, 13);
    ck_assert_str_eq(fabrikam->tenant, TENANT_B_ID);
    ck_assert_str_eq(fabrikam->client_id, "0d9c8b7a-6f5e-4d3c-8b2a-1f0e9d8c7b6a");
    ck_assert_ptr_null(fabrikam->client_secret_file);
    ck_assert_str_eq(crd_secret_bytes(fabrikam->client_secret), "fabrikam-secret");
    ck_assert_int_eq(fabrikam->assertion, CRD_ASSERTION_PS256);
    ck_assert_str_eq(fabrikam->resource, "/communications/callRecords");
    ck_assert_ptr_null(fabrikam->client_state_file);
    ck_assert_str_eq(crd_secret_bytes(fabrikam->client_state), "fabrikam-state");

    /* The shared sections still load as before. */
    ck_assert_str_eq(config->graph.graph_url, "https://graph.microsoft.com");
    ck_assert_str_eq(config->subscription.change_type, "updated");
    ck_assert_uint_eq(config->n_sinks, 1);
    crd_config_free(config);

    /* Without client_secret.fabrikam the generic client_secret does not stand in for it. */
    char *removed = NULL;
    ck_assert_int_ge(asprintf(&removed, "%s/client_secret.fabrikam", creds), 0);
    ck_assert_int_eq(unlink(removed), 0);
    free(removed);
    struct crd_diagnostics diag = {0};
    load_invalid(text, &env, &diag);
    ck_assert_uint_eq(diag.n_errors, 1);
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 13, "tenant fabrikam", "client_secret_file",
                "has no file 'client_secret.fabrikam'); set client_secret_file = "
                "/etc/callrecd/client_secret.fabrikam");
    crd_diagnostics_clear(&diag);

    free(state);
    crd_test_remove_tree(creds);
    free(creds);
}
END_TEST

START_TEST(tenants_without_secrets_for_tools)
{
    /* callrecctl reads no secret, so a file whose tenants have none still loads. */
    struct crd_config_env env = {.skip_secrets = true};
    struct crd_config *config =
        load_ok("[tenant contoso]\ntenant = " TENANT_A_ID "\nclient_id = " TEST_CLIENT_ID "\n"
                "[tenant fabrikam]\ntenant = " TENANT_B_ID "\nclient_id = " TEST_CLIENT_ID "\n"
                "client_state_file = @DIR@/missing\n" SINK LISTENER,
                &env);
    ck_assert_uint_eq(config->n_tenants, 2);
    for (size_t i = 0; i < config->n_tenants; i++) {
        ck_assert_ptr_null(config->tenants[i].client_secret);
        ck_assert_ptr_null(config->tenants[i].client_state);
    }
    crd_config_free(config);
}
END_TEST

START_TEST(tenant_participant_filters)
{
    const char *text = TENANTS
        "participant_filter = 5b2a1e4c-37d2-4c3e-9a61-0f6d8e2b7c41\n"  /* 9: in fabrikam */
        SINK LISTENER;
    struct crd_config *config = load_ok(text, NULL);
    ck_assert_ptr_null(config->tenants[0].participant_filter);
    ck_assert_str_eq(config->tenants[0].resource, "/communications/callRecords");
    ck_assert_str_eq(config->tenants[1].participant_filter,
                     "5b2a1e4c-37d2-4c3e-9a61-0f6d8e2b7c41");
    ck_assert_str_eq(config->tenants[1].resource,
                     "/communications/callRecords?$filter=participants/any(p:p/id eq "
                     "'5b2a1e4c-37d2-4c3e-9a61-0f6d8e2b7c41')");
    crd_config_free(config);

    /* [subscription] resource applies to every tenant... */
    config = load_ok(MULTI "[subscription]\nresource = /communications/callRecords\n", NULL);
    ck_assert_str_eq(config->tenants[0].resource, "/communications/callRecords");
    ck_assert_str_eq(config->tenants[1].resource, "/communications/callRecords");
    crd_config_free(config);

    /* ...and another resource cannot be combined with a tenant's filter. */
    struct crd_diagnostics diag = {0};
    load_invalid(TENANTS "participant_filter = 5b2a1e4c-37d2-4c3e-9a61-0f6d8e2b7c41\n" SINK
                 LISTENER "[subscription]\nresource = /communications/other\n",
                 NULL, &diag);
    ck_assert_uint_eq(diag.n_errors, 1);
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 9, "tenant fabrikam", "participant_filter",
                "cannot be combined with resource '/communications/other' of [subscription] on "
                "line 17; remove one of the two keys");
    crd_diagnostics_clear(&diag);
}
END_TEST

START_TEST(graph_keys_beside_tenants)
{
    /* Every per-tenant key of [graph] and [subscription] is reported, with the fix. */
    char *text = NULL;
    ck_assert_int_ge(asprintf(&text,
                              "[graph]\n"                                          /* 1 */
                              "tenant = contoso.onmicrosoft.com\n"                 /* 2 */
                              "client_id = " TEST_CLIENT_ID "\n"                   /* 3 */
                              "client_secret_file = @SECRET@\n"                    /* 4 */
                              "client_certificate_file = /etc/callrecd/a.pem\n"    /* 5 */
                              "client_key_file = /etc/callrecd/a.key\n"            /* 6 */
                              "assertion = rs256\n"                                /* 7 */
                              "cloud = usgov\n"                                    /* 8 */
                              "[subscription]\n"                                   /* 9 */
                              "participant_filter = 5b2a1e4c-37d2-4c3e-9a61-0f6d8e2b7c41\n"
                              "client_state_file = /etc/callrecd/client_state\n"  /* 11 */
                              "lifetime = 60min\n"                                 /* 12 */
                              "%s",
                              MULTI),
                     0);
    struct crd_diagnostics diag = {0};
    load_invalid(text, NULL, &diag);
    char *all = all_messages(&diag);
    ck_assert_msg(diag.n_errors == 8, "%zu errors:%s", diag.n_errors, all);
    free(all);

    static const struct {
        unsigned line;
        const char *section;
        const char *key;
    } moved[] = {
        {2, "graph", "tenant"},
        {3, "graph", "client_id"},
        {4, "graph", "client_secret_file"},
        {5, "graph", "client_certificate_file"},
        {6, "graph", "client_key_file"},
        {7, "graph", "assertion"},
        {10, "subscription", "participant_filter"},
        {11, "subscription", "client_state_file"},
    };
    for (size_t i = 0; i < sizeof(moved) / sizeof(moved[0]); i++) {
        assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, moved[i].line, moved[i].section, moved[i].key,
                    "the file has [tenant NAME] sections (the first on line 13), so each "
                    "tenant's credentials and subscription keys belong in its own section; move "
                    "this key into the [tenant NAME] sections");
    }
    crd_diagnostics_clear(&diag);
    free(text);

    /* The keys shared by all tenants stay in [graph] and [subscription]. */
    struct crd_config *config =
        load_ok("[graph]\ncloud = usgov\n[subscription]\nlifetime = 60min\n" MULTI, NULL);
    ck_assert_int_eq(config->graph.cloud, CRD_CLOUD_USGOV);
    ck_assert_uint_eq(config->subscription.lifetime_ms, 60ULL * 60 * 1000);
    ck_assert_uint_eq(config->n_tenants, 2);
    crd_config_free(config);
}
END_TEST

START_TEST(tenant_errors_all_reported)
{
    const char *text = "[tenant contoso]\n"                              /* 1 */
                       "tenant = contoso.onmicrosoft.com\n"              /* 2 */
                       "client_id = " TEST_CLIENT_ID "\n"                /* 3 */
                       "client_secret_file = @SECRET@\n"                 /* 4 */
                       "[tenant fabrikam]\n"                             /* 5 */
                       "tenant = " TENANT_B_ID "\n"                      /* 6 */
                       "client_secret_file = @SECRET@\n"                 /* 7 */
                       "[tenant contoso]\n"                              /* 8 */
                       "tenant = " TENANT_B_ID "\n"                      /* 9 */
                       "client_id = " TEST_CLIENT_ID "\n"                /* 10 */
                       "client_secret_file = @SECRET@\n"                 /* 11 */
                       "assertion = es256\n"                             /* 12 */
                       SINK LISTENER;
    struct crd_diagnostics diag = {0};
    load_invalid(text, NULL, &diag);
    char *all = all_messages(&diag);
    ck_assert_msg(diag.n_errors == 5, "%zu errors:%s", diag.n_errors, all);
    free(all);
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 2, "tenant contoso", "tenant", "a domain name");
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 5, "tenant fabrikam", "client_id",
                "required key is missing; add client_id = ");
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 8, "tenant contoso", NULL,
                "duplicate tenant name; [tenant contoso] is already on line 1");
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 9, "tenant contoso", "tenant",
                "the same tenant as [tenant fabrikam] on line 6");
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 12, "tenant contoso", "assertion",
                "did you mean 'ps256'? Use ps256 or rs256");
    crd_diagnostics_clear(&diag);
}
END_TEST

START_TEST(tenant_secrets_never_shown)
{
    char *creds = make_credentials_dir();
    free(crd_test_write_file(creds, "client_secret.fabrikam", TEST_SECRET "\nsecond line\n",
                             0400));
    free(crd_test_write_file(creds, "client_state.fabrikam", TEST_SECRET " with spaces", 0400));
    free(crd_test_write_file(tmpdir, "loose_secret", TEST_SECRET "\n", 0644));
    free(crd_test_write_file(tmpdir, "bad_key", TEST_SECRET "\n", 0600));
    free(crd_test_write_file(tmpdir, "bad_cert", TEST_SECRET "\n", 0644));
    const char *text = "[tenant contoso]\n"                                    /* 1 */
                       "tenant = " TENANT_A_ID "\n"                            /* 2 */
                       "client_id = " TEST_CLIENT_ID "\n"                      /* 3 */
                       "client_secret_file = @DIR@/loose_secret\n"             /* 4 */
                       "client_secret = " TEST_SECRET "\n"                     /* 5 */
                       "[tenant fabrikam]\n"                                   /* 6 */
                       "tenant = " TENANT_B_ID "\n"                            /* 7 */
                       "client_id = " TEST_CLIENT_ID "\n"                      /* 8 */
                       "[tenant northwind]\n"                                  /* 9 */
                       "tenant = 0d9c8b7a-6f5e-4d3c-8b2a-1f0e9d8c7b6a\n"       /* 10 */
                       "client_id = " TEST_CLIENT_ID "\n"                      /* 11 */
                       "client_certificate_file = @DIR@/bad_cert\n"            /* 12 */
                       "client_key_file = @DIR@/bad_key\n"                     /* 13 */
                       "[tenant " TEST_SECRET "]\n"                            /* 14 */
                       SINK LISTENER;
    struct crd_config_env env = {.credentials_directory = creds};
    struct crd_diagnostics diag = {0};
    load_invalid(text, &env, &diag);
    char *all = all_messages(&diag);
    ck_assert_msg(strstr(all, TEST_SECRET) == NULL, "secret shown:%s", all);
    ck_assert_msg(diag.n_errors == 5, "%zu errors:%s", diag.n_errors, all);
    free(all);
    assert_diag(&diag, CRD_DIAGNOSTIC_WARNING, 4, "tenant contoso", "client_secret_file",
                "chmod 600");
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 5, "tenant contoso", "client_secret",
                "Secrets do not belong in this file");
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 6, "tenant fabrikam", "client_secret_file",
                "not on one line");
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 6, "tenant fabrikam", "client_state_file",
                "must be 1 to 128 printable ASCII characters without spaces");
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 12, "tenant northwind", "client_certificate_file",
                "bad_cert");
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 14, "tenant", NULL, "invalid tenant name");
    crd_diagnostics_clear(&diag);
    crd_test_remove_tree(creds);
    free(creds);
}
END_TEST

static EVP_PKEY *make_rsa_key(void)
{
    EVP_PKEY *key = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_RSA, NULL);
    ck_assert_ptr_nonnull(ctx);
    ck_assert_int_eq(EVP_PKEY_keygen_init(ctx), 1);
    ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 2048), 1);
    ck_assert_int_eq(EVP_PKEY_keygen(ctx, &key), 1);
    EVP_PKEY_CTX_free(ctx);
    return key;
}

START_TEST(tenant_certificate_from_credentials)
{
    char *creds = make_credentials_dir();
    EVP_PKEY *key = make_rsa_key();
    X509 *cert = make_cert(key, -1, 30);
    char *cert_text = cert_pem(cert);
    char *key_text = key_pem(key, NULL);
    free(crd_test_write_file(creds, "client_certificate.fabrikam", cert_text, 0400));
    free(crd_test_write_file(creds, "client_key.fabrikam", key_text, 0400));
    struct crd_config_env env = {.credentials_directory = creds};

    struct crd_config *config = load_ok(
        "[tenant contoso]\ntenant = " TENANT_A_ID "\nclient_id = " TEST_CLIENT_ID "\n"
        "client_secret_file = @SECRET@\n"
        "[tenant fabrikam]\ntenant = " TENANT_B_ID "\nclient_id = " TEST_CLIENT_ID "\n" SINK
        LISTENER,
        &env);
    const struct crd_config_tenant *contoso = &config->tenants[0];
    const struct crd_config_tenant *fabrikam = &config->tenants[1];
    ck_assert_ptr_null(contoso->client_certificate);
    ck_assert_str_eq(crd_secret_bytes(contoso->client_secret), TEST_SECRET);
    ck_assert_ptr_null(fabrikam->client_secret);
    ck_assert_str_eq(fabrikam->client_certificate, cert_text);
    ck_assert_str_eq(crd_secret_bytes(fabrikam->client_key), key_text);
    crd_config_free(config);

    /* A certificate without its key names the tenant's credential. */
    char *removed = NULL;
    ck_assert_int_ge(asprintf(&removed, "%s/client_key.fabrikam", creds), 0);
    ck_assert_int_eq(unlink(removed), 0);
    free(removed);
    struct crd_diagnostics diag = {0};
    load_invalid("[tenant fabrikam]\ntenant = " TENANT_B_ID "\nclient_id = " TEST_CLIENT_ID "\n"
                 SINK LISTENER,
                 &env, &diag);
    ck_assert_uint_eq(diag.n_errors, 1);
    assert_diag(&diag, CRD_DIAGNOSTIC_ERROR, 1, "tenant fabrikam", "client_key_file",
                "has no file 'client_key.fabrikam'); set client_key_file = "
                "/etc/callrecd/client.key (mode 0600), or pass the credential "
                "'client_key.fabrikam'");
    for (size_t i = 0; i < diag.n_items; i++) {
        ck_assert_ptr_null(strstr(diag.items[i].message, "PRIVATE KEY"));
    }
    crd_diagnostics_clear(&diag);

    free(cert_text);
    free(key_text);
    X509_free(cert);
    EVP_PKEY_free(key);
    crd_test_remove_tree(creds);
    free(creds);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* The shipped example                                                      */

START_TEST(test_example_config)
{
    char *creds = make_credentials_dir();
    EVP_PKEY *key = make_ec_key();
    struct tls_material m = {0};
    write_tls(creds, key, key, false, NULL, &m);
    free(crd_test_write_file(creds, "client_secret", TEST_SECRET "\n", 0400));
    struct crd_config_env env = {.credentials_directory = creds};

    char *path = NULL;
    ck_assert_int_ge(asprintf(&path, "%s/config/callrecd.conf", crd_test_srcdir()), 0);
    struct crd_diagnostics diag = {0};
    struct crd_config *config = NULL;
    int r = crd_config_load(path, &env, &config, &diag);
    char *all = all_messages(&diag);
    ck_assert_msg(r == 0 && diag.n_items == 0, "%s: %d:%s", path, r, all);
    free(all);

    ck_assert_str_eq(config->tenants[0].tenant, "contoso.onmicrosoft.com");
    ck_assert_ptr_null(config->tenants[0].client_secret_file);
    ck_assert_str_eq(crd_secret_bytes(config->tenants[0].client_secret), TEST_SECRET);
    ck_assert_str_eq(config->listener.public_url, "https://callrecd.example.com:8443");
    ck_assert(config->listener.tls);
    ck_assert_str_eq(config->listener.tls_certificate, m.cert_text);
    ck_assert_uint_eq(config->subscription.renew_before_ms, 4230ULL * 60 * 1000 / 4);
    ck_assert_str_eq(config->store.state_directory, "/var/lib/callrecd");
    ck_assert_uint_ge(config->n_sinks, 1);

    /* Without the credentials it must say what is missing, and nothing else. */
    crd_config_free(config);
    config = NULL;
    r = crd_config_load(path, NULL, &config, &diag);
    ck_assert_int_eq(r, -EINVAL);
    ck_assert_uint_eq(diag.n_errors, 3);
    ck_assert(has_key(&diag, "client_secret_file", "no client secret"));
    ck_assert(has_key(&diag, "tls_certificate", "no certificate"));
    ck_assert(has_key(&diag, "tls_key", "no private key"));

    crd_diagnostics_clear(&diag);
    free(path);
    free_tls(&m);
    EVP_PKEY_free(key);
    crd_test_remove_tree(creds);
    free(creds);
}
END_TEST

/*
 * The shipped example as an operator turns it into a file for several
 * tenants: the [tenant NAME] sections uncommented, [graph] tenant and
 * client_id commented out.
 */
static char *example_with_tenants(void)
{
    char *path = NULL;
    ck_assert_int_ge(asprintf(&path, "%s/config/callrecd.conf", crd_test_srcdir()), 0);
    char *example = crd_test_read_file(path, NULL);
    ck_assert_ptr_nonnull(example);
    free(path);

    char *out = calloc(1, 2 * strlen(example) + 1);
    ck_assert_ptr_nonnull(out);
    bool in_tenant = false;
    size_t n_uncommented = 0;
    char *cursor = example;
    for (char *line = strsep(&cursor, "\n"); line != NULL; line = strsep(&cursor, "\n")) {
        if (strncmp(line, "#[tenant ", 9) == 0) {
            in_tenant = true;
        } else if (in_tenant && line[0] != '#') {
            in_tenant = false;
        }
        if (in_tenant) {
            strcat(out, line + 1);
            n_uncommented++;
        } else if (strncmp(line, "tenant = ", 9) == 0 || strncmp(line, "client_id = ", 12) == 0) {
            strcat(out, "#");
            strcat(out, line);
        } else {
            strcat(out, line);
        }
        strcat(out, "\n");
    }
    ck_assert_uint_ge(n_uncommented, 6);
    free(example);
    return out;
}

START_TEST(example_tenant_sections)
{
    char *creds = make_credentials_dir();
    EVP_PKEY *key = make_ec_key();
    struct tls_material m = {0};
    write_tls(creds, key, key, false, NULL, &m);
    EVP_PKEY *client_key = make_rsa_key();
    X509 *client_cert = make_cert(client_key, -1, 30);
    char *client_cert_text = cert_pem(client_cert);
    char *client_key_text = key_pem(client_key, NULL);
    free(crd_test_write_file(creds, "client_secret.contoso", TEST_SECRET "\n", 0400));
    free(crd_test_write_file(creds, "client_certificate.fabrikam", client_cert_text, 0400));
    free(crd_test_write_file(creds, "client_key.fabrikam", client_key_text, 0400));
    struct crd_config_env env = {.credentials_directory = creds};

    char *text = example_with_tenants();
    struct crd_config *config = load_ok(text, &env);
    ck_assert_uint_eq(config->n_tenants, 2);
    ck_assert_str_eq(config->tenants[0].name, "contoso");
    ck_assert_str_eq(crd_secret_bytes(config->tenants[0].client_secret), TEST_SECRET);
    ck_assert_str_eq(config->tenants[1].name, "fabrikam");
    ck_assert_str_eq(config->tenants[1].client_certificate, client_cert_text);
    ck_assert_ptr_nonnull(strstr(config->tenants[1].resource, "participants/any"));
    crd_config_free(config);

    free(text);
    free(client_cert_text);
    free(client_key_text);
    X509_free(client_cert);
    EVP_PKEY_free(client_key);
    free_tls(&m);
    EVP_PKEY_free(key);
    crd_test_remove_tree(creds);
    free(creds);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");

    TCase *tc = tcase_create("invalid");
    tcase_add_checked_fixture(tc, setup, teardown);
    int n_invalid = (int)(sizeof(invalid_cases) / sizeof(invalid_cases[0]));
    tcase_add_loop_test(tc, test_invalid, 0, n_invalid);
    tcase_add_test(tc, test_message_format);
    tcase_add_test(tc, test_all_errors_reported);
    tcase_add_test(tc, test_missing_file);
    suite_add_tcase(s, tc);

    tc = tcase_create("valid");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, dead_letter_limits);
    tcase_add_test(tc, test_values);
    tcase_add_test(tc, rate_and_reconcile_values);
    tcase_add_test(tc, outage_and_backlog_values);
    tcase_add_test(tc, test_state_directory_from_env);
    tcase_add_test(tc, test_long_lines);
    suite_add_tcase(s, tc);

    tc = tcase_create("secrets");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_secret_from_credentials);
    tcase_add_test(tc, test_secret_loose_mode);
    tcase_add_test(tc, test_client_state_file);
    tcase_add_test(tc, test_secret_never_shown);
    suite_add_tcase(s, tc);

    tc = tcase_create("tls");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_tls_matching);
    tcase_add_test(tc, test_tls_mismatch);
    tcase_add_test(tc, test_tls_from_credentials);
    tcase_add_test(tc, test_tls_problems);
    suite_add_tcase(s, tc);

    tc = tcase_create("tenants");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, graph_form_default_tenant);
    tcase_add_test(tc, two_tenants_with_own_secrets);
    tcase_add_test(tc, tenants_without_secrets_for_tools);
    tcase_add_test(tc, tenant_participant_filters);
    tcase_add_test(tc, graph_keys_beside_tenants);
    tcase_add_test(tc, tenant_errors_all_reported);
    tcase_add_test(tc, tenant_secrets_never_shown);
    tcase_add_test(tc, tenant_certificate_from_credentials);
    suite_add_tcase(s, tc);

    tc = tcase_create("example");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_example_config);
    tcase_add_test(tc, example_tenant_sections);
    tcase_add_test(tc, test_subscription_durations);
    tcase_add_test(tc, test_participant_filter);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *runner = srunner_create(config_suite());
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
