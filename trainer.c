/* trainer.c - align a Llama checkpoint with the APO family of preference losses.
 *
 *   ./trainer                      the built-in demonstration (examples/, a few seconds)
 *   ./trainer train    ...         preference data -> aligned Hugging Face checkpoint
 *   ./trainer generate ...         sample answers (CLAIR's first step: the rejected responses)
 *   ./trainer eval     ...         reward metrics and log-probs of a model on preference data
 *   ./trainer init     ...         a randomly initialised checkpoint of any Llama shape
 *   ./trainer CMD --help           every flag of a command, with its default
 *
 * The training run reads like the algorithm (Anchored Preference Optimization, D'Oosterlinck et
 * al. 2024, with TRL DPOTrainer's conventions):
 *   1. data:      JSONL pairs -> chat template -> token ids (llama/data.c)
 *   2. reference: summed completion log-probs of every pair under the initial model, computed
 *                 once and cached beside the output (the reference model is never kept)
 *   3. updates:   per global batch: forward the policy on micro-batches, apo.h gives the loss
 *                 and dloss/dlogp per pair, backward accumulates gradients, clip by global
 *                 norm, one AdamW step with warmup + schedule
 *   4. checkpoint: Hugging Face weights + optimizer moments + data position, written to a
 *                 temporary directory and renamed, so a kill never leaves a half checkpoint.
 * The model math lives behind llama/model.h's backend table (CPU here, CUDA in kernels.cu).
 */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700

#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <errno.h>
#include <time.h>
#include <dirent.h>
#include <unistd.h>
#include <sys/stat.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define APO_IMPLEMENTATION
#include "apo.h"
#include "clair.h"
#include "llama/model.h"
#include "llama/tokenizer.h"
#include "llama/safetensors.h"
#include "llama/data.h"

#define MAX_TERMS 16
#define ERRSZ 1024

/* ========================================================================================== */
/* Small utilities: time, files, random numbers                                               */

/* snprintf through a function gcc does not look into: paths and messages are cut at the buffer
 * size (PATH_MAX is 4096, so a cut path cannot name a real file anyway). */
static void fmt(char *buf, size_t n, const char *f, ...) {
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, n, f, ap);
    va_end(ap);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fmt_duration(double s, char *buf, size_t n) {
    long t = (long)(s + 0.5);
    if (s != s || s < 0) fmt(buf, n, "?");
    else if (t >= 3600) fmt(buf, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60) fmt(buf, n, "%ldm%02lds", t / 60, t % 60);
    else fmt(buf, n, "%lds", t);
}

static int file_exists(const char *p) { struct stat st; return stat(p, &st) == 0; }
static int dir_exists(const char *p) { struct stat st; return stat(p, &st) == 0 && S_ISDIR(st.st_mode); }

static int mkdir_p(const char *path) {
    char tmp[4096];
    size_t i, n = strlen(path);
    if (n == 0 || n >= sizeof tmp) return -1;
    memcpy(tmp, path, n + 1);
    for (i = 1; i <= n; i++) {
        if (tmp[i] == '/' || tmp[i] == 0) {
            char c = tmp[i];
            tmp[i] = 0;
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
            tmp[i] = c;
        }
    }
    return dir_exists(path) ? 0 : -1;
}

/* Removes a directory of plain files (checkpoint directories are flat). */
static int rm_flat_dir(const char *path) {
    DIR *d = opendir(path);
    struct dirent *e;
    char p[4096];
    if (!d) return -1;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        fmt(p, sizeof p, "%s/%s", path, e->d_name);
        unlink(p);
    }
    closedir(d);
    return rmdir(path);
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) { fclose(f); return NULL; }
    buf = (char *)malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    fclose(f);
    if (buf) { buf[n] = 0; if (len) *len = (size_t)n; }
    return buf;
}

