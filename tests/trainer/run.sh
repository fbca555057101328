#!/usr/bin/env bash
# tests/trainer/run.sh - end-to-end tests of ./trainer on the tiny example model (examples/).
#
#   tests/trainer/run.sh TEST TRAINER_BIN TOOLS_DIR
#
# TRAINER_BIN is the test build of the trainer (tests/trainer/test_backend.c: fault injection).
#
# TEST: basic | train_directions | resume | accumulation | bad_inputs | generate | interrupt | sft | tokenize
# TOOLS_DIR holds ckpt_diff (tests/trainer/ckpt_diff.c). JSON checks use python3's standard
# library only. Exit 0 pass, 1 fail, 77 skip. The model is tiny (140k parameters), so the tests
# run with one OpenMP thread unless OMP_NUM_THREADS says otherwise: threads only add overhead at
# this size (and the resume test then also checks determinism with the thread count it is given).
set -u
TEST=${1:?test name}
BIN=$(cd "$(dirname "${2:?trainer binary}")" && pwd)/$(basename "$2")
TOOLS=$(cd "${3:?tools dir}" && pwd)
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
MODEL=$ROOT/examples/tiny-llama
export OMP_NUM_THREADS=${TRAINER_TEST_THREADS:-1}
command -v python3 >/dev/null || { echo "SKIP: python3 (standard library) is needed for the JSON checks"; exit 77; }
[ -f "$MODEL/model.safetensors" ] || { echo "SKIP: $MODEL missing (run tools/make_example.py)"; exit 77; }

W=$(mktemp -d "${TMPDIR:-/tmp}/trainer-test-$TEST-XXXXXX")
trap 'rm -rf "$W"' EXIT
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
# json_check FILE PYTHON_EXPR: evaluates EXPR with `recs` = the JSON lines of FILE; exit 1 if falsy
json_check() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
train = [r for r in recs if "loss" in r]
evals = [r for r in recs if "eval_loss" in r]
v = eval(sys.argv[2])
print("  check:", sys.argv[2], "->", v)
sys.exit(0 if v else 1)
EOF
}

head -n 32 examples/pairs.jsonl > "$W/train32.jsonl"
head -n 16 examples/pairs.jsonl > "$W/train16.jsonl"

case "$TEST" in
basic)
  "$BIN" --help | grep -q "generate" || fail "trainer --help"
  for c in train generate eval init; do
    "$BIN" $c --help | grep -q -- "--" || fail "trainer $c --help"
  done
  ok "help texts"
  # init: any Llama shape (GQA, untied), reloadable, deterministic for a seed
  cat > "$W/cfg.json" <<'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 640, "hidden_size": 48,
 "intermediate_size": 80, "num_hidden_layers": 3, "num_attention_heads": 6, "num_key_value_heads": 2,
 "hidden_act": "silu", "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 500000.0,
 "tie_word_embeddings": false, "initializer_range": 0.02, "eos_token_id": 2}
EOF
  "$BIN" init --config "$W/cfg.json" --out "$W/init1" --seed 7 --tokenizer "$MODEL" || fail "init"
  "$BIN" init --config "$W/cfg.json" --out "$W/init2" --seed 7 || fail "init (2)"
  "$TOOLS/ckpt_diff" "$W/init1" "$W/init2" 0 && ok "init is deterministic for a seed" || fail "init not deterministic"
  [ -f "$W/init1/tokenizer.json" ] && ok "init copied the tokenizer" || fail "init --tokenizer"
  # a short training run: metrics with TRL's names, an HF checkpoint, a falling loss
  "$BIN" train --model "$MODEL" --data "$W/train32.jsonl" --eval-data "$W/train16.jsonl" --out "$W/run" \
    --lr 3e-3 --batch-size 8 --micro-batch 4 --epochs 2 --max-length 128 --warmup-ratio 0 --schedule constant \
    --log-every 4 > "$W/train.log" 2>&1 || { fail "train"; tail -20 "$W/train.log"; }
  grep -E "^step 8/8 \| loss [0-9.]+ .*tok/s .*ETA" "$W/train.log" >/dev/null && ok "progress line" || fail "progress line"
  for f in config.json model.safetensors tokenizer.json tokenizer_config.json metrics.jsonl; do
    [ -f "$W/run/$f" ] || fail "output lacks $f"
  done
  json_check "$W/run/metrics.jsonl" 'len(train) == 8 and all(all(k in r for k in ("loss","rewards/chosen","rewards/rejected","rewards/accuracies","rewards/margins","logps/chosen","logps/rejected","grad_norm","learning_rate")) for r in train)' \
    && ok "metrics.jsonl: 8 steps with TRL's names" || fail "metrics.jsonl names"
  json_check "$W/run/metrics.jsonl" 'len(evals) == 2 and evals[0]["step"] == 0 and abs(evals[0]["eval_loss"] - 1.0) < 1e-12' \
    && ok "eval before training: APO-zero loss is 1 at the reference" || fail "eval records"
  json_check "$W/run/metrics.jsonl" 'sum(r["loss"] for r in train[-2:]) < sum(r["loss"] for r in train[:2]) and evals[1]["eval_loss"] < evals[0]["eval_loss"] - 0.01' \
    && ok "loss falls (train and eval)" || fail "loss did not fall"
  # the saved model reloads and reproduces the trained model's log-probs (final eval record)
  "$BIN" eval --model "$W/run" --ref "$MODEL" --data "$W/train16.jsonl" --max-length 128 > "$W/eval.json" 2>"$W/eval.log" \
    || { fail "eval of the output"; cat "$W/eval.log"; }
  python3 - "$W/eval.json" "$W/run/metrics.jsonl" <<'EOF' && ok "reloaded checkpoint reproduces the log-probs and rewards" || fail "reloaded log-probs differ"
import json, sys
e = json.loads(open(sys.argv[1]).read())
last = [json.loads(l) for l in open(sys.argv[2]) if "eval_loss" in l][-1]
bad = [k for k in ("eval_logps/chosen", "eval_logps/rejected", "eval_rewards/chosen", "eval_rewards/rejected", "eval_loss")
       if abs(e[k] - last[k]) > 1e-9 * max(1.0, abs(last[k]))]
