/* tests/gpu/test_kernels.cu - every kernel of kernels.cu against its CPU twin, on a GPU.
 *
 * Includes kernels.cu itself (one translation unit) so the static kernels and operations can be
 * called directly. Twins are the CPU path's building blocks (llama_matmul, llama_rmsnorm,
 * llama_rope_apply) where model.h has them, and plain double-precision loops here for the
 * backward passes and the pieces model.h does not export (softmax, attention, SwiGLU, LM head,
 * AdamW): those are written from the formulas, not copied from kernels.cu.
 *
 * Each check: fresh random inputs, outputs poisoned with NaN (0xFF bytes) before the launch,
 * every element compared with |got - ref| <= atol + rtol |ref| (NaN fails, so an element left
 * unwritten fails). Both compute types: fp32 (tight) and bf16 (inputs rounded to bf16 on the host
 * first, so the twin sees the same values; tolerance of bf16 outputs).
 *
 * Exit 0 all pass, 1 a failure, 77 when there is no CUDA device. */
#include "../../kernels.cu"

static int g_fail = 0, g_checks = 0;
static llama_backend g_backend;    /* only its err buffer: the operations report there */
static cublasHandle_t g_cublas;

/* Setup steps that must work for the checks to mean anything: stop at the first failure. */
#define REQUIRE_OK(x) do { if (x) { printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, g_backend.err); exit(1); } } while (0)
#define REQUIRE_CUDA(x)                                                                           \
    do {                                                                                          \
        cudaError_t e_ = (x);                                                                     \
        if (e_ != cudaSuccess) {                                                                  \
            printf("FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));       \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static float frand(void)                      /* uniform [-1, 1) */
{
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (float)((g_rng >> 40) * (1.0 / 8388608.0)) - 1.f;
}
/* x rounded to bf16 and back: a value the device can hold exactly */
static float round_bf16(float x) { return bf16_bits_to_f32(f32_to_bf16_bits(x)); }

/* Host vector of n random values * s, rounded to bf16 when bf (the device will hold those). */
static float *host_random(size_t n, float s, int bf)
{
    float *h = (float *)malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) { h[i] = frand() * s; if (bf) h[i] = round_bf16(h[i]); }
    return h;
}
/* Device buffer of n elements (bf16 when bf, else fp32) filled with 0xFF bytes, which read as
 * NaN in both types, so an element a kernel fails to write shows up in check(). */
static void *device_poisoned(size_t n, int bf)
{
    void *d; REQUIRE_CUDA(cudaMalloc(&d, n * (bf ? 2 : 4) + 16)); REQUIRE_CUDA(cudaMemset(d, 0xFF, n * (bf ? 2 : 4) + 16));
    return d;
}
/* A device copy of host h[n], stored as bf16 when bf. */
static void *to_device(const float *h, size_t n, int bf)
{
    void *d = device_poisoned(n, bf);
    if (!bf) REQUIRE_CUDA(cudaMemcpy(d, h, n * 4, cudaMemcpyHostToDevice));
    else {
        uint16_t *t = (uint16_t *)malloc(n * 2);
        for (size_t i = 0; i < n; i++) t[i] = f32_to_bf16_bits(h[i]);
        REQUIRE_CUDA(cudaMemcpy(d, t, n * 2, cudaMemcpyHostToDevice));
        free(t);
    }
    return d;
}
/* Device d[n] (bf16 when bf) into host h[n] as floats, after the device has finished. */
static void to_host(float *h, const void *d, size_t n, int bf)
{
    REQUIRE_CUDA(cudaDeviceSynchronize());
    if (!bf) { REQUIRE_CUDA(cudaMemcpy(h, d, n * 4, cudaMemcpyDeviceToHost)); return; }
    uint16_t *t = (uint16_t *)malloc(n * 2);
    REQUIRE_CUDA(cudaMemcpy(t, d, n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) h[i] = bf16_bits_to_f32(t[i]);
    free(t);
}

/* Compares device buffer d (n elements, bf16 when bf) with ref; prints one line. rtol < 0
 * selects the norm criterion instead: every element finite and ||got - ref|| / ||ref|| <= -rtol
 * (for bf16 results of long chains, where single elements near zero carry large relative error). */
static void check(const char *name, const void *d, int bf, const double *ref, size_t n, double rtol, double atol)
{
    float *got = (float *)malloc(n * sizeof(float));
    to_host(got, d, n, bf);
    size_t bad = 0, first = (size_t)-1;
    double num = 0, den = 0, maxe = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]);
        int ok = rtol < 0 ? e == e && isfinite((double)got[i]) : e <= atol + rtol * fabs(ref[i]);
        if (!ok) { if (!bad) first = i; bad++; }
        if (e > maxe || e != e) maxe = e;
        num += e * e; den += ref[i] * ref[i];
    }
    g_checks++;
    double rel = sqrt(num / (den > 0 ? den : 1));
    if (rtol < 0 && !bad && !(rel <= -rtol)) { bad = n; first = 0; }
    if (bad) {
        g_fail++;
        printf("FAIL %-28s %zu/%zu elements off (first [%zu]: got %.7g want %.7g), max err %.3g, rel %.3g\n", name, bad, n,
               first, (double)got[first], ref[first], maxe, sqrt(num / (den > 0 ? den : 1)));
    } else {
        printf("ok   %-28s n=%zu max err %.3g rel %.3g\n", name, n, maxe, sqrt(num / (den > 0 ? den : 1)));
    }
    free(got);
}

static double *zeros_f64(size_t n) { return (double *)calloc(n, sizeof(double)); }
static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A device copy of host ints h[n]. */
static void *to_device_ints(const int *h, size_t n)
{
    void *d; REQUIRE_CUDA(cudaMalloc(&d, n * sizeof(int)));
    REQUIRE_CUDA(cudaMemcpy(d, h, n * sizeof(int), cudaMemcpyHostToDevice));
    return d;
}

/* Two device buffers of `bytes` bytes hold the same bits (determinism checks). */
static void expect_same_bits(const char *name, const void *d1, const void *d2, size_t bytes)
{
    unsigned char *a = (unsigned char *)malloc(bytes), *b = (unsigned char *)malloc(bytes);
    REQUIRE_CUDA(cudaDeviceSynchronize());
    REQUIRE_CUDA(cudaMemcpy(a, d1, bytes, cudaMemcpyDeviceToHost));
    REQUIRE_CUDA(cudaMemcpy(b, d2, bytes, cudaMemcpyDeviceToHost));
    g_checks++;
    if (memcmp(a, b, bytes)) { g_fail++; printf("FAIL %-28s results differ between two identical runs\n", name); }
    else printf("ok   %-28s identical bits (%zu bytes)\n", name, bytes);
    free(a); free(b);
}

/* A context holding only what every operation reads (compute type, cuBLAS, err buffer); each
 * test adds the shapes and buffers its operation uses. */
static cuda_ctx test_ctx(int bf)
{
    cuda_ctx c;
    memset(&c, 0, sizeof c);
    c.backend = &g_backend; c.bf16_compute = bf; c.act_size = bf ? 2 : 4; c.cublas = g_cublas;
    c.cfg.rms_norm_eps = 1e-5f;
    return c;
}

/* Tolerances: fp32 compute against a double twin; bf16 outputs are rounded to 8 bits. */
static double rtol_of(int bf) { return bf ? 1.6e-2 : 2e-5; }
static double atol_of(int bf, double scale) { return (bf ? 1e-2 : 1e-5) * scale; }

/* ------------------------------------------------------------------------------------------ */

