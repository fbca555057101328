# mk/60-repro.sh - the paper's study at laptop scale (examples/repro; sourced by build.sh).
#
# Nothing to build: examples/repro/run.sh drives the trainer and ./clair built by the parts before.
# The test runs `run.sh --quick` from scratch (a few minutes on 2 cores) and then
# examples/repro/check_quick.py, which asserts only what holds for any random draw: every stage
# completes and accounts for every line, CLAIR pairs are more minimal than Stronger Preferred
# pairs, APO-zero raises the chosen log-prob and APO-down lowers it. Never the ranking itself.

build_repro() { :; }

test_repro() {
  local clair_bin=./clair out="$BUILD/repro-quick"
  [ "$BUILD" = build ] || clair_bin="$BUILD/clair/clair"
  if [ -n "$SAN" ]; then   # minutes of training under ASan: the other parts test the same code
    run_test repro_quick sh -c "echo 'SKIP: not under ASan (the trainer and clair tests cover the code it runs)'; exit 77"
    return 0
  fi
  if [ ! -x "$clair_bin" ]; then
    run_test repro_quick sh -c "echo 'SKIP: no ./clair (libcurl headers missing)'; exit 77"
    return 0
  fi
  rm -rf "$out"
  # shellcheck disable=SC2016 # $1..$3 are the inner shell's arguments
  run_test repro_quick sh -c 'TRAINER="$1" CLAIR="$2" examples/repro/run.sh --quick --out "$3" &&
    python3 -B examples/repro/check_quick.py "$3"' sh "$(trainer__bin)" "$clair_bin" "$out"
}