/* Writes data to path atomically: path.tmp, fsync, rename. */
static int write_file_atomic(const char *path, const char *data, size_t n, char *err, size_t errsz) {
    char tmp[4200];
    FILE *f;
    fmt(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (!f) { fmt(err, errsz, "%s: cannot write (%s)", tmp, strerror(errno)); return -1; }
    if (fwrite(data, 1, n, f) != n || fflush(f) || fsync(fileno(f))) {
        fmt(err, errsz, "%s: write failed (%s); is the disk full?", tmp, strerror(errno));
        fclose(f); unlink(tmp); return -1;
    }
    fclose(f);
    if (rename(tmp, path)) { fmt(err, errsz, "%s: rename failed (%s)", path, strerror(errno)); unlink(tmp); return -1; }
    return 0;
}

/* splitmix64: the generator for shuffling and sampling. Its whole state is one integer, so
 * "RNG state" in a checkpoint is exact and tiny. */
static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static double rng_uniform(uint64_t *s) { return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }
/* An independent stream for (seed, a): e.g. the shuffle of epoch a, the sampling of prompt a. */
static uint64_t rng_stream(uint64_t seed, uint64_t a) {
    uint64_t s = seed ^ (0xd1b54a32d192ed03ULL * (a + 1));
    rng_next(&s);
    return s;
}
static void shuffle(int *idx, int n, uint64_t *rng) {
    int i;
    for (i = n - 1; i > 0; i--) {
        int j = (int)(rng_uniform(rng) * (double)(i + 1));
        int t = idx[i]; idx[i] = idx[j]; idx[j] = t;
    }
}

/* ========================================================================================== */
/* Command-line flags: one table per command; --help prints it with the current defaults.    */

typedef enum { OPT_STR, OPT_INT, OPT_DBL, OPT_FLAG, OPT_U64 } opt_kind;
typedef struct {
    const char *name;        /* "--beta" */
    opt_kind kind;
    void *dst;
    const char *metavar;     /* "X" */
    const char *help;
} opt_def;

static void print_opts(FILE *out, const opt_def *d) {
    for (; d->name; d++) {
        char left[64], def[96] = "";
        fmt(left, sizeof left, "%s%s%s", d->name, d->kind == OPT_FLAG ? "" : " ", d->kind == OPT_FLAG ? "" : d->metavar);
        switch (d->kind) {
        case OPT_STR: if (*(char **)d->dst) fmt(def, sizeof def, " (default %s)", *(char **)d->dst); break;
        case OPT_INT: fmt(def, sizeof def, " (default %d)", *(int *)d->dst); break;
        case OPT_DBL: fmt(def, sizeof def, " (default %g)", *(double *)d->dst); break;
        case OPT_U64: fmt(def, sizeof def, " (default %llu)", (unsigned long long)*(uint64_t *)d->dst); break;
        case OPT_FLAG: break;
        }
        fprintf(out, "  %-24s %s%s\n", left, d->help, def);
    }
}

/* Parses argv[first..argc). Returns 0, 1 for --help, -1 on error (message printed). */
static int parse_opts(const char *cmd, const opt_def *defs, int argc, char **argv, int first) {
    int i;
    for (i = first; i < argc; i++) {
        const char *a = argv[i], *val = NULL, *eq;
        const opt_def *d;
        size_t nlen;
        char *end;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 1;
        if (strncmp(a, "--", 2)) {
            fprintf(stderr, "trainer %s: unexpected argument '%s' (flags start with --; see trainer %s --help)\n", cmd, a, cmd);
            return -1;
        }
        eq = strchr(a, '=');
        nlen = eq ? (size_t)(eq - a) : strlen(a);
        for (d = defs; d->name; d++) if (strlen(d->name) == nlen && !strncmp(d->name, a, nlen)) break;
        if (!d->name) {
            fprintf(stderr, "trainer %s: unknown flag '%.*s' (see trainer %s --help)\n", cmd, (int)nlen, a, cmd);
            return -1;
        }
        if (d->kind == OPT_FLAG) {
            if (eq) { fprintf(stderr, "trainer %s: %s takes no value\n", cmd, d->name); return -1; }
            *(int *)d->dst = 1;
            continue;
        }
        if (eq) val = eq + 1;
        else if (i + 1 < argc) val = argv[++i];
        else { fprintf(stderr, "trainer %s: %s needs a value (%s)\n", cmd, d->name, d->metavar); return -1; }
        errno = 0;
        switch (d->kind) {
        case OPT_STR: *(const char **)d->dst = val; break;
        case OPT_INT: {
            long v = strtol(val, &end, 10);
            if (*val == 0 || *end || errno || v < -2147483647L || v > 2147483647L) {
                fprintf(stderr, "trainer %s: %s expects an integer, got '%s'\n", cmd, d->name, val); return -1;
            }
            *(int *)d->dst = (int)v; break;
        }
        case OPT_U64: {
            unsigned long long v = strtoull(val, &end, 10);
            if (*val == 0 || *val == '-' || *end || errno) {
                fprintf(stderr, "trainer %s: %s expects a non-negative integer, got '%s'\n", cmd, d->name, val); return -1;
            }
            *(uint64_t *)d->dst = (uint64_t)v; break;
        }
        case OPT_DBL: {
            double v = strtod(val, &end);
            if (*val == 0 || *end || errno || !isfinite(v)) {
                fprintf(stderr, "trainer %s: %s expects a number, got '%s'\n", cmd, d->name, val); return -1;
            }
            *(double *)d->dst = v; break;
        }
        case OPT_FLAG: break;
        }
    }
    return 0;
}

/* ========================================================================================== */
/* Model + backend                                                                            */

typedef struct {
    const char *device;      /* "cpu" | "cuda" */
    const char *precision;   /* "fp32" | "bf16" */
    int max_tokens;          /* largest batch the backend must plan for */
    int lean_optimizer;      /* CUDA: bf16 weights + bf16 moments (8 bytes/parameter) */
    int cuda_device;         /* CUDA device index */
} backend_opts;

static llama_backend *backend_open(llama_model *m, const backend_opts *o, char *err, size_t errsz) {
    if (!strcmp(o->device, "cpu")) {
        if (strcmp(o->precision, "fp32")) {
            fmt(err, errsz, "--precision %s: the CPU path computes in fp32 only (use --device cuda for bf16)", o->precision);
            return NULL;
        }
        return llama_cpu_backend_create(m, err, errsz);
    }
    if (!strcmp(o->device, "cuda")) {
        llama_cuda_opts co;
        memset(&co, 0, sizeof co);
        if (!strcmp(o->precision, "bf16")) co.bf16 = 1;
        else if (strcmp(o->precision, "fp32")) { fmt(err, errsz, "--precision must be fp32 or bf16, got '%s'", o->precision); return NULL; }
        co.recompute = 1;
        co.max_tokens = o->max_tokens;
        co.lean_optimizer = o->lean_optimizer;
        co.device = o->cuda_device;
        if (co.lean_optimizer && !co.bf16) { fmt(err, errsz, "--lean-optimizer needs --precision bf16"); return NULL; }
        return llama_cuda_backend_create(m, &co, err, errsz);
    }
    fmt(err, errsz, "--device must be cpu or cuda, got '%s'", o->device);
    return NULL;
}

/* The backend owns the parameters while training; the CPU backend trains m->params in place,
 * other backends are asked for a copy before m is saved. */
static int backend_sync_to_host(llama_backend *b, llama_model *m, char *err, size_t errsz) {
    if (!strcmp(b->name, "cpu")) return 0;
    if (b->get_state(b, m->params, NULL, NULL, NULL)) { fmt(err, errsz, "%s", b->err); return -1; }
    return 0;
}

static uint64_t model_hash(const llama_model *m) {
    uint64_t h = data_hash_bytes(0x6c6c616d61ULL, &m->cfg.vocab_size, sizeof(int));
    int dims[6] = { m->cfg.hidden_size, m->cfg.intermediate_size, m->cfg.num_hidden_layers,
                    m->cfg.num_attention_heads, m->cfg.num_key_value_heads, m->cfg.head_dim };
    h = data_hash_bytes(h, dims, sizeof dims);
    return data_hash_bytes(h, m->params, m->n_params * sizeof(float));
}

/* ========================================================================================== */
/* Log-probs of every pair (the reference pass, evaluation)                                   */

/* Summed completion log-probs of both sides of every pair of ds under the backend's current
 * weights: out_c[i], out_r[i]. Micro-batches of `micro` pairs; `what` names the pass in the
 * progress messages (NULL: quiet). */
static int dataset_logps(llama_backend *b, const pref_dataset *ds, int micro, double *out_c, double *out_r,
                         const char *what, char *err, size_t errsz) {
    pref_batch pb;
    float *logp = NULL;
    double *seq = NULL;
    int *pairs = NULL, i, k, status = -1;
    double t0 = now_s(), last = t0;
    memset(&pb, 0, sizeof pb);
    logp = (float *)malloc((size_t)2 * micro * (size_t)(ds->max_side_len + 1) * sizeof *logp);
    seq = (double *)malloc((size_t)2 * micro * sizeof *seq);
    pairs = (int *)malloc((size_t)micro * sizeof *pairs);
    if (!logp || !seq || !pairs) { fmt(err, errsz, "out of memory"); goto done; }
    for (i = 0; i < ds->n; i += micro) {
        int n = ds->n - i < micro ? ds->n - i : micro;
        for (k = 0; k < n; k++) pairs[k] = i + k;
        if (pref_batch_build(&pb, ds, pairs, n)) { fmt(err, errsz, "out of memory"); goto done; }
        if (b->forward(b, &pb.b, logp)) { fmt(err, errsz, "forward: %s", b->err); goto done; }
        llama_completion_logp(&pb.b, logp, seq);
        for (k = 0; k < n; k++) { out_c[i + k] = seq[2 * k]; out_r[i + k] = seq[2 * k + 1]; }
        if (what && now_s() - last > 5.0) {
            last = now_s();
            fprintf(stderr, "  %s: %d/%d pairs\n", what, i + n, ds->n);
        }
    }
    status = 0;
done:
    pref_batch_free(&pb);
    free(logp); free(seq); free(pairs);
    return status;
}

/* Reference log-probs cache: OUT/ref_logps-<key>.safetensors with F64 tensors "chosen" and
 * "rejected" [n], key = hash(initial weights, tokenized data, max_length). */
static void ref_cache_path(char *buf, size_t n, const char *out_dir, uint64_t key) {
    fmt(buf, n, "%s/ref_logps-%016llx.safetensors", out_dir, (unsigned long long)key);
}

static int ref_cache_load(const char *path, int n, double *c, double *r, char *err, size_t errsz) {
    st_file f;
    const st_tensor *tc, *tr;
    if (st_open(&f, path, err, errsz)) return -1;
    tc = st_find(&f, "chosen");
    tr = st_find(&f, "rejected");
    if (!tc || !tr || strcmp(tc->dtype, "F64") || strcmp(tr->dtype, "F64") ||
        st_numel(tc) != (size_t)n || st_numel(tr) != (size_t)n) {
        fmt(err, errsz, "%s: not a reference cache for %d pairs (delete it to recompute)", path, n);
        st_close(&f); return -1;
    }
    if (st_read_raw(&f, tc, c, err, errsz) || st_read_raw(&f, tr, r, err, errsz)) { st_close(&f); return -1; }
    st_close(&f);
    return 0;
}

static int ref_cache_save(const char *path, int n, const double *c, const double *r, uint64_t mh,
                          uint64_t dh, int max_length, char *err, size_t errsz) {
    st_write_tensor ts[2];
    char meta[256];
    memset(ts, 0, sizeof ts);
    ts[0].name = "chosen"; ts[0].dtype = "F64"; ts[0].ndim = 1; ts[0].shape[0] = n; ts[0].data = c;
    ts[1].name = "rejected"; ts[1].dtype = "F64"; ts[1].ndim = 1; ts[1].shape[0] = n; ts[1].data = r;
    fmt(meta, sizeof meta, "{\"model_hash\":\"%016llx\",\"data_hash\":\"%016llx\",\"max_length\":\"%d\"}",
             (unsigned long long)mh, (unsigned long long)dh, max_length);
    return st_write(path, ts, 2, meta, err, errsz);
}

/* Reference log-probs for ds: from the cache when present, else computed and cached. */
static int reference_logps(llama_backend *b, const pref_dataset *ds, int micro, const char *out_dir,
                           uint64_t mh, int max_length, const char *what, double *c, double *r,
                           char *err, size_t errsz) {
    char path[4200];
    uint64_t dh = pref_dataset_hash(ds), key;
    double t0;
    key = data_hash_bytes(mh ^ dh, &max_length, sizeof max_length);
    ref_cache_path(path, sizeof path, out_dir, key);
    if (file_exists(path)) {
        if (ref_cache_load(path, ds->n, c, r, err, errsz) == 0) {
            fprintf(stderr, "reference log-probs (%s): reused %s\n", what, path);
            return 0;
        }
        fprintf(stderr, "warning: %s; recomputing\n", err);
    }
    fprintf(stderr, "reference log-probs (%s): computing for %d pairs with the initial model\n", what, ds->n);
    t0 = now_s();
    if (dataset_logps(b, ds, micro, c, r, what, err, errsz)) return -1;
    if (ref_cache_save(path, ds->n, c, r, mh, dh, max_length, err, errsz)) return -1;
    fprintf(stderr, "reference log-probs (%s): done in %.1fs, cached in %s\n", what, now_s() - t0, path);
    return 0;
}

/* ========================================================================================== */
/* Metrics                                                                                    */

typedef struct {
    double loss, rewards_chosen, rewards_rejected, rewards_accuracies, rewards_margins;
    double logps_chosen, logps_rejected;
    int n_pairs, n_nonfinite;
} metrics;

/* Adds `w` x m (a micro-batch's means) to acc: the global batch mean is the pair-weighted sum. */
static void metrics_add(metrics *acc, const apo_metrics *m, double w) {
    acc->rewards_chosen += w * m->rewards_chosen;
    acc->rewards_rejected += w * m->rewards_rejected;
    acc->rewards_accuracies += w * m->rewards_accuracies;
    acc->rewards_margins += w * m->rewards_margins;
    acc->logps_chosen += w * m->logps_chosen;
    acc->logps_rejected += w * m->logps_rejected;
    acc->n_pairs += m->n_pairs;
    acc->n_nonfinite += m->n_nonfinite;
}

static void metrics_json(clair_buf *b, const char *prefix, const metrics *m) {
    clair_buf_printf(b, "\"%sloss\":", prefix); clair_json_write_number(b, m->loss);
    clair_buf_printf(b, ",\"%srewards/chosen\":", prefix); clair_json_write_number(b, m->rewards_chosen);
    clair_buf_printf(b, ",\"%srewards/rejected\":", prefix); clair_json_write_number(b, m->rewards_rejected);
    clair_buf_printf(b, ",\"%srewards/accuracies\":", prefix); clair_json_write_number(b, m->rewards_accuracies);
    clair_buf_printf(b, ",\"%srewards/margins\":", prefix); clair_json_write_number(b, m->rewards_margins);
    clair_buf_printf(b, ",\"%slogps/chosen\":", prefix); clair_json_write_number(b, m->logps_chosen);
    clair_buf_printf(b, ",\"%slogps/rejected\":", prefix); clair_json_write_number(b, m->logps_rejected);
}

/* The loss of a global batch of `nb` pairs, computed one micro-batch at a time, so that the sum
 * over micro-batches equals the loss of the whole batch exactly:
 *   - the pairwise losses are batch means: a micro-batch of m pairs contributes m/nb of its mean;
 *   - sft (TRL) is a token mean over all chosen completions of the batch: a micro-batch with S_mb
 *     of the batch's S chosen tokens contributes S_mb/S of its token mean.
 * Gradients d_chosen/d_rejected are scaled the same way. Returns the micro-batch's share. */
typedef struct {
    const apo_term *terms;
    int n_terms;
    int nb;                  /* pairs in the global batch */
    double sft_tokens;       /* chosen completion tokens in the global batch */
} batch_loss_ctx;

static double micro_loss(const batch_loss_ctx *ctx, const apo_pair *pairs, int m, double *dc, double *dr,
                         double *tmp_c, double *tmp_r, metrics *acc) {
    double total = 0, sft_mb = 0;
    int k, i;
    apo_metrics am;
    for (i = 0; i < m; i++) { dc[i] = 0; dr[i] = 0; sft_mb += pairs[i].n_chosen; }
    for (k = 0; k < ctx->n_terms; k++) {
        double share = ctx->terms[k].p.type == APO_SFT ? (ctx->sft_tokens > 0 ? sft_mb / ctx->sft_tokens : 0)
                                                       : (double)m / ctx->nb;
        double l = apo_batch_loss(&ctx->terms[k], 1, pairs, m, tmp_c, tmp_r, &am);
        total += share * l;
        for (i = 0; i < m; i++) { dc[i] += share * tmp_c[i]; dr[i] += share * tmp_r[i]; }
        if (k == 0) metrics_add(acc, &am, (double)m / ctx->nb);
    }
    acc->loss += total;
    return total;
}

/* Evaluates the policy on ds (reference log-probs ref_c/ref_r): the same metrics as training. */
static int evaluate(llama_backend *b, const pref_dataset *ds, const double *ref_c, const double *ref_r,
                    const apo_term *terms, int n_terms, int micro, metrics *out,
                    double *pol_c, double *pol_r, char *err, size_t errsz) {
    apo_pair *pairs = NULL;
    double *d = NULL;
    int i, status = -1;
    batch_loss_ctx ctx;
    memset(out, 0, sizeof *out);
    if (ds->n == 0) return 0;
    pairs = (apo_pair *)malloc((size_t)ds->n * sizeof *pairs);
    d = (double *)malloc((size_t)4 * ds->n * sizeof *d);
    if (!pairs || !d) { fmt(err, errsz, "out of memory"); goto done; }
    if (dataset_logps(b, ds, micro, pol_c, pol_r, NULL, err, errsz)) goto done;
    ctx.terms = terms; ctx.n_terms = n_terms; ctx.nb = ds->n; ctx.sft_tokens = 0;
    for (i = 0; i < ds->n; i++) {
        const pref_example *e = &ds->ex[i];
        pairs[i].policy_chosen = pol_c[i]; pairs[i].policy_rejected = pol_r[i];
        pairs[i].ref_chosen = ref_c[i]; pairs[i].ref_rejected = ref_r[i];
        pairs[i].n_chosen = e->chosen_len - e->chosen_start;
        pairs[i].n_rejected = e->rejected_len - e->rejected_start;
        ctx.sft_tokens += pairs[i].n_chosen;
    }
    micro_loss(&ctx, pairs, ds->n, d, d + ds->n, d + 2 * ds->n, d + 3 * ds->n, out);
    status = 0;
done:
    free(pairs); free(d);
    return status;
}

/* ========================================================================================== */
/* Learning-rate schedule (Hugging Face's get_*_schedule_with_warmup)                         */

static double lr_at(const char *schedule, double lr, long step, long total, long warmup) {
    double progress;
    if (step < warmup) return lr * (double)step / (double)(warmup > 0 ? warmup : 1);
    progress = (double)(step - warmup) / (double)(total - warmup > 0 ? total - warmup : 1);
    if (!strcmp(schedule, "constant")) return lr;
    if (!strcmp(schedule, "linear")) return lr * fmax(0.0, 1.0 - progress);
    return lr * fmax(0.0, 0.5 * (1.0 + cos(M_PI * progress)));     /* cosine */
}

/* ========================================================================================== */
/* Training                                                                                   */

typedef struct {
    const char *model, *data, *out, *loss, *schedule, *eval_data, *device, *precision;
    const char *chat_template, *save_dtype;
    double beta, label_smoothing, discopop_tau, lr, warmup_ratio, weight_decay, max_grad_norm;
    double eval_split, adam_beta1, adam_beta2, adam_eps;
    int epochs, batch_size, micro_batch, max_length, save_every, eval_every, resume, overwrite;
    int max_steps, log_every, max_bad_steps, raw_text, keep_checkpoints, quiet, lean_optimizer, cuda_device;
    uint64_t seed;
    const char *debug_dump_grad;   /* test hook: write the first step's gradient here */
} train_args;

static void train_defaults(train_args *a) {
    memset(a, 0, sizeof *a);
    a->loss = "apo_zero"; a->schedule = "cosine"; a->device = "cpu"; a->precision = "fp32";
    a->save_dtype = "fp32";
    a->beta = 0.1; a->label_smoothing = 0; a->discopop_tau = 0.05; a->lr = 2e-7;
    a->warmup_ratio = 0.1; a->weight_decay = 0; a->max_grad_norm = 1.0;
    a->adam_beta1 = 0.9; a->adam_beta2 = 0.999; a->adam_eps = 1e-8;
    a->epochs = 1; a->batch_size = 64; a->micro_batch = 4; a->max_length = 1024;
    a->log_every = 1; a->max_bad_steps = 3; a->keep_checkpoints = 1; a->seed = 42;
}

/* Training state that a checkpoint carries besides the weights and the Adam moments. */
typedef struct {
    long step;               /* optimizer steps taken (including skipped ones) */
    long n_updates;          /* AdamW updates applied (bias correction counts these) */
    int epoch;               /* current epoch (0-based) */
    int epoch_pos;           /* pairs of this epoch consumed */
    int bad_in_row;          /* consecutive non-finite steps */
    uint64_t shuffle_seed;   /* the RNG: epoch e is shuffled by rng_stream(shuffle_seed, e) */
    uint64_t data_hash, model_hash;
    int batch_size;
} train_state;

static int state_save(const char *path, const train_state *s, const train_args *a, char *err, size_t errsz) {
    clair_buf b = {0};
    int rc;
    clair_buf_printf(&b, "{\"step\":%ld,\"n_updates\":%ld,\"epoch\":%d,\"epoch_pos\":%d,\"bad_in_row\":%d,"
                         "\"shuffle_seed\":\"%llu\",\"data_hash\":\"%016llx\",\"model_hash\":\"%016llx\","
                         "\"batch_size\":%d,\"micro_batch\":%d,\"loss\":",
                     s->step, s->n_updates, s->epoch, s->epoch_pos, s->bad_in_row,
                     (unsigned long long)s->shuffle_seed, (unsigned long long)s->data_hash,
                     (unsigned long long)s->model_hash, s->batch_size, a->micro_batch);
    clair_json_write_string(&b, a->loss, strlen(a->loss));
    clair_buf_printf(&b, ",\"lr\":%.17g,\"beta\":%.17g,\"epochs\":%d,\"schedule\":\"%s\"}\n",
                     a->lr, a->beta, a->epochs, a->schedule);
    if (b.oom) { clair_buf_free(&b); fmt(err, errsz, "out of memory"); return -1; }
    rc = write_file_atomic(path, b.data, b.len, err, errsz);
    clair_buf_free(&b);
    return rc;
}

static int state_load(const char *path, train_state *s, char *err, size_t errsz) {
    size_t n;
    char *text = read_file(path, &n), jerr[256];
    clair_json j;
    long long v;
    const char *str;
    if (!text) { fmt(err, errsz, "%s: cannot read (%s)", path, strerror(errno)); return -1; }
    if (clair_json_parse(text, n, &j, jerr, sizeof jerr)) { fmt(err, errsz, "%s: %s", path, jerr); free(text); return -1; }
    free(text);
    memset(s, 0, sizeof *s);
#define GETI(key, dst) do { if (clair_json_get_int(&j, key, &v)) { fmt(err, errsz, "%s: missing integer \"%s\"", path, key); clair_json_free(&j); return -1; } dst = v; } while (0)
    GETI("step", s->step); GETI("n_updates", s->n_updates); GETI("epoch", s->epoch);
    GETI("epoch_pos", s->epoch_pos); GETI("bad_in_row", s->bad_in_row); GETI("batch_size", s->batch_size);
#undef GETI
    if (!(str = clair_json_get_str(&j, "shuffle_seed"))) { fmt(err, errsz, "%s: missing \"shuffle_seed\"", path); clair_json_free(&j); return -1; }
    s->shuffle_seed = strtoull(str, NULL, 10);
    if ((str = clair_json_get_str(&j, "data_hash"))) s->data_hash = strtoull(str, NULL, 16);
    if ((str = clair_json_get_str(&j, "model_hash"))) s->model_hash = strtoull(str, NULL, 16);
    clair_json_free(&j);
    return 0;
}

/* The newest complete checkpoint directory OUT/checkpoint-<step> (temporary ones end in .tmp). */
static long latest_checkpoint(const char *out_dir, char *path, size_t n) {
    DIR *d = opendir(out_dir);
    struct dirent *e;
    long best = -1;
    if (!d) return -1;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long s;
        if (strncmp(e->d_name, "checkpoint-", 11)) continue;
        s = strtol(e->d_name + 11, &end, 10);
        if (*end || end == e->d_name + 11) continue;
        if (s > best) best = s;
    }
    closedir(d);
    if (best >= 0) fmt(path, n, "%s/checkpoint-%ld", out_dir, best);
    return best;
}

