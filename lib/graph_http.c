/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "graph_http.h"

/* CURLOPT_XFERINFOFUNCTION: a nonzero return stops the transfer. */
static int http_check_cancelled(void *clientp, curl_off_t dltotal, curl_off_t dlnow,
                                curl_off_t ultotal, curl_off_t ulnow)
{
    const atomic_bool *cancelled = clientp;
    return atomic_load(cancelled) ? 1 : 0;
}

int crd_http_easy_new(const struct crd_http_settings *settings, CURL **ret_curl,
                      struct crd_error *err)
{
    CURL *curl = curl_easy_init();
    if (curl == NULL) {
        return crd_error_set(err, -ENOMEM, "cannot create a libcurl handle");
    }

    /* http is allowed only so that tests can use plain loopback servers. */
    CURLcode code = curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https,http");
    if (code == CURLE_OK) {
        code = curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    }
    if (code == CURLE_OK) {
        code = curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    }
    if (code == CURLE_OK) {
        code =
            curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)settings->connect_timeout_ms);
    }
    if (code == CURLE_OK) {
        code = curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)settings->total_timeout_ms);
    }
    if (code == CURLE_OK) {
        code = curl_easy_setopt(curl, CURLOPT_USERAGENT, PACKAGE_NAME "/" PACKAGE_VERSION);
    }
    if (code == CURLE_OK) {
        /* Call records are large and compress well; the body limit applies after decoding. */
        code = curl_easy_setopt(curl, CURLOPT_ACCEPT_ENCODING, "");
    }
    if (code == CURLE_OK && settings->ca_file != NULL) {
        code = curl_easy_setopt(curl, CURLOPT_CAINFO, settings->ca_file);
    }
    if (code == CURLE_OK && settings->proxy != NULL) {
        code = curl_easy_setopt(curl, CURLOPT_PROXY, settings->proxy);
    }
    if (code == CURLE_OK && settings->cancelled != NULL) {
        code = curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, http_check_cancelled);
        if (code == CURLE_OK) {
            /* The callback only reads the flag. */
            code = curl_easy_setopt(curl, CURLOPT_XFERINFODATA, (void *)settings->cancelled);
        }
        if (code == CURLE_OK) {
            code = curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
        }
    }
    if (code == CURLE_OK) {
        code = curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, crd_http_body_write);
    }
    if (code != CURLE_OK) {
        curl_easy_cleanup(curl);
        return crd_error_set(err, code == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EINVAL,
                             "cannot configure libcurl: %s", curl_easy_strerror(code));
    }
    *ret_curl = curl;
    return 0;
}

size_t crd_http_body_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct crd_http_body *body = userdata;
    size_t n = size * nmemb;

    if (n > body->limit - body->len) {
        body->too_large = true;
        return 0; /* anything other than n stops the transfer with CURLE_WRITE_ERROR */
    }
    if (body->len + n + 1 > body->capacity) {
        size_t capacity = body->capacity < 16384 ? 16384 : body->capacity;
        while (capacity < body->len + n + 1) {
            capacity *= 2;
        }
        char *data = malloc(capacity);
        if (data == NULL) {
            return 0;
        }
        if (body->data != NULL) {
            memcpy(data, body->data, body->len);
            if (body->wipe) {
                OPENSSL_cleanse(body->data, body->capacity);
            }
            free(body->data);
        }
        body->data = data;
        body->capacity = capacity;
    }
    memcpy(body->data + body->len, ptr, n);
    body->len += n;
    body->data[body->len] = '\0';
    return n;
}

void crd_http_body_reset(struct crd_http_body *body)
{
    if (body->wipe && body->data != NULL) {
        OPENSSL_cleanse(body->data, body->capacity);
    }
    if (body->data != NULL) {
        body->data[0] = '\0';
    }
    body->len = 0;
    body->too_large = false;
}

void crd_http_body_free(struct crd_http_body *body)
{
    crd_http_body_reset(body);
    free(body->data);
    body->data = NULL;
    body->capacity = 0;
}

void crd_http_sanitize(char *dst, size_t size, const char *src)
{
    if (size == 0) {
        return;
    }
    size_t i = 0;
    for (; src != NULL && src[i] != '\0' && i + 1 < size; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
    }
    dst[i] = '\0';
}

bool crd_http_transport_is_transient(CURLcode code)
{
    switch (code) {
    case CURLE_OK:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
    case CURLE_OUT_OF_MEMORY:
    case CURLE_WRITE_ERROR:
    case CURLE_FILESIZE_EXCEEDED:
    case CURLE_ABORTED_BY_CALLBACK:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_UNKNOWN_OPTION:
        return false;
    default:
        /* Connection, DNS, timeouts, resets, empty replies, TLS: a later attempt may succeed. */
        return true;
    }
}
