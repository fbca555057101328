/* trainer.c - align a Llama checkpoint with the APO family of preference losses.
 *
 *   ./trainer                      the built-in demonstration (examples/, a few seconds)
 *   ./trainer train    ...         preference data -> aligned Hugging Face checkpoint
 *   ./trainer generate ...         sample answers (CLAIR's first step: the rejected responses)
 *   ./trainer eval     ...         reward metrics and log-probs of a model on preference data
 *   ./trainer init     ...         a randomly initialised checkpoint of any Llama shape
 *   ./trainer CMD --help           every flag of a command, with its default
 *
 * `trainer train` is the paper's recipe (Anchored Preference Optimization, D'Oosterlinck et al.
 * 2024, with TRL DPOTrainer's conventions), one named phase after the other (run_train):
 *
 *   load_data       JSONL pairs -> chat template -> token ids (train/data.c)
 *   load_model      the initial checkpoint; it is also the reference model
 *   open_run        the output directory, the compute backend, a fresh start or --resume
 *   reference_pass  summed completion log-probs of every pair under the initial model, once,
 *                   cached in the run directory (the reference model is never kept)
 *   train_loop      per global batch, train_step: forward the micro-batches -> apo.h gives the
 *                   loss share and dloss/dlogp of each sequence -> per-token dlogp -> backward
 *                   (gradients accumulate) -> clip by the global norm -> one AdamW update;
 *                   log, evaluate and checkpoint on their schedules
 *   save_model      final evaluation and checkpoint, then the aligned model (Hugging Face format)
 *
 * The run directory's files are described in train/rundir.h, generation in train/generate.c.
 * The model math sits behind llama/model.h's backend table (CPU in llama/model.c, CUDA in
 * kernels.cu); this file never knows which one it drives.
 */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700 /* M_PI */

#include <errno.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define APO_IMPLEMENTATION
#include "apo.h"
#include "clair.h"
#include "llama/model.h"
#include "llama/tokenizer.h"
#include "train/convert.h"
#include "train/data.h"
#include "train/generate.h"
#include "train/hub.h"
#include "train/plot.h"
#include "train/rundir.h"
#include "util.h"

#define MAX_TERMS 16 /* terms of a weighted loss list ("apo_zero:1,sft:0.1") */
#define ERRSZ 1024

/* ==========================================================================================
 * The run's settings (`trainer train --help` lists them)
 * ========================================================================================== */

typedef struct {
    const char *model, *data, *out, *loss, *schedule, *eval_data, *device, *precision;
    const char *chat_template, *save_dtype;
    const char *tokenize; /* plain-string data -> ids: "joint" (TRL 1.x) or "separate" (TRL 0.x) */
    double beta, label_smoothing, discopop_tau, lr, warmup_ratio, weight_decay, max_grad_norm;
    double eval_split, adam_beta1, adam_beta2, adam_eps;
    int epochs, batch_size, micro_batch, max_length, save_every, eval_every, resume, overwrite;
    int max_steps, log_every, max_bad_steps, raw_text, keep_checkpoints, quiet, lean_optimizer, cuda_device;
    int recompute;             /* CUDA: LLAMA_RECOMPUTE_* (what forward keeps for backward) */
    const char *checkpoint_state, *checkpoint_dtype;  /* what a checkpoint holds: "full"|"weights", "fp32"|"bf16" */
    const char *command_line;  /* the command as typed, for the resume hint (NULL: the demo) */
    uint64_t seed;
} train_args;

/* TRL DPOTrainer's defaults, and the paper's beta 0.1 and learning rate 2e-7. */
static void train_defaults(train_args *a) {
    memset(a, 0, sizeof *a);
    a->loss = "apo_zero";
    a->schedule = "cosine";
    a->device = "cpu";
    a->precision = "fp32";
    a->save_dtype = "fp32";
    a->tokenize = "joint";
    a->beta = 0.1;
    a->discopop_tau = 0.05;
    a->lr = 2e-7;
    a->warmup_ratio = 0.1;
    a->max_grad_norm = 1.0;
    a->adam_beta1 = 0.9;
    a->adam_beta2 = 0.999;
    a->adam_eps = 1e-8;
    a->epochs = 1;
    a->batch_size = 64;
    a->micro_batch = 4;
    a->max_length = 1024;
    a->log_every = 1;
    a->max_bad_steps = 3;
    a->keep_checkpoints = 1;
    a->save_every = -1;            /* auto: about every tenth of the run (save_every_steps) */
    a->recompute = LLAMA_RECOMPUTE_LAYER;
    a->checkpoint_state = "full";
    a->checkpoint_dtype = "fp32";
    a->seed = 42;
}

/* The usage errors no file needs to be opened for; the loss list goes into terms. 0 or -1. */
static int check_train_args(const train_args *a, apo_term *terms, int *n_terms, char *err, size_t errsz) {
    apo_params defaults;
    if (!a->model || !a->data || !a->out)
        return errf(err, errsz, "--model, --data and --out are required (see trainer train --help)");
    if (a->batch_size < 1 || a->micro_batch < 1 || a->epochs < 1 || a->max_length < 2 || a->save_every < -1 ||
        a->eval_every < 0 || a->keep_checkpoints < 1 || a->log_every < 1 || a->max_bad_steps < 1)
        return errf(err, errsz,
                    "--batch-size, --micro-batch, --epochs, --keep-checkpoints, --log-every and "
                    "--max-bad-steps must be >= 1, --max-length >= 2, --save-every/--eval-every >= 0");
    if (!(a->lr >= 0) || !(a->warmup_ratio >= 0 && a->warmup_ratio <= 1) || !(a->max_grad_norm >= 0) ||
        !(a->weight_decay >= 0) || !(a->eval_split >= 0 && a->eval_split < 1))
        return errf(err, errsz,
                    "--lr, --max-grad-norm and --weight-decay must be >= 0, --warmup-ratio in "
                    "[0, 1], --eval-split in [0, 1)");
    if (strcmp(a->schedule, "cosine") && strcmp(a->schedule, "linear") && strcmp(a->schedule, "constant"))
        return errf(err, errsz, "--schedule must be cosine, linear or constant, got '%s'", a->schedule);
    if (a->eval_data && a->eval_split > 0)
        return errf(err, errsz, "give --eval-data or --eval-split, not both");
    if (strcmp(a->save_dtype, "fp32") && strcmp(a->save_dtype, "bf16"))
        return errf(err, errsz, "--save-dtype must be fp32 or bf16");
    if (strcmp(a->tokenize, "joint") && strcmp(a->tokenize, "separate"))
        return errf(err, errsz, "--tokenize must be joint (TRL 1.x) or separate (TRL 0.x), got '%s'",
                    a->tokenize);
    if (a->micro_batch > a->batch_size)
        return errf(err, errsz, "--micro-batch %d is larger than --batch-size %d", a->micro_batch,
                    a->batch_size);
    defaults = apo_default_params(APO_ZERO);
    defaults.beta = a->beta;
    defaults.label_smoothing = a->label_smoothing;
    defaults.discopop_tau = a->discopop_tau;
    *n_terms = apo_parse_loss_list(a->loss, &defaults, terms, MAX_TERMS, err, errsz); /* checks each term */
    if (*n_terms < 1) {
        char why[ERRSZ];
        fmt(why, sizeof why, "%s", err);
        return errf(err, errsz, "--loss: %s", why);
    }
    return 0;
}

/* ==========================================================================================
 * The compute backend
 * ========================================================================================== */

typedef struct {
    const char *device;    /* "cpu" | "cuda" */
    const char *precision; /* "fp32" | "bf16" */
    int max_tokens;        /* the largest micro-batch (tokens) the backend must plan for */
    int max_seq_tokens;    /* CUDA: the longest single sequence (attention scratch); 0: max_tokens */
    int lean_optimizer;    /* CUDA: bf16 weights + bf16 moments (8 bytes/parameter) */
    int cuda_device;       /* CUDA device index */
    int recompute;         /* CUDA: llama_cuda_opts.recompute (LLAMA_RECOMPUTE_*) */
} backend_opts;

#ifdef TRAINER_TEST_BACKEND
/* The test build wraps the backend to inject faults (tests/trainer/test_backend.c). */
llama_backend *test_backend_wrap(llama_backend *inner);
#endif

static llama_backend *backend_open(llama_model *m, const backend_opts *o, char *err, size_t errsz) {
    llama_backend *b = NULL;
    if (!strcmp(o->device, "cpu")) {
        if (strcmp(o->precision, "fp32")) {
            errf(err, errsz,
                 "--precision %s: the CPU path computes in fp32 only (use --device cuda for bf16)",
                 o->precision);
            return NULL;
        }
        b = llama_cpu_backend_create(m, err, errsz);
#ifdef _OPENMP
        if (b) note_busy_machine("trainer", omp_get_max_threads());
#endif
    } else if (!strcmp(o->device, "cuda")) {
        llama_cuda_opts co;
        memset(&co, 0, sizeof co);
        if (!strcmp(o->precision, "bf16"))
            co.bf16 = 1;
        else if (strcmp(o->precision, "fp32")) {
            errf(err, errsz, "--precision must be fp32 or bf16, got '%s'", o->precision);
            return NULL;
        }
        co.recompute = o->recompute;
        co.max_tokens = o->max_tokens;
        co.max_seq_tokens = o->max_seq_tokens;
        co.lean_optimizer = o->lean_optimizer;
        co.device = o->cuda_device;
        if (co.lean_optimizer && !co.bf16) {
            errf(err, errsz, "--lean-optimizer needs --precision bf16");
            return NULL;
        }
        b = llama_cuda_backend_create(m, &co, err, errsz);
    } else {
        errf(err, errsz, "--device must be cpu or cuda, got '%s'", o->device);
    }
#ifdef TRAINER_TEST_BACKEND
    if (b) b = test_backend_wrap(b);
#endif
    return b;
}

