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
 * are fp32. Every matrix product outside attention goes through cuBLAS
 * (cublasGemmStridedBatchedEx) with fp32 accumulation; attention in the bf16 modes is our own
 * flash-attention kernels on tensor cores (nvcuda::wmma); everything else is a small kernel here,
 * written to be obviously correct first: grid-stride loops for elementwise work, one thread block
 * per row for row reductions.
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
 * Attention, per sequence of the packed batch (sequences never see each other), two paths:
 *  - bf16 modes: flash attention (flash_fwd_k, flash_bwd_kv_k, flash_bwd_q_k; head_dim <= 128).
 *    A block takes a tile of 32 query rows of one KV group (all its query heads: each K/V tile is
 *    loaded once for the group) and walks the causal key tiles of 32 with an online softmax,
 *    keeping only O and one fp32 log-sum-exp per (token, head); no scores exist in memory. The
 *    backward computes Dsum = rowsum(dO O), then dK, dV in one kernel (a block per key tile,
 *    looping over query tiles) and dQ in another (a block per query tile, looping over key
 *    tiles), both recomputing P = exp(S - lse): every gradient element is summed by one block in
 *    a fixed order, without atomics. bf16 operands, fp32 accumulation, dq dk dv in fp32.
 *  - fp32 mode (the parity mode), head_dim > 128, or LLAMA_CUDA_ATTENTION=cublas (A/B
 *    measurements): per query head within a KV group (j < H/K), one strided-batched GEMM over the
 *    K KV heads gives the scores [K, n, n] (fp32), a causal softmax kernel turns them into
 *    probabilities, and a second GEMM multiplies by V. Only [K, n, n] scores are alive at any
 *    time (sized by the longest sequence, opts.max_seq_tokens; rows padded to 8 elements);
 *    backward recomputes them.
 *
 * Recomputation (opts.recompute, LLAMA_RECOMPUTE_*): 0 (none) keeps every layer's activation set.
 * 1 (whole layer) keeps only each layer's input res[l] (fp32); backward reruns layer l's forward,
 * GEMMs and attention included, into one shared activation set before differentiating it.
 * 2 (selective) keeps per layer what a GEMM or attention produced - qkv (after RoPE, as
 * attention reads it), the attention output and, with flash attention, its log-sum-exp rows
 * att_lse [T, H] (the backward's P = exp(S - lse) needs them), xmid (res[l] + the o projection),
 * gate | up - and the norms' rstd rows; backward recomputes only xn1, xn2 (x * rstd * w from the
 * kept x and rstd) and h = silu(gate) * up into one shared set, with the forward's own
 * arithmetic, so the gradients are the same bits as without recomputation. No GEMM and no
 * attention runs twice; the price is the kept set's memory (about 92 KiB per token and layer
 * for Llama-3-8B in bf16, of which the log-sum-exp is 128 bytes). Whole-layer recomputation
 * reruns the attention forward too, so att_lse lives in its one shared set; without
 * recomputation every layer has its own. (cuBLAS attention keeps no statistics: its backward
 * recomputes the probabilities with a softmax.)
 *
 * Errors: every CUDA and cuBLAS call is checked; a failure sets backend->err (at creation, the
 * caller's err) to "kernels.cu:LINE: CALL failed: REASON (hint: ...)" and the call returns -1;
 * after such a failure every later call refuses with that message (the state is unknown).
 * backward and adamw_step return with their kernels in flight (no cudaDeviceSynchronize): a
 * fault inside them is reported by the next call that waits for the device (grad_norm,
 * get_state, forward's upload).
 *
 * Optimizer: one AdamW launch over all tensors (adamw_multi_*_k) with a device table of
 * (offset, size, decay flag); lean mode's stochastic rounding is seeded per (step, tensor).
 *
 * Determinism: no atomics anywhere (the grad norm sums in two fixed-order passes, the embedding
 * gradient adds each token's positions in order), so one build on one GPU gives the same bits
 * for the same inputs; cuBLAS may differ across versions and GPU models.
 *
 * A model whose params pointer is NULL (a config only) is initialised randomly on the device
 * with HF's init (normal(0, initializer_range) for matrices, 1 for norms): benchmarks of large
 * shapes need no host copy of the weights.
 */
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cublas_v2.h>
#include <mma.h>
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
/* A message must tell a user what to do, not only what failed: each CUDA error we can explain
 * gets a hint, and cuBLAS statuses are printed by name, the name its documentation lists them
 * under. */

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

/* Writes one message into a caller's buffer (creation, which has no backend yet). Backend
 * calls report through ctx_error and the CHECK macros below the backend state instead. */
static void set_err(char *err, size_t errsz, const char *fmt, ...)
{
    if (!err || !errsz) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------------------------ */
/* Device helpers                                                                              */
/* What every kernel shares: type conversion, the launch macro, grid-stride loops, block
 * reductions, and the stateless random numbers of stochastic rounding and device init. */

/* Kernels are templates over the storage type of activations and weights (float or bf16) and
 * compute in fp32: load_float / store_float convert at the memory boundary only. */
__device__ __forceinline__ float load_float(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float load_float(const bf16 *p, size_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void store_float(float *p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store_float(bf16 *p, size_t i, float v) { p[i] = __float2bfloat16(v); }

/* 16 bytes of Act elements (4 fp32 or 8 bf16), moved as one int4: one 16-byte load or store
 * instead of 4 or 8 narrow ones (a bf16 kernel with scalar loads reaches a fraction of the
 * bandwidth). The address must be 16-byte aligned, as on the GPU, which faults otherwise; the
 * host side checks before choosing a vector kernel (vector_fits), and the CPU emulator checks
 * every access (VECTOR_ACCESS). */
template <typename Act>
struct alignas(16) pack16 {
    static constexpr int n = 16 / (int)sizeof(Act);
    Act v[16 / sizeof(Act)];
};
#ifndef VECTOR_ACCESS
#define VECTOR_ACCESS(p) ((void)0)
#endif
template <typename Act>
__device__ __forceinline__ pack16<Act> load_pack(const Act *p)
{
    VECTOR_ACCESS(p);
    int4 bits = *(const int4 *)p;
    pack16<Act> r;
    memcpy(&r, &bits, sizeof r);
    return r;
}
template <typename Act>
__device__ __forceinline__ void store_pack(Act *p, const pack16<Act> &r)
{
    VECTOR_ACCESS(p);
    int4 bits;
    memcpy(&bits, &r, sizeof bits);
    *(int4 *)p = bits;
}

/* Kernel launches are written LAUNCH(grid, block, kernel)(args...): CUDA's <<<>>> here, and a
 * CPU emulator in tests/gpu/emu/ (which defines LAUNCH first) runs this very file without a
 * GPU, so CI checks the backend end to end against the CPU path. */
#ifndef LAUNCH
#define LAUNCH(grid, block, ...) __VA_ARGS__<<<(grid), (block)>>>
#endif
#ifndef MAX_ELEM_BLOCKS
#define MAX_ELEM_BLOCKS 32768   /* elementwise grids; grid-stride loops do the rest */
#define MAX_ROW_BLOCKS 65535    /* row kernels: one block per row up to this */
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
template <typename Num>
__device__ Num block_sum(Num v)
{
    __shared__ Num warp_sums[32];
    for (int lanes = 16; lanes > 0; lanes >>= 1) v += __shfl_xor_sync(0xffffffffu, v, lanes);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < n_warps ? warp_sums[lane] : (Num)0;
        for (int lanes = 16; lanes > 0; lanes >>= 1) v += __shfl_xor_sync(0xffffffffu, v, lanes);
        if (lane == 0) warp_sums[0] = v;
    }
    __syncthreads();
    return warp_sums[0];
}

__device__ float block_max(float v)
{
    __shared__ float warp_maxes[32];
    for (int lanes = 16; lanes > 0; lanes >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, lanes));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) warp_maxes[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < n_warps ? warp_maxes[lane] : -INFINITY;
        for (int lanes = 16; lanes > 0; lanes >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, lanes));
        if (lane == 0) warp_maxes[0] = v;
    }
    __syncthreads();
    return warp_maxes[0];
}
#endif

/* A 32-bit integer hash (lowbias32): the random numbers of stochastic rounding and device init
 * are hash(seed, element index), so they need no state and are the same for any launch shape. */
__device__ __forceinline__ uint32_t hash32(uint32_t x)
{
    x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16;
    return x;
}
__device__ __forceinline__ uint32_t hash_index(uint32_t seed, size_t i)
{
    return hash32((uint32_t)i ^ hash32((uint32_t)(i >> 32) ^ hash32(seed)));
}

/* Stochastic rounding fp32 -> bf16: add 16 random bits below the kept mantissa, then truncate,
 * so E[round(x)] = x and tiny Adam updates are not all rounded away. */
__device__ __forceinline__ bf16 bf16_round_stochastic(float x, uint32_t random_bits)
{
    if (!isfinite(x)) return __float2bfloat16(x);
    uint32_t u = __float_as_uint(x);
    u += random_bits & 0xffffu;
    u &= 0xffff0000u;
    return __ushort_as_bfloat16((unsigned short)(u >> 16));
}

/* ------------------------------------------------------------------------------------------ */
/* Kernels (each has a CPU twin: llama_* in llama/model.c or a reference in tests/gpu/)        */
/* Template parameters name storage types: Act the compute type of activations and weights,
 * Grad the gradient type, Param the parameter type (each float or bf16). A `void *x_act`
 * argument holds Act elements: the host side picks the instantiation at run time (LAUNCH_ACT). */

/* res[t, :] = W[tokens[t], :] (fp32 residual stream). */
template <typename Act>
__global__ void embed_fwd_k(float *res, const void *W_act, const int *tokens, int T, int D)
{
    const Act *W = (const Act *)W_act;
    ROWS_COLS(t, T, d, D) res[t * D + d] = load_float(W, (size_t)tokens[t] * D + d);
}

/* dW[tok, :] += sum of dres[t, :] over the positions t holding token tok, for each distinct token
 * of the batch: distinct[u] is the u-th one, its positions are where[first[u] .. first[u + 1])
 * in increasing order (the host groups them, group_tokens). One thread per (token, column) adds
 * in a fixed order: no atomics, so the same batch gives the same bits on every run, and a bf16
 * gradient is rounded once per token and micro-batch instead of once per occurrence. */
template <typename Grad>
__global__ void embed_bwd_k(Grad *dW, const float *dres, const int *distinct, const int *first, const int *where,
                            int n_distinct, int D)
{
    ROWS_COLS(u, n_distinct, d, D) {
        float sum = 0.f;
        for (int k = first[u]; k < first[u + 1]; k++) sum += dres[(size_t)where[k] * D + d];
        size_t i = (size_t)distinct[u] * D + d;
        store_float(dW, i, load_float(dW, i) + sum);
    }
}

/* out[t, :] = x[t, :] * rstd[t] * w, rstd[t] = 1 / sqrt(mean(x[t]^2) + eps). One block per row. */
template <typename Act>
__global__ void rmsnorm_fwd_k(void *out_act, float *rstd, const float *x, const void *w_act, int T, int D,
                              float eps)
{
    Act *out = (Act *)out_act;
    const Act *w = (const Act *)w_act;
    for (int t = blockIdx.x; t < T; t += gridDim.x) {
        const float *x_row = x + (size_t)t * D;
        float sumsq = 0.f;
        for (int d = threadIdx.x; d < D; d += blockDim.x) sumsq += x_row[d] * x_row[d];
        sumsq = block_sum(sumsq);
        float rstd_t = rsqrtf(sumsq / D + eps);
        for (int d = threadIdx.x; d < D; d += blockDim.x)
            store_float(out, (size_t)t * D + d, x_row[d] * rstd_t * load_float(w, d));
        if (threadIdx.x == 0) rstd[t] = rstd_t;
    }
}

/* The residual add and the next norm in one pass: sum[t, :] = x[t, :] + y[t, :] (fp32 residual
 * stream; also into sum_copy when not NULL), out[t, :] = sum[t, :] * rstd[t] * w as in
 * rmsnorm_fwd_k. Replaces a device-to-device copy of x, a GEMM adding into the copy (beta = 1),
 * and a norm that reads the sum again. Each thread rereads only the sums it wrote itself. */
template <typename Act>
__global__ void add_rmsnorm_fwd_k(float *sum, float *sum_copy, void *out_act, float *rstd, const float *x,
                                  const float *y, const void *w_act, int T, int D, float eps)
{
    Act *out = (Act *)out_act;
    const Act *w = (const Act *)w_act;
    for (int t = blockIdx.x; t < T; t += gridDim.x) {
        size_t row = (size_t)t * D;
        float sumsq = 0.f;
        for (int d = threadIdx.x; d < D; d += blockDim.x) {
            float v = x[row + d] + y[row + d];
            sum[row + d] = v;
            if (sum_copy) sum_copy[row + d] = v;
            sumsq += v * v;
        }
        sumsq = block_sum(sumsq);
        float rstd_t = rsqrtf(sumsq / D + eps);
        for (int d = threadIdx.x; d < D; d += blockDim.x)
            store_float(out, row + d, sum[row + d] * rstd_t * load_float(w, d));
        if (threadIdx.x == 0) rstd[t] = rstd_t;
    }
}

/* out[t, :] = x[t, :] * rstd[t] * w with a known rstd: selective recomputation's norm, the
 * forward kernels' expression on the rstd they stored, so the same bits as their output. */
template <typename Act>
__global__ void rmsnorm_apply_k(void *out_act, const float *rstd, const float *x, const void *w_act, int T, int D)
{
    Act *out = (Act *)out_act;
    const Act *w = (const Act *)w_act;
    ROWS_COLS(t, T, d, D) store_float(out, t * D + d, x[t * D + d] * rstd[t] * load_float(w, d));
}

/* dx[t, :] += rstd (dxh - xh mean(dxh xh)), xh = x rstd, dxh = dy w. One block per row. When
 * dx_cast is not NULL, the new dx also goes there in the type Act: the GEMMs that read the
 * residual gradient next need it in the compute type, and this saves a cast pass over it. */
template <typename Act>
__global__ void rmsnorm_bwd_k(float *dx, void *dx_cast_act, const float *dy, const float *x, const float *rstd,
                              const void *w_act, int T, int D)
{
    const Act *w = (const Act *)w_act;
    Act *dx_cast = (Act *)dx_cast_act;
    for (int t = blockIdx.x; t < T; t += gridDim.x) {
        size_t row = (size_t)t * D;
        float rstd_t = rstd[t], dot = 0.f;
        for (int d = threadIdx.x; d < D; d += blockDim.x) dot += dy[row + d] * load_float(w, d) * x[row + d] * rstd_t;
        dot = block_sum(dot) / D;
        for (int d = threadIdx.x; d < D; d += blockDim.x) {
            float xh = x[row + d] * rstd_t;
            float v = dx[row + d] + rstd_t * (dy[row + d] * load_float(w, d) - xh * dot);
            dx[row + d] = v;
            if (dx_cast) store_float(dx_cast, row + d, v);
        }
    }
}

/* dw[d] += sum_t dy[t, d] x[t, d] rstd[t]. Blocks of 32 columns x 16 row stripes: the 16 partial
 * sums of a column meet in shared memory, so no atomics and a fixed summation order. */
template <typename Grad>
__global__ void rmsnorm_dw_k(Grad *dw, const float *dy, const float *x, const float *rstd, int T, int D)
{
    __shared__ float stripe_sums[16][33];          /* 33: no shared-memory bank conflicts */
    int d = blockIdx.x * 32 + threadIdx.x;
    float sum = 0.f;
    if (d < D)
        for (int t = threadIdx.y; t < T; t += 16) sum += dy[(size_t)t * D + d] * x[(size_t)t * D + d] * rstd[t];
    stripe_sums[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && d < D) {
        for (int k = 1; k < 16; k++) sum += stripe_sums[k][threadIdx.x];
        store_float(dw, d, load_float(dw, d) + sum);
    }
}

/* RoPE, HF rotate-half: for j < hd/2, (x[j], x[j + hd/2]) rotated by angle pos * inv_freq[j].
 * Works on a whole [T, (H + 2K) hd] qkv row set: the H + K heads of q and k are rotated, the v
 * columns copied. sign = +1 is the forward rotation, -1 its inverse (= its transpose, so this
 * is also the backward). `in_buf` may equal `out_buf` (each thread owns a pair). */
template <typename In, typename Out>
__global__ void rope_k(void *out_buf, const void *in_buf, const int *positions, const float *cos_tab,
                       const float *sin_tab, int T, int n_rot_heads, int qkv_dim, int hd, float sign)
{
    Out *out = (Out *)out_buf;
    const In *in = (const In *)in_buf;
    int half = hd / 2, rot_cols = n_rot_heads * hd;
    ROWS_COLS(t, T, c, qkv_dim) {
        size_t i = t * qkv_dim + c;
        if (c >= rot_cols) { store_float(out, i, load_float(in, i)); continue; }
        int j = c % hd;
        if (j >= half) continue;                  /* the partner thread j - half does this pair */
        size_t tab = (size_t)positions[t] * half + j;
        float co = cos_tab[tab], si = sign * sin_tab[tab];
        float x1 = load_float(in, i), x2 = load_float(in, i + half);
        store_float(out, i, x1 * co - x2 * si);
        store_float(out, i + half, x2 * co + x1 * si);
    }
}

/* 8 consecutive elements as floats, and back: one 16-byte access in bf16, two in fp32. */
__device__ __forceinline__ void load8(float out[8], const float *p)
{
    pack16<float> a = load_pack(p), b = load_pack(p + 4);
    for (int k = 0; k < 4; k++) { out[k] = a.v[k]; out[4 + k] = b.v[k]; }
}
__device__ __forceinline__ void load8(float out[8], const bf16 *p)
{
    pack16<bf16> a = load_pack(p);
    for (int k = 0; k < 8; k++) out[k] = __bfloat162float(a.v[k]);
}
__device__ __forceinline__ void store8(float *p, const float v[8])
{
    pack16<float> a, b;
    for (int k = 0; k < 4; k++) { a.v[k] = v[k]; b.v[k] = v[4 + k]; }
    store_pack(p, a);
    store_pack(p + 4, b);
}
__device__ __forceinline__ void store8(bf16 *p, const float v[8])
{
    pack16<bf16> a;
    for (int k = 0; k < 8; k++) a.v[k] = __float2bfloat16(v[k]);
    store_pack(p, a);
}

/* rope_k with 16-byte accesses: a thread rotates 8 pairs (x[j0 .. j0+8), x[j0+half ..
 * j0+half+8)) of one head with 8 cos/sin entries, so no thread idles on the second half of a
 * head as in rope_k, and the v columns are copied 8 at a time when copy_v (not when rotating in
 * place: they are already there). Needs half = hd/2 a multiple of 8 and 16-byte aligned buffers
 * (op_rope checks). The same arithmetic as rope_k. */
template <typename In, typename Out>
__global__ void rope_vec_k(void *out_buf, const void *in_buf, const int *positions, const float *cos_tab,
                           const float *sin_tab, int T, int n_rot_heads, int qkv_dim, int hd, float sign, int copy_v)
{
    Out *out = (Out *)out_buf;
    const In *in = (const In *)in_buf;
    int half = hd / 2, units_per_head = half / 8, rot_units = n_rot_heads * units_per_head;
    int units = rot_units + (copy_v ? (qkv_dim - n_rot_heads * hd) / 8 : 0);
    ROWS_COLS(t, T, u, units) {
        size_t row = t * qkv_dim;
        float x1[8], x2[8];
        if (u >= rot_units) {                     /* a v chunk */
            size_t i = row + (size_t)n_rot_heads * hd + (size_t)(u - rot_units) * 8;
            load8(x1, in + i);
            store8(out + i, x1);
            continue;
        }
        int head = u / units_per_head, j0 = (u - head * units_per_head) * 8;
        size_t i = row + (size_t)head * hd + j0, tab = (size_t)positions[t] * half + j0;
        float co[8], si[8];
        load8(co, cos_tab + tab);
        load8(si, sin_tab + tab);
        load8(x1, in + i);
        load8(x2, in + i + half);
        float y1[8], y2[8];
        for (int k = 0; k < 8; k++) {
            float s = sign * si[k];
            y1[k] = x1[k] * co[k] - x2[k] * s;
            y2[k] = x2[k] * co[k] + x1[k] * s;
        }
        store8(out + i, y1);
        store8(out + i + half, y2);
    }
}

/* Causal softmax over rows of scores S [B, n, n] with row stride ld >= n (row r of each matrix
 * is query position r; matrix b starts at b n ld): P[r, c] = softmax_c(S[r, 0..r]) for c <= r,
 * 0 above the diagonal; columns n..ld-1 are padding, never touched. One block per row. */
template <typename Act>
__global__ void softmax_causal_k(void *P_act, const float *S, int n, int ld, int rows)
{
    Act *P = (Act *)P_act;
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        int r = row % n;
        const float *s = S + (size_t)row * ld;
        float mx = -INFINITY;
        for (int c = threadIdx.x; c <= r; c += blockDim.x) mx = fmaxf(mx, s[c]);
        mx = block_max(mx);
        float sum = 0.f;
        for (int c = threadIdx.x; c <= r; c += blockDim.x) sum += expf(s[c] - mx);
        sum = block_sum(sum);
        float inv = 1.f / sum;
        for (int c = threadIdx.x; c < n; c += blockDim.x)
            store_float(P, (size_t)row * ld + c, c <= r ? expf(s[c] - mx) * inv : 0.f);
    }
}

/* Softmax backward, in place: PdS holds P on entry and dS on exit (layout as softmax_causal_k),
 * dS[r, c] = P[r, c] (dP[r, c] - sum_c' P[r, c'] dP[r, c']) for c <= r, else 0. */
template <typename Act>
__global__ void softmax_causal_bwd_k(void *PdS_act, const float *dP, int n, int ld, int rows)
{
    Act *PdS = (Act *)PdS_act;
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        int r = row % n;
        size_t start = (size_t)row * ld;
        float dot = 0.f;
        for (int c = threadIdx.x; c <= r; c += blockDim.x) dot += load_float(PdS, start + c) * dP[start + c];
        dot = block_sum(dot);                     /* barrier: every read of P is done */
        for (int c = threadIdx.x; c < n; c += blockDim.x) {
            float p = c <= r ? load_float(PdS, start + c) : 0.f;
            store_float(PdS, start + c, c <= r ? p * (dP[start + c] - dot) : 0.f);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Flash attention (bf16 modes)                                                                */
/* Causal GQA attention of one sequence without the [n, n] scores: tiles of FLASH_ROWS query rows
 * and FLASH_KEYS keys live in shared memory, the products run on tensor cores (nvcuda::wmma,
 * bf16 16x16x16 fragments, fp32 accumulators), and only O (bf16) and one fp32 log-sum-exp per
 * (token, query head) reach global memory.
 *
 * Rows of a tile. One block serves one KV head kh and all the query heads of its group
 * (kh g .. kh g + g - 1, g = H / K), so each K/V tile it loads is used by every head of the group.
 * A tile's FLASH_ROWS rows are (query head, position) pairs: positions q0 .. q0 + P - 1 of heads
 * j0 .. j0 + G - 1 of the group (G P <= FLASH_ROWS; P = FLASH_ROWS / g when g <= FLASH_ROWS),
 * row r being head j0 + r / P at position q0 + r % P. Rows past the sequence or the group are
 * padding: zero inputs, fully masked, never written. The head dimension is padded to HDP (16,
 * 32, 64 or 128, the template argument) with zero columns, so any hd <= 128 works.
 *
 * Fragments. A wmma fragment's elements are spread over the warp's lanes in a layout CUDA does
 * not specify, so these kernels never ask which element x[i] is: every per-row operation (the
 * softmax, the causal mask, rescaling O by a per-row factor) works on shared memory, which the
 * fragments are stored to and loaded from (store_matrix_sync / load_matrix_sync). (The emulator's
 * mma.h stores fragments in a scrambled order to catch a kernel that assumes one.)
 *
 * Blocks are dim3(32, FLASH_WARPS): warp = threadIdx.y. Each warp owns one 16x16 block of the
 * [FLASH_ROWS, FLASH_KEYS] score tile (rt = row half, ch = key half: warp = rt + 2 ch), and the
 * columns ct = ch, ch + 2, ... (in 16s) of its row half of the output tile. Shared memory is
 * static, at most 47 KB per block at HDP = 128 (under the 48 KB static limit). */

namespace wmma = nvcuda::wmma;
#define FLASH_ROWS 32
#define FLASH_KEYS 32
#define FLASH_WARPS 4
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> frag_a;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> frag_b;     /* B as stored */
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> frag_bt;    /* B = (stored)^T */
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> frag_acc;

/* Position of row r of a query tile (see above), -1 for a padding row; *j = its head in the group. */
__device__ __forceinline__ int flash_row_pos(int r, int q0, int P, int j0, int G, int g, int n, int *j)
{
    *j = j0 + r / P;
    int t = q0 + r % P;
    return r < G * P && *j < g && t < n ? t : -1;
}

/* dst[0..8) = columns col..col+7 of a bf16 row src (zeros past hd, or everywhere when src is
 * NULL): one 16-byte load when the head dimension allows it. */
__device__ __forceinline__ void flash_chunk8(bf16 *dst, const bf16 *src, int col, int hd)
{
    if (src && hd % 8 == 0 && col < hd) {
        VECTOR_ACCESS(src + col);
        *(int4 *)dst = *(const int4 *)(src + col);   /* dst: shared memory, 16-byte aligned */
        return;
    }
    for (int e = 0; e < 8; e++) dst[e] = src && col + e < hd ? src[col + e] : __float2bfloat16(0.f);
}

/* C (+)= A B over one 16x16 output block: A rows from a [*, lda] bf16 tile, B from a [*, ldb] tile
 * (transposed when the template says so), k running over `depth` in steps of 16. */
template <typename FragB>
__device__ __forceinline__ void flash_mma(frag_acc &acc, const bf16 *A, int lda, const bf16 *B, int ldb, int depth,
                                          int b_step)
{
    frag_a a;
    FragB b;
    for (int k = 0; k < depth; k += 16) {
        wmma::load_matrix_sync(a, A + k, lda);
        wmma::load_matrix_sync(b, B + (size_t)k * b_step, ldb);
        wmma::mma_sync(acc, a, b, acc);
    }
}

/* Loads FLASH_ROWS query-tile rows of q (or of dO) into tile [FLASH_ROWS, HDP]: row r from
 * base + (first + t) * ld + h hd, where t, h are row r's position and query head. */
template <int HDP>
__device__ void flash_load_rows(bf16 *tile, const bf16 *base, int ld, int first, int hd, int kh, int q0, int P,
                                int j0, int G, int g, int n)
{
    int tid = threadIdx.y * 32 + threadIdx.x;
    for (int i = tid; i < FLASH_ROWS * HDP / 8; i += 32 * FLASH_WARPS) {
        int r = i / (HDP / 8), col = i % (HDP / 8) * 8, j;
        int t = flash_row_pos(r, q0, P, j0, G, g, n, &j);
        const bf16 *src = t >= 0 ? base + (size_t)(first + t) * ld + (size_t)(kh * g + j) * hd : NULL;
        flash_chunk8(tile + r * HDP + col, src, col, hd);
    }
}
/* Loads FLASH_KEYS rows k0.. of one KV head's keys or values (base points at the head's
 * columns of the sequence's first row) into tile [FLASH_KEYS, HDP]; rows past n are zeros. */
template <int HDP>
__device__ void flash_load_keys(bf16 *tile, const bf16 *base, int ld, int k0, int n, int hd)
{
    int tid = threadIdx.y * 32 + threadIdx.x;
    for (int i = tid; i < FLASH_KEYS * HDP / 8; i += 32 * FLASH_WARPS) {
        int r = i / (HDP / 8), col = i % (HDP / 8) * 8;
        flash_chunk8(tile + r * HDP + col, k0 + r < n ? base + (size_t)(k0 + r) * ld : NULL, col, hd);
    }
}

/* Forward, one sequence of n tokens starting at row `first`: att [T, H hd] (bf16) and lse [T, H]
 * (fp32, natural log) of its rows. Grid (n_chunks x n_qtiles, K): block x is query tile
 * x % n_qtiles of head chunk x / n_qtiles (heads j0 = chunk G ..), y the KV head.
 *
 * Online softmax: for each row the block keeps m (the largest score so far), l (the sum of
 * exp(score - m) so far) and O (the sum of exp(score - m) v so far, in fragments). A new tile of
 * keys with scores s gives m' = max(m, max s); the old sums are rescaled by alpha = exp(m - m')
 * and the tile's terms added: l' = alpha l + sum exp(s - m'), O' = alpha O + exp(s - m') V. After
 * the last tile O / l is the softmax-weighted sum, and m + log l is the row's log-sum-exp, which
 * the backward uses to recompute any probability as exp(s - lse) without a softmax. Key tiles
 * past the tile's last position are skipped (causal), and inside a tile keys after a row's
 * position are masked to -inf. */
template <int HDP>
__global__ void flash_fwd_k(bf16 *att, float *lse, const bf16 *qkv, int first, int n, int H, int K, int hd, int P,
                            int G, int n_qtiles, float scale)
{
    __shared__ __align__(32) bf16 Qs[FLASH_ROWS * HDP];
    __shared__ __align__(32) bf16 Ks[FLASH_KEYS * HDP];
    __shared__ __align__(32) bf16 Vs[FLASH_KEYS * HDP];
    __shared__ __align__(32) float S[FLASH_ROWS * FLASH_KEYS];
    __shared__ __align__(32) bf16 Ps[FLASH_ROWS * FLASH_KEYS];
    __shared__ __align__(32) float Os[FLASH_ROWS * HDP];     /* the running O of the tile's rows */
    __shared__ float row_m[FLASH_ROWS], row_l[FLASH_ROWS];
    __shared__ int row_t[FLASH_ROWS], row_h[FLASH_ROWS];
    const int NCT = HDP / 16;                         /* column tiles of O */
    int g = H / K, QKV = (H + 2 * K) * hd, kh = blockIdx.y;
    int q0 = (int)(blockIdx.x % n_qtiles) * P, j0 = (int)(blockIdx.x / n_qtiles) * G;
    int tid = threadIdx.y * 32 + threadIdx.x, warp = threadIdx.y, rt = warp & 1, ch = warp >> 1;
    int last = q0 + P < n ? q0 + P - 1 : n - 1;     /* the tile's last position: keys 0..last */

    if (tid < FLASH_ROWS) {
        int j, t = flash_row_pos(tid, q0, P, j0, G, g, n, &j);
        row_t[tid] = t; row_h[tid] = kh * g + j; row_m[tid] = -INFINITY; row_l[tid] = 0.f;
    }
    for (int i = tid; i < FLASH_ROWS * HDP; i += 32 * FLASH_WARPS) Os[i] = 0.f;
    flash_load_rows<HDP>(Qs, qkv, QKV, first, hd, kh, q0, P, j0, G, g, n);
    const bf16 *keys = qkv + (size_t)first * QKV + (size_t)(H + kh) * hd;
    const bf16 *values = qkv + (size_t)first * QKV + (size_t)(H + K + kh) * hd;

    for (int k0 = 0; k0 <= last; k0 += FLASH_KEYS) {
        __syncthreads();                              /* the previous tile's K, V, P are used up */
        flash_load_keys<HDP>(Ks, keys, QKV, k0, n, hd);
        flash_load_keys<HDP>(Vs, values, QKV, k0, n, hd);
        __syncthreads();
        /* this warp's 16x16 block of S = Q K^T */
        frag_acc s;
        wmma::fill_fragment(s, 0.f);
        flash_mma<frag_bt>(s, Qs + rt * 16 * HDP, HDP, Ks + ch * 16 * HDP, HDP, HDP, 1);
        wmma::store_matrix_sync(S + rt * 16 * FLASH_KEYS + ch * 16, s, FLASH_KEYS, wmma::mem_row_major);
        __syncthreads();
        /* online softmax over the tile: 4 consecutive lanes per row, 8 keys each; then the same
         * lanes rescale their quarter of the row's O by alpha */
        {
            int r = tid / 4, part = tid % 4, t = row_t[r];
            float v[8], mx = -INFINITY;
            for (int e = 0; e < 8; e++) {
                int key = k0 + part * 8 + e;
                v[e] = t >= 0 && key <= t ? S[r * FLASH_KEYS + part * 8 + e] * scale : -INFINITY;
                mx = fmaxf(mx, v[e]);
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            float m_old = row_m[r], m_new = fmaxf(m_old, mx), sum = 0.f;
            for (int e = 0; e < 8; e++) {
                float p = v[e] == -INFINITY ? 0.f : expf(v[e] - m_new);
                Ps[r * FLASH_KEYS + part * 8 + e] = __float2bfloat16(p);
                sum += p;
            }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            float alpha = m_new == -INFINITY ? 1.f : expf(m_old - m_new);   /* 0 on the row's first keys */
            for (int c = part; c < HDP; c += 4) Os[r * HDP + c] *= alpha;
            if (part == 0) { row_l[r] = row_l[r] * alpha + sum; row_m[r] = m_new; }
        }
        __syncthreads();
        /* O += P V for this warp's row half and column tiles ct = ch, ch + 2, ... */
        for (int ct = ch; ct < NCT; ct += 2) {
            frag_acc o;
            float *ob = Os + rt * 16 * HDP + ct * 16;
            wmma::load_matrix_sync(o, ob, HDP, wmma::mem_row_major);
            flash_mma<frag_b>(o, Ps + rt * 16 * FLASH_KEYS, FLASH_KEYS, Vs + ct * 16, HDP, FLASH_KEYS, HDP);
            wmma::store_matrix_sync(ob, o, HDP, wmma::mem_row_major);
        }
    }
    __syncthreads();
    /* att = O / l, and the row's log-sum-exp m + log l */
    int HD = H * hd;
    for (int i = tid; i < FLASH_ROWS * HDP; i += 32 * FLASH_WARPS) {
        int r = i / HDP, col = i % HDP, t = row_t[r];
        if (t >= 0 && col < hd) att[(size_t)(first + t) * HD + (size_t)row_h[r] * hd + col] = __float2bfloat16(Os[i] / row_l[r]);
    }
    if (tid < FLASH_ROWS && row_t[tid] >= 0)
        lse[(size_t)(first + row_t[tid]) * H + row_h[tid]] = row_m[tid] + logf(row_l[tid]);
}

/* Backward preprocessing over the whole batch: Dsum[t, h] = sum_e dO[t, h, e] O[t, h, e], the
 * row term of the softmax backward (dS = P (dP - Dsum), since sum_c P dP = dO . O). */
__global__ void flash_bwd_dot_k(float *Dsum, const bf16 *dout, const bf16 *out, int T, int H, int hd)
{
    GRID_LOOP(i, (size_t)T * H) {
        const bf16 *a = dout + i * hd, *b = out + i * hd;
        float s = 0.f;
        for (int e = 0; e < hd; e++) s += __bfloat162float(a[e]) * __bfloat162float(b[e]);
        Dsum[i] = s;
    }
}

/* Loads the per-row data of a query tile for the backward kernels: position, head, lse, Dsum. */
__device__ __forceinline__ void flash_row_info(int *row_t, int *row_h, float *row_lse, float *row_D, const float *lse,
                                               const float *Dsum, int first, int H, int kh, int q0, int P, int j0,
                                               int G, int g, int n)
{
    int tid = threadIdx.y * 32 + threadIdx.x;
    if (tid < FLASH_ROWS) {
        int j, t = flash_row_pos(tid, q0, P, j0, G, g, n, &j), h = kh * g + j;
        row_t[tid] = t; row_h[tid] = h;
        row_lse[tid] = t >= 0 ? lse[(size_t)(first + t) * H + h] : 0.f;
        row_D[tid] = t >= 0 ? Dsum[(size_t)(first + t) * H + h] : 0.f;
    }
}

/* dst[key, col] = scale acc for the 16x16 block at keys key0.., columns col0.. (rows past n and
 * columns past hd are not written), through the warp's scratch tile. */
__device__ __forceinline__ void flash_store_keys(float *dst, int ld, const frag_acc &acc, float scale, float *scratch,
                                                 int key0, int col0, int n, int hd)
{
    __syncwarp();
    wmma::store_matrix_sync(scratch, acc, 16, wmma::mem_row_major);
    __syncwarp();
    for (int e = threadIdx.x; e < 256; e += 32) {
        int key = key0 + e / 16, col = col0 + e % 16;
        if (key < n && col < hd) dst[(size_t)key * ld + col] = scratch[e] * scale;
    }
}

/* Backward, dK and dV of one sequence: block x owns keys k0 = x FLASH_KEYS .. + FLASH_KEYS - 1 of
 * KV head y and loops over every query tile that can see them (all heads of the group, positions
 * >= k0), so its dK, dV sums stay in its own fragments: no atomics, a fixed order, the same bits
 * on every run. Per query tile, in the transposed orientation (keys are rows):
 *   S^T = K Q^T, P^T = exp(scale S^T - lse) (the forward's probabilities, recomputed from its
 *   log-sum-exp: no softmax), dP^T = V dO^T, dS^T = P^T (dP^T - Dsum),
 *   dV += P^T dO, dK += scale dS^T Q.
 * dq dk dv are fp32 columns of dqkv [T, QKV] (written, not added). */
template <int HDP>
__global__ void flash_bwd_kv_k(float *dqkv, const bf16 *qkv, const bf16 *dout, const float *lse, const float *Dsum,
                               int first, int n, int H, int K, int hd, int P, int G, float scale)
{
    __shared__ __align__(32) bf16 Ks[FLASH_KEYS * HDP];
    __shared__ __align__(32) bf16 Vs[FLASH_KEYS * HDP];
    __shared__ __align__(32) bf16 Qs[FLASH_ROWS * HDP];
    __shared__ __align__(32) bf16 dOs[FLASH_ROWS * HDP];
    __shared__ __align__(32) float ST[FLASH_KEYS * FLASH_ROWS];
    __shared__ __align__(32) bf16 PT[FLASH_KEYS * FLASH_ROWS];
    __shared__ __align__(32) bf16 dST[FLASH_KEYS * FLASH_ROWS];
    __shared__ __align__(32) float scratch[FLASH_WARPS][16 * 16];
    __shared__ float row_lse[FLASH_ROWS], row_D[FLASH_ROWS];
    __shared__ int row_t[FLASH_ROWS], row_h[FLASH_ROWS];
    const int NCT = HDP / 16, NO = (NCT + 1) / 2;
    int g = H / K, QKV = (H + 2 * K) * hd, HD = H * hd, kh = blockIdx.y, k0 = (int)blockIdx.x * FLASH_KEYS;
    int warp = threadIdx.y, lane = threadIdx.x, kt = warp & 1, rh = warp >> 1;   /* key half; row / column half */
    const bf16 *keys = qkv + (size_t)first * QKV + (size_t)(H + kh) * hd;
    const bf16 *values = qkv + (size_t)first * QKV + (size_t)(H + K + kh) * hd;
    flash_load_keys<HDP>(Ks, keys, QKV, k0, n, hd);
    flash_load_keys<HDP>(Vs, values, QKV, k0, n, hd);
    frag_acc dK[NO], dV[NO];
    for (int i = 0; i < NO; i++) { wmma::fill_fragment(dK[i], 0.f); wmma::fill_fragment(dV[i], 0.f); }

    int n_chunks = (g + G - 1) / G, n_qtiles = (n + P - 1) / P;
    for (int chunk = 0; chunk < n_chunks; chunk++)
        for (int qt = k0 / P; qt < n_qtiles; qt++) {
            int q0 = qt * P, j0 = chunk * G;
            __syncthreads();                          /* the previous query tile is used up */
            flash_row_info(row_t, row_h, row_lse, row_D, lse, Dsum, first, H, kh, q0, P, j0, G, g, n);
            flash_load_rows<HDP>(Qs, qkv, QKV, first, hd, kh, q0, P, j0, G, g, n);
            flash_load_rows<HDP>(dOs, dout, HD, first, hd, kh, q0, P, j0, G, g, n);
            __syncthreads();
            /* this warp's 16x16 blocks of S^T = K Q^T (into ST) and dP^T = V dO^T (into scratch) */
            frag_acc s, dp;
            wmma::fill_fragment(s, 0.f);
            wmma::fill_fragment(dp, 0.f);
            flash_mma<frag_bt>(s, Ks + kt * 16 * HDP, HDP, Qs + rh * 16 * HDP, HDP, HDP, 1);
            flash_mma<frag_bt>(dp, Vs + kt * 16 * HDP, HDP, dOs + rh * 16 * HDP, HDP, HDP, 1);
            float *st = ST + kt * 16 * FLASH_ROWS + rh * 16;
            wmma::store_matrix_sync(st, s, FLASH_ROWS, wmma::mem_row_major);
            wmma::store_matrix_sync(scratch[warp], dp, 16, wmma::mem_row_major);
            __syncwarp();
            for (int e = lane; e < 256; e += 32) {
                int kr = e / 16, rc = e % 16, r = rh * 16 + rc, key = k0 + kt * 16 + kr, t = row_t[r];
                float p = t >= 0 && key <= t ? expf(st[kr * FLASH_ROWS + rc] * scale - row_lse[r]) : 0.f;
                size_t o = (size_t)(kt * 16 + kr) * FLASH_ROWS + r;
                PT[o] = __float2bfloat16(p);
                dST[o] = __float2bfloat16(p * (scratch[warp][e] - row_D[r]));
            }
            __syncthreads();                          /* P^T, dS^T complete for both row halves */
            for (int i = 0; i < NO; i++) {
                int ct = rh + 2 * i;
                if (ct >= NCT) break;
                flash_mma<frag_b>(dV[i], PT + kt * 16 * FLASH_ROWS, FLASH_ROWS, dOs + ct * 16, HDP, FLASH_ROWS, HDP);
                flash_mma<frag_b>(dK[i], dST + kt * 16 * FLASH_ROWS, FLASH_ROWS, Qs + ct * 16, HDP, FLASH_ROWS, HDP);
            }
        }
    /* write scale dK and dV for the block's keys */
    float *dkeys = dqkv + (size_t)first * QKV + HD + (size_t)kh * hd;
    float *dvalues = dqkv + (size_t)first * QKV + HD + (size_t)(K + kh) * hd;
    for (int i = 0; i < NO; i++) {
        int ct = rh + 2 * i;
        if (ct >= NCT) break;
        flash_store_keys(dkeys, QKV, dK[i], scale, scratch[warp], k0 + kt * 16, ct * 16, n, hd);
        flash_store_keys(dvalues, QKV, dV[i], 1.f, scratch[warp], k0 + kt * 16, ct * 16, n, hd);
    }
}

/* Backward, dQ of one sequence: blocks as the forward's (query tile x, KV head y); each loops
 * over the key tiles its rows see and keeps dQ in its own fragments (fp32):
 *   S = Q K^T, P = exp(scale S - lse), dP = dO V^T, dS = P (dP - Dsum), dQ += scale dS K. */
template <int HDP>
__global__ void flash_bwd_q_k(float *dqkv, const bf16 *qkv, const bf16 *dout, const float *lse, const float *Dsum,
                              int first, int n, int H, int K, int hd, int P, int G, int n_qtiles, float scale)
{
    __shared__ __align__(32) bf16 Qs[FLASH_ROWS * HDP];
    __shared__ __align__(32) bf16 dOs[FLASH_ROWS * HDP];
    __shared__ __align__(32) bf16 Ks[FLASH_KEYS * HDP];
    __shared__ __align__(32) bf16 Vs[FLASH_KEYS * HDP];
    __shared__ __align__(32) float S[FLASH_ROWS * FLASH_KEYS];
    __shared__ __align__(32) bf16 dS[FLASH_ROWS * FLASH_KEYS];
    __shared__ __align__(32) float scratch[FLASH_WARPS][16 * 16];
    __shared__ float row_lse[FLASH_ROWS], row_D[FLASH_ROWS];
    __shared__ int row_t[FLASH_ROWS], row_h[FLASH_ROWS];
    const int NCT = HDP / 16, NO = (NCT + 1) / 2;
    int g = H / K, QKV = (H + 2 * K) * hd, HD = H * hd, kh = blockIdx.y;
    int q0 = (int)(blockIdx.x % n_qtiles) * P, j0 = (int)(blockIdx.x / n_qtiles) * G;
    int warp = threadIdx.y, lane = threadIdx.x, rt = warp & 1, ch = warp >> 1;
    int last = q0 + P < n ? q0 + P - 1 : n - 1;
    flash_row_info(row_t, row_h, row_lse, row_D, lse, Dsum, first, H, kh, q0, P, j0, G, g, n);
    flash_load_rows<HDP>(Qs, qkv, QKV, first, hd, kh, q0, P, j0, G, g, n);
    flash_load_rows<HDP>(dOs, dout, HD, first, hd, kh, q0, P, j0, G, g, n);
    frag_acc dQ[NO];
    for (int i = 0; i < NO; i++) wmma::fill_fragment(dQ[i], 0.f);
    const bf16 *keys = qkv + (size_t)first * QKV + (size_t)(H + kh) * hd;
    const bf16 *values = qkv + (size_t)first * QKV + (size_t)(H + K + kh) * hd;

    for (int k0 = 0; k0 <= last; k0 += FLASH_KEYS) {
        __syncthreads();
        flash_load_keys<HDP>(Ks, keys, QKV, k0, n, hd);
        flash_load_keys<HDP>(Vs, values, QKV, k0, n, hd);
        __syncthreads();
        /* this warp's 16x16 blocks of S = Q K^T (into S) and dP = dO V^T (into scratch) */
        frag_acc s, dp;
        wmma::fill_fragment(s, 0.f);
        wmma::fill_fragment(dp, 0.f);
        flash_mma<frag_bt>(s, Qs + rt * 16 * HDP, HDP, Ks + ch * 16 * HDP, HDP, HDP, 1);
        flash_mma<frag_bt>(dp, dOs + rt * 16 * HDP, HDP, Vs + ch * 16 * HDP, HDP, HDP, 1);
        float *sb = S + rt * 16 * FLASH_KEYS + ch * 16;
        wmma::store_matrix_sync(sb, s, FLASH_KEYS, wmma::mem_row_major);
        wmma::store_matrix_sync(scratch[warp], dp, 16, wmma::mem_row_major);
        __syncwarp();
        for (int e = lane; e < 256; e += 32) {
            int rr = e / 16, kc = e % 16, r = rt * 16 + rr, key = k0 + ch * 16 + kc, t = row_t[r];
            float p = t >= 0 && key <= t ? expf(sb[rr * FLASH_KEYS + kc] * scale - row_lse[r]) : 0.f;
            dS[r * FLASH_KEYS + ch * 16 + kc] = __float2bfloat16(p * (scratch[warp][e] - row_D[r]));
        }
        __syncthreads();                              /* dS complete for both key halves */
        for (int i = 0; i < NO; i++) {
            int ct = ch + 2 * i;
            if (ct >= NCT) break;
            flash_mma<frag_b>(dQ[i], dS + rt * 16 * FLASH_KEYS, FLASH_KEYS, Ks + ct * 16, HDP, FLASH_KEYS, HDP);
        }
    }
    for (int i = 0; i < NO; i++) {
        int ct = ch + 2 * i;
        if (ct >= NCT) break;
        __syncwarp();
        wmma::store_matrix_sync(scratch[warp], dQ[i], 16, wmma::mem_row_major);
        __syncwarp();
        for (int e = lane; e < 256; e += 32) {
            int r = rt * 16 + e / 16, col = ct * 16 + e % 16, t = row_t[r];
            if (t >= 0 && col < hd) dqkv[(size_t)(first + t) * QKV + (size_t)row_h[r] * hd + col] = scratch[warp][e] * scale;
        }
    }
}

/* h[t, i] = silu(gate[t, i]) * up[t, i], with gu[t] = gate | up (I columns each). */
template <typename Act>
__global__ void swiglu_fwd_k(void *h_act, const void *gu_act, int T, int I)
{
    Act *h = (Act *)h_act;
    const Act *gu = (const Act *)gu_act;
    ROWS_COLS(t, T, i, I) {
        float gate = load_float(gu, t * 2 * I + i), up = load_float(gu, t * 2 * I + I + i);
        store_float(h, t * I + i, gate / (1.f + expf(-gate)) * up);
    }
}

/* dgate = dh up silu'(gate), dup = dh silu(gate); silu' = s (1 + gate (1 - s)), s = sigmoid(gate). */
template <typename Act>
__global__ void swiglu_bwd_k(void *dgu_act, const void *dh_act, const void *gu_act, int T, int I)
{
    Act *dgu = (Act *)dgu_act;
    const Act *dh = (const Act *)dh_act, *gu = (const Act *)gu_act;
    ROWS_COLS(t, T, i, I) {
        float gate = load_float(gu, t * 2 * I + i), up = load_float(gu, t * 2 * I + I + i);
        float dh_ti = load_float(dh, t * I + i);
        float s = 1.f / (1.f + expf(-gate));
        store_float(dgu, t * 2 * I + i, dh_ti * up * s * (1.f + gate * (1.f - s)));
        store_float(dgu, t * 2 * I + I + i, dh_ti * gate * s);
    }
}

/* swiglu_fwd_k and swiglu_bwd_k with 16-byte loads and stores: each thread takes
 * pack16<Act>::n consecutive columns. I must be a multiple of that count, so that every row of
 * gu, h, dh and dgu starts 16-byte aligned (op_swiglu_* check, else use the scalar kernels). */
template <typename Act>
__global__ void swiglu_fwd_vec_k(void *h_act, const void *gu_act, int T, int I)
{
    const int N = pack16<Act>::n;
    Act *h = (Act *)h_act;
    const Act *gu = (const Act *)gu_act;
    ROWS_COLS(t, T, p, I / N) {
        size_t i = (size_t)p * N;
        pack16<Act> gate = load_pack(gu + t * 2 * I + i), up = load_pack(gu + t * 2 * I + I + i), out;
        for (int k = 0; k < N; k++) {
            float g = load_float(gate.v, k);
            store_float(out.v, k, g / (1.f + expf(-g)) * load_float(up.v, k));
        }
        store_pack(h + t * I + i, out);
    }
}

template <typename Act>
__global__ void swiglu_bwd_vec_k(void *dgu_act, const void *dh_act, const void *gu_act, int T, int I)
{
    const int N = pack16<Act>::n;
    Act *dgu = (Act *)dgu_act;
    const Act *dh = (const Act *)dh_act, *gu = (const Act *)gu_act;
    ROWS_COLS(t, T, p, I / N) {
        size_t i = (size_t)p * N;
        pack16<Act> gate = load_pack(gu + t * 2 * I + i), up = load_pack(gu + t * 2 * I + I + i);
        pack16<Act> dh_p = load_pack(dh + t * I + i), dgate, dup;
        for (int k = 0; k < N; k++) {
            float g = load_float(gate.v, k), u = load_float(up.v, k), d = load_float(dh_p.v, k);
            float s = 1.f / (1.f + expf(-g));
            store_float(dgate.v, k, d * u * s * (1.f + g * (1.f - s)));
            store_float(dup.v, k, d * g * s);
        }
        store_pack(dgu + t * 2 * I + i, dgate);
        store_pack(dgu + t * 2 * I + I + i, dup);
    }
}

/* out[i] = in[i] in the type Out (round to nearest). */
template <typename Out>
__global__ void cast_k(void *out_buf, const float *in, size_t n)
{
    Out *out = (Out *)out_buf;
    GRID_LOOP(i, n) store_float(out, i, in[i]);
}

__global__ void f32_to_bf16_k(bf16 *out, const float *in, size_t n)
{
    GRID_LOOP(i, n) out[i] = __float2bfloat16(in[i]);
}

/* LM head, one vocabulary chunk [c0, c0 + C) of the logits [T, C] (fp32, row stride ld): merges the chunk's
 * max and sum of exponentials into the running (row_max, row_sumexp) of each row (online
 * log-sum-exp), and picks the label's logit when the label falls in this chunk. One block per
 * row. */
__global__ void lse_chunk_k(float *row_max, float *row_sumexp, float *label_logit, const float *logits,
                            const int *labels, int T, int C, int ld, int c0, int first)
{
    for (int t = blockIdx.x; t < T; t += gridDim.x) {
        const float *z = logits + (size_t)t * ld;
        float m = -INFINITY, s = 0.f;             /* this thread's running max and sum */
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            float x = z[c];
            if (x > m) { s = s * expf(m - x) + 1.f; m = x; }
            else s += expf(x - m);
        }
        float M = block_max(m);
        s = block_sum(m == -INFINITY ? 0.f : s * expf(m - M));
        if (threadIdx.x == 0) {
            if (first) { row_max[t] = M; row_sumexp[t] = s; }
            else {
                float M2 = fmaxf(row_max[t], M);
                row_sumexp[t] = row_sumexp[t] * expf(row_max[t] - M2) + s * expf(M - M2);
                row_max[t] = M2;
            }
            int y = labels[t];
            if (y >= c0 && y < c0 + C) label_logit[t] = z[y - c0];
        }
    }
}

/* logp[i] = label logit - log-sum-exp at position i - 1, 0 for a sequence's first token
 * (position i - 1 then has no label: labels[i - 1] < 0). Also stores lse[i] for backward. */
__global__ void logp_k(float *logp, float *lse, const float *row_max, const float *row_sumexp,
                       const float *label_logit, const int *labels, int T)
{
    GRID_LOOP(i, (size_t)T) {
        lse[i] = row_max[i] + logf(row_sumexp[i]);
        logp[i] = (i == 0 || labels[i - 1] < 0) ? 0.f : label_logit[i - 1] - (row_max[i - 1] + logf(row_sumexp[i - 1]));
    }
}

/* dlogits of one chunk: dz[t, c] = label_dlogp[t] (1[c0 + c == labels[t]] - exp(z[t, c] - lse[t])),
 * label_dlogp[t] = dlogp of the token that position t predicts (0 where it predicts none); z and
 * dz have row stride ld. */
template <typename Act>
__global__ void lm_bwd_chunk_k(void *dz_act, const float *z, const float *lse, const float *label_dlogp,
                               const int *labels, int T, int C, int ld, int c0)
{
    Act *dz = (Act *)dz_act;
    ROWS_COLS(t, T, c, C) {
        size_t i = t * ld + c;
        float w = label_dlogp[t];
        float dz_i = w == 0.f ? 0.f : w * ((c0 + c == labels[t] ? 1.f : 0.f) - expf(z[i] - lse[t]));
        store_float(dz, i, dz_i);
    }
}

/* Sum of squares in fp64 (the interface promises fp64 accumulation), in two passes with a fixed
 * order, so the same gradients give the same norm on every run (atomics would add the block
 * sums in whatever order the blocks finish): each block writes its partial sum, then one block
 * adds the partials. */
template <typename Grad>
__global__ void sumsq_partial_k(double *partials, const Grad *grad, size_t n)
{
    double s = 0.0;
    GRID_LOOP(i, n) { double x = load_float(grad, i); s += x * x; }
    s = block_sum(s);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}
__global__ void sum_partials_k(double *out, const double *partials, int n)
{
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += partials[i];
    s = block_sum(s);
    if (threadIdx.x == 0) out[0] = s;
}

/* AdamW on one tensor (fp32 master, moments and grads), torch.optim.AdamW's arithmetic as the
 * CPU path does it: p = p (1 - lr wd) - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps), with
 * decay = 1 - lr wd, step = lr / bc1, sq_bc2 = sqrt(bc2) formed on the host. Optionally
 * refreshes the bf16 compute copy w16 (round to nearest). Letters as in model.h's AdamW comment
 * (p, g, m, v, b1, b2); gi, mi, vi, pi are element i's values. */
__device__ __forceinline__ void adamw_f32_elem(float *p, const float *g, float *m, float *v, bf16 *w16, size_t i,
                                               float scale, float b1, float b2, float eps, float decay, float step,
                                               float sq_bc2)
{
    float gi = g[i] * scale;
    float mi = b1 * m[i] + (1.f - b1) * gi;
    float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    float pi = p[i] * decay - step * mi / (sqrtf(vi) / sq_bc2 + eps);
    m[i] = mi; v[i] = vi; p[i] = pi;
    if (w16) w16[i] = __float2bfloat16(pi);
}
__global__ void adamw_f32_k(float *p, const float *g, float *m, float *v, bf16 *w16, size_t n,
                            float scale, float b1, float b2, float eps, float decay, float step,
                            float sq_bc2)
{
    GRID_LOOP(i, n) adamw_f32_elem(p, g, m, v, w16, i, scale, b1, b2, eps, decay, step, sq_bc2);
}

/* AdamW in lean mode: bf16 weights, grads and moments, computed in fp32 and stored with
 * stochastic rounding (independent random bits for p, m, v from the seed and the element
 * index; the seed is a function of the step and the tensor, lean_round_seed). */
__device__ __forceinline__ void adamw_bf16_elem(bf16 *p, const bf16 *g, bf16 *m, bf16 *v, size_t i, size_t index,
                                                float scale, float b1, float b2, float eps, float decay, float step,
                                                float sq_bc2, uint32_t seed)
{
    float gi = __bfloat162float(g[i]) * scale;
    float mi = b1 * __bfloat162float(m[i]) + (1.f - b1) * gi;
    float vi = b2 * __bfloat162float(v[i]) + (1.f - b2) * gi * gi;
    float pi = __bfloat162float(p[i]) * decay - step * mi / (sqrtf(vi) / sq_bc2 + eps);
    p[i] = bf16_round_stochastic(pi, hash_index(seed * 3u + 0u, index));
    m[i] = bf16_round_stochastic(mi, hash_index(seed * 3u + 1u, index));
    v[i] = bf16_round_stochastic(vi, hash_index(seed * 3u + 2u, index));
}
__global__ void adamw_bf16_k(bf16 *p, const bf16 *g, bf16 *m, bf16 *v, size_t n, float scale,
                             float b1, float b2, float eps, float decay, float step, float sq_bc2,
                             uint32_t seed)
{
    GRID_LOOP(i, n) adamw_bf16_elem(p, g, m, v, i, i, scale, b1, b2, eps, decay, step, sq_bc2, seed);
}

/* Multi-tensor AdamW: one launch over the flat buffers of every tensor, with the per-tensor
 * parts (weight decay, lean mode's rounding seed, the element's index within its tensor) from a
 * device table sorted by offset. Each thread walks the table forward as its grid-stride index
 * grows; elements outside every tensor (none in llama_layout) are left alone. Element by element
 * the per-tensor kernels above (adamw_f32_k, adamw_bf16_k): the same bits (test_kernels). */
typedef struct {
    size_t offset, numel;   /* elements, in the flat layout */
    int decay;              /* 1: weight decay applies (2-D tensors) */
} adamw_tensor;

/* Tensor t's slot for flat index i, from t on (the table sorted by offset); n_tab when past the
 * last. */
__device__ __forceinline__ int adamw_find(const adamw_tensor *tab, int n_tab, int t, size_t i)
{
    while (t < n_tab && i >= tab[t].offset + tab[t].numel) t++;
    return t;
}

/* decay_2d / decay_1d: (1 - lr wd) for the decayed tensors and (1 - lr 0) for the others, as the
 * per-tensor launches formed them. */
__global__ void adamw_multi_f32_k(float *p, const float *g, float *m, float *v, bf16 *w16, const adamw_tensor *tab,
                                  int n_tab, size_t n, float scale, float b1, float b2, float eps, float decay_2d,
                                  float decay_1d, float step, float sq_bc2)
{
    int t = 0;
    GRID_LOOP(i, n) {
        t = adamw_find(tab, n_tab, t, i);
        if (t == n_tab) break;
        if (i < tab[t].offset) continue;
        adamw_f32_elem(p, g, m, v, w16, i, scale, b1, b2, eps, tab[t].decay ? decay_2d : decay_1d, step, sq_bc2);
    }
}

/* Lean mode: tensor t's seed is seed0 + t, i.e. lean_round_seed(step, t) for seed0 =
 * lean_round_seed(step, 0) (the seed is linear in t). */
__global__ void adamw_multi_bf16_k(bf16 *p, const bf16 *g, bf16 *m, bf16 *v, const adamw_tensor *tab, int n_tab,
                                   size_t n, float scale, float b1, float b2, float eps, float decay_2d,
                                   float decay_1d, float step, float sq_bc2, uint32_t seed0)
{
    int t = 0;
    GRID_LOOP(i, n) {
        t = adamw_find(tab, n_tab, t, i);
        if (t == n_tab) break;
        if (i < tab[t].offset) continue;
        adamw_bf16_elem(p, g, m, v, i, i - tab[t].offset, scale, b1, b2, eps, tab[t].decay ? decay_2d : decay_1d,
                        step, sq_bc2, seed0 + (uint32_t)t);
    }
}

/* Device-side random init: normal(0, std) by Box-Muller from two hashed uniforms. */
template <typename Param>
__global__ void init_normal_k(Param *p, size_t n, float std, uint32_t seed)
{
    GRID_LOOP(i, n) {
        float u1 = (hash_index(seed, 2 * i) + 1.f) * 2.3283064e-10f;   /* * 2^-32: (0, 1] */
        float u2 = hash_index(seed, 2 * i + 1) * 2.3283064e-10f;
        store_float(p, i, std * sqrtf(-2.f * logf(u1)) * cospif(2.f * u2));
    }
}
/* p[i] = val (norm weights start at 1). */
template <typename Param>
__global__ void fill_k(Param *p, size_t n, float val)
{
    GRID_LOOP(i, n) store_float(p, i, val);
}

/* ------------------------------------------------------------------------------------------ */
/* The backend state                                                                           */
/* Shapes below use model.h's letters plus QKV = (H + 2K) hd and HD = H hd; "act" means the
 * compute type (fp32, or bf16 with opts.bf16). Buffers are sized for max_T tokens; a batch
 * of T <= max_T tokens uses their first T rows. */

/* What one layer's forward keeps for its backward (one set per layer, or one shared set that
 * backward refills by recomputation). Selective recomputation keeps the tensors marked "kept"
 * per layer and shares one copy of the "cheap" ones, which backward recomputes from the kept
 * (recompute_cheap); a tensor added here is kept unless an elementwise pass rebuilds it. */
typedef struct {
    void *xn1;     /* cheap: [max_T, D] act: input_layernorm output (q/k/v projections' input) */
    float *rstd1;  /* kept: [max_T] 1 / rms of each row of res[l], for the norm's backward */
    void *qkv;     /* kept: [max_T, QKV] act: q and k after RoPE, v */
    void *att;     /* kept: [max_T, HD] act: attention output (o_proj input) */
    float *att_lse; /* kept: [max_T, H] log-sum-exp of each attention row (flash attention only) */
    float *xmid;   /* kept: [max_T, D] residual stream after attention, fp32 */
    void *xn2;     /* cheap: [max_T, D] act: post_attention_layernorm output */
    float *rstd2;  /* kept: [max_T] 1 / rms of each row of xmid */
    void *gu;      /* kept: [max_T, 2I] act: gate | up, the fused gate_proj and up_proj outputs */
    void *h;       /* cheap: [max_T, I] act: silu(gate) * up (down_proj input) */
} layer_acts;

/* Where one layer's tensors start in the flat parameter layout, in elements (llama_layout
 * order). q, k, v follow each other, and so do gate, up: each pair of offsets below starts a
 * fused [rows, D] matrix. */
typedef struct {
    size_t input_layernorm;          /* [D] */
    size_t qkv_proj;                 /* [QKV, D]: q_proj, k_proj, v_proj */
    size_t o_proj;                   /* [D, HD] */
    size_t post_attention_layernorm; /* [D] */
    size_t gate_up_proj;             /* [2I, D]: gate_proj, up_proj */
    size_t down_proj;                /* [D, I] */
} layer_offsets;

/* The categories of the time split (llama_cuda_time_split); PROF_IDLE is the host's time
 * between backend calls, not reported. */
enum { PROF_GEMM, PROF_ATTENTION, PROF_ELEMENTWISE, PROF_LM_HEAD, PROF_OPTIMIZER, PROF_IDLE };
#define PROF_MARKS 4096

typedef struct cuda_ctx {
    llama_backend *backend;  /* the interface this implements; its err buffer gets our messages */
    llama_config cfg;
    int L, D, I, H, K, hd, V;    /* model.h's shape letters, from cfg */
    int QKV;                 /* (H + 2K) hd: columns of the fused q/k/v projection */
    int HD;                  /* H hd: columns of the attention output */
    int q_per_kv;            /* H / K: query heads that share one KV head (GQA group) */
    int device;              /* CUDA device index; set current at each entry point */
    int bf16_compute;        /* activations and compute weights are bf16 (opts.bf16) */
    int lean;                /* master weights, grads and moments are bf16 too (opts.lean_optimizer) */
    int recompute;           /* LLAMA_RECOMPUTE_*: 0 none; 1 keep only res[l], backward reruns each
                                layer's forward; 2 selective (see the header comment) */
    int max_T;               /* tokens the buffers are planned for (opts.max_tokens) */
    int max_seq;             /* longest sequence, <= max_T: sizes the attention scores
                                (opts.max_seq_tokens, or max_T when that is 0) */
    int flash_hdp;           /* flash attention's padded head dimension (16, 32, 64, 128); 0:
                                attention through cuBLAS and the scores scratch (fp32 mode,
                                hd > 128, or LLAMA_CUDA_ATTENTION=cublas) */
    size_t act_size;         /* bytes per activation / compute-weight element: 4 or 2 */
    size_t n_params;
    int n_tensors;
    llama_tensor_info *tensors;      /* [n_tensors] the llama_layout table */
    layer_offsets *layer_offs;       /* [L] */
    size_t off_embed, off_norm, off_lm;   /* element offsets; off_lm == off_embed when tied */
    int lm_chunk;            /* vocabulary columns per LM-head chunk: bounds the logits' memory */
    int lm_ld;               /* row stride of the logits, lm_chunk padded (padded_ld) */
    cublasHandle_t cublas;
    void *cublas_ws;         /* [cublas_ws_size] bytes: cuBLAS workspace, allocated with the rest */
    size_t cublas_ws_size;   /*   so that no GEMM allocates memory mid-step */

    /* parameters and optimizer, flat in llama_layout order */
    void *master;            /* [n_params] fp32 (bf16 in lean mode): what AdamW updates */
    void *weights;           /* [n_params] act: what forward reads (== master unless bf16 non-lean) */
    void *grad;              /* [n_params] fp32 (bf16 in lean mode) */
    void *adam_m, *adam_v;   /* [n_params] each, Adam moments, fp32 (bf16 in lean mode) */

    /* activations */
    float *res;              /* [L + 1, max_T, D] residual stream at each layer input; res[L] final */
    layer_acts *acts;        /* [n_acts] */
    int n_acts;              /* L, or 1 with whole-layer recompute; in selective mode the L sets
                                share acts[0]'s cheap tensors (xn1, xn2, h) */
    void *xf;                /* [max_T, D] act: final norm output (LM head input) */
    float *rstd_final;       /* [max_T] 1 / rms of each row of res[L] */

    /* workspace: reused by every layer */
    float *dres;             /* [max_T, D] gradient of the residual stream */
    float *dxn;              /* [max_T, D] gradient of a norm output; in layer_fwd, o = att Wo^T */
    void *dres_cast;         /* [max_T, D] act: dres for the GEMMs, written by each norm backward
                                beside dres (unused in fp32) */
    void *datt;              /* [max_T, HD] act */
    void *dh;                /* [max_T, I] act */
    void *dproj;             /* [max_T, max(2I, QKV)] act: gradient of a fused projection's
                                output: dgu, then dqkv */
    float *dqkv_f32;         /* [max_T, QKV] fp32: dq, dk, dv before the RoPE backward */
    float *scores;           /* [K, max_seq, padded_ld(max_seq)] fp32 attention scores S, then dP;
                                a sequence of n tokens uses [K, n, padded_ld(n)] (cuBLAS
                                attention only) */
    void *probs;             /* [K, max_seq, padded_ld(max_seq)] act: probabilities P, then dS */
    float *att_dsum;         /* [max_T, H] flash attention backward's rowsum(dO * O) */
    float *logits;           /* [max_T, lm_ld] one vocabulary chunk's logits */
    void *dlogits;           /* [max_T, lm_ld] act */
    float *dxf;              /* [max_T, D] gradient of xf */
    float *row_max, *row_sumexp;   /* [max_T] each: running log-sum-exp over the chunks */
    float *label_logit;      /* [max_T] the logit of the token position t predicts */
    float *lse;              /* [max_T] log-sum-exp of each row's logits, for backward */
    float *logp;             /* [max_T] forward's output (see llama_batch) */
    float *label_dlogp;      /* [max_T] dlogp of the token position t predicts, 0 where none */
    int *batch_ints;         /* [6 max_T + 1] one allocation for the four arrays below, so that a
                                forward uploads its batch in one copy (host_batch_ints) */
    int *tokens;             /* [max_T] the batch's token ids */
    int *positions;          /* [max_T] position of each token within its sequence (RoPE) */
    int *labels;             /* [max_T] the token position t predicts, -1 at a sequence's end */
    int *emb_groups;         /* [3 max_T + 1] the batch's positions grouped by token for the
                                embedding backward: distinct [max_T], first [max_T + 1], where
                                [max_T] (see embed_bwd_k; host_emb_groups is the host copy) */
    float *rope_cos, *rope_sin;    /* [max_T, hd/2] each, by position and frequency */
    double *sumsq;           /* [1 + MAX_ELEM_BLOCKS] the gradient norm's sum of squares, then
                                the per-block partial sums it adds up */
    adamw_tensor *adamw_tab; /* [n_tensors] the multi-tensor AdamW's table (upload_adamw_table) */

    /* the last forward's batch, on the host: backward and attention's per-sequence loops */
    int T, n_seq;
    int have_forward;        /* backward refuses to run without a forward on this batch */
    int *host_seq_start;     /* [max_T + 1] */
    int *host_batch_ints;    /* [6 max_T + 1] host staging of batch_ints, the same layout */
    int *host_labels;        /* [max_T] inside host_batch_ints */
    float *host_label_dlogp; /* [max_T] */
    int *host_emb_groups;    /* [3 max_T + 1] as emb_groups, inside host_batch_ints */
    int n_distinct;          /* distinct tokens of the last forward's batch */
    int failed;              /* a CUDA or cuBLAS call failed: the state is unknown, so every later
                                call refuses with that first failure (kept in `failure`) */
    char failure[sizeof ((llama_backend *)0)->err];

    /* optional time split by category (opts.profile): CUDA events mark where each category of
       work starts on the stream; the time to the next mark is that category's */
    int profile;
    int n_marks;
    int prof_region;         /* the category of work outside GEMMs at this point of the step */
    cudaEvent_t *prof_events;    /* [PROF_MARKS] */
    int *prof_cat;           /* [PROF_MARKS] category of the work after each mark */
    double prof_ms[PROF_IDLE + 1];   /* milliseconds per category since the last reset */
} cuda_ctx;

static cuda_ctx *ctx_of(llama_backend *b) { return (cuda_ctx *)b->impl; }

/* Backend calls report a failure in the backend's err buffer, where llama_backend promises it
 * after a -1. */
static void ctx_error(cuda_ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->backend->err, sizeof c->backend->err, fmt, ap);
    va_end(ap);
}

/* A CUDA or cuBLAS failure leaves a step half done: the backend keeps the message and refuses
 * every later call with it, so the caller sees the CUDA error itself, not its consequences (a
 * NaN gradient norm, a wrong loss), whichever call it makes next. */
static void ctx_failed(cuda_ctx *c)
{
    if (!c->failed) memcpy(c->failure, c->backend->err, sizeof c->failure);
    c->failed = 1;
}
/* The entry points' first check: 0, or -1 with the earlier failure in err. */
static int ctx_refuse_if_failed(cuda_ctx *c)
{
    if (!c->failed) return 0;
    ctx_error(c, "cuda backend stopped after an earlier error: %s", c->failure);
    return -1;
}

/* CUDA_CHECK / CUBLAS_CHECK check one CUDA / cuBLAS call in a function that has the context
 * `c` in scope and returns int: a failure names the line, the call and a hint, marks the
 * backend failed and returns -1. */
#define CUDA_CHECK(call)                                                                      \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        if (e_ != cudaSuccess) {                                                              \
            ctx_error(c, "kernels.cu:%d: %s failed: %s (hint: %s)", __LINE__, #call,          \
                      cudaGetErrorString(e_), cuda_hint(e_));                                 \
            ctx_failed(c);                                                                    \
            return -1;                                                                        \
        }                                                                                     \
    } while (0)
#define CUBLAS_CHECK(call)                                                                    \
    do {                                                                                      \
        cublasStatus_t s_ = (call);                                                           \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                    \
            ctx_error(c, "kernels.cu:%d: %s failed: %s (hint: check the shapes; "             \
                      "an ALLOC_FAILED means GPU memory ran out)", __LINE__, #call,           \
                      cublas_name(s_));                                                       \
            ctx_failed(c);                                                                    \
            return -1;                                                                        \
        }                                                                                     \
    } while (0)
