/* SPDX-License-Identifier: MIT */
/*
 * fakegraph serve: parses the options, loads the TLS material and the client
 * secret, binds the loopback socket, runs the server (fakegraph_server.c)
 * and stops it on SIGTERM or SIGINT with exit status 0. --tenant may be
 * given up to FAKEGRAPH_TENANT_MAX times, and the first one is the default
 * tenant of the control API.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fakegraph_server.h"

#define DEFAULT_TOKEN_LIFETIME_S 3599
#define TOKEN_LIFETIME_MAX_S 86400

#define LISTEN_BACKLOG 128

/* Bounds of --quota-tenant and --quota-record N/SECONDS. */
#define QUOTA_LIMIT_MAX 1000000
#define QUOTA_WINDOW_MAX_S 3600

struct serve_options {
    const char *listen;
    const char *cert_file;
    const char *key_file;
    const char *cafile;
    const char *tenants[FAKEGRAPH_TENANT_MAX];
    size_t tenant_count;
    const char *client_id;
    const char *client_secret_file;
    const char *client_certificate_file;
    unsigned token_lifetime_s;
    unsigned min_lifetime_s;
    const char *ready_file;
    const char *log_file;
    struct fakegraph_quota tenant_quota;
    struct fakegraph_quota record_quota;
};

enum serve_option_id {
    SERVE_LISTEN,
    SERVE_CERT,
    SERVE_KEY,
    SERVE_CAFILE,
    SERVE_TENANT,
    SERVE_CLIENT_ID,
    SERVE_CLIENT_SECRET_FILE,
    SERVE_CLIENT_CERTIFICATE,
    SERVE_TOKEN_LIFETIME,
    SERVE_MIN_LIFETIME,
    SERVE_READY_FILE,
    SERVE_LOG,
    SERVE_QUOTA_TENANT,
    SERVE_QUOTA_RECORD,
};

static const struct fakegraph_option_spec serve_specs[] = {
    {"--listen", SERVE_LISTEN, true},
    {"--cert", SERVE_CERT, true},
    {"--key", SERVE_KEY, true},
    {"--cafile", SERVE_CAFILE, true},
    {"--tenant", SERVE_TENANT, true},
    {"--client-id", SERVE_CLIENT_ID, true},
    {"--client-secret-file", SERVE_CLIENT_SECRET_FILE, true},
    {"--client-certificate", SERVE_CLIENT_CERTIFICATE, true},
    {"--token-lifetime", SERVE_TOKEN_LIFETIME, true},
    {"--min-lifetime", SERVE_MIN_LIFETIME, true},
    {"--ready-file", SERVE_READY_FILE, true},
    {"--log", SERVE_LOG, true},
    {"--quota-tenant", SERVE_QUOTA_TENANT, true},
    {"--quota-record", SERVE_QUOTA_RECORD, true},
};

/* Parses "N/SECONDS": at most N requests in any SECONDS-second window. */
static int parse_quota(const char *option, const char *value, struct fakegraph_quota *quota,
                       struct crd_error *err)
{
    const char *slash = strchr(value, '/');
    if (slash == NULL || slash == value) {
        return crd_error_set(err, -EINVAL, "invalid %s '%s': expected N/SECONDS, such as "
                             "1500/20", option, value);
    }
    char limit_text[16];
    size_t limit_len = (size_t)(slash - value);
    if (limit_len >= sizeof(limit_text)) {
        return crd_error_set(err, -EINVAL, "invalid %s '%s': N must be from 1 to %d", option,
                             value, QUOTA_LIMIT_MAX);
    }
    memcpy(limit_text, value, limit_len);
    limit_text[limit_len] = '\0';

    unsigned long limit = 0;
    unsigned long window_s = 0;
    int r = fakegraph_parse_number(option, limit_text, 1, QUOTA_LIMIT_MAX, &limit, err);
    if (r == 0) {
        r = fakegraph_parse_number(option, slash + 1, 1, QUOTA_WINDOW_MAX_S, &window_s, err);
    }
    if (r < 0) {
        return r;
    }
    *quota = (struct fakegraph_quota){.limit = (unsigned)limit, .window_s = (unsigned)window_s};
    return 0;
}

/* Adds one --tenant GUID, which must differ from the others. */
static int add_tenant(const char *value, struct serve_options *options, struct crd_error *err)
{
    for (size_t i = 0; i < options->tenant_count; i++) {
        if (strcasecmp(options->tenants[i], value) == 0) {
            return crd_error_set(err, -EINVAL, "--tenant '%s' is given twice; give each tenant "
                                 "once", value);
        }
    }
    if (options->tenant_count == FAKEGRAPH_TENANT_MAX) {
        return crd_error_set(err, -EINVAL, "too many --tenant options: at most %d tenants can "
                             "be served", FAKEGRAPH_TENANT_MAX);
    }
    options->tenants[options->tenant_count++] = value;
    return 0;
}

