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

enum { GT_U8, GT_I8, GT_U16, GT_I16, GT_U32, GT_I32, GT_F32, GT_BOOL, GT_STRING, GT_ARRAY, GT_U64, GT_I64, GT_F64 };
static const int gt_size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

/* The keys we use, kept as numbers or short strings. */
typedef struct {
    char key[96];
    int type;          /* GT_*, or -1 for an array */
    double num;
    char str[96];
} gg_kv;

static int read_scalar(rd *r, int type, double *num) {
    unsigned char b[8];
    uint64_t u;
    if (rd_bytes(r, b, (uint64_t)gt_size[type], "a metadata value")) return -1;
    u = le(b, gt_size[type]);
    switch (type) {
    case GT_I8: *num = (double)(int8_t)u; break;
    case GT_I16: *num = (double)(int16_t)u; break;
    case GT_I32: *num = (double)(int32_t)u; break;
    case GT_I64: *num = (double)(int64_t)u; break;
    case GT_F32: { uint32_t w = (uint32_t)u; float f; memcpy(&f, &w, 4); *num = f; break; }
    case GT_F64: { double d; memcpy(&d, &u, 8); *num = d; break; }
    default: *num = (double)u;
    }
    return 0;
}

static int skip_value(rd *r, uint32_t type, int depth) {
    if (type < sizeof gt_size / sizeof gt_size[0] && gt_size[type]) return rd_bytes(r, NULL, (uint64_t)gt_size[type], "a metadata value");
    if (type == GT_STRING) return rd_str(r, NULL, 0, NULL, "a metadata string");
    if (type == GT_ARRAY && depth < 4) {
        uint32_t et;
        uint64_t n, i;
        if (rd_u32(r, &et, "an array type") || rd_u64(r, &n, "an array length")) return -1;
        if (et < sizeof gt_size / sizeof gt_size[0] && gt_size[et]) {
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

static const gg_kv *kv_find(const gg_kv *kv, int n, const char *key) {
    int i;
    for (i = 0; i < n; i++)
        if (!strcmp(kv[i].key, key)) return &kv[i];
    return NULL;
}

/* ---- tensors --------------------------------------------------------------------------- */

enum { GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q8_0 = 8, GGML_BF16 = 30 };

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
    case GGML_Q8_0: *elems = 32; *bytes = 34; return 1;
    default: return 0;
    }
}

static uint16_t u16le(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

/* Dequantises n elements (a multiple of the block size) from src into dst, the way the gguf
 * package does it in fp32: Q8_0 d*q; Q4_0 d*(q-8); Q4_1 d*q + m; within a 4-bit block the
 * first 16 elements are the low nibbles of the 16 bytes, the next 16 the high nibbles. */
static void dequantize(uint32_t type, const unsigned char *src, float *dst, size_t n) {
    size_t i, b, j;
    switch (type) {
    case GGML_F32:
        for (i = 0; i < n; i++) { uint32_t u = (uint32_t)le(src + 4 * i, 4); memcpy(&dst[i], &u, 4); }
        break;
    case GGML_F16: for (i = 0; i < n; i++) dst[i] = st_f16_to_f32(u16le(src + 2 * i)); break;
    case GGML_BF16: for (i = 0; i < n; i++) dst[i] = st_bf16_to_f32(u16le(src + 2 * i)); break;
    case GGML_Q8_0:
        for (b = 0; b < n / 32; b++, src += 34, dst += 32) {
            float d = st_f16_to_f32(u16le(src));
            for (j = 0; j < 32; j++) dst[j] = d * (float)(int8_t)src[2 + j];
        }
        break;
    case GGML_Q4_0:
        for (b = 0; b < n / 32; b++, src += 18, dst += 32) {
            float d = st_f16_to_f32(u16le(src));
            for (j = 0; j < 16; j++) {
                dst[j] = d * (float)((int)(src[2 + j] & 15) - 8);
                dst[j + 16] = d * (float)((int)(src[2 + j] >> 4) - 8);
            }
        }
        break;
    case GGML_Q4_1:
        for (b = 0; b < n / 32; b++, src += 20, dst += 32) {
            float d = st_f16_to_f32(u16le(src)), m = st_f16_to_f32(u16le(src + 2));
            for (j = 0; j < 16; j++) {
                float lo = d * (float)(src[4 + j] & 15), hi = d * (float)(src[4 + j] >> 4);
                dst[j] = lo + m;
                dst[j + 16] = hi + m;
            }
        }
        break;
    }
}

/* llama.cpp tensor name -> Hugging Face name; 0 if it is not a Llama weight we know. */
static int hf_name(const char *g, char *out, size_t cap) {
    static const char *blk[][2] = {
        {"attn_norm", "input_layernorm"}, {"attn_q", "self_attn.q_proj"}, {"attn_k", "self_attn.k_proj"},
        {"attn_v", "self_attn.v_proj"}, {"attn_output", "self_attn.o_proj"}, {"ffn_norm", "post_attention_layernorm"},
        {"ffn_gate", "mlp.gate_proj"}, {"ffn_up", "mlp.up_proj"}, {"ffn_down", "mlp.down_proj"},
    };
    int layer, len = 0;
    size_t i;
    if (!strcmp(g, "token_embd.weight")) { snprintf(out, cap, "model.embed_tokens.weight"); return 1; }
    if (!strcmp(g, "output_norm.weight")) { snprintf(out, cap, "model.norm.weight"); return 1; }
    if (!strcmp(g, "output.weight")) { snprintf(out, cap, "lm_head.weight"); return 1; }
    if (sscanf(g, "blk.%d.%n", &layer, &len) != 1 || len == 0 || layer < 0) return 0;
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

int llama_model_load_gguf(llama_model *m, const char *path, char *err, size_t errsz) {
    rd r;
    unsigned char magic[4];
    uint32_t version, alignment = 32;
    uint64_t n_tensors, n_kv, i, data_start;
    gg_kv *kv = NULL;
    int n_keep = 0, rc = -1, *of_layout = NULL, lay_n = 0;
    llama_tensor_info *lay = NULL;
    gg_tensor *ts = NULL;
    clair_buf cj;
    llama_config cfg;
    unsigned char *raw = NULL;
    off_t sz;

    memset(m, 0, sizeof *m);
    memset(&cj, 0, sizeof cj);
    memset(&r, 0, sizeof r);
    r.path = path; r.err = err; r.errsz = errsz;
    r.fp = fopen(path, "rb");
    if (!r.fp) return errf(err, errsz, "%s: cannot open: %s", path, strerror(errno));
    if (fseeko(r.fp, 0, SEEK_END) || (sz = ftello(r.fp)) < 0 || fseeko(r.fp, 0, SEEK_SET)) { errf(err, errsz, "%s: cannot determine size", path); goto done; }
    r.size = (uint64_t)sz;

    if (rd_bytes(&r, magic, 4, "the magic") || memcmp(magic, "GGUF", 4)) {
        if (r.pos == 4) errf(err, errsz, "%s: not a GGUF file (no GGUF magic)", path);
        goto done;
    }
    if (rd_u32(&r, &version, "the version")) goto done;
    if (version < 2 || version > 3) { errf(err, errsz, "%s: GGUF version %u, only 2 and 3 are supported", path, version); goto done; }
    if (rd_u64(&r, &n_tensors, "the tensor count") || rd_u64(&r, &n_kv, "the metadata count")) goto done;
    /* every entry takes at least 8 bytes of file, so counts above size/8 are lies */
    if (n_tensors > r.size / 8 || n_kv > r.size / 8 || n_tensors > 1000000) {
        errf(err, errsz, "%s: header claims %llu tensors and %llu metadata keys, impossible for a %llu byte file", path,
                (unsigned long long)n_tensors, (unsigned long long)n_kv, (unsigned long long)r.size);
        goto done;
    }

    /* Metadata: keep scalars and short strings; skip arrays (the tokenizer's vocabulary). */
    kv = (gg_kv *)calloc((size_t)n_kv + 1, sizeof *kv);
    if (!kv) { errf(err, errsz, "%s: out of memory", path); goto done; }
    for (i = 0; i < n_kv; i++) {
        gg_kv *e = &kv[n_keep];
        uint32_t type;
        int long_key;
        if (rd_str(&r, e->key, sizeof e->key, &long_key, "a metadata key") || rd_u32(&r, &type, "a metadata type")) goto done;
        if (long_key) { if (skip_value(&r, type, 0)) goto done; continue; }
        if (type < sizeof gt_size / sizeof gt_size[0] && gt_size[type]) {
            e->type = (int)type;
            if (read_scalar(&r, (int)type, &e->num)) goto done;
            n_keep++;
        } else if (type == GT_STRING) {
            int too_long;
            if (rd_str(&r, e->str, sizeof e->str, &too_long, "a metadata string")) goto done;
            e->type = GT_STRING;
            n_keep += !too_long;
        } else if (skip_value(&r, type, 0)) {
            goto done;
        }
    }
    {
        const gg_kv *a = kv_find(kv, n_keep, "general.alignment");
        if (a) {
            if (a->type == GT_STRING || a->num < 1 || a->num > 65536 || ((uint32_t)a->num & ((uint32_t)a->num - 1))) {
                errf(err, errsz, "%s: general.alignment must be a power of two", path);
                goto done;
            }
            alignment = (uint32_t)a->num;
        }
        a = kv_find(kv, n_keep, "general.architecture");
        if (!a || a->type != GT_STRING || strcmp(a->str, "llama")) {
            errf(err, errsz, "%s: general.architecture is \"%s\"; only \"llama\" is supported", path, a && a->type == GT_STRING ? a->str : "(missing)");
            goto done;
        }
        a = kv_find(kv, n_keep, "llama.rope.scaling.type");
        if (a && (a->type != GT_STRING || strcmp(a->str, "none"))) {
            errf(err, errsz, "%s: llama.rope.scaling.type is \"%s\"; rope scaling in GGUF files is not supported (convert the Hugging Face checkpoint instead)",
                    path, a->type == GT_STRING ? a->str : "?");
            goto done;
        }
    }

    /* Tensor infos. */
    ts = (gg_tensor *)calloc((size_t)n_tensors + 1, sizeof *ts);
    if (!ts) { errf(err, errsz, "%s: out of memory", path); goto done; }
    for (i = 0; i < n_tensors; i++) {
        gg_tensor *t = &ts[i];
        int long_name;
        uint32_t d;
        if (rd_str(&r, t->name, sizeof t->name, &long_name, "a tensor name")) goto done;
        if (long_name) { errf(err, errsz, "%s: tensor %llu has a name longer than %zu bytes", path, (unsigned long long)i, sizeof t->name - 1); goto done; }
        if (rd_u32(&r, &t->n_dims, "a tensor's dimension count")) goto done;
        if (t->n_dims < 1 || t->n_dims > 4) { errf(err, errsz, "%s: tensor '%s' has %u dimensions", path, t->name, t->n_dims); goto done; }
        for (d = 0; d < t->n_dims; d++)
            if (rd_u64(&r, &t->ne[d], "a tensor dimension")) goto done;
        if (rd_u32(&r, &t->type, "a tensor type") || rd_u64(&r, &t->offset, "a tensor offset")) goto done;
    }
    data_start = (r.pos + alignment - 1) / alignment * alignment;
    if (data_start > r.size) { errf(err, errsz, "%s: truncated before the tensor data", path); goto done; }

    /* Sizes and byte ranges, overflow-checked, all inside the file. */
    for (i = 0; i < n_tensors; i++) {
        gg_tensor *t = &ts[i];
        uint64_t be, bb, numel = 1;
        uint32_t d;
        if (!type_block(t->type, &be, &bb)) {
            errf(err, errsz, "%s: tensor '%s' has ggml type %u; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1", path, t->name, t->type);
            goto done;
        }
        for (d = 0; d < t->n_dims; d++) {
            if (t->ne[d] == 0 || t->ne[d] > ((uint64_t)1 << 32) || numel > (((uint64_t)1 << 40) / t->ne[d])) {
                errf(err, errsz, "%s: tensor '%s' has an absurd shape", path, t->name);
                goto done;
            }
            numel *= t->ne[d];
        }
        if (t->ne[0] % be) { errf(err, errsz, "%s: tensor '%s': row length %llu is not a multiple of the block size %llu", path, t->name, (unsigned long long)t->ne[0], (unsigned long long)be); goto done; }
        t->nbytes = numel / be * bb;
        if (t->offset > r.size - data_start || t->nbytes > r.size - data_start - t->offset) {
            errf(err, errsz, "%s: tensor '%s' data [%llu, +%llu) runs past the end of the file (truncated?)", path, t->name,
                    (unsigned long long)t->offset, (unsigned long long)t->nbytes);
            goto done;
        }
        if (!strcmp(t->name, "rope_freqs.weight")) {
            errf(err, errsz, "%s: has rope_freqs.weight (llama3 rope scaling baked in); not supported by this importer", path);
            goto done;
        }
    }

    /* The config: built as config.json text and put through llama_config_parse, so a GGUF
     * gets exactly the same checks as a Hugging Face checkpoint. */
    {
        static const struct { const char *gguf, *hf; } keys[] = {
            {"llama.block_count", "num_hidden_layers"}, {"llama.embedding_length", "hidden_size"},
            {"llama.feed_forward_length", "intermediate_size"}, {"llama.attention.head_count", "num_attention_heads"},
            {"llama.attention.head_count_kv", "num_key_value_heads"}, {"llama.context_length", "max_position_embeddings"},
            {"llama.rope.freq_base", "rope_theta"}, {"llama.attention.layer_norm_rms_epsilon", "rms_norm_eps"},
            {"llama.attention.key_length", "head_dim"}, {"tokenizer.ggml.bos_token_id", "bos_token_id"},
            {"tokenizer.ggml.eos_token_id", "eos_token_id"},
        };
        const gg_kv *a;
        const gg_tensor *emb = NULL, *out = NULL;
        size_t k;
        double vocab = -1;
        for (i = 0; i < n_tensors; i++) {
            if (!strcmp(ts[i].name, "token_embd.weight")) emb = &ts[i];
            if (!strcmp(ts[i].name, "output.weight")) out = &ts[i];
        }
        if (!emb || emb->n_dims != 2) { errf(err, errsz, "%s: no 2-D token_embd.weight tensor", path); goto done; }
        a = kv_find(kv, n_keep, "llama.vocab_size");
        vocab = a && a->type != GT_STRING ? a->num : (double)emb->ne[1];
        clair_buf_puts(&cj, "{\"model_type\":\"llama\",\"hidden_act\":\"silu\"");
        clair_buf_printf(&cj, ",\"vocab_size\":%.17g,\"tie_word_embeddings\":%s", vocab, out ? "false" : "true");
        for (k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            a = kv_find(kv, n_keep, keys[k].gguf);
            if (!a || a->type == GT_STRING) continue;
            clair_buf_printf(&cj, ",\"%s\":%.17g", keys[k].hf, a->num);
        }
        clair_buf_puts(&cj, "}");
        if (cj.oom) { errf(err, errsz, "%s: out of memory", path); goto done; }
        if (llama_config_parse(cj.data, cj.len, path, &cfg, err, errsz)) goto done;
        a = kv_find(kv, n_keep, "llama.rope.dimension_count");
        if (a && a->type != GT_STRING && (int)a->num != cfg.head_dim) {
            errf(err, errsz, "%s: llama.rope.dimension_count %g != head_dim %d (partial rotary is not supported)", path, a->num, cfg.head_dim);
            goto done;
        }
    }
    /* Match tensors to the layout: names, shapes (GGUF ne reversed = HF shape), each once;
     * only then allocate, so lying metadata cannot cost a huge allocation. */
    lay_n = llama_layout(&cfg, NULL, NULL);
    lay = (llama_tensor_info *)calloc((size_t)lay_n + 1, sizeof *lay);
    if (!lay) { errf(err, errsz, "%s: out of memory", path); goto done; }
    llama_layout(&cfg, lay, NULL);
    of_layout = (int *)malloc((size_t)n_tensors * sizeof *of_layout + 1);
    if (!of_layout) { errf(err, errsz, "%s: out of memory", path); goto done; }
    {
        char *seen = (char *)calloc((size_t)lay_n + 1, 1);
        int j, missing = -1;
        if (!seen) { errf(err, errsz, "%s: out of memory", path); goto done; }
        for (i = 0; i < n_tensors; i++) {
            char name[128];
            const gg_tensor *t = &ts[i];
            of_layout[i] = -1;
            if (!hf_name(t->name, name, sizeof name)) {
                errf(err, errsz, "%s: unexpected tensor '%s' for a Llama model", path, t->name);
                free(seen);
                goto done;
            }
            for (j = 0; j < lay_n; j++)
                if (!strcmp(lay[j].name, name)) break;
            if (j == lay_n || seen[j]) {
                errf(err, errsz, "%s: tensor '%s' (%s) %s", path, t->name, name, j == lay_n ? "does not fit the config in the metadata" : "appears twice");
                free(seen);
                goto done;
            }
            if ((int)t->n_dims != lay[j].ndim || (t->n_dims == 1 && (int64_t)t->ne[0] != lay[j].shape[0]) ||
                (t->n_dims == 2 && ((int64_t)t->ne[1] != lay[j].shape[0] || (int64_t)t->ne[0] != lay[j].shape[1]))) {
                errf(err, errsz, "%s: tensor '%s' has ne [%llu, %llu], but the metadata implies %s shape [%lld, %lld]", path, t->name,
                        (unsigned long long)t->ne[0], (unsigned long long)(t->n_dims > 1 ? t->ne[1] : 1), name,
                        (long long)lay[j].shape[0], (long long)lay[j].shape[1]);
                free(seen);
                goto done;
            }
            seen[j] = 1;
            of_layout[i] = j;
        }
        for (j = 0; j < lay_n; j++)
            if (!seen[j]) { missing = j; break; }
        free(seen);
        if (missing >= 0) { errf(err, errsz, "%s: no tensor for %s", path, lay[missing].name); goto done; }
    }

    /* Read and dequantise; then put q/k rows back into Hugging Face's order. */
    if (llama_model_alloc(m, &cfg, err, errsz)) goto done;
    if (m->n_tensors != lay_n) { errf(err, errsz, "internal error: layout changed"); goto done; }
    for (i = 0; i < n_tensors; i++) {
        const gg_tensor *t = &ts[i];
        const llama_tensor_info *ti = &m->tensors[of_layout[i]];
        float *dst = m->params + ti->offset;
        unsigned char *nr = (unsigned char *)realloc(raw, (size_t)t->nbytes);
        if (!nr) { errf(err, errsz, "%s: out of memory reading '%s'", path, t->name); goto done; }
        raw = nr;
        if (fseeko(r.fp, (off_t)(data_start + t->offset), SEEK_SET) || fread(raw, 1, (size_t)t->nbytes, r.fp) != (size_t)t->nbytes) {
            errf(err, errsz, "%s: read error in tensor '%s'", path, t->name);
            goto done;
        }
        dequantize(t->type, raw, dst, ti->numel);
        if (strstr(ti->name, "self_attn.q_proj.weight") || strstr(ti->name, "self_attn.k_proj.weight")) {
            int heads = strstr(ti->name, "q_proj") ? cfg.num_attention_heads : cfg.num_key_value_heads;
            if (unpermute_rows(dst, heads, cfg.head_dim, (size_t)cfg.hidden_size)) { errf(err, errsz, "%s: out of memory", path); goto done; }
        }
    }
    rc = 0;
done:
    if (rc) llama_model_free(m);
    if (r.fp) fclose(r.fp);
    free(kv);
    free(ts);
    free(of_layout);
    free(lay);
    free(raw);
    clair_buf_free(&cj);
    return rc;
}
