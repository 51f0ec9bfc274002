/* SPDX-License-Identifier: MIT */
/*
 * Parsing of typed values. The text of each entry is parsed by its option's
 * type (numbers with units, booleans, URLs, tenants, paths, lists), and the
 * result is stored into struct crd_config or struct crd_config_sink.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf_internal.h"
#include "util.h"

#define CONF_HTTP_PATH_MAX 1024

/* ------------------------------------------------------------------------ */
/* Values                                                                   */

__attribute__((format(printf, 2, 3))) static int fail(struct conf_problem *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->text, sizeof(p->text), fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static int store_string(struct loader *ld, const struct conf_option *opt, void *base,
                        const char *text, size_t len)
{
    char *copy = strndup(text, len);
    if (copy == NULL) {
        ld->oom = true;
        return -ENOMEM;
    }
    char **slot = (char **)(void *)((char *)base + opt->offset);
    free(*slot);
    *slot = copy;
    return 0;
}

static void store_number(const struct conf_option *opt, void *base, uint64_t value)
{
    char *slot = (char *)base + opt->offset;
    if (opt->size == sizeof(uint16_t)) {
        uint16_t v = (uint16_t)value;
        memcpy(slot, &v, sizeof(v));
    } else if (opt->size == sizeof(uint32_t)) {
        uint32_t v = (uint32_t)value;
        memcpy(slot, &v, sizeof(v));
    } else {
        uint64_t v = value;
        memcpy(slot, &v, sizeof(v));
    }
}

static void store_int(const struct conf_option *opt, void *base, int value)
{
    memcpy((char *)base + opt->offset, &value, sizeof(value));
}

static void format_size(uint64_t bytes, char *buf, size_t size)
{
    if (bytes >= 1024 * 1024 && bytes % (1024 * 1024) == 0) {
        snprintf(buf, size, "%lluM", (unsigned long long)(bytes / (1024 * 1024)));
    } else if (bytes >= 1024 && bytes % 1024 == 0) {
        snprintf(buf, size, "%lluK", (unsigned long long)(bytes / 1024));
    } else {
        snprintf(buf, size, "%llu", (unsigned long long)bytes);
    }
}

/*
 * Parses a decimal number, then an optional unit suffix (white space between
 * allowed) that must be one of suffixes[] with its multiplier.
 */
struct conf_suffix {
    const char *text;
    uint64_t multiplier;
};

static int parse_number(const char *value, const struct conf_suffix *suffixes, size_t n_suffixes,
                        uint64_t *ret, struct conf_problem *p, const char *expected)
{
    const char *s = value;
    uint64_t n = 0;
    if (*s < '0' || *s > '9') {
        return fail(p, "not a number; write %s", expected);
    }
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned digit = (unsigned)(*s - '0');
        if (n > (UINT64_MAX - digit) / 10) {
            return fail(p, "the number is far too large; write %s", expected);
        }
        n = n * 10 + digit;
    }
    while (conf_is_space(*s)) {
        s++;
    }
    uint64_t multiplier = 1;
    if (*s != '\0') {
        bool known = false;
        for (size_t i = 0; i < n_suffixes; i++) {
            if (strcasecmp(s, suffixes[i].text) == 0) {
                multiplier = suffixes[i].multiplier;
                known = true;
                break;
            }
        }
        if (!known) {
            return fail(p, "unexpected '%.*s' after the number; write %s", CONF_SHOWN_VALUE_MAX, s,
                        expected);
        }
    }
    if (n > UINT64_MAX / multiplier) {
        return fail(p, "the number is far too large; write %s", expected);
    }
    *ret = n * multiplier;
    return 0;
}

static int parse_ranged(const struct conf_option *opt, const char *value, void *base,
                        struct conf_problem *p)
{
    static const struct conf_suffix size_suffixes[] = {
        {"K", 1024}, {"KiB", 1024}, {"M", 1024 * 1024}, {"MiB", 1024 * 1024},
    };
    static const struct conf_suffix second_suffixes[] = {{"s", 1}};
    static const struct conf_suffix minute_suffixes[] = {{"min", 1}};
    static const struct conf_suffix duration_suffixes[] = {
        {"ms", 1}, {"s", 1000}, {"min", 60 * 1000}, {"h", 60 * 60 * 1000},
    };
    uint64_t n = 0;
    int r = 0;
    char expected[128];

