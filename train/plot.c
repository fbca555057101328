/* train/plot.c - `trainer plot` (see plot.h): SVG written by hand, so plotting needs nothing
 * beyond the trainer itself (no Python, no matplotlib, no browser at build time). */
#define _POSIX_C_SOURCE 200809L

#include "plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../clair.h"
#include "../util.h"

static const char *const WHO = "trainer plot";

/* ==========================================================================================
 * Series and panels
 * ========================================================================================== */

#define PLOT_MAX_KEYS 4    /* lines per panel */
#define PLOT_MAX_PANELS 8
#define PLOT_MAX_ITEMS 64  /* groups or series of a bar chart */

typedef struct {
    const char *key;       /* metrics.jsonl field, e.g. "logps/chosen" */
    double *x, *y;         /* (step, value) points, in file order */
    int n, cap;
} series;

typedef struct {
    const char *title;
    const char *keys[PLOT_MAX_KEYS]; /* the training keys; each eval_ twin is drawn as well */
} panel_def;

/* The metric families TRL logs (docs: README "Output"). Chosen is blue, rejected red, others grey. */
static const panel_def PANELS[] = {
    {"loss", {"loss"}},
    {"rewards (beta x log-ratio)", {"rewards/chosen", "rewards/rejected"}},
    {"reward margin", {"rewards/margins"}},
    {"reward accuracy", {"rewards/accuracies"}},
    {"summed log-probs", {"logps/chosen", "logps/rejected"}},
};

static const char *key_color(const char *key) {
    if (strstr(key, "chosen")) return "#1f5fbf";
    if (strstr(key, "rejected")) return "#c0392b";
    return "#333333";
}

static void series_add(series *s, double x, double y) {
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 256;
        double *nx = realloc(s->x, (size_t)cap * sizeof *nx), *ny;
        if (!nx) return;
        s->x = nx;
        ny = realloc(s->y, (size_t)cap * sizeof *ny);
        if (!ny) return;
        s->y = ny;
        s->cap = cap;
    }
    s->x[s->n] = x;
    s->y[s->n] = y;
    s->n++;
}

/* Reads every line of a metrics.jsonl into the series named by keys (training and eval_ lines
 * both carry "step"). A line that is not JSON is an error naming FILE:LINE: a half-written last
 * line cannot happen (the trainer appends whole lines), so it means the wrong file. */
static int read_metrics(const char *path, series *ser, int nser, char *err, size_t errsz) {
    size_t len, i = 0;
    long line = 0;
    char *text = read_file(path, (size_t)1 << 30, &len, err, errsz);
    if (!text) return -1;
    while (i < len) {
        size_t e = i;
        clair_json j;
        char jerr[200];
        double step;
        while (e < len && text[e] != '\n') e++;
        line++;
        if (e > i) {
            if (clair_json_parse(text + i, e - i, &j, jerr, sizeof jerr)) {
                free(text);
                return errf(err, errsz, "%s:%ld: not a JSON line (%s); pass a trainer's metrics.jsonl", path,
                            line, jerr);
            }
            if (!clair_json_get_num(&j, "step", &step)) {
                int k;
                for (k = 0; k < nser; k++) {
                    double v;
                    if (!clair_json_get_num(&j, ser[k].key, &v) && isfinite(v)) series_add(&ser[k], step, v);
                }
            }
            clair_json_free(&j);
        }
        i = e + 1;
    }
    free(text);
    return 0;
}

/* ==========================================================================================
 * SVG helpers
 * ========================================================================================== */

static void svg_text(clair_buf *b, double x, double y, const char *anchor, int size, const char *s) {
    clair_buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" font-size=\"%d\">", x, y, anchor, size);
    for (; *s; s++) { /* XML escaping of the few characters that need it */
        if (*s == '<') clair_buf_puts(b, "&lt;");
        else if (*s == '>') clair_buf_puts(b, "&gt;");
        else if (*s == '&') clair_buf_puts(b, "&amp;");
        else clair_buf_put(b, s, 1);
    }
    clair_buf_puts(b, "</text>\n");
}

