#!/usr/bin/env python3
"""Writes tests/apo/reference.txt: reference values for apo.h, computed without our C code.

Dev tool only (CI reads the committed table and needs no Python). Needs torch and mpmath.

For every loss the formula is written once, exactly as TRL's DPOTrainer writes it
(trl/trainer/dpo_trainer.py, loss_type branches; KTOTrainer for apo_zero_unpaired), over an
`ops` namespace, and evaluated twice:
  - with mpmath at 60 significant digits (no overflow, no cancellation): value, and gradients
    by mpmath's high-precision numerical differentiation. These numbers go in the table.
  - with torch float64 and autograd, i.e. what TRL computes. The script checks that the two
    agree wherever torch's result is finite (|a-b| <= 1e-9 (1 + |b|)) and counts the rows where
    TRL's literal formula overflows (discopop's exp(-z) at very negative margins), where only
    the mpmath value is available. So the table is both "what TRL reports" and exact.
Batches (weighted loss lists, TRL's metrics, sft as TRL's token-mean cross-entropy) and
sequence log-probs from logits are computed with torch float64 autograd.

Conventions pinned here (documented in apo.h): exo_pair with label_smoothing 0 uses 1e-3;
bco_pair uses a given delta (0 = TRL 1.x); token counts are clamped to >= 1.

Usage: python3 tools/gen_apo_reference.py > tests/apo/reference.txt
"""
import random
import sys

import mpmath
import torch
import torch.nn.functional as F

mpmath.mp.dps = 60
torch.set_default_dtype(torch.float64)

NAMES = ["apo_zero", "apo_down", "sigmoid", "ipo", "hinge", "robust", "exo_pair", "nca_pair",
         "bco_pair", "sppo_hard", "discopop", "sigmoid_norm", "sft"]


class TorchOps:
    logsigmoid = staticmethod(F.logsigmoid)
    sigmoid = staticmethod(torch.sigmoid)
    exp = staticmethod(torch.exp)
    relu = staticmethod(torch.relu)

    @staticmethod
    def const(x):
        return torch.tensor(float(x))

    @staticmethod
    def log(x):
        return torch.log(torch.tensor(float(x)))

    @staticmethod
    def log1p(x):
        return torch.log1p(torch.tensor(float(x)))


class MpOps:
    @staticmethod
    def sigmoid(x):
        return 1 / (1 + mpmath.exp(-x))

    @staticmethod
    def logsigmoid(x):
        return -mpmath.log1p(mpmath.exp(-x))

    exp = staticmethod(mpmath.exp)

    @staticmethod
    def relu(x):
        return x if x > 0 else mpmath.mpf(0)

    @staticmethod
    def const(x):
        return mpmath.mpf(x)

    @staticmethod
    def log(x):
        return mpmath.log(mpmath.mpf(x))

    @staticmethod
    def log1p(x):
        return mpmath.log1p(mpmath.mpf(x))


