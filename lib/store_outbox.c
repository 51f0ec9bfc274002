/* SPDX-License-Identifier: MIT */
/*
 * The sink dispatchers' side of the outbox: one row per (sink, record
 * version) until the sink confirms delivery. Claiming does not change a row,
 * so a crash between delivery and acknowledgement delivers the version again.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "store.h"
#include "store_internal.h"
#include "util.h"

/*
 * Rows of one sink that no lower version of the same call is waiting ahead
 * of, so that each sink receives the versions of a call in ascending order.
 * The UNIQUE (sink, tenant_id, call_id, version) index serves the NOT EXISTS.
 */
#define OUTBOX_NOT_BEHIND_OLDER_VERSION                                                            \
    " NOT EXISTS (SELECT 1 FROM outbox AS older"                                                   \
    "             WHERE older.sink = o.sink AND older.tenant_id = o.tenant_id"                     \
    "               AND older.call_id = o.call_id AND older.version < o.version)"

static const char select_due_delivery_sql[] =
    "SELECT o.id, o.tenant_id, o.call_id, o.version, o.attempts, r.first_notified_at,"
    "       r.fetched_at, r.record"
    " FROM outbox AS o JOIN records AS r"
    "   ON r.tenant_id = o.tenant_id AND r.call_id = o.call_id AND r.version = o.version"
    " WHERE o.sink = ?1 AND o.due_at <= ?2 AND" OUTBOX_NOT_BEHIND_OLDER_VERSION
    " ORDER BY o.due_at, o.id LIMIT 1";

/*
 * Only rows that could be claimed count: a row waiting behind an older
 * version may be overdue, and reporting its due time would make the caller
 * wake up again at once.
 */
static const char next_delivery_due_sql[] =
    "SELECT min(o.due_at) FROM outbox AS o"
    " WHERE o.sink = ?1 AND" OUTBOX_NOT_BEHIND_OLDER_VERSION;

static const char ack_delivery_sql[] = "DELETE FROM outbox WHERE id = ?1";

static const char retry_delivery_sql[] =
    "UPDATE outbox SET due_at = ?2, attempts = attempts + 1, last_error = ?3,"
    "  first_failed_at = coalesce(first_failed_at, ?4) WHERE id = ?1";

static const char count_deliveries_sql[] = "SELECT count(*) FROM outbox WHERE sink = ?1";

static const char backlog_sql[] = "SELECT count(*), min(created_at) FROM outbox WHERE sink = ?1";

/* Reads the row the statement is on into *delivery, copying the record text. */
static int outbox_read_row(const struct crd_store *store, sqlite3_stmt *stmt,
                           struct crd_delivery *delivery, struct crd_error *err)
{
    const char *tenant_id = (const char *)sqlite3_column_text(stmt, 1);
    const char *call_id = (const char *)sqlite3_column_text(stmt, 2);
    if (tenant_id == NULL || call_id == NULL || sqlite3_column_bytes(stmt, 1) > CRD_GUID_LEN ||
        sqlite3_column_bytes(stmt, 2) > CRD_GUID_LEN) {
        return crd_error_set(err, -EIO,
                             "database '%s': outbox row %lld has an invalid tenant or call id; "
                             "the database was changed by something other than callrecd",
                             store->path, (long long)sqlite3_column_int64(stmt, 0));
    }
    memcpy(delivery->tenant_id, tenant_id, (size_t)sqlite3_column_bytes(stmt, 1) + 1);
    memcpy(delivery->call_id, call_id, (size_t)sqlite3_column_bytes(stmt, 2) + 1);

    delivery->id = sqlite3_column_int64(stmt, 0);
    delivery->version = sqlite3_column_int64(stmt, 3);
    delivery->attempts = (unsigned)sqlite3_column_int64(stmt, 4);
    delivery->first_notified_at_ms = sqlite3_column_int64(stmt, 5);
    delivery->fetched_at_ms = sqlite3_column_int64(stmt, 6);

    const char *record = (const char *)sqlite3_column_text(stmt, 7);
    size_t record_len = (size_t)sqlite3_column_bytes(stmt, 7);
    delivery->record_json = record != NULL ? malloc(record_len + 1) : NULL;
    if (delivery->record_json == NULL) {
        return crd_error_set(err, -ENOMEM, "database '%s': out of memory reading record of %zu "
                             "bytes", store->path, record_len);
    }
    memcpy(delivery->record_json, record, record_len + 1);
    delivery->record_json_len = record_len;
    return 0;
}

