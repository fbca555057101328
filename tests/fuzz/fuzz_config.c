/* tests/fuzz/fuzz_config.c - config.json text through llama_config_parse: every input is
 * accepted or refused with a message; an accepted config has a layout that adds up. */
#include "../../llama/model.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    llama_config c;
    char err[512] = "";
    size_t n_params = 0;
    if (llama_config_parse((const char *)data, size, "fuzz/config.json", &c, err, sizeof err)) {
        if (!err[0]) abort();
        return 0;
    }
    if (llama_layout(&c, NULL, &n_params) <= 0 || n_params == 0) abort();
    return 0;
}
