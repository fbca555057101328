/* llama/gemm.c - the two fast kernels under the CPU model (llama/model.c): the strided matrix
 * product llama_gemm and the softmax exp llama_exp_f32. model.c spells out the model's math and
 * calls these for the heavy lifting; this file only makes them fast. What they compute is
 * stated by model.h and by the plain loops of gemm_plain below; the packed, vectorised code
 * computes exactly that, and tests/model checks every kernel level this CPU has against a
 * double-precision loop on awkward sizes.
 *
 * llama_gemm: C[r, j] += sum_kk A(r, kk) * B(kk, j) for r < n, j < m, kk < k, where A and B are
 * read through strides: A(r, kk) = A[r*ars + kk*aks], B(kk, j) = B[kk*bks + j*bjs]. That covers
 *   forward   Y = X W^T      (B = W^T read in place: bks = 1, bjs = in)
 *   backward  dX += dY W     (B = W as stored)
 *   backward  dW += dY^T X   (A = dY^T read in place: ars = 1, aks = out)
 * and attention's products on strided views of q/k/v.
 *
 * The classic Goto/BLIS scheme, plainly:
 *   for each column block of NC columns:
 *     for each k block of KB:
 *       pack B[KB, NC] into panels of NR columns: [panel][kk][NR], zero-padded  (shared, L2/L3)
 *       for each row block of MC rows:
 *         pack A[MC, KB] into slivers of MR rows: [sliver][kk][MR], zero-padded (shared, L2)
 *         every (panel, sliver) pair: a register tile C[MR, NR] += sliver * panel
 * Packing makes the tile's inner loop two unit-stride streams whatever the strides (the
 * transposes of the weight-gradient and attention products cost nothing extra) and copies each
 * operand once per block instead of once per use. Threads split the packing and the
 * (panel, sliver) pairs; pairs own disjoint C tiles, so no two threads write the same C.
 * Every C element is summed in the same order (k blocks in order, kk in order inside one) for
 * any thread count or tile shape, so results do not depend on OMP_NUM_THREADS.
 *
 * Kernel levels (llama_gemm_force_level): 1 "generic" = the tile written with GCC/Clang vector
 * extensions for the baseline target (plain loops with other compilers); 2 = the same C compiled
 * for AVX2+FMA; 3 = for AVX-512; 4 = gemm_plain, no packing, no threads. With GCC on x86-64 the
 * best of 1-3 this CPU has is picked at run time, so the binary still runs on any x86-64. Built with -O3 -ffp-contract=fast (mk/30-model.sh)
 * so the tile's multiply-adds become FMAs.
 *
 * Design notes and measurements: docs/design.md (model, "Matmul" and "Softmax exps").
 */
#include "model.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if !defined(_OPENMP) && defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wunknown-pragmas" /* built without OpenMP: serial loops */
#endif

#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* ========================================================================================== */
/* The definition                                                                              */

#define KB 256   /* k block: an A sliver is KB*MR floats (8 KiB at MR 8), a B panel KB*NR     */

/* llama_gemm as plain loops: for each k block of KB, every C element gets the block's sum
 * added, summed in kk order. This is the order every kernel below sums in; the packed kernels
 * are this loop nest reordered for the caches and registers. It runs when the packing buffers
 * cannot be allocated (slower, same sums), and as kernel level 4 (llama_gemm_force_level), so
 * that the test checks it like the others. */
static void gemm_plain(float *C, size_t ldc, const float *A, ptrdiff_t ars, ptrdiff_t aks,
                       const float *B, ptrdiff_t bks, ptrdiff_t bjs, int n, int k, int m)
{
    for (int k0 = 0; k0 < k; k0 += KB)
        for (int r = 0; r < n; r++)
            for (int j = 0; j < m; j++) {
                float s = 0;
                for (int kk = k0; kk < MIN(k, k0 + KB); kk++)
                    s += A[(ptrdiff_t)r * ars + (ptrdiff_t)kk * aks] * B[(ptrdiff_t)kk * bks + (ptrdiff_t)j * bjs];
                C[(size_t)r * ldc + j] += s;
            }
}

/* ========================================================================================== */
/* Register tiles and packing                                                                  */

#define MC 192   /* rows packed at once: A block MC*KB floats = 192 KiB, stays in L2          */
#define NC 1024  /* columns packed at once: B block KB*NC floats = 1 MiB, L2/L3               */
#define MR_MAX 8 /* the largest tile: 8 rows x 32 columns (AVX-512)                            */
#define NR_MAX 32

