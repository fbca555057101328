/* train/generate.c - `trainer generate` (see generate.h): one answer per prompt, sampled with a
 * KV cache that holds up to --batch prompts at once (llama_decode: a free slot takes the next
 * prompt whole, the others advance one token, all in one forward), written in prompt order line
 * by line to OUT.partial and renamed to OUT when complete. */
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
#include "convert.h"
#include "data.h"
#include "../util.h"
#ifdef _OPENMP
#include <omp.h>
#endif

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
 * Many answers at once
 * ========================================================================================== */

typedef struct {
    double temperature, top_p;
    int max_new;
    uint64_t seed;
} sampling;

/* A slot of the KV cache: the prompt it answers (-1: free), that prompt's own random stream,
 * the positions its answer may reach, and the token to feed at the next step. */
typedef struct {
    int prompt;
    uint64_t rng;
    int cap;
    int next;
} gen_slot;

/* An answer: its ids, and "stop" or "length" once finished (NULL before). Answers are written in
 * prompt order, so one that finishes early waits for those before it. */
typedef struct {
    tok_ids gen;
    const char *finish;
} answer;

/* Everything one generation run holds: the prompts, B slots, the cache, and the answers of
 * prompts first .. n-1. */
typedef struct {
    const llama_model *m;
    const tokenizer *tok;
    const prompt_set *ps;
    const char *src;                 /* the prompts file, for messages */
    sampling s;
    int B, first, next_prompt;       /* slots; first prompt of this run; next prompt to start */
    gen_slot *slot;                  /* [B] */
    llama_kv_cache kv;               /* B slots */
    answer *ans;                     /* [ps->n], used from `first` on */
    int *e_slot, *e_start, *e_tok;   /* one llama_decode call: slots, token ranges, tokens */
    float *logits;                   /* [B, V] */
    prob_id *work;                   /* [V] */
    double toks;                     /* tokens generated so far */
} gen_run;

/* Positions prompt p's answer may reach: prompt + max_new, within the model's context. */
static int answer_cap(const gen_run *r, int p)
{
    const int ctx = r->m->cfg.max_position_embeddings;
    int cap = r->ps->items[p].n_ids + r->s.max_new;
    return ctx > 0 && cap > ctx ? ctx : cap;
}

static int is_stop(const gen_run *r, int id)
{
    int e, stop = id == tokenizer_eos_id(r->tok);
    for (e = 0; e < r->m->cfg.n_eos; e++) stop |= id == r->m->cfg.eos_token_ids[e];
    return stop;
}

/* Builds the next llama_decode call: a free slot takes the next prompt (all its tokens: the
 * prefill), a busy slot feeds its last sampled token. A prompt that fills the context is
 * answered empty at once. Returns the number of entries. */
static int plan_step(gen_run *r)
{
    int b, n = 0, T = 0;
    r->e_start[0] = 0;
    for (b = 0; b < r->B; b++) {
        gen_slot *sl = &r->slot[b];
        while (sl->prompt < 0 && r->next_prompt < r->ps->n) {
            const int p = r->next_prompt++;
            const prompt_item *it = &r->ps->items[p];
            if (it->n_ids >= answer_cap(r, p)) {
                fprintf(stderr,
                        "%s:%d: the prompt is %d tokens, the model's context is %d; answered with an "
                        "empty response\n", r->src, it->line, it->n_ids, answer_cap(r, p));
                r->ans[p].finish = "length";
                continue;
            }
            sl->prompt = p;
            sl->rng = rng_stream(r->s.seed, (uint64_t)p); /* prompt p's own stream */
            sl->cap = answer_cap(r, p);
            r->kv.len[b] = 0;
            memcpy(r->e_tok + T, it->ids, (size_t)it->n_ids * sizeof(int));
            T += it->n_ids;
            r->e_slot[n] = b;
            r->e_start[++n] = T;
        }
        if (sl->prompt < 0 || r->kv.len[b] == 0) continue; /* free, or just filled above */
        r->e_tok[T++] = sl->next;
        r->e_slot[n] = b;
        r->e_start[++n] = T;
    }
    return n;
}

/* Samples the next token of every entry of the step just decoded; finished answers free their
 * slot. */
