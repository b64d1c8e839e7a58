/* svg.c - the report's SVG: a growing string, line charts, heatmaps. Plain SVG
 * 1.1 elements with fixed sizes (W x H user units, scaled by the page's CSS), so
 * any browser draws them the same without a script or a font fetch. */
#include "obs/svg.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define W 600.0
#define H 300.0
#define ML 62.0   /* margins: left (y labels), right, top (title), bottom (x labels) */
#define MR 16.0
#define MT 28.0
#define MB 44.0
#define LEGEND_W 104.0   /* a line chart's legend, right of its plot */

void dm_sb_printf(dm_sb *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (int pass = 0; pass < 2; pass++) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? room : 0, fmt, ap);
        va_end(ap);
        if (n < 0) { b->oom = 1; return; }
        if ((size_t)n < room) { b->len += (size_t)n; return; }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len <= (size_t)n) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p;
        b->cap = cap;
    }
}

void dm_sb_escape(dm_sb *b, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&': dm_sb_printf(b, "&amp;"); break;
        case '<': dm_sb_printf(b, "&lt;"); break;
        case '>': dm_sb_printf(b, "&gt;"); break;
        case '"': dm_sb_printf(b, "&quot;"); break;
        case '\'': dm_sb_printf(b, "&#39;"); break;
        default: dm_sb_printf(b, "%c", *s);
        }
    }
}

void dm_sb_free(dm_sb *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---------------------------------------------------------------- axes */

/* A "nice" tick step (1, 2 or 5 times a power of ten) for about n ticks over [lo, hi]. */
static double tick_step(double lo, double hi, int n)
{
    double raw = (hi - lo) / n;
    if (!(raw > 0)) return 1;
    double mag = pow(10, floor(log10(raw))), f = raw / mag;
    return mag * (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10);
}

static void label(char *buf, size_t n, double v)
{
    if (fabs(v) < 1e-12) v = 0;
    if (fabs(v) >= 1e4 || (fabs(v) < 1e-3 && v != 0)) snprintf(buf, n, "%.2g", v);
    else snprintf(buf, n, "%.4g", v);
}

typedef struct frame { double x0, x1, y0, y1, right; } frame;   /* data ranges; the plot's right edge */

static double px(const frame *f, double x) { return ML + (x - f->x0) / (f->x1 - f->x0) * (f->right - ML); }
static double py(const frame *f, double y) { return H - MB - (y - f->y0) / (f->y1 - f->y0) * (H - MT - MB); }

static void open_svg(dm_sb *b, const char *id, const char *title, const char *cls)
{
    dm_sb_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"");
    dm_sb_escape(b, id);
    dm_sb_printf(b, "\" class=\"%s\" viewBox=\"0 0 %.0f %.0f\" width=\"%.0f\" height=\"%.0f\" role=\"img\">"
                    "<rect class=\"bg\" x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#fff\"/>"
                    "<text class=\"title\" x=\"%.0f\" y=\"18\" font-size=\"14\" font-weight=\"bold\">",
                 cls, W, H, W, H, W, H, ML);
    dm_sb_escape(b, title);
    dm_sb_printf(b, "</text>");
}

static void axes(dm_sb *b, const frame *f, const char *xlabel, const char *ylabel)
{
    double xs = tick_step(f->x0, f->x1, 6), ys = tick_step(f->y0, f->y1, 5);
    char t[32];
    dm_sb_printf(b, "<g class=\"axes\" font-size=\"11\" fill=\"#333\">");
    for (double v = ceil(f->y0 / ys) * ys; v <= f->y1 + ys * 1e-9; v += ys) {
        label(t, sizeof t, v);
        dm_sb_printf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>"
                        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>",
                     ML, f->right, py(f, v), py(f, v), ML - 5, py(f, v) + 4, t);
    }
    for (double v = ceil(f->x0 / xs) * xs; v <= f->x1 + xs * 1e-9; v += xs) {
        label(t, sizeof t, v);
        dm_sb_printf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#f0f0f0\"/>"
                        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>",
                     px(f, v), px(f, v), MT, H - MB, px(f, v), H - MB + 15, t);
    }
    dm_sb_printf(b, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#999\"/>", ML, MT,
                 f->right - ML, H - MT - MB);
    dm_sb_printf(b, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">", (ML + f->right) / 2, H - 8);
    dm_sb_escape(b, xlabel);
    dm_sb_printf(b, "</text><text transform=\"translate(14 %.0f) rotate(-90)\" text-anchor=\"middle\">", (MT + H - MB) / 2);
    dm_sb_escape(b, ylabel);
    dm_sb_printf(b, "</text></g>");
}

