/* SPDX-License-Identifier: MIT */
/*
 * Reading call records through the Graph client: one complete record with
 * every sessions and participants_v2 page, collections followed through
 * @odata.nextLink, and the list of call records since a time.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "graph_internal.h"
#include "util.h"

/* Pages per call (record, session pages and participant pages together): a runaway guard. */
#define GRAPH_MAX_PAGES 1000

#define GRAPH_CALL_RECORDS_PATH "/v1.0/communications/callRecords/"
/* $expand=sessions($expand=segments), percent-encoded as the Graph SDKs send it. */
#define GRAPH_EXPAND_QUERY "?%24expand=sessions%28%24expand%3Dsegments%29"
#define GRAPH_SOURCE_KEY "participants_v2@callrecd.source"

/* One GET of a page or record, counted against GRAPH_MAX_PAGES. */
static int fetch_get(struct graph_fetch *f, const char *url, const char *what, json_t **ret_json,
                     struct crd_error *err)
{
    if (f->pages >= GRAPH_MAX_PAGES) {
        return crd_error_set(err, -EPROTO, "%s: more than %d pages; giving up", what,
                             GRAPH_MAX_PAGES);
    }
    f->pages++;

    long status = 0;
    json_t *json = NULL;
    int r = crd_graph_send(f, "GET", url, NULL, what, &status, &json, err);
    if (r < 0) {
        return r;
    }
    if (json == NULL) {
        return crd_error_set(err, -EPROTO, "%s: HTTP %ld without a body", what, status);
    }
    *ret_json = json;
    return 0;
}

static int fetch_remember_url(struct graph_fetch *f, const char *url, struct crd_error *err)
{
    if (f->visited_count == f->visited_capacity) {
        size_t capacity = f->visited_capacity == 0 ? 8 : 2 * f->visited_capacity;
        char **visited = realloc(f->visited, capacity * sizeof(*visited));
        if (visited == NULL) {
            return crd_error_set(err, -ENOMEM, "out of memory");
        }
        f->visited = visited;
        f->visited_capacity = capacity;
    }
    f->visited[f->visited_count] = strdup(url);
    if (f->visited[f->visited_count] == NULL) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    f->visited_count++;
    return 0;
}

/* A next link may be followed only to the Graph host, and only once. */
static int fetch_check_link(struct graph_fetch *f, const char *link, const char *what,
                            struct crd_error *err)
{
    char described[160];
    snprintf(described, sizeof(described), "%s: next link", what);
    int r = crd_graph_check_host(f->graph, link, described, err);
    if (r < 0) {
        return r;
    }

    for (size_t i = 0; i < f->visited_count; i++) {
        if (strcmp(f->visited[i], link) == 0) {
            return crd_error_set(err, -EPROTO,
                                 "%s: next link '%.160s' was followed before; not following it "
                                 "again",
                                 what, link);
        }
    }
    return fetch_remember_url(f, link, err);
}

/* An optional next link member: a string, or absent or null. Sets *ret_link to a copy or NULL. */
static int fetch_take_link(json_t *object, const char *key, const char *what, char **ret_link,
                           struct crd_error *err)
{
    const json_t *value = json_object_get(object, key);
    *ret_link = NULL;
    if (value == NULL || json_is_null(value)) {
        return 0;
    }
    if (!json_is_string(value)) {
        return crd_error_set(err, -EPROTO, "%s: %s is not a string", what, key);
    }
    *ret_link = strdup(json_string_value(value));
    if (*ret_link == NULL) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    (void)json_object_del(object, key);
    return 0;
}

/*
 * GETs collection pages starting at url, appending each page's "value"
 * elements to items, until a page has no @odata.nextLink. When url is
 * itself a next link it is checked like the later ones.
 */
static int fetch_collection(struct graph_fetch *f, const char *url, bool url_is_link,
                            const char *what, json_t *items, struct crd_error *err)
{
    int r = 0;
    char *link = strdup(url);
    json_t *page = NULL;
    if (link == NULL) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }

    for (bool checked = !url_is_link; link != NULL; checked = false) {
        if (!checked) {
            r = fetch_check_link(f, link, what, err);
            if (r < 0) {
                goto out;
            }
        }
        r = fetch_get(f, link, what, &page, err);
        if (r < 0) {
            goto out;
        }
        json_t *value = json_object_get(page, "value");
        if (!json_is_array(value)) {
            r = crd_error_set(err, -EPROTO, "%s: a page without a \"value\" array", what);
            goto out;
        }
        if (json_array_extend(items, value) < 0) {
            r = crd_error_set(err, -ENOMEM, "out of memory");
            goto out;
        }
        free(link);
        r = fetch_take_link(page, "@odata.nextLink", what, &link, err);
        if (r < 0) {
            goto out;
        }
        json_decref(page);
        page = NULL;
    }