static int sample_step(gen_run *r, int n, char *err, size_t errsz)
{
    const int V = r->m->cfg.vocab_size;
    int e;
    for (e = 0; e < n; e++) {
        gen_slot *sl = &r->slot[r->e_slot[e]];
        answer *a = &r->ans[sl->prompt];
        int id = sample_token(r->logits + (size_t)e * V, V, r->s.temperature, r->s.top_p, &sl->rng, r->work);
        if (is_stop(r, id)) {
            a->finish = "stop";
        } else {
            if (tok_ids_push(&a->gen, id)) return errf(err, errsz, "out of memory");
            r->toks += 1;
            sl->next = id;
            if ((int)a->gen.len >= r->s.max_new || r->kv.len[r->e_slot[e]] >= sl->cap) a->finish = "length";
        }
        if (a->finish) sl->prompt = -1;
    }
    return 0;
}

/* Sets up a run over prompts first .. ps->n - 1 with up to `batch` slots. */
static int gen_run_init(gen_run *r, const llama_model *m, const tokenizer *tok, const prompt_set *ps,
                        const char *src, const sampling *s, int first, int batch, char *err, size_t errsz)
{
    int p, b, cap = 1, prompt_max = 1;
    memset(r, 0, sizeof *r);
    r->m = m;
    r->tok = tok;
    r->ps = ps;
    r->src = src;
    r->s = *s;
    r->first = r->next_prompt = first;
    r->B = ps->n - first < batch ? ps->n - first : batch;
    if (r->B < 1) r->B = 1;
    for (p = first; p < ps->n; p++) {
        if (answer_cap(r, p) > cap) cap = answer_cap(r, p);
        if (ps->items[p].n_ids > prompt_max) prompt_max = ps->items[p].n_ids;
    }
    r->slot = (gen_slot *)malloc((size_t)r->B * sizeof *r->slot);
    r->ans = (answer *)calloc((size_t)(ps->n > 0 ? ps->n : 1), sizeof *r->ans);
    r->e_slot = (int *)malloc((size_t)r->B * sizeof(int));
    r->e_start = (int *)malloc((size_t)(r->B + 1) * sizeof(int));
    r->e_tok = (int *)malloc((size_t)r->B * prompt_max * sizeof(int));
    r->logits = (float *)malloc((size_t)r->B * m->cfg.vocab_size * sizeof(float));
    r->work = (prob_id *)malloc((size_t)m->cfg.vocab_size * sizeof(prob_id));
    if (!r->slot || !r->ans || !r->e_slot || !r->e_start || !r->e_tok || !r->logits || !r->work)
        return errf(err, errsz, "out of memory");
    for (b = 0; b < r->B; b++) r->slot[b].prompt = -1;
    return llama_kv_cache_alloc(&r->kv, &m->cfg, r->B, cap, err, errsz);
}