/* Reads the earliest due time of the sink's claimable rows into *ret_next_due_ms, 0 for none. */
static int outbox_next_due_locked(struct crd_store *store, const char *sink,
                                  int64_t *ret_next_due_ms, struct crd_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int r = crd_store_statement_locked(store, CRD_STORE_STMT_NEXT_DELIVERY_DUE,
                                       next_delivery_due_sql, &stmt, err);
    if (r < 0) {
        return r;
    }

    int rc = crd_store_bind_text(stmt, 1, sink);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc != SQLITE_ROW) {
        r = crd_store_fail(store, rc, "finding the next due delivery", err);
        goto out;
    }
    *ret_next_due_ms = sqlite3_column_int64(stmt, 0); /* min() of no rows is NULL, read as 0 */

out:
    crd_store_statement_done(stmt);
    return r;
}

static int outbox_select_due_locked(struct crd_store *store, const char *sink, int64_t now_ms,
                                    struct crd_delivery *delivery, struct crd_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int r = crd_store_statement_locked(store, CRD_STORE_STMT_SELECT_DUE_DELIVERY,
                                       select_due_delivery_sql, &stmt, err);
    if (r < 0) {
        return r;
    }

    int rc = crd_store_bind_text(stmt, 1, sink);
    if (rc == SQLITE_OK) {
        rc = sqlite3_bind_int64(stmt, 2, now_ms);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc == SQLITE_DONE) {
        r = crd_error_set(err, -ENOENT, "database '%s': no delivery is due for sink '%s'",
                          store->path, sink);
        goto out;
    }
    if (rc != SQLITE_ROW) {
        r = crd_store_fail(store, rc, "selecting a due delivery", err);
        goto out;
    }
    r = outbox_read_row(store, stmt, delivery, err);

out:
    crd_store_statement_done(stmt);
    return r;
}

int crd_store_claim_delivery(struct crd_store *store, const char *sink, int64_t now_ms,
                             struct crd_delivery *ret_delivery, int64_t *ret_next_due_ms,
                             struct crd_error *err)
{
    if (store == NULL || sink == NULL || ret_delivery == NULL) {
        return crd_error_set(err, -EINVAL,
                             "store: claim_delivery called without a store, sink or delivery");
    }
    struct crd_delivery delivery = {0};
    size_t sink_len = strlen(sink);
    if (sink_len == 0 || sink_len >= sizeof(delivery.sink)) {
        return crd_error_set(err, -EINVAL, "store: sink name '%.64s' is empty or longer than %zu "
                             "bytes", sink, sizeof(delivery.sink) - 1);
    }
    memcpy(delivery.sink, sink, sink_len + 1);

    pthread_mutex_lock(&store->lock);

    int64_t next_due_ms = 0;
    int r = outbox_select_due_locked(store, sink, now_ms, &delivery, err);
    if (r == -ENOENT) {
        int r_next = outbox_next_due_locked(store, sink, &next_due_ms, err);
        r = r_next < 0 ? r_next : r;
    }

    pthread_mutex_unlock(&store->lock);

    if (r == 0) {
        *ret_delivery = delivery;
        delivery.record_json = NULL;
    } else if (r == -ENOENT && ret_next_due_ms != NULL) {
        *ret_next_due_ms = next_due_ms;
    }
    crd_delivery_clear(&delivery);
    return r;
}

