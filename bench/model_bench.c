/* bench/model_bench.c - forward+backward tokens/s of the CPU model (llama/model.c) on a random
 * model of a given shape. Driven by bench/model_bench.sh, which runs PyTorch on the same shape
 * in the same run (bench/model_torch.py).
 *
 * Usage: model_bench V D I L H K T n_seq iters
 * Objective: every next-token log-prob with weight 1 (SFT-like, so the whole LM head runs). */
#include "../llama/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc != 10) {
        fprintf(stderr, "usage: model_bench V D I L H K T n_seq iters\n");
        return 2;
    }
    llama_config c = {0};
    c.vocab_size = atoi(argv[1]);
    c.hidden_size = atoi(argv[2]);
    c.intermediate_size = atoi(argv[3]);
    c.num_hidden_layers = atoi(argv[4]);
    c.num_attention_heads = atoi(argv[5]);
    c.num_key_value_heads = atoi(argv[6]);
    c.head_dim = c.hidden_size / c.num_attention_heads;
    c.rms_norm_eps = 1e-5f;
    c.rope_theta = 100000;
    c.max_position_embeddings = 8192;
    c.tie_word_embeddings = 1;
    c.initializer_range = 0.02;
    const int T = atoi(argv[7]), n_seq = atoi(argv[8]), iters = atoi(argv[9]);
    char err[512];
    llama_model m;
    if (llama_model_alloc(&m, &c, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    llama_model_init_random(&m, 1);
    llama_backend *be = llama_cpu_backend_create(&m, err, sizeof err);
    if (!be) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int *tokens = malloc(T * sizeof(int)), *seq_start = malloc((n_seq + 1) * sizeof(int));
    unsigned char *comp = malloc(T);
    float *logp = malloc(T * sizeof(float)), *dlogp = malloc(T * sizeof(float));
    for (int i = 0; i < T; i++) {
        tokens[i] = (int)((i * 2654435761u) % (unsigned)c.vocab_size);
        comp[i] = 1;
        dlogp[i] = 1.0f;
    }
    for (int s = 0; s <= n_seq; s++) seq_start[s] = (int)((long)T * s / n_seq);
    llama_batch b = {n_seq, tokens, seq_start, comp};
    double best = 1e30, tf = 0, tb = 0;
    for (int it = 0; it <= iters; it++) { /* iteration 0 warms up (allocations, page faults) */
        double t0 = now();
        if (be->forward(be, &b, logp)) { fprintf(stderr, "%s\n", be->err); return 1; }
        double t1 = now();
        if (be->backward(be, &b, dlogp)) { fprintf(stderr, "%s\n", be->err); return 1; }
        double t2 = now();
        if (it > 0 && t2 - t0 < best) { best = t2 - t0; tf = t1 - t0; tb = t2 - t1; }
    }
    double sum = 0;
    for (int i = 0; i < T; i++) sum += logp[i];
    printf("ours: T=%d fwd %.3f s bwd %.3f s fwd+bwd %.3f s  %.1f tokens/s  (mean logp %.4f)\n", T, tf,
           tb, best, T / best, sum / T);
    be->destroy(be);
    llama_model_free(&m);
    free(tokens); free(seq_start); free(comp); free(logp); free(dlogp);
    return 0;
}
