#!/usr/bin/env python3
"""Encode throughput: our C tokenizer vs Hugging Face `tokenizers` (one thread) vs `tiktoken`,
same text, same run. Dev machine only (needs tokenizers, tiktoken, the fetched Llama 3 vocab).

    ./build.sh && python3 tools/fetch_tokenizers.py && nice python3 bench/tokenizer_bench.py

Text: ~4 MB mixing English prose and code (Python's standard library sources: docstrings and
code), this repository's docs, and multilingual / emoji lines from tests/tokenizer/corpus.json.
Two modes: the whole text as one string, and the text as ~2 KB documents (split at blank lines)
encoded one by one (tokenizers: encode_batch with RAYON_NUM_THREADS=1, i.e. one thread;
tiktoken: encode_ordinary_batch with num_threads=1). No special tokens; best of REPS runs; each
run starts with an empty word cache. The C ids are checked equal to tokenizers' ids first.
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
    # NUL separates documents in the file given to the C benchmark, so the text has none
    multi = [c.replace("\0", "") for c in json.load(open(os.path.join(ROOT, "tests/tokenizer/corpus.json"))) if isinstance(c, str)]
    for md in glob.glob(os.path.join(ROOT, "docs/*.md")) + [os.path.join(ROOT, "README.md")]:
        parts.append(open(md, encoding="utf-8").read())
    text = "\n".join(parts)
    extra = "\n".join(multi)
    while len(text.encode()) < target:
        text += "\n" + extra
    return text


def documents(text, size=2000):
    docs, cur = [], ""
    for para in text.split("\n\n"):
        cur = cur + "\n\n" + para if cur else para
        if len(cur) >= size:
            docs.append(cur)
            cur = ""
    if cur:
        docs.append(cur)
    return docs


def run_mode(label, docs, d, enc):
    from tokenizers import Tokenizer
    data = b"\0".join(x.encode("utf-8") for x in docs)
    nbytes = len(data) - (len(docs) - 1)
    path = os.path.join(ROOT, "build", "bench_text.txt")
    ids_path = os.path.join(ROOT, "build", "bench_ids.txt")
    open(path, "wb").write(data)
    out = subprocess.run([os.path.join(ROOT, "build", "tokenizer_bench"), d, path, str(REPS), ids_path],
                         capture_output=True, text=True, check=True).stdout
    ours = float(out.split()[-2])
    c_ids = [int(x) for x in open(ids_path)]
    best = 1e9
    for _ in range(REPS):
        tk = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))   # fresh word cache each run
        tk.encode_special_tokens = True
        t0 = time.perf_counter()
        if len(docs) == 1:
            hf_ids = tk.encode(docs[0], add_special_tokens=False).ids
        else:
            hf_ids = [i for e in tk.encode_batch(docs, add_special_tokens=False) for i in e.ids]
        best = min(best, time.perf_counter() - t0)
    hf = nbytes / best / 1e6
    assert c_ids == hf_ids, "C ids differ from tokenizers' ids on the benchmark text"
    best = 1e9
    for _ in range(REPS):
        t0 = time.perf_counter()
        tt_ids = [i for x in enc.encode_ordinary_batch(docs, num_threads=1) for i in x]
        best = min(best, time.perf_counter() - t0)
    tt = nbytes / best / 1e6
    print("| %s | %d | %d | %.2f | %.2f | %.2f | %.1fx | %.1fx | %s |" %
          (label, nbytes, len(docs), ours, hf, tt, ours / hf, ours / tt, "yes" if tt_ids == c_ids else "no"))


def main():
    import tiktoken, tokenizers
    d = os.path.join(ROOT, ".cache/tokenizers/llama3")
    text = bench_text()
    ranks = {}
    for line in open(_model_path(), "rb"):
        if line.strip():
            tok, r = line.split()
            ranks[base64.b64decode(tok)] = int(r)
    pat = json.load(open(os.path.join(d, "tokenizer.json")))["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
    enc = tiktoken.Encoding("llama3", pat_str=pat, mergeable_ranks=ranks, special_tokens={})
    print("Llama 3 tokenizer; tokenizers %s, tiktoken %s; best of %d" % (tokenizers.__version__, tiktoken.__version__, REPS))
    print("| input | bytes | documents | ours MB/s | tokenizers MB/s | tiktoken MB/s | ours/tokenizers | ours/tiktoken | tiktoken ids = ours |")
    print("|---|---|---|---|---|---|---|---|---|")
    run_mode("~2 KB documents", documents(text), d, enc)
    run_mode("one 4 MB string", [text], d, enc)


def _model_path():
    import zipfile
    p = os.path.join(ROOT, ".cache", "llama3_tokenizer.model")
    if not os.path.exists(p):
        with zipfile.ZipFile(os.path.join(ROOT, ".cache", "llama_models-0.3.0-py3-none-any.whl")) as z:
            open(p, "wb").write(z.read("llama_models/llama3/tokenizer.model"))
    return p


if __name__ == "__main__":
    main()
