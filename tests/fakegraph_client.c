/* SPDX-License-Identifier: MIT */
/*
 * fakegraph publish, trigger and fault: clients of the control API of
 * "fakegraph serve". Their --tenant options become the "tenant" member of
 * the request: the tenant a record is published in, whose subscriptions a
 * notification goes to, or whose requests a fault applies to.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fakegraph_client.h"

#define REPEAT_MAX 1000
#define NOT_FOUND_FOR_MAX_MS 86400000UL
#define DELAY_MAX_MS 600000UL

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the control API ---------------------------------------------------------------- */

int fakegraph_control_post(const struct fakegraph_control *control, const char *path,
                           const json_t *body, long *ret_status, json_t **ret_response,
                           struct crd_error *err)
{
    struct fakegraph_http *http = NULL;
    struct fakegraph_response response = {0};
    char *url = NULL;
    char *text = NULL;
    size_t base_len = strlen(control->base);
    int r = 0;

    /* A trailing slash on --control would make "//_fakegraph", which is another path. */
    while (base_len > 0 && control->base[base_len - 1] == '/') {
        base_len--;
    }
    if (asprintf(&url, "%.*s%s", (int)base_len, control->base, path) < 0) {
        url = NULL;
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    if (body != NULL) {
        text = json_dumps(body, JSON_COMPACT);
        if (text == NULL) {
            r = crd_error_set(err, -ENOMEM, "out of memory");
            goto out;
        }
    }

    r = fakegraph_http_new(url, control->cafile, "application/json", &http, err);
    if (r < 0) {
        (void)crd_error_prefix(err, "--control");
        goto out;
    }
    r = fakegraph_http_post(http, text, text != NULL ? strlen(text) : 0, false, &response, err);
    if (r < 0) {
        goto out;
    }

    *ret_status = response.status;
    *ret_response = response.body_len > 0 && response.body_len == response.body_total
                        ? json_loadb(response.body, response.body_len, 0, NULL)
                        : NULL;

out:
    fakegraph_response_clear(&response);
    fakegraph_http_free(http);
    free(text);
    free(url);
    return r;
}

/* Fills err from a control API error response {"error": {"message"}}. */
static int control_failure(long status, const json_t *response, struct crd_error *err)
{
    const char *message =
        json_string_value(json_object_get(json_object_get(response, "error"), "message"));
    return crd_error_set(err, status == 404 ? -ENOENT : -EPROTO,
                         "the server responded with HTTP %ld: %s", status,
                         message != NULL ? message : "(no error message)");
}

/* ---- publish ----------------------------------------------------------------------- */

/* Appends the "value" array of the page file at path to items. */
static int append_page(json_t *items, const char *label, const char *path,
                       struct crd_error *err)
{
    json_t *page = NULL;
    int r = fakegraph_read_json_file(label, path, &page, err);
    if (r < 0) {
        return r;
    }
    json_t *value = json_object_get(page, "value");
    if (!json_is_array(value)) {
        r = crd_error_set(err, -EINVAL, "%s '%s' has no \"value\" array; expected a page such "
                          "as participants-page2.json", label, path);
    } else if (json_array_extend(items, value) < 0) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
    }
    json_decref(page);
    return r;
}