static void gen_run_free(gen_run *r)
{
    int p;
    if (r->ans)
        for (p = 0; p < r->ps->n; p++) tok_ids_free(&r->ans[p].gen);
    llama_kv_cache_free(&r->kv);
    free(r->slot);
    free(r->ans);
    free(r->e_slot);
    free(r->e_start);
    free(r->e_tok);
    free(r->logits);
    free(r->work);
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

/* Writes the finished answers that are next in prompt order; progress at most once a second. */
static int flush_answers(gen_run *r, FILE *f, int *written, double t0, double *last_report, char *err,
                         size_t errsz)
{
    const int n = r->ps->n;
    int before = *written;
    while (*written < n && r->ans[*written].finish) {
        answer *a = &r->ans[*written];
        if (write_answer(f, r->tok, &r->ps->items[*written], &a->gen, a->finish, err, errsz)) return -1;
        tok_ids_free(&a->gen);
        ++*written;
    }
    if (*written > before && (now_s() - *last_report >= 1.0 || *written == n)) {
        const double el = now_s() - t0;
        char eta[32];
        *last_report = now_s();
        fmt_duration(eta, sizeof eta, el / (*written - r->first) * (n - *written));
        fprintf(stderr, "generate: %d/%d prompts | %.1f tok/s | ETA %s\n", *written, n,
                r->toks / (el > 0 ? el : 1e-9), eta);
    }
    return 0;
}

/* Answers prompts r->first .. n-1, appending their lines to f in order. */
static int generate_all(gen_run *r, FILE *f, char *err, size_t errsz)
{
    const double t0 = now_s();
    double last_report = t0;
    int written = r->first;
    char derr[512];
    while (written < r->ps->n) {
        const int n = plan_step(r);
        if (n > 0) {
            if (llama_decode(r->m, &r->kv, n, r->e_slot, r->e_tok, r->e_start, r->logits, derr, sizeof derr))
                return errf(err, errsz, "%s", derr);
            if (sample_step(r, n, err, errsz)) return -1;
        }
        if (flush_answers(r, f, &written, t0, &last_report, err, errsz)) return -1;
    }
    return 0;
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
    int raw, overwrite, batch;
} generate_args;

static const char generate_usage[] =
    "usage: trainer generate --model MODEL --prompts FILE --out FILE [flags]\n"
    "\n"
    "Samples one response per prompt with a KV cache and writes the lines `clair revise` reads.\n"
    "Up to --batch prompts are decoded together; prompt i is sampled from its own random stream, so\n"
    "the output does not depend on the batch size.\n"
    "Output goes to FILE.partial line by line and is renamed to FILE when complete; rerunning the same\n"
    "command after an interruption continues where it stopped.\n"
    "\n";

/* The values generation can use: a prompt plus its answer stays inside an int of positions. */
static const opt_range generate_ranges[] = {{"--temperature", 0, 100},
                                             {"--top-p", 1e-9, 1},
                                             {"--max-new-tokens", 1, 1 << 24},
                                             {"--batch", 1, 4096},
                                             {NULL, 0, 0}};

static int generate_parse(generate_args *a, int argc, char **argv) {
    int rc;
    const opt_def defs[] = {
        {"--model", OPT_STR, &a->model, "MODEL",
         "a Hugging Face checkpoint directory, a .gguf file or a hub id ORG/NAME[@REV]"},
        {"--prompts", OPT_STR, &a->prompts, "FILE",
         "JSONL with a \"prompt\" per line (a string or a list of {role, content})"},
        {"--out", OPT_STR, &a->out, "FILE",
         "output JSONL: {\"prompt\", \"response\", \"finish_reason\"} per line"},
        {"--temperature", OPT_DBL, &a->s.temperature, "X", "sampling temperature (0: greedy)"},
        {"--top-p", OPT_DBL, &a->s.top_p, "X",
         "nucleus sampling: keep the most likely tokens up to this mass"},
        {"--max-new-tokens", OPT_INT, &a->s.max_new, "N", "at most N tokens per response"},
        {"--batch", OPT_INT, &a->batch, "N",
         "decode N prompts at once (each weight is read once per step for all of them)"},
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
    a->batch = 16;
    rc = opts_parse(WHO, generate_usage, defs, argc, argv, 2, NULL, 0, NULL);
    if (rc == 1) return 0;
    if (rc < 0 || opts_check_ranges(WHO, defs, generate_ranges)) return 2;
    if (!a->model || !a->prompts || !a->out) {
        report(WHO, "--model, --prompts and --out are required");
        return 2;
    }
    if (a->s.max_new < 1 || a->batch < 1 || a->s.temperature < 0 || !(a->s.top_p > 0 && a->s.top_p <= 1)) {
        report(WHO, "--max-new-tokens >= 1, --batch >= 1, --temperature >= 0, --top-p in (0, 1]");
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
    gen_run run;
    int have_model = 0, have_run = 0, status = 1, done_n = 0, rc;
    FILE *f = NULL;
    if ((rc = generate_parse(&a, argc, argv)) >= 0) return rc;
    memset(&ps, 0, sizeof ps);
    memset(&m, 0, sizeof m);
    if (file_exists(a.out) && !a.overwrite)
        return report(WHO, "%s exists; pass --overwrite to replace it", a.out);
    if (check_jsonl(a.prompts, err, sizeof err)) return report(WHO, "%s", err);
    if (model_tokenizer_load(&tok, a.model, a.chat, err, sizeof err)) return report(WHO, "tokenizer: %s", err);
    say_chat_template(tok, a.raw, a.chat);
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
    have_run = 1;
    if (gen_run_init(&run, &m, tok, &ps, a.prompts, &a.s, done_n, a.batch, err, sizeof err)) {
        report(WHO, "%s", err);
        goto done;
    }
#ifdef _OPENMP
    note_busy_machine(WHO, omp_get_max_threads());
#endif
    fprintf(stderr, "generate: %d prompts to answer, %d at a time (KV cache %.0f MiB)\n", ps.n - done_n,
            run.B, 8.0 * m.cfg.num_hidden_layers * run.B * run.kv.max_pos * m.cfg.num_key_value_heads *
                       m.cfg.head_dim / (1 << 20));
    if (generate_all(&run, f, err, sizeof err)) {
        report(WHO, "%s", err);
        goto done;
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
    if (have_run) gen_run_free(&run);
    if (tok) tokenizer_free(tok);
    if (have_model) llama_model_free(&m);
    prompt_set_free(&ps);
    return status;
}