static void test_gemm(int bf)
{
    cuda_ctx c = test_ctx(bf);
    REQUIRE_OK(cublasSetMathMode(g_cublas, bf ? CUBLAS_DEFAULT_MATH : CUBLAS_PEDANTIC_MATH) != CUBLAS_STATUS_SUCCESS);
    int m = 37, n = 29, k = 53, batch = 3;
    for (int tA = 0; tA < 2; tA++)
        for (int tB = 0; tB < 2; tB++) {
            int lda = (tA ? m : k) + 3, ldb = (tB ? k : n) + 5, ldc = n + 2;
            long long sA = (long long)(tA ? k : m) * lda + 7, sB = (long long)(tB ? n : k) * ldb + 1, sC = (long long)m * ldc + 3;
            size_t nA = (size_t)sA * batch, nB = (size_t)sB * batch, nC = (size_t)sC * batch;
            float *A = host_random(nA, 1.f, bf), *B = host_random(nB, 1.f, bf), *C = host_random(nC, 1.f, 0);
            double *ref = zeros_f64(nC);
            for (size_t i = 0; i < nC; i++) ref[i] = C[i];        /* untouched gaps stay as they were */
            float alpha = 0.75f, beta = 0.5f;
            for (int bb = 0; bb < batch; bb++)
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++) {
                        double s = 0;
                        for (int p = 0; p < k; p++) {
                            double a = tA ? A[bb * sA + (size_t)p * lda + i] : A[bb * sA + (size_t)i * lda + p];
                            double b = tB ? B[bb * sB + (size_t)j * ldb + p] : B[bb * sB + (size_t)p * ldb + j];
                            s += a * b;
                        }
                        size_t o = bb * sC + (size_t)i * ldc + j;
                        ref[o] = alpha * s + beta * C[o];
                    }
            void *dA = to_device(A, nA, bf), *dB = to_device(B, nB, bf), *dC = to_device(C, nC, 0);
            REQUIRE_OK(gemm(&c, tA, tB, m, n, k, alpha, dA, lda, sA, dB, ldb, sB, beta, dC, CUDA_R_32F, ldc, sC, batch));
            char name[64];
            snprintf(name, sizeof name, "gemm %s tA=%d tB=%d", bf ? "bf16" : "fp32", tA, tB);
            check(name, dC, 0, ref, nC, bf ? 1e-3 : 2e-5, bf ? 1e-3 : 2e-5);   /* bf16 inputs exact, fp32 accumulate */
            cudaFree(dA); cudaFree(dB); cudaFree(dC); free(A); free(B); free(C); free(ref);
        }
    /* linear_fwd against the CPU path's llama_matmul (fp32 only: same function) */
    if (!bf) {
        int T = 19, in = 64, out = 45;
        float *x = host_random((size_t)T * in, 1.f, 0), *W = host_random((size_t)out * in, 1.f, 0), *y = (float *)malloc((size_t)T * out * 4);
        llama_matmul(y, x, W, T, in, out);
        double *ref = zeros_f64((size_t)T * out);
        for (size_t i = 0; i < (size_t)T * out; i++) ref[i] = y[i];
        void *dx = to_device(x, (size_t)T * in, 0), *dW = to_device(W, (size_t)out * in, 0), *dy = device_poisoned((size_t)T * out, 0);
        REQUIRE_OK(linear_fwd(&c, dy, CUDA_R_32F, 0.f, dx, dW, T, in, out));
        check("linear_fwd vs llama_matmul", dy, 0, ref, (size_t)T * out, 1e-5, 1e-5);
        cudaFree(dx); cudaFree(dW); cudaFree(dy); free(x); free(W); free(y); free(ref);
    }
}

static void test_rmsnorm(int bf)
{
    cuda_ctx c = test_ctx(bf);
    int T = 13, D = 1000;   /* D not a multiple of the block */
    float *x = host_random((size_t)T * D, 2.f, 0), *w = host_random(D, 1.f, bf);
    float *y = (float *)malloc((size_t)T * D * 4);
    llama_rmsnorm(y, x, w, T, D, c.cfg.rms_norm_eps);
    double *ref = zeros_f64((size_t)T * D), *rr = zeros_f64(T);
    for (size_t i = 0; i < (size_t)T * D; i++) ref[i] = y[i];
    for (int t = 0; t < T; t++) {
        double ss = 0; for (int d = 0; d < D; d++) ss += (double)x[t * D + d] * x[t * D + d];
        rr[t] = 1.0 / sqrt(ss / D + c.cfg.rms_norm_eps);
    }
    void *dx = to_device(x, (size_t)T * D, 0), *dw = to_device(w, D, bf), *dy = device_poisoned((size_t)T * D, bf), *dr = device_poisoned(T, 0);
    REQUIRE_OK(op_rmsnorm_fwd(&c, dy, (float *)dr, (const float *)dx, dw, T, D));
    check(bf ? "rmsnorm_fwd bf16" : "rmsnorm_fwd fp32", dy, bf, ref, (size_t)T * D, rtol_of(bf), atol_of(bf, 1));
    check("rmsnorm_fwd rstd", dr, 0, rr, T, 1e-5, 0);
    /* selective recomputation's norm from the stored rstd: the forward's bits */
    void *dy2 = device_poisoned((size_t)T * D, bf);
    REQUIRE_OK(op_rmsnorm_apply(&c, dy2, (const float *)dr, (const float *)dx, dw, T, D));
    expect_same_bits(bf ? "rmsnorm_apply = fwd bf16" : "rmsnorm_apply = fwd fp32", dy2, dy, (size_t)T * D * (bf ? 2 : 4));
    cudaFree(dy2);
    /* backward: dx += ..., dw += ...; both start from random values */
    float *grad_y = host_random((size_t)T * D, 1.f, 0), *dx0 = host_random((size_t)T * D, 1.f, 0), *dw0 = host_random(D, 1.f, 0);
    double *rdx = zeros_f64((size_t)T * D), *rdw = zeros_f64(D);
    for (int d = 0; d < D; d++) rdw[d] = dw0[d];
    for (int t = 0; t < T; t++) {
        double dot = 0;
        for (int d = 0; d < D; d++) dot += (double)grad_y[t * D + d] * w[d] * x[t * D + d] * rr[t];
        dot /= D;
        for (int d = 0; d < D; d++) {
            double xh = x[t * D + d] * rr[t];
            rdx[t * D + d] = dx0[t * D + d] + rr[t] * (grad_y[t * D + d] * w[d] - xh * dot);
            rdw[d] += grad_y[t * D + d] * xh;
        }
    }
    void *ddx = to_device(dx0, (size_t)T * D, 0), *ddw = to_device(dw0, D, 0), *dgrad_y = to_device(grad_y, (size_t)T * D, 0);
    c.lean = 0;
    void *ddx_cast = bf ? device_poisoned((size_t)T * D, 1) : NULL;   /* bf16: the cast copy of dx too */
    REQUIRE_OK(op_rmsnorm_bwd(&c, (float *)ddx, ddx_cast, ddw, (const float *)dgrad_y, (const float *)dx, (const float *)dr,
                              dw, T, D));
    check(bf ? "rmsnorm_bwd dx (bf16 w)" : "rmsnorm_bwd dx", ddx, 0, rdx, (size_t)T * D, 1e-4, 1e-5);
    if (bf) check("rmsnorm_bwd dx cast to bf16", ddx_cast, 1, rdx, (size_t)T * D, rtol_of(1), atol_of(1, 1));
    cudaFree(ddx_cast);
    check(bf ? "rmsnorm_bwd dw (bf16 w)" : "rmsnorm_bwd dw", ddw, 0, rdw, D, 1e-4, 1e-5);
    if (bf) {   /* lean mode: dw is bf16 */
        float *dw0b = host_random(D, 1.f, 1);
        for (int d = 0; d < D; d++) rdw[d] += dw0b[d] - dw0[d];
        void *ddwb = to_device(dw0b, D, 1);
        c.lean = 1;
        REQUIRE_CUDA(cudaMemcpy(ddx, dx0, (size_t)T * D * 4, cudaMemcpyHostToDevice));
        REQUIRE_OK(op_rmsnorm_bwd(&c, (float *)ddx, NULL, ddwb, (const float *)dgrad_y, (const float *)dx, (const float *)dr,
                                  dw, T, D));
        check("rmsnorm_bwd dw lean bf16", ddwb, 1, rdw, D, 1.6e-2, 1e-2);
        cudaFree(ddwb); free(dw0b);
    }
    cudaFree(dx); cudaFree(dw); cudaFree(dy); cudaFree(dr); cudaFree(ddx); cudaFree(ddw); cudaFree(dgrad_y);
    free(x); free(w); free(y); free(ref); free(rr); free(grad_y); free(dx0); free(dw0); free(rdx); free(rdw);
}

/* The residual add fused with the next norm: sum = x + y (exact in fp32: the same float add as
 * the CPU path), its copy when asked for, out = llama_rmsnorm(sum) * w, rstd. D = 1000 is not a
 * multiple of the block; run with and without the copy. */
static void test_add_rmsnorm(int bf)
{
    cuda_ctx c = test_ctx(bf);
    int T = 13, D = 1000;
    float *x = host_random((size_t)T * D, 2.f, 0), *y = host_random((size_t)T * D, 2.f, 0), *w = host_random(D, 1.f, bf);
    float *sum = (float *)malloc((size_t)T * D * 4), *normed = (float *)malloc((size_t)T * D * 4);
    for (size_t i = 0; i < (size_t)T * D; i++) sum[i] = x[i] + y[i];
    llama_rmsnorm(normed, sum, w, T, D, c.cfg.rms_norm_eps);
    double *rsum = zeros_f64((size_t)T * D), *rout = zeros_f64((size_t)T * D), *rr = zeros_f64(T);
    for (size_t i = 0; i < (size_t)T * D; i++) { rsum[i] = sum[i]; rout[i] = normed[i]; }
    for (int t = 0; t < T; t++) {
        double ss = 0; for (int d = 0; d < D; d++) ss += (double)sum[t * D + d] * sum[t * D + d];
        rr[t] = 1.0 / sqrt(ss / D + c.cfg.rms_norm_eps);
    }
    void *dx = to_device(x, (size_t)T * D, 0), *dy = to_device(y, (size_t)T * D, 0), *dw = to_device(w, D, bf);
    for (int with_copy = 0; with_copy < 2; with_copy++) {
        void *dsum = device_poisoned((size_t)T * D, 0), *dcopy = with_copy ? device_poisoned((size_t)T * D, 0) : NULL;
        void *dout = device_poisoned((size_t)T * D, bf), *dr = device_poisoned(T, 0);
        REQUIRE_OK(op_add_rmsnorm_fwd(&c, (float *)dsum, (float *)dcopy, dout, (float *)dr, (const float *)dx,
                                      (const float *)dy, dw, T, D));
        check("add_rmsnorm sum", dsum, 0, rsum, (size_t)T * D, 0, 0);
        if (with_copy) check("add_rmsnorm sum copy", dcopy, 0, rsum, (size_t)T * D, 0, 0);
        check(bf ? "add_rmsnorm out bf16" : "add_rmsnorm out fp32", dout, bf, rout, (size_t)T * D, rtol_of(bf), atol_of(bf, 1));
        check("add_rmsnorm rstd", dr, 0, rr, T, 1e-5, 0);
        cudaFree(dsum); cudaFree(dcopy); cudaFree(dout); cudaFree(dr);
    }
    cudaFree(dx); cudaFree(dy); cudaFree(dw);
    free(x); free(y); free(w); free(sum); free(normed); free(rsum); free(rout); free(rr);
}