/* A hash of the initial weights and shape: the reference cache and resume are keyed by it. */
static uint64_t model_hash(const llama_model *m) {
    uint64_t h = data_hash_bytes(0x6c6c616d61ULL, &m->cfg.vocab_size, sizeof(int));
    int dims[6] = {m->cfg.hidden_size,         m->cfg.intermediate_size,   m->cfg.num_hidden_layers,
                   m->cfg.num_attention_heads, m->cfg.num_key_value_heads, m->cfg.head_dim};
    h = data_hash_bytes(h, dims, sizeof dims);
    return data_hash_bytes(h, m->params, m->n_params * sizeof(float));
}

/* ==========================================================================================
 * Log-probs of pairs: the reference pass, evaluation, and the forward half of a step
 * ========================================================================================== */

/* Buffers of one micro-batch of up to `micro` pairs (2 * micro sequences). */
typedef struct {
    pref_batch pb;      /* token ids, sequence starts and completion mask of the micro-batch */
    float *logp;        /* [T] per-token log-probs from the forward */
    float *dlogp;       /* [T] dloss/dlogp per token, the input of the backward */
    double *seq;        /* [2 micro] summed completion log-probs: chosen of pair k at 2k, rejected at 2k+1 */
    double *d_chosen;   /* [micro] dloss/d(summed log-prob) of each pair's chosen side */
    double *d_rejected; /* [micro] ... and of its rejected side */
    apo_pair *pairs;    /* [n_pairs] the pairs of a whole global batch (train_step) */
} micro_buffers;

static void micro_buffers_free(micro_buffers *mb) {
    pref_batch_free(&mb->pb);
    free(mb->logp);
    free(mb->dlogp);
    free(mb->seq);
    free(mb->d_chosen);
    free(mb->d_rejected);
    free(mb->pairs);
    memset(mb, 0, sizeof *mb);
}

static int micro_buffers_alloc(micro_buffers *mb, int micro, int n_pairs, int max_side_len) {
    size_t max_t = (size_t)2 * micro * (size_t)max_side_len + 1;
    memset(mb, 0, sizeof *mb);
    mb->logp = (float *)malloc(max_t * sizeof *mb->logp);
    mb->dlogp = (float *)malloc(max_t * sizeof *mb->dlogp);
    mb->seq = (double *)malloc((size_t)2 * micro * sizeof *mb->seq);
    mb->d_chosen = (double *)malloc((size_t)micro * sizeof *mb->d_chosen);
    mb->d_rejected = (double *)malloc((size_t)micro * sizeof *mb->d_rejected);
    mb->pairs = (apo_pair *)malloc((size_t)(n_pairs > micro ? n_pairs : micro) * sizeof *mb->pairs);
    if (mb->logp && mb->dlogp && mb->seq && mb->d_chosen && mb->d_rejected && mb->pairs) return 0;
    micro_buffers_free(mb);
    return -1;
}

/* Forward of pairs idx[0..n) of ds: their summed completion log-probs into mb->seq. */
static int forward_logps(llama_backend *b, const pref_dataset *ds, const int *idx, int n, micro_buffers *mb,
                         char *err, size_t errsz) {
    if (pref_batch_build(&mb->pb, ds, idx, n)) return errf(err, errsz, "out of memory");
    if (b->forward(b, &mb->pb.b, mb->logp)) return errf(err, errsz, "forward: %s", b->err);
    llama_completion_logp(&mb->pb.b, mb->logp, mb->seq);
    return 0;
}

/* Prompt-completion (SFT) data trains and evaluates with sft terms only: every other loss needs
 * a rejected answer. 0, or -1 with a message naming the file and the fix. */
static int check_data_loss(const pref_dataset *ds, const char *path, const apo_term *terms, int n_terms,
                           const char *loss, char *err, size_t errsz) {
    int k;
    if (!ds->stats.unpaired) return 0;
    for (k = 0; k < n_terms; k++)
        if (terms[k].p.type != APO_SFT)
            return errf(err, errsz,
                        "%s holds prompt-completion records (SFT data); --loss %s needs preference pairs "
                        "(\"chosen\" and \"rejected\"): use --loss sft",
                        path, loss);
    return 0;
}

/* The apo.h view of pair i of ds: policy and reference log-probs and completion lengths. */
static apo_pair pair_at(const pref_dataset *ds, int i, double policy_chosen, double policy_rejected,
                        double ref_chosen, double ref_rejected) {
    apo_pair p;
    const pref_example *e = &ds->ex[i];
    p.policy_chosen = policy_chosen;
    p.policy_rejected = policy_rejected;
    p.ref_chosen = ref_chosen;
    p.ref_rejected = ref_rejected;
    p.n_chosen = e->chosen_len - e->chosen_start;
    p.n_rejected = e->rejected_len - e->rejected_start;
    return p;
}

/* Summed completion log-probs of both sides of every pair of ds under the backend's current
 * weights: chosen[i], rejected[i]. `what` names the pass in progress messages (NULL: quiet). */
static int dataset_logps(llama_backend *b, const pref_dataset *ds, int micro, double *chosen,
                         double *rejected, const char *what, char *err, size_t errsz) {
    micro_buffers mb;
    int *idx = (int *)malloc((size_t)micro * sizeof *idx), i, k, status = -1;
    double last = now_s();
    if (!idx || micro_buffers_alloc(&mb, micro, micro, ds->max_side_len)) {
        free(idx);
        return errf(err, errsz, "out of memory");
    }
    for (i = 0; i < ds->n; i += micro) {
        int n = ds->n - i < micro ? ds->n - i : micro;
        for (k = 0; k < n; k++) idx[k] = i + k;
        if (forward_logps(b, ds, idx, n, &mb, err, errsz)) goto done;
        for (k = 0; k < n; k++) {
            chosen[i + k] = mb.seq[2 * k];
            rejected[i + k] = mb.seq[2 * k + 1];
        }
        if (what && now_s() - last > 5.0) {
            last = now_s();
            fprintf(stderr, "  %s: %d/%d pairs\n", what, i + n, ds->n);
        }
    }
    status = 0;
done:
    micro_buffers_free(&mb);
    free(idx);
    return status;
}

/* Reference log-probs of ds: from the run directory's cache when present, else computed with
 * the backend's (initial) weights and cached. */
static int reference_logps(llama_backend *b, const pref_dataset *ds, int micro, const char *out_dir,
                           uint64_t mh, int max_length, const char *what, double *chosen, double *rejected,
                           char *err, size_t errsz) {
    char path[4200];
    uint64_t dh = pref_dataset_hash(ds), key = data_hash_bytes(mh ^ dh, &max_length, sizeof max_length);
    double t0;
    ref_cache_path(path, sizeof path, out_dir, key);
    if (file_exists(path)) {
        if (ref_cache_load(path, ds->n, chosen, rejected, err, errsz) == 0) {
            fprintf(stderr, "reference log-probs (%s): reused %s\n", what, path);
            return 0;
        }
        fprintf(stderr, "warning: %s; recomputing\n", err);
    }
    fprintf(stderr, "reference log-probs (%s): computing for %d pairs with the initial model\n", what, ds->n);
    t0 = now_s();
    if (dataset_logps(b, ds, micro, chosen, rejected, what, err, errsz)) return -1;
    if (ref_cache_save(path, ds->n, chosen, rejected, mh, dh, max_length, err, errsz)) return -1;
    fprintf(stderr, "reference log-probs (%s): done in %.1fs, cached in %s\n", what, now_s() - t0, path);
    return 0;
}

/* The loss and TRL metrics of the backend's current weights on ds, the whole set as one batch.
 * ref_c/ref_r: reference log-probs (NULL, or prompt-completion data: the policy is its own
 * reference, rewards 0). The policy's log-probs are left in pol_c/pol_r [ds->n]. */
static int evaluate(llama_backend *b, const pref_dataset *ds, const double *ref_c, const double *ref_r,
                    const apo_term *terms, int n_terms, int micro, double *pol_c, double *pol_r,
                    apo_metrics *out, char *err, size_t errsz) {
    apo_pair *pairs;
    int i;
    memset(out, 0, sizeof *out);
    if (ds->n == 0) return 0;
    if (dataset_logps(b, ds, micro, pol_c, pol_r, NULL, err, errsz)) return -1;
    if (!ref_c || !ref_r || ds->stats.unpaired) {
        ref_c = pol_c;
        ref_r = pol_r;
    }
    if (!(pairs = (apo_pair *)malloc((size_t)ds->n * sizeof *pairs))) return errf(err, errsz, "out of memory");
    for (i = 0; i < ds->n; i++) pairs[i] = pair_at(ds, i, pol_c[i], pol_r[i], ref_c[i], ref_r[i]);
    apo_batch_loss(terms, n_terms, pairs, ds->n, NULL, NULL, out); /* means over the finite pairs */
    free(pairs);
    return 0;
}

/* ==========================================================================================
 * The training step
 * ========================================================================================== */

/* Everything a training run holds, phase to phase. */
typedef struct {
    const train_args *a;
    apo_term terms[MAX_TERMS];
    int n_terms;
    llama_model m; /* the initial model, then the weights being trained */
    int have_model;
    llama_backend *b;
    pref_dataset ds, eds;    /* training pairs; held-out pairs (eds.n = 0: no evaluation) */
    double *ref_c, *ref_r;   /* [ds.n] reference log-probs of the training pairs */
    double *eref_c, *eref_r; /* [eds.n] reference log-probs of the held-out pairs */
    double *epol_c, *epol_r; /* [eds.n] policy log-probs of the last evaluation */
    uint64_t model_hash;
    train_state st; /* where training stands (saved in every checkpoint) */
    long total_steps, warmup_steps;
    long last_saved;    /* step of the newest checkpoint on disk (-1: none) */
    long save_every;    /* checkpoint cadence in steps (0: only at the end) */
    checkpoint_opts ck; /* what a checkpoint holds */
    int lock_fd;        /* OUT/trainer.lock, held for the whole run (-1: none) */
    int interrupted;    /* stopped by SIGINT/SIGTERM, after saving */
    FILE *metrics;   /* OUT/metrics.jsonl, appended */
    float *scratch;  /* [n_params] host buffer for checkpoint I/O */
    micro_buffers mb;
    int *order;                  /* [ds.n] this epoch's order of the training pairs */
    int order_epoch;             /* the epoch `order` belongs to (-1: none yet) */
    double t_start, tokens_done; /* throughput and ETA of this process */
    long steps_done;
    apo_metrics eval_first, eval_last; /* for the demo's before/after table */
    int has_eval;
} train_run;

