/* train/data.c - preference JSONL -> token ids -> micro-batches (see data.h for the formats). */
#include "data.h"

#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <errno.h>
#include "../llama/gguf.h"
#include "../clair.h"
#include "../util.h"

#define MAX_TURNS 256

/* ---------------------------------------------------------------------------------------- */
/* Small helpers                                                                            */

uint64_t data_hash_bytes(uint64_t h, const void *p, size_t n) {
    /* FNV-1a over 8-byte words with a final avalanche per word: fast enough to hash a model's
     * weights (GB/s) and good enough for a cache key (not a cryptographic hash). */
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h ^= w;
        h *= 0x100000001b3ULL;
        h ^= h >> 29;
    }
    for (; i < n; i++) { h ^= s[i]; h *= 0x100000001b3ULL; }
    h ^= (uint64_t)n;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

/* Reads one line of any length into *buf (without the newline). 1: a line, 0: end of file. */
static int read_line(FILE *f, char **buf, size_t *cap, size_t *len) {
    size_t n = 0;
    int c;
    if (!*buf) { *cap = 4096; *buf = (char *)malloc(*cap); if (!*buf) return -1; }
    while ((c = fgetc(f)) != EOF) {
        if (c == '\n') break;
        if (n + 1 >= *cap) {
            char *nb = (char *)realloc(*buf, *cap * 2);
            if (!nb) return -1;
            *buf = nb; *cap *= 2;
        }
        (*buf)[n++] = (char)c;
    }
    if (c == EOF && n == 0) return 0;
    if (n > 0 && (*buf)[n - 1] == '\r') n--;   /* CRLF files */
    (*buf)[n] = 0;
    *len = n;
    return 1;
}

static int is_blank(const char *s, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) if (!isspace((unsigned char)s[i])) return 0;
    return 1;
}