/* ---------------------------------------------------------------- line chart */

void svg_line_chart(dm_sb *b, const svg_chart *c, const svg_series *s, int n)
{
    frame f = {INFINITY, -INFINITY, INFINITY, -INFINITY, W - MR - (n > 0 ? LEGEND_W : 0)};
    for (int i = 0; i < n; i++)
        for (int j = 0; j < s[i].n; j++) {
            if (!isfinite(s[i].y[j]) || !isfinite(s[i].x[j])) continue;
            f.x0 = fmin(f.x0, s[i].x[j]); f.x1 = fmax(f.x1, s[i].x[j]);
            f.y0 = fmin(f.y0, s[i].y[j]); f.y1 = fmax(f.y1, s[i].y[j]);
        }
    open_svg(b, c->id, c->title, "chart");
    if (!isfinite(f.x0)) {
        dm_sb_printf(b, "<text class=\"nodata\" x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\" fill=\"#888\">no data</text></svg>",
                     W / 2, H / 2);
        return;
    }
    if (c->has_hline) { f.y0 = fmin(f.y0, c->hline); f.y1 = fmax(f.y1, c->hline); }
    if (c->y_from_zero) f.y0 = fmin(f.y0, 0);
    if (f.x1 <= f.x0) f.x1 = f.x0 + 1;
    double pad = (f.y1 - f.y0) * 0.05;
    if (!(pad > 0)) pad = fabs(f.y1) > 0 ? fabs(f.y1) * 0.1 : 1;
    f.y1 += pad;
    if (!c->y_from_zero || f.y0 < 0) f.y0 -= pad;
    axes(b, &f, c->xlabel, c->ylabel);
    if (c->has_hline) {
        dm_sb_printf(b, "<g class=\"hline\"><line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#c00\" "
                        "stroke-dasharray=\"6 4\"/><text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#c00\" "
                        "text-anchor=\"end\">", ML, f.right, py(&f, c->hline), py(&f, c->hline), f.right - 4,
                     py(&f, c->hline) - 4);
        dm_sb_escape(b, c->hline_label ? c->hline_label : "");
        dm_sb_printf(b, "</text></g>");
    }
    for (int i = 0; i < n; i++) {
        dm_sb_printf(b, "<polyline class=\"series\" data-name=\"");
        dm_sb_escape(b, s[i].name);
        dm_sb_printf(b, "\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.6\"%s points=\"", s[i].color,
                     s[i].dashed ? " stroke-dasharray=\"5 3\"" : "");
        int pts = 0;
        for (int j = 0; j < s[i].n; j++) {
            if (!isfinite(s[i].y[j]) || !isfinite(s[i].x[j])) continue;
            dm_sb_printf(b, "%s%.1f,%.1f", pts++ ? " " : "", px(&f, s[i].x[j]), py(&f, s[i].y[j]));
        }
        dm_sb_printf(b, "\"/>");
        if (pts == 1)   /* a single point: a dot, or it would not show */
            for (int j = 0; j < s[i].n; j++)
                if (isfinite(s[i].y[j]) && isfinite(s[i].x[j]))
                    dm_sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>", px(&f, s[i].x[j]),
                                 py(&f, s[i].y[j]), s[i].color);
    }
    /* legend: right of the plot, one line per series */
    dm_sb_printf(b, "<g class=\"legend\" font-size=\"11\">");
    for (int i = 0; i < n; i++) {
        double y = MT + 10 + 14 * i, x = f.right + 8;
        dm_sb_printf(b, "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"%s/>"
                        "<text x=\"%.0f\" y=\"%.1f\">", x, x + 18, y - 4, y - 4,
                     s[i].color, s[i].dashed ? " stroke-dasharray=\"5 3\"" : "", x + 22, y);
        char nm[20];   /* what fits beside the plot */
        snprintf(nm, sizeof nm, strlen(s[i].name) > 13 ? "%.12s..." : "%s", s[i].name);
        dm_sb_escape(b, nm);
        dm_sb_printf(b, "</text>");
    }
    dm_sb_printf(b, "</g></svg>");
}

