/* tests/fuzz/fuzz_safetensors.c - a safetensors file (header and data) through st_open, then
 * every tensor read as st_open promises it can be (floats as fp32, integers as int32, raw). */
#include "fuzz_util.h"
#include "../../llama/safetensors.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[600], err[512] = "";
    st_file f;
    int i;
    fuzz_write(fuzz_dir("fuzz_safetensors"), "model.safetensors", data, size, path, sizeof path);
    if (st_open(&f, path, err, sizeof err)) {
        if (!err[0]) abort();
        return 0;
    }
    for (i = 0; i < f.n; i++) {
        const st_tensor *t = &f.tensors[i];
        size_t n = st_numel(t), bytes = (size_t)(t->end - t->begin);
        void *buf;
        if (st_find(&f, t->name) != t) abort();
        if (n > (1u << 20) || bytes > (1u << 22)) continue; /* st_open checked the size against the file */
        buf = malloc(n * 4 + bytes + 1);
        if (!buf) continue;
        if (st_read_f32(&f, t, (float *)buf, err, sizeof err) && !err[0]) abort();
        if (st_read_i32(&f, t, (int32_t *)buf, err, sizeof err) && !err[0]) abort();
        if (st_read_raw(&f, t, buf, err, sizeof err)) abort(); /* the bytes are there */
        free(buf);
    }
    st_close(&f);
    return 0;
}
