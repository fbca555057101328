/* tests/checkpoint/test_hostile.c - the model-file loaders against crafted input:
 *   - GGUF metadata of the wrong type or out of range (general.alignment NaN or 1.5, NaN/inf
 *     numbers, floats or strings where integers belong, repeated keys) is refused with a message
 *     naming the key, never a crash, a silent misread or "not valid JSON";
 *   - a directory or FIFO where a model file belongs (GGUF, model.safetensors, config.json) is
 *     refused at once, saying what it is: no hang, no absurd size;
 *   - loading stays near-linear in the size of the header: 100k zero-size tensors beside a
 *     4096-layer config.json, an index naming 200k shard files and a 4096-layer GGUF each fail
 *     or load within seconds (they took minutes when matching was quadratic).
 * Usage: test_hostile [tmp_dir]
 */
#define _POSIX_C_SOURCE 200809L
#include "../../llama/gguf.h"
#include "../../llama/model.h"
#include "../../llama/safetensors.h"

#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

/* A crafted file must be refused (or loaded) within this many seconds; the quadratic loaders
 * took 26 s and 68 s (optimised build) on the two safetensors cases. Generous: the tests run
 * under ASan on a shared machine. */
#define TIME_LIMIT_S 10.0

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void rm_rf(const char *dir) { /* our own test directories only, one level deep */
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[1200];
    if (!d) return;
    while ((e = readdir(d))) {
        struct stat st;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (!lstat(p, &st) && S_ISDIR(st.st_mode)) rmdir(p);
        else remove(p);
    }
    closedir(d);
    rmdir(dir);
}

static void write_bytes(const char *path, const void *b, size_t n) {
    FILE *fp;
    remove(path);
    fp = fopen(path, "wb");
    if (!fp || fwrite(b, 1, n, fp) != n) { printf("cannot write %s\n", path); exit(1); }
    fclose(fp);
}

/* ---- a GGUF writer: a 1-layer Llama (V 8, D 8, I 16, 2 heads of 4) with chosen metadata ---- */

typedef struct { unsigned char *b; size_t n, cap; } bytes;

static void put(bytes *o, const void *p, size_t n) {
    if (o->n + n > o->cap) {
        o->cap = (o->n + n) * 2 + 256;
        o->b = (unsigned char *)realloc(o->b, o->cap);
        if (!o->b) { printf("out of memory\n"); exit(1); }
    }
    memcpy(o->b + o->n, p, n);
    o->n += n;
}
static void put_u32(bytes *o, uint32_t v) { unsigned char b[4]; int i; for (i = 0; i < 4; i++) b[i] = (unsigned char)(v >> (8 * i)); put(o, b, 4); }
static void put_u64(bytes *o, uint64_t v) { unsigned char b[8]; int i; for (i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i)); put(o, b, 8); }
static void put_str(bytes *o, const char *s) { put_u64(o, strlen(s)); put(o, s, strlen(s)); }

enum { GT_U32 = 4, GT_I32 = 5, GT_F32 = 6, GT_STRING = 8, GT_ARRAY = 9, GT_U64 = 10, GT_F64 = 12 };

/* One metadata pair, as the GGUF bytes of its value. */
typedef struct { const char *key; uint32_t type; uint64_t u; double d; const char *s; } kv;

static void put_kv(bytes *o, const kv *k) {
    put_str(o, k->key);
    put_u32(o, k->type);
    switch (k->type) {
    case GT_U32: case GT_I32: put_u32(o, (uint32_t)k->u); break;
    case GT_U64: put_u64(o, k->u); break;
    case GT_F32: { float f = (float)k->d; uint32_t w; memcpy(&w, &f, 4); put_u32(o, w); break; }
    case GT_F64: { uint64_t w; memcpy(&w, &k->d, 8); put_u64(o, w); break; }
    case GT_STRING: put_str(o, k->s); break;
    case GT_ARRAY: put_u32(o, GT_U32); put_u64(o, 2); put_u32(o, 1); put_u32(o, 2); break;
    }
}

