/* SPDX-License-Identifier: MIT */
/*
 * One logging API for the daemon and lib/. On journald (stderr is the
 * journal stream named by $JOURNAL_STREAM) every message carries structured
 * fields: TENANT_ID=, SUBSCRIPTION_ID=, CALL_ID=, SINK=, MESSAGE_ID= and the
 * source location. On a plain stream the ids become a prefix.
 *
 * The settings are process-wide: call crd_log_setup() once in main() before
 * any thread starts. Emitting is thread-safe. Never pass a secret to these
 * functions; struct crd_secret has no accessor meant for formatting.
 */
#ifndef CRD_LOG_H
#define CRD_LOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* syslog priorities, so that journald and syslog get the usual numbers */
enum crd_log_level {
    CRD_LOG_ERR = 3,
    CRD_LOG_WARNING = 4,
    CRD_LOG_NOTICE = 5,
    CRD_LOG_INFO = 6,
    CRD_LOG_DEBUG = 7,
};

/* Subsystems whose debug messages can be enabled one by one (log_debug = listener,store). */
enum crd_log_subsystem {
    CRD_LOG_CONFIG,
    CRD_LOG_STORE,
    CRD_LOG_LISTENER,
    CRD_LOG_GRAPH,
    CRD_LOG_FETCH,
    CRD_LOG_SINK,
    CRD_LOG_SUBSCRIPTION,
    CRD_LOG_DAEMON,
    CRD_LOG_SUBSYSTEM__COUNT
};

/* The ids a message is about; any field may be NULL. */
struct crd_log_ids {
    const char *tenant;
    const char *subscription;
    const char *call_id;
    const char *sink;
};

enum crd_log_target {
    CRD_LOG_TARGET_AUTO,     /* journald when stderr is the journal, else stderr */
    CRD_LOG_TARGET_STDERR,
    CRD_LOG_TARGET_JOURNAL,
};

/*
 * Sets the maximum level, the subsystems whose debug messages are shown
 * (a bit mask of 1 << enum crd_log_subsystem) and the target. Not thread-safe.
 */
void crd_log_setup(enum crd_log_level max_level, unsigned debug_mask, enum crd_log_target target);

/* Parses "error", "warning", "notice", "info" or "debug". Returns 0 or -EINVAL. */
int crd_log_level_from_string(const char *name, enum crd_log_level *ret_level);

/* Parses one subsystem name ("listener"), or "all". Returns 0 or -EINVAL. */
int crd_log_subsystem_mask_from_string(const char *name, unsigned *ret_mask);

const char *crd_log_subsystem_name(enum crd_log_subsystem subsystem);

bool crd_log_enabled(enum crd_log_level level);
bool crd_log_debug_enabled(enum crd_log_subsystem subsystem);

void crd_log_emit(enum crd_log_level level, const char *message_id, const struct crd_log_ids *ids,
                  const char *file, int line, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

#define CRD_LOG_AT(level, message_id, ids, ...)                                                    \
    do {                                                                                           \
        if (crd_log_enabled(level)) {                                                              \
            crd_log_emit((level), (message_id), (ids), __FILE__, __LINE__, __func__, __VA_ARGS__);  \
        }                                                                                          \
    } while (0)

#define crd_log_err(ids, ...) CRD_LOG_AT(CRD_LOG_ERR, NULL, ids, __VA_ARGS__)
#define crd_log_warn(ids, ...) CRD_LOG_AT(CRD_LOG_WARNING, NULL, ids, __VA_ARGS__)
#define crd_log_notice(ids, ...) CRD_LOG_AT(CRD_LOG_NOTICE, NULL, ids, __VA_ARGS__)
#define crd_log_info(ids, ...) CRD_LOG_AT(CRD_LOG_INFO, NULL, ids, __VA_ARGS__)

/* A debug message of one subsystem; formatted only when that subsystem is enabled. */
#define crd_log_debug(subsystem, ids, ...)                                                         \
    do {                                                                                           \
        if (crd_log_debug_enabled(subsystem)) {                                                    \
            crd_log_emit(CRD_LOG_DEBUG, NULL, (ids), __FILE__, __LINE__, __func__, __VA_ARGS__);    \
        }                                                                                          \
    } while (0)

/*
 * Rate limit for a repeated message: at most `burst` messages per interval.
 * When a new interval starts after some were suppressed, the next allowed
 * message learns how many were dropped. Thread-safe.
 */
struct crd_ratelimit {
    pthread_mutex_t lock;        /* protects the fields below */
    int64_t interval_ms;
    unsigned burst;
    int64_t window_start_ms;
    unsigned emitted;
    unsigned suppressed;
};

#define CRD_RATELIMIT_INIT(interval_ms_, burst_)                                                   \
    {                                                                                              \
        .lock = PTHREAD_MUTEX_INITIALIZER, .interval_ms = (interval_ms_), .burst = (burst_),       \
    }

void crd_ratelimit_init(struct crd_ratelimit *rl, int64_t interval_ms, unsigned burst);

/*
 * Returns true when a message may be emitted now. *ret_suppressed (may be
 * NULL) receives the number of messages dropped since the last allowed one.
 */
bool crd_ratelimit_allow(struct crd_ratelimit *rl, unsigned *ret_suppressed);

#endif
