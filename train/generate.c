/* train/generate.c - `trainer generate` (see generate.h): one answer per prompt, sampled with a
 * KV cache, written line by line to OUT.partial and renamed to OUT when complete. */
#define _POSIX_C_SOURCE 200809L

#include "generate.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../clair.h"
#include "../llama/model.h"
#include "../llama/tokenizer.h"
#include "data.h"
#include "../util.h"

static const char *const WHO = "trainer generate";

/* ==========================================================================================
 * Sampling
 * ========================================================================================== */

static int cmp_prob_desc(const void *a, const void *b) {
    float x = ((const prob_id *)a)->p, y = ((const prob_id *)b)->p;
    if (x > y) return -1;
    if (x < y) return 1;
    return ((const prob_id *)a)->id - ((const prob_id *)b)->id; /* a total order: reproducible */
}

int sample_token(const float *logits, int V, double temperature, double top_p, uint64_t *rng, prob_id *work) {
    int i, best = 0, n;
    double mx, sum = 0, r, cum;
    for (i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (temperature <= 0) return best;
    mx = logits[best];
    for (i = 0; i < V; i++) {
        double e = exp(((double)logits[i] - mx) / temperature);
        work[i].p = (float)e;
        work[i].id = i;
        sum += e;
    }
    n = V;
    if (top_p < 1.0) {
        qsort(work, (size_t)V, sizeof *work, cmp_prob_desc);
        cum = 0;
        for (i = 0; i < V; i++) {
            cum += work[i].p / sum;
            if (cum >= top_p) {
                n = i + 1;
                break;
            }
        }
        sum = 0;
        for (i = 0; i < n; i++) sum += work[i].p;
    }
    r = rng_uniform(rng) * sum;
    cum = 0;
    for (i = 0; i < n; i++) {
        cum += work[i].p;
        if (r < cum) return work[i].id;
    }
    return work[n - 1].id;
}

/* ==========================================================================================
 * One answer
 * ========================================================================================== */

typedef struct {
    double temperature, top_p;
    int max_new;
    uint64_t seed;
} sampling;

/* Generates the answer to prompt `it` (the i-th): ids into *gen, "stop" or "length" into *finish.
 * Prompt i samples from its own stream rng_stream(seed, i), so a resumed run is identical. */
static int answer_prompt(const llama_model *m, const tokenizer *tok, const char *src, const prompt_item *it,
                         int i, const sampling *s, float *logits, prob_id *work, tok_ids *gen,
                         const char **finish, char *err, size_t errsz) {
    llama_kv_cache kv;
    uint64_t rng = rng_stream(s->seed, (uint64_t)i);
    int cap = it->n_ids + s->max_new, t, e;
    memset(&kv, 0, sizeof kv);
    *finish = "length";
    if (m->cfg.max_position_embeddings > 0 && cap > m->cfg.max_position_embeddings)
        cap = m->cfg.max_position_embeddings;
    if (it->n_ids >= cap) {
        fprintf(
            stderr,
            "%s:%d: the prompt is %d tokens, the model's context is %d; answered with an empty response\n",
            src, it->line, it->n_ids, cap);
        return 0;
    }
    if (llama_kv_cache_alloc(&kv, &m->cfg, cap, err, errsz)) return -1;
    for (t = 0; t < it->n_ids; t++) /* the prompt, one position at a time */
        if (llama_decode_step(m, &kv, it->ids[t], logits, err, errsz)) goto fail;
    while (kv.n_pos < cap) {
        int id = sample_token(logits, m->cfg.vocab_size, s->temperature, s->top_p, &rng, work);
        int is_stop = id == tokenizer_eos_id(tok);
        for (e = 0; e < m->cfg.n_eos; e++) is_stop |= id == m->cfg.eos_token_ids[e];
        if (is_stop) {
            *finish = "stop";
            break;
        }
        if (tok_ids_push(gen, id)) {
            errf(err, errsz, "out of memory");
            goto fail;
        }
        if ((int)gen->len >= s->max_new || kv.n_pos >= cap) break;
        if (llama_decode_step(m, &kv, id, logits, err, errsz)) goto fail;
    }
    llama_kv_cache_free(&kv);
    return 0;
fail:
    llama_kv_cache_free(&kv);
    return -1;
}

/* The output line: {"prompt": <as read>, "response": "...", "finish_reason": "stop"|"length"}. */
static int write_answer(FILE *f, const tokenizer *tok, const prompt_item *it, const tok_ids *gen,
                        const char *finish, char *err, size_t errsz) {
    char *text = NULL;
    size_t tlen = 0;
    clair_buf ob = {0, 0, 0, 0};
    int rc = 0;
    if (tokenizer_decode(tok, gen->data, gen->len, &text, &tlen, err, errsz)) return -1;
    clair_buf_puts(&ob, "{\"prompt\":");
    clair_buf_puts(&ob, it->json);
    clair_buf_puts(&ob, ",\"response\":");
    clair_json_write_string(&ob, text, tlen);
    clair_buf_printf(&ob, ",\"finish_reason\":\"%s\"}\n", finish);
    if (ob.oom || fwrite(ob.data, 1, ob.len, f) != ob.len || fflush(f))
        rc = errf(err, errsz, "write failed (%s)", strerror(errno));
    clair_buf_free(&ob);
    free(text);
    return rc;
}

/* ==========================================================================================
 * Resume
 * ========================================================================================== */

/* Counts the complete lines of a partial output, checks that they answer prompts 0..k-1 in
 * order, and cuts a partial last line. */
static int partial_resume(const char *partial, const prompt_set *ps, int *done_n, char *err, size_t errsz) {
    size_t n, i, start = 0, keep = 0;
    char *text = read_file(partial, (size_t)1 << 34, &n, err, errsz);
    int k = 0;
    *done_n = 0;
    if (!text)
        return errno == ENOENT ? 0 : errf(err, errsz, "%s: cannot read (%s)", partial, strerror(errno));
    for (i = 0; i < n; i++) {
        clair_json j;
        char jerr[128];
        clair_buf pb = {0, 0, 0, 0};
        const clair_json *pv;
        int ok;
        if (text[i] != '\n') continue;
        if (clair_json_parse(text + start, i - start, &j, jerr, sizeof jerr)) break;
        pv = clair_json_get(&j, "prompt");
        if (pv) clair_json_write(&pb, pv);
        ok = pv && k < ps->n && pb.data && !strcmp(pb.data, ps->items[k].json);
        clair_buf_free(&pb);
        clair_json_free(&j);
        if (!ok) {
            free(text);
            return errf(err, errsz,
                        "%s: line %d does not answer prompt %d of the prompts file; delete it to start "
                        "again",
                        partial, k + 1, k + 1);
        }
        k++;
        start = i + 1;
        keep = start;
    }
    free(text);
    if (truncate(partial, (off_t)keep))
        return errf(err, errsz, "%s: cannot truncate (%s)", partial, strerror(errno));
    *done_n = k;
    return 0;
}

/* ==========================================================================================
 * The command
 * ========================================================================================== */

typedef struct {
    const char *model, *prompts, *out, *chat;
    sampling s;
    int raw, overwrite;
} generate_args;

static const char generate_usage[] =
    "usage: trainer generate --model DIR --prompts FILE --out FILE [flags]\n"
    "\n"
    "Samples one response per prompt with a KV cache and writes the lines `clair revise` reads.\n"
    "Output goes to FILE.partial line by line and is renamed to FILE when complete; rerunning the same\n"
    "command after an interruption continues where it stopped.\n"
    "\n";

static int generate_parse(generate_args *a, int argc, char **argv) {
    int rc;
    const opt_def defs[] = {
        {"--model", OPT_STR, &a->model, "DIR", "Hugging Face checkpoint"},
        {"--prompts", OPT_STR, &a->prompts, "FILE",
         "JSONL with a \"prompt\" per line (a string or a list of {role, content})"},
        {"--out", OPT_STR, &a->out, "FILE",
         "output JSONL: {\"prompt\", \"response\", \"finish_reason\"} per line"},
        {"--temperature", OPT_DBL, &a->s.temperature, "X", "sampling temperature (0: greedy)"},
        {"--top-p", OPT_DBL, &a->s.top_p, "X",
         "nucleus sampling: keep the most likely tokens up to this mass"},
        {"--max-new-tokens", OPT_INT, &a->s.max_new, "N", "at most N tokens per response"},
        {"--seed", OPT_U64, &a->s.seed, "S",
         "seed; prompt i is sampled from stream (S, i), so a resumed run is identical"},
        {"--chat-template", OPT_STR, &a->chat, "NAME",
         "override the template family: llama3, chatml, llama2"},
        {"--raw-text", OPT_FLAG, &a->raw, "", "no chat template: continue the prompt text"},
        {"--overwrite", OPT_FLAG, &a->overwrite, "", "replace an existing --out"},
        {NULL, OPT_END, NULL, NULL, NULL}};
    memset(a, 0, sizeof *a);
    a->s.temperature = 0.7;
    a->s.top_p = 1.0;
    a->s.max_new = 256;
    rc = opts_parse(WHO, generate_usage, defs, argc, argv, 2, NULL, 0, NULL);
    if (rc == 1) return 0;
    if (rc < 0) return 2;
    if (!a->model || !a->prompts || !a->out) {
        report(WHO, "--model, --prompts and --out are required");
        return 2;
    }
    if (a->s.max_new < 1 || a->s.temperature < 0 || !(a->s.top_p > 0 && a->s.top_p <= 1)) {
        report(WHO, "--max-new-tokens >= 1, --temperature >= 0, --top-p in (0, 1]");
        return 2;
    }
    return -1; /* go on */
}

int cmd_generate(int argc, char **argv) {
    generate_args a;
    char err[1024], partial[4200];
    tokenizer *tok = NULL;
    prompt_set ps;
    llama_model m;
    int have_model = 0, status = 1, i, done_n = 0, rc;
    float *logits = NULL;
    prob_id *work = NULL;
    FILE *f = NULL;
    double t0, toks = 0;
    if ((rc = generate_parse(&a, argc, argv)) >= 0) return rc;
    memset(&ps, 0, sizeof ps);
    memset(&m, 0, sizeof m);
    if (file_exists(a.out) && !a.overwrite)
        return report(WHO, "%s exists; pass --overwrite to replace it", a.out);
    if (tokenizer_load(&tok, a.model, a.chat, err, sizeof err)) return report(WHO, "tokenizer: %s", err);
    if (prompt_set_load(&ps, a.prompts, tok, a.raw, stderr, err, sizeof err)) {
        report(WHO, "%s", err);
        goto done;
    }
    fprintf(stderr, "%s: %d lines: %d prompts, %d malformed (skipped)\n", a.prompts, ps.n_lines, ps.n,
            ps.n_malformed);
    if (llama_model_load(&m, a.model, err, sizeof err)) {
        report(WHO, "%s", err);
        goto done;
    }
    have_model = 1;
    fmt(partial, sizeof partial, "%s.partial", a.out);
    if (partial_resume(partial, &ps, &done_n, err, sizeof err)) {
        report(WHO, "%s", err);
        goto done;
    }
    if (done_n > 0)
        fprintf(stderr, "continuing %s: %d of %d prompts already answered\n", partial, done_n, ps.n);
    f = fopen(partial, "ab");
    if (!f) {
        report(WHO, "cannot write %s (%s)", partial, strerror(errno));
        goto done;
    }
    logits = (float *)malloc((size_t)m.cfg.vocab_size * sizeof *logits);
    work = (prob_id *)malloc((size_t)m.cfg.vocab_size * sizeof *work);
    if (!logits || !work) {
        report(WHO, "out of memory");
        goto done;
    }
    t0 = now_s();
    for (i = done_n; i < ps.n; i++) {
        tok_ids gen = {0, 0, 0};
        const char *finish;
        double el;
        char eta[32];
        if (answer_prompt(&m, tok, a.prompts, &ps.items[i], i, &a.s, logits, work, &gen, &finish, err,
                          sizeof err) ||
            write_answer(f, tok, &ps.items[i], &gen, finish, err, sizeof err)) {
            tok_ids_free(&gen);
            report(WHO, "%s:%d: %s", a.prompts, ps.items[i].line, err);
            goto done;
        }
        toks += (double)gen.len;
        tok_ids_free(&gen);
        el = now_s() - t0;
        fmt_duration(eta, sizeof eta, el / (i + 1 - done_n) * (ps.n - i - 1));
        fprintf(stderr, "generate: %d/%d prompts | %.1f tok/s | ETA %s\n", i + 1, ps.n,
                toks / (el > 0 ? el : 1e-9), eta);
    }
    if (fsync(fileno(f)) || fclose(f)) {
        f = NULL;
        report(WHO, "cannot write %s", partial);
        goto done;
    }
    f = NULL;
    if (rename(partial, a.out)) {
        report(WHO, "rename %s -> %s: %s", partial, a.out, strerror(errno));
        goto done;
    }
    fprintf(stderr, "wrote %s (%d responses)\n", a.out, ps.n);
    status = 0;
done:
    if (f) fclose(f);
    if (tok) tokenizer_free(tok);
    if (have_model) llama_model_free(&m);
    prompt_set_free(&ps);
    free(logits);
    free(work);
    return status;
}
