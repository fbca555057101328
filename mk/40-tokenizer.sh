# mk/40-tokenizer.sh - build and test steps of the tokenizer part (sourced by build.sh; see its header).
# Variables from build.sh: CC NVCC CFLAGS OMP BUILD SAN mode; helper: run_test NAME CMD...
build_tokenizer() { :; }
test_tokenizer() { :; }
