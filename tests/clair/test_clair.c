/* tests/clair/test_clair.c - unit tests of clair.h (no network): JSON, metrics against
 * committed Python expectations (tests/clair/expect_metrics.jsonl, written by
 * tools/gen_clair_expect.py) and against brute-force DP references, the token diff, reply
 * parsing, the filter and the prompt; every JSON writer fed arbitrary bytes (always strict
 * JSON out, invalid UTF-8 mended exactly as Python's errors="replace"), excerpts, redaction.
 *
 *   test_clair [path/to/expect_metrics.jsonl] [fuzz_iterations]
 */
#define CLAIR_NO_CURL
#define CLAIR_IMPLEMENTATION
#include "../../clair.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

static int fails = 0, checks = 0;
#define CHECK(cond, ...) do { checks++; if (!(cond)) { fails++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n"); } } while (0)

static unsigned long long rng = 88172645463325252ULL;
static unsigned rnd(unsigned n) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (unsigned)(rng % n); }

/* ---------------------------------------------------------------------------------------- JSON */

static int parses(const char *s) {
    clair_json v; char err[200];
    int rc = clair_json_parse(s, strlen(s), &v, err, sizeof err);
    if (!rc) clair_json_free(&v);
    return rc == 0;
}

static void test_json_corpus(void) {
    static const char *valid[] = {
        "null", "true", "false", "0", "-0", "1", "-1", "123456789", "1.5", "-1.5e10", "1E+2", "1e-2",
        "0.0", "\"\"", "\"abc\"", "[]", "{}", "[1,2,3]", " [ 1 , [ 2 , { \"a\" : [ ] } ] ] ",
        "{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"e\"}}", "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
        "\"\\u0041\\u00e9\\u4e2d\"", "\"\\ud83d\\ude00\"", "\"caf\xc3\xa9 \xe4\xb8\xad \xf0\x9f\x98\x80\"",
        "\"\\u0000\"", "\n\t\r 42 \n", "{\"a\":1,\"a\":2}", "1.7976931348623157e308", "5e-324",
        "[\"\\uDBFF\\uDFFF\"]", "1e-400", "-0.0e-999", "\"\xf4\x8f\xbf\xbf\"", "\"\x7f\"",
    };
    static const char *invalid[] = {
        "", " ", "nul", "tru", "True", "NaN", "Infinity", "-Infinity", "01", "-01", "1.", ".5", "1e", "1e+",
        "+1", "-", "0x10", "[1,]", "[,1]", "{\"a\":1,}", "{,}", "{\"a\"}", "{\"a\" 1}", "{a:1}", "['a']",
        "[1 2]", "[1,2", "{\"a\":1", "\"abc", "\"a\\x\"", "\"\\u12\"", "\"\\u12g4\"", "\"\\ud83d\"",
        "\"\\ude00\"", "\"\\ud83d\\u0041\"", "\"\\ud83dx\"", "\"a\nb\"", "\"a\tb\"", "\"\x01\"",
        "\"\xc3\"", "\"\xc0\xaf\"", "\"\xe0\x80\xaf\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"",
        "\"\xf5\x80\x80\x80\"", "\"\x80\"", "1e400", "-1e309", "[1E999]", "\"\xff\"", "1 2", "[] []", "{} x", "\"a\" \"b\"", "[1]]",
        "{\"a\":1}}", "\xef\xbb\xbf{}", "/*c*/1", "[1,2,]",
    };
    size_t i;
    for (i = 0; i < sizeof valid / sizeof *valid; i++) CHECK(parses(valid[i]), "valid JSON rejected: %s", valid[i]);
    for (i = 0; i < sizeof invalid / sizeof *invalid; i++) CHECK(!parses(invalid[i]), "invalid JSON accepted: %s", invalid[i]);
    /* embedded NUL inside the text is not whitespace */
    { clair_json v; char err[100]; CHECK(clair_json_parse("1\0", 2, &v, err, sizeof err) != 0, "NUL after value accepted"); }
}

