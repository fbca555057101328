# mk/10-apo.sh - build and test steps of the apo part (sourced by build.sh; see its header).
# Variables from build.sh: CC NVCC CFLAGS OMP BUILD SAN mode; helper: run_test NAME CMD...
build_apo() { :; }
test_apo() { :; }
