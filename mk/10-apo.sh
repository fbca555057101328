# mk/10-apo.sh - build and test steps of the apo part (sourced by build.sh; see its header).
# Variables from build.sh: CC NVCC CFLAGS OMP BUILD SAN mode and the object lists; helpers:
# cc_obj, cc_prog, run_test NAME CMD...
#
# apo.h is a header: "building" it means building its test program, the demo and, when nvcc
# exists, the CUDA test (into $BUILD/gpu/, run by tests/gpu/run.sh on a GPU machine).
# The test step also compiles the header in every mode it promises, with -Werror.

build_apo() {
  mkdir -p "$BUILD/apo"
  $CC $CFLAGS -std=c99 -pedantic tests/apo/test_apo.c -o "$BUILD/apo/test_apo" -lm
  $CC $CFLAGS -std=c99 -pedantic examples/apo_demo.c -o "$BUILD/apo/apo_demo" -lm
  # nvcc does not take the sanitizer flags; the asan build checks the CPU side only
  # (rebuilt only when apo.h or the test changed: nvcc is slow on 2 cores)
  local cu="$BUILD/gpu/test_apo_cuda"
  if [ -n "$NVCC" ] && [ -z "$SAN" ] &&
     { [ ! -e "$cu" ] || [ apo.h -nt "$cu" ] || [ tests/apo/test_apo_cuda.cu -nt "$cu" ]; }; then
    mkdir -p "$BUILD/gpu"
    "$NVCC" -arch=sm_90 -O2 -Xcompiler -Wall,-Wextra \
      tests/apo/test_apo_cuda.cu -o "$BUILD/gpu/test_apo_cuda"
  fi
}

# apo__compile_check LABEL COMPILER ARGS...: compiles tests/apo/header_check.c (plain and with
# APO_STATIC) with -Werror and runs it; exit 77 when the compiler is not installed.
apo__compile_check() {
  local label=$1 comp=$2; shift 2
  if ! command -v "$comp" >/dev/null 2>&1; then echo "SKIP $comp not installed"; return 77; fi
  local mode out
  for mode in "" "-DAPO_STATIC"; do
    out="$BUILD/apo/header_check_$label${mode:+_static}"   # one file per mode: no rewrite of a just-run binary
    "$comp" "$@" $mode tests/apo/header_check.c -o "$out" -lm || return 1
    "$out" || { echo "header_check ($label $mode) returned $?"; return 1; }
    echo "ok $label $mode"
  done
}

test_apo() {
  local strict="-Wall -Wextra -Werror"
  run_test apo_header_gcc_c99 apo__compile_check gcc_c99 gcc -std=c99 -pedantic $strict
  run_test apo_header_clang_c99 apo__compile_check clang_c99 clang -std=c99 -pedantic $strict
  run_test apo_header_gxx_cxx11 apo__compile_check gxx_cxx11 g++ -x c++ -std=c++11 -pedantic $strict
  run_test apo_header_clangxx_cxx11 apo__compile_check clangxx_cxx11 clang++ -x c++ -std=c++11 -pedantic $strict
  if [ -n "$NVCC" ]; then
    run_test apo_header_nvcc apo__compile_check nvcc "$NVCC" -x cu -arch=sm_90 -std=c++11 \
      -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror
  fi
  run_test apo "$BUILD/apo/test_apo" tests/apo/reference.txt
  run_test apo_demo "$BUILD/apo/apo_demo" 20 2
  # $BUILD/gpu/test_apo_cuda is run with every other GPU test (mk/45-cuda.sh, tests/gpu/run.sh);
  # without a GPU it exits 77 and says why.
}
