/* SPDX-License-Identifier: MIT */
/*
 * A scripted HTTP responder for the Graph client's unit test: plain HTTP on
 * 127.0.0.1 and a port the kernel picks, served by libmicrohttpd with a
 * thread per connection. The test queues replies per path; they are served
 * in order and the last one repeats. Every request is recorded (method, the
 * request target as received, the headers, the body and the arrival time)
 * so that the test can assert exactly what the client sent.
 *
 * Paths are matched without the query. A request for a path with no reply
 * queued gets 501, so that a forgotten route shows up as a failure. All
 * functions are thread-safe. (tests/fakegraph is the fuller Graph emulator
 * for the daemon's integration tests; this one is for tests/test_graph.c.)
 */
#ifndef CRD_TEST_GRAPH_MOCK_H
#define CRD_TEST_GRAPH_MOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct graph_mock;

struct graph_mock_reply {
    unsigned status;     /* 0: 200 */
    const char *body;    /* copied; NULL: an empty body */
    const char *headers; /* copied; extra header lines "Name: value", separated by '\n' */
    unsigned delay_ms;   /* wait this long before responding */
    bool drop;           /* close the connection without responding */
};

/* One request as the mock received it. Owned by the mock; valid until graph_mock_stop(). */
struct graph_mock_request {
    char method[16];
    char *target;        /* path and query exactly as received, e.g. "/v1.0/x?%24expand=y" */
    char *path;          /* the path without the query, percent-decoded by libmicrohttpd */
    char *headers;       /* every header as "Name: value\n" lines */
    char *authorization; /* these are NULL when absent */
    char *client_request_id;
    char *content_type;
    char *accept;
    char *prefer;
    char *body; /* NUL-terminated */
    size_t body_len;
    int64_t received_ms; /* monotonic time the request line and headers arrived */
    unsigned status;     /* status the mock sent; 0 when it dropped the connection */
};

/* Starts the server; aborts the test program when it cannot. */
struct graph_mock *graph_mock_start(void);

/* Stops the server, waiting for its threads, and frees everything. Accepts NULL. */
void graph_mock_stop(struct graph_mock *mock);

/* "http://127.0.0.1:PORT", without a trailing slash. */
const char *graph_mock_url(const struct graph_mock *mock);

/* Queues a reply for a path ("/v1.0/communications/callRecords/ID"). */
void graph_mock_add(struct graph_mock *mock, const char *path,
                    const struct graph_mock_reply *reply);

/* Queues a reply with a status and a body. */
void graph_mock_add_body(struct graph_mock *mock, const char *path, unsigned status,
                         const char *body);

/*
 * From now on, a request to any path except the token endpoint
 * (".../oauth2/v2.0/token") whose Authorization is not "Bearer <token>" gets
 * 401 with Graph's InvalidAuthenticationToken error, without using up a
 * queued reply. NULL turns the check off.
 */
void graph_mock_require_bearer(struct graph_mock *mock, const char *token);

/* Number of requests received for path (NULL: for every path). */
size_t graph_mock_count(struct graph_mock *mock, const char *path);

/* Waits up to timeout_ms until graph_mock_count(path) >= count. Returns whether it was reached. */
bool graph_mock_wait_count(struct graph_mock *mock, const char *path, size_t count, int timeout_ms);

/* The index-th request received for path (NULL: for every path), or NULL. */
const struct graph_mock_request *graph_mock_request(struct graph_mock *mock, const char *path,
                                                    size_t index);

/*
 * Reads tests/fixtures/NAME. When base_url is not NULL, every
 * "https://graph.microsoft.com" in it becomes base_url, so that the
 * fixture's next links lead to the mock. The caller frees the result.
 */
char *graph_mock_fixture(const char *name, const char *base_url);

/* Replaces every occurrence of from in s by to; the caller frees the result. */
char *graph_mock_replace(const char *s, const char *from, const char *to);

#endif
