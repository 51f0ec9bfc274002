/* SPDX-License-Identifier: MIT */
/*
 * Crash safety: fakegraph publishes several versions of a few hundred call
 * records and sends a few thousand notifications, while the test kills
 * callrecd with SIGKILL at random moments and starts it again. Like Graph, the
 * driver retries each notification until it is acknowledged. At the end the
 * file sink must hold the newest version of every call, and a record that was
 * delivered twice must carry the same idempotency key both times. The same
 * load with SIGTERM in place of SIGKILL must also end in clean exits, status 0.
 */
#include "config.h"

#include <check.h>
#include <pthread.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "graph_env.h"
#include "util.h"

#define TENANT_ID CRD_TEST_TENANT_ID

#define CALLS 300
#define VERSIONS 3
#define KILLS 12
/* Notifications per version of a call: Graph sends duplicates. */
#define NOTIFICATIONS_PER_VERSION 4

static struct crd_test_env env;
/* Serializes killing and restarting the daemon with reading its pid. */
static pthread_mutex_t daemon_lock = PTHREAD_MUTEX_INITIALIZER;
static struct crd_test_graph graph;
static char *sink_path;

static void setup(void)
{
    crd_test_graph_prepare(&graph);
    char *graph_keys = crd_test_graph_config(&graph);
    char *sections = NULL;
    char *dir = crd_test_make_tmpdir("crd-crash-sink");
    if (asprintf(&sink_path, "%s/records.jsonl", dir) < 0 ||
        asprintf(&sections,
                 "[fetch]\nworkers = 4\nretry_base = 50ms\nretry_max = 500ms\n\n"
                 "[sink archive]\ntype = file\npath = %s\n",
                 sink_path) < 0) {
        abort();
    }
    free(dir);
    struct crd_test_env_options options = {.graph = graph_keys, .sections = sections};
    crd_test_env_create_with(&env, &options);
    free(graph_keys);
    free(sections);

    crd_test_graph_start(&graph, &env, NULL);
    ck_assert_int_eq(crd_test_env_start(&env), 0);
    ck_assert(crd_test_env_wait_for_subscriptions(&env, 1));
}

static long control(const char *path, json_t *body, json_t **ret_json)
{
    return crd_test_graph_control(&graph, path, body, ret_json);
}

static void publish(json_t *template, const char *call_id, int version)
{
    json_t *record = json_deep_copy(template);
    json_object_set_new(record, "id", json_string(call_id));
    json_object_set_new(record, "version", json_integer(version));
    json_t *body = json_pack("{s:o}", "record", record);
    long status = control("records", body, NULL);
    ck_assert_msg(status >= 200 && status < 300, "publish of %s answered HTTP %ld", call_id,
                  status);
    json_decref(body);
}

/*
 * Sends one notification and retries, as Graph does, until callrecd
 * acknowledges it, while the killer thread may be restarting the daemon.
 * Returns the number of attempts.
 */
static unsigned notify_until_acknowledged(const char *call_id)
{
    char *url = NULL;
    if (asprintf(&url, "%s/notify", env.base_url) < 0) {
        abort();
    }
    json_t *body = json_pack("{s:s, s:s, s:s, s:s}", "callId", call_id, "changeType", "updated",
                             "notificationUrl", url, "clientState", CRD_TEST_CLIENT_STATE);
    unsigned attempts = 0;
    for (;;) {
        attempts++;
        json_t *answer = NULL;
        long status = control("notify", body, &answer);
        json_int_t received = json_integer_value(json_object_get(answer, "status"));
        json_decref(answer);
        if (status >= 200 && status < 300 && received == 202) {
            break;
        }
        /* Graph retries for hours; here the daemon is back within a second or two. */
        ck_assert_msg(attempts < 5000, "notification for %s never acknowledged", call_id);
    }
    json_decref(body);
    free(url);
    return attempts;
}

/*
 * Sends the daemon signal_number, waits for it to exit, and starts it again;
 * holds daemon_lock. Returns the exit status of the stopped daemon.
 */
