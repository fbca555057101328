#!/usr/bin/env python3
"""Benchmark: clair.h's metrics of one (chosen, rejected) pair against rapidfuzz and difflib,
on answers of 1 KB to 64 KB (English-like words with ~3% of the words edited, as a minimal
revision would), in the same run, on the same files.

    python3 bench/clair_metrics.py          (builds bench/clair_metrics_bench.c with cc -O2)

Columns (seconds per pair, best of repeated runs):
  clair lev      clair_levenshtein (bit-parallel, code points)
  rapidfuzz lev  rapidfuzz.distance.Levenshtein.distance (C++, bit-parallel)
  clair all      clair_metrics_compute: Levenshtein + Jaccard + Myers token diff
  python all     rapidfuzz Levenshtein + set Jaccard + rapidfuzz Indel on tokens (the reference)
  difflib        difflib.SequenceMatcher(None, a, b).ratio() (chars; autojunk on, as users call it)
  difflib tok    difflib.SequenceMatcher on the token lists (a token diff in pure Python; up to 16 KB)
The script checks that clair and rapidfuzz agree on the distance before timing anything.
"""
import difflib, os, platform, random, re, subprocess, sys, tempfile, time
from rapidfuzz.distance import Levenshtein, Indel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which "
         "but have an they you were her she there been one all we their has would when if so no "
         "model answer revision minimal token distance river mountain function variable result "
         "however therefore because example important consider").split()


def text(r, nbytes):
    out, n = [], 0
    while n < nbytes:
        w = r.choice(WORDS)
        if r.random() < 0.08:
            w = w.capitalize() + r.choice(",.;")
        out.append(w)
        n += len(w) + 1
    return " ".join(out)[:nbytes]


def revise(r, s, frac=0.03):
    ws = s.split(" ")
    for _ in range(max(1, int(len(ws) * frac))):
        i = r.randrange(len(ws))
        op = r.randrange(3)
        if op == 0: ws[i] = r.choice(WORDS)
        elif op == 1: ws.insert(i, r.choice(WORDS))
        else: del ws[i]
    return " ".join(ws)


def best(f, budget=0.3, min_runs=3):
    times, t0 = [], time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - t0 < budget and len(times) < 1000):
        s = time.perf_counter(); f(); times.append(time.perf_counter() - s)
    return min(times)


def main():
    exe = os.path.join(tempfile.gettempdir(), "clair_metrics_bench")
    subprocess.check_call(["cc", "-O2", "-std=c99", os.path.join(ROOT, "bench", "clair_metrics_bench.c"), "-o", exe, "-lm"])
    r = random.Random(7)
    print("machine: %s, %s; python %s" % (platform.processor() or platform.machine(), os.cpu_count(), platform.python_version()))
    print("| size | clair lev | rapidfuzz lev | ratio | clair all | python all | ratio | difflib | difflib tok |")
    print("|---|---|---|---|---|---|---|---|---|")
    tmp = tempfile.mkdtemp()
    # minimal revisions (the CLAIR case), then unrelated texts (the worst case for clair's
    # banded Levenshtein, which must widen its band to the full matrix)
    for kb, related in ((1, True), (4, True), (16, True), (64, True), (16, False), (64, False)):
        a = text(r, kb * 1024)
        b = revise(r, a) if related else text(r, kb * 1024)
        pa, pb = os.path.join(tmp, "a.txt"), os.path.join(tmp, "b.txt")
        open(pa, "w").write(a); open(pb, "w").write(b)
        out = subprocess.check_output([exe, pa, pb]).split()
        cl, cm, cd, dist = float(out[0]), float(out[1]), float(out[2]), int(out[3])
        want = Levenshtein.distance(a, b)
        assert dist == want, (kb, dist, want)
        ta, tb = re.findall(r"\s+|\S+", a), re.findall(r"\s+|\S+", b)
        assert int(out[4]) == Indel.distance(ta, tb)
        rl = best(lambda: Levenshtein.distance(a, b))
        def allpy():
            Levenshtein.distance(a, b)
            A, B = set(a.split()), set(b.split()); len(A & B) / len(A | B)
            Indel.distance(re.findall(r"\s+|\S+", a), re.findall(r"\s+|\S+", b))
        ra = best(allpy)
        dl = best(lambda: difflib.SequenceMatcher(None, a, b).ratio(), budget=0.5, min_runs=1) if related or kb <= 16 else float("nan")
        # difflib on tokens is quadratic in practice here (77 s at 64 KB): timed up to 16 KB only
        dt = best(lambda: difflib.SequenceMatcher(None, ta, tb).ratio(), budget=0.5, min_runs=1) if kb <= 16 and related else float("nan")
        print("| %d KB%s | %.3g ms | %.3g ms | %.2fx | %.3g ms | %.3g ms | %.2fx | %.3g ms | %.3g ms |" % (
            kb, "" if related else " unrelated", cl * 1e3, rl * 1e3, rl / cl, cm * 1e3, ra * 1e3, ra / cm, dl * 1e3, dt * 1e3))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