/* Builds {"record": ..., "participants": ...?, "notFoundForMs": ...?} from the files. */
static int build_publish_body(const struct fakegraph_publish_options *options,
                              json_t **ret_body, struct crd_error *err)
{
    json_t *record = NULL;
    json_t *participants = NULL;
    json_t *body = NULL;

    int r = fakegraph_read_json_file("--record", options->records[0], &record, err);
    if (r < 0) {
        goto out;
    }
    if (!json_is_object(record) || !json_is_string(json_object_get(record, "id"))) {
        r = crd_error_set(err, -EINVAL, "--record '%s' is not a callRecord with an \"id\"",
                          options->records[0]);
        goto out;
    }
    /* The link points at graph.microsoft.com or another page; the server makes its own. */
    (void)json_object_del(record, "sessions@odata.nextLink");
    json_t *sessions = json_object_get(record, "sessions");
    if (sessions == NULL && options->record_count > 1) {
        sessions = json_array();
        if (json_object_set_new(record, "sessions", sessions) < 0) {
            r = crd_error_set(err, -ENOMEM, "out of memory");
            goto out;
        }
    }
    for (size_t i = 1; i < options->record_count; i++) {
        r = append_page(sessions, "--record", options->records[i], err);
        if (r < 0) {
            goto out;
        }
    }

    if (options->participant_count > 0) {
        participants = json_array();
        for (size_t i = 0; participants != NULL && i < options->participant_count; i++) {
            r = append_page(participants, "--participants", options->participants[i], err);
            if (r < 0) {
                goto out;
            }
        }
    }

    /* "s*" leaves out the member when its value is NULL. */
    body = json_pack("{s:O, s:s*}", "record", record, "tenant", options->tenant);
    if (body == NULL ||
        (participants != NULL && json_object_set(body, "participants", participants) < 0) ||
        (options->not_found_for_ms >= 0 &&
         json_object_set_new(body, "notFoundForMs", json_integer(options->not_found_for_ms)) <
             0)) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    *ret_body = body;
    body = NULL;

out:
    json_decref(body);
    json_decref(participants);
    json_decref(record);
    return r;
}

int fakegraph_publish(const struct fakegraph_publish_options *options, struct crd_error *err)
{
    json_t *body = NULL;
    json_t *response = NULL;
    long status = 0;

    int r = build_publish_body(options, &body, err);
    if (r == 0) {
        r = fakegraph_control_post(&options->control, "/_fakegraph/records", body, &status,
                                   &response, err);
    }
    if (r == 0 && status != 201) {
        r = control_failure(status, response, err);
    }
    if (r == 0) {
        const json_t *participants = json_object_get(response, "participants");
        char participant_text[32] = "no participants";
        if (json_is_integer(participants)) {
            snprintf(participant_text, sizeof(participant_text), "%lld participants",
                     (long long)json_integer_value(participants));
        }
        printf("publish: %s version %lld: %lld sessions, %s",
               json_string_value(json_object_get(response, "id")),
               (long long)json_integer_value(json_object_get(response, "version")),
               (long long)json_integer_value(json_object_get(response, "sessions")),
               participant_text);
        if (options->not_found_for_ms > 0) {
            printf(", not found for %ld ms", options->not_found_for_ms);
        }
        if (options->tenant != NULL) {
            printf(", tenant %s", json_string_value(json_object_get(response, "tenant")));
        }
        printf("\n");
        fflush(stdout);
    }
    json_decref(response);
    json_decref(body);
    return r;
}

/* ---- trigger ------------------------------------------------------------------------ */

int fakegraph_trigger(const struct fakegraph_trigger_options *options, long expect_status,
                      bool *ret_passed, struct crd_error *err)
{
    json_t *response = NULL;
    long status = 0;
    /* "s*" leaves out the members whose value is NULL. */
    json_t *body = json_pack("{s:s, s:s, s:I, s:b, s:s*, s:s*, s:s*, s:s*}", "callId",
                             options->call_id, "changeType", options->change_type, "repeat",
                             (json_int_t)options->repeat, "batch", options->batch,
                             "notificationUrl", options->notification_url, "clientState",
                             options->client_state, "subscriptionId", options->subscription,
                             "tenant", options->tenant);
    if (body == NULL) {
        return crd_error_set(err, -EINVAL, "building the notify request failed; check that "
                             "the values are valid UTF-8");
    }

    int r = fakegraph_control_post(&options->control, "/_fakegraph/notify", body, &status,
                                   &response, err);
    if (r == 0 && status != 200) {
        r = control_failure(status, response, err);
    }
    if (r == 0) {
        bool passed = true;
        size_t index;
        const json_t *value;
        json_array_foreach(json_object_get(response, "statuses"), index, value) {
            printf("trigger: HTTP %lld\n", (long long)json_integer_value(value));
            passed = passed && json_integer_value(value) == expect_status;
        }
        fflush(stdout);
        *ret_passed = passed;
    }
    json_decref(response);
    json_decref(body);
    return r;
}

/* ---- fault -------------------------------------------------------------------------- */

enum fault_option_id {
    FAULT_CONTROL,
    FAULT_CAFILE,
    FAULT_MATCH,
    FAULT_STATUS,
    FAULT_RETRY_AFTER,
    FAULT_COUNT,
    FAULT_DELAY_MS,
    FAULT_DROP,
    FAULT_TRUNCATE,
    FAULT_TENANT,
};

