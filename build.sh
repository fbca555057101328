#!/usr/bin/env bash
# clair-apo build script.
#
#   ./build.sh            build everything this machine can build (CPU always; kernels.cu when nvcc exists)
#   ./build.sh test       build, then run every test (GPU tests say "skipped" without a GPU)
#   ./build.sh test PART  build, then run the tests of the named parts only (apo, clair, model, ...)
#   ./build.sh asan       build and run the tests under AddressSanitizer + UBSan
#   ./build.sh clean      remove build outputs
#
# Each part of the project has its build and test steps in mk/NN-part.sh, read in order; a part
# only links what the parts before it built. A part defines build_<part> and test_<part>; this
# file holds the shared helpers and the object lists, and sequences the parts.
# Environment: CC, NVCC (NVCC=none: build as without the CUDA toolkit), OPT, BUILD_DIR (another
# output folder; ./trainer and ./clair then go there too).
set -euo pipefail
cd "$(dirname "$0")"

CC=${CC:-cc}
NVCC=${NVCC:-$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true)}
[ "$NVCC" = none ] && NVCC=""
OPT=${OPT:--O2}
WARN="-Wall -Wextra"
SAN=""
OMP=""
if echo 'int main(void){return 0;}' | $CC -fopenmp -x c - -o /dev/null 2>/dev/null; then OMP="-fopenmp"; fi
BUILD=${BUILD_DIR:-build}
mode=${1:-all}
[ $# -gt 0 ] && shift
ONLY=" $* "   # test/asan: the parts whose tests run (all when empty)
case "$mode" in
  all|test) ;;
  asan) SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"; OPT="-O1 -g"; BUILD=${BUILD_DIR:-build}/asan ;;
  clean) rm -rf build trainer clair; exit 0 ;;
  -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
  *) echo "build.sh: unknown mode '$mode' (use: all, test, asan, clean)" >&2; exit 2 ;;
esac
CFLAGS="$OPT $WARN $SAN"
mkdir -p "$BUILD"

# ---- incremental builds ------------------------------------------------------------------------
# An object is recompiled when it is missing or older than its source, any header of the project
# or the build scripts; a change of compiler or flags (the stamp below) recompiles everything.
HEADERS=$(ls ./*.h llama/*.h train/*.h tests/gpu/emu/*.h 2>/dev/null)
stamp="$CC $CFLAGS $OMP ${NVCC:-no-nvcc}"
if [ "$(cat "$BUILD/flags" 2>/dev/null)" != "$stamp" ]; then
  rm -f "$BUILD"/*.o "$BUILD"/emu/*.o
  printf '%s\n' "$stamp" >"$BUILD/flags"
fi
# stale OUT IN...: true when OUT must be rebuilt.
stale() {
  local out=$1 f; shift
  [ -e "$out" ] || return 0
  for f in "$@" $HEADERS build.sh mk/*.sh; do [ "$f" -nt "$out" ] && return 0; done
  return 1
}
# cc_obj OUT SRC [FLAGS...]: SRC -> object OUT when stale. Written to a temporary name and renamed
# (separate commands, so that under set -e a failing compiler stops the build): an interrupted
# compile never leaves half an object to link.
cc_obj() {
  local out=$1 src=$2; shift 2
  if stale "$out" "$src"; then
    $CC $CFLAGS "$@" -std=c99 -c "$src" -o "$out.tmp.$$"
    mv -f "$out.tmp.$$" "$out"
  fi
}
# cc_prog OUT ARGS...: compiles and links a program (every time: linking is quick), renamed into
# place like cc_obj.
cc_prog() {
  local out=$1; shift
  $CC $CFLAGS -std=c99 "$@" -o "$out.tmp.$$"
  mv -f "$out.tmp.$$" "$out"
}

# ---- objects, by the part that builds them -----------------------------------------------------
# util.c (errors, time, files, random numbers, flags) is under every program: built first.
UTIL_OBJ="$BUILD/util.o"
cc_obj "$UTIL_OBJ" util.c
# mk/30-model.sh: JSON (clair.h compiled once), safetensors, checkpoints, GGUF, the model math.
LLAMA_OBJS="$UTIL_OBJ $BUILD/llama_json.o $BUILD/llama_safetensors.o $BUILD/llama_checkpoint.o \
$BUILD/llama_gguf.o $BUILD/llama_model.o $BUILD/llama_gemm.o"
# mk/40-tokenizer.sh
TOKENIZER_OBJS="$BUILD/llama_tokenizer.o"
# mk/45-cuda.sh: kernels.o with nvcc, else the stub that says "built without CUDA"; and the
# CUDA libraries to link with it.
CUDA_OBJ=""
CUDA_LIBS=""

PASSED=0; FAILED=0; SKIPPED=0; FAILED_NAMES=""
# run_test NAME CMD...: runs one test program; counts pass/fail. A test that prints
# "SKIP" as its last line and exits 77 counts as skipped.
run_test() {
  local name=$1; shift
  local log="$BUILD/test-$name.log" rc=0
  "$@" >"$log" 2>&1 || rc=$?
  if [ $rc -eq 0 ]; then PASSED=$((PASSED+1)); echo "ok    $name";
  elif [ $rc -eq 77 ]; then SKIPPED=$((SKIPPED+1)); echo "skip  $name: $(tail -n 1 "$log")";
  else FAILED=$((FAILED+1)); FAILED_NAMES="$FAILED_NAMES $name"; echo "FAIL  $name (exit $rc); last lines of $log:"; tail -n 20 "$log" | sed 's/^/    /'; fi
}

PARTS=()
for f in mk/*.sh; do
  # shellcheck disable=SC1090
  source "$f"
  p=$(basename "$f" .sh); PARTS+=("${p#*-}")
done

for p in "${PARTS[@]}"; do "build_$p"; done
if [ "$mode" = test ] || [ "$mode" = asan ]; then
  for p in "${PARTS[@]}"; do
    if [ "$ONLY" = "  " ] || [[ "$ONLY" == *" $p "* ]]; then "test_$p"; fi
  done
  echo
  [ -n "$FAILED_NAMES" ] && echo "failed:$FAILED_NAMES"
  echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
  [ $FAILED -eq 0 ]
fi