/* RoPE tables exactly as llama_cuda_backend_create builds them. */
static void rope_tables(const llama_config *cfg, int maxT, float **dcos, float **dsin)
{
    int half = cfg->head_dim / 2;
    double *inv = (double *)malloc(half * sizeof(double));
    float *cs = (float *)malloc((size_t)maxT * half * 4), *sn = (float *)malloc((size_t)maxT * half * 4);
    llama_rope_inv_freq(cfg, inv);
    for (int p = 0; p < maxT; p++)
        for (int j = 0; j < half; j++) {
            float ang = (float)p * (float)inv[j];
            cs[p * half + j] = (float)cos((double)ang); sn[p * half + j] = (float)sin((double)ang);
        }
    *dcos = (float *)to_device(cs, (size_t)maxT * half, 0); *dsin = (float *)to_device(sn, (size_t)maxT * half, 0);
    free(inv); free(cs); free(sn);
}

static llama_config small_cfg(int H, int K, int hd, int llama3)
{
    llama_config cf;
    memset(&cf, 0, sizeof cf);
    cf.num_attention_heads = H; cf.num_key_value_heads = K; cf.head_dim = hd; cf.hidden_size = H * hd;
    cf.rope_theta = 500000.0; cf.rms_norm_eps = 1e-5f;
    if (llama3) { cf.rope_llama3 = 1; cf.rope_factor = 32; cf.rope_low_freq_factor = 1; cf.rope_high_freq_factor = 4;
                  cf.rope_original_max_position_embeddings = 64; }
    return cf;
}

/* RoPE forward (in place) and backward (fp32 in, act out) through op_rope at head size hd, which
 * picks the kernel: hd 16 and 32 take rope_vec_k (16-byte vectors), 12 and 24 (half not a multiple
 * of 8) rope_k. */
static void test_rope_hd(int bf, int hd)
{
    int H = 4, K = 2, T = 300, QKV = (H + 2 * K) * hd;
    char name[64];
    llama_config cf = small_cfg(H, K, hd, 1);
    float *dcos, *dsin; rope_tables(&cf, T, &dcos, &dsin);
    double *inv = (double *)malloc(hd / 2 * sizeof(double)); llama_rope_inv_freq(&cf, inv);
    int *pos = (int *)malloc(T * 4);
    for (int t = 0; t < T; t++) pos[t] = t < 100 ? t : (t * 7) % T;   /* arbitrary positions < T */
    int *dpos; REQUIRE_CUDA(cudaMalloc(&dpos, T * 4)); REQUIRE_CUDA(cudaMemcpy(dpos, pos, T * 4, cudaMemcpyHostToDevice));
    float *x = host_random((size_t)T * QKV, 1.f, bf);
    double *ref = zeros_f64((size_t)T * QKV);
    float *row = (float *)malloc(QKV * 4);
    for (int t = 0; t < T; t++) {
        memcpy(row, x + (size_t)t * QKV, QKV * 4);
        llama_rope_apply(row, H + K, hd, pos[t], inv);        /* q and k heads; v untouched */
        for (int i = 0; i < QKV; i++) ref[(size_t)t * QKV + i] = row[i];
    }
    cuda_ctx c = test_ctx(bf);
    c.H = H; c.K = K; c.hd = hd; c.QKV = QKV; c.positions = dpos; c.rope_cos = dcos; c.rope_sin = dsin;
    void *dx = to_device(x, (size_t)T * QKV, bf);
    REQUIRE_OK(op_rope(&c, dx, dx, 0, 1.f, T));
    REQUIRE_CUDA(cudaGetLastError());
    snprintf(name, sizeof name, "rope fwd %s hd=%d (llama3)", bf ? "bf16" : "fp32", hd);
    check(name, dx, bf, ref, (size_t)T * QKV, rtol_of(bf), atol_of(bf, 1));
    /* backward = inverse rotation, fp32 in -> act out: twin rotates by -angle in double */
    float *gy = host_random((size_t)T * QKV, 1.f, 0);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < QKV; i++) {
            size_t o = (size_t)t * QKV + i;
            int h = i / hd, j = i % hd, half = hd / 2;
            if (h >= H + K) { ref[o] = gy[o]; continue; }
            float ang = (float)pos[t] * (float)inv[j % half];
            double co = (float)cos((double)ang), si = (float)sin((double)ang);
            size_t b0 = (size_t)t * QKV + h * hd;
            if (j < half) ref[o] = gy[b0 + j] * co + gy[b0 + j + half] * si;
            else ref[o] = gy[b0 + j] * co - gy[b0 + j - half] * si;
        }
    void *dg = to_device(gy, (size_t)T * QKV, 0), *dout = device_poisoned((size_t)T * QKV, bf);
    REQUIRE_OK(op_rope(&c, dout, dg, 1, -1.f, T));
    REQUIRE_CUDA(cudaGetLastError());
    snprintf(name, sizeof name, "rope bwd %s hd=%d", bf ? "bf16" : "fp32", hd);
    check(name, dout, bf, ref, (size_t)T * QKV, rtol_of(bf), atol_of(bf, 1));
    cudaFree(dx); cudaFree(dg); cudaFree(dout); cudaFree(dpos); cudaFree(dcos); cudaFree(dsin);
    free(inv); free(pos); free(x); free(ref); free(row); free(gy);
}

static void test_rope(int bf)
{
    static const int head_dims[] = {16, 12, 24, 32};
    for (size_t i = 0; i < sizeof head_dims / sizeof head_dims[0]; i++) test_rope_hd(bf, head_dims[i]);
}

static void test_softmax(int bf)
{
    cuda_ctx c = test_ctx(bf);
    int n = 300, B = 3, rows = B * n;
    float *S = host_random((size_t)rows * n, 8.f, 0);
    double *P = zeros_f64((size_t)rows * n);
    for (int row = 0; row < rows; row++) {
        int r = row % n; double mx = -1e300, sum = 0;
        for (int k = 0; k <= r; k++) mx = fmax(mx, S[(size_t)row * n + k]);
        for (int k = 0; k <= r; k++) sum += exp(S[(size_t)row * n + k] - mx);
        for (int k = 0; k < n; k++) P[(size_t)row * n + k] = k <= r ? exp(S[(size_t)row * n + k] - mx) / sum : 0;
    }
    void *dS = to_device(S, (size_t)rows * n, 0), *dP = device_poisoned((size_t)rows * n, bf);
    LAUNCH_ACT(&c, softmax_causal_k, row_blocks(rows), 256, dP, (const float *)dS, n, n, rows);
    REQUIRE_CUDA(cudaGetLastError());
    check(bf ? "softmax_causal bf16" : "softmax_causal fp32", dP, bf, P, (size_t)rows * n, rtol_of(bf), bf ? 2e-3 : 1e-6);
    /* backward from the device's own P (what the kernel sees), twin in double */
    float *Pg = (float *)malloc((size_t)rows * n * 4); to_host(Pg, dP, (size_t)rows * n, bf);
    float *G = host_random((size_t)rows * n, 1.f, 0);
    double *dSr = zeros_f64((size_t)rows * n);
    for (int row = 0; row < rows; row++) {
        int r = row % n; double dot = 0;
        for (int k = 0; k <= r; k++) dot += (double)Pg[(size_t)row * n + k] * G[(size_t)row * n + k];
        for (int k = 0; k < n; k++) dSr[(size_t)row * n + k] = k <= r ? Pg[(size_t)row * n + k] * (G[(size_t)row * n + k] - dot) : 0;
    }
    void *dG = to_device(G, (size_t)rows * n, 0);
    LAUNCH_ACT(&c, softmax_causal_bwd_k, row_blocks(rows), 256, dP, (const float *)dG, n, n, rows);
    REQUIRE_CUDA(cudaGetLastError());
    check(bf ? "softmax_causal_bwd bf16" : "softmax_causal_bwd fp32", dP, bf, dSr, (size_t)rows * n, rtol_of(bf), bf ? 1e-3 : 1e-6);
    cudaFree(dS); cudaFree(dP); cudaFree(dG); free(S); free(P); free(Pg); free(G); free(dSr);
}

