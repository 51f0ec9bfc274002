/* SPDX-License-Identifier: MIT */
/*
 * Tests of the Graph client and its token cache against a scripted HTTP
 * responder (tests/graph_mock.c) on loopback. The mock serves both the token
 * endpoint and Graph, records every request, and the tests assert on what
 * the client sent: the token form, the headers, the URLs and their timing.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "auth.h"
#include "graph.h"
#include "graph_mock.h"
#include "harness.h"
#include "log.h"
#include "secret.h"
#include "util.h"

#define TENANT_ID "2a37c3b7-f073-59a1-b249-42c4e33881c2"
#define CLIENT_ID "eb5b5317-1c3f-591e-bda6-b36a341728fd"
/* Characters that must be percent-encoded in the form: & = + / space % */
#define CLIENT_SECRET "s3cr&t=+/ %~Qx9.secret-value"
#define CLIENT_SECRET_ENCODED "s3cr%26t%3D%2B%2F%20%25~Qx9.secret-value"

#define P2P_ID "7e633194-32cf-5bee-86e6-f491790b2813"
#define GROUP_ID "f0bb1479-0b23-5d38-8445-31e7f07e6f04"
#define LARGE_ID "5c206c87-289f-5842-ab94-50a686cb3f92"
#define DOCS_ID "e523d2ed-2966-4b6b-925b-754a88034cc5"

#define TOKEN_PATH "/" TENANT_ID "/oauth2/v2.0/token"
#define RECORDS "/v1.0/communications/callRecords/"
#define EXPAND_QUERY "?%24expand=sessions%28%24expand%3Dsegments%29"
#define P2P_PATH RECORDS P2P_ID
#define P2P_PARTICIPANTS RECORDS P2P_ID "/participants_v2"

/* Small options so that the retries of the suite take milliseconds. */
#define TEST_MAX_ATTEMPTS 4
#define TEST_TOTAL_TIMEOUT_MS 1000

/* Two participants of the p2p record, as participants_v2 returns them. */
static const char p2p_participants[] =
    "{\"@odata.context\": \"https://graph.microsoft.com/v1.0/$metadata#participants\", \"value\": ["
    "{\"id\": \"7b2336f9-ca34-5358-9e58-574b31b09076\", \"identity\": {\"user\": {\"id\": "
    "\"7b2336f9-ca34-5358-9e58-574b31b09076\", \"displayName\": \"Alex Varga\"}}},"
    "{\"id\": \"44ea8764-f66a-5885-a6e8-1816be8ee03d\", \"identity\": {\"user\": {\"id\": "
    "\"44ea8764-f66a-5885-a6e8-1816be8ee03d\", \"displayName\": \"Jordan Fontaine\"}}}]}";

struct test_env {
    struct graph_mock *mock;
    struct crd_secret *secret;
    struct crd_graph *graph;
    struct crd_graph_session *session;
    char *token;      /* access_token of token-response.json */
    char *token_body; /* token-response.json */
};

static struct test_env env;

static void open_graph(unsigned max_attempts, unsigned total_timeout_ms)
{
    crd_graph_session_free(env.session);
    crd_graph_free(env.graph);
    env.session = NULL;
    env.graph = NULL;

    struct crd_graph_options options = {
        .graph_url = graph_mock_url(env.mock),
        .login_url = graph_mock_url(env.mock),
        .tenant = TENANT_ID,
        .client_id = CLIENT_ID,
        .client_secret = env.secret,
        .connect_timeout_ms = 1000,
        .total_timeout_ms = total_timeout_ms,
        .max_attempts = max_attempts,
        .backoff_base_ms = 10,
        .backoff_max_ms = 40,
    };
    struct crd_error err = {0};
    int r = crd_graph_new(&options, &env.graph, &err);
    ck_assert_msg(r == 0, "crd_graph_new: %s", err.message);
    r = crd_graph_session_new(env.graph, &env.session, &err);
    ck_assert_msg(r == 0, "crd_graph_session_new: %s", err.message);
}

static void setup(void)
{
    memset(&env, 0, sizeof(env));
    env.mock = graph_mock_start();
    struct crd_error err = {0};
    ck_assert_int_eq(crd_secret_new(CLIENT_SECRET, strlen(CLIENT_SECRET), &env.secret, &err), 0);

    env.token_body = graph_mock_fixture("token-response.json", NULL);
    json_t *token = json_loads(env.token_body, 0, NULL);
    ck_assert_ptr_nonnull(token);
    env.token = strdup(json_string_value(json_object_get(token, "access_token")));
    json_decref(token);
    ck_assert_ptr_nonnull(env.token);

    open_graph(TEST_MAX_ATTEMPTS, TEST_TOTAL_TIMEOUT_MS);
}

static void teardown(void)
{
    crd_graph_session_free(env.session);
    crd_graph_free(env.graph);
    graph_mock_stop(env.mock);
    crd_secret_free(env.secret);
    free(env.token);
    free(env.token_body);
    memset(&env, 0, sizeof(env));
}

/* The usual token and the p2p record with its two participants. */
static void serve_token(void)
{
    graph_mock_add_body(env.mock, TOKEN_PATH, 200, env.token_body);
}

static void serve_p2p(void)
{
    char *record = graph_mock_fixture("callrecord-p2p-v1.json", NULL);
    graph_mock_add_body(env.mock, P2P_PATH, 200, record);
    graph_mock_add_body(env.mock, P2P_PARTICIPANTS, 200, p2p_participants);
    free(record);
}

static json_t *fetch_ok(const char *call_id)
{
    json_t *record = NULL;
    struct crd_graph_failure failure;
    struct crd_error err = {0};
    int r = crd_graph_fetch_call_record(env.session, call_id, &record, &failure, &err);
    ck_assert_msg(r == 0, "fetching '%s' failed (%d): %s", call_id, r, err.message);
    ck_assert_ptr_nonnull(record);
    return record;
}

