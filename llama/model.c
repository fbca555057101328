/* llama/model.c - the Llama model math in fp32 on the CPU: parameter layout, random init, the
 * forward pass over a packed batch (per-token log-probs, chunked LM head), its backward, the CPU
 * backend (AdamW included), and KV-cache decoding. This is the reference every CUDA kernel is
 * tested against, so it follows Hugging Face's modeling_llama.py step by step:
 *
 *   x = embed_tokens[tokens]                                     [T, D]
 *   for each layer:
 *     n1 = input_layernorm(x)           (RMSNorm)
 *     q, k, v = n1 @ q_proj^T, n1 @ k_proj^T, n1 @ v_proj^T      [T, H*hd], [T, K*hd], [T, K*hd]
 *     q, k = rope(q), rope(k)           (rotate-half, position = index inside the sequence)
 *     att = causal softmax(q k^T / sqrt(hd)) v, per sequence, query head h uses kv head h / (H/K)
 *     x = x + att @ o_proj^T
 *     n2 = post_attention_layernorm(x)
 *     x = x + (silu(n2 @ gate_proj^T) * (n2 @ up_proj^T)) @ down_proj^T
 *   xf = norm(x); logits = xf @ lm_head^T  (never all at once: chunks of tokens)
 *
 * Every matrix product goes through llama_gemm and every softmax exp through llama_exp_f32;
 * both live in llama/gemm.c, which makes them fast (packing, vector tiles, run-time choice of
 * AVX2/AVX-512) without changing what they compute. This file is the model; that one is a BLAS.
 *
 * Design notes (what backward stores vs recomputes): docs/design.md, section "model".
 */
#include "../util.h"
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(_OPENMP) && defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wunknown-pragmas" /* built without OpenMP: serial loops */
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* ========================================================================================== */
/* Layout                                                                                      */

static void set_info(llama_tensor_info *t, const char *name, int ndim, int64_t d0, int64_t d1,
                     size_t offset)
{
    size_t i = 0; /* names fit: the longest is ~60 chars for layer indices below 10^6 */
    for (; name[i] && i + 1 < sizeof t->name; i++) t->name[i] = name[i];
    t->name[i] = 0;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = ndim == 2 ? d1 : 0;
    t->offset = offset;
    t->numel = (size_t)d0 * (size_t)(ndim == 2 ? d1 : 1);
}

/* Sizes are checked by llama_model_alloc (check_config) before anything large happens; layout
 * itself just counts. */
int llama_layout(const llama_config *c, llama_tensor_info *out, size_t *n_params)
{
    int64_t V = c->vocab_size, D = c->hidden_size, I = c->intermediate_size;
    int64_t qd = (int64_t)c->num_attention_heads * c->head_dim;
    int64_t kd = (int64_t)c->num_key_value_heads * c->head_dim;
    size_t off = 0;
    int n = 0;
    char name[96];
#define ADD(nm, nd, a, b)                                                   \
    do {                                                                    \
        llama_tensor_info tmp_;                                             \
        set_info(&tmp_, nm, nd, a, b, off);                                 \
        if (out) out[n] = tmp_;                                             \
        off += tmp_.numel;                                                  \
        n++;                                                                \
    } while (0)
    ADD("model.embed_tokens.weight", 2, V, D);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        ADD(name, 1, D, 0);
        snprintf(name, sizeof name, "model.layers.%d.self_attn.q_proj.weight", l);
        ADD(name, 2, qd, D);
        snprintf(name, sizeof name, "model.layers.%d.self_attn.k_proj.weight", l);
        ADD(name, 2, kd, D);
        snprintf(name, sizeof name, "model.layers.%d.self_attn.v_proj.weight", l);
        ADD(name, 2, kd, D);
        snprintf(name, sizeof name, "model.layers.%d.self_attn.o_proj.weight", l);
        ADD(name, 2, D, qd);
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        ADD(name, 1, D, 0);
        snprintf(name, sizeof name, "model.layers.%d.mlp.gate_proj.weight", l);
        ADD(name, 2, I, D);
        snprintf(name, sizeof name, "model.layers.%d.mlp.up_proj.weight", l);
        ADD(name, 2, I, D);
        snprintf(name, sizeof name, "model.layers.%d.mlp.down_proj.weight", l);
        ADD(name, 2, D, I);
    }
    ADD("model.norm.weight", 1, D, 0);
    if (!c->tie_word_embeddings) ADD("lm_head.weight", 2, V, D);
#undef ADD
    if (n_params) *n_params = off;
    return n;
}

int llama_weights_view(const llama_config *c, float *flat, llama_weights *w)
{
    int L = c->num_hidden_layers;
    size_t V = (size_t)c->vocab_size, D = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
    size_t qd = (size_t)c->num_attention_heads * (size_t)c->head_dim;
    size_t kd = (size_t)c->num_key_value_heads * (size_t)c->head_dim;
    memset(w, 0, sizeof *w);
    w->layers = (llama_layer_weights *)calloc(L > 0 ? (size_t)L : 1, sizeof *w->layers);
    if (!w->layers) return -1;
    float *p = flat;
    w->embed_tokens = p; p += V * D;
    for (int l = 0; l < L; l++) {
        llama_layer_weights *lw = &w->layers[l];
        lw->input_layernorm = p; p += D;
        lw->q_proj = p; p += qd * D;
        lw->k_proj = p; p += kd * D;
        lw->v_proj = p; p += kd * D;
        lw->o_proj = p; p += D * qd;
        lw->post_attention_layernorm = p; p += D;
        lw->gate_proj = p; p += I * D;
        lw->up_proj = p; p += I * D;
        lw->down_proj = p; p += D * I;
    }
    w->norm = p; p += D;
    w->lm_head = c->tie_word_embeddings ? w->embed_tokens : p;
    return 0;
}

void llama_weights_free_view(llama_weights *w)
{
    free(w->layers);
    w->layers = NULL;
}

/* ========================================================================================== */
/* Model allocation and init                                                                   */

/* The largest parameter count we accept: 2^36 floats (256 GiB). Anything above is a config
 * typo, not a model; refusing it keeps size arithmetic far from overflow. */
#define LLAMA_MAX_PARAMS ((size_t)1 << 36)

static int check_config(const llama_config *c, char *err, size_t errsz)
{
    const char *bad = NULL;
    if (c->vocab_size <= 0) bad = "vocab_size";
    else if (c->hidden_size <= 0) bad = "hidden_size";
    else if (c->intermediate_size <= 0) bad = "intermediate_size";
    else if (c->num_hidden_layers <= 0) bad = "num_hidden_layers";
    else if (c->num_attention_heads <= 0) bad = "num_attention_heads";
    else if (c->num_key_value_heads <= 0) bad = "num_key_value_heads";
    else if (c->head_dim <= 0 || c->head_dim % 2) bad = "head_dim (must be positive and even)";
    if (bad) {
        snprintf(err, errsz, "config: %s is not a valid size; fix config.json", bad);
        return -1;
    }
    if (c->num_attention_heads % c->num_key_value_heads) {
        snprintf(err, errsz, "config: num_attention_heads (%d) is not a multiple of "
                 "num_key_value_heads (%d)", c->num_attention_heads, c->num_key_value_heads);
        return -1;
    }
    /* every dimension below 2^24 and the products in double: no size_t overflow possible */
    const int lim = 1 << 24;
    if (c->vocab_size > lim || c->hidden_size > lim || c->intermediate_size > lim ||
        c->num_hidden_layers > 4096 || c->num_attention_heads > 4096 || c->head_dim > 65536) {
        snprintf(err, errsz, "config: a dimension is absurdly large (vocab %d, hidden %d, "
                 "intermediate %d, layers %d, heads %d, head_dim %d)", c->vocab_size,
                 c->hidden_size, c->intermediate_size, c->num_hidden_layers,
                 c->num_attention_heads, c->head_dim);
        return -1;
    }
    double V = c->vocab_size, D = c->hidden_size, I = c->intermediate_size;
    double qd = (double)c->num_attention_heads * c->head_dim;
    double kd = (double)c->num_key_value_heads * c->head_dim;
    double total = V * D * (c->tie_word_embeddings ? 1 : 2) + D +
                   c->num_hidden_layers * (2 * D + 2 * qd * D + 2 * kd * D + 3 * I * D);
    if (total > (double)LLAMA_MAX_PARAMS) {
        snprintf(err, errsz, "config: %.3g parameters is more than this build accepts (%.3g)",
                 total, (double)LLAMA_MAX_PARAMS);
        return -1;
    }
    return 0;
}

int llama_model_alloc(llama_model *m, const llama_config *cfg, char *err, size_t errsz)
{
    memset(m, 0, sizeof *m);
    if (check_config(cfg, err, errsz)) return -1;
    m->cfg = *cfg;
    m->n_tensors = llama_layout(cfg, NULL, &m->n_params);
    m->tensors = (llama_tensor_info *)calloc((size_t)m->n_tensors, sizeof *m->tensors);
    m->params = (float *)calloc(m->n_params, sizeof(float));
    if (!m->tensors || !m->params || llama_weights_view(cfg, m->params, &m->w)) {
        snprintf(err, errsz, "out of memory allocating %zu parameters (%.1f MiB)", m->n_params,
                 m->n_params * 4.0 / (1 << 20));
        llama_model_free(m);
        return -1;
    }
    llama_layout(cfg, m->tensors, NULL);
    return 0;
}

void llama_model_free(llama_model *m)
{
    if (!m) return;
    free(m->tensors);
    free(m->params);
    llama_weights_free_view(&m->w);
    memset(m, 0, sizeof *m);
}

/* The project's splitmix64 (util.c: tiny, well-mixed, identical everywhere); Box-Muller turns
 * pairs of uniforms into normals. (Not torch's generator: our init is deterministic, not
 * torch-identical.) */
static double uniform01(uint64_t *s) /* in (0, 1] */
{
    return ((rng_next(s) >> 11) + 1) * (1.0 / 9007199254740992.0);
}