#define N_BASE_KV 9
static const kv base_kv[N_BASE_KV] = {
    {"general.architecture", GT_STRING, 0, 0, "llama"},
    {"llama.block_count", GT_U32, 1, 0, NULL},
    {"llama.embedding_length", GT_U32, 8, 0, NULL},
    {"llama.feed_forward_length", GT_U32, 16, 0, NULL},
    {"llama.attention.head_count", GT_U32, 2, 0, NULL},
    {"llama.attention.head_count_kv", GT_U32, 2, 0, NULL},
    {"llama.context_length", GT_U32, 64, 0, NULL},
    {"llama.rope.freq_base", GT_F32, 0, 10000.0, NULL},
    {"llama.attention.layer_norm_rms_epsilon", GT_F32, 0, 1e-5, NULL},
};

/* A GGUF with the base metadata, where `over` (may be NULL) replaces the pair of the same key
 * or is added; `extra` (may be NULL) is added as well. Tensors F32, written aligned to 32 bytes
 * (what a file without general.alignment means); `layers` layers of the tiny model, with
 * dimension d (2 heads of d/2). */
static bytes gguf_build(const kv *over, const kv *extra, int layers, int d) {
    static const char *blk[] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"};
    bytes o = {NULL, 0, 0}, infos = {NULL, 0, 0};
    uint64_t off = 0, n_t = 0;
    int i, l, n_kv = 0, replaced = 0, ff = 2 * d;
    kv kvs[N_BASE_KV + 2];
    for (i = 0; i < N_BASE_KV; i++) {
        kvs[n_kv] = base_kv[i];
        if (over && !strcmp(over->key, base_kv[i].key)) { kvs[n_kv] = *over; replaced = 1; }
        if (!strcmp(kvs[n_kv].key, "llama.block_count") && kvs[n_kv].type == GT_U32 && kvs[n_kv].u == 1) kvs[n_kv].u = (uint64_t)layers;
        if (!strcmp(kvs[n_kv].key, "llama.embedding_length") && kvs[n_kv].type == GT_U32 && kvs[n_kv].u == 8) kvs[n_kv].u = (uint64_t)d;
        if (!strcmp(kvs[n_kv].key, "llama.feed_forward_length") && kvs[n_kv].type == GT_U32 && kvs[n_kv].u == 16) kvs[n_kv].u = (uint64_t)ff;
        n_kv++;
    }
    if (over && !replaced) kvs[n_kv++] = *over;
    if (extra) kvs[n_kv++] = *extra;
#define TENSOR(name, a, b)                                                      \
    do {                                                                        \
        uint64_t ne0 = (a), ne1 = (b), bytes_ = 4 * ne0 * (ne1 ? ne1 : 1);      \
        put_str(&infos, name);                                                  \
        put_u32(&infos, ne1 ? 2 : 1);                                           \
        put_u64(&infos, ne0);                                                   \
        if (ne1) put_u64(&infos, ne1);                                          \
        put_u32(&infos, 0);                                                     \
        put_u64(&infos, off);                                                   \
        off += (bytes_ + 31) / 32 * 32;                                         \
        n_t++;                                                                  \
    } while (0)
    TENSOR("token_embd.weight", d, 8);
    for (l = 0; l < layers; l++) {
        for (i = 0; i < 9; i++) {
            char name[64];
            uint64_t a = (uint64_t)d, b = (uint64_t)d;
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, blk[i]);
            if (i == 0 || i == 5) b = 0;
            if (i == 6 || i == 7) b = (uint64_t)ff;
            if (i == 8) a = (uint64_t)ff;
            TENSOR(name, a, b);
        }
    }
    TENSOR("output_norm.weight", d, 0);
    TENSOR("output.weight", d, 8);
#undef TENSOR
    put(&o, "GGUF", 4);
    put_u32(&o, 3);
    put_u64(&o, n_t);
    put_u64(&o, (uint64_t)n_kv);
    for (i = 0; i < n_kv; i++) put_kv(&o, &kvs[i]);
    put(&o, infos.b, infos.n);
    while (o.n % 32) put(&o, "", 1);
    {
        size_t k;
        unsigned char z[4096] = {0};
        for (k = 0; k < off; k += sizeof z) put(&o, z, off - k < sizeof z ? (size_t)(off - k) : sizeof z);
    }
    free(infos.b);
    return o;
}

/* Loads a GGUF with `over` (and `extra`); expects a refusal whose message has every one of
 * want[] and lacks "JSON". */
