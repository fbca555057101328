/* clair.c - the `clair` command-line tool: build CLAIR preference pairs and measure minimal
 * contrast. Built on clair.h (this file holds its implementation).
 *
 *   clair revise --in answers.jsonl --out pairs.jsonl --base-url URL --model NAME [options]
 *   clair stats pairs.jsonl [--json]
 *   clair diff OLD_FILE NEW_FILE
 *
 * `clair <command> --help` describes each command. Durability and resume (revise):
 *   - Every input line ends in exactly one record, in one of three files: OUT (kept pairs),
 *     OUT.dropped.jsonl (with "reason") or OUT.failed.jsonl (with "error"). Each record carries
 *     "clair_line" (1-based input line) and "clair_key" (a hash of the input line's bytes).
 *   - A record is written with one append (O_APPEND, a single write of the whole line); the
 *     files are fsync'ed at least once a second and at exit. A record is therefore either
 *     complete or a partial last line; a partial last line (only possible after a crash) is
 *     cut off on the next run and its input line requested again.
 *   - Re-running the same command reads the three files first and requests only the lines
 *     without a record. A record whose clair_key does not match the input line stops the run
 *     (the input changed). --retry-failed requests the failed lines again (a fixed bad input
 *     line too): the failed file is first replaced (atomically, temp + rename) by an empty one.
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

/* Prints "clair: message" and exits with status 1 (util.c's report does the printing). */
static void die(const char *f, ...) {
    char msg[4096];
    va_list ap;
    va_start(ap, f);
    vsnprintf(msg, sizeof msg, f, ap);
    va_end(ap);
    exit(report(prog, "%s", msg));
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

static unsigned long long fnv1a(const char *s, size_t n) {
    unsigned long long h = 1469598103934665603ULL;
    size_t i;
    for (i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ULL; }
    return h;
}

/* ============================================================================================
 * clair revise
 * ========================================================================================== */

enum { ST_TODO = 0, ST_KEPT, ST_DROPPED, ST_FAILED, ST_BLANK, ST_FLIGHT };

typedef struct {
    /* options */
    const char *in, *out, *dropped_path, *failed_path, *base_url, *model, *api_key_env, *template_path;
    int concurrency, max_tokens, max_attempts, retry_failed, quiet, verbose;
    int limit;
    double temperature, timeout, connect_timeout, backoff, backoff_max;
    clair_filter filter;
    clair_template tpl;
    clair_json tpl_json;
    /* input */
    char *data;
    span *lines;
    size_t nlines, cursor;
    unsigned char *state;
    /* outputs */
    int fd[3];                  /* kept, dropped, failed */
    const char *path[3];
    double last_sync, last_progress, t0;
    /* counts */
    size_t todo, done_now, kept, dropped, failed, blank_lines, prev_kept, prev_dropped, prev_failed;
    size_t reasons[8], errors[8], bad_input;
} revise_ctx;

static volatile int g_stop = 0;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

static const char *reserved[] = { "prompt", "response", "chosen", "rejected", "rationale", "jaccard",
    "levenshtein", "edit_ratio", "token_edits", "reason", "error", "message", "status", "attempts",
    "reply", "clair_line", "clair_key", "input", NULL };

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

static void put_metrics(clair_buf *b, const clair_metrics *m) {
    clair_buf_puts(b, ",\"jaccard\":"); clair_json_write_number(b, m->jaccard);
    clair_buf_printf(b, ",\"levenshtein\":%lld", m->levenshtein);
    clair_buf_puts(b, ",\"edit_ratio\":"); clair_json_write_number(b, m->edit_ratio);
    clair_buf_printf(b, ",\"token_edits\":%zu", m->token_edits);
}

static void sync_outputs(revise_ctx *c) {
    int k;
    for (k = 0; k < 3; k++) if (c->fd[k] >= 0) fsync(c->fd[k]);
    c->last_sync = now_s();
}

/* Ends the record (clair_line, clair_key, newline) and appends it to output k. */
static void emit(revise_ctx *c, int k, clair_buf *b, size_t line) {
    const span *l = &c->lines[line];
    clair_buf_printf(b, ",\"clair_line\":%zu,\"clair_key\":\"%016llx\"}\n", line + 1, fnv1a(c->data + l->off, l->len));
    if (b->oom) die("out of memory writing a record for input line %zu", line + 1);
    if (write_all(c->fd[k], b->data, b->len)) die("cannot write %s: %s", c->path[k], strerror(errno));
    if (now_s() - c->last_sync >= 1.0) sync_outputs(c);
}

static void record_failure(revise_ctx *c, size_t line, const clair_json *in, const char *error, long status,
                           int attempts, const char *message, const char *reply, size_t reply_len) {
    clair_buf b = {0, 0, 0, 0};
    clair_buf_puts(&b, "{\"error\":");
    clair_json_write_string(&b, error, strlen(error));
    if (status) clair_buf_printf(&b, ",\"status\":%ld", status);
    if (attempts) clair_buf_printf(&b, ",\"attempts\":%d", attempts);
    put_str(&b, "message", message, strlen(message));
    if (in) {
        const char *p = clair_json_get_str(in, "prompt"), *r = clair_json_get_str(in, "response");
        if (p) put_str(&b, "prompt", p, clair_json_get(in, "prompt")->len);
        if (r) put_str(&b, "response", r, clair_json_get(in, "response")->len);
        put_extras(&b, in);
    } else {
        const span *l = &c->lines[line];
        size_t len = l->len;
        /* the raw line, made valid UTF-8 for the record if it was not */
        if (clair_utf8_check(c->data + l->off, len) != len) len = clair_utf8_check(c->data + l->off, len);
        put_str(&b, "input", c->data + l->off, len);
    }
    if (reply) put_str(&b, "reply", reply, reply_len);
    emit(c, 2, &b, line);
    clair_buf_free(&b);
    c->failed++;
    c->state[line] = ST_FAILED;
}

/* Parses and checks one input line. 0 with *v filled, or -1 with a reason in err. */
static int parse_input(const char *s, size_t n, clair_json *v, char *err, size_t errsz) {
    char jerr[200];
    const clair_json *p, *r;
    if (clair_json_parse(s, n, v, jerr, sizeof jerr)) { snprintf(err, errsz, "not valid JSON (%s)", jerr); return -1; }
    if (v->type != CLAIR_JSON_OBJECT) { snprintf(err, errsz, "not a JSON object"); goto bad; }
    p = clair_json_get(v, "prompt"); r = clair_json_get(v, "response");
    if (!p) { snprintf(err, errsz, "missing field \"prompt\""); goto bad; }
    if (p->type != CLAIR_JSON_STRING) { snprintf(err, errsz, "field \"prompt\" is a %s, not a string", clair_json_type_name(p->type)); goto bad; }
    if (!r) { snprintf(err, errsz, "missing field \"response\""); goto bad; }
    if (r->type != CLAIR_JSON_STRING) { snprintf(err, errsz, "field \"response\" is a %s, not a string", clair_json_type_name(r->type)); goto bad; }
    {
        size_t i; int empty = 1;
        for (i = 0; i < r->len; i++) if (!strchr(" \t\r\n", r->str[i]) || !r->str[i]) { empty = 0; break; }
        if (empty) { snprintf(err, errsz, "field \"response\" is empty: nothing to revise"); goto bad; }
        empty = 1;
        for (i = 0; i < p->len; i++) if (!strchr(" \t\r\n", p->str[i]) || !p->str[i]) { empty = 0; break; }
        if (empty) { snprintf(err, errsz, "field \"prompt\" is empty"); goto bad; }
    }
    return 0;
bad:
    clair_json_free(v);
    return -1;
}

static int revise_next(void *ctx, clair_job *job) {
    revise_ctx *c = (revise_ctx *)ctx;
    while (c->cursor < c->nlines && !g_stop) {
        size_t i = c->cursor++;
        const span *l = &c->lines[i];
        clair_json v;
        char err[300];
        clair_buf body = {0, 0, 0, 0};
        if (c->state[i] != ST_TODO) continue;
        if (parse_input(c->data + l->off, l->len, &v, err, sizeof err)) {
            fprintf(stderr, "%s: %s line %zu: %s; recorded in %s\n", prog, c->in, i + 1, err, c->path[2]);
            record_failure(c, i, NULL, "bad_input", 0, 0, err, NULL, 0);
            c->bad_input++;
            c->done_now++;
            continue;
        }
        const clair_json *p = clair_json_get(&v, "prompt"), *r = clair_json_get(&v, "response");
        clair_request_body(&body, c->model, c->temperature, c->max_tokens, &c->tpl, p->str, p->len, r->str, r->len);
        clair_json_free(&v);
        if (body.oom) die("out of memory building the request for input line %zu", i + 1);
        job->body = body.data;
        job->body_len = body.len;
        job->user = (void *)(uintptr_t)i;
        c->state[i] = ST_FLIGHT;
        return 1;
    }
    return 0;
}

static void revise_done(void *ctx, clair_job *job) {
    revise_ctx *c = (revise_ctx *)ctx;
    size_t i = (size_t)(uintptr_t)job->user;
    const span *l = &c->lines[i];
    clair_json in;
    char err[300];
    clair_buf b = {0, 0, 0, 0};
    if (parse_input(c->data + l->off, l->len, &in, err, sizeof err)) die("internal: input line %zu changed", i + 1);
    c->done_now++;
    if (job->error != CLAIR_REQ_OK) {
        record_failure(c, i, &in, clair_req_error_name(job->error), job->status, job->attempts, job->message,
                       job->error == CLAIR_REQ_BAD_REPLY ? job->reply : NULL, job->reply_len);
        c->errors[job->error < 8 ? job->error : 7]++;
        if (c->verbose) fprintf(stderr, "%s: input line %zu failed: %s\n", prog, i + 1, job->message);
        clair_json_free(&in);
        return;
    }
    const clair_json *p = clair_json_get(&in, "prompt"), *r = clair_json_get(&in, "response");
    clair_reply rep;
    clair_parse_status ps = clair_parse_reply(job->content, job->content_len, c->tpl.marker, &rep);
    if (ps != CLAIR_PARSE_OK) {
        clair_buf_puts(&b, "{\"reason\":");
        const char *reason = clair_parse_status_name(ps);
        clair_json_write_string(&b, reason, strlen(reason));
        put_str(&b, "prompt", p->str, p->len);
        put_str(&b, "rejected", r->str, r->len);
        put_str(&b, "reply", job->content, job->content_len);
        put_extras(&b, &in);
        emit(c, 1, &b, i);
        c->dropped++;
        c->reasons[ps == CLAIR_PARSE_NO_MARKER ? 6 : CLAIR_DROP_EMPTY]++;
        c->state[i] = ST_DROPPED;
    } else {
        clair_metrics m;
        if (clair_metrics_compute(rep.revision, rep.revision_len, r->str, r->len, &m)) die("out of memory measuring input line %zu", i + 1);
        clair_verdict v = clair_filter_check(&c->filter, rep.revision, rep.revision_len, r->str, r->len, &m);
        int k = v == CLAIR_KEEP ? 0 : 1;
        if (k) {
            const char *reason = clair_verdict_name(v);
            clair_buf_puts(&b, "{\"reason\":");
            clair_json_write_string(&b, reason, strlen(reason));
            put_str(&b, "prompt", p->str, p->len);
        } else {
            clair_buf_puts(&b, "{\"prompt\":");
            clair_json_write_string(&b, p->str, p->len);
        }
        put_str(&b, "chosen", rep.revision, rep.revision_len);
        put_str(&b, "rejected", r->str, r->len);
        put_str(&b, "rationale", rep.rationale, rep.rationale_len);
        put_metrics(&b, &m);
        put_extras(&b, &in);
        emit(c, k, &b, i);
        if (k) { c->dropped++; c->reasons[v]++; c->state[i] = ST_DROPPED; }
        else { c->kept++; c->state[i] = ST_KEPT; }
    }
    clair_buf_free(&b);
    clair_json_free(&in);
}

static void progress(revise_ctx *c, int final) {
    double el = now_s() - c->t0, rate = el > 0 ? (double)c->done_now / el : 0;
    size_t total = c->prev_kept + c->prev_dropped + c->prev_failed + c->done_now;
    size_t all = c->prev_kept + c->prev_dropped + c->prev_failed + c->todo;
    char eta[32];
    fmt_duration(eta, sizeof eta, rate > 0 ? (double)(c->todo - c->done_now) / rate : -1);
    fprintf(stderr, "%s%s: %zu/%zu done (kept %zu, dropped %zu, failed %zu), %.2f pairs/s, ETA %s%s",
            isatty(2) ? "\r" : "", prog, total, all, c->prev_kept + c->kept, c->prev_dropped + c->dropped,
            c->prev_failed + c->failed, rate, final ? "0s" : eta, isatty(2) && !final ? "   " : "\n");
}

static void revise_tick(void *ctx) {
    revise_ctx *c = (revise_ctx *)ctx;
    double t = now_s();
    if (now_s() - c->last_sync >= 1.0) sync_outputs(c);
    if (!c->quiet && t - c->last_progress >= (isatty(2) ? 1.0 : 10.0)) { progress(c, 0); c->last_progress = t; }
}

/* Reads one output file of an earlier run: marks its lines done; cuts a partial last line. */
static size_t resume_scan(revise_ctx *c, const char *path, int st, int check_keys) {
    size_t n = 0, count = 0, nl, k;
    char *s = slurp(path, &n);
    if (!s) { if (errno == ENOENT) return 0; die("%s", slurp_err); }
    if (n && s[n - 1] != '\n') {
        size_t keep = n;
        while (keep && s[keep - 1] != '\n') keep--;
        fprintf(stderr, "%s: %s ends with a partial record (an interrupted write); removing it, its input line will be requested again\n", prog, path);
        if (truncate(path, (off_t)keep)) die("cannot truncate %s: %s", path, strerror(errno));
        n = keep;
    }
    span *ls = split_lines(s, n, &nl);
    for (k = 0; k < nl; k++) {
        clair_json v;
        char err[200];
        long long line;
        const char *key;
        if (blank(s + ls[k].off, ls[k].len)) continue;
        if (clair_json_parse(s + ls[k].off, ls[k].len, &v, err, sizeof err))
            die("%s line %zu: not a JSON record (%s); this file was not written by clair revise, or was edited", path, k + 1, err);
        if (clair_json_get_int(&v, "clair_line", &line) || !(key = clair_json_get_str(&v, "clair_key")))
            die("%s line %zu: no \"clair_line\"/\"clair_key\"; this file was not written by clair revise (choose another --out)", path, k + 1);
        if (line < 1 || (size_t)line > c->nlines)
            die("%s line %zu: record for input line %lld, but %s has %zu lines; the input changed since (use a new --out, or restore the input)", path, k + 1, line, c->in, c->nlines);
        if (check_keys) {
            const span *il = &c->lines[line - 1];
            char want[32];
            snprintf(want, sizeof want, "%016llx", fnv1a(c->data + il->off, il->len));
            if (strcmp(want, key))
                die("%s line %zu: record for input line %lld was made from a different input line; the input changed since (use a new --out, or restore the input)", path, k + 1, line);
        }
        if (c->state[line - 1] != ST_TODO)
            fprintf(stderr, "%s: warning: %s line %zu: input line %lld already has a record; ignoring this one\n", prog, path, k + 1, line);
        else { c->state[line - 1] = (unsigned char)st; count++; }
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
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || fsync(fd) || close(fd) || rename(tmp, path)) die("cannot replace %s: %s", path, strerror(errno));
}

static void load_template(revise_ctx *c) {
    size_t n;
    char *s = slurp(c->template_path, &n), err[200];
    if (!s) die("cannot read template %s: %s", c->template_path, strerror(errno));
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
"Input: JSONL, one {\"prompt\": ..., \"response\": ...} per line (other fields are kept).\n"
"Output (every input line ends in exactly one of them):\n"
"  OUT                  kept pairs: prompt, chosen, rejected, rationale, jaccard, levenshtein,\n"
"                       edit_ratio, token_edits, your fields, clair_line, clair_key\n"
"  OUT.dropped.jsonl    pairs the filter dropped, with \"reason\": identical, empty_revision,\n"
"                       no_marker, edit_ratio, jaccard, length_ratio\n"
"  OUT.failed.jsonl     requests that failed after all retries, and bad input lines, with \"error\"\n"
"Re-running the same command resumes: lines with a record are not requested again.\n"
"\n";

static int cmd_revise(int argc, char **argv) {
    revise_ctx c;
    int k;
    char dpath[4096], fpath[4096], url[4096], err[300];
    memset(&c, 0, sizeof c);
    c.concurrency = 8; c.max_tokens = 4096; c.max_attempts = 6; c.temperature = 0.7;
    c.timeout = 600; c.connect_timeout = 30; c.backoff = 1; c.backoff_max = 60;
    c.filter = clair_filter_default();
    c.tpl = *clair_template_default();
    c.fd[0] = c.fd[1] = c.fd[2] = -1;
    {
        const opt_def defs[] = {
            { NULL, OPT_HEADING, NULL, NULL, "Server:" },
            { "--base-url", OPT_STR, &c.base_url, "URL", "e.g. https://api.openai.com/v1 (requests go to URL/chat/completions)" },
            { "--model", OPT_STR, &c.model, "NAME", "the reviser model" },
            { "--api-key-env", OPT_STR, &c.api_key_env, "VAR", "read the API key from environment variable VAR (never printed)" },
            { "--concurrency", OPT_INT, &c.concurrency, "N", "requests in flight" },
            { "--temperature", OPT_DBL, &c.temperature, "T", "sampling temperature (0.7: the paper's reference setting)" },
            { "--max-tokens", OPT_INT, &c.max_tokens, "N", "reply token limit (4096: the paper's setting); 0 = leave to the server" },
            { "--timeout", OPT_DBL, &c.timeout, "S", "seconds per attempt" },
            { "--connect-timeout", OPT_DBL, &c.connect_timeout, "S", "seconds to connect" },
            { "--max-attempts", OPT_INT, &c.max_attempts, "N", "attempts per request, retries included" },
            { "--backoff", OPT_DBL, &c.backoff, "S", "first retry waits about S seconds, doubling, jittered" },
            { "--max-backoff", OPT_DBL, &c.backoff_max, "S", "cap of the doubling; a Retry-After header wins" },
            { NULL, OPT_HEADING, NULL, NULL, "Prompt:" },
            { "--template", OPT_STR, &c.template_path, "FILE", "JSON {\"system\", \"user\" (with {prompt}, {answer}), \"marker\"} (default: built in)" },
            { NULL, OPT_HEADING, NULL, NULL, "Filter (a value <= 0 switches a check off):" },
            { "--max-edit-ratio", OPT_DBL, &c.filter.max_edit_ratio, "R", "drop if Levenshtein / max length > R" },
            { "--min-jaccard", OPT_DBL, &c.filter.min_jaccard, "J", "drop if token Jaccard similarity < J" },
            { "--min-length-ratio", OPT_DBL, &c.filter.min_length_ratio, "R", "drop if len(chosen) / len(rejected) < R" },
            { "--max-length-ratio", OPT_DBL, &c.filter.max_length_ratio, "R", "drop if len(chosen) / len(rejected) > R" },
            { NULL, OPT_HEADING, NULL, NULL, "Files and run:" },
            { "--in", OPT_STR, &c.in, "FILE", "the answers, JSONL" },
            { "--out", OPT_STR, &c.out, "FILE", "the kept pairs, JSONL" },
            { "--dropped", OPT_STR, &c.dropped_path, "FILE", "default OUT.dropped.jsonl" },
            { "--failed", OPT_STR, &c.failed_path, "FILE", "default OUT.failed.jsonl" },
            { "--retry-failed", OPT_FLAG, &c.retry_failed, "", "request the lines of the failed file again" },
            { "--limit", OPT_INT, &c.limit, "N", "only the first N input lines (0: all)" },
            { "--quiet", OPT_FLAG, &c.quiet, "", "no progress line" },
            { "--verbose", OPT_FLAG, &c.verbose, "", "a line per retry and failure" },
            { NULL, OPT_END, NULL, NULL, NULL }
        };
        int rc = opts_parse("clair revise", revise_usage, defs, argc, argv, 2, NULL, 0, NULL);
        if (rc == 1) return 0;
        if (rc < 0) return 2;
    }
    if (!c.in || !c.out || !c.base_url || !c.model)
        die("revise: --in, --out, --base-url and --model are required (see clair revise --help)");
    if (c.concurrency < 1 || c.concurrency > 4096) die("--concurrency must be between 1 and 4096");
    if (c.max_attempts < 1) die("--max-attempts must be at least 1");
    if (c.max_tokens < 0 || c.limit < 0) die("--max-tokens and --limit must be >= 0");
    if (c.timeout <= 0 || c.connect_timeout <= 0) die("--timeout and --connect-timeout must be positive");
    if (c.template_path) load_template(&c);
    const char *key = NULL;
    if (c.api_key_env) {
        key = getenv(c.api_key_env);
        if (!key || !key[0]) die("environment variable %s (named by --api-key-env) is not set or empty", c.api_key_env);
    }
    snprintf(dpath, sizeof dpath, "%s.dropped.jsonl", c.out);
    snprintf(fpath, sizeof fpath, "%s.failed.jsonl", c.out);
    c.path[0] = c.out;
    c.path[1] = c.dropped_path ? c.dropped_path : dpath;
    c.path[2] = c.failed_path ? c.failed_path : fpath;
    if (!strcmp(c.path[0], c.in) || !strcmp(c.path[1], c.in) || !strcmp(c.path[2], c.in)) die("an output file is the input file");
    {
        size_t bl = strlen(c.base_url);
        while (bl && c.base_url[bl - 1] == '/') bl--;
        snprintf(url, sizeof url, "%.*s/chat/completions", (int)bl, c.base_url);
    }

    /* input */
    size_t n;
    c.data = slurp(c.in, &n);
    if (!c.data) die("%s", slurp_err);
    c.lines = split_lines(c.data, n, &c.nlines);
    if (c.limit > 0 && (size_t)c.limit < c.nlines) c.nlines = (size_t)c.limit;
    c.state = (unsigned char *)calloc(c.nlines + 1, 1);
    if (!c.state) die("out of memory");
    for (size_t l = 0; l < c.nlines; l++)
        if (blank(c.data + c.lines[l].off, c.lines[l].len)) { c.state[l] = ST_BLANK; c.blank_lines++; }

    /* resume */
    c.prev_kept = resume_scan(&c, c.path[0], ST_KEPT, 1);
    c.prev_dropped = resume_scan(&c, c.path[1], ST_DROPPED, 1);
    if (c.retry_failed) {
        /* forget the failed records: their lines are requested again. Their keys are not
         * checked, so a user may fix a bad input line and retry it. */
        struct stat sb;
        if (!stat(c.path[2], &sb)) {
            size_t l;
            resume_scan(&c, c.path[2], ST_FAILED, 0);
            for (l = 0; l < c.nlines; l++) if (c.state[l] == ST_FAILED) c.state[l] = ST_TODO;
            atomic_empty(c.path[2]);
        }
    } else c.prev_failed = resume_scan(&c, c.path[2], ST_FAILED, 1);
    for (size_t l = 0; l < c.nlines; l++) c.todo += c.state[l] == ST_TODO;
    if (!c.quiet && (c.prev_kept || c.prev_dropped || c.prev_failed))
        fprintf(stderr, "%s: resuming: %zu lines already have a record (kept %zu, dropped %zu, failed %zu); %zu to do\n",
                prog, c.prev_kept + c.prev_dropped + c.prev_failed, c.prev_kept, c.prev_dropped, c.prev_failed, c.todo);

    for (k = 0; k < 3; k++) c.fd[k] = open_append(c.path[k]);
    {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);
    }
    clair_http_opts o;
    memset(&o, 0, sizeof o);
    o.url = url; o.api_key = key; o.concurrency = c.concurrency; o.timeout_s = c.timeout;
    o.connect_timeout_s = c.connect_timeout; o.max_attempts = c.max_attempts; o.backoff_s = c.backoff;
    o.backoff_max_s = c.backoff_max; o.stop = &g_stop; o.tick = revise_tick; o.verbose_retries = c.verbose;
    c.t0 = c.last_sync = c.last_progress = now_s();
    int rc = c.todo ? clair_http_run(&o, revise_next, revise_done, &c, err, sizeof err) : 0;
    sync_outputs(&c);
    for (k = 0; k < 3; k++) close(c.fd[k]);
    if (rc) die("%s", err);
    if (!c.quiet) progress(&c, 1);

    /* summary */
    double el = now_s() - c.t0;
    fprintf(stderr, "%s: this run: %zu lines in %.1f s (%.2f pairs/s): kept %zu, dropped %zu, failed %zu\n",
            prog, c.done_now, el, el > 0 ? (double)c.done_now / el : 0.0, c.kept, c.dropped, c.failed);
    if (c.dropped) {
        static const char *names[] = { "kept", "empty_revision", "identical", "edit_ratio", "jaccard", "length_ratio", "no_marker" };
        fprintf(stderr, "%s:   dropped by reason:", prog);
        for (k = 1; k < 7; k++) if (c.reasons[k]) fprintf(stderr, " %s %zu", names[k], c.reasons[k]);
        fprintf(stderr, "\n");
    }
    if (c.failed) {
        fprintf(stderr, "%s:   failed: bad_input %zu", prog, c.bad_input);
        for (k = 1; k < 7; k++) if (c.errors[k]) fprintf(stderr, " %s %zu", clair_req_error_name((clair_req_error)k), c.errors[k]);
        fprintf(stderr, " (see %s; rerun with --retry-failed to try them again)\n", c.path[2]);
    }
    if (c.blank_lines) fprintf(stderr, "%s:   %zu blank input lines ignored\n", prog, c.blank_lines);
    fprintf(stderr, "%s: totals: kept %zu -> %s, dropped %zu -> %s, failed %zu -> %s\n", prog,
            c.prev_kept + c.kept, c.path[0], c.prev_dropped + c.dropped, c.path[1], c.prev_failed + c.failed, c.path[2]);
    int status = 0;
    if (g_stop) {
        size_t left = 0;
        for (size_t l = 0; l < c.nlines; l++) left += c.state[l] == ST_TODO || c.state[l] == ST_FLIGHT;
        fprintf(stderr, "%s: interrupted with %zu lines left; run the same command again to resume\n", prog, left);
        status = 130;
    }
    clair_json_free(&c.tpl_json);
    free(c.state); free(c.lines); free(c.data);
    return status;
}

/* ============================================================================================
 * clair stats
 * ========================================================================================== */

/* The text of a response field: a string, or a message list (the last assistant message, else
 * the last message). NULL with a reason if neither. */
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
    const opt_def defs[] = {
        { "--json", OPT_FLAG, &json, "", "print one JSON object instead of a table" },
        { "--chosen", OPT_STR, &fc, "FIELD", "the chosen response's field" },
        { "--rejected", OPT_STR, &fr, "FIELD", "the rejected response's field" },
        { NULL, OPT_END, NULL, NULL, NULL }
    };
    rc = opts_parse("clair stats", stats_help, defs, argc, argv, 2, &path, 1, &n_pos);
    if (rc == 1) return 0;
    if (rc < 0) return 2;
    if (!path) die("stats: which file? (see clair stats --help)");
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
    summary sj = summarize(jac, cnt), sl = summarize(lev, cnt), se = summarize(er, cnt), st = summarize(te, cnt);
    if (json) {
        clair_buf b = {0, 0, 0, 0};
        const char *names[4] = { "jaccard", "levenshtein", "edit_ratio", "token_edits" };
        summary *ss[4] = { &sj, &sl, &se, &st };
        clair_buf_puts(&b, "{\"file\":");
        clair_json_write_string(&b, path, strlen(path));
        clair_buf_printf(&b, ",\"pairs\":%zu,\"skipped\":%zu,\"identical\":%zu", cnt, bad, identical);
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
"  revise   answers.jsonl -> pairs.jsonl via an OpenAI-compatible server (resumable)\n"
"  stats    minimal-contrast statistics of a preference dataset\n"
"  diff     token edit script and metrics of two text files\n";

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(main_help, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "revise")) return cmd_revise(argc, argv);
    if (!strcmp(argv[1], "stats")) return cmd_stats(argc, argv);
    if (!strcmp(argv[1], "diff")) return cmd_diff(argc, argv);
    die("unknown command '%s' (commands: revise, stats, diff; see clair --help)", argv[1]);
    return 2;
}