/* ---------------------------------------------------------------- heatmap */

void svg_heatmap(dm_sb *b, const char *id, const char *title, const double *v, int rows, int cols, const double *x,
                 double vmax, const char *row_prefix, const char *xlabel)
{
    open_svg(b, id, title, "heatmap");
    if (rows <= 0 || cols <= 0) {
        dm_sb_printf(b, "<text class=\"nodata\" x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\" fill=\"#888\">no data</text></svg>",
                     W / 2, H / 2);
        return;
    }
    if (!(vmax > 0)) vmax = 1;
    double x0 = ML, w = W - ML - MR - 50, cw = w / cols, ch = (H - MT - MB) / rows;
    dm_sb_printf(b, "<g class=\"cells\" shape-rendering=\"crispEdges\">");
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            double t = v[(size_t)r * cols + c] / vmax;
            t = t < 0 ? 0 : t > 1 ? 1 : t;
            /* white to deep blue */
            int R = (int)lround(255 - t * (255 - 8)), G = (int)lround(255 - t * (255 - 48)), B = (int)lround(255 - t * (255 - 107));
            dm_sb_printf(b, "<rect class=\"cell\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#%02x%02x%02x\">"
                            "<title>%s %g, %s%d: %.4f</title></rect>",
                         x0 + c * cw, MT + r * ch, cw + 0.05, ch + 0.05, R, G, B, xlabel, x[c], row_prefix, r,
                         v[(size_t)r * cols + c]);
        }
    dm_sb_printf(b, "</g><g class=\"axes\" font-size=\"11\" fill=\"#333\">");
    int every = rows > 16 ? (rows + 15) / 16 : 1;
    for (int r = 0; r < rows; r += every)
        dm_sb_printf(b, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%s%d</text>", ML - 5, MT + (r + 0.5) * ch + 4,
                     row_prefix, r);
    int step = cols > 6 ? (cols + 5) / 6 : 1;
    for (int c = 0; c < cols; c += step) {
        char t[32];
        label(t, sizeof t, x[c]);
        dm_sb_printf(b, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%s</text>", x0 + (c + 0.5) * cw, H - MB + 15, t);
    }
    dm_sb_printf(b, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">", x0 + w / 2, H - 8);
    dm_sb_escape(b, xlabel);
    dm_sb_printf(b, "</text>");
    /* the color scale */
    double sx = W - MR - 34;
    for (int i = 0; i < 10; i++) {
        double t = (9 - i) / 9.0;
        int R = (int)lround(255 - t * 247), G = (int)lround(255 - t * 207), B = (int)lround(255 - t * 148);
        dm_sb_printf(b, "<rect x=\"%.0f\" y=\"%.1f\" width=\"12\" height=\"%.1f\" fill=\"#%02x%02x%02x\" stroke=\"#ccc\" "
                        "stroke-width=\"0.3\"/>", sx, MT + i * (H - MT - MB) / 10, (H - MT - MB) / 10, R, G, B);
    }
    char t[32];
    label(t, sizeof t, vmax);
    dm_sb_printf(b, "<text x=\"%.0f\" y=\"%.0f\">%s</text><text x=\"%.0f\" y=\"%.0f\">0</text></g></svg>", sx + 14,
                 MT + 9, t, sx + 14, H - MB);
}
