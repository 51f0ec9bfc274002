/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the Check test programs: temporary directories, files,
 * fixture paths, and running the real daemon and tools as child processes.
 * Paths come from $CRD_SRCDIR and $CRD_BUILDDIR, which `make check` sets.
 * Both fall back to ".", so a test binary can also run from the top of a
 * build tree.
 */
#ifndef CRD_TEST_HARNESS_H
#define CRD_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

const char *crd_test_srcdir(void);
const char *crd_test_builddir(void);

/* Path of tests/fixtures/NAME in the source tree; the caller frees it. */
char *crd_test_fixture_path(const char *name);

/* Creates a fresh directory under $TMPDIR (or /tmp); the caller frees the path. */
char *crd_test_make_tmpdir(const char *prefix);

/* Removes a directory tree made by crd_test_make_tmpdir(). */
void crd_test_remove_tree(const char *path);

/* Writes content to DIR/NAME with the given mode; returns the malloc'ed path. */
char *crd_test_write_file(const char *dir, const char *name, const char *content, mode_t mode);

/* Reads a whole file; returns a malloc'ed NUL-terminated buffer or NULL. */
char *crd_test_read_file(const char *path, size_t *ret_len);

/* A free TCP port on 127.0.0.1 (bound then released, so a race is possible but unlikely). */
uint16_t crd_test_free_port(void);



/* ---- child processes ---------------------------------------------------- */

/*
 * Runs argv[0] with argv, waits for it, and returns its exit status (or 128 +
 * signal). When ret_output is not NULL, stdout is captured into a malloc'ed
 * string; stderr goes to the test's stderr. Fails the test run (abort) only
 * when the program cannot be started at all.
 */
int crd_test_run(char *const argv[], char **ret_output);

/* Like crd_test_run(), capturing stderr together with stdout. */
int crd_test_run_with_stderr(char *const argv[], char **ret_output);

/* A callrecd process started by the tests. */
struct crd_test_daemon {
    pid_t pid;
    char *log_path;       /* its stderr */
    char *notify_path;    /* the NOTIFY_SOCKET it reports READY=1 to */
    int notify_fd;
};

/*
 * Starts the real daemon (daemon/callrecd in the build tree) with -c config,
 * stderr to log_path, and waits up to timeout_ms for its READY=1. Returns 0,
 * or -ETIMEDOUT / -ECHILD (it exited, and its log shows why).
 */
int crd_test_daemon_start(const char *config_path, const char *log_path, int timeout_ms,
                          struct crd_test_daemon *ret_daemon);

/*
 * Sends SIGTERM and waits up to timeout_ms; returns the exit status, or
 * -ETIMEDOUT after SIGKILL. Frees what crd_test_daemon_start() allocated.
 */
int crd_test_daemon_stop(struct crd_test_daemon *daemon, int timeout_ms);

/* Prints the daemon's log to stderr, for a failing test's output. */
void crd_test_daemon_dump_log(const struct crd_test_daemon *daemon);

/* Path of a program in the build tree, e.g. "tests/fakegraph"; malloc'ed. */
char *crd_test_build_path(const char *relative);

/* ---- HTTP ------------------------------------------------------------------ */

struct crd_test_response {
    long status;          /* 0 when the request failed */
    char *body;           /* malloc'ed, NUL-terminated */
    size_t body_len;
    char content_type[128];
    char nosniff[32];     /* value of X-Content-Type-Options */
};

/*
 * Sends one request with libcurl, verifying TLS with ca_file when not NULL.
 * body may be NULL (no body). Returns 0 or the CURLcode as a positive value.
 */
int crd_test_http(const char *method, const char *url, const char *content_type, const char *body,
                  size_t body_len, const char *ca_file, struct crd_test_response *ret_response);

/* Like crd_test_http(), with one more request header such as "Transfer-Encoding: chunked". */
int crd_test_http_with_header(const char *method, const char *url, const char *content_type,
                              const char *extra_header, const char *body, size_t body_len,
                              const char *ca_file, struct crd_test_response *ret_response);

void crd_test_response_clear(struct crd_test_response *response);

/* Process CPU time (user + system) of pid in milliseconds, from /proc/PID/stat; -1 on error. */
long crd_test_process_cpu_ms(pid_t pid);
/*
 * Waits until the file at path contains needle, re-reading it whenever it
 * changes (inotify) and at the latest every 200 ms, for at most timeout_ms.
 * Returns true when found.
 */
bool crd_test_wait_for_text(const char *path, const char *needle, int timeout_ms);

/* Counts the lines of the file at path that contain every one of the needles (NULL-terminated). */
size_t crd_test_count_lines(const char *path, const char *const *needles);

#endif
