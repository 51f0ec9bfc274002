/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "auth.h"
#include "graph_http.h"
#include "log.h"
#include "util.h"

#define AUTH_HEADER_PREFIX "Authorization: Bearer "
#define AUTH_DEFAULT_CONNECT_TIMEOUT_MS 10000
#define AUTH_DEFAULT_TOTAL_TIMEOUT_MS 60000
/* A token response is well under this; Entra's tokens are a few kilobytes. */
#define AUTH_MAX_RESPONSE_SIZE (256 * 1024)
#define AUTH_MAX_TOKEN_LEN (32 * 1024)
/* Upper limit of expires_in, a sanity check; the documented example token lasts 3599 s. */
#define AUTH_MAX_LIFETIME_S (7 * 24 * 3600)
/* After a failed refresh while the old token is still valid, the next attempt waits this long. */
#define AUTH_REFRESH_RETRY_MS 10000
#define AUTH_REFRESH_MARGIN_MAX_MS (5 * 60 * 1000)

struct crd_auth {
    char *token_url;
    char *client_id;
    char *scope;
    const struct crd_secret *client_secret;
    const struct crd_assertion_signer *assertion_signer;
    atomic_bool cancelled;

    /* Used only by the thread whose token request is in flight (requesting below). */
    CURL *curl;
    struct crd_http_body body;
    char curl_error[CURL_ERROR_SIZE];

    pthread_mutex_t lock;        /* protects the fields below */
    pthread_cond_t changed;      /* broadcast when a token request ends and on cancel */
    struct crd_secret *header;   /* AUTH_HEADER_PREFIX + token; NULL when there is none */
    uint64_t generation;         /* of header; increases with every new token */
    int64_t expires_at_ms;       /* monotonic */
    int64_t refresh_at_ms;       /* monotonic */
    int64_t retry_at_ms;         /* no refresh before this after one failed (monotonic) */
    bool requesting;             /* a token request is in flight */
    uint64_t requests_done;      /* finished token requests, to tell waiters one ended */
    struct crd_error last_error; /* of the last finished request; code 0 when it succeeded */
};

int64_t crd_auth_refresh_margin_ms(int64_t lifetime_ms)
{
    int64_t tenth = lifetime_ms / 10;
    return tenth < AUTH_REFRESH_MARGIN_MAX_MS ? tenth : AUTH_REFRESH_MARGIN_MAX_MS;
}

/* Tenant ids are GUIDs or domain names; anything else would change the URL's path. */
static bool auth_tenant_is_valid(const char *tenant)
{
    if (tenant == NULL || tenant[0] == '\0' || strlen(tenant) > 253) {
        return false;
    }
    for (const char *p = tenant; *p != '\0'; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '.' || *p == '_')) {
            return false;
        }
    }
    return true;
}

int crd_auth_new(const struct crd_auth_options *options, struct crd_auth **ret_auth,
                 struct crd_error *err)
{
    int r = 0;
    struct crd_auth *auth = NULL;

    bool has_secret = options->client_secret != NULL && crd_secret_len(options->client_secret) > 0;
    if (options->login_url == NULL || options->login_url[0] == '\0' || options->client_id == NULL ||
        options->client_id[0] == '\0' || (!has_secret && options->assertion_signer == NULL) ||
        options->scope == NULL || options->scope[0] == '\0') {
        r = crd_error_set(err, -EINVAL, "login URL, client id, a client secret or certificate, "
                          "and scope are all required");
        goto out;
    }
    if (!auth_tenant_is_valid(options->tenant)) {
        r = crd_error_set(err, -EINVAL, "tenant '%s' is neither a GUID nor a domain name",
                          options->tenant != NULL ? options->tenant : "");
        goto out;
    }

