/* SPDX-License-Identifier: MIT */
/*
 * The fakegraph server ("fakegraph serve"): one HTTPS endpoint that plays
 * Entra ID's token endpoint, the Graph call-record and subscription APIs,
 * and a control API under /_fakegraph/ through which tests publish records,
 * queue faults, trigger notifications and read the request log.
 *
 * One server serves up to FAKEGRAPH_TENANT_MAX tenants for one multi-tenant
 * app (one client id and credential). Each access token belongs to the
 * tenant whose token endpoint issued it, and a Graph request reaches only the
 * records, subscriptions and quota windows of its token's tenant. Tenants
 * are indexes into server->tenants, and index 0 is the default tenant of
 * control requests that name none.
 *
 * libmicrohttpd runs one thread per connection, and every handler gets the
 * struct fakegraph_server. Its mutable state sits behind one mutex. Handlers
 * copy or json_incref() what they need under the lock and build responses
 * after releasing it. A stored JSON value is never modified after it is
 * stored, so several threads may serialize it at once.
 */
#ifndef CRD_TEST_FAKEGRAPH_SERVER_H
#define CRD_TEST_FAKEGRAPH_SERVER_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>

#include "fakegraph.h"
#include "secret.h"

/* Graph's maximum page sizes for expanded sessions and for participants_v2. */
#define FAKEGRAPH_SESSION_PAGE_MAX 60
#define FAKEGRAPH_PARTICIPANT_PAGE_MAX 130

/* Larger request bodies get 413. The biggest merged fixture record is about 500 KiB. */
#define FAKEGRAPH_REQUEST_BODY_MAX (64 * 1024 * 1024)

/* Graph raises a subscription expiry less than 45 minutes ahead to 45 minutes (--min-lifetime). */
#define FAKEGRAPH_MIN_LIFETIME_DEFAULT_S 2700
#define FAKEGRAPH_MIN_LIFETIME_MAX_S 2700

/* Entries beyond this are counted in request_log_dropped instead of stored. */
#define FAKEGRAPH_REQUEST_LOG_MAX 100000

/* Maximum number of tenants one server serves (--tenant options). */
#define FAKEGRAPH_TENANT_MAX 8

/* The tenant index of a request whose tenant is not known, and of a fault for every tenant. */
#define FAKEGRAPH_NO_TENANT (-1)

/* Characters of an access token: 32 random bytes in unpadded base64url. */
#define FAKEGRAPH_TOKEN_LEN 43

/* The Content-Type of Graph's JSON responses. */
#define FAKEGRAPH_GRAPH_CONTENT_TYPE                                                               \
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;"        \
    "charset=utf-8"

/* A published call record. */
struct fakegraph_record {
    int tenant;                /* index into server->tenants */
    char *id;
    json_t *record;            /* complete callRecord, every session in "sessions" */
    json_t *participants;      /* complete participants_v2 array; NULL when published without */
    int64_t visible_at_ms;     /* monotonic time before which the record is "not found" */
};

/* An access token issued by the token endpoint. */
struct fakegraph_token {
    char value[FAKEGRAPH_TOKEN_LEN + 1];
    int tenant;                /* the tenant whose token endpoint issued it */
    int64_t expires_at_ms;     /* monotonic */
};

struct fakegraph_subscription {
    char id[CRD_GUID_LEN + 1];
    int tenant;                /* the tenant of the token that created it */
    char *resource;            /* as the client sent it */
    char *change_type;         /* "created", "updated" or "created,updated" */
    char *client_state;        /* NULL when the client sent none */
    char *notification_url;
    char *lifecycle_url;       /* NULL when the client sent none */
    char *tls_version;         /* latestSupportedTlsVersion */
    int64_t expires_at_ms;     /* wall clock, like expirationDateTime */
};

/*
 * A queued fault, applied to the next `remaining` requests whose path starts
 * with match and, for a fault scoped to a tenant, whose tenant is that one.
 */
struct fakegraph_fault {
    char *match;
    int tenant;                /* FAKEGRAPH_NO_TENANT: requests of every tenant */
    unsigned status;           /* 0: respond normally (after the delay, possibly truncated) */
    long retry_after_s;        /* -1: no Retry-After header */
    unsigned remaining;
    unsigned delay_ms;
    bool drop;                 /* close the connection without a response */
    bool truncate;             /* send half of the response body, then close */
};

/* A request quota, as Graph's throttling limits: at most limit requests in any window_s seconds. */
struct fakegraph_quota {
    unsigned limit;            /* 0: no quota */
    unsigned window_s;
};

