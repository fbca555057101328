/* train/rundir.c - checkpoints, trainer_state.json, metrics.jsonl and the reference cache of a
 * training run's output directory (the layout is described in rundir.h). */
#define _POSIX_C_SOURCE 200809L

#include "rundir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../util.h"
#include "../llama/safetensors.h"

/* ==========================================================================================
 * trainer_state.json
 * ========================================================================================== */

int state_save(const char *path, const train_state *s, char *err, size_t errsz) {
    clair_buf b = {0, 0, 0, 0};
    int rc;
    clair_buf_printf(&b,
                     "{\"step\":%ld,\"n_updates\":%ld,\"epoch\":%d,\"epoch_pos\":%d,\"bad_in_row\":%d,"
                     "\"shuffle_seed\":\"%llu\",\"data_hash\":\"%016llx\",\"model_hash\":\"%016llx\","
                     "\"batch_size\":%d,\"micro_batch\":%d,\"loss\":",
                     s->step, s->n_updates, s->epoch, s->epoch_pos, s->bad_in_row,
                     (unsigned long long)s->shuffle_seed, (unsigned long long)s->data_hash,
                     (unsigned long long)s->model_hash, s->batch_size, s->micro_batch);
    clair_json_write_string(&b, s->loss ? s->loss : "", s->loss ? strlen(s->loss) : 0);
    clair_buf_printf(&b, ",\"lr\":%.17g,\"beta\":%.17g,\"epochs\":%d,\"schedule\":\"%s\"", s->lr, s->beta,
                     s->epochs, s->schedule ? s->schedule : "");
    clair_buf_printf(&b, ",\"weights_only\":%s,\"weights_dtype\":\"%s\"}\n",
                     s->weights_only ? "true" : "false", s->bf16 ? "bf16" : "fp32");
    if (b.oom) {
        clair_buf_free(&b);
        return errf(err, errsz, "out of memory");
    }
    rc = write_file_atomic(path, b.data, b.len, err, errsz);
    clair_buf_free(&b);
    return rc;
}

int state_load(const char *path, train_state *s, char *err, size_t errsz) {
    size_t n;
    char *text = read_file(path, 1 << 20, &n, err, errsz), jerr[256];
    clair_json j;
    long long v;
    const char *str;
    if (!text) return -1;
    if (clair_json_parse(text, n, &j, jerr, sizeof jerr)) {
        free(text);
        return errf(err, errsz, "%s: %s", path, jerr);
    }
    free(text);
    memset(s, 0, sizeof *s);
#define GET_INT(key, dst)                                                                                    \
    do {                                                                                                     \
        if (clair_json_get_int(&j, key, &v)) {                                                               \
            clair_json_free(&j);                                                                             \
            return errf(err, errsz, "%s: missing integer \"%s\"", path, key);                                \
        }                                                                                                    \
        dst = v;                                                                                             \
    } while (0)
    GET_INT("step", s->step);
    GET_INT("n_updates", s->n_updates);
    GET_INT("epoch", s->epoch);
    GET_INT("epoch_pos", s->epoch_pos);
    GET_INT("bad_in_row", s->bad_in_row);
    GET_INT("batch_size", s->batch_size);
#undef GET_INT
    if (!(str = clair_json_get_str(&j, "shuffle_seed"))) {
        clair_json_free(&j);
        return errf(err, errsz, "%s: missing \"shuffle_seed\"", path);
    }
    s->shuffle_seed = strtoull(str, NULL, 10);
    if ((str = clair_json_get_str(&j, "data_hash"))) s->data_hash = strtoull(str, NULL, 16);
    if ((str = clair_json_get_str(&j, "model_hash"))) s->model_hash = strtoull(str, NULL, 16);
    {
        const clair_json *w = clair_json_get(&j, "weights_only");
        s->weights_only = w && w->type == CLAIR_JSON_BOOL && w->boolean;
        s->bf16 = (str = clair_json_get_str(&j, "weights_dtype")) && !strcmp(str, "bf16");
    }
    clair_json_free(&j);
    return 0;
}

/* ==========================================================================================
 * Checkpoints
 * ========================================================================================== */

/* A directory entry named checkpoint-N: 0 and its step; checkpoint-N.SUFFIX (an unfinished save
 * ".tmp", or a checkpoint being deleted ".deleting"): 1, a leftover of a killed process; else -1. */
