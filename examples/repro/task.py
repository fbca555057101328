#!/usr/bin/env python3
"""The study's task family: unit conversions with worked steps (Python standard library only).

A prompt asks to convert a quantity between two metric units ("Convert 47 m to cm."). An answer
is a short chain of steps: the conversion factor, the multiplication, the result, e.g.

    1 m = 100 cm. So 47 m = 47 x 100 cm = 4700 cm. Answer: 4700 cm

Why this family (docs/repro.md has the longer argument):
  - exact grading: the final answer is the last "<number> <unit>" of the text; it is right when
    the number is quantity x factor and the unit is the asked one; every step can be checked too;
  - characteristic, fixable mistakes: a student that believes a wrong factor for some unit pairs
    ("1 m = 1000 cm"), or drops a zero when multiplying, is wrong in two or three numbers that a
    minimal revision changes while copying the rest;
  - different but equally valid answers exist: the stronger model answers in its own words and
    order ("Each m holds 100 cm, so multiply 47 by 100: 47 m is 4700 cm."), which a token diff
    sees as a rewrite - exactly the contrast CLAIR avoids;
  - a tiny Llama can learn it: the arithmetic is copying digits and appending zeros.

Commands:
    task.py make OUT [--quick] [--seed S]   data files, tokenizer and model config under OUT
    task.py grade ANSWERS.jsonl             grades {"prompt", "response"} lines; prints JSON
"""
import json
import os
import random
import re
import sys

# (from unit, to unit, factor): always a larger unit to a smaller one, factors powers of ten
CONVERSIONS = [
    ("km", "m", 1000), ("m", "cm", 100), ("cm", "mm", 10), ("m", "mm", 1000),
    ("kg", "g", 1000), ("g", "mg", 1000), ("L", "mL", 1000), ("t", "kg", 1000),
]
UNITS = sorted({u for c in CONVERSIONS for u in c[:2]})
PROMPTS = ["Convert {q} {a} to {b}.", "How many {b} are in {q} {a}?", "Express {q} {a} in {b}.",
           "What is {q} {a} in {b}?", "Change {q} {a} into {b}."]
PROMPT_RES = [re.compile(r"^Convert (\d+) (\w+) to (\w+)\.$"),
              re.compile(r"^How many (\w+) are in (\d+) (\w+)\?$"),
              re.compile(r"^Express (\d+) (\w+) in (\w+)\.$"),
              re.compile(r"^What is (\d+) (\w+) in (\w+)\?$"),
              re.compile(r"^Change (\d+) (\w+) into (\w+)\.$")]

# Each model of the study is a "student" with its own habits: the factor it wrongly believes for
# some conversions (and how often it uses it), and how often it drops or adds a zero in a product.
STUDENTS = {
    # the target model (the paper's Llama-3-8B-Instruct): three confused conversions
    "target": {"wrong": {("m", "cm"): 1000, ("kg", "g"): 100, ("L", "mL"): 100}, "p_wrong": 0.8, "p_zero": 0.1},
    # two weaker models for the off-policy judge dataset, flawed differently and more often
    "weak_a": {"wrong": {("km", "m"): 100, ("g", "mg"): 100, ("t", "kg"): 100, ("m", "cm"): 10},
               "p_wrong": 0.9, "p_zero": 0.2},
    "weak_b": {"wrong": {("cm", "mm"): 100, ("m", "mm"): 100, ("L", "mL"): 10}, "p_wrong": 0.9, "p_zero": 0.35},
}

ANSWER_RE = re.compile(r"(\d+) ?([A-Za-z]+)")


def factor_of(a, b):
    for x, y, f in CONVERSIONS:
        if (x, y) == (a, b):
            return f
    return None


def parse_prompt(prompt):
    """(quantity, from unit, to unit) of a prompt string, or None."""
    if isinstance(prompt, list):   # a conversation: the last user turn
        prompt = [m.get("content", "") for m in prompt if m.get("role") == "user"][-1]
    prompt = prompt.strip()
    for i, r in enumerate(PROMPT_RES):
        m = r.match(prompt)
        if m:
            g = m.groups()
            return (int(g[1]), g[2], g[0]) if i == 1 else (int(g[0]), g[1], g[2])
    return None


