/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <glob.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "notification.h"

/* Values shared by the fixtures, listed in tests/fixtures/README.md. */
#define SUBSCRIPTION_ID "feb91fbe-efd9-5607-b1bc-af06b720e001"
#define TENANT_ID "2a37c3b7-f073-59a1-b249-42c4e33881c2"
#define CLIENT_STATE "cr-4b8e1f0c9d2a47e6b3c5a7d9e1f20384"
#define P2P_CALL_ID "7e633194-32cf-5bee-86e6-f491790b2813"
#define GROUP_CALL_ID "f0bb1479-0b23-5d38-8445-31e7f07e6f04"
#define PSTN_CALL_ID "0bf46869-eea5-5992-811e-178fec3d9176"
#define EXPIRATION_MS INT64_C(1749132000000) /* 2025-06-05T14:00:00+00:00 */

/* JSON members of a valid change notification, to build items that differ in one member. */
#define MEMBER_SUBSCRIPTION "\"subscriptionId\":\"" SUBSCRIPTION_ID "\""
#define MEMBER_TENANT "\"tenantId\":\"" TENANT_ID "\""
#define MEMBER_CLIENT_STATE "\"clientState\":\"" CLIENT_STATE "\""
#define MEMBER_CREATED "\"changeType\":\"created\""
#define MEMBER_RESOURCE "\"resource\":\"communications/callRecords/" P2P_CALL_ID "\""
#define MEMBER_RESOURCE_DATA "\"resourceData\":{\"id\":\"" P2P_CALL_ID "\"}"
#define MEMBER_IDS MEMBER_SUBSCRIPTION "," MEMBER_TENANT "," MEMBER_CLIENT_STATE

/* A collection with one item made of the given members. */
#define BODY(members) "{\"value\":[{" members "}]}"

static struct crd_notification_batch *parse_ok(const char *body, size_t len,
                                               const struct crd_notification_limits *limits)
{
    struct crd_error err = {0};
    struct crd_notification_batch *batch = NULL;
    int r = crd_notification_parse(body, len, limits, &batch, &err);
    ck_assert_msg(r == 0, "parse failed: %d %s", r, err.message);
    ck_assert_ptr_nonnull(batch);
    return batch;
}

static struct crd_notification_batch *parse_string_ok(const char *body)
{
    return parse_ok(body, strlen(body), NULL);
}

/* Parses a body that must fail, checks that no batch came back, and returns the code. */
static int parse_fail(const char *body, size_t len, const struct crd_notification_limits *limits,
                      struct crd_error *err)
{
    struct crd_notification_batch *batch = NULL;
    int r = crd_notification_parse(body, len, limits, &batch, err);
    ck_assert_ptr_null(batch);
    if (r == 0) {
        crd_notification_batch_free(batch);
    }
    return r;
}

static struct crd_notification_batch *parse_fixture(const char *name)
{
    char *path = crd_test_fixture_path(name);
    size_t len = 0;
    char *body = crd_test_read_file(path, &len);
    ck_assert_msg(body != NULL, "cannot read %s", path);
    struct crd_notification_batch *batch = parse_ok(body, len, NULL);
    free(body);
    free(path);
    return batch;
}

static void assert_common_fields(const struct crd_notification *item)
{
    ck_assert_ptr_null(item->reject_reason);
    ck_assert_str_eq(item->subscription_id, SUBSCRIPTION_ID);
    ck_assert_str_eq(item->tenant_id, TENANT_ID);
    ck_assert(item->has_client_state);
    ck_assert_str_eq(item->client_state, CLIENT_STATE);
    ck_assert_uint_eq(item->client_state_len, strlen(CLIENT_STATE));
    ck_assert_int_eq(item->subscription_expiration_ms, EXPIRATION_MS);
}

static void assert_change_item(const struct crd_notification *item, const char *call_id,
                               enum crd_change_type type)
{
    assert_common_fields(item);
    ck_assert_int_eq(item->kind, CRD_NOTIFICATION_CHANGE);
    ck_assert_int_eq(item->change_type, type);
    ck_assert_int_eq(item->lifecycle_event, CRD_LIFECYCLE_UNKNOWN);
    ck_assert_str_eq(item->call_id, call_id);
}

static void assert_lifecycle_item(const struct crd_notification *item,
                                  enum crd_lifecycle_event event)
{
    assert_common_fields(item);
    ck_assert_int_eq(item->kind, CRD_NOTIFICATION_LIFECYCLE);
    ck_assert_int_eq(item->lifecycle_event, event);
    ck_assert_int_eq(item->change_type, CRD_CHANGE_UNKNOWN);
    ck_assert_str_eq(item->call_id, "");
}

/* Parses BODY(members) and returns its only item's reason, or NULL for a usable item. */
static const char *parse_single_item(const char *body, struct crd_notification *ret_item)
{
    struct crd_notification_batch *batch = parse_string_ok(body);
    ck_assert_uint_eq(batch->n_items, 1);
    const char *reason = batch->items[0].reject_reason;
    ck_assert_uint_eq(batch->n_rejected, reason != NULL ? 1 : 0);
    if (ret_item != NULL) {
        *ret_item = batch->items[0];
    }
    crd_notification_batch_free(batch);
    return reason;
}

/* A collection of n items, each written as item_json. The caller frees the result. */
static char *make_collection(size_t n, const char *item_json)
{
    size_t item_len = strlen(item_json);
    size_t cap = 16 + n * (item_len + 1);
    char *body = malloc(cap);
    ck_assert_ptr_nonnull(body);

    size_t used = 0;
    memcpy(body, "{\"value\":[", 10);
    used += 10;
    for (size_t i = 0; i < n; i++) {
        if (i > 0) {
            body[used++] = ',';
        }
        memcpy(body + used, item_json, item_len);
        used += item_len;
    }
    memcpy(body + used, "]}", 3);
    return body;
}

