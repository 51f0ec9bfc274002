/* SPDX-License-Identifier: MIT */
/*
 * The subscription manager's thread: scheduling, state and lifecycle events.
 * The Graph calls it makes are in the second half of this file.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/rand.h>

#include "log.h"
#include "reconciler.h"
#include "subscription.h"
#include "util.h"

#define SETTING_ID "subscription_id"
#define SETTING_EXPIRY "subscription_expiry"
#define SETTING_LAST_RENEWAL "subscription_last_renewal"
#define SETTING_WATERMARK "backfill_watermark"
/* setting_prefix ("tenant.NAME.", NAME at most 64 characters) and the longest name above. */
#define SETTING_KEY_MAX 128

#define DEFAULT_RETRY_BASE_MS 1000
#define DEFAULT_RETRY_MAX_MS (5 * 60 * 1000)
/* Graph's maximum lifetime of a callRecord subscription: 4230 minutes. */
#define LIFETIME_MAX_MS (4230LL * 60 * 1000)
/* Graph warns against a reauthorize and a PATCH of one subscription within 10 minutes. */
#define REAUTHORIZE_SPACING_MS (10LL * 60 * 1000)
/* Graph keeps call records for 30 days, so a backfill never reaches further back. */
#define BACKFILL_MAX_AGE_MS (30LL * 24 * 60 * 60 * 1000)

#define SUBSCRIPTIONS_PATH "/v1.0/subscriptions"

/* Work that lifecycle events ask for, as bits of crd_subscription.requests. */
#define REQUEST_RECREATE (1u << 0)
#define REQUEST_REAUTHORIZE (1u << 1)
#define REQUEST_BACKFILL (1u << 2)

/* Subscription ids remembered after they were replaced. */
#define KNOWN_IDS 4

enum manager_action {
    ACTION_NONE,
    ACTION_ENSURE, /* find, adopt or create */
    ACTION_RENEW,  /* PATCH expirationDateTime */
    ACTION_BACKFILL,
    ACTION_CHECK, /* GET the subscription */
};

struct crd_subscription {
    struct crd_subscription_options options;
    struct crd_log_ids ids; /* tenant, and the subscription id in ids_subscription */
    char ids_subscription[CRD_GUID_LEN + 1];
    pthread_t thread;
    bool thread_started;

    pthread_mutex_t lock;   /* protects the fields up to the next comment */
    pthread_cond_t changed; /* on CLOCK_MONOTONIC; signalled on stop and requests */
    bool stopping;
    unsigned requests;                   /* REQUEST_* bits not yet taken by the thread */
    char event_tenant[CRD_GUID_LEN + 1]; /* tenantId of the last lifecycle event */
    struct crd_subscription_status status;
    /* The subscription ids this manager held, newest first, so late notifications still match. */
    char known_ids[KNOWN_IDS][CRD_GUID_LEN + 1];

    /* Used by the manager's thread alone. */
    struct crd_graph_session *session;
    bool need_ensure;
    bool need_backfill;
    bool reauthorize_pending;
    bool forgotten;        /* the subscription was lost: the next creation recreates */
    int64_t next_check_ms; /* monotonic */
    int64_t last_patch_ms; /* monotonic; 0 before the first PATCH */
    int64_t retry_at_ms;   /* monotonic; meaningful while failures > 0 */
    unsigned failures;
};

/* ---- small helpers ---------------------------------------------------------------------- */

const char *crd_subscription_state_name(enum crd_subscription_state state)
{
    static const char *const names[CRD_SUBSCRIPTION_STATE__COUNT] = {
        [CRD_SUBSCRIPTION_STARTING] = "starting", [CRD_SUBSCRIPTION_ACTIVE] = "active",
        [CRD_SUBSCRIPTION_RENEWING] = "renewing", [CRD_SUBSCRIPTION_FAILING] = "failing",
        [CRD_SUBSCRIPTION_EXPIRED] = "expired",
    };
    return (unsigned)state < CRD_SUBSCRIPTION_STATE__COUNT ? names[state] : "unknown";
}

static int64_t backoff_ms(const struct crd_subscription *manager, unsigned failures)
{
    int64_t delay = manager->options.retry_base_ms;
    for (unsigned i = 1; i < failures && delay < manager->options.retry_max_ms; i++) {
        delay *= 2;
    }
    if (delay > manager->options.retry_max_ms) {
        delay = manager->options.retry_max_ms;
    }
    /* Full jitter over the upper half, so that instances restarted together spread out. */
    uint32_t random = 0;
    if (RAND_bytes((unsigned char *)&random, sizeof(random)) != 1) {
        random = (uint32_t)crd_time_monotonic_ms();
    }
    return delay / 2 + (int64_t)(random % (uint64_t)(delay / 2 + 1));
}

/* The store key of setting name for this manager's tenant: setting_prefix + name. */
static void setting_key(const struct crd_subscription *manager, const char *name, char *buf,
                        size_t size)
{
    snprintf(buf, size, "%s%s", manager->options.setting_prefix, name);
}

