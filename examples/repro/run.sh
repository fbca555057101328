#!/usr/bin/env bash
# examples/repro/run.sh - the paper's study (Tables 1-2) at laptop scale, with ./trainer and ./clair.
#
#   examples/repro/run.sh [--quick] [--out DIR] [--seeds N]
#
# Stages (docs/repro.md explains each and how to read the results):
#   1 data       task.py: prompt sets, the students' SFT data, a tokenizer and a model shape
#   2 models     ./trainer init + ./trainer train --loss sft: the target and two weaker models
#   3 oracle     examples/repro/oracle.py: the stronger model (an oracle server) in the background
#   4 answers    ./trainer generate: the target's answers (two samples), the weak models' answers
#   5 pairs      ./clair revise (CLAIR), ./clair generate with the oracle (Stronger Preferred),
#                ./clair judge (on- and off-policy); all cut to the same prompts; ./clair stats = Table 1
#   6 baseline   greedy answers of the target and the oracle on the held-out prompts, graded
#   7 search     learning rate per dataset x objective, the same grid for each, picked on dev
#   8 train      every dataset x objective x seed with the picked learning rate
#   9 evaluate   greedy held-out answers of every aligned model, graded
#  10 report     results.md (Table 2 analogue, gap closed, log-prob dynamics), table1.md, SVG plots
# Every unit of work leaves its output only when complete and is skipped when rerun, so running the
# same command again after an interruption continues where it stopped.
# Environment: TRAINER, CLAIR (the binaries; default ./trainer, ./clair), OMP_NUM_THREADS,
# OMP_WAIT_POLICY (default passive here: see below).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/examples/repro"
TRAINER=${TRAINER:-$ROOT/trainer}
CLAIR=${CLAIR:-$ROOT/clair}
QUICK=0
OUT=""
SEEDS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --out) OUT=$2; shift ;;
    --seeds) SEEDS=$2; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for b in "$TRAINER" "$CLAIR"; do
  [ -x "$b" ] || { echo "run.sh: $b not found: run ./build.sh first (or set TRAINER / CLAIR)" >&2; exit 1; }
done
command -v python3 >/dev/null || { echo "run.sh: python3 is needed (standard library only)" >&2; exit 1; }

# ---- budgets ------------------------------------------------------------------------------------
# SFT_*: the students' training from scratch; ALIGN_*: every alignment run (the same step budget
# and the same learning-rate grid for every objective; beta is the paper's 0.1 for all).
if [ $QUICK = 1 ]; then
  OUT=${OUT:-$ROOT/build/repro-quick}
  SFT_STEPS=300; SFT_WEAK_STEPS=100; SFT_LR=1e-2; SFT_BATCH=16
  ALIGN_STEPS=12; ALIGN_BATCH=16; LR_GRID=""; ALIGN_LR=1e-4; SEEDS=${SEEDS:-1}
  DATASETS_TRAINED="clair stronger"; OBJECTIVES="apo_zero apo_down"
else
  OUT=${OUT:-$ROOT/build/repro}
  SFT_STEPS=2000; SFT_WEAK_STEPS=800; SFT_LR=1e-2; SFT_BATCH=16
  ALIGN_STEPS=60; ALIGN_BATCH=16; LR_GRID="3e-5 6e-5 1e-4 2e-4 3e-4 6e-4"; ALIGN_LR=""; SEEDS=${SEEDS:-5}
  DATASETS_TRAINED="clair stronger onpolicy offpolicy"; OBJECTIVES="sft sigmoid apo_zero apo_down"
fi
BETA=0.1
# The study runs hundreds of short jobs of a tiny model, often on a machine doing other work. With
# OpenMP's default wait policy an idle thread spins, and when a core is busy elsewhere every
# parallel region then waits for a descheduled thread: 20 steps took 100 s instead of 5 s on the
# 2-core machine of docs/repro.md while another process ran. Passive waiting avoids that, at a
# cost when the machine is idle (the target's 2000 SFT steps: 130 s instead of 59 s); a long
# study on a machine that stays idle runs faster with OMP_WAIT_POLICY=active.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
mkdir -p "$OUT"/{data,models,answers,pairs,datasets,train,eval,plots}
D="$OUT/data"
START=$(date +%s)
PY="python3 -B"

