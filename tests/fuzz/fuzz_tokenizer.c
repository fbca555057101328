/* tests/fuzz/fuzz_tokenizer.c - tokenizer.json through tokenizer_load; a tokenizer that loads
 * encodes a fixed text and the start of the input itself, and decodes the ids again. */
#include "fuzz_util.h"
#include "../../llama/tokenizer.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void encode_decode(const tokenizer *t, const char *s, size_t n) {
    tok_ids ids = {NULL, 0, 0};
    char err[512], *text = NULL;
    size_t len = 0, i;
    int v = tokenizer_vocab_size(t);
    if (tokenizer_encode(t, s, n, 1, &ids, err, sizeof err) == 0) {
        for (i = 0; i < ids.len; i++)
            if (ids.data[i] < 0 || ids.data[i] >= v) abort();
        if (tokenizer_decode(t, ids.data, ids.len, &text, &len, err, sizeof err) == 0) free(text);
    }
    tok_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[600], err[1024] = "";
    const char *dir = fuzz_dir("fuzz_tokenizer");
    tokenizer *t = NULL;
    fuzz_write(dir, "tokenizer.json", data, size, path, sizeof path);
    if (tokenizer_load(&t, dir, NULL, err, sizeof err)) {
        if (!err[0] || t) abort();
        return 0;
    }
    encode_decode(t, "Hello world, it's 2024!\n  <s> ab", 32);
    encode_decode(t, (const char *)data, size < 256 ? size : 256);
    tokenizer_free(t);
    return 0;
}