print("  eval:", {k: e[k] for k in ("eval_logps/chosen", "eval_logps/rejected", "eval_loss")})
print("  run :", {k: last[k] for k in ("eval_logps/chosen", "eval_logps/rejected", "eval_loss")})
sys.exit(1 if bad else 0)
EOF
  "$TOOLS/ckpt_diff" --moved "$MODEL" "$W/run" 1e-4 >/dev/null && ok "training changed the weights" || fail "weights did not move"
  # a seeded eval split and a BF16 final model
  "$BIN" train --model "$MODEL" --data "$W/train16.jsonl" --out "$W/split" --eval-split 0.25 --batch-size 4 \
    --lr 1e-3 --save-dtype bf16 --max-length 128 --quiet > "$W/split.log" 2>&1 || { fail "eval split run"; tail -5 "$W/split.log"; }
  grep -q "eval split: 4 pairs held out, 12 for training" "$W/split.log" && json_check "$W/split/metrics.jsonl" 'len(train) == 3 and len(evals) == 2' \
    && ok "--eval-split holds out 4 of 16 pairs" || fail "--eval-split"
  python3 - "$W/split/model.safetensors" <<'EOF' && ok "--save-dtype bf16 writes BF16 tensors" || fail "--save-dtype bf16"
import json, struct, sys
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n))
sys.exit(0 if {v["dtype"] for k, v in h.items() if k != "__metadata__"} == {"BF16"} else 1)
EOF
  # the same pair in the four layouts TRL reads gives the same tokens, hence the same log-probs
  cat > "$W/formats.jsonl" <<'EOF'
{"prompt": "What is 12 + 30?", "chosen": "12 + 30 = 42.", "rejected": "12 + 30 = 52."}
{"prompt": [{"role": "user", "content": "What is 12 + 30?"}], "chosen": [{"role": "assistant", "content": "12 + 30 = 42."}], "rejected": [{"role": "assistant", "content": "12 + 30 = 52."}]}
{"prompt": "What is 12 + 30?", "chosen": [{"role": "user", "content": "What is 12 + 30?"}, {"role": "assistant", "content": "12 + 30 = 42."}], "rejected": [{"role": "user", "content": "What is 12 + 30?"}, {"role": "assistant", "content": "12 + 30 = 52."}], "rational": "ignored"}
{"chosen": [{"role": "user", "content": "What is 12 + 30?"}, {"role": "assistant", "content": "12 + 30 = 42."}], "rejected": [{"role": "user", "content": "What is 12 + 30?"}, {"role": "assistant", "content": "12 + 30 = 52."}]}
EOF
  "$BIN" eval --model "$MODEL" --data "$W/formats.jsonl" --pairs-out "$W/formats.out" > /dev/null 2>&1 || fail "eval of the format file"
  python3 - "$W/formats.out" <<'EOF' && ok "string, conversation, CLAIR-release and implicit-prompt layouts agree" || fail "layouts differ"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
print("  ", [(x["logps/chosen"], x["logps/rejected"]) for x in r])
sys.exit(0 if len(r) == 4 and all(x["logps/chosen"] == r[0]["logps/chosen"] and x["logps/rejected"] == r[0]["logps/rejected"] for x in r) else 1)
EOF
  ;;

train_directions)
  # APO-zero raises chosen and lowers rejected; APO-down lowers both (measured on the training pairs)
  for loss in apo_zero apo_down; do
    "$BIN" train --model "$MODEL" --data "$W/train16.jsonl" --eval-data "$W/train16.jsonl" --out "$W/$loss" --loss $loss \
      --lr 2e-3 --batch-size 8 --micro-batch 8 --epochs 3 --max-length 128 --warmup-ratio 0 --schedule constant \
      --quiet > "$W/$loss.log" 2>&1 || { fail "train $loss"; tail -20 "$W/$loss.log"; }
  done
  json_check "$W/apo_zero/metrics.jsonl" 'evals[-1]["eval_logps/chosen"] > evals[0]["eval_logps/chosen"] + 0.1 and evals[-1]["eval_logps/rejected"] < evals[0]["eval_logps/rejected"] - 0.1' \
    && ok "apo_zero: chosen up, rejected down" || fail "apo_zero directions"
  json_check "$W/apo_down/metrics.jsonl" 'evals[-1]["eval_logps/chosen"] < evals[0]["eval_logps/chosen"] - 0.01 and evals[-1]["eval_logps/rejected"] < evals[0]["eval_logps/rejected"] - 0.1 and evals[-1]["eval_rewards/margins"] > 0' \
    && ok "apo_down: both down, rejected more" || fail "apo_down directions"
  json_check "$W/apo_zero/metrics.jsonl" 'train[-1]["loss"] < train[0]["loss"]' && ok "apo_zero loss falls" || fail "apo_zero loss"
  ;;