static int get_text_setting(const struct crd_subscription *manager, const char *name,
                            char **ret_text, struct crd_error *err)
{
    char key[SETTING_KEY_MAX];
    setting_key(manager, name, key, sizeof(key));
    return crd_store_get_setting(manager->options.store, key, ret_text, err);
}

static int set_text_setting(const struct crd_subscription *manager, const char *name,
                            const char *text, struct crd_error *err)
{
    char key[SETTING_KEY_MAX];
    setting_key(manager, name, key, sizeof(key));
    return crd_store_set_setting(manager->options.store, key, text, err);
}

static int get_int_setting(const struct crd_subscription *manager, const char *name,
                           int64_t *ret_value)
{
    char *text = NULL;
    struct crd_error err = {0};
    int r = get_text_setting(manager, name, &text, &err);
    if (r < 0) {
        return r;
    }
    char *end = NULL;
    long long value = strtoll(text, &end, 10);
    r = end != text && *end == '\0' ? 0 : -EINVAL;
    free(text);
    if (r == 0) {
        *ret_value = value;
    }
    return r;
}

static int set_int_setting(const struct crd_subscription *manager, const char *name,
                           int64_t value, struct crd_error *err)
{
    char text[24];
    snprintf(text, sizeof(text), "%" PRId64, value);
    return set_text_setting(manager, name, text, err);
}

/* Stores the id, expiry and last renewal. A failure is logged: Graph keeps the truth anyway. */
static void persist_state(struct crd_subscription *manager)
{
    struct crd_error err = {0};
    pthread_mutex_lock(&manager->lock);
    struct crd_subscription_status status = manager->status;
    pthread_mutex_unlock(&manager->lock);

    int r = set_text_setting(manager, SETTING_ID, status.id, &err);
    if (r == 0) {
        r = set_int_setting(manager, SETTING_EXPIRY, status.expires_at_ms, &err);
    }
    if (r == 0) {
        r = set_int_setting(manager, SETTING_LAST_RENEWAL, status.last_renewed_at_ms, &err);
    }
    if (r < 0) {
        crd_log_warn(&manager->ids,
                     "cannot save the subscription state in the store: %s; it is "
                     "found again through Graph at the next start",
                     err.message);
    }
}

static void set_subscription(struct crd_subscription *manager, const char *id,
                             int64_t expires_at_ms)
{
    pthread_mutex_lock(&manager->lock);
    snprintf(manager->status.id, sizeof(manager->status.id), "%s", id);
    manager->status.expires_at_ms = expires_at_ms;
    if (id[0] != '\0' && strcasecmp(manager->known_ids[0], id) != 0) {
        memmove(manager->known_ids[1], manager->known_ids[0],
                (KNOWN_IDS - 1) * sizeof(manager->known_ids[0]));
        snprintf(manager->known_ids[0], sizeof(manager->known_ids[0]), "%s", id);
    }
    pthread_mutex_unlock(&manager->lock);
    snprintf(manager->ids_subscription, sizeof(manager->ids_subscription), "%s", id);
    manager->ids.subscription =
        manager->ids_subscription[0] != '\0' ? manager->ids_subscription : NULL;
}

static void set_state(struct crd_subscription *manager, enum crd_subscription_state state)
{
    pthread_mutex_lock(&manager->lock);
    manager->status.state = state;
    pthread_mutex_unlock(&manager->lock);
}

/* ---- Graph calls ------------------------------------------------------------------------ */

static bool same_resource(const char *a, const char *b)
{
    if (a == NULL || b == NULL) {
        return false;
    }
    /* Graph treats "/communications/callRecords" and "communications/callRecords" alike. */
    return strcmp(a[0] == '/' ? a + 1 : a, b[0] == '/' ? b + 1 : b) == 0;
}

static bool string_equals(const json_t *object, const char *key, const char *expected)
{
    const char *value = json_string_value(json_object_get(object, key));
    return value != NULL && expected != NULL && strcmp(value, expected) == 0;
}

/* Reads id and expirationDateTime of a subscription object. Returns 0 or -EPROTO. */
static int parse_subscription(const json_t *object, char id[CRD_GUID_LEN + 1],
                              int64_t *ret_expires_at_ms, struct crd_error *err)
{
    const char *text = json_string_value(json_object_get(object, "id"));
    const char *expiry = json_string_value(json_object_get(object, "expirationDateTime"));
    int64_t expires_at_ms = 0;
    if (text == NULL || !crd_guid_is_valid(text, strlen(text)) || expiry == NULL ||
        crd_time_parse_iso8601(expiry, &expires_at_ms) < 0) {
        return crd_error_set(err, -EPROTO,
                             "a subscription in Graph's response has no GUID "
                             "\"id\" or no valid \"expirationDateTime\"");
    }
    snprintf(id, CRD_GUID_LEN + 1, "%s", text);
    *ret_expires_at_ms = expires_at_ms;
    return 0;
}

static int64_t requested_expiry_ms(const struct crd_subscription *manager)
{
    int64_t lifetime = manager->options.lifetime_ms < LIFETIME_MAX_MS ? manager->options.lifetime_ms
                                                                      : LIFETIME_MAX_MS;
    return crd_time_now_ms() + lifetime;
}