/* SwiGLU at width I against the formulas in double (T = 37 rows). */
static void test_swiglu_width(int bf, int I)
{
    cuda_ctx c = test_ctx(bf);
    int T = 37;
    float *gu = host_random((size_t)T * 2 * I, 4.f, bf), *dh = host_random((size_t)T * I, 1.f, bf);
    double *h = zeros_f64((size_t)T * I), *dgu = zeros_f64((size_t)T * 2 * I);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < I; i++) {
            double gate = gu[t * 2 * I + i], up = gu[t * 2 * I + I + i], s = 1 / (1 + exp(-gate)), d = dh[t * I + i];
            h[t * I + i] = gate * s * up;
            dgu[t * 2 * I + i] = d * up * (s + gate * s * (1 - s));
            dgu[t * 2 * I + I + i] = d * gate * s;
        }
    void *dgu_ = to_device(gu, (size_t)T * 2 * I, bf), *dh_ = to_device(dh, (size_t)T * I, bf);
    void *hout = device_poisoned((size_t)T * I, bf), *dgout = device_poisoned((size_t)T * 2 * I, bf);
    REQUIRE_OK(op_swiglu_fwd(&c, hout, dgu_, T, I));
    REQUIRE_OK(op_swiglu_bwd(&c, dgout, dh_, dgu_, T, I));
    REQUIRE_CUDA(cudaGetLastError());
    char name[64];
    snprintf(name, sizeof name, "swiglu_fwd %s I=%d", bf ? "bf16" : "fp32", I);
    check(name, hout, bf, h, (size_t)T * I, rtol_of(bf), atol_of(bf, 1));
    snprintf(name, sizeof name, "swiglu_bwd %s I=%d", bf ? "bf16" : "fp32", I);
    check(name, dgout, bf, dgu, (size_t)T * 2 * I, rtol_of(bf), atol_of(bf, 1));
    cudaFree(dgu_); cudaFree(dh_); cudaFree(hout); cudaFree(dgout); free(gu); free(dh); free(h); free(dgu);
}

/* SwiGLU forward and backward at widths that take each path: 333 (scalar kernels), 340 (16-byte
 * vectors in fp32, 4 | 340; scalar in bf16, 8 does not divide it), 344 (vectors in both), and 8
 * (one pack per row). */
static void test_swiglu(int bf)
{
    static const int widths[] = {333, 340, 344, 8};
    for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++) test_swiglu_width(bf, widths[wi]);
}

/* Plain causal GQA attention in double over a packed batch (sequence s is rows seq[s] ..
 * seq[s + 1] - 1): the reference of both attention paths. qkv [T, (H + 2K) hd], dO [T, H hd] ->
 * O [T, H hd], lse [T, H] (log-sum-exp of each row's scaled scores; NULL: not wanted) and
 * dqkv [T, (H + 2K) hd] (dq, dk, dv). Outputs must start zeroed. */
static void attention_reference(const float *qkv, const float *dO, const int *seq, int n_seq, int H, int K, int hd,
                                double *O, double *lse, double *dqkv)
{
    int q_per_kv = H / K, QKV = (H + 2 * K) * hd, HD = H * hd, maxn = 0;
    for (int s = 0; s < n_seq; s++) if (seq[s + 1] - seq[s] > maxn) maxn = seq[s + 1] - seq[s];
    double scale = 1.0 / sqrt((double)hd);
    double *p = zeros_f64(maxn + 1), *dp = zeros_f64(maxn + 1);
    for (int s = 0; s < n_seq; s++) {
        int s0 = seq[s], n = seq[s + 1] - s0;
        for (int h = 0; h < H; h++) {
            int kh = h / q_per_kv;
            for (int t = 0; t < n; t++) {
                const float *q = qkv + (size_t)(s0 + t) * QKV + h * hd;
                double mx = -1e300, sum = 0;
                for (int u = 0; u <= t; u++) {
                    const float *k = qkv + (size_t)(s0 + u) * QKV + HD + kh * hd;
                    double d = 0; for (int e = 0; e < hd; e++) d += (double)q[e] * k[e];
                    p[u] = d * scale; mx = fmax(mx, p[u]);
                }
                for (int u = 0; u <= t; u++) { p[u] = exp(p[u] - mx); sum += p[u]; }
                for (int u = 0; u <= t; u++) p[u] /= sum;
                if (lse) lse[(size_t)(s0 + t) * H + h] = mx + log(sum);
                const float *go = dO + (size_t)(s0 + t) * HD + h * hd;
                double dot = 0;
                for (int u = 0; u <= t; u++) {
                    const float *v = qkv + (size_t)(s0 + u) * QKV + HD + K * hd + kh * hd;
                    double d = 0;
                    for (int e = 0; e < hd; e++) { O[(size_t)(s0 + t) * HD + h * hd + e] += p[u] * v[e]; d += (double)go[e] * v[e]; }
                    dp[u] = d; dot += p[u] * d;
                }
                for (int u = 0; u <= t; u++) {
                    double ds = p[u] * (dp[u] - dot) * scale;
                    const float *k = qkv + (size_t)(s0 + u) * QKV + HD + kh * hd;
                    for (int e = 0; e < hd; e++) {
                        dqkv[(size_t)(s0 + t) * QKV + h * hd + e] += ds * k[e];
                        dqkv[(size_t)(s0 + u) * QKV + HD + kh * hd + e] += ds * q[e];
                        dqkv[(size_t)(s0 + u) * QKV + HD + K * hd + kh * hd + e] += p[u] * go[e];
                    }
                }
            }
        }
    }
    free(p); free(dp);
}

/* Attention through cuBLAS (the scores path: fp32 mode, and bf16 with LLAMA_CUDA_ATTENTION=cublas)
 * over a packed batch of 4 sequences (one of length 1, one empty, the others odd lengths), GQA
 * H=6, K=2. On the emulator: no GEMM may see unaligned rows (padded scores). */
static void test_attention(int bf)
{
    cuda_ctx c = test_ctx(bf);
    int H = 6, K = 2, hd = 16, q_per_kv = H / K;
    int seq[] = {0, 37, 38, 38, 141}, n_seq = 4, T = seq[n_seq], maxn = 103;
    int QKV = (H + 2 * K) * hd, HD = H * hd;
    c.H = H; c.K = K; c.hd = hd; c.q_per_kv = q_per_kv; c.QKV = QKV; c.HD = HD;
    REQUIRE_CUDA(cudaMalloc(&c.scores, (size_t)K * maxn * padded_ld(maxn) * 4));
    REQUIRE_CUDA(cudaMalloc(&c.probs, (size_t)K * maxn * padded_ld(maxn) * c.act_size));
    float *qkv = host_random((size_t)T * QKV, 1.5f, bf), *dO = host_random((size_t)T * HD, 1.f, bf);
    double *O = zeros_f64((size_t)T * HD), *dq = zeros_f64((size_t)T * QKV);
    attention_reference(qkv, dO, seq, n_seq, H, K, hd, O, NULL, dq);
    void *dqkv = to_device(qkv, (size_t)T * QKV, bf), *datt = device_poisoned((size_t)T * HD, bf), *ddO = to_device(dO, (size_t)T * HD, bf);
    float *dqf = (float *)device_poisoned((size_t)T * QKV, 0);
#ifdef EMU_CUDA_RUNTIME_H
    long misaligned_before = emu_misaligned_gemms;
#endif
    REQUIRE_OK(op_attention_fwd(&c, datt, NULL, dqkv, seq, n_seq));
    check(bf ? "attention fwd bf16 (GQA)" : "attention fwd fp32 (GQA)", datt, bf, O, (size_t)T * HD, bf ? -1e-2 : 1e-4, 1e-5);
    REQUIRE_OK(op_attention_bwd(&c, dqf, ddO, dqkv, datt, NULL, seq, n_seq));
    check(bf ? "attention bwd bf16 (dq dk dv)" : "attention bwd fp32 (dq dk dv)", dqf, 0, dq, (size_t)T * QKV, bf ? -2e-2 : 1e-4,
          1e-5);
#ifdef EMU_CUDA_RUNTIME_H
    g_checks++;
    if (emu_misaligned_gemms != misaligned_before) {
        g_fail++;
        printf("FAIL attention %s: %ld GEMMs with rows not 16-byte aligned (odd sequence lengths)\n", bf ? "bf16" : "fp32",
               emu_misaligned_gemms - misaligned_before);
    } else printf("ok   attention %s: every GEMM's rows 16-byte aligned (lengths 37, 1, 103)\n", bf ? "bf16" : "fp32");
#endif
    cudaFree(c.scores); cudaFree(c.probs); cudaFree(dqkv); cudaFree(datt); cudaFree(ddO); cudaFree(dqf);
    free(qkv); free(dO); free(O); free(dq);
}