#if defined(__GNUC__) && !defined(__clang__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

/* A register tile: C[mr, nr] += a[kk][0..MR) x b[kk][0..NR) over kk < kn, where a and b are a
 * packed sliver and panel and mr <= MR, nr <= NR say how much of the tile is inside C. */
typedef void (*gemm_tile_fn)(int kn, const float *a, const float *b, float *C, size_t ldc, int mr,
                             int nr);
/* Packing, the same for slivers of A and panels of B: dst[kk*w + r] = src[r*rs + kk*ks] for
 * r < rv, kk < kn, and 0 for rv <= r < w. */
typedef void (*gemm_pack_fn)(float *dst, const float *src, ptrdiff_t rs, ptrdiff_t ks, int rv,
                             int kn, int w);
/* One kernel level: a tile and the packing compiled for the same instruction set. */
typedef struct {
    gemm_tile_fn tile;
    gemm_pack_fn pack;
    int mr, nr;                  /* tile shape: A slivers are [KB][mr], B panels [KB][nr] */
} gemm_kernel;

/* With GCC/Clang the tile is written with vector extensions (vf16 = 16 floats: one AVX-512
 * register, two AVX2, four SSE), because auto-vectorisers do not reliably keep a 2-D
 * accumulator array in registers. The body is a template in MR_ rows x NV_ vf16's: after
 * inlining with constants the loops unroll completely and acc lives in registers. Sizes:
 * AVX-512 has 32 registers: 8 x 32 (16 accumulators, 16 FMAs per 8 broadcasts + 2 loads);
 * AVX2 and SSE have 16: 6 x 16 (12 accumulators in AVX2 registers). */
#if defined(__GNUC__)
typedef float vf16 __attribute__((vector_size(16 * sizeof(float))));

static ALWAYS_INLINE void tile_body(const int MR_, const int NV_, int kn, const float *a,
                                    const float *b, float *C, size_t ldc, int mr, int nr)
{
    vf16 acc[MR_MAX][2];
    for (int r = 0; r < MR_; r++)
        for (int v = 0; v < NV_; v++) acc[r][v] = (vf16){0};
    /* C's lines are needed only after the k loop; asking for them now hides the latency when C
     * is larger than L2 (T = 1024: 2.4 MB for a [T, 576] product, read once per k block) */
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < NV_; v++) __builtin_prefetch(C + (size_t)r * ldc + 16 * v, 1);
    for (int kk = 0; kk < kn; kk++) {
        vf16 bv[2];
        for (int v = 0; v < NV_; v++) memcpy(&bv[v], b + 16 * v, sizeof(vf16));
        for (int r = 0; r < MR_; r++)
            for (int v = 0; v < NV_; v++) acc[r][v] += a[r] * bv[v];
        a += MR_;
        b += 16 * NV_;
    }
    if (mr == MR_ && nr == 16 * NV_) { /* whole tile inside C: vector adds */
        for (int r = 0; r < MR_; r++)
            for (int v = 0; v < NV_; v++) {
                float *c = C + (size_t)r * ldc + 16 * v;
                vf16 t;
                memcpy(&t, c, sizeof t);
                t += acc[r][v];
                memcpy(c, &t, sizeof t);
            }
    } else { /* an edge tile: only the part inside C */
        for (int r = 0; r < mr; r++)
            for (int v = 0; v < NV_; v++) {
                float t[16];
                memcpy(t, &acc[r][v], sizeof t);
                for (int j = 0; j < 16 && 16 * v + j < nr; j++) C[(size_t)r * ldc + 16 * v + j] += t[j];
            }
    }
}

static void tile_6x16(int kn, const float *a, const float *b, float *C, size_t ldc, int mr, int nr)
{
    tile_body(6, 1, kn, a, b, C, ldc, mr, nr);
}
#else
/* Portable C: the same tile as plain loops. */
static void tile_6x16(int kn, const float *a, const float *b, float *C, size_t ldc, int mr, int nr)
{
    float acc[6][16] = {{0}};
    for (int kk = 0; kk < kn; kk++, a += 6, b += 16)
        for (int r = 0; r < 6; r++)
            for (int j = 0; j < 16; j++) acc[r][j] += a[r] * b[j];
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nr; j++) C[(size_t)r * ldc + j] += acc[r][j];
}
#endif

