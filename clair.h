/* clair.h - CLAIR preference pairs (Contrastive Learning from AI Revisions), single-file header.
 *
 * A stb-style header: declarations always, the implementation in the one file that defines
 * CLAIR_IMPLEMENTATION. C99 and C++11 clean. libcurl only in the request part.
 * License: MIT or public domain, whichever you prefer (the full text is at the end of the file).
 *
 * ==== The method (D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive
 * ==== Revisions", section 3) =================================================================
 *
 * A preference pair should differ only where it matters. CLAIR builds such pairs from the model
 * you want to train (the "target"):
 *
 *   1. The target answers a prompt. That answer is the REJECTED response.
 *   2. A stronger model (the "reviser") is asked to revise that answer MINIMALLY: make it more
 *      correct, clearer and more engaging, copy every part it does not correct, and never say
 *      that it is a revision. It reasons first and gives the revised answer after a marker.
 *   3. The revision is the CHOSEN response.
 *
 * The paper measures how minimal pairs are with token-level Jaccard similarity (higher = more
 * minimal) and character-level Levenshtein distance (lower = more minimal). This header gives
 * you each step:
 *
 *   prompt   clair_request_body / clair_prompt_messages   (task, answer) -> chat request
 *   request  clair_http_run                                many requests in flight, retried
 *   parse    clair_parse_reply                             reply -> (rationale, revision)
 *   measure  clair_metrics_compute, clair_diff_tokens      how far apart are chosen/rejected
 *   filter   clair_filter_check                            keep, or drop with a reason code
 *
 * Strung together, they turn a JSONL file of {"prompt", "response"} records into TRL preference
 * records {"prompt", "chosen", "rejected"}.
 *
 * The steps need JSON, growable buffers and UTF-8; that part comes last, in an appendix, and is
 * a library of its own: a program that pastes clair.h gets a complete strict JSON reader/writer
 * too (clair_json_parse / clair_json_write).
 *
 * ==== Incantation ==========================================================================
 *
 * In exactly one C or C++ file:
 *
 *   ```c
 *   #define CLAIR_IMPLEMENTATION
 *   #include "clair.h"
 *   ```
 *
 * and link with -lcurl (or define CLAIR_NO_CURL too, see below). Everywhere else include the
 * header alone. Options (define before the include):
 *     CLAIR_STATIC    all functions static (private to the including file)
 *     CLAIR_NO_CURL   compile out the request part (clair_http_run): no libcurl needed
 *     CLAIR_MALLOC / CLAIR_REALLOC / CLAIR_FREE   your allocator (define all three)
 *
 * ==== A whole pair, by hand ===================================================================
 *
 * Build the request, send it however you like, then take the reply apart, measure the pair and
 * filter it (clair_http_run, below, does the sending for many pairs at once):
 *
 *   ```c
 *   #include <stdio.h>
 *   #include <string.h>
 *   #include "clair.h"
 *
 *   // reply: the body of the server's /chat/completions response to the request built here.
 *   // Returns 1 if the pair is kept, 0 if the filter drops it, -1 on an error.
 *   int example_one_pair(const char *prompt, const char *answer, const char *reply, size_t reply_len) {
 *       clair_buf body;
 *       clair_json json;
 *       clair_reply r;
 *       clair_metrics m;
 *       clair_filter f = clair_filter_default();
 *       const char *text;
 *       size_t text_len;
 *       char err[256];
 *       int kept = -1;
 *
 *       memset(&body, 0, sizeof body);                   // an empty buffer is all zeros
 *       clair_request_body(&body, "gpt-4o", 0.7, 4096, NULL, prompt, strlen(prompt), answer, strlen(answer));
 *       if (body.oom) return -1;
 *       // ... POST body.data (body.len bytes) to {base_url}/chat/completions ...
 *       clair_buf_free(&body);
 *
 *       if (clair_json_parse(reply, reply_len, &json, err, sizeof err)) {
 *           fprintf(stderr, "reply: %s\n", err);             // "line L, column C: what"
 *           return -1;
 *       }
 *       if (clair_chat_content(&json, &text, &text_len, err, sizeof err))
 *           fprintf(stderr, "reply: %s\n", err);
 *       else if (clair_parse_reply(text, text_len, clair_template_default()->marker, &r) != CLAIR_PARSE_OK)
 *           fprintf(stderr, "reply: no revision after the marker\n");
 *       else if (clair_metrics_compute(r.revision, r.revision_len, answer, strlen(answer), &m) == 0) {
 *           clair_verdict v = clair_filter_check(&f, r.revision, r.revision_len, answer, strlen(answer), &m);
 *           printf("%s: jaccard %.3f, levenshtein %lld\n", clair_verdict_name(v), m.jaccard, m.levenshtein);
 *           kept = v == CLAIR_KEEP;
 *       }
 *       clair_json_free(&json);                          // text and r point into json
 *       return kept;
 *   }
 *   ```
 *
 * To see what a reviser changed, render the token edit script:
 *
 *   ```c
 *   #include <stdio.h>
 *   #include <string.h>
 *   #include "clair.h"
 *
 *   // example_show_diff("The sun is a planet.", "The Sun is a star.") prints
 *   // "The [-sun-]{+Sun+} is a [-planet.-]{+star.+}"
 *   void example_show_diff(const char *rejected, const char *chosen) {
 *       clair_diff d;
 *       clair_buf out;
 *       memset(&out, 0, sizeof out);
 *       if (clair_diff_tokens(rejected, strlen(rejected), chosen, strlen(chosen), &d)) return;
 *       clair_diff_render(&out, rejected, chosen, &d);
 *       if (!out.oom && out.data) printf("%s\n", out.data);
 *       clair_buf_free(&out);
 *       clair_diff_free(&d);
 *   }
 *   ```
 *
 * ==== Many pairs at once: the request engine ================================================
 *
 * clair_http_run pulls jobs from your next() and hands each final outcome to your done(); it
 * keeps `concurrency` requests in flight and does the retrying. One thread, no locks. (This
 * example needs libcurl's headers: it uses the part that CLAIR_NO_CURL compiles out.)
 *
 *   ```c
 *   // needs curl
 *   #include <stdio.h>
 *   #include <stdlib.h>
 *   #include <string.h>
 *   #include "clair.h"
 *
 *   typedef struct { const char **prompts, **answers; size_t n, next; } my_work;
 *
 *   // 1 = here is a job, 0 = no more work.
 *   static int my_next(void *ctx, clair_job *job) {
 *       my_work *w = (my_work *)ctx;
 *       const char *prompt, *answer;
 *       clair_buf b;
 *       if (w->next == w->n) return 0;
 *       prompt = w->prompts[w->next];
 *       answer = w->answers[w->next];
 *       memset(&b, 0, sizeof b);
 *       clair_request_body(&b, "gpt-4o", 0.7, 4096, NULL, prompt, strlen(prompt), answer, strlen(answer));
 *       if (b.oom) { clair_buf_free(&b); return 0; }
 *       job->body = b.data;                              // the engine frees it (CLAIR_FREE)
 *       job->body_len = b.len;
 *       job->user = (void *)&w->answers[w->next++];      // whatever done() needs to know
 *       return 1;
 *   }
 *
 *   // Once per job, with its final outcome (after any retries).
 *   static void my_done(void *ctx, clair_job *job) {
 *       const char *answer = *(const char **)job->user;
 *       clair_reply r;
 *       (void)ctx;
 *       if (job->error != CLAIR_REQ_OK)
 *           fprintf(stderr, "%s after %d attempts: %s\n", clair_req_error_name(job->error),
 *                   job->attempts, job->message);
 *       else if (clair_parse_reply(job->content, job->content_len, clair_template_default()->marker, &r) == CLAIR_PARSE_OK)
 *           printf("chosen: %.*s\nrejected: %s\n", (int)r.revision_len, r.revision, answer);
 *   }
 *
 *   int example_revise_many(const char **prompts, const char **answers, size_t n) {
 *       my_work w;
 *       clair_http_opts o;
 *       char err[256];
 *       w.prompts = prompts; w.answers = answers; w.n = n; w.next = 0;
 *       memset(&o, 0, sizeof o);                         // zero fields take the defaults
 *       o.url = "https://api.openai.com/v1/chat/completions";
 *       o.api_key = getenv("OPENAI_API_KEY");
 *       o.concurrency = 16;
 *       if (clair_http_run(&o, my_next, my_done, &w, err, sizeof err)) {
 *           fprintf(stderr, "%s\n", err);
 *           return -1;
 *       }
 *       return 0;
 *   }
 *   ```
 *
 * The engine calls curl_global_init once, on first use (not thread-safe: call clair_http_run
 * from one thread at a time, or call curl_global_init yourself first).
 *
 * ==== JSON on its own ========================================================================
 *
 *   ```c
 *   #include <stdio.h>
 *   #include <string.h>
 *   #include "clair.h"
 *
 *   // Reads {"name": "...", "layers": N, ...} and prints it back compactly.
 *   int example_json(const char *text) {
 *       clair_json cfg;
 *       clair_buf out;
 *       const char *name;
 *       long long layers;
 *       char err[256];
 *       if (clair_json_parse(text, strlen(text), &cfg, err, sizeof err)) {
 *           fprintf(stderr, "config: %s\n", err);
 *           return -1;
 *       }
 *       name = clair_json_get_str(&cfg, "name");
 *       if (!name || clair_json_get_int(&cfg, "layers", &layers)) {
 *           fprintf(stderr, "config: needs a \"name\" string and an integer \"layers\"\n");
 *           clair_json_free(&cfg);
 *           return -1;
 *       }
 *       memset(&out, 0, sizeof out);
 *       clair_json_write(&out, &cfg);
 *       if (!out.oom) printf("%s, %lld layers: %s\n", name, layers, out.data);
 *       clair_buf_free(&out);
 *       clair_json_free(&cfg);
 *       return 0;
 *   }
 *   ```
 *
 * ==== Each part's contract (details at each declaration) =====================================
 *
 * Prompt. Our wording of the paper's instructions; replace it with your own clair_template
 *   ({prompt} and {answer} are filled in; the marker tells the parser what to look for).
 * Request. POSTs to an OpenAI-compatible /chat/completions with up to `concurrency` requests in
 *   flight, a per-attempt timeout, exponential backoff with jitter on 408/409/425/429/5xx,
 *   timeouts and connection errors, honouring Retry-After (capped, retry_after_max_s). TLS
 *   verification stays on. The API key goes only into the Authorization header, and is
 *   overwritten with '*' in every reply before a message or excerpt is made from it: a server
 *   that echoes the header cannot make it printed, logged or written.
 * Parse. Finds the first marker (yours, or the two forms the paper's reference code parses).
 *   No marker is an error (CLAIR_PARSE_NO_MARKER), never a silent skip.
 * Text. Every string is UTF-8 bytes plus a length; nothing needs a NUL. Metrics work on Unicode
 *   code points; invalid bytes count as one symbol each (Python's surrogateescape), so any input
 *   has a defined result and valid text gives exactly Python's numbers. "Whitespace" is
 *   Python's str.isspace() set.
 * Metrics. levenshtein: unit-cost character edit distance on code points (= rapidfuzz's
 *   Levenshtein.distance). edit_ratio = levenshtein / max(len_a, len_b) in code points
 *   (= rapidfuzz's normalized_distance). jaccard: |A & B| / |A | B| over the SETS of
 *   whitespace-separated tokens (= len(set(a.split()) & set(b.split())) / len(... | ...); the
 *   paper says "token-level" without naming a tokenizer, and whitespace splitting needs no
 *   model). Diff: a shortest token edit script, tokens being runs of whitespace or of other
 *   characters, rendered as [-deleted-]{+inserted+}.
 * Filter. Drops, in this order: empty revision, revision identical to the answer (ends
 *   trimmed), edit ratio above the maximum, Jaccard below the minimum, length ratio outside the
 *   bounds. Each drop has a stable reason code (clair_verdict_name). Why the defaults are what
 *   they are: at clair_filter_default.
 * JSON. Strict RFC 8259 reader (invalid UTF-8, lone surrogates, bad escapes, control characters,
 *   leading zeros, trailing commas/garbage and over-deep nesting are errors with line and column)
 *   and a compact writer whose output is always valid JSON and UTF-8, whatever bytes it is
 *   given (invalid sequences become U+FFFD, as Python's errors="replace" does). Numbers are parsed with strtod and printed with printf: keep the C
 *   locale's LC_NUMERIC (the default) in programs that use them. Also usable outside CLAIR.
 * Errors. Library functions never exit or print (except clair_http_run's optional retry lines);
 *   they return a status. Out of memory gives -1 / a NULL result, never a crash.
 *
 * ==== Changelog ===============================================================================
 *
 *   2026-11  The JSON writer replaces invalid UTF-8 with U+FFFD (its output is always valid);
 *            clair_utf8_cut, clair_redact, clair_chat_finish_reason, clair_chat_usage;
 *            clair_job.curl_code; the engine overwrites the API key wherever a reply echoes it,
 *            cuts excerpts on character boundaries, and takes a reply cut off by the token
 *            limit before any text ("length", no content) as a final, empty answer.
 *   2026-11  Reordered for reading: CLAIR first, JSON/buffers/UTF-8 in an appendix at the end;
 *            the examples are complete functions (compiled as C99 and C++11); license text at
 *            the end. No change to the API or to any result.
 */