void llama_model_init_random(llama_model *m, uint64_t seed)
{
    double stdv = m->cfg.initializer_range > 0 ? m->cfg.initializer_range : 0.02;
    for (int t = 0; t < m->n_tensors; t++) {
        const llama_tensor_info *ti = &m->tensors[t];
        float *p = m->params + ti->offset;
        if (ti->ndim == 1) {
            for (size_t i = 0; i < ti->numel; i++) p[i] = 1.0f;
            continue;
        }
        /* one stream per tensor, so a tensor's values do not depend on the others' sizes */
        uint64_t s = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(t + 1));
        for (size_t i = 0; i < ti->numel; i += 2) {
            double u1 = uniform01(&s), u2 = uniform01(&s);
            double r = sqrt(-2.0 * log(u1)), a = 6.283185307179586 * u2;
            p[i] = (float)(stdv * r * cos(a));
            if (i + 1 < ti->numel) p[i + 1] = (float)(stdv * r * sin(a));
        }
    }
}

void llama_completion_logp(const llama_batch *b, const float *logp, double *out)
{
    for (int s = 0; s < b->n_seq; s++) {
        double sum = 0;
        for (int i = b->seq_start[s]; i < b->seq_start[s + 1]; i++)
            if (b->completion[i]) sum += logp[i];
        out[s] = sum;
    }
}

/* ========================================================================================== */
/* Linear layers: every product goes through llama_gemm (llama/gemm.c)                        */

/* llama_gemm(C, ldc, A, ars, aks, B, bks, bjs, n, k, m) adds A B to C, with A(r, kk) at
 * A[r*ars + kk*aks] and B(kk, j) at B[kk*bks + j*bjs]: the strides let it read W^T and dY^T
 * where they are stored, so none of the three products below copies a transpose first. */

/* Y[n, o] = X[n, i] @ W[o, i]^T */
static void mm_fwd(float *Y, const float *X, const float *W, int n, int in, int out)
{
    memset(Y, 0, (size_t)n * out * sizeof(float));
    llama_gemm(Y, (size_t)out, X, in, 1, W, 1, in, n, in, out);
}

/* dX[n, i] += dY[n, o] @ W[o, i] */
static void mm_bwd_x(float *dX, const float *dY, const float *W, int n, int in, int out)
{
    llama_gemm(dX, (size_t)in, dY, out, 1, W, in, 1, n, out, in);
}

/* dW[o, i] += dY[n, o]^T @ X[n, i]: A = dY^T read in place (packing transposes it) */
static void mm_bwd_w(float *dW, const float *dY, const float *X, int n, int in, int out)
{
    llama_gemm(dW, (size_t)in, dY, 1, out, X, in, 1, out, n, in);
}

void llama_matmul(float *out, const float *x, const float *w, int n, int in_dim, int out_dim)
{
    mm_fwd(out, x, w, n, in_dim, out_dim);
}

/* ========================================================================================== */
/* RMSNorm, RoPE, SwiGLU                                                                       */

/* HF: variance = mean(x^2); x * rsqrt(variance + eps); weight * that (all fp32). We sum in
 * double, which only makes the mean more accurate. rstd[n] may be NULL. */
static void rmsnorm_fwd(float *out, float *rstd, const float *x, const float *w, int n, int d,
                        float eps)
{
#pragma omp parallel for schedule(static) if (n > 16)
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * d;
        float *o = out + (size_t)t * d;
        double ss = 0;
        for (int j = 0; j < d; j++) ss += (double)xr[j] * xr[j];
        float r = 1.0f / sqrtf((float)(ss / d) + eps);
        if (rstd) rstd[t] = r;
        for (int j = 0; j < d; j++) o[j] = w[j] * (xr[j] * r);
    }
}

void llama_rmsnorm(float *out, const float *x, const float *w, int n, int d, float eps)
{
    rmsnorm_fwd(out, NULL, x, w, n, d, eps);
}

/* Given dy for y = w * x * r (r = rsqrt(mean(x^2) + eps)):
 *   dx = r * (w * dy) - x * r^3 / d * sum_j (w_j dy_j x_j)     (ADDED to dx)
 *   dw += sum_t dy * x * r */
static void rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *rstd,
                        const float *w, int n, int d)
{
#pragma omp parallel for schedule(static) if (n > 16)
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * d, *g = dy + (size_t)t * d;
        float *o = dx + (size_t)t * d;
        const float r = rstd[t];
        double dot = 0;
        for (int j = 0; j < d; j++) dot += (double)w[j] * g[j] * xr[j];
        const float c = (float)(dot * r * r * r / d);
        for (int j = 0; j < d; j++) o[j] += r * w[j] * g[j] - xr[j] * c;
    }
#pragma omp parallel for schedule(static) if (n > 16)
    for (int j = 0; j < d; j++) {
        double s = 0;
        for (int t = 0; t < n; t++) s += (double)dy[(size_t)t * d + j] * x[(size_t)t * d + j] * rstd[t];
        dw[j] += (float)s;
    }
}

/* HF computes inv_freq in fp32 (1 / theta ** (arange(0, hd, 2) / hd)) and, for llama3, the
 * smoothing in fp32 too; we do the same float arithmetic so angles agree to the last bit as far
 * as libm allows. Stored as double because that is the interface. */
void llama_rope_inv_freq(const llama_config *cfg, double *inv_freq)
{
    const int hd = cfg->head_dim;
    for (int i = 0; i < hd / 2; i++) {
        float e = (float)(2 * i) / (float)hd;
        float f = 1.0f / powf((float)cfg->rope_theta, e);
        if (cfg->rope_llama3) {
            /* transformers' _compute_llama3_parameters */
            const float factor = (float)cfg->rope_factor;
            const float lo = (float)cfg->rope_low_freq_factor, hi = (float)cfg->rope_high_freq_factor;
            const float old_ctx = (float)cfg->rope_original_max_position_embeddings;
            const float low_freq_wavelen = old_ctx / lo, high_freq_wavelen = old_ctx / hi;
            const float wavelen = (float)(2 * 3.141592653589793) / f;
            float scaled = wavelen > low_freq_wavelen ? f / factor : f;
            if (!(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen)) {
                float smooth = (old_ctx / wavelen - lo) / (hi - lo);
                scaled = (1 - smooth) * scaled / factor + smooth * scaled;
            }
            f = scaled;
        }
        inv_freq[i] = f;
    }
}

/* cos/sin of angle pos * inv_freq, as HF forms it: fp32 product, then cos/sin of that. */
static void rope_cos_sin(int pos, const double *inv_freq, int half, float *c, float *s)
{
    for (int j = 0; j < half; j++) {
        float ang = (float)pos * (float)inv_freq[j];
        c[j] = (float)cos((double)ang);
        s[j] = (float)sin((double)ang);
    }
}

/* Rotate-half: (x1, x2) -> (x1 c - x2 s, x2 c + x1 s), x1 = x[j], x2 = x[j + hd/2]. With
 * sgn = -1 this is the inverse rotation (the transpose), which is what backward needs. */
static void rope_rotate(float *x, int n_heads, int hd, const float *c, const float *s, float sgn)
{
    const int half = hd / 2;
    for (int h = 0; h < n_heads; h++) {
        float *x1 = x + (size_t)h * hd, *x2 = x1 + half;
        for (int j = 0; j < half; j++) {
            const float a = x1[j], b = x2[j], sn = sgn * s[j];
            x1[j] = a * c[j] - b * sn;
            x2[j] = b * c[j] + a * sn;
        }
    }
}

void llama_rope_apply(float *x, int n_heads, int hd, int pos, const double *inv_freq)
{
    float c[512], s[512];
    const int half = hd / 2;
    if (half <= 512) {
        rope_cos_sin(pos, inv_freq, half, c, s);
        rope_rotate(x, n_heads, hd, c, s, 1.0f);
        return;
    }
    for (int h = 0; h < n_heads; h++) /* huge head_dim: one pair at a time */
        for (int j = 0; j < half; j++) {
            float cj, sj;
            rope_cos_sin(pos, inv_freq + j, 1, &cj, &sj);
            float *x1 = x + (size_t)h * hd + j, *x2 = x1 + half;
            const float a = *x1, b = *x2;
            *x1 = a * cj - b * sj;
            *x2 = b * cj + a * sj;
        }
}

/* sum of x[0..n) in fp64, four partial sums (a fixed order: the same result every run) */
static double sum_f64(const float *x, int n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int j = 0;
    for (; j + 4 <= n; j += 4) {
        s0 += x[j];
        s1 += x[j + 1];
        s2 += x[j + 2];
        s3 += x[j + 3];
    }
    for (; j < n; j++) s0 += x[j];
    return (s0 + s1) + (s2 + s3);
}

static inline float silu(float g) { return g / (1.0f + expf(-g)); }

/* ========================================================================================== */
/* Attention over one sequence (causal, GQA). q [n, H*hd], k/v [n, K*hd], out [n, H*hd],      */
/* lse [n, H] (log-sum-exp of each query's scaled scores, kept for backward).                  */

/* sum_j a[j] * b[j] in double (D_t = dO_t . O_t, where dP - D cancels). Products of two floats
 * are exact in double; the vector form keeps eight independent partial sums. */
#if defined(__GNUC__) && (defined(__clang__) || __GNUC__ >= 9)
typedef double vd4 __attribute__((vector_size(4 * sizeof(double))));
typedef float vf4 __attribute__((vector_size(4 * sizeof(float))));
static inline double dot_f64(const float *a, const float *b, int n)
{
    vd4 s0 = {0, 0, 0, 0}, s1 = {0, 0, 0, 0};
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        vf4 a0, a1, b0, b1;
        memcpy(&a0, a + j, sizeof a0);
        memcpy(&a1, a + j + 4, sizeof a1);
        memcpy(&b0, b + j, sizeof b0);
        memcpy(&b1, b + j + 4, sizeof b1);
        s0 += __builtin_convertvector(a0, vd4) * __builtin_convertvector(b0, vd4);
        s1 += __builtin_convertvector(a1, vd4) * __builtin_convertvector(b1, vd4);
    }
    const vd4 sv = s0 + s1;
    double r = (sv[0] + sv[2]) + (sv[1] + sv[3]);
    for (; j < n; j++) r += (double)a[j] * b[j];
    return r;
}
#else
static inline double dot_f64(const float *a, const float *b, int n)
{
    double r0 = 0, r1 = 0;
    int j = 0;
    for (; j + 2 <= n; j += 2) {
        r0 += (double)a[j] * b[j];
        r1 += (double)a[j + 1] * b[j + 1];
    }
    if (j < n) r0 += (double)a[j] * b[j];
    return r0 + r1;
}
#endif