/* A "nice" tick step (1, 2 or 5 x 10^k) giving about `want` ticks over span. */
static double nice_step(double span, int want) {
    double raw = span / want, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return mag * (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10);
}

typedef struct { double x0, y0, w, h, xmin, xmax, ymin, ymax; } frame;

static double fx(const frame *f, double x) { return f->x0 + (x - f->xmin) / (f->xmax - f->xmin) * f->w; }
static double fy(const frame *f, double y) { return f->y0 + f->h - (y - f->ymin) / (f->ymax - f->ymin) * f->h; }

/* Axes, grid lines and tick labels of a frame; the ranges must be non-empty. */
static void svg_axes(clair_buf *b, const frame *f, int x_ticks) {
    double st = nice_step(f->ymax - f->ymin, 5), t;
    char lab[32];
    clair_buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#999\"/>\n",
                     f->x0, f->y0, f->w, f->h);
    for (t = ceil(f->ymin / st) * st; t <= f->ymax + 1e-9 * st; t += st) {
        clair_buf_printf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n", f->x0,
                         f->x0 + f->w, fy(f, t), fy(f, t));
        fmt(lab, sizeof lab, "%g", fabs(t) < 1e-12 * st ? 0.0 : t);
        svg_text(b, f->x0 - 4, fy(f, t) + 4, "end", 10, lab);
    }
    if (!x_ticks) return;
    st = nice_step(f->xmax - f->xmin, 5);
    for (t = ceil(f->xmin / st) * st; t <= f->xmax + 1e-9 * st; t += st) {
        fmt(lab, sizeof lab, "%g", t);
        svg_text(b, fx(f, t), f->y0 + f->h + 13, "middle", 10, lab);
    }
}

static void svg_begin(clair_buf *b, int w, int h, const char *title) {
    clair_buf_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                        "font-family=\"sans-serif\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                     w, h, w, h);
    if (title) svg_text(b, w / 2.0, 22, "middle", 15, title);
}

static int svg_save(clair_buf *b, const char *path, char *err, size_t errsz) {
    clair_buf_puts(b, "</svg>\n");
    if (b->oom) return errf(err, errsz, "out of memory while drawing %s", path);
    return write_file_atomic(path, b->data, b->len, err, errsz);
}

/* ==========================================================================================
 * Curves of a run
 * ========================================================================================== */

/* One panel: its training lines solid, their eval_ twins dashed with dots, a legend. */
static void draw_panel(clair_buf *b, const panel_def *p, series *train, series *eval, double x0, double y0) {
    frame f = {x0 + 50, y0 + 28, 360, 190, 0, 0, 0, 0};
    int k, i, first = 1, lx = 0;
    for (k = 0; k < PLOT_MAX_KEYS && p->keys[k]; k++) {
        series *s2[2] = {&train[k], &eval[k]};
        int w;
        for (w = 0; w < 2; w++)
            for (i = 0; i < s2[w]->n; i++) {
                double x = s2[w]->x[i], y = s2[w]->y[i];
                if (first) { f.xmin = f.xmax = x; f.ymin = f.ymax = y; first = 0; }
                f.xmin = fmin(f.xmin, x); f.xmax = fmax(f.xmax, x);
                f.ymin = fmin(f.ymin, y); f.ymax = fmax(f.ymax, y);
            }
    }
    svg_text(b, f.x0 + f.w / 2, y0 + 18, "middle", 12, p->title);
    if (f.xmax <= f.xmin) f.xmax = f.xmin + 1;
    if (f.ymax - f.ymin < 1e-12) { f.ymin -= 0.5; f.ymax += 0.5; }
    else { double pad = 0.05 * (f.ymax - f.ymin); f.ymin -= pad; f.ymax += pad; }
    svg_axes(b, &f, 1);
    for (k = 0; k < PLOT_MAX_KEYS && p->keys[k]; k++) {
        const char *col = key_color(p->keys[k]);
        char name[80];
        if (train[k].n) {
            clair_buf_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.3\" points=\"", col);
            for (i = 0; i < train[k].n; i++)
                clair_buf_printf(b, "%.1f,%.1f ", fx(&f, train[k].x[i]), fy(&f, train[k].y[i]));
            clair_buf_puts(b, "\"/>\n");
        }
        if (eval[k].n) {
            clair_buf_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-dasharray=\"5,3\" points=\"", col);
            for (i = 0; i < eval[k].n; i++)
                clair_buf_printf(b, "%.1f,%.1f ", fx(&f, eval[k].x[i]), fy(&f, eval[k].y[i]));
            clair_buf_puts(b, "\"/>\n");
            for (i = 0; i < eval[k].n; i++)
                clair_buf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n", fx(&f, eval[k].x[i]),
                                 fy(&f, eval[k].y[i]), col);
        }
        if (!train[k].n && !eval[k].n) continue;
        fmt(name, sizeof name, "%s%s", p->keys[k], eval[k].n ? " (dashed: eval)" : "");
        clair_buf_printf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>\n",
                         f.x0 + 8 + lx, f.x0 + 22 + lx, f.y0 + 12, f.y0 + 12, col);
        svg_text(b, f.x0 + 26 + lx, f.y0 + 16, "start", 10, name);
        lx += 175;
    }
    svg_text(b, f.x0 + f.w / 2, f.y0 + f.h + 26, "middle", 10, "step");
}

