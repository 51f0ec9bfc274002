/* SPDX-License-Identifier: MIT */
/*
 * The tenants callrecd serves. A file either has one [tenant NAME] section
 * per tenant, or describes a single tenant, named "default", with the keys
 * of [graph] and [subscription] (the [graph] form). This file makes the
 * struct crd_config_tenant of each, checks them against each other, builds
 * each one's subscription resource and loads each one's secrets.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf_internal.h"
#include "util.h"

#define CONF_DEFAULT_RESOURCE "/communications/callRecords"

/*
 * Gives each [tenant NAME] section its struct crd_config_tenant, in file
 * order, or makes the one tenant of the [graph] form. Returns 0 or -ENOMEM.
 */
int conf_setup_tenants(struct loader *ld)
{
    struct crd_config *config = ld->config;
    size_t n = 0;
    for (size_t i = 0; i < ld->n_sections; i++) {
        const struct conf_section *s = &ld->sections[i];
        if (s->kind != CONF_KIND_TENANT) {
            continue;
        }
        if (n == 0) {
            ld->first_tenant_line = s->line;
        }
        n++;
    }
    ld->n_tenant_sections = n;

    config->tenants = calloc(n > 0 ? n : 1, sizeof(*config->tenants));
    if (config->tenants == NULL) {
        ld->oom = true;
        return -ENOMEM;
    }
    if (n == 0) {
        struct crd_config_tenant *tenant = &config->tenants[config->n_tenants++];
        tenant->name = strdup("default");
        tenant->setting_prefix = strdup("");
        if (tenant->name == NULL || tenant->setting_prefix == NULL) {
            ld->oom = true;
            return -ENOMEM;
        }
        return 0;
    }

    for (size_t i = 0; i < ld->n_sections; i++) {
        struct conf_section *s = &ld->sections[i];
        if (s->kind != CONF_KIND_TENANT) {
            continue;
        }
        const char *name = s->label + strlen("tenant ");
        s->tenant_index = config->n_tenants++;
        struct crd_config_tenant *tenant = &config->tenants[s->tenant_index];
        tenant->line = s->line;
        tenant->name = strdup(name);
        if (asprintf(&tenant->setting_prefix, "tenant.%s.", name) < 0) {
            tenant->setting_prefix = NULL;
        }
        if (tenant->name == NULL || tenant->setting_prefix == NULL) {
            ld->oom = true;
            return -ENOMEM;
        }
    }
    return 0;
}

/* Reports a [tenant NAME] key in [graph] or [subscription] of a file that has such sections. */
void conf_report_tenant_key(struct loader *ld, const struct conf_section *s,
                            const struct conf_entry *e)
{
    conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, e->line, s->label, e->key, e->value,
                  "the file has [tenant NAME] sections (the first on line %u), so each tenant's "
                  "credentials and subscription keys belong in its own section; move this key "
                  "into the [tenant NAME] sections",
                  ld->first_tenant_line);
}

/*
 * Turns the tenant's participant_filter, set in section s, into the filtered
 * resource Graph documents for call records:
 * participants/any(p:p/id eq 'A' or p/id eq 'B'). subscription is the
 * [subscription] section, whose resource cannot be combined with a filter.
 */
static void build_filtered_resource(struct loader *ld, struct crd_config_tenant *tenant,
                                    const struct conf_section *s,
                                    const struct conf_section *subscription)
{
    const char *list = tenant->participant_filter;
    const char *filter_value = conf_key_value(s, "participant_filter");
    unsigned filter_line = conf_key_line(s, "participant_filter");
    if (conf_option_set(subscription, "resource") &&
        strcmp(tenant->resource, CONF_DEFAULT_RESOURCE) != 0) {
        if (s == subscription) {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, filter_line, s->label, "participant_filter",
                          filter_value, "cannot be combined with resource '%s'; remove one of "
                          "the two keys", tenant->resource);
        } else {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, filter_line, s->label, "participant_filter",
                          filter_value, "cannot be combined with resource '%s' of "
                          "[subscription] on line %u; remove one of the two keys",
                          tenant->resource, conf_key_line(subscription, "resource"));
        }
        return;
    }

    char resource[4096];
    size_t used = (size_t)snprintf(resource, sizeof(resource),
                                   CONF_DEFAULT_RESOURCE "?$filter=participants/any(p:");
    size_t n_ids = 0;
    for (const char *p = list; *p != '\0';) {
        size_t len = strcspn(p, ",");
        const char *start = p;
        size_t id_len = len;
        while (id_len > 0 && (*start == ' ' || *start == '\t')) {
            start++;
            id_len--;
        }
        while (id_len > 0 && (start[id_len - 1] == ' ' || start[id_len - 1] == '\t')) {
            id_len--;
        }
        if (!crd_guid_is_valid(start, id_len)) {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, filter_line, s->label, "participant_filter",
                          filter_value, "'%.*s' is not an Entra object id (a GUID); list the "
                          "users' object ids separated by commas", (int)(id_len < 60 ? id_len : 60),
                          start);
            return;
        }
        used += (size_t)snprintf(resource + used, sizeof(resource) - used, "%sp/id eq '%.*s'",
                                 n_ids > 0 ? " or " : "", (int)id_len, start);
        if (used >= sizeof(resource) - 2) {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, filter_line, s->label, "participant_filter",
                          filter_value, "too many ids for one subscription; split them across "
                          "instances");
            return;
        }
        n_ids++;
        p += len;
        if (*p == ',') {
            p++;
        }
    }
    if (n_ids == 0) {
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, filter_line, s->label, "participant_filter",
                      filter_value, "lists no ids; remove the key or list object ids");
        return;
    }
    snprintf(resource + used, sizeof(resource) - used, ")");

    char *copy = strdup(resource);
    if (copy == NULL) {
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, filter_line, s->label, "participant_filter",
                      filter_value, "out of memory");
        return;
    }
    free(tenant->resource);
    tenant->resource = copy;
}