/* Flash attention (the bf16 modes' path) on one packed batch of sequences of the given lengths,
 * H query heads over K KV heads of head dimension hd, against attention_reference (double, on
 * the same bf16-rounded inputs) and, when `vs_cublas`, against the cuBLAS path in bf16 too.
 *
 * Tolerances (relative error of the whole tensor, ||got - ref|| / ||ref||, every element finite):
 * the scores and their log-sum-exp are fp32 sums of exact bf16 products, so lse is checked per
 * element to 1e-4 + 1e-5 |lse|. The rest meets bf16 rounding three times: P is rounded to bf16
 * (relative 2^-9 = 0.2% per element) before P V, O to bf16 on output, and in the backward P and
 * dS = P (dP - Dsum) are rounded to bf16 before the products, with Dsum taken from the rounded O,
 * so dP - Dsum cancels and loses relative accuracy where they are close. Forward 1e-2 and
 * backward 2e-2 hold with margin (the cuBLAS path rounds P and dS the same way; both are printed:
 * a wrong mask, a missing tile or a wrong row gives errors of order 1). Flash against cuBLAS: the
 * sum of the two, 2e-2 and 4e-2. The backward also runs twice and must give the same bits
 * (the emulator runs the blocks in a new order at every launch; not for the long sequences, to
 * save emulator time). */
static void test_flash_case(int H, int K, int hd, const int *lens, int n_seq, int vs_cublas)
{
    cuda_ctx c = test_ctx(1);
    int q_per_kv = H / K, QKV = (H + 2 * K) * hd, HD = H * hd;
    int *seq = (int *)calloc((size_t)n_seq + 1, sizeof(int)), maxn = 1;
    for (int s = 0; s < n_seq; s++) { seq[s + 1] = seq[s] + lens[s]; if (lens[s] > maxn) maxn = lens[s]; }
    int T = seq[n_seq];
    c.H = H; c.K = K; c.hd = hd; c.q_per_kv = q_per_kv; c.QKV = QKV; c.HD = HD; c.flash_hdp = flash_padded_hd(hd);
    REQUIRE_CUDA(cudaMalloc(&c.att_dsum, (size_t)T * H * 4));
    float *qkv = host_random((size_t)T * QKV, 1.5f, 1), *dO = host_random((size_t)T * HD, 1.f, 1);
    double *O = zeros_f64((size_t)T * HD), *lse = zeros_f64((size_t)T * H), *dq = zeros_f64((size_t)T * QKV);
    attention_reference(qkv, dO, seq, n_seq, H, K, hd, O, lse, dq);
    void *dqkv = to_device(qkv, (size_t)T * QKV, 1), *ddO = to_device(dO, (size_t)T * HD, 1);
    void *datt = device_poisoned((size_t)T * HD, 1);
    float *dlse = (float *)device_poisoned((size_t)T * H, 0), *dqf = (float *)device_poisoned((size_t)T * QKV, 0);
    float *dqf2 = (float *)device_poisoned((size_t)T * QKV, 0);
    char name[100], lens_text[60] = "";
    for (int s = 0; s < n_seq && strlen(lens_text) < 40; s++)
        snprintf(lens_text + strlen(lens_text), sizeof lens_text - strlen(lens_text), "%s%d", s ? "," : "", lens[s]);
    if (n_seq > 1 && strlen(lens_text) >= 40) snprintf(lens_text, sizeof lens_text, "%d seqs, T=%d", n_seq, T);
    double t0 = now_seconds();
    REQUIRE_OK(op_attention_fwd(&c, datt, dlse, dqkv, seq, n_seq));
    snprintf(name, sizeof name, "flash fwd H%d K%d hd%d [%s]", H, K, hd, lens_text);
    check(name, datt, 1, O, (size_t)T * HD, -1e-2, 0);
    snprintf(name, sizeof name, "flash lse H%d K%d hd%d", H, K, hd);
    check(name, dlse, 0, lse, (size_t)T * H, 1e-5, 1e-4);
    REQUIRE_OK(op_attention_bwd(&c, dqf, ddO, dqkv, datt, dlse, seq, n_seq));
    snprintf(name, sizeof name, "flash bwd H%d K%d hd%d", H, K, hd);
    check(name, dqf, 0, dq, (size_t)T * QKV, -2e-2, 0);
    if (T < 1500) {                                   /* (emulator time) */
        REQUIRE_OK(op_attention_bwd(&c, dqf2, ddO, dqkv, datt, dlse, seq, n_seq));
        snprintf(name, sizeof name, "flash bwd H%d K%d hd%d twice", H, K, hd);
        expect_same_bits(name, dqf, dqf2, (size_t)T * QKV * 4);
    }
    double flash_s = now_seconds() - t0;
    if (vs_cublas) {
        /* the cuBLAS path on the same inputs, then flash's outputs against its outputs */
        cuda_ctx cb = c;
        cb.flash_hdp = 0;
        REQUIRE_CUDA(cudaMalloc(&cb.scores, (size_t)K * maxn * padded_ld(maxn) * 4));
        REQUIRE_CUDA(cudaMalloc(&cb.probs, (size_t)K * maxn * padded_ld(maxn) * 2));
        void *catt = device_poisoned((size_t)T * HD, 1);
        float *cdq = (float *)device_poisoned((size_t)T * QKV, 0);
        REQUIRE_OK(op_attention_fwd(&cb, catt, NULL, dqkv, seq, n_seq));
        REQUIRE_OK(op_attention_bwd(&cb, cdq, ddO, dqkv, catt, NULL, seq, n_seq));
        float *h_att = (float *)malloc((size_t)T * HD * 4), *h_dq = (float *)malloc((size_t)T * QKV * 4);
        to_host(h_att, catt, (size_t)T * HD, 1);
        to_host(h_dq, cdq, (size_t)T * QKV, 0);
        double *r_att = zeros_f64((size_t)T * HD), *r_dq = zeros_f64((size_t)T * QKV);
        for (size_t i = 0; i < (size_t)T * HD; i++) r_att[i] = h_att[i];
        for (size_t i = 0; i < (size_t)T * QKV; i++) r_dq[i] = h_dq[i];
        snprintf(name, sizeof name, "flash vs cuBLAS fwd H%d K%d hd%d", H, K, hd);
        check(name, datt, 1, r_att, (size_t)T * HD, -2e-2, 0);
        snprintf(name, sizeof name, "flash vs cuBLAS bwd H%d K%d hd%d", H, K, hd);
        check(name, dqf, 0, r_dq, (size_t)T * QKV, -4e-2, 0);
        cudaFree(cb.scores); cudaFree(cb.probs); cudaFree(catt); cudaFree(cdq);
        free(h_att); free(h_dq); free(r_att); free(r_dq);
    }
    printf("     (flash attention on the emulator: %.2f s)\n", flash_s);
    cudaFree(c.att_dsum); cudaFree(dqkv); cudaFree(ddO); cudaFree(datt); cudaFree(dlse); cudaFree(dqf); cudaFree(dqf2);
    free(seq); free(qkv); free(dO); free(O); free(lse); free(dq);
}

/* The flash attention shapes: the sweep of sequence lengths around the tile sizes (16, 32) in
 * one packed batch of unequal sequences, per GQA ratio 1, 2, 4, 8 (and 3, and a group wider than
 * a tile) and head dimension 64, 128 (and the small and padded ones the fixtures use), then
 * single long sequences. */
static void test_flash(void)
{
    static const int sweep[] = {1, 2, 3, 15, 16, 17, 31, 33, 63, 64, 65, 127, 128, 129, 200, 300};
    int n_sweep = (int)(sizeof sweep / sizeof sweep[0]);
    static const int mixed[] = {37, 1, 64, 19};
    test_flash_case(2, 2, 64, sweep, n_sweep, 1);    /* MHA */
    test_flash_case(4, 2, 128, sweep, n_sweep, 1);   /* GQA 2 */
    test_flash_case(8, 2, 64, sweep, n_sweep, 1);    /* GQA 4 */
    test_flash_case(8, 1, 128, sweep, n_sweep, 0);   /* GQA 8 */
    test_flash_case(6, 2, 32, mixed, 4, 1);          /* GQA 3: tiles with padding rows */
    test_flash_case(40, 1, 16, mixed, 4, 1);         /* group of 40 heads: two head chunks */
    test_flash_case(5, 5, 8, mixed, 4, 1);           /* head dims padded to 16 (the fixtures') */
    test_flash_case(3, 3, 10, mixed, 4, 0);
    test_flash_case(4, 1, 48, mixed, 4, 0);          /* padded to 64 */
    static const int long1[] = {1000}, long2[] = {2048};
    test_flash_case(2, 1, 64, long1, 1, 0);
    test_flash_case(1, 1, 128, long2, 1, 0);
}