static const struct fakegraph_option_spec fault_specs[] = {
    {"--match", FAULT_MATCH, true},
    {"--status", FAULT_STATUS, true},
    {"--retry-after", FAULT_RETRY_AFTER, true},
    {"--count", FAULT_COUNT, true},
    {"--delay-ms", FAULT_DELAY_MS, true},
    {"--drop", FAULT_DROP, false},
    {"--truncate", FAULT_TRUNCATE, false},
    {"--tenant", FAULT_TENANT, true},
    {"--control", FAULT_CONTROL, true},
    {"--cafile", FAULT_CAFILE, true},
};

static int apply_fault_option(int id, const char *value, struct fakegraph_fault_options *options,
                              struct crd_error *err)
{
    unsigned long number = 0;
    int r = 0;
    switch (id) {
    case FAULT_CONTROL:
        options->control.base = value;
        break;
    case FAULT_CAFILE:
        options->control.cafile = value;
        break;
    case FAULT_MATCH:
        options->match = value;
        break;
    case FAULT_STATUS:
        r = fakegraph_parse_number("--status", value, 100, 599, &number, err);
        options->status = (unsigned)number;
        break;
    case FAULT_RETRY_AFTER:
        r = fakegraph_parse_number("--retry-after", value, 0, 86400, &number, err);
        options->retry_after_s = (long)number;
        break;
    case FAULT_COUNT:
        r = fakegraph_parse_number("--count", value, 1, 1000000, &number, err);
        options->count = (unsigned)number;
        break;
    case FAULT_DELAY_MS:
        r = fakegraph_parse_number("--delay-ms", value, 0, DELAY_MAX_MS, &number, err);
        options->delay_ms = (unsigned)number;
        break;
    case FAULT_DROP:
        options->drop = true;
        break;
    case FAULT_TENANT:
        options->tenant = value;
        break;
    default:
        options->truncate = true;
        break;
    }
    return r;
}

int fakegraph_parse_fault_options(int argc, char **argv, int first, bool with_control,
                                  struct fakegraph_fault_options *options,
                                  struct crd_error *err)
{
    struct fakegraph_control control = options->control;
    *options = (struct fakegraph_fault_options){
        .control = control,
        .retry_after_s = -1,
        .count = 1,
    };
    size_t spec_count = with_control ? ARRAY_SIZE(fault_specs) : ARRAY_SIZE(fault_specs) - 2;
    for (int i = first; i < argc;) {
        int id = 0;
        const char *value = "";
        int r = fakegraph_next_option(argc, argv, &i, "fault", fault_specs, spec_count, &id,
                                      &value, err);
        if (r == 0) {
            r = apply_fault_option(id, value, options, err);
        }
        if (r < 0) {
            return r;
        }
    }

    if (with_control && options->control.base == NULL) {
        return crd_error_set(err, -EINVAL, "fault requires --control");
    }
    if (options->match == NULL) {
        return crd_error_set(err, -EINVAL, "fault requires --match PREFIX, such as "
                             "/v1.0/communications/callRecords");
    }
    if (options->status == 0 && options->delay_ms == 0 && !options->drop && !options->truncate) {
        return crd_error_set(err, -EINVAL, "fault requires --status, --delay-ms, --drop or "
                             "--truncate");
    }
    return 0;
}

int fakegraph_fault(const struct fakegraph_fault_options *options, struct crd_error *err)
{
    json_t *response = NULL;
    long status = 0;
    json_t *body = json_pack("{s:s, s:I, s:I, s:b, s:b, s:s*}", "match", options->match, "count",
                             (json_int_t)options->count, "delayMs",
                             (json_int_t)options->delay_ms, "drop", options->drop, "truncate",
                             options->truncate, "tenant", options->tenant);
    if (body == NULL) {
        return crd_error_set(err, -EINVAL, "building the fault request failed");
    }
    if (options->status != 0) {
        (void)json_object_set_new(body, "status", json_integer(options->status));
    }
    if (options->retry_after_s >= 0) {
        (void)json_object_set_new(body, "retryAfter", json_integer(options->retry_after_s));
    }

    int r = fakegraph_control_post(&options->control, "/_fakegraph/faults", body, &status,
                                   &response, err);
    if (r == 0 && status != 201) {
        r = control_failure(status, response, err);
    }
    if (r == 0) {
        char *text = json_dumps(response, JSON_COMPACT);
        printf("fault: queued %s\n", text != NULL ? text : "(out of memory)");
        fflush(stdout);
        free(text);
    }
    json_decref(response);
    json_decref(body);
    return r;
}

