/* SPDX-License-Identifier: MIT */
/*
 * Tests of the sinks and the dispatcher: the JSON Lines envelope, and the
 * file and stdout sinks on real files and pipes. Dispatchers move rows from a
 * real store into a file sink and into a test sink that fails on purpose.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "dispatcher.h"
#include "harness.h"
#include "sink.h"
#include "store.h"
#include "util.h"

#define TENANT_ID "72f988bf-86f1-41af-91ab-2d7cd011db47"
#define CALL_A "2f1a1100-b174-40a0-aba7-0b405e01ed92"
#define CALL_B "b5d5a3d1-6c28-4a4b-9a8e-1f0c2f9e7d33"

#define NOTIFIED_AT 1700000000123LL            /* 2023-11-14T22:13:20.123Z */
#define FETCHED_AT 1700000065432LL             /* 2023-11-14T22:14:25.432Z */
#define WAIT_TIMEOUT_MS 10000
#define STOP_DEADLINE_MS 1000

/* --- helpers ------------------------------------------------------------------------------- */

static struct crd_config_sink make_config(const char *name, char *path, enum crd_fsync_policy fsync)
{
    struct crd_config_sink config = {
        .name = (char *)name,
        .type = CRD_SINK_FILE,
        .path = path,
        .fsync = fsync,
        .line = 1,
    };
    return config;
}

static struct crd_sink_delivery make_delivery(const char *line)
{
    struct crd_sink_delivery delivery = {
        .tenant_id = TENANT_ID,
        .call_id = CALL_A,
        .version = 1,
        .idempotency_key = TENANT_ID "/" CALL_A "/1",
        .line = line,
        .line_len = strlen(line),
        .attempt = 1,
    };
    return delivery;
}

static void *create_ok(const struct crd_sink_descriptor *descriptor,
                       const struct crd_config_sink *config)
{
    void *context = NULL;
    struct crd_error err = {0};
    int r = descriptor->create(config, &context, &err);
    ck_assert_msg(r == 0, "create failed (%d): %s", r, err.message);
    return context;
}

static void deliver_ok(const struct crd_sink_descriptor *descriptor, void *context,
                       const char *line)
{
    struct crd_sink_delivery delivery = make_delivery(line);
    struct crd_error err = {0};
    enum crd_sink_result result = descriptor->deliver(context, &delivery, &err);
    ck_assert_msg(result == CRD_SINK_OK, "deliver returned %d: %s", (int)result, err.message);
}

static void assert_file_content(const char *path, const char *expected)
{
    size_t len = 0;
    char *content = crd_test_read_file(path, &len);
    ck_assert_ptr_nonnull(content);
    ck_assert_str_eq(content, expected);
    ck_assert_uint_eq(len, strlen(expected));
    free(content);
}

/* A store in a temporary directory, with the path of a JSON Lines file beside it. */
struct test_env {
    char *tmpdir;
    char *db_path;
    char *out_path;
    struct crd_store *store;
};

static void env_init(struct test_env *env)
{
    env->tmpdir = crd_test_make_tmpdir("test_sink");
    ck_assert_int_ge(asprintf(&env->db_path, "%s/%s", env->tmpdir, CRD_STORE_FILE_NAME), 0);
    ck_assert_int_ge(asprintf(&env->out_path, "%s/records.jsonl", env->tmpdir), 0);
    struct crd_store_options options = {
        .state_directory = env->tmpdir,
        .durability = CRD_DURABILITY_PROCESS,
    };
    struct crd_error err = {0};
    env->store = NULL;
    int r = crd_store_open(&options, &env->store, NULL, &err);
    ck_assert_msg(r == 0, "crd_store_open failed (%d): %s", r, err.message);
}

static void env_cleanup(struct test_env *env)
{
    crd_store_close(env->store);
    crd_test_remove_tree(env->tmpdir);
    free(env->tmpdir);
    free(env->db_path);
    free(env->out_path);
}

static void make_record(char *buf, size_t size, const char *call_id, int64_t version)
{
    snprintf(buf, size, "{\"id\":\"%s\",\"version\":%lld,\"modalities\":[\"audio\"]}", call_id,
             (long long)version);
}

/* Stores one version of a call with outbox rows for the given sinks, as the fetcher does. */
static void store_version(struct test_env *env, const char *call_id, int64_t version,
                          const char *const *sinks, size_t n_sinks)
{
    struct crd_job_notice notice = {
        .tenant_id = TENANT_ID,
        .call_id = call_id,
        .notified_at_ms = NOTIFIED_AT,
    };
    struct crd_error err = {0};
    int r = crd_store_enqueue_jobs(env->store, &notice, 1, &err);
    ck_assert_msg(r == 0, "crd_store_enqueue_jobs failed (%d): %s", r, err.message);
    struct crd_job job;
    r = crd_store_claim_job(env->store, crd_time_now_ms(), &job, NULL, &err);
    ck_assert_msg(r == 0, "crd_store_claim_job failed (%d): %s", r, err.message);

    char text[256];
    make_record(text, sizeof(text), call_id, version);
    struct crd_record_version record = {
        .version = version,
        .record_json = text,
        .record_json_len = strlen(text),
        .fetched_at_ms = FETCHED_AT,
    };
    bool stored = false;
    r = crd_store_complete_job(env->store, &job, &record, sinks, n_sinks, &stored, &err);
    ck_assert_msg(r == 0, "crd_store_complete_job failed (%d): %s", r, err.message);
    ck_assert(stored);
}

