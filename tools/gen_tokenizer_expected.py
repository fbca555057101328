#!/usr/bin/env python3
"""Writes tests/tokenizer/expected/*.json: the token ids Hugging Face `tokenizers` / `transformers`
give for our corpus, random strings, a 100 KB word and chat conversations, for every tokenizer the
C test checks. Dev machine only (needs tokenizers + transformers); CI reads the committed files.

    python3 tools/fetch_tokenizers.py              # third-party vocab files into .cache/
    python3 tools/gen_tokenizer_expected.py        # expected ids (all tokenizers found)
    python3 tools/gen_tokenizer_expected.py --make-tiny   # also retrain our tiny tokenizers
    python3 tools/gen_tokenizer_expected.py --fuzz N      # cross-check the C tokenizer (build/tok_cli)
                                                          # against HF on N more random strings

Each expected file: {"name", "dir" (relative to the repo), "cases": [{"hex": text as hex,
"special": 0|1, "ids": [...] or null (invalid UTF-8: HF cannot take it), "decoded": hex of HF's
decode(ids) or null, "roundtrip": 0|1}], "long_word": {"len", "n_ids", "fnv"}, "chat": [...]}.
special=1 is tokenizers' encode(text, add_special_tokens=False); special=0 the same with
encode_special_tokens=True (special-token text is ordinary text).
"""
import json, os, random, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TDIR = os.path.join(ROOT, "tests", "tokenizer")
CACHE = os.path.join(ROOT, ".cache", "tokenizers")

from tokenizers import Tokenizer  # noqa: E402


def corpus():
    out = []
    for c in json.load(open(os.path.join(TDIR, "corpus.json"), encoding="utf-8")):
        out.append(bytes.fromhex(c["hex"]) if isinstance(c, dict) else c.encode("utf-8"))
    return out


POOL = (list(" \t\n\r\x0b\x0c\x85\xa0\u2000\u3000\u1680\x1c") +
        list("aZ'sStTrReEvVmMlLdD0123456789.,!?-_()[]{}<>|/\\\"#@$%^&*+=~`") +
        ["\u00e9", "\u00df", "\u017f", "\u212a", "\u0130", "\u01c4", "\u03a3", "\u0436", "\u4e2d", "\u6587", "\u30a2",
         "\ud55c", "\U0001f999", "\U0001f600", "\U0001f44d\U0001f3fd", "\u0301", "\u0308", "\u0661", "\u216b", "\u00bd",
         "\u00b2", "\u200b", "\u200d", "\ufeff", "\U0001d538", "\U00010d40", "\u1c89", "\ufb01", "\u00ad",
         "<|eot_id|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>", "<|begin_of_text|>", " the", "ing", "\n\n"])


def random_strings(seed, n):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 4 == 3:   # any code point at all (no surrogates)
            s = "".join(chr(rng.choice([rng.randint(1, 0x7FF), rng.randint(0x800, 0xD7FF), rng.randint(0xE000, 0x10FFFF)]))
                        for _ in range(rng.randint(1, 16)))
        else:
            s = "".join(rng.choice(POOL) for _ in range(rng.randint(1, 40)))
        out.append(s.encode("utf-8"))
    return out


def long_word(n=100_000):
    """The same 100 KB word the C test builds: letters from a 32-bit LCG (x = x*1664525+1013904223)."""
    x, b = 12345, bytearray()
    for _ in range(n):
        x = (x * 1664525 + 1013904223) & 0xFFFFFFFF
        b.append(ord("a") + (x >> 16) % 26)
    return bytes(b)


def fnv_ids(ids):
    h = 1469598103934665603
    for i in ids:
        for k in range(4):
            h ^= (i >> (8 * k)) & 255
            h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def encode(tk, text_bytes, special):
    tk.encode_special_tokens = not special
    return tk.encode(text_bytes.decode("utf-8"), add_special_tokens=False).ids


CONVS = [
    [{"role": "user", "content": "Hello! How are you?"}],
    [{"role": "system", "content": "You are a terse assistant."}, {"role": "user", "content": "Name three primes."}],
    [{"role": "user", "content": "  padded question with spaces  \n"}],
    [{"role": "user", "content": "First question"}, {"role": "assistant", "content": "First answer."},
     {"role": "user", "content": "Follow-up: why?\n\nExplain 12345 in detail \U0001f999."}],
    [{"role": "system", "content": "Sys\nwith newline"}, {"role": "user", "content": "caf\u00e9 \u4e2d\u6587 'quoted' it's"},
     {"role": "assistant", "content": " leading space answer"}, {"role": "user", "content": "ok"}],
    # empty / whitespace-only contents: Llama 2's strip() then reaches into the <</SYS>> text
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " \n "}],
    [{"role": "user", "content": ""}],
]
RESPONSES = ["Sure, here it is.", "  spaced response\n", "2, 3 and 5.\n\nDone \u2705", "Line one\nLine two", "",
             "\n\nleading newlines"]


