/* SPDX-License-Identifier: MIT */
/*
 * The INI reader. It splits the file into sections of key = value entries and
 * reports syntax errors, before any value is interpreted. This file also
 * contains the small text helpers that the other conf_*.c files use.
 *
 * We read INI ourselves instead of using libinih: Debian's libinih 55 is
 * built with INI_MAX_LINE 200, so a line of several KiB (a long proxy URL or
 * path) cannot work, and its multi-line mode would silently join an indented
 * line to the previous value.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "conf_internal.h"

/* The whole file, so that a runaway file (a log named by mistake) is refused. */
#define CONF_MAX_FILE_SIZE (1024 * 1024)
/* NAME in [sink NAME] and [tenant NAME]. */
#define CONF_SECTION_NAME_MAX 64

/* ------------------------------------------------------------------------ */
/* Small string helpers                                                     */

bool conf_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

/* Trims s in place and returns the start of the trimmed text. */
char *conf_trim(char *s)
{
    while (conf_is_space(*s)) {
        s++;
    }
    size_t len = strlen(s);
    while (len > 0 && conf_is_space(s[len - 1])) {
        s[--len] = '\0';
    }
    return s;
}

bool conf_is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

char conf_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

void conf_lowercase(char *s)
{
    for (; *s != '\0'; s++) {
        *s = conf_lower(*s);
    }
}

/* True when every byte is printable ASCII other than a space. */
bool conf_is_token(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f) {
            return false;
        }
    }
    return true;
}

/* Levenshtein distance of two short strings; SIZE_MAX when either is too long. */
static size_t conf_edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a);
    size_t lb = strlen(b);
    if (la > 64 || lb > 64) {
        return SIZE_MAX;
    }
    size_t row[65];
    for (size_t j = 0; j <= lb; j++) {
        row[j] = j;
    }
    for (size_t i = 1; i <= la; i++) {
        size_t diagonal = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t above = row[j];
            size_t cost = conf_lower(a[i - 1]) == conf_lower(b[j - 1]) ? 0 : 1;
            size_t best = diagonal + cost;
            if (above + 1 < best) {
                best = above + 1;
            }
            if (row[j - 1] + 1 < best) {
                best = row[j - 1] + 1;
            }
            row[j] = best;
            diagonal = above;
        }
    }
    return row[lb];
}

static size_t conf_common_prefix(const char *a, const char *b)
{
    size_t n = 0;
    while (a[n] != '\0' && conf_lower(a[n]) == conf_lower(b[n])) {
        n++;
    }
    return n;
}

/*
 * The candidate an operator most likely meant, or NULL: the nearest one within
 * an edit distance of 3 and of about half the word's length (so that "foo"
 * does not become "tls"), else the one sharing the longest prefix of at least
 * 4 characters, or of which the word is a prefix (or the other way round).
 */
const char *conf_closest(const char *word, const char *const *candidates, size_t n)
{
    const char *best = NULL;
    size_t best_distance = SIZE_MAX;
    size_t word_len = strlen(word);
    for (size_t i = 0; i < n; i++) {
        size_t d = conf_edit_distance(word, candidates[i]);
        if (d <= 3 && 2 * d <= word_len + 1 && d < best_distance) {
            best = candidates[i];
            best_distance = d;
        }
    }
    if (best != NULL) {
        return best;
    }

    size_t best_prefix = 0;
    for (size_t i = 0; i < n; i++) {
        size_t p = conf_common_prefix(word, candidates[i]);
        size_t shorter = word_len < strlen(candidates[i]) ? word_len : strlen(candidates[i]);
        bool whole = p == shorter && p >= 3;
        if ((p >= 4 || whole) && p > best_prefix) {
            best = candidates[i];
            best_prefix = p;
        }
    }
    return best;
}

/* ------------------------------------------------------------------------ */
/* Reading the file into sections                                           */

void conf_section_free(struct conf_section *s)
{
    for (size_t i = 0; i < s->n_entries; i++) {
        free(s->entries[i].key);
        free(s->entries[i].value);
    }
    free(s->entries);
    free(s->label);
}

struct conf_section *conf_add_section(struct loader *ld, enum conf_kind kind, const char *label,
                                      unsigned line)
{
    char *copy = strdup(label);
    struct conf_section *sections =
        copy != NULL ? realloc(ld->sections, (ld->n_sections + 1) * sizeof(*sections)) : NULL;
    if (sections == NULL) {
        free(copy);
        ld->oom = true;
        return NULL;
    }
    ld->sections = sections;
    struct conf_section *s = &sections[ld->n_sections++];
    *s = (struct conf_section){.kind = kind, .line = line, .label = copy};
    return s;
}

