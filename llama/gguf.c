/* llama/gguf.c - GGUF (llama.cpp) Llama files into a llama_model. See gguf.h.
 *
 * GGUF layout (v2/v3, little-endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv
 * metadata pairs (string key, u32 type, value); n_tensors infos (string name, u32 n_dims,
 * u64 ne[n_dims] innermost first, u32 ggml type, u64 offset); padding to general.alignment
 * (default 32); the data. A string is u64 length + bytes. A matrix with ne = [in, out] is
 * stored row by row, out rows of in elements: Hugging Face's [out, in] as is.
 */
#define _POSIX_C_SOURCE 200809L /* fseeko, ftello */
#include "../util.h"
#include "gguf.h"
#include "safetensors.h"
#include "../clair.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>


/* ---- a bounds-checked sequential reader ---------------------------------------------- */

typedef struct {
    FILE *fp;
    const char *path;
    uint64_t size, pos;
    char *err;
    size_t errsz;
} rd;

static int rd_bytes(rd *r, void *dst, uint64_t n, const char *what) {
    if (n > r->size - r->pos) return errf(r->err, r->errsz, "%s: truncated while reading %s (at byte %llu of %llu)", r->path, what,
                                             (unsigned long long)r->pos, (unsigned long long)r->size);
    if (dst) {
        if (fread(dst, 1, (size_t)n, r->fp) != (size_t)n) return errf(r->err, r->errsz, "%s: read error in %s", r->path, what);
    } else if (fseeko(r->fp, (off_t)(r->pos + n), SEEK_SET)) {
        return errf(r->err, r->errsz, "%s: seek failed: %s", r->path, strerror(errno));
    }
    r->pos += n;
    return 0;
}

static uint64_t le(const unsigned char *p, int n) {
    uint64_t v = 0;
    while (n--) v = (v << 8) | p[n];
    return v;
}

static int rd_u32(rd *r, uint32_t *v, const char *what) {
    unsigned char b[4];
    if (rd_bytes(r, b, 4, what)) return -1;
    *v = (uint32_t)le(b, 4);
    return 0;
}

static int rd_u64(rd *r, uint64_t *v, const char *what) {
    unsigned char b[8];
    if (rd_bytes(r, b, 8, what)) return -1;
    *v = le(b, 8);
    return 0;
}

/* A string into buf (NUL-terminated, cap bytes) or skipped when buf is NULL or too small
 * (then *too_long is set). */
static int rd_str(rd *r, char *buf, size_t cap, int *too_long, const char *what) {
    uint64_t n;
    if (rd_u64(r, &n, what)) return -1;
    if (too_long) *too_long = 0;
    if (!buf || n >= cap) {
        if (too_long) *too_long = 1;
        return rd_bytes(r, NULL, n, what);
    }
    if (rd_bytes(r, buf, n, what)) return -1;
    buf[n] = 0;
    return 0;
}

/* ---- metadata -------------------------------------------------------------------------- */

enum { GT_U8, GT_I8, GT_U16, GT_I16, GT_U32, GT_I32, GT_F32, GT_BOOL, GT_STRING, GT_ARRAY, GT_U64, GT_I64, GT_F64, GT_COUNT };
static const int gt_size[GT_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
static const char *const gt_name[GT_COUNT] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};

static int gt_is_int(int type) {
    return type == GT_U8 || type == GT_I8 || type == GT_U16 || type == GT_I16 || type == GT_U32 || type == GT_I32 ||
           type == GT_U64 || type == GT_I64;
}

/* The keys this reader uses; every other key is skipped unread. A kept value is checked for
 * its type and range where it is used (meta_int, meta_num, meta_str), never converted blindly:
 * a NaN or 1.5 where an integer belongs is an error naming the key. */
enum {
    K_ALIGNMENT, K_ARCH, K_ROPE_SCALING, K_VOCAB, K_LAYERS, K_HIDDEN, K_FFN, K_HEADS, K_KV_HEADS, K_CONTEXT,
    K_FREQ_BASE, K_EPS, K_KEY_LENGTH, K_BOS, K_EOS, K_ROPE_DIMS, K_COUNT
};
static const char *const meta_keys[K_COUNT] = {
    "general.alignment", "general.architecture", "llama.rope.scaling.type", "llama.vocab_size", "llama.block_count",
    "llama.embedding_length", "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
    "llama.context_length", "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon", "llama.attention.key_length",
    "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "llama.rope.dimension_count",
};

typedef struct {
    int present;
    int type;          /* GT_* */
    int64_t i;         /* integer types */
    int big;           /* a u64 above INT64_MAX, kept in u */
    uint64_t u;
    double num;        /* every numeric type, as a double */
    char str[96];      /* GT_STRING */
    int long_str;      /* GT_STRING longer than str */
} gg_meta;

static int read_scalar(rd *r, gg_meta *e) {
    unsigned char b[8];
    uint64_t u;
    if (rd_bytes(r, b, (uint64_t)gt_size[e->type], "a metadata value")) return -1;
    u = le(b, gt_size[e->type]);
    switch (e->type) {
    case GT_I8: e->i = (int8_t)u; break;
    case GT_I16: e->i = (int16_t)u; break;
    case GT_I32: e->i = (int32_t)u; break;
    case GT_I64: e->i = (int64_t)u; break;
    case GT_U64: e->big = u > (uint64_t)INT64_MAX; e->u = u; e->i = e->big ? INT64_MAX : (int64_t)u; break;
    case GT_F32: { uint32_t w = (uint32_t)u; float f; memcpy(&f, &w, 4); e->num = f; return 0; }
    case GT_F64: { double d; memcpy(&d, &u, 8); e->num = d; return 0; }
    default: e->i = (int64_t)u;
    }
    e->num = e->big ? (double)u : (double)e->i;
    return 0;
}

static int skip_value(rd *r, uint32_t type, int depth) {
    if (type < GT_COUNT && gt_size[type]) return rd_bytes(r, NULL, (uint64_t)gt_size[type], "a metadata value");
    if (type == GT_STRING) return rd_str(r, NULL, 0, NULL, "a metadata string");
    if (type == GT_ARRAY && depth < 4) {
        uint32_t et;
        uint64_t n, i;
        if (rd_u32(r, &et, "an array type") || rd_u64(r, &n, "an array length")) return -1;
        if (et < GT_COUNT && gt_size[et]) {
            if (n > (r->size - r->pos) / (uint64_t)gt_size[et]) return errf(r->err, r->errsz, "%s: metadata array of %llu elements runs past the end of the file", r->path, (unsigned long long)n);
            return rd_bytes(r, NULL, n * (uint64_t)gt_size[et], "an array");
        }
        if (n > r->size - r->pos) return errf(r->err, r->errsz, "%s: metadata array of %llu elements runs past the end of the file", r->path, (unsigned long long)n);
        for (i = 0; i < n; i++)
            if (skip_value(r, et, depth + 1)) return -1;
        return 0;
    }
    return errf(r->err, r->errsz, "%s: unknown metadata value type %u", r->path, type);
}

