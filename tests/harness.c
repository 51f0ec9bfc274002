/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <curl/curl.h>
#include <poll.h>
#include <signal.h>
#include <strings.h>
#include <sys/inotify.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"

const char *crd_test_srcdir(void)
{
    const char *dir = getenv("CRD_SRCDIR");
    return dir != NULL ? dir : ".";
}

const char *crd_test_builddir(void)
{
    const char *dir = getenv("CRD_BUILDDIR");
    return dir != NULL ? dir : ".";
}

char *crd_test_fixture_path(const char *name)
{
    char *path = NULL;
    if (asprintf(&path, "%s/tests/fixtures/%s", crd_test_srcdir(), name) < 0) {
        abort();
    }
    return path;
}

char *crd_test_make_tmpdir(const char *prefix)
{
    const char *base = getenv("TMPDIR");
    char *path = NULL;
    if (asprintf(&path, "%s/%s.XXXXXX", base != NULL ? base : "/tmp", prefix) < 0) {
        abort();
    }
    if (mkdtemp(path) == NULL) {
        perror("mkdtemp");
        abort();
    }
    return path;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) < 0 ? -1 : 0;
}

void crd_test_remove_tree(const char *path)
{
    if (path != NULL) {
        (void)nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
}

char *crd_test_write_file(const char *dir, const char *name, const char *content, mode_t mode)
{
    char *path = NULL;
    if (asprintf(&path, "%s/%s", dir, name) < 0) {
        abort();
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        perror(path);
        abort();
    }
    size_t len = strlen(content);
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, content + done, len - done);
        if (n < 0) {
            perror(path);
            abort();
        }
        done += (size_t)n;
    }
    (void)fchmod(fd, mode);
    close(fd);
    return path;
}

char *crd_test_read_file(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    size_t cap = 4096;
    size_t len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 >= cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        if (n == 0) {
            break;
        }
        len += n;
    }
    fclose(f);
    buf[len] = '\0';
    if (ret_len != NULL) {
        *ret_len = len;
    }
    return buf;
}

uint16_t crd_test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t addr_len = sizeof(addr);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &addr_len) < 0) {
        perror("free port");
        abort();
    }
    close(fd);
    return ntohs(addr.sin_port);
}

/* ---- child processes ---------------------------------------------------- */

static int exit_status_of(int wait_status)
{
    if (WIFEXITED(wait_status)) {
        return WEXITSTATUS(wait_status);
    }
    if (WIFSIGNALED(wait_status)) {
        return 128 + WTERMSIG(wait_status);
    }
    return -1;
}

static long long monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int run_program(char *const argv[], bool with_stderr, char **ret_output);

char *crd_test_build_path(const char *relative)
{
    char *path = NULL;
    if (asprintf(&path, "%s/%s", crd_test_builddir(), relative) < 0) {
        abort();
    }
    return path;
}

int crd_test_run(char *const argv[], char **ret_output)
{
    return run_program(argv, false, ret_output);
}

int crd_test_run_with_stderr(char *const argv[], char **ret_output)
{
    return run_program(argv, true, ret_output);
}

static int run_program(char *const argv[], bool with_stderr, char **ret_output)
{
    int pipe_fds[2] = {-1, -1};
    if (ret_output != NULL && pipe2(pipe_fds, O_CLOEXEC) < 0) {
        abort();
    }

    pid_t pid = fork();
    if (pid < 0) {
        abort();
    }
    if (pid == 0) {
        if (ret_output != NULL) {
            dup2(pipe_fds[1], STDOUT_FILENO);
            if (with_stderr) {
                dup2(pipe_fds[1], STDERR_FILENO);
            }
        }
        execv(argv[0], argv);
        fprintf(stderr, "cannot run '%s': %s\n", argv[0], strerror(errno));
        _exit(127);
    }

    if (ret_output != NULL) {
        close(pipe_fds[1]);
        size_t cap = 4096;
        size_t len = 0;
        char *out = malloc(cap);
        for (;;) {
            if (len + 1 >= cap) {
                cap *= 2;
                out = realloc(out, cap);
            }
            ssize_t n = read(pipe_fds[0], out + len, cap - len - 1);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                break;
            }
            len += (size_t)n;
        }
        out[len] = '\0';
        close(pipe_fds[0]);
        *ret_output = out;
    }

    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return exit_status_of(status);
}

static int open_notify_socket(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        perror("notify socket");
        abort();
    }
    return fd;
}