static int checkpoint_name(const char *name, long *step) {
    char *end;
    if (strncmp(name, "checkpoint-", 11)) return -1;
    *step = strtol(name + 11, &end, 10);
    if (end == name + 11) return -1;
    if (!*end) return 0;
    return *end == '.' ? 1 : -1;
}

/* Deletes a checkpoint directory so that a kill half-way never leaves a checkpoint-N that looks
 * complete: it is renamed to checkpoint-N.deleting first (a leftover the next start removes). */
static void checkpoint_remove(const char *out_dir, const char *name) {
    char p[4200], gone[4300];
    fmt(p, sizeof p, "%s/%s", out_dir, name);
    if (strchr(name, '.')) {
        rm_flat_dir(p);
        return;
    } /* already a leftover */
    fmt(gone, sizeof gone, "%s.deleting", p);
    if (rename(p, gone) == 0) rm_flat_dir(gone);
}

long checkpoint_latest(const char *out_dir, char *path, size_t n) {
    DIR *d = opendir(out_dir);
    struct dirent *e;
    long best = -1, s;
    if (!d) return -1;
    while ((e = readdir(d)) != NULL)
        if (checkpoint_name(e->d_name, &s) == 0 && s > best) best = s;
    closedir(d);
    if (best >= 0) fmt(path, n, "%s/checkpoint-%ld", out_dir, best);
    return best;
}

void checkpoint_prune(const char *out_dir, int keep) {
    DIR *d = opendir(out_dir);
    struct dirent *e;
    long steps[4096], s;
    int n = 0, i, j;
    char name[64];
    if (!d) return;
    while ((e = readdir(d)) != NULL) {
        int kind = checkpoint_name(e->d_name, &s);
        if (kind == 1)
            checkpoint_remove(out_dir, e->d_name);
        else if (kind == 0 && n < 4096)
            steps[n++] = s;
    }
    closedir(d);
    for (i = 0; i < n; i++) { /* remove all but the `keep` largest */
        int larger = 0;
        for (j = 0; j < n; j++) larger += steps[j] > steps[i];
        if (larger >= keep) {
            fmt(name, sizeof name, "checkpoint-%ld", steps[i]);
            checkpoint_remove(out_dir, name);
        }
    }
}

int model_sync_from_backend(llama_backend *b, llama_model *m, char *err, size_t errsz) {
    if (!strcmp(b->name, "cpu")) return 0;
    if (b->get_state(b, m->params, NULL, NULL, NULL)) return errf(err, errsz, "%s", b->err);
    return 0;
}

static const char *const moment_file[2] = {"optimizer_m.safetensors", "optimizer_v.safetensors"};
static const char *const moment_tensor[2] = {"exp_avg", "exp_avg_sq"};

size_t checkpoint_bytes(const llama_model *m, const checkpoint_opts *o) {
    size_t w = m->n_params * (o->bf16 ? 2 : 4);
    return w + (o->weights_only ? 0 : 2 * m->n_params * sizeof(float));
}

int checkpoint_save(const char *out_dir, const checkpoint_opts *o, llama_backend *b, llama_model *m,
                    const train_state *s, float *scratch, char *err, size_t errsz) {
    char tmp[4200], fin[4200], p[4300], name[64];
    llama_save_opts so;
    train_state st = *s;
    int which;
    fmt(name, sizeof name, "checkpoint-%ld", s->step);
    fmt(fin, sizeof fin, "%s/%s", out_dir, name);
    fmt(tmp, sizeof tmp, "%s.tmp", fin);
    if (dir_exists(tmp)) rm_flat_dir(tmp);
    if (mkdir_p(tmp)) return errf(err, errsz, "%s: cannot create (%s)", tmp, strerror(errno));
    if (model_sync_from_backend(b, m, err, errsz)) return -1;
    memset(&so, 0, sizeof so);
    so.bf16 = o->bf16; /* fp32 (the default): resuming continues from the exact weights */
    so.tokenizer_from = o->tokenizer_from;
    if (llama_model_save(m, tmp, &so, err, errsz)) return -1;
    /* the Adam moments, one at a time (a host copy of both would double the memory) */
    for (which = 0; which < 2 && !o->weights_only; which++) {
        st_write_tensor t;
        if (b->get_state(b, NULL, NULL, which == 0 ? scratch : NULL, which == 1 ? scratch : NULL))
            return errf(err, errsz, "reading optimizer state: %s", b->err);
        memset(&t, 0, sizeof t);
        t.name = moment_tensor[which];
        t.dtype = "F32";
        t.ndim = 1;
        t.shape[0] = (int64_t)m->n_params;
        t.data = scratch;
        fmt(p, sizeof p, "%s/%s", tmp, moment_file[which]);
        if (st_write(p, &t, 1, NULL, err, errsz)) return -1;
    }
    st.weights_only = o->weights_only;
    st.bf16 = o->bf16;
    fmt(p, sizeof p, "%s/trainer_state.json", tmp);
    if (state_save(p, &st, err, errsz)) return -1;
    if (dir_exists(fin)) checkpoint_remove(out_dir, name);
    if (rename(tmp, fin)) return errf(err, errsz, "%s: rename failed (%s)", fin, strerror(errno));
    checkpoint_prune(out_dir, o->keep);
    return 0;
}

