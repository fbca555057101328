#!/usr/bin/env python3
"""Baseline for bench/trainer_bench.sh: the same APO-zero training steps as ./trainer, written
with Hugging Face transformers + torch on the CPU (dev tool; needs torch, transformers, tokenizers).

    python3 bench/trainer_bench_torch.py MODEL_DIR PAIRS.jsonl STEPS BATCH THREADS

Same model, same pairs in file order, same ChatML tokenization (prompt masked, response +
<|im_end|>), same batch; precomputed reference log-probs (as TRL's precompute_ref_log_probs and
our trainer do), AdamW. Each side of each pair is a separate sequence, run as one padded batch
per step (what TRL does; the padding tokens are not counted). Prints "tokens N seconds S".
"""
import json
import sys
import time

import torch
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM
from safetensors.torch import load_file


def chat_ids(tok, prompt, response):
    p = "<|im_start|>user\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n"
    pids = tok.encode(p, add_special_tokens=False).ids
    full = tok.encode(p + response + "<|im_end|>", add_special_tokens=False).ids
    return full, len(pids)


def content(x):
    return x if isinstance(x, str) else x[-1]["content"]


def main():
    model_dir, data, steps, batch, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tok = Tokenizer.from_file(model_dir + "/tokenizer.json")
    cfg_json = json.load(open(model_dir + "/config.json"))
    cfg = LlamaConfig(**{k: v for k, v in cfg_json.items() if k not in ("architectures", "model_type", "torch_dtype")})
    model = LlamaForCausalLM(cfg)
    sd = {k: v.float() for k, v in load_file(model_dir + "/model.safetensors").items()}
    model.load_state_dict(sd, strict=False)
    model.tie_weights()
    rows = [json.loads(l) for l in open(data)]
    seqs = []
    for k in range(steps * batch):              # cycle through the file, as epochs do
        r = rows[k % len(rows)]
        for side in ("chosen", "rejected"):
            seqs.append(chat_ids(tok, r["prompt"], content(r[side])))

    def logps(batch_seqs):
        T = max(len(s) for s, _ in batch_seqs)
        ids = torch.zeros((len(batch_seqs), T), dtype=torch.long)
        att = torch.zeros((len(batch_seqs), T), dtype=torch.long)
        mask = torch.zeros((len(batch_seqs), T), dtype=torch.float32)
        for i, (s, start) in enumerate(batch_seqs):
            ids[i, : len(s)] = torch.tensor(s)
            att[i, : len(s)] = 1
            mask[i, start: len(s)] = 1
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1]
        lp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
        return (lp * mask[:, 1:]).sum(-1)

    with torch.no_grad():                       # reference pass (not timed, as in the trainer's tok/s)
        ref = torch.cat([logps(seqs[i: i + 2 * batch]) for i in range(0, len(seqs), 2 * batch)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    beta = 0.1
    tokens = 0
    t0 = time.time()
    for k in range(steps):
        bs = seqs[2 * batch * k: 2 * batch * (k + 1)]
        pl = logps(bs)
        rl = ref[2 * batch * k: 2 * batch * (k + 1)]
        dw, dl = (pl - rl)[0::2], (pl - rl)[1::2]
        loss = (1 - torch.sigmoid(beta * dw) + torch.sigmoid(beta * dl)).mean()   # TRL apo_zero
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += sum(len(s) for s, _ in bs)
    print(f"tokens {tokens} seconds {time.time() - t0:.3f}")


if __name__ == "__main__":
    main()