def trl_pair_loss(o, name, beta, eps, tau, delta, pc, pr, rc, rr, nc, nr):
    """One pair, TRL's formula for loss_type `name`, written over ops `o`."""
    chosen_logratios = pc - rc
    rejected_logratios = pr - rr
    logits = chosen_logratios - rejected_logratios   # TRL: delta_score / logits
    nc, nr = max(nc, 1), max(nr, 1)                  # TRL: mask.sum().clamp(min=1)
    if name == "sigmoid":   # with cDPO label smoothing, as TRL < 1.0 and facts.md
        return -o.logsigmoid(beta * logits) * (1 - eps) - o.logsigmoid(-beta * logits) * eps
    if name == "hinge":
        return o.relu(1 - beta * logits)
    if name == "ipo":       # TRL divides the summed log-probs by the completion length for ipo
        d = (pc / nc - pr / nr) - (rc / nc - rr / nr)
        return (d - 1 / (2 * beta)) ** 2
    if name == "exo_pair":
        e = eps if eps > 0 else 1e-3
        return (o.sigmoid(beta * logits) * (o.logsigmoid(beta * logits) - o.log1p(-e))
                + o.sigmoid(-beta * logits) * (o.logsigmoid(-beta * logits) - o.log(e)))
    if name == "nca_pair":
        cr, rj = chosen_logratios * beta, rejected_logratios * beta
        return -o.logsigmoid(cr) - 0.5 * o.logsigmoid(-cr) - 0.5 * o.logsigmoid(-rj)
    if name == "robust":
        return (-o.logsigmoid(beta * logits) * (1 - eps) + o.logsigmoid(-beta * logits) * eps) / (1 - 2 * eps)
    if name == "bco_pair":
        return -o.logsigmoid(beta * chosen_logratios - delta) - o.logsigmoid(-(beta * rejected_logratios - delta))
    if name == "sppo_hard":
        a, b = chosen_logratios, rejected_logratios
        return (a - 0.5 / beta) ** 2 + (b + 0.5 / beta) ** 2
    if name == "apo_zero":
        return (1 - o.sigmoid(beta * chosen_logratios)) + o.sigmoid(beta * rejected_logratios)
    if name == "apo_down":
        return o.sigmoid(beta * chosen_logratios) + (1 - o.sigmoid(beta * (chosen_logratios - rejected_logratios)))
    if name == "discopop":
        lg = logits * beta
        mod = o.sigmoid(lg / tau)
        return -o.logsigmoid(lg) * (1 - mod) + o.exp(-lg) * mod
    if name == "sigmoid_norm":
        return -o.logsigmoid(beta * (chosen_logratios / nc - rejected_logratios / nr))
    if name == "sft":       # per pair: token-mean NLL of the chosen completion
        return -pc / nc
    raise ValueError(name)


def mp_value_grad(name, beta, eps, tau, delta, pc, pr, rc, rr, nc, nr):
    args = [mpmath.mpf(v) for v in (pc, pr, rc, rr)]
    f = lambda a, b: trl_pair_loss(MpOps, name, beta, eps, tau, delta, a, b, args[2], args[3], nc, nr)
    val = f(args[0], args[1])
    dc = mpmath.diff(lambda a: f(a, args[1]), args[0])
    dr = mpmath.diff(lambda b: f(args[0], b), args[1])
    return float(val), float(dc), float(dr)


def torch_value_grad(name, beta, eps, tau, delta, pc, pr, rc, rr, nc, nr):
    a = torch.tensor(pc, requires_grad=True)
    b = torch.tensor(pr, requires_grad=True)
    L = trl_pair_loss(TorchOps, name, beta, eps, tau, delta, a, b, torch.tensor(rc), torch.tensor(rr), nc, nr)
    if not torch.is_tensor(L):
        L = torch.as_tensor(L)
    L.backward()
    ga = a.grad.item() if a.grad is not None else 0.0
    gb = b.grad.item() if b.grad is not None else 0.0
    return L.item(), ga, gb


def close(a, b, tol=1e-9):
    return abs(a - b) <= tol * (1 + abs(b))


def param_sets(name):
    """(beta, label_smoothing, discopop_tau, bco_delta) combinations worth covering."""
    base = [(0.1, 0.0, 0.05, 0.0), (0.5, 0.0, 0.05, 0.0)]
    if name == "sigmoid":
        base += [(0.1, 0.1, 0.05, 0.0)]
    if name == "robust":
        base = [(0.1, 0.1, 0.05, 0.0), (0.5, 0.2, 0.05, 0.0)]
    if name == "exo_pair":
        base += [(0.1, 0.1, 0.05, 0.0)]
    if name == "bco_pair":
        base += [(0.1, 0.0, 0.05, 0.05)]
    if name == "discopop":
        base += [(0.1, 0.0, 0.5, 0.0)]
    return base


def g(x):
    return repr(float(x))