/* Removes leftovers of a killed save (checkpoint-*.tmp) and checkpoints beyond the newest `keep`. */
static void prune_checkpoints(const char *out_dir, int keep) {
    DIR *d = opendir(out_dir);
    struct dirent *e;
    long steps[4096];
    int n = 0, i, j;
    char p[4200];
    if (!d) return;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long s;
        if (strncmp(e->d_name, "checkpoint-", 11)) continue;
        s = strtol(e->d_name + 11, &end, 10);
        if (!strcmp(end, ".tmp")) {
            fmt(p, sizeof p, "%s/%s", out_dir, e->d_name);
            rm_flat_dir(p);
        } else if (!*end && n < 4096) steps[n++] = s;
    }
    closedir(d);
    for (i = 0; i < n; i++) {          /* remove all but the `keep` largest */
        int larger = 0;
        for (j = 0; j < n; j++) if (steps[j] > steps[i]) larger++;
        if (larger >= keep) {
            fmt(p, sizeof p, "%s/checkpoint-%ld", out_dir, steps[i]);
            rm_flat_dir(p);
        }
    }
}

/* Writes the checkpoint of the current state: weights (HF), Adam moments, training state. */
static int checkpoint_save(llama_backend *b, llama_model *m, const train_state *s, const train_args *a,
                           float *scratch, char *err, size_t errsz) {
    char tmp[4200], fin[4200], p[4300];
    llama_save_opts so;
    st_write_tensor t;
    int which;
    fmt(fin, sizeof fin, "%s/checkpoint-%ld", a->out, s->step);
    fmt(tmp, sizeof tmp, "%s.tmp", fin);
    if (dir_exists(tmp)) rm_flat_dir(tmp);
    if (mkdir_p(tmp)) { fmt(err, errsz, "%s: cannot create (%s)", tmp, strerror(errno)); return -1; }
    if (backend_sync_to_host(b, m, err, errsz)) return -1;
    memset(&so, 0, sizeof so);
    so.bf16 = 0;                       /* fp32: resuming must continue from the exact weights */
    so.tokenizer_from = a->model;
    if (llama_model_save(m, tmp, &so, err, errsz)) return -1;
    /* Adam moments, one buffer at a time (a host copy of both would double the memory) */
    for (which = 0; which < 2; which++) {
        if (b->get_state(b, NULL, NULL, which == 0 ? scratch : NULL, which == 1 ? scratch : NULL)) {
            fmt(err, errsz, "reading optimizer state: %s", b->err); return -1;
        }
        memset(&t, 0, sizeof t);
        t.name = which == 0 ? "exp_avg" : "exp_avg_sq";
        t.dtype = "F32"; t.ndim = 1; t.shape[0] = (int64_t)m->n_params; t.data = scratch;
        fmt(p, sizeof p, "%s/optimizer_%s.safetensors", tmp, which == 0 ? "m" : "v");
        if (st_write(p, &t, 1, NULL, err, errsz)) return -1;
    }
    fmt(p, sizeof p, "%s/trainer_state.json", tmp);
    if (state_save(p, s, a, err, errsz)) return -1;
    if (dir_exists(fin)) rm_flat_dir(fin);
    if (rename(tmp, fin)) { fmt(err, errsz, "%s: rename failed (%s)", fin, strerror(errno)); return -1; }
    prune_checkpoints(a->out, a->keep_checkpoints);
    return 0;
}

/* Restores weights, moments and state from a checkpoint directory into m and the backend. */
static int checkpoint_load(const char *dir, llama_model *m, llama_backend *b, train_state *s,
                           float *scratch, char *err, size_t errsz) {
    llama_model ck;
    char p[4300];
    int which;
    fmt(p, sizeof p, "%s/trainer_state.json", dir);
    if (state_load(p, s, err, errsz)) return -1;
    if (llama_model_load(&ck, dir, err, errsz)) return -1;
    if (ck.n_params != m->n_params || ck.cfg.num_hidden_layers != m->cfg.num_hidden_layers ||
        ck.cfg.hidden_size != m->cfg.hidden_size || ck.cfg.vocab_size != m->cfg.vocab_size) {
        fmt(err, errsz, "%s: the checkpoint has %zu parameters (%d layers, hidden %d), the --model %zu (%d layers, "
            "hidden %d); it belongs to another run", dir, ck.n_params, ck.cfg.num_hidden_layers, ck.cfg.hidden_size,
            m->n_params, m->cfg.num_hidden_layers, m->cfg.hidden_size);
        llama_model_free(&ck); return -1;
    }
    memcpy(m->params, ck.params, m->n_params * sizeof(float));
    llama_model_free(&ck);
    if (b->set_state(b, m->params, NULL, NULL)) { fmt(err, errsz, "%s", b->err); return -1; }
    for (which = 0; which < 2; which++) {
        st_file f;
        const st_tensor *t;
        fmt(p, sizeof p, "%s/optimizer_%s.safetensors", dir, which == 0 ? "m" : "v");
        if (st_open(&f, p, err, errsz)) return -1;
        t = st_find(&f, which == 0 ? "exp_avg" : "exp_avg_sq");
        if (!t || st_numel(t) != m->n_params) {
            fmt(err, errsz, "%s: expected tensor %s with %zu values", p, which == 0 ? "exp_avg" : "exp_avg_sq", m->n_params);
            st_close(&f); return -1;
        }
        if (st_read_f32(&f, t, scratch, err, errsz)) { st_close(&f); return -1; }
        st_close(&f);
        if (b->set_state(b, NULL, which == 0 ? scratch : NULL, which == 1 ? scratch : NULL)) {
            fmt(err, errsz, "%s", b->err); return -1;
        }
    }
    return 0;
}

/* Keeps the metrics records of steps <= step (a resumed run rewrites the ones it repeats). */
static int metrics_truncate(const char *path, long step, char *err, size_t errsz) {
    size_t n, i, start = 0;
    char *text = read_file(path, &n);
    clair_buf keep = {0};
    int rc;
    if (!text) return 0;
    for (i = 0; i <= n; i++) {
        if (i == n || text[i] == '\n') {
            clair_json j;
            char jerr[64];
            long long s;
            if (i > start && clair_json_parse(text + start, i - start, &j, jerr, sizeof jerr) == 0) {
                if (clair_json_get_int(&j, "step", &s) == 0 && s <= step) {
                    clair_buf_put(&keep, text + start, i - start);
                    clair_buf_put(&keep, "\n", 1);
                }
                clair_json_free(&j);
            }
            start = i + 1;
        }
    }
    free(text);
    rc = write_file_atomic(path, keep.data ? keep.data : "", keep.len, err, errsz);
    clair_buf_free(&keep);
    return rc;
}

static int metrics_append(FILE *f, const char *line) {
    if (fputs(line, f) < 0 || fputc('\n', f) < 0 || fflush(f)) return -1;
    return 0;
}

/* What a training run hands back (the demo prints it). */
typedef struct {
    metrics eval_first, eval_last;
    int has_eval;
    long steps;
    double seconds;
} train_result;

