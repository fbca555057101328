/* tests/checkpoint/test_gguf.c - llama_model_load_gguf on tests/fixtures/checkpoint/tiny_llama.gguf
 * (written by tools/gen_gguf_fixture.py with the reference `gguf` package: every tensor type we
 * read, q/k permuted as llama.cpp does): every tensor must equal, bit for bit, what the
 * reference dequantiser + tools/gguf_to_hf.py's unpermute give (tiny_llama_expected.safetensors);
 * then a corpus of damaged copies (truncations everywhere, lying counts, offsets, types,
 * shapes, architecture) must each fail with a message and no crash (ASan too).
 * Usage: test_gguf [fixture_dir] [tmp_dir]
 */
#define _POSIX_C_SOURCE 200809L
#include "../../llama/gguf.h"
#include "../../llama/safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    unsigned char *b;
    long sz;
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    sz = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    b = (unsigned char *)malloc((size_t)sz);
    if (b && fread(b, 1, (size_t)sz, fp) != (size_t)sz) { free(b); b = NULL; }
    fclose(fp);
    *n = (size_t)sz;
    return b;
}

static void spit(const char *path, const unsigned char *b, size_t n) {
    FILE *fp;
    remove(path); /* rewriting in place would trip ext4's flush-on-truncate: seconds of fsync */
    fp = fopen(path, "wb");
    if (!fp) { printf("cannot write %s\n", path); exit(1); }
    fwrite(b, 1, n, fp);
    fclose(fp);
}

/* offset of the first occurrence of a length-prefixed GGUF string s */
static size_t find_str(const unsigned char *b, size_t n, const char *s) {
    size_t k = strlen(s), i;
    for (i = 8; i + k <= n; i++)
        if (!memcmp(b + i, s, k) && b[i - 8] == k && !memcmp(b + i - 7, "\0\0\0\0\0\0\0", 7)) return i;
    return 0;
}

static void put_u64(unsigned char *p, unsigned long long v) { int i; for (i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i)); }

static void expect_bad(const char *label, const char *path, const unsigned char *b, size_t n, const char *want) {
    llama_model m;
    char err[512] = "";
    int rc;
    spit(path, b, n);
    rc = llama_model_load_gguf(&m, path, err, sizeof err);
    CHECK(rc == -1, "%s: loaded", label);
    CHECK(rc == -1 && strstr(err, want), "%s: message '%s' lacks '%s'", label, err, want);
    CHECK(m.params == NULL, "%s: model not left empty", label);
    printf("  %-28s -> %s\n", label, err);
    if (rc == 0) llama_model_free(&m);
}

