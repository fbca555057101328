/* tests/checkpoint/test_safetensors.c - the safetensors reader/writer:
 *   1. number conversions (bf16, f16) against known values and exhaustive round trips;
 *   2. write -> read round trip of every dtype we convert, with metadata and odd shapes;
 *   3. a fixture written by the reference Python writer (tools/gen_st_fixture.py) reads right;
 *   4. a corpus of broken files generated here: each must fail st_open (or the read) with a
 *      clear message and no crash (this test also runs under ASan/UBSan).
 * Usage: test_safetensors [fixture_dir] [tmp_dir]
 */
#define _POSIX_C_SOURCE 200809L
#include "../../llama/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

static char tmpdir[512] = "/tmp";

static uint32_t fbits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static float bitsf(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

/* ---- 1. conversions ---- */
static void test_conversions(void) {
    static const struct { uint32_t f; uint16_t h; } bf[] = {
        {0x3F800000u, 0x3F80}, /* 1.0 */
        {0x3F808000u, 0x3F80}, /* 1 + 2^-8: tie, stays even */
        {0x3F818000u, 0x3F82}, /* 1 + 3*2^-8: tie, rounds up to even */
        {0x3F808001u, 0x3F81}, /* just above the tie: up */
        {0xC0000000u, 0xC000}, /* -2 */
        {0x40490FDBu, 0x4049}, /* pi -> 3.140625 */
        {0x7F7FFFFFu, 0x7F80}, /* FLT_MAX rounds to +inf (as torch does) */
        {0x7F800000u, 0x7F80}, {0xFF800000u, 0xFF80},
        {0x000116C2u, 0x0001}, /* float subnormal */
        {0x80000000u, 0x8000},
    };
    static const struct { uint16_t h; float f; } hf[] = {
        {0x3C00, 1.0f}, {0xC000, -2.0f}, {0x0001, 5.9604644775390625e-08f}, {0x03FF, 6.097555160522461e-05f},
        {0x0400, 6.103515625e-05f}, {0x7BFF, 65504.0f}, {0x3555, 0.333251953125f}, {0x3800, 0.5f},
    };
    size_t i;
    unsigned u;
    for (i = 0; i < sizeof bf / sizeof bf[0]; i++) {
        uint16_t h = st_f32_to_bf16(bitsf(bf[i].f));
        CHECK(h == bf[i].h, "f32_to_bf16(0x%08x) = 0x%04x, want 0x%04x", bf[i].f, h, bf[i].h);
    }
    CHECK(isnan(st_bf16_to_f32(st_f32_to_bf16(bitsf(0x7FC00000u)))), "bf16 NaN lost");
    CHECK(isnan(st_bf16_to_f32(st_f32_to_bf16(bitsf(0x7F800001u)))), "bf16 signalling NaN with low payload became inf");
    CHECK(st_bf16_to_f32(0x4049) == 3.140625f, "bf16_to_f32(0x4049)");
    for (i = 0; i < sizeof hf / sizeof hf[0]; i++) {
        float f = st_f16_to_f32(hf[i].h);
        CHECK(f == hf[i].f, "f16_to_f32(0x%04x) = %.9g, want %.9g", hf[i].h, f, hf[i].f);
        CHECK(st_f32_to_f16(hf[i].f) == hf[i].h, "f32_to_f16(%.9g) = 0x%04x, want 0x%04x", hf[i].f, st_f32_to_f16(hf[i].f), hf[i].h);
    }
    CHECK(isinf(st_f16_to_f32(0x7C00)) && st_f16_to_f32(0x7C00) > 0, "f16 +inf");
    CHECK(isinf(st_f16_to_f32(0xFC00)) && st_f16_to_f32(0xFC00) < 0, "f16 -inf");
    CHECK(isnan(st_f16_to_f32(0x7E00)), "f16 NaN");
    CHECK(fbits(st_f16_to_f32(0x8000)) == 0x80000000u, "f16 -0");
    CHECK(st_f32_to_f16(65519.99f) == 0x7BFF, "65519.99 -> 65504");
    CHECK(st_f32_to_f16(65520.0f) == 0x7C00, "65520 -> inf");
    CHECK(st_f32_to_f16(ldexpf(1, -25)) == 0x0000, "2^-25 ties to even 0");
    CHECK(st_f32_to_f16(3 * ldexpf(1, -25)) == 0x0002, "3*2^-25 ties to even 2");
    CHECK(st_f32_to_f16(1.0f + ldexpf(1, -11)) == 0x3C00, "1+2^-11 ties to even");
    CHECK(st_f32_to_f16(1.0f + 3 * ldexpf(1, -11)) == 0x3C02, "1+3*2^-11 ties to even (up)");
    CHECK(st_f32_to_f16(bitsf(0x7FC00000u)) == 0x7E00, "f16 NaN from f32 NaN");
    /* Exhaustive: every non-NaN half and bfloat16 survives a trip through fp32 unchanged. */
    for (u = 0; u < 65536; u++) {
        uint16_t h = (uint16_t)u;
        if ((h & 0x7C00) == 0x7C00 && (h & 0x3FF)) continue;
        if (st_f32_to_f16(st_f16_to_f32(h)) != h) { CHECK(0, "f16 round trip of 0x%04x", h); break; }
    }
    for (u = 0; u < 65536; u++) {
        uint16_t h = (uint16_t)u;
        if ((h & 0x7F80) == 0x7F80 && (h & 0x7F)) continue;
        if (st_f32_to_bf16(st_bf16_to_f32(h)) != h) { CHECK(0, "bf16 round trip of 0x%04x", h); break; }
    }
    /* Nearest: for random floats, the chosen bf16 is at least as close as its neighbours. */
    {
        uint32_t s = 12345;
        for (i = 0; i < 100000; i++) {
            float x, a, lo, hi;
            uint16_t h;
            s = s * 1664525u + 1013904223u;
            x = bitsf((s & 0x3FFFFFFFu) | 0x30000000u);
            h = st_f32_to_bf16(x);
            a = st_bf16_to_f32(h);
            lo = st_bf16_to_f32((uint16_t)(h - 1));
            hi = st_bf16_to_f32((uint16_t)(h + 1));
            if (fabsf(a - x) > fabsf(lo - x) || fabsf(a - x) > fabsf(hi - x)) { CHECK(0, "bf16 not nearest for 0x%08x", fbits(x)); break; }
        }
    }
}

/* ---- 2. round trip ---- */
static void test_roundtrip(void) {
    char path[600], err[512];
    float f32[6] = {1.5f, -2.25f, 3.0e-8f, 65504.0f, -0.0f, 1e30f};
    uint16_t bf16[6], f16[6];
    int64_t i64[3] = {-5, 2147483647, 0};
    int32_t i32[2] = {-2147483647 - 1, 7};
    unsigned char u8[4] = {0, 1, 200, 255}, bl[3] = {1, 0, 1};
    float scalar = 42.0f;
    st_write_tensor ts[8];
    st_file f;
    int i;
    for (i = 0; i < 6; i++) { bf16[i] = st_f32_to_bf16(f32[i]); f16[i] = st_f32_to_f16(i == 5 ? 1.0f : f32[i]); }
    memset(ts, 0, sizeof ts);
    ts[0].name = "a.weight"; ts[0].dtype = "F32"; ts[0].ndim = 2; ts[0].shape[0] = 2; ts[0].shape[1] = 3; ts[0].data = f32;
    ts[1].name = "b"; ts[1].dtype = "BF16"; ts[1].ndim = 1; ts[1].shape[0] = 6; ts[1].data = bf16;
    ts[2].name = "c \"quoted\" \\ name"; ts[2].dtype = "F16"; ts[2].ndim = 3; ts[2].shape[0] = 1; ts[2].shape[1] = 6; ts[2].shape[2] = 1; ts[2].data = f16;
    ts[3].name = "ids"; ts[3].dtype = "I64"; ts[3].ndim = 1; ts[3].shape[0] = 3; ts[3].data = i64;
    ts[4].name = "i32"; ts[4].dtype = "I32"; ts[4].ndim = 1; ts[4].shape[0] = 2; ts[4].data = i32;
    ts[5].name = "u8"; ts[5].dtype = "U8"; ts[5].ndim = 2; ts[5].shape[0] = 2; ts[5].shape[1] = 2; ts[5].data = u8;
    ts[6].name = "mask"; ts[6].dtype = "BOOL"; ts[6].ndim = 1; ts[6].shape[0] = 3; ts[6].data = bl;
    ts[7].name = "scalar"; ts[7].dtype = "F32"; ts[7].ndim = 0; ts[7].data = &scalar;
    snprintf(path, sizeof path, "%s/rt.safetensors", tmpdir);
    CHECK(st_write(path, ts, 8, "{\"format\":\"pt\",\"note\":\"h\\u00e9\"}", err, sizeof err) == 0, "st_write: %s", err);
    if (st_open(&f, path, err, sizeof err)) { CHECK(0, "st_open round trip: %s", err); return; }
    CHECK(f.n == 8, "n = %d", f.n);
    CHECK(f.data_start % 8 == 0, "data not 8-aligned: %llu", (unsigned long long)f.data_start);
    CHECK(f.metadata_json && strstr(f.metadata_json, "\"format\":\"pt\""), "metadata: %s", f.metadata_json ? f.metadata_json : "(null)");
    for (i = 0; i < 8; i++) CHECK(!strcmp(f.tensors[i].name, ts[i].name), "order/name %d: %s", i, f.tensors[i].name);
    {
        float got[6];
        int32_t gi[6];
        const st_tensor *t;
        t = st_find(&f, "a.weight");
        CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && st_numel(t) == 6, "a.weight shape");
        CHECK(t && !st_read_f32(&f, t, got, err, sizeof err) && !memcmp(got, f32, sizeof f32), "F32 values");
        t = st_find(&f, "b");
        CHECK(t && !st_read_f32(&f, t, got, err, sizeof err), "BF16 read: %s", err);
        for (i = 0; t && i < 6; i++) CHECK(got[i] == st_bf16_to_f32(bf16[i]), "BF16[%d]", i);
        CHECK(got[0] == 1.5f && got[1] == -2.25f, "BF16 exact values");
        t = st_find(&f, "c \"quoted\" \\ name");
        CHECK(t && !st_read_f32(&f, t, got, err, sizeof err), "F16 read (escaped name): %s", err);
        CHECK(t && got[3] == 65504.0f && got[0] == 1.5f, "F16 values");
        t = st_find(&f, "ids");
        CHECK(t && !st_read_i32(&f, t, gi, err, sizeof err) && gi[0] == -5 && gi[1] == 2147483647 && gi[2] == 0, "I64 values");
        t = st_find(&f, "i32");
        CHECK(t && !st_read_i32(&f, t, gi, err, sizeof err) && gi[0] == -2147483647 - 1 && gi[1] == 7, "I32 values");
        t = st_find(&f, "u8");
        CHECK(t && !st_read_i32(&f, t, gi, err, sizeof err) && gi[2] == 200 && gi[3] == 255, "U8 values");
        t = st_find(&f, "mask");
        CHECK(t && !st_read_i32(&f, t, gi, err, sizeof err) && gi[0] == 1 && gi[1] == 0 && gi[2] == 1, "BOOL values");
        t = st_find(&f, "scalar");
        CHECK(t && t->ndim == 0 && st_numel(t) == 1 && !st_read_f32(&f, t, got, err, sizeof err) && got[0] == 42.0f, "0-d tensor");
        t = st_find(&f, "ids");
        CHECK(t && st_read_f32(&f, t, got, err, sizeof err) == -1 && strstr(err, "floating"), "F32 read of I64 refused: %s", err);
        CHECK(st_find(&f, "nope") == NULL, "st_find absent");
    }
    st_close(&f);
    /* No temporary left behind; a failed write leaves no file. */
    {
        char tmp[700];
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
        CHECK(access(tmp, F_OK) != 0, "temporary file left behind");
        ts[1].dtype = "F33";
        snprintf(path, sizeof path, "%s/rt_bad.safetensors", tmpdir);
        CHECK(st_write(path, ts, 8, NULL, err, sizeof err) == -1 && strstr(err, "F33"), "bad dtype write refused: %s", err);
        CHECK(access(path, F_OK) != 0, "failed write left a file");
        ts[1].dtype = "BF16";
        ts[1].name = "a.weight";
        CHECK(st_write(path, ts, 8, NULL, err, sizeof err) == -1 && strstr(err, "twice"), "duplicate name refused: %s", err);
        ts[1].name = "b";
        CHECK(st_write(path, ts, 8, "{\"n\":1}", err, sizeof err) == -1 && strstr(err, "strings"), "non-string metadata refused: %s", err);
    }
}

