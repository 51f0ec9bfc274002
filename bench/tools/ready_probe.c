/* SPDX-License-Identifier: MIT */
/*
 * Measures a service's start-up as systemd measures it: the time from exec
 * to its READY=1 message on NOTIFY_SOCKET, then its resident memory after it has
 * been idle for a while. Stops the service with SIGTERM before exiting.
 *
 * Usage: ready_probe IDLE_SECONDS COMMAND [ARG...]
 * Prints one line: ready_us=N rss_kb=N hwm_kb=N
 * Exits 1 when the command exits or sends no READY=1 within 30 s.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define READY_TIMEOUT_MS 30000
#define STOP_TIMEOUT_MS 10000

static long long monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Reads a "Name:   N kB" line of /proc/PID/status; -1 when absent. */
static long status_kb(pid_t pid, const char *name)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *file = fopen(path, "re");
    if (file == NULL) {
        return -1;
    }
    char line[256];
    long value = -1;
    size_t name_len = strlen(name);
    while (fgets(line, sizeof(line), file) != NULL) {
        if (strncmp(line, name, name_len) == 0 && line[name_len] == ':') {
            value = strtol(line + name_len + 1, NULL, 10);
            break;
        }
    }
    fclose(file);
    return value;
}

static void stop_child(pid_t pid)
{
    kill(pid, SIGTERM);
    long long deadline = monotonic_us() + STOP_TIMEOUT_MS * 1000LL;
    while (monotonic_us() < deadline) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            return;
        }
        (void)poll(NULL, 0, 20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: ready_probe IDLE_SECONDS COMMAND [ARG...]\n");
        return 2;
    }
    unsigned idle_s = (unsigned)strtoul(argv[1], NULL, 10);

    char dir[] = "/tmp/ready-probe.XXXXXX";
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "ready_probe: cannot create a directory: %s\n", strerror(errno));
        return 1;
    }
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    snprintf(address.sun_path, sizeof(address.sun_path), "%s/notify", dir);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&address, sizeof(address)) < 0) {
        fprintf(stderr, "ready_probe: cannot bind '%s': %s\n", address.sun_path,
                strerror(errno));
        return 1;
    }
    setenv("NOTIFY_SOCKET", address.sun_path, 1);

    long long started_us = monotonic_us();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "ready_probe: fork failed: %s\n", strerror(errno));
        return 1;
    }
    if (pid == 0) {
        execvp(argv[2], argv + 2);
        fprintf(stderr, "ready_probe: cannot run '%s': %s\n", argv[2], strerror(errno));
        _exit(127);
    }

    long long ready_us = -1;
    while (ready_us < 0) {
        long long left_ms = READY_TIMEOUT_MS - (monotonic_us() - started_us) / 1000;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (left_ms <= 0 || poll(&pfd, 1, (int)(left_ms < 100 ? left_ms : 100)) < 0) {
            break;
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            fprintf(stderr, "ready_probe: '%s' exited before READY=1\n", argv[2]);
            pid = -1;
            break;
        }
        if ((pfd.revents & POLLIN) == 0) {
            continue;
        }
        char message[4096];
        ssize_t n = recv(fd, message, sizeof(message) - 1, 0);
        if (n > 0) {
            message[n] = '\0';
            if (strncmp(message, "READY=1", 7) == 0 || strstr(message, "\nREADY=1") != NULL) {
                ready_us = monotonic_us() - started_us;
            }
        }
    }

    int status = 1;
    if (ready_us >= 0) {
        sleep(idle_s);
        printf("ready_us=%lld rss_kb=%ld hwm_kb=%ld\n", ready_us, status_kb(pid, "VmRSS"),
               status_kb(pid, "VmHWM"));
        status = 0;
    } else if (pid > 0) {
        fprintf(stderr, "ready_probe: no READY=1 from '%s' within %d ms\n", argv[2],
                READY_TIMEOUT_MS);
    }
    if (pid > 0) {
        stop_child(pid);
    }
    close(fd);
    unlink(address.sun_path);
    rmdir(dir);
    return status;
}
