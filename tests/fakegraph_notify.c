/* SPDX-License-Identifier: MIT */
/*
 * fakegraph notify: change-notification delivery as Graph sends it, a POST
 * of a changeNotificationCollection with "Content-Type: application/json;
 * charset=utf-8". The body comes from a file, unchanged, or is generated:
 * N "updated" items for call records with random ids.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/rand.h>

#include "fakegraph.h"
#include "util.h"

#define NOTIFY_CONTENT_TYPE "application/json; charset=utf-8"

/* Larger --file bodies are rejected. The biggest fixture has a few hundred KiB. */
#define NOTIFY_FILE_MAX (64 * 1024 * 1024)

/* subscriptionExpirationDateTime of generated items lies this far ahead. */
#define NOTIFY_EXPIRY_AHEAD_MS (24LL * 60 * 60 * 1000)

static int notify_read_file(const char *path, char **ret_data, size_t *ret_len,
                            struct crd_error *err)
{
    char *data = NULL;
    int r = 0;

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        r = crd_error_set(err, -errno, "cannot open --file '%s': %s", path, strerror(errno));
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        r = crd_error_set(err, -errno, "cannot stat --file '%s': %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        r = crd_error_set(err, -EINVAL, "--file '%s' is not a regular file", path);
        goto out;
    }
    if (st.st_size > NOTIFY_FILE_MAX) {
        r = crd_error_set(err, -EFBIG, "--file '%s' has %lld bytes, more than the maximum of %d",
                          path, (long long)st.st_size, NOTIFY_FILE_MAX);
        goto out;
    }

    size_t size = (size_t)st.st_size;
    data = malloc(size > 0 ? size : 1);
    if (data == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    size_t len = 0;
    while (len < size) {
        ssize_t n = read(fd, data + len, size - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            r = crd_error_set(err, n < 0 ? -errno : -EIO, "cannot read --file '%s': %s", path,
                              n < 0 ? strerror(errno) : "file shrank while reading");
            goto out;
        }
        len += (size_t)n;
    }

    *ret_data = data;
    *ret_len = len;
    data = NULL;

out:
    free(data);
    if (fd >= 0) {
        close(fd);
    }
    return r;
}

/* Writes a random (version 4) GUID in lower-case 8-4-4-4-12 form. */
static int notify_random_guid(char guid[CRD_GUID_LEN + 1], struct crd_error *err)
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof(b)) != 1) {
        return crd_error_set(err, -EIO, "reading random bytes for a call id failed");
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);

    snprintf(guid, CRD_GUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return 0;
}

/* Appends one "updated" changeNotification for the call record call_id to items. */
static int notify_append_item(json_t *items, const struct fakegraph_notify_options *options,
                              const char *call_id, const char *expiry, struct crd_error *err)
{
    char resource[64];
    snprintf(resource, sizeof(resource), "communications/callRecords/%s", call_id);

    json_error_t error;
    json_t *item = json_pack_ex(&error, 0, "{s:s, s:s, s:s, s:s, s:{s:s, s:s, s:s}, s:s, s:s}",
                                "subscriptionId", options->subscription,
                                "subscriptionExpirationDateTime", expiry,
                                "changeType", "updated",
                                "resource", resource,
                                "resourceData",
                                    "@odata.type", "#Microsoft.Graph.callrecord",
                                    "@odata.id", resource,
                                    "id", call_id,
                                "clientState", options->client_state,
                                "tenantId", options->tenant);
    if (item == NULL) {
        /* jansson also fails here on a --client-state that is not valid UTF-8. */
        return crd_error_set(err, -EINVAL, "building a notification item failed: %s",
                             error.text);
    }
    if (json_array_append_new(items, item) < 0) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    return 0;
}

