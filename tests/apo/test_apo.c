/* tests/apo/test_apo.c - tests of apo.h.
 *
 *   test_apo [reference.txt]
 *
 * 1. every loss against tests/apo/reference.txt (TRL's formulas evaluated with mpmath and
 *    torch autograd by tools/gen_apo_reference.py): per-pair values and gradients, unpaired
 *    APO-zero, batches of weighted loss lists with TRL's metrics, sequence log-probs and dlogits;
 * 2. finite-difference gradients of every loss at random points;
 * 3. the paper's behaviour at initialisation (APO-zero, APO-down, DPO);
 * 4. NaN/Inf inputs are reported (pair, batch, sequence), not propagated;
 * 5. finite values and gradients for |log-probs| up to 1e4 and beta in [1e-3, 1e3];
 * 6. names, the loss-list parser and its error messages, parameter checks;
 * 7. micro-batches: the shares of apo_microbatch_loss add up to apo_batch_loss (values,
 *    gradients, metrics), non-finite pairs, and the share is the global batch's, not its own.
 * Exit 0 when everything passes, 1 otherwise (each failure is printed).
 */
#define APO_IMPLEMENTATION
#include "../../apo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_checks = 0, n_fail = 0;

#define CHECK(cond, ...) do { n_checks++; if (!(cond)) { n_fail++; \
    printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

/* |a - b| <= tol (1 + |b|): relative for large values, absolute near zero */
static int close_to(double a, double b, double tol) { return fabs(a - b) <= tol * (1 + fabs(b)); }

/* Tolerance against the 60-digit reference: a few hundred ulps. The worst error seen is about
 * 1e-15 (printed below); the margin covers other compilers' exp/log1p, which may differ in
 * the last bits. */
#define REF_TOL 1e-12

static unsigned long long rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) { /* uniform in [0, 1), xorshift64* */
    rng_state ^= rng_state >> 12; rng_state ^= rng_state << 25; rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}
static double uniform(double a, double b) { return a + (b - a) * urand(); }

/* ---------------------------------------------------------------------------------------- */
/* 1. the reference table                                                                   */

static int expect_word(FILE *f, const char *w) {
    char buf[64];
    if (fscanf(f, "%63s", buf) != 1) return 0;
    return strcmp(buf, w) == 0;
}

