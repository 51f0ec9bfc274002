/* SPDX-License-Identifier: MIT */
/*
 * Shared between graph.c (client, throttle gate, one request with its retry
 * policy) and graph_fetch.c (call records, collections and paging). Internal
 * to lib/; other modules use graph.h.
 */
#ifndef CRD_GRAPH_INTERNAL_H
#define CRD_GRAPH_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "graph.h"
#include "graph_http.h"
#include "log.h"

struct crd_graph {
    char *graph_url;    /* without a trailing slash */
    char *graph_scheme; /* of graph_url, for comparing next links */
    char *graph_host;
    char *graph_port; /* with the scheme's default filled in */
    struct crd_http_settings http;
    unsigned max_attempts;
    unsigned backoff_base_ms;
    unsigned backoff_max_ms;
    struct crd_auth *auth;
    struct crd_graph_limits *limits; /* borrowed and shared with other clients; may be NULL */
    atomic_bool cancelled;

    pthread_mutex_t lock;    /* protects gate_open_at_ms; the waits below use it */
    pthread_cond_t wake;     /* on CLOCK_MONOTONIC; broadcast by crd_graph_cancel() */
    int64_t gate_open_at_ms; /* monotonic; no request is sent before it */
};

struct crd_graph_session {
    struct crd_graph *graph;
    CURL *curl;
    struct crd_http_body body;
    char curl_error[CURL_ERROR_SIZE];
    char retry_after[64];  /* Retry-After of the last response; "" when absent */
    char request_id[64];   /* request-id header of the last response */
    uint64_t random_state; /* for jitter and client-request-ids (splitmix64) */
};

/* Request budget of struct crd_graph_limits that a request uses besides the tenant's. */
enum graph_budget {
    GRAPH_BUDGET_NONE,   /* not paced: subscriptions and other resources */
    GRAPH_BUDGET_RECORD, /* one call record, its sessions or participants: graph_fetch.call_id */
    GRAPH_BUDGET_LIST,   /* a page of List call records */
};

/* The budgets one request took, to give back when its response has arrived. */
struct graph_ticket {
    bool tenant;
    bool list;
    long record; /* index into the record table, or -1 */
};

/* State of one public graph call: a record fetch, a listing or a single request. */
struct graph_fetch {
    struct crd_graph_session *session;
    struct crd_graph *graph;
    const char *call_id;
    struct crd_log_ids ids;
    struct crd_graph_failure *failure;
    char **visited; /* every URL requested so far, to detect loops */
    size_t visited_count;
    size_t visited_capacity;
    unsigned pages;
    const char *not_found_hint; /* appended to a 404's message; "" or NULL for none */
    enum graph_budget budget;
};

/* Outcome of one HTTP attempt. */
enum graph_attempt {
    GRAPH_ATTEMPT_OK,
    GRAPH_ATTEMPT_TRANSIENT,    /* retry after a backoff delay */
    GRAPH_ATTEMPT_THROTTLED,    /* 429: close the gate, then retry */
    GRAPH_ATTEMPT_UNAUTHORIZED, /* 401: refresh the token, then retry once */
    GRAPH_ATTEMPT_FAILED,       /* final; err contains the code */
};

/* ---- small helpers ---------------------------------------------------------------------- */
/*
 * Sends one request with the retry policy: transient failures back off, 429
 * closes the throttle gate, 401 refreshes the token once. method is "GET",
 * "POST", "PATCH" or "DELETE"; body is JSON text or NULL. On success returns
 * 0, sets *ret_status to the 2xx status and *ret_json to the JSON object of
 * the response, or to NULL when the body is empty (204). what names the
 * request in messages.
 */
int crd_graph_send(struct graph_fetch *f, const char *method, const char *url, const char *body,
                   const char *what, long *ret_status, json_t **ret_json, struct crd_error *err);

/* Checks that url is an http(s) URL on the configured Graph host. Returns 0 or -EPROTO. */
int crd_graph_check_host(const struct crd_graph *graph, const char *url, const char *what,
                         struct crd_error *err);

/* Frees the URLs a graph_fetch remembered. */
void crd_graph_fetch_clear(struct graph_fetch *f);

/* ---- request budgets (graph_limits.c) ----------------------------------------------------- */
/*
 * Waits until every budget that budget and call_id select has room, then
 * takes one request from each and fills *ret_ticket. Returns 0, or
 * -ECANCELED once *cancelled is set and crd_graph_limits_wake() was called.
 */
int crd_graph_limits_acquire(struct crd_graph_limits *limits, enum graph_budget budget,
                             const char *call_id, const atomic_bool *cancelled,
                             struct graph_ticket *ret_ticket, struct crd_error *err);

/* Counts the ticket's request as done now, which starts its time in the window. */
void crd_graph_limits_release(struct crd_graph_limits *limits, const struct graph_ticket *ticket);

/* Wakes every waiter of crd_graph_limits_acquire(), so that it checks its cancel flag. */
void crd_graph_limits_wake(struct crd_graph_limits *limits);

#endif
