/* bench/gpu_bench.c - APO-zero training steps of the CUDA backend on a Llama shape, random init.
 *
 *   cuda_bench --shape 1b|8b|tiny|toy [--pairs P] [--seq-len n] [--accum A] [--mode fp32|bf16|lean]
 *              [--steps N] [--recompute 0|1|2 | --no-recompute] [--cap-gib G] [--profile] [--peak-tflops P]
 *   cuda_bench --shape 1b|8b|tiny|toy --gemm-ceiling [--pairs P] [--seq-len n] [--peak-tflops P]
 *
 * The model is a config only (Llama-3.2-1B or Llama-3-8B shapes, a tiny one for smoke runs, a toy
 * one for dry runs on the CPU emulator): the backend initialises it on the device, so no weights file and no host copy.
 * A micro-batch is P pairs of sequences of n tokens (chosen, rejected; T = 2 P n tokens, n = 2048
 * by default); the second half of each sequence is its completion. One step is what the trainer
 * does: zero_grad, then for each of A micro-batches (each its own tokens) forward, APO-zero loss
 * on the summed completion log-probs (beta 0.1; reference log-probs = the first forward's, as
 * TRL's precompute_ref_log_probs gives), backward (gradients accumulate); then grad norm, clip to
 * 1, AdamW.
 *
 * Prints one RESULT line: median step time (and its forward / backward / grad-norm + AdamW
 * parts, medians each), tokens/s, MFU (model FLOPs: 6 x matmul params x tokens plus causal
 * attention 6 x L x H hd x sum n^2, recomputation not counted, over --peak-tflops, default 989
 * = H100/H200 SXM dense bf16) and the device memory in use (everything is allocated up front, so
 * that is the peak; the ballast of --cap-gib not counted). --profile adds a SPLIT line: device
 * milliseconds per step in layer GEMMs, attention, elementwise kernels, the LM head and the
 * optimizer (CUDA events).
 *
 * --recompute picks what forward keeps for backward (llama_cuda_opts.recompute): 0 everything,
 * 1 each layer's input only, the layer rerun in backward (the default), 2 selective (GEMM and
 * attention outputs kept, norms and SwiGLU recomputed); --no-recompute is --recompute 0.
 *
 * --cap-gib G makes a larger card behave like one of G GiB: a ballast allocation takes
 * everything above G before the backend plans its memory (79.6 for an 80 GB H100).
 *
 * --gemm-ceiling times, with cuBLAS alone (llama_cuda_linear_ceiling), the forward and backward
 * GEMMs of each linear layer shape of one micro-batch (q/k/v, o, gate/up, down, LM head) and
 * prints one GEMM line per shape and a CEILING line: the MFU a step would reach if it spent its
 * time in those GEMMs only. A step's MFU over this ceiling is the share of the time our code
 * leaves to cuBLAS.
 *
 * Exit 0 ok, 2 the model does not fit (the backend's refusal is printed) or bad arguments, 77 no
 * CUDA device. Builds against the CUDA runtime or the CPU emulator (tests/gpu/emu). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../llama/model.h"
#define APO_IMPLEMENTATION
#include "../apo.h"

/* The CUDA runtime calls used here, declared (cudaError_t is an int-sized enum, 0 = success) so
 * the file builds against the CUDA runtime and against the emulator without CUDA headers; and
 * the two benchmark entry points kernels.cu exports beside model.h's interface. */
extern int cudaGetDeviceCount(int *count);
extern int cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
extern int cudaMalloc(void **p, size_t bytes);
extern int cudaFree(void *p);
extern int cudaDeviceSynchronize(void);

static const double GIB = 1024.0 * 1024.0 * 1024.0;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static int cmp_d(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }
static double median(double *v, int n) { qsort(v, n, sizeof *v, cmp_d); return v[n / 2]; }

static int shape(llama_config *c, const char *name)
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
    } else if (!strcmp(name, "tiny")) {   /* smoke runs */
        c->vocab_size = 1000; c->hidden_size = 256; c->intermediate_size = 704; c->num_hidden_layers = 2;
        c->num_attention_heads = 8; c->num_key_value_heads = 2; c->head_dim = 32;
    } else if (!strcmp(name, "toy")) {    /* dry runs on the CPU emulator (tests/gpu/run.sh --dry-run) */
        c->vocab_size = 256; c->hidden_size = 64; c->intermediate_size = 176; c->num_hidden_layers = 2;
        c->num_attention_heads = 4; c->num_key_value_heads = 2; c->head_dim = 16;
    } else {
        return -1;
    }
    return 0;
}

typedef struct {
    const char *shape, *mode;
    int pairs, seq_len, accum, steps, recompute, profile, gemm_ceiling;
    double peak_tflops, cap_gib;
} bench_args;

