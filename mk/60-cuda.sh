# mk/60-cuda.sh - build and test steps of the cuda part (sourced by build.sh; see its header).
# Variables from build.sh: CC NVCC CFLAGS OMP BUILD SAN mode; helper: run_test NAME CMD...
#
# With nvcc: kernels.cu -> $BUILD/kernels.o (sm_80 + sm_90), the GPU test programs into
# $BUILD/gpu/ (tests/gpu/run.sh runs every executable there on a GPU machine), the no-device test
# and the benchmark. Without nvcc: llama/cuda_stub.c -> $BUILD/cuda_stub.o, whose
# llama_cuda_backend_create says "built without CUDA". Programs that need the CPU path
# ($BUILD/llama_model.o, built by mk/30-model.sh) are skipped, saying so, when it is missing or
# lacks the functions they call, so a failure elsewhere still leaves the rest of the build.
#
# The CPU emulator (tests/gpu/emu/: fake cuda_runtime.h, cuda_bf16.h, cublas_v2.h) compiles
# kernels.cu itself with the host C++ compiler into $BUILD/emu/, and test_cuda runs the kernel
# tests and a few parity cases through it: the CUDA path is checked against the CPU path on
# every build, GPU or not (see tests/gpu/emu/cuda_runtime.h for what that cannot show).

CUDA_NVCCFLAGS="-O2 -std=c++17 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -Xcompiler -Wall,-Wextra"

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

# cuda__has OBJ SYM...: true when OBJ exists and defines every SYM.
cuda__has() {
  local obj=$1; shift
  [ -f "$obj" ] || return 1
  local defs s
  defs=$(nm -g --defined-only "$obj" 2>/dev/null | awk '{print $3}')
  for s in "$@"; do echo "$defs" | grep -qx "$s" || return 1; done
}

# The CPU-path objects a program linking the model needs (those that exist).
cuda__cpu_objs() {
  local o out=""
  for o in llama_model llama_gemm llama_checkpoint llama_safetensors llama_json; do
    [ -f "$BUILD/$o.o" ] && out="$out $BUILD/$o.o"
  done
  echo "$out"
}

cuda__home() { dirname "$(dirname "$NVCC")"; }
cuda__libs() {
  local h; h=$(cuda__home)
  echo "-L$h/lib64 -Wl,-rpath,$h/lib64 -lcublas -lcublasLt -lcudart -lstdc++ -lpthread -lm"
}

# Emulator builds (no GPU, no nvcc needed); not under ASan (fibers switch stacks).
build_cuda_emu() {
  local cxx=${CXX:-g++}
  command -v "$cxx" >/dev/null || { echo "cuda: no C++ compiler ($cxx): emulator tests not built"; return 0; }
  cuda__has "$BUILD/llama_model.o" llama_layout llama_rope_inv_freq llama_matmul llama_rmsnorm llama_rope_apply || return 0
  mkdir -p "$BUILD/emu"
  local objs emuh; objs=$(cuda__cpu_objs); emuh="tests/gpu/emu/cuda_runtime.h tests/gpu/emu/cuda_bf16.h tests/gpu/emu/cublas_v2.h"
  # shellcheck disable=SC2086
  if cuda__stale "$BUILD/emu/kernels.o" kernels.cu llama/model.h $emuh; then
    $cxx -O2 -std=c++17 -Wall -Wextra -Itests/gpu/emu -x c++ -c kernels.cu -o "$BUILD/emu/kernels.o.tmp.$$"; mv -f "$BUILD/emu/kernels.o.tmp.$$" "$BUILD/emu/kernels.o"
  fi
  # shellcheck disable=SC2086
  if cuda__stale "$BUILD/emu/cuda_kernels" tests/gpu/test_kernels.cu kernels.cu llama/model.h $emuh "$BUILD/llama_model.o"; then
    $cxx -O2 -std=c++17 -Wall -Wextra -Itests/gpu/emu -x c++ tests/gpu/test_kernels.cu -x none $objs $OMP -lm -o "$BUILD/emu/cuda_kernels.tmp.$$"; mv -f "$BUILD/emu/cuda_kernels.tmp.$$" "$BUILD/emu/cuda_kernels"
  fi
  if cuda__has "$BUILD/llama_model.o" llama_cpu_backend_create llama_model_alloc llama_model_init_random &&
     cuda__has "$BUILD/llama_checkpoint.o" llama_model_load; then
    # shellcheck disable=SC2086
    $CC $CFLAGS -std=c99 tests/gpu/test_parity.c "$BUILD/emu/kernels.o" $objs $OMP -lstdc++ -lm -o "$BUILD/emu/cuda_parity.tmp.$$"; mv -f "$BUILD/emu/cuda_parity.tmp.$$" "$BUILD/emu/cuda_parity"
  fi
  if [ -n "$NVCC" ]; then   # the refusals a real device gives (bad index, won't fit), on the emulator's "device"
    # shellcheck disable=SC2086
    $CC $CFLAGS -std=c99 -I"$(cuda__home)/include" tests/gpu/test_nodevice.c "$BUILD/emu/kernels.o" $objs $OMP -lstdc++ -lm -o "$BUILD/emu/cuda_refusals.tmp.$$"; mv -f "$BUILD/emu/cuda_refusals.tmp.$$" "$BUILD/emu/cuda_refusals"
  fi
}