/* ---- command lines ---------------------------------------------------------------- */

static int report_usage_error(const struct crd_error *err)
{
    fprintf(stderr, "fakegraph: %s\nRun 'fakegraph help' for usage.\n", err->message);
    return FAKEGRAPH_EXIT_ERROR;
}

static int report_failure(const char *command, const struct crd_error *err)
{
    fprintf(stderr, "fakegraph: %s: %s\n", command, err->message);
    return FAKEGRAPH_EXIT_ERROR;
}

enum publish_option_id {
    PUBLISH_CONTROL,
    PUBLISH_CAFILE,
    PUBLISH_RECORD,
    PUBLISH_PARTICIPANTS,
    PUBLISH_NOT_FOUND_FOR,
    PUBLISH_TENANT,
};

static const struct fakegraph_option_spec publish_specs[] = {
    {"--control", PUBLISH_CONTROL, true},
    {"--cafile", PUBLISH_CAFILE, true},
    {"--record", PUBLISH_RECORD, true},
    {"--participants", PUBLISH_PARTICIPANTS, true},
    {"--not-found-for", PUBLISH_NOT_FOUND_FOR, true},
    {"--tenant", PUBLISH_TENANT, true},
};

static int parse_publish_options(int argc, char **argv, struct fakegraph_publish_options *options,
                                 struct crd_error *err)
{
    for (int i = 2; i < argc;) {
        int id = 0;
        const char *value = "";
        unsigned long number = 0;
        int r = fakegraph_next_option(argc, argv, &i, "publish", publish_specs,
                                      ARRAY_SIZE(publish_specs), &id, &value, err);
        if (r < 0) {
            return r;
        }
        if (id == PUBLISH_CONTROL) {
            options->control.base = value;
        } else if (id == PUBLISH_CAFILE) {
            options->control.cafile = value;
        } else if (id == PUBLISH_RECORD) {
            options->records[options->record_count++] = value;
        } else if (id == PUBLISH_PARTICIPANTS) {
            options->participants[options->participant_count++] = value;
        } else if (id == PUBLISH_TENANT) {
            options->tenant = value;
        } else {
            r = fakegraph_parse_number("--not-found-for", value, 0, NOT_FOUND_FOR_MAX_MS,
                                       &number, err);
            options->not_found_for_ms = (long)number;
            if (r < 0) {
                return r;
            }
        }
    }
    if (options->control.base == NULL || options->record_count == 0) {
        return crd_error_set(err, -EINVAL, "publish requires --control and --record");
    }
    return 0;
}

int fakegraph_run_publish(int argc, char **argv)
{
    struct crd_error err = {0};
    /* Each option takes at least one argument, so argc bounds both lists. */
    struct fakegraph_publish_options options = {
        .records = calloc((size_t)argc, sizeof(char *)),
        .participants = calloc((size_t)argc, sizeof(char *)),
        .not_found_for_ms = -1,
    };
    int status = FAKEGRAPH_EXIT_PASSED;
    if (options.records == NULL || options.participants == NULL) {
        status = FAKEGRAPH_EXIT_ERROR;
    } else if (parse_publish_options(argc, argv, &options, &err) < 0) {
        status = report_usage_error(&err);
    } else if (fakegraph_publish(&options, &err) < 0) {
        status = report_failure("publish", &err);
    }
    free(options.records);
    free(options.participants);
    return status;
}

enum trigger_option_id {
    TRIGGER_CONTROL,
    TRIGGER_CAFILE,
    TRIGGER_CALL_ID,
    TRIGGER_CHANGE_TYPE,
    TRIGGER_REPEAT,
    TRIGGER_BATCH,
    TRIGGER_NOTIFICATION_URL,
    TRIGGER_CLIENT_STATE,
    TRIGGER_SUBSCRIPTION,
    TRIGGER_TENANT,
    TRIGGER_EXPECT,
};