    switch (opt->type) {
    case CONF_SIZE: {
        char lo[32];
        char hi[32];
        format_size(opt->min, lo, sizeof(lo));
        format_size(opt->max, hi, sizeof(hi));
        snprintf(expected, sizeof(expected), "a size from %s to %s bytes, e.g. 512K or 2M", lo, hi);
        r = parse_number(value, size_suffixes, ARRAY_SIZE(size_suffixes), &n, p, expected);
        if (r == 0 && (n < opt->min || n > opt->max)) {
            return fail(p, "out of range; write %s", expected);
        }
        break;
    }
    case CONF_SECONDS:
    case CONF_MINUTES: {
        bool seconds = opt->type == CONF_SECONDS;
        snprintf(expected, sizeof(expected), "a number of %s from %llu to %llu",
                 seconds ? "seconds" : "minutes", (unsigned long long)opt->min,
                 (unsigned long long)opt->max);
        r = parse_number(value, seconds ? second_suffixes : minute_suffixes, 1, &n, p, expected);
        break;
    }
    case CONF_DURATION: {
        snprintf(expected, sizeof(expected),
                 "a duration from %llu ms to %llu s with a unit, e.g. 500ms, 30s, 15min or 4h",
                 (unsigned long long)opt->min, (unsigned long long)opt->max / 1000);
        size_t len = strlen(value);
        bool bare = len > 0 && value[len - 1] >= '0' && value[len - 1] <= '9';
        r = parse_number(value, duration_suffixes, ARRAY_SIZE(duration_suffixes), &n, p,
                         expected);
        if (r == 0 && bare) {
            /*
             * A number without a unit is in seconds, like the other time options,
             * or in minutes for the keys that took only minutes before.
             */
            uint64_t unit_ms = (opt->flags & CONF_BARE_MINUTES) != 0 ? 60000 : 1000;
            if (n > UINT64_MAX / unit_ms) {
                return fail(p, "the number is far too large; write %s", expected);
            }
            n *= unit_ms;
        }
        break;
    }
    default:
        snprintf(expected, sizeof(expected), "a whole number from %llu to %llu",
                 (unsigned long long)opt->min, (unsigned long long)opt->max);
        r = parse_number(value, NULL, 0, &n, p, expected);
        break;
    }
    if (r < 0) {
        return r;
    }
    if (n < opt->min || n > opt->max) {
        return fail(p, "out of range; write %s", expected);
    }
    store_number(opt, base, n);
    return 0;
}

static int parse_bool(const char *value, bool *ret)
{
    static const char *const yes[] = {"on", "true", "yes", "1"};
    static const char *const no[] = {"off", "false", "no", "0"};
    for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
        if (strcasecmp(value, yes[i]) == 0) {
            *ret = true;
            return 0;
        }
        if (strcasecmp(value, no[i]) == 0) {
            *ret = false;
            return 0;
        }
    }
    return -EINVAL;
}

static bool is_domain_name(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 253) {
        return false;
    }
    size_t labels = 0;
    const char *label = s;
    for (;;) {
        const char *dot = strchr(label, '.');
        size_t label_len = dot != NULL ? (size_t)(dot - label) : strlen(label);
        if (label_len == 0 || label_len > 63 || label[0] == '-' || label[label_len - 1] == '-') {
            return false;
        }
        bool all_digits = true;
        for (size_t i = 0; i < label_len; i++) {
            if (!conf_is_alnum(label[i]) && label[i] != '-') {
                return false;
            }
            if (label[i] < '0' || label[i] > '9') {
                all_digits = false;
            }
        }
        labels++;
        if (dot == NULL) {
            /* A top-level domain is never all digits: that would be an IPv4 address. */
            return labels >= 2 && !all_digits;
        }
        label = dot + 1;
    }
}

/* URL pieces, pointing into the parsed string. */
struct conf_url {
    char scheme[16];
    const char *host;     /* without brackets for IPv6 */
    size_t host_len;
    bool ipv6;
    bool userinfo;
    const char *path;     /* from the first '/', '?' or '#' after the authority */
    bool query_or_fragment;
};

