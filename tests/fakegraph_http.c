/* SPDX-License-Identifier: MIT */
/* fakegraph's HTTP client: one libcurl easy handle per target URL, loopback only. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "fakegraph.h"

#define CONNECT_TIMEOUT_MS 5000L
#define TOTAL_TIMEOUT_MS 15000L

struct fakegraph_http {
    CURL *curl;
    CURLU *url;                      /* the parsed URL curl sends to (CURLOPT_CURLU) */
    struct curl_slist *headers;
    char *url_text;                  /* url as a string, for messages */
    long timeout_ms;                 /* limit for a whole request */
    char error[CURL_ERROR_SIZE];     /* curl's detail for the last failed transfer */
};

/* Checks a host as curl_url_get() returns it, with brackets around an IPv6 address. */
static bool http_host_is_loopback(const char *host)
{
    return strcmp(host, "127.0.0.1") == 0 || strcmp(host, "[::1]") == 0 ||
           strcasecmp(host, "localhost") == 0;
}

static int http_refresh_url_text(struct fakegraph_http *http, struct crd_error *err)
{
    char *text = NULL;
    CURLUcode uc = curl_url_get(http->url, CURLUPART_URL, &text, 0);
    if (uc != CURLUE_OK) {
        return crd_error_set(err, -EINVAL, "cannot format the request URL: %s",
                             curl_url_strerror(uc));
    }
    curl_free(http->url_text);
    http->url_text = text;
    return 0;
}

/* Parses url into http->url and rejects what fakegraph must never post to. */
static int http_parse_url(struct fakegraph_http *http, const char *url, struct crd_error *err)
{
    char *scheme = NULL;
    char *host = NULL;
    int r = 0;

    CURLUcode uc = curl_url_set(http->url, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK) {
        r = crd_error_set(err, -EINVAL, "invalid URL '%s': %s; give a full URL such as "
                          "https://127.0.0.1:8443/notify", url, curl_url_strerror(uc));
        goto out;
    }

    uc = curl_url_get(http->url, CURLUPART_SCHEME, &scheme, 0);
    if (uc != CURLUE_OK || (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0)) {
        r = crd_error_set(err, -EINVAL, "refusing URL '%s': the scheme must be https or http",
                          url);
        goto out;
    }

    uc = curl_url_get(http->url, CURLUPART_HOST, &host, 0);
    if (uc != CURLUE_OK || !http_host_is_loopback(host)) {
        r = crd_error_set(err, -EINVAL, "refusing URL '%s': fakegraph posts only to 127.0.0.1, "
                          "[::1] or localhost", url);
        goto out;
    }

    r = http_refresh_url_text(http, err);

out:
    curl_free(host);
    curl_free(scheme);
    return r;
}

static size_t http_store_body(char *data, size_t size, size_t count, void *userdata)
{
    struct fakegraph_response *response = userdata;
    size_t len = size * count;

    size_t room = FAKEGRAPH_BODY_MAX - response->body_len;
    size_t take = len < room ? len : room;
    if (take > 0) {
        memcpy(response->body + response->body_len, data, take);
        response->body_len += take;
        response->body[response->body_len] = '\0';
    }
    response->body_total += len;
    return len;
}

/* Sets the options that stay the same for every request of this handle. */
static int http_configure(struct fakegraph_http *http, const char *cafile,
                          const char *content_type, struct crd_error *err)
{
    char header[256];
    if (snprintf(header, sizeof(header), "Content-Type: %s", content_type) >=
        (int)sizeof(header)) {
        return crd_error_set(err, -EINVAL, "Content-Type '%s' is too long", content_type);
    }

    struct curl_slist *list = curl_slist_append(NULL, header);
    if (list == NULL) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    http->headers = list;
    /* Graph sends no "Expect: 100-continue", but curl would add one to large bodies. */
    list = curl_slist_append(http->headers, "Expect:");
    if (list == NULL) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    http->headers = list;

    CURL *curl = http->curl;
    CURLcode code = CURLE_OK;
    if ((code = curl_easy_setopt(curl, CURLOPT_CURLU, http->url)) != CURLE_OK ||
        (code = curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, http->error)) != CURLE_OK ||
        (code = curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https")) != CURLE_OK ||
        (code = curl_easy_setopt(curl, CURLOPT_PROXY, "")) != CURLE_OK ||
        (code = curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L)) != CURLE_OK ||
        (code = curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L)) != CURLE_OK ||
        (code = curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS)) !=
            CURLE_OK ||
        (code = curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, TOTAL_TIMEOUT_MS)) != CURLE_OK ||
        (code = curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L)) != CURLE_OK ||
        (code = curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L)) != CURLE_OK ||
        (code = curl_easy_setopt(curl, CURLOPT_HTTPHEADER, http->headers)) != CURLE_OK ||
        (code = curl_easy_setopt(curl, CURLOPT_POST, 1L)) != CURLE_OK ||
        (code = curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, http_store_body)) != CURLE_OK) {
        return crd_error_set(err, -EINVAL, "setting a curl option failed: %s",
                             curl_easy_strerror(code));
    }

    if (cafile != NULL) {
        /* Trust this CA alone: drop the CA directory compiled into libcurl as well. */
        if ((code = curl_easy_setopt(curl, CURLOPT_CAINFO, cafile)) != CURLE_OK ||
            (code = curl_easy_setopt(curl, CURLOPT_CAPATH, NULL)) != CURLE_OK) {
            return crd_error_set(err, -EINVAL, "setting the CA file '%s' failed: %s", cafile,
                                 curl_easy_strerror(code));
        }
    }
    return 0;
}