/* Result of the start-up listing of subscriptions. */
struct listing {
    struct crd_subscription *manager;
    json_t *adoptable;   /* subscriptions matching the configuration */
    json_t *stale;       /* other subscriptions aimed at this instance's URLs */
    json_t *conflicting; /* same resource and change types, another notificationUrl */
};

static int sort_listed(const json_t *item, void *context, struct crd_error *err)
{
    struct listing *listing = context;
    const struct crd_subscription_options *options = &listing->manager->options;
    bool ours = string_equals(item, "notificationUrl", options->notification_url) ||
                string_equals(item, "lifecycleNotificationUrl", options->lifecycle_url);
    bool same_kind =
        same_resource(json_string_value(json_object_get(item, "resource")), options->resource) &&
        string_equals(item, "changeType", options->change_type);
    bool matches = same_kind && string_equals(item, "notificationUrl", options->notification_url) &&
                   string_equals(item, "lifecycleNotificationUrl", options->lifecycle_url);
    json_t *target = matches     ? listing->adoptable
                     : ours      ? listing->stale
                     : same_kind ? listing->conflicting
                                 : NULL;
    if (target != NULL && json_array_append(target, (json_t *)item) < 0) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    return 0;
}

static void listing_clear(struct listing *listing)
{
    json_decref(listing->adoptable);
    json_decref(listing->stale);
    json_decref(listing->conflicting);
}

static int list_subscriptions(struct crd_subscription *manager, struct listing *listing,
                              struct crd_error *err)
{
    *listing = (struct listing){
        .manager = manager,
        .adoptable = json_array(),
        .stale = json_array(),
        .conflicting = json_array(),
    };
    if (listing->adoptable == NULL || listing->stale == NULL || listing->conflicting == NULL) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    int r = crd_graph_list(manager->session, SUBSCRIPTIONS_PATH, sort_listed, listing, NULL, err);
    if (r < 0) {
        return crd_error_prefix(err, "cannot list the subscriptions");
    }
    return 0;
}

static int delete_subscription(struct crd_subscription *manager, const char *id,
                               struct crd_error *err)
{
    char path[96];
    snprintf(path, sizeof(path), SUBSCRIPTIONS_PATH "/%s", id);
    int r = crd_graph_request(manager->session, "DELETE", path, NULL, NULL, NULL, NULL, err);
    if (r == -ENOENT) {
        return 0;
    }
    if (r < 0) {
        return crd_error_prefix(err, "cannot delete stale subscription %s", id);
    }
    struct crd_log_ids ids = {.tenant = manager->options.tenant, .subscription = id};
    crd_log_notice(&ids, "deleted stale subscription %s, which pointed at this instance's URLs",
                   id);
    return 0;
}

/*
 * PATCHes expirationDateTime, and notificationUrl when take_over is set.
 * Returns 0 with the new expiry, -ENOENT when the subscription is gone.
 */
static int patch_subscription(struct crd_subscription *manager, const char *id, bool take_over,
                              int64_t *ret_expires_at_ms, struct crd_error *err)
{
    char path[96];
    char expiry[40];
    snprintf(path, sizeof(path), SUBSCRIPTIONS_PATH "/%s", id);
    crd_time_format_iso8601(requested_expiry_ms(manager), expiry, sizeof(expiry));
    json_t *body = json_pack("{s:s}", "expirationDateTime", expiry);
    json_t *response = NULL;
    int r = 0;
    if (body == NULL ||
        (take_over && json_object_set_new(body, "notificationUrl",
                                          json_string(manager->options.notification_url)) < 0)) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    manager->last_patch_ms = crd_time_monotonic_ms();
    r = crd_graph_request(manager->session, "PATCH", path, body, NULL, &response, NULL, err);
    if (r < 0) {
        goto out;
    }
    char returned_id[CRD_GUID_LEN + 1];
    int64_t expires_at_ms = 0;
    r = parse_subscription(response, returned_id, &expires_at_ms, err);
    if (r < 0) {
        goto out;
    }
    *ret_expires_at_ms = expires_at_ms;
out:
    json_decref(response);
    json_decref(body);
    return r;
}

