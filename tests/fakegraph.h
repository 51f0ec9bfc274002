/* SPDX-License-Identifier: MIT */
/*
 * Declarations shared by the fakegraph source files. fakegraph emulates
 * Microsoft Graph for the tests and the demo: Graph's sending side (the
 * validation handshake and change-notification POSTs aimed at the daemon's
 * listener), the server that plays Graph and Entra ID (fakegraph_server.h),
 * and the commands that drive that server. A struct fakegraph_http belongs
 * to one thread at a time, and curl_global_init() must have run before the
 * first request.
 */
#ifndef CRD_TEST_FAKEGRAPH_H
#define CRD_TEST_FAKEGRAPH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "error.h"
#include "util.h"

/* subscriptionId of the committed notification fixtures, used when no subscription is named. */
#define FAKEGRAPH_FIXTURE_SUBSCRIPTION "feb91fbe-efd9-5607-b1bc-af06b720e001"

/* The Content-Type of Graph's notification POSTs. */
#define FAKEGRAPH_NOTIFY_CONTENT_TYPE "application/json; charset=utf-8"

/* Exit statuses of every subcommand. */
#define FAKEGRAPH_EXIT_PASSED 0
#define FAKEGRAPH_EXIT_FAILED 1    /* the listener responded, but not as Graph requires */
#define FAKEGRAPH_EXIT_ERROR 2     /* usage error, refused URL or transport failure */

/* Response bodies beyond this many bytes are counted but not stored. */
#define FAKEGRAPH_BODY_MAX (64 * 1024)

/* Bytes of a response body that a message shows before it is cut with "...". */
#define FAKEGRAPH_SHOWN_BODY_MAX 200

/* Larger input files are rejected. The biggest fixture has a few hundred KiB. */
#define FAKEGRAPH_FILE_MAX (64 * 1024 * 1024)

/* ---- helpers shared by the subcommands (fakegraph_util.c) ---------------- */

struct fakegraph_option_spec {
    const char *name;     /* "--url" */
    int id;               /* the command's own number for the option */
    bool has_value;
};

/*
 * Reads the option at argv[*index], as "--name value" or "--name=value",
 * and advances *index past it. *ret_value is "" for an option without a
 * value. Returns 0 or -EINVAL.
 */
int fakegraph_next_option(int argc, char **argv, int *index, const char *command,
                          const struct fakegraph_option_spec *specs, size_t spec_count,
                          int *ret_id, const char **ret_value, struct crd_error *err);

/* Parses a decimal number from min to max for option. Returns 0 or -EINVAL. */
int fakegraph_parse_number(const char *option, const char *value, unsigned long min,
                           unsigned long max, unsigned long *ret_number, struct crd_error *err);

/*
 * Reads a whole regular file of at most max_size bytes, NUL-terminated. label
 * names the file in messages ("--record"). The caller frees *ret_data.
 * Returns 0 or a negative errno code.
 */
int fakegraph_read_file(const char *label, const char *path, size_t max_size, char **ret_data,
                        size_t *ret_len, struct crd_error *err);

/* Reads and parses a JSON file. The caller json_decref()s *ret_value. */
int fakegraph_read_json_file(const char *label, const char *path, json_t **ret_value,
                             struct crd_error *err);

/* Writes a random (version 4) GUID in lower-case 8-4-4-4-12 form. Returns 0 or -EIO. */
int fakegraph_random_guid(char guid[CRD_GUID_LEN + 1], struct crd_error *err);

/* Writes ms as Graph writes times in notifications: "2025-06-05T14:00:00.000+00:00". */
void fakegraph_format_notification_time(int64_t ms, char *buf, size_t size);

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

/* Sets the limit for a whole request, connection included. Returns 0 or -EINVAL. */
int fakegraph_http_set_timeout(struct fakegraph_http *http, long total_ms, struct crd_error *err);

/* Adds a request header "Name: value". Returns 0 or -ENOMEM. */
int fakegraph_http_add_header(struct fakegraph_http *http, const char *header,
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

/*
 * Writes the reasons the response fails the handshake for token, joined by
 * ", ", into reasons, or "" when it passes. decoded_body (may be NULL) is
 * the response body percent-decoded, to recognize a token echoed encoded.
 */
void fakegraph_validate_explain(const struct fakegraph_response *response, const char *token,
                                const char *decoded_body, char *reasons, size_t size);

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

/* The fields of one changeNotification about a call record. */
struct fakegraph_change_item {
    const char *subscription;    /* subscriptionId */
    const char *expiry;          /* subscriptionExpirationDateTime, "+00:00" form */
    const char *change_type;     /* "created" or "updated" */
    const char *call_id;
    const char *client_state;    /* NULL: the item has no clientState */
    const char *tenant;          /* tenantId */
};

/* Appends one changeNotification shaped like Graph's to the JSON array items. */
int fakegraph_append_change_item(json_t *items, const struct fakegraph_change_item *fields,
                                 struct crd_error *err);

/* ---- subcommands added after validate and notify ------------------------- */

/* Each parses argv[2..argc) and returns the exit status (FAKEGRAPH_EXIT_*). */
int fakegraph_run_serve(int argc, char **argv);      /* fakegraph_serve.c */
int fakegraph_run_publish(int argc, char **argv);    /* fakegraph_client.c */
int fakegraph_run_trigger(int argc, char **argv);    /* fakegraph_client.c */
int fakegraph_run_fault(int argc, char **argv);      /* fakegraph_client.c */
int fakegraph_run_scenario(int argc, char **argv);   /* fakegraph_scenario.c */

#endif
