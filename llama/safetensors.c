/* llama/safetensors.c - safetensors reader and writer. See safetensors.h for the format.
 *
 * The reader trusts nothing in the file: the header length, every dtype, shape and offset is
 * checked (with overflow-safe arithmetic) against each other and against the file size before
 * a single tensor byte is read, so that callers can allocate st_numel(t) elements and read.
 */
#define _POSIX_C_SOURCE 200809L /* fseeko, ftello, fileno, fsync, getpid */
#include "../util.h"
#include "safetensors.h"
#include "../clair.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>


/* ---- dtypes and number conversions ---------------------------------------------------- */

size_t st_dtype_size(const char *d) {
    static const struct { const char *name; size_t size; } tab[] = {
        {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2},
        {"I8", 1}, {"U64", 8}, {"U32", 4}, {"U16", 2}, {"U8", 1}, {"BOOL", 1},
        {"F8_E4M3", 1}, {"F8_E5M2", 1},
    };
    size_t i;
    for (i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (!strcmp(d, tab[i].name)) return tab[i].size;
    return 0;
}

static uint32_t f32_bits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static float bits_f32(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

uint16_t st_f32_to_bf16(float x) {
    uint32_t u = f32_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* NaN: keep it NaN (quiet) */
    /* Round to nearest even on the 16 dropped bits; a carry into the exponent is correct
     * (the largest finite values round up to infinity, as in torch). */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float st_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (mant << 13));       /* inf, NaN */
    if (exp == 0) {                                                             /* zero, subnormal */
        float v = (float)mant * (1.0f / 16777216.0f);                          /* mant * 2^-24, exact */
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));              /* rebias 15 -> 127 */
}

uint16_t st_f32_to_f16(float x) {
    uint32_t u = f32_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);                    /* NaN */
    if (u >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);                   /* >= 65520: inf */
    if (u < 0x38800000u) {                                                      /* below 2^-14: subnormal */
        /* |x| * 2^24 is exact; rounding it to an integer (ties to even) gives the subnormal's
         * mantissa, and 1024 correctly becomes the smallest normal. */
        float m = bits_f32(u) * 16777216.0f;
        float r = floorf(m), frac = m - r;
        if (frac > 0.5f || (frac == 0.5f && fmodf(r, 2.0f) != 0.0f)) r += 1.0f;
        return (uint16_t)(sign | (uint16_t)r);
    }
    /* Normal: rebias the exponent (127 -> 15) and round to nearest even on the 13 dropped bits. */
    u += 0xc8000fffu + ((u >> 13) & 1u);
    return (uint16_t)(sign | (u >> 13));
}

/* ---- opening files and looking names up ----------------------------------------------- */

FILE *st_fopen_regular(const char *path, char *err, size_t errsz) {
    int fd = open_regular(path, SIZE_MAX, NULL, err, errsz);
    FILE *fp;
    if (fd < 0) return NULL;
    if ((fp = fdopen(fd, "rb")) == NULL) {
        errf(err, errsz, "%s: cannot open (%s)", path, strerror(errno));
        close(fd);
    }
    return fp;
}

