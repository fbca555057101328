#!/usr/bin/env python3
"""bench/generate_torch.py - the baseline of bench/generate_bench.sh: Hugging Face transformers'
generate on the same checkpoint, prompts, chat template and max_new_tokens as `trainer generate`,
greedy, fp32 on the CPU with a given number of threads.

    generate_torch.py --model DIR --prompts FILE --max-new-tokens N --threads T --batch B --out FILE

--batch 1 answers the prompts one at a time (plain `model.generate(ids)`); --batch B > 1 passes B
prompts at once, left-padded, as transformers documents for batched generation. Timing covers
generate() only (not loading or tokenizing), as the trainer's own tok/s does. Tokens counted
are the answer tokens before the first end-of-sequence token, as the trainer counts them.
Prints one JSON line: {"tokens", "seconds", "tok_per_s", ...}; --out gets one JSON line per
prompt ({"prompt", "response"}) so the script can compare the answers with the trainer's.
"""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--max-new-tokens", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(a.model)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id}
    prompts = [json.loads(line)["prompt"] for line in open(a.prompts) if line.strip()]
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                     tokenize=False) for p in prompts]
    answers, n_tokens, seconds = [], 0, 0.0
    with torch.inference_mode():
        for i in range(0, len(texts), a.batch):
            enc = tok(texts[i:i + a.batch], return_tensors="pt", padding=True, add_special_tokens=False)
            t0 = time.perf_counter()
            out = model.generate(**enc, do_sample=False, max_new_tokens=a.max_new_tokens,
                                 pad_token_id=tok.pad_token_id)
            seconds += time.perf_counter() - t0
            for row in out[:, enc["input_ids"].shape[1]:].tolist():
                ids = []
                for t in row:
                    if t in eos:
                        break
                    ids.append(t)
                n_tokens += len(ids)
                answers.append(tok.decode(ids))
    with open(a.out, "w") as f:
        for p, r in zip(prompts, answers):
            f.write(json.dumps({"prompt": p, "response": r}) + "\n")
    print(json.dumps({"impl": "transformers", "batch": a.batch, "threads": a.threads, "prompts": len(prompts),
                      "tokens": n_tokens, "seconds": round(seconds, 3),
                      "tok_per_s": round(n_tokens / seconds, 2), "torch": torch.__version__,
                      "transformers": __import__("transformers").__version__}))


if __name__ == "__main__":
    main()
