/* train/rundir.h - the run directory of `trainer train --out OUT`: what is on disk, and how it
 * is written so that a kill at any moment loses at most the work since the last checkpoint.
 *
 *   OUT/model.safetensors, config.json,     the aligned model (Hugging Face format), written last
 *       tokenizer files
 *   OUT/checkpoint-N/                       a resumable state after optimizer step N:
 *       model.safetensors, config.json        the weights in fp32 (resume continues exactly)
 *       optimizer_m.safetensors               Adam's first moment ("exp_avg"), fp32, flat
 *       optimizer_v.safetensors               Adam's second moment ("exp_avg_sq")
 *       trainer_state.json                    position in the data, RNG seed, hashes (below)
 *   OUT/metrics.jsonl                       one record per step and per evaluation (TRL names)
 *   OUT/ref_logps-KEY.safetensors           reference log-probs: F64 "chosen" and "rejected" [n],
 *                                           KEY = hash(initial weights, tokenized data, max_length)
 *
 * A checkpoint is written into checkpoint-N.tmp/ and renamed, so a directory checkpoint-N is
 * always complete; leftovers of a killed save (*.tmp) are removed on the next start.
 */
#ifndef TRAIN_RUNDIR_H
#define TRAIN_RUNDIR_H

#include <stdint.h>
#include <stdio.h>
#include "../apo.h"
#include "../clair.h"
#include "../llama/model.h"

/* Where training stands; with the weights and the Adam moments it is the whole state. */
typedef struct {
    long step;             /* optimizer steps taken (skipped ones included) */
    long n_updates;        /* AdamW updates applied (the bias correction counts these) */
    int epoch;             /* current epoch, 0-based */
    int epoch_pos;         /* pairs of this epoch consumed */
    int bad_in_row;        /* consecutive steps with a non-finite loss or gradient */
    uint64_t shuffle_seed; /* epoch e is shuffled by rng_stream(shuffle_seed, e) */
    uint64_t data_hash;    /* of the tokenized training set: resume refuses other data */
    uint64_t model_hash;   /* of the initial weights: resume refuses another --model */
    int batch_size;        /* pairs per step: resume refuses another one */
    /* recorded for the reader of trainer_state.json, not needed to resume: */
    int micro_batch, epochs;
    const char *loss, *schedule;
    double lr, beta;
    /* what the checkpoint holds (written by checkpoint_save) */
    int weights_only; /* no Adam moments: not resumable */
    int bf16;         /* weights stored in bf16 */
} train_state;

int state_save(const char *path, const train_state *s, char *err, size_t errsz);
/* Reads what resuming needs (the fields above the "recorded" ones). */
int state_load(const char *path, train_state *s, char *err, size_t errsz);

/* The newest complete OUT/checkpoint-N: its step N (path in path[n]), or -1 if none. */
long checkpoint_latest(const char *out_dir, char *path, size_t n);
/* Removes leftovers of killed saves and all but the newest `keep` checkpoints. */
void checkpoint_prune(const char *out_dir, int keep);
/* What a checkpoint holds. The default (all zero but keep) is the resumable one: fp32 weights
 * and both Adam moments, 12 bytes per parameter. */
typedef struct {
    int keep;                   /* the newest `keep` checkpoints stay on disk */
    int weights_only;           /* no Adam moments (4 bytes/parameter): --resume cannot continue */
    int bf16;                   /* weights in bf16: smaller, but a resumed run is no longer bit-exact */
    const char *tokenizer_from; /* the tokenizer files are copied from this directory */
} checkpoint_opts;
/* Bytes one checkpoint takes (weights and moments; config and tokenizer files not counted). */
size_t checkpoint_bytes(const llama_model *m, const checkpoint_opts *o);
/* Writes OUT/checkpoint-<s->step> from the backend's state (scratch: n_params floats), then
 * prunes. A checkpoint being replaced or pruned is renamed away before it is deleted. */
int checkpoint_save(const char *out_dir, const checkpoint_opts *o, llama_backend *b, llama_model *m,
                    const train_state *s, float *scratch, char *err, size_t errsz);
/* Restores weights and moments into m and the backend, and the state into *s. */
int checkpoint_load(const char *dir, llama_model *m, llama_backend *b, train_state *s, float *scratch,
                    char *err, size_t errsz);
/* The backend trains its own copy of the weights (except the CPU one, which trains m in place):
 * copy them into m before m is saved. */
int model_sync_from_backend(llama_backend *b, llama_model *m, char *err, size_t errsz);

/* metrics.jsonl: "PREFIXloss", "PREFIXrewards/chosen", ... of m, as TRL logs them; for SFT data
 * (sft_data = 1) only "PREFIXloss" and "PREFIXlogps/chosen" (the mean completion log-prob). */
void metrics_json(clair_buf *b, const char *prefix, const apo_metrics *m, int sft_data);
/* Appends one line and flushes: a kill leaves whole records (or one partial last line). */
int metrics_append(FILE *f, const char *line);
int metrics_append_eval(FILE *f, long step, double epoch, const apo_metrics *m, int sft_data);
/* Keeps the training records of steps <= step and the eval records of steps <= eval_step: a
 * resumed run writes again the ones it repeats (and no record twice). */
int metrics_truncate(const char *path, long step, long eval_step, char *err, size_t errsz);

/* One trainer per run directory: an advisory lock on OUT/trainer.lock (released by the kernel
 * when the process ends, however it ends), holding the owner's PID for the message another
 * trainer gets. Returns the lock's descriptor (keep it open), or -1 with a message. */
int run_lock(const char *out_dir, char *err, size_t errsz);

/* The reference log-probs cache. */
void ref_cache_path(char *buf, size_t n, const char *out_dir, uint64_t key);
int ref_cache_load(const char *path, int n, double *chosen, double *rejected, char *err, size_t errsz);
int ref_cache_save(const char *path, int n, const double *chosen, const double *rejected, uint64_t model_hash,
                   uint64_t data_hash, int max_length, char *err, size_t errsz);

#endif /* TRAIN_RUNDIR_H */