int crd_test_daemon_start(const char *config_path, const char *log_path, int timeout_ms,
                          struct crd_test_daemon *ret_daemon)
{
    struct crd_test_daemon daemon = {.pid = -1, .notify_fd = -1};
    char *dir = crd_test_make_tmpdir("crd-notify");
    if (asprintf(&daemon.notify_path, "%s/notify.sock", dir) < 0) {
        abort();
    }
    free(dir);
    daemon.notify_fd = open_notify_socket(daemon.notify_path);
    daemon.log_path = strdup(log_path);

    char *program = crd_test_build_path("daemon/callrecd");
    daemon.pid = fork();
    if (daemon.pid < 0) {
        abort();
    }
    if (daemon.pid == 0) {
        int log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (log_fd >= 0) {
            dup2(log_fd, STDERR_FILENO);
        }
        setenv("NOTIFY_SOCKET", daemon.notify_path, 1);
        unsetenv("JOURNAL_STREAM");
        execl(program, program, "-c", config_path, (char *)NULL);
        fprintf(stderr, "cannot run '%s': %s\n", program, strerror(errno));
        _exit(127);
    }
    free(program);

    long long deadline = monotonic_ms() + timeout_ms;
    int r = -ETIMEDOUT;
    while (monotonic_ms() < deadline) {
        struct pollfd pfd = {.fd = daemon.notify_fd, .events = POLLIN};
        /* Short poll slices so that an early exit of the daemon is noticed. */
        int n = poll(&pfd, 1, 100);
        if (n > 0) {
            char message[1024];
            ssize_t len = recv(daemon.notify_fd, message, sizeof(message) - 1, 0);
            if (len > 0) {
                message[len] = '\0';
                if (strstr(message, "READY=1") != NULL) {
                    r = 0;
                    break;
                }
            }
        }
        int status;
        if (waitpid(daemon.pid, &status, WNOHANG) == daemon.pid) {
            daemon.pid = -1;
            r = -ECHILD;
            break;
        }
    }
    *ret_daemon = daemon;
    return r;
}

int crd_test_daemon_stop(struct crd_test_daemon *daemon, int timeout_ms)
{
    int result = -ECHILD;
    if (daemon->pid > 0) {
        kill(daemon->pid, SIGTERM);
        long long deadline = monotonic_ms() + timeout_ms;
        result = -ETIMEDOUT;
        while (monotonic_ms() < deadline) {
            int status;
            pid_t done = waitpid(daemon->pid, &status, WNOHANG);
            if (done == daemon->pid) {
                result = exit_status_of(status);
                break;
            }
            struct pollfd none = {.fd = -1};
            (void)poll(&none, 0, 20);
        }
        if (result == -ETIMEDOUT) {
            kill(daemon->pid, SIGKILL);
            waitpid(daemon->pid, NULL, 0);
        }
        daemon->pid = -1;
    }
    if (daemon->notify_fd >= 0) {
        close(daemon->notify_fd);
        daemon->notify_fd = -1;
    }
    if (daemon->notify_path != NULL) {
        unlink(daemon->notify_path);
        char *slash = strrchr(daemon->notify_path, '/');
        if (slash != NULL) {
            *slash = '\0';
            rmdir(daemon->notify_path);
        }
    }
    free(daemon->notify_path);
    daemon->notify_path = NULL;
    free(daemon->log_path);
    daemon->log_path = NULL;
    return result;
}

void crd_test_daemon_dump_log(const struct crd_test_daemon *daemon)
{
    char *log = crd_test_read_file(daemon->log_path, NULL);
    fprintf(stderr, "---- callrecd log %s ----\n%s---- end of log ----\n", daemon->log_path,
            log != NULL ? log : "(missing)\n");
    free(log);
}

/* ---- HTTP ------------------------------------------------------------------ */

static size_t on_body(char *data, size_t size, size_t count, void *user)
{
    struct crd_test_response *response = user;
    size_t n = size * count;
    response->body = realloc(response->body, response->body_len + n + 1);
    memcpy(response->body + response->body_len, data, n);
    response->body_len += n;
    response->body[response->body_len] = '\0';
    return n;
}

