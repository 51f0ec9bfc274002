/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "log.h"
#include "util.h"

/*
 * Process-wide settings, written once by crd_log_setup() before threads start
 * and only read afterwards. This is the one piece of mutable global state in
 * lib/, because passing a logger through every module would add a parameter to every call.
 */
static enum crd_log_level max_level = CRD_LOG_INFO;
static unsigned debug_mask;
static bool use_journal;

static const char *const subsystem_names[CRD_LOG_SUBSYSTEM__COUNT] = {
    [CRD_LOG_CONFIG] = "config",
    [CRD_LOG_STORE] = "store",
    [CRD_LOG_LISTENER] = "listener",
    [CRD_LOG_GRAPH] = "graph",
    [CRD_LOG_FETCH] = "fetch",
    [CRD_LOG_SINK] = "sink",
    [CRD_LOG_SUBSCRIPTION] = "subscription",
    [CRD_LOG_DAEMON] = "daemon",
};

static const struct {
    const char *name;
    enum crd_log_level level;
} level_names[] = {
    {"error", CRD_LOG_ERR},   {"warning", CRD_LOG_WARNING}, {"notice", CRD_LOG_NOTICE},
    {"info", CRD_LOG_INFO},   {"debug", CRD_LOG_DEBUG},
};

/* True when stderr is the stream that $JOURNAL_STREAM ("device:inode") names. */
static bool stderr_is_journal(void)
{
    const char *stream = getenv("JOURNAL_STREAM");
    if (stream == NULL) {
        return false;
    }

    unsigned long long device = 0;
    unsigned long long inode = 0;
    if (sscanf(stream, "%llu:%llu", &device, &inode) != 2) {
        return false;
    }

    struct stat st;
    if (fstat(STDERR_FILENO, &st) < 0) {
        return false;
    }
    return st.st_dev == (dev_t)device && st.st_ino == (ino_t)inode;
}

void crd_log_setup(enum crd_log_level level, unsigned mask, enum crd_log_target target)
{
    max_level = level;
    debug_mask = mask;
    switch (target) {
    case CRD_LOG_TARGET_JOURNAL:
        use_journal = true;
        break;
    case CRD_LOG_TARGET_STDERR:
        use_journal = false;
        break;
    case CRD_LOG_TARGET_AUTO:
    default:
        use_journal = stderr_is_journal();
        break;
    }
    if (debug_mask != 0 && max_level < CRD_LOG_DEBUG) {
        max_level = CRD_LOG_DEBUG;
    }
}

int crd_log_level_from_string(const char *name, enum crd_log_level *ret_level)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i].name) == 0) {
            *ret_level = level_names[i].level;
            return 0;
        }
    }
    return -EINVAL;
}