/* What one step did, for the log. */
typedef struct {
    apo_metrics m; /* loss and TRL metrics of the global batch */
    double grad_norm, lr, tokens;
    int skipped; /* the update was skipped: non-finite loss or gradient */
    char why[160];
} step_report;

/* Linear warmup, then Hugging Face's cosine, linear or constant schedule. */
static double lr_at(const char *schedule, double lr, long step, long total, long warmup) {
    double progress;
    if (step < warmup) return lr * (double)step / (double)(warmup > 0 ? warmup : 1);
    progress = (double)(step - warmup) / (double)(total - warmup > 0 ? total - warmup : 1);
    if (!strcmp(schedule, "constant")) return lr;
    if (!strcmp(schedule, "linear")) return lr * fmax(0.0, 1.0 - progress);
    return lr * fmax(0.0, 0.5 * (1.0 + cos(M_PI * progress)));
}

/* One optimizer step on the global batch batch[0..nb) (indices of training pairs), in
 * micro-batches of --micro-batch pairs:
 *   forward     -> summed completion log-probs of chosen and rejected
 *   apo.h       -> the micro-batch's share of the batch loss and dloss/dlogp of each sequence
 *   backward    <- dloss/dlogp of each token: its sequence's value on completion tokens, 0 else;
 *                  the backend adds the gradient to what earlier micro-batches left
 * then clip the summed gradient to --max-grad-norm and apply one AdamW update. A batch with a
 * non-finite loss or gradient norm is not applied (the step still counts). */
static int train_step(train_run *r, const int *batch, int nb, double lr, step_report *rep, char *err,
                      size_t errsz) {
    const train_args *a = r->a;
    llama_backend *b = r->b;
    micro_buffers *mb = &r->mb;
    apo_batch_totals totals;
    double clip = 1.0;
    int i, k, s, t;
    memset(rep, 0, sizeof *rep);
    rep->lr = lr;
    totals.n_pairs = nb;
    totals.chosen_tokens = 0;
    for (i = 0; i < nb; i++) totals.chosen_tokens += pair_at(&r->ds, batch[i], 0, 0, 0, 0).n_chosen;

    b->zero_grad(b);
    for (i = 0; i < nb; i += a->micro_batch) { /* gradient accumulation */
        int n = nb - i < a->micro_batch ? nb - i : a->micro_batch;
        if (forward_logps(b, &r->ds, batch + i, n, mb, err, errsz)) return -1;
        for (k = 0; k < n; k++) {
            int j = batch[i + k];
            const pref_example *e = &r->ds.ex[j];
            double pc = mb->seq[2 * k], pr = mb->seq[2 * k + 1];
            /* prompt-completion data has no reference: the policy is its own (rewards 0) */
            mb->pairs[i + k] = r->ds.stats.unpaired ? pair_at(&r->ds, j, pc, pr, pc, pr)
                                                    : pair_at(&r->ds, j, pc, pr, r->ref_c[j], r->ref_r[j]);
            rep->tokens += e->chosen_len + e->rejected_len; /* not the empty side's stand-in token */
        }
        /* the gradients of the micro-batch's share of the batch loss */
        apo_microbatch_loss(r->terms, r->n_terms, mb->pairs + i, n, &totals, mb->d_chosen, mb->d_rejected, NULL);
        for (s = 0; s < 2 * n; s++) {
            double g = (s & 1) ? mb->d_rejected[s / 2] : mb->d_chosen[s / 2];
            for (t = mb->pb.seq_start[s]; t < mb->pb.seq_start[s + 1]; t++)
                mb->dlogp[t] = mb->pb.completion[t] ? (float)g : 0.0f;
        }
        if (b->backward(b, &mb->pb.b, mb->dlogp)) return errf(err, errsz, "backward: %s", b->err);
    }
    /* the loss and metrics of the whole batch, now that all its log-probs are known */
    apo_batch_loss(r->terms, r->n_terms, mb->pairs, nb, NULL, NULL, &rep->m);

    rep->grad_norm = b->grad_norm(b);
    /* a failure inside the backend (e.g. a CUDA error) also gives a non-finite norm: report the
     * failure itself, not a "non-finite gradient" */
    if (!isfinite(rep->grad_norm) && b->err[0]) return errf(err, errsz, "gradient norm: %s", b->err);
    if (rep->m.n_nonfinite > 0 || !isfinite(rep->m.loss)) {
        rep->skipped = 1;
        fmt(rep->why, sizeof rep->why, "%d pair(s) with a non-finite log-prob, loss %g", rep->m.n_nonfinite,
            rep->m.loss);
    } else if (!isfinite(rep->grad_norm)) {
        rep->skipped = 1;
        fmt(rep->why, sizeof rep->why, "non-finite gradient norm %g", rep->grad_norm);
    }
    if (!rep->skipped) {
        llama_adamw h;
        if (a->max_grad_norm > 0 && rep->grad_norm > a->max_grad_norm)
            clip = a->max_grad_norm / (rep->grad_norm + 1e-6);
        h.lr = lr;
        h.beta1 = a->adam_beta1;
        h.beta2 = a->adam_beta2;
        h.eps = a->adam_eps;
        h.weight_decay = a->weight_decay;
        h.step = r->st.n_updates + 1;
        if (b->adamw_step(b, &h, (float)clip)) return errf(err, errsz, "adamw: %s", b->err);
        r->st.n_updates++;
        r->st.bad_in_row = 0;
    } else {
        r->st.bad_in_row++;
    }
    b->zero_grad(b);
    return 0;
}

/* ==========================================================================================
 * The phases of a training run
 * ========================================================================================== */

/* The tokenized training pairs (or prompt-completion examples), and the held-out ones
 * (--eval-data, or a seeded --eval-split). */
static int load_data(train_run *r, const tokenizer *tok, char *err, size_t errsz) {
    const train_args *a = r->a;
    pref_opts po;
    memset(&po, 0, sizeof po);
    po.max_length = a->max_length;
    po.raw_text = a->raw_text;
    po.max_reports = 20;
    po.tokenize = strcmp(a->tokenize, "separate") ? PREF_TOKENIZE_JOINT : PREF_TOKENIZE_SEPARATE;
    if (po.raw_text && po.tokenize == PREF_TOKENIZE_JOINT &&
        pref_text_specials(&po, a->model, tok, err, errsz))
        return -1;
    if (pref_dataset_load(&r->ds, a->data, tok, &po, stderr, err, errsz)) return -1;
    pref_stats_print(&r->ds.stats, a->data, stderr);
    if (check_data_loss(&r->ds, a->data, r->terms, r->n_terms, a->loss, err, errsz)) return -1;
    if (a->eval_data) {
        if (pref_dataset_load(&r->eds, a->eval_data, tok, &po, stderr, err, errsz)) return -1;
        pref_stats_print(&r->eds.stats, a->eval_data, stderr);
        if (r->eds.n == 0) return errf(err, errsz, "%s has no usable pair", a->eval_data);
        if (check_data_loss(&r->eds, a->eval_data, r->terms, r->n_terms, a->loss, err, errsz)) return -1;
    } else if (a->eval_split > 0 && r->ds.n > 1) {
        /* a seeded, fixed split: the same pairs are held out on every run and resume */
        int n_eval = (int)floor(a->eval_split * r->ds.n + 0.5), i, rc;
        uint64_t rs = rng_stream(a->seed, 0xe5a1ULL); /* a stream no epoch uses */
        int *perm = (int *)malloc((size_t)r->ds.n * sizeof *perm);
        if (!perm) return errf(err, errsz, "out of memory");
        if (n_eval < 1) n_eval = 1;
        if (n_eval >= r->ds.n) n_eval = r->ds.n - 1;
        for (i = 0; i < r->ds.n; i++) perm[i] = i;
        shuffle(perm, r->ds.n, &rs);
        rc = pref_dataset_permute(&r->ds, perm) || pref_dataset_split(&r->ds, r->ds.n - n_eval, &r->eds);
        free(perm);
        if (rc) return errf(err, errsz, "out of memory");
        fprintf(stderr, "eval split: %d %s held out, %d for training\n", r->eds.n,
                r->ds.stats.unpaired ? "examples" : "pairs", r->ds.n);
    }
    if (r->ds.n == 0)
        return errf(err, errsz, "%s has no usable pair (see the messages above); nothing to train on",
                    a->data);
    return 0;
}

/* The initial model (also the reference), checked against its tokenizer. */
static int load_model(train_run *r, const tokenizer *tok, char *err, size_t errsz) {
    int vt;
    if (llama_model_load(&r->m, r->a->model, err, errsz)) return -1;
    r->have_model = 1;
    vt = tokenizer_vocab_size(tok);
    if (vt > r->m.cfg.vocab_size)
        return errf(err, errsz,
                    "the tokenizer has %d tokens but config.json's vocab_size is %d; this tokenizer "
                    "does not belong to this model",
                    vt, r->m.cfg.vocab_size);
    r->model_hash = model_hash(&r->m);
    return 0;
}

/* A fresh start: clear what an earlier run in OUT left (only with --overwrite). */
static void start_fresh(train_run *r) {
    const train_args *a = r->a;
    char path[4200];
    if (a->resume)
        fprintf(stderr, "--resume: no checkpoint in %s yet; starting from the beginning\n", a->out);
    checkpoint_prune(a->out,
                     a->overwrite ? 0 : 1 << 30); /* leftovers of killed saves; all with --overwrite */
    fmt(path, sizeof path, "%s/metrics.jsonl", a->out);
    unlink(path);
}