/* After each kernel launch: catches bad launch configurations at once (and, since launches are
 * asynchronous, faults of earlier kernels at the next synchronising call). */
#define CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

/* Addresses of element `off` of a compute-type buffer (c->weights, activations) and of the
 * gradient buffer: the two element sizes differ in bf16 non-lean mode (bf16 weights, fp32
 * grads), so offsets from the layout cannot be shared as pointers. */
#define ACT_AT(c, buf, off) ((void *)((char *)(buf) + (size_t)(off) * (c)->act_size))
#define GRAD_AT(c, off) ((void *)((char *)(c)->grad + (size_t)(off) * grad_size(c)))
static size_t grad_size(const cuda_ctx *c) { return c->lean ? 2 : 4; }   /* bytes per grad or moment */
static void *weight_at(const cuda_ctx *c, size_t off) { return ACT_AT(c, c->weights, off); }

/* Kernel launch shapes: elementwise work gets enough blocks to fill any GPU, capped so the
 * grid-stride loops do the rest; row kernels get one block per row up to 65535. */
static int elem_blocks(size_t n)
{
    size_t blocks = (n + 255) / 256;
    return (int)(blocks < 1 ? 1 : blocks > MAX_ELEM_BLOCKS ? MAX_ELEM_BLOCKS : blocks);
}
static int row_blocks(size_t rows) { return (int)(rows < 1 ? 1 : rows > MAX_ROW_BLOCKS ? MAX_ROW_BLOCKS : rows); }
/* Grid for ROWS_COLS kernels over [rows, cols] with 256-thread blocks. */
static dim3 rows_cols_grid(size_t rows, int cols)
{
    size_t bx = ((size_t)cols + 255) / 256;
    return dim3((unsigned)(bx < 1 ? 1 : bx > MAX_ELEM_BLOCKS ? MAX_ELEM_BLOCKS : bx), (unsigned)row_blocks(rows));
}