/* The one section of a fixed kind; made for every fixed kind before reading. */
struct conf_section *conf_fixed_section(struct loader *ld, enum conf_kind kind)
{
    return &ld->sections[kind];
}

const struct conf_entry *conf_find_entry(const struct conf_section *s, const char *key)
{
    for (size_t i = 0; i < s->n_entries; i++) {
        if (strcmp(s->entries[i].key, key) == 0) {
            return &s->entries[i];
        }
    }
    return NULL;
}

static bool is_valid_section_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > CONF_SECTION_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!conf_is_alnum(name[i]) && name[i] != '_' && name[i] != '-') {
            return false;
        }
    }
    return true;
}

static bool is_valid_key_name(const char *key)
{
    if (*key == '\0') {
        return false;
    }
    for (; *key != '\0'; key++) {
        if (!conf_is_alnum(*key) && *key != '_') {
            return false;
        }
    }
    return true;
}

/* The sections whose table has this key, for "it belongs in [listener]". */
const char *conf_section_owning_key(const char *key)
{
    for (size_t k = 0; k < CONF_KIND__COUNT; k++) {
        for (size_t i = 0; i < conf_section_defs[k].n_options; i++) {
            if (strcmp(conf_section_defs[k].options[i].name, key) == 0) {
                if (k == CONF_KIND_SINK || k == CONF_KIND_TENANT) {
                    return k == CONF_KIND_SINK ? "sink NAME" : "tenant NAME";
                }
                return conf_section_defs[k].name;
            }
        }
    }
    return NULL;
}

/* Returned for a header whose section's keys are to be skipped. */
#define CONF_SKIP SIZE_MAX

/*
 * Handles "[tenant NAME]". A duplicate name is reported but still gets a
 * section of its own, so that its keys are checked too.
 */
static size_t read_tenant_header(struct loader *ld, const char *argument, unsigned number)
{
    if (*argument == '\0') {
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, "tenant", NULL, NULL,
                      "a tenant section needs a name; write it as [tenant NAME], e.g. "
                      "[tenant contoso]");
        return CONF_SKIP;
    }
    if (!is_valid_section_name(argument)) {
        /* Not shown, as for sinks: whatever sits in brackets might be anything. */
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, "tenant", NULL, NULL,
                      "invalid tenant name; use 1 to %d letters, digits, '_' or '-', e.g. "
                      "[tenant contoso]",
                      CONF_SECTION_NAME_MAX);
        return CONF_SKIP;
    }
    char label[CONF_SECTION_NAME_MAX + 16];
    snprintf(label, sizeof(label), "tenant %s", argument);
    for (size_t i = 0; i < ld->n_sections; i++) {
        if (ld->sections[i].kind == CONF_KIND_TENANT &&
            strcmp(ld->sections[i].label, label) == 0) {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, label, NULL, NULL,
                          "duplicate tenant name; [%s] is already on line %u; give each tenant "
                          "its own name",
                          label, ld->sections[i].line);
            break;
        }
    }
    if (conf_add_section(ld, CONF_KIND_TENANT, label, number) == NULL) {
        return CONF_SKIP;
    }
    return ld->n_sections - 1;
}

/*
 * Handles a "[...]" line. Returns the index of the section later keys go to,
 * or CONF_SKIP when they are to be skipped (an unknown or malformed header,
 * already reported). An index, as adding a section moves them all.
 */