typedef struct {
    int H, K, hd;  /* query heads, kv heads (H a multiple of K), head_dim */
    float scale;   /* 1 / sqrt(hd) */
} attn_dims;

/* Attention as GEMMs, one head at a time, in query blocks of ATT_QB rows (so scratch is
 * [ATT_QB, n], never [n, n] per head): S = Q K^T over the keys up to the block's last query,
 * causal softmax per row (fp64 sums) into P, O = P V; q/k/v/out are read in place through the
 * GEMM's strides (head h uses kv head h / (H/K), HF's repeat_kv). Only lse [n, H] is kept.
 * Backward recomputes S and P from lse (flash-attention style: no [H, n, n] tensor is stored),
 * then dP = dO V^T, dS = P (dP - D) scale with D_t = dO_t . O_t, dQ = dS K, dK += dS^T Q,
 * dV += P^T dO. Returns -1 when out of memory. */
#define ATT_QB 128

static int attention_fwd_gemm(const attn_dims *a, int n, const float *q, const float *k,
                              const float *v, float *out, float *lse)
{
    const int H = a->H, K = a->K, hd = a->hd, rep = H / K;
    const size_t qs = (size_t)H * hd, ks = (size_t)K * hd;
    float *S = (float *)malloc((size_t)MIN(ATT_QB, n) * n * sizeof(float));
    if (!S) return -1;
    for (int h = 0; h < H; h++) {
        const size_t off = (size_t)h * hd, kv = (size_t)(h / rep) * hd;
        for (int t0 = 0; t0 < n; t0 += ATT_QB) {
            const int nq = MIN(ATT_QB, n - t0), nk = t0 + nq; /* keys 0 .. nk-1 */
            memset(S, 0, (size_t)nq * nk * sizeof(float));
            llama_gemm(S, (size_t)nk, q + (size_t)t0 * qs + off, (ptrdiff_t)qs, 1, k + kv, 1, (ptrdiff_t)ks, nq, hd, nk);
#pragma omp parallel for schedule(static) if (nq * nk > 4096)
            for (int r = 0; r < nq; r++) {
                float *row = S + (size_t)r * nk;
                const int last = t0 + r; /* causal: keys 0 .. last */
                float mx = -INFINITY;
                for (int s = 0; s <= last; s++) {
                    row[s] *= a->scale;
                    if (row[s] > mx) mx = row[s];
                }
                /* one fp32 exp per score, their sum in fp64, p = e / sum (this was two fp64
                 * exps per score, most of attention's time) */
                llama_exp_f32(row, last + 1, 1.0f, mx);
                const double sum = sum_f64(row, last + 1);
                const double l = mx + log(sum);
                const float inv = (float)(1.0 / sum);
                for (int s = 0; s <= last; s++) row[s] *= inv;
                for (int s = last + 1; s < nk; s++) row[s] = 0.0f;
                lse[(size_t)(t0 + r) * H + h] = (float)l;
                float *o = out + (size_t)(t0 + r) * qs + off;
                for (int j = 0; j < hd; j++) o[j] = 0.0f;
            }
            llama_gemm(out + (size_t)t0 * qs + off, qs, S, (ptrdiff_t)nk, 1, v + kv, (ptrdiff_t)ks, 1, nq, nk, hd);
        }
    }
    free(S);
    return 0;
}

/* dq [n, H*hd] overwritten; dkh, dvh [n, H*hd] (per query head) accumulated, zeroed by the caller */
static int attention_bwd_gemm(const attn_dims *a, int n, const float *q, const float *k,
                              const float *v, const float *out, const float *lse, const float *dout,
                              float *dq, float *dkh, float *dvh)
{
    const int H = a->H, K = a->K, hd = a->hd, rep = H / K;
    const size_t qs = (size_t)H * hd, ks = (size_t)K * hd;
    const size_t cap = (size_t)MIN(ATT_QB, n) * n;
    float *P = (float *)malloc(cap * sizeof(float)), *dP = (float *)malloc(cap * sizeof(float));
    if (!P || !dP) {
        free(P);
        free(dP);
        return -1;
    }
    for (int h = 0; h < H; h++) {
        const size_t off = (size_t)h * hd, kv = (size_t)(h / rep) * hd;
        for (int t0 = 0; t0 < n; t0 += ATT_QB) {
            const int nq = MIN(ATT_QB, n - t0), nk = t0 + nq;
            const float *qb = q + (size_t)t0 * qs + off, *dob = dout + (size_t)t0 * qs + off;
            memset(P, 0, (size_t)nq * nk * sizeof(float));
            memset(dP, 0, (size_t)nq * nk * sizeof(float));
            llama_gemm(P, (size_t)nk, qb, (ptrdiff_t)qs, 1, k + kv, 1, (ptrdiff_t)ks, nq, hd, nk);
            llama_gemm(dP, (size_t)nk, dob, (ptrdiff_t)qs, 1, v + kv, 1, (ptrdiff_t)ks, nq, hd, nk);
#pragma omp parallel for schedule(static) if (nq * nk > 4096)
            for (int r = 0; r < nq; r++) {
                const int t = t0 + r;
                float *pr = P + (size_t)r * nk, *dpr = dP + (size_t)r * nk;
                const float l = lse[(size_t)t * H + h];
                const double Dt = dot_f64(dout + (size_t)t * qs + off, out + (size_t)t * qs + off, hd);
                llama_exp_f32(pr, t + 1, a->scale, l); /* P, as in the forward */
                for (int s = 0; s <= t; s++)
                    dpr[s] = (float)(pr[s] * ((double)dpr[s] - Dt) * a->scale); /* dS */
                for (int s = t + 1; s < nk; s++) pr[s] = dpr[s] = 0.0f;
                float *dqt = dq + (size_t)t * qs + off;
                for (int j = 0; j < hd; j++) dqt[j] = 0.0f;
            }
            /* dQ_blk = dS K;  dK[0..nk) += dS^T Q_blk;  dV[0..nk) += P^T dO_blk */
            llama_gemm(dq + (size_t)t0 * qs + off, qs, dP, (ptrdiff_t)nk, 1, k + kv, (ptrdiff_t)ks, 1, nq, nk, hd);
            llama_gemm(dkh + off, qs, dP, 1, (ptrdiff_t)nk, qb, (ptrdiff_t)qs, 1, nk, nq, hd);
            llama_gemm(dvh + off, qs, P, 1, (ptrdiff_t)nk, dob, (ptrdiff_t)qs, 1, nk, nq, hd);
        }
    }
    free(P);
    free(dP);
    return 0;
}

/* ========================================================================================== */
/* The CPU backend                                                                             */

/* The LM head works on blocks of LM_TOK positions x LM_VOC vocabulary rows of logits
 * ([LM_TOK, LM_VOC] floats = 2 MiB, never [T, V]). Blocking the vocabulary as well as the
 * positions means each block of the LM-head weight is packed once per LM_TOK positions, and the
 * weight gradient gets products of depth LM_TOK instead of many thin ones (each a read and write
 * of the whole [V, D] gradient). */
#define LM_TOK 256
#define LM_VOC 2048

typedef struct {
    llama_model *m;             /* trained in place: its params are the parameters */
    float *grads;               /* [n_params] */
    float *adam_m, *adam_v;     /* [n_params] each, allocated at the first step / set_state */
    llama_weights gw;           /* views into grads */

    /* Activations kept by forward for backward, sized for T_cap tokens. Per layer l:
     *   xres[l]   [T, D]     residual stream entering layer l (xres[L] = after the last layer)
     *   rstd1/2   [T]        RMSNorm reciprocal std (norms are recomputed from x and rstd)
     *   q, k      [T, H*hd], [T, K*hd]  after RoPE
     *   v         [T, K*hd]
     *   att       [T, H*hd]  attention output before o_proj
     *   lse       [T, H]     attention log-sum-exp (probabilities are recomputed)
     *   xmid      [T, D]     residual after attention
     *   gate, up  [T, I]     MLP pre-activations (silu(gate)*up is recomputed)
     * Final: rstdf [T], xf [T, D] (normed), lm_lse [T] (LM-head log-sum-exp per position). */
    int T_cap;                  /* tokens the buffers below are sized for */
    int T_last, have_fwd;       /* tokens of the last forward; 1 when its activations are valid */
    int *last_tokens, *last_start, last_n_seq; /* the batch of the last forward ([T_last],
                                                * [last_n_seq + 1]), to check backward's */
    float *xres, *rstd1, *rstd2, *q, *k, *v, *att, *lse, *xmid, *gate, *up;
    float *rstdf, *xf, *lm_lse;
    /* Scratch, reused by every layer (named by shape; what each holds is said where used):
     * forward: normed input, projection outputs, silu(gate) * up; backward: the gradients. */
    float *buf_d, *buf_d2, *buf_d3;  /* [T, D] each */
    float *buf_i, *buf_i2;           /* [T, I] each */
    float *buf_q, *buf_q2;           /* [T, H*hd] each: d att, d q */
    float *buf_kh, *buf_vh;     /* [T, H*hd] per-query-head dk, dv (summed into kv heads) */
    float *buf_dk, *buf_dv;     /* [T, K*hd] dk, dv per kv head */
    float *logits;              /* [LM_TOK, min(LM_VOC, V)] one LM-head block */
    float *rope_c, *rope_s;     /* [rope_cap, hd/2] cos/sin per position inside a sequence */
    int rope_cap;               /* positions the tables hold (the longest sequence so far) */
    double *inv_freq;           /* [hd/2] RoPE frequencies, llama3 scaling applied */
} cpu_impl;

static void cpu_free_acts(cpu_impl *c)
{
    float **p[] = {&c->xres, &c->rstd1, &c->rstd2, &c->q, &c->k, &c->v, &c->att, &c->lse,
                   &c->xmid, &c->gate, &c->up, &c->rstdf, &c->xf, &c->lm_lse, &c->buf_d,
                   &c->buf_d2, &c->buf_d3, &c->buf_i, &c->buf_i2, &c->buf_q, &c->buf_q2,
                   &c->buf_dk, &c->buf_dv, &c->logits, &c->buf_kh, &c->buf_vh};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) {
        free(*p[i]);
        *p[i] = NULL;
    }
    c->T_cap = 0;
}

