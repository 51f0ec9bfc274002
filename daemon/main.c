/* SPDX-License-Identifier: MIT */
/*
 * callrecd: wires the modules of lib/ together and runs them as a systemd
 * service (Type=notify, watchdog, socket activation). Holds nothing reusable.
 */
#include "config.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "error.h"
#include "listener.h"
#include "log.h"
#include "secret.h"
#include "store.h"
#include "util.h"

/* Message ids for `journalctl MESSAGE_ID=...`. */
#define MESSAGE_ID_STARTED "253fe0a4fafc4761b2ef6e60a38c2d95"
#define MESSAGE_ID_STOPPED "a46b8d7fb91241f2909ee27964cde2cb"

#define CLIENT_STATE_SETTING "client_state"
#define CLIENT_STATE_RANDOM_BYTES 32

struct options {
    const char *config_path;
    bool check_config;
};

static void print_usage(FILE *out)
{
    fprintf(out,
            "Usage: callrecd [OPTIONS]\n"
            "Collects Microsoft Teams call records from Microsoft Graph change notifications.\n"
            "\n"
            "  -c, --config FILE    configuration file (default %s)\n"
            "  -t, --check-config   validate the configuration, print every problem, and exit\n"
            "                       with 0 when it is valid or 1 when it is not\n"
            "  -h, --help           show this help and exit\n"
            "  -V, --version        show the version and exit\n",
            CRD_CONFIG_DEFAULT_PATH);
}

/* Returns 0 to run, 1 to exit with success (help, version), or -EINVAL. */
static int parse_arguments(int argc, char **argv, struct options *options)
{
    static const struct option long_options[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };

    options->config_path = CRD_CONFIG_DEFAULT_PATH;
    int c;
    while ((c = getopt_long(argc, argv, "c:thV", long_options, NULL)) != -1) {
        switch (c) {
        case 'c':
            options->config_path = optarg;
            break;
        case 't':
            options->check_config = true;
            break;
        case 'h':
            print_usage(stdout);
            return 1;
        case 'V':
            printf("%s\n", PACKAGE_STRING);
            return 1;
        default:
            print_usage(stderr);
            return -EINVAL;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "callrecd: unexpected argument '%s'; see callrecd --help\n", argv[optind]);
        return -EINVAL;
    }
    return 0;
}

static int load_config(const char *path, struct crd_config **ret_config)
{
    struct crd_config_env env = {
        .credentials_directory = getenv("CREDENTIALS_DIRECTORY"),
        .state_directory = getenv("STATE_DIRECTORY"),
    };
    struct crd_diagnostics diag = {0};
    int r = crd_config_load(path, &env, ret_config, &diag);
    for (size_t i = 0; i < diag.n_items; i++) {
        fprintf(stderr, "%s: %s\n",
                diag.items[i].severity == CRD_DIAGNOSTIC_ERROR ? "error" : "warning",
                diag.items[i].message);
    }
    if (r < 0 && diag.n_errors == 0) {
        fprintf(stderr, "error: cannot load the configuration '%s': %s\n", path, strerror(-r));
    }
    crd_diagnostics_clear(&diag);
    return r;
}

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

/* Waits for SIGTERM or SIGINT, sending watchdog keep-alives meanwhile. */
static void run_until_stopped(void)
{
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);

    uint64_t watchdog_usec = 0;
    bool watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0;

    for (;;) {
        int signal_number;
        if (watchdog) {
            /* sd_watchdog_enabled(3) advises a keep-alive every half interval. */
            uint64_t half = watchdog_usec / 2;
            struct timespec timeout = {.tv_sec = (time_t)(half / 1000000),
                                       .tv_nsec = (long)(half % 1000000) * 1000};
            signal_number = sigtimedwait(&signals, NULL, &timeout);
            if (signal_number < 0) {
                (void)sd_notify(0, "WATCHDOG=1");
                continue;
            }
        } else if (sigwait(&signals, &signal_number) != 0) {
            continue;
        }

        if (signal_number == SIGHUP) {
            crd_log_notice(NULL, "received SIGHUP; nothing to reload yet, ignoring (restart the "
                           "service to apply configuration changes)");
            continue;
        }
        crd_log_notice(NULL, "received %s; stopping", strsignal(signal_number));
        return;
    }
}

