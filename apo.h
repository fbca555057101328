/* apo.h - Anchored Preference Optimization (APO) and its relatives (DPO, IPO, ...) as losses:
 * values, exact gradients, batch means and the metrics TRL logs. A single-file C99 header.
 *
 * Paper: D'Oosterlinck, Xu, Develder, Demeester, Singh, Potts, Kiela, Mehri, "Anchored
 * Preference Optimization and Contrastive Revisions: Addressing Underspecification in
 * Alignment", arXiv 2408.06266 (2024), TACL 13 (2025).
 *
 * ==============================================================================================
 * 0. INCANTATION
 * ==============================================================================================
 *
 *   In exactly one C or C++ (or CUDA) file, define the implementation before the include:
 *
 *   ```c
 *   #define APO_IMPLEMENTATION
 *   #include "apo.h"
 *   ```
 *
 *   Everywhere else just #include "apo.h".
 *
 *   Options (define before the include):
 *       APO_STATIC   every function is static (private to the file that defines the
 *                    implementation; use it when two libraries might each embed a copy)
 *
 *   Needs only <math.h> (and <stddef.h> for size_t). No allocation, no I/O, no global state.
 *   Compiles as C99, as C++11, and under nvcc; with nvcc the per-example losses
 *   (apo_pair_loss, apo_zero_unpaired_loss, apo_softplus, apo_sigmoid, apo_log_sigmoid) are
 *   __host__ __device__, so a CUDA kernel can call them (define APO_IMPLEMENTATION in that .cu
 *   file, or APO_STATIC there if another file of the program defines it too). Every function
 *   is thread-safe (no shared state).
 *
 *   License: MIT or public domain, whichever you prefer; the full text is at the end of this file.
 *
 * ==============================================================================================
 * 1. THE IMPLICIT REWARD
 * ==============================================================================================
 *
 *   A preference pair is a prompt x with a chosen completion y_w and a rejected one y_l. For a
 *   completion y, let log pi(y|x) be the SUM of the per-token log-probabilities of the
 *   completion tokens only (prompt and padding masked out), under the policy pi being trained
 *   and under a frozen reference model pi_ref (usually the starting checkpoint). Then
 *
 *       r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))          the implicit reward
 *
 *   r > 0 means the policy now likes y more than it did at the start; r = 0 at initialisation.
 *   beta (0.1 in the paper) sets the scale: how far (in nats) the policy must move before a
 *   loss saturates. We write
 *
 *       dw = log pi(y_w) - log pi_ref(y_w),   dl = log pi(y_l) - log pi_ref(y_l),
 *       rw = beta dw,  rl = beta dl,          z = rw - rl = beta (dw - dl)   (the margin)
 *
 *   s(t) = 1/(1+e^-t) is the logistic sigmoid, logsig(t) = log s(t) = -softplus(-t), and
 *   |y| is the number of completion tokens of y.
 *
 * ==============================================================================================
 * 2. THE LOSSES (per pair; the batch loss is the mean over pairs)
 * ==============================================================================================
 *
 *   "Direction" is what one gradient-descent step does, from initialisation (dw = dl = 0),
 *   to the chosen (c) and rejected (r) log-likelihoods. Values match TRL's DPOTrainer for the
 *   same loss_type, so APO losses are 1 at initialisation and DPO is log 2 = 0.693.
 *
 *   name          formula                                               value at init; direction
 *   ------------  ----------------------------------------------------  ------------------------
 *   apo_zero      1 - s(rw) + s(rl)                   (paper Eq. 7, +1)   1;  c up, r down
 *   apo_down      s(rw) + 1 - s(rw - rl)              (paper Eq. 8, +1)   1;  c unchanged (at init
 *                                                                         exactly; then down), r down
 *   sigmoid       -(1-e) logsig(z) - e logsig(-z)     (DPO; e = label     log 2; only the margin
 *                                                      smoothing, cDPO)   moves: d/dc = -d/dr
 *   ipo           (dw/|y_w| - dl/|y_l| - 1/(2 beta))^2  (length-normalised) 1/(4 beta^2); margin
 *   hinge         max(0, 1 - z)                       (SLiC)              1;  margin
 *   robust        (-(1-e) logsig(z) + e logsig(-z)) / (1 - 2e)            log 2; margin (e < 1/2)
 *   exo_pair      s(z)(logsig(z) - log(1-e)) + s(-z)(logsig(-z) - log e)  margin; e = 1e-3 when
 *                                                                         label_smoothing is 0
 *   nca_pair      -logsig(rw) - 0.5 logsig(-rw) - 0.5 logsig(-rl)         2 log 2; c up, r down
 *   bco_pair      -logsig(rw - delta) - logsig(-(rl - delta))             2 log 2; c up, r down
 *   sppo_hard     (dw - 1/(2 beta))^2 + (dl + 1/(2 beta))^2               1/(2 beta^2); c up, r down
 *   discopop      m = s(z/tau): (1-m)(-logsig(z)) + m exp(-z)            (log 2 + 1)/2; margin
 *   sigmoid_norm  -logsig(beta (dw/|y_w| - dl/|y_l|))                    log 2; margin per token
 *   sft           -log pi(y_w) / |y_w|      (per-token NLL of chosen)     -; c up, r untouched
 *
 *   Why APO exists. DPO constrains only the margin z: a gradient step raises z, but says
 *   nothing about where the likelihoods themselves go, and in practice both often fall. APO
 *   anchors each likelihood to the reference, so the loss says which way each must move:
 *
 *     - APO-zero pushes rw up and rl down (each through its own sigmoid, so each saturates
 *       separately). Use it when the chosen answers are BETTER than what the model produces
 *       now: e.g. CLAIR pairs, where y_l is the model's own answer and y_w a stronger model's
 *       minimal revision of it. The paper's best result is CLAIR + APO-zero.
 *     - APO-down pushes rw down and the margin up: both likelihoods fall, the rejected one
 *       more. Use it when even the chosen answers are WORSE than the model's (e.g. off-policy
 *       pairs judged among weaker models' outputs): you want to learn the contrast without
 *       imitating the chosen answer.
 *     - DPO (sigmoid) and its margin-only relatives (ipo, hinge, robust, exo_pair, discopop,
 *       sigmoid_norm) when you have no view on whether the chosen answers are better than the
 *       model; nca_pair, bco_pair and sppo_hard also anchor (c up, r down) with other shapes.
 *     - sft is not a preference loss; add it with a small weight to another loss (e.g.
 *       "apo_zero:1,sft:0.1", RPO/MPO style) to keep the chosen answer's likelihood up.
 *
 * ==============================================================================================
 * 3. USAGE
 * ==============================================================================================
 *
 *   Every snippet below is a complete function that compiles as C99 and as C++11 after
 *   #define APO_IMPLEMENTATION and #include "apo.h".
 *
 *   Per pair (inside your own trainer, or, with the same call, inside a CUDA kernel):
 *
 *   ```c
 *   // pc, pr: the policy's summed completion log-probs of the chosen and rejected answers;
 *   // rc, rr: the frozen reference's; n_chosen, n_rejected: their completion token counts.
 *   double one_pair(double pc, double pr, double rc, double rr, int n_chosen, int n_rejected,
 *                   double *d_chosen, double *d_rejected) {
 *       apo_params p = apo_default_params(APO_ZERO);   // beta 0.1, tau 0.05, no smoothing
 *       apo_pair x;
 *       x.policy_chosen = pc; x.policy_rejected = pr;
 *       x.ref_chosen = rc; x.ref_rejected = rr;
 *       x.n_chosen = n_chosen; x.n_rejected = n_rejected;
 *       // *d_chosen = dloss/dpc: backpropagate it into every completion token log-prob of the
 *       // chosen sequence (each gets the same value); *d_rejected likewise into the rejected one
 *       return apo_pair_loss(&p, &x, d_chosen, d_rejected);
 *   }
 *   ```
 *
 *   Per batch, with a weighted list of losses and TRL's metrics:
 *
 *   ```c
 *   #include <stdio.h>
 *   // A batch of n pairs under "apo_zero:1,sft:0.1" (APO-zero plus a little sft, RPO style).
 *   // d_chosen[i] already includes the 1/n of the mean: it is dloss/d pairs[i].policy_chosen.
 *   // Returns 0 and the loss in *loss, or -1 if the loss list is wrong.
 *   int batch_step(const apo_pair *pairs, int n, double *d_chosen, double *d_rejected,
 *                  double *loss) {
 *       apo_term terms[8];
 *       char err[256];
 *       apo_params defaults = apo_default_params(APO_ZERO);
 *       apo_metrics m;
 *       int k = apo_parse_loss_list("apo_zero:1,sft:0.1", &defaults, terms, 8, err, sizeof err);
 *       if (k < 0) { fprintf(stderr, "--loss: %s\n", err); return -1; }
 *       *loss = apo_batch_loss(terms, k, pairs, n, d_chosen, d_rejected, &m);
 *       printf("loss %.4f  rewards/chosen %.4f  rewards/rejected %.4f  rewards/accuracies %.2f"
 *              "  (%d pairs, %d skipped as NaN/Inf)\n", m.loss, m.rewards_chosen,
 *              m.rewards_rejected, m.rewards_accuracies, m.n_pairs, m.n_nonfinite);
 *       return 0;
 *   }
 *   ```
 *
 *   Gradient accumulation: a global batch too big for one forward pass is run as micro-batches,
 *   and the gradients of all micro-batches add up to those of apo_batch_loss over the whole
 *   batch. Each micro-batch must be divided by the GLOBAL batch's pair count and chosen token
 *   count (calling apo_batch_loss per micro-batch would divide by its own), so these are
 *   computed first: they come from the tokenised data, before any forward pass.
 *
 *   ```c
 *   #include <string.h>
 *   // Your model, for one micro-batch of n pairs (token counts already filled in): forward fills
 *   // the four summed log-probs of each pair; backward backpropagates d_chosen[i], d_rejected[i]
 *   // through pair i's sequences and ADDS the result to the parameter gradients.
 *   typedef void (*forward_fn)(void *model, apo_pair *pairs, int n);
 *   typedef void (*backward_fn)(void *model, const apo_pair *pairs, int n,
 *                               const double *d_chosen, const double *d_rejected);
 *
 *   // The gradient of one optimizer step over batch[0..n), four pairs at a time. Returns the
 *   // loss of the whole batch and its metrics in *m, as apo_batch_loss gives them.
 *   double accumulate(void *model, forward_fn forward, backward_fn backward,
 *                     const apo_term *terms, int n_terms, apo_pair *batch, int n, apo_metrics *m) {
 *       enum { MICRO = 4 };
 *       double d_chosen[MICRO], d_rejected[MICRO];
 *       apo_batch_totals totals;
 *       int i, start;
 *       totals.n_pairs = n;
 *       totals.chosen_tokens = 0;
 *       for (i = 0; i < n; i++) totals.chosen_tokens += batch[i].n_chosen > 0 ? batch[i].n_chosen : 0;
 *       for (start = 0; start < n; start += MICRO) {
 *           int len = n - start;
 *           if (len > MICRO) len = MICRO;
 *           forward(model, batch + start, len);
 *           apo_microbatch_loss(terms, n_terms, batch + start, len, &totals,
 *                               d_chosen, d_rejected, NULL);
 *           backward(model, batch + start, len, d_chosen, d_rejected);
 *       }
 *       // every log-prob of the batch is known now: the loss and metrics of the whole batch,
 *       // each mean divided once (exact; adding the micro-batches' shares is equal up to
 *       // rounding). Then take one optimizer step with the accumulated gradients.
 *       return apo_batch_loss(terms, n_terms, batch, n, NULL, NULL, m);
 *   }
 *   ```
 *
 *   From logits, if you bring your own model (one sequence: logits [T x V], row t predicts
 *   labels[t+1]; mask[t] = 1 where labels[t] is a completion token):
 *
 *   ```c
 *   // One pair from the policy's logits over the chosen and the rejected sequence (prompt +
 *   // answer each); ref_c, ref_r: the frozen reference's summed log-probs (the same
 *   // apo_sequence_logp call on its logits, once). Writes dloss/dlogits into dlogits_c and
 *   // dlogits_r, for your backward pass through the model; returns the loss.
 *   double pair_from_logits(const float *logits_c, const int *labels_c, const unsigned char *mask_c,
 *                           int T_c, const float *logits_r, const int *labels_r,
 *                           const unsigned char *mask_r, int T_r, int V, double ref_c, double ref_r,
 *                           float *dlogits_c, float *dlogits_r) {
 *       apo_params p = apo_default_params(APO_ZERO);
 *       apo_pair x;
 *       double loss, dc, dr;
 *       int t;
 *       x.policy_chosen = apo_sequence_logp(logits_c, T_c, V, labels_c, mask_c, NULL, 0);
 *       x.policy_rejected = apo_sequence_logp(logits_r, T_r, V, labels_r, mask_r, NULL, 0);
 *       x.ref_chosen = ref_c; x.ref_rejected = ref_r;
 *       x.n_chosen = x.n_rejected = 0;                 // completion tokens: the scored labels
 *       for (t = 1; t < T_c; t++) x.n_chosen += mask_c[t] != 0;
 *       for (t = 1; t < T_r; t++) x.n_rejected += mask_r[t] != 0;
 *       loss = apo_pair_loss(&p, &x, &dc, &dr);
 *       // chain rule: dloss/dlogits = dloss/dlogp * dlogp/dlogits, one call per sequence
 *       apo_sequence_logp(logits_c, T_c, V, labels_c, mask_c, dlogits_c, dc);
 *       apo_sequence_logp(logits_r, T_r, V, labels_r, mask_r, dlogits_r, dr);
 *       return loss;
 *   }
 *   ```
 *
 * ==============================================================================================
 * 4. CONVENTIONS
 * ==============================================================================================
 *
 *   - Inputs are SUMMED completion log-probs (natural log) of policy and reference, as TRL
 *     computes them: logits row t predicts token t+1; prompt and padding are masked; summed.
 *   - Gradients are with respect to the POLICY's summed log-probs (the reference is frozen).
 *   - Values are TRL DPOTrainer's. How this was verified: TRL's formulas (its loss_type
 *     branches, written out independently of this code) were evaluated with 60-digit mpmath
 *     and with torch float64 autograd, in 510 cases over all 13 losses (at initialisation,
 *     ordinary, and extreme inputs), for unpaired APO-zero, weighted batches with TRL's
 *     metrics, and sequence log-probs with their dlogits; the C code matches to ~1e-15
 *     relative, and finite differences agree with every gradient. The batch loss of a list
 *     of terms is sum_k weight_k * (batch mean of term k), as TRL's loss_type list with
 *     loss_weights.
 *   - Token counts (ipo, sigmoid_norm, per-pair sft) below 1 are taken as 1, like TRL's
 *     clamp(min=1). The batch sft divides by the batch's total chosen token count, counting
 *     each pair's as given (>= 0), as TRL's cross-entropy does; the total is clamped to >= 1.
 *   - sigmoid with label_smoothing e > 0 is cDPO, as TRL before 1.0 computed it; TRL 1.x
 *     ignores label_smoothing for sigmoid. With e = 0 (the default) the two agree.
 *   - exo_pair with label_smoothing 0 uses e = 1e-3, as TRL before 1.0 did (TRL 1.x takes
 *     log 0 and reports inf; EXO needs e > 0).
 *   - robust needs label_smoothing < 1/2; ipo, sppo_hard and the rest need beta > 0
 *     (apo_params_check says what is wrong).
 *   - bco_pair: older TRL subtracted delta = a running mean of the batch-mean reward
 *     (mean of all rw and rl of a batch, averaged over the batches seen so far including the
 *     current one; treated as a constant for the gradient); TRL 1.x uses no shift. We use
 *     params.bco_delta as given (0 = TRL 1.x); apo_running_mean_update keeps that mean for you
 *     if you want the old behaviour.
 *   - sft in the batch API is what TRL reports: cross-entropy over ALL chosen completion tokens
 *     of the batch, i.e. -sum_i pc_i / sum_i |y_w,i| (a token mean, so long answers weigh
 *     more), not the mean of per-pair token means. Per pair (apo_pair_loss) it is -pc/|y_w|.
 *   - Metrics use TRL's names and meanings: rewards/chosen = mean rw, rewards/rejected = mean rl
 *     (always beta x raw log-ratio, whatever the loss; beta of the first term), accuracies =
 *     mean of 1[rw > rl] (strict), margins = mean (rw - rl), logps/chosen and logps/rejected =
 *     mean summed policy log-probs.
 *   - Numerics: every sigmoid and log-sigmoid goes through a softplus form that cannot
 *     overflow; the losses are finite with finite gradients for |log-probs| up to 1e4 and any
 *     beta in [1e-3, 1e3] (checked: every loss, 5 betas, 7^4 combinations of log-probs between
 *     -1e4 and 0). discopop's exp(-z) is combined with its sigmoid weight in log
 *     space, so it stays finite for tau < 1 (for tau >= 1 the true value itself overflows at
 *     very negative margins).
 *   - Not here: TRL's aot and aot_pair (they sort log-ratios across the batch, so they are not
 *     per-pair losses), its f-divergence variants, WPO weighting and ld_alpha (all change the
 *     log-probs before the loss; apply them to the inputs yourself), rpo_alpha (= an sft term).
 *   - NaN or Inf inputs are reported, never silently propagated into a model: apo_pair_loss
 *     returns NaN and writes zero gradients; apo_batch_loss skips such pairs, counts them in
 *     metrics.n_nonfinite and averages over the rest (and returns NaN if it has no metrics
 *     struct to report them in); apo_microbatch_loss gives them zero gradients and counts
 *     them, but keeps them in the global batch's denominators (see its comment);
 *     apo_sequence_logp returns NaN for a bad label.
 *
 * ==============================================================================================
 * 5. API (all functions are prefixed APO_DEF: extern, or static with APO_STATIC)
 * ==============================================================================================
 *
 *   apo_pair_loss            loss of one pair, gradients w.r.t. the two policy log-probs
 *   apo_zero_unpaired_loss   unpaired APO-zero (TRL KTOTrainer's "apo_zero_unpaired")
 *   apo_batch_loss           weighted sum of batch means, per-pair gradients, TRL metrics
 *   apo_microbatch_loss      one micro-batch's share of its global batch's loss (gradient
 *                            accumulation); apo_metrics_add sums the metric shares
 *   apo_sequence_logp        summed completion log-prob from logits, and its dlogits
 *   apo_loss_from_name / apo_loss_name / apo_parse_loss_list    names as TRL spells them
 *   apo_default_params / apo_params_check / apo_running_mean_update
 *   apo_softplus, apo_sigmoid, apo_log_sigmoid                  the stable building blocks
 *
 *   Changelog: 1.0 (2026-11) first version: 13 losses, batch API, parse, sequence log-prob.
 *              1.1 (2026-11) apo_microbatch_loss, apo_metrics_add (gradient accumulation).
 *              1.2 (2026-11) every batch mean is a sum divided once (a mean of equal values is
 *                            exact); the accumulation example logs apo_batch_loss's metrics.
 */
