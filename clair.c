/* clair.c - the `clair` command-line tool: the target model's own answers, CLAIR preference
 * pairs, pairwise judging, and minimal-contrast statistics. Built on clair.h (this file holds
 * its implementation).
 *
 *   clair generate --in prompts.jsonl --out answers.jsonl --base-url URL --model TARGET [options]
 *   clair revise   --in answers.jsonl --out pairs.jsonl --base-url URL --model REVISER [options]
 *   clair judge    --a A.jsonl --b B.jsonl --out verdicts.jsonl --base-url URL --model JUDGE [options]
 *   clair stats FILE.jsonl [--json]
 *   clair diff OLD_FILE NEW_FILE
 *
 * generate, revise and judge share one engine (struct run, below): a command only says how to
 * read an input line, what to ask the server and what to write for a reply. The engine's
 * guarantees, the same for the three:
 *   - A unit is one request: one input line, or one part of it (generate --n K asks K samples
 *     of a line; judge asks each pair in two orders). Every unit ends in exactly one record, in
 *     one of three files: OUT (kept), OUT.dropped.jsonl (with "reason") or OUT.failed.jsonl
 *     (with "error"). Each record carries "clair_line" (1-based input line), "clair_part" (when
 *     a line has several units) and "clair_key" (a hash of the input line's bytes).
 *   - A record is written with one append (O_APPEND, a single write of the whole line); the
 *     files are fsync'ed at least once a second and at exit. A record is therefore either
 *     complete or a partial last line; a partial last line (only possible after a crash) is
 *     cut off on the next run and its unit requested again.
 *   - Re-running the same command reads the three files first and requests only the units
 *     without a record. A record whose clair_key does not match the input line stops the run
 *     (the input changed). --retry-failed requests the failed units again (a fixed bad input
 *     line too): the failed file is first replaced (atomically, temp + rename) by an empty one.
 *   - Before fanning out, one request goes alone (the preflight): a bad URL, key, model or
 *     request field stops the run after that one request, with a message naming the fix.
 *   - Token usage is summed ("clair_usage" in each record, earlier runs included) and priced
 *     with --price-in/--price-out; --max-cost stops before the estimated next request would
 *     exceed the budget.
 *   - Everything written is valid JSON and UTF-8 (clair.h's writer mends invalid bytes), and
 *     the API key's value never appears in a file or on stderr.
 */
#define _POSIX_C_SOURCE 200809L
#define CLAIR_IMPLEMENTATION
#include "clair.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

static const char *prog = "clair";

/* The API key of this run, once read: every message that leaves the program is redacted. */
static const char *g_key = NULL;

/* Prints "clair: message" (the key overwritten) and exits with status 1. */
static void die(const char *f, ...) {
    char msg[4096];
    va_list ap;
    va_start(ap, f);
    vsnprintf(msg, sizeof msg, f, ap);
    va_end(ap);
    clair_redact(msg, strlen(msg), g_key);
    exit(report(prog, "%s", msg));
}

/* fprintf(stderr, ...) with the key overwritten: for lines that carry a server's text. */
static void say(const char *f, ...) {
    char msg[4096];
    va_list ap;
    va_start(ap, f);
    vsnprintf(msg, sizeof msg, f, ap);
    va_end(ap);
    clair_redact(msg, strlen(msg), g_key);
    fputs(msg, stderr);
}

/* A whole input or output file of this tool: JSONL of any size (1 TiB is a sanity bound). NULL
 * with errno set and the message (naming the file and the cause) in slurp_err. */
static char slurp_err[4400];
static char *slurp(const char *path, size_t *n) {
    return read_file(path, (size_t)1 << 40, n, slurp_err, sizeof slurp_err);
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0) { if (errno == EINTR) continue; return -1; }
        p += k; n -= (size_t)k;
    }
    return 0;
}

/* Lines of a buffer: [off, off+len) without the '\n' (a final '\r' is kept: JSON ignores it). */
typedef struct { size_t off, len; } span;

static span *split_lines(const char *s, size_t n, size_t *count) {
    size_t cap = 1024, k = 0, i = 0;
    span *v = (span *)malloc(cap * sizeof *v);
    if (!v) die("out of memory");
    while (i < n) {
        const char *nl = (const char *)memchr(s + i, '\n', n - i);
        size_t e = nl ? (size_t)(nl - s) : n;
        if (k == cap) { cap *= 2; v = (span *)realloc(v, cap * sizeof *v); if (!v) die("out of memory"); }
        v[k].off = i; v[k].len = e - i; k++;
        i = e + 1;
    }
    *count = k;
    return v;
}

static int blank(const char *s, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) if (!strchr(" \t\r", s[i]) || !s[i]) return 0;
    return 1;
}

static int all_space(const char *s, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) if (!strchr(" \t\r\n", s[i]) || !s[i]) return 0;
    return 1;
}

