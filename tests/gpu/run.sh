#!/usr/bin/env bash
# tests/gpu/run.sh - every GPU question of the project in one call of at most 540 s.
#
#   OUT=DIR tests/gpu/run.sh --commit SHA         on a GPU machine (or COMMIT=SHA in the environment)
#   OUT=DIR tests/gpu/run.sh --dry-run [--prebuilt BUILD_DIR]     on the CPU emulator, toy sizes
#
# A GPU is lent here for about 15 minutes at a time, so one call must answer, in order of
# importance: (1) does it build; (2) is it correct: the kernel tests, GPU-vs-CPU parity in every
# mode, the refusals, compute-sanitizer when it works; (3) the cuBLAS ceiling at the exact 8B
# and 1B GEMM shapes (to split the MFU between cuBLAS and our code); (4) Llama-3-8B lean at
# 2048-token sequences, 2 and 4 pairs per micro-batch, 2 micro-batches per step as the trainer
# accumulates, on a card capped to 80 GB by a ballast allocation, and with selective recompute
# at 1 pair (4 micro-batches per step: the same tokens); (5) Llama-3.2-1B at 2048-token
# sequences, bf16 and lean, with and without recompute; (6) the PyTorch baseline
# (bench/gpu_bench_torch.py, same shapes; it runs on the GPU while our build runs on the CPUs,
# and the build waits for it, so no two measurements share the GPU); (7) a time split of one 8B
# step by category (CUDA events); (8) the older rows as time allows.
#
# Budget: the whole script ends within BUDGET_S (540) seconds whatever happens: every command
# runs under `timeout` with at most the time left (less 15 s to pack up), a stage with too little
# time left is skipped and says so, the build and its fallback share one budget.
# Output: at most 2 files in $OUT (a GPU run brings back at most 8): summary.txt (machine, commit,
# every pass/fail/skip line, the benchmark table, the docs/gpu-log.md row) and logs.tar.gz (every
# log). Exit status 0 when nothing failed.
#
# --dry-run runs every stage on the CPU emulator (tests/gpu/emu) at toy sizes, so a mistake in
# this script never costs a GPU window; `./build.sh test cuda` runs it (with --prebuilt).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2

DRY=0; PREBUILT=""; COMMIT=${COMMIT:-}
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1 ;;
    --prebuilt) PREBUILT=${2:?--prebuilt needs a build folder}; shift ;;
    --commit) COMMIT=${2:?--commit needs a commit id}; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -z "$COMMIT" ] && COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo "unknown (pass --commit)")
OUT=${OUT:-/tmp/clair-apo-gpu}
BUDGET_S=${BUDGET_S:-540}
mkdir -p "$OUT" || exit 2
rm -f "$OUT/summary.txt" "$OUT/logs.tar.gz"
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/clair-apo-gpu.XXXXXX") || exit 2
T0=$(date +%s)
DEADLINE=$((T0 + BUDGET_S - 15))          # 15 s to write the summary and the tarball
FAILS=0
ROWS=()                                   # pass/fail/skip lines
RESULTS=()                                # benchmark lines

el() { echo $(($(date +%s) - T0)); }
left() { echo $((DEADLINE - $(date +%s))); }
row() { ROWS+=("$(printf '%-44s %s' "$1" "$2")"); echo "-- $1: $2"; }
fail() { row "$1" "FAIL: $2"; FAILS=$((FAILS + 1)); }
# secs_for MAX: MAX, or the time left when that is less
secs_for() { local l; l=$(left); [ "$1" -lt "$l" ] && echo "$1" || echo "$l"; }

