#!/usr/bin/env bash
# bench/model_bench.sh - forward+backward tokens/s of our CPU model vs PyTorch, same shape, same
# CPU, same thread count, in one run. Default shape: SmolLM2-135M (30 layers, D 576, I 1536,
# 9 heads / 3 KV heads, V 49152, tied embeddings); T tokens as n_seq equal sequences.
#   bench/model_bench.sh [T] [n_seq] [rounds] [threads]      (defaults 256 2 2 2)
#   SHAPE="V D I L H K" bench/model_bench.sh ...               (another shape)
#   REF=<commit> bench/model_bench.sh ...    (also that commit's llama/model.c (+ llama/gemm.c), in
#                                             the same rounds: before/after numbers under the same load)
# The two programs alternate for `rounds` rounds (each: one warm-up step, one timed step) and
# the best of each is kept: on a shared machine, load changes from minute to minute, and
# alternating gives both sides the same chances. Needs a C compiler; the baseline needs torch +
# transformers (without them, only our number is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-256}; NSEQ=${2:-2}; ROUNDS=${3:-2}; THREADS=${4:-2}
SHAPE=${SHAPE:-"49152 576 1536 30 9 3"}   # V D I L H K; override for other shapes
OMPF=""; echo 'int main(void){return 0;}' | cc -fopenmp -x c - -o /dev/null 2>/dev/null && OMPF=-fopenmp
mkdir -p build/bench
cc -O3 -ffp-contract=fast -Wall -Wextra $OMPF -std=c99 -c llama/model.c -o build/bench/llama_model.o
cc -O3 -ffp-contract=fast -Wall -Wextra $OMPF -std=c99 -c llama/gemm.c -o build/bench/llama_gemm.o
cc -O2 -Wall -Wextra $OMPF -std=c99 bench/model_bench.c build/bench/llama_model.o build/bench/llama_gemm.o util.c -lm \
  -o build/bench/model_bench
REF=${REF:-}
if [ -n "$REF" ]; then
  mkdir -p build/bench/ref
  git show "$REF:llama/model.c" > build/bench/ref/model.c
  git show "$REF:llama/model.h" > build/bench/ref/model.h
  # newer commits take the random generator from util.c, one directory up from model.c
  if git cat-file -e "$REF:util.c" 2>/dev/null; then
    git show "$REF:util.h" > build/bench/util.h
    git show "$REF:util.c" > build/bench/ref/util.c
  fi
  cc -O3 -ffp-contract=fast $OMPF -std=c99 -c build/bench/ref/model.c -o build/bench/ref/llama_model.o
  refobjs=build/bench/ref/llama_model.o
  # older commits have the GEMM inside model.c; newer ones in llama/gemm.c
  if git cat-file -e "$REF:llama/gemm.c" 2>/dev/null; then
    git show "$REF:llama/gemm.c" > build/bench/ref/gemm.c
    cc -O3 -ffp-contract=fast $OMPF -std=c99 -c build/bench/ref/gemm.c -o build/bench/ref/llama_gemm.o
    refobjs="$refobjs build/bench/ref/llama_gemm.o"
  fi
  [ -f build/bench/ref/util.c ] && refobjs="$refobjs build/bench/ref/util.c"
  # shellcheck disable=SC2086
  cc -O2 $OMPF -std=c99 bench/model_bench.c $refobjs -lm -o build/bench/ref/model_bench
fi
echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet -- llama/model.c llama/gemm.c || echo ' + uncommitted llama/model.c or llama/gemm.c')"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores visible, load average $(cut -d' ' -f1-3 /proc/loadavg); threads $THREADS; $(date -u '+%Y-%m-%d %H:%M UTC')"
export OMP_NUM_THREADS=$THREADS
have_torch=0; python3 -c 'import torch, transformers' 2>/dev/null && have_torch=1
best_o=0; best_t=0; best_r=0
rate() { sed -n 's/.* \([0-9.]*\) tokens\/s.*/\1/p'; }
max() { python3 -c "print(max($1, $2))"; }
for r in $(seq 1 "$ROUNDS"); do
  o=$(nice build/bench/model_bench $SHAPE "$T" "$NSEQ" 1); echo "round $r $o"
  best_o=$(max "$best_o" "$(echo "$o" | rate)")
  if [ -n "$REF" ]; then
    o=$(nice build/bench/ref/model_bench $SHAPE "$T" "$NSEQ" 1); echo "round $r $REF $o"
    best_r=$(max "$best_r" "$(echo "$o" | rate)")
  fi
  if [ $have_torch = 1 ]; then
    t=$(nice python3 bench/model_torch.py $SHAPE "$T" "$NSEQ" 1 2>/dev/null | tail -1); echo "round $r $t"
    best_t=$(max "$best_t" "$(echo "$t" | rate)")
  fi
done
echo "best: ours $best_o tokens/s"
if [ -n "$REF" ]; then
  echo "best: ours at $REF $best_r tokens/s (speedup $(python3 -c "print(f'{$best_o/$best_r:.2f}')")x)"
fi
if [ $have_torch = 1 ]; then
  echo "best: torch $best_t tokens/s"
  python3 -c "print(f'ratio ours/torch (forward+backward tokens/s): {$best_o/$best_t:.2f}')"
  if [ -n "$REF" ]; then python3 -c "print(f'ratio ours at $REF/torch: {$best_r/$best_t:.2f}')"; fi
else
  echo "torch/transformers not installed: no baseline this run"
fi
