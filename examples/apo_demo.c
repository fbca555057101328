/* examples/apo_demo.c - what DPO, APO-zero and APO-down do to the chosen and rejected
 * likelihoods, on a toy policy you can read in one screen.
 *
 *   cc -std=c99 -O2 examples/apo_demo.c -o apo_demo -lm && ./apo_demo [steps] [lr]
 *
 * The toy policy is a table of logits[T x V]: row t is the next-token distribution after the
 * first t+1 tokens (a tabular language model: 5 rows x 6 tokens = 30 numbers). One preference
 * pair, CLAIR style: the rejected answer is what the model already likes to say, the chosen
 * answer is a minimal revision of it that changes only the last token:
 *
 *     prompt  tokens 1 2 3  then 5      rejected (the model's own answer, likely)
 *     prompt  tokens 1 2 3  then 4      chosen   (the revision, unlikely under the model)
 *
 * Because the two answers share their first three tokens, they share those rows of the table:
 * whatever a loss does to the shared prefix moves BOTH likelihoods. Each step computes the
 * summed completion log-probs with apo_sequence_logp, the loss and its two gradients with
 * apo_pair_loss, backpropagates them into the logits with apo_sequence_logp again, and takes a
 * plain gradient-descent step. What to look for (the shared prefix gets the SUM of the two
 * gradients, dc + dr, so it shows what a loss asks of "both answers at once"):
 *
 *   - DPO (sigmoid): dc = -dr always, so the shared prefix never moves (+0.0000 in the last
 *     column). The chosen answer rises only through its last token and stalls (+2.06 here);
 *     the rejected one falls without limit. Only the margin is constrained.
 *   - APO-zero: chosen up, rejected down, each through its own sigmoid. The prefix gets
 *     beta (s'(r_l) - s'(r_w)): nearly nothing at first, then up once the rejected side
 *     saturates, so the chosen answer keeps rising past where DPO stalls. Use it when the
 *     chosen answers are better than the model's (CLAIR revisions).
 *   - APO-down: at step 0 dc = 0 exactly; from then on the prefix gets beta s'(r_w) > 0, so
 *     it is pushed down and BOTH answers fall, the rejected one faster. Use it when the chosen
 *     answers are worse than what the model would say but still better than the rejected ones.
 *
 * Last, gradient accumulation: three pairs under "apo_zero:1,sft:0.1", scored by the policy
 * APO-zero trained, as one batch (apo_batch_loss) and as two micro-batches
 * (apo_microbatch_loss): the shares add up to the batch loss and the gradients are the same.
 * Averaging apo_batch_loss over the micro-batches instead would not give the batch loss: each
 * micro-batch would be a mean over its own pairs and tokens.
 */
#define APO_IMPLEMENTATION
#include "../apo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T 5   /* sequence positions: prompt + 4 completion tokens */
#define V 6   /* vocabulary */

static const int chosen[T]   = { 0, 1, 2, 3, 4 };       /* token 0 is the prompt */
static const int rejected[T] = { 0, 1, 2, 3, 5 };
static const unsigned char mask[T] = { 0, 1, 1, 1, 1 }; /* completion tokens only */
static const unsigned char prefix_mask[T] = { 0, 1, 1, 1, 0 }; /* the shared tokens 1 2 3 */

/* The starting policy (= the frozen reference). Rows 0-2 like the shared prefix 1 2 3;
 * row 3 prefers 5 (the model's own ending) over 4 (the revision's). Row 4 predicts nothing
 * we score (it would predict the token after the answer). */
static void init_logits(float *w) {                     /* w: [T x V] */
    static const float rows[T][V] = {
        { 0.0f, 1.5f, 0.0f, 0.0f, 0.0f, 0.0f },
        { 0.0f, 0.0f, 1.5f, 0.0f, 0.0f, 0.0f },
        { 0.0f, 0.0f, 0.0f, 1.5f, 0.0f, 0.0f },
        { 0.0f, 0.0f, 0.0f, 0.0f, 0.5f, 2.0f },
        { 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f },
    };
    memcpy(w, rows, sizeof rows);
}