/* Reads the n_kv metadata pairs, keeping the values of meta_keys in meta[K_COUNT]. */
static int read_metadata(rd *r, uint64_t n_kv, gg_meta *meta) {
    uint64_t i;
    for (i = 0; i < n_kv; i++) {
        char key[96];
        uint32_t type;
        int long_key, k = K_COUNT;
        gg_meta *e;
        if (rd_str(r, key, sizeof key, &long_key, "a metadata key") || rd_u32(r, &type, "a metadata type")) return -1;
        if (!long_key)
            for (k = 0; k < K_COUNT && strcmp(key, meta_keys[k]); k++) {}
        if (k == K_COUNT) {
            if (skip_value(r, type, 0)) return -1;
            continue;
        }
        e = &meta[k];
        if (e->present) return errf(r->err, r->errsz, "%s: metadata key %s appears twice", r->path, key);
        if (type >= GT_COUNT) return errf(r->err, r->errsz, "%s: metadata %s has unknown value type %u", r->path, key, type);
        e->present = 1;
        e->type = (int)type;
        if (gt_size[type]) {
            if (read_scalar(r, e)) return -1;
        } else if (type == GT_STRING) {
            if (rd_str(r, e->str, sizeof e->str, &e->long_str, "a metadata string")) return -1;
        } else if (skip_value(r, type, 0)) { /* an array: refused where the key is used */
            return -1;
        }
    }
    return 0;
}

/* "a f32 (nan)", "a string", ... : what a metadata value is, for messages. */
static void meta_describe(const gg_meta *e, char *buf, size_t n) {
    if (e->type == GT_F32 || e->type == GT_F64) fmt(buf, n, "a %s (%g)", gt_name[e->type], e->num);
    else if (e->type == GT_STRING) fmt(buf, n, "a string (\"%s\")", e->long_str ? "..." : e->str);
    else fmt(buf, n, "a%s %s", e->type == GT_ARRAY ? "n" : "", gt_name[e->type]);
}

/* Metadata key k as an integer in [lo, hi]: 1 and *out set; 0 when absent; -1 (message) when it
 * is not an integer type or out of range. */
static int meta_int(const rd *r, const gg_meta *meta, int k, long long lo, long long hi, long long *out) {
    const gg_meta *e = &meta[k];
    char what[140];
    if (!e->present) return 0;
    if (!gt_is_int(e->type)) {
        meta_describe(e, what, sizeof what);
        return errf(r->err, r->errsz, "%s: metadata %s is %s; expected an integer in [%lld, %lld]", r->path, meta_keys[k], what, lo, hi);
    }
    if (e->big || e->i < lo || e->i > hi) {
        if (e->big) fmt(what, sizeof what, "%llu", (unsigned long long)e->u);
        else fmt(what, sizeof what, "%lld", (long long)e->i);
        return errf(r->err, r->errsz, "%s: metadata %s = %s is out of range [%lld, %lld]", r->path, meta_keys[k], what, lo, hi);
    }
    *out = (long long)e->i;
    return 1;
}

/* Metadata key k as a finite number: 1, 0 when absent, -1 (message) otherwise. */
static int meta_num(const rd *r, const gg_meta *meta, int k, double *out) {
    const gg_meta *e = &meta[k];
    char what[140];
    if (!e->present) return 0;
    if (!gt_is_int(e->type) && e->type != GT_F32 && e->type != GT_F64) {
        meta_describe(e, what, sizeof what);
        return errf(r->err, r->errsz, "%s: metadata %s is %s; expected a number", r->path, meta_keys[k], what);
    }
    if (!isfinite(e->num)) return errf(r->err, r->errsz, "%s: metadata %s = %g; expected a finite number", r->path, meta_keys[k], e->num);
    *out = e->num;
    return 1;
}

/* Metadata key k as a string: 1 and *out, 0 when absent, -1 (message) otherwise. */
static int meta_str(const rd *r, const gg_meta *meta, int k, const char **out) {
    const gg_meta *e = &meta[k];
    char what[140];
    if (!e->present) return 0;
    if (e->type != GT_STRING || e->long_str) {
        if (e->long_str) fmt(what, sizeof what, "a string longer than %zu bytes", sizeof e->str - 1);
        else meta_describe(e, what, sizeof what);
        return errf(r->err, r->errsz, "%s: metadata %s is %s; expected a short string", r->path, meta_keys[k], what);
    }
    *out = e->str;
    return 1;
}

/* The layout's data alignment, the architecture and rope scaling: what decides whether and how
 * the rest can be read. */
static int check_general(const rd *r, const gg_meta *meta, uint32_t *alignment) {
    long long a = 32;
    const char *s = NULL;
    int got = meta_int(r, meta, K_ALIGNMENT, 1, 65536, &a);
    if (got < 0) return -1;
    if (a & (a - 1)) return errf(r->err, r->errsz, "%s: metadata general.alignment = %lld is not a power of two", r->path, a);
    *alignment = (uint32_t)a;
    got = meta_str(r, meta, K_ARCH, &s);
    if (got < 0) return -1;
    if (!got || strcmp(s, "llama"))
        return errf(r->err, r->errsz, "%s: general.architecture is \"%s\"; only \"llama\" is supported", r->path, got ? s : "(missing)");
    got = meta_str(r, meta, K_ROPE_SCALING, &s);
    if (got < 0) return -1;
    if (got && strcmp(s, "none"))
        return errf(r->err, r->errsz, "%s: llama.rope.scaling.type is \"%s\"; rope scaling in GGUF files is not supported (convert the Hugging Face checkpoint instead)",
                    r->path, s);
    return 0;
}

/* The config: built as config.json text and put through llama_config_parse, so a GGUF gets
 * exactly the same checks as a Hugging Face checkpoint. Each value is checked for its type and
 * for being finite first, so that the text is always valid JSON. */
static int gguf_config(const rd *r, const gg_meta *meta, uint64_t vocab_rows, int tied, llama_config *cfg) {
    static const struct { int key; const char *hf; int is_float; } keys[] = {
        {K_LAYERS, "num_hidden_layers", 0}, {K_HIDDEN, "hidden_size", 0}, {K_FFN, "intermediate_size", 0},
        {K_HEADS, "num_attention_heads", 0}, {K_KV_HEADS, "num_key_value_heads", 0}, {K_CONTEXT, "max_position_embeddings", 0},
        {K_FREQ_BASE, "rope_theta", 1}, {K_EPS, "rms_norm_eps", 1}, {K_KEY_LENGTH, "head_dim", 0},
        {K_BOS, "bos_token_id", 0}, {K_EOS, "eos_token_id", 0},
    };
    clair_buf cj;
    char what[600];
    long long v = (long long)vocab_rows;
    size_t k;
    int rc = -1, got;
    memset(&cj, 0, sizeof cj);
    if (meta_int(r, meta, K_VOCAB, 1, INT32_MAX, &v) < 0) return -1;
    clair_buf_puts(&cj, "{\"model_type\":\"llama\",\"hidden_act\":\"silu\"");
    clair_buf_printf(&cj, ",\"vocab_size\":%lld,\"tie_word_embeddings\":%s", v, tied ? "true" : "false");
    for (k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        double x = 0;
        long long n = 0;
        if (keys[k].is_float) {
            if ((got = meta_num(r, meta, keys[k].key, &x)) < 0) goto done;
            if (got) clair_buf_printf(&cj, ",\"%s\":%.17g", keys[k].hf, x);
        } else {
            if ((got = meta_int(r, meta, keys[k].key, 0, INT32_MAX, &n)) < 0) goto done;
            if (got) clair_buf_printf(&cj, ",\"%s\":%lld", keys[k].hf, n);
        }
    }
    clair_buf_puts(&cj, "}");
    if (cj.oom) { errf(r->err, r->errsz, "%s: out of memory", r->path); goto done; }
    fmt(what, sizeof what, "%s (llama.* metadata read as config.json)", r->path);
    if (llama_config_parse(cj.data, cj.len, what, cfg, r->err, r->errsz)) goto done;
    {
        long long dims;
        if ((got = meta_int(r, meta, K_ROPE_DIMS, 0, INT32_MAX, &dims)) < 0) goto done;
        if (got && dims != cfg->head_dim) {
            errf(r->err, r->errsz, "%s: llama.rope.dimension_count %lld != head_dim %d (partial rotary is not supported)", r->path, dims, cfg->head_dim);
            goto done;
        }
    }
    rc = 0;
done:
    clair_buf_free(&cj);
    return rc;
}