static int write_eval_record(FILE *mf, long step, double epoch, const metrics *m) {
    clair_buf b = {0};
    int rc;
    clair_buf_printf(&b, "{\"step\":%ld,\"epoch\":", step);
    clair_json_write_number(&b, epoch);
    clair_buf_puts(&b, ",");
    metrics_json(&b, "eval_", m);
    clair_buf_puts(&b, "}");
    rc = b.oom ? -1 : metrics_append(mf, b.data);
    clair_buf_free(&b);
    return rc;
}

static int run_train(const train_args *a, train_result *res) {
    char err[ERRSZ], path[4200];
    tokenizer *tok = NULL;
    llama_model m;
    llama_backend *b = NULL;
    pref_dataset ds, eds;
    pref_opts po;
    apo_term terms[MAX_TERMS];
    apo_params defaults;
    int n_terms, have_model = 0, status = 1, i, k;
    double *ref_c = NULL, *ref_r = NULL, *eref_c = NULL, *eref_r = NULL, *epol_c = NULL, *epol_r = NULL;
    float *scratch = NULL, *logp = NULL, *dlogp = NULL;
    double *seq = NULL, *dc = NULL, *dr = NULL, *tc = NULL, *tr = NULL;
    apo_pair *pairs = NULL;
    int *perm = NULL, *batch_pairs = NULL;
    FILE *mf = NULL;
    pref_batch pb;
    train_state st;
    uint64_t mh;
    long steps_per_epoch, total_steps, warmup_steps, last_saved = -1, run_steps = 0;
    double t_start, tokens_done = 0;
    const char *die_at = getenv("TRAINER_DEBUG_DIE_AFTER_STEP");   /* test hook: simulate a kill */
    const char *nan_from = getenv("TRAINER_DEBUG_NAN_FROM_STEP");  /* test hook: poison the loss */

    memset(&ds, 0, sizeof ds); memset(&eds, 0, sizeof eds); memset(&pb, 0, sizeof pb);
    memset(&m, 0, sizeof m); memset(&st, 0, sizeof st);
    if (res) memset(res, 0, sizeof *res);

    /* ---- arguments ---- */
    if (!a->model || !a->data || !a->out) {
        fprintf(stderr, "trainer train: --model, --data and --out are required (see trainer train --help)\n");
        return 2;
    }
    if (a->batch_size < 1 || a->micro_batch < 1 || a->epochs < 1 || a->max_length < 2 || a->save_every < 0 ||
        a->eval_every < 0 || a->keep_checkpoints < 1 || a->log_every < 1 || a->max_bad_steps < 1) {
        fprintf(stderr, "trainer train: --batch-size, --micro-batch, --epochs, --keep-checkpoints, --log-every and "
                        "--max-bad-steps must be >= 1, --max-length >= 2, --save-every/--eval-every >= 0\n");
        return 2;
    }
    if (!(a->lr >= 0) || !(a->warmup_ratio >= 0 && a->warmup_ratio <= 1) || !(a->max_grad_norm >= 0) ||
        !(a->weight_decay >= 0) || !(a->eval_split >= 0 && a->eval_split < 1)) {
        fprintf(stderr, "trainer train: --lr, --max-grad-norm and --weight-decay must be >= 0, --warmup-ratio in "
                        "[0, 1], --eval-split in [0, 1)\n");
        return 2;
    }
    if (strcmp(a->schedule, "cosine") && strcmp(a->schedule, "linear") && strcmp(a->schedule, "constant")) {
        fprintf(stderr, "trainer train: --schedule must be cosine, linear or constant, got '%s'\n", a->schedule);
        return 2;
    }
    if (a->eval_data && a->eval_split > 0) {
        fprintf(stderr, "trainer train: give --eval-data or --eval-split, not both\n");
        return 2;
    }
    if (strcmp(a->save_dtype, "fp32") && strcmp(a->save_dtype, "bf16")) {
        fprintf(stderr, "trainer train: --save-dtype must be fp32 or bf16\n");
        return 2;
    }
    if (a->micro_batch > a->batch_size) {
        fprintf(stderr, "trainer train: --micro-batch %d is larger than --batch-size %d\n", a->micro_batch, a->batch_size);
        return 2;
    }
    {
        apo_loss_type t0 = APO_ZERO;
        const char *why;
        defaults = apo_default_params(t0);
        defaults.beta = a->beta; defaults.label_smoothing = a->label_smoothing; defaults.discopop_tau = a->discopop_tau;
        n_terms = apo_parse_loss_list(a->loss, &defaults, terms, MAX_TERMS, err, sizeof err);
        if (n_terms < 1) { fprintf(stderr, "trainer train: --loss: %s\n", err); return 2; }
        for (k = 0; k < n_terms; k++)
            if ((why = apo_params_check(&terms[k].p))) { fprintf(stderr, "trainer train: --loss %s: %s\n", apo_loss_name(terms[k].p.type), why); return 2; }
    }

    if (!dir_exists(a->model)) { fprintf(stderr, "trainer train: --model %s: no such directory (a Hugging Face checkpoint directory)\n", a->model); return 1; }
    if (!file_exists(a->data)) { fprintf(stderr, "trainer train: --data %s: no such file\n", a->data); return 1; }
    if (a->eval_data && !file_exists(a->eval_data)) { fprintf(stderr, "trainer train: --eval-data %s: no such file\n", a->eval_data); return 1; }

    /* ---- 1. data ---- */
    if (tokenizer_load(&tok, a->model, a->chat_template, err, sizeof err)) {
        fprintf(stderr, "trainer train: tokenizer: %s\n", err); goto done;
    }
    po.max_length = a->max_length; po.raw_text = a->raw_text; po.max_reports = 20;
    if (pref_dataset_load(&ds, a->data, tok, &po, stderr, err, sizeof err)) { fprintf(stderr, "trainer train: %s\n", err); goto done; }
    pref_stats_print(&ds.stats, a->data, stderr);
    if (a->eval_data) {
        if (pref_dataset_load(&eds, a->eval_data, tok, &po, stderr, err, sizeof err)) { fprintf(stderr, "trainer train: %s\n", err); goto done; }
        pref_stats_print(&eds.stats, a->eval_data, stderr);
        if (eds.n == 0) { fprintf(stderr, "trainer train: %s has no usable pair\n", a->eval_data); goto done; }
    } else if (a->eval_split > 0 && ds.n > 1) {
        /* a seeded, fixed split: the same pairs are held out on every run and resume */
        int n_eval = (int)floor(a->eval_split * ds.n + 0.5);
        uint64_t rs = rng_stream(a->seed, 0xe5a1ULL);   /* a stream no epoch uses */
        if (n_eval < 1) n_eval = 1;
        if (n_eval >= ds.n) n_eval = ds.n - 1;
        perm = (int *)malloc((size_t)ds.n * sizeof *perm);
        if (!perm) { fprintf(stderr, "out of memory\n"); goto done; }
        for (i = 0; i < ds.n; i++) perm[i] = i;
        shuffle(perm, ds.n, &rs);
        if (pref_dataset_permute(&ds, perm) || pref_dataset_split(&ds, ds.n - n_eval, &eds)) { fprintf(stderr, "out of memory\n"); goto done; }
        free(perm); perm = NULL;
        fprintf(stderr, "eval split: %d pairs held out, %d for training\n", eds.n, ds.n);
    }
    if (ds.n == 0) {
        fprintf(stderr, "trainer train: %s has no usable pair (see the messages above); nothing to train on\n", a->data);
        goto done;
    }
    tokenizer_free(tok); tok = NULL;

    /* ---- the initial model (it is also the reference) ---- */
    if (llama_model_load(&m, a->model, err, sizeof err)) { fprintf(stderr, "trainer train: %s\n", err); goto done; }
    have_model = 1;
    if (tokenizer_load(&tok, a->model, a->chat_template, err, sizeof err) == 0) {
        int vt = tokenizer_vocab_size(tok);
        tokenizer_free(tok); tok = NULL;
        if (vt > m.cfg.vocab_size) {
            fprintf(stderr, "trainer train: the tokenizer has %d tokens but config.json's vocab_size is %d; "
                            "this tokenizer does not belong to this model\n", vt, m.cfg.vocab_size);
            goto done;
        }
    }
    mh = model_hash(&m);

    /* ---- the output directory (created only now that the inputs are known to be good);
     * refuse to clobber another run ---- */
    if (mkdir_p(a->out)) { fprintf(stderr, "trainer train: cannot create --out %s (%s)\n", a->out, strerror(errno)); goto done; }
    {
        long ck = latest_checkpoint(a->out, path, sizeof path);
        fmt(path, sizeof path, "%s/metrics.jsonl", a->out);
        if (!a->resume && (ck >= 0 || file_exists(path))) {
            if (!a->overwrite) {
                fprintf(stderr, "trainer train: %s already holds a training run; pass --resume to continue it, "
                                "--overwrite to start again (reference log-probs are reused), or choose another --out\n", a->out);
                goto done;
            }
        }
    }

    {
        backend_opts bo;
        memset(&bo, 0, sizeof bo);
        bo.device = a->device; bo.precision = a->precision;
        bo.lean_optimizer = a->lean_optimizer; bo.cuda_device = a->cuda_device;
        bo.max_tokens = 2 * a->micro_batch * (ds.max_side_len > eds.max_side_len ? ds.max_side_len : eds.max_side_len);
        b = backend_open(&m, &bo, err, sizeof err);
        if (!b) { fprintf(stderr, "trainer train: backend: %s\n", err); goto done; }
    }
    if (m.cfg.max_position_embeddings > 0 && (ds.max_side_len > m.cfg.max_position_embeddings || eds.max_side_len > m.cfg.max_position_embeddings))
        fprintf(stderr, "warning: sequences of up to %d tokens, longer than the model's max_position_embeddings %d; "
                        "consider --max-length %d\n", ds.max_side_len > eds.max_side_len ? ds.max_side_len : eds.max_side_len,
                m.cfg.max_position_embeddings, m.cfg.max_position_embeddings);
    fprintf(stderr, "model %s: %zu parameters, %d layers, hidden %d, vocab %d; backend %s\n", a->model, m.n_params,
            m.cfg.num_hidden_layers, m.cfg.hidden_size, m.cfg.vocab_size, b->name);

    /* ---- 2. reference log-probs (once; cached beside the output) ---- */
    ref_c = (double *)malloc((size_t)ds.n * sizeof *ref_c);
    ref_r = (double *)malloc((size_t)ds.n * sizeof *ref_r);
    if (!ref_c || !ref_r) { fprintf(stderr, "out of memory\n"); goto done; }
    if (reference_logps(b, &ds, a->micro_batch, a->out, mh, a->max_length, "train", ref_c, ref_r, err, sizeof err)) {
        fprintf(stderr, "trainer train: reference pass: %s\n", err); goto done;
    }
    if (eds.n > 0) {
        eref_c = (double *)malloc((size_t)eds.n * sizeof(double)); eref_r = (double *)malloc((size_t)eds.n * sizeof(double));
        epol_c = (double *)malloc((size_t)eds.n * sizeof(double)); epol_r = (double *)malloc((size_t)eds.n * sizeof(double));
        if (!eref_c || !eref_r || !epol_c || !epol_r) { fprintf(stderr, "out of memory\n"); goto done; }
        if (reference_logps(b, &eds, a->micro_batch, a->out, mh, a->max_length, "eval", eref_c, eref_r, err, sizeof err)) {
            fprintf(stderr, "trainer train: reference pass: %s\n", err); goto done;
        }
    }

    /* ---- schedule ---- */
    steps_per_epoch = (ds.n + a->batch_size - 1) / a->batch_size;
    total_steps = steps_per_epoch * a->epochs;
    if (a->max_steps > 0 && a->max_steps < total_steps) total_steps = a->max_steps;
    warmup_steps = (long)ceil(a->warmup_ratio * (double)total_steps);

    /* ---- state: fresh, or resumed from the newest checkpoint ---- */
    scratch = (float *)malloc(m.n_params * sizeof *scratch);
    if (!scratch) { fprintf(stderr, "out of memory (optimizer state buffer)\n"); goto done; }
    st.shuffle_seed = a->seed; st.data_hash = pref_dataset_hash(&ds); st.model_hash = mh; st.batch_size = a->batch_size;
    fmt(path, sizeof path, "%s/metrics.jsonl", a->out);
    if (a->resume && latest_checkpoint(a->out, path, sizeof path) >= 0) {
        train_state saved;
        if (checkpoint_load(path, &m, b, &saved, scratch, err, sizeof err)) {
            fprintf(stderr, "trainer train: --resume: %s\n", err); goto done;
        }
        if (saved.data_hash != st.data_hash || saved.model_hash != mh || saved.batch_size != a->batch_size ||
            saved.shuffle_seed != a->seed) {
            fprintf(stderr, "trainer train: --resume: %s was made with %s; resume with the same ones it was started "
                            "with (or start a new --out)\n", path,
                    saved.data_hash != st.data_hash ? "other data (or another --max-length, template or tokenizer)"
                    : saved.model_hash != mh ? "another initial --model"
                    : saved.batch_size != a->batch_size ? "another --batch-size" : "another --seed");
            goto done;
        }
        st = saved;
        fprintf(stderr, "resumed from %s: step %ld/%ld, epoch %d, %d pairs into it\n", path, st.step, total_steps,
                st.epoch + 1, st.epoch_pos);
        last_saved = st.step;
        fmt(path, sizeof path, "%s/metrics.jsonl", a->out);
        if (metrics_truncate(path, st.step, err, sizeof err)) { fprintf(stderr, "trainer train: %s\n", err); goto done; }
    } else {
        if (a->resume) fprintf(stderr, "--resume: no checkpoint in %s yet; starting from the beginning\n", a->out);
        prune_checkpoints(a->out, 1 << 30);           /* only stale .tmp leftovers */
        if (a->overwrite) {
            DIR *d = opendir(a->out);
            struct dirent *e;
            char p[4400];
            while (d && (e = readdir(d)) != NULL)
                if (!strncmp(e->d_name, "checkpoint-", 11)) { fmt(p, sizeof p, "%s/%s", a->out, e->d_name); rm_flat_dir(p); }
            if (d) closedir(d);
        }
        fmt(path, sizeof path, "%s/metrics.jsonl", a->out);
        unlink(path);
    }
    mf = fopen(path, "ab");
    if (!mf) { fprintf(stderr, "trainer train: cannot write %s (%s)\n", path, strerror(errno)); goto done; }

    /* ---- buffers ---- */
    {
        size_t maxT = (size_t)2 * a->micro_batch * (size_t)ds.max_side_len + 1;
        logp = (float *)malloc(maxT * sizeof *logp);
        dlogp = (float *)malloc(maxT * sizeof *dlogp);
        seq = (double *)malloc((size_t)2 * a->micro_batch * sizeof *seq);
        dc = (double *)malloc((size_t)a->micro_batch * sizeof *dc);
        dr = (double *)malloc((size_t)a->micro_batch * sizeof *dr);
        tc = (double *)malloc((size_t)a->micro_batch * sizeof *tc);
        tr = (double *)malloc((size_t)a->micro_batch * sizeof *tr);
        pairs = (apo_pair *)malloc((size_t)a->micro_batch * sizeof *pairs);
        perm = (int *)malloc((size_t)ds.n * sizeof *perm);
        batch_pairs = (int *)malloc((size_t)a->batch_size * sizeof *batch_pairs);
        if (!logp || !dlogp || !seq || !dc || !dr || !tc || !tr || !pairs || !perm || !batch_pairs) {
            fprintf(stderr, "out of memory\n"); goto done;
        }
    }

    fprintf(stderr, "training: %d pairs, %d epoch(s), batch %d (micro-batch %d), %ld steps (%ld warmup), loss %s, "
                    "beta %g, lr %g (%s)\n", ds.n, a->epochs, a->batch_size, a->micro_batch, total_steps, warmup_steps,
            a->loss, a->beta, a->lr, a->schedule);

    /* eval before the first update: the "before" numbers */
    if (eds.n > 0 && st.step == 0) {
        metrics em;
        if (evaluate(b, &eds, eref_c, eref_r, terms, n_terms, a->micro_batch, &em, epol_c, epol_r, err, sizeof err)) {
            fprintf(stderr, "trainer train: eval: %s\n", err); goto done;
        }
        write_eval_record(mf, 0, 0.0, &em);
        if (res) { res->eval_first = em; res->has_eval = 1; }
        fprintf(stderr, "eval  step 0: loss %.4f  logps/chosen %.3f  logps/rejected %.3f\n", em.loss,
                em.logps_chosen, em.logps_rejected);
    }

    /* ---- 3. the updates ---- */
    t_start = now_s();
    {
        int perm_epoch = -1;
        while (st.step < total_steps) {
            metrics acc;
            batch_loss_ctx ctx;
            double lr, gnorm, clip = 1.0, step_tokens = 0, t_step = now_s();
            int nb, skipped = 0;
            char why[160] = "";
            if (st.epoch != perm_epoch) {       /* this epoch's order: a fresh stream per epoch */
                uint64_t rs = rng_stream(st.shuffle_seed, (uint64_t)st.epoch);
                for (i = 0; i < ds.n; i++) perm[i] = i;
                shuffle(perm, ds.n, &rs);
                perm_epoch = st.epoch;
            }
            nb = ds.n - st.epoch_pos < a->batch_size ? ds.n - st.epoch_pos : a->batch_size;
            memcpy(batch_pairs, perm + st.epoch_pos, (size_t)nb * sizeof(int));
            memset(&acc, 0, sizeof acc);
            ctx.terms = terms; ctx.n_terms = n_terms; ctx.nb = nb; ctx.sft_tokens = 0;
            for (i = 0; i < nb; i++) ctx.sft_tokens += ds.ex[batch_pairs[i]].chosen_len - ds.ex[batch_pairs[i]].chosen_start;

            b->zero_grad(b);
            for (i = 0; i < nb; i += a->micro_batch) {       /* gradient accumulation */
                int mb = nb - i < a->micro_batch ? nb - i : a->micro_batch, s;
                if (pref_batch_build(&pb, &ds, batch_pairs + i, mb)) { fprintf(stderr, "out of memory\n"); goto done; }
                if (b->forward(b, &pb.b, logp)) { fprintf(stderr, "trainer train: forward: %s\n", b->err); goto done; }
                llama_completion_logp(&pb.b, logp, seq);
                for (k = 0; k < mb; k++) {
                    int ei = batch_pairs[i + k];
                    pairs[k].policy_chosen = seq[2 * k]; pairs[k].policy_rejected = seq[2 * k + 1];
                    pairs[k].ref_chosen = ref_c[ei]; pairs[k].ref_rejected = ref_r[ei];
                    pairs[k].n_chosen = pb.n_completion[2 * k]; pairs[k].n_rejected = pb.n_completion[2 * k + 1];
                    if (nan_from && st.step + 1 >= atol(nan_from)) pairs[k].policy_chosen = NAN;
                }
                micro_loss(&ctx, pairs, mb, dc, dr, tc, tr, &acc);
                /* dloss/dlogp of each token: its sequence's dloss/dsum, on completion tokens only */
                for (s = 0; s < 2 * mb; s++) {
                    double g = (s & 1) ? dr[s / 2] : dc[s / 2];
                    int t;
                    for (t = pb.seq_start[s]; t < pb.seq_start[s + 1]; t++) dlogp[t] = pb.completion[t] ? (float)g : 0.0f;
                }
                if (b->backward(b, &pb.b, dlogp)) { fprintf(stderr, "trainer train: backward: %s\n", b->err); goto done; }
                step_tokens += pb.seq_start[2 * mb];
            }
            gnorm = b->grad_norm(b);
            lr = lr_at(a->schedule, a->lr, st.step, total_steps, warmup_steps);
            if (acc.n_nonfinite > 0 || !isfinite(acc.loss)) {
                skipped = 1;
                fmt(why, sizeof why, "%d pair(s) with a non-finite log-prob, loss %g", acc.n_nonfinite, acc.loss);
            } else if (!isfinite(gnorm)) {
                skipped = 1;
                fmt(why, sizeof why, "non-finite gradient norm %g", gnorm);
            }
            if (a->debug_dump_grad && st.step == 0) {      /* test hook: the accumulated gradient */
                st_write_tensor t;
                memset(&t, 0, sizeof t);
                if (b->get_state(b, NULL, scratch, NULL, NULL)) { fprintf(stderr, "get_state: %s\n", b->err); goto done; }
                t.name = "grad"; t.dtype = "F32"; t.ndim = 1; t.shape[0] = (int64_t)m.n_params; t.data = scratch;
                if (st_write(a->debug_dump_grad, &t, 1, NULL, err, sizeof err)) { fprintf(stderr, "%s\n", err); goto done; }
            }
            if (!skipped) {
                llama_adamw h;
                if (a->max_grad_norm > 0 && gnorm > a->max_grad_norm) clip = a->max_grad_norm / (gnorm + 1e-6);
                h.lr = lr; h.beta1 = a->adam_beta1; h.beta2 = a->adam_beta2; h.eps = a->adam_eps;
                h.weight_decay = a->weight_decay; h.step = st.n_updates + 1;
                if (b->adamw_step(b, &h, (float)clip)) { fprintf(stderr, "trainer train: adamw: %s\n", b->err); goto done; }
                st.n_updates++;
                st.bad_in_row = 0;
            } else {
                st.bad_in_row++;
                fprintf(stderr, "step %ld: %s; update skipped (%d in a row)\n", st.step + 1, why, st.bad_in_row);
            }
            b->zero_grad(b);
            st.step++; run_steps++;
            st.epoch_pos += nb;
            if (st.epoch_pos >= ds.n) { st.epoch++; st.epoch_pos = 0; }
            tokens_done += step_tokens;

            /* ---- log ---- */
            {
                clair_buf lb = {0};
                double epoch_f = (double)st.epoch + (double)st.epoch_pos / ds.n;
                clair_buf_printf(&lb, "{\"step\":%ld,\"epoch\":", st.step);
                clair_json_write_number(&lb, epoch_f);
                clair_buf_puts(&lb, ",");
                metrics_json(&lb, "", &acc);
                clair_buf_puts(&lb, ",\"grad_norm\":"); clair_json_write_number(&lb, gnorm);
                clair_buf_puts(&lb, ",\"learning_rate\":"); clair_json_write_number(&lb, lr);
                clair_buf_printf(&lb, ",\"num_tokens\":%.0f,\"skipped\":%s}", step_tokens, skipped ? "true" : "false");
                if (lb.oom || metrics_append(mf, lb.data)) { fprintf(stderr, "trainer train: cannot write metrics.jsonl\n"); clair_buf_free(&lb); goto done; }
                clair_buf_free(&lb);
                if (!a->quiet && (st.step % a->log_every == 0 || st.step == total_steps)) {
                    double el = now_s() - t_start, tps = tokens_done / (el > 0 ? el : 1e-9);
                    double eta = el / run_steps * (double)(total_steps - st.step);
                    char etas[32];
                    fmt_duration(eta, etas, sizeof etas);
                    fprintf(stderr, "step %ld/%ld | loss %.4f | acc %.2f | margin %+.4f | grad %.3g | lr %.3g | "
                                    "%.0f tok/s | %.2fs/step | ETA %s\n", st.step, total_steps, acc.loss,
                            acc.rewards_accuracies, acc.rewards_margins, gnorm, lr, tps, now_s() - t_step, etas);
                }
            }
            if (st.bad_in_row >= a->max_bad_steps) {
                char ck[4200];
                if (latest_checkpoint(a->out, ck, sizeof ck) >= 0)
                    fprintf(stderr, "trainer train: %d steps in a row had a non-finite loss or gradient; stopping. "
                                    "The last good checkpoint is %s (lower --lr, or check the data)\n", st.bad_in_row, ck);
                else
                    fprintf(stderr, "trainer train: %d steps in a row had a non-finite loss or gradient; stopping before "
                                    "any checkpoint was written (lower --lr, or check the data)\n", st.bad_in_row);
                goto done;
            }

            /* ---- eval and checkpoint ---- */
            if (eds.n > 0 && a->eval_every > 0 && st.step % a->eval_every == 0 && st.step < total_steps) {
                metrics em;
                if (evaluate(b, &eds, eref_c, eref_r, terms, n_terms, a->micro_batch, &em, epol_c, epol_r, err, sizeof err)) {
                    fprintf(stderr, "trainer train: eval: %s\n", err); goto done;
                }
                write_eval_record(mf, st.step, (double)st.epoch + (double)st.epoch_pos / ds.n, &em);
                fprintf(stderr, "eval  step %ld: loss %.4f  acc %.2f  logps/chosen %.3f  logps/rejected %.3f\n",
                        st.step, em.loss, em.rewards_accuracies, em.logps_chosen, em.logps_rejected);
            }
            if (a->save_every > 0 && st.step % a->save_every == 0 && st.step < total_steps && st.bad_in_row == 0) {
                if (checkpoint_save(b, &m, &st, a, scratch, err, sizeof err)) { fprintf(stderr, "trainer train: checkpoint: %s\n", err); goto done; }
                last_saved = st.step;
                fprintf(stderr, "saved %s/checkpoint-%ld\n", a->out, st.step);
            }
            if (die_at && st.step == atol(die_at)) {
                fprintf(stderr, "TRAINER_DEBUG_DIE_AFTER_STEP: exiting abruptly after step %ld\n", st.step);
                fflush(NULL);
                _exit(137);
            }
        }
    }

    /* ---- final eval, checkpoint, and the model itself (4.) ---- */
    if (eds.n > 0) {
        metrics em;
        if (evaluate(b, &eds, eref_c, eref_r, terms, n_terms, a->micro_batch, &em, epol_c, epol_r, err, sizeof err)) {
            fprintf(stderr, "trainer train: eval: %s\n", err); goto done;
        }
        write_eval_record(mf, st.step, (double)st.epoch + (double)st.epoch_pos / ds.n, &em);
        fprintf(stderr, "eval  step %ld: loss %.4f  acc %.2f  logps/chosen %.3f  logps/rejected %.3f\n",
                st.step, em.loss, em.rewards_accuracies, em.logps_chosen, em.logps_rejected);
        if (res) { res->eval_last = em; if (!res->has_eval) res->eval_first = em; res->has_eval = 1; }
    }
    if (last_saved != st.step) {
        if (checkpoint_save(b, &m, &st, a, scratch, err, sizeof err)) { fprintf(stderr, "trainer train: checkpoint: %s\n", err); goto done; }
    }
    {
        llama_save_opts so;
        memset(&so, 0, sizeof so);
        so.bf16 = !strcmp(a->save_dtype, "bf16");
        so.tokenizer_from = a->model;
        if (backend_sync_to_host(b, &m, err, sizeof err) || llama_model_save(&m, a->out, &so, err, sizeof err)) {
            fprintf(stderr, "trainer train: saving the model: %s\n", err); goto done;
        }
    }
    if (res) { res->steps = st.step; res->seconds = now_s() - t_start; }
    fprintf(stderr, "done: %ld steps in %.1fs; the aligned model is in %s (Hugging Face format), metrics in %s/metrics.jsonl\n",
            st.step, now_s() - t_start, a->out, a->out);
    status = 0;
done:
    if (mf) fclose(mf);
    if (b) b->destroy(b);
    if (have_model) llama_model_free(&m);
    if (tok) tokenizer_free(tok);
    pref_dataset_free(&ds); pref_dataset_free(&eds); pref_batch_free(&pb);
    free(ref_c); free(ref_r); free(eref_c); free(eref_r); free(epol_c); free(epol_r);
    free(scratch); free(logp); free(dlogp); free(seq); free(dc); free(dr); free(tc); free(tr);
    free(pairs); free(perm); free(batch_pairs);
    return status;
}

