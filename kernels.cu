/* kernels.cu - the CUDA path of the model interface in llama/model.h.
 *
 * One backend, three storage modes (chosen by llama_cuda_opts):
 *
 *   mode            compute weights  master weights  grads  Adam m, v   bytes/param
 *   fp32 (bf16=0)   fp32             (same buffer)   fp32   fp32        16   parity/debug, TF32 off
 *   bf16            bf16 copy        fp32            fp32   fp32        18
 *   bf16 + lean     bf16             (same buffer)   bf16   bf16         8   stochastic rounding
 *
 * Activations follow the compute type ("act" below: fp32 or bf16), except the residual stream,
 * the per-row statistics (rstd, log-sum-exp), the attention scores and every accumulator, which
 * are fp32. Every matrix product goes through cuBLAS (cublasGemmStridedBatchedEx) with fp32
 * accumulation; everything else is a small kernel here, written to be obviously correct first:
 * grid-stride loops for elementwise work, one thread block per row for row reductions.
 *
 * The model, per layer l (HF LlamaDecoderLayer; T tokens, rows are tokens):
 *   xn1  = rmsnorm(res[l]) * input_layernorm            [T, D]
 *   qkv  = xn1 @ [Wq; Wk; Wv]^T                          [T, (H + 2K) hd]   (q, k, v are
 *          consecutive in the parameter layout, so they form one [(H+2K) hd, D] matrix)
 *   rope(q, k) in place, position = index within the sequence (HF rotate-half)
 *   att  = causal GQA attention per sequence             [T, H hd]
 *   xmid = res[l] + att @ Wo^T                           [T, D]  fp32
 *   xn2  = rmsnorm(xmid) * post_attention_layernorm      [T, D]
 *   gu   = xn2 @ [Wgate; Wup]^T                          [T, 2I]  (also consecutive)
 *   h    = silu(gate) * up                               [T, I]
 *   res[l+1] = xmid + h @ Wdown^T                        [T, D]  fp32
 * then xf = rmsnorm(res[L]) * norm and the LM head, fused with log-softmax and the label gather
 * over vocabulary chunks: the [T, V] logits never exist; per token we keep only the log-sum-exp
 * and the label's logit, and backward recomputes each chunk's logits.
 *
 * Attention: per sequence of the packed batch (sequences never see each other) and per query
 * head within a KV group (j < H/K), one strided-batched GEMM over the K KV heads gives the
 * scores [K, n, n] (fp32), a causal softmax kernel turns them into probabilities, and a second
 * GEMM multiplies by V. Only [K, n, n] scores are alive at any time; backward recomputes them.
 *
 * Recomputation (opts.recompute): forward keeps only each layer's input res[l] (fp32); backward
 * reruns layer l's forward into one shared activation set before differentiating it. Without
 * it, every layer keeps its own activation set.
 *
 * Errors: every CUDA and cuBLAS call is checked; a failure sets backend->err to
 * "kernels.cu:LINE: CALL failed: REASON (hint: ...)" and the call returns -1.
 *
 * A model whose params pointer is NULL (a config only) is initialised randomly on the device
 * with HF's init (normal(0, initializer_range) for matrices, 1 for norms): benchmarks of large
 * shapes need no host copy of the weights.
 */
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cublas_v2.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama/model.h"

typedef __nv_bfloat16 bf16;

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                      */

static const char *cuda_hint(cudaError_t e)
{
    switch (e) {
    case cudaErrorNoDevice: return "no CUDA device is visible: check nvidia-smi and CUDA_VISIBLE_DEVICES";
    case cudaErrorInsufficientDriver: return "the NVIDIA driver is missing or older than this CUDA runtime";
    case cudaErrorInvalidDevice: return "device index out of range: pick one that nvidia-smi lists";
    case cudaErrorMemoryAllocation: return "out of GPU memory: lower max_tokens, enable recompute or lean_optimizer";
    case cudaErrorIllegalAddress: return "a kernel read or wrote out of bounds: this is a bug, please report it";
    default: return "see the CUDA error above";
    }
}

static const char *cublas_name(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    default: return "cuBLAS error";
    }
}

static void set_err(char *err, size_t errsz, const char *fmt, ...)
{
    if (!err || !errsz) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
}

/* CK / CB check one CUDA / cuBLAS call inside a function that has `char *err` and `size_t
 * errsz` in scope and returns int. */
#define CK(call)                                                                              \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        if (e_ != cudaSuccess) {                                                              \
            set_err(err, errsz, "kernels.cu:%d: %s failed: %s (hint: %s)", __LINE__, #call,   \
                    cudaGetErrorString(e_), cuda_hint(e_));                                   \
            return -1;                                                                        \
        }                                                                                     \
    } while (0)
#define CB(call)                                                                              \
    do {                                                                                      \
        cublasStatus_t s_ = (call);                                                           \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                    \
            set_err(err, errsz, "kernels.cu:%d: %s failed: %s (hint: check the shapes; "      \
                    "an ALLOC_FAILED means GPU memory ran out)", __LINE__, #call,             \
                    cublas_name(s_));                                                         \
            return -1;                                                                        \
        }                                                                                     \
    } while (0)
/* After each kernel launch: catches bad launch configurations at once (and, since launches are
 * asynchronous, faults of earlier kernels at the next synchronising call). */
#define CKL() CK(cudaGetLastError())

/* ------------------------------------------------------------------------------------------ */
/* Device helpers                                                                              */

__device__ __forceinline__ float ldf(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float ldf(const bf16 *p, size_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void stf(float *p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void stf(bf16 *p, size_t i, float v) { p[i] = __float2bfloat16(v); }

/* Kernel launches are written LAUNCH(grid, block, kernel)(args...): CUDA's <<<>>> here, and a
 * CPU emulator in tests/gpu/emu/ (which defines LAUNCH first) runs this very file without a
 * GPU, so CI checks the backend end to end against the CPU path. */
#ifndef LAUNCH
#define LAUNCH(grid, block, ...) __VA_ARGS__<<<(grid), (block)>>>
#endif
#ifndef MAX_EBLOCKS
#define MAX_EBLOCKS 32768   /* elementwise grids; grid-stride loops do the rest */
#define MAX_RBLOCKS 65535   /* row kernels: one block per row up to this */
#endif

/* Grid-stride loops. GRID_LOOP(i, n) over a flat [0, n); ROWS_COLS(t, rows, c, cols) over a
 * [rows, cols] matrix with blockIdx.y striding rows and x-threads striding columns, so kernels
 * over [T, X] need no 64-bit division of a flat index (slow on GPUs) and stay coalesced. */
#define ROWS_COLS(t, rows, c, cols)                                                              \
    for (size_t t = blockIdx.y; t < (size_t)(rows); t += gridDim.y)                              \
        for (int c = (int)(blockIdx.x * blockDim.x + threadIdx.x); c < (cols); c += (int)(gridDim.x * blockDim.x))
#define GRID_LOOP(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

/* Block-wide sum / max of one value per thread; every thread gets the result. blockDim.x must be
 * a multiple of 32 (all launches here use 256). The leading barrier lets a kernel call these
 * several times in a row with the one shared array. (The CPU emulator brings its own, with the
 * same contract, because emulating each shuffle is slow; test_kernels checks these on a GPU.) */
#ifndef EMU_BLOCK_REDUCE
template <typename F>
__device__ F block_sum(F v)
{
    __shared__ F sh[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        v = lane < nw ? sh[lane] : (F)0;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) sh[0] = v;
    }
    __syncthreads();
    return sh[0];
}

__device__ float block_max(float v)
{
    __shared__ float sh[32];
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        v = lane < nw ? sh[lane] : -INFINITY;
        for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
        if (lane == 0) sh[0] = v;
    }
    __syncthreads();
    return sh[0];
}
#endif

/* A 32-bit integer hash (lowbias32): the random numbers of stochastic rounding and device init
 * are hash(seed, element index), so they need no state and are the same for any launch shape. */
__device__ __forceinline__ uint32_t hash32(uint32_t x)
{
    x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16;
    return x;
}
__device__ __forceinline__ uint32_t hash_idx(uint32_t seed, size_t i)
{
    return hash32((uint32_t)i ^ hash32((uint32_t)(i >> 32) ^ hash32(seed)));
}

/* Stochastic rounding fp32 -> bf16: add 16 random bits below the kept mantissa, then truncate,
 * so E[round(x)] = x and tiny Adam updates are not all rounded away. */
__device__ __forceinline__ bf16 bf16_sr(float x, uint32_t r)
{
    if (!isfinite(x)) return __float2bfloat16(x);
    uint32_t u = __float_as_uint(x);
    u += r & 0xffffu;
    u &= 0xffff0000u;
    return __ushort_as_bfloat16((unsigned short)(u >> 16));
}

/* ------------------------------------------------------------------------------------------ */
/* Kernels (each has a CPU twin: llama_* in llama/model.c or a reference in tests/gpu/)        */

/* res[t, :] = W[tok[t], :] (fp32 residual stream). */
template <typename A>
__global__ void embed_fwd_k(float *res, const void *Wv, const int *tok, int T, int D)
{
    const A *W = (const A *)Wv;
    ROWS_COLS(t, T, d, D) res[t * D + d] = ldf(W, (size_t)tok[t] * D + d);
}

/* gW[tok[t], :] += dres[t, :]; atomics because one token id can occur many times. */
__global__ void embed_bwd_f32_k(float *gW, const float *dres, const int *tok, int T, int D)
{
    ROWS_COLS(t, T, d, D) atomicAdd(gW + (size_t)tok[t] * D + d, dres[t * D + d]);
}
__global__ void embed_bwd_bf16_k(bf16 *gW, const float *dres, const int *tok, int T, int D)
{
    ROWS_COLS(t, T, d, D) atomicAdd(gW + (size_t)tok[t] * D + d, __float2bfloat16(dres[t * D + d]));
}

/* out[t, :] = x[t, :] * rstd[t] * w, rstd[t] = 1 / sqrt(mean(x[t]^2) + eps). One block per row. */
template <typename A>
__global__ void rmsnorm_fwd_k(void *outv, float *rstd, const float *x, const void *wv, int T, int D,
                              float eps)
{
    A *out = (A *)outv;
    const A *w = (const A *)wv;
    for (int t = blockIdx.x; t < T; t += gridDim.x) {
        const float *xr = x + (size_t)t * D;
        float ss = 0.f;
        for (int d = threadIdx.x; d < D; d += blockDim.x) ss += xr[d] * xr[d];
        ss = block_sum(ss);
        float r = rsqrtf(ss / D + eps);
        for (int d = threadIdx.x; d < D; d += blockDim.x)
            stf(out, (size_t)t * D + d, xr[d] * r * ldf(w, d));
        if (threadIdx.x == 0) rstd[t] = r;
    }
}

/* dx[t, :] += rstd (dxh - xh mean(dxh xh)), xh = x rstd, dxh = dy w. One block per row. */
template <typename A>
__global__ void rmsnorm_bwd_k(float *dx, const float *dy, const float *x, const float *rstd,
                              const void *wv, int T, int D)
{
    const A *w = (const A *)wv;
    for (int t = blockIdx.x; t < T; t += gridDim.x) {
        size_t o = (size_t)t * D;
        float r = rstd[t], dot = 0.f;
        for (int d = threadIdx.x; d < D; d += blockDim.x) dot += dy[o + d] * ldf(w, d) * x[o + d] * r;
        dot = block_sum(dot) / D;
        for (int d = threadIdx.x; d < D; d += blockDim.x) {
            float xh = x[o + d] * r;
            dx[o + d] += r * (dy[o + d] * ldf(w, d) - xh * dot);
        }
    }
}

/* dw[d] += sum_t dy[t, d] x[t, d] rstd[t]. Blocks of 32 columns x 16 row stripes: the 16 partial
 * sums of a column meet in shared memory, so no atomics and a fixed summation order. */
template <typename G>
__global__ void rmsnorm_dw_k(G *dw, const float *dy, const float *x, const float *rstd, int T, int D)
{
    __shared__ float sh[16][33];
    int d = blockIdx.x * 32 + threadIdx.x;
    float s = 0.f;
    if (d < D)
        for (int t = threadIdx.y; t < T; t += 16) s += dy[(size_t)t * D + d] * x[(size_t)t * D + d] * rstd[t];
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && d < D) {
        for (int k = 1; k < 16; k++) s += sh[k][threadIdx.x];
        stf(dw, d, ldf(dw, d) + s);
    }
}

