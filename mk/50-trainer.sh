# mk/50-trainer.sh - build and test steps of the trainer part (sourced by build.sh; see its header).
# Variables from build.sh: CC NVCC CFLAGS OMP BUILD SAN mode; helper: run_test NAME CMD...
build_trainer() { :; }
test_trainer() { :; }
