/* tests/model/test_model.c - the CPU Llama model (llama/model.c) against Hugging Face and itself.
 *
 *   fixtures      every tests/fixtures/llama/<case>/: our per-token log-probs, summed completion
 *                 log-probs and every parameter gradient of J = sum_s w_s * completion_logp[s]
 *                 against transformers (tools/gen_llama_fixtures.py), max relative error 1e-4
 *   matmul        the blocked kernel against a naive triple loop, awkward sizes
 *   gemm          the strided kernel (llama/gemm.c), every level this CPU has (generic, AVX2,
 *                 AVX-512, plain loops), in all four operand layouts, accumulating into C
 *   exp           the vectorised softmax exp (llama/gemm.c) against exp in double
 *   decode        KV-cache decode_step's full logits -> log-softmax == the batched forward's
 *                 chunked LM-head log-probs (also the "naive full-logits" check of the chunking)
 *   batched decode  llama_decode (prompts prefilled in one call, then all slots stepped together)
 *                 == decode_step's log-probs and argmax; a slot's logits are bit-identical when it
 *                 is decoded alone; full caches and repeated slots are refused
 *   gqa           a GQA model equals the MHA model with repeated k/v heads (log-probs, grads)
 *   finite-diff   central differences of J in a few parameters of every kind
 *   accumulation  backward(a) + backward(b) == backward(a + b); zero_grad; grad_norm
 *   adamw         one step against a hand computation (decay only on 2-D tensors)
 *   errors        bad batches are refused with a message
 *
 * Relative error (used everywhere): rel(a, b) = |a - b| / max(|b|, floor), floor = 1e-2 *
 * max_i |b_i| over the tensor. The floor keeps elements that are tiny compared with the rest of
 * their tensor from turning fp32 rounding into a huge "relative" error.
 *
 * The HF gradients use floor 5e-2 * max|b|: the reference is HF in fp64, and HF's own fp32
 * gradients are 6-8e-5 from it with the 1e-2 floor (1.4-2.3e-5 with 5e-2; the generator prints
 * both), so at 1e-2 any fp32 implementation, HF's included, sits at the 1e-4 limit and a
 * different summation order (ASan build: no FMA) crosses it. Both numbers are printed.
 *
 * Usage: test_model [fixture_root]   (default tests/fixtures/llama; fixtures need the checkpoint
 * loader, built with -DHAVE_CHECKPOINT)
 */
#define _POSIX_C_SOURCE 200809L /* strdup, dirent */
#include "../../llama/model.h"
#ifdef HAVE_CHECKPOINT
#include "../../llama/safetensors.h"
#endif

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                    \
            printf(__VA_ARGS__);                                           \
            printf("\n");                                                  \
            failures++;                                                    \
        }                                                                  \
    } while (0)

/* max relative error of a against reference b with floor floor_frac * max|b|; *where gets the
 * index */
static double max_rel_floor(const float *a, const float *b, size_t n, double floor_frac, size_t *where)
{
    double mx = 0, worst = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs((double)b[i]));
    double floor_ = floor_frac * mx;
    if (floor_ == 0) floor_ = 1e-30;
    *where = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]) / fmax(fabs((double)b[i]), floor_);
        if (!(e <= worst)) { /* NaN counts as worst */
            worst = isnan(e) ? INFINITY : e;
            *where = i;
        }
    }
    return worst;
}

/* the default floor: 1e-2 * max|b| (see the header) */
static double max_rel(const float *a, const float *b, size_t n, size_t *where)
{
    return max_rel_floor(a, b, n, 1e-2, where);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        printf("out of memory\n");
        exit(1);
    }
    return p;
}

static llama_config tiny_config(int V, int D, int I, int L, int H, int K, int hd, int tied)
{
    llama_config c;
    memset(&c, 0, sizeof c);
    c.vocab_size = V;
    c.hidden_size = D;
    c.intermediate_size = I;
    c.num_hidden_layers = L;
    c.num_attention_heads = H;
    c.num_key_value_heads = K;
    c.head_dim = hd;
    c.rms_norm_eps = 1e-5f;
    c.rope_theta = 10000.0;
    c.max_position_embeddings = 4096;
    c.tie_word_embeddings = tied;
    c.bos_token_id = -1;
    c.initializer_range = 0.3; /* large enough that attention and the MLP matter */
    return c;
}

/* Random model with norms jittered around 1 (so norm gradients are non-trivial). */
static void make_model(llama_model *m, const llama_config *c, uint64_t seed)
{
    char err[256];
    if (llama_model_alloc(m, c, err, sizeof err)) {
        printf("alloc: %s\n", err);
        exit(1);
    }
    llama_model_init_random(m, seed);
    uint64_t s = seed * 77 + 1;
    for (int t = 0; t < m->n_tensors; t++)
        if (m->tensors[t].ndim == 1)
            for (size_t i = 0; i < m->tensors[t].numel; i++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                m->params[m->tensors[t].offset + i] += 0.2f * ((float)(s >> 40) / (1 << 24) - 0.5f);
            }
}

typedef struct {
    int n_seq, T;
    int *tokens, *seq_start;
    unsigned char *completion;
    float *dlogp;
    llama_batch b;
} test_batch;

