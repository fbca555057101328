#!/usr/bin/env python3
"""The study's bookkeeping (Python standard library only): pair sets, their alignment, tables.

    study.py judge-pairs VERDICTS.jsonl OUT      `clair judge` records -> pairs (the judge's pick = chosen)
    study.py sp-pairs STRONG.jsonl TARGET.jsonl OUT   chosen = stronger model's answer, rejected = target's
    study.py align DIR NAME=FILE...              keeps the prompts every set has: same prompts, same size
    study.py check-accounted IN OUT [SIDE...]    every input line is in exactly one output file
    study.py stats-table DIR NAME...             the Table 1 analogue from `clair stats` JSON files
    study.py results RUN                         results.md (+ results.json, results.tsv) of a run
"""
import hashlib
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import task  # noqa: E402

DATASETS = ["clair", "stronger", "onpolicy", "offpolicy"]
DATASET_NAMES = {"clair": "CLAIR", "stronger": "Stronger Preferred", "onpolicy": "On-policy Judge",
                 "offpolicy": "Off-policy Judge"}
OBJECTIVES = ["sft", "sigmoid", "apo_zero", "apo_down"]
OBJECTIVE_NAMES = {"sft": "SFT", "sigmoid": "DPO", "apo_zero": "APO-zero", "apo_down": "APO-down"}


def response_text(x):
    """The assistant text of a side: a string, or the last assistant turn of a conversation."""
    if isinstance(x, list):
        return [m["content"] for m in x if m.get("role") == "assistant"][-1]
    return x


def judge_pairs(verdicts, out):
    """`clair judge` records (each prompt judged in both orders) -> pairs: the answer with the
    higher mean score wins; a tie is broken by a coin seeded by the prompt (no position bias).
    Two identical answers make no pair (there is nothing to prefer, and every pairwise loss of
    apo.h has zero gradient on them); they go to OUT.identical.jsonl, so every prompt is
    accounted for."""
    by = {}
    for r in task.read_jsonl(verdicts):
        k = json.dumps(r["prompt"])
        by.setdefault(k, {"prompt": r["prompt"], "a": r["a"], "b": r["b"], "scores": []})["scores"].append(r["score_a"])
    rows, same = [], []
    for k, v in by.items():
        s = sum(v["scores"]) / len(v["scores"])
        a, b = response_text(v["a"]), response_text(v["b"])
        if a == b:
            same.append({"prompt": v["prompt"], "response": a})
            continue
        a_wins = s > 0.5 if s != 0.5 else hashlib.sha256(k.encode()).digest()[0] & 1 == 0
        win, lose = (a, b) if a_wins else (b, a)
        rows.append({"prompt": v["prompt"], "chosen": win, "rejected": lose, "judge_score_a": s})
    task.write_jsonl(out, rows)
    task.write_jsonl((out[:-len(".jsonl")] if out.endswith(".jsonl") else out) + ".identical.jsonl", same)
    ties = sum(r["judge_score_a"] == 0.5 for r in rows)
    print(f"  {out}: {len(rows)} pairs ({ties} of them judged a tie, broken by a coin); "
          f"{len(same)} prompts with two identical answers, no pair", file=sys.stderr)


def sp_pairs(strong, target, out):
    rs, rt = task.read_jsonl(strong), task.read_jsonl(target)
    by = {json.dumps(r["prompt"]): r["response"] for r in rs}
    task.write_jsonl(out, [{"prompt": r["prompt"], "chosen": by[json.dumps(r["prompt"])], "rejected": r["response"]}
                           for r in rt if json.dumps(r["prompt"]) in by])


def align(d, specs):
    sets = {}
    for s in specs:
        name, path = s.split("=", 1)
        sets[name] = {json.dumps(r["prompt"]): r for r in task.read_jsonl(path)}
    common = set.intersection(*(set(v) for v in sets.values()))
    os.makedirs(d, exist_ok=True)
    for name, rows in sets.items():
        keep = [{"prompt": r["prompt"], "chosen": response_text(r["chosen"]), "rejected": response_text(r["rejected"])}
                for k, r in sorted(rows.items()) if k in common]
        task.write_jsonl(os.path.join(d, name + ".jsonl"), keep)
        print(f"  {name}: {len(rows)} pairs built, {len(keep)} on the prompts every set has", file=sys.stderr)


def check_accounted(inp, outs):
    n_in = len(task.read_jsonl(inp))
    n_out = sum(len(task.read_jsonl(p)) for p in outs if os.path.exists(p))
    if n_in != n_out:
        sys.exit(f"study: {inp}: {n_in} lines in, {n_out} accounted for in {', '.join(outs)}")
    print(f"  {inp}: all {n_in} lines accounted for", file=sys.stderr)


