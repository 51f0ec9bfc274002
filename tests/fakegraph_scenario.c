/* SPDX-License-Identifier: MIT */
/*
 * fakegraph scenario: runs a text file of steps against a running
 * "fakegraph serve", one step per line ('#' starts a comment):
 *
 *   publish FILE... [participants FILE...] [not-found-for MS] [tenant GUID]
 *   notify @FILE|CALL_ID created|updated [xN] [batch] [tenant GUID]
 *   fault --match PREFIX [--status N] [--retry-after S] [--count N] [--delay-ms M]
 *         [--drop] [--truncate] [--tenant GUID]
 *   pause MS
 *
 * FILE names a file in the fixtures directory, and @FILE stands for the id
 * of the record in it. "tenant GUID" names one of the server's tenants, as
 * the --tenant option of the publish, trigger and fault commands does. It
 * prints each step and its result, stops at the first step that fails, and
 * exits 1 when a notification got a status other than 202.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fakegraph_client.h"

#define LINE_MAX_LEN 4096
#define WORDS_MAX 64
#define PAUSE_MAX_MS 600000UL
#define REPEAT_MAX 1000UL
#define NOT_FOUND_FOR_MAX_MS 86400000UL

struct scenario_options {
    struct fakegraph_control control;
    const char *fixtures;
    const char *file;
    const char *notification_url;
    const char *client_state;
};

/* What a run of the steps found out. */
struct scenario_state {
    const struct scenario_options *options;
    unsigned line_number;
    bool notify_failed;          /* a notification got a status other than 202 */
};

/* Splits line in place at blanks into at most WORDS_MAX words; drops a '#' comment. */
static int split_words(char *line, char **words, int *ret_count, struct crd_error *err)
{
    char *comment = strchr(line, '#');
    if (comment != NULL) {
        *comment = '\0';
    }
    int count = 0;
    char *save = NULL;
    for (char *word = strtok_r(line, " \t\r\n", &save); word != NULL;
         word = strtok_r(NULL, " \t\r\n", &save)) {
        if (count == WORDS_MAX) {
            return crd_error_set(err, -E2BIG, "more than %d words", WORDS_MAX);
        }
        words[count++] = word;
    }
    *ret_count = count;
    return 0;
}

static char *fixture_path(const struct scenario_options *options, const char *name)
{
    char *path = NULL;
    if (name[0] == '/') {
        return strdup(name);
    }
    if (asprintf(&path, "%s/%s", options->fixtures, name) < 0) {
        return NULL;
    }
    return path;
}

static void free_paths(char **paths, int count)
{
    for (int i = 0; i < count; i++) {
        free(paths[i]);
    }
}

/* publish FILE... [participants FILE...] [not-found-for MS] [tenant GUID] */
static int run_publish(struct scenario_state *state, char **words, int count,
                       struct crd_error *err)
{
    char *records[WORDS_MAX];
    char *participants[WORDS_MAX];
    struct fakegraph_publish_options publish = {
        .control = state->options->control,
        .records = (const char **)records,
        .participants = (const char **)participants,
        .not_found_for_ms = -1,
    };
    bool in_participants = false;
    int r = 0;

    for (int i = 1; r == 0 && i < count; i++) {
        unsigned long number = 0;
        if (strcmp(words[i], "participants") == 0) {
            in_participants = true;
        } else if (strcmp(words[i], "not-found-for") == 0 && i + 1 < count) {
            r = fakegraph_parse_number("not-found-for", words[++i], 0, NOT_FOUND_FOR_MAX_MS,
                                       &number, err);
            publish.not_found_for_ms = (long)number;
        } else if (strcmp(words[i], "tenant") == 0 && i + 1 < count) {
            publish.tenant = words[++i];
        } else {
            char *path = fixture_path(state->options, words[i]);
            if (path == NULL) {
                r = crd_error_set(err, -ENOMEM, "out of memory");
            } else if (in_participants) {
                participants[publish.participant_count++] = path;
            } else {
                records[publish.record_count++] = path;
            }
        }
    }
    if (r == 0 && publish.record_count == 0) {
        r = crd_error_set(err, -EINVAL, "publish needs at least one record file");
    }
    if (r == 0) {
        r = fakegraph_publish(&publish, err);
    }
    free_paths(records, (int)publish.record_count);
    free_paths(participants, (int)publish.participant_count);
    return r;
}