# step NAME MAX_SECONDS CMD...: runs CMD (log: $LOGS/NAME.log) under the time left; a row says
# ok / skip (exit 77, with the reason) / FAIL / TIMEOUT. Sets STEP_RC; 0 when it passed.
step() {
  local name=$1 max=$2 secs rc=0 t; shift 2
  secs=$(secs_for "$max")
  if [ "$secs" -lt 5 ]; then row "$name" "skipped: no time left ($(el) s used)"; STEP_RC=124; return 1; fi
  t=$(date +%s)
  timeout -k 5 "$secs" "$@" > "$LOGS/$name.log" 2>&1 || rc=$?
  STEP_RC=$rc
  local dt=$(($(date +%s) - t))
  case $rc in
    0) row "$name" "ok (${dt} s)" ;;
    77) row "$name" "skip: $(grep -m1 -i 'skip' "$LOGS/$name.log" | cut -c1-100)" ;;
    124|137) fail "$name" "timeout after ${secs} s (log $name.log)" ;;
    *) fail "$name" "exit $rc: $(grep -m1 -E 'FAIL|error|REFUSED' "$LOGS/$name.log" | cut -c1-110) (log $name.log)" ;;
  esac
  [ "$rc" -eq 0 ]
}
# bench NAME MAX_SECONDS CMD...: a step whose output lines RESULT / CEILING / SPLIT / REFUSED go
# to the benchmark table (a refusal is an answer, not a failure: the plan is in the line).
bench() {
  local name=$1; shift
  step "$name" "$@"
  local rc=$STEP_RC lines
  lines=$(grep -E '^(RESULT|CEILING|SPLIT|REFUSED)' "$LOGS/$name.log" 2>/dev/null)
  if [ "$rc" -eq 2 ] && [ -n "$lines" ]; then
    ROWS[${#ROWS[@]}-1]="$(printf '%-44s %s' "$name" "refused (does not fit: see the table)")"
    FAILS=$((FAILS - 1))
  fi
  [ -n "$lines" ] && RESULTS+=("$lines")
  return 0
}

# ---- 0. the machine --------------------------------------------------------------------------
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "commit: $COMMIT"
  if [ $DRY -eq 1 ]; then echo "mode: DRY RUN on the CPU emulator (tests/gpu/emu), toy sizes: no numbers here mean anything"
  else
    echo "mode: GPU"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,compute_cap --format=csv,noheader 2>&1 | head -n 2
  fi
  echo "nvcc: $({ command -v nvcc || ls /usr/local/cuda/bin/nvcc; } 2>/dev/null | head -n 1)"
  echo "python3: $(python3 -c 'import sys; print(sys.version.split()[0])' 2>&1)"
} > "$LOGS/machine.txt" 2>&1
cat "$LOGS/machine.txt"

# ---- (6, started first) the PyTorch baseline, on the GPU while the CPUs build ----------------
PY="python3 bench/gpu_bench_torch.py"
torch_baseline() {   # sequential; each run bounded; all of it within TORCH_S
  local until=$(($(date +%s) + TORCH_S)) s
  torch_run() {
    local name=$1; shift
    s=$((until - $(date +%s)))
    [ "$s" -lt 20 ] && { echo "SKIPPED $name: the baseline's time is used up"; return; }
    echo "## $name"
    # shellcheck disable=SC2086  # $PY is the interpreter and the script
    timeout -k 5 "$s" env PYTHONUNBUFFERED=1 $PY "$@" 2>&1
    echo "## $name: exit $?"
  }
  if [ $DRY -eq 1 ]; then
    torch_run torch_dry --dry-run
  else
    torch_run torch_8b_2pairs_ckpt --shape 8b --pairs 2 --accum 2 --steps 2 --checkpointing --cap-gib 79.6
    torch_run torch_1b_2pairs_ckpt --shape 1b --pairs 2 --accum 2 --steps 3 --checkpointing --cap-gib 79.6
    torch_run torch_1b_2pairs --shape 1b --pairs 2 --accum 2 --steps 3 --cap-gib 79.6
    torch_run torch_8b_4pairs_ckpt --shape 8b --pairs 4 --accum 2 --steps 2 --checkpointing --cap-gib 79.6
    torch_run torch_8b_2pairs --shape 8b --pairs 2 --accum 2 --steps 2 --cap-gib 79.6   # likely out of memory
  fi
}
TORCH_S=$(secs_for 170)
[ $DRY -eq 1 ] && TORCH_S=$(secs_for 60)
torch_baseline > "$LOGS/torch.log" 2>&1 &
TORCH_PID=$!

# ---- 1. build -----------------------------------------------------------------------------------
# The GPU programs only, compiled in parallel (sm_90, or the card's compute capability): the
# window is too short for ./build.sh's serial build of every part. ./build.sh is the fallback,
# in what is left of the same budget.
BUILD_S=$(secs_for 240)
BUILD_END=$(($(date +%s) + BUILD_S))
NVCC=$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true)
build_gpu_programs() {   # build_gpu_programs DIR: the GPU programs into DIR, in parallel
  local B=$1 cc=${CC:-cc} arch pids=() p rc=0 home src
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d '. ')
  [ -z "$arch" ] && arch=90
  local omp=() nvomp=()
  if echo 'int main(void){return 0;}' | $cc -fopenmp -x c - -o /dev/null 2>/dev/null; then omp=(-fopenmp); nvomp=(-Xcompiler -fopenmp); fi
  local nvflags=(-O2 -std=c++17 -gencode "arch=compute_$arch,code=sm_$arch" -Xcompiler "-Wall,-Wextra")
  home=$(dirname "$(dirname "$NVCC")")
  local libs=(-L"$home/lib64" "-Wl,-rpath,$home/lib64" -lcublas -lcublasLt -lcudart -lstdc++ -lpthread -lm)
  mkdir -p "$B/gpu"
  "$NVCC" "${nvflags[@]}" -c kernels.cu -o "$B/kernels.o" & pids+=($!)
  for src in util.c llama/json.c llama/safetensors.c llama/checkpoint.c llama/gguf.c; do
    $cc -O2 -Wall -Wextra -std=c99 -c "$src" -o "$B/$(basename "${src%.c}").o" & pids+=($!)
  done
  for src in llama/model.c llama/gemm.c; do
    $cc -O3 -ffp-contract=fast -Wall -Wextra -std=c99 "${omp[@]}" -c "$src" -o "$B/$(basename "${src%.c}").o" & pids+=($!)
  done
  "$NVCC" -arch="sm_$arch" -O2 -Xcompiler -Wall,-Wextra tests/apo/test_apo_cuda.cu -o "$B/gpu/test_apo_cuda" & pids+=($!)
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  [ $rc -eq 0 ] || return 1
  local objs=("$B/util.o" "$B/json.o" "$B/safetensors.o" "$B/checkpoint.o" "$B/gguf.o" "$B/model.o" "$B/gemm.o")
  pids=()
  "$NVCC" "${nvflags[@]}" "${nvomp[@]}" tests/gpu/test_kernels.cu "${objs[@]}" -lcublas -lcublasLt -o "$B/gpu/cuda_kernels" &
  pids+=($!)
  link_prog() { $cc -O2 -Wall -Wextra -std=c99 -I"$home/include" "$2" "$B/kernels.o" "${objs[@]}" "${omp[@]}" "${libs[@]}" -o "$B/$1"; }
  link_prog gpu/cuda_parity tests/gpu/test_parity.c & pids+=($!)
  link_prog cuda_bench bench/gpu_bench.c & pids+=($!)
  link_prog cuda_nodevice tests/gpu/test_nodevice.c & pids+=($!)
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}
if [ -n "$PREBUILT" ]; then
  B=$PREBUILT
  row "build" "prebuilt ($B)"
