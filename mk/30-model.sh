# mk/30-model.sh - build and test steps of the model part (sourced by build.sh; see its header).
# Variables from build.sh: CC NVCC CFLAGS OMP BUILD SAN mode; helper: run_test NAME CMD...
build_model() {
  $CC $CFLAGS -std=c99 -c llama/json.c -o "$BUILD/llama_json.o"
}
test_model() { :; }
