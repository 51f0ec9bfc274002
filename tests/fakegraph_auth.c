/* SPDX-License-Identifier: MIT */
/*
 * fakegraph serve as Entra ID: the client-credentials grant of
 * POST /{tenant}/oauth2/v2.0/token with a client secret or a client
 * assertion. Every served tenant accepts the same client id and credential,
 * as for a multi-tenant app, and the token it issues belongs to that tenant
 * (fakegraph_tenants.c stores the tokens and checks them on every /v1.0/
 * request). The error bodies follow the Microsoft identity platform v2.0
 * format: error, error_description (starting "AADSTSnnn: "), error_codes,
 * timestamp, trace_id and correlation_id.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>

#include "fakegraph_server.h"

#define FORM_CONTENT_TYPE "application/x-www-form-urlencoded"

/* Form fields longer than this are rejected; no field of the grant comes near it. */
#define FORM_VALUE_MAX 4096

/* The fields of a token request this emulator reads. */
struct token_form {
    char *client_id;
    char *client_secret;
    char *grant_type;
    char *scope;
    char *client_assertion;
    char *client_assertion_type;
};

static void free_wiped(char *text)
{
    if (text != NULL) {
        memset(text, 0, strlen(text));
        free(text);
    }
}

static void token_form_clear(struct token_form *form)
{
    free(form->client_id);
    free_wiped(form->client_secret);
    free(form->grant_type);
    free(form->scope);
    free(form->client_assertion);
    free(form->client_assertion_type);
    *form = (struct token_form){0};
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Decodes application/x-www-form-urlencoded text ('+' is a space). Returns -EINVAL or -ENOMEM. */
static int form_decode(const char *in, size_t len, char **ret_text)
{
    if (len > FORM_VALUE_MAX) {
        return -EINVAL;
    }
    char *out = malloc(len + 1);
    if (out == NULL) {
        return -ENOMEM;
    }

    size_t used = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            int high = i + 2 < len ? hex_digit(in[i + 1]) : -1;
            int low = i + 2 < len ? hex_digit(in[i + 2]) : -1;
            if (high < 0 || low < 0) {
                free_wiped(out);
                return -EINVAL;
            }
            c = (char)(high * 16 + low);
            i += 2;
        }
        out[used++] = c;
    }
    out[used] = '\0';
    *ret_text = out;
    return 0;
}

/* Stores the value of one "name=value" pair in the field it names; ignores other names. */
static int form_store(struct token_form *form, const char *pair, size_t len)
{
    const char *equals = memchr(pair, '=', len);
    if (equals == NULL) {
        return 0;
    }
    size_t name_len = (size_t)(equals - pair);
    struct {
        const char *name;
        char **field;
    } fields[] = {
        {"client_id", &form->client_id},
        {"client_secret", &form->client_secret},
        {"grant_type", &form->grant_type},
        {"scope", &form->scope},
        {"client_assertion", &form->client_assertion},
        {"client_assertion_type", &form->client_assertion_type},
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (strlen(fields[i].name) == name_len && memcmp(fields[i].name, pair, name_len) == 0) {
            char *value = NULL;
            int r = form_decode(equals + 1, len - name_len - 1, &value);
            if (r < 0) {
                return r;
            }
            free_wiped(*fields[i].field);
            *fields[i].field = value;
            return 0;
        }
    }
    return 0;
}

static int form_parse(const char *body, size_t len, struct token_form *form)
{
    size_t start = 0;
    while (start < len) {
        const char *amp = memchr(body + start, '&', len - start);
        size_t pair_len = amp != NULL ? (size_t)(amp - body - start) : len - start;
        int r = form_store(form, body + start, pair_len);
        if (r < 0) {
            return r;
        }
        start += pair_len + 1;
    }
    return 0;
}

/*
 * Takes client_id and client_secret from "Authorization: Basic ..." when the
 * form lacks them, as RFC 6749 section 2.3.1 allows: both form-encoded, then
 * joined by ':' and base64-encoded.
 */
static int form_add_basic_credentials(struct MHD_Connection *connection, struct token_form *form)
{
    const char *header = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_AUTHORIZATION);
    if (header == NULL || strncasecmp(header, "Basic ", 6) != 0 || form->client_secret != NULL) {
        return 0;
    }
    const char *encoded = header + 6;
    size_t encoded_len = strlen(encoded);
    if (encoded_len == 0 || encoded_len % 4 != 0 || encoded_len > FORM_VALUE_MAX) {
        return -EINVAL;
    }

    unsigned char decoded[FORM_VALUE_MAX];
    int decoded_len = EVP_DecodeBlock(decoded, (const unsigned char *)encoded, (int)encoded_len);
    if (decoded_len < 0) {
        return -EINVAL;
    }
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    for (size_t i = encoded_len; i > 0 && encoded[i - 1] == '='; i--) {
        decoded_len--;
    }
    const unsigned char *colon = memchr(decoded, ':', (size_t)decoded_len);
    int r = -EINVAL;
    if (colon != NULL) {
        size_t id_len = (size_t)(colon - decoded);
        char *client_id = NULL;
        r = form_decode((const char *)decoded, id_len, &client_id);
        if (r == 0) {
            r = form_decode((const char *)colon + 1, (size_t)decoded_len - id_len - 1,
                            &form->client_secret);
            free(form->client_id);
            form->client_id = client_id;
        }
    }
    OPENSSL_cleanse(decoded, sizeof(decoded));
    return r;
}

