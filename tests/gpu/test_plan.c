/* tests/gpu/test_plan.c - the CUDA backend's memory plan, checked without a GPU.
 *
 * The plan (llama_cuda_memory_plan in kernels.cu) decides whether a model is refused, so the
 * sizes the project depends on are pinned here:
 *   - Llama-3-8B, lean + recompute, micro-batches of 2 pairs of 2048-token sequences (8192
 *     tokens): fits an 80 GB card (79 GiB usable: H100 80GB has 79.6 GiB, less its CUDA context);
 *   - the same at 4 pairs (16384 tokens) fits too;
 *   - bf16 modes use flash attention, which has no scores scratch: the plan does not depend on the
 *     longest sequence, and differs from the cuBLAS attention plan by exactly the scores term
 *     (less) and the flash terms (more: a [T, H] fp32 log-sum-exp per activation set that keeps
 *     one - 1 with whole-layer recompute, L without or with selective recompute - and the
 *     backward's [T, H] fp32 Dsum), in each recompute mode;
 *   - with cuBLAS attention (LLAMA_CUDA_ATTENTION=cublas: what fp32 mode always uses) the scores
 *     scratch is sized by the longest sequence (2048), not by the batch: sized by the batch
 *     (max_seq_tokens 0) it would need 12 GiB more and be refused; the attention term is exactly
 *     K x S x padded(S) x (4 + 2) bytes for sequences of S tokens;
 *   - selective recompute (LLAMA_RECOMPUTE_SELECTIVE), lean, one pair of 2048-token sequences
 *     (4096 tokens) fits too, with either attention; at 2 pairs it does not (its kept activations
 *     grow with the batch: ~92 KiB per token and layer); the three modes differ by exactly the
 *     activation sets they keep: selective keeps L - 1 more kept sets (rstd1, qkv, att, xmid,
 *     rstd2, gu, and with flash attention att_lse) than whole-layer recompute, no recompute
 *     L - 1 more cheap sets (xn1, xn2, h) than selective; checked with both attentions;
 * and, on the CPU emulator (which reports 64 GiB free), creating the 4-pair backend is refused
 * with a message that names the plan.
 * Exit 0 pass, 1 fail. Built against the emulator's kernels.o (no CUDA toolkit needed). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../llama/model.h"


static int fails = 0;
static const double GIB = 1024.0 * 1024.0 * 1024.0;
static const double CARD_80GB_USABLE_GIB = 79.0;   /* what an 80 GB card leaves free */
static const double MARGIN_GIB = 0.5;              /* the backend's own margin (PLAN_MARGIN) */

static void expect(const char *what, int ok, const char *detail)
{
    if (!ok) fails++;
    printf("%s %s: %s\n", ok ? "ok  " : "FAIL", what, detail);
}

static llama_config llama3_8b(void)
{
    llama_config c;
    memset(&c, 0, sizeof c);
    c.vocab_size = 128256; c.hidden_size = 4096; c.intermediate_size = 14336; c.num_hidden_layers = 32;
    c.num_attention_heads = 32; c.num_key_value_heads = 8; c.head_dim = 128; c.rms_norm_eps = 1e-5f;
    c.rope_theta = 500000.0; c.max_position_embeddings = 8192; c.initializer_range = 0.02;
    return c;
}

static llama_cuda_opts lean_opts(int pairs, int seq_len, int max_seq)
{
    llama_cuda_opts o;
    memset(&o, 0, sizeof o);
    o.bf16 = 1; o.lean_optimizer = 1; o.recompute = LLAMA_RECOMPUTE_LAYER;
    o.max_tokens = 2 * pairs * seq_len;            /* chosen + rejected per pair, as the trainer plans */
    o.max_seq_tokens = max_seq;
    return o;
}

/* Plans cfg / o and reports whether it fits an 80 GB card; returns the total in GiB. */
static double plan_gib(const char *what, const llama_config *cfg, const llama_cuda_opts *o, int want_fit)
{
    char text[512], detail[700];
    size_t bytes = llama_cuda_memory_plan(cfg, o, text, sizeof text);
    double gib = (double)bytes / GIB;
    int fits = bytes > 0 && gib + MARGIN_GIB <= CARD_80GB_USABLE_GIB;
    snprintf(detail, sizeof detail, "%s (%s 80 GB)", text, fits ? "fits" : "does not fit");
    expect(what, bytes > 0 && fits == want_fit, detail);
    return gib;
}