static size_t read_header(struct loader *ld, char *line, unsigned number)
{
    char *close = strchr(line, ']');
    if (close == NULL) {
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, NULL, NULL, NULL,
                      "section header without ']'; write it as [name] or [sink NAME]");
        return CONF_SKIP;
    }
    if (close[1] != '\0') {
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, NULL, NULL, NULL,
                      "text after the section header's ']'; put comments on a line of their own");
        return CONF_SKIP;
    }
    *close = '\0';
    char *inner = conf_trim(line + 1);
    if (strchr(inner, '[') != NULL) {
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, NULL, NULL, NULL,
                      "'[' inside a section header; write it as [name] or [sink NAME]");
        return CONF_SKIP;
    }

    char *name = inner;
    char *argument = inner;
    while (*argument != '\0' && !conf_is_space(*argument)) {
        argument++;
    }
    if (*argument != '\0') {
        *argument++ = '\0';
        argument = conf_trim(argument);
    }

    if (*name == '\0') {
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, NULL, NULL, NULL,
                      "empty section header '[]'; name the section, e.g. [graph]");
        return CONF_SKIP;
    }

    if (strcmp(name, "sink") == 0) {
        if (*argument == '\0') {
            conf_add_diag(
                ld, CRD_DIAGNOSTIC_ERROR, number, "sink", NULL, NULL,
                "a sink section needs a name; write it as [sink NAME], e.g. [sink archive]");
            return CONF_SKIP;
        }
        char label[CONF_SECTION_NAME_MAX + 16];
        if (!is_valid_section_name(argument)) {
            /* Not shown: whatever sits in brackets might be anything. */
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, "sink", NULL, NULL,
                          "invalid sink name; use 1 to %d letters, digits, '_' or '-', e.g. "
                          "[sink archive]",
                          CONF_SECTION_NAME_MAX);
            return CONF_SKIP;
        }
        snprintf(label, sizeof(label), "sink %s", argument);
        for (size_t i = 0; i < ld->n_sections; i++) {
            if (ld->sections[i].kind == CONF_KIND_SINK &&
                strcmp(ld->sections[i].label, label) == 0) {
                conf_add_diag(
                    ld, CRD_DIAGNOSTIC_ERROR, number, label, NULL, NULL,
                    "duplicate sink name; [%s] is already on line %u; give each sink its own "
                    "name",
                    label, ld->sections[i].line);
                return i;
            }
        }
        if (conf_add_section(ld, CONF_KIND_SINK, label, number) == NULL) {
            return CONF_SKIP;
        }
        return ld->n_sections - 1;
    }

    if (strcmp(name, "tenant") == 0) {
        return read_tenant_header(ld, argument, number);
    }

    for (size_t k = 0; k < CONF_KIND_SINK; k++) {
        if (strcmp(name, conf_section_defs[k].name) != 0) {
            continue;
        }
        if (*argument != '\0') {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, name, NULL, NULL,
                          "[%s] takes no name; write it as [%s]", name, name);
        }
        struct conf_section *s = conf_fixed_section(ld, (enum conf_kind)k);
        if (s->line != 0) {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, name, NULL, NULL,
                          "duplicate section; [%s] already starts on line %u; merge the two", name,
                          s->line);
        } else {
            s->line = number;
        }
        return k;
    }

    const char *names[CONF_KIND__COUNT];
    for (size_t k = 0; k < CONF_KIND__COUNT; k++) {
        names[k] = conf_section_defs[k].name;
    }
    const char *guess = conf_closest(name, names, CONF_KIND__COUNT);
    if (guess != NULL) {
        const char *shown = guess;
        if (strcmp(guess, "sink") == 0) {
            shown = "sink NAME";
        } else if (strcmp(guess, "tenant") == 0) {
            shown = "tenant NAME";
        }
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, name, NULL, NULL,
                      "unknown section; did you mean [%s]?", shown);
    } else {
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, name, NULL, NULL,
                      "unknown section; the sections are [graph], [listener], [subscription], "
                      "[store], [fetch], [reconcile], [log], [sink NAME] and [tenant NAME]");
    }
    return CONF_SKIP;
}