static int apply_serve_option(int id, const char *value, struct serve_options *options,
                              struct crd_error *err)
{
    unsigned long number = 0;
    const char **targets[] = {
        [SERVE_LISTEN] = &options->listen,
        [SERVE_CERT] = &options->cert_file,
        [SERVE_KEY] = &options->key_file,
        [SERVE_CAFILE] = &options->cafile,
        [SERVE_CLIENT_ID] = &options->client_id,
        [SERVE_CLIENT_SECRET_FILE] = &options->client_secret_file,
        [SERVE_CLIENT_CERTIFICATE] = &options->client_certificate_file,
        [SERVE_READY_FILE] = &options->ready_file,
        [SERVE_LOG] = &options->log_file,
    };

    if (id == SERVE_QUOTA_TENANT) {
        return parse_quota("--quota-tenant", value, &options->tenant_quota, err);
    }
    if (id == SERVE_QUOTA_RECORD) {
        return parse_quota("--quota-record", value, &options->record_quota, err);
    }
    if (id == SERVE_MIN_LIFETIME) {
        int r = fakegraph_parse_number("--min-lifetime", value, 1, FAKEGRAPH_MIN_LIFETIME_MAX_S,
                                       &number, err);
        options->min_lifetime_s = (unsigned)number;
        return r;
    }
    if (id == SERVE_TOKEN_LIFETIME) {
        int r = fakegraph_parse_number("--token-lifetime", value, 1, TOKEN_LIFETIME_MAX_S,
                                       &number, err);
        options->token_lifetime_s = (unsigned)number;
        return r;
    }
    if ((id == SERVE_TENANT || id == SERVE_CLIENT_ID) &&
        !crd_guid_is_valid(value, strlen(value))) {
        return crd_error_set(err, -EINVAL, "invalid %s '%s': expected a GUID",
                             id == SERVE_TENANT ? "--tenant" : "--client-id", value);
    }
    if (id == SERVE_TENANT) {
        return add_tenant(value, options, err);
    }
    *targets[id] = value;
    return 0;
}

static int parse_serve_options(int argc, char **argv, struct serve_options *options,
                               struct crd_error *err)
{
    *options = (struct serve_options){
        .token_lifetime_s = DEFAULT_TOKEN_LIFETIME_S,
        .min_lifetime_s = FAKEGRAPH_MIN_LIFETIME_DEFAULT_S,
    };
    for (int i = 2; i < argc;) {
        int id = 0;
        const char *value = "";
        int r = fakegraph_next_option(argc, argv, &i, "serve", serve_specs,
                                      sizeof(serve_specs) / sizeof(serve_specs[0]), &id, &value,
                                      err);
        if (r == 0) {
            r = apply_serve_option(id, value, options, err);
        }
        if (r < 0) {
            return r;
        }
    }

    const char *missing = options->listen == NULL               ? "--listen"
                          : options->cert_file == NULL          ? "--cert"
                          : options->key_file == NULL           ? "--key"
                          : options->cafile == NULL             ? "--cafile"
                          : options->tenant_count == 0          ? "--tenant"
                          : options->client_id == NULL          ? "--client-id"
                          : options->client_secret_file == NULL ? "--client-secret-file"
                                                                : NULL;
    if (missing != NULL) {
        return crd_error_set(err, -EINVAL, "serve requires %s", missing);
    }
    return 0;
}

/*
 * Binds "127.0.0.1:PORT", "[::1]:PORT" or "localhost:PORT" (PORT 0: any
 * free port) and listens. Writes the base URL's host part to host.
 */
static int bind_loopback(const char *listen_address, int *ret_fd, char *host, size_t host_size,
                         struct crd_error *err)
{
    const char *colon = strrchr(listen_address, ':');
    unsigned long port = 0;
    if (colon == NULL ||
        fakegraph_parse_number("--listen port", colon + 1, 0, 65535, &port, err) < 0) {
        return crd_error_set(err, -EINVAL, "invalid --listen '%s': expected 127.0.0.1:PORT, "
                             "[::1]:PORT or localhost:PORT", listen_address);
    }
    size_t host_len = (size_t)(colon - listen_address);