out:
    json_decref(page);
    free(link);
    return r;
}

/* ---- participants from sessions --------------------------------------------------------- */

static int participants_add_endpoint(const json_t *endpoint, json_t *seen, json_t *participants)
{
    const json_t *identity = json_object_get(endpoint, "associatedIdentity");
    const char *id = json_string_value(json_object_get(identity, "id"));
    if (id == NULL || id[0] == '\0') {
        return 0; /* a service endpoint, or an identity Graph did not fill in */
    }

    /* Ids are GUIDs (any case) or phone numbers: compare them case-insensitively. */
    char key[256];
    size_t len = strlen(id) < sizeof(key) - 1 ? strlen(id) : sizeof(key) - 1;
    for (size_t i = 0; i < len; i++) {
        key[i] = (char)(id[i] >= 'A' && id[i] <= 'Z' ? id[i] - 'A' + 'a' : id[i]);
    }
    key[len] = '\0';
    if (json_object_get(seen, key) != NULL) {
        return 0;
    }

    const json_t *name = json_object_get(identity, "displayName");
    const json_t *tenant = json_object_get(identity, "tenantId");
    json_t *participant =
        json_pack("{s:s, s:{s:{s:s, s:O, s:O}}}", "id", id, "identity", "user", "id", id,
                  "displayName", json_is_string(name) ? (json_t *)name : json_null(), "tenantId",
                  json_is_string(tenant) ? (json_t *)tenant : json_null());
    if (participant == NULL || json_array_append_new(participants, participant) < 0 ||
        json_object_set_new(seen, key, json_true()) < 0) {
        return -ENOMEM;
    }
    return 0;
}

/*
 * Graph's advice where participants_v2 fails: for peer-to-peer calls both
 * ends of every session, for meetings (groupCall) the callers only. Records
 * of type unknown (PSTN) are two-party calls and are treated like
 * peer-to-peer ones.
 */
static int participants_from_sessions(const json_t *record, json_t **ret_participants,
                                      struct crd_error *err)
{
    const char *type = json_string_value(json_object_get(record, "type"));
    bool callers_only = type != NULL && strcmp(type, "groupCall") == 0;
    json_t *participants = json_array();
    json_t *seen = json_object();
    int r = 0;
    if (participants == NULL || seen == NULL) {
        r = -ENOMEM;
        goto out;
    }

    size_t i;
    const json_t *session;
    json_array_foreach (json_object_get(record, "sessions"), i, session) {
        r = participants_add_endpoint(json_object_get(session, "caller"), seen, participants);
        if (r == 0 && !callers_only) {
            r = participants_add_endpoint(json_object_get(session, "callee"), seen, participants);
        }
        if (r < 0) {
            goto out;
        }
    }

    *ret_participants = participants;
    participants = NULL;
out:
    json_decref(participants);
    json_decref(seen);
    return r < 0 ? crd_error_set(err, r, "out of memory") : 0;
}

/* ---- the whole record ---------------------------------------------------------------------- */

static int fetch_validate_record(const json_t *record, const char *call_id, struct crd_error *err)
{
    const char *id = json_string_value(json_object_get(record, "id"));
    if (id == NULL) {
        return crd_error_set(err, -EPROTO, "call record '%s': the response has no string \"id\"",
                             call_id);
    }
    if (strcasecmp(id, call_id) != 0) {
        char shown[64];
        crd_http_sanitize(shown, sizeof(shown), id);
        return crd_error_set(err, -EPROTO, "call record '%s': the response is for id '%s'", call_id,
                             shown);
    }
    if (!json_is_integer(json_object_get(record, "version"))) {
        return crd_error_set(err, -EPROTO,
                             "call record '%s': the response has no integer \"version\"", call_id);
    }
    return 0;
}

/* Follows sessions@odata.nextLink, appending every page to the record's "sessions". */
static int fetch_sessions(struct graph_fetch *f, json_t *record, struct crd_error *err)
{
    char what[96];
    snprintf(what, sizeof(what), "sessions of call record '%s'", f->call_id);

    json_t *sessions = json_object_get(record, "sessions");
    if (sessions == NULL || json_is_null(sessions)) {
        sessions = json_array();
        if (sessions == NULL || json_object_set_new(record, "sessions", sessions) < 0) {
            return crd_error_set(err, -ENOMEM, "out of memory");
        }
    } else if (!json_is_array(sessions)) {
        return crd_error_set(err, -EPROTO, "%s: \"sessions\" is not an array", what);
    }

    char *link = NULL;
    int r = fetch_take_link(record, "sessions@odata.nextLink", what, &link, err);
    if (r == 0 && link != NULL) {
        r = fetch_collection(f, link, true, what, sessions, err);
    }
    free(link);
    return r;
}

