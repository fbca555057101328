/* bench/gpu_bench.c - APO-zero training steps of the CUDA backend on a Llama shape, random init.
 *
 *   cuda_bench --shape 1b|8b|tiny --tokens T [--mode fp32|bf16|lean] [--steps N] [--seq-len n]
 *              [--no-recompute] [--peak-tflops P]
 *
 * The model is a config only (Llama-3.2-1B or Llama-3-8B shapes, or a tiny one for smoke runs):
 * the backend initialises it on the device, so no weights file and no host copy are needed.
 * A batch is T tokens in T / n sequences of n tokens (n = 512 by default), paired chosen /
 * rejected; the second half of each sequence is its completion. One step = forward, APO-zero
 * loss on the summed completion log-probs (beta 0.1, reference log-probs = the first forward's,
 * as TRL's precompute_ref_log_probs would give), backward, grad norm, clip to 1, AdamW.
 *
 * Prints one RESULT line: median step time (and its forward / backward / grad-norm + AdamW
 * parts, medians each), tokens/s, MFU (model FLOPs: 6 x matmul params x T
 * plus causal attention 6 x L x H hd x sum n^2, over --peak-tflops, default 989 = H100 SXM
 * dense bf16), and device memory in use after the steps (everything is allocated up front).
 * Exit 0 ok, 2 the model does not fit (the backend's refusal is printed), 77 no CUDA device. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cuda_runtime_api.h>
#include "../llama/model.h"
#define APO_IMPLEMENTATION
#include "../apo.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static int cmp_d(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }

static void shape(llama_config *c, const char *name)
{
    memset(c, 0, sizeof *c);
    c->rms_norm_eps = 1e-5f; c->rope_theta = 500000.0; c->bos_token_id = 128000; c->initializer_range = 0.02;
    c->max_position_embeddings = 131072;
    if (!strcmp(name, "8b")) {            /* Meta-Llama-3-8B */
        c->vocab_size = 128256; c->hidden_size = 4096; c->intermediate_size = 14336; c->num_hidden_layers = 32;
        c->num_attention_heads = 32; c->num_key_value_heads = 8; c->head_dim = 128; c->max_position_embeddings = 8192;
    } else if (!strcmp(name, "1b")) {     /* Llama-3.2-1B */
        c->vocab_size = 128256; c->hidden_size = 2048; c->intermediate_size = 8192; c->num_hidden_layers = 16;
        c->num_attention_heads = 32; c->num_key_value_heads = 8; c->head_dim = 64; c->tie_word_embeddings = 1;
        c->rope_llama3 = 1; c->rope_factor = 32; c->rope_low_freq_factor = 1; c->rope_high_freq_factor = 4;
        c->rope_original_max_position_embeddings = 8192;
    } else {                              /* tiny: smoke runs */
        c->vocab_size = 1000; c->hidden_size = 256; c->intermediate_size = 704; c->num_hidden_layers = 2;
        c->num_attention_heads = 8; c->num_key_value_heads = 2; c->head_dim = 32;
    }
}

