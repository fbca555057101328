/* tests/fuzz/fuzz_gguf.c - a GGUF file through llama_model_load_gguf: refused with a message,
 * or loaded into a model whose config passes the same checks as config.json. */
#include "fuzz_util.h"
#include "../../llama/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[600], err[512] = "";
    llama_model m;
    fuzz_write(fuzz_dir("fuzz_gguf"), "model.gguf", data, size, path, sizeof path);
    if (llama_model_load_gguf(&m, path, err, sizeof err)) {
        if (!err[0] || m.params) abort();
        return 0;
    }
    if (!m.params || m.n_tensors <= 0) abort();
    llama_model_free(&m);
    return 0;
}