#ifndef CLAIR_H
#define CLAIR_H

#include <stddef.h>

#ifdef CLAIR_STATIC
#if defined(__GNUC__) || defined(__clang__)
#define CLAIR_DEF static __attribute__((unused))   /* no warning for the parts a file does not use */
#else
#define CLAIR_DEF static
#endif
#else
#define CLAIR_DEF extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ============================================================================================
 * Two types that every part uses: a growable output buffer and a parsed JSON value. Their
 * functions are declared under "JSON, growable buffers, UTF-8", after the CLAIR parts.
 * ========================================================================================== */

/* A growable byte buffer for writing. Zero-initialise it. On allocation failure `oom` is set
 * and later writes are ignored; data is always NUL-terminated once anything was written. */
typedef struct { char *data; size_t len, cap; int oom; } clair_buf;

/* A parsed JSON value (clair_json_parse builds the tree; a server's reply arrives as one). */
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

/* ============================================================================================
 * Prompt: the reviser's instructions and the chat messages for one (task, answer) pair
 * ========================================================================================== */

typedef struct {
    const char *system;             /* system message (may be NULL: none) */
    const char *user;               /* user message; "{prompt}" and "{answer}" are replaced */
    const char *marker;             /* the line the reviser puts before its revision */
} clair_template;

CLAIR_DEF const clair_template *clair_template_default(void);
/* Appends the messages as a JSON array [{"role":"system",...},{"role":"user",...}]. */
CLAIR_DEF void clair_prompt_messages(clair_buf *out, const clair_template *t, const char *prompt,
                                     size_t np, const char *answer, size_t na);
/* Appends a whole /chat/completions request body. max_tokens <= 0 leaves it out. */
CLAIR_DEF void clair_request_body(clair_buf *out, const char *model, double temperature, int max_tokens,
                                  const clair_template *t, const char *prompt, size_t np,
                                  const char *answer, size_t na);

/* ============================================================================================
 * Parse: split a reviser's reply into rationale and revision
 * ========================================================================================== */

typedef enum { CLAIR_PARSE_OK = 0, CLAIR_PARSE_NO_MARKER, CLAIR_PARSE_EMPTY } clair_parse_status;
typedef struct {
    const char *rationale; size_t rationale_len;   /* spans into the reply, ends trimmed */
    const char *revision; size_t revision_len;
    size_t marker_off;                             /* byte offset of the marker found */
} clair_reply;
/* Finds the first marker in the reply: `marker` (may be NULL) or one of the paper's reference
 * forms, "{corrected_student_solution}" and "Corrected Student Solution:". A phrase marker counts
 * at the start of a line, in any letter case, decorated or not (## heading, **bold**, *italic*,
 * with or without a colon, the colon inside or outside the bold); without a colon the line must
 * end after it. A leading reasoning heading ("Reasoning:", "{teacher_reasoning}", ...) is cut
 * from the rationale. */
CLAIR_DEF clair_parse_status clair_parse_reply(const char *reply, size_t n, const char *marker, clair_reply *out);
CLAIR_DEF const char *clair_parse_status_name(clair_parse_status s);   /* "ok", "no_marker", "empty_revision" */

/* Extracts choices[0].message.content of a /chat/completions reply into *content (a view into
 * the tree). 0 on success, -1 with a reason in err. */
CLAIR_DEF int clair_chat_content(const clair_json *reply, const char **content, size_t *len, char *err, size_t errsz);
/* choices[0].finish_reason of a reply ("stop", "length": cut off by the token limit, ...), or
 * NULL if absent. */
CLAIR_DEF const char *clair_chat_finish_reason(const clair_json *reply);
/* The reply's token counts (usage.prompt_tokens, usage.completion_tokens); a count the server
 * did not report is 0. Returns 1 if the reply had a "usage" object, 0 if not. */
CLAIR_DEF int clair_chat_usage(const clair_json *reply, long long *prompt_tokens, long long *completion_tokens);

/* ============================================================================================
 * Text: UTF-8 decoding and the whitespace rule shared by every metric
 * ========================================================================================== */

/* Decodes s[0..n) into code points; out must have room for n entries. Returns the count.
 * Invalid bytes decode one by one to 0xDC00 + byte (Python's "surrogateescape"), so every input
 * has a defined metric and valid UTF-8 matches Python `str` exactly. */
CLAIR_DEF size_t clair_utf8_decode(const char *s, size_t n, unsigned *out);
/* 1 if code point c is whitespace by Python's str.isspace() (the rule of str.split()). */
CLAIR_DEF int clair_is_space(unsigned c);

/* ============================================================================================
 * Metrics: how minimal is the contrast between two answers?
 * ========================================================================================== */

/* Character Levenshtein distance (unit insert/delete/substitute) over Unicode code points, the
 * same number as rapidfuzz.distance.Levenshtein.distance(a, b) on Python strings. Bit-parallel
 * (Myers 1999, 64-row blocks), banded: O(ceil(d/64) * n) words when the distance d is small,
 * at most ~1.3 full O(ceil(m/64) * n) sweeps otherwise, after stripping the common prefix and
 * suffix. Returns -1 only if memory runs out. */
CLAIR_DEF long long clair_levenshtein(const char *a, size_t na, const char *b, size_t nb);
CLAIR_DEF long long clair_levenshtein_u32(const unsigned *a, size_t na, const unsigned *b, size_t nb);

/* Token-level Jaccard similarity |A & B| / |A | B| of the two SETS of whitespace-separated
 * tokens (Python: set(a.split()), set(b.split())). Two texts without tokens give 1.
 * Returns -1 only if memory runs out. */
CLAIR_DEF double clair_jaccard(const char *a, size_t na, const char *b, size_t nb);

/* Token edit script. Tokens are maximal runs of whitespace or of non-whitespace, so the script
 * covers every byte and renders the texts exactly. The script is a shortest one (Myers' O(ND)
 * algorithm in linear space): n_del + n_ins = |A| + |B| - 2 LCS(A, B) tokens. Within each run of
 * changes deletions come first. Spans are byte offsets into the two texts. */
typedef enum { CLAIR_EDIT_EQUAL, CLAIR_EDIT_DELETE, CLAIR_EDIT_INSERT } clair_edit_op;
typedef struct { clair_edit_op op; size_t a_off, a_len, b_off, b_len; } clair_edit;
typedef struct {
    clair_edit *ops; size_t n;      /* the script, in text order */
    size_t tokens_a, tokens_b;      /* token counts of the two texts */
    size_t n_del, n_ins;            /* deleted tokens of a, inserted tokens of b */
} clair_diff;
CLAIR_DEF int clair_diff_tokens(const char *a, size_t na, const char *b, size_t nb, clair_diff *d);
CLAIR_DEF void clair_diff_free(clair_diff *d);
/* Appends the script for a person: equal text as is, [-deleted-] and {+inserted+}. */
CLAIR_DEF void clair_diff_render(clair_buf *out, const char *a, const char *b, const clair_diff *d);

/* Everything at once for a pair; the filter reads a = chosen (the revision), b = rejected. */
typedef struct {
    long long levenshtein;          /* code-point edit distance */
    size_t chars_a, chars_b;        /* lengths in code points */
    double edit_ratio;              /* levenshtein / max(chars_a, chars_b); 0 if both empty */
    double jaccard;                 /* token-set Jaccard (see clair_jaccard) */
    size_t token_edits;             /* n_del + n_ins of the token edit script */
    size_t tokens_a, tokens_b;      /* whitespace-or-word run counts (the diff's tokens) */
} clair_metrics;
CLAIR_DEF int clair_metrics_compute(const char *a, size_t na, const char *b, size_t nb, clair_metrics *m);

/* ============================================================================================
 * Filter: keep a pair only if the revision is a real, minimal revision
 * ========================================================================================== */

typedef struct {
    double max_edit_ratio;          /* drop if edit_ratio > this */
    double min_jaccard;             /* drop if jaccard < this */
    double min_length_ratio;        /* drop if chars(chosen) / chars(rejected) < this */
    double max_length_ratio;        /* drop if chars(chosen) / chars(rejected) > this */
} clair_filter;                     /* a field <= 0 switches its check off ({0} keeps every real revision) */

typedef enum {
    CLAIR_KEEP = 0,
    CLAIR_DROP_EMPTY,               /* "empty_revision": nothing after the marker */
    CLAIR_DROP_IDENTICAL,           /* "identical": revision equals the answer (ends trimmed) */
    CLAIR_DROP_EDIT_RATIO,          /* "edit_ratio": too many characters changed */
    CLAIR_DROP_JACCARD,             /* "jaccard": too few words shared */
    CLAIR_DROP_LENGTH_RATIO         /* "length_ratio": revision much shorter or longer */
} clair_verdict;