static void assert_secret_free(const char *what, const char *text)
{
    ck_assert_msg(strstr(text, CLIENT_SECRET) == NULL, "%s holds the client secret: %s", what,
                  text);
    ck_assert_msg(strstr(text, CLIENT_SECRET_ENCODED) == NULL,
                  "%s holds the encoded client secret: %s", what, text);
    ck_assert_msg(strstr(text, env.token) == NULL, "%s holds the access token", what);
    /* A piece of the token is as bad as all of it. */
    char piece[33];
    snprintf(piece, sizeof(piece), "%s", env.token + 40);
    ck_assert_msg(strstr(text, piece) == NULL, "%s holds part of the access token", what);
}

static void assert_failure_secret_free(const struct crd_graph_failure *failure,
                                       const struct crd_error *err)
{
    assert_secret_free("error message", err->message);
    assert_secret_free("failure code", failure->code);
    assert_secret_free("failure request-id", failure->request_id);
    assert_secret_free("failure client-request-id", failure->client_request_id);
}

static int fetch_fails(const char *call_id, struct crd_graph_failure *failure,
                       struct crd_error *err)
{
    json_t *record = NULL;
    int r = crd_graph_fetch_call_record(env.session, call_id, &record, failure, err);
    ck_assert_msg(r < 0, "fetching '%s' succeeded", call_id);
    ck_assert_ptr_null(record);
    /* No failure anywhere in the suite may show a credential. */
    assert_failure_secret_free(failure, err);
    return r;
}

static const char *member_string(const json_t *object, const char *key)
{
    return json_string_value(json_object_get(object, key));
}

/* Percent-encodes every byte but the unreserved ones; written without curl, to check curl. */
static void form_encode(const char *s, char *out, size_t size)
{
    size_t n = 0;
    for (; *s != '\0' && n + 4 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            out[n++] = (char)c;
        } else {
            n += (size_t)snprintf(out + n, size - n, "%%%02X", c);
        }
    }
    out[n] = '\0';
}

static void assert_no_next_links(const json_t *record)
{
    ck_assert_ptr_null(json_object_get(record, "sessions@odata.nextLink"));
    ck_assert_ptr_null(json_object_get(record, "@odata.nextLink"));
    ck_assert_ptr_null(json_object_get(record, "participants_v2@odata.nextLink"));
}

/* ---- token ------------------------------------------------------------------------------- */

START_TEST(token_form_and_caching)
{
    serve_token();
    serve_p2p();

    json_decref(fetch_ok(P2P_ID));
    json_decref(fetch_ok(P2P_ID));

    ck_assert_uint_eq(graph_mock_count(env.mock, TOKEN_PATH), 1);
    const struct graph_mock_request *token = graph_mock_request(env.mock, TOKEN_PATH, 0);
    ck_assert_str_eq(token->method, "POST");
    ck_assert_str_eq(token->target, TOKEN_PATH);
    ck_assert_str_eq(token->content_type, "application/x-www-form-urlencoded");
    ck_assert_ptr_null(token->authorization);

    char scope[256];
    char scope_encoded[512];
    snprintf(scope, sizeof(scope), "%s/.default", graph_mock_url(env.mock));
    form_encode(scope, scope_encoded, sizeof(scope_encoded));
    char expected[1024];
    snprintf(expected, sizeof(expected),
             "client_id=%s&scope=%s&grant_type=client_credentials&client_secret=%s", CLIENT_ID,
             scope_encoded, CLIENT_SECRET_ENCODED);
    ck_assert_str_eq(token->body, expected);

    /* Every Graph request: the same cached token, the headers, and a fresh client-request-id. */
    char bearer[4096];
    snprintf(bearer, sizeof(bearer), "Bearer %s", env.token);
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), 2);
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PARTICIPANTS), 2);
    ck_assert_uint_eq(graph_mock_count(env.mock, NULL), 5);
    const char *ids[4] = {NULL};
    for (size_t i = 0; i < 4; i++) {
        const struct graph_mock_request *request = graph_mock_request(env.mock, NULL, i + 1);
        ck_assert_str_eq(request->method, "GET");
        ck_assert_str_eq(request->target, i % 2 == 0 ? P2P_PATH EXPAND_QUERY : P2P_PARTICIPANTS);
        ck_assert_str_eq(request->authorization, bearer);
        ck_assert_str_eq(request->accept, "application/json");
        ck_assert_str_eq(request->prefer, "include-unknown-enum-members");
        ck_assert_ptr_nonnull(request->client_request_id);
        ck_assert_msg(
            crd_guid_is_valid(request->client_request_id, strlen(request->client_request_id)),
            "client-request-id '%s' is not a GUID", request->client_request_id);
        ids[i] = request->client_request_id;
        for (size_t j = 0; j < i; j++) {
            ck_assert_str_ne(ids[i], ids[j]);
        }
    }
}
END_TEST

START_TEST(refresh_margin_is_five_minutes_or_a_tenth)
{
    ck_assert_int_eq(crd_auth_refresh_margin_ms(3599 * 1000), 300 * 1000);
    ck_assert_int_eq(crd_auth_refresh_margin_ms(86400 * 1000), 300 * 1000);
    ck_assert_int_eq(crd_auth_refresh_margin_ms(3000 * 1000), 300 * 1000);
    ck_assert_int_eq(crd_auth_refresh_margin_ms(600 * 1000), 60 * 1000);
    ck_assert_int_eq(crd_auth_refresh_margin_ms(10 * 1000), 1000);
}
END_TEST

START_TEST(token_endpoint_failure_is_retried)
{
    graph_mock_add_body(env.mock, TOKEN_PATH, 503, "{}");
    serve_token();
    serve_p2p();

    json_decref(fetch_ok(P2P_ID));
    ck_assert_uint_eq(graph_mock_count(env.mock, TOKEN_PATH), 2);
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), 1);
}
END_TEST

START_TEST(unusable_token_responses_rejected)
{
    static const char *const bodies[] = {
        "{\"token_type\": \"Bearer\", \"expires_in\": 3599}",
        "{\"token_type\": \"mac\", \"expires_in\": 3599, \"access_token\": \"abc\"}",
        "{\"token_type\": \"Bearer\", \"access_token\": \"abc\"}",
        "{\"token_type\": \"Bearer\", \"expires_in\": 3599, \"access_token\": \"a\\r\\nX: y\"}",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        graph_mock_add_body(env.mock, TOKEN_PATH, 200, bodies[i]);
        struct crd_graph_failure failure;
        struct crd_error err = {0};
        int r = fetch_fails(P2P_ID, &failure, &err);
        ck_assert_msg(r == -EPROTO, "body %zu: got %d: %s", i, r, err.message);
    }
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), 0);
}
END_TEST

