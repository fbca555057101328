/* util.h - the small utilities every part of the project shares: errors, time, files, random
 * numbers and command-line flags, for ./trainer, ./clair, train/ and llama/. One implementation
 * of each, in util.c (the drop-in headers apo.h and clair.h stay self-contained and do not use it).
 *
 * Conventions shared by every function that can fail: it returns -1 (or NULL) and writes one
 * sentence into err[errsz] that names the file and what to do; the command prints it behind its
 * own name ("trainer train: ...") and exits with status 1 (2 for a usage error).
 */
#ifndef UTIL_H
#define UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors and messages ---- */

/* snprintf that always terminates and never warns about truncation: paths and messages are cut
 * at the buffer size (a cut path cannot name a real file anyway: PATH_MAX is 4096). */
void fmt(char *buf, size_t n, const char *f, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* fmt into err[errsz], then return -1: `return errf(err, errsz, "%s: ...", path);` */
int errf(char *err, size_t errsz, const char *f, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Prints "who: message\n" on stderr and returns 1 (a command's exit status after a failure):
 * `return report("trainer train", "%s", err);` */
int report(const char *who, const char *f, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ---- time ---- */
double now_s(void);                               /* monotonic seconds */
void fmt_duration(char *buf, size_t n, double s); /* "42s", "3m05s", "2h10m"; "?" if unknown */
/* One "note:" line on stderr when `threads` > 1 OpenMP threads start on a machine that is already
 * busy (1-minute load average >= its CPUs, Linux's /proc/loadavg) and OMP_WAIT_POLICY is unset:
 * OpenMP's default waiting spins, so on shared cores every parallel region waits for a thread
 * that is not running (measured: 20x slower); passive waiting avoids it. */
void note_busy_machine(const char *who, int threads);

/* ---- files ---- */
int file_exists(const char *path); /* a regular file (not a directory) */
int dir_exists(const char *path);
int mkdir_p(const char *path);     /* like mkdir -p; 0 or -1 (errno set) */
int rm_flat_dir(const char *path); /* a directory of plain files, then itself */
/* The whole of a regular file, NUL-terminated (*len excludes the NUL). NULL on failure, with
 * errno set (ENOENT, EISDIR, EFBIG: larger than max_bytes, ...) and a sentence naming the file
 * and the cause in err (err may be NULL). A FIFO or device is refused, never waited on. */
char *read_file(const char *path, size_t max_bytes, size_t *len, char *err, size_t errsz);
/* The open descriptor of a regular file (read-only), its size in *size (may be NULL); -1 with
 * errno and the same messages as read_file otherwise. Every loader of outside files opens
 * through it, so none can hang on a FIFO or read a directory. */
int open_regular(const char *path, size_t max_bytes, size_t *size, char *err, size_t errsz);
/* 0 if path may be JSONL; -1 with a message naming the file when it is a binary dataset format
 * (Parquet, Arrow: what the Hugging Face hub serves) and saying how to turn it into JSONL. */
int check_jsonl(const char *path, char *err, size_t errsz);
/* argv[0..argc) as one line a shell reads back as the same words (quoted where needed), into
 * buf; returns buf. For messages such as "continue with: ...". */
const char *shell_command(int argc, char **argv, char *buf, size_t n);
/* data -> path.tmp, fsync, rename: a reader sees the old file or the new one, never half. */
int write_file_atomic(const char *path, const char *data, size_t n, char *err, size_t errsz);

/* ---- random numbers ----
 * splitmix64: one 64-bit integer is the whole state, so a checkpoint stores it exactly and a
 * resumed run draws the same numbers. */
uint64_t rng_next(uint64_t *state);
double rng_uniform(uint64_t *state); /* [0, 1), 53 random bits */
/* An independent stream for (seed, a): the shuffle of epoch a, the sampling of prompt a. */
uint64_t rng_stream(uint64_t seed, uint64_t a);
void shuffle(int *idx, int n, uint64_t *state); /* Fisher-Yates */

/* ---- command-line flags ----
 * A command describes its flags in a table; the parser fills the variables and --help prints
 * the table with each flag's current value as its default:
 *
 *     const opt_def defs[] = {
 *         { "--beta", OPT_DBL, &beta, "X", "reward scale beta" },
 *         { NULL, OPT_END, NULL, NULL, NULL }
 *     };
 * Values are given as "--flag VALUE" or "--flag=VALUE". An OPT_HEADING row (name NULL) prints
 * its help text as a heading in --help. */
typedef enum { OPT_END, OPT_STR, OPT_INT, OPT_DBL, OPT_U64, OPT_FLAG, OPT_HEADING } opt_kind;
typedef struct {
    const char *name; /* "--beta" */
    opt_kind kind;
    void *dst;           /* const char *, int, double, uint64_t or int (OPT_FLAG: set to 1) */
    const char *metavar; /* "X" in "--beta X" */
    const char *help;
} opt_def;

/* Parses argv[first..argc). Arguments that do not start with "--" go to pos[0..max_pos) and are
 * counted in *n_pos (with max_pos 0 they are an error). Returns 0; or 1 after printing usage and
 * the flag table on stdout for --help/-h; or -1 after printing "who: what is wrong (see who
 * --help)" on stderr. Integers must be integers in range, numbers finite. */
int opts_parse(const char *who, const char *usage, const opt_def *defs, int argc, char **argv, int first,
               const char **pos, int max_pos, int *n_pos);
void opts_print(FILE *out, const opt_def *defs);

/* The allowed range of a numeric flag. A command lists its ranges once and checks them right after
 * opts_parse, so that no absurd value (--micro-batch 2000000000, --lr 1e300) reaches arithmetic
 * that could overflow: */
typedef struct {
    const char *name; /* "--micro-batch" */
    double min, max;  /* inclusive */
} opt_range;
/* 0 if every flag of `ranges` (a list ended by a NULL name) that defs knows is within its range,
 * else -1 after printing "who: --flag must be between MIN and MAX, got V" on stderr. */
int opts_check_ranges(const char *who, const opt_def *defs, const opt_range *ranges);

#ifdef __cplusplus
}
#endif
#endif /* UTIL_H */