static void gguf_expect(const char *tmp, const char *label, const kv *over, const kv *extra, const char *want1, const char *want2) {
    char path[600], err[512] = "";
    llama_model m;
    bytes b = gguf_build(over, extra, 1, 8);
    int rc;
    snprintf(path, sizeof path, "%s/hostile.gguf", tmp);
    write_bytes(path, b.b, b.n);
    free(b.b);
    rc = llama_model_load_gguf(&m, path, err, sizeof err);
    CHECK(rc == -1, "%s: loaded", label);
    CHECK(rc == -1 && strstr(err, want1) && (!want2 || strstr(err, want2)) && !strstr(err, "JSON") && strstr(err, path),
          "%s: message '%s' lacks '%s'%s%s or the file name", label, err, want1, want2 ? " / " : "", want2 ? want2 : "");
    printf("  %-34s -> %s\n", label, err);
    if (rc == 0) llama_model_free(&m);
}

static void test_gguf_metadata(const char *tmp) {
    char path[600], err[512] = "";
    llama_model m;
    bytes b = gguf_build(NULL, NULL, 1, 8);
    snprintf(path, sizeof path, "%s/hostile.gguf", tmp);
    write_bytes(path, b.b, b.n);
    free(b.b);
    CHECK(llama_model_load_gguf(&m, path, err, sizeof err) == 0, "the crafted base GGUF does not load: %s", err);
    if (!err[0]) {
        CHECK(m.cfg.num_hidden_layers == 1 && m.cfg.hidden_size == 8 && m.cfg.rms_norm_eps == 1e-5f, "base GGUF config");
        llama_model_free(&m);
    }
    {
        kv a = {"general.alignment", GT_U32, 32, 0, NULL};
        b = gguf_build(&a, NULL, 1, 8);
        write_bytes(path, b.b, b.n);
        free(b.b);
        CHECK(llama_model_load_gguf(&m, path, err, sizeof err) == 0, "general.alignment u32 32 refused: %s", err);
        if (!err[0] || m.params) llama_model_free(&m);
    }
    {
        static const kv bad[] = {
            {"general.alignment", GT_F32, 0, NAN, NULL},     /* was a division by zero: SIGFPE */
            {"general.alignment", GT_F32, 0, 1.5, NULL},     /* was read as 1: garbage weights */
            {"general.alignment", GT_F64, 0, 32.0, NULL},    /* an integer key given as a float */
            {"general.alignment", GT_U32, 48, 0, NULL},
            {"general.alignment", GT_U32, 0, 0, NULL},
            {"general.alignment", GT_STRING, 0, 0, "32"},
        };
        static const char *want[][2] = {
            {"general.alignment", "nan"}, {"general.alignment", "1.5"}, {"general.alignment", "f64"},
            {"general.alignment", "power of two"}, {"general.alignment", "out of range"}, {"general.alignment", "string"},
        };
        size_t i;
        for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            char label[80];
            snprintf(label, sizeof label, "alignment case %zu", i);
            gguf_expect(tmp, label, &bad[i], NULL, want[i][0], want[i][1]);
        }
    }
    {
        kv k;
        k = (kv){"llama.attention.layer_norm_rms_epsilon", GT_F32, 0, NAN, NULL};
        gguf_expect(tmp, "rms eps NaN", &k, NULL, "llama.attention.layer_norm_rms_epsilon", "finite");
        k = (kv){"llama.rope.freq_base", GT_F64, 0, INFINITY, NULL};
        gguf_expect(tmp, "freq_base inf", &k, NULL, "llama.rope.freq_base", "finite");
        k = (kv){"llama.rope.freq_base", GT_STRING, 0, 0, "1e4"};
        gguf_expect(tmp, "freq_base a string", &k, NULL, "llama.rope.freq_base", "string");
        k = (kv){"llama.block_count", GT_F32, 0, 1.0, NULL};
        gguf_expect(tmp, "block_count a float", &k, NULL, "llama.block_count", "integer");
        k = (kv){"llama.block_count", GT_F32, 0, 1e30, NULL};
        gguf_expect(tmp, "block_count 1e30", &k, NULL, "llama.block_count", "integer");
        k = (kv){"llama.rope.dimension_count", GT_F32, 0, 1e30, NULL}; /* was (int)1e30: undefined */
        gguf_expect(tmp, "rope dims 1e30", &k, NULL, "llama.rope.dimension_count", "integer");
        k = (kv){"llama.rope.dimension_count", GT_U64, UINT64_MAX, 0, NULL};
        gguf_expect(tmp, "rope dims 2^64-1", &k, NULL, "llama.rope.dimension_count", "out of range");
        k = (kv){"llama.context_length", GT_I32, (uint32_t)-5, 0, NULL};
        gguf_expect(tmp, "context length -5", &k, NULL, "llama.context_length", "-5");
        k = (kv){"tokenizer.ggml.bos_token_id", GT_U64, 1ull << 40, 0, NULL};
        gguf_expect(tmp, "bos id 2^40", &k, NULL, "tokenizer.ggml.bos_token_id", "out of range");
        k = (kv){"tokenizer.ggml.eos_token_id", GT_ARRAY, 0, 0, NULL};
        gguf_expect(tmp, "eos id an array", &k, NULL, "tokenizer.ggml.eos_token_id", "array");
        k = (kv){"llama.vocab_size", GT_STRING, 0, 0, "8"};
        gguf_expect(tmp, "vocab size a string", &k, NULL, "llama.vocab_size", "string");
        k = (kv){"general.architecture", GT_U32, 7, 0, NULL};
        gguf_expect(tmp, "architecture a number", &k, NULL, "general.architecture", "u32");
        k = (kv){"llama.block_count", GT_U32, 1, 0, NULL};
        gguf_expect(tmp, "a key twice", &k, &k, "llama.block_count", "twice");
    }
}