def stats_table(d, names):
    lines = ["| dataset | pairs | Jaccard (mean) | Levenshtein (mean) | edit ratio (mean) |", "|---|---|---|---|---|"]
    for n in names:
        with open(os.path.join(d, f"stats_{n}.json")) as f:
            s = json.load(f)
        get = lambda k: s.get(k, {}).get("mean", float("nan")) if isinstance(s.get(k), dict) else s.get(k, float("nan"))
        lines.append(f"| {DATASET_NAMES.get(n, n)} | {s.get('pairs', s.get('n', '?'))} | {get('jaccard'):.3f} | "
                     f"{get('levenshtein'):.1f} | {get('edit_ratio'):.3f} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(d, "table1.md"), "w") as f:
        f.write(text)
    print(text)


def mean_std(xs):
    if not xs:
        return float("nan"), float("nan")
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def logp_change(metrics_path):
    """Mean over the last 5 steps of rewards/chosen and rewards/rejected: beta x (log p - reference
    log p) of each step's own pairs, i.e. which way each likelihood moved during training."""
    rows = [r for r in task.read_jsonl(metrics_path) if "loss" in r and "rewards/chosen" in r]
    if not rows:
        return None
    tail = rows[-5:]
    return {k: sum(r[k] for r in tail) / len(tail) for k in ("rewards/chosen", "rewards/rejected")}


def results(run):
    with open(os.path.join(run, "eval", "baseline.json")) as f:
        base = json.load(f)
    target, strong = base["target"]["accuracy"], base["stronger"]["accuracy"]
    table, tsv = {}, ["dataset\tobjective\tseeds\tmean\tstd\tgap_closed"]
    for d in DATASETS:
        for o in OBJECTIVES:
            accs = []
            for fn in sorted(os.listdir(os.path.join(run, "eval"))):
                if fn.startswith(f"{d}-{o}-s") and fn.endswith(".grade.json"):
                    with open(os.path.join(run, "eval", fn)) as f:
                        accs.append(json.load(f)["accuracy"])
            m, sd = mean_std(accs)
            gap = (m - target) / (strong - target) if strong > target and accs else float("nan")
            table[(d, o)] = (m, sd, len(accs), gap)
            tsv.append(f"{DATASET_NAMES[d]}\t{OBJECTIVE_NAMES[o]}\t{len(accs)}\t{m:.4f}\t{sd:.4f}\t{gap:.4f}")
    out = [f"Held-out accuracy (greedy, {base['target']['n']} prompts), mean ± std over seeds; "
           f"target {target:.3f}, stronger model {strong:.3f}.", "",
           "| dataset | " + " | ".join(OBJECTIVE_NAMES[o] for o in OBJECTIVES) + " |",
           "|---|" + "---|" * len(OBJECTIVES)]
    for d in DATASETS:
        cells = []
        for o in OBJECTIVES:
            m, sd, n, _ = table[(d, o)]
            cells.append("—" if n == 0 else f"{m:.3f} ± {sd:.3f} (n={n})")
        out.append(f"| {DATASET_NAMES[d]} | " + " | ".join(cells) + " |")
    out += ["", "Share of the target -> stronger-model gap closed (mean accuracy):", "",
            "| dataset | " + " | ".join(OBJECTIVE_NAMES[o] for o in OBJECTIVES) + " |",
            "|---|" + "---|" * len(OBJECTIVES)]
    for d in DATASETS:
        out.append(f"| {DATASET_NAMES[d]} | " + " | ".join(
            "—" if table[(d, o)][2] == 0 else f"{100 * table[(d, o)][3]:+.1f}%" for o in OBJECTIVES) + " |")
    out += ["", "Training dynamics (seed 0): beta x (log p - reference log p) of the chosen and rejected answers, "
            "mean over the last 5 steps (> 0: the likelihood rose):", "",
            "| dataset | objective | chosen | rejected |", "|---|---|---|---|"]
    dyn = {}
    for d in DATASETS:
        for o in OBJECTIVES:
            p = os.path.join(run, "train", f"{d}-{o}-s0", "metrics.jsonl")
            c = logp_change(p) if os.path.exists(p) else None
            if c:
                dyn[f"{d}/{o}"] = c
                out.append(f"| {DATASET_NAMES[d]} | {OBJECTIVE_NAMES[o]} | {c['rewards/chosen']:+.4f} | "
                           f"{c['rewards/rejected']:+.4f} |")
    text = "\n".join(out) + "\n"
    for name, body in (("results.md", text), ("results.tsv", "\n".join(tsv) + "\n")):
        with open(os.path.join(run, name), "w") as f:
            f.write(body)
    with open(os.path.join(run, "results.json"), "w") as f:
        json.dump({"target": target, "stronger": strong, "dynamics": dyn,
                   "cells": {f"{d}/{o}": {"mean": v[0], "std": v[1], "seeds": v[2], "gap_closed": v[3]}
                             for (d, o), v in table.items()}}, f, indent=1)
    print(text)


def main(argv):
    cmds = {"judge-pairs": (lambda a: judge_pairs(*a), 2),
            "sp-pairs": (lambda a: sp_pairs(*a), 3), "results": (lambda a: results(*a), 1)}
    if argv and argv[0] in cmds and len(argv) == cmds[argv[0]][1] + 1:
        cmds[argv[0]][0](argv[1:])
    elif len(argv) >= 3 and argv[0] == "align":
        align(argv[1], argv[2:])
    elif len(argv) >= 3 and argv[0] == "check-accounted":
        check_accounted(argv[1], argv[2:])
    elif len(argv) >= 3 and argv[0] == "stats-table":
        stats_table(argv[1], argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