static int64_t count_rows(struct test_env *env, const char *sink)
{
    struct crd_error err = {0};
    int64_t count = -1;
    int r = crd_store_count_deliveries(env->store, sink, &count, &err);
    ck_assert_msg(r == 0, "crd_store_count_deliveries failed (%d): %s", r, err.message);
    return count;
}

static void raw_exec(const char *db_path, const char *sql)
{
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_busy_timeout(db, 2000), SQLITE_OK);
    char *message = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &message);
    ck_assert_msg(rc == SQLITE_OK, "'%s' failed: %s", sql, message != NULL ? message : "?");
    sqlite3_close(db);
}

/* --- what a dispatcher reports through after_delivery, and waiting for it -------------------- */

struct outcomes {
    pthread_mutex_t lock;             /* protects the counts */
    pthread_cond_t changed;
    unsigned counts[3];               /* by enum crd_sink_result */
    unsigned idle;                    /* times the dispatcher started to wait */
};

static void outcomes_init(struct outcomes *outcomes)
{
    memset(outcomes, 0, sizeof(*outcomes));
    pthread_mutex_init(&outcomes->lock, NULL);
    pthread_cond_init(&outcomes->changed, NULL);
}

static void outcomes_record(void *context, enum crd_sink_result result)
{
    struct outcomes *outcomes = context;
    pthread_mutex_lock(&outcomes->lock);
    outcomes->counts[result]++;
    pthread_cond_broadcast(&outcomes->changed);
    pthread_mutex_unlock(&outcomes->lock);
}

static void outcomes_record_idle(void *context)
{
    struct outcomes *outcomes = context;
    pthread_mutex_lock(&outcomes->lock);
    outcomes->idle++;
    pthread_cond_broadcast(&outcomes->changed);
    pthread_mutex_unlock(&outcomes->lock);
}

static unsigned outcomes_get(struct outcomes *outcomes, enum crd_sink_result result)
{
    pthread_mutex_lock(&outcomes->lock);
    unsigned count = outcomes->counts[result];
    pthread_mutex_unlock(&outcomes->lock);
    return count;
}

/* Waits until *value reaches count, or fails the test after a deadline. */
static void outcomes_wait_for(struct outcomes *outcomes, const unsigned *value, unsigned count,
                              const char *what)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += WAIT_TIMEOUT_MS / 1000;

    pthread_mutex_lock(&outcomes->lock);
    int rc = 0;
    while (*value < count && rc != ETIMEDOUT) {
        rc = pthread_cond_timedwait(&outcomes->changed, &outcomes->lock, &deadline);
    }
    unsigned seen = *value;
    pthread_mutex_unlock(&outcomes->lock);
    ck_assert_msg(seen >= count, "waited %d ms for %u %s, saw %u", WAIT_TIMEOUT_MS, count, what,
                  seen);
}

static void outcomes_wait(struct outcomes *outcomes, enum crd_sink_result result, unsigned count)
{
    static const char *const names[] = {"OK results", "RETRY results", "FATAL results"};
    outcomes_wait_for(outcomes, &outcomes->counts[result], count, names[result]);
}

/* Waits until the dispatcher started to wait count times. A stop request then finds it waiting. */
static void outcomes_wait_idle(struct outcomes *outcomes, unsigned count)
{
    outcomes_wait_for(outcomes, &outcomes->idle, count, "idle waits");
}

static struct crd_dispatcher *start_ok(const struct crd_config_sink *config,
                                       const struct crd_sink_descriptor *descriptor,
                                       struct crd_store *store, struct outcomes *outcomes)
{
    struct crd_dispatcher_options options = {
        .backoff_base_ms = 1,
        .backoff_max_ms = 8,
        .after_delivery = outcomes_record,
        .after_delivery_context = outcomes,
        .on_idle = outcomes_record_idle,
        .on_idle_context = outcomes,
    };
    struct crd_dispatcher *dispatcher = NULL;
    struct crd_error err = {0};
    int r = crd_dispatcher_start(config, descriptor, store, &options, &dispatcher, &err);
    ck_assert_msg(r == 0, "crd_dispatcher_start failed (%d): %s", r, err.message);
    return dispatcher;
}

static uint64_t counter(const atomic_uint_fast64_t *value)
{
    return (uint64_t)atomic_load(value);
}

/* --- a test sink that returns RETRY, then OK or FATAL --------------------------------------- */

#define TEST_SINK_MAX_CALLS 4096