#ifndef APO_H
#define APO_H

#include <stddef.h>

#ifdef APO_STATIC
#if defined(__GNUC__) || defined(__clang__)
#define APO_DEF static __attribute__((unused))   /* an unused static copy is not a warning */
#else
#define APO_DEF static
#endif
#else
#define APO_DEF extern
#endif

/* Functions a CUDA kernel may call: compiled for host and device under nvcc. */
#ifdef __CUDACC__
#define APO_HD __host__ __device__
#else
#define APO_HD
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The loss types, in TRL's spelling (apo_loss_name gives the string). APO_LOSS_COUNT is the
 * number of types, handy for loops and tables. */
typedef enum {
    APO_ZERO, APO_DOWN, APO_SIGMOID, APO_IPO, APO_HINGE, APO_ROBUST,
    APO_EXO_PAIR, APO_NCA_PAIR, APO_BCO_PAIR, APO_SPPO_HARD, APO_DISCOPOP,
    APO_SIGMOID_NORM, APO_SFT, APO_LOSS_COUNT
} apo_loss_type;

/* One preference pair: summed completion log-probs (natural log, <= 0 for real models) of the
 * chosen and rejected completions under the policy and the frozen reference, and the number
 * of completion tokens of each (used by ipo, sigmoid_norm and sft; per pair a count below 1 is
 * taken as 1; the batch sft sums the counts as given, like TRL). */