static void test_json_values(void) {
    clair_json v; char err[200];
    const char *s = "{\"s\":\"\\u00e9\\ud83d\\ude00\\n\\u0000x\",\"n\":-12.5e1,\"i\":9007199254740992,\"f\":0.1,"
                    "\"b\":true,\"z\":null,\"a\":[1,\"x\"],\"k\":1,\"k\":2}";
    CHECK(!clair_json_parse(s, strlen(s), &v, err, sizeof err), "parse: %s", err);
    const clair_json *str = clair_json_get(&v, "s");
    CHECK(str && str->len == 2 + 4 + 1 + 1 + 1 && !memcmp(str->str, "\xc3\xa9\xf0\x9f\x98\x80\n\0x", 9), "string escapes decoded");
    double d; long long ll;
    CHECK(!clair_json_get_num(&v, "n", &d) && d == -125.0, "number -12.5e1");
    CHECK(!clair_json_get_int(&v, "i", &ll) && ll == 9007199254740992LL, "2^53 integer");
    CHECK(clair_json_get_int(&v, "f", &ll) == -1, "0.1 is not an integer");
    CHECK(!clair_json_get_num(&v, "f", &d) && d == 0.1, "0.1 exact double");
    CHECK(clair_json_get(&v, "b")->boolean == 1 && clair_json_get(&v, "z")->type == CLAIR_JSON_NULL, "literals");
    CHECK(!clair_json_get_num(&v, "k", &d) && d == 2, "last duplicate key wins");
    CHECK(clair_json_get_str(&v, "a") == NULL && clair_json_get(&v, "missing") == NULL, "absent/mistyped members");
    clair_json_free(&v);
    /* error message names line and column */
    CHECK(clair_json_parse("{\n  \"a\": tru\n}", 14, &v, err, sizeof err) && strstr(err, "line 2, column 8"), "error position: %s", err);
    /* writer: numbers */
    clair_buf b = {0, 0, 0, 0};
    clair_json_write_number(&b, 3); clair_buf_puts(&b, " ");
    clair_json_write_number(&b, -0.5); clair_buf_puts(&b, " ");
    clair_json_write_number(&b, 0.1); clair_buf_puts(&b, " ");
    clair_json_write_number(&b, 1e300); clair_buf_puts(&b, " ");
    clair_json_write_number(&b, NAN); clair_buf_puts(&b, " ");
    clair_json_write_number(&b, 1.0 / 3.0);
    CHECK(!strcmp(b.data, "3 -0.5 0.10000000000000001 1.0000000000000001e+300 null 0.33333333333333331"), "numbers written: %s", b.data);
    clair_buf_free(&b);
    /* writer: strings escape what JSON requires and keep UTF-8 */
    clair_json_write_string(&b, "a\"b\\c\n\x01\x1f\xc3\xa9/", 11);
    CHECK(!strcmp(b.data, "\"a\\\"b\\\\c\\n\\u0001\\u001f\xc3\xa9/\""), "string written: %s", b.data);
    clair_buf_free(&b);
}

static void test_json_depth(void) {
    char buf[2 * CLAIR_JSON_MAX_DEPTH + 8];
    int d;
    for (d = CLAIR_JSON_MAX_DEPTH; d <= CLAIR_JSON_MAX_DEPTH + 1; d++) {
        int k, n = 0;
        for (k = 0; k < d; k++) buf[n++] = '[';
        for (k = 0; k < d; k++) buf[n++] = ']';
        buf[n] = 0;
        CHECK(parses(buf) == (d <= CLAIR_JSON_MAX_DEPTH), "depth %d", d);
    }
    /* a very deep document must fail cleanly, not overflow the stack */
    size_t big = 1000000;
    char *deep = (char *)malloc(big + 1);
    memset(deep, '[', big); deep[big] = 0;
    CHECK(!parses(deep), "1e6 open brackets rejected");
    memset(deep, '{', big); CHECK(!parses(deep), "1e6 open braces rejected");
    free(deep);
}

/* parse -> write -> parse -> write must be a fixed point after the first write */
static int roundtrip(const char *s, size_t n, int *accepted) {
    clair_json v, w; char err[200];
    clair_buf b1 = {0, 0, 0, 0}, b2 = {0, 0, 0, 0};
    *accepted = 0;
    if (clair_json_parse(s, n, &v, err, sizeof err)) return 1;
    *accepted = 1;
    clair_json_write(&b1, &v);
    int ok = !clair_json_parse(b1.data, b1.len, &w, err, sizeof err);
    if (ok) { clair_json_write(&b2, &w); ok = b1.len == b2.len && !memcmp(b1.data, b2.data, b1.len); clair_json_free(&w); }
    clair_json_free(&v); clair_buf_free(&b1); clair_buf_free(&b2);
    return ok;
}

static void test_json_roundtrip_and_fuzz(long iters) {
    static const char *seeds[] = {
        "{\"prompt\":\"Why is the sky blue?\",\"response\":\"Rayleigh \\\"scattering\\\"\\n\\u00e9\",\"n\":[1,-2.5,3e7,true,null]}",
        "[\"\\ud83d\\ude00\",{\"a\":{\"b\":[[],{}]}},0.1,-0,1e-7,\"\\u0001\"]",
        "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"Revised answer:\\nHi\"}}]}",
    };
    static const char frag[] = "{}[]\",:\\u0123456789abcdefABCDEF-+.eEtrufalsn \n\t\x01\xc3\xa9\xed\xa0\x80\xf0\x9f\x98\x80\xff";
    size_t i;
    int acc, n_acc = 0;
    for (i = 0; i < sizeof seeds / sizeof *seeds; i++) {
        CHECK(roundtrip(seeds[i], strlen(seeds[i]), &acc) && acc, "round trip of seed %zu", i);
    }
    for (long it = 0; it < iters; it++) {
        const char *seed = seeds[rnd(3)];
        size_t n = strlen(seed), k;
        char buf[512];
        memcpy(buf, seed, n);
        int muts = 1 + (int)rnd(4);
        for (k = 0; k < (size_t)muts; k++) {
            unsigned op = rnd(4), pos = rnd((unsigned)n + 1);
            if (op == 0 && n > 1) { memmove(buf + pos, buf + pos + 1, n - pos - (pos < n)); n -= pos < n; }
            else if (op == 1 && n < sizeof buf - 2) { memmove(buf + pos + 1, buf + pos, n - pos); buf[pos] = frag[rnd(sizeof frag - 1)]; n++; }
            else if (pos < n) buf[pos] = frag[rnd(sizeof frag - 1)];
            else if (pos > 0) n = pos - 1;             /* truncate */
        }
        /* parse a malloc'd exact-size copy so ASan sees any read past the end */
        char *exact = (char *)malloc(n ? n : 1);
        memcpy(exact, buf, n);
        int ok = roundtrip(exact, n, &acc);
        n_acc += acc;
        if (!ok) { CHECK(0, "fuzz: accepted document does not round-trip: %.*s", (int)n, buf); }
        free(exact);
    }
    printf("json fuzz: %ld mutated documents, %d accepted and round-tripped\n", iters, n_acc);
}