/* ---- tensors --------------------------------------------------------------------------- */

enum {
    GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q5_0 = 6, GGML_Q5_1 = 7, GGML_Q8_0 = 8,
    GGML_Q2_K = 10, GGML_Q3_K = 11, GGML_Q4_K = 12, GGML_Q5_K = 13, GGML_Q6_K = 14, GGML_BF16 = 30
};

typedef struct {
    char name[96];
    uint32_t n_dims, type;
    uint64_t ne[4];
    uint64_t offset, nbytes;
} gg_tensor;

/* elements per block and bytes per block of a ggml type; 0 if we do not read it */
static int type_block(uint32_t type, uint64_t *elems, uint64_t *bytes) {
    switch (type) {
    case GGML_F32: *elems = 1; *bytes = 4; return 1;
    case GGML_F16: case GGML_BF16: *elems = 1; *bytes = 2; return 1;
    case GGML_Q4_0: *elems = 32; *bytes = 18; return 1;
    case GGML_Q4_1: *elems = 32; *bytes = 20; return 1;
    case GGML_Q5_0: *elems = 32; *bytes = 22; return 1;
    case GGML_Q5_1: *elems = 32; *bytes = 24; return 1;
    case GGML_Q8_0: *elems = 32; *bytes = 34; return 1;
    /* the K-quants: super-blocks of 256 (ggml's block_q2_K ... block_q6_K) */
    case GGML_Q2_K: *elems = 256; *bytes = 84; return 1;
    case GGML_Q3_K: *elems = 256; *bytes = 110; return 1;
    case GGML_Q4_K: *elems = 256; *bytes = 144; return 1;
    case GGML_Q5_K: *elems = 256; *bytes = 176; return 1;
    case GGML_Q6_K: *elems = 256; *bytes = 210; return 1;
    default: return 0;
    }
}

