#!/usr/bin/env bash
# bench/clair_throughput.sh - pairs per second of `clair revise` against the local scripted
# server (tests/clair/server.py) with a fixed 200 ms latency per completion, at concurrency
# 1, 8 and 64. The ideal is concurrency / 0.2 s: 5, 40 and 320 pairs/s; the gap is clair's and
# the (single-process, threaded, Python) server's overhead. Needs ./clair (./build.sh) and python3.
#   bench/clair_throughput.sh [LATENCY_MS]
set -eu
cd "$(dirname "$0")/.."
LAT=${1:-200}
T=$(mktemp -d)
python3 tests/clair/server.py --port-file "$T/port" --latency-ms "$LAT" &
SRV=$!
trap 'kill $SRV 2>/dev/null; rm -rf "$T"' EXIT
for _ in $(seq 100); do [ -s "$T/port" ] && break; sleep 0.05; done
PORT=$(cat "$T/port")
echo "machine: $(nproc) cores, $(uname -m); server latency ${LAT} ms; $(date -u +%Y-%m-%d)"
echo "| concurrency | pairs | seconds | pairs/s | ideal pairs/s | efficiency |"
echo "|---|---|---|---|---|---|"
for c in 1 8 64; do
  n=$((c * 20)); [ $c -gt 1 ] || n=20          # about 4 s of server time at each concurrency
  python3 - "$T/in$c.jsonl" "$n" "$c" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write(json.dumps({"prompt": "Question %d?" % i,
                            "response": "Teh answer to question %d is short. [[id=c%s-%d script=ok]]" % (i, sys.argv[3], i)}) + "\n")
PY
  s=$(date +%s.%N)
  ./clair revise --in "$T/in$c.jsonl" --out "$T/out$c.jsonl" --base-url "http://127.0.0.1:$PORT/v1" --model bench \
    --concurrency $c --quiet 2>"$T/err$c.txt"
  e=$(date +%s.%N)
  kept=$(wc -l <"$T/out$c.jsonl")
  [ "$kept" -eq "$n" ] || { echo "only $kept of $n pairs kept"; cat "$T/err$c.txt"; exit 1; }
  python3 -c "import sys; n,c,t,lat=int(sys.argv[1]),int(sys.argv[2]),float(sys.argv[3]),float(sys.argv[4]); ideal=c/(lat/1000); print('| %d | %d | %.2f | %.1f | %.0f | %.0f%% |' % (c,n,t,n/t,ideal,100*n/t/ideal))" "$n" "$c" "$(echo "$e - $s" | bc)" "$LAT"
done