/* ------------------------------------------------------------------------------- metrics: DP refs */

static long long lev_dp(const unsigned *a, size_t n, const unsigned *b, size_t m) {
    size_t i, j;
    long long *row = (long long *)malloc((m + 1) * sizeof *row), r;
    for (j = 0; j <= m; j++) row[j] = (long long)j;
    for (i = 1; i <= n; i++) {
        long long diag = row[0];
        row[0] = (long long)i;
        for (j = 1; j <= m; j++) {
            long long t = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best; diag = t;
        }
    }
    r = row[m];
    free(row);
    return r;
}

static void test_levenshtein_random(void) {
    unsigned a[400], b[400];
    int t, bad = 0;
    for (t = 0; t < 3000; t++) {
        size_t n = rnd(t < 2000 ? 140 : 400), m = rnd(t < 2000 ? 140 : 400), i;
        unsigned alpha = 1 + rnd(t % 3 == 0 ? 3 : 30);
        for (i = 0; i < n; i++) a[i] = 0x61 + rnd(alpha) + (rnd(5) == 0 ? 0x4E00 : 0);
        if (t % 2) { for (i = 0; i < m && i < n; i++) b[i] = a[i]; for (; i < m; i++) b[i] = 0x61 + rnd(alpha); for (i = 0; i < 3 && m; i++) b[rnd((unsigned)m)] = 0x61 + rnd(alpha); }
        else for (i = 0; i < m; i++) b[i] = 0x61 + rnd(alpha) + (rnd(5) == 0 ? 0x4E00 : 0);
        long long want = lev_dp(a, n, b, m), got = clair_levenshtein_u32(a, n, b, m);
        if (want != got && bad++ < 5) CHECK(0, "levenshtein n=%zu m=%zu alpha=%u: got %lld want %lld", n, m, alpha, got, want);
        checks++;
    }
    CHECK(bad == 0, "%d random Levenshtein mismatches", bad);
    /* long texts with few edits: the banded sweep's result is used directly; with distances
     * around the band's edges (64, 256, 1024) the widening path too */
    {
        static unsigned x[3200], y[3300];
        int e;
        for (t = 0; t < 24; t++) {
            size_t n = 500 + rnd(2600), m = 0, i;
            unsigned alpha = 2 + rnd(40);
            int edits = t < 8 ? (int)rnd(40) : t < 16 ? 50 + (int)rnd(300) : 200 + (int)rnd(900);
            for (i = 0; i < n; i++) x[i] = 'a' + rnd(alpha);
            for (i = 0; i < n && m < sizeof y / sizeof *y - 2; i++) {
                if ((int)rnd((unsigned)n) < edits) {
                    unsigned op = rnd(3);
                    if (op == 0) y[m++] = 'a' + rnd(alpha);                  /* substitute */
                    else if (op == 1) { y[m++] = 'a' + rnd(alpha); y[m++] = x[i]; }   /* insert */
                    /* op 2: delete */
                } else y[m++] = x[i];
            }
            long long want = lev_dp(x, n, y, m), got = clair_levenshtein_u32(x, n, y, m);
            e = want != got;
            if (e && bad++ < 5) CHECK(0, "long levenshtein n=%zu m=%zu: got %lld want %lld", n, m, got, want);
            checks++;
        }
        CHECK(bad == 0, "long-text Levenshtein mismatches");
    }
    /* bytes vs code points: "é" is 1 code point (2 bytes) */
    CHECK(clair_levenshtein("caf\xc3\xa9", 5, "cafe", 4) == 1, "code points, not bytes");
    CHECK(clair_levenshtein("\xff\xfe", 2, "\xff", 1) == 1, "invalid bytes count as one symbol each");
}

static size_t lcs_dp(const clair__tok *a, const char *sa, size_t n, const clair__tok *b, const char *sb, size_t m) {
    size_t i, j, *row = (size_t *)calloc(m + 1, sizeof *row), r;
    for (i = 1; i <= n; i++) {
        size_t diag = 0;
        for (j = 1; j <= m; j++) {
            size_t t = row[j];
            int eq = a[i - 1].len == b[j - 1].len && !memcmp(sa + a[i - 1].off, sb + b[j - 1].off, a[i - 1].len);
            row[j] = eq ? diag + 1 : (row[j] > row[j - 1] ? row[j] : row[j - 1]);
            diag = t;
        }
    }
    r = row[m];
    free(row);
    return r;
}

