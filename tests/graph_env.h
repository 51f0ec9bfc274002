/* SPDX-License-Identifier: MIT */
/*
 * A running `fakegraph serve` for tests that need Graph: its own TLS material
 * from tests/testcert, a free loopback port, and helpers for the control API.
 */
#ifndef CRD_TEST_GRAPH_ENV_H
#define CRD_TEST_GRAPH_ENV_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon_env.h"

#define CRD_TEST_TENANT_ID "2a37c3b7-f073-59a1-b249-42c4e33881c2"
#define CRD_TEST_CLIENT_ID "0b7f0d3a-5a55-4e4e-9d7d-3f2c1b0a9e8d"

struct crd_test_graph {
    char *dir;            /* TLS material, ready file and log */
    char *ca_file;
    char *log_path;
    uint16_t port;
    char base_url[64];    /* https://127.0.0.1:PORT */
    pid_t pid;
};

/* Makes the directory and TLS material and picks the port; nothing runs yet. */
void crd_test_graph_prepare(struct crd_test_graph *graph);

/*
 * "[graph]" keys that point callrecd at this emulator, for
 * crd_test_env_options.graph; malloc'ed.
 */
char *crd_test_graph_config(const struct crd_test_graph *graph);

/*
 * Starts fakegraph serve, trusting env's CA for notifications and taking the
 * client secret from env's directory. extra_arguments (NULL-terminated, may
 * be NULL) are added to the command line. Fails the test when it does not
 * become ready.
 */
void crd_test_graph_start(struct crd_test_graph *graph, const struct crd_test_env *env,
                          const char *const *extra_arguments);

/*
 * GETs base_url + path, trusting ca_file, and returns the parsed JSON body.
 * Fails the test when the request fails or the body is not JSON.
 */
json_t *crd_test_get_json(const char *base_url, const char *path, const char *ca_file);

/* POSTs body to /_fakegraph/PATH; returns the HTTP status and, when wanted, the parsed body. */
long crd_test_graph_control(const struct crd_test_graph *graph, const char *path, json_t *body,
                            json_t **ret_answer);

/* Stops fakegraph and removes its directory unless $CRD_KEEP_TEST_DIRS is set. */
void crd_test_graph_stop(struct crd_test_graph *graph);

/* ---- a daemon, fakegraph and a file sink together --------------------------- */

struct crd_test_world {
    struct crd_test_env env;
    struct crd_test_graph graph;
    char *sink_dir;
    char *sink_path;      /* the JSON Lines file of [sink archive] */
};

/*
 * Starts fakegraph and callrecd. graph_extra is appended to [graph] and
 * sections (such as "[fetch]\n...") before a [sink archive] file sink; both
 * may be NULL. Exits the test program when either does not start.
 */
void crd_test_world_start(struct crd_test_world *world, const char *graph_extra,
                          const char *sections);

/* Stops both and removes their directories (unless $CRD_KEEP_TEST_DIRS is set). */
void crd_test_world_stop(struct crd_test_world *world);

/* Publishes a copy of record with its id and version replaced. */
void crd_test_world_publish(struct crd_test_world *world, const json_t *record,
                            const char *call_id, long long version);

/* Makes fakegraph send one "updated" notification for call_id; returns callrecd's status. */
long crd_test_world_notify(struct crd_test_world *world, const char *call_id);

/* Lines of the sink for (call id, version). */
size_t crd_test_world_deliveries(const struct crd_test_world *world, const char *call_id,
                                 long long version);

/* Waits up to timeout_ms until the sink has a line for (call id, version). */
bool crd_test_world_wait_delivered(const struct crd_test_world *world, const char *call_id,
                                   long long version, int timeout_ms);

#endif