static struct {
    pthread_mutex_t lock;             /* protects every field below */
    unsigned retries;                 /* RETRY for this many first attempts */
    struct outcomes *hold_until_ok;   /* and RETRY until this reported an OK, unless NULL */
    enum crd_sink_result final;       /* then this */
    unsigned attempts[TEST_SINK_MAX_CALLS];
    size_t n_calls;
} test_sink = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void test_sink_reset(unsigned retries, struct outcomes *hold_until_ok,
                            enum crd_sink_result final)
{
    pthread_mutex_lock(&test_sink.lock);
    test_sink.retries = retries;
    test_sink.hold_until_ok = hold_until_ok;
    test_sink.final = final;
    test_sink.n_calls = 0;
    pthread_mutex_unlock(&test_sink.lock);
}

static int test_sink_create(const struct crd_config_sink *config, void **ret_context,
                            struct crd_error *err)
{
    *ret_context = NULL;
    return 0;
}

static enum crd_sink_result test_sink_deliver(void *context,
                                              const struct crd_sink_delivery *delivery,
                                              struct crd_error *err)
{
    pthread_mutex_lock(&test_sink.lock);
    if (test_sink.n_calls < TEST_SINK_MAX_CALLS) {
        test_sink.attempts[test_sink.n_calls] = delivery->attempt;
    }
    test_sink.n_calls++;
    bool waiting_for_ok = test_sink.hold_until_ok != NULL &&
                          outcomes_get(test_sink.hold_until_ok, CRD_SINK_OK) == 0;
    bool retry = delivery->attempt <= test_sink.retries || waiting_for_ok;
    enum crd_sink_result final = test_sink.final;
    pthread_mutex_unlock(&test_sink.lock);

    if (retry) {
        crd_error_set(err, -EAGAIN, "test sink: busy");
        return CRD_SINK_RETRY;
    }
    if (final == CRD_SINK_FATAL) {
        crd_error_set(err, -EBADMSG, "test sink: rejected the record");
    }
    return final;
}

static void test_sink_destroy(void *context)
{
}

static const struct crd_sink_descriptor test_sink_descriptor = {
    .abi_version = CRD_SINK_ABI_VERSION,
    .struct_size = sizeof(struct crd_sink_descriptor),
    .name = "test",
    .description = "fails on request",
    .create = test_sink_create,
    .deliver = test_sink_deliver,
    .reopen = NULL,
    .destroy = test_sink_destroy,
};

/* --- envelope ------------------------------------------------------------------------------ */

static json_t *format_and_parse(const char *record_json, char **ret_line)
{
    char *line = NULL;
    size_t len = 0;
    struct crd_error err = {0};
    int r = crd_sink_format_envelope(TENANT_ID, CALL_A, 3, NOTIFIED_AT, FETCHED_AT, record_json,
                                     strlen(record_json), &line, &len, &err);
    ck_assert_msg(r == 0, "crd_sink_format_envelope failed (%d): %s", r, err.message);
    ck_assert_uint_eq(len, strlen(line));
    ck_assert_ptr_null(memchr(line, '\n', len));
    json_error_t error;
    json_t *envelope = json_loads(line, 0, &error);
    ck_assert_msg(envelope != NULL, "envelope is not JSON: %s: %s", error.text, line);
    *ret_line = line;
    return envelope;
}

START_TEST(test_envelope_fields)
{
    static const char record_json[] =
        "{\"id\":\"" CALL_A "\",\"version\":3,\"rate\":0.1,\"note\":\"two\\nlines\"}";
    char *line = NULL;

    json_t *envelope = format_and_parse(record_json, &line);

    ck_assert_uint_eq(json_object_size(envelope), 7);
    ck_assert_str_eq(json_string_value(json_object_get(envelope, "tenantId")), TENANT_ID);
    ck_assert_str_eq(json_string_value(json_object_get(envelope, "callId")), CALL_A);
    ck_assert(json_is_integer(json_object_get(envelope, "version")));
    ck_assert_int_eq(json_integer_value(json_object_get(envelope, "version")), 3);
    ck_assert_str_eq(json_string_value(json_object_get(envelope, "idempotencyKey")),
                     TENANT_ID "/" CALL_A "/3");
    ck_assert_str_eq(json_string_value(json_object_get(envelope, "notifiedAt")),
                     "2023-11-14T22:13:20.123Z");
    ck_assert_str_eq(json_string_value(json_object_get(envelope, "fetchedAt")),
                     "2023-11-14T22:14:25.432Z");
    json_t *expected = json_loads(record_json, 0, NULL);
    ck_assert(json_equal(json_object_get(envelope, "record"), expected));
    /* Copied verbatim: the number keeps its spelling. */
    ck_assert_ptr_nonnull(strstr(line, "\"rate\":0.1,"));

    json_decref(expected);
    json_decref(envelope);
    free(line);
}
END_TEST

START_TEST(test_envelope_multiline_record_one_line)
{
    static const char record_json[] = "{\n  \"id\": \"" CALL_A "\",\r\n  \"version\": 3\n}\n";
    char *line = NULL;

    json_t *envelope = format_and_parse(record_json, &line);

    json_t *expected = json_loads(record_json, 0, NULL);
    ck_assert(json_equal(json_object_get(envelope, "record"), expected));
    ck_assert_ptr_null(strchr(line, '\r'));
    json_decref(expected);
    json_decref(envelope);
    free(line);
}
END_TEST

