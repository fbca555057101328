/* clair.h - CLAIR preference pairs (Contrastive Learning from AI Revisions), single-file header.
 *
 * (The tutorial-style documentation of this header is written at the top of the file; see the
 * sections below for each part's contract.)
 *
 * Incantation, in exactly one C or C++ file:
 *     #define CLAIR_IMPLEMENTATION
 *     #include "clair.h"
 * Options (define before the include):
 *     CLAIR_STATIC    all functions static (private to the including file)
 *     CLAIR_NO_CURL   compile out the HTTP request part (no libcurl needed)
 *     CLAIR_MALLOC / CLAIR_REALLOC / CLAIR_FREE   allocator
 */
#ifndef CLAIR_H
#define CLAIR_H

#include <stddef.h>

#ifdef CLAIR_STATIC
#define CLAIR_DEF static
#else
#define CLAIR_DEF extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ============================================================================================
 * JSON: a small strict reader and writer (RFC 8259), used for server replies, JSONL records,
 * and by the trainer for config.json, tokenizer.json and safetensors headers.
 *
 * clair_json_parse builds a tree; every string is UTF-8 and NUL-terminated (len excludes the
 * NUL; a "\u0000" escape makes an embedded NUL, so use len). Invalid UTF-8, lone surrogates,
 * control characters in strings, bad escapes, trailing commas, leading zeros, NaN/Infinity,
 * trailing garbage and nesting deeper than CLAIR_JSON_MAX_DEPTH are errors. The error message
 * says "line L, column C: what".
 * ========================================================================================== */

#define CLAIR_JSON_MAX_DEPTH 512

typedef enum {
    CLAIR_JSON_NULL, CLAIR_JSON_BOOL, CLAIR_JSON_NUMBER, CLAIR_JSON_STRING,
    CLAIR_JSON_ARRAY, CLAIR_JSON_OBJECT
} clair_json_type;

typedef struct clair_json {
    clair_json_type type;
    int boolean;                 /* BOOL: 0 or 1 */
    double number;               /* NUMBER */
    char *str;                   /* STRING: UTF-8, NUL-terminated */
    size_t len;                  /* STRING: byte length (excluding the NUL) */
    struct clair_json *items;    /* ARRAY: elements; OBJECT: values (in document order) */
    char **keys;                 /* OBJECT: keys, parallel to items (NUL-terminated) */
    size_t *key_lens;            /* OBJECT: key byte lengths */
    size_t n;                    /* ARRAY/OBJECT: number of items */
} clair_json;

/* Parses text[0..len). 0 on success (free with clair_json_free), -1 with a message in err. */
CLAIR_DEF int clair_json_parse(const char *text, size_t len, clair_json *out, char *err, size_t errsz);
CLAIR_DEF void clair_json_free(clair_json *v);
/* Member of an object by key (the last one if a key repeats); NULL if absent or not an object. */
CLAIR_DEF const clair_json *clair_json_get(const clair_json *obj, const char *key);
/* Conveniences: a member's string (NULL if absent or not a string); a member's number (0 if
 * present and a number, -1 otherwise); a member's integer (0 if present, a number and an exact
 * integer within [-2^53, 2^53], -1 otherwise). */
CLAIR_DEF const char *clair_json_get_str(const clair_json *obj, const char *key);
CLAIR_DEF int clair_json_get_num(const clair_json *obj, const char *key, double *out);
CLAIR_DEF int clair_json_get_int(const clair_json *obj, const char *key, long long *out);
CLAIR_DEF const char *clair_json_type_name(clair_json_type t);

/* A growable byte buffer for writing. Zero-initialise it. On allocation failure `oom` is set
 * and later writes are ignored; data is always NUL-terminated once anything was written. */