int crd_log_subsystem_mask_from_string(const char *name, unsigned *ret_mask)
{
    if (strcmp(name, "all") == 0) {
        *ret_mask = (1u << CRD_LOG_SUBSYSTEM__COUNT) - 1;
        return 0;
    }
    for (unsigned i = 0; i < CRD_LOG_SUBSYSTEM__COUNT; i++) {
        if (strcmp(name, subsystem_names[i]) == 0) {
            *ret_mask = 1u << i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *crd_log_subsystem_name(enum crd_log_subsystem subsystem)
{
    if ((unsigned)subsystem >= CRD_LOG_SUBSYSTEM__COUNT) {
        return "unknown";
    }
    return subsystem_names[subsystem];
}

bool crd_log_enabled(enum crd_log_level level)
{
    return level <= max_level;
}

bool crd_log_debug_enabled(enum crd_log_subsystem subsystem)
{
    return (debug_mask & (1u << subsystem)) != 0;
}

static const char *level_label(enum crd_log_level level)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (level_names[i].level == level) {
            return level_names[i].name;
        }
    }
    return "info";
}

/* Appends one "NAME=value" journal field; fields is sized for every caller below. */
static void add_field(struct iovec *fields, size_t *n, char *storage, size_t storage_size,
                      const char *name, const char *value)
{
    int len = snprintf(storage, storage_size, "%s=%s", name, value);
    if (len < 0) {
        return;
    }
    if ((size_t)len >= storage_size) {
        len = (int)storage_size - 1;
    }
    fields[*n].iov_base = storage;
    fields[*n].iov_len = (size_t)len;
    (*n)++;
}

static void emit_journal(enum crd_log_level level, const char *message_id,
                         const struct crd_log_ids *ids, const char *file, int line,
                         const char *func, const char *message)
{
    enum { FIELD_MAX = 10, FIELD_SIZE = 256 };
    struct iovec fields[FIELD_MAX];
    char storage[FIELD_MAX - 1][FIELD_SIZE];
    size_t n = 0;
    char *message_field = NULL;

    if (asprintf(&message_field, "MESSAGE=%s", message) < 0) {
        return;
    }
    fields[n].iov_base = message_field;
    fields[n].iov_len = strlen(message_field);
    n++;

    char priority[2] = {(char)('0' + level), '\0'};
    char line_text[16];
    snprintf(line_text, sizeof(line_text), "%d", line);
    add_field(fields, &n, storage[n - 1], FIELD_SIZE, "PRIORITY", priority);
    add_field(fields, &n, storage[n - 1], FIELD_SIZE, "CODE_FILE", file);
    add_field(fields, &n, storage[n - 1], FIELD_SIZE, "CODE_LINE", line_text);
    add_field(fields, &n, storage[n - 1], FIELD_SIZE, "CODE_FUNC", func);
    if (message_id != NULL) {
        add_field(fields, &n, storage[n - 1], FIELD_SIZE, "MESSAGE_ID", message_id);
    }
    if (ids != NULL) {
        if (ids->tenant != NULL) {
            add_field(fields, &n, storage[n - 1], FIELD_SIZE, "TENANT_ID", ids->tenant);
        }
        if (ids->subscription != NULL) {
            add_field(fields, &n, storage[n - 1], FIELD_SIZE, "SUBSCRIPTION_ID", ids->subscription);
        }
        if (ids->call_id != NULL) {
            add_field(fields, &n, storage[n - 1], FIELD_SIZE, "CALL_ID", ids->call_id);
        }
        if (ids->sink != NULL) {
            add_field(fields, &n, storage[n - 1], FIELD_SIZE, "SINK", ids->sink);
        }
    }
    (void)sd_journal_sendv(fields, (int)n);
    free(message_field);
}

static void emit_stderr(enum crd_log_level level, const struct crd_log_ids *ids,
                        const char *message)
{
    char stamp[40];
    crd_time_format_iso8601(crd_time_now_ms(), stamp, sizeof(stamp));

    char prefix[512] = "";
    size_t used = 0;
    if (ids != NULL) {
        const struct {
            const char *label;
            const char *value;
        } parts[] = {
            {"tenant", ids->tenant},
            {"subscription", ids->subscription},
            {"call", ids->call_id},
            {"sink", ids->sink},
        };
        for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
            if (parts[i].value == NULL || used >= sizeof(prefix)) {
                continue;
            }
            int len = snprintf(prefix + used, sizeof(prefix) - used, "%s=%s ", parts[i].label,
                               parts[i].value);
            if (len > 0) {
                used += (size_t)len;
            }
        }
    }

    /* One fprintf per message: stdio locks the stream, so lines never interleave. */
    fprintf(stderr, "%s %s: %s%s\n", stamp, level_label(level), prefix, message);
}

void crd_log_emit(enum crd_log_level level, const char *message_id, const struct crd_log_ids *ids,
                  const char *file, int line, const char *func, const char *fmt, ...)
{
    int saved_errno = errno;
    char message[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);

    if (use_journal) {
        emit_journal(level, message_id, ids, file, line, func, message);
    } else {
        emit_stderr(level, ids, message);
    }
    errno = saved_errno;
}

void crd_ratelimit_init(struct crd_ratelimit *rl, int64_t interval_ms, unsigned burst)
{
    memset(rl, 0, sizeof(*rl));
    pthread_mutex_init(&rl->lock, NULL);
    rl->interval_ms = interval_ms;
    rl->burst = burst;
}

bool crd_ratelimit_allow(struct crd_ratelimit *rl, unsigned *ret_suppressed)
{
    int64_t now = crd_time_monotonic_ms();
    bool allowed = false;
    unsigned suppressed = 0;

    pthread_mutex_lock(&rl->lock);
    if (rl->window_start_ms == 0 || now - rl->window_start_ms >= rl->interval_ms) {
        rl->window_start_ms = now;
        rl->emitted = 0;
    }
    if (rl->emitted < rl->burst) {
        rl->emitted++;
        allowed = true;
        suppressed = rl->suppressed;
        rl->suppressed = 0;
    } else {
        rl->suppressed++;
    }
    pthread_mutex_unlock(&rl->lock);

    if (ret_suppressed != NULL) {
        *ret_suppressed = suppressed;
    }
    return allowed;
}