/* Rebuilds a and b from the script; checks spans tile both texts. */
static int script_ok(const char *a, size_t na, const char *b, size_t nb, const clair_diff *d) {
    size_t i, pa = 0, pb = 0;
    for (i = 0; i < d->n; i++) {
        const clair_edit *e = &d->ops[i];
        if (e->a_off != pa || e->b_off != pb) return 0;
        if (e->op == CLAIR_EDIT_EQUAL && (e->a_len != e->b_len || memcmp(a + e->a_off, b + e->b_off, e->a_len))) return 0;
        if (e->op == CLAIR_EDIT_DELETE && e->b_len) return 0;
        if (e->op == CLAIR_EDIT_INSERT && e->a_len) return 0;
        if (i && e->op == d->ops[i - 1].op) return 0;                       /* merged */
        if (i && e->op == CLAIR_EDIT_DELETE && d->ops[i - 1].op == CLAIR_EDIT_INSERT) return 0;   /* deletions first */
        pa += e->a_len; pb += e->b_len;
    }
    return pa == na && pb == nb;
}

static void test_diff_random(void) {
    static const char *w[] = { "a", "b", "c", "the", "cat", " ", "  ", "\n", "d\xc3\xa9j\xc3\xa0", "\xe4\xb8\xad" };
    int t, bad = 0;
    for (t = 0; t < 1500; t++) {
        char a[2000], b[2000];
        size_t na = 0, nb = 0, k, n = rnd(60), m;
        int alpha = 2 + (int)rnd(8);
        for (k = 0; k < n; k++) { const char *x = w[rnd((unsigned)alpha)]; size_t l = strlen(x); memcpy(a + na, x, l); na += l; a[na++] = ' '; }
        if (t % 2) { memcpy(b, a, na); nb = na; for (k = rnd(6); k-- > 0 && nb > 2;) { size_t p = rnd((unsigned)nb); b[p] = (char)('a' + rnd(3)); } }
        else { m = rnd(60); for (k = 0; k < m; k++) { const char *x = w[rnd((unsigned)alpha)]; size_t l = strlen(x); memcpy(b + nb, x, l); nb += l; b[nb++] = ' '; } }
        clair_diff d;
        if (clair_diff_tokens(a, na, b, nb, &d)) { CHECK(0, "diff failed"); continue; }
        clair__tok *ta, *tb;
        size_t ka = clair__tokenize(a, na, 0, &ta), kb = clair__tokenize(b, nb, 0, &tb);
        size_t lcs = lcs_dp(ta, a, ka, tb, b, kb);
        clair_metrics mm;
        clair_metrics_compute(a, na, b, nb, &mm);            /* bit-parallel LCS count */
        int ok = d.tokens_a == ka && d.tokens_b == kb && d.n_del + d.n_ins == ka + kb - 2 * lcs && script_ok(a, na, b, nb, &d) &&
                 mm.token_edits == ka + kb - 2 * lcs && (long long)clair__token_lcs(a, ta, ka, b, tb, kb) == (long long)lcs;
        if (!ok && bad++ < 5) CHECK(0, "diff t=%d: del %zu ins %zu, want total %zu", t, d.n_del, d.n_ins, ka + kb - 2 * lcs);
        checks++;
        free(ta); free(tb);
        clair_diff_free(&d);
    }
    CHECK(bad == 0, "%d random diff mismatches", bad);
    /* rendering */
    const char *x = "The cat sat on teh mat.", *y = "The cat sat on the red mat.";
    clair_diff d;
    clair_buf r = {0, 0, 0, 0};
    clair_diff_tokens(x, strlen(x), y, strlen(y), &d);
    clair_diff_render(&r, x, y, &d);
    CHECK(!strcmp(r.data, "The cat sat on [-teh-]{+the red+} mat."), "render: %s", r.data);
    clair_diff_free(&d); clair_buf_free(&r);
}

/* ----------------------------------------------------------------------- metrics vs expectations */

static char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END); long sz = ftell(f); fseek(f, 0, SEEK_SET);
    char *s = (char *)malloc((size_t)sz + 1);
    *n = fread(s, 1, (size_t)sz, f); s[*n] = 0;
    fclose(f);
    return s;
}