/* The recommended defaults: max_edit_ratio 0.6, min_jaccard 0.25, length ratio in [0.5, 2].
 * Why these: measured on English texts (5th-95th percentile), two unrelated texts of equal
 * length have edit ratio 0.78-0.87 and Jaccard 0.03-0.13, while one text with 30% of its words
 * edited has edit ratio 0.19-0.30 and Jaccard 0.80-0.94. The defaults sit in that wide gap, so
 * they drop a reviser that rewrote the answer from scratch (then the pair contrasts everywhere,
 * the failure CLAIR exists to avoid) and keep heavy but real revisions. The length bounds catch
 * a revision that truncates the answer or pads it. Tighten them for your data, or switch a check
 * off (<= 0). */
CLAIR_DEF clair_filter clair_filter_default(void);
CLAIR_DEF clair_verdict clair_filter_check(const clair_filter *f, const char *chosen, size_t nc,
                                           const char *rejected, size_t nr, const clair_metrics *m);
CLAIR_DEF const char *clair_verdict_name(clair_verdict v);

#ifndef CLAIR_NO_CURL
/* ============================================================================================
 * Request: many /chat/completions calls in flight at once (libcurl multi)
 * ========================================================================================== */

typedef enum {
    CLAIR_REQ_OK = 0,
    CLAIR_REQ_HTTP,          /* a non-2xx status (final: not retryable, or retries used up) */
    CLAIR_REQ_TIMEOUT,       /* the per-attempt timeout expired */
    CLAIR_REQ_CONNECTION,    /* could not connect / connection dropped / nothing received */
    CLAIR_REQ_BAD_REPLY,     /* 2xx with a body that is not a chat completion */
    CLAIR_REQ_TLS,           /* certificate or TLS failure (never retried) */
    CLAIR_REQ_OTHER          /* anything else libcurl reports */
} clair_req_error;

typedef struct {
    /* Set by the next() callback: */
    char *body; size_t body_len;    /* request body; the engine frees it with CLAIR_FREE */
    void *user;                     /* yours */
    /* Set by the engine before done(): */
    clair_req_error error;
    long status;                    /* last HTTP status (0: no reply) */
    int curl_code;                  /* libcurl's CURLcode of the last attempt (0: CURLE_OK) */
    int attempts;                   /* attempts made (1 = no retry) */
    char message[256];              /* what went wrong, for a person (never holds the key) */
    char *reply; size_t reply_len;  /* raw body of the last reply (NUL-terminated), the API key
                                       overwritten with '*' wherever the server echoed it */
    const char *content; size_t content_len;   /* OK: the assistant's text (inside reply_json);
                                                  "" for a reply cut off ("length") before any */
    clair_json reply_json;          /* OK: the parsed reply */
} clair_job;

typedef struct {
    const char *url;                /* full URL, e.g. "http://127.0.0.1:8080/v1/chat/completions" */
    const char *api_key;            /* sent as "Authorization: Bearer ..."; NULL: no header */
    int concurrency;                /* requests in flight (default 8) */
    double timeout_s;               /* per attempt, whole transfer (default 600) */
    double connect_timeout_s;       /* default 30 */
    int max_attempts;               /* default 6 (1 = no retries) */
    double backoff_s;               /* first retry waits about this (default 1); doubles */
    double backoff_max_s;           /* cap of the doubling (default 60) */
    double retry_after_max_s;       /* cap on a server's Retry-After (default 300) */
    unsigned long long seed;        /* jitter RNG seed (0: from the clock) */
    volatile int *stop;             /* if set and *stop becomes nonzero: no new requests,
                                       in-flight ones abandoned (done() not called for them) */
    void (*tick)(void *ctx);        /* called about twice a second (may be NULL) */
    int verbose_retries;            /* 1: one stderr line per retry */
} clair_http_opts;

/* next(ctx, job): fill job->body (and job->user); return 1, or 0 when there is no more work.
 * done(ctx, job): one call per job, with its final outcome; the engine frees the job after.
 * Returns 0, or -1 (with err) if libcurl could not be set up. */
typedef int (*clair_next_fn)(void *ctx, clair_job *job);
typedef void (*clair_done_fn)(void *ctx, clair_job *job);
CLAIR_DEF int clair_http_run(const clair_http_opts *o, clair_next_fn next, clair_done_fn done,
                             void *ctx, char *err, size_t errsz);
CLAIR_DEF const char *clair_req_error_name(clair_req_error e);
/* Retry wait for attempt k (1-based) that just failed: min(max, base * 2^(k-1)) scaled by a
 * uniform factor in [0.5, 1) ("equal jitter"); a Retry-After (>= 0) replaces it (capped). */
CLAIR_DEF double clair_backoff_s(const clair_http_opts *o, int attempt, double retry_after_s, unsigned long long *rng);
#endif /* CLAIR_NO_CURL */

/* ============================================================================================
 * JSON, growable buffers, UTF-8 (implemented in the appendix at the end of the file)
 *
 * A small strict reader and writer (RFC 8259). CLAIR uses it for request bodies, server
 * replies and JSONL records, but it is complete on its own: a program that pastes clair.h gets
 * a strict JSON reader/writer too, for any file.
 *
 * clair_json_parse builds a tree; every string is UTF-8 and NUL-terminated (len excludes the
 * NUL; a "\u0000" escape makes an embedded NUL, so use len). Invalid UTF-8, lone surrogates,
 * control characters in strings, bad escapes, trailing commas, leading zeros, NaN/Infinity,
 * numbers beyond a double's range (1e400; tiny ones round to 0 as strtod does), trailing garbage
 * and nesting deeper than CLAIR_JSON_MAX_DEPTH are errors. The error message
 * says "line L, column C: what".
 * ========================================================================================== */

#define CLAIR_JSON_MAX_DEPTH 512

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

CLAIR_DEF void clair_buf_put(clair_buf *b, const char *s, size_t n);
CLAIR_DEF void clair_buf_puts(clair_buf *b, const char *s);
CLAIR_DEF void clair_buf_printf(clair_buf *b, const char *fmt, ...);
CLAIR_DEF void clair_buf_free(clair_buf *b);
/* Writes s[0..n) as a quoted JSON string: escapes ", \ and control characters, keeps valid
 * UTF-8, and replaces each invalid sequence with U+FFFD (as Python's errors="replace" and
 * Hugging Face's decoders do), so the output is always valid JSON and valid UTF-8 whatever the
 * bytes: a server's text or a model's sampled bytes can be written as they come. */
CLAIR_DEF void clair_json_write_string(clair_buf *b, const char *s, size_t n);
/* Writes a number: integers exactly, others with 17 significant digits; NaN/Inf as null. */
CLAIR_DEF void clair_json_write_number(clair_buf *b, double x);
/* Writes a whole tree compactly (no spaces), keys in stored order. */
CLAIR_DEF void clair_json_write(clair_buf *b, const clair_json *v);

/* Validates UTF-8 (no overlongs, no surrogates, <= U+10FFFF). Returns the byte offset of the
 * first invalid sequence, or len if all valid. */
CLAIR_DEF size_t clair_utf8_check(const char *s, size_t len);
/* The longest prefix of s[0..n) of at most max bytes that does not cut a character in two
 * (an invalid byte counts as a character of its own): the length of an excerpt. */
CLAIR_DEF size_t clair_utf8_cut(const char *s, size_t n, size_t max);
/* Overwrites every occurrence of secret (a NUL-terminated string, e.g. an API key) in s[0..n)
 * with '*' bytes; returns how many were found. NULL or "" does nothing. */
CLAIR_DEF size_t clair_redact(char *s, size_t n, const char *secret);

#ifdef __cplusplus
}
#endif
#endif /* CLAIR_H */

/* ============================================================================================
 * Implementation, in the order of the declarations: prompt, parse, text and metrics, filter,
 * request engine; then the appendix with JSON, growable buffers and UTF-8.
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

/* Defined in the appendix (UTF-8); the metrics decode text with it. */
static size_t clair__utf8_seq(const unsigned char *s, size_t n);
/* ============================================================================================
 * Prompt
 * ========================================================================================== */

/* Our own wording of the paper's reviser instructions: a teacher minimally improves a student's
 * answer (more correct, clearer, more engaging), copies what it does not correct, never calls the
 * result a revision, reasons first and gives the revision last, after the marker line. */
static const clair_template clair__default_template = {
    "You are a meticulous teacher. You improve a student's answer with the smallest changes that "
    "make it better, and you leave everything else exactly as the student wrote it.",

    "A student was given the task below and wrote the answer that follows it.\n"
    "\n"
    "Improve the answer minimally. Make it more correct, clearer and more engaging, but change only "
    "what needs changing: copy every part you do not correct word for word, keeping its formatting. "
    "The improved answer must read as a direct answer to the task: never mention the student, a "
    "teacher, a revision, a correction or an improvement in it.\n"
    "\n"
    "First, reason step by step about what is wrong or weak in the answer and how to fix it. Then "
    "write a line containing only \"Revised answer:\" and after it the complete improved answer, with "
    "nothing after the answer.\n"
    "\n"
    "<task>\n{prompt}\n</task>\n"
    "\n"
    "<student_answer>\n{answer}\n</student_answer>",

    "Revised answer:"
};

CLAIR_DEF const clair_template *clair_template_default(void) { return &clair__default_template; }

/* Appends the user template with {prompt} and {answer} replaced, as raw text. */
static void clair__fill(clair_buf *b, const char *tpl, const char *prompt, size_t np, const char *answer, size_t na) {
    const char *s = tpl;
    while (*s) {
        const char *p = strchr(s, '{');
        if (!p) { clair_buf_puts(b, s); break; }
        clair_buf_put(b, s, (size_t)(p - s));
        if (!strncmp(p, "{prompt}", 8)) { clair_buf_put(b, prompt, np); s = p + 8; }
        else if (!strncmp(p, "{answer}", 8)) { clair_buf_put(b, answer, na); s = p + 8; }
        else { clair_buf_put(b, "{", 1); s = p + 1; }
    }
}

CLAIR_DEF void clair_prompt_messages(clair_buf *out, const clair_template *t, const char *prompt,
                                     size_t np, const char *answer, size_t na) {
    clair_buf u;
    memset(&u, 0, sizeof u);
    if (!t) t = &clair__default_template;
    clair_buf_puts(out, "[");
    if (t->system && t->system[0]) {
        clair_buf_puts(out, "{\"role\":\"system\",\"content\":");
        clair_json_write_string(out, t->system, strlen(t->system));
        clair_buf_puts(out, "},");
    }
    clair__fill(&u, t->user ? t->user : clair__default_template.user, prompt, np, answer, na);
    if (u.oom) out->oom = 1;
    clair_buf_puts(out, "{\"role\":\"user\",\"content\":");
    clair_json_write_string(out, u.data ? u.data : "", u.len);
    clair_buf_puts(out, "}]");
    clair_buf_free(&u);
}

CLAIR_DEF void clair_request_body(clair_buf *out, const char *model, double temperature, int max_tokens,
                                  const clair_template *t, const char *prompt, size_t np,
                                  const char *answer, size_t na) {
    clair_buf_puts(out, "{\"model\":");
    clair_json_write_string(out, model, strlen(model));
    clair_buf_puts(out, ",\"messages\":");
    clair_prompt_messages(out, t, prompt, np, answer, na);
    clair_buf_puts(out, ",\"temperature\":");
    clair_json_write_number(out, temperature);
    if (max_tokens > 0) clair_buf_printf(out, ",\"max_tokens\":%d", max_tokens);
    clair_buf_puts(out, ",\"stream\":false}");
}

