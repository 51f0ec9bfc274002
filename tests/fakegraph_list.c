/* SPDX-License-Identifier: MIT */
/*
 * fakegraph serve as Graph's list of call records:
 * GET /v1.0/communications/callRecords?$filter=startDateTime ge X[ and startDateTime lt Y].
 * The filter takes clauses on startDateTime with ge, gt, le or lt joined by
 * "and". Rows are the records of the token's tenant without sessions or
 * participants, in publishing order, in pages of 60 with an @odata.nextLink
 * that carries an opaque $skiptoken. A record still in its "not found" time
 * is left out.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "fakegraph_server.h"

/* Graph's default page size of the call record list. */
#define LIST_PAGE_SIZE 60
#define FILTER_CLAUSES_MAX 4

struct time_clause {
    char op[3];          /* "ge", "gt", "le" or "lt" */
    int64_t ms;
};

/* Parses the $filter value. Returns 0, or -EINVAL with message set. */
static int parse_filter(const char *filter, struct time_clause *clauses, size_t *ret_count,
                        char *message, size_t size)
{
    size_t count = 0;
    const char *p = filter;
    while (*p != '\0') {
        if (count == FILTER_CLAUSES_MAX) {
            snprintf(message, size, "Too many clauses in $filter.");
            return -EINVAL;
        }
        const char *field = "startDateTime ";
        if (strncmp(p, field, strlen(field)) != 0) {
            snprintf(message, size, "Invalid filter clause '%.80s': only startDateTime with ge, "
                     "gt, le or lt is supported.", p);
            return -EINVAL;
        }
        p += strlen(field);
        struct time_clause *clause = &clauses[count];
        snprintf(clause->op, sizeof(clause->op), "%.2s", p);
        bool known = strcmp(clause->op, "ge") == 0 || strcmp(clause->op, "gt") == 0 ||
                     strcmp(clause->op, "le") == 0 || strcmp(clause->op, "lt") == 0;
        if (!known || p[2] != ' ') {
            snprintf(message, size, "Invalid operator in '%.80s'; use ge, gt, le or lt.", p);
            return -EINVAL;
        }
        p += 3;
        const char *end = strstr(p, " and ");
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        char value[64];
        if (len >= sizeof(value)) {
            snprintf(message, size, "Invalid date and time in $filter.");
            return -EINVAL;
        }
        memcpy(value, p, len);
        value[len] = '\0';
        if (crd_time_parse_iso8601(value, &clause->ms) < 0) {
            snprintf(message, size, "'%.60s' is not a valid date and time.", value);
            return -EINVAL;
        }
        count++;
        p += len;
        if (end != NULL) {
            p += strlen(" and ");
        }
    }
    *ret_count = count;
    return 0;
}

static bool clauses_match(const struct time_clause *clauses, size_t count, int64_t start_ms)
{
    for (size_t i = 0; i < count; i++) {
        const struct time_clause *c = &clauses[i];
        bool ok = strcmp(c->op, "ge") == 0   ? start_ms >= c->ms
                  : strcmp(c->op, "gt") == 0 ? start_ms > c->ms
                  : strcmp(c->op, "le") == 0 ? start_ms <= c->ms
                                             : start_ms < c->ms;
        if (!ok) {
            return false;
        }
    }
    return true;
}

/* The row of the list: the record without its relationships. */
static json_t *list_row(const json_t *record)
{
    json_t *row = json_deep_copy(record);
    if (row != NULL) {
        (void)json_object_del(row, "sessions");
        (void)json_object_del(row, "sessions@odata.nextLink");
        (void)json_object_del(row, "participants_v2");
        (void)json_object_del(row, "participants_v2@odata.nextLink");
    }
    return row;
}

/* Appends the matching rows of tenant from offset on, at most one page, and sets *ret_more. */
static int collect_rows(struct fakegraph_server *server, int tenant,
                        const struct time_clause *clauses, size_t n_clauses, size_t offset,
                        json_t *rows, bool *ret_more)
{
    int r = 0;
    size_t matched = 0;
    *ret_more = false;
    int64_t now = crd_time_monotonic_ms();
    pthread_mutex_lock(&server->lock);
    for (size_t i = 0; i < server->record_count; i++) {
        const struct fakegraph_record *record = &server->records[i];
        const char *start = json_string_value(json_object_get(record->record, "startDateTime"));
        int64_t start_ms = 0;
        if (record->tenant != tenant || record->visible_at_ms > now || start == NULL ||
            crd_time_parse_iso8601(start, &start_ms) < 0 ||
            !clauses_match(clauses, n_clauses, start_ms)) {
            continue;
        }
        if (matched++ < offset) {
            continue;
        }
        if (json_array_size(rows) == LIST_PAGE_SIZE) {
            *ret_more = true;
            break;
        }
        if (json_array_append_new(rows, list_row(record->record)) < 0) {
            r = -ENOMEM;
            break;
        }
    }
    pthread_mutex_unlock(&server->lock);
    return r;
}

enum MHD_Result fakegraph_handle_call_record_list(struct fakegraph_server *server,
                                                  struct MHD_Connection *connection,
                                                  struct fakegraph_request *request)
{
    const char *filter = MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND,
                                                     "$filter");
    const char *skiptoken = MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND,
                                                        "$skiptoken");
    struct time_clause clauses[FILTER_CLAUSES_MAX];
    size_t n_clauses = 0;
    char message[256];
    if (filter != NULL && parse_filter(filter, clauses, &n_clauses, message, sizeof(message)) < 0) {
        return fakegraph_respond_graph_error(server, connection, request, MHD_HTTP_BAD_REQUEST,
                                             "BadRequest", "%s", message);
    }
    unsigned long offset = 0;
    if (skiptoken != NULL && sscanf(skiptoken, "row-%lu", &offset) != 1) {
        return fakegraph_respond_graph_error(server, connection, request, MHD_HTTP_BAD_REQUEST,
                                             "BadRequest", "Invalid $skiptoken.");
    }

    json_t *rows = json_array();
    bool more = false;
    if (rows == NULL ||
        collect_rows(server, request->tenant, clauses, n_clauses, offset, rows, &more) < 0) {
        json_decref(rows);
        return MHD_NO;
    }

    char context[160];
    snprintf(context, sizeof(context), "%s/v1.0/$metadata#communications/callRecords",
             server->base_url);
    json_t *body = json_pack("{s:s, s:o}", "@odata.context", context, "value", rows);
    if (body != NULL && more) {
        char *escaped = curl_easy_escape(NULL, filter != NULL ? filter : "", 0);
        char *link = NULL;
        if (escaped == NULL ||
            asprintf(&link, "%s/v1.0/communications/callRecords?$filter=%s&$skiptoken=row-%lu",
                     server->base_url, escaped, offset + LIST_PAGE_SIZE) < 0) {
            link = NULL;
        }
        curl_free(escaped);
        if (link == NULL || json_object_set_new(body, "@odata.nextLink", json_string(link)) < 0) {
            json_decref(body);
            body = NULL;
        }
        free(link);
    }
    if (body == NULL) {
        return MHD_NO;
    }
    return fakegraph_respond_graph(server, connection, request, MHD_HTTP_OK, body, NULL);
}
