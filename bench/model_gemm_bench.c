/* bench/model_gemm_bench.c - GFLOP/s of llama_gemm (llama/gemm.c) on the shapes of one training
 * step of a SmolLM2-135M-shaped model (T tokens), for the three ways the model calls it (the
 * strides are those of llama/model.c's mm_fwd, mm_bwd_x, mm_bwd_w):
 *   fwd  Y[n,o]  = X[n,i] W[o,i]^T      bwd_x dX[n,i] += dY[n,o] W[o,i]
 *   bwd_w dW[o,i] += dY[n,o]^T X[n,i]
 * bench/model_gemm_torch.py times torch.matmul on the same list. Usage: model_gemm_bench [T] [reps]
 * Build: cc -O3 -ffp-contract=fast -fopenmp -std=c99 bench/model_gemm_bench.c llama/gemm.c -lm */
#define _POSIX_C_SOURCE 199309L /* clock_gettime */
#include "../llama/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    const int T = argc > 1 ? atoi(argv[1]) : 256, reps = argc > 2 ? atoi(argv[2]) : 5;
    /* (n, in, out): the layer products at T tokens and the LM head at 64 tokens */
    const int shapes[][3] = {{T, 576, 576}, {T, 576, 192}, {T, 576, 1536}, {T, 1536, 576},
                             {64, 576, 49152}, {T, 576, 49152}};
    const char *kinds[] = {"fwd", "bwd_x", "bwd_w"};
    double tot[3] = {0};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int n = shapes[s][0], in = shapes[s][1], out = shapes[s][2];
        float *X = malloc((size_t)n * in * 4), *W = malloc((size_t)out * in * 4);
        float *Y = malloc((size_t)n * out * 4);
        for (size_t i = 0; i < (size_t)n * in; i++) X[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
        for (size_t i = 0; i < (size_t)out * in; i++) W[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
        for (size_t i = 0; i < (size_t)n * out; i++) Y[i] = (float)((i * 31) % 1000) * 1e-3f - 0.5f;
        for (int kind = 0; kind < 3; kind++) {
            double best = 1e30;
            for (int r = 0; r <= reps; r++) {
                double t0 = now();
                if (kind == 0) { /* as mm_fwd: Y = 0, then Y += X W^T (B = W^T read in place) */
                    memset(Y, 0, (size_t)n * out * sizeof(float));
                    llama_gemm(Y, (size_t)out, X, in, 1, W, 1, in, n, in, out);
                } else if (kind == 1) { /* as mm_bwd_x: X += Y W */
                    llama_gemm(X, (size_t)in, Y, out, 1, W, in, 1, n, out, in);
                } else { /* as mm_bwd_w: W += Y^T X (A = Y^T read in place) */
                    llama_gemm(W, (size_t)in, Y, 1, out, X, in, 1, out, n, in);
                }
                double dt = now() - t0;
                if (r > 0 && dt < best) best = dt;
            }
            printf("%-6s n %5d in %5d out %5d  %7.2f ms  %6.1f GFLOP/s\n", kinds[kind], n, in, out,
                   best * 1e3, 2.0 * n * in * out / best * 1e-9);
            tot[kind] += best;
        }
        free(X); free(W); free(Y);
    }
    printf("total ms: fwd %.2f bwd_x %.2f bwd_w %.2f\n", tot[0] * 1e3, tot[1] * 1e3, tot[2] * 1e3);
    return 0;
}
