/* SPDX-License-Identifier: MIT */
/*
 * The HTTP(S) endpoint that Microsoft Graph talks to, built on libmicrohttpd:
 *
 *   POST <notification path>?validationToken=T   200 text/plain, body T (URL-decoded)
 *   POST <notification path>                     change notifications: jobs committed, then 202
 *   POST <lifecycle path>[?validationToken=T]    lifecycle notifications: logged, handed to
 *                                                on_lifecycle, 202
 *   GET  /healthz                                200 while the listener runs, with a JSON body
 *
 * The event loop is libmicrohttpd's poll() mode with its own threads. Its
 * epoll mode, which MHD_USE_AUTO picks on Linux, keeps a core busy while a
 * client stalls in the TLS handshake (seen with libmicrohttpd 0.9.75 and
 * GnuTLS). poll() mode does not, and tests/test_stall.c checks that.
 *
 * Thread safety: start and stop from one thread; the counters may be read
 * from any thread at any time.
 */
#ifndef CRD_LISTENER_H
#define CRD_LISTENER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "conf.h"
#include "metrics.h"
#include "error.h"
#include "notification.h"
#include "secret.h"
#include "store.h"

struct crd_listener;

/*
 * A tenant whose notifications the listener accepts. An item is accepted
 * only when its tenantId, clientState and subscriptionId all belong to one
 * tenant: the tenantId names it, the clientState is its secret, and
 * has_subscription() confirms the subscription id.
 */
struct crd_listener_tenant {
    const char *name;                         /* for logs */
    const char *tenant_id;                    /* GUID; NULL matches any tenantId (one tenant
                                                 configured by domain name) */
    const struct crd_secret *client_state;    /* the expected clientState */
    /*
     * Returns whether subscription_id is this tenant's subscription; a
     * tenant without a subscription yet accepts every id. NULL accepts
     * every id. Called from handler threads.
     */
    bool (*has_subscription)(void *context, const char *subscription_id);
    /*
     * Called from a handler thread for each accepted lifecycle event, before
     * the 202. The strings are borrowed for the call. May be NULL.
     */
    void (*on_lifecycle)(void *context, enum crd_lifecycle_event event,
                         const char *subscription_id, const char *tenant_id);
    void *context;
};

struct crd_listener_options {
    const struct crd_config *config;          /* borrowed; must outlive the listener */
    struct crd_store *store;                  /* borrowed; must outlive the listener */
    const struct crd_listener_tenant *tenants; /* borrowed; must outlive the listener */
    size_t n_tenants;                         /* at least one */
    int listen_fd;                            /* a socket from systemd, or -1 to bind the configured address */
    /* Called from a handler thread after new jobs were committed. May be NULL. */
    void (*on_jobs)(void *context);
    void *on_jobs_context;
    /* Adds members to the /healthz JSON object, from a handler thread. May be NULL. */
    void (*add_health)(void *context, json_t *health);
    void *add_health_context;
    /* Adds the owner's samples to GET /metrics, after the listener's own. May be NULL. */
    void (*add_metrics)(void *context, struct crd_metrics *metrics);
    void *add_metrics_context;
};

/* Counters since start; each is read and written atomically. */
struct crd_listener_counters {
    atomic_uint_fast64_t requests;
    atomic_uint_fast64_t validations;
    atomic_uint_fast64_t notifications_accepted;       /* items turned into jobs */
    atomic_uint_fast64_t notifications_ignored;        /* valid items that need no job */
    atomic_uint_fast64_t notifications_invalid;        /* items dropped as malformed */
    atomic_uint_fast64_t client_state_mismatches;      /* items dropped for a wrong or missing clientState */
    atomic_uint_fast64_t tenant_mismatches;            /* items of a tenant this instance does not serve */
    atomic_uint_fast64_t subscription_mismatches;      /* items whose subscription is not their tenant's */
    atomic_uint_fast64_t lifecycle_events;
    atomic_uint_fast64_t rejected_requests;            /* answered 4xx */
    atomic_uint_fast64_t store_failures;               /* answered 503 */
};

/*
 * Binds (or adopts listen_fd) and starts serving. On success the caller owns
 * *ret_listener and stops it with crd_listener_stop(). listen_fd is owned by
 * the listener from this call on, also on failure.
 */
int crd_listener_start(const struct crd_listener_options *options,
                       struct crd_listener **ret_listener, struct crd_error *err);

/* The local port actually bound, which differs from the configured one when that is 0. */
uint16_t crd_listener_port(const struct crd_listener *listener);

const struct crd_listener_counters *crd_listener_counters(const struct crd_listener *listener);

/*
 * Starts the shutdown: from now on every notification is answered 503, so
 * that Graph retries it later, while requests already past that point finish
 * and commit normally. Validation requests are still answered. Accepts NULL;
 * thread-safe.
 */
void crd_listener_drain(struct crd_listener *listener);

/*
 * Stops accepting connections, waits for the handler threads to finish the
 * requests in progress, and frees the listener. Accepts NULL.
 */
void crd_listener_stop(struct crd_listener *listener);

/*
 * Decodes one application/x-www-form-urlencoded component: "+" becomes a
 * space and "%XX" the byte XX. Writes at most out_size - 1 bytes plus a NUL.
 * Returns the decoded length, -EINVAL for a malformed escape, or -E2BIG when
 * the result does not fit.
 */
int crd_listener_form_decode(const char *in, size_t in_len, char *out, size_t out_size);

#endif
