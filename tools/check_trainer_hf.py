#!/usr/bin/env python3
"""Dev tool (not CI): ./trainer's output against Hugging Face transformers.

  1. trains the example model for a few steps with ./trainer (APO-zero);
  2. loads the output directory with AutoTokenizer / AutoModelForCausalLM.from_pretrained;
  3. tokenizes every pair of the eval file with tokenizer.apply_chat_template (HF's Jinja) and
     computes the summed completion log-probs with transformers;
  4. compares them with `./trainer eval --pairs-out` on the same model and data.
A match checks at once that the checkpoint loads in transformers, that our chat template
tokenization equals HF's, and that our log-probs equal HF's.

    python3 tools/check_trainer_hf.py          (needs ./trainer built, torch, transformers)
"""
import json
import os
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
TRAINER = os.path.join(ROOT, "trainer")
MODEL = os.path.join(ROOT, "examples", "tiny-llama")
DATA = os.path.join(ROOT, "examples", "pairs_eval.jsonl")


def main():
    tmp = tempfile.mkdtemp(prefix="trainer_hf_")
    out = os.path.join(tmp, "out")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([TRAINER, "train", "--model", MODEL, "--data", os.path.join(ROOT, "examples", "pairs.jsonl"),
                    "--out", out, "--lr", "2e-3", "--batch-size", "16", "--micro-batch", "8", "--max-steps", "10",
                    "--quiet"], check=True, env=env)
    pairs_out = os.path.join(tmp, "pairs.jsonl")
    subprocess.run([TRAINER, "eval", "--model", out, "--data", DATA, "--pairs-out", pairs_out], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    ours = [json.loads(l) for l in open(pairs_out)]

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32)
    model.eval()
    rows = [json.loads(l) for l in open(DATA)]
    worst = 0.0
    for r, o in zip(rows, ours):
        msgs = [{"role": "user", "content": r["prompt"]}]
        enc = lambda text: tok(text, add_special_tokens=False)["input_ids"]
        prompt_ids = enc(tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))
        for side in ("chosen", "rejected"):
            full = enc(tok.apply_chat_template(msgs + [{"role": "assistant", "content": r[side]}], tokenize=False))
            # the completion is everything the template adds after the generation prompt:
            # response, "<|im_end|>", "\n" (TRL's chat-templated completion text, likewise)
            assert full[: len(prompt_ids)] == prompt_ids
            ids = torch.tensor([full])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, :-1].double()
            lp = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0]
            hf = lp[len(prompt_ids) - 1:].sum().item()
            d = abs(hf - o["logps/" + side])
            worst = max(worst, d / max(1.0, abs(hf)))
    print(f"{len(rows)} pairs: max relative difference of summed completion log-probs, ours vs transformers: {worst:.2e}")
    ok = worst < 1e-4
    print("OK" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