/* RoPE, HF rotate-half: for j < hd/2, (x[j], x[j + hd/2]) rotated by angle pos * inv_freq[j].
 * Works on a whole [T, (H + 2K) hd] qkv row set: the H + K heads of q and k are rotated, the v
 * columns copied. sgn = +1 is the forward rotation, -1 its inverse (= its transpose, so this
 * is also the backward). `in` may equal `out` (each thread owns a pair). */
template <typename I, typename O>
__global__ void rope_k(void *outv, const void *inv, const int *pos, const float *cs, const float *sn,
                       int T, int n_rot_heads, int qkv_dim, int hd, float sgn)
{
    O *out = (O *)outv;
    const I *in = (const I *)inv;
    int half = hd / 2, rot = n_rot_heads * hd;
    ROWS_COLS(t, T, c, qkv_dim) {
        size_t i = t * qkv_dim + c;
        if (c >= rot) { stf(out, i, ldf(in, i)); continue; }
        int j = c % hd;
        if (j >= half) continue;                  /* the partner thread j - half does this pair */
        size_t tab = (size_t)pos[t] * half + j;
        float co = cs[tab], si = sgn * sn[tab];
        float x1 = ldf(in, i), x2 = ldf(in, i + half);
        stf(out, i, x1 * co - x2 * si);
        stf(out, i + half, x2 * co + x1 * si);
    }
}

/* Causal softmax over rows of scores S [B, n, n] (row r of each matrix is query position r):
 * P[r, c] = softmax_c(S[r, 0..r]) for c <= r, 0 above the diagonal. One block per row. */
template <typename A>
__global__ void softmax_causal_k(void *Pv, const float *S, int n, int rows)
{
    A *P = (A *)Pv;
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        int r = row % n;
        const float *s = S + (size_t)row * n;
        float mx = -INFINITY;
        for (int c = threadIdx.x; c <= r; c += blockDim.x) mx = fmaxf(mx, s[c]);
        mx = block_max(mx);
        float sum = 0.f;
        for (int c = threadIdx.x; c <= r; c += blockDim.x) sum += expf(s[c] - mx);
        sum = block_sum(sum);
        float inv = 1.f / sum;
        for (int c = threadIdx.x; c < n; c += blockDim.x)
            stf(P, (size_t)row * n + c, c <= r ? expf(s[c] - mx) * inv : 0.f);
    }
}

/* Softmax backward, in place: PdS holds P on entry and dS on exit,
 * dS[r, c] = P[r, c] (dP[r, c] - sum_c' P[r, c'] dP[r, c']) for c <= r, else 0. */
template <typename A>
__global__ void softmax_causal_bwd_k(void *PdSv, const float *dP, int n, int rows)
{
    A *PdS = (A *)PdSv;
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        int r = row % n;
        size_t o = (size_t)row * n;
        float dot = 0.f;
        for (int c = threadIdx.x; c <= r; c += blockDim.x) dot += ldf(PdS, o + c) * dP[o + c];
        dot = block_sum(dot);                     /* barrier: every read of P is done */
        for (int c = threadIdx.x; c < n; c += blockDim.x) {
            float p = c <= r ? ldf(PdS, o + c) : 0.f;
            stf(PdS, o + c, c <= r ? p * (dP[o + c] - dot) : 0.f);
        }
    }
}

/* h[t, i] = silu(gu[t, i]) * gu[t, I + i]. */
template <typename A>
__global__ void swiglu_fwd_k(void *hv, const void *guv, int T, int I)
{
    A *h = (A *)hv;
    const A *gu = (const A *)guv;
    ROWS_COLS(t, T, i, I) {
        float g = ldf(gu, t * 2 * I + i), u = ldf(gu, t * 2 * I + I + i);
        stf(h, t * I + i, g / (1.f + expf(-g)) * u);
    }
}

/* dgu[t, i] = dh u silu'(g), dgu[t, I + i] = dh silu(g); silu' = s (1 + g (1 - s)), s = sigmoid(g). */
template <typename A>
__global__ void swiglu_bwd_k(void *dguv, const void *dhv, const void *guv, int T, int I)
{
    A *dgu = (A *)dguv;
    const A *dh = (const A *)dhv, *gu = (const A *)guv;
    ROWS_COLS(t, T, i, I) {
        float g = ldf(gu, t * 2 * I + i), u = ldf(gu, t * 2 * I + I + i), d = ldf(dh, t * I + i);
        float s = 1.f / (1.f + expf(-g));
        stf(dgu, t * 2 * I + i, d * u * s * (1.f + g * (1.f - s)));
        stf(dgu, t * 2 * I + I + i, d * g * s);
    }
}

template <typename O>
__global__ void cast_k(void *outv, const float *in, size_t n)
{
    O *out = (O *)outv;
    GRID_LOOP(i, n) stf(out, i, in[i]);
}

__global__ void f32_to_bf16_k(bf16 *out, const float *in, size_t n)
{
    GRID_LOOP(i, n) out[i] = __float2bfloat16(in[i]);
}

/* LM head, one vocabulary chunk [c0, c0 + C) of the logits [T, C] (fp32): merges the chunk's
 * max and sum of exponentials into the running (mx, se) of each row (online log-sum-exp), and
 * picks the label's logit when the label falls in this chunk. One block per row. */
__global__ void lse_chunk_k(float *mx, float *se, float *tl, const float *logits, const int *tgt,
                            int T, int C, int c0, int first)
{
    for (int t = blockIdx.x; t < T; t += gridDim.x) {
        const float *z = logits + (size_t)t * C;
        float m = -INFINITY, s = 0.f;
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            float x = z[c];
            if (x > m) { s = s * expf(m - x) + 1.f; m = x; }
            else s += expf(x - m);
        }
        float M = block_max(m);
        s = block_sum(m == -INFINITY ? 0.f : s * expf(m - M));
        if (threadIdx.x == 0) {
            if (first) { mx[t] = M; se[t] = s; }
            else {
                float M2 = fmaxf(mx[t], M);
                se[t] = se[t] * expf(mx[t] - M2) + s * expf(M - M2);
                mx[t] = M2;
            }
            int y = tgt[t];
            if (y >= c0 && y < c0 + C) tl[t] = z[y - c0];
        }
    }
}

/* logp[i] = label logit - log-sum-exp at position i - 1, 0 for a sequence's first token
 * (position i - 1 then has no label: tgt[i - 1] < 0). Also stores lse[p] for backward. */
__global__ void logp_k(float *logp, float *lse, const float *mx, const float *se, const float *tl,
                       const int *tgt, int T)
{
    GRID_LOOP(i, (size_t)T) {
        lse[i] = mx[i] + logf(se[i]);
        logp[i] = (i == 0 || tgt[i - 1] < 0) ? 0.f : tl[i - 1] - (mx[i - 1] + logf(se[i - 1]));
    }
}