static void test_reference(const char *path) {
    FILE *f = fopen(path, "r");
    char word[512];
    int n_pair = 0, n_unp = 0, n_batch = 0, n_seq = 0;
    double worst_v = 0, worst_g = 0;
    if (!f) { CHECK(0, "cannot open reference table %s (run from the repo root, or pass its path)", path); return; }
    while (fscanf(f, "%511s", word) == 1) {
        if (word[0] == '#') { int c; while ((c = fgetc(f)) != '\n' && c != EOF) {} continue; }
        if (strcmp(word, "pair") == 0) {
            char name[64]; apo_params p; apo_pair x; double L, dc, dr, gc, gr, got;
            if (fscanf(f, "%63s %lf %lf %lf %lf %lf %lf %lf %lf %d %d %lf %lf %lf", name, &p.beta,
                       &p.label_smoothing, &p.discopop_tau, &p.bco_delta, &x.policy_chosen,
                       &x.policy_rejected, &x.ref_chosen, &x.ref_rejected, &x.n_chosen, &x.n_rejected,
                       &L, &dc, &dr) != 14) { CHECK(0, "malformed pair row %d", n_pair + 1); break; }
            CHECK(apo_loss_from_name(name, &p.type) == 0, "unknown loss '%s' in the table", name);
            got = apo_pair_loss(&p, &x, &gc, &gr);
            CHECK(close_to(got, L, REF_TOL) && close_to(gc, dc, REF_TOL) && close_to(gr, dr, REF_TOL),
                  "%s beta %g eps %g tau %g delta %g at (%.17g %.17g %.17g %.17g %d %d): got %.17g %.17g %.17g, want %.17g %.17g %.17g",
                  name, p.beta, p.label_smoothing, p.discopop_tau, p.bco_delta, x.policy_chosen,
                  x.policy_rejected, x.ref_chosen, x.ref_rejected, x.n_chosen, x.n_rejected, got, gc, gr, L, dc, dr);
            if (fabs(got - L) / (1 + fabs(L)) > worst_v) worst_v = fabs(got - L) / (1 + fabs(L));
            if (fabs(gc - dc) / (1 + fabs(dc)) > worst_g) worst_g = fabs(gc - dc) / (1 + fabs(dc));
            if (fabs(gr - dr) / (1 + fabs(dr)) > worst_g) worst_g = fabs(gr - dr) / (1 + fabs(dr));
            n_pair++;
        } else if (strcmp(word, "unpaired") == 0) {
            double beta, pol, ref, L, d, got, gd; int des;
            if (fscanf(f, "%lf %lf %lf %d %lf %lf", &beta, &pol, &ref, &des, &L, &d) != 6) { CHECK(0, "malformed unpaired row"); break; }
            got = apo_zero_unpaired_loss(beta, pol, ref, des, &gd);
            CHECK(close_to(got, L, REF_TOL) && close_to(gd, d, REF_TOL),
                  "unpaired beta %g pol %g ref %g des %d: got %.17g %.17g want %.17g %.17g", beta, pol, ref, des, got, gd, L, d);
            n_unp++;
        } else if (strcmp(word, "batch") == 0) {
            char spec[256], err[256]; double beta, want[7], total; int n, i, k;
            apo_pair pairs[16]; double wc[16], wr[16], dc[16], dr[16];
            apo_term terms[16]; apo_params def; apo_metrics m;
            if (fscanf(f, "%255s %lf %d", spec, &beta, &n) != 3 || n < 1 || n > 16) { CHECK(0, "malformed batch row"); break; }
            for (i = 0; i < n; i++) {
                if (!expect_word(f, "bpair") || fscanf(f, "%lf %lf %lf %lf %d %d %lf %lf", &pairs[i].policy_chosen,
                        &pairs[i].policy_rejected, &pairs[i].ref_chosen, &pairs[i].ref_rejected,
                        &pairs[i].n_chosen, &pairs[i].n_rejected, &wc[i], &wr[i]) != 8) { CHECK(0, "malformed bpair"); fclose(f); return; }
            }
            if (!expect_word(f, "bmetrics") || fscanf(f, "%lf %lf %lf %lf %lf %lf %lf", &want[0], &want[1], &want[2],
                    &want[3], &want[4], &want[5], &want[6]) != 7) { CHECK(0, "malformed bmetrics"); break; }
            def = apo_default_params(APO_ZERO); def.beta = beta;
            k = apo_parse_loss_list(spec, &def, terms, 16, err, sizeof err);
            CHECK(k > 0, "batch spec '%s' did not parse: %s", spec, err);
            if (k <= 0) continue;
            total = apo_batch_loss(terms, k, pairs, n, dc, dr, &m);
            CHECK(close_to(total, want[0], REF_TOL) && close_to(m.loss, want[0], REF_TOL), "batch '%s': total %.17g want %.17g", spec, total, want[0]);
            for (i = 0; i < n; i++)
                CHECK(close_to(dc[i], wc[i], REF_TOL) && close_to(dr[i], wr[i], REF_TOL),
                      "batch '%s' pair %d: grads %.17g %.17g want %.17g %.17g", spec, i, dc[i], dr[i], wc[i], wr[i]);
            CHECK(close_to(m.rewards_chosen, want[1], REF_TOL) && close_to(m.rewards_rejected, want[2], REF_TOL) &&
                  close_to(m.rewards_accuracies, want[3], REF_TOL) && close_to(m.rewards_margins, want[4], REF_TOL) &&
                  close_to(m.logps_chosen, want[5], REF_TOL) && close_to(m.logps_rejected, want[6], REF_TOL),
                  "batch '%s' metrics: %g %g %g %g %g %g want %g %g %g %g %g %g", spec, m.rewards_chosen, m.rewards_rejected,
                  m.rewards_accuracies, m.rewards_margins, m.logps_chosen, m.logps_rejected,
                  want[1], want[2], want[3], want[4], want[5], want[6]);
            CHECK(m.n_pairs == n && m.n_nonfinite == 0, "batch '%s': n_pairs %d n_nonfinite %d", spec, m.n_pairs, m.n_nonfinite);
            n_batch++;
        } else if (strcmp(word, "seq") == 0) {
            int T, V, t, v, ok = 1; double scale, want_lp, lp, lp2, worst = 0;
            float *logits, *dl, *inplace; double *want_g; int *labels; unsigned char *mask;
            if (fscanf(f, "%d %d %lf", &T, &V, &scale) != 3 || T < 1 || V < 1 || T * V > 100000) { CHECK(0, "malformed seq"); break; }
            logits = (float *)malloc(sizeof(float) * T * V); dl = (float *)malloc(sizeof(float) * T * V);
            inplace = (float *)malloc(sizeof(float) * T * V); want_g = (double *)malloc(sizeof(double) * T * V);
            labels = (int *)malloc(sizeof(int) * T); mask = (unsigned char *)malloc(T);
            for (t = 0; t < T && ok; t++) {
                int mk = 0;
                ok = expect_word(f, "seqrow") && fscanf(f, "%d %d", &labels[t], &mk) == 2;
                mask[t] = (unsigned char)mk;
                for (v = 0; v < V && ok; v++) { double d; ok = fscanf(f, "%lf", &d) == 1; logits[t * V + v] = (float)d; }
            }
            ok = ok && expect_word(f, "seqlogp") && fscanf(f, "%lf", &want_lp) == 1;
            for (t = 0; t < T && ok; t++) {
                ok = expect_word(f, "seqgrad");
                for (v = 0; v < V && ok; v++) ok = fscanf(f, "%lf", &want_g[t * V + v]) == 1;
            }
            CHECK(ok, "malformed seq block");
            if (ok) {
                /* the inputs are float32; the sums run in double, so 1e-12 relative is ample */
                lp = apo_sequence_logp(logits, T, V, labels, mask, NULL, 0);
                CHECK(close_to(lp, want_lp, 1e-12), "seq %dx%d: logp %.17g want %.17g", T, V, lp, want_lp);
                lp2 = apo_sequence_logp(logits, T, V, labels, mask, dl, scale);
                CHECK(lp2 == lp, "seq %dx%d: logp with gradient %.17g differs from %.17g", T, V, lp2, lp);
                /* dlogits are stored as float: half an ulp of float, relative to the row's scale */
                for (t = 0; t < T * V; t++) {
                    double e = fabs(dl[t] - want_g[t]);
                    if (e > worst) worst = e;
                }
                CHECK(worst <= 1e-7 * fabs(scale), "seq %dx%d: worst dlogits error %g", T, V, worst);
                memcpy(inplace, logits, sizeof(float) * T * V);
                lp2 = apo_sequence_logp(inplace, T, V, labels, mask, inplace, scale);
                CHECK(lp2 == lp && memcmp(inplace, dl, sizeof(float) * T * V) == 0,
                      "seq %dx%d: in-place dlogits differ from the separate-buffer ones", T, V);
            }
            free(logits); free(dl); free(inplace); free(want_g); free(labels); free(mask);
            n_seq++;
        } else {
            CHECK(0, "unknown row '%s' in %s", word, path);
            break;
        }
    }
    fclose(f);
    printf("reference: %d pair rows, %d unpaired, %d batches, %d sequences; worst relative error value %.2g, gradient %.2g\n",
           n_pair, n_unp, n_batch, n_seq, worst_v, worst_g);
    /* a truncated or emptied table must fail, not pass vacuously */
    CHECK(n_pair >= 500 && n_unp >= 10 && n_batch >= 5 && n_seq >= 4, "reference table %s is incomplete", path);
}

/* ---------------------------------------------------------------------------------------- */
/* 2. finite differences                                                                    */