int checkpoint_load(const char *dir, llama_model *m, llama_backend *b, train_state *s, float *scratch,
                    char *err, size_t errsz) {
    llama_model ck;
    char p[4300];
    int which;
    fmt(p, sizeof p, "%s/trainer_state.json", dir);
    if (state_load(p, s, err, errsz)) return -1;
    if (s->weights_only)
        return errf(err, errsz,
                    "%s holds weights only (--checkpoint-state weights), no optimizer state: a run "
                    "cannot continue from it exactly; start a new --out with --model %s instead",
                    dir, dir);
    if (llama_model_load(&ck, dir, err, errsz)) return -1;
    if (ck.n_params != m->n_params || ck.cfg.num_hidden_layers != m->cfg.num_hidden_layers ||
        ck.cfg.hidden_size != m->cfg.hidden_size || ck.cfg.vocab_size != m->cfg.vocab_size) {
        errf(err, errsz,
             "%s: the checkpoint has %zu parameters (%d layers, hidden %d), the --model %zu (%d layers, "
             "hidden %d); it belongs to another run",
             dir, ck.n_params, ck.cfg.num_hidden_layers, ck.cfg.hidden_size, m->n_params,
             m->cfg.num_hidden_layers, m->cfg.hidden_size);
        llama_model_free(&ck);
        return -1;
    }
    memcpy(m->params, ck.params, m->n_params * sizeof(float));
    llama_model_free(&ck);
    if (b->set_state(b, m->params, NULL, NULL)) return errf(err, errsz, "%s", b->err);
    for (which = 0; which < 2; which++) {
        st_file f;
        const st_tensor *t;
        fmt(p, sizeof p, "%s/%s", dir, moment_file[which]);
        if (st_open(&f, p, err, errsz)) return -1;
        t = st_find(&f, moment_tensor[which]);
        if (!t || st_numel(t) != m->n_params) {
            st_close(&f);
            return errf(err, errsz, "%s: expected tensor %s with %zu values", p, moment_tensor[which],
                        m->n_params);
        }
        if (st_read_f32(&f, t, scratch, err, errsz)) {
            st_close(&f);
            return -1;
        }
        st_close(&f);
        if (b->set_state(b, NULL, which == 0 ? scratch : NULL, which == 1 ? scratch : NULL))
            return errf(err, errsz, "%s", b->err);
    }
    return 0;
}

/* ==========================================================================================
 * metrics.jsonl
 * ========================================================================================== */

void metrics_json(clair_buf *b, const char *prefix, const apo_metrics *m, int sft_data) {
    static const char *const names[7] = {
        "loss",         "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
        "logps/chosen", "logps/rejected"};
    const double values[7] = {
        m->loss,         m->rewards_chosen, m->rewards_rejected, m->rewards_accuracies, m->rewards_margins,
        m->logps_chosen, m->logps_rejected};
    int i, first = 1;
    for (i = 0; i < 7; i++) {
        if (sft_data && i != 0 && i != 5) continue; /* no rejected side, no reference: no rewards */
        clair_buf_printf(b, "%s\"%s%s\":", first ? "" : ",", prefix, names[i]);
        clair_json_write_number(b, values[i]);
        first = 0;
    }
}

int metrics_append(FILE *f, const char *line) {
    if (fputs(line, f) < 0 || fputc('\n', f) < 0 || fflush(f)) return -1;
    return 0;
}

