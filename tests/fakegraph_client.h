/* SPDX-License-Identifier: MIT */
/*
 * The commands that drive a running "fakegraph serve" through its control
 * API: publish, trigger and fault (fakegraph_client.c), which the scenario
 * driver (fakegraph_scenario.c) runs as steps too. Each prints one line per
 * result to stdout. Their tenant options name one of the tenants the server
 * serves, and the server rejects any other.
 */
#ifndef CRD_TEST_FAKEGRAPH_CLIENT_H
#define CRD_TEST_FAKEGRAPH_CLIENT_H

#include "fakegraph.h"

/* Where the control API is. */
struct fakegraph_control {
    const char *base;      /* "https://127.0.0.1:PORT", the server's base URL */
    const char *cafile;    /* NULL: system CA store */
};

/*
 * POSTs body (borrowed; NULL for an empty body) as JSON to base + path.
 * Sets *ret_status and *ret_response (the parsed response body, or NULL
 * when it is empty or not JSON; the caller json_decref()s it). Returns 0,
 * or a negative code when no response arrived.
 */
int fakegraph_control_post(const struct fakegraph_control *control, const char *path,
                           const json_t *body, long *ret_status, json_t **ret_response,
                           struct crd_error *err);

struct fakegraph_publish_options {
    struct fakegraph_control control;
    const char **records;          /* the record, then session pages */
    size_t record_count;
    const char **participants;     /* participants_v2 pages */
    size_t participant_count;
    long not_found_for_ms;         /* -1: not given */
    const char *tenant;            /* NULL: the server's default tenant */
};

/*
 * Merges the files (later record files' "value" arrays appended to
 * "sessions", "sessions@odata.nextLink" dropped, participant pages'
 * "value" arrays concatenated) and POSTs them to /_fakegraph/records.
 * Prints "publish: ID version V: N sessions, M participants". Returns 0,
 * or a negative code with err filled when the files or the server fail.
 */
int fakegraph_publish(const struct fakegraph_publish_options *options, struct crd_error *err);

struct fakegraph_trigger_options {
    struct fakegraph_control control;
    const char *call_id;
    const char *change_type;       /* "created" or "updated" */
    unsigned repeat;
    bool batch;                    /* repeat items in one POST, not repeat POSTs */
    const char *notification_url;  /* NULL: the server's subscriptions */
    const char *client_state;
    const char *subscription;
    const char *tenant;            /* NULL: the record's tenant, else the default tenant */
};

/*
 * Calls /_fakegraph/notify and prints "trigger: HTTP <status>" for each
 * notification POST. *ret_passed is true when every status was 202 (or
 * expect_status). Returns 0, or a negative code when the server refused
 * the request or could not deliver it.
 */
int fakegraph_trigger(const struct fakegraph_trigger_options *options, long expect_status,
                      bool *ret_passed, struct crd_error *err);

struct fakegraph_fault_options {
    struct fakegraph_control control;
    const char *match;             /* path prefix */
    unsigned status;               /* 0: none */
    long retry_after_s;            /* -1: no Retry-After header */
    unsigned count;
    unsigned delay_ms;
    bool drop;
    bool truncate;
    const char *tenant;            /* NULL: requests of every tenant */
};

/*
 * Parses the fault command's options in argv[first..argc). --control and
 * --cafile are accepted only when with_control is set; without it the
 * caller fills options->control. Returns 0 or -EINVAL.
 */
int fakegraph_parse_fault_options(int argc, char **argv, int first, bool with_control,
                                  struct fakegraph_fault_options *options,
                                  struct crd_error *err);

/* Queues the fault through /_fakegraph/faults and prints "fault: queued ...". */
int fakegraph_fault(const struct fakegraph_fault_options *options, struct crd_error *err);

#endif