/* Trains the toy policy on the pair with one loss, printing 11 evenly spaced steps; leaves
 * the final logits in w [T x V]. */
static void train(apo_loss_type type, int steps, double lr, float *w) {
    float g_c[T * V], g_r[T * V];             /* dloss/dlogits through each answer */
    apo_params p = apo_default_params(type);  /* beta 0.1 as in the paper */
    apo_pair x;
    double ref_prefix;
    int s, i;
    init_logits(w);
    ref_prefix = apo_sequence_logp(w, T, V, chosen, prefix_mask, NULL, 0);
    x.ref_chosen = apo_sequence_logp(w, T, V, chosen, mask, NULL, 0);
    x.ref_rejected = apo_sequence_logp(w, T, V, rejected, mask, NULL, 0);
    x.n_chosen = x.n_rejected = 4;
    printf("\n%s (beta %.1f, lr %g)\n", apo_loss_name(type), p.beta, lr);
    printf("  step    loss   logp(chosen)  vs ref   logp(rejected)  vs ref   shared prefix vs ref\n");
    for (s = 0; s <= steps; s++) {
        double dc, dr, L;
        x.policy_chosen = apo_sequence_logp(w, T, V, chosen, mask, NULL, 0);
        x.policy_rejected = apo_sequence_logp(w, T, V, rejected, mask, NULL, 0);
        L = apo_pair_loss(&p, &x, &dc, &dr);
        if (s % (steps / 10 > 0 ? steps / 10 : 1) == 0)
            printf("  %4d  %6.4f   %8.4f    %+8.4f   %8.4f      %+8.4f   %+8.4f\n", s, L,
                   x.policy_chosen, x.policy_chosen - x.ref_chosen,
                   x.policy_rejected, x.policy_rejected - x.ref_rejected,
                   apo_sequence_logp(w, T, V, chosen, prefix_mask, NULL, 0) - ref_prefix);
        /* chain rule: dloss/dlogits = dc * dlogp_c/dlogits + dr * dlogp_r/dlogits */
        apo_sequence_logp(w, T, V, chosen, mask, g_c, dc);
        apo_sequence_logp(w, T, V, rejected, mask, g_r, dr);
        for (i = 0; i < T * V; i++) w[i] -= (float)(lr * (g_c[i] + g_r[i]));
    }
}

/* Shorter answers for the accumulation example: "1 2" and "1 5" (two tokens, then padding). */
static const int short_12[T] = { 0, 1, 2, 0, 0 };
static const int short_15[T] = { 0, 1, 5, 0, 0 };
static const unsigned char short_mask[T] = { 0, 1, 1, 0, 0 };

/* One pair's log-probs under the policy w and the reference ref. */
static apo_pair score_pair(const float *w, const float *ref, const int *c, const unsigned char *mc,
                           const int *r, const unsigned char *mr) {
    apo_pair x;
    int t;
    x.policy_chosen = apo_sequence_logp(w, T, V, c, mc, NULL, 0);
    x.policy_rejected = apo_sequence_logp(w, T, V, r, mr, NULL, 0);
    x.ref_chosen = apo_sequence_logp(ref, T, V, c, mc, NULL, 0);
    x.ref_rejected = apo_sequence_logp(ref, T, V, r, mr, NULL, 0);
    x.n_chosen = x.n_rejected = 0;
    for (t = 1; t < T; t++) { x.n_chosen += mc[t]; x.n_rejected += mr[t]; }
    return x;
}