resume)
  # An uninterrupted run vs one killed after step 3 (checkpoint at 2) and resumed: the same bits.
  args=(--model "$MODEL" --data "$W/train32.jsonl" --eval-data "$W/train16.jsonl" --lr 2e-3 --batch-size 8
        --micro-batch 4 --epochs 2 --max-length 128 --save-every 2 --quiet --weight-decay 0.01)
  "$BIN" train "${args[@]}" --out "$W/a" > "$W/a.log" 2>&1 || { fail "uninterrupted run"; tail -20 "$W/a.log"; }
  rc=0; TRAINER_TEST_DIE_AFTER_STEP=3 "$BIN" train "${args[@]}" --out "$W/b" > "$W/b1.log" 2>&1 || rc=$?
  [ $rc -eq 137 ] && [ -d "$W/b/checkpoint-2" ] && [ ! -f "$W/b/model.safetensors" ] && ok "killed after step 3, checkpoint-2 on disk" \
    || { fail "simulated kill (rc $rc)"; tail -5 "$W/b1.log"; ls "$W/b"; }
  expect_fail "rerun without --resume is refused" "already holds a training run" "$BIN" train "${args[@]}" --out "$W/b"
  expect_fail "resume with other data is refused" "other data" "$BIN" train "${args[@]/train32/train16}" --out "$W/b" --resume
  "$BIN" train "${args[@]}" --out "$W/b" --resume > "$W/b2.log" 2>&1 || { fail "resume"; tail -20 "$W/b2.log"; }
  grep -q "resumed from .*checkpoint-2" "$W/b2.log" && ok "resumed from checkpoint-2" || fail "did not resume"
  grep -q "reference log-probs (train): reused" "$W/b2.log" && ok "reference log-probs reused from the cache" || fail "reference cache not reused"
  "$TOOLS/ckpt_diff" "$W/a" "$W/b" 0 && ok "resumed run ends bit-identical to the uninterrupted one" || fail "resumed weights differ"
  cmp -s "$W/a/metrics.jsonl" "$W/b/metrics.jsonl" && ok "metrics.jsonl identical" || { fail "metrics.jsonl differ"; diff "$W/a/metrics.jsonl" "$W/b/metrics.jsonl" | head -5; }
  # a real SIGKILL at whatever point the run has reached (perhaps mid-save) once checkpoint-3
  # exists; the resumed run must still end with the uninterrupted run's weights
  args_k=(--model "$MODEL" --data "$W/train32.jsonl" --lr 2e-3 --batch-size 4 --micro-batch 2 --epochs 3
          --max-length 128 --save-every 1 --quiet)
  "$BIN" train "${args_k[@]}" --out "$W/c" > "$W/c.log" 2>&1 || { fail "uninterrupted run (kill test)"; tail -5 "$W/c.log"; }
  "$BIN" train "${args_k[@]}" --out "$W/d" > "$W/d1.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 3000); do [ -d "$W/d/checkpoint-3" ] && break; kill -0 $pid 2>/dev/null || break; sleep 0.01; done
  kill -9 $pid 2>/dev/null && killed=1 || killed=0
  wait $pid 2>/dev/null
  "$BIN" train "${args_k[@]}" --out "$W/d" --resume > "$W/d2.log" 2>&1 || { fail "resume after SIGKILL"; tail -5 "$W/d2.log"; }
  "$TOOLS/ckpt_diff" "$W/c" "$W/d" 0 && ok "SIGKILL (killed: $killed, $(grep -o 'resumed from [^:]*' "$W/d2.log" | sed 's|.*/||')) then --resume: bit-identical" \
    || fail "weights after SIGKILL + resume differ"
  ls -d "$W/b"/checkpoint-* | grep -q "checkpoint-8$" && [ "$(ls -d "$W/b"/checkpoint-* | wc -l)" -eq 1 ] && ok "one checkpoint kept (checkpoint-8)" || fail "checkpoint pruning: $(ls "$W/b")"
  ;;

accumulation)
  # One micro-batch of 8 pairs vs 4 micro-batches of 2: the same gradient up to fp32 rounding,
  # also with a weighted loss list whose sft term is a token mean over the whole batch.
  for loss in apo_zero apo_zero:1,sft:0.5; do
    for mb in 8 2; do
      TRAINER_TEST_DUMP_GRAD="$W/grad$mb.safetensors" "$BIN" train --model "$MODEL" --data "$W/train16.jsonl" \
        --out "$W/mb$mb" --loss "$loss" --lr 1e-3 --batch-size 8 --micro-batch $mb --max-steps 1 --max-length 128 \
        --warmup-ratio 0 --adam-eps 1e-3 --quiet --overwrite > "$W/mb$mb.log" 2>&1 || { fail "train micro-batch $mb"; tail -20 "$W/mb$mb.log"; }
    done
    "$TOOLS/ckpt_diff" --tensor "$W/grad8.safetensors" "$W/grad2.safetensors" grad 1e-5 && ok "$loss: gradients agree" || fail "$loss: gradients differ"
    python3 - "$W/mb8/metrics.jsonl" "$W/mb2/metrics.jsonl" <<'EOF' && ok "$loss: loss and grad_norm agree" || fail "$loss: loss/grad_norm differ"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l][0]
b = [json.loads(l) for l in open(sys.argv[2]) if '"loss"' in l][0]
print("  8x1:", a["loss"], a["grad_norm"], " 2x4:", b["loss"], b["grad_norm"])
sys.exit(0 if abs(a["loss"] - b["loss"]) < 1e-6 * abs(a["loss"]) and abs(a["grad_norm"] - b["grad_norm"]) < 1e-5 * a["grad_norm"] else 1)
EOF
    # Adam's first update is lr * g / (|g| + eps): with the usual eps 1e-8 it turns the fp32
    # rounding differences of near-zero gradient entries (~1e-7 absolute, above) into weight
    # differences of up to lr. With eps 1e-3 (set above) the update's sensitivity to g is at most
    # lr / eps = 1, so weights must agree to the gradients' own rounding (2e-7).
    "$TOOLS/ckpt_diff" "$W/mb8" "$W/mb2" 2e-7 && ok "$loss: weights after the step agree" || fail "$loss: weights differ"
  done
  ;;

