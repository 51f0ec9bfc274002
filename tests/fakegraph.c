/* SPDX-License-Identifier: MIT */
/*
 * fakegraph: emulates Microsoft Graph for the tests and the demo. This file
 * parses the command line of validate and notify and dispatches the other
 * commands. fakegraph_validate.c and fakegraph_notify.c build the requests,
 * and fakegraph_http.c sends them. fakegraph_serve.c runs the server,
 * fakegraph_client.c and fakegraph_scenario.c drive it.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "fakegraph.h"
#include "util.h"

/* The ids of the committed notification fixtures, so generated items match them. */
#define DEFAULT_TENANT "2a37c3b7-f073-59a1-b249-42c4e33881c2"
#define DEFAULT_SUBSCRIPTION FAKEGRAPH_FIXTURE_SUBSCRIPTION
#define DEFAULT_CLIENT_STATE "cr-4b8e1f0c9d2a47e6b3c5a7d9e1f20384"

#define GENERATE_MAX 10000
#define REPEAT_MAX 100000

enum option_id {
    OPTION_URL,
    OPTION_TOKEN,
    OPTION_CAFILE,
    OPTION_FILE,
    OPTION_GENERATE,
    OPTION_PRINT_IDS,
    OPTION_TENANT,
    OPTION_SUBSCRIPTION,
    OPTION_CLIENT_STATE,
    OPTION_EXPECT,
    OPTION_REPEAT,
    OPTION_NEW_CONNECTION,
};

static const struct fakegraph_option_spec validate_specs[] = {
    {"--url", OPTION_URL, true},
    {"--token", OPTION_TOKEN, true},
    {"--cafile", OPTION_CAFILE, true},
};