/* --resume: weights, moments and position from the newest checkpoint, if it belongs to this run. */
static int resume(train_run *r, const char *ck, char *err, size_t errsz) {
    const train_args *a = r->a;
    train_state saved;
    char path[4200];
    if (checkpoint_load(ck, &r->m, r->b, &saved, r->scratch, err, errsz)) return -1;
    if (saved.data_hash != r->st.data_hash || saved.model_hash != r->model_hash ||
        saved.batch_size != a->batch_size || saved.shuffle_seed != a->seed)
        return errf(err, errsz,
                    "%s was made with %s; resume with the same ones it was started with (or start a new "
                    "--out)",
                    ck,
                    saved.data_hash != r->st.data_hash
                        ? "other data (or another --max-length, template or tokenizer)"
                    : saved.model_hash != r->model_hash ? "another initial --model"
                    : saved.batch_size != a->batch_size ? "another --batch-size"
                                                        : "another --seed");
    saved.micro_batch = r->st.micro_batch;
    saved.epochs = r->st.epochs;
    saved.loss = r->st.loss;
    saved.schedule = r->st.schedule;
    saved.lr = r->st.lr;
    saved.beta = r->st.beta;
    r->st = saved;
    fprintf(stderr, "resumed from %s: step %ld/%ld, epoch %d, %d pairs into it\n", ck, r->st.step,
            r->total_steps, r->st.epoch + 1, r->st.epoch_pos);
    r->last_saved = r->st.step;
    fmt(path, sizeof path, "%s/metrics.jsonl", a->out);
    /* a run that ended at its checkpoint evaluates once more in save_model: its final eval record
     * goes, so that it is not written twice */
    return metrics_truncate(path, r->st.step, r->st.step == r->total_steps ? r->st.step - 1 : r->st.step,
                            err, errsz);
}

/* The schedule, what checkpoints hold and how often they are written (said on one line, with
 * their size), and the state of a fresh start. */
static int plan_run(train_run *r, char *err, size_t errsz) {
    const train_args *a = r->a;
    double gb;
    r->total_steps = (long)((r->ds.n + a->batch_size - 1) / a->batch_size) * a->epochs;
    if (a->max_steps > 0 && a->max_steps < r->total_steps) r->total_steps = a->max_steps;
    r->warmup_steps = (long)ceil(a->warmup_ratio * (double)r->total_steps);
    r->scratch = (float *)malloc(r->m.n_params * sizeof *r->scratch);
    if (!r->scratch) return errf(err, errsz, "out of memory (optimizer state buffer)");
    r->st.shuffle_seed = a->seed;
    r->st.data_hash = pref_dataset_hash(&r->ds);
    r->st.model_hash = r->model_hash;
    r->st.batch_size = a->batch_size;
    r->st.micro_batch = a->micro_batch;
    r->st.epochs = a->epochs;
    r->st.loss = a->loss;
    r->st.schedule = a->schedule;
    r->st.lr = a->lr;
    r->st.beta = a->beta;
    r->last_saved = -1;
    r->ck.keep = a->keep_checkpoints;
    r->ck.weights_only = !strcmp(a->checkpoint_state, "weights");
    r->ck.bf16 = !strcmp(a->checkpoint_dtype, "bf16");
    r->ck.tokenizer_from = a->model;
    /* by default a checkpoint about every tenth of the run: an interruption loses at most ~10% */
    r->save_every = a->save_every >= 0 ? a->save_every : (r->total_steps + 9) / 10;
    gb = (double)checkpoint_bytes(&r->m, &r->ck) / 1e9;
    if (r->save_every > 0)
        fprintf(stderr, "checkpoints: every %ld steps, %.3g GB each (%s weights%s), the newest %d kept\n",
                r->save_every, gb, r->ck.bf16 ? "bf16" : "fp32", r->ck.weights_only ? " only" : " + Adam moments",
                r->ck.keep);
    else
        fprintf(stderr, "checkpoints: only at the end, %.3g GB\n", gb);
    return 0;
}

/* The output directory (created only now that the inputs are known to be good; another run's
 * directory is refused), the backend, the schedule, and a fresh or resumed state. */
static int open_run(train_run *r, char *err, size_t errsz) {
    const train_args *a = r->a;
    char ck[4200], path[4200];
    long ck_step;
    backend_opts bo;
    int longest = r->ds.max_side_len > r->eds.max_side_len ? r->ds.max_side_len : r->eds.max_side_len;
    if (mkdir_p(a->out)) return errf(err, errsz, "cannot create --out %s (%s)", a->out, strerror(errno));
    if ((r->lock_fd = run_lock(a->out, err, errsz)) < 0) return -1;
    ck_step = checkpoint_latest(a->out, ck, sizeof ck);
    fmt(path, sizeof path, "%s/metrics.jsonl", a->out);
    if (!a->resume && !a->overwrite && (ck_step >= 0 || file_exists(path)))
        return errf(err, errsz,
                    "%s already holds a training run; pass --resume to continue it, --overwrite to start "
                    "again (reference log-probs are reused), or choose another --out",
                    a->out);
    memset(&bo, 0, sizeof bo);
    bo.device = a->device;
    bo.precision = a->precision;
    bo.lean_optimizer = a->lean_optimizer;
    bo.cuda_device = a->cuda_device;
    bo.recompute = a->recompute;
    bo.max_tokens = 2 * a->micro_batch * longest;
    bo.max_seq_tokens = longest;
    if (!(r->b = backend_open(&r->m, &bo, err, errsz))) {
        char why[ERRSZ];
        fmt(why, sizeof why, "%s", err);
        return errf(err, errsz, "backend: %s", why);
    }
    if (r->m.cfg.max_position_embeddings > 0 && longest > r->m.cfg.max_position_embeddings)
        fprintf(stderr,
                "warning: sequences of up to %d tokens, longer than the model's max_position_embeddings %d; "
                "consider --max-length %d\n",
                longest, r->m.cfg.max_position_embeddings, r->m.cfg.max_position_embeddings);
    fprintf(stderr, "model %s: %zu parameters, %d layers, hidden %d, vocab %d; backend %s\n", a->model,
            r->m.n_params, r->m.cfg.num_hidden_layers, r->m.cfg.hidden_size, r->m.cfg.vocab_size, r->b->name);

    if (plan_run(r, err, errsz)) return -1;
    if (a->resume && ck_step >= 0) {
        char why[ERRSZ];
        if (resume(r, ck, err, errsz)) {
            fmt(why, sizeof why, "%s", err);
            return errf(err, errsz, "--resume: %s", why);
        }
    } else {
        start_fresh(r);
    }
    if (!(r->metrics = fopen(path, "ab")))
        return errf(err, errsz, "cannot write %s (%s)", path, strerror(errno));
    return 0;
}

/* The reference log-probs of the training and held-out pairs (from the cache when present). */
static int reference_pass(train_run *r, char *err, size_t errsz) {
    const train_args *a = r->a;
    size_t n = (size_t)r->ds.n, ne = (size_t)r->eds.n;
    r->ref_c = (double *)malloc(n * sizeof(double));
    r->ref_r = (double *)malloc(n * sizeof(double));
    r->eref_c = (double *)malloc((ne + 1) * sizeof(double));
    r->eref_r = (double *)malloc((ne + 1) * sizeof(double));
    r->epol_c = (double *)malloc((ne + 1) * sizeof(double));
    r->epol_r = (double *)malloc((ne + 1) * sizeof(double));
    if (!r->ref_c || !r->ref_r || !r->eref_c || !r->eref_r || !r->epol_c || !r->epol_r)
        return errf(err, errsz, "out of memory");
    if (r->ds.stats.unpaired) { /* SFT data: the loss is the completion's NLL, no reference needed */
        fprintf(stderr, "reference log-probs: not needed (prompt-completion data, --loss sft)\n");
        return 0;
    }
    if (reference_logps(r->b, &r->ds, a->micro_batch, a->out, r->model_hash, a->max_length, "train", r->ref_c,
                        r->ref_r, err, errsz))
        return -1;
    if (ne > 0 && reference_logps(r->b, &r->eds, a->micro_batch, a->out, r->model_hash, a->max_length, "eval",
                                  r->eref_c, r->eref_r, err, errsz))
        return -1;
    return 0;
}

/* Evaluates on the held-out pairs and appends the eval record of the current step. */
static int eval_and_log(train_run *r, char *err, size_t errsz) {
    apo_metrics em;
    double epoch = (double)r->st.epoch + (double)r->st.epoch_pos / r->ds.n;
    if (evaluate(r->b, &r->eds, r->eref_c, r->eref_r, r->terms, r->n_terms, r->a->micro_batch, r->epol_c,
                 r->epol_r, &em, err, errsz))
        return -1;
    if (metrics_append_eval(r->metrics, r->st.step, r->st.step == 0 ? 0.0 : epoch, &em, r->eds.stats.unpaired))
        return errf(err, errsz, "cannot write metrics.jsonl");
    if (r->st.step == 0)
        fprintf(stderr, "eval  step 0: loss %.4f  logps/chosen %.3f  logps/rejected %.3f\n", em.loss,
                em.logps_chosen, em.logps_rejected);
    else
        fprintf(stderr, "eval  step %ld: loss %.4f  acc %.2f  logps/chosen %.3f  logps/rejected %.3f\n",
                r->st.step, em.loss, em.rewards_accuracies, em.logps_chosen, em.logps_rejected);
    if (!r->has_eval) r->eval_first = em;
    r->eval_last = em;
    r->has_eval = 1;
    return 0;
}