static int parse(int argc, char **argv, bench_args *a)
{
    memset(a, 0, sizeof *a);
    a->shape = "tiny"; a->mode = "bf16"; a->pairs = 2; a->seq_len = 2048; a->accum = 1; a->steps = 5; a->recompute = LLAMA_RECOMPUTE_LAYER;
    a->peak_tflops = 989.0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--no-recompute")) { a->recompute = LLAMA_RECOMPUTE_NONE; continue; }
        if (!strcmp(o, "--profile")) { a->profile = 1; continue; }
        if (!strcmp(o, "--gemm-ceiling")) { a->gemm_ceiling = 1; continue; }
        if (!v) return -1;
        if (!strcmp(o, "--shape")) a->shape = v;
        else if (!strcmp(o, "--mode")) a->mode = v;
        else if (!strcmp(o, "--pairs")) a->pairs = atoi(v);
        else if (!strcmp(o, "--seq-len")) a->seq_len = atoi(v);
        else if (!strcmp(o, "--accum")) a->accum = atoi(v);
        else if (!strcmp(o, "--steps")) a->steps = atoi(v);
        else if (!strcmp(o, "--recompute")) a->recompute = atoi(v);
        else if (!strcmp(o, "--peak-tflops")) a->peak_tflops = atof(v);
        else if (!strcmp(o, "--cap-gib")) a->cap_gib = atof(v);
        else return -1;
        i++;
    }
    if (a->pairs < 1 || a->seq_len < 2 || a->accum < 1 || a->steps < 1 || !(a->peak_tflops > 0) || a->cap_gib < 0 ||
        a->recompute < LLAMA_RECOMPUTE_NONE || a->recompute > LLAMA_RECOMPUTE_SELECTIVE ||
        (strcmp(a->mode, "fp32") && strcmp(a->mode, "bf16") && strcmp(a->mode, "lean")))
        return -1;
    return 0;
}

/* The ballast of --cap-gib: everything the device has above cap (NULL when nothing is needed). */
static int take_ballast(double cap_gib, void **ballast, size_t *bytes)
{
    size_t free_bytes = 0, total_bytes = 0;
    *ballast = NULL; *bytes = 0;
    if (cap_gib <= 0 || cudaMemGetInfo(&free_bytes, &total_bytes) != 0) return 0;
    size_t cap = (size_t)(cap_gib * GIB);
    if (total_bytes <= cap) return 0;
    *bytes = total_bytes - cap;
    if (cudaMalloc(ballast, *bytes) != 0) {
        printf("FAIL: cannot allocate the %.2f GiB ballast for --cap-gib %.1f (%.2f GiB free)\n", *bytes / GIB, cap_gib,
               free_bytes / GIB);
        return -1;
    }
    return 0;
}

/* --gemm-ceiling: cuBLAS alone on the step's linear layer shapes. */
static int gemm_ceiling(const bench_args *a, const llama_config *cfg)
{
    int T = 2 * a->pairs * a->seq_len, D = cfg->hidden_size, I = cfg->intermediate_size;
    int QKV = (cfg->num_attention_heads + 2 * cfg->num_key_value_heads) * cfg->head_dim;
    int HD = cfg->num_attention_heads * cfg->head_dim;
    struct { const char *name; int in, out, per_step; } lin[] = {
        {"qkv_proj", D, QKV, cfg->num_hidden_layers}, {"o_proj", HD, D, cfg->num_hidden_layers},
        {"gate_up_proj", D, 2 * I, cfg->num_hidden_layers}, {"down_proj", I, D, cfg->num_hidden_layers},
        {"lm_head", D, cfg->vocab_size, 1},
    };
    double total_ms = 0, total_flops = 0;
    char err[512];
    for (size_t k = 0; k < sizeof lin / sizeof lin[0]; k++) {
        double ms = 0, flops = 6.0 * T * (double)lin[k].in * lin[k].out;
        if (llama_cuda_linear_ceiling(T, lin[k].in, lin[k].out, 5, &ms, err, sizeof err)) {
            printf("FAIL gemm %s: %s\n", lin[k].name, err);
            return 1;
        }
        printf("GEMM shape=%s tokens=%d %s in=%d out=%d fwd+bwd_ms=%.3f tflops=%.1f x%d per step\n", a->shape, T,
               lin[k].name, lin[k].in, lin[k].out, ms, flops / ms / 1e9, lin[k].per_step);
        total_ms += ms * lin[k].per_step;
        total_flops += flops * lin[k].per_step;
    }
    printf("CEILING shape=%s tokens=%d gemm_ms=%.1f tflops=%.1f mfu_ceiling=%.1f%% (linear layers only, cuBLAS alone)\n",
           a->shape, T, total_ms, total_flops / total_ms / 1e9, 100 * total_flops / total_ms / 1e9 / a->peak_tflops);
    return 0;
}