bad_inputs)
  base=(--lr 1e-3 --batch-size 4 --micro-batch 4 --max-length 128 --quiet)
  expect_fail "missing model" "nope.*(no such directory|config.json|cannot)" "$BIN" train --model "$W/nope" --data "$W/train16.jsonl" --out "$W/o1" "${base[@]}"
  [ -e "$W/o1/model.safetensors" ] && fail "missing model: output written"
  expect_fail "missing data" "missing.jsonl.*(no such file|cannot open)" "$BIN" train --model "$MODEL" --data "$W/missing.jsonl" --out "$W/o2" "${base[@]}"
  mkdir -p "$W/badmodel" && cp "$MODEL"/* "$W/badmodel/"
  sed -i 's/"intermediate_size": 192/"intermediate_size": 200/' "$W/badmodel/config.json"
  expect_fail "checkpoint not matching its config" "mlp|shape|192|200" "$BIN" train --model "$W/badmodel" --data "$W/train16.jsonl" --out "$W/o3" "${base[@]}"
  [ -e "$W/o3/model.safetensors" ] && fail "bad checkpoint: output written"
  expect_fail "unknown loss" "unknown loss 'apo_sideways'" "$BIN" train --model "$MODEL" --data "$W/train16.jsonl" --out "$W/o4" --loss apo_sideways
  expect_fail "unknown flag" "unknown flag '--betta'" "$BIN" train --model "$MODEL" --data "$W/train16.jsonl" --out "$W/o4" --betta 1
  # numbers out of range are refused by name before any arithmetic could overflow
  expect_fail "a huge micro-batch" "--micro-batch must be between 1 and 1024, got 2000000000" \
    "$BIN" train --model "$MODEL" --data "$W/train16.jsonl" --out "$W/o4" --batch-size 1000000 --micro-batch 2000000000
  expect_fail "an absurd learning rate" "--lr must be between 0 and 10, got 1e\+300" \
    "$BIN" train --model "$MODEL" --data "$W/train16.jsonl" --out "$W/o4" --lr 1e300
  # a file with bad lines among good ones: each reported by number, skipped, counted; training runs
  {
    head -n 4 "$W/train16.jsonl"
    echo '{"prompt": "What is 2 + 2?", "chosen": "2 + 2 = 4.", "rejected": '           # line 5: bad JSON
    echo '{"prompt": "What is 3 + 3?", "chosen": "3 + 3 = 6."}'                          # line 6: no rejected
    echo '{"prompt": "What is 4 + 4?", "chosen": "", "rejected": "4 + 4 = 9."}'          # line 7: empty chosen
    echo '{"prompt": "x", "chosen": [{"role": "user", "content": "x"}], "rejected": "y"}' # line 8: no assistant turn
    echo '[1, 2, 3]'                                                                     # line 9: not an object
    echo "{\"prompt\": \"$(printf 'long %.0s' $(seq 1 100))\", \"chosen\": \"a\", \"rejected\": \"b\"}"  # line 10: prompt too long
    sed -n 5,8p "$W/train16.jsonl"
  } > "$W/mixed.jsonl"
  "$BIN" train --model "$MODEL" --data "$W/mixed.jsonl" --out "$W/o5" "${base[@]}" --max-length 64 > "$W/o5.log" 2>&1 \
    || { fail "training on a file with bad lines"; tail -20 "$W/o5.log"; }
  for l in 5 6 7 8 9 10; do grep -q "mixed.jsonl:$l:" "$W/o5.log" || fail "line $l not reported"; done
  grep -q "mixed.jsonl:7: the chosen response is empty" "$W/o5.log" || fail "empty response message"
  grep -q "mixed.jsonl:10: the prompt is [0-9]* tokens, not shorter than --max-length 64" "$W/o5.log" || fail "long prompt message"
  grep -q "mixed.jsonl:6: missing field \"rejected\"" "$W/o5.log" || fail "missing field message"
  grep -q "14 lines: 8 pairs, 4 malformed (skipped), 1 with an empty response (skipped), 1 with a prompt not shorter than max-length (skipped)" "$W/o5.log" \
    && ok "bad lines reported by number and counted: $(grep -m1 '14 lines' "$W/o5.log")" || { fail "summary counts"; grep "lines:" "$W/o5.log"; }
  [ -f "$W/o5/model.safetensors" ] && ok "trained on the 8 good pairs" || fail "no output after skipping bad lines"
  # truncation keeps the start and is counted: a long response under --max-length 40
  long=$(printf 'word %.0s' $(seq 1 60))
  echo "{\"prompt\": \"Say many words.\", \"chosen\": \"$long\", \"rejected\": \"few words\"}" > "$W/long.jsonl"
  "$BIN" eval --model "$MODEL" --data "$W/long.jsonl" --max-length 40 > /dev/null 2> "$W/long.log" || fail "eval with truncation"
  grep -q "1 lines: 1 pairs, 1 truncated to max-length" "$W/long.log" && ok "truncation counted" || { fail "truncation not counted"; cat "$W/long.log"; }
  # nothing usable: a clear error, no model written
  printf '{"prompt": 1}\nnot json\n' > "$W/allbad.jsonl"
  expect_fail "no usable pair" "no usable pair" "$BIN" train --model "$MODEL" --data "$W/allbad.jsonl" --out "$W/o6" "${base[@]}"
  [ -e "$W/o6/model.safetensors" ] && fail "no usable pair: output written"
  # non-finite losses: the update is skipped and reported; 3 in a row stop the run, the last good
  # checkpoint stays intact and loadable
  rc=0; TRAINER_TEST_NAN_FROM_STEP=3 "$BIN" train --model "$MODEL" --data "$W/train32.jsonl" --out "$W/o7" "${base[@]}" \
    --save-every 1 > "$W/o7.log" 2>&1 || rc=$?
  [ $rc -ne 0 ] && grep -q "step 3: .*non-finite.*update skipped" "$W/o7.log" && grep -q "3 steps in a row.*last good checkpoint is .*checkpoint-2" "$W/o7.log" \
    && ok "non-finite steps skipped, run stopped: $(grep -m1 'in a row had' "$W/o7.log" | cut -c1-100)..." || { fail "non-finite handling (rc $rc)"; tail -5 "$W/o7.log"; }
  "$TOOLS/ckpt_diff" "$W/o7/checkpoint-2" "$W/o7/checkpoint-2" 0 >/dev/null && [ ! -e "$W/o7/model.safetensors" ] \
    && ok "last good checkpoint intact, no final model written" || fail "checkpoint after non-finite stop"
  ;;

generate)
  g=(--model "$MODEL" --prompts examples/prompts.jsonl --max-new-tokens 24 --temperature 0.8 --top-p 0.95 --seed 3)
  "$BIN" generate "${g[@]}" --out "$W/a.jsonl" > "$W/a.log" 2>&1 || { fail "generate"; tail -10 "$W/a.log"; }
  python3 - "$W/a.jsonl" <<'EOF' && ok "8 lines with prompt and response" || fail "generate output"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
print("  first:", recs[0])
sys.exit(0 if len(recs) == 8 and all(isinstance(r["prompt"], str) and isinstance(r["response"], str) and r["finish_reason"] in ("stop", "length") for r in recs) and any(r["response"] for r in recs) else 1)
EOF
  "$BIN" generate "${g[@]}" --out "$W/b.jsonl" > /dev/null 2>&1 && cmp -s "$W/a.jsonl" "$W/b.jsonl" && ok "same seed, same output" || fail "not reproducible"
  # an interrupted run (3 complete lines and half a line) continues where it stopped
  { head -n 3 "$W/a.jsonl"; sed -n 4p "$W/a.jsonl" | cut -c1-20 | tr -d '\n'; } > "$W/c.jsonl.partial"
  "$BIN" generate "${g[@]}" --out "$W/c.jsonl" > "$W/c.log" 2>&1 || { fail "resumed generate"; tail -5 "$W/c.log"; }
  grep -q "3 of 8 prompts already answered" "$W/c.log" && cmp -s "$W/a.jsonl" "$W/c.jsonl" && [ ! -e "$W/c.jsonl.partial" ] \
    && ok "interrupted generation resumed, identical output" || fail "generation resume"
  expect_fail "existing output is not clobbered" "exists; pass --overwrite" "$BIN" generate "${g[@]}" --out "$W/a.jsonl"
  "$BIN" generate "${g[@]}" --temperature 0 --out "$W/greedy.jsonl" > /dev/null 2>&1 || fail "greedy generate"
  grep -q "generate: 8/8 prompts | [0-9.]* tok/s | ETA" "$W/a.log" && ok "progress: $(grep -m1 'prompts |' "$W/a.log")" \
    || { fail "progress line"; tail -3 "$W/a.log"; }
  # prompts decoded together get the answers they get alone (each is sampled from its own stream):
  # --batch 1 and 8, and 3 (slots refilled as answers finish), sampled and greedy
  for t in 0.8 0; do
    for b in 1 3 8; do
      "$BIN" generate "${g[@]}" --temperature $t --batch $b --out "$W/t$t-b$b.jsonl" > "$W/t$t-b$b.log" 2>&1 \
        || { fail "generate --batch $b"; tail -3 "$W/t$t-b$b.log"; }
    done
    cmp -s "$W/t$t-b1.jsonl" "$W/t$t-b8.jsonl" && cmp -s "$W/t$t-b1.jsonl" "$W/t$t-b3.jsonl" \
      && ok "temperature $t: --batch 1, 3 and 8 give identical files" || fail "temperature $t: output depends on --batch"
  done
  cmp -s "$W/a.jsonl" "$W/t0.8-b8.jsonl" || fail "the default batch differs from --batch 8"
  # resumed with another batch size: still the same file
  head -n 5 "$W/t0.8-b1.jsonl" > "$W/d.jsonl.partial"
  "$BIN" generate "${g[@]}" --batch 2 --out "$W/d.jsonl" > "$W/d.log" 2>&1 || { fail "resumed generate --batch 2"; tail -5 "$W/d.log"; }
  cmp -s "$W/t0.8-b1.jsonl" "$W/d.jsonl" && ok "resumed with --batch 2 after 5 answers: identical output" \
    || fail "resume with another batch size"
  ;;

interrupt)
  # Runs that are never lost: SIGINT saves and says how to continue; the resumed run ends with the
  # uninterrupted run's bits; one trainer per --out (a dead one's lock is taken over); a run
  # resumed from its final checkpoint writes no record twice; weights-only checkpoints refuse to
  # resume; binary datasets get a conversion hint.
  args=(--model "$MODEL" --data "$W/train32.jsonl" --eval-data "$W/train16.jsonl" --lr 2e-3 --batch-size 4
        --micro-batch 2 --epochs 40 --max-length 128 --quiet)
  "$BIN" train "${args[@]}" --out "$W/a" > "$W/a.log" 2>&1 || { fail "uninterrupted run"; tail -5 "$W/a.log"; }
  grep -q "checkpoints: every 32 steps" "$W/a.log" && ok "default cadence: a checkpoint about every tenth of the run" \
    || { fail "default checkpoint cadence"; grep checkpoints "$W/a.log"; }
  "$BIN" train "${args[@]}" --out "$W/b" > "$W/b1.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 3000); do [ -d "$W/b/checkpoint-64" ] && break; kill -0 $pid 2>/dev/null || break; sleep 0.01; done
  expect_fail "a second trainer on the same --out is refused" "in use by another trainer \(PID $pid\)" \
    "$BIN" train "${args[@]}" --out "$W/b" --resume
  kill -INT $pid 2>/dev/null; rc=0; wait $pid || rc=$?
  if [ $rc -eq 130 ] && grep -q "interrupted after step [0-9]*/320; .*checkpoint-[0-9]* is on disk. Continue with:" "$W/b1.log" \
     && grep -q -- "--out $W/b --resume" "$W/b1.log"; then ok "SIGINT: saved, exit 130, $(grep -o 'interrupted after step [0-9]*' "$W/b1.log")"
  elif [ $rc -eq 0 ]; then ok "(the run ended before SIGINT arrived; nothing to check)"
  else fail "SIGINT handling (rc $rc)"; tail -4 "$W/b1.log"; fi
  "$BIN" train "${args[@]}" --out "$W/b" --resume > "$W/b2.log" 2>&1 || { fail "resume after SIGINT"; tail -5 "$W/b2.log"; }
  "$TOOLS/ckpt_diff" "$W/a" "$W/b" 0 && ok "interrupted + resumed: bit-identical weights" || fail "weights differ after SIGINT + resume"
  cmp -s "$W/a/metrics.jsonl" "$W/b/metrics.jsonl" && ok "metrics.jsonl identical" || { fail "metrics differ"; diff "$W/a/metrics.jsonl" "$W/b/metrics.jsonl" | head -4; }
  # a kill -9 leaves its lock behind: the next trainer takes it over
  "$BIN" train "${args[@]}" --out "$W/c" > "$W/c1.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 3000); do [ -d "$W/c/checkpoint-64" ] && break; kill -0 $pid 2>/dev/null || break; sleep 0.01; done
  kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
  "$BIN" train "${args[@]}" --out "$W/c" --resume > "$W/c2.log" 2>&1 && ok "the lock of a killed trainer is taken over" \
    || { fail "stale lock"; tail -3 "$W/c2.log"; }
  # the final checkpoint is on disk but the model is not (a kill during the final save): the
  # resumed run writes the final eval record once
  rm -f "$W/a/model.safetensors"
  "$BIN" train "${args[@]}" --out "$W/a" --resume > "$W/a2.log" 2>&1 || { fail "resume from the final checkpoint"; tail -5 "$W/a2.log"; }
  json_check "$W/a/metrics.jsonl" 'len([r for r in evals if r["step"] == 320]) == 1 and len(train) == 320' \
    && ok "resumed at the final checkpoint: one final eval record" || fail "final eval record written twice"
  # weights-only checkpoints are small and cannot be resumed
  rc=0; TRAINER_TEST_DIE_AFTER_STEP=40 "$BIN" train "${args[@]}" --out "$W/w" --checkpoint-state weights > "$W/w1.log" 2>&1 || rc=$?
  [ $rc -eq 137 ] && [ ! -e "$W/w/checkpoint-32/optimizer_m.safetensors" ] && grep -q "checkpoints: every 32 steps, .* (fp32 weights only)" "$W/w1.log" \
    && ok "--checkpoint-state weights: no optimizer state" || { fail "weights-only checkpoint"; ls "$W/w"; }
  expect_fail "a weights-only checkpoint is not resumed" "holds weights only" "$BIN" train "${args[@]}" --out "$W/w" --resume
  # leftovers of a kill during pruning are removed, never taken for a checkpoint
  mkdir -p "$W/d/checkpoint-99.deleting" && touch "$W/d/checkpoint-99.deleting/config.json"
  "$BIN" train "${args[@]}" --max-steps 2 --out "$W/d" --overwrite > "$W/d.log" 2>&1 && [ ! -e "$W/d/checkpoint-99.deleting" ] \
    && ok "a half-deleted checkpoint is cleaned up" || { fail "pruning leftovers"; ls "$W/d"; }
  printf 'PAR1\001\002\003' > "$W/data.parquet"
  expect_fail "a Parquet file gets a conversion hint" "is a Parquet file, not JSONL.*to_json" \
    "$BIN" train --model "$MODEL" --data "$W/data.parquet" --out "$W/p"
  ;;

