/* SPDX-License-Identifier: MIT */
/*
 * The durable state: one SQLite database (WAL mode) in the state directory.
 * Every change is one transaction. The schema is versioned with
 * PRAGMA user_version and upgraded by ordered migrations when opened.
 *
 * Thread safety: every function except crd_store_close() may be called from
 * any thread; a mutex inside struct crd_store serializes access to its
 * connection.
 */
#ifndef CRD_STORE_H
#define CRD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "error.h"

#define CRD_STORE_FILE_NAME "callrecd.db"

struct crd_store;

struct crd_store_options {
    const char *state_directory;      /* created with mode 0700 when missing */
    enum crd_durability durability;
    unsigned busy_timeout_ms;         /* 0: a default of 5000 */
};

/* What the store found when it opened the database. */
struct crd_store_open_report {
    int schema_version_before;        /* 0 for a new database */
    int schema_version;               /* after migrations */
    int64_t pending_jobs;             /* jobs waiting for a fetch */
};

/*
 * Opens or creates the database, applies migrations and sets the journal
 * mode and synchronous level. report may be NULL. On success the caller owns
 * *ret_store and closes it with crd_store_close(). Returns 0, -EINVAL for bad
 * options, -ENOTSUP for a schema newer than this build or a file system
 * without WAL support, or -EACCES, -EROFS, -ENOSPC, -ENOENT, -ENOTDIR, -EBUSY,
 * -EIO, -ENOMEM with a message naming the path and a fix.
 */
int crd_store_open(const struct crd_store_options *options, struct crd_store **ret_store,
                   struct crd_store_open_report *report, struct crd_error *err);

/*
 * Closes the database cleanly (checkpointing the WAL). Accepts NULL. No other
 * thread may use the store during or after this call.
 */
void crd_store_close(struct crd_store *store);

/* The schema version this build writes. */
int crd_store_schema_version(void);

/* One accepted change notification, as the listener hands it over. */
struct crd_job_notice {
    const char *tenant_id;            /* GUID */
    const char *call_id;              /* GUID */
    const char *subscription_id;      /* GUID */
    const char *change_type;          /* "created", "updated", ... */
    int64_t notified_at_ms;           /* when the listener received it, ms since the epoch */
};

/*
 * Inserts one job per notice in a single transaction: all or none. A notice
 * for a (tenant, call id) that already has a job coalesces into it: the
 * notification count and last-notified time are updated and a finished job is
 * made due again, but no second row appears. subscription_id and change_type
 * may be NULL.
 *
 * Returns 0 or a negative code. -EINVAL means a tenant or call id is missing
 * or not a GUID, a subscription id is not a GUID, or a time is negative; all
 * notices are checked before anything is written. -EIO, -ENOSPC, -EROFS,
 * -EBUSY and -ENOMEM come after the transaction was rolled back.
 */
int crd_store_enqueue_jobs(struct crd_store *store, const struct crd_job_notice *notices,
                           size_t n_notices, struct crd_error *err);

/*
 * Small key-value settings that must survive restarts (the generated
 * clientState, the subscription id). *ret_value is a malloc'ed string the
 * caller frees; -ENOENT when the key is absent.
 */
int crd_store_get_setting(struct crd_store *store, const char *key, char **ret_value,
                          struct crd_error *err);
int crd_store_set_setting(struct crd_store *store, const char *key, const char *value,
                          struct crd_error *err);

/*
 * Reads the connection's PRAGMA synchronous level into *ret_level: 1 (NORMAL)
 * for CRD_DURABILITY_PROCESS, 2 (FULL) for CRD_DURABILITY_FULL. This is a
 * read-only diagnostic for tests, because the level belongs to the connection
 * and no other connection can read it.
 */
int crd_store_get_synchronous(struct crd_store *store, int *ret_level, struct crd_error *err);

#endif
