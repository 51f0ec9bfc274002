/* SPDX-License-Identifier: MIT */
/*
 * Declarations shared by the fakegraph source files. fakegraph emulates
 * Microsoft Graph for the tests and the demo. This part is Graph's sending
 * side: the validation handshake and change-notification POSTs aimed at
 * the daemon's listener. Everything here is single-threaded, and
 * curl_global_init() must have run before the first request.
 */
#ifndef CRD_TEST_FAKEGRAPH_H
#define CRD_TEST_FAKEGRAPH_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* Exit statuses of every subcommand. */
#define FAKEGRAPH_EXIT_PASSED 0
#define FAKEGRAPH_EXIT_FAILED 1    /* the listener responded, but not as Graph requires */
#define FAKEGRAPH_EXIT_ERROR 2     /* usage error, refused URL or transport failure */

/* Response bodies beyond this many bytes are counted but not stored. */
#define FAKEGRAPH_BODY_MAX (64 * 1024)

/* Bytes of a response body that a message shows before it is cut with "...". */
#define FAKEGRAPH_SHOWN_BODY_MAX 200

/* One curl easy handle aimed at one loopback URL. */
struct fakegraph_http;

struct fakegraph_response {
    long status;          /* HTTP status code */
    char *content_type;   /* Content-Type header value, NULL when absent */
    char *body;           /* first FAKEGRAPH_BODY_MAX bytes, NUL-terminated */
    size_t body_len;      /* bytes stored in body */
    size_t body_total;    /* bytes received */
};

/*
 * Creates a handle that POSTs to url with the given Content-Type. Rejects
 * schemes other than http and https, and hosts other than 127.0.0.1, ::1
 * and localhost, so that the tool cannot post anywhere else. With cafile,
 * the peer must present a certificate for the URL's host that chains to
 * that CA alone; without it the system store is used. Proxies from the
 * environment are ignored. The caller frees the handle with
 * fakegraph_http_free(). Returns 0, -EINVAL (bad or refused URL) or -ENOMEM.
 */
int fakegraph_http_new(const char *url, const char *cafile, const char *content_type,
                       struct fakegraph_http **ret_http, struct crd_error *err);

/*
 * Appends "name=<value percent-encoded>" to the URL's query, after '&' if
 * it has one, and drops any fragment. Returns 0, -ENOMEM or -EINVAL.
 */
int fakegraph_http_add_query(struct fakegraph_http *http, const char *name, const char *value,
                             struct crd_error *err);

/*
 * Sends one POST with body[0..len). The connection is kept for the next
 * call unless new_connection is set, which also opens a fresh one for this
 * request. On success the caller clears *ret_response with
 * fakegraph_response_clear(). Returns 0, -ENOMEM, or -EIO when no HTTP
 * response arrived (connection, TLS or timeout failure named in err).
 */
int fakegraph_http_post(struct fakegraph_http *http, const void *body, size_t len,
                        bool new_connection, struct fakegraph_response *ret_response,
                        struct crd_error *err);

/* Accepts NULL. */
void fakegraph_http_free(struct fakegraph_http *http);

/* Frees the members and zeroes the struct. */
void fakegraph_response_clear(struct fakegraph_response *response);

/*
 * Writes data[0..len) as printable ASCII for a message: backslash escapes
 * for quotes, backslashes and control characters, \xNN for other bytes,
 * and "..." after the first max_len input bytes. The caller frees the
 * result. Returns NULL only when out of memory.
 */
char *fakegraph_escape(const char *data, size_t len, size_t max_len);

struct fakegraph_validate_options {
    const char *url;
    const char *token;
    const char *cafile;    /* NULL: system CA store */
};

/*
 * Sends the validation handshake and prints "validate: ok" or
 * "validate: failed: ..." to stdout, and sets *ret_passed to match.
 * Returns 0 when a response arrived, or a negative code with err filled.
 */
int fakegraph_validate(const struct fakegraph_validate_options *options, bool *ret_passed,
                       struct crd_error *err);

struct fakegraph_notify_options {
    const char *url;
    const char *cafile;          /* NULL: system CA store */
    const char *file;            /* body sent unchanged; NULL when generating */
    unsigned generate_count;     /* items to generate when file is NULL */
    const char *tenant;          /* tenantId of generated items */
    const char *subscription;    /* subscriptionId of generated items */
    const char *client_state;    /* clientState of generated items */
    bool print_ids;              /* print generated call ids before sending */
    long expect_status;          /* status every response must have */
    unsigned repeat;             /* number of POSTs of the same body */
    bool new_connection;         /* a new connection for each POST */
};

/*
 * POSTs a changeNotificationCollection options->repeat times and prints
 * "notify: HTTP <status>" per response to stdout. *ret_passed is true when
 * every status equals options->expect_status. Returns 0, or a negative
 * code with err filled when the body cannot be built or a request gets no
 * response. Requests before the failed one have been sent and printed.
 */
int fakegraph_notify(const struct fakegraph_notify_options *options, bool *ret_passed,
                     struct crd_error *err);

#endif
