/* SPDX-License-Identifier: MIT */
/* Small helpers shared by every module: ids, time, comparison. All thread-safe. */
#ifndef CRD_UTIL_H
#define CRD_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Length of a GUID in its 8-4-4-4-12 text form, without the terminating NUL. */
#define CRD_GUID_LEN 36

/* True when s[0..len) is a GUID in 8-4-4-4-12 hexadecimal form (either case). */
bool crd_guid_is_valid(const char *s, size_t len);

/* Compares two byte strings in time that depends only on their lengths. */
bool crd_timingsafe_equal(const void *a, size_t a_len, const void *b, size_t b_len);

/* Wall-clock time in milliseconds since the Unix epoch. */
int64_t crd_time_now_ms(void);

/* Monotonic time in milliseconds, for intervals and deadlines. */
int64_t crd_time_monotonic_ms(void);

/* Writes ms as "2026-12-04T20:38:02.123Z". Returns buf. size must be at least 25. */
char *crd_time_format_iso8601(int64_t ms, char *buf, size_t size);

/*
 * Parses an ISO 8601 date-time as Graph sends it: "2020-02-25T18:52:21.2169889Z",
 * "2023-09-25T10:36:40Z" or "2023-02-28T00:00:00.000+00:00". Fractions beyond
 * milliseconds are truncated. Returns 0 and sets *ret_ms, or -EINVAL.
 */
int crd_time_parse_iso8601(const char *s, int64_t *ret_ms);

/* Encodes in as unpadded base64url into out, which needs 4 * ((len + 2) / 3) + 1 bytes. */
void crd_base64url_encode(const unsigned char *in, size_t len, char *out);

#endif
