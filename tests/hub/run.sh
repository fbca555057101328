#!/usr/bin/env bash
# tests/hub/run.sh - Hugging Face model ids (train/hub.c) end to end, against a local stand-in for
# the hub (tests/hub/server.py: redirects to LFS storage, ETags, 401/403/404 with the hub's error
# codes, a connection dropped mid-file) serving examples/tiny-llama under several names.
#
#   tests/hub/run.sh TRAINER_BIN TOOLS_DIR CURL
#
# TOOLS_DIR holds hub_nocurl (tests/hub/hub_cli.c with train/hub.c built without libcurl). CURL is
# 1 when the trainer was built with libcurl; with 0 only the cache tests run (and the message of a
# build that cannot download). Exit 0 pass, 1 fail, 77 skip. Python's standard library only.
set -u
BIN=$(cd "$(dirname "${1:?trainer binary}")" && pwd)/$(basename "$1")
TOOLS=$(cd "${2:?tools dir}" && pwd)
CURL=${3:-1}
cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)
MODEL=$ROOT/examples/tiny-llama
export OMP_NUM_THREADS=1
command -v python3 >/dev/null || { echo "SKIP: python3 (standard library) is needed for the local hub"; exit 77; }
[ -f "$MODEL/model.safetensors" ] || { echo "SKIP: $MODEL missing (run tools/make_example.py)"; exit 77; }

W=$(mktemp -d "${TMPDIR:-/tmp}/hub-test-XXXXXX")
SERVER_PID=""
trap '[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$W"' EXIT
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
ok() { echo "ok: $*"; }
# expect_fail NAME PATTERN CMD...: the command must exit non-zero and print PATTERN (grep -E)
expect_fail() {
  local name=$1 pat=$2; shift 2
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  if [ $rc -eq 0 ]; then fail "$name: exit 0, expected an error"; echo "$out" | tail -5
  elif ! echo "$out" | grep -Eq -- "$pat"; then fail "$name: message lacks /$pat/:"; echo "$out" | tail -5
  else ok "$name: $(echo "$out" | grep -E -m1 -- "$pat")"; fi
}
# expect_ok NAME CMD...: the command must succeed (its output is kept in $W/last.log)
expect_ok() {
  local name=$1; shift
  if "$@" >"$W/last.log" 2>&1; then ok "$name"; else fail "$name (exit $?):"; tail -8 "$W/last.log"; fi
}

# Nothing of the user's own Hugging Face setup may leak in: a token, a cache, offline mode.
unset HF_TOKEN HUGGING_FACE_HUB_TOKEN HF_TOKEN_PATH HF_HUB_CACHE HUGGINGFACE_HUB_CACHE HF_HUB_OFFLINE \
  TRANSFORMERS_OFFLINE HF_ENDPOINT XDG_CACHE_HOME
export HF_HOME=$W/hf-home
head -n 8 examples/pairs.jsonl > "$W/pairs.jsonl"
train() { # train MODEL [ENV...]: a one-step training run into a new $OUT
  local model=$1; shift
  OUT=$(mktemp -u "$W/run-XXXXXX")
  env "$@" "$BIN" train --model "$model" --data "$W/pairs.jsonl" --out "$OUT" --max-steps 1 \
    --batch-size 2 --micro-batch 2 --max-length 64 --quiet
}