/* ---- 401 ------------------------------------------------------------------------------------ */

struct burst_thread {
    pthread_t thread;
    pthread_barrier_t *barrier;
    struct crd_graph_session *session;
    int result;
    struct crd_error err;
};

static void *burst_fetch(void *arg)
{
    struct burst_thread *t = arg;
    json_t *record = NULL;
    pthread_barrier_wait(t->barrier);
    t->result = crd_graph_fetch_call_record(t->session, P2P_ID, &record, NULL, &t->err);
    json_decref(record);
    return NULL;
}

START_TEST(burst_of_401_makes_one_token_request)
{
    graph_mock_add_body(env.mock, TOKEN_PATH, 200,
                        "{\"token_type\": \"Bearer\", \"expires_in\": 3599, "
                        "\"access_token\": \"token-one\"}");
    graph_mock_add_body(env.mock, TOKEN_PATH, 200,
                        "{\"token_type\": \"Bearer\", \"expires_in\": 3599, "
                        "\"access_token\": \"token-two\"}");
    graph_mock_require_bearer(env.mock, "token-two");
    serve_p2p();

    enum { THREADS = 4 };
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, THREADS);
    struct burst_thread threads[THREADS];
    struct crd_error err = {0};
    for (int i = 0; i < THREADS; i++) {
        threads[i] = (struct burst_thread){.barrier = &barrier};
        ck_assert_int_eq(crd_graph_session_new(env.graph, &threads[i].session, &err), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        ck_assert_int_eq(pthread_create(&threads[i].thread, NULL, burst_fetch, &threads[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i].thread, NULL);
        crd_graph_session_free(threads[i].session);
    }
    pthread_barrier_destroy(&barrier);
    for (int i = 0; i < THREADS; i++) {
        ck_assert_msg(threads[i].result == 0, "thread %d: %d: %s", i, threads[i].result,
                      threads[i].err.message);
    }

    /* One token at start, one after the 401s, however many threads saw one. */
    ck_assert_uint_eq(graph_mock_count(env.mock, TOKEN_PATH), 2);
    size_t rejected = 0;
    size_t total = graph_mock_count(env.mock, P2P_PATH);
    for (size_t i = 0; i < total; i++) {
        const struct graph_mock_request *request = graph_mock_request(env.mock, P2P_PATH, i);
        if (request->status == 401) {
            ck_assert_str_eq(request->authorization, "Bearer token-one");
            rejected++;
        } else {
            ck_assert_str_eq(request->authorization, "Bearer token-two");
        }
    }
    ck_assert_uint_ge(rejected, 1);
    ck_assert_uint_le(rejected, THREADS);
    ck_assert_uint_eq(total - rejected, THREADS);
}
END_TEST

START_TEST(second_401_is_access_denied)
{
    serve_token();
    serve_p2p();
    graph_mock_require_bearer(env.mock, "a-token-never-issued");

    struct crd_graph_failure failure;
    struct crd_error err = {0};
    int r = fetch_fails(P2P_ID, &failure, &err);
    ck_assert_int_eq(r, -EACCES);
    ck_assert_int_eq(failure.http_status, 401);
    ck_assert_uint_eq(graph_mock_count(env.mock, TOKEN_PATH), 2);
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), 2);
}
END_TEST

/* ---- records and paging --------------------------------------------------------------------- */

START_TEST(p2p_record_in_one_page)
{
    serve_token();
    serve_p2p();

    json_t *record = fetch_ok(P2P_ID);
    ck_assert_str_eq(member_string(record, "id"), P2P_ID);
    ck_assert_int_eq(json_integer_value(json_object_get(record, "version")), 1);
    ck_assert_uint_eq(json_array_size(json_object_get(record, "sessions")), 1);
    json_t *participants = json_object_get(record, "participants_v2");
    ck_assert_uint_eq(json_array_size(participants), 2);
    ck_assert_str_eq(member_string(json_array_get(participants, 1), "id"),
                     "44ea8764-f66a-5885-a6e8-1816be8ee03d");
    ck_assert_str_eq(member_string(record, "participants_v2@callrecd.source"), "participants_v2");
    assert_no_next_links(record);
    json_decref(record);

    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), 1);
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PARTICIPANTS), 1);
}
END_TEST

START_TEST(large_meeting_pages_are_merged)
{
    const char *base = graph_mock_url(env.mock);
    serve_token();
    char *page1 = graph_mock_fixture("callrecord-large-page1.json", base);
    char *page2 = graph_mock_fixture("callrecord-large-page2.json", base);
    char *people1 = graph_mock_fixture("participants-page1.json", base);
    char *people2 = graph_mock_fixture("participants-page2.json", base);
    graph_mock_add_body(env.mock, RECORDS LARGE_ID, 200, page1);
    graph_mock_add_body(env.mock, RECORDS LARGE_ID "/sessions", 200, page2);
    /* Both participant pages live at the same path; only the query differs. */
    graph_mock_add_body(env.mock, RECORDS LARGE_ID "/participants_v2", 200, people1);
    graph_mock_add_body(env.mock, RECORDS LARGE_ID "/participants_v2", 200, people2);

    json_t *record = fetch_ok(LARGE_ID);
    json_t *sessions = json_object_get(record, "sessions");
    ck_assert_uint_eq(json_array_size(sessions), 75);
    ck_assert_uint_eq(json_array_size(json_object_get(record, "participants_v2")), 73);
    ck_assert_str_eq(member_string(record, "participants_v2@callrecd.source"), "participants_v2");
    assert_no_next_links(record);

    /* Page 2's sessions follow page 1's, in order. */
    json_t *second = json_loads(page2, 0, NULL);
    ck_assert_str_eq(member_string(json_array_get(sessions, 60), "id"),
                     member_string(json_array_get(json_object_get(second, "value"), 0), "id"));
    json_decref(second);

    /* The next links were requested verbatim. */
    json_t *first = json_loads(page1, 0, NULL);
    const char *link = member_string(first, "sessions@odata.nextLink");
    const struct graph_mock_request *request =
        graph_mock_request(env.mock, RECORDS LARGE_ID "/sessions", 0);
    ck_assert_str_eq(request->target, link + strlen(base));
    json_decref(first);
    json_t *people = json_loads(people1, 0, NULL);
    link = member_string(people, "@odata.nextLink");
    request = graph_mock_request(env.mock, RECORDS LARGE_ID "/participants_v2", 1);
    ck_assert_str_eq(request->target, link + strlen(base));
    json_decref(people);

    ck_assert_uint_eq(graph_mock_count(env.mock, NULL), 1 + 1 + 1 + 2);
    json_decref(record);
    free(page1);
    free(page2);
    free(people1);
    free(people2);
}
END_TEST