/* The row stride of a matrix of n columns that the GEMMs read or write: a multiple of 8
 * elements, so that every row of a bf16 (or fp32) matrix starts 16-byte aligned. cuBLAS's tensor
 * core kernels want that; with an odd sequence length (real data) they would fall back to slow
 * paths. */
static int padded_ld(int n) { return (n + 7) / 8 * 8; }

/* The time split (opts.profile): prof_mark records where work of category `cat` starts on the
 * stream. Marks are resolved into milliseconds (prof_collect) when the pool is full, and when
 * asked (llama_cuda_time_split). Without profiling these do nothing. */
static void prof_collect(cuda_ctx *c)
{
    if (!c->profile || c->n_marks == 0) return;
    cudaEventSynchronize(c->prof_events[c->n_marks - 1]);
    for (int i = 0; i + 1 < c->n_marks; i++) {
        float ms = 0.f;
        if (cudaEventElapsedTime(&ms, c->prof_events[i], c->prof_events[i + 1]) == cudaSuccess)
            c->prof_ms[c->prof_cat[i]] += ms;
    }
    cudaEvent_t last = c->prof_events[c->n_marks - 1];   /* stays the start of what follows */
    c->prof_events[c->n_marks - 1] = c->prof_events[0];
    c->prof_events[0] = last;
    c->prof_cat[0] = c->prof_cat[c->n_marks - 1];
    c->n_marks = 1;
}
static void prof_mark(cuda_ctx *c, int cat)
{
    if (!c->profile) return;
    if (c->n_marks == PROF_MARKS) prof_collect(c);
    cudaEventRecord(c->prof_events[c->n_marks], 0);
    c->prof_cat[c->n_marks++] = cat;
}
/* Work outside GEMMs from here on is `cat` (GEMMs of the layers count as PROF_GEMM, see gemm). */
static void prof_region(cuda_ctx *c, int cat)
{
    c->prof_region = cat;
    prof_mark(c, cat);
}