build_cuda() {
  mkdir -p "$BUILD/gpu"
  [ -z "$SAN" ] && build_cuda_emu
  if [ -z "$NVCC" ]; then
    $CC $CFLAGS -std=c99 -c llama/cuda_stub.c -o "$BUILD/cuda_stub.o.tmp.$$"; mv -f "$BUILD/cuda_stub.o.tmp.$$" "$BUILD/cuda_stub.o"
    return 0
  fi
  if cuda__stale "$BUILD/kernels.o" kernels.cu llama/model.h; then
    $NVCC $CUDA_NVCCFLAGS -c kernels.cu -o "$BUILD/kernels.o.tmp.$$"; mv -f "$BUILD/kernels.o.tmp.$$" "$BUILD/kernels.o"
  fi
  # Programs below link the CPU path; without it they are skipped with a message.
  if ! cuda__has "$BUILD/llama_model.o" llama_layout llama_rope_inv_freq; then
    echo "cuda: $BUILD/llama_model.o (llama_layout, llama_rope_inv_freq) not built: GPU test programs not linked"
    return 0
  fi
  local objs libs inc
  objs=$(cuda__cpu_objs); libs=$(cuda__libs); inc="-I$(cuda__home)/include"
  # The no-device test runs everywhere (it checks the error path on a machine without a GPU).
  # shellcheck disable=SC2086
  $CC $CFLAGS -std=c99 $inc tests/gpu/test_nodevice.c "$BUILD/kernels.o" $objs $OMP $libs -o "$BUILD/cuda_nodevice.tmp.$$"; mv -f "$BUILD/cuda_nodevice.tmp.$$" "$BUILD/cuda_nodevice"
  [ -n "$SAN" ] && return 0   # nvcc-linked programs are not built under ASan (GPU tests do not run there)
  if [ ! -f tests/gpu/test_kernels.cu ]; then :
  elif cuda__has "$BUILD/llama_model.o" llama_matmul llama_rmsnorm llama_rope_apply; then
    if cuda__stale "$BUILD/gpu/cuda_kernels" tests/gpu/test_kernels.cu kernels.cu llama/model.h "$BUILD/llama_model.o"; then
      # shellcheck disable=SC2086
      $NVCC $CUDA_NVCCFLAGS ${OMP:+-Xcompiler $OMP} tests/gpu/test_kernels.cu $objs -lcublas -lcublasLt -o "$BUILD/gpu/cuda_kernels.tmp.$$"; mv -f "$BUILD/gpu/cuda_kernels.tmp.$$" "$BUILD/gpu/cuda_kernels"
    fi
  else
    echo "cuda: llama_model.o lacks the CPU twins (llama_matmul, llama_rmsnorm, llama_rope_apply): cuda_kernels not linked"
  fi
  if [ ! -f tests/gpu/test_parity.c ]; then :
  elif cuda__has "$BUILD/llama_model.o" llama_cpu_backend_create llama_model_alloc llama_model_init_random &&
     cuda__has "$BUILD/llama_checkpoint.o" llama_model_load; then
    # shellcheck disable=SC2086
    $CC $CFLAGS -std=c99 $inc tests/gpu/test_parity.c "$BUILD/kernels.o" $objs $OMP $libs -o "$BUILD/gpu/cuda_parity.tmp.$$"; mv -f "$BUILD/gpu/cuda_parity.tmp.$$" "$BUILD/gpu/cuda_parity"
    # shellcheck disable=SC2086
    $CC $CFLAGS -std=c99 $inc bench/gpu_bench.c "$BUILD/kernels.o" $objs $OMP $libs -o "$BUILD/cuda_bench.tmp.$$"; mv -f "$BUILD/cuda_bench.tmp.$$" "$BUILD/cuda_bench"
  else
    echo "cuda: llama_model.o lacks the CPU backend (llama_cpu_backend_create): cuda_parity and cuda_bench not linked"
  fi
}

test_cuda() {
  # The CUDA backend on the CPU emulator: kernel tests, then one parity case per mode (2 steps).
  if [ -z "$SAN" ] && [ -x "$BUILD/emu/cuda_kernels" ]; then
    run_test cuda_emu_kernels "$BUILD/emu/cuda_kernels"
  fi
  if [ -z "$SAN" ] && [ -x "$BUILD/emu/cuda_parity" ]; then
    run_test cuda_emu_parity_fp32 "$BUILD/emu/cuda_parity" --case gqa_tied --mode fp32 --steps 2
    run_test cuda_emu_parity_fp32_recompute "$BUILD/emu/cuda_parity" --case llama3_mqa --mode fp32+recompute+chunk --steps 2
    run_test cuda_emu_parity_bf16 "$BUILD/emu/cuda_parity" --case mha_untied --mode bf16 --steps 2
    run_test cuda_emu_parity_lean "$BUILD/emu/cuda_parity" --case random-gqa-llama3 --mode "bf16 lean+recompute" --steps 2
  fi
  if [ -z "$SAN" ] && [ -x "$BUILD/emu/cuda_refusals" ]; then
    run_test cuda_emu_refusals "$BUILD/emu/cuda_refusals"
  fi
  if [ -z "$NVCC" ]; then
    run_test cuda_stub sh -c 'echo "SKIP: built without nvcc: the CUDA backend is the stub"; exit 77'
    return 0
  fi
  if [ -x "$BUILD/cuda_nodevice" ]; then
    run_test cuda_nodevice "$BUILD/cuda_nodevice"
  else
    run_test cuda_nodevice sh -c 'echo "SKIP: not linked (needs llama_model.o, built by mk/30-model.sh)"; exit 77'
  fi
  # Every program in $BUILD/gpu/, whichever mk/ file built it (apo.h's CUDA test too):
  # without a device each skips, saying "no CUDA device".
  local t
  for t in "$BUILD"/gpu/*; do
    [ -f "$t" ] && [ -x "$t" ] || continue
    run_test "gpu_$(basename "$t")" "$t"
  done
}