/* The step's record in metrics.jsonl (every step) and the progress line (every --log-every). */
static int log_step(train_run *r, const step_report *rep, double t_step) {
    const train_args *a = r->a;
    clair_buf lb = {0, 0, 0, 0};
    double epoch = (double)r->st.epoch + (double)r->st.epoch_pos / r->ds.n;
    int rc;
    clair_buf_printf(&lb, "{\"step\":%ld,\"epoch\":", r->st.step);
    clair_json_write_number(&lb, epoch);
    clair_buf_puts(&lb, ",");
    metrics_json(&lb, "", &rep->m, r->ds.stats.unpaired);
    clair_buf_puts(&lb, ",\"grad_norm\":");
    clair_json_write_number(&lb, rep->grad_norm);
    clair_buf_puts(&lb, ",\"learning_rate\":");
    clair_json_write_number(&lb, rep->lr);
    clair_buf_printf(&lb, ",\"num_tokens\":%.0f,\"skipped\":%s}", rep->tokens,
                     rep->skipped ? "true" : "false");
    rc = lb.oom || metrics_append(r->metrics, lb.data) ? -1 : 0;
    clair_buf_free(&lb);
    if (rep->skipped)
        fprintf(stderr, "step %ld: %s; update skipped (%d in a row)\n", r->st.step, rep->why,
                r->st.bad_in_row);
    if (!a->quiet && (r->st.step % a->log_every == 0 || r->st.step == r->total_steps)) {
        double el = now_s() - r->t_start, tps = r->tokens_done / (el > 0 ? el : 1e-9);
        char eta[32];
        fmt_duration(eta, sizeof eta, el / r->steps_done * (double)(r->total_steps - r->st.step));
        fprintf(stderr,
                "step %ld/%ld | loss %.4f | acc %.2f | margin %+.4f | grad %.3g | lr %.3g | %.0f tok/s | "
                "%.2fs/step | ETA %s\n",
                r->st.step, r->total_steps, rep->m.loss, rep->m.rewards_accuracies, rep->m.rewards_margins,
                rep->grad_norm, rep->lr, tps, now_s() - t_step, eta);
    }
    return rc;
}

/* The pairs of the next global batch: this epoch's seeded order, from where the epoch stands. */
static const int *next_batch(train_run *r, int *nb) {
    int i;
    if (r->st.epoch != r->order_epoch) { /* a fresh stream per epoch: resumable */
        uint64_t rs = rng_stream(r->st.shuffle_seed, (uint64_t)r->st.epoch);
        for (i = 0; i < r->ds.n; i++) r->order[i] = i;
        shuffle(r->order, r->ds.n, &rs);
        r->order_epoch = r->st.epoch;
    }
    *nb = r->ds.n - r->st.epoch_pos < r->a->batch_size ? r->ds.n - r->st.epoch_pos : r->a->batch_size;
    return r->order + r->st.epoch_pos;
}

/* SIGINT/SIGTERM during training: the step in flight finishes, a checkpoint is written and the
 * run stops with the command that resumes it. A second signal stops at once (the default action). */
static volatile sig_atomic_t stop_requested = 0;
static void on_stop_signal(int sig) {
    stop_requested = 1;
    signal(sig, SIG_DFL);
}

/* After a stop request: the checkpoint of the current step (unless it is on disk or the last
 * step was bad), then the message that says how to go on. */
static int stop_after_step(train_run *r, char *err, size_t errsz) {
    const train_args *a = r->a;
    char ck[4200];
    if (r->last_saved != r->st.step && r->st.bad_in_row == 0) {
        if (checkpoint_save(a->out, &r->ck, r->b, &r->m, &r->st, r->scratch, err, errsz)) return -1;
        r->last_saved = r->st.step;
    }
    r->interrupted = 1;
    if (checkpoint_latest(a->out, ck, sizeof ck) < 0) fmt(ck, sizeof ck, "no checkpoint");
    if (!a->command_line)
        return errf(err, errsz, "interrupted after step %ld/%ld (%s)", r->st.step, r->total_steps, ck);
    return errf(err, errsz, "interrupted after step %ld/%ld; %s is on disk. Continue with:\n  %s%s", r->st.step,
                r->total_steps, ck, a->command_line, a->resume ? "" : " --resume");
}

/* The optimizer steps, with logging, evaluation and checkpoints on their schedules. */
static int train_loop(train_run *r, char *err, size_t errsz) {
    const train_args *a = r->a;
    if (micro_buffers_alloc(&r->mb, a->micro_batch, a->batch_size, r->ds.max_side_len))
        return errf(err, errsz, "out of memory");
    if (!(r->order = (int *)malloc((size_t)r->ds.n * sizeof *r->order)))
        return errf(err, errsz, "out of memory");
    r->order_epoch = -1;
    fprintf(stderr,
            "training: %d pairs, %d epoch(s), batch %d (micro-batch %d), %ld steps (%ld warmup), loss %s, "
            "beta %g, lr %g (%s)\n",
            r->ds.n, a->epochs, a->batch_size, a->micro_batch, r->total_steps, r->warmup_steps, a->loss,
            a->beta, a->lr, a->schedule);
    if (r->eds.n > 0 && r->st.step == 0 && eval_and_log(r, err, errsz)) return -1; /* the "before" numbers */
    r->t_start = now_s();
    stop_requested = 0;
    signal(SIGINT, on_stop_signal);
    signal(SIGTERM, on_stop_signal);
    while (r->st.step < r->total_steps) {
        step_report rep;
        double t_step = now_s(), lr = lr_at(a->schedule, a->lr, r->st.step, r->total_steps, r->warmup_steps);
        int nb;
        const int *batch = next_batch(r, &nb);
        if (train_step(r, batch, nb, lr, &rep, err, errsz)) return -1;
        r->st.step++;
        r->steps_done++;
        r->st.epoch_pos += nb;
        if (r->st.epoch_pos >= r->ds.n) {
            r->st.epoch++;
            r->st.epoch_pos = 0;
        }
        r->tokens_done += rep.tokens;
        if (log_step(r, &rep, t_step)) return errf(err, errsz, "cannot write %s/metrics.jsonl", a->out);
        if (r->st.bad_in_row >= a->max_bad_steps) {
            char ck[4200];
            if (checkpoint_latest(a->out, ck, sizeof ck) >= 0)
                return errf(err, errsz,
                            "%d steps in a row had a non-finite loss or gradient; stopping. The last good "
                            "checkpoint is %s (lower --lr, or check the data)",
                            r->st.bad_in_row, ck);
            return errf(err, errsz,
                        "%d steps in a row had a non-finite loss or gradient; stopping before any "
                        "checkpoint was written (lower --lr, or check the data)",
                        r->st.bad_in_row);
        }
        if (r->st.step == r->total_steps) break; /* the final eval and save follow */
        if (r->eds.n > 0 && a->eval_every > 0 && r->st.step % a->eval_every == 0 &&
            eval_and_log(r, err, errsz))
            return -1;
        if (r->save_every > 0 && r->st.step % r->save_every == 0 && r->st.bad_in_row == 0) {
            if (checkpoint_save(a->out, &r->ck, r->b, &r->m, &r->st, r->scratch, err, errsz)) return -1;
            r->last_saved = r->st.step;
            if (!a->quiet) fprintf(stderr, "saved %s/checkpoint-%ld\n", a->out, r->st.step);
        }
        if (stop_requested) return stop_after_step(r, err, errsz);
    }
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    return 0;
}

/* The final evaluation and checkpoint, then the aligned model itself in --out. */
static int save_model(train_run *r, char *err, size_t errsz) {
    const train_args *a = r->a;
    llama_save_opts so;
    if (r->eds.n > 0 && eval_and_log(r, err, errsz)) return -1;
    if (r->last_saved != r->st.step &&
        checkpoint_save(a->out, &r->ck, r->b, &r->m, &r->st, r->scratch, err, errsz))
        return -1;
    memset(&so, 0, sizeof so);
    so.bf16 = !strcmp(a->save_dtype, "bf16");
    so.tokenizer_from = a->model;
    if (model_sync_from_backend(r->b, &r->m, err, errsz) ||
        llama_model_save(&r->m, a->out, &so, err, errsz)) {
        char why[ERRSZ];
        fmt(why, sizeof why, "%s", err);
        return errf(err, errsz, "saving the model: %s", why);
    }
    fprintf(stderr,
            "done: %ld steps in %.1fs; the aligned model is in %s (Hugging Face format), metrics in "
            "%s/metrics.jsonl\n",
            r->st.step, now_s() - r->t_start, a->out, a->out);
    return 0;
}

static void train_run_free(train_run *r) {
    if (r->metrics) fclose(r->metrics);
    if (r->lock_fd >= 0) close(r->lock_fd); /* releases OUT/trainer.lock */
    if (r->b) r->b->destroy(r->b);
    if (r->have_model) llama_model_free(&r->m);
    pref_dataset_free(&r->ds);
    pref_dataset_free(&r->eds);
    micro_buffers_free(&r->mb);
    free(r->ref_c);
    free(r->ref_r);
    free(r->eref_c);
    free(r->eref_r);
    free(r->epol_c);
    free(r->epol_r);
    free(r->scratch);
    free(r->order);
}

/* What a training run hands back (the demo prints it). */
typedef struct {
    apo_metrics eval_first, eval_last;
    int has_eval;
    long steps;
    double seconds;
} train_result;


/* The whole run: the phases in order. Exit status: 0, 1 (failed), 2 (usage), 130 (interrupted,
 * saved). */