/* ---- 3. a file written by the reference (Python safetensors) writer ---- */
static void test_reference_fixture(const char *dir) {
    char path[600], err[512];
    st_file f;
    float got[8];
    int32_t gi[4];
    const st_tensor *t;
    int i;
    snprintf(path, sizeof path, "%s/reference.safetensors", dir);
    if (st_open(&f, path, err, sizeof err)) { CHECK(0, "reference fixture: %s", err); return; }
    /* Values chosen in tools/gen_st_fixture.py: x[i] = (i - 3.5) / 4 (exact in every dtype). */
    static const char *names[] = {"x_f32", "x_bf16", "x_f16"};
    for (i = 0; i < 3; i++) {
        int k;
        t = st_find(&f, names[i]);
        CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 4, "%s shape", names[i]);
        if (!t || st_read_f32(&f, t, got, err, sizeof err)) { CHECK(0, "%s read: %s", names[i], err); continue; }
        for (k = 0; k < 8; k++) CHECK(got[k] == (k - 3.5f) / 4, "%s[%d] = %g", names[i], k, got[k]);
    }
    t = st_find(&f, "ids_i64");
    CHECK(t && !st_read_i32(&f, t, gi, err, sizeof err) && gi[0] == 0 && gi[1] == 1 && gi[2] == 49151 && gi[3] == -100, "reference I64");
    t = st_find(&f, "big_i64");
    CHECK(t && st_read_i32(&f, t, gi, err, sizeof err) == -1 && strstr(err, "int32"), "I64 beyond int32 refused: %s", err);
    CHECK(f.metadata_json && strstr(f.metadata_json, "\"format\":\"pt\""), "reference metadata");
    st_close(&f);
}

