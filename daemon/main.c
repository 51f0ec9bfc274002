/* SPDX-License-Identifier: MIT */
/*
 * callrecd: wires the modules of lib/ together and runs them as a systemd
 * service (Type=notify, watchdog, socket activation). Holds nothing reusable.
 */
#include "config.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "services.h"

/* Message ids for `journalctl MESSAGE_ID=...`. */
#define MESSAGE_ID_STARTED "253fe0a4fafc4761b2ef6e60a38c2d95"
#define MESSAGE_ID_STOPPED "a46b8d7fb91241f2909ee27964cde2cb"


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

/*
 * Waits for SIGTERM or SIGINT, sending watchdog keep-alives meanwhile. SIGHUP
 * reopens the sinks' files, for logrotate.
 */
static void run_until_stopped(struct services *services)
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
            crd_log_notice(NULL, "received SIGHUP: reopening the sinks' files (restart the service "
                           "to apply configuration changes)");
            services_reopen_sinks(services);
            continue;
        }
        crd_log_notice(NULL, "received %s; stopping", strsignal(signal_number));
        return;
    }
}

static int run(const struct crd_config *config)
{
    struct services services;
    int r = services_start(config, &services);
    if (r < 0) {
        return r;
    }

    CRD_LOG_AT(CRD_LOG_NOTICE, MESSAGE_ID_STARTED, NULL,
               "%s listening on port %u (%s); notifications at %s%s; tenants: %zu, sinks: %zu, "
               "fetch workers per tenant: %u",
               PACKAGE_STRING, crd_listener_port(services.listener),
               config->listener.tls ? "HTTPS" : "plain HTTP behind a TLS proxy",
               config->listener.public_url, config->listener.notification_path,
               services.n_tenants, services.n_sinks, config->fetch.workers);
    (void)sd_notifyf(0, "READY=1\nSTATUS=Listening on port %u",
                     crd_listener_port(services.listener));

    run_until_stopped(&services);
    (void)sd_notify(0, "STOPPING=1");

    services_stop(&services);
    CRD_LOG_AT(CRD_LOG_NOTICE, MESSAGE_ID_STOPPED, NULL, "stopped cleanly");
    return 0;
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