START_TEST(participants_from_sessions_for_p2p)
{
    static const unsigned statuses[] = {404, 403, 400};
    serve_token();
    char *record_body = graph_mock_fixture("callrecord-p2p-v1.json", NULL);
    char *not_found = graph_mock_fixture("error-404.json", NULL);
    graph_mock_add_body(env.mock, P2P_PATH, 200, record_body);
    for (size_t i = 0; i < 3; i++) {
        graph_mock_add_body(env.mock, P2P_PARTICIPANTS, statuses[i], not_found);
    }
    /* An empty list is the documented issue of missing participants too. */
    graph_mock_add_body(env.mock, P2P_PARTICIPANTS, 200, "{\"value\": []}");

    for (size_t i = 0; i < 4; i++) {
        json_t *record = fetch_ok(P2P_ID);
        json_t *participants = json_object_get(record, "participants_v2");
        ck_assert_uint_eq(json_array_size(participants), 2);
        json_t *caller = json_array_get(participants, 0);
        ck_assert_str_eq(member_string(caller, "id"), "7b2336f9-ca34-5358-9e58-574b31b09076");
        json_t *user = json_object_get(json_object_get(caller, "identity"), "user");
        ck_assert_str_eq(member_string(user, "id"), "7b2336f9-ca34-5358-9e58-574b31b09076");
        ck_assert_str_eq(member_string(user, "displayName"), "Alex Varga");
        ck_assert_str_eq(member_string(user, "tenantId"), TENANT_ID);
        ck_assert_str_eq(member_string(json_array_get(participants, 1), "id"),
                         "44ea8764-f66a-5885-a6e8-1816be8ee03d");
        ck_assert_str_eq(member_string(record, "participants_v2@callrecd.source"), "sessions");
        json_decref(record);
    }
    /* No retries of a participants_v2 that is not there. */
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PARTICIPANTS), 4);
    free(record_body);
    free(not_found);
}
END_TEST

START_TEST(participants_from_sessions_for_group_calls_are_callers)
{
    serve_token();
    char *body = graph_mock_fixture("callrecord-group-poor.json", NULL);
    json_t *record = json_loads(body, 0, NULL);
    free(body);
    /* A callee that is a person, so that taking callees would show. */
    json_t *session = json_array_get(json_object_get(record, "sessions"), 0);
    json_object_set_new(
        session, "callee",
        json_pack("{s:s, s:{s:s, s:s}}", "@odata.type",
                  "#microsoft.graph.callRecords.participantEndpoint", "associatedIdentity", "id",
                  "0d9f4a52-0000-4000-8000-00000000ca11", "displayName", "Callee Only"));
    body = json_dumps(record, 0);
    json_decref(record);
    graph_mock_add_body(env.mock, RECORDS GROUP_ID, 200, body);
    free(body);
    char *not_found = graph_mock_fixture("error-404.json", NULL);
    graph_mock_add_body(env.mock, RECORDS GROUP_ID "/participants_v2", 404, not_found);
    free(not_found);

    record = fetch_ok(GROUP_ID);
    json_t *participants = json_object_get(record, "participants_v2");
    /* 5 sessions: 4 people, one of them twice (a rejoin). */
    ck_assert_uint_eq(json_array_size(participants), 4);
    static const char *const callers[] = {
        "81a57dd7-5419-554f-8a95-7b66c7f6d7e9", "c88a58fb-d12a-5e46-a65d-ec9835a77d89",
        "74221681-1e72-582c-90b8-d366b19aa018", "63692612-7fca-59ce-a2c1-4155a0c63ed2"};
    for (size_t i = 0; i < 4; i++) {
        ck_assert_str_eq(member_string(json_array_get(participants, i), "id"), callers[i]);
    }
    ck_assert_str_eq(member_string(record, "participants_v2@callrecd.source"), "sessions");
    json_decref(record);
}
END_TEST

START_TEST(docs_example_next_link_rejected)
{
    serve_token();
    char *docs = graph_mock_fixture("docs-example-callrecord-get.json", NULL);
    graph_mock_add_body(env.mock, RECORDS DOCS_ID, 200, docs);
    free(docs);

    struct crd_graph_failure failure;
    struct crd_error err = {0};
    int r = fetch_fails(DOCS_ID, &failure, &err);
    ck_assert_int_eq(r, -EPROTO);
    ck_assert_msg(strstr(err.message, "another host") != NULL &&
                      strstr(err.message, "graph.microsoft.com") != NULL,
                  "message: %s", err.message);
    /* Nothing after the record: the token went nowhere else. */
    ck_assert_uint_eq(graph_mock_count(env.mock, NULL), 2);
}
END_TEST

/* Serves the p2p record with sessions@odata.nextLink set to link. */
static void serve_p2p_with_link(const char *link)
{
    char *body = graph_mock_fixture("callrecord-p2p-v1.json", NULL);
    json_t *record = json_loads(body, 0, NULL);
    free(body);
    json_object_set_new(record, "sessions@odata.nextLink", json_string(link));
    body = json_dumps(record, 0);
    json_decref(record);
    graph_mock_add_body(env.mock, P2P_PATH, 200, body);
    free(body);
}