/* Launches the instantiation of `kern` for the compute type: kern<bf16> or kern<float>. */
#define LAUNCH_ACT(c, kern, grid, block, ...)                                   \
    do {                                                                        \
        if ((c)->bf16_compute) LAUNCH((grid), (block), kern<bf16>)(__VA_ARGS__); \
        else LAUNCH((grid), (block), kern<float>)(__VA_ARGS__);                 \
    } while (0)

/* ------------------------------------------------------------------------------------------ */
/* Operations (host side): each launches one kernel or GEMM and checks it                     */
/* They take device pointers and shapes, so the layer code below reads as the model's formulas;
 * each returns 0, or -1 with the backend's err set. */

/* Row-major strided-batched GEMM (BLAS argument names): C[m, n] = alpha op(A)[m, k] op(B)[k, n]
 * + beta C, op transposing when tA / tB, with A and B in the compute type and C in c_type (fp32
 * or the compute type); lda/ldb/ldc are row strides, sA/sB/sC the strides between the `batch`
 * matrices.
 * cuBLAS is column-major, where a row-major matrix is its own transpose, so we ask it for
 * C^T = op(B)^T op(A)^T. fp32 mode uses the pedantic fp32 compute type: no TF32. */
static int gemm(cuda_ctx *c, int tA, int tB, int m, int n, int k, float alpha,
                const void *A, int lda, long long sA, const void *B, int ldb, long long sB,
                float beta, void *C, cudaDataType_t c_type, int ldc, long long sC, int batch)
{
    cudaDataType_t ab_type = c->bf16_compute ? CUDA_R_16BF : CUDA_R_32F;
    cublasComputeType_t compute_type = c->bf16_compute ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_PEDANTIC;
    int layer_gemm = c->prof_region == PROF_ELEMENTWISE;   /* a layer's projection, not attention's */
    if (layer_gemm) prof_mark(c, PROF_GEMM);
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(c->cublas, tB ? CUBLAS_OP_T : CUBLAS_OP_N, tA ? CUBLAS_OP_T : CUBLAS_OP_N,
                                            n, m, k, &alpha, B, ab_type, ldb, sB, A, ab_type, lda, sA, &beta, C, c_type,
                                            ldc, sC, batch, compute_type, CUBLAS_GEMM_DEFAULT));
    if (layer_gemm) prof_mark(c, PROF_ELEMENTWISE);
    return 0;
}
static cudaDataType_t act_type(const cuda_ctx *c) { return c->bf16_compute ? CUDA_R_16BF : CUDA_R_32F; }
static cudaDataType_t grad_type(const cuda_ctx *c) { return c->lean ? CUDA_R_16BF : CUDA_R_32F; }