cuda_emu)
  # The trainer's --device cuda path, run on the CUDA part's CPU emulator (kernels.cu compiled as
  # host code; slow, so 2 steps of 4 pairs): fp32 must follow the CPU path, bf16 must train.
  head -n 8 "$W/train16.jsonl" > "$W/train8.jsonl"
  e=(--model "$MODEL" --data "$W/train8.jsonl" --lr 1e-3 --batch-size 4 --micro-batch 4 --max-length 96 --warmup-ratio 0 --quiet)
  # --adam-eps 1e-3 as in the accumulation test: with eps 1e-8 Adam's first steps amplify the
  # rounding differences of near-zero gradient entries up to lr; here the weights must follow
  # the gradients' own agreement
  "$BIN" train "${e[@]}" --adam-eps 1e-3 --device cpu --out "$W/cpu" > "$W/cpu.log" 2>&1 || { fail "cpu run"; tail -5 "$W/cpu.log"; }
  "$BIN" train "${e[@]}" --adam-eps 1e-3 --device cuda --precision fp32 --out "$W/f32" > "$W/f32.log" 2>&1 || { fail "cuda fp32 run"; tail -5 "$W/f32.log"; }
  grep -q "backend cuda-fp32" "$W/f32.log" && ok "--device cuda --precision fp32 uses the CUDA backend" || fail "backend name"
  "$TOOLS/ckpt_diff" "$W/cpu" "$W/f32" 1e-6 && ok "cuda fp32 (emulated) weights follow the CPU path after 2 steps" || fail "cuda fp32 differs from cpu"
  "$BIN" train "${e[@]}" --device cuda --precision bf16 --out "$W/b16" > "$W/b16.log" 2>&1 || { fail "cuda bf16 run"; tail -5 "$W/b16.log"; }
  json_check "$W/b16/metrics.jsonl" 'len(train) == 2 and all(r["skipped"] is False for r in train) and train[1]["loss"] < 1.0' \
    && ok "cuda bf16 (emulated) trains" || fail "cuda bf16 metrics"
  # lean mode (bf16 weights and moments, stochastic rounding): a run killed after step 3 and
  # resumed from checkpoint-2 ends with the uninterrupted run's bits (the rounding follows the step)
  l=("${e[@]}" --device cuda --precision bf16 --lean-optimizer --epochs 2 --save-every 2)
  "$BIN" train "${l[@]}" --out "$W/lean_a" > "$W/lean_a.log" 2>&1 || { fail "cuda lean run"; tail -5 "$W/lean_a.log"; }
  rc=0; TRAINER_TEST_DIE_AFTER_STEP=3 "$BIN" train "${l[@]}" --out "$W/lean_b" > "$W/lean_b1.log" 2>&1 || rc=$?
  "$BIN" train "${l[@]}" --out "$W/lean_b" --resume > "$W/lean_b2.log" 2>&1 || { fail "cuda lean resume"; tail -5 "$W/lean_b2.log"; }
  [ $rc -eq 137 ] && grep -q "resumed from .*checkpoint-2" "$W/lean_b2.log" && "$TOOLS/ckpt_diff" "$W/lean_a" "$W/lean_b" 0 \
    && ok "cuda lean (emulated): killed after step 3, resumed from checkpoint-2, bit-identical" \
    || fail "cuda lean resume differs (rc $rc)"
  ;;