/* A collection whose one item is wrapped in `levels` arrays, so the body nests levels + 2 deep. */
static char *make_nested(size_t levels)
{
    char *body = malloc(levels * 2 + 16);
    ck_assert_ptr_nonnull(body);
    size_t used = 0;
    memcpy(body, "{\"value\":[", 10);
    used += 10;
    memset(body + used, '[', levels);
    used += levels;
    memset(body + used, ']', levels);
    used += levels;
    memcpy(body + used, "]}", 3);
    return body;
}

START_TEST(fixture_created)
{
    struct crd_notification_batch *batch = parse_fixture("notification-created.json");

    ck_assert_uint_eq(batch->n_items, 1);
    ck_assert_uint_eq(batch->n_rejected, 0);
    assert_change_item(&batch->items[0], P2P_CALL_ID, CRD_CHANGE_CREATED);
    crd_notification_batch_free(batch);
}
END_TEST

START_TEST(fixture_updated_batch)
{
    struct crd_notification_batch *batch = parse_fixture("notification-updated-batch.json");

    ck_assert_uint_eq(batch->n_items, 3);
    ck_assert_uint_eq(batch->n_rejected, 0);
    assert_change_item(&batch->items[0], P2P_CALL_ID, CRD_CHANGE_UPDATED);
    assert_change_item(&batch->items[1], GROUP_CALL_ID, CRD_CHANGE_UPDATED);
    assert_change_item(&batch->items[2], P2P_CALL_ID, CRD_CHANGE_UPDATED);

    /* Items 1 and 3 are duplicates. The parser keeps both, and the caller de-duplicates. */
    const struct crd_notification *first = &batch->items[0];
    const struct crd_notification *third = &batch->items[2];
    ck_assert_int_eq(first->kind, third->kind);
    ck_assert_int_eq(first->change_type, third->change_type);
    ck_assert_str_eq(first->subscription_id, third->subscription_id);
    ck_assert_str_eq(first->tenant_id, third->tenant_id);
    ck_assert_str_eq(first->call_id, third->call_id);
    ck_assert_str_eq(first->client_state, third->client_state);
    ck_assert_int_eq(first->subscription_expiration_ms, third->subscription_expiration_ms);
    crd_notification_batch_free(batch);
}
END_TEST

START_TEST(fixture_wrong_clientstate)
{
    struct crd_notification_batch *batch = parse_fixture("notification-wrong-clientstate.json");

    ck_assert_uint_eq(batch->n_items, 1);
    ck_assert_uint_eq(batch->n_rejected, 0);
    const struct crd_notification *item = &batch->items[0];
    ck_assert_ptr_null(item->reject_reason);
    ck_assert_int_eq(item->kind, CRD_NOTIFICATION_CHANGE);
    ck_assert_int_eq(item->change_type, CRD_CHANGE_CREATED);
    ck_assert_str_eq(item->subscription_id, SUBSCRIPTION_ID);
    ck_assert_str_eq(item->tenant_id, TENANT_ID);
    ck_assert_str_eq(item->call_id, PSTN_CALL_ID);
    ck_assert(item->has_client_state);
    ck_assert_str_eq(item->client_state, "cr-00000000000000000000000000000000");
    ck_assert_uint_eq(item->client_state_len, 35);
    ck_assert_int_eq(item->subscription_expiration_ms, EXPIRATION_MS);
    crd_notification_batch_free(batch);
}
END_TEST

static const struct {
    const char *fixture;
    enum crd_lifecycle_event event;
} lifecycle_fixtures[] = {
    {"lifecycle-reauthorization-required.json", CRD_LIFECYCLE_REAUTHORIZATION_REQUIRED},
    {"lifecycle-subscription-removed.json", CRD_LIFECYCLE_SUBSCRIPTION_REMOVED},
    {"lifecycle-missed.json", CRD_LIFECYCLE_MISSED},
};

START_TEST(fixture_lifecycle)
{
    struct crd_notification_batch *batch = parse_fixture(lifecycle_fixtures[_i].fixture);

    ck_assert_uint_eq(batch->n_items, 1);
    ck_assert_uint_eq(batch->n_rejected, 0);
    assert_lifecycle_item(&batch->items[0], lifecycle_fixtures[_i].event);
    crd_notification_batch_free(batch);
}
END_TEST

START_TEST(fixture_docs_example)
{
    struct crd_notification_batch *batch = parse_fixture("docs-example-notification.json");

    ck_assert_uint_eq(batch->n_items, 1);
    ck_assert_uint_eq(batch->n_rejected, 1);
    const struct crd_notification *item = &batch->items[0];
    ck_assert_ptr_nonnull(item->reject_reason);
    ck_assert_str_eq(item->reject_reason, "subscriptionId is not a GUID");
    ck_assert_int_eq(item->kind, CRD_NOTIFICATION_CHANGE);
    ck_assert_int_eq(item->change_type, CRD_CHANGE_CREATED);
    ck_assert_str_eq(item->subscription_id, "");
    ck_assert_str_eq(item->tenant_id, "");
    ck_assert_str_eq(item->call_id, "");
    ck_assert(item->has_client_state);
    ck_assert_str_eq(item->client_state, "{Secret client state}");
    ck_assert_int_eq(item->subscription_expiration_ms, INT64_C(1677542400000));
    crd_notification_batch_free(batch);
}
END_TEST