/* ---- 4. broken files ---- */
static void put_u64(unsigned char *p, uint64_t v) { int i; for (i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i)); }

/* Writes [u64 hlen][header][data_len zero bytes]; hlen_override != 0 replaces the length. */
static void make(const char *path, const char *header, uint64_t hlen_override, size_t data_len) {
    FILE *fp;
    unsigned char len[8];
    size_t i;
    remove(path); /* see test_fuzz */
    fp = fopen(path, "wb");
    if (!fp) { printf("cannot create %s\n", path); exit(1); }
    put_u64(len, hlen_override ? hlen_override : strlen(header));
    fwrite(len, 1, 8, fp);
    fwrite(header, 1, strlen(header), fp);
    for (i = 0; i < data_len; i++) fputc(i % 7 == 3 ? 2 : 0, fp);
    fclose(fp);
}

static void expect_bad(const char *label, const char *header, uint64_t hlen, size_t data_len, const char *want) {
    char path[600], err[512] = "";
    st_file f;
    int rc;
    snprintf(path, sizeof path, "%s/bad.safetensors", tmpdir);
    make(path, header, hlen, data_len);
    rc = st_open(&f, path, err, sizeof err);
    CHECK(rc == -1, "%s: accepted", label);
    CHECK(rc == -1 && strstr(err, want) && strstr(err, path), "%s: message '%s' lacks '%s' or the path", label, err, want);
    CHECK(f.n == 0 && f.tensors == NULL && f.fp == NULL, "%s: st_file not left empty", label);
    printf("  %-34s -> %s\n", label, err);
    st_close(&f);
}

