/* SPDX-License-Identifier: MIT */
/*
 * Microsoft Graph client (libcurl) for reading call records and managing
 * subscriptions, with the token cache and the throttle gate that every
 * worker shares.
 *
 * struct crd_graph is shared and thread-safe. It contains the configuration,
 * the access token cache (refreshed before expiry and once after a 401) and
 * the throttle gate (a 429 pauses every request of every worker until its
 * Retry-After has passed). struct crd_graph_session belongs to one thread at
 * a time and owns the curl easy handle, so connections are reused.
 */
#ifndef CRD_GRAPH_H
#define CRD_GRAPH_H

#include <jansson.h>
#include <stdint.h>

#include "assertion.h"
#include "error.h"
#include "secret.h"

struct crd_graph;
struct crd_graph_session;
struct crd_graph_limits;

struct crd_graph_options {
    const char *graph_url;                 /* "https://graph.microsoft.com", no trailing slash */
    const char *login_url;                 /* "https://login.microsoftonline.com", no trailing slash */
    const char *tenant;                    /* GUID or domain */
    const char *client_id;
    const struct crd_secret *client_secret;  /* borrowed; must outlive the client */
    /* Certificate credentials in place of client_secret when not NULL; borrowed. */
    const struct crd_assertion_signer *assertion_signer;
    const char *ca_file;                   /* NULL: the system trust store */
    const char *proxy;                     /* NULL: libcurl's defaults (environment) */
    unsigned connect_timeout_ms;           /* 0: 10000 */
    unsigned total_timeout_ms;             /* per HTTP request; 0: 60000 */
    unsigned max_attempts;                 /* per request for transient failures; 0: 5 */
    unsigned backoff_base_ms;              /* first retry delay before jitter; 0: 500 */
    unsigned backoff_max_ms;               /* cap of the exponential backoff; 0: 30000 */
    /*
     * Request budgets that pace call-record and List call records requests;
     * borrowed, must outlive the client. Give every client of one
     * application and tenant the same object, because Graph counts their
     * requests together. NULL: no pacing, only the reaction to 429.
     */
    struct crd_graph_limits *limits;
};

/*
 * Graph's documented call-record limits, per 20 s: 1,500 requests per
 * application per tenant, 40 per call record, and 40 for List call records.
 */
#define CRD_GRAPH_TENANT_REQUESTS 1500
#define CRD_GRAPH_RECORD_REQUESTS 40
#define CRD_GRAPH_LIST_REQUESTS 40
#define CRD_GRAPH_RATE_WINDOW_MS 20000

/* Request budgets per sliding window. A limit of 0 turns that budget off. */
struct crd_graph_limits_options {
    unsigned tenant_requests; /* every paced request of every client sharing the object */
    unsigned record_requests; /* GETs of one call record, its sessions and participants pages */
    unsigned list_requests;   /* List call records pages; these count for the tenant too */
    unsigned window_ms;       /* 0: CRD_GRAPH_RATE_WINDOW_MS */
};

/* Details of a failed Graph request, for logs. Empty strings when unknown. */
struct crd_graph_failure {
    long http_status;                      /* 0 for a transport failure */
    char code[64];                         /* error.code from Graph's error body */
    char request_id[64];                   /* error.innerError.request-id */
    char client_request_id[64];            /* error.innerError.client-request-id */
    char date[40];                         /* error.innerError.date */
    int64_t retry_after_ms;                /* from Retry-After; 0 when absent */
    unsigned attempts;                     /* HTTP requests made, including retries */
};

/*
 * Creates the shared client. Borrowed strings and the secret must outlive it.
 * Call curl_global_init() before. Returns 0, -EINVAL or -ENOMEM.
 */
int crd_graph_new(const struct crd_graph_options *options, struct crd_graph **ret_graph,
                  struct crd_error *err);
void crd_graph_free(struct crd_graph *graph);

int crd_graph_session_new(struct crd_graph *graph, struct crd_graph_session **ret_session,
                          struct crd_error *err);
void crd_graph_session_free(struct crd_graph_session *session);