elif [ $DRY -eq 1 ]; then
  B=build/gpu-dryrun
  step build "$BUILD_S" env BUILD_DIR="$B" NVCC=none ./build.sh
elif [ -z "$NVCC" ]; then
  B=build/gpurun
  fail build "no nvcc on this machine (PATH or /usr/local/cuda/bin)"
else
  B=build/gpurun
  export -f build_gpu_programs; export NVCC
  # shellcheck disable=SC2016  # $0 is the folder, expanded by the inner bash
  if ! step build "$BUILD_S" bash -c 'build_gpu_programs "$0"' "$B"; then
    s=$((BUILD_END - $(date +%s)))
    arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d '. ')
    [ "$s" -gt 30 ] && step build_fallback "$s" env BUILD_DIR=build/gpurun-full CUDA_ARCHS="${arch:-90}" ./build.sh &&
      B=build/gpurun-full
  fi
fi
cat "$LOGS"/build*.log 2>/dev/null | grep -i "warning" > "$LOGS/build-warnings.txt"
[ -s "$LOGS/build-warnings.txt" ] && row "build warnings" "$(wc -l < "$LOGS/build-warnings.txt") (build-warnings.txt)"
# The programs: nvcc builds, or the emulator builds of the dry run (mk/45-cuda.sh)
if [ $DRY -eq 1 ]; then
  KERNELS=$B/emu/cuda_kernels; PARITY=$B/emu/cuda_parity; BENCH=$B/emu/cuda_bench; PLAN=$B/emu/cuda_plan