typedef struct { char *data; size_t len, cap; int oom; } clair_buf;
CLAIR_DEF void clair_buf_put(clair_buf *b, const char *s, size_t n);
CLAIR_DEF void clair_buf_puts(clair_buf *b, const char *s);
CLAIR_DEF void clair_buf_printf(clair_buf *b, const char *fmt, ...);
CLAIR_DEF void clair_buf_free(clair_buf *b);
/* Writes s[0..n) as a quoted JSON string (escapes ", \, control characters; UTF-8 kept). */
CLAIR_DEF void clair_json_write_string(clair_buf *b, const char *s, size_t n);
/* Writes a number: integers exactly, others with 17 significant digits; NaN/Inf as null. */
CLAIR_DEF void clair_json_write_number(clair_buf *b, double x);
/* Writes a whole tree compactly (no spaces), keys in stored order. */
CLAIR_DEF void clair_json_write(clair_buf *b, const clair_json *v);

/* Validates UTF-8 (no overlongs, no surrogates, <= U+10FFFF). Returns the byte offset of the
 * first invalid sequence, or len if all valid. */
CLAIR_DEF size_t clair_utf8_check(const char *s, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* CLAIR_H */

/* ============================================================================================
 * Implementation
 * ========================================================================================== */
#ifdef CLAIR_IMPLEMENTATION
#ifndef CLAIR_IMPLEMENTATION_DONE
#define CLAIR_IMPLEMENTATION_DONE

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#ifndef CLAIR_MALLOC
#define CLAIR_MALLOC(n) malloc(n)
#define CLAIR_REALLOC(p, n) realloc(p, n)
#define CLAIR_FREE(p) free(p)
#endif

/* ---- buffer ---- */

CLAIR_DEF void clair_buf_put(clair_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) {
            if (cap > ((size_t)-1) / 2) { b->oom = 1; return; }
            cap *= 2;
        }
        char *p = (char *)CLAIR_REALLOC(b->data, cap);
        if (!p) { b->oom = 1; return; }
        b->data = p; b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
}

CLAIR_DEF void clair_buf_puts(clair_buf *b, const char *s) { clair_buf_put(b, s, strlen(s)); }

CLAIR_DEF void clair_buf_printf(clair_buf *b, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) { b->oom = 1; return; }
    if ((size_t)n < sizeof small) { clair_buf_put(b, small, (size_t)n); return; }
    char *big = (char *)CLAIR_MALLOC((size_t)n + 1);
    if (!big) { b->oom = 1; return; }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    clair_buf_put(b, big, (size_t)n);
    CLAIR_FREE(big);
}

CLAIR_DEF void clair_buf_free(clair_buf *b) {
    CLAIR_FREE(b->data);
    b->data = NULL; b->len = b->cap = 0; b->oom = 0;
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if invalid. */
static size_t clair__utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;                         /* continuation byte or overlong 2-byte */
    if (c < 0xE0) return (n >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c < 0xF0) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0;     /* overlong */
        if (c == 0xED && s[1] >= 0xA0) return 0;    /* UTF-16 surrogate */
        return 3;
    }
    if (c < 0xF5) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0;     /* overlong */
        if (c == 0xF4 && s[1] >= 0x90) return 0;    /* above U+10FFFF */
        return 4;
    }
    return 0;
}

CLAIR_DEF size_t clair_utf8_check(const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        if (u[i] < 0x80) { i++; continue; }
        size_t k = clair__utf8_seq(u + i, len - i);
        if (!k) return i;
        i += k;
    }
    return len;
}

/* ---- reader ---- */

typedef struct {
    const char *s;
    size_t n, i;
    int depth;
    char *err;
    size_t errsz;
    int failed;
} clair__jp;

static void clair__jerr(clair__jp *p, const char *what) {
    if (p->failed) return;
    p->failed = 1;
    size_t line = 1, col = 1, i;
    for (i = 0; i < p->i && i < p->n; i++) {
        if (p->s[i] == '\n') { line++; col = 1; } else col++;
    }
    if (p->err && p->errsz)
        snprintf(p->err, p->errsz, "line %zu, column %zu: %s", line, col, what);
}

