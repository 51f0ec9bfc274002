/* SPDX-License-Identifier: MIT */
/* Helpers shared by fakegraph's subcommands: option parsing, files, ids and times. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "fakegraph.h"

int fakegraph_next_option(int argc, char **argv, int *index, const char *command,
                          const struct fakegraph_option_spec *specs, size_t spec_count,
                          int *ret_id, const char **ret_value, struct crd_error *err)
{
    const char *arg = argv[*index];
    if (strncmp(arg, "--", 2) != 0) {
        return crd_error_set(err, -EINVAL, "unexpected argument '%s' for '%s'", arg, command);
    }

    const char *equals = strchr(arg, '=');
    size_t name_len = equals != NULL ? (size_t)(equals - arg) : strlen(arg);
    const struct fakegraph_option_spec *spec = NULL;
    for (size_t i = 0; i < spec_count; i++) {
        if (strlen(specs[i].name) == name_len && strncmp(specs[i].name, arg, name_len) == 0) {
            spec = &specs[i];
            break;
        }
    }
    if (spec == NULL) {
        return crd_error_set(err, -EINVAL, "unknown option '%.*s' for '%s'", (int)name_len, arg,
                             command);
    }

    const char *value = "";
    if (!spec->has_value) {
        if (equals != NULL) {
            return crd_error_set(err, -EINVAL, "option '%s' takes no value", spec->name);
        }
    } else if (equals != NULL) {
        value = equals + 1;
    } else if (*index + 1 < argc) {
        *index += 1;
        value = argv[*index];
    } else {
        return crd_error_set(err, -EINVAL, "option '%s' requires a value", spec->name);
    }
    if (spec->has_value && value[0] == '\0') {
        return crd_error_set(err, -EINVAL, "option '%s' requires a non-empty value", spec->name);
    }

    *index += 1;
    *ret_id = spec->id;
    *ret_value = value;
    return 0;
}

int fakegraph_parse_number(const char *option, const char *value, unsigned long min,
                           unsigned long max, unsigned long *ret_number, struct crd_error *err)
{
    char *end = NULL;
    errno = 0;
    unsigned long number = strtoul(value, &end, 10);
    if (value[0] < '0' || value[0] > '9' || *end != '\0' || errno != 0 || number < min ||
        number > max) {
        return crd_error_set(err, -EINVAL, "invalid %s '%s': expected a number from %lu to %lu",
                             option, value, min, max);
    }
    *ret_number = number;
    return 0;
}

int fakegraph_read_file(const char *label, const char *path, size_t max_size, char **ret_data,
                        size_t *ret_len, struct crd_error *err)
{
    char *data = NULL;
    int r = 0;

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        r = crd_error_set(err, -errno, "cannot open %s '%s': %s", label, path, strerror(errno));
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        r = crd_error_set(err, -errno, "cannot stat %s '%s': %s", label, path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        r = crd_error_set(err, -EINVAL, "%s '%s' is not a regular file", label, path);
        goto out;
    }
    if ((unsigned long long)st.st_size > max_size) {
        r = crd_error_set(err, -EFBIG, "%s '%s' has %lld bytes, more than the maximum of %zu",
                          label, path, (long long)st.st_size, max_size);
        goto out;
    }

    size_t size = (size_t)st.st_size;
    data = malloc(size + 1);
    if (data == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    size_t len = 0;
    while (len < size) {
        ssize_t n = read(fd, data + len, size - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            r = crd_error_set(err, n < 0 ? -errno : -EIO, "cannot read %s '%s': %s", label, path,
                              n < 0 ? strerror(errno) : "file shrank while reading");
            goto out;
        }
        len += (size_t)n;
    }
    data[len] = '\0';

    *ret_data = data;
    *ret_len = len;
    data = NULL;

out:
    free(data);
    if (fd >= 0) {
        close(fd);
    }
    return r;
}

int fakegraph_read_json_file(const char *label, const char *path, json_t **ret_value,
                             struct crd_error *err)
{
    char *data = NULL;
    size_t len = 0;
    int r = fakegraph_read_file(label, path, FAKEGRAPH_FILE_MAX, &data, &len, err);
    if (r < 0) {
        return r;
    }

    json_error_t error;
    json_t *value = json_loadb(data, len, 0, &error);
    free(data);
    if (value == NULL) {
        return crd_error_set(err, -EINVAL, "%s '%s' is not valid JSON: %s at line %d",
                             label, path, error.text, error.line);
    }
    *ret_value = value;
    return 0;
}

int fakegraph_random_guid(char guid[CRD_GUID_LEN + 1], struct crd_error *err)
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof(b)) != 1) {
        return crd_error_set(err, -EIO, "reading random bytes for a GUID failed");
    }
    /* Version 4 (random) and the RFC 4122 variant. */
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);

    snprintf(guid, CRD_GUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return 0;
}

void fakegraph_format_notification_time(int64_t ms, char *buf, size_t size)
{
    /* Graph writes offsets as "+00:00" in notifications, where crd_time_format_iso8601 writes Z. */
    char iso[40];
    crd_time_format_iso8601(ms, iso, sizeof(iso));
    size_t len = strlen(iso);
    snprintf(buf, size, "%.*s+00:00", (int)(len - 1), iso);
}
