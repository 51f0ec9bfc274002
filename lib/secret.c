/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "secret.h"

struct crd_secret {
    size_t len;
    size_t mapped;  /* size of the mapping that contains this struct and the bytes */
    char bytes[];
};

int crd_secret_new(const void *data, size_t len, struct crd_secret **ret_secret,
                   struct crd_error *err)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t need = sizeof(struct crd_secret) + len + 1;
    size_t mapped = (need + (size_t)page - 1) / (size_t)page * (size_t)page;

    /* A private mapping of our own, so MADV_DONTDUMP covers nothing else. */
    struct crd_secret *secret =
        mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (secret == MAP_FAILED) {
        return crd_error_set(err, -ENOMEM, "cannot allocate %zu bytes for a secret", len);
    }
    (void)madvise(secret, mapped, MADV_DONTDUMP);

    secret->len = len;
    secret->mapped = mapped;
    if (len > 0 && data != NULL) {
        memcpy(secret->bytes, data, len);
    }
    secret->bytes[len] = '\0';
    *ret_secret = secret;
    return 0;
}

int crd_secret_read_file(const char *path, bool strip_newline, struct crd_secret **ret_secret,
                         bool *ret_loose_mode, struct crd_error *err)
{
    int r = 0;
    char *buffer = NULL;
    size_t used = 0;

    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        r = crd_error_set(err, -errno, "cannot open '%s': %s", path, strerror(errno));
        goto out;
    }

    struct stat st;
    if (fstat(fd, &st) < 0) {
        r = crd_error_set(err, -errno, "cannot stat '%s': %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        r = crd_error_set(err, -EINVAL, "'%s' is not a regular file", path);
        goto out;
    }
    if (st.st_size > CRD_SECRET_MAX_SIZE) {
        r = crd_error_set(err, -EFBIG, "'%s' is larger than %d bytes; is it the right file?",
                          path, CRD_SECRET_MAX_SIZE);
        goto out;
    }

    /* Read into memory that is itself excluded from dumps, then copy once. */
    struct crd_secret *scratch = NULL;
    r = crd_secret_new(NULL, CRD_SECRET_MAX_SIZE, &scratch, err);
    if (r < 0) {
        goto out;
    }
    buffer = (char *)scratch;
    for (;;) {
        ssize_t n = read(fd, scratch->bytes + used, CRD_SECRET_MAX_SIZE - used);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            r = crd_error_set(err, -errno, "cannot read '%s': %s", path, strerror(errno));
            goto out;
        }
        if (n == 0) {
            break;
        }
        used += (size_t)n;
        if (used == CRD_SECRET_MAX_SIZE) {
            r = crd_error_set(err, -EFBIG, "'%s' is larger than %d bytes; is it the right file?",
                              path, CRD_SECRET_MAX_SIZE);
            goto out;
        }
    }

    if (strip_newline && used > 0 && scratch->bytes[used - 1] == '\n') {
        used--;
        if (used > 0 && scratch->bytes[used - 1] == '\r') {
            used--;
        }
    }

    r = crd_secret_new(scratch->bytes, used, ret_secret, err);
    if (r < 0) {
        goto out;
    }
    if (ret_loose_mode != NULL) {
        *ret_loose_mode = (st.st_mode & (S_IRWXG | S_IRWXO)) != 0;
    }

out:
    crd_secret_free((struct crd_secret *)buffer);
    if (fd >= 0) {
        close(fd);
    }
    return r;
}

const char *crd_secret_bytes(const struct crd_secret *secret)
{
    return secret->bytes;
}

size_t crd_secret_len(const struct crd_secret *secret)
{
    return secret->len;
}

void crd_secret_free(struct crd_secret *secret)
{
    if (secret == NULL) {
        return;
    }
    OPENSSL_cleanse(secret->bytes, secret->len);
    munmap(secret, secret->mapped);
}
