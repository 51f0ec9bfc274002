/* SPDX-License-Identifier: MIT */
/*
 * fakegraph serve as the Graph call-record API: the published records, GET
 * of one record with $expand=sessions($expand=segments) or participants_v2,
 * and the paged sessions and participants_v2 collections. Pages hold at
 * most 60 sessions or 130 participants, or fewer with
 * "Prefer: odata.maxpagesize=N". Next links carry an opaque $skiptoken.
 * Each record belongs to one tenant, and a request gets only the records of
 * its token's tenant. Another tenant's record is 404, as if never published.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "fakegraph_server.h"

/* Which relationship a request expands. */
enum expansion {
    EXPAND_NONE,
    EXPAND_SESSIONS,              /* sessions without their segments */
    EXPAND_SESSIONS_SEGMENTS,     /* sessions($expand=segments) */
    EXPAND_PARTICIPANTS,
};

/* One page of a collection: the items [offset, offset + size). */
struct page {
    size_t offset;
    size_t size;
};

/* ---- the store -------------------------------------------------------------------- */

static void record_clear(struct fakegraph_record *record)
{
    free(record->id);
    json_decref(record->record);
    json_decref(record->participants);
    *record = (struct fakegraph_record){0};
}

void fakegraph_records_clear_locked(struct fakegraph_server *server)
{
    for (size_t i = 0; i < server->record_count; i++) {
        record_clear(&server->records[i]);
    }
    free(server->records);
    server->records = NULL;
    server->record_count = 0;
}

/* Checks what the handlers rely on: a string id usable as a path segment, arrays where present. */
static int check_record(const json_t *record, const json_t *participants, struct crd_error *err)
{
    if (!json_is_object(record)) {
        return crd_error_set(err, -EINVAL, "\"record\" must be a callRecord object");
    }
    const char *id = json_string_value(json_object_get(record, "id"));
    if (id == NULL || id[0] == '\0' || strlen(id) > 256 || strpbrk(id, "/?#%") != NULL) {
        return crd_error_set(err, -EINVAL, "\"record\" needs an \"id\": a non-empty string of at "
                             "most 256 characters without '/', '?', '#' or '%%'");
    }
    const json_t *sessions = json_object_get(record, "sessions");
    if (sessions != NULL && !json_is_array(sessions)) {
        return crd_error_set(err, -EINVAL, "\"record\".\"sessions\" must be an array");
    }
    if (participants != NULL && !json_is_array(participants)) {
        return crd_error_set(err, -EINVAL, "\"participants\" must be an array");
    }
    return 0;
}

int fakegraph_records_publish(struct fakegraph_server *server, int tenant, json_t *record,
                              json_t *participants, unsigned not_found_for_ms,
                              struct crd_error *err)
{
    int r = check_record(record, participants, err);
    if (r < 0) {
        json_decref(record);
        json_decref(participants);
        return r;
    }

    struct fakegraph_record entry = {
        .tenant = tenant,
        .id = strdup(json_string_value(json_object_get(record, "id"))),
        .record = record,
        .participants = participants,
        .visible_at_ms = crd_time_monotonic_ms() + not_found_for_ms,
    };
    if (entry.id == NULL) {
        record_clear(&entry);
        return crd_error_set(err, -ENOMEM, "out of memory");
    }

    pthread_mutex_lock(&server->lock);
    struct fakegraph_record *slot = NULL;
    for (size_t i = 0; i < server->record_count; i++) {
        if (server->records[i].tenant == tenant && strcmp(server->records[i].id, entry.id) == 0) {
            slot = &server->records[i];
            record_clear(slot);
            break;
        }
    }
    if (slot == NULL) {
        struct fakegraph_record *grown =
            realloc(server->records, (server->record_count + 1) * sizeof(*grown));
        if (grown != NULL) {
            server->records = grown;
            slot = &server->records[server->record_count++];
        }
    }
    if (slot != NULL) {
        *slot = entry;
        entry = (struct fakegraph_record){0};
    }
    pthread_mutex_unlock(&server->lock);