static int run(const struct crd_config *config)
{
    int r = 0;
    struct crd_error err = {0};
    struct crd_store *store = NULL;
    struct crd_secret *client_state = NULL;
    struct crd_listener *listener = NULL;

    struct crd_store_options store_options = {
        .state_directory = config->store.state_directory,
        .durability = config->store.durability,
        /* Give up on a locked database well inside the 3 s Graph waits for a response. */
        .busy_timeout_ms = 1000,
    };
    struct crd_store_open_report report = {0};
    r = crd_store_open(&store_options, &store, &report, &err);
    if (r < 0) {
        crd_log_err(NULL, "cannot open the store: %s", err.message);
        goto out;
    }
    if (report.schema_version_before != report.schema_version) {
        crd_log_notice(NULL, "store schema upgraded from version %d to %d",
                       report.schema_version_before, report.schema_version);
    }
    crd_log_info(NULL, "store opened in '%s' (durability %s): %lld jobs waiting",
                 config->store.state_directory, crd_durability_name(config->store.durability),
                 (long long)report.pending_jobs);

    r = obtain_client_state(config, store, &client_state, &err);
    if (r < 0) {
        crd_log_err(NULL, "cannot obtain the clientState: %s", err.message);
        goto out;
    }

    int listen_fd = adopt_systemd_socket(&err);
    if (listen_fd < -1) {
        r = listen_fd;
        crd_log_err(NULL, "%s", err.message);
        goto out;
    }

    struct crd_listener_options listener_options = {
        .config = config,
        .store = store,
        .client_state = client_state,
        .listen_fd = listen_fd,
    };
    r = crd_listener_start(&listener_options, &listener, &err);
    if (r < 0) {
        crd_log_err(NULL, "cannot start the listener: %s", err.message);
        goto out;
    }

    CRD_LOG_AT(CRD_LOG_NOTICE, MESSAGE_ID_STARTED, NULL,
               "%s listening on %s port %u (%s%s); notifications at %s%s",
               PACKAGE_STRING, listen_fd >= 0 ? "a socket from systemd" : config->listener.address,
               crd_listener_port(listener), config->listener.tls ? "HTTPS" : "plain HTTP",
               config->listener.tls ? "" : ", TLS is terminated by a proxy",
               config->listener.public_url, config->listener.notification_path);
    (void)sd_notifyf(0, "READY=1\nSTATUS=Listening on port %u", crd_listener_port(listener));

    run_until_stopped();
    (void)sd_notify(0, "STOPPING=1");

out:
    crd_listener_stop(listener);
    crd_secret_free(client_state);
    crd_store_close(store);
    if (r == 0) {
        CRD_LOG_AT(CRD_LOG_NOTICE, MESSAGE_ID_STOPPED, NULL, "stopped cleanly");
    }
    return r;
}

int main(int argc, char **argv)
{
    struct options options = {0};
    int r = parse_arguments(argc, argv, &options);
    if (r != 0) {
        return r > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
    }

    struct crd_config *config = NULL;
    r = load_config(options.config_path, &config);
    if (options.check_config) {
        if (r < 0) {
            fprintf(stderr, "callrecd: configuration file '%s' test failed\n",
                    options.config_path);
            return EXIT_FAILURE;
        }
        printf("callrecd: configuration file '%s' test is successful\n", options.config_path);
        crd_config_free(config);
        return EXIT_SUCCESS;
    }
    if (r < 0) {
        return EXIT_FAILURE;
    }

    crd_log_setup(config->log.level, config->log.debug_mask, CRD_LOG_TARGET_AUTO);

    /* Before any thread starts: libcurl's global init, and signals handled by sigwait() only. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        crd_log_err(NULL, "cannot initialise libcurl");
        crd_config_free(config);
        return EXIT_FAILURE;
    }
    signal(SIGPIPE, SIG_IGN);
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);

    r = run(config);

    curl_global_cleanup();
    crd_config_free(config);
    return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
