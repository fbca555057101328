#!/usr/bin/env python3
"""Encode throughput: our C tokenizer vs Hugging Face `tokenizers` (one thread) vs `tiktoken`,
same text, same run. Dev machine only (needs tokenizers, tiktoken, the fetched Llama 3 vocab).

    ./build.sh && python3 tools/fetch_tokenizers.py && nice python3 bench/tokenizer_bench.py

Text: ~4 MB mixing English prose and code (Python's standard library sources: docstrings and
code), this repository's docs, and multilingual / emoji lines from tests/tokenizer/corpus.json.
All three encode the whole text as one string, without special tokens; best of REPS runs.
The C ids are checked equal to tokenizers' ids first.
"""
import base64, glob, json, os, subprocess, sys, sysconfig, time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPS = 5


def bench_text(target=4_000_000):
    parts = []
    std = sysconfig.get_paths()["stdlib"]
    for pat in ("email/*.py", "json/*.py", "http/*.py", "unittest/*.py", "asyncio/*.py", "*.py"):
        for p in sorted(glob.glob(os.path.join(std, pat))):
            parts.append(open(p, encoding="utf-8", errors="replace").read())
            if sum(map(len, parts)) > target * 0.8:
                break
    multi = [c for c in json.load(open(os.path.join(ROOT, "tests/tokenizer/corpus.json"))) if isinstance(c, str)]
    for md in glob.glob(os.path.join(ROOT, "docs/*.md")) + [os.path.join(ROOT, "README.md")]:
        parts.append(open(md, encoding="utf-8").read())
    text = "\n".join(parts)
    extra = "\n".join(multi)
    while len(text.encode()) < target:
        text += "\n" + extra
    return text


def main():
    d = os.path.join(ROOT, ".cache/tokenizers/llama3")
    text = bench_text()
    data = text.encode("utf-8")
    path = os.path.join(ROOT, "build", "bench_text.txt")
    open(path, "wb").write(data)
    print("text: %d bytes (%d chars)" % (len(data), len(text)))

    ids_path = os.path.join(ROOT, "build", "bench_ids.txt")
    out = subprocess.run([os.path.join(ROOT, "build", "tokenizer_bench"), d, path, str(REPS), ids_path],
                         capture_output=True, text=True, check=True).stdout
    print(out.strip())
    ours = float(out.split()[-2])

    from tokenizers import Tokenizer
    tk = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    tk.encode_special_tokens = True
    best = 1e9
    for _ in range(REPS):
        tk = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))   # fresh word cache each run
        tk.encode_special_tokens = True
        t0 = time.perf_counter()
        hf_ids = tk.encode(text, add_special_tokens=False).ids
        best = min(best, time.perf_counter() - t0)
    hf = len(data) / best / 1e6
    c_ids = [int(x) for x in open(ids_path)]
    assert c_ids == hf_ids, "C ids differ from tokenizers' ids on the benchmark text"
    print("tokenizers %s (1 thread): %d ids, best %.4f s, %.2f MB/s  (ids identical to ours)" %
          (__import__("tokenizers").__version__, len(hf_ids), best, hf))

    import tiktoken
    ranks = {}
    for line in open(_model_path(), "rb"):
        if line.strip():
            tok, r = line.split()
            ranks[base64.b64decode(tok)] = int(r)
    pat = json.load(open(os.path.join(d, "tokenizer.json")))["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
    enc = tiktoken.Encoding("llama3", pat_str=pat, mergeable_ranks=ranks, special_tokens={})
    best = 1e9
    for _ in range(REPS):
        t0 = time.perf_counter()
        tt_ids = enc.encode_ordinary(text)
        best = min(best, time.perf_counter() - t0)
    tt = len(data) / best / 1e6
    print("tiktoken %s: %d ids (%s ours), best %.4f s, %.2f MB/s" %
          (tiktoken.__version__, len(tt_ids), "same as" if tt_ids == c_ids else "differ from", best, tt))
    print("ratio ours/tokenizers = %.2f, ours/tiktoken = %.2f" % (ours / hf, ours / tt))


def _model_path():
    import zipfile
    p = os.path.join(ROOT, ".cache", "llama3_tokenizer.model")
    if not os.path.exists(p):
        with zipfile.ZipFile(os.path.join(ROOT, ".cache", "llama_models-0.3.0-py3-none-any.whl")) as z:
            open(p, "wb").write(z.read("llama_models/llama3/tokenizer.model"))
    return p


if __name__ == "__main__":
    main()
