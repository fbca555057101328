/* train/data.c - preference JSONL -> token ids -> micro-batches (see data.h for the formats). */
#include "data.h"

#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <errno.h>
#include "../clair.h"

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

/* Messages from a JSON array of {role, content}. Returns the count, or -1 with `why` set. */
static int parse_messages(const clair_json *arr, tok_message *msgs, int max, const char *field,
                          char *why, size_t whysz) {
    size_t i;
    if (arr->n == 0) { snprintf(why, whysz, "\"%s\" is an empty list", field); return -1; }
    if (arr->n > (size_t)max) { snprintf(why, whysz, "\"%s\" has more than %d turns", field, max); return -1; }
    for (i = 0; i < arr->n; i++) {
        const clair_json *m = &arr->items[i];
        const char *role, *content;
        if (m->type != CLAIR_JSON_OBJECT) {
            snprintf(why, whysz, "\"%s\"[%zu] is a %s, expected an object {\"role\", \"content\"}",
                     field, i, clair_json_type_name(m->type));
            return -1;
        }
        role = clair_json_get_str(m, "role");
        content = clair_json_get_str(m, "content");
        if (!role || !content) {
            snprintf(why, whysz, "\"%s\"[%zu] needs string fields \"role\" and \"content\"", field, i);
            return -1;
        }
        if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant")) {
            snprintf(why, whysz, "\"%s\"[%zu].role is \"%s\"; expected system, user or assistant",
                     field, i, role);
            return -1;
        }
        msgs[i].role = role;
        msgs[i].content = content;
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

/* One side (chosen or rejected) of a record: its conversation context and its response text.
 * Context = the side's own leading turns when it repeats them (CLAIR release), else the prompt. */
typedef struct {
    tok_message ctx[MAX_TURNS];
    int n_ctx;
    const char *response;
    size_t response_len;
} side_view;

static int parse_side(const clair_json *rec, const char *field, side_view *sv,
                      const tok_message *prompt_msgs, int n_prompt, char *why, size_t whysz) {
    const clair_json *v = clair_json_get(rec, field);
    if (!v) { snprintf(why, whysz, "missing field \"%s\"", field); return -1; }
    if (v->type == CLAIR_JSON_STRING) {
        sv->response = v->str; sv->response_len = v->len;
        if (n_prompt <= 0) { snprintf(why, whysz, "missing field \"prompt\" (needed when \"%s\" is a string)", field); return -1; }
        memcpy(sv->ctx, prompt_msgs, (size_t)n_prompt * sizeof *prompt_msgs);
        sv->n_ctx = n_prompt;
        return 0;
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

/* Tokenizes one side into out; *start = first completion index. Raw mode: prompt text ids,
 * response ids, eos. Chat mode: the template (tokenizer_chat_pair). */
static int tokenize_side(const tokenizer *tok, int raw_text, const side_view *sv,
                         const char *raw_prompt, size_t raw_prompt_len, tok_ids *out, size_t *start,
                         char *err, size_t errsz) {
    out->len = 0;
    if (raw_text) {
        int eos = tokenizer_eos_id(tok);
        if (tokenizer_encode(tok, raw_prompt, raw_prompt_len, 0, out, err, errsz)) return -1;
        *start = out->len;
        if (tokenizer_encode(tok, sv->response, sv->response_len, 0, out, err, errsz)) return -1;
        if (eos >= 0 && tok_ids_push(out, eos)) { snprintf(err, errsz, "out of memory"); return -1; }
        return 0;
    }
    return tokenizer_chat_pair(tok, sv->ctx, sv->n_ctx, sv->response, out, start, err, errsz);
}

#define REPORT(ds_stats_reported, maxrep, log, ...) do {                                     \
        if ((ds_stats_reported) < (maxrep) && (log)) { fprintf(log, __VA_ARGS__); }           \
        else if ((ds_stats_reported) == (maxrep) && (log))                                    \
            fprintf(log, "(further bad lines are counted but not shown)\n");                \
        (ds_stats_reported)++;                                                                \
    } while (0)

int pref_dataset_load(pref_dataset *ds, const char *path, const tokenizer *tok,
                      const pref_opts *opts, FILE *log, char *err, size_t errsz) {
    FILE *f;
    char *line = NULL;
    size_t cap = 0, len = 0;
    int lineno = 0, rc, ex_cap = 0, max_rep = opts->max_reports > 0 ? opts->max_reports : 20;
    tok_ids ids_c = {0}, ids_r = {0};
    side_view *sc = NULL, *sr = NULL;
    tok_message *pmsgs = NULL;
    int status = -1;

    memset(ds, 0, sizeof *ds);
    if (opts->max_length < 2) { snprintf(err, errsz, "max_length must be at least 2 (got %d)", opts->max_length); return -1; }
    f = fopen(path, "rb");
    if (!f) { snprintf(err, errsz, "%s: cannot open (%s); check the --data path", path, strerror(errno)); return -1; }
    sc = (side_view *)malloc(sizeof *sc);
    sr = (side_view *)malloc(sizeof *sr);
    pmsgs = (tok_message *)malloc(MAX_TURNS * sizeof *pmsgs);
    if (!sc || !sr || !pmsgs) { snprintf(err, errsz, "out of memory"); goto done; }

    while ((rc = read_line(f, &line, &cap, &len)) == 1) {
        clair_json rec;
        char why[512], jerr[256];
        const clair_json *pv;
        int n_prompt = 0;
        size_t start_c = 0, start_r = 0;
        const char *raw_prompt = NULL; size_t raw_prompt_len = 0;
        lineno++;
        if (lineno == 1 && len >= 3 && !memcmp(line, "\xEF\xBB\xBF", 3)) {   /* a UTF-8 byte order mark */
            memmove(line, line + 3, len - 2);
            len -= 3;
        }
        if (is_blank(line, len)) continue;
        ds->stats.n_lines++;
        if (clair_json_parse(line, len, &rec, jerr, sizeof jerr)) {
            ds->stats.n_malformed++;
            REPORT(ds->stats.n_reported, max_rep, log, "%s:%d: not valid JSON (%s); line skipped\n", path, lineno, jerr);
            continue;
        }
        why[0] = 0;
        if (rec.type != CLAIR_JSON_OBJECT) {
            snprintf(why, sizeof why, "the line is a JSON %s, expected an object with \"prompt\", \"chosen\", \"rejected\"",
                     clair_json_type_name(rec.type));
        } else {
            pv = clair_json_get(&rec, "prompt");
            if (pv && pv->type == CLAIR_JSON_STRING) {
                pmsgs[0].role = "user"; pmsgs[0].content = pv->str; n_prompt = 1;
                raw_prompt = pv->str; raw_prompt_len = pv->len;
            } else if (pv && pv->type == CLAIR_JSON_ARRAY) {
                n_prompt = parse_messages(pv, pmsgs, MAX_TURNS, "prompt", why, sizeof why);
                if (n_prompt < 0) n_prompt = 0; else if (opts->raw_text)
                    snprintf(why, sizeof why, "\"prompt\" is a conversation; --raw-text needs plain strings");
            } else if (pv) {
                snprintf(why, sizeof why, "\"prompt\" is a %s; expected a string or a list of {\"role\", \"content\"}",
                         clair_json_type_name(pv->type));
            } else if (opts->raw_text) {
                snprintf(why, sizeof why, "missing field \"prompt\"");
            }
            if (!why[0] && parse_side(&rec, "chosen", sc, pmsgs, n_prompt, why, sizeof why) == 0 &&
                parse_side(&rec, "rejected", sr, pmsgs, n_prompt, why, sizeof why) == 0) {
                if (opts->raw_text && (clair_json_get(&rec, "chosen")->type != CLAIR_JSON_STRING ||
                                       clair_json_get(&rec, "rejected")->type != CLAIR_JSON_STRING))
                    snprintf(why, sizeof why, "--raw-text needs \"chosen\" and \"rejected\" as strings");
                else if (!same_turns(sc->ctx, sc->n_ctx, sr->ctx, sr->n_ctx))
                    snprintf(why, sizeof why, "\"chosen\" and \"rejected\" repeat different prompt turns");
            }
        }
        if (why[0]) {
            ds->stats.n_malformed++;
            REPORT(ds->stats.n_reported, max_rep, log, "%s:%d: %s; line skipped\n", path, lineno, why);
            clair_json_free(&rec);
            continue;
        }
        if (is_blank(sc->response, sc->response_len) || is_blank(sr->response, sr->response_len)) {
            ds->stats.n_empty++;
            REPORT(ds->stats.n_reported, max_rep, log, "%s:%d: the %s response is empty; pair skipped\n", path, lineno,
                   is_blank(sc->response, sc->response_len) ? "chosen" : "rejected");
            clair_json_free(&rec);
            continue;
        }
        if (tokenize_side(tok, opts->raw_text, sc, raw_prompt, raw_prompt_len, &ids_c, &start_c, err, errsz) ||
            tokenize_side(tok, opts->raw_text, sr, raw_prompt, raw_prompt_len, &ids_r, &start_r, err, errsz)) {
            /* The tokenizer refuses only for reasons that hold for every line (no chat template,
             * out of memory): stop with its message rather than skipping the whole file. */
            char tmp[512];
            snprintf(tmp, sizeof tmp, "%s", err);
            snprintf(err, errsz, "%s:%d: %s", path, lineno, tmp);
            clair_json_free(&rec);
            goto done;
        }
        clair_json_free(&rec);
        if ((int)start_c >= opts->max_length || (int)start_r >= opts->max_length) {
            ds->stats.n_prompt_too_long++;
            REPORT(ds->stats.n_reported, max_rep, log,
                   "%s:%d: the prompt is %zu tokens, not shorter than --max-length %d, so no response token "
                   "would remain; pair skipped (raise --max-length or shorten the prompt)\n",
                   path, lineno, start_c, opts->max_length);
            continue;
        }
        {
            /* TRL's truncation_mode "keep_start": keep the first max_length ids of prompt+response. */
            int lc = (int)ids_c.len, lr = (int)ids_r.len;
            pref_example *e;
            if (lc > opts->max_length || lr > opts->max_length) ds->stats.n_truncated++;
            if (lc > opts->max_length) lc = opts->max_length;
            if (lr > opts->max_length) lr = opts->max_length;
            if (ds->n == ex_cap) {
                int nc = ex_cap ? ex_cap * 2 : 256;
                pref_example *ne = (pref_example *)realloc(ds->ex, (size_t)nc * sizeof *ne);
                if (!ne) { snprintf(err, errsz, "out of memory"); goto done; }
                ds->ex = ne; ex_cap = nc;
            }
            e = &ds->ex[ds->n];
            e->line = lineno;
            e->chosen_off = (int)ds->pool_len; e->chosen_len = lc; e->chosen_start = (int)start_c;
            if (pool_push(ds, ids_c.data, lc)) { snprintf(err, errsz, "out of memory"); goto done; }
            e->rejected_off = (int)ds->pool_len; e->rejected_len = lr; e->rejected_start = (int)start_r;
            if (pool_push(ds, ids_r.data, lr)) { snprintf(err, errsz, "out of memory"); goto done; }
            if (lc > ds->max_side_len) ds->max_side_len = lc;
            if (lr > ds->max_side_len) ds->max_side_len = lr;
            ds->n++;
        }
    }
    if (rc < 0) { snprintf(err, errsz, "%s: out of memory reading line %d", path, lineno + 1); goto done; }
    if (ferror(f)) { snprintf(err, errsz, "%s: read error after line %d", path, lineno); goto done; }
    status = 0;
done:
    fclose(f);
    free(line); free(sc); free(sr); free(pmsgs);
    tok_ids_free(&ids_c); tok_ids_free(&ids_r);
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
    fprintf(out, "%s: %d lines: %d pairs", path, s->n_lines, used);
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
    for (k = 0; k < n; k++) T += (size_t)ds->ex[pairs[k]].chosen_len + (size_t)ds->ex[pairs[k]].rejected_len;
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
