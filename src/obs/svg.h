/* svg.h - the report's drawing: a string builder, line charts and heatmaps as
 * inline SVG (no scripts, no external resources). All of it lives in svg.c. */
#ifndef DM_OBS_SVG_H
#define DM_OBS_SVG_H

#include <stddef.h>

typedef struct dm_sb {
    char *p;
    size_t len, cap;
    int oom;          /* an allocation failed: the text is incomplete */
} dm_sb;

void dm_sb_printf(dm_sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s with & < > " ' escaped for HTML text and attributes. */
void dm_sb_escape(dm_sb *b, const char *s);
void dm_sb_free(dm_sb *b);

typedef struct svg_series {
    const char *name;      /* legend */
    const char *color;     /* CSS color */
    const double *x, *y;   /* [n]; a non-finite y is a gap */
    int n;
    int dashed;
} svg_series;

typedef struct svg_chart {
    const char *id;        /* the <svg> element's id */
    const char *title, *xlabel, *ylabel;
    int has_hline;         /* a reference line at y = hline (the seed's 85% utilization) */
    double hline;
    const char *hline_label;
    int y_from_zero;       /* the y axis starts at 0 */
} svg_chart;

/* A line chart of n series (polylines with class "series"), axes with tick labels and a legend.
 * With no finite point it draws an empty frame saying "no data". */
void svg_line_chart(dm_sb *b, const svg_chart *c, const svg_series *s, int n);

/* v[rows][cols] as colored cells (class "cell", white = 0 to dark = vmax), columns at x[cols]
 * (tick labels), rows labeled row_prefix + index ("e0", "e1", ...), a <title> per cell. */
void svg_heatmap(dm_sb *b, const char *id, const char *title, const double *v, int rows, int cols, const double *x,
                 double vmax, const char *row_prefix, const char *xlabel);

#endif