# ---- progress -----------------------------------------------------------------------------------
STAGE_N=10
stage() { echo "[repro $(elapsed)] stage $1/$STAGE_N: $2" >&2; }
elapsed() { local s=$(( $(date +%s) - START )); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
# progress DONE TOTAL T0 WHAT: done/total and an ETA from the mean time per unit so far.
progress() {
  local done=$1 total=$2 t0=$3 what=$4 now eta=""
  now=$(date +%s)
  if [ "$done" -gt 0 ] && [ "$done" -lt "$total" ]; then
    eta=" | ETA $(( (now - t0) * (total - done) / done ))s"
  fi
  echo "[repro $(elapsed)]   $done/$total $what$eta" >&2
}
done_mark() { [ -e "$1/.done" ]; }

# train_model OUT_DIR ARGS...: ./trainer train, resumable; OUT_DIR/.done when complete.
train_model() {
  local dir=$1; shift
  done_mark "$dir" && return 0
  "$TRAINER" train --out "$dir" --resume --quiet --save-every 20 "$@" >"$dir.log" 2>&1 ||
    { echo "run.sh: training failed; see $dir.log:" >&2; tail -n 5 "$dir.log" >&2; exit 1; }
  touch "$dir/.done"
}
# answers MODEL PROMPTS OUT TEMPERATURE SEED: ./trainer generate (resumes by itself).
answers() {
  [ -e "$3" ] && return 0
  "$TRAINER" generate --model "$1" --prompts "$2" --out "$3" --temperature "$4" --seed "$5" \
    --max-new-tokens 64 >"$3.log" 2>&1 || { echo "run.sh: generation failed; see $3.log" >&2; tail -n 5 "$3.log" >&2; exit 1; }
}
# grade ANSWERS: ANSWERS.grade.json
grade() {
  local g="${1%.jsonl}.grade.json"
  [ -e "$g" ] || { $PY "$HERE/task.py" grade "$1" >"$g.tmp" && mv "$g.tmp" "$g"; }
}

# ---- 1 data -------------------------------------------------------------------------------------
stage 1 "data (task.py)"
if [ ! -e "$D/.done" ]; then
  if [ $QUICK = 1 ]; then $PY "$HERE/task.py" make "$D" --quick --seed 0; else $PY "$HERE/task.py" make "$D" --seed 0; fi
  touch "$D/.done"
fi

# ---- 2 models -----------------------------------------------------------------------------------
stage 2 "the target and two weaker models: ./trainer init, ./trainer train --loss sft"
[ -e "$OUT/models/init/config.json" ] ||
  "$TRAINER" init --config "$D/tokenizer/config.json" --tokenizer "$D/tokenizer" --out "$OUT/models/init" --seed 0 >/dev/null
t0=$(date +%s); i=0
for who in target weak_a weak_b; do
  steps=$SFT_STEPS; [ $who = target ] || steps=$SFT_WEAK_STEPS
  # only the lines the step budget uses: the trainer scores every line once before training
  head -n $((steps * SFT_BATCH)) "$D/sft_$who.jsonl" >"$OUT/models/sft_$who.jsonl"
  train_model "$OUT/models/$who" --model "$OUT/models/init" --data "$OUT/models/sft_$who.jsonl" --loss sft \
    --lr $SFT_LR --batch-size $SFT_BATCH --micro-batch $SFT_BATCH --max-steps "$steps" --warmup-ratio 0.03 --seed 0
  i=$((i + 1)); progress $i 3 "$t0" "models ($who)"
done

# ---- 3 oracle -----------------------------------------------------------------------------------
stage 3 "the stronger model: oracle.py (an oracle over the task, not a language model)"
rm -f "$OUT/oracle.port"
$PY "$HERE/oracle.py" --port 0 --port-file "$OUT/oracle.port" &
ORACLE_PID=$!
trap 'kill $ORACLE_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -e "$OUT/oracle.port" ] && break; sleep 0.1; done
[ -e "$OUT/oracle.port" ] || { echo "run.sh: the oracle server did not start" >&2; exit 1; }
URL="http://127.0.0.1:$(cat "$OUT/oracle.port")/v1"

# ---- 4 answers ----------------------------------------------------------------------------------
stage 4 "answers on the pair-building prompts: ./trainer generate"
# Samples at temperature 1, the models' own distributions: a student this small is so sure of its
# layout that at 0.7 nine in ten pairs of samples were identical, and the on-policy judge had
# almost nothing to compare.
A="$OUT/answers"; P="$D/pair_prompts.jsonl"
answers "$OUT/models/target" "$P" "$A/target_1.jsonl" 1 1
answers "$OUT/models/target" "$P" "$A/target_2.jsonl" 1 2
answers "$OUT/models/weak_a" "$P" "$A/weak_a.jsonl" 1 1
answers "$OUT/models/weak_b" "$P" "$A/weak_b.jsonl" 1 1
"$CLAIR" generate --in "$P" --out "$A/stronger.jsonl" --base-url "$URL" --model oracle --temperature 0 \
  --max-tokens 128 --concurrency 4 --quiet
progress 5 5 "$t0" "answer files"

# ---- 5 pairs ------------------------------------------------------------------------------------
stage 5 "pairs: ./clair revise (CLAIR), stronger preferred, on-/off-policy judge; ./clair stats"
PR="$OUT/pairs"
"$CLAIR" revise --in "$A/target_1.jsonl" --out "$PR/clair.jsonl" --base-url "$URL" --model oracle \
  --concurrency 4 --quiet
$PY "$HERE/study.py" check-accounted "$A/target_1.jsonl" "$PR/clair.jsonl" "$PR/clair.jsonl.dropped.jsonl" \
  "$PR/clair.jsonl.failed.jsonl"
$PY "$HERE/study.py" sp-pairs "$A/stronger.jsonl" "$A/target_1.jsonl" "$PR/stronger.jsonl"
judge() {   # judge NAME A B: ./clair judge (both orders), then the pairs of the judge's picks
  "$CLAIR" judge --a "$2" --b "$3" --out "$PR/$1.verdicts.jsonl" --base-url "$URL" --model oracle \
    --template "$HERE/judge_template.json" --temperature 0 --max-tokens 128 --concurrency 4 --quiet
  # two identical answers make no pair (PR/NAME.identical.jsonl)
  $PY "$HERE/study.py" judge-pairs "$PR/$1.verdicts.jsonl" "$PR/$1.jsonl"
}
judge onpolicy "$A/target_1.jsonl" "$A/target_2.jsonl"
judge offpolicy "$A/weak_a.jsonl" "$A/weak_b.jsonl"
$PY "$HERE/study.py" align "$OUT/datasets" clair="$PR/clair.jsonl" stronger="$PR/stronger.jsonl" \
  onpolicy="$PR/onpolicy.jsonl" offpolicy="$PR/offpolicy.jsonl"
for n in clair stronger onpolicy offpolicy; do
  "$CLAIR" stats "$OUT/datasets/$n.jsonl" --json >"$OUT/datasets/stats_$n.json"
done
$PY "$HERE/study.py" stats-table "$OUT/datasets" clair stronger onpolicy offpolicy >/dev/null
cp "$OUT/datasets/table1.md" "$OUT/table1.md"

# ---- 6 baseline ---------------------------------------------------------------------------------
stage 6 "baseline: the target and the oracle on the held-out prompts"
E="$OUT/eval"
answers "$OUT/models/target" "$D/heldout.jsonl" "$E/target.jsonl" 0 0
"$CLAIR" generate --in "$D/heldout.jsonl" --out "$E/stronger.jsonl" --base-url "$URL" --model oracle \
  --temperature 0 --max-tokens 128 --concurrency 4 --quiet
grade "$E/target.jsonl"; grade "$E/stronger.jsonl"
$PY -c "import json,sys; print(json.dumps({'target': json.load(open(sys.argv[1])), 'stronger': json.load(open(sys.argv[2]))}))" \
  "$E/target.grade.json" "$E/stronger.grade.json" >"$E/baseline.json"
kill $ORACLE_PID 2>/dev/null || true

# align_run DATASET OBJECTIVE LR SEED DIR: one alignment run of the common step budget.
align_run() {
  train_model "$5" --model "$OUT/models/target" --data "$OUT/datasets/$1.jsonl" --loss "$2" --beta $BETA \
    --lr "$3" --batch-size $ALIGN_BATCH --micro-batch $ALIGN_BATCH --epochs 1000 --max-steps $ALIGN_STEPS --seed "$4"
}

# ---- 7 search -----------------------------------------------------------------------------------
stage 7 "learning-rate search: grid {${LR_GRID:-none, fixed $ALIGN_LR}} per dataset x objective, dev accuracy"
S="$OUT/search"; mkdir -p "$S"
cells=$(for d in $DATASETS_TRAINED; do for o in $OBJECTIVES; do echo "$d-$o"; done; done)
ncells=$(echo "$cells" | wc -l)
if [ -n "$LR_GRID" ]; then
  total=$((ncells * $(echo "$LR_GRID" | wc -w))); i=0; t0=$(date +%s)
  for c in $cells; do
    for lr in $LR_GRID; do
      align_run "${c%%-*}" "${c#*-}" "$lr" 0 "$S/$c-lr$lr"
      answers "$S/$c-lr$lr" "$D/dev.jsonl" "$S/$c-lr$lr.dev.jsonl" 0 0
      grade "$S/$c-lr$lr.dev.jsonl"
      i=$((i + 1)); progress $i $total "$t0" "search runs ($c lr $lr)"
    done
    # the best dev accuracy wins; ties go to the smaller learning rate (the grid is ascending)
    best=$(for lr in $LR_GRID; do $PY -c "import json,sys; print(json.load(open(sys.argv[1]))['accuracy'], sys.argv[2])" \
      "$S/$c-lr$lr.dev.grade.json" "$lr"; done | sort -s -k1,1gr | head -n 1 | cut -d' ' -f2)
    echo "$best" >"$S/$c.lr"
  done
else
  for c in $cells; do echo "$ALIGN_LR" >"$S/$c.lr"; done
fi

# ---- 8 train, 9 evaluate ------------------------------------------------------------------------
stage 8 "alignment runs: $ncells cells x $SEEDS seed(s), $ALIGN_STEPS steps of $ALIGN_BATCH pairs each"
total=$((ncells * SEEDS)); i=0; t0=$(date +%s)
for c in $cells; do
  for s in $(seq 0 $((SEEDS - 1))); do
    align_run "${c%%-*}" "${c#*-}" "$(cat "$S/$c.lr")" "$s" "$OUT/train/$c-s$s"
    i=$((i + 1)); progress $i $total "$t0" "runs ($c seed $s)"
  done
done
stage 9 "evaluation: greedy answers on the held-out prompts, graded"
i=0; t0=$(date +%s)
for c in $cells; do
  for s in $(seq 0 $((SEEDS - 1))); do
    answers "$OUT/train/$c-s$s" "$D/heldout.jsonl" "$E/$c-s$s.jsonl" 0 0
    grade "$E/$c-s$s.jsonl"
    i=$((i + 1)); progress $i $total "$t0" "evaluations ($c seed $s)"
  done
done

# ---- 10 report ----------------------------------------------------------------------------------
stage 10 "report: results.md, table1.md, plots/"
$PY "$HERE/study.py" results "$OUT" >/dev/null
for c in $cells; do
  "$TRAINER" plot --metrics "$OUT/train/$c-s0/metrics.jsonl" --out "$OUT/plots/$c.svg" --title "$c (seed 0)" >/dev/null
done
"$TRAINER" plot --table "$OUT/results.tsv" --out "$OUT/plots/results.svg" --title "held-out accuracy" >/dev/null
echo "[repro $(elapsed)] done: $OUT/results.md, $OUT/table1.md, $OUT/plots/" >&2
cat "$OUT/table1.md" "$OUT/results.md"