static int pool_push(pref_dataset *ds, const int *ids, int n) {
    if (n <= 0) return 0;          /* an empty side (prompt-completion records) */
    if (ds->pool_len + (size_t)n > ds->pool_cap) {
        size_t nc = ds->pool_cap ? ds->pool_cap : 1 << 16;
        int *np;
        while (nc < ds->pool_len + (size_t)n) nc *= 2;
        np = (int *)realloc(ds->pool, nc * sizeof *np);
        if (!np) return -1;
        ds->pool = np; ds->pool_cap = nc;
    }
    memcpy(ds->pool + ds->pool_len, ids, (size_t)n * sizeof *ids);
    ds->pool_len += (size_t)n;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* The special tokens tokenizer(text) adds (TRL 1.x's plain-string data)                      */

/* A JSON file of the model directory, parsed; 1 if present, 0 if absent, -1 on error. */
static int read_json_file(const char *dir, const char *name, clair_json *out, char *err, size_t errsz) {
    char path[4200], jerr[512];
    size_t len, n = strlen(dir);
    char *text;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (n > 5 && !strcmp(dir + n - 5, ".gguf") && !strcmp(name, "tokenizer.json")) {
        /* a GGUF model: its tokenizer.json is rebuilt from the file's metadata */
        char *config = NULL;
        size_t config_len;
        snprintf(path, sizeof path, "%s (tokenizer metadata)", dir);
        if (gguf_tokenizer_json(dir, &text, &len, &config, &config_len, jerr, sizeof jerr)) {
            snprintf(err, errsz, "%s", jerr);
            return -1;
        }
        free(config);
    } else {
        text = read_file(path, (size_t)1 << 30, &len, jerr, sizeof jerr);
    }
    if (!text) {
        if (errno == ENOENT) return 0;
        snprintf(err, errsz, "%s", jerr);
        return -1;
    }
    if (clair_json_parse(text, len, out, jerr, sizeof jerr)) {
        free(text);
        snprintf(err, errsz, "%s: %s", path, jerr);
        return -1;
    }
    free(text);
    return 1;
}

static int add_special(int *list, int *n, int id, const char *what, char *err, size_t errsz) {
    if (id < 0) { snprintf(err, errsz, "%s is not a token of this tokenizer", what); return -1; }
    if (*n == PREF_MAX_SPECIAL) {
        snprintf(err, errsz, "more than %d special tokens around plain text", PREF_MAX_SPECIAL);
        return -1;
    }
    list[(*n)++] = id;
    return 0;
}

/* TemplateProcessing's "single" template: special tokens before and after the text ("A"). */
static int template_specials(pref_opts *o, const clair_json *pp, const tokenizer *tok, char *err,
                             size_t errsz) {
    const clair_json *single = clair_json_get(pp, "single"), *specials = clair_json_get(pp, "special_tokens");
    int after = 0;
    size_t i, j;
    if (!single || single->type != CLAIR_JSON_ARRAY) return 0;
    for (i = 0; i < single->n; i++) {
        const clair_json *st = clair_json_get(&single->items[i], "SpecialToken"), *def, *ids;
        int *list = after ? o->text_suffix : o->text_prefix;
        int *n = after ? &o->n_text_suffix : &o->n_text_prefix;
        const char *name;
        if (!st) { after = 1; continue; }   /* {"Sequence": {"id": "A"}}: the text itself */
        if (!(name = clair_json_get_str(st, "id"))) continue;
        def = specials ? clair_json_get(specials, name) : NULL;
        ids = def ? clair_json_get(def, "ids") : NULL;
        if (!ids || ids->type != CLAIR_JSON_ARRAY) {   /* no ids given: the token's own id */
            if (add_special(list, n, tokenizer_token_id(tok, name), name, err, errsz)) return -1;
            continue;
        }
        for (j = 0; j < ids->n; j++) {
            const clair_json *id = &ids->items[j];
            if (add_special(list, n, id->type == CLAIR_JSON_NUMBER ? (int)id->number : -1, name, err, errsz))
                return -1;
        }
    }
    return 0;
}

int pref_text_specials(pref_opts *o, const char *model_dir, const tokenizer *tok, char *err, size_t errsz) {
    clair_json tj;
    int rc;
    o->n_text_prefix = o->n_text_suffix = 0;
    rc = read_json_file(model_dir, "tokenizer.json", &tj, err, errsz);
    if (rc <= 0) return rc;
    {
        const clair_json *pp = clair_json_get(&tj, "post_processor");
        const char *type = pp ? clair_json_get_str(pp, "type") : NULL;
        size_t i;
        rc = 0;
        if (type && !strcmp(type, "TemplateProcessing")) rc = template_specials(o, pp, tok, err, errsz);
        else if (type && !strcmp(type, "Sequence")) {   /* e.g. Llama 3: ByteLevel, then TemplateProcessing */
            const clair_json *list = clair_json_get(pp, "processors");
            for (i = 0; list && list->type == CLAIR_JSON_ARRAY && i < list->n && !rc; i++) {
                const char *t = clair_json_get_str(&list->items[i], "type");
                if (t && !strcmp(t, "TemplateProcessing"))
                    rc = template_specials(o, &list->items[i], tok, err, errsz);
            }
        }
    }
    clair_json_free(&tj);
    if (rc) {
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s", err);
        snprintf(err, errsz, "%s/tokenizer.json: post_processor: %s", model_dir, tmp);
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Records                                                                                  */

/* Chat-template strings reach the tokenizer as C strings: a NUL inside one would silently cut it
 * (and a response "\u0000..." would train as empty). 1 when s[0..len) holds a NUL. */
static int has_nul(const char *s, size_t len) { return memchr(s, 0, len) != NULL; }

#define NUL_ADVICE "chat-template text is handled as C strings and would lose what follows; remove it" \
                   " (--raw-text keeps it in plain strings)"

/* Messages from a JSON array of {role, content}. Returns the count, or -1 with `why` set. */
static int parse_messages(const clair_json *arr, tok_message *msgs, int max, const char *field,
                          char *why, size_t whysz) {
    size_t i;
    if (arr->n == 0) { snprintf(why, whysz, "\"%s\" is an empty list", field); return -1; }
    if (arr->n > (size_t)max) { snprintf(why, whysz, "\"%s\" has more than %d turns", field, max); return -1; }
    for (i = 0; i < arr->n; i++) {
        const clair_json *m = &arr->items[i], *rv, *cv;
        if (m->type != CLAIR_JSON_OBJECT) {
            snprintf(why, whysz, "\"%s\"[%zu] is a %s, expected an object {\"role\", \"content\"}",
                     field, i, clair_json_type_name(m->type));
            return -1;
        }
        rv = clair_json_get(m, "role");
        cv = clair_json_get(m, "content");
        if (!rv || !cv || rv->type != CLAIR_JSON_STRING || cv->type != CLAIR_JSON_STRING) {
            snprintf(why, whysz, "\"%s\"[%zu] needs string fields \"role\" and \"content\"", field, i);
            return -1;
        }
        if (has_nul(rv->str, rv->len) || has_nul(cv->str, cv->len)) {
            snprintf(why, whysz, "\"%s\"[%zu].%s contains a NUL character (\\u0000); " NUL_ADVICE,
                     field, i, has_nul(rv->str, rv->len) ? "role" : "content");
            return -1;
        }
        if (strcmp(rv->str, "system") && strcmp(rv->str, "user") && strcmp(rv->str, "assistant")) {
            snprintf(why, whysz, "\"%s\"[%zu].role is \"%s\"; expected system, user or assistant",
                     field, i, rv->str);
            return -1;
        }
        msgs[i].role = rv->str;
        msgs[i].content = cv->str;
    }
    return (int)arr->n;
}

static int same_turns(const tok_message *a, int na, const tok_message *b, int nb) {
    int i;
    if (na != nb) return 0;
    for (i = 0; i < na; i++)
        if (strcmp(a[i].role, b[i].role) || strcmp(a[i].content, b[i].content)) return 0;
    return 1;
}

/* One side (chosen, rejected or completion) of a record: its conversation context and its response
 * text. Context = the side's own leading turns when it repeats them (CLAIR release), else the prompt. */
typedef struct {
    tok_message ctx[MAX_TURNS];
    int n_ctx;
    const char *response;
    size_t response_len;
} side_view;

/* A parsed record: two sides (a pair) or one (prompt-completion), and the prompt as text. */
typedef struct {
    side_view side[2];
    int n_sides;
    const char *raw_prompt;
    size_t raw_prompt_len;
} record_view;

/* A side given as a string: the response; its context is the prompt. */
static int side_from_string(const clair_json *v, const char *field, side_view *sv,
                            const tok_message *prompt_msgs, int n_prompt, int raw_text, char *why,
                            size_t whysz) {
    if (n_prompt <= 0) {
        snprintf(why, whysz, "missing field \"prompt\" (needed when \"%s\" is a string)", field);
        return -1;
    }
    if (!raw_text && has_nul(v->str, v->len)) {
        snprintf(why, whysz, "\"%s\" contains a NUL character (\\u0000); " NUL_ADVICE, field);
        return -1;
    }
    sv->response = v->str; sv->response_len = v->len;
    memcpy(sv->ctx, prompt_msgs, (size_t)n_prompt * sizeof *prompt_msgs);
    sv->n_ctx = n_prompt;
    return 0;
}

/* The side `field` of rec. own_turns: a list may repeat the prompt turns before the response
 * (preference sides); else the list must be the one assistant turn (a completion). */
static int parse_side(const clair_json *rec, const char *field, int own_turns, side_view *sv,
                      const tok_message *prompt_msgs, int n_prompt, int raw_text, char *why, size_t whysz) {
    const clair_json *v = clair_json_get(rec, field);
    if (!v) { snprintf(why, whysz, "missing field \"%s\"", field); return -1; }
    if (v->type == CLAIR_JSON_STRING)
        return side_from_string(v, field, sv, prompt_msgs, n_prompt, raw_text, why, whysz);
    if (v->type == CLAIR_JSON_ARRAY && raw_text) {
        snprintf(why, whysz, "\"%s\" is a conversation; --raw-text needs plain strings", field);
        return -1;
    }
    if (v->type == CLAIR_JSON_ARRAY) {
        tok_message all[MAX_TURNS + 1];
        int n = parse_messages(v, all, MAX_TURNS + 1, field, why, whysz);
        if (n < 0) return -1;
        if (strcmp(all[n - 1].role, "assistant")) {
            snprintf(why, whysz, "the last turn of \"%s\" has role \"%s\"; it must be the assistant's response",
                     field, all[n - 1].role);
            return -1;
        }
        if (!own_turns && n > 1) {
            snprintf(why, whysz, "\"%s\" has %d turns; a completion is the one assistant turn (earlier turns "
                     "belong in \"prompt\")", field, n);
            return -1;
        }
        sv->response = all[n - 1].content;
        sv->response_len = strlen(all[n - 1].content);
        if (n > 1) {               /* the side repeats the conversation: use its own turns */
            memcpy(sv->ctx, all, (size_t)(n - 1) * sizeof *all);
            sv->n_ctx = n - 1;
        } else {
            if (n_prompt <= 0) { snprintf(why, whysz, "missing field \"prompt\" (\"%s\" holds only the response)", field); return -1; }
            memcpy(sv->ctx, prompt_msgs, (size_t)n_prompt * sizeof *prompt_msgs);
            sv->n_ctx = n_prompt;
        }
        return 0;
    }
    snprintf(why, whysz, "\"%s\" is a %s; expected a string or a list of {\"role\", \"content\"}",
             field, clair_json_type_name(v->type));
    return -1;
}

/* The prompt of rec into msgs (a string is one user turn). *n_prompt = 0 when absent. */
static int parse_prompt(const clair_json *rec, int raw_text, tok_message *msgs, int *n_prompt,
                        record_view *rv, char *why, size_t whysz) {
    const clair_json *pv = clair_json_get(rec, "prompt");
    *n_prompt = 0;
    if (!pv) return 0;
    if (pv->type == CLAIR_JSON_STRING) {
        if (!raw_text && has_nul(pv->str, pv->len)) {
            snprintf(why, whysz, "\"prompt\" contains a NUL character (\\u0000); " NUL_ADVICE);
            return -1;
        }
        msgs[0].role = "user"; msgs[0].content = pv->str; *n_prompt = 1;
        rv->raw_prompt = pv->str; rv->raw_prompt_len = pv->len;
        return 0;
    }
    if (pv->type == CLAIR_JSON_ARRAY) {
        if (raw_text) {
            snprintf(why, whysz, "\"prompt\" is a conversation; --raw-text needs plain strings");
            return -1;
        }
        *n_prompt = parse_messages(pv, msgs, MAX_TURNS, "prompt", why, whysz);
        return *n_prompt < 0 ? -1 : 0;
    }
    snprintf(why, whysz, "\"prompt\" is a %s; expected a string or a list of {\"role\", \"content\"}",
             clair_json_type_name(pv->type));
    return -1;
}

/* A record's sides. *unpaired = 1 for a prompt-completion record. -1 with `why` for a bad line. */
static int parse_record(const clair_json *rec, int raw_text, tok_message *pmsgs, record_view *rv,
                        int *unpaired, char *why, size_t whysz) {
    int n_prompt, has_completion, has_pair;
    if (rec->type != CLAIR_JSON_OBJECT) {
        snprintf(why, whysz, "the line is a JSON %s, expected an object with \"prompt\" and \"completion\", "
                 "or \"prompt\", \"chosen\", \"rejected\"", clair_json_type_name(rec->type));
        return -1;
    }
    has_completion = clair_json_get(rec, "completion") != NULL;
    has_pair = clair_json_get(rec, "chosen") || clair_json_get(rec, "rejected");
    *unpaired = has_completion && !has_pair;
    rv->raw_prompt = NULL; rv->raw_prompt_len = 0;
    if (has_completion && has_pair) {
        snprintf(why, whysz, "the line has \"completion\" and \"chosen\"/\"rejected\"; a record is either a "
                 "prompt-completion example or a preference pair");
        return -1;
    }
    if (parse_prompt(rec, raw_text, pmsgs, &n_prompt, rv, why, whysz)) return -1;
    if (raw_text && n_prompt == 0) { snprintf(why, whysz, "missing field \"prompt\""); return -1; }
    if (*unpaired) {
        if (n_prompt == 0) {
            snprintf(why, whysz, "missing field \"prompt\" (a completion needs its prompt)");
            return -1;
        }
        rv->n_sides = 1;
        return parse_side(rec, "completion", 0, &rv->side[0], pmsgs, n_prompt, raw_text, why, whysz);
    }
    rv->n_sides = 2;
    if (parse_side(rec, "chosen", 1, &rv->side[0], pmsgs, n_prompt, raw_text, why, whysz) ||
        parse_side(rec, "rejected", 1, &rv->side[1], pmsgs, n_prompt, raw_text, why, whysz))
        return -1;
    if (!same_turns(rv->side[0].ctx, rv->side[0].n_ctx, rv->side[1].ctx, rv->side[1].n_ctx)) {
        snprintf(why, whysz, "\"chosen\" and \"rejected\" repeat different prompt turns");
        return -1;
    }
    return 0;
}

static int push_ids(tok_ids *out, const int *ids, int n) {
    int i;
    for (i = 0; i < n; i++)
        if (tok_ids_push(out, ids[i])) return -1;
    return 0;
}

static size_t common_prefix(const tok_ids *a, const tok_ids *b) {
    size_t i = 0;
    while (i < a->len && i < b->len && a->data[i] == b->data[i]) i++;
    return i;
}

/* Raw text under TRL 1.x's rule: prefix + ids(text[0..len)) + (eos) + suffix. */
static int encode_text(const tokenizer *tok, const pref_opts *o, const char *text, size_t len, int eos,
                       tok_ids *out, char *err, size_t errsz) {
    out->len = 0;
    if (push_ids(out, o->text_prefix, o->n_text_prefix) ||
        tokenizer_encode(tok, text, len, 0, out, err, errsz) ||
        (eos >= 0 && tok_ids_push(out, eos)) || push_ids(out, o->text_suffix, o->n_text_suffix)) {
        if (!err[0]) snprintf(err, errsz, "out of memory");
        return -1;
    }
    return 0;
}

/* Tokenizes the sides of a record into ids[s], with start[s] = the first completion index.
 *   chat mode: the template (tokenizer_chat_pair: the generation prompt is an exact prefix);
 *   raw, separate (TRL 0.x): prompt ids, response ids, eos;
 *   raw, joint (TRL 1.x): see pref_opts; text is scratch space for prompt + response. */
static int tokenize_record(const tokenizer *tok, const pref_opts *o, const record_view *rv, tok_ids *ids,
                           size_t *start, tok_ids *prompt_ids, clair_buf *text, char *err, size_t errsz) {
    int s, eos = tokenizer_eos_id(tok);
    size_t common;
    err[0] = 0;
    for (s = 0; s < rv->n_sides; s++) {
        const side_view *sv = &rv->side[s];
        ids[s].len = 0;
        if (!o->raw_text) {
            if (tokenizer_chat_pair(tok, sv->ctx, sv->n_ctx, sv->response, &ids[s], &start[s], err, errsz))
                return -1;
        } else if (o->tokenize == PREF_TOKENIZE_SEPARATE) {
            if (tokenizer_encode(tok, rv->raw_prompt, rv->raw_prompt_len, 0, &ids[s], err, errsz)) return -1;
            start[s] = ids[s].len;
            if (tokenizer_encode(tok, sv->response, sv->response_len, 0, &ids[s], err, errsz)) return -1;
            if (eos >= 0 && tok_ids_push(&ids[s], eos)) { snprintf(err, errsz, "out of memory"); return -1; }
        } else {
            text->len = 0;
            clair_buf_put(text, rv->raw_prompt, rv->raw_prompt_len);
            clair_buf_put(text, sv->response, sv->response_len);
            if (text->oom) { snprintf(err, errsz, "out of memory"); return -1; }
            if (encode_text(tok, o, text->data, text->len, eos, &ids[s], err, errsz)) return -1;
        }
    }
    if (!o->raw_text || o->tokenize == PREF_TOKENIZE_SEPARATE) return 0;
    if (encode_text(tok, o, rv->raw_prompt, rv->raw_prompt_len, -1, prompt_ids, err, errsz)) return -1;
    /* TRL 1.x: one prompt length for both sides, where the prompt's ids and each side's diverge */
    common = prompt_ids->len;
    for (s = 0; s < rv->n_sides; s++) {
        size_t c = common_prefix(prompt_ids, &ids[s]);
        if (c < common) common = c;
    }
    for (s = 0; s < rv->n_sides; s++) start[s] = common;
    return 0;
}

#define REPORT(ds_stats_reported, maxrep, log, ...) do {                                     \
        if ((ds_stats_reported) < (maxrep) && (log)) { fprintf(log, __VA_ARGS__); }           \
        else if ((ds_stats_reported) == (maxrep) && (log))                                    \
            fprintf(log, "(further bad lines are counted but not shown)\n");                \
        (ds_stats_reported)++;                                                                \
    } while (0)

/* Appends a tokenized record to ds, cut to max_length (TRL's truncation_mode "keep_start": the
 * first max_length ids of prompt + response). n_sides 1: the rejected side stays empty. */
static int add_example(pref_dataset *ds, int *ex_cap, int lineno, const tok_ids *ids, const size_t *start,
                       int n_sides, int max_length) {
    int lc = (int)ids[0].len, lr = n_sides > 1 ? (int)ids[1].len : 0;
    pref_example *e;
    if (lc > max_length || lr > max_length) ds->stats.n_truncated++;
    if (lc > max_length) lc = max_length;
    if (lr > max_length) lr = max_length;
    if (ds->n == *ex_cap) {
        int nc = *ex_cap ? *ex_cap * 2 : 256;
        pref_example *ne = (pref_example *)realloc(ds->ex, (size_t)nc * sizeof *ne);
        if (!ne) return -1;
        ds->ex = ne; *ex_cap = nc;
    }
    e = &ds->ex[ds->n];
    e->line = lineno;
    e->chosen_off = (int)ds->pool_len; e->chosen_len = lc; e->chosen_start = (int)start[0];
    if (pool_push(ds, ids[0].data, lc)) return -1;
    e->rejected_off = (int)ds->pool_len; e->rejected_len = lr;
    e->rejected_start = n_sides > 1 ? (int)start[1] : 0;
    if (lr > 0 && pool_push(ds, ids[1].data, lr)) return -1;
    if (lc > ds->max_side_len) ds->max_side_len = lc;
    if (lr > ds->max_side_len) ds->max_side_len = lr;
    ds->n++;
    return 0;
}

/* Buffers of pref_dataset_load, reused line after line. */
typedef struct {
    record_view *rv;
    tok_message *pmsgs;
    tok_ids ids[2], prompt_ids;
    clair_buf text;
    char *line;
    size_t cap;
} load_scratch;

static void load_scratch_free(load_scratch *sc) {
    free(sc->rv); free(sc->pmsgs); free(sc->line);
    tok_ids_free(&sc->ids[0]); tok_ids_free(&sc->ids[1]); tok_ids_free(&sc->prompt_ids);
    clair_buf_free(&sc->text);
}

/* One non-blank line. 0: used or skipped (reported, counted); -1: stop (err set). *first_line is
 * the line of the file's first good record, whose kind every other record must share. */
static int load_line(pref_dataset *ds, const char *path, int lineno, load_scratch *sc, size_t len,
                     const tokenizer *tok, const pref_opts *o, int *first_line, int *ex_cap, FILE *log,
                     char *err, size_t errsz) {
    clair_json rec;
    char why[512], jerr[256];
    int unpaired = 0, s, empty = -1, max_rep = o->max_reports > 0 ? o->max_reports : 20;
    size_t start[2] = {0, 0};
    record_view *rv = sc->rv;
    static const char *const side_names[2][2] = {{"chosen", "rejected"}, {"completion", ""}};
    ds->stats.n_lines++;
    if (clair_json_parse(sc->line, len, &rec, jerr, sizeof jerr)) {
        ds->stats.n_malformed++;
        REPORT(ds->stats.n_reported, max_rep, log, "%s:%d: not valid JSON (%s); line skipped\n", path, lineno,
               jerr);
        return 0;
    }
    why[0] = 0;
    if (parse_record(&rec, o->raw_text, sc->pmsgs, rv, &unpaired, why, sizeof why) == 0 && *first_line &&
        unpaired != ds->stats.unpaired)
        snprintf(why, sizeof why, "a %s among the %s of this file (line %d is one); a file holds one kind",
                 unpaired ? "prompt-completion record" : "preference pair",
                 unpaired ? "preference pairs" : "prompt-completion records", *first_line);
    if (why[0]) {
        ds->stats.n_malformed++;
        REPORT(ds->stats.n_reported, max_rep, log, "%s:%d: %s; line skipped\n", path, lineno, why);
        clair_json_free(&rec);
        return 0;
    }
    if (!*first_line) { *first_line = lineno; ds->stats.unpaired = unpaired; }
    for (s = rv->n_sides - 1; s >= 0; s--)
        if (is_blank(rv->side[s].response, rv->side[s].response_len)) empty = s;
    if (empty >= 0) {
        ds->stats.n_empty++;
        REPORT(ds->stats.n_reported, max_rep, log, "%s:%d: the %s response is empty; %s skipped\n", path,
               lineno, side_names[unpaired][empty], unpaired ? "example" : "pair");
        clair_json_free(&rec);
        return 0;
    }
    if (tokenize_record(tok, o, rv, sc->ids, start, &sc->prompt_ids, &sc->text, err, errsz)) {
        /* The tokenizer refuses only for reasons that hold for every line (no chat template,
         * out of memory): stop with its message rather than skipping the whole file. */
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s", err);
        snprintf(err, errsz, "%s:%d: %s", path, lineno, tmp);
        clair_json_free(&rec);
        return -1;
    }
    clair_json_free(&rec);
    /* the first token has no log-prob (nothing predicts it), so it is never a completion token */
    for (s = 0; s < rv->n_sides; s++) if (start[s] < 1) start[s] = 1;
    if ((int)start[0] >= o->max_length || (rv->n_sides > 1 && (int)start[1] >= o->max_length)) {
        ds->stats.n_prompt_too_long++;
        REPORT(ds->stats.n_reported, max_rep, log,
               "%s:%d: the prompt is %zu tokens, not shorter than --max-length %d, so no response token "
               "would remain; %s skipped (raise --max-length or shorten the prompt)\n",
               path, lineno, start[0], o->max_length, unpaired ? "example" : "pair");
        return 0;
    }
    if (add_example(ds, ex_cap, lineno, sc->ids, start, rv->n_sides, o->max_length)) {
        snprintf(err, errsz, "out of memory");
        return -1;
    }
    return 0;
}

int pref_dataset_load(pref_dataset *ds, const char *path, const tokenizer *tok,
                      const pref_opts *opts, FILE *log, char *err, size_t errsz) {
    FILE *f;
    size_t len = 0;
    int lineno = 0, rc, ex_cap = 0, first_line = 0, status = -1;
    load_scratch sc;

    memset(ds, 0, sizeof *ds);
    memset(&sc, 0, sizeof sc);
    if (opts->max_length < 2) { snprintf(err, errsz, "max_length must be at least 2 (got %d)", opts->max_length); return -1; }
    f = fopen(path, "rb");
    if (!f) { snprintf(err, errsz, "%s: cannot open (%s); check the --data path", path, strerror(errno)); return -1; }
    sc.rv = (record_view *)malloc(sizeof *sc.rv);
    sc.pmsgs = (tok_message *)malloc(MAX_TURNS * sizeof *sc.pmsgs);
    if (!sc.rv || !sc.pmsgs) { snprintf(err, errsz, "out of memory"); goto done; }

    while ((rc = read_line(f, &sc.line, &sc.cap, &len)) == 1) {
        lineno++;
        if (lineno == 1 && len >= 3 && !memcmp(sc.line, "\xEF\xBB\xBF", 3)) {   /* a UTF-8 byte order mark */
            memmove(sc.line, sc.line + 3, len - 2);
            len -= 3;
        }
        if (is_blank(sc.line, len)) continue;
        if (load_line(ds, path, lineno, &sc, len, tok, opts, &first_line, &ex_cap, log, err, errsz))
            goto done;
    }
    if (rc < 0) { snprintf(err, errsz, "%s: out of memory reading line %d", path, lineno + 1); goto done; }
    if (ferror(f)) { snprintf(err, errsz, "%s: read error after line %d", path, lineno); goto done; }
    status = 0;
done:
    fclose(f);
    load_scratch_free(&sc);
    if (status) pref_dataset_free(ds);
    return status;
}

void pref_dataset_free(pref_dataset *ds) {
    free(ds->ex);
    free(ds->pool);
    memset(ds, 0, sizeof *ds);
}

void pref_stats_print(const pref_stats *s, const char *path, FILE *out) {
    int used = s->n_lines - s->n_malformed - s->n_empty - s->n_prompt_too_long;
    fprintf(out, "%s: %d lines: %d %s", path, s->n_lines, used,
            s->unpaired ? "prompt-completion examples" : "pairs");
    if (s->n_malformed) fprintf(out, ", %d malformed (skipped)", s->n_malformed);
    if (s->n_empty) fprintf(out, ", %d with an empty response (skipped)", s->n_empty);
    if (s->n_prompt_too_long) fprintf(out, ", %d with a prompt not shorter than max-length (skipped)", s->n_prompt_too_long);
    fprintf(out, ", %d truncated to max-length (start kept)\n", s->n_truncated);
}

uint64_t pref_dataset_hash(const pref_dataset *ds) {
    uint64_t h = 0xcbf29ce484222325ULL;
    int i;
    for (i = 0; i < ds->n; i++) {
        const pref_example *e = &ds->ex[i];
        int hdr[4] = { e->chosen_len, e->chosen_start, e->rejected_len, e->rejected_start };
        h = data_hash_bytes(h, hdr, sizeof hdr);
        h = data_hash_bytes(h, ds->pool + e->chosen_off, (size_t)e->chosen_len * sizeof(int));
        h = data_hash_bytes(h, ds->pool + e->rejected_off, (size_t)e->rejected_len * sizeof(int));
    }
    return h;
}

/* Copies examples ex[idx...] into a fresh pool (compacting). */
static int rebuild(pref_dataset *dst, const pref_dataset *src, const int *idx, int n) {
    int i;
    memset(dst, 0, sizeof *dst);
    dst->stats = src->stats;
    if (n == 0) return 0;
    dst->ex = (pref_example *)malloc((size_t)n * sizeof *dst->ex);
    if (!dst->ex) return -1;
    for (i = 0; i < n; i++) {
        pref_example e = src->ex[idx ? idx[i] : i];
        int oc = (int)dst->pool_len;
        if (pool_push(dst, src->pool + e.chosen_off, e.chosen_len)) return -1;
        e.chosen_off = oc;
        oc = (int)dst->pool_len;
        if (pool_push(dst, src->pool + e.rejected_off, e.rejected_len)) return -1;
        e.rejected_off = oc;
        dst->ex[i] = e;
        if (e.chosen_len > dst->max_side_len) dst->max_side_len = e.chosen_len;
        if (e.rejected_len > dst->max_side_len) dst->max_side_len = e.rejected_len;
    }
    dst->n = n;
    return 0;
}

int pref_dataset_permute(pref_dataset *ds, const int *idx) {
    pref_dataset nd;
    if (rebuild(&nd, ds, idx, ds->n)) { pref_dataset_free(&nd); return -1; }
    pref_dataset_free(ds);
    *ds = nd;
    return 0;
}

int pref_dataset_split(pref_dataset *src, int first, pref_dataset *dst) {
    pref_dataset head;
    int i, n = src->n - first;
    int *idx;
    if (first < 0 || first > src->n) return -1;
    idx = (int *)malloc((size_t)(n > 0 ? n : 1) * sizeof *idx);
    if (!idx) return -1;
    for (i = 0; i < n; i++) idx[i] = first + i;
    if (rebuild(dst, src, idx, n)) { free(idx); pref_dataset_free(dst); return -1; }
    free(idx);
    if (rebuild(&head, src, NULL, first)) { pref_dataset_free(&head); pref_dataset_free(dst); return -1; }
    pref_dataset_free(src);
    *src = head;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Micro-batches                                                                            */

int pref_batch_build(pref_batch *pb, const pref_dataset *ds, const int *pairs, int n) {
    size_t T = 0;
    int k, s;
    for (k = 0; k < n; k++) {
        const pref_example *e = &ds->ex[pairs[k]];
        T += (size_t)e->chosen_len + (size_t)(e->rejected_len > 0 ? e->rejected_len : 1);
    }
    if (T > pb->cap_tokens) {
        int *t = (int *)realloc(pb->tokens, T * sizeof *t);
        unsigned char *c;
        if (!t) return -1;
        pb->tokens = t;
        c = (unsigned char *)realloc(pb->completion, T);
        if (!c) return -1;
        pb->completion = c;
        pb->cap_tokens = T;
    }
    if ((size_t)(2 * n + 1) > pb->cap_seq) {
        int *ss = (int *)realloc(pb->seq_start, (size_t)(2 * n + 1) * sizeof *ss);
        int *nc;
        if (!ss) return -1;
        pb->seq_start = ss;
        nc = (int *)realloc(pb->n_completion, (size_t)(2 * n + 1) * sizeof *nc);
        if (!nc) return -1;
        pb->n_completion = nc;
        pb->cap_seq = (size_t)(2 * n + 1);
    }
    T = 0;
    for (k = 0; k < n; k++) {
        const pref_example *e = &ds->ex[pairs[k]];
        for (s = 0; s < 2; s++) {
            int off = s ? e->rejected_off : e->chosen_off;
            int len = s ? e->rejected_len : e->chosen_len;
            int start = s ? e->rejected_start : e->chosen_start;
            int i;
            pb->seq_start[2 * k + s] = (int)T;
            if (len == 0) {        /* the empty side: one token (the chosen side's first), no label */
                pb->tokens[T] = ds->pool[e->chosen_off];
                pb->completion[T] = 0;
                pb->n_completion[2 * k + s] = 0;
                T++;
                continue;
            }
            memcpy(pb->tokens + T, ds->pool + off, (size_t)len * sizeof(int));
            for (i = 0; i < len; i++) pb->completion[T + (size_t)i] = (unsigned char)(i >= start);
            pb->n_completion[2 * k + s] = len - start;
            T += (size_t)len;
        }
    }
    pb->seq_start[2 * n] = (int)T;
    pb->b.n_seq = 2 * n;
    pb->b.tokens = pb->tokens;
    pb->b.seq_start = pb->seq_start;
    pb->b.completion = pb->completion;
    return 0;
}

void pref_batch_free(pref_batch *pb) {
    free(pb->tokens); free(pb->seq_start); free(pb->completion); free(pb->n_completion);
    memset(pb, 0, sizeof *pb);
}

/* ---------------------------------------------------------------------------------------- */
/* Prompts for generation                                                                   */

int prompt_set_load(prompt_set *ps, const char *path, const tokenizer *tok, int raw_text,
                    FILE *log, char *err, size_t errsz) {
    FILE *f;
    char *line = NULL;
    size_t cap = 0, len = 0;
    int lineno = 0, rc, cap_items = 0, status = -1;
    tok_message *msgs = NULL;
    tok_ids ids = {0};

    memset(ps, 0, sizeof *ps);
    f = fopen(path, "rb");
    if (!f) { snprintf(err, errsz, "%s: cannot open (%s); check the --prompts path", path, strerror(errno)); return -1; }
    msgs = (tok_message *)malloc(MAX_TURNS * sizeof *msgs);
    if (!msgs) { snprintf(err, errsz, "out of memory"); goto done; }
    while ((rc = read_line(f, &line, &cap, &len)) == 1) {
        clair_json rec;
        char why[512], jerr[256];
        const clair_json *pv = NULL;
        int n = 0;
        lineno++;
        if (is_blank(line, len)) continue;
        ps->n_lines++;
        why[0] = 0;
        if (clair_json_parse(line, len, &rec, jerr, sizeof jerr)) {
            ps->n_malformed++;
            REPORT(ps->n_reported, 20, log, "%s:%d: not valid JSON (%s); line skipped\n", path, lineno, jerr);
            continue;
        }
        if (rec.type != CLAIR_JSON_OBJECT) snprintf(why, sizeof why, "expected an object with a \"prompt\" field");
        else if (!(pv = clair_json_get(&rec, "prompt"))) snprintf(why, sizeof why, "missing field \"prompt\"");
        else if (pv->type == CLAIR_JSON_STRING) {
            if (is_blank(pv->str, pv->len)) snprintf(why, sizeof why, "\"prompt\" is empty");
            else if (!raw_text && has_nul(pv->str, pv->len))
                snprintf(why, sizeof why, "\"prompt\" contains a NUL character (\\u0000); " NUL_ADVICE);
            msgs[0].role = "user"; msgs[0].content = pv->str; n = 1;
        } else if (pv->type == CLAIR_JSON_ARRAY && !raw_text) {
            n = parse_messages(pv, msgs, MAX_TURNS, "prompt", why, sizeof why);
        } else snprintf(why, sizeof why, "\"prompt\" is a %s; expected a string%s", clair_json_type_name(pv->type),
                        raw_text ? "" : " or a list of {\"role\", \"content\"}");
        if (why[0]) {
            ps->n_malformed++;
            REPORT(ps->n_reported, 20, log, "%s:%d: %s; line skipped\n", path, lineno, why);
            clair_json_free(&rec);
            continue;
        }
        ids.len = 0;
        if (raw_text ? tokenizer_encode(tok, pv->str, pv->len, 0, &ids, err, errsz)
                     : tokenizer_chat_prompt(tok, msgs, n, &ids, err, errsz)) {
            char tmp[512];
            snprintf(tmp, sizeof tmp, "%s", err);
            snprintf(err, errsz, "%s:%d: %s", path, lineno, tmp);
            clair_json_free(&rec);
            goto done;
        }
        if (ps->n == cap_items) {
            int nc = cap_items ? cap_items * 2 : 64;
            prompt_item *ni = (prompt_item *)realloc(ps->items, (size_t)nc * sizeof *ni);
            if (!ni) { clair_json_free(&rec); snprintf(err, errsz, "out of memory"); goto done; }
            ps->items = ni; cap_items = nc;
        }
        {
            prompt_item *it = &ps->items[ps->n];
            clair_buf b = {0};
            clair_json_write(&b, pv);
            it->line = lineno;
            it->json = b.data;
            it->n_ids = (int)ids.len;
            it->ids = (int *)malloc(ids.len * sizeof(int) + 1);
            if (b.oom || !it->json || !it->ids) { free(it->json); free(it->ids); clair_json_free(&rec); snprintf(err, errsz, "out of memory"); goto done; }
            memcpy(it->ids, ids.data, ids.len * sizeof(int));
            ps->n++;
        }
        clair_json_free(&rec);
    }
    if (rc < 0) { snprintf(err, errsz, "%s: out of memory reading line %d", path, lineno + 1); goto done; }
    status = 0;
done:
    fclose(f);
    free(line); free(msgs); tok_ids_free(&ids);
    if (status) prompt_set_free(ps);
    return status;
}

void prompt_set_free(prompt_set *ps) {
    int i;
    for (i = 0; i < ps->n; i++) { free(ps->items[i].json); free(ps->items[i].ids); }
    free(ps->items);
    memset(ps, 0, sizeof *ps);
}
