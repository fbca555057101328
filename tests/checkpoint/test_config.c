/* tests/checkpoint/test_config.c - llama_config_parse/load/save on real-world config.json
 * files (tests/checkpoint/configs/) and on configs that must be refused, each refusal naming
 * the field. Usage: test_config [configs_dir] [tmp_dir]
 */
#define _POSIX_C_SOURCE 200809L
#include "../../llama/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

typedef struct {
    const char *file;
    int V, D, I, L, H, K, hd, tie, bos, n_eos, eos0, maxpos, llama3;
    double eps, theta, factor, lo, hi;
    int orig;
} expect;

static void check_one(const char *dir, const expect *e) {
    char path[600], err[512];
    llama_config c;
    snprintf(path, sizeof path, "%s/%s", dir, e->file);
    if (llama_config_load(path, &c, err, sizeof err)) { CHECK(0, "%s: %s", e->file, err); return; }
    CHECK(c.vocab_size == e->V && c.hidden_size == e->D && c.intermediate_size == e->I && c.num_hidden_layers == e->L,
          "%s: sizes V%d D%d I%d L%d", e->file, c.vocab_size, c.hidden_size, c.intermediate_size, c.num_hidden_layers);
    CHECK(c.num_attention_heads == e->H && c.num_key_value_heads == e->K && c.head_dim == e->hd,
          "%s: heads H%d K%d hd%d", e->file, c.num_attention_heads, c.num_key_value_heads, c.head_dim);
    CHECK(c.tie_word_embeddings == e->tie, "%s: tie %d", e->file, c.tie_word_embeddings);
    CHECK(c.bos_token_id == e->bos && c.n_eos == e->n_eos && (e->n_eos == 0 || c.eos_token_ids[0] == e->eos0),
          "%s: bos %d n_eos %d eos0 %d", e->file, c.bos_token_id, c.n_eos, c.eos_token_ids[0]);
    CHECK(c.rms_norm_eps == (float)e->eps, "%s: eps %g", e->file, c.rms_norm_eps);
    CHECK(c.rope_theta == e->theta, "%s: rope_theta %g", e->file, c.rope_theta);
    CHECK(c.max_position_embeddings == e->maxpos, "%s: max_pos %d", e->file, c.max_position_embeddings);
    CHECK(c.rope_llama3 == e->llama3, "%s: llama3 %d", e->file, c.rope_llama3);
    if (e->llama3)
        CHECK(c.rope_factor == e->factor && c.rope_low_freq_factor == e->lo && c.rope_high_freq_factor == e->hi &&
              c.rope_original_max_position_embeddings == e->orig, "%s: llama3 params %g %g %g %d", e->file, c.rope_factor,
              c.rope_low_freq_factor, c.rope_high_freq_factor, c.rope_original_max_position_embeddings);
    printf("  ok %s\n", e->file);
}

/* save -> load gives back the same config, field by field */
static void check_save_roundtrip(const char *dir, const char *file, const char *tmpdir) {
    char path[600], out[600], err[512];
    llama_config a, b;
    int i;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    snprintf(out, sizeof out, "%s/config_rt.json", tmpdir);
    if (llama_config_load(path, &a, err, sizeof err)) { CHECK(0, "%s", err); return; }
    if (llama_config_save(&a, out, err, sizeof err)) { CHECK(0, "save: %s", err); return; }
    if (llama_config_load(out, &b, err, sizeof err)) { CHECK(0, "reload of saved %s: %s", file, err); return; }
    CHECK(a.vocab_size == b.vocab_size && a.hidden_size == b.hidden_size && a.intermediate_size == b.intermediate_size &&
          a.num_hidden_layers == b.num_hidden_layers && a.num_attention_heads == b.num_attention_heads &&
          a.num_key_value_heads == b.num_key_value_heads && a.head_dim == b.head_dim && a.rms_norm_eps == b.rms_norm_eps &&
          a.rope_theta == b.rope_theta && a.rope_llama3 == b.rope_llama3 && a.rope_factor == b.rope_factor &&
          a.rope_low_freq_factor == b.rope_low_freq_factor && a.rope_high_freq_factor == b.rope_high_freq_factor &&
          a.rope_original_max_position_embeddings == b.rope_original_max_position_embeddings &&
          a.max_position_embeddings == b.max_position_embeddings && a.tie_word_embeddings == b.tie_word_embeddings &&
          a.bos_token_id == b.bos_token_id && a.n_eos == b.n_eos && a.initializer_range == b.initializer_range,
          "%s: save/load round trip differs", file);
    for (i = 0; i < a.n_eos && i < b.n_eos; i++) CHECK(a.eos_token_ids[i] == b.eos_token_ids[i], "%s: eos[%d]", file, i);
    {
        /* the shortest float text, not 9.9999997473787516e-06 */
        FILE *fp = fopen(out, "rb");
        char buf[4096];
        size_t n = fp ? fread(buf, 1, sizeof buf - 1, fp) : 0;
        if (fp) fclose(fp);
        buf[n] = 0;
        CHECK(strstr(buf, "\"rms_norm_eps\": 1e-05") || strstr(buf, "\"rms_norm_eps\": 1e-06"), "%s: eps written oddly", file);
    }
}