/*
 * Fetches one complete call record: GET /v1.0/communications/callRecords/{id}
 * with $expand=sessions($expand=segments), every sessions@odata.nextLink page
 * merged into "sessions", and every participants_v2 page merged into
 * "participants_v2". Where participants_v2 is unavailable, the participants
 * are built from the sessions' callers and callees and the record gets
 * "participants_v2@callrecd.source": "sessions". Next links are followed only
 * to the configured Graph host and never twice.
 *
 * Transient failures (5xx, timeouts, dropped connections) are retried here
 * with exponential backoff and jitter up to max_attempts; 429 waits at the
 * throttle gate; 401 refreshes the token once. Every request, retries
 * included, first waits for the tenant and per-record budgets of
 * options.limits.
 *
 * Returns 0 and sets *ret_record (the caller json_decref()s it), or:
 *   -ENOENT   404: not available yet, or past the 30-day retention;
 *   -EAGAIN   transient failures outlasted max_attempts;
 *   -EACCES   401 after a token refresh, or 403 (permission CallRecords.Read.All missing);
 *   -EPROTO   an invalid response: not JSON, no id or version, or a next link to another host
 *             or seen before;
 *   -EINVAL   another 4xx, or call_id is not a GUID;
 *   -ECANCELED  crd_graph_cancel() was called.
 * failure (may be NULL) is filled on every failure.
 */
int crd_graph_fetch_call_record(struct crd_graph_session *session, const char *call_id,
                                json_t **ret_record, struct crd_graph_failure *failure,
                                struct crd_error *err);

/*
 * Sends one request with the same retry policy as crd_graph_fetch_call_record():
 * backoff with jitter for transient failures, the throttle gate for 429, one
 * token refresh for 401. method is "GET", "POST", "PATCH" or "DELETE".
 * url_or_path is a path below the Graph URL ("/v1.0/subscriptions") or a
 * full URL on the configured Graph host. body (may be NULL) is sent as JSON.
 *
 * On a 2xx response returns 0 and sets *ret_status (may be NULL) and
 * *ret_json (may be NULL; the caller json_decref()s it), which is NULL when
 * the response has no body (204). Errors as for crd_graph_fetch_call_record(),
 * with -ENOENT for any 404 and -EEXIST for 409. failure (may be NULL) is
 * filled on every failure. Thread-safe with one session per thread.
 */
int crd_graph_request(struct crd_graph_session *session, const char *method,
                      const char *url_or_path, const json_t *body, long *ret_status,
                      json_t **ret_json, struct crd_graph_failure *failure,
                      struct crd_error *err);

/*
 * Called for each item of a listed collection. item is borrowed for the
 * call. A negative return stops the listing, which returns that code.
 */
typedef int (*crd_graph_item_fn)(const json_t *item, void *context, struct crd_error *err);

/*
 * GETs a collection and every @odata.nextLink page, calling on_item for each
 * element of each page's "value". Next links are followed only to the
 * configured Graph host and never twice. Errors as for crd_graph_request().
 */
int crd_graph_list(struct crd_graph_session *session, const char *url_or_path,
                   crd_graph_item_fn on_item, void *context, struct crd_graph_failure *failure,
                   struct crd_error *err);

/* Called for each listed call record; id is borrowed for the call. Negative stops the listing. */
typedef int (*crd_graph_call_record_fn)(const char *id, int64_t version, void *context,
                                        struct crd_error *err);

/*
 * Lists the call records that started at or after since_ms (wall clock, ms
 * since the epoch, cut to whole seconds): GET
 * /v1.0/communications/callRecords?$filter=startDateTime ge <ISO 8601>, every
 * page. -EPROTO for an item without a string id and an integer version.
 * Each page waits for the list and tenant budgets of options.limits.
 */
int crd_graph_list_call_records(struct crd_graph_session *session, int64_t since_ms,
                                crd_graph_call_record_fn on_record, void *context,
                                struct crd_graph_failure *failure, struct crd_error *err);

/*
 * Creates the request budgets shared by the Graph clients of one application
 * and tenant. A request is sent only while the requests of the last window
 * (counted from their responses, which is never earlier than Graph counts
 * them) and those in flight stay below each limit that applies to it; else
 * it waits on a condition variable. Call records are tracked in a bounded
 * table that reuses the entries of records idle for a whole window.
 * Thread-safe. Free it with crd_graph_limits_free() after every client that
 * uses it. Returns 0 or -ENOMEM.
 */
int crd_graph_limits_new(const struct crd_graph_limits_options *options,
                         struct crd_graph_limits **ret_limits, struct crd_error *err);
void crd_graph_limits_free(struct crd_graph_limits *limits);

/*
 * Wakes every request waiting at the throttle gate, in backoff or for a
 * request budget, making it fail with -ECANCELED.
 */
void crd_graph_cancel(struct crd_graph *graph);

/* Milliseconds until the throttle gate opens; 0 when open. */
int64_t crd_graph_throttled_for_ms(struct crd_graph *graph);

#endif