/* Fills "participants_v2" from its own pages, or from the sessions where Graph has none. */
static int fetch_participants(struct graph_fetch *f, json_t *record, struct crd_error *err)
{
    int r = 0;
    char *url = NULL;
    char what[96];
    snprintf(what, sizeof(what), "participants_v2 of call record '%s'", f->call_id);
    const char *source = "participants_v2";

    json_t *participants = json_array();
    if (participants == NULL || asprintf(&url, "%s" GRAPH_CALL_RECORDS_PATH "%s/participants_v2",
                                         f->graph->graph_url, f->call_id) < 0) {
        url = NULL;
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    r = fetch_remember_url(f, url, err);
    if (r < 0) {
        goto out;
    }

    r = fetch_collection(f, url, false, what, participants, err);
    long status = f->failure->http_status;
    bool unavailable = r < 0 && (r == -ENOENT || r == -EACCES || r == -EINVAL) &&
                       (status == 400 || status == 403 || status == 404);
    /* Every call has a participant: an empty list is the known issue of missing participants. */
    bool empty = r == 0 && json_array_size(participants) == 0;
    if (unavailable || empty) {
        json_t *built = NULL;
        int built_r = participants_from_sessions(record, &built, err);
        if (built_r < 0) {
            r = built_r;
            goto out;
        }
        if (unavailable || json_array_size(built) > 0) {
            crd_log_debug(CRD_LOG_GRAPH, &f->ids,
                          "%s: %s; built %zu participants from the sessions", what,
                          unavailable ? err->message : "empty", json_array_size(built));
            json_decref(participants);
            participants = built;
            source = "sessions";
            r = 0;
        } else {
            json_decref(built);
        }
    }
    if (r < 0) {
        goto out;
    }

    (void)json_object_del(record, "participants_v2@odata.nextLink");
    if (json_object_set(record, "participants_v2", participants) < 0 ||
        json_object_set_new(record, GRAPH_SOURCE_KEY, json_string(source)) < 0) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }

out:
    json_decref(participants);
    free(url);
    return r;
}

int crd_graph_fetch_call_record(struct crd_graph_session *session, const char *call_id,
                                json_t **ret_record, struct crd_graph_failure *failure,
                                struct crd_error *err)
{
    int r = 0;
    char *url = NULL;
    json_t *record = NULL;
    struct crd_graph_failure local_failure;
    struct crd_error local_err = {0};
    if (err == NULL) {
        /* The retry logic reads the last attempt's message back. */
        err = &local_err;
    }
    if (failure == NULL) {
        failure = &local_failure;
    }
    memset(failure, 0, sizeof(*failure));

    struct graph_fetch f = {
        .session = session,
        .graph = session->graph,
        .call_id = call_id,
        .ids = {.call_id = call_id},
        .failure = failure,
        .not_found_hint = " (not generated yet, or past the 30-day retention)",
        .budget = GRAPH_BUDGET_RECORD,
    };

    if (call_id == NULL || !crd_guid_is_valid(call_id, strlen(call_id))) {
        char shown[48];
        crd_http_sanitize(shown, sizeof(shown), call_id);
        r = crd_error_set(err, -EINVAL, "call record id '%s' is not a GUID", shown);
        goto out;
    }
    if (atomic_load(&session->graph->cancelled)) {
        r = crd_error_set(err, -ECANCELED, "call record '%s': cancelled", call_id);
        goto out;
    }

    if (asprintf(&url, "%s%s%s%s", session->graph->graph_url, GRAPH_CALL_RECORDS_PATH, call_id,
                 GRAPH_EXPAND_QUERY) < 0) {
        url = NULL;
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    r = fetch_remember_url(&f, url, err);
    if (r < 0) {
        goto out;
    }

    char what[64];
    snprintf(what, sizeof(what), "call record '%s'", call_id);
    r = fetch_get(&f, url, what, &record, err);
    if (r < 0) {
        goto out;
    }
    r = fetch_validate_record(record, call_id, err);
    if (r < 0) {
        goto out;
    }
    r = fetch_sessions(&f, record, err);
    if (r < 0) {
        goto out;
    }
    r = fetch_participants(&f, record, err);
    if (r < 0) {
        goto out;
    }

    /* Success: keep only the request count, so no stale failure is read as this fetch's. */
    unsigned attempts = failure->attempts;
    memset(failure, 0, sizeof(*failure));
    failure->attempts = attempts;
    *ret_record = record;
    record = NULL;
out:
    crd_graph_fetch_clear(&f);
    free(url);
    json_decref(record);
    return r;
}

/* ---- listings ------------------------------------------------------------------------------ */

/* crd_graph_list() with the request budget its pages use. */
static int list_collection(struct crd_graph_session *session, const char *url_or_path,
                           enum graph_budget budget, crd_graph_item_fn on_item, void *context,
                           struct crd_graph_failure *failure, struct crd_error *err)
{
    struct crd_graph *graph = session->graph;
    struct crd_graph_failure local_failure;
    struct crd_error local_err = {0};
    char *link = NULL;
    json_t *page = NULL;
    int r = 0;
    if (err == NULL) {
        err = &local_err;
    }
    if (failure == NULL) {
        failure = &local_failure;
    }
    memset(failure, 0, sizeof(*failure));