static int cpu_reserve(cpu_impl *c, int T, char *err, size_t errsz)
{
    if (T <= c->T_cap) return 0;
    cpu_free_acts(c);
    const llama_config *cf = &c->m->cfg;
    const size_t L = (size_t)cf->num_hidden_layers, D = (size_t)cf->hidden_size;
    const size_t I = (size_t)cf->intermediate_size, V = (size_t)cf->vocab_size;
    const size_t qd = (size_t)cf->num_attention_heads * cf->head_dim;
    const size_t kd = (size_t)cf->num_key_value_heads * cf->head_dim;
    const size_t H = (size_t)cf->num_attention_heads, n = (size_t)T;
    /* float count of everything, in double first, so that a huge T is an error, not a wrap */
    double total = (double)n * (L + 1) * D + 2.0 * L * n + (double)L * n * (2 * qd + 2 * kd + H + D + 2 * I) +
                   n + 4.0 * n * D + 2.0 * n * I + 4.0 * n * qd + 2.0 * n * kd +
                   (double)LM_TOK * MIN(LM_VOC, V);
    if (total * 4 > 1e12) {
        snprintf(err, errsz, "batch of %d tokens needs %.1f GB of activations; use smaller batches",
                 T, total * 4 / 1e9);
        return -1;
    }
#define A_(ptr, cnt) (c->ptr = (float *)malloc((cnt) * sizeof(float)))
    int ok = A_(xres, (L + 1) * n * D) && A_(rstd1, L * n) && A_(rstd2, L * n) &&
             A_(q, L * n * qd) && A_(k, L * n * kd) && A_(v, L * n * kd) && A_(att, L * n * qd) &&
             A_(lse, L * n * H) && A_(xmid, L * n * D) && A_(gate, L * n * I) && A_(up, L * n * I) &&
             A_(rstdf, n) && A_(xf, n * D) && A_(lm_lse, n) && A_(buf_d, n * D) &&
             A_(buf_d2, n * D) && A_(buf_d3, n * D) && A_(buf_i, n * I) && A_(buf_i2, n * I) &&
             A_(buf_q, n * qd) && A_(buf_q2, n * qd) &&
             A_(buf_dk, n * kd) && A_(buf_dv, n * kd) &&
             A_(logits, (size_t)LM_TOK * MIN(LM_VOC, V)) &&
             A_(buf_kh, n * qd) && A_(buf_vh, n * qd);
#undef A_
    if (!ok) {
        cpu_free_acts(c);
        snprintf(err, errsz, "out of memory for the activations of %d tokens (%.1f GB)", T,
                 total * 4 / 1e9);
        return -1;
    }
    c->T_cap = T;
    return 0;
}

static int check_batch(const llama_config *cf, const llama_batch *b, char *err, size_t errsz)
{
    if (!b || b->n_seq <= 0 || !b->tokens || !b->seq_start) {
        snprintf(err, errsz, "batch: empty or missing tokens/seq_start");
        return -1;
    }
    if (b->seq_start[0] != 0) {
        snprintf(err, errsz, "batch: seq_start[0] is %d, must be 0", b->seq_start[0]);
        return -1;
    }
    for (int s = 0; s < b->n_seq; s++)
        if (b->seq_start[s + 1] <= b->seq_start[s]) {
            snprintf(err, errsz, "batch: sequence %d is empty or seq_start decreases (%d -> %d)",
                     s, b->seq_start[s], b->seq_start[s + 1]);
            return -1;
        }
    const int T = b->seq_start[b->n_seq];
    for (int i = 0; i < T; i++)
        if (b->tokens[i] < 0 || b->tokens[i] >= cf->vocab_size) {
            snprintf(err, errsz, "batch: token %d at position %d is outside the vocabulary (0..%d)",
                     b->tokens[i], i, cf->vocab_size - 1);
            return -1;
        }
    return 0;
}

/* cos/sin tables for positions 0..maxlen-1 */
static int cpu_rope_tables(cpu_impl *c, int maxlen, char *err, size_t errsz)
{
    const int half = c->m->cfg.head_dim / 2;
    if (maxlen > c->rope_cap) {
        free(c->rope_c);
        free(c->rope_s);
        c->rope_c = (float *)malloc((size_t)maxlen * half * sizeof(float));
        c->rope_s = (float *)malloc((size_t)maxlen * half * sizeof(float));
        if (!c->rope_c || !c->rope_s) {
            c->rope_cap = 0;
            snprintf(err, errsz, "out of memory for RoPE tables");
            return -1;
        }
        for (int p = 0; p < maxlen; p++)
            rope_cos_sin(p, c->inv_freq, half, c->rope_c + (size_t)p * half, c->rope_s + (size_t)p * half);
        c->rope_cap = maxlen;
    }
    return 0;
}

/* Applies RoPE (sgn +1) or its inverse (sgn -1) to every token of the batch. */
static void rope_batch(cpu_impl *c, const llama_batch *b, float *x, int n_heads, float sgn)
{
    const int hd = c->m->cfg.head_dim, half = hd / 2;
    const size_t stride = (size_t)n_heads * hd;
    for (int s = 0; s < b->n_seq; s++) {
        const int t0 = b->seq_start[s], t1 = b->seq_start[s + 1];
#pragma omp parallel for schedule(static) if (t1 - t0 > 16)
        for (int t = t0; t < t1; t++)
            rope_rotate(x + (size_t)t * stride, n_heads, hd, c->rope_c + (size_t)(t - t0) * half,
                        c->rope_s + (size_t)(t - t0) * half, sgn);
    }
}

/* next[t]: the token position t predicts (t + 1 in the same sequence), or -1 at a sequence end */
static void fill_next(const llama_batch *b, int *next /* [T]: token id or -1 */)
{
    for (int s = 0; s < b->n_seq; s++)
        for (int t = b->seq_start[s]; t < b->seq_start[s + 1]; t++)
            next[t] = t + 1 < b->seq_start[s + 1] ? b->tokens[t + 1] : -1;
}

static int cpu_forward(llama_backend *be, const llama_batch *b, float *logp)
{
    cpu_impl *c = (cpu_impl *)be->impl;
    const llama_model *m = c->m;
    const llama_config *cf = &m->cfg;
    c->have_fwd = 0;
    if (check_batch(cf, b, be->err, sizeof be->err)) return -1;
    const int T = b->seq_start[b->n_seq];
    int maxlen = 0;
    for (int s = 0; s < b->n_seq; s++) {
        const int len = b->seq_start[s + 1] - b->seq_start[s];
        if (len > maxlen) maxlen = len;
    }
    if (cpu_reserve(c, T, be->err, sizeof be->err) || cpu_rope_tables(c, maxlen, be->err, sizeof be->err))
        return -1;

    const int L = cf->num_hidden_layers, D = cf->hidden_size, I = cf->intermediate_size;
    const int V = cf->vocab_size, H = cf->num_attention_heads, K = cf->num_key_value_heads;
    const int hd = cf->head_dim, qd = H * hd, kd = K * hd;
    const size_t n = (size_t)T;
    const attn_dims ad = {H, K, hd, 1.0f / sqrtf((float)hd)};

    /* embeddings */
    for (int t = 0; t < T; t++)
        memcpy(c->xres + (size_t)t * D, m->w.embed_tokens + (size_t)b->tokens[t] * D, D * sizeof(float));

    for (int l = 0; l < L; l++) {
        const llama_layer_weights *w = &m->w.layers[l];
        const float *x = c->xres + (size_t)l * n * D;
        float *xnext = c->xres + (size_t)(l + 1) * n * D;
        float *q = c->q + (size_t)l * n * qd, *k = c->k + (size_t)l * n * kd, *v = c->v + (size_t)l * n * kd;
        float *att = c->att + (size_t)l * n * qd, *lse = c->lse + (size_t)l * n * H;
        float *xmid = c->xmid + (size_t)l * n * D;
        float *gate = c->gate + (size_t)l * n * I, *up = c->up + (size_t)l * n * I;
        float *nrm = c->buf_d;

        rmsnorm_fwd(nrm, c->rstd1 + (size_t)l * n, x, w->input_layernorm, T, D, cf->rms_norm_eps);
        mm_fwd(q, nrm, w->q_proj, T, D, qd);
        mm_fwd(k, nrm, w->k_proj, T, D, kd);
        mm_fwd(v, nrm, w->v_proj, T, D, kd);
        rope_batch(c, b, q, H, 1.0f);
        rope_batch(c, b, k, K, 1.0f);
        for (int s = 0; s < b->n_seq; s++) {
            const size_t t0 = (size_t)b->seq_start[s];
            if (attention_fwd_gemm(&ad, b->seq_start[s + 1] - b->seq_start[s], q + t0 * qd,
                                   k + t0 * kd, v + t0 * kd, att + t0 * qd, lse + t0 * H)) {
                snprintf(be->err, sizeof be->err, "out of memory for the attention scratch of a %d-token "
                         "sequence; free memory or use a smaller --max-length",
                         b->seq_start[s + 1] - b->seq_start[s]);
                return -1;
            }
        }
        mm_fwd(c->buf_d2, att, w->o_proj, T, qd, D);
        for (size_t i = 0; i < n * D; i++) xmid[i] = x[i] + c->buf_d2[i];

        rmsnorm_fwd(nrm, c->rstd2 + (size_t)l * n, xmid, w->post_attention_layernorm, T, D, cf->rms_norm_eps);
        mm_fwd(gate, nrm, w->gate_proj, T, D, I);
        mm_fwd(up, nrm, w->up_proj, T, D, I);
        float *h = c->buf_i;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n * I; i++) h[i] = silu(gate[i]) * up[i];
        mm_fwd(c->buf_d2, h, w->down_proj, T, I, D);
        for (size_t i = 0; i < n * D; i++) xnext[i] = xmid[i] + c->buf_d2[i];
    }
    rmsnorm_fwd(c->xf, c->rstdf, c->xres + (size_t)L * n * D, m->w.norm, T, D, cf->rms_norm_eps);

    /* LM head in blocks of [LM_TOK positions, LM_VOC vocabulary rows] of logits: per position
     * a running log-sum-exp over the vocabulary blocks (each block: its max in fp32 and
     * sum exp(logit - max) in fp64; blocks merged in fp64) and the next token's logit. */
    int *next = (int *)malloc(n * sizeof(int));
    double *run_mx = (double *)malloc(2 * LM_TOK * sizeof(double)), *run_sum = run_mx + LM_TOK;
    float *tgt = (float *)malloc(LM_TOK * sizeof(float));
    if (!next || !run_mx || !tgt) {
        free(next); free(run_mx); free(tgt);
        snprintf(be->err, sizeof be->err, "out of memory");
        return -1;
    }
    fill_next(b, next);
    for (int s = 0; s < b->n_seq; s++) logp[b->seq_start[s]] = 0.0f;
    for (int t0 = 0; t0 < T; t0 += LM_TOK) {
        const int cn = MIN(LM_TOK, T - t0);
        for (int r = 0; r < cn; r++) {
            run_mx[r] = -INFINITY;
            run_sum[r] = 0;
            tgt[r] = 0;
        }
        for (int v0 = 0; v0 < V; v0 += LM_VOC) {
            const int vn = MIN(LM_VOC, V - v0);
            mm_fwd(c->logits, c->xf + (size_t)t0 * D, m->w.lm_head + (size_t)v0 * D, cn, D, vn);
#pragma omp parallel for schedule(static)
            for (int r = 0; r < cn; r++) {
                float *lg = c->logits + (size_t)r * vn;
                const int nt = next[t0 + r];
                if (nt >= v0 && nt < v0 + vn) tgt[r] = lg[nt - v0];
                float bm = -INFINITY;
                for (int j = 0; j < vn; j++) bm = lg[j] > bm ? lg[j] : bm;
                llama_exp_f32(lg, vn, 1.0f, bm); /* in place: the block is scratch */
                const double bs = sum_f64(lg, vn);
                if (bm > run_mx[r]) {
                    run_sum[r] = run_sum[r] * exp(run_mx[r] - bm) + bs;
                    run_mx[r] = bm;
                } else {
                    run_sum[r] += bs * exp(bm - run_mx[r]);
                }
            }
        }
        for (int r = 0; r < cn; r++) {
            const float lse = (float)(run_mx[r] + log(run_sum[r]));
            c->lm_lse[t0 + r] = lse;
            if (next[t0 + r] >= 0) logp[t0 + r + 1] = tgt[r] - lse;
        }
    }
    free(next); free(run_mx); free(tgt);
    /* remember the batch: backward must get the same one */
    free(c->last_tokens);
    free(c->last_start);
    c->last_tokens = (int *)malloc(n * sizeof(int));
    c->last_start = (int *)malloc((size_t)(b->n_seq + 1) * sizeof(int));
    if (!c->last_tokens || !c->last_start) {
        snprintf(be->err, sizeof be->err, "out of memory");
        return -1;
    }
    memcpy(c->last_tokens, b->tokens, n * sizeof(int));
    memcpy(c->last_start, b->seq_start, (size_t)(b->n_seq + 1) * sizeof(int));
    c->last_n_seq = b->n_seq;
    c->T_last = T;
    c->have_fwd = 1;
    return 0;
}