/* POSTs a new subscription. -EEXIST on 409: one with the same resource and change types exists. */
static int create_subscription(struct crd_subscription *manager, char id[CRD_GUID_LEN + 1],
                               int64_t *ret_expires_at_ms, struct crd_error *err)
{
    const struct crd_subscription_options *options = &manager->options;
    char expiry[40];
    crd_time_format_iso8601(requested_expiry_ms(manager), expiry, sizeof(expiry));
    json_t *response = NULL;
    /* s# copies the clientState without relying on a terminating NUL. */
    json_t *body =
        json_pack("{s:s, s:s, s:s, s:s, s:s#, s:s, s:s}", "changeType", options->change_type,
                  "notificationUrl", options->notification_url, "lifecycleNotificationUrl",
                  options->lifecycle_url, "resource", options->resource, "clientState",
                  crd_secret_bytes(options->client_state), crd_secret_len(options->client_state),
                  "latestSupportedTlsVersion", "v1_2", "expirationDateTime", expiry);
    int r = 0;
    if (body == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    r = crd_graph_request(manager->session, "POST", SUBSCRIPTIONS_PATH, body, NULL, &response, NULL,
                          err);
    if (r < 0) {
        goto out;
    }
    r = parse_subscription(response, id, ret_expires_at_ms, err);
out:
    json_decref(response);
    json_decref(body);
    return r;
}

/* Adopts the first subscription of array. Returns 0, or -ENOENT when array is empty. */
static int adopt_first(struct crd_subscription *manager, const json_t *array, bool take_over,
                       struct crd_error *err)
{
    const json_t *first = json_array_get(array, 0);
    if (first == NULL) {
        return -ENOENT;
    }
    char id[CRD_GUID_LEN + 1];
    int64_t expires_at_ms = 0;
    int r = parse_subscription(first, id, &expires_at_ms, err);
    if (r < 0) {
        return r;
    }
    if (take_over) {
        /* Graph allows one subscription per resource and change types: make it point here. */
        r = patch_subscription(manager, id, true, &expires_at_ms, err);
        if (r < 0) {
            return crd_error_prefix(err, "cannot take over subscription %s", id);
        }
    }
    set_subscription(manager, id, expires_at_ms);
    char shown[40];
    crd_time_format_iso8601(expires_at_ms, shown, sizeof(shown));
    crd_log_notice(&manager->ids, "adopted existing subscription %s for '%s' (expires %s)%s", id,
                   manager->options.resource, shown,
                   take_over ? "; its notificationUrl now points at this instance" : "");
    return 0;
}

/* Lists, deletes stale subscriptions, and adopts or creates one. */
static int ensure_subscription(struct crd_subscription *manager, struct crd_error *err)
{
    struct listing listing = {0};
    int r = list_subscriptions(manager, &listing, err);
    if (r < 0) {
        goto out;
    }

    /*
     * Every adoptable one but the first is a duplicate of it. With a new
     * clientState none is adoptable: Graph would send the old one.
     */
    size_t n_adoptable = json_array_size(listing.adoptable);
    size_t first_stale = manager->options.client_state_generated ? 0 : 1;
    if (first_stale == 0 && n_adoptable > 0) {
        crd_log_warn(&manager->ids, "the clientState is new (none was configured or kept in the "
                     "store), so the %zu existing subscriptions for this instance carry another "
                     "one; replacing them", n_adoptable);
    }
    for (size_t i = first_stale; i < n_adoptable; i++) {
        if (json_array_append(listing.stale, json_array_get(listing.adoptable, i)) < 0) {
            r = crd_error_set(err, -ENOMEM, "out of memory");
            goto out;
        }
    }
    size_t i;
    const json_t *stale;
    json_array_foreach (listing.stale, i, stale) {
        const char *id = json_string_value(json_object_get(stale, "id"));
        if (id != NULL && crd_guid_is_valid(id, strlen(id))) {
            r = delete_subscription(manager, id, err);
            if (r < 0) {
                goto out;
            }
        }
    }

    if (first_stale == 1) {
        r = adopt_first(manager, listing.adoptable, false, err);
        if (r != -ENOENT) {
            goto out;
        }
    }

    /* The subscription of the previous run is gone: notifications may have been missed. */
    if (manager->ids_subscription[0] != '\0') {
        manager->forgotten = true;
        manager->need_backfill = true;
    }

    char id[CRD_GUID_LEN + 1];
    int64_t expires_at_ms = 0;
    r = create_subscription(manager, id, &expires_at_ms, err);
    if (r == -EEXIST) {
        crd_log_warn(&manager->ids, "creating the subscription: %s; adopting the existing one",
                     err->message);
        listing_clear(&listing);
        r = list_subscriptions(manager, &listing, err);
        if (r == 0) {
            r = adopt_first(manager, listing.adoptable, false, err);
        }
        if (r == -ENOENT) {
            r = adopt_first(manager, listing.conflicting, true, err);
        }
        if (r == -ENOENT) {
            r = crd_error_set(err, -EAGAIN,
                              "Graph reported a conflicting subscription, but "
                              "the list shows none for '%s'",
                              manager->options.resource);
        }
        goto out;
    }
    if (r < 0) {
        (void)crd_error_prefix(err, "cannot create the subscription");
        goto out;
    }

    set_subscription(manager, id, expires_at_ms);
    char shown[40];
    crd_time_format_iso8601(expires_at_ms, shown, sizeof(shown));
    if (manager->forgotten) {
        CRD_LOG_AT(CRD_LOG_NOTICE, CRD_SUBSCRIPTION_MESSAGE_ID_RECREATED, &manager->ids,
                   "recreated the subscription as %s for '%s' (expires %s)", id,
                   manager->options.resource, shown);
    } else {
        CRD_LOG_AT(CRD_LOG_NOTICE, CRD_SUBSCRIPTION_MESSAGE_ID_CREATED, &manager->ids,
                   "created subscription %s for '%s' (expires %s)", id, manager->options.resource,
                   shown);
    }
    manager->last_patch_ms = 0;

    /* A first backfill starts from the creation of the first subscription, not 30 days back. */
    int64_t watermark_ms = 0;
    if (get_int_setting(manager, SETTING_WATERMARK, &watermark_ms) == -ENOENT) {
        struct crd_error store_err = {0};
        if (set_int_setting(manager, SETTING_WATERMARK, crd_time_now_ms(), &store_err) < 0) {
            crd_log_warn(&manager->ids, "cannot save the backfill watermark: %s",
                         store_err.message);
        }
    }
out:
    listing_clear(&listing);
    return r;
}

/* Forgets the subscription Graph no longer has, so that a new one is created and backfilled. */
static void forget_subscription(struct crd_subscription *manager, const char *why)
{
    CRD_LOG_AT(CRD_LOG_WARNING, CRD_SUBSCRIPTION_MESSAGE_ID_REMOVED, &manager->ids,
               "subscription %s is gone (%s); creating a new one and backfilling",
               manager->ids_subscription, why);
    set_subscription(manager, "", 0);
    manager->forgotten = true;
    manager->need_ensure = true;
    manager->need_backfill = true;
    manager->reauthorize_pending = false;
}

static int renew_subscription(struct crd_subscription *manager, struct crd_error *err)
{
    set_state(manager, CRD_SUBSCRIPTION_RENEWING);
    int64_t expires_at_ms = 0;
    int r = patch_subscription(manager, manager->ids_subscription, false, &expires_at_ms, err);
    if (r == -ENOENT) {
        forget_subscription(manager, "PATCH returned 404");
        return 0;
    }
    if (r < 0) {
        return crd_error_prefix(err, "cannot renew subscription %s", manager->ids_subscription);
    }

    pthread_mutex_lock(&manager->lock);
    manager->status.expires_at_ms = expires_at_ms;
    manager->status.last_renewed_at_ms = crd_time_now_ms();
    pthread_mutex_unlock(&manager->lock);
    char shown[40];
    crd_time_format_iso8601(expires_at_ms, shown, sizeof(shown));
    CRD_LOG_AT(CRD_LOG_NOTICE, CRD_SUBSCRIPTION_MESSAGE_ID_RENEWED, &manager->ids,
               "renewed subscription %s until %s%s", manager->ids_subscription, shown,
               manager->reauthorize_pending ? " (this also reauthorizes it)" : "");
    manager->reauthorize_pending = false;
    return 0;
}

static int check_subscription(struct crd_subscription *manager, struct crd_error *err)
{
    char path[96];
    snprintf(path, sizeof(path), SUBSCRIPTIONS_PATH "/%s", manager->ids_subscription);
    json_t *response = NULL;
    int r = crd_graph_request(manager->session, "GET", path, NULL, NULL, &response, NULL, err);
    if (r == -ENOENT) {
        forget_subscription(manager, "GET returned 404");
        return 0;
    }
    if (r < 0) {
        return crd_error_prefix(err, "cannot check subscription %s", manager->ids_subscription);
    }
    char id[CRD_GUID_LEN + 1];
    int64_t expires_at_ms = 0;
    r = parse_subscription(response, id, &expires_at_ms, err);
    json_decref(response);
    if (r < 0) {
        return r;
    }
    pthread_mutex_lock(&manager->lock);
    manager->status.expires_at_ms = expires_at_ms;
    pthread_mutex_unlock(&manager->lock);
    crd_log_debug(CRD_LOG_SUBSCRIPTION, &manager->ids, "subscription %s exists", id);
    return 0;
}

/* ---- backfill --------------------------------------------------------------------------- */

static int run_backfill(struct crd_subscription *manager, struct crd_error *err)
{
    struct crd_store *store = manager->options.store;
    int64_t started_at_ms = crd_time_now_ms();
    int64_t newest_ms = 0;
    int64_t watermark_ms = 0;
    char job_tenant[CRD_GUID_LEN + 1] = "";
    struct crd_error lookup_err = {0};
    const char *configured = manager->options.tenant;
    bool configured_is_guid = crd_guid_is_valid(configured, strlen(configured));
    (void)crd_store_newest_notified_job(store, configured_is_guid ? configured : NULL, &newest_ms,
                                        job_tenant, &lookup_err);
    (void)get_int_setting(manager, SETTING_WATERMARK, &watermark_ms);

    /* Jobs need the tenant GUID; [graph] tenant may be a domain name. */
    char tenant[CRD_GUID_LEN + 1];
    pthread_mutex_lock(&manager->lock);
    snprintf(tenant, sizeof(tenant), "%s", manager->event_tenant);
    pthread_mutex_unlock(&manager->lock);
    if (configured_is_guid) {
        snprintf(tenant, sizeof(tenant), "%s", configured);
    } else if (tenant[0] == '\0') {
        snprintf(tenant, sizeof(tenant), "%s", job_tenant);
    }
    if (!crd_guid_is_valid(tenant, strlen(tenant))) {
        manager->need_backfill = false;
        return crd_error_set(err, -EINVAL,
                             "cannot backfill: [graph] tenant '%s' is not a GUID "
                             "and no notification showed the tenant id yet; set tenant to the "
                             "directory (tenant) id",
                             manager->options.tenant);
    }

    int64_t since_ms = newest_ms > watermark_ms ? newest_ms : watermark_ms;
    since_ms = since_ms > 0 ? since_ms - manager->options.backfill_margin_ms : 0;
    if (since_ms < started_at_ms - BACKFILL_MAX_AGE_MS) {
        since_ms = started_at_ms - BACKFILL_MAX_AGE_MS;
    }

    struct crd_reconcile_counts backfill;
    int r = crd_reconcile_since(manager->session, store, tenant, manager->ids.subscription,
                                "backfill", since_ms, &backfill, err);
    if (backfill.enqueued > 0 && manager->options.on_jobs != NULL) {
        manager->options.on_jobs(manager->options.on_jobs_context);
    }
    char shown[40];
    crd_time_format_iso8601(since_ms, shown, sizeof(shown));
    if (r < 0) {
        return crd_error_prefix(err,
                                "backfill of call records since %s (%" PRId64 " enqueued so far)",
                                shown, backfill.enqueued);
    }
    r = set_int_setting(manager, SETTING_WATERMARK, started_at_ms, err);
    if (r < 0) {
        return crd_error_prefix(err, "backfill: cannot save the watermark");
    }
    crd_log_notice(&manager->ids,
                   "backfill: %" PRId64 " call records started since %s, %" PRId64
                   " of them new or changed and enqueued",
                   backfill.listed, shown, backfill.enqueued);
    manager->need_backfill = false;
    return 0;
}

/* ---- the thread ------------------------------------------------------------------------- */

/* Converts a wall-clock time to the monotonic clock the waits use. */
static int64_t monotonic_at(int64_t wall_ms)
{
    return crd_time_monotonic_ms() + (wall_ms - crd_time_now_ms());
}

/* Takes the requests of lifecycle events into the thread's own flags. Call with the lock held. */
static void take_requests_locked(struct crd_subscription *manager)
{
    unsigned requests = manager->requests;
    manager->requests = 0;
    if ((requests & REQUEST_RECREATE) != 0 && manager->status.id[0] != '\0') {
        pthread_mutex_unlock(&manager->lock);
        forget_subscription(manager, "Graph sent subscriptionRemoved");
        pthread_mutex_lock(&manager->lock);
    }
    if ((requests & REQUEST_REAUTHORIZE) != 0 && manager->status.id[0] != '\0') {
        manager->reauthorize_pending = true;
    }
    if ((requests & REQUEST_BACKFILL) != 0) {
        manager->need_backfill = true;
    }
}

/*
 * Picks the next action and whether it is due now. When nothing is due,
 * *ret_due_ms (monotonic) is when the next one is, or 0 for none.
 */
static enum manager_action next_action(struct crd_subscription *manager, int64_t *ret_due_ms)
{
    int64_t now = crd_time_monotonic_ms();
    *ret_due_ms = 0;
    if (manager->failures > 0 && now < manager->retry_at_ms) {
        *ret_due_ms = manager->retry_at_ms;
        return ACTION_NONE;
    }
    if (manager->need_ensure) {
        return ACTION_ENSURE;
    }

    int64_t due =
        manager->status.expires_at_ms != 0
            ? monotonic_at(manager->status.expires_at_ms - manager->options.renew_before_ms)
            : 0;
    if (manager->reauthorize_pending) {
        /* A reauthorization is a PATCH, never sooner than 10 minutes after the previous one. */
        int64_t allowed =
            manager->last_patch_ms != 0 ? manager->last_patch_ms + REAUTHORIZE_SPACING_MS : now;
        due = due != 0 && due < allowed ? due : allowed;
    }
    if (due != 0 && due <= now) {
        return ACTION_RENEW;
    }
    if (manager->need_backfill) {
        return ACTION_BACKFILL;
    }
    if (manager->options.check_interval_ms > 0 && manager->next_check_ms <= now) {
        return ACTION_CHECK;
    }
    int64_t check = manager->options.check_interval_ms > 0 ? manager->next_check_ms : 0;
    *ret_due_ms = due != 0 && (check == 0 || due < check) ? due : check;
    return ACTION_NONE;
}

/* Waits for the next due action, a request or stop. Returns ACTION_NONE on stop. */
static enum manager_action wait_for_action(struct crd_subscription *manager)
{
    pthread_mutex_lock(&manager->lock);
    enum manager_action action = ACTION_NONE;
    while (!manager->stopping) {
        take_requests_locked(manager);
        int64_t due_ms = 0;
        action = next_action(manager, &due_ms);
        if (action != ACTION_NONE) {
            break;
        }
        if (due_ms == 0) {
            pthread_cond_wait(&manager->changed, &manager->lock);
            continue;
        }
        int64_t wait_ms = due_ms - crd_time_monotonic_ms();
        if (wait_ms <= 0) {
            continue;
        }
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += (time_t)(wait_ms / 1000);
        until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        (void)pthread_cond_timedwait(&manager->changed, &manager->lock, &until);
    }
    if (manager->stopping) {
        action = ACTION_NONE;
    }
    pthread_mutex_unlock(&manager->lock);
    return action;
}

static int run_action(struct crd_subscription *manager, enum manager_action action,
                      struct crd_error *err)
{
    int r = 0;
    switch (action) {
    case ACTION_ENSURE:
        r = ensure_subscription(manager, err);
        if (r == 0) {
            manager->need_ensure = false;
            manager->next_check_ms = crd_time_monotonic_ms() + manager->options.check_interval_ms;
        }
        break;
    case ACTION_RENEW:
        r = renew_subscription(manager, err);
        break;
    case ACTION_BACKFILL:
        r = run_backfill(manager, err);
        break;
    case ACTION_CHECK:
        r = check_subscription(manager, err);
        if (r == 0) {
            manager->next_check_ms = crd_time_monotonic_ms() + manager->options.check_interval_ms;
        }
        break;
    case ACTION_NONE:
        break;
    }
    return r;
}

static void record_failure(struct crd_subscription *manager, const struct crd_error *err)
{
    manager->failures++;
    int64_t delay_ms = backoff_ms(manager, manager->failures);
    manager->retry_at_ms = crd_time_monotonic_ms() + delay_ms;
    int64_t now = crd_time_now_ms();

    pthread_mutex_lock(&manager->lock);
    bool expired = manager->status.expires_at_ms != 0 && now >= manager->status.expires_at_ms;
    bool newly_expired = expired && manager->status.state != CRD_SUBSCRIPTION_EXPIRED;
    manager->status.state = expired ? CRD_SUBSCRIPTION_EXPIRED : CRD_SUBSCRIPTION_FAILING;
    if (manager->status.failing_since_ms == 0) {
        manager->status.failing_since_ms = now;
    }
    snprintf(manager->status.last_error, sizeof(manager->status.last_error), "%.255s",
             err->message);
    pthread_mutex_unlock(&manager->lock);

    if (newly_expired) {
        crd_log_err(&manager->ids,
                    "subscription %s has expired while Graph calls fail: no change "
                    "notifications arrive until it is renewed or recreated",
                    manager->ids_subscription);
    }
    crd_log_err(&manager->ids, "%s; retrying in %" PRId64 " ms (attempt %u)", err->message,
                delay_ms, manager->failures + 1);
}

static void record_success(struct crd_subscription *manager)
{
    bool recovered = manager->failures > 0;
    manager->failures = 0;
    pthread_mutex_lock(&manager->lock);
    manager->status.state =
        manager->status.id[0] != '\0' ? CRD_SUBSCRIPTION_ACTIVE : CRD_SUBSCRIPTION_STARTING;
    manager->status.failing_since_ms = 0;
    manager->status.last_error[0] = '\0';
    pthread_mutex_unlock(&manager->lock);
    if (recovered) {
        crd_log_notice(&manager->ids, "Graph calls for the subscription succeed again");
    }
}

static void *manager_main(void *arg)
{
    struct crd_subscription *manager = arg;
    pthread_setname_np(pthread_self(), "subscription");

    for (;;) {
        enum manager_action action = wait_for_action(manager);
        if (action == ACTION_NONE) {
            break;
        }
        struct crd_error err = {0};
        int r = run_action(manager, action, &err);
        if (r == -ECANCELED) {
            break;
        }
        if (r < 0) {
            record_failure(manager, &err);
            continue;
        }
        record_success(manager);
        if (action != ACTION_BACKFILL && action != ACTION_CHECK) {
            persist_state(manager);
        }
    }
    return NULL;
}

/* ---- public functions ------------------------------------------------------------------- */

/* Loads the state of the previous run, for /healthz until Graph confirms or replaces it. */
static void load_state(struct crd_subscription *manager)
{
    char *id = NULL;
    struct crd_error err = {0};
    if (get_text_setting(manager, SETTING_ID, &id, &err) == 0 &&
        crd_guid_is_valid(id, strlen(id))) {
        int64_t expires_at_ms = 0;
        int64_t renewed_at_ms = 0;
        (void)get_int_setting(manager, SETTING_EXPIRY, &expires_at_ms);
        (void)get_int_setting(manager, SETTING_LAST_RENEWAL, &renewed_at_ms);
        set_subscription(manager, id, expires_at_ms);
        manager->status.last_renewed_at_ms = renewed_at_ms;
    }
    free(id);
}

int crd_subscription_new(const struct crd_subscription_options *options,
                         struct crd_subscription **ret_manager, struct crd_error *err)
{
    if (options->graph == NULL || options->store == NULL || options->tenant == NULL ||
        options->resource == NULL || options->change_type == NULL ||
        options->notification_url == NULL || options->lifecycle_url == NULL ||
        options->client_state == NULL || options->lifetime_ms <= 0 ||
        options->renew_before_ms < 0 || options->renew_before_ms >= options->lifetime_ms) {
        return crd_error_set(err, -EINVAL,
                             "subscription manager: incomplete options, or "
                             "renew_before not shorter than lifetime");
    }
    if (options->setting_prefix != NULL &&
        strlen(options->setting_prefix) + sizeof(SETTING_LAST_RENEWAL) > SETTING_KEY_MAX) {
        return crd_error_set(err, -EINVAL, "subscription manager: setting prefix '%s' is too long",
                             options->setting_prefix);
    }
    struct crd_subscription *manager = calloc(1, sizeof(*manager));
    if (manager == NULL) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    manager->options = *options;
    if (manager->options.setting_prefix == NULL) {
        manager->options.setting_prefix = "";
    }
    if (manager->options.retry_base_ms <= 0) {
        manager->options.retry_base_ms = DEFAULT_RETRY_BASE_MS;
    }
    if (manager->options.retry_max_ms < manager->options.retry_base_ms) {
        manager->options.retry_max_ms = manager->options.retry_base_ms > DEFAULT_RETRY_MAX_MS
                                            ? manager->options.retry_base_ms
                                            : DEFAULT_RETRY_MAX_MS;
    }
    manager->ids.tenant = options->tenant;
    manager->need_ensure = true;

    pthread_mutex_init(&manager->lock, NULL);
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&manager->changed, &attributes);
    pthread_condattr_destroy(&attributes);

    load_state(manager);
    *ret_manager = manager;
    return 0;
}

