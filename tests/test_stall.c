/* SPDX-License-Identifier: MIT */
/*
 * A client that starts a TLS handshake and goes silent must cost the daemon
 * no CPU while it waits, and must be disconnected once the connection
 * timeout passes. libmicrohttpd 0.9.75's epoll mode with GnuTLS spins a core
 * in this situation; the listener uses poll() mode to avoid it.
 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "daemon_env.h"

#define CONNECTION_TIMEOUT_S 3
/* CPU the daemon may spend in two seconds of a stalled handshake: well under 0.1 s. */
#define CPU_BUDGET_MS 100

static long long monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int connect_loopback(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    return fd;
}

/* The first bytes of a ClientHello: a record that announces 512 bytes but sends 9. */
static void send_partial_client_hello(int fd)
{
    static const unsigned char partial[] = {
        0x16, 0x03, 0x01, 0x02, 0x00,  /* handshake record, TLS 1.0 framing, length 512 */
        0x01, 0x00, 0x01, 0xfc,        /* ClientHello, length 508 */
        0x03, 0x03,                    /* client_version TLS 1.2 */
        0x5a, 0x5a, 0x5a, 0x5a,        /* the first bytes of client random, then silence */
    };
    ck_assert_int_eq(send(fd, partial, sizeof(partial), MSG_NOSIGNAL), (ssize_t)sizeof(partial));
}

START_TEST(stalled_handshake_costs_no_cpu_and_times_out)
{
    char extra[64];
    snprintf(extra, sizeof(extra), "connection_timeout = %d\n", CONNECTION_TIMEOUT_S);
    struct crd_test_env env;
    crd_test_env_create(&env, extra);
    ck_assert_int_eq(crd_test_env_start(&env), 0);

    int fd = connect_loopback(env.port);
    send_partial_client_hello(fd);
    long long sent_at = monotonic_ms();

    /* Measure over two seconds; the connection must stay open meanwhile. */
    long cpu_before = crd_test_process_cpu_ms(env.daemon.pid);
    ck_assert_int_ge(cpu_before, 0);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    ck_assert_int_eq(poll(&pfd, 1, 2000), 0);
    long cpu_after = crd_test_process_cpu_ms(env.daemon.pid);
    ck_assert_int_ge(cpu_after, 0);
    ck_assert_msg(cpu_after - cpu_before < CPU_BUDGET_MS,
                  "callrecd used %ld ms of CPU in 2 s while a TLS handshake stalled",
                  cpu_after - cpu_before);

    /* The daemon closes the connection once the timeout passes. */
    long long deadline = sent_at + (CONNECTION_TIMEOUT_S + 10) * 1000;
    bool closed = false;
    while (!closed && monotonic_ms() < deadline) {
        int n = poll(&pfd, 1, (int)(deadline - monotonic_ms()));
        if (n > 0) {
            char buffer[256];
            ssize_t got = recv(fd, buffer, sizeof(buffer), 0);
            closed = got == 0 || (got < 0 && errno == ECONNRESET);
        }
    }
    long long closed_after = monotonic_ms() - sent_at;
    ck_assert_msg(closed, "connection still open %lld ms after the stalled handshake",
                  closed_after);
    ck_assert_int_ge(closed_after, (CONNECTION_TIMEOUT_S - 1) * 1000);
    close(fd);

    /* The daemon still serves other clients afterwards. */
    char *url = NULL;
    if (asprintf(&url, "%s/healthz", env.base_url) < 0) {
        abort();
    }
    struct crd_test_response response;
    ck_assert_int_eq(crd_test_http("GET", url, NULL, NULL, 0, env.ca_file, &response), 0);
    ck_assert_int_eq(response.status, 200);
    crd_test_response_clear(&response);
    free(url);

    ck_assert_int_eq(crd_test_env_stop(&env), 0);
    crd_test_env_destroy(&env);
}
END_TEST

START_TEST(stalled_clients_do_not_block_others)
{
    struct crd_test_env env;
    crd_test_env_create(&env, "connection_timeout = 30\n");
    ck_assert_int_eq(crd_test_env_start(&env), 0);

    int stalled[8];
    for (size_t i = 0; i < 8; i++) {
        stalled[i] = connect_loopback(env.port);
        send_partial_client_hello(stalled[i]);
    }

    char *url = NULL;
    if (asprintf(&url, "%s/healthz", env.base_url) < 0) {
        abort();
    }
    struct crd_test_response response;
    ck_assert_int_eq(crd_test_http("GET", url, NULL, NULL, 0, env.ca_file, &response), 0);
    ck_assert_int_eq(response.status, 200);
    crd_test_response_clear(&response);
    free(url);

    for (size_t i = 0; i < 8; i++) {
        close(stalled[i]);
    }
    ck_assert_int_eq(crd_test_env_stop(&env), 0);
    crd_test_env_destroy(&env);
}
END_TEST

/* True when the peer closes fd within timeout_ms. */
static bool closed_within(int fd, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, timeout_ms) <= 0) {
        return false;
    }
    char buffer[64];
    ssize_t got = recv(fd, buffer, sizeof(buffer), 0);
    return got == 0 || (got < 0 && errno == ECONNRESET);
}

START_TEST(per_address_cap_closes_extra_connections)
{
    struct crd_test_env env;
    crd_test_env_create(&env, "max_connections_per_ip = 2\nconnection_timeout = 30\n");
    ck_assert_int_eq(crd_test_env_start(&env), 0);

    int allowed[2];
    for (size_t i = 0; i < 2; i++) {
        allowed[i] = connect_loopback(env.port);
        send_partial_client_hello(allowed[i]);
    }
    int extra = connect_loopback(env.port);
    ck_assert_msg(closed_within(extra, 5000), "a third connection from one address stayed open");
    ck_assert_msg(!closed_within(allowed[0], 300), "the first connection was closed");
    ck_assert_msg(!closed_within(allowed[1], 300), "the second connection was closed");

    close(extra);
    for (size_t i = 0; i < 2; i++) {
        close(allowed[i]);
    }
    ck_assert_int_eq(crd_test_env_stop(&env), 0);
    crd_test_env_destroy(&env);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("stall");
    TCase *tcase = tcase_create("stalled TLS handshake");
    tcase_set_timeout(tcase, 60);
    tcase_add_test(tcase, stalled_handshake_costs_no_cpu_and_times_out);
    tcase_add_test(tcase, stalled_clients_do_not_block_others);
    tcase_add_test(tcase, per_address_cap_closes_extra_connections);
    suite_add_tcase(suite, tcase);

    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