static int run_train(const train_args *a, train_result *res) {
    char err[ERRSZ];
    tokenizer *tok = NULL;
    train_run r;
    int status = 1, rc;
    memset(&r, 0, sizeof r);
    r.a = a;
    r.lock_fd = -1;
    if (res) memset(res, 0, sizeof *res);
    if (check_train_args(a, r.terms, &r.n_terms, err, sizeof err)) {
        report("trainer train", "%s", err);
        return 2;
    }
    if ((strcmp(a->checkpoint_state, "full") && strcmp(a->checkpoint_state, "weights")) ||
        (strcmp(a->checkpoint_dtype, "fp32") && strcmp(a->checkpoint_dtype, "bf16"))) {
        report("trainer train", "--checkpoint-state must be full or weights, --checkpoint-dtype fp32 or bf16");
        return 2;
    }
    if (!model_exists(a->model))
        return report("trainer train", "--model %s: no such directory (a Hugging Face checkpoint) or .gguf file",
                      a->model);
    if (!file_exists(a->data)) return report("trainer train", "--data %s: no such file", a->data);
    if (a->eval_data && !file_exists(a->eval_data))
        return report("trainer train", "--eval-data %s: no such file", a->eval_data);
    if (check_jsonl(a->data, err, sizeof err) || (a->eval_data && check_jsonl(a->eval_data, err, sizeof err)))
        return report("trainer train", "%s", err);

    if (model_tokenizer_load(&tok, a->model, a->chat_template, err, sizeof err))
        return report("trainer train", "tokenizer: %s", err);
    say_chat_template(tok, a->raw_text, a->chat_template);
    rc = load_data(&r, tok, err, sizeof err) || load_model(&r, tok, err, sizeof err);
    tokenizer_free(tok); /* the data is tokenized: the tokenizer is not needed again */
    if (rc || open_run(&r, err, sizeof err) || reference_pass(&r, err, sizeof err) ||
        train_loop(&r, err, sizeof err) || save_model(&r, err, sizeof err)) {
        report("trainer train", "%s", err);
        if (r.interrupted) status = 130; /* as a shell reports a command stopped by Ctrl-C */
        goto done;
    }
    if (res) {
        res->eval_first = r.eval_first;
        res->eval_last = r.eval_last;
        res->has_eval = r.has_eval;
        res->steps = r.st.step;
        res->seconds = now_s() - r.t_start;
    }
    status = 0;
done:
    train_run_free(&r);
    return status;
}

static const char train_usage[] =
    "usage: trainer train --model MODEL --data FILE --out DIR [flags]\n"
    "\n"
    "Aligns a Llama checkpoint on preference pairs with APO (or another loss of apo.h).\n"
    "Reference log-probs are computed once with the initial model and cached in --out.\n"
    "\n"
    "Data lines: {\"prompt\": ..., \"chosen\": ..., \"rejected\": ...}, each a string or a list of\n"
    "{\"role\", \"content\"}; chosen/rejected may repeat the prompt turns (ultrafeedback_clair_32k).\n"
    "\n";

/* The values a run can use. The sizes keep every token count of a micro-batch (2 x micro-batch x
 * max-length, 2^28 at most) and every step count inside an int; the rest are what the maths allows. */
static const opt_range train_ranges[] = {
    {"--beta", 1e-6, 1e6},          {"--label-smoothing", 0, 0.5},    {"--discopop-tau", 1e-6, 1e3},
    {"--lr", 0, 10},                {"--epochs", 1, 1e6},             {"--batch-size", 1, 1 << 20},
    {"--micro-batch", 1, 1 << 10},  {"--max-length", 2, 1 << 17},     {"--warmup-ratio", 0, 1},
    {"--weight-decay", 0, 1e3},     {"--adam-beta1", 0, 0.999999},    {"--adam-beta2", 0, 0.999999999},
    {"--adam-eps", 1e-30, 1},       {"--max-grad-norm", 0, 1e30},     {"--eval-split", 0, 0.999},
    {"--eval-every", 0, 1 << 30},   {"--save-every", -1, 1 << 30},    {"--keep-checkpoints", 1, 1 << 20},
    {"--max-steps", 0, 1 << 30},    {"--log-every", 1, 1 << 30},      {"--max-bad-steps", 1, 1 << 30},
    {"--cuda-device", 0, 1024},     {"--recompute", 0, 2},            {NULL, 0, 0}};

static int cmd_train(int argc, char **argv) {
    train_args a;
    char cmdline[8192];
    int rc;
    const opt_def defs[] = {
        {"--model", OPT_STR, &a.model, "MODEL",
         "the model to align: a Hugging Face checkpoint directory, a .gguf file or a hub id ORG/NAME[@REV]"},
        {"--data", OPT_STR, &a.data, "FILE",
         "preference pairs, JSONL (prompt/chosen/rejected; strings or conversations)"},
        {"--out", OPT_STR, &a.out, "DIR",
         "output: the aligned checkpoint, checkpoint-N/, metrics.jsonl, reference cache"},
        {"--loss", OPT_STR, &a.loss, "SPEC",
         "a loss or a weighted list, e.g. apo_zero, apo_down, sigmoid, apo_zero:1,sft:0.1"},
        {"--beta", OPT_DBL, &a.beta, "X", "reward scale beta"},
        {"--label-smoothing", OPT_DBL, &a.label_smoothing, "X", "label smoothing (robust, exo_pair)"},
        {"--discopop-tau", OPT_DBL, &a.discopop_tau, "X", "tau of the discopop loss"},
        {"--lr", OPT_DBL, &a.lr, "X", "peak learning rate"},
        {"--epochs", OPT_INT, &a.epochs, "N", "passes over the data"},
        {"--batch-size", OPT_INT, &a.batch_size, "N", "pairs per optimizer step (global batch)"},
        {"--micro-batch", OPT_INT, &a.micro_batch, "N",
         "pairs per forward/backward (gradient accumulation up to --batch-size)"},
        {"--max-length", OPT_INT, &a.max_length, "N",
         "tokens of prompt + response per side; longer ones keep the start"},
        {"--warmup-ratio", OPT_DBL, &a.warmup_ratio, "X", "fraction of the steps with a linear warmup"},
        {"--schedule", OPT_STR, &a.schedule, "NAME",
         "learning-rate schedule after warmup: cosine, linear or constant"},
        {"--weight-decay", OPT_DBL, &a.weight_decay, "X", "AdamW weight decay (matrices only, not norms)"},
        {"--adam-beta1", OPT_DBL, &a.adam_beta1, "X", "AdamW beta1"},
        {"--adam-beta2", OPT_DBL, &a.adam_beta2, "X", "AdamW beta2"},
        {"--adam-eps", OPT_DBL, &a.adam_eps, "X", "AdamW epsilon"},
        {"--max-grad-norm", OPT_DBL, &a.max_grad_norm, "X",
         "clip the gradient to this global L2 norm (0: no clipping)"},
        {"--eval-data", OPT_STR, &a.eval_data, "FILE", "held-out preference pairs for evaluation"},
        {"--eval-split", OPT_DBL, &a.eval_split, "X", "or hold out this fraction of --data (seeded)"},
        {"--eval-every", OPT_INT, &a.eval_every, "N",
         "evaluate every N steps (0: only before and after training)"},
        {"--save-every", OPT_INT, &a.save_every, "N",
         "write checkpoint-N every N steps (0: only at the end; -1: about every tenth of the run)"},
        {"--keep-checkpoints", OPT_INT, &a.keep_checkpoints, "N", "keep the newest N checkpoints"},
        {"--checkpoint-state", OPT_STR, &a.checkpoint_state, "S",
         "what a checkpoint holds: full (weights + Adam moments: resumable) or weights"},
        {"--checkpoint-dtype", OPT_STR, &a.checkpoint_dtype, "T",
         "checkpoint weights: fp32 (exact resume) or bf16 (half the size)"},
        {"--save-dtype", OPT_STR, &a.save_dtype, "T",
         "dtype of the final model: fp32 or bf16 (checkpoints are fp32)"},
        {"--seed", OPT_U64, &a.seed, "S", "seed of the shuffling (and of the eval split)"},
        {"--resume", OPT_FLAG, &a.resume, "", "continue from the newest checkpoint in --out"},
        {"--overwrite", OPT_FLAG, &a.overwrite, "", "start again in an --out that holds a run"},
        {"--max-steps", OPT_INT, &a.max_steps, "N",
         "stop after N optimizer steps (0: all epochs; the schedule spans N)"},
        {"--log-every", OPT_INT, &a.log_every, "N",
         "print the progress line every N steps (metrics.jsonl gets every step)"},
        {"--max-bad-steps", OPT_INT, &a.max_bad_steps, "N",
         "stop after N steps in a row with a non-finite loss or gradient"},
        {"--device", OPT_STR, &a.device, "D", "cpu or cuda"},
        {"--precision", OPT_STR, &a.precision, "P", "fp32 or bf16 (bf16: CUDA only)"},
        {"--lean-optimizer", OPT_FLAG, &a.lean_optimizer, "",
         "CUDA bf16: bf16 weights and Adam moments, stochastic rounding (fits 8B on 80 GB)"},
        {"--cuda-device", OPT_INT, &a.cuda_device, "N", "CUDA device index"},
        {"--recompute", OPT_INT, &a.recompute, "N",
         "CUDA activations: 0 keep all; 1 keep layer inputs, rerun each layer in backward (least memory); "
         "2 selective: keep GEMM outputs, recompute norms and SwiGLU (faster; more memory). Same results"},
        {"--chat-template", OPT_STR, &a.chat_template, "NAME",
         "override the template family: llama3, chatml, llama2"},
        {"--raw-text", OPT_FLAG, &a.raw_text, "",
         "no chat template: prompt text + response text + eos (TRL's standard format)"},
        {"--tokenize", OPT_STR, &a.tokenize, "RULE",
         "--raw-text ids: joint (TRL 1.x: prompt + response together, BOS as the tokenizer adds it) or "
         "separate (TRL 0.x)"},
        {"--quiet", OPT_FLAG, &a.quiet, "", "no progress lines"},
        {NULL, OPT_END, NULL, NULL, NULL}};
    train_defaults(&a);
    rc = opts_parse("trainer train", train_usage, defs, argc, argv, 2, NULL, 0, NULL);
    if (rc == 0 && opts_check_ranges("trainer train", defs, train_ranges)) rc = -1;
    if (rc == 0) a.command_line = shell_command(argc, argv, cmdline, sizeof cmdline);
    if (rc == 1) return 0;
    if (rc < 0) return 2;
    return run_train(&a, NULL);
}

/* ==========================================================================================
 * eval: the training metrics of any model on any pairs
 * ========================================================================================== */

