/* util.c - errors, time, files, random numbers and flags, shared by the whole project (see util.h
 * for the contracts). */
#define _POSIX_C_SOURCE 200809L

#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ==========================================================================================
 * Errors and messages
 * ========================================================================================== */

void fmt(char *buf, size_t n, const char *f, ...) {
    va_list ap;
    if (!buf || n == 0) return;
    va_start(ap, f);
    vsnprintf(buf, n, f, ap);
    va_end(ap);
}

int errf(char *err, size_t errsz, const char *f, ...) {
    va_list ap;
    if (err && errsz) {
        va_start(ap, f);
        vsnprintf(err, errsz, f, ap);
        va_end(ap);
    }
    return -1;
}

int report(const char *who, const char *f, ...) {
    va_list ap;
    fprintf(stderr, "%s: ", who);
    va_start(ap, f);
    vfprintf(stderr, f, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

/* ==========================================================================================
 * Time
 * ========================================================================================== */

void note_busy_machine(const char *who, int threads) {
    double load = 0;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    FILE *f;
    if (threads <= 1 || getenv("OMP_WAIT_POLICY") || cpus < 1 || !(f = fopen("/proc/loadavg", "r"))) return;
    if (fscanf(f, "%lf", &load) != 1) load = 0;
    fclose(f);
    if (load < (double)cpus) return;
    fprintf(stderr,
            "%s: note: this machine is busy (load average %.1f on %ld CPUs) and %d OpenMP threads spin while "
            "they wait; on shared cores that can make every step many times slower: set "
            "OMP_WAIT_POLICY=passive (or fewer OMP_NUM_THREADS)\n",
            who, load, cpus, threads);
}

double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void fmt_duration(char *buf, size_t n, double s) {
    long t;
    if (!(s >= 0) || s > 1e8) {
        fmt(buf, n, "?");
        return;
    } /* NaN, negative, absurd */
    t = (long)(s + 0.5);
    if (t >= 3600)
        fmt(buf, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60)
        fmt(buf, n, "%ldm%02lds", t / 60, t % 60);
    else
        fmt(buf, n, "%lds", t);
}

/* ==========================================================================================
 * Files
 * ========================================================================================== */

int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}
int dir_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int mkdir_p(const char *path) {
    char tmp[4096];
    size_t i, n = strlen(path);
    if (n == 0 || n >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(tmp, path, n + 1);
    for (i = 1; i <= n; i++) {
        if (tmp[i] == '/' || tmp[i] == 0) {
            char c = tmp[i];
            tmp[i] = 0;
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
            tmp[i] = c;
        }
    }
    if (!dir_exists(path)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

int rm_flat_dir(const char *path) {
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

int open_regular(const char *path, size_t max_bytes, size_t *size, char *err, size_t errsz) {
    /* O_NONBLOCK: opening a FIFO with no writer must not hang; only regular files are read, and
     * for those the flag changes nothing. */
    int fd = open(path, O_RDONLY | O_NONBLOCK), saved;
    struct stat st;
    if (fd < 0) {
        saved = errno;
        errf(err, errsz, "%s: cannot open (%s)", path, strerror(saved));
        errno = saved;
        return -1;
    }
    if (fstat(fd, &st)) saved = errno;
    else if (S_ISDIR(st.st_mode)) saved = EISDIR;
    else if (!S_ISREG(st.st_mode)) saved = EINVAL;
    else if ((uint64_t)st.st_size > (uint64_t)max_bytes) saved = EFBIG;
    else saved = 0;
    if (saved) {
        close(fd);
        if (saved == EISDIR) errf(err, errsz, "%s: is a directory, not a file", path);
        else if (saved == EINVAL) errf(err, errsz, "%s: not a regular file (a pipe or a device?)", path);
        else if (saved == EFBIG)
            errf(err, errsz, "%s: %lld bytes, more than the %zu allowed for this file", path, (long long)st.st_size,
                 max_bytes);
        else errf(err, errsz, "%s: cannot read (%s)", path, strerror(saved));
        errno = saved;
        return -1;
    }
    if (size) *size = (size_t)st.st_size;
    return fd;
}

char *read_file(const char *path, size_t max_bytes, size_t *len, char *err, size_t errsz) {
    size_t n = 0, got = 0;
    int fd = open_regular(path, max_bytes, &n, err, errsz), saved;
    char *buf;
    if (fd < 0) return NULL;
    buf = (char *)malloc(n + 1);
    if (!buf) {
        close(fd);
        errf(err, errsz, "%s: out of memory reading %zu bytes", path, n);
        errno = ENOMEM;
        return NULL;
    }
    while (got < n) {
        ssize_t k = read(fd, buf + got, n - got);
        if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (k <= 0) break; /* an error, or the file shrank meanwhile */
        got += (size_t)k;
    }
    saved = errno;
    close(fd);
    if (got != n) {
        free(buf);
        errf(err, errsz, "%s: read failed (%s)", path,
             got < n && saved ? strerror(saved) : "the file changed");
        errno = saved ? saved : EIO;
        return NULL;
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

int check_jsonl(const char *path, char *err, size_t errsz) {
    unsigned char head[8] = {0};
    const char *kind = NULL, *reader = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return 0; /* the loader says why it cannot read it */
    if (fread(head, 1, sizeof head, f) < 4) head[0] = 0;
    fclose(f);
    if (!memcmp(head, "PAR1", 4))
        kind = "Parquet", reader = "load_dataset('parquet', data_files=F)['train']";
    else if (!memcmp(head, "ARROW1", 6))
        kind = "Arrow", reader = "Dataset.from_file(F)";
    if (!kind) return 0;
    return errf(err, errsz,
                "%s is a %s file, not JSONL (one JSON object per line); convert it once with Hugging Face "
                "datasets: python3 -c \"from datasets import load_dataset, Dataset; F='%s'; %s.to_json(F + "
                "'.jsonl')\"",
                path, kind, path, reader);
}

const char *shell_command(int argc, char **argv, char *buf, size_t n) {
    size_t len = 0;
    int i;
    if (n) buf[0] = 0;
    for (i = 0; i < argc && len + 8 < n; i++) { /* room for a separator, two quotes, one escape */
        const char *a = argv[i], *c;
        int plain = *a != 0;
        for (c = a; *c; c++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=/.,:@%", *c))
                plain = 0;
        if (i) buf[len++] = ' ';
        if (plain) {
            fmt(buf + len, n - len, "%s", a);
        } else { /* '...' with each ' written as '\'' */
            buf[len++] = '\'';
            for (c = a; *c && len + 5 < n; c++) {
                if (*c == '\'') {
                    memcpy(buf + len, "'\\''", 4);
                    len += 4;
                } else
                    buf[len++] = *c;
            }
            buf[len++] = '\'';
            buf[len] = 0;
        }
        len = strlen(buf);
    }
    return buf;
}

int write_file_atomic(const char *path, const char *data, size_t n, char *err, size_t errsz) {
    char tmp[4200];
    FILE *f;
    fmt(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (!f) return errf(err, errsz, "%s: cannot write (%s)", tmp, strerror(errno));
    if (fwrite(data, 1, n, f) != n || fflush(f) || fsync(fileno(f))) {
        errf(err, errsz, "%s: write failed (%s); is the disk full?", tmp, strerror(errno));
        fclose(f);
        unlink(tmp);
        return -1;
    }
    fclose(f);
    if (rename(tmp, path)) {
        errf(err, errsz, "%s: rename failed (%s)", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* ==========================================================================================
 * Random numbers (splitmix64)
 * ========================================================================================== */

uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double rng_uniform(uint64_t *s) { return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }

uint64_t rng_stream(uint64_t seed, uint64_t a) {
    uint64_t s = seed ^ (0xd1b54a32d192ed03ULL * (a + 1));
    rng_next(&s);
    return s;
}

void shuffle(int *idx, int n, uint64_t *rng) {
    int i;
    for (i = n - 1; i > 0; i--) {
        int j = (int)(rng_uniform(rng) * (double)(i + 1));
        int t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

/* ==========================================================================================
 * Command-line flags
 * ========================================================================================== */

void opts_print(FILE *out, const opt_def *d) {
    for (; d->name || d->kind == OPT_HEADING; d++) {
        char left[64], def[96] = "";
        if (d->kind == OPT_HEADING) {
            fprintf(out, "%s\n", d->help);
            continue;
        }
        if (d->kind == OPT_FLAG)
            fmt(left, sizeof left, "%s", d->name);
        else
            fmt(left, sizeof left, "%s %s", d->name, d->metavar);
        switch (d->dst ? d->kind : OPT_FLAG) { /* a row without a variable shows no default */
        case OPT_STR:
            if (*(const char **)d->dst) fmt(def, sizeof def, " (default %s)", *(const char **)d->dst);
            break;
        case OPT_INT:
            fmt(def, sizeof def, " (default %d)", *(int *)d->dst);
            break;
        case OPT_DBL:
            fmt(def, sizeof def, " (default %g)", *(double *)d->dst);
            break;
        case OPT_U64:
            fmt(def, sizeof def, " (default %llu)", (unsigned long long)*(uint64_t *)d->dst);
            break;
        default:
            break;
        }
        fprintf(out, "  %-24s %s%s\n", left, d->help, def);
    }
}

/* Stores val into d's variable; 0, or -1 after saying what is wrong. */
static int opt_store(const char *who, const opt_def *d, const char *val) {
    char *end;
    errno = 0;
    switch (d->kind) {
    case OPT_STR:
        *(const char **)d->dst = val;
        return 0;
    case OPT_INT: {
        long v = strtol(val, &end, 10);
        if (*val == 0 || *end || errno || v < -2147483647L || v > 2147483647L) {
            fprintf(stderr, "%s: %s expects an integer, got '%s'\n", who, d->name, val);
            return -1;
        }
        *(int *)d->dst = (int)v;
        return 0;
    }
    case OPT_U64: {
        unsigned long long v = strtoull(val, &end, 10);
        if (*val == 0 || *val == '-' || *end || errno) {
            fprintf(stderr, "%s: %s expects a non-negative integer, got '%s'\n", who, d->name, val);
            return -1;
        }
        *(uint64_t *)d->dst = (uint64_t)v;
        return 0;
    }
    case OPT_DBL: {
        double v = strtod(val, &end);
        if (*val == 0 || *end || errno || !isfinite(v)) {
            fprintf(stderr, "%s: %s expects a number, got '%s'\n", who, d->name, val);
            return -1;
        }
        *(double *)d->dst = v;
        return 0;
    }
    default:
        return -1;
    }
}

int opts_parse(const char *who, const char *usage, const opt_def *defs, int argc, char **argv, int first,
               const char **pos, int max_pos, int *n_pos) {
    int i;
    if (n_pos) *n_pos = 0;
    for (i = first; i < argc; i++) {
        const char *a = argv[i], *eq;
        const opt_def *d;
        size_t nlen;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            opts_print(stdout, defs);
            return 1;
        }
        if (strncmp(a, "--", 2)) {
            if (n_pos && *n_pos < max_pos) {
                pos[(*n_pos)++] = a;
                continue;
            }
            fprintf(stderr, "%s: unexpected argument '%s' (flags start with --; see %s --help)\n", who, a,
                    who);
            return -1;
        }
        eq = strchr(a, '=');
        nlen = eq ? (size_t)(eq - a) : strlen(a);
        for (d = defs; d->name || d->kind == OPT_HEADING; d++)
            if (d->name && strlen(d->name) == nlen && !strncmp(d->name, a, nlen)) break;
        if (!d->name) {
            fprintf(stderr, "%s: unknown flag '%.*s' (see %s --help)\n", who, (int)nlen, a, who);
            return -1;
        }
        if (d->kind == OPT_FLAG) {
            if (eq) {
                fprintf(stderr, "%s: %s takes no value\n", who, d->name);
                return -1;
            }
            *(int *)d->dst = 1;
            continue;
        }
        if (!eq && i + 1 >= argc) {
            fprintf(stderr, "%s: %s needs a value (%s)\n", who, d->name, d->metavar);
            return -1;
        }
        if (opt_store(who, d, eq ? eq + 1 : argv[++i])) return -1;
    }
    return 0;
}

int opts_check_ranges(const char *who, const opt_def *defs, const opt_range *r) {
    for (; r->name; r++) {
        const opt_def *d;
        double v;
        for (d = defs; d->name || d->kind == OPT_HEADING; d++)
            if (d->name && !strcmp(d->name, r->name)) break;
        if (!d->name) continue; /* not a flag of this command */
        if (d->kind == OPT_INT) v = *(int *)d->dst;
        else if (d->kind == OPT_DBL) v = *(double *)d->dst;
        else if (d->kind == OPT_U64) v = (double)*(uint64_t *)d->dst;
        else continue;
        if (!(v >= r->min && v <= r->max)) {
            fprintf(stderr, "%s: %s must be between %.15g and %.15g, got %.15g\n", who, r->name, r->min, r->max, v);
            return -1;
        }
    }
    return 0;
}
