/* tests/gpu/emu/cublas_v2.h - the cuBLAS subset kernels.cu uses, for the CPU emulator (see
 * cuda_runtime.h here). cublasGemmStridedBatchedEx is computed in double (column-major, like
 * cuBLAS) after checking what cuBLAS checks (leading dimensions) and, beyond cuBLAS, that every
 * matrix of every batch entry lies inside one cudaMalloc allocation; GEMMs with unaligned rows
 * are counted in emu_misaligned_gemms. beta = 0 never reads C. */
#ifndef EMU_CUBLAS_V2_H
#define EMU_CUBLAS_V2_H
#include "cuda_runtime.h"
#include "cuda_bf16.h"

typedef struct emu_cublas { int math; } *cublasHandle_t;
typedef enum {
    CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_NOT_INITIALIZED = 1, CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7, CUBLAS_STATUS_ARCH_MISMATCH = 8, CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_INTERNAL_ERROR = 14, CUBLAS_STATUS_NOT_SUPPORTED = 15
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_PEDANTIC = 69 } cublasComputeType_t;
typedef enum { CUBLAS_DEFAULT_MATH = 0, CUBLAS_PEDANTIC_MATH = 2 } cublasMath_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;

static inline cublasStatus_t cublasCreate(cublasHandle_t *h) { *h = (cublasHandle_t)calloc(1, sizeof **h); return CUBLAS_STATUS_SUCCESS; }
static inline cublasStatus_t cublasDestroy(cublasHandle_t h) { free(h); return CUBLAS_STATUS_SUCCESS; }
static inline cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *p, size_t n)
{
    (void)h;
    return emu_in_alloc(p, n) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}
static inline cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m) { h->math = m; return CUBLAS_STATUS_SUCCESS; }

static inline size_t emu_esz(cudaDataType_t t) { return t == CUDA_R_16BF ? 2 : 4; }
static inline double emu_ld(const void *p, cudaDataType_t t, size_t i)
{
    return t == CUDA_R_16BF ? (double)__bfloat162float(((const __nv_bfloat16 *)p)[i]) : (double)((const float *)p)[i];
}
/* Bytes from a matrix's first element to one past its last: rows x cols column-major, ld. */
static inline size_t emu_span(int rows, int cols, int ld, cudaDataType_t t)
{
    return ((size_t)(cols - 1) * ld + rows) * emu_esz(t);
}

/* Does every row (column here) of every batch entry start 16-byte aligned? (What cuBLAS's
 * tensor-core kernels need; otherwise they fall back to slower ones.) */
static inline bool emu_aligned(const void *p, int ld, long long stride, cudaDataType_t t, int batch)
{
    size_t esz = emu_esz(t);
    return (uintptr_t)p % 16 == 0 && (size_t)ld * esz % 16 == 0 && (batch == 1 || (size_t)stride * esz % 16 == 0);
}

static inline cublasStatus_t cublasGemmStridedBatchedEx(
    cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *alpha,
    const void *A, cudaDataType_t at, int lda, long long sA, const void *B, cudaDataType_t bt, int ldb, long long sB,
    const void *beta, void *C, cudaDataType_t ct, int ldc, long long sC, int batch, cublasComputeType_t comp,
    cublasGemmAlgo_t algo)
{
    (void)algo;
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (at != bt || (comp != CUBLAS_COMPUTE_32F && comp != CUBLAS_COMPUTE_32F_PEDANTIC)) return CUBLAS_STATUS_NOT_SUPPORTED;
    int arows = ta == CUBLAS_OP_N ? m : k, acols = ta == CUBLAS_OP_N ? k : m;
    int brows = tb == CUBLAS_OP_N ? k : n, bcols = tb == CUBLAS_OP_N ? n : k;
    if (m < 0 || n < 0 || k < 0 || batch < 0 || lda < (arows > 1 ? arows : 1) || ldb < (brows > 1 ? brows : 1) ||
        ldc < (m > 1 ? m : 1)) {
        fprintf(stderr, "CUDA EMULATOR: cublasGemmStridedBatchedEx: invalid m %d n %d k %d lda %d ldb %d ldc %d\n", m, n, k, lda, ldb, ldc);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
    if (!emu_aligned(A, lda, sA, at, batch) || !emu_aligned(B, ldb, sB, bt, batch) || !emu_aligned(C, ldc, sC, ct, batch))
        emu_misaligned_gemms++;
    float al = *(const float *)alpha, be = *(const float *)beta;
    for (int b = 0; b < batch; b++) {
        const char *Ab = (const char *)A + (size_t)b * sA * emu_esz(at), *Bb = (const char *)B + (size_t)b * sB * emu_esz(bt);
        char *Cb = (char *)C + (size_t)b * sC * emu_esz(ct);
        if ((k > 0 && (!emu_in_alloc(Ab, emu_span(arows, acols, lda, at)) || !emu_in_alloc(Bb, emu_span(brows, bcols, ldb, bt)))) ||
            !emu_in_alloc(Cb, emu_span(m, n, ldc, ct))) {
            fprintf(stderr, "CUDA EMULATOR: cublasGemmStridedBatchedEx: batch %d of %d: a matrix leaves its allocation "
                    "(m %d n %d k %d lda %d ldb %d ldc %d strides %lld %lld %lld)\n", b, batch, m, n, k, lda, ldb, ldc, sA, sB, sC);
            emu_sticky = cudaErrorIllegalAddress;
            return CUBLAS_STATUS_EXECUTION_FAILED;
        }
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double s = 0;
                for (int p = 0; p < k; p++) {
                    double a = ta == CUBLAS_OP_N ? emu_ld(Ab, at, (size_t)i + (size_t)p * lda) : emu_ld(Ab, at, (size_t)p + (size_t)i * lda);
                    double bb = tb == CUBLAS_OP_N ? emu_ld(Bb, bt, (size_t)p + (size_t)j * ldb) : emu_ld(Bb, bt, (size_t)j + (size_t)p * ldb);
                    s += a * bb;
                }
                size_t o = (size_t)i + (size_t)j * ldc;
                double r = al * s + (be != 0.f ? be * emu_ld(Cb, ct, o) : 0.0);
                if (ct == CUDA_R_16BF) ((__nv_bfloat16 *)Cb)[o] = __float2bfloat16((float)r);
                else ((float *)Cb)[o] = (float)r;
            }
    }
    return CUBLAS_STATUS_SUCCESS;
}
#endif
