#!/usr/bin/env python3
"""Writes tests/trainer/trl_tokenize_expected.json: the token ids TRL 1.x's DPOTrainer and
SFTTrainer preprocessing give for a few records, on the tiny tokenizers of tests/trainer/tok_variants.py.
Dev machine only; the test (tests/trainer/run.sh tokenize) reads the committed file.

    python3 -m venv /tmp/trlenv
    /tmp/trlenv/bin/pip install --no-deps trl==1.16.0        # TRL's accelerate/torch are not needed here
    /tmp/trlenv/bin/pip install transformers tokenizers datasets numpy pyarrow jinja2
    /tmp/trlenv/bin/python tools/gen_trl_tokenize_expected.py

The steps are TRL 1.16's own: trl.data_utils._tokenize (tokenizer(text) or apply_chat_template),
common_prefix_length, is_conversational; the per-record code is that of DPOTrainer._prepare_dataset
(add_eos, tokenize_fn) and SFTTrainer's prompt-completion tokenize_fn, which live inside methods and
are repeated here line for line. Each case: {"tokenizer", "record", "prompt_len", "chosen_ids",
"rejected_ids"} (ids of prompt + completion; SFT records: chosen_ids = input_ids, no rejected_ids);
"llama2_legacy": the ids of one text by `tokenizers` and by transformers 5 on the Llama 2 variant.
"""
import json, os, sys, tempfile

import transformers
import trl
from transformers import AutoTokenizer
from trl.data_utils import _tokenize, common_prefix_length, is_conversational

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "trainer"))
import tok_variants  # noqa: E402

RAW = [  # plain strings (TRL's "standard" format); "thr" + "ee" merges across the boundary
    {"prompt": "The capital of France is", "chosen": " Paris.", "rejected": " Lyon."},
    {"prompt": "Hello wor", "chosen": "ld, hello!", "rejected": "k is done."},
    {"prompt": "2 + 2 =", "chosen": " 4", "rejected": "5"},
    {"prompt": "Count: one two thr", "completion": "ee four"},
    {"prompt": "Say hello.", "completion": " Hello!"},
]
CHAT = [
    {"prompt": [{"role": "user", "content": "What is 12 + 30?"}],
     "chosen": [{"role": "assistant", "content": "12 + 30 = 42."}],
     "rejected": [{"role": "assistant", "content": "12 + 30 = 52."}]},
    {"prompt": [{"role": "user", "content": "Name a colour."}],
     "completion": [{"role": "assistant", "content": "Blue."}]},
]


def dpo_ids(tok, ex):
    """DPOTrainer._prepare_dataset: add_eos (non-conversational), then tokenize_fn."""
    ex = dict(ex)
    if not is_conversational(ex):
        for k in ("chosen", "rejected"):
            if not ex[k].endswith(tok.eos_token):
                ex[k] = ex[k] + tok.eos_token
        prompt_ids = _tokenize(tok, ex["prompt"])["input_ids"]
        pc = _tokenize(tok, ex["prompt"] + ex["chosen"])["input_ids"]
        pr = _tokenize(tok, ex["prompt"] + ex["rejected"])["input_ids"]
    else:
        prompt_ids = _tokenize(tok, ex["prompt"], add_generation_prompt=True)["input_ids"]
        pc = _tokenize(tok, ex["prompt"] + ex["chosen"])["input_ids"]
        pr = _tokenize(tok, ex["prompt"] + ex["rejected"])["input_ids"]
    n = min(common_prefix_length(prompt_ids, pc), common_prefix_length(prompt_ids, pr))
    return n, pc, pr


def sft_ids(tok, ex):
    """SFTTrainer: add_eos to the completion (non-conversational), then the prompt-completion tokenize_fn."""
    ex = dict(ex)
    if not is_conversational(ex):
        if not ex["completion"].endswith(tok.eos_token):
            ex["completion"] = ex["completion"] + tok.eos_token
        prompt_ids = _tokenize(tok, ex["prompt"])["input_ids"]
        pc = _tokenize(tok, ex["prompt"] + ex["completion"])["input_ids"]
    else:
        prompt_ids = _tokenize(tok, ex["prompt"], add_generation_prompt=True)["input_ids"]
        pc = _tokenize(tok, ex["prompt"] + ex["completion"])["input_ids"]
    return common_prefix_length(prompt_ids, pc), pc


def llama2_legacy(d, text):
    """The Llama 2 difference: `tokenizers` on the file (its legacy normalizer, as Meta's
    sentencepiece encoded the training data) against transformers 5's rebuilt Llama tokenizer."""
    from tokenizers import Tokenizer
    return {"tokenizer": os.path.basename(d), "text": text,
            "tokenizers": Tokenizer.from_file(os.path.join(d, "tokenizer.json")).encode(text).ids,
            "transformers": AutoTokenizer.from_pretrained(d)(text)["input_ids"]}


def main():
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        dirs = tok_variants.make(tmp)
        legacy = llama2_legacy([d for d in dirs if d.endswith("tiny-spm-bos")][0], " Paris. Yes")
        for d in dirs:
            name = os.path.basename(d)
            tok = AutoTokenizer.from_pretrained(d)
            records = RAW + (CHAT if name in ("tiny-llama3", "tiny-smol") else [])
            for ex in records:
                c = {"tokenizer": name, "record": ex}
                if "completion" in ex:
                    c["prompt_len"], c["chosen_ids"] = sft_ids(tok, ex)
                else:
                    c["prompt_len"], c["chosen_ids"], c["rejected_ids"] = dpo_ids(tok, ex)
                cases.append(c)
    out = {"generator": "tools/gen_trl_tokenize_expected.py",
           "versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                        "tokenizers": __import__("tokenizers").__version__},
           "cases": cases, "llama2_legacy": legacy}
    path = os.path.join(ROOT, "tests", "trainer", "trl_tokenize_expected.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=0)
        f.write("\n")
    os.replace(path + ".tmp", path)
    print("wrote", path, len(cases), "cases")


if __name__ == "__main__":
    main()