static void make_batch(test_batch *tb, const int *lens, int n_seq, int V, uint64_t seed)
{
    tb->n_seq = n_seq;
    tb->seq_start = (int *)xmalloc((n_seq + 1) * sizeof(int));
    tb->seq_start[0] = 0;
    for (int s = 0; s < n_seq; s++) tb->seq_start[s + 1] = tb->seq_start[s] + lens[s];
    tb->T = tb->seq_start[n_seq];
    tb->tokens = (int *)xmalloc(tb->T * sizeof(int));
    tb->completion = (unsigned char *)xmalloc(tb->T);
    tb->dlogp = (float *)xmalloc(tb->T * sizeof(float));
    uint64_t r = seed;
    for (int s = 0; s < n_seq; s++) {
        const float w = (s % 2 ? -0.8f : 1.1f) * (1 + 0.1f * s);
        for (int i = tb->seq_start[s]; i < tb->seq_start[s + 1]; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            tb->tokens[i] = (int)((r >> 33) % (uint64_t)V);
            tb->completion[i] = i - tb->seq_start[s] >= (lens[s] + 1) / 2;
            tb->dlogp[i] = tb->completion[i] ? w : 0.0f;
        }
    }
    tb->b.n_seq = n_seq;
    tb->b.tokens = tb->tokens;
    tb->b.seq_start = tb->seq_start;
    tb->b.completion = tb->completion;
}

static void free_batch(test_batch *tb)
{
    free(tb->tokens);
    free(tb->seq_start);
    free(tb->completion);
    free(tb->dlogp);
}

static llama_backend *backend(llama_model *m)
{
    char err[256];
    llama_backend *be = llama_cpu_backend_create(m, err, sizeof err);
    if (!be) {
        printf("backend: %s\n", err);
        exit(1);
    }
    return be;
}

/* J = sum_i dlogp[i] * logp[i] for the current parameters (fp64 sum) */
static double objective(llama_backend *be, const test_batch *tb)
{
    float *logp = (float *)xmalloc(tb->T * sizeof(float));
    if (be->forward(be, &tb->b, logp)) {
        printf("forward: %s\n", be->err);
        exit(1);
    }
    double J = 0;
    for (int i = 0; i < tb->T; i++) J += (double)tb->dlogp[i] * logp[i];
    free(logp);
    return J;
}

/* ------------------------------------------------------------------------------------------ */

#ifdef HAVE_CHECKPOINT
static float *read_f32(st_file *f, const char *name, size_t want, const char *dir)
{
    char err[512];
    const st_tensor *t = st_find(f, name);
    if (!t || st_numel(t) != want) {
        printf("FAIL %s/expected.safetensors: tensor %s missing or has %zu elements, want %zu\n", dir,
               name, t ? st_numel(t) : 0, want);
        failures++;
        return NULL;
    }
    float *p = (float *)xmalloc(want * sizeof(float));
    if (st_read_f32(f, t, p, err, sizeof err)) {
        printf("FAIL %s\n", err);
        failures++;
        free(p);
        return NULL;
    }
    return p;
}

static int32_t *read_i32(st_file *f, const char *name, size_t *n, const char *dir)
{
    char err[512];
    const st_tensor *t = st_find(f, name);
    if (!t) {
        printf("FAIL %s/expected.safetensors: tensor %s missing\n", dir, name);
        failures++;
        return NULL;
    }
    *n = st_numel(t);
    int32_t *p = (int32_t *)xmalloc(*n * sizeof(int32_t));
    if (st_read_i32(f, t, p, err, sizeof err)) {
        printf("FAIL %s\n", err);
        failures++;
        free(p);
        return NULL;
    }
    return p;
}

static const double TOL = 1e-4;