static void clair__jws(clair__jp *p) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') p->i++;
        else break;
    }
}

static int clair__hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    int k;
    for (k = 0; k < 4; k++) {
        char c = s[k];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static void clair__put_utf8(clair_buf *b, unsigned cp) {
    char t[4];
    if (cp < 0x80) { t[0] = (char)cp; clair_buf_put(b, t, 1); }
    else if (cp < 0x800) { t[0] = (char)(0xC0 | (cp >> 6)); t[1] = (char)(0x80 | (cp & 63)); clair_buf_put(b, t, 2); }
    else if (cp < 0x10000) {
        t[0] = (char)(0xE0 | (cp >> 12)); t[1] = (char)(0x80 | ((cp >> 6) & 63));
        t[2] = (char)(0x80 | (cp & 63)); clair_buf_put(b, t, 3);
    } else {
        t[0] = (char)(0xF0 | (cp >> 18)); t[1] = (char)(0x80 | ((cp >> 12) & 63));
        t[2] = (char)(0x80 | ((cp >> 6) & 63)); t[3] = (char)(0x80 | (cp & 63)); clair_buf_put(b, t, 4);
    }
}

/* Parses a string starting at the opening quote; returns a malloc'd copy in *out. */
static int clair__jstring(clair__jp *p, char **out, size_t *out_len) {
    clair_buf b;
    memset(&b, 0, sizeof b);
    p->i++; /* opening quote */
    for (;;) {
        /* copy a run of plain bytes at once */
        size_t start = p->i;
        while (p->i < p->n) {
            unsigned char c = (unsigned char)p->s[p->i];
            if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
            p->i++;
        }
        clair_buf_put(&b, p->s + start, p->i - start);
        if (p->i >= p->n) { clair__jerr(p, "unterminated string"); goto fail; }
        unsigned char c = (unsigned char)p->s[p->i];
        if (c == '"') { p->i++; break; }
        if (c < 0x20) { clair__jerr(p, "control character in string (escape it as \\uXXXX)"); goto fail; }
        if (c >= 0x80) {
            size_t k = clair__utf8_seq((const unsigned char *)p->s + p->i, p->n - p->i);
            if (!k) { clair__jerr(p, "invalid UTF-8 in string"); goto fail; }
            clair_buf_put(&b, p->s + p->i, k);
            p->i += k;
            continue;
        }
        /* backslash escape */
        if (p->i + 1 >= p->n) { clair__jerr(p, "unterminated escape"); goto fail; }
        char e = p->s[p->i + 1];
        const char *simple = NULL;
        switch (e) {
        case '"': simple = "\""; break;
        case '\\': simple = "\\"; break;
        case '/': simple = "/"; break;
        case 'b': simple = "\b"; break;
        case 'f': simple = "\f"; break;
        case 'n': simple = "\n"; break;
        case 'r': simple = "\r"; break;
        case 't': simple = "\t"; break;
        case 'u': break;
        default: clair__jerr(p, "invalid escape (allowed: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)"); goto fail;
        }
        if (simple) { clair_buf_put(&b, simple, 1); p->i += 2; continue; }
        unsigned cp, lo;
        if (p->i + 6 > p->n || clair__hex4(p->s + p->i + 2, &cp)) { clair__jerr(p, "invalid \\u escape (need 4 hex digits)"); goto fail; }
        if (cp >= 0xDC00 && cp <= 0xDFFF) { clair__jerr(p, "lone low surrogate in \\u escape"); goto fail; }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (p->i + 12 > p->n || p->s[p->i + 6] != '\\' || p->s[p->i + 7] != 'u' ||
                clair__hex4(p->s + p->i + 8, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                clair__jerr(p, "high surrogate \\u escape not followed by a low surrogate");
                goto fail;
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            p->i += 6;
        }
        clair__put_utf8(&b, cp);
        p->i += 6;
    }
    if (b.oom) { clair__jerr(p, "out of memory"); goto fail; }
    if (!b.data) { b.data = (char *)CLAIR_MALLOC(1); if (!b.data) { clair__jerr(p, "out of memory"); return -1; } b.data[0] = 0; }
    *out = b.data;
    *out_len = b.len;
    return 0;
fail:
    clair_buf_free(&b);
    return -1;
}

static int clair__jnumber(clair__jp *p, double *out) {
    size_t st = p->i, i = p->i;
    const char *s = p->s;
    if (i < p->n && s[i] == '-') i++;
    if (i >= p->n || !(s[i] >= '0' && s[i] <= '9')) { p->i = i; clair__jerr(p, "invalid number"); return -1; }
    if (s[i] == '0') {
        i++;
        if (i < p->n && s[i] >= '0' && s[i] <= '9') { p->i = i; clair__jerr(p, "leading zero in number"); return -1; }
    } else while (i < p->n && s[i] >= '0' && s[i] <= '9') i++;
    if (i < p->n && s[i] == '.') {
        i++;
        if (i >= p->n || !(s[i] >= '0' && s[i] <= '9')) { p->i = i; clair__jerr(p, "digit expected after '.'"); return -1; }
        while (i < p->n && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < p->n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < p->n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= p->n || !(s[i] >= '0' && s[i] <= '9')) { p->i = i; clair__jerr(p, "digit expected in exponent"); return -1; }
        while (i < p->n && s[i] >= '0' && s[i] <= '9') i++;
    }
    char small[64], *tmp = small;
    size_t k = i - st;
    if (k >= sizeof small) { tmp = (char *)CLAIR_MALLOC(k + 1); if (!tmp) { clair__jerr(p, "out of memory"); return -1; } }
    memcpy(tmp, s + st, k);
    tmp[k] = 0;
    *out = strtod(tmp, NULL);
    if (tmp != small) CLAIR_FREE(tmp);
    p->i = i;
    return 0;
}

static int clair__jvalue(clair__jp *p, clair_json *v);

static int clair__jpush(clair__jp *p, clair_json *v, size_t *cap) {
    if (v->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        clair_json *it = (clair_json *)CLAIR_REALLOC(v->items, nc * sizeof *it);
        if (!it) { clair__jerr(p, "out of memory"); return -1; }
        v->items = it;
        if (v->type == CLAIR_JSON_OBJECT) {
            char **k = (char **)CLAIR_REALLOC(v->keys, nc * sizeof *k);
            if (!k) { clair__jerr(p, "out of memory"); return -1; }
            v->keys = k;
            size_t *kl = (size_t *)CLAIR_REALLOC(v->key_lens, nc * sizeof *kl);
            if (!kl) { clair__jerr(p, "out of memory"); return -1; }
            v->key_lens = kl;
        }
        *cap = nc;
    }
    return 0;
}

static int clair__jcontainer(clair__jp *p, clair_json *v, int object) {
    size_t cap = 0;
    char close = object ? '}' : ']';
    v->type = object ? CLAIR_JSON_OBJECT : CLAIR_JSON_ARRAY;
    if (++p->depth > CLAIR_JSON_MAX_DEPTH) { clair__jerr(p, "nesting too deep"); return -1; }
    p->i++;
    clair__jws(p);
    if (p->i < p->n && p->s[p->i] == close) { p->i++; p->depth--; return 0; }
    for (;;) {
        if (clair__jpush(p, v, &cap)) return -1;
        clair_json *item = &v->items[v->n];
        memset(item, 0, sizeof *item);
        if (object) {
            clair__jws(p);
            if (p->i >= p->n || p->s[p->i] != '"') { clair__jerr(p, "object key (a string) expected"); return -1; }
            char *key; size_t klen;
            if (clair__jstring(p, &key, &klen)) return -1;
            v->keys[v->n] = key;
            v->key_lens[v->n] = klen;
            v->n++;                         /* counted now so that a failure below frees the key */
            clair__jws(p);
            if (p->i >= p->n || p->s[p->i] != ':') { clair__jerr(p, "':' expected after object key"); return -1; }
            p->i++;
            if (clair__jvalue(p, item)) return -1;
        } else {
            v->n++;
            if (clair__jvalue(p, item)) return -1;
        }
        clair__jws(p);
        if (p->i < p->n && p->s[p->i] == ',') { p->i++; clair__jws(p);
            if (p->i < p->n && p->s[p->i] == close) { clair__jerr(p, "trailing comma"); return -1; }
            continue; }
        if (p->i < p->n && p->s[p->i] == close) { p->i++; break; }
        clair__jerr(p, object ? "',' or '}' expected in object" : "',' or ']' expected in array");
        return -1;
    }
    p->depth--;
    return 0;
}

static int clair__jvalue(clair__jp *p, clair_json *v) {
    memset(v, 0, sizeof *v);
    clair__jws(p);
    if (p->i >= p->n) { clair__jerr(p, "value expected, found end of input"); return -1; }
    char c = p->s[p->i];
    switch (c) {
    case '{': return clair__jcontainer(p, v, 1);
    case '[': return clair__jcontainer(p, v, 0);
    case '"': v->type = CLAIR_JSON_STRING; return clair__jstring(p, &v->str, &v->len);
    case 't': case 'f': case 'n': {
        const char *word = c == 't' ? "true" : c == 'f' ? "false" : "null";
        size_t k = strlen(word);
        if (p->n - p->i < k || memcmp(p->s + p->i, word, k)) { clair__jerr(p, "invalid literal (expected true, false or null)"); return -1; }
        p->i += k;
        v->type = c == 'n' ? CLAIR_JSON_NULL : CLAIR_JSON_BOOL;
        v->boolean = c == 't';
        return 0;
    }
    default:
        if (c == '-' || (c >= '0' && c <= '9')) { v->type = CLAIR_JSON_NUMBER; return clair__jnumber(p, &v->number); }
        clair__jerr(p, "unexpected character (expected a JSON value)");
        return -1;
    }
}

CLAIR_DEF int clair_json_parse(const char *text, size_t len, clair_json *out, char *err, size_t errsz) {
    clair__jp p;
    memset(&p, 0, sizeof p);
    p.s = text; p.n = len; p.err = err; p.errsz = errsz;
    if (err && errsz) err[0] = 0;
    int rc = clair__jvalue(&p, out);
    if (!rc) {
        clair__jws(&p);
        if (p.i != p.n) { clair__jerr(&p, "unexpected data after the JSON value"); rc = -1; }
    }
    if (rc) { clair_json_free(out); memset(out, 0, sizeof *out); return -1; }
    return 0;
}

CLAIR_DEF void clair_json_free(clair_json *v) {
    size_t i;
    if (!v) return;
    if (v->type == CLAIR_JSON_STRING) CLAIR_FREE(v->str);
    if (v->type == CLAIR_JSON_ARRAY || v->type == CLAIR_JSON_OBJECT) {
        for (i = 0; i < v->n; i++) {
            clair_json_free(&v->items[i]);
            if (v->keys) CLAIR_FREE(v->keys[i]);
        }
        CLAIR_FREE(v->items);
        CLAIR_FREE(v->keys);
        CLAIR_FREE(v->key_lens);
    }
    memset(v, 0, sizeof *v);
}

CLAIR_DEF const clair_json *clair_json_get(const clair_json *obj, const char *key) {
    size_t i, k;
    if (!obj || obj->type != CLAIR_JSON_OBJECT) return NULL;
    k = strlen(key);
    for (i = obj->n; i-- > 0;)
        if (obj->key_lens[i] == k && !memcmp(obj->keys[i], key, k)) return &obj->items[i];
    return NULL;
}

CLAIR_DEF const char *clair_json_get_str(const clair_json *obj, const char *key) {
    const clair_json *v = clair_json_get(obj, key);
    return v && v->type == CLAIR_JSON_STRING ? v->str : NULL;
}

CLAIR_DEF int clair_json_get_num(const clair_json *obj, const char *key, double *out) {
    const clair_json *v = clair_json_get(obj, key);
    if (!v || v->type != CLAIR_JSON_NUMBER) return -1;
    *out = v->number;
    return 0;
}

CLAIR_DEF int clair_json_get_int(const clair_json *obj, const char *key, long long *out) {
    double d;
    if (clair_json_get_num(obj, key, &d)) return -1;
    if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0) || d != floor(d)) return -1;
    *out = (long long)d;
    return 0;
}