typedef struct {
    double policy_chosen, policy_rejected, ref_chosen, ref_rejected;
    int n_chosen, n_rejected;
} apo_pair;

/* Hyper-parameters. Zero is not a usable beta: start from apo_default_params(type).
 *   beta             reward scale (TRL default and paper: 0.1)
 *   label_smoothing  sigmoid (cDPO), robust, exo_pair: assumed label-flip probability e
 *   discopop_tau     discopop's temperature (TRL default 0.05)
 *   bco_delta        bco_pair's reward shift (0 = TRL 1.x; see conventions for the old one) */
typedef struct {
    apo_loss_type type;
    double beta, label_smoothing, discopop_tau;
    double bco_delta;
} apo_params;

/* One term of a weighted loss list: total = sum_k weight_k * batch mean of term k. */
typedef struct { apo_params p; double weight; } apo_term;

/* What apo_batch_loss reports (apo_microbatch_loss: one micro-batch's shares of it); names
 * follow TRL's logged metrics. */
typedef struct {
    double loss;                                   /* the weighted total, batch mean per term */
    double rewards_chosen, rewards_rejected;       /* mean beta*(policy-ref), TRL meaning */
    double rewards_accuracies, rewards_margins;    /* mean 1[r_w > r_l] (strict), mean r_w - r_l */
    double logps_chosen, logps_rejected;           /* mean summed policy log-probs */
    int n_pairs;                                   /* pairs used (finite inputs) */
    int n_nonfinite;                               /* pairs whose inputs were NaN/Inf (skipped, reported) */
} apo_metrics;