sft)
  # Prompt-completion (SFT) data: string and conversational forms, --loss sft only, the token-mean
  # NLL of the completion (TRL SFTTrainer with completion-only loss), bad lines by number
  python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
recs = [json.loads(l) for l in open(w + "/train16.jsonl")]
with open(w + "/sft.jsonl", "w") as s, open(w + "/sft_conv.jsonl", "w") as c:
    for r in recs:  # the chosen answer (the pairs hold strings and CLAIR-release conversations)
        answer = r["chosen"] if isinstance(r["chosen"], str) else r["chosen"][-1]["content"]
        s.write(json.dumps({"prompt": r["prompt"], "completion": answer}) + "\n")
        c.write(json.dumps({"prompt": [{"role": "user", "content": r["prompt"]}],
                            "completion": [{"role": "assistant", "content": answer}]}) + "\n")
PY
  "$BIN" eval --model "$MODEL" --data "$W/sft.jsonl" --max-length 128 --pairs-out "$W/sft.pairs" --tokens-out "$W/sft.tok" > "$W/sft.json" 2> "$W/sft.log" \
    || { fail "eval of SFT data"; cat "$W/sft.log"; }
  "$BIN" eval --model "$MODEL" --data "$W/sft_conv.jsonl" --max-length 128 --tokens-out "$W/conv.tok" > "$W/conv.json" 2> "$W/conv.log" || fail "eval of conversational SFT data"
  "$BIN" eval --model "$MODEL" --data "$W/train16.jsonl" --loss sft --max-length 128 > "$W/pref_sft.json" 2> "$W/pref_sft.log" || fail "eval --loss sft of pairs"
  grep -q "16 lines: 16 prompt-completion examples" "$W/sft.log" && ok "SFT data counted as prompt-completion examples" || fail "SFT summary line"
  python3 - "$W" <<'PY' && ok "eval_loss = token-mean NLL of the completions; string and conversational forms and the chosen side of pairs agree" || fail "SFT eval values"