def student_answer(q, a, b, factor, product):
    """The student style (the target's and the weak models'): factor, multiplication, result."""
    return f"1 {a} = {factor} {b}. So {q} {a} = {q} x {factor} {b} = {product} {b}. Answer: {product} {b}"


def strong_answer(q, a, b):
    """The stronger model's own style: equally correct, different words and order."""
    f = factor_of(a, b)
    return f"Each {a} holds {f} {b}, so multiply {q} by {f}: {q} {a} is {q * f} {b}."


def drop_or_add_zero(n, rng):
    s = str(n)
    if s.endswith("0") and rng.random() < 0.5:
        return int(s[:-1])
    return int(s + "0")


def sample_student(rng, who, q, a, b):
    """One answer of student `who`: its habits applied to the correct computation."""
    st = STUDENTS[who]
    f = factor_of(a, b)
    if (a, b) in st["wrong"] and rng.random() < st["p_wrong"]:
        f = st["wrong"][(a, b)]
    product = q * f
    if rng.random() < st["p_zero"]:
        product = drop_or_add_zero(product, rng)
    return student_answer(q, a, b, f, product)


def grade(prompt, response):
    """(correct, step credit in [0, 1]). Correct: the last "<number> <unit>" is q x factor in the
    asked unit. Steps of the student style: the stated factor, the multiplication, the answer."""
    p = parse_prompt(prompt)
    if p is None:
        return False, 0.0
    q, a, b = p
    f = factor_of(a, b)
    found = ANSWER_RE.findall(response or "")
    correct = bool(found) and int(found[-1][0]) == q * f and found[-1][1] == b
    steps = [correct]
    m = re.search(r"1 " + re.escape(a) + r" = (\d+) " + re.escape(b), response or "")
    steps.append(bool(m) and int(m.group(1)) == f)
    m = re.search(r"= (\d+) x (\d+) " + re.escape(b) + r" = (\d+)", response or "")
    steps.append(bool(m) and int(m.group(1)) * int(m.group(2)) == int(m.group(3)))
    return correct, sum(steps) / len(steps)


def revise_minimally(prompt, response):
    """The oracle's minimal revision: fix the wrong factor and the wrong products where the
    student wrote them, copy everything else. Returns (reasoning, revision)."""
    p = parse_prompt(prompt)
    if p is None:
        return "I cannot read the task.", response
    q, a, b = p
    f = factor_of(a, b)
    if grade(prompt, response) == (True, 1.0):
        return "The answer is correct; nothing needs changing.", response
    out, notes = response, []
    # the quantity copied from the task: "So Q a =" and "= Q x"
    for pat in (r"So (\d+) " + re.escape(a) + r" =", r"= (\d+) x "):
        m = re.search(pat, out)
        if m and int(m.group(1)) != q:
            notes.append(f"The task is about {q} {a}, not {m.group(1)} {a}.")
            out = out[:m.start(1)] + str(q) + out[m.end(1):]
    m = re.search(r"1 " + re.escape(a) + r" = (\d+) " + re.escape(b), out)
    if m and int(m.group(1)) != f:
        notes.append(f"1 {a} is {f} {b}, not {m.group(1)} {b}.")
        out = out[:m.start(1)] + str(f) + out[m.end(1):]
        m2 = re.search(r"= (\d+) x (\d+) ", out)
        if m2 and int(m2.group(2)) != f:
            out = out[:m2.start(2)] + str(f) + out[m2.end(2):]
    # every product or answer that is not q x f becomes q x f (numbers followed by the unit b)
    def fix(mm):
        n = int(mm.group(1))
        if n != q * f and n not in (1, q, f):
            notes.append(f"{q} x {f} is {q * f}, not {n}.")
            return str(q * f) + mm.group(2)
        return mm.group(0)
    out = re.sub(r"(\d+)( " + re.escape(b) + r"\b)", fix, out)
    if not grade(prompt, out)[0]:   # not the student's layout: write the student layout out
        notes.append("The steps do not lead to the answer; they are written out again.")
        out = student_answer(q, a, b, f, q * f)
    return " ".join(dict.fromkeys(notes)) or "Small fixes.", out


# ---------------------------------------------------------------------------------------------
# Data files