/* ============================================================================================
 * Parse
 * ========================================================================================== */

static int clair__lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* Case-insensitive (ASCII) compare of s[0..n) with the phrase; '_' in either matches ' '. */
static int clair__phrase_at(const char *s, size_t n, const char *ph, size_t pn) {
    size_t i;
    if (n < pn) return 0;
    for (i = 0; i < pn; i++) {
        int x = clair__lower((unsigned char)s[i]), y = clair__lower((unsigned char)ph[i]);
        if (x == '_') x = ' ';
        if (y == '_') y = ' ';
        if (x != y) return 0;
    }
    return 1;
}

/* Does a marker line for phrase ph start at line start `ls`? On success *body is where the text
 * after the marker begins. */
static int clair__marker_line(const char *s, size_t n, size_t ls, const char *ph, size_t pn, size_t *body) {
    size_t p = ls, q;
    int colon = 0;
    while (p < n && s[p] && strchr("#*_> \t", s[p])) p++;
    if (!clair__phrase_at(s + p, n - p, ph, pn)) return 0;
    q = p + pn;
    while (q < n && (s[q] == '*' || s[q] == '_')) q++;
    if (q < n && s[q] == ':') { colon = 1; q++; }
    while (q < n && (s[q] == '*' || s[q] == '_')) q++;
    while (q < n && (s[q] == ' ' || s[q] == '\t')) q++;
    if (!colon && q < n && s[q] != '\n' && s[q] != '\r') return 0;
    *body = q;
    return 1;
}

/* The phrase of a marker: decoration and a trailing colon removed ("**Revised answer:**" ->
 * "Revised answer"). */
static void clair__marker_phrase(const char *m, const char **ph, size_t *pn) {
    size_t n = strlen(m);
    while (n && strchr("#*_> \t", *m)) { m++; n--; }
    while (n && strchr(":*_ \t\r\n", m[n - 1])) n--;
    *ph = m; *pn = n;
}

static void clair__trim_ws(const char *s, size_t *b, size_t *e) {
    while (*b < *e && (s[*b] == ' ' || s[*b] == '\t' || s[*b] == '\r' || s[*b] == '\n')) (*b)++;
    while (*e > *b && (s[*e - 1] == ' ' || s[*e - 1] == '\t' || s[*e - 1] == '\r' || s[*e - 1] == '\n')) (*e)--;
}

CLAIR_DEF clair_parse_status clair_parse_reply(const char *s, size_t n, const char *marker, clair_reply *out) {
    static const char brace[] = "{corrected_student_solution}";
    static const char *const reasoning[] = { "{teacher_reasoning}", "teacher reasoning", "teacher's reasoning",
                                             "reasoning", "rationale", "analysis" };
    const char *ph[2];
    size_t pn[2], nph = 0, ls, best = (size_t)-1, best_body = 0, i, k;
    memset(out, 0, sizeof *out);
    if (marker && marker[0]) { clair__marker_phrase(marker, &ph[nph], &pn[nph]); if (pn[nph]) nph++; }
    ph[nph] = "corrected student solution"; pn[nph] = strlen(ph[nph]); nph++;
    /* the reference code's brace form counts anywhere in the text */
    for (i = 0; i + sizeof brace - 1 <= n; i++)
        if (s[i] == '{' && clair__phrase_at(s + i, n - i, brace, sizeof brace - 1)) {
            best = i; best_body = i + sizeof brace - 1;
            if (best_body < n && s[best_body] == ':') best_body++;
            break;
        }
    /* phrase markers at line starts, before the brace form if both */
    for (ls = 0; ls < n && ls < best; ) {
        for (k = 0; k < nph; k++) {
            size_t body;
            if (clair__marker_line(s, n, ls, ph[k], pn[k], &body)) { best = ls; best_body = body; break; }
        }
        if (best == ls) break;
        while (ls < n && s[ls] != '\n') ls++;
        ls++;
    }
    if (best == (size_t)-1) return CLAIR_PARSE_NO_MARKER;
    {
        size_t rb = 0, re = best, vb = best_body, ve = n;
        clair__trim_ws(s, &rb, &re);
        for (k = 0; k < sizeof reasoning / sizeof reasoning[0]; k++) {
            size_t body;
            const char *r = reasoning[k];
            if (r[0] == '{') {
                if (clair__phrase_at(s + rb, re - rb, r, strlen(r))) {
                    rb += strlen(r);
                    if (rb < re && s[rb] == ':') rb++;
                    break;
                }
            } else if (clair__marker_line(s, re, rb, r, strlen(r), &body)) { rb = body; break; }
        }
        clair__trim_ws(s, &rb, &re);
        clair__trim_ws(s, &vb, &ve);
        out->rationale = s + rb; out->rationale_len = re - rb;
        out->revision = s + vb; out->revision_len = ve - vb;
        out->marker_off = best;
        return ve == vb ? CLAIR_PARSE_EMPTY : CLAIR_PARSE_OK;
    }
}

CLAIR_DEF const char *clair_parse_status_name(clair_parse_status st) {
    switch (st) {
    case CLAIR_PARSE_OK: return "ok";
    case CLAIR_PARSE_NO_MARKER: return "no_marker";
    case CLAIR_PARSE_EMPTY: return "empty_revision";
    }
    return "?";
}

CLAIR_DEF int clair_chat_content(const clair_json *reply, const char **content, size_t *len, char *err, size_t errsz) {
    const clair_json *ch, *msg, *c, *e;
    if (!reply || reply->type != CLAIR_JSON_OBJECT) { snprintf(err, errsz, "reply is not a JSON object"); return -1; }
    e = clair_json_get(reply, "error");
    if (e && e->type != CLAIR_JSON_NULL) {
        const char *m = e->type == CLAIR_JSON_STRING ? e->str : clair_json_get_str(e, "message");
        if (!m) m = "(no message)";
        snprintf(err, errsz, "server error: %.*s", (int)clair_utf8_cut(m, strlen(m), 200), m);
        return -1;
    }
    ch = clair_json_get(reply, "choices");
    if (!ch || ch->type != CLAIR_JSON_ARRAY || ch->n == 0) { snprintf(err, errsz, "reply has no \"choices\""); return -1; }
    msg = clair_json_get(&ch->items[0], "message");
    c = clair_json_get(msg, "content");
    if (!c || c->type != CLAIR_JSON_STRING) { snprintf(err, errsz, "reply has no choices[0].message.content string"); return -1; }
    *content = c->str; *len = c->len;
    return 0;
}

CLAIR_DEF const char *clair_chat_finish_reason(const clair_json *reply) {
    const clair_json *ch = clair_json_get(reply, "choices");
    if (!ch || ch->type != CLAIR_JSON_ARRAY || ch->n == 0) return NULL;
    return clair_json_get_str(&ch->items[0], "finish_reason");
}

CLAIR_DEF int clair_chat_usage(const clair_json *reply, long long *prompt_tokens, long long *completion_tokens) {
    const clair_json *u = clair_json_get(reply, "usage");
    *prompt_tokens = *completion_tokens = 0;
    if (!u || u->type != CLAIR_JSON_OBJECT) return 0;
    if (clair_json_get_int(u, "prompt_tokens", prompt_tokens) || *prompt_tokens < 0) *prompt_tokens = 0;
    if (clair_json_get_int(u, "completion_tokens", completion_tokens) || *completion_tokens < 0) *completion_tokens = 0;
    return 1;
}

/* ============================================================================================
 * Text
 * ========================================================================================== */

CLAIR_DEF size_t clair_utf8_decode(const char *s, size_t n, unsigned *out) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, k = 0;
    while (i < n) {
        unsigned c = u[i];
        if (c < 0x80) { out[k++] = c; i++; continue; }
        size_t len = clair__utf8_seq(u + i, n - i);
        if (!len) { out[k++] = 0xDC00 + c; i++; continue; }   /* surrogateescape */
        if (len == 2) c = ((c & 0x1Fu) << 6) | (u[i + 1] & 0x3Fu);
        else if (len == 3) c = ((c & 0x0Fu) << 12) | ((u[i + 1] & 0x3Fu) << 6) | (u[i + 2] & 0x3Fu);
        else c = ((c & 0x07u) << 18) | ((u[i + 1] & 0x3Fu) << 12) | ((u[i + 2] & 0x3Fu) << 6) | (u[i + 3] & 0x3Fu);
        out[k++] = c;
        i += len;
    }
    return k;
}

