/* bench/model_attention_bench.c - one layer's causal attention (SmolLM2-135M heads: 9 query
 * heads, 3 kv heads, head_dim 64) on one sequence of n tokens, forward and backward, as
 * llama/model.c runs it (GEMMs in query blocks of 128, probabilities recomputed in backward).
 * bench/model_attention_torch.py times torch's sdpa on the same shapes. It includes model.c to
 * reach the static functions. Usage: model_attention_bench [n] [reps]
 * Build: cc -O3 -ffp-contract=fast -fopenmp -std=c99 bench/model_attention_bench.c llama/gemm.c -lm */
#include "../llama/model.c"

#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    const int n = argc > 1 ? atoi(argv[1]) : 1024, reps = argc > 2 ? atoi(argv[2]) : 3;
    const int H = 9, K = 3, hd = 64;
    const attn_dims a = {H, K, hd, 1.0f / sqrtf((float)hd)};
    const size_t qn = (size_t)n * H * hd, kn = (size_t)n * K * hd;
    float *q = malloc(qn * 4), *k = malloc(kn * 4), *v = malloc(kn * 4), *o = malloc(qn * 4);
    float *lse = malloc((size_t)n * H * 4), *dout = malloc(qn * 4), *dq = malloc(qn * 4);
    float *dkh = malloc(qn * 4), *dvh = malloc(qn * 4);
    for (size_t i = 0; i < qn; i++) {
        q[i] = sinf(0.1f * (float)i);
        dout[i] = cosf(0.3f * (float)i);
    }
    for (size_t i = 0; i < kn; i++) {
        k[i] = cosf(0.7f * (float)i);
        v[i] = sinf(0.2f * (float)i);
    }
    double bf = 1e30, bb = 1e30;
    for (int r = 0; r <= reps; r++) {
        const double t0 = now();
        if (attention_fwd_gemm(&a, n, q, k, v, o, lse)) return 1;
        const double t1 = now();
        memset(dkh, 0, qn * 4);
        memset(dvh, 0, qn * 4);
        const double t2 = now();
        if (attention_bwd_gemm(&a, n, q, k, v, o, lse, dout, dq, dkh, dvh)) return 1;
        const double t3 = now();
        if (r > 0) { /* the first is a warm-up */
            bf = fmin(bf, t1 - t0);
            bb = fmin(bb, t3 - t2);
        }
    }
    printf("ours:  attention n=%d (9 heads, 3 kv heads, hd 64) fwd %.1f ms bwd %.1f ms\n", n,
           bf * 1e3, bb * 1e3);
    return 0;
}
