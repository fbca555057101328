# mk/90-fuzz.sh - the parsers of outside input under libFuzzer (sourced by build.sh; see its header
# for the variables and helpers).
#
# One target per parser, in tests/fuzz/, each with a committed seed corpus in
# tests/fuzz/corpus/<target>/:
#   json          clair_json_parse (and the writer's round trip)
#   reply         a server's reply: clair_json_parse + clair_chat_content, clair_parse_reply
#   config        config.json text: llama_config_parse
#   safetensors   a safetensors file: st_open, then every tensor read
#   gguf          a GGUF file: llama_model_load_gguf
#   tokenizer     tokenizer.json: tokenizer_load, then encode and decode
# Only under `./build.sh asan`: the targets and the sources they test are built with clang
# -fsanitize=fuzzer,address,undefined into $BUILD/fuzz/, and each runs for FUZZ_SECONDS (default
# 5) from its seeds plus what earlier runs found ($BUILD/fuzz/corpus-<target>/). A crash, leak,
# sanitizer report or timeout fails the test and leaves the input in $BUILD/fuzz/<target>-crash-*
# (or -leak-, -timeout-); replay it with `$BUILD/fuzz/fuzz_<target> FILE`. Without clang's
# libFuzzer (Debian/Ubuntu: apt-get install clang libclang-rt-14-dev) every target is a skip that
# says so; in the other modes the part is one skip pointing to ./build.sh asan.

FUZZ_TARGETS="json reply config safetensors gguf tokenizer"
FUZZ_CC=${FUZZ_CC:-clang}
FUZZ_FLAGS="-g -O1 -std=c99 -Wall -Wextra -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
FUZZ_MISSING=""   # why the targets cannot be built, when they cannot

# The project sources each target links (compiled once with coverage instrumentation).
fuzz__sources() {
  case $1 in
    json|reply) echo "llama/json.c" ;;
    tokenizer) echo "util.c llama/json.c llama/tokenizer.c" ;;
    *) echo "util.c llama/json.c llama/safetensors.c llama/checkpoint.c llama/gguf.c llama/model.c llama/gemm.c" ;;
  esac
}

# fuzz__obj SRC: prints the instrumented object of SRC, (re)compiling it when stale.
fuzz__obj() {
  local src=$1 out
  out="$BUILD/fuzz/obj/$(echo "$src" | tr / _ | sed 's/\.c$/.o/')"
  if stale "$out" "$src"; then
    # shellcheck disable=SC2086
    $FUZZ_CC $FUZZ_FLAGS -fsanitize=fuzzer-no-link,address,undefined -c "$src" -o "$out.tmp.$$" >&2 || return 1
    mv -f "$out.tmp.$$" "$out" || return 1
  fi
  echo "$out"
}

build_fuzz() {
  local t s objs
  [ -n "$SAN" ] || return 0
  mkdir -p "$BUILD/fuzz/obj"
  if ! command -v "$FUZZ_CC" >/dev/null 2>&1; then
    FUZZ_MISSING="no $FUZZ_CC (Debian/Ubuntu: apt-get install clang libclang-rt-14-dev)"
    echo "fuzz: $FUZZ_MISSING; the fuzz targets are skipped"
    return 0
  fi
  if ! echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' |
       $FUZZ_CC -fsanitize=fuzzer,address -x c - -o "$BUILD/fuzz/probe" >/dev/null 2>&1; then
    FUZZ_MISSING="$FUZZ_CC cannot link -fsanitize=fuzzer (libFuzzer missing: apt-get install libclang-rt-14-dev, or the package of your clang version)"
    echo "fuzz: $FUZZ_MISSING; the fuzz targets are skipped"
    return 0
  fi
  for t in $FUZZ_TARGETS; do
    objs=""
    for s in $(fuzz__sources "$t"); do objs="$objs $(fuzz__obj "$s")"; done
    # shellcheck disable=SC2086
    $FUZZ_CC $FUZZ_FLAGS -fsanitize=fuzzer,address,undefined "tests/fuzz/fuzz_$t.c" $objs -lm -pthread \
      -o "$BUILD/fuzz/fuzz_$t.tmp.$$"
    mv -f "$BUILD/fuzz/fuzz_$t.tmp.$$" "$BUILD/fuzz/fuzz_$t"
  done
}

# fuzz__run TARGET: FUZZ_SECONDS of fuzzing from the seeds; the files the loaders read go to a
# temporary directory of this run, removed after it.
fuzz__run() {
  local t=$1 work="$BUILD/fuzz/corpus-$1" base="$BUILD/fuzz" tmp rc=0
  mkdir -p "$work"
  # in memory when there is a /dev/shm: every input becomes a file, and on disk that is the cost
  [ -d /dev/shm ] && [ -w /dev/shm ] && base=/dev/shm
  tmp=$(mktemp -d "$base/clair-apo-fuzz.XXXXXX")
  TMPDIR="$tmp" "$BUILD/fuzz/fuzz_$t" -max_total_time="${FUZZ_SECONDS:-5}" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$BUILD/fuzz/$t-" "$work" "tests/fuzz/corpus/$t" || rc=$?
  rm -rf "$tmp"
  return $rc
}

test_fuzz() {
  local t
  if [ -z "$SAN" ]; then
    run_test fuzz sh -c "echo 'SKIP: the fuzz targets run under ./build.sh asan'; exit 77"
    return 0
  fi
  for t in $FUZZ_TARGETS; do
    if [ -n "$FUZZ_MISSING" ]; then
      run_test "fuzz_$t" sh -c "echo 'SKIP: $FUZZ_MISSING'; exit 77"
    else
      run_test "fuzz_$t" fuzz__run "$t"
    fi
  done
}