START_TEST(fixture_mixed_rejects)
{
    struct crd_notification_batch *batch = parse_fixture("notification-mixed-rejects.json");

    ck_assert_uint_eq(batch->n_items, 5);
    ck_assert_uint_eq(batch->n_rejected, 2);
    assert_change_item(&batch->items[0], P2P_CALL_ID, CRD_CHANGE_CREATED);

    const struct crd_notification *traversal = &batch->items[1];
    ck_assert_ptr_nonnull(traversal->reject_reason);
    ck_assert_str_eq(traversal->reject_reason, "resource is not a call record path");
    ck_assert_str_eq(traversal->call_id, "");
    ck_assert_str_eq(traversal->subscription_id, SUBSCRIPTION_ID);

    assert_lifecycle_item(&batch->items[2], CRD_LIFECYCLE_REAUTHORIZATION_REQUIRED);
    assert_change_item(&batch->items[3], GROUP_CALL_ID, CRD_CHANGE_UNKNOWN);

    const struct crd_notification *bad_id = &batch->items[4];
    ck_assert_ptr_nonnull(bad_id->reject_reason);
    ck_assert_str_eq(bad_id->reject_reason, "resourceData.id is not a GUID");
    ck_assert_str_eq(bad_id->call_id, "");
    ck_assert_int_eq(bad_id->change_type, CRD_CHANGE_UPDATED);
    crd_notification_batch_free(batch);
}
END_TEST

/*
 * Every prefix of every notification fixture that stops before the closing brace must
 * fail as -EBADMSG. Each prefix is copied into a buffer of exactly its length, so ASan
 * catches a read past len.
 */
START_TEST(fixtures_truncated)
{
    static const char *const patterns[] = {
        "notification-*.json",
        "lifecycle-*.json",
        "docs-example-notification.json",
    };
    glob_t found = {0};
    for (size_t p = 0; p < sizeof(patterns) / sizeof(patterns[0]); p++) {
        char *pattern = crd_test_fixture_path(patterns[p]);
        int r = glob(pattern, p > 0 ? GLOB_APPEND : 0, NULL, &found);
        ck_assert_msg(r == 0, "no fixture matches %s", pattern);
        free(pattern);
    }
    ck_assert_uint_ge(found.gl_pathc, 8);

    for (size_t f = 0; f < found.gl_pathc; f++) {
        size_t len = 0;
        char *body = crd_test_read_file(found.gl_pathv[f], &len);
        ck_assert_ptr_nonnull(body);
        char *last_brace = strrchr(body, '}');
        ck_assert_ptr_nonnull(last_brace);
        size_t end = (size_t)(last_brace - body);

        for (size_t cut = 0; cut <= end; cut++) {
            char *prefix = malloc(cut > 0 ? cut : 1);
            ck_assert_ptr_nonnull(prefix);
            memcpy(prefix, body, cut);
            struct crd_error err = {0};
            int r = parse_fail(prefix, cut, NULL, &err);
            ck_assert_msg(r == -EBADMSG, "%s cut at %zu: got %d", found.gl_pathv[f], cut, r);
            free(prefix);
        }
        free(body);
    }
    globfree(&found);
}
END_TEST