static void test_expectations(const char *path) {
    size_t n, i = 0, lineno = 0, count = 0;
    char *s = read_file(path, &n);
    CHECK(s != NULL, "cannot read %s", path);
    if (!s) return;
    while (i < n) {
        size_t e = i;
        while (e < n && s[e] != '\n') e++;
        lineno++;
        clair_json v; char err[200];
        if (clair_json_parse(s + i, e - i, &v, err, sizeof err)) { CHECK(0, "%s line %zu: %s", path, lineno, err); i = e + 1; continue; }
        const clair_json *a = clair_json_get(&v, "a"), *b = clair_json_get(&v, "b");
        long long lev = -1, te = -1, tka = -1, tkb = -1; double er = -1, jac = -1;
        clair_json_get_int(&v, "levenshtein", &lev); clair_json_get_int(&v, "token_edits", &te);
        clair_json_get_int(&v, "tokens_a", &tka); clair_json_get_int(&v, "tokens_b", &tkb);
        clair_json_get_num(&v, "edit_ratio", &er); clair_json_get_num(&v, "jaccard", &jac);
        clair_metrics m;
        CHECK(!clair_metrics_compute(a->str, a->len, b->str, b->len, &m), "metrics failed");
        CHECK(m.levenshtein == lev, "line %zu: levenshtein %lld, rapidfuzz %lld", lineno, m.levenshtein, lev);
        CHECK(fabs(m.edit_ratio - er) < 1e-12, "line %zu: edit_ratio %.17g, rapidfuzz %.17g", lineno, m.edit_ratio, er);
        CHECK(fabs(m.jaccard - jac) < 1e-12, "line %zu: jaccard %.17g, python %.17g", lineno, m.jaccard, jac);
        CHECK((long long)m.token_edits == te, "line %zu: token edits %zu, rapidfuzz Indel %lld", lineno, m.token_edits, te);
        CHECK((long long)m.tokens_a == tka && (long long)m.tokens_b == tkb, "line %zu: token counts %zu %zu vs %lld %lld", lineno, m.tokens_a, m.tokens_b, tka, tkb);
        /* symmetric */
        clair_metrics m2;
        clair_metrics_compute(b->str, b->len, a->str, a->len, &m2);
        CHECK(m2.levenshtein == m.levenshtein && m2.token_edits == m.token_edits && m2.jaccard == m.jaccard, "line %zu: not symmetric", lineno);
        clair_json_free(&v);
        count++;
        i = e + 1;
    }
    CHECK(count >= 100, "only %zu expectation records", count);
    printf("expectations: %zu pairs match rapidfuzz/Python\n", count);
    free(s);
}

/* ------------------------------------------------------------------------------------- parsing */

static void test_parse(void) {
    static const struct { const char *reply, *rationale, *revision; clair_parse_status st; } cases[] = {
        { "The answer has a typo.\nRevised answer:\nThe cat sat.", "The answer has a typo.", "The cat sat.", CLAIR_PARSE_OK },
        { "Reasoning: fix 2+2.\n\nRevised answer: 2 + 2 = 4.", "fix 2+2.", "2 + 2 = 4.", CLAIR_PARSE_OK },
        { "**Reasoning:** typo\n\n**Revised answer:**\n\nHello", "typo", "Hello", CLAIR_PARSE_OK },
        { "x\n**Revised Answer**:\nHello\n", "x", "Hello", CLAIR_PARSE_OK },
        { "x\n## Revised answer\n\nHello *world*", "x", "Hello *world*", CLAIR_PARSE_OK },
        { "x\n### REVISED ANSWER\nHello", "x", "Hello", CLAIR_PARSE_OK },
        { "x\n__Revised answer__\nHello", "x", "Hello", CLAIR_PARSE_OK },
        { "x\n  revised_answer:  Hello  ", "x", "Hello", CLAIR_PARSE_OK },
        /* the reference code's forms */
        { "{teacher_reasoning}: too terse.\n{corrected_student_solution}: The full answer.", "too terse.", "The full answer.", CLAIR_PARSE_OK },
        { "{teacher_reasoning} terse {corrected_student_solution} Full.", "terse", "Full.", CLAIR_PARSE_OK },
        { "Reasoning first.\n\n**Corrected Student Solution:**\nFull answer.", "Reasoning first.", "Full answer.", CLAIR_PARSE_OK },
        { "Reasoning.\nCorrected student solution:\nFull.", "Reasoning.", "Full.", CLAIR_PARSE_OK },
        /* the first marker wins; later marker-like lines stay in the revision */
        { "r\nRevised answer:\nA\nRevised answer:\nB", "r", "A\nRevised answer:\nB", CLAIR_PARSE_OK },
        /* not markers: in the middle of a line, or a line that goes on without a colon */
        { "I give the revised answer below.\nThe revised answer: is wrong", NULL, NULL, CLAIR_PARSE_NO_MARKER },
        { "Revised answer follows\nHello", NULL, NULL, CLAIR_PARSE_NO_MARKER },
        { "No marker at all.", NULL, NULL, CLAIR_PARSE_NO_MARKER },
        { "", NULL, NULL, CLAIR_PARSE_NO_MARKER },
        { "Reasoning.\nRevised answer:\n   \n", "Reasoning.", "", CLAIR_PARSE_EMPTY },
        { "Revised answer: Only the revision", "", "Only the revision", CLAIR_PARSE_OK },
        { "\xe7\x90\x86\xe7\x94\xb1\nRevised answer:\n\xe6\x9d\xb1\xe4\xba\xac", "\xe7\x90\x86\xe7\x94\xb1", "\xe6\x9d\xb1\xe4\xba\xac", CLAIR_PARSE_OK },
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof *cases; i++) {
        clair_reply r;
        clair_parse_status st = clair_parse_reply(cases[i].reply, strlen(cases[i].reply), "Revised answer:", &r);
        CHECK(st == cases[i].st, "parse case %zu: status %s, want %s", i, clair_parse_status_name(st), clair_parse_status_name(cases[i].st));
        if (st != cases[i].st || st == CLAIR_PARSE_NO_MARKER) continue;
        CHECK(r.rationale_len == strlen(cases[i].rationale) && !memcmp(r.rationale, cases[i].rationale, r.rationale_len),
              "parse case %zu: rationale '%.*s'", i, (int)r.rationale_len, r.rationale);
        CHECK(r.revision_len == strlen(cases[i].revision) && !memcmp(r.revision, cases[i].revision, r.revision_len),
              "parse case %zu: revision '%.*s'", i, (int)r.revision_len, r.revision);
    }
    /* a user marker with its own decoration */
    clair_reply r;
    CHECK(clair_parse_reply("why\n## Improved\nText", 20, "## Improved", &r) == CLAIR_PARSE_OK && r.revision_len == 4, "custom marker");
    /* NULL marker: only the reference forms */
    CHECK(clair_parse_reply("why\nRevised answer:\nText", 24, NULL, &r) == CLAIR_PARSE_NO_MARKER, "no user marker");
    /* chat completion content */
    clair_json v; char err[200]; const char *c; size_t cl;
    const char *ok = "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"hi\"}}]}";
    clair_json_parse(ok, strlen(ok), &v, err, sizeof err);
    CHECK(!clair_chat_content(&v, &c, &cl, err, sizeof err) && cl == 2 && !strcmp(c, "hi"), "chat content");
    clair_json_free(&v);
    const char *bad[] = { "{\"choices\":[]}", "{\"error\":{\"message\":\"overloaded\"}}", "{\"choices\":[{\"message\":{\"content\":null}}]}", "[1]" };
    for (i = 0; i < 4; i++) {
        clair_json_parse(bad[i], strlen(bad[i]), &v, err, sizeof err);
        CHECK(clair_chat_content(&v, &c, &cl, err, sizeof err) == -1 && err[0], "bad chat reply %zu", i);
        clair_json_free(&v);
    }
}