static size_t on_header(char *data, size_t size, size_t count, void *user)
{
    struct crd_test_response *response = user;
    size_t n = size * count;
    char line[256];
    size_t len = n < sizeof(line) - 1 ? n : sizeof(line) - 1;
    memcpy(line, data, len);
    line[len] = '\0';
    line[strcspn(line, "\r\n")] = '\0';
    if (strncasecmp(line, "Content-Type: ", 14) == 0) {
        snprintf(response->content_type, sizeof(response->content_type), "%.*s",
                 (int)sizeof(response->content_type) - 1, line + 14);
    } else if (strncasecmp(line, "X-Content-Type-Options: ", 24) == 0) {
        snprintf(response->nosniff, sizeof(response->nosniff), "%.*s",
                 (int)sizeof(response->nosniff) - 1, line + 24);
    }
    return n;
}

int crd_test_http(const char *method, const char *url, const char *content_type, const char *body,
                  size_t body_len, const char *ca_file, struct crd_test_response *ret_response)
{
    return crd_test_http_with_header(method, url, content_type, NULL, body, body_len, ca_file,
                                     ret_response);
}

int crd_test_http_with_header(const char *method, const char *url, const char *content_type,
                              const char *extra_header, const char *body, size_t body_len,
                              const char *ca_file, struct crd_test_response *ret_response)
{
    struct crd_test_response response = {0};
    response.body = calloc(1, 1);
    CURL *curl = curl_easy_init();
    struct curl_slist *headers = NULL;
    if (content_type != NULL) {
        char header[256];
        snprintf(header, sizeof(header), "Content-Type: %s", content_type);
        headers = curl_slist_append(headers, header);
    }
    /*
     * Large bodies go with "Expect: 100-continue", so a server that rejects the
     * request on its headers responds before the body is sent. Without it, the
     * server may close the connection while curl is still sending.
     */
    if (body_len <= 1024 * 1024) {
        headers = curl_slist_append(headers, "Expect:");
    }
    if (extra_header != NULL) {
        headers = curl_slist_append(headers, extra_header);
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    if (body != NULL) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
    }
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    }
    if (ca_file != NULL) {
        curl_easy_setopt(curl, CURLOPT_CAINFO, ca_file);
    }
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &response);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 20L);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");

    CURLcode code = curl_easy_perform(curl);
    if (code == CURLE_OK) {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
    }
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    *ret_response = response;
    return (int)code;
}

void crd_test_response_clear(struct crd_test_response *response)
{
    free(response->body);
    memset(response, 0, sizeof(*response));
}

long crd_test_process_cpu_ms(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    char *stat = crd_test_read_file(path, NULL);
    if (stat == NULL) {
        return -1;
    }
    /* The command name may hold spaces, so count fields after its closing parenthesis. */
    char *p = strrchr(stat, ')');
    unsigned long utime = 0;
    unsigned long stime = 0;
    int matched = p != NULL ? sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                                     &utime, &stime)
                            : 0;
    free(stat);
    if (matched != 2) {
        return -1;
    }
    long ticks = sysconf(_SC_CLK_TCK);
    return (long)((utime + stime) * 1000 / (unsigned long)ticks);
}

bool crd_test_wait_for_text(const char *path, const char *needle, int timeout_ms)
{
    long long deadline = monotonic_ms() + timeout_ms;
    int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    char *dir = strdup(path);
    char *slash = strrchr(dir, '/');
    if (slash != NULL) {
        *slash = '\0';
    }
    /* Watch the directory: the file may not exist yet. */
    if (fd >= 0) {
        (void)inotify_add_watch(fd, slash != NULL ? dir : ".", IN_MODIFY | IN_CREATE | IN_MOVED_TO);
    }
    free(dir);

    bool found = false;
    for (;;) {
        char *text = crd_test_read_file(path, NULL);
        found = text != NULL && strstr(text, needle) != NULL;
        free(text);
        long long left = deadline - monotonic_ms();
        if (found || left <= 0) {
            break;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        (void)poll(&pfd, fd >= 0 ? 1 : 0, left < 200 ? (int)left : 200);
        char events[4096];
        while (fd >= 0 && read(fd, events, sizeof(events)) > 0) {
        }
    }
    if (fd >= 0) {
        close(fd);
    }
    return found;
}

size_t crd_test_count_lines(const char *path, const char *const *needles)
{
    char *text = crd_test_read_file(path, NULL);
    if (text == NULL) {
        return 0;
    }
    size_t count = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        bool all = true;
        for (size_t i = 0; needles[i] != NULL && all; i++) {
            all = strstr(line, needles[i]) != NULL;
        }
        if (all) {
            count++;
        }
    }
    free(text);
    return count;
}
