/* SPDX-License-Identifier: MIT */
/*
 * callrecctl: looks at and re-arms callrecd's dead letters, and prints
 * counts of jobs, outbox rows and dead letters. It reads the state directory
 * from callrecd's configuration file, without reading any secret, and opens
 * the same SQLite database, which WAL mode allows while callrecd runs.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "store.h"
#include "util.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: callrecctl [-c FILE] COMMAND\n"
            "\n"
            "Commands:\n"
            "  dead-letters                    list the jobs and deliveries given up\n"
            "  retry --all                     re-arm every dead letter\n"
            "  retry --call ID [--sink NAME]   re-arm the dead letters of one call, or only its\n"
            "                                  deliveries to one sink\n"
            "  status                          count jobs, outbox rows and dead letters\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE   callrecd's configuration file (default %s)\n"
            "  -h, --help          show this help\n",
            CRD_CONFIG_DEFAULT_PATH);
}

/* Formats ms since the epoch as UTC ISO 8601 to the second. */
static void format_time(int64_t ms, char *buf, size_t size)
{
    time_t seconds = (time_t)(ms / 1000);
    struct tm tm;
    if (ms <= 0 || gmtime_r(&seconds, &tm) == NULL ||
        strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        snprintf(buf, size, "-");
    }
}

static int print_dead_letter(const struct crd_dead_letter *letter, void *context)
{
    size_t *count = context;
    char first[32];
    char last[32];
    char version[24] = "-";
    format_time(letter->first_failed_at_ms, first, sizeof(first));
    format_time(letter->last_failed_at_ms, last, sizeof(last));
    if (letter->version >= 0) {
        snprintf(version, sizeof(version), "%lld", (long long)letter->version);
    }
    printf("%-8s  %-36s  %-36s  %-7s  %-12s  %8u  %-20s  %-20s  %s\n",
           crd_dead_letter_kind_name(letter->kind), letter->tenant_id, letter->call_id, version,
           letter->sink[0] != '\0' ? letter->sink : "-", letter->attempts, first, last,
           letter->last_error);
    (*count)++;
    return 0;
}

static int command_dead_letters(struct crd_store *store)
{
    printf("%-8s  %-36s  %-36s  %-7s  %-12s  %8s  %-20s  %-20s  %s\n", "KIND", "TENANT",
           "CALL ID", "VERSION", "SINK", "ATTEMPTS", "FIRST FAILED", "LAST FAILED", "LAST ERROR");
    size_t count = 0;
    struct crd_error err = {0};
    if (crd_store_list_dead_letters(store, print_dead_letter, &count, &err) < 0) {
        fprintf(stderr, "callrecctl: cannot list the dead letters: %s\n", err.message);
        return 1;
    }
    printf("%zu dead letters\n", count);
    return 0;
}

static int command_retry(struct crd_store *store, int argc, char **argv)
{
    static const struct option options[] = {
        {"all", no_argument, NULL, 'a'},
        {"call", required_argument, NULL, 'C'},
        {"sink", required_argument, NULL, 's'},
        {NULL, 0, NULL, 0},
    };
    bool all = false;
    const char *call_id = NULL;
    const char *sink = NULL;
    optind = 1;
    int option;
    while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (option) {
        case 'a':
            all = true;
            break;
        case 'C':
            call_id = optarg;
            break;
        case 's':
            sink = optarg;
            break;
        default:
            fprintf(stderr, "callrecctl retry: use --all, or --call ID with an optional "
                    "--sink NAME\n");
            return 2;
        }
    }
    if (all == (call_id != NULL) || (all && sink != NULL) || optind != argc) {
        fprintf(stderr, "callrecctl retry: give either --all, or --call ID with an optional "
                "--sink NAME\n");
        return 2;
    }
    if (call_id != NULL && !crd_guid_is_valid(call_id, strlen(call_id))) {
        fprintf(stderr, "callrecctl retry: call id '%s' is not a GUID; copy it from "
                "'callrecctl dead-letters'\n", call_id);
        return 2;
    }

    int64_t jobs = 0;
    int64_t deliveries = 0;
    struct crd_error err = {0};
    if (crd_store_retry_dead_letters(store, call_id, sink, crd_time_now_ms(), &jobs, &deliveries,
                                     &err) < 0) {
        fprintf(stderr, "callrecctl: cannot retry the dead letters: %s\n", err.message);
        return 1;
    }
    printf("re-armed %lld jobs and %lld deliveries\n", (long long)jobs, (long long)deliveries);
    if (jobs + deliveries > 0) {
        printf("a running callrecd picks them up within [fetch] retry_max for jobs and within "
               "60 s for deliveries; a SIGHUP (systemctl reload callrecd) wakes the sinks at "
               "once\n");
    }
    return 0;
}