/* Linear layer y[T, out] = x[T, in] @ W[out, in]^T (+ beta y), y in type y_type. */
static int linear_fwd(cuda_ctx *c, void *y, cudaDataType_t y_type, float beta, const void *x,
                      const void *W, int T, int in, int out)
{
    return gemm(c, 0, 1, T, out, in, 1.f, x, in, 0, W, in, 0, beta, y, y_type, out, 0, 1);
}
/* Its backward: dx[T, in] (= or +=, by beta_x) dy[T, out] @ W, and dW[out, in] += dy^T @ x. */
static int linear_bwd(cuda_ctx *c, void *dx, cudaDataType_t dx_type, float beta_x, void *dW,
                      const void *dy, const void *x, const void *W, int T, int in, int out)
{
    if (gemm(c, 0, 0, T, in, out, 1.f, dy, out, 0, W, in, 0, beta_x, dx, dx_type, in, 0, 1)) return -1;
    return gemm(c, 1, 0, out, in, T, 1.f, dy, out, 0, x, in, 0, 1.f, dW, grad_type(c), in, 0, 1);
}

/* out = rmsnorm(x) * w, rstd kept for the backward. */
static int op_rmsnorm_fwd(cuda_ctx *c, void *out, float *rstd, const float *x, const void *w, int T, int D)
{
    LAUNCH_ACT(c, rmsnorm_fwd_k, row_blocks(T), 256, out, rstd, x, w, T, D, c->cfg.rms_norm_eps);
    CHECK_LAUNCH();
    return 0;
}

/* out = x * rstd * w with the rstd a forward stored (selective recomputation). */
static int op_rmsnorm_apply(cuda_ctx *c, void *out, const float *rstd, const float *x, const void *w, int T, int D)
{
    LAUNCH_ACT(c, rmsnorm_apply_k, rows_cols_grid(T, D), 256, out, rstd, x, w, T, D);
    CHECK_LAUNCH();
    return 0;
}

/* sum = x + y (and sum_copy = the same when not NULL), out = rmsnorm(sum) * w: the residual add
 * fused with the norm that follows it (add_rmsnorm_fwd_k). */
static int op_add_rmsnorm_fwd(cuda_ctx *c, float *sum, float *sum_copy, void *out, float *rstd, const float *x,
                              const float *y, const void *w, int T, int D)
{
    LAUNCH_ACT(c, add_rmsnorm_fwd_k, row_blocks(T), 256, sum, sum_copy, out, rstd, x, y, w, T, D, c->cfg.rms_norm_eps);
    CHECK_LAUNCH();
    return 0;
}

/* Can a kernel over rows of `cols` compute-type elements use 16-byte vectors? Every row must
 * start 16-byte aligned: cols a multiple of the pack and each buffer aligned (NULL is skipped). */
static int vector_fits(const cuda_ctx *c, int cols, const void *a, const void *b, const void *d)
{
    int pack = c->bf16_compute ? pack16<bf16>::n : pack16<float>::n;
    return cols % pack == 0 && (uintptr_t)a % 16 == 0 && (uintptr_t)b % 16 == 0 && (uintptr_t)d % 16 == 0;
}

/* h = silu(gate) * up over gu = gate | up [T, 2I]; vectorised when the shape allows. */
static int op_swiglu_fwd(cuda_ctx *c, void *h, const void *gu, int T, int I)
{
    if (vector_fits(c, I, h, gu, NULL))
        LAUNCH_ACT(c, swiglu_fwd_vec_k, rows_cols_grid(T, I / (c->bf16_compute ? pack16<bf16>::n : pack16<float>::n)),
                   256, h, gu, T, I);
    else
        LAUNCH_ACT(c, swiglu_fwd_k, rows_cols_grid(T, I), 256, h, gu, T, I);
    CHECK_LAUNCH();
    return 0;
}

/* dgu = d(gate | up) of h = silu(gate) * up given dh; vectorised when the shape allows. */
static int op_swiglu_bwd(cuda_ctx *c, void *dgu, const void *dh, const void *gu, int T, int I)
{
    if (vector_fits(c, I, dgu, dh, gu))
        LAUNCH_ACT(c, swiglu_bwd_vec_k, rows_cols_grid(T, I / (c->bf16_compute ? pack16<bf16>::n : pack16<float>::n)),
                   256, dgu, dh, gu, T, I);
    else
        LAUNCH_ACT(c, swiglu_bwd_k, rows_cols_grid(T, I), 256, dgu, dh, gu, T, I);
    CHECK_LAUNCH();
    return 0;
}

/* dx += d/dx, dw += d/dw of out = rmsnorm(x) * w given dy; the new dx also into dx_cast (compute
 * type) when not NULL. */
static int op_rmsnorm_bwd(cuda_ctx *c, float *dx, void *dx_cast, void *dw, const float *dy, const float *x,
                          const float *rstd, const void *w, int T, int D)
{
    dim3 dw_block(32, 16), dw_grid((D + 31) / 32);   /* rmsnorm_dw_k's 32 columns x 16 stripes */
    if (c->lean) LAUNCH(dw_grid, dw_block, rmsnorm_dw_k<bf16>)((bf16 *)dw, dy, x, rstd, T, D);
    else LAUNCH(dw_grid, dw_block, rmsnorm_dw_k<float>)((float *)dw, dy, x, rstd, T, D);
    CHECK_LAUNCH();
    LAUNCH_ACT(c, rmsnorm_bwd_k, row_blocks(T), 256, dx, dx_cast, dy, x, rstd, w, T, D);
    CHECK_LAUNCH();
    return 0;
}

/* Causal GQA attention over the packed batch (see the header comment): sequence s is rows
 * seq_start[s] .. seq_start[s + 1] - 1. qkv [T, QKV] act (q, k after RoPE); att [T, HD] act.
 * In a sequence of n tokens, the GEMMs' batch runs over the K KV heads; query head kh
 * q_per_kv + j is KV head kh's j-th, so one GEMM per j covers every query head. The scores of
 * a sequence are [K, n, ld] with ld = padded_ld(n) (aligned rows whatever n is). */
static int attention_fwd_cublas(cuda_ctx *c, void *att, const void *qkv, const int *seq_start, int n_seq)
{
    int K = c->K, q_per_kv = c->q_per_kv, hd = c->hd, QKV = c->QKV, HD = c->HD;
    float scale = 1.f / sqrtf((float)hd);
    for (int s = 0; s < n_seq; s++) {
        int first = seq_start[s], n = seq_start[s + 1] - seq_start[s], ld = padded_ld(n);
        if (n <= 0) continue;
        long long score_stride = (long long)n * ld;   /* between the K score matrices */
        long long q_stride = (long long)q_per_kv * hd;   /* between KV groups' j-th query heads */
        const void *keys = ACT_AT(c, qkv, (size_t)first * QKV + HD);
        const void *values = ACT_AT(c, qkv, (size_t)first * QKV + HD + (size_t)K * hd);
        for (int j = 0; j < q_per_kv; j++) {
            /* S[kh] = scale Q_j[kh] K[kh]^T */
            if (gemm(c, 0, 1, n, n, hd, scale, ACT_AT(c, qkv, (size_t)first * QKV + (size_t)j * hd), QKV, q_stride,
                     keys, QKV, hd, 0.f, c->scores, CUDA_R_32F, ld, score_stride, K)) return -1;
            LAUNCH_ACT(c, softmax_causal_k, row_blocks((size_t)K * n), 256, c->probs, c->scores, n, ld, K * n);
            CHECK_LAUNCH();
            /* O_j[kh] = P[kh] V[kh] */
            if (gemm(c, 0, 0, n, hd, n, 1.f, c->probs, ld, score_stride, values, QKV, hd,
                     0.f, ACT_AT(c, att, (size_t)first * HD + (size_t)j * hd), act_type(c), HD, q_stride, K)) return -1;
        }
    }
    return 0;
}

/* Attention backward: datt [T, HD] act -> dqkv_f32 [T, QKV] fp32 (dq, dk, dv; written, not
 * added). Recomputes each P from q and k rather than keeping [K, n, n] per query head. */
static int attention_bwd_cublas(cuda_ctx *c, float *dqkv_f32, const void *datt, const void *qkv, const int *seq_start,
                                int n_seq)
{
    int K = c->K, q_per_kv = c->q_per_kv, hd = c->hd, QKV = c->QKV, HD = c->HD;
    float scale = 1.f / sqrtf((float)hd);
    for (int s = 0; s < n_seq; s++) {
        int first = seq_start[s], n = seq_start[s + 1] - seq_start[s], ld = padded_ld(n);
        if (n <= 0) continue;
        long long score_stride = (long long)n * ld;
        long long q_stride = (long long)q_per_kv * hd;
        const void *keys = ACT_AT(c, qkv, (size_t)first * QKV + HD);
        const void *values = ACT_AT(c, qkv, (size_t)first * QKV + HD + (size_t)K * hd);
        float *dkeys = dqkv_f32 + (size_t)first * QKV + HD;
        float *dvalues = dqkv_f32 + (size_t)first * QKV + HD + (size_t)K * hd;
        for (int j = 0; j < q_per_kv; j++) {
            const void *queries_j = ACT_AT(c, qkv, (size_t)first * QKV + (size_t)j * hd);
            const void *dout_j = ACT_AT(c, datt, (size_t)first * HD + (size_t)j * hd);
            float *dqueries_j = dqkv_f32 + (size_t)first * QKV + (size_t)j * hd;
            float beta_kv = j ? 1.f : 0.f;        /* dK, dV sum over a group's query heads */
            /* recompute P */
            if (gemm(c, 0, 1, n, n, hd, scale, queries_j, QKV, q_stride, keys, QKV, hd, 0.f, c->scores, CUDA_R_32F, ld,
                     score_stride, K)) return -1;
            LAUNCH_ACT(c, softmax_causal_k, row_blocks((size_t)K * n), 256, c->probs, c->scores, n, ld, K * n);
            CHECK_LAUNCH();
            /* dV[kh] += P^T dO_j */
            if (gemm(c, 1, 0, n, hd, n, 1.f, c->probs, ld, score_stride, dout_j, HD, q_stride, beta_kv, dvalues,
                     CUDA_R_32F, QKV, hd, K)) return -1;
            /* dP = dO_j V^T (into scores) */
            if (gemm(c, 0, 1, n, n, hd, 1.f, dout_j, HD, q_stride, values, QKV, hd, 0.f, c->scores, CUDA_R_32F, ld,
                     score_stride, K)) return -1;
            LAUNCH_ACT(c, softmax_causal_bwd_k, row_blocks((size_t)K * n), 256, c->probs, c->scores, n, ld, K * n);
            CHECK_LAUNCH();
            /* dQ_j = scale dS K;  dK += scale dS^T Q_j */
            if (gemm(c, 0, 0, n, hd, n, scale, c->probs, ld, score_stride, keys, QKV, hd, 0.f, dqueries_j, CUDA_R_32F,
                     QKV, q_stride, K)) return -1;
            if (gemm(c, 1, 0, n, hd, n, scale, c->probs, ld, score_stride, queries_j, QKV, q_stride, beta_kv, dkeys,
                     CUDA_R_32F, QKV, hd, K)) return -1;
        }
    }
    return 0;
}

/* Flash attention's launch shape for a KV group of g query heads (see flash_fwd_k): a tile's
 * FLASH_ROWS rows are P positions of G heads; the group needs n_chunks tiles of heads. */
static void flash_tiles(int g, int *P, int *G, int *n_chunks)
{
    *G = g <= FLASH_ROWS ? g : FLASH_ROWS;
    *P = FLASH_ROWS / *G;
    *n_chunks = (g + *G - 1) / *G;
}

/* The flash kernel for the padded head dimension hdp (16, 32, 64 or 128). */
#define FLASH_LAUNCH(hdp, grid, kern, ...)                                                         \
    do {                                                                                           \
        dim3 block_(32, FLASH_WARPS);                                                              \
        switch (hdp) {                                                                             \
        case 16: LAUNCH((grid), block_, kern<16>)(__VA_ARGS__); break;                             \
        case 32: LAUNCH((grid), block_, kern<32>)(__VA_ARGS__); break;                             \
        case 64: LAUNCH((grid), block_, kern<64>)(__VA_ARGS__); break;                             \
        default: LAUNCH((grid), block_, kern<128>)(__VA_ARGS__); break;                            \
        }                                                                                          \
    } while (0)

/* The smallest of 16, 32, 64, 128 that holds hd; 0 when none does (no flash attention). */
static int flash_padded_hd(int hd) { return hd <= 16 ? 16 : hd <= 32 ? 32 : hd <= 64 ? 64 : hd <= 128 ? 128 : 0; }

/* Flash attention forward (bf16): att [T, HD] and att_lse [T, H] from qkv, one launch per
 * sequence (grid: query tiles x KV heads). */
static int attention_fwd_flash(cuda_ctx *c, void *att, float *att_lse, const void *qkv, const int *seq_start,
                               int n_seq)
{
    int P, G, n_chunks;
    flash_tiles(c->q_per_kv, &P, &G, &n_chunks);
    float scale = 1.f / sqrtf((float)c->hd);
    for (int s = 0; s < n_seq; s++) {
        int first = seq_start[s], n = seq_start[s + 1] - first, n_qtiles = (n + P - 1) / P;
        if (n <= 0) continue;
        dim3 grid((unsigned)(n_chunks * n_qtiles), (unsigned)c->K);
        FLASH_LAUNCH(c->flash_hdp, grid, flash_fwd_k, (bf16 *)att, att_lse, (const bf16 *)qkv, first, n, c->H, c->K,
                     c->hd, P, G, n_qtiles, scale);
        CHECK_LAUNCH();
    }
    return 0;
}

/* Flash attention backward (bf16): Dsum = rowsum(dO * O) over the batch, then per sequence one
 * kernel for dK, dV (a block per key tile) and one for dQ (a block per query tile): two passes
 * that recompute P instead of one that would have to add dK, dV or dQ from many blocks into the
 * same rows (atomics: a different sum order, so different bits, at every run). */
static int attention_bwd_flash(cuda_ctx *c, float *dqkv_f32, const void *datt, const void *qkv, const void *att,
                               const float *att_lse, const int *seq_start, int n_seq)
{
    int P, G, n_chunks;
    flash_tiles(c->q_per_kv, &P, &G, &n_chunks);
    float scale = 1.f / sqrtf((float)c->hd);
    int T = seq_start[n_seq];
    LAUNCH(elem_blocks((size_t)T * c->H), 256, flash_bwd_dot_k)(c->att_dsum, (const bf16 *)datt, (const bf16 *)att, T,
                                                                c->H, c->hd);
    CHECK_LAUNCH();
    for (int s = 0; s < n_seq; s++) {
        int first = seq_start[s], n = seq_start[s + 1] - first, n_qtiles = (n + P - 1) / P;
        if (n <= 0) continue;
        dim3 kv_grid((unsigned)((n + FLASH_KEYS - 1) / FLASH_KEYS), (unsigned)c->K);
        FLASH_LAUNCH(c->flash_hdp, kv_grid, flash_bwd_kv_k, dqkv_f32, (const bf16 *)qkv, (const bf16 *)datt, att_lse,
                     c->att_dsum, first, n, c->H, c->K, c->hd, P, G, scale);
        CHECK_LAUNCH();
        dim3 q_grid((unsigned)(n_chunks * n_qtiles), (unsigned)c->K);
        FLASH_LAUNCH(c->flash_hdp, q_grid, flash_bwd_q_k, dqkv_f32, (const bf16 *)qkv, (const bf16 *)datt, att_lse,
                     c->att_dsum, first, n, c->H, c->K, c->hd, P, G, n_qtiles, scale);
        CHECK_LAUNCH();
    }
    return 0;
}

/* Attention forward: att [T, HD] from qkv [T, QKV] (and, with flash attention, each row's
 * log-sum-exp into att_lse [T, H] for the backward). */
static int op_attention_fwd(cuda_ctx *c, void *att, float *att_lse, const void *qkv, const int *seq_start, int n_seq)
{
    prof_region(c, PROF_ATTENTION);
    int rc = c->flash_hdp ? attention_fwd_flash(c, att, att_lse, qkv, seq_start, n_seq)
                          : attention_fwd_cublas(c, att, qkv, seq_start, n_seq);
    prof_region(c, PROF_ELEMENTWISE);
    return rc;
}

/* Attention backward: datt [T, HD] -> dqkv_f32 [T, QKV] (written, not added); flash attention
 * also reads the forward's output att and att_lse. */
static int op_attention_bwd(cuda_ctx *c, float *dqkv_f32, const void *datt, const void *qkv, const void *att,
                            const float *att_lse, const int *seq_start, int n_seq)
{
    prof_region(c, PROF_ATTENTION);
    int rc = c->flash_hdp ? attention_bwd_flash(c, dqkv_f32, datt, qkv, att, att_lse, seq_start, n_seq)
                          : attention_bwd_cublas(c, dqkv_f32, datt, qkv, seq_start, n_seq);
    prof_region(c, PROF_ELEMENTWISE);
    return rc;
}

/* LM head forward over vocabulary chunks of C <= lm_chunk columns: xf [T, D] -> logp [T]
 * (device) and lse [T]; the chunk's logits [T, C] are the only logits alive. */
static int op_lm_fwd(cuda_ctx *c, int T)
{
    int V = c->V, D = c->D, ld = c->lm_ld;
    prof_region(c, PROF_LM_HEAD);
    for (int c0 = 0; c0 < V; c0 += c->lm_chunk) {
        int C = V - c0 < c->lm_chunk ? V - c0 : c->lm_chunk;
        const void *W_chunk = weight_at(c, c->off_lm + (size_t)c0 * D);
        /* logits[T, C] = xf W_chunk^T, rows ld apart */
        if (gemm(c, 0, 1, T, C, D, 1.f, c->xf, D, 0, W_chunk, D, 0, 0.f, c->logits, CUDA_R_32F, ld, 0, 1)) return -1;
        LAUNCH(row_blocks(T), 256, lse_chunk_k)(c->row_max, c->row_sumexp, c->label_logit, c->logits, c->labels, T, C,
                                                ld, c0, c0 == 0);
        CHECK_LAUNCH();
    }
    LAUNCH(elem_blocks(T), 256, logp_k)(c->logp, c->lse, c->row_max, c->row_sumexp, c->label_logit, c->labels, T);
    CHECK_LAUNCH();
    return 0;
}

/* LM head backward, chunk by chunk: recompute the logits, form dlogits from label_dlogp and
 * lse; dxf = sum_chunks dz W_chunk (written), dW_chunk += dz^T xf. */
static int op_lm_bwd(cuda_ctx *c, int T)
{
    int V = c->V, D = c->D, ld = c->lm_ld;
    prof_region(c, PROF_LM_HEAD);
    for (int c0 = 0; c0 < V; c0 += c->lm_chunk) {
        int C = V - c0 < c->lm_chunk ? V - c0 : c->lm_chunk;
        const void *W_chunk = weight_at(c, c->off_lm + (size_t)c0 * D);
        if (gemm(c, 0, 1, T, C, D, 1.f, c->xf, D, 0, W_chunk, D, 0, 0.f, c->logits, CUDA_R_32F, ld, 0, 1)) return -1;
        LAUNCH_ACT(c, lm_bwd_chunk_k, rows_cols_grid(T, C), 256, c->dlogits, c->logits, c->lse, c->label_dlogp,
                   c->labels, T, C, ld, c0);
        CHECK_LAUNCH();
        /* dxf (= or +=) dz W_chunk;  dW_chunk += dz^T xf (linear_bwd with dz's row stride ld) */
        if (gemm(c, 0, 0, T, D, C, 1.f, c->dlogits, ld, 0, W_chunk, D, 0, c0 ? 1.f : 0.f, c->dxf, CUDA_R_32F, D, 0, 1) ||
            gemm(c, 1, 0, C, D, T, 1.f, c->dlogits, ld, 0, c->xf, D, 0, 1.f, GRAD_AT(c, c->off_lm + (size_t)c0 * D),
                 grad_type(c), D, 0, 1)) return -1;
    }
    return 0;
}

/* The residual gradient in the compute type, for the GEMMs: dres itself in fp32; in bf16, the copy
 * every op_rmsnorm_bwd of the backward writes beside dres (dres_cast), so no cast pass. */