static const struct fakegraph_option_spec notify_specs[] = {
    {"--url", OPTION_URL, true},
    {"--cafile", OPTION_CAFILE, true},
    {"--file", OPTION_FILE, true},
    {"--generate", OPTION_GENERATE, true},
    {"--print-ids", OPTION_PRINT_IDS, false},
    {"--tenant", OPTION_TENANT, true},
    {"--subscription", OPTION_SUBSCRIPTION, true},
    {"--client-state", OPTION_CLIENT_STATE, true},
    {"--expect", OPTION_EXPECT, true},
    {"--repeat", OPTION_REPEAT, true},
    {"--new-connection", OPTION_NEW_CONNECTION, false},
};

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static void print_usage(FILE *stream)
{
    fputs("Usage: fakegraph COMMAND [OPTION...]\n"
          "Emulates Microsoft Graph on loopback: sends requests as Graph does to a callrecd\n"
          "listener, and serves tokens, call records and subscriptions as Graph does.\n"
          "\n"
          "fakegraph validate --url URL --token TOKEN [--cafile FILE]\n"
          "  Sends the subscription validation handshake: a POST to\n"
          "  URL?validationToken=TOKEN (percent-encoded) with an empty text/plain body.\n"
          "  Passes when the response is 200, text/plain, and its body is TOKEN exactly.\n"
          "\n"
          "fakegraph notify --url URL (--file FILE | --generate N) [OPTION...]\n"
          "  POSTs a changeNotificationCollection as application/json.\n"
          "  --file FILE           send the bytes of FILE unchanged\n"
          "  --generate N          send N \"updated\" items for random call ids (1 to 10000)\n"
          "  --print-ids           with --generate: print each call id on its own line first\n"
          "  --tenant GUID         tenantId of generated items\n"
          "                        (default " DEFAULT_TENANT ")\n"
          "  --subscription GUID   subscriptionId of generated items\n"
          "                        (default " DEFAULT_SUBSCRIPTION ")\n"
          "  --client-state TEXT   clientState of generated items\n"
          "                        (default " DEFAULT_CLIENT_STATE ")\n"
          "  --expect STATUS       HTTP status every response must have (default 202)\n"
          "  --repeat K            send the body K times over one connection (default 1)\n"
          "  --new-connection      open a new connection for each request\n"
          "  Prints \"notify: HTTP <status>\" for each response.\n"
          "\n"
          "fakegraph serve --listen 127.0.0.1:PORT --cert FILE --key FILE --cafile FILE\n"
          "                --tenant GUID [--tenant GUID...] --client-id GUID\n"
          "                --client-secret-file FILE\n"
          "                [--client-certificate FILE] [--token-lifetime SECONDS]\n"
          "                [--min-lifetime SECONDS] [--ready-file FILE] [--log FILE]\n"
          "                [--quota-tenant N/S] [--quota-record N/S]\n"
          "  Serves HTTPS on PORT (0: any free port) until SIGTERM or SIGINT, as both\n"
          "  login.microsoftonline.com and graph.microsoft.com; the base URL is\n"
          "  https://127.0.0.1:PORT ([::1] and localhost also work). Endpoints:\n"
          "    POST /{tenant}/oauth2/v2.0/token         client-credentials grant\n"
          "    GET  /v1.0/communications/callRecords?$filter=startDateTime ge X\n"
          "    GET  /v1.0/communications/callRecords/{id}[/sessions|/participants_v2]\n"
          "    POST, GET /v1.0/subscriptions; GET, PATCH, DELETE /v1.0/subscriptions/{id}\n"
          "    /_fakegraph/records, notify, faults, requests, request-counts,\n"
          "      subscriptions, subscriptions/remove, reset    control API, no token\n"
          "  --tenant GUID         a tenant to serve; repeat it for up to 8 tenants of one\n"
          "                        multi-tenant app. Each accepts the same client id and\n"
          "                        credential at /GUID/oauth2/v2.0/token, and its tokens\n"
          "                        see only its records, subscriptions and quota windows.\n"
          "                        The first is the default tenant of control requests\n"
          "                        that name none\n"
          "  --cafile FILE         CA trusted for the validation handshakes and notifications\n"
          "  --client-certificate FILE  PEM certificate that client assertions must be\n"
          "                        signed for (PS256 with x5t#S256, or RS256 with x5t)\n"
          "  --token-lifetime S    expires_in of issued tokens, 1 to 86400 (default 3599)\n"
          "  --min-lifetime S      subscription expiries sooner than S seconds ahead are\n"
          "                        raised to S, 1 to 2700 (default 2700, Graph's 45 min)\n"
          "  --ready-file FILE     written with \"PORT\\n\" once the server accepts requests\n"
          "  --log FILE            one line per request (default: stderr); no secrets\n"
          "  --quota-tenant N/S    answer 429 with Retry-After beyond N call-record requests\n"
          "                        of a tenant in any S seconds (Graph: 1500/20 per app and\n"
          "                        tenant)\n"
          "  --quota-record N/S    the same per call record of a tenant (Graph: 40/20)\n"
          "\n"
          "fakegraph publish --control BASE --record FILE [--record FILE...]\n"
          "                  [--participants FILE...] [--not-found-for MS] [--tenant GUID]\n"
          "                  [--cafile FILE]\n"
          "  Publishes a record: the first --record file is the record, later ones are\n"
          "  session pages whose \"value\" arrays are appended to \"sessions\". The\n"
          "  --participants pages' \"value\" arrays form participants_v2. With\n"
          "  --not-found-for, GET answers 404 for the first MS milliseconds. --tenant\n"
          "  publishes it in that tenant (default: the first --tenant of serve).\n"
          "\n"
          "fakegraph trigger --control BASE --call-id ID [--change-type created|updated]\n"
          "                  [--repeat N] [--batch] [--notification-url URL --client-state S]\n"
          "                  [--subscription GUID] [--tenant GUID] [--expect STATUS]\n"
          "                  [--cafile FILE]\n"
          "  Makes the server send change notifications (default: created) to its\n"
          "  subscriptions, or to URL with clientState S. --repeat N sends N POSTs, or N\n"
          "  items in one POST with --batch. Prints \"trigger: HTTP <status>\" per POST.\n"
          "  Only one tenant's subscriptions receive them: --tenant, else the tenant the\n"
          "  record was published in, else the default tenant; each item's tenantId is its\n"
          "  subscription's tenant. With --notification-url, --tenant sets the tenantId.\n"
          "\n"
          "fakegraph fault --control BASE --match PREFIX [--status N] [--retry-after S]\n"
          "                [--count N] [--delay-ms M] [--drop] [--truncate] [--tenant GUID]\n"
          "                [--cafile FILE]\n"
          "  Queues a fault for the next N (default 1) requests whose path starts with\n"
          "  PREFIX: a status with a Graph error body (and Retry-After: S), a delay of M ms,\n"
          "  a closed connection without a response, or half of the response body. With\n"
          "  --tenant, only requests of that tenant count: token requests for /GUID/... and\n"
          "  Graph requests with its tokens.\n"
          "\n"
          "fakegraph scenario --control BASE --fixtures DIR --file SCENARIO\n"
          "                   [--notification-url URL --client-state S] [--cafile FILE]\n"
          "  Runs the steps of SCENARIO, one per line ('#' starts a comment):\n"
          "    publish FILE... [participants FILE...] [not-found-for MS] [tenant GUID]\n"
          "    notify @FILE|CALL_ID created|updated [xN] [batch] [tenant GUID]\n"
          "                      (@FILE: the id of the record in FILE)\n"
          "    fault OPTION...   (the options of the fault command)\n"
          "    pause MS\n"
          "  FILE names a file in DIR. Exits 1 when a notification did not get 202.\n"
          "\n"
          "fakegraph help\n"
          "  Prints this text.\n"
          "\n"
          "Options of the client commands:\n"
          "  --url URL             listener URL; its host must be 127.0.0.1, [::1] or localhost\n"
          "  --control BASE        the base URL of fakegraph serve, such as\n"
          "                        https://127.0.0.1:8444; also loopback only\n"
          "  --cafile FILE         trust only this CA (PEM) for https; default: system store\n"
          "Time limits: 5 s to connect, 15 s per request. Proxy variables are ignored.\n"
          "Exit status: 0 when every check passed, 1 when a response failed a check,\n"
          "2 on a usage error, a refused URL or a transport failure.\n",
          stream);
}