/* Reads the "id" of the record in a fixture file, for "notify @FILE". */
static int read_record_id(const struct scenario_options *options, const char *name,
                          char **ret_id, struct crd_error *err)
{
    char *path = fixture_path(options, name);
    if (path == NULL) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    json_t *record = NULL;
    int r = fakegraph_read_json_file("notify @FILE", path, &record, err);
    if (r == 0) {
        const char *id = json_string_value(json_object_get(record, "id"));
        if (id == NULL) {
            r = crd_error_set(err, -EINVAL, "'%s' has no string \"id\"", path);
        } else if ((*ret_id = strdup(id)) == NULL) {
            r = crd_error_set(err, -ENOMEM, "out of memory");
        }
    }
    json_decref(record);
    free(path);
    return r;
}

/* notify @FILE|CALL_ID created|updated [xN] [batch] [tenant GUID] */
static int run_notify(struct scenario_state *state, char **words, int count,
                      struct crd_error *err)
{
    if (count < 3 || (strcmp(words[2], "created") != 0 && strcmp(words[2], "updated") != 0)) {
        return crd_error_set(err, -EINVAL, "expected: notify @FILE|CALL_ID created|updated "
                             "[xN] [batch] [tenant GUID]");
    }
    struct fakegraph_trigger_options trigger = {
        .control = state->options->control,
        .change_type = words[2],
        .repeat = 1,
        .notification_url = state->options->notification_url,
        .client_state = state->options->client_state,
    };
    for (int i = 3; i < count; i++) {
        unsigned long number = 0;
        if (strcmp(words[i], "batch") == 0) {
            trigger.batch = true;
        } else if (strcmp(words[i], "tenant") == 0 && i + 1 < count) {
            trigger.tenant = words[++i];
        } else if (words[i][0] == 'x' &&
                   fakegraph_parse_number("repeat count", words[i] + 1, 1, REPEAT_MAX, &number,
                                          err) == 0) {
            trigger.repeat = (unsigned)number;
        } else {
            return crd_error_set(err, -EINVAL, "unexpected '%s'; expected xN, batch or tenant "
                                 "GUID", words[i]);
        }
    }

    char *id = NULL;
    if (words[1][0] == '@') {
        int r = read_record_id(state->options, words[1] + 1, &id, err);
        if (r < 0) {
            return r;
        }
    }
    trigger.call_id = id != NULL ? id : words[1];
    bool passed = false;
    int r = fakegraph_trigger(&trigger, 202, &passed, err);
    if (r == 0 && !passed) {
        printf("scenario: line %u: a notification got a status other than 202\n",
               state->line_number);
        state->notify_failed = true;
    }
    free(id);
    return r;
}

/* A deliberate pause of the scenario's own timing, such as letting a record appear. */
static int run_pause(char **words, int count, struct crd_error *err)
{
    unsigned long ms = 0;
    if (count != 2) {
        return crd_error_set(err, -EINVAL, "expected: pause MS");
    }
    int r = fakegraph_parse_number("pause", words[1], 0, PAUSE_MAX_MS, &ms, err);
    if (r < 0) {
        return r;
    }
    struct timespec left = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&left, &left) < 0 && errno == EINTR) {
    }
    printf("pause: %lu ms\n", ms);
    fflush(stdout);
    return 0;
}

static int run_step(struct scenario_state *state, char **words, int count, struct crd_error *err)
{
    if (strcmp(words[0], "publish") == 0) {
        return run_publish(state, words, count, err);
    }
    if (strcmp(words[0], "notify") == 0) {
        return run_notify(state, words, count, err);
    }
    if (strcmp(words[0], "fault") == 0) {
        struct fakegraph_fault_options fault = {.control = state->options->control};
        int r = fakegraph_parse_fault_options(count, words, 1, false, &fault, err);
        return r < 0 ? r : fakegraph_fault(&fault, err);
    }
    if (strcmp(words[0], "pause") == 0) {
        return run_pause(words, count, err);
    }
    return crd_error_set(err, -EINVAL, "unknown step '%s'; expected publish, notify, fault or "
                         "pause", words[0]);
}