/*
 * Reports each [tenant NAME] section whose tenant GUID an earlier section
 * also has, because a tenant must have exactly one subscription.
 */
static void check_duplicate_tenants(struct loader *ld)
{
    const struct crd_config *config = ld->config;
    for (size_t i = 0; i < ld->n_sections; i++) {
        const struct conf_section *s = &ld->sections[i];
        if (s->kind != CONF_KIND_TENANT) {
            continue;
        }
        const char *id = config->tenants[s->tenant_index].tenant;
        if (id == NULL) {
            continue;  /* missing or invalid, already reported */
        }
        for (size_t j = 0; j < i; j++) {
            const struct conf_section *earlier = &ld->sections[j];
            if (earlier->kind != CONF_KIND_TENANT) {
                continue;
            }
            const char *earlier_id = config->tenants[earlier->tenant_index].tenant;
            if (earlier_id != NULL && strcasecmp(earlier_id, id) == 0) {
                conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, "tenant"), s->label,
                              "tenant", conf_key_value(s, "tenant"),
                              "the same tenant as [%s] on line %u; each tenant needs exactly one "
                              "section, so remove one of the two or correct its tenant",
                              earlier->label, conf_key_line(earlier, "tenant"));
                break;
            }
        }
    }
}

/*
 * Checks the tenants, builds their resources and, when load_secrets is set,
 * reads their secrets. Runs after every section is applied.
 */
void conf_validate_tenants(struct loader *ld, bool load_secrets)
{
    struct crd_config *config = ld->config;
    const struct conf_section *graph = conf_fixed_section(ld, CONF_KIND_GRAPH);
    const struct conf_section *subscription = conf_fixed_section(ld, CONF_KIND_SUBSCRIPTION);

    if (ld->n_tenant_sections == 0) {
        struct crd_config_tenant *tenant = &config->tenants[0];
        if (tenant->participant_filter != NULL) {
            build_filtered_resource(ld, tenant, subscription, subscription);
        }
        if (load_secrets) {
            conf_load_client_secret(ld, graph, tenant, "");
            conf_load_client_state(ld, subscription, tenant, "");
        }
        return;
    }

    check_duplicate_tenants(ld);
    for (size_t i = 0; i < ld->n_sections; i++) {
        const struct conf_section *s = &ld->sections[i];
        if (s->kind != CONF_KIND_TENANT) {
            continue;
        }
        struct crd_config_tenant *tenant = &config->tenants[s->tenant_index];
        if (ld->shared_tenant.resource != NULL) {
            tenant->resource = strdup(ld->shared_tenant.resource);
            if (tenant->resource == NULL) {
                ld->oom = true;
                return;
            }
        }
        if (tenant->participant_filter != NULL) {
            build_filtered_resource(ld, tenant, s, subscription);
        }
        if (load_secrets) {
            /* The reader accepts only names of 1 to 64 characters, so the suffix fits. */
            char suffix[80];
            snprintf(suffix, sizeof(suffix), ".%s", tenant->name);
            conf_load_client_secret(ld, s, tenant, suffix);
            conf_load_client_state(ld, s, tenant, suffix);
        }
    }
}

/* Frees the tenant's strings, wipes its secrets and zeroes it. */
void conf_tenant_clear(struct crd_config_tenant *tenant)
{
    free(tenant->name);
    free(tenant->tenant);
    free(tenant->client_id);
    free(tenant->client_secret_file);
    crd_secret_free(tenant->client_secret);
    free(tenant->client_certificate_file);
    free(tenant->client_certificate);
    free(tenant->client_key_file);
    crd_secret_free(tenant->client_key);
    free(tenant->participant_filter);
    free(tenant->resource);
    free(tenant->client_state_file);
    crd_secret_free(tenant->client_state);
    free(tenant->setting_prefix);
    *tenant = (struct crd_config_tenant){0};
}