/* Responds with an Entra ID error body. */
static enum MHD_Result respond_token_error(struct fakegraph_server *server,
                                           struct MHD_Connection *connection,
                                           struct fakegraph_request *request, unsigned status,
                                           const char *error, unsigned aadsts, const char *fmt,
                                           ...) __attribute__((format(printf, 7, 8)));

static enum MHD_Result respond_token_error(struct fakegraph_server *server,
                                           struct MHD_Connection *connection,
                                           struct fakegraph_request *request, unsigned status,
                                           const char *error, unsigned aadsts, const char *fmt,
                                           ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);

    /* Entra writes the timestamp as "2025-06-03 18:02:44Z" and repeats it in the description. */
    char timestamp[32];
    fakegraph_format_error_date(crd_time_now_ms(), timestamp, sizeof(timestamp));
    timestamp[10] = ' ';
    strcat(timestamp, "Z");

    char description[1024];
    snprintf(description, sizeof(description),
             "AADSTS%u: %s Trace ID: %s Correlation ID: %s Timestamp: %s", aadsts, detail,
             request->request_id, request->client_request_id, timestamp);
    char error_uri[160];
    snprintf(error_uri, sizeof(error_uri), "%s/error?code=%u", server->base_url, aadsts);

    fakegraph_server_log(server, "token request rejected: %s (AADSTS%u)", error, aadsts);
    json_t *body = json_pack("{s:s, s:s, s:[I], s:s, s:s, s:s, s:s}", "error", error,
                             "error_description", description, "error_codes", (json_int_t)aadsts,
                             "timestamp", timestamp, "trace_id", request->request_id,
                             "correlation_id", request->client_request_id, "error_uri", error_uri);
    return fakegraph_respond_json(server, connection, request, status, body);
}

/*
 * Checks the grant's fields in Entra's order for the token endpoint of the
 * served tenant. Returns true when it queued an error response.
 */
static bool reject_token_form(struct fakegraph_server *server, struct MHD_Connection *connection,
                              struct fakegraph_request *request, const char *tenant,
                              const struct token_form *form, enum MHD_Result *ret_result)
{
    const char *missing = form->grant_type == NULL ? "grant_type"
                          : form->client_id == NULL ? "client_id"
                          : form->scope == NULL     ? "scope"
                                                    : NULL;
    if (missing != NULL) {
        *ret_result = respond_token_error(server, connection, request, MHD_HTTP_BAD_REQUEST,
                                          "invalid_request", 900144, "The request body must "
                                          "contain the following parameter: '%s'.", missing);
        return true;
    }
    if (strcmp(form->grant_type, "client_credentials") != 0) {
        *ret_result = respond_token_error(server, connection, request, MHD_HTTP_BAD_REQUEST,
                                          "unsupported_grant_type", 70003, "The app requested an "
                                          "unsupported grant type '%.100s'.", form->grant_type);
        return true;
    }
    if (strcasecmp(form->client_id, server->client_id) != 0) {
        *ret_result = respond_token_error(server, connection, request, MHD_HTTP_BAD_REQUEST,
                                          "unauthorized_client", 700016, "Application with "
                                          "identifier '%.100s' was not found in the directory "
                                          "'%s'.", form->client_id, tenant);
        return true;
    }

    char expected_scope[128];
    snprintf(expected_scope, sizeof(expected_scope), "%s/.default", server->base_url);
    if (strcmp(form->scope, expected_scope) != 0) {
        size_t len = strlen(form->scope);
        bool has_default = len >= 9 && strcmp(form->scope + len - 9, "/.default") == 0;
        *ret_result = has_default
            ? respond_token_error(server, connection, request, MHD_HTTP_BAD_REQUEST,
                                  "invalid_resource", 500011, "The resource principal named "
                                  "%.*s was not found in the tenant named %s. (fakegraph "
                                  "accepts the scope %s only.)",
                                  (int)(len - 9 < 200 ? len - 9 : 200), form->scope,
                                  tenant, expected_scope)
            : respond_token_error(server, connection, request, MHD_HTTP_BAD_REQUEST,
                                  "invalid_scope", 1002012, "The provided value for scope "
                                  "%.200s is not valid. Client credential flows must have a "
                                  "scope value with /.default suffixed to the resource "
                                  "identifier (application ID URI).", form->scope);
        return true;
    }

    if (form->client_secret == NULL && form->client_assertion != NULL) {
        const char *reason = fakegraph_verify_assertion(server, tenant,
                                                        form->client_assertion_type,
                                                        form->client_assertion,
                                                        (int64_t)time(NULL));
        if (reason == NULL) {
            return false;
        }
        *ret_result = respond_token_error(server, connection, request, MHD_HTTP_UNAUTHORIZED,
                                          "invalid_client", 700027, "Client assertion failed "
                                          "signature validation: %s.", reason);
        return true;
    }
    if (form->client_secret == NULL) {
        *ret_result = respond_token_error(server, connection, request, MHD_HTTP_UNAUTHORIZED,
                                          "invalid_client", 7000218, "The request body must "
                                          "contain the following parameter: 'client_assertion' "
                                          "or 'client_secret'.");
        return true;
    }
    const char *secret = crd_secret_bytes(server->client_secret);
    if (!crd_timingsafe_equal(form->client_secret, strlen(form->client_secret), secret,
                              crd_secret_len(server->client_secret))) {
        *ret_result = respond_token_error(server, connection, request, MHD_HTTP_UNAUTHORIZED,
                                          "invalid_client", 7000215, "Invalid client secret "
                                          "provided. Ensure the secret being sent in the request "
                                          "is the client secret value, not the client secret ID, "
                                          "for a secret added to app '%s'.", server->client_id);
        return true;
    }
    return false;
}

