/* tests/checkpoint/test_quant.c - gguf_dequantize on random blocks of every quantised type the
 * GGUF reader takes (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K) against the values the reference
 * `gguf` package gives them (tests/checkpoint/quant_blocks.bin, written by gen_quant_blocks.py).
 * Every element must match to 1 ulp-ish (relative 1e-6; the reference computes in numpy fp32,
 * whose operation order may differ by one rounding); a wrong sub-block layout is off by far more.
 * Usage: test_quant quant_blocks.bin
 */
#include "../../llama/gguf.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t u32le(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

int main(int argc, char **argv) {
    FILE *fp;
    unsigned char *buf;
    long size, pos = 4;
    int failures = 0, types = 0;
    if (argc != 2) { fprintf(stderr, "usage: test_quant quant_blocks.bin\n"); return 2; }
    fp = fopen(argv[1], "rb");
    if (!fp || fseek(fp, 0, SEEK_END) || (size = ftell(fp)) < 4 || fseek(fp, 0, SEEK_SET)) { printf("FAIL: cannot read %s\n", argv[1]); return 1; }
    buf = (unsigned char *)malloc((size_t)size);
    if (!buf || fread(buf, 1, (size_t)size, fp) != (size_t)size || memcmp(buf, "GQTB", 4)) { printf("FAIL: %s is not a GQTB file\n", argv[1]); return 1; }
    fclose(fp);
    while (pos + 12 <= size) {
        uint32_t type = u32le(buf + pos), n = u32le(buf + pos + 4), nbytes = u32le(buf + pos + 8), i, bad = 0;
        const unsigned char *raw = buf + pos + 12, *want = raw + nbytes;
        float *got = (float *)malloc((size_t)n * sizeof *got);
        if (!got || pos + 12 + nbytes + 4L * n > size) { printf("FAIL: %s truncated\n", argv[1]); return 1; }
        if (gguf_dequantize(type, raw, nbytes, got, n)) {
            printf("FAIL: type %u refused\n", type);
            failures++;
        }
        for (i = 0; i < n; i++) {
            uint32_t w = u32le(want + 4 * i);
            float f;
            memcpy(&f, &w, 4);
            if (fabsf(got[i] - f) > 1e-6f * fabsf(f) + 1e-12f) {
                if (bad++ < 3) printf("FAIL: type %u element %u: %.9g, reference %.9g\n", type, i, got[i], f);
            }
        }
        failures += bad != 0;
        if (!bad) printf("ok: ggml type %u, %u elements\n", type, n);
        free(got);
        types++;
        pos += 12 + nbytes + 4L * n;
    }
    {   /* sizes that do not fit the blocks are refused, not read past */
        float tmp[256];
        if (!gguf_dequantize(12, buf, 100, tmp, 256) || !gguf_dequantize(12, buf, 144, tmp, 255) || !gguf_dequantize(99, buf, 4, tmp, 1)) {
            printf("FAIL: a mismatched size or unknown type was accepted\n");
            failures++;
        }
    }
    free(buf);
    if (types < 10) { printf("FAIL: only %d types in the fixture\n", types); failures++; }
    printf("%s: %d types, %d failures\n", failures ? "FAIL" : "ok", types, failures);
    return failures != 0;
}