static void test_fixture(const char *dir)
{
    char err[512], path[1100];
    llama_model m;
    if (llama_model_load(&m, dir, err, sizeof err)) {
        printf("FAIL load %s: %s\n", dir, err);
        failures++;
        return;
    }
    st_file f;
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    if (st_open(&f, path, err, sizeof err)) {
        printf("FAIL %s\n", err);
        failures++;
        llama_model_free(&m);
        return;
    }
    size_t T = 0, ns1 = 0, nc = 0;
    int32_t *tokens = read_i32(&f, "tokens", &T, dir);
    int32_t *seq_start = read_i32(&f, "seq_start", &ns1, dir);
    int32_t *comp = read_i32(&f, "completion", &nc, dir);
    if (!tokens || !seq_start || !comp || nc != T || ns1 < 2 || (size_t)seq_start[ns1 - 1] != T) {
        printf("FAIL %s: expected.safetensors has inconsistent tokens/seq_start/completion\n", dir);
        failures++;
        goto done0;
    }
    const int n_seq = (int)ns1 - 1;
    float *weight = read_f32(&f, "weight", n_seq, dir);
    float *logp_ref = read_f32(&f, "logp", T, dir);
    float *clp_ref = read_f32(&f, "completion_logp", n_seq, dir);
    unsigned char *cm = (unsigned char *)xmalloc(T);
    float *logp = (float *)xmalloc(T * sizeof(float)), *dlogp = (float *)xmalloc(T * sizeof(float));
    if (!weight || !logp_ref || !clp_ref) goto done1;
    for (int s = 0; s < n_seq; s++)
        for (int i = seq_start[s]; i < seq_start[s + 1]; i++) {
            cm[i] = (unsigned char)(comp[i] != 0);
            dlogp[i] = cm[i] ? weight[s] : 0.0f;
        }
    llama_batch b = {n_seq, tokens, seq_start, cm};
    llama_backend *be = backend(&m);
    if (be->forward(be, &b, logp)) {
        printf("FAIL %s: forward: %s\n", dir, be->err);
        failures++;
        goto done2;
    }
    size_t where;
    double e = max_rel(logp, logp_ref, T, &where);
    printf("  %-40s max rel err %.2e (at token %zu: ours %.7g, HF %.7g)\n", "logp", e, where,
           logp[where], logp_ref[where]);
    CHECK(e <= TOL, "%s: logp differs from HF at token %zu: %g vs %g (rel %.2e)", dir, where,
          logp[where], logp_ref[where], e);
    double *clp = (double *)xmalloc(n_seq * sizeof(double));
    float *clpf = (float *)xmalloc(n_seq * sizeof(float));
    llama_completion_logp(&b, logp, clp);
    for (int s = 0; s < n_seq; s++) clpf[s] = (float)clp[s];
    e = max_rel(clpf, clp_ref, n_seq, &where);
    printf("  %-40s max rel err %.2e (sequence %zu: ours %.7g, HF %.7g)\n", "completion_logp", e,
           where, clpf[where], clp_ref[where]);
    CHECK(e <= TOL, "%s: completion_logp of sequence %zu: %g vs %g", dir, where, clpf[where],
          clp_ref[where]);
    free(clp);
    free(clpf);

    if (be->backward(be, &b, dlogp)) {
        printf("FAIL %s: backward: %s\n", dir, be->err);
        failures++;
        goto done2;
    }
    float *grads = (float *)xmalloc(m.n_params * sizeof(float));
    be->get_state(be, NULL, grads, NULL, NULL);
    double worst = 0, worst1 = 0;
    int n_grad_ref = 0;
    for (int i = 0; i < f.n; i++) n_grad_ref += !strncmp(f.tensors[i].name, "grad.", 5);
    CHECK(n_grad_ref == m.n_tensors, "%s: %d reference gradients for %d parameter tensors", dir,
          n_grad_ref, m.n_tensors);
    for (int t = 0; t < m.n_tensors; t++) {
        const llama_tensor_info *ti = &m.tensors[t];
        char name[200];
        snprintf(name, sizeof name, "grad.%s", ti->name);
        float *ref = read_f32(&f, name, ti->numel, dir);
        if (!ref) continue;
        e = max_rel_floor(grads + ti->offset, ref, ti->numel, 5e-2, &where);
        size_t w1;
        worst1 = fmax(worst1, max_rel(grads + ti->offset, ref, ti->numel, &w1));
        worst = fmax(worst, e);
        if (e > TOL || getenv("VERBOSE"))
            printf("  %-50s max rel err %.2e at [%zu] (ours %.7g, HF %.7g)\n", name, e, where,
                   grads[ti->offset + where], ref[where]);
        CHECK(e <= TOL, "%s: %s differs from HF: max rel err %.2e at flat index %zu (ours %g, HF %g)",
              dir, name, e, where, grads[ti->offset + where], ref[where]);
        free(ref);
    }
    printf("  %-40s max rel err %.2e over %d tensors (floor 5e-2 max; with 1e-2: %.2e)\n",
           "gradients", worst, m.n_tensors, worst1);
    free(grads);
done2:
    be->destroy(be);
done1:
    free(weight);
    free(logp_ref);
    free(clp_ref);
    free(cm);
    free(logp);
    free(dlogp);
done0:
    free(tokens);
    free(seq_start);
    free(comp);
    st_close(&f);
    llama_model_free(&m);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int test_fixtures(const char *root)
{
    DIR *d = opendir(root);
    if (!d) {
        printf("FAIL cannot open fixture directory %s (run from the repo root)\n", root);
        failures++;
        return 0;
    }
    char *names[64];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < 64)
        if (de->d_name[0] != '.') names[n++] = strdup(de->d_name);
    closedir(d);
    qsort(names, n, sizeof names[0], cmp_str);
    for (int i = 0; i < n; i++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/%s", root, names[i]);
        printf("fixture %s\n", names[i]);
        test_fixture(dir);
        free(names[i]);
    }
    CHECK(n >= 4, "expected at least 4 fixtures under %s, found %d", root, n);
    return n;
}
#endif

/* ------------------------------------------------------------------------------------------ */

static void test_matmul(void)
{
    const int sizes[][3] = {{1, 1, 1}, {7, 13, 5}, {13, 300, 33}, {6, 16, 16}, {50, 517, 70}, {1, 64, 300},
                             {197, 530, 37}}; /* the last: several row blocks and k blocks */
    double worst = 0;
    for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++) {
        const int n = sizes[c][0], in = sizes[c][1], out = sizes[c][2];
        float *x = (float *)xmalloc((size_t)n * in * 4), *w = (float *)xmalloc((size_t)out * in * 4);
        float *y = (float *)xmalloc((size_t)n * out * 4), *yr = (float *)xmalloc((size_t)n * out * 4);
        for (int i = 0; i < n * in; i++) x[i] = sinf(0.37f * i + 1);
        for (int i = 0; i < out * in; i++) w[i] = cosf(0.11f * i);
        llama_matmul(y, x, w, n, in, out);
        /* error relative to sum_i |x_i w_i|, the scale fp32 rounding of a dot product works on */
        size_t where = 0;
        double e = 0;
        for (int r = 0; r < n; r++)
            for (int o = 0; o < out; o++) {
                double s = 0, sa = 0;
                for (int i = 0; i < in; i++) {
                    s += (double)x[r * in + i] * w[o * in + i];
                    sa += fabs((double)x[r * in + i] * w[o * in + i]);
                }
                const double ei = fabs(y[r * out + o] - s) / sa;
                if (ei > e) { e = ei; where = (size_t)r * out + o; }
            }
        worst = fmax(worst, e);
        CHECK(e < 1e-6, "matmul %dx%dx%d: error %.2e (relative to sum |x w|) at %zu", n, in, out, e, where);
        free(x); free(w); free(y); free(yr);
    }
    printf("matmul vs naive fp64: max error / sum|x w| %.2e\n", worst);
}

