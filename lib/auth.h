/* SPDX-License-Identifier: MIT */
/*
 * OAuth 2.0 client credentials (Microsoft identity platform v2.0) with a
 * client secret, and the access token cache that every Graph request shares.
 *
 * POST <login_url>/<tenant>/oauth2/v2.0/token with the form fields
 * client_id, scope, grant_type=client_credentials and client_secret. The
 * token is kept in a struct crd_secret and refreshed when less than
 * crd_auth_refresh_margin_ms() of its lifetime is left, or on demand after
 * Graph rejected it with 401. A single token request is in flight at a time;
 * the other threads wait for its result. Neither the client secret nor the
 * token ever goes into a log or an error message.
 *
 * struct crd_auth is thread-safe. It is internal to the Graph client
 * (lib/graph.c), which creates it from its own options.
 */
#ifndef CRD_AUTH_H
#define CRD_AUTH_H

#include <stdint.h>

#include "assertion.h"
#include "error.h"
#include "secret.h"

struct crd_auth;

struct crd_auth_options {
    const char *login_url; /* "https://login.microsoftonline.com", no final "/" */
    const char *tenant;    /* GUID or domain name */
    const char *client_id;
    const struct crd_secret *client_secret; /* borrowed; NULL when assertion_signer is set */
    /* Signs client assertions (certificate credentials) in place of the secret; borrowed. */
    const struct crd_assertion_signer *assertion_signer;
    const char *scope;                      /* "https://graph.microsoft.com/.default" */
    const char *ca_file;                    /* NULL: the system trust store */
    const char *proxy;                      /* NULL: libcurl's defaults (environment) */
    unsigned connect_timeout_ms;            /* 0: 10000 */
    unsigned total_timeout_ms;              /* 0: 60000 */
};

/*
 * Creates the cache; no token is requested yet. The strings are copied, the
 * secret is borrowed. Call curl_global_init() before. Returns 0, -EINVAL or
 * -ENOMEM.
 */
int crd_auth_new(const struct crd_auth_options *options, struct crd_auth **ret_auth,
                 struct crd_error *err);

/* Frees the cache and wipes the token. Accepts NULL. No other thread may use it any more. */
void crd_auth_free(struct crd_auth *auth);

/*
 * Returns a fresh copy of the request header "Authorization: Bearer <token>"
 * in *ret_header (the caller frees it with crd_secret_free()) and the
 * token's generation in *ret_generation, for crd_auth_invalidate().
 *
 * A token is requested first when none is cached or the cached one is due
 * for refresh. When a refresh fails while the cached token is still valid,
 * that token is returned and the next refresh waits 10 s. Thread-safe: a
 * caller without a valid token waits for another thread's token request in
 * flight and then shares its result.
 *
 * Returns 0, or:
 *   -EACCES     the token endpoint rejected the credentials (HTTP 400, 401 or 403);
 *   -EAGAIN     a transport failure, 408, 429 or 5xx, or an unreadable body;
 *   -EPROTO     HTTP 200 without a usable Bearer token;
 *   -ECANCELED  crd_auth_cancel() was called;
 *   -ENOMEM.
 * The message carries the endpoint's error, error_description, trace_id and
 * correlation_id, never the request body.
 */
int crd_auth_get_header(struct crd_auth *auth, struct crd_secret **ret_header,
                        uint64_t *ret_generation, struct crd_error *err);

/*
 * Discards the token of this generation after Graph rejected it with 401, so
 * that the next crd_auth_get_header() requests a new one. Does nothing when
 * the cache already contains a newer token, so a burst of 401s for the same
 * token makes a single token request. Thread-safe.
 */
void crd_auth_invalidate(struct crd_auth *auth, uint64_t generation);

/* Makes waiting and later calls and a token request in flight fail with -ECANCELED. Thread-safe. */
void crd_auth_cancel(struct crd_auth *auth);

/*
 * How long before expiry a token of this lifetime is refreshed: 5 minutes,
 * or 10% of the lifetime when that is shorter.
 */
int64_t crd_auth_refresh_margin_ms(int64_t lifetime_ms);

#endif