/* One micro-batch's tokens: P pairs of sequences of n random tokens (seeded by the micro-batch). */
static void make_tokens(int *tok, int T, int V, uint64_t seed)
{
    uint64_t rng = seed * 0x9E3779B97F4A7C15ull + 12345;
    for (int i = 0; i < T; i++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int)((rng >> 33) % (uint64_t)V);
    }
}

/* APO-zero (apo.h) per pair (chosen = sequence 2p, rejected = 2p + 1), mean over all pairs of
 * the step (pairs x accum); each completion token gets dloss/d(summed log-prob) of its
 * sequence. Returns this micro-batch's share of the loss. */
static double apo_grads(const llama_batch *batch, const double *sum, const double *ref, int pairs, int accum, float *dlogp)
{
    const apo_params apo = apo_default_params(APO_ZERO);   /* beta 0.1 */
    int n = batch->seq_start[1];
    double loss = 0, share = 1.0 / ((double)pairs * accum);
    for (int p = 0; p < pairs; p++) {
        apo_pair pair = {sum[2 * p], sum[2 * p + 1], ref[2 * p], ref[2 * p + 1], n / 2, n / 2};
        double d_chosen, d_rejected;
        loss += apo_pair_loss(&apo, &pair, &d_chosen, &d_rejected) * share;
        for (int s = 0; s < 2; s++) {
            double d = (s ? d_rejected : d_chosen) * share;
            for (int i = batch->seq_start[2 * p + s]; i < batch->seq_start[2 * p + s + 1]; i++)
                dlogp[i] = batch->completion[i] ? (float)d : 0.f;
        }
    }
    return loss;
}

