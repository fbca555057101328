/* tests/apo/header_check.c - apo.h compiles cleanly in every mode it promises.
 *
 * Built by mk/10-apo.sh with -Werror as C99 (gcc, clang; -std=c99 -pedantic -Wall -Wextra),
 * as C++11, under nvcc (as a .cu), and each again with -DAPO_STATIC. Included twice: once for
 * the declarations, once with APO_IMPLEMENTATION (the stb pattern), and every public function
 * is called, so a missing definition is a link error. Runs a smoke check of the values.
 */
#include "../../apo.h"
#define APO_IMPLEMENTATION
#include "../../apo.h"
#include "../../apo.h"   /* a third include must be harmless too */

int main(void) {
    apo_params p = apo_default_params(APO_ZERO);
    apo_pair x = { -10, -12, -10, -12, 5, 6 };
    apo_term terms[4];
    apo_metrics m, acc = { 0, 0, 0, 0, 0, 0, 0, 0, 0 };
    apo_batch_totals totals = { 1, 5 };
    apo_running_mean r = { 0, 0 };
    apo_loss_type t;
    char err[128];
    float logits[6] = { 0, 1, 2, 3, 4, 5 }, dlogits[6];
    int labels[2] = { 0, 1 };
    unsigned char mask[2] = { 0, 1 };
    double dc, dr, dp, total;
    int k, ok = 1;
    ok &= apo_pair_loss(&p, &x, &dc, &dr) == 1.0;
    ok &= apo_zero_unpaired_loss(0.1, -3, -3, 1, &dp) == 0.5;
    k = apo_parse_loss_list("apo_zero:1,sft:0.1", &p, terms, 4, err, sizeof err);
    ok &= k == 2;
    total = apo_batch_loss(terms, k, &x, 1, &dc, &dr, &m);
    ok &= total > 1.0 && m.n_pairs == 1;
    ok &= apo_microbatch_loss(terms, k, &x, 1, &totals, &dc, &dr, &m) == total;  /* a batch of one */
    apo_metrics_add(&acc, &m);
    ok &= acc.loss == total && acc.n_pairs == 1;
    ok &= apo_loss_from_name(apo_loss_name(APO_DISCOPOP), &t) == 0 && t == APO_DISCOPOP;
    ok &= apo_params_check(&p) == 0;
    ok &= apo_running_mean_update(&r, 2.0) == 2.0;
    ok &= apo_sequence_logp(logits, 2, 3, labels, mask, dlogits, 1.0) < 0;
    ok &= apo_softplus(0) > 0.69 && apo_sigmoid(0) == 0.5 && apo_log_sigmoid(0) < 0;
    return ok ? 0 : 1;
}
