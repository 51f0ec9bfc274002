/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

int crd_metrics_begin(struct crd_metrics *metrics)
{
    memset(metrics, 0, sizeof(*metrics));
    metrics->stream = open_memstream(&metrics->text, &metrics->len);
    return metrics->stream != NULL ? 0 : -ENOMEM;
}

/* Writes a label value with backslash, double quote and newline escaped. */
static void write_label_value(FILE *stream, const char *value)
{
    for (const char *p = value; *p != '\0'; p++) {
        if (*p == '\\' || *p == '"') {
            fputc('\\', stream);
            fputc(*p, stream);
        } else if (*p == '\n') {
            fputs("\\n", stream);
        } else {
            fputc(*p, stream);
        }
    }
}

void crd_metrics_sample(struct crd_metrics *metrics, const char *name, const char *type,
                        const char *help, const char *label_name, const char *label_value,
                        double value)
{
    if (metrics->stream == NULL) {
        return;
    }
    if (metrics->family == NULL || strcmp(metrics->family, name) != 0) {
        /* fputs rather than fprintf: gcc 12 with -fsanitize wrongly warns of NULL %s arguments. */
        const char *parts[] = {"# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n"};
        for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
            fputs(parts[i], metrics->stream);
        }
        metrics->family = name;
    }
    fputs(name, metrics->stream);
    if (label_name != NULL && label_value != NULL) {
        fprintf(metrics->stream, "{%s=\"", label_name);
        write_label_value(metrics->stream, label_value);
        fputs("\"}", metrics->stream);
    }
    fprintf(metrics->stream, " %.17g\n", value);
}

int crd_metrics_end(struct crd_metrics *metrics, char **ret_text)
{
    if (metrics->stream == NULL) {
        return -ENOMEM;
    }
    int failed = ferror(metrics->stream);
    fclose(metrics->stream);
    metrics->stream = NULL;
    if (failed || metrics->text == NULL) {
        free(metrics->text);
        return -ENOMEM;
    }
    *ret_text = metrics->text;
    metrics->text = NULL;
    return 0;
}
