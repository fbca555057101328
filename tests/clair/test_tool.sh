#!/usr/bin/env bash
# tests/clair/test_tool.sh - end-to-end tests of `clair generate`, `clair revise`, `clair judge`
# and `clair stats` against the scripted local server (tests/clair/server.py, Python standard
# library only).
#   CLAIR_BIN (default ./clair), CLAIR_TMP (default build/clair/tool.PID; removed if all pass)
# Checks: every input line ends in exactly one record with the expected kind/reason/error;
# retries happen the scripted number of times; Retry-After is honoured; timeouts, dropped
# connections, malformed JSON and marker-less replies are handled; the API key is sent and never
# written; a run killed (SIGKILL, then SIGTERM) and restarted loses and duplicates nothing and
# never requests a finished line again; a torn last line is repaired; a changed input is
# refused; --retry-failed retries failed lines; stats match Python. generate and judge: end to
# end with kill -9 and rerun; generate's output feeds revise (conversational prompts too);
# --param against a reasoning-model-style server; a bad URL, key, model or path stops after one
# request naming the fix; server text that is not UTF-8 or cut mid-character and an echoed API
# key leave valid, key-free files that a rerun reads; numeric options are range-checked;
# --max-retry-after caps Retry-After; --dry-run sends nothing; --max-cost stops in budget.
set -u
cd "$(dirname "$0")/../.."
BIN=${CLAIR_BIN:-./clair}
T=${CLAIR_TMP:-build/clair/tool.$$}
PY=$(command -v python3 || true)
if [ -z "$PY" ]; then echo "SKIP: python3 not found (needed for the test server)"; exit 77; fi
rm -rf "$T"; mkdir -p "$T"
SRV_PID=""
SRV2=""
PASSED=0
cleanup() {
  [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null
  [ -n "$SRV2" ] && kill "$SRV2" 2>/dev/null
  wait 2>/dev/null
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
export PORT_FILE="$T/port"
reset() { curl -s -X POST "http://127.0.0.1:$PORT/reset" >/dev/null; }
requests() { curl -s "http://127.0.0.1:$PORT/log" | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
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

echo "== 8. generate: prompts (strings and messages) -> answers; kill -9 and rerun; --n; truncated replies"
"$PY" tests/clair/tool_check.py gen-input "$T/g.jsonl" 24 300
reset
"$BIN" generate --in "$T/g.jsonl" --out "$T/ga.jsonl" "${COMMON[@]}" --concurrency 3 --quiet 2>/dev/null &
pid=$!; sleep 1.5; kill -9 $pid; wait $pid 2>/dev/null
"$PY" tests/clair/tool_check.py done "$T/g.jsonl" "$T/ga.jsonl" "$PORT" "$T/gdone.json"
reset
"$BIN" generate --in "$T/g.jsonl" --out "$T/ga.jsonl" "${COMMON[@]}" --concurrency 3 2>"$T/gerr.txt" || fail "generate rerun exited $?"
grep -q "tokens [1-9][0-9]* in + [1-9][0-9]* out" "$T/gerr.txt" || fail "generate: no token usage in the summary: $(tail -n 2 "$T/gerr.txt")"
"$PY" tests/clair/tool_check.py units "$T/ga.jsonl" 24 1 --resumed-from "$T/gdone.json" --kind kept || fail "generate kill and rerun"
"$PY" - "$T/g.jsonl" "$T/ga.jsonl" <<'PYEOF' || fail "generate output"
import json, sys
inp = [json.loads(l) for l in open(sys.argv[1])]
for l in open(sys.argv[2]):
    r = json.loads(l)
    src = inp[r["clair_line"] - 1]
    assert r["prompt"] == src["prompt"] and r["idx"] == src["idx"], r
    assert r["response"].startswith("Teh answer") and r["finish_reason"] == "stop", r
    assert r["clair_usage"]["prompt_tokens"] > 0, r
PYEOF
printf '%s\n' '{"prompt": "Q1 [[id=n1 script=ok]]"}' '{"prompt": "Q2 [[id=tr1 script=length]]"}' \
  '{"prompt": "Q3 [[id=tr2 script=lengthnull]]"}' '{"prompt": [{"role": "user", "content": "Q4 [[id=n4 script=ok]]"}]}' >"$T/g2.jsonl"
"$BIN" generate --in "$T/g2.jsonl" --out "$T/gn.jsonl" "${COMMON[@]}" --n 2 --quiet 2>"$T/gerr2.txt" || fail "generate --n 2 exited $?"
"$PY" - "$T/gn.jsonl" <<'PYEOF' || fail "generate --n 2 / truncated"
import json, sys
kept = [json.loads(l) for l in open(sys.argv[1])]
dropped = [json.loads(l) for l in open(sys.argv[1] + ".dropped.jsonl")]
assert sorted((r["clair_line"], r["sample"]) for r in kept) == [(1, 0), (1, 1), (4, 0), (4, 1)], kept
assert len({r["response"] for r in kept}) == 4, "samples of a prompt are separate requests"
assert sorted((r["clair_line"], r["clair_part"], r["reason"]) for r in dropped) == \
    [(2, 0, "truncated"), (2, 1, "truncated"), (3, 0, "truncated"), (3, 1, "truncated")], dropped
PYEOF
reset
"$BIN" generate --in "$T/g2.jsonl" --out "$T/gn.jsonl" "${COMMON[@]}" --n 3 --quiet 2>"$T/gerr3.txt" || fail "a larger --n on resume: $?"
[ "$(requests)" = 4 ] || fail "a larger --n asks only the new samples: $(requests) requests"
"$BIN" generate --in "$T/g2.jsonl" --out "$T/gn.jsonl" "${COMMON[@]}" --n 1 --quiet 2>"$T/gerr3.txt" && fail "a smaller --n accepted on resume"
grep -q "part 1 of a line, but this command makes 1 per line" "$T/gerr3.txt" || fail "smaller --n message: $(cat "$T/gerr3.txt")"

echo "== 9. generate's answers (conversational prompts too) -> revise"
reset
"$BIN" revise --in "$T/ga.jsonl" --out "$T/gp.jsonl" "${COMMON[@]}" --concurrency 4 --quiet 2>"$T/gperr.txt" || fail "revise of generate's output exited $?"
"$PY" tests/clair/tool_check.py units "$T/gp.jsonl" 24 1 --kind kept || fail "revise of generate's output: $(cat "$T/gperr.txt")"
"$PY" - "$T/gp.jsonl" <<'PYEOF' || fail "conversational pairs"
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if isinstance(r["prompt"], list):
        assert r["prompt"][0]["role"] == "system", r
        assert r["chosen"][0]["role"] == "assistant" and r["rejected"][0]["role"] == "assistant", r
        assert r["chosen"][0]["content"] == r["rejected"][0]["content"].replace("teh", "the") + " Indeed.", r
    else:
        assert isinstance(r["chosen"], str), r
PYEOF
printf '%s\n' '{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Helo teh [[id=m1 script=ok]]"}]}' \
  '{"prompt": "P", "completion": "teh completion [[id=c1 script=ok]]"}' '{"messages": [{"role": "user", "content": "no answer"}]}' \
  '{"prompt": "P2", "completion": [{"role": "assistant", "content": "teh list [[id=c2 script=ok]]"}]}' >"$T/trl.jsonl"
"$BIN" revise --in "$T/trl.jsonl" --out "$T/trlp.jsonl" "${COMMON[@]}" --quiet 2>"$T/trlerr.txt" || fail "TRL layouts: exit $?"
[ "$(wc -l <"$T/trlp.jsonl")" = 3 ] || fail "TRL layouts: $(cat "$T/trlp.jsonl" "$T/trlerr.txt")"
"$PY" - "$T/trlp.jsonl" <<'PYEOF' || fail "TRL layouts: the records"
import json, sys
r = {x["clair_line"]: x for x in map(json.loads, open(sys.argv[1]))}
assert r[1]["prompt"] == [{"role": "user", "content": "Hi?"}] and r[1]["chosen"][0]["content"].startswith("Helo the"), r[1]
assert r[2]["prompt"] == "P" and r[2]["chosen"].startswith("the completion"), r[2]
assert r[4]["chosen"] == [{"role": "assistant", "content": "the list [[id=c2 script=ok]] Indeed."}], r[4]
PYEOF
grep -q '"error":"bad_input"' "$T/trlp.jsonl.failed.jsonl" || fail "a messages record without an answer is not bad input"

echo "== 10. judge: pairs by prompt, both orders, win rate; kill -9 and rerun"
"$PY" tests/clair/tool_check.py judge-input "$T/ja.jsonl" "$T/jb.jsonl" 20 300
reset
"$BIN" judge --a "$T/ja.jsonl" --b "$T/jb.jsonl" --out "$T/v.jsonl" "${COMMON[@]}" --concurrency 4 --quiet 2>/dev/null &
pid=$!; sleep 1.5; kill -9 $pid; wait $pid 2>/dev/null
"$PY" tests/clair/tool_check.py done "$T/ja.jsonl" "$T/v.jsonl" "$PORT" "$T/jdone.json"
reset
"$BIN" judge --a "$T/ja.jsonl" --b "$T/jb.jsonl" --out "$T/v.jsonl" "${COMMON[@]}" --concurrency 4 2>"$T/jerr.txt" || fail "judge rerun exited $?"
grep -q "win rate" "$T/jerr.txt" || fail "judge prints no win rate"
"$PY" tests/clair/tool_check.py units "$T/v.jsonl" 20 2 --resumed-from "$T/jdone.json" --kind kept || fail "judge kill and rerun"
"$BIN" stats "$T/v.jsonl" --json >"$T/vstats.json" || fail "stats of verdicts"
"$PY" tests/clair/tool_check.py winrate "$T/ja.jsonl" "$T/vstats.json" || fail "win rate"
echo '{"prompt": "Unpaired [[id=u1 script=ok]]", "response": "x"}' >>"$T/ja.jsonl"
"$BIN" judge --a "$T/ja.jsonl" --b "$T/jb.jsonl" --out "$T/v.jsonl" "${COMMON[@]}" --quiet 2>"$T/jerr2.txt" || fail "judge with an unpaired line: $?"
grep -q "no line of .* has this prompt" "$T/jerr2.txt" || fail "an unpaired line is not named"
echo '{"user": "{prompt}\n<answer_1>\n{answer_1}\n</answer_1>\n\n<answer_2>\n{answer_2}\n</answer_2>", "marker": "Winner:"}' >"$T/jt.json"
"$BIN" judge --a "$T/ja.jsonl" --b "$T/jb.jsonl" --out "$T/v2.jsonl" "${COMMON[@]}" --template "$T/jt.json" --limit 2 --quiet 2>/dev/null || fail "judge --template"
[ "$(cat "$T/v2.jsonl.dropped.jsonl" | wc -l)" = 4 ] || fail "a reply without the template's marker is not dropped as no_verdict"

echo "== 11. --param against a reasoning-model-style server"
"$PY" tests/clair/server.py --port-file "$T/port2" --expect-key "$CLAIR_TEST_KEY" --models test-model,o-test --reasoning-model o-test &
SRV2=$!
for _ in $(seq 100); do [ -s "$T/port2" ] && break; sleep 0.05; done
P2=$(cat "$T/port2"); U2="http://127.0.0.1:$P2/v1"
R2=(--base-url "$U2" --api-key-env CLAIR_TEST_KEY --backoff 0.05 --max-backoff 0.2 --timeout 2 --max-attempts 3 --quiet)
head -n 6 "$T/slow.jsonl" | sed 's/slow300/ok/' >"$T/r6.jsonl"
"$BIN" revise --in "$T/r6.jsonl" --out "$T/o1.jsonl" "${R2[@]}" --model o-test 2>"$T/perr.txt" && fail "max_tokens accepted by the reasoning model"
grep -q "stopped after the first request.*max_tokens.*--param" "$T/perr.txt" || fail "no --param hint: $(cat "$T/perr.txt")"
[ "$(curl -s "http://127.0.0.1:$P2/log" | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 1 ] || fail "more than one request before stopping"
[ ! -s "$T/o1.jsonl.failed.jsonl" ] || fail "the preflight's failure was recorded as the line's"
curl -s -X POST "http://127.0.0.1:$P2/reset" >/dev/null
"$BIN" revise --in "$T/r6.jsonl" --out "$T/o1.jsonl" "${R2[@]}" --model o-test --param max_tokens= --param temperature= \
  --param max_completion_tokens=256 --param 'reasoning_effort="low"' 2>"$T/perr2.txt" || fail "revise with --param exited $?"
"$PY" tests/clair/tool_check.py units "$T/o1.jsonl" 6 1 --kind kept || fail "--param run"
curl -s "http://127.0.0.1:$P2/bodies" | "$PY" -c '
import json, sys
for ident, b in json.load(sys.stdin):
    assert "max_tokens" not in b and "temperature" not in b, b
    assert b["max_completion_tokens"] == 256 and b["reasoning_effort"] == "low" and b["stream"] is False, b
' || fail "--param fields not as asked"
"$BIN" revise --in "$T/r6.jsonl" --out "$T/o2.jsonl" "${R2[@]}" --model o-test --param 'effort=low' 2>"$T/perr3.txt" && fail "a --param that is not JSON accepted"
grep -q "not JSON.*needs quotes" "$T/perr3.txt" || fail "bad --param message: $(cat "$T/perr3.txt")"

echo "== 12. a bad URL, key, model or path stops after one request, naming the fix"
expect_stop() {   # expect_stop WHAT PATTERN ARGS...: exit 1, the message matches, at most one request
  local what=$1 pat=$2; shift 2
  curl -s -X POST "http://127.0.0.1:$P2/reset" >/dev/null
  rm -f "$T/bad.jsonl"*
  "$BIN" revise --in "$T/r6.jsonl" --out "$T/bad.jsonl" --backoff 0.05 --max-attempts 6 --quiet "$@" 2>"$T/berr.txt" && fail "$what: accepted"
  grep -q -- "$pat" "$T/berr.txt" || fail "$what: message $(cat "$T/berr.txt")"
  n=$(curl -s "http://127.0.0.1:$P2/log" | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))')
  [ "$n" -le 1 ] || fail "$what: $n requests before stopping"
  [ ! -s "$T/bad.jsonl.failed.jsonl" ] || fail "$what: lines recorded as failed"
}
expect_stop "closed port" "check --base-url" --base-url http://127.0.0.1:9/v1 --model test-model
expect_stop "no scheme" "needs the scheme" --base-url "127.0.0.1:$P2/v1" --model test-model
expect_stop "wrong path" "check --base-url; it usually ends in /v1" --base-url "http://127.0.0.1:$P2" --model test-model --api-key-env CLAIR_TEST_KEY
expect_stop "wrong key" "API key" --base-url "$U2" --model test-model
expect_stop "wrong model" "check --model" --base-url "$U2" --model no-such-model --api-key-env CLAIR_TEST_KEY
[ "$(grep -c . "$T/berr.txt")" -le 2 ] || fail "a stop says more than the fix: $(cat "$T/berr.txt")"
# a 400 about one line's content (not a request field) is that line's failure, not the run's
{ echo '{"prompt": "p", "response": "teh long [[id=x400 script=400]]"}'; head -n 3 "$T/r6.jsonl"; } >"$T/l400.jsonl"
reset
"$BIN" revise --in "$T/l400.jsonl" --out "$T/l400o.jsonl" "${COMMON[@]}" --quiet 2>"$T/l400err.txt" || fail "a line's 400 stopped the run: $(cat "$T/l400err.txt")"
[ "$(requests)" = 4 ] || fail "a line's 400: $(requests) requests for 4 lines"
grep -q '"attempts":1,.*"clair_line":1,' "$T/l400o.jsonl.failed.jsonl" || fail "a line's 400 is not its record"

echo "== 13. server text that is not UTF-8, an excerpt cut mid-character, an echoed API key"
printf '%s\n' '{"prompt": "p", "response": "teh one [[id=u8a script=badutf8]]"}' '{"prompt": "p", "response": "teh two [[id=u8b script=cututf8]]"}' \
  '{"prompt": "p", "response": "teh three [[id=u8c script=badutf8ok]]"}' '{"prompt": "p", "response": "teh four [[id=k1 script=echokey]]"}' \
  '{"prompt": "p", "response": "teh five [[id=k2 script=echokeyok]]"}' '{"prompt": "p", "response": "teh six [[id=k0 script=ok]]"}' >"$T/u8.jsonl"
printf '{"prompt": "p", "response": "raw \xff\xfe bytes [[id=u8d script=ok]]"}\n' >>"$T/u8.jsonl"
reset
"$BIN" revise --in "$T/u8.jsonl" --out "$T/u8o.jsonl" "${COMMON[@]}" --verbose 2>"$T/u8err.txt" || fail "hostile replies: exit $?"
"$PY" tests/clair/tool_check.py valid-json "$T/u8o.jsonl" "$T/u8o.jsonl.dropped.jsonl" "$T/u8o.jsonl.failed.jsonl" || fail "a file clair wrote is not valid JSON/UTF-8"
for f in "$T/u8o.jsonl" "$T/u8o.jsonl.dropped.jsonl" "$T/u8o.jsonl.failed.jsonl" "$T/u8err.txt"; do
  ! grep -q -- "$CLAIR_TEST_KEY" "$f" || fail "the API key appears in $f"
done
"$PY" -c '
import json, sys
for l in open(sys.argv[1], encoding="utf-8"):
    r = json.loads(l)
    if r["clair_line"] == 2:
        m = r["message"]
        assert m.startswith("HTTP 500: {\"error\":{\"message\":\"\u00e9") and "\ufffd" not in m, m
    if r["clair_line"] == 1:
        assert "caf\ufffd \ufffd\ufffd broken" in r["message"], r["message"]
    if r["clair_line"] == 3:
        assert r["error"] == "bad_reply" and "\ufffd" in r["reply"], r
' "$T/u8o.jsonl.failed.jsonl" || fail "server text not mended as expected (cut on a character boundary, U+FFFD for invalid bytes)"
grep -q "Authorization: Bearer \*\*\*" "$T/u8o.jsonl.failed.jsonl" || fail "the echoed key is not visibly redacted"
"$BIN" revise --in "$T/u8.jsonl" --out "$T/u8o.jsonl" "${COMMON[@]}" --quiet 2>"$T/u8err2.txt" || fail "rerun after hostile replies: $(cat "$T/u8err2.txt")"
"$BIN" revise --in "$T/u8.jsonl" --out "$T/u8o.jsonl" "${COMMON[@]}" --retry-failed --quiet 2>"$T/u8err3.txt" || fail "--retry-failed after hostile replies: $(cat "$T/u8err3.txt")"
"$PY" tests/clair/tool_check.py valid-json "$T/u8o.jsonl" "$T/u8o.jsonl.dropped.jsonl" "$T/u8o.jsonl.failed.jsonl" || fail "after --retry-failed"

echo "== 14. numeric options are range-checked; --max-retry-after caps Retry-After"
for bad in "--concurrency 1e10" "--concurrency 2.5" "--concurrency 100000" "--timeout 1e300" "--max-attempts 0" "--temperature -1" \
           "--max-retry-after 1e9" "--max-tokens -5" "--backoff 1e300" "--price-in -1"; do
  "$BIN" revise --in "$T/r6.jsonl" --out "$T/rng.jsonl" --base-url "$URL" --model m $bad 2>"$T/rerr.txt"; rc=$?
  [ $rc -eq 1 ] || [ $rc -eq 2 ] || fail "$bad: exit $rc"
  grep -q -- "${bad%% *}" "$T/rerr.txt" || fail "$bad: the message does not name the flag: $(cat "$T/rerr.txt")"
  grep -q "out of range: allowed" "$T/rerr.txt" || fail "$bad: no range in the message: $(cat "$T/rerr.txt")"
done
"$BIN" generate --in "$T/g2.jsonl" --out "$T/rng.jsonl" --base-url "$URL" --model m --n 0 2>"$T/rerr.txt" && fail "--n 0 accepted"
grep -q -- "--n 0 is out of range: allowed a whole number from 1 to 1000" "$T/rerr.txt" || fail "--n range message"
echo '{"prompt": "p", "response": "teh x [[id=ra9 script=429ra5,ok]]"}' >"$T/ra.jsonl"
start=$(date +%s.%N)
"$BIN" revise --in "$T/ra.jsonl" --out "$T/rao.jsonl" "${COMMON[@]}" --max-retry-after 0.5 --quiet 2>/dev/null || fail "--max-retry-after run"
el=$(echo "$(date +%s.%N) - $start" | bc)
[ "$(echo "$el < 3" | bc)" = 1 ] || fail "Retry-After 5 not capped by --max-retry-after 0.5: took $el s"
grep -q '"clair_line":1' "$T/rao.jsonl" || fail "--max-retry-after: the line was not kept"

echo "== 15. --dry-run sends and writes nothing; usage is priced; --max-cost stops within budget"
reset
"$BIN" revise --in "$T/slow.jsonl" --out "$T/dry.jsonl" "${COMMON[@]}" --price-in 2 --price-out 8 --dry-run >"$T/dry.txt" 2>&1 || fail "dry run exited $?"
grep -q "^dry run: 30 requests would be sent" "$T/dry.txt" || fail "dry run: $(cat "$T/dry.txt")"
grep -q "estimated cost" "$T/dry.txt" || fail "dry run: no cost estimate"
[ ! -e "$T/dry.jsonl" ] && [ "$(requests)" = 0 ] || fail "dry run sent or wrote something"
head -n 12 "$T/slow.jsonl" | sed 's/slow300/ok/' >"$T/c12.jsonl"
reset
"$BIN" revise --in "$T/c12.jsonl" --out "$T/c.jsonl" "${COMMON[@]}" --concurrency 2 --price-in 1000000 --price-out 1000000 --max-cost 1500 2>"$T/cerr.txt"; rc=$?
[ $rc -eq 3 ] || fail "--max-cost: exit $rc, expected 3: $(tail -n 3 "$T/cerr.txt")"
grep -q "stopped by --max-cost" "$T/cerr.txt" || fail "--max-cost message"
"$PY" tests/clair/tool_check.py usage "$T/c.jsonl" 1000000 1000000 1500 || fail "--max-cost exceeded"
"$PY" tests/clair/tool_check.py done "$T/c12.jsonl" "$T/c.jsonl" "$PORT" "$T/cdone.json"
reset
"$BIN" revise --in "$T/c12.jsonl" --out "$T/c.jsonl" "${COMMON[@]}" --price-in 1000000 --price-out 1000000 --max-cost 100000 --quiet 2>"$T/cerr2.txt" || fail "--max-cost raised: exit $?"
"$PY" tests/clair/tool_check.py units "$T/c.jsonl" 12 1 --resumed-from "$T/cdone.json" --kind kept || fail "resume after --max-cost"
"$BIN" stats "$T/c.jsonl" --price-in 1 --price-out 1 | grep -q "server tokens (clair_usage of 12 records)" || fail "stats: no token usage"
kill "$SRV2" 2>/dev/null
echo "all clair tool tests passed"
PASSED=1