CLAIR_DEF const char *clair_json_type_name(clair_json_type t) {
    switch (t) {
    case CLAIR_JSON_NULL: return "null";
    case CLAIR_JSON_BOOL: return "boolean";
    case CLAIR_JSON_NUMBER: return "number";
    case CLAIR_JSON_STRING: return "string";
    case CLAIR_JSON_ARRAY: return "array";
    case CLAIR_JSON_OBJECT: return "object";
    }
    return "?";
}

/* ---- writer ---- */

CLAIR_DEF void clair_json_write_string(clair_buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    size_t i, run = 0;
    clair_buf_put(b, "\"", 1);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c == '\b') esc = "\\b";
        else if (c == '\f') esc = "\\f";
        else if (c < 0x20) {
            u[0] = '\\'; u[1] = 'u'; u[2] = '0'; u[3] = '0'; u[4] = hex[c >> 4]; u[5] = hex[c & 15]; u[6] = 0;
            esc = u;
        }
        if (esc) {
            clair_buf_put(b, s + run, i - run);
            clair_buf_puts(b, esc);
            run = i + 1;
        }
    }
    clair_buf_put(b, s + run, n - run);
    clair_buf_put(b, "\"", 1);
}

CLAIR_DEF void clair_json_write_number(clair_buf *b, double x) {
    if (x != x || x - x != 0) { clair_buf_puts(b, "null"); return; }
    if (x == floor(x) && fabs(x) < 9007199254740992.0) { clair_buf_printf(b, "%.0f", x); return; }
    clair_buf_printf(b, "%.17g", x);
}