def main():
    rng = random.Random(20241108)
    out = sys.stdout
    out.write("# apo.h reference table, written by tools/gen_apo_reference.py (do not edit).\n")
    out.write("# pair type beta label_smoothing tau bco_delta pc pr rc rr nc nr | loss dloss/dpc dloss/dpr\n")
    n_rows = n_torch_overflow = 0
    for name in NAMES:
        for (beta, eps, tau, delta) in param_sets(name):
            points = []
            # at initialisation, where the paper's behaviour claims are made
            points.append((-40.0, -55.0, -40.0, -55.0, 20, 30))
            # realistic: summed log-probs of a few hundred tokens, policy near the reference
            for _ in range(10):
                nc, nr = rng.randint(1, 200), rng.randint(1, 200)
                rc, rr = -rng.uniform(1, 2.0 * nc), -rng.uniform(1, 2.0 * nr)
                pc, pr = rc + rng.gauss(0, 8), rr + rng.gauss(0, 8)
                points.append((pc, pr, rc, rr, nc, nr))
            # extreme: |log-probs| up to 1e4, far from the reference in both directions
            vals = [-1e4, -3e3, -300.0, -25.0, -1.0, 0.0]
            for _ in range(6):
                points.append(tuple(rng.choice(vals) for _ in range(4)) + (rng.randint(0, 3), rng.randint(1, 500)))
            for (pc, pr, rc, rr, nc, nr) in points:
                if name == "hinge" and abs(beta * ((pc - rc) - (pr - rr)) - 1) < 1e-6:
                    continue  # the kink: no derivative to compare
                v, dc, dr = mp_value_grad(name, beta, eps, tau, delta, pc, pr, rc, rr, nc, nr)
                tv, tdc, tdr = torch_value_grad(name, beta, eps, tau, delta, pc, pr, rc, rr, nc, nr)
                finite = all(map(lambda t: abs(t) < float("inf"), (tv, tdc, tdr)))
                if finite:
                    if not (close(tv, v) and close(tdc, dc) and close(tdr, dr)):
                        sys.exit(f"torch and mpmath disagree for {name} at {(beta, eps, tau, delta, pc, pr, rc, rr, nc, nr)}:"
                                 f" torch {(tv, tdc, tdr)} mpmath {(v, dc, dr)}")
                else:
                    n_torch_overflow += 1
                out.write(" ".join(["pair", name] + [g(t) for t in (beta, eps, tau, delta, pc, pr, rc, rr)]
                                   + [str(nc), str(nr)] + [g(t) for t in (v, dc, dr)]) + "\n")
                n_rows += 1

    # unpaired APO-zero (TRL KTOTrainer "apo_zero_unpaired")
    out.write("# unpaired beta policy ref desirable | loss dloss/dpolicy\n")
    for _ in range(12):
        beta = rng.choice([0.1, 0.5, 2.0])
        ref = -rng.uniform(1, 300)
        pol = ref + rng.gauss(0, 10) if rng.random() < 0.8 else rng.choice([-1e4, 0.0])
        des = rng.randint(0, 1)
        p = torch.tensor(pol, requires_grad=True)
        r = beta * (p - ref)
        L = (1 - torch.sigmoid(r)) if des else torch.sigmoid(r)
        L.backward()
        out.write(" ".join(["unpaired", g(beta), g(pol), g(ref), str(des), g(L.item()), g(p.grad.item())]) + "\n")

    # batches: TRL's loop over loss_type with loss_weights, and its metrics
    out.write("# batch spec beta n, then n lines 'bpair pc pr rc rr nc nr | dtotal/dpc dtotal/dpr', then\n")
    out.write("# bmetrics loss rewards/chosen rewards/rejected rewards/accuracies rewards/margins logps/chosen logps/rejected\n")
    specs = [("apo_zero", 0.1), ("apo_zero:1,sft:0.1", 0.1), ("sigmoid:0.5,apo_down:0.5,sft:1", 0.2),
             ("ipo,sigmoid_norm:2", 0.1), ("nca_pair:1,bco_pair:1,sppo_hard:0.01,discopop:1,exo_pair:1,hinge:1,robust:0", 0.1)]
    for spec, beta in specs:
        n = rng.randint(3, 7)
        rows = []
        for i in range(n):
            nc, nr = rng.randint(1, 120), rng.randint(1, 120)
            rc, rr = -rng.uniform(1, 2.0 * nc), -rng.uniform(1, 2.0 * nr)
            pc, pr = rc + rng.gauss(0, 6), rr + rng.gauss(0, 6)
            if i == 0:
                pc, pr = rc, rr   # rewards tie at 0: tests that accuracies count strict '>'
            rows.append((pc, pr, rc, rr, nc, nr))
        pc = torch.tensor([r[0] for r in rows], requires_grad=True)
        pr = torch.tensor([r[1] for r in rows], requires_grad=True)
        rc = torch.tensor([r[2] for r in rows])
        rr = torch.tensor([r[3] for r in rows])
        nc = torch.tensor([float(max(r[4], 1)) for r in rows])
        nc_raw = torch.tensor([float(r[4]) for r in rows])
        nr = torch.tensor([float(max(r[5], 1)) for r in rows])
        total = torch.tensor(0.0)
        for item in spec.split(","):
            nm, _, w = item.partition(":")
            w = float(w) if w else 1.0
            if nm == "sft":   # TRL: F.cross_entropy over all chosen completion tokens of the batch
                per_seq = (-pc.sum() / nc_raw.sum()).expand(n)
            else:
                per_seq = torch.stack([trl_pair_loss(TorchOps, nm, beta, 0.0, 0.05, 0.0, pc[i], pr[i], rc[i], rr[i],
                                                     int(nc[i]), int(nr[i])) for i in range(n)])
            total = total + per_seq.mean() * w
        total.backward()
        crw = beta * (pc - rc).detach()
        rrw = beta * (pr - rr).detach()
        out.write(f"batch {spec} {g(beta)} {n}\n")
        for i, r in enumerate(rows):
            out.write(" ".join(["bpair"] + [g(t) for t in r[:4]] + [str(r[4]), str(r[5])]
                               + [g(pc.grad[i].item()), g(pr.grad[i].item())]) + "\n")
        out.write(" ".join(["bmetrics"] + [g(t) for t in (
            total.item(), crw.mean().item(), rrw.mean().item(), (crw > rrw).double().mean().item(),
            (crw - rrw).mean().item(), pc.mean().item(), pr.mean().item())]) + "\n")

    # sequences: summed completion log-prob from logits (TRL: shift by one, mask, sum), dlogits
    out.write("# seq T V scale, then T lines 'seqrow label mask logits[V]', then 'seqlogp v', then T lines 'seqgrad g[V]'\n")
    for (T, V, big) in [(5, 7, 0.0), (9, 33, 0.0), (6, 11, 1e4), (4, 3, 0.0)]:
        gen = torch.Generator().manual_seed(T * 100 + V)
        logits32 = (torch.randn(T, V, generator=gen, dtype=torch.float32) * 3)
        if big:
            logits32 = logits32 + big * torch.sign(torch.randn(T, V, generator=gen, dtype=torch.float32))
        labels = torch.randint(0, V, (T,), generator=gen)
        mask = torch.zeros(T, dtype=torch.long)
        mask[T // 3:] = 1          # prompt first, completion after
        if T > 5:
            mask[-1] = 0           # padding at the end
        scale = -0.37
        lg = logits32.double().clone().requires_grad_(True)
        per_tok = torch.log_softmax(lg[:-1], -1).gather(1, labels[1:].unsqueeze(1)).squeeze(1)
        logp = (per_tok * mask[1:].double()).sum()
        (scale * logp).backward()
        out.write(f"seq {T} {V} {g(scale)}\n")
        for t in range(T):
            out.write(" ".join(["seqrow", str(labels[t].item()), str(mask[t].item())]
                               + [g(v) for v in logits32[t].tolist()]) + "\n")
        out.write(f"seqlogp {g(logp.item())}\n")
        for t in range(T):
            out.write(" ".join(["seqgrad"] + [g(v) for v in lg.grad[t].tolist()]) + "\n")
    out.write(f"# {n_rows} pair rows; {n_torch_overflow} where TRL's literal float64 formula overflows (mpmath only)\n")
    print(f"wrote {n_rows} pair rows ({n_torch_overflow} torch-overflow rows)", file=sys.stderr)


if __name__ == "__main__":
    main()