/* llama_gemm, the kernel under every product, against a double-precision triple loop: all four
 * operand layouts (A and B each row-major or transposed, read through strides), C with a
 * leading dimension equal to or wider than m and non-zero before (the kernel accumulates), and
 * sizes that are odd, below and above the kernel's blocks (tile 8 x 32 or 6 x 16, k block 256,
 * row block 192, column block 1024). A broken tile, packing or edge case fails here first. */
static void test_gemm_kernel(const char *kernel);
static void test_gemm(void)
{
    const char *names[] = {"auto", "generic (vector extensions or plain C)", "AVX2", "AVX-512",
                           "plain loops"};
    for (int level = 1; level <= 4; level++) {
        if (llama_gemm_force_level(level) == 0) test_gemm_kernel(names[level]);
        else printf("gemm: no %s kernel on this CPU/build: not tested\n", names[level]);
    }
    llama_gemm_force_level(0);
}

static void test_gemm_kernel(const char *kernel)
{
    const int sizes[][3] = {{1, 1, 1}, {7, 13, 5}, {9, 257, 33}, {8, 256, 32}, {6, 16, 16},
                            {200, 70, 41}, {17, 300, 1030}, {197, 530, 1037}, {385, 3, 2}};
    double worst = 0;
    for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++) {
        const int n = sizes[c][0], k = sizes[c][1], m = sizes[c][2];
        const size_t ldc = (size_t)m + (c % 2 ? 3 : 0); /* ldc == m too: ASan sees a write past C */
        float *a = (float *)xmalloc((size_t)n * k * 4), *b = (float *)xmalloc((size_t)k * m * 4);
        float *C = (float *)xmalloc((size_t)n * ldc * 4), *C0 = (float *)xmalloc((size_t)n * ldc * 4);
        for (size_t i = 0; i < (size_t)n * k; i++) a[i] = sinf(0.37f * (float)i + 1);
        for (size_t i = 0; i < (size_t)k * m; i++) b[i] = cosf(0.11f * (float)i);
        for (size_t i = 0; i < (size_t)n * ldc; i++) C0[i] = 0.25f * sinf(0.05f * (float)i);
        for (int layout = 0; layout < 4; layout++) {
            /* layout bit 0: A stored [k, n] (transposed); bit 1: B stored [m, k] (transposed) */
            const ptrdiff_t ars = layout & 1 ? 1 : k, aks = layout & 1 ? n : 1;
            const ptrdiff_t bks = layout & 2 ? 1 : m, bjs = layout & 2 ? k : 1;
            memcpy(C, C0, (size_t)n * ldc * 4);
            llama_gemm(C, ldc, a, ars, aks, b, bks, bjs, n, k, m);
            double e = 0;
            for (int r = 0; r < n; r++)
                for (size_t j = 0; j < ldc; j++) {
                    const size_t at = (size_t)r * ldc + j;
                    if (j >= (size_t)m) { /* padding columns of C: untouched */
                        CHECK(C[at] == C0[at], "gemm %s %dx%dx%d layout %d wrote C[%d][%zu] past m", kernel, n, k, m,
                              layout, r, j);
                        continue;
                    }
                    double s = C0[at], sa = fabs(C0[at]);
                    for (int kk = 0; kk < k; kk++) {
                        const double p = (double)a[r * ars + kk * aks] * b[kk * bks + (ptrdiff_t)j * bjs];
                        s += p;
                        sa += fabs(p);
                    }
                    e = fmax(e, fabs(C[at] - s) / sa);
                }
            worst = fmax(worst, e);
            CHECK(e < 1e-6, "gemm %s %dx%dx%d layout %d: error %.2e (relative to sum |a b|)", kernel, n, k, m,
                  layout, e);
        }
        free(a); free(b); free(C); free(C0);
    }
    printf("gemm, %s kernel (4 layouts, %d shapes) vs naive fp64: max error / sum|a b| %.2e\n",
           kernel, (int)(sizeof sizes / sizeof sizes[0]), worst);
}

/* llama_exp_f32 (the softmax exps) against exp in double: relative error on a fine grid of
 * arguments from -87 to 1 through scale and shift, exactly 0 below -87, NaN kept. */
static void test_exp_kernel(const char *kernel);
static void test_exp(void)
{
    llama_gemm_force_level(1);
    test_exp_kernel("generic");
    if (llama_gemm_force_level(3) == 0) test_exp_kernel("AVX-512");
    llama_gemm_force_level(0);
}

static void test_exp_kernel(const char *kernel)
{
    enum { N = 200001 };
    float *x = (float *)xmalloc(N * sizeof(float));
    for (int i = 0; i < N; i++) x[i] = (float)(-88.0 + 89.0 * i / (N - 1)); /* -88 .. 1 */
    llama_exp_f32(x, N, 2.0f, 1.0f); /* e^(2a - 1) */
    double e = 0;
    for (int i = 0; i < N; i++) {
        const float a = (float)(-88.0 + 89.0 * i / (N - 1)), arg = a * 2.0f - 1.0f;
        if (arg < -87.0f) {
            CHECK(x[i] == 0.0f, "exp_f32(%g) = %g, expected 0 below -87", arg, x[i]);
            continue;
        }
        e = fmax(e, fabs(x[i] - exp((double)arg)) / exp((double)arg));
    }
    CHECK(e < 3e-7, "exp_f32 (%s): relative error %.2e", kernel, e);
    float y[3] = {NAN, -INFINITY, 0.0f};
    llama_exp_f32(y, 3, 1.0f, 0.0f);
    CHECK(isnan(y[0]) && y[1] == 0.0f && y[2] == 1.0f, "exp_f32 (%s) of NaN, -inf, 0 = %g %g %g", kernel,
          y[0], y[1], y[2]);
    printf("exp_f32 (%s) vs exp in double: max relative error %.2e\n", kernel, e);
    free(x);
}