/* dlogits of one chunk: dz[t, c] = wt[t] (1[c0 + c == tgt[t]] - exp(z[t, c] - lse[t])),
 * wt[t] = dlogp of the token that position t predicts (0 where it predicts none). */
template <typename A>
__global__ void lm_bwd_chunk_k(void *dzv, const float *z, const float *lse, const float *wt,
                               const int *tgt, int T, int C, int c0)
{
    A *dz = (A *)dzv;
    ROWS_COLS(t, T, c, C) {
        size_t i = t * C + c;
        float w = wt[t];
        float g = w == 0.f ? 0.f : w * ((c0 + c == tgt[t] ? 1.f : 0.f) - expf(z[i] - lse[t]));
        stf(dz, i, g);
    }
}

/* Sum of squares in fp64 (the interface promises fp64 accumulation): block partials, then one
 * atomicAdd per block into out[0]. */
template <typename G>
__global__ void sumsq_k(double *out, const G *g, size_t n)
{
    double s = 0.0;
    GRID_LOOP(i, n) { double x = ldf(g, i); s += x * x; }
    s = block_sum(s);
    if (threadIdx.x == 0) atomicAdd(out, s);
}

/* AdamW on one tensor (fp32 master, moments and grads), torch.optim.AdamW's arithmetic as the
 * CPU path does it: p = p (1 - lr wd) - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps), with
 * decay = 1 - lr wd, step = lr / bc1, sq_bc2 = sqrt(bc2) formed on the host. Optionally
 * refreshes the bf16 compute copy w16 (round to nearest). */
__global__ void adamw_f32_k(float *p, const float *g, float *m, float *v, bf16 *w16, size_t n,
                            float scale, float b1, float b2, float eps, float decay, float step,
                            float sq_bc2)
{
    GRID_LOOP(i, n) {
        float gi = g[i] * scale;
        float mi = b1 * m[i] + (1.f - b1) * gi;
        float vi = b2 * v[i] + (1.f - b2) * gi * gi;
        float pi = p[i] * decay - step * mi / (sqrtf(vi) / sq_bc2 + eps);
        m[i] = mi; v[i] = vi; p[i] = pi;
        if (w16) w16[i] = __float2bfloat16(pi);
    }
}

/* AdamW in lean mode: bf16 weights, grads and moments, computed in fp32 and stored with
 * stochastic rounding (independent random bits for p, m, v; seeded by step and tensor). */
__global__ void adamw_bf16_k(bf16 *p, const bf16 *g, bf16 *m, bf16 *v, size_t n, float scale,
                             float b1, float b2, float eps, float decay, float step, float sq_bc2,
                             uint32_t seed)
{
    GRID_LOOP(i, n) {
        float gi = __bfloat162float(g[i]) * scale;
        float mi = b1 * __bfloat162float(m[i]) + (1.f - b1) * gi;
        float vi = b2 * __bfloat162float(v[i]) + (1.f - b2) * gi * gi;
        float pi = __bfloat162float(p[i]) * decay - step * mi / (sqrtf(vi) / sq_bc2 + eps);
        p[i] = bf16_sr(pi, hash_idx(seed * 3u + 0u, i));
        m[i] = bf16_sr(mi, hash_idx(seed * 3u + 1u, i));
        v[i] = bf16_sr(vi, hash_idx(seed * 3u + 2u, i));
    }
}

/* Device-side random init: normal(0, std) by Box-Muller from two hashed uniforms. */
template <typename P>
__global__ void init_normal_k(P *p, size_t n, float std, uint32_t seed)
{
    GRID_LOOP(i, n) {
        float u1 = (hash_idx(seed, 2 * i) + 1.f) * 2.3283064e-10f;   /* (0, 1] */
        float u2 = hash_idx(seed, 2 * i + 1) * 2.3283064e-10f;
        stf(p, i, std * sqrtf(-2.f * logf(u1)) * cospif(2.f * u2));
    }
}
template <typename P>
__global__ void fill_k(P *p, size_t n, float val)
{
    GRID_LOOP(i, n) stf(p, i, val);
}

/* ------------------------------------------------------------------------------------------ */
/* The backend state                                                                           */

typedef struct {
    void *xn1;     /* [T, D] act: input_layernorm output */
    float *rstd1;  /* [T] */
    void *qkv;     /* [T, QKV] act: q and k after RoPE, v */
    void *att;     /* [T, HD] act: attention output (o_proj input) */
    float *xmid;   /* [T, D] residual after attention */
    void *xn2;     /* [T, D] act: post_attention_layernorm output */
    float *rstd2;  /* [T] */
    void *gu;      /* [T, 2I] act: gate | up */
    void *h;       /* [T, I] act: silu(gate) * up */
} layer_acts;

typedef struct { size_t ln1, qkv, o, ln2, gu, down; } layer_offsets;   /* in elements */

typedef struct {
    llama_backend *b;
    llama_config cfg;
    int L, D, I, H, K, hd, V, QKV, HD, g;  /* QKV = (H + 2K) hd, HD = H hd, g = H / K */
    int dev;
    int abf;                 /* activations and compute weights are bf16 */
    int lean;                /* master weights, grads and moments are bf16 */
    int recompute;
    int max_T;
    size_t asz;              /* bytes per activation element: 4 or 2 */
    size_t n_params;
    int n_tens;
    llama_tensor_info *tens;
    layer_offsets *lo;
    size_t off_embed, off_norm, off_lm;
    int lm_chunk;            /* vocabulary columns per LM-head chunk */
    cublasHandle_t cub;
    void *cub_ws; size_t cub_ws_size;

    /* parameters and optimizer */
    void *master;            /* [n_params] fp32 (bf16 in lean mode) */
    void *w;                 /* [n_params] compute weights, act type (== master unless bf16 non-lean) */
    void *grad;              /* [n_params] fp32 (bf16 in lean mode) */
    void *am, *av;           /* [n_params] Adam moments, fp32 (bf16 in lean mode) */

    /* activations */
    float *res;              /* [L + 1, max_T, D] residual stream at each layer input; res[L] final */
    layer_acts *acts; int n_acts;
    void *xf;                /* [T, D] act: final norm output */
    float *rstdf;            /* [T] */

    /* workspace */
    float *dres;             /* [T, D] gradient of the residual stream */
    float *dxn;              /* [T, D] gradient of a norm output */
    void *dY;                /* [T, D] act: dres cast for the GEMMs (unused in fp32) */
    void *datt;              /* [T, HD] act */
    void *dh;                /* [T, I] act */
    void *dbig;              /* [T, max(2I, QKV)] act: dgu, then dqkv */
    float *dqkvf;            /* [T, QKV] fp32: dq, dk, dv before the RoPE backward */
    float *S;                /* [K, max_T, max_T] scores, then dP */
    void *P;                 /* [K, max_T, max_T] act: probabilities, then dS */
    float *logits;           /* [T, lm_chunk] */
    void *dlogits;           /* [T, lm_chunk] act */
    float *dxf;              /* [T, D] */
    float *mx, *se, *tl, *lse, *logp, *wt;   /* [T] each */
    int *tok, *pos, *tgt;    /* [T] each */
    float *rope_cos, *rope_sin;              /* [max_T, hd/2] */
    double *dsum;            /* [1] */

    /* the last forward's batch (host) */
    int T, n_seq, have_fwd;
    int *h_seq;              /* [max_T + 1] */
    int *h_tgt;              /* [max_T] */
    float *h_wt;             /* [max_T] */
    uint32_t sr_seed;        /* stochastic rounding: advanced every step */
} cuda_ctx;

/* Element offsets into the compute-type buffers (weights c->w, activations) and into the
 * gradient buffer, whose element size differs in bf16 non-lean mode (fp32 grads, bf16 weights). */
#define ACT(c, p, off) ((void *)((char *)(p) + (size_t)(off) * (c)->asz))
#define GRD(c, off) ((void *)((char *)(c)->grad + (size_t)(off) * ((c)->lean ? 2 : 4)))

/* Kernel launch shapes: elementwise work gets enough blocks to fill any GPU, capped so the
 * grid-stride loops do the rest; row kernels get one block per row up to 65535. */
static int eblocks(size_t n) { size_t b = (n + 255) / 256; return (int)(b < 1 ? 1 : b > MAX_EBLOCKS ? MAX_EBLOCKS : b); }
static int rblocks(size_t rows) { return (int)(rows < 1 ? 1 : rows > MAX_RBLOCKS ? MAX_RBLOCKS : rows); }
/* Grid for ROWS_COLS kernels over [rows, cols] with 256-thread blocks. */
static dim3 rcgrid(size_t rows, int cols)
{
    size_t bx = ((size_t)cols + 255) / 256;
    return dim3((unsigned)(bx < 1 ? 1 : bx > MAX_EBLOCKS ? MAX_EBLOCKS : bx), (unsigned)rblocks(rows));
}

#define DISPATCH_A(c, kern, grid, block, ...)                                   \
    do {                                                                        \
        if ((c)->abf) LAUNCH((grid), (block), kern<bf16>)(__VA_ARGS__);         \
        else LAUNCH((grid), (block), kern<float>)(__VA_ARGS__);                 \
    } while (0)

/* ------------------------------------------------------------------------------------------ */
/* Operations (host side): each launches one kernel or GEMM and checks it                     */

/* Row-major strided-batched GEMM: C[m, n] = alpha op(A)[m, k] op(B)[k, n] + beta C, with A and B
 * in the compute type and C in ct (fp32 or the compute type); lda/ldb/ldc are row strides.
 * cuBLAS is column-major, where a row-major matrix is its own transpose, so we ask it for
 * C^T = op(B)^T op(A)^T. fp32 mode uses the pedantic fp32 compute type: no TF32. */
