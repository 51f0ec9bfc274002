/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon_env.h"

/*
 * Without [graph] options from the test, Graph is a closed loopback port, so
 * that a daemon under test never sends a request off this machine.
 */
#define CRD_TEST_ENV_TENANT_ID "2a37c3b7-f073-59a1-b249-42c4e33881c2"
#define CRD_TEST_ENV_CLIENT_ID "0b7f0d3a-5a55-4e4e-9d7d-3f2c1b0a9e8d"
#define UNREACHABLE_GRAPH "login_url = https://127.0.0.1:1\ngraph_url = https://127.0.0.1:1\n"

void crd_test_env_create(struct crd_test_env *env, const char *extra_listener)
{
    struct crd_test_env_options options = {.listener = extra_listener};
    crd_test_env_create_with(env, &options);
}

void crd_test_env_create_with(struct crd_test_env *env, const struct crd_test_env_options *options)
{
    memset(env, 0, sizeof(*env));
    env->daemon.pid = -1;
    env->daemon.notify_fd = -1;
    env->dir = crd_test_make_tmpdir("crd-test");
    env->port = crd_test_free_port();
    snprintf(env->base_url, sizeof(env->base_url), "https://127.0.0.1:%u", env->port);

    char *testcert = crd_test_build_path("tests/testcert");
    char *tls_dir = NULL;
    if (asprintf(&tls_dir, "%s/tls", env->dir) < 0 || mkdir(tls_dir, 0700) < 0) {
        abort();
    }
    char *argv[] = {testcert, tls_dir, NULL};
    if (crd_test_run(argv, NULL) != 0) {
        fprintf(stderr, "tests/testcert failed\n");
        abort();
    }
    free(testcert);

    free(crd_test_write_file(env->dir, "client_secret", CRD_TEST_CLIENT_SECRET "\n", 0600));
    free(crd_test_write_file(env->dir, "client_state", CRD_TEST_CLIENT_STATE "\n", 0600));

    char *credentials = NULL;
    if (options->credentials != NULL) {
        credentials = strdup(options->credentials);
    } else if (asprintf(&credentials, "client_secret_file = %s/client_secret\n", env->dir) < 0) {
        abort();
    }
    char *tenant_lines = NULL;
    char *client_state_line = NULL;
    if (options->tenants != NULL) {
        tenant_lines = strdup("");
        client_state_line = strdup("");
    } else if (asprintf(&tenant_lines, "tenant = " CRD_TEST_ENV_TENANT_ID "\n"
                        "client_id = " CRD_TEST_ENV_CLIENT_ID "\n%s", credentials) < 0 ||
               asprintf(&client_state_line, "client_state_file = %s/client_state\n",
                        env->dir) < 0) {
        abort();
    }
    free(credentials);

    char *config = NULL;
    if (asprintf(&config,
                 "[graph]\n"
                 "%s"
                 "%s\n"
                 "[listener]\n"
                 "address = 127.0.0.1\n"
                 "port = %u\n"
                 "tls_certificate = %s/server.pem\n"
                 "tls_key = %s/server.key\n"
                 "public_url = %s\n"
                 "%s\n"
                 "[subscription]\n"
                 "%s"
                 "\n"
                 "[store]\n"
                 "state_directory = %s/state\n"
                 "\n"
                 "[log]\n"
                 "level = debug\n"
                 "debug = listener,store,fetch\n"
                 "\n"
                 "%s%s",
                 tenant_lines, options->graph != NULL ? options->graph : UNREACHABLE_GRAPH,
                 env->port, tls_dir, tls_dir, env->base_url,
                 options->listener != NULL ? options->listener : "", client_state_line, env->dir,
                 options->tenants != NULL ? options->tenants : "",
                 options->sections != NULL ? options->sections : "") < 0) {
        abort();
    }
    env->config_path = crd_test_write_file(env->dir, "callrecd.conf", config, 0600);
    free(config);
    free(tenant_lines);
    free(client_state_line);

    if (asprintf(&env->ca_file, "%s/ca.pem", tls_dir) < 0 ||
        asprintf(&env->tls_dir, "%s", tls_dir) < 0 ||
        asprintf(&env->db_path, "%s/state/callrecd.db", env->dir) < 0 ||
        asprintf(&env->log_path, "%s/callrecd.log", env->dir) < 0) {
        abort();
    }
    free(tls_dir);
}

int crd_test_env_start(struct crd_test_env *env)
{
    int r = crd_test_daemon_start(env->config_path, env->log_path, 15000, &env->daemon);
    if (r < 0) {
        crd_test_daemon_dump_log(&env->daemon);
    }
    return r;
}

int crd_test_env_stop(struct crd_test_env *env)
{
    return crd_test_daemon_stop(&env->daemon, 15000);
}

void crd_test_env_destroy(struct crd_test_env *env)
{
    if (env->daemon.pid > 0) {
        (void)crd_test_env_stop(env);
    }
    if (getenv("CRD_KEEP_TEST_DIRS") == NULL) {
        crd_test_remove_tree(env->dir);
    } else {
        fprintf(stderr, "kept test directory %s\n", env->dir);
    }
    free(env->dir);
    free(env->ca_file);
    free(env->tls_dir);
    free(env->config_path);
    free(env->db_path);
    free(env->log_path);
    memset(env, 0, sizeof(*env));
}

long crd_test_env_count_jobs(const struct crd_test_env *env)
{
    sqlite3 *db = NULL;
    long count = -1;
    if (sqlite3_open_v2(env->db_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *stmt = NULL;
        if (sqlite3_prepare_v2(db, "SELECT count(*) FROM jobs", -1, &stmt, NULL) == SQLITE_OK &&
            sqlite3_step(stmt) == SQLITE_ROW) {
            count = (long)sqlite3_column_int64(stmt, 0);
        }
        sqlite3_finalize(stmt);
    }
    sqlite3_close(db);
    return count;
}

static long long env_monotonic_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

bool crd_test_env_wait_for_lines(const struct crd_test_env *env, const char *needle, size_t count,
                                 int timeout_ms)
{
    long long deadline = env_monotonic_ms() + timeout_ms;
    int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (fd >= 0) {
        (void)inotify_add_watch(fd, env->dir, IN_MODIFY | IN_CREATE | IN_MOVED_TO);
    }
    const char *needles[] = {needle, NULL};
    bool found = false;
    for (;;) {
        found = crd_test_count_lines(env->log_path, needles) >= count;
        long long left = deadline - env_monotonic_ms();
        if (found || left <= 0) {
            break;
        }
        /* The log's directory is watched; the 200 ms cap covers a missed event. */
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        (void)poll(&pfd, fd >= 0 ? 1 : 0, left < 200 ? (int)left : 200);
        char events[4096];
        while (fd >= 0 && read(fd, events, sizeof(events)) > 0) {
        }
    }
    if (fd >= 0) {
        close(fd);
    }
    return found;
}

bool crd_test_env_wait_for_subscriptions(const struct crd_test_env *env, size_t count)
{
    /* The end of the "created", "adopted" and "recreated" subscription lines. */
    return crd_test_env_wait_for_lines(env, "' (expires ", count, 15000);
}
