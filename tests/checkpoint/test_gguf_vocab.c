/* tests/checkpoint/test_gguf_vocab.c - gguf_tokenizer_json on the real SmolLM2 GGUF's metadata and on
 * damaged copies of it: truncated anywhere in the metadata, a string array claiming 2^60
 * entries, an array of the wrong element type, a token id beyond the vocabulary, an unknown
 * tokenizer model. Each damaged copy must fail with a message naming the file (and no crash, ASan
 * too); the intact prefix must give a tokenizer.json with every token and merge.
 * Usage: test_gguf_vocab FILE.gguf TMP_DIR   (exit 77 when FILE.gguf is missing)
 */
#include "../../llama/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

static void spit(const char *path, const unsigned char *b, size_t n) {
    FILE *fp;
    remove(path);
    fp = fopen(path, "wb");
    if (!fp || fwrite(b, 1, n, fp) != n) { printf("cannot write %s\n", path); exit(1); }
    fclose(fp);
}

/* offset of the length-prefixed GGUF string s (a metadata key), 0 if absent */
static size_t find_key(const unsigned char *b, size_t n, const char *s) {
    size_t k = strlen(s), i;
    for (i = 8; i + k <= n; i++)
        if (!memcmp(b + i, s, k) && b[i - 8] == k && !memcmp(b + i - 7, "\0\0\0\0\0\0\0", 7)) return i;
    return 0;
}

static void expect_bad(const char *label, const char *path, const unsigned char *b, size_t n, const char *want) {
    char *tj = NULL, *cj = NULL, err[512] = "";
    size_t tl, cl;
    int rc;
    spit(path, b, n);
    rc = gguf_tokenizer_json(path, &tj, &tl, &cj, &cl, err, sizeof err);
    CHECK(rc == -1, "%s: accepted", label);
    CHECK(rc != -1 || (strstr(err, path) && (!want || strstr(err, want))), "%s: message '%s' (want the path and '%s')", label, err,
          want ? want : "");
    free(tj);
    free(cj);
}

int main(int argc, char **argv) {
    FILE *fp;
    unsigned char *b, *c;
    size_t n, keep, i, at;
    char path[1024], *tj = NULL, *cj = NULL, err[512];
    size_t tl = 0, cl = 0;
    if (argc != 3) { fprintf(stderr, "usage: test_gguf_vocab FILE.gguf TMP_DIR\n"); return 2; }
    if (!(fp = fopen(argv[1], "rb"))) { printf("SKIP: %s is missing (test_real_model.sh fetches it)\n", argv[1]); return 77; }
    /* the metadata is at the start: 4 MB holds SmolLM2's (1.9 MB), and the tokenizer never reads tensors */
    b = (unsigned char *)malloc(4 << 20);
    c = (unsigned char *)malloc(4 << 20);
    n = b && c ? fread(b, 1, 4 << 20, fp) : 0;
    fclose(fp);
    snprintf(path, sizeof path, "%s/vocab.gguf", argv[2]);

    spit(path, b, n);
    CHECK(gguf_tokenizer_json(path, &tj, &tl, &cj, &cl, err, sizeof err) == 0, "intact metadata: %s", err);
    if (tj) {
        CHECK(strstr(tj, "\"<|im_end|>\":2") && strstr(tj, "\"merges\":[\"\xC4\xA0 t\"") && strstr(tj, "\"Digits\""),
              "tokenizer.json lacks SmolLM2's tokens, merges or digit split");
        CHECK(cj && strstr(cj, "\"eos_token\":\"<|im_end|>\"") && strstr(cj, "chat_template"), "tokenizer_config.json: %.200s", cj ? cj : "");
    }
    free(tj);
    free(cj);

    /* the metadata ends after SmolLM2's last key, general.quantization_version (a u32): every cut
     * before that end must fail, the cut at it must not */
    at = find_key(b, n, "general.quantization_version");
    CHECK(at > 0, "no general.quantization_version key");
    keep = at + strlen("general.quantization_version") + 4 + 4;
    for (i = 0; at && i < 48; i++) {
        size_t cut = keep / 48 * i + i * 7919 % (keep / 48);
        char label[64];
        snprintf(label, sizeof label, "truncated at %zu", cut);
        expect_bad(label, path, b, cut, NULL);
    }
    if (at) {
        expect_bad("truncated 1 byte before the end of the metadata", path, b, keep - 1, NULL);
        spit(path, b, keep);
        CHECK(gguf_tokenizer_json(path, &tj, &tl, &cj, &cl, err, sizeof err) == 0, "exactly the metadata: %s", err);
        free(tj);
        free(cj);
    }
    {   /* tokens: 2^60 strings; then an array of i32 */
        size_t k = find_key(b, n, "tokenizer.ggml.tokens") + strlen("tokenizer.ggml.tokens");
        memcpy(c, b, n);
        c[k + 8 + 7] = 0x10;   /* after the value type (u32 9) and the element type (u32 8): u64 count */
        expect_bad("2^60 tokens", path, c, n, "tokenizer.ggml.tokens");
        memcpy(c, b, n);
        c[k + 4] = 5;
        expect_bad("tokens as i32", path, c, n, "tokenizer.ggml.tokens");
    }
    {   /* eos id past the vocabulary */
        size_t k = find_key(b, n, "tokenizer.ggml.eos_token_id") + strlen("tokenizer.ggml.eos_token_id");
        memcpy(c, b, n);
        c[k + 4 + 2] = 0x7f;   /* u32 value: 2 -> 0x7f0002 */
        expect_bad("eos beyond the vocabulary", path, c, n, "eos_token_id");
    }
    {   /* "gpt2" -> "llam": a model kind we do not read */
        size_t k = find_key(b, n, "tokenizer.ggml.model") + strlen("tokenizer.ggml.model");
        memcpy(c, b, n);
        memcpy(c + k + 4 + 8, "llam", 4);
        expect_bad("an unknown tokenizer model", path, c, n, "tokenizer.ggml.model");
    }
    remove(path);
    free(b);
    free(c);
    printf("%s (%d failures)\n", failures ? "FAIL" : "ok", failures);
    return failures != 0;
}
