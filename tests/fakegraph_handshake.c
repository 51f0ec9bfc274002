/* SPDX-License-Identifier: MIT */
/*
 * The validation handshake that fakegraph serve sends before it creates a
 * subscription (and when a PATCH changes notificationUrl), as Graph does:
 * a POST of url?validationToken=<token> to which the receiver must respond
 * with 200, text/plain and the URL-decoded token within 10 seconds.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "fakegraph_server.h"

/* Graph waits this long for the response to a validation request. */
#define HANDSHAKE_TIMEOUT_MS 10000

int fakegraph_run_handshake(struct fakegraph_server *server, const char *url, char *message,
                            size_t size)
{
    struct fakegraph_http *http = NULL;
    struct fakegraph_response response = {0};
    struct crd_error err = {0};
    char *decoded_body = NULL;
    int r = 0;

    /* Graph's tokens are opaque; this one has spaces and a plus, which must survive encoding. */
    char request_id[CRD_GUID_LEN + 1];
    char suffix[CRD_GUID_LEN + 1];
    char token[160];
    if (fakegraph_random_guid(request_id, &err) < 0 || fakegraph_random_guid(suffix, &err) < 0) {
        snprintf(message, size, "fakegraph could not make a validation token: %s", err.message);
        return -EIO;
    }
    snprintf(token, sizeof(token), "Validation: Testing client application reachability for "
             "subscription Request-Id: %s+%.8s", request_id, suffix);

    int64_t started = crd_time_monotonic_ms();
    if ((r = fakegraph_http_new(url, server->cafile, "text/plain; charset=utf-8", &http,
                                &err)) < 0 ||
        (r = fakegraph_http_set_timeout(http, HANDSHAKE_TIMEOUT_MS, &err)) < 0 ||
        (r = fakegraph_http_add_query(http, "validationToken", token, &err)) < 0) {
        snprintf(message, size, "Subscription validation request failed: %s", err.message);
        r = -EPROTO;
        goto out;
    }
    r = fakegraph_http_post(http, "", 0, true, &response, &err);
    int64_t elapsed = crd_time_monotonic_ms() - started;
    if (r < 0) {
        snprintf(message, size, "%s %s",
                 elapsed >= HANDSHAKE_TIMEOUT_MS
                     ? "Subscription validation request timeout."
                     : "Subscription validation request failed. Notification endpoint must "
                       "respond with 200 OK to validation request.",
                 err.message);
        r = -EPROTO;
        goto out;
    }

    int decoded_len = 0;
    decoded_body = curl_easy_unescape(NULL, response.body, (int)response.body_len, &decoded_len);
    char reasons[512];
    fakegraph_validate_explain(&response, token, decoded_body, reasons, sizeof(reasons));
    if (reasons[0] != '\0') {
        snprintf(message, size, "Subscription validation request failed. Response must exactly "
                 "match validationToken query parameter, with status 200 and Content-Type "
                 "text/plain: %.300s (HTTP %ld from %.200s).", reasons, response.status, url);
        r = -EPROTO;
        goto out;
    }
    if (elapsed > HANDSHAKE_TIMEOUT_MS) {
        snprintf(message, size, "Subscription validation request timeout. The response took "
                 "%lld ms, more than %d ms.", (long long)elapsed, HANDSHAKE_TIMEOUT_MS);
        r = -EPROTO;
        goto out;
    }
    fakegraph_server_log(server, "validation handshake with %.200s passed in %lld ms", url,
                         (long long)elapsed);

out:
    if (r < 0) {
        fakegraph_server_log(server, "validation handshake with %.200s failed: %s", url, message);
    }
    curl_free(decoded_body);
    fakegraph_response_clear(&response);
    fakegraph_http_free(http);
    return r;
}