/* decode_step (full logits, one token at a time) against the batched, chunked forward. */
static void test_decode_vs_forward(void)
{
    llama_config c = tiny_config(300, 32, 48, 2, 4, 2, 8, 1);
    c.rope_llama3 = 1;
    c.rope_factor = 8;
    c.rope_low_freq_factor = 1;
    c.rope_high_freq_factor = 4;
    c.rope_original_max_position_embeddings = 64;
    c.rope_theta = 50000;
    llama_model m;
    make_model(&m, &c, 11);
    const int lens[] = {150, 3, 90}; /* T > 3 LM-head chunks; 150 > one attention query block */
    test_batch tb;
    make_batch(&tb, lens, 3, c.vocab_size, 5);
    llama_backend *be = backend(&m);
    float *logp = (float *)xmalloc(tb.T * sizeof(float)), *ref = (float *)xmalloc(tb.T * sizeof(float));
    CHECK(be->forward(be, &tb.b, logp) == 0, "forward: %s", be->err);
    float *logits = (float *)xmalloc(c.vocab_size * sizeof(float));
    char err[256];
    for (int s = 0; s < tb.n_seq; s++) {
        llama_kv_cache kv;
        CHECK(llama_kv_cache_alloc(&kv, &c, 1, lens[s], err, sizeof err) == 0, "%s", err);
        ref[tb.seq_start[s]] = 0;
        for (int i = tb.seq_start[s]; i < tb.seq_start[s + 1]; i++) {
            CHECK(llama_decode_step(&m, &kv, tb.tokens[i], logits, err, sizeof err) == 0, "%s", err);
            if (i + 1 == tb.seq_start[s + 1]) break;
            double mx = -1e300, sum = 0;
            for (int v = 0; v < c.vocab_size; v++) mx = fmax(mx, logits[v]);
            for (int v = 0; v < c.vocab_size; v++) sum += exp(logits[v] - mx);
            ref[i + 1] = (float)(logits[tb.tokens[i + 1]] - mx - log(sum));
        }
        /* a full cache is an error, not an overflow */
        CHECK(llama_decode_step(&m, &kv, 0, logits, err, sizeof err) == -1, "full cache accepted");
        llama_kv_cache_free(&kv);
    }
    size_t where;
    double e = max_rel(logp, ref, tb.T, &where);
    printf("decode_step full logits vs batched chunked forward: max rel err %.2e\n", e);
    CHECK(e < 1e-5, "decode vs forward: token %zu: %g vs %g", where, logp[where], ref[where]);
    free(logits); free(logp); free(ref);
    be->destroy(be);
    free_batch(&tb);
    llama_model_free(&m);
}