static uint16_t u16le(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

/* The 32-element blocks, exactly as ggml's dequantize_row_* (and the gguf package) compute them
 * in fp32: Q8_0 d*q; Q4_0 d*(q-8); Q4_1 d*q + m; Q5_0 d*(q-16); Q5_1 d*q + m, the fifth bit of
 * element j being bit j of the block's 32-bit qh. Within a block the first 16 elements are the
 * low nibbles of the 16 bytes, the next 16 the high nibbles. */
static void dequant_q4_q5(uint32_t type, const unsigned char *src, float *dst) {
    int has_min = type == GGML_Q4_1 || type == GGML_Q5_1, five = type == GGML_Q5_0 || type == GGML_Q5_1;
    float d = st_f16_to_f32(u16le(src)), m = has_min ? st_f16_to_f32(u16le(src + 2)) : 0.0f;
    const unsigned char *q = src + (has_min ? 4 : 2);
    uint32_t qh = 0;
    int j, offset = type == GGML_Q4_0 ? 8 : type == GGML_Q5_0 ? 16 : 0;
    if (five) { qh = (uint32_t)le(q, 4); q += 4; }
    for (j = 0; j < 16; j++) {
        int lo = (q[j] & 15) | (five ? (int)((qh >> j) & 1) << 4 : 0);
        int hi = (q[j] >> 4) | (five ? (int)((qh >> (j + 16)) & 1) << 4 : 0);
        if (has_min) {
            dst[j] = d * (float)lo + m;
            dst[j + 16] = d * (float)hi + m;
        } else {
            dst[j] = d * (float)(lo - offset);
            dst[j + 16] = d * (float)(hi - offset);
        }
    }
}

/* Q4_K / Q5_K: 8 sub-blocks of 32, each with a 6-bit scale and a 6-bit min packed in 12 bytes
 * (ggml's get_scale_min_k4). */
static void kq_scale_min(int j, const unsigned char *q, int *sc, int *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 15) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Q2_K: scales[16] (4-bit scale | 4-bit min), qs[64] (2 bits each), d, dmin. */
static void dequant_q2_k(const unsigned char *x, float *y) {
    const unsigned char *sc = x, *q = x + 16;
    float d = st_f16_to_f32(u16le(x + 80)), dmin = st_f16_to_f32(u16le(x + 82));
    int n, j, l, is = 0;
    for (n = 0; n < 256; n += 128, q += 32)
        for (j = 0; j < 8; j++, is++) {  /* shift 2*(j/2); the 16 bytes at q + 16*(j%2) */
            float dl = d * (float)(sc[is] & 15), ml = dmin * (float)(sc[is] >> 4);
            for (l = 0; l < 16; l++) *y++ = dl * (float)((q[l + 16 * (j & 1)] >> (2 * (j >> 1))) & 3) - ml;
        }
}

/* Q3_K: hmask[32] (the third bit, clear = minus 4), qs[64] (2 bits), scales[12] (16 6-bit
 * scales, offset 32), d. */
static void dequant_q3_k(const unsigned char *x, float *y) {
    const unsigned char *hm = x, *q = x + 32, *s = x + 96;
    float d = st_f16_to_f32(u16le(x + 108));
    int sc[16], n, j, l, is = 0, bit = 0;
    for (j = 0; j < 16; j++) {   /* low 4 bits from s[0..8), high 2 bits from s[8..12) */
        int low = j < 8 ? s[j] & 15 : s[j - 8] >> 4;
        sc[j] = (low | (((s[8 + (j & 3)] >> (2 * (j >> 2))) & 3) << 4)) - 32;
    }
    for (n = 0; n < 256; n += 128, q += 32)
        for (j = 0; j < 8; j++, is++) {
            int half = 16 * (j & 1), shift = 2 * (j >> 1);
            float dl = d * (float)sc[is];
            for (l = 0; l < 16; l++)
                *y++ = dl * (float)(((q[l + half] >> shift) & 3) - ((hm[l + half] >> bit) & 1 ? 0 : 4));
            if (j & 1) bit++;
        }
}

/* Q4_K (d, dmin, scales[12], qs[128]) and Q5_K (the same plus qh[32], the fifth bit). */
static void dequant_q45_k(int five, const unsigned char *x, float *y) {
    float d = st_f16_to_f32(u16le(x)), dmin = st_f16_to_f32(u16le(x + 2));
    const unsigned char *s = x + 4, *qh = x + 16, *q = x + (five ? 48 : 16);
    int j, l, is = 0, sc, mn;
    for (j = 0; j < 256; j += 64, q += 32, is += 2) {
        float d1, m1, d2, m2;
        kq_scale_min(is, s, &sc, &mn);
        d1 = d * (float)sc; m1 = dmin * (float)mn;
        kq_scale_min(is + 1, s, &sc, &mn);
        d2 = d * (float)sc; m2 = dmin * (float)mn;
        for (l = 0; l < 32; l++) *y++ = d1 * (float)((q[l] & 15) + (five && (qh[l] >> is) & 1 ? 16 : 0)) - m1;
        for (l = 0; l < 32; l++) *y++ = d2 * (float)((q[l] >> 4) + (five && (qh[l] >> (is + 1)) & 1 ? 16 : 0)) - m2;
    }
}

/* Q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (int8), d; value q - 32. */
static void dequant_q6_k(const unsigned char *x, float *y) {
    const unsigned char *ql = x, *qh = x + 128;
    const signed char *sc = (const signed char *)(x + 192);
    float d = st_f16_to_f32(u16le(x + 208));
    int n, l;
    for (n = 0; n < 256; n += 128, y += 128, ql += 64, qh += 32, sc += 8)
        for (l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * (float)sc[is] * (float)q1;
            y[l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
}

/* Dequantises n elements (a multiple of the block size) from src into dst. */
static void dequantize(uint32_t type, const unsigned char *src, float *dst, size_t n) {
    uint64_t be = 1, bb = 1;
    size_t i, b;
    type_block(type, &be, &bb);
    switch (type) {
    case GGML_F32:
        for (i = 0; i < n; i++) { uint32_t u = (uint32_t)le(src + 4 * i, 4); memcpy(&dst[i], &u, 4); }
        return;
    case GGML_F16: for (i = 0; i < n; i++) dst[i] = st_f16_to_f32(u16le(src + 2 * i)); return;
    case GGML_BF16: for (i = 0; i < n; i++) dst[i] = st_bf16_to_f32(u16le(src + 2 * i)); return;
    }
    for (b = 0; b < n / be; b++, src += bb, dst += be) {
        switch (type) {
        case GGML_Q8_0: {
            float d = st_f16_to_f32(u16le(src));
            for (i = 0; i < 32; i++) dst[i] = d * (float)(int8_t)src[2 + i];
            break;
        }
        case GGML_Q4_0: case GGML_Q4_1: case GGML_Q5_0: case GGML_Q5_1: dequant_q4_q5(type, src, dst); break;
        case GGML_Q2_K: dequant_q2_k(src, dst); break;
        case GGML_Q3_K: dequant_q3_k(src, dst); break;
        case GGML_Q4_K: dequant_q45_k(0, src, dst); break;
        case GGML_Q5_K: dequant_q45_k(1, src, dst); break;
        case GGML_Q6_K: dequant_q6_k(src, dst); break;
        }
    }
}

int gguf_dequantize(unsigned type, const void *src, size_t src_bytes, float *dst, size_t n) {
    uint64_t be, bb;
    if (!type_block(type, &be, &bb) || n % be || src_bytes != n / be * bb) return -1;
    dequantize(type, (const unsigned char *)src, dst, n);
    return 0;
}

/* llama.cpp tensor name -> Hugging Face name; 0 if it is not a Llama weight we know. */
static int hf_name(const char *g, char *out, size_t cap) {
    static const char *blk[][2] = {
        {"attn_norm", "input_layernorm"}, {"attn_q", "self_attn.q_proj"}, {"attn_k", "self_attn.k_proj"},
        {"attn_v", "self_attn.v_proj"}, {"attn_output", "self_attn.o_proj"}, {"ffn_norm", "post_attention_layernorm"},
        {"ffn_gate", "mlp.gate_proj"}, {"ffn_up", "mlp.up_proj"}, {"ffn_down", "mlp.down_proj"},
    };
    int layer = 0, len = 4;
    size_t i;
    if (!strcmp(g, "token_embd.weight")) { snprintf(out, cap, "model.embed_tokens.weight"); return 1; }
    if (!strcmp(g, "output_norm.weight")) { snprintf(out, cap, "model.norm.weight"); return 1; }
    if (!strcmp(g, "output.weight")) { snprintf(out, cap, "lm_head.weight"); return 1; }
    /* "blk.<layer>.": digits by hand (sscanf's %d is undefined on overflow); at most 7 digits,
     * far above any layer count the config allows */
    if (strncmp(g, "blk.", 4)) return 0;
    while (g[len] >= '0' && g[len] <= '9' && len < 4 + 7) layer = layer * 10 + (g[len++] - '0');
    if (len == 4 || g[len] != '.') return 0;
    len++;
    for (i = 0; i < sizeof blk / sizeof blk[0]; i++) {
        size_t k = strlen(blk[i][0]);
        if (!strncmp(g + len, blk[i][0], k) && !strcmp(g + len + k, ".weight")) {
            snprintf(out, cap, "model.layers.%d.%s.weight", layer, blk[i][1]);
            return 1;
        }
    }
    return 0;
}

/* Rows of w [n_head*hd, cols] from llama.cpp's interleaved-pairs order back to rotate-half:
 * HF row (h, half, i) = GGUF row h*hd + 2*i + half. */
static int unpermute_rows(float *w, int n_head, int hd, size_t cols) {
    float *tmp = (float *)malloc((size_t)hd * cols * sizeof *tmp);
    int h, half, i;
    if (!tmp) return -1;
    for (h = 0; h < n_head; h++) {
        float *head = w + (size_t)h * hd * cols;
        memcpy(tmp, head, (size_t)hd * cols * sizeof *tmp);
        for (half = 0; half < 2; half++)
            for (i = 0; i < hd / 2; i++)
                memcpy(head + (size_t)(half * (hd / 2) + i) * cols, tmp + (size_t)(2 * i + half) * cols, cols * sizeof *tmp);
    }
    free(tmp);
    return 0;
}

/* ---- the loader ------------------------------------------------------------------------ */

/* n tensor infos, then their sizes and byte ranges (overflow-checked, inside the file). */
static int read_tensor_infos(rd *r, gg_tensor *ts, uint64_t n, uint32_t alignment, uint64_t *data_start) {
    uint64_t i;
    for (i = 0; i < n; i++) {
        gg_tensor *t = &ts[i];
        int long_name;
        uint32_t d;
        if (rd_str(r, t->name, sizeof t->name, &long_name, "a tensor name")) return -1;
        if (long_name) return errf(r->err, r->errsz, "%s: tensor %llu has a name longer than %zu bytes", r->path, (unsigned long long)i, sizeof t->name - 1);
        if (rd_u32(r, &t->n_dims, "a tensor's dimension count")) return -1;
        if (t->n_dims < 1 || t->n_dims > 4) return errf(r->err, r->errsz, "%s: tensor '%s' has %u dimensions", r->path, t->name, t->n_dims);
        for (d = 0; d < t->n_dims; d++)
            if (rd_u64(r, &t->ne[d], "a tensor dimension")) return -1;
        if (rd_u32(r, &t->type, "a tensor type") || rd_u64(r, &t->offset, "a tensor offset")) return -1;
    }
    *data_start = (r->pos + alignment - 1) / alignment * alignment;
    if (*data_start > r->size) return errf(r->err, r->errsz, "%s: truncated before the tensor data", r->path);
    for (i = 0; i < n; i++) {
        gg_tensor *t = &ts[i];
        uint64_t be, bb, numel = 1;
        uint32_t d;
        if (!type_block(t->type, &be, &bb))
            return errf(r->err, r->errsz, "%s: tensor '%s' has ggml type %u; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, "
                        "Q2_K, Q3_K, Q4_K, Q5_K, Q6_K", r->path, t->name, t->type);
        for (d = 0; d < t->n_dims; d++) {
            if (t->ne[d] == 0 || t->ne[d] > ((uint64_t)1 << 32) || numel > (((uint64_t)1 << 40) / t->ne[d]))
                return errf(r->err, r->errsz, "%s: tensor '%s' has an absurd shape", r->path, t->name);
            numel *= t->ne[d];
        }
        if (t->ne[0] % be)
            return errf(r->err, r->errsz, "%s: tensor '%s': row length %llu is not a multiple of the block size %llu", r->path, t->name,
                        (unsigned long long)t->ne[0], (unsigned long long)be);
        t->nbytes = numel / be * bb;
        if (t->offset % alignment)
            return errf(r->err, r->errsz, "%s: tensor '%s' data offset %llu is not a multiple of general.alignment (%u)", r->path, t->name,
                        (unsigned long long)t->offset, alignment);
        if (t->offset > r->size - *data_start || t->nbytes > r->size - *data_start - t->offset)
            return errf(r->err, r->errsz, "%s: tensor '%s' data [%llu, +%llu) runs past the end of the file (truncated?)", r->path, t->name,
                        (unsigned long long)t->offset, (unsigned long long)t->nbytes);
        if (!strcmp(t->name, "rope_freqs.weight"))
            return errf(r->err, r->errsz, "%s: has rope_freqs.weight (llama3 rope scaling baked in); not supported by this importer", r->path);
    }
    return 0;
}

/* Matches each GGUF tensor to its place in the layout: names, shapes (GGUF ne reversed = HF
 * shape), each exactly once. Lookups go through the sorted layout names (n log n for any count). */
static int match_tensors(const rd *r, const gg_tensor *ts, uint64_t n, const llama_tensor_info *lay, int lay_n, int *of_layout) {
    st_name *names = (st_name *)calloc((size_t)lay_n + 1, sizeof *names);
    char *seen = (char *)calloc((size_t)lay_n + 1, 1);
    uint64_t i;
    int j, rc = -1;
    if (!names || !seen) { errf(r->err, r->errsz, "%s: out of memory", r->path); goto done; }
    for (j = 0; j < lay_n; j++) {
        names[j].name = lay[j].name;
        names[j].i = j;
    }
    st_names_sort(names, (size_t)lay_n);
    for (i = 0; i < n; i++) {
        char name[128];
        const gg_tensor *t = &ts[i];
        if (!hf_name(t->name, name, sizeof name)) {
            errf(r->err, r->errsz, "%s: unexpected tensor '%s' for a Llama model", r->path, t->name);
            goto done;
        }
        j = st_names_find(names, (size_t)lay_n, name);
        if (j < 0 || seen[j]) {
            errf(r->err, r->errsz, "%s: tensor '%s' (%s) %s", r->path, t->name, name, j < 0 ? "does not fit the config in the metadata" : "appears twice");
            goto done;
        }
        if ((int)t->n_dims != lay[j].ndim || (t->n_dims == 1 && (int64_t)t->ne[0] != lay[j].shape[0]) ||
            (t->n_dims == 2 && ((int64_t)t->ne[1] != lay[j].shape[0] || (int64_t)t->ne[0] != lay[j].shape[1]))) {
            errf(r->err, r->errsz, "%s: tensor '%s' has ne [%llu, %llu], but the metadata implies %s shape [%lld, %lld]", r->path, t->name,
                 (unsigned long long)t->ne[0], (unsigned long long)(t->n_dims > 1 ? t->ne[1] : 1), name,
                 (long long)lay[j].shape[0], (long long)lay[j].shape[1]);
            goto done;
        }
        seen[j] = 1;
        of_layout[i] = j;
    }
    for (j = 0; j < lay_n; j++)
        if (!seen[j]) { errf(r->err, r->errsz, "%s: no tensor for %s", r->path, lay[j].name); goto done; }
    rc = 0;
done:
    free(names);
    free(seen);
    return rc;
}

/* Reads and dequantises every tensor into m; then puts q/k rows back into Hugging Face's order. */
static int read_tensors(rd *r, const gg_tensor *ts, uint64_t n, const int *of_layout, uint64_t data_start, llama_model *m) {
    const llama_config *cfg = &m->cfg;
    unsigned char *raw = NULL;
    uint64_t i;
    int rc = -1;
    for (i = 0; i < n; i++) {
        const gg_tensor *t = &ts[i];
        const llama_tensor_info *ti = &m->tensors[of_layout[i]];
        float *dst = m->params + ti->offset;
        unsigned char *nr = (unsigned char *)realloc(raw, (size_t)t->nbytes);
        if (!nr) { errf(r->err, r->errsz, "%s: out of memory reading '%s'", r->path, t->name); goto done; }
        raw = nr;
        if (fseeko(r->fp, (off_t)(data_start + t->offset), SEEK_SET) || fread(raw, 1, (size_t)t->nbytes, r->fp) != (size_t)t->nbytes) {
            errf(r->err, r->errsz, "%s: read error in tensor '%s'", r->path, t->name);
            goto done;
        }
        dequantize(t->type, raw, dst, ti->numel);
        if (strstr(ti->name, "self_attn.q_proj.weight") || strstr(ti->name, "self_attn.k_proj.weight")) {
            int heads = strstr(ti->name, "q_proj") ? cfg->num_attention_heads : cfg->num_key_value_heads;
            if (unpermute_rows(dst, heads, cfg->head_dim, (size_t)cfg->hidden_size)) { errf(r->err, r->errsz, "%s: out of memory", r->path); goto done; }
        }
    }
    rc = 0;
done:
    free(raw);
    return rc;
}

/* Opens path (a regular file only) and reads the header up to the metadata: r is then at the
 * first metadata key. On failure r->fp is closed. */
static int open_gguf(rd *r, const char *path, uint64_t *n_tensors, uint64_t *n_kv, char *err, size_t errsz) {
    unsigned char magic[4];
    uint32_t version;
    off_t sz;
    memset(r, 0, sizeof *r);
    r->path = path; r->err = err; r->errsz = errsz;
    r->fp = st_fopen_regular(path, err, errsz);
    if (!r->fp) return -1;
    if (fseeko(r->fp, 0, SEEK_END) || (sz = ftello(r->fp)) < 0 || fseeko(r->fp, 0, SEEK_SET)) { errf(err, errsz, "%s: cannot determine size", path); goto fail; }
    r->size = (uint64_t)sz;
    if (rd_bytes(r, magic, 4, "the magic") || memcmp(magic, "GGUF", 4)) {
        if (r->pos == 4) errf(err, errsz, "%s: not a GGUF file (no GGUF magic)", path);
        goto fail;
    }
    if (rd_u32(r, &version, "the version")) goto fail;
    if (version < 2 || version > 3) { errf(err, errsz, "%s: GGUF version %u, only 2 and 3 are supported", path, version); goto fail; }
    if (rd_u64(r, n_tensors, "the tensor count") || rd_u64(r, n_kv, "the metadata count")) goto fail;
    /* every entry takes at least 8 bytes of file, so counts above size/8 are lies */
    if (*n_tensors > r->size / 8 || *n_kv > r->size / 8 || *n_tensors > 1000000) {
        errf(err, errsz, "%s: header claims %llu tensors and %llu metadata keys, impossible for a %llu byte file", path,
                (unsigned long long)*n_tensors, (unsigned long long)*n_kv, (unsigned long long)r->size);
        goto fail;
    }
    return 0;
fail:
    fclose(r->fp);
    r->fp = NULL;
    return -1;
}

int llama_model_load_gguf(llama_model *m, const char *path, char *err, size_t errsz) {
    rd r;
    uint32_t alignment = 32;
    uint64_t n_tensors, n_kv, i, data_start = 0;
    gg_meta meta[K_COUNT];
    int rc = -1, *of_layout = NULL, lay_n = 0;
    llama_tensor_info *lay = NULL;
    gg_tensor *ts = NULL;
    const gg_tensor *emb = NULL, *out = NULL;
    llama_config cfg;

    memset(m, 0, sizeof *m);
    memset(meta, 0, sizeof meta);
    if (open_gguf(&r, path, &n_tensors, &n_kv, err, errsz)) goto done;
    if (read_metadata(&r, n_kv, meta) || check_general(&r, meta, &alignment)) goto done;

    /* Tensor infos: each takes at least 32 bytes (name length, one dimension, type, offset). */
    if (n_tensors > (r.size - r.pos) / 32) {
        errf(err, errsz, "%s: header claims %llu tensors, but only %llu bytes follow the metadata", path, (unsigned long long)n_tensors,
             (unsigned long long)(r.size - r.pos));
        goto done;
    }
    ts = (gg_tensor *)calloc((size_t)n_tensors + 1, sizeof *ts);
    if (!ts) { errf(err, errsz, "%s: out of memory", path); goto done; }
    if (read_tensor_infos(&r, ts, n_tensors, alignment, &data_start)) goto done;

    for (i = 0; i < n_tensors; i++) {
        if (!strcmp(ts[i].name, "token_embd.weight")) emb = &ts[i];
        if (!strcmp(ts[i].name, "output.weight")) out = &ts[i];
    }
    if (!emb || emb->n_dims != 2) { errf(err, errsz, "%s: no 2-D token_embd.weight tensor", path); goto done; }
    if (gguf_config(&r, meta, emb->ne[1], out == NULL, &cfg)) goto done;

    /* Match tensors to the layout; only then allocate, so lying metadata cannot cost a huge
     * allocation. */
    lay_n = llama_layout(&cfg, NULL, NULL);
    lay = (llama_tensor_info *)calloc((size_t)lay_n + 1, sizeof *lay);
    of_layout = (int *)calloc((size_t)n_tensors + 1, sizeof *of_layout);
    if (!lay || !of_layout) { errf(err, errsz, "%s: out of memory", path); goto done; }
    llama_layout(&cfg, lay, NULL);
    if (match_tensors(&r, ts, n_tensors, lay, lay_n, of_layout)) goto done;

    if (llama_model_alloc(m, &cfg, err, errsz)) goto done;
    if (m->n_tensors != lay_n) { errf(err, errsz, "internal error: layout changed"); goto done; }
    if (read_tensors(&r, ts, n_tensors, of_layout, data_start, m)) goto done;
    rc = 0;
done:
    if (rc) llama_model_free(m);
    if (r.fp) fclose(r.fp);
    free(ts);
    free(of_layout);
    free(lay);
    return rc;
}

/* ---- the tokenizer in the metadata ------------------------------------------------------- */

/* n strings: string i is bytes[off[i] .. off[i + 1]) */
typedef struct { char *bytes; uint64_t *off; uint64_t n; } gg_strs;

typedef struct {
    char *model, *pre, *chat_template; /* NULL when absent */
    gg_strs tokens, merges;
    int32_t *types;
    uint64_t n_types;
    float *scores;                     /* sentencepiece vocabularies: a score per token */
    uint64_t n_scores;
    int no_space_prefix;               /* tokenizer.ggml.add_space_prefix = false */
    long long ids[4];                  /* bos, eos, unknown, padding; -1 when absent */
} gg_vocab;

static const char *const vocab_id_keys[4] = {
    "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
};

static void vocab_free(gg_vocab *v) {
    free(v->model); free(v->pre); free(v->chat_template);
    free(v->tokens.bytes); free(v->tokens.off);
    free(v->merges.bytes); free(v->merges.off);
    free(v->types);
    free(v->scores);
}

/* A string value of any length (the file bounds it), malloc'd and NUL-terminated. */
static int rd_str_alloc(rd *r, const char *key, char **out) {
    uint64_t n;
    if (rd_u64(r, &n, key)) return -1;
    if (n > r->size - r->pos) return errf(r->err, r->errsz, "%s: metadata %s: a string runs past the end of the file", r->path, key);
    *out = (char *)malloc((size_t)n + 1);
    if (!*out) return errf(r->err, r->errsz, "%s: out of memory reading %s", r->path, key);
    if (rd_bytes(r, *out, n, key)) return -1;
    (*out)[n] = 0;
    return 0;
}

/* An array of strings (type and length already checked against the file). */
static int rd_str_array(rd *r, const char *key, gg_strs *a) {
    uint32_t et;
    uint64_t n, i, cap = 4096, used = 0;
    if (rd_u32(r, &et, key) || rd_u64(r, &n, key)) return -1;
    if (et != GT_STRING) return errf(r->err, r->errsz, "%s: metadata %s is an array of %s; expected strings", r->path, key, et < GT_COUNT ? gt_name[et] : "?");
    if (n > (r->size - r->pos) / 8) return errf(r->err, r->errsz, "%s: metadata %s: %llu strings run past the end of the file", r->path, key, (unsigned long long)n);
    a->off = (uint64_t *)malloc(((size_t)n + 1) * sizeof *a->off);
    a->bytes = (char *)malloc((size_t)cap);
    if (!a->off || !a->bytes) return errf(r->err, r->errsz, "%s: out of memory reading %s", r->path, key);
    for (i = 0; i < n; i++) {
        uint64_t len;
        a->off[i] = used;
        if (rd_u64(r, &len, key)) return -1;
        if (len > r->size - r->pos) return errf(r->err, r->errsz, "%s: metadata %s[%llu] runs past the end of the file", r->path, key, (unsigned long long)i);
        if (used + len + 1 > cap) {
            char *nb;
            while (used + len + 1 > cap) cap *= 2;
            nb = (char *)realloc(a->bytes, (size_t)cap);
            if (!nb) return errf(r->err, r->errsz, "%s: out of memory reading %s", r->path, key);
            a->bytes = nb;
        }
        if (rd_bytes(r, a->bytes + used, len, key)) return -1;
        used += len;
    }
    a->off[n] = used;
    a->n = n;
    return 0;
}

/* One tokenizer.* key (type already read): 1 if it was ours and is read, 0 if not ours, -1. */
static int read_vocab_key(rd *r, const char *key, uint32_t type, gg_vocab *v) {
    char **strp = !strcmp(key, "tokenizer.ggml.model") ? &v->model : !strcmp(key, "tokenizer.ggml.pre") ? &v->pre
                : !strcmp(key, "tokenizer.chat_template") ? &v->chat_template : NULL;
    gg_strs *arr = !strcmp(key, "tokenizer.ggml.tokens") ? &v->tokens : !strcmp(key, "tokenizer.ggml.merges") ? &v->merges : NULL;
    int k;
    if (strp || arr) {
        if (type != (strp ? GT_STRING : GT_ARRAY)) return errf(r->err, r->errsz, "%s: metadata %s has type %s; expected %s", r->path, key,
                                                                  type < GT_COUNT ? gt_name[type] : "?", strp ? "a string" : "an array of strings");
        if ((strp && *strp) || (arr && arr->off)) return errf(r->err, r->errsz, "%s: metadata key %s appears twice", r->path, key);
        return (strp ? rd_str_alloc(r, key, strp) : rd_str_array(r, key, arr)) ? -1 : 1;
    }
    if (!strcmp(key, "tokenizer.ggml.token_type") || !strcmp(key, "tokenizer.ggml.scores")) {
        int is_types = key[15] == 't';   /* "tokenizer.ggml.t..." */
        uint32_t et;
        uint64_t n, i;
        unsigned char b[4];
        if (type != GT_ARRAY || (is_types ? v->types != NULL : v->scores != NULL) || rd_u32(r, &et, key) || rd_u64(r, &n, key) ||
            (is_types ? et != GT_I32 && et != GT_U32 : et != GT_F32))
            return r->err[0] ? -1 : errf(r->err, r->errsz, "%s: metadata %s must appear once, as an array of %s", r->path, key,
                                         is_types ? "32-bit integers" : "f32");
        if (n > (r->size - r->pos) / 4) return errf(r->err, r->errsz, "%s: metadata %s runs past the end of the file", r->path, key);
        if (is_types) v->types = (int32_t *)malloc(((size_t)n + 1) * sizeof *v->types);
        else v->scores = (float *)malloc(((size_t)n + 1) * sizeof *v->scores);
        if (is_types ? !v->types : !v->scores) return errf(r->err, r->errsz, "%s: out of memory reading %s", r->path, key);
        for (i = 0; i < n; i++) {
            uint32_t u;
            if (rd_bytes(r, b, 4, key)) return -1;
            u = (uint32_t)le(b, 4);
            if (is_types) v->types[i] = (int32_t)u;
            else memcpy(&v->scores[i], &u, 4);
        }
        if (is_types) v->n_types = n;
        else v->n_scores = n;
        return 1;
    }
    if (!strcmp(key, "tokenizer.ggml.add_space_prefix")) {
        gg_meta e;
        memset(&e, 0, sizeof e);
        e.type = (int)type;
        if (type != GT_BOOL || read_scalar(r, &e)) return r->err[0] ? -1 : errf(r->err, r->errsz, "%s: metadata %s is not a bool", r->path, key);
        v->no_space_prefix = e.i == 0;
        return 1;
    }
    for (k = 0; k < 4; k++)
        if (!strcmp(key, vocab_id_keys[k])) {
            gg_meta e;
            memset(&e, 0, sizeof e);
            e.type = (int)type;
            if (!gt_is_int((int)type) || read_scalar(r, &e) || e.big || e.i < 0 || e.i > INT32_MAX)
                return r->err[0] ? -1 : errf(r->err, r->errsz, "%s: metadata %s is not a token id (a non-negative integer)", r->path, key);
            if (v->ids[k] >= 0) return errf(r->err, r->errsz, "%s: metadata key %s appears twice", r->path, key);
            v->ids[k] = e.i;
            return 1;
        }
    return 0;
}

static int read_vocab(const char *path, gg_vocab *v, char *err, size_t errsz) {
    rd r;
    uint64_t n_tensors, n_kv, i;
    int rc = -1;
    memset(v, 0, sizeof *v);
    v->ids[0] = v->ids[1] = v->ids[2] = v->ids[3] = -1;
    if (err && errsz) err[0] = 0;
    if (open_gguf(&r, path, &n_tensors, &n_kv, err, errsz)) return -1;
    for (i = 0; i < n_kv; i++) {
        char key[96];
        uint32_t type;
        int long_key, got = 0;
        if (rd_str(&r, key, sizeof key, &long_key, "a metadata key") || rd_u32(&r, &type, "a metadata type")) goto done;
        if (!long_key && (got = read_vocab_key(&r, key, type, v)) < 0) goto done;
        if (!got && skip_value(&r, type, 0)) goto done;
    }
    rc = 0;
done:
    fclose(r.fp);
    return rc;
}

/* tokenizer.json's pre_tokenizer for llama.cpp's pre-tokenizer name (tokenizer.ggml.pre); NULL
 * for one whose split we do not implement. */
static const char *pre_tokenizer_json(const char *pre, int *ignore_merges) {
    static const char *const digits_then_gpt2[] = {"smollm", "starcoder", "refact", "codeshell", NULL};
    int i;
    *ignore_merges = 0;
    for (i = 0; digits_then_gpt2[i]; i++)
        if (!strcmp(pre, digits_then_gpt2[i]))
            return "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true},"
                   "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}]}";
    if (!strcmp(pre, "gpt-2")) return "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}";
    if (!strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3")) {
        *ignore_merges = 1;
        return "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
               "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|"
               "\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false},"
               "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}]}";
    }
    return NULL;
}

static void put_str_json(clair_buf *b, const gg_strs *a, uint64_t i) {
    clair_json_write_string(b, a->bytes + a->off[i], (size_t)(a->off[i + 1] - a->off[i]));
}

/* ---- sentencepiece vocabularies: merges from the scores ---- */

typedef struct { float score; uint32_t piece, left, right; } spm_merge;

static int spm_merge_cmp(const void *a, const void *b) {
    const spm_merge *x = (const spm_merge *)a, *y = (const spm_merge *)b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;   /* higher score merges first */
    if (x->left != y->left) return x->left < y->left ? -1 : 1;
    return x->right < y->right ? -1 : x->right > y->right;
}

static uint64_t str_hash(const char *s, uint64_t n) {
    uint64_t h = 1469598103934665603ull, i;
    for (i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

/* id of the normal token (type 1) whose text is s[0..n), or -1; tab: open addressing, mask */
static long long spm_find(const gg_vocab *v, const int64_t *tab, uint64_t mask, const char *s, uint64_t n) {
    uint64_t h = str_hash(s, n) & mask;
    for (; tab[h] >= 0; h = (h + 1) & mask) {
        uint64_t id = (uint64_t)tab[h];
        if (v->tokens.off[id + 1] - v->tokens.off[id] == n && !memcmp(v->tokens.bytes + v->tokens.off[id], s, (size_t)n)) return (long long)id;
    }
    return -1;
}

/* The merges of a sentencepiece BPE vocabulary, as transformers derives them from the scores:
 * every split of a normal token into two normal tokens, the token's score giving the rank. */
static int spm_merges(const gg_vocab *v, spm_merge **out, size_t *n_out) {
    uint64_t cap = 1, mask, i, n = v->tokens.n;
    int64_t *tab;
    spm_merge *m = NULL;
    size_t nm = 0, mcap = 0;
    while (cap < 2 * n + 16) cap <<= 1;
    mask = cap - 1;
    if (!(tab = (int64_t *)malloc((size_t)cap * sizeof *tab))) return -1;
    for (i = 0; i < cap; i++) tab[i] = -1;
    for (i = 0; i < n; i++) {
        const char *s = v->tokens.bytes + v->tokens.off[i];
        uint64_t len = v->tokens.off[i + 1] - v->tokens.off[i], h;
        if (v->types[i] != 1 || spm_find(v, tab, mask, s, len) >= 0) continue;   /* the first of equal texts */
        for (h = str_hash(s, len) & mask; tab[h] >= 0; h = (h + 1) & mask) {}
        tab[h] = (int64_t)i;
    }
    for (i = 0; i < n; i++) {
        const char *s = v->tokens.bytes + v->tokens.off[i];
        uint64_t len = v->tokens.off[i + 1] - v->tokens.off[i], k;
        if (v->types[i] != 1) continue;
        for (k = 1; k < len; k++) {
            long long l, r;
            if (((unsigned char)s[k] & 0xC0) == 0x80) continue;   /* inside a UTF-8 character */
            if ((l = spm_find(v, tab, mask, s, k)) < 0 || (r = spm_find(v, tab, mask, s + k, len - k)) < 0) continue;
            if (nm == mcap) {
                spm_merge *nmv = (spm_merge *)realloc(m, (mcap = mcap * 2 + 1024) * sizeof *m);
                if (!nmv) { free(m); free(tab); return -1; }
                m = nmv;
            }
            m[nm].score = v->scores[i];
            m[nm].piece = (uint32_t)i; m[nm].left = (uint32_t)l; m[nm].right = (uint32_t)r;
            nm++;
        }
    }
    free(tab);
    qsort(m, nm, sizeof *m, spm_merge_cmp);
    *out = m;
    *n_out = nm;
    return 0;
}

/* tokenizer.json: the BPE model, the pre-tokenizer, control (type 3) and user-defined (type 4)
 * tokens as added tokens, as tools/gguf_to_hf.py builds it with the tokenizers package. */
static int vocab_tokenizer_json(const gg_vocab *v, const char *pre_json, int ignore_merges, clair_buf *b) {
    uint64_t i;
    int first = 1, spm = !strcmp(v->model, "llama");
    clair_buf_puts(b, "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[");
    for (i = 0; i < v->tokens.n; i++) {
        int type = i < v->n_types ? v->types[i] : 1;
        if (type != 3 && type != 4 && !(spm && type == 2)) continue;
        clair_buf_printf(b, "%s{\"id\":%llu,\"content\":", first ? "" : ",", (unsigned long long)i);
        put_str_json(b, &v->tokens, i);
        clair_buf_printf(b, ",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":%s}",
                         type == 4 ? "false" : "true");
        first = 0;
    }
    if (spm) {   /* Llama 2's tokenizer.json: U+2581 for spaces, byte fallback */
        clair_buf_printf(b, "],\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[%s{\"type\":\"Replace\",\"pattern\":"
                            "{\"String\":\" \"},\"content\":\"\u2581\"}]},\"pre_tokenizer\":null,\"post_processor\":null,",
                         v->no_space_prefix ? "" : "{\"type\":\"Prepend\",\"prepend\":\"\u2581\"},");
        clair_buf_puts(b, "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\u2581\"},"
                          "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \","
                          "\"start\":1,\"stop\":0}]},\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":");
        if (v->ids[2] >= 0) put_str_json(b, &v->tokens, (uint64_t)v->ids[2]);
        else clair_buf_puts(b, "null");
        clair_buf_puts(b, ",\"continuing_subword_prefix\":null,\"end_of_word_suffix\":null,\"fuse_unk\":true,\"byte_fallback\":true,"
                          "\"ignore_merges\":false,\"vocab\":{");
    } else {
        clair_buf_puts(b, "],\"normalizer\":null,\"pre_tokenizer\":");
        clair_buf_puts(b, pre_json);
        clair_buf_puts(b, ",\"post_processor\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":false,"
                          "\"use_regex\":true},\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,"
                          "\"use_regex\":true},");
        clair_buf_printf(b, "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"continuing_subword_prefix\":null,"
                            "\"end_of_word_suffix\":null,\"fuse_unk\":false,\"byte_fallback\":false,\"ignore_merges\":%s,\"vocab\":{",
                         ignore_merges ? "true" : "false");
    }
    for (i = 0; i < v->tokens.n; i++) {
        if (i) clair_buf_puts(b, ",");
        put_str_json(b, &v->tokens, i);
        clair_buf_printf(b, ":%llu", (unsigned long long)i);
    }
    clair_buf_puts(b, "},\"merges\":[");
    if (spm) {   /* ["left", "right"]: pieces may hold any character */
        spm_merge *m = NULL;
        size_t nm = 0, j;
        if (spm_merges(v, &m, &nm)) return -1;
        for (j = 0; j < nm; j++) {
            clair_buf_puts(b, j ? ",[" : "[");
            put_str_json(b, &v->tokens, m[j].left);
            clair_buf_puts(b, ",");
            put_str_json(b, &v->tokens, m[j].right);
            clair_buf_puts(b, "]");
        }
        free(m);
    } else {
        for (i = 0; i < v->merges.n; i++) {
            if (i) clair_buf_puts(b, ",");
            put_str_json(b, &v->merges, i);
        }
    }
    clair_buf_puts(b, "]}}\n");
    return b->oom ? -1 : 0;
}

/* tokenizer_config.json: the special tokens by their text, and the chat template. */
static int vocab_config_json(const gg_vocab *v, clair_buf *b) {
    static const char *const names[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    int k;
    if (!strcmp(v->model, "llama")) clair_buf_puts(b, "{\"tokenizer_class\":\"LlamaTokenizerFast\",\"legacy\":true");
    else clair_buf_puts(b, "{\"tokenizer_class\":\"GPT2Tokenizer\",\"add_prefix_space\":false");
    clair_buf_puts(b, ",\"clean_up_tokenization_spaces\":false");
    for (k = 0; k < 4; k++) {
        clair_buf_printf(b, ",\"%s\":", names[k]);
        if (v->ids[k] >= 0) put_str_json(b, &v->tokens, (uint64_t)v->ids[k]);
        else clair_buf_puts(b, "null");
    }
    if (v->chat_template) {
        clair_buf_puts(b, ",\"chat_template\":");
        clair_json_write_string(b, v->chat_template, strlen(v->chat_template));
    }
    clair_buf_puts(b, "}\n");
    return b->oom ? -1 : 0;
}

/* What a vocabulary must satisfy before it is written out: its kind, one type per token, token
 * ids inside it. */
static int check_vocab(const char *path, const gg_vocab *v, const char **pre_json, int *ignore_merges, char *err, size_t errsz) {
    int k;
    if (!v->model || !v->tokens.off)
        return errf(err, errsz, "%s: no tokenizer.ggml.model / tokenizer.ggml.tokens metadata; the file has no tokenizer", path);
    if (!strcmp(v->model, "llama")) {   /* sentencepiece BPE (Llama 2): merges come from the scores */
        if (!v->types || !v->scores || v->n_scores != v->tokens.n)
            return errf(err, errsz, "%s: a sentencepiece vocabulary (tokenizer.ggml.model \"llama\") needs tokenizer.ggml.scores and "
                                    "tokenizer.ggml.token_type, one per token", path);
        *pre_json = "null";
        *ignore_merges = 0;
    } else if (strcmp(v->model, "gpt2")) {
        return errf(err, errsz, "%s: tokenizer.ggml.model is \"%.40s\"; GGUF vocabularies read are \"gpt2\" (byte-level BPE: Llama 3, "
                                "SmolLM) and \"llama\" (sentencepiece BPE: Llama 2)", path, v->model);
    } else if (!v->merges.off) {
        return errf(err, errsz, "%s: no tokenizer.ggml.merges metadata (a BPE vocabulary needs its merges)", path);
    }
    if (v->types && v->n_types != v->tokens.n)
        return errf(err, errsz, "%s: tokenizer.ggml.token_type has %llu entries for %llu tokens", path, (unsigned long long)v->n_types,
                    (unsigned long long)v->tokens.n);
    for (k = 0; k < 4; k++)
        if (v->ids[k] >= (long long)v->tokens.n)
            return errf(err, errsz, "%s: %s = %lld is not below the %llu tokens", path, vocab_id_keys[k], v->ids[k], (unsigned long long)v->tokens.n);
    if (!strcmp(v->model, "gpt2")) *pre_json = pre_tokenizer_json(v->pre ? v->pre : "gpt-2", ignore_merges);
    if (!*pre_json)
        return errf(err, errsz, "%s: tokenizer.ggml.pre is \"%.40s\"; the pre-tokenizers read from GGUF are smollm, starcoder, refact, "
                                "codeshell, gpt-2 and llama-bpe", path, v->pre);
    return 0;
}

int gguf_tokenizer_json(const char *path, char **tokenizer_json, size_t *tokenizer_len, char **config_json, size_t *config_len,
                        char *err, size_t errsz) {
    gg_vocab v;
    clair_buf tj, cj;
    const char *pre_json = NULL;
    int ignore_merges = 0, rc = -1;
    memset(&tj, 0, sizeof tj);
    memset(&cj, 0, sizeof cj);
    *tokenizer_json = *config_json = NULL;
    if (read_vocab(path, &v, err, errsz) || check_vocab(path, &v, &pre_json, &ignore_merges, err, errsz)) goto done;
    if (vocab_tokenizer_json(&v, pre_json, ignore_merges, &tj) || vocab_config_json(&v, &cj)) {
        errf(err, errsz, "%s: out of memory building the tokenizer", path);
        goto done;
    }
    *tokenizer_json = tj.data; *tokenizer_len = tj.len;
    *config_json = cj.data; *config_len = cj.len;
    memset(&tj, 0, sizeof tj);
    memset(&cj, 0, sizeof cj);
    rc = 0;
done:
    clair_buf_free(&tj);
    clair_buf_free(&cj);
    vocab_free(&v);
    return rc;
}

int gguf_is_path(const char *path) {
    size_t n = path ? strlen(path) : 0;
    return n > 5 && !strcmp(path + n - 5, ".gguf");
}