static int tolower_ascii(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static unsigned long long fnv1a(const char *s, size_t n) {
    unsigned long long h = 1469598103934665603ULL;
    size_t i;
    for (i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ULL; }
    return h;
}

/* A numeric option outside [lo, hi] stops the program with the flag and its range named.
 * Counts are read as numbers and checked here, so that "--concurrency 1e10" gets the same
 * message as "--concurrency 5000" (the table parser would only say "not an integer"). */
static void check_dbl(const char *flag, double v, double lo, double hi) {
    if (!(v >= lo && v <= hi)) die("%s %g is out of range: allowed %g to %g", flag, v, lo, hi);
}
static int check_count(const char *flag, double v, int lo, int hi) {
    if (!(v >= lo && v <= hi) || v != floor(v)) die("%s %g is out of range: allowed a whole number from %d to %d", flag, v, lo, hi);
    return (int)v;
}

/* ============================================================================================
 * Conversations: TRL's layouts
 *
 * A prompt is a string or a list of {role, content} messages (TRL's "conversational" format,
 * and what ./trainer generate writes through); an answer is a string or a message list whose
 * last assistant message is the answer. A record can also be {"messages": [...]}: the last
 * assistant message is the answer, the messages before it the prompt.
 * ========================================================================================== */

/* err for a message list that is not one: NULL if every item is {role: string, content: string}. */
static int check_messages(const clair_json *v, const char *field, char *err, size_t errsz) {
    size_t i;
    if (!v->n) { snprintf(err, errsz, "field \"%s\" is an empty message list", field); return -1; }
    for (i = 0; i < v->n; i++) {
        const clair_json *m = &v->items[i];
        if (m->type != CLAIR_JSON_OBJECT || !clair_json_get_str(m, "role") || !clair_json_get_str(m, "content")) {
            snprintf(err, errsz, "field \"%s\", message %zu: not a {\"role\": string, \"content\": string} object", field, i + 1);
            return -1;
        }
    }
    return 0;
}

/* The text of an answer field: a string, or the last assistant message of a list (else its last
 * message). NULL with a reason if neither. */
static const clair_json *response_text(const clair_json *v, const char *field, char *err, size_t errsz) {
    const clair_json *f = clair_json_get(v, field);
    size_t i;
    if (!f) { snprintf(err, errsz, "missing field \"%s\"", field); return NULL; }
    if (f->type == CLAIR_JSON_STRING) return f;
    if (f->type == CLAIR_JSON_ARRAY && f->n) {
        const clair_json *pick = NULL;
        for (i = f->n; i-- > 0;) {
            const char *role = clair_json_get_str(&f->items[i], "role");
            if (role && !strcmp(role, "assistant")) { pick = &f->items[i]; break; }
        }
        if (!pick) pick = &f->items[f->n - 1];
        const clair_json *c = clair_json_get(pick, "content");
        if (c && c->type == CLAIR_JSON_STRING) return c;
        snprintf(err, errsz, "field \"%s\": the message has no \"content\" string", field);
        return NULL;
    }
    snprintf(err, errsz, "field \"%s\" is a %s, not a string or a message list", field, clair_json_type_name(f->type));
    return NULL;
}

/* A prompt for a person or a reviser: the string itself, or a single user message's content, or
 * each message as "Role: content", separated by blank lines. n_msgs < 0: the whole list. */
static void prompt_text(clair_buf *b, const clair_json *p, long n_msgs) {
    size_t i, n;
    if (p->type == CLAIR_JSON_STRING) { clair_buf_put(b, p->str, p->len); return; }
    n = n_msgs < 0 ? p->n : (size_t)n_msgs;
    if (n == 1 && !strcmp(clair_json_get_str(&p->items[0], "role"), "user")) {
        const clair_json *c = clair_json_get(&p->items[0], "content");
        clair_buf_put(b, c->str, c->len);
        return;
    }
    for (i = 0; i < n; i++) {
        const char *role = clair_json_get_str(&p->items[i], "role");
        const clair_json *c = clair_json_get(&p->items[i], "content");
        if (i) clair_buf_puts(b, "\n\n");
        if (role[0] >= 'a' && role[0] <= 'z') { char up = (char)(role[0] - 32); clair_buf_put(b, &up, 1); role++; }
        clair_buf_puts(b, role);
        clair_buf_puts(b, ": ");
        clair_buf_put(b, c->str, c->len);
    }
}

/* A chat messages array that asks for a reply to prompt p (string: one user message). */
static void prompt_messages(clair_buf *b, const clair_json *p, long n_msgs) {
    size_t i, n;
    if (p->type == CLAIR_JSON_STRING) {
        clair_buf_puts(b, "[{\"role\":\"user\",\"content\":");
        clair_json_write_string(b, p->str, p->len);
        clair_buf_puts(b, "}]");
        return;
    }
    n = n_msgs < 0 ? p->n : (size_t)n_msgs;
    clair_buf_puts(b, "[");
    for (i = 0; i < n; i++) {
        if (i) clair_buf_puts(b, ",");
        clair_json_write(b, &p->items[i]);
    }
    clair_buf_puts(b, "]");
}

/* One input record read in a TRL layout: the prompt (a string or messages[0..n_msgs)) and, for
 * records that carry one, the answer text. */
typedef struct {
    const clair_json *prompt;
    long n_msgs;                 /* messages of the prompt (-1: all of it, or a string) */
    const clair_json *answer;    /* a string node, NULL if the record has none */
    int conversational;          /* the prompt is a message list: write chosen/rejected as lists */
} trl_record;

/* Reads prompt (+ answer if need_answer) from {"prompt", "response"|"completion"} or
 * {"messages"}. 0, or -1 with the reason in err. */
static int read_trl(const clair_json *v, int need_answer, trl_record *r, char *err, size_t errsz) {
    const clair_json *msgs = clair_json_get(v, "messages");
    memset(r, 0, sizeof *r);
    r->n_msgs = -1;
    if (v->type != CLAIR_JSON_OBJECT) { snprintf(err, errsz, "not a JSON object"); return -1; }
    if (!clair_json_get(v, "prompt") && msgs) {
        size_t i;
        if (msgs->type != CLAIR_JSON_ARRAY) { snprintf(err, errsz, "field \"messages\" is not a list"); return -1; }
        if (check_messages(msgs, "messages", err, errsz)) return -1;
        r->prompt = msgs; r->conversational = 1;
        if (!need_answer) return 0;
        for (i = msgs->n; i-- > 0;) if (!strcmp(clair_json_get_str(&msgs->items[i], "role"), "assistant")) break;
        if (i == (size_t)-1 || i == 0) { snprintf(err, errsz, "field \"messages\": no assistant message after a prompt"); return -1; }
        r->n_msgs = (long)i;
        r->answer = clair_json_get(&msgs->items[i], "content");
    } else {
        const clair_json *p = clair_json_get(v, "prompt");
        if (!p) { snprintf(err, errsz, "missing field \"prompt\" (or \"messages\")"); return -1; }
        if (p->type == CLAIR_JSON_ARRAY) {
            if (check_messages(p, "prompt", err, errsz)) return -1;
            r->conversational = 1;
        } else if (p->type != CLAIR_JSON_STRING) {
            snprintf(err, errsz, "field \"prompt\" is a %s, not a string or a message list", clair_json_type_name(p->type));
            return -1;
        } else if (all_space(p->str, p->len)) { snprintf(err, errsz, "field \"prompt\" is empty"); return -1; }
        r->prompt = p;
        if (!need_answer) return 0;
        const char *f = clair_json_get(v, "response") || !clair_json_get(v, "completion") ? "response" : "completion";
        if (!(r->answer = response_text(v, f, err, errsz))) return -1;
        if (clair_json_get(v, f)->type == CLAIR_JSON_ARRAY) r->conversational = 1;   /* answers as messages: keep it so */
    }
    if (all_space(r->answer->str, r->answer->len)) { snprintf(err, errsz, "the answer is empty"); return -1; }
    return 0;
}

/* ============================================================================================
 * The engine shared by generate, revise and judge
 * ========================================================================================== */

enum { ST_TODO = 0, ST_KEPT, ST_DROPPED, ST_FAILED, ST_BLANK, ST_FLIGHT };
enum { OUT_KEPT = 0, OUT_DROPPED = 1, OUT_FAILED = 2 };

typedef struct run run;

/* One input line, parsed: v (judge: A's line), w (judge: the matching line of B). */
typedef struct { clair_json v, w; int has_w; trl_record t, tw; } line_in;

/* What makes a command: how to read a line, what to ask, what to write for a reply. */
typedef struct {
    const char *name;         /* "revise" */
    const char *per_s;        /* "pairs/s" */
    /* 0 with in filled, or -1 with the reason (the line goes to the failed file as bad_input) */
    int (*parse)(run *r, size_t line, line_in *in, char *err, size_t errsz);
    /* the chat messages (a JSON array) for one unit */
    void (*messages)(run *r, const line_in *in, int part, clair_buf *out);
    /* a record for a reply: writes "{..." (no closing brace) into rec; returns OUT_KEPT or
     * OUT_DROPPED and, for a drop, the reason */
    int (*reply)(run *r, const line_in *in, int part, const char *text, size_t n, int truncated,
                 clair_buf *rec, const char **reason);
    /* the input's fields for a failed record (after "error", "message", ...) */
    void (*input_fields)(run *r, const line_in *in, clair_buf *rec);
    /* the key of an input line (default: a hash of its bytes) */
    unsigned long long (*key)(run *r, size_t line);
} command;

/* A request field set with --param KEY=JSON (json NULL: the field is removed). */
typedef struct { const char *key; char *json; } param;

typedef struct { const char *name; size_t n; } tally;

struct run {
    const command *cmd;
    void *cmd_ctx;
    /* options */
    const char *in, *out, *dropped_path, *failed_path, *base_url, *model, *api_key_env;
    int concurrency, max_tokens, max_attempts, retry_failed, quiet, verbose, dry_run, no_preflight;
    int limit, parts;
    double concurrency_arg, max_tokens_arg, max_attempts_arg, limit_arg;   /* as given; checked into the ints */
    double temperature, top_p, timeout, connect_timeout, backoff, backoff_max, retry_after_max;
    double price_in, price_out, max_cost;
    param params[64];
    int nparams;
    /* input */
    char *data;
    span *lines;
    size_t nlines, nunits, cursor;
    unsigned char *state;          /* per unit */
    /* outputs */
    int fd[3];
    const char *path[3];
    char dpath[4096], fpath[4096], url[4096];
    double last_sync, last_progress, t0;
    /* counts: this run, and the records found from earlier runs */
    size_t todo, done_now, in_flight, count[3], prev[3], blank_lines, with_usage, prev_with_usage;
    long long tok_in, tok_out, prev_tok_in, prev_tok_out;
    tally drops[16], fails[16];
    /* phases */
    int preflight, preflight_sent, preflight_fatal, budget_stop;
    char preflight_msg[1024];
};

static volatile int g_stop = 0;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

static void tally_add(tally *t, const char *name) {
    int i;
    for (i = 0; i < 15 && t[i].name; i++) if (!strcmp(t[i].name, name)) break;
    if (!t[i].name) t[i].name = name;      /* the 16th distinct name collects the rest */
    t[i].n++;
}

static double cost_of(const run *r, long long in, long long out) {
    return ((double)in * r->price_in + (double)out * r->price_out) / 1e6;
}

/* Fields the engine and the commands write themselves: an input's own field of these names is
 * not copied into a record. */
static const char *reserved[] = { "prompt", "response", "completion", "messages", "chosen", "rejected",
    "rationale", "jaccard", "levenshtein", "edit_ratio", "token_edits", "reason", "error", "message",
    "status", "attempts", "reply", "input", "sample", "finish_reason", "order", "verdict", "score_a",
    "a", "b", "judgment", "clair_line", "clair_part", "clair_key", "clair_usage", NULL };

static int is_reserved(const char *k) {
    int i;
    for (i = 0; reserved[i]; i++) if (!strcmp(k, reserved[i])) return 1;
    return 0;
}

/* Copies the input's own fields (those we do not write ourselves) into the record. */
static void put_extras(clair_buf *b, const clair_json *in) {
    size_t i;
    if (!in || in->type != CLAIR_JSON_OBJECT) return;
    for (i = 0; i < in->n; i++) {
        if (is_reserved(in->keys[i])) continue;
        clair_buf_puts(b, ",");
        clair_json_write_string(b, in->keys[i], in->key_lens[i]);
        clair_buf_puts(b, ":");
        clair_json_write(b, &in->items[i]);
    }
}

static void put_str(clair_buf *b, const char *key, const char *s, size_t n) {
    clair_buf_printf(b, ",\"%s\":", key);
    clair_json_write_string(b, s, n);
}

/* ,"key":<the prompt as read> */
static void put_json(clair_buf *b, const char *key, const clair_json *v) {
    clair_buf_printf(b, ",\"%s\":", key);
    clair_json_write(b, v);
}

static void sync_outputs(run *r) {
    int k;
    for (k = 0; k < 3; k++) if (r->fd[k] >= 0) fsync(r->fd[k]);
    r->last_sync = now_s();
}

static unsigned long long line_key(run *r, size_t line) {
    if (r->cmd->key) return r->cmd->key(r, line);
    return fnv1a(r->data + r->lines[line].off, r->lines[line].len);
}

/* Ends the record (usage, clair_line, clair_part, clair_key, newline), redacts the key and
 * appends it to output k. */
static void emit(run *r, int k, clair_buf *b, size_t unit, const long long *usage) {
    size_t line = unit / (size_t)r->parts;
    if (usage) clair_buf_printf(b, ",\"clair_usage\":{\"prompt_tokens\":%lld,\"completion_tokens\":%lld}", usage[0], usage[1]);
    clair_buf_printf(b, ",\"clair_line\":%zu", line + 1);
    if (r->parts > 1) clair_buf_printf(b, ",\"clair_part\":%zu", unit % (size_t)r->parts);
    clair_buf_printf(b, ",\"clair_key\":\"%016llx\"}\n", line_key(r, line));
    if (b->oom) die("out of memory writing a record for input line %zu", line + 1);
    clair_redact(b->data, b->len, g_key);
    if (write_all(r->fd[k], b->data, b->len)) die("cannot write %s: %s", r->path[k], strerror(errno));
    if (now_s() - r->last_sync >= 1.0) sync_outputs(r);
    r->count[k]++;
    r->state[unit] = k == OUT_KEPT ? ST_KEPT : k == OUT_DROPPED ? ST_DROPPED : ST_FAILED;
}

static void record_failure(run *r, size_t unit, const line_in *in, const char *error, long status,
                           int attempts, const char *message, const char *reply, size_t reply_len) {
    clair_buf b = {0, 0, 0, 0};
    clair_buf_puts(&b, "{\"error\":");
    clair_json_write_string(&b, error, strlen(error));
    if (status) clair_buf_printf(&b, ",\"status\":%ld", status);
    if (attempts) clair_buf_printf(&b, ",\"attempts\":%d", attempts);
    put_str(&b, "message", message, strlen(message));
    if (in) r->cmd->input_fields(r, in, &b);
    else {
        const span *l = &r->lines[unit / (size_t)r->parts];
        put_str(&b, "input", r->data + l->off, l->len);   /* the writer mends invalid UTF-8 */
    }
    if (reply) put_str(&b, "reply", reply, reply_len);
    emit(r, OUT_FAILED, &b, unit, NULL);
    clair_buf_free(&b);
    tally_add(r->fails, error);
}

static void free_line(line_in *in) {
    clair_json_free(&in->v);
    if (in->has_w) clair_json_free(&in->w);
}

/* The request body: model, the command's messages, the sampling fields, then --param fields
 * (a --param of the same name replaces or removes ours). */
static int param_index(const run *r, const char *key) {
    int i;
    for (i = r->nparams; i-- > 0;) if (!strcmp(r->params[i].key, key)) return i;
    return -1;
}

static void request_body(run *r, const line_in *in, int part, clair_buf *b) {
    int i;
    clair_buf_puts(b, "{\"model\":");
    clair_json_write_string(b, r->model, strlen(r->model));
    clair_buf_puts(b, ",\"messages\":");
    r->cmd->messages(r, in, part, b);
    if (param_index(r, "temperature") < 0) { clair_buf_puts(b, ",\"temperature\":"); clair_json_write_number(b, r->temperature); }
    if (r->top_p > 0 && param_index(r, "top_p") < 0) { clair_buf_puts(b, ",\"top_p\":"); clair_json_write_number(b, r->top_p); }
    if (r->max_tokens > 0 && param_index(r, "max_tokens") < 0) clair_buf_printf(b, ",\"max_tokens\":%d", r->max_tokens);
    for (i = 0; i < r->nparams; i++) {
        if (!r->params[i].json || param_index(r, r->params[i].key) != i) continue;   /* removed, or set again later */
        clair_buf_puts(b, ",");
        clair_json_write_string(b, r->params[i].key, strlen(r->params[i].key));
        clair_buf_puts(b, ":");
        clair_buf_puts(b, r->params[i].json);
    }
    clair_buf_puts(b, ",\"stream\":false}");
}

/* The next unit without a record, as a request; bad input lines are recorded on the way. */
static int engine_next(void *ctx, clair_job *job) {
    run *r = (run *)ctx;
    if (r->preflight && r->preflight_sent) return 0;
    while (r->cursor < r->nunits && !g_stop) {
        size_t u = r->cursor, line = u / (size_t)r->parts;
        int part = (int)(u % (size_t)r->parts);
        line_in in;
        char err[300];
        clair_buf body = {0, 0, 0, 0};
        if (r->state[u] != ST_TODO) { r->cursor++; continue; }
        if (r->max_cost > 0) {
            size_t n = r->prev_with_usage + r->with_usage;
            double spent = cost_of(r, r->prev_tok_in + r->tok_in, r->prev_tok_out + r->tok_out);
            double each = n ? spent / (double)n : 0;
            if (spent + (double)(r->in_flight + 1) * each > r->max_cost) { r->budget_stop = 1; return 0; }
        }
        r->cursor++;
        memset(&in, 0, sizeof in);
        if (r->cmd->parse(r, line, &in, err, sizeof err)) {
            size_t p;
            say("%s: %s line %zu: %s; recorded in %s\n", prog, r->in, line + 1, err, r->path[OUT_FAILED]);
            for (p = 0; p < (size_t)r->parts; p++)        /* the line's other units share its fate */
                if (r->state[line * (size_t)r->parts + p] == ST_TODO) {
                    record_failure(r, line * (size_t)r->parts + p, NULL, "bad_input", 0, 0, err, NULL, 0);
                    r->done_now++;
                }
            continue;
        }
        request_body(r, &in, part, &body);
        free_line(&in);
        if (body.oom) die("out of memory building the request for input line %zu", line + 1);
        job->body = body.data;
        job->body_len = body.len;
        job->user = (void *)(uintptr_t)u;
        r->state[u] = ST_FLIGHT;
        r->in_flight++;
        r->preflight_sent = 1;
        return 1;
    }
    return 0;
}

static int looks_like_json(const char *s, size_t n) {
    size_t i = 0;
    while (i < n && strchr(" \t\r\n", s[i]) && s[i]) i++;
    return i < n && s[i] == '{';
}

/* A 4xx that no retry can change (the engine retries 408, 409, 425 and 429). */
static int final_4xx(long status) {
    return status >= 400 && status < 500 && status != 408 && status != 409 && status != 425 && status != 429;
}

/* A 4xx message about the request's fields rather than one line's content (a prompt too long
 * for the context is the line's failure, not the run's). */
static int field_problem(const char *m) {
    static const char *words[] = { "arameter", "nsupported", "not supported", "nrecognized", "xtra fields",
                                   "xtra inputs", "max_tokens", "temperature", "not permitted", NULL };
    int i;
    for (i = 0; words[i]; i++) if (strstr(m, words[i])) return 1;
    return 0;
}

/* The preflight's verdict on a failed first request: a message naming the fix if nothing
 * else can succeed (bad URL, key, model or request field), "" if the failure may pass. */
static void preflight_verdict(run *r, const clair_job *j, char *msg, size_t n) {
    const char *m = j->message;
    /* the wordings of OpenAI, vLLM and llama.cpp for a model the server does not have */
    int model = (strstr(m, "model") || strstr(m, "Model")) && (strstr(m, "not found") || strstr(m, "does not exist") ||
                strstr(m, "model_not_found") || strstr(m, "nknown model") || strstr(m, "nvalid model"));
    msg[0] = 0;
    if (j->error == CLAIR_REQ_HTTP && (j->status == 401 || j->status == 403))
        fmt(msg, n, "the server refused the request (%s): %s", m, r->api_key_env ?
                 "check the API key in the environment variable named by --api-key-env" :
                 "it wants an API key: put it in an environment variable and pass --api-key-env VAR");
    else if (j->error == CLAIR_REQ_HTTP && j->status == 404 && model)
        fmt(msg, n, "the server does not serve model '%s' (%s): check --model (GET BASE_URL/models lists the names)", r->model, m);
    else if (j->error == CLAIR_REQ_HTTP && j->status == 404)
        fmt(msg, n, "%s was not found (%s): check --base-url; it usually ends in /v1 (requests go to BASE_URL/chat/completions)", r->url, m);
    else if (j->error == CLAIR_REQ_HTTP && final_4xx(j->status) && (model || field_problem(m)))
        fmt(msg, n, "the server rejected the first request (%s): %s", m, model ? "check --model" :
                 "change the request's fields with --param (reasoning models refuse max_tokens and temperature: "
                 "--param max_tokens= --param temperature= --param max_completion_tokens=4096)");
    else if (j->error == CLAIR_REQ_TLS)
        fmt(msg, n, "TLS failure talking to %s (%s): check the URL's host name and the system's CA certificates", r->url, m);
    else if (j->error == CLAIR_REQ_BAD_REPLY && !looks_like_json(j->reply, j->reply_len))   /* an HTML page, ... */
        fmt(msg, n, "the reply to the first request is not a chat completion (%s): check that --base-url is an OpenAI-compatible API (it usually ends in /v1)", m);
    else if (j->error == CLAIR_REQ_OTHER || (j->error == CLAIR_REQ_CONNECTION &&
             (j->curl_code == CURLE_COULDNT_RESOLVE_HOST || j->curl_code == CURLE_COULDNT_CONNECT)))
        fmt(msg, n, "cannot reach %s (%s): check --base-url (scheme, host and port, e.g. https://api.openai.com/v1 or http://127.0.0.1:8080/v1) and that the server is running", r->url, m);
}

static void engine_done(void *ctx, clair_job *job) {
    run *r = (run *)ctx;
    size_t u = (size_t)(uintptr_t)job->user, line = u / (size_t)r->parts;
    int part = (int)(u % (size_t)r->parts);
    line_in in;
    char err[300];
    long long usage[2] = {0, 0};
    r->in_flight--;
    if (r->preflight && job->error != CLAIR_REQ_OK) {
        preflight_verdict(r, job, r->preflight_msg, sizeof r->preflight_msg);
        r->preflight_fatal = r->preflight_msg[0] != 0;
        if (r->preflight_fatal || !(job->error == CLAIR_REQ_HTTP && final_4xx(job->status))) {
            /* not recorded: asked again after the fix, or with retries by the main run */
            if (!r->preflight_fatal && r->verbose) say("%s: the first request failed (%s); going on with retries\n", prog, job->message);
            r->state[u] = ST_TODO;
            return;
        }
        /* a 4xx about this line only: its record, as in the main run */
    }
    memset(&in, 0, sizeof in);
    if (r->cmd->parse(r, line, &in, err, sizeof err)) die("internal: input line %zu changed", line + 1);
    r->done_now++;
    if (job->error != CLAIR_REQ_OK) {
        record_failure(r, u, &in, clair_req_error_name(job->error), job->status, job->attempts, job->message,
                       job->error == CLAIR_REQ_BAD_REPLY ? job->reply : NULL, job->reply_len);
        if (r->verbose) say("%s: input line %zu failed: %s\n", prog, line + 1, job->message);
        free_line(&in);
        return;
    }
    if (clair_chat_usage(&job->reply_json, &usage[0], &usage[1])) {
        r->tok_in += usage[0]; r->tok_out += usage[1]; r->with_usage++;
    }
    const char *fin = clair_chat_finish_reason(&job->reply_json), *reason = NULL;
    int truncated = fin && !strcmp(fin, "length");
    clair_buf b = {0, 0, 0, 0};
    int k = r->cmd->reply(r, &in, part, job->content, job->content_len, truncated, &b, &reason);
    if (truncated && k == OUT_KEPT) die("internal: a truncated reply was kept");
    if (k == OUT_DROPPED) tally_add(r->drops, reason);
    emit(r, k, &b, u, usage);
    clair_buf_free(&b);
    free_line(&in);
}

static void progress(run *r, int final) {
    double el = now_s() - r->t0, rate = el > 0 ? (double)r->done_now / el : 0;
    size_t prev = r->prev[0] + r->prev[1] + r->prev[2];
    char eta[32], money[64] = "";
    long long ti = r->prev_tok_in + r->tok_in, to = r->prev_tok_out + r->tok_out;
    fmt_duration(eta, sizeof eta, rate > 0 ? (double)(r->todo - r->done_now) / rate : -1);
    if (r->price_in > 0 || r->price_out > 0) snprintf(money, sizeof money, ", $%.4f", cost_of(r, ti, to));
    fprintf(stderr, "%s%s: %zu/%zu done (kept %zu, dropped %zu, failed %zu), %.2f %s, tokens %lld in + %lld out%s, ETA %s%s",
            isatty(2) ? "\r" : "", prog, prev + r->done_now, prev + r->todo, r->prev[0] + r->count[0],
            r->prev[1] + r->count[1], r->prev[2] + r->count[2], rate, r->cmd->per_s, ti, to, money,
            final ? "0s" : eta, isatty(2) && !final ? "   " : "\n");
}

static void engine_tick(void *ctx) {
    run *r = (run *)ctx;
    double t = now_s();
    if (t - r->last_sync >= 1.0) sync_outputs(r);
    if (!r->quiet && !r->preflight && t - r->last_progress >= (isatty(2) ? 1.0 : 10.0)) { progress(r, 0); r->last_progress = t; }
}

/* Reads one output file of an earlier run: marks its units done, sums their usage, cuts a
 * partial last line (left alone in a dry run, which writes nothing). */
static size_t resume_scan(run *r, const char *path, int st, int check_keys) {
    size_t n = 0, count = 0, nl, k;
    char *s = slurp(path, &n);
    if (!s) { if (errno == ENOENT) return 0; die("%s", slurp_err); }
    if (n && s[n - 1] != '\n') {
        size_t keep = n;
        while (keep && s[keep - 1] != '\n') keep--;
        if (r->dry_run) fprintf(stderr, "%s: %s ends with a partial record; a real run will remove it\n", prog, path);
        else {
            fprintf(stderr, "%s: %s ends with a partial record (an interrupted write); removing it, its input line will be requested again\n", prog, path);
            if (truncate(path, (off_t)keep)) die("cannot truncate %s: %s", path, strerror(errno));
        }
        n = keep;
    }
    span *ls = split_lines(s, n, &nl);
    for (k = 0; k < nl; k++) {
        clair_json v;
        char err[200];
        long long line, part = 0, t[2];
        const char *key;
        const clair_json *use;
        if (blank(s + ls[k].off, ls[k].len)) continue;
        if (clair_json_parse(s + ls[k].off, ls[k].len, &v, err, sizeof err))
            die("%s line %zu: not a JSON record (%s); this file was not written by clair %s, or was edited", path, k + 1, err, r->cmd->name);
        if (clair_json_get_int(&v, "clair_line", &line) || !(key = clair_json_get_str(&v, "clair_key")))
            die("%s line %zu: no \"clair_line\"/\"clair_key\"; this file was not written by clair %s (choose another --out)", path, k + 1, r->cmd->name);
        if (clair_json_get(&v, "clair_part") && clair_json_get_int(&v, "clair_part", &part)) part = -1;
        if (line < 1 || (size_t)line > r->nlines)
            die("%s line %zu: record for input line %lld, but %s has %zu lines; the input changed since (use a new --out, or restore the input)", path, k + 1, line, r->in, r->nlines);
        if (part < 0 || part >= r->parts)
            die("%s line %zu: record for part %lld of a line, but this command makes %d per line; use the options of the run that wrote it, or a new --out", path, k + 1, part, r->parts);
        if (check_keys) {
            char want[32];
            snprintf(want, sizeof want, "%016llx", line_key(r, (size_t)line - 1));
            if (strcmp(want, key))
                die("%s line %zu: record for input line %lld was made from a different input line; the input changed since (use a new --out, or restore the input)", path, k + 1, line);
        }
        size_t u = (size_t)(line - 1) * (size_t)r->parts + (size_t)part;
        if (r->state[u] != ST_TODO)
            fprintf(stderr, "%s: warning: %s line %zu: input line %lld already has a record; ignoring this one\n", prog, path, k + 1, line);
        else {
            r->state[u] = (unsigned char)st;
            count++;
            use = clair_json_get(&v, "clair_usage");
            if (use && !clair_json_get_int(use, "prompt_tokens", &t[0]) && !clair_json_get_int(use, "completion_tokens", &t[1])) {
                r->prev_tok_in += t[0]; r->prev_tok_out += t[1]; r->prev_with_usage++;
            }
        }
        clair_json_free(&v);
    }
    free(ls);
    free(s);
    return count;
}

static int open_append(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) die("cannot open %s for writing: %s", path, strerror(errno));
    return fd;
}

