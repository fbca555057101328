# mk/20-clair.sh - build and test steps of the clair part (sourced by build.sh; see its header).
# Variables from build.sh: CC NVCC CFLAGS OMP BUILD SAN mode; helper: run_test NAME CMD...
build_clair() { :; }
test_clair() { :; }
