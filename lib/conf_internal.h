/* SPDX-License-Identifier: MIT */
/*
 * Declarations shared by the files of the configuration loader (conf.c and
 * conf_*.c). They are not part of the public interface in conf.h. The header
 * comment of conf.c says which file does what.
 */
#ifndef CRD_CONF_INTERNAL_H
#define CRD_CONF_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Maximum length of a value quoted in a message; longer ones are cut with "...". */
#define CONF_SHOWN_VALUE_MAX 120
/* Maximum number of options in one section's table. */
#define CONF_MAX_OPTIONS 16

/* ------------------------------------------------------------------------ */
/* Option tables                                                            */

enum conf_type {
    CONF_STRING,       /* non-empty, printable */
    CONF_PATH,         /* non-empty file name */
    CONF_ABS_PATH,     /* file name starting with '/' */
    CONF_URL,          /* https, or http to a loopback host; no query; trailing '/' dropped */
    CONF_PROXY_URL,    /* http, https, socks4, socks4a, socks5 or socks5h */
    CONF_TENANT,       /* GUID or DNS domain name, stored in lower case */
    CONF_TENANT_ID,    /* GUID only, stored in lower case: tenant in [tenant NAME] */
    CONF_GUID,         /* 8-4-4-4-12 hexadecimal, stored in lower case */
    CONF_BOOL,         /* on/off, true/false, yes/no, 1/0 */
    CONF_UNSIGNED,     /* decimal, min..max */
    CONF_SIZE,         /* bytes with an optional K, KiB, M or MiB suffix, min..max */
    CONF_SECONDS,      /* decimal with an optional "s", min..max */
    CONF_MINUTES,      /* decimal with an optional "min", min..max */
    CONF_DURATION,     /* decimal with ms, s, min or h (bare: seconds), stored in ms, min..max ms */
    CONF_ENUM,         /* one of names[] */
    CONF_LOG_LEVEL,    /* crd_log_level_from_string() */
    CONF_LOG_DEBUG,    /* comma list of crd_log_subsystem_mask_from_string() */
    CONF_ADDRESS,      /* numeric IPv4 or IPv6 address, brackets allowed */
    CONF_HTTP_PATH,    /* starts with '/', no '?', '#' or white space */
    CONF_CHANGE_TYPE,  /* comma list of created, updated */
};

#define CONF_REQUIRED (1u << 0)
/* CONF_DURATION: a number without a unit is in minutes, not seconds (older minute-only keys). */
#define CONF_BARE_MINUTES (1u << 1)
/*
 * The member is in struct crd_config_tenant. In [graph] and [subscription] it
 * is stored into tenants[0] when the file has no [tenant NAME] section.
 */
#define CONF_TENANT_FIELD (1u << 2)
/*
 * A key of [tenant NAME] sections. Once the file has such a section, the key
 * is an error in [graph] and [subscription], which no longer describe a tenant.
 */
#define CONF_TENANT_KEY (1u << 3)

struct conf_option {
    const char *name;
    enum conf_type type;
    unsigned flags;
    const char *default_value;  /* as written in the file; NULL: none, or computed later */
    const char *unit;           /* for documentation and numeric suffixes */
    size_t offset;              /* into struct crd_config, crd_config_sink or crd_config_tenant */
    size_t size;                /* of that member */
    uint64_t min;
    uint64_t max;
    const char *const *names;   /* CONF_ENUM */
    size_t n_names;
    unsigned sink_types;        /* [sink]: bit (1 << enum crd_sink_type) per type; 0: all */
    const char *description;
};

enum conf_kind {
    CONF_KIND_GRAPH,
    CONF_KIND_LISTENER,
    CONF_KIND_SUBSCRIPTION,
    CONF_KIND_STORE,
    CONF_KIND_FETCH,
    CONF_KIND_RECONCILE,
    CONF_KIND_LOG,
    CONF_KIND_SINK,
    CONF_KIND_TENANT,
    CONF_KIND__COUNT
};

/* A section's name as written in its header, and its option table. */
struct conf_section_def {
    const char *name;
    const struct conf_option *options;
    size_t n_options;
};

/* Indexed by enum conf_kind, and defined in conf.c. */
extern const struct conf_section_def conf_section_defs[CONF_KIND__COUNT];

/* ------------------------------------------------------------------------ */
/* The file as read: sections of entries, before any value is interpreted   */

struct conf_entry {
    char *key;
    char *value;
    unsigned line;
};