static int parse_url(const char *value, struct conf_url *u, struct conf_problem *p,
                     const char *example)
{
    *u = (struct conf_url){0};
    for (const char *c = value; *c != '\0'; c++) {
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f) {
            return fail(p, "a URL cannot contain spaces or control characters; percent-encode "
                           "them (%%20)");
        }
    }
    const char *sep = strstr(value, "://");
    size_t scheme_len = sep != NULL ? (size_t)(sep - value) : 0;
    if (sep == NULL || scheme_len == 0 || scheme_len >= sizeof(u->scheme)) {
        return fail(p, "not an absolute URL; write it with its scheme, e.g. '%s'", example);
    }
    for (size_t i = 0; i < scheme_len; i++) {
        u->scheme[i] = conf_lower(value[i]);
    }

    const char *authority = sep + 3;
    size_t authority_len = strcspn(authority, "/?#");
    u->path = authority + authority_len;
    u->query_or_fragment = strpbrk(u->path, "?#") != NULL;

    const char *at = memchr(authority, '@', authority_len);
    const char *host = authority;
    if (at != NULL) {
        /* There may be more than one '@' in a password; the host follows the last. */
        for (const char *c = authority; c < authority + authority_len; c++) {
            if (*c == '@') {
                at = c;
            }
        }
        u->userinfo = true;
        host = at + 1;
    }
    const char *end = authority + authority_len;
    const char *port = NULL;
    if (host < end && *host == '[') {
        const char *close = memchr(host, ']', (size_t)(end - host));
        if (close == NULL) {
            return fail(p, "an IPv6 address in a URL needs its closing ']'; e.g. '%s'", example);
        }
        char address[INET6_ADDRSTRLEN + 1];
        size_t len = (size_t)(close - host - 1);
        struct in6_addr in6;
        if (len >= sizeof(address)) {
            return fail(p, "invalid IPv6 address in the URL; e.g. 'https://[2001:db8::1]:8443'");
        }
        memcpy(address, host + 1, len);
        address[len] = '\0';
        if (inet_pton(AF_INET6, address, &in6) != 1) {
            return fail(p, "invalid IPv6 address in the URL; e.g. 'https://[2001:db8::1]:8443'");
        }
        u->host = host + 1;
        u->host_len = len;
        u->ipv6 = true;
        if (close + 1 < end) {
            if (close[1] != ':') {
                return fail(p, "unexpected text after the IPv6 address; e.g. '%s'", example);
            }
            port = close + 2;
        }
    } else {
        const char *colon = memchr(host, ':', (size_t)(end - host));
        u->host = host;
        u->host_len = (size_t)((colon != NULL ? colon : end) - host);
        if (colon != NULL) {
            port = colon + 1;
        }
        for (size_t i = 0; i < u->host_len; i++) {
            char c = host[i];
            if (!conf_is_alnum(c) && c != '-' && c != '.' && c != '_') {
                return fail(p, "invalid character '%c' in the host name; e.g. '%s'", c, example);
            }
        }
    }
    if (u->host_len == 0) {
        return fail(p, "the URL has no host; e.g. '%s'", example);
    }
    if (port != NULL) {
        unsigned long n = 0;
        size_t digits = 0;
        for (const char *c = port; c < end; c++, digits++) {
            if (*c < '0' || *c > '9' || digits >= 5) {
                return fail(p, "invalid port in the URL; use 1 to 65535, e.g. '%s'", example);
            }
            n = n * 10 + (unsigned long)(*c - '0');
        }
        if (digits == 0 || n < 1 || n > 65535) {
            return fail(p, "invalid port in the URL; use 1 to 65535, e.g. '%s'", example);
        }
    }
    return 0;
}

static bool url_host_is_loopback(const struct conf_url *u)
{
    char host[256];
    if (u->host_len >= sizeof(host)) {
        return false;
    }
    memcpy(host, u->host, u->host_len);
    host[u->host_len] = '\0';
    if (u->ipv6) {
        struct in6_addr in6;
        return inet_pton(AF_INET6, host, &in6) == 1 && memcmp(&in6, &in6addr_loopback, 16) == 0;
    }
    if (strcasecmp(host, "localhost") == 0 || strcasecmp(host, "localhost.") == 0) {
        return true;
    }
    struct in_addr in4;
    return inet_pton(AF_INET, host, &in4) == 1 && (ntohl(in4.s_addr) >> 24) == 127;
}

