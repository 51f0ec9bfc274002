/* SPDX-License-Identifier: MIT */
/*
 * libcurl plumbing shared by the Graph client (graph.c) and its token cache
 * (auth.c): easy handles with the common transport settings, and response
 * bodies collected with a size limit. Internal to lib/; not for other modules.
 */
#ifndef CRD_GRAPH_HTTP_H
#define CRD_GRAPH_HTTP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>

#include "error.h"

/* Transport settings of every easy handle. */
struct crd_http_settings {
    const char *ca_file; /* NULL: the system trust store */
    const char *proxy;   /* NULL: libcurl's defaults (environment) */
    unsigned connect_timeout_ms;
    unsigned total_timeout_ms;
    const atomic_bool *cancelled; /* a transfer in flight stops when it becomes true */
};

/*
 * Creates an easy handle for https (and http, for loopback tests) that never
 * follows redirects, installs no signal handlers and aborts its transfer
 * with CURLE_ABORTED_BY_CALLBACK once *settings->cancelled is set. The
 * strings are copied by libcurl. Returns 0 or -ENOMEM.
 */
int crd_http_easy_new(const struct crd_http_settings *settings, CURL **ret_curl,
                      struct crd_error *err);

/* A response body in memory, at most `limit` bytes. */
struct crd_http_body {
    char *data; /* NUL-terminated once anything was written; NULL before */
    size_t len;
    size_t capacity;
    size_t limit;
    bool too_large; /* the transfer was stopped because the body exceeded limit */
    bool wipe;      /* wipe the contents before reusing or freeing (token responses) */
};

/* CURLOPT_WRITEFUNCTION for a struct crd_http_body passed as CURLOPT_WRITEDATA. */
size_t crd_http_body_write(char *ptr, size_t size, size_t nmemb, void *userdata);

/* Empties the body for the next transfer, keeping its buffer. */
void crd_http_body_reset(struct crd_http_body *body);

/* Frees the buffer. */
void crd_http_body_free(struct crd_http_body *body);

/*
 * Copies a peer-supplied string into dst for an error message: control
 * characters become spaces and the copy is cut to size. NULL gives "".
 */
void crd_http_sanitize(char *dst, size_t size, const char *src);

/* True for libcurl results that a later attempt may not see (connection, timeout, TLS). */
bool crd_http_transport_is_transient(CURLcode code);

#endif