int fakegraph_http_new(const char *url, const char *cafile, const char *content_type,
                       struct fakegraph_http **ret_http, struct crd_error *err)
{
    struct fakegraph_http *http = calloc(1, sizeof(*http));
    int r = 0;

    if (http == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    http->url = curl_url();
    http->curl = curl_easy_init();
    http->timeout_ms = TOTAL_TIMEOUT_MS;
    if (http->url == NULL || http->curl == NULL) {
        r = crd_error_set(err, -ENOMEM, "creating a curl handle failed");
        goto out;
    }

    r = http_parse_url(http, url, err);
    if (r < 0) {
        goto out;
    }
    r = http_configure(http, cafile, content_type, err);
    if (r < 0) {
        goto out;
    }

    *ret_http = http;
    http = NULL;

out:
    fakegraph_http_free(http);
    return r;
}

int fakegraph_http_add_query(struct fakegraph_http *http, const char *name, const char *value,
                             struct crd_error *err)
{
    char *encoded = curl_easy_escape(http->curl, value, 0);
    char *query = NULL;
    char *url = NULL;
    int r = 0;

    if (encoded == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }

    /*
     * Setting CURLUPART_QUERY makes curl 7.88 rewrite %2B as %2b, so the
     * whole URL is set again: curl keeps the percent-encoding of a full URL
     * as given. The fragment is dropped first because the query goes before
     * it, and a client never sends a fragment anyway.
     */
    CURLUcode uc = curl_url_get(http->url, CURLUPART_QUERY, &query, 0);
    bool has_query = uc == CURLUE_OK && query[0] != '\0';
    (void)curl_url_set(http->url, CURLUPART_FRAGMENT, NULL, 0);
    r = http_refresh_url_text(http, err);
    if (r < 0) {
        goto out;
    }
    if (asprintf(&url, "%s%c%s=%s", http->url_text, has_query ? '&' : '?', name, encoded) < 0) {
        url = NULL;
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }

    uc = curl_url_set(http->url, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK) {
        r = crd_error_set(err, -EINVAL, "adding query parameter '%s' to '%s' failed: %s", name,
                          http->url_text, curl_url_strerror(uc));
        goto out;
    }
    r = http_refresh_url_text(http, err);

out:
    free(url);
    curl_free(query);
    curl_free(encoded);
    return r;
}

int fakegraph_http_set_timeout(struct fakegraph_http *http, long total_ms, struct crd_error *err)
{
    long connect_ms = total_ms < CONNECT_TIMEOUT_MS ? total_ms : CONNECT_TIMEOUT_MS;
    CURLcode code = CURLE_OK;
    if ((code = curl_easy_setopt(http->curl, CURLOPT_CONNECTTIMEOUT_MS, connect_ms)) !=
            CURLE_OK ||
        (code = curl_easy_setopt(http->curl, CURLOPT_TIMEOUT_MS, total_ms)) != CURLE_OK) {
        return crd_error_set(err, -EINVAL, "setting a %ld ms timeout failed: %s", total_ms,
                             curl_easy_strerror(code));
    }
    http->timeout_ms = total_ms;
    return 0;
}

int fakegraph_http_add_header(struct fakegraph_http *http, const char *header,
                              struct crd_error *err)
{
    struct curl_slist *list = curl_slist_append(http->headers, header);
    if (list == NULL) {
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    http->headers = list;
    (void)curl_easy_setopt(http->curl, CURLOPT_HTTPHEADER, http->headers);
    return 0;
}

/* Adds advice for the transfer failures a test run meets most often. */
static const char *http_failure_hint(CURLcode code)
{
    switch (code) {
    case CURLE_COULDNT_CONNECT:
        return "; check that the listener is running on that address and port";
    case CURLE_OPERATION_TIMEDOUT:
        return "; check that the listener responds";
    case CURLE_PEER_FAILED_VERIFICATION:
        return "; pass the CA that signed the listener's certificate with --cafile";
    case CURLE_SSL_CACERT_BADFILE:
        return "; check that the --cafile path names a readable PEM file";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
        return "; check that the URL's scheme matches the listener (https or http)";
    default:
        return "";
    }
}

int fakegraph_http_post(struct fakegraph_http *http, const void *body, size_t len,
                        bool new_connection, struct fakegraph_response *ret_response,
                        struct crd_error *err)
{
    struct fakegraph_response response = {0};
    char *content_type = NULL;
    int r = 0;

