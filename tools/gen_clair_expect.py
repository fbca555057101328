#!/usr/bin/env python3
"""Writes tests/clair/expect_metrics.jsonl: metric values of text pairs computed by Python's
reference implementations, for test_clair.c to compare against.

  levenshtein  rapidfuzz.distance.Levenshtein.distance(a, b)      (code points)
  edit_ratio   rapidfuzz.distance.Levenshtein.normalized_distance(a, b)
  jaccard      len(set(a.split()) & set(b.split())) / len(set(a.split()) | set(b.split())), 1 if both empty
  token_edits  rapidfuzz.distance.Indel.distance(tokens(a), tokens(b)) with tokens = re.findall(r"\\s+|\\S+")
               (= |A| + |B| - 2 LCS: the length of a shortest insert/delete token script)
  tokens_a/b   len(tokens(.))
  difflib_ratio difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() (informational only)

Run: python3 tools/gen_clair_expect.py  (from any directory; needs rapidfuzz; the output is
committed, so CI needs no Python)
"""
import difflib, json, os, random, re
from rapidfuzz.distance import Levenshtein, Indel

def tokens(s):
    return re.findall(r"\s+|\S+", s)

def jaccard(a, b):
    A, B = set(a.split()), set(b.split())
    return len(A & B) / len(A | B) if (A | B) else 1.0

def record(a, b):
    return {"a": a, "b": b,
            "levenshtein": Levenshtein.distance(a, b),
            "edit_ratio": Levenshtein.normalized_distance(a, b),
            "jaccard": jaccard(a, b),
            "token_edits": Indel.distance(tokens(a), tokens(b)),
            "tokens_a": len(tokens(a)), "tokens_b": len(tokens(b)),
            "difflib_ratio": difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()}

WORDS = ("the a of to and in is it that for on with as was be by this are or at from an which "
         "answer model revision minimal change token river bank mountain cloud number seven "
         "café naïve résumé 東京 大学 数学 Привет мир 😀 🎉 e\u0301 ß ǅ").split()
SPACES = [" ", " ", " ", "\n", "\t", "  ", "\u00a0", "\u3000", "\u2003", "\x1c", "\r\n", "\u2028"]

def rand_text(r, n):
    out = []
    for i in range(n):
        out.append(r.choice(WORDS))
        out.append(r.choice(SPACES))
    return "".join(out).strip(" ")

def mutate(r, s, k):
    t = tokens(s)
    for _ in range(k):
        op = r.randrange(4)
        i = r.randrange(len(t) + 1)
        if op == 0 and t: del t[min(i, len(t) - 1)]
        elif op == 1: t.insert(i, r.choice(WORDS))
        elif op == 2 and t: t[min(i, len(t) - 1)] = r.choice(WORDS)
        else:  # a character-level edit inside a token
            if t:
                j = min(i, len(t) - 1); w = t[j]; p = r.randrange(len(w) + 1)
                t[j] = w[:p] + r.choice("abcxyzé京😀 ") + w[p + 1:]
    return "".join(t)

def main():
    r = random.Random(20241126)
    pairs = [
        ("", ""), ("", "abc"), ("abc", ""), ("kitten", "sitting"), ("flaw", "lawn"),
        ("The capital of France is Paris.", "The capital of France is Paris."),
        ("The capital of France is Lyon.", "The capital of France is Paris."),
        ("Teh cat sat on teh mat.", "The cat sat on the mat."),
        ("2 + 2 = 5, so the answer is 5.", "2 + 2 = 4, so the answer is 4."),
        ("a a a b b", "a b"), ("one two three", "three two one"),
        ("café au lait", "cafe au lait"), ("naïve résumé", "naive resume"),
        ("東京は日本の首都です。", "東京は日本の首都である。"),
        ("I love 😀 emoji 🎉", "I love 🎉 emoji 😀"),
        ("e\u0301 vs é", "é vs e\u0301"),
        ("tab\tseparated\twords", "tab separated words"),
        ("nbsp\u00a0joined", "nbsp joined"), ("ideographic\u3000space", "ideographic space"),
        ("info\x1cseparator", "info separator"), ("line\u2028sep", "line\nsep"),
        ("   leading and trailing   ", "leading and trailing"),
        ("x" * 63, "x" * 64), ("x" * 64, "y" * 64), ("ab" * 40, "ba" * 40), ("a" * 65, "a" * 130),
        ("abc" * 50 + "d", "abc" * 50 + "e"), ("😀" * 70, "😀" * 69 + "🎉"),
    ]
    for i in range(60):
        a = rand_text(r, r.randrange(0, 40))
        pairs.append((a, mutate(r, a, r.randrange(0, 6))))
    for i in range(10):   # unrelated texts
        pairs.append((rand_text(r, r.randrange(5, 60)), rand_text(r, r.randrange(5, 60))))
    for n in (200, 700, 1500):   # long answers, a few edits: multi-block bit vectors
        a = rand_text(r, n)
        pairs.append((a, mutate(r, a, 12)))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = os.path.join(repo, "tests", "clair", "expect_metrics.jsonl")
    with open(out + ".tmp", "w", encoding="utf-8") as f:
        for a, b in pairs:
            f.write(json.dumps(record(a, b), ensure_ascii=True) + "\n")
    os.replace(out + ".tmp", out)
    print("wrote", out, len(pairs), "pairs")

if __name__ == "__main__":
    main()