else
  KERNELS=$B/gpu/cuda_kernels; PARITY=$B/gpu/cuda_parity; BENCH=$B/cuda_bench; PLAN=""
fi

# The baseline had the GPU during the build; our measurements wait for it to end (its runs are
# bounded by TORCH_S; this bounds the wait by the budget too).
while kill -0 "$TORCH_PID" 2>/dev/null && [ "$(left)" -gt 60 ]; do sleep 1; done
kill "$TORCH_PID" 2>/dev/null
wait "$TORCH_PID" 2>/dev/null
grep -E '^(RESULT|REFUSED)' "$LOGS/torch.log" > "$LOGS/torch.results" 2>/dev/null
if grep -q '^SKIP' "$LOGS/torch.log"; then row "torch baseline" "skip: $(grep -m1 '^SKIP' "$LOGS/torch.log" | cut -c1-90)"
elif [ -s "$LOGS/torch.results" ]; then
  row "torch baseline" "$(wc -l < "$LOGS/torch.results") result line(s), $(grep -cE '^## .*: exit [^02]' "$LOGS/torch.log") run(s) failed (torch.log)"
  RESULTS+=("$(cat "$LOGS/torch.results")")
else fail "torch baseline" "no result (torch.log: $(grep -m1 -iE 'error|Traceback' "$LOGS/torch.log" | cut -c1-90))"; fi

# ---- 2. correctness -------------------------------------------------------------------------------
if [ $DRY -eq 1 ]; then
  step cuda_kernels 60 "$KERNELS"
  step cuda_parity 60 "$PARITY" --case gqa_tied --mode fp32 --steps 1
  step cuda_plan 30 "$PLAN"
  step torch_script_compiles 30 python3 -c "import py_compile; py_compile.compile('bench/gpu_bench_torch.py', doraise=True, cfile='$LOGS/t.pyc')"