def chat_cases(hf, family, extra_kwargs=None):
    """prompt = apply_chat_template(msgs, add_generation_prompt=True) tokenized; pair = prompt ids +
    ids of the rest of apply_chat_template(msgs + [assistant]) (tokenized on its own, as TRL does)."""
    kw = dict(extra_kwargs or {})
    out = []
    for ci, msgs in enumerate(CONVS):
        if family == "llama2" and (msgs[-1]["role"] != "user" or any(
                (m["role"] == "user") != (i % 2 == 0) for i, m in enumerate(x for x in msgs if x["role"] != "system"))):
            continue
        resp = RESPONSES[ci % len(RESPONSES)]
        p_text = hf.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False, **kw)
        f_text = hf.apply_chat_template(msgs + [{"role": "assistant", "content": resp}], tokenize=False, **kw)
        assert f_text.startswith(p_text), (family, p_text, f_text)
        p_ids = hf(p_text, add_special_tokens=False)["input_ids"]
        # transformers' own tokenize=True path must agree with tokenizing the text
        direct = hf.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, **kw)
        if isinstance(direct, dict) or hasattr(direct, "keys"):
            direct = direct["input_ids"]
        assert list(direct) == p_ids, (family, "apply_chat_template(tokenize=True) differs")
        r_ids = hf(f_text[len(p_text):], add_special_tokens=False)["input_ids"]
        full_ids = hf(f_text, add_special_tokens=False)["input_ids"]
        out.append({"messages": msgs, "response": resp, "prompt_ids": p_ids, "pair_ids": p_ids + r_ids,
                    "response_start": len(p_ids), "joint_equal": int(full_ids == p_ids + r_ids),
                    "prompt_text": p_text, "full_text": f_text})
    return out


def hf_wrapper(tokjson, config, template):
    from transformers import PreTrainedTokenizerFast
    hf = PreTrainedTokenizerFast(tokenizer_file=tokjson, bos_token=config.get("bos_token"),
                                 eos_token=config.get("eos_token"), clean_up_tokenization_spaces=False)
    hf.chat_template = template
    return hf


def build_expected(name, d, families, seed, reldir):
    tk = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    config = json.load(open(os.path.join(d, "tokenizer_config.json"), encoding="utf-8"))
    for k in ("bos_token", "eos_token"):
        if isinstance(config.get(k), dict):
            config[k] = config[k]["content"]
    cases = []
    texts = [(t, 1) for t in corpus()] + [(t, 0) for t in corpus()] + [(t, 1) for t in random_strings(seed, 300)] + \
            [(t, 0) for t in random_strings(seed + 1, 100)]
    for tb, sp in texts:
        try:
            tb.decode("utf-8")
            valid = True
        except UnicodeDecodeError:
            valid = False
        c = {"hex": tb.hex(), "special": sp, "ids": None, "decoded": None, "roundtrip": 0}
        if valid:
            ids = encode(tk, tb, sp)
            dec = tk.decode(ids, skip_special_tokens=False)
            c["ids"] = ids
            # HF decodes to a str (invalid UTF-8 becomes U+FFFD): comparable when no U+FFFD appears
            c["decoded"] = dec.encode("utf-8").hex() if "\ufffd" not in dec else None
            c["roundtrip"] = int(dec.encode("utf-8") == tb)
        else:
            # not HF-comparable; the C tokenizer must still round-trip when every byte is in the vocab
            c["roundtrip"] = 1 if name not in ("smollm2",) else 0
        cases.append(c)
    lw = long_word()
    lids = encode(tk, lw, 1)
    out = {"name": name, "dir": reldir, "cases": cases,
           "long_word": {"len": len(lw), "n_ids": len(lids), "fnv": fnv_ids(lids)}, "chat": []}
    for fam, template, kw in families:
        hf = hf_wrapper(os.path.join(d, "tokenizer.json"), config, template)
        for cc in chat_cases(hf, fam, kw):
            cc["family"] = fam
            out["chat"].append(cc)
    path = os.path.join(TDIR, "expected", name + ".json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=True, separators=(",", ":"))
    os.replace(path + ".tmp", path)
    print("wrote %s: %d cases, %d chat, long word %d ids" % (path, len(cases), len(out["chat"]), len(lids)))


def read(p):
    return open(p, encoding="utf-8").read()


# ---- our tiny tokenizers (trained here on our own text, committed) ----
def tiny_training_text():
    parts = []
    for rel in ["README.md", "docs/design.md", "clair.h", "apo.h", "llama/tokenizer.c", "tools/fetch_tokenizers.py"]:
        p = os.path.join(ROOT, rel)
        if os.path.exists(p):
            parts.append(read(p))
    parts += [t.decode("utf-8", "replace") for t in corpus()]
    return parts


def make_tiny():
    from tokenizers import Tokenizer as T, models, trainers, pre_tokenizers, decoders, normalizers, Regex
    text = tiny_training_text()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                "<|im_start|>", "<|im_end|>"]
    llama3_re = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    # 1. Llama 3 style: Split(llama3 regex) + ByteLevel(use_regex=False), ignore_merges, [a, b] merges
    t = T(models.BPE(ignore_merges=True))
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(llama3_re), "isolated"),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(text, trainers.BpeTrainer(vocab_size=800, special_tokens=specials,
                                                    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                    show_progress=False))
    save_tiny("tiny-llama3", t, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                                 "chat_template": read(os.path.join(TDIR, "templates", "llama3.jinja"))}, merges_as_strings=False)
    # 2. SmolLM2 / GPT-2 style: Digits(individual) + ByteLevel(GPT-2 regex), "a b" merges
    t = T(models.BPE())
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(text, trainers.BpeTrainer(vocab_size=700, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                                    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                    show_progress=False))
    save_tiny("tiny-smol", t, {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                               "chat_template": read(os.path.join(TDIR, "templates", "chatml.jinja"))}, merges_as_strings=True)
    # 3. Llama 2 style: legacy U+2581 normalizer, no pre-tokenizer, byte fallback <0xNN>
    t = T(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    t.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    t.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                   decoders.Strip(" ", 1, 0)])
    lines = [ln for p in text for ln in p.split("\n")]
    t.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=900, special_tokens=["<unk>", "<s>", "</s>"] +
                                                     ["<0x%02X>" % b for b in range(256)], show_progress=False))
    js = json.loads(t.to_str())
    # byte tokens are ordinary vocab entries in Llama 2 (ids 3..258), not added tokens
    js["added_tokens"] = [a for a in js["added_tokens"] if not a["content"].startswith("<0x")]
    save_tiny_json("tiny-spm", js, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                                    "chat_template": read(os.path.join(TDIR, "templates", "llama2.jinja"))})


