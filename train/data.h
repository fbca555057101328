/* train/data.h - preference and SFT data and prompts for the trainer: JSONL in the formats TRL
 * reads, turned into token ids with the chat template, truncated as TRL truncates, and packed into
 * llama_batch micro-batches.
 *
 * Accepted preference records (one JSON object per line):
 *   {"prompt": "text", "chosen": "text", "rejected": "text"}                      (strings)
 *   {"prompt": [{"role":..,"content":..}, ...], "chosen": [{"role":"assistant",..}], ...}
 *   {"prompt": "text", "chosen": [user turn(s)..., assistant], "rejected": [...]}  (the CLAIR
 *      release ultrafeedback_clair_32k: chosen/rejected repeat the prompt turns)
 *   {"chosen": [turns..., assistant], "rejected": [turns..., assistant]}           (implicit prompt)
 * Accepted prompt-completion records (TRL's SFT format; the file is then SFT data):
 *   {"prompt": "text" | [messages], "completion": "text" | [{"role": "assistant", ...}]}
 * One file holds one kind: its first good record decides, and a record of the other kind is a bad
 * line. Other fields (e.g. "rational", "id") are ignored. Strings are wrapped as one user turn, the
 * chat template applied, and only the assistant response (with the template's end-of-turn token) is
 * the completion. With raw_text = 1, strings are tokenized as they are (TRL's "standard" format):
 * see pref_opts.tokenize for how prompt and completion become ids.
 *
 * Chat-template data reaches the tokenizer as C strings, so a string holding "\u0000" would lose
 * everything after it: such a line is refused (raw-text strings carry their length and keep it).
 *
 * Bad lines are never fatal and never silent: each is reported with its line number on the log
 * stream, skipped, and counted in the dataset's stats.
 */
#ifndef TRAIN_DATA_H
#define TRAIN_DATA_H

#include <stdio.h>
#include <stdint.h>
#include "../llama/model.h"
#include "../llama/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One preference pair, tokenized. Each side is prompt ids followed by response ids. A
 * prompt-completion record is a pair whose rejected side is empty (rejected_len 0): the completion
 * is the chosen side. */
typedef struct {
    int line;                  /* 1-based line in the source file */
    int chosen_off, chosen_len;        /* ids in the dataset's pool: [off, off + len) */
    int chosen_start;          /* index (within the side) of the first completion token */
    int rejected_off, rejected_len;
    int rejected_start;
} pref_example;

typedef struct {
    int n_lines;               /* non-blank lines read */
    int n_malformed;           /* invalid JSON, missing/mistyped fields, inconsistent turns */
    int n_empty;               /* chosen or rejected response empty (or only whitespace) */
    int n_prompt_too_long;     /* prompt alone fills max_length: no completion token would remain */
    int n_truncated;           /* pairs with a side cut to max_length (the start kept) */
    int n_reported;            /* messages printed (capped; the counts are always complete) */
    int unpaired;              /* 1: prompt-completion records (SFT data), no rejected side */
} pref_stats;

typedef struct {
    pref_example *ex;          /* [n] */
    int n;
    int *pool;                 /* all token ids, back to back */
    size_t pool_len, pool_cap;
    int max_side_len;          /* longest chosen or rejected sequence (tokens) */
    pref_stats stats;
} pref_dataset;

/* How raw-text (plain string) records become ids:
 *   PREF_TOKENIZE_JOINT     TRL 1.x: tokenizer(prompt) and tokenizer(prompt + response + eos), each
 *                           with the special tokens the tokenizer's post-processor adds (BOS on the
 *                           hub's Llama 2 and Llama 3 files: pref_opts.text_prefix); the completion
 *                           is what follows the longest common prefix of the two, shared by both
 *                           sides of a pair. BPE merges across the prompt/response boundary then
 *                           fall on the completion side, as in TRL.
 *   PREF_TOKENIZE_SEPARATE  TRL 0.x: prompt ids, then the response's own ids, then eos; no BOS.
 * Chat-template records are the same under both: tokenizer_chat_pair's prompt is the template's
 * generation prompt, an exact prefix (see docs/design.md for where this differs from TRL 1.x). */
enum { PREF_TOKENIZE_JOINT = 0, PREF_TOKENIZE_SEPARATE = 1 };

