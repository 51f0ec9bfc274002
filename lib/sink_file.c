/* SPDX-License-Identifier: MIT */
/*
 * The file sink: appends one JSON Lines envelope per record version to a
 * file, optionally with an fsync after each line. reopen() closes and opens
 * the path again, so that logrotate can move the file away and signal us.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sink.h"

#define SINK_FILE_MODE 0640

struct sink_file {
    char *name;                       /* the [sink NAME], for messages */
    char *path;
    enum crd_fsync_policy fsync_policy;
    int fd;                           /* -1 after a failed reopen; deliver() opens again */
    bool partial_line;                /* the file ends inside a line */
};

static const char *sink_file_open_hint(int errnum)
{
    switch (errnum) {
    case EACCES:
    case EPERM:
        return "; make the file and its directory writable by the service user";
    case ENOENT:
        return "; create the directory first";
    case EISDIR:
        return "; the path is a directory, so name a file in it";
    case EROFS:
        return "; the file system is read-only";
    default:
        return "";
    }
}

/*
 * Tells whether the regular file open as fd ends without a newline, as after
 * a crash or a failed write in the middle of a line. It reads the last byte
 * through a second, read-only descriptor, because fd is write-only. Any
 * failure to find out counts as "no", and the next line starts as usual.
 */
static bool sink_file_ends_inside_line(int fd, const char *path)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
        return false;
    }
    int read_fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (read_fd < 0) {
        return false;
    }

    bool inside = false;
    struct stat read_st;
    char last = '\n';
    if (fstat(read_fd, &read_st) == 0 && read_st.st_dev == st.st_dev &&
        read_st.st_ino == st.st_ino && read_st.st_size > 0 &&
        pread(read_fd, &last, 1, read_st.st_size - 1) == 1) {
        inside = last != '\n';
    }
    close(read_fd);
    return inside;
}

static int sink_file_open(struct sink_file *sink, struct crd_error *err)
{
    int fd = open(sink->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, SINK_FILE_MODE);
    if (fd < 0) {
        int errnum = errno;
        return crd_error_set(err, -errnum, "file sink '%s': cannot open '%s': %s%s", sink->name,
                             sink->path, strerror(errnum), sink_file_open_hint(errnum));
    }
    sink->partial_line = sink_file_ends_inside_line(fd, sink->path);
    sink->fd = fd;
    return 0;
}

static void sink_file_destroy(void *context)
{
    struct sink_file *sink = context;
    if (sink == NULL) {
        return;
    }
    if (sink->fd >= 0) {
        close(sink->fd);
    }
    free(sink->name);
    free(sink->path);
    free(sink);
}

static int sink_file_create(const struct crd_config_sink *config, void **ret_context,
                            struct crd_error *err)
{
    if (config == NULL || config->name == NULL || ret_context == NULL) {
        return crd_error_set(err, -EINVAL, "file sink: created without a configuration");
    }
    if (config->path == NULL || config->path[0] == '\0') {
        return crd_error_set(err, -EINVAL, "file sink '%s': no path is configured; set path = "
                             "to the JSON Lines file to append to", config->name);
    }
    if ((unsigned)config->fsync >= CRD_FSYNC__COUNT) {
        return crd_error_set(err, -EINVAL, "file sink '%s': invalid fsync value %d", config->name,
                             (int)config->fsync);
    }

    struct sink_file *sink = calloc(1, sizeof(*sink));
    int r = 0;
    if (sink == NULL) {
        r = crd_error_set(err, -ENOMEM, "file sink '%s': out of memory", config->name);
        goto out;
    }
    sink->fd = -1;
    sink->fsync_policy = config->fsync;
    sink->name = strdup(config->name);
    sink->path = strdup(config->path);
    if (sink->name == NULL || sink->path == NULL) {
        r = crd_error_set(err, -ENOMEM, "file sink '%s': out of memory", config->name);
        goto out;
    }
    r = sink_file_open(sink, err);
    if (r < 0) {
        goto out;
    }

    *ret_context = sink;
    sink = NULL;

out:
    sink_file_destroy(sink);
    return r;
}

/* Every failure is worth a retry: a full disk gets space, a bad mount comes back. */
static enum crd_sink_result sink_file_deliver(void *context,
                                              const struct crd_sink_delivery *delivery,
                                              struct crd_error *err)
{
    struct sink_file *sink = context;
    if (sink->fd < 0 && sink_file_open(sink, err) < 0) {
        return CRD_SINK_RETRY;
    }

    int r = crd_sink_write_line(sink->fd, delivery->line, delivery->line_len, &sink->partial_line);
    if (r < 0) {
        crd_error_set(err, r, "file sink '%s': writing to '%s' failed: %s", sink->name, sink->path,
                      strerror(-r));
        return CRD_SINK_RETRY;
    }

    /* EINVAL: the path is a pipe or device that cannot be synchronized, which is no failure. */
    if (sink->fsync_policy == CRD_FSYNC_RECORD && fsync(sink->fd) < 0 && errno != EINVAL) {
        int errnum = errno;
        crd_error_set(err, -errnum, "file sink '%s': fsync of '%s' failed: %s", sink->name,
                      sink->path, strerror(errnum));
        return CRD_SINK_RETRY;
    }
    return CRD_SINK_OK;
}

/*
 * Closes the file before opening the path again. When the open fails, no
 * descriptor is kept: records stay in the outbox until the path can be
 * opened, rather than going on into a rotated file that may be deleted.
 */
static int sink_file_reopen(void *context, struct crd_error *err)
{
    struct sink_file *sink = context;
    if (sink->fd >= 0) {
        close(sink->fd);
        sink->fd = -1;
    }
    return sink_file_open(sink, err);
}

const struct crd_sink_descriptor crd_sink_file_descriptor = {
    .abi_version = CRD_SINK_ABI_VERSION,
    .struct_size = sizeof(struct crd_sink_descriptor),
    .name = "file",
    .description = "appends JSON Lines to a file",
    .create = sink_file_create,
    .deliver = sink_file_deliver,
    .reopen = sink_file_reopen,
    .destroy = sink_file_destroy,
};