/* dst[c*ldd + r] = src[r*lds + c] for r, c < 8: an 8x8 transpose in registers, three rounds of
 * two-input shuffles (GCC's __builtin_shuffle; elsewhere the scalar loop in pack_body). This is
 * where packing spends its time when the packed index is the strided one (A = dY in dX = dY W,
 * B = W^T in Y = X W^T, attention's P and dS): element by element it cost as much as a
 * sixth of the whole step. */
#if defined(__GNUC__) && !defined(__clang__)
#define LLAMA_SHUFFLE 1
typedef float vf8 __attribute__((vector_size(8 * sizeof(float))));
typedef int vi8 __attribute__((vector_size(8 * sizeof(int))));
static ALWAYS_INLINE void transpose8(float *dst, ptrdiff_t ldd, const float *src, ptrdiff_t lds)
{
    vf8 a[8], b[8];
    for (int i = 0; i < 8; i++) memcpy(&a[i], src + i * lds, sizeof(vf8));
    for (int i = 0; i < 8; i += 2) { /* rows i, i+1 interleaved: columns (0,1|4,5), (2,3|6,7) */
        b[i] = __builtin_shuffle(a[i], a[i + 1], (vi8){0, 8, 1, 9, 4, 12, 5, 13});
        b[i + 1] = __builtin_shuffle(a[i], a[i + 1], (vi8){2, 10, 3, 11, 6, 14, 7, 15});
    }
    for (int i = 0; i < 8; i += 4) { /* rows i..i+3 of columns (0|4), (1|5), (2|6), (3|7) */
        a[i] = __builtin_shuffle(b[i], b[i + 2], (vi8){0, 1, 8, 9, 4, 5, 12, 13});
        a[i + 1] = __builtin_shuffle(b[i], b[i + 2], (vi8){2, 3, 10, 11, 6, 7, 14, 15});
        a[i + 2] = __builtin_shuffle(b[i + 1], b[i + 3], (vi8){0, 1, 8, 9, 4, 5, 12, 13});
        a[i + 3] = __builtin_shuffle(b[i + 1], b[i + 3], (vi8){2, 3, 10, 11, 6, 7, 14, 15});
    }
    for (int c = 0; c < 4; c++) { /* columns c and c+4, rows 0..7 */
        b[c] = __builtin_shuffle(a[c], a[c + 4], (vi8){0, 1, 2, 3, 8, 9, 10, 11});
        b[c + 4] = __builtin_shuffle(a[c], a[c + 4], (vi8){4, 5, 6, 7, 12, 13, 14, 15});
    }
    for (int c = 0; c < 8; c++) memcpy(dst + c * ldd, &b[c], sizeof(vf8));
}
#endif

static ALWAYS_INLINE void pack_body(float *dst, const float *src, ptrdiff_t rs, ptrdiff_t ks,
                                    int rv, int kn, int w)
{
    if (ks == 1) { /* each packed row is contiguous in src: a transpose */
        int r = 0;
#ifdef LLAMA_SHUFFLE
        for (; r + 8 <= rv; r += 8) {
            int kk = 0;
            for (; kk + 8 <= kn; kk += 8) transpose8(dst + (ptrdiff_t)kk * w + r, w, src + r * rs + kk, rs);
            for (; kk < kn; kk++)
                for (int i = r; i < r + 8; i++) dst[(ptrdiff_t)kk * w + i] = src[i * rs + kk];
        }
#endif
        for (; r < rv; r++)
            for (int kk = 0; kk < kn; kk++) dst[(ptrdiff_t)kk * w + r] = src[r * rs + kk];
    } else if (rs == 1) { /* contiguous along the packed row: plain copies (a loop, not a
                           * memcpy call per 32 floats) */
        for (int kk = 0; kk < kn; kk++)
            for (int r = 0; r < rv; r++) dst[(ptrdiff_t)kk * w + r] = src[kk * ks + r];
    } else {
        for (int kk = 0; kk < kn; kk++)
            for (int r = 0; r < rv; r++) dst[(ptrdiff_t)kk * w + r] = src[r * rs + kk * ks];
    }
    for (int kk = 0; kk < kn; kk++)
        for (int r = rv; r < w; r++) dst[(ptrdiff_t)kk * w + r] = 0.0f;
}

static void pack_generic(float *dst, const float *src, ptrdiff_t rs, ptrdiff_t ks, int rv, int kn,
                         int w)
{
    pack_body(dst, src, rs, ks, rv, kn, w);
}

