#!/usr/bin/env python3
"""PyTorch baseline for bench/model_bench.sh: forward+backward tokens/s of LlamaForCausalLM
(float32, sdpa attention) on the same shape and objective as bench/model_bench.c (sum of every
next-token log-prob), same thread count. Usage: model_torch.py V D I L H K T n_seq iters"""
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    V, D, I, L, H, K, T, n_seq, iters = map(int, sys.argv[1:10])
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=V, hidden_size=D, intermediate_size=I, num_hidden_layers=L,
                      num_attention_heads=H, num_key_value_heads=K, tie_word_embeddings=True,
                      max_position_embeddings=8192, rope_theta=100000.0)
    cfg._attn_implementation = "sdpa"
    model = LlamaForCausalLM(cfg).float().train()
    tokens = torch.tensor([(i * 2654435761) % (2 ** 32) % V for i in range(T)])
    bounds = [T * s // n_seq for s in range(n_seq + 1)]
    seqs = [tokens[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    best = (1e30, 0, 0)
    for it in range(iters + 1):
        model.zero_grad(set_to_none=False)
        t0 = time.perf_counter()
        batch = torch.stack(seqs)  # equal lengths (T divisible by n_seq): no padding
        logits = model(input_ids=batch).logits            # [n_seq, n, V]
        lp = torch.log_softmax(logits[:, :-1], -1).gather(2, batch[:, 1:, None]).sum()
        t1 = time.perf_counter()
        lp.backward()
        t2 = time.perf_counter()
        if it > 0 and t2 - t0 < best[0]:
            best = (t2 - t0, t1 - t0, t2 - t1)
    print(f"torch: T={T} fwd {best[1]:.3f} s bwd {best[2]:.3f} s fwd+bwd {best[0]:.3f} s  "
          f"{T / best[0]:.1f} tokens/s  (threads {torch.get_num_threads()}, torch {torch.__version__})")


if __name__ == "__main__":
    main()
