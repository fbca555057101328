#!/usr/bin/env python3
"""torch.matmul on bench/model_gemm_bench.c's shapes (same order, same output format).
Usage: model_gemm_torch.py [T] [reps]  (threads: OMP_NUM_THREADS / torch default)"""
import sys
import time

import torch


def main():
    T = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    shapes = [(T, 576, 576), (T, 576, 192), (T, 576, 1536), (T, 1536, 576), (64, 576, 49152),
              (T, 576, 49152)]
    tot = [0.0, 0.0, 0.0]
    for n, i, o in shapes:
        X, W, Y = torch.randn(n, i), torch.randn(o, i), torch.randn(n, o)
        fns = [lambda: X @ W.t(), lambda: X.add_(Y @ W), lambda: W.add_(Y.t() @ X)]
        for kind, fn in enumerate(fns):
            best = 1e30
            for r in range(reps + 1):
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
                if r > 0:
                    best = min(best, dt)
            print(f"{['fwd', 'bwd_x', 'bwd_w'][kind]:<6} n {n:5d} in {i:5d} out {o:5d}  "
                  f"{best * 1e3:7.2f} ms  {2 * n * i * o / best * 1e-9:6.1f} GFLOP/s")
            tot[kind] += best
    print(f"total ms: fwd {tot[0] * 1e3:.2f} bwd_x {tot[1] * 1e3:.2f} bwd_w {tot[2] * 1e3:.2f} "
          f"(threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