/* On x86 with GCC, the same C compiled for AVX2+FMA and AVX-512, picked at run time: the
 * binary still runs on any x86-64. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define LLAMA_X86_DISPATCH 1
#define AVX2 __attribute__((target("avx2,fma")))
#define AVX512 __attribute__((target("avx512f,avx2,fma")))
AVX2 static void tile_6x16_avx2(int kn, const float *a, const float *b, float *C, size_t ldc,
                                int mr, int nr)
{
    tile_body(6, 1, kn, a, b, C, ldc, mr, nr);
}
AVX2 static void pack_avx2(float *dst, const float *src, ptrdiff_t rs, ptrdiff_t ks, int rv, int kn,
                           int w)
{
    pack_body(dst, src, rs, ks, rv, kn, w);
}
AVX512 static void tile_8x32_avx512(int kn, const float *a, const float *b, float *C, size_t ldc,
                                    int mr, int nr)
{
    tile_body(8, 2, kn, a, b, C, ldc, mr, nr);
}
AVX512 static void pack_avx512(float *dst, const float *src, ptrdiff_t rs, ptrdiff_t ks, int rv,
                               int kn, int w)
{
    pack_body(dst, src, rs, ks, rv, kn, w);
}
#endif

#define LEVEL_PLAIN 4 /* llama_gemm_force_level(4): gemm_plain, and the generic exp */
static int gemm_level_forced = 0; /* llama_gemm_force_level: tests run every kernel there is */