static int cpu_backward(llama_backend *be, const llama_batch *b, const float *dlogp)
{
    cpu_impl *c = (cpu_impl *)be->impl;
    const llama_model *m = c->m;
    const llama_config *cf = &m->cfg;
    if (!c->have_fwd) {
        snprintf(be->err, sizeof be->err, "backward: needs a successful forward of the same batch first");
        return -1;
    }
    if (check_batch(cf, b, be->err, sizeof be->err)) return -1;
    if (b->n_seq != c->last_n_seq ||
        memcmp(b->seq_start, c->last_start, (size_t)(b->n_seq + 1) * sizeof(int)) ||
        memcmp(b->tokens, c->last_tokens, (size_t)c->T_last * sizeof(int))) {
        snprintf(be->err, sizeof be->err, "backward: the batch differs from the last forward's "
                 "(backward uses the activations of that forward; run forward on this batch first)");
        return -1;
    }
    const int T = c->T_last;
    const int L = cf->num_hidden_layers, D = cf->hidden_size, I = cf->intermediate_size;
    const int V = cf->vocab_size, H = cf->num_attention_heads, K = cf->num_key_value_heads;
    const int hd = cf->head_dim, qd = H * hd, kd = K * hd, rep = H / K;
    const size_t n = (size_t)T;
    const attn_dims ad = {H, K, hd, 1.0f / sqrtf((float)hd)};
    llama_weights *gw = &c->gw;

    /* ---- LM head: only positions whose next token carries weight ------------------------ */
    int *pos = (int *)malloc(n * sizeof(int)), *next = (int *)malloc(n * sizeof(int));
    float *xg = (float *)malloc((size_t)LM_TOK * D * sizeof(float));
    float *dxg = (float *)malloc((size_t)LM_TOK * D * sizeof(float));
    if (!pos || !next || !xg || !dxg) {
        free(pos); free(next); free(xg); free(dxg);
        snprintf(be->err, sizeof be->err, "out of memory");
        return -1;
    }
    fill_next(b, next);
    int np = 0;
    for (int t = 0; t < T; t++)
        if (next[t] >= 0 && dlogp[t + 1] != 0.0f) pos[np++] = t;
    float *dxf = c->buf_d2; /* [T, D] gradient w.r.t. the final normed hidden state */
    memset(dxf, 0, n * D * sizeof(float));
    /* per block of LM_TOK positions x LM_VOC vocabulary rows: logits again (bit-identical to
     * the forward's: every element is summed in the same order), d logp / d logits =
     * onehot(next) - softmax, times the weight of that log-prob, then both products */
    for (int p0 = 0; p0 < np; p0 += LM_TOK) {
        const int cn = MIN(LM_TOK, np - p0);
        for (int r = 0; r < cn; r++)
            memcpy(xg + (size_t)r * D, c->xf + (size_t)pos[p0 + r] * D, D * sizeof(float));
        memset(dxg, 0, (size_t)cn * D * sizeof(float));
        for (int v0 = 0; v0 < V; v0 += LM_VOC) {
            const int vn = MIN(LM_VOC, V - v0);
            const float *wb = m->w.lm_head + (size_t)v0 * D; /* [vn, D] */
            mm_fwd(c->logits, xg, wb, cn, D, vn);
#pragma omp parallel for schedule(static)
            for (int r = 0; r < cn; r++) {
                const int t = pos[p0 + r], nt = next[t];
                const float g = dlogp[t + 1], lse = c->lm_lse[t];
                float *lg = c->logits + (size_t)r * vn;
                llama_exp_f32(lg, vn, 1.0f, lse); /* softmax */
                for (int j = 0; j < vn; j++) lg[j] *= -g;
                if (nt >= v0 && nt < v0 + vn) lg[nt - v0] += g;
            }
            mm_bwd_x(dxg, c->logits, wb, cn, D, vn);
            /* tied embeddings: this lands in embed_tokens' gradient */
            mm_bwd_w(gw->lm_head + (size_t)v0 * D, c->logits, xg, cn, D, vn);
        }
        for (int r = 0; r < cn; r++) {
            float *d = dxf + (size_t)pos[p0 + r] * D;
            for (int j = 0; j < D; j++) d[j] += dxg[(size_t)r * D + j];
        }
    }
    free(pos); free(next); free(xg); free(dxg);

    /* ---- final norm --------------------------------------------------------------------- */
    float *dx = c->buf_d; /* [T, D] gradient w.r.t. the residual stream, walked backwards */
    memset(dx, 0, n * D * sizeof(float));
    rmsnorm_bwd(dx, gw->norm, dxf, c->xres + (size_t)L * n * D, c->rstdf, m->w.norm, T, D);

    for (int l = L - 1; l >= 0; l--) {
        const llama_layer_weights *w = &m->w.layers[l];
        llama_layer_weights *g = &gw->layers[l];
        const float *x = c->xres + (size_t)l * n * D;
        const float *q = c->q + (size_t)l * n * qd, *k = c->k + (size_t)l * n * kd, *v = c->v + (size_t)l * n * kd;
        const float *att = c->att + (size_t)l * n * qd, *lse = c->lse + (size_t)l * n * H;
        const float *xmid = c->xmid + (size_t)l * n * D;
        const float *gate = c->gate + (size_t)l * n * I, *up = c->up + (size_t)l * n * I;
        const float *rstd1 = c->rstd1 + (size_t)l * n, *rstd2 = c->rstd2 + (size_t)l * n;
        float *h = c->buf_i, *dh = c->buf_i2, *nrm = c->buf_d2;

        /* MLP: x_out = xmid + down(h), h = silu(gate) * up */
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n * I; i++) h[i] = silu(gate[i]) * up[i];
        mm_bwd_w(g->down_proj, dx, h, T, I, D);
        memset(dh, 0, n * I * sizeof(float));
        mm_bwd_x(dh, dx, w->down_proj, T, I, D);
        /* in place: h <- d gate, dh <- d up */
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n * I; i++) {
            const float gv = gate[i], sg = 1.0f / (1.0f + expf(-gv));
            const float d = dh[i];
            dh[i] = d * gv * sg;                                  /* d up   = dh * silu(g) */
            h[i] = d * up[i] * sg * (1.0f + gv * (1.0f - sg));    /* d gate = dh * up * silu'(g) */
        }
        rmsnorm_fwd(nrm, NULL, xmid, w->post_attention_layernorm, T, D, cf->rms_norm_eps);
        mm_bwd_w(g->gate_proj, h, nrm, T, D, I);
        mm_bwd_w(g->up_proj, dh, nrm, T, D, I);
        float *dn = c->buf_d3;
        memset(dn, 0, n * D * sizeof(float));
        mm_bwd_x(dn, h, w->gate_proj, T, D, I);
        mm_bwd_x(dn, dh, w->up_proj, T, D, I);
        rmsnorm_bwd(dx, g->post_attention_layernorm, dn, xmid, rstd2, w->post_attention_layernorm, T, D);
        /* dx is now the gradient w.r.t. xmid */

        /* attention: xmid = x + o_proj(att) */
        mm_bwd_w(g->o_proj, dx, att, T, qd, D);
        float *datt = c->buf_q;
        memset(datt, 0, n * qd * sizeof(float));
        mm_bwd_x(datt, dx, w->o_proj, T, qd, D);
        float *dq = c->buf_q2;
        float *dkh = c->buf_kh, *dvh = c->buf_vh;
        memset(dkh, 0, n * qd * sizeof(float));
        memset(dvh, 0, n * qd * sizeof(float));
        for (int s = 0; s < b->n_seq; s++) {
            const size_t t0 = (size_t)b->seq_start[s];
            if (attention_bwd_gemm(&ad, b->seq_start[s + 1] - b->seq_start[s], q + t0 * qd, k + t0 * kd,
                                   v + t0 * kd, att + t0 * qd, lse + t0 * H, datt + t0 * qd,
                                   dq + t0 * qd, dkh + t0 * qd, dvh + t0 * qd)) {
                snprintf(be->err, sizeof be->err, "out of memory for the attention scratch of a %d-token "
                         "sequence; free memory or use a smaller --max-length",
                         b->seq_start[s + 1] - b->seq_start[s]);
                return -1;
            }
        }
        /* per-query-head dk/dv -> kv heads (GQA: sum over the heads sharing a kv head) */
        float *dk = c->buf_dk, *dv = c->buf_dv;
