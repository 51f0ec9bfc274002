/* SPDX-License-Identifier: MIT */
/*
 * A small writer of the Prometheus text exposition format (version 0.0.4),
 * for GET /metrics. Each family gets its # HELP and # TYPE lines once; then
 * one sample line per label set. Not thread-safe: one writer per response.
 */
#ifndef CRD_METRICS_H
#define CRD_METRICS_H

#include <stdint.h>
#include <stdio.h>

struct crd_metrics {
    FILE *stream;       /* an open_memstream() of text */
    char *text;
    size_t len;
    const char *family; /* the family whose HELP and TYPE were written last */
};

/* Starts a document. Returns 0 or -ENOMEM. */
int crd_metrics_begin(struct crd_metrics *metrics);

/*
 * Writes one sample of family `name` (type "counter" or "gauge"). label_name
 * and label_value may be NULL for a sample without labels; the value is
 * escaped as the format requires.
 */
void crd_metrics_sample(struct crd_metrics *metrics, const char *name, const char *type,
                        const char *help, const char *label_name, const char *label_value,
                        double value);

/* Ends the document; *ret_text is malloc'ed and NUL-terminated. Returns 0 or -ENOMEM. */
int crd_metrics_end(struct crd_metrics *metrics, char **ret_text);

#endif
