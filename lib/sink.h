/* SPDX-License-Identifier: MIT */
/*
 * Sinks: where call records go. Each sink type is a descriptor with
 * callbacks; built-in sinks and (later) plug-ins from shared objects use the
 * same descriptor. One instance is called from one thread at a time, its
 * dispatcher's, so a sink needs no locking of its own.
 *
 * ABI rules: fields are only appended, each with a comment naming the ABI
 * version that added it; a loader refuses a descriptor whose abi_version it
 * does not know or whose struct_size is smaller than it needs.
 */
#ifndef CRD_SINK_H
#define CRD_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "error.h"

#define CRD_SINK_ABI_VERSION 1

enum crd_sink_result {
    CRD_SINK_OK,      /* delivered; the outbox row is removed */
    CRD_SINK_RETRY,   /* try again later, with backoff */
    CRD_SINK_FATAL,   /* this delivery can never succeed; it is parked, not retried */
};

/* One record version as handed to a sink. Borrowed for the duration of deliver(). */
struct crd_sink_delivery {
    const char *tenant_id;
    const char *call_id;
    int64_t version;
    const char *idempotency_key;   /* "tenant/call id/version": stable across retries and restarts */
    const char *line;              /* the JSON envelope, one line, without the trailing newline */
    size_t line_len;
    unsigned attempt;              /* 1 for the first attempt */
};

struct crd_sink_descriptor {
    uint32_t abi_version;          /* CRD_SINK_ABI_VERSION; ABI 1 */
    uint32_t struct_size;          /* sizeof(struct crd_sink_descriptor); ABI 1 */
    const char *name;              /* the [sink NAME] type= value; ABI 1 */
    const char *description;       /* ABI 1 */

    /* Creates an instance from its configuration section, borrowed for the call only; ABI 1. */
    int (*create)(const struct crd_config_sink *config, void **ret_context, struct crd_error *err);

    /* Delivers one record version; ABI 1. err explains RETRY and FATAL. */
    enum crd_sink_result (*deliver)(void *context, const struct crd_sink_delivery *delivery,
                                    struct crd_error *err);

    /* Reopens files or connections, as on SIGHUP for logrotate. May be NULL; ABI 1. */
    int (*reopen)(void *context, struct crd_error *err);

    /* Frees the instance. Accepts NULL; ABI 1. */
    void (*destroy)(void *context);
};

/* The built-in descriptor for a sink type, or NULL. */
const struct crd_sink_descriptor *crd_sink_builtin(enum crd_sink_type type);

/*
 * Builds the JSON Lines envelope of one delivery: tenantId, callId, version,
 * idempotencyKey, notifiedAt, fetchedAt (ISO 8601 UTC) and the complete
 * record under "record". Returns a malloc'ed line without a newline.
 *
 * The record must be a JSON object. It is copied byte for byte, so numbers
 * keep their spelling, unless it contains a line break between tokens; then
 * it is re-serialized compactly. Returns 0, -EINVAL for a record that is not
 * a JSON object or an invalid argument, or -ENOMEM.
 */
int crd_sink_format_envelope(const char *tenant_id, const char *call_id, int64_t version,
                             int64_t notified_at_ms, int64_t fetched_at_ms,
                             const char *record_json, size_t record_json_len, char **ret_line,
                             size_t *ret_len, struct crd_error *err);

/* ---- for the built-in sinks; not part of the plug-in ABI ------------------------------------ */

extern const struct crd_sink_descriptor crd_sink_file_descriptor;
extern const struct crd_sink_descriptor crd_sink_stdout_descriptor;

/*
 * Writes line and a newline to fd in one write() call, repeated only after a
 * short write. *partial_line is true when an earlier call stopped inside a
 * line. Then the output starts with a newline that ends that fragment, so a
 * reader sees one invalid line rather than two lines glued together. On
 * return *partial_line tells whether this call left a fragment. Returns 0,
 * -ENOMEM, or the negative errno value of the failed write().
 */
int crd_sink_write_line(int fd, const char *line, size_t line_len, bool *partial_line);

#endif
