/* tests/apo/test_apo_cuda.cu - apo_pair_loss called from a CUDA kernel.
 *
 * Every loss type is evaluated on the device for a few hundred pairs (ordinary, at
 * initialisation, and with |log-probs| up to 1e4) and compared with the same function run
 * on the host. The two compile the same source, so they must agree to a few ulps (the
 * device's exp/log1p are not bit-identical to glibc's: tolerance 1e-12 relative).
 * Exit 0 pass, 1 fail, 77 when there is no usable CUDA device (the last line says why).
 */
#define APO_IMPLEMENTATION
#include "../../apo.h"

#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define N_PER_TYPE 256
#define N_TOTAL (N_PER_TYPE * APO_LOSS_COUNT)

__global__ void pair_loss_kernel(const apo_params *params, const apo_pair *pairs, double *out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    double dc, dr;
    double L = apo_pair_loss(&params[i], &pairs[i], &dc, &dr);
    out[3 * i] = L; out[3 * i + 1] = dc; out[3 * i + 2] = dr;   /* out: [n x 3] */
}

#define CUDA_CHECK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
    printf("%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); exit(1); } } while (0)

static double frand(unsigned *s) { *s = *s * 1664525u + 1013904223u; return (*s >> 8) / 16777216.0; }

int main(void) {
    int ndev = 0, i, fails = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        printf("SKIP no CUDA device (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 77;
    }
    static apo_params params[N_TOTAL];
    static apo_pair pairs[N_TOTAL];
    static double out[3 * N_TOTAL];
    unsigned seed = 12345u;
    static const double big[] = { -1e4, -2e3, -50, 0 };
    for (i = 0; i < N_TOTAL; i++) {
        int t = i / N_PER_TYPE, j = i % N_PER_TYPE;
        params[i] = apo_default_params((apo_loss_type)t);
        params[i].beta = 0.02 + 2 * frand(&seed);
        if (t == APO_ROBUST || t == APO_SIGMOID) params[i].label_smoothing = 0.3 * frand(&seed);
        apo_pair *x = &pairs[i];
        x->n_chosen = 1 + (int)(200 * frand(&seed)); x->n_rejected = 1 + (int)(200 * frand(&seed));
        x->ref_chosen = -300 * frand(&seed); x->ref_rejected = -300 * frand(&seed);
        if (j == 0) { x->policy_chosen = x->ref_chosen; x->policy_rejected = x->ref_rejected; }
        else if (j < 32) {
            x->policy_chosen = big[j % 4]; x->policy_rejected = big[(j / 4) % 4];
            x->ref_chosen = big[(j / 16) % 4]; x->ref_rejected = big[(j + 1) % 4];
        } else {
            x->policy_chosen = x->ref_chosen + (frand(&seed) - 0.5) * 40;
            x->policy_rejected = x->ref_rejected + (frand(&seed) - 0.5) * 40;
        }
    }
    apo_params *d_params; apo_pair *d_pairs; double *d_out;
    CUDA_CHECK(cudaMalloc(&d_params, sizeof params));
    CUDA_CHECK(cudaMalloc(&d_pairs, sizeof pairs));
    CUDA_CHECK(cudaMalloc(&d_out, sizeof out));
    CUDA_CHECK(cudaMemcpy(d_params, params, sizeof params, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_pairs, pairs, sizeof pairs, cudaMemcpyHostToDevice));
    pair_loss_kernel<<<(N_TOTAL + 127) / 128, 128>>>(d_params, d_pairs, d_out, N_TOTAL);
    CUDA_CHECK(cudaGetLastError());
    CUDA_CHECK(cudaMemcpy(out, d_out, sizeof out, cudaMemcpyDeviceToHost));
    for (i = 0; i < N_TOTAL; i++) {
        double dc, dr, L = apo_pair_loss(&params[i], &pairs[i], &dc, &dr);
        double want[3] = { L, dc, dr };
        for (int k = 0; k < 3; k++) {
            double g = out[3 * i + k];
            if (!(isfinite(g) && fabs(g - want[k]) <= 1e-12 * (1 + fabs(want[k])))) {
                if (fails < 10) printf("FAIL %s pair %d output %d: device %.17g host %.17g\n",
                                       apo_loss_name(params[i].type), i, k, g, want[k]);
                fails++;
            }
        }
    }
    cudaFree(d_params); cudaFree(d_pairs); cudaFree(d_out);
    printf("%d pairs x 13 losses on the device: %d mismatches\n", N_PER_TYPE, fails);
    return fails ? 1 : 0;
}
