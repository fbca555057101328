/* tests/trainer/test_backend.c - fault injection for the trainer's tests, linked only into the
 * test build of the trainer (compiled with -DTRAINER_TEST_BACKEND, which makes backend_open wrap
 * every backend with test_backend_wrap). The product binary has none of this.
 *
 * The wrapper passes every call through to the real backend and counts optimizer steps by the
 * calls of grad_norm (exactly one per step, none in the reference pass or evaluation). Set in
 * the environment:
 *   TRAINER_TEST_DIE_AFTER_STEP=N   exit at once (status 137, like SIGKILL) when step N+1 asks
 *                                   for its gradient norm: everything of step N, its checkpoint
 *                                   included, is on disk, nothing of step N+1
 *   TRAINER_TEST_NAN_FROM_STEP=N    steps N, N+1, ... see a NaN gradient norm (the trainer must
 *                                   skip their updates and stop after --max-bad-steps)
 *   TRAINER_TEST_DUMP_GRAD=FILE     write the first step's accumulated gradient to FILE
 *                                   (safetensors, tensor "grad")
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../llama/model.h"
#include "../../llama/safetensors.h"

typedef struct {
    llama_backend *inner;
    long steps;               /* grad_norm calls so far */
    long die_after, nan_from; /* 0: off */
    const char *dump_grad;
} fault_state;

static fault_state *state_of(llama_backend *b) { return (fault_state *)b->impl; }

/* Copies the inner backend's error message after a failed call. */
static int pass(llama_backend *b, int rc) {
    if (rc) snprintf(b->err, sizeof b->err, "%s", state_of(b)->inner->err);
    return rc;
}

static int t_forward(llama_backend *b, const llama_batch *batch, float *logp) {
    llama_backend *in = state_of(b)->inner;
    return pass(b, in->forward(in, batch, logp));
}
static int t_backward(llama_backend *b, const llama_batch *batch, const float *dlogp) {
    llama_backend *in = state_of(b)->inner;
    return pass(b, in->backward(in, batch, dlogp));
}
static void t_zero_grad(llama_backend *b) { state_of(b)->inner->zero_grad(state_of(b)->inner); }

static double t_grad_norm(llama_backend *b) {
    fault_state *s = state_of(b);
    double norm = s->inner->grad_norm(s->inner);
    s->steps++;
    if (s->die_after > 0 && s->steps == s->die_after + 1) {
        fprintf(stderr, "TRAINER_TEST_DIE_AFTER_STEP: exiting abruptly after step %ld\n", s->die_after);
        fflush(NULL);
        _exit(137);
    }
    if (s->dump_grad && s->steps == 1) {
        st_write_tensor t;
        char err[512];
        float *g = (float *)malloc(b->n_params * sizeof *g);
        memset(&t, 0, sizeof t);
        if (!g || s->inner->get_state(s->inner, NULL, g, NULL, NULL)) {
            fprintf(stderr, "TRAINER_TEST_DUMP_GRAD: cannot read the gradient\n");
            exit(1);
        }
        t.name = "grad";
        t.dtype = "F32";
        t.ndim = 1;
        t.shape[0] = (int64_t)b->n_params;
        t.data = g;
        if (st_write(s->dump_grad, &t, 1, NULL, err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            exit(1);
        }
        free(g);
    }
    if (s->nan_from > 0 && s->steps >= s->nan_from) return NAN;
    return norm;
}

static int t_adamw_step(llama_backend *b, const llama_adamw *h, float grad_scale) {
    llama_backend *in = state_of(b)->inner;
    return pass(b, in->adamw_step(in, h, grad_scale));
}
static int t_get_state(llama_backend *b, float *params, float *grads, float *m, float *v) {
    llama_backend *in = state_of(b)->inner;
    return pass(b, in->get_state(in, params, grads, m, v));
}
static int t_set_state(llama_backend *b, const float *params, const float *m, const float *v) {
    llama_backend *in = state_of(b)->inner;
    return pass(b, in->set_state(in, params, m, v));
}
static void t_destroy(llama_backend *b) {
    state_of(b)->inner->destroy(state_of(b)->inner);
    free(b->impl);
    free(b);
}

static long env_long(const char *name) {
    const char *v = getenv(name);
    return v && *v ? atol(v) : 0;
}

llama_backend *test_backend_wrap(llama_backend *inner);
llama_backend *test_backend_wrap(llama_backend *inner) {
    llama_backend *b = (llama_backend *)calloc(1, sizeof *b);
    fault_state *s = (fault_state *)calloc(1, sizeof *s);
    if (!b || !s) {
        free(b);
        free(s);
        return inner;
    }
    *b = *inner; /* name, cfg, n_params: the trainer sees the real backend's */
    s->inner = inner;
    s->die_after = env_long("TRAINER_TEST_DIE_AFTER_STEP");
    s->nan_from = env_long("TRAINER_TEST_NAN_FROM_STEP");
    s->dump_grad = getenv("TRAINER_TEST_DUMP_GRAD");
    b->impl = s;
    b->forward = t_forward;
    b->backward = t_backward;
    b->zero_grad = t_zero_grad;
    b->grad_norm = t_grad_norm;
    b->adamw_step = t_adamw_step;
    b->get_state = t_get_state;
    b->set_state = t_set_state;
    b->destroy = t_destroy;
    return b;
}