static int parse_http_url(struct loader *ld, const struct conf_option *opt, const char *value,
                          void *base, struct conf_problem *p)
{
    const char *example = strcmp(opt->name, "public_url") == 0
                              ? "https://callrecd.example.com:8443"
                              : "https://graph.microsoft.com";
    struct conf_url u;
    int r = parse_url(value, &u, p, example);
    if (r < 0) {
        return r;
    }
    if (strcmp(u.scheme, "http") == 0) {
        if (!url_host_is_loopback(&u)) {
            return fail(p, "plain http is allowed only for a loopback host (127.0.0.1, ::1, "
                           "localhost), for tests; use https, e.g. '%s'",
                        example);
        }
    } else if (strcmp(u.scheme, "https") != 0) {
        return fail(p, "unsupported scheme '%s'; use https, e.g. '%s'", u.scheme, example);
    }
    if (u.userinfo) {
        return fail(p, "user names or passwords in this URL are not supported; remove the part "
                       "before '@'");
    }
    if (u.query_or_fragment) {
        return fail(p, "the URL has a query or fragment ('?' or '#'); give the base URL only, "
                       "e.g. '%s'",
                    example);
    }
    size_t len = strlen(value);
    while (len > (size_t)(u.path - value) && value[len - 1] == '/') {
        len--;
    }
    return store_string(ld, opt, base, value, len);
}

static int parse_proxy_url(struct loader *ld, const struct conf_option *opt, const char *value,
                           void *base, struct conf_problem *p)
{
    static const char *const schemes[] = {"http", "https", "socks4", "socks4a", "socks5",
                                          "socks5h"};
    const char *example = "http://proxy.example.com:3128";
    struct conf_url u;
    int r = parse_url(value, &u, p, example);
    if (r < 0) {
        return r;
    }
    bool known = false;
    for (size_t i = 0; i < ARRAY_SIZE(schemes); i++) {
        known = known || strcmp(u.scheme, schemes[i]) == 0;
    }
    if (!known) {
        return fail(p, "unsupported proxy scheme '%s'; use http, https, socks4, socks4a, socks5 "
                       "or socks5h, e.g. '%s'",
                    u.scheme, example);
    }
    if (u.query_or_fragment) {
        return fail(p, "a proxy URL has no query or fragment; e.g. '%s'", example);
    }
    return store_string(ld, opt, base, value, strlen(value));
}

static int parse_http_path(struct loader *ld, const struct conf_option *opt, const char *value,
                           void *base, struct conf_problem *p)
{
    size_t len = strlen(value);
    if (len == 0 || value[0] != '/') {
        return fail(p, "must start with '/', e.g. '%s'",
                    opt->default_value != NULL ? opt->default_value : "/notify");
    }
    if (len > CONF_HTTP_PATH_MAX) {
        return fail(p, "longer than %d characters; use a shorter path", CONF_HTTP_PATH_MAX);
    }
    if (!conf_is_token(value, len)) {
        return fail(p, "contains a space or a control character; use plain ASCII such as '%s'",
                    opt->default_value != NULL ? opt->default_value : "/notify");
    }
    if (strpbrk(value, "?#") != NULL) {
        return fail(p, "a path cannot contain '?' or '#'; remove the query or fragment");
    }
    return store_string(ld, opt, base, value, len);
}

static int parse_change_type(struct loader *ld, const struct conf_option *opt, const char *value,
                             void *base, struct conf_problem *p)
{
    bool created = false;
    bool updated = false;
    char *copy = strdup(value);
    if (copy == NULL) {
        ld->oom = true;
        return -ENOMEM;
    }
    int r = 0;
    char *item = copy;
    for (;;) {
        char *comma = strchr(item, ',');
        if (comma != NULL) {
            *comma = '\0';
        }
        char *name = conf_trim(item);
        bool *flag = NULL;
        if (strcmp(name, "created") == 0) {
            flag = &created;
        } else if (strcmp(name, "updated") == 0) {
            flag = &updated;
        } else if (*name == '\0') {
            r = fail(p, "empty change type in the list; write created, updated or "
                        "created,updated");
            goto out;
        } else if (strcmp(name, "deleted") == 0) {
            r = fail(p, "call records support only the change types created and updated; remove "
                        "'deleted'");
            goto out;
        } else {
            r = fail(p, "unknown change type '%.*s'; call records support created and updated; "
                        "write created, updated or created,updated",
                     CONF_SHOWN_VALUE_MAX, name);
            goto out;
        }
        if (*flag) {
            r = fail(p, "'%s' is listed twice; name it once", name);
            goto out;
        }
        *flag = true;
        if (comma == NULL) {
            break;
        }
        item = comma + 1;
    }
    const char *normal = created && updated ? "created,updated" : (created ? "created" : "updated");
    r = store_string(ld, opt, base, normal, strlen(normal));
out:
    free(copy);
    return r;
}