static void *dres_act(cuda_ctx *c) { return c->bf16_compute ? c->dres_cast : (void *)c->dres; }
static void *cast_target(cuda_ctx *c) { return c->bf16_compute ? c->dres_cast : NULL; }

/* RoPE over the q and k heads of [T, QKV] rows, v copied: sign +1 rotates (forward, in place on
 * the activations), -1 rotates back (backward, from the fp32 dq dk dv when in_f32). With 16-byte
 * vectors (rope_vec_k) when hd is a multiple of 16 (Llama's 64 and 128 are), else rope_k. */
static int op_rope(cuda_ctx *c, void *out, const void *in, int in_f32, float sign, int T)
{
    dim3 grid = rows_cols_grid(T, c->QKV);
    int n_rot_heads = c->H + c->K;
    if (c->hd % 16 == 0 && (uintptr_t)out % 16 == 0 && (uintptr_t)in % 16 == 0 && (uintptr_t)c->rope_cos % 16 == 0 &&
        (uintptr_t)c->rope_sin % 16 == 0) {
        int copy_v = in != out;
        dim3 vgrid = rows_cols_grid(T, n_rot_heads * (c->hd / 16) + (c->QKV - n_rot_heads * c->hd) / 8);
        if (!c->bf16_compute)
            LAUNCH(vgrid, 256, rope_vec_k<float, float>)(out, in, c->positions, c->rope_cos, c->rope_sin, T, n_rot_heads,
                                                         c->QKV, c->hd, sign, copy_v);
        else if (in_f32)
            LAUNCH(vgrid, 256, rope_vec_k<float, bf16>)(out, in, c->positions, c->rope_cos, c->rope_sin, T, n_rot_heads,
                                                        c->QKV, c->hd, sign, copy_v);
        else
            LAUNCH(vgrid, 256, rope_vec_k<bf16, bf16>)(out, in, c->positions, c->rope_cos, c->rope_sin, T, n_rot_heads,
                                                       c->QKV, c->hd, sign, copy_v);
        CHECK_LAUNCH();
        return 0;
    }
    if (!c->bf16_compute)
        LAUNCH(grid, 256, rope_k<float, float>)(out, in, c->positions, c->rope_cos, c->rope_sin, T, n_rot_heads, c->QKV,
                                                c->hd, sign);
    else if (in_f32)
        LAUNCH(grid, 256, rope_k<float, bf16>)(out, in, c->positions, c->rope_cos, c->rope_sin, T, n_rot_heads, c->QKV,
                                               c->hd, sign);
    else
        LAUNCH(grid, 256, rope_k<bf16, bf16>)(out, in, c->positions, c->rope_cos, c->rope_sin, T, n_rot_heads, c->QKV,
                                              c->hd, sign);
    CHECK_LAUNCH();
    return 0;
}

/* Layer l forward from res[l] into a; writes res[l + 1] when `full` (backward's recomputation
 * needs everything but the layer output). */
static int layer_fwd(cuda_ctx *c, int l, layer_acts *a, int T, int full)
{
    const layer_offsets *off = &c->layer_offs[l];
    int D = c->D, I = c->I;
    const float *x = c->res + (size_t)l * c->max_T * D;
    /* attention block: xmid = res[l] + attention(rope(xn1 [Wq; Wk; Wv]^T)) Wo^T */
    if (op_rmsnorm_fwd(c, a->xn1, a->rstd1, x, weight_at(c, off->input_layernorm), T, D)) return -1;
    if (linear_fwd(c, a->qkv, act_type(c), 0.f, a->xn1, weight_at(c, off->qkv_proj), T, D, c->QKV)) return -1;
    if (op_rope(c, a->qkv, a->qkv, 0, 1.f, T)) return -1;
    if (op_attention_fwd(c, a->att, a->att_lse, a->qkv, c->host_seq_start, c->n_seq)) return -1;
    /* o = att Wo^T into the fp32 scratch dxn (free outside layer_bwd); then one pass adds the
     * residual and normalises: xmid = res[l] + o, xn2 = rmsnorm(xmid). When `full`, that pass
     * also starts res[l + 1] as a copy of xmid, to which the down projection adds (beta = 1):
     * no device-to-device copies. */
    float *y = full ? c->res + (size_t)(l + 1) * c->max_T * D : NULL;
    if (linear_fwd(c, c->dxn, CUDA_R_32F, 0.f, a->att, weight_at(c, off->o_proj), T, c->HD, D)) return -1;
    if (op_add_rmsnorm_fwd(c, a->xmid, y, a->xn2, a->rstd2, x, c->dxn, weight_at(c, off->post_attention_layernorm), T,
                           D)) return -1;
    /* MLP block: res[l + 1] = xmid + swiglu(xn2 [Wgate; Wup]^T) Wdown^T */
    if (linear_fwd(c, a->gu, act_type(c), 0.f, a->xn2, weight_at(c, off->gate_up_proj), T, D, 2 * I)) return -1;
    if (op_swiglu_fwd(c, a->h, a->gu, T, I)) return -1;
    if (full && linear_fwd(c, y, CUDA_R_32F, 1.f, a->h, weight_at(c, off->down_proj), T, I, D)) return -1;
    return 0;
}

/* Selective recomputation: layer l's cheap activations (xn1, xn2, h, in the shared set) from
 * what its forward kept (res[l], rstd1, xmid, rstd2, gu), by the forward's own expressions: the
 * same bits as the forward wrote. Three memory-bound passes, no GEMM. */
static int recompute_cheap(cuda_ctx *c, int l, layer_acts *a, int T)
{
    const layer_offsets *off = &c->layer_offs[l];
    const float *x = c->res + (size_t)l * c->max_T * c->D;
    if (op_rmsnorm_apply(c, a->xn1, a->rstd1, x, weight_at(c, off->input_layernorm), T, c->D)) return -1;
    if (op_rmsnorm_apply(c, a->xn2, a->rstd2, a->xmid, weight_at(c, off->post_attention_layernorm), T, c->D)) return -1;
    return op_swiglu_fwd(c, a->h, a->gu, T, c->I);
}