/* A running mean of a scalar (for bco_pair's old delta): zero-initialise, then update. */
typedef struct { double mean; long count; } apo_running_mean;

/* beta 0.1, label_smoothing 0, discopop_tau 0.05, bco_delta 0: TRL's defaults. */
APO_DEF apo_params apo_default_params(apo_loss_type type);

/* NULL if p is usable, else a sentence saying which field is wrong and what it must be. */
APO_DEF const char *apo_params_check(const apo_params *p);

/* Loss of one pair. Writes dloss/d policy_chosen to *d_chosen and dloss/d policy_rejected to
 * *d_rejected (either pointer may be NULL). A NaN/Inf input gives NaN and zero gradients. */
APO_DEF APO_HD double apo_pair_loss(const apo_params *p, const apo_pair *x, double *d_chosen, double *d_rejected);

/* Unpaired APO-zero for one completion (TRL KTOTrainer loss_type "apo_zero_unpaired"):
 * desirable: 1 - s(beta (policy - ref)); undesirable: s(beta (policy - ref)).
 * Writes dloss/d policy to *d_policy (may be NULL). NaN/Inf input: NaN, zero gradient. */
APO_DEF APO_HD double apo_zero_unpaired_loss(double beta, double policy_logp, double ref_logp,
                                             int desirable, double *d_policy);

/* Batch: total = sum_k weight_k * mean_i loss_k(pair i). Writes d_chosen[i], d_rejected[i] =
 * d total / d policy_chosen_i, d policy_rejected_i (INCLUDING the 1/n of the mean), if non-NULL.
 * Returns the total; fills *m if non-NULL. Beta for the reward metrics: terms[0].p.beta. Every
 * mean is its sum divided once, so equal values give their value exactly.
 * Pairs with NaN/Inf inputs are skipped (gradient 0) and counted in m->n_nonfinite; the means
 * are over the other pairs. With m == NULL a skipped pair makes the return value NaN. */
APO_DEF double apo_batch_loss(const apo_term *terms, int n_terms, const apo_pair *pairs, int n,
                              double *d_chosen, double *d_rejected, apo_metrics *m);

/* What a micro-batch must know about the whole (global) batch it belongs to. */
typedef struct {
    int n_pairs;            /* pairs in the global batch */
    double chosen_tokens;   /* sum of n_chosen over the global batch (the sft denominator) */
} apo_batch_totals;

/* The share of one micro-batch in the loss of its global batch: sum over the micro-batches of the
 * returned values equals apo_batch_loss over the whole batch, and d_chosen[i], d_rejected[i] are
 * d(global loss)/d(policy log-probs of pair i) (so the gradients of all micro-batches simply add up).
 * Pairwise terms contribute sum_i loss_i / totals->n_pairs; sft contributes -sum_i pc_i /
 * max(1, totals->chosen_tokens). If m is non-NULL it receives this micro-batch's shares of the
 * metrics (loss, rewards_*, logps_* divided by totals->n_pairs; n_pairs and n_nonfinite as plain
 * counts; beta of terms[0], as apo_batch_loss), so adding the apo_metrics of all micro-batches
 * field by field with apo_metrics_add gives the metrics of the whole batch. Non-finite pairs: zero gradient, counted in n_nonfinite (the
 * equality with apo_batch_loss then no longer holds; why is said below).
 *
 * The totals are known before any log-prob is: n_pairs and the token counts come from the
 * tokenised data (count a chosen answer's n_chosen below 0 as 0, as apo_batch_loss does). The
 * sum of the returns equals apo_batch_loss up to rounding (the same terms, added in another
 * order; the gradients are bit-identical), provided every pair is finite. A pair with NaN/Inf
 * inputs shows up only when its own micro-batch is computed, after the shares of the others may
 * already be backpropagated, so it stays in the denominators: it counts as a pair with loss 0
 * (and its chosen tokens as tokens with log-prob 0), whereas apo_batch_loss, which sees the
 * whole batch at once, averages over the finite pairs only. With m == NULL a non-finite pair
 * makes the return value NaN (never silent). Totals that cannot hold this micro-batch
 * (totals NULL, totals->n_pairs < n, chosen_tokens NaN/Inf) give NaN, zero gradients, and
 * zero metrics with loss NaN. */
APO_DEF double apo_microbatch_loss(const apo_term *terms, int n_terms, const apo_pair *pairs, int n,
                                   const apo_batch_totals *totals, double *d_chosen, double *d_rejected,
                                   apo_metrics *m);

/* acc += part, field by field (sums the shares apo_microbatch_loss reports). Start acc from a
 * zeroed apo_metrics (memset(&acc, 0, sizeof acc)). */
APO_DEF void apo_metrics_add(apo_metrics *acc, const apo_metrics *part);

/* Parses "apo_zero" or "apo_zero:1,sft:0.1" into terms (each gets *defaults, or TRL's defaults
 * if defaults is NULL, with its type); a missing weight is 1; spaces around names and weights
 * are allowed; weights must be finite and >= 0; each term must pass apo_params_check.
 * Returns the number of terms, or -1 with a message in err naming the bad part. */
APO_DEF int apo_parse_loss_list(const char *spec, const apo_params *defaults, apo_term *terms,
                                int max_terms, char *err, size_t errsz);

/* "apo_zero" -> APO_ZERO etc. (TRL's spelling, exact). 0 ok, -1 unknown. */
APO_DEF int apo_loss_from_name(const char *name, apo_loss_type *out);
/* APO_ZERO -> "apo_zero"; "unknown" for a value out of range. */
APO_DEF const char *apo_loss_name(apo_loss_type t);

/* The reference helper for users who bring their own model: summed completion log-prob from
 * logits[T x V] (row-major) with labels[T] (label shift: logits row t predicts labels[t+1]),
 * mask[T] (1 = labels[t] is a completion token; mask[0] is ignored, nothing predicts it).
 *   sum over t = 0..T-2 with mask[t+1]:  log softmax(logits[t])[labels[t+1]]
 * If dlogits is non-NULL, also writes scale * d(logp)/d(logits) into dlogits[T x V]: row t is
 * scale * (onehot(labels[t+1]) - softmax(logits[t])) where mask[t+1], 0 elsewhere. Pass
 * scale = dloss/dlogp (e.g. d_chosen[i] from apo_batch_loss) to get dloss/dlogits. dlogits may
 * be the very same buffer as logits (in place) but must not overlap it otherwise. Stable
 * (log-sum-exp per row, accumulated in double); no T x V buffer inside. Returns NaN if a masked
 * label is outside [0, V) or T, V < 1 (dlogits is then left unwritten). */