/* LM head: forward log-probs and backward over 4 ragged vocabulary chunks; embedding. */
static void test_lm_embed(int bf)
{
    cuda_ctx c = test_ctx(bf);
    int T = 45, D = 72, V = 1000;
    c.D = D; c.V = V; c.lm_chunk = 300; c.lm_ld = padded_ld(300); c.off_lm = 0;   /* chunks of 300, 300, 300, 100 */
    int seq[] = {0, 20, 21, 45};                           /* 3 sequences */
    int *tokens = (int *)malloc(T * 4), *labels = (int *)malloc(T * 4);
    for (int t = 0; t < T; t++) tokens[t] = (int)((frand() + 1) * 0.5f * V) % V;
    tokens[3] = tokens[7] = tokens[30] = tokens[31] = 5;             /* repeated ids: grouped in embed_bwd */
    for (int s = 0; s < 3; s++) for (int i = seq[s]; i < seq[s + 1]; i++) labels[i] = i + 1 < seq[s + 1] ? tokens[i + 1] : -1;
    float *xf = host_random((size_t)T * D, 1.f, bf), *W = host_random((size_t)V * D, 0.5f, bf), *dlogp = host_random(T, 1.f, 0);
    double *logp = zeros_f64(T), *lse = zeros_f64(T), *dxf = zeros_f64((size_t)T * D), *dW = zeros_f64((size_t)V * D), *z = zeros_f64(V);
    float *label_dlogp = (float *)malloc(T * 4);
    for (int t = 0; t < T; t++) label_dlogp[t] = labels[t] >= 0 ? dlogp[t + 1] : 0.f;
    for (int t = 0; t < T; t++) {
        double mx = -1e300, sum = 0;
        for (int v = 0; v < V; v++) {
            double s = 0;
            for (int d = 0; d < D; d++) s += (double)xf[t * D + d] * W[(size_t)v * D + d];
            z[v] = s; mx = fmax(mx, s);
        }
        for (int v = 0; v < V; v++) sum += exp(z[v] - mx);
        lse[t] = mx + log(sum);
        if (labels[t] >= 0) logp[t + 1] = z[labels[t]] - lse[t];
        for (int v = 0; v < V; v++) {
            double gz = label_dlogp[t] * ((v == labels[t]) - exp(z[v] - lse[t]));
            for (int d = 0; d < D; d++) { dxf[t * D + d] += gz * W[(size_t)v * D + d]; dW[(size_t)v * D + d] += gz * xf[t * D + d]; }
        }
    }
    for (int s = 0; s < 3; s++) logp[seq[s]] = 0;
    c.xf = to_device(xf, (size_t)T * D, bf); c.weights = to_device(W, (size_t)V * D, bf);
    float *zeros = (float *)calloc((size_t)V * D, sizeof(float));
    c.grad = to_device(zeros, (size_t)V * D, 0);
    free(zeros);
    REQUIRE_CUDA(cudaMalloc(&c.logits, (size_t)T * c.lm_ld * 4)); c.dlogits = device_poisoned((size_t)T * c.lm_ld, bf);
    c.row_max = (float *)device_poisoned(T, 0); c.row_sumexp = (float *)device_poisoned(T, 0); c.label_logit = (float *)device_poisoned(T, 0);
    c.lse = (float *)device_poisoned(T, 0); c.logp = (float *)device_poisoned(T, 0); c.label_dlogp = (float *)to_device(label_dlogp, T, 0);
    c.dxf = (float *)device_poisoned((size_t)T * D, 0);
    REQUIRE_CUDA(cudaMalloc(&c.labels, T * 4)); REQUIRE_CUDA(cudaMemcpy(c.labels, labels, T * 4, cudaMemcpyHostToDevice));
    REQUIRE_OK(op_lm_fwd(&c, T));
    check(bf ? "lm_head logp bf16 (4 chunks)" : "lm_head logp fp32 (4 chunks)", c.logp, 0, logp, T, bf ? 1e-3 : 1e-5, bf ? 1e-3 : 1e-5);
    check("lm_head lse", c.lse, 0, lse, T, 1e-5, 1e-5);
    REQUIRE_OK(op_lm_bwd(&c, T));
    check(bf ? "lm_head dxf bf16" : "lm_head dxf fp32", c.dxf, 0, dxf, (size_t)T * D, bf ? -1e-2 : 1e-4, 1e-6);
    check(bf ? "lm_head dW bf16" : "lm_head dW fp32", c.grad, 0, dW, (size_t)V * D, bf ? -1e-2 : 1e-4, 1e-6);
    /* embedding forward (act -> fp32) and backward (atomics, fp32 grads) */
    int *dtokens; REQUIRE_CUDA(cudaMalloc(&dtokens, T * 4)); REQUIRE_CUDA(cudaMemcpy(dtokens, tokens, T * 4, cudaMemcpyHostToDevice));
    float *res = (float *)device_poisoned((size_t)T * D, 0);
    double *rres = zeros_f64((size_t)T * D), *rg = zeros_f64((size_t)V * D);
    float *g0 = host_random((size_t)V * D, 1.f, 0), *dr = host_random((size_t)T * D, 1.f, 0);
    for (size_t i = 0; i < (size_t)V * D; i++) rg[i] = g0[i];
    for (int t = 0; t < T; t++)
        for (int d = 0; d < D; d++) {
            rres[t * D + d] = W[(size_t)tokens[t] * D + d];
            rg[(size_t)tokens[t] * D + d] += dr[t * D + d];
        }
    LAUNCH_ACT(&c, embed_fwd_k, rows_cols_grid(T, D), 256, res, c.weights, dtokens, T, D);
    REQUIRE_CUDA(cudaGetLastError());
    check(bf ? "embed_fwd bf16" : "embed_fwd fp32", res, 0, rres, (size_t)T * D, 0, 0);
    /* backward: positions grouped by token on the host (group_tokens), as the backend does */
    c.max_T = T;
    c.host_emb_groups = (int *)malloc((3 * (size_t)T + 1) * sizeof(int));
    REQUIRE_OK(group_tokens(&c, tokens, T));
    int *dgroups = (int *)to_device_ints(c.host_emb_groups, 3 * (size_t)T + 1);
    const int *distinct = dgroups, *first = dgroups + T, *where = dgroups + 2 * T + 1;
    void *dg = to_device(g0, (size_t)V * D, 0), *ddr = to_device(dr, (size_t)T * D, 0);
    LAUNCH(rows_cols_grid(c.n_distinct, D), 256, embed_bwd_k<float>)((float *)dg, (const float *)ddr, distinct, first, where,
                                                                     c.n_distinct, D);
    REQUIRE_CUDA(cudaGetLastError());
    check("embed_bwd fp32", dg, 0, rg, (size_t)V * D, 1e-6, 1e-6);
    /* the same sums again from the same start: the same bits (the emulator shuffles the blocks'
     * order at every launch, as a GPU may run them; atomics would add in another order) */
    void *dg2 = to_device(g0, (size_t)V * D, 0);
    LAUNCH(rows_cols_grid(c.n_distinct, D), 256, embed_bwd_k<float>)((float *)dg2, (const float *)ddr, distinct, first,
                                                                     where, c.n_distinct, D);
    expect_same_bits("embed_bwd fp32 twice", dg, dg2, (size_t)V * D * 4);
    if (bf) {
        float *g0b = host_random((size_t)V * D, 1.f, 1);
        for (size_t i = 0; i < (size_t)V * D; i++) rg[i] += g0b[i] - g0[i];
        void *dgb = to_device(g0b, (size_t)V * D, 1);
        LAUNCH(rows_cols_grid(c.n_distinct, D), 256, embed_bwd_k<bf16>)((bf16 *)dgb, (const float *)ddr, distinct, first,
                                                                        where, c.n_distinct, D);
        REQUIRE_CUDA(cudaGetLastError());
        /* one rounding to bf16 per token (2^-9 relative), not one per occurrence */
        check("embed_bwd lean bf16", dgb, 1, rg, (size_t)V * D, 4e-3, 1e-6);
        cudaFree(dgb); free(g0b);
    }
    cudaFree(dg); cudaFree(dg2); cudaFree(ddr); cudaFree(res); cudaFree(dtokens); cudaFree(dgroups);
    free(c.host_emb_groups);
    void *bufs[] = {c.xf, c.weights, c.grad, c.logits, c.dlogits, c.row_max, c.row_sumexp, c.label_logit, c.lse,
                    c.logp, c.label_dlogp, c.dxf, c.labels};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) cudaFree(bufs[i]);
    free(tokens); free(labels); free(xf); free(W); free(dlogp); free(logp); free(lse); free(dxf); free(dW); free(z); free(label_dlogp);
    free(rres); free(rg); free(g0); free(dr);
}

/* Grad norm, AdamW (fp32 against torch's arithmetic in double; lean against the same with
 * bf16 rounding), and stochastic rounding's unbiasedness. */
__global__ void stochastic_round_k(float *out, float x, size_t n, uint32_t seed)
{
    GRID_LOOP(i, n) out[i] = __bfloat162float(bf16_round_stochastic(x, hash_index(seed, i)));
}