/* A valid base config; the extra text ("key":value,) goes after the keys it may override (the
 * JSON reader keeps the last of a repeated key, as Python's json does). */
static const char *BASE =
    "{\"model_type\":\"llama\",\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":256,\"hidden_size\":64,"
    "\"rms_norm_eps\":1e-5,\"intermediate_size\":128,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,%s"
    "\"use_cache\":true}";

static void expect_refused(const char *label, const char *extra, const char *want) {
    char json[2048], err[512] = "";
    llama_config c;
    int rc;
    snprintf(json, sizeof json, BASE, extra);
    rc = llama_config_parse(json, strlen(json), "test.json", &c, err, sizeof err);
    CHECK(rc == -1, "%s: accepted", label);
    CHECK(rc == -1 && strstr(err, want) && strstr(err, "test.json"), "%s: message '%s' lacks '%s'", label, err, want);
    printf("  %-32s -> %s\n", label, err);
}

static void expect_ok(const char *label, const char *extra, llama_config *c) {
    char json[2048], err[512] = "";
    snprintf(json, sizeof json, BASE, extra);
    CHECK(llama_config_parse(json, strlen(json), "test.json", c, err, sizeof err) == 0, "%s: refused: %s", label, err);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "tests/checkpoint/configs";
    const char *tmpdir = argc > 2 ? argv[2] : "/tmp";
    static const expect real[] = {
        /* file                           V       D     I      L   H   K  hd  tie bos     neos eos0   maxpos llama3 eps   theta     factor lo hi orig */
        {"Llama-3.2-1B.json",           128256, 2048, 8192,  16, 32, 8,  64, 1, 128000, 1, 128001, 131072, 1, 1e-5, 500000.0, 32.0, 1.0, 4.0, 8192},
        {"Llama-3.1-8B-Instruct.json",  128256, 4096, 14336, 32, 32, 8,  128, 0, 128000, 3, 128001, 131072, 1, 1e-5, 500000.0, 8.0, 1.0, 4.0, 8192},
        {"Llama-2-7b-hf.json",          32000,  4096, 11008, 32, 32, 32, 128, 0, 1,      1, 2,      4096,   0, 1e-5, 10000.0, 0, 0, 0, 0},
        {"TinyLlama-1.1B-Chat-v1.0.json", 32000, 2048, 5632, 22, 32, 4,  64, 0, 1,      1, 2,      2048,   0, 1e-5, 10000.0, 0, 0, 0, 0},
        {"SmolLM2-135M-Instruct.json",  49152,  576,  1536,  30, 9,  3,  64, 1, 1,      1, 2,      8192,   0, 1e-5, 100000.0, 0, 0, 0, 0},
        {"transformers5-tiny.json",     64,     16,   32,    1,  4,  2,  4,  1, 1,      1, 2,      2048,   0, 1e-6, 10000.0, 0, 0, 0, 0},
    };
    size_t i;
    llama_config c;
    char err[512];

    for (i = 0; i < sizeof real / sizeof real[0]; i++) check_one(dir, &real[i]);
    {
        char path[600];
        llama_config c8;
        snprintf(path, sizeof path, "%s/Llama-3.1-8B-Instruct.json", dir);
        if (!llama_config_load(path, &c8, err, sizeof err))
            CHECK(c8.eos_token_ids[1] == 128008 && c8.eos_token_ids[2] == 128009, "8B eos list");
    }
    for (i = 0; i < sizeof real / sizeof real[0]; i++) check_save_roundtrip(dir, real[i].file, tmpdir);

    /* Defaults and accepted variants. */
    expect_ok("defaults", "", &c);
    CHECK(c.head_dim == 16 && c.rope_theta == 10000.0 && c.max_position_embeddings == 2048 && c.bos_token_id == -1 &&
          c.n_eos == 0 && c.tie_word_embeddings == 0 && c.initializer_range == 0.02, "defaults wrong");
    expect_ok("no num_key_value_heads", "\"num_key_value_heads\":null,", &c);
    CHECK(c.num_key_value_heads == 4, "K defaults to H (got %d)", c.num_key_value_heads);
    expect_ok("rope_scaling default type", "\"rope_scaling\":{\"rope_type\":\"default\"},", &c);
    CHECK(c.rope_llama3 == 0, "default rope type is none");
    expect_ok("legacy rope_scaling.type llama3", "\"rope_scaling\":{\"type\":\"llama3\",\"factor\":8,\"low_freq_factor\":1,\"high_freq_factor\":4,\"original_max_position_embeddings\":8192},", &c);
    CHECK(c.rope_llama3 == 1 && c.rope_factor == 8, "rope_scaling.type llama3");
    expect_ok("transformers 5 rope_parameters llama3",
              "\"rope_parameters\":{\"rope_type\":\"llama3\",\"rope_theta\":500000.0,\"factor\":32,\"low_freq_factor\":1,\"high_freq_factor\":4,\"original_max_position_embeddings\":8192},", &c);
    CHECK(c.rope_llama3 == 1 && c.rope_factor == 32 && c.rope_theta == 500000.0, "rope_parameters");
    expect_ok("explicit head_dim", "\"head_dim\":32,", &c);
    CHECK(c.head_dim == 32, "head_dim read");
    expect_ok("eos null, bos null", "\"eos_token_id\":null,\"bos_token_id\":null,", &c);
    CHECK(c.n_eos == 0 && c.bos_token_id == -1, "null ids");
    expect_ok("biases false", "\"attention_bias\":false,\"mlp_bias\":false,\"hidden_act\":\"silu\",", &c);

    /* Refusals, each naming the field. */
    expect_refused("model_type mistral", "\"model_type\":\"mistral\",", "model_type");
    expect_refused("architecture", "\"architectures\":[\"LlamaForSequenceClassification\"],", "architectures");
    expect_refused("attention_bias", "\"attention_bias\":true,", "attention_bias");
    expect_refused("mlp_bias", "\"mlp_bias\":true,", "mlp_bias");
    expect_refused("hidden_act gelu", "\"hidden_act\":\"gelu\",", "hidden_act");
    expect_refused("rope linear", "\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0},", "rope_scaling");
    expect_refused("rope dynamic", "\"rope_scaling\":{\"rope_type\":\"dynamic\",\"factor\":2.0},", "dynamic");
    expect_refused("rope yarn (v5 layout)", "\"rope_parameters\":{\"rope_type\":\"yarn\",\"factor\":4.0},", "rope_parameters");
    expect_refused("llama3 without factor", "\"rope_scaling\":{\"rope_type\":\"llama3\",\"low_freq_factor\":1,\"high_freq_factor\":4,\"original_max_position_embeddings\":8192},", "factor");
    expect_refused("llama3 without orig max pos", "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":1,\"high_freq_factor\":4},", "original_max_position_embeddings");
    expect_refused("llama3 low >= high", "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":4,\"high_freq_factor\":1,\"original_max_position_embeddings\":8192},", "high_freq_factor");
    expect_refused("H not multiple of K", "\"num_key_value_heads\":3,", "num_key_value_heads");
    expect_refused("D not multiple of H", "\"num_attention_heads\":5,\"num_key_value_heads\":5,", "hidden_size");
    expect_refused("odd head_dim", "\"head_dim\":15,", "head_dim");
    expect_refused("absurd vocab", "\"vocab_size\":1000000000,", "vocab_size");
    expect_refused("absurd layers", "\"num_hidden_layers\":100000,", "num_hidden_layers");
    expect_refused("zero heads", "\"num_attention_heads\":0,", "num_attention_heads");
    expect_refused("hidden_size a string", "\"hidden_size\":\"64\",", "hidden_size");
    expect_refused("fractional size", "\"intermediate_size\":128.5,", "intermediate_size");
    expect_refused("eos out of vocab", "\"eos_token_id\":[2,999],", "eos_token_id");
    expect_refused("bos negative", "\"bos_token_id\":-1,", "bos_token_id");
    expect_refused("eps zero", "\"rms_norm_eps\":0,", "rms_norm_eps");
    expect_refused("negative rope_theta", "\"rope_theta\":-5,", "rope_theta");
    expect_refused("tie not a bool", "\"tie_word_embeddings\":1,", "tie_word_embeddings");
    {
        const char *s = "{\"model_type\":\"llama\",\"hidden_size\":64}";
        CHECK(llama_config_parse(s, strlen(s), "m.json", &c, err, sizeof err) == -1 && strstr(err, "vocab_size") && strstr(err, "missing"),
              "missing vocab_size: %s", err);
        s = "{\"vocab_size\":5,";
        CHECK(llama_config_parse(s, strlen(s), "m.json", &c, err, sizeof err) == -1 && strstr(err, "JSON"), "bad JSON: %s", err);
        s = "[]";
        CHECK(llama_config_parse(s, strlen(s), "m.json", &c, err, sizeof err) == -1 && strstr(err, "object"), "array: %s", err);
        CHECK(llama_config_load("/nonexistent/config.json", &c, err, sizeof err) == -1 && strstr(err, "/nonexistent/config.json"), "missing file: %s", err);
    }
    if (failures) { printf("%d check(s) failed\n", failures); return 1; }
    printf("all config checks passed\n");
    return 0;
}