    struct sockaddr_storage storage = {0};
    socklen_t addr_len = 0;
    int family = AF_INET;
    if ((host_len == 9 && strncmp(listen_address, "127.0.0.1", 9) == 0) ||
        (host_len == 9 && strncmp(listen_address, "localhost", 9) == 0)) {
        struct sockaddr_in *in4 = (struct sockaddr_in *)&storage;
        in4->sin_family = AF_INET;
        in4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        in4->sin_port = htons((uint16_t)port);
        addr_len = sizeof(*in4);
    } else if (host_len == 5 && strncmp(listen_address, "[::1]", 5) == 0) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&storage;
        family = AF_INET6;
        in6->sin6_family = AF_INET6;
        in6->sin6_addr = in6addr_loopback;
        in6->sin6_port = htons((uint16_t)port);
        addr_len = sizeof(*in6);
    } else {
        return crd_error_set(err, -EINVAL, "refusing --listen '%s': fakegraph listens only on "
                             "127.0.0.1, [::1] or localhost", listen_address);
    }
    snprintf(host, host_size, "%.*s", (int)host_len, listen_address);

    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return crd_error_set(err, -errno, "cannot create a socket: %s", strerror(errno));
    }
    int on = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (bind(fd, (struct sockaddr *)&storage, addr_len) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        int r = -errno;
        close(fd);
        return crd_error_set(err, r, "cannot listen on %s: %s; is another process using the "
                             "port?", listen_address, strerror(-r));
    }
    *ret_fd = fd;
    return 0;
}

static unsigned bound_port(int fd)
{
    struct sockaddr_storage storage;
    socklen_t len = sizeof(storage);
    if (getsockname(fd, (struct sockaddr *)&storage, &len) < 0) {
        return 0;
    }
    if (storage.ss_family == AF_INET6) {
        return ntohs(((struct sockaddr_in6 *)&storage)->sin6_port);
    }
    return ntohs(((struct sockaddr_in *)&storage)->sin_port);
}

/* Writes "PORT\n" to a temporary file and renames it, so a reader never sees a partial file. */
static int write_ready_file(const char *path, unsigned port, struct crd_error *err)
{
    char *temporary = NULL;
    if (asprintf(&temporary, "%s.tmp", path) < 0) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    char text[16];
    int len = snprintf(text, sizeof(text), "%u\n", port);
    int r = 0;

    int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, text, (size_t)len) != len) {
        r = crd_error_set(err, -errno, "cannot write the ready file '%s': %s", temporary,
                          strerror(errno));
    }
    if (fd >= 0 && close(fd) < 0 && r == 0) {
        r = crd_error_set(err, -errno, "cannot write the ready file '%s': %s", temporary,
                          strerror(errno));
    }
    if (r == 0 && rename(temporary, path) < 0) {
        r = crd_error_set(err, -errno, "cannot rename '%s' to '%s': %s", temporary, path,
                          strerror(errno));
    }
    if (r < 0) {
        (void)unlink(temporary);
    }
    free(temporary);
    return r;
}

static int server_init(struct fakegraph_server *server, const struct serve_options *options,
                       int log_fd, struct crd_error *err)
{
    *server = (struct fakegraph_server){
        .tenant_count = options->tenant_count,
        .client_id = options->client_id,
        .cafile = options->cafile,
        .token_lifetime_s = options->token_lifetime_s,
        .min_lifetime_s = options->min_lifetime_s,
        .log_fd = log_fd,
        .tenant_quota = options->tenant_quota,
        .record_quota = options->record_quota,
    };
    memcpy(server->tenants, options->tenants, sizeof(server->tenants));
    pthread_mutex_init(&server->lock, NULL);
    /* fakegraph_server_wait() passes monotonic deadlines. */
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&server->stopping_changed, &attributes);
    pthread_condattr_destroy(&attributes);

    server->request_log = json_array();
    if (server->request_log == NULL) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    return fakegraph_random_guid(server->creator_id, err);
}

static void server_destroy(struct fakegraph_server *server)
{
    fakegraph_records_clear_locked(server);
    fakegraph_faults_clear_locked(server);
    fakegraph_quota_clear_locked(server);
    for (size_t i = 0; i < server->subscription_count; i++) {
        fakegraph_subscription_clear(&server->subscriptions[i]);
    }
    free(server->subscriptions);
    free(server->tokens);
    json_decref(server->request_log);
    pthread_cond_destroy(&server->stopping_changed);
    pthread_mutex_destroy(&server->lock);
}

/* Everything serve() opens, so that one cleanup path releases it. */
struct serve_resources {
    int log_fd;
    int listen_fd;
    char *cert_pem;
    struct crd_secret *key;
    struct crd_secret *client_secret;
};

