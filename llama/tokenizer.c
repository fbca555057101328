/* llama/tokenizer.c - text to token ids exactly as Hugging Face `tokenizers` does it, and the chat
 * templates preference training needs. Contract: llama/tokenizer.h. Design notes: docs/design.md.
 *
 * Reading order: small helpers (hash tables, UTF-8, Unicode classes), loading tokenizer.json,
 * the pre-tokenizers (hand-written matchers for the Llama 3 and GPT-2 Split regexes), BPE with a
 * merge priority queue, encode, decode, chat templates.
 *
 * Two model kinds:
 *   BYTELEVEL  Llama 3 / SmolLM2 / GPT-2: text bytes are the initial symbols (the vocab's strings
 *              are GPT-2's printable stand-ins for bytes; we key our tables by the raw bytes).
 *   SPM        Llama 2 / TinyLlama (sentencepiece BPE converted by transformers): spaces become
 *              U+2581, a U+2581 is prepended, characters are the initial symbols, characters
 *              missing from the vocab fall back to <0xNN> byte tokens.
 */
#define _POSIX_C_SOURCE 200809L   /* pthread mutex for the word cache */
#include "../util.h"
#include "tokenizer.h"
#include "unicode_data.h"
#include "../clair.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ============================================================================================
 * Small helpers
 * ========================================================================================== */


int tok_ids_push(tok_ids *v, int id) {
    if (v->len == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 64;
        int *d = (int *)realloc(v->data, nc * sizeof *d);
        if (!d) return -1;
        v->data = d;
        v->cap = nc;
    }
    v->data[v->len++] = id;
    return 0;
}

void tok_ids_free(tok_ids *v) {
    free(v->data);
    v->data = NULL;
    v->len = v->cap = 0;
}

static uint64_t tok__hash(const unsigned char *s, size_t n) {  /* FNV-1a, 64 bit */
    uint64_t h = 1469598103934665603ull;
    size_t i;
    for (i = 0; i < n; i++) { h ^= s[i]; h *= 1099511628211ull; }
    return h;
}

/* Decodes one UTF-8 character at s[0..n). Returns its length (1..4) and the code point in *cp;
 * an invalid or truncated sequence gives length 1 and *cp = TOK_INVALID + the byte, which the
 * pre-tokenizers treat as a character that is neither letter, number nor space. */
#define TOK_INVALID 0x110000u
#define TOK_MAX_FILE ((size_t)1 << 30)   /* tokenizer files are MBs; refuse anything absurd before reading it */
static int tok__utf8(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    if (c >= 0xC2 && c <= 0xDF && n >= 2 && (s[1] & 0xC0) == 0x80) {
        *cp = ((c & 0x1F) << 6) | (s[1] & 0x3F);
        return 2;
    }
    if (c >= 0xE0 && c <= 0xEF && n >= 3 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80) {
        uint32_t v = ((c & 0x0F) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3F);
        if (v >= 0x800 && (v < 0xD800 || v > 0xDFFF)) { *cp = v; return 3; }
    }
    if (c >= 0xF0 && c <= 0xF4 && n >= 4 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 &&
        (s[3] & 0xC0) == 0x80) {
        uint32_t v = ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3F);
        if (v >= 0x10000 && v <= 0x10FFFF) { *cp = v; return 4; }
    }
    *cp = TOK_INVALID + c;
    return 1;
}

static char *tok__strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = (char *)malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Unicode class bits of a code point (TOK_UCD_LETTER / NUMBER / SPACE); invalid bytes: 0. */
static inline int tok__ucd(uint32_t cp) {
    if (cp > 0x10FFFF) return 0;
    return tok_ucd_stage2[(size_t)tok_ucd_stage1[cp >> 8] * 256 + (cp & 255)];
}
#define IS_L(c) (tok__ucd(c) & TOK_UCD_LETTER)
#define IS_N(c) (tok__ucd(c) & TOK_UCD_NUMBER)
#define IS_S(c) (tok__ucd(c) & TOK_UCD_SPACE)

/* Python's str.isspace (what Jinja's trim / str.strip remove): White_Space plus U+001C..U+001F. */
static int tok__py_space(uint32_t c) { return IS_S(c) || (c >= 0x1C && c <= 0x1F); }

/* ============================================================================================
 * The tokenizer
 * ========================================================================================== */

enum { TOK_BYTELEVEL = 1, TOK_SPM = 2 };
enum { PRE_NONE = 0, PRE_LLAMA3 = 1, PRE_GPT2 = 2 };
enum { TPL_NONE = 0, TPL_LLAMA3, TPL_LLAMA31, TPL_CHATML, TPL_LLAMA2 };

typedef struct { uint64_t key; int rank, id; } tok_merge;   /* key = left << 32 | right */
typedef struct { char *s; int len, id, special; } tok_added;

struct tokenizer {
    int kind;                 /* TOK_BYTELEVEL or TOK_SPM */
    int pre;                  /* PRE_* : the Split regex (byte-level only) */
    int digits;               /* a Digits(individual_digits=true) pre-tokenizer runs first */
    int ignore_merges;        /* a word found whole in the vocab is one token (Llama 3) */
    int byte_fallback, fuse_unk, unk_id;
    int spm_prepend;          /* SPM: 1 = prepend U+2581 to every segment (legacy normalizer),
                                 2 = Metaspace prepend_scheme "first", 3 = "always", 0 = never */
    int spm_strip;            /* SPM decoder strips one leading space */
    int spm_bytes;            /* SPM decoder has ByteFallback: <0xNN> decodes to the byte */
    int n_ids;                /* 1 + largest id (vocab and added tokens) */
    /* id -> bytes it decodes to [n_ids] (NULL for holes) */
    unsigned char **dec; int *dec_len;
    /* vocab lookup: bytes (BYTELEVEL: raw bytes; SPM: the UTF-8 string) -> id; open addressing */
    int *vtab; size_t vmask;
    unsigned char **key; int *klen;   /* [n_ids] the lookup keys (BYTELEVEL: = dec) */
    unsigned char added_first[256];   /* 1 if some added token starts with this byte */
    int byte_id[256];         /* BYTELEVEL: id of each single byte; SPM: id of <0xNN> or -1 */
    tok_merge *mtab; size_t mmask;
    tok_added *added; int n_added;
    int bos_id, eos_id;
    int tpl; char *tpl_system;  /* default system message (chatml) or NULL */
    char *date;                 /* llama3.1: the date string */
    char *bos_tok, *eos_tok;    /* template strings of bos/eos */
    /* word cache (BYTELEVEL): pre-token bytes -> ids, to skip BPE for repeated words. The only
     * state encode changes: an encode call uses it when it gets cache_lock without waiting, and
     * goes without it otherwise, so concurrent encodes on one tokenizer are safe. */
    struct tok_cache_e { uint64_t h; unsigned char *w; int wlen; int *ids; int n; } *cache;
    size_t cache_mask;
    pthread_mutex_t cache_lock;
};

static void tok__mput(tokenizer *t, int l, int r, int rank, int id) {
    uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & t->mmask;
    while (t->mtab[i].id >= 0) {
        if (t->mtab[i].key == key) break;   /* a repeated merge: the later one wins, as in HF's map */
        i = (i + 1) & t->mmask;
    }
    t->mtab[i].key = key; t->mtab[i].rank = rank; t->mtab[i].id = id;
}

static const tok_merge *tok__mget(const tokenizer *t, int l, int r) {
    uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & t->mmask;
    while (t->mtab[i].id >= 0) {
        if (t->mtab[i].key == key) return &t->mtab[i];
        i = (i + 1) & t->mmask;
    }
    return NULL;
}