#pragma omp parallel for schedule(static)
        for (size_t t = 0; t < n; t++)
            for (int kh = 0; kh < K; kh++)
                for (int j = 0; j < hd; j++) {
                    float sk = 0, sv = 0;
                    for (int r = 0; r < rep; r++) {
                        sk += dkh[t * qd + (size_t)(kh * rep + r) * hd + j];
                        sv += dvh[t * qd + (size_t)(kh * rep + r) * hd + j];
                    }
                    dk[t * kd + (size_t)kh * hd + j] = sk;
                    dv[t * kd + (size_t)kh * hd + j] = sv;
                }
        rope_batch(c, b, dq, H, -1.0f); /* gradient w.r.t. pre-RoPE q, k: the inverse rotation */
        rope_batch(c, b, dk, K, -1.0f);

        rmsnorm_fwd(nrm, NULL, x, w->input_layernorm, T, D, cf->rms_norm_eps);
        mm_bwd_w(g->q_proj, dq, nrm, T, D, qd);
        mm_bwd_w(g->k_proj, dk, nrm, T, D, kd);
        mm_bwd_w(g->v_proj, dv, nrm, T, D, kd);
        memset(dn, 0, n * D * sizeof(float));
        mm_bwd_x(dn, dq, w->q_proj, T, D, qd);
        mm_bwd_x(dn, dk, w->k_proj, T, D, kd);
        mm_bwd_x(dn, dv, w->v_proj, T, D, kd);
        rmsnorm_bwd(dx, g->input_layernorm, dn, x, rstd1, w->input_layernorm, T, D);
    }

    /* ---- embeddings (serial: repeated tokens add into the same row) ----------------------- */
    for (int t = 0; t < T; t++) {
        float *d = gw->embed_tokens + (size_t)b->tokens[t] * D;
        const float *s = dx + (size_t)t * D;
        for (int j = 0; j < D; j++) d[j] += s[j];
    }
    return 0;
}

static void cpu_zero_grad(llama_backend *be)
{
    cpu_impl *c = (cpu_impl *)be->impl;
    memset(c->grads, 0, c->m->n_params * sizeof(float));
}

static double cpu_grad_norm(llama_backend *be)
{
    cpu_impl *c = (cpu_impl *)be->impl;
    double s = 0;
    const size_t N = c->m->n_params;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (size_t i = 0; i < N; i++) s += (double)c->grads[i] * c->grads[i];
    return sqrt(s);
}

static int cpu_alloc_moments(cpu_impl *c, char *err, size_t errsz)
{
    if (c->adam_m) return 0;
    c->adam_m = (float *)calloc(c->m->n_params, sizeof(float));
    c->adam_v = (float *)calloc(c->m->n_params, sizeof(float));
    if (!c->adam_m || !c->adam_v) {
        free(c->adam_m);
        free(c->adam_v);
        c->adam_m = c->adam_v = NULL;
        snprintf(err, errsz, "out of memory for the AdamW moments (%.1f MiB)",
                 c->m->n_params * 8.0 / (1 << 20));
        return -1;
    }
    return 0;
}

/* torch.optim.AdamW: p *= 1 - lr*wd; m, v updated; p -= lr * mhat / (sqrt(vhat) + eps). */
static int cpu_adamw_step(llama_backend *be, const llama_adamw *h, float grad_scale)
{
    cpu_impl *c = (cpu_impl *)be->impl;
    if (h->step < 1) {
        snprintf(be->err, sizeof be->err, "adamw: step must be >= 1 (it is %ld)", h->step);
        return -1;
    }
    if (cpu_alloc_moments(c, be->err, sizeof be->err)) return -1;
    const double bc1 = 1.0 - pow(h->beta1, (double)h->step), bc2 = 1.0 - pow(h->beta2, (double)h->step);
    const float b1 = (float)h->beta1, b2 = (float)h->beta2;
    for (int ti = 0; ti < c->m->n_tensors; ti++) {
        const llama_tensor_info *t = &c->m->tensors[ti];
        const double wd = t->ndim == 2 ? h->weight_decay : 0.0;
        float *p = c->m->params + t->offset, *g = c->grads + t->offset;
        float *mm = c->adam_m + t->offset, *vv = c->adam_v + t->offset;
        const float decay = (float)(1.0 - h->lr * wd);
        const float step_size = (float)(h->lr / bc1), sq_bc2 = (float)sqrt(bc2), eps = (float)h->eps;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < t->numel; i++) {
            const float gi = g[i] * grad_scale;
            mm[i] = b1 * mm[i] + (1 - b1) * gi;
            vv[i] = b2 * vv[i] + (1 - b2) * gi * gi;
            p[i] = p[i] * decay - step_size * mm[i] / (sqrtf(vv[i]) / sq_bc2 + eps);
        }
    }
    return 0;
}

static int cpu_get_state(llama_backend *be, float *params, float *grads, float *am, float *av)
{
    cpu_impl *c = (cpu_impl *)be->impl;
    const size_t N = c->m->n_params * sizeof(float);
    if (params) memcpy(params, c->m->params, N);
    if (grads) memcpy(grads, c->grads, N);
    if (am) {
        if (c->adam_m) memcpy(am, c->adam_m, N); else memset(am, 0, N);
    }
    if (av) {
        if (c->adam_v) memcpy(av, c->adam_v, N); else memset(av, 0, N);
    }
    return 0;
}

static int cpu_set_state(llama_backend *be, const float *params, const float *am, const float *av)
{
    cpu_impl *c = (cpu_impl *)be->impl;
    const size_t N = c->m->n_params * sizeof(float);
    if (params) memcpy(c->m->params, params, N);
    if (am || av) {
        if (cpu_alloc_moments(c, be->err, sizeof be->err)) return -1;
        if (am) memcpy(c->adam_m, am, N);
        if (av) memcpy(c->adam_v, av, N);
    }
    c->have_fwd = 0; /* stored activations belong to the old parameters */
    return 0;
}

static void cpu_destroy(llama_backend *be)
{
    if (!be) return;
    cpu_impl *c = (cpu_impl *)be->impl;
    if (c) {
        cpu_free_acts(c);
        free(c->grads);
        free(c->adam_m);
        free(c->adam_v);
        free(c->rope_c);
        free(c->rope_s);
        free(c->inv_freq);
        free(c->last_tokens);
        free(c->last_start);
        llama_weights_free_view(&c->gw);
        free(c);
    }
    free(be);
}

llama_backend *llama_cpu_backend_create(llama_model *m, char *err, size_t errsz)
{
    if (!m || !m->params) {
        snprintf(err, errsz, "cpu backend: no model");
        return NULL;
    }
    if (check_config(&m->cfg, err, errsz)) return NULL;
    llama_backend *be = (llama_backend *)calloc(1, sizeof *be);
    cpu_impl *c = (cpu_impl *)calloc(1, sizeof *c);
    if (!be || !c) goto oom;
    be->impl = c;
    c->m = m;
    c->grads = (float *)calloc(m->n_params, sizeof(float));
    c->inv_freq = (double *)malloc((size_t)(m->cfg.head_dim / 2) * sizeof(double));
    if (!c->grads || !c->inv_freq || llama_weights_view(&m->cfg, c->grads, &c->gw)) goto oom;
    llama_rope_inv_freq(&m->cfg, c->inv_freq);
    be->name = "cpu";
    be->cfg = m->cfg;
    be->n_params = m->n_params;
    be->forward = cpu_forward;
    be->backward = cpu_backward;
    be->zero_grad = cpu_zero_grad;
    be->grad_norm = cpu_grad_norm;
    be->adamw_step = cpu_adamw_step;
    be->get_state = cpu_get_state;
    be->set_state = cpu_set_state;
    be->destroy = cpu_destroy;
    return be;
oom:
    snprintf(err, errsz, "cpu backend: out of memory for gradients of %zu parameters", m->n_params);
    if (be) {
        if (!be->impl) free(c);
        cpu_destroy(be);
    } else {
        free(c);
    }
    return NULL;
}

/* ========================================================================================== */
/* KV-cache decoding                                                                           */

int llama_kv_cache_alloc(llama_kv_cache *c, const llama_config *cfg, int n_seq, int max_pos,
                         char *err, size_t errsz)
{
    memset(c, 0, sizeof *c);
    if (check_config(cfg, err, errsz)) return -1;
    if (max_pos <= 0 || n_seq <= 0) {
        snprintf(err, errsz, "kv cache: slots (%d) and positions (%d) must be positive", n_seq, max_pos);
        return -1;
    }
    double cnt = (double)cfg->num_hidden_layers * n_seq * max_pos * cfg->num_key_value_heads * cfg->head_dim;
    if (cnt * 8 > 1e12) {
        snprintf(err, errsz, "kv cache: %d x %d positions need %.1f GB; ask for fewer", n_seq, max_pos,
                 cnt * 8 / 1e9);
        return -1;
    }
    c->k = (float *)malloc((size_t)cnt * sizeof(float));
    c->v = (float *)malloc((size_t)cnt * sizeof(float));
    c->len = (int *)calloc((size_t)n_seq, sizeof(int));
    if (!c->k || !c->v || !c->len) {
        llama_kv_cache_free(c);
        snprintf(err, errsz, "kv cache: out of memory (%.1f GB)", cnt * 8 / 1e9);
        return -1;
    }
    c->n_seq = n_seq;
    c->max_pos = max_pos;
    return 0;
}

