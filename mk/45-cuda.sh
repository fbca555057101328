# mk/45-cuda.sh - the CUDA path (sourced by build.sh; see its header for the variables and helpers).
#
# With nvcc: kernels.cu -> $BUILD/kernels.o (sm_80 + sm_90), the GPU test programs into
# $BUILD/gpu/ (tests/gpu/run.sh runs every executable there on a GPU machine), the no-device test
# and the benchmark. Without nvcc: llama/cuda_stub.c -> $BUILD/cuda_stub.o, whose
# llama_cuda_backend_create says "built without CUDA". Either way CUDA_OBJ and CUDA_LIBS say what
# the trainer (mk/50) links.
#
# The CPU emulator (tests/gpu/emu/: fake cuda_runtime.h, cuda_bf16.h, cublas_v2.h, mma.h) compiles
# kernels.cu itself with the host C++ compiler into $BUILD/emu/, and test_cuda runs the kernel
# tests, a few parity cases, the memory plan and a dry run of tests/gpu/run.sh through it: the
# CUDA path is checked against the CPU path on every build, GPU or not (see
# tests/gpu/emu/cuda_runtime.h for what that cannot show).
#
# CUDA_ARCHS (default "80 90": A100, H100/H200) names the architectures nvcc compiles for; one
# architecture halves nvcc's time.

CUDA_ARCHS=${CUDA_ARCHS:-80 90}
CUDA_NVCCFLAGS="-O2 -std=c++17 -Xcompiler -Wall,-Wextra"
for cuda__arch in $CUDA_ARCHS; do CUDA_NVCCFLAGS="$CUDA_NVCCFLAGS -gencode arch=compute_$cuda__arch,code=sm_$cuda__arch"; done

# Outputs are written to OUT.tmp.PID and renamed into place, so a half-written object (an
# interrupted compile, or two builds running in one tree) is never linked. (Separate commands,
# not `&&`: under set -e a failing compiler must stop the build.)
# cuda__stale OUT IN...: true when OUT is missing or older than any IN (nvcc is slow: nothing is
# recompiled that did not change).
cuda__stale() {
  local out=$1; shift
  [ -e "$out" ] || return 0
  local f
  for f in "$@"; do [ "$f" -nt "$out" ] && return 0; done
  return 1
}

cuda__home() { dirname "$(dirname "$NVCC")"; }
cuda__libs() {
  local h; h=$(cuda__home)
  echo "-L$h/lib64 -Wl,-rpath,$h/lib64 -lcublas -lcublasLt -lcudart -lstdc++ -lpthread -lm"
}

# Emulator builds (no GPU, no nvcc needed); not under ASan (fibers switch stacks).
build_cuda_emu() {
  local cxx=${CXX:-g++}
  command -v "$cxx" >/dev/null || { echo "cuda: no C++ compiler ($cxx): the emulator tests are skipped"; return 0; }
  mkdir -p "$BUILD/emu"
  local objs="$LLAMA_OBJS" emuh; emuh="tests/gpu/emu/cuda_runtime.h tests/gpu/emu/cuda_bf16.h tests/gpu/emu/cublas_v2.h tests/gpu/emu/mma.h"
  # shellcheck disable=SC2086
  if cuda__stale "$BUILD/emu/kernels.o" kernels.cu llama/model.h $emuh; then
    $cxx -O2 -std=c++17 -Wall -Wextra -Itests/gpu/emu -x c++ -c kernels.cu -o "$BUILD/emu/kernels.o.tmp.$$"; mv -f "$BUILD/emu/kernels.o.tmp.$$" "$BUILD/emu/kernels.o"
  fi
  # shellcheck disable=SC2086
  if cuda__stale "$BUILD/emu/cuda_kernels" tests/gpu/test_kernels.cu kernels.cu llama/model.h $emuh $objs; then
    $cxx -O2 -std=c++17 -Wall -Wextra -Itests/gpu/emu -x c++ tests/gpu/test_kernels.cu -x none $objs $OMP -lm -o "$BUILD/emu/cuda_kernels.tmp.$$"; mv -f "$BUILD/emu/cuda_kernels.tmp.$$" "$BUILD/emu/cuda_kernels"
  fi
  # shellcheck disable=SC2086
  cc_prog "$BUILD/emu/cuda_parity" tests/gpu/test_parity.c "$BUILD/emu/kernels.o" $objs $OMP -lstdc++ -lm
  # shellcheck disable=SC2086
  cc_prog "$BUILD/emu/cuda_plan" tests/gpu/test_plan.c "$BUILD/emu/kernels.o" $objs $OMP -lstdc++ -lm
  # shellcheck disable=SC2086
  cc_prog "$BUILD/emu/cuda_bench" bench/gpu_bench.c "$BUILD/emu/kernels.o" $objs $OMP -lstdc++ -lm
  if [ -n "$NVCC" ]; then   # the refusals a real device gives (bad index, won't fit), on the emulator's "device"
    # shellcheck disable=SC2086
    cc_prog "$BUILD/emu/cuda_refusals" -I"$(cuda__home)/include" tests/gpu/test_nodevice.c "$BUILD/emu/kernels.o" $objs $OMP -lstdc++ -lm
  fi
}