static const struct fakegraph_option_spec trigger_specs[] = {
    {"--control", TRIGGER_CONTROL, true},
    {"--cafile", TRIGGER_CAFILE, true},
    {"--call-id", TRIGGER_CALL_ID, true},
    {"--change-type", TRIGGER_CHANGE_TYPE, true},
    {"--repeat", TRIGGER_REPEAT, true},
    {"--batch", TRIGGER_BATCH, false},
    {"--notification-url", TRIGGER_NOTIFICATION_URL, true},
    {"--client-state", TRIGGER_CLIENT_STATE, true},
    {"--subscription", TRIGGER_SUBSCRIPTION, true},
    {"--tenant", TRIGGER_TENANT, true},
    {"--expect", TRIGGER_EXPECT, true},
};

static int apply_trigger_option(int id, const char *value,
                                struct fakegraph_trigger_options *options, long *expect,
                                struct crd_error *err)
{
    unsigned long number = 0;
    int r = 0;
    const char **strings[] = {
        [TRIGGER_CONTROL] = &options->control.base,
        [TRIGGER_CAFILE] = &options->control.cafile,
        [TRIGGER_CALL_ID] = &options->call_id,
        [TRIGGER_CHANGE_TYPE] = &options->change_type,
        [TRIGGER_NOTIFICATION_URL] = &options->notification_url,
        [TRIGGER_CLIENT_STATE] = &options->client_state,
        [TRIGGER_SUBSCRIPTION] = &options->subscription,
        [TRIGGER_TENANT] = &options->tenant,
    };
    if (id == TRIGGER_REPEAT) {
        r = fakegraph_parse_number("--repeat", value, 1, REPEAT_MAX, &number, err);
        options->repeat = (unsigned)number;
    } else if (id == TRIGGER_EXPECT) {
        r = fakegraph_parse_number("--expect", value, 100, 599, &number, err);
        *expect = (long)number;
    } else if (id == TRIGGER_BATCH) {
        options->batch = true;
    } else if (id == TRIGGER_CHANGE_TYPE && strcmp(value, "created") != 0 &&
               strcmp(value, "updated") != 0) {
        r = crd_error_set(err, -EINVAL, "invalid --change-type '%s': expected created or "
                          "updated", value);
    } else {
        *strings[id] = value;
    }
    return r;
}

int fakegraph_run_trigger(int argc, char **argv)
{
    struct crd_error err = {0};
    struct fakegraph_trigger_options options = {.change_type = "created", .repeat = 1};
    long expect = 202;
    for (int i = 2; i < argc;) {
        int id = 0;
        const char *value = "";
        int r = fakegraph_next_option(argc, argv, &i, "trigger", trigger_specs,
                                      ARRAY_SIZE(trigger_specs), &id, &value, &err);
        if (r == 0) {
            r = apply_trigger_option(id, value, &options, &expect, &err);
        }
        if (r < 0) {
            return report_usage_error(&err);
        }
    }
    if (options.control.base == NULL || options.call_id == NULL) {
        crd_error_set(&err, -EINVAL, "trigger requires --control and --call-id");
        return report_usage_error(&err);
    }
    if (options.client_state != NULL && options.notification_url == NULL) {
        crd_error_set(&err, -EINVAL, "--client-state applies only with --notification-url; a "
                      "subscription sends its own clientState");
        return report_usage_error(&err);
    }

    bool passed = false;
    if (fakegraph_trigger(&options, expect, &passed, &err) < 0) {
        return report_failure("trigger", &err);
    }
    return passed ? FAKEGRAPH_EXIT_PASSED : FAKEGRAPH_EXIT_FAILED;
}

int fakegraph_run_fault(int argc, char **argv)
{
    struct crd_error err = {0};
    struct fakegraph_fault_options options = {0};
    if (fakegraph_parse_fault_options(argc, argv, 2, true, &options, &err) < 0) {
        return report_usage_error(&err);
    }
    if (fakegraph_fault(&options, &err) < 0) {
        return report_failure("fault", &err);
    }
    return FAKEGRAPH_EXIT_PASSED;
}