static int cmd_train(int argc, char **argv) {
    train_args a;
    int rc;
    train_defaults(&a);
    {
        const opt_def defs[] = {
            { "--model", OPT_STR, &a.model, "DIR", "Hugging Face checkpoint to align (config.json, *.safetensors, tokenizer)" },
            { "--data", OPT_STR, &a.data, "FILE", "preference pairs, JSONL (prompt/chosen/rejected; strings or conversations)" },
            { "--out", OPT_STR, &a.out, "DIR", "output: the aligned checkpoint, checkpoint-N/, metrics.jsonl, reference cache" },
            { "--loss", OPT_STR, &a.loss, "SPEC", "a loss or a weighted list, e.g. apo_zero, apo_down, sigmoid, apo_zero:1,sft:0.1" },
            { "--beta", OPT_DBL, &a.beta, "X", "reward scale beta" },
            { "--label-smoothing", OPT_DBL, &a.label_smoothing, "X", "label smoothing (robust, exo_pair)" },
            { "--discopop-tau", OPT_DBL, &a.discopop_tau, "X", "tau of the discopop loss" },
            { "--lr", OPT_DBL, &a.lr, "X", "peak learning rate" },
            { "--epochs", OPT_INT, &a.epochs, "N", "passes over the data" },
            { "--batch-size", OPT_INT, &a.batch_size, "N", "pairs per optimizer step (global batch)" },
            { "--micro-batch", OPT_INT, &a.micro_batch, "N", "pairs per forward/backward (gradient accumulation up to --batch-size)" },
            { "--max-length", OPT_INT, &a.max_length, "N", "tokens of prompt + response per side; longer ones keep the start" },
            { "--warmup-ratio", OPT_DBL, &a.warmup_ratio, "X", "fraction of the steps with a linear warmup" },
            { "--schedule", OPT_STR, &a.schedule, "NAME", "learning-rate schedule after warmup: cosine, linear or constant" },
            { "--weight-decay", OPT_DBL, &a.weight_decay, "X", "AdamW weight decay (matrices only, not norms)" },
            { "--adam-beta1", OPT_DBL, &a.adam_beta1, "X", "AdamW beta1" },
            { "--adam-beta2", OPT_DBL, &a.adam_beta2, "X", "AdamW beta2" },
            { "--adam-eps", OPT_DBL, &a.adam_eps, "X", "AdamW epsilon" },
            { "--max-grad-norm", OPT_DBL, &a.max_grad_norm, "X", "clip the gradient to this global L2 norm (0: no clipping)" },
            { "--eval-data", OPT_STR, &a.eval_data, "FILE", "held-out preference pairs for evaluation" },
            { "--eval-split", OPT_DBL, &a.eval_split, "X", "or hold out this fraction of --data (seeded)" },
            { "--eval-every", OPT_INT, &a.eval_every, "N", "evaluate every N steps (0: only before and after training)" },
            { "--save-every", OPT_INT, &a.save_every, "N", "write checkpoint-N every N steps (0: only at the end)" },
            { "--keep-checkpoints", OPT_INT, &a.keep_checkpoints, "N", "keep the newest N checkpoints" },
            { "--save-dtype", OPT_STR, &a.save_dtype, "T", "dtype of the final model: fp32 or bf16 (checkpoints are fp32)" },
            { "--seed", OPT_U64, &a.seed, "S", "seed of the shuffling (and of the eval split)" },
            { "--resume", OPT_FLAG, &a.resume, "", "continue from the newest checkpoint in --out" },
            { "--overwrite", OPT_FLAG, &a.overwrite, "", "start again in an --out that holds a run" },
            { "--max-steps", OPT_INT, &a.max_steps, "N", "stop after N optimizer steps (0: all epochs; the schedule spans N)" },
            { "--log-every", OPT_INT, &a.log_every, "N", "print the progress line every N steps (metrics.jsonl gets every step)" },
            { "--max-bad-steps", OPT_INT, &a.max_bad_steps, "N", "stop after N steps in a row with a non-finite loss or gradient" },
            { "--device", OPT_STR, &a.device, "D", "cpu or cuda" },
            { "--precision", OPT_STR, &a.precision, "P", "fp32 or bf16 (bf16: CUDA only)" },
            { "--lean-optimizer", OPT_FLAG, &a.lean_optimizer, "", "CUDA bf16: bf16 weights and Adam moments, stochastic rounding (fits 8B on 80 GB)" },
            { "--cuda-device", OPT_INT, &a.cuda_device, "N", "CUDA device index" },
            { "--chat-template", OPT_STR, &a.chat_template, "NAME", "override the template family: llama3, chatml, llama2" },
            { "--raw-text", OPT_FLAG, &a.raw_text, "", "no chat template: prompt text + response text + eos (TRL's standard format)" },
            { "--quiet", OPT_FLAG, &a.quiet, "", "no progress lines" },
            { "--debug-dump-grad", OPT_STR, &a.debug_dump_grad, "FILE", "(tests) write the first step's accumulated gradient" },
            { NULL, OPT_STR, NULL, NULL, NULL }
        };
        rc = parse_opts("train", defs, argc, argv, 2);
        if (rc == 1) {
            printf("usage: trainer train --model DIR --data FILE --out DIR [flags]\n\n"
                   "Aligns a Llama checkpoint on preference pairs with APO (or another loss of apo.h).\n"
                   "Reference log-probs are computed once with the initial model and cached in --out.\n\n"
                   "Data lines: {\"prompt\": ..., \"chosen\": ..., \"rejected\": ...}, each a string or a list of\n"
                   "{\"role\", \"content\"}; chosen/rejected may repeat the prompt turns (ultrafeedback_clair_32k).\n\n");
            print_opts(stdout, defs);
            return 0;
        }
        if (rc < 0) return 2;
    }
    return run_train(&a, NULL);
}

