/* SPDX-License-Identifier: MIT */
/* The registry of built-in sinks, the JSON Lines envelope, and the line writer they share. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "sink.h"
#include "util.h"

const struct crd_sink_descriptor *crd_sink_builtin(enum crd_sink_type type)
{
    switch (type) {
    case CRD_SINK_FILE:
        return &crd_sink_file_descriptor;
    case CRD_SINK_STDOUT:
        return &crd_sink_stdout_descriptor;
    default:
        return NULL;
    }
}

static const char *sink_json_type_name(const json_t *value)
{
    switch (json_typeof(value)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    default:
        return "null";
    }
}

/* The envelope without the record, as compact JSON: "{...}". */
static int sink_format_head(const char *tenant_id, const char *call_id, int64_t version,
                            int64_t notified_at_ms, int64_t fetched_at_ms, char **ret_head,
                            struct crd_error *err)
{
    char key[2 * CRD_GUID_LEN + 32];
    snprintf(key, sizeof(key), "%s/%s/%" PRId64, tenant_id, call_id, version);
    char notified_at[32];
    char fetched_at[32];
    crd_time_format_iso8601(notified_at_ms, notified_at, sizeof(notified_at));
    crd_time_format_iso8601(fetched_at_ms, fetched_at, sizeof(fetched_at));

    json_error_t error;
    json_t *head = json_pack_ex(&error, 0, "{s:s, s:s, s:I, s:s, s:s, s:s}", "tenantId", tenant_id,
                                "callId", call_id, "version", (json_int_t)version,
                                "idempotencyKey", key, "notifiedAt", notified_at, "fetchedAt",
                                fetched_at);
    if (head == NULL) {
        return crd_error_set(err, -EINVAL, "envelope of call '%.64s': %s", call_id, error.text);
    }
    char *text = json_dumps(head, JSON_COMPACT);
    json_decref(head);
    if (text == NULL) {
        return crd_error_set(err, -ENOMEM, "envelope of call '%s': out of memory", call_id);
    }
    *ret_head = text;
    return 0;
}

int crd_sink_format_envelope(const char *tenant_id, const char *call_id, int64_t version,
                             int64_t notified_at_ms, int64_t fetched_at_ms,
                             const char *record_json, size_t record_json_len, char **ret_line,
                             size_t *ret_len, struct crd_error *err)
{
    if (tenant_id == NULL || call_id == NULL || record_json == NULL || ret_line == NULL ||
        ret_len == NULL) {
        return crd_error_set(err, -EINVAL, "envelope: missing ids, record or output pointer");
    }

    json_t *record = NULL;
    char *head = NULL;
    char *reserialized = NULL;
    char *line = NULL;
    int r = 0;

    json_error_t error;
    record = json_loadb(record_json, record_json_len, 0, &error);
    if (record == NULL) {
        r = crd_error_set(err, -EINVAL,
                          "envelope of call '%.64s' version %" PRId64 ": the record is not valid "
                          "JSON: %s at byte %d",
                          call_id, version, error.text, error.position);
        goto out;
    }
    if (!json_is_object(record)) {
        r = crd_error_set(err, -EINVAL,
                          "envelope of call '%.64s' version %" PRId64 ": the record is a JSON %s, "
                          "not an object",
                          call_id, version, sink_json_type_name(record));
        goto out;
    }

    /*
     * A line break can only be whitespace between tokens, because JSON
     * strings contain them escaped. Such a record is re-serialized compactly,
     * and every other one is copied verbatim.
     */
    const char *body = record_json;
    size_t body_len = record_json_len;
    if (memchr(record_json, '\n', record_json_len) != NULL ||
        memchr(record_json, '\r', record_json_len) != NULL) {
        reserialized = json_dumps(record, JSON_COMPACT);
        if (reserialized == NULL) {
            r = crd_error_set(err, -ENOMEM, "envelope of call '%s': out of memory", call_id);
            goto out;
        }
        body = reserialized;
        body_len = strlen(reserialized);
    }

    r = sink_format_head(tenant_id, call_id, version, notified_at_ms, fetched_at_ms, &head, err);
    if (r < 0) {
        goto out;
    }

    /* head is "{...}": drop its closing brace, then append the record and close again. */
    static const char record_key[] = ",\"record\":";
    size_t head_len = strlen(head) - 1;
    size_t len = head_len + strlen(record_key) + body_len + 1;
    line = malloc(len + 1);
    if (line == NULL) {
        r = crd_error_set(err, -ENOMEM, "envelope of call '%s': out of memory", call_id);
        goto out;
    }
    char *p = line;
    memcpy(p, head, head_len);
    p += head_len;
    memcpy(p, record_key, strlen(record_key));
    p += strlen(record_key);
    memcpy(p, body, body_len);
    p += body_len;
    *p++ = '}';
    *p = '\0';

    *ret_line = line;
    *ret_len = len;
    line = NULL;

out:
    json_decref(record);
    free(head);
    free(reserialized);
    free(line);
    return r;
}

int crd_sink_write_line(int fd, const char *line, size_t line_len, bool *partial_line)
{
    size_t prefix = *partial_line ? 1 : 0;
    size_t total = prefix + line_len + 1;
    char *buffer = malloc(total);
    if (buffer == NULL) {
        return -ENOMEM;
    }
    buffer[0] = '\n';
    memcpy(buffer + prefix, line, line_len);
    buffer[total - 1] = '\n';

    size_t written = 0;
    int r = 0;
    while (written < total) {
        ssize_t n = write(fd, buffer + written, total - written);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            r = n < 0 ? -errno : -EIO;
            break;
        }
        written += (size_t)n;
    }
    free(buffer);

    if (written == total) {
        *partial_line = false;
    } else if (written > prefix) {
        *partial_line = true;      /* part of this line was written */
    } else if (written == prefix && prefix == 1) {
        *partial_line = false;     /* the old fragment got its newline, but none of this line */
    }
    return r;
}