static int gemm(cuda_ctx *c, int tA, int tB, int m, int n, int k, float alpha,
                const void *A, int lda, long long sA, const void *B, int ldb, long long sB,
                float beta, void *C, cudaDataType_t ct, int ldc, long long sC, int batch)
{
    char *err = c->b->err; size_t errsz = sizeof c->b->err;
    cudaDataType_t at = c->abf ? CUDA_R_16BF : CUDA_R_32F;
    cublasComputeType_t comp = c->abf ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_PEDANTIC;
    CB(cublasGemmStridedBatchedEx(c->cub, tB ? CUBLAS_OP_T : CUBLAS_OP_N, tA ? CUBLAS_OP_T : CUBLAS_OP_N,
                                  n, m, k, &alpha, B, at, ldb, sB, A, at, lda, sA, &beta, C, ct, ldc, sC,
                                  batch, comp, CUBLAS_GEMM_DEFAULT));
    return 0;
}
static cudaDataType_t act_type(const cuda_ctx *c) { return c->abf ? CUDA_R_16BF : CUDA_R_32F; }
static cudaDataType_t grad_type(const cuda_ctx *c) { return c->lean ? CUDA_R_16BF : CUDA_R_32F; }

/* Linear layer y[T, out] = x[T, in] @ W[out, in]^T (+ beta y), y in type yt. */
static int linear_fwd(cuda_ctx *c, void *y, cudaDataType_t yt, float beta, const void *x,
                      const void *W, int T, int in, int out)
{
    return gemm(c, 0, 1, T, out, in, 1.f, x, in, 0, W, in, 0, beta, y, yt, out, 0, 1);
}
/* Its backward: dx[T, in] (= or +=, by beta_x) dy[T, out] @ W, and dW[out, in] += dy^T @ x. */
static int linear_bwd(cuda_ctx *c, void *dx, cudaDataType_t dxt, float beta_x, void *dW,
                      const void *dy, const void *x, const void *W, int T, int in, int out)
{
    if (gemm(c, 0, 0, T, in, out, 1.f, dy, out, 0, W, in, 0, beta_x, dx, dxt, in, 0, 1)) return -1;
    return gemm(c, 1, 0, out, in, T, 1.f, dy, out, 0, x, in, 0, 1.f, dW, grad_type(c), in, 0, 1);
}

static int op_rmsnorm_fwd(cuda_ctx *c, void *out, float *rstd, const float *x, const void *w, int T, int D)
{
    char *err = c->b->err; size_t errsz = sizeof c->b->err;
    DISPATCH_A(c, rmsnorm_fwd_k, rblocks(T), 256, out, rstd, x, w, T, D, c->cfg.rms_norm_eps);
    CKL();
    return 0;
}

/* dx += d/dx, dw += d/dw of out = rmsnorm(x) * w given dy. */
static int op_rmsnorm_bwd(cuda_ctx *c, float *dx, void *dw, const float *dy, const float *x,
                          const float *rstd, const void *w, int T, int D)
{
    char *err = c->b->err; size_t errsz = sizeof c->b->err;
    dim3 blk(32, 16), grd((D + 31) / 32);
    if (c->lean) LAUNCH(grd, blk, rmsnorm_dw_k<bf16>)((bf16 *)dw, dy, x, rstd, T, D);
    else LAUNCH(grd, blk, rmsnorm_dw_k<float>)((float *)dw, dy, x, rstd, T, D);
    CKL();
    DISPATCH_A(c, rmsnorm_bwd_k, rblocks(T), 256, dx, dy, x, rstd, w, T, D);
    CKL();
    return 0;
}

/* Causal GQA attention over the packed batch (see the header comment).
 * qkv [T, QKV] act (q, k after RoPE); att [T, HD] act. */
static int op_attention_fwd(cuda_ctx *c, void *att, const void *qkv, const int *seq, int n_seq)
{
    char *err = c->b->err; size_t errsz = sizeof c->b->err;
    int K = c->K, g = c->g, hd = c->hd, QKV = c->QKV, HD = c->HD;
    float scale = 1.f / sqrtf((float)hd);
    for (int s = 0; s < n_seq; s++) {
        int s0 = seq[s], n = seq[s + 1] - seq[s];
        if (n <= 0) continue;
        long long nn = (long long)n * n;
        for (int j = 0; j < g; j++) {
            /* S[kh] = scale Q_j[kh] K[kh]^T, query head kh g + j */
            if (gemm(c, 0, 1, n, n, hd, scale, ACT(c, qkv, (size_t)s0 * QKV + (size_t)j * hd), QKV, (long long)g * hd,
                     ACT(c, qkv, (size_t)s0 * QKV + HD), QKV, hd, 0.f, c->S, CUDA_R_32F, n, nn, K)) return -1;
            DISPATCH_A(c, softmax_causal_k, rblocks((size_t)K * n), 256, c->P, c->S, n, K * n);
            CKL();
            /* O_j[kh] = P[kh] V[kh] */
            if (gemm(c, 0, 0, n, hd, n, 1.f, c->P, n, nn, ACT(c, qkv, (size_t)s0 * QKV + HD + (size_t)K * hd), QKV, hd,
                     0.f, ACT(c, att, (size_t)s0 * HD + (size_t)j * hd), act_type(c), HD, (long long)g * hd, K)) return -1;
        }
    }
    return 0;
}

/* Attention backward: datt [T, HD] act -> dqkvf [T, QKV] fp32 (dq, dk, dv; written, not added). */
static int op_attention_bwd(cuda_ctx *c, float *dqkvf, const void *datt, const void *qkv, const int *seq, int n_seq)
{
    char *err = c->b->err; size_t errsz = sizeof c->b->err;
    int K = c->K, g = c->g, hd = c->hd, QKV = c->QKV, HD = c->HD;
    float scale = 1.f / sqrtf((float)hd);
    for (int s = 0; s < n_seq; s++) {
        int s0 = seq[s], n = seq[s + 1] - seq[s];
        if (n <= 0) continue;
        long long nn = (long long)n * n;
        const void *Kp = ACT(c, qkv, (size_t)s0 * QKV + HD), *Vp = ACT(c, qkv, (size_t)s0 * QKV + HD + (size_t)K * hd);
        float *dK = dqkvf + (size_t)s0 * QKV + HD, *dV = dqkvf + (size_t)s0 * QKV + HD + (size_t)K * hd;
        for (int j = 0; j < g; j++) {
            const void *Qj = ACT(c, qkv, (size_t)s0 * QKV + (size_t)j * hd);
            const void *dO = ACT(c, datt, (size_t)s0 * HD + (size_t)j * hd);
            float *dQ = dqkvf + (size_t)s0 * QKV + (size_t)j * hd;
            float acc = j ? 1.f : 0.f;            /* dK, dV sum over the g query heads */
            /* recompute P */
            if (gemm(c, 0, 1, n, n, hd, scale, Qj, QKV, (long long)g * hd, Kp, QKV, hd, 0.f, c->S, CUDA_R_32F, n, nn, K)) return -1;
            DISPATCH_A(c, softmax_causal_k, rblocks((size_t)K * n), 256, c->P, c->S, n, K * n);
            CKL();
            /* dV[kh] += P^T dO_j */
            if (gemm(c, 1, 0, n, hd, n, 1.f, c->P, n, nn, dO, HD, (long long)g * hd, acc, dV, CUDA_R_32F, QKV, hd, K)) return -1;
            /* dP = dO_j V^T (into S) */
            if (gemm(c, 0, 1, n, n, hd, 1.f, dO, HD, (long long)g * hd, Vp, QKV, hd, 0.f, c->S, CUDA_R_32F, n, nn, K)) return -1;
            DISPATCH_A(c, softmax_causal_bwd_k, rblocks((size_t)K * n), 256, c->P, c->S, n, K * n);
            CKL();
            /* dQ_j = scale dS K;  dK += scale dS^T Q_j */
            if (gemm(c, 0, 0, n, hd, n, scale, c->P, n, nn, Kp, QKV, hd, 0.f, dQ, CUDA_R_32F, QKV, (long long)g * hd, K)) return -1;
            if (gemm(c, 1, 0, n, hd, n, scale, c->P, n, nn, Qj, QKV, (long long)g * hd, acc, dK, CUDA_R_32F, QKV, hd, K)) return -1;
        }
    }
    return 0;
}

/* LM head forward over vocabulary chunks: xf [T, D] -> logp [T] (device) and lse [T]; the
 * chunk's logits [T, C] are the only logits alive. */
static int op_lm_fwd(cuda_ctx *c, int T)
{
    char *err = c->b->err; size_t errsz = sizeof c->b->err;
    int V = c->V, D = c->D;
    for (int c0 = 0; c0 < V; c0 += c->lm_chunk) {
        int C = V - c0 < c->lm_chunk ? V - c0 : c->lm_chunk;
        if (linear_fwd(c, c->logits, CUDA_R_32F, 0.f, c->xf, ACT(c, c->w, c->off_lm + (size_t)c0 * D), T, D, C)) return -1;
        LAUNCH(rblocks(T), 256, lse_chunk_k)(c->mx, c->se, c->tl, c->logits, c->tgt, T, C, c0, c0 == 0);
        CKL();
    }
    LAUNCH(eblocks(T), 256, logp_k)(c->logp, c->lse, c->mx, c->se, c->tl, c->tgt, T);
    CKL();
    return 0;
}

/* LM head backward, chunk by chunk: recompute the logits, form dlogits from wt and lse;
 * dxf = sum_chunks dz Wc (written), dWc += dz^T xf. */
