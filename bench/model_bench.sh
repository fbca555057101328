#!/usr/bin/env bash
# bench/model_bench.sh - forward+backward tokens/s of our CPU model vs PyTorch, same shape, same
# CPU, same thread count, in one run. Default shape: SmolLM2-135M (30 layers, D 576, I 1536,
# 9 heads / 3 KV heads, V 49152, tied embeddings); T tokens as n_seq equal sequences.
#   bench/model_bench.sh [T] [n_seq] [iters] [threads]      (defaults 256 2 2 2)
# Needs a C compiler; the baseline needs torch + transformers (skipped, with a note, without).
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-256}; NSEQ=${2:-2}; ITERS=${3:-2}; THREADS=${4:-2}
SHAPE="49152 576 1536 30 9 3"
OMPF=""; echo 'int main(void){return 0;}' | cc -fopenmp -x c - -o /dev/null 2>/dev/null && OMPF=-fopenmp
mkdir -p build/bench
cc -O3 -ffp-contract=fast -Wall -Wextra $OMPF -std=c99 -c llama/model.c -o build/bench/llama_model.o
cc -O2 -Wall -Wextra $OMPF -std=c99 bench/model_bench.c build/bench/llama_model.o -lm -o build/bench/model_bench
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores visible; threads $THREADS; $(date -u +%Y-%m-%d)"
export OMP_NUM_THREADS=$THREADS
ours=$(nice build/bench/model_bench $SHAPE "$T" "$NSEQ" "$ITERS")
echo "$ours"
if python3 -c 'import torch, transformers' 2>/dev/null; then
  theirs=$(nice python3 bench/model_torch.py $SHAPE "$T" "$NSEQ" "$ITERS" 2>/dev/null | tail -1)
  echo "$theirs"
  o=$(echo "$ours" | sed -n 's/.* \([0-9.]*\) tokens\/s.*/\1/p'); t=$(echo "$theirs" | sed -n 's/.* \([0-9.]*\) tokens\/s.*/\1/p')
  python3 -c "print(f'ratio ours/torch tokens/s: {$o/$t:.2f}')"
else
  echo "torch/transformers not installed: no baseline this run"
fi