APO_DEF double apo_sequence_logp(const float *logits, int T, int V, const int *labels,
                                 const unsigned char *mask, float *dlogits, double scale);

/* Adds x to a running mean (count += 1); returns the new mean. */
APO_DEF double apo_running_mean_update(apo_running_mean *r, double x);

/* Stable building blocks: softplus(t) = log(1 + e^t), s(t) = 1/(1 + e^-t), log s(t). */
APO_DEF APO_HD double apo_softplus(double t);
APO_DEF APO_HD double apo_sigmoid(double t);
APO_DEF APO_HD double apo_log_sigmoid(double t);

#ifdef __cplusplus
}
#endif
#endif /* APO_H */

/* ============================================================================================
 * IMPLEMENTATION
 * ========================================================================================== */
#ifdef APO_IMPLEMENTATION
#ifndef APO_IMPLEMENTATION_DONE
#define APO_IMPLEMENTATION_DONE

#include <math.h>

#ifdef __cplusplus
extern "C" {
#endif

/* NaN made at run time: the NAN macro is not a usable constant in every compiler mode. */
static APO_HD double apo__nan(void) { double zero = 0.0; return zero / zero; }

static APO_HD int apo__finite(double v) { return v - v == 0.0; } /* false for NaN and +-Inf */

/* log(1 + e^t) without overflow: for t > 0, t + log(1 + e^-t). */
APO_DEF APO_HD double apo_softplus(double t) {
    return (t > 0 ? t : 0.0) + log1p(exp(-fabs(t)));
}

/* 1/(1 + e^-t) computed from the side where exp cannot overflow. */
APO_DEF APO_HD double apo_sigmoid(double t) {
    if (t >= 0) return 1.0 / (1.0 + exp(-t));
    double e = exp(t);
    return e / (1.0 + e);
}

APO_DEF APO_HD double apo_log_sigmoid(double t) { return -apo_softplus(-t); }

/* s(t) s(-t) = s'(t), the sigmoid's slope; exact for large |t| (no 1 - s cancellation). */
static APO_HD double apo__dsigmoid(double t) { return apo_sigmoid(t) * apo_sigmoid(-t); }

static APO_HD double apo__len(int n) { return n < 1 ? 1.0 : (double)n; }

APO_DEF APO_HD double apo_pair_loss(const apo_params *p, const apo_pair *x, double *d_chosen, double *d_rejected) {
    double b = p->beta, e = p->label_smoothing;
    double dw = x->policy_chosen - x->ref_chosen;       /* log-ratio of the chosen completion */
    double dl = x->policy_rejected - x->ref_rejected;   /* log-ratio of the rejected completion */
    double rw = b * dw, rl = b * dl, z = rw - rl;       /* rewards and margin */
    double L = 0, gc = 0, gr = 0;                       /* value, d/d policy_chosen, d/d policy_rejected */
    double gz;                                          /* d/dz for the margin-only losses */
    if (!apo__finite(x->policy_chosen) || !apo__finite(x->policy_rejected) ||
        !apo__finite(x->ref_chosen) || !apo__finite(x->ref_rejected)) {
        if (d_chosen) *d_chosen = 0;
        if (d_rejected) *d_rejected = 0;
        return apo__nan();
    }
    switch (p->type) {
    case APO_ZERO:
        /* (1 - s(rw)) + s(rl) = s(-rw) + s(rl) */
        L = apo_sigmoid(-rw) + apo_sigmoid(rl);
        gc = -b * apo__dsigmoid(rw);
        gr = b * apo__dsigmoid(rl);
        break;
    case APO_DOWN:
        /* s(rw) + (1 - s(z)) = s(rw) + s(-z); at init the two pulls on chosen cancel exactly */
        L = apo_sigmoid(rw) + apo_sigmoid(-z);
        gc = b * (apo__dsigmoid(rw) - apo__dsigmoid(z));
        gr = b * apo__dsigmoid(z);
        break;
    case APO_SIGMOID:
        /* -(1-e) logsig(z) - e logsig(-z) = (1-e) softplus(-z) + e softplus(z) */
        L = (1 - e) * apo_softplus(-z) + e * apo_softplus(z);
        gz = -(1 - e) * apo_sigmoid(-z) + e * apo_sigmoid(z);
        gc = b * gz; gr = -b * gz;
        break;
    case APO_IPO: {
        double nw = apo__len(x->n_chosen), nl = apo__len(x->n_rejected);
        double u = dw / nw - dl / nl - 1.0 / (2.0 * b);
        L = u * u;
        gc = 2.0 * u / nw; gr = -2.0 * u / nl;
        break;
    }
    case APO_HINGE:
        /* relu(1 - z); at the kink z = 1 the gradient is 0, as torch's relu gives */
        L = z < 1 ? 1 - z : 0.0;
        gz = z < 1 ? -1.0 : 0.0;
        gc = b * gz; gr = -b * gz;
        break;
    case APO_ROBUST:
        /* (-(1-e) logsig(z) + e logsig(-z)) / (1-2e) = ((1-e) softplus(-z) - e softplus(z)) / (1-2e) */
        L = ((1 - e) * apo_softplus(-z) - e * apo_softplus(z)) / (1 - 2 * e);
        gz = (-(1 - e) * apo_sigmoid(-z) - e * apo_sigmoid(z)) / (1 - 2 * e);
        gc = b * gz; gr = -b * gz;
        break;
    case APO_EXO_PAIR: {
        /* KL(q || p) over {chosen, rejected} with q = (s(z), s(-z)) and p = (1-e, e):
         * dL/dz = s(z) s(-z) (z - log((1-e)/e)), since dL/dq = logit(q) - logit(1-e). */
        double ee = e > 0 ? e : 1e-3;
        double lpw = log1p(-ee), lpl = log(ee);
        L = apo_sigmoid(z) * (apo_log_sigmoid(z) - lpw) + apo_sigmoid(-z) * (apo_log_sigmoid(-z) - lpl);
        gz = apo__dsigmoid(z) * (z - (lpw - lpl));
        gc = b * gz; gr = -b * gz;
        break;
    }
    case APO_NCA_PAIR:
        /* softplus(-rw) + 0.5 softplus(rw) + 0.5 softplus(rl) */
        L = apo_softplus(-rw) + 0.5 * apo_softplus(rw) + 0.5 * apo_softplus(rl);
        gc = b * (-apo_sigmoid(-rw) + 0.5 * apo_sigmoid(rw));
        gr = b * 0.5 * apo_sigmoid(rl);
        break;
    case APO_BCO_PAIR: {
        double cw = rw - p->bco_delta, cl = rl - p->bco_delta;
        L = apo_softplus(-cw) + apo_softplus(cl);
        gc = -b * apo_sigmoid(-cw);
        gr = b * apo_sigmoid(cl);
        break;
    }
    case APO_SPPO_HARD: {
        /* squared distance of the raw log-ratios (no beta factor) from +-1/(2 beta) */
        double a = dw - 0.5 / b, c = dl + 0.5 / b;
        L = a * a + c * c;
        gc = 2 * a; gr = 2 * c;
        break;
    }
    case APO_DISCOPOP: {
        /* L = (1-m) softplus(-z) + m e^-z, m = s(z/tau). The product m e^-z and the slope
         * term m(1-m)/tau e^-z are formed in log space: e^-z alone overflows for z < -709. */
        double tau = p->discopop_tau;
        double m = apo_sigmoid(z / tau);
        double dm = apo__dsigmoid(z / tau) / tau;                      /* dm/dz */
        double me = exp(apo_log_sigmoid(z / tau) - z);                 /* m e^-z */
        double dme = exp(apo_log_sigmoid(z / tau) + apo_log_sigmoid(-z / tau) - z) / tau; /* dm/dz e^-z */
        double sp = apo_softplus(-z);
        L = (1 - m) * sp + me;
        gz = -dm * sp - (1 - m) * apo_sigmoid(-z) + dme - me;
        gc = b * gz; gr = -b * gz;
        break;
    }
    case APO_SIGMOID_NORM: {
        double nw = apo__len(x->n_chosen), nl = apo__len(x->n_rejected);
        double zn = b * (dw / nw - dl / nl);
        L = apo_softplus(-zn);
        gz = -b * apo_sigmoid(-zn);                                    /* dL/d(dw/nw - dl/nl) */
        gc = gz / nw; gr = -gz / nl;
        break;
    }
    case APO_SFT: {
        double nw = apo__len(x->n_chosen);
        L = -x->policy_chosen / nw;
        gc = -1.0 / nw; gr = 0;
        break;
    }
    default:
        L = apo__nan(); gc = 0; gr = 0;
        break;
    }
    if (d_chosen) *d_chosen = gc;
    if (d_rejected) *d_rejected = gr;
    return L;
}

APO_DEF APO_HD double apo_zero_unpaired_loss(double beta, double policy_logp, double ref_logp,
                                             int desirable, double *d_policy) {
    double r = beta * (policy_logp - ref_logp);
    if (!apo__finite(policy_logp) || !apo__finite(ref_logp)) {
        if (d_policy) *d_policy = 0;
        return apo__nan();
    }
    if (d_policy) *d_policy = (desirable ? -beta : beta) * apo__dsigmoid(r);
    return desirable ? apo_sigmoid(-r) : apo_sigmoid(r);
}

APO_DEF apo_params apo_default_params(apo_loss_type type) {
    apo_params p;
    p.type = type;
    p.beta = 0.1;
    p.label_smoothing = 0.0;
    p.discopop_tau = 0.05;
    p.bco_delta = 0.0;
    return p;
}

APO_DEF const char *apo_params_check(const apo_params *p) {
    if ((int)p->type < 0 || (int)p->type >= (int)APO_LOSS_COUNT) return "type is not an apo_loss_type value";
    if (!apo__finite(p->beta) || !(p->beta > 0)) return "beta must be a finite number > 0 (TRL's default is 0.1)";
    if (!apo__finite(p->label_smoothing) || p->label_smoothing < 0 || p->label_smoothing >= 0.5)
        return "label_smoothing must be in [0, 0.5) (it is the assumed probability that a label is flipped)";
    if (p->type == APO_DISCOPOP && (!apo__finite(p->discopop_tau) || !(p->discopop_tau > 0)))
        return "discopop_tau must be a finite number > 0 (TRL's default is 0.05)";
    if (!apo__finite(p->bco_delta)) return "bco_delta must be finite (0 = TRL 1.x behaviour)";
    return 0;
}

/* ---- batches and micro-batches -------------------------------------------------------- */

/* Both batch calls compute the same sums and differ only in what they divide by: apo_batch_loss
 * by its own finite pairs and chosen tokens, apo_microbatch_loss by the global batch's totals. */

static int apo__pair_finite(const apo_pair *x) {
    return apo__finite(x->policy_chosen) && apo__finite(x->policy_rejected) &&
           apo__finite(x->ref_chosen) && apo__finite(x->ref_rejected);
}

/* Pass 1 over pairs[0..n): sums over the finite pairs, for the metrics and the sft denominator. */
typedef struct {
    double sum_rw, sum_rl, sum_acc, sum_margin, sum_pc, sum_pr; /* sum_margin: of r_w - r_l (TRL) */
    double chosen_tokens;            /* completion tokens of the finite pairs' chosen answers */
    int used, bad;                   /* finite pairs; pairs with NaN/Inf inputs */
} apo__batch_sums;

static apo__batch_sums apo__batch_scan(double beta, const apo_pair *pairs, int n) {
    apo__batch_sums s;
    int i;
    s.sum_rw = s.sum_rl = s.sum_acc = s.sum_margin = s.sum_pc = s.sum_pr = 0;
    s.chosen_tokens = 0;
    s.used = s.bad = 0;
    for (i = 0; i < n; i++) {
        const apo_pair *x = &pairs[i];
        double rw, rl;
        if (!apo__pair_finite(x)) { s.bad++; continue; }
        rw = beta * (x->policy_chosen - x->ref_chosen);
        rl = beta * (x->policy_rejected - x->ref_rejected);
        s.used++;
        s.sum_rw += rw; s.sum_rl += rl; s.sum_acc += rw > rl ? 1.0 : 0.0; s.sum_margin += rw - rl;
        s.sum_pc += x->policy_chosen; s.sum_pr += x->policy_rejected;
        /* TRL counts the chosen tokens as they are (an empty answer adds 0 tokens and a
         * log-prob of 0) */
        s.chosen_tokens += x->n_chosen > 0 ? x->n_chosen : 0;
    }
    return s;
}

/* Pass 2: sum_k weight_k * (sum_i loss_k(pair i)) / pair_count, with sft as TRL's token mean
 * -(sum_i pc_i) / sft_tokens: each term's sum is divided once, so a mean of equal losses is
 * exact (ten pairs of APO-zero loss 1 give 1, not 0.9999999999999999). Writes each pair's
 * gradient (weight_k / pair_count, or weight_k / sft_tokens, included), adding the terms in
 * order. Non-finite pairs add nothing and get zero gradients. */
static double apo__batch_terms(const apo_term *terms, int n_terms, const apo_pair *pairs, int n,
                               double pair_count, double sft_tokens,
                               double *d_chosen, double *d_rejected) {
    double total = 0;
    int i, k;
    for (i = 0; i < n; i++) {
        if (d_chosen) d_chosen[i] = 0;
        if (d_rejected) d_rejected[i] = 0;
    }
    for (k = 0; k < n_terms; k++) {
        double w = terms[k].weight, sum = 0;
        for (i = 0; i < n; i++) {
            const apo_pair *x = &pairs[i];
            double gc, gr;
            if (!apo__pair_finite(x)) continue;
            if (terms[k].p.type == APO_SFT) {
                /* TRL: cross-entropy over all chosen completion tokens of the batch */
                sum += -x->policy_chosen;
                if (d_chosen) d_chosen[i] += w * (-1.0 / sft_tokens);
            } else {
                sum += apo_pair_loss(&terms[k].p, x, &gc, &gr);
                if (d_chosen) d_chosen[i] += w * gc / pair_count;
                if (d_rejected) d_rejected[i] += w * gr / pair_count;
            }
        }
        if (terms[k].p.type == APO_SFT)
            total += w * (sum / sft_tokens);
        else if (pair_count > 0)   /* an empty batch (no finite pair) is 0, not 0/0 */
            total += w * (sum / pair_count);
    }
    return total;
}

/* The metrics: every mean is a sum divided once by `count` (the pairs of the batch that owns
 * the means; 0: all zero). */
static void apo__batch_metrics(const apo__batch_sums *s, double total, double count, apo_metrics *m) {
    double n = count > 0 ? count : 1.0;
    m->loss = total;
    m->rewards_chosen = s->sum_rw / n;
    m->rewards_rejected = s->sum_rl / n;
    m->rewards_accuracies = s->sum_acc / n;
    m->rewards_margins = s->sum_margin / n;
    m->logps_chosen = s->sum_pc / n;
    m->logps_rejected = s->sum_pr / n;
    m->n_pairs = s->used;
    m->n_nonfinite = s->bad;
}

APO_DEF double apo_batch_loss(const apo_term *terms, int n_terms, const apo_pair *pairs, int n,
                              double *d_chosen, double *d_rejected, apo_metrics *m) {
    double beta = n_terms > 0 ? terms[0].p.beta : 0.0, total;
    apo__batch_sums s = apo__batch_scan(beta, pairs, n);
    /* only an all-empty batch would divide by 0 */
    double sft_tokens = s.chosen_tokens < 1 ? 1.0 : s.chosen_tokens;
    total = apo__batch_terms(terms, n_terms, pairs, n, (double)s.used, sft_tokens, d_chosen, d_rejected);
    if (m) apo__batch_metrics(&s, total, (double)s.used, m);
    else if (s.bad > 0) return apo__nan(); /* no other way to report the skipped pairs */
    return total;
}

APO_DEF double apo_microbatch_loss(const apo_term *terms, int n_terms, const apo_pair *pairs, int n,
                                   const apo_batch_totals *totals, double *d_chosen, double *d_rejected,
                                   apo_metrics *m) {
    double beta = n_terms > 0 ? terms[0].p.beta : 0.0, total, sft_tokens;
    apo__batch_sums s;
    if (!totals || totals->n_pairs < n || !apo__finite(totals->chosen_tokens)) {
        /* totals that cannot describe a batch holding these pairs: report, never guess */
        int i;
        for (i = 0; i < n; i++) {
            if (d_chosen) d_chosen[i] = 0;
            if (d_rejected) d_rejected[i] = 0;
        }
        if (m) {
            apo__batch_sums none = apo__batch_scan(beta, pairs, 0);   /* all sums 0 */
            apo__batch_metrics(&none, apo__nan(), 0.0, m);
        }
        return apo__nan();
    }
    s = apo__batch_scan(beta, pairs, n);
    sft_tokens = totals->chosen_tokens < 1 ? 1.0 : totals->chosen_tokens;
    total = apo__batch_terms(terms, n_terms, pairs, n, (double)totals->n_pairs, sft_tokens,
                             d_chosen, d_rejected);
    if (m) apo__batch_metrics(&s, total, (double)totals->n_pairs, m);
    else if (s.bad > 0) return apo__nan(); /* as apo_batch_loss: no other way to report them */
    return total;
}

APO_DEF void apo_metrics_add(apo_metrics *acc, const apo_metrics *part) {
    acc->loss += part->loss;
    acc->rewards_chosen += part->rewards_chosen;
    acc->rewards_rejected += part->rewards_rejected;
    acc->rewards_accuracies += part->rewards_accuracies;
    acc->rewards_margins += part->rewards_margins;
    acc->logps_chosen += part->logps_chosen;
    acc->logps_rejected += part->logps_rejected;
    acc->n_pairs += part->n_pairs;
    acc->n_nonfinite += part->n_nonfinite;
}

/* ---- names and the loss-list parser ---------------------------------------------------- */

static const char *const apo__names[APO_LOSS_COUNT] = {
    "apo_zero", "apo_down", "sigmoid", "ipo", "hinge", "robust", "exo_pair", "nca_pair",
    "bco_pair", "sppo_hard", "discopop", "sigmoid_norm", "sft"
};

/* 1 if s[0..n) equals the NUL-terminated name */
static int apo__eqn(const char *s, size_t n, const char *name) {
    size_t i;
    for (i = 0; i < n; i++) if (name[i] == 0 || name[i] != s[i]) return 0;
    return name[n] == 0;
}

APO_DEF int apo_loss_from_name(const char *name, apo_loss_type *out) {
    int t;
    size_t n = 0;
    if (!name) return -1;
    while (name[n]) n++;
    for (t = 0; t < (int)APO_LOSS_COUNT; t++)
        if (apo__eqn(name, n, apo__names[t])) { if (out) *out = (apo_loss_type)t; return 0; }
    return -1;
}

APO_DEF const char *apo_loss_name(apo_loss_type t) {
    return ((int)t >= 0 && (int)t < (int)APO_LOSS_COUNT) ? apo__names[t] : "unknown";
}

/* A tiny bounded string builder for error messages (no <stdio.h> in this header). */
typedef struct { char *buf; size_t cap, len; } apo__msg;
static void apo__put(apo__msg *w, const char *s, size_t n) {
    size_t i;
    if (!w->buf || w->cap == 0) return;
    for (i = 0; i < n && s[i]; i++) if (w->len + 1 < w->cap) w->buf[w->len++] = s[i];
    w->buf[w->len] = 0;
}
static void apo__puts(apo__msg *w, const char *s) { size_t n = 0; while (s[n]) n++; apo__put(w, s, n); }
static void apo__puti(apo__msg *w, int v) {
    char d[16]; int k = 0; unsigned u = v < 0 ? 0u - (unsigned)v : (unsigned)v;
    if (v < 0) apo__puts(w, "-");
    do { d[k++] = (char)('0' + u % 10); u /= 10; } while (u && k < 15);
    while (k) { char c = d[--k]; apo__put(w, &c, 1); }
}

static int apo__space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static int apo__digit(char c) { return c >= '0' && c <= '9'; }

/* Parses a whole decimal number s[0..n): digits [. digits] [e[+-]digits]; no sign (weights
 * are >= 0). 0 ok. The mantissa is exact below 2^53 and scaled by one power of ten, so
 * everyday weights like 0.1 parse to the nearest double. */
static int apo__number(const char *s, size_t n, double *out) {
    size_t i = 0; double mant = 0; int frac = 0, ex = 0, exsign = 1, digits = 0, exdigits = 0;
    while (i < n && apo__digit(s[i])) { mant = mant * 10 + (s[i] - '0'); i++; digits++; }
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && apo__digit(s[i])) { mant = mant * 10 + (s[i] - '0'); i++; digits++; frac++; }
    }
    if (digits == 0) return -1;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) { if (s[i] == '-') exsign = -1; i++; }
        while (i < n && apo__digit(s[i])) { if (ex < 10000) ex = ex * 10 + (s[i] - '0'); i++; exdigits++; }
        if (exdigits == 0) return -1;
    }
    if (i != n) return -1;
    ex = exsign * ex - frac;
    *out = ex < 0 ? mant / pow(10.0, -ex) : mant * pow(10.0, ex);
    return apo__finite(*out) ? 0 : -1;
}

