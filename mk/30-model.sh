# mk/30-model.sh - build and test steps of the model part (sourced by build.sh; see its header).
# Variables from build.sh: CC NVCC CFLAGS OMP BUILD SAN mode; helper: run_test NAME CMD...
build_model() { :; }
test_model() { :; }