# ---- the repositories: ORG/NAME folders of the local hub -----------------------------------------
H=$W/hub/test-org
for r in tiny-llama gated-llama corrupt-llama; do mkdir -p "$H/$r" && cp "$MODEL"/* "$H/$r/"; done
echo hf_goodtoken > "$H/gated-llama/.gated"
touch "$H/corrupt-llama/.corrupt"
mkdir -p "$H/old-llama" && echo test-org/tiny-llama > "$H/old-llama/.renamed-to"
mkdir -p "$H/sharded-llama" && cp "$MODEL"/*.json "$H/sharded-llama/"
python3 - "$MODEL/model.safetensors" "$H/sharded-llama" <<'EOF'
# model.safetensors -> two shards + model.safetensors.index.json, as save_pretrained writes them
import json, struct, sys
blob = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", blob[:8])[0]
header = json.loads(blob[8:8 + n]); header.pop("__metadata__", None)
names = sorted(header, key=lambda k: header[k]["data_offsets"][0])
shards = [names[:len(names) // 2], names[len(names) // 2:]]
weight_map = {}
for i, part in enumerate(shards):
    fname = "model-%05d-of-00002.safetensors" % (i + 1)
    h, data = {}, b""
    for k in part:
        b, e = header[k]["data_offsets"]
        h[k] = dict(header[k], data_offsets=[len(data), len(data) + e - b])
        data += blob[8 + n + b:8 + n + e]
        weight_map[k] = fname
    hj = json.dumps(h).encode(); hj += b" " * (-len(hj) % 8)
    open(sys.argv[2] + "/" + fname, "wb").write(struct.pack("<Q", len(hj)) + hj + data)
json.dump({"metadata": {"total_size": len(blob) - 8 - n}, "weight_map": weight_map},
          open(sys.argv[2] + "/model.safetensors.index.json", "w"))
EOF
LFS_SHA=$(python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$MODEL/model.safetensors")

# check_layout CACHE REPO: the cache is laid out as huggingface_hub lays it out
check_layout() {
  python3 - "$1" "$2" "$MODEL" <<'EOF'
import hashlib, os, sys
cache, repo, model = sys.argv[1:4]
d = os.path.join(cache, "models--" + repo.replace("/", "--"))
commit = open(os.path.join(d, "refs", "main")).read()
assert len(commit) == 40 and all(c in "0123456789abcdef" for c in commit), "refs/main: %r" % commit
snap = os.path.join(d, "snapshots", commit)
for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
    p = os.path.join(snap, f)
    data = open(os.path.join(model, f), "rb").read()
    etag = (hashlib.sha256(data).hexdigest() if f.endswith(".safetensors")
            else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest())
    assert os.path.islink(p), p + " is not a symlink"
    assert os.readlink(p) == "../../blobs/" + etag, "%s -> %s" % (p, os.readlink(p))
    assert open(p, "rb").read() == data, p + ": wrong content"
assert os.path.exists(os.path.join(d, ".no_exist", commit, "chat_template.jinja")), "no .no_exist marker"
left = [f for f in os.listdir(os.path.join(d, "blobs")) if f.endswith(".incomplete")]
assert not left, "left over: %s" % left
print("  layout of %s: refs/main=%s, snapshot links to blobs by ETag, .no_exist markers" % (repo, commit[:12]))
EOF
}

# prefill CACHE_DIR REPO: the cache as the Python tools leave it after a download (made by hand)
prefill() {
  python3 - "$1" "$2" "$MODEL" <<'EOF'
import hashlib, os, sys
cache, repo, model = sys.argv[1:4]
d = os.path.join(cache, "models--" + repo.replace("/", "--"))
commit = "0123456789abcdef0123456789abcdef01234567"
os.makedirs(os.path.join(d, "blobs")); os.makedirs(os.path.join(d, "snapshots", commit)); os.makedirs(os.path.join(d, "refs"))
for f in os.listdir(model):
    data = open(os.path.join(model, f), "rb").read()
    etag = hashlib.sha256(data).hexdigest()
    open(os.path.join(d, "blobs", etag), "wb").write(data)
    os.symlink("../../blobs/" + etag, os.path.join(d, "snapshots", commit, f))
open(os.path.join(d, "refs", "main"), "w").write(commit)
EOF
}

# ---- without the network: a cache filled by the Python tools; the build without libcurl ---------
prefill "$W/home2/hub" test-org/tiny-llama
expect_ok "a pre-filled cache (HF_HOME/hub), offline: train" train test-org/tiny-llama HF_HOME="$W/home2" HF_HUB_OFFLINE=1
grep -q "snapshots/0123456789abcdef" "$W/last.log" && ok "it names the snapshot it uses" || fail "no snapshot line"
expect_ok "HF_HUB_CACHE takes priority over HF_HOME" \
  env HF_HUB_CACHE="$W/home2/hub" HF_HOME="$W/nowhere" HF_HUB_OFFLINE=1 "$TOOLS/hub_nocurl" test-org/tiny-llama
expect_ok "ORG/NAME@COMMIT from the cache" \
  env HF_HOME="$W/home2" HF_HUB_OFFLINE=1 "$TOOLS/hub_nocurl" test-org/tiny-llama@0123456789abcdef0123456789abcdef01234567
expect_fail "offline, empty cache" "HF_HUB_OFFLINE is set and test-org/tiny-llama@main is not in the cache" \
  train test-org/tiny-llama HF_HUB_OFFLINE=1
expect_fail "offline, a revision not cached" "HF_HUB_OFFLINE is set and test-org/tiny-llama@v2 is not in the cache" \
  train test-org/tiny-llama@v2 HF_HOME="$W/home2" HF_HUB_OFFLINE=1
rm "$W/home2/hub/models--test-org--tiny-llama/snapshots/0123456789abcdef0123456789abcdef01234567/model.safetensors"
expect_fail "offline, a snapshot without weights" "lacks model.safetensors" \
  train test-org/tiny-llama HF_HOME="$W/home2" HF_HUB_OFFLINE=1
expect_fail "a build without libcurl, nothing cached" "built without libcurl.*apt-get install libcurl4-openssl-dev" \
  env HF_ENDPOINT=http://127.0.0.1:9 "$TOOLS/hub_nocurl" test-org/tiny-llama
expect_fail "not a model id" "neither a local path nor a Hugging Face model id" "$TOOLS/hub_nocurl" "no--such/model"
mkdir -p "$W/cwd/local-org" && cp -r "$MODEL" "$W/cwd/local-org/model"
expect_ok "a directory that exists stays a path, even when it looks like an id" \
  sh -c "cd '$W/cwd' && HF_HUB_OFFLINE=1 '$BIN' eval --model local-org/model --data '$W/pairs.jsonl' --max-length 64"

if [ "$CURL" != 1 ]; then
  expect_fail "this build cannot download" "built without libcurl" train test-org/tiny-llama HF_ENDPOINT=http://127.0.0.1:9
  echo "note: the trainer was built without libcurl: the download tests did not run"
  [ $FAILS -eq 0 ] && { echo "all hub tests passed (cache only)"; exit 0; }
  echo "$FAILS hub checks failed"; exit 1
fi

# ---- the local hub -----------------------------------------------------------------------------
python3 tests/hub/server.py "$W/hub" "$W/port" "$W/requests.log" 2>"$W/server.err" &
SERVER_PID=$!
for _ in $(seq 100); do [ -s "$W/port" ] && break; sleep 0.1; done
[ -s "$W/port" ] || { echo "FAIL: the local hub did not start"; cat "$W/server.err"; exit 1; }
export HF_ENDPOINT=http://127.0.0.1:$(cat "$W/port")
export HF_HUB_CACHE=$W/cache
requests() { wc -l < "$W/requests.log"; }

expect_ok "download: train --model test-org/tiny-llama" train test-org/tiny-llama
[ -f "$OUT/model.safetensors" ] && ok "the run wrote its model" || fail "no trained model"
grep -q "^GET /lfs/test-org/tiny-llama/$LFS_SHA range=- " "$W/requests.log" &&
  grep -Eq "^GET /lfs/test-org/tiny-llama/$LFS_SHA range=bytes=[1-9][0-9]*- " "$W/requests.log" &&
  ok "the dropped connection was resumed with Range: $(grep -Eo "range=bytes=[0-9]+-" "$W/requests.log" | head -1)" ||
  fail "no resumed download after the dropped connection"
grep -q "resuming" "$W/last.log" && ok "the resume is reported" || fail "the resume is not reported"
check_layout "$W/cache" test-org/tiny-llama && ok "the cache has the Python tools' layout" || fail "cache layout"

n0=$(requests)
expect_ok "cached: train again" train test-org/tiny-llama
[ $(($(requests) - n0)) -eq 1 ] && ok "cached: one request (the revision), no file downloads" ||
  fail "cached: $(($(requests) - n0)) requests"
n0=$(requests)
expect_ok "cached, HF_HUB_OFFLINE=1: train" train test-org/tiny-llama HF_HUB_OFFLINE=1
[ "$(requests)" -eq "$n0" ] && ok "offline: no request at all" || fail "offline mode sent requests"
expect_ok "cached, the hub unreachable: train" train test-org/tiny-llama HF_ENDPOINT=http://127.0.0.1:9
grep -q "using the cached snapshot" "$W/last.log" && ok "it says it uses the cache" || fail "no note on the cache"
COMMIT=$(cat "$W/cache/models--test-org--tiny-llama/refs/main")
n0=$(requests)
expect_ok "ORG/NAME@COMMIT cached: no request" train "test-org/tiny-llama@$COMMIT"
[ "$(requests)" -eq "$n0" ] && ok "a cached commit needs no request" || fail "a cached commit sent requests"

expect_fail "no network, nothing cached" "cannot reach the Hugging Face hub at http://127.0.0.1:9" \
  train test-org/sharded-llama HF_ENDPOINT=http://127.0.0.1:9
expect_fail "wrong id" "there is no local directory test-org/no-such-model and no model of that name at .*check the path, or the id" train test-org/no-such-model
expect_fail "wrong revision" "test-org/tiny-llama has no revision 'v9'" train test-org/tiny-llama@v9
expect_fail "gated, no token" "test-org/gated-llama is a gated model \(HTTP 401\).*set HF_TOKEN" train test-org/gated-llama
expect_fail "gated, a token without access" "gated model and the token in HF_TOKEN has not been granted access \(HTTP 403\)" \
  train test-org/gated-llama HF_TOKEN=hf_othertoken
mkdir -p "$HF_HOME" && echo hf_goodtoken > "$HF_HOME/token"
expect_ok "gated, the token of \`hf auth login\` (HF_HOME/token)" train test-org/gated-llama
rm "$HF_HOME/token"
grep -q "auth=hf_goodtoken" "$W/requests.log" && ! grep -q "^GET /lfs/.* auth=hf_" "$W/requests.log" &&
  ok "the token went to the hub, not to the LFS storage" || fail "token handling"

expect_fail "a corrupted download" "model.safetensors failed its checksum" train test-org/corrupt-llama
ls "$W/cache/models--test-org--corrupt-llama/blobs/" | grep -q "$LFS_SHA" &&
  fail "a corrupted blob was kept" || ok "nothing of the corrupted download is kept"

expect_ok "sharded: eval --model test-org/sharded-llama" \
  "$BIN" eval --model test-org/sharded-llama --data "$W/pairs.jsonl" --max-length 64
ls "$W"/cache/models--test-org--sharded-llama/snapshots/*/model-0000[12]-of-00002.safetensors >/dev/null 2>&1 &&
  ok "both shards are in the snapshot" || fail "shards missing"