/* ---- a directory or FIFO where a file belongs ---------------------------------------------- */

static void expect_refusal(const char *label, int rc, const char *err, const char *want, double t0) {
    double dt = now() - t0;
    CHECK(rc == -1 && strstr(err, want), "%s: rc %d, message '%s' lacks '%s'", label, rc, err, want);
    CHECK(dt < TIME_LIMIT_S, "%s: took %.1f s", label, dt);
    printf("  %-34s -> %s (%.2f s)\n", label, err, dt);
}

static void test_not_files(const char *tmp) {
    char dir[600], p[700], err[512];
    llama_model m;
    st_file f;
    double t0;
    snprintf(dir, sizeof dir, "%s/notfiles", tmp);
    rm_rf(dir);
    mkdir(dir, 0755);
    /* GGUF: a directory, a FIFO */
    snprintf(p, sizeof p, "%s/d.gguf", dir);
    mkdir(p, 0755);
    t0 = now();
    expect_refusal("GGUF path is a directory", llama_model_load_gguf(&m, p, err, sizeof err), err, "is a directory", t0);
    rmdir(p);
    if (mkfifo(p, 0644) == 0) {
        t0 = now();
        expect_refusal("GGUF path is a FIFO", llama_model_load_gguf(&m, p, err, sizeof err), err, "not a regular file", t0);
        t0 = now();
        expect_refusal("safetensors path is a FIFO", st_open(&f, p, err, sizeof err), err, "not a regular file", t0);
        remove(p);
    }
    /* a checkpoint directory: config.json a directory; then model.safetensors a directory, a FIFO */
    snprintf(p, sizeof p, "%s/config.json", dir);
    mkdir(p, 0755);
    t0 = now();
    expect_refusal("config.json is a directory", llama_model_load(&m, dir, err, sizeof err), err, "config.json: is a directory", t0);
    CHECK(!strstr(err, "9223372036854775807"), "config.json directory: absurd size in '%s'", err);
    rmdir(p);
    {
        FILE *fp = fopen(p, "wb");
        fputs("{\"model_type\":\"llama\",\"vocab_size\":8,\"hidden_size\":8,\"intermediate_size\":16,"
              "\"num_hidden_layers\":1,\"num_attention_heads\":2}", fp);
        fclose(fp);
    }
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    mkdir(p, 0755);
    t0 = now();
    expect_refusal("model.safetensors is a directory", llama_model_load(&m, dir, err, sizeof err), err, "model.safetensors: is a directory", t0);
    rmdir(p);
    if (mkfifo(p, 0644) == 0) {
        t0 = now();
        expect_refusal("model.safetensors is a FIFO", llama_model_load(&m, dir, err, sizeof err), err, "not a regular file", t0);
        remove(p);
    }
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    mkdir(p, 0755);
    t0 = now();
    expect_refusal("the index is a directory", llama_model_load(&m, dir, err, sizeof err), err, "index.json: is a directory", t0);
    rmdir(p);
    rm_rf(dir);
}