int main(int argc, char **argv)
{
    bench_args a;
    llama_model m;
    memset(&m, 0, sizeof m);                   /* params NULL: random init on the device */
    if (parse(argc, argv, &a) || shape(&m.cfg, a.shape)) {
        fprintf(stderr, "usage: %s --shape 1b|8b|tiny|toy [--pairs P] [--seq-len n] [--accum A] [--mode fp32|bf16|lean] "
                "[--steps N] [--recompute 0|1|2 | --no-recompute] [--cap-gib G] [--profile] [--gemm-ceiling] "
                "[--peak-tflops P]\n", argv[0]);
        return 2;
    }
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != 0 || ndev == 0) { printf("SKIP: no CUDA device\n"); return 77; }
    const llama_config *cfg = &m.cfg;
    if (a.gemm_ceiling) return gemm_ceiling(&a, cfg);

    void *ballast = NULL;
    size_t ballast_bytes = 0;
    if (take_ballast(a.cap_gib, &ballast, &ballast_bytes)) return 1;
    int n = a.seq_len, n_seq = 2 * a.pairs, T = n_seq * n, A = a.accum;
    llama_cuda_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.bf16 = strcmp(a.mode, "fp32") != 0; opts.lean_optimizer = !strcmp(a.mode, "lean"); opts.recompute = a.recompute;
    opts.max_tokens = T; opts.max_seq_tokens = n; opts.verbose = 1; opts.profile = a.profile;
    char err[512];
    llama_backend *backend = llama_cuda_backend_create(&m, &opts, err, sizeof err);
    if (!backend) {
        printf("REFUSED shape=%s pairs=%d seq_len=%d mode=%s cap_gib=%.1f: %s\n", a.shape, a.pairs, n, a.mode, a.cap_gib, err);
        if (ballast) cudaFree(ballast);
        return 2;
    }

    int *tok = malloc((size_t)A * T * sizeof(int)), *seq = malloc((n_seq + 1) * sizeof(int));
    unsigned char *comp = malloc(T);
    float *logp = malloc(T * 4), *dlogp = malloc(T * 4);
    double *sum = malloc(n_seq * sizeof(double)), *ref = malloc((size_t)A * n_seq * sizeof(double));
    double *t_step = malloc(a.steps * sizeof(double)), *t_fwd = malloc(a.steps * sizeof(double));
    double *t_bwd = malloc(a.steps * sizeof(double)), *t_opt = malloc(a.steps * sizeof(double));
    for (int s = 0; s <= n_seq; s++) seq[s] = s * n;
    for (int i = 0; i < T; i++) comp[i] = i % n >= n / 2;
    for (int k = 0; k < A; k++) make_tokens(tok + (size_t)k * T, T, cfg->vocab_size, (uint64_t)k);

    /* reference log-probs: one forward per micro-batch before training (also the warm-up) */
    for (int k = 0; k < A; k++) {
        llama_batch batch = {n_seq, tok + (size_t)k * T, seq, comp};
        if (backend->forward(backend, &batch, logp)) { printf("FAIL forward: %s\n", backend->err); return 1; }
        llama_completion_logp(&batch, logp, ref + (size_t)k * n_seq);
    }
    llama_adamw adamw = {1e-5, 0.9, 0.95, 1e-8, 0.0, 0};
    double loss0 = 0, loss = 0, split[5] = {0};
    for (int step = 0; step < a.steps + 1; step++) {    /* step 0 is a warm-up, not timed */
        /* forward ends synchronised (logp copied back); backward and AdamW return with work in
         * flight, so the bench waits for the device after them: host clocks then time the
         * device work of each part */
        double t0 = now(), fwd = 0, bwd = 0;
        backend->zero_grad(backend);
        loss = 0;
        for (int k = 0; k < A; k++) {
            llama_batch batch = {n_seq, tok + (size_t)k * T, seq, comp};
            double t_a = now();
            if (backend->forward(backend, &batch, logp)) { printf("FAIL forward: %s\n", backend->err); return 1; }
            double t_b = now();
            llama_completion_logp(&batch, logp, sum);
            loss += apo_grads(&batch, sum, ref + (size_t)k * n_seq, a.pairs, A, dlogp);
            if (backend->backward(backend, &batch, dlogp)) { printf("FAIL backward: %s\n", backend->err); return 1; }
            cudaDeviceSynchronize();
            fwd += t_b - t_a;
            bwd += now() - t_b;
        }
        double t_b = now();
        double grad_norm = backend->grad_norm(backend);
        adamw.step = step + 1;
        float clip_scale = grad_norm > 1.0 ? (float)(1.0 / grad_norm) : 1.f;
        if (backend->adamw_step(backend, &adamw, clip_scale)) { printf("FAIL adamw: %s\n", backend->err); return 1; }
        cudaDeviceSynchronize();
        double t1 = now();
        if (step == 0) loss0 = loss;
        if (step == 0 && a.profile && llama_cuda_time_split(backend, split, 1)) {   /* reset after the warm-up */
            printf("FAIL profile: %s\n", backend->err);
            return 1;
        }
        if (step > 0) { t_step[step - 1] = t1 - t0; t_fwd[step - 1] = fwd; t_bwd[step - 1] = bwd; t_opt[step - 1] = t1 - t_b; }
        fprintf(stderr, "step %d: %.1f ms, loss %.6f, grad norm %.4g\n", step, (t1 - t0) * 1e3, loss, grad_norm);
        if (!isfinite(loss) || !isfinite(grad_norm)) {
            printf("FAIL: non-finite loss or grad norm (%s)\n", backend->err);
            return 1;
        }
    }
    double med = median(t_step, a.steps), tokens = (double)T * A;
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    double embed_params = (double)cfg->vocab_size * cfg->hidden_size;
    /* the embedding lookup is no matmul; a tied embedding still serves as the LM head */
    double matmul_params = (double)backend->n_params - embed_params + (cfg->tie_word_embeddings ? embed_params : 0);
    double flops = A * (6.0 * matmul_params * T +
                        6.0 * cfg->num_hidden_layers * (double)cfg->num_attention_heads * cfg->head_dim * (double)n * n * n_seq);
    printf("RESULT shape=%s pairs=%d seq_len=%d accum=%d tokens=%d mode=%s recompute=%d cap_gib=%.1f backend=%s "
           "params=%.3fB step_ms=%.1f tok_s=%.0f tflops=%.1f mfu=%.1f%% mem_gib=%.2f fwd_ms=%.1f bwd_ms=%.1f opt_ms=%.1f "
           "loss0=%.6f loss=%.6f\n",
           a.shape, a.pairs, n, A, T * A, a.mode, a.recompute, a.cap_gib, backend->name, backend->n_params / 1e9, med * 1e3,
           tokens / med, flops / med / 1e12, 100 * flops / med / (a.peak_tflops * 1e12),
           (double)(total_bytes - free_bytes - ballast_bytes) / GIB, median(t_fwd, a.steps) * 1e3,
           median(t_bwd, a.steps) * 1e3, median(t_opt, a.steps) * 1e3, loss0, loss);
    if (a.profile) {
        static const char *const names[5] = {"layer_gemm", "attention", "elementwise", "lm_head", "optimizer"};
        if (llama_cuda_time_split(backend, split, 0)) { printf("FAIL profile: %s\n", backend->err); return 1; }
        printf("SPLIT shape=%s pairs=%d accum=%d mode=%s (device ms per step):", a.shape, a.pairs, A, a.mode);
        for (int k = 0; k < 5; k++) printf(" %s=%.1f", names[k], split[k] / a.steps);
        printf("\n");
    }
    backend->destroy(backend);
    if (ballast) cudaFree(ballast);
    free(tok); free(seq); free(comp); free(logp); free(dlogp); free(sum); free(ref);
    free(t_step); free(t_fwd); free(t_bwd); free(t_opt);
    return 0;
}