int main(int argc, char **argv)
{
    const char *shape_name = "tiny", *mode = "bf16";
    int T = 1024, steps = 5, n = 512, recompute = 1;
    double peak = 989.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--shape") && v) { shape_name = v; i++; }
        else if (!strcmp(a, "--tokens") && v) { T = atoi(v); i++; }
        else if (!strcmp(a, "--mode") && v) { mode = v; i++; }
        else if (!strcmp(a, "--steps") && v) { steps = atoi(v); i++; }
        else if (!strcmp(a, "--seq-len") && v) { n = atoi(v); i++; }
        else if (!strcmp(a, "--peak-tflops") && v) { peak = atof(v); i++; }
        else if (!strcmp(a, "--no-recompute")) recompute = 0;
        else { fprintf(stderr, "usage: %s --shape 1b|8b|tiny --tokens T [--mode fp32|bf16|lean] [--steps N] "
                       "[--seq-len n] [--no-recompute] [--peak-tflops P]\n", argv[0]); return 2; }
    }
    if (T < 2 || n < 2 || T % (2 * n) || steps < 1) { fprintf(stderr, "cuda_bench: --tokens must be a multiple of 2 x --seq-len\n"); return 2; }
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) { printf("SKIP: no CUDA device\n"); return 77; }

    llama_model m;
    memset(&m, 0, sizeof m);                   /* params NULL: random init on the device */
    shape(&m.cfg, shape_name);
    const llama_config *cfg = &m.cfg;
    llama_cuda_opts opts = {0, strcmp(mode, "fp32") != 0, !strcmp(mode, "lean"), recompute, T, 1};
    char err[512];
    llama_backend *backend = llama_cuda_backend_create(&m, &opts, err, sizeof err);
    if (!backend) {
        printf("REFUSED shape=%s tokens=%d mode=%s: %s\n", shape_name, T, mode, err);
        return 2;
    }

    int n_seq = T / n, pairs = n_seq / 2;
    int *tok = malloc(T * sizeof(int)), *seq = malloc((n_seq + 1) * sizeof(int));
    unsigned char *comp = malloc(T);
    float *logp = malloc(T * 4), *dlogp = malloc(T * 4);
    double *sum = malloc(n_seq * sizeof(double)), *ref = malloc(n_seq * sizeof(double)), *times = malloc(steps * sizeof(double));
    double *t_fwd = malloc(steps * sizeof(double)), *t_bwd = malloc(steps * sizeof(double));   /* per timed step */
    double *t_opt = malloc(steps * sizeof(double));
    uint64_t rng = 12345;
    for (int i = 0; i < T; i++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int)((rng >> 33) % (uint64_t)cfg->vocab_size);
    }
    for (int s = 0; s <= n_seq; s++) seq[s] = s * n;
    for (int i = 0; i < T; i++) comp[i] = i % n >= n / 2;
    llama_batch batch = {n_seq, tok, seq, comp};

    /* reference log-probs: one forward before training (also the warm-up) */
    if (backend->forward(backend, &batch, logp)) { printf("FAIL forward: %s\n", backend->err); return 1; }
    llama_completion_logp(&batch, logp, ref);
    llama_adamw adamw = {1e-5, 0.9, 0.95, 1e-8, 0.0, 0};
    const apo_params apo = apo_default_params(APO_ZERO);   /* beta 0.1 */
    double loss0 = 0, loss = 0;
    for (int step = 0; step < steps + 1; step++) {    /* step 0 is a warm-up, not timed */
        /* each backend call ends synchronised (logp copied back; backward and AdamW synchronise),
         * so host clocks around them time the device work */
        double t0 = now();
        if (backend->forward(backend, &batch, logp)) { printf("FAIL forward: %s\n", backend->err); return 1; }
        double t_f = now();
        llama_completion_logp(&batch, logp, sum);
        /* APO-zero (apo.h) per pair (chosen = sequence 2p, rejected = 2p + 1), mean over pairs;
         * each completion token of a sequence gets dloss/d(summed log-prob) of that sequence */
        loss = 0;
        for (int p = 0; p < pairs; p++) {
            apo_pair pair = {sum[2 * p], sum[2 * p + 1], ref[2 * p], ref[2 * p + 1], n / 2, n / 2};
            double d_chosen, d_rejected;
            loss += apo_pair_loss(&apo, &pair, &d_chosen, &d_rejected) / pairs;
            double d_chosen_tok = d_chosen / pairs, d_rejected_tok = d_rejected / pairs;
            for (int i = seq[2 * p]; i < seq[2 * p + 1]; i++) dlogp[i] = comp[i] ? (float)d_chosen_tok : 0.f;
            for (int i = seq[2 * p + 1]; i < seq[2 * p + 2]; i++) dlogp[i] = comp[i] ? (float)d_rejected_tok : 0.f;
        }
        if (step == 0) loss0 = loss;
        backend->zero_grad(backend);
        if (backend->backward(backend, &batch, dlogp)) { printf("FAIL backward: %s\n", backend->err); return 1; }
        double t_b = now();
        double grad_norm = backend->grad_norm(backend);
        adamw.step = step + 1;
        float clip_scale = grad_norm > 1.0 ? (float)(1.0 / grad_norm) : 1.f;
        if (backend->adamw_step(backend, &adamw, clip_scale)) { printf("FAIL adamw: %s\n", backend->err); return 1; }
        double t1 = now();
        if (step > 0) {
            times[step - 1] = t1 - t0;
            t_fwd[step - 1] = t_f - t0; t_bwd[step - 1] = t_b - t_f; t_opt[step - 1] = t1 - t_b;
        }
        fprintf(stderr, "step %d: %.1f ms, loss %.6f, grad norm %.4g\n", step, (t1 - t0) * 1e3, loss, grad_norm);
        if (!isfinite(loss) || !isfinite(grad_norm)) { printf("FAIL: non-finite loss or grad norm\n"); return 1; }
    }
    qsort(times, steps, sizeof(double), cmp_d);
    qsort(t_fwd, steps, sizeof(double), cmp_d);
    qsort(t_bwd, steps, sizeof(double), cmp_d);
    qsort(t_opt, steps, sizeof(double), cmp_d);
    double med = times[steps / 2];
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    double embed_params = (double)cfg->vocab_size * cfg->hidden_size;
    /* the embedding lookup is no matmul; a tied embedding still serves as the LM head */
    double matmul_params = (double)backend->n_params - embed_params + (cfg->tie_word_embeddings ? embed_params : 0);
    double flops = 6.0 * matmul_params * T +
                   6.0 * cfg->num_hidden_layers * (double)cfg->num_attention_heads * cfg->head_dim * (double)n * n * n_seq;
    double mfu = flops / med / (peak * 1e12);
    printf("RESULT shape=%s tokens=%d seq_len=%d mode=%s recompute=%d backend=%s params=%.3fB step_ms=%.1f tok_s=%.0f "
           "tflops=%.1f mfu=%.1f%% mem_gib=%.2f fwd_ms=%.1f bwd_ms=%.1f opt_ms=%.1f loss0=%.6f loss=%.6f\n",
           shape_name, T, n, mode, recompute, backend->name, backend->n_params / 1e9, med * 1e3, T / med,
           flops / med / 1e12, 100 * mfu, (double)(total_bytes - free_bytes) / (1 << 30), t_fwd[steps / 2] * 1e3,
           t_bwd[steps / 2] * 1e3, t_opt[steps / 2] * 1e3, loss0, loss);
    backend->destroy(backend);
    free(tok); free(seq); free(comp); free(logp); free(dlogp); free(sum); free(ref);
    free(times); free(t_fwd); free(t_bwd); free(t_opt);
    return 0;
}