START_TEST(next_link_to_other_host_rejected)
{
    serve_token();
    const char *base = graph_mock_url(env.mock);
    const char *port = strrchr(base, ':') + 1;
    char links[3][256];
    snprintf(links[0], sizeof(links[0]), "http://localhost:%s" RECORDS P2P_ID "/sessions", port);
    snprintf(links[1], sizeof(links[1]), "http://127.0.0.1:%u" RECORDS P2P_ID "/sessions",
             (unsigned)strtoul(port, NULL, 10) + 1);
    snprintf(links[2], sizeof(links[2]), "https://127.0.0.1:%s" RECORDS P2P_ID "/sessions", port);
    for (size_t i = 0; i < 3; i++) {
        serve_p2p_with_link(links[i]);
        struct crd_graph_failure failure;
        struct crd_error err = {0};
        int r = fetch_fails(P2P_ID, &failure, &err);
        ck_assert_int_eq(r, -EPROTO);
        ck_assert_msg(strstr(err.message, "another host") != NULL, "message: %s", err.message);
    }
    ck_assert_uint_eq(graph_mock_count(env.mock, RECORDS P2P_ID "/sessions"), 0);
}
END_TEST

START_TEST(next_link_seen_before_rejected)
{
    serve_token();
    char link[256];
    snprintf(link, sizeof(link), "%s" RECORDS P2P_ID "/sessions?$skiptoken=page-2",
             graph_mock_url(env.mock));
    serve_p2p_with_link(link);
    char page[512];
    snprintf(page, sizeof(page), "{\"value\": [], \"@odata.nextLink\": \"%s\"}", link);
    graph_mock_add_body(env.mock, RECORDS P2P_ID "/sessions", 200, page);

    struct crd_graph_failure failure;
    struct crd_error err = {0};
    int r = fetch_fails(P2P_ID, &failure, &err);
    ck_assert_int_eq(r, -EPROTO);
    ck_assert_msg(strstr(err.message, "followed before") != NULL, "message: %s", err.message);
    ck_assert_uint_eq(graph_mock_count(env.mock, RECORDS P2P_ID "/sessions"), 1);

    /* A link back to the record itself is a loop as well. */
    char self[256];
    snprintf(self, sizeof(self), "%s%s%s", graph_mock_url(env.mock), P2P_PATH, EXPAND_QUERY);
    serve_p2p_with_link(self);
    r = fetch_fails(P2P_ID, &failure, &err);
    ck_assert_int_eq(r, -EPROTO);
    ck_assert_msg(strstr(err.message, "followed before") != NULL, "message: %s", err.message);
}
END_TEST

/* ---- throttling and retries --------------------------------------------------------------- */

struct background_fetch {
    pthread_t thread;
    struct crd_graph_session *session;
    const char *call_id;
    int result;
    struct crd_graph_failure failure;
    struct crd_error err;
};

static void *background_run(void *arg)
{
    struct background_fetch *b = arg;
    json_t *record = NULL;
    b->result = crd_graph_fetch_call_record(b->session, b->call_id, &record, &b->failure, &b->err);
    json_decref(record);
    return NULL;
}

static void background_start(struct background_fetch *b, const char *call_id)
{
    *b = (struct background_fetch){.session = env.session, .call_id = call_id};
    ck_assert_int_eq(pthread_create(&b->thread, NULL, background_run, b), 0);
}

/*
 * Polls the gate until it reports being closed, up to timeout_ms. The mock
 * records a request before it responds, so the client closes the gate a few
 * milliseconds after the request shows up; there is no event to wait for.
 */
static int64_t wait_for_closed_gate(int timeout_ms)
{
    int64_t until = crd_time_monotonic_ms() + timeout_ms;
    int64_t left = 0;
    while ((left = crd_graph_throttled_for_ms(env.graph)) == 0 && crd_time_monotonic_ms() < until) {
        struct timespec pause = {.tv_nsec = 1000000};
        nanosleep(&pause, NULL);
    }
    return left;
}

static int64_t gap_ms(const char *path, size_t first, size_t second)
{
    return graph_mock_request(env.mock, path, second)->received_ms -
           graph_mock_request(env.mock, path, first)->received_ms;
}

START_TEST(throttled_with_retry_after_waits_at_the_gate)
{
    serve_token();
    char *throttled = graph_mock_fixture("error-429.json", NULL);
    struct graph_mock_reply reply = {.status = 429, .body = throttled, .headers = "Retry-After: 1"};
    graph_mock_add(env.mock, P2P_PATH, &reply);
    free(throttled);
    serve_p2p();
    ck_assert_int_eq(crd_graph_throttled_for_ms(env.graph), 0);

    struct background_fetch b;
    background_start(&b, P2P_ID);
    ck_assert(graph_mock_wait_count(env.mock, P2P_PATH, 1, 5000));
    int64_t closed_for = wait_for_closed_gate(900);
    pthread_join(b.thread, NULL);

    ck_assert_msg(b.result == 0, "fetch: %s", b.err.message);
    ck_assert_int_gt(closed_for, 0);
    ck_assert_int_le(closed_for, 1000);
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), 2);
    int64_t gap = gap_ms(P2P_PATH, 0, 1);
    ck_assert_msg(gap >= 950, "the retry came %lld ms after the 429", (long long)gap);
    ck_assert_int_eq(crd_graph_throttled_for_ms(env.graph), 0);
}
END_TEST

START_TEST(throttled_with_retry_after_date)
{
    serve_token();
    char date[64];
    time_t later = time(NULL) + 2;
    struct tm tm;
    gmtime_r(&later, &tm);
    char header[96];
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    snprintf(header, sizeof(header), "Retry-After: %s", date);
    struct graph_mock_reply reply = {.status = 429, .body = "{}", .headers = header};
    graph_mock_add(env.mock, P2P_PATH, &reply);
    serve_p2p();

    json_decref(fetch_ok(P2P_ID));
    int64_t gap = gap_ms(P2P_PATH, 0, 1);
    /* The date has whole seconds: between one and two seconds remained. */
    ck_assert_msg(gap >= 900, "the retry came %lld ms after the 429", (long long)gap);
}
END_TEST

START_TEST(throttled_without_retry_after_backs_off)
{
    serve_token();
    char *throttled = graph_mock_fixture("error-429.json", NULL);
    graph_mock_add_body(env.mock, P2P_PATH, 429, throttled);
    free(throttled);
    serve_p2p();

    json_decref(fetch_ok(P2P_ID));
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), 2);
}
END_TEST