CLAIR_DEF int clair_is_space(unsigned c) {
    if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* The code point at s[i] (or the escaped byte) and its byte length. */
static unsigned clair__cp_at(const char *s, size_t n, size_t i, size_t *len) {
    unsigned c;
    if ((unsigned char)s[i] < 0x80) { *len = 1; return (unsigned char)s[i]; }
    *len = clair__utf8_seq((const unsigned char *)s + i, n - i);
    if (!*len) { *len = 1; return 0xDC00 + (unsigned char)s[i]; }
    clair_utf8_decode(s + i, *len, &c);
    return c;
}

/* A token: bytes [off, off+len) of its text, a 64-bit hash (FNV-1a), and whether it is space. */
typedef struct { size_t off, len; unsigned long long hash; int space; } clair__tok;

/* Splits s into tokens. words_only: only the non-space runs (str.split()); otherwise the runs of
 * space too. Returns the count (tokens in *out, malloc'd), or (size_t)-1 out of memory. */
static size_t clair__tokenize(const char *s, size_t n, int words_only, clair__tok **out) {
    size_t cap = 16, cnt = 0, i = 0;
    clair__tok *t = (clair__tok *)CLAIR_MALLOC(cap * sizeof *t);
    if (!t) return (size_t)-1;
    while (i < n) {
        size_t st = i, len;
        int sp = clair_is_space(clair__cp_at(s, n, i, &len));
        i += len;
        while (i < n) {
            size_t l2;
            if (clair_is_space(clair__cp_at(s, n, i, &l2)) != sp) break;
            i += l2;
        }
        if (words_only && sp) continue;
        if (cnt == cap) {
            clair__tok *nt = (clair__tok *)CLAIR_REALLOC(t, 2 * cap * sizeof *t);
            if (!nt) { CLAIR_FREE(t); return (size_t)-1; }
            t = nt; cap *= 2;
        }
        unsigned long long h = 1469598103934665603ULL;
        size_t k;
        for (k = st; k < i; k++) { h ^= (unsigned char)s[k]; h *= 1099511628211ULL; }
        t[cnt].off = st; t[cnt].len = i - st; t[cnt].hash = h; t[cnt].space = sp;
        cnt++;
    }
    *out = t;
    return cnt;
}

/* ============================================================================================
 * Levenshtein, bit-parallel
 *
 * Myers (1999) keeps one column of the DP matrix as two bit vectors of vertical deltas (+1, -1;
 * zero otherwise) over the pattern's rows and advances a whole column per text character with a
 * handful of word operations. Patterns longer than 64 are cut into 64-row blocks; a block passes
 * the horizontal delta of its last row to the next block (Myers' advanceBlock). The distance is
 * tracked at the last row: it starts at m and moves by the last block's horizontal delta.
 * ========================================================================================== */

typedef unsigned long long clair__u64;

/* Pattern a[0..m) as match bits: hash of its distinct code points -> row of `words` words. */
typedef struct {
    size_t m, words, cap, nuniq;
    unsigned *hkey; long *hval;        /* open addressing, cap slots */
    clair__u64 *peq;                   /* (nuniq + 1) x words; the last row is all zero */
    clair__u64 *P, *M;                 /* words: the column's vertical +1 / -1 bits */
} clair__lev;

static const clair__u64 *clair__lev_eq(const clair__lev *L, unsigned c) {
    size_t h = (size_t)((c * 2654435761u) & (L->cap - 1));
    while (L->hval[h] >= 0 && L->hkey[h] != c) h = (h + 1) & (L->cap - 1);
    return L->peq + (size_t)(L->hval[h] >= 0 ? L->hval[h] : (long)L->nuniq) * L->words;
}

/* One sweep over the text b[0..n) computing only the rows a path of cost <= k can touch:
 * at column j, rows [j-k-1, j-(n-m)+k] (cost >= |i-j| and >= the length gap left), rounded out
 * to whole blocks. Rows above the band are fed in as "+1 to the right" (an overestimate), new
 * blocks below start as "+1 downwards" (also an overestimate), so every computed value is >= the
 * true one, and along an optimal path of cost <= k it is exact. Returns the computed distance:
 * exact if <= k, otherwise only known to be > k. k >= n covers every row (the plain algorithm). */
static long long clair__lev_sweep(clair__lev *L, const unsigned *b, size_t n, long long k) {
    const size_t m = L->m, words = L->words;
    const int lastsh = (int)((m - 1) % 64);        /* the pattern's last row, in its block */
    long long bottom = 0;                          /* value at the last active block's last row */
    long cur_last = -1;                            /* blocks [0, cur_last] have been started */
    size_t j, w;
    for (j = 1; j <= n; j++) {
        long long lo = (long long)j - k - 1, hi = (long long)j - (long long)(n - m) + k;
        if (lo < 1) lo = 1;
        if (hi > (long long)m) hi = (long long)m;
        size_t first = (size_t)(lo - 1) / 64, last = (size_t)(hi - 1) / 64;
        while ((long)last > cur_last) {            /* start a block: column j-1 rises by 1 per row */
            cur_last++;
            L->P[cur_last] = ~0ULL; L->M[cur_last] = 0;
            bottom += (size_t)cur_last + 1 == words ? (long long)(m - 64 * (size_t)cur_last) : 64;
        }
        const clair__u64 *eq = clair__lev_eq(L, b[j - 1]);
        /* Horizontal delta entering the first block's top row: +1 (exact at the DP's row 0,
         * an overestimate above the band), then what each block passes down. Two 0/1 words,
         * hp (+1) and hn (-1), so the loop has no branches (Myers 1999's advanceBlock). */
        clair__u64 hp = 1, hn = 0;
        for (w = first; w <= last; w++) {
            clair__u64 Pv = L->P[w], Mv = L->M[w], Eq = eq[w];
            clair__u64 Xv = Eq | Mv;
            Eq |= hn;
            clair__u64 Xh = (((Eq & Pv) + Pv) ^ Pv) | Eq;
            clair__u64 Ph = Mv | ~(Xh | Pv);
            clair__u64 Mh = Pv & Xh;
            int sh = w + 1 == words ? lastsh : 63;
            clair__u64 hpo = (Ph >> sh) & 1, hno = (Mh >> sh) & 1;
            Ph = (Ph << 1) | hp;
            Mh = (Mh << 1) | hn;
            L->P[w] = Mh | ~(Xv | Ph);
            L->M[w] = Ph & Xv;
            hp = hpo; hn = hno;
        }
        bottom += (long long)hp - (long long)hn;
    }
    return bottom;                                 /* at j = n the last block is the final one */
}

CLAIR_DEF long long clair_levenshtein_u32(const unsigned *a, size_t na, const unsigned *b, size_t nb) {
    /* common prefix and suffix never change the distance */
    while (na && nb && a[0] == b[0]) { a++; b++; na--; nb--; }
    while (na && nb && a[na - 1] == b[nb - 1]) { na--; nb--; }
    if (na > nb) { const unsigned *t = a; a = b; b = t; size_t tn = na; na = nb; nb = tn; }
    if (na == 0) return (long long)nb;
    /* a is the pattern (the shorter). Map its distinct code points to rows of Peq. */
    clair__lev L;
    size_t i, m = na, n = nb;
    long *row = NULL;
    long long dist = -1, k;
    memset(&L, 0, sizeof L);
    L.m = m; L.words = (m + 63) / 64; L.cap = 16;
    while (L.cap < 2 * m) L.cap *= 2;
    L.hkey = (unsigned *)CLAIR_MALLOC(L.cap * sizeof *L.hkey);
    L.hval = (long *)CLAIR_MALLOC(L.cap * sizeof *L.hval);
    row = (long *)CLAIR_MALLOC(m * sizeof *row);
    if (!L.hkey || !L.hval || !row) goto done;
    for (i = 0; i < L.cap; i++) L.hval[i] = -1;
    for (i = 0; i < m; i++) {
        size_t h = (size_t)((a[i] * 2654435761u) & (L.cap - 1));
        while (L.hval[h] >= 0 && L.hkey[h] != a[i]) h = (h + 1) & (L.cap - 1);
        if (L.hval[h] < 0) { L.hkey[h] = a[i]; L.hval[h] = (long)L.nuniq++; }
        row[i] = L.hval[h];
    }
    L.peq = (clair__u64 *)calloc((L.nuniq + 1) * L.words, sizeof *L.peq);
    L.P = (clair__u64 *)CLAIR_MALLOC(L.words * sizeof *L.P);
    L.M = (clair__u64 *)CLAIR_MALLOC(L.words * sizeof *L.M);
    if (!L.peq || !L.P || !L.M) goto done;
    for (i = 0; i < m; i++) L.peq[(size_t)row[i] * L.words + i / 64] |= 1ULL << (i % 64);
    /* Try a narrow band first (minimal revisions are close). If the result does not fit in it,
     * it is still an upper bound on the distance (computed values never go below the true
     * ones), so a second sweep with that band is exact: at most two sweeps. */
    k = (long long)(n - m) + 64;
    dist = clair__lev_sweep(&L, b, n, k < (long long)n ? k : (long long)n);
    if (dist > k && k < (long long)n) dist = clair__lev_sweep(&L, b, n, dist < (long long)n ? dist : (long long)n);
done:
    CLAIR_FREE(L.hkey); CLAIR_FREE(L.hval); CLAIR_FREE(row);
    free(L.peq); CLAIR_FREE(L.P); CLAIR_FREE(L.M);
    return dist;
}

CLAIR_DEF long long clair_levenshtein(const char *a, size_t na, const char *b, size_t nb) {
    unsigned *ua = (unsigned *)CLAIR_MALLOC((na + 1) * sizeof *ua);
    unsigned *ub = (unsigned *)CLAIR_MALLOC((nb + 1) * sizeof *ub);
    long long d = -1;
    if (ua && ub) d = clair_levenshtein_u32(ua, clair_utf8_decode(a, na, ua), ub, clair_utf8_decode(b, nb, ub));
    CLAIR_FREE(ua); CLAIR_FREE(ub);
    return d;
}

/* ============================================================================================
 * Jaccard over token sets
 * ========================================================================================== */

typedef struct { const char *s; const clair__tok *t; int side; } clair__jtok;

static int clair__jtok_cmp(const void *x, const void *y) {
    const clair__jtok *p = (const clair__jtok *)x, *q = (const clair__jtok *)y;
    if (p->t->hash != q->t->hash) return p->t->hash < q->t->hash ? -1 : 1;
    if (p->t->len != q->t->len) return p->t->len < q->t->len ? -1 : 1;
    return memcmp(p->s + p->t->off, q->s + q->t->off, p->t->len);
}

CLAIR_DEF double clair_jaccard(const char *a, size_t na, const char *b, size_t nb) {
    clair__tok *ta = NULL, *tb = NULL;
    size_t ka = clair__tokenize(a, na, 1, &ta), kb, i, inter = 0, uni = 0;
    double r = -1;
    if (ka == (size_t)-1) return -1;
    kb = clair__tokenize(b, nb, 1, &tb);
    if (kb == (size_t)-1) { CLAIR_FREE(ta); return -1; }
    clair__jtok *all = (clair__jtok *)CLAIR_MALLOC((ka + kb + 1) * sizeof *all);
    if (all) {
        for (i = 0; i < ka; i++) { all[i].s = a; all[i].t = &ta[i]; all[i].side = 1; }
        for (i = 0; i < kb; i++) { all[ka + i].s = b; all[ka + i].t = &tb[i]; all[ka + i].side = 2; }
        qsort(all, ka + kb, sizeof *all, clair__jtok_cmp);
        /* each run of equal tokens is one element of the union; in the intersection if the run
         * has both sides */
        for (i = 0; i < ka + kb;) {
            int sides = 0;
            size_t j = i;
            while (j < ka + kb && !clair__jtok_cmp(&all[i], &all[j])) sides |= all[j++].side;
            uni++;
            if (sides == 3) inter++;
            i = j;
        }
        r = uni ? (double)inter / (double)uni : 1.0;
        CLAIR_FREE(all);
    }
    CLAIR_FREE(ta); CLAIR_FREE(tb);
    return r;
}

/* ============================================================================================
 * Token diff: Myers' O(ND) algorithm, linear-space (middle snake, divide and conquer)
 * ========================================================================================== */

typedef struct {
    const char *a, *b;
    const clair__tok *ta, *tb;
    long *vf, *vb;                   /* furthest-reaching x per diagonal, forward and reverse */
    long off;                        /* index of diagonal 0 in vf/vb */
    clair_edit *ops; size_t n, cap;  /* script in token indices (converted to bytes at the end) */
    int oom;
} clair__md;

static int clair__md_eq(const clair__md *c, size_t i, size_t j) {
    const clair__tok *x = &c->ta[i], *y = &c->tb[j];
    return x->hash == y->hash && x->len == y->len && !memcmp(c->a + x->off, c->b + y->off, x->len);
}

/* Appends an op over token ranges a[a0, a1), b[b0, b1), merged with the previous if alike. */
static void clair__md_emit(clair__md *c, clair_edit_op op, size_t a0, size_t a1, size_t b0, size_t b1) {
    if (a1 == a0 && b1 == b0) return;
    if (c->n && c->ops[c->n - 1].op == op) {
        clair_edit *e = &c->ops[c->n - 1];
        e->a_len += a1 - a0; e->b_len += b1 - b0;
        return;
    }
    if (c->n == c->cap) {
        size_t nc = c->cap ? 2 * c->cap : 16;
        clair_edit *p = (clair_edit *)CLAIR_REALLOC(c->ops, nc * sizeof *p);
        if (!p) { c->oom = 1; return; }
        c->ops = p; c->cap = nc;
    }
    c->ops[c->n].op = op;
    c->ops[c->n].a_off = a0; c->ops[c->n].a_len = a1 - a0;
    c->ops[c->n].b_off = b0; c->ops[c->n].b_len = b1 - b0;
    c->n++;
}

/* Finds a middle snake of a[a0, a0+N) vs b[b0, b0+M) (N, M > 0): the snake from (*x0,*y0) to
 * (*x1,*y1) (relative coordinates) lies on a shortest edit path and splits it in halves. */
static void clair__md_snake(clair__md *c, size_t a0, long N, size_t b0, long M,
                            long *x0, long *y0, long *x1, long *y1) {
    long delta = N - M, d, k, x, y, xs, ys, dmax = (N + M + 1) / 2;
    int odd = (int)(delta & 1);
    long *vf = c->vf + c->off, *vb = c->vb + c->off;
    vf[1] = 0; vb[1] = 0;
    for (d = 0; d <= dmax; d++) {
        for (k = -d; k <= d; k += 2) {                       /* forward from (0, 0) */
            if (k == -d || (k != d && vf[k - 1] < vf[k + 1])) x = vf[k + 1]; else x = vf[k - 1] + 1;
            y = x - k; xs = x; ys = y;
            while (x < N && y < M && clair__md_eq(c, a0 + (size_t)x, b0 + (size_t)y)) { x++; y++; }
            vf[k] = x;
            if (odd && delta - k >= -(d - 1) && delta - k <= d - 1 && x + vb[delta - k] >= N) {
                *x0 = xs; *y0 = ys; *x1 = x; *y1 = y;
                return;
            }
        }
        for (k = -d; k <= d; k += 2) {                       /* backward from (N, M), mirrored */
            if (k == -d || (k != d && vb[k - 1] < vb[k + 1])) x = vb[k + 1]; else x = vb[k - 1] + 1;
            y = x - k; xs = x; ys = y;
            while (x < N && y < M && clair__md_eq(c, a0 + (size_t)(N - 1 - x), b0 + (size_t)(M - 1 - y))) { x++; y++; }
            vb[k] = x;
            if (!odd && delta - k >= -d && delta - k <= d && vf[delta - k] + x >= N) {
                *x0 = N - x; *y0 = M - y; *x1 = N - xs; *y1 = M - ys;
                return;
            }
        }
    }
    /* unreachable for N, M > 0: the paths always meet by d = ceil((N+M)/2) */
    *x0 = *x1 = N; *y0 = *y1 = M;
}

static void clair__md_rec(clair__md *c, size_t a0, size_t a1, size_t b0, size_t b1) {
    size_t p0 = a0, q0 = b0, sa, sb;
    while (a0 < a1 && b0 < b1 && clair__md_eq(c, a0, b0)) { a0++; b0++; }
    clair__md_emit(c, CLAIR_EDIT_EQUAL, p0, a0, q0, b0);
    sa = a1; sb = b1;
    while (a1 > a0 && b1 > b0 && clair__md_eq(c, a1 - 1, b1 - 1)) { a1--; b1--; }
    if (a0 == a1) clair__md_emit(c, CLAIR_EDIT_INSERT, a0, a0, b0, b1);
    else if (b0 == b1) clair__md_emit(c, CLAIR_EDIT_DELETE, a0, a1, b0, b0);
    else {
        long x0, y0, x1, y1;
        clair__md_snake(c, a0, (long)(a1 - a0), b0, (long)(b1 - b0), &x0, &y0, &x1, &y1);
        clair__md_rec(c, a0, a0 + (size_t)x0, b0, b0 + (size_t)y0);
        clair__md_emit(c, CLAIR_EDIT_EQUAL, a0 + (size_t)x0, a0 + (size_t)x1, b0 + (size_t)y0, b0 + (size_t)y1);
        clair__md_rec(c, a0 + (size_t)x1, a1, b0 + (size_t)y1, b1);
    }
    clair__md_emit(c, CLAIR_EDIT_EQUAL, a1, sa, b1, sb);
}

CLAIR_DEF void clair_diff_free(clair_diff *d) {
    if (!d) return;
    CLAIR_FREE(d->ops);
    memset(d, 0, sizeof *d);
}

CLAIR_DEF int clair_diff_tokens(const char *a, size_t na, const char *b, size_t nb, clair_diff *d) {
    clair__md c;
    clair__tok *ta = NULL, *tb = NULL;
    size_t ka, kb, i, j, n;
    memset(d, 0, sizeof *d);
    memset(&c, 0, sizeof c);
    ka = clair__tokenize(a, na, 0, &ta);
    if (ka == (size_t)-1) return -1;
    kb = clair__tokenize(b, nb, 0, &tb);
    if (kb == (size_t)-1) { CLAIR_FREE(ta); return -1; }
    c.a = a; c.b = b; c.ta = ta; c.tb = tb;
    c.off = (long)(ka + kb) + 1;
    c.vf = (long *)CLAIR_MALLOC((2 * (ka + kb) + 3) * sizeof(long));
    c.vb = (long *)CLAIR_MALLOC((2 * (ka + kb) + 3) * sizeof(long));
    if (!c.vf || !c.vb) c.oom = 1;
    else clair__md_rec(&c, 0, ka, 0, kb);
    CLAIR_FREE(c.vf); CLAIR_FREE(c.vb);
    if (c.oom) { CLAIR_FREE(c.ops); CLAIR_FREE(ta); CLAIR_FREE(tb); return -1; }
    /* Within each run of changes put one deletion before one insertion (always valid: inside a
     * run the deleted tokens are contiguous in a, the inserted ones contiguous in b). */
    n = 0;
    for (i = 0; i < c.n;) {
        if (c.ops[i].op == CLAIR_EDIT_EQUAL) { c.ops[n++] = c.ops[i++]; continue; }
        size_t as = c.ops[i].a_off, bs = c.ops[i].b_off, al = 0, bl = 0;
        for (j = i; j < c.n && c.ops[j].op != CLAIR_EDIT_EQUAL; j++) { al += c.ops[j].a_len; bl += c.ops[j].b_len; }
        if (al) { c.ops[n].op = CLAIR_EDIT_DELETE; c.ops[n].a_off = as; c.ops[n].a_len = al; c.ops[n].b_off = bs; c.ops[n].b_len = 0; n++; }
        if (bl) { c.ops[n].op = CLAIR_EDIT_INSERT; c.ops[n].a_off = as + al; c.ops[n].a_len = 0; c.ops[n].b_off = bs; c.ops[n].b_len = bl; n++; }
        d->n_del += al; d->n_ins += bl;
        i = j;
    }
    /* token indices -> byte spans */
    for (i = 0; i < n; i++) {
        clair_edit *e = &c.ops[i];
        size_t ae = e->a_off + e->a_len, be = e->b_off + e->b_len;
        size_t abeg = e->a_off < ka ? ta[e->a_off].off : na, aend = ae < ka ? ta[ae].off : na;
        size_t bbeg = e->b_off < kb ? tb[e->b_off].off : nb, bend = be < kb ? tb[be].off : nb;
        e->a_off = abeg; e->a_len = aend - abeg; e->b_off = bbeg; e->b_len = bend - bbeg;
    }
    d->ops = c.ops; d->n = n; d->tokens_a = ka; d->tokens_b = kb;
    CLAIR_FREE(ta); CLAIR_FREE(tb);
    return 0;
}

CLAIR_DEF void clair_diff_render(clair_buf *out, const char *a, const char *b, const clair_diff *d) {
    size_t i;
    for (i = 0; i < d->n; i++) {
        const clair_edit *e = &d->ops[i];
        if (e->op == CLAIR_EDIT_EQUAL) clair_buf_put(out, a + e->a_off, e->a_len);
        else if (e->op == CLAIR_EDIT_DELETE) { clair_buf_puts(out, "[-"); clair_buf_put(out, a + e->a_off, e->a_len); clair_buf_puts(out, "-]"); }
        else { clair_buf_puts(out, "{+"); clair_buf_put(out, b + e->b_off, e->b_len); clair_buf_puts(out, "+}"); }
    }
}

/* Length of the longest common subsequence of two token lists, bit-parallel (Allison-Dix /
 * Hyyro: V' = (V + (V & M)) | (V & ~M), multi-word with carry; LCS = zero bits of V).
 * O(|A| |B| / 64) whatever the distance, where Myers' O(ND) diff is quadratic on unrelated
 * texts. Tokens of b are mapped to a's distinct tokens by hash, then bytes. -1: out of memory. */
static long long clair__token_lcs(const char *a, const clair__tok *ta, size_t ka, const char *b, const clair__tok *tb, size_t kb) {
    size_t words = (ka + 63) / 64, cap = 16, i, j, w, nuniq = 0;
    long long lcs = -1;
    if (ka == 0 || kb == 0) return 0;
    while (cap < 2 * ka) cap *= 2;
    long *slot = (long *)CLAIR_MALLOC(cap * sizeof *slot);        /* -> index of a representative token */
    long *id = (long *)CLAIR_MALLOC(cap * sizeof *id);
    long *row = (long *)CLAIR_MALLOC(ka * sizeof *row);
    clair__u64 *pm = NULL, *V = NULL;
    if (!slot || !id || !row) goto done;
    for (i = 0; i < cap; i++) slot[i] = -1;
    for (i = 0; i < ka; i++) {
        size_t h = (size_t)(ta[i].hash & (cap - 1));
        while (slot[h] >= 0) {
            const clair__tok *r = &ta[slot[h]];
            if (r->hash == ta[i].hash && r->len == ta[i].len && !memcmp(a + r->off, a + ta[i].off, r->len)) break;
            h = (h + 1) & (cap - 1);
        }
        if (slot[h] < 0) { slot[h] = (long)i; id[h] = (long)nuniq++; }
        row[i] = id[h];
    }
    pm = (clair__u64 *)calloc((nuniq + 1) * words, sizeof *pm);
    V = (clair__u64 *)CLAIR_MALLOC(words * sizeof *V);
    if (!pm || !V) goto done;
    for (i = 0; i < ka; i++) pm[(size_t)row[i] * words + i / 64] |= 1ULL << (i % 64);
    for (w = 0; w < words; w++) V[w] = ~0ULL;
    for (j = 0; j < kb; j++) {
        size_t h = (size_t)(tb[j].hash & (cap - 1));
        long r = (long)nuniq;                                      /* the all-zero row */
        while (slot[h] >= 0) {
            const clair__tok *t = &ta[slot[h]];
            if (t->hash == tb[j].hash && t->len == tb[j].len && !memcmp(a + t->off, b + tb[j].off, t->len)) { r = id[h]; break; }
            h = (h + 1) & (cap - 1);
        }
        const clair__u64 *M = pm + (size_t)r * words;
        clair__u64 carry = 0;
        for (w = 0; w < words; w++) {
            clair__u64 u = V[w] & M[w], x = V[w] + u, sum = x + carry;
            clair__u64 c2 = (x < u) | (sum < x);                     /* carry out of V + u + carry */
            V[w] = sum | (V[w] & ~M[w]);
            carry = c2;
        }
    }
    lcs = 0;
    for (i = 0; i < ka; i++) lcs += !((V[i / 64] >> (i % 64)) & 1);
done:
    CLAIR_FREE(slot); CLAIR_FREE(id); CLAIR_FREE(row); free(pm); CLAIR_FREE(V);
    return lcs;
}

CLAIR_DEF int clair_metrics_compute(const char *a, size_t na, const char *b, size_t nb, clair_metrics *m) {
    unsigned *ua, *ub;
    memset(m, 0, sizeof *m);
    ua = (unsigned *)CLAIR_MALLOC((na + 1) * sizeof *ua);
    ub = (unsigned *)CLAIR_MALLOC((nb + 1) * sizeof *ub);
    if (!ua || !ub) { CLAIR_FREE(ua); CLAIR_FREE(ub); return -1; }
    m->chars_a = clair_utf8_decode(a, na, ua);
    m->chars_b = clair_utf8_decode(b, nb, ub);
    m->levenshtein = clair_levenshtein_u32(ua, m->chars_a, ub, m->chars_b);
    CLAIR_FREE(ua); CLAIR_FREE(ub);
    if (m->levenshtein < 0) return -1;
    {
        size_t mx = m->chars_a > m->chars_b ? m->chars_a : m->chars_b;
        m->edit_ratio = mx ? (double)m->levenshtein / (double)mx : 0.0;
    }
    m->jaccard = clair_jaccard(a, na, b, nb);
    if (m->jaccard < 0) return -1;
    {
        clair__tok *ta = NULL, *tb = NULL;
        size_t ka = clair__tokenize(a, na, 0, &ta), kb;
        long long lcs;
        if (ka == (size_t)-1) return -1;
        kb = clair__tokenize(b, nb, 0, &tb);
        if (kb == (size_t)-1) { CLAIR_FREE(ta); return -1; }
        lcs = clair__token_lcs(a, ta, ka, b, tb, kb);
        CLAIR_FREE(ta); CLAIR_FREE(tb);
        if (lcs < 0) return -1;
        m->token_edits = ka + kb - 2 * (size_t)lcs;   /* = n_del + n_ins of a shortest script */
        m->tokens_a = ka; m->tokens_b = kb;
    }
    return 0;
}

/* ============================================================================================
 * Filter
 * ========================================================================================== */

CLAIR_DEF clair_filter clair_filter_default(void) {
    clair_filter f;
    f.max_edit_ratio = 0.6;
    f.min_jaccard = 0.25;
    f.min_length_ratio = 0.5;
    f.max_length_ratio = 2.0;
    return f;
}

static void clair__trim(const char **s, size_t *n) {
    while (*n) { size_t l; if (!clair_is_space(clair__cp_at(*s, *n, 0, &l))) break; *s += l; *n -= l; }
    while (*n) {
        size_t k = *n - 1, l;
        while (k > 0 && ((unsigned char)(*s)[k] & 0xC0) == 0x80 && *n - k < 4) k--;
        if (!clair_is_space(clair__cp_at(*s, *n, k, &l)) || k + l != *n) break;
        *n = k;
    }
}

CLAIR_DEF clair_verdict clair_filter_check(const clair_filter *f, const char *chosen, size_t nc,
                                           const char *rejected, size_t nr, const clair_metrics *m) {
    const char *c = chosen, *r = rejected;
    clair__trim(&c, &nc);
    clair__trim(&r, &nr);
    if (nc == 0) return CLAIR_DROP_EMPTY;
    if (nc == nr && !memcmp(c, r, nc)) return CLAIR_DROP_IDENTICAL;
    if (f->max_edit_ratio > 0 && m->edit_ratio > f->max_edit_ratio) return CLAIR_DROP_EDIT_RATIO;
    if (f->min_jaccard > 0 && m->jaccard < f->min_jaccard) return CLAIR_DROP_JACCARD;
    if (f->min_length_ratio > 0 || f->max_length_ratio > 0) {
        double ratio = m->chars_b ? (double)m->chars_a / (double)m->chars_b : 1e300;
        if (f->min_length_ratio > 0 && ratio < f->min_length_ratio) return CLAIR_DROP_LENGTH_RATIO;
        if (f->max_length_ratio > 0 && ratio > f->max_length_ratio) return CLAIR_DROP_LENGTH_RATIO;
    }
    return CLAIR_KEEP;
}

CLAIR_DEF const char *clair_verdict_name(clair_verdict v) {
    switch (v) {
    case CLAIR_KEEP: return "kept";
    case CLAIR_DROP_EMPTY: return "empty_revision";
    case CLAIR_DROP_IDENTICAL: return "identical";
    case CLAIR_DROP_EDIT_RATIO: return "edit_ratio";
    case CLAIR_DROP_JACCARD: return "jaccard";
    case CLAIR_DROP_LENGTH_RATIO: return "length_ratio";
    }
    return "?";
}

#ifndef CLAIR_NO_CURL
/* ============================================================================================
 * Request engine
 *
 * One curl multi handle drives `concurrency` slots. A slot holds one job from next() until its
 * outcome is final. After a failed attempt that is worth retrying (429, 408, 5xx, timeout,
 * connection trouble, a 2xx body that is not a chat completion) the slot waits out the backoff
 * (or the server's Retry-After) and tries again; the waiting costs no thread and no connection.
 * ========================================================================================== */

#include <curl/curl.h>
#include <sys/time.h>

/* Wall-clock seconds. gettimeofday rather than clock_gettime: it is declared even under strict
 * -std=c99, so the header needs no feature-test macro from its user. */
static double clair__now(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + 1e-6 * (double)tv.tv_usec;
}

static double clair__rand01(unsigned long long *s) {        /* splitmix64 -> [0, 1) */
    unsigned long long z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

CLAIR_DEF double clair_backoff_s(const clair_http_opts *o, int attempt, double retry_after_s, unsigned long long *rng) {
    double base = o->backoff_s > 0 ? o->backoff_s : 1.0, mx = o->backoff_max_s > 0 ? o->backoff_max_s : 60.0;
    double ramx = o->retry_after_max_s > 0 ? o->retry_after_max_s : 300.0, d = base;
    int k;
    if (retry_after_s >= 0) return retry_after_s < ramx ? retry_after_s : ramx;
    for (k = 1; k < attempt && d < mx; k++) d *= 2;
    if (d > mx) d = mx;
    return d * (0.5 + 0.5 * clair__rand01(rng));
}

CLAIR_DEF const char *clair_req_error_name(clair_req_error e) {
    switch (e) {
    case CLAIR_REQ_OK: return "ok";
    case CLAIR_REQ_HTTP: return "http_status";
    case CLAIR_REQ_TIMEOUT: return "timeout";
    case CLAIR_REQ_CONNECTION: return "connection";
    case CLAIR_REQ_BAD_REPLY: return "bad_reply";
    case CLAIR_REQ_TLS: return "tls";
    case CLAIR_REQ_OTHER: return "other";
    }
    return "?";
}

typedef struct {
    CURL *easy;
    int busy;              /* holds a job */
    int in_multi;          /* attempt in flight */
    double due;            /* waiting: start the next attempt at this time */
    clair_job job;
    clair_buf resp;
} clair__slot;

#ifndef CLAIR_MAX_REPLY
#define CLAIR_MAX_REPLY ((size_t)64 << 20)   /* a chat completion is never near this: refuse more */
#endif

static size_t clair__write_cb(char *p, size_t sz, size_t nm, void *ud) {
    clair__slot *s = (clair__slot *)ud;
    if (s->resp.len + sz * nm > CLAIR_MAX_REPLY) { s->resp.oom = 2; return 0; }
    clair_buf_put(&s->resp, p, sz * nm);
    return s->resp.oom ? 0 : sz * nm;
}

static void clair__job_clear(clair_job *j) {
    CLAIR_FREE(j->body);
    CLAIR_FREE(j->reply);
    clair_json_free(&j->reply_json);
    memset(j, 0, sizeof *j);
}

static int clair__start(CURLM *multi, clair__slot *s, const clair_http_opts *o, struct curl_slist *hdrs) {
    CURL *e = s->easy;
    clair_buf_free(&s->resp);
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, o->url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, s->job.body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)s->job.body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, clair__write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)s);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)s);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(1000.0 * (o->timeout_s > 0 ? o->timeout_s : 600.0)));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(1000.0 * (o->connect_timeout_s > 0 ? o->connect_timeout_s : 30.0)));
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");            /* any encoding curl supports */
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);             /* the defaults, said out loud */
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "clair/1");
    s->job.attempts++;
    if (curl_multi_add_handle(multi, e) != CURLM_OK) return -1;
    s->in_multi = 1;
    return 0;
}

