/* SPDX-License-Identifier: MIT */
/*
 * The circuit breaker for Graph outages: its state machine driven by an
 * injected clock, and an end-to-end outage in which fakegraph responds with
 * 503 to every call record request until it is reset.
 */
#include "config.h"

#include <check.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "breaker.h"
#include "fetcher.h"
#include "graph_env.h"

#define BASE_MS 1000
#define MAX_MS 8000

static const struct crd_breaker_options options = {
    .failure_percent = 80,
    .min_attempts = 10,
    .window_ms = 60000,
    .backoff_base_ms = BASE_MS,
    .backoff_max_ms = MAX_MS,
};

/* Records `answered` responses and then `failed` failures at now_ms; returns the last event. */
static enum crd_breaker_event feed(struct crd_breaker *breaker, unsigned answered, unsigned failed,
                                   int64_t now_ms)
{
    enum crd_breaker_event event = CRD_BREAKER_EVENT_NONE;
    for (unsigned i = 0; i < answered + failed; i++) {
        bool probe = false;
        int64_t wait_ms = 0;
        ck_assert(crd_breaker_allow(breaker, now_ms, &probe, &wait_ms));
        event = crd_breaker_record(breaker, false,
                                   i < answered ? CRD_BREAKER_ANSWERED : CRD_BREAKER_FAILED,
                                   now_ms, 0);
    }
    return event;
}

/* Opens a new breaker at time 0 with ten failures and a period of BASE_MS / 2 (random 0). */
static void open_at_zero(struct crd_breaker *breaker)
{
    crd_breaker_init(breaker, &options, 0);
    ck_assert_int_eq(feed(breaker, 0, 10, 0), CRD_BREAKER_EVENT_OPENED);
}

START_TEST(breaker_closed_below_min_attempts)
{
    struct crd_breaker breaker;
    crd_breaker_init(&breaker, &options, 0);
    ck_assert_int_eq(feed(&breaker, 0, 9, 100), CRD_BREAKER_EVENT_NONE);
    ck_assert_int_eq(breaker.state, CRD_BREAKER_STATE_CLOSED);
}
END_TEST

START_TEST(breaker_closed_below_failure_percent)
{
    struct crd_breaker breaker;
    crd_breaker_init(&breaker, &options, 0);
    ck_assert_int_eq(feed(&breaker, 3, 7, 100), CRD_BREAKER_EVENT_NONE);
    ck_assert_int_eq(breaker.state, CRD_BREAKER_STATE_CLOSED);
}
END_TEST

START_TEST(breaker_opens_at_failure_percent)
{
    struct crd_breaker breaker;
    crd_breaker_init(&breaker, &options, 0);
    ck_assert_int_eq(feed(&breaker, 2, 8, 100), CRD_BREAKER_EVENT_OPENED);
    ck_assert_int_eq(breaker.state, CRD_BREAKER_STATE_OPEN);
    ck_assert_int_eq(breaker.outage_start_ms, 100);
}
END_TEST

START_TEST(breaker_forgets_outcomes_older_than_window)
{
    struct crd_breaker breaker;
    crd_breaker_init(&breaker, &options, 0);
    ck_assert_int_eq(feed(&breaker, 0, 9, 0), CRD_BREAKER_EVENT_NONE);
    /* The nine failures of time 0 have left the minute; one more is not enough. */
    ck_assert_int_eq(feed(&breaker, 0, 1, 61000), CRD_BREAKER_EVENT_NONE);
    unsigned attempts = 0;
    unsigned failures = 0;
    crd_breaker_window(&breaker, 61000, &attempts, &failures);
    ck_assert_uint_eq(attempts, 1);
    ck_assert_uint_eq(failures, 1);
}
END_TEST

START_TEST(breaker_open_blocks_until_period_ends)
{
    struct crd_breaker breaker;
    open_at_zero(&breaker);
    bool probe = false;
    int64_t wait_ms = 0;
    ck_assert(!crd_breaker_allow(&breaker, 100, &probe, &wait_ms));
    ck_assert_int_eq(wait_ms, BASE_MS / 2 - 100);
    ck_assert(crd_breaker_allow(&breaker, BASE_MS / 2, &probe, &wait_ms));
    ck_assert(probe);
    ck_assert_int_eq(breaker.state, CRD_BREAKER_STATE_HALF_OPEN);
}
END_TEST