START_TEST(throttled_until_max_attempts)
{
    open_graph(2, TEST_TOTAL_TIMEOUT_MS);
    serve_token();
    char *throttled = graph_mock_fixture("error-429.json", NULL);
    struct graph_mock_reply reply = {.status = 429, .body = throttled, .headers = "Retry-After: 1"};
    graph_mock_add(env.mock, P2P_PATH, &reply);
    free(throttled);

    struct crd_graph_failure failure;
    struct crd_error err = {0};
    int r = fetch_fails(P2P_ID, &failure, &err);
    ck_assert_int_eq(r, -EAGAIN);
    ck_assert_int_eq(failure.http_status, 429);
    ck_assert_int_eq(failure.retry_after_ms, 1000);
    ck_assert_str_eq(failure.code, "TooManyRequests");
    ck_assert_str_eq(failure.request_id, "1a3c5ddd-6e91-5d93-b3a9-8c1474964336");
    ck_assert_uint_eq(failure.attempts, 2);
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), 2);
    /* The gate stays closed for the other workers. */
    ck_assert_int_gt(crd_graph_throttled_for_ms(env.graph), 0);
}
END_TEST

START_TEST(run_of_503_then_success)
{
    serve_token();
    for (int i = 0; i < TEST_MAX_ATTEMPTS - 1; i++) {
        graph_mock_add_body(env.mock, P2P_PATH, 503,
                            "{\"error\": {\"code\": \"serviceNotAvailable\"}}");
    }
    serve_p2p();

    json_decref(fetch_ok(P2P_ID));
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), TEST_MAX_ATTEMPTS);
    /* A fresh client-request-id for every attempt. */
    ck_assert_str_ne(graph_mock_request(env.mock, P2P_PATH, 0)->client_request_id,
                     graph_mock_request(env.mock, P2P_PATH, 1)->client_request_id);
}
END_TEST

START_TEST(server_errors_until_max_attempts)
{
    serve_token();
    graph_mock_add_body(env.mock, P2P_PATH, 500, "{\"error\": {\"code\": \"generalException\"}}");

    struct crd_graph_failure failure;
    struct crd_error err = {0};
    int r = fetch_fails(P2P_ID, &failure, &err);
    ck_assert_int_eq(r, -EAGAIN);
    ck_assert_int_eq(failure.http_status, 500);
    ck_assert_str_eq(failure.code, "generalException");
    ck_assert_uint_eq(failure.attempts, TEST_MAX_ATTEMPTS);
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), TEST_MAX_ATTEMPTS);
    /* The message names the client-request-id that was sent, for Microsoft support. */
    const char *sent =
        graph_mock_request(env.mock, P2P_PATH, TEST_MAX_ATTEMPTS - 1)->client_request_id;
    ck_assert_str_eq(failure.client_request_id, sent);
    ck_assert_msg(strstr(err.message, sent) != NULL, "message: %s", err.message);
}
END_TEST

START_TEST(dropped_connection_then_success)
{
    serve_token();
    struct graph_mock_reply drop = {.drop = true};
    graph_mock_add(env.mock, P2P_PATH, &drop);
    serve_p2p();

    json_decref(fetch_ok(P2P_ID));
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), 2);
    ck_assert_uint_eq(graph_mock_request(env.mock, P2P_PATH, 0)->status, 0);
}
END_TEST

START_TEST(truncated_json_then_success)
{
    serve_token();
    char *record = graph_mock_fixture("callrecord-p2p-v1.json", NULL);
    record[strlen(record) / 2] = '\0';
    graph_mock_add_body(env.mock, P2P_PATH, 200, record);
    free(record);
    serve_p2p();

    json_decref(fetch_ok(P2P_ID));
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), 2);
}
END_TEST

START_TEST(timeout_then_success)
{
    serve_token();
    struct graph_mock_reply slow = {.body = "{}", .delay_ms = TEST_TOTAL_TIMEOUT_MS + 1000};
    graph_mock_add(env.mock, P2P_PATH, &slow);
    serve_p2p();

    json_decref(fetch_ok(P2P_ID));
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), 2);
}
END_TEST

/* ---- final errors ------------------------------------------------------------------------- */

START_TEST(not_found_is_final)
{
    serve_token();
    char *body = graph_mock_fixture("error-404.json", NULL);
    graph_mock_add_body(env.mock, P2P_PATH, 404, body);
    free(body);

    struct crd_graph_failure failure;
    struct crd_error err = {0};
    int r = fetch_fails(P2P_ID, &failure, &err);
    ck_assert_int_eq(r, -ENOENT);
    ck_assert_int_eq(failure.http_status, 404);
    ck_assert_str_eq(failure.code, "NotFound");
    ck_assert_str_eq(failure.request_id, "04e5a4e0-f123-53f4-899e-1b4495015623");
    ck_assert_str_eq(failure.client_request_id, "2c57aaee-770c-5337-8d45-013fee95067f");
    ck_assert_str_eq(failure.date, "2025-06-03T18:02:44");
    ck_assert_uint_eq(failure.attempts, 1);
    ck_assert_msg(strstr(err.message, "NotFound") != NULL &&
                      strstr(err.message, "04e5a4e0-f123-53f4-899e-1b4495015623") != NULL,
                  "message: %s", err.message);
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), 1);
}
END_TEST

START_TEST(forbidden_names_the_permission)
{
    serve_token();
    graph_mock_add_body(env.mock, P2P_PATH, 403,
                        "{\"error\": {\"code\": \"Forbidden\", \"message\": \"Access denied\", "
                        "\"innererror\": {\"request-id\": "
                        "\"5f0c3c4e-0000-4000-8000-000000000403\"}}}");

    struct crd_graph_failure failure;
    struct crd_error err = {0};
    int r = fetch_fails(P2P_ID, &failure, &err);
    ck_assert_int_eq(r, -EACCES);
    ck_assert_str_eq(failure.request_id, "5f0c3c4e-0000-4000-8000-000000000403");
    ck_assert_msg(strstr(err.message, "CallRecords.Read.All") != NULL, "message: %s", err.message);
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), 1);
}
END_TEST