/* Classifies a finished attempt. Returns 1 if it should be retried, 0 if final. */
static int clair__classify(clair__slot *s, CURLcode rc, const char *key, double *retry_after) {
    clair_job *j = &s->job;
    long status = 0;
    curl_off_t ra = -1;
    char perr[160];
    *retry_after = -1;
    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    j->status = status;
    CLAIR_FREE(j->reply);
    j->reply = s->resp.data ? s->resp.data : NULL;
    j->reply_len = s->resp.len;
    j->curl_code = (int)rc;
    j->content = NULL; j->content_len = 0;
    memset(&s->resp, 0, sizeof s->resp);           /* ownership moved to the job */
    clair_json_free(&j->reply_json);
    /* a server or proxy may echo the Authorization header: the key leaves no trace in anything
     * built from the reply (message, excerpt, parsed content) */
    clair_redact(j->reply, j->reply_len, key);
    if (rc == CURLE_WRITE_ERROR) {
        snprintf(j->message, sizeof j->message, "%s", s->resp.oom == 2 || j->reply_len >= CLAIR_MAX_REPLY ?
                 "reply larger than CLAIR_MAX_REPLY" : "out of memory storing the reply");
        j->error = CLAIR_REQ_OTHER;
        return 0;
    }
    if (rc != CURLE_OK) {
        snprintf(j->message, sizeof j->message, "%s", curl_easy_strerror(rc));
        switch (rc) {
        case CURLE_OPERATION_TIMEDOUT: j->error = CLAIR_REQ_TIMEOUT; return 1;
        case CURLE_COULDNT_CONNECT: case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_RESOLVE_PROXY:
        case CURLE_GOT_NOTHING: case CURLE_RECV_ERROR: case CURLE_SEND_ERROR: case CURLE_PARTIAL_FILE:
#if LIBCURL_VERSION_NUM >= 0x073100
        case CURLE_HTTP2: case CURLE_HTTP2_STREAM:
#endif
            j->error = CLAIR_REQ_CONNECTION; return 1;
        case CURLE_SSL_CONNECT_ERROR: case CURLE_PEER_FAILED_VERIFICATION: case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CIPHER: case CURLE_SSL_CACERT_BADFILE:
            j->error = CLAIR_REQ_TLS; return 0;
        default: j->error = CLAIR_REQ_OTHER; return 0;
        }
    }
    if (status < 200 || status >= 300) {
        const char *snip = j->reply ? j->reply : "";
        /* an excerpt cut on a character boundary; the JSON writer mends any invalid bytes */
        snprintf(j->message, sizeof j->message, "HTTP %ld: %.*s", status, (int)clair_utf8_cut(snip, j->reply_len, 160), snip);
        j->error = CLAIR_REQ_HTTP;
#if LIBCURL_VERSION_NUM >= 0x074200
        if (curl_easy_getinfo(s->easy, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra >= 0 &&
            (status == 429 || status == 503)) *retry_after = (double)ra;
#endif
        (void)ra;
        return status == 408 || status == 409 || status == 425 || status == 429 || status >= 500;
    }
    if (!j->reply || clair_json_parse(j->reply, j->reply_len, &j->reply_json, perr, sizeof perr)) {
        snprintf(j->message, sizeof j->message, "HTTP %ld with a body that is not JSON (%s)", status, j->reply ? perr : "empty");
        j->error = CLAIR_REQ_BAD_REPLY;
        return 1;
    }
    if (clair_chat_content(&j->reply_json, &j->content, &j->content_len, perr, sizeof perr)) {
        const char *fin = clair_chat_finish_reason(&j->reply_json);
        if (fin && !strcmp(fin, "length") && !clair_json_get(&j->reply_json, "error")) {
            /* the token limit ran out before any text (a reasoning model that spent it all
             * thinking): a final answer, empty and truncated, not a malformed reply to retry */
            j->content = ""; j->content_len = 0;
            j->error = CLAIR_REQ_OK;
            j->message[0] = 0;
            return 0;
        }
        snprintf(j->message, sizeof j->message, "HTTP %ld: %s", status, perr);
        j->error = CLAIR_REQ_BAD_REPLY;
        return 1;
    }
    j->error = CLAIR_REQ_OK;
    j->message[0] = 0;
    return 0;
}

CLAIR_DEF int clair_http_run(const clair_http_opts *o, clair_next_fn next, clair_done_fn done,
                             void *ctx, char *err, size_t errsz) {
    int n = o->concurrency > 0 ? o->concurrency : 8, i, exhausted = 0, rc = -1;
    int max_attempts = o->max_attempts > 0 ? o->max_attempts : 6;
    unsigned long long rng = o->seed ? o->seed : (unsigned long long)(clair__now() * 1e9);
    double last_tick = 0;
    struct curl_slist *hdrs = NULL;
    clair__slot *slots = NULL;
    CURLM *multi = NULL;
    static int global_done = 0;
    if (!global_done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) { snprintf(err, errsz, "curl_global_init failed"); return -1; }
        global_done = 1;
    }
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Expect:");                 /* no 100-continue round trip */
    if (o->api_key && o->api_key[0]) {
        clair_buf h;
        memset(&h, 0, sizeof h);
        clair_buf_puts(&h, "Authorization: Bearer ");
        clair_buf_puts(&h, o->api_key);
        if (h.data) hdrs = curl_slist_append(hdrs, h.data);     /* curl copies it */
        if (h.data) memset(h.data, 0, h.len);                   /* wipe our copy of the key */
        clair_buf_free(&h);
    }
    multi = curl_multi_init();
    slots = (clair__slot *)calloc((size_t)n, sizeof *slots);
    if (!hdrs || !multi || !slots) { snprintf(err, errsz, "out of memory setting up libcurl"); goto out; }
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)n);
    for (i = 0; i < n; i++) {
        slots[i].easy = curl_easy_init();
        if (!slots[i].easy) { snprintf(err, errsz, "curl_easy_init failed"); goto out; }
    }
    for (;;) {
        double now = clair__now(), wait_ms = 500;
        int active = 0, running = 0;
        CURLMsg *msg;
        int left;
        if (o->stop && *o->stop) break;
        /* fill free slots; start waiting ones whose time has come */
        for (i = 0; i < n; i++) {
            clair__slot *s = &slots[i];
            if (!s->busy && !exhausted) {
                memset(&s->job, 0, sizeof s->job);
                if (next(ctx, &s->job)) { s->busy = 1; s->due = now; }
                else { CLAIR_FREE(s->job.body); s->job.body = NULL; exhausted = 1; }
            }
            if (s->busy && !s->in_multi && s->due <= now) {
                if (clair__start(multi, s, o, hdrs)) { snprintf(err, errsz, "curl_multi_add_handle failed"); goto out; }
            }
            if (s->busy) {
                active++;
                if (!s->in_multi) { double ms = 1000.0 * (s->due - now); if (ms < wait_ms) wait_ms = ms; }
            }
        }
        if (!active && exhausted) { rc = 0; break; }
        if (o->tick && now - last_tick >= 0.5) { o->tick(ctx); last_tick = now; }
        curl_multi_perform(multi, &running);
        while ((msg = curl_multi_info_read(multi, &left))) {
            clair__slot *s = NULL;
            double ra;
            if (msg->msg != CURLMSG_DONE) continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            CURLcode res = msg->data.result;
            curl_multi_remove_handle(multi, msg->easy_handle);
            s->in_multi = 0;
            int retry = clair__classify(s, res, o->api_key, &ra);
            if (retry && s->job.attempts < max_attempts) {
                double wait = clair_backoff_s(o, s->job.attempts, ra, &rng);
                if (o->verbose_retries)
                    fprintf(stderr, "clair: attempt %d failed (%s: %s); retrying in %.2f s\n",
                            s->job.attempts, clair_req_error_name(s->job.error), s->job.message, wait);
                s->due = clair__now() + wait;
                if (1000.0 * wait < wait_ms) wait_ms = 1000.0 * wait;   /* wake up in time for it */
                continue;
            }
            if (s->job.error != CLAIR_REQ_OK && retry) {
                char tail[48];
                size_t len, room;
                snprintf(tail, sizeof tail, " (gave up after %d attempts)", s->job.attempts);
                room = sizeof s->job.message - 1 - strlen(tail);
                len = clair_utf8_cut(s->job.message, strlen(s->job.message), room);   /* never half a character */
                memcpy(s->job.message + len, tail, strlen(tail) + 1);
            }
            done(ctx, &s->job);
            clair__job_clear(&s->job);
            s->busy = 0;
            wait_ms = 0;                       /* a slot is free: refill it at once */
        }
        if (wait_ms > 0) {
            if (wait_ms < 1) wait_ms = 1;
            curl_multi_poll(multi, NULL, 0, (int)wait_ms, NULL);
        }
    }
    rc = 0;                                    /* finished, or stopped on request */