static int load_credentials(const struct serve_options *options,
                            struct serve_resources *resources, struct crd_error *err)
{
    size_t len = 0;
    int r = fakegraph_read_file("--cert", options->cert_file, CRD_SECRET_MAX_SIZE,
                                &resources->cert_pem, &len, err);
    if (r < 0) {
        return r;
    }
    r = crd_secret_read_file(options->key_file, false, &resources->key, NULL, err);
    if (r < 0) {
        return crd_error_prefix(err, "--key");
    }
    r = crd_secret_read_file(options->client_secret_file, true, &resources->client_secret, NULL,
                             err);
    if (r < 0) {
        return crd_error_prefix(err, "--client-secret-file");
    }
    if (crd_secret_len(resources->client_secret) == 0) {
        return crd_error_set(err, -EINVAL, "--client-secret-file '%s' is empty",
                             options->client_secret_file);
    }
    return 0;
}

/* Runs the server until SIGTERM or SIGINT. */
static int serve(const struct serve_options *options, struct crd_error *err)
{
    struct serve_resources resources = {.log_fd = STDERR_FILENO, .listen_fd = -1};
    struct fakegraph_server server;
    struct MHD_Daemon *daemon = NULL;
    bool server_ready = false;
    int r = 0;

    if (options->log_file != NULL) {
        resources.log_fd = open(options->log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                                0600);
        if (resources.log_fd < 0) {
            r = crd_error_set(err, -errno, "cannot open --log '%s': %s", options->log_file,
                              strerror(errno));
            goto out;
        }
    }
    if ((r = load_credentials(options, &resources, err)) < 0 ||
        (r = server_init(&server, options, resources.log_fd, err)) < 0) {
        goto out;
    }
    server_ready = true;
    server.client_secret = resources.client_secret;
    if (options->client_certificate_file != NULL) {
        r = fakegraph_client_certificate_load(options->client_certificate_file,
                                              &server.client_certificate, err);
        if (r < 0) {
            goto out;
        }
    }

    char host[16];
    r = bind_loopback(options->listen, &resources.listen_fd, host, sizeof(host), err);
    if (r < 0) {
        goto out;
    }
    unsigned port = bound_port(resources.listen_fd);
    snprintf(server.base_url, sizeof(server.base_url), "https://%s:%u", host, port);

    /* Threads inherit the signal mask, so only sigwait() below receives these signals. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    r = fakegraph_server_start(&server, resources.listen_fd, resources.cert_pem,
                               crd_secret_bytes(resources.key), &daemon, err);
    resources.listen_fd = -1;
    if (r < 0) {
        goto out;
    }
    char tenants[FAKEGRAPH_TENANT_MAX * (CRD_GUID_LEN + 2) + 1];
    fakegraph_tenants_format(&server, tenants, sizeof(tenants));
    fakegraph_server_log(&server, "listening on %s (%s %s, client id %s, token lifetime %u s)",
                         server.base_url, server.tenant_count > 1 ? "tenants" : "tenant",
                         tenants, server.client_id, server.token_lifetime_s);
    if (server.tenant_quota.limit > 0 || server.record_quota.limit > 0) {
        fakegraph_server_log(&server, "call-record quotas: %u per %u s per tenant, %u per %u s "
                             "per record of a tenant (0: none); beyond them 429 with "
                             "Retry-After",
                             server.tenant_quota.limit, server.tenant_quota.window_s,
                             server.record_quota.limit, server.record_quota.window_s);
    }
    if (options->ready_file != NULL) {
        r = write_ready_file(options->ready_file, port, err);
        if (r < 0) {
            goto out;
        }
    }

    int signal_number = 0;
    while (sigwait(&signals, &signal_number) != 0) {
    }
    fakegraph_server_log(&server, "received %s; stopping", strsignal(signal_number));

out:
    if (server_ready) {
        fakegraph_server_stop(&server, daemon);
        if (r == 0) {
            fakegraph_server_log(&server, "stopped");
        }
        fakegraph_client_certificate_free(server.client_certificate);
        server_destroy(&server);
    }
    if (resources.listen_fd >= 0) {
        close(resources.listen_fd);
    }
    free(resources.cert_pem);
    crd_secret_free(resources.key);
    crd_secret_free(resources.client_secret);
    if (resources.log_fd != STDERR_FILENO) {
        close(resources.log_fd);
    }
    return r;
}

int fakegraph_run_serve(int argc, char **argv)
{
    struct crd_error err = {0};
    struct serve_options options;
    if (parse_serve_options(argc, argv, &options, &err) < 0) {
        fprintf(stderr, "fakegraph: %s\nRun 'fakegraph help' for usage.\n", err.message);
        return FAKEGRAPH_EXIT_ERROR;
    }
    if (serve(&options, &err) < 0) {
        fprintf(stderr, "fakegraph: serve: %s\n", err.message);
        return FAKEGRAPH_EXIT_ERROR;
    }
    return FAKEGRAPH_EXIT_PASSED;
}