def random_prompt(rng):
    a, b, _ = rng.choice(CONVERSIONS)
    q = rng.randint(2, 99)
    return rng.choice(PROMPTS).format(q=q, a=a, b=b), q, a, b


def distinct_prompts(rng, n, avoid):
    out = []
    while len(out) < n:
        p, q, a, b = random_prompt(rng)
        if p in avoid:
            continue
        avoid.add(p)
        out.append((p, q, a, b))
    return out


def write_jsonl(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def make_tokenizer(out_dir):
    """A byte-level BPE tokenizer (GPT-2 byte alphabet, ChatML) whose merges form the task's
    words; digits are never merged, so every number is a sequence of digit tokens."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for x in range(256):
        if x not in bs:
            bs.append(x)
            cs.append(256 + n)
            n += 1
    alphabet = [chr(c) for c in cs]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for ch in sorted(alphabet):
        vocab.setdefault(ch, len(vocab))
    words = ["Convert", "How", "many", "are", "in", "Express", "What", "Change", "into", "to", "So", "Answer", "Each", "holds",
             "so", "multiply", "by", "is", "user", "assistant", "im"] + UNITS
    merges = []
    for w in words:
        for form in (w, "\u0120" + w):   # \u0120 is the byte alphabet's space
            cur = form[0]
            for ch in form[1:]:
                new = cur + ch
                if new not in vocab:
                    vocab[new] = len(vocab)
                    merges.append([cur, ch])
                cur = new
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, t in enumerate(specials)],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    chatml = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
              "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    cfg = {
        "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True} for i, t in enumerate(specials)},
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None,
        "chat_template": chatml, "clean_up_tokenization_spaces": False, "model_max_length": 256,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "tokenizer.json"), "w") as f:
        json.dump(tok, f)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    model = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": len(vocab),
        "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "hidden_act": "silu", "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None, "tie_word_embeddings": True,
        "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0, "initializer_range": 0.02,
        "bos_token_id": None, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32", "use_cache": True,
    }
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(model, f, indent=1)


def make(out, quick, seed):
    """Prompt sets (disjoint): SFT data of the three students, pair-building prompts, a dev set
    for the hyperparameter search and the held-out set."""
    sizes = ({"sft": 4800, "pairs": 256, "dev": 100, "heldout": 200} if quick else
             {"sft": 32000, "pairs": 2048, "dev": 200, "heldout": 500})
    rng = random.Random(seed)
    os.makedirs(out, exist_ok=True)
    seen = set()
    heldout = distinct_prompts(rng, sizes["heldout"], seen)
    dev = distinct_prompts(rng, sizes["dev"], seen)
    pairs = distinct_prompts(rng, sizes["pairs"], seen)
    for name, rows in (("heldout", heldout), ("dev", dev), ("pair_prompts", pairs)):
        write_jsonl(os.path.join(out, name + ".jsonl"), [{"prompt": p} for p, *_ in rows])
    # SFT data: prompts drawn freely except the evaluation ones (repeats are fine: it is practice)
    for who in STUDENTS:
        srng = random.Random(f"{seed}-{who}")
        rows = []
        while len(rows) < sizes["sft"]:
            p, q, a, b = random_prompt(srng)
            if p in seen:
                continue
            rows.append({"prompt": p, "completion": sample_student(srng, who, q, a, b)})
        write_jsonl(os.path.join(out, f"sft_{who}.jsonl"), rows)
    make_tokenizer(os.path.join(out, "tokenizer"))
    print(f"task: {out}: " + ", ".join(f"{k} {v}" for k, v in sizes.items()), file=sys.stderr)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def grade_file(path):
    rows = read_jsonl(path)
    res = [grade(r["prompt"], r.get("response", "")) for r in rows]
    n = len(res)
    acc = sum(c for c, _ in res) / n if n else 0.0
    steps = sum(s for _, s in res) / n if n else 0.0
    return {"file": path, "n": n, "correct": sum(c for c, _ in res), "accuracy": acc, "step_credit": steps}


def main(argv):
    if len(argv) >= 2 and argv[0] == "make":
        make(argv[1], "--quick" in argv, int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0)
    elif len(argv) == 2 and argv[0] == "grade":
        print(json.dumps(grade_file(argv[1])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
