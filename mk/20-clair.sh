# mk/20-clair.sh - build and test steps of the clair part (sourced by build.sh; see its header).
# Variables from build.sh: CC NVCC CFLAGS OMP BUILD SAN mode and the object lists; helpers:
# cc_obj, cc_prog, run_test NAME CMD...
#
# Builds ./clair (the tool, links libcurl) and $BUILD/clair/ test programs. Tests: unit tests of
# clair.h (JSON, metrics vs committed Python expectations, diff, parse, filter, prompt), the
# request engine (tests/clair/test_http.c), end-to-end runs of `clair revise` / `clair stats`
# against tests/clair/server.py (Python standard library only), and `clair revise` against a
# real llama.cpp server (tests/clair/real_server.sh; skips offline).
# The header alone (C99 and C++11, with and without curl, its examples) is checked by
# mk/05-headers.sh. tools/gen_clair_expect.py regenerates tests/clair/expect_metrics.jsonl.
build_clair() {
  mkdir -p "$BUILD/clair"
  local dest=clair
  [ "$BUILD" = build ] || dest="$BUILD/clair/clair"
  cc_prog "$dest" clair.c "$UTIL_OBJ" -lcurl -lm
  cc_prog "$BUILD/clair/test_clair" tests/clair/test_clair.c -lm
  cc_prog "$BUILD/clair/test_http" tests/clair/test_http.c -lcurl -lm
}

test_clair() {
  run_test clair_unit "$BUILD/clair/test_clair" tests/clair/expect_metrics.jsonl 20000
  run_test clair_http "$BUILD/clair/test_http"
  local bin=./clair
  [ "$BUILD" = build ] || bin="$BUILD/clair/clair"
  run_test clair_tool env CLAIR_BIN="$bin" CLAIR_TMP="$BUILD/clair/tool.$$" tests/clair/test_tool.sh
  # A real OpenAI-compatible server: llama.cpp (PyPI xllamacpp) serving SmolLM2-135M-Instruct.
  # Downloads ~130 MB into .cache/ once (shared with checkpoint_real_model); skips without it.
  run_test clair_real_server env CLAIR_BIN="$bin" tests/clair/real_server.sh
}
