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

static void train(apo_loss_type type, int steps, double lr) {
    float w[T * V], g_c[T * V], g_r[T * V];  /* logits, and dloss/dlogits through each answer */
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

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 100;
    double lr = argc > 2 ? atof(argv[2]) : 2.0;
    if (steps < 1 || !(lr > 0)) { fprintf(stderr, "usage: apo_demo [steps >= 1] [lr > 0]\n"); return 2; }
    printf("One CLAIR-style pair on a tabular toy policy: chosen = 1 2 3 4, rejected = 1 2 3 5.\n");
    printf("'vs ref' is log pi - log pi_ref of the whole answer (the implicit reward / beta);\n");
    printf("the last column is the same for the shared tokens 1 2 3 alone.\n");
    train(APO_SIGMOID, steps, lr);
    train(APO_ZERO, steps, lr);
    train(APO_DOWN, steps, lr);
    return 0;
}
