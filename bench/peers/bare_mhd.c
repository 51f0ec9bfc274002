/* SPDX-License-Identifier: MIT */
/*
 * The practical limit for callrecd's intake: libmicrohttpd with the threading
 * and TLS settings of lib/listener.c (internal poll() threads in a pool,
 * TLS 1.2 and 1.3 with the same GnuTLS priorities). It reads each request
 * body, drops it and responds with an empty 202.
 *
 * Usage: bare_mhd PORT CERT_PEM KEY_PEM [THREADS]
 * Listens on 127.0.0.1:PORT until SIGTERM or SIGINT.
 */
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The same string as TLS_PRIORITIES in lib/listener.c. */
#define TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

/* lib/conf.c defaults of [listener] connection_timeout, max_connections and threads. */
#define CONNECTION_TIMEOUT_S 10
#define CONNECTION_LIMIT 512
#define DEFAULT_THREADS 2

#define PEM_MAX (64 * 1024)

static char *read_pem(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "bare_mhd: cannot open '%s': %s\n", path, strerror(errno));
        return NULL;
    }
    char *text = calloc(1, PEM_MAX + 1);
    size_t len = 0;
    while (text != NULL && len < PEM_MAX) {
        ssize_t n = read(fd, text + len, PEM_MAX - len);
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
    }
    close(fd);
    if (text == NULL || len == 0) {
        fprintf(stderr, "bare_mhd: cannot read '%s'\n", path);
        free(text);
        return NULL;
    }
    return text;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    static int started;
    (void)cls;
    (void)url;
    (void)method;
    (void)version;
    (void)upload_data;

    if (*req_cls == NULL) {
        *req_cls = &started;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        *upload_data_size = 0;  /* the body is read and dropped */
        return MHD_YES;
    }

    struct MHD_Response *response = MHD_create_response_from_buffer(0, NULL,
                                                                    MHD_RESPMEM_PERSISTENT);
    if (response == NULL) {
        return MHD_NO;
    }
    enum MHD_Result result = MHD_queue_response(connection, MHD_HTTP_ACCEPTED, response);
    MHD_destroy_response(response);
    return result;
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: bare_mhd PORT CERT_PEM KEY_PEM [THREADS]\n");
        return 2;
    }
    unsigned long port = strtoul(argv[1], NULL, 10);
    unsigned long threads = argc == 5 ? strtoul(argv[4], NULL, 10) : DEFAULT_THREADS;
    if (port == 0 || port > 65535 || threads == 0 || threads > 64) {
        fprintf(stderr, "bare_mhd: invalid PORT '%s' or THREADS\n", argv[1]);
        return 2;
    }
    char *cert = read_pem(argv[2]);
    char *key = read_pem(argv[3]);
    if (cert == NULL || key == NULL) {
        return 1;
    }

    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct sockaddr_in address = {
        .sin_family = AF_INET,
        .sin_port = htons((uint16_t)port),
        .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
    };
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG |
                     MHD_USE_TLS;
    struct MHD_Daemon *daemon = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, &address,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT_S,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONNECTION_LIMIT, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)threads, MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024U, MHD_OPTION_HTTPS_MEM_CERT,
        cert, MHD_OPTION_HTTPS_MEM_KEY, key, MHD_OPTION_HTTPS_PRIORITIES, TLS_PRIORITIES,
        MHD_OPTION_END);
    if (daemon == NULL) {
        fprintf(stderr, "bare_mhd: libmicrohttpd could not start on 127.0.0.1:%lu\n", port);
        return 1;
    }

    int signal_number = 0;
    while (sigwait(&signals, &signal_number) != 0) {
    }
    MHD_stop_daemon(daemon);
    free(cert);
    free(key);
    return 0;
}