/* ========================================================================================== */
/* eval                                                                                       */

static int cmd_eval(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *ref = NULL, *loss = "apo_zero", *chat = NULL, *pairs_out = NULL;
    const char *device = "cpu", *precision = "fp32";
    double beta = 0.1;
    int micro = 4, max_length = 1024, raw = 0, rc, status = 1, i, k;
    char err[ERRSZ];
    tokenizer *tok = NULL;
    pref_dataset ds;
    pref_opts po;
    llama_model m;
    llama_backend *b = NULL;
    double *rc_ = NULL, *rr = NULL, *pc = NULL, *pr = NULL;
    apo_term terms[MAX_TERMS];
    apo_params defaults;
    int n_terms;
    metrics em;
    const opt_def defs[] = {
        { "--model", OPT_STR, &model, "DIR", "the model to evaluate (the policy)" },
        { "--data", OPT_STR, &data, "FILE", "preference pairs, JSONL (as for train)" },
        { "--ref", OPT_STR, &ref, "DIR", "reference model for the rewards (default: --model itself, so rewards are 0)" },
        { "--loss", OPT_STR, &loss, "SPEC", "loss to report" },
        { "--beta", OPT_DBL, &beta, "X", "reward scale beta" },
        { "--micro-batch", OPT_INT, &micro, "N", "pairs per forward" },
        { "--max-length", OPT_INT, &max_length, "N", "tokens per side (longer ones keep the start)" },
        { "--pairs-out", OPT_STR, &pairs_out, "FILE", "also write per-pair log-probs as JSONL" },
        { "--device", OPT_STR, &device, "D", "cpu or cuda" },
        { "--precision", OPT_STR, &precision, "P", "fp32 or bf16 (bf16: CUDA only)" },
        { "--chat-template", OPT_STR, &chat, "NAME", "override the template family: llama3, chatml, llama2" },
        { "--raw-text", OPT_FLAG, &raw, "", "no chat template (TRL's standard format)" },
        { NULL, OPT_STR, NULL, NULL, NULL }
    };
    memset(&ds, 0, sizeof ds); memset(&m, 0, sizeof m);
    rc = parse_opts("eval", defs, argc, argv, 2);
    if (rc == 1) {
        printf("usage: trainer eval --model DIR --data FILE [--ref DIR] [flags]\n\n"
               "Prints the reward metrics (TRL names) and mean log-probs of a model on preference data, as JSON.\n\n");
        print_opts(stdout, defs);
        return 0;
    }
    if (rc < 0) return 2;
    if (!model || !data) { fprintf(stderr, "trainer eval: --model and --data are required\n"); return 2; }
    if (micro < 1 || max_length < 2) { fprintf(stderr, "trainer eval: --micro-batch >= 1, --max-length >= 2\n"); return 2; }
    defaults = apo_default_params(APO_ZERO);
    defaults.beta = beta;
    n_terms = apo_parse_loss_list(loss, &defaults, terms, MAX_TERMS, err, sizeof err);
    if (n_terms < 1) { fprintf(stderr, "trainer eval: --loss: %s\n", err); return 2; }
    if (tokenizer_load(&tok, model, chat, err, sizeof err)) { fprintf(stderr, "trainer eval: tokenizer: %s\n", err); return 1; }
    po.max_length = max_length; po.raw_text = raw; po.max_reports = 20;
    if (pref_dataset_load(&ds, data, tok, &po, stderr, err, sizeof err)) { fprintf(stderr, "trainer eval: %s\n", err); goto done; }
    pref_stats_print(&ds.stats, data, stderr);
    if (ds.n == 0) { fprintf(stderr, "trainer eval: %s has no usable pair\n", data); goto done; }
    rc_ = (double *)malloc((size_t)ds.n * sizeof(double)); rr = (double *)malloc((size_t)ds.n * sizeof(double));
    pc = (double *)malloc((size_t)ds.n * sizeof(double)); pr = (double *)malloc((size_t)ds.n * sizeof(double));
    if (!rc_ || !rr || !pc || !pr) { fprintf(stderr, "out of memory\n"); goto done; }
    for (i = 0; i < 2; i++) {             /* i = 0: the reference (when given), 1: the policy */
        const char *dir = i == 0 ? ref : model;
        backend_opts bo;
        memset(&bo, 0, sizeof bo);
        if (!dir) continue;
        if (llama_model_load(&m, dir, err, sizeof err)) { fprintf(stderr, "trainer eval: %s\n", err); goto done; }
        bo.device = device; bo.precision = precision; bo.max_tokens = 2 * micro * ds.max_side_len;
        if (!(b = backend_open(&m, &bo, err, sizeof err))) { fprintf(stderr, "trainer eval: backend: %s\n", err); llama_model_free(&m); goto done; }
        if (dataset_logps(b, &ds, micro, i == 0 ? rc_ : pc, i == 0 ? rr : pr, "log-probs", err, sizeof err)) {
            fprintf(stderr, "trainer eval: %s\n", err); b->destroy(b); b = NULL; llama_model_free(&m); goto done;
        }
        b->destroy(b); b = NULL;
        llama_model_free(&m);
    }
    if (!ref) { memcpy(rc_, pc, (size_t)ds.n * sizeof(double)); memcpy(rr, pr, (size_t)ds.n * sizeof(double)); }
    {
        apo_pair *pp = (apo_pair *)malloc((size_t)ds.n * sizeof *pp);
        double *d = (double *)malloc((size_t)4 * ds.n * sizeof *d);
        batch_loss_ctx ctx;
        if (!pp || !d) { free(pp); free(d); fprintf(stderr, "out of memory\n"); goto done; }
        ctx.terms = terms; ctx.n_terms = n_terms; ctx.nb = ds.n; ctx.sft_tokens = 0;
        for (k = 0; k < ds.n; k++) {
            const pref_example *e = &ds.ex[k];
            pp[k].policy_chosen = pc[k]; pp[k].policy_rejected = pr[k];
            pp[k].ref_chosen = rc_[k]; pp[k].ref_rejected = rr[k];
            pp[k].n_chosen = e->chosen_len - e->chosen_start; pp[k].n_rejected = e->rejected_len - e->rejected_start;
            ctx.sft_tokens += pp[k].n_chosen;
        }
        memset(&em, 0, sizeof em);
        micro_loss(&ctx, pp, ds.n, d, d + ds.n, d + 2 * ds.n, d + 3 * ds.n, &em);
        free(pp); free(d);
    }
    if (pairs_out) {
        clair_buf pb = {0};
        for (k = 0; k < ds.n; k++) {
            clair_buf_printf(&pb, "{\"line\":%d,\"logps/chosen\":", ds.ex[k].line);
            clair_json_write_number(&pb, pc[k]);
            clair_buf_puts(&pb, ",\"logps/rejected\":"); clair_json_write_number(&pb, pr[k]);
            clair_buf_puts(&pb, ",\"ref_logps/chosen\":"); clair_json_write_number(&pb, rc_[k]);
            clair_buf_puts(&pb, ",\"ref_logps/rejected\":"); clair_json_write_number(&pb, rr[k]);
            clair_buf_puts(&pb, "}\n");
        }
        if (pb.oom || write_file_atomic(pairs_out, pb.data ? pb.data : "", pb.len, err, sizeof err)) {
            fprintf(stderr, "trainer eval: %s\n", pb.oom ? "out of memory" : err); clair_buf_free(&pb); goto done;
        }
        clair_buf_free(&pb);
    }
    {
        clair_buf ob = {0};
        clair_buf_printf(&ob, "{\"pairs\":%d,", ds.n);
        metrics_json(&ob, "eval_", &em);
        clair_buf_puts(&ob, "}");
        printf("%s\n", ob.data);
        clair_buf_free(&ob);
    }
    status = 0;
done:
    if (tok) tokenizer_free(tok);
    pref_dataset_free(&ds);
    free(rc_); free(rr); free(pc); free(pr);
    return status;
}

