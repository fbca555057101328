#!/usr/bin/env bash
# tests/gpu/run.sh - every GPU check of the project in one script (under 8 minutes on an H100).
#
#   OUT=/some/dir tests/gpu/run.sh        (from anywhere; $OUT defaults to /tmp/clair-apo-gpu)
#
# 1. builds everything with nvcc (./build.sh; model + cuda parts alone if another part fails),
# 2. runs every executable in build/gpu/ (the CUDA kernel and parity tests, apo.h's CUDA test)
# and the refusal test, 3. benchmarks APO-zero steps on random Llama-3.2-1B (1024 and 2048
# tokens) and Llama-3-8B shapes (lean mode), most important first, none started after 340 s,
# 4. runs compute-sanitizer's memcheck over the kernel tests in the time left, 5. prints a short
# table (the row to add to docs/gpu-log.md). Full logs go to $OUT; each step has its own timeout
# so one hang cannot use up the whole run. Exit status: 0 when every test passed.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/clair-apo-gpu}
mkdir -p "$OUT"
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
ROWS=()
row() { ROWS+=("$(printf '%-34s %s' "$1" "$2")"); }

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown) $(git status --porcelain 2>/dev/null | wc -l) uncommitted paths"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi failed"
  command -v nvcc || ls /usr/local/cuda/bin/nvcc
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

# 1. build (-O2, sm_80 + sm_90); nvcc warnings are collected too
echo "== build ($(el) s)"
if timeout 300 ./build.sh > "$OUT/build.log" 2>&1; then row "build" "ok ($(el) s)"
else
  row "build" "FAILED (see build.log)"
  tail -n 30 "$OUT/build.log"
fi
grep -i "warning" "$OUT/build.log" > "$OUT/build-warnings.txt" || true
[ -s "$OUT/build-warnings.txt" ] && row "build warnings" "$(wc -l < "$OUT/build-warnings.txt") (build-warnings.txt)"

# 2. tests
FAILS=0
runone() {   # runone NAME SECONDS CMD...
  local name=$1 secs=$2; shift 2
  local log="$OUT/test-$name.log" rc=0 t=$(date +%s)
  timeout "$secs" "$@" > "$log" 2>&1 || rc=$?
  local dt=$(( $(date +%s) - t ))
  if [ $rc -eq 0 ]; then row "$name" "ok (${dt} s)"
  elif [ $rc -eq 77 ]; then row "$name" "skip: $(tail -n 1 "$log")"
  elif [ $rc -eq 124 ]; then row "$name" "TIMEOUT after ${secs} s"; FAILS=$((FAILS+1))
  else row "$name" "FAIL rc=$rc: $(grep -m1 FAIL "$log" | cut -c1-100)"; FAILS=$((FAILS+1)); fi
  echo "-- $name: rc=$rc (${dt} s)"; grep -E "^(FAIL|ok|  |    )" "$log" | grep -v "^ok" | head -n 5
}
echo "== tests ($(el) s)"
[ -x build/cuda_nodevice ] && runone cuda_nodevice 60 build/cuda_nodevice
for t in build/gpu/*; do
  [ -f "$t" ] && [ -x "$t" ] || continue
  runone "$(basename "$t")" 150 "$t"
done

# 3. benchmark: each configuration in its own process (fresh memory), bounded in time
echo "== benchmark ($(el) s)"
BENCH=()
bench() {   # bench SECONDS ARGS...
  local secs=$1; shift
  [ -x build/cuda_bench ] || { BENCH+=("cuda_bench not built"); return; }
  if [ "$(el)" -gt 340 ]; then BENCH+=("$* : skipped (time budget: the script must end within 8 minutes)"); return; fi
  local rc=0
  timeout "$secs" build/cuda_bench "$@" > "$OUT/bench.tmp" 2> "$OUT/bench.err" || rc=$?
  cat "$OUT/bench.tmp" >> "$OUT/bench.log"; { echo "## $*"; cat "$OUT/bench.err"; } >> "$OUT/bench-steps.log"
  local line; line=$(grep -E "^(RESULT|REFUSED|FAIL)" "$OUT/bench.tmp" | head -n 1)
  [ $rc -eq 124 ] && line="TIMEOUT after ${secs} s: $*"
  [ $rc -eq 77 ] && line="skip (no CUDA device): $*"
  [ -z "$line" ] && line="rc=$rc, no result: $* ($(tail -n 1 "$OUT/bench.err"))"
  BENCH+=("$line"); echo "$line"
}
: > "$OUT/bench.log"; : > "$OUT/bench-steps.log"
bench 60 --shape tiny --tokens 1024 --mode fp32 --steps 3                  # smoke
bench 90 --shape 1b --tokens 2048 --mode bf16 --steps 5
bench 120 --shape 8b --tokens 2048 --mode lean --steps 3
bench 90 --shape 1b --tokens 1024 --mode fp32 --steps 3                    # baseline (TF32 off)
bench 90 --shape 1b --tokens 1024 --mode bf16 --steps 5
bench 120 --shape 8b --tokens 1024 --mode lean --steps 3
bench 90 --shape 1b --tokens 2048 --mode lean --steps 5
bench 90 --shape 1b --tokens 2048 --mode bf16 --steps 5 --no-recompute

# 4. memcheck of the kernel tests (out-of-bounds and misaligned accesses), in the time left
if command -v compute-sanitizer >/dev/null && [ -x build/gpu/cuda_kernels ] && [ "$(el)" -lt 390 ]; then
  echo "== compute-sanitizer ($(el) s)"
  left=$(( 460 - $(el) )); [ $left -gt 90 ] && left=90
  rc=0; timeout "$left" compute-sanitizer --tool memcheck --error-exitcode 9 build/gpu/cuda_kernels > "$OUT/memcheck.log" 2>&1 || rc=$?
  case $rc in 0) row "memcheck cuda_kernels" "clean";; 124) row "memcheck cuda_kernels" "timeout after ${left} s (not a failure)";;
    *) row "memcheck cuda_kernels" "ERRORS rc=$rc (memcheck.log)"; FAILS=$((FAILS+1));; esac
else
  row "memcheck cuda_kernels" "not run (no compute-sanitizer or no time left)"
fi

# 5. the table
{
  echo
  echo "== summary ($(el) s total; logs in $OUT)"
  sed -n '2,4p' "$OUT/machine.txt"
  for r in "${ROWS[@]}"; do echo "$r"; done
  echo "-- benchmark (APO-zero steps, random init; MFU vs --peak-tflops 989)"
  for b in "${BENCH[@]}"; do
    echo "$b" | sed -E 's/^RESULT //; s/ seq_len=[0-9]+//; s/ backend=[^ ]+//; s/ loss0=[^ ]+ loss=[^ ]+//'
  done
  echo "failures: $FAILS"
} | tee "$OUT/summary.txt"
[ "$FAILS" -eq 0 ]
