#!/usr/bin/env bash
# clair-apo build script.
#
#   ./build.sh            build everything this machine can build (CPU always; kernels.cu when nvcc exists)
#   ./build.sh test       build, then run every test (GPU tests say "skipped" without a GPU)
#   ./build.sh test PART  build, then run the tests of the named parts only (apo, clair, model, ...)
#   ./build.sh asan       build and run the tests under AddressSanitizer + UBSan
#   ./build.sh clean      remove build outputs
#
# Each part of the project has its build and test steps in mk/NN-part.sh, read in order.
# A part defines build_<part> and test_<part>; this file only sequences them.
set -euo pipefail
cd "$(dirname "$0")"

CC=${CC:-cc}
NVCC=${NVCC:-$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true)}
[ "$NVCC" = none ] && NVCC=""   # NVCC=none: build as on a machine without the CUDA toolkit
OPT=${OPT:--O2}
WARN="-Wall -Wextra"
SAN=""
OMP=""
if echo 'int main(void){return 0;}' | $CC -fopenmp -x c - -o /dev/null 2>/dev/null; then OMP="-fopenmp"; fi
BUILD=${BUILD_DIR:-build}   # BUILD_DIR: another output folder (./trainer and ./clair then go there too)
mode=${1:-all}
[ $# -gt 0 ] && shift
ONLY=" $* "   # test/asan: the parts whose tests run (all when empty)
case "$mode" in
  all|test) ;;
  asan) SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"; OPT="-O1 -g"; BUILD=${BUILD_DIR:-build}/asan ;;
  clean) rm -rf build trainer clair; exit 0 ;;
  -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
  *) echo "build.sh: unknown mode '$mode' (use: all, test, asan, clean)" >&2; exit 2 ;;
esac
CFLAGS="$OPT $WARN $SAN"
mkdir -p "$BUILD"

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