static void test_finite_differences(void) {
    int t, i, worst_t = 0;
    double worst = 0;
    for (t = 0; t < (int)APO_LOSS_COUNT; t++) {
        for (i = 0; i < 60; i++) {
            apo_params p = apo_default_params((apo_loss_type)t);
            apo_pair x, xp;
            double gc, gr, fc, fr, h, L;
            p.beta = uniform(0.02, 2.0);
            if (t == APO_ROBUST || t == APO_SIGMOID || t == APO_EXO_PAIR) p.label_smoothing = uniform(0, 0.4);
            if (t == APO_DISCOPOP) p.discopop_tau = uniform(0.03, 0.8);
            if (t == APO_BCO_PAIR) p.bco_delta = uniform(-0.5, 0.5);
            x.n_chosen = 1 + (int)(urand() * 100); x.n_rejected = 1 + (int)(urand() * 100);
            x.ref_chosen = -uniform(1, 20); x.ref_rejected = -uniform(1, 20);
            /* log-ratios within a few reward units, where the losses are curved */
            x.policy_chosen = x.ref_chosen + uniform(-4, 4) / p.beta;
            x.policy_rejected = x.ref_rejected + uniform(-4, 4) / p.beta;
            if (t == APO_HINGE) {
                double z = p.beta * ((x.policy_chosen - x.ref_chosen) - (x.policy_rejected - x.ref_rejected));
                if (fabs(z - 1) < 1e-3) continue;   /* the kink has no derivative */
            }
            L = apo_pair_loss(&p, &x, &gc, &gr);
            /* step small against the loss's curvature scale (beta, and beta/tau for discopop) yet
             * large against rounding of pc - rc (|pc| <~ 200 here) */
            h = 1e-5 / (p.beta > 0.1 ? p.beta : 0.1);
            if (t == APO_DISCOPOP) h *= p.discopop_tau;
            xp = x; xp.policy_chosen += h; fc = apo_pair_loss(&p, &xp, NULL, NULL);
            xp = x; xp.policy_chosen -= h; fc = (fc - apo_pair_loss(&p, &xp, NULL, NULL)) / (2 * h);
            xp = x; xp.policy_rejected += h; fr = apo_pair_loss(&p, &xp, NULL, NULL);
            xp = x; xp.policy_rejected -= h; fr = (fr - apo_pair_loss(&p, &xp, NULL, NULL)) / (2 * h);
            /* central differences: truncation ~h^2 f''' and rounding ~eps |L| / h; 1e-6 covers both */
            {
                double scale = 1e-6 * (fabs(L) + fabs(gc) + fabs(gr) + 1e-3);
                double e = fabs(fc - gc) > fabs(fr - gr) ? fabs(fc - gc) : fabs(fr - gr);
                CHECK(e <= scale, "%s: finite differences %.12g %.12g vs analytic %.12g %.12g (beta %g)",
                      apo_loss_name((apo_loss_type)t), fc, fr, gc, gr, p.beta);
                if (e / scale * 1e-6 > worst) { worst = e / scale * 1e-6; worst_t = t; }
            }
        }
    }
    printf("finite differences: 13 losses x 60 points; worst scaled error %.2g (%s)\n", worst, apo_loss_name((apo_loss_type)worst_t));
}

/* ---------------------------------------------------------------------------------------- */
/* 3. behaviour the paper describes                                                         */

static void test_behaviour(void) {
    apo_pair init = { -40, -55, -40, -55, 20, 30 };   /* policy == reference */
    apo_params p;
    double L, gc, gr;
    int i;

    p = apo_default_params(APO_ZERO);
    L = apo_pair_loss(&p, &init, &gc, &gr);
    CHECK(L == 1.0, "APO-zero is 1 at initialisation (TRL's value), got %.17g", L);
    CHECK(gc < 0 && gr > 0, "APO-zero at init: gradient descent raises chosen (d<0) and lowers rejected (d>0): %g %g", gc, gr);

    p = apo_default_params(APO_DOWN);
    L = apo_pair_loss(&p, &init, &gc, &gr);
    CHECK(L == 1.0, "APO-down is 1 at initialisation, got %.17g", L);
    CHECK(gc == 0.0 && gr > 0, "APO-down at init: chosen unchanged (d=0), rejected lowered (d>0): %g %g", gc, gr);

    p = apo_default_params(APO_SIGMOID);
    L = apo_pair_loss(&p, &init, &gc, &gr);
    CHECK(fabs(L - log(2.0)) < 1e-15, "DPO is log 2 at initialisation, got %.17g", L);
    /* DPO moves only the margin: its gradient is equal and opposite everywhere */
    for (i = 0; i < 200; i++) {
        apo_pair x = init;
        x.policy_chosen += uniform(-100, 100); x.policy_rejected += uniform(-100, 100);
        apo_pair_loss(&p, &x, &gc, &gr);
        CHECK(gc == -gr && gc <= 0, "DPO gradient must be equal and opposite (margin only): %g %g", gc, gr);
    }

    /* Beyond the first step: simulate gradient descent directly on the two log-probs. APO-zero
     * raises chosen above the reference; APO-down lowers both, rejected more; DPO's likelihoods
     * move only through the margin (their sum stays where it started). */
    {
        apo_loss_type types[3] = { APO_ZERO, APO_DOWN, APO_SIGMOID };
        int k, s;
        for (k = 0; k < 3; k++) {
            apo_pair x = init;
            p = apo_default_params(types[k]);
            for (s = 0; s < 200; s++) {
                apo_pair_loss(&p, &x, &gc, &gr);
                x.policy_chosen -= 5.0 * gc; x.policy_rejected -= 5.0 * gr;
            }
            if (types[k] == APO_ZERO)
                CHECK(x.policy_chosen > init.policy_chosen && x.policy_rejected < init.policy_rejected,
                      "APO-zero after 200 steps: chosen %g (from %g) must rise, rejected %g (from %g) fall",
                      x.policy_chosen, init.policy_chosen, x.policy_rejected, init.policy_rejected);
            if (types[k] == APO_DOWN)
                CHECK(x.policy_chosen < init.policy_chosen &&
                      x.policy_rejected - init.policy_rejected < x.policy_chosen - init.policy_chosen,
                      "APO-down after 200 steps: chosen %g must fall, rejected %g fall more", x.policy_chosen, x.policy_rejected);
            if (types[k] == APO_SIGMOID)
                CHECK(fabs((x.policy_chosen + x.policy_rejected) - (init.policy_chosen + init.policy_rejected)) < 1e-9 &&
                      x.policy_chosen > init.policy_chosen,
                      "DPO after 200 steps: only the margin moves (sum %g, was %g)", x.policy_chosen + x.policy_rejected,
                      init.policy_chosen + init.policy_rejected);
        }
    }

    /* unpaired APO-zero: a desirable completion is pushed up, an undesirable one down */
    L = apo_zero_unpaired_loss(0.1, -30, -30, 1, &gc);
    CHECK(L == 0.5 && gc < 0, "unpaired desirable at init: 0.5 and raised, got %g %g", L, gc);
    L = apo_zero_unpaired_loss(0.1, -30, -30, 0, &gr);
    CHECK(L == 0.5 && gr > 0 && gr == -gc, "unpaired undesirable at init: 0.5 and lowered, got %g %g", L, gr);

    /* the paired APO-zero is the sum of its two unpaired halves */
    for (i = 0; i < 50; i++) {
        apo_pair x = init; double a, b, da, db;
        x.policy_chosen += uniform(-50, 50); x.policy_rejected += uniform(-50, 50);
        p = apo_default_params(APO_ZERO);
        L = apo_pair_loss(&p, &x, &gc, &gr);
        a = apo_zero_unpaired_loss(0.1, x.policy_chosen, x.ref_chosen, 1, &da);
        b = apo_zero_unpaired_loss(0.1, x.policy_rejected, x.ref_rejected, 0, &db);
        CHECK(close_to(L, a + b, 1e-15) && gc == da && gr == db, "APO-zero = unpaired(chosen) + unpaired(rejected)");
    }
    printf("behaviour: APO-zero/APO-down/DPO directions at init and over 200 steps, unpaired APO-zero\n");
}

