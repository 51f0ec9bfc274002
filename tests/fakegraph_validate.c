/* SPDX-License-Identifier: MIT */
/*
 * fakegraph validate: the handshake Graph sends to a notificationUrl before
 * it creates a subscription. Graph POSTs to URL?validationToken=<token,
 * percent-encoded> with "Content-Type: text/plain; charset=utf-8" and an
 * empty body. The endpoint passes when it responds with 200, a text/plain
 * content type and the decoded token as the whole body.
 * NOTE: Graph also requires the response within 10 s. This tool waits up to
 * its usual 15 s and does not check the elapsed time.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "fakegraph.h"

/* Graph's validation request has exactly this content type. */
#define VALIDATE_CONTENT_TYPE "text/plain; charset=utf-8"

static bool validate_body_matches(const struct fakegraph_response *response, const char *expected)
{
    size_t len = strlen(expected);
    return response->body_total == len && response->body_len == len &&
           memcmp(response->body, expected, len) == 0;
}

void fakegraph_validate_explain(const struct fakegraph_response *response, const char *token,
                                const char *decoded_body, char *reasons, size_t size)
{
    size_t used = 0;
    reasons[0] = '\0';

    if (response->status != 200) {
        used += (size_t)snprintf(reasons + used, size - used, "status is not 200, ");
    }
    if (response->content_type == NULL ||
        strncasecmp(response->content_type, "text/plain", strlen("text/plain")) != 0) {
        used += (size_t)snprintf(reasons + used, size - used,
                                 "content type is not text/plain, ");
    }
    if (!validate_body_matches(response, token)) {
        /* Graph's documentation warns about this mistake: echoing the token still encoded. */
        if (decoded_body != NULL && strcmp(decoded_body, token) == 0) {
            used += (size_t)snprintf(reasons + used, size - used,
                                     "body is the percent-encoded token instead of the "
                                     "decoded token, ");
        } else {
            used += (size_t)snprintf(reasons + used, size - used,
                                     "body differs from the %zu-byte token, ", strlen(token));
        }
    }

    /* Drop the last ", ". The buffer is large enough that nothing above was cut. */
    if (used >= 2 && used < size) {
        reasons[used - 2] = '\0';
    }
}

static int validate_report(const struct fakegraph_response *response, const char *token,
                           const char *decoded_body, bool *ret_passed, struct crd_error *err)
{
    char reasons[512];
    fakegraph_validate_explain(response, token, decoded_body, reasons, sizeof(reasons));
    if (reasons[0] == '\0') {
        printf("validate: ok\n");
        *ret_passed = true;
        return 0;
    }

    char *content_type = NULL;
    if (response->content_type != NULL) {
        content_type = fakegraph_escape(response->content_type, strlen(response->content_type),
                                        FAKEGRAPH_SHOWN_BODY_MAX);
    }
    char *body = fakegraph_escape(response->body, response->body_len, FAKEGRAPH_SHOWN_BODY_MAX);
    if ((response->content_type != NULL && content_type == NULL) || body == NULL) {
        free(content_type);
        free(body);
        return crd_error_set(err, -ENOMEM, "out of memory");
    }

    printf("validate: failed: %s; received HTTP %ld, content type %s%s%s, body '%s' (%zu bytes)\n",
           reasons, response->status, content_type != NULL ? "'" : "",
           content_type != NULL ? content_type : "(none)", content_type != NULL ? "'" : "", body,
           response->body_total);
    free(content_type);
    free(body);
    *ret_passed = false;
    return 0;
}

int fakegraph_validate(const struct fakegraph_validate_options *options, bool *ret_passed,
                       struct crd_error *err)
{
    struct fakegraph_http *http = NULL;
    struct fakegraph_response response = {0};
    char *decoded_body = NULL;

    int r = fakegraph_http_new(options->url, options->cafile, VALIDATE_CONTENT_TYPE, &http, err);
    if (r < 0) {
        goto out;
    }
    r = fakegraph_http_add_query(http, "validationToken", options->token, err);
    if (r < 0) {
        goto out;
    }

    r = fakegraph_http_post(http, "", 0, false, &response, err);
    if (r < 0) {
        goto out;
    }

    /* Only for the explanation, so a failed allocation just leaves the hint out. */
    int decoded_len = 0;
    decoded_body = curl_easy_unescape(NULL, response.body, (int)response.body_len, &decoded_len);
    if (decoded_body != NULL && (size_t)decoded_len != strlen(decoded_body)) {
        decoded_body[0] = '\0'; /* the body held %00, so it cannot equal a token from argv */
    }
    r = validate_report(&response, options->token, decoded_body, ret_passed, err);

out:
    curl_free(decoded_body);
    fakegraph_response_clear(&response);
    fakegraph_http_free(http);
    return r;
}