/* Replaces path by an empty file, atomically (a temp file renamed over it). */
static void atomic_empty(const char *path) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || fsync(fd) || close(fd) || rename(tmp, path)) die("cannot replace %s: %s", path, strerror(errno));
}

/* The options every command of the engine has: defaults, and the rows of the flag table. */
static void run_defaults(run *r) {
    memset(r, 0, sizeof *r);
    r->concurrency_arg = 8; r->max_tokens_arg = 4096; r->max_attempts_arg = 6; r->temperature = 0.7;
    r->timeout = 600; r->connect_timeout = 30; r->backoff = 1; r->backoff_max = 60; r->retry_after_max = 300;
    r->parts = 1;
    r->fd[0] = r->fd[1] = r->fd[2] = -1;
}

#define SERVER_OPTS(r, param_row) \
    { NULL, OPT_HEADING, NULL, NULL, "Server:" }, \
    { "--base-url", OPT_STR, &(r).base_url, "URL", "e.g. https://api.openai.com/v1 (requests go to URL/chat/completions)" }, \
    { "--model", OPT_STR, &(r).model, "NAME", "the model's name on the server" }, \
    { "--api-key-env", OPT_STR, &(r).api_key_env, "VAR", "read the API key from environment variable VAR (never printed or written)" }, \
    { "--concurrency", OPT_DBL, &(r).concurrency_arg, "N", "requests in flight (1 to 4096)" }, \
    { "--temperature", OPT_DBL, &(r).temperature, "T", "sampling temperature (0 to 2; 0.7: the paper's reference setting)" }, \
    { "--max-tokens", OPT_DBL, &(r).max_tokens_arg, "N", "reply token limit (4096: the paper's setting); 0 = leave to the server" }, \
    { "--param", OPT_STR, &(param_row), "KEY=JSON", "add a request field (repeatable), e.g. reasoning_effort=\"low\"; KEY= removes ours" }, \
    { "--timeout", OPT_DBL, &(r).timeout, "S", "seconds per attempt (up to 86400)" }, \
    { "--connect-timeout", OPT_DBL, &(r).connect_timeout, "S", "seconds to connect (up to 3600)" }, \
    { "--max-attempts", OPT_DBL, &(r).max_attempts_arg, "N", "attempts per request, retries included (1 to 100)" }, \
    { "--backoff", OPT_DBL, &(r).backoff, "S", "first retry waits about S seconds, doubling, jittered" }, \
    { "--max-backoff", OPT_DBL, &(r).backoff_max, "S", "cap of the doubling" }, \
    { "--max-retry-after", OPT_DBL, &(r).retry_after_max, "S", "cap of a server's Retry-After wait" }, \
    { "--no-preflight", OPT_FLAG, &(r).no_preflight, "", "fan out at once, without one request alone first" }, \
    { NULL, OPT_HEADING, NULL, NULL, "Cost (prices in dollars per million tokens):" }, \
    { "--price-in", OPT_DBL, &(r).price_in, "P", "price of prompt tokens" }, \
    { "--price-out", OPT_DBL, &(r).price_out, "P", "price of completion tokens" }, \
    { "--max-cost", OPT_DBL, &(r).max_cost, "D", "stop before the estimated cost (earlier runs included) exceeds D" }, \
    { "--dry-run", OPT_FLAG, &(r).dry_run, "", "print how many requests would be sent, and their cost; send nothing" }