import json, sys
w = sys.argv[1]
e = json.loads(open(w + "/sft.json").read()); c = json.loads(open(w + "/conv.json").read())
p = json.loads(open(w + "/pref_sft.json").read().strip().splitlines()[-1])
lp = [json.loads(l)["logps/chosen"] for l in open(w + "/sft.pairs")]
tok = [json.loads(l) for l in open(w + "/sft.tok")]
n = sum(len(t["chosen_ids"]) - t["chosen_start"] for t in tok)
want = -sum(lp) / n
print("  eval:", e, " expected loss", want, " pairs --loss sft:", p["eval_loss"])
ok = (e["examples"] == 16 and abs(e["eval_loss"] - want) < 1e-12 * abs(want) and set(e) == {"examples", "eval_loss", "eval_logps/chosen"}
      and open(w + "/sft.tok").read() == open(w + "/conv.tok").read() and c["eval_loss"] == e["eval_loss"]
      and abs(p["eval_loss"] - e["eval_loss"]) < 1e-12 and all(t["rejected_ids"] == [] for t in tok))
sys.exit(0 if ok else 1)
PY
  "$BIN" train --model "$MODEL" --data "$W/sft.jsonl" --eval-data "$W/sft.jsonl" --out "$W/run" --loss sft --lr 3e-3 \
    --batch-size 8 --micro-batch 3 --epochs 3 --max-length 128 --warmup-ratio 0 --schedule constant --quiet > "$W/run.log" 2>&1 \
    || { fail "train --loss sft on SFT data"; tail -20 "$W/run.log"; }
  json_check "$W/run/metrics.jsonl" 'len(train) == 6 and evals[-1]["eval_loss"] < evals[0]["eval_loss"] - 0.05 and train[-1]["loss"] < train[0]["loss"] and evals[-1]["eval_logps/chosen"] > evals[0]["eval_logps/chosen"] and all("rewards/chosen" not in r and "logps/rejected" not in r and "logps/chosen" in r for r in train)' \
    && ok "SFT training lowers the completion NLL (loss) and raises logps/chosen" || fail "SFT training"
  expect_fail "a preference loss on SFT data is refused" "sft.jsonl holds prompt-completion records \(SFT data\); --loss apo_zero needs preference pairs.*use --loss sft" \
    "$BIN" train --model "$MODEL" --data "$W/sft.jsonl" --out "$W/o1" --max-length 128
  expect_fail "eval with a preference loss on SFT data is refused" "--loss sigmoid needs preference pairs" \
    "$BIN" eval --model "$MODEL" --data "$W/sft.jsonl" --loss sigmoid
  {
    head -n 2 "$W/sft.jsonl"
    head -n 1 "$W/train16.jsonl"                                                          # line 3: a pair among SFT records
    echo '{"prompt": "Hi", "completion": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}'  # 4
    echo '{"completion": "no prompt"}'                                                    # line 5
    echo '{"prompt": "Hi", "completion": "   "}'                                          # line 6: empty
    echo '{"prompt": "Hi", "completion": '                                                # line 7: bad JSON
    echo '{"prompt": "Hi", "completion": "x", "chosen": "y", "rejected": "z"}'            # line 8: both kinds
  } > "$W/bad.jsonl"
  "$BIN" eval --model "$MODEL" --data "$W/bad.jsonl" > /dev/null 2> "$W/bad.log" || { fail "eval of a file with bad SFT lines"; cat "$W/bad.log"; }
  for l in 3 4 5 6 7 8; do grep -q "bad.jsonl:$l:" "$W/bad.log" || fail "SFT line $l not reported"; done
  grep -q "bad.jsonl:3: a preference pair among the prompt-completion records of this file (line 1 is one)" "$W/bad.log" \
    && grep -q "bad.jsonl:6: the completion response is empty; example skipped" "$W/bad.log" \
    && grep -q "8 lines: 2 prompt-completion examples, 5 malformed (skipped), 1 with an empty response (skipped)" "$W/bad.log" \
    && ok "bad SFT lines reported by number: $(grep -m1 '8 lines' "$W/bad.log")" || { fail "bad SFT line messages"; cat "$W/bad.log"; }
  # exact means: the step-1 APO-zero loss is 1 and accuracies are k/10 exactly (10 pairs, micro-batches of 3)
  head -n 10 "$W/train16.jsonl" > "$W/train10.jsonl"
  "$BIN" train --model "$MODEL" --data "$W/train10.jsonl" --eval-data "$W/train10.jsonl" --out "$W/exact" --lr 3e-3 \
    --batch-size 10 --micro-batch 3 --epochs 4 --max-length 128 --warmup-ratio 0 --schedule constant --quiet > "$W/exact.log" 2>&1 \
    || { fail "exactness run"; tail -5 "$W/exact.log"; }
  json_check "$W/exact/metrics.jsonl" 'train[0]["loss"] == 1.0 and evals[0]["eval_loss"] == 1.0 and all(r[k] == round(r[k] * 10) / 10 for r in train for k in ("rewards/accuracies",)) and all(r["eval_rewards/accuracies"] == round(r["eval_rewards/accuracies"] * 10) / 10 for r in evals) and evals[-1]["eval_rewards/accuracies"] > 0' \
    && ok "metrics are exact means (loss 1.0 at step 1, accuracies k/10)" || fail "inexact means"
  ;;

tokenize)
  # Token ids as TRL 1.16 makes them (tests/trainer/trl_tokenize_expected.json, written by
  # tools/gen_trl_tokenize_expected.py with TRL's own helpers) on the tiny tokenizers, with and
  # without a BOS post-processor; then --tokenize separate (TRL 0.x) and text holding NUL
  python3 tests/trainer/tok_variants.py "$W/tok" || fail "tokenizer variants"
  cat > "$W/cfg.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 1024, "hidden_size": 16,
 "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
 "hidden_act": "silu", "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
 "tie_word_embeddings": true, "initializer_range": 0.02}
JSON
  for v in tiny-llama3 tiny-smol tiny-spm tiny-spm-bos tiny-llama3-bos; do
    "$BIN" init --config "$W/cfg.json" --out "$W/m-$v" --tokenizer "$W/tok/$v" > /dev/null 2>&1 || fail "init with $v"
  done
  python3 - "$BIN" "$W" tests/trainer/trl_tokenize_expected.json <<'PY' && ok "token ids and completion starts equal TRL 1.16's (raw text, boundary merges, BOS; chat on Llama 3 / ChatML)" || fail "ids differ from TRL's"
import json, subprocess, sys
bin_, w, fx = sys.argv[1:4]
cases = json.load(open(fx))["cases"]
groups = {}
for c in cases:
    r = c["record"]
    kind = ("sft" if "completion" in r else "pair") + ("_chat" if isinstance(r["prompt"], list) else "_raw")
    groups.setdefault((c["tokenizer"], kind), []).append(c)
