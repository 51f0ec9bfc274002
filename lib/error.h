/* SPDX-License-Identifier: MIT */
/*
 * Error reporting for lib/: a fallible function returns 0 or a negative
 * errno-style code and fills a caller-supplied struct crd_error with a
 * message. The code's kind (crd_error_kind_of) shows whether a retry can help.
 */
#ifndef CRD_ERROR_H
#define CRD_ERROR_H

#include <stddef.h>

#define CRD_ERROR_MESSAGE_MAX 512

enum crd_error_kind {
    CRD_ERROR_PERMANENT,  /* retrying the same request will not help */
    CRD_ERROR_RETRYABLE,  /* a later attempt may succeed */
    CRD_ERROR_THROTTLED,  /* the peer asked us to slow down */
    CRD_ERROR_INVALID,    /* the input is malformed or out of range */
    CRD_ERROR_KIND__COUNT
};

struct crd_error {
    int code;                        /* negative errno-style value, 0 when unset */
    char message[CRD_ERROR_MESSAGE_MAX];
};

/*
 * Fills err (when not NULL) with code and a printf-style message, and returns
 * code so that failing and explaining take one statement. Thread-safe.
 */
int crd_error_set(struct crd_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to an existing message, keeping its code. Returns the code. */
int crd_error_prefix(struct crd_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Maps an error code to what a caller can do about it. */
enum crd_error_kind crd_error_kind_of(int code);

const char *crd_error_kind_name(enum crd_error_kind kind);

#endif
