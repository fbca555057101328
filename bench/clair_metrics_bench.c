/* bench/clair_metrics_bench.c - times clair.h's metrics on one pair of files.
 *   clair_metrics_bench A B  ->  prints "levenshtein_s metrics_s diff_s distance"  (best of N runs)
 * Driven by bench/clair_metrics.py, which times rapidfuzz and difflib on the same files. */
#define _POSIX_C_SOURCE 200809L
#define CLAIR_NO_CURL
#define CLAIR_IMPLEMENTATION
#include "../clair.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec; }

static char *slurp(const char *p, size_t *n) {
    FILE *f = fopen(p, "rb");
    if (!f) { perror(p); exit(1); }
    fseek(f, 0, SEEK_END); long sz = ftell(f); fseek(f, 0, SEEK_SET);
    char *s = (char *)malloc((size_t)sz + 1);
    *n = fread(s, 1, (size_t)sz, f);
    fclose(f);
    return s;
}

/* best time of enough runs to fill ~0.3 s (at least 3) */
#define BEST(expr, out) do { double best = 1e30, t0 = now(); int r = 0; \
    while (r < 3 || (now() - t0 < 0.3 && r < 1000)) { double s = now(); expr; double e = now() - s; if (e < best) best = e; r++; } \
    out = best; } while (0)

int main(int argc, char **argv) {
    size_t na, nb;
    if (argc != 3) { fprintf(stderr, "usage: %s A B\n", argv[0]); return 2; }
    char *a = slurp(argv[1], &na), *b = slurp(argv[2], &nb);
    volatile long long d = 0;
    double tl, tm, td;
    clair_metrics m;
    clair_diff df;
    BEST(d = clair_levenshtein(a, na, b, nb), tl);
    BEST(clair_metrics_compute(a, na, b, nb, &m), tm);
    BEST((clair_diff_tokens(a, na, b, nb, &df), clair_diff_free(&df)), td);
    printf("%.9f %.9f %.9f %lld %zu %.17g\n", tl, tm, td, (long long)d, m.token_edits, m.jaccard);
    free(a); free(b);
    return 0;
}