APO_DEF int apo_parse_loss_list(const char *spec, const apo_params *defaults, apo_term *terms,
                                int max_terms, char *err, size_t errsz) {
    apo__msg w;
    int count = 0, t;
    size_t pos = 0;
    w.buf = err; w.cap = errsz; w.len = 0;
    if (err && errsz) err[0] = 0;
    if (!spec) { apo__puts(&w, "no loss list given (expected e.g. \"apo_zero\" or \"apo_zero:1,sft:0.1\")"); return -1; }
    for (;;) {
        /* one item: spec[a..c) is the name, spec[c+1..d) the optional weight, ends at ',' or NUL */
        size_t a = pos, end = pos, c, nb, ne, wb, we;
        apo_loss_type type;
        double weight = 1.0;
        while (spec[end] && spec[end] != ',') end++;
        c = a; while (c < end && spec[c] != ':') c++;
        nb = a; ne = c;
        while (nb < ne && apo__space(spec[nb])) nb++;
        while (ne > nb && apo__space(spec[ne - 1])) ne--;
        if (ne == nb) {
            apo__puts(&w, "empty loss name in item ");
            apo__puti(&w, count + 1);
            apo__puts(&w, " of \""); apo__puts(&w, spec);
            apo__puts(&w, "\" (expected e.g. \"apo_zero\" or \"apo_zero:1,sft:0.1\")");
            return -1;
        }
        type = APO_LOSS_COUNT;
        for (t = 0; t < (int)APO_LOSS_COUNT; t++)
            if (apo__eqn(spec + nb, ne - nb, apo__names[t])) type = (apo_loss_type)t;
        if (type == APO_LOSS_COUNT) {
            apo__puts(&w, "unknown loss '"); apo__put(&w, spec + nb, ne - nb);
            apo__puts(&w, "' (known: ");
            for (t = 0; t < (int)APO_LOSS_COUNT; t++) { if (t) apo__puts(&w, ", "); apo__puts(&w, apo__names[t]); }
            apo__puts(&w, ")");
            return -1;
        }
        if (c < end) {
            wb = c + 1; we = end;
            while (wb < we && apo__space(spec[wb])) wb++;
            while (we > wb && apo__space(spec[we - 1])) we--;
            if (apo__number(spec + wb, we - wb, &weight) != 0) {
                apo__puts(&w, "bad weight '"); apo__put(&w, spec + wb, we - wb);
                apo__puts(&w, "' for loss '"); apo__put(&w, spec + nb, ne - nb);
                apo__puts(&w, "' (expected a number >= 0, e.g. 0.1)");
                return -1;
            }
        }
        if (count >= max_terms) {
            apo__puts(&w, "too many losses in \""); apo__puts(&w, spec);
            apo__puts(&w, "\" (at most "); apo__puti(&w, max_terms); apo__puts(&w, ")");
            return -1;
        }
        if (defaults) terms[count].p = *defaults; else terms[count].p = apo_default_params(type);
        terms[count].p.type = type;
        terms[count].weight = weight;
        {   /* catch bad hyper-parameters here, where the message can name the loss */
            const char *why = apo_params_check(&terms[count].p);
            if (why) {
                apo__puts(&w, "loss '"); apo__puts(&w, apo__names[type]); apo__puts(&w, "': ");
                apo__puts(&w, why);
                return -1;
            }
        }
        count++;
        if (!spec[end]) break;
        pos = end + 1;
    }
    return count;
}