static gemm_kernel pick_gemm_kernel(void)
{
#ifdef LLAMA_X86_DISPATCH
    /* libgcc's constructor has filled in the CPU model before main: no __builtin_cpu_init */
    const int f = gemm_level_forced;
    if ((f == 0 || f == 3) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma"))
        return (gemm_kernel){tile_8x32_avx512, pack_avx512, 8, 32};
    if ((f == 0 || f == 2) && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return (gemm_kernel){tile_6x16_avx2, pack_avx2, 6, 16};
#endif
    return (gemm_kernel){tile_6x16, pack_generic, 6, 16};
}

int llama_gemm_force_level(int level)
{
    int ok = level == 0 || level == 1 || level == LEVEL_PLAIN;
#ifdef LLAMA_X86_DISPATCH
    if (level == 2) ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (level == 3) ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
#endif
    if (!ok) return -1;
    gemm_level_forced = level;
    return 0;
}

/* ========================================================================================== */
/* The blocked product                                                                         */

void llama_gemm(float *C, size_t ldc, const float *A, ptrdiff_t ars, ptrdiff_t aks, const float *B,
                ptrdiff_t bks, ptrdiff_t bjs, int n, int k, int m)
{
    if (n <= 0 || m <= 0 || k <= 0) return;
    if (gemm_level_forced == LEVEL_PLAIN) {
        gemm_plain(C, ldc, A, ars, aks, B, bks, bjs, n, k, m);
        return;
    }
    const gemm_kernel kr = pick_gemm_kernel(); /* a few loads; no shared state to race on */
    const int mr = kr.mr, nr = kr.nr;
    /* packing buffers, sized for this product's blocks (64-byte aligned for the vector loads) */
    const int kb = MIN(KB, k);
    const size_t a_cap = (size_t)((MIN(MC, n) + mr - 1) / mr * mr) * kb;
    const size_t b_cap = (size_t)((MIN(NC, m) + nr - 1) / nr * nr) * kb;
    float *buf = (float *)malloc((a_cap + b_cap) * sizeof(float) + 64);
    if (!buf) { /* no memory for packing: the plain loops, same sums in the same order, slower */
        gemm_plain(C, ldc, A, ars, aks, B, bks, bjs, n, k, m);
        return;
    }
    float *Ap = (float *)(((uintptr_t)buf + 63) & ~(uintptr_t)63), *Bp = Ap + a_cap;
#pragma omp parallel if ((double)n * k * m > 2e5)
    for (int j0 = 0; j0 < m; j0 += NC) {
        const int jn = MIN(NC, m - j0), np = (jn + nr - 1) / nr;
        for (int k0 = 0; k0 < k; k0 += KB) {
            const int kn = MIN(KB, k - k0);
#pragma omp for schedule(static)
            for (int p = 0; p < np; p++) /* panel p: columns j0 + p*nr ... */
                kr.pack(Bp + (size_t)p * kn * nr, B + (ptrdiff_t)k0 * bks + (ptrdiff_t)(j0 + p * nr) * bjs,
                        bjs, bks, MIN(nr, jn - p * nr), kn, nr);
            for (int r0 = 0; r0 < n; r0 += MC) {
                const int rn = MIN(MC, n - r0), ns = (rn + mr - 1) / mr;
#pragma omp for schedule(static)
                for (int s = 0; s < ns; s++) /* sliver s: rows r0 + s*mr ... */
                    kr.pack(Ap + (size_t)s * kn * mr, A + (ptrdiff_t)(r0 + s * mr) * ars + (ptrdiff_t)k0 * aks,
                            ars, aks, MIN(mr, rn - s * mr), kn, mr);
                /* panels outer: a thread keeps one B panel in L1 and sweeps the A slivers (L2) */
#pragma omp for collapse(2) schedule(static)
                for (int p = 0; p < np; p++)
                    for (int s = 0; s < ns; s++)
                        kr.tile(kn, Ap + (size_t)s * kn * mr, Bp + (size_t)p * kn * nr,
                                C + (size_t)(r0 + s * mr) * ldc + j0 + p * nr, ldc,
                                MIN(mr, rn - s * mr), MIN(nr, jn - p * nr));
            }
        }
    }
    free(buf);
}

/* ========================================================================================== */
/* Softmax exp                                                                                 */

/* x[i] = e^(x[i] * scale - shift), in fp32, for softmax arguments (<= 0, or barely above from
 * rounding). libm's expf is a call per element and was most of attention's time; this is Cephes'
 * expf written so that compilers vectorise the loop: e^a = 2^n e^r with n = round(a log2 e) (by
 * adding 1.5 * 2^23), r = a - n ln 2 in two parts (|r| <= ln2 / 2), e^r by a degree-6
 * polynomial, 2^n put straight into the exponent bits. a is clamped to [-87, 88] so 2^n stays a
 * normal float; below -87 the result is 0 (e^-87 ~ 1.6e-38), NaN stays NaN. The selects are
 * integer masks: float ?: would be a branch under GCC's default -ftrapping-math and stop the
 * vectoriser. Relative error ~1e-7 (test: against exp in double). */
static ALWAYS_INLINE void exp_body(float *x, int n, float scale, float shift)
{
    for (int i = 0; i < n; i++) {
        const float a = x[i] * scale - shift;
        uint32_t ab, cb, tb, sb, yb;
        memcpy(&ab, &a, 4);
        const uint32_t lo = -(uint32_t)(a < -87.0f), hi = -(uint32_t)(a > 88.0f);
        const uint32_t nan = -(uint32_t)(a != a);
        cb = (ab & ~(lo | hi)) | (0xC2AE0000u & lo) | (0x42B00000u & hi); /* bits of -87, 88 */
        float c, s, y;
        memcpy(&c, &cb, 4);
        const float t = c * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23 + n */
        const float nf = t - 12582912.0f;
        const float r = (c - nf * 0.693359375f) - nf * -2.12194440e-4f;
        float p = 1.9875691500e-4f;
        p = p * r + 1.3981999507e-3f;
        p = p * r + 8.3334519073e-3f;
        p = p * r + 4.1665795894e-2f;
        p = p * r + 1.6666665459e-1f;
        p = p * r + 5.0000001201e-1f;
        const float er = p * (r * r) + r + 1.0f;
        memcpy(&tb, &t, 4);
        sb = (tb - 0x4B400000u + 127u) << 23; /* tb - bits(1.5 * 2^23) = n; biased exponent */
        memcpy(&s, &sb, 4);
        y = er * s;
        memcpy(&yb, &y, 4);
        yb = (yb & ~(lo | nan)) | (ab & nan);
        memcpy(&x[i], &yb, 4);
    }
}

#ifdef LLAMA_X86_DISPATCH
AVX512 static void exp_avx512(float *x, int n, float scale, float shift)
{
    exp_body(x, n, scale, shift);
}
#endif

void llama_exp_f32(float *x, int n, float scale, float shift)
{
#ifdef LLAMA_X86_DISPATCH
    const int f = gemm_level_forced; /* the tests run both versions */
    if ((f == 0 || f == 3) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")) {
        exp_avx512(x, n, scale, shift);
        return;
    }
#endif
    exp_body(x, n, scale, shift);
}