START_TEST(bad_request_is_invalid)
{
    serve_token();
    graph_mock_add_body(env.mock, P2P_PATH, 400,
                        "{\"error\": {\"code\": \"BadRequest\", \"message\": \"Bad\"}}");

    struct crd_graph_failure failure;
    struct crd_error err = {0};
    ck_assert_int_eq(fetch_fails(P2P_ID, &failure, &err), -EINVAL);
    ck_assert_str_eq(failure.code, "BadRequest");
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), 1);

    ck_assert_int_eq(fetch_fails("not-a-guid", &failure, &err), -EINVAL);
    ck_assert_int_eq(fetch_fails(P2P_ID "/../x", &failure, &err), -EINVAL);
    ck_assert_uint_eq(graph_mock_count(env.mock, NULL), 2);
}
END_TEST

START_TEST(record_must_match_the_request)
{
    serve_token();
    static const char *const bodies[] = {
        "{\"id\": \"0b5d1a43-0000-4000-8000-0000000000aa\", \"version\": 1, \"sessions\": []}",
        "{\"id\": \"" P2P_ID "\", \"sessions\": []}",
        "{\"id\": \"" P2P_ID "\", \"version\": \"1\", \"sessions\": []}",
        "{\"version\": 1, \"sessions\": []}",
        "[1, 2]",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        graph_mock_add_body(env.mock, P2P_PATH, 200, bodies[i]);
        struct crd_graph_failure failure;
        struct crd_error err = {0};
        int r = fetch_fails(P2P_ID, &failure, &err);
        ck_assert_msg(r == -EPROTO, "body %zu: %d: %s", i, r, err.message);
    }
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PARTICIPANTS), 0);

    /* Ids compare without regard to case. */
    graph_mock_add_body(env.mock, P2P_PATH, 200,
                        "{\"id\": \"7E633194-32CF-5BEE-86E6-F491790B2813\", \"version\": 4}");
    graph_mock_add_body(env.mock, P2P_PARTICIPANTS, 200, p2p_participants);
    json_t *record = fetch_ok(P2P_ID);
    ck_assert_uint_eq(json_array_size(json_object_get(record, "sessions")), 0);
    json_decref(record);
}
END_TEST

START_TEST(oversized_page_rejected)
{
    serve_token();
    size_t size = 64 * 1024 * 1024 + 1;
    char *body = malloc(size + 1);
    ck_assert_ptr_nonnull(body);
    memset(body, ' ', size);
    body[0] = '{';
    body[size - 1] = '}';
    body[size] = '\0';
    graph_mock_add_body(env.mock, P2P_PATH, 200, body);
    free(body);

    struct crd_graph_failure failure;
    struct crd_error err = {0};
    ck_assert_int_eq(fetch_fails(P2P_ID, &failure, &err), -EPROTO);
    ck_assert_msg(strstr(err.message, "64 MiB") != NULL, "message: %s", err.message);
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), 1);
}
END_TEST

/* ---- cancellation ------------------------------------------------------------------------- */

START_TEST(cancel_wakes_a_request_at_the_gate)
{
    serve_token();
    struct graph_mock_reply reply = {.status = 429, .body = "{}", .headers = "Retry-After: 30"};
    graph_mock_add(env.mock, P2P_PATH, &reply);

    struct background_fetch b;
    background_start(&b, P2P_ID);
    ck_assert(graph_mock_wait_count(env.mock, P2P_PATH, 1, 5000));
    ck_assert_int_gt(wait_for_closed_gate(2000), 20000);

    int64_t cancelled_at = crd_time_monotonic_ms();
    crd_graph_cancel(env.graph);
    pthread_join(b.thread, NULL);
    int64_t took = crd_time_monotonic_ms() - cancelled_at;

    ck_assert_int_eq(b.result, -ECANCELED);
    ck_assert_msg(took < 2000, "the fetch took %lld ms to notice", (long long)took);
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), 1);

    /* Later fetches fail at once. */
    struct crd_graph_failure failure;
    struct crd_error err = {0};
    ck_assert_int_eq(fetch_fails(P2P_ID, &failure, &err), -ECANCELED);
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), 1);
}
END_TEST

START_TEST(cancel_ends_a_fetch_that_backs_off)
{
    /*
     * A backoff of up to a minute after a 503. The cancel usually finds the
     * fetch waiting; when it comes a moment earlier, the fetch must end all
     * the same. (cancel_wakes_a_request_at_the_gate pins the wake-up itself.)
     */
    crd_graph_session_free(env.session);
    crd_graph_free(env.graph);
    struct crd_graph_options options = {
        .graph_url = graph_mock_url(env.mock),
        .login_url = graph_mock_url(env.mock),
        .tenant = TENANT_ID,
        .client_id = CLIENT_ID,
        .client_secret = env.secret,
        .backoff_base_ms = 60000,
        .backoff_max_ms = 60000,
    };
    struct crd_error err = {0};
    ck_assert_int_eq(crd_graph_new(&options, &env.graph, &err), 0);
    ck_assert_int_eq(crd_graph_session_new(env.graph, &env.session, &err), 0);
    serve_token();
    graph_mock_add_body(env.mock, P2P_PATH, 503, "{}");

    struct background_fetch b;
    background_start(&b, P2P_ID);
    ck_assert(graph_mock_wait_count(env.mock, P2P_PATH, 1, 5000));
    int64_t cancelled_at = crd_time_monotonic_ms();
    crd_graph_cancel(env.graph);
    pthread_join(b.thread, NULL);
    int64_t took = crd_time_monotonic_ms() - cancelled_at;
    ck_assert_int_eq(b.result, -ECANCELED);
    ck_assert_msg(took < 2000, "the fetch took %lld ms to notice", (long long)took);
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), 1);
}
END_TEST

/* ---- secrets ------------------------------------------------------------------------------ */