/* Per-pair log-probs as JSONL, written atomically. */
static int write_pair_logps(const char *path, const pref_dataset *ds, const double *pc, const double *pr,
                            const double *rc, const double *rr, char *err, size_t errsz) {
    clair_buf b = {0, 0, 0, 0};
    int k, status;
    for (k = 0; k < ds->n; k++) {
        clair_buf_printf(&b, "{\"line\":%d,\"logps/chosen\":", ds->ex[k].line);
        clair_json_write_number(&b, pc[k]);
        clair_buf_puts(&b, ",\"logps/rejected\":");
        clair_json_write_number(&b, pr[k]);
        clair_buf_puts(&b, ",\"ref_logps/chosen\":");
        clair_json_write_number(&b, rc[k]);
        clair_buf_puts(&b, ",\"ref_logps/rejected\":");
        clair_json_write_number(&b, rr[k]);
        clair_buf_puts(&b, "}\n");
    }
    status = b.oom ? errf(err, errsz, "out of memory")
                   : write_file_atomic(path, b.data ? b.data : "", b.len, err, errsz);
    clair_buf_free(&b);
    return status;
}

/* Loads the model in dir and opens a backend for it (the caller destroys both). */
static llama_backend *open_model(llama_model *m, const char *dir, const char *device, const char *precision,
                                 int max_tokens, char *err, size_t errsz) {
    backend_opts bo;
    llama_backend *b;
    if (llama_model_load(m, dir, err, errsz)) return NULL;
    memset(&bo, 0, sizeof bo);
    bo.device = device;
    bo.precision = precision;
    bo.max_tokens = max_tokens;
    bo.recompute = LLAMA_RECOMPUTE_LAYER;   /* forward only: one activation set is enough */
    if (!(b = backend_open(m, &bo, err, errsz))) llama_model_free(m);
    return b;
}

static const char eval_usage[] =
    "usage: trainer eval --model MODEL --data FILE [--ref DIR] [flags]\n"
    "\n"
    "Prints the reward metrics (TRL names) and mean log-probs of a model on preference data, as JSON.\n"
    "\n";

/* The token ids of every example as JSONL, written atomically: what training would see. */
static int write_tokens(const char *path, const pref_dataset *ds, char *err, size_t errsz) {
    clair_buf b = {0, 0, 0, 0};
    int k, s, i, status;
    for (k = 0; k < ds->n; k++) {
        const pref_example *e = &ds->ex[k];
        clair_buf_printf(&b, "{\"line\":%d", e->line);
        for (s = 0; s < 2; s++) {
            int off = s ? e->rejected_off : e->chosen_off, len = s ? e->rejected_len : e->chosen_len;
            clair_buf_printf(&b, ",\"%s_ids\":[", s ? "rejected" : "chosen");
            for (i = 0; i < len; i++) clair_buf_printf(&b, "%s%d", i ? "," : "", ds->pool[off + i]);
            clair_buf_printf(&b, "],\"%s_start\":%d", s ? "rejected" : "chosen",
                             s ? e->rejected_start : e->chosen_start);
        }
        clair_buf_puts(&b, "}\n");
    }
    status = b.oom ? errf(err, errsz, "out of memory")
                   : write_file_atomic(path, b.data ? b.data : "", b.len, err, errsz);
    clair_buf_free(&b);
    return status;
}

/* The data of eval, tokenized with the model's tokenizer by the training rules (po). */
static int eval_load_data(pref_dataset *ds, const char *model, const char *chat, const char *data,
                          pref_opts *po, char *err, size_t errsz) {
    tokenizer *tok = NULL;
    int rc;
    if (check_jsonl(data, err, errsz)) return -1;
    if (model_tokenizer_load(&tok, model, chat, err, errsz)) {
        char why[ERRSZ];
        fmt(why, sizeof why, "%s", err);
        return errf(err, errsz, "tokenizer: %s", why);
    }
    say_chat_template(tok, po->raw_text, chat);
    rc = (po->raw_text && po->tokenize == PREF_TOKENIZE_JOINT &&
          pref_text_specials(po, model, tok, err, errsz)) ||
         pref_dataset_load(ds, data, tok, po, stderr, err, errsz);
    tokenizer_free(tok);
    return rc ? -1 : 0;
}

/* Reference log-probs of ds under the model in dir, which is loaded, used and freed. */
static int eval_reference(const char *dir, const char *device, const char *precision, const pref_dataset *ds,
                          int micro, double *ref_c, double *ref_r, char *err, size_t errsz) {
    llama_model m;
    llama_backend *b = open_model(&m, dir, device, precision, 2 * micro * ds->max_side_len, err, errsz);
    int rc;
    if (!b) return -1;
    rc = dataset_logps(b, ds, micro, ref_c, ref_r, "reference log-probs", err, errsz);
    b->destroy(b);
    llama_model_free(&m);
    return rc;
}

/* eval's JSON: TRL's metric names for pairs; the SFT loss and log-prob for prompt-completion data
 * (no rejected side, no reference). */
static void eval_json(clair_buf *ob, const pref_dataset *ds, const apo_metrics *em) {
    if (ds->stats.unpaired) {
        clair_buf_printf(ob, "{\"examples\":%d,\"eval_loss\":", ds->n);
        clair_json_write_number(ob, em->loss);
        clair_buf_puts(ob, ",\"eval_logps/chosen\":");
        clair_json_write_number(ob, em->logps_chosen);
    } else {
        clair_buf_printf(ob, "{\"pairs\":%d,", ds->n);
        metrics_json(ob, "eval_", em, 0);
    }
    clair_buf_puts(ob, "}");
}

/* As for train (train_ranges): token counts of a micro-batch stay inside an int. */
static const opt_range eval_ranges[] = {
    {"--beta", 1e-6, 1e6}, {"--micro-batch", 1, 1 << 10}, {"--max-length", 2, 1 << 17}, {NULL, 0, 0}};

static int cmd_eval(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *ref = NULL, *loss = NULL, *chat = NULL, *pairs_out = NULL;
    const char *device = "cpu", *precision = "fp32", *who = "trainer eval", *tokenize = "joint";
    const char *tokens_out = NULL;
    double beta = 0.1;
    int micro = 4, max_length = 1024, raw = 0, rc, status = 1, n_terms = 0;
    char err[ERRSZ];
    pref_dataset ds;
    pref_opts po;
    llama_model m;
    llama_backend *b;
    double *ref_c = NULL, *ref_r = NULL, *pol_c = NULL, *pol_r = NULL;
    apo_term terms[MAX_TERMS];
    apo_params defaults;
    apo_metrics em;
    clair_buf ob = {0, 0, 0, 0};
    const opt_def defs[] = {
        {"--model", OPT_STR, &model, "MODEL",
         "the model to evaluate (the policy): a directory, a .gguf file or ORG/NAME"},
        {"--data", OPT_STR, &data, "FILE",
         "preference pairs or prompt-completion records, JSONL (as for train)"},
        {"--ref", OPT_STR, &ref, "DIR",
         "reference model for the rewards (default: --model itself, so rewards are 0)"},
        {"--loss", OPT_STR, &loss, "SPEC",
         "loss to report (default: apo_zero; sft for prompt-completion data)"},
        {"--beta", OPT_DBL, &beta, "X", "reward scale beta"},
        {"--micro-batch", OPT_INT, &micro, "N", "pairs per forward"},
        {"--max-length", OPT_INT, &max_length, "N", "tokens per side (longer ones keep the start)"},
        {"--pairs-out", OPT_STR, &pairs_out, "FILE", "also write per-pair log-probs as JSONL"},
        {"--tokens-out", OPT_STR, &tokens_out, "FILE",
         "also write each example's token ids and completion starts as JSONL"},
        {"--device", OPT_STR, &device, "D", "cpu or cuda"},
        {"--precision", OPT_STR, &precision, "P", "fp32 or bf16 (bf16: CUDA only)"},
        {"--chat-template", OPT_STR, &chat, "NAME", "override the template family: llama3, chatml, llama2"},
        {"--raw-text", OPT_FLAG, &raw, "", "no chat template (TRL's standard format)"},
        {"--tokenize", OPT_STR, &tokenize, "RULE", "--raw-text ids: joint (TRL 1.x) or separate (TRL 0.x)"},
        {NULL, OPT_END, NULL, NULL, NULL}};
    memset(&ds, 0, sizeof ds);
    rc = opts_parse(who, eval_usage, defs, argc, argv, 2, NULL, 0, NULL);
    if (rc == 1) return 0;
    if (rc < 0 || opts_check_ranges(who, defs, eval_ranges)) return 2;
    if (!model || !data) {
        report(who, "--model and --data are required");
        return 2;
    }
    if (micro < 1 || max_length < 2 || (strcmp(tokenize, "joint") && strcmp(tokenize, "separate"))) {
        report(who,
               "--micro-batch >= 1, --max-length >= 2, --tokenize joint (TRL 1.x) or separate (TRL 0.x)");
        return 2;
    }
    defaults = apo_default_params(APO_ZERO);
    defaults.beta = beta;
    if (loss && (n_terms = apo_parse_loss_list(loss, &defaults, terms, MAX_TERMS, err, sizeof err)) < 1) {
        report(who, "--loss: %s", err);
        return 2;
    }
    memset(&po, 0, sizeof po);
    po.max_length = max_length;
    po.raw_text = raw;
    po.max_reports = 20;
    po.tokenize = strcmp(tokenize, "separate") ? PREF_TOKENIZE_JOINT : PREF_TOKENIZE_SEPARATE;
    if (eval_load_data(&ds, model, chat, data, &po, err, sizeof err)) {
        report(who, "%s", err);
        goto done;
    }
    pref_stats_print(&ds.stats, data, stderr);
    if (ds.n == 0) {
        report(who, "%s has no usable pair", data);
        goto done;
    }
    if (!loss) { /* the data's own objective */
        loss = ds.stats.unpaired ? "sft" : "apo_zero";
        n_terms = apo_parse_loss_list(loss, &defaults, terms, MAX_TERMS, err, sizeof err);
    }
    if (check_data_loss(&ds, data, terms, n_terms, loss, err, sizeof err) ||
        (tokens_out && write_tokens(tokens_out, &ds, err, sizeof err))) {
        report(who, "%s", err);
        goto done;
    }
    ref_c = (double *)malloc((size_t)ds.n * sizeof(double));
    ref_r = (double *)malloc((size_t)ds.n * sizeof(double));
    pol_c = (double *)malloc((size_t)ds.n * sizeof(double));
    pol_r = (double *)malloc((size_t)ds.n * sizeof(double));
    if (!ref_c || !ref_r || !pol_c || !pol_r) {
        report(who, "out of memory");
        goto done;
    }
    if (ref && !ds.stats.unpaired && /* the reference first: one model in memory at a time */
        eval_reference(ref, device, precision, &ds, micro, ref_c, ref_r, err, sizeof err)) {
        report(who, "%s", err);
        goto done;
    }
    if (!(b = open_model(&m, model, device, precision, 2 * micro * ds.max_side_len, err, sizeof err))) {
        report(who, "%s", err);
        goto done;
    }
    rc = evaluate(b, &ds, ref ? ref_c : NULL, ref ? ref_r : NULL, terms, n_terms, micro, pol_c, pol_r, &em,
                  err, sizeof err);
    b->destroy(b);
    llama_model_free(&m);
    if (rc) {
        report(who, "%s", err);
        goto done;
    }
    if (!ref || ds.stats.unpaired) {
        memcpy(ref_c, pol_c, (size_t)ds.n * sizeof(double));
        memcpy(ref_r, pol_r, (size_t)ds.n * sizeof(double));
    }
    if (pairs_out && write_pair_logps(pairs_out, &ds, pol_c, pol_r, ref_c, ref_r, err, sizeof err)) {
        report(who, "%s", err);
        goto done;
    }
    eval_json(&ob, &ds, &em);
    if (ob.oom) {
        report(who, "out of memory");
        goto done;
    }
    printf("%s\n", ob.data);
    status = 0;
done:
    clair_buf_free(&ob);
    pref_dataset_free(&ds);
    free(ref_c);
    free(ref_r);
    free(pol_c);
    free(pol_r);
    return status;
}