/* Builds {"value": [...]} with options->generate_count items. The caller json_decref()s it. */
static int notify_generate(const struct fakegraph_notify_options *options,
                           json_t **ret_collection, struct crd_error *err)
{
    json_t *collection = NULL;
    int r = 0;

    /* Graph writes offsets as "+00:00" in notifications, where crd_time_format_iso8601 writes Z. */
    char expiry[40];
    crd_time_format_iso8601(crd_time_now_ms() + NOTIFY_EXPIRY_AHEAD_MS, expiry, sizeof(expiry));
    size_t expiry_len = strlen(expiry);
    snprintf(expiry + expiry_len - 1, sizeof(expiry) - expiry_len + 1, "+00:00");

    collection = json_pack("{s:[]}", "value");
    if (collection == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    json_t *items = json_object_get(collection, "value");

    for (unsigned i = 0; i < options->generate_count; i++) {
        char call_id[CRD_GUID_LEN + 1];
        r = notify_random_guid(call_id, err);
        if (r < 0) {
            goto out;
        }
        r = notify_append_item(items, options, call_id, expiry, err);
        if (r < 0) {
            goto out;
        }
    }

    *ret_collection = collection;
    collection = NULL;

out:
    json_decref(collection);
    return r;
}

static void notify_print_ids(const json_t *collection)
{
    size_t index;
    const json_t *item;
    json_array_foreach(json_object_get(collection, "value"), index, item) {
        printf("%s\n", json_string_value(json_object_get(json_object_get(item, "resourceData"),
                                                         "id")));
    }
    fflush(stdout);
}

/* Returns the request body in *ret_body (free() it) and its length in *ret_len. */
static int notify_build_body(const struct fakegraph_notify_options *options, char **ret_body,
                             size_t *ret_len, struct crd_error *err)
{
    if (options->file != NULL) {
        return notify_read_file(options->file, ret_body, ret_len, err);
    }

    json_t *collection = NULL;
    int r = notify_generate(options, &collection, err);
    if (r < 0) {
        return r;
    }
    if (options->print_ids) {
        notify_print_ids(collection);
    }

    char *body = json_dumps(collection, JSON_COMPACT);
    json_decref(collection);
    if (body == NULL) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    *ret_body = body;
    *ret_len = strlen(body);
    return 0;
}

/* Explains on stderr why a response fails --expect, so that stdout keeps one line per request. */
static void notify_explain_mismatch(const struct fakegraph_notify_options *options,
                                    unsigned attempt, const struct fakegraph_response *response)
{
    char *body = fakegraph_escape(response->body, response->body_len, FAKEGRAPH_SHOWN_BODY_MAX);
    fprintf(stderr, "fakegraph: notify: request %u of %u: expected HTTP %ld, received HTTP %ld, "
            "body '%s' (%zu bytes)\n", attempt, options->repeat, options->expect_status,
            response->status, body != NULL ? body : "(out of memory)", response->body_total);
    free(body);
}

int fakegraph_notify(const struct fakegraph_notify_options *options, bool *ret_passed,
                     struct crd_error *err)
{
    struct fakegraph_http *http = NULL;
    char *body = NULL;
    size_t body_len = 0;
    bool passed = true;

    int r = fakegraph_http_new(options->url, options->cafile, NOTIFY_CONTENT_TYPE, &http, err);
    if (r < 0) {
        goto out;
    }
    r = notify_build_body(options, &body, &body_len, err);
    if (r < 0) {
        goto out;
    }

    for (unsigned attempt = 1; attempt <= options->repeat; attempt++) {
        struct fakegraph_response response = {0};
        r = fakegraph_http_post(http, body, body_len, options->new_connection, &response, err);
        if (r < 0) {
            if (options->repeat > 1) {
                (void)crd_error_prefix(err, "request %u of %u", attempt, options->repeat);
            }
            goto out;
        }

        printf("notify: HTTP %ld\n", response.status);
        fflush(stdout);
        if (response.status != options->expect_status) {
            notify_explain_mismatch(options, attempt, &response);
            passed = false;
        }
        fakegraph_response_clear(&response);
    }

    *ret_passed = passed;

out:
    free(body);
    fakegraph_http_free(http);
    return r;
}