/* One member wrong or missing in an otherwise valid item, and the reason expected. */
static const struct {
    const char *body;
    const char *reason;  /* NULL when the item must be usable */
} item_cases[] = {
    {BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE "," MEMBER_RESOURCE_DATA), NULL},

    {BODY("\"subscriptionId\":42," MEMBER_TENANT "," MEMBER_CREATED "," MEMBER_RESOURCE),
     "subscriptionId is not a GUID"},
    {BODY("\"subscriptionId\":true," MEMBER_TENANT "," MEMBER_CREATED "," MEMBER_RESOURCE),
     "subscriptionId is not a GUID"},
    {BODY("\"subscriptionId\":{}," MEMBER_TENANT "," MEMBER_CREATED "," MEMBER_RESOURCE),
     "subscriptionId is not a GUID"},
    {BODY("\"subscriptionId\":[]," MEMBER_TENANT "," MEMBER_CREATED "," MEMBER_RESOURCE),
     "subscriptionId is not a GUID"},
    {BODY("\"subscriptionId\":\"\"," MEMBER_TENANT "," MEMBER_CREATED "," MEMBER_RESOURCE),
     "subscriptionId is not a GUID"},
    {BODY("\"subscriptionId\":\"feb91fbe-efd9-5607-b1bc-af06b720e00\"," MEMBER_TENANT
          "," MEMBER_CREATED "," MEMBER_RESOURCE),
     "subscriptionId is not a GUID"},
    {BODY("\"subscriptionId\":\"feb91fbe-efd9-5607-b1bc-af06b720e00g\"," MEMBER_TENANT
          "," MEMBER_CREATED "," MEMBER_RESOURCE),
     "subscriptionId is not a GUID"},
    {BODY(MEMBER_TENANT "," MEMBER_CREATED "," MEMBER_RESOURCE), "subscriptionId is missing"},
    {BODY("\"subscriptionId\":null," MEMBER_TENANT "," MEMBER_CREATED "," MEMBER_RESOURCE),
     "subscriptionId is missing"},

    {BODY(MEMBER_SUBSCRIPTION ",\"tenantId\":7," MEMBER_CREATED "," MEMBER_RESOURCE),
     "tenantId is not a GUID"},
    {BODY(MEMBER_SUBSCRIPTION ",\"tenantId\":\"{Organization/Tenant id}\"," MEMBER_CREATED
                              "," MEMBER_RESOURCE),
     "tenantId is not a GUID"},
    {BODY(MEMBER_SUBSCRIPTION "," MEMBER_CREATED "," MEMBER_RESOURCE), "tenantId is missing"},

    {BODY(MEMBER_SUBSCRIPTION "," MEMBER_TENANT ",\"clientState\":42," MEMBER_CREATED
                              "," MEMBER_RESOURCE),
     "clientState is not a string"},
    {BODY(MEMBER_SUBSCRIPTION "," MEMBER_TENANT ",\"clientState\":[\"x\"]," MEMBER_CREATED
                              "," MEMBER_RESOURCE),
     "clientState is not a string"},
    {BODY(MEMBER_SUBSCRIPTION "," MEMBER_TENANT ",\"clientState\":{}," MEMBER_CREATED
                              "," MEMBER_RESOURCE),
     "clientState is not a string"},
    {BODY(MEMBER_SUBSCRIPTION "," MEMBER_TENANT ",\"clientState\":false," MEMBER_CREATED
                              "," MEMBER_RESOURCE),
     "clientState is not a string"},

    {BODY(MEMBER_IDS ",\"changeType\":1," MEMBER_RESOURCE), "changeType is not a string"},
    {BODY(MEMBER_IDS ",\"changeType\":[\"created\"]," MEMBER_RESOURCE),
     "changeType is not a string"},
    {BODY(MEMBER_IDS ",\"changeType\":{}," MEMBER_RESOURCE), "changeType is not a string"},
    {BODY(MEMBER_IDS ",\"changeType\":true," MEMBER_RESOURCE), "changeType is not a string"},
    {BODY(MEMBER_IDS ",\"lifecycleEvent\":3"), "lifecycleEvent is not a string"},
    {BODY(MEMBER_IDS ",\"lifecycleEvent\":[]"), "lifecycleEvent is not a string"},
    {BODY(MEMBER_IDS ",\"changeType\":\"created\",\"lifecycleEvent\":\"missed\"," MEMBER_RESOURCE),
     "notification has both changeType and lifecycleEvent"},
    {BODY(MEMBER_IDS "," MEMBER_RESOURCE),
     "notification has neither changeType nor lifecycleEvent"},
    {BODY(MEMBER_IDS ",\"changeType\":null," MEMBER_RESOURCE),
     "notification has neither changeType nor lifecycleEvent"},

    {BODY(MEMBER_IDS "," MEMBER_CREATED ",\"resource\":42"), "resource is not a string"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED ",\"resource\":{}"), "resource is not a string"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED
                     ",\"resource\":\"communications/callRecords/../../users/" P2P_CALL_ID "\""),
     "resource is not a call record path"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED ",\"resource\":\"communications/callRecords/" P2P_CALL_ID
                     "/..\""),
     "resource is not a call record path"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED ",\"resource\":\"communications/callRecords/" P2P_CALL_ID
                     "/sessions\""),
     "resource is not a call record path"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED ",\"resource\":\"communications/callRecords/" P2P_CALL_ID
                     "/\""),
     "resource is not a call record path"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED ",\"resource\":\"communications/callRecords/" P2P_CALL_ID
                     "?$expand=sessions\""),
     "resource is not a call record path"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED ",\"resource\":\"communications/callRecords/{Call id}\""),
     "resource is not a call record path"},
    /* Segments as long as a GUID, so only the GUID check can reject them. */
    {BODY(MEMBER_IDS
          "," MEMBER_CREATED
          ",\"resource\":\"communications/callRecords/../../../../../../../../../etc/passw\""),
     "resource is not a call record path"},
    {BODY(MEMBER_IDS
          "," MEMBER_CREATED
          ",\"resource\":\"communications/callRecords/7e633194-32cf-5bee-86e6-f491790b281g\""),
     "resource is not a call record path"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED ",\"resource\":\"communications/callRecords/\""),
     "resource is not a call record path"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED ",\"resource\":\"\""),
     "resource is not a call record path"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED ",\"resource\":\"users/" P2P_CALL_ID "\""),
     "resource is not a call record path"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED
                     ",\"resource\":\"v1.0/communications/callRecords/" P2P_CALL_ID "\""),
     "resource is not a call record path"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED ",\"resource\":\"//communications/callRecords/" P2P_CALL_ID
                     "\""),
     "resource is not a call record path"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED ",\"resource\":\"communications/callRecords('" P2P_CALL_ID
                     "')\""),
     "resource is not a call record path"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE_DATA
                     ",\"resource\":\"communications/callRecords/" P2P_CALL_ID "/../x\""),
     "resource is not a call record path"},

    {BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE ",\"resourceData\":\"x\""),
     "resourceData is not an object"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE ",\"resourceData\":[]"),
     "resourceData is not an object"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE ",\"resourceData\":{\"id\":42}"),
     "resourceData.id is not a GUID"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE
                     ",\"resourceData\":{\"id\":\"{Call id}\"}"),
     "resourceData.id is not a GUID"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED ",\"resourceData\":{\"id\":\"../" P2P_CALL_ID "\"}"),
     "resourceData.id is not a GUID"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE
                     ",\"resourceData\":{\"id\":\"" GROUP_CALL_ID "\"}"),
     "resource and resourceData.id name different call records"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED), "resource and resourceData.id are missing"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED ",\"resourceData\":{}"),
     "resource and resourceData.id are missing"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED ",\"resource\":null,\"resourceData\":null"),
     "resource and resourceData.id are missing"},

    /* Members that do not reject an item when wrong. */
    {BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE
                     ",\"subscriptionExpirationDateTime\":42"),
     NULL},
    {BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE
                     ",\"subscriptionExpirationDateTime\":\"soon\""),
     NULL},
    {BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE
                     ",\"subscriptionExpirationDateTime\":[]"),
     NULL},
    {BODY(MEMBER_IDS ",\"lifecycleEvent\":\"missed\",\"resource\":\"../../etc\""), NULL},
    {BODY(MEMBER_IDS ",\"changeType\":\"created,updated\"," MEMBER_RESOURCE), NULL},
};