static int command_status(struct crd_store *store, const struct crd_config *config)
{
    static const char *const states[] = {"pending", "running", "done", "failed"};
    struct crd_error err = {0};
    int64_t count = 0;
    printf("jobs:");
    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
        if (crd_store_count_jobs(store, states[i], &count, &err) < 0) {
            goto fail;
        }
        printf(" %s %lld%s", states[i], (long long)count, i + 1 < 4 ? "," : "\n");
    }
    if (crd_store_count_dead_letters(store, CRD_DEAD_LETTER_JOB, NULL, &count, &err) < 0) {
        goto fail;
    }
    printf("job dead letters: %lld\n", (long long)count);

    printf("%-20s  %8s  %12s\n", "SINK", "OUTBOX", "DEAD LETTERS");
    for (size_t i = 0; i < config->n_sinks; i++) {
        int64_t waiting = 0;
        int64_t dead = 0;
        if (crd_store_count_deliveries(store, config->sinks[i].name, &waiting, &err) < 0 ||
            crd_store_count_dead_letters(store, CRD_DEAD_LETTER_DELIVERY, config->sinks[i].name,
                                         &dead, &err) < 0) {
            goto fail;
        }
        printf("%-20s  %8lld  %12lld\n", config->sinks[i].name, (long long)waiting,
               (long long)dead);
    }
    return 0;

fail:
    fprintf(stderr, "callrecctl: cannot read the counts: %s\n", err.message);
    return 1;
}

/* Loads the configuration without secrets, printing its problems. */
static struct crd_config *load_config(const char *path)
{
    struct crd_config_env env = {
        .state_directory = getenv("STATE_DIRECTORY"),
        .skip_secrets = true,
    };
    struct crd_diagnostics diag = {0};
    struct crd_config *config = NULL;
    int r = crd_config_load(path, &env, &config, &diag);
    for (size_t i = 0; i < diag.n_items; i++) {
        if (r < 0 || diag.items[i].severity == CRD_DIAGNOSTIC_ERROR) {
            fprintf(stderr, "%s\n", diag.items[i].message);
        }
    }
    if (r < 0 && diag.n_errors == 0) {
        fprintf(stderr, "callrecctl: cannot read '%s': %s; name the file with -c FILE\n", path,
                strerror(-r));
    }
    crd_diagnostics_clear(&diag);
    return r == 0 ? config : NULL;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = CRD_CONFIG_DEFAULT_PATH;
    int option;
    /* "+" stops at the command, whose own options follow it. */
    while ((option = getopt_long(argc, argv, "+c:h", options, NULL)) != -1) {
        switch (option) {
        case 'c':
            config_path = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    const char *command = argv[optind];
    if (strcmp(command, "dead-letters") != 0 && strcmp(command, "retry") != 0 &&
        strcmp(command, "status") != 0) {
        fprintf(stderr, "callrecctl: unknown command '%s'; use dead-letters, retry or status\n",
                command);
        return 2;
    }

    int status = 1;
    struct crd_store *store = NULL;
    struct crd_config *config = load_config(config_path);
    if (config == NULL) {
        goto out;
    }
    struct crd_store_options store_options = {
        .state_directory = config->store.state_directory,
        .durability = config->store.durability,
    };
    struct crd_error err = {0};
    /* Opening would create an empty store, which would look like a healthy idle daemon. */
    char *db_path = NULL;
    if (asprintf(&db_path, "%s/%s", config->store.state_directory, CRD_STORE_FILE_NAME) < 0) {
        goto out;
    }
    if (access(db_path, F_OK) < 0) {
        fprintf(stderr, "callrecctl: no callrecd database at '%s'; check [store] "
                "state_directory in '%s' (or $STATE_DIRECTORY), or start callrecd once\n",
                db_path, config_path);
        free(db_path);
        goto out;
    }
    free(db_path);
    if (crd_store_open(&store_options, &store, NULL, &err) < 0) {
        fprintf(stderr, "callrecctl: %s\n", err.message);
        goto out;
    }

    if (strcmp(command, "dead-letters") == 0) {
        status = command_dead_letters(store);
    } else if (strcmp(command, "retry") == 0) {
        status = command_retry(store, argc - optind, argv + optind);
    } else {
        status = command_status(store, config);
    }

out:
    crd_store_close(store);
    crd_config_free(config);
    return status;
}
