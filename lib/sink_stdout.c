/* SPDX-License-Identifier: MIT */
/*
 * The stdout sink: writes one JSON Lines envelope per record version to
 * standard output, for pipes and for journald's stdout stream. A closed
 * reader (EPIPE) is a retry, so records wait in the outbox until one returns.
 * The process must not die of SIGPIPE meanwhile: the dispatcher thread
 * blocks all signals, so write() fails with EPIPE instead.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sink.h"

struct sink_stdout {
    char *name;                       /* the [sink NAME], for messages */
    bool partial_line;                /* the output ends inside a line */
};

static void sink_stdout_destroy(void *context)
{
    struct sink_stdout *sink = context;
    if (sink == NULL) {
        return;
    }
    free(sink->name);
    free(sink);
}

static int sink_stdout_create(const struct crd_config_sink *config, void **ret_context,
                              struct crd_error *err)
{
    if (config == NULL || config->name == NULL || ret_context == NULL) {
        return crd_error_set(err, -EINVAL, "stdout sink: created without a configuration");
    }
    if (fcntl(STDOUT_FILENO, F_GETFL) < 0) {
        return crd_error_set(err, -EBADF, "stdout sink '%s': standard output is closed; start "
                             "callrecd with it connected to a pipe, file or the journal",
                             config->name);
    }

    struct sink_stdout *sink = calloc(1, sizeof(*sink));
    char *name = strdup(config->name);
    if (sink == NULL || name == NULL) {
        free(sink);
        free(name);
        return crd_error_set(err, -ENOMEM, "stdout sink '%s': out of memory", config->name);
    }
    sink->name = name;
    *ret_context = sink;
    return 0;
}

static enum crd_sink_result sink_stdout_deliver(void *context,
                                                const struct crd_sink_delivery *delivery,
                                                struct crd_error *err)
{
    struct sink_stdout *sink = context;
    int r = crd_sink_write_line(STDOUT_FILENO, delivery->line, delivery->line_len,
                                &sink->partial_line);
    if (r < 0) {
        crd_error_set(err, r, "stdout sink '%s': writing to standard output failed: %s",
                      sink->name, strerror(-r));
        return CRD_SINK_RETRY;
    }
    return CRD_SINK_OK;
}

const struct crd_sink_descriptor crd_sink_stdout_descriptor = {
    .abi_version = CRD_SINK_ABI_VERSION,
    .struct_size = sizeof(struct crd_sink_descriptor),
    .name = "stdout",
    .description = "writes JSON Lines to standard output",
    .create = sink_stdout_create,
    .deliver = sink_stdout_deliver,
    .reopen = NULL,
    .destroy = sink_stdout_destroy,
};