START_TEST(test_envelope_rejects_invalid_record)
{
    static const char *const invalid[] = {"{", "[1,2]", "\"text\"", "{} {}", ""};
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        char *line = NULL;
        size_t len = 0;
        struct crd_error err = {0};
        int r = crd_sink_format_envelope(TENANT_ID, CALL_A, 1, NOTIFIED_AT, FETCHED_AT,
                                         invalid[i], strlen(invalid[i]), &line, &len, &err);
        ck_assert_msg(r == -EINVAL, "record '%s' gave %d", invalid[i], r);
        ck_assert_ptr_null(line);
        ck_assert_ptr_nonnull(strstr(err.message, CALL_A));
    }
}
END_TEST

START_TEST(test_builtin_registry)
{
    const struct crd_sink_descriptor *file = crd_sink_builtin(CRD_SINK_FILE);
    const struct crd_sink_descriptor *out = crd_sink_builtin(CRD_SINK_STDOUT);

    ck_assert_ptr_nonnull(file);
    ck_assert_str_eq(file->name, "file");
    ck_assert_uint_eq(file->abi_version, CRD_SINK_ABI_VERSION);
    ck_assert_uint_eq(file->struct_size, sizeof(struct crd_sink_descriptor));
    ck_assert_ptr_nonnull(file->reopen);
    ck_assert_ptr_nonnull(out);
    ck_assert_str_eq(out->name, "stdout");
    ck_assert_ptr_null(crd_sink_builtin(CRD_SINK_TYPE__COUNT));
}
END_TEST

/* --- file sink ----------------------------------------------------------------------------- */

START_TEST(test_file_sink_writes_lines)
{
    char *dir = crd_test_make_tmpdir("test_sink");
    char *path = NULL;
    ck_assert_int_ge(asprintf(&path, "%s/out.jsonl", dir), 0);
    umask(022);
    struct crd_config_sink config = make_config("archive", path, CRD_FSYNC_NEVER);
    void *context = create_ok(&crd_sink_file_descriptor, &config);

    deliver_ok(&crd_sink_file_descriptor, context, "{\"a\":1}");
    deliver_ok(&crd_sink_file_descriptor, context, "{\"b\":2}");

    assert_file_content(path, "{\"a\":1}\n{\"b\":2}\n");
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0640);
    crd_sink_file_descriptor.destroy(context);
    crd_test_remove_tree(dir);
    free(path);
    free(dir);
}
END_TEST

START_TEST(test_file_sink_fsync_record)
{
    char *dir = crd_test_make_tmpdir("test_sink");
    char *path = crd_test_write_file(dir, "out.jsonl", "{\"old\":0}\n", 0640);
    struct crd_config_sink config = make_config("archive", path, CRD_FSYNC_RECORD);
    void *context = create_ok(&crd_sink_file_descriptor, &config);

    deliver_ok(&crd_sink_file_descriptor, context, "{\"a\":1}");

    assert_file_content(path, "{\"old\":0}\n{\"a\":1}\n");
    crd_sink_file_descriptor.destroy(context);
    crd_test_remove_tree(dir);
    free(path);
    free(dir);
}
END_TEST

START_TEST(test_file_sink_ends_partial_line)
{
    char *dir = crd_test_make_tmpdir("test_sink");
    char *path = crd_test_write_file(dir, "out.jsonl", "{\"a\":1}\n{\"trunc", 0640);
    struct crd_config_sink config = make_config("archive", path, CRD_FSYNC_NEVER);
    void *context = create_ok(&crd_sink_file_descriptor, &config);

    deliver_ok(&crd_sink_file_descriptor, context, "{\"b\":2}");

    assert_file_content(path, "{\"a\":1}\n{\"trunc\n{\"b\":2}\n");
    crd_sink_file_descriptor.destroy(context);
    crd_test_remove_tree(dir);
    free(path);
    free(dir);
}
END_TEST

START_TEST(test_file_sink_reopen_after_rename)
{
    char *dir = crd_test_make_tmpdir("test_sink");
    char *path = NULL;
    char *rotated = NULL;
    ck_assert_int_ge(asprintf(&path, "%s/out.jsonl", dir), 0);
    ck_assert_int_ge(asprintf(&rotated, "%s/out.jsonl.1", dir), 0);
    struct crd_config_sink config = make_config("archive", path, CRD_FSYNC_NEVER);
    void *context = create_ok(&crd_sink_file_descriptor, &config);
    deliver_ok(&crd_sink_file_descriptor, context, "{\"a\":1}");
    ck_assert_int_eq(rename(path, rotated), 0);

    struct crd_error err = {0};
    int r = crd_sink_file_descriptor.reopen(context, &err);
    deliver_ok(&crd_sink_file_descriptor, context, "{\"b\":2}");

    ck_assert_msg(r == 0, "reopen failed (%d): %s", r, err.message);
    assert_file_content(rotated, "{\"a\":1}\n");
    assert_file_content(path, "{\"b\":2}\n");
    crd_sink_file_descriptor.destroy(context);
    crd_test_remove_tree(dir);
    free(path);
    free(rotated);
    free(dir);
}
END_TEST

