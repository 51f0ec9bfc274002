/* SPDX-License-Identifier: MIT */
/*
 * Reads JSON Lines from a file, a FIFO that a file sink writes to. For each
 * line it writes the wall-clock arrival time (microseconds since the epoch)
 * and the line's first 300 bytes, which tells the benchmark when each record
 * left the sink.
 *
 * Usage: line_stamp INPUT OUTPUT
 * Runs until killed, or until reading INPUT fails.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define KEPT_BYTES 300

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: line_stamp INPUT OUTPUT\n");
        return 2;
    }
    /* O_RDWR keeps a FIFO open across the writer's reopenings, so read() blocks instead of EOF. */
    int in = open(argv[1], O_RDWR | O_CLOEXEC);
    FILE *out = fopen(argv[2], "we");
    if (in < 0 || out == NULL) {
        fprintf(stderr, "line_stamp: cannot open '%s' or '%s': %s\n", argv[1], argv[2],
                strerror(errno));
        return 1;
    }

    char kept[KEPT_BYTES + 1];
    size_t kept_len = 0;
    char buffer[65536];
    for (;;) {
        ssize_t n = read(in, buffer, sizeof(buffer));
        if (n <= 0) {
            break;
        }
        struct timeval now;
        gettimeofday(&now, NULL);
        for (ssize_t i = 0; i < n; i++) {
            if (buffer[i] == '\n') {
                kept[kept_len] = '\0';
                fprintf(out, "%lld %s\n", (long long)now.tv_sec * 1000000 + now.tv_usec, kept);
                fflush(out);
                kept_len = 0;
            } else if (kept_len < KEPT_BYTES) {
                kept[kept_len++] = buffer[i];
            }
        }
    }
    fclose(out);
    close(in);
    return 0;
}