static void test_bad_files(void) {
    char path[600], err[512];
    st_file f;
    char big[400];
    FILE *fp;
    snprintf(path, sizeof path, "%s/bad.safetensors", tmpdir);
    fp = fopen(path, "wb"); fclose(fp);
    CHECK(st_open(&f, path, err, sizeof err) == -1 && strstr(err, "too short"), "empty file: %s", err);
    fp = fopen(path, "wb"); fwrite("abcde", 1, 5, fp); fclose(fp);
    CHECK(st_open(&f, path, err, sizeof err) == -1 && strstr(err, "too short"), "5-byte file: %s", err);
    CHECK(st_open(&f, "/nonexistent/x.safetensors", err, sizeof err) == -1 && strstr(err, "cannot open"), "missing file: %s", err);

#define T1 "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}"
    expect_bad("header length past end of file", T1, 4096, 24, "past the end");
    expect_bad("header length over the cap", T1, 200000000ull, 24, "exceeds");
    expect_bad("header length 2^63", T1, 1ull << 63, 24, "exceeds");
    expect_bad("truncated data", T1, 0, 20, "past the end of the data buffer");
    expect_bad("trailing bytes", T1, 0, 30, "trailing");
    expect_bad("bad JSON", "{\"t\":{\"dtype\":\"F32\",}}", 0, 0, "not valid JSON");
    expect_bad("header not an object", "[1,2,3]", 0, 0, "expected an object");
    expect_bad("entry not an object", "{\"t\":5}", 0, 0, "expected an object");
    expect_bad("unknown dtype", "{\"t\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8, "unknown dtype");
    expect_bad("missing dtype", "{\"t\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8, "dtype");
    expect_bad("shape x dtype != byte range", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 0, 20, "need 24 bytes");
    expect_bad("wrong dtype for the range", "{\"t\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 0, 24, "need 12 bytes");
    expect_bad("overlapping offsets",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 0, 12, "overlap");
    expect_bad("gap between tensors",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 0, 20, "gap");
    expect_bad("offsets out of range", "{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[1000,1016]}}", 0, 16, "past the end");
    expect_bad("end before begin", "{\"t\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 0, 8, "< begin");
    expect_bad("data_offsets wrong arity", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 0, 8, "data_offsets");
    expect_bad("negative offset", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 0, 8, "data_offsets");
    expect_bad("huge shape overflows", "{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,8]}}", 0, 8, "overflows");
    expect_bad("shape x dtype overflows", "{\"t\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 0, 8, "overflows");
    expect_bad("huge but consistent shape", "{\"t\":{\"dtype\":\"U8\",\"shape\":[1000000,1000000],\"data_offsets\":[0,1000000000000]}}", 0, 8, "past the end");
    expect_bad("negative dim", "{\"t\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 0, 8, "shape[0]");
    expect_bad("fractional dim", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 0, 8, "shape[0]");
    expect_bad("too many dims", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 0, 8, "dimensions");
    expect_bad("shape not an array", "{\"t\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 0, 8, "shape");
    expect_bad("duplicate name",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 0, 16, "twice");
    expect_bad("metadata value not a string", "{\"__metadata__\":{\"n\":1},\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8, "strings");
    expect_bad("metadata not an object", "{\"__metadata__\":[],\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8, "__metadata__");
    memset(big, 'n', 300); big[300] = 0;
    {
        char hdr[600];
        snprintf(hdr, sizeof hdr, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", big);
        expect_bad("name too long", hdr, 0, 8, "longer than");
    }
    expect_bad("header cut short (length lies low)", T1, 30, 24, "not valid JSON");
    expect_bad("header length 1", T1, 1, 24, "too small");
    /* Invalid BOOL byte is caught at read time with the element index. */
    {
        const char *h = "{\"m\":{\"dtype\":\"BOOL\",\"shape\":[8],\"data_offsets\":[0,8]}}";
        int32_t out[8];
        make(path, h, 0, 8); /* byte 3 is 2 */
        if (st_open(&f, path, err, sizeof err) == 0) {
            CHECK(st_read_i32(&f, &f.tensors[0], out, err, sizeof err) == -1 && strstr(err, "element 3"), "BOOL byte 2: %s", err);
            st_close(&f);
        } else CHECK(0, "BOOL file: %s", err);
    }
    /* A valid file truncated after opening: the read reports it instead of returning garbage
     * (1 MB of data, so the read goes past what stdio buffered while reading the header). */
    {
        float *out = (float *)malloc(262144 * sizeof(float));
        make(path, "{\"t\":{\"dtype\":\"F32\",\"shape\":[262144],\"data_offsets\":[0,1048576]}}", 0, 1048576);
        if (st_open(&f, path, err, sizeof err) == 0) {
            CHECK(truncate(path, 500000) == 0, "truncate");
            CHECK(st_read_f32(&f, &f.tensors[0], out, err, sizeof err) == -1 && strstr(err, "short read"), "truncated while open: %s", err);
            st_close(&f);
        } else CHECK(0, "1 MB file: %s", err);
        free(out);
    }
    /* The largest legal header (100 MB) is accepted only up to the cap: 100 MB + 1 refused. */
    expect_bad("header length cap + 1", T1, 100000001ull, 24, "exceeds");
}

/* ---- 5. random damage: byte flips in the length + header, and truncations ---- */
static void test_fuzz(void) {
    char path[600], src[600], err[512];
    unsigned char *orig, *b;
    size_t n, hdr_end;
    long sz;
    uint32_t s = 2024;
    int it, opened = 0, refused = 0;
    FILE *fp;
    snprintf(src, sizeof src, "%s/rt.safetensors", tmpdir);
    snprintf(path, sizeof path, "%s/fuzz.safetensors", tmpdir);
    fp = fopen(src, "rb");
    if (!fp) { CHECK(0, "no %s for fuzzing", src); return; }
    fseek(fp, 0, SEEK_END); sz = ftell(fp); fseek(fp, 0, SEEK_SET);
    n = (size_t)sz;
    orig = (unsigned char *)malloc(n);
    b = (unsigned char *)malloc(n);
    if (fread(orig, 1, n, fp) != n) { CHECK(0, "read"); fclose(fp); free(orig); free(b); return; }
    fclose(fp);
    hdr_end = 8 + (size_t)orig[0] + ((size_t)orig[1] << 8);
    for (it = 0; it < 3000; it++) {
        size_t len = n;
        int k, flips;
        st_file f;
        memcpy(b, orig, n);
        s = s * 1664525u + 1013904223u;
        if (s % 5 == 0) len = (s >> 8) % n; /* truncation */
        flips = 1 + (int)((s >> 4) % 4);
        for (k = 0; k < flips; k++) {
            s = s * 1664525u + 1013904223u;
            b[(s >> 8) % hdr_end] = (unsigned char)(s >> 24);
        }
        remove(path); /* rewriting in place would trip ext4's flush-on-truncate: seconds of fsync */
        fp = fopen(path, "wb");
        fwrite(b, 1, len, fp);
        fclose(fp);
        if (st_open(&f, path, err, sizeof err) == 0) {
            /* whatever st_open accepts must be readable within its promises */
            for (k = 0; k < f.n; k++) {
                const st_tensor *t = &f.tensors[k];
                void *buf = malloc((size_t)(t->end - t->begin) + 1);
                float *fb = (float *)malloc(st_numel(t) * sizeof(float) + 1);
                CHECK(st_read_raw(&f, t, buf, err, sizeof err) == 0, "fuzz %d: accepted file unreadable: %s", it, err);
                if (!strcmp(t->dtype, "F32") || !strcmp(t->dtype, "BF16") || !strcmp(t->dtype, "F16") || !strcmp(t->dtype, "F64"))
                    CHECK(st_read_f32(&f, t, fb, err, sizeof err) == 0, "fuzz %d: %s", it, err);
                free(buf);
                free(fb);
            }
            st_close(&f);
            opened++;
        } else {
            CHECK(err[0] != 0 && strstr(err, path), "fuzz %d: refused without a message naming the file", it);
            refused++;
        }
    }
    remove(path);
    printf("  fuzz: 3000 damaged copies, %d refused with a message, %d still valid and read fully\n", refused, opened);
    free(orig);
    free(b);
}

int main(int argc, char **argv) {
    const char *fixtures = argc > 1 ? argv[1] : "tests/fixtures/checkpoint";
    if (argc > 2) snprintf(tmpdir, sizeof tmpdir, "%s", argv[2]);
    test_conversions();
    test_roundtrip();
    test_reference_fixture(fixtures);
    test_bad_files();
    test_fuzz();
    if (failures) { printf("%d check(s) failed\n", failures); return 1; }
    printf("all safetensors checks passed\n");
    return 0;
}