/* ========================================================================================== */
/* generate: sampling with a KV cache (CLAIR's first step: the model's own answers)          */

/* Samples a token from logits[V]: temperature 0 = greedy; else softmax(logits / T) restricted
 * to the smallest set of tokens whose probability reaches top_p (nucleus sampling). */
typedef struct { float p; int id; } prob_id;
static int cmp_prob_desc(const void *a, const void *b) {
    float x = ((const prob_id *)a)->p, y = ((const prob_id *)b)->p;
    if (x > y) return -1;
    if (x < y) return 1;
    return ((const prob_id *)a)->id - ((const prob_id *)b)->id;   /* a total order: reproducible */
}

static int sample_token(const float *logits, int V, double temperature, double top_p, uint64_t *rng, prob_id *work) {
    int i, best = 0, n;
    double mx, sum = 0, r, cum;
    for (i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    if (temperature <= 0) return best;
    mx = logits[best];
    for (i = 0; i < V; i++) {
        double e = exp(((double)logits[i] - mx) / temperature);
        work[i].p = (float)e; work[i].id = i;
        sum += e;
    }
    n = V;
    if (top_p < 1.0) {
        qsort(work, (size_t)V, sizeof *work, cmp_prob_desc);
        cum = 0;
        for (i = 0; i < V; i++) {
            cum += work[i].p / sum;
            if (cum >= top_p) { n = i + 1; break; }
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

/* Counts the complete lines of a partial output and checks they answer prompts 0..k-1. */
static int partial_resume(const char *partial, const prompt_set *ps, int *done_n, char *err, size_t errsz) {
    size_t n, i, start = 0, keep = 0;
    char *text = read_file(partial, &n);
    int k = 0;
    *done_n = 0;
    if (!text) return 0;
    for (i = 0; i < n; i++) {
        if (text[i] != '\n') continue;
        {
            clair_json j;
            char jerr[128];
            clair_buf pb = {0};
            const clair_json *pv;
            int ok;
            if (clair_json_parse(text + start, i - start, &j, jerr, sizeof jerr)) break;
            pv = clair_json_get(&j, "prompt");
            if (pv) clair_json_write(&pb, pv);
            ok = pv && k < ps->n && pb.data && !strcmp(pb.data, ps->items[k].json);
            clair_buf_free(&pb);
            clair_json_free(&j);
            if (!ok) {
                fmt(err, errsz, "%s: line %d does not answer prompt %d of the prompts file; delete it to start "
                                     "again", partial, k + 1, k + 1);
                free(text); return -1;
            }
        }
        k++;
        start = i + 1;
        keep = start;
    }
    free(text);
    if (truncate(partial, (off_t)keep)) { fmt(err, errsz, "%s: cannot truncate (%s)", partial, strerror(errno)); return -1; }
    *done_n = k;
    return 0;
}

static int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompts = NULL, *out = NULL, *chat = NULL;
    double temperature = 0.7, top_p = 1.0;
    int max_new = 256, raw = 0, overwrite = 0, rc, status = 1, i, t, done_n = 0, is_stop;
    uint64_t seed = 0;
    char err[ERRSZ], partial[4200];
    tokenizer *tok = NULL;
    prompt_set ps;
    llama_model m;
    int have_model = 0;
    llama_kv_cache kv;
    float *logits = NULL;
    prob_id *work = NULL;
    FILE *f = NULL;
    double t0, toks = 0;
    const opt_def defs[] = {
        { "--model", OPT_STR, &model, "DIR", "Hugging Face checkpoint" },
        { "--prompts", OPT_STR, &prompts, "FILE", "JSONL with a \"prompt\" per line (a string or a list of {role, content})" },
        { "--out", OPT_STR, &out, "FILE", "output JSONL: {\"prompt\", \"response\", \"finish_reason\"} per line" },
        { "--temperature", OPT_DBL, &temperature, "X", "sampling temperature (0: greedy)" },
        { "--top-p", OPT_DBL, &top_p, "X", "nucleus sampling: keep the most likely tokens up to this mass" },
        { "--max-new-tokens", OPT_INT, &max_new, "N", "at most N tokens per response" },
        { "--seed", OPT_U64, &seed, "S", "seed; prompt i is sampled from stream (S, i), so a resumed run is identical" },
        { "--chat-template", OPT_STR, &chat, "NAME", "override the template family: llama3, chatml, llama2" },
        { "--raw-text", OPT_FLAG, &raw, "", "no chat template: continue the prompt text" },
        { "--overwrite", OPT_FLAG, &overwrite, "", "replace an existing --out" },
        { NULL, OPT_STR, NULL, NULL, NULL }
    };
    memset(&ps, 0, sizeof ps); memset(&kv, 0, sizeof kv); memset(&m, 0, sizeof m);
    rc = parse_opts("generate", defs, argc, argv, 2);
    if (rc == 1) {
        printf("usage: trainer generate --model DIR --prompts FILE --out FILE [flags]\n\n"
               "Samples one response per prompt with a KV cache and writes the lines `clair revise` reads.\n"
               "Output goes to FILE.partial line by line and is renamed to FILE when complete; rerunning the same\n"
               "command after an interruption continues where it stopped.\n\n");
        print_opts(stdout, defs);
        return 0;
    }
    if (rc < 0) return 2;
    if (!model || !prompts || !out) { fprintf(stderr, "trainer generate: --model, --prompts and --out are required\n"); return 2; }
    if (max_new < 1 || temperature < 0 || !(top_p > 0 && top_p <= 1)) {
        fprintf(stderr, "trainer generate: --max-new-tokens >= 1, --temperature >= 0, --top-p in (0, 1]\n"); return 2;
    }
    if (file_exists(out) && !overwrite) {
        fprintf(stderr, "trainer generate: %s exists; pass --overwrite to replace it\n", out); return 1;
    }
    if (tokenizer_load(&tok, model, chat, err, sizeof err)) { fprintf(stderr, "trainer generate: tokenizer: %s\n", err); return 1; }
    if (prompt_set_load(&ps, prompts, tok, raw, stderr, err, sizeof err)) { fprintf(stderr, "trainer generate: %s\n", err); goto done; }
    fprintf(stderr, "%s: %d lines: %d prompts, %d malformed (skipped)\n", prompts, ps.n_lines, ps.n, ps.n_malformed);
    if (llama_model_load(&m, model, err, sizeof err)) { fprintf(stderr, "trainer generate: %s\n", err); goto done; }
    have_model = 1;
    fmt(partial, sizeof partial, "%s.partial", out);
    if (partial_resume(partial, &ps, &done_n, err, sizeof err)) { fprintf(stderr, "trainer generate: %s\n", err); goto done; }
    if (done_n > 0) fprintf(stderr, "continuing %s: %d of %d prompts already answered\n", partial, done_n, ps.n);
    f = fopen(partial, "ab");
    if (!f) { fprintf(stderr, "trainer generate: cannot write %s (%s)\n", partial, strerror(errno)); goto done; }
    logits = (float *)malloc((size_t)m.cfg.vocab_size * sizeof *logits);
    work = (prob_id *)malloc((size_t)m.cfg.vocab_size * sizeof *work);
    if (!logits || !work) { fprintf(stderr, "out of memory\n"); goto done; }
    t0 = now_s();
    for (i = done_n; i < ps.n; i++) {
        const prompt_item *it = &ps.items[i];
        tok_ids gen = {0};
        uint64_t rng = rng_stream(seed, (uint64_t)i);
        int cap = it->n_ids + max_new, tokid = -1;
        const char *finish = "length";
        char *text = NULL;
        size_t tlen = 0;
        clair_buf ob = {0};
        if (m.cfg.max_position_embeddings > 0 && cap > m.cfg.max_position_embeddings) cap = m.cfg.max_position_embeddings;
        if (it->n_ids >= cap) {
            fprintf(stderr, "%s:%d: the prompt is %d tokens, the model's context is %d; answered with an empty response\n",
                    prompts, it->line, it->n_ids, cap);
        }
        if (llama_kv_cache_alloc(&kv, &m.cfg, cap, err, sizeof err)) { fprintf(stderr, "trainer generate: %s\n", err); goto done; }
        for (t = 0; t < it->n_ids && t < cap; t++)         /* the prompt, one position at a time */
            if (llama_decode_step(&m, &kv, it->ids[t], logits, err, sizeof err)) { fprintf(stderr, "trainer generate: %s\n", err); llama_kv_cache_free(&kv); goto done; }
        while (kv.n_pos < cap && it->n_ids < cap) {
            int e;
            tokid = sample_token(logits, m.cfg.vocab_size, temperature, top_p, &rng, work);
            is_stop = tokid == tokenizer_eos_id(tok);
            for (e = 0; e < m.cfg.n_eos; e++) if (tokid == m.cfg.eos_token_ids[e]) is_stop = 1;
            if (is_stop) { finish = "stop"; break; }
            if (tok_ids_push(&gen, tokid)) { fprintf(stderr, "out of memory\n"); llama_kv_cache_free(&kv); goto done; }
            if ((int)gen.len >= max_new) break;
            if (kv.n_pos >= cap) break;
            if (llama_decode_step(&m, &kv, tokid, logits, err, sizeof err)) { fprintf(stderr, "trainer generate: %s\n", err); llama_kv_cache_free(&kv); tok_ids_free(&gen); goto done; }
        }
        llama_kv_cache_free(&kv);
        toks += (double)gen.len;
        if (tokenizer_decode(tok, gen.data, gen.len, &text, &tlen, err, sizeof err)) {
            fprintf(stderr, "trainer generate: decode: %s\n", err); tok_ids_free(&gen); goto done;
        }
        tok_ids_free(&gen);
        clair_buf_puts(&ob, "{\"prompt\":");
        clair_buf_puts(&ob, it->json);
        clair_buf_puts(&ob, ",\"response\":");
        clair_json_write_string(&ob, text, tlen);
        clair_buf_printf(&ob, ",\"finish_reason\":\"%s\"}\n", finish);
        free(text);
        if (ob.oom || fwrite(ob.data, 1, ob.len, f) != ob.len || fflush(f)) {
            fprintf(stderr, "trainer generate: cannot write %s\n", partial); clair_buf_free(&ob); goto done;
        }
        clair_buf_free(&ob);
        {
            double el = now_s() - t0;
            char etas[32];
            fmt_duration(el / (i + 1 - done_n) * (ps.n - i - 1), etas, sizeof etas);
            fprintf(stderr, "generate: %d/%d prompts | %.1f tok/s | ETA %s\n", i + 1, ps.n, toks / (el > 0 ? el : 1e-9), etas);
        }
    }
    if (fsync(fileno(f)) || fclose(f)) { f = NULL; fprintf(stderr, "trainer generate: cannot write %s\n", partial); goto done; }
    f = NULL;
    if (rename(partial, out)) { fprintf(stderr, "trainer generate: rename %s -> %s: %s\n", partial, out, strerror(errno)); goto done; }
    fprintf(stderr, "wrote %s (%d responses)\n", out, ps.n);
    status = 0;
done:
    if (f) fclose(f);
    if (tok) tokenizer_free(tok);
    if (have_model) llama_model_free(&m);
    prompt_set_free(&ps);
    free(logits); free(work);
    return status;
}

/* ========================================================================================== */
/* init: a random checkpoint of any Llama shape                                               */

static int cmd_init(int argc, char **argv) {
    const char *config = NULL, *out = NULL, *tokdir = NULL, *dtype = "fp32";
    uint64_t seed = 0;
    int rc;
    char err[ERRSZ];
    llama_config cfg;
    llama_model m;
    llama_save_opts so;
    const opt_def defs[] = {
        { "--config", OPT_STR, &config, "FILE", "a Hugging Face Llama config.json (any shape)" },
        { "--out", OPT_STR, &out, "DIR", "where to write the checkpoint" },
        { "--seed", OPT_U64, &seed, "S", "seed of the normal(0, initializer_range) init" },
        { "--tokenizer", OPT_STR, &tokdir, "DIR", "copy the tokenizer files from this directory" },
        { "--dtype", OPT_STR, &dtype, "T", "fp32 or bf16" },
        { NULL, OPT_STR, NULL, NULL, NULL }
    };
    rc = parse_opts("init", defs, argc, argv, 2);
    if (rc == 1) {
        printf("usage: trainer init --config FILE --out DIR [flags]\n\n"
               "Writes a randomly initialised Hugging Face checkpoint (Hugging Face's init: normal(0, initializer_range)\n"
               "for matrices and embeddings, 1 for norms), for tests, benchmarks and examples.\n\n");
        print_opts(stdout, defs);
        return 0;
    }
    if (rc < 0) return 2;
    if (!config || !out) { fprintf(stderr, "trainer init: --config and --out are required\n"); return 2; }
    if (strcmp(dtype, "fp32") && strcmp(dtype, "bf16")) { fprintf(stderr, "trainer init: --dtype must be fp32 or bf16\n"); return 2; }
    if (llama_config_load(config, &cfg, err, sizeof err)) { fprintf(stderr, "trainer init: %s\n", err); return 1; }
    if (llama_model_alloc(&m, &cfg, err, sizeof err)) { fprintf(stderr, "trainer init: %s\n", err); return 1; }
    llama_model_init_random(&m, seed);
    if (mkdir_p(out)) { fprintf(stderr, "trainer init: cannot create %s (%s)\n", out, strerror(errno)); llama_model_free(&m); return 1; }
    memset(&so, 0, sizeof so);
    so.bf16 = !strcmp(dtype, "bf16");
    so.tokenizer_from = tokdir;
    if (llama_model_save(&m, out, &so, err, sizeof err)) { fprintf(stderr, "trainer init: %s\n", err); llama_model_free(&m); return 1; }
    fprintf(stderr, "wrote %s: %zu parameters (%s)\n", out, m.n_params, dtype);
    llama_model_free(&m);
    return 0;
}

/* ========================================================================================== */
/* The built-in demonstration                                                                 */

static int cmd_demo(const char *argv0) {
    char root[4096], model[4200], data[4200], evald[4200], out[4200];
    const char *slash = strrchr(argv0, '/');
    const char *tmpdir = getenv("TMPDIR");
    train_args a;
    train_result r;
    double t0 = now_s();
    /* examples/ sits beside the trainer binary (the repo root); fall back to the current directory */
    if (slash) fmt(root, sizeof root, "%.*s", (int)(slash - argv0), argv0);
    else fmt(root, sizeof root, ".");
    fmt(model, sizeof model, "%s/examples/tiny-llama", root);
    fmt(data, sizeof data, "%s/examples/pairs.jsonl", root);
    fmt(evald, sizeof evald, "%s/examples/pairs_eval.jsonl", root);
    if (!dir_exists(model) || !file_exists(data) || !file_exists(evald)) {
        fprintf(stderr, "trainer: the demo needs %s, %s and %s (run ./trainer from the repository; see ./trainer --help)\n",
                model, data, evald);
        return 1;
    }
    fmt(out, sizeof out, "%s/clair-apo-demo-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (!mkdtemp(out)) { fprintf(stderr, "trainer: cannot create a temporary directory (%s)\n", strerror(errno)); return 1; }
    printf("clair-apo demo: APO-zero on CLAIR-style pairs (chosen = a minimal revision of the model's own\n"
           "answer, rejected = that answer). A tiny Llama (%s) is trained on %s;\n"
           "held-out pairs %s are measured before and after. Output: %s\n\n", model, data, evald, out);
    fflush(stdout);
#ifdef _OPENMP
    /* The demo model has 140k parameters: its matrices are too small for threads to pay off, and
     * on a busy machine OpenMP's barriers make it many times slower. One thread unless the user
     * asks otherwise (the results are the same either way). */
    if (!getenv("OMP_NUM_THREADS")) omp_set_num_threads(1);
#endif
    train_defaults(&a);
    a.model = model; a.data = data; a.eval_data = evald; a.out = out;
    a.loss = "apo_zero"; a.beta = 0.1; a.lr = 2e-3; a.epochs = 6; a.batch_size = 16; a.micro_batch = 8;
    a.max_length = 256; a.warmup_ratio = 0.1; a.schedule = "cosine"; a.log_every = 5; a.seed = 42;
    if (run_train(&a, &r)) return 1;
    printf("\n                          before      after     change\n");
    printf("log p(chosen)          %9.3f  %9.3f  %+9.3f   (APO-zero raises it)\n", r.eval_first.logps_chosen,
           r.eval_last.logps_chosen, r.eval_last.logps_chosen - r.eval_first.logps_chosen);
    printf("log p(rejected)        %9.3f  %9.3f  %+9.3f   (and lowers this one)\n", r.eval_first.logps_rejected,
           r.eval_last.logps_rejected, r.eval_last.logps_rejected - r.eval_first.logps_rejected);
    printf("reward accuracy        %9.2f  %9.2f              (share of pairs with r(chosen) > r(rejected))\n",
           r.eval_first.rewards_accuracies, r.eval_last.rewards_accuracies);
    printf("APO-zero loss          %9.4f  %9.4f\n", r.eval_first.loss, r.eval_last.loss);
    printf("\n%ld steps in %.0fs (total %.0fs). The aligned model is a Hugging Face checkpoint in %s.\n"
           "Next: ./trainer train --help, ./trainer generate --help\n", r.steps, r.seconds, now_s() - t0, out);
    return 0;
}

/* ========================================================================================== */

static void usage(FILE *f) {
    fprintf(f, "usage: trainer [COMMAND] [flags]\n\n"
               "  (no command)   run the built-in demonstration on examples/ (a few seconds on one core)\n"
               "  train          align a Llama checkpoint on preference pairs (APO-zero, APO-down, DPO, ...)\n"
               "  generate       sample answers to prompts (CLAIR's first step), JSONL for `clair revise`\n"
               "  eval           reward metrics and log-probs of a model on preference pairs\n"
               "  init           write a randomly initialised checkpoint of any Llama shape\n"
               "  demo           the demonstration, explicitly\n\n"
               "`trainer COMMAND --help` lists every flag of a command with its default.\n");
}

int main(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : "demo";
    if (!strcmp(cmd, "demo")) return cmd_demo(argv[0]);
    if (!strcmp(cmd, "train")) return cmd_train(argc, argv);
    if (!strcmp(cmd, "generate")) return cmd_generate(argc, argv);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc, argv);
    if (!strcmp(cmd, "init")) return cmd_init(argc, argv);
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) { usage(stdout); return 0; }
    fprintf(stderr, "trainer: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
