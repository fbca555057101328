/* tests/fuzz/fuzz_json.c - clair_json_parse on arbitrary bytes. A document it accepts must
 * survive a round trip: written by clair_json_write, parsed again and written again, the text
 * is the same (the reader and the writer agree on every value they let through). */
#include "../../clair.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    clair_json v, w;
    clair_buf a, b;
    char err[256];
    if (clair_json_parse((const char *)data, size, &v, err, sizeof err)) {
        if (!err[0]) abort(); /* a refusal always says why */
        return 0;
    }
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    clair_json_write(&a, &v);
    if (a.oom) abort();
    if (clair_json_parse(a.data, a.len, &w, err, sizeof err)) {
        fprintf(stderr, "fuzz_json: our own output does not parse: %s\n", err);
        abort();
    }
    clair_json_write(&b, &w);
    if (b.len != a.len || memcmp(a.data, b.data, a.len)) {
        fprintf(stderr, "fuzz_json: the round trip changed the text\n");
        abort();
    }
    clair_json_free(&v);
    clair_json_free(&w);
    clair_buf_free(&a);
    clair_buf_free(&b);
    return 0;
}
