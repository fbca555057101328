/* bench/tokenizer_bench.c - encode throughput of llama/tokenizer.c (one thread).
 *
 *   tokenizer_bench DIR FILE [REPS] [IDS_OUT]
 *
 * Loads DIR/tokenizer.json, encodes FILE (allow_special = 0) REPS times (default 5) and prints
 * the best time as MB/s (MB = 10^6 bytes). FILE is encoded as one string, or, when it contains
 * NUL bytes, as separate documents split at them (bytes counted without the NULs). A fresh tokenizer is loaded before each
 * run so the word cache starts empty every time (as a new process would). With IDS_OUT, writes
 * the ids (one per line) for bench/tokenizer_bench.py to compare with Hugging Face's.
 */
#define _POSIX_C_SOURCE 199309L  /* clock_gettime */
#include "../llama/tokenizer.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    char err[512];
    FILE *f;
    char *text;
    long n;
    int reps = argc > 3 ? atoi(argv[3]) : 5, r;
    double best = 1e30;
    tok_ids ids = {0};
    if (argc < 3) { fprintf(stderr, "usage: tokenizer_bench DIR FILE [REPS] [IDS_OUT]\n"); return 2; }
    if (!(f = fopen(argv[2], "rb"))) { fprintf(stderr, "cannot open %s\n", argv[2]); return 1; }
    fseek(f, 0, SEEK_END); n = ftell(f); fseek(f, 0, SEEK_SET);
    text = (char *)malloc((size_t)n);
    if (!text || fread(text, 1, (size_t)n, f) != (size_t)n) { fprintf(stderr, "cannot read %s\n", argv[2]); return 1; }
    fclose(f);
    for (r = 0; r < reps; r++) {
        tokenizer *t;
        double t0;
        if (tokenizer_load(&t, argv[1], NULL, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
        ids.len = 0;
        t0 = now();
        {
            long a = 0, b;
            while (a <= n) {
                for (b = a; b < n && text[b]; b++) {}
                if (tokenizer_encode(t, text + a, (size_t)(b - a), 0, &ids, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
                a = b + 1;
            }
        }
        t0 = now() - t0;
        if (t0 < best) best = t0;
        tokenizer_free(t);
    }
    {
        long i, nul = 0;
        for (i = 0; i < n; i++) nul += text[i] == 0;
        n -= nul;   /* MB/s of text bytes */
        printf("ours: %ld bytes in %ld documents -> %zu ids, best of %d: %.4f s, %.2f MB/s\n", n, nul + 1, ids.len,
               reps, best, (double)n / best / 1e6);
    }
    if (argc > 4) {
        size_t i;
        if (!(f = fopen(argv[4], "w"))) return 1;
        for (i = 0; i < ids.len; i++) fprintf(f, "%d\n", ids.data[i]);
        fclose(f);
    }
    tok_ids_free(&ids);
    free(text);
    return 0;
}