/* ==========================================================================================
 * init: a random checkpoint of any Llama shape
 * ========================================================================================== */

static const char init_usage[] =
    "usage: trainer init --config FILE --out DIR [flags]\n"
    "\n"
    "Writes a randomly initialised Hugging Face checkpoint (Hugging Face's init: normal(0, initializer_range)\n"
    "for matrices and embeddings, 1 for norms), for tests, benchmarks and examples.\n"
    "\n";

static int cmd_init(int argc, char **argv) {
    const char *config = NULL, *out = NULL, *tokdir = NULL, *dtype = "fp32", *who = "trainer init";
    uint64_t seed = 0;
    int rc;
    char err[ERRSZ];
    llama_config cfg;
    llama_model m;
    llama_save_opts so;
    const opt_def defs[] = {
        {"--config", OPT_STR, &config, "FILE", "a Hugging Face Llama config.json (any shape)"},
        {"--out", OPT_STR, &out, "DIR", "where to write the checkpoint"},
        {"--seed", OPT_U64, &seed, "S", "seed of the normal(0, initializer_range) init"},
        {"--tokenizer", OPT_STR, &tokdir, "DIR", "copy the tokenizer files from this directory"},
        {"--dtype", OPT_STR, &dtype, "T", "fp32 or bf16"},
        {NULL, OPT_END, NULL, NULL, NULL}};
    rc = opts_parse(who, init_usage, defs, argc, argv, 2, NULL, 0, NULL);
    if (rc == 1) return 0;
    if (rc < 0) return 2;
    if (!config || !out) {
        report(who, "--config and --out are required");
        return 2;
    }
    if (strcmp(dtype, "fp32") && strcmp(dtype, "bf16")) {
        report(who, "--dtype must be fp32 or bf16");
        return 2;
    }
    if (llama_config_load(config, &cfg, err, sizeof err)) return report(who, "%s", err);
    if (llama_model_alloc(&m, &cfg, err, sizeof err)) return report(who, "%s", err);
    llama_model_init_random(&m, seed);
    memset(&so, 0, sizeof so);
    so.bf16 = !strcmp(dtype, "bf16");
    so.tokenizer_from = tokdir;
    if (mkdir_p(out))
        rc = report(who, "cannot create %s (%s)", out, strerror(errno));
    else if (llama_model_save(&m, out, &so, err, sizeof err))
        rc = report(who, "%s", err);
    else
        fprintf(stderr, "wrote %s: %zu parameters (%s)\n", out, m.n_params, dtype);
    llama_model_free(&m);
    return rc;
}

/* ==========================================================================================
 * The built-in demonstration
 * ========================================================================================== */

static int cmd_demo(const char *argv0) {
    char root[4096], model[4200], data[4200], evald[4200], out[4200];
    const char *slash = strrchr(argv0, '/'), *tmpdir = getenv("TMPDIR");
    train_args a;
    train_result r;
    double t0 = now_s();
    /* examples/ sits beside the trainer binary (the repository root); else the current directory */
    if (slash)
        fmt(root, sizeof root, "%.*s", (int)(slash - argv0), argv0);
    else
        fmt(root, sizeof root, ".");
    fmt(model, sizeof model, "%s/examples/tiny-llama", root);
    fmt(data, sizeof data, "%s/examples/pairs.jsonl", root);
    fmt(evald, sizeof evald, "%s/examples/pairs_eval.jsonl", root);
    if (!dir_exists(model) || !file_exists(data) || !file_exists(evald))
        return report(
            "trainer",
            "the demo needs %s, %s and %s (run ./trainer from the repository; see ./trainer --help)", model,
            data, evald);
    fmt(out, sizeof out, "%s/clair-apo-demo-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (!mkdtemp(out)) return report("trainer", "cannot create a temporary directory (%s)", strerror(errno));
    printf("clair-apo demo: APO-zero on CLAIR-style pairs (chosen = a minimal revision of the model's own\n"
           "answer, rejected = that answer). A tiny Llama (%s) is trained on %s;\n"
           "held-out pairs %s are measured before and after. Output: %s\n\n",
           model, data, evald, out);
    fflush(stdout);
#ifdef _OPENMP
    /* The demo model has 140k parameters: its matrices are too small for threads to pay off, and
     * on a busy machine OpenMP's barriers make it many times slower. One thread unless the user
     * asks otherwise (the results are the same either way). */
    if (!getenv("OMP_NUM_THREADS")) omp_set_num_threads(1);
#endif
    train_defaults(&a);
    a.model = model;
    a.data = data;
    a.eval_data = evald;
    a.out = out;
    a.loss = "apo_zero";
    a.beta = 0.1;
    a.lr = 2e-3;
    a.epochs = 6;
    a.batch_size = 16;
    a.micro_batch = 8;
    a.max_length = 256;
    a.warmup_ratio = 0.1;
    a.schedule = "cosine";
    a.log_every = 5;
    a.seed = 42;
    if (run_train(&a, &r)) return 1;
    printf("\n                          before      after     change\n");
    printf("log p(chosen)          %9.3f  %9.3f  %+9.3f   (APO-zero raises it)\n", r.eval_first.logps_chosen,
           r.eval_last.logps_chosen, r.eval_last.logps_chosen - r.eval_first.logps_chosen);
    printf("log p(rejected)        %9.3f  %9.3f  %+9.3f   (and lowers this one)\n",
           r.eval_first.logps_rejected, r.eval_last.logps_rejected,
           r.eval_last.logps_rejected - r.eval_first.logps_rejected);
    printf("reward accuracy        %9.2f  %9.2f              (share of pairs with r(chosen) > r(rejected))\n",
           r.eval_first.rewards_accuracies, r.eval_last.rewards_accuracies);
    printf("APO-zero loss          %9.4f  %9.4f\n", r.eval_first.loss, r.eval_last.loss);
    printf("\n%ld steps in %.0fs (total %.0fs). The aligned model is a Hugging Face checkpoint in %s.\n"
           "Next: ./trainer train --help, ./trainer generate --help\n",
           r.steps, r.seconds, now_s() - t0, out);
    return 0;
}

/* ========================================================================================== */

static void usage(FILE *f) {
    fprintf(f,
            "usage: trainer [COMMAND] [flags]\n\n"
            "  (no command)   run the built-in demonstration on examples/ (a few seconds on one core)\n"
            "  train          align a Llama checkpoint on preference pairs (APO-zero, APO-down, DPO, ...)\n"
            "  generate       sample answers to prompts (CLAIR's first step), JSONL for `clair revise`\n"
            "  eval           reward metrics and log-probs of a model on preference pairs\n"
            "  init           write a randomly initialised checkpoint of any Llama shape\n"
            "  convert        write a llama.cpp GGUF file as a Hugging Face checkpoint directory\n"
            "  plot           SVG charts: a run's curves (metrics.jsonl), a results table's bars\n"
            "  demo           the demonstration, explicitly\n\n"
            "`trainer COMMAND --help` lists every flag of a command with its default.\n");
}

int main(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : "demo";
    char hub_err[2048];
    if (!strcmp(cmd, "demo")) return cmd_demo(argv[0]);
    /* A Hugging Face model id (--model ORG/NAME[@REVISION], eval's --ref, init's --tokenizer) becomes
     * its snapshot directory in the local cache, downloaded first when missing (train/hub.h). */
    if (hub_resolve_args(argc, argv, hub_err, sizeof hub_err)) {
        fprintf(stderr, "trainer %s: %s\n", cmd, hub_err);
        return 1;
    }
    if (!strcmp(cmd, "train")) return cmd_train(argc, argv);
    if (!strcmp(cmd, "generate")) return cmd_generate(argc, argv);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc, argv);
    if (!strcmp(cmd, "init")) return cmd_init(argc, argv);
    if (!strcmp(cmd, "convert")) return cmd_convert(argc, argv);
    if (!strcmp(cmd, "plot")) return cmd_plot(argc, argv);
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "trainer: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