START_TEST(item_field_cases)
{
    const char *reason = parse_single_item(item_cases[_i].body, NULL);
    if (item_cases[_i].reason == NULL) {
        ck_assert_msg(reason == NULL, "unexpected reject: %s", reason);
    } else {
        ck_assert_ptr_nonnull(reason);
        ck_assert_str_eq(reason, item_cases[_i].reason);
    }
}
END_TEST

static const struct {
    const char *body;
    const char *call_id;
} call_id_cases[] = {
    {BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE), P2P_CALL_ID},
    {BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE_DATA), P2P_CALL_ID},
    {BODY(MEMBER_IDS "," MEMBER_CREATED ",\"resource\":\"/communications/callRecords/" GROUP_CALL_ID
                     "\""),
     GROUP_CALL_ID},
    {BODY(MEMBER_IDS "," MEMBER_CREATED ",\"resource\":\"Communications/CALLRECORDS/" GROUP_CALL_ID
                     "\""),
     GROUP_CALL_ID},
    {BODY(MEMBER_IDS "," MEMBER_CREATED ",\"resource\":\"communications/callRecords/"
                     "7E633194-32CF-5BEE-86E6-F491790B2813\"," MEMBER_RESOURCE_DATA),
     P2P_CALL_ID},
    {BODY(MEMBER_IDS "," MEMBER_CREATED ",\"resource\":null," MEMBER_RESOURCE_DATA), P2P_CALL_ID},
    {BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE ",\"resourceData\":{\"id\":null}"),
     P2P_CALL_ID},
};

START_TEST(item_call_id_sources)
{
    struct crd_notification item;
    const char *reason = parse_single_item(call_id_cases[_i].body, &item);
    ck_assert_msg(reason == NULL, "unexpected reject: %s", reason);
    ck_assert_str_eq(item.call_id, call_id_cases[_i].call_id);
    ck_assert_int_eq(item.kind, CRD_NOTIFICATION_CHANGE);
    ck_assert_int_eq(item.change_type, CRD_CHANGE_CREATED);
}
END_TEST

START_TEST(client_state_missing_or_null)
{
    static const char *const bodies[] = {
        BODY(MEMBER_SUBSCRIPTION "," MEMBER_TENANT "," MEMBER_CREATED "," MEMBER_RESOURCE),
        BODY(MEMBER_SUBSCRIPTION "," MEMBER_TENANT ",\"clientState\":null," MEMBER_CREATED
                                 "," MEMBER_RESOURCE),
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        struct crd_notification item;
        const char *reason = parse_single_item(bodies[i], &item);
        ck_assert_msg(reason == NULL, "body %zu rejected: %s", i, reason);
        ck_assert(!item.has_client_state);
        ck_assert_str_eq(item.client_state, "");
        ck_assert_uint_eq(item.client_state_len, 0);
        ck_assert_str_eq(item.call_id, P2P_CALL_ID);
    }
}
END_TEST

START_TEST(client_state_length_limit)
{
    char longest[CRD_CLIENT_STATE_MAX + 2];
    memset(longest, 'c', CRD_CLIENT_STATE_MAX);
    longest[CRD_CLIENT_STATE_MAX] = '\0';

    char body[1024];
    int n = snprintf(body, sizeof(body),
                     BODY(MEMBER_SUBSCRIPTION "," MEMBER_TENANT
                                              ",\"clientState\":\"%s\"," MEMBER_CREATED
                                              "," MEMBER_RESOURCE),
                     longest);
    ck_assert_int_lt(n, (int)sizeof(body));
    struct crd_notification item;
    const char *reason = parse_single_item(body, &item);
    ck_assert_ptr_null(reason);
    ck_assert(item.has_client_state);
    ck_assert_uint_eq(item.client_state_len, CRD_CLIENT_STATE_MAX);
    ck_assert_str_eq(item.client_state, longest);

    longest[CRD_CLIENT_STATE_MAX] = 'c';
    longest[CRD_CLIENT_STATE_MAX + 1] = '\0';
    n = snprintf(body, sizeof(body),
                 BODY(MEMBER_SUBSCRIPTION "," MEMBER_TENANT
                                          ",\"clientState\":\"%s\"," MEMBER_CREATED
                                          "," MEMBER_RESOURCE),
                 longest);
    ck_assert_int_lt(n, (int)sizeof(body));
    reason = parse_single_item(body, &item);
    ck_assert_ptr_nonnull(reason);
    ck_assert_str_eq(reason, "clientState is longer than the maximum length");
    ck_assert(!item.has_client_state);
}
END_TEST

START_TEST(expiration_invalid_is_zero)
{
    struct crd_notification item;
    const char *reason = parse_single_item(
        BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE
                        ",\"subscriptionExpirationDateTime\":\"2025-13-05T14:00:00Z\""),
        &item);
    ck_assert_ptr_null(reason);
    ck_assert_int_eq(item.subscription_expiration_ms, 0);

    reason = parse_single_item(BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE), &item);
    ck_assert_ptr_null(reason);
    ck_assert_int_eq(item.subscription_expiration_ms, 0);

    reason = parse_single_item(
        BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE
                        ",\"subscriptionExpirationDateTime\":\"2025-06-05T14:00:00.1234567Z\""),
        &item);
    ck_assert_ptr_null(reason);
    ck_assert_int_eq(item.subscription_expiration_ms, EXPIRATION_MS + 123);
}
END_TEST