static int plot_metrics(const char *path, const char *out, const char *title, char *err, size_t errsz) {
    enum { NP = (int)(sizeof PANELS / sizeof PANELS[0]) };
    series train[NP][PLOT_MAX_KEYS], eval[NP][PLOT_MAX_KEYS], all[2 * NP * PLOT_MAX_KEYS];
    char eval_key[NP][PLOT_MAX_KEYS][64];
    int p, k, n = 0, shown = 0, rc;
    clair_buf b = {0};
    memset(train, 0, sizeof train);
    memset(eval, 0, sizeof eval);
    memset(all, 0, sizeof all);
    for (p = 0; p < NP; p++)
        for (k = 0; k < PLOT_MAX_KEYS && PANELS[p].keys[k]; k++) {
            fmt(eval_key[p][k], sizeof eval_key[p][k], "eval_%s", PANELS[p].keys[k]);
            all[n++].key = PANELS[p].keys[k];
            all[n++].key = eval_key[p][k];
        }
    if (read_metrics(path, all, n, err, errsz)) return -1;
    n = 0;
    for (p = 0; p < NP; p++)
        for (k = 0; k < PLOT_MAX_KEYS && PANELS[p].keys[k]; k++) {
            train[p][k] = all[n++];
            eval[p][k] = all[n++];
        }
    svg_begin(&b, 2 * 440, 40 + 3 * 250, title ? title : path);
    for (p = 0; p < NP; p++) {
        int any = 0;
        for (k = 0; k < PLOT_MAX_KEYS && PANELS[p].keys[k]; k++) any |= train[p][k].n || eval[p][k].n;
        if (!any) continue;
        draw_panel(&b, &PANELS[p], train[p], eval[p], (shown % 2) * 440.0, 40 + (shown / 2) * 250.0);
        shown++;
    }
    rc = shown ? svg_save(&b, out, err, errsz)
               : errf(err, errsz, "%s: no line has a step and any of loss, rewards/*, logps/*: not a trainer's "
                                  "metrics.jsonl?", path);
    for (k = 0; k < (int)(sizeof all / sizeof all[0]); k++) { free(all[k].x); free(all[k].y); }
    clair_buf_free(&b);
    return rc;
}

/* ==========================================================================================
 * Bar chart of a results table
 * ========================================================================================== */

typedef struct {
    char *groups[PLOT_MAX_ITEMS], *series_names[PLOT_MAX_ITEMS];
    int ng, ns;
    double mean[PLOT_MAX_ITEMS][PLOT_MAX_ITEMS], sd[PLOT_MAX_ITEMS][PLOT_MAX_ITEMS];
    int has[PLOT_MAX_ITEMS][PLOT_MAX_ITEMS];
} bar_table;