void llama_kv_cache_free(llama_kv_cache *c)
{
    free(c->k);
    free(c->v);
    free(c->len);
    memset(c, 0, sizeof *c);
}

/* sum_j a[j] * b[j] in fp32 with 16 partial sums added in a fixed order: it vectorises without
 * -ffast-math, and a given pair of vectors always gives the same bits. */
static inline float dot_f32(const float *a, const float *b, int n)
{
    float acc[16] = {0};
    int j = 0;
    for (; j + 16 <= n; j += 16)
        for (int u = 0; u < 16; u++) acc[u] += a[j + u] * b[j + u];
    for (; j < n; j++) acc[0] += a[j] * b[j];
    float s = 0;
    for (int u = 0; u < 16; u++) s += acc[u];
    return s;
}

/* Head h of nq new queries at positions p0 .. p0+nq-1 against a slot's cache (query t sees keys
 * 0 .. p0+t): the scores, one fp32 exp each and their sum in fp64 as in attention_fwd_gemm, then
 * P V. q and out are [nq, H*hd], kc and vc the slot's [max_pos, K*hd]; sc is scratch [p0 + nq].
 * Plain loops: with one query per head a GEMM would spend its time packing. */
static void attention_cached(const attn_dims *a, int h, int p0, int nq, const float *q,
                             const float *kc, const float *vc, float *out, float *sc)
{
    const int hd = a->hd;
    const size_t qs = (size_t)a->H * hd, ks = (size_t)a->K * hd;
    const size_t off = (size_t)h * hd, kv = (size_t)(h / (a->H / a->K)) * hd;
    for (int t = 0; t < nq; t++) {
        const float *qh = q + (size_t)t * qs + off;
        const int nk = p0 + t + 1;
        float mx = -INFINITY;
        for (int s = 0; s < nk; s++) {
            sc[s] = dot_f32(qh, kc + (size_t)s * ks + kv, hd) * a->scale;
            if (sc[s] > mx) mx = sc[s];
        }
        llama_exp_f32(sc, nk, 1.0f, mx);
        const float inv = (float)(1.0 / sum_f64(sc, nk));
        float *o = out + (size_t)t * qs + off;
        for (int j = 0; j < hd; j++) o[j] = 0.0f;
        for (int s = 0; s < nk; s++) {
            const float p = sc[s] * inv, *vs = vc + (size_t)s * ks + kv;
            for (int j = 0; j < hd; j++) o[j] += p * vs[j];
        }
    }
}

/* Scratch of one llama_decode call, for its T new tokens. */
typedef struct {
    float *x, *nrm, *q, *k, *v, *att, *lse, *tmp, *gate, *up; /* [T, *] activations */
    float *rope_c, *rope_s;  /* [T, hd/2] cos/sin of each token's position */
    size_t *row;             /* [T] the token's row in a layer's cache: slot * max_pos + position */
    int *first;              /* [n] position of each entry's first new token */
} decode_scratch;

static void decode_scratch_free(decode_scratch *w)
{
    free(w->x); /* one allocation for the floats */
    free(w->row);
    free(w->first);
    memset(w, 0, sizeof *w);
}

static int decode_scratch_alloc(decode_scratch *w, const llama_config *cf, int T, int n)
{
    const size_t D = (size_t)cf->hidden_size, I = (size_t)cf->intermediate_size;
    const size_t qd = (size_t)cf->num_attention_heads * cf->head_dim;
    const size_t kd = (size_t)cf->num_key_value_heads * cf->head_dim, t = (size_t)T;
    const size_t half = (size_t)cf->head_dim / 2, H = (size_t)cf->num_attention_heads;
    memset(w, 0, sizeof *w);
    w->x = (float *)malloc(t * (3 * D + 2 * qd + 2 * kd + H + 2 * I + 2 * half) * sizeof(float));
    w->row = (size_t *)malloc(t * sizeof(size_t));
    w->first = (int *)malloc((size_t)n * sizeof(int));
    if (!w->x || !w->row || !w->first) {
        decode_scratch_free(w);
        return -1;
    }
    w->nrm = w->x + t * D;
    w->tmp = w->nrm + t * D;
    w->q = w->tmp + t * D;
    w->att = w->q + t * qd;
    w->k = w->att + t * qd;
    w->v = w->k + t * kd;
    w->lse = w->v + t * kd;
    w->gate = w->lse + t * H;
    w->up = w->gate + t * I;
    w->rope_c = w->up + t * I;
    w->rope_s = w->rope_c + t * half;
    return 0;
}

/* Checks a llama_decode call before anything is written: entries non-empty, slots in range and
 * distinct, tokens in the vocabulary, room in every slot. */
static int decode_check(const llama_config *cf, const llama_kv_cache *c, int n, const int *slot,
                        const int *tokens, const int *start, char *err, size_t errsz)
{
    if (n <= 0 || !c->len || start[0] != 0) {
        snprintf(err, errsz, "decode: %s", n <= 0 ? "no entries" : !c->len ? "no KV cache" : "start[0] must be 0");
        return -1;
    }
    unsigned char *seen = (unsigned char *)calloc((size_t)c->n_seq, 1);
    if (!seen) {
        snprintf(err, errsz, "decode: out of memory");
        return -1;
    }
    int rc = -1;
    for (int e = 0; e < n; e++) {
        const int s = slot[e], nq = start[e + 1] - start[e];
        if (s < 0 || s >= c->n_seq || seen[s]) {
            snprintf(err, errsz, "decode: entry %d: slot %d is %s", e, s, s < 0 || s >= c->n_seq ?
                     "outside the cache" : "given twice");
            goto done;
        }
        seen[s] = 1;
        if (nq <= 0 || c->len[s] + nq > c->max_pos) {
            snprintf(err, errsz, "decode: entry %d: %d tokens %s (slot %d holds %d of %d positions)", e,
                     nq, nq <= 0 ? "is empty" : "do not fit: the KV cache is full", s, c->len[s],
                     c->max_pos);
            goto done;
        }
        for (int i = start[e]; i < start[e + 1]; i++)
            if (tokens[i] < 0 || tokens[i] >= cf->vocab_size) {
                snprintf(err, errsz, "decode: token %d is outside the vocabulary (0..%d)", tokens[i],
                         cf->vocab_size - 1);
                goto done;
            }
    }
    rc = 0;
done:
    free(seen);
    return rc;
}

/* An entry whose slot is empty and that brings more than one token is a prefill: its attention
 * is the training forward's attention_fwd_gemm, over the keys just written to the cache. */
static int is_prefill(const decode_scratch *w, const int *start, int e)
{
    return w->first[e] == 0 && start[e + 1] - start[e] > 1;
}

/* Attention of every entry at layer l; q, k, v of the new tokens are in w (k, v also in the
 * cache). Returns -1 when out of memory. */
static int decode_attention(const llama_config *cf, const llama_kv_cache *c, int l, int n,
                            const int *slot, const int *start, decode_scratch *w)
{
    const int H = cf->num_attention_heads, K = cf->num_key_value_heads, hd = cf->head_dim;
    const size_t qd = (size_t)H * hd, kd = (size_t)K * hd, seq = (size_t)c->max_pos * kd;
    const float *kc = c->k + (size_t)l * c->n_seq * seq, *vc = c->v + (size_t)l * c->n_seq * seq;
    const attn_dims ad = {H, K, hd, 1.0f / sqrtf((float)hd)};
    int failed = 0;
    for (int e = 0; e < n && !failed; e++) /* each product parallel inside */
        if (is_prefill(w, start, e)) {
            const size_t t0 = (size_t)start[e];
            failed = attention_fwd_gemm(&ad, start[e + 1] - start[e], w->q + t0 * qd, kc + slot[e] * seq,
                                        vc + slot[e] * seq, w->att + t0 * qd, w->lse + t0 * H);
        }
#pragma omp parallel
    {
        float *sc = (float *)malloc((size_t)c->max_pos * sizeof(float));
        if (!sc) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for collapse(2) schedule(dynamic)
        for (int e = 0; e < n; e++)
            for (int h = 0; h < H; h++) {
                if (!sc || is_prefill(w, start, e)) continue;
                const size_t t0 = (size_t)start[e];
                attention_cached(&ad, h, w->first[e], start[e + 1] - start[e], w->q + t0 * qd,
                                 kc + slot[e] * seq, vc + slot[e] * seq, w->att + t0 * qd, sc);
            }
        free(sc);
    }
    return failed ? -1 : 0;
}

/* Products of a decoding step: Y_j = X @ W_j^T for a few rows X [n, in] and several weights.
 * Each thread takes a range of every product's output columns and runs llama_gemm on it alone
 * (nested, so single-threaded): one barrier for all of them, where llama_gemm's own threads
 * meet several times per k block, and on a loaded machine every meeting waits for a core. Each
 * output element is the same sum either way (llama_gemm sums an element in k-block order
 * whatever the columns around it), so results do not depend on the threads or on the path. */
typedef struct {
    float *Y;                        /* [n, out] */
    const float *W;                  /* [out, in] */
    int out;
} decode_mm;

static void decode_products(const float *X, int n, int in, const decode_mm *mm, int n_mm)
{
    for (int i = 0; i < n_mm; i++) memset(mm[i].Y, 0, (size_t)n * mm[i].out * sizeof(float));
#pragma omp parallel
    {
        int nt = 1, t = 0;
#ifdef _OPENMP
        nt = omp_get_num_threads();
        t = omp_get_thread_num();
#endif
        for (int i = 0; i < n_mm; i++) {
            const int per = ((mm[i].out + nt - 1) / nt + 63) / 64 * 64; /* whole vector tiles */
            const int j0 = t * per, j1 = MIN(mm[i].out, j0 + per);
            if (j0 < j1)
                llama_gemm(mm[i].Y + j0, (size_t)mm[i].out, X, in, 1, mm[i].W + (size_t)j0 * in, 1, in, n,
                           in, j1 - j0);
        }
    }
}