static void test_optim(void)
{
    size_t n = 300001;
    float *g = host_random(n, 1e-2f, 0), *p = host_random(n, 1.f, 0), *m = host_random(n, 1e-3f, 0), *v = host_random(n, 1e-3f, 0);
    for (size_t i = 0; i < n; i++) v[i] = fabsf(v[i]) * 1e-3f;
    double ss = 0; for (size_t i = 0; i < n; i++) ss += (double)g[i] * g[i];
    void *dg = to_device(g, n, 0);
    /* the two passes of the grad norm */
    double *dsum; REQUIRE_CUDA(cudaMalloc(&dsum, (1 + MAX_ELEM_BLOCKS) * 8));
    double got = 0;
    LAUNCH(elem_blocks(n), 256, sumsq_partial_k<float>)(dsum + 1, (const float *)dg, n);
    LAUNCH(1, 256, sum_partials_k)(dsum, dsum + 1, elem_blocks(n));
    REQUIRE_CUDA(cudaGetLastError());
    REQUIRE_CUDA(cudaMemcpy(&got, dsum, 8, cudaMemcpyDeviceToHost));
    g_checks++;
    if (fabs(got - ss) > 1e-9 * ss) { g_fail++; printf("FAIL sumsq: got %.15g want %.15g\n", got, ss); }
    else printf("ok   sumsq fp32                   rel %.3g\n", fabs(got - ss) / ss);
    /* four times over values whose sum depends on the order of addition: squares 2^54, 2.25,
     * 2.25 at elements 0, 256, 512, which three blocks of the grid-stride loop take one each
     * (on a GPU, and on the emulator with its 64-thread blocks): 2^54 + 4 when the small ones
     * meet first, + 8 otherwise. The same bits each time, whatever order the blocks ran in (the
     * emulator runs them in a new order at each launch). */
    size_t nh = 768;
    float *h = (float *)calloc(nh, sizeof(float));
    h[0] = 134217728.f; h[256] = 1.5f; h[512] = 1.5f;
    void *dh = to_device(h, nh, 0);
    double sums[4];
    for (int r = 0; r < 4; r++) {
        LAUNCH(elem_blocks(nh), 256, sumsq_partial_k<float>)(dsum + 1, (const float *)dh, nh);
        LAUNCH(1, 256, sum_partials_k)(dsum, dsum + 1, elem_blocks(nh));
        REQUIRE_CUDA(cudaGetLastError());
        REQUIRE_CUDA(cudaMemcpy(&sums[r], dsum, 8, cudaMemcpyDeviceToHost));
    }
    cudaFree(dh); free(h);
    g_checks++;
    if (memcmp(&sums[0], &sums[1], 8) || memcmp(&sums[0], &sums[2], 8) || memcmp(&sums[0], &sums[3], 8)) {
        g_fail++;
        printf("FAIL sumsq: four runs gave %.17g %.17g %.17g %.17g\n", sums[0], sums[1], sums[2], sums[3]);
    } else printf("ok   sumsq fp32 four runs         identical bits\n");

    double lr = 1e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1, scale = 0.5; long step = 3;
    double bc1 = 1 - pow(b1, step), bc2 = 1 - pow(b2, step);
    double *rp = zeros_f64(n), *rm = zeros_f64(n), *rv = zeros_f64(n);
    for (size_t i = 0; i < n; i++) {
        double gi = (double)g[i] * scale;
        rm[i] = b1 * m[i] + (1 - b1) * gi; rv[i] = b2 * v[i] + (1 - b2) * gi * gi;
        rp[i] = p[i] * (1 - lr * wd) - lr / bc1 * rm[i] / (sqrt(rv[i]) / sqrt(bc2) + eps);
    }
    void *dp = to_device(p, n, 0), *dm = to_device(m, n, 0), *dv = to_device(v, n, 0), *w16 = device_poisoned(n, 1);
    LAUNCH(elem_blocks(n), 256, adamw_f32_k)((float *)dp, (const float *)dg, (float *)dm, (float *)dv, (bf16 *)w16, n, (float)scale,
                                     (float)b1, (float)b2, (float)eps, (float)(1 - lr * wd), (float)(lr / bc1), (float)sqrt(bc2));
    REQUIRE_CUDA(cudaGetLastError());
    check("adamw fp32 p", dp, 0, rp, n, 1e-6, 1e-7);
    check("adamw fp32 m", dm, 0, rm, n, 1e-5, 1e-9);
    check("adamw fp32 v", dv, 0, rv, n, 1e-5, 1e-12);
    check("adamw fp32 -> bf16 copy", w16, 1, rp, n, 4e-3, 1e-6);
    /* lean: inputs rounded to bf16; outputs within one bf16 step (stochastic rounding) */
    for (size_t i = 0; i < n; i++) { g[i] = round_bf16(g[i]); p[i] = round_bf16(p[i]); m[i] = round_bf16(m[i]); v[i] = round_bf16(v[i]); }
    for (size_t i = 0; i < n; i++) {
        double gi = (double)g[i] * scale;
        rm[i] = b1 * m[i] + (1 - b1) * gi; rv[i] = b2 * v[i] + (1 - b2) * gi * gi;
        rp[i] = p[i] * (1 - lr * wd) - lr / bc1 * rm[i] / (sqrt(rv[i]) / sqrt(bc2) + eps);
    }
    void *bg = to_device(g, n, 1), *bp = to_device(p, n, 1), *bm = to_device(m, n, 1), *bv = to_device(v, n, 1);
    LAUNCH(elem_blocks(n), 256, adamw_bf16_k)((bf16 *)bp, (const bf16 *)bg, (bf16 *)bm, (bf16 *)bv, n, (float)scale, (float)b1,
                                      (float)b2, (float)eps, (float)(1 - lr * wd), (float)(lr / bc1), (float)sqrt(bc2), 42u);
    REQUIRE_CUDA(cudaGetLastError());
    check("adamw lean p", bp, 1, rp, n, 8e-3, 1e-30);
    check("adamw lean m", bm, 1, rm, n, 8e-3, 1e-9);   /* m = b1 m + (1 - b1) g cancels: fp32 rounding of the terms */
    check("adamw lean v", bv, 1, rv, n, 8e-3, 1e-30);
    /* stochastic rounding: x = 1 + 0.3 ulp(bf16) rounds up 30% of the time; the mean is x */
    size_t ns = 1 << 22;
    float x = 1.f + 0.3f * 0.0078125f;
    float *dsr; REQUIRE_CUDA(cudaMalloc(&dsr, ns * 4));
    LAUNCH(elem_blocks(ns), 256, stochastic_round_k)(dsr, x, ns, 7u);
    REQUIRE_CUDA(cudaGetLastError());
    float *hs = (float *)malloc(ns * 4); REQUIRE_CUDA(cudaMemcpy(hs, dsr, ns * 4, cudaMemcpyDeviceToHost));
    double mean = 0; size_t up = 0;
    for (size_t i = 0; i < ns; i++) { mean += hs[i]; up += hs[i] > 1.f; }
    mean /= ns;
    double frac = (double)up / ns;
    g_checks++;
    if (fabs(frac - 0.3) > 0.003 || fabs(mean - x) > 2e-5) {
        g_fail++;
        printf("FAIL stochastic rounding: up %.4f (want 0.3), mean %.7f want %.7f\n", frac, mean, x);
    }
    else printf("ok   stochastic rounding          up %.4f (0.3), mean err %.2g\n", frac, fabs(mean - x));
    cudaFree(dsr); free(hs);
    void *bufs[] = {dg, dp, dm, dv, w16, bg, bp, bm, bv, dsum};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) cudaFree(bufs[i]);
    free(g); free(p); free(m); free(v); free(rp); free(rm); free(rv);
}

/* The multi-tensor AdamW against the per-tensor kernels, launched per tensor as the backend
 * did before (decay by tensor, lean seed lean_round_seed(step, t)): the same bits for p, m, v
 * and the bf16 copy, over tensors of awkward sizes, with a gap between two of them that must
 * stay untouched. */
