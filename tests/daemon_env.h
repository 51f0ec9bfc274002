/* SPDX-License-Identifier: MIT */
/*
 * A complete environment for running the real daemon in a test: a temporary
 * directory with generated TLS material (tests/testcert), a client secret, a
 * clientState and a configuration file listening on a free loopback port.
 */
#ifndef CRD_TEST_DAEMON_ENV_H
#define CRD_TEST_DAEMON_ENV_H

#include <stdint.h>

#include "harness.h"

/* The clientState of the shared notification fixtures. */
#define CRD_TEST_CLIENT_STATE "cr-4b8e1f0c9d2a47e6b3c5a7d9e1f20384"
/* A recognisable client secret, so tests can check that no output contains it. */
#define CRD_TEST_CLIENT_SECRET "s3cr3t-CLIENT-value-that-must-never-be-logged"

struct crd_test_env {
    char *dir;
    char *ca_file;
    char *tls_dir;           /* ca.pem, server.pem and server.key from tests/testcert */
    char *config_path;
    char *db_path;
    char *log_path;
    uint16_t port;
    char base_url[64];       /* https://127.0.0.1:PORT */
    struct crd_test_daemon daemon;
};

/* Configuration text added to the generated file; every field may be NULL. */
struct crd_test_env_options {
    const char *graph;       /* appended to [graph] */
    /* Replaces the client_secret_file line, e.g. with certificate credentials; NULL: keep it. */
    const char *credentials;
    const char *listener;    /* appended to [listener] */
    const char *sections;    /* whole sections appended at the end, such as [fetch] or [sink NAME] */
    /*
     * [tenant NAME] sections. When set, [graph] and [subscription] get no
     * tenant, credentials or client_state_file, as the file may not mix both.
     */
    const char *tenants;
};

/*
 * Creates the directory, certificates and configuration. extra_listener is
 * appended to the [listener] section (may be NULL). Aborts on failure.
 */
void crd_test_env_create(struct crd_test_env *env, const char *extra_listener);

/* Like crd_test_env_create(), with text for several sections. */
void crd_test_env_create_with(struct crd_test_env *env, const struct crd_test_env_options *options);

/* Starts the daemon and waits for READY=1; returns 0 or a negative code. */
int crd_test_env_start(struct crd_test_env *env);

/* Stops the daemon (if running) and returns its exit status. */
int crd_test_env_stop(struct crd_test_env *env);

/* Removes the directory unless $CRD_KEEP_TEST_DIRS is set. */
void crd_test_env_destroy(struct crd_test_env *env);

/*
 * Waits until the daemon's log shows count subscriptions created, adopted or
 * recreated. Tests that make fakegraph notify call it first, because Graph
 * never notifies before the subscription exists and callrecd drops a
 * notification for a subscription other than its own.
 */
bool crd_test_env_wait_for_subscriptions(const struct crd_test_env *env, size_t count);

/*
 * Waits until the daemon's log has at least count lines containing needle,
 * re-reading it whenever it changes, for at most timeout_ms. Returns true
 * when they are there.
 */
bool crd_test_env_wait_for_lines(const struct crd_test_env *env, const char *needle, size_t count,
                                 int timeout_ms);

/* Number of rows in the daemon's jobs table, read through a separate SQLite connection. */
long crd_test_env_count_jobs(const struct crd_test_env *env);

#endif