/* log-softmax of logits[V] at token `id`, in double */
static double logp_of(const float *logits, int V, int id)
{
    double mx = -1e300, sum = 0;
    for (int v = 0; v < V; v++) mx = fmax(mx, logits[v]);
    for (int v = 0; v < V; v++) sum += exp(logits[v] - mx);
    return logits[id] - mx - log(sum);
}

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* Decodes the sequences `which` (indices into tb) together in one cache: each one's first
 * prefix[s] tokens in one call (prefill), then one token per sequence per call until its end.
 * out[i + 1] = the logits after token i of the batch (for positions from each prefix's end);
 * out is [T, V]. */
static void decode_batched(const llama_model *m, const test_batch *tb, const int *which, int n,
                           const int *prefix, float *out)
{
    const int V = m->cfg.vocab_size;
    char err[256];
    llama_kv_cache kv;
    int slot[8], start[9], tokens[512], fed[8];
    float *logits = (float *)xmalloc((size_t)n * V * sizeof(float));
    CHECK(llama_kv_cache_alloc(&kv, &m->cfg, n, 160, err, sizeof err) == 0, "%s", err);
    start[0] = 0;
    for (int e = 0; e < n; e++) { /* the prompts, one entry each */
        const int s = which[e], t0 = tb->seq_start[s];
        slot[e] = e;
        memcpy(tokens + start[e], tb->tokens + t0, prefix[s] * sizeof(int));
        start[e + 1] = start[e] + prefix[s];
        fed[e] = prefix[s];
    }
    for (;;) {
        CHECK(llama_decode(m, &kv, n, slot, tokens, start, logits, err, sizeof err) == 0, "%s", err);
        int k = 0;
        for (int e = 0; e < n; e++) { /* store, then the next token of each unfinished sequence */
            const int s = which[slot[e]], i = tb->seq_start[s] + fed[slot[e]];
            if (i < tb->seq_start[s + 1]) memcpy(out + (size_t)i * V, logits + (size_t)e * V, V * sizeof(float));
            if (i + 1 > tb->seq_start[s + 1] - 1) continue;
            slot[k] = slot[e];
            tokens[k] = tb->tokens[i];
            start[k + 1] = k + 1;
            fed[slot[e]]++;
            k++;
        }
        if (!(n = k)) break;
    }
    llama_kv_cache_free(&kv);
    free(logits);
}

/* llama_decode over a multi-slot cache against the one-token reference path (decode_step). */
static void test_batched_decode(void)
{
    llama_config c = tiny_config(300, 32, 48, 2, 4, 2, 8, 1);
    llama_model m;
    make_model(&m, &c, 12);
    const int V = c.vocab_size, lens[] = {150, 3, 90, 40};
    /* 140 > one attention query block (GEMM prefill); 1 (a one-token prompt: the cached path) */
    const int prefix[] = {140, 1, 60, 2};
    test_batch tb;
    make_batch(&tb, lens, 4, V, 9);
    float *ref = (float *)xmalloc((size_t)tb.T * V * sizeof(float));
    float *all = (float *)xmalloc((size_t)tb.T * V * sizeof(float));
    float *one = (float *)xmalloc((size_t)tb.T * V * sizeof(float));
    char err[256];
    for (int s = 0; s < tb.n_seq; s++) { /* the reference: one token at a time */
        llama_kv_cache kv;
        CHECK(llama_kv_cache_alloc(&kv, &c, 1, lens[s], err, sizeof err) == 0, "%s", err);
        for (int i = tb.seq_start[s]; i + 1 < tb.seq_start[s + 1]; i++)
            CHECK(llama_decode_step(&m, &kv, tb.tokens[i], ref + (size_t)(i + 1) * V, err, sizeof err) == 0,
                  "%s", err);
        llama_kv_cache_free(&kv);
    }
    const int every[] = {0, 1, 2, 3};
    decode_batched(&m, &tb, every, 4, prefix, all);
    double e = 0;
    int checked = 0, argmax_diff = 0, bitwise_diff = 0;
    for (int s = 0; s < tb.n_seq; s++) {
        decode_batched(&m, &tb, &every[s], 1, prefix, one);
        for (int i = tb.seq_start[s] + prefix[s]; i < tb.seq_start[s + 1]; i++) {
            const float *r = ref + (size_t)i * V, *a = all + (size_t)i * V;
            e = fmax(e, fabs(logp_of(a, V, tb.tokens[i]) - logp_of(r, V, tb.tokens[i])));
            argmax_diff += argmax(a, V) != argmax(r, V);
            bitwise_diff += memcmp(a, one + (size_t)i * V, V * sizeof(float)) != 0;
            checked++;
        }
    }
    printf("batched decode vs one token at a time: %d positions, max |dlogp| %.2e, %d argmax "
           "differ, %d differ from decoding alone\n", checked, e, argmax_diff, bitwise_diff);
    CHECK(checked == 150 - 140 + 3 - 1 + 90 - 60 + 40 - 2, "positions checked: %d", checked);
    CHECK(e < 1e-4 && argmax_diff == 0, "batched decode vs decode_step: |dlogp| %g, %d argmax differ", e,
          argmax_diff);
    CHECK(bitwise_diff == 0, "%d positions' logits depend on the other slots in the batch", bitwise_diff);

    /* refused: a slot twice, a full slot, a token outside the vocabulary */
    llama_kv_cache kv;
    int slot[2] = {0, 0}, tokens[3] = {1, 2, 3}, start[3] = {0, 1, 2};
    CHECK(llama_kv_cache_alloc(&kv, &c, 2, 2, err, sizeof err) == 0, "%s", err);
    CHECK(llama_decode(&m, &kv, 2, slot, tokens, start, all, err, sizeof err) == -1 && strstr(err, "twice"),
          "a slot given twice accepted");
    printf("slot twice -> \"%s\"\n", err);
    start[1] = 3;
    CHECK(llama_decode(&m, &kv, 1, slot, tokens, start, all, err, sizeof err) == -1 && strstr(err, "full"),
          "3 tokens into 2 positions accepted");
    printf("full slot -> \"%s\"\n", err);
    tokens[0] = V;
    start[1] = 1;
    CHECK(llama_decode(&m, &kv, 1, slot, tokens, start, all, err, sizeof err) == -1 &&
          strstr(err, "vocabulary") && kv.len[0] == 0, "bad token accepted");
    llama_kv_cache_free(&kv);
    free(ref); free(all); free(one);
    free_batch(&tb);
    llama_model_free(&m);
}

/* A GQA model and the MHA model whose k/v heads are the GQA heads repeated (HF's repeat_kv)
 * compute the same function; the GQA k/v gradient is the sum over the repeats. */
static void test_gqa_equals_repeated_kv(void)
{
    const int H = 6, K = 2, hd = 8, D = 40, rep = H / K;
    llama_config cg = tiny_config(50, D, 36, 2, H, K, hd, 0), cm = cg;
    cm.num_key_value_heads = H;
    llama_model g, m;
    make_model(&g, &cg, 21);
    make_model(&m, &cm, 99);
    /* copy everything, repeating k/v rows: MHA head h = GQA kv head h / rep */
    for (int t = 0; t < g.n_tensors; t++) {
        const llama_tensor_info *a = &g.tensors[t], *b = &m.tensors[t];
        if (strstr(a->name, "k_proj") || strstr(a->name, "v_proj")) {
            for (int h = 0; h < H; h++)
                memcpy(m.params + b->offset + (size_t)h * hd * D, g.params + a->offset + (size_t)(h / rep) * hd * D,
                       (size_t)hd * D * sizeof(float));
        } else {
            memcpy(m.params + b->offset, g.params + a->offset, a->numel * sizeof(float));
        }
    }
    const int lens[] = {12, 20};
    test_batch tb;
    make_batch(&tb, lens, 2, cg.vocab_size, 3);
    llama_backend *bg = backend(&g), *bm = backend(&m);
    float *lg = (float *)xmalloc(tb.T * 4), *lm = (float *)xmalloc(tb.T * 4);
    bg->forward(bg, &tb.b, lg);
    bm->forward(bm, &tb.b, lm);
    size_t where;
    double e = max_rel(lg, lm, tb.T, &where);
    CHECK(e < 1e-5, "GQA vs repeated-KV logp: rel %.2e at %zu", e, where);
    bg->backward(bg, &tb.b, tb.dlogp);
    bm->backward(bm, &tb.b, tb.dlogp);
    float *gg = (float *)xmalloc(g.n_params * 4), *gm = (float *)xmalloc(m.n_params * 4);
    bg->get_state(bg, NULL, gg, NULL, NULL);
    bm->get_state(bm, NULL, gm, NULL, NULL);
    double worst = e;
    for (int t = 0; t < g.n_tensors; t++) {
        const llama_tensor_info *a = &g.tensors[t], *b = &m.tensors[t];
        float *want = (float *)xmalloc(a->numel * 4);
        if (strstr(a->name, "k_proj") || strstr(a->name, "v_proj")) {
            memset(want, 0, a->numel * 4);
            for (int h = 0; h < H; h++)
                for (int i = 0; i < hd * D; i++)
                    want[(size_t)(h / rep) * hd * D + i] += gm[b->offset + (size_t)h * hd * D + i];
        } else {
            memcpy(want, gm + b->offset, a->numel * 4);
        }
        e = max_rel(gg + a->offset, want, a->numel, &where);
        worst = fmax(worst, e);
        CHECK(e < 1e-4, "GQA vs repeated-KV grad %s: rel %.2e at %zu", a->name, e, where);
        free(want);
    }
    printf("GQA vs repeated-KV MHA: max rel err %.2e (logp and grads)\n", worst);
    free(lg); free(lm); free(gg); free(gm);
    bg->destroy(bg);
    bm->destroy(bm);
    free_batch(&tb);
    llama_model_free(&g);
    llama_model_free(&m);
}

/* Central differences of J in the largest-gradient element of every tensor kind. fp32
 * forward noise limits this to ~1e-2 relative; the HF fixtures are the precise check. */
static void test_finite_differences(void)
{
    llama_config c = tiny_config(40, 24, 40, 2, 3, 1, 8, 1);
    llama_model m;
    make_model(&m, &c, 7);
    const int lens[] = {10, 140}; /* 140: two attention query blocks (ATT_QB 128) */
    test_batch tb;
    make_batch(&tb, lens, 2, c.vocab_size, 9);
    llama_backend *be = backend(&m);
    float *logp = (float *)xmalloc(tb.T * 4);
    be->forward(be, &tb.b, logp);
    be->backward(be, &tb.b, tb.dlogp);
    float *grads = (float *)xmalloc(m.n_params * 4);
    be->get_state(be, NULL, grads, NULL, NULL);
    int checked = 0;
    double worst = 0;
    for (int t = 0; t < m.n_tensors; t++) {
        const llama_tensor_info *ti = &m.tensors[t];
        if (!strstr(ti->name, "layers.1.") && !strstr(ti->name, "embed") && !strstr(ti->name, "model.norm"))
            continue;
        size_t best = 0;
        for (size_t i = 0; i < ti->numel; i++)
            if (fabsf(grads[ti->offset + i]) > fabsf(grads[ti->offset + best])) best = i;
        float *p = m.params + ti->offset + best;
        /* five-point stencil: truncation O(h^4), so h can be large enough to drown fp32 noise */
        const float p0 = *p, h = 2e-2f * fmaxf(1.0f, fabsf(p0));
        double J[4];
        const float steps[4] = {p0 + h, p0 - h, p0 + 2 * h, p0 - 2 * h};
        for (int i = 0; i < 4; i++) {
            *p = steps[i];
            J[i] = objective(be, &tb);
        }
        *p = p0;
        const double fd = (8 * (J[0] - J[1]) - (J[2] - J[3])) / (12.0 * h);
        const double an = grads[ti->offset + best];
        const double e = fabs(fd - an) / fmax(fabs(an), 1e-3);
        worst = fmax(worst, e);
        CHECK(e < 2e-2, "finite difference %s[%zu]: fd %.6g vs backward %.6g (rel %.2e)", ti->name,
              best, fd, an, e);
        checked++;
    }
    printf("finite differences: %d tensors, max rel err %.2e\n", checked, worst);
    free(logp); free(grads);
    be->destroy(be);
    free_batch(&tb);
    llama_model_free(&m);
}

static void test_accumulation_and_adamw(void)
{
    llama_config c = tiny_config(30, 16, 24, 1, 2, 2, 8, 0);
    llama_model m;
    make_model(&m, &c, 3);
    const int lens[] = {8, 6};
    test_batch tb;
    make_batch(&tb, lens, 2, c.vocab_size, 1);
    llama_backend *be = backend(&m);
    const size_t N = m.n_params;
    float *logp = (float *)xmalloc(tb.T * 4), *da = (float *)xmalloc(tb.T * 4), *db = (float *)xmalloc(tb.T * 4);
    float *dab = (float *)xmalloc(tb.T * 4);
    for (int i = 0; i < tb.T; i++) {
        da[i] = tb.dlogp[i];
        db[i] = 0.3f * (i % 3) - 0.2f; /* prompt tokens too: SFT-like weights */
        dab[i] = da[i] + db[i];
    }
    float *g1 = (float *)xmalloc(N * 4), *g2 = (float *)xmalloc(N * 4);
    be->forward(be, &tb.b, logp);
    be->zero_grad(be);
    be->backward(be, &tb.b, da);
    be->backward(be, &tb.b, db);
    be->get_state(be, NULL, g1, NULL, NULL);
    be->zero_grad(be);
    be->backward(be, &tb.b, dab);
    be->get_state(be, NULL, g2, NULL, NULL);
    size_t where;
    double e = max_rel(g1, g2, N, &where);
    printf("accumulation: backward(a) + backward(b) vs backward(a+b): max rel err %.2e\n", e);
    /* fp32: the two sides round differently (sums in another order), ~1e-5 */
    CHECK(e < 1e-4, "accumulation not linear: rel %.2e at %zu", e, where);
    double nrm = 0;
    for (size_t i = 0; i < N; i++) nrm += (double)g2[i] * g2[i];
    CHECK(fabs(be->grad_norm(be) - sqrt(nrm)) <= 1e-9 * sqrt(nrm), "grad_norm %g vs %g", be->grad_norm(be), sqrt(nrm));
    be->zero_grad(be);
    CHECK(be->grad_norm(be) == 0, "zero_grad left %g", be->grad_norm(be));

    /* AdamW: two steps by hand in double, grads scaled by 0.5 */
    be->backward(be, &tb.b, dab);
    be->get_state(be, NULL, g1, NULL, NULL);
    float *p0 = (float *)xmalloc(N * 4), *p1 = (float *)xmalloc(N * 4), *mm = (float *)xmalloc(N * 4),
          *vv = (float *)xmalloc(N * 4);
    memcpy(p0, m.params, N * 4);
    llama_adamw h = {1e-2, 0.9, 0.95, 1e-8, 0.1, 1};
    CHECK(be->adamw_step(be, &h, 0.5f) == 0, "adamw: %s", be->err);
    h.step = 2;
    CHECK(be->adamw_step(be, &h, 0.5f) == 0, "adamw: %s", be->err);
    be->get_state(be, p1, NULL, mm, vv);
    double worst = 0;
    for (int t = 0; t < m.n_tensors; t++) {
        const llama_tensor_info *ti = &m.tensors[t];
        const double wd = ti->ndim == 2 ? h.weight_decay : 0;
        for (size_t i = 0; i < ti->numel; i++) {
            const size_t k = ti->offset + i;
            double p = p0[k], g = 0.5 * g1[k], m1 = 0, v1 = 0;
            for (int step = 1; step <= 2; step++) {
                m1 = h.beta1 * m1 + (1 - h.beta1) * g;
                v1 = h.beta2 * v1 + (1 - h.beta2) * g * g;
                const double mh = m1 / (1 - pow(h.beta1, step)), vh = v1 / (1 - pow(h.beta2, step));
                p = p - h.lr * (mh / (sqrt(vh) + h.eps) + wd * p);
            }
            const double err = fabs(p1[k] - p) / fmax(fabs(p), 1e-3);
            worst = fmax(worst, err);
            if (err > 1e-5) {
                CHECK(0, "adamw %s[%zu]: %.8g vs hand %.8g", ti->name, i, p1[k], p);
                break;
            }
            CHECK(fabs(mm[k] - m1) <= 1e-6 * fmax(fabs(m1), 1e-3), "adam m %s[%zu]", ti->name, i);
        }
    }
    printf("adamw two steps vs hand computation: max rel err %.2e\n", worst);
    free(p0); free(p1); free(mm); free(vv);
    free(g1); free(g2); free(logp); free(da); free(db); free(dab);
    be->destroy(be);
    free_batch(&tb);
    llama_model_free(&m);
}

static void test_errors(void)
{
    llama_config c = tiny_config(30, 16, 24, 1, 2, 2, 8, 1);
    llama_model m;
    make_model(&m, &c, 3);
    llama_backend *be = backend(&m);
    int tokens[3] = {1, 30, 2}, seq_start[2] = {0, 3};
    unsigned char comp[3] = {0, 1, 1};
    float logp[3], d[3] = {0, 1, 1};
    llama_batch b = {1, tokens, seq_start, comp};
    CHECK(be->forward(be, &b, logp) == -1 && strstr(be->err, "vocabulary"), "bad token accepted: %s", be->err);
    printf("bad token -> \"%s\"\n", be->err);
    CHECK(be->backward(be, &b, d) == -1, "backward without a forward accepted");
    tokens[1] = 3;
    CHECK(be->forward(be, &b, logp) == 0, "forward: %s", be->err);
    tokens[2] = 4; /* not the batch forward saw */
    CHECK(be->backward(be, &b, d) == -1, "backward of another batch accepted");
    printf("backward of another batch -> \"%s\"\n", be->err);
    seq_start[1] = 0;
    CHECK(be->forward(be, &b, logp) == -1, "empty sequence accepted");
    llama_config bad = c;
    bad.num_key_value_heads = 3;
    char err[256];
    llama_model m2;
    CHECK(llama_model_alloc(&m2, &bad, err, sizeof err) == -1, "H %% K != 0 accepted");
    printf("bad config -> \"%s\"\n", err);
    bad = c;
    bad.vocab_size = 1 << 24;
    bad.hidden_size = 1 << 24;
    CHECK(llama_model_alloc(&m2, &bad, err, sizeof err) == -1, "absurd size accepted");
    printf("huge config -> \"%s\"\n", err);
    be->destroy(be);
    llama_model_free(&m);
}

int main(int argc, char **argv)
{
    const char *root = argc > 1 ? argv[1] : "tests/fixtures/llama";
    test_matmul();
    test_gemm();
    test_exp();
    test_decode_vs_forward();
    test_batched_decode();
    test_gqa_equals_repeated_kv();
    test_finite_differences();
    test_accumulation_and_adamw();
    test_errors();
#ifdef HAVE_CHECKPOINT
    test_fixtures(root);
#else
    (void)root;
    printf("(fixture tests not built: the checkpoint loader is missing)\n");
#endif
    if (failures) {
        printf("%d check(s) failed\n", failures);
        return 1;
    }
    printf("all model tests passed\n");
    return 0;
}