/* ---- log-prob of a completion from logits ---------------------------------------------- */

APO_DEF double apo_sequence_logp(const float *logits, int T, int V, const int *labels,
                                 const unsigned char *mask, float *dlogits, double scale) {
    double total = 0;
    int t, v;
    if (T < 1 || V < 1) return apo__nan();
    /* check every label first, so a bad one leaves dlogits untouched */
    for (t = 0; t + 1 < T; t++)
        if (mask[t + 1] && (labels[t + 1] < 0 || labels[t + 1] >= V)) return apo__nan();
    for (t = 0; t < T; t++) {
        const float *row = logits + (size_t)t * (size_t)V;   /* [V] */
        float *drow = dlogits ? dlogits + (size_t)t * (size_t)V : 0;
        double mx, sum, lse, picked;
        int y;
        if (t + 1 >= T || !mask[t + 1]) {    /* this row predicts nothing we score */
            if (drow) for (v = 0; v < V; v++) drow[v] = 0.0f;
            continue;
        }
        y = labels[t + 1];
        mx = row[0];
        for (v = 1; v < V; v++) if (row[v] > mx) mx = row[v];
        sum = 0;
        for (v = 0; v < V; v++) sum += exp((double)row[v] - mx);
        lse = mx + log(sum);
        picked = row[y];                     /* read before an in-place write can clobber it */
        total += picked - lse;
        if (drow) {
            /* d/dlogit_v of log softmax_y = 1[v==y] - softmax_v; element v is read, then written */
            for (v = 0; v < V; v++) {
                double pv = exp((double)row[v] - lse);
                drow[v] = (float)(scale * ((v == y ? 1.0 : 0.0) - pv));
            }
        }
    }
    return total;
}