    char what[192];
    snprintf(what, sizeof(what), "list %.160s", url_or_path);
    struct graph_fetch f = {
        .session = session, .graph = graph, .failure = failure, .budget = budget};

    if (atomic_load(&graph->cancelled)) {
        r = crd_error_set(err, -ECANCELED, "%s: cancelled", what);
        goto out;
    }
    if (url_or_path[0] == '/') {
        if (asprintf(&link, "%s%s", graph->graph_url, url_or_path) < 0) {
            link = NULL;
            r = crd_error_set(err, -ENOMEM, "out of memory");
            goto out;
        }
        r = fetch_remember_url(&f, link, err);
    } else {
        link = strdup(url_or_path);
        r = link == NULL ? crd_error_set(err, -ENOMEM, "out of memory")
                         : fetch_check_link(&f, link, what, err);
    }
    if (r < 0) {
        goto out;
    }

    while (link != NULL) {
        r = fetch_get(&f, link, what, &page, err);
        if (r < 0) {
            goto out;
        }
        json_t *value = json_object_get(page, "value");
        if (!json_is_array(value)) {
            r = crd_error_set(err, -EPROTO, "%s: a page without a \"value\" array", what);
            goto out;
        }
        size_t i;
        const json_t *item;
        json_array_foreach (value, i, item) {
            r = on_item(item, context, err);
            if (r < 0) {
                goto out;
            }
        }
        free(link);
        r = fetch_take_link(page, "@odata.nextLink", what, &link, err);
        if (r == 0 && link != NULL) {
            r = fetch_check_link(&f, link, what, err);
        }
        if (r < 0) {
            goto out;
        }
        json_decref(page);
        page = NULL;
    }

    unsigned attempts = failure->attempts;
    memset(failure, 0, sizeof(*failure));
    failure->attempts = attempts;
out:
    crd_graph_fetch_clear(&f);
    json_decref(page);
    free(link);
    return r;
}

int crd_graph_list(struct crd_graph_session *session, const char *url_or_path,
                   crd_graph_item_fn on_item, void *context, struct crd_graph_failure *failure,
                   struct crd_error *err)
{
    return list_collection(session, url_or_path, GRAPH_BUDGET_NONE, on_item, context, failure,
                           err);
}

/* Context of crd_graph_list_call_records(): the caller's callback for each list item. */
struct call_record_listing {
    crd_graph_call_record_fn on_record;
    void *context;
};

static int list_call_record_item(const json_t *item, void *context, struct crd_error *err)
{
    struct call_record_listing *listing = context;
    const char *id = json_string_value(json_object_get(item, "id"));
    const json_t *version = json_object_get(item, "version");
    if (id == NULL || !json_is_integer(version)) {
        return crd_error_set(err, -EPROTO,
                             "list of call records: an item without a string \"id\" and an "
                             "integer \"version\"");
    }
    return listing->on_record(id, (int64_t)json_integer_value(version), listing->context, err);
}

int crd_graph_list_call_records(struct crd_graph_session *session, int64_t since_ms,
                                crd_graph_call_record_fn on_record, void *context,
                                struct crd_graph_failure *failure, struct crd_error *err)
{
    char since[40];
    crd_time_format_iso8601(since_ms, since, sizeof(since));
    /* Whole seconds, as Graph's examples write the filter: drop ".123" before the "Z". */
    char *fraction = strchr(since, '.');
    if (fraction != NULL) {
        fraction[0] = 'Z';
        fraction[1] = '\0';
    }
    char path[160];
    /* ?$filter=startDateTime ge <since>, percent-encoded. */
    snprintf(path, sizeof(path), "%s?%%24filter=startDateTime%%20ge%%20%s",
             "/v1.0/communications/callRecords", since);

    struct call_record_listing listing = {.on_record = on_record, .context = context};
    return list_collection(session, path, GRAPH_BUDGET_LIST, list_call_record_item, &listing,
                           failure, err);
}
