/* SPDX-License-Identifier: MIT */
/*
 * fakegraph serve's tenants: lookup of the served tenants by GUID, the
 * "tenant" member of control requests, and the access tokens, each scoped
 * to the tenant whose token endpoint issued it. The handlers of the Graph
 * API serve the data of request->tenant, which fakegraph_check_bearer() sets
 * from the token.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "fakegraph_server.h"

/* The token endpoint responds 503 while this many unexpired tokens exist. */
#define TOKEN_COUNT_MAX 10000

/* ---- tenants ------------------------------------------------------------------------ */

int fakegraph_tenant_find(const struct fakegraph_server *server, const char *name)
{
    for (size_t i = 0; i < server->tenant_count; i++) {
        if (strcasecmp(server->tenants[i], name) == 0) {
            return (int)i;
        }
    }
    return FAKEGRAPH_NO_TENANT;
}

void fakegraph_tenants_format(const struct fakegraph_server *server, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < server->tenant_count && used < size; i++) {
        int n = snprintf(buf + used, size - used, "%s%s", i > 0 ? ", " : "", server->tenants[i]);
        if (n < 0) {
            break;
        }
        used += (size_t)n;
    }
}

int fakegraph_control_tenant(const struct fakegraph_server *server, const json_t *body,
                             int *ret_tenant, char *message, size_t size)
{
    const json_t *value = json_object_get(body, "tenant");
    *ret_tenant = FAKEGRAPH_NO_TENANT;
    if (value == NULL || json_is_null(value)) {
        return 0;
    }

    char served[FAKEGRAPH_TENANT_MAX * (CRD_GUID_LEN + 2) + 1];
    fakegraph_tenants_format(server, served, sizeof(served));
    const char *name = json_string_value(value);
    if (name == NULL) {
        snprintf(message, size, "\"tenant\" must be a string: one of the served tenants %s",
                 served);
        return -EINVAL;
    }
    int tenant = fakegraph_tenant_find(server, name);
    if (tenant == FAKEGRAPH_NO_TENANT) {
        snprintf(message, size, "\"tenant\" '%.60s' is not served; this fakegraph serves %s "
                 "(add --tenant GUID to serve another)", name, served);
        return -EINVAL;
    }
    *ret_tenant = tenant;
    return 0;
}

/* ---- access tokens ------------------------------------------------------------------ */

/* Writes a new random access token: 32 bytes in unpadded base64url. */
static int make_token(char token[FAKEGRAPH_TOKEN_LEN + 1])
{
    unsigned char bytes[32];
    unsigned char encoded[48];
    if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
        return -EIO;
    }
    int len = EVP_EncodeBlock(encoded, bytes, sizeof(bytes));
    size_t out = 0;
    for (int i = 0; i < len && out < FAKEGRAPH_TOKEN_LEN; i++) {
        char c = (char)encoded[i];
        if (c == '=') {
            break;
        }
        if (c == '+') {
            c = '-';
        } else if (c == '/') {
            c = '_';
        }
        token[out++] = c;
    }
    token[out] = '\0';
    return 0;
}

/* Drops the expired tokens. Call with server->lock held. */
static void expire_tokens_locked(struct fakegraph_server *server, int64_t now_ms)
{
    size_t kept = 0;
    for (size_t i = 0; i < server->token_count; i++) {
        if (server->tokens[i].expires_at_ms > now_ms) {
            server->tokens[kept++] = server->tokens[i];
        }
    }
    server->token_count = kept;
}

int fakegraph_tokens_issue(struct fakegraph_server *server, int tenant,
                           char token[FAKEGRAPH_TOKEN_LEN + 1])
{
    int r = make_token(token);
    if (r < 0) {
        return r;
    }

    int64_t now = crd_time_monotonic_ms();
    pthread_mutex_lock(&server->lock);
    expire_tokens_locked(server, now);
    if (server->token_count >= TOKEN_COUNT_MAX) {
        r = -ENOSPC;
    } else {
        struct fakegraph_token *grown =
            realloc(server->tokens, (server->token_count + 1) * sizeof(*grown));
        if (grown == NULL) {
            r = -ENOMEM;
        } else {
            server->tokens = grown;
            struct fakegraph_token *entry = &server->tokens[server->token_count++];
            memcpy(entry->value, token, FAKEGRAPH_TOKEN_LEN + 1);
            entry->tenant = tenant;
            entry->expires_at_ms = now + (int64_t)server->token_lifetime_s * 1000;
        }
    }
    pthread_mutex_unlock(&server->lock);
    return r;
}

/*
 * Looks the token up and stores its tenant in *ret_tenant. Returns 0,
 * -ENOENT (never issued) or -ETIME (expired).
 */
static int find_token(struct fakegraph_server *server, const char *token, size_t len,
                      int *ret_tenant)
{
    int r = -ENOENT;
    int64_t now = crd_time_monotonic_ms();
    pthread_mutex_lock(&server->lock);
    for (size_t i = 0; i < server->token_count; i++) {
        const struct fakegraph_token *entry = &server->tokens[i];
        if (crd_timingsafe_equal(entry->value, strlen(entry->value), token, len)) {
            r = entry->expires_at_ms > now ? 0 : -ETIME;
            *ret_tenant = entry->tenant;
            break;
        }
    }
    pthread_mutex_unlock(&server->lock);
    return r;
}

/* Returns the token of "Authorization: Bearer <token>", or NULL when the header has none. */
static const char *bearer_token(struct MHD_Connection *connection, const char **ret_header)
{
    const char *header = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_AUTHORIZATION);
    *ret_header = header;
    if (header != NULL && strncasecmp(header, "Bearer ", 7) == 0 && header[7] != '\0') {
        return header + 7;
    }
    return NULL;
}

void fakegraph_bearer_tenant(struct fakegraph_server *server, struct MHD_Connection *connection,
                             struct fakegraph_request *request)
{
    const char *header = NULL;
    const char *token = bearer_token(connection, &header);
    int tenant = FAKEGRAPH_NO_TENANT;
    if (token != NULL && find_token(server, token, strlen(token), &tenant) == 0) {
        request->tenant = tenant;
    }
}

bool fakegraph_check_bearer(struct fakegraph_server *server, struct MHD_Connection *connection,
                            struct fakegraph_request *request, enum MHD_Result *ret_result)
{
    const char *header = NULL;
    const char *token = bearer_token(connection, &header);
    const char *message = "Access token is empty.";
    if (token != NULL) {
        int tenant = FAKEGRAPH_NO_TENANT;
        int r = find_token(server, token, strlen(token), &tenant);
        if (r == 0) {
            request->tenant = tenant;
            return true;
        }
        message = r == -ETIME ? "Lifetime validation failed, the token is expired."
                              : "Access token validation failure. The token was not issued "
                                "by this fakegraph.";
    } else if (header != NULL) {
        message = "Access token validation failure. The Authorization header must be "
                  "\"Bearer <token>\".";
    }

    char authenticate[256];
    snprintf(authenticate, sizeof(authenticate),
             "Bearer realm=\"\", authorization_uri=\"%s/common/oauth2/authorize\", "
             "client_id=\"00000003-0000-0000-c000-000000000000\"", server->base_url);
    const char *headers[] = {MHD_HTTP_HEADER_WWW_AUTHENTICATE, authenticate, NULL};

    json_t *body = fakegraph_graph_error_body(request, "InvalidAuthenticationToken", message);
    *ret_result = fakegraph_respond_graph(server, connection, request, MHD_HTTP_UNAUTHORIZED,
                                          body, headers);
    return false;
}