START_TEST(unknown_values_kept)
{
    static const char *const change_types[] = {"unknownFutureValue", "archived", "Created", ""};
    for (size_t i = 0; i < sizeof(change_types) / sizeof(change_types[0]); i++) {
        char body[512];
        int n =
            snprintf(body, sizeof(body), BODY(MEMBER_IDS ",\"changeType\":\"%s\"," MEMBER_RESOURCE),
                     change_types[i]);
        ck_assert_int_lt(n, (int)sizeof(body));
        struct crd_notification item;
        const char *reason = parse_single_item(body, &item);
        ck_assert_msg(reason == NULL, "changeType '%s' rejected: %s", change_types[i], reason);
        ck_assert_int_eq(item.kind, CRD_NOTIFICATION_CHANGE);
        ck_assert_int_eq(item.change_type, CRD_CHANGE_UNKNOWN);
        ck_assert_str_eq(item.call_id, P2P_CALL_ID);
    }

    static const char *const events[] = {"unknownFutureValue", "subscriptionPaused", "MISSED"};
    for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
        char body[512];
        int n =
            snprintf(body, sizeof(body), BODY(MEMBER_IDS ",\"lifecycleEvent\":\"%s\""), events[i]);
        ck_assert_int_lt(n, (int)sizeof(body));
        struct crd_notification item;
        const char *reason = parse_single_item(body, &item);
        ck_assert_msg(reason == NULL, "lifecycleEvent '%s' rejected: %s", events[i], reason);
        ck_assert_int_eq(item.kind, CRD_NOTIFICATION_LIFECYCLE);
        ck_assert_int_eq(item.lifecycle_event, CRD_LIFECYCLE_UNKNOWN);
    }
}
END_TEST

START_TEST(deleted_change_type)
{
    struct crd_notification item;
    const char *reason =
        parse_single_item(BODY(MEMBER_IDS ",\"changeType\":\"deleted\"," MEMBER_RESOURCE), &item);
    ck_assert_ptr_null(reason);
    ck_assert_int_eq(item.change_type, CRD_CHANGE_DELETED);
}
END_TEST

/* Bodies rejected as a whole, with a word the error message must contain. */
static const struct {
    const char *body;
    const char *message_part;
} collection_cases[] = {
    {"", "not valid JSON"},
    {"   ", "not valid JSON"},
    {"\"value\"", "not valid JSON"},
    {"42", "not valid JSON"},
    {"null", "not valid JSON"},
    {"{\"value\":[{}]} trailing", "not valid JSON"},
    {"[{\"value\":[]}]", "not a JSON object"},
    {"{}", "no \"value\" member"},
    {"{\"Value\":[{}]}", "no \"value\" member"},
    {"{\"value\":{}}", "not an array"},
    {"{\"value\":\"[]\"}", "not an array"},
    {"{\"value\":null}", "not an array"},
    {"{\"value\":[]}", "is empty"},
    {"{\"value\":[{}],\"value\":[{}]}", "duplicate object key"},
    {BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE ",\"changeType\":\"updated\""),
     "duplicate object key"},
    {"{\"value\":[{\"resourceData\":{\"id\":\"a\",\"id\":\"b\"}}]}", "duplicate object key"},
};

START_TEST(collection_rejected)
{
    struct crd_error err = {0};
    const char *body = collection_cases[_i].body;
    int r = parse_fail(body, strlen(body), NULL, &err);
    ck_assert_int_eq(r, -EBADMSG);
    ck_assert_int_eq(err.code, -EBADMSG);
    ck_assert_msg(strstr(err.message, collection_cases[_i].message_part) != NULL,
                  "message '%s' lacks '%s'", err.message, collection_cases[_i].message_part);
}
END_TEST

START_TEST(items_not_objects)
{
    struct crd_notification_batch *batch =
        parse_string_ok("{\"value\":[1,\"x\",null,[],true,"
                        "{" MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE "}]}");
    ck_assert_uint_eq(batch->n_items, 6);
    ck_assert_uint_eq(batch->n_rejected, 5);
    for (size_t i = 0; i < 5; i++) {
        ck_assert_ptr_nonnull(batch->items[i].reject_reason);
        ck_assert_str_eq(batch->items[i].reject_reason, "notification is not a JSON object");
        ck_assert_str_eq(batch->items[i].subscription_id, "");
        ck_assert_str_eq(batch->items[i].call_id, "");
    }
    ck_assert_ptr_null(batch->items[5].reject_reason);
    ck_assert_str_eq(batch->items[5].call_id, P2P_CALL_ID);
    crd_notification_batch_free(batch);
}
END_TEST

START_TEST(item_count_limit)
{
    struct crd_error err = {0};
    char *body = make_collection(10000, "{}");
    int r = parse_fail(body, strlen(body), NULL, &err);
    ck_assert_int_eq(r, -EMSGSIZE);
    ck_assert_ptr_nonnull(strstr(err.message, "10000 items"));
    free(body);

    body = make_collection(CRD_NOTIFICATION_DEFAULT_MAX_ITEMS, "{}");
    struct crd_notification_batch *batch = parse_string_ok(body);
    ck_assert_uint_eq(batch->n_items, CRD_NOTIFICATION_DEFAULT_MAX_ITEMS);
    ck_assert_uint_eq(batch->n_rejected, CRD_NOTIFICATION_DEFAULT_MAX_ITEMS);
    ck_assert_str_eq(batch->items[0].reject_reason, "subscriptionId is missing");
    crd_notification_batch_free(batch);
    free(body);

    struct crd_notification_limits limits = {.max_items = 2};
    body = make_collection(3, "{" MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE "}");
    r = parse_fail(body, strlen(body), &limits, &err);
    ck_assert_int_eq(r, -EMSGSIZE);
    limits.max_items = 3;
    batch = parse_ok(body, strlen(body), &limits);
    ck_assert_uint_eq(batch->n_items, 3);
    ck_assert_uint_eq(batch->n_rejected, 0);
    crd_notification_batch_free(batch);
    free(body);
}
END_TEST