APO_DEF double apo_running_mean_update(apo_running_mean *r, double x) {
    r->count += 1;
    r->mean += (x - r->mean) / (double)r->count;
    return r->mean;
}

#ifdef __cplusplus
}
#endif
#endif /* APO_IMPLEMENTATION_DONE */
#endif /* APO_IMPLEMENTATION */

/*
 * ==============================================================================================
 * LICENSE: two licenses, use whichever you prefer.
 * ==============================================================================================
 * A. MIT License. Copyright (c) 2026 the clair-apo authors.
 * Permission is hereby granted, free of charge, to any person obtaining a copy of this software
 * and associated documentation files (the "Software"), to deal in the Software without
 * restriction, including without limitation the rights to use, copy, modify, merge, publish,
 * distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
 * Software is furnished to do so, subject to the following conditions:
 * The above copyright notice and this permission notice shall be included in all copies or
 * substantial portions of the Software.
 * THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
 * BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
 * NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
 * DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 * OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
 * ----------------------------------------------------------------------------------------------
 * B. Public domain (www.unlicense.org).
 * This is free and unencumbered software released into the public domain. Anyone is free to
 * copy, modify, publish, use, compile, sell, or distribute this software, either in source code
 * form or as a compiled binary, for any purpose, commercial or non-commercial, and by any means.
 * In jurisdictions that recognize copyright laws, the author or authors of this software
 * dedicate any and all copyright interest in the software to the public domain. We make this
 * dedication for the benefit of the public at large and to the detriment of our heirs and
 * successors. We intend this dedication to be an overt act of relinquishment in perpetuity of
 * all present and future rights to this software under copyright law.
 * THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
 * BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
 * NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 * LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN
 * CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
 */