def save_tiny(name, t, config, merges_as_strings):
    js = json.loads(t.to_str())
    if merges_as_strings:
        js["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in js["model"]["merges"]]
    save_tiny_json(name, js, config)


def save_tiny_json(name, js, config):
    d = os.path.join(TDIR, name)
    os.makedirs(d, exist_ok=True)
    json.dump(js, open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False, indent=1)
    json.dump(config, open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8"), ensure_ascii=False, indent=1)
    print("wrote", d)


def fuzz(n):
    cli = os.path.join(ROOT, "build", "tok_cli")
    bad = 0
    for name, d in all_dirs():
        tk = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        for sp in (0, 1):
            strs = random_strings(1000 + sp, n)
            p = subprocess.run([cli, d] + (["--special"] if sp else []), input="\n".join(s.hex() for s in strs) + "\n",
                               capture_output=True, text=True, check=True)
            for s, o in zip(strs, p.stdout.split("\n")):
                if [int(x) for x in o.split()] != encode(tk, s, sp):
                    bad += 1
                    if bad < 10:
                        print("MISMATCH", name, sp, repr(s.decode()))
            print("fuzz %s special=%d: %d strings" % (name, sp, n))
    bad += fuzz_chat(n // 10)
    print("fuzz mismatches:", bad)
    return 1 if bad else 0


def fuzz_chat(n):
    """Random conversations (contents without special-token text, which HF's apply_chat_template
    would turn into control tokens and we on purpose do not) vs apply_chat_template."""
    cli = os.path.join(ROOT, "build", "tok_cli")
    bad = 0
    plain = [p for p in POOL if "<" not in p]
    for name, d, fam, template, kw in chat_setups():
        cfg = json.load(open(os.path.join(d, "tokenizer_config.json"), encoding="utf-8"))
        hf = hf_wrapper(os.path.join(d, "tokenizer.json"), cfg, template)
        rng = random.Random(7)
        convs = []
        for _ in range(n):
            k = rng.randint(1, 3)
            roles = (["system"] if rng.random() < 0.5 else []) + ["user", "assistant"] * k
            roles = roles[:-1]   # ends with a user turn
            msgs = [{"role": r, "content": "".join(rng.choice(plain) for _ in range(rng.randint(0, 20)))} for r in roles]
            convs.append({"messages": msgs, "response": "".join(rng.choice(plain) for _ in range(rng.randint(0, 20)))})
        p = subprocess.run([cli, d, "--chat", fam], input="\n".join(json.dumps(c) for c in convs) + "\n",
                           capture_output=True, text=True, check=True)
        for c, o in zip(convs, p.stdout.split("\n")):
            try:
                pt = hf.apply_chat_template(c["messages"], add_generation_prompt=True, tokenize=False, **kw)
                ft = hf.apply_chat_template(c["messages"] + [{"role": "assistant", "content": c["response"]}],
                                            tokenize=False, **kw)
            except Exception as e:   # e.g. the template refuses the conversation
                if not o.startswith("ERR"):
                    bad += 1
                    print("HF refused, we did not:", name, fam, e)
                continue
            pi = hf(pt, add_special_tokens=False)["input_ids"]
            ri = hf(ft[len(pt):], add_special_tokens=False)["input_ids"]
            want = " ".join(map(str, pi)) + " |" + "".join(" %d" % i for i in pi + ri)
            if o.strip() != want.strip():
                bad += 1
                if bad < 5:
                    print("CHAT MISMATCH", name, fam, json.dumps(c)[:300])
        print("fuzz chat %s %s: %d conversations" % (name, fam, n))
    return bad


def chat_setups():
    l3 = read(os.path.join(TDIR, "templates", "llama3.jinja"))
    l2 = read(os.path.join(TDIR, "templates", "llama2.jinja"))
    cm = read(os.path.join(TDIR, "templates", "chatml.jinja"))
    out = [("tiny-llama3", os.path.join(TDIR, "tiny-llama3"), "llama3", l3, {}),
           ("tiny-smol", os.path.join(TDIR, "tiny-smol"), "chatml", cm, {}),
           ("tiny-spm", os.path.join(TDIR, "tiny-spm"), "llama2", l2, {})]
    if os.path.exists(os.path.join(CACHE, "llama3", "tokenizer.json")):
        d = os.path.join(CACHE, "llama3")
        out += [("llama3", d, "llama3.1", read(os.path.join(CACHE, "templates", "meta-llama-Llama-3.1-8B-Instruct.jinja")), {}),
                ("llama3", d, "llama3.1", read(os.path.join(CACHE, "templates", "meta-llama-Llama-3.2-3B-Instruct.jinja")),
                 {"date_string": "26 Jul 2024"})]
    if os.path.exists(os.path.join(CACHE, "smollm2", "tokenizer.json")):
        d = os.path.join(CACHE, "smollm2")
        out += [("smollm2", d, "chatml", json.load(open(os.path.join(d, "tokenizer_config.json")))["chat_template"], {})]
    if os.path.exists(os.path.join(CACHE, "llama-spm", "tokenizer.json")):
        out += [("llama-spm", os.path.join(CACHE, "llama-spm"), "llama2", l2, {})]
    return out


def all_dirs():
    out = [(n, os.path.join(TDIR, n)) for n in ("tiny-llama3", "tiny-smol", "tiny-spm")]
    out += [(n, os.path.join(CACHE, n)) for n in ("llama3", "smollm2", "llama-spm")
            if os.path.exists(os.path.join(CACHE, n, "tokenizer.json"))]
    return out


def main():
    if "--make-tiny" in sys.argv:
        make_tiny()
    if "--fuzz" in sys.argv:
        sys.exit(fuzz(int(sys.argv[sys.argv.index("--fuzz") + 1])))
    l3 = read(os.path.join(TDIR, "templates", "llama3.jinja"))
    l2 = read(os.path.join(TDIR, "templates", "llama2.jinja"))
    cm = read(os.path.join(TDIR, "templates", "chatml.jinja"))
    date = {"date_string": "26 Jul 2024"}
    for name, d in all_dirs():
        rel = os.path.relpath(d, ROOT)
        if name == "tiny-llama3":
            fams = [("llama3", l3, None)]
        elif name == "tiny-smol":
            fams = [("chatml", cm, None)]
        elif name == "tiny-spm":
            fams = [("llama2", l2, None)]
        elif name == "llama3":
            t31 = read(os.path.join(CACHE, "templates", "meta-llama-Llama-3.1-8B-Instruct.jinja"))
            t32 = read(os.path.join(CACHE, "templates", "meta-llama-Llama-3.2-3B-Instruct.jinja"))
            fams = [("llama3.1", t31, None), ("llama3.1", t32, date), ("llama3", l3, None)]
        elif name == "smollm2":
            cfg = json.load(open(os.path.join(d, "tokenizer_config.json"), encoding="utf-8"))
            fams = [("chatml", cfg["chat_template"], None)]
        else:
            fams = [("llama2", l2, None)]
        build_expected(name, d, fams, seed=len(name) * 7919, reldir=rel)


if __name__ == "__main__":
    main()