    response.body = malloc(FAKEGRAPH_BODY_MAX + 1);
    if (response.body == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    response.body[0] = '\0';

    CURL *curl = http->curl;
    /* A NULL body would make curl call a read callback, so an empty POST gets "". */
    (void)curl_easy_setopt(curl, CURLOPT_POSTFIELDS, len > 0 ? body : "");
    (void)curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    (void)curl_easy_setopt(curl, CURLOPT_FRESH_CONNECT, new_connection ? 1L : 0L);
    (void)curl_easy_setopt(curl, CURLOPT_FORBID_REUSE, new_connection ? 1L : 0L);
    (void)curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response);

    http->error[0] = '\0';
    CURLcode code = curl_easy_perform(curl);
    if (code != CURLE_OK) {
        char limits[80] = "";
        if (code == CURLE_OPERATION_TIMEDOUT) {
            snprintf(limits, sizeof(limits), " (limits: connect %ld ms, whole request %ld ms)",
                     CONNECT_TIMEOUT_MS < http->timeout_ms ? CONNECT_TIMEOUT_MS : http->timeout_ms,
                     http->timeout_ms);
        }
        r = crd_error_set(err, -EIO, "POST %s failed: %s%s%s", http->url_text,
                          http->error[0] != '\0' ? http->error : curl_easy_strerror(code),
                          limits, http_failure_hint(code));
        goto out;
    }

    (void)curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
    char *header = NULL;
    (void)curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &header);
    if (header != NULL) {
        content_type = strdup(header);
        if (content_type == NULL) {
            r = crd_error_set(err, -ENOMEM, "out of memory");
            goto out;
        }
    }

    *ret_response = response;
    ret_response->content_type = content_type;
    content_type = NULL;
    response.body = NULL;

out:
    free(content_type);
    fakegraph_response_clear(&response);
    return r;
}

void fakegraph_http_free(struct fakegraph_http *http)
{
    if (http == NULL) {
        return;
    }
    curl_easy_cleanup(http->curl);
    curl_url_cleanup(http->url);
    curl_slist_free_all(http->headers);
    curl_free(http->url_text);
    free(http);
}

void fakegraph_response_clear(struct fakegraph_response *response)
{
    free(response->content_type);
    free(response->body);
    *response = (struct fakegraph_response){0};
}

char *fakegraph_escape(const char *data, size_t len, size_t max_len)
{
    static const char hex_digits[] = "0123456789abcdef";
    size_t shown_len = len < max_len ? len : max_len;
    /* An escaped byte takes at most 4 characters (\xNN), plus room for "..." and the NUL. */
    char *out = malloc(shown_len * 4 + 4);
    if (out == NULL) {
        return NULL;
    }

    char *p = out;
    for (size_t i = 0; i < shown_len; i++) {
        unsigned char c = (unsigned char)data[i];
        char escape = 0;
        switch (c) {
        case '\n':
            escape = 'n';
            break;
        case '\r':
            escape = 'r';
            break;
        case '\t':
            escape = 't';
            break;
        case '\\':
        case '\'':
        case '"':
            escape = (char)c;
            break;
        default:
            break;
        }

        if (escape != 0) {
            *p++ = '\\';
            *p++ = escape;
        } else if (c < 0x20 || c >= 0x7f) {
            *p++ = '\\';
            *p++ = 'x';
            *p++ = hex_digits[c >> 4];
            *p++ = hex_digits[c & 0x0f];
        } else {
            *p++ = (char)c;
        }
    }
    if (shown_len < len) {
        memcpy(p, "...", 3);
        p += 3;
    }
    *p = '\0';
    return out;
}