/* Index of name in list[0..*n), appended if absent; -1 when the list is full. */
static int intern(char **list, int *n, const char *name) {
    int i;
    for (i = 0; i < *n; i++)
        if (!strcmp(list[i], name)) return i;
    if (*n == PLOT_MAX_ITEMS) return -1;
    list[*n] = strdup(name);
    return list[*n] ? (*n)++ : -1;
}

/* Splits a line in place at tabs; returns the number of fields (at most max). */
static int split_tabs(char *line, char **f, int max) {
    int n = 0;
    while (n < max) {
        char *t = strchr(line, '\t');
        f[n++] = line;
        if (!t) break;
        *t = 0;
        line = t + 1;
    }
    return n;
}

static int read_table(const char *path, bar_table *t, char *err, size_t errsz) {
    size_t len;
    char *text = read_file(path, (size_t)64 << 20, &len, err, errsz), *line, *next, *f[32];
    int nf, c, cm = -1, cs = -1, ln = 0, rc = 0;
    if (!text) return -1;
    for (line = text; line && *line && !rc; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        if (line[0] && line[strlen(line) - 1] == '\r') line[strlen(line) - 1] = 0;
        ln++;
        if (!*line) continue;
        nf = split_tabs(line, f, 32);
        if (cm < 0) { /* the header: find the value columns */
            for (c = 2; c < nf; c++) {
                if (!strcmp(f[c], "mean")) cm = c;
                if (!strcmp(f[c], "std")) cs = c;
            }
            if (cm < 0) cm = 2;
            if (nf < 3) rc = errf(err, errsz, "%s:1: a header with at least 3 tab-separated columns (group, series, "
                                              "value) is needed", path);
            continue;
        }
        if (nf <= cm || (cs >= 0 && nf <= cs)) {
            rc = errf(err, errsz, "%s:%d: %d fields, the header needs %d", path, ln, nf, (cs > cm ? cs : cm) + 1);
        } else {
            int g = intern(t->groups, &t->ng, f[0]), s = intern(t->series_names, &t->ns, f[1]);
            char *end;
            double v = strtod(f[cm], &end);
            if (g < 0 || s < 0) rc = errf(err, errsz, "%s:%d: more than %d groups or series", path, ln, PLOT_MAX_ITEMS);
            else if (end == f[cm] || *end) rc = errf(err, errsz, "%s:%d: value '%s' is not a number", path, ln, f[cm]);
            else {
                t->has[g][s] = isfinite(v);
                t->mean[g][s] = v;
                t->sd[g][s] = cs >= 0 ? strtod(f[cs], NULL) : 0;
                if (!isfinite(t->sd[g][s])) t->sd[g][s] = 0;
            }
        }
    }
    free(text);
    if (!rc && t->ng == 0) rc = errf(err, errsz, "%s: no rows after the header", path);
    return rc;
}

static const char *const BAR_COLORS[] = {"#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"};

static void draw_bars(clair_buf *b, const bar_table *t, frame *f) {
    int g, s;
    double gw = f->w / t->ng, bw = 0.8 * gw / t->ns;
    char lab[32];
    for (g = 0; g < t->ng; g++) {
        for (s = 0; s < t->ns; s++) {
            double x = f->x0 + g * gw + 0.1 * gw + s * bw, y, y0 = fy(f, fmax(f->ymin, 0));
            if (!t->has[g][s]) continue;
            y = fy(f, t->mean[g][s]);
            clair_buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n", x,
                             fmin(y, y0), 0.9 * bw, fabs(y0 - y), BAR_COLORS[s % 6]);
            if (t->sd[g][s] > 0)
                clair_buf_printf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n",
                                 x + 0.45 * bw, x + 0.45 * bw, fy(f, t->mean[g][s] - t->sd[g][s]),
                                 fy(f, t->mean[g][s] + t->sd[g][s]));
            fmt(lab, sizeof lab, "%.3g", t->mean[g][s]);
            svg_text(b, x + 0.45 * bw, fy(f, t->mean[g][s] + t->sd[g][s]) - 3, "middle", 9, lab);
        }
        svg_text(b, f->x0 + (g + 0.5) * gw, f->y0 + f->h + 15, "middle", 11, t->groups[g]);
    }
    for (s = 0; s < t->ns; s++) {
        double lx = f->x0 + s * 120.0;
        clair_buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"10\" height=\"10\" fill=\"%s\"/>\n", lx,
                         f->y0 + f->h + 28, BAR_COLORS[s % 6]);
        svg_text(b, lx + 14, f->y0 + f->h + 37, "start", 11, t->series_names[s]);
    }
}