START_TEST(breaker_half_open_lets_one_probe_through)
{
    struct crd_breaker breaker;
    open_at_zero(&breaker);
    bool probe = false;
    int64_t wait_ms = 0;
    ck_assert(crd_breaker_allow(&breaker, BASE_MS, &probe, &wait_ms));
    ck_assert(!crd_breaker_allow(&breaker, BASE_MS, &probe, &wait_ms));
    ck_assert_int_eq(wait_ms, -1);
}
END_TEST

START_TEST(breaker_probe_failure_doubles_period)
{
    struct crd_breaker breaker;
    open_at_zero(&breaker);
    int64_t now_ms = BASE_MS;
    int64_t expected[] = {2 * BASE_MS, 4 * BASE_MS, MAX_MS, MAX_MS};
    for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
        bool probe = false;
        int64_t wait_ms = 0;
        ck_assert(crd_breaker_allow(&breaker, now_ms, &probe, &wait_ms));
        ck_assert(probe);
        /* A random value of half the period draws the whole period. */
        uint32_t random_value = (uint32_t)(expected[i] / 2);
        ck_assert_int_eq(crd_breaker_record(&breaker, true, CRD_BREAKER_FAILED, now_ms,
                                            random_value),
                         CRD_BREAKER_EVENT_PROBE_FAILED);
        ck_assert_int_eq(breaker.period_ms, expected[i]);
        now_ms += breaker.period_ms;
    }
    ck_assert_uint_eq(breaker.failed_probes, 4);
}
END_TEST

START_TEST(breaker_probe_answer_closes)
{
    struct crd_breaker breaker;
    open_at_zero(&breaker);
    bool probe = false;
    int64_t wait_ms = 0;
    ck_assert(crd_breaker_allow(&breaker, BASE_MS, &probe, &wait_ms));
    ck_assert_int_eq(crd_breaker_record(&breaker, true, CRD_BREAKER_ANSWERED, BASE_MS + 10, 0),
                     CRD_BREAKER_EVENT_CLOSED);
    ck_assert_int_eq(breaker.state, CRD_BREAKER_STATE_CLOSED);
    ck_assert_int_eq(breaker.changed_at_ms, BASE_MS + 10);
    /* The window starts empty, so the failures of the outage do not reopen it. */
    ck_assert_int_eq(feed(&breaker, 0, 9, BASE_MS + 20), CRD_BREAKER_EVENT_NONE);
}
END_TEST

START_TEST(breaker_ignores_outcomes_while_open)
{
    struct crd_breaker breaker;
    open_at_zero(&breaker);
    ck_assert_int_eq(crd_breaker_record(&breaker, false, CRD_BREAKER_ANSWERED, 10, 0),
                     CRD_BREAKER_EVENT_NONE);
    ck_assert_int_eq(crd_breaker_record(&breaker, false, CRD_BREAKER_FAILED, 10, 0),
                     CRD_BREAKER_EVENT_NONE);
    ck_assert_int_eq(breaker.state, CRD_BREAKER_STATE_OPEN);
    ck_assert_int_eq(breaker.open_until_ms, BASE_MS / 2);
}
END_TEST

START_TEST(breaker_abandoned_probe_frees_slot)
{
    struct crd_breaker breaker;
    open_at_zero(&breaker);
    bool probe = false;
    int64_t wait_ms = 0;
    ck_assert(crd_breaker_allow(&breaker, BASE_MS, &probe, &wait_ms));
    ck_assert_int_eq(crd_breaker_record(&breaker, true, CRD_BREAKER_ABANDONED, BASE_MS, 0),
                     CRD_BREAKER_EVENT_NONE);
    probe = false;
    ck_assert(crd_breaker_allow(&breaker, BASE_MS, &probe, &wait_ms));
    ck_assert(probe);
}
END_TEST

/* ---- end to end: fakegraph responds with 503 to every call record request ------------------- */

#define OUTAGE_CALLS 20
#define OUTAGE_WORKERS 4
#define OUTAGE_PROBES 3
/* Requests of one fetch that keeps failing: the Graph client's default of 5 attempts. */
#define REQUESTS_PER_FAILED_FETCH 5
#define E2E_TIMEOUT_MS 30000

static struct crd_test_env env;
static struct crd_test_graph graph;
static char *sink_dir;
static char *sink_path;
static json_t *template;