expect_ok "renamed repository (relative redirect): eval --model=test-org/old-llama" \
  "$BIN" eval --model=test-org/old-llama --ref test-org/tiny-llama --data "$W/pairs.jsonl" --max-length 64

# A download cut off in an earlier run resumes from the .incomplete file it left.
export HF_HUB_CACHE=$W/cache2
mkdir -p "$W/cache2/models--test-org--tiny-llama/blobs"
head -c 1000 "$MODEL/model.safetensors" > "$W/cache2/models--test-org--tiny-llama/blobs/$LFS_SHA.incomplete"
expect_ok "a download left by an earlier run" train test-org/tiny-llama
grep -q "^GET /lfs/test-org/tiny-llama/$LFS_SHA range=bytes=1000- " "$W/requests.log" && ok "it resumed at byte 1000" || fail "not resumed"
check_layout "$W/cache2" test-org/tiny-llama >/dev/null && ok "and the blob is whole" || fail "resumed blob"

# init --tokenizer fetches the tokenizer only
export HF_HUB_CACHE=$W/cache3
expect_ok "init --tokenizer test-org/sharded-llama" \
  "$BIN" init --config "$MODEL/config.json" --out "$W/init" --tokenizer test-org/sharded-llama
[ -f "$W/init/tokenizer.json" ] && ! ls "$W"/cache3/models--*/snapshots/*/*.safetensors >/dev/null 2>&1 &&
  ok "the tokenizer was copied, no weights were downloaded" || fail "init --tokenizer"

# One cache for both (when huggingface_hub is installed): Python reads what the trainer wrote, and
# the trainer, offline, what Python downloaded from the local hub.
if python3 -c "import huggingface_hub" 2>/dev/null; then
  HF_HUB_OFFLINE=1 python3 -c '
import sys, huggingface_hub as h
p = h.hf_hub_download("test-org/tiny-llama", "model.safetensors", cache_dir=sys.argv[1])
d = h.snapshot_download("test-org/tiny-llama", cache_dir=sys.argv[1])
print("  huggingface_hub found", p)' "$W/cache" && ok "huggingface_hub reads the trainer's cache offline" ||
    fail "huggingface_hub cannot read the trainer's cache"
  python3 -c '
import sys, huggingface_hub as h
for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
    h.hf_hub_download("test-org/tiny-llama", f, cache_dir=sys.argv[1])' "$W/cache-py" 2>/dev/null &&
    expect_ok "the trainer reads huggingface_hub's downloads offline" train test-org/tiny-llama \
      HF_HUB_CACHE="$W/cache-py" HF_HUB_OFFLINE=1 || fail "huggingface_hub could not download from the local hub"
else
  echo "note: huggingface_hub is not installed: the checks that it shares the cache with the trainer did not run"
fi

[ $FAILS -eq 0 ] && { echo "all hub tests passed"; exit 0; }
echo "$FAILS hub checks failed"
exit 1