START_TEST(test_file_sink_create_fails_on_missing_directory)
{
    char *dir = crd_test_make_tmpdir("test_sink");
    char *path = NULL;
    ck_assert_int_ge(asprintf(&path, "%s/missing/out.jsonl", dir), 0);
    struct crd_config_sink config = make_config("archive", path, CRD_FSYNC_NEVER);
    void *context = NULL;
    struct crd_error err = {0};

    int r = crd_sink_file_descriptor.create(&config, &context, &err);

    ck_assert_int_eq(r, -ENOENT);
    ck_assert_ptr_null(context);
    ck_assert_ptr_nonnull(strstr(err.message, path));
    ck_assert_ptr_nonnull(strstr(err.message, "archive"));
    config.path = NULL;
    ck_assert_int_eq(crd_sink_file_descriptor.create(&config, &context, &err), -EINVAL);
    crd_test_remove_tree(dir);
    free(path);
    free(dir);
}
END_TEST

START_TEST(test_file_sink_full_disk_is_retry)
{
    struct crd_config_sink config = make_config("archive", "/dev/full", CRD_FSYNC_RECORD);
    void *context = create_ok(&crd_sink_file_descriptor, &config);
    struct crd_sink_delivery delivery = make_delivery("{\"a\":1}");
    struct crd_error err = {0};

    enum crd_sink_result result = crd_sink_file_descriptor.deliver(context, &delivery, &err);

    ck_assert_int_eq(result, CRD_SINK_RETRY);
    ck_assert_int_eq(err.code, -ENOSPC);
    ck_assert_ptr_nonnull(strstr(err.message, "/dev/full"));
    crd_sink_file_descriptor.destroy(context);
}
END_TEST

/* A short write then EAGAIN on a full pipe leaves a fragment that the next line ends. */
START_TEST(test_write_line_repairs_fragment)
{
    int fds[2];
    ck_assert_int_eq(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    int capacity = fcntl(fds[1], F_SETPIPE_SZ, 4096);
    ck_assert_int_gt(capacity, 0);
    size_t long_len = (size_t)capacity + 100;
    char *long_line = malloc(long_len + 1);
    memset(long_line, 'x', long_len);
    long_line[long_len] = '\0';
    bool partial = false;

    ck_assert_int_eq(crd_sink_write_line(fds[1], long_line, long_len, &partial), -EAGAIN);
    ck_assert(partial);
    char *drain = malloc((size_t)capacity);
    ck_assert_int_eq(read(fds[0], drain, (size_t)capacity), capacity);
    ck_assert_int_eq(crd_sink_write_line(fds[1], "{}", 2, &partial), 0);

    ck_assert(!partial);
    char tail[16] = {0};
    ck_assert_int_eq(read(fds[0], tail, sizeof(tail) - 1), 4);
    ck_assert_str_eq(tail, "\n{}\n");
    free(drain);
    free(long_line);
    close(fds[0]);
    close(fds[1]);
}
END_TEST

/* --- stdout sink --------------------------------------------------------------------------- */

START_TEST(test_stdout_sink_writes_lines)
{
    int fds[2];
    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
    int saved = dup(STDOUT_FILENO);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_eq(dup2(fds[1], STDOUT_FILENO), STDOUT_FILENO);
    struct crd_config_sink config = make_config("console", NULL, CRD_FSYNC_NEVER);
    config.type = CRD_SINK_STDOUT;
    void *context = create_ok(&crd_sink_stdout_descriptor, &config);

    deliver_ok(&crd_sink_stdout_descriptor, context, "{\"a\":1}");
    deliver_ok(&crd_sink_stdout_descriptor, context, "{\"b\":2}");

    ck_assert_int_eq(dup2(saved, STDOUT_FILENO), STDOUT_FILENO);
    close(fds[1]);
    char buf[64] = {0};
    ck_assert_int_eq(read(fds[0], buf, sizeof(buf) - 1), 16);
    ck_assert_str_eq(buf, "{\"a\":1}\n{\"b\":2}\n");
    crd_sink_stdout_descriptor.destroy(context);
    close(fds[0]);
    close(saved);
}
END_TEST

START_TEST(test_stdout_sink_broken_pipe_is_retry)
{
    sigset_t pipe_signal;
    sigemptyset(&pipe_signal);
    sigaddset(&pipe_signal, SIGPIPE);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &pipe_signal, NULL), 0);
    int fds[2];
    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
    int saved = dup(STDOUT_FILENO);
    ck_assert_int_eq(dup2(fds[1], STDOUT_FILENO), STDOUT_FILENO);
    close(fds[0]);
    struct crd_config_sink config = make_config("console", NULL, CRD_FSYNC_NEVER);
    void *context = create_ok(&crd_sink_stdout_descriptor, &config);
    struct crd_sink_delivery delivery = make_delivery("{\"a\":1}");
    struct crd_error err = {0};

    enum crd_sink_result result = crd_sink_stdout_descriptor.deliver(context, &delivery, &err);

    ck_assert_int_eq(dup2(saved, STDOUT_FILENO), STDOUT_FILENO);
    ck_assert_int_eq(result, CRD_SINK_RETRY);
    ck_assert_int_eq(err.code, -EPIPE);
    ck_assert_ptr_nonnull(strstr(err.message, "standard output"));
    crd_sink_stdout_descriptor.destroy(context);
    close(fds[1]);
    close(saved);
}
END_TEST