/* ---------------------------------------------------------------------------------------- */
/* 4. NaN and Inf                                                                           */

static void test_nonfinite(void) {
    double bad[3];
    int t, j, k;
    bad[0] = strtod("nan", NULL); bad[1] = strtod("inf", NULL); bad[2] = -bad[1];
    for (t = 0; t < (int)APO_LOSS_COUNT; t++)
        for (j = 0; j < 4; j++)
            for (k = 0; k < 3; k++) {
                apo_params p = apo_default_params((apo_loss_type)t);
                apo_pair x = { -10, -12, -11, -11, 5, 6 };
                double gc = 1, gr = 1, L;
                double *field = j == 0 ? &x.policy_chosen : j == 1 ? &x.policy_rejected : j == 2 ? &x.ref_chosen : &x.ref_rejected;
                *field = bad[k];
                L = apo_pair_loss(&p, &x, &gc, &gr);
                CHECK(L != L && gc == 0 && gr == 0, "%s with a non-finite input: want NaN and zero gradients, got %g %g %g",
                      apo_loss_name((apo_loss_type)t), L, gc, gr);
            }
    {
        apo_pair pairs[4] = { { -10, -12, -11, -11, 5, 6 }, { -10, -12, -11, -11, 5, 6 },
                              { -20, -22, -21, -20, 7, 8 }, { -10, -12, -11, -11, 5, 6 } };
        apo_term term; apo_metrics m; double dc[4], dr[4], total, ref_total, rdc[2], rdr[2];
        apo_pair good[2];
        term.p = apo_default_params(APO_ZERO); term.weight = 1;
        pairs[1].policy_rejected = bad[0];
        pairs[3].ref_chosen = bad[2];
        total = apo_batch_loss(&term, 1, pairs, 4, dc, dr, &m);
        good[0] = pairs[0]; good[1] = pairs[2];
        ref_total = apo_batch_loss(&term, 1, good, 2, rdc, rdr, NULL);
        CHECK(m.n_nonfinite == 2 && m.n_pairs == 2, "batch with 2 NaN/Inf pairs: n_nonfinite %d n_pairs %d", m.n_nonfinite, m.n_pairs);
        CHECK(total == ref_total && dc[0] == rdc[0] && dc[2] == rdc[1] && dr[2] == rdr[1],
              "batch skips the bad pairs and averages over the rest: %g vs %g", total, ref_total);
        CHECK(dc[1] == 0 && dr[1] == 0 && dc[3] == 0 && dr[3] == 0, "skipped pairs get zero gradients");
        CHECK(m.rewards_chosen == m.rewards_chosen && m.logps_rejected == m.logps_rejected, "metrics stay finite");
        total = apo_batch_loss(&term, 1, pairs, 4, dc, dr, NULL);
        CHECK(total != total, "without a metrics struct a skipped pair makes the total NaN (never silent), got %g", total);
    }
    {
        float logits[6] = { 1, 2, 3, 4, 5, 6 }; float d[6] = { 9, 9, 9, 9, 9, 9 };
        int labels[2] = { 0, 3 }; unsigned char mask[2] = { 0, 1 };
        double lp = apo_sequence_logp(logits, 2, 3, labels, mask, d, 1.0);
        CHECK(lp != lp && d[0] == 9, "a label outside [0, V) gives NaN and leaves dlogits untouched, got %g", lp);
        labels[1] = -1;
        lp = apo_sequence_logp(logits, 2, 3, labels, mask, NULL, 0);
        CHECK(lp != lp, "a negative label gives NaN");
        labels[1] = 7; mask[1] = 0;   /* a masked-out label may be anything (padding) */
        lp = apo_sequence_logp(logits, 2, 3, labels, mask, NULL, 0);
        CHECK(lp == 0, "masked-out labels are ignored, got %g", lp);
        CHECK(apo_sequence_logp(logits, 0, 3, labels, mask, NULL, 0) != apo_sequence_logp(logits, 0, 3, labels, mask, NULL, 0),
              "T = 0 gives NaN");
    }
    printf("non-finite: pair, batch and sequence inputs reported\n");
}

/* ---------------------------------------------------------------------------------------- */
/* 5. stability                                                                             */

static void test_stability(void) {
    static const double vals[] = { -1e4, -5e3, -1e3, -100, -3, -1e-3, 0 };
    static const double betas[] = { 1e-3, 0.1, 1, 10, 1e3 };
    int nv = (int)(sizeof vals / sizeof vals[0]), t, a, b, c, d, bi, count = 0;
    for (t = 0; t < (int)APO_LOSS_COUNT; t++)
        for (bi = 0; bi < 5; bi++)
            for (a = 0; a < nv; a++) for (b = 0; b < nv; b++) for (c = 0; c < nv; c++) for (d = 0; d < nv; d++) {
                apo_params p = apo_default_params((apo_loss_type)t);
                apo_pair x;
                double L, gc, gr;
                p.beta = betas[bi];
                x.policy_chosen = vals[a]; x.policy_rejected = vals[b]; x.ref_chosen = vals[c]; x.ref_rejected = vals[d];
                x.n_chosen = 1 + a; x.n_rejected = 1 + d;
                L = apo_pair_loss(&p, &x, &gc, &gr);
                count++;
                if (!(isfinite(L) && isfinite(gc) && isfinite(gr))) {
                    CHECK(0, "%s beta %g at (%g %g %g %g): loss %g grads %g %g not finite", apo_loss_name((apo_loss_type)t),
                          p.beta, vals[a], vals[b], vals[c], vals[d], L, gc, gr);
                    return;
                }
                /* the bounded losses stay in their range even where e^|z| overflows */
                if (t == APO_ZERO || t == APO_DOWN) CHECK(L >= 0 && L <= 2, "APO value %g outside [0, 2]", L);
            }
    {   /* the sequence helper with logits around +-1e4 (inputs of float precision) */
        float logits[8] = { 1e4f, -1e4f, 9999.5f, 0, -3e4f, 3e4f, 2.9999e4f, 1 };
        float d[8]; int labels[2] = { 0, 2 }; unsigned char mask[2] = { 1, 1 }; int i, ok = 1;
        double lp = apo_sequence_logp(logits, 2, 4, labels, mask, d, 1.0);
        for (i = 0; i < 8; i++) ok = ok && isfinite(d[i]);
        CHECK(isfinite(lp) && ok && fabs(lp - (9999.5 - (1e4 + log1p(exp(-0.5))))) < 1e-9, "sequence logp with |logits| 1e4: %.17g", lp);
    }
    printf("stability: %d (loss, beta, input) combinations with |log-probs| up to 1e4 all finite\n", count);
}

