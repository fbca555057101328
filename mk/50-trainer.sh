# mk/50-trainer.sh - the trainer (sourced by build.sh; see its header for the variables and helpers).
#
# ./trainer (repo root; $BUILD/trainer for another BUILD_DIR or under ASan) links trainer.c with
# train/ (data, run directory, generation), the Llama objects, the tokenizer and mk/45's CUDA
# object (kernels.o, or the stub without nvcc). The tests run the test build of the same trainer,
# $BUILD/trainer_tests/trainer: it adds tests/trainer/test_backend.c (fault injection: a kill at
# a given step, NaN gradients, the first gradient written out), which the product never has.
# tests/trainer/run.sh holds the end-to-end tests (shell, python3's standard library for JSON).
# train/hub.c (Hugging Face model ids) downloads with libcurl when its headers exist; without them
# ids resolve from the local cache only. tests/hub/run.sh tests it against a local stand-in for the
# hub (tests/hub/server.py), and the variant without libcurl through $BUILD/trainer_tests/hub_nocurl.

TRAIN_OBJS="$BUILD/train_data.o $BUILD/train_rundir.o $BUILD/train_generate.o $BUILD/train_plot.o $BUILD/train_convert.o"

TRAIN_HUB_CURL=1
echo '#include <curl/curl.h>' | $CC -E -x c - >/dev/null 2>&1 || TRAIN_HUB_CURL=0
# Two objects, so that one appearing libcurl rebuilds nothing by hand: train_hub.o never downloads.
if [ $TRAIN_HUB_CURL = 1 ]; then TRAIN_HUB_OBJ="$BUILD/train_hub_curl.o" TRAIN_HUB_LIBS="-lcurl"
else TRAIN_HUB_OBJ="$BUILD/train_hub.o" TRAIN_HUB_LIBS=""; fi
TRAIN_OBJS="$TRAIN_OBJS $TRAIN_HUB_OBJ"

trainer__bin() { if [ "$BUILD" = build ]; then echo "./trainer"; else echo "$BUILD/trainer"; fi; }

build_trainer() {
  local f objs
  for f in data rundir generate plot convert; do
    # shellcheck disable=SC2086
    cc_obj "$BUILD/train_$f.o" "train/$f.c" $OMP
  done
  cc_obj "$BUILD/train_hub.o" train/hub.c
  if [ $TRAIN_HUB_CURL = 1 ]; then cc_obj "$TRAIN_HUB_OBJ" train/hub.c -DTRAIN_HUB_CURL
  else echo "trainer: built without libcurl: model ids resolve from the local cache only, nothing downloads (Debian/Ubuntu: apt-get install libcurl4-openssl-dev)"; fi
  objs="$TRAIN_OBJS $LLAMA_OBJS $TOKENIZER_OBJS"
  objs="$objs $TRAIN_HUB_LIBS"
  mkdir -p "$BUILD/trainer_tests"
  # shellcheck disable=SC2086
  cc_prog "$(trainer__bin)" $OMP trainer.c $objs $CUDA_OBJ $CUDA_LIBS -lm
  # shellcheck disable=SC2086
  cc_prog "$BUILD/trainer_tests/trainer" $OMP -DTRAINER_TEST_BACKEND trainer.c tests/trainer/test_backend.c \
    $objs $CUDA_OBJ $CUDA_LIBS -lm
  # shellcheck disable=SC2086
  cc_prog "$BUILD/trainer_tests/ckpt_diff" $OMP tests/trainer/ckpt_diff.c $LLAMA_OBJS -lm
  cc_prog "$BUILD/trainer_tests/hub_nocurl" tests/hub/hub_cli.c "$BUILD/train_hub.o" "$UTIL_OBJ" "$BUILD/llama_json.o" -lm
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
  for t in basic train_directions resume accumulation bad_inputs generate interrupt sft tokenize; do
    run_test "trainer_$t" tests/trainer/run.sh "$t" "$BUILD/trainer_tests/trainer" "$BUILD/trainer_tests"
  done
  run_test trainer_hub tests/hub/run.sh "$BUILD/trainer_tests/trainer" "$BUILD/trainer_tests" "$TRAIN_HUB_CURL"
  if [ -x "$BUILD/trainer_tests/trainer_emu" ]; then
    run_test trainer_cuda_emu tests/trainer/run.sh cuda_emu "$BUILD/trainer_tests/trainer_emu" "$BUILD/trainer_tests"
  else
    run_test trainer_cuda_emu sh -c "echo 'SKIP: no CUDA emulator build (ASan, or no C++ compiler)'; exit 77"
  fi
}