/* The admission times of the requests that count against one quota (a sliding window log). */
struct fakegraph_quota_window {
    int tenant;                    /* the tenant of a record window, unused in tenant_windows */
    char key[128];                 /* the call record id; "" for the tenant's window */
    int64_t *admitted_ms;          /* ring of up to limit monotonic times, oldest at next */
    size_t next;
    size_t count;
};

struct fakegraph_server {
    /* Set before the HTTP daemon starts and read-only afterwards. */
    char base_url[80];                      /* "https://127.0.0.1:PORT", no trailing slash */
    const char *tenants[FAKEGRAPH_TENANT_MAX];  /* the --tenant GUIDs; tenants[0] is the default */
    size_t tenant_count;
    const char *client_id;
    const char *cafile;                     /* trusted for outgoing requests */
    const struct crd_secret *client_secret;
    struct fakegraph_client_certificate *client_certificate;  /* NULL: assertions rejected */
    unsigned token_lifetime_s;
    unsigned min_lifetime_s;                /* expiries sooner than this are raised to it */
    char creator_id[CRD_GUID_LEN + 1];      /* creatorId of subscriptions: the app's principal */
    int log_fd;
    struct fakegraph_quota tenant_quota;    /* call-record requests of one tenant */
    struct fakegraph_quota record_quota;    /* requests for one call record of one tenant */

    pthread_mutex_t lock;                   /* protects every field below */
    pthread_cond_t stopping_changed;        /* broadcast when stopping becomes true */
    bool stopping;
    struct fakegraph_record *records;
    size_t record_count;
    struct fakegraph_token *tokens;
    size_t token_count;
    struct fakegraph_subscription *subscriptions;
    size_t subscription_count;
    struct fakegraph_fault *faults;
    size_t fault_count;
    json_t *request_log;                    /* {"method","path","query","status","at"} objects,
                                               with "fault" and "tenant" when there are any */
    size_t request_log_dropped;
    struct fakegraph_quota_window tenant_windows[FAKEGRAPH_TENANT_MAX];
    struct fakegraph_quota_window *record_windows;
    size_t record_window_count;
};

/* One HTTP request while libmicrohttpd processes it. */
struct fakegraph_request {
    char *raw_uri;             /* as received, query included */
    const char *query;         /* points into raw_uri after '?', "" when there is none */
    char method[16];
    char *path;                /* percent-decoded by libmicrohttpd */
    bool started;
    char *body;
    size_t body_len;
    size_t body_cap;
    bool body_too_large;
    int64_t started_ms;        /* monotonic */
    char request_id[CRD_GUID_LEN + 1];
    char client_request_id[128];   /* the client-request-id header, or request_id */
    char fault[64];            /* the fault applied, for the logs ("status 429"); "" when none */
    int tenant;                /* index into server->tenants, or FAKEGRAPH_NO_TENANT */
    bool truncate;             /* a fault asked to send half of the response body */
};

/* ---- fakegraph_server.c: the HTTP daemon, routing, responses and logging --- */

/*
 * Starts libmicrohttpd on the listening socket listen_fd (taken, also on
 * failure) with the PEM certificate and key. Returns 0 or -EIO.
 */
int fakegraph_server_start(struct fakegraph_server *server, int listen_fd, const char *cert_pem,
                           const char *key_pem, struct MHD_Daemon **ret_daemon,
                           struct crd_error *err);

/* Frees the quota windows. Call with server->lock held or after the daemon stopped. */
void fakegraph_quota_clear_locked(struct fakegraph_server *server);

/* Wakes the delay faults, then stops the daemon and waits for its threads. */
void fakegraph_server_stop(struct fakegraph_server *server, struct MHD_Daemon *daemon);

