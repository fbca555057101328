/* tests/checkpoint/test_load.c - llama_model_save / llama_model_load: round trips (F32 exact,
 * BF16 rounded, F16 files, sharded with an index, tied and untied, tokenizer files copied,
 * stale files of an earlier save removed) and checkpoints that must be refused with the
 * offending tensor or file named. Needs llama_model.o (llama_layout, llama_model_alloc).
 * Usage: test_load [tmp_dir]
 */
#define _POSIX_C_SOURCE 200809L
#include "../../llama/model.h"
#include "../../llama/safetensors.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

static char root[512];

static void rm_rf(const char *dir) { /* our own test directories only, one level deep */
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[1200];
    if (!d) return;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        remove(p);
    }
    closedir(d);
    rmdir(dir);
}

static int exists(const char *dir, const char *name) {
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static int count_files(const char *dir, const char *contains) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (!d) return -1;
    while ((e = readdir(d))) if (e->d_name[0] != '.' || !strcmp(contains, ".")) n += strstr(e->d_name, contains) != NULL;
    closedir(d);
    return n;
}

static void write_text(const char *dir, const char *name, const char *text) {
    char p[1200];
    FILE *fp;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    fp = fopen(p, "wb");
    if (!fp) { printf("cannot write %s\n", p); exit(1); }
    fputs(text, fp);
    fclose(fp);
}

static llama_config tiny_config(int tied) {
    llama_config c;
    memset(&c, 0, sizeof c);
    c.vocab_size = 67; c.hidden_size = 24; c.intermediate_size = 40; c.num_hidden_layers = 2;
    c.num_attention_heads = 6; c.num_key_value_heads = 2; c.head_dim = 4;
    c.rms_norm_eps = 1e-5f; c.rope_theta = 10000.0; c.max_position_embeddings = 128;
    c.tie_word_embeddings = tied; c.bos_token_id = 1; c.eos_token_ids[0] = 2; c.n_eos = 1;
    c.initializer_range = 0.02;
    return c;
}