enum MHD_Result fakegraph_handle_token(struct fakegraph_server *server,
                                       struct MHD_Connection *connection,
                                       struct fakegraph_request *request, const char *tenant)
{
    struct token_form form = {0};
    enum MHD_Result result = MHD_NO;

    if (strcmp(request->method, MHD_HTTP_METHOD_POST) != 0) {
        result = respond_token_error(server, connection, request, MHD_HTTP_BAD_REQUEST,
                                     "invalid_request", 900561, "The endpoint only accepts POST "
                                     "requests. Received a %s request.", request->method);
        goto out;
    }
    if (request->tenant == FAKEGRAPH_NO_TENANT) {
        result = respond_token_error(server, connection, request, MHD_HTTP_BAD_REQUEST,
                                     "invalid_request", 90002, "Tenant '%.100s' not found. Check "
                                     "to make sure you have the correct tenant ID and are signing "
                                     "into the correct cloud.", tenant);
        goto out;
    }
    const char *content_type = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                                           MHD_HTTP_HEADER_CONTENT_TYPE);
    if (content_type == NULL ||
        strncasecmp(content_type, FORM_CONTENT_TYPE, strlen(FORM_CONTENT_TYPE)) != 0) {
        result = respond_token_error(server, connection, request, MHD_HTTP_BAD_REQUEST,
                                     "invalid_request", 900144, "The request body must contain "
                                     "the following parameter: 'grant_type'. (The Content-Type "
                                     "must be " FORM_CONTENT_TYPE ".)");
        goto out;
    }

    int r = form_parse(request->body != NULL ? request->body : "", request->body_len, &form);
    if (r == 0) {
        r = form_add_basic_credentials(connection, &form);
    }
    if (r < 0) {
        result = respond_token_error(server, connection, request, MHD_HTTP_BAD_REQUEST,
                                     "invalid_request", 900144, "The request body is not valid "
                                     "application/x-www-form-urlencoded text.");
        goto out;
    }
    const char *served_tenant = server->tenants[request->tenant];
    if (reject_token_form(server, connection, request, served_tenant, &form, &result)) {
        goto out;
    }

    char token[FAKEGRAPH_TOKEN_LEN + 1];
    r = fakegraph_tokens_issue(server, request->tenant, token);
    if (r < 0) {
        result = respond_token_error(server, connection, request, MHD_HTTP_SERVICE_UNAVAILABLE,
                                     "temporarily_unavailable", 50001, "fakegraph could not issue "
                                     "a token: %s.", strerror(-r));
        goto out;
    }
    json_t *body = json_pack("{s:s, s:I, s:I, s:s}", "token_type", "Bearer", "expires_in",
                             (json_int_t)server->token_lifetime_s, "ext_expires_in",
                             (json_int_t)server->token_lifetime_s, "access_token", token);
    OPENSSL_cleanse(token, sizeof(token));
    result = fakegraph_respond_json(server, connection, request, MHD_HTTP_OK, body);

out:
    token_form_clear(&form);
    return result;
}

