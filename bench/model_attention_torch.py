#!/usr/bin/env python3
"""torch's scaled_dot_product_attention (causal, fp32) forward and backward on the shapes of
bench/model_attention_bench.c: 9 query heads, 3 kv heads (repeated as transformers does), head
dim 64, one sequence of n tokens. Usage: model_attention_torch.py [n] [reps]"""
import sys
import time

import torch


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    q = torch.randn(1, 9, n, 64, requires_grad=True)
    k = torch.randn(1, 3, n, 64, requires_grad=True)
    v = torch.randn(1, 3, n, 64, requires_grad=True)
    bf = bb = 1e30
    for r in range(reps + 1):
        t0 = time.perf_counter()
        o = torch.nn.functional.scaled_dot_product_attention(
            q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), is_causal=True)
        t1 = time.perf_counter()
        o.backward(torch.ones_like(o))
        t2 = time.perf_counter()
        if r > 0:
            bf, bb = min(bf, t1 - t0), min(bb, t2 - t1)
    print(f"torch: attention n={n} (sdpa) fwd {bf * 1e3:.1f} ms bwd {bb * 1e3:.1f} ms "
          f"(threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