/* ---- near-linear loading -------------------------------------------------------------------- */

static void write_config(const char *dir, int layers) {
    char p[700];
    FILE *fp;
    snprintf(p, sizeof p, "%s/config.json", dir);
    fp = fopen(p, "wb");
    if (!fp) { printf("cannot write %s\n", p); exit(1); }
    fprintf(fp, "{\"model_type\":\"llama\",\"vocab_size\":8,\"hidden_size\":8,\"intermediate_size\":16,"
                "\"num_hidden_layers\":%d,\"num_attention_heads\":2}", layers);
    fclose(fp);
}

static void test_linear(const char *tmp) {
    char dir[600], p[700], err[512];
    llama_model m;
    double t0;
    int i, n = 100000;
    snprintf(dir, sizeof dir, "%s/linear", tmp);
    rm_rf(dir);
    mkdir(dir, 0755);
    write_config(dir, 4096);
    {   /* 100k zero-size tensors (a valid safetensors file: they tile an empty data buffer) */
        bytes h = {NULL, 0, 0};
        unsigned char len8[8];
        char e[96];
        put(&h, "{", 1);
        for (i = 0; i < n; i++) {
            int k = snprintf(e, sizeof e, "%s\"t%d\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}", i ? "," : "", i);
            put(&h, e, (size_t)k);
        }
        put(&h, "}", 1);
        for (i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.n >> (8 * i));
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        {
            FILE *fp = fopen(p, "wb");
            if (!fp || fwrite(len8, 1, 8, fp) != 8 || fwrite(h.b, 1, h.n, fp) != h.n) { printf("cannot write %s\n", p); exit(1); }
            fclose(fp);
        }
        free(h.b);
        t0 = now();
        expect_refusal("100k empty tensors, 4096 layers", llama_model_load(&m, dir, err, sizeof err), err, "missing", t0);
        remove(p);
    }
    {   /* an index naming 200k shard files (none exists) */
        bytes j = {NULL, 0, 0};
        char e[96];
        put(&j, "{\"weight_map\":{", 15);
        for (i = 0; i < 2 * n; i++) {
            int k = snprintf(e, sizeof e, "%s\"t%d\":\"s%d.safetensors\"", i ? "," : "", i, i);
            put(&j, e, (size_t)k);
        }
        put(&j, "}}", 2);
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
        write_bytes(p, j.b, j.n);
        free(j.b);
        t0 = now();
        expect_refusal("index naming 200k shards", llama_model_load(&m, dir, err, sizeof err), err, "s0.safetensors", t0);
    }
    rm_rf(dir);
    {   /* a GGUF of 4096 layers (36867 tensors) loads */
        bytes b = gguf_build(NULL, NULL, 4096, 4);
        int rc;
        snprintf(p, sizeof p, "%s/layers.gguf", tmp);
        write_bytes(p, b.b, b.n);
        free(b.b);
        t0 = now();
        rc = llama_model_load_gguf(&m, p, err, sizeof err);
        CHECK(rc == 0, "4096-layer GGUF: %s", err);
        CHECK(now() - t0 < TIME_LIMIT_S, "4096-layer GGUF took %.1f s", now() - t0);
        printf("  %-34s -> %s (%.2f s)\n", "GGUF with 4096 layers", rc ? err : "loaded", now() - t0);
        if (rc == 0) llama_model_free(&m);
        remove(p);
    }
}

int main(int argc, char **argv) {
    const char *tmp = argc > 1 ? argv[1] : "/tmp";
    alarm(300); /* a loader that waits on a FIFO fails the test instead of hanging it */
    printf("GGUF metadata:\n");
    test_gguf_metadata(tmp);
    printf("not regular files:\n");
    test_not_files(tmp);
    printf("crafted sizes:\n");
    test_linear(tmp);
    {
        char p[700];
        snprintf(p, sizeof p, "%s/hostile.gguf", tmp);
        remove(p);
    }
    if (failures) { printf("%d check(s) failed\n", failures); return 1; }
    printf("all hostile-input checks passed\n");
    return 0;
}