static void accumulation(const float *w) {
    float ref[T * V];
    apo_pair pairs[3];
    apo_term terms[2];
    apo_batch_totals totals;
    apo_metrics whole, micro, part;
    double dc_whole[3], dr_whole[3], dc[3], dr[3], loss, share1, share2, worst = 0, mean_of_means;
    char err[128];
    int i, k;
    init_logits(ref);
    pairs[0] = score_pair(w, ref, chosen, mask, rejected, mask);         /* 1 2 3 4 | 1 2 3 5 */
    pairs[1] = score_pair(w, ref, chosen, mask, short_12, short_mask);   /* 1 2 3 4 | 1 2 */
    pairs[2] = score_pair(w, ref, short_12, short_mask, short_15, short_mask); /* 1 2 | 1 5 */
    k = apo_parse_loss_list("apo_zero:1,sft:0.1", NULL, terms, 2, err, sizeof err);
    if (k < 0) { fprintf(stderr, "apo_demo: %s\n", err); exit(1); }
    loss = apo_batch_loss(terms, k, pairs, 3, dc_whole, dr_whole, &whole);
    /* the totals come from the data alone (pair and token counts), before any forward pass */
    totals.n_pairs = 3;
    totals.chosen_tokens = pairs[0].n_chosen + pairs[1].n_chosen + pairs[2].n_chosen;
    memset(&micro, 0, sizeof micro);
    share1 = apo_microbatch_loss(terms, k, pairs, 2, &totals, dc, dr, &part);
    apo_metrics_add(&micro, &part);
    share2 = apo_microbatch_loss(terms, k, pairs + 2, 1, &totals, dc + 2, dr + 2, &part);
    apo_metrics_add(&micro, &part);
    for (i = 0; i < 3; i++) {
        if (fabs(dc[i] - dc_whole[i]) > worst) worst = fabs(dc[i] - dc_whole[i]);
        if (fabs(dr[i] - dr_whole[i]) > worst) worst = fabs(dr[i] - dr_whole[i]);
    }
    mean_of_means = (apo_batch_loss(terms, k, pairs, 2, NULL, NULL, NULL) +
                     apo_batch_loss(terms, k, pairs + 2, 1, NULL, NULL, NULL)) / 2;
    printf("\nGradient accumulation: 3 pairs under \"apo_zero:1,sft:0.1\", scored by the APO-zero policy\n");
    printf("  pairs 1 2 3 4 | 1 2 3 5,  1 2 3 4 | 1 2,  1 2 | 1 5   (%g chosen tokens in all)\n", totals.chosen_tokens);
    printf("  whole batch, apo_batch_loss               %.6f   rewards/accuracies %.4f\n", loss, whole.rewards_accuracies);
    printf("  micro-batch of pairs 1-2, its share       %.6f\n", share1);
    printf("  micro-batch of pair 3, its share          %.6f\n", share2);
    printf("  sum of the shares                         %.6f   rewards/accuracies %.4f\n", share1 + share2,
           micro.rewards_accuracies);
    printf("  largest gradient difference, micro-batches vs whole batch: %g\n", worst);
    printf("  mean of the micro-batches' own batch loss %.6f   (wrong: own pair and token counts)\n", mean_of_means);
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 100;
    double lr = argc > 2 ? atof(argv[2]) : 2.0;
    float w[T * V], w_zero[T * V];   /* the final logits; APO-zero's are scored in the last part */
    if (steps < 1 || !(lr > 0)) { fprintf(stderr, "usage: apo_demo [steps >= 1] [lr > 0]\n"); return 2; }
    printf("One CLAIR-style pair on a tabular toy policy: chosen = 1 2 3 4, rejected = 1 2 3 5.\n");
    printf("'vs ref' is log pi - log pi_ref of the whole answer (the implicit reward / beta);\n");
    printf("the last column is the same for the shared tokens 1 2 3 alone.\n");
    train(APO_SIGMOID, steps, lr, w);
    train(APO_ZERO, steps, lr, w_zero);
    train(APO_DOWN, steps, lr, w);
    accumulation(w_zero);
    return 0;
}
