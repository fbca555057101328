#!/usr/bin/env python3
"""Where do the filter defaults (max edit ratio 0.6, min Jaccard 0.25) sit? Measures the edit
ratio (rapidfuzz normalized Levenshtein) and token-set Jaccard of
  - unrelated English texts cut to the same length (a "revision" that rewrote from scratch),
  - a text against itself with 5-30% of its words replaced, inserted or deleted (revisions).
Texts: docstrings of Python standard-library objects (300-3000 characters), so the script
needs nothing but Python and rapidfuzz.   python3 bench/clair_filter_defaults.py
"""
import importlib, random, statistics, warnings
from rapidfuzz.distance import Levenshtein

warnings.simplefilter("ignore")
MODS = ("os sys json re random collections itertools functools pathlib subprocess threading socket "
        "http.server urllib.request email csv sqlite3 argparse logging unittest difflib textwrap string "
        "decimal fractions statistics datetime calendar heapq bisect array struct zlib gzip tarfile "
        "zipfile shutil tempfile glob fnmatch pickle copy pprint enum dataclasses contextlib abc io time").split()


def jaccard(a, b):
    A, B = set(a.split()), set(b.split())
    return len(A & B) / len(A | B) if A | B else 1.0


def q(v):
    v = sorted(v)
    return "p5 %.2f, median %.2f, p95 %.2f" % (v[len(v) // 20], statistics.median(v), v[-len(v) // 20])


def main():
    docs = []
    for m in MODS:
        mod = importlib.import_module(m)
        for name in dir(mod):
            d = getattr(getattr(mod, name), "__doc__", None)
            if isinstance(d, str) and 300 < len(d) < 3000:
                docs.append(" ".join(d.split()))
    docs = list(dict.fromkeys(docs))
    r = random.Random(1)
    er, jj = [], []
    for _ in range(400):
        a, b = r.sample(docs, 2)
        n = min(len(a), len(b))
        er.append(Levenshtein.normalized_distance(a[:n], b[:n])); jj.append(jaccard(a[:n], b[:n]))
    print("%d texts" % len(docs))
    print("| pair | edit ratio | Jaccard |\n|---|---|---|")
    print("| unrelated, same length | %s | %s |" % (q(er), q(jj)))
    for frac in (0.05, 0.1, 0.2, 0.3):
        er, jj = [], []
        for _ in range(300):
            a = r.choice(docs)
            w = a.split(" ")
            for _ in range(max(1, int(len(w) * frac))):
                i, op = r.randrange(len(w)), r.randrange(3)
                if op == 0: w[i] = r.choice(w)
                elif op == 1: w.insert(i, r.choice(w))
                elif len(w) > 1: del w[i]
            b = " ".join(w)
            er.append(Levenshtein.normalized_distance(a, b)); jj.append(jaccard(a, b))
        print("| %d%% of words edited | %s | %s |" % (100 * frac, q(er), q(jj)))


if __name__ == "__main__":
    main()
