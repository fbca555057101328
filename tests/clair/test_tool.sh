#!/usr/bin/env bash
# tests/clair/test_tool.sh - end-to-end tests of `clair revise` and `clair stats` against the
# scripted local server (tests/clair/server.py, Python standard library only).
#   CLAIR_BIN (default ./clair), CLAIR_TMP (default build/clair/tool.PID; removed if all pass)
# Checks: every input line ends in exactly one record with the expected kind/reason/error;
# retries happen the scripted number of times; Retry-After is honoured; timeouts, dropped
# connections, malformed JSON and marker-less replies are handled; the API key is sent and never
# written; a run killed (SIGKILL, then SIGTERM) and restarted loses and duplicates nothing and
# never requests a finished line again; a torn last line is repaired; a changed input is
# refused; --retry-failed retries failed lines; stats match Python.
set -u
cd "$(dirname "$0")/../.."
BIN=${CLAIR_BIN:-./clair}
T=${CLAIR_TMP:-build/clair/tool.$$}
PY=$(command -v python3 || true)
if [ -z "$PY" ]; then echo "SKIP: python3 not found (needed for the test server)"; exit 77; fi
rm -rf "$T"; mkdir -p "$T"
SRV_PID=""
PASSED=0
cleanup() {
  [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null; wait 2>/dev/null
  [ $PASSED -eq 1 ] && rm -rf "$T"      # kept on failure, for a look
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

export CLAIR_TEST_KEY="sk-test-$$-secret"
"$PY" tests/clair/server.py --port-file "$T/port" --expect-key "$CLAIR_TEST_KEY" &
SRV_PID=$!
for _ in $(seq 100); do [ -s "$T/port" ] && break; sleep 0.05; done
[ -s "$T/port" ] || fail "test server did not start"
PORT=$(cat "$T/port")
URL="http://127.0.0.1:$PORT/v1"
COMMON=(--base-url "$URL" --model test-model --api-key-env CLAIR_TEST_KEY --backoff 0.05 --max-backoff 0.2 --timeout 1 --max-attempts 3)

echo "== 1. scripted run: retries, Retry-After, timeouts, drops, bad JSON, markers, bad input"
"$PY" tests/clair/tool_check.py input "$T/in.jsonl"
start=$(date +%s.%N)
"$BIN" revise --in "$T/in.jsonl" --out "$T/out.jsonl" "${COMMON[@]}" --concurrency 8 --verbose 2>"$T/err1.txt"
rc=$?
end=$(date +%s.%N)
cat "$T/err1.txt" | tail -n 8
[ $rc -eq 0 ] || fail "clair revise exited $rc"
"$PY" tests/clair/tool_check.py check "$T/in.jsonl" "$T/out.jsonl" "$PORT" --key "$CLAIR_TEST_KEY" --stderr "$T/err1.txt" || fail "scripted run"
grep -q "in.jsonl line 4: not valid JSON" "$T/err1.txt" || fail "a malformed input line is not named on stderr"
echo "run took $(echo "$end - $start" | bc) s"

echo "== 2. the same command again: nothing to do, nothing requested"
curl -s -X POST "http://127.0.0.1:$PORT/reset" >/dev/null
"$BIN" revise --in "$T/in.jsonl" --out "$T/out.jsonl" "${COMMON[@]}" 2>"$T/err2.txt" || fail "rerun exited $?"
n=$(curl -s "http://127.0.0.1:$PORT/log")
[ "$n" = "[]" ] || fail "a finished run requested again: $n"
"$PY" tests/clair/tool_check.py check "$T/in.jsonl" "$T/out.jsonl" "$PORT" --resumed-from /dev/null 2>/dev/null >/dev/null || true

echo "== 3. --retry-failed: failed lines are requested again, the one that now succeeds is kept"
"$BIN" revise --in "$T/in.jsonl" --out "$T/out.jsonl" "${COMMON[@]}" --retry-failed 2>"$T/err3.txt" || fail "retry run exited $?"
tail -n 3 "$T/err3.txt"
"$PY" tests/clair/tool_check.py check "$T/in.jsonl" "$T/out.jsonl" "$PORT" --retried 1 || fail "after --retry-failed"

echo "== 4. kill -9, SIGTERM, torn last line, resume"
"$PY" tests/clair/tool_check.py slow-input "$T/slow.jsonl" 30 300
curl -s -X POST "http://127.0.0.1:$PORT/reset" >/dev/null
"$BIN" revise --in "$T/slow.jsonl" --out "$T/k.jsonl" "${COMMON[@]}" --concurrency 3 --quiet 2>/dev/null &
pid=$!; sleep 1.2; kill -9 $pid; wait $pid 2>/dev/null
"$PY" tests/clair/tool_check.py done "$T/slow.jsonl" "$T/k.jsonl" "$PORT" "$T/done1.json"
curl -s -X POST "http://127.0.0.1:$PORT/reset" >/dev/null
"$BIN" revise --in "$T/slow.jsonl" --out "$T/k.jsonl" "${COMMON[@]}" --concurrency 3 2>"$T/err4.txt" &
pid=$!; sleep 1.0; kill -TERM $pid; wait $pid; rc=$?
[ $rc -eq 130 ] || fail "SIGTERM: exit $rc, expected 130"
grep -q "run the same command again to resume" "$T/err4.txt" || fail "no resume hint after SIGTERM"
"$PY" tests/clair/tool_check.py norequest "$PORT" "$T/done1.json" || fail "after kill -9"
"$PY" tests/clair/tool_check.py done "$T/slow.jsonl" "$T/k.jsonl" "$PORT" "$T/done2.json"
printf '{"prompt": "torn rec' >>"$T/k.jsonl"          # what a crash in the middle of a write leaves
curl -s -X POST "http://127.0.0.1:$PORT/reset" >/dev/null
"$BIN" revise --in "$T/slow.jsonl" --out "$T/k.jsonl" "${COMMON[@]}" --concurrency 3 2>"$T/err5.txt" || fail "resume exited $?"
grep -q "partial record" "$T/err5.txt" || fail "the torn line was not reported"
"$PY" tests/clair/tool_check.py check "$T/slow.jsonl" "$T/k.jsonl" "$PORT" --resumed-from "$T/done2.json" || fail "after resume"

echo "== 5. a changed input is refused"
sed '1s/answer number 0/answer number zero/' "$T/slow.jsonl" >"$T/slow2.jsonl"
cp "$T/k.jsonl" "$T/k2.jsonl"
"$BIN" revise --in "$T/slow2.jsonl" --out "$T/k2.jsonl" "${COMMON[@]}" 2>"$T/err6.txt" && fail "changed input accepted"
grep -q "input changed" "$T/err6.txt" || fail "no 'input changed' message: $(cat "$T/err6.txt")"

echo "== 6. a missing API key variable is an error that does not print a key"
env -u CLAIR_TEST_KEY "$BIN" revise --in "$T/slow.jsonl" --out "$T/k3.jsonl" --base-url "$URL" --model m --api-key-env CLAIR_TEST_KEY 2>"$T/err7.txt" && fail "missing key accepted"
grep -q "CLAIR_TEST_KEY" "$T/err7.txt" || fail "missing key message"

echo "== 6b. --help everywhere, a bad template is refused, fixing a bad input line and --retry-failed"
for cmd in "" revise stats diff; do "$BIN" $cmd --help >"$T/help.txt" || fail "clair $cmd --help exited $?"; grep -q usage "$T/help.txt" || fail "clair $cmd --help"; done
echo '{"user": "no placeholder here", "marker": "X:"}' >"$T/tpl.json"
"$BIN" revise --in "$T/slow.jsonl" --out "$T/k4.jsonl" --base-url "$URL" --model m --template "$T/tpl.json" 2>"$T/err9.txt" && fail "bad template accepted"
grep -q "{answer}" "$T/err9.txt" || fail "bad template message"
sed 's/{"prompt": "p"}/{"prompt": "p", "response": "fixed teh answer [[id=fixed script=ok]]", "expect": "kept:1"}/' "$T/in.jsonl" >"$T/in_fixed.jsonl"
cp "$T/out.jsonl" "$T/f.jsonl"; cp "$T/out.jsonl.dropped.jsonl" "$T/f.jsonl.dropped.jsonl"; cp "$T/out.jsonl.failed.jsonl" "$T/f.jsonl.failed.jsonl"
"$BIN" revise --in "$T/in_fixed.jsonl" --out "$T/f.jsonl" "${COMMON[@]}" --retry-failed --quiet 2>"$T/err10.txt" || fail "retry of a fixed line exited $?"
grep -q '"clair_line":10,' "$T/f.jsonl" || fail "the fixed input line 10 was not kept"
[ "$(grep -c '"clair_line":10,' "$T/f.jsonl" "$T/f.jsonl.dropped.jsonl" "$T/f.jsonl.failed.jsonl" | awk -F: '{s+=$2} END {print s}')" = 1 ] || fail "line 10 not exactly once"

echo "== 7. clair stats (strings and message lists) against Python"
"$BIN" stats "$T/out.jsonl" --json >"$T/stats.json" || fail "stats exited $?"
"$PY" tests/clair/tool_check.py stats "$T/out.jsonl" "$T/stats.json" || fail "stats"
"$PY" - "$T/out.jsonl" "$T/conv.jsonl" <<'PYEOF'
import json, sys
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as g:
    for l in f:
        r = json.loads(l)
        u = {"role": "user", "content": r["prompt"]}
        g.write(json.dumps({"prompt": r["prompt"], "chosen": [u, {"role": "assistant", "content": r["chosen"]}],
                            "rejected": [u, {"role": "assistant", "content": r["rejected"]}]}) + "\n")
    g.write('{"chosen": 5, "rejected": "x"}\nnot json\n')
PYEOF
"$BIN" stats "$T/conv.jsonl" --json >"$T/stats2.json" 2>"$T/err8.txt" || fail "stats (messages) exited $?"
grep -q "line .*: field \"chosen\" is a number" "$T/err8.txt" || fail "bad stats line not named"
head -n -2 "$T/conv.jsonl" >"$T/conv_ok.jsonl"
"$PY" tests/clair/tool_check.py stats "$T/conv_ok.jsonl" "$T/stats2.json" || fail "stats (messages)"
"$BIN" stats "$T/out.jsonl"
echo "all clair tool tests passed"
PASSED=1