static void test_adamw_multi(void)
{
    const size_t sizes[] = {1, 300, 4099, 17, 70001, 256}, gap_after = 2, gap = 5;
    const int decay[] = {0, 1, 1, 0, 1, 0}, nt = 6;
    adamw_tensor tab[6];
    size_t n = 0;
    for (int t = 0; t < nt; t++) {
        tab[t].offset = n; tab[t].numel = sizes[t]; tab[t].decay = decay[t];
        n += sizes[t] + (t == (int)gap_after ? gap : 0);
    }
    adamw_tensor *dtab;
    REQUIRE_CUDA(cudaMalloc((void **)&dtab, sizeof tab));
    REQUIRE_CUDA(cudaMemcpy(dtab, tab, sizeof tab, cudaMemcpyHostToDevice));
    double lr = 1e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1, scale = 0.5;
    long step = 7;
    double bc1 = 1 - pow(b1, step), bc2 = 1 - pow(b2, step);
    float fstep = (float)(lr / bc1), sq_bc2 = (float)sqrt(bc2);
    float d2 = (float)(1.0 - lr * wd), d1 = (float)(1.0 - lr * 0.0);
    for (int lean = 0; lean < 2; lean++) {
        float *g = host_random(n, 1.f, lean), *p = host_random(n, 1.f, lean), *m = host_random(n, 0.1f, lean);
        float *v = host_random(n, 0.1f, lean);
        for (size_t i = 0; i < n; i++) v[i] = v[i] * v[i];
        void *gd = to_device(g, n, lean), *buf[2][4];   /* [per tensor, multi] p m v w16 */
        for (int k = 0; k < 2; k++) {
            buf[k][0] = to_device(p, n, lean); buf[k][1] = to_device(m, n, lean); buf[k][2] = to_device(v, n, lean);
            buf[k][3] = device_poisoned(n, 1);
        }
        for (int t = 0; t < nt; t++) {
            size_t o = tab[t].offset, len = tab[t].numel;
            float dec = (float)(1.0 - lr * (decay[t] ? wd : 0.0));
            if (lean)
                LAUNCH(elem_blocks(len), 256, adamw_bf16_k)((bf16 *)buf[0][0] + o, (const bf16 *)gd + o, (bf16 *)buf[0][1] + o,
                                                          (bf16 *)buf[0][2] + o, len, (float)scale, (float)b1, (float)b2,
                                                          (float)eps, dec, fstep, sq_bc2, lean_round_seed(step, t));
            else
                LAUNCH(elem_blocks(len), 256, adamw_f32_k)((float *)buf[0][0] + o, (const float *)gd + o, (float *)buf[0][1] + o,
                                                         (float *)buf[0][2] + o, (bf16 *)buf[0][3] + o, len, (float)scale,
                                                         (float)b1, (float)b2, (float)eps, dec, fstep, sq_bc2);
        }
        if (lean)
            LAUNCH(elem_blocks(n), 256, adamw_multi_bf16_k)((bf16 *)buf[1][0], (const bf16 *)gd, (bf16 *)buf[1][1],
                                                        (bf16 *)buf[1][2], dtab, nt, n, (float)scale, (float)b1, (float)b2,
                                                        (float)eps, d2, d1, fstep, sq_bc2, lean_round_seed(step, 0));
        else
            LAUNCH(elem_blocks(n), 256, adamw_multi_f32_k)((float *)buf[1][0], (const float *)gd, (float *)buf[1][1],
                                                       (float *)buf[1][2], (bf16 *)buf[1][3], dtab, nt, n, (float)scale,
                                                       (float)b1, (float)b2, (float)eps, d2, d1, fstep, sq_bc2);
        REQUIRE_CUDA(cudaGetLastError());
        static const char *const names[2][4] = {{"adamw multi = per tensor p", "adamw multi = per tensor m",
                                                 "adamw multi = per tensor v", "adamw multi = per tensor w16"},
                                                {"adamw multi lean p", "adamw multi lean m", "adamw multi lean v", ""}};
        for (int j = 0; j < (lean ? 3 : 4); j++)
            expect_same_bits(names[lean][j], buf[1][j], buf[0][j], n * (lean || j == 3 ? 2 : 4));
        for (int k = 0; k < 2; k++) for (int j = 0; j < 4; j++) cudaFree(buf[k][j]);
        cudaFree(gd);
        free(g); free(p); free(m); free(v);
    }
    cudaFree(dtab);
}

#ifdef EMU_CUDA_RUNTIME_H
/* The whole backend on the emulator, where faults can be injected and GEMM alignment is
 * counted: a lean backend planned for sequences of at most 24 tokens on a batch of odd lengths.
 * (1) no GEMM sees unaligned rows; (2) the same batch twice gives the same gradient bits and
 * grad norm (no atomics; the emulator shuffles block order at every launch); (3) a longer
 * sequence is refused naming max_seq_tokens; (4) a CUDA error inside grad_norm comes back as
 * that error: NaN with err set, and the next call refuses with it instead of carrying on. */
static void expect(const char *name, int ok, const char *detail)
{
    g_checks++;
    if (!ok) g_fail++;
    printf("%s %-28s %s\n", ok ? "ok  " : "FAIL", name, detail);
}

static void test_backend_emulated(void)
{
    llama_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.vocab_size = 300; cfg.hidden_size = 64; cfg.intermediate_size = 176; cfg.num_hidden_layers = 2;
    cfg.num_attention_heads = 4; cfg.num_key_value_heads = 2; cfg.head_dim = 16; cfg.rms_norm_eps = 1e-5f;
    cfg.rope_theta = 10000.0; cfg.max_position_embeddings = 128; cfg.bos_token_id = -1; cfg.initializer_range = 0.05;
    llama_model m;
    memset(&m, 0, sizeof m);
    char err[512];
    if (llama_model_alloc(&m, &cfg, err, sizeof err)) { printf("FAIL model: %s\n", err); g_fail++; return; }
    llama_model_init_random(&m, 3);
    llama_cuda_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.bf16 = 1; opts.lean_optimizer = 1; opts.recompute = 1; opts.max_tokens = 64; opts.max_seq_tokens = 24;
    llama_backend *b = llama_cuda_backend_create(&m, &opts, err, sizeof err);
    if (!b) { printf("FAIL create: %s\n", err); g_fail++; llama_model_free(&m); return; }
    int seq[] = {0, 23, 24, 41}, T = 41, tokens[41];
    unsigned char comp[41];
    float logp[41], dlogp[41];
    for (int i = 0; i < T; i++) { tokens[i] = (i * 7) % 20; comp[i] = 1; dlogp[i] = 0.25f * (float)(i % 3) - 0.25f; }
    llama_batch batch = {3, tokens, seq, comp};
    size_t N = b->n_params;
    float *g1 = (float *)malloc(N * 4), *g2 = (float *)malloc(N * 4);
    double norms[2];
    long misaligned = emu_misaligned_gemms;
    /* Host synchronisations of a forward: one upload of the batch, one download of the log-probs. */
    long copies = emu_memcpy_calls;
    char detail0[200];
    REQUIRE_OK(b->forward(b, &batch, logp));
    copies = emu_memcpy_calls - copies;
    g_checks++;
    if (copies != 2) { g_fail++; printf("FAIL forward made %ld cudaMemcpy calls, want 2\n", copies); }
    else printf("ok   forward synchronises twice (one upload, one download)\n");
    /* ... a backward: the upload of its per-token weights, no cudaDeviceSynchronize; an AdamW
     * step: neither (one launch; the next download waits for it) */
    long syncs = emu_sync_calls;
    copies = emu_memcpy_calls;
    REQUIRE_OK(b->backward(b, &batch, dlogp));
    snprintf(detail0, sizeof detail0, "%ld cudaMemcpy, %ld cudaDeviceSynchronize", emu_memcpy_calls - copies,
             emu_sync_calls - syncs);
    expect("backward synchronises once", emu_memcpy_calls - copies == 1 && emu_sync_calls == syncs, detail0);
    llama_adamw opt = {1e-3, 0.9, 0.95, 1e-8, 0.1, 1};
    copies = emu_memcpy_calls;
    REQUIRE_OK(b->adamw_step(b, &opt, 1.f));
    snprintf(detail0, sizeof detail0, "%ld cudaMemcpy, %ld cudaDeviceSynchronize", emu_memcpy_calls - copies,
             emu_sync_calls - syncs);
    expect("adamw_step does not synchronise", emu_memcpy_calls == copies && emu_sync_calls == syncs, detail0);
    for (int r = 0; r < 2; r++) {
        b->zero_grad(b);
        REQUIRE_OK(b->forward(b, &batch, logp) || b->backward(b, &batch, dlogp) ||
                   b->get_state(b, NULL, r ? g2 : g1, NULL, NULL));
        norms[r] = b->grad_norm(b);
    }
    char detail[200];
    snprintf(detail, sizeof detail, "%ld unaligned GEMMs in two steps", emu_misaligned_gemms - misaligned);
    expect("backend GEMM alignment", emu_misaligned_gemms == misaligned, detail);
    snprintf(detail, sizeof detail, "grad norm %.17g and %.17g", norms[0], norms[1]);
    expect("backend deterministic grads", !memcmp(g1, g2, N * 4) && !memcmp(&norms[0], &norms[1], 8), detail);

    int seq_long[] = {0, 25};
    llama_batch long_batch = {1, tokens, seq_long, comp};
    int rc = b->forward(b, &long_batch, logp);
    expect("sequence > max_seq_tokens", rc == -1 && strstr(b->err, "max_seq_tokens"), b->err);

    REQUIRE_OK(b->forward(b, &batch, logp) || b->backward(b, &batch, dlogp));
    emu_fail_launch_after = 0;                    /* the grad norm's first kernel fails */
    double norm = b->grad_norm(b);
    emu_fail_launch_after = -1;
    expect("grad_norm CUDA error", norm != norm && strstr(b->err, "too many resources"), b->err);
    rc = b->forward(b, &batch, logp);
    expect("the next call reports it", rc == -1 && strstr(b->err, "earlier error") && strstr(b->err, "too many resources"),
           b->err);
    b->destroy(b);
    free(g1); free(g2);
    llama_model_free(&m);
}
#endif

int main(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        printf("SKIP: no CUDA device (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 77;
    }
    if (cublasCreate(&g_cublas) != CUBLAS_STATUS_SUCCESS) { printf("FAIL: cublasCreate\n"); return 1; }
    for (int bf = 0; bf < 2; bf++) {
        test_gemm(bf);
        test_rmsnorm(bf);
        test_add_rmsnorm(bf);
        test_rope(bf);
        test_softmax(bf);
        test_swiglu(bf);
        test_attention(bf);
        test_lm_embed(bf);
    }
    test_flash();
    test_optim();
    test_adamw_multi();
#ifdef EMU_CUDA_RUNTIME_H
    test_backend_emulated();
#endif
    cublasDestroy(g_cublas);
    printf("%d checks, %d failed\n", g_checks, g_fail);
    return g_fail ? 1 : 0;
}