bad = 0
for (tok, kind), cs in sorted(groups.items()):
    path = "%s/%s-%s.jsonl" % (w, tok, kind)
    with open(path, "w") as f:
        for c in cs: f.write(json.dumps(c["record"]) + "\n")
    cmd = [bin_, "eval", "--model", "%s/m-%s" % (w, tok), "--data", path, "--tokens-out", path + ".tok"]
    if kind.endswith("raw"): cmd.append("--raw-text")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode: print(p.stderr); bad += 1; continue
    got = [json.loads(l) for l in open(path + ".tok")]
    for c, g in zip(cs, got):
        want = (c["chosen_ids"], c["prompt_len"], c.get("rejected_ids", []), c["prompt_len"] if "rejected_ids" in c else 0)
        have = (g["chosen_ids"], g["chosen_start"], g["rejected_ids"], g["rejected_start"])
        if want != have:
            bad += 1; print("  %s %s %s\n    TRL  %s\n    ours %s" % (tok, kind, c["record"], want, have))
    print("  %-16s %-9s %d records" % (tok, kind, len(cs)))
sys.exit(1 if bad or len(cases) < 29 else 0)
PY
  printf '%s\n' '{"prompt": "Count: one two thr", "chosen": "ee four", "rejected": "ee five"}' > "$W/merge.jsonl"
  "$BIN" eval --model "$W/m-tiny-llama3" --data "$W/merge.jsonl" --raw-text --tokenize separate --tokens-out "$W/sep.tok" > /dev/null 2>&1 || fail "--tokenize separate"
  "$BIN" eval --model "$W/m-tiny-llama3" --data "$W/merge.jsonl" --raw-text --tokens-out "$W/joint.tok" > /dev/null 2>&1 || fail "--tokenize joint"
  python3 - "$W" <<'PY' && ok "--tokenize separate (TRL 0.x) encodes the response on its own: another split where BPE merges across the boundary" || fail "--tokenize separate"
import json, sys
s = json.loads(open(sys.argv[1] + "/sep.tok").read()); j = json.loads(open(sys.argv[1] + "/joint.tok").read())
print("  separate:", s["chosen_ids"], s["chosen_start"], " joint:", j["chosen_ids"], j["chosen_start"])
sys.exit(0 if s["chosen_ids"] != j["chosen_ids"] and s["chosen_start"] > j["chosen_start"] else 1)
PY
  # Llama 2: ids as `tokenizers` gives them on tokenizer.json (its legacy normalizer: how Meta's
  # sentencepiece encoded the training data), not as transformers 5's rebuilt Llama tokenizer
  python3 - "$W" tests/trainer/trl_tokenize_expected.json <<'PY' > "$W/l2.jsonl"
import json, sys
c = json.load(open(sys.argv[2]))["llama2_legacy"]
print(json.dumps({"prompt": c["text"], "completion": " ok"}))
PY
  "$BIN" eval --model "$W/m-tiny-spm-bos" --data "$W/l2.jsonl" --raw-text --tokens-out "$W/l2.tok" > /dev/null 2>&1 || fail "Llama 2 eval"
  python3 - "$W/l2.tok" tests/trainer/trl_tokenize_expected.json <<'PY' && ok "Llama 2: the ids of tokenizers (legacy normalizer), not of transformers 5" || fail "Llama 2 ids"
import json, sys
ids = json.loads(open(sys.argv[1]).read())["chosen_ids"]
c = json.load(open(sys.argv[2]))["llama2_legacy"]
n = 7  # "<s> Paris. ": past it the completion " ok" may merge with "Yes"
print("  ours", ids[:n], "tokenizers", c["tokenizers"][:n], "transformers 5", c["transformers"][:n])
sys.exit(0 if ids[:n] == c["tokenizers"][:n] != c["transformers"][:n] else 1)
PY
  # NUL: chat-template data is refused naming the line; raw text keeps what follows it
  {
    echo '{"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."}'
    echo '{"prompt": "Capital of France?", "chosen": "Paris.\u0000 more", "rejected": "Lyon."}'
    echo '{"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "\u0000Lyon."}'
    echo '{"prompt": [{"role": "user", "content": "Capital\u0000 of France?"}], "chosen": "Paris.", "rejected": "Lyon."}'
  } > "$W/nul.jsonl"
  "$BIN" eval --model "$MODEL" --data "$W/nul.jsonl" > /dev/null 2> "$W/nul.log" || fail "eval of the NUL file"
  grep -q 'nul.jsonl:2: "chosen" contains a NUL character' "$W/nul.log" && grep -q 'nul.jsonl:3: "rejected" contains a NUL character' "$W/nul.log" \
    && grep -q 'nul.jsonl:4: "prompt"\[0\].content contains a NUL character' "$W/nul.log" && grep -q "4 lines: 1 pairs, 3 malformed" "$W/nul.log" \
    && ok "NUL in chat-template data refused by line: $(grep -m1 'nul.jsonl:2' "$W/nul.log" | cut -c1-90)..." || { fail "NUL messages"; cat "$W/nul.log"; }
  echo '{"prompt": "Say:", "completion": "\u0000"}' > "$W/nul_sft.jsonl"
  expect_fail "a NUL-only SFT completion is refused, not trained as empty" "no usable pair" "$BIN" eval --model "$MODEL" --data "$W/nul_sft.jsonl"
  printf '%s\n' '{"prompt": "Say:", "completion": "Paris.\u0000 more"}' '{"prompt": "Say:", "completion": "Paris."}' > "$W/nul_raw.jsonl"
  "$BIN" eval --model "$MODEL" --data "$W/nul_raw.jsonl" --raw-text --tokens-out "$W/nul_raw.tok" > /dev/null 2>&1 || fail "raw text with NUL"
  python3 - "$W" <<'PY' && ok "raw text keeps what follows a NUL" || fail "raw text lost text after NUL"
import json, sys
a, b = [json.loads(l)["chosen_ids"] for l in open(sys.argv[1] + "/nul_raw.tok")]
sys.exit(0 if len(a) > len(b) + 1 and a[:len(b) - 1] == b[:-1] else 1)
PY
  ;;

*) echo "unknown test $TEST"; exit 2 ;;
esac

if [ $FAILS -gt 0 ]; then echo "$FAILS check(s) failed"; exit 1; fi
echo "all checks passed"
