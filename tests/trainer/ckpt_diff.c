/* tests/trainer/ckpt_diff.c - compares two checkpoints (or one tensor of two safetensors files)
 * for the trainer's end-to-end tests.
 *
 *   ckpt_diff DIR_A DIR_B MAX_ABS         loads both checkpoints with llama_model_load; prints the
 *                                         largest |a - b| over all parameters and whether they are
 *                                         bit-identical; exit 0 if the largest difference <= MAX_ABS
 *                                         (MAX_ABS 0 demands bit-identical weights)
 *   ckpt_diff --moved DIR_A DIR_B MIN_ABS exit 0 if the largest |a - b| >= MIN_ABS (training changed them)
 *   ckpt_diff --tensor FILE_A FILE_B NAME MAX_REL
 *                                         max |a - b| / max |a| over one tensor <= MAX_REL
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../llama/model.h"
#include "../../llama/safetensors.h"

static int load(llama_model *m, const char *dir) {
    char err[1024];
    if (llama_model_load(m, dir, err, sizeof err)) { printf("cannot load %s: %s\n", dir, err); return -1; }
    return 0;
}

static int read_tensor(const char *path, const char *name, float **out, size_t *n) {
    st_file f;
    char err[1024];
    const st_tensor *t;
    if (st_open(&f, path, err, sizeof err)) { printf("%s\n", err); return -1; }
    if (!(t = st_find(&f, name))) { printf("%s: no tensor %s\n", path, name); st_close(&f); return -1; }
    *n = st_numel(t);
    *out = (float *)malloc(*n * sizeof(float));
    if (!*out || st_read_f32(&f, t, *out, err, sizeof err)) { printf("%s\n", err); st_close(&f); return -1; }
    st_close(&f);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 6 && !strcmp(argv[1], "--tensor")) {
        float *a, *b;
        size_t na, nb, i;
        double maxd = 0, maxa = 0, tol = atof(argv[5]);
        if (read_tensor(argv[2], argv[4], &a, &na) || read_tensor(argv[3], argv[4], &b, &nb)) return 1;
        if (na != nb) { printf("sizes differ: %zu vs %zu\n", na, nb); return 1; }
        for (i = 0; i < na; i++) {
            double d = fabs((double)a[i] - (double)b[i]);
            if (!(d <= maxd)) maxd = d;              /* NaN propagates into maxd */
            if (fabs(a[i]) > maxa) maxa = fabs(a[i]);
        }
        printf("%s: %zu values, max|a| %.6g, max|a-b| %.6g, relative %.3g (limit %.3g)\n", argv[4], na, maxa, maxd,
               maxd / (maxa > 0 ? maxa : 1), tol);
        free(a); free(b);
        return maxa > 0 && maxd / maxa <= tol ? 0 : 1;
    }
    if ((argc == 4) || (argc == 5 && !strcmp(argv[1], "--moved"))) {
        int moved = argc == 5;
        const char *da = argv[1 + moved], *db = argv[2 + moved];
        double lim = atof(argv[3 + moved]), maxd = 0;
        llama_model a, b;
        size_t i, ndiff = 0;
        if (load(&a, da) || load(&b, db)) return 1;
        if (a.n_params != b.n_params) { printf("parameter counts differ: %zu vs %zu\n", a.n_params, b.n_params); return 1; }
        for (i = 0; i < a.n_params; i++) {
            double d = fabs((double)a.params[i] - (double)b.params[i]);
            if (!(d <= maxd)) maxd = d;
            if (memcmp(&a.params[i], &b.params[i], sizeof(float))) ndiff++;
        }
        printf("%zu parameters, %zu differ in their bits, max|a-b| %.6g (%s %.3g)\n", a.n_params, ndiff, maxd,
               moved ? "at least" : "limit", lim);
        llama_model_free(&a); llama_model_free(&b);
        if (moved) return maxd >= lim ? 0 : 1;
        if (lim == 0) return ndiff == 0 ? 0 : 1;
        return maxd <= lim ? 0 : 1;
    }
    fprintf(stderr, "usage: ckpt_diff DIR_A DIR_B MAX_ABS | --moved DIR_A DIR_B MIN_ABS | --tensor A B NAME MAX_REL\n");
    return 2;
}
