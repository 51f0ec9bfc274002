/* SPDX-License-Identifier: MIT */
/*
 * Dead letters end to end: a record whose fetch fails every time ends in the
 * dead letters after [fetch] max_attempts, callrecctl shows it there and in
 * its status, and after Graph recovers `callrecctl retry` makes it deliver.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph_env.h"

#define CALL_ID "b2000000-0000-4000-8000-000000000001"

static struct crd_test_world world;

static void start_all(void)
{
    crd_test_world_start(&world, NULL,
                         "[fetch]\nworkers = 2\nretry_base = 50ms\nretry_max = 300ms\n"
                         "max_attempts = 3\n");
}

static void stop_all(void)
{
    crd_test_world_stop(&world);
}

static void publish(void)
{
    char *fixture = crd_test_fixture_path("callrecord-pstn.json");
    json_t *record = json_load_file(fixture, 0, NULL);
    ck_assert_ptr_nonnull(record);
    crd_test_world_publish(&world, record, CALL_ID,
                           json_integer_value(json_object_get(record, "version")));
    json_decref(record);
    free(fixture);
}

/* Runs callrecctl with the daemon's configuration; returns its exit status and output. */
static int callrecctl(const char *command, const char *option, char **ret_output)
{
    char *program = crd_test_build_path("tools/callrecctl");
    char *argv[] = {program, "-c", world.env.config_path, (char *)command, (char *)option, NULL};
    int status = crd_test_run_with_stderr(argv, ret_output);
    free(program);
    return status;
}

START_TEST(exhausted_job_dead_lettered_then_retried)
{
    publish();
    json_t *fault = json_pack("{s:s, s:i, s:i}", "match",
                              "/v1.0/communications/callRecords/" CALL_ID, "status", 500,
                              "count", 1000);
    long queued = crd_test_graph_control(&world.graph, "faults", fault, NULL);
    ck_assert_msg(queued >= 200 && queued < 300, "queueing the fault answered %ld", queued);
    json_decref(fault);

    ck_assert_int_eq(crd_test_world_notify(&world, CALL_ID), 202);

    /* After three attempts the job moves to the dead letters, with a log line. */
    ck_assert_msg(crd_test_wait_for_text(world.env.log_path, "moved to the dead letters", 30000),
                  "the job never reached the dead letters");

    char *output = NULL;
    ck_assert_int_eq(callrecctl("dead-letters", NULL, &output), 0);
    ck_assert_msg(strstr(output, CALL_ID) != NULL, "dead-letters does not list the call: %s",
                  output);
    ck_assert_ptr_nonnull(strstr(output, "HTTP 500"));
    free(output);
    ck_assert_int_eq(callrecctl("status", NULL, &output), 0);
    ck_assert_msg(strstr(output, "job dead letters: 1") != NULL, "status: %s", output);
    free(output);

    /* Graph recovers: the faults are gone, the record is there again. */
    json_t *empty = json_object();
    long status = crd_test_graph_control(&world.graph, "reset", empty, NULL);
    ck_assert_msg(status >= 200 && status < 300, "reset answered %ld", status);
    json_decref(empty);
    publish();

    ck_assert_int_eq(callrecctl("retry", "--all", &output), 0);
    ck_assert_msg(strstr(output, "re-armed 1 jobs") != NULL, "retry: %s", output);
    free(output);

    ck_assert_msg(crd_test_world_wait_delivered(&world, CALL_ID, 2, 30000),
                  "the retried job was not delivered");
    ck_assert_int_eq(callrecctl("status", NULL, &output), 0);
    ck_assert_msg(strstr(output, "job dead letters: 0") != NULL, "status after retry: %s",
                  output);
    free(output);
}
END_TEST

START_TEST(unknown_command_is_usage_error)
{
    char *output = NULL;
    ck_assert_int_eq(callrecctl("frobnicate", NULL, &output), 2);
    ck_assert_ptr_nonnull(strstr(output, "unknown command 'frobnicate'"));
    free(output);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("callrecctl");
    TCase *tcase = tcase_create("dead letters");
    tcase_add_unchecked_fixture(tcase, start_all, stop_all);
    tcase_set_timeout(tcase, 90);
    tcase_add_test(tcase, exhausted_job_dead_lettered_then_retried);
    tcase_add_test(tcase, unknown_command_is_usage_error);
    suite_add_tcase(suite, tcase);

    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
