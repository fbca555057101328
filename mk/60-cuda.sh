# mk/60-cuda.sh - build and test steps of the cuda part (sourced by build.sh; see its header).
# Variables from build.sh: CC NVCC CFLAGS OMP BUILD SAN mode; helper: run_test NAME CMD...
build_cuda() { :; }
test_cuda() { :; }