/* ------------------------------------------------------------------------------- filter, prompt */

static clair_verdict verdict(const clair_filter *f, const char *chosen, const char *rejected) {
    clair_metrics m;
    clair_metrics_compute(chosen, strlen(chosen), rejected, strlen(rejected), &m);
    return clair_filter_check(f, chosen, strlen(chosen), rejected, strlen(rejected), &m);
}

static void test_filter(void) {
    clair_filter f = clair_filter_default(), off = {0, 0, 0, 0};
    const char *rej = "The capital of Australia is Sydney, which is also its largest city.";
    CHECK(verdict(&f, "The capital of Australia is Canberra; Sydney is its largest city.", rej) == CLAIR_KEEP, "minimal revision kept");
    CHECK(verdict(&f, "  \n ", rej) == CLAIR_DROP_EMPTY, "empty");
    CHECK(verdict(&f, "\n The capital of Australia is Sydney, which is also its largest city.  ", rej) == CLAIR_DROP_IDENTICAL, "identical after trim");
    CHECK(verdict(&f, "Bananas grow in tropical climates and are rich in potassium, my friend.", rej) == CLAIR_DROP_EDIT_RATIO, "rewrite -> edit_ratio");
    clair_filter j = off; j.min_jaccard = 0.9;
    CHECK(verdict(&j, "The capital of Australia is Canberra; Sydney is its largest city.", rej) == CLAIR_DROP_JACCARD, "jaccard");
    clair_filter lo = off; lo.min_length_ratio = 0.5;
    CHECK(verdict(&lo, "The capital of Australia is Canberra.", "The capital of Australia is Canberra. It has a population of about 460,000 people, and it was purpose-built as a compromise between Sydney and Melbourne.") == CLAIR_DROP_LENGTH_RATIO, "length ratio low");
    clair_filter l = off; l.max_length_ratio = 1.5;
    CHECK(verdict(&l, "abc def ghi jkl", "abc def") == CLAIR_DROP_LENGTH_RATIO, "length ratio high");
    CHECK(verdict(&off, "Bananas.", rej) == CLAIR_KEEP, "all checks off keeps any real revision");
    CHECK(!strcmp(clair_verdict_name(CLAIR_DROP_JACCARD), "jaccard") && !strcmp(clair_verdict_name(CLAIR_KEEP), "kept"), "names");
}