static int parse_guid(const char *option, const char *value, const char **ret_value,
                      struct crd_error *err)
{
    if (!crd_guid_is_valid(value, strlen(value))) {
        return crd_error_set(err, -EINVAL, "invalid %s '%s': expected a GUID such as %s", option,
                             value, DEFAULT_TENANT);
    }
    *ret_value = value;
    return 0;
}

static int parse_validate_options(int argc, char **argv,
                                  struct fakegraph_validate_options *options,
                                  struct crd_error *err)
{
    *options = (struct fakegraph_validate_options){0};

    for (int i = 2; i < argc;) {
        int id = OPTION_URL;
        const char *value = "";
        int r = fakegraph_next_option(argc, argv, &i, "validate", validate_specs,
                                      ARRAY_SIZE(validate_specs), &id, &value, err);
        if (r < 0) {
            return r;
        }
        if (id == OPTION_URL) {
            options->url = value;
        } else if (id == OPTION_TOKEN) {
            options->token = value;
        } else {
            options->cafile = value;
        }
    }

    if (options->url == NULL || options->token == NULL) {
        return crd_error_set(err, -EINVAL, "validate requires --url and --token");
    }
    return 0;
}

/* Stores one parsed notify option in options. */
static int apply_notify_option(enum option_id id, const char *value,
                               struct fakegraph_notify_options *options, struct crd_error *err)
{
    unsigned long number = 0;
    int r = 0;

    switch (id) {
    case OPTION_URL:
        options->url = value;
        break;
    case OPTION_CAFILE:
        options->cafile = value;
        break;
    case OPTION_FILE:
        options->file = value;
        break;
    case OPTION_GENERATE:
        r = fakegraph_parse_number("--generate", value, 1, GENERATE_MAX, &number, err);
        options->generate_count = (unsigned)number;
        break;
    case OPTION_PRINT_IDS:
        options->print_ids = true;
        break;
    case OPTION_TENANT:
        r = parse_guid("--tenant", value, &options->tenant, err);
        break;
    case OPTION_SUBSCRIPTION:
        r = parse_guid("--subscription", value, &options->subscription, err);
        break;
    case OPTION_CLIENT_STATE:
        options->client_state = value;
        break;
    case OPTION_EXPECT:
        r = fakegraph_parse_number("--expect", value, 100, 599, &number, err);
        options->expect_status = (long)number;
        break;
    case OPTION_REPEAT:
        r = fakegraph_parse_number("--repeat", value, 1, REPEAT_MAX, &number, err);
        options->repeat = (unsigned)number;
        break;
    case OPTION_NEW_CONNECTION:
        options->new_connection = true;
        break;
    default:
        r = crd_error_set(err, -EINVAL, "option is not valid for notify");
        break;
    }
    return r;
}

static int parse_notify_options(int argc, char **argv, struct fakegraph_notify_options *options,
                                struct crd_error *err)
{
    *options = (struct fakegraph_notify_options){
        .expect_status = 202,
        .repeat = 1,
    };
    bool item_option_seen = false;