/* The few-row path up to this many tokens per call; a prefill of many tokens is better served by
 * llama_gemm's own blocking over rows. */
#define DECODE_FEW_ROWS 64

static void decode_mm_run(const float *X, int n, int in, const decode_mm *mm, int n_mm)
{
    if (n <= DECODE_FEW_ROWS) {
        decode_products(X, n, in, mm, n_mm);
        return;
    }
    for (int i = 0; i < n_mm; i++) mm_fwd(mm[i].Y, X, mm[i].W, n, in, mm[i].out);
}

/* One layer for the T new tokens in w->x (updated in place). */
static int decode_layer(const llama_model *m, llama_kv_cache *c, int l, int n, const int *slot,
                        const int *start, decode_scratch *w)
{
    const llama_config *cf = &m->cfg;
    const llama_layer_weights *lw = &m->w.layers[l];
    const int T = start[n], D = cf->hidden_size, I = cf->intermediate_size;
    const int H = cf->num_attention_heads, K = cf->num_key_value_heads, hd = cf->head_dim;
    const int qd = H * hd, kd = K * hd, half = hd / 2;
    const size_t layer = (size_t)l * c->n_seq * c->max_pos * kd;
    rmsnorm_fwd(w->nrm, NULL, w->x, lw->input_layernorm, T, D, cf->rms_norm_eps);
    const decode_mm qkv[3] = {{w->q, lw->q_proj, qd}, {w->k, lw->k_proj, kd}, {w->v, lw->v_proj, kd}};
    decode_mm_run(w->nrm, T, D, qkv, 3);
#pragma omp parallel for schedule(static) if (T > 16)
    for (int t = 0; t < T; t++) {
        const float *rc = w->rope_c + (size_t)t * half, *rs = w->rope_s + (size_t)t * half;
        rope_rotate(w->q + (size_t)t * qd, H, hd, rc, rs, 1.0f);
        rope_rotate(w->k + (size_t)t * kd, K, hd, rc, rs, 1.0f);
        memcpy(c->k + layer + w->row[t] * kd, w->k + (size_t)t * kd, (size_t)kd * sizeof(float));
        memcpy(c->v + layer + w->row[t] * kd, w->v + (size_t)t * kd, (size_t)kd * sizeof(float));
    }
    if (decode_attention(cf, c, l, n, slot, start, w)) return -1;
    const size_t nd = (size_t)T * D, ni = (size_t)T * I;
    const decode_mm o = {w->tmp, lw->o_proj, D}, mlp[2] = {{w->gate, lw->gate_proj, I}, {w->up, lw->up_proj, I}};
    const decode_mm down = {w->tmp, lw->down_proj, D};
    decode_mm_run(w->att, T, qd, &o, 1);
    for (size_t i = 0; i < nd; i++) w->x[i] += w->tmp[i];
    rmsnorm_fwd(w->nrm, NULL, w->x, lw->post_attention_layernorm, T, D, cf->rms_norm_eps);
    decode_mm_run(w->nrm, T, D, mlp, 2);
#pragma omp parallel for schedule(static) if (ni > 65536)
    for (size_t i = 0; i < ni; i++) w->gate[i] = silu(w->gate[i]) * w->up[i];
    decode_mm_run(w->gate, T, I, &down, 1);
    for (size_t i = 0; i < nd; i++) w->x[i] += w->tmp[i];
    return 0;
}

int llama_decode(const llama_model *m, llama_kv_cache *c, int n, const int *slot, const int *tokens,
                 const int *start, float *logits, char *err, size_t errsz)
{
    const llama_config *cf = &m->cfg;
    const int D = cf->hidden_size, V = cf->vocab_size, half = cf->head_dim / 2;
    decode_scratch w;
    if (decode_check(cf, c, n, slot, tokens, start, err, errsz)) return -1;
    const int T = start[n];
    double *inv_freq = (double *)malloc((size_t)half * sizeof(double));
    if (!inv_freq || decode_scratch_alloc(&w, cf, T, n)) {
        free(inv_freq);
        snprintf(err, errsz, "decode: out of memory for %d tokens", T);
        return -1;
    }
    llama_rope_inv_freq(cf, inv_freq);
    for (int e = 0; e < n; e++) {
        w.first[e] = c->len[slot[e]];
        for (int t = start[e]; t < start[e + 1]; t++) {
            const int pos = w.first[e] + t - start[e];
            w.row[t] = (size_t)slot[e] * c->max_pos + pos;
            rope_cos_sin(pos, inv_freq, half, w.rope_c + (size_t)t * half, w.rope_s + (size_t)t * half);
            memcpy(w.x + (size_t)t * D, m->w.embed_tokens + (size_t)tokens[t] * D, D * sizeof(float));
        }
    }
    free(inv_freq);
    for (int l = 0; l < cf->num_hidden_layers; l++)
        if (decode_layer(m, c, l, n, slot, start, &w)) {
            decode_scratch_free(&w);
            snprintf(err, errsz, "decode: out of memory for the attention scratch");
            return -1;
        }
    /* the LM head only for each entry's last token */
    for (int e = 0; e < n; e++)
        memcpy(w.tmp + (size_t)e * D, w.x + (size_t)(start[e + 1] - 1) * D, D * sizeof(float));
    rmsnorm_fwd(w.nrm, NULL, w.tmp, m->w.norm, n, D, cf->rms_norm_eps);
    const decode_mm head = {logits, m->w.lm_head, V};
    decode_mm_run(w.nrm, n, D, &head, 1);
    for (int e = 0; e < n; e++) c->len[slot[e]] += start[e + 1] - start[e];
    decode_scratch_free(&w);
    return 0;
}

int llama_decode_step(const llama_model *m, llama_kv_cache *c, int token, float *logits,
                      char *err, size_t errsz)
{
    const llama_config *cf = &m->cfg;
    const int L = cf->num_hidden_layers, D = cf->hidden_size, I = cf->intermediate_size;
    const int V = cf->vocab_size, H = cf->num_attention_heads, K = cf->num_key_value_heads;
    const int hd = cf->head_dim, qd = H * hd, kd = K * hd, rep = H / K;
    if (!c->len) {
        snprintf(err, errsz, "decode: no KV cache");
        return -1;
    }
    const int pos = c->len[0];
    if (token < 0 || token >= V) {
        snprintf(err, errsz, "decode: token %d is outside the vocabulary (0..%d)", token, V - 1);
        return -1;
    }
    if (pos >= c->max_pos) {
        snprintf(err, errsz, "decode: the KV cache is full (%d positions)", c->max_pos);
        return -1;
    }
    const size_t nx = (size_t)3 * D + qd * 2 + 2 * (size_t)I + (size_t)pos + 1 + (size_t)hd;
    float *buf = (float *)malloc(nx * sizeof(float));
    double *inv = (double *)malloc((size_t)(hd / 2) * sizeof(double));
    if (!buf || !inv) {
        free(buf);
        free(inv);
        snprintf(err, errsz, "decode: out of memory");
        return -1;
    }
    float *x = buf, *nrm = x + D, *tmp = nrm + D, *q = tmp + D, *att = q + qd, *g = att + qd;
    float *u = g + I, *sc = u + I;
    llama_rope_inv_freq(cf, inv);
    const float scale = 1.0f / sqrtf((float)hd);
    memcpy(x, m->w.embed_tokens + (size_t)token * D, D * sizeof(float));
    for (int l = 0; l < L; l++) {
        const llama_layer_weights *w = &m->w.layers[l];
        const size_t layer = (size_t)l * c->n_seq * c->max_pos * kd; /* slot 0 of layer l */
        float *kc = c->k + layer, *vc = c->v + layer;
        rmsnorm_fwd(nrm, NULL, x, w->input_layernorm, 1, D, cf->rms_norm_eps);
        mm_fwd(q, nrm, w->q_proj, 1, D, qd);
        mm_fwd(kc + (size_t)pos * kd, nrm, w->k_proj, 1, D, kd);
        mm_fwd(vc + (size_t)pos * kd, nrm, w->v_proj, 1, D, kd);
        llama_rope_apply(q, H, hd, pos, inv);
        llama_rope_apply(kc + (size_t)pos * kd, K, hd, pos, inv);
        for (int h = 0; h < H; h++) { /* one query against the cache */
            const float *qh = q + (size_t)h * hd;
            const int gk = h / rep;
            float mx = -INFINITY;
            for (int s = 0; s <= pos; s++) {
                const float *ks = kc + (size_t)s * kd + (size_t)gk * hd;
                float d = 0;
                for (int j = 0; j < hd; j++) d += qh[j] * ks[j];
                sc[s] = d * scale;
                if (sc[s] > mx) mx = sc[s];
            }
            double sum = 0;
            for (int s = 0; s <= pos; s++) {
                sc[s] = expf(sc[s] - mx);
                sum += sc[s];
            }
            const float inv_sum = (float)(1.0 / sum);
            float *o = att + (size_t)h * hd;
            for (int j = 0; j < hd; j++) o[j] = 0;
            for (int s = 0; s <= pos; s++) {
                const float p = sc[s] * inv_sum;
                const float *vs = vc + (size_t)s * kd + (size_t)gk * hd;
                for (int j = 0; j < hd; j++) o[j] += p * vs[j];
            }
        }
        mm_fwd(tmp, att, w->o_proj, 1, qd, D);
        for (int j = 0; j < D; j++) x[j] += tmp[j];
        rmsnorm_fwd(nrm, NULL, x, w->post_attention_layernorm, 1, D, cf->rms_norm_eps);
        mm_fwd(g, nrm, w->gate_proj, 1, D, I);
        mm_fwd(u, nrm, w->up_proj, 1, D, I);
        for (int j = 0; j < I; j++) g[j] = silu(g[j]) * u[j];
        mm_fwd(tmp, g, w->down_proj, 1, I, D);
        for (int j = 0; j < D; j++) x[j] += tmp[j];
    }
    rmsnorm_fwd(nrm, NULL, x, m->w.norm, 1, D, cf->rms_norm_eps);
    mm_fwd(logits, nrm, m->w.lm_head, 1, D, V);
    c->len[0] = pos + 1;
    free(buf);
    free(inv);
    return 0;
}