/* --- dispatcher ---------------------------------------------------------------------------- */

START_TEST(test_backoff_full_jitter)
{
    ck_assert_int_eq(crd_dispatcher_backoff_ms(1, 100, 1000, 0), 0);
    ck_assert_int_eq(crd_dispatcher_backoff_ms(1, 100, 1000, 100), 100);
    ck_assert_int_eq(crd_dispatcher_backoff_ms(1, 100, 1000, 101), 0);
    ck_assert_int_eq(crd_dispatcher_backoff_ms(2, 100, 1000, 200), 200);
    ck_assert_int_eq(crd_dispatcher_backoff_ms(4, 100, 1000, 800), 800);
    ck_assert_int_eq(crd_dispatcher_backoff_ms(5, 100, 1000, 1000), 1000);
    ck_assert_int_eq(crd_dispatcher_backoff_ms(5, 100, 1000, 1001), 0);
    ck_assert_int_eq(crd_dispatcher_backoff_ms(4000000000u, 100, 1000, 1000), 1000);
    ck_assert_int_eq(crd_dispatcher_backoff_ms(1, 0, 1000, 5), 0);
}
END_TEST

/* Reads the file sink's output as (call id, version) pairs. */
static size_t read_deliveries(const char *path, char call_ids[][CRD_GUID_LEN + 1],
                              int64_t *versions, size_t max)
{
    char *content = crd_test_read_file(path, NULL);
    ck_assert_ptr_nonnull(content);
    size_t n = 0;
    for (char *line = content; *line != '\0';) {
        char *end = strchr(line, '\n');
        ck_assert_msg(end != NULL, "the last line has no newline: %s", line);
        *end = '\0';
        ck_assert_uint_lt(n, max);
        json_t *envelope = json_loads(line, 0, NULL);
        line = end + 1;
        ck_assert_ptr_nonnull(envelope);
        snprintf(call_ids[n], CRD_GUID_LEN + 1, "%s",
                 json_string_value(json_object_get(envelope, "callId")));
        versions[n] = json_integer_value(json_object_get(envelope, "version"));
        json_decref(envelope);
        n++;
    }
    free(content);
    return n;
}

START_TEST(test_dispatcher_delivers_versions_in_order)
{
    struct test_env env;
    env_init(&env);
    static const char *const sinks[] = {"archive"};
    store_version(&env, CALL_A, 1, sinks, 1);
    store_version(&env, CALL_B, 1, sinks, 1);
    store_version(&env, CALL_A, 2, sinks, 1);
    store_version(&env, CALL_A, 3, sinks, 1);
    /* Newer versions look overdue, so only the ordering rule keeps them behind version 1. */
    raw_exec(env.db_path, "UPDATE outbox SET due_at = 0 WHERE version > 1");
    struct crd_config_sink config = make_config("archive", env.out_path, CRD_FSYNC_NEVER);
    struct outcomes outcomes;
    outcomes_init(&outcomes);

    struct crd_dispatcher *dispatcher = start_ok(&config, &crd_sink_file_descriptor, env.store,
                                                 &outcomes);
    outcomes_wait(&outcomes, CRD_SINK_OK, 4);
    crd_dispatcher_stop(dispatcher);

    char call_ids[8][CRD_GUID_LEN + 1];
    int64_t versions[8];
    size_t n = read_deliveries(env.out_path, call_ids, versions, 8);
    ck_assert_uint_eq(n, 4);
    int64_t last_a = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(call_ids[i], CALL_A) == 0) {
            ck_assert_int_eq(versions[i], last_a + 1);
            last_a = versions[i];
        }
    }
    ck_assert_int_eq(last_a, 3);
    ck_assert_int_eq(count_rows(&env, "archive"), 0);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_dispatcher_retries_then_delivers)
{
    struct test_env env;
    env_init(&env);
    static const char *const sinks[] = {"archive", "flaky"};
    store_version(&env, CALL_A, 1, sinks, 2);
    struct crd_config_sink archive_config = make_config("archive", env.out_path, CRD_FSYNC_NEVER);
    struct crd_config_sink flaky_config = make_config("flaky", NULL, CRD_FSYNC_NEVER);
    struct outcomes archive_outcomes;
    struct outcomes flaky_outcomes;
    outcomes_init(&archive_outcomes);
    outcomes_init(&flaky_outcomes);
    /* The flaky sink fails 3 times, and goes on failing until the archive has its copy. */
    test_sink_reset(3, &archive_outcomes, CRD_SINK_OK);

    struct crd_dispatcher *flaky = start_ok(&flaky_config, &test_sink_descriptor, env.store,
                                            &flaky_outcomes);
    outcomes_wait(&flaky_outcomes, CRD_SINK_RETRY, 1);
    struct crd_dispatcher *archive = start_ok(&archive_config, &crd_sink_file_descriptor,
                                              env.store, &archive_outcomes);
    outcomes_wait(&flaky_outcomes, CRD_SINK_OK, 1);
    outcomes_wait(&archive_outcomes, CRD_SINK_OK, 1);

    const struct crd_dispatcher_counters *counters = crd_dispatcher_counters(flaky);
    pthread_mutex_lock(&test_sink.lock);
    size_t n_calls = test_sink.n_calls;
    ck_assert_uint_ge(n_calls, 4);
    ck_assert_uint_le(n_calls, TEST_SINK_MAX_CALLS);
    for (size_t i = 0; i < n_calls; i++) {
        ck_assert_uint_eq(test_sink.attempts[i], i + 1);
    }
    pthread_mutex_unlock(&test_sink.lock);
    ck_assert_uint_eq(counter(&counters->retried), n_calls - 1);
    ck_assert_uint_eq(counter(&counters->delivered), 1);
    ck_assert_uint_eq(counter(&counters->failed), 0);
    crd_dispatcher_stop(flaky);
    crd_dispatcher_stop(archive);
    ck_assert_int_eq(count_rows(&env, "flaky"), 0);
    ck_assert_int_eq(count_rows(&env, "archive"), 0);
    env_cleanup(&env);
}
END_TEST