build_cuda() {
  mkdir -p "$BUILD/gpu"
  [ -z "$SAN" ] && build_cuda_emu
  if [ -z "$NVCC" ]; then
    cc_obj "$BUILD/cuda_stub.o" llama/cuda_stub.c
    CUDA_OBJ="$BUILD/cuda_stub.o"; CUDA_LIBS=""
    return 0
  fi
  if cuda__stale "$BUILD/kernels.o" kernels.cu llama/model.h; then
    $NVCC $CUDA_NVCCFLAGS -c kernels.cu -o "$BUILD/kernels.o.tmp.$$"; mv -f "$BUILD/kernels.o.tmp.$$" "$BUILD/kernels.o"
  fi
  CUDA_OBJ="$BUILD/kernels.o"; CUDA_LIBS=$(cuda__libs)
  local objs="$LLAMA_OBJS" libs="$CUDA_LIBS" inc="-I$(cuda__home)/include"
  # The no-device test runs everywhere (it checks the error path on a machine without a GPU).
  # shellcheck disable=SC2086
  cc_prog "$BUILD/cuda_nodevice" $inc tests/gpu/test_nodevice.c "$BUILD/kernels.o" $objs $OMP $libs
  [ -n "$SAN" ] && return 0   # nvcc-linked programs are not built under ASan (GPU tests do not run there)
  # shellcheck disable=SC2086
  if cuda__stale "$BUILD/gpu/cuda_kernels" tests/gpu/test_kernels.cu kernels.cu llama/model.h $objs; then
    $NVCC $CUDA_NVCCFLAGS ${OMP:+-Xcompiler $OMP} tests/gpu/test_kernels.cu $objs -lcublas -lcublasLt -o "$BUILD/gpu/cuda_kernels.tmp.$$"; mv -f "$BUILD/gpu/cuda_kernels.tmp.$$" "$BUILD/gpu/cuda_kernels"
  fi
  # shellcheck disable=SC2086
  cc_prog "$BUILD/gpu/cuda_parity" $inc tests/gpu/test_parity.c "$BUILD/kernels.o" $objs $OMP $libs
  # shellcheck disable=SC2086
  cc_prog "$BUILD/cuda_bench" $inc bench/gpu_bench.c "$BUILD/kernels.o" $objs $OMP $libs
}

test_cuda() {
  # The CUDA backend on the CPU emulator: kernel tests, one parity case per mode (2 steps; lean
  # against its CPU twin bit for bit, and resumed; in a recompute mode both recompute levels
  # against none, bit for bit; bf16 modes with flash attention, fp32 and "cublas" with cuBLAS
  # attention), the memory plan, then every stage of the GPU
  # script at toy sizes (its dry run). (Not under ASan: the emulator's fibers switch stacks.)
  if [ -z "$SAN" ] && [ -x "$BUILD/emu/cuda_kernels" ]; then
    run_test cuda_emu_kernels "$BUILD/emu/cuda_kernels"
    run_test cuda_emu_parity_fp32 "$BUILD/emu/cuda_parity" --case gqa_tied --mode fp32 --steps 2
    run_test cuda_emu_parity_fp32_recompute "$BUILD/emu/cuda_parity" --case llama3_mqa --mode fp32+recompute+chunk --steps 2
    run_test cuda_emu_parity_bf16 "$BUILD/emu/cuda_parity" --case mha_untied --mode bf16 --steps 2
    run_test cuda_emu_parity_fp32_selective "$BUILD/emu/cuda_parity" --case gqa_tied --mode fp32+selective --steps 2
    run_test cuda_emu_parity_bf16_selective "$BUILD/emu/cuda_parity" --case mha_untied --mode bf16+selective --steps 2
    run_test cuda_emu_parity_bf16_selective_cublas "$BUILD/emu/cuda_parity" --case gqa_tied --mode "bf16+selective cublas" \
      --steps 2
    run_test cuda_emu_parity_lean_selective "$BUILD/emu/cuda_parity" --case llama3_mqa --mode "bf16 lean+selective" \
      --steps 2 --exact-twin
    run_test cuda_emu_parity_lean "$BUILD/emu/cuda_parity" --case random-gqa-llama3 --mode "bf16 lean+recompute" --steps 2 \
      --exact-twin
    run_test cuda_emu_memory_plan "$BUILD/emu/cuda_plan"
    run_test cuda_gpu_script_dry_run env OUT="$BUILD/gpu-dry-run" BUDGET_S=150 tests/gpu/run.sh --dry-run --prebuilt "$BUILD"
    if [ -n "$NVCC" ]; then run_test cuda_emu_refusals "$BUILD/emu/cuda_refusals"; fi
  elif [ -z "$SAN" ]; then
    run_test cuda_emu sh -c "echo 'SKIP: no C++ compiler (${CXX:-g++}) for the CUDA emulator'; exit 77"
  fi
  if [ -z "$NVCC" ]; then
    run_test cuda_stub sh -c 'echo "SKIP: built without nvcc: the CUDA backend is the stub"; exit 77'
    return 0
  fi
  run_test cuda_nodevice "$BUILD/cuda_nodevice"
  # Every program in $BUILD/gpu/, whichever mk/ file built it (apo.h's CUDA test too):
  # without a device each skips, saying "no CUDA device".
  local t
  for t in "$BUILD"/gpu/*; do
    [ -f "$t" ] && [ -x "$t" ] || continue
    run_test "gpu_$(basename "$t")" "$t"
  done
}