/* ---------------------------------------------------------------------------------------- */
/* 6. names, parser, checks                                                                 */

static void test_names_and_parser(void) {
    apo_term terms[8]; apo_params def = apo_default_params(APO_ZERO); char err[512];
    apo_loss_type t; int k, i;
    static const char *names[] = { "apo_zero", "apo_down", "sigmoid", "ipo", "hinge", "robust", "exo_pair",
                                   "nca_pair", "bco_pair", "sppo_hard", "discopop", "sigmoid_norm", "sft" };
    for (i = 0; i < 13; i++) {
        CHECK(apo_loss_from_name(names[i], &t) == 0 && (int)t == i, "apo_loss_from_name(%s)", names[i]);
        CHECK(strcmp(apo_loss_name((apo_loss_type)i), names[i]) == 0, "apo_loss_name(%d)", i);
    }
    CHECK(apo_loss_from_name("apo", &t) == -1 && apo_loss_from_name("apo_zero_", &t) == -1 &&
          apo_loss_from_name("APO_ZERO", &t) == -1 && apo_loss_from_name("", &t) == -1, "unknown names are rejected");
    CHECK(strcmp(apo_loss_name(APO_LOSS_COUNT), "unknown") == 0, "apo_loss_name out of range");

    def.beta = 0.25; def.discopop_tau = 0.07;
    k = apo_parse_loss_list("apo_zero", &def, terms, 8, err, sizeof err);
    CHECK(k == 1 && terms[0].p.type == APO_ZERO && terms[0].weight == 1 && terms[0].p.beta == 0.25, "parse 'apo_zero': %d %s", k, err);
    k = apo_parse_loss_list("apo_zero:1,sft:0.1", &def, terms, 8, err, sizeof err);
    CHECK(k == 2 && terms[1].p.type == APO_SFT && terms[1].weight == 0.1 && terms[1].p.discopop_tau == 0.07,
          "parse 'apo_zero:1,sft:0.1': %d %s", k, err);
    k = apo_parse_loss_list(" sigmoid : 2.5e-1 , discopop:1E1,ipo ", &def, terms, 8, err, sizeof err);
    CHECK(k == 3 && terms[0].weight == 0.25 && terms[1].weight == 10 && terms[2].p.type == APO_IPO && terms[2].weight == 1,
          "parse with spaces and exponents: %d %s", k, err);
    k = apo_parse_loss_list("sigmoid", NULL, terms, 8, err, sizeof err);
    CHECK(k == 1 && terms[0].p.beta == 0.1, "NULL defaults mean TRL's defaults");

    {   /* each bad spec fails and the message names the bad part */
        static const char *bad[][2] = {
            { "apo_zeroo", "apo_zeroo" }, { "apo_zero:x", "'x'" }, { "apo_zero:-1", "'-1'" }, { "apo_zero,", "empty" },
            { "", "empty" }, { "apo_zero:1,,sft", "item 2" }, { "sft:1e400", "1e400" }, { "sft:0.1.2", "0.1.2" },
            { "a,b,c,d,e,f,g,h,i", "'a'" }, { "sft:", "''" }, { "dpo", "known: apo_zero" } };
        for (i = 0; i < (int)(sizeof bad / sizeof bad[0]); i++) {
            k = apo_parse_loss_list(bad[i][0], &def, terms, 8, err, sizeof err);
            CHECK(k == -1 && strstr(err, bad[i][1]) != NULL, "bad spec '%s': got %d, message '%s' should mention %s",
                  bad[i][0], k, err, bad[i][1]);
        }
        {   /* hyper-parameters are checked per term, and the message names the loss */
            apo_params d2 = def; d2.label_smoothing = 0.7;
            k = apo_parse_loss_list("sft:1,robust", &d2, terms, 8, err, sizeof err);
            CHECK(k == -1 && strstr(err, "'sft'") && strstr(err, "label_smoothing"), "bad defaults: %s", err);
            d2 = def; d2.beta = -1;
            k = apo_parse_loss_list("apo_zero", &d2, terms, 8, err, sizeof err);
            CHECK(k == -1 && strstr(err, "'apo_zero'") && strstr(err, "beta"), "negative beta: %s", err);
        }
        k = apo_parse_loss_list("sft,sft,sft", &def, terms, 2, err, sizeof err);
        CHECK(k == -1 && strstr(err, "at most 2"), "too many terms: %s", err);
        k = apo_parse_loss_list("nope", &def, terms, 2, err, 8);   /* a short buffer is truncated, terminated */
        CHECK(k == -1 && strlen(err) == 7, "truncated message '%s'", err);
    }

    {   /* parameter checks */
        apo_params p = apo_default_params(APO_ROBUST);
        CHECK(apo_params_check(&p) == NULL, "defaults are valid");
        p.beta = 0; CHECK(apo_params_check(&p) && strstr(apo_params_check(&p), "beta"), "beta 0 rejected");
        p.beta = 0.1; p.label_smoothing = 0.5; CHECK(apo_params_check(&p) && strstr(apo_params_check(&p), "label_smoothing"), "eps 0.5 rejected");
        p = apo_default_params(APO_DISCOPOP); p.discopop_tau = 0; CHECK(apo_params_check(&p) != NULL, "tau 0 rejected");
    }
    {   /* running mean (bco_pair's old delta) */
        apo_running_mean r = { 0, 0 };
        apo_running_mean_update(&r, 1); apo_running_mean_update(&r, 2);
        CHECK(apo_running_mean_update(&r, 6) == 3 && r.count == 3, "running mean of 1,2,6 is 3");
    }
    printf("names and parser: 13 names, good and bad specs, parameter checks\n");
}