static int kill_and_restart(int signal_number)
{
    pthread_mutex_lock(&daemon_lock);
    kill(env.daemon.pid, signal_number);
    int status = 0;
    waitpid(env.daemon.pid, &status, 0);
    env.daemon.pid = -1;
    (void)crd_test_daemon_stop(&env.daemon, 0);  /* frees the notify socket and paths */
    int r = crd_test_env_start(&env);
    pthread_mutex_unlock(&daemon_lock);
    if (r != 0) {
        fprintf(stderr, "callrecd did not restart after a kill\n");
        abort();
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

struct killer {
    pthread_t thread;
    unsigned seed;
    int signal_number;
    int rounds;
    int kills;
    int unclean_exits;       /* SIGTERM only: exits with a status other than 0 */
};

/* Stops the daemon `rounds` times at random moments 50 to 800 ms apart. */
static void *killer_main(void *argument)
{
    struct killer *killer = argument;
    for (int k = 0; k < killer->rounds; k++) {
        long pause_ms = 50 + rand_r(&killer->seed) % 750;
        struct timespec pause = {.tv_sec = pause_ms / 1000, .tv_nsec = (pause_ms % 1000) * 1000000};
        nanosleep(&pause, NULL);  /* the kill moments are the test's own timing */
        int status = kill_and_restart(killer->signal_number);
        if (killer->signal_number == SIGTERM && status != 0) {
            killer->unclean_exits++;
        }
        killer->kills++;
    }
    return NULL;
}

/*
 * Publishes VERSIONS versions of CALLS records with notifications while the
 * daemon is stopped `rounds` times with signal_number, then checks that every
 * call's newest version reached the sink exactly as keyed.
 */
static void run_loop(int signal_number, int rounds)
{
    setup();
    char *fixture = crd_test_fixture_path("callrecord-p2p-v1.json");
    json_t *template = json_load_file(fixture, 0, NULL);
    ck_assert_ptr_nonnull(template);
    free(fixture);

    char (*ids)[CRD_GUID_LEN + 1] = calloc(CALLS, sizeof(*ids));
    unsigned seed = (unsigned)time(NULL);
    fprintf(stderr, "kill loop seed %u\n", seed);
    srand(seed);
    for (int i = 0; i < CALLS; i++) {
        snprintf(ids[i], sizeof(ids[i]), "%08x-%04x-4%03x-8%03x-%012x", (unsigned)rand(),
                 (unsigned)i, (unsigned)rand() % 0x1000, (unsigned)rand() % 0x1000,
                 (unsigned)rand());
    }

    struct killer killer = {.seed = seed, .signal_number = signal_number, .rounds = rounds};
    ck_assert_int_eq(pthread_create(&killer.thread, NULL, killer_main, &killer), 0);

    int sent = 0;
    unsigned retries = 0;
    for (int version = 1; version <= VERSIONS; version++) {
        for (int i = 0; i < CALLS; i++) {
            publish(template, ids[i], version);
            for (int n = 0; n < NOTIFICATIONS_PER_VERSION; n++) {
                retries += notify_until_acknowledged(ids[i]) - 1;
                sent++;
            }
        }
    }
    pthread_join(killer.thread, NULL);
    fprintf(stderr, "kill loop: %d notifications acknowledged, %u retried, %d kills\n", sent,
            retries, killer.kills);
    ck_assert_int_eq(killer.kills, rounds);
    ck_assert_msg(killer.unclean_exits == 0, "%d SIGTERM stops did not exit with status 0",
                  killer.unclean_exits);

    /* Every call's newest version arrives, however often the daemon died. */
    for (int i = 0; i < CALLS; i++) {
        char needle[128];
        snprintf(needle, sizeof(needle), "\"idempotencyKey\":\"%s/%s/%d\"", TENANT_ID, ids[i],
                 VERSIONS);
        ck_assert_msg(crd_test_wait_for_text(sink_path, needle, 60000),
                      "call %s version %d never reached the sink", ids[i], VERSIONS);
    }

    /* Every line is whole, and its key names exactly its own call and version. */
    char *text = crd_test_read_file(sink_path, NULL);
    size_t lines = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        json_t *envelope = json_loads(line, 0, NULL);
        ck_assert_msg(envelope != NULL, "line %zu of the sink is not JSON", lines + 1);
        char expected[128];
        snprintf(expected, sizeof(expected), "%s/%s/%lld", TENANT_ID,
                 json_string_value(json_object_get(envelope, "callId")),
                 (long long)json_integer_value(json_object_get(envelope, "version")));
        ck_assert_str_eq(json_string_value(json_object_get(envelope, "idempotencyKey")), expected);
        json_decref(envelope);
        lines++;
    }
    fprintf(stderr, "kill loop: %zu lines in the sink for %d calls\n", lines, CALLS);
    free(text);

    ck_assert_int_eq(crd_test_env_stop(&env), 0);
    crd_test_graph_stop(&graph);
    free(ids);
    json_decref(template);
    crd_test_env_destroy(&env);
    if (getenv("CRD_KEEP_TEST_DIRS") == NULL) {
        char *sink_dir = strdup(sink_path);
        *strrchr(sink_dir, '/') = '\0';
        crd_test_remove_tree(sink_dir);
        free(sink_dir);
    }
    free(sink_path);
}

START_TEST(kill_loop_loses_nothing)
{
    run_loop(SIGKILL, KILLS);
}
END_TEST

START_TEST(sigterm_under_load_loses_nothing)
{
    run_loop(SIGTERM, 4);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("crash");
    TCase *tcase = tcase_create("kill -9 loop");
    tcase_set_timeout(tcase, 600);
    tcase_add_test(tcase, kill_loop_loses_nothing);
    tcase_add_test(tcase, sigterm_under_load_loses_nothing);
    suite_add_tcase(suite, tcase);

    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