enum conf_status {
    CONF_UNSET,    /* not in the file: the default applies */
    CONF_SET,      /* parsed and stored */
    CONF_INVALID,  /* in the file, but wrong: already reported */
};

struct conf_section {
    enum conf_kind kind;
    char *label;          /* "graph", "sink NAME" or "tenant NAME", as messages show it */
    unsigned line;        /* of the header; 0 when the section is not in the file */
    size_t sink_index;    /* CONF_KIND_SINK: index into config->sinks */
    size_t tenant_index;  /* CONF_KIND_TENANT: index into config->tenants */
    struct conf_entry *entries;
    size_t n_entries;
    unsigned char status[CONF_MAX_OPTIONS];  /* enum conf_status per option */
};

struct loader {
    const char *path;
    const char *credentials_directory;  /* NULL or non-empty */
    const char *state_directory;        /* NULL or non-empty */
    struct crd_config *config;
    struct crd_diagnostics *diag;
    size_t first_diag;   /* diagnostics of this load start here */
    size_t n_errors;     /* errors added by this load */
    bool oom;

    struct conf_section *sections;  /* fixed kinds at index == kind, then sinks and tenants */
    size_t n_sections;

    size_t n_tenant_sections;       /* 0: the [graph] form, with one tenant */
    unsigned first_tenant_line;     /* header of the first [tenant NAME] section */
    /*
     * With [tenant NAME] sections: the tenant fields that [subscription] sets
     * for all of them (only resource), copied into each tenant.
     */
    struct crd_config_tenant shared_tenant;
};

/* ------------------------------------------------------------------------ */
/* Shared functions, grouped by the file that defines them                  */

/* conf_reader.c: text helpers */
bool conf_is_space(char c);
char *conf_trim(char *s);
bool conf_is_alnum(char c);
char conf_lower(char c);
void conf_lowercase(char *s);
bool conf_is_token(const char *s, size_t len);
const char *conf_closest(const char *word, const char *const *candidates, size_t n);

/* conf_reader.c: sections and the INI reader */
void conf_section_free(struct conf_section *s);
struct conf_section *conf_add_section(struct loader *ld, enum conf_kind kind, const char *label,
                                      unsigned line);
struct conf_section *conf_fixed_section(struct loader *ld, enum conf_kind kind);
const struct conf_entry *conf_find_entry(const struct conf_section *s, const char *key);
const char *conf_section_owning_key(const char *key);
int conf_read_file(struct loader *ld);

/* conf_diagnostics.c */
char *conf_url_for_display(const char *value);
void conf_join_names(const char *const *names, size_t n, char *buf, size_t size);
__attribute__((format(printf, 7, 8))) void
conf_add_diag(struct loader *ld, enum crd_diagnostic_severity severity, unsigned line,
              const char *section, const char *key, const char *value, const char *fmt, ...);
void conf_sort_diagnostics(struct loader *ld);

/* conf_values.c */
/* The reason a value is invalid, shown after "key = 'value': " in its diagnostic. */
struct conf_problem {
    char text[1024];
};

int conf_parse_option(struct loader *ld, const struct conf_option *opt, const char *value,
                      void *base, struct conf_problem *p);

/* conf.c */
const struct conf_option *conf_find_option(enum conf_kind kind, const char *key,
                                           size_t *ret_index);

/* conf_secrets.c: a key's line, value and status, for messages and checks */
unsigned conf_key_line(const struct conf_section *s, const char *key);
const char *conf_key_value(const struct conf_section *s, const char *key);
bool conf_option_set(const struct conf_section *s, const char *key);
bool conf_option_invalid(const struct conf_section *s, const char *key);

/*
 * conf_secrets.c: secret files and TLS material, read into ld->config. s is
 * the section whose keys name the files, and credential_suffix is appended
 * to the names in $CREDENTIALS_DIRECTORY ("" or ".NAME").
 */
void conf_load_client_secret(struct loader *ld, const struct conf_section *s,
                             struct crd_config_tenant *tenant, const char *credential_suffix);
void conf_load_client_state(struct loader *ld, const struct conf_section *s,
                            struct crd_config_tenant *tenant, const char *credential_suffix);
void conf_load_tls(struct loader *ld);

/* conf_tenants.c */
int conf_setup_tenants(struct loader *ld);
void conf_report_tenant_key(struct loader *ld, const struct conf_section *s,
                            const struct conf_entry *e);
void conf_validate_tenants(struct loader *ld, bool load_secrets);
void conf_tenant_clear(struct crd_config_tenant *tenant);

#endif