    auth = calloc(1, sizeof(*auth));
    if (auth == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    pthread_mutex_init(&auth->lock, NULL);
    pthread_cond_init(&auth->changed, NULL);
    atomic_init(&auth->cancelled, false);
    auth->client_secret = options->client_secret;
    auth->assertion_signer = options->assertion_signer;
    auth->body.limit = AUTH_MAX_RESPONSE_SIZE;
    auth->body.wipe = true;

    if (asprintf(&auth->token_url, "%s/%s/oauth2/v2.0/token", options->login_url, options->tenant) <
        0) {
        auth->token_url = NULL;
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    auth->client_id = strdup(options->client_id);
    auth->scope = strdup(options->scope);
    if (auth->client_id == NULL || auth->scope == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }

    struct crd_http_settings settings = {
        .ca_file = options->ca_file,
        .proxy = options->proxy,
        .connect_timeout_ms = options->connect_timeout_ms != 0 ? options->connect_timeout_ms
                                                               : AUTH_DEFAULT_CONNECT_TIMEOUT_MS,
        .total_timeout_ms = options->total_timeout_ms != 0 ? options->total_timeout_ms
                                                           : AUTH_DEFAULT_TOTAL_TIMEOUT_MS,
        .cancelled = &auth->cancelled,
    };
    r = crd_http_easy_new(&settings, &auth->curl, err);
    if (r < 0) {
        goto out;
    }
    if (curl_easy_setopt(auth->curl, CURLOPT_URL, auth->token_url) != CURLE_OK ||
        curl_easy_setopt(auth->curl, CURLOPT_WRITEDATA, &auth->body) != CURLE_OK ||
        curl_easy_setopt(auth->curl, CURLOPT_ERRORBUFFER, auth->curl_error) != CURLE_OK ||
        curl_easy_setopt(auth->curl, CURLOPT_MAXFILESIZE_LARGE,
                         (curl_off_t)AUTH_MAX_RESPONSE_SIZE) != CURLE_OK) {
        r = crd_error_set(err, -ENOMEM, "cannot configure libcurl for '%s'", auth->token_url);
        goto out;
    }

    *ret_auth = auth;
    auth = NULL;
out:
    crd_auth_free(auth);
    return r;
}

void crd_auth_free(struct crd_auth *auth)
{
    if (auth == NULL) {
        return;
    }
    if (auth->curl != NULL) {
        curl_easy_cleanup(auth->curl);
    }
    crd_http_body_free(&auth->body);
    crd_secret_free(auth->header);
    free(auth->token_url);
    free(auth->client_id);
    free(auth->scope);
    pthread_cond_destroy(&auth->changed);
    pthread_mutex_destroy(&auth->lock);
    free(auth);
}

/* "name=" + the URL-encoded value, appended to form[*len..size). */
static int auth_form_append(CURL *curl, char *form, size_t size, size_t *len, const char *name,
                            const char *value, size_t value_len)
{
    char *escaped = curl_easy_escape(curl, value, (int)value_len);
    if (escaped == NULL) {
        return -ENOMEM;
    }
    size_t escaped_len = strlen(escaped);
    size_t name_len = strlen(name);
    int r = 0;
    if (*len + 1 + name_len + 1 + escaped_len + 1 > size) {
        r = -E2BIG;
    } else {
        if (*len > 0) {
            form[(*len)++] = '&';
        }
        memcpy(form + *len, name, name_len);
        *len += name_len;
        form[(*len)++] = '=';
        memcpy(form + *len, escaped, escaped_len);
        *len += escaped_len;
        form[*len] = '\0';
    }
    /* The escaped client secret is as secret as the secret. */
    OPENSSL_cleanse(escaped, escaped_len);
    curl_free(escaped);
    return r;
}

/*
 * The credential field of the form: client_secret, or a fresh client
 * assertion signed with the certificate's key. *ret_credential is a secret.
 */
static int auth_credential(struct crd_auth *auth, const char **ret_name,
                           struct crd_secret **ret_credential, struct crd_error *err)
{
    if (auth->assertion_signer == NULL) {
        *ret_name = "client_secret";
        return crd_secret_new(crd_secret_bytes(auth->client_secret),
                              crd_secret_len(auth->client_secret), ret_credential, err);
    }
    *ret_name = "client_assertion";
    return crd_assertion_sign(auth->assertion_signer, auth->token_url, auth->client_id,
                              (int64_t)time(NULL), ret_credential, err);
}

/* The request body, in heap memory that the caller wipes and frees. */
static int auth_build_form(struct crd_auth *auth, char **ret_form, size_t *ret_len,
                           struct crd_error *err)
{
    const char *credential_name = NULL;
    struct crd_secret *credential = NULL;
    int r = auth_credential(auth, &credential_name, &credential, err);
    if (r < 0) {
        return r;
    }
    const char *secret = crd_secret_bytes(credential);
    size_t secret_len = crd_secret_len(credential);
    /* Percent-encoding at most triples every byte. */
    size_t size = 3 * (strlen(auth->client_id) + strlen(auth->scope) + secret_len) + 256;
    char *form = malloc(size);
    if (form == NULL) {
        crd_secret_free(credential);
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    size_t len = 0;
    const char *grant = "client_credentials";
    r = auth_form_append(auth->curl, form, size, &len, "client_id", auth->client_id,
                         strlen(auth->client_id));
    if (r == 0) {
        r = auth_form_append(auth->curl, form, size, &len, "scope", auth->scope,
                             strlen(auth->scope));
    }
    if (r == 0) {
        r = auth_form_append(auth->curl, form, size, &len, "grant_type", grant, strlen(grant));
    }
    if (r == 0 && auth->assertion_signer != NULL) {
        const char *type = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
        r = auth_form_append(auth->curl, form, size, &len, "client_assertion_type", type,
                             strlen(type));
    }
    if (r == 0) {
        r = auth_form_append(auth->curl, form, size, &len, credential_name, secret, secret_len);
    }
    crd_secret_free(credential);
    if (r < 0) {
        OPENSSL_cleanse(form, size);
        free(form);
        return crd_error_set(err, -ENOMEM, "cannot build the token request");
    }
    *ret_form = form;
    *ret_len = len;
    return 0;
}

/* A string member of an object, or NULL. */
static const char *auth_json_string(const json_t *object, const char *key)
{
    return json_string_value(json_object_get(object, key));
}

/* Turns a non-200 response of the token endpoint into an error. */
static int auth_explain_failure(struct crd_auth *auth, long status, struct crd_error *err)
{
    char error[64] = "";
    char description[320] = "";
    char trace_id[64] = "";
    char correlation_id[64] = "";

    json_t *root =
        json_loadb(auth->body.data != NULL ? auth->body.data : "", auth->body.len, 0, NULL);
    if (json_is_object(root)) {
        crd_http_sanitize(error, sizeof(error), auth_json_string(root, "error"));
        crd_http_sanitize(description, sizeof(description),
                          auth_json_string(root, "error_description"));
        crd_http_sanitize(trace_id, sizeof(trace_id), auth_json_string(root, "trace_id"));
        crd_http_sanitize(correlation_id, sizeof(correlation_id),
                          auth_json_string(root, "correlation_id"));
    }
    json_decref(root);

    int code;
    if (status == 400 || status == 401 || status == 403) {
        code = -EACCES;
    } else if (status == 408 || status == 429 || status >= 500) {
        code = -EAGAIN;
    } else {
        code = -EPROTO;
    }
    return crd_error_set(err, code,
                         "token request to '%s' failed: HTTP %ld %s (trace_id '%s', "
                         "correlation_id '%s'): %s",
                         auth->token_url, status, error[0] != '\0' ? error : "(no error code)",
                         trace_id, correlation_id,
                         description[0] != '\0' ? description : "(no description)");
}

/* expires_in is a number, or a numeric string in older endpoint versions. */
static bool auth_parse_lifetime(const json_t *value, int64_t *ret_seconds)
{
    int64_t seconds = -1;
    if (json_is_integer(value)) {
        seconds = json_integer_value(value);
    } else if (json_is_string(value)) {
        const char *s = json_string_value(value);
        char *end = NULL;
        errno = 0;
        long long parsed = strtoll(s, &end, 10);
        if (errno == 0 && end != s && *end == '\0') {
            seconds = parsed;
        }
    }
    if (seconds < 1 || seconds > AUTH_MAX_LIFETIME_S) {
        return false;
    }
    *ret_seconds = seconds;
    return true;
}

/* Reads a 200 response: token_type Bearer, expires_in, access_token. */
static int auth_parse_token(struct crd_auth *auth, struct crd_secret **ret_header,
                            int64_t *ret_lifetime_ms, struct crd_error *err)
{
    int r = 0;
    char *line = NULL;
    size_t line_len = 0;

    /* No parser message goes into the error: it could quote a piece of the token. */
    json_t *root =
        json_loadb(auth->body.data != NULL ? auth->body.data : "", auth->body.len, 0, NULL);
    if (!json_is_object(root)) {
        r = crd_error_set(err, -EAGAIN, "token response from '%s' is not a JSON object",
                          auth->token_url);
        goto out;
    }

    const char *type = auth_json_string(root, "token_type");
    if (type == NULL || strcasecmp(type, "Bearer") != 0) {
        char shown[32];
        crd_http_sanitize(shown, sizeof(shown), type);
        r = crd_error_set(err, -EPROTO, "token response from '%s' has token_type '%s', not Bearer",
                          auth->token_url, shown);
        goto out;
    }
    int64_t lifetime_s = 0;
    if (!auth_parse_lifetime(json_object_get(root, "expires_in"), &lifetime_s)) {
        r = crd_error_set(err, -EPROTO,
                          "token response from '%s' has no expires_in between 1 and %d seconds",
                          auth->token_url, AUTH_MAX_LIFETIME_S);
        goto out;
    }

    json_t *token = json_object_get(root, "access_token");
    const char *value = json_string_value(token);
    size_t value_len = json_string_length(token);
    bool usable = value != NULL && value_len > 0 && value_len <= AUTH_MAX_TOKEN_LEN;
    for (size_t i = 0; usable && i < value_len; i++) {
        /* Visible ASCII only: the token goes into a header line. */
        usable = value[i] > 0x20 && value[i] < 0x7f;
    }
    if (!usable) {
        r = crd_error_set(err, -EPROTO,
                          "token response from '%s' has no usable access_token (a string of "
                          "1 to %d visible ASCII characters)",
                          auth->token_url, AUTH_MAX_TOKEN_LEN);
        goto out;
    }

    line_len = strlen(AUTH_HEADER_PREFIX) + value_len;
    line = malloc(line_len + 1);
    if (line == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    memcpy(line, AUTH_HEADER_PREFIX, strlen(AUTH_HEADER_PREFIX));
    memcpy(line + strlen(AUTH_HEADER_PREFIX), value, value_len);
    line[line_len] = '\0';
    r = crd_secret_new(line, line_len, ret_header, err);
    if (r < 0) {
        goto out;
    }
    *ret_lifetime_ms = lifetime_s * 1000;

out:
    if (line != NULL) {
        OPENSSL_cleanse(line, line_len);
        free(line);
    }
    /* jansson's copy of the token is wiped before jansson frees it. */
    json_t *copy = json_object_get(root, "access_token");
    if (json_is_string(copy)) {
        OPENSSL_cleanse((char *)json_string_value(copy), json_string_length(copy));
    }
    json_decref(root);
    return r;
}

/* One token request; called without the lock by the one thread with requesting set. */
static int auth_request_token(struct crd_auth *auth, struct crd_secret **ret_header,
                              int64_t *ret_lifetime_ms, struct crd_error *err)
{
    int r = 0;
    char *form = NULL;
    size_t form_len = 0;
    struct curl_slist *headers = NULL;

    r = auth_build_form(auth, &form, &form_len, err);
    if (r < 0) {
        goto out;
    }
    struct curl_slist *more =
        curl_slist_append(NULL, "Content-Type: application/x-www-form-urlencoded");
    headers = more;
    if (more != NULL) {
        more = curl_slist_append(headers, "Accept: application/json");
    }
    if (more == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }

    crd_http_body_reset(&auth->body);
    auth->curl_error[0] = '\0';
    CURLcode code = curl_easy_setopt(auth->curl, CURLOPT_HTTPHEADER, headers);
    if (code == CURLE_OK) {
        code = curl_easy_setopt(auth->curl, CURLOPT_POSTFIELDSIZE, (long)form_len);
    }
    if (code == CURLE_OK) {
        /* Not COPYPOSTFIELDS: libcurl reads our buffer, which is wiped below. */
        code = curl_easy_setopt(auth->curl, CURLOPT_POSTFIELDS, form);
    }
    if (code == CURLE_OK) {
        code = curl_easy_perform(auth->curl);
    }
    (void)curl_easy_setopt(auth->curl, CURLOPT_POSTFIELDS, NULL);
    (void)curl_easy_setopt(auth->curl, CURLOPT_HTTPHEADER, NULL);

    if (code == CURLE_ABORTED_BY_CALLBACK && atomic_load(&auth->cancelled)) {
        r = crd_error_set(err, -ECANCELED, "token request to '%s' cancelled", auth->token_url);
        goto out;
    }
    if (code != CURLE_OK) {
        const char *why = auth->curl_error[0] != '\0' ? auth->curl_error : curl_easy_strerror(code);
        if (auth->body.too_large) {
            why = "the response is too large";
        }
        r = crd_error_set(err, crd_http_transport_is_transient(code) ? -EAGAIN : -EPROTO,
                          "token request to '%s' failed: %s", auth->token_url, why);
        goto out;
    }

    long status = 0;
    (void)curl_easy_getinfo(auth->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        r = auth_explain_failure(auth, status, err);
        goto out;
    }
    r = auth_parse_token(auth, ret_header, ret_lifetime_ms, err);

out:
    crd_http_body_reset(&auth->body);
    curl_slist_free_all(headers);
    if (form != NULL) {
        OPENSSL_cleanse(form, form_len);
        free(form);
    }
    return r;
}

static int auth_copy_header_locked(struct crd_auth *auth, struct crd_secret **ret_header,
                                   uint64_t *ret_generation, struct crd_error *err)
{
    int r = crd_secret_new(crd_secret_bytes(auth->header), crd_secret_len(auth->header), ret_header,
                           err);
    if (r == 0) {
        *ret_generation = auth->generation;
    }
    return r;
}

int crd_auth_get_header(struct crd_auth *auth, struct crd_secret **ret_header,
                        uint64_t *ret_generation, struct crd_error *err)
{
    int r = 0;

    pthread_mutex_lock(&auth->lock);
    for (;;) {
        if (atomic_load(&auth->cancelled)) {
            r = crd_error_set(err, -ECANCELED, "token request to '%s' cancelled", auth->token_url);
            break;
        }
        int64_t now = crd_time_monotonic_ms();
        bool valid = auth->header != NULL && now < auth->expires_at_ms;

        /* Fresh enough; or due, but another thread or a recent failure is already on it. */
        if (valid && (now < auth->refresh_at_ms || auth->requesting || now < auth->retry_at_ms)) {
            r = auth_copy_header_locked(auth, ret_header, ret_generation, err);
            break;
        }

        if (auth->requesting) {
            uint64_t seen = auth->requests_done;
            while (auth->requesting && auth->requests_done == seen &&
                   !atomic_load(&auth->cancelled)) {
                pthread_cond_wait(&auth->changed, &auth->lock);
            }
            if (auth->requests_done != seen && auth->last_error.code < 0 &&
                !(auth->header != NULL && crd_time_monotonic_ms() < auth->expires_at_ms)) {
                /* The request this thread waited for failed, so return its error. */
                r = auth->last_error.code;
                if (err != NULL) {
                    *err = auth->last_error;
                }
                break;
            }
            continue;
        }

        /* This thread sends the token request. The others wait for it or use the old token. */
        auth->requesting = true;
        pthread_mutex_unlock(&auth->lock);

        struct crd_error request_err = {0};
        struct crd_secret *header = NULL;
        int64_t lifetime_ms = 0;
        int64_t started = crd_time_monotonic_ms();
        crd_log_debug(CRD_LOG_GRAPH, NULL, "requesting an access token from '%s'", auth->token_url);
        r = auth_request_token(auth, &header, &lifetime_ms, &request_err);

        pthread_mutex_lock(&auth->lock);
        auth->requesting = false;
        auth->requests_done++;
        auth->last_error = request_err;
        if (r == 0) {
            crd_secret_free(auth->header);
            auth->header = header;
            auth->generation++;
            /* The lifetime counts from issue, which is no earlier than the request. */
            auth->expires_at_ms = started + lifetime_ms;
            auth->refresh_at_ms = auth->expires_at_ms - crd_auth_refresh_margin_ms(lifetime_ms);
            auth->retry_at_ms = 0;
            crd_log_debug(CRD_LOG_GRAPH, NULL, "got an access token valid for %lld s",
                          (long long)(lifetime_ms / 1000));
            r = auth_copy_header_locked(auth, ret_header, ret_generation, err);
        } else if (auth->header != NULL && crd_time_monotonic_ms() < auth->expires_at_ms) {
            crd_log_debug(CRD_LOG_GRAPH, NULL,
                          "token refresh failed, using the current token until it expires: %s",
                          request_err.message);
            auth->retry_at_ms = crd_time_monotonic_ms() + AUTH_REFRESH_RETRY_MS;
            r = auth_copy_header_locked(auth, ret_header, ret_generation, err);
        } else if (err != NULL) {
            *err = request_err;
        }
        pthread_cond_broadcast(&auth->changed);
        break;
    }
    pthread_mutex_unlock(&auth->lock);
    return r;
}

void crd_auth_invalidate(struct crd_auth *auth, uint64_t generation)
{
    pthread_mutex_lock(&auth->lock);
    if (auth->header != NULL && auth->generation == generation) {
        crd_log_debug(CRD_LOG_GRAPH, NULL,
                      "discarding the access token that Graph rejected with 401");
        crd_secret_free(auth->header);
        auth->header = NULL;
        auth->expires_at_ms = 0;
        auth->refresh_at_ms = 0;
        auth->retry_at_ms = 0;
    }
    pthread_mutex_unlock(&auth->lock);
}

void crd_auth_cancel(struct crd_auth *auth)
{
    atomic_store(&auth->cancelled, true);
    pthread_mutex_lock(&auth->lock);
    pthread_cond_broadcast(&auth->changed);
    pthread_mutex_unlock(&auth->lock);
}