#define RUN_OPTS(r) \
    { "--out", OPT_STR, &(r).out, "FILE", "the kept records, JSONL" }, \
    { "--dropped", OPT_STR, &(r).dropped_path, "FILE", "default OUT.dropped.jsonl" }, \
    { "--failed", OPT_STR, &(r).failed_path, "FILE", "default OUT.failed.jsonl" }, \
    { "--retry-failed", OPT_FLAG, &(r).retry_failed, "", "request the units of the failed file again" }, \
    { "--limit", OPT_DBL, &(r).limit_arg, "N", "only the first N input lines (0: all)" }, \
    { "--quiet", OPT_FLAG, &(r).quiet, "", "no progress line" }, \
    { "--verbose", OPT_FLAG, &(r).verbose, "", "a line per retry and failure" }

/* opts_parse with the repeatable --param KEY=JSON taken out first (the table parser keeps one
 * value per flag). Returns opts_parse's result. */
static int parse_run_opts(run *r, const char *who, const char *usage, const opt_def *defs, int argc, char **argv) {
    char **rest = (char **)malloc(((size_t)argc + 1) * sizeof *rest);
    int i, n = 0, rc;
    if (!rest) die("out of memory");
    for (i = 0; i < argc; i++) {
        const char *v = NULL;
        if (i >= 2 && !strcmp(argv[i], "--param")) {
            if (i + 1 >= argc) die("%s: --param needs a value (KEY=JSON)", r->cmd->name);
            v = argv[++i];
        } else if (i >= 2 && !strncmp(argv[i], "--param=", 8)) v = argv[i] + 8;
        if (!v) { rest[n++] = argv[i]; continue; }
        const char *eq = strchr(v, '=');
        if (!eq || eq == v) die("%s: --param %s: expected KEY=JSON (e.g. max_completion_tokens=4096), or KEY= to remove a field", r->cmd->name, v);
        if (r->nparams == (int)(sizeof r->params / sizeof r->params[0])) die("%s: more than 64 --param", r->cmd->name);
        param *p = &r->params[r->nparams++];
        char *key = (char *)malloc((size_t)(eq - v) + 1);
        if (!key) die("out of memory");
        memcpy(key, v, (size_t)(eq - v)); key[eq - v] = 0;
        p->key = key;
        p->json = NULL;
        if (!strcmp(key, "model") || !strcmp(key, "messages") || !strcmp(key, "stream"))
            die("%s: --param %s: \"%s\" is set by clair itself (use --model; replies must not stream)", r->cmd->name, v, key);
        if (eq[1]) {
            clair_json j;
            clair_buf b = {0, 0, 0, 0};
            char err[200];
            if (clair_json_parse(eq + 1, strlen(eq + 1), &j, err, sizeof err))
                die("%s: --param %s: the value is not JSON (%s); a string needs quotes: %s='\"value\"'", r->cmd->name, v, err, key);
            clair_json_write(&b, &j);
            clair_json_free(&j);
            if (b.oom) die("out of memory");
            p->json = b.data;
        }
    }
    rest[n] = NULL;
    rc = opts_parse(who, usage, defs, n, rest, 2, NULL, 0, NULL);
    free(rest);
    return rc;
}

/* Range checks of the shared options (opts_parse checks the types, not the ranges). */
static void check_run_opts(run *r, const char *who) {
    if (!r->in || !r->out || !r->base_url || !r->model)
        die("%s: --in (or --a/--b), --out, --base-url and --model are required (see clair %s --help)", who, r->cmd->name);
    r->concurrency = check_count("--concurrency", r->concurrency_arg, 1, 4096);
    r->max_tokens = check_count("--max-tokens", r->max_tokens_arg, 0, 100000000);
    r->max_attempts = check_count("--max-attempts", r->max_attempts_arg, 1, 100);
    r->limit = check_count("--limit", r->limit_arg, 0, 2147483647);
    check_dbl("--temperature", r->temperature, 0, 2);
    check_dbl("--top-p", r->top_p, 0, 1);
    check_dbl("--timeout", r->timeout, 0.001, 86400);
    check_dbl("--connect-timeout", r->connect_timeout, 0.001, 3600);
    check_dbl("--backoff", r->backoff, 0.001, 3600);
    check_dbl("--max-backoff", r->backoff_max, 0.001, 86400);
    check_dbl("--max-retry-after", r->retry_after_max, 0, 86400);
    check_dbl("--price-in", r->price_in, 0, 1e6);
    check_dbl("--price-out", r->price_out, 0, 1e6);
    check_dbl("--max-cost", r->max_cost, 0, 1e9);
    if (r->max_cost > 0 && r->price_in <= 0 && r->price_out <= 0)
        die("%s: --max-cost needs the prices: --price-in and --price-out (dollars per million tokens)", who);
    if (r->max_cost > 0 && r->no_preflight)
        die("%s: --max-cost needs the preflight (its reply gives the first cost estimate): drop --no-preflight", who);
    if (strncmp(r->base_url, "http://", 7) && strncmp(r->base_url, "https://", 8))
        die("%s: --base-url %s: needs the scheme, e.g. https://api.openai.com/v1 or http://127.0.0.1:8080/v1", who, r->base_url);
}

/* Reads the API key, the input, the earlier runs' records; sets the output paths and the URL. */
static void run_setup(run *r) {
    size_t n, u, l;
    if (r->api_key_env) {
        g_key = getenv(r->api_key_env);
        if (!g_key || !g_key[0]) die("environment variable %s (named by --api-key-env) is not set or empty", r->api_key_env);
    }
    snprintf(r->dpath, sizeof r->dpath, "%s.dropped.jsonl", r->out);
    snprintf(r->fpath, sizeof r->fpath, "%s.failed.jsonl", r->out);
    r->path[0] = r->out;
    r->path[1] = r->dropped_path ? r->dropped_path : r->dpath;
    r->path[2] = r->failed_path ? r->failed_path : r->fpath;
    for (u = 0; u < 3; u++) if (!strcmp(r->path[u], r->in)) die("an output file (%s) is the input file", r->path[u]);
    {
        size_t bl = strlen(r->base_url);
        while (bl && r->base_url[bl - 1] == '/') bl--;
        snprintf(r->url, sizeof r->url, "%.*s/chat/completions", (int)bl, r->base_url);
    }
    r->data = slurp(r->in, &n);
    if (!r->data) die("%s", slurp_err);
    r->lines = split_lines(r->data, n, &r->nlines);
    if (r->limit > 0 && (size_t)r->limit < r->nlines) r->nlines = (size_t)r->limit;
    r->nunits = r->nlines * (size_t)r->parts;
    r->state = (unsigned char *)calloc(r->nunits + 1, 1);
    if (!r->state) die("out of memory");
    for (l = 0; l < r->nlines; l++)
        if (blank(r->data + r->lines[l].off, r->lines[l].len)) {
            for (u = 0; u < (size_t)r->parts; u++) r->state[l * (size_t)r->parts + u] = ST_BLANK;
            r->blank_lines++;
        }
    r->prev[0] = resume_scan(r, r->path[0], ST_KEPT, 1);
    r->prev[1] = resume_scan(r, r->path[1], ST_DROPPED, 1);
    if (r->retry_failed) {
        /* forget the failed records: their units are requested again. Their keys are not
         * checked, so a user may fix a bad input line and retry it. */
        struct stat sb;
        if (!stat(r->path[2], &sb)) {
            resume_scan(r, r->path[2], ST_FAILED, 0);
            for (u = 0; u < r->nunits; u++) if (r->state[u] == ST_FAILED) r->state[u] = ST_TODO;
            if (!r->dry_run) atomic_empty(r->path[2]);
        }
    } else r->prev[2] = resume_scan(r, r->path[2], ST_FAILED, 1);
    for (u = 0; u < r->nunits; u++) r->todo += r->state[u] == ST_TODO;
    if (!r->quiet && (r->prev[0] || r->prev[1] || r->prev[2]))
        fprintf(stderr, "%s: resuming: %zu requests already have a record (kept %zu, dropped %zu, failed %zu); %zu to do\n",
                prog, r->prev[0] + r->prev[1] + r->prev[2], r->prev[0], r->prev[1], r->prev[2], r->todo);
}

/* --dry-run: what the run would send, without sending or writing anything. */
static int run_dry(run *r) {
    size_t u, requests = 0, bad = 0, bytes = 0;
    for (u = 0; u < r->nunits; u++) {
        line_in in;
        char err[300];
        clair_buf body = {0, 0, 0, 0};
        if (r->state[u] != ST_TODO) continue;
        memset(&in, 0, sizeof in);
        if (r->cmd->parse(r, u / (size_t)r->parts, &in, err, sizeof err)) { bad++; continue; }
        request_body(r, &in, (int)(u % (size_t)r->parts), &body);
        free_line(&in);
        bytes += body.len;
        requests++;
        clair_buf_free(&body);
    }
    /* about 4 bytes of English per token: an estimate, the server's count is the real one */
    double tok_in = (double)bytes / 4.0, tok_out = (double)requests * (r->max_tokens > 0 ? r->max_tokens : 0);
    printf("dry run: %zu requests would be sent to %s (model %s); %zu units already have a record; %zu bad input units would be recorded as failed\n",
           requests, r->url, r->model, r->nunits - r->todo - r->blank_lines * (size_t)r->parts, bad);
    printf("about %.0f prompt tokens (%zu request bytes / 4)", tok_in, bytes);
    if (r->max_tokens > 0) printf(", at most %.0f completion tokens (--max-tokens %d each)", tok_out, r->max_tokens);
    printf("\n");
    if (r->price_in > 0 || r->price_out > 0) {
        printf("estimated cost: $%.4f for the prompts", cost_of(r, (long long)tok_in, 0));
        if (r->max_tokens > 0) printf(", at most $%.4f with the completions", cost_of(r, (long long)tok_in, (long long)tok_out));
        printf("\n");
    }
    return 0;
}