    if (slot == NULL) {
        record_clear(&entry);
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    return 0;
}

size_t fakegraph_records_tenants(struct fakegraph_server *server, const char *id,
                                 int tenants[FAKEGRAPH_TENANT_MAX])
{
    bool published[FAKEGRAPH_TENANT_MAX] = {false};
    pthread_mutex_lock(&server->lock);
    for (size_t i = 0; i < server->record_count; i++) {
        if (strcmp(server->records[i].id, id) == 0) {
            published[server->records[i].tenant] = true;
        }
    }
    pthread_mutex_unlock(&server->lock);

    size_t count = 0;
    for (size_t tenant = 0; tenant < server->tenant_count; tenant++) {
        if (published[tenant]) {
            tenants[count++] = (int)tenant;
        }
    }
    return count;
}

/*
 * Finds a record of tenant that is visible now and takes references to its
 * JSON. *ret_participants is NULL when it was published without participants.
 * Returns 0 or -ENOENT.
 */
static int lookup_record(struct fakegraph_server *server, int tenant, const char *id,
                         json_t **ret_record, json_t **ret_participants)
{
    int r = -ENOENT;
    int64_t now = crd_time_monotonic_ms();
    pthread_mutex_lock(&server->lock);
    for (size_t i = 0; i < server->record_count; i++) {
        const struct fakegraph_record *entry = &server->records[i];
        if (entry->tenant == tenant && strcmp(entry->id, id) == 0) {
            if (now >= entry->visible_at_ms) {
                *ret_record = json_incref(entry->record);
                *ret_participants = json_incref(entry->participants);
                r = 0;
            }
            break;
        }
    }
    pthread_mutex_unlock(&server->lock);
    return r;
}

/* ---- paging --------------------------------------------------------------------- */

/* Reads "odata.maxpagesize=N" from the Prefer header, capped at max. Returns max when absent. */
static size_t preferred_page_size(struct MHD_Connection *connection, size_t max)
{
    const char *prefer = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Prefer");
    const char *found = prefer != NULL ? strstr(prefer, "odata.maxpagesize=") : NULL;
    if (found == NULL) {
        return max;
    }
    unsigned long size = strtoul(found + strlen("odata.maxpagesize="), NULL, 10);
    return size >= 1 && size < max ? size : max;
}

/* Encodes a page as an opaque $skiptoken: the hex digits of "<kind>:<offset>:<size>". */
static void encode_skiptoken(const char *kind, struct page page, char *out, size_t size)
{
    char plain[64];
    int len = snprintf(plain, sizeof(plain), "%s:%zu:%zu", kind, page.offset, page.size);
    out[0] = '\0';
    for (int i = 0; i < len && (size_t)(i * 2 + 2) < size; i++) {
        snprintf(out + i * 2, 3, "%02x", (unsigned char)plain[i]);
    }
}

static int decode_skiptoken(const char *token, const char *kind, struct page *ret_page)
{
    char plain[64];
    size_t len = strlen(token);
    if (len % 2 != 0 || len / 2 >= sizeof(plain)) {
        return -EINVAL;
    }
    for (size_t i = 0; i < len / 2; i++) {
        unsigned byte = 0;
        if (sscanf(token + i * 2, "%2x", &byte) != 1) {
            return -EINVAL;
        }
        plain[i] = (char)byte;
    }
    plain[len / 2] = '\0';

    char found_kind[32];
    struct page page;
    if (sscanf(plain, "%31[a-z0-9_]:%zu:%zu", found_kind, &page.offset, &page.size) != 3 ||
        strcmp(found_kind, kind) != 0 || page.size == 0) {
        return -EINVAL;
    }
    *ret_page = page;
    return 0;
}

/* Copies the page's items, without their segments when drop_segments is set. */
static json_t *slice_items(const json_t *items, struct page page, bool drop_segments)
{
    json_t *out = json_array();
    size_t count = json_array_size(items);
    for (size_t i = page.offset; out != NULL && i < count && i < page.offset + page.size; i++) {
        json_t *item = json_array_get(items, i);
        if (drop_segments && json_is_object(item)) {
            item = json_copy(item);
            if (item != NULL) {
                (void)json_object_del(item, "segments");
            }
        } else {
            json_incref(item);
        }
        if (item == NULL || json_array_append_new(out, item) < 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/*
 * Returns the next link after page, or NULL when page reaches the end (or
 * when out of memory, which the caller cannot tell apart: a short response).
 */
static char *next_link(struct fakegraph_server *server, const char *id, const char *collection,
                       const char *expand, struct page page, size_t total)
{
    if (page.offset + page.size >= total) {
        return NULL;
    }
    char token[160];
    encode_skiptoken(collection, (struct page){page.offset + page.size, page.size}, token,
                     sizeof(token));
    char *escaped_id = curl_easy_escape(NULL, id, 0);
    char *link = NULL;
    if (escaped_id != NULL &&
        asprintf(&link, "%s/v1.0/communications/callRecords/%s/%s?%s%s$skiptoken=%s",
                 server->base_url, escaped_id, collection, expand != NULL ? expand : "",
                 expand != NULL ? "&" : "", token) < 0) {
        link = NULL;
    }
    curl_free(escaped_id);
    return link;
}

/* Sets key to a string made by asprintf-style formatting. Returns 0 or -ENOMEM. */
static int set_formatted(json_t *object, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int set_formatted(json_t *object, const char *key, const char *fmt, ...)
{
    char *text = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (len < 0) {
        return -ENOMEM;
    }
    int r = json_object_set_new(object, key, json_string(text)) < 0 ? -ENOMEM : 0;
    free(text);
    return r;
}

/* ---- query options ------------------------------------------------------------------ */

struct query_check {
    const char *const *allowed;
    const char *rejected;       /* first $-option not in allowed, or NULL */
};

static enum MHD_Result check_query_option(void *cls, enum MHD_ValueKind kind, const char *key,
                                          const char *value)
{
    struct query_check *check = cls;
    if (key[0] != '$') {
        return MHD_YES;
    }
    for (size_t i = 0; check->allowed[i] != NULL; i++) {
        if (strcmp(key, check->allowed[i]) == 0) {
            return MHD_YES;
        }
    }
    check->rejected = key;
    return MHD_NO;
}

/* Returns the first $-prefixed query option not in allowed (NULL-terminated), or NULL. */
static const char *unsupported_query_option(struct MHD_Connection *connection,
                                            const char *const *allowed)
{
    struct query_check check = {.allowed = allowed};
    (void)MHD_get_connection_values(connection, MHD_GET_ARGUMENT_KIND, check_query_option,
                                    &check);
    return check.rejected;
}

static const char *query_value(struct MHD_Connection *connection, const char *name)
{
    return MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND, name);
}

/* Parses the record's $expand. Returns 0 or -EINVAL. */
static int parse_record_expand(const char *expand, enum expansion *ret_expansion)
{
    if (expand == NULL) {
        *ret_expansion = EXPAND_NONE;
    } else if (strcmp(expand, "sessions($expand=segments)") == 0) {
        *ret_expansion = EXPAND_SESSIONS_SEGMENTS;
    } else if (strcmp(expand, "sessions") == 0) {
        *ret_expansion = EXPAND_SESSIONS;
    } else if (strcmp(expand, "participants_v2") == 0) {
        *ret_expansion = EXPAND_PARTICIPANTS;
    } else {
        return -EINVAL;
    }
    return 0;
}

/* ---- responses --------------------------------------------------------------------- */

static enum MHD_Result respond_not_found(struct fakegraph_server *server,
                                         struct MHD_Connection *connection,
                                         struct fakegraph_request *request)
{
    return fakegraph_respond_graph_error(server, connection, request, MHD_HTTP_NOT_FOUND,
                                         "NotFound", "The requested call record was not found.");
}

/* Adds one page of a relationship to the record: "name": [...] and "name@odata.nextLink". */
static int embed_page(struct fakegraph_server *server, json_t *out, const char *id,
                      const char *name, const json_t *items, struct page page, bool drop_segments,
                      const char *next_expand)
{
    json_t *slice = slice_items(items, page, drop_segments);
    if (slice == NULL || json_object_set_new(out, name, slice) < 0) {
        return -ENOMEM;
    }
    char *link = next_link(server, id, name, next_expand, page, json_array_size(items));
    if (link != NULL) {
        char key[64];
        snprintf(key, sizeof(key), "%s@odata.nextLink", name);
        int r = json_object_set_new(out, key, json_string(link)) < 0 ? -ENOMEM : 0;
        free(link);
        return r;
    }
    return 0;
}

/* Builds the record response: its properties and the first page of the expanded relationship. */
static json_t *build_record(struct fakegraph_server *server, const char *id, json_t *record,
                            json_t *participants, enum expansion expansion, size_t page_size)
{
    static const char *const context_suffix[] = {
        [EXPAND_NONE] = "",
        [EXPAND_SESSIONS] = "(sessions())",
        [EXPAND_SESSIONS_SEGMENTS] = "(sessions(segments()))",
        [EXPAND_PARTICIPANTS] = "(participants_v2())",
    };
    json_t *out = json_object();
    if (out == NULL || set_formatted(out, "@odata.context",
                                     "%s/v1.0/$metadata#communications/callRecords%s/$entity",
                                     server->base_url, context_suffix[expansion]) < 0) {
        json_decref(out);
        return NULL;
    }

    const char *key;
    json_t *value;
    json_object_foreach(record, key, value) {
        if (strcmp(key, "@odata.context") == 0 || strncmp(key, "sessions", 8) == 0 ||
            strcmp(key, "participants_v2") == 0 ||
            strcmp(key, "participants_v2@odata.nextLink") == 0) {
            continue;
        }
        if (json_object_set(out, key, value) < 0) {
            json_decref(out);
            return NULL;
        }
    }

    struct page page = {0, page_size};
    int r = 0;
    json_t *sessions = json_object_get(record, "sessions");
    json_t *empty = json_array();
    if (expansion == EXPAND_SESSIONS || expansion == EXPAND_SESSIONS_SEGMENTS) {
        bool segments = expansion == EXPAND_SESSIONS_SEGMENTS;
        r = embed_page(server, out, id, "sessions", sessions != NULL ? sessions : empty, page,
                       !segments, segments ? "$expand=segments" : NULL);
    } else if (expansion == EXPAND_PARTICIPANTS) {
        /* A record published without participants expands to an empty list. */
        r = embed_page(server, out, id, "participants_v2",
                       participants != NULL ? participants : empty, page, false, NULL);
    }
    json_decref(empty);
    if (r < 0) {
        json_decref(out);
        return NULL;
    }
    return out;
}

static enum MHD_Result handle_record(struct fakegraph_server *server,
                                     struct MHD_Connection *connection,
                                     struct fakegraph_request *request, const char *id)
{
    static const char *const allowed[] = {"$expand", NULL};
    const char *rejected = unsupported_query_option(connection, allowed);
    if (rejected != NULL) {
        /* NOTE: Graph also supports $select here; fakegraph does not emulate it. */
        return fakegraph_respond_graph_error(server, connection, request, MHD_HTTP_BAD_REQUEST,
                                             "BadRequest", "Query option '%.50s' is not "
                                             "supported by fakegraph on a call record.", rejected);
    }
    enum expansion expansion = EXPAND_NONE;
    const char *expand = query_value(connection, "$expand");
    if (parse_record_expand(expand, &expansion) < 0) {
        return fakegraph_respond_graph_error(server, connection, request, MHD_HTTP_BAD_REQUEST,
                                             "BadRequest", "Parsing OData Select and Expand "
                                             "failed: Could not find a property named '%.100s' "
                                             "on type 'microsoft.graph.callRecords.callRecord'.",
                                             expand);
    }

    json_t *record = NULL;
    json_t *participants = NULL;
    if (lookup_record(server, request->tenant, id, &record, &participants) < 0) {
        return respond_not_found(server, connection, request);
    }
    size_t max = expansion == EXPAND_PARTICIPANTS ? FAKEGRAPH_PARTICIPANT_PAGE_MAX
                                                  : FAKEGRAPH_SESSION_PAGE_MAX;
    json_t *body = build_record(server, id, record, participants, expansion,
                                preferred_page_size(connection, max));
    json_decref(record);
    json_decref(participants);
    if (body == NULL) {
        return MHD_NO;
    }
    return fakegraph_respond_graph(server, connection, request, MHD_HTTP_OK, body, NULL);
}

/* GET .../{id}/sessions or .../{id}/participants_v2: one page of the collection. */
static enum MHD_Result handle_collection(struct fakegraph_server *server,
                                         struct MHD_Connection *connection,
                                         struct fakegraph_request *request, const char *id,
                                         const char *collection)
{
    bool is_sessions = strcmp(collection, "sessions") == 0;
    static const char *const allowed_sessions[] = {"$expand", "$skiptoken", NULL};
    static const char *const allowed_participants[] = {"$skiptoken", NULL};
    const char *rejected = unsupported_query_option(
        connection, is_sessions ? allowed_sessions : allowed_participants);
    const char *expand = query_value(connection, "$expand");
    if (rejected != NULL || (expand != NULL && strcmp(expand, "segments") != 0)) {
        return fakegraph_respond_graph_error(server, connection, request, MHD_HTTP_BAD_REQUEST,
                                             "BadRequest", "Query option '%.50s' is not "
                                             "supported by fakegraph on %s.",
                                             rejected != NULL ? rejected : "$expand", collection);
    }

    size_t max = is_sessions ? FAKEGRAPH_SESSION_PAGE_MAX : FAKEGRAPH_PARTICIPANT_PAGE_MAX;
    struct page page = {0, preferred_page_size(connection, max)};
    const char *skiptoken = query_value(connection, "$skiptoken");
    if (skiptoken != NULL && decode_skiptoken(skiptoken, collection, &page) < 0) {
        return fakegraph_respond_graph_error(server, connection, request, MHD_HTTP_BAD_REQUEST,
                                             "BadRequest", "The $skiptoken is not valid.");
    }

    json_t *record = NULL;
    json_t *participants = NULL;
    if (lookup_record(server, request->tenant, id, &record, &participants) < 0) {
        return respond_not_found(server, connection, request);
    }
    json_t *items = is_sessions ? json_object_get(record, "sessions") : participants;
    if (!is_sessions && participants == NULL) {
        /* Graph has a known issue that leaves participants missing; this is how it shows. */
        json_decref(record);
        return fakegraph_respond_graph_error(server, connection, request, MHD_HTTP_NOT_FOUND,
                                             "NotFound", "The participants of this call record "
                                             "were not found.");
    }

    json_t *empty = json_array();
    json_t *body = json_object();
    char *link = NULL;
    int r = -ENOMEM;
    if (body != NULL && empty != NULL) {
        r = set_formatted(body, "@odata.context",
                          "%s/v1.0/$metadata#communications/callRecords('%s')/%s%s",
                          server->base_url, id, collection,
                          is_sessions && expand != NULL ? "(segments())" : "");
    }
    json_t *value = r == 0 ? slice_items(items != NULL ? items : empty, page,
                                         is_sessions && expand == NULL)
                           : NULL;
    if (value == NULL || json_object_set_new(body, "value", value) < 0) {
        r = -ENOMEM;
    } else {
        link = next_link(server, id, collection, expand != NULL ? "$expand=segments" : NULL, page,
                         json_array_size(items));
    }
    if (r == 0 && link != NULL && json_object_set_new(body, "@odata.nextLink",
                                                      json_string(link)) < 0) {
        r = -ENOMEM;
    }
    free(link);
    json_decref(empty);
    json_decref(record);
    json_decref(participants);
    if (r < 0) {
        json_decref(body);
        return MHD_NO;
    }
    return fakegraph_respond_graph(server, connection, request, MHD_HTTP_OK, body, NULL);
}

enum MHD_Result fakegraph_handle_call_records(struct fakegraph_server *server,
                                              struct MHD_Connection *connection,
                                              struct fakegraph_request *request,
                                              const char *rest)
{
    if (strcmp(request->method, MHD_HTTP_METHOD_GET) != 0) {
        return fakegraph_respond_graph_error(server, connection, request,
                                             MHD_HTTP_METHOD_NOT_ALLOWED, "MethodNotAllowed",
                                             "The HTTP method '%s' is not supported on call "
                                             "records.", request->method);
    }
    if (rest[0] == '\0' || strcmp(rest, "/") == 0) {
        return fakegraph_handle_call_record_list(server, connection, request);
    }

    char id[257];
    const char *id_start = rest + 1;
    size_t id_len = strcspn(id_start, "/");
    if (id_len == 0 || id_len >= sizeof(id)) {
        return respond_not_found(server, connection, request);
    }
    snprintf(id, sizeof(id), "%.*s", (int)id_len, id_start);
    const char *tail = id_start + id_len;

    if (tail[0] == '\0') {
        return handle_record(server, connection, request, id);
    }
    if (strcmp(tail, "/sessions") == 0) {
        return handle_collection(server, connection, request, id, "sessions");
    }
    if (strcmp(tail, "/participants_v2") == 0) {
        return handle_collection(server, connection, request, id, "participants_v2");
    }
    return fakegraph_respond_graph_error(server, connection, request, MHD_HTTP_BAD_REQUEST,
                                         "BadRequest", "Resource not found for the segment "
                                         "'%.100s'.", tail + 1);
}