/* Layer l backward: c->dres holds d res[l + 1] on entry and d res[l] on exit. */
static int layer_bwd(cuda_ctx *c, int l, layer_acts *a, int T)
{
    const layer_offsets *off = &c->layer_offs[l];
    int D = c->D, I = c->I, QKV = c->QKV, HD = c->HD;
    const float *x = c->res + (size_t)l * c->max_T * D;
    cudaDataType_t act = act_type(c);
    /* MLP block: res[l+1] = xmid + h Wd^T */
    const void *dy = dres_act(c);
    if (linear_bwd(c, c->dh, act, 0.f, GRAD_AT(c, off->down_proj), dy, a->h, weight_at(c, off->down_proj), T, I, D))
        return -1;
    if (op_swiglu_bwd(c, c->dproj, c->dh, a->gu, T, I)) return -1;
    if (linear_bwd(c, c->dxn, CUDA_R_32F, 0.f, GRAD_AT(c, off->gate_up_proj), c->dproj, a->xn2,
                   weight_at(c, off->gate_up_proj), T, D, 2 * I)) return -1;
    if (op_rmsnorm_bwd(c, c->dres, cast_target(c), GRAD_AT(c, off->post_attention_layernorm), c->dxn, a->xmid,
                       a->rstd2, weight_at(c, off->post_attention_layernorm), T, D)) return -1;
    /* attention block: xmid = res[l] + att Wo^T */
    dy = dres_act(c);
    if (linear_bwd(c, c->datt, act, 0.f, GRAD_AT(c, off->o_proj), dy, a->att, weight_at(c, off->o_proj), T, HD, D))
        return -1;
    if (op_attention_bwd(c, c->dqkv_f32, c->datt, a->qkv, a->att, a->att_lse, c->host_seq_start, c->n_seq)) return -1;
    /* RoPE backward (inverse rotation) of dq, dk; dv copied; cast to the compute type */
    if (op_rope(c, c->dproj, c->dqkv_f32, 1, -1.f, T)) return -1;
    if (linear_bwd(c, c->dxn, CUDA_R_32F, 0.f, GRAD_AT(c, off->qkv_proj), c->dproj, a->xn1, weight_at(c, off->qkv_proj),
                   T, D, QKV)) return -1;
    if (op_rmsnorm_bwd(c, c->dres, cast_target(c), GRAD_AT(c, off->input_layernorm), c->dxn, x, a->rstd1,
                       weight_at(c, off->input_layernorm), T, D)) return -1;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Backend calls                                                                               */
/* The llama_backend entry points; they report failures through ctx_error. forward, backward,
 * adamw_step, get_state and set_state make the backend's device current first: CUDA's current
 * device belongs to the host thread, which may have switched it since the last call. */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Groups the positions of host_tokens[T] by token for the embedding backward (embed_bwd_k):
 * fills host_emb_groups (distinct, first, where; positions in increasing order) and
 * n_distinct. Sorting (token, position) pairs costs microseconds for any batch that fits. */
static int group_tokens(cuda_ctx *c, const int *host_tokens, int T)
{
    uint64_t *keys = (uint64_t *)malloc((size_t)T * sizeof *keys);
    if (!keys) { ctx_error(c, "cuda forward: out of host memory"); return -1; }
    for (int i = 0; i < T; i++) keys[i] = (uint64_t)host_tokens[i] << 32 | (uint32_t)i;
    qsort(keys, (size_t)T, sizeof *keys, cmp_u64);
    int *distinct = c->host_emb_groups, *first = distinct + c->max_T, *where = first + c->max_T + 1;
    int n = 0;
    for (int i = 0; i < T; i++) {
        int token = (int)(keys[i] >> 32);
        if (i == 0 || token != distinct[n - 1]) { distinct[n] = token; first[n] = i; n++; }
        where[i] = (int)(keys[i] & 0xffffffffu);
    }
    first[n] = T;
    c->n_distinct = n;
    free(keys);
    return 0;
}

/* Uploads the batch (tokens, positions, labels, the embedding's position groups) in one copy:
 * each cudaMemcpy from pageable host memory waits for the device and the copy, so one call
 * instead of six. The whole [6 max_T + 1] staging buffer goes (under 200 KB at 8192 tokens). */
static int upload_batch(cuda_ctx *c)
{
    CUDA_CHECK(cudaMemcpy(c->batch_ints, c->host_batch_ints, (6 * (size_t)c->max_T + 1) * sizeof(int),
                          cudaMemcpyHostToDevice));
    return 0;
}

static int cuda_forward(llama_backend *b, const llama_batch *batch, float *logp)
{
    cuda_ctx *c = ctx_of(b);
    int T = batch->seq_start[batch->n_seq], D = c->D, V = c->V;
    c->have_forward = 0;
    if (ctx_refuse_if_failed(c)) return -1;
    if (batch->n_seq < 1 || batch->seq_start[0] != 0 || T < 1 || T > c->max_T) {
        ctx_error(c, "cuda forward: batch has %d tokens in %d sequences; the backend was planned for "
                "1..%d tokens (raise max_tokens)", T, batch->n_seq, c->max_T);
        return -1;
    }
    if (batch->n_seq > c->max_T) {
        ctx_error(c, "cuda forward: %d sequences for %d tokens", batch->n_seq, T);
        return -1;
    }
    int *host_tokens = c->host_batch_ints, *host_positions = host_tokens + c->max_T;   /* layout of batch_ints */
    for (int s = 0; s < batch->n_seq; s++) {
        int start = batch->seq_start[s], end = batch->seq_start[s + 1];
        if (end < start) {
            ctx_error(c, "cuda forward: seq_start[%d] = %d > seq_start[%d] = %d", s, start, s + 1, end);
            return -1;
        }
        if (end - start > c->max_seq) {
            ctx_error(c, "cuda forward: sequence %d has %d tokens; the backend was planned for sequences of at "
                      "most %d (raise max_seq_tokens)", s, end - start, c->max_seq);
            return -1;
        }
        for (int i = start; i < end; i++) {
            int token = batch->tokens[i];
            if (token < 0 || token >= V) {
                ctx_error(c, "cuda forward: token %d at position %d is outside the vocabulary [0, %d)", token, i, V);
                return -1;
            }
            host_tokens[i] = token;
            host_positions[i] = i - start;
            c->host_labels[i] = i + 1 < end ? batch->tokens[i + 1] : -1;   /* what position i predicts */
        }
    }
    memcpy(c->host_seq_start, batch->seq_start, (size_t)(batch->n_seq + 1) * sizeof(int));
    c->n_seq = batch->n_seq;
    c->T = T;
    if (group_tokens(c, host_tokens, T)) return -1;
    CUDA_CHECK(cudaSetDevice(c->device));
    if (upload_batch(c)) return -1;

    prof_region(c, PROF_ELEMENTWISE);
    LAUNCH_ACT(c, embed_fwd_k, rows_cols_grid(T, D), 256, c->res, weight_at(c, c->off_embed), c->tokens, T, D);
    CHECK_LAUNCH();
    for (int l = 0; l < c->L; l++)
        if (layer_fwd(c, l, &c->acts[c->recompute == LLAMA_RECOMPUTE_LAYER ? 0 : l], T, 1)) return -1;
    if (op_rmsnorm_fwd(c, c->xf, c->rstd_final, c->res + (size_t)c->L * c->max_T * D, weight_at(c, c->off_norm), T, D))
        return -1;
    if (op_lm_fwd(c, T)) return -1;
    CUDA_CHECK(cudaMemcpy(logp, c->logp, (size_t)T * sizeof(float), cudaMemcpyDeviceToHost));
    prof_region(c, PROF_IDLE);
    c->have_forward = 1;
    return 0;
}

static int cuda_backward(llama_backend *b, const llama_batch *batch, const float *dlogp)
{
    cuda_ctx *c = ctx_of(b);
    int T = c->T, D = c->D;
    if (ctx_refuse_if_failed(c)) return -1;
    if (!c->have_forward || batch->n_seq != c->n_seq || batch->seq_start[batch->n_seq] != T) {
        ctx_error(c, "cuda backward: call forward on this batch first (backward differentiates the last forward)");
        return -1;
    }
    CUDA_CHECK(cudaSetDevice(c->device));
    for (int t = 0; t < T; t++) c->host_label_dlogp[t] = c->host_labels[t] >= 0 ? dlogp[t + 1] : 0.f;
    CUDA_CHECK(cudaMemcpy(c->label_dlogp, c->host_label_dlogp, (size_t)T * sizeof(float), cudaMemcpyHostToDevice));

    if (op_lm_bwd(c, T)) return -1;
    prof_region(c, PROF_ELEMENTWISE);
    CUDA_CHECK(cudaMemset(c->dres, 0, (size_t)T * D * sizeof(float)));
    if (op_rmsnorm_bwd(c, c->dres, cast_target(c), GRAD_AT(c, c->off_norm), c->dxf,
                       c->res + (size_t)c->L * c->max_T * D, c->rstd_final, weight_at(c, c->off_norm), T, D))
        return -1;
    for (int l = c->L - 1; l >= 0; l--) {
        layer_acts *a = &c->acts[c->recompute == LLAMA_RECOMPUTE_LAYER ? 0 : l];
        if (c->recompute == LLAMA_RECOMPUTE_LAYER && layer_fwd(c, l, a, T, 0)) return -1;
        if (c->recompute == LLAMA_RECOMPUTE_SELECTIVE && recompute_cheap(c, l, a, T)) return -1;
        if (layer_bwd(c, l, a, T)) return -1;
    }
    const int *groups = c->emb_groups;
    dim3 grid = rows_cols_grid(c->n_distinct, D);
    void *d_embed = GRAD_AT(c, c->off_embed);
    if (c->lean)
        LAUNCH(grid, 256, embed_bwd_k<bf16>)((bf16 *)d_embed, c->dres, groups, groups + c->max_T,
                                            groups + 2 * c->max_T + 1, c->n_distinct, D);
    else
        LAUNCH(grid, 256, embed_bwd_k<float>)((float *)d_embed, c->dres, groups, groups + c->max_T,
                                             groups + 2 * c->max_T + 1, c->n_distinct, D);
    CHECK_LAUNCH();
    prof_region(c, PROF_IDLE);
    /* No synchronisation: what reads the gradients next (grad_norm's download, get_state, the
     * next forward's upload) waits for them, and the host prepares the next batch meanwhile. A
     * fault inside these kernels is reported by that next call. */
    return 0;
}

static void cuda_zero_grad(llama_backend *b)
{
    cuda_ctx *c = ctx_of(b);
    if (c->failed) return;                   /* err keeps the failure; the next call reports it */
    cudaError_t e = cudaMemset(c->grad, 0, c->n_params * grad_size(c));   /* no status to return: err only */
    if (e != cudaSuccess) {
        ctx_error(c, "kernels.cu:%d: cudaMemset(grad) failed: %s", __LINE__, cudaGetErrorString(e));
        ctx_failed(c);
    }
}

/* *out = sum of the squared gradients, accumulated in fp64 on the device, in a fixed order. */
static int grad_sumsq(cuda_ctx *c, double *out)
{
    int blocks = elem_blocks(c->n_params);
    double *partials = c->sumsq + 1;
    CUDA_CHECK(cudaSetDevice(c->device));
    prof_region(c, PROF_OPTIMIZER);
    if (c->lean) LAUNCH(blocks, 256, sumsq_partial_k<bf16>)(partials, (const bf16 *)c->grad, c->n_params);
    else LAUNCH(blocks, 256, sumsq_partial_k<float>)(partials, (const float *)c->grad, c->n_params);
    CHECK_LAUNCH();
    LAUNCH(1, 256, sum_partials_k)(c->sumsq, partials, blocks);
    CHECK_LAUNCH();
    CUDA_CHECK(cudaMemcpy(out, c->sumsq, sizeof(double), cudaMemcpyDeviceToHost));
    prof_region(c, PROF_IDLE);
    return 0;
}

/* The interface returns a number, so a failure is NaN ("not finite") with err set; the backend
 * is then marked failed, so the caller's next call returns -1 with the CUDA error itself. */
static double cuda_grad_norm(llama_backend *b)
{
    cuda_ctx *c = ctx_of(b);
    double sumsq = 0;
    if (ctx_refuse_if_failed(c) || grad_sumsq(c, &sumsq)) return NAN;
    return sqrt(sumsq);
}

/* The stochastic-rounding seed of lean mode's AdamW: a function of the optimizer step and the
 * tensor only (never of how many steps this backend has taken), so a run resumed from a
 * checkpoint at step s rounds step s + 1 exactly as the uninterrupted run does. Distinct for
 * every (step, tensor) pair below 2^32 / 7919 steps and 7919 tensors (880 layers). */
static uint32_t lean_round_seed(long step, int tensor)
{
    return (uint32_t)step * 7919u + (uint32_t)tensor;
}

/* One launch over every tensor (adamw_multi_*_k): weight decay (2-D tensors only) and lean
 * mode's rounding seed come from the device table; the scalar parts of the update are formed
 * here in double. No synchronisation: the next call that needs the results (a download, the
 * next forward's upload) waits for them, and reports a fault of these kernels if there is one. */
static int cuda_adamw_step(llama_backend *b, const llama_adamw *opt, float grad_scale)
{
    cuda_ctx *c = ctx_of(b);
    if (ctx_refuse_if_failed(c)) return -1;
    if (opt->step < 1) {
        ctx_error(c, "cuda adamw_step: step must be >= 1 (bias correction), got %ld", opt->step);
        return -1;
    }
    CUDA_CHECK(cudaSetDevice(c->device));
    double bc1 = 1.0 - pow(opt->beta1, (double)opt->step), bc2 = 1.0 - pow(opt->beta2, (double)opt->step);
    float step = (float)(opt->lr / bc1), sq_bc2 = (float)sqrt(bc2);
    float decay_2d = (float)(1.0 - opt->lr * opt->weight_decay), decay_1d = (float)(1.0 - opt->lr * 0.0);
    size_t n = c->n_params;
    prof_region(c, PROF_OPTIMIZER);
    if (c->lean)
        LAUNCH(elem_blocks(n), 256, adamw_multi_bf16_k)((bf16 *)c->master, (const bf16 *)c->grad, (bf16 *)c->adam_m,
                                                        (bf16 *)c->adam_v, c->adamw_tab, c->n_tensors, n, grad_scale,
                                                        (float)opt->beta1, (float)opt->beta2, (float)opt->eps, decay_2d,
                                                        decay_1d, step, sq_bc2, lean_round_seed(opt->step, 0));
    else
        LAUNCH(elem_blocks(n), 256, adamw_multi_f32_k)((float *)c->master, (const float *)c->grad, (float *)c->adam_m,
                                                       (float *)c->adam_v, c->bf16_compute ? (bf16 *)c->weights : NULL,
                                                       c->adamw_tab, c->n_tensors, n, grad_scale, (float)opt->beta1,
                                                       (float)opt->beta2, (float)opt->eps, decay_2d, decay_1d, step,
                                                       sq_bc2);
    CHECK_LAUNCH();
    prof_region(c, PROF_IDLE);
    return 0;
}

/* Host <-> device copies of a flat [n_params] buffer stored as fp32 or bf16 (bf16 converted on
 * the host in chunks: round to nearest even on the way in). */
static float bf16_bits_to_f32(uint16_t bits)
{
    uint32_t u = (uint32_t)bits << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint16_t f32_to_bf16_bits(float f)
{
    uint32_t u; memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);   /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static int download(cuda_ctx *c, float *dst, const void *src, int is_bf16)
{
    if (!is_bf16) { CUDA_CHECK(cudaMemcpy(dst, src, c->n_params * 4, cudaMemcpyDeviceToHost)); return 0; }
    const size_t chunk = (size_t)1 << 24;        /* 32 MiB of host staging, whatever the model */
    uint16_t *tmp = (uint16_t *)malloc(chunk * 2);
    if (!tmp) { ctx_error(c, "cuda get_state: out of host memory"); return -1; }
    for (size_t i = 0; i < c->n_params; i += chunk) {
        size_t n = c->n_params - i < chunk ? c->n_params - i : chunk;
        cudaError_t e = cudaMemcpy(tmp, (const uint16_t *)src + i, n * 2, cudaMemcpyDeviceToHost);
        if (e != cudaSuccess) { free(tmp); CUDA_CHECK(e); }
        for (size_t k = 0; k < n; k++) dst[i + k] = bf16_bits_to_f32(tmp[k]);
    }
    free(tmp);
    return 0;
}

static int upload(cuda_ctx *c, void *dst, const float *src, int is_bf16)
{
    if (!is_bf16) { CUDA_CHECK(cudaMemcpy(dst, src, c->n_params * 4, cudaMemcpyHostToDevice)); return 0; }
    const size_t chunk = (size_t)1 << 24;
    uint16_t *tmp = (uint16_t *)malloc(chunk * 2);
    if (!tmp) { ctx_error(c, "cuda set_state: out of host memory"); return -1; }
    for (size_t i = 0; i < c->n_params; i += chunk) {
        size_t n = c->n_params - i < chunk ? c->n_params - i : chunk;
        for (size_t k = 0; k < n; k++) tmp[k] = f32_to_bf16_bits(src[i + k]);
        cudaError_t e = cudaMemcpy((uint16_t *)dst + i, tmp, n * 2, cudaMemcpyHostToDevice);
        if (e != cudaSuccess) { free(tmp); CUDA_CHECK(e); }
    }
    free(tmp);
    return 0;
}

/* bf16 non-lean mode: the bf16 compute weights follow the fp32 master (after set_state and at
 * creation; AdamW refreshes them itself). */
static int refresh_w16(cuda_ctx *c)
{
    if (!c->bf16_compute || c->lean) return 0;
    LAUNCH(elem_blocks(c->n_params), 256, f32_to_bf16_k)((bf16 *)c->weights, (const float *)c->master, c->n_params);
    CHECK_LAUNCH();
    CUDA_CHECK(cudaDeviceSynchronize());
    return 0;
}

static int cuda_get_state(llama_backend *b, float *params, float *grads, float *adam_m, float *adam_v)
{
    cuda_ctx *c = ctx_of(b);
    if (ctx_refuse_if_failed(c)) return -1;
    CUDA_CHECK(cudaSetDevice(c->device));
    CUDA_CHECK(cudaDeviceSynchronize());
    if (params && download(c, params, c->master, c->lean)) return -1;
    if (grads && download(c, grads, c->grad, c->lean)) return -1;
    if (adam_m && download(c, adam_m, c->adam_m, c->lean)) return -1;
    if (adam_v && download(c, adam_v, c->adam_v, c->lean)) return -1;
    return 0;
}

static int cuda_set_state(llama_backend *b, const float *params, const float *adam_m, const float *adam_v)
{
    cuda_ctx *c = ctx_of(b);
    if (ctx_refuse_if_failed(c)) return -1;
    CUDA_CHECK(cudaSetDevice(c->device));
    if (params && (upload(c, c->master, params, c->lean) || refresh_w16(c))) return -1;
    if (adam_m && upload(c, c->adam_m, adam_m, c->lean)) return -1;
    if (adam_v && upload(c, c->adam_v, adam_v, c->lean)) return -1;
    c->have_forward = 0;
    return 0;
}

/* Frees whatever a partial creation got to (every pointer starts NULL), then the context. */
static void ctx_free(cuda_ctx *c)
{
    if (!c) return;
    if (c->cublas) cublasDestroy(c->cublas);     /* before its workspace (c->cublas_ws) goes */
    c->cublas = NULL;
    void *bufs[] = {c->master, c->weights != c->master ? c->weights : NULL, c->grad, c->adam_m, c->adam_v, c->res,
                    c->xf, c->rstd_final, c->dres, c->dxn, c->dres_cast, c->datt, c->dh, c->dproj, c->dqkv_f32,
                    c->scores, c->probs, c->att_dsum, c->logits, c->dlogits, c->dxf, c->row_max, c->row_sumexp, c->label_logit,
                    c->lse, c->logp, c->label_dlogp, c->batch_ints, c->rope_cos,
                    c->rope_sin, c->sumsq, c->adamw_tab, c->cublas_ws};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) if (bufs[i]) cudaFree(bufs[i]);
    if (c->acts)
        for (int i = 0; i < c->n_acts; i++) {
            layer_acts *a = &c->acts[i];
            const layer_acts *a0 = &c->acts[0];   /* selective: the cheap tensors are a0's (freed once) */
            void *act_bufs[] = {i && a->xn1 == a0->xn1 ? NULL : a->xn1, a->rstd1, a->qkv, a->att, a->att_lse, a->xmid,
                                i && a->xn2 == a0->xn2 ? NULL : a->xn2, a->rstd2, a->gu, i && a->h == a0->h ? NULL : a->h};
            for (size_t k = 0; k < sizeof act_bufs / sizeof act_bufs[0]; k++) if (act_bufs[k]) cudaFree(act_bufs[k]);
        }
    if (c->prof_events)
        for (int i = 0; i < PROF_MARKS; i++) if (c->prof_events[i]) cudaEventDestroy(c->prof_events[i]);
    free(c->prof_events); free(c->prof_cat);
    free(c->acts); free(c->tensors); free(c->layer_offs);
    free(c->host_seq_start); free(c->host_batch_ints); free(c->host_label_dlogp);
    free(c);
}

static void cuda_destroy(llama_backend *b)
{
    if (!b) return;
    cuda_ctx *c = ctx_of(b);
    if (c) { cudaSetDevice(c->device); ctx_free(c); }
    free(b);
}

/* ------------------------------------------------------------------------------------------ */
/* Creation: shapes, the memory plan, allocation, upload                                       */
/* Everything is allocated here, before the first step, so that a model that does not fit is
 * refused at once with the plan in the message, never an out-of-memory error mid-training. */

/* What create refuses before looking at a device: 0, or -1 with the reason in err. */
static int check_opts(const llama_config *cfg, const llama_cuda_opts *opts, char *err, size_t errsz)
{
    if (opts->lean_optimizer && !opts->bf16) {
        set_err(err, errsz, "cuda backend: lean_optimizer keeps bf16 weights, so it needs bf16 = 1");
        return -1;
    }
    if (opts->max_tokens < 1) {
        set_err(err, errsz, "cuda backend: max_tokens must be >= 1 (the largest batch), got %d", opts->max_tokens);
        return -1;
    }
    if (opts->recompute < LLAMA_RECOMPUTE_NONE || opts->recompute > LLAMA_RECOMPUTE_SELECTIVE) {
        set_err(err, errsz, "cuda backend: recompute must be 0 (none), 1 (whole layer) or 2 (selective), got %d",
                opts->recompute);
        return -1;
    }
    if (opts->max_seq_tokens < 0) {
        set_err(err, errsz, "cuda backend: max_seq_tokens must be >= 0 (0: as max_tokens), got %d", opts->max_seq_tokens);
        return -1;
    }
    if (cfg->num_key_value_heads < 1 || cfg->num_attention_heads % cfg->num_key_value_heads || cfg->head_dim % 2) {
        set_err(err, errsz, "cuda backend: heads %d / kv heads %d / head_dim %d not supported", cfg->num_attention_heads,
                cfg->num_key_value_heads, cfg->head_dim);
        return -1;
    }
    if (llama_layout(cfg, NULL, NULL) <= 0) {
        set_err(err, errsz, "cuda backend: the config has no valid parameter layout");
        return -1;
    }
    return 0;
}

/* The context's shapes and modes from the config and options (no allocation): what both the
 * memory plan and the backend are computed from. */
static void ctx_shape(cuda_ctx *c, const llama_config *cfg, const llama_cuda_opts *opts)
{
    c->cfg = *cfg;
    c->device = opts->device;
    c->L = cfg->num_hidden_layers; c->D = cfg->hidden_size; c->I = cfg->intermediate_size;
    c->H = cfg->num_attention_heads; c->K = cfg->num_key_value_heads; c->hd = cfg->head_dim; c->V = cfg->vocab_size;
    c->QKV = (c->H + 2 * c->K) * c->hd; c->HD = c->H * c->hd; c->q_per_kv = c->H / c->K;
    c->bf16_compute = opts->bf16 ? 1 : 0;
    c->lean = opts->lean_optimizer ? 1 : 0;
    c->recompute = opts->recompute;
    c->profile = opts->profile ? 1 : 0;
    c->act_size = c->bf16_compute ? 2 : 4;
    c->max_T = opts->max_tokens;
    c->max_seq = opts->max_seq_tokens > 0 && opts->max_seq_tokens < c->max_T ? opts->max_seq_tokens : c->max_T;
    /* Attention: flash kernels in bf16 modes (head_dim <= 128); cuBLAS and the [K, S, S] scores
     * in fp32 mode (the parity mode) and when LLAMA_CUDA_ATTENTION=cublas asks for it (A/B
     * measurements). */
    const char *attention = getenv("LLAMA_CUDA_ATTENTION");
    int force_cublas = attention && !strcmp(attention, "cublas");
    c->flash_hdp = c->bf16_compute && !force_cublas ? flash_padded_hd(c->hd) : 0;
    c->n_acts = c->recompute == LLAMA_RECOMPUTE_LAYER ? 1 : c->L;
    c->cublas_ws_size = (size_t)32 << 20;
    /* LM-head chunk: about 256 MiB of fp32 logits, a multiple of 128 columns. Tests force small
     * chunks with LLAMA_CUDA_LM_CHUNK to exercise the merging across chunks. */
    size_t cols = ((size_t)256 << 20) / ((size_t)c->max_T * 4);
    cols = cols / 128 * 128;
    if (cols < 128) cols = 128;
    const char *forced = getenv("LLAMA_CUDA_LM_CHUNK");
    if (forced && atoi(forced) > 0) cols = (size_t)atoi(forced);
    c->lm_chunk = cols >= (size_t)c->V ? c->V : (int)cols;
    c->lm_ld = padded_ld(c->lm_chunk);
    c->n_tensors = llama_layout(cfg, NULL, &c->n_params);
}

/* Device memory by use, in bytes (what the cudaMallocs below will ask for). */
typedef struct {
    size_t weights;   /* master (+ the bf16 compute copy in bf16 non-lean mode) */
    size_t grads;
    size_t optim;     /* Adam m and v */
    size_t acts;      /* residual stream, per-layer activation sets, final norm */
    size_t work;      /* gradients of activations, scores, LM-head chunk, tables, cuBLAS workspace */
    size_t total;
} mem_plan;

static double gib(size_t bytes) { return (double)bytes / (1024.0 * 1024.0 * 1024.0); }

/* Must match the allocations in alloc_device term by term. cuBLAS attention's scores are sized
 * by the longest sequence (max_seq), not the batch: sequences never attend to each other. Flash
 * attention has no scores: a [T, H] fp32 log-sum-exp in each kept set (n_acts of them: L, or 1
 * with whole-layer recompute), and one [T, H] fp32 Dsum for the backward. */
static void plan_memory(const cuda_ctx *c, mem_plan *p)
{
    size_t N = c->n_params, T = (size_t)c->max_T, S = (size_t)c->max_seq, act = c->act_size, D = c->D, I = c->I;
    size_t master_size = c->lean ? 2 : 4;
    p->weights = N * master_size + (c->bf16_compute && !c->lean ? N * 2 : 0);
    p->grads = N * grad_size(c);
    p->optim = 2 * N * master_size;
    /* an activation set: the kept tensors (rstd1, qkv, att, flash attention's att_lse, xmid,
     * rstd2, gu), one set per layer unless whole-layer recomputation shares one, and the cheap
     * ones (xn1, xn2, h), which selective recomputation allocates once for all n_acts sets */
    size_t kept = T * (4 + (size_t)c->QKV * act + (size_t)c->HD * act + (c->flash_hdp ? (size_t)c->H * 4 : 0) + D * 4 +
                       4 + 2 * I * act);
    size_t cheap = T * (D * act + D * act + I * act);
    size_t n_cheap = c->recompute == LLAMA_RECOMPUTE_SELECTIVE ? 1 : (size_t)c->n_acts;
    p->acts = (size_t)(c->L + 1) * T * D * 4 + (size_t)c->n_acts * kept + n_cheap * cheap + T * (D * act + 4);
    /* attention's workspace: flash attention's Dsum [T, H] fp32, or cuBLAS attention's scores
     * (fp32) and probabilities (act) */
    size_t attention = c->flash_hdp ? T * (size_t)c->H * 4 : (size_t)c->K * S * (size_t)padded_ld((int)S) * (4 + act);
    size_t proj_cols = (size_t)(2 * c->I > c->QKV ? 2 * c->I : c->QKV);
    p->work = T * D * 4 * 3 + T * D * act + T * (size_t)c->HD * act + T * I * act + T * proj_cols * act +
              T * (size_t)c->QKV * 4 + attention +
              T * (size_t)c->lm_ld * (4 + act) + T * 6 * 4 + T * 3 * 4 + (3 * T + 1) * 4 +
              T * (size_t)(c->hd / 2) * 8 + (1 + (size_t)MAX_ELEM_BLOCKS) * 8 +
              (size_t)c->n_tensors * sizeof(adamw_tensor) + c->cublas_ws_size;
    p->total = p->weights + p->grads + p->optim + p->acts + p->work;
}

static void plan_text(const cuda_ctx *c, const mem_plan *p, char *out, size_t outsz)
{
    snprintf(out, outsz,
             "memory plan (%s%s%s, %s attention, %zu params, %d tokens, sequences <= %d): weights %.2f GiB, "
             "grads %.2f GiB, optimizer %.2f GiB, activations %.2f GiB, workspace %.2f GiB, total %.2f GiB",
             c->bf16_compute ? "bf16" : "fp32", c->lean ? " lean" : "",
             c->recompute == LLAMA_RECOMPUTE_SELECTIVE ? " selective recompute" : c->recompute ? " recompute" : "",
             c->flash_hdp ? "flash" : "cuBLAS", c->n_params,
             c->max_T, c->max_seq, gib(p->weights), gib(p->grads), gib(p->optim), gib(p->acts), gib(p->work),
             gib(p->total));
}

/* Memory the backend leaves to the CUDA context, cuBLAS internals and fragmentation. */
static const size_t PLAN_MARGIN = (size_t)512 << 20;

/* The memory plan without a device (tests, benchmarks, sizing a run): the bytes
 * llama_cuda_backend_create would allocate for this config and these options, and the plan's
 * text in text[textsz] (or the reason it is refused). Creation refuses when the total plus 512
 * MiB exceeds the device's free memory. 0 when the options are refused. */
extern "C" size_t llama_cuda_memory_plan(const llama_config *cfg, const llama_cuda_opts *opts, char *text,
                                         size_t textsz)
{
    if (!cfg || !opts) { set_err(text, textsz, "llama_cuda_memory_plan: config and opts are required"); return 0; }
    if (check_opts(cfg, opts, text, textsz)) return 0;
    cuda_ctx c;
    memset(&c, 0, sizeof c);
    ctx_shape(&c, cfg, opts);
    mem_plan plan;
    plan_memory(&c, &plan);
    if (text && textsz) plan_text(&c, &plan, text, textsz);
    return plan.total;
}

/* cudaMalloc of `bytes` into *p; a failure names the buffer (`what`) in the caller's err. */
static int device_alloc(void **p, size_t bytes, const char *what, char *err, size_t errsz)
{
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        *p = NULL;
        set_err(err, errsz, "kernels.cu:%d: cudaMalloc(%s, %.2f GiB) failed: %s (hint: %s)", __LINE__, what, gib(bytes),
                cudaGetErrorString(e), cuda_hint(e));
        return -1;
    }
    return 0;
}

/* Random init on the device (model with params == NULL): HF init, deterministic per seed. */
static int init_random_device(cuda_ctx *c)
{
    for (int i = 0; i < c->n_tensors; i++) {
        const llama_tensor_info *ti = &c->tensors[i];
        void *p = (char *)c->master + ti->offset * (c->lean ? 2 : 4);
        if (ti->ndim == 1) {
            if (c->lean) LAUNCH(elem_blocks(ti->numel), 256, fill_k<bf16>)((bf16 *)p, ti->numel, 1.f);
            else LAUNCH(elem_blocks(ti->numel), 256, fill_k<float>)((float *)p, ti->numel, 1.f);
        } else {
            float std = (float)(c->cfg.initializer_range > 0 ? c->cfg.initializer_range : 0.02);
            uint32_t seed = 1234u + (uint32_t)i;
            if (c->lean) LAUNCH(elem_blocks(ti->numel), 256, init_normal_k<bf16>)((bf16 *)p, ti->numel, std, seed);
            else LAUNCH(elem_blocks(ti->numel), 256, init_normal_k<float>)((float *)p, ti->numel, std, seed);
        }
        CHECK_LAUNCH();
    }
    CUDA_CHECK(cudaDeviceSynchronize());
    return 0;
}

/* Fills layer offsets from the tensor table and checks that q, k, v (and gate, up) are
 * consecutive, which the fused projections rely on. */
static int find_offsets(cuda_ctx *c, char *err, size_t errsz)
{
    int L = c->L;
    if (c->n_tensors != 2 + 9 * L + (c->cfg.tie_word_embeddings ? 0 : 1)) {
        set_err(err, errsz, "cuda backend: unexpected tensor table (%d tensors for %d layers)", c->n_tensors, L);
        return -1;
    }
    const llama_tensor_info *tab = c->tensors;
    c->off_embed = tab[0].offset;
    for (int l = 0; l < L; l++) {
        const llama_tensor_info *layer = tab + 1 + 9 * l;   /* ln1 q k v o ln2 gate up down */
        layer_offsets *off = &c->layer_offs[l];
        off->input_layernorm = layer[0].offset;
        off->qkv_proj = layer[1].offset;
        off->o_proj = layer[4].offset;
        off->post_attention_layernorm = layer[5].offset;
        off->gate_up_proj = layer[6].offset;
        off->down_proj = layer[8].offset;
        int qkv_fused = layer[2].offset == layer[1].offset + layer[1].numel &&
                        layer[3].offset == layer[2].offset + layer[2].numel;
        int gate_up_fused = layer[7].offset == layer[6].offset + layer[6].numel;
        if (!qkv_fused || !gate_up_fused) {
            set_err(err, errsz, "cuda backend: layer %d: q/k/v or gate/up are not consecutive in the layout", l);
            return -1;
        }
    }
    c->off_norm = tab[1 + 9 * L].offset;
    c->off_lm = c->cfg.tie_word_embeddings ? c->off_embed : tab[2 + 9 * L].offset;
    return 0;
}