int main(void)
{
    llama_config cfg = llama3_8b();
    llama_cuda_opts two = lean_opts(2, 2048, 2048), four = lean_opts(4, 2048, 2048), four_by_batch = lean_opts(4, 2048, 0);
    char detail[700];
    const size_t K = 8, H = 32, L = 32, S = 2048, scores = K * S * S * 6;   /* S = 2048: padded(S) = S */

    /* flash attention (bf16 modes by default) */
    unsetenv("LLAMA_CUDA_ATTENTION");
    plan_gib("8B lean, 2 pairs x 2048 tokens (flash)", &cfg, &two, 1);
    plan_gib("8B lean, 4 pairs x 2048 tokens (flash)", &cfg, &four, 1);
    size_t flash4 = llama_cuda_memory_plan(&cfg, &four, NULL, 0), flash4_batch = llama_cuda_memory_plan(&cfg, &four_by_batch, NULL, 0);
    snprintf(detail, sizeof detail, "%zu and %zu bytes", flash4, flash4_batch);
    expect("flash: no scores, max_seq_tokens does not matter", flash4 > 0 && flash4 == flash4_batch, detail);

    /* cuBLAS attention */
    setenv("LLAMA_CUDA_ATTENTION", "cublas", 1);
    size_t cublas4 = llama_cuda_memory_plan(&cfg, &four, NULL, 0);
    {
        size_t T = 16384, n_acts = 1;   /* whole-layer recompute: one activation set */
        size_t flash_terms = (n_acts + 1) * T * H * 4;
        snprintf(detail, sizeof detail, "cuBLAS %zu - flash %zu = %zu bytes, want scores %zu - lse and Dsum %zu", cublas4,
                 flash4, cublas4 - flash4, scores, flash_terms);
        expect("flash vs cuBLAS plan, term by term", cublas4 - flash4 == scores - flash_terms, detail);
    }
    plan_gib("8B lean, 2 pairs x 2048 tokens (cuBLAS attention)", &cfg, &two, 1);
    double g4 = plan_gib("8B lean, 4 pairs x 2048 tokens (cuBLAS attention)", &cfg, &four, 1);
    double g4_batch = plan_gib("8B lean, 4 pairs, scratch sized by the batch (cuBLAS attention)", &cfg, &four_by_batch, 0);
    snprintf(detail, sizeof detail, "%.2f GiB saved (K x 16384^2 x 6 bytes = 12 GiB, less the 2048-token scratch)",
             g4_batch - g4);
    expect("longest sequence instead of batch", g4_batch - g4 > 11.5 && g4_batch - g4 < 12.1, detail);

    /* the attention term alone: S = 2048 against S = 1000 (padded to 1000: a multiple of 8) and
     * S = 1001 (padded to 1008) */
    llama_cuda_opts a = lean_opts(4, 2048, 2048), b = lean_opts(4, 2048, 1000), c = lean_opts(4, 2048, 1001);
    size_t pa = llama_cuda_memory_plan(&cfg, &a, NULL, 0), pb = llama_cuda_memory_plan(&cfg, &b, NULL, 0);
    size_t pc = llama_cuda_memory_plan(&cfg, &c, NULL, 0);
    size_t want_ab = K * (2048 * 2048 - 1000 * 1000) * 6, want_cb = K * (1001 * 1008 - 1000 * 1000) * 6;
    snprintf(detail, sizeof detail, "differences %zu and %zu bytes, want %zu and %zu", pa - pb, pc - pb, want_ab, want_cb);
    expect("scores term K S padded(S) (4 + 2)", pa - pb == want_ab && pc - pb == want_cb, detail);

    /* selective recompute, with either attention: 1 pair of 2048-token sequences fits an 80 GB
     * card, 2 pairs do not; the modes differ by the activation sets they keep, term by term (bf16
     * activations; flash attention's att_lse is a kept tensor) */
    llama_cuda_opts sel1 = lean_opts(1, 2048, 2048), sel2 = lean_opts(2, 2048, 2048);
    sel1.recompute = sel2.recompute = LLAMA_RECOMPUTE_SELECTIVE;
    llama_cuda_opts layer1 = sel1, none1 = sel1;
    layer1.recompute = LLAMA_RECOMPUTE_LAYER; none1.recompute = LLAMA_RECOMPUTE_NONE;
    size_t T1 = 4096, D = 4096, I = 14336, QKV = (32 + 2 * 8) * 128, HD = 32 * 128;
    size_t p_sel[2], p_layer[2], p_none[2];   /* [0] cuBLAS, [1] flash */
    for (int flash = 0; flash <= 1; flash++) {
        const char *att = flash ? "flash" : "cuBLAS attention";
        char what[200];
        if (flash) unsetenv("LLAMA_CUDA_ATTENTION"); else setenv("LLAMA_CUDA_ATTENTION", "cublas", 1);
        snprintf(what, sizeof what, "8B lean, selective recompute, 1 pair x 2048 tokens (%s)", att);
        double gs = plan_gib(what, &cfg, &sel1, 1);
        snprintf(what, sizeof what, "8B lean, selective recompute, 2 pairs x 2048 tokens (%s)", att);
        plan_gib(what, &cfg, &sel2, 0);
        p_sel[flash] = llama_cuda_memory_plan(&cfg, &sel1, NULL, 0);
        p_layer[flash] = llama_cuda_memory_plan(&cfg, &layer1, NULL, 0);
        p_none[flash] = llama_cuda_memory_plan(&cfg, &none1, NULL, 0);
        size_t kept = T1 * (4 + QKV * 2 + HD * 2 + (flash ? H * 4 : 0) + D * 4 + 4 + 2 * I * 2);
        size_t cheap = T1 * (D * 2 + D * 2 + I * 2);
        snprintf(detail, sizeof detail, "selective - layer %zu (want %zu), none - selective %zu (want %zu); "
                 "selective %.2f GiB, layer %.2f, none %.2f", p_sel[flash] - p_layer[flash], (L - 1) * kept,
                 p_none[flash] - p_sel[flash], (L - 1) * cheap, gs, (double)p_layer[flash] / GIB,
                 (double)p_none[flash] / GIB);
        snprintf(what, sizeof what, "selective keeps L - 1 kept sets more, L - 1 cheap sets fewer (%s)", att);
        expect(what, p_sel[flash] - p_layer[flash] == (L - 1) * kept && p_none[flash] - p_sel[flash] == (L - 1) * cheap,
               detail);
        char sel_text[512];
        llama_cuda_memory_plan(&cfg, &sel1, sel_text, sizeof sel_text);
        snprintf(what, sizeof what, "the plan names selective recompute and the attention (%s)", att);
        expect(what, strstr(sel_text, "selective recompute") != NULL &&
                     strstr(sel_text, flash ? "flash attention" : "cuBLAS attention") != NULL, sel_text);
    }
    /* cuBLAS vs flash in each mode: the scores less, the lse of every set that keeps one and the
     * Dsum more (1 set with whole-layer recompute, L without or with selective recompute) */
    {
        size_t lse = T1 * H * 4, d_layer = scores - 2 * lse, d_many = scores - (L + 1) * lse;
        snprintf(detail, sizeof detail, "none %zu, layer %zu, selective %zu bytes; want %zu, %zu, %zu",
                 p_none[0] - p_none[1], p_layer[0] - p_layer[1], p_sel[0] - p_sel[1], d_many, d_layer, d_many);
        expect("cuBLAS - flash per recompute mode: scores - (sets + 1) T H 4",
               p_none[0] - p_none[1] == d_many && p_layer[0] - p_layer[1] == d_layer && p_sel[0] - p_sel[1] == d_many,
               detail);
    }
    unsetenv("LLAMA_CUDA_ATTENTION");

    /* 8B lean with flash attention, every recompute mode at 1, 2 and 4 pairs of 2048 tokens
     * (reported; the fits that matter are asserted above) */
    for (int pairs = 1; pairs <= 4; pairs *= 2) {
        double g[3];
        for (int rc = 0; rc <= 2; rc++) {
            llama_cuda_opts o = lean_opts(pairs, 2048, 2048);
            o.recompute = rc;
            g[rc] = (double)llama_cuda_memory_plan(&cfg, &o, NULL, 0) / GIB;
        }
        printf("     8B lean flash, %d pair(s) x 2048 (%d tokens): none %.2f GiB, layer %.2f GiB, selective %.2f GiB\n",
               pairs, 2 * pairs * 2048, g[0], g[1], g[2]);
    }

    /* bad options are refused with the reason */
    llama_cuda_opts bad_rc = sel1;
    bad_rc.recompute = 3;
    char rc_text[512];
    size_t r_rc = llama_cuda_memory_plan(&cfg, &bad_rc, rc_text, sizeof rc_text);
    expect("recompute 3 is refused", r_rc == 0 && strstr(rc_text, "recompute must be"), rc_text);
    llama_cuda_opts bad = lean_opts(1, 16, 0);
    bad.bf16 = 0;
    char text[512];
    size_t r = llama_cuda_memory_plan(&cfg, &bad, text, sizeof text);
    expect("lean without bf16 is refused", r == 0 && strstr(text, "needs bf16"), text);

    /* creation on the emulator (64 GiB free): refused before allocating, the plan in the message */
    llama_model m;
    memset(&m, 0, sizeof m);
    m.cfg = cfg;                                   /* params NULL: would be initialised on the device */
    char err[512] = "";
    llama_backend *be = llama_cuda_backend_create(&m, &four, err, sizeof err);
    if (be) be->destroy(be);
    expect("refusal names the plan", !be && strstr(err, "will not fit") && strstr(err, "memory plan") &&
           strstr(err, "sequences <= 2048"), err);

    if (fails) { printf("%d check(s) failed\n", fails); return 1; }
    printf("all memory plan checks passed\n");
    return 0;
}