/* ---- the GPT-2 byte <-> printable character map ---- */
static uint32_t tok__b2u[256];
static int tok__u2b(uint32_t cp) {   /* inverse: printable stand-in -> byte, or -1 */
    if (cp < 256 && tok__b2u[cp] == cp) return (int)cp;
    if (cp >= 256 && cp < 256 + 68) {
        int b;
        for (b = 0; b < 256; b++) if (tok__b2u[b] == cp) return b;
    }
    return -1;
}
static void tok__init_bytemap(void) {
    int b, n = 0;
    for (b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        tok__b2u[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
    }
}

/* A vocab string (as in tokenizer.json) -> the bytes it stands for. BYTELEVEL: each character
 * is a byte's stand-in; a string with a character outside the map keeps its UTF-8 bytes (as HF's
 * ByteLevel decoder does). SPM: U+2581 -> space, "<0xNN>" -> that byte. Returns malloc'd bytes. */
#define TOK_SPM_BYTES 0x100   /* or'ed into kind: <0xNN> decodes to the byte (ByteFallback decoder) */
static unsigned char *tok__to_bytes(int kind, const char *s, size_t n, int *out_len) {
    unsigned char *o = (unsigned char *)malloc(n + 1);
    size_t i = 0;
    int k = 0;
    if (!o) return NULL;
    if (kind == TOK_BYTELEVEL) {
        while (i < n) {
            uint32_t cp;
            int l = tok__utf8((const unsigned char *)s + i, n - i, &cp), b = tok__u2b(cp);
            if (b < 0) { memcpy(o, s, n); *out_len = (int)n; return o; }
            o[k++] = (unsigned char)b;
            i += (size_t)l;
        }
    } else {
        if ((kind & TOK_SPM_BYTES) && n == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>') {
            unsigned v;
            if (sscanf(s + 3, "%2X", &v) == 1) { o[0] = (unsigned char)v; *out_len = 1; return o; }
        }
        while (i < n) {
            if (i + 3 <= n && (unsigned char)s[i] == 0xE2 && (unsigned char)s[i + 1] == 0x96 &&
                (unsigned char)s[i + 2] == 0x81) { o[k++] = ' '; i += 3; }
            else o[k++] = (unsigned char)s[i++];
        }
    }
    *out_len = k;
    return o;
}

/* ============================================================================================
 * Loading
 * ========================================================================================== */


static const char *tok__str(const clair_json *o, const char *key) { return clair_json_get_str(o, key); }
static int tok__bool(const clair_json *o, const char *key) {
    const clair_json *v = clair_json_get(o, key);
    return v && v->type == CLAIR_JSON_BOOL && v->boolean;
}
static int tok__is(const clair_json *o, const char *type) {
    const char *s = o ? tok__str(o, "type") : NULL;
    return s && strcmp(s, type) == 0;
}

/* The Split regexes we have hand-written matchers for (exact strings as tokenizer.json has them). */
static const char *TOK_RE_LLAMA3 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *TOK_RE_GPT2 =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* One step of the pre_tokenizer chain. */
static int tok__pre_step(tokenizer *t, const clair_json *p, int *saw_bytelevel, const char *path,
                         char *err, size_t errsz) {
    if (tok__is(p, "ByteLevel")) {
        if (tok__bool(p, "add_prefix_space"))
            return errf(err, errsz, "%s: pre_tokenizer ByteLevel with add_prefix_space=true is not supported", path);
        if (clair_json_get(p, "use_regex") == NULL || tok__bool(p, "use_regex")) {
            if (t->pre) return errf(err, errsz, "%s: pre_tokenizer has two regex splits; not supported", path);
            t->pre = PRE_GPT2;
        }
        *saw_bytelevel = 1;
        return 0;
    }
    if (tok__is(p, "Split")) {
        const clair_json *pat = clair_json_get(p, "pattern");
        const char *re = pat ? tok__str(pat, "Regex") : NULL;
        const char *beh = tok__str(p, "behavior");
        if (!re || !beh || strcmp(beh, "Isolated") || tok__bool(p, "invert"))
            return errf(err, errsz, "%s: pre_tokenizer Split must be an Isolated, non-inverted Regex split", path);
        if (t->pre) return errf(err, errsz, "%s: pre_tokenizer has two regex splits; not supported", path);
        if (strcmp(re, TOK_RE_LLAMA3) == 0) t->pre = PRE_LLAMA3;
        else if (strcmp(re, TOK_RE_GPT2) == 0) t->pre = PRE_GPT2;
        else return errf(err, errsz, "%s: pre_tokenizer Split regex is not one we implement "
                              "(Llama 3's or GPT-2's): %.120s", path, re);
        return 0;
    }
    if (tok__is(p, "Digits")) {
        if (!tok__bool(p, "individual_digits"))
            return errf(err, errsz, "%s: pre_tokenizer Digits needs individual_digits=true", path);
        if (t->pre) return errf(err, errsz, "%s: Digits after a regex split is not supported", path);
        t->digits = 1;
        return 0;
    }
    if (tok__is(p, "Metaspace")) {
        const char *sch = tok__str(p, "prepend_scheme");
        const char *rep = tok__str(p, "replacement");
        if (rep && strcmp(rep, "\xE2\x96\x81"))
            return errf(err, errsz, "%s: Metaspace replacement must be U+2581", path);
        if (!clair_json_get(p, "split") || tok__bool(p, "split"))   /* HF's default is split=true */
            return errf(err, errsz, "%s: Metaspace with split=true (or no \"split\", which means true) "
                             "is not supported", path);
        t->spm_prepend = !sch || !strcmp(sch, "always") ? 3 : !strcmp(sch, "first") ? 2 : 0;
        return 0;
    }
    return errf(err, errsz, "%s: pre_tokenizer type '%s' is not supported (byte-level BPE with "
                     "Llama 3 / GPT-2 splits, or sentencepiece-style BPE only)", path,
                     tok__str(p, "type") ? tok__str(p, "type") : "?");
}

static int tok__build_vtab(tokenizer *t, unsigned char **key, int *klen, int n_vocab_ids, const int *ids) {
    size_t cap = 1, i;
    int j;
    while (cap < (size_t)n_vocab_ids * 2 + 16) cap <<= 1;
    t->vtab = (int *)malloc(cap * sizeof(int));
    if (!t->vtab) return -1;
    for (i = 0; i < cap; i++) t->vtab[i] = -1;
    t->vmask = cap - 1;
    for (j = 0; j < n_vocab_ids; j++) {
        int id = ids[j];
        size_t h = (size_t)tok__hash(key[id], (size_t)klen[id]) & t->vmask;
        while (t->vtab[h] >= 0) {
            int o = t->vtab[h];
            if (klen[o] == klen[id] && memcmp(key[o], key[id], (size_t)klen[id]) == 0) break;
            h = (h + 1) & t->vmask;
        }
        if (t->vtab[h] < 0) t->vtab[h] = id;
    }
    return 0;
}

static int tok__lookup_key(const tokenizer *t, unsigned char *const *key, const int *klen,
                           const unsigned char *s, size_t n) {
    size_t i = (size_t)tok__hash(s, n) & t->vmask;
    for (;;) {
        int id = t->vtab[i];
        if (id < 0) return -1;
        if ((size_t)klen[id] == n && memcmp(key[id], s, n) == 0) return id;
        i = (i + 1) & t->vmask;
    }
}

/* ---- chat template recognition ---- */
static int tok__tpl_family(const char *name) {
    if (!name) return TPL_NONE;
    if (!strcmp(name, "llama3")) return TPL_LLAMA3;
    if (!strcmp(name, "llama3.1")) return TPL_LLAMA31;
    if (!strcmp(name, "chatml")) return TPL_CHATML;
    if (!strcmp(name, "llama2")) return TPL_LLAMA2;
    return -1;
}

/* Copies a Jinja string literal's text starting at s up to `end` (exclusive), unescaping \n. */
static char *tok__unescape(const char *s, size_t n) {
    char *o = (char *)malloc(n + 1);
    size_t i, k = 0;
    if (!o) return NULL;
    for (i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            char c = s[++i];
            o[k++] = c == 'n' ? '\n' : c == 't' ? '\t' : c;
        } else o[k++] = s[i];
    }
    o[k] = 0;
    return o;
}

static int tok__recognise(tokenizer *t, const char *tpl) {
    if (!tpl) return TPL_NONE;
    if (strstr(tpl, "<|start_header_id|>") && strstr(tpl, "<|eot_id|>")) {
        if (strstr(tpl, "Cutting Knowledge Date")) {
            /* llama 3.1 / 3.2 / 3.3: a default date, `set date_string = "26 Jul 2024"` */
            const char *d = strstr(tpl, "set date_string = \"");
            if (d) {
                const char *e;
                d += strlen("set date_string = \"");
                e = strchr(d, '"');
                if (e) t->date = tok__unescape(d, (size_t)(e - d));
            }
            return TPL_LLAMA31;
        }
        return TPL_LLAMA3;
    }
    if (strstr(tpl, "<|im_start|>") && strstr(tpl, "<|im_end|>")) {
        /* SmolLM2: a default system message when the conversation has none */
        const char *key = "messages[0]['role'] != 'system'";
        const char *p = strstr(tpl, key);
        if (p) {
            const char *a = strstr(p, "<|im_start|>system"), *e;
            if (a) {
                a += strlen("<|im_start|>system");
                if (a[0] == '\n') a += 1;
                else if (a[0] == '\\' && a[1] == 'n') a += 2;
                e = strstr(a, "<|im_end|>");
                if (e) t->tpl_system = tok__unescape(a, (size_t)(e - a));
            }
        }
        return TPL_CHATML;
    }
    if (strstr(tpl, "[INST]") && strstr(tpl, "<<SYS>>")) return TPL_LLAMA2;
    return TPL_NONE;
}

/* A special-token field of tokenizer_config.json: a string or {"content": string}. */
static const char *tok__cfg_tok(const clair_json *cfg, const char *key) {
    const clair_json *v = cfg ? clair_json_get(cfg, key) : NULL;
    if (!v) return NULL;
    if (v->type == CLAIR_JSON_STRING) return v->str;
    if (v->type == CLAIR_JSON_OBJECT) return tok__str(v, "content");
    return NULL;
}