static void make_model(llama_model *m, int tied) {
    llama_config c = tiny_config(tied);
    char err[512];
    size_t i;
    uint32_t s = 7;
    if (llama_model_alloc(m, &c, err, sizeof err)) { printf("alloc: %s\n", err); exit(1); }
    /* distinct, non-round values everywhere (norms too), so a swapped or misread tensor shows */
    for (i = 0; i < m->n_params; i++) { s = s * 1664525u + 1013904223u; m->params[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 0.3f; }
}

static int same_params(const llama_model *a, const llama_model *b, int bf16) {
    size_t i;
    if (a->n_params != b->n_params) return 0;
    for (i = 0; i < a->n_params; i++) {
        float want = bf16 ? st_bf16_to_f32(st_f32_to_bf16(a->params[i])) : a->params[i];
        if (memcmp(&want, &b->params[i], 4)) { printf("  param %zu: %.9g vs %.9g\n", i, want, b->params[i]); return 0; }
    }
    return 1;
}

/* Writes dir/model.safetensors from m's tensors, with edits: drop `drop`, rename `rename_from`
 * to `rename_to`, add `extra` (a [2] F32 tensor). dtype applies to all tensors. */
static void write_custom(const llama_model *m, const char *dir, const char *dtype, const char *drop, const char *extra,
                         const char *reshape, const float *lm_head) {
    st_write_tensor *ts = (st_write_tensor *)calloc((size_t)m->n_tensors + 2, sizeof *ts);
    void **bufs = (void **)calloc((size_t)m->n_tensors + 2, sizeof *bufs);
    static const float two[2] = {1.0f, 2.0f};
    char p[1200], err[512];
    int i, n = 0;
    for (i = 0; i < m->n_tensors; i++) {
        const llama_tensor_info *ti = &m->tensors[i];
        if (drop && !strcmp(drop, ti->name)) continue;
        ts[n].name = ti->name; ts[n].dtype = dtype; ts[n].ndim = ti->ndim;
        ts[n].shape[0] = ti->shape[0]; ts[n].shape[1] = ti->shape[1];
        if (reshape && !strcmp(reshape, ti->name)) { ts[n].shape[0] = ti->shape[1]; ts[n].shape[1] = ti->shape[0]; }
        if (!strcmp(dtype, "F32")) ts[n].data = m->params + ti->offset;
        else {
            uint16_t *h = (uint16_t *)malloc(ti->numel * 2);
            size_t k;
            for (k = 0; k < ti->numel; k++)
                h[k] = !strcmp(dtype, "F16") ? st_f32_to_f16(m->params[ti->offset + k]) : st_f32_to_bf16(m->params[ti->offset + k]);
            ts[n].data = bufs[n] = h;
        }
        n++;
    }
    if (extra) { ts[n].name = extra; ts[n].dtype = "F32"; ts[n].ndim = 1; ts[n].shape[0] = 2; ts[n].data = two; n++; }
    if (lm_head) {
        ts[n].name = "lm_head.weight"; ts[n].dtype = "F32"; ts[n].ndim = 2;
        ts[n].shape[0] = m->cfg.vocab_size; ts[n].shape[1] = m->cfg.hidden_size; ts[n].data = lm_head; n++;
    }
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if (st_write(p, ts, n, "{\"format\":\"pt\"}", err, sizeof err)) { printf("write_custom: %s\n", err); exit(1); }
    snprintf(p, sizeof p, "%s/config.json", dir);
    if (llama_config_save(&m->cfg, p, err, sizeof err)) { printf("config: %s\n", err); exit(1); }
    for (i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(ts);
}

static void expect_load_fails(const char *label, const char *dir, const char *want) {
    llama_model m;
    char err[1024] = "";
    int rc = llama_model_load(&m, dir, err, sizeof err);
    CHECK(rc == -1, "%s: loaded", label);
    CHECK(rc == -1 && strstr(err, want), "%s: message '%s' lacks '%s'", label, err, want);
    CHECK(m.params == NULL, "%s: model not left empty", label);
    printf("  %-30s -> %s\n", label, err);
    if (rc == 0) llama_model_free(&m);
}

static void fresh_dir(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", root, name);
    rm_rf(out);
    mkdir(out, 0755);
}

int main(int argc, char **argv) {
    llama_model m, t, back;
    llama_save_opts o;
    char dir[700], tok[700], err[1024];
    snprintf(root, sizeof root, "%s", argc > 1 ? argv[1] : "/tmp");

    make_model(&m, 0);
    make_model(&t, 1);

    /* F32 round trip is bit-exact; the directory may not exist yet. */
    snprintf(dir, sizeof dir, "%s/ck_f32", root);
    rm_rf(dir);
    memset(&o, 0, sizeof o);
    CHECK(llama_model_save(&m, dir, &o, err, sizeof err) == 0, "save f32: %s", err);
    CHECK(exists(dir, "model.safetensors") && exists(dir, "config.json") && !exists(dir, "model.safetensors.index.json"), "f32 files");
    CHECK(count_files(dir, ".") == 2 + 2, "leftover temporaries in %s", dir); /* ".", "..", 2 files */
    if (llama_model_load(&back, dir, err, sizeof err)) CHECK(0, "load f32: %s", err);
    else { CHECK(same_params(&m, &back, 0), "f32 round trip not exact"); CHECK(back.cfg.n_eos == 1 && back.cfg.bos_token_id == 1, "cfg"); llama_model_free(&back); }

    /* BF16: every value rounded to nearest even, then exact. */
    o.bf16 = 1;
    CHECK(llama_model_save(&m, dir, &o, err, sizeof err) == 0, "save bf16 over f32: %s", err);
    if (llama_model_load(&back, dir, err, sizeof err)) CHECK(0, "load bf16: %s", err);
    else { CHECK(same_params(&m, &back, 1), "bf16 round trip"); llama_model_free(&back); }
    {
        st_file f;
        char p[1200];
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        if (!st_open(&f, p, err, sizeof err)) {
            CHECK(!strcmp(f.tensors[0].dtype, "BF16") && f.metadata_json && strstr(f.metadata_json, "pt"), "bf16 file dtype/metadata");
            CHECK(!strcmp(f.tensors[0].name, "model.embed_tokens.weight") && !strcmp(f.tensors[f.n - 1].name, "lm_head.weight"), "tensor order");
            st_close(&f);
        } else CHECK(0, "%s", err);
    }

    /* Sharded: a small limit gives several files and an index; loading reads them all. Then a
     * single-file save into the same directory removes the stale shards and index. */
    o.bf16 = 0;
    o.max_shard_bytes = 12000;
    CHECK(llama_model_save(&m, dir, &o, err, sizeof err) == 0, "save sharded: %s", err);
    CHECK(exists(dir, "model.safetensors.index.json") && !exists(dir, "model.safetensors"), "sharded: index, no single file");
    {
        int n = count_files(dir, "-of-");
        CHECK(n >= 3, "only %d shards", n);
        printf("  sharded save: %d shards\n", n);
    }
    if (llama_model_load(&back, dir, err, sizeof err)) CHECK(0, "load sharded: %s", err);
    else { CHECK(same_params(&m, &back, 0), "sharded round trip"); llama_model_free(&back); }
    /* a model.safetensors beside an index wins, as in transformers' from_pretrained (the
     * index is made unusable, so loading through it would fail) */
    write_custom(&m, dir, "F32", NULL, NULL, NULL, NULL);
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{\"x\":\"../nope\"}}");
    if (llama_model_load(&back, dir, err, sizeof err)) CHECK(0, "single file beside an index: %s", err);
    else { CHECK(same_params(&m, &back, 0), "single beside index"); llama_model_free(&back); }
    o.max_shard_bytes = 0;
    CHECK(llama_model_save(&m, dir, &o, err, sizeof err) == 0, "save single over sharded: %s", err);
    CHECK(!exists(dir, "model.safetensors.index.json") && count_files(dir, "-of-") == 0 && exists(dir, "model.safetensors"), "stale shards removed");

    /* Tied: no lm_head.weight written, and loading does not expect one. Tokenizer files copied. */
    fresh_dir(tok, sizeof tok, "ck_tokfrom");
    write_text(tok, "tokenizer.json", "{\"model\":{}}");
    write_text(tok, "tokenizer_config.json", "{}");
    write_text(tok, "generation_config.json", "{\"bos_token_id\":1}");
    snprintf(dir, sizeof dir, "%s/ck_tied", root);
    rm_rf(dir);
    o.tokenizer_from = tok;
    CHECK(llama_model_save(&t, dir, &o, err, sizeof err) == 0, "save tied: %s", err);
    CHECK(exists(dir, "tokenizer.json") && exists(dir, "tokenizer_config.json") && exists(dir, "generation_config.json") &&
          !exists(dir, "special_tokens_map.json"), "tokenizer files copied");
    {
        st_file f;
        char p[1200];
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        if (!st_open(&f, p, err, sizeof err)) { CHECK(!st_find(&f, "lm_head.weight"), "tied checkpoint has lm_head"); st_close(&f); }
    }
    if (llama_model_load(&back, dir, err, sizeof err)) CHECK(0, "load tied: %s", err);
    else { CHECK(same_params(&t, &back, 0) && back.cfg.tie_word_embeddings, "tied round trip"); llama_model_free(&back); }
    /* saving into the directory the tokenizer came from works (nothing to copy) */
    o.tokenizer_from = dir;
    CHECK(llama_model_save(&t, dir, &o, err, sizeof err) == 0 && exists(dir, "tokenizer.json"), "save into own dir: %s", err);
    o.tokenizer_from = root; /* a directory without tokenizer files: an error, and nothing half-written */
    {
        char d2[800];
        snprintf(d2, sizeof d2, "%s/ck_notok", root);
        rm_rf(d2);
        CHECK(llama_model_save(&t, d2, &o, err, sizeof err) == -1 && strstr(err, "tokenizer"), "no tokenizer files: %s", err);
        CHECK(!exists(d2, "model.safetensors") && !exists(d2, "config.json") && count_files(d2, ".") == 2, "failed save left files");
        rm_rf(d2);
    }
    o.tokenizer_from = NULL;

    /* F16 files load (converted exactly). */
    fresh_dir(dir, sizeof dir, "ck_f16");
    write_custom(&m, dir, "F16", NULL, NULL, NULL, NULL);
    if (llama_model_load(&back, dir, err, sizeof err)) CHECK(0, "load f16: %s", err);
    else {
        size_t i, bad = 0;
        for (i = 0; i < m.n_params; i++) bad += back.params[i] != st_f16_to_f32(st_f32_to_f16(m.params[i]));
        CHECK(bad == 0, "f16 values: %zu differ", bad);
        llama_model_free(&back);
    }

    /* Old conversions with rotary_emb.inv_freq buffers: ignored, as transformers does. */
    fresh_dir(dir, sizeof dir, "ck_invfreq");
    write_custom(&m, dir, "F32", NULL, "model.layers.0.self_attn.rotary_emb.inv_freq", NULL, NULL);
    if (llama_model_load(&back, dir, err, sizeof err)) CHECK(0, "inv_freq buffer refused: %s", err);
    else llama_model_free(&back);

    /* Tied config with a stored lm_head equal to the embeddings: accepted (transformers ties them). */
    fresh_dir(dir, sizeof dir, "ck_tied_head");
    write_custom(&t, dir, "F32", NULL, NULL, NULL, t.w.embed_tokens);
    if (llama_model_load(&back, dir, err, sizeof err)) CHECK(0, "tied + equal lm_head refused: %s", err);
    else { CHECK(same_params(&t, &back, 0), "tied + equal head values"); llama_model_free(&back); }

    /* Refusals. */
    fresh_dir(dir, sizeof dir, "ck_bad");
    write_custom(&m, dir, "F32", "model.layers.1.mlp.up_proj.weight", NULL, NULL, NULL);
    expect_load_fails("missing tensor", dir, "model.layers.1.mlp.up_proj.weight");
    write_custom(&m, dir, "F32", NULL, "model.layers.0.self_attn.q_proj.bias", NULL, NULL);
    expect_load_fails("extra tensor", dir, "unexpected tensor 'model.layers.0.self_attn.q_proj.bias'");
    write_custom(&m, dir, "F32", NULL, NULL, "model.layers.1.mlp.down_proj.weight", NULL);
    expect_load_fails("transposed tensor", dir, "'model.layers.1.mlp.down_proj.weight' has shape [40, 24]");
    write_custom(&m, dir, "F32", NULL, NULL, "model.layers.0.self_attn.k_proj.weight", NULL);
    expect_load_fails("wrong shape", dir, "has shape [24, 8], but config.json implies [8, 24]");
    write_custom(&m, dir, "F32", "lm_head.weight", NULL, NULL, NULL);
    expect_load_fails("untied without lm_head", dir, "tie_word_embeddings");
    {
        float *other = (float *)malloc((size_t)t.cfg.vocab_size * t.cfg.hidden_size * sizeof(float));
        size_t k;
        for (k = 0; k < (size_t)t.cfg.vocab_size * t.cfg.hidden_size; k++) other[k] = t.w.embed_tokens[k];
        other[100] += 1.0f;
        write_custom(&t, dir, "F32", NULL, NULL, NULL, other);
        expect_load_fails("tied but lm_head differs", dir, "element 100");
        free(other);
    }
    write_custom(&m, dir, "F32", NULL, NULL, NULL, NULL);
    {   /* more layers in config.json than in the file */
        llama_config c3 = m.cfg;
        char p[1200];
        c3.num_hidden_layers = 3;
        snprintf(p, sizeof p, "%s/config.json", dir);
        llama_config_save(&c3, p, err, sizeof err);
        expect_load_fails("config has more layers", dir, "model.layers.2.");
        c3.num_hidden_layers = 1;
        llama_config_save(&c3, p, err, sizeof err);
        expect_load_fails("config has fewer layers", dir, "unexpected tensor 'model.layers.1.");
        c3 = m.cfg; c3.vocab_size = 68;
        llama_config_save(&c3, p, err, sizeof err);
        expect_load_fails("vocab mismatch", dir, "config.json implies [68, 24]");
        /* a config that lies big: refused by the shape check, before any parameter memory */
        c3 = m.cfg; c3.vocab_size = 4194304; c3.num_hidden_layers = 2;
        llama_config_save(&c3, p, err, sizeof err);
        expect_load_fails("config lies big (no huge alloc)", dir, "config.json implies [4194304, 24]");
        write_text(dir, "config.json", "{\"model_type\":\"llama\",\"attention_bias\":true}");
        expect_load_fails("refused config", dir, "attention_bias");
    }
    {   /* integer dtype */
        fresh_dir(dir, sizeof dir, "ck_bad2");
        write_custom(&m, dir, "F32", NULL, NULL, NULL, NULL);
        /* rewrite one tensor's dtype in place: F32 [24] norm is 96 bytes = I32 [24] */
        char p[1200];
        st_file f;
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        if (!st_open(&f, p, err, sizeof err)) {
            FILE *fp = fopen(p, "r+b");
            char *hdr = (char *)malloc(f.data_start);
            char *q;
            if (fp && hdr && fread(hdr, 1, f.data_start, fp) == f.data_start) {
                q = strstr(hdr + 8, "\"model.norm.weight\":{\"dtype\":\"F32\"");
                if (q) { memcpy(strstr(q, "F32"), "I32", 3); fseek(fp, 0, SEEK_SET); fwrite(hdr, 1, f.data_start, fp); }
                CHECK(q != NULL, "could not patch dtype");
            }
            if (fp) fclose(fp);
            free(hdr);
            st_close(&f);
            expect_load_fails("integer dtype", dir, "dtype I32");
        }
        /* truncated file */
        CHECK(truncate(p, 1000) == 0, "truncate");
        expect_load_fails("truncated safetensors", dir, "past the end");
        remove(p);
        expect_load_fails("no weights file", dir, "model.safetensors");
    }
    {   /* broken indexes */
        fresh_dir(dir, sizeof dir, "ck_badidx");
        o.max_shard_bytes = 12000; o.bf16 = 0;
        CHECK(llama_model_save(&m, dir, &o, err, sizeof err) == 0, "save sharded: %s", err);
        write_text(dir, "model.safetensors.index.json", "{\"metadata\":{},\"weight_map\":{\"model.norm.weight\":\"../../etc/passwd\"}}");
        expect_load_fails("index path escape", dir, "file name inside");
        write_text(dir, "model.safetensors.index.json", "{\"metadata\":{},\"weight_map\":{\"model.norm.weight\":\"model-00009-of-00009.safetensors\"}}");
        expect_load_fails("index names missing shard", dir, "model-00009-of-00009.safetensors");
        write_text(dir, "model.safetensors.index.json", "{\"metadata\":{},\"weight_map\":{\"model.norm.weight\":\"model-00001-of-00005.safetensors\"}}");
        expect_load_fails("index lists too few shards", dir, "to (nothing)");
        write_text(dir, "model.safetensors.index.json", "{\"weight_map\":[]}");
        expect_load_fails("index without weight_map", dir, "weight_map");
        write_text(dir, "model.safetensors.index.json", "{\"weight_map\":");
        expect_load_fails("index bad JSON", dir, "JSON");
    }

    llama_model_free(&m);
    llama_model_free(&t);
    if (failures) { printf("%d check(s) failed\n", failures); return 1; }
    printf("all checkpoint load/save checks passed\n");
    return 0;
}