/* Refuses, before allocating anything, a plan that exceeds the device's free memory (the
 * message names the plan); prints the device and the plan when verbose. */
static int check_fits(cuda_ctx *c, int verbose, char *err, size_t errsz)
{
    mem_plan plan;
    plan_memory(c, &plan);
    char plan_msg[400];
    plan_text(c, &plan, plan_msg, sizeof plan_msg);
    if (cudaSetDevice(c->device) != cudaSuccess) {
        set_err(err, errsz, "cudaSetDevice(%d) failed", c->device);
        return -1;
    }
    size_t free_bytes = 0, total_bytes = 0;
    cudaError_t e = cudaMemGetInfo(&free_bytes, &total_bytes);
    if (e != cudaSuccess) {
        set_err(err, errsz, "kernels.cu:%d: cudaMemGetInfo failed: %s (hint: %s)", __LINE__, cudaGetErrorString(e),
                cuda_hint(e));
        return -1;
    }
    if (verbose) {
        cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, c->device) == cudaSuccess)
            fprintf(stderr, "cuda: device %d: %s, %.1f GiB, %.1f GiB free\n", c->device, prop.name, gib(total_bytes),
                    gib(free_bytes));
        fprintf(stderr, "cuda: %s\n", plan_msg);
    }
    if (plan.total + PLAN_MARGIN > free_bytes) {
        set_err(err, errsz, "cuda backend will not fit: %s; the device has %.2f GiB free (hint: enable lean_optimizer "
                "(bf16), recompute, or lower max_tokens or max_seq_tokens)", plan_msg, gib(free_bytes));
        return -1;
    }
    return 0;
}

/* The allocations, in plan_memory's order and sizes. */
static int alloc_device(cuda_ctx *c, char *err, size_t errsz)
{
    size_t N = c->n_params, T = (size_t)c->max_T, S = (size_t)c->max_seq, D = c->D, I = c->I, act = c->act_size;
    size_t master_size = c->lean ? 2 : 4;
    size_t proj_cols = (size_t)(2 * c->I > c->QKV ? 2 * c->I : c->QKV);
    size_t scores = (size_t)c->K * S * (size_t)padded_ld((int)S);
#define ALLOC(ptr, bytes) do { if (device_alloc((void **)&(ptr), (bytes), #ptr, err, errsz)) return -1; } while (0)
    ALLOC(c->master, N * master_size);
    if (c->bf16_compute && !c->lean) ALLOC(c->weights, N * 2); else c->weights = c->master;
    ALLOC(c->grad, N * grad_size(c));
    ALLOC(c->adam_m, N * master_size);
    ALLOC(c->adam_v, N * master_size);
    ALLOC(c->res, (size_t)(c->L + 1) * T * D * 4);
    for (int i = 0; i < c->n_acts; i++) {
        layer_acts *a = &c->acts[i];
        ALLOC(a->rstd1, T * 4); ALLOC(a->qkv, T * c->QKV * act); ALLOC(a->att, T * c->HD * act);
        if (c->flash_hdp) ALLOC(a->att_lse, T * c->H * 4);
        ALLOC(a->xmid, T * D * 4); ALLOC(a->rstd2, T * 4); ALLOC(a->gu, T * 2 * I * act);
        if (i > 0 && c->recompute == LLAMA_RECOMPUTE_SELECTIVE) {   /* one shared copy of the cheap ones */
            a->xn1 = c->acts[0].xn1; a->xn2 = c->acts[0].xn2; a->h = c->acts[0].h;
        } else {
            ALLOC(a->xn1, T * D * act); ALLOC(a->xn2, T * D * act); ALLOC(a->h, T * I * act);
        }
    }
    ALLOC(c->xf, T * D * act); ALLOC(c->rstd_final, T * 4);
    ALLOC(c->dres, T * D * 4); ALLOC(c->dxn, T * D * 4); ALLOC(c->dxf, T * D * 4); ALLOC(c->dres_cast, T * D * act);
    ALLOC(c->datt, T * c->HD * act); ALLOC(c->dh, T * I * act); ALLOC(c->dproj, T * proj_cols * act);
    ALLOC(c->dqkv_f32, T * c->QKV * 4);
    if (c->flash_hdp) ALLOC(c->att_dsum, T * c->H * 4);
    else { ALLOC(c->scores, scores * 4); ALLOC(c->probs, scores * act); }
    ALLOC(c->logits, T * c->lm_ld * 4); ALLOC(c->dlogits, T * c->lm_ld * act);
    ALLOC(c->row_max, T * 4); ALLOC(c->row_sumexp, T * 4); ALLOC(c->label_logit, T * 4); ALLOC(c->lse, T * 4);
    ALLOC(c->logp, T * 4); ALLOC(c->label_dlogp, T * 4);
    ALLOC(c->batch_ints, (6 * T + 1) * 4);
    c->tokens = c->batch_ints; c->positions = c->tokens + T; c->labels = c->positions + T; c->emb_groups = c->labels + T;
    ALLOC(c->rope_cos, T * (c->hd / 2) * 4); ALLOC(c->rope_sin, T * (c->hd / 2) * 4);
    ALLOC(c->sumsq, (1 + (size_t)MAX_ELEM_BLOCKS) * 8);
    ALLOC(c->adamw_tab, (size_t)c->n_tensors * sizeof(adamw_tensor));
    ALLOC(c->cublas_ws, c->cublas_ws_size);
#undef ALLOC
    return 0;
}

/* cuBLAS with our workspace; fp32 mode forbids TF32 (pedantic math) so it matches the CPU path. */
static int setup_cublas(cuda_ctx *c, char *err, size_t errsz)
{
    cublasStatus_t s = cublasCreate(&c->cublas);
    if (s != CUBLAS_STATUS_SUCCESS) {
        c->cublas = NULL;
        set_err(err, errsz, "kernels.cu:%d: cublasCreate failed: %s", __LINE__, cublas_name(s));
        return -1;
    }
    cublasMath_t math = c->bf16_compute ? CUBLAS_DEFAULT_MATH : CUBLAS_PEDANTIC_MATH;
    if (cublasSetWorkspace(c->cublas, c->cublas_ws, c->cublas_ws_size) != CUBLAS_STATUS_SUCCESS ||
        cublasSetMathMode(c->cublas, math) != CUBLAS_STATUS_SUCCESS) {
        set_err(err, errsz, "kernels.cu:%d: cuBLAS setup failed", __LINE__);
        return -1;
    }
    return 0;
}

/* RoPE tables: angle = pos * inv_freq[j] in fp32 with inv_freq from the CPU path (llama3
 * scaling included), cos and sin of it taken in double, stored fp32: the CPU path's numbers. */
static int upload_rope_tables(cuda_ctx *c, char *err, size_t errsz)
{
    int half = c->hd / 2;
    size_t table = (size_t)c->max_T * half;   /* elements per table */
    double *inv_freq = (double *)malloc((size_t)half * sizeof(double));
    float *cos_sin = (float *)malloc(table * 2 * sizeof(float));   /* cos table, then sin table */
    if (!inv_freq || !cos_sin) {
        free(inv_freq); free(cos_sin);
        set_err(err, errsz, "cuda backend: out of host memory");
        return -1;
    }
    llama_rope_inv_freq(&c->cfg, inv_freq);
    for (int pos = 0; pos < c->max_T; pos++)
        for (int j = 0; j < half; j++) {
            float angle = (float)pos * (float)inv_freq[j];   /* fp32 product, as HF and the CPU path */
            cos_sin[(size_t)pos * half + j] = (float)cos((double)angle);
            cos_sin[table + (size_t)pos * half + j] = (float)sin((double)angle);
        }
    cudaError_t e = cudaMemcpy(c->rope_cos, cos_sin, table * 4, cudaMemcpyHostToDevice);
    if (e == cudaSuccess) e = cudaMemcpy(c->rope_sin, cos_sin + table, table * 4, cudaMemcpyHostToDevice);
    free(inv_freq); free(cos_sin);
    if (e != cudaSuccess) {
        set_err(err, errsz, "kernels.cu:%d: rope table upload failed: %s", __LINE__, cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

/* The multi-tensor AdamW's table from the layout (offsets ascending, as adamw_multi_*_k walk
 * it; llama_layout lays tensors out in order). */
static int upload_adamw_table(cuda_ctx *c, char *err, size_t errsz)
{
    adamw_tensor *tab = (adamw_tensor *)calloc((size_t)c->n_tensors, sizeof *tab);
    if (!tab) { set_err(err, errsz, "cuda backend: out of host memory"); return -1; }
    for (int i = 0; i < c->n_tensors; i++) {
        const llama_tensor_info *ti = &c->tensors[i];
        tab[i].offset = ti->offset; tab[i].numel = ti->numel; tab[i].decay = ti->ndim == 2;
        if (i > 0 && ti->offset < tab[i - 1].offset + tab[i - 1].numel) {
            set_err(err, errsz, "cuda backend: tensor %d overlaps or precedes the one before it in the layout", i);
            free(tab);
            return -1;
        }
    }
    cudaError_t e = cudaMemcpy(c->adamw_tab, tab, (size_t)c->n_tensors * sizeof *tab, cudaMemcpyHostToDevice);
    free(tab);
    if (e != cudaSuccess) {
        set_err(err, errsz, "kernels.cu:%d: cudaMemcpy(adamw table) failed: %s", __LINE__, cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

/* Host-side tables: the tensor layout, per-batch scratch, the profiling events. */
static int alloc_host(cuda_ctx *c, const llama_config *cfg, char *err, size_t errsz)
{
    int n_tensors = llama_layout(cfg, NULL, &c->n_params);
    size_t M = (size_t)c->max_T;
    c->tensors = (llama_tensor_info *)calloc((size_t)(n_tensors > 0 ? n_tensors : 1), sizeof *c->tensors);
    c->layer_offs = (layer_offsets *)calloc((size_t)(c->L > 0 ? c->L : 1), sizeof *c->layer_offs);
    c->acts = (layer_acts *)calloc((size_t)c->n_acts, sizeof *c->acts);
    c->host_seq_start = (int *)malloc((M + 1) * sizeof(int));
    c->host_batch_ints = (int *)calloc(6 * M + 1, sizeof(int));   /* calloc: the upload copies it whole */
    c->host_label_dlogp = (float *)malloc(M * sizeof(float));
    if (n_tensors <= 0 || !c->tensors || !c->layer_offs || !c->acts || !c->host_seq_start || !c->host_batch_ints ||
        !c->host_label_dlogp) {
        set_err(err, errsz, "cuda backend: bad config or out of host memory");
        return -1;
    }
    c->host_labels = c->host_batch_ints + 2 * M;
    c->host_emb_groups = c->host_batch_ints + 3 * M;
    c->n_tensors = llama_layout(cfg, c->tensors, &c->n_params);
    if (c->profile) {
        c->prof_events = (cudaEvent_t *)calloc(PROF_MARKS, sizeof *c->prof_events);
        c->prof_cat = (int *)calloc(PROF_MARKS, sizeof *c->prof_cat);
        if (!c->prof_events || !c->prof_cat) { set_err(err, errsz, "cuda backend: out of host memory"); return -1; }
        for (int i = 0; i < PROF_MARKS; i++)
            if (cudaEventCreate(&c->prof_events[i]) != cudaSuccess) {
                set_err(err, errsz, "kernels.cu:%d: cudaEventCreate failed (profile)", __LINE__);
                return -1;
            }
    }
    return 0;
}

/* Parameters from the host model, or random on the device for a config-only model; zero
 * gradients and moments. Reports into the caller's err. */
static int init_state(cuda_ctx *c, const llama_model *m, char *err, size_t errsz)
{
    if (m->params) {
        if (m->n_params != c->n_params) {
            set_err(err, errsz, "cuda backend: model has %zu params, layout says %zu", m->n_params, c->n_params);
            return -1;
        }
        if (upload(c, c->master, m->params, c->lean) || refresh_w16(c)) {
            snprintf(err, errsz, "%s", c->backend->err);
            return -1;
        }
    } else if (init_random_device(c) || refresh_w16(c)) {
        snprintf(err, errsz, "%s", c->backend->err);
        return -1;
    }
    if (cudaMemset(c->grad, 0, c->n_params * grad_size(c)) != cudaSuccess ||
        cudaMemset(c->adam_m, 0, c->n_params * (c->lean ? 2 : 4)) != cudaSuccess ||
        cudaMemset(c->adam_v, 0, c->n_params * (c->lean ? 2 : 4)) != cudaSuccess ||
        cudaDeviceSynchronize() != cudaSuccess) {
        set_err(err, errsz, "kernels.cu:%d: initial cudaMemset failed: %s", __LINE__,
                cudaGetErrorString(cudaGetLastError()));
        return -1;
    }
    return 0;
}

extern "C" llama_backend *llama_cuda_backend_create(const llama_model *m, const llama_cuda_opts *opts,
                                                    char *err, size_t errsz)
{
    int n_devices = 0;
    cudaError_t e = cudaGetDeviceCount(&n_devices);
    if (e != cudaSuccess || n_devices == 0) {
        set_err(err, errsz, "no CUDA device: %s (hint: %s; or train on the CPU backend)",
                e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found 0 devices",
                e != cudaSuccess ? cuda_hint(e) : cuda_hint(cudaErrorNoDevice));
        cudaGetLastError();                        /* not a sticky error: clear it for later calls */
        return NULL;
    }
    if (!m || !opts) { set_err(err, errsz, "llama_cuda_backend_create: model and opts are required"); return NULL; }
    if (opts->device < 0 || opts->device >= n_devices) {
        set_err(err, errsz, "cuda device %d does not exist: this machine has %d (0..%d)", opts->device, n_devices,
                n_devices - 1);
        return NULL;
    }
    if (check_opts(&m->cfg, opts, err, errsz)) return NULL;

    llama_backend *b = (llama_backend *)calloc(1, sizeof *b);
    cuda_ctx *c = (cuda_ctx *)calloc(1, sizeof *c);
    if (!b || !c) { free(b); free(c); set_err(err, errsz, "cuda backend: out of host memory"); return NULL; }
    b->impl = c;
    c->backend = b;
    ctx_shape(c, &m->cfg, opts);
    c->prof_region = PROF_IDLE;
    b->cfg = m->cfg;
    b->name = c->lean ? "cuda-bf16-lean" : c->bf16_compute ? "cuda-bf16" : "cuda-fp32";
    b->forward = cuda_forward; b->backward = cuda_backward; b->zero_grad = cuda_zero_grad;
    b->grad_norm = cuda_grad_norm; b->adamw_step = cuda_adamw_step; b->get_state = cuda_get_state;
    b->set_state = cuda_set_state; b->destroy = cuda_destroy;
    b->n_params = c->n_params;
    if (alloc_host(c, &m->cfg, err, errsz) || find_offsets(c, err, errsz) || check_fits(c, opts->verbose, err, errsz) ||
        alloc_device(c, err, errsz) || setup_cublas(c, err, errsz) || upload_rope_tables(c, err, errsz) ||
        upload_adamw_table(c, err, errsz) || init_state(c, m, err, errsz)) {
        ctx_free(c);
        free(b);
        return NULL;
    }
    return b;
}

/* The time split of the work since the last reset (opts.profile), in milliseconds of device
 * time: ms[0] the layers' GEMMs (projections and MLP), ms[1] attention (its GEMMs and softmax),
 * ms[2] elementwise and normalisation kernels (embedding, RMSNorm, RoPE, SwiGLU, casts, copies),
 * ms[3] the LM head (chunk GEMMs and log-softmax passes), ms[4] the optimizer (grad norm, AdamW).
 * reset: start counting afresh after reading. -1 (with err) when the backend was created without
 * profile. */
extern "C" int llama_cuda_time_split(llama_backend *b, double ms[5], int reset)
{
    cuda_ctx *c = ctx_of(b);
    if (!c->profile) { ctx_error(c, "llama_cuda_time_split: create the backend with opts.profile = 1"); return -1; }
    CUDA_CHECK(cudaSetDevice(c->device));
    prof_collect(c);
    for (int k = 0; k < 5; k++) ms[k] = c->prof_ms[k];
    if (reset) memset(c->prof_ms, 0, sizeof c->prof_ms);
    return 0;
}

/* The cuBLAS ceiling of one linear layer as the lean backend runs it (bf16 operands, fp32
 * accumulation): y[T, out] = x W^T (bf16 output), dx = dy W (fp32 output), dW += dy^T x (bf16),
 * timed with CUDA events over `reps` repetitions after one warm-up. *ms = milliseconds of one
 * forward + backward (the three GEMMs; 6 T in out FLOPs). Benchmarks compare a model's step
 * with the sum of these over its shapes: what is left is the time outside cuBLAS. */
extern "C" int llama_cuda_linear_ceiling(int T, int in, int out, int reps, double *ms, char *err, size_t errsz)
{
    llama_backend b;
    cuda_ctx c;
    memset(&b, 0, sizeof b);
    memset(&c, 0, sizeof c);
    c.backend = &b; b.impl = &c;
    c.bf16_compute = 1; c.lean = 1; c.act_size = 2; c.prof_region = PROF_IDLE;
    void *x = NULL, *W = NULL, *y = NULL, *dx = NULL, *dW = NULL;
    cudaEvent_t start = NULL, stop = NULL;
    int status = -1;
    size_t sx = (size_t)T * in, sw = (size_t)out * in, sy = (size_t)T * out;
    if (reps < 1 || T < 1 || in < 1 || out < 1) { set_err(err, errsz, "linear ceiling: bad shape or reps"); return -1; }
    if (device_alloc(&x, sx * 2, "x", err, errsz) || device_alloc(&W, sw * 2, "W", err, errsz) ||
        device_alloc(&y, sy * 2, "y", err, errsz) || device_alloc(&dx, sx * 4, "dx", err, errsz) ||
        device_alloc(&dW, sw * 2, "dW", err, errsz)) goto done;
    if (cudaMemset(x, 0, sx * 2) != cudaSuccess || cudaMemset(W, 0, sw * 2) != cudaSuccess ||
        cudaMemset(dW, 0, sw * 2) != cudaSuccess || cudaEventCreate(&start) != cudaSuccess ||
        cudaEventCreate(&stop) != cudaSuccess || cublasCreate(&c.cublas) != CUBLAS_STATUS_SUCCESS) {
        set_err(err, errsz, "linear ceiling: setup failed");
        goto done;
    }
    for (int r = 0; r <= reps; r++) {
        if (r == 1 && cudaEventRecord(start, 0) != cudaSuccess) break;   /* r = 0 warms up */
        if (gemm(&c, 0, 1, T, out, in, 1.f, x, in, 0, W, in, 0, 0.f, y, CUDA_R_16BF, out, 0, 1) ||
            gemm(&c, 0, 0, T, in, out, 1.f, y, out, 0, W, in, 0, 0.f, dx, CUDA_R_32F, in, 0, 1) ||
            gemm(&c, 1, 0, out, in, T, 1.f, y, out, 0, x, in, 0, 1.f, dW, CUDA_R_16BF, in, 0, 1)) {
            set_err(err, errsz, "%s", b.err);
            goto done;
        }
    }
    {
        float total = 0.f;
        if (cudaEventRecord(stop, 0) != cudaSuccess || cudaEventSynchronize(stop) != cudaSuccess ||
            cudaEventElapsedTime(&total, start, stop) != cudaSuccess) {
            set_err(err, errsz, "linear ceiling: timing failed: %s", cudaGetErrorString(cudaGetLastError()));
            goto done;
        }
        *ms = total / reps;
    }
    status = 0;
done:
    if (c.cublas) cublasDestroy(c.cublas);
    if (start) cudaEventDestroy(start);
    if (stop) cudaEventDestroy(stop);
    cudaFree(x); cudaFree(W); cudaFree(y); cudaFree(dx); cudaFree(dW);
    return status;
}
