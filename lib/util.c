/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "util.h"

bool crd_guid_is_valid(const char *s, size_t len)
{
    if (s == NULL || len != CRD_GUID_LEN) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') {
                return false;
            }
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

bool crd_timingsafe_equal(const void *a, size_t a_len, const void *b, size_t b_len)
{
    if (a_len != b_len) {
        return false;
    }
    return CRYPTO_memcmp(a, b, a_len) == 0;
}

int64_t crd_time_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t crd_time_monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *crd_time_format_iso8601(int64_t ms, char *buf, size_t size)
{
    time_t seconds = (time_t)(ms / 1000);
    int millis = (int)(ms % 1000);
    if (millis < 0) {
        millis += 1000;
        seconds -= 1;
    }
    struct tm tm;
    gmtime_r(&seconds, &tm);
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, millis);
    return buf;
}

/* Reads exactly `digits` decimal digits at *p and advances it. */
static int parse_digits(const char **p, int digits, int *ret_value)
{
    int value = 0;
    for (int i = 0; i < digits; i++) {
        if (!isdigit((unsigned char)(*p)[i])) {
            return -EINVAL;
        }
        value = value * 10 + ((*p)[i] - '0');
    }
    *p += digits;
    *ret_value = value;
    return 0;
}

static int expect_char(const char **p, char c)
{
    if (**p != c) {
        return -EINVAL;
    }
    (*p)++;
    return 0;
}

int crd_time_parse_iso8601(const char *s, int64_t *ret_ms)
{
    if (s == NULL) {
        return -EINVAL;
    }

    const char *p = s;
    int year, month, day, hour, minute, second;
    if (parse_digits(&p, 4, &year) < 0 || expect_char(&p, '-') < 0 ||
        parse_digits(&p, 2, &month) < 0 || expect_char(&p, '-') < 0 ||
        parse_digits(&p, 2, &day) < 0 || (*p != 'T' && *p != 't') ) {
        return -EINVAL;
    }
    p++;
    if (parse_digits(&p, 2, &hour) < 0 || expect_char(&p, ':') < 0 ||
        parse_digits(&p, 2, &minute) < 0 || expect_char(&p, ':') < 0 ||
        parse_digits(&p, 2, &second) < 0) {
        return -EINVAL;
    }
    if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 ||
        second > 60) {
        return -EINVAL;
    }

    int millis = 0;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (isdigit((unsigned char)*p)) {
            if (digits < 3) {
                millis = millis * 10 + (*p - '0');
            }
            digits++;
            p++;
        }
        if (digits == 0) {
            return -EINVAL;
        }
        for (int i = digits; i < 3; i++) {
            millis *= 10;
        }
    }

    int offset_minutes = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1;
        int offset_hours, offset_mins;
        p++;
        if (parse_digits(&p, 2, &offset_hours) < 0 || expect_char(&p, ':') < 0 ||
            parse_digits(&p, 2, &offset_mins) < 0 || offset_hours > 23 || offset_mins > 59) {
            return -EINVAL;
        }
        offset_minutes = sign * (offset_hours * 60 + offset_mins);
    } else {
        return -EINVAL;
    }
    if (*p != '\0') {
        return -EINVAL;
    }

    struct tm tm = {
        .tm_year = year - 1900,
        .tm_mon = month - 1,
        .tm_mday = day,
        .tm_hour = hour,
        .tm_min = minute,
        .tm_sec = second,
    };
    time_t seconds = timegm(&tm);
    if (seconds == (time_t)-1 && !(year == 1969 && month == 12 && day == 31)) {
        return -EINVAL;
    }
    *ret_ms = ((int64_t)seconds - (int64_t)offset_minutes * 60) * 1000 + millis;
    return 0;
}

void crd_base64url_encode(const unsigned char *in, size_t len, char *out)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < len) {
            v |= (unsigned)in[i + 1] << 8;
        }
        if (i + 2 < len) {
            v |= in[i + 2];
        }
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        if (i + 1 < len) {
            out[o++] = alphabet[(v >> 6) & 63];
        }
        if (i + 2 < len) {
            out[o++] = alphabet[v & 63];
        }
    }
    out[o] = '\0';
}