int crd_subscription_start(struct crd_subscription *manager, struct crd_error *err)
{
    int r = crd_graph_session_new(manager->options.graph, &manager->session, err);
    if (r < 0) {
        return r;
    }
    int e = pthread_create(&manager->thread, NULL, manager_main, manager);
    if (e != 0) {
        crd_graph_session_free(manager->session);
        manager->session = NULL;
        return crd_error_set(err, -e, "cannot start the subscription thread: %s", strerror(e));
    }
    manager->thread_started = true;
    return 0;
}

void crd_subscription_stop(struct crd_subscription *manager)
{
    if (manager == NULL || !manager->thread_started) {
        return;
    }
    pthread_mutex_lock(&manager->lock);
    manager->stopping = true;
    pthread_cond_broadcast(&manager->changed);
    pthread_mutex_unlock(&manager->lock);
    crd_graph_cancel(manager->options.graph);
    pthread_join(manager->thread, NULL);
    manager->thread_started = false;
    crd_graph_session_free(manager->session);
    manager->session = NULL;
}

void crd_subscription_free(struct crd_subscription *manager)
{
    if (manager == NULL) {
        return;
    }
    crd_subscription_stop(manager);
    pthread_cond_destroy(&manager->changed);
    pthread_mutex_destroy(&manager->lock);
    free(manager);
}