static int op_lm_bwd(cuda_ctx *c, int T)
{
    char *err = c->b->err; size_t errsz = sizeof c->b->err;
    int V = c->V, D = c->D;
    for (int c0 = 0; c0 < V; c0 += c->lm_chunk) {
        int C = V - c0 < c->lm_chunk ? V - c0 : c->lm_chunk;
        const void *Wc = ACT(c, c->w, c->off_lm + (size_t)c0 * D);
        if (linear_fwd(c, c->logits, CUDA_R_32F, 0.f, c->xf, Wc, T, D, C)) return -1;
        DISPATCH_A(c, lm_bwd_chunk_k, rcgrid(T, C), 256, c->dlogits, c->logits, c->lse, c->wt, c->tgt, T, C, c0);
        CKL();
        if (linear_bwd(c, c->dxf, CUDA_R_32F, c0 ? 1.f : 0.f, GRD(c, c->off_lm + (size_t)c0 * D),
                       c->dlogits, c->xf, Wc, T, D, C)) return -1;
    }
    return 0;
}

/* dres cast to the compute type for the GEMMs (fp32 mode uses dres itself). */
static const void *dres_act(cuda_ctx *c, int T)
{
    if (!c->abf) return c->dres;
    LAUNCH(eblocks((size_t)T * c->D), 256, cast_k<bf16>)(c->dY, c->dres, (size_t)T * c->D);
    return c->dY;
}

/* Layer l forward from res[l] into a; writes res[l + 1] when `full` (backward's recomputation
 * needs everything but the layer output). */
static int layer_fwd(cuda_ctx *c, int l, layer_acts *a, int T, int full)
{
    char *err = c->b->err; size_t errsz = sizeof c->b->err;
    const layer_offsets *o = &c->lo[l];
    int D = c->D, I = c->I;
    const float *x = c->res + (size_t)l * c->max_T * D;
    if (op_rmsnorm_fwd(c, a->xn1, a->rstd1, x, ACT(c, c->w, o->ln1), T, D)) return -1;
    if (linear_fwd(c, a->qkv, act_type(c), 0.f, a->xn1, ACT(c, c->w, o->qkv), T, D, c->QKV)) return -1;
    if (c->abf) LAUNCH(rcgrid(T, c->QKV), 256, rope_k<bf16, bf16>)(a->qkv, a->qkv, c->pos, c->rope_cos, c->rope_sin, T, c->H + c->K, c->QKV, c->hd, 1.f);
    else LAUNCH(rcgrid(T, c->QKV), 256, rope_k<float, float>)(a->qkv, a->qkv, c->pos, c->rope_cos, c->rope_sin, T, c->H + c->K, c->QKV, c->hd, 1.f);
    CKL();
    if (op_attention_fwd(c, a->att, a->qkv, c->h_seq, c->n_seq)) return -1;
    CK(cudaMemcpy(a->xmid, x, (size_t)T * D * sizeof(float), cudaMemcpyDeviceToDevice));
    if (linear_fwd(c, a->xmid, CUDA_R_32F, 1.f, a->att, ACT(c, c->w, o->o), T, c->HD, D)) return -1;
    if (op_rmsnorm_fwd(c, a->xn2, a->rstd2, a->xmid, ACT(c, c->w, o->ln2), T, D)) return -1;
    if (linear_fwd(c, a->gu, act_type(c), 0.f, a->xn2, ACT(c, c->w, o->gu), T, D, 2 * I)) return -1;
    DISPATCH_A(c, swiglu_fwd_k, rcgrid(T, I), 256, a->h, a->gu, T, I);
    CKL();
    if (full) {
        float *y = c->res + (size_t)(l + 1) * c->max_T * D;
        CK(cudaMemcpy(y, a->xmid, (size_t)T * D * sizeof(float), cudaMemcpyDeviceToDevice));
        if (linear_fwd(c, y, CUDA_R_32F, 1.f, a->h, ACT(c, c->w, o->down), T, I, D)) return -1;
    }
    return 0;
}