/* The batch API's structure, independent of the table: weights, sft token mean, 1/n. */
static void test_batch_structure(void) {
    apo_pair pairs[3] = { { -10, -12, -11, -11, 5, 6 }, { -20, -30, -25, -26, 15, 2 }, { 0, -8, 0, -8, 0, 1 } };
    apo_term terms[2]; apo_metrics m; double dc[3], dr[3], total, gc, gr, want = 0;
    int i;
    terms[0].p = apo_default_params(APO_DOWN); terms[0].weight = 0.7;
    terms[1].p = apo_default_params(APO_SFT); terms[1].weight = 0.3;
    total = apo_batch_loss(terms, 2, pairs, 3, dc, dr, &m);
    for (i = 0; i < 3; i++) want += 0.7 * apo_pair_loss(&terms[0].p, &pairs[i], NULL, NULL) / 3;
    /* sft: TRL's token mean over the batch; the empty chosen answer (0 tokens, log-prob 0)
     * adds nothing to either sum */
    want += 0.3 * (10.0 + 20.0 + 0.0) / (5 + 15 + 0);
    CHECK(close_to(total, want, 1e-15), "weighted batch total %.17g want %.17g", total, want);
    for (i = 0; i < 3; i++) {
        apo_pair_loss(&terms[0].p, &pairs[i], &gc, &gr);
        CHECK(close_to(dc[i], 0.7 * gc / 3 - 0.3 / 20.0, 1e-15) && close_to(dr[i], 0.7 * gr / 3, 1e-15),
              "batch gradient of pair %d includes weight and 1/n", i);
    }
    CHECK(m.rewards_accuracies == 2.0 / 3.0, "accuracies: pairs 0 and 1 have r_w > r_l, pair 2 ties (strict): %g", m.rewards_accuracies);
    total = apo_batch_loss(terms, 2, pairs, 0, NULL, NULL, &m);
    CHECK(total == 0 && m.n_pairs == 0, "empty batch is 0 with n_pairs 0");
}

/* ---------------------------------------------------------------------------------------- */
/* 7. micro-batches (gradient accumulation)                                                 */

#define MB_MAX 40

/* A random weighted loss list. Lists 0..12 are each loss type alone (sft included), the rest
 * 2-4 random types with random weights and their own hyper-parameters; every fourth of those
 * gets an sft term, so the token mean is mixed with pairwise means. Returns the count. */
static int random_terms(int which, apo_term *terms) {
    int k, count = which < (int)APO_LOSS_COUNT ? 1 : 2 + (int)(urand() * 3);
    for (k = 0; k < count; k++) {
        apo_loss_type t = which < (int)APO_LOSS_COUNT ? (apo_loss_type)which
                        : (apo_loss_type)(int)(urand() * APO_LOSS_COUNT);
        if (which >= (int)APO_LOSS_COUNT && which % 4 == 0 && k == count - 1) t = APO_SFT;
        terms[k].p = apo_default_params(t);
        terms[k].p.beta = uniform(0.02, 2.0);
        if (t == APO_ROBUST || t == APO_SIGMOID || t == APO_EXO_PAIR) terms[k].p.label_smoothing = uniform(0, 0.4);
        if (t == APO_DISCOPOP) terms[k].p.discopop_tau = uniform(0.03, 0.8);
        if (t == APO_BCO_PAIR) terms[k].p.bco_delta = uniform(-0.5, 0.5);
        terms[k].weight = which < (int)APO_LOSS_COUNT ? 1.0 : uniform(0, 2);
    }
    return count;
}

/* Random pairs; token counts from 0 to 300, a fifth of the chosen ones empty (0 tokens). */
static void random_pairs(apo_pair *pairs, int n) {
    int i;
    for (i = 0; i < n; i++) {
        apo_pair *x = &pairs[i];
        x->ref_chosen = -uniform(0, 300); x->ref_rejected = -uniform(0, 300);
        x->policy_chosen = x->ref_chosen + uniform(-20, 20);
        x->policy_rejected = x->ref_rejected + uniform(-20, 20);
        x->n_chosen = urand() < 0.2 ? 0 : (int)(urand() * 301);
        x->n_rejected = urand() < 0.2 ? 0 : (int)(urand() * 301);
    }
}

static apo_batch_totals totals_of(const apo_pair *pairs, int n) {
    apo_batch_totals t;
    int i;
    t.n_pairs = n;
    t.chosen_tokens = 0;
    for (i = 0; i < n; i++) t.chosen_tokens += pairs[i].n_chosen > 0 ? pairs[i].n_chosen : 0;
    return t;
}

/* Runs pairs[0..n) as micro-batches of random sizes (1 to what is left); returns the summed
 * shares, writes the gradients and the summed metrics. */
static double run_microbatches(const apo_term *terms, int k, const apo_pair *pairs, int n,
                               const apo_batch_totals *totals, double *dc, double *dr, apo_metrics *acc) {
    double sum = 0;
    int start = 0;
    memset(acc, 0, sizeof *acc);
    while (start < n) {
        int len = 1 + (int)(urand() * (n - start));
        apo_metrics part;
        sum += apo_microbatch_loss(terms, k, pairs + start, len, totals, dc + start, dr + start, &part);
        apo_metrics_add(acc, &part);
        start += len;
    }
    return sum;
}

/* |a - b| <= tol (1 + scale): scale is the sum of the magnitudes that were added up */
static int close_in(double a, double b, double scale, double tol) { return fabs(a - b) <= tol * (1 + scale); }