void crd_subscription_lifecycle(struct crd_subscription *manager, enum crd_lifecycle_event event,
                                const char *subscription_id, const char *tenant_id)
{
    struct crd_log_ids ids = {.tenant = tenant_id, .subscription = subscription_id};
    pthread_mutex_lock(&manager->lock);
    bool ours = manager->status.id[0] != '\0' && subscription_id != NULL &&
                strcasecmp(manager->status.id, subscription_id) == 0;
    if (ours && tenant_id != NULL && crd_guid_is_valid(tenant_id, strlen(tenant_id))) {
        snprintf(manager->event_tenant, sizeof(manager->event_tenant), "%s", tenant_id);
    }
    unsigned request = event == CRD_LIFECYCLE_REAUTHORIZATION_REQUIRED ? REQUEST_REAUTHORIZE
                       : event == CRD_LIFECYCLE_SUBSCRIPTION_REMOVED   ? REQUEST_RECREATE
                       : event == CRD_LIFECYCLE_MISSED                 ? REQUEST_BACKFILL
                                                                       : 0;
    if (ours) {
        manager->requests |= request;
        pthread_cond_broadcast(&manager->changed);
    }
    pthread_mutex_unlock(&manager->lock);

    if (!ours) {
        crd_log_info(&ids,
                     "ignoring lifecycle event '%s' for subscription %s: it is not the "
                     "subscription this instance manages",
                     crd_lifecycle_event_name(event),
                     subscription_id != NULL ? subscription_id : "(none)");
    } else if (request == 0) {
        crd_log_info(&ids, "ignoring unknown lifecycle event for subscription %s", subscription_id);
    }
}

bool crd_subscription_accepts_id(struct crd_subscription *manager, const char *subscription_id)
{
    pthread_mutex_lock(&manager->lock);
    /* Without a subscription there is no id to compare, and the clientState proved the sender. */
    bool known = manager->status.id[0] == '\0';
    for (size_t i = 0; i < KNOWN_IDS && !known; i++) {
        known = manager->known_ids[i][0] != '\0' &&
                strcasecmp(manager->known_ids[i], subscription_id) == 0;
    }
    pthread_mutex_unlock(&manager->lock);
    return known;
}

void crd_subscription_get_status(struct crd_subscription *manager,
                                 struct crd_subscription_status *ret_status)
{
    pthread_mutex_lock(&manager->lock);
    *ret_status = manager->status;
    pthread_mutex_unlock(&manager->lock);
}
