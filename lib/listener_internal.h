/* SPDX-License-Identifier: MIT */
/* Shared between listener.c (HTTP plumbing) and listener_notify.c (payload handling). */
#ifndef CRD_LISTENER_INTERNAL_H
#define CRD_LISTENER_INTERNAL_H

#include <microhttpd.h>
#include <stdbool.h>

#include "listener.h"
#include "log.h"

/* Maximum validationToken length after decoding. The tokens Graph sends are far shorter. */
#define CRD_VALIDATION_TOKEN_MAX 2048

struct crd_listener {
    const struct crd_config *config;
    struct crd_store *store;
    const struct crd_listener_tenant *tenants;
    size_t n_tenants;
    void (*on_jobs)(void *context);
    void *on_jobs_context;
    void (*add_health)(void *context, json_t *health);
    void *add_health_context;
    void (*add_metrics)(void *context, struct crd_metrics *metrics);
    void *add_metrics_context;
    struct MHD_Daemon *daemon;
    atomic_bool draining;                 /* set by crd_listener_drain() */
    uint16_t port;
    struct crd_listener_counters counters;
    struct crd_ratelimit rejection_log;   /* warnings about rejected requests and items */
    struct crd_ratelimit store_error_log; /* errors about failed commits */
};

enum crd_route {
    CRD_ROUTE_NOTIFY,
    CRD_ROUTE_LIFECYCLE,
    CRD_ROUTE_HEALTHZ,
    CRD_ROUTE_METRICS,
    CRD_ROUTE_UNKNOWN,
};

/* State of one HTTP request, from the URI callback to the completion callback. */
struct crd_request {
    char *raw_uri;          /* as received, with the query string */
    enum crd_route route;
    bool started;           /* the access handler has seen this request */
    bool is_validation;
    bool body_too_large;
    char *body;
    size_t body_len;
    size_t body_cap;
    char method[16];
    char path[128];         /* decoded path without the query, cut to fit; for logs */
    char peer[64];          /* client address, for logs */
    int64_t started_at_ms;  /* monotonic */
};

/* A response with a text body and the given content type; logs the request at debug level. */
enum MHD_Result crd_listener_respond(struct crd_listener *listener, struct MHD_Connection *connection,
                                     struct crd_request *request, unsigned status,
                                     const char *content_type, const char *body);

/*
 * Logs a rejected request or item at warning level, rate-limited, and counts
 * the suppressed repeats.
 */
void crd_listener_log_rejection(struct crd_listener *listener, const struct crd_log_ids *ids,
                                const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Handles a complete POST body on the notification or lifecycle path. */
enum MHD_Result crd_listener_handle_notifications(struct crd_listener *listener,
                                                  struct MHD_Connection *connection,
                                                  struct crd_request *request);

#endif
