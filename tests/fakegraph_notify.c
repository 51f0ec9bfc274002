/* SPDX-License-Identifier: MIT */
/*
 * fakegraph notify: change-notification delivery as Graph sends it, a POST
 * of a changeNotificationCollection with "Content-Type: application/json;
 * charset=utf-8". The body comes from a file, unchanged, or is generated:
 * N "updated" items for call records with random ids.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fakegraph.h"
#include "util.h"

#define NOTIFY_CONTENT_TYPE FAKEGRAPH_NOTIFY_CONTENT_TYPE

/* subscriptionExpirationDateTime of generated items lies this far ahead. */
#define NOTIFY_EXPIRY_AHEAD_MS (24LL * 60 * 60 * 1000)

int fakegraph_append_change_item(json_t *items, const struct fakegraph_change_item *fields,
                                 struct crd_error *err)
{
    /* Call ids of the other fakegraph commands are GUIDs, but a published record may use any id. */
    char *resource = NULL;
    if (asprintf(&resource, "communications/callRecords/%s", fields->call_id) < 0) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }

    json_error_t error;
    json_t *item = json_pack_ex(&error, 0, "{s:s, s:s, s:s, s:s, s:{s:s, s:s, s:s}, s:s?, s:s}",
                                "subscriptionId", fields->subscription,
                                "subscriptionExpirationDateTime", fields->expiry,
                                "changeType", fields->change_type,
                                "resource", resource,
                                "resourceData",
                                    "@odata.type", "#Microsoft.Graph.callrecord",
                                    "@odata.id", resource,
                                    "id", fields->call_id,
                                "clientState", fields->client_state,
                                "tenantId", fields->tenant);
    free(resource);
    if (item == NULL) {
        /* jansson also fails here on a clientState that is not valid UTF-8. */
        return crd_error_set(err, -EINVAL, "building a notification item failed: %s",
                             error.text);
    }
    if (json_array_append_new(items, item) < 0) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    return 0;
}

/* Appends one "updated" changeNotification for the call record call_id to items. */
static int notify_append_item(json_t *items, const struct fakegraph_notify_options *options,
                              const char *call_id, const char *expiry, struct crd_error *err)
{
    struct fakegraph_change_item fields = {
        .subscription = options->subscription,
        .expiry = expiry,
        .change_type = "updated",
        .call_id = call_id,
        .client_state = options->client_state,
        .tenant = options->tenant,
    };
    return fakegraph_append_change_item(items, &fields, err);
}

/* Builds {"value": [...]} with options->generate_count items. The caller json_decref()s it. */
static int notify_generate(const struct fakegraph_notify_options *options,
                           json_t **ret_collection, struct crd_error *err)
{
    json_t *collection = NULL;
    int r = 0;

    char expiry[48];
    fakegraph_format_notification_time(crd_time_now_ms() + NOTIFY_EXPIRY_AHEAD_MS, expiry,
                                       sizeof(expiry));

    collection = json_pack("{s:[]}", "value");
    if (collection == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    json_t *items = json_object_get(collection, "value");

    for (unsigned i = 0; i < options->generate_count; i++) {
        char call_id[CRD_GUID_LEN + 1];
        r = fakegraph_random_guid(call_id, err);
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
        return fakegraph_read_file("--file", options->file, FAKEGRAPH_FILE_MAX, ret_body, ret_len,
                                  err);
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