static void run_summary(run *r) {
    double el = now_s() - r->t0;
    int k;
    long long ti = r->prev_tok_in + r->tok_in, to = r->prev_tok_out + r->tok_out;
    fprintf(stderr, "%s: this run: %zu requests in %.1f s (%.2f %s): kept %zu, dropped %zu, failed %zu; tokens %lld in + %lld out",
            prog, r->done_now, el, el > 0 ? (double)r->done_now / el : 0.0, r->cmd->per_s, r->count[0], r->count[1],
            r->count[2], r->tok_in, r->tok_out);
    if (r->price_in > 0 || r->price_out > 0) fprintf(stderr, " ($%.4f)", cost_of(r, r->tok_in, r->tok_out));
    fprintf(stderr, "\n");
    if (r->count[1]) {
        fprintf(stderr, "%s:   dropped by reason:", prog);
        for (k = 0; k < 16 && r->drops[k].name; k++) fprintf(stderr, " %s %zu", r->drops[k].name, r->drops[k].n);
        fprintf(stderr, "\n");
    }
    if (r->count[2]) {
        fprintf(stderr, "%s:   failed:", prog);
        for (k = 0; k < 16 && r->fails[k].name; k++) fprintf(stderr, " %s %zu", r->fails[k].name, r->fails[k].n);
        fprintf(stderr, " (see %s; rerun with --retry-failed to try them again)\n", r->path[2]);
    }
    if (r->blank_lines) fprintf(stderr, "%s:   %zu blank input lines ignored\n", prog, r->blank_lines);
    fprintf(stderr, "%s: totals: kept %zu -> %s, dropped %zu -> %s, failed %zu -> %s; tokens %lld in + %lld out",
            prog, r->prev[0] + r->count[0], r->path[0], r->prev[1] + r->count[1], r->path[1], r->prev[2] + r->count[2],
            r->path[2], ti, to);
    if (r->price_in > 0 || r->price_out > 0) fprintf(stderr, ", $%.4f", cost_of(r, ti, to));
    fprintf(stderr, "\n");
}

/* The whole run of a command: setup, preflight, fan-out, summary. Returns the exit status:
 * 0, 130 (interrupted) or 3 (stopped by --max-cost); the run resumes when run again. */
static int run_command(run *r) {
    clair_http_opts o;
    char err[300];
    int k, rc = 0, status = 0;
    size_t u, left = 0;
    run_setup(r);
    if (r->dry_run) return run_dry(r);
    for (k = 0; k < 3; k++) r->fd[k] = open_append(r->path[k]);
    {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);
    }
    memset(&o, 0, sizeof o);
    o.url = r->url; o.api_key = g_key; o.concurrency = r->concurrency; o.timeout_s = r->timeout;
    o.connect_timeout_s = r->connect_timeout; o.max_attempts = r->max_attempts; o.backoff_s = r->backoff;
    o.backoff_max_s = r->backoff_max; o.retry_after_max_s = r->retry_after_max > 0 ? r->retry_after_max : 1e-9;
    o.stop = &g_stop; o.tick = engine_tick; o.verbose_retries = r->verbose;
    r->t0 = r->last_sync = r->last_progress = now_s();
    if (r->todo && !r->no_preflight) {
        /* one request alone, one attempt: a mistake in the URL, key, model or fields shows here,
         * before a request per line is spent on it */
        clair_http_opts p = o;
        p.concurrency = 1; p.max_attempts = 1;
        r->preflight = 1;
        rc = clair_http_run(&p, engine_next, engine_done, r, err, sizeof err);
        r->preflight = 0;
        r->cursor = 0;
        if (!rc && r->preflight_fatal) {
            sync_outputs(r);
            die("%s: stopped after the first request: %s", r->cmd->name, r->preflight_msg);
        }
        if (!rc && r->max_cost > 0 && !r->prev_with_usage && !r->with_usage && r->count[0] + r->count[1])
            die("%s: the server reports no token usage, so --max-cost cannot be kept; run without it", r->cmd->name);
    }
    if (!rc) rc = clair_http_run(&o, engine_next, engine_done, r, err, sizeof err);
    sync_outputs(r);
    for (k = 0; k < 3; k++) close(r->fd[k]);
    if (rc) die("%s", err);
    if (!r->quiet) progress(r, 1);
    run_summary(r);
    for (u = 0; u < r->nunits; u++) left += r->state[u] == ST_TODO || r->state[u] == ST_FLIGHT;
    if (g_stop) {
        fprintf(stderr, "%s: interrupted with %zu requests left; run the same command again to resume\n", prog, left);
        status = 130;
    } else if (r->budget_stop && left) {
        fprintf(stderr, "%s: stopped by --max-cost $%g at $%.4f, with %zu requests left; raise --max-cost and run the same command again to resume\n",
                prog, r->max_cost, cost_of(r, r->prev_tok_in + r->tok_in, r->prev_tok_out + r->tok_out), left);
        status = 3;
    }
    return status;
}

static void run_free(run *r) {
    int i;
    for (i = 0; i < r->nparams; i++) { free((char *)r->params[i].key); free(r->params[i].json); }
    free(r->state); free(r->lines); free(r->data);
}

/* The prompt as read: a string, or its messages. */
static void put_prompt_value(clair_buf *b, const trl_record *t) {
    if (t->n_msgs < 0) clair_json_write(b, t->prompt);
    else prompt_messages(b, t->prompt, t->n_msgs);
}

static void put_prompt(clair_buf *b, const trl_record *t) {
    clair_buf_puts(b, ",\"prompt\":");
    put_prompt_value(b, t);
}

/* ,"key":text, or ,"key":[{"role":"assistant","content":text}] for a conversational record */
static void put_answer(clair_buf *b, const char *key, const trl_record *t, const char *s, size_t n) {
    if (!t->conversational) { put_str(b, key, s, n); return; }
    clair_buf_printf(b, ",\"%s\":[{\"role\":\"assistant\",\"content\":", key);
    clair_json_write_string(b, s, n);
    clair_buf_puts(b, "}]");
}

static int parse_line_json(run *r, size_t line, clair_json *v, char *err, size_t errsz) {
    char jerr[200];
    const span *l = &r->lines[line];
    if (clair_json_parse(r->data + l->off, l->len, v, jerr, sizeof jerr)) { snprintf(err, errsz, "not valid JSON (%s)", jerr); return -1; }
    return 0;
}

/* ============================================================================================
 * clair generate
 * ========================================================================================== */

static int gen_parse(run *r, size_t line, line_in *in, char *err, size_t errsz) {
    if (parse_line_json(r, line, &in->v, err, errsz)) return -1;
    if (read_trl(&in->v, 0, &in->t, err, errsz)) { clair_json_free(&in->v); return -1; }
    return 0;
}

static void gen_messages(run *r, const line_in *in, int part, clair_buf *out) {
    (void)r; (void)part;
    prompt_messages(out, in->t.prompt, in->t.n_msgs);
}

static int gen_reply(run *r, const line_in *in, int part, const char *text, size_t n, int truncated,
                     clair_buf *rec, const char **reason) {
    int k = OUT_KEPT;
    if (truncated) { *reason = "truncated"; k = OUT_DROPPED; }
    else if (all_space(text, n)) { *reason = "empty_response"; k = OUT_DROPPED; }
    clair_buf_puts(rec, "{");
    if (k == OUT_DROPPED) { clair_json_write_string(rec, "reason", 6); clair_buf_puts(rec, ":"); clair_json_write_string(rec, *reason, strlen(*reason)); clair_buf_puts(rec, ","); }
    clair_buf_puts(rec, "\"prompt\":");
    clair_json_write(rec, in->t.prompt);
    put_str(rec, "response", text, n);
    if (r->parts > 1) clair_buf_printf(rec, ",\"sample\":%d", part);
    clair_buf_printf(rec, ",\"finish_reason\":\"%s\"", truncated ? "length" : "stop");
    put_extras(rec, &in->v);
    return k;
}

static void gen_input_fields(run *r, const line_in *in, clair_buf *rec) {
    (void)r;
    put_json(rec, "prompt", in->t.prompt);
    put_extras(rec, &in->v);
}

static const command gen_command = { "generate", "answers/s", gen_parse, gen_messages, gen_reply, gen_input_fields, NULL };

static const char generate_usage[] =
"usage: clair generate --in PROMPTS.jsonl --out ANSWERS.jsonl --base-url URL --model TARGET [options]\n"
"\n"
"The target model's own answers, through any OpenAI-compatible /chat/completions server (vLLM,\n"
"llama.cpp's llama-server, a hosted API): step 1 of CLAIR. Input: JSONL with a \"prompt\" per line\n"
"(a string or a list of {role, content} messages; other fields are kept). Output, one line per\n"
"sample: {\"prompt\", \"response\", \"finish_reason\"[, \"sample\"]}: the input of clair revise.\n"
"A reply cut off by the token limit goes to OUT.dropped.jsonl (\"truncated\"), never to OUT.\n"
"Re-running the same command resumes: samples with a record are not requested again.\n"
"\n";

static int cmd_generate(int argc, char **argv) {
    run r;
    double n_arg = 1;
    int status;
    run_defaults(&r);
    r.cmd = &gen_command;
    {
        const char *param_row = NULL;
        const opt_def defs[] = {
            SERVER_OPTS(r, param_row),
            { NULL, OPT_HEADING, NULL, NULL, "Sampling:" },
            { "--n", OPT_DBL, &n_arg, "K", "answers per prompt (1 to 1000; one request each)" },
            { "--top-p", OPT_DBL, &r.top_p, "P", "nucleus sampling (0: leave to the server)" },
            { NULL, OPT_HEADING, NULL, NULL, "Files and run:" },
            { "--in", OPT_STR, &r.in, "FILE", "the prompts, JSONL" },
            RUN_OPTS(r),
            { NULL, OPT_END, NULL, NULL, NULL }
        };
        int rc = parse_run_opts(&r, "clair generate", generate_usage, defs, argc, argv);
        if (rc == 1) return 0;
        if (rc < 0) return 2;
    }
    r.parts = check_count("--n", n_arg, 1, 1000);
    check_run_opts(&r, "generate");
    status = run_command(&r);
    run_free(&r);
    return status;
}

/* ============================================================================================
 * clair revise
 * ========================================================================================== */

typedef struct {
    const char *template_path;
    clair_filter filter;
    clair_template tpl;
    clair_json tpl_json;
} revise_ctx;

static int revise_parse(run *r, size_t line, line_in *in, char *err, size_t errsz) {
    if (parse_line_json(r, line, &in->v, err, errsz)) return -1;
    if (read_trl(&in->v, 1, &in->t, err, errsz)) { clair_json_free(&in->v); return -1; }
    return 0;
}

static void revise_messages(run *r, const line_in *in, int part, clair_buf *out) {
    revise_ctx *c = (revise_ctx *)r->cmd_ctx;
    clair_buf p = {0, 0, 0, 0};
    (void)part;
    prompt_text(&p, in->t.prompt, in->t.n_msgs);
    if (p.oom) out->oom = 1;
    clair_prompt_messages(out, &c->tpl, p.data ? p.data : "", p.len, in->t.answer->str, in->t.answer->len);
    clair_buf_free(&p);
}