int metrics_append_eval(FILE *f, long step, double epoch, const apo_metrics *m, int sft_data) {
    clair_buf b = {0, 0, 0, 0};
    int rc;
    clair_buf_printf(&b, "{\"step\":%ld,\"epoch\":", step);
    clair_json_write_number(&b, epoch);
    clair_buf_puts(&b, ",");
    metrics_json(&b, "eval_", m, sft_data);
    clair_buf_puts(&b, "}");
    rc = b.oom ? -1 : metrics_append(f, b.data);
    clair_buf_free(&b);
    return rc;
}

int metrics_truncate(const char *path, long step, long eval_step, char *err, size_t errsz) {
    size_t n, i, start = 0;
    char *text = read_file(path, (size_t)1 << 34, &n, err, errsz);
    clair_buf keep = {0, 0, 0, 0};
    int rc;
    if (!text) return errno == ENOENT ? 0 : -1; /* no metrics yet, or the message in err */
    for (i = 0; i <= n; i++) {
        if (i == n || text[i] == '\n') {
            clair_json j;
            char jerr[64];
            long long s;
            if (i > start && clair_json_parse(text + start, i - start, &j, jerr, sizeof jerr) == 0) {
                long last = clair_json_get(&j, "eval_loss") ? eval_step : step;
                if (clair_json_get_int(&j, "step", &s) == 0 && s <= last) {
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

int run_lock(const char *out_dir, char *err, size_t errsz) {
    char path[4200], pid[32];
    struct flock lk;
    int fd;
    ssize_t k;
    fmt(path, sizeof path, "%s/trainer.lock", out_dir);
    fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) return errf(err, errsz, "%s: cannot open (%s)", path, strerror(errno));
    memset(&lk, 0, sizeof lk);
    lk.l_type = F_WRLCK;
    lk.l_whence = SEEK_SET;
    if (fcntl(fd, F_SETLK, &lk)) {
        k = pread(fd, pid, sizeof pid - 1, 0);
        pid[k > 0 ? k : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        close(fd);
        return errf(err, errsz,
                    "%s is in use by another trainer (PID %s); wait for it to finish or stop it "
                    "(a lock of a process that has ended is taken over by itself)",
                    out_dir, pid[0] ? pid : "?");
    }
    fmt(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) || pwrite(fd, pid, strlen(pid), 0) < 0) {
        close(fd);
        return errf(err, errsz, "%s: cannot write (%s)", path, strerror(errno));
    }
    return fd;
}

/* ==========================================================================================
 * Reference log-probs cache
 * ========================================================================================== */

void ref_cache_path(char *buf, size_t n, const char *out_dir, uint64_t key) {
    fmt(buf, n, "%s/ref_logps-%016llx.safetensors", out_dir, (unsigned long long)key);
}

int ref_cache_load(const char *path, int n, double *c, double *r, char *err, size_t errsz) {
    st_file f;
    const st_tensor *tc, *tr;
    if (st_open(&f, path, err, errsz)) return -1;
    tc = st_find(&f, "chosen");
    tr = st_find(&f, "rejected");
    if (!tc || !tr || strcmp(tc->dtype, "F64") || strcmp(tr->dtype, "F64") || st_numel(tc) != (size_t)n ||
        st_numel(tr) != (size_t)n) {
        st_close(&f);
        return errf(err, errsz, "%s: not a reference cache for %d pairs (delete it to recompute)", path, n);
    }
    if (st_read_raw(&f, tc, c, err, errsz) || st_read_raw(&f, tr, r, err, errsz)) {
        st_close(&f);
        return -1;
    }
    st_close(&f);
    return 0;
}

int ref_cache_save(const char *path, int n, const double *c, const double *r, uint64_t mh, uint64_t dh,
                   int max_length, char *err, size_t errsz) {
    st_write_tensor ts[2];
    char meta[256];
    memset(ts, 0, sizeof ts);
    ts[0].name = "chosen";
    ts[0].dtype = "F64";
    ts[0].ndim = 1;
    ts[0].shape[0] = n;
    ts[0].data = c;
    ts[1].name = "rejected";
    ts[1].dtype = "F64";
    ts[1].ndim = 1;
    ts[1].shape[0] = n;
    ts[1].data = r;
    fmt(meta, sizeof meta, "{\"model_hash\":\"%016llx\",\"data_hash\":\"%016llx\",\"max_length\":\"%d\"}",
        (unsigned long long)mh, (unsigned long long)dh, max_length);
    return st_write(path, ts, 2, meta, err, errsz);
}