out:
    if (slots) {
        for (i = 0; i < n; i++) {
            if (slots[i].in_multi) curl_multi_remove_handle(multi, slots[i].easy);
            if (slots[i].easy) curl_easy_cleanup(slots[i].easy);
            clair__job_clear(&slots[i].job);
            clair_buf_free(&slots[i].resp);
        }
        free(slots);
    }
    if (multi) curl_multi_cleanup(multi);
    curl_slist_free_all(hdrs);
    return rc;
}
#endif /* CLAIR_NO_CURL */

/* ============================================================================================
 * ============================================================================================
 * Appendix: JSON, growable buffers, UTF-8 - the project's one JSON implementation, here so that
 * clair.h stays one self-contained file
 *
 * Everything above writes with clair_buf and the JSON writer and reads with the strict reader;
 * a program that pastes clair.h can use them for any JSON of its own.
 * ============================================================================================
 * ========================================================================================== */
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
    if (*out - *out != 0) { clair__jerr(p, "number out of range (beyond a double's +-1.8e308)"); return -1; }
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

/* Length of the maximal subpart of an ill-formed sequence at s[0..n) (n >= 1, s[0] not the
 * start of a valid sequence): the lead byte plus the continuation bytes that could still have
 * completed it. Each such subpart becomes one U+FFFD, the W3C/WHATWG "maximal subpart"
 * practice that Python's errors="replace" and Rust's from_utf8_lossy (Hugging Face's decoders)
 * follow, so a lossy copy of the same bytes reads the same everywhere. */