else
  step cuda_nodevice 30 "$B/cuda_nodevice"
  step cuda_kernels 90 "$KERNELS"
  step cuda_parity 120 "$PARITY" --steps 3
  step cuda_parity_more_modes 60 sh -c "'$PARITY' --mode 'bf16 lean' --steps 3 && '$PARITY' --mode 'bf16+recompute' --steps 3 && '$PARITY' --mode 'bf16 lean+selective' --steps 3"
  for t in "$B"/gpu/*; do
    case $(basename "$t") in cuda_kernels|cuda_parity) continue ;; esac
    [ -f "$t" ] && [ -x "$t" ] && step "$(basename "$t")" 60 "$t"
  done
  if command -v compute-sanitizer > /dev/null; then
    step memcheck_cuda_kernels 60 compute-sanitizer --tool memcheck --error-exitcode 9 "$KERNELS"
    if [ "$STEP_RC" -ne 0 ] && grep -qiE "not supported|unsupported|could not be" "$LOGS/memcheck_cuda_kernels.log"; then
      ROWS[${#ROWS[@]}-1]="$(printf '%-44s %s' memcheck_cuda_kernels "skip: compute-sanitizer not supported here")"
      FAILS=$((FAILS - 1))
    elif [ "$STEP_RC" -eq 124 ] || [ "$STEP_RC" -eq 137 ]; then
      ROWS[${#ROWS[@]}-1]="$(printf '%-44s %s' memcheck_cuda_kernels "incomplete: timed out (not a failure)")"
      FAILS=$((FAILS - 1))
    fi
  else
    row memcheck_cuda_kernels "skip: no compute-sanitizer"
  fi
fi

# ---- 3-8. benchmarks ------------------------------------------------------------------------------
if [ $DRY -eq 1 ]; then
  S=(--shape toy --seq-len 24 --steps 1)
  bench ceiling_8b 30 "$BENCH" --shape toy --pairs 1 --seq-len 24 --gemm-ceiling
  bench ceiling_1b 30 "$BENCH" --shape toy --pairs 1 --seq-len 16 --gemm-ceiling
  bench 8b_lean_2pairs 60 "$BENCH" "${S[@]}" --mode lean --pairs 1 --accum 2 --cap-gib 70
  bench 8b_lean_4pairs 60 "$BENCH" "${S[@]}" --mode lean --pairs 2 --accum 1 --cap-gib 70
  bench 8b_lean_selective 60 "$BENCH" "${S[@]}" --mode lean --pairs 1 --accum 2 --recompute 2 --cap-gib 70
  bench 1b_bf16_recompute 60 "$BENCH" "${S[@]}" --mode bf16 --pairs 1
  bench 1b_lean_no_recompute 60 "$BENCH" "${S[@]}" --mode lean --pairs 1 --no-recompute
  bench split_8b_lean 60 "$BENCH" "${S[@]}" --mode lean --pairs 1 --profile
  bench older_fp32 60 "$BENCH" "${S[@]}" --mode fp32 --pairs 1
  bench refused_8b 30 "$BENCH" --shape 8b --pairs 4 --seq-len 2048 --mode lean --cap-gib 60
else
  CAP=(--cap-gib 79.6)                    # an 80 GB H100's memory
  S8=(--shape 8b --seq-len 2048 --mode lean "${CAP[@]}")
  S1=(--shape 1b --seq-len 2048 "${CAP[@]}")
  bench ceiling_8b 60 "$BENCH" --shape 8b --pairs 2 --seq-len 2048 --gemm-ceiling
  bench ceiling_1b 40 "$BENCH" --shape 1b --pairs 2 --seq-len 2048 --gemm-ceiling
  bench 8b_lean_2pairs 150 "$BENCH" "${S8[@]}" --pairs 2 --accum 2 --steps 3
  bench 8b_lean_4pairs 150 "$BENCH" "${S8[@]}" --pairs 4 --accum 2 --steps 2
  bench 8b_lean_selective 120 "$BENCH" "${S8[@]}" --pairs 1 --accum 4 --steps 2 --recompute 2
  bench 1b_bf16_recompute 60 "$BENCH" "${S1[@]}" --mode bf16 --pairs 2 --accum 2 --steps 3
  bench 1b_bf16_no_recompute 60 "$BENCH" "${S1[@]}" --mode bf16 --pairs 2 --accum 2 --steps 3 --no-recompute
  bench 1b_lean_recompute 60 "$BENCH" "${S1[@]}" --mode lean --pairs 2 --accum 2 --steps 3
  bench 1b_lean_no_recompute 60 "$BENCH" "${S1[@]}" --mode lean --pairs 2 --accum 2 --steps 3 --no-recompute
  bench split_8b_lean 120 "$BENCH" "${S8[@]}" --pairs 2 --accum 1 --steps 2 --profile
  # 8. the older rows (1024-token sequences, fp32 without TF32)
  bench older_1b_fp32_1024 60 "$BENCH" --shape 1b --seq-len 1024 --pairs 1 --mode fp32 --steps 2
  bench older_1b_bf16_1024 60 "$BENCH" --shape 1b --seq-len 1024 --pairs 2 --mode bf16 --steps 3
  bench older_8b_lean_1024 90 "$BENCH" --shape 8b --seq-len 1024 --pairs 2 --mode lean --steps 2 "${CAP[@]}"
fi

# ---- the summary and the logs -------------------------------------------------------------------
{
  cat "$LOGS/machine.txt"
  echo "time: $(el) s of $BUDGET_S"
  echo
  echo "== checks"
  for r in "${ROWS[@]}"; do echo "$r"; done
  echo
  echo "== benchmarks (MFU against --peak-tflops, default 989 = H100/H200 SXM dense bf16)"
  for r in "${RESULTS[@]}"; do echo "$r"; done
  echo
  echo "failures: $FAILS"
  echo "docs/gpu-log.md row: | $(date -u +%Y-%m-%d) | $(sed -n 's/^mode: //p; s/^NVIDIA/NVIDIA/p' "$LOGS/machine.txt" | head -n 2 | tr '\n' ' ')| $COMMIT | $FAILS failure(s); see summary.txt |"
} > "$LOGS/summary.txt"
cp "$LOGS/summary.txt" "$OUT/summary.txt"
tar -czf "$OUT/logs.tar.gz" -C "$LOGS" . 2>/dev/null || echo "could not write $OUT/logs.tar.gz"
cat "$OUT/summary.txt"
rm -rf "$LOGS"
[ "$FAILS" -eq 0 ]