/* One entry of model.merges, "a b" or ["a", "b"]: its two parts (pointers and lengths). */
static int tok__merge_parts(const clair_json *m, const char **a, size_t *la, const char **b, size_t *lb) {
    if (m->type == CLAIR_JSON_STRING) {
        const char *sp = (const char *)memchr(m->str, ' ', m->len);
        if (!sp) return -1;
        *a = m->str; *la = (size_t)(sp - m->str); *b = sp + 1; *lb = m->len - *la - 1;
        return 0;
    }
    if (m->type == CLAIR_JSON_ARRAY && m->n == 2 && m->items[0].type == CLAIR_JSON_STRING &&
        m->items[1].type == CLAIR_JSON_STRING) {
        *a = m->items[0].str; *la = m->items[0].len; *b = m->items[1].str; *lb = m->items[1].len;
        return 0;
    }
    return -1;
}

/* model.merges into t->mtab: each entry's left, right and merged token must be in the vocab;
 * rank = position. Every exit frees what it allocated (the error of a late entry too). */
static int tok__load_merges(tokenizer *t, const clair_json *merges, const char *path, char *err, size_t errsz) {
    unsigned char *ka = NULL, *kb = NULL, *joined = NULL;
    size_t i, cap = 1, joined_cap = 0;
    int rc = -1;
    while (cap < merges->n * 2 + 16) cap <<= 1;
    t->mtab = (tok_merge *)malloc(cap * sizeof *t->mtab);
    if (!t->mtab) return errf(err, errsz, "%s: out of memory loading it", path);
    for (i = 0; i < cap; i++) t->mtab[i].id = -1;
    t->mmask = cap - 1;
    for (i = 0; i < merges->n; i++) {
        const clair_json *m = &merges->items[i];
        const char *a, *b;
        size_t la, lb;
        int ia, ib, im, lenA, lenB;
        if (tok__merge_parts(m, &a, &la, &b, &lb)) {
            if (m->type == CLAIR_JSON_STRING)
                errf(err, errsz, "%s: model.merges[%zu] = \"%.60s\" has no space", path, i, m->str);
            else
                errf(err, errsz, "%s: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", path, i);
            goto done;
        }
        if (t->kind == TOK_BYTELEVEL) {
            ka = tok__to_bytes(TOK_BYTELEVEL, a, la, &lenA);
            kb = tok__to_bytes(TOK_BYTELEVEL, b, lb, &lenB);
        } else {
            ka = (unsigned char *)malloc(la + 1); kb = (unsigned char *)malloc(lb + 1);
            if (ka) memcpy(ka, a, la);
            if (kb) memcpy(kb, b, lb);
            lenA = (int)la; lenB = (int)lb;
        }
        if (!ka || !kb) { errf(err, errsz, "%s: out of memory loading it", path); goto done; }
        if ((size_t)(lenA + lenB) + 1 > joined_cap) { /* + 1: never a zero-size buffer (a merge of " ") */
            joined_cap = (size_t)(lenA + lenB) * 2 + 64;
            free(joined);
            joined = (unsigned char *)malloc(joined_cap);
            if (!joined) { errf(err, errsz, "%s: out of memory loading it", path); goto done; }
        }
        memcpy(joined, ka, (size_t)lenA);
        memcpy(joined + lenA, kb, (size_t)lenB);
        ia = tok__lookup_key(t, t->key, t->klen, ka, (size_t)lenA);
        ib = tok__lookup_key(t, t->key, t->klen, kb, (size_t)lenB);
        im = tok__lookup_key(t, t->key, t->klen, joined, (size_t)(lenA + lenB));
        free(ka); free(kb);
        ka = kb = NULL;
        if (ia < 0 || ib < 0 || im < 0) {
            errf(err, errsz, "%s: model.merges[%zu] (\"%.*s\" + \"%.*s\") uses a token that is not in model.vocab", path, i,
                 (int)(la > 40 ? 40 : la), a, (int)(lb > 40 ? 40 : lb), b);
            goto done;
        }
        tok__mput(t, ia, ib, (int)i, im);
    }
    rc = 0;
done:
    free(ka);
    free(kb);
    free(joined);
    return rc;
}