/* FATAL moves each version to the dead letters, so the newer version is tried too. */
START_TEST(test_dispatcher_dead_letters_fatal)
{
    struct test_env env;
    env_init(&env);
    static const char *const sinks[] = {"strict"};
    store_version(&env, CALL_A, 1, sinks, 1);
    store_version(&env, CALL_A, 2, sinks, 1);
    struct crd_config_sink config = make_config("strict", NULL, CRD_FSYNC_NEVER);
    struct outcomes outcomes;
    outcomes_init(&outcomes);
    test_sink_reset(0, NULL, CRD_SINK_FATAL);

    struct crd_dispatcher *dispatcher = start_ok(&config, &test_sink_descriptor, env.store,
                                                 &outcomes);
    outcomes_wait(&outcomes, CRD_SINK_FATAL, 2);
    outcomes_wait_idle(&outcomes, 1);
    int64_t started = crd_time_monotonic_ms();
    crd_dispatcher_stop(dispatcher);
    int64_t stop_ms = crd_time_monotonic_ms() - started;

    ck_assert_int_lt(stop_ms, STOP_DEADLINE_MS);
    ck_assert_int_eq(count_rows(&env, "strict"), 0);
    ck_assert_uint_eq(outcomes_get(&outcomes, CRD_SINK_FATAL), 2);
    struct crd_error err = {0};
    int64_t dead = 0;
    ck_assert_int_eq(crd_store_count_dead_letters(env.store, CRD_DEAD_LETTER_DELIVERY, "strict",
                                                  &dead, &err), 0);
    ck_assert_int_eq(dead, 2);
    env_cleanup(&env);
}
END_TEST

/* A stored record that is not a JSON object can never be delivered, so it is dead-lettered. */
START_TEST(test_dispatcher_dead_letters_invalid)
{
    struct test_env env;
    env_init(&env);
    static const char *const sinks[] = {"archive"};
    store_version(&env, CALL_A, 1, sinks, 1);
    raw_exec(env.db_path, "UPDATE records SET record = '[1, 2]'");
    struct crd_config_sink config = make_config("archive", env.out_path, CRD_FSYNC_NEVER);
    struct outcomes outcomes;
    outcomes_init(&outcomes);

    struct crd_dispatcher *dispatcher = start_ok(&config, &crd_sink_file_descriptor, env.store,
                                                 &outcomes);
    outcomes_wait(&outcomes, CRD_SINK_FATAL, 1);

    ck_assert_uint_eq(counter(&crd_dispatcher_counters(dispatcher)->failed), 1);
    crd_dispatcher_stop(dispatcher);
    ck_assert_int_eq(count_rows(&env, "archive"), 0);
    struct crd_error err = {0};
    int64_t dead = 0;
    ck_assert_int_eq(crd_store_count_dead_letters(env.store, CRD_DEAD_LETTER_DELIVERY, "archive",
                                                  &dead, &err), 0);
    ck_assert_int_eq(dead, 1);
    assert_file_content(env.out_path, "");
    env_cleanup(&env);
}
END_TEST

START_TEST(test_dispatcher_reopen_and_wake)
{
    struct test_env env;
    env_init(&env);
    static const char *const sinks[] = {"archive"};
    char *rotated = NULL;
    ck_assert_int_ge(asprintf(&rotated, "%s.1", env.out_path), 0);
    store_version(&env, CALL_A, 1, sinks, 1);
    struct crd_config_sink config = make_config("archive", env.out_path, CRD_FSYNC_RECORD);
    struct outcomes outcomes;
    outcomes_init(&outcomes);
    struct crd_dispatcher *dispatcher = start_ok(&config, &crd_sink_file_descriptor, env.store,
                                                 &outcomes);
    outcomes_wait(&outcomes, CRD_SINK_OK, 1);
    ck_assert_int_eq(rename(env.out_path, rotated), 0);

    crd_dispatcher_reopen(dispatcher);
    store_version(&env, CALL_A, 2, sinks, 1);
    crd_dispatcher_wake(dispatcher);
    outcomes_wait(&outcomes, CRD_SINK_OK, 2);
    crd_dispatcher_stop(dispatcher);

    char call_ids[4][CRD_GUID_LEN + 1];
    int64_t versions[4];
    ck_assert_uint_eq(read_deliveries(rotated, call_ids, versions, 4), 1);
    ck_assert_int_eq(versions[0], 1);
    ck_assert_uint_eq(read_deliveries(env.out_path, call_ids, versions, 4), 1);
    ck_assert_int_eq(versions[0], 2);
    free(rotated);
    env_cleanup(&env);
}
END_TEST