    for (int i = 2; i < argc;) {
        int id = OPTION_URL;
        const char *value = "";
        int r = fakegraph_next_option(argc, argv, &i, "notify", notify_specs,
                                      ARRAY_SIZE(notify_specs), &id, &value, err);
        if (r < 0) {
            return r;
        }
        r = apply_notify_option(id, value, options, err);
        if (r < 0) {
            return r;
        }
        if (id == OPTION_PRINT_IDS || id == OPTION_TENANT || id == OPTION_SUBSCRIPTION ||
            id == OPTION_CLIENT_STATE) {
            item_option_seen = true;
        }
    }

    if (options->url == NULL) {
        return crd_error_set(err, -EINVAL, "notify requires --url");
    }
    if (options->file != NULL && options->generate_count > 0) {
        return crd_error_set(err, -EINVAL, "--file and --generate cannot be combined; give one");
    }
    if (options->file == NULL && options->generate_count == 0) {
        return crd_error_set(err, -EINVAL, "notify requires --file or --generate");
    }
    if (options->file != NULL && item_option_seen) {
        return crd_error_set(err, -EINVAL, "--print-ids, --tenant, --subscription and "
                             "--client-state apply only to --generate; edit the file instead");
    }

    if (options->tenant == NULL) {
        options->tenant = DEFAULT_TENANT;
    }
    if (options->subscription == NULL) {
        options->subscription = DEFAULT_SUBSCRIPTION;
    }
    if (options->client_state == NULL) {
        options->client_state = DEFAULT_CLIENT_STATE;
    }
    return 0;
}

static int report_usage_error(const struct crd_error *err)
{
    fprintf(stderr, "fakegraph: %s\nRun 'fakegraph help' for usage.\n", err->message);
    return FAKEGRAPH_EXIT_ERROR;
}

static int report_outcome(int r, bool passed, const struct crd_error *err)
{
    if (r < 0) {
        fprintf(stderr, "fakegraph: %s\n", err->message);
        return FAKEGRAPH_EXIT_ERROR;
    }
    return passed ? FAKEGRAPH_EXIT_PASSED : FAKEGRAPH_EXIT_FAILED;
}

static int run_validate(int argc, char **argv)
{
    struct crd_error err = {0};
    struct fakegraph_validate_options options;
    if (parse_validate_options(argc, argv, &options, &err) < 0) {
        return report_usage_error(&err);
    }

    bool passed = false;
    int r = fakegraph_validate(&options, &passed, &err);
    return report_outcome(r, passed, &err);
}

static int run_notify(int argc, char **argv)
{
    struct crd_error err = {0};
    struct fakegraph_notify_options options;
    if (parse_notify_options(argc, argv, &options, &err) < 0) {
        return report_usage_error(&err);
    }

    bool passed = false;
    int r = fakegraph_notify(&options, &passed, &err);
    return report_outcome(r, passed, &err);
}

int main(int argc, char **argv)
{
    CURLcode code = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (code != CURLE_OK) {
        fprintf(stderr, "fakegraph: initializing libcurl failed: %s\n", curl_easy_strerror(code));
        return FAKEGRAPH_EXIT_ERROR;
    }

    int status = FAKEGRAPH_EXIT_ERROR;
    const char *command = argc > 1 ? argv[1] : NULL;
    if (command == NULL) {
        fprintf(stderr, "fakegraph: missing command\n");
        print_usage(stderr);
    } else if (strcmp(command, "validate") == 0) {
        status = run_validate(argc, argv);
    } else if (strcmp(command, "notify") == 0) {
        status = run_notify(argc, argv);
    } else if (strcmp(command, "serve") == 0) {
        status = fakegraph_run_serve(argc, argv);
    } else if (strcmp(command, "publish") == 0) {
        status = fakegraph_run_publish(argc, argv);
    } else if (strcmp(command, "trigger") == 0) {
        status = fakegraph_run_trigger(argc, argv);
    } else if (strcmp(command, "fault") == 0) {
        status = fakegraph_run_fault(argc, argv);
    } else if (strcmp(command, "scenario") == 0) {
        status = fakegraph_run_scenario(argc, argv);
    } else if (strcmp(command, "help") == 0 || strcmp(command, "--help") == 0 ||
               strcmp(command, "-h") == 0) {
        print_usage(stdout);
        status = FAKEGRAPH_EXIT_PASSED;
    } else {
        fprintf(stderr, "fakegraph: unknown command '%s'; expected validate, notify, serve, "
                "publish, trigger, fault, scenario or help\n"
                "Run 'fakegraph help' for usage.\n", command);
    }

    curl_global_cleanup();
    return status;
}