static int revise_reply(run *r, const line_in *in, int part, const char *text, size_t n, int truncated,
                        clair_buf *rec, const char **reason) {
    revise_ctx *c = (revise_ctx *)r->cmd_ctx;
    const clair_json *a = in->t.answer;
    clair_reply rep;
    clair_metrics m;
    clair_parse_status ps = truncated ? CLAIR_PARSE_EMPTY : clair_parse_reply(text, n, c->tpl.marker, &rep);
    (void)part;
    if (truncated || ps != CLAIR_PARSE_OK) {
        /* a reply cut off by the token limit may hold half a revision: never a pair */
        *reason = truncated ? "truncated" : clair_parse_status_name(ps);
        clair_buf_puts(rec, "{\"reason\":");
        clair_json_write_string(rec, *reason, strlen(*reason));
        put_prompt(rec, &in->t);
        put_answer(rec, "rejected", &in->t, a->str, a->len);
        put_str(rec, "reply", text, n);
        put_extras(rec, &in->v);
        return OUT_DROPPED;
    }
    if (clair_metrics_compute(rep.revision, rep.revision_len, a->str, a->len, &m)) die("out of memory measuring a pair");
    clair_verdict v = clair_filter_check(&c->filter, rep.revision, rep.revision_len, a->str, a->len, &m);
    if (v != CLAIR_KEEP) {
        *reason = clair_verdict_name(v);
        clair_buf_puts(rec, "{\"reason\":");
        clair_json_write_string(rec, *reason, strlen(*reason));
        put_prompt(rec, &in->t);
    } else {
        clair_buf_puts(rec, "{\"prompt\":");
        put_prompt_value(rec, &in->t);
    }
    put_answer(rec, "chosen", &in->t, rep.revision, rep.revision_len);
    put_answer(rec, "rejected", &in->t, a->str, a->len);
    put_str(rec, "rationale", rep.rationale, rep.rationale_len);
    clair_buf_puts(rec, ",\"jaccard\":"); clair_json_write_number(rec, m.jaccard);
    clair_buf_printf(rec, ",\"levenshtein\":%lld", m.levenshtein);
    clair_buf_puts(rec, ",\"edit_ratio\":"); clair_json_write_number(rec, m.edit_ratio);
    clair_buf_printf(rec, ",\"token_edits\":%zu", m.token_edits);
    put_extras(rec, &in->v);
    return v == CLAIR_KEEP ? OUT_KEPT : OUT_DROPPED;
}

static void revise_input_fields(run *r, const line_in *in, clair_buf *rec) {
    (void)r;
    put_prompt(rec, &in->t);
    put_str(rec, "response", in->t.answer->str, in->t.answer->len);
    put_extras(rec, &in->v);
}

static const command revise_command = { "revise", "pairs/s", revise_parse, revise_messages, revise_reply, revise_input_fields, NULL };

static void load_template(revise_ctx *c) {
    size_t n;
    char *s = slurp(c->template_path, &n), err[200];
    if (!s) die("%s", slurp_err);
    if (clair_json_parse(s, n, &c->tpl_json, err, sizeof err)) die("template %s: %s", c->template_path, err);
    free(s);
    c->tpl.system = clair_json_get_str(&c->tpl_json, "system");
    c->tpl.user = clair_json_get_str(&c->tpl_json, "user");
    c->tpl.marker = clair_json_get_str(&c->tpl_json, "marker");
    if (!c->tpl.user || !strstr(c->tpl.user, "{answer}"))
        die("template %s: needs a \"user\" string containing {answer} (and usually {prompt})", c->template_path);
    if (!c->tpl.marker || !c->tpl.marker[0])
        die("template %s: needs a \"marker\" string: the line your prompt asks the reviser to put before the revision", c->template_path);
}

static const char revise_usage[] =
"usage: clair revise --in ANSWERS.jsonl --out PAIRS.jsonl --base-url URL --model NAME [options]\n"
"\n"
"Asks a stronger model (any OpenAI-compatible /chat/completions server) to minimally revise\n"
"each answer, and writes preference pairs: chosen = the revision, rejected = the answer.\n"
"\n"
"Input: JSONL in a TRL layout, other fields kept: {\"prompt\", \"response\"} (what clair generate\n"
"and ./trainer generate write), {\"prompt\", \"completion\"}, or {\"messages\"} (the last assistant\n"
"message is the answer). A prompt may be a string or a list of {role, content} messages; pairs\n"
"of a conversational prompt have chosen/rejected as assistant-message lists, as TRL expects.\n"
"Output (every input line ends in exactly one of them):\n"
"  OUT                  kept pairs: prompt, chosen, rejected, rationale, jaccard, levenshtein,\n"
"                       edit_ratio, token_edits, your fields, clair_usage, clair_line, clair_key\n"
"  OUT.dropped.jsonl    pairs the filter dropped, with \"reason\": identical, empty_revision,\n"
"                       no_marker, truncated, edit_ratio, jaccard, length_ratio\n"
"  OUT.failed.jsonl     requests that failed after all retries, and bad input lines, with \"error\"\n"
"Re-running the same command resumes: lines with a record are not requested again.\n"
"\n";

static int cmd_revise(int argc, char **argv) {
    run r;
    revise_ctx c;
    int status;
    run_defaults(&r);
    memset(&c, 0, sizeof c);
    r.cmd = &revise_command;
    r.cmd_ctx = &c;
    c.filter = clair_filter_default();
    c.tpl = *clair_template_default();
    {
        const char *param_row = NULL;
        const opt_def defs[] = {
            SERVER_OPTS(r, param_row),
            { NULL, OPT_HEADING, NULL, NULL, "Prompt:" },
            { "--template", OPT_STR, &c.template_path, "FILE", "JSON {\"system\", \"user\" (with {prompt}, {answer}), \"marker\"} (default: built in)" },
            { NULL, OPT_HEADING, NULL, NULL, "Filter (a value <= 0 switches a check off):" },
            { "--max-edit-ratio", OPT_DBL, &c.filter.max_edit_ratio, "R", "drop if Levenshtein / max length > R" },
            { "--min-jaccard", OPT_DBL, &c.filter.min_jaccard, "J", "drop if token Jaccard similarity < J" },
            { "--min-length-ratio", OPT_DBL, &c.filter.min_length_ratio, "R", "drop if len(chosen) / len(rejected) < R" },
            { "--max-length-ratio", OPT_DBL, &c.filter.max_length_ratio, "R", "drop if len(chosen) / len(rejected) > R" },
            { NULL, OPT_HEADING, NULL, NULL, "Files and run:" },
            { "--in", OPT_STR, &r.in, "FILE", "the answers, JSONL" },
            RUN_OPTS(r),
            { NULL, OPT_END, NULL, NULL, NULL }
        };
        int rc = parse_run_opts(&r, "clair revise", revise_usage, defs, argc, argv);
        if (rc == 1) return 0;
        if (rc < 0) return 2;
    }
    check_run_opts(&r, "revise");
    if (c.template_path) load_template(&c);
    status = run_command(&r);
    clair_json_free(&c.tpl_json);
    run_free(&r);
    return status;
}

/* ============================================================================================
 * clair judge
 *
 * Pairwise comparison of two answer files on the same prompts, AlpacaEval-style: a judge model
 * reads the task and two answers and says which is better, or a tie. Each pair is asked twice,
 * A first then B first (parts 0 and 1 of a line), so a judge's preference for a position
 * cancels out; the pair's score for A is the mean of the two verdicts (win 1, tie 0.5, loss 0).
 * ========================================================================================== */

/* Our judge prompt (replace it with --template): the marker line ends the reply. */
static const char judge_system[] =
    "You are a careful, impartial judge of answers. You compare two answers to the same task and say "
    "which one is better.";
static const char judge_user[] =
    "Compare the two answers to the task below. The better answer is the one that fulfils the task "
    "best: correct, helpful and honest, clear, and no longer than it needs to be. Do not let the order "
    "of the answers, their length or their style sway you; if neither is better, say so.\n"
    "\n"
    "First explain your comparison in a few sentences. Then end with a line containing only "
    "\"Verdict: 1\" if the first answer is better, \"Verdict: 2\" if the second answer is better, or "
    "\"Verdict: tie\".\n"
    "\n"
    "<task>\n{prompt}\n</task>\n"
    "\n"
    "<answer_1>\n{answer_1}\n</answer_1>\n"
    "\n"
    "<answer_2>\n{answer_2}\n</answer_2>";

typedef struct {
    const char *a_path, *b_path, *template_path;
    const char *system, *user, *marker;
    clair_json tpl_json;
    char *bdata;
    span *blines;
    size_t nb;
    long *match;                 /* per line of A: its line of B, or -1 */
} judge_ctx;

/* The prompt of a line as a comparable key (its compact JSON); NULL for a line without one. */
static char *prompt_key(const char *s, size_t n) {
    clair_json v;
    trl_record t;
    char err[200];
    clair_buf b = {0, 0, 0, 0};
    if (blank(s, n) || clair_json_parse(s, n, &v, err, sizeof err)) return NULL;
    if (!read_trl(&v, 1, &t, err, sizeof err)) put_prompt_value(&b, &t);
    clair_json_free(&v);
    if (b.oom) die("out of memory");
    return b.data;
}

typedef struct { char *key; size_t line; } keyed;

static int cmp_keyed(const void *x, const void *y) {
    const keyed *a = (const keyed *)x, *b = (const keyed *)y;
    int c = strcmp(a->key, b->key);
    return c ? c : a->line < b->line ? -1 : a->line > b->line;
}

/* Pairs each line of A with the line of B that has the same prompt; a prompt that occurs k
 * times pairs the i-th occurrences (generate --n K writes K samples of a prompt). */
static size_t judge_match(run *r, judge_ctx *j) {
    size_t i, na = r->nlines, ka = 0, kb = 0, x, y, unmatched_b = 0;
    keyed *A = (keyed *)calloc(na + 1, sizeof *A), *B = (keyed *)calloc(j->nb + 1, sizeof *B);
    j->match = (long *)malloc((na + 1) * sizeof *j->match);
    if (!A || !B || !j->match) die("out of memory");
    for (i = 0; i < na; i++) {
        j->match[i] = -1;
        if ((A[ka].key = prompt_key(r->data + r->lines[i].off, r->lines[i].len))) A[ka++].line = i;
    }
    for (i = 0; i < j->nb; i++)
        if ((B[kb].key = prompt_key(j->bdata + j->blines[i].off, j->blines[i].len))) B[kb++].line = i;
    qsort(A, ka, sizeof *A, cmp_keyed);
    qsort(B, kb, sizeof *B, cmp_keyed);
    for (x = y = 0; x < ka && y < kb;) {
        int c = strcmp(A[x].key, B[y].key);
        if (c == 0) { j->match[A[x].line] = (long)B[y].line; x++; y++; }
        else if (c < 0) x++;
        else { y++; unmatched_b++; }
    }
    unmatched_b += kb - y;
    for (i = 0; i < ka; i++) free(A[i].key);
    for (i = 0; i < kb; i++) free(B[i].key);
    free(A); free(B);
    return unmatched_b;
}

static unsigned long long judge_key(run *r, size_t line) {
    judge_ctx *j = (judge_ctx *)r->cmd_ctx;
    unsigned long long h = fnv1a(r->data + r->lines[line].off, r->lines[line].len);
    if (j->match[line] >= 0) {
        const span *b = &j->blines[j->match[line]];
        h = h * 1099511628211ULL ^ fnv1a(j->bdata + b->off, b->len);
    }
    return h;
}

static int judge_parse(run *r, size_t line, line_in *in, char *err, size_t errsz) {
    judge_ctx *j = (judge_ctx *)r->cmd_ctx;
    char e2[300];
    if (parse_line_json(r, line, &in->v, err, errsz)) return -1;
    if (read_trl(&in->v, 1, &in->t, err, errsz)) goto bad;
    if (j->match[line] < 0) {
        snprintf(err, errsz, "no line of %s has this prompt (lines are paired by prompt, the i-th occurrences together)", j->b_path);
        goto bad;
    }
    const span *b = &j->blines[j->match[line]];
    if (clair_json_parse(j->bdata + b->off, b->len, &in->w, e2, sizeof e2)) die("internal: %s changed", j->b_path);
    in->has_w = 1;
    if (read_trl(&in->w, 1, &in->tw, e2, sizeof e2)) {
        snprintf(err, errsz, "%s line %ld: %s", j->b_path, j->match[line] + 1, e2);
        free_line(in);
        return -1;
    }
    return 0;
bad:
    clair_json_free(&in->v);
    return -1;
}