static void test_microbatch_sums(void) {
    int b, i, k, n_batches = 0, n_micro_pairs = 0;
    double worst = 0;
    for (b = 0; b < 600; b++) {
        apo_term terms[4]; apo_pair pairs[MB_MAX];
        double dc_b[MB_MAX], dr_b[MB_MAX], dc_m[MB_MAX], dr_m[MB_MAX], total_b, total_m;
        double mag_loss = 0, mag_r = 0, mag_lp = 0, beta;
        apo_metrics mb, mm;
        apo_batch_totals totals;
        int nt = random_terms(b % 40, terms), n = 1 + (int)(urand() * MB_MAX), same_grads = 1;
        random_pairs(pairs, n);
        totals = totals_of(pairs, n);
        total_b = apo_batch_loss(terms, nt, pairs, n, dc_b, dr_b, &mb);
        total_m = run_microbatches(terms, nt, pairs, n, &totals, dc_m, dr_m, &mm);
        /* The shares add the same rounded per-pair terms as apo_batch_loss, grouped differently
         * (one partial sum per micro-batch, then the sum of those), and each grouping rounds
         * on its own: the two totals may differ by a few ulps of the MAGNITUDES added (up to
         * ~n ulps; terms of either sign can cancel, so the result itself may be small). 1e-12
         * of the magnitudes is ~4500 ulps: ample for 40 pairs, yet a share divided by the
         * wrong count is off by a factor, far outside. */
        beta = terms[0].p.beta;
        for (i = 0; i < n; i++) {
            for (k = 0; k < nt; k++)
                mag_loss += terms[k].p.type == APO_SFT
                    ? fabs(terms[k].weight * pairs[i].policy_chosen) / (totals.chosen_tokens < 1 ? 1 : totals.chosen_tokens)
                    : fabs(terms[k].weight * apo_pair_loss(&terms[k].p, &pairs[i], NULL, NULL)) / n;
            mag_r += (fabs(beta * (pairs[i].policy_chosen - pairs[i].ref_chosen)) +
                      fabs(beta * (pairs[i].policy_rejected - pairs[i].ref_rejected))) / n;
            mag_lp += (fabs(pairs[i].policy_chosen) + fabs(pairs[i].policy_rejected)) / n;
        }
        CHECK(close_in(total_m, total_b, mag_loss, 1e-12) && close_in(mm.loss, total_b, mag_loss, 1e-12),
              "micro-batches of a batch of %d (%d terms, first %s): summed shares %.17g (metrics %.17g), batch %.17g",
              n, nt, apo_loss_name(terms[0].p.type), total_m, mm.loss, total_b);
        if (fabs(total_m - total_b) / (1 + mag_loss) > worst) worst = fabs(total_m - total_b) / (1 + mag_loss);
        /* each pair's gradient is the same expression with the same denominators: bit-identical */
        for (i = 0; i < n; i++) same_grads &= dc_m[i] == dc_b[i] && dr_m[i] == dr_b[i];
        CHECK(same_grads, "micro-batch gradients differ from apo_batch_loss's (batch of %d, first term %s)",
              n, apo_loss_name(terms[0].p.type));
        CHECK(close_in(mm.rewards_chosen, mb.rewards_chosen, mag_r, 1e-12) &&
              close_in(mm.rewards_rejected, mb.rewards_rejected, mag_r, 1e-12) &&
              close_in(mm.rewards_margins, mb.rewards_margins, mag_r, 1e-12) &&
              close_in(mm.rewards_accuracies, mb.rewards_accuracies, 1, 1e-12) &&
              close_in(mm.logps_chosen, mb.logps_chosen, mag_lp, 1e-12) &&
              close_in(mm.logps_rejected, mb.logps_rejected, mag_lp, 1e-12) &&
              mm.n_pairs == mb.n_pairs && mm.n_pairs == n && mm.n_nonfinite == 0 && mb.n_nonfinite == 0,
              "summed micro-batch metrics %.17g %.17g %.17g %.17g %.17g %.17g %d differ from the batch's %.17g %.17g %.17g %.17g %.17g %.17g %d",
              mm.rewards_chosen, mm.rewards_rejected, mm.rewards_accuracies, mm.rewards_margins, mm.logps_chosen,
              mm.logps_rejected, mm.n_pairs, mb.rewards_chosen, mb.rewards_rejected, mb.rewards_accuracies,
              mb.rewards_margins, mb.logps_chosen, mb.logps_rejected, mb.n_pairs);
        n_batches++; n_micro_pairs += n;
    }
    printf("micro-batches: %d random batches (%d pairs) split at random: shares sum to the batch loss "
           "(worst %.2g of the magnitudes), gradients bit-identical, metrics add up\n", n_batches, n_micro_pairs, worst);
}

/* One pair of a batch of three: its share must use the batch's count and tokens, not its own. */
static void test_microbatch_share(void) {
    apo_pair pairs[3] = { { -10, -14, -11, -11, 5, 6 }, { -20, -30, -25, -26, 15, 2 }, { -3, -8, -4, -8, 7, 1 } };
    apo_batch_totals totals = { 3, 5 + 15 + 7 };
    apo_term terms[2]; apo_metrics m; double dc, dr, gc, gr, L, share, empty;
    terms[0].p = apo_default_params(APO_ZERO); terms[0].weight = 1;
    L = apo_pair_loss(&terms[0].p, &pairs[0], &gc, &gr);
    share = apo_microbatch_loss(terms, 1, pairs, 1, &totals, &dc, &dr, &m);
    CHECK(close_to(share, L / 3, 1e-15) && close_to(dc, gc / 3, 1e-15) && close_to(dr, gr / 3, 1e-15),
          "share of pair 0 in a batch of 3: %.17g, want loss / 3 = %.17g (its own size would give %.17g)", share, L / 3, L);
    CHECK(close_to(m.rewards_chosen, 0.1 * (-10 + 11) / 3, 1e-15) && m.rewards_accuracies == 1.0 / 3 && m.n_pairs == 1,
          "metric shares of pair 0: rewards_chosen %.17g accuracies %.17g n_pairs %d", m.rewards_chosen,
          m.rewards_accuracies, m.n_pairs);
    terms[0].p = apo_default_params(APO_SFT);
    share = apo_microbatch_loss(terms, 1, pairs, 1, &totals, &dc, &dr, NULL);
    CHECK(close_to(share, 10.0 / 27, 1e-15) && close_to(dc, -1.0 / 27, 1e-15) && dr == 0,
          "sft share of pair 0: %.17g (grad %.17g), want -pc / all 27 chosen tokens = %.17g (its own 5 would give %.17g)",
          share, dc, 10.0 / 27, 10.0 / 5);
    empty = apo_microbatch_loss(terms, 1, pairs, 0, &totals, NULL, NULL, &m);
    CHECK(empty == 0 && m.loss == 0 && m.n_pairs == 0 && m.rewards_chosen == 0, "an empty micro-batch has share 0");
    /* totals that cannot hold the micro-batch are reported, not used */
    {
        apo_batch_totals small = { 2, 27 };
        double dc3[3] = { 1, 1, 1 }, dr3[3] = { 1, 1, 1 };
        share = apo_microbatch_loss(terms, 1, pairs, 3, &small, dc3, dr3, &m);
        CHECK(share != share && m.loss != m.loss && m.n_pairs == 0 && dc3[2] == 0 && dr3[2] == 0,
              "totals.n_pairs 2 < 3 pairs: want NaN and zero gradients, got %g", share);
        dc = dr = 1;
        share = apo_microbatch_loss(terms, 1, pairs, 1, NULL, &dc, &dr, NULL);
        CHECK(share != share && dc == 0 && dr == 0, "NULL totals: want NaN and zero gradients, got %g %g %g", share, dc, dr);
    }
}