static void read_key_value(struct loader *ld, struct conf_section *s, bool skipping, char *line,
                           char *equals, unsigned number)
{
    *equals = '\0';
    char *key = conf_trim(line);
    char *value = conf_trim(equals + 1);
    const char *label = s != NULL ? s->label : NULL;

    if (*key == '\0') {
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, label, NULL, NULL,
                      "'=' without a key before it; write key = value");
        return;
    }
    if (!is_valid_key_name(key)) {
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, label, NULL, NULL,
                      "invalid key name '%.*s'; keys are made of letters, digits and '_'",
                      CONF_SHOWN_VALUE_MAX, key);
        return;
    }

    size_t len = strlen(value);
    if (len > 0 && value[0] == '"') {
        if (len < 2 || value[len - 1] != '"') {
            /* No value shown: an unterminated quote may hold anything. */
            conf_add_diag(
                ld, CRD_DIAGNOSTIC_ERROR, number, label, key, NULL,
                "the value opens a double quote but does not close it; add the closing '\"'");
            return;
        }
        value[len - 1] = '\0';
        value++;
    }

    if (skipping) {
        return;  /* inside an unknown section, already reported */
    }
    if (s == NULL) {
        const char *owner = conf_section_owning_key(key);
        if (owner != NULL) {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, NULL, key, NULL,
                          "key outside of any section; put it below the [%s] header", owner);
        } else {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, NULL, key, NULL,
                          "key outside of any section; put it below a section header such as "
                          "[graph]");
        }
        return;
    }

    const struct conf_entry *earlier = conf_find_entry(s, key);
    if (earlier != NULL) {
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, s->label, key, NULL,
                      "duplicate key; '%s' is already set on line %u; keep only one of them", key,
                      earlier->line);
        return;
    }

    struct conf_entry *entries = realloc(s->entries, (s->n_entries + 1) * sizeof(*entries));
    if (entries == NULL) {
        ld->oom = true;
        return;
    }
    s->entries = entries;
    struct conf_entry *e = &entries[s->n_entries];
    e->key = strdup(key);
    e->value = strdup(value);
    e->line = number;
    if (e->key == NULL || e->value == NULL) {
        free(e->key);
        free(e->value);
        ld->oom = true;
        return;
    }
    s->n_entries++;
}

/* Reads the file into ld->sections, reporting syntax errors. Returns 0 or -errno. */
int conf_read_file(struct loader *ld)
{
    int r = 0;
    char *line = NULL;
    size_t line_cap = 0;

    FILE *f = fopen(ld->path, "re");
    if (f == NULL) {
        r = -errno;
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, 0, NULL, NULL, NULL,
                      "cannot open the configuration file: %s; check the path, or start from the "
                      "example callrecd.conf",
                      strerror(-r));
        goto out;
    }
    struct stat st;
    if (fstat(fileno(f), &st) < 0) {
        r = -errno;
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, 0, NULL, NULL, NULL,
                      "cannot read the configuration file: %s", strerror(-r));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        r = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, 0, NULL, NULL, NULL,
                      "not a regular file; name the configuration file itself");
        goto out;
    }
    if (st.st_size > CONF_MAX_FILE_SIZE) {
        r = -EFBIG;
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, 0, NULL, NULL, NULL,
                      "the file is larger than %d bytes; is it the right file?",
                      CONF_MAX_FILE_SIZE);
        goto out;
    }

    size_t current = CONF_SKIP;  /* index of the section keys go to */
    bool skipping = false;       /* after an unknown or malformed section header */
    unsigned number = 0;
    size_t total = 0;
    for (;;) {
        errno = 0;
        ssize_t n = getline(&line, &line_cap, f);
        if (n < 0) {
            if (errno != 0 && !feof(f)) {
                r = -errno;
                conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, NULL, NULL, NULL,
                              "cannot read the configuration file: %s", strerror(-r));
                goto out;
            }
            break;
        }
        number++;
        total += (size_t)n;
        if (total > CONF_MAX_FILE_SIZE) {
            r = -EFBIG;
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number, NULL, NULL, NULL,
                          "the file is larger than %d bytes; is it the right file?",
                          CONF_MAX_FILE_SIZE);
            goto out;
        }
        if (strlen(line) != (size_t)n) {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number,
                          current != CONF_SKIP ? ld->sections[current].label : NULL, NULL, NULL,
                          "the line contains a NUL byte; is this a text file?");
            continue;
        }

        char *text = line;
        if (number == 1 && strncmp(text, "\xef\xbb\xbf", 3) == 0) {
            text += 3;  /* a UTF-8 byte order mark, as some editors write */
        }
        text = conf_trim(text);

        if (*text == '\0' || *text == '#' || *text == ';') {
            continue;
        }
        if (*text == '[') {
            current = read_header(ld, text, number);
            skipping = current == CONF_SKIP;
            continue;
        }
        char *equals = strchr(text, '=');
        if (equals != NULL) {
            read_key_value(ld, current != CONF_SKIP ? &ld->sections[current] : NULL, skipping,
                           text, equals, number);
            continue;
        }
        /* The text is not shown: a stray line may well be a pasted secret. */
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, number,
                      current != CONF_SKIP ? ld->sections[current].label : NULL, NULL, NULL,
                      "cannot parse this line; write key = value, a [section] header, or a comment "
                      "starting with '#' or ';' (a value cannot continue on the next line)");
    }

out:
    free(line);
    if (f != NULL) {
        fclose(f);
    }
    return r;
}
