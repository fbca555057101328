# mk/50-trainer.sh - the trainer (sourced by build.sh; see its header for the variables and helpers).
#
# ./trainer (repo root; $BUILD/trainer for another BUILD_DIR or under ASan) links trainer.c with
# train/ (data, run directory, generation), the Llama objects, the tokenizer and mk/45's CUDA
# object (kernels.o, or the stub without nvcc). The tests run the test build of the same trainer,
# $BUILD/trainer_tests/trainer: it adds tests/trainer/test_backend.c (fault injection: a kill at
# a given step, NaN gradients, the first gradient written out), which the product never has.
# tests/trainer/run.sh holds the end-to-end tests (shell, python3's standard library for JSON).

TRAIN_OBJS="$BUILD/train_data.o $BUILD/train_rundir.o $BUILD/train_generate.o"

trainer__bin() { if [ "$BUILD" = build ]; then echo "./trainer"; else echo "$BUILD/trainer"; fi; }

build_trainer() {
  local f objs
  for f in data rundir generate; do
    # shellcheck disable=SC2086
    cc_obj "$BUILD/train_$f.o" "train/$f.c" $OMP
  done
  objs="$TRAIN_OBJS $LLAMA_OBJS $TOKENIZER_OBJS"
  mkdir -p "$BUILD/trainer_tests"
  # shellcheck disable=SC2086
  cc_prog "$(trainer__bin)" $OMP trainer.c $objs $CUDA_OBJ $CUDA_LIBS -lm
  # shellcheck disable=SC2086
  cc_prog "$BUILD/trainer_tests/trainer" $OMP -DTRAINER_TEST_BACKEND trainer.c tests/trainer/test_backend.c \
    $objs $CUDA_OBJ $CUDA_LIBS -lm
  # shellcheck disable=SC2086
  cc_prog "$BUILD/trainer_tests/ckpt_diff" $OMP tests/trainer/ckpt_diff.c $LLAMA_OBJS -lm
  # --device cuda end to end on the CPU emulator of kernels.cu (not under ASan: the emulator's
  # fibers switch stacks)
  if [ -z "$SAN" ] && [ -f "$BUILD/emu/kernels.o" ]; then
    # shellcheck disable=SC2086
    cc_prog "$BUILD/trainer_tests/trainer_emu" $OMP -DTRAINER_TEST_BACKEND trainer.c tests/trainer/test_backend.c \
      $objs "$BUILD/emu/kernels.o" -lstdc++ -lm
  fi
}

test_trainer() {
  local t
  for t in basic train_directions resume accumulation bad_inputs generate interrupt; do
    run_test "trainer_$t" tests/trainer/run.sh "$t" "$BUILD/trainer_tests/trainer" "$BUILD/trainer_tests"
  done
  if [ -x "$BUILD/trainer_tests/trainer_emu" ]; then
    run_test trainer_cuda_emu tests/trainer/run.sh cuda_emu "$BUILD/trainer_tests/trainer_emu" "$BUILD/trainer_tests"
  else
    run_test trainer_cuda_emu sh -c "echo 'SKIP: no CUDA emulator build (ASan, or no C++ compiler)'; exit 77"
  fi
}