static int tok__load_json(tokenizer *t, const clair_json *root, const char *path, char *err, size_t errsz) {
    const clair_json *model = clair_json_get(root, "model"), *vocab, *merges, *added, *pre, *norm, *dec;
    tokenizer *x = t;
    size_t i;
    int max_id = -1, *ids = NULL, nids = 0;

    if (!model || model->type != CLAIR_JSON_OBJECT)
        return errf(err, errsz, "%s: no \"model\" object; is this a Hugging Face tokenizer.json?", path);
    if (!tok__is(model, "BPE"))
        return errf(err, errsz, "%s: model.type is '%s'; only BPE is supported", path,
                         tok__str(model, "type") ? tok__str(model, "type") : "(missing)");
    if (clair_json_get(model, "dropout") && clair_json_get(model, "dropout")->type == CLAIR_JSON_NUMBER &&
        clair_json_get(model, "dropout")->number != 0)
        return errf(err, errsz, "%s: model.dropout is set; BPE dropout is not supported", path);
    if ((tok__str(model, "continuing_subword_prefix") && *tok__str(model, "continuing_subword_prefix")) ||
        (tok__str(model, "end_of_word_suffix") && *tok__str(model, "end_of_word_suffix")))
        return errf(err, errsz, "%s: continuing_subword_prefix / end_of_word_suffix are not supported", path);
    vocab = clair_json_get(model, "vocab");
    merges = clair_json_get(model, "merges");
    if (!vocab || vocab->type != CLAIR_JSON_OBJECT || !merges || merges->type != CLAIR_JSON_ARRAY)
        return errf(err, errsz, "%s: model.vocab (object) and model.merges (array) are required", path);
    t->ignore_merges = tok__bool(model, "ignore_merges");
    t->byte_fallback = tok__bool(model, "byte_fallback");
    t->fuse_unk = tok__bool(model, "fuse_unk");

    /* kind: byte-level (a ByteLevel pre-tokenizer) or sentencepiece-style (U+2581 normalizer or
     * Metaspace, byte fallback) */
    pre = clair_json_get(root, "pre_tokenizer");
    norm = clair_json_get(root, "normalizer");
    dec = clair_json_get(root, "decoder");
    {
        int saw_bl = 0;
        if (pre && pre->type == CLAIR_JSON_OBJECT) {
            if (tok__is(pre, "Sequence")) {
                const clair_json *ps = clair_json_get(pre, "pretokenizers");
                for (i = 0; ps && ps->type == CLAIR_JSON_ARRAY && i < ps->n; i++)
                    if (tok__pre_step(t, &ps->items[i], &saw_bl, path, err, errsz)) return -1;
            } else if (tok__pre_step(t, pre, &saw_bl, path, err, errsz)) return -1;
        }
        if (saw_bl) {
            t->kind = TOK_BYTELEVEL;
            if (t->spm_prepend) return errf(err, errsz, "%s: Metaspace together with ByteLevel is not supported", path);
            if (norm && norm->type != CLAIR_JSON_NULL)
                return errf(err, errsz, "%s: a normalizer with a ByteLevel pre-tokenizer is not supported", path);
            if (!dec || !tok__is(dec, "ByteLevel"))
                return errf(err, errsz, "%s: a ByteLevel pre-tokenizer needs the ByteLevel decoder", path);
        } else {
            t->kind = TOK_SPM;
            if (t->pre || t->digits)
                return errf(err, errsz, "%s: a regex split without ByteLevel is not supported", path);
            if (norm && norm->type == CLAIR_JSON_OBJECT) {
                /* transformers' legacy Llama normalizer: Sequence[Prepend(U+2581), Replace(" ", U+2581)] */
                const clair_json *ns = clair_json_get(norm, "normalizers");
                int ok = tok__is(norm, "Sequence") && ns && ns->type == CLAIR_JSON_ARRAY && ns->n >= 1 && ns->n <= 2;
                int prep = 0, repl = 0;
                for (i = 0; ok && i < ns->n; i++) {
                    const clair_json *s = &ns->items[i];
                    if (tok__is(s, "Prepend") && tok__str(s, "prepend") && !strcmp(tok__str(s, "prepend"), "\xE2\x96\x81") && i == 0) prep = 1;
                    else if (tok__is(s, "Replace") && clair_json_get(s, "pattern") &&
                             tok__str(clair_json_get(s, "pattern"), "String") &&
                             !strcmp(tok__str(clair_json_get(s, "pattern"), "String"), " ") &&
                             tok__str(s, "content") && !strcmp(tok__str(s, "content"), "\xE2\x96\x81")) repl = 1;
                    else ok = 0;
                }
                if (!ok || !repl)
                    return errf(err, errsz, "%s: normalizer is not the Llama sentencepiece one "
                                     "(Prepend U+2581, Replace ' ' with U+2581); not supported", path);
                if (t->spm_prepend) return errf(err, errsz, "%s: both a normalizer and Metaspace; not supported", path);
                t->spm_prepend = prep ? 1 : 0;
            } else if (!(pre && tok__is(pre, "Metaspace"))) {
                return errf(err, errsz, "%s: neither a ByteLevel pre-tokenizer nor a sentencepiece-style "
                                 "normalizer/Metaspace; this tokenizer kind is not supported", path);
            }
            /* decoder: transformers' Sequence[Replace(U+2581, ' '), ByteFallback, Fuse, Strip(' ', 1, 0)]
             * or a Metaspace decoder (U+2581 -> space, <0xNN> stays text) */
            if (dec && tok__is(dec, "Sequence")) {
                const clair_json *ds = clair_json_get(dec, "decoders");
                for (i = 0; ds && ds->type == CLAIR_JSON_ARRAY && i < ds->n; i++) {
                    const clair_json *d = &ds->items[i];
                    if (tok__is(d, "Strip")) t->spm_strip = 1;
                    else if (tok__is(d, "ByteFallback")) t->spm_bytes = 1;
                    else if (!tok__is(d, "Replace") && !tok__is(d, "Fuse"))
                        return errf(err, errsz, "%s: decoder step '%s' is not supported", path,
                                         tok__str(d, "type") ? tok__str(d, "type") : "?");
                }
            } else if (dec && tok__is(dec, "Metaspace")) {
                const char *sch = tok__str(dec, "prepend_scheme");
                t->spm_strip = !(sch && !strcmp(sch, "never"));
            } else {
                return errf(err, errsz, "%s: a sentencepiece-style tokenizer needs a Sequence (Replace, "
                                 "ByteFallback, Fuse, Strip) or Metaspace decoder", path);
            }
        }
    }

    /* ids: vocab and added tokens */
    for (i = 0; i < vocab->n; i++) {
        const clair_json *v = &vocab->items[i];
        if (v->type != CLAIR_JSON_NUMBER || v->number < 0 || v->number > 1e8 || v->number != (int)v->number)
            return errf(err, errsz, "%s: model.vocab[\"%.60s\"] is not a token id", path, vocab->keys[i]);
        if ((int)v->number > max_id) max_id = (int)v->number;
    }
    added = clair_json_get(root, "added_tokens");
    if (added && added->type == CLAIR_JSON_ARRAY) {
        for (i = 0; i < added->n; i++) {
            long long id;
            const clair_json *a = &added->items[i];
            if (clair_json_get_int(a, "id", &id) || id < 0 || id > 100000000 || !tok__str(a, "content"))
                return errf(err, errsz, "%s: added_tokens[%zu] needs an integer id and a content string", path, i);
            if (tok__bool(a, "lstrip") || tok__bool(a, "rstrip") || tok__bool(a, "single_word"))
                return errf(err, errsz, "%s: added_tokens[%zu] ('%s') uses lstrip/rstrip/single_word, "
                                 "which is not supported", path, i, tok__str(a, "content"));
            if ((int)id > max_id) max_id = (int)id;
        }
    }
    /* The id tables have 1 + max_id entries: an id far beyond the number of tokens would make a
     * small file cost gigabytes (real vocabularies are dense, with at most a few holes). */
    {
        size_t n_tokens = vocab->n + (added && added->type == CLAIR_JSON_ARRAY ? added->n : 0);
        if ((size_t)max_id >= 2 * n_tokens + 65536)
            return errf(err, errsz, "%s: token id %d is far beyond the %zu tokens of model.vocab and added_tokens "
                             "(ids must be nearly dense)", path, max_id, n_tokens);
    }
    t->n_ids = max_id + 1;
    t->dec = (unsigned char **)calloc((size_t)t->n_ids, sizeof *t->dec);
    t->dec_len = (int *)calloc((size_t)t->n_ids, sizeof(int));
    x->key = (unsigned char **)calloc((size_t)t->n_ids, sizeof *x->key);
    x->klen = (int *)calloc((size_t)t->n_ids, sizeof(int));
    ids = (int *)malloc((vocab->n + 1) * sizeof(int));
    if (!t->dec || !t->dec_len || !x->key || !x->klen || !ids) { free(ids); return errf(err, errsz, "%s: out of memory loading it", path); }
    for (i = 0; i < vocab->n; i++) {
        int id = (int)vocab->items[i].number;
        if (x->key[id]) continue;  /* duplicate id: keep the first string */
        t->dec[id] = tok__to_bytes(t->kind | (t->spm_bytes ? TOK_SPM_BYTES : 0), vocab->keys[i], vocab->key_lens[i],
                                   &t->dec_len[id]);
        if (!t->dec[id]) { free(ids); return errf(err, errsz, "%s: out of memory loading it", path); }
        if (t->kind == TOK_BYTELEVEL) {
            x->key[id] = t->dec[id];     /* keyed by the raw bytes */
            x->klen[id] = t->dec_len[id];
        } else {
            x->key[id] = (unsigned char *)malloc(vocab->key_lens[i] + 1);
            if (!x->key[id]) { free(ids); return errf(err, errsz, "%s: out of memory loading it", path); }
            memcpy(x->key[id], vocab->keys[i], vocab->key_lens[i]);
            x->klen[id] = (int)vocab->key_lens[i];
        }
        ids[nids++] = id;
    }
    if (tok__build_vtab(t, x->key, x->klen, nids, ids)) { free(ids); return errf(err, errsz, "%s: out of memory loading it", path); }
    free(ids);

    /* added tokens: decode to their content; matched in text by tok__match_added */
    if (added && added->type == CLAIR_JSON_ARRAY && added->n) {
        t->added = (tok_added *)calloc(added->n, sizeof *t->added);
        if (!t->added) return errf(err, errsz, "%s: out of memory loading it", path);
        for (i = 0; i < added->n; i++) {
            const clair_json *a = &added->items[i], *c = clair_json_get(a, "content");
            long long id;
            clair_json_get_int(a, "id", &id);
            if (c->len == 0) continue;
            t->added[t->n_added].s = (char *)malloc(c->len + 1);
            if (!t->added[t->n_added].s) return errf(err, errsz, "%s: out of memory loading it", path);
            memcpy(t->added[t->n_added].s, c->str, c->len + 1);
            t->added[t->n_added].len = (int)c->len;
            t->added[t->n_added].id = (int)id;
            t->added[t->n_added].special = tok__bool(a, "special");
            t->added_first[(unsigned char)c->str[0]] = 1;
            t->n_added++;
            if (!t->dec[id]) {   /* an added token outside the model vocab decodes to its content */
                if (t->kind == TOK_BYTELEVEL) t->dec[id] = tok__to_bytes(TOK_BYTELEVEL, c->str, c->len, &t->dec_len[id]);
                else t->dec[id] = tok__to_bytes(TOK_SPM | (t->spm_bytes ? TOK_SPM_BYTES : 0), c->str, c->len, &t->dec_len[id]);
                if (!t->dec[id]) return errf(err, errsz, "%s: out of memory loading it", path);
            }
        }
    }

    /* single-symbol ids */
    for (i = 0; i < 256; i++) {
        if (t->kind == TOK_BYTELEVEL) {
            unsigned char b = (unsigned char)i;
            t->byte_id[i] = tok__lookup_key(t, x->key, x->klen, &b, 1);
        } else {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", (unsigned)i);
            t->byte_id[i] = tok__lookup_key(t, x->key, x->klen, (const unsigned char *)name, 6);
        }
    }
    /* a byte-level vocab may lack some bytes (SmolLM2 lacks 21): HF then drops such characters
     * (no unk_token) or emits unk, and so do we (tok__push_unit) */
    t->unk_id = -1;
    if (tok__str(model, "unk_token")) {
        const char *u = tok__str(model, "unk_token");
        t->unk_id = tok__lookup_key(t, x->key, x->klen, (const unsigned char *)u, strlen(u));
    }

    return tok__load_merges(t, merges, path, err, errsz);
}

/* The special tokens and the chat template from tokenizer_config.json (cfg, may be NULL) and
 * chat_template.jinja (jinja, may be NULL; it wins over the config's template). */
static void tok__configure(tokenizer *t, const clair_json *cfg, const char *jinja, int fam_override) {
    const char *tpl_text = NULL;
    if (cfg) {
        const char *b = tok__cfg_tok(cfg, "bos_token"), *e = tok__cfg_tok(cfg, "eos_token");
        const clair_json *ct = clair_json_get(cfg, "chat_template");
        if (b) { t->bos_tok = tok__strdup(b); t->bos_id = tokenizer_token_id(t, b); }
        if (e) { t->eos_tok = tok__strdup(e); t->eos_id = tokenizer_token_id(t, e); }
        if (ct && ct->type == CLAIR_JSON_STRING) tpl_text = ct->str;
        else if (ct && ct->type == CLAIR_JSON_ARRAY) {   /* [{"name": "default", "template": ...}] */
            size_t i;
            for (i = 0; i < ct->n; i++)
                if (tok__str(&ct->items[i], "name") && !strcmp(tok__str(&ct->items[i], "name"), "default"))
                    tpl_text = tok__str(&ct->items[i], "template");
        }
    }
    if (jinja) t->tpl = tok__recognise(t, jinja);
    else if (tpl_text) t->tpl = tok__recognise(t, tpl_text);
    if (fam_override > 0) {
        if (fam_override != t->tpl) { free(t->tpl_system); t->tpl_system = NULL; }
        t->tpl = fam_override;
    }
    if (t->tpl == TPL_LLAMA31 && !t->date) t->date = tok__strdup("26 Jul 2024");
    /* templates need their bos/eos strings even without a config */
    if (!t->bos_tok && (t->tpl == TPL_LLAMA3 || t->tpl == TPL_LLAMA31)) t->bos_tok = tok__strdup("<|begin_of_text|>");
    if (!t->bos_tok && t->tpl == TPL_LLAMA2) t->bos_tok = tok__strdup("<s>");
    if (!t->eos_tok && t->tpl == TPL_LLAMA2) t->eos_tok = tok__strdup("</s>");
    if (t->bos_id < 0 && t->bos_tok) t->bos_id = tokenizer_token_id(t, t->bos_tok);
    /* the id that stops generation: the template's end of turn, else the config's eos */
    {
        int eot = -1;
        if (t->tpl == TPL_LLAMA3 || t->tpl == TPL_LLAMA31) eot = tokenizer_token_id(t, "<|eot_id|>");
        if (t->tpl == TPL_CHATML) eot = tokenizer_token_id(t, "<|im_end|>");
        if (eot >= 0) t->eos_id = eot;
        if (t->eos_id < 0 && t->eos_tok) t->eos_id = tokenizer_token_id(t, t->eos_tok);
    }
    if (t->kind == TOK_BYTELEVEL) {
        t->cache_mask = (1u << 16) - 1;
        t->cache = (struct tok_cache_e *)calloc(t->cache_mask + 1, sizeof *t->cache);
    }
}

