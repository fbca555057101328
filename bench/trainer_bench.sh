#!/usr/bin/env bash
# bench/trainer_bench.sh - training throughput of ./trainer (CPU path) against the same APO-zero
# steps in Hugging Face transformers + torch on the same CPU, in the same run.
#
#   bench/trainer_bench.sh [STEPS] [THREADS]      (defaults: 40 steps, 2 threads)
#
# Model: examples/tiny-llama; data: examples/pairs.jsonl (the trainer shuffles per epoch, the
# baseline cycles in file order; only speed is compared); batch 16 pairs = 32 sequences per step, one micro-batch. Tokens counted are
# the real tokens of both sides (no padding). Reference pass excluded from both timings.
# Needs ./trainer built and python3 with torch, transformers, tokenizers (dev machine only).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-40}
THREADS=${2:-2}
BATCH=16
W=$(mktemp -d "${TMPDIR:-/tmp}/trainer-bench-XXXXXX")
trap 'rm -rf "$W"' EXIT
echo "machine: $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
OMP_NUM_THREADS=$THREADS ./trainer train --model examples/tiny-llama --data examples/pairs.jsonl --out "$W/run" \
  --loss apo_zero --lr 1e-3 --batch-size $BATCH --micro-batch $BATCH --epochs 10 --max-steps "$STEPS" --warmup-ratio 0 \
  --max-length 256 --quiet 2> "$W/log"
secs=$(sed -n 's/^done: [0-9]* steps in \([0-9.]*\)s.*/\1/p' "$W/log")
toks=$(python3 -c "import json,sys; print(sum(json.loads(l)['num_tokens'] for l in open(sys.argv[1]) if '\"loss\"' in l))" "$W/run/metrics.jsonl")
ours=$(python3 -c "print(f'{$toks/$secs:.0f}')")
echo "trainer (C, fp32, $THREADS threads): $toks tokens in ${secs}s = $ours tok/s"
read -r _ ttoks _ tsecs < <(python3 bench/trainer_bench_torch.py examples/tiny-llama examples/pairs.jsonl "$STEPS" $BATCH "$THREADS")
theirs=$(python3 -c "print(f'{$ttoks/$tsecs:.0f}')")
echo "transformers + torch (fp32, $THREADS threads): $ttoks tokens in ${tsecs}s = $theirs tok/s"
python3 -c "print(f'ratio trainer / torch: {$ours/$theirs:.2f}x')"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
