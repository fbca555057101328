# mk/50-trainer.sh - build and test steps of the trainer part (sourced by build.sh; see its header).
# Variables from build.sh: CC NVCC CFLAGS OMP BUILD SAN mode; helper: run_test NAME CMD...
#
# ./trainer (repo root; $BUILD/trainer under ASan so the normal binary stays) links trainer.c +
# llama/data.c with the llama objects of the model and tokenizer parts, and with the CUDA part's
# $BUILD/kernels.o (+ CUDA runtime, cuBLAS) when it exists, else its $BUILD/cuda_stub.o. A missing
# object skips the link, saying which. tests/trainer/ holds the end-to-end tests (shell).

trainer__bin() { if [ "$BUILD" = build ]; then echo "./trainer"; else echo "$BUILD/trainer"; fi; }

build_trainer() {
  mkdir -p "$BUILD/trainer_tests"
  # shellcheck disable=SC2086
  local f
  for f in util data rundir generate; do
    $CC $CFLAGS $OMP -std=c99 -c "train/$f.c" -o "$BUILD/train_$f.o"
  done
  # The CUDA part (mk/60) comes after us in build order but we link its object: with nvcc,
  # run its build step now when kernels.o is missing or older than kernels.cu (its own turn
  # then finds it fresh and does not recompile).
  if [ -n "$NVCC" ] && [ -f kernels.cu ] && declare -F build_cuda >/dev/null; then
    if [ ! -f "$BUILD/kernels.o" ] || [ kernels.cu -nt "$BUILD/kernels.o" ] || [ llama/model.h -nt "$BUILD/kernels.o" ]; then
      build_cuda
    fi
  elif [ -z "$NVCC" ] && [ ! -f "$BUILD/cuda_stub.o" ] && [ -f llama/cuda_stub.c ] && declare -F build_cuda >/dev/null; then
    build_cuda
  fi
  local o missing="" objs="$BUILD/train_util.o $BUILD/train_data.o $BUILD/train_rundir.o $BUILD/train_generate.o" cuda="" libs=""
  for o in llama_model llama_gemm llama_checkpoint llama_safetensors llama_json llama_tokenizer; do
    if [ -f "$BUILD/$o.o" ]; then objs="$objs $BUILD/$o.o"; else missing="$missing $BUILD/$o.o"; fi
  done
  if [ -f "$BUILD/kernels.o" ]; then
    cuda="$BUILD/kernels.o"
    if declare -F cuda__libs >/dev/null && [ -n "$NVCC" ]; then libs=$(cuda__libs)
    else libs="-L/usr/local/cuda/lib64 -Wl,-rpath,/usr/local/cuda/lib64 -lcudart -lcublas -lcublasLt -lstdc++"; fi
  elif [ -f "$BUILD/cuda_stub.o" ]; then cuda="$BUILD/cuda_stub.o"
  else missing="$missing $BUILD/cuda_stub.o|kernels.o"; fi
  if [ -n "$missing" ]; then
    echo "trainer: not linked yet, missing:$missing"
    return 0
  fi
  # shellcheck disable=SC2086
  $CC $CFLAGS $OMP -std=c99 trainer.c $objs $cuda $libs -lm -o "$(trainer__bin)"
  # The test build: the same trainer with tests/trainer/test_backend.c's fault injection.
  # shellcheck disable=SC2086
  $CC $CFLAGS $OMP -std=c99 -DTRAINER_TEST_BACKEND trainer.c tests/trainer/test_backend.c $objs $cuda $libs -lm \
    -o "$BUILD/trainer_tests/trainer"
  # shellcheck disable=SC2086
  $CC $CFLAGS $OMP -std=c99 tests/trainer/ckpt_diff.c "$BUILD/llama_checkpoint.o" "$BUILD/llama_safetensors.o" \
    "$BUILD/llama_model.o" "$BUILD/llama_gemm.o" "$BUILD/llama_json.o" -lm -o "$BUILD/trainer_tests/ckpt_diff"
}

test_trainer() {
  local bin="$BUILD/trainer_tests/trainer" t   # the test build (fault injection)
  for t in basic train_directions resume accumulation bad_inputs generate; do
    if [ -x "$bin" ] && [ -x "$BUILD/trainer_tests/ckpt_diff" ]; then
      run_test "trainer_$t" tests/trainer/run.sh "$t" "$bin" "$BUILD/trainer_tests"
    else
      run_test "trainer_$t" sh -c "echo 'SKIP: $bin not linked (an object it needs is not built yet)'; exit 77"
    fi
  done
  # --device cuda end to end on the CUDA part's CPU emulator ($BUILD/emu/kernels.o: kernels.cu
  # compiled as host C++, built by mk/60 after us, hence linked here, at test time).
  local emu="$BUILD/emu/kernels.o" tbin="$BUILD/trainer_tests/trainer_emu" o objs="$BUILD/train_util.o $BUILD/train_data.o $BUILD/train_rundir.o $BUILD/train_generate.o"
  for o in llama_model llama_gemm llama_checkpoint llama_safetensors llama_json llama_tokenizer; do objs="$objs $BUILD/$o.o"; done
  if [ -z "$SAN" ] && [ -f "$emu" ] && [ -x "$BUILD/trainer_tests/ckpt_diff" ]; then
    # (a failed link is this test's failure, not the end of the whole test run)
    # shellcheck disable=SC2086
    if $CC $CFLAGS $OMP -std=c99 -DTRAINER_TEST_BACKEND trainer.c tests/trainer/test_backend.c $objs "$emu" -lstdc++ -lm -o "$tbin"; then
      run_test trainer_cuda_emu tests/trainer/run.sh cuda_emu "$tbin" "$BUILD/trainer_tests"
    else
      run_test trainer_cuda_emu sh -c "echo 'linking the trainer with $emu failed (see above)'; exit 1"
    fi
  else
    run_test trainer_cuda_emu sh -c "echo 'SKIP: no CUDA emulator object ($emu) or an ASan build'; exit 77"
  fi
}