static void start_all(void)
{
    crd_test_graph_prepare(&graph);
    char *graph_keys = crd_test_graph_config(&graph);
    sink_dir = crd_test_make_tmpdir("crd-breaker-sink");
    char *sections = NULL;
    if (asprintf(&sink_path, "%s/records.jsonl", sink_dir) < 0 ||
        asprintf(&sections,
                 "[fetch]\nworkers = %d\nretry_base = 100ms\nretry_max = 1s\nmax_attempts = 2\n"
                 "outage_min_attempts = 4\noutage_failure_percent = 80\n"
                 "outage_backoff_max = 1s\n\n"
                 "[reconcile]\ninterval = 0\n\n"
                 "[sink archive]\ntype = file\npath = %s\n",
                 OUTAGE_WORKERS, sink_path) < 0) {
        abort();
    }
    struct crd_test_env_options env_options = {.graph = graph_keys, .sections = sections};
    crd_test_env_create_with(&env, &env_options);
    free(graph_keys);
    free(sections);
    crd_test_graph_start(&graph, &env, NULL);
    if (crd_test_env_start(&env) != 0) {
        exit(1);
    }
    if (!crd_test_env_wait_for_subscriptions(&env, 1)) {
        fprintf(stderr, "callrecd did not get its subscription\n");
        exit(1);
    }
    char *fixture = crd_test_fixture_path("callrecord-pstn.json");
    template = json_load_file(fixture, 0, NULL);
    free(fixture);
}

static void stop_all(void)
{
    (void)crd_test_env_stop(&env);
    crd_test_env_destroy(&env);
    crd_test_graph_stop(&graph);
    crd_test_remove_tree(sink_dir);
    free(sink_dir);
    free(sink_path);
    json_decref(template);
}

static void call_id_of(unsigned index, char *out, size_t size)
{
    snprintf(out, size, "b2000000-0000-4000-8000-%012u", index);
}

static void publish_all(void)
{
    for (unsigned i = 0; i < OUTAGE_CALLS; i++) {
        char call_id[64];
        call_id_of(i, call_id, sizeof(call_id));
        json_t *record = json_deep_copy(template);
        json_object_set_new(record, "id", json_string(call_id));
        json_object_set_new(record, "version", json_integer(1));
        json_t *body = json_pack("{s:o}", "record", record);
        long status = crd_test_graph_control(&graph, "records", body, NULL);
        ck_assert_msg(status >= 200 && status < 300, "publish answered %ld", status);
        json_decref(body);
    }
}

static void notify(const char *call_id)
{
    char *url = NULL;
    ck_assert_int_ge(asprintf(&url, "%s/notify", env.base_url), 0);
    json_t *body = json_pack("{s:s, s:s, s:s, s:s}", "callId", call_id, "changeType", "updated",
                             "notificationUrl", url, "clientState", CRD_TEST_CLIENT_STATE);
    json_t *answer = NULL;
    ck_assert_int_eq(crd_test_graph_control(&graph, "notify", body, &answer), 200);
    ck_assert_int_eq(json_integer_value(json_object_get(answer, "status")), 202);
    json_decref(answer);
    json_decref(body);
    free(url);
}

/* Number of call record requests in fakegraph's request log. */
static size_t record_requests(void)
{
    json_t *log = crd_test_get_json(graph.base_url, "/_fakegraph/requests", graph.ca_file);
    size_t count = 0;
    size_t index;
    json_t *entry;
    json_array_foreach(log, index, entry) {
        const char *path = json_string_value(json_object_get(entry, "path"));
        if (path != NULL && strncmp(path, "/v1.0/communications/callRecords/", 33) == 0) {
            count++;
        }
    }
    json_decref(log);
    return count;
}