START_TEST(body_size_limit)
{
    /* A valid 10 MB body, so only its size can make it fail. */
    size_t len = 10 * 1024 * 1024;
    char *body = malloc(len);
    ck_assert_ptr_nonnull(body);
    static const char head[] = "{\"value\":[{\"padding\":\"";
    static const char tail[] = "\"}]}";
    memcpy(body, head, sizeof(head) - 1);
    memset(body + sizeof(head) - 1, 'a', len - (sizeof(head) - 1) - (sizeof(tail) - 1));
    memcpy(body + len - (sizeof(tail) - 1), tail, sizeof(tail) - 1);

    struct crd_error err = {0};
    int r = parse_fail(body, len, NULL, &err);
    ck_assert_int_eq(r, -EMSGSIZE);
    ck_assert_int_eq(err.code, -EMSGSIZE);
    ck_assert_ptr_nonnull(strstr(err.message, "10485760 bytes"));
    free(body);

    const char *small = BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE);
    struct crd_notification_limits limits = {.max_body_size = strlen(small) - 1};
    r = parse_fail(small, strlen(small), &limits, &err);
    ck_assert_int_eq(r, -EMSGSIZE);
    limits.max_body_size = strlen(small);
    struct crd_notification_batch *batch = parse_ok(small, strlen(small), &limits);
    ck_assert_uint_eq(batch->n_rejected, 0);
    crd_notification_batch_free(batch);
}
END_TEST

START_TEST(nesting_depth_limit)
{
    struct crd_error err = {0};

    /* The object and "value" take two levels, so 14 more reach the default of 16. */
    char *body = make_nested(CRD_NOTIFICATION_DEFAULT_MAX_DEPTH - 2);
    struct crd_notification_batch *batch = parse_string_ok(body);
    ck_assert_uint_eq(batch->n_rejected, 1);
    ck_assert_str_eq(batch->items[0].reject_reason, "notification is not a JSON object");
    crd_notification_batch_free(batch);
    free(body);

    body = make_nested(CRD_NOTIFICATION_DEFAULT_MAX_DEPTH - 1);
    int r = parse_fail(body, strlen(body), NULL, &err);
    ck_assert_int_eq(r, -EBADMSG);
    ck_assert_ptr_nonnull(strstr(err.message, "nested deeper than 16 levels"));
    free(body);

    /* Far deeper than jansson's own limit of 2048 levels, balanced and then unbalanced. */
    body = make_nested(100000);
    r = parse_fail(body, strlen(body), NULL, &err);
    ck_assert_int_eq(r, -EBADMSG);
    body[100000 + 10] = '\0';
    r = parse_fail(body, strlen(body), NULL, &err);
    ck_assert_int_eq(r, -EBADMSG);
    free(body);

    /* A limit above jansson's own leaves the rejection to jansson, still as -EBADMSG. */
    struct crd_notification_limits deep = {.max_depth = 1000000};
    body = make_nested(100000);
    r = parse_fail(body, strlen(body), &deep, &err);
    ck_assert_int_eq(r, -EBADMSG);
    ck_assert_ptr_nonnull(strstr(err.message, "not valid JSON"));
    free(body);

    /* Brackets inside strings, escaped quotes included, are not nesting. */
    batch = parse_string_ok(BODY(MEMBER_IDS
                                 "," MEMBER_CREATED "," MEMBER_RESOURCE
                                 ",\"note\":\"\\\"[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{{{{{\""));
    ck_assert_uint_eq(batch->n_rejected, 0);
    crd_notification_batch_free(batch);

    /* The created fixture nests four levels deep: object, value, item, resourceData. */
    char *path = crd_test_fixture_path("notification-created.json");
    size_t len = 0;
    char *fixture = crd_test_read_file(path, &len);
    ck_assert_ptr_nonnull(fixture);
    struct crd_notification_limits limits = {.max_depth = 3};
    r = parse_fail(fixture, len, &limits, &err);
    ck_assert_int_eq(r, -EBADMSG);
    limits.max_depth = 4;
    batch = parse_ok(fixture, len, &limits);
    ck_assert_uint_eq(batch->n_rejected, 0);
    crd_notification_batch_free(batch);
    free(fixture);
    free(path);
}
END_TEST

/* Builds the template with its "%s" replaced by a string of n bytes. */
static char *make_long_string_body(const char *template, size_t n)
{
    const char *slot = strstr(template, "%s");
    ck_assert_ptr_nonnull(slot);
    size_t head = (size_t)(slot - template);
    size_t tail = strlen(slot + 2);
    char *body = malloc(head + n + tail + 1);
    ck_assert_ptr_nonnull(body);
    memcpy(body, template, head);
    memset(body + head, 's', n);
    memcpy(body + head + n, slot + 2, tail + 1);
    return body;
}