#define PREF_MAX_SPECIAL 4
typedef struct {
    int max_length;            /* prompt + response tokens per side (TRL max_length) */
    int raw_text;              /* 1: no chat template for string fields (TRL standard format) */
    int max_reports;           /* at most this many bad-line messages (0: 20) */
    int tokenize;              /* PREF_TOKENIZE_JOINT (zero, the default) or PREF_TOKENIZE_SEPARATE */
    /* Ids `tokenizer(text)` puts before and after plain text (joint rule only; pref_text_specials) */
    int text_prefix[PREF_MAX_SPECIAL], n_text_prefix;
    int text_suffix[PREF_MAX_SPECIAL], n_text_suffix;
} pref_opts;

/* Fills o->text_prefix/text_suffix with the special tokens Hugging Face's tokenizer(text) adds to
 * plain text (add_special_tokens=True, what TRL 1.x calls): those of tokenizer.json's
 * TemplateProcessing post-processor ("single" template, possibly inside a Sequence), as
 * `tokenizers` and transformers 5 apply it (the hub's Llama 2 and Llama 3 files add BOS; SmolLM2's
 * adds nothing). -1 with a message when tokenizer.json cannot be read. */
int pref_text_specials(pref_opts *o, const char *model_dir, const tokenizer *tok, char *err, size_t errsz);

/* Reads and tokenizes a preference JSONL file. Returns -1 only when the file cannot be read (or
 * memory runs out); bad lines are reported on `log` as "FILE:LINE: what" and counted. */
int pref_dataset_load(pref_dataset *ds, const char *path, const tokenizer *tok,
                      const pref_opts *opts, FILE *log, char *err, size_t errsz);
void pref_dataset_free(pref_dataset *ds);
/* A one-line summary of the counts ("1000 lines: 996 pairs, 2 malformed (skipped), ..."; SFT data
 * counts "prompt-completion examples"). */
void pref_stats_print(const pref_stats *s, const char *path, FILE *out);
/* 64-bit hash of the tokenized examples (ids and completion starts, in order). Two datasets that
 * would train identically hash identically; any change of text, template or max_length changes it. */
uint64_t pref_dataset_hash(const pref_dataset *ds);

/* Moves examples [first, n) of `src` into a new dataset `dst` (they share nothing afterwards). */
int pref_dataset_split(pref_dataset *src, int first, pref_dataset *dst);
/* Reorders examples by idx (a permutation of 0..n-1), e.g. to take a seeded eval split. */
int pref_dataset_permute(pref_dataset *ds, const int *idx);

/* A micro-batch: pairs p[0..n) become 2n sequences, chosen then rejected for each pair:
 * sequence 2k = chosen of pair k, 2k+1 = rejected of pair k. An empty side (the rejected side of a
 * prompt-completion record) becomes a one-token sequence without completion tokens (backends take
 * no empty sequence): its summed log-prob is 0 and it gets no gradient. Buffers grow as needed. */
typedef struct {
    llama_batch b;             /* views into the arrays below */
    int *tokens;               /* [T] */
    int *seq_start;            /* [2n + 1] */
    unsigned char *completion; /* [T] */
    int *n_completion;         /* [2n] completion token counts */
    size_t cap_tokens, cap_seq;
} pref_batch;

int pref_batch_build(pref_batch *pb, const pref_dataset *ds, const int *pairs, int n);
void pref_batch_free(pref_batch *pb);

/* ---- prompts for generation ---- */
/* One prompt: the JSON line as read (kept so the output can echo it) and its token ids. */
typedef struct {
    int line;
    char *json;                /* the record's "prompt" value, re-serialised compactly */
    int *ids; int n_ids;       /* chat prompt ids including the generation prompt */
} prompt_item;

typedef struct {
    prompt_item *items;
    int n;
    int n_lines, n_malformed, n_reported;
} prompt_set;

/* Reads {"prompt": "text" | [messages]} lines (other fields ignored). Bad lines are reported and
 * counted like pref_dataset_load (chat prompts holding "\u0000" included). */
int prompt_set_load(prompt_set *ps, const char *path, const tokenizer *tok, int raw_text,
                    FILE *log, char *err, size_t errsz);
void prompt_set_free(prompt_set *ps);

/* A 64-bit mixing hash over bytes (used for cache keys). */
uint64_t data_hash_bytes(uint64_t h, const void *p, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* TRAIN_DATA_H */
