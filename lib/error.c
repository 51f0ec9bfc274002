/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

int crd_error_set(struct crd_error *err, int code, const char *fmt, ...)
{
    if (err == NULL) {
        return code;
    }

    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    err->code = code;
    return code;
}

int crd_error_prefix(struct crd_error *err, const char *fmt, ...)
{
    if (err == NULL) {
        return 0;
    }

    char prefix[CRD_ERROR_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);

    /* Twice the size, so the compiler can see that nothing is cut before the copy. */
    char joined[2 * CRD_ERROR_MESSAGE_MAX + 2];
    snprintf(joined, sizeof(joined), "%s: %s", prefix, err->message);
    memcpy(err->message, joined, CRD_ERROR_MESSAGE_MAX - 1);
    err->message[CRD_ERROR_MESSAGE_MAX - 1] = '\0';
    return err->code;
}

enum crd_error_kind crd_error_kind_of(int code)
{
    switch (-code) {
    case EAGAIN:
    case ETIMEDOUT:
    case ECONNRESET:
    case ECONNREFUSED:
    case EIO:
    case ENOSPC:
    case EROFS:
    case EBUSY:
        return CRD_ERROR_RETRYABLE;
    case EINVAL:
    case EBADMSG:
    case E2BIG:
    case ERANGE:
    case EMSGSIZE:
        return CRD_ERROR_INVALID;
    default:
        return CRD_ERROR_PERMANENT;
    }
}

const char *crd_error_kind_name(enum crd_error_kind kind)
{
    static const char *const names[CRD_ERROR_KIND__COUNT] = {
        [CRD_ERROR_PERMANENT] = "permanent",
        [CRD_ERROR_RETRYABLE] = "retryable",
        [CRD_ERROR_THROTTLED] = "throttled",
        [CRD_ERROR_INVALID] = "invalid",
    };
    if ((unsigned)kind >= CRD_ERROR_KIND__COUNT) {
        return "unknown";
    }
    return names[kind];
}