/* NaN/Inf pairs in micro-batches: zero gradients, counted, and still in the denominators. */
static void test_microbatch_nonfinite(void) {
    int b, i, k;
    double bad = strtod("nan", NULL), inf = strtod("inf", NULL);
    for (b = 0; b < 100; b++) {
        apo_term terms[4]; apo_pair pairs[MB_MAX];
        double dc[MB_MAX], dr[MB_MAX], total, want = 0, mag = 0;
        apo_metrics m; apo_batch_totals totals;
        int nt = random_terms(b % 40, terms), n = 2 + (int)(urand() * (MB_MAX - 1)), n_bad = 0, grads_ok = 1;
        random_pairs(pairs, n);
        totals = totals_of(pairs, n);           /* known before the log-probs: bad pairs count */
        for (i = 0; i < n; i++)
            if (urand() < 0.2 || i == 1) {
                if (i % 2) pairs[i].policy_rejected = bad; else pairs[i].ref_chosen = -inf;
                n_bad++;
            }
        total = run_microbatches(terms, nt, pairs, n, &totals, dc, dr, &m);
        /* what the share promises: finite pairs' terms over the global totals; a bad pair
         * counts as loss 0 (and log-prob 0 for its tokens) */
        for (i = 0; i < n; i++) {
            double gc_want = 0, gr_want = 0;
            int finite = isfinite(pairs[i].policy_rejected) && isfinite(pairs[i].ref_chosen);
            for (k = 0; k < nt && finite; k++) {
                double gc, gr, w = terms[k].weight, tok = totals.chosen_tokens < 1 ? 1 : totals.chosen_tokens;
                if (terms[k].p.type == APO_SFT) {
                    want += w * (-pairs[i].policy_chosen / tok); gc_want += w * (-1.0 / tok);
                    mag += fabs(w * pairs[i].policy_chosen / tok);
                } else {
                    double L = apo_pair_loss(&terms[k].p, &pairs[i], &gc, &gr);
                    want += w * L / n; gc_want += w * gc / n; gr_want += w * gr / n;
                    mag += fabs(w * L / n);
                }
            }
            grads_ok &= dc[i] == gc_want && dr[i] == gr_want;
        }
        CHECK(close_in(total, want, mag, 1e-12) && m.n_nonfinite == n_bad && m.n_pairs == n - n_bad && grads_ok,
              "micro-batches with %d of %d pairs non-finite: total %.17g want %.17g, counts %d %d, gradients %s",
              n_bad, n, total, want, m.n_pairs, m.n_nonfinite, grads_ok ? "ok" : "differ");
    }
    {   /* without metrics a non-finite pair makes the share NaN (never silent); others stay finite */
        apo_pair pairs[4] = { { -10, -12, -11, -11, 5, 6 }, { -10, -12, -11, -11, 5, 6 },
                              { -20, -22, -21, -20, 7, 8 }, { -10, -12, -11, -11, 5, 6 } };
        apo_term term; apo_batch_totals totals = { 4, 23 }; double dc[4], dr[4], s0, s1;
        term.p = apo_default_params(APO_DOWN); term.weight = 1;
        pairs[3].policy_chosen = bad;
        s0 = apo_microbatch_loss(&term, 1, pairs, 2, &totals, dc, dr, NULL);
        s1 = apo_microbatch_loss(&term, 1, pairs + 2, 2, &totals, dc + 2, dr + 2, NULL);
        CHECK(isfinite(s0) && s1 != s1 && dc[3] == 0 && dr[3] == 0 && dc[2] != 0,
              "micro-batch with a NaN pair and no metrics: want a finite share, then NaN: %g %g", s0, s1);
    }
    printf("micro-batches with non-finite pairs: zero gradients, counted, share over the global totals\n");
}

/* A batch mean is its sum divided once: n equal values give that value exactly, for every n
 * (sum * (1/n), or adding n shares of 1/n, gives 0.9999999999999999 for n = 10, 49, ...). At the
 * reference APO-zero's loss is 1 for every pair and every pair with r_w > r_l counts 1. */
static void test_exact_means(void) {
    apo_term t[2];
    apo_pair pairs[128];
    apo_metrics m;
    int n, i, bad = 0;
    t[0].p = apo_default_params(APO_ZERO);
    t[0].weight = 1;
    t[1].p = apo_default_params(APO_SFT);
    t[1].weight = 1;
    for (n = 1; n <= 128; n++) {
        double total;
        for (i = 0; i < n; i++) {
            pairs[i].policy_chosen = pairs[i].ref_chosen = -3.5;   /* sums of these are exact */
            pairs[i].policy_rejected = pairs[i].ref_rejected = -7.25;
            pairs[i].n_chosen = pairs[i].n_rejected = 3;
        }
        total = apo_batch_loss(t, 1, pairs, n, NULL, NULL, &m);
        if (total != 1.0 || m.loss != 1.0 || m.rewards_accuracies != 0.0 || m.logps_chosen != -3.5) bad++;
        for (i = 0; i < n; i++) pairs[i].policy_chosen = -3.0;   /* now r_w > r_l: accuracy 1 */
        apo_batch_loss(t, 1, pairs, n, NULL, NULL, &m);
        if (m.rewards_accuracies != 1.0 || m.logps_chosen != -3.0 || m.logps_rejected != -7.25) bad++;
        /* sft's token mean: n pairs of 3 tokens and log-prob -3 give exactly 1 per token */
        total = apo_batch_loss(t + 1, 1, pairs, n, NULL, NULL, &m);
        if (total != 1.0) bad++;
    }
    CHECK(bad == 0, "batch means of equal values are exact for every n in 1..128 (%d cases off)", bad);
}

int main(int argc, char **argv) {
    const char *ref = argc > 1 ? argv[1] : "tests/apo/reference.txt";
    test_reference(ref);
    test_finite_differences();
    test_behaviour();
    test_nonfinite();
    test_stability();
    test_names_and_parser();
    test_batch_structure();
    test_microbatch_share();
    test_microbatch_sums();
    test_microbatch_nonfinite();
    test_exact_means();
    printf("%d checks, %d failed\n", n_checks, n_fail);
    return n_fail ? 1 : 0;
}