/* Layer l backward: c->dres holds d res[l + 1] on entry and d res[l] on exit. */
static int layer_bwd(cuda_ctx *c, int l, layer_acts *a, int T)
{
    char *err = c->b->err; size_t errsz = sizeof c->b->err;
    const layer_offsets *o = &c->lo[l];
    int D = c->D, I = c->I, QKV = c->QKV, HD = c->HD;
    const float *x = c->res + (size_t)l * c->max_T * D;
    cudaDataType_t at = act_type(c);
    /* MLP block: res[l+1] = xmid + h Wd^T */
    const void *dy = dres_act(c, T);
    CKL();
    if (linear_bwd(c, c->dh, at, 0.f, GRD(c, o->down), dy, a->h, ACT(c, c->w, o->down), T, I, D)) return -1;
    DISPATCH_A(c, swiglu_bwd_k, rcgrid(T, I), 256, c->dbig, c->dh, a->gu, T, I);
    CKL();
    if (linear_bwd(c, c->dxn, CUDA_R_32F, 0.f, GRD(c, o->gu), c->dbig, a->xn2, ACT(c, c->w, o->gu), T, D, 2 * I)) return -1;
    if (op_rmsnorm_bwd(c, c->dres, GRD(c, o->ln2), c->dxn, a->xmid, a->rstd2, ACT(c, c->w, o->ln2), T, D)) return -1;
    /* attention block: xmid = res[l] + att Wo^T */
    dy = dres_act(c, T);
    CKL();
    if (linear_bwd(c, c->datt, at, 0.f, GRD(c, o->o), dy, a->att, ACT(c, c->w, o->o), T, HD, D)) return -1;
    if (op_attention_bwd(c, c->dqkvf, c->datt, a->qkv, c->h_seq, c->n_seq)) return -1;
    /* RoPE backward (inverse rotation) of dq, dk; dv copied; cast to the compute type */
    if (c->abf) LAUNCH(rcgrid(T, QKV), 256, rope_k<float, bf16>)(c->dbig, c->dqkvf, c->pos, c->rope_cos, c->rope_sin, T, c->H + c->K, QKV, c->hd, -1.f);
    else LAUNCH(rcgrid(T, QKV), 256, rope_k<float, float>)(c->dbig, c->dqkvf, c->pos, c->rope_cos, c->rope_sin, T, c->H + c->K, QKV, c->hd, -1.f);
    CKL();
    if (linear_bwd(c, c->dxn, CUDA_R_32F, 0.f, GRD(c, o->qkv), c->dbig, a->xn1, ACT(c, c->w, o->qkv), T, D, QKV)) return -1;
    if (op_rmsnorm_bwd(c, c->dres, GRD(c, o->ln1), c->dxn, x, a->rstd1, ACT(c, c->w, o->ln1), T, D)) return -1;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Backend calls                                                                               */

static int cuda_forward(llama_backend *b, const llama_batch *batch, float *logp)
{
    cuda_ctx *c = (cuda_ctx *)b->impl;
    char *err = b->err; size_t errsz = sizeof b->err;
    int T = batch->seq_start[batch->n_seq], D = c->D, V = c->V;
    c->have_fwd = 0;
    if (batch->n_seq < 1 || batch->seq_start[0] != 0 || T < 1 || T > c->max_T) {
        set_err(err, errsz, "cuda forward: batch has %d tokens in %d sequences; the backend was planned for "
                "1..%d tokens (raise max_tokens)", T, batch->n_seq, c->max_T);
        return -1;
    }
    if (batch->n_seq > c->max_T) { set_err(err, errsz, "cuda forward: %d sequences for %d tokens", batch->n_seq, T); return -1; }
    int *h_tok = (int *)malloc((size_t)T * sizeof(int) * 2);
    if (!h_tok) { set_err(err, errsz, "cuda forward: out of host memory"); return -1; }
    int *h_pos = h_tok + T;
    for (int s = 0; s < batch->n_seq; s++) {
        int a = batch->seq_start[s], e = batch->seq_start[s + 1];
        if (e < a) { free(h_tok); set_err(err, errsz, "cuda forward: seq_start[%d] = %d > seq_start[%d] = %d", s, a, s + 1, e); return -1; }
        for (int i = a; i < e; i++) {
            int y = batch->tokens[i];
            if (y < 0 || y >= V) { free(h_tok); set_err(err, errsz, "cuda forward: token %d at position %d is outside the vocabulary [0, %d)", y, i, V); return -1; }
            h_tok[i] = y;
            h_pos[i] = i - a;
            c->h_tgt[i] = i + 1 < e ? batch->tokens[i + 1] : -1;   /* what position i predicts */
        }
    }
    memcpy(c->h_seq, batch->seq_start, (size_t)(batch->n_seq + 1) * sizeof(int));
    c->n_seq = batch->n_seq;
    c->T = T;
    CK(cudaSetDevice(c->dev));
    cudaError_t e1 = cudaMemcpy(c->tok, h_tok, (size_t)T * sizeof(int), cudaMemcpyHostToDevice);
    cudaError_t e2 = e1 ? e1 : cudaMemcpy(c->pos, h_pos, (size_t)T * sizeof(int), cudaMemcpyHostToDevice);
    free(h_tok);
    CK(e2);
    CK(cudaMemcpy(c->tgt, c->h_tgt, (size_t)T * sizeof(int), cudaMemcpyHostToDevice));

    if (c->abf) LAUNCH(rcgrid(T, D), 256, embed_fwd_k<bf16>)(c->res, ACT(c, c->w, c->off_embed), c->tok, T, D);
    else LAUNCH(rcgrid(T, D), 256, embed_fwd_k<float>)(c->res, ACT(c, c->w, c->off_embed), c->tok, T, D);
    CKL();
    for (int l = 0; l < c->L; l++)
        if (layer_fwd(c, l, &c->acts[c->recompute ? 0 : l], T, 1)) return -1;
    if (op_rmsnorm_fwd(c, c->xf, c->rstdf, c->res + (size_t)c->L * c->max_T * D, ACT(c, c->w, c->off_norm), T, D)) return -1;
    if (op_lm_fwd(c, T)) return -1;
    CK(cudaMemcpy(logp, c->logp, (size_t)T * sizeof(float), cudaMemcpyDeviceToHost));
    c->have_fwd = 1;
    return 0;
}

static int cuda_backward(llama_backend *b, const llama_batch *batch, const float *dlogp)
{
    cuda_ctx *c = (cuda_ctx *)b->impl;
    char *err = b->err; size_t errsz = sizeof b->err;
    int T = c->T, D = c->D;
    if (!c->have_fwd || batch->n_seq != c->n_seq || batch->seq_start[batch->n_seq] != T) {
        set_err(err, errsz, "cuda backward: call forward on this batch first (backward differentiates the last forward)");
        return -1;
    }
    CK(cudaSetDevice(c->dev));
    for (int p = 0; p < T; p++) c->h_wt[p] = c->h_tgt[p] >= 0 ? dlogp[p + 1] : 0.f;
    CK(cudaMemcpy(c->wt, c->h_wt, (size_t)T * sizeof(float), cudaMemcpyHostToDevice));

    if (op_lm_bwd(c, T)) return -1;
    CK(cudaMemset(c->dres, 0, (size_t)T * D * sizeof(float)));
    if (op_rmsnorm_bwd(c, c->dres, GRD(c, c->off_norm), c->dxf, c->res + (size_t)c->L * c->max_T * D,
                       c->rstdf, ACT(c, c->w, c->off_norm), T, D)) return -1;
    for (int l = c->L - 1; l >= 0; l--) {
        layer_acts *a = &c->acts[c->recompute ? 0 : l];
        if (c->recompute && layer_fwd(c, l, a, T, 0)) return -1;
        if (layer_bwd(c, l, a, T)) return -1;
    }
    if (c->lean) LAUNCH(rcgrid(T, D), 256, embed_bwd_bf16_k)((bf16 *)GRD(c, c->off_embed), c->dres, c->tok, T, D);
    else LAUNCH(rcgrid(T, D), 256, embed_bwd_f32_k)((float *)GRD(c, c->off_embed), c->dres, c->tok, T, D);
    CKL();
    CK(cudaDeviceSynchronize());
    return 0;
}

static size_t gsz(const cuda_ctx *c) { return c->lean ? 2 : 4; }

static void cuda_zero_grad(llama_backend *b)
{
    cuda_ctx *c = (cuda_ctx *)b->impl;
    char *err = b->err; size_t errsz = sizeof b->err;
    cudaError_t e = cudaMemset(c->grad, 0, c->n_params * gsz(c));
    if (e != cudaSuccess) set_err(err, errsz, "kernels.cu:%d: cudaMemset(grad) failed: %s", __LINE__, cudaGetErrorString(e));
}

static int grad_sumsq(cuda_ctx *c, double *out)
{
    char *err = c->b->err; size_t errsz = sizeof c->b->err;
    CK(cudaMemset(c->dsum, 0, sizeof(double)));
    if (c->lean) LAUNCH(eblocks(c->n_params), 256, sumsq_k<bf16>)(c->dsum, (const bf16 *)c->grad, c->n_params);
    else LAUNCH(eblocks(c->n_params), 256, sumsq_k<float>)(c->dsum, (const float *)c->grad, c->n_params);
    CKL();
    CK(cudaMemcpy(out, c->dsum, sizeof(double), cudaMemcpyDeviceToHost));
    return 0;
}

static double cuda_grad_norm(llama_backend *b)
{
    cuda_ctx *c = (cuda_ctx *)b->impl;
    double s = 0;
    if (grad_sumsq(c, &s)) return NAN;
    return sqrt(s);
}

static int cuda_adamw_step(llama_backend *b, const llama_adamw *h, float grad_scale)
{
    cuda_ctx *c = (cuda_ctx *)b->impl;
    char *err = b->err; size_t errsz = sizeof b->err;
    if (h->step < 1) { set_err(err, errsz, "cuda adamw_step: step must be >= 1 (bias correction), got %ld", h->step); return -1; }
    CK(cudaSetDevice(c->dev));
    double bc1 = 1.0 - pow(h->beta1, (double)h->step), bc2 = 1.0 - pow(h->beta2, (double)h->step);
    float step = (float)(h->lr / bc1), sq_bc2 = (float)sqrt(bc2);
    c->sr_seed++;
    for (int i = 0; i < c->n_tens; i++) {
        const llama_tensor_info *ti = &c->tens[i];
        float decay = (float)(1.0 - h->lr * (ti->ndim == 2 ? h->weight_decay : 0.0));
        size_t off = ti->offset, n = ti->numel;
        if (c->lean)
            LAUNCH(eblocks(n), 256, adamw_bf16_k)((bf16 *)c->master + off, (const bf16 *)c->grad + off, (bf16 *)c->am + off,
                                              (bf16 *)c->av + off, n, grad_scale, (float)h->beta1, (float)h->beta2,
                                              (float)h->eps, decay, step, sq_bc2, c->sr_seed * 7919u + (uint32_t)i);
        else
            LAUNCH(eblocks(n), 256, adamw_f32_k)((float *)c->master + off, (const float *)c->grad + off, (float *)c->am + off,
                                             (float *)c->av + off, c->abf ? (bf16 *)c->w + off : NULL, n, grad_scale,
                                             (float)h->beta1, (float)h->beta2, (float)h->eps, decay, step, sq_bc2);
        CKL();
    }
    CK(cudaDeviceSynchronize());
    return 0;
}

/* Host <-> device copies of a flat [n_params] buffer stored as fp32 or bf16 (bf16 converted on
 * the host in chunks: round to nearest even on the way in). */
static float bf16_bits_to_f32(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
static uint16_t f32_to_bf16_bits(float f)
{
    uint32_t u; memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);   /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static int download(cuda_ctx *c, float *dst, const void *src, int is_bf16)
{
    char *err = c->b->err; size_t errsz = sizeof c->b->err;
    if (!is_bf16) { CK(cudaMemcpy(dst, src, c->n_params * 4, cudaMemcpyDeviceToHost)); return 0; }
    const size_t chunk = (size_t)1 << 24;
    uint16_t *tmp = (uint16_t *)malloc(chunk * 2);
    if (!tmp) { set_err(err, errsz, "cuda get_state: out of host memory"); return -1; }
    for (size_t i = 0; i < c->n_params; i += chunk) {
        size_t n = c->n_params - i < chunk ? c->n_params - i : chunk;
        cudaError_t e = cudaMemcpy(tmp, (const uint16_t *)src + i, n * 2, cudaMemcpyDeviceToHost);
        if (e != cudaSuccess) { free(tmp); CK(e); }
        for (size_t k = 0; k < n; k++) dst[i + k] = bf16_bits_to_f32(tmp[k]);
    }
    free(tmp);
    return 0;
}

static int upload(cuda_ctx *c, void *dst, const float *src, int is_bf16)
{
    char *err = c->b->err; size_t errsz = sizeof c->b->err;
    if (!is_bf16) { CK(cudaMemcpy(dst, src, c->n_params * 4, cudaMemcpyHostToDevice)); return 0; }
    const size_t chunk = (size_t)1 << 24;
    uint16_t *tmp = (uint16_t *)malloc(chunk * 2);
    if (!tmp) { set_err(err, errsz, "cuda set_state: out of host memory"); return -1; }
    for (size_t i = 0; i < c->n_params; i += chunk) {
        size_t n = c->n_params - i < chunk ? c->n_params - i : chunk;
        for (size_t k = 0; k < n; k++) tmp[k] = f32_to_bf16_bits(src[i + k]);
        cudaError_t e = cudaMemcpy((uint16_t *)dst + i, tmp, n * 2, cudaMemcpyHostToDevice);
        if (e != cudaSuccess) { free(tmp); CK(e); }
    }
    free(tmp);
    return 0;
}

/* bf16 non-lean mode: the compute copy follows the fp32 master. */
static int refresh_w16(cuda_ctx *c)
{
    char *err = c->b->err; size_t errsz = sizeof c->b->err;
    if (!c->abf || c->lean) return 0;
    LAUNCH(eblocks(c->n_params), 256, f32_to_bf16_k)((bf16 *)c->w, (const float *)c->master, c->n_params);
    CKL();
    CK(cudaDeviceSynchronize());
    return 0;
}

static int cuda_get_state(llama_backend *b, float *params, float *grads, float *adam_m, float *adam_v)
{
    cuda_ctx *c = (cuda_ctx *)b->impl;
    char *err = b->err; size_t errsz = sizeof b->err;
    CK(cudaSetDevice(c->dev));
    CK(cudaDeviceSynchronize());
    if (params && download(c, params, c->master, c->lean)) return -1;
    if (grads && download(c, grads, c->grad, c->lean)) return -1;
    if (adam_m && download(c, adam_m, c->am, c->lean)) return -1;
    if (adam_v && download(c, adam_v, c->av, c->lean)) return -1;
    return 0;
}

static int cuda_set_state(llama_backend *b, const float *params, const float *adam_m, const float *adam_v)
{
    cuda_ctx *c = (cuda_ctx *)b->impl;
    char *err = b->err; size_t errsz = sizeof b->err;
    CK(cudaSetDevice(c->dev));
    if (params && (upload(c, c->master, params, c->lean) || refresh_w16(c))) return -1;
    if (adam_m && upload(c, c->am, adam_m, c->lean)) return -1;
    if (adam_v && upload(c, c->av, adam_v, c->lean)) return -1;
    c->have_fwd = 0;
    return 0;
}

static void ctx_free(cuda_ctx *c)
{
    if (!c) return;
    if (c->cub) cublasDestroy(c->cub);           /* before its workspace (c->cub_ws) goes */
    c->cub = NULL;
    void *bufs[] = {c->master, c->w != c->master ? c->w : NULL, c->grad, c->am, c->av, c->res, c->xf, c->rstdf,
                    c->dres, c->dxn, c->dY, c->datt, c->dh, c->dbig, c->dqkvf, c->S, c->P, c->logits, c->dlogits,
                    c->dxf, c->mx, c->se, c->tl, c->lse, c->logp, c->wt, c->tok, c->pos, c->tgt, c->rope_cos,
                    c->rope_sin, c->dsum, c->cub_ws};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) if (bufs[i]) cudaFree(bufs[i]);
    if (c->acts)
        for (int i = 0; i < c->n_acts; i++) {
            layer_acts *a = &c->acts[i];
            void *ab[] = {a->xn1, a->rstd1, a->qkv, a->att, a->xmid, a->xn2, a->rstd2, a->gu, a->h};
            for (size_t k = 0; k < sizeof ab / sizeof ab[0]; k++) if (ab[k]) cudaFree(ab[k]);
        }
    free(c->acts); free(c->tens); free(c->lo); free(c->h_seq); free(c->h_tgt); free(c->h_wt);
    free(c);
}

static void cuda_destroy(llama_backend *b)
{
    if (!b) return;
    cuda_ctx *c = (cuda_ctx *)b->impl;
    if (c) { cudaSetDevice(c->dev); ctx_free(c); }
    free(b);
}

/* ------------------------------------------------------------------------------------------ */
/* Creation: shapes, the memory plan, allocation, upload                                       */

typedef struct {
    size_t weights, grads, optim, acts, work, total;
} mem_plan;

static double gib(size_t x) { return (double)x / (1024.0 * 1024.0 * 1024.0); }

static void plan_memory(const cuda_ctx *c, mem_plan *p)
{
    size_t N = c->n_params, T = (size_t)c->max_T, a = c->asz, D = c->D, I = c->I;
    size_t ms = c->lean ? 2 : 4;
    p->weights = N * ms + (c->abf && !c->lean ? N * 2 : 0);
    p->grads = N * (c->lean ? 2 : 4);
    p->optim = 2 * N * ms;
    size_t per_layer = T * (D * a + 4 + (size_t)c->QKV * a + (size_t)c->HD * a + D * 4 + D * a + 4 + 2 * I * a + I * a);
    p->acts = (size_t)(c->L + 1) * T * D * 4 + (size_t)c->n_acts * per_layer + T * (D * a + 4);
    size_t big = (size_t)(2 * c->I > c->QKV ? 2 * c->I : c->QKV);
    p->work = T * D * 4 * 3 + T * D * a + T * (size_t)c->HD * a + T * I * a + T * big * a + T * (size_t)c->QKV * 4 +
              (size_t)c->K * T * T * (4 + a) + T * (size_t)c->lm_chunk * (4 + a) + T * 6 * 4 + T * 3 * 4 +
              T * (size_t)(c->hd / 2) * 8 + c->cub_ws_size;
    p->total = p->weights + p->grads + p->optim + p->acts + p->work;
}

static void plan_text(const cuda_ctx *c, const mem_plan *p, char *out, size_t outsz)
{
    snprintf(out, outsz,
             "memory plan (%s%s%s, %zu params, %d tokens): weights %.2f GiB, grads %.2f GiB, optimizer %.2f GiB, "
             "activations %.2f GiB, workspace %.2f GiB, total %.2f GiB",
             c->abf ? "bf16" : "fp32", c->lean ? " lean" : "", c->recompute ? " recompute" : "", c->n_params, c->max_T,
             gib(p->weights), gib(p->grads), gib(p->optim), gib(p->acts), gib(p->work), gib(p->total));
}

/* cudaMalloc of `n` bytes into *p, counting failures as errors with the buffer's name. */
static int dalloc(cuda_ctx *c, void **p, size_t n, const char *what, char *err, size_t errsz)
{
    cudaError_t e = cudaMalloc(p, n ? n : 16);
    if (e != cudaSuccess) {
        *p = NULL;
        set_err(err, errsz, "kernels.cu:%d: cudaMalloc(%s, %.2f GiB) failed: %s (hint: %s)", __LINE__, what, gib(n),
                cudaGetErrorString(e), cuda_hint(e));
        return -1;
    }
    (void)c;
    return 0;
}

/* Random init on the device (model with params == NULL): HF init, deterministic per seed. */
static int init_random_device(cuda_ctx *c, char *err, size_t errsz)
{
    for (int i = 0; i < c->n_tens; i++) {
        const llama_tensor_info *ti = &c->tens[i];
        void *p = (char *)c->master + ti->offset * (c->lean ? 2 : 4);
        if (ti->ndim == 1) {
            if (c->lean) LAUNCH(eblocks(ti->numel), 256, fill_k<bf16>)((bf16 *)p, ti->numel, 1.f);
            else LAUNCH(eblocks(ti->numel), 256, fill_k<float>)((float *)p, ti->numel, 1.f);
        } else {
            float sd = (float)(c->cfg.initializer_range > 0 ? c->cfg.initializer_range : 0.02);
            if (c->lean) LAUNCH(eblocks(ti->numel), 256, init_normal_k<bf16>)((bf16 *)p, ti->numel, sd, 1234u + (uint32_t)i);
            else LAUNCH(eblocks(ti->numel), 256, init_normal_k<float>)((float *)p, ti->numel, sd, 1234u + (uint32_t)i);
        }
        CKL();
    }
    CK(cudaDeviceSynchronize());
    return 0;
}

/* Fills layer offsets from the tensor table and checks that q, k, v (and gate, up) are
 * consecutive, which the fused projections rely on. */
static int find_offsets(cuda_ctx *c, char *err, size_t errsz)
{
    int L = c->L;
    if (c->n_tens != 2 + 9 * L + (c->cfg.tie_word_embeddings ? 0 : 1)) {
        set_err(err, errsz, "cuda backend: unexpected tensor table (%d tensors for %d layers)", c->n_tens, L);
        return -1;
    }
    const llama_tensor_info *t = c->tens;
    c->off_embed = t[0].offset;
    for (int l = 0; l < L; l++) {
        const llama_tensor_info *b = t + 1 + 9 * l;   /* ln1 q k v o ln2 gate up down */
        layer_offsets *o = &c->lo[l];
        o->ln1 = b[0].offset; o->qkv = b[1].offset; o->o = b[4].offset; o->ln2 = b[5].offset;
        o->gu = b[6].offset; o->down = b[8].offset;
        if (b[2].offset != b[1].offset + b[1].numel || b[3].offset != b[2].offset + b[2].numel ||
            b[7].offset != b[6].offset + b[6].numel) {
            set_err(err, errsz, "cuda backend: layer %d: q/k/v or gate/up are not consecutive in the layout", l);
            return -1;
        }
    }
    c->off_norm = t[1 + 9 * L].offset;
    c->off_lm = c->cfg.tie_word_embeddings ? c->off_embed : t[2 + 9 * L].offset;
    return 0;
}

extern "C" llama_backend *llama_cuda_backend_create(const llama_model *m, const llama_cuda_opts *opts,
                                                    char *err, size_t errsz)
{
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        set_err(err, errsz, "no CUDA device: %s (hint: %s; or train on the CPU backend)",
                e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found 0 devices",
                e != cudaSuccess ? cuda_hint(e) : cuda_hint(cudaErrorNoDevice));
        cudaGetLastError();                        /* clear the sticky-free error state */
        return NULL;
    }
    if (!m || !opts) { set_err(err, errsz, "llama_cuda_backend_create: model and opts are required"); return NULL; }
    if (opts->device < 0 || opts->device >= ndev) {
        set_err(err, errsz, "cuda device %d does not exist: this machine has %d (0..%d)", opts->device, ndev, ndev - 1);
        return NULL;
    }
    if (opts->lean_optimizer && !opts->bf16) {
        set_err(err, errsz, "cuda backend: lean_optimizer keeps bf16 weights, so it needs bf16 = 1");
        return NULL;
    }
    const llama_config *cfg = &m->cfg;
    if (opts->max_tokens < 1) { set_err(err, errsz, "cuda backend: max_tokens must be >= 1 (the largest batch), got %d", opts->max_tokens); return NULL; }
    if (cfg->num_key_value_heads < 1 || cfg->num_attention_heads % cfg->num_key_value_heads || cfg->head_dim % 2) {
        set_err(err, errsz, "cuda backend: heads %d / kv heads %d / head_dim %d not supported", cfg->num_attention_heads,
                cfg->num_key_value_heads, cfg->head_dim);
        return NULL;
    }

    llama_backend *b = (llama_backend *)calloc(1, sizeof *b);
    cuda_ctx *c = (cuda_ctx *)calloc(1, sizeof *c);
    if (!b || !c) { free(b); free(c); set_err(err, errsz, "cuda backend: out of host memory"); return NULL; }
    b->impl = c;
    c->b = b;
    c->cfg = *cfg;
    c->dev = opts->device;
    c->L = cfg->num_hidden_layers; c->D = cfg->hidden_size; c->I = cfg->intermediate_size;
    c->H = cfg->num_attention_heads; c->K = cfg->num_key_value_heads; c->hd = cfg->head_dim; c->V = cfg->vocab_size;
    c->QKV = (c->H + 2 * c->K) * c->hd; c->HD = c->H * c->hd; c->g = c->H / c->K;
    c->abf = opts->bf16 ? 1 : 0; c->lean = opts->lean_optimizer ? 1 : 0; c->recompute = opts->recompute ? 1 : 0;
    c->asz = c->abf ? 2 : 4;
    c->max_T = opts->max_tokens;
    c->n_acts = c->recompute ? 1 : c->L;
    c->cub_ws_size = (size_t)32 << 20;
    /* LM-head chunk: about 256 MiB of fp32 logits, a multiple of 128 columns. Tests force small
     * chunks with LLAMA_CUDA_LM_CHUNK to exercise the merging across chunks. */
    {
        size_t cols = ((size_t)256 << 20) / ((size_t)c->max_T * 4);
        cols = cols / 128 * 128;
        if (cols < 128) cols = 128;
        const char *ev = getenv("LLAMA_CUDA_LM_CHUNK");
        if (ev && atoi(ev) > 0) cols = (size_t)atoi(ev);
        c->lm_chunk = cols >= (size_t)c->V ? c->V : (int)cols;
    }
    b->cfg = *cfg;
    b->name = c->lean ? "cuda-bf16-lean" : c->abf ? "cuda-bf16" : "cuda-fp32";
    b->forward = cuda_forward; b->backward = cuda_backward; b->zero_grad = cuda_zero_grad;
    b->grad_norm = cuda_grad_norm; b->adamw_step = cuda_adamw_step; b->get_state = cuda_get_state;
    b->set_state = cuda_set_state; b->destroy = cuda_destroy;

    int nt = llama_layout(cfg, NULL, &c->n_params);
    c->tens = (llama_tensor_info *)calloc((size_t)(nt > 0 ? nt : 1), sizeof *c->tens);
    c->lo = (layer_offsets *)calloc((size_t)(c->L > 0 ? c->L : 1), sizeof *c->lo);
    c->acts = (layer_acts *)calloc((size_t)c->n_acts, sizeof *c->acts);
    c->h_seq = (int *)malloc(((size_t)c->max_T + 1) * sizeof(int));
    c->h_tgt = (int *)malloc((size_t)c->max_T * sizeof(int));
    c->h_wt = (float *)malloc((size_t)c->max_T * sizeof(float));
    if (nt <= 0 || !c->tens || !c->lo || !c->acts || !c->h_seq || !c->h_tgt || !c->h_wt) {
        set_err(err, errsz, "cuda backend: bad config or out of host memory");
        goto fail;
    }
    c->n_tens = llama_layout(cfg, c->tens, &c->n_params);
    b->n_params = c->n_params;
    if (find_offsets(c, err, errsz)) goto fail;

    {
        mem_plan p;
        plan_memory(c, &p);
        char txt[400];
        plan_text(c, &p, txt, sizeof txt);
        if (cudaSetDevice(c->dev) != cudaSuccess) { set_err(err, errsz, "cudaSetDevice(%d) failed", c->dev); goto fail; }
        size_t fr = 0, tot = 0;
        e = cudaMemGetInfo(&fr, &tot);
        if (e != cudaSuccess) {
            set_err(err, errsz, "kernels.cu:%d: cudaMemGetInfo failed: %s (hint: %s)", __LINE__, cudaGetErrorString(e), cuda_hint(e));
            goto fail;
        }
        if (opts->verbose) {
            cudaDeviceProp prop;
            if (cudaGetDeviceProperties(&prop, c->dev) == cudaSuccess)
                fprintf(stderr, "cuda: device %d: %s, %.1f GiB, %.1f GiB free\n", c->dev, prop.name, gib(tot), gib(fr));
            fprintf(stderr, "cuda: %s\n", txt);
        }
        size_t margin = (size_t)512 << 20;        /* CUDA context, cuBLAS internals, fragmentation */
        if (p.total + margin > fr) {
            set_err(err, errsz, "cuda backend will not fit: %s; the device has %.2f GiB free (hint: enable lean_optimizer "
                    "(bf16), recompute, or lower max_tokens)", txt, gib(fr));
            goto fail;
        }
    }

    {
        size_t N = c->n_params, T = (size_t)c->max_T, D = c->D, I = c->I, a = c->asz;
        size_t ms = c->lean ? 2 : 4;
        size_t big = (size_t)(2 * c->I > c->QKV ? 2 * c->I : c->QKV);
#define AL(ptr, bytes) do { if (dalloc(c, (void **)&(ptr), (bytes), #ptr, err, errsz)) goto fail; } while (0)
        AL(c->master, N * ms);
        if (c->abf && !c->lean) AL(c->w, N * 2); else c->w = c->master;
        AL(c->grad, N * (c->lean ? 2 : 4));
        AL(c->am, N * ms);
        AL(c->av, N * ms);
        AL(c->res, (size_t)(c->L + 1) * T * D * 4);
        for (int i = 0; i < c->n_acts; i++) {
            layer_acts *q = &c->acts[i];
            AL(q->xn1, T * D * a); AL(q->rstd1, T * 4); AL(q->qkv, T * c->QKV * a); AL(q->att, T * c->HD * a);
            AL(q->xmid, T * D * 4); AL(q->xn2, T * D * a); AL(q->rstd2, T * 4); AL(q->gu, T * 2 * I * a);
            AL(q->h, T * I * a);
        }
        AL(c->xf, T * D * a); AL(c->rstdf, T * 4);
        AL(c->dres, T * D * 4); AL(c->dxn, T * D * 4); AL(c->dxf, T * D * 4); AL(c->dY, T * D * a);
        AL(c->datt, T * c->HD * a); AL(c->dh, T * I * a); AL(c->dbig, T * big * a); AL(c->dqkvf, T * c->QKV * 4);
        AL(c->S, (size_t)c->K * T * T * 4); AL(c->P, (size_t)c->K * T * T * a);
        AL(c->logits, T * c->lm_chunk * 4); AL(c->dlogits, T * c->lm_chunk * a);
        AL(c->mx, T * 4); AL(c->se, T * 4); AL(c->tl, T * 4); AL(c->lse, T * 4); AL(c->logp, T * 4); AL(c->wt, T * 4);
        AL(c->tok, T * 4); AL(c->pos, T * 4); AL(c->tgt, T * 4);
        AL(c->rope_cos, T * (c->hd / 2) * 4); AL(c->rope_sin, T * (c->hd / 2) * 4);
        AL(c->dsum, sizeof(double));
        AL(c->cub_ws, c->cub_ws_size);
#undef AL
    }

    {
        cublasStatus_t s = cublasCreate(&c->cub);
        if (s != CUBLAS_STATUS_SUCCESS) { c->cub = NULL; set_err(err, errsz, "kernels.cu:%d: cublasCreate failed: %s", __LINE__, cublas_name(s)); goto fail; }
        if (cublasSetWorkspace(c->cub, c->cub_ws, c->cub_ws_size) != CUBLAS_STATUS_SUCCESS ||
            cublasSetMathMode(c->cub, c->abf ? CUBLAS_DEFAULT_MATH : CUBLAS_PEDANTIC_MATH) != CUBLAS_STATUS_SUCCESS) {
            set_err(err, errsz, "kernels.cu:%d: cuBLAS setup failed", __LINE__);
            goto fail;
        }
    }

    /* RoPE tables: angle = pos * inv_freq[j] in fp32 with inv_freq from the CPU path (llama3
     * scaling included), cos and sin of it taken in double, stored fp32: the CPU path's numbers. */
    {
        int half = c->hd / 2;
        double *inv = (double *)malloc((size_t)half * sizeof(double));
        float *cs = (float *)malloc((size_t)c->max_T * half * 2 * sizeof(float));
        if (!inv || !cs) { free(inv); free(cs); set_err(err, errsz, "cuda backend: out of host memory"); goto fail; }
        llama_rope_inv_freq(cfg, inv);
        for (int p = 0; p < c->max_T; p++)
            for (int j = 0; j < half; j++) {
                float ang = (float)p * (float)inv[j];   /* fp32 product, as HF and the CPU path */
                cs[(size_t)p * half + j] = (float)cos((double)ang);
                cs[(size_t)c->max_T * half + (size_t)p * half + j] = (float)sin((double)ang);
            }
        e = cudaMemcpy(c->rope_cos, cs, (size_t)c->max_T * half * 4, cudaMemcpyHostToDevice);
        if (e == cudaSuccess) e = cudaMemcpy(c->rope_sin, cs + (size_t)c->max_T * half, (size_t)c->max_T * half * 4, cudaMemcpyHostToDevice);
        free(inv); free(cs);
        if (e != cudaSuccess) { set_err(err, errsz, "kernels.cu:%d: rope table upload failed: %s", __LINE__, cudaGetErrorString(e)); goto fail; }
    }

    /* parameters: from the host model, or random on the device for a config-only model */
    if (m->params) {
        if (m->n_params != c->n_params) { set_err(err, errsz, "cuda backend: model has %zu params, layout says %zu", m->n_params, c->n_params); goto fail; }
        if (upload(c, c->master, m->params, c->lean) || refresh_w16(c)) {
            snprintf(err, errsz, "%s", b->err);
            goto fail;
        }
    } else {
        if (init_random_device(c, err, errsz)) goto fail;
        if (refresh_w16(c)) { snprintf(err, errsz, "%s", b->err); goto fail; }
    }
    if (cudaMemset(c->grad, 0, c->n_params * gsz(c)) != cudaSuccess || cudaMemset(c->am, 0, c->n_params * (c->lean ? 2 : 4)) != cudaSuccess ||
        cudaMemset(c->av, 0, c->n_params * (c->lean ? 2 : 4)) != cudaSuccess || cudaDeviceSynchronize() != cudaSuccess) {
        set_err(err, errsz, "kernels.cu:%d: initial cudaMemset failed: %s", __LINE__, cudaGetErrorString(cudaGetLastError()));
        goto fail;
    }
    return b;

fail:
    ctx_free(c);
    free(b);
    return NULL;
}