CLAIR_DEF void clair_json_write(clair_buf *b, const clair_json *v) {
    size_t i;
    switch (v->type) {
    case CLAIR_JSON_NULL: clair_buf_puts(b, "null"); break;
    case CLAIR_JSON_BOOL: clair_buf_puts(b, v->boolean ? "true" : "false"); break;
    case CLAIR_JSON_NUMBER: clair_json_write_number(b, v->number); break;
    case CLAIR_JSON_STRING: clair_json_write_string(b, v->str, v->len); break;
    case CLAIR_JSON_ARRAY:
        clair_buf_put(b, "[", 1);
        for (i = 0; i < v->n; i++) { if (i) clair_buf_put(b, ",", 1); clair_json_write(b, &v->items[i]); }
        clair_buf_put(b, "]", 1);
        break;
    case CLAIR_JSON_OBJECT:
        clair_buf_put(b, "{", 1);
        for (i = 0; i < v->n; i++) {
            if (i) clair_buf_put(b, ",", 1);
            clair_json_write_string(b, v->keys[i], v->key_lens[i]);
            clair_buf_put(b, ":", 1);
            clair_json_write(b, &v->items[i]);
        }
        clair_buf_put(b, "}", 1);
        break;
    }
}

#endif /* CLAIR_IMPLEMENTATION_DONE */
#endif /* CLAIR_IMPLEMENTATION */