/* With nothing due the thread waits without a timeout, so only the stop request can end it. */
START_TEST(test_dispatcher_stop_while_idle)
{
    struct test_env env;
    env_init(&env);
    static const char *const sinks[] = {"archive"};
    store_version(&env, CALL_A, 1, sinks, 1);
    struct crd_config_sink config = make_config("archive", env.out_path, CRD_FSYNC_NEVER);
    struct outcomes outcomes;
    outcomes_init(&outcomes);
    struct crd_dispatcher *dispatcher = start_ok(&config, &crd_sink_file_descriptor, env.store,
                                                 &outcomes);
    outcomes_wait(&outcomes, CRD_SINK_OK, 1);
    outcomes_wait_idle(&outcomes, 1);

    int64_t started = crd_time_monotonic_ms();
    crd_dispatcher_stop(dispatcher);
    int64_t stop_ms = crd_time_monotonic_ms() - started;

    ck_assert_int_lt(stop_ms, STOP_DEADLINE_MS);
    env_cleanup(&env);
}
END_TEST

START_TEST(test_dispatcher_start_fails_cleanly)
{
    struct test_env env;
    env_init(&env);
    char *path = NULL;
    ck_assert_int_ge(asprintf(&path, "%s/missing/out.jsonl", env.tmpdir), 0);
    struct crd_config_sink config = make_config("archive", path, CRD_FSYNC_NEVER);
    struct crd_dispatcher *dispatcher = NULL;
    struct crd_error err = {0};
    struct crd_sink_descriptor future = test_sink_descriptor;
    future.abi_version = CRD_SINK_ABI_VERSION + 1;

    ck_assert_int_eq(crd_dispatcher_start(&config, &crd_sink_file_descriptor, env.store, NULL,
                                          &dispatcher, &err),
                     -ENOENT);
    ck_assert_ptr_nonnull(strstr(err.message, path));
    ck_assert_int_eq(crd_dispatcher_start(&config, &future, env.store, NULL, &dispatcher, &err),
                     -EINVAL);
    ck_assert_int_eq(crd_dispatcher_start(&config, &test_sink_descriptor, NULL, NULL, &dispatcher,
                                          &err),
                     -EINVAL);
    ck_assert_ptr_null(dispatcher);
    crd_dispatcher_stop(NULL);
    free(path);
    env_cleanup(&env);
}
END_TEST

static Suite *sink_suite(void)
{
    Suite *suite = suite_create("sink");

    TCase *envelope = tcase_create("envelope");
    tcase_add_test(envelope, test_envelope_fields);
    tcase_add_test(envelope, test_envelope_multiline_record_one_line);
    tcase_add_test(envelope, test_envelope_rejects_invalid_record);
    tcase_add_test(envelope, test_builtin_registry);
    suite_add_tcase(suite, envelope);

    TCase *file = tcase_create("file");
    tcase_add_test(file, test_file_sink_writes_lines);
    tcase_add_test(file, test_file_sink_fsync_record);
    tcase_add_test(file, test_file_sink_ends_partial_line);
    tcase_add_test(file, test_file_sink_reopen_after_rename);
    tcase_add_test(file, test_file_sink_create_fails_on_missing_directory);
    tcase_add_test(file, test_file_sink_full_disk_is_retry);
    tcase_add_test(file, test_write_line_repairs_fragment);
    suite_add_tcase(suite, file);

    TCase *out = tcase_create("stdout");
    tcase_add_test(out, test_stdout_sink_writes_lines);
    tcase_add_test(out, test_stdout_sink_broken_pipe_is_retry);
    suite_add_tcase(suite, out);

    TCase *dispatcher = tcase_create("dispatcher");
    tcase_add_test(dispatcher, test_backoff_full_jitter);
    tcase_add_test(dispatcher, test_dispatcher_delivers_versions_in_order);
    tcase_add_test(dispatcher, test_dispatcher_retries_then_delivers);
    tcase_add_test(dispatcher, test_dispatcher_dead_letters_fatal);
    tcase_add_test(dispatcher, test_dispatcher_dead_letters_invalid);
    tcase_add_test(dispatcher, test_dispatcher_reopen_and_wake);
    tcase_add_test(dispatcher, test_dispatcher_stop_while_idle);
    tcase_add_test(dispatcher, test_dispatcher_start_fails_cleanly);
    suite_add_tcase(suite, dispatcher);

    return suite;
}

int main(void)
{
    SRunner *runner = srunner_create(sink_suite());
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
