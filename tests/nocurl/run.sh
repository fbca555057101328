#!/usr/bin/env bash
# tests/nocurl/run.sh OUTDIR - the build on a machine without libcurl's headers: everything but
# ./clair builds (the trainer included), the build says in one line what is missing and how to
# install it, and the clair tests that need it are skips that say why.
set -u
OUT=${1:?output folder}
cd "$(dirname "$0")/../.."
log="$OUT.log"
rc=0
CC="${CC:-cc} -I$PWD/tests/nocurl" BUILD_DIR="$OUT" NVCC=none ./build.sh test clair > "$log" 2>&1 || rc=$?
fails=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fails=$((fails + 1)); fi; }
check "the build and the clair tests pass (exit $rc)" '[ $rc -eq 0 ]'
check "the build says what is missing and the command that fixes it" \
  'grep -q "./clair not built: the libcurl headers are missing (Debian/Ubuntu: apt-get install libcurl4-openssl-dev)" "$log"'
check "the trainer is built" '[ -x "$OUT/trainer" ]'
check "./clair is not" '[ ! -e "$OUT/clair/clair" ]'
check "the clair tests that need curl are named skips" \
  '[ "$(grep -c "^skip  clair_.*no libcurl headers" "$log")" -eq 3 ] && grep -q "^ok    clair_unit" "$log"'
check "the trainer runs" '"$OUT/trainer" --help > "$OUT.help" 2>&1 && grep -q "usage: trainer" "$OUT.help"'
[ $fails -eq 0 ] || { echo "--- last lines of $log:"; tail -n 15 "$log"; exit 1; }
echo "all checks passed"