static int parse_log_debug(struct loader *ld, const struct conf_option *opt, const char *value,
                           void *base, struct conf_problem *p)
{
    unsigned mask = 0;
    char *copy = strdup(value);
    if (copy == NULL) {
        ld->oom = true;
        return -ENOMEM;
    }
    int r = 0;
    if (*conf_trim(copy) == '\0') {
        goto done;  /* an empty list: no debug messages */
    }
    char *item = copy;
    for (;;) {
        char *comma = strchr(item, ',');
        if (comma != NULL) {
            *comma = '\0';
        }
        char *name = conf_trim(item);
        unsigned bit = 0;
        if (crd_log_subsystem_mask_from_string(name, &bit) < 0) {
            const char *names[CRD_LOG_SUBSYSTEM__COUNT + 1];
            for (unsigned i = 0; i < CRD_LOG_SUBSYSTEM__COUNT; i++) {
                names[i] = crd_log_subsystem_name((enum crd_log_subsystem)i);
            }
            names[CRD_LOG_SUBSYSTEM__COUNT] = "all";
            char list[256];
            conf_join_names(names, ARRAY_SIZE(names), list, sizeof(list));
            const char *guess = conf_closest(name, names, ARRAY_SIZE(names));
            if (*name == '\0') {
                r = fail(p, "empty name in the list; write names separated by commas, from %s",
                         list);
            } else if (guess != NULL) {
                r = fail(p, "unknown subsystem '%.*s'; did you mean '%s'? The subsystems are %s",
                         CONF_SHOWN_VALUE_MAX, name, guess, list);
            } else {
                r = fail(p, "unknown subsystem '%.*s'; use a comma list of %s",
                         CONF_SHOWN_VALUE_MAX, name, list);
            }
            goto out;
        }
        mask |= bit;
        if (comma == NULL) {
            break;
        }
        item = comma + 1;
    }
done:
    store_number(opt, base, mask);
out:
    free(copy);
    return r;
}