/* The one loader behind tokenizer_load and tokenizer_load_json: tokenizer.json's text (named
 * tok_what in messages), the optional tokenizer_config.json text and chat_template.jinja. */
static int tok__load_texts(tokenizer **out, const char *tok_text, size_t tok_len, const char *tok_what, const char *cfg_text,
                           size_t cfg_len, const char *cfg_what, const char *jinja, const char *chat_template, char *err, size_t errsz) {
    char jerr[4400];
    clair_json root, cfg;
    int fam_override;
    tokenizer *t;

    *out = NULL;
    fam_override = tok__tpl_family(chat_template);
    if (fam_override < 0)
        return errf(err, errsz, "--chat-template '%s' is unknown; use llama3, llama3.1, chatml or llama2", chat_template);
    {
        static pthread_once_t once = PTHREAD_ONCE_INIT;
        pthread_once(&once, tok__init_bytemap);
    }
    if (clair_json_parse(tok_text, tok_len, &root, jerr, sizeof jerr)) return errf(err, errsz, "%s: %s", tok_what, jerr);
    t = (tokenizer *)calloc(1, sizeof *t);
    if (!t) { clair_json_free(&root); return errf(err, errsz, "out of memory"); }
    pthread_mutex_init(&t->cache_lock, NULL);
    t->bos_id = t->eos_id = -1;
    if (tok__load_json(t, &root, tok_what, err, errsz)) {
        clair_json_free(&root);
        tokenizer_free(t);
        return -1;
    }
    clair_json_free(&root);
    if (cfg_text && clair_json_parse(cfg_text, cfg_len, &cfg, jerr, sizeof jerr)) {
        tokenizer_free(t);
        return errf(err, errsz, "%s: %s", cfg_what, jerr);
    }
    tok__configure(t, cfg_text ? &cfg : NULL, jinja, fam_override);
    if (cfg_text) clair_json_free(&cfg);
    *out = t;
    return 0;
}

int tokenizer_load_json(tokenizer **out, const char *tokenizer_json, size_t tokenizer_len, const char *config_json, size_t config_len,
                        const char *what, const char *chat_template, char *err, size_t errsz) {
    char tw[4200], cw[4200];
    snprintf(tw, sizeof tw, "%s (tokenizer.json)", what);
    snprintf(cw, sizeof cw, "%s (tokenizer_config.json)", what);
    return tok__load_texts(out, tokenizer_json, tokenizer_len, tw, config_json, config_len, cw, NULL, chat_template, err, errsz);
}

int tokenizer_load(tokenizer **out, const char *dir, const char *chat_template, char *err, size_t errsz) {
    char path[4096], cpath[4096], jpath[4096], jerr[4400];
    char *text = NULL, *ctext = NULL, *jtext = NULL;
    size_t len = 0, clen = 0, jlen = 0;
    int rc = -1;

    *out = NULL;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    text = read_file(path, TOK_MAX_FILE, &len, jerr, sizeof jerr);
    if (!text) return errf(err, errsz, "%s; the model directory needs a Hugging Face tokenizer.json", jerr);
    /* optional files: only their absence is fine */
    snprintf(cpath, sizeof cpath, "%s/tokenizer_config.json", dir);
    ctext = read_file(cpath, TOK_MAX_FILE, &clen, jerr, sizeof jerr);
    if (!ctext && errno != ENOENT) { errf(err, errsz, "%s", jerr); goto done; }
    /* transformers >= 4.43 saves the template as chat_template.jinja, which then wins */
    snprintf(jpath, sizeof jpath, "%s/chat_template.jinja", dir);
    jtext = read_file(jpath, TOK_MAX_FILE, &jlen, jerr, sizeof jerr);
    if (!jtext && errno != ENOENT) { errf(err, errsz, "%s", jerr); goto done; }
    rc = tok__load_texts(out, text, len, path, ctext, clen, cpath, jtext, chat_template, err, errsz);
done:
    free(text);
    free(ctext);
    free(jtext);
    return rc;
}

void tokenizer_free(tokenizer *t) {
    tokenizer *x = t;
    int i;
    size_t k;
    if (!t) return;
    for (i = 0; i < t->n_ids; i++) {
        if (x->key && x->key[i] && (!t->dec || x->key[i] != t->dec[i])) free(x->key[i]);
        if (t->dec) free(t->dec[i]);
    }
    free(x->key); free(x->klen);
    free(t->dec); free(t->dec_len); free(t->vtab); free(t->mtab);
    for (i = 0; i < t->n_added; i++) free(t->added[i].s);
    free(t->added);
    free(t->tpl_system); free(t->date); free(t->bos_tok); free(t->eos_tok);
    pthread_mutex_destroy(&t->cache_lock);
    if (t->cache) {
        for (k = 0; k <= t->cache_mask; k++) { free(t->cache[k].w); free(t->cache[k].ids); }
        free(t->cache);
    }
    free(t);
}

int tokenizer_vocab_size(const tokenizer *t) { return t->n_ids; }
int tokenizer_bos_id(const tokenizer *t) { return t->bos_id; }
int tokenizer_eos_id(const tokenizer *t) { return t->eos_id; }

int tokenizer_token_id(const tokenizer *t, const char *token) {
    const tokenizer *x = t;
    size_t n = strlen(token);
    int i;
    for (i = 0; i < t->n_added; i++)
        if ((size_t)t->added[i].len == n && memcmp(t->added[i].s, token, n) == 0) return t->added[i].id;
    if (t->kind == TOK_BYTELEVEL) {
        int len, id;
        unsigned char *b = tok__to_bytes(TOK_BYTELEVEL, token, n, &len);
        if (!b) return -1;
        id = tok__lookup_key(t, x->key, x->klen, b, (size_t)len);
        free(b);
        return id;
    }
    return tok__lookup_key(t, x->key, x->klen, (const unsigned char *)token, n);
}

/* ============================================================================================
 * Pre-tokenizers: hand-written equivalents of the Split regexes (Oniguruma semantics, as HF
 * tokenizers runs them). Input: code points c[0..n); output: the end of the match at i.
 * Every position matches something, so the pieces tile the text.
 * ========================================================================================== */