static size_t clair__utf8_bad_len(const unsigned char *s, size_t n) {
    unsigned c = s[0], lo = 0x80, hi = 0xBF;
    size_t need, k;
    if (c < 0xC2 || c > 0xF4) return 1;
    need = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (c == 0xE0) lo = 0xA0;
    else if (c == 0xED) hi = 0x9F;
    else if (c == 0xF0) lo = 0x90;
    else if (c == 0xF4) hi = 0x8F;
    for (k = 1; k < need && k < n; k++) {
        if (s[k] < lo || s[k] > hi) break;
        lo = 0x80; hi = 0xBF;
    }
    return k;
}

CLAIR_DEF void clair_json_write_string(clair_buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    clair_buf_put(b, "\"", 1);
    while (i < n) {
        unsigned char c = u[i];
        const char *esc = NULL;
        size_t skip = 1;
        char e[7];
        if (c >= 0x80) {
            size_t k = clair__utf8_seq(u + i, n - i);
            if (k) { i += k; continue; }                 /* valid: copied with the run */
            skip = clair__utf8_bad_len(u + i, n - i);
            esc = "\xef\xbf\xbd";                        /* U+FFFD REPLACEMENT CHARACTER */
        }
        else if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c == '\b') esc = "\\b";
        else if (c == '\f') esc = "\\f";
        else if (c < 0x20) {
            e[0] = '\\'; e[1] = 'u'; e[2] = '0'; e[3] = '0'; e[4] = hex[c >> 4]; e[5] = hex[c & 15]; e[6] = 0;
            esc = e;
        }
        if (esc) {
            clair_buf_put(b, s + run, i - run);
            clair_buf_puts(b, esc);
            run = i + skip;
        }
        i += skip;
    }
    clair_buf_put(b, s + run, n - run);
    clair_buf_put(b, "\"", 1);
}

CLAIR_DEF size_t clair_utf8_cut(const char *s, size_t n, size_t max) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    if (n <= max) return n;
    while (i < max) {
        size_t k = u[i] < 0x80 ? 1 : clair__utf8_seq(u + i, n - i);
        if (!k) k = 1;                                  /* an invalid byte stands alone */
        if (i + k > max) break;
        i += k;
    }
    return i;
}

CLAIR_DEF size_t clair_redact(char *s, size_t n, const char *secret) {
    size_t k = secret ? strlen(secret) : 0, i = 0, count = 0;
    if (!k || !s) return 0;
    while (i + k <= n) {
        if (s[i] == secret[0] && !memcmp(s + i, secret, k)) { memset(s + i, '*', k); i += k; count++; }
        else i++;
    }
    return count;
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
/*
 * ==============================================================================================
 * LICENSE: two licenses, use whichever you prefer.
 * ==============================================================================================
 * A. MIT License. Copyright (c) 2026 the clair-apo authors.
 * Permission is hereby granted, free of charge, to any person obtaining a copy of this software
 * and associated documentation files (the "Software"), to deal in the Software without
 * restriction, including without limitation the rights to use, copy, modify, merge, publish,
 * distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
 * Software is furnished to do so, subject to the following conditions:
 * The above copyright notice and this permission notice shall be included in all copies or
 * substantial portions of the Software.
 * THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
 * BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
 * NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
 * DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 * OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
 * ----------------------------------------------------------------------------------------------
 * B. Public domain (www.unlicense.org).
 * This is free and unencumbered software released into the public domain. Anyone is free to
 * copy, modify, publish, use, compile, sell, or distribute this software, either in source code
 * form or as a compiled binary, for any purpose, commercial or non-commercial, and by any means.
 * In jurisdictions that recognize copyright laws, the author or authors of this software
 * dedicate any and all copyright interest in the software to the public domain. We make this
 * dedication for the benefit of the public at large and to the detriment of our heirs and
 * successors. We intend this dedication to be an overt act of relinquishment in perpetuity of
 * all present and future rights to this software under copyright law.
 * THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
 * BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
 * NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 * LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN
 * CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
 */
