/* SPDX-License-Identifier: MIT */
/*
 * Diagnostics of a load. Each problem is formatted as
 * "FILE:LINE: [section] key = 'value': problem; fix" and appended to the
 * caller's struct crd_diagnostics. This file also contains the helpers that
 * show values and lists of names in those messages.
 */
#include "config.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf_internal.h"

/* ------------------------------------------------------------------------ */
/* Diagnostics                                                              */

struct conf_buf {
    char *data;
    size_t len;
    size_t cap;
    bool failed;
};

static void buf_append_n(struct conf_buf *b, const char *s, size_t n)
{
    if (b->failed) {
        return;
    }
    if (b->data == NULL || b->len + n + 1 > b->cap) {
        size_t cap = b->cap == 0 ? 128 : b->cap;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        char *data = realloc(b->data, cap);
        if (data == NULL) {
            b->failed = true;
            return;
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_append(struct conf_buf *b, const char *s)
{
    buf_append_n(b, s, strlen(s));
}

/* Appends a value as messages show it: escaped, and cut when long. Returns true when cut. */
static bool buf_append_shown(struct conf_buf *b, const char *value)
{
    size_t len = strlen(value);
    size_t shown = len > CONF_SHOWN_VALUE_MAX ? CONF_SHOWN_VALUE_MAX : len;
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c < 0x20 || c == 0x7f) {
            char escaped[8];
            snprintf(escaped, sizeof(escaped), "\\x%02x", c);
            buf_append(b, escaped);
        } else {
            buf_append_n(b, &value[i], 1);
        }
    }
    if (shown < len) {
        buf_append(b, "...");
    }
    return shown < len;
}

/*
 * A URL value as messages may show it: a proxy password is replaced by "***".
 * Returns a malloc'ed string, or NULL on OOM.
 */
char *conf_url_for_display(const char *value)
{
    const char *sep = strstr(value, "://");
    const char *authority = sep != NULL ? sep + 3 : value;
    size_t authority_len = strcspn(authority, "/?#");
    const char *at = NULL;
    for (const char *c = authority; c < authority + authority_len; c++) {
        if (*c == '@') {
            at = c;
        }
    }
    if (at == NULL) {
        return strdup(value);
    }
    const char *colon = memchr(authority, ':', (size_t)(at - authority));
    size_t keep = (size_t)((colon != NULL ? colon : at) - value);
    char *shown = NULL;
    if (asprintf(&shown, "%.*s%s%s", (int)keep, value, colon != NULL ? ":***" : "", at) < 0) {
        return NULL;
    }
    return shown;
}

void conf_join_names(const char *const *names, size_t n, char *buf, size_t size)
{
    buf[0] = '\0';
    size_t used = 0;
    for (size_t i = 0; i < n && used < size; i++) {
        const char *sep = i == 0 ? "" : (i + 1 == n ? " or " : ", ");
        int w = snprintf(buf + used, size - used, "%s%s", sep, names[i]);
        if (w < 0) {
            break;
        }
        used += (size_t)w;
    }
}

/*
 * Appends one diagnostic "FILE:LINE: [section] key = 'value': problem; fix",
 * leaving out the parts that are 0 or NULL. value is shown as given, so a
 * caller must never pass a secret (proxy passwords are masked by the caller).
 */
__attribute__((format(printf, 7, 8))) void
conf_add_diag(struct loader *ld, enum crd_diagnostic_severity severity, unsigned line,
              const char *section, const char *key, const char *value, const char *fmt, ...)
{
    struct conf_buf b = {0};
    char number[32];

    buf_append(&b, ld->path);
    if (line > 0) {
        snprintf(number, sizeof(number), ":%u", line);
        buf_append(&b, number);
    }
    buf_append(&b, ": ");
    if (section != NULL) {
        buf_append(&b, "[");
        (void)buf_append_shown(&b, section);  /* an unknown section's name is the user's text */
        buf_append(&b, "]");
    }
    if (key != NULL) {
        if (section != NULL) {
            buf_append(&b, " ");
        }
        buf_append(&b, key);
        if (value != NULL) {
            buf_append(&b, " = '");
            bool cut = buf_append_shown(&b, value);
            buf_append(&b, "'");
            if (cut) {
                snprintf(number, sizeof(number), " (%zu bytes)", strlen(value));
                buf_append(&b, number);
            }
        }
    }
    if (section != NULL || key != NULL) {
        buf_append(&b, ": ");
    }

    char *problem = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&problem, fmt, ap);
    va_end(ap);
    if (n < 0) {
        problem = NULL;
        b.failed = true;
    } else {
        buf_append(&b, problem);
    }
    free(problem);

    struct crd_diagnostic item = {
        .severity = severity,
        .line = line,
        .section = section != NULL ? strdup(section) : NULL,
        .key = key != NULL ? strdup(key) : NULL,
        .message = b.data,
    };
    struct crd_diagnostic *items = NULL;
    bool complete = (section == NULL || item.section != NULL) && (key == NULL || item.key != NULL);
    if (!b.failed && complete) {
        items = realloc(ld->diag->items, (ld->diag->n_items + 1) * sizeof(*items));
    }
    if (items == NULL) {
        free(item.section);
        free(item.key);
        free(item.message);
        ld->oom = true;
        if (severity == CRD_DIAGNOSTIC_ERROR) {
            ld->n_errors++;  /* the load must still fail */
        }
        return;
    }
    items[ld->diag->n_items] = item;
    ld->diag->items = items;
    ld->diag->n_items++;
    if (severity == CRD_DIAGNOSTIC_ERROR) {
        ld->diag->n_errors++;
        ld->n_errors++;
    } else {
        ld->diag->n_warnings++;
    }
}

/* Stable insertion sort of this load's diagnostics by line; lines 0 go last. */
void conf_sort_diagnostics(struct loader *ld)
{
    struct crd_diagnostic *items = ld->diag->items;
    for (size_t i = ld->first_diag + 1; i < ld->diag->n_items; i++) {
        struct crd_diagnostic item = items[i];
        unsigned key = item.line == 0 ? UINT_MAX : item.line;
        size_t j = i;
        while (j > ld->first_diag &&
               (items[j - 1].line == 0 ? UINT_MAX : items[j - 1].line) > key) {
            items[j] = items[j - 1];
            j--;
        }
        items[j] = item;
    }
}

void crd_diagnostics_clear(struct crd_diagnostics *diag)
{
    if (diag == NULL) {
        return;
    }
    for (size_t i = 0; i < diag->n_items; i++) {
        free(diag->items[i].section);
        free(diag->items[i].key);
        free(diag->items[i].message);
    }
    free(diag->items);
    *diag = (struct crd_diagnostics){0};
}