/* Runs a statement on one outbox row by id. Returns -ENOENT when the row does not exist. */
static int outbox_change_row(struct crd_store *store, enum crd_store_statement which,
                             const char *sql, int64_t id, const int64_t *due_at_ms,
                             const char *last_error, const char *what, struct crd_error *err)
{
    pthread_mutex_lock(&store->lock);

    sqlite3_stmt *stmt = NULL;
    int r = crd_store_statement_locked(store, which, sql, &stmt, err);
    if (r < 0) {
        goto out;
    }
    int rc = sqlite3_bind_int64(stmt, 1, id);
    if (rc == SQLITE_OK && due_at_ms != NULL) {
        rc = sqlite3_bind_int64(stmt, 2, *due_at_ms);
    }
    if (rc == SQLITE_OK && due_at_ms != NULL) {
        rc = crd_store_bind_text(stmt, 3, last_error);
    }
    if (rc == SQLITE_OK && due_at_ms != NULL) {
        rc = sqlite3_bind_int64(stmt, 4, crd_time_now_ms());
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc != SQLITE_DONE) {
        r = crd_store_fail(store, rc, what, err);
        goto out;
    }
    if (sqlite3_changes(store->db) == 0) {
        r = crd_error_set(err, -ENOENT, "database '%s': %s: outbox row %lld not found",
                          store->path, what, (long long)id);
    }

out:
    if (stmt != NULL) {
        crd_store_statement_done(stmt);
    }
    pthread_mutex_unlock(&store->lock);
    return r;
}

int crd_store_ack_delivery(struct crd_store *store, int64_t id, struct crd_error *err)
{
    if (store == NULL) {
        return crd_error_set(err, -EINVAL, "store: ack_delivery called without a store");
    }
    return outbox_change_row(store, CRD_STORE_STMT_ACK_DELIVERY, ack_delivery_sql, id, NULL, NULL,
                             "removing a delivered outbox row", err);
}

int crd_store_retry_delivery(struct crd_store *store, int64_t id, int64_t due_at_ms,
                             const char *last_error, struct crd_error *err)
{
    if (store == NULL) {
        return crd_error_set(err, -EINVAL, "store: retry_delivery called without a store");
    }
    return outbox_change_row(store, CRD_STORE_STMT_RETRY_DELIVERY, retry_delivery_sql, id,
                             &due_at_ms, last_error, "scheduling a delivery retry", err);
}

int crd_store_count_deliveries(struct crd_store *store, const char *sink, int64_t *ret_count,
                               struct crd_error *err)
{
    if (store == NULL || sink == NULL || ret_count == NULL) {
        return crd_error_set(err, -EINVAL, "store: count_deliveries called without a store or "
                             "sink");
    }

    pthread_mutex_lock(&store->lock);

    sqlite3_stmt *stmt = NULL;
    int r = crd_store_statement_locked(store, CRD_STORE_STMT_COUNT_DELIVERIES,
                                       count_deliveries_sql, &stmt, err);
    if (r < 0) {
        goto out;
    }
    int rc = crd_store_bind_text(stmt, 1, sink);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc != SQLITE_ROW) {
        r = crd_store_fail(store, rc, "counting outbox rows", err);
        goto out;
    }
    *ret_count = sqlite3_column_int64(stmt, 0);

out:
    if (stmt != NULL) {
        crd_store_statement_done(stmt);
    }
    pthread_mutex_unlock(&store->lock);
    return r;
}

/*
 * Prepared for each call, because store_internal.h caches statements by an
 * enumeration this file cannot extend; the dispatchers call it about once
 * a second per sink.
 */
int crd_store_outbox_backlog(struct crd_store *store, const char *sink, int64_t *ret_rows,
                             int64_t *ret_oldest_created_at_ms, struct crd_error *err)
{
    if (store == NULL || sink == NULL || ret_rows == NULL || ret_oldest_created_at_ms == NULL) {
        return crd_error_set(err, -EINVAL, "store: outbox_backlog called without a store, sink "
                             "or output");
    }

    pthread_mutex_lock(&store->lock);

    sqlite3_stmt *stmt = NULL;
    int r = 0;
    int rc = sqlite3_prepare_v2(store->db, backlog_sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
        rc = crd_store_bind_text(stmt, 1, sink);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc != SQLITE_ROW) {
        r = crd_store_fail(store, rc, "measuring a sink's outbox backlog", err);
        goto out;
    }
    *ret_rows = sqlite3_column_int64(stmt, 0);
    *ret_oldest_created_at_ms = sqlite3_column_int64(stmt, 1); /* min() of no rows: 0 */

out:
    sqlite3_finalize(stmt);
    pthread_mutex_unlock(&store->lock);
    return r;
}

void crd_delivery_clear(struct crd_delivery *delivery)
{
    if (delivery == NULL) {
        return;
    }
    free(delivery->record_json);
    memset(delivery, 0, sizeof(*delivery));
}
