/* SPDX-License-Identifier: MIT */
/*
 * A full disk under the state directory: callrecd must respond 503, so that
 * Graph retries, and log a clear error. It stores nothing half, and it
 * accepts notifications again once space returns. The state directory lives on a
 * small tmpfs mounted by the test, so the test needs root with
 * CAP_SYS_ADMIN; elsewhere it is skipped (exit 77).
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon_env.h"

static char *mount_dir;

/* Fills the filesystem at dir with one file until writes fail with ENOSPC. */
static char *fill_disk(const char *dir)
{
    char *path = NULL;
    ck_assert_int_ge(asprintf(&path, "%s/filler", dir), 0);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    char block[4096];
    memset(block, 'x', sizeof(block));
    for (;;) {
        ssize_t n = write(fd, block, sizeof(block));
        if (n < 0) {
            ck_assert_int_eq(errno, ENOSPC);
            break;
        }
    }
    close(fd);
    return path;
}

static long post_generated(const struct crd_test_env *env, int count)
{
    char *program = crd_test_build_path("tests/fakegraph");
    char *url = NULL;
    char count_text[16];
    snprintf(count_text, sizeof(count_text), "%d", count);
    ck_assert_int_ge(asprintf(&url, "%s/notify", env->base_url), 0);
    char *argv[] = {program, "notify", "--url", url, "--cafile", env->ca_file, "--generate",
                    count_text, "--client-state", CRD_TEST_CLIENT_STATE, "--expect", "202", NULL};
    char *output = NULL;
    (void)crd_test_run(argv, &output);
    long status = 0;
    const char *at = strstr(output, "HTTP ");
    if (at != NULL) {
        status = strtol(at + 5, NULL, 10);
    }
    free(output);
    free(url);
    free(program);
    return status;
}

START_TEST(full_disk_answers_503_then_recovers)
{
    struct crd_test_env env;
    crd_test_env_create(&env, NULL);

    /* Put the state directory on the small filesystem. */
    char *config = crd_test_read_file(env.config_path, NULL);
    char *line = strstr(config, "state_directory = ");
    ck_assert_ptr_nonnull(line);
    char *end = strchr(line, '\n');
    char *patched = NULL;
    ck_assert_int_ge(asprintf(&patched, "%.*sstate_directory = %s/state%s", (int)(line - config),
                              config, mount_dir, end),
                     0);
    free(crd_test_write_file(env.dir, "callrecd.conf", patched, 0600));
    free(patched);
    free(config);

    ck_assert_int_eq(crd_test_env_start(&env), 0);
    ck_assert_int_eq(post_generated(&env, 5), 202);

    char *filler = fill_disk(mount_dir);
    long status = post_generated(&env, 200);
    ck_assert_msg(status == 503, "a full disk answered HTTP %ld, not 503", status);
    ck_assert(crd_test_wait_for_text(env.log_path, "responding 503 so that Graph retries", 5000));
    ck_assert(crd_test_wait_for_text(env.log_path, "disk is full", 1000));

    /* Space returns: the next delivery of the same kind is stored. */
    ck_assert_int_eq(unlink(filler), 0);
    free(filler);
    ck_assert_int_eq(post_generated(&env, 200), 202);

    ck_assert_int_eq(crd_test_env_stop(&env), 0);
    crd_test_env_destroy(&env);
}
END_TEST

int main(void)
{
    mount_dir = crd_test_make_tmpdir("crd-small-fs");
    if (geteuid() != 0 || mount("tmpfs", mount_dir, "tmpfs", 0, "size=1m,mode=0700") < 0) {
        fprintf(stderr, "skipping: cannot mount a small tmpfs at %s (%s); this test needs root "
                "with CAP_SYS_ADMIN\n", mount_dir, strerror(errno));
        rmdir(mount_dir);
        free(mount_dir);
        return 77;
    }

    Suite *suite = suite_create("diskfull");
    TCase *tcase = tcase_create("full state directory");
    tcase_set_timeout(tcase, 60);
    tcase_add_test(tcase, full_disk_answers_503_then_recovers);
    suite_add_tcase(suite, tcase);

    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);

    (void)umount2(mount_dir, MNT_DETACH);
    rmdir(mount_dir);
    free(mount_dir);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