static uint32_t tok__lower_ascii(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* (?i:'s|'t|'re|'ve|'m|'ll|'d) or the case-sensitive GPT-2 form. Under (?i) Oniguruma also
 * folds U+017F (long s) to s and U+212A (Kelvin) to k; only the long s matters here. */
static size_t tok__contraction(const uint32_t *c, size_t i, size_t n, int icase) {
    uint32_t a, b;
    if (c[i] != '\'' || i + 1 >= n) return 0;
    a = c[i + 1];
    if (icase) { a = tok__lower_ascii(a); if (a == 0x17F) a = 's'; }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (i + 2 >= n) return 0;
    b = c[i + 2];
    if (icase) { b = tok__lower_ascii(b); if (b == 0x17F) b = 's'; }
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

static size_t tok__llama3_match(const uint32_t *c, size_t i, size_t n) {
    size_t j, k;
    uint32_t c0 = c[i];
    if ((k = tok__contraction(c, i, n, 1))) return i + k;
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    j = i;
    if (!IS_L(c0) && c0 != '\r' && c0 != '\n' && !IS_N(c0)) j = i + 1;
    if (j < n && IS_L(c[j])) {
        while (j < n && IS_L(c[j])) j++;
        return j;
    }
    /* \p{N}{1,3} */
    if (IS_N(c0)) {
        j = i;
        while (j < n && j < i + 3 && IS_N(c[j])) j++;
        return j;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    j = i;
    if (c0 == ' ') j++;
    if (j < n && !IS_S(c[j]) && !IS_L(c[j]) && !IS_N(c[j])) {
        while (j < n && !IS_S(c[j]) && !IS_L(c[j]) && !IS_N(c[j])) j++;
        while (j < n && (c[j] == '\r' || c[j] == '\n')) j++;
        return j;
    }
    /* \s*[\r\n]+ : up to the last newline of the whitespace run (then any directly following
     * newlines, which the run already ends with) */
    k = i;
    while (k < n && IS_S(c[k])) k++;
    if (k > i) {
        size_t last = 0, p;
        for (p = i; p < k; p++) if (c[p] == '\r' || c[p] == '\n') last = p + 1;
        if (last) return last;
        /* \s+(?!\S) then \s+ */
        if (k == n) return k;
        if (k - i >= 2) return k - 1;
        return k;
    }
    return i + 1;   /* not reached: every character is covered above */
}

static size_t tok__gpt2_match(const uint32_t *c, size_t i, size_t n) {
    size_t j, k;
    if ((k = tok__contraction(c, i, n, 0))) return i + k;
    j = i + (c[i] == ' ' ? 1 : 0);
    if (j < n && IS_L(c[j])) { while (j < n && IS_L(c[j])) j++; return j; }
    if (j < n && IS_N(c[j])) { while (j < n && IS_N(c[j])) j++; return j; }
    if (j < n && !IS_S(c[j]) && !IS_L(c[j]) && !IS_N(c[j])) {
        while (j < n && !IS_S(c[j]) && !IS_L(c[j]) && !IS_N(c[j])) j++;
        return j;
    }
    k = i;
    while (k < n && IS_S(c[k])) k++;
    if (k > i) {
        if (k == n) return k;
        if (k - i >= 2) return k - 1;
        return k;
    }
    return i + 1;
}

/* ============================================================================================
 * BPE: symbols in a linked list, candidate merges in a binary min-heap ordered by (rank, position)
 * as HF's Word::merge_all; stale entries are skipped when popped. O(n log n) per word.
 * ========================================================================================== */

typedef struct { int id, prev, next, alive; } tok_sym;
typedef struct { int rank, pos, id; } tok_cand;
typedef struct {
    tok_sym *sym; size_t sym_cap;
    tok_cand *heap; size_t heap_n, heap_cap;
    uint32_t *cp; size_t *off; size_t cp_cap;     /* code points of a segment and their byte offsets */
    int use_cache;                                /* this call holds the tokenizer's cache_lock */
} tok_work;

static void tok__work_free(tok_work *w) { free(w->sym); free(w->heap); free(w->cp); free(w->off); }

static int tok__cand_less(const tok_cand *a, const tok_cand *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}
static int tok__heap_push(tok_work *w, tok_cand c) {
    size_t i;
    if (w->heap_n == w->heap_cap) {
        size_t nc = w->heap_cap ? w->heap_cap * 2 : 256;
        tok_cand *h = (tok_cand *)realloc(w->heap, nc * sizeof *h);
        if (!h) return -1;
        w->heap = h; w->heap_cap = nc;
    }
    i = w->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!tok__cand_less(&c, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = c;
    return 0;
}
static tok_cand tok__heap_pop(tok_work *w) {
    tok_cand top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const tok_cand *best = &last;
        if (l < n && tok__cand_less(&w->heap[l], best)) { m = l; best = &w->heap[l]; }
        if (r < n && tok__cand_less(&w->heap[r], best)) { m = r; }
        if (m == i) break;
        w->heap[i] = w->heap[m];
        i = m;
    }
    if (n) w->heap[i] = last;
    return top;
}

static int tok__try_pair(const tokenizer *t, tok_work *w, int left) {
    int right = w->sym[left].next;
    const tok_merge *m;
    tok_cand c;
    if (right < 0) return 0;
    m = tok__mget(t, w->sym[left].id, w->sym[right].id);
    if (!m) return 0;
    c.rank = m->rank; c.pos = left; c.id = m->id;
    return tok__heap_push(w, c);
}

/* Merges w->sym[0..n) (already linked) and appends the surviving ids to out. */
static int tok__bpe(const tokenizer *t, tok_work *w, int n, tok_ids *out) {
    int i;
    w->heap_n = 0;
    for (i = 0; i + 1 < n; i++) if (tok__try_pair(t, w, i)) return -1;
    while (w->heap_n) {
        tok_cand c = tok__heap_pop(w);
        int right;
        const tok_merge *m;
        if (!w->sym[c.pos].alive || (right = w->sym[c.pos].next) < 0) continue;
        m = tok__mget(t, w->sym[c.pos].id, w->sym[right].id);
        if (!m || m->id != c.id) continue;   /* stale: one side was merged since */
        w->sym[c.pos].id = c.id;
        w->sym[right].alive = 0;
        w->sym[c.pos].next = w->sym[right].next;
        if (w->sym[right].next >= 0) w->sym[w->sym[right].next].prev = c.pos;
        if (w->sym[c.pos].prev >= 0 && tok__try_pair(t, w, w->sym[c.pos].prev)) return -1;
        if (tok__try_pair(t, w, c.pos)) return -1;
    }
    for (i = 0; i < n; i = w->sym[i].next >= 0 ? w->sym[i].next : n)
        if (tok_ids_push(out, w->sym[i].id)) return -1;
    return 0;
}

static int tok__sym_reserve(tok_work *w, size_t n) {
    if (n > w->sym_cap) {
        size_t nc = n * 2 + 64;
        tok_sym *s = (tok_sym *)realloc(w->sym, nc * sizeof *s);
        if (!s) return -1;
        w->sym = s; w->sym_cap = nc;
    }
    return 0;
}

/* Appends the initial symbol(s) for one character (bytes c[0..l)) whose vocab id is `id` (-1 when
 * the vocab lacks it), as HF's BPE::merge_word: the id, else <0xNN> byte tokens (byte_fallback),
 * else unk (consecutive unks fused when fuse_unk), else nothing: the character is dropped. */
static void tok__push_unit(const tokenizer *t, tok_work *w, size_t *nsym, int id, const unsigned char *c, int l) {
    if (id >= 0) { w->sym[(*nsym)++].id = id; return; }
    if (t->byte_fallback && t->kind == TOK_SPM) {
        int b, ok = 1;
        for (b = 0; b < l; b++) if (t->byte_id[c[b]] < 0) ok = 0;
        if (ok) { for (b = 0; b < l; b++) w->sym[(*nsym)++].id = t->byte_id[c[b]]; return; }
    }
    if (t->unk_id >= 0) {
        if (!(t->fuse_unk && *nsym && w->sym[*nsym - 1].id == t->unk_id)) w->sym[(*nsym)++].id = t->unk_id;
    }
}

static void tok__link(tok_work *w, int n) {
    int i;
    for (i = 0; i < n; i++) { w->sym[i].prev = i - 1; w->sym[i].next = i + 1 < n ? i + 1 : -1; w->sym[i].alive = 1; }
}

/* One byte-level pre-token (word bytes s[0..n)) -> ids. */
static int tok__word_bytelevel(tokenizer *t, tok_work *w, const unsigned char *s, size_t n, tok_ids *out) {
    const tokenizer *x = t;
    size_t i, nsym, before = out->len;
    uint64_t h = 0;
    struct tok_cache_e *ce = NULL;
    if (n == 0) return 0;
    if (n == 1 && t->byte_id[s[0]] >= 0) return tok_ids_push(out, t->byte_id[s[0]]);
    if (t->ignore_merges) {
        int id = tok__lookup_key(t, x->key, x->klen, s, n);
        if (id >= 0) return tok_ids_push(out, id);
    }
    if (w->use_cache && n <= 64) {
        h = tok__hash(s, n);
        ce = &t->cache[(size_t)h & t->cache_mask];
        if (ce->w && ce->h == h && (size_t)ce->wlen == n && memcmp(ce->w, s, n) == 0) {
            int k;
            for (k = 0; k < ce->n; k++) if (tok_ids_push(out, ce->ids[k])) return -1;
            return 0;
        }
    }
    if (tok__sym_reserve(w, n)) return -1;
    for (i = 0, nsym = 0; i < n; i++) tok__push_unit(t, w, &nsym, t->byte_id[s[i]], s + i, 1);
    tok__link(w, (int)nsym);
    if (tok__bpe(t, w, (int)nsym, out)) return -1;
    if (ce) {   /* replace the cache slot */
        size_t k = out->len - before;
        unsigned char *cw = (unsigned char *)malloc(n);
        int *ci = (int *)malloc(k ? k * sizeof(int) : 1);   /* k = 0: every byte was dropped */
        if (cw && ci) {
            free(ce->w); free(ce->ids);
            memcpy(cw, s, n);
            if (k) memcpy(ci, out->data + before, k * sizeof(int));
            ce->w = cw; ce->ids = ci; ce->wlen = (int)n; ce->n = (int)k; ce->h = h;
        } else { free(cw); free(ci); }
    }
    return 0;
}

/* Byte-level text segment (no added tokens inside) -> ids: pre-tokenize, then BPE each piece. */
static int tok__encode_bytelevel(tokenizer *t, tok_work *w, const unsigned char *s, size_t len, tok_ids *out) {
    size_t n = 0, i, p;
    if (len == 0) return 0;
    if (len + 1 > w->cp_cap) {
        size_t nc = len + 64;
        uint32_t *c = (uint32_t *)realloc(w->cp, nc * sizeof *c);
        size_t *o;
        if (!c) return -1;
        w->cp = c;
        o = (size_t *)realloc(w->off, nc * sizeof *o);
        if (!o) return -1;
        w->off = o;
        w->cp_cap = nc;
    }
    for (p = 0; p < len; n++) {
        w->off[n] = p;
        p += (size_t)tok__utf8(s + p, len - p, &w->cp[n]);
    }
    w->off[n] = len;
    /* Digits(individual_digits) first: each number character is its own piece, and the regex
     * runs inside the pieces between them */
    i = 0;
    while (i < n) {
        size_t end = n, j;
        if (t->digits) {
            if (IS_N(w->cp[i])) {
                if (tok__word_bytelevel(t, w, s + w->off[i], w->off[i + 1] - w->off[i], out)) return -1;
                i++;
                continue;
            }
            for (end = i; end < n && !IS_N(w->cp[end]); end++) {}
        }
        for (j = i; j < end;) {
            size_t e = t->pre == PRE_LLAMA3 ? tok__llama3_match(w->cp, j, end)
                     : t->pre == PRE_GPT2 ? tok__gpt2_match(w->cp, j, end) : end;
            if (tok__word_bytelevel(t, w, s + w->off[j], w->off[e] - w->off[j], out)) return -1;
            j = e;
        }
        i = end;
    }
    return 0;
}

/* SPM segment: normalise (spaces -> U+2581, maybe a leading U+2581), then BPE over characters with
 * byte fallback. `first`: this segment starts the input (Metaspace prepend_scheme "first"). */
static int tok__encode_spm(tokenizer *t, tok_work *w, const unsigned char *s, size_t len, int first, tok_ids *out) {
    const tokenizer *x = t;
    unsigned char *norm;
    size_t i, k = 0, nsym = 0;
    int prepend;
    if (len == 0) return 0;
    norm = (unsigned char *)malloc(len * 3 + 3);
    if (!norm) return -1;
    prepend = t->spm_prepend == 1 || t->spm_prepend == 3 || (t->spm_prepend == 2 && first);
    /* Metaspace prepends only when the text does not already start with U+2581 (a leading space
     * becomes one) */
    if (t->spm_prepend >= 2 && (s[0] == ' ' || (len >= 3 && s[0] == 0xE2 && s[1] == 0x96 && s[2] == 0x81))) prepend = 0;
    if (prepend) { norm[k++] = 0xE2; norm[k++] = 0x96; norm[k++] = 0x81; }
    for (i = 0; i < len; i++) {
        if (s[i] == ' ') { norm[k++] = 0xE2; norm[k++] = 0x96; norm[k++] = 0x81; }
        else norm[k++] = s[i];
    }
    if (tok__sym_reserve(w, k * 1 + 4)) { free(norm); return -1; }
    for (i = 0; i < k;) {
        uint32_t cp;
        int l = tok__utf8(norm + i, k - i, &cp);
        tok__push_unit(t, w, &nsym, tok__lookup_key(t, x->key, x->klen, norm + i, (size_t)l), norm + i, l);
        i += (size_t)l;
    }
    free(norm);
    tok__link(w, (int)nsym);
    return tok__bpe(t, w, (int)nsym, out);
}

/* Leftmost-longest added-token match at or after `from`, as HF's AddedVocabulary does.
 * allow(pos, len) decides whether a special token may match there. */
typedef struct { const unsigned char *mask; int allow_all; } tok_allow;
static int tok__allowed(const tok_allow *a, const tok_added *tk, size_t pos) {
    int k;
    if (!tk->special || a->allow_all) return 1;
    if (!a->mask) return 0;
    for (k = 0; k < tk->len; k++) if (!a->mask[pos + (size_t)k]) return 0;
    return 1;
}

static int tok__find_added(const tokenizer *t, const unsigned char *s, size_t len, size_t from,
                           const tok_allow *al, size_t *pos, int *which) {
    size_t p;
    for (p = from; p < len; p++) {
        int k, best = -1, bestlen = 0;
        if (!t->added_first[s[p]]) continue;
        for (k = 0; k < t->n_added; k++) {
            const tok_added *a = &t->added[k];
            if ((unsigned char)a->s[0] != s[p] || (size_t)a->len > len - p || a->len <= bestlen) continue;
            if (memcmp(a->s, s + p, (size_t)a->len) == 0 && tok__allowed(al, a, p)) { best = k; bestlen = a->len; }
        }
        if (best >= 0) { *pos = p; *which = best; return 1; }
    }
    return 0;
}

static int tok__encode_masked(const tokenizer *tc, const char *text, size_t len, const tok_allow *al,
                              tok_ids *out, char *err, size_t errsz) {
    tokenizer *t = (tokenizer *)tc;   /* the word cache is the only state encode changes (under its lock) */
    const unsigned char *s = (const unsigned char *)text;
    tok_work w;
    size_t at = 0;
    int rc = 0;
    memset(&w, 0, sizeof w);
    w.use_cache = t->cache && pthread_mutex_trylock(&t->cache_lock) == 0;
    while (at <= len && rc == 0) {
        size_t pos = len;
        int which = -1;
        if (!(t->n_added && tok__find_added(t, s, len, at, al, &pos, &which))) pos = len;
        if (pos > at) {
            rc = t->kind == TOK_BYTELEVEL ? tok__encode_bytelevel(t, &w, s + at, pos - at, out)
                                          : tok__encode_spm(t, &w, s + at, pos - at, at == 0, out);
        }
        if (rc == 0 && which >= 0) {
            rc = tok_ids_push(out, t->added[which].id);
            at = pos + (size_t)t->added[which].len;
        } else break;
    }
    if (w.use_cache) pthread_mutex_unlock(&t->cache_lock);
    tok__work_free(&w);
    if (rc) return errf(err, errsz, "tokenizer: out of memory");
    return 0;
}

int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int allow_special,
                     tok_ids *out, char *err, size_t errsz) {
    tok_allow al;
    al.mask = NULL;
    al.allow_all = allow_special;
    return tok__encode_masked(t, text, len, &al, out, err, errsz);
}

/* ============================================================================================
 * Decoding
 * ========================================================================================== */

int tokenizer_decode(const tokenizer *t, const int *ids, size_t n, char **out, size_t *out_len,
                     char *err, size_t errsz) {
    clair_buf b;
    size_t i;
    memset(&b, 0, sizeof b);
    for (i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->n_ids || !t->dec[id]) {
            clair_buf_free(&b);
            return errf(err, errsz, "tokenizer_decode: id %d at position %zu is not a token", id, i);
        }
        clair_buf_put(&b, (const char *)t->dec[id], (size_t)t->dec_len[id]);
    }
    if (b.oom) { clair_buf_free(&b); return errf(err, errsz, "out of memory"); }
    if (!b.data) { b.data = (char *)calloc(1, 1); if (!b.data) return errf(err, errsz, "out of memory"); }
    if (t->kind == TOK_SPM && t->spm_strip && b.len && b.data[0] == ' ') {
        memmove(b.data, b.data + 1, b.len);
        b.len--;
    }
    *out = b.data;
    if (out_len) *out_len = b.len;
    return 0;
}

/* Length of the UTF-8 sequence a lead byte starts (1 for invalid leads, which are passed on). */
static int tok__lead_len(unsigned char c) {
    return c < 0xC2 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 1;
}

int tokenizer_decode_stream(const tokenizer *t, tok_stream *s, int id, char *buf, size_t bufsz) {
    unsigned char tmp[1024];
    const unsigned char *src;
    size_t n, i = 0, w = 0, total;
    if (id < 0 || id >= t->n_ids || !t->dec[id]) return -1;
    src = t->dec[id];
    n = (size_t)t->dec_len[id];
    total = (size_t)s->n_pending + n;
    /* never drop bytes: a buffer too small for held bytes + this token is an error (state kept) */
    if (total > bufsz || total > sizeof tmp) return -1;
    memcpy(tmp, s->pending, (size_t)s->n_pending);
    memcpy(tmp + s->n_pending, src, total - (size_t)s->n_pending);
    s->n_pending = 0;
    if (!s->started && t->kind == TOK_SPM && t->spm_strip && total && tmp[0] == ' ') i = 1;
    if (total) s->started = 1;
    while (i < total) {
        int l = tok__lead_len(tmp[i]), k, ok = 1;
        if ((size_t)l > total - i) {   /* incomplete at the end: hold back if still possible */
            for (k = 1; (size_t)k < total - i; k++) if ((tmp[i + k] & 0xC0) != 0x80) ok = 0;
            if (ok) { memcpy(s->pending, tmp + i, total - i); s->n_pending = (int)(total - i); break; }
            l = 1;
        }
        if (w + (size_t)l > bufsz) break;
        memcpy(buf + w, tmp + i, (size_t)l);
        w += (size_t)l;
        i += (size_t)l;
    }
    return (int)w;
}

/* ============================================================================================
 * Chat templates. We render the template family's text ourselves; template text (role headers,
 * control tokens) may contain special tokens, message contents may not (their bytes are masked
 * off), and the whole rendering is encoded in one pass as HF encodes apply_chat_template's text.
 * ========================================================================================== */

const char *tokenizer_chat_template(const tokenizer *t) {
    switch (t->tpl) {
    case TPL_LLAMA3: return "llama3";
    case TPL_LLAMA31: return "llama3.1";
    case TPL_CHATML: return "chatml";
    case TPL_LLAMA2: return "llama2";
    default: return NULL;
    }
}

typedef struct { clair_buf text; clair_buf mask; } tok_render;

static void tok__emit(tok_render *r, const char *s, size_t n, int is_template) {
    size_t i;
    clair_buf_put(&r->text, s, n);
    for (i = 0; i < n; i++) clair_buf_put(&r->mask, is_template ? "\1" : "\0", 1);
}
static void tok__tpl(tok_render *r, const char *s) { tok__emit(r, s, strlen(s), 1); }
static void tok__content(tok_render *r, const char *s, int trim) {
    size_t a = 0, b = strlen(s);
    if (trim) {   /* Jinja's trim = Python's str.strip(): Unicode whitespace at both ends */
        while (a < b) {
            uint32_t cp;
            int l = tok__utf8((const unsigned char *)s + a, b - a, &cp);
            if (!tok__py_space(cp)) break;
            a += (size_t)l;
        }
        while (b > a) {
            size_t p = b - 1;
            uint32_t cp;
            while (p > a && ((unsigned char)s[p] & 0xC0) == 0x80) p--;
            tok__utf8((const unsigned char *)s + p, b - p, &cp);
            if (!tok__py_space(cp)) break;
            b = p;
        }
    }
    tok__emit(r, s + a, b - a, 0);
}

static int tok__role_ok(const char *r) {
    return r && (!strcmp(r, "system") || !strcmp(r, "user") || !strcmp(r, "assistant"));
}

/* Renders the conversation (+ generation prompt when gen). */
static int tok__render(const tokenizer *t, const tok_message *m, int n, int gen, tok_render *r,
                       char *err, size_t errsz) {
    int i;
    if (t->tpl == TPL_NONE)
        return errf(err, errsz, "tokenizer: the chat template was not recognised (tokenizer_config.json "
                         "has none, or not a Llama 3 / ChatML / Llama 2 one); pass --chat-template "
                         "llama3|llama3.1|chatml|llama2 if the model uses one of those");
    for (i = 0; i < n; i++)
        if (!tok__role_ok(m[i].role) || !m[i].content)
            return errf(err, errsz, "tokenizer: message %d has role '%s'; only system, user and assistant "
                             "messages with content are supported", i, m[i].role ? m[i].role : "(null)");
    switch (t->tpl) {
    case TPL_LLAMA3:
        for (i = 0; i < n; i++) {
            if (i == 0) tok__tpl(r, t->bos_tok);
            tok__tpl(r, "<|start_header_id|>"); tok__tpl(r, m[i].role); tok__tpl(r, "<|end_header_id|>\n\n");
            tok__content(r, m[i].content, 1);
            tok__tpl(r, "<|eot_id|>");
        }
        if (gen) tok__tpl(r, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    case TPL_LLAMA31:
        tok__tpl(r, t->bos_tok);
        tok__tpl(r, "<|start_header_id|>system<|end_header_id|>\n\n");
        tok__tpl(r, "Cutting Knowledge Date: December 2023\nToday Date: ");
        tok__tpl(r, t->date); tok__tpl(r, "\n\n");
        i = 0;
        if (n > 0 && !strcmp(m[0].role, "system")) { tok__content(r, m[0].content, 1); i = 1; }
        tok__tpl(r, "<|eot_id|>");
        for (; i < n; i++) {
            tok__tpl(r, "<|start_header_id|>"); tok__tpl(r, m[i].role); tok__tpl(r, "<|end_header_id|>\n\n");
            tok__content(r, m[i].content, 1);
            tok__tpl(r, "<|eot_id|>");
        }
        if (gen) tok__tpl(r, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    case TPL_CHATML:
        for (i = 0; i < n; i++) {
            if (i == 0 && t->tpl_system && strcmp(m[0].role, "system")) {
                tok__tpl(r, "<|im_start|>system\n"); tok__tpl(r, t->tpl_system); tok__tpl(r, "<|im_end|>\n");
            }
            tok__tpl(r, "<|im_start|>"); tok__tpl(r, m[i].role); tok__tpl(r, "\n");
            tok__content(r, m[i].content, 0);
            tok__tpl(r, "<|im_end|>\n");
        }
        if (gen) tok__tpl(r, "<|im_start|>assistant\n");
        break;
    case TPL_LLAMA2: {
        const char *sys = NULL;
        int k = 0;
        if (n > 0 && !strcmp(m[0].role, "system")) { sys = m[0].content; m++; n--; }
        for (i = 0; i < n; i++, k++) {
            int user = !strcmp(m[i].role, "user");
            if (user != (k % 2 == 0))
                return errf(err, errsz, "tokenizer: Llama 2 conversations must alternate user/assistant/"
                                 "user/... after an optional system message (message %d is '%s')", i, m[i].role);
            if (user) {
                size_t start;
                tok__tpl(r, t->bos_tok); tok__tpl(r, "[INST] ");
                start = r->text.len;
                if (k == 0 && sys) {
                    /* the template strips '<<SYS>>\n' + system + '\n<</SYS>>\n\n' + content as one */
                    tok__tpl(r, "<<SYS>>\n");
                    tok__content(r, sys, 0);
                    tok__tpl(r, "\n<</SYS>>\n\n");
                    tok__content(r, m[i].content, 0);
                    /* .strip() of the whole: the end may reach back into the template text when
                     * the user content is empty or all whitespace */
                    {
                        size_t e = r->text.len;
                        while (e > start) {
                            size_t p = e - 1;
                            uint32_t cp;
                            while (p > start && ((unsigned char)r->text.data[p] & 0xC0) == 0x80) p--;
                            tok__utf8((const unsigned char *)r->text.data + p, e - p, &cp);
                            if (!tok__py_space(cp)) break;
                            e = p;
                        }
                        r->text.len = e; r->mask.len = e;
                    }
                } else tok__content(r, m[i].content, 1);
                tok__tpl(r, " [/INST]");
            } else {
                tok__tpl(r, " "); tok__content(r, m[i].content, 1); tok__tpl(r, " "); tok__tpl(r, t->eos_tok);
            }
        }
        if (gen && (k % 2 == 0))
            return errf(err, errsz, "tokenizer: a Llama 2 prompt must end with a user message");
        break;
    }
    }
    if (r->text.oom || r->mask.oom) return errf(err, errsz, "out of memory");
    return 0;
}

static int tok__encode_render(const tokenizer *t, tok_render *r, tok_ids *out, char *err, size_t errsz) {
    tok_allow al;
    al.mask = (const unsigned char *)r->mask.data;
    al.allow_all = 0;
    return tok__encode_masked(t, r->text.data ? r->text.data : "", r->text.len, &al, out, err, errsz);
}

int tokenizer_chat_prompt(const tokenizer *t, const tok_message *msgs, int n_msgs,
                          tok_ids *out, char *err, size_t errsz) {
    tok_render r;
    int rc;
    memset(&r, 0, sizeof r);
    rc = tok__render(t, msgs, n_msgs, 1, &r, err, errsz);
    if (rc == 0) rc = tok__encode_render(t, &r, out, err, errsz);
    clair_buf_free(&r.text);
    clair_buf_free(&r.mask);
    return rc;
}

int tokenizer_chat_pair(const tokenizer *t, const tok_message *msgs, int n_msgs,
                        const char *response, tok_ids *out, size_t *response_start,
                        char *err, size_t errsz) {
    tok_render r;
    int rc;
    if (tokenizer_chat_prompt(t, msgs, n_msgs, out, err, errsz)) return -1;
    *response_start = out->len;
    /* the assistant turn as the template renders it after the generation prompt; encoded on its
     * own (as TRL does), so the prompt ids stay an exact prefix */
    memset(&r, 0, sizeof r);
    switch (t->tpl) {
    case TPL_LLAMA3: case TPL_LLAMA31: tok__content(&r, response, 1); tok__tpl(&r, "<|eot_id|>"); break;
    case TPL_CHATML: tok__content(&r, response, 0); tok__tpl(&r, "<|im_end|>\n"); break;
    case TPL_LLAMA2: tok__tpl(&r, " "); tok__content(&r, response, 1); tok__tpl(&r, " "); tok__tpl(&r, t->eos_tok); break;
    default: return errf(err, errsz, "tokenizer: no chat template");
    }
    rc = (r.text.oom || r.mask.oom) ? errf(err, errsz, "out of memory") : tok__encode_render(t, &r, out, err, errsz);
    clair_buf_free(&r.text);
    clair_buf_free(&r.mask);
    return rc;
}