START_TEST(string_length_limit)
{
    static const char *const formats[] = {
        BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE ",\"extra\":\"%s\""),
        BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE ",\"%s\":1"),
        BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE
                        ",\"resourceData\":{\"note\":[\"%s\"]}"),
    };
    size_t max = CRD_NOTIFICATION_DEFAULT_MAX_STRING_LENGTH;

    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
        char *body = make_long_string_body(formats[i], max);
        struct crd_notification item;
        const char *reason = parse_single_item(body, &item);
        ck_assert_msg(reason == NULL, "format %zu at the limit rejected: %s", i, reason);
        free(body);

        body = make_long_string_body(formats[i], max + 1);
        reason = parse_single_item(body, &item);
        ck_assert_ptr_nonnull(reason);
        ck_assert_str_eq(reason, "notification has a string longer than the maximum length");
        /* The ids are still filled for the caller's log. */
        ck_assert_str_eq(item.subscription_id, SUBSCRIPTION_ID);
        ck_assert_str_eq(item.call_id, P2P_CALL_ID);
        free(body);
    }

    /* A limit below the length of a GUID rejects every item. */
    struct crd_notification_limits limits = {.max_string_length = 10};
    const char *body = BODY(MEMBER_IDS "," MEMBER_CREATED "," MEMBER_RESOURCE);
    struct crd_notification_batch *batch = parse_ok(body, strlen(body), &limits);
    ck_assert_uint_eq(batch->n_rejected, 1);
    ck_assert_str_eq(batch->items[0].reject_reason,
                     "notification has a string longer than the maximum length");
    crd_notification_batch_free(batch);
}
END_TEST

START_TEST(invalid_arguments)
{
    struct crd_error err = {0};
    struct crd_notification_batch *batch = NULL;

    int r = crd_notification_parse(NULL, 5, NULL, &batch, &err);
    ck_assert_int_eq(r, -EINVAL);
    ck_assert_ptr_null(batch);

    r = crd_notification_parse(NULL, 0, NULL, &batch, &err);
    ck_assert_int_eq(r, -EBADMSG);
    ck_assert_ptr_null(batch);

    r = crd_notification_parse("{}", 2, NULL, NULL, &err);
    ck_assert_int_eq(r, -EINVAL);

    /* err may be NULL. */
    r = crd_notification_parse("{}", 2, NULL, &batch, NULL);
    ck_assert_int_eq(r, -EBADMSG);
    ck_assert_ptr_null(batch);

    crd_notification_batch_free(NULL);
}
END_TEST

START_TEST(type_and_event_names)
{
    ck_assert_str_eq(crd_change_type_name(CRD_CHANGE_CREATED), "created");
    ck_assert_str_eq(crd_change_type_name(CRD_CHANGE_UPDATED), "updated");
    ck_assert_str_eq(crd_change_type_name(CRD_CHANGE_DELETED), "deleted");
    ck_assert_str_eq(crd_change_type_name(CRD_CHANGE_UNKNOWN), "unknown");
    ck_assert_str_eq(crd_change_type_name(CRD_CHANGE__COUNT), "unknown");
    ck_assert_str_eq(crd_change_type_name((enum crd_change_type)-1), "unknown");

    ck_assert_str_eq(crd_lifecycle_event_name(CRD_LIFECYCLE_REAUTHORIZATION_REQUIRED),
                     "reauthorizationRequired");
    ck_assert_str_eq(crd_lifecycle_event_name(CRD_LIFECYCLE_SUBSCRIPTION_REMOVED),
                     "subscriptionRemoved");
    ck_assert_str_eq(crd_lifecycle_event_name(CRD_LIFECYCLE_MISSED), "missed");
    ck_assert_str_eq(crd_lifecycle_event_name(CRD_LIFECYCLE_UNKNOWN), "unknown");
    ck_assert_str_eq(crd_lifecycle_event_name(CRD_LIFECYCLE__COUNT), "unknown");
}
END_TEST

static Suite *notification_suite(void)
{
    Suite *suite = suite_create("notification");

    TCase *fixtures = tcase_create("fixtures");
    tcase_add_test(fixtures, fixture_created);
    tcase_add_test(fixtures, fixture_updated_batch);
    tcase_add_test(fixtures, fixture_wrong_clientstate);
    tcase_add_loop_test(fixtures, fixture_lifecycle, 0,
                        sizeof(lifecycle_fixtures) / sizeof(lifecycle_fixtures[0]));
    tcase_add_test(fixtures, fixture_docs_example);
    tcase_add_test(fixtures, fixture_mixed_rejects);
    tcase_add_test(fixtures, fixtures_truncated);
    suite_add_tcase(suite, fixtures);

    TCase *items = tcase_create("items");
    tcase_add_loop_test(items, item_field_cases, 0, sizeof(item_cases) / sizeof(item_cases[0]));
    tcase_add_loop_test(items, item_call_id_sources, 0,
                        sizeof(call_id_cases) / sizeof(call_id_cases[0]));
    tcase_add_test(items, client_state_missing_or_null);
    tcase_add_test(items, client_state_length_limit);
    tcase_add_test(items, expiration_invalid_is_zero);
    tcase_add_test(items, unknown_values_kept);
    tcase_add_test(items, deleted_change_type);
    tcase_add_test(items, items_not_objects);
    suite_add_tcase(suite, items);

    TCase *limits = tcase_create("limits");
    tcase_add_loop_test(limits, collection_rejected, 0,
                        sizeof(collection_cases) / sizeof(collection_cases[0]));
    tcase_add_test(limits, item_count_limit);
    tcase_add_test(limits, body_size_limit);
    tcase_add_test(limits, nesting_depth_limit);
    tcase_add_test(limits, string_length_limit);
    tcase_add_test(limits, invalid_arguments);
    tcase_add_test(limits, type_and_event_names);
    suite_add_tcase(suite, limits);

    return suite;
}

int main(void)
{
    SRunner *runner = srunner_create(notification_suite());
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