static int run_scenario(const struct scenario_options *options, bool *ret_passed,
                        struct crd_error *err)
{
    struct scenario_state state = {.options = options};
    FILE *file = fopen(options->file, "re");
    if (file == NULL) {
        return crd_error_set(err, -errno, "cannot open --file '%s': %s", options->file,
                             strerror(errno));
    }

    char line[LINE_MAX_LEN];
    int r = 0;
    while (r == 0 && fgets(line, sizeof(line), file) != NULL) {
        state.line_number++;
        size_t len = strlen(line);
        if (len == sizeof(line) - 1 && line[len - 1] != '\n') {
            r = crd_error_set(err, -E2BIG, "line %u is longer than %d characters",
                              state.line_number, LINE_MAX_LEN - 2);
            break;
        }
        line[strcspn(line, "\r\n")] = '\0';
        char shown[LINE_MAX_LEN];
        snprintf(shown, sizeof(shown), "%s", line);

        char *words[WORDS_MAX];
        int count = 0;
        r = split_words(line, words, &count, err);
        if (r == 0 && count > 0) {
            printf("step (line %u): %s\n", state.line_number, shown + strspn(shown, " \t"));
            fflush(stdout);
            r = run_step(&state, words, count, err);
        }
        if (r < 0) {
            (void)crd_error_prefix(err, "%s: line %u", options->file, state.line_number);
        }
    }
    fclose(file);

    if (r == 0) {
        printf("scenario: %s: %u lines, %s\n", options->file, state.line_number,
               state.notify_failed ? "some notifications got a status other than 202"
                                   : "every notification got 202");
        *ret_passed = !state.notify_failed;
    }
    return r;
}

enum scenario_option_id {
    SCENARIO_CONTROL,
    SCENARIO_CAFILE,
    SCENARIO_FIXTURES,
    SCENARIO_FILE,
    SCENARIO_NOTIFICATION_URL,
    SCENARIO_CLIENT_STATE,
};

static const struct fakegraph_option_spec scenario_specs[] = {
    {"--control", SCENARIO_CONTROL, true},
    {"--cafile", SCENARIO_CAFILE, true},
    {"--fixtures", SCENARIO_FIXTURES, true},
    {"--file", SCENARIO_FILE, true},
    {"--notification-url", SCENARIO_NOTIFICATION_URL, true},
    {"--client-state", SCENARIO_CLIENT_STATE, true},
};

static int parse_scenario_options(int argc, char **argv, struct scenario_options *options,
                                  struct crd_error *err)
{
    *options = (struct scenario_options){0};
    const char **targets[] = {
        [SCENARIO_CONTROL] = &options->control.base,
        [SCENARIO_CAFILE] = &options->control.cafile,
        [SCENARIO_FIXTURES] = &options->fixtures,
        [SCENARIO_FILE] = &options->file,
        [SCENARIO_NOTIFICATION_URL] = &options->notification_url,
        [SCENARIO_CLIENT_STATE] = &options->client_state,
    };
    for (int i = 2; i < argc;) {
        int id = 0;
        const char *value = "";
        int r = fakegraph_next_option(argc, argv, &i, "scenario", scenario_specs,
                                      sizeof(scenario_specs) / sizeof(scenario_specs[0]), &id,
                                      &value, err);
        if (r < 0) {
            return r;
        }
        *targets[id] = value;
    }
    if (options->control.base == NULL || options->fixtures == NULL || options->file == NULL) {
        return crd_error_set(err, -EINVAL, "scenario requires --control, --fixtures and --file");
    }
    if (options->client_state != NULL && options->notification_url == NULL) {
        return crd_error_set(err, -EINVAL, "--client-state applies only with "
                             "--notification-url");
    }
    return 0;
}

int fakegraph_run_scenario(int argc, char **argv)
{
    struct crd_error err = {0};
    struct scenario_options options;
    if (parse_scenario_options(argc, argv, &options, &err) < 0) {
        fprintf(stderr, "fakegraph: %s\nRun 'fakegraph help' for usage.\n", err.message);
        return FAKEGRAPH_EXIT_ERROR;
    }
    bool passed = false;
    if (run_scenario(&options, &passed, &err) < 0) {
        fprintf(stderr, "fakegraph: scenario: %s\n", err.message);
        return FAKEGRAPH_EXIT_ERROR;
    }
    return passed ? FAKEGRAPH_EXIT_PASSED : FAKEGRAPH_EXIT_FAILED;
}