static int cmp_st_name(const void *a, const void *b) {
    const st_name *x = (const st_name *)a, *y = (const st_name *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}

void st_names_sort(st_name *names, size_t n) {
    if (n > 1) qsort(names, n, sizeof *names, cmp_st_name);
}

int st_names_find(const st_name *names, size_t n, const char *name) {
    size_t lo = 0, hi = n; /* the first entry not below name */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(names[mid].name, name) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && !strcmp(names[lo].name, name) ? names[lo].i : -1;
}

/* ---- reading ------------------------------------------------------------------------- */

static int host_little_endian(void) { const uint16_t one = 1; return *(const unsigned char *)&one == 1; }

static uint64_t get_u64le(const unsigned char *p) {
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* A non-negative JSON integer that fits u64 exactly (JSON numbers here are doubles: exact up to 2^53). */
static int json_u64(const clair_json *v, uint64_t *out) {
    if (!v || v->type != CLAIR_JSON_NUMBER) return -1;
    if (!(v->number >= 0 && v->number <= 9007199254740992.0) || v->number != floor(v->number)) return -1;
    *out = (uint64_t)v->number;
    return 0;
}

static int cmp_begin(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Fills t from one header entry; offsets stay relative to the data buffer here. */
static int parse_entry(const char *path, const char *name, const clair_json *e, st_tensor *t,
                       char *err, size_t errsz) {
    const clair_json *dt, *sh, *off;
    uint64_t numel = 1, nbytes, b, en;
    size_t es, i;
    if (strlen(name) >= sizeof t->name)
        return errf(err, errsz, "%s: tensor name '%.60s...' is longer than %zu bytes", path, name, sizeof t->name - 1);
    strcpy(t->name, name);
    if (e->type != CLAIR_JSON_OBJECT)
        return errf(err, errsz, "%s: tensor '%s': header entry is a %s, expected an object", path, name, clair_json_type_name(e->type));
    dt = clair_json_get(e, "dtype");
    sh = clair_json_get(e, "shape");
    off = clair_json_get(e, "data_offsets");
    if (!dt || dt->type != CLAIR_JSON_STRING)
        return errf(err, errsz, "%s: tensor '%s': missing or non-string \"dtype\"", path, name);
    es = st_dtype_size(dt->str);
    if (!es || dt->len >= sizeof t->dtype)
        return errf(err, errsz, "%s: tensor '%s': unknown dtype \"%.20s\"", path, name, dt->str);
    strcpy(t->dtype, dt->str);
    if (!sh || sh->type != CLAIR_JSON_ARRAY)
        return errf(err, errsz, "%s: tensor '%s': missing or non-array \"shape\"", path, name);
    if (sh->n > ST_MAX_NDIM)
        return errf(err, errsz, "%s: tensor '%s': %zu dimensions, at most %d supported", path, name, sh->n, ST_MAX_NDIM);
    t->ndim = (int)sh->n;
    for (i = 0; i < sh->n; i++) {
        uint64_t d;
        if (json_u64(&sh->items[i], &d))
            return errf(err, errsz, "%s: tensor '%s': shape[%zu] is not a non-negative integer", path, name, i);
        t->shape[i] = (int64_t)d;
        /* Overflow-safe product: a shape like [2^40, 2^40] must be refused, not wrapped. */
        if (d && numel > UINT64_MAX / d)
            return errf(err, errsz, "%s: tensor '%s': shape overflows 64 bits", path, name);
        numel *= d;
    }
    if (!off || off->type != CLAIR_JSON_ARRAY || off->n != 2 || json_u64(&off->items[0], &b) || json_u64(&off->items[1], &en))
        return errf(err, errsz, "%s: tensor '%s': \"data_offsets\" must be [begin, end] non-negative integers", path, name);
    if (en < b)
        return errf(err, errsz, "%s: tensor '%s': data_offsets end %llu < begin %llu", path, name, (unsigned long long)en, (unsigned long long)b);
    if (numel > UINT64_MAX / es)
        return errf(err, errsz, "%s: tensor '%s': shape x dtype size overflows 64 bits", path, name);
    nbytes = numel * es;
    if (nbytes != en - b)
        return errf(err, errsz, "%s: tensor '%s': shape and dtype %s need %llu bytes but data_offsets [%llu, %llu] span %llu",
                       path, name, t->dtype, (unsigned long long)nbytes, (unsigned long long)b, (unsigned long long)en,
                       (unsigned long long)(en - b));
    if (numel > (uint64_t)SIZE_MAX)
        return errf(err, errsz, "%s: tensor '%s': too many elements for this machine", path, name);
    t->begin = b;
    t->end = en;
    return 0;
}

/* The "__metadata__" entry: an object of strings (safetensors' rule), kept as JSON text. */
static int parse_metadata(const char *path, const clair_json *m, char **out, char *err, size_t errsz) {
    clair_buf b;
    size_t i;
    if (m->type != CLAIR_JSON_OBJECT)
        return errf(err, errsz, "%s: \"__metadata__\" is a %s, expected an object of strings", path, clair_json_type_name(m->type));
    for (i = 0; i < m->n; i++)
        if (m->items[i].type != CLAIR_JSON_STRING)
            return errf(err, errsz, "%s: \"__metadata__\".\"%s\" is a %s, safetensors metadata values must be strings",
                           path, m->keys[i], clair_json_type_name(m->items[i].type));
    memset(&b, 0, sizeof b);
    clair_json_write(&b, m);
    if (b.oom || !b.data) { clair_buf_free(&b); return errf(err, errsz, "%s: out of memory", path); }
    *out = b.data; /* ownership moves to the st_file */
    return 0;
}

int st_open(st_file *f, const char *path, char *err, size_t errsz) {
    unsigned char lenbuf[8];
    uint64_t hlen, buflen;
    char *hdr = NULL;
    clair_json root;
    st_tensor **order = NULL;
    off_t sz;
    size_t i;
    int n = 0, rc = -1;
    char jerr[256];

    memset(f, 0, sizeof *f);
    memset(&root, 0, sizeof root);
    f->fp = st_fopen_regular(path, err, errsz);
    if (!f->fp) return -1;
    f->path = (char *)malloc(strlen(path) + 1);
    if (!f->path) { errf(err, errsz, "%s: out of memory", path); goto done; }
    strcpy(f->path, path);
    if (fseeko(f->fp, 0, SEEK_END) || (sz = ftello(f->fp)) < 0 || fseeko(f->fp, 0, SEEK_SET)) {
        errf(err, errsz, "%s: cannot determine file size: %s", path, strerror(errno));
        goto done;
    }
    f->file_size = (size_t)sz;
    if (f->file_size < 8 || fread(lenbuf, 1, 8, f->fp) != 8) {
        errf(err, errsz, "%s: file is %zu bytes, too short for a safetensors header (truncated?)", path, f->file_size);
        goto done;
    }
    hlen = get_u64le(lenbuf);
    if (hlen > ST_MAX_HEADER) {
        errf(err, errsz, "%s: header length %llu exceeds the %u byte limit (not a safetensors file, or corrupt)",
                path, (unsigned long long)hlen, ST_MAX_HEADER);
        goto done;
    }
    if (hlen > f->file_size - 8) {
        errf(err, errsz, "%s: header length %llu runs past the end of the %zu byte file (truncated?)",
                path, (unsigned long long)hlen, f->file_size);
        goto done;
    }
    if (hlen < 2) { errf(err, errsz, "%s: header length %llu is too small for a JSON object", path, (unsigned long long)hlen); goto done; }
    hdr = (char *)malloc((size_t)hlen + 1);
    if (!hdr) { errf(err, errsz, "%s: out of memory for a %llu byte header", path, (unsigned long long)hlen); goto done; }
    if (fread(hdr, 1, (size_t)hlen, f->fp) != (size_t)hlen) { errf(err, errsz, "%s: read error in header", path); goto done; }
    hdr[hlen] = 0;
    f->data_start = 8 + hlen;
    buflen = f->file_size - f->data_start;

    if (clair_json_parse(hdr, (size_t)hlen, &root, jerr, sizeof jerr)) {
        errf(err, errsz, "%s: header is not valid JSON: %s", path, jerr);
        goto done;
    }
    if (root.type != CLAIR_JSON_OBJECT) { errf(err, errsz, "%s: header is a JSON %s, expected an object", path, clair_json_type_name(root.type)); goto done; }

    f->tensors = (st_tensor *)calloc(root.n ? root.n : 1, sizeof *f->tensors);
    order = (st_tensor **)calloc(root.n ? root.n : 1, sizeof *order);
    if (!f->tensors || !order) { errf(err, errsz, "%s: out of memory", path); goto done; }
    for (i = 0; i < root.n; i++) {
        if (!strcmp(root.keys[i], "__metadata__")) {
            if (f->metadata_json) { errf(err, errsz, "%s: \"__metadata__\" appears twice", path); goto done; }
            if (parse_metadata(path, &root.items[i], &f->metadata_json, err, errsz)) goto done;
            continue;
        }
        if (root.key_lens[i] != strlen(root.keys[i])) { errf(err, errsz, "%s: a tensor name contains a NUL character", path); goto done; }
        if (parse_entry(path, root.keys[i], &root.items[i], &f->tensors[n], err, errsz)) goto done;
        order[n] = &f->tensors[n];
        n++;
    }

    /* Names are unique (JSON would silently keep the last of a repeated key); the sorted
     * names stay for st_find. */
    f->by_name = (st_name *)calloc((size_t)n + 1, sizeof *f->by_name);
    if (!f->by_name) { errf(err, errsz, "%s: out of memory", path); goto done; }
    for (i = 0; i < (size_t)n; i++) {
        f->by_name[i].name = f->tensors[i].name;
        f->by_name[i].i = (int)i;
    }
    st_names_sort(f->by_name, (size_t)n);
    for (i = 1; i < (size_t)n; i++)
        if (!strcmp(f->by_name[i - 1].name, f->by_name[i].name)) { errf(err, errsz, "%s: tensor '%s' appears twice in the header", path, f->by_name[i].name); goto done; }

    /* Byte ranges, sorted by begin, must tile [0, buflen) exactly: no gap, no overlap, no
     * trailing bytes; this is what the reference reader demands too. */
    for (i = 0; i < (size_t)n; i++)
        if (order[i]->end > buflen) {
            errf(err, errsz, "%s: tensor '%s' data_offsets [%llu, %llu] run past the end of the data buffer (%llu bytes; file truncated?)",
                    path, order[i]->name, (unsigned long long)order[i]->begin, (unsigned long long)order[i]->end, (unsigned long long)buflen);
            goto done;
        }
    qsort(order, (size_t)n, sizeof *order, cmp_begin);
    {
        uint64_t pos = 0;
        for (i = 0; i < (size_t)n; i++) {
            st_tensor *t = order[i];
            if (t->begin != pos) {
                if (t->begin < pos)
                    errf(err, errsz, "%s: tensor '%s' data_offsets [%llu, %llu] overlap the previous tensor (which ends at %llu)",
                            path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end, (unsigned long long)pos);
                else
                    errf(err, errsz, "%s: gap in the data buffer: bytes [%llu, %llu) belong to no tensor (before '%s')",
                            path, (unsigned long long)pos, (unsigned long long)t->begin, t->name);
                goto done;
            }
            pos = t->end;
        }
        if (pos != buflen) {
            errf(err, errsz, "%s: the tensors cover %llu bytes but the data buffer holds %llu (trailing bytes or missing tensors)",
                    path, (unsigned long long)pos, (unsigned long long)buflen);
            goto done;
        }
    }
    for (i = 0; i < (size_t)n; i++) {
        f->tensors[i].begin += f->data_start;
        f->tensors[i].end += f->data_start;
    }
    f->n = n;
    rc = 0;
done:
    clair_json_free(&root);
    free(hdr);
    free(order);
    if (rc) st_close(f);
    return rc;
}

const st_tensor *st_find(const st_file *f, const char *name) {
    int i = f->by_name ? st_names_find(f->by_name, (size_t)f->n, name) : -1;
    return i >= 0 ? &f->tensors[i] : NULL;
}

size_t st_numel(const st_tensor *t) {
    size_t n = 1;
    int i;
    for (i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i]; /* st_open proved this does not overflow */
    return n;
}

static int seek_tensor(st_file *f, const st_tensor *t, char *err, size_t errsz) {
    if (!f->fp) return errf(err, errsz, "safetensors: file is not open");
    if (t->end < t->begin || t->end > f->file_size) return errf(err, errsz, "%s: tensor '%s': bad byte range", f->path, t->name);
    if (fseeko(f->fp, (off_t)t->begin, SEEK_SET)) return errf(err, errsz, "%s: seek failed: %s", f->path, strerror(errno));
    return 0;
}

int st_read_raw(st_file *f, const st_tensor *t, void *dst, char *err, size_t errsz) {
    size_t n;
    if (seek_tensor(f, t, err, errsz)) return -1;
    n = (size_t)(t->end - t->begin);
    if (fread(dst, 1, n, f->fp) != n)
        return errf(err, errsz, "%s: tensor '%s': short read (file changed or truncated while open?)", f->path, t->name);
    return 0;
}

#define ST_CHUNK (1u << 20) /* staging buffer for conversions, bytes */

/* Reads t's bytes chunk by chunk and calls conv(src, n_elems, dst_offset, ctx) on each. */
typedef int (*conv_fn)(const unsigned char *src, size_t n, size_t at, void *ctx, char *why, size_t whysz);

static int read_chunked(st_file *f, const st_tensor *t, size_t es, conv_fn conv, void *ctx, char *err, size_t errsz) {
    unsigned char *buf;
    size_t total = st_numel(t), done = 0, per = ST_CHUNK / es;
    char why[160];
    if (seek_tensor(f, t, err, errsz)) return -1;
    buf = (unsigned char *)malloc(ST_CHUNK);
    if (!buf) return errf(err, errsz, "%s: out of memory", f->path);
    while (done < total) {
        size_t k = total - done < per ? total - done : per;
        if (fread(buf, es, k, f->fp) != k) {
            free(buf);
            return errf(err, errsz, "%s: tensor '%s': short read (file changed or truncated while open?)", f->path, t->name);
        }
        if (conv(buf, k, done, ctx, why, sizeof why)) {
            free(buf);
            return errf(err, errsz, "%s: tensor '%s': %s", f->path, t->name, why);
        }
        done += k;
    }
    free(buf);
    return 0;
}

static int conv_bf16(const unsigned char *s, size_t n, size_t at, void *ctx, char *why, size_t whysz) {
    float *d = (float *)ctx + at;
    size_t i;
    (void)why; (void)whysz;
    for (i = 0; i < n; i++) d[i] = st_bf16_to_f32((uint16_t)(s[2 * i] | (s[2 * i + 1] << 8)));
    return 0;
}
static int conv_f16(const unsigned char *s, size_t n, size_t at, void *ctx, char *why, size_t whysz) {
    float *d = (float *)ctx + at;
    size_t i;
    (void)why; (void)whysz;
    for (i = 0; i < n; i++) d[i] = st_f16_to_f32((uint16_t)(s[2 * i] | (s[2 * i + 1] << 8)));
    return 0;
}
static int conv_f32(const unsigned char *s, size_t n, size_t at, void *ctx, char *why, size_t whysz) {
    float *d = (float *)ctx + at;
    size_t i;
    (void)why; (void)whysz;
    for (i = 0; i < n; i++) {
        const unsigned char *p = s + 4 * i;
        d[i] = bits_f32((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
    }
    return 0;
}
static int conv_f64(const unsigned char *s, size_t n, size_t at, void *ctx, char *why, size_t whysz) {
    float *d = (float *)ctx + at;
    size_t i;
    (void)why; (void)whysz;
    for (i = 0; i < n; i++) {
        uint64_t u = get_u64le(s + 8 * i);
        double x;
        memcpy(&x, &u, 8);
        d[i] = (float)x;
    }
    return 0;
}

int st_read_f32(st_file *f, const st_tensor *t, float *dst, char *err, size_t errsz) {
    if (!strcmp(t->dtype, "F32")) {
        /* Fast path on little-endian hosts: the bytes are already our floats. */
        if (host_little_endian()) return st_read_raw(f, t, dst, err, errsz);
        return read_chunked(f, t, 4, conv_f32, dst, err, errsz);
    }
    if (!strcmp(t->dtype, "BF16")) return read_chunked(f, t, 2, conv_bf16, dst, err, errsz);
    if (!strcmp(t->dtype, "F16")) return read_chunked(f, t, 2, conv_f16, dst, err, errsz);
    if (!strcmp(t->dtype, "F64")) return read_chunked(f, t, 8, conv_f64, dst, err, errsz);
    return errf(err, errsz, "%s: tensor '%s' has dtype %s; expected a floating type (F32, BF16, F16)", f->path, t->name, t->dtype);
}

typedef struct { int32_t *dst; int kind; } int_ctx; /* kind: 0 I32, 1 I64, 2 U8, 3 BOOL */

static int conv_int(const unsigned char *s, size_t n, size_t at, void *vctx, char *why, size_t whysz) {
    int_ctx *c = (int_ctx *)vctx;
    int32_t *d = c->dst + at;
    size_t i;
    for (i = 0; i < n; i++) {
        switch (c->kind) {
        case 0: d[i] = (int32_t)((uint32_t)s[4 * i] | (uint32_t)s[4 * i + 1] << 8 | (uint32_t)s[4 * i + 2] << 16 | (uint32_t)s[4 * i + 3] << 24); break;
        case 1: {
            int64_t v = (int64_t)get_u64le(s + 8 * i);
            if (v < INT32_MIN || v > INT32_MAX) {
                snprintf(why, whysz, "element %zu = %lld does not fit int32", at + i, (long long)v);
                return -1;
            }
            d[i] = (int32_t)v;
            break;
        }
        case 2: d[i] = s[i]; break;
        default:
            if (s[i] > 1) { snprintf(why, whysz, "element %zu: BOOL byte is %u, expected 0 or 1", at + i, s[i]); return -1; }
            d[i] = s[i];
        }
    }
    return 0;
}

int st_read_i32(st_file *f, const st_tensor *t, int32_t *dst, char *err, size_t errsz) {
    int_ctx c;
    c.dst = dst;
    if (!strcmp(t->dtype, "I32")) c.kind = 0;
    else if (!strcmp(t->dtype, "I64")) c.kind = 1;
    else if (!strcmp(t->dtype, "U8")) c.kind = 2;
    else if (!strcmp(t->dtype, "BOOL")) c.kind = 3;
    else return errf(err, errsz, "%s: tensor '%s' has dtype %s; expected an integer type (I32, I64, U8, BOOL)", f->path, t->name, t->dtype);
    return read_chunked(f, t, st_dtype_size(t->dtype), conv_int, &c, err, errsz);
}

void st_close(st_file *f) {
    if (f->fp) fclose(f->fp);
    free(f->path);
    free(f->tensors);
    free(f->by_name);
    free(f->metadata_json);
    memset(f, 0, sizeof *f);
}

/* ---- writing ------------------------------------------------------------------------- */

static int fill_from_data(void *ctx, int i, size_t at, void *buf, size_t nbytes) {
    const st_write_tensor *ts = (const st_write_tensor *)ctx;
    if (nbytes) memcpy(buf, (const char *)ts[i].data + at, nbytes);
    return 0;
}

int st_write(const char *path, const st_write_tensor *ts, int n, const char *metadata_json, char *err, size_t errsz) {
    int i;
    for (i = 0; i < n; i++)
        if (!ts[i].data && ts[i].ndim >= 0) {
            /* a tensor with zero elements may have NULL data; checked again with its size below */
            size_t numel = 1;
            int k;
            for (k = 0; k < ts[i].ndim && k < ST_MAX_NDIM; k++) numel *= (size_t)(ts[i].shape[k] > 0 ? ts[i].shape[k] : 0);
            if (numel) return errf(err, errsz, "%s: tensor '%s' has no data", path, ts[i].name ? ts[i].name : "?");
        }
    return st_write_fn(path, ts, n, metadata_json, fill_from_data, (void *)ts, err, errsz);
}

/* Header JSON for ts; *sizes gets each tensor's byte count. */
static int build_header(const char *path, const st_write_tensor *ts, int n, const char *metadata_json,
                        clair_buf *h, uint64_t *sizes, char *err, size_t errsz) {
    uint64_t off = 0;
    int i, j, k;
    clair_buf_puts(h, "{");
    if (metadata_json) {
        clair_json m;
        char jerr[256];
        size_t q;
        if (clair_json_parse(metadata_json, strlen(metadata_json), &m, jerr, sizeof jerr))
            return errf(err, errsz, "%s: metadata is not valid JSON: %s", path, jerr);
        if (m.type != CLAIR_JSON_OBJECT) { clair_json_free(&m); return errf(err, errsz, "%s: metadata must be a JSON object", path); }
        for (q = 0; q < m.n; q++)
            if (m.items[q].type != CLAIR_JSON_STRING) {
                errf(err, errsz, "%s: metadata \"%s\" is a %s; safetensors metadata values must be strings", path, m.keys[q], clair_json_type_name(m.items[q].type));
                clair_json_free(&m);
                return -1;
            }
        clair_buf_puts(h, "\"__metadata__\":");
        clair_json_write(h, &m);
        clair_json_free(&m);
        if (n) clair_buf_puts(h, ",");
    }
    for (i = 0; i < n; i++) {
        const st_write_tensor *t = &ts[i];
        size_t es;
        uint64_t numel = 1;
        if (!t->name || !t->name[0] || strlen(t->name) >= sizeof ((st_tensor *)0)->name || !strcmp(t->name, "__metadata__"))
            return errf(err, errsz, "%s: tensor %d has an empty, reserved or too long name", path, i);
        for (j = 0; j < i; j++)
            if (!strcmp(ts[j].name, t->name)) return errf(err, errsz, "%s: tensor '%s' given twice", path, t->name);
        es = t->dtype ? st_dtype_size(t->dtype) : 0;
        if (!es) return errf(err, errsz, "%s: tensor '%s': unknown dtype '%s'", path, t->name, t->dtype ? t->dtype : "(null)");
        if (t->ndim < 0 || t->ndim > ST_MAX_NDIM) return errf(err, errsz, "%s: tensor '%s': ndim %d out of range", path, t->name, t->ndim);
        for (k = 0; k < t->ndim; k++) {
            if (t->shape[k] < 0) return errf(err, errsz, "%s: tensor '%s': negative shape", path, t->name);
            if (t->shape[k] && numel > UINT64_MAX / (uint64_t)t->shape[k] / es) return errf(err, errsz, "%s: tensor '%s': shape overflows", path, t->name);
            numel *= (uint64_t)t->shape[k];
        }
        sizes[i] = numel * es;
        if (i) clair_buf_puts(h, ",");
        clair_json_write_string(h, t->name, strlen(t->name));
        clair_buf_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", t->dtype);
        for (k = 0; k < t->ndim; k++) clair_buf_printf(h, "%s%lld", k ? "," : "", (long long)t->shape[k]);
        clair_buf_printf(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)(off + sizes[i]));
        off += sizes[i];
    }
    clair_buf_puts(h, "}");
    /* Pad with spaces so the data starts 8-byte aligned (JSON allows trailing whitespace). */
    while ((8 + h->len) % 8) clair_buf_puts(h, " ");
    if (h->oom) return errf(err, errsz, "%s: out of memory building the header", path);
    if (h->len > ST_MAX_HEADER) return errf(err, errsz, "%s: header would be %zu bytes, over the %u limit", path, h->len, ST_MAX_HEADER);
    return 0;
}

int st_write_fn(const char *path, const st_write_tensor *ts, int n, const char *metadata_json,
                st_fill_fn fill, void *ctx, char *err, size_t errsz) {
    clair_buf h;
    uint64_t *sizes = NULL;
    unsigned char lenbuf[8];
    char *tmp = NULL;
    void *buf = NULL;
    FILE *fp = NULL;
    int i, rc = -1;

    memset(&h, 0, sizeof h);
    if (n < 0) return errf(err, errsz, "%s: negative tensor count", path);
    sizes = (uint64_t *)calloc((size_t)n + 1, sizeof *sizes);
    tmp = (char *)malloc(strlen(path) + 32);
    if (!sizes || !tmp) { errf(err, errsz, "%s: out of memory", path); goto done; }
    if (build_header(path, ts, n, metadata_json, &h, sizes, err, errsz)) goto done;

    sprintf(tmp, "%s.tmp.%ld", path, (long)getpid());
    fp = fopen(tmp, "wb");
    if (!fp) { errf(err, errsz, "%s: cannot create: %s", tmp, strerror(errno)); goto done; }
    for (i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    if (fwrite(lenbuf, 1, 8, fp) != 8 || fwrite(h.data, 1, h.len, fp) != h.len) goto write_err;
    buf = malloc(ST_CHUNK);
    if (!buf) { errf(err, errsz, "%s: out of memory", path); goto done; }
    for (i = 0; i < n; i++) {
        uint64_t at = 0;
        if (fill == fill_from_data) { /* plain data: straight from the caller's memory */
            if (sizes[i] && fwrite(ts[i].data, 1, (size_t)sizes[i], fp) != (size_t)sizes[i]) goto write_err;
            continue;
        }
        while (at < sizes[i]) { /* ST_CHUNK is a multiple of every dtype size: chunks are whole elements */
            size_t k = sizes[i] - at < ST_CHUNK ? (size_t)(sizes[i] - at) : ST_CHUNK;
            if (fill(ctx, i, (size_t)at, buf, k)) { errf(err, errsz, "%s: could not produce the data of tensor '%s'", path, ts[i].name); goto done; }
            if (fwrite(buf, 1, k, fp) != k) goto write_err;
            at += k;
        }
    }
    /* Durable before visible: flush and fsync the temporary, then rename over the target. */
    if (fflush(fp) || fsync(fileno(fp))) goto write_err;
    if (fclose(fp)) { fp = NULL; goto write_err; }
    fp = NULL;
    if (rename(tmp, path)) { errf(err, errsz, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno)); goto done; }
    rc = 0;
    goto done;
write_err:
    errf(err, errsz, "%s: write failed: %s (disk full?)", tmp, strerror(errno));
done:
    if (fp) fclose(fp);
    if (rc && tmp) remove(tmp);
    free(tmp);
    free(buf);
    free(sizes);
    clair_buf_free(&h);
    return rc;
}