/* Writes one line to the log (--log or stderr). Never pass a secret or a token. */
void fakegraph_server_log(struct fakegraph_server *server, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Queues a response, records the request in the request log and writes its
 * log line. Takes body (malloc'ed, may be NULL for an empty body). headers is
 * NULL or a NULL-terminated list of name, value pairs.
 */
enum MHD_Result fakegraph_respond(struct fakegraph_server *server,
                                  struct MHD_Connection *connection,
                                  struct fakegraph_request *request, unsigned status,
                                  const char *content_type, char *body,
                                  const char *const *headers);

/* Responds with value serialized as application/json. Takes the reference to value. */
enum MHD_Result fakegraph_respond_json(struct fakegraph_server *server,
                                       struct MHD_Connection *connection,
                                       struct fakegraph_request *request, unsigned status,
                                       json_t *value);

/*
 * Responds as Graph does: its JSON content type and the request-id and
 * client-request-id headers. Takes the reference to value (NULL: empty body).
 */
enum MHD_Result fakegraph_respond_graph(struct fakegraph_server *server,
                                        struct MHD_Connection *connection,
                                        struct fakegraph_request *request, unsigned status,
                                        json_t *value, const char *const *headers);

/*
 * Builds a Graph error body: {"error": {code, message, innerError: {date,
 * request-id, client-request-id}}}. Returns NULL when out of memory.
 */
json_t *fakegraph_graph_error_body(const struct fakegraph_request *request, const char *code,
                                   const char *message);

/* Responds with a Graph error body: error.code, error.message and error.innerError. */
enum MHD_Result fakegraph_respond_graph_error(struct fakegraph_server *server,
                                              struct MHD_Connection *connection,
                                              struct fakegraph_request *request, unsigned status,
                                              const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Responds to the control API with {"error": {"code", "message"}}. */
enum MHD_Result fakegraph_respond_control_error(struct fakegraph_server *server,
                                                struct MHD_Connection *connection,
                                                struct fakegraph_request *request,
                                                unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Writes ms as Graph's innerError.date: "2025-06-03T18:02:44", UTC without a fraction. */
void fakegraph_format_error_date(int64_t ms, char *buf, size_t size);

/*
 * Waits up to ms milliseconds, or less when the server is stopping. Used
 * for the delay faults so that SIGTERM is not held up by them.
 */
void fakegraph_server_wait(struct fakegraph_server *server, unsigned ms);

/* ---- fakegraph_auth.c ------------------------------------------------------- */

/*
 * POST /{tenant}/oauth2/v2.0/token: the client-credentials grant of Entra ID.
 * tenant is the path segment, and request->tenant its index when served.
 */
enum MHD_Result fakegraph_handle_token(struct fakegraph_server *server,
                                       struct MHD_Connection *connection,
                                       struct fakegraph_request *request, const char *tenant);

/* ---- fakegraph_tenants.c: tenant lookup and tenant-scoped access tokens ------ */

/* Returns the index of the served tenant name (compared without case), or FAKEGRAPH_NO_TENANT. */
int fakegraph_tenant_find(const struct fakegraph_server *server, const char *name);

/* Writes the served tenants, joined by ", ", for messages. */
void fakegraph_tenants_format(const struct fakegraph_server *server, char *buf, size_t size);

/*
 * Reads the optional "tenant" member of a control request body into
 * *ret_tenant: its index, or FAKEGRAPH_NO_TENANT when the member is absent
 * or null. Returns 0, or -EINVAL with message set when it is not a string or
 * not a served tenant.
 */
int fakegraph_control_tenant(const struct fakegraph_server *server, const json_t *body,
                             int *ret_tenant, char *message, size_t size);

/*
 * Issues a new access token of tenant and writes it to token. Returns 0,
 * -EIO (no random bytes), -ENOSPC (too many unexpired tokens) or -ENOMEM.
 */
int fakegraph_tokens_issue(struct fakegraph_server *server, int tenant,
                           char token[FAKEGRAPH_TOKEN_LEN + 1]);

/*
 * Sets request->tenant to the tenant of the request's bearer token when the
 * token is valid. Leaves it unchanged otherwise and queues no response.
 */
void fakegraph_bearer_tenant(struct fakegraph_server *server, struct MHD_Connection *connection,
                             struct fakegraph_request *request);

/*
 * Checks "Authorization: Bearer <token>" against the issued, unexpired
 * tokens. Returns true, with request->tenant set to the token's tenant, when
 * the request may proceed. Otherwise it queues a 401 Graph error and stores
 * the result of queueing it in *ret_result.
 */
bool fakegraph_check_bearer(struct fakegraph_server *server, struct MHD_Connection *connection,
                            struct fakegraph_request *request, enum MHD_Result *ret_result);

/* ---- fakegraph_records.c ---------------------------------------------------- */

/*
 * GET /v1.0/communications/callRecords?$filter=startDateTime ge X[ and
 * startDateTime lt Y] (fakegraph_list.c): pages of 60 rows without sessions.
 */
enum MHD_Result fakegraph_handle_call_record_list(struct fakegraph_server *server,
                                                  struct MHD_Connection *connection,
                                                  struct fakegraph_request *request);

/*
 * GET /v1.0/communications/callRecords...: rest is the path after
 * "callRecords". Serves the records of request->tenant only.
 */
enum MHD_Result fakegraph_handle_call_records(struct fakegraph_server *server,
                                              struct MHD_Connection *connection,
                                              struct fakegraph_request *request,
                                              const char *rest);

/*
 * Publishes or replaces the record of tenant with the id of record. Takes
 * both references (participants may be NULL). Returns 0, -EINVAL or -ENOMEM.
 */
int fakegraph_records_publish(struct fakegraph_server *server, int tenant, json_t *record,
                              json_t *participants, unsigned not_found_for_ms,
                              struct crd_error *err);

/*
 * Writes the tenants in which a record with id is published, visible yet or
 * not, to tenants in the order of server->tenants. Returns their number.
 */
size_t fakegraph_records_tenants(struct fakegraph_server *server, const char *id,
                                 int tenants[FAKEGRAPH_TENANT_MAX]);

/* Frees every record. Call with server->lock held. */
void fakegraph_records_clear_locked(struct fakegraph_server *server);

/* ---- fakegraph_subscriptions.c ---------------------------------------------- */

/*
 * /v1.0/subscriptions...: rest is the path after "/v1.0/subscriptions".
 * Creates, finds and deletes subscriptions of request->tenant only.
 */
enum MHD_Result fakegraph_handle_subscriptions(struct fakegraph_server *server,
                                               struct MHD_Connection *connection,
                                               struct fakegraph_request *request,
                                               const char *rest);

/* Removes the subscriptions whose expiry has passed. Call with server->lock held. */
void fakegraph_subscriptions_expire_locked(struct fakegraph_server *server);

/* Frees one subscription's strings. */
void fakegraph_subscription_clear(struct fakegraph_subscription *subscription);

/*
 * The control API's view of the subscriptions of every tenant: GET lists
 * them, POST inserts one without the validation handshake, POST .../remove
 * deletes one without a lifecycle notification. rest is the path after
 * "/_fakegraph/subscriptions".
 */
enum MHD_Result fakegraph_handle_control_subscriptions(struct fakegraph_server *server,
                                                       struct MHD_Connection *connection,
                                                       struct fakegraph_request *request,
                                                       const char *rest, json_t *body);

/* ---- fakegraph_control.c ---------------------------------------------------- */

/* /_fakegraph/...: rest is the path after "/_fakegraph". */
enum MHD_Result fakegraph_handle_control(struct fakegraph_server *server,
                                         struct MHD_Connection *connection,
                                         struct fakegraph_request *request, const char *rest);

/* Frees every queued fault. Call with server->lock held. */
void fakegraph_faults_clear_locked(struct fakegraph_server *server);

/*
 * Takes the first queued fault that matches path and tenant (the request's,
 * or FAKEGRAPH_NO_TENANT) and has requests left, decrements it and copies it
 * to *ret_fault. Returns false when none matches.
 */
bool fakegraph_faults_take(struct fakegraph_server *server, const char *path, int tenant,
                           struct fakegraph_fault *ret_fault);

/* ---- fakegraph_notify_out.c: notifications sent by the server ---------------- */

/*
 * Handles POST /_fakegraph/notify: picks the target subscriptions (or the
 * notificationUrl given), POSTs the change or lifecycle notifications and
 * responds with the statuses received.
 */
enum MHD_Result fakegraph_handle_notify(struct fakegraph_server *server,
                                        struct MHD_Connection *connection,
                                        struct fakegraph_request *request, json_t *body);

/* ---- fakegraph_assertion.c: certificate credentials ------------------------ */

struct fakegraph_client_certificate;

/* Loads the certificate that client assertions must be signed for. */
int fakegraph_client_certificate_load(const char *path,
                                      struct fakegraph_client_certificate **ret_certificate,
                                      struct crd_error *err);
void fakegraph_client_certificate_free(struct fakegraph_client_certificate *certificate);

/*
 * Checks a client assertion sent to the token endpoint of tenant as Entra ID
 * does. Returns NULL when it is acceptable, else a static reason for the
 * error description.
 */
const char *fakegraph_verify_assertion(const struct fakegraph_server *server, const char *tenant,
                                       const char *type, const char *jwt, int64_t now_s);

/* ---- fakegraph_handshake.c: the validation handshake of a subscription ------- */

/*
 * POSTs url?validationToken=<token> with an empty text/plain body, as Graph
 * does, and requires 200, text/plain and the token echoed within 10 s.
 * Returns 0, or -EPROTO with Graph's message in message.
 */
int fakegraph_run_handshake(struct fakegraph_server *server, const char *url, char *message,
                            size_t size);

#endif
