/* prom.h - a reader of Prometheus' text exposition format (version 0.0.4), for
 * `deepmoe top`: samples with their labels, comments and TYPE/HELP lines
 * skipped. Bounded: names and label sets have fixed maximum lengths, a line
 * past them is refused, and at most DM_PROM_MAX samples are kept. */
#ifndef DM_OBS_PROM_H
#define DM_OBS_PROM_H

#include "deepmoe.h"

#define DM_PROM_MAX 100000
#define DM_PROM_NAME 128
#define DM_PROM_LABELS 512

typedef struct dm_prom_sample {
    char name[DM_PROM_NAME];
    char labels[DM_PROM_LABELS];  /* k="v" pairs joined by ',' as written (escapes kept) */
    double value;                 /* NaN, +Inf and -Inf as Prometheus spells them */
} dm_prom_sample;

typedef struct dm_prom {
    dm_prom_sample *s;
    int n;
} dm_prom;

/* Parses text[len] (need not be NUL-terminated). DM_ERR_FORMAT naming the line
 * for a malformed sample; the samples read so far are freed. */
dm_status dm_prom_parse(const char *text, size_t len, dm_prom *out, dm_error *err);
void dm_prom_free(dm_prom *p);

/* The value of label key in s (unescaped into out[cap]); 0 found, -1 not. */
int dm_prom_label(const dm_prom_sample *s, const char *key, char *out, size_t cap);

/* The sum of every sample called name whose labels include each "k=v" of match
 * (a comma-separated list, NULL or "" for all); NaN if none matched. */
double dm_prom_sum(const dm_prom *p, const char *name, const char *match);

#endif