static void judge_messages(run *r, const line_in *in, int part, clair_buf *out) {
    judge_ctx *j = (judge_ctx *)r->cmd_ctx;
    const clair_json *first = part ? in->tw.answer : in->t.answer, *second = part ? in->t.answer : in->tw.answer;
    clair_buf u = {0, 0, 0, 0};
    const char *s = j->user;
    while (*s) {
        const char *p = strchr(s, '{');
        if (!p) { clair_buf_puts(&u, s); break; }
        clair_buf_put(&u, s, (size_t)(p - s));
        if (!strncmp(p, "{prompt}", 8)) { prompt_text(&u, in->t.prompt, in->t.n_msgs); s = p + 8; }
        else if (!strncmp(p, "{answer_1}", 10)) { clair_buf_put(&u, first->str, first->len); s = p + 10; }
        else if (!strncmp(p, "{answer_2}", 10)) { clair_buf_put(&u, second->str, second->len); s = p + 10; }
        else { clair_buf_put(&u, "{", 1); s = p + 1; }
    }
    if (u.oom) out->oom = 1;
    clair_buf_puts(out, "[");
    if (j->system && j->system[0]) {
        clair_buf_puts(out, "{\"role\":\"system\",\"content\":");
        clair_json_write_string(out, j->system, strlen(j->system));
        clair_buf_puts(out, "},");
    }
    clair_buf_puts(out, "{\"role\":\"user\",\"content\":");
    clair_json_write_string(out, u.data ? u.data : "", u.len);
    clair_buf_puts(out, "}]");
    clair_buf_free(&u);
}

/* The verdict after the last marker: 1 (first answer), 2 (second), 0 (tie), -1 (none). */
static int parse_verdict(const char *s, size_t n, const char *marker) {
    size_t mlen = strlen(marker), i, at = (size_t)-1, k;
    for (i = 0; i + mlen <= n; i++) {
        for (k = 0; k < mlen && tolower_ascii(s[i + k]) == tolower_ascii(marker[k]); k++) {}
        if (k == mlen) at = i + mlen;
    }
    if (at == (size_t)-1) return -1;
    while (at < n && strchr(" \t*[\"'`", s[at]) && s[at]) at++;
    if (at < n && (s[at] == '1' || s[at] == '2') && (at + 1 == n || !(s[at + 1] >= '0' && s[at + 1] <= '9'))) return s[at] - '0';
    if (at + 3 <= n && tolower_ascii(s[at]) == 't' && tolower_ascii(s[at + 1]) == 'i' && tolower_ascii(s[at + 2]) == 'e') return 0;
    return -1;
}

static int judge_reply(run *r, const line_in *in, int part, const char *text, size_t n, int truncated,
                       clair_buf *rec, const char **reason) {
    judge_ctx *j = (judge_ctx *)r->cmd_ctx;
    int v = truncated ? -1 : parse_verdict(text, n, j->marker), k = OUT_KEPT;
    /* which file won: the first answer is A in part 0, B in part 1 */
    const char *winner = v == 0 ? "tie" : v < 0 ? NULL : (v == 1) == (part == 0) ? "a" : "b";
    if (!winner) { *reason = truncated ? "truncated" : "no_verdict"; k = OUT_DROPPED; }
    clair_buf_puts(rec, "{");
    if (k == OUT_DROPPED) { clair_buf_puts(rec, "\"reason\":"); clair_json_write_string(rec, *reason, strlen(*reason)); clair_buf_puts(rec, ","); }
    clair_buf_puts(rec, "\"prompt\":");
    put_prompt_value(rec, &in->t);
    clair_buf_printf(rec, ",\"order\":\"%s\"", part ? "ba" : "ab");
    if (winner) clair_buf_printf(rec, ",\"verdict\":\"%s\",\"score_a\":%s", winner, !strcmp(winner, "a") ? "1" : !strcmp(winner, "b") ? "0" : "0.5");
    put_str(rec, "judgment", text, n);
    put_str(rec, "a", in->t.answer->str, in->t.answer->len);
    put_str(rec, "b", in->tw.answer->str, in->tw.answer->len);
    put_extras(rec, &in->v);
    return k;
}

static void judge_input_fields(run *r, const line_in *in, clair_buf *rec) {
    (void)r;
    put_prompt(rec, &in->t);
    put_str(rec, "a", in->t.answer->str, in->t.answer->len);
    put_str(rec, "b", in->tw.answer->str, in->tw.answer->len);
}

static const command judge_command = { "judge", "verdicts/s", judge_parse, judge_messages, judge_reply, judge_input_fields, judge_key };

/* The win rate of A over B in a verdicts file: per line, the mean score of its two orders
 * (lines with one order only are left out); a 95% interval from the normal approximation. */
typedef struct { size_t pairs, a_wins, b_wins, ties, agree, one_order; double rate, lo, hi; } win_rate;

static int judge_win_rate(const char *path, win_rate *w) {
    size_t n, nl, l, cap = 0, i;
    char *s = slurp(path, &n);
    double *score = NULL, sum = 0, sq = 0;
    long long *line = NULL, ln, part;
    memset(w, 0, sizeof *w);
    if (!s) return -1;
    span *ls = split_lines(s, n, &nl);
    for (l = 0; l < nl; l++) {
        clair_json v;
        char err[100];
        double sc;
        if (clair_json_parse(s + ls[l].off, ls[l].len, &v, err, sizeof err)) continue;
        if (!clair_json_get_int(&v, "clair_line", &ln) && !clair_json_get_int(&v, "clair_part", &part) &&
            !clair_json_get_num(&v, "score_a", &sc) && part >= 0 && part <= 1 && ln >= 1 && ln <= 1000000000) {
            if ((size_t)ln > cap) {
                size_t nc = (size_t)ln * 2;
                score = (double *)realloc(score, nc * 2 * sizeof *score);
                line = (long long *)realloc(line, nc * sizeof *line);
                if (!score || !line) die("out of memory");
                for (i = cap; i < nc; i++) { score[2 * i] = score[2 * i + 1] = -1; line[i] = 0; }
                cap = nc;
            }
            score[2 * (ln - 1) + part] = sc;
        }
        clair_json_free(&v);
    }
    for (i = 0; i < cap; i++) {
        double x = score[2 * i], y = score[2 * i + 1], m;
        if (x < 0 && y < 0) continue;
        if (x < 0 || y < 0) { w->one_order++; continue; }
        m = 0.5 * (x + y);
        w->pairs++; sum += m; sq += m * m;
        if (m > 0.5) w->a_wins++; else if (m < 0.5) w->b_wins++; else w->ties++;
        w->agree += x == y;
    }
    if (w->pairs) {
        double mean = sum / (double)w->pairs, var = w->pairs > 1 ? (sq - (double)w->pairs * mean * mean) / (double)(w->pairs - 1) : 0;
        double half = 1.96 * sqrt(var > 0 ? var / (double)w->pairs : 0);
        w->rate = mean; w->lo = mean - half < 0 ? 0 : mean - half; w->hi = mean + half > 1 ? 1 : mean + half;
    }
    free(score); free(line); free(ls); free(s);
    return 0;
}

static void print_win_rate(FILE *f, const char *path, const win_rate *w) {
    if (!w->pairs) { fprintf(f, "%s: no pair has verdicts in both orders yet\n", path); return; }
    fprintf(f, "%s: A's win rate %.1f%% (95%% CI %.1f%%-%.1f%%) over %zu pairs: A better %zu, B better %zu, tie %zu; "
            "both orders agree on %.0f%%%s\n", path, 100 * w->rate, 100 * w->lo, 100 * w->hi, w->pairs, w->a_wins,
            w->b_wins, w->ties, 100.0 * (double)w->agree / (double)w->pairs, w->one_order ? " (pairs with one order only are left out)" : "");
}

static void load_judge_template(judge_ctx *j) {
    size_t n;
    char *s = slurp(j->template_path, &n), err[200];
    if (!s) die("%s", slurp_err);
    if (clair_json_parse(s, n, &j->tpl_json, err, sizeof err)) die("template %s: %s", j->template_path, err);
    free(s);
    j->system = clair_json_get_str(&j->tpl_json, "system");
    j->user = clair_json_get_str(&j->tpl_json, "user");
    if (clair_json_get_str(&j->tpl_json, "marker")) j->marker = clair_json_get_str(&j->tpl_json, "marker");
    if (!j->user || !strstr(j->user, "{answer_1}") || !strstr(j->user, "{answer_2}"))
        die("template %s: needs a \"user\" string containing {prompt}, {answer_1} and {answer_2}", j->template_path);
}

static const char judge_usage[] =
"usage: clair judge --a A.jsonl --b B.jsonl --out VERDICTS.jsonl --base-url URL --model JUDGE [options]\n"
"\n"
"Pairwise comparison of two answer files on the same prompts (e.g. clair generate's output for\n"
"the model before and after alignment), judged by a model through any OpenAI-compatible server.\n"
"Lines are paired by prompt. Each pair is asked in both orders to cancel position bias; ties are\n"
"allowed. The result: A's win rate (a pair scores the mean of its two verdicts: 1 win, 0.5 tie,\n"
"0 loss) with a 95% confidence interval, on stderr and from `clair stats VERDICTS.jsonl`.\n"
"Records: {\"prompt\", \"order\" (\"ab\": A shown first), \"verdict\" (\"a\", \"b\", \"tie\"), \"score_a\",\n"
"\"judgment\", \"a\", \"b\"}; a reply without a verdict goes to OUT.dropped.jsonl (\"no_verdict\").\n"
"--template FILE: JSON {\"system\", \"user\" (with {prompt}, {answer_1}, {answer_2}), \"marker\"};\n"
"the reply's last marker is followed by 1, 2 or tie. The built-in prompt is documented in README.\n"
"\n";

static int cmd_judge(int argc, char **argv) {
    run r;
    judge_ctx j;
    int status;
    size_t n;
    run_defaults(&r);
    memset(&j, 0, sizeof j);
    r.cmd = &judge_command;
    r.cmd_ctx = &j;
    r.parts = 2;
    j.system = judge_system; j.user = judge_user; j.marker = "Verdict:";
    {
        const char *param_row = NULL;
        const opt_def defs[] = {
            SERVER_OPTS(r, param_row),
            { NULL, OPT_HEADING, NULL, NULL, "Prompt:" },
            { "--template", OPT_STR, &j.template_path, "FILE", "JSON {\"system\", \"user\" (with {prompt}, {answer_1}, {answer_2}), \"marker\"}" },
            { NULL, OPT_HEADING, NULL, NULL, "Files and run:" },
            { "--a", OPT_STR, &j.a_path, "FILE", "answers A, JSONL {prompt, response}" },
            { "--b", OPT_STR, &j.b_path, "FILE", "answers B, on the same prompts" },
            RUN_OPTS(r),
            { NULL, OPT_END, NULL, NULL, NULL }
        };
        int rc = parse_run_opts(&r, "clair judge", judge_usage, defs, argc, argv);
        if (rc == 1) return 0;
        if (rc < 0) return 2;
    }
    if (!j.a_path || !j.b_path) die("judge: --a and --b are required (see clair judge --help)");
    r.in = j.a_path;
    check_run_opts(&r, "judge");
    if (j.template_path) load_judge_template(&j);
    if (r.out && !strcmp(r.out, j.b_path)) die("an output file (%s) is the input file", r.out);
    j.bdata = slurp(j.b_path, &n);
    if (!j.bdata) die("%s", slurp_err);
    j.blines = split_lines(j.bdata, n, &j.nb);
    {
        /* the A lines are read by run_setup; matching needs them first */
        size_t na;
        char *a = slurp(j.a_path, &na);
        run tmp = r;
        if (!a) die("%s", slurp_err);
        tmp.data = a;
        tmp.lines = split_lines(a, na, &tmp.nlines);
        size_t unmatched = judge_match(&tmp, &j);
        if (unmatched && !r.quiet) fprintf(stderr, "%s: %zu lines of %s have no line of %s with the same prompt; they are not judged\n", prog, unmatched, j.b_path, j.a_path);
        free(tmp.lines); free(a);
    }
    status = run_command(&r);
    if (!r.dry_run) {
        win_rate w;
        if (!judge_win_rate(r.out, &w)) print_win_rate(stderr, r.out, &w);
    }
    clair_json_free(&j.tpl_json);
    free(j.match); free(j.blines); free(j.bdata);
    run_free(&r);
    return status;
}