/* The sum of the attempts counted in the daemon's jobs table. */
static int64_t counted_attempts(void)
{
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open_v2(env.db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *stmt = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT total(attempts) FROM jobs", -1, &stmt, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(stmt), SQLITE_ROW);
    int64_t sum = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return sum;
}

/* The "graph" member of /healthz, state only; malloc'ed. */
static char *graph_health_state(void)
{
    json_t *health = crd_test_get_json(env.base_url, "/healthz", env.ca_file);
    json_t *graph_status = json_object_get(health, "graph");
    ck_assert_ptr_nonnull(json_object_get(graph_status, "since"));
    char *state = strdup(json_string_value(json_object_get(graph_status, "state")));
    json_decref(health);
    return state;
}

START_TEST(outage_pauses_fetching_and_recovers)
{
    publish_all();
    json_t *fault = json_pack("{s:s, s:i, s:i}", "match", "/v1.0/communications/callRecords/",
                              "status", 503, "count", 1000000);
    long status = crd_test_graph_control(&graph, "faults", fault, NULL);
    ck_assert_msg(status >= 200 && status < 300, "fault answered %ld", status);
    json_decref(fault);
    for (unsigned i = 0; i < OUTAGE_CALLS; i++) {
        char call_id[64];
        call_id_of(i, call_id, sizeof(call_id));
        notify(call_id);
    }

    ck_assert_msg(crd_test_wait_for_text(env.log_path, "Graph outage: ", E2E_TIMEOUT_MS),
                  "the breaker never opened");
    size_t at_open = record_requests();
    char *state = graph_health_state();
    ck_assert_msg(strcmp(state, "closed") != 0, "/healthz shows graph state %s", state);
    free(state);

    ck_assert_msg(crd_test_env_wait_for_lines(&env, "Graph outage continues", OUTAGE_PROBES,
                                              E2E_TIMEOUT_MS),
                  "fewer than %d probes failed", OUTAGE_PROBES);
    size_t after_probes = record_requests();
    /*
     * Only fetches that were running when the breaker opened and the probes
     * since then reached Graph. Per-job retries would have made at least
     * REQUESTS_PER_FAILED_FETCH requests for each of the calls.
     */
    size_t bound = (OUTAGE_WORKERS + OUTAGE_PROBES + 1) * REQUESTS_PER_FAILED_FETCH;
    ck_assert_msg(after_probes - at_open <= bound, "%zu requests during the outage, more than %zu",
                  after_probes - at_open, bound);
    ck_assert_msg(after_probes < OUTAGE_CALLS * REQUESTS_PER_FAILED_FETCH,
                  "%zu requests in all", after_probes);
    /*
     * Failed probes are not the jobs' fault: only the fetches that failed
     * before the breaker opened count as attempts, at most one per worker.
     */
    int64_t attempts = counted_attempts();
    ck_assert_msg(attempts <= OUTAGE_WORKERS, "%lld attempts counted during the outage",
                  (long long)attempts);

    json_t *empty = json_object();
    status = crd_test_graph_control(&graph, "reset", empty, NULL);
    json_decref(empty);
    ck_assert_msg(status >= 200 && status < 300, "reset answered %ld", status);
    publish_all();

    ck_assert_msg(crd_test_wait_for_text(env.log_path, "Graph outage ended", E2E_TIMEOUT_MS),
                  "the breaker never closed");
    for (unsigned i = 0; i < OUTAGE_CALLS; i++) {
        char call_id[64];
        call_id_of(i, call_id, sizeof(call_id));
        ck_assert_msg(crd_test_wait_for_text(sink_path, call_id, E2E_TIMEOUT_MS),
                      "call %s never arrived", call_id);
    }
    state = graph_health_state();
    ck_assert_str_eq(state, "closed");
    free(state);
    ck_assert_msg(!crd_test_wait_for_text(env.log_path, "dead letters", 0),
                  "a job was given up although max_attempts = 2 was only reached in the outage");
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("breaker");
    TCase *unit = tcase_create("state machine");
    tcase_add_test(unit, breaker_closed_below_min_attempts);
    tcase_add_test(unit, breaker_closed_below_failure_percent);
    tcase_add_test(unit, breaker_opens_at_failure_percent);
    tcase_add_test(unit, breaker_forgets_outcomes_older_than_window);
    tcase_add_test(unit, breaker_open_blocks_until_period_ends);
    tcase_add_test(unit, breaker_half_open_lets_one_probe_through);
    tcase_add_test(unit, breaker_probe_failure_doubles_period);
    tcase_add_test(unit, breaker_probe_answer_closes);
    tcase_add_test(unit, breaker_ignores_outcomes_while_open);
    tcase_add_test(unit, breaker_abandoned_probe_frees_slot);
    suite_add_tcase(suite, unit);

    TCase *outage = tcase_create("outage");
    tcase_add_unchecked_fixture(outage, start_all, stop_all);
    tcase_set_timeout(outage, 120);
    tcase_add_test(outage, outage_pauses_fetching_and_recovers);
    suite_add_tcase(suite, outage);

    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