/* Parses value by opt's type and stores it into base (a config or a sink). */
int conf_parse_option(struct loader *ld, const struct conf_option *opt, const char *value,
                      void *base, struct conf_problem *p)
{
    size_t len = strlen(value);

    switch (opt->type) {
    case CONF_STRING:
        if (len == 0) {
            return fail(p, "empty value; give a value or remove the line to use the default");
        }
        return store_string(ld, opt, base, value, len);

    case CONF_PATH:
    case CONF_ABS_PATH:
        if (len == 0) {
            return fail(p, "empty path; give a file name or remove the line");
        }
        if (opt->type == CONF_ABS_PATH && value[0] != '/') {
            return fail(p, "not an absolute path; write the full path starting with '/'");
        }
        if (len >= PATH_MAX) {
            return fail(p, "the path is longer than %d bytes; use a shorter one", PATH_MAX - 1);
        }
        for (size_t i = 0; i < len; i++) {
            if ((unsigned char)value[i] < 0x20 || value[i] == 0x7f) {
                return fail(p, "the path contains a control character; remove it");
            }
        }
        return store_string(ld, opt, base, value, len);

    case CONF_URL:
        return parse_http_url(ld, opt, value, base, p);

    case CONF_PROXY_URL:
        return parse_proxy_url(ld, opt, value, base, p);

    case CONF_TENANT: {
        char *lower = strdup(value);
        if (lower == NULL) {
            ld->oom = true;
            return -ENOMEM;
        }
        conf_lowercase(lower);
        int r = 0;
        if (strcmp(lower, "common") == 0 || strcmp(lower, "organizations") == 0 ||
            strcmp(lower, "consumers") == 0) {
            r = fail(p, "'%s' names no single tenant and cannot get an app-only token; use the "
                        "Directory (tenant) ID or a domain such as contoso.onmicrosoft.com",
                     lower);
        } else if (!crd_guid_is_valid(lower, len) && !is_domain_name(lower)) {
            r = fail(p, "neither a GUID nor a domain name; use the Directory (tenant) ID, e.g. "
                        "'00000000-0000-0000-0000-000000000000', or a domain such as "
                        "contoso.onmicrosoft.com");
        } else {
            r = store_string(ld, opt, base, lower, len);
        }
        free(lower);
        return r;
    }

    case CONF_TENANT_ID: {
        /* Notifications carry the tenant's directory id, the only name a section can match. */
        if (!crd_guid_is_valid(value, len)) {
            return fail(p, "%s; a [tenant NAME] section needs the Directory (tenant) ID, a GUID, "
                           "because notifications name the tenant by its directory id; copy it "
                           "from the tenant's overview in the Microsoft Entra admin center, e.g. "
                           "'00000000-0000-0000-0000-000000000000'",
                        is_domain_name(value) ? "a domain name" : "not a GUID");
        }
        int r = store_string(ld, opt, base, value, len);
        if (r == 0) {
            conf_lowercase(*(char **)(void *)((char *)base + opt->offset));
        }
        return r;
    }

    case CONF_GUID: {
        if (!crd_guid_is_valid(value, len)) {
            return fail(p, "not a GUID; copy the Application (client) ID from the app "
                           "registration's overview, e.g. '00000000-0000-0000-0000-000000000000'");
        }
        int r = store_string(ld, opt, base, value, len);
        if (r == 0) {
            conf_lowercase(*(char **)(void *)((char *)base + opt->offset));
        }
        return r;
    }

    case CONF_BOOL: {
        bool b = false;
        if (parse_bool(value, &b) < 0) {
            return fail(p, "not a boolean; write on or off (also true/false, yes/no, 1/0)");
        }
        memcpy((char *)base + opt->offset, &b, sizeof(b));
        return 0;
    }

    case CONF_UNSIGNED:
    case CONF_SIZE:
    case CONF_SECONDS:
    case CONF_MINUTES:
    case CONF_DURATION:
        return parse_ranged(opt, value, base, p);

    case CONF_ENUM: {
        for (size_t i = 0; i < opt->n_names; i++) {
            if (strcasecmp(value, opt->names[i]) == 0) {
                store_int(opt, base, (int)i);
                return 0;
            }
        }
        char list[256];
        conf_join_names(opt->names, opt->n_names, list, sizeof(list));
        const char *guess = conf_closest(value, opt->names, opt->n_names);
        if (guess != NULL) {
            return fail(p, "unknown value; did you mean '%s'? Use %s", guess, list);
        }
        return fail(p, "unknown value; use %s", list);
    }

    case CONF_LOG_LEVEL: {
        enum crd_log_level level = CRD_LOG_INFO;
        char *lower = strdup(value);
        if (lower == NULL) {
            ld->oom = true;
            return -ENOMEM;
        }
        conf_lowercase(lower);
        int r = crd_log_level_from_string(lower, &level);
        free(lower);
        if (r < 0) {
            return fail(p, "unknown log level; use error, warning, notice, info or debug");
        }
        store_int(opt, base, (int)level);
        return 0;
    }

    case CONF_LOG_DEBUG:
        return parse_log_debug(ld, opt, value, base, p);

    case CONF_ADDRESS: {
        const char *address = value;
        size_t address_len = len;
        if (len >= 2 && value[0] == '[' && value[len - 1] == ']') {
            address++;
            address_len -= 2;
        }
        char buf[INET6_ADDRSTRLEN + 1];
        unsigned char scratch[sizeof(struct in6_addr)];
        if (address_len >= sizeof(buf)) {
            return fail(p, "not a numeric IP address; use e.g. '::' (all), '0.0.0.0' or "
                           "'127.0.0.1' (host names are not looked up)");
        }
        memcpy(buf, address, address_len);
        buf[address_len] = '\0';
        if (inet_pton(AF_INET6, buf, scratch) != 1 && inet_pton(AF_INET, buf, scratch) != 1) {
            return fail(p, "not a numeric IP address; use e.g. '::' (all), '0.0.0.0' or "
                           "'127.0.0.1' (host names are not looked up)");
        }
        return store_string(ld, opt, base, buf, address_len);
    }

    case CONF_HTTP_PATH:
        return parse_http_path(ld, opt, value, base, p);

    case CONF_CHANGE_TYPE:
        return parse_change_type(ld, opt, value, base, p);
    }
    return fail(p, "internal error: unknown option type");
}