static void test_prompt(void) {
    clair_buf b = {0, 0, 0, 0};
    const char *task = "Say \"hi\" {answer}", *ans = "hi\n\xc3\xa9";
    clair_request_body(&b, "m-1", 0.7, 4096, NULL, task, strlen(task), ans, strlen(ans));
    clair_json v; char err[200];
    CHECK(!clair_json_parse(b.data, b.len, &v, err, sizeof err), "request body is JSON: %s", err);
    const clair_json *msgs = clair_json_get(&v, "messages");
    CHECK(msgs && msgs->n == 2, "system + user messages");
    const char *user = clair_json_get_str(&msgs->items[1], "content");
    CHECK(user && strstr(user, "<task>\nSay \"hi\" {answer}\n</task>") && strstr(user, "<student_answer>\nhi\n\xc3\xa9\n</student_answer>"),
          "placeholders filled once (a placeholder inside the task stays literal)");
    CHECK(strstr(user, "\"Revised answer:\"") != NULL, "prompt asks for the marker the parser expects");
    double t; long long mt;
    CHECK(!clair_json_get_num(&v, "temperature", &t) && t == 0.7 && !clair_json_get_int(&v, "max_tokens", &mt) && mt == 4096, "sampling settings");
    CHECK(!strcmp(clair_json_get_str(&v, "model"), "m-1"), "model");
    clair_json_free(&v);
    clair_buf_free(&b);
    clair_template tp = { NULL, "T={prompt} A={answer} {other}", "Fixed:" };
    clair_prompt_messages(&b, &tp, "p", 1, "a", 1);
    CHECK(!strcmp(b.data, "[{\"role\":\"user\",\"content\":\"T=p A=a {other}\"}]"), "custom template: %s", b.data);
    clair_buf_free(&b);
}

/* Random bytes (invalid UTF-8 included) through the parser and the metrics: spans stay inside
 * the input, Levenshtein equals the DP on the decoded code points, the diff tiles both texts.
 * Under ASan this is the parser's and the metrics' fuzz loop. */
static void test_fuzz_text(long iters) {
    static const char *pieces[] = { "Revised answer:", "**", "##", "\n", " ", "{corrected_student_solution}",
        "Reasoning:", "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80", "\xff", "\xc3", "\xed\xa0\x80", "a", "b", ":", "_" };
    long it;
    int bad = 0;
    for (it = 0; it < iters; it++) {
        char buf[2][200];
        size_t n[2], k, side;
        for (side = 0; side < 2; side++) {
            n[side] = 0;
            size_t parts = rnd(12);
            for (k = 0; k < parts; k++) {
                const char *p = pieces[rnd(sizeof pieces / sizeof *pieces)];
                size_t l = strlen(p);
                memcpy(buf[side] + n[side], p, l); n[side] += l;
            }
        }
        char *a = (char *)malloc(n[0] ? n[0] : 1), *b = (char *)malloc(n[1] ? n[1] : 1);
        memcpy(a, buf[0], n[0]); memcpy(b, buf[1], n[1]);
        clair_reply r;
        clair_parse_status st = clair_parse_reply(a, n[0], "Revised answer:", &r);
        if (st != CLAIR_PARSE_NO_MARKER &&
            !(r.revision >= a && r.revision + r.revision_len <= a + n[0] && r.rationale >= a && r.rationale + r.rationale_len <= a + n[0]))
            bad++;
        unsigned ua[200], ub[200];
        size_t ka = clair_utf8_decode(a, n[0], ua), kb = clair_utf8_decode(b, n[1], ub);
        if (clair_levenshtein(a, n[0], b, n[1]) != lev_dp(ua, ka, ub, kb)) bad++;
        clair_diff d;
        if (clair_diff_tokens(a, n[0], b, n[1], &d) || !script_ok(a, n[0], b, n[1], &d)) bad++;
        clair_diff_free(&d);
        double j = clair_jaccard(a, n[0], b, n[1]);
        if (!(j >= 0 && j <= 1)) bad++;
        free(a); free(b);
        checks++;
    }
    CHECK(bad == 0, "%d fuzzed texts broke a parser/metric contract", bad);
    printf("text fuzz: %ld random byte strings through parse, Levenshtein, diff, Jaccard\n", iters);
}

/* ------------------------------------------------------------- JSON writers with arbitrary bytes */

/* The string a JSON writer's output decodes to, NUL-free for the comparisons below. */
static int written_as(const char *in, size_t n, const char *want) {
    clair_buf b = {0, 0, 0, 0};
    clair_json v;
    char err[200];
    int ok;
    clair_json_write_string(&b, in, n);
    ok = !b.oom && !clair_json_parse(b.data, b.len, &v, err, sizeof err);
    if (ok) { ok = v.type == CLAIR_JSON_STRING && v.len == strlen(want) && !memcmp(v.str, want, v.len); clair_json_free(&v); }
    clair_buf_free(&b);
    return ok;
}

/* Output of a writer: strict JSON (so valid UTF-8: the reader checks it) of the expected type. */
static int strict_json(const clair_buf *b, clair_json_type type) {
    clair_json v;
    char err[200];
    if (b->oom || !b->data || clair_utf8_check(b->data, b->len) != b->len) return 0;
    if (clair_json_parse(b->data, b->len, &v, err, sizeof err)) return 0;
    int ok = v.type == type;
    clair_json_free(&v);
    return ok;
}