/* ============================================================================================
 * clair stats
 * ========================================================================================== */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct { double mean, median, p10, p90, min, max; } summary;

static summary summarize(double *v, size_t n) {
    summary s;
    size_t i;
    memset(&s, 0, sizeof s);
    if (!n) return s;
    qsort(v, n, sizeof *v, cmp_double);
    for (i = 0; i < n; i++) s.mean += v[i];
    s.mean /= (double)n;
    s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    s.p10 = v[(size_t)(0.1 * (double)(n - 1) + 0.5)];
    s.p90 = v[(size_t)(0.9 * (double)(n - 1) + 0.5)];
    s.min = v[0]; s.max = v[n - 1];
    return s;
}

static const char stats_help[] =
"usage: clair stats PAIRS.jsonl [--json] [--chosen FIELD] [--rejected FIELD]\n"
"\n"
"Minimal-contrast statistics of any preference dataset (JSONL): per pair, token-level Jaccard\n"
"similarity (higher = more minimal), character Levenshtein distance and the edit ratio\n"
"(Levenshtein / longer length; lower = more minimal), and the token edit count; then mean,\n"
"median, 10th and 90th percentile over the file (compare datasets as the paper's Table 1).\n"
"chosen/rejected may be strings or message lists (the last assistant message is used), as in\n"
"TRL's standard and conversational formats. Bad lines are named on stderr, counted and skipped.\n"
"\n";

static int cmd_stats(int argc, char **argv) {
    const char *path = NULL, *fc = "chosen", *fr = "rejected";
    int json = 0, i, n_pos = 0, rc;
    double price_in = 0, price_out = 0;
    long long tok_in = 0, tok_out = 0, t[2];
    size_t with_usage = 0, verdicts = 0;
    const opt_def defs[] = {
        { "--json", OPT_FLAG, &json, "", "print one JSON object instead of a table" },
        { "--price-in", OPT_DBL, &price_in, "P", "dollars per million prompt tokens (for the cost of clair_usage)" },
        { "--price-out", OPT_DBL, &price_out, "P", "dollars per million completion tokens" },
        { "--chosen", OPT_STR, &fc, "FIELD", "the chosen response's field" },
        { "--rejected", OPT_STR, &fr, "FIELD", "the rejected response's field" },
        { NULL, OPT_END, NULL, NULL, NULL }
    };
    rc = opts_parse("clair stats", stats_help, defs, argc, argv, 2, &path, 1, &n_pos);
    if (rc == 1) return 0;
    if (rc < 0) return 2;
    if (!path) die("stats: which file? (see clair stats --help)");
    check_dbl("--price-in", price_in, 0, 1e6);
    check_dbl("--price-out", price_out, 0, 1e6);
    size_t n, nl, l, cnt = 0, bad = 0, identical = 0;
    char *s = slurp(path, &n);
    if (!s) die("%s", slurp_err);
    span *ls = split_lines(s, n, &nl);
    double *jac = (double *)malloc((nl + 1) * sizeof(double)), *lev = (double *)malloc((nl + 1) * sizeof(double));
    double *er = (double *)malloc((nl + 1) * sizeof(double)), *te = (double *)malloc((nl + 1) * sizeof(double));
    if (!jac || !lev || !er || !te) die("out of memory");
    for (l = 0; l < nl; l++) {
        clair_json v;
        char err[300];
        const clair_json *c, *r;
        clair_metrics m;
        if (blank(s + ls[l].off, ls[l].len)) continue;
        if (clair_json_parse(s + ls[l].off, ls[l].len, &v, err, sizeof err)) {
            if (bad++ < 20) fprintf(stderr, "%s: %s line %zu: not valid JSON (%s); skipped\n", prog, path, l + 1, err);
            continue;
        }
        const clair_json *use = clair_json_get(&v, "clair_usage");
        if (use && !clair_json_get_int(use, "prompt_tokens", &t[0]) && !clair_json_get_int(use, "completion_tokens", &t[1])) {
            tok_in += t[0]; tok_out += t[1]; with_usage++;
        }
        if (clair_json_get(&v, "score_a") || (clair_json_get(&v, "order") && clair_json_get(&v, "judgment"))) {
            verdicts++;                          /* clair judge's verdicts: a win rate, below */
            clair_json_free(&v);
            continue;
        }
        if (!(c = response_text(&v, fc, err, sizeof err)) || !(r = response_text(&v, fr, err, sizeof err))) {
            if (bad++ < 20) fprintf(stderr, "%s: %s line %zu: %s; skipped\n", prog, path, l + 1, err);
            clair_json_free(&v);
            continue;
        }
        if (clair_metrics_compute(c->str, c->len, r->str, r->len, &m)) die("out of memory at line %zu", l + 1);
        identical += c->len == r->len && !memcmp(c->str, r->str, c->len);
        jac[cnt] = m.jaccard; lev[cnt] = (double)m.levenshtein; er[cnt] = m.edit_ratio; te[cnt] = (double)m.token_edits;
        cnt++;
        clair_json_free(&v);
    }
    if (bad > 20) fprintf(stderr, "%s: ... %zu bad lines in all\n", prog, bad);
    if (verdicts && !cnt) {
        win_rate w;
        if (judge_win_rate(path, &w)) die("%s", slurp_err);
        if (json) {
            clair_buf b = {0, 0, 0, 0};
            clair_buf_puts(&b, "{\"file\":");
            clair_json_write_string(&b, path, strlen(path));
            clair_buf_printf(&b, ",\"pairs\":%zu,\"win_rate\":%.6f,\"ci95\":[%.6f,%.6f],\"a_better\":%zu,\"b_better\":%zu,"
                             "\"ties\":%zu,\"orders_agree\":%zu,\"one_order_only\":%zu,\"prompt_tokens\":%lld,\"completion_tokens\":%lld}\n",
                             w.pairs, w.rate, w.lo, w.hi, w.a_wins, w.b_wins, w.ties, w.agree, w.one_order, tok_in, tok_out);
            if (b.data) fputs(b.data, stdout);
            clair_buf_free(&b);
        }
        else print_win_rate(stdout, path, &w);
        free(jac); free(lev); free(er); free(te); free(ls); free(s);
        return 0;
    }
    summary sj = summarize(jac, cnt), sl = summarize(lev, cnt), se = summarize(er, cnt), st = summarize(te, cnt);
    if (json) {
        clair_buf b = {0, 0, 0, 0};
        const char *names[4] = { "jaccard", "levenshtein", "edit_ratio", "token_edits" };
        summary *ss[4] = { &sj, &sl, &se, &st };
        clair_buf_puts(&b, "{\"file\":");
        clair_json_write_string(&b, path, strlen(path));
        clair_buf_printf(&b, ",\"pairs\":%zu,\"skipped\":%zu,\"identical\":%zu", cnt, bad, identical);
        clair_buf_printf(&b, ",\"prompt_tokens\":%lld,\"completion_tokens\":%lld", tok_in, tok_out);
        if (price_in > 0 || price_out > 0) {
            clair_buf_puts(&b, ",\"cost\":");
            clair_json_write_number(&b, ((double)tok_in * price_in + (double)tok_out * price_out) / 1e6);
        }
        for (i = 0; i < 4; i++) {
            clair_buf_printf(&b, ",\"%s\":{\"mean\":", names[i]); clair_json_write_number(&b, ss[i]->mean);
            clair_buf_puts(&b, ",\"median\":"); clair_json_write_number(&b, ss[i]->median);
            clair_buf_puts(&b, ",\"p10\":"); clair_json_write_number(&b, ss[i]->p10);
            clair_buf_puts(&b, ",\"p90\":"); clair_json_write_number(&b, ss[i]->p90);
            clair_buf_puts(&b, "}");
        }
        clair_buf_puts(&b, "}\n");
        fputs(b.data, stdout);
        clair_buf_free(&b);
    } else {
        printf("%s: %zu pairs (%zu skipped, %zu identical)\n", path, cnt, bad, identical);
        printf("%-22s %12s %12s %12s %12s\n", "", "mean", "median", "p10", "p90");
        printf("%-22s %12.4f %12.4f %12.4f %12.4f\n", "jaccard (higher=min.)", sj.mean, sj.median, sj.p10, sj.p90);
        printf("%-22s %12.1f %12.1f %12.1f %12.1f\n", "levenshtein (chars)", sl.mean, sl.median, sl.p10, sl.p90);
        printf("%-22s %12.4f %12.4f %12.4f %12.4f\n", "edit ratio", se.mean, se.median, se.p10, se.p90);
        printf("%-22s %12.1f %12.1f %12.1f %12.1f\n", "token edits", st.mean, st.median, st.p10, st.p90);
        if (with_usage) {
            printf("server tokens (clair_usage of %zu records): %lld prompt + %lld completion", with_usage, tok_in, tok_out);
            if (price_in > 0 || price_out > 0) printf(", $%.4f", ((double)tok_in * price_in + (double)tok_out * price_out) / 1e6);
            printf("\n");
        }
    }
    free(jac); free(lev); free(er); free(te); free(ls); free(s);
    return 0;
}

/* ============================================================================================
 * clair diff
 * ========================================================================================== */

static const char diff_help[] =
"usage: clair diff OLD_FILE NEW_FILE\n"
"\n"
"Prints the token edit script from OLD to NEW ([-deleted-]{+inserted+}) and the metrics\n"
"(Levenshtein, edit ratio, Jaccard, token edits) to stdout. Tokens are runs of whitespace or\n"
"of other characters; the script is a shortest one (Myers' algorithm).\n";

static int cmd_diff(int argc, char **argv) {
    if (argc >= 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) { fputs(diff_help, stdout); return 0; }
    if (argc != 4) die("diff: needs two files (see clair diff --help)");
    size_t na, nb;
    char *a = slurp(argv[2], &na), *b;
    if (!a) die("%s", slurp_err);
    b = slurp(argv[3], &nb);
    if (!b) die("%s", slurp_err);
    clair_diff d;
    clair_metrics m;
    clair_buf out = {0, 0, 0, 0};
    if (clair_diff_tokens(a, na, b, nb, &d) || clair_metrics_compute(b, nb, a, na, &m)) die("out of memory");
    clair_diff_render(&out, a, b, &d);
    if (out.data) fwrite(out.data, 1, out.len, stdout);
    printf("\n--\nlevenshtein %lld  edit_ratio %.4f  jaccard %.4f  token_edits %zu (-%zu +%zu)\n",
           m.levenshtein, m.edit_ratio, m.jaccard, m.token_edits, d.n_del, d.n_ins);
    clair_buf_free(&out); clair_diff_free(&d); free(a); free(b);
    return 0;
}

static const char main_help[] =
"usage: clair COMMAND [options]     (clair COMMAND --help for each)\n"
"\n"
"CLAIR (Contrastive Learning from AI Revisions): build minimally contrasting preference pairs\n"
"by having a stronger model minimally revise your model's answers, and measure how minimal\n"
"the contrast of any preference dataset is.\n"
"\n"
"commands:\n"
"  generate prompts.jsonl -> answers.jsonl: the target model's own answers (resumable)\n"
"  revise   answers.jsonl -> pairs.jsonl via an OpenAI-compatible server (resumable)\n"
"  judge    A.jsonl + B.jsonl -> verdicts.jsonl and A's win rate (resumable)\n"
"  stats    minimal-contrast statistics of a preference dataset\n"
"  diff     token edit script and metrics of two text files\n";

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(main_help, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "generate")) return cmd_generate(argc, argv);
    if (!strcmp(argv[1], "revise")) return cmd_revise(argc, argv);
    if (!strcmp(argv[1], "judge")) return cmd_judge(argc, argv);
    if (!strcmp(argv[1], "stats")) return cmd_stats(argc, argv);
    if (!strcmp(argv[1], "diff")) return cmd_diff(argc, argv);
    die("unknown command '%s' (commands: generate, revise, judge, stats, diff; see clair --help)", argv[1]);
    return 2;
}
