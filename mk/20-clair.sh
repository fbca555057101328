# mk/20-clair.sh - build and test steps of the clair part (sourced by build.sh; see its header).
# Variables from build.sh: CC NVCC CFLAGS OMP BUILD SAN mode and the object lists; helpers:
# cc_obj, cc_prog, run_test NAME CMD...
#
# Builds ./clair (the tool, links libcurl) and $BUILD/clair/ test programs. Tests: unit tests of
# clair.h (JSON, metrics vs committed Python expectations, diff, parse, filter, prompt), the
# request engine (tests/clair/test_http.c), end-to-end runs of `clair generate` / `revise` /
# `judge` / `stats` against tests/clair/server.py (Python standard library only), and
# `clair revise` against a real llama.cpp server (tests/clair/real_server.sh; skips offline).
# The header alone (C99 and C++11, with and without curl, its examples) is checked by
# mk/05-headers.sh. tools/gen_clair_expect.py regenerates tests/clair/expect_metrics.jsonl.
# libcurl's headers are the one optional dependency: without them everything else still builds,
# ./clair and its HTTP tests are skipped, and the build says how to get them.
CLAIR_CURL=1
echo '#include <curl/curl.h>' | $CC -E -x c - >/dev/null 2>&1 || CLAIR_CURL=0

build_clair() {
  mkdir -p "$BUILD/clair"
  local dest=clair
  [ "$BUILD" = build ] || dest="$BUILD/clair/clair"
  cc_prog "$BUILD/clair/test_clair" tests/clair/test_clair.c -lm
  if [ $CLAIR_CURL = 0 ]; then
    echo "clair: ./clair not built: the libcurl headers are missing (Debian/Ubuntu: apt-get install libcurl4-openssl-dev)"
    return 0
  fi
  cc_prog "$dest" clair.c "$UTIL_OBJ" -lcurl -lm
  cc_prog "$BUILD/clair/test_http" tests/clair/test_http.c -lcurl -lm
}

test_clair() {
  local bin=./clair t
  [ "$BUILD" = build ] || bin="$BUILD/clair/clair"
  run_test clair_unit "$BUILD/clair/test_clair" tests/clair/expect_metrics.jsonl 20000
  if [ $CLAIR_CURL = 0 ]; then
    for t in clair_http clair_tool clair_real_server; do
      run_test $t sh -c "echo 'SKIP: no libcurl headers (apt-get install libcurl4-openssl-dev), so no ./clair'; exit 77"
    done
    return 0
  fi
  # the same tree as on a machine without libcurl's headers (a nested build that hides them; only
  # where they exist, so the nested build never nests again; not under ASan)
  if [ -z "$SAN" ]; then run_test build_without_curl tests/nocurl/run.sh "$BUILD/nocurl"; fi
  run_test clair_http "$BUILD/clair/test_http"
  run_test clair_tool env CLAIR_BIN="$bin" CLAIR_TMP="$BUILD/clair/tool.$$" tests/clair/test_tool.sh
  # A real OpenAI-compatible server: llama.cpp (PyPI xllamacpp) serving SmolLM2-135M-Instruct.
  # Downloads ~130 MB into .cache/ once (shared with checkpoint_real_model); skips without it.
  run_test clair_real_server env CLAIR_BIN="$bin" tests/clair/real_server.sh
}
