/* tests/checkpoint/real_logp.c - dev driver for tools/check_real_model.sh: loads a checkpoint
 * with llama_model_load, runs the CPU backend's forward on one token sequence and prints
 * logp[i] (see llama_batch in llama/model.h), one per line.
 *   real_logp MODEL_DIR < ids.txt      (whitespace-separated token ids)
 */
#include "../../llama/model.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    char err[1024];
    llama_model m;
    llama_backend *be;
    llama_batch b;
    int *ids = NULL, n = 0, cap = 0, x, start[2], i;
    unsigned char *comp;
    float *logp;
    if (argc != 2) { fprintf(stderr, "usage: real_logp MODEL_DIR < ids.txt\n"); return 2; }
    while (scanf("%d", &x) == 1) {
        if (n == cap) { cap = cap ? 2 * cap : 256; ids = (int *)realloc(ids, (size_t)cap * sizeof *ids); }
        ids[n++] = x;
    }
    if (!n) { fprintf(stderr, "no token ids on stdin\n"); return 2; }
    if (llama_model_load(&m, argv[1], err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    be = llama_cpu_backend_create(&m, err, sizeof err);
    if (!be) { fprintf(stderr, "%s\n", err); return 1; }
    comp = (unsigned char *)calloc((size_t)n, 1);
    logp = (float *)calloc((size_t)n, sizeof *logp);
    start[0] = 0; start[1] = n;
    b.n_seq = 1; b.tokens = ids; b.seq_start = start; b.completion = comp;
    if (be->forward(be, &b, logp)) { fprintf(stderr, "forward: %s\n", be->err); return 1; }
    for (i = 0; i < n; i++) printf("%.9g\n", logp[i]);
    be->destroy(be);
    llama_model_free(&m);
    free(ids); free(comp); free(logp);
    return 0;
}