static void test_json_writers_any_bytes(long iters) {
    /* invalid sequences become U+FFFD per maximal subpart, exactly as Python's
     * bytes.decode("utf-8", "replace") (the expected strings were printed by Python) */
    static const struct { const char *in; size_t n; const char *want; } v[] = {
        { "\xff", 1, "\xef\xbf\xbd" },
        { "\xe2\x82", 2, "\xef\xbf\xbd" },
        { "\xe2\x82" "A", 3, "\xef\xbf\xbd" "A" },
        { "\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
        { "\xf0\x9f\x98", 3, "\xef\xbf\xbd" },
        { "\xc0\xaf", 2, "\xef\xbf\xbd\xef\xbf\xbd" },
        { "\xf4\x90\x80\x80", 4, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
        { "\xe0\x80\xaf", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
        { "Answer:\x9f" "5.", 10, "Answer:\xef\xbf\xbd" "5." },       /* half a character sampled by a model */
        { "\xf0\x9f\x98\x80\xf0", 5, "\xf0\x9f\x98\x80\xef\xbf\xbd" },
        { "\xc3\xa9\xc3", 3, "\xc3\xa9\xef\xbf\xbd" },
        { "caf\xc3\xa9 \"q\" \\ \x01\n", 14, "caf\xc3\xa9 \"q\" \\ \x01\n" },
    };
    size_t i;
    long it;
    for (i = 0; i < sizeof v / sizeof *v; i++) CHECK(written_as(v[i].in, v[i].n, v[i].want), "writer: vector %zu", i);
    /* excerpts and redaction */
    CHECK(clair_utf8_cut("ab\xc3\xa9", 4, 3) == 2, "cut before a two-byte character");
    CHECK(clair_utf8_cut("ab\xc3\xa9", 4, 4) == 4 && clair_utf8_cut("ab", 2, 9) == 2, "cut: whole text");
    CHECK(clair_utf8_cut("\xf0\x9f\x98\x80x", 5, 3) == 0, "cut inside a four-byte character");
    CHECK(clair_utf8_cut("a\xff\xfe", 3, 2) == 2, "an invalid byte is a character of its own");
    {
        char t[] = "key sk-1 and sk-1sk-1 end";
        CHECK(clair_redact(t, strlen(t), "sk-1") == 3 && !strcmp(t, "key **** and ******** end"), "redact: %s", t);
        CHECK(clair_redact(t, strlen(t), "") == 0 && clair_redact(t, strlen(t), NULL) == 0, "redact nothing");
    }
    /* every writer of clair.h with random bytes: strings, keys, whole trees, the prompt and
     * the request body; the output is always strict JSON (valid UTF-8) */
    for (it = 0; it < iters; it++) {
        char a[64], k[16];
        size_t na = rnd(sizeof a), nk = 1 + rnd(sizeof k - 1), j;
        clair_buf b = {0, 0, 0, 0};
        clair_json str, obj, arr;
        char *key;
        for (j = 0; j < na; j++) a[j] = (char)rnd(256);
        for (j = 0; j < nk; j++) k[j] = (char)rnd(256);
        clair_json_write_string(&b, a, na);
        CHECK(strict_json(&b, CLAIR_JSON_STRING), "write_string of random bytes");
        b.len = 0;
        /* a tree built by hand (as a program may build one) with raw bytes in a key and a value */
        memset(&str, 0, sizeof str); memset(&obj, 0, sizeof obj); memset(&arr, 0, sizeof arr);
        str.type = CLAIR_JSON_STRING; str.str = a; str.len = na;
        key = k;
        obj.type = CLAIR_JSON_OBJECT; obj.n = 1; obj.items = &str; obj.keys = &key; obj.key_lens = &nk;
        arr.type = CLAIR_JSON_ARRAY; arr.n = 1; arr.items = &obj;
        clair_json_write(&b, &arr);
        CHECK(strict_json(&b, CLAIR_JSON_ARRAY), "write of a tree with random bytes");
        b.len = 0;
        clair_prompt_messages(&b, NULL, a, na, k, nk);
        CHECK(strict_json(&b, CLAIR_JSON_ARRAY), "prompt messages of random bytes");
        b.len = 0;
        clair_request_body(&b, k[0] ? "m\xff" : "m", it % 2 ? 0.7 : (double)NAN, 16, NULL, k, nk, a, na);
        CHECK(strict_json(&b, CLAIR_JSON_OBJECT), "request body of random bytes");
        clair_buf_free(&b);
    }
    printf("json writers: %ld random byte strings through every writer, all strict JSON\n", iters);
}

int main(int argc, char **argv) {
    const char *expect = argc > 1 ? argv[1] : "tests/clair/expect_metrics.jsonl";
    long iters = argc > 2 ? atol(argv[2]) : 20000;
    test_json_corpus();
    test_json_values();
    test_json_depth();
    test_json_roundtrip_and_fuzz(iters);
    test_levenshtein_random();
    test_diff_random();
    test_expectations(expect);
    test_parse();
    test_fuzz_text(iters / 2);
    test_filter();
    test_prompt();
    test_json_writers_any_bytes(iters / 4);
    printf("%d checks, %d failed\n", checks, fails);
    return fails ? 1 : 0;
}