int main(int argc, char **argv) {
    const char *fx = argc > 1 ? argv[1] : "tests/fixtures/checkpoint";
    const char *tmp = argc > 2 ? argv[2] : "/tmp";
    char gpath[600], epath[600], bad[600], err[512];
    llama_model m;
    st_file ef;
    unsigned char *orig, *b;
    size_t n, i;
    int t;

    snprintf(gpath, sizeof gpath, "%s/tiny_llama.gguf", fx);
    snprintf(epath, sizeof epath, "%s/tiny_llama_expected.safetensors", fx);
    snprintf(bad, sizeof bad, "%s/bad.gguf", tmp);
    if (llama_model_load_gguf(&m, gpath, err, sizeof err)) { printf("FAIL load: %s\n", err); return 1; }
    CHECK(m.cfg.vocab_size == 64 && m.cfg.hidden_size == 64 && m.cfg.intermediate_size == 96 && m.cfg.num_hidden_layers == 2 &&
          m.cfg.num_attention_heads == 4 && m.cfg.num_key_value_heads == 2 && m.cfg.head_dim == 16 && !m.cfg.tie_word_embeddings,
          "config sizes");
    CHECK(m.cfg.rms_norm_eps == 1e-5f && m.cfg.rope_theta == 10000.0 && m.cfg.max_position_embeddings == 256 &&
          m.cfg.bos_token_id == 1 && m.cfg.n_eos == 1 && m.cfg.eos_token_ids[0] == 2, "config numbers");
    if (st_open(&ef, epath, err, sizeof err)) { printf("FAIL %s\n", err); return 1; }
    CHECK(ef.n == m.n_tensors, "%d expected tensors, layout has %d", ef.n, m.n_tensors);
    for (t = 0; t < m.n_tensors; t++) {
        const llama_tensor_info *ti = &m.tensors[t];
        const st_tensor *e = st_find(&ef, ti->name);
        float *want;
        size_t diff = 0;
        if (!e || st_numel(e) != ti->numel) { CHECK(0, "%s: not in the expected file or wrong size", ti->name); continue; }
        want = (float *)malloc(ti->numel * sizeof *want);
        if (st_read_f32(&ef, e, want, err, sizeof err)) { CHECK(0, "%s", err); free(want); continue; }
        for (i = 0; i < ti->numel; i++) diff += memcmp(&want[i], &m.params[ti->offset + i], 4) != 0;
        CHECK(diff == 0, "%s: %zu of %zu values differ from the reference dequantiser + unpermute", ti->name, diff, ti->numel);
        free(want);
    }
    st_close(&ef);
    printf("  %d tensors equal to the reference (F32, F16, BF16, Q8_0, Q4_0, Q4_1; q/k unpermuted)\n", m.n_tensors);
    llama_model_free(&m);

    /* Damaged copies. */
    orig = slurp(gpath, &n);
    if (!orig) { printf("cannot read %s\n", gpath); return 1; }
    b = (unsigned char *)malloc(n);
    {
        int truncs = 0, refused = 0;
        for (i = 0; i < n; i += n / 97 + 1) { /* truncated everywhere: header, metadata, infos, data */
            llama_model mm;
            spit(bad, orig, i);
            truncs++;
            if (llama_model_load_gguf(&mm, bad, err, sizeof err) == -1) refused++;
            else llama_model_free(&mm);
        }
        CHECK(refused == truncs, "%d of %d truncated copies loaded", truncs - refused, truncs);
        printf("  %d truncations, all refused (e.g. the last: %s)\n", truncs, err);
    }
    memcpy(b, orig, n); memcpy(b, "GGUG", 4);
    expect_bad("bad magic", bad, b, n, "not a GGUF");
    memcpy(b, orig, n); b[4] = 1;
    expect_bad("version 1", bad, b, n, "version 1");
    memcpy(b, orig, n); put_u64(b + 8, 1ull << 40);
    expect_bad("tensor count lies", bad, b, n, "impossible");
    memcpy(b, orig, n); put_u64(b + 16, 1ull << 60);
    expect_bad("metadata count lies", bad, b, n, "impossible");
    {
        size_t a = find_str(orig, n, "general.architecture");
        memcpy(b, orig, n);
        if (a) { size_t v = a + strlen("general.architecture") + 4 + 8; if (!memcmp(b + v, "llama", 5)) memcpy(b + v, "qwen2", 5); }
        CHECK(a != 0, "architecture key not found");
        expect_bad("architecture qwen2", bad, b, n, "architecture");
    }
    {
        size_t s = find_str(orig, n, "token_embd.weight");
        size_t p = s + strlen("token_embd.weight"); /* then u32 n_dims, u64 ne[2], u32 type, u64 offset */
        CHECK(s != 0, "token_embd name not found");
        memcpy(b, orig, n); b[p + 4 + 16] = 77;
        expect_bad("unknown tensor type", bad, b, n, "ggml type 77");
        memcpy(b, orig, n); put_u64(b + p + 4 + 16 + 4, 1ull << 50);
        expect_bad("offset past the end", bad, b, n, "past the end");
        memcpy(b, orig, n); put_u64(b + p + 4, 96);
        expect_bad("row length changed", bad, b, n, "token_embd.weight");
        memcpy(b, orig, n); put_u64(b + p + 4, 1ull << 31); put_u64(b + p + 12, 1ull << 31);
        expect_bad("huge shape", bad, b, n, "token_embd.weight");
        memcpy(b, orig, n); b[p] = 7;
        expect_bad("7 dimensions", bad, b, n, "dimensions");
        s = find_str(orig, n, "blk.0.attn_v.weight");
        CHECK(s != 0, "attn_v name not found");
        memcpy(b, orig, n); memcpy(b + s, "blk.0.attn_x", 12);
        expect_bad("unknown tensor name", bad, b, n, "unexpected tensor 'blk.0.attn_x.weight'");
    }
    {
        size_t a = find_str(orig, n, "llama.attention.head_count_kv"); /* u32 type then u32 value */
        memcpy(b, orig, n);
        if (a) b[a + strlen("llama.attention.head_count_kv") + 4] = 3;
        CHECK(a != 0, "head_count_kv key not found");
        expect_bad("head_count_kv 3 (of 4)", bad, b, n, "num_key_value_heads");
    }
    {   /* random damage in the metadata and tensor infos (the first 4 KB) and random truncations */
        uint32_t s = 99;
        int it, loaded = 0, refused = 0;
        size_t region = n < 4096 ? n : 4096;
        for (it = 0; it < 1500; it++) {
            llama_model mm;
            size_t len = n;
            int k, flips;
            memcpy(b, orig, n);
            s = s * 1664525u + 1013904223u;
            if (s % 7 == 0) len = (s >> 8) % n;
            flips = 1 + (int)((s >> 4) % 3);
            for (k = 0; k < flips; k++) {
                s = s * 1664525u + 1013904223u;
                b[(s >> 8) % region] = (unsigned char)(s >> 24);
            }
            spit(bad, b, len);
            err[0] = 0;
            if (llama_model_load_gguf(&mm, bad, err, sizeof err) == 0) { loaded++; llama_model_free(&mm); }
            else { refused++; CHECK(err[0] != 0, "fuzz %d: refused without a message", it); }
        }
        printf("  fuzz: 1500 damaged copies, %d refused with a message, %d still loadable\n", refused, loaded);
    }
    free(b);
    free(orig);
    remove(bad);
    if (failures) { printf("%d check(s) failed\n", failures); return 1; }
    printf("all GGUF checks passed\n");
    return 0;
}