static int plot_table(const char *path, const char *out, const char *title, char *err, size_t errsz) {
    bar_table *t = calloc(1, sizeof *t);
    frame f = {60, 40, 0, 300, 0, 1, 0, 0};
    clair_buf b = {0};
    int g, s, rc;
    if (!t) return errf(err, errsz, "out of memory");
    rc = read_table(path, t, err, errsz);
    if (!rc) {
        for (g = 0; g < t->ng; g++)
            for (s = 0; s < t->ns; s++)
                if (t->has[g][s]) {
                    f.ymin = fmin(f.ymin, t->mean[g][s] - t->sd[g][s]);
                    f.ymax = fmax(f.ymax, t->mean[g][s] + t->sd[g][s]);
                }
        if (f.ymax - f.ymin < 1e-12) f.ymax = f.ymin + 1;
        f.ymax += 0.08 * (f.ymax - f.ymin); /* room for the value labels */
        f.w = fmax(400, t->ng * (40.0 + 30.0 * t->ns));
        svg_begin(&b, (int)f.w + 80, 400, title ? title : path);
        svg_axes(&b, &f, 0);
        draw_bars(&b, t, &f);
        rc = svg_save(&b, out, err, errsz);
    }
    for (g = 0; g < t->ng; g++) free(t->groups[g]);
    for (s = 0; s < t->ns; s++) free(t->series_names[s]);
    free(t);
    clair_buf_free(&b);
    return rc;
}

/* ==========================================================================================
 * The command
 * ========================================================================================== */

static const char plot_usage[] =
    "usage: trainer plot (--metrics FILE | --table FILE) --out FILE.svg [--title TEXT]\n"
    "\n"
    "Draws an SVG (no dependency; open it in any browser).\n"
    "  --metrics: a run's OUT/metrics.jsonl -> one panel per metric family: loss; rewards/chosen and\n"
    "             rewards/rejected; rewards/margins; rewards/accuracies; logps/chosen and logps/rejected\n"
    "             (chosen blue, rejected red). Training steps are solid lines; the eval_ lines of\n"
    "             --eval-data/--eval-split evaluations are dashed with dots at each evaluation.\n"
    "  --table:   a TSV with a header row -> grouped bars: column 1 names the group (x axis), column 2\n"
    "             the series (colour), the \"mean\" column (else column 3) the bar height and an optional\n"
    "             \"std\" column the error bar (e.g. examples/repro's results.tsv: dataset x objective).\n";

int cmd_plot(int argc, char **argv) {
    const char *metrics = NULL, *table = NULL, *out = NULL, *title = NULL;
    char err[1024];
    int rc;
    const opt_def defs[] = {
        {"--metrics", OPT_STR, &metrics, "FILE", "a run's metrics.jsonl: curves"},
        {"--table", OPT_STR, &table, "FILE", "a TSV results table: bar chart"},
        {"--out", OPT_STR, &out, "FILE", "the SVG to write (written to FILE.tmp, then renamed)"},
        {"--title", OPT_STR, &title, "TEXT", "title at the top (default: the input path)"},
        {NULL, OPT_END, NULL, NULL, NULL}};
    rc = opts_parse(WHO, plot_usage, defs, argc, argv, 2, NULL, 0, NULL);
    if (rc == 1) return 0;
    if (rc < 0) return 2;
    if (!out || !metrics == !table) {
        report(WHO, "give --out and exactly one of --metrics or --table (see trainer plot --help)");
        return 2;
    }
    rc = metrics ? plot_metrics(metrics, out, title, err, sizeof err) : plot_table(table, out, title, err, sizeof err);
    if (rc) return report(WHO, "%s", err);
    fprintf(stderr, "wrote %s\n", out);
    return 0;
}
