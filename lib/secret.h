/* SPDX-License-Identifier: MIT */
/*
 * Secrets (client secret, private keys, clientState) kept in memory that is
 * excluded from core dumps (MADV_DONTDUMP) and wiped when freed. There is no
 * function that formats a secret for a log or an error message.
 */
#ifndef CRD_SECRET_H
#define CRD_SECRET_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

struct crd_secret;

/* Secret files larger than this are rejected: no credential we read is near it. */
#define CRD_SECRET_MAX_SIZE (64 * 1024)

/*
 * Copies len bytes into a new secret. The caller frees it with
 * crd_secret_free(). Returns 0, or -ENOMEM.
 */
int crd_secret_new(const void *data, size_t len, struct crd_secret **ret_secret,
                   struct crd_error *err);

/*
 * Reads a secret file. With strip_newline, one trailing "\n" or "\r\n" is
 * dropped (as `echo` leaves it). *ret_loose_mode (may be NULL) is set when
 * the group or others may read the file, so the caller can warn. The error
 * names the path, never the content.
 */
int crd_secret_read_file(const char *path, bool strip_newline, struct crd_secret **ret_secret,
                         bool *ret_loose_mode, struct crd_error *err);

/*
 * The bytes, NUL-terminated for APIs that want a C string; valid until
 * crd_secret_free(). Pass them only to TLS, HTTP or comparison code.
 */
const char *crd_secret_bytes(const struct crd_secret *secret);
size_t crd_secret_len(const struct crd_secret *secret);

/* Wipes and frees. Accepts NULL. */
void crd_secret_free(struct crd_secret *secret);

#endif