START_TEST(secrets_reach_no_message_and_no_log)
{
    /* Every debug message goes to a file instead of stderr, to be searched afterwards. */
    char *dir = crd_test_make_tmpdir("test_graph");
    char log_path[512];
    snprintf(log_path, sizeof(log_path), "%s/log", dir);
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_int_ge(log_fd, 0);
    fflush(stderr);
    int saved_stderr = dup(STDERR_FILENO);
    ck_assert_int_ge(saved_stderr, 0);
    ck_assert_int_ge(dup2(log_fd, STDERR_FILENO), 0);
    crd_log_setup(CRD_LOG_DEBUG, ~0u, CRD_LOG_TARGET_STDERR);

    /* A failed login, as Entra responds to a wrong secret. */
    graph_mock_add_body(env.mock, TOKEN_PATH, 401,
                        "{\"error\": \"invalid_client\", \"error_description\": \"AADSTS7000215: "
                        "Invalid client secret provided. Ensure the secret being sent in the "
                        "request is the client secret value.\\r\\nTrace ID: "
                        "0f7c1e2d-0000-4000-8000-00000000a001\", \"error_codes\": [7000215], "
                        "\"trace_id\": \"0f7c1e2d-0000-4000-8000-00000000a001\", "
                        "\"correlation_id\": \"9b8a7c6d-0000-4000-8000-00000000c002\"}");
    struct crd_graph_failure failure;
    struct crd_error err = {0};
    int r = fetch_fails(P2P_ID, &failure, &err);
    ck_assert_int_eq(r, -EACCES);
    ck_assert_msg(strstr(err.message, "invalid_client") != NULL &&
                      strstr(err.message, "AADSTS7000215") != NULL &&
                      strstr(err.message, "0f7c1e2d-0000-4000-8000-00000000a001") != NULL &&
                      strstr(err.message, "9b8a7c6d-0000-4000-8000-00000000c002") != NULL,
                  "message: %s", err.message);
    ck_assert_msg(strchr(err.message, '\n') == NULL && strchr(err.message, '\r') == NULL,
                  "message has a line break: %s", err.message);
    assert_failure_secret_free(&failure, &err);
    ck_assert_uint_eq(graph_mock_count(env.mock, P2P_PATH), 0);

    /* With a token: a 403, then 401s for it and for the next one. */
    open_graph(TEST_MAX_ATTEMPTS, TEST_TOTAL_TIMEOUT_MS);
    serve_token();
    graph_mock_add_body(env.mock, P2P_PATH, 403, "{\"error\": {\"code\": \"Forbidden\"}}");
    r = fetch_fails(P2P_ID, &failure, &err);
    ck_assert_int_eq(r, -EACCES);
    assert_failure_secret_free(&failure, &err);
    graph_mock_require_bearer(env.mock, "another-token");
    r = fetch_fails(P2P_ID, &failure, &err);
    ck_assert_int_eq(r, -EACCES);
    assert_failure_secret_free(&failure, &err);

    fflush(stderr);
    ck_assert_int_ge(dup2(saved_stderr, STDERR_FILENO), 0);
    close(saved_stderr);
    close(log_fd);
    crd_log_setup(CRD_LOG_INFO, 0, CRD_LOG_TARGET_STDERR);

    size_t log_len = 0;
    char *log = crd_test_read_file(log_path, &log_len);
    ck_assert_ptr_nonnull(log);
    /* The debug messages were written, and none carries a secret. */
    ck_assert_msg(strstr(log, "requesting an access token") != NULL, "log: %s", log);
    assert_secret_free("the log", log);
    free(log);
    crd_test_remove_tree(dir);
    free(dir);
}
END_TEST

static Suite *graph_suite(void)
{
    Suite *suite = suite_create("graph");

    TCase *token = tcase_create("token");
    tcase_add_checked_fixture(token, setup, teardown);
    tcase_set_timeout(token, 30);
    tcase_add_test(token, token_form_and_caching);
    tcase_add_test(token, refresh_margin_is_five_minutes_or_a_tenth);
    tcase_add_test(token, token_endpoint_failure_is_retried);
    tcase_add_test(token, unusable_token_responses_rejected);
    tcase_add_test(token, burst_of_401_makes_one_token_request);
    tcase_add_test(token, second_401_is_access_denied);
    tcase_add_test(token, secrets_reach_no_message_and_no_log);
    suite_add_tcase(suite, token);

    TCase *paging = tcase_create("records and paging");
    tcase_add_checked_fixture(paging, setup, teardown);
    tcase_set_timeout(paging, 30);
    tcase_add_test(paging, p2p_record_in_one_page);
    tcase_add_test(paging, large_meeting_pages_are_merged);
    tcase_add_test(paging, participants_from_sessions_for_p2p);
    tcase_add_test(paging, participants_from_sessions_for_group_calls_are_callers);
    tcase_add_test(paging, docs_example_next_link_rejected);
    tcase_add_test(paging, next_link_to_other_host_rejected);
    tcase_add_test(paging, next_link_seen_before_rejected);
    tcase_add_test(paging, record_must_match_the_request);
    suite_add_tcase(suite, paging);

    TCase *retries = tcase_create("errors, retries and throttling");
    tcase_add_checked_fixture(retries, setup, teardown);
    tcase_set_timeout(retries, 30);
    tcase_add_test(retries, throttled_with_retry_after_waits_at_the_gate);
    tcase_add_test(retries, throttled_with_retry_after_date);
    tcase_add_test(retries, throttled_without_retry_after_backs_off);
    tcase_add_test(retries, throttled_until_max_attempts);
    tcase_add_test(retries, run_of_503_then_success);
    tcase_add_test(retries, server_errors_until_max_attempts);
    tcase_add_test(retries, dropped_connection_then_success);
    tcase_add_test(retries, truncated_json_then_success);
    tcase_add_test(retries, timeout_then_success);
    tcase_add_test(retries, not_found_is_final);
    tcase_add_test(retries, forbidden_names_the_permission);
    tcase_add_test(retries, bad_request_is_invalid);
    tcase_add_test(retries, oversized_page_rejected);
    tcase_add_test(retries, cancel_wakes_a_request_at_the_gate);
    tcase_add_test(retries, cancel_ends_a_fetch_that_backs_off);
    suite_add_tcase(suite, retries);
    return suite;
}

int main(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "curl_global_init failed\n");
        return EXIT_FAILURE;
    }
    SRunner *runner = srunner_create(graph_suite());
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    curl_global_cleanup();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
