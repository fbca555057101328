#!/usr/bin/env python3
"""Dev tool (not CI): our checkpoint code against Hugging Face transformers, both directions.

  1. our C code saves checkpoints (F32 untied / BF16 tied + llama3 rope + sharded + tokenizer
     files); transformers' from_pretrained loads each with no missing/unexpected keys, the
     config fields come through, every tensor equals what our loader reads back, and a forward
     pass runs;
  2. transformers' save_pretrained writes checkpoints (F32, BF16, sharded); our loader reads
     every tensor bit-exactly.

Needs torch + transformers; builds tests/checkpoint/ckpt_tool.c with cc.
    python3 tools/check_hf_roundtrip.py
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer, LlamaConfig, LlamaForCausalLM

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
TMP = tempfile.mkdtemp(prefix="hf_roundtrip_")
TOOL = os.path.join(TMP, "ckpt_tool")
failures = 0


def check(cond, msg):
    global failures
    print(("ok   " if cond else "FAIL ") + msg)
    if not cond:
        failures += 1


def build_tool():
    src = ["tests/checkpoint/ckpt_tool.c", "llama/checkpoint.c", "llama/safetensors.c", "llama/json.c", "llama/model.c", "llama/gemm.c", "util.c"]
    subprocess.run(["cc", "-O2", "-std=c99", "-fopenmp", "-o", TOOL] + [os.path.join(ROOT, s) for s in src] + ["-lm"],
                   check=True)


def c_dump(d):
    out = os.path.join(TMP, "dump.bin")
    subprocess.run([TOOL, "dump", d, out], check=True)
    vals = np.fromfile(out, dtype=np.float32)
    tensors, off = {}, 0
    for line in open(out + ".txt"):
        name, n = line.split()
        tensors[name] = vals[off:off + int(n)]
        off += int(n)
    assert off == vals.size
    return tensors


def tokenizer_dir():
    """A real tokenizer.json for the copy test: SmolLM2's, from tools/gguf_to_hf.py's output
    when present; else a tiny word-level tokenizer built with `tokenizers`."""
    d = os.path.join(TMP, "tok")
    os.makedirs(d)
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {f"w{i}": i for i in range(64)}
    vocab["[UNK]"] = 64
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(os.path.join(d, "tokenizer.json"))
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]"}, open(os.path.join(d, "tokenizer_config.json"), "w"))
    json.dump({"bos_token_id": 1, "eos_token_id": [2, 3]}, open(os.path.join(d, "generation_config.json"), "w"))
    return d


def ours_to_hf(label, V, D, I, L, H, K, tied, bf16, shard, llama3, tok=None):
    d = os.path.join(TMP, label)
    args = [TOOL, "save", d, str(V), str(D), str(I), str(L), str(H), str(K), str(tied), str(bf16), str(shard), "1234", str(llama3)]
    if tok:
        args.append(tok)
    subprocess.run(args, check=True)
    files = sorted(os.listdir(d))
    print(f"--- {label}: {files}")
    model, info = LlamaForCausalLM.from_pretrained(d, output_loading_info=True, dtype=torch.float32)
    check(not info["missing_keys"] and not info["unexpected_keys"] and not info.get("mismatched_keys"),
          f"{label}: transformers loads with no missing/unexpected/mismatched keys {info}")
    cfg = model.config
    check(cfg.num_key_value_heads == K and cfg.num_hidden_layers == L and cfg.tie_word_embeddings == bool(tied),
          f"{label}: config heads/layers/tie")
    rp = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if llama3:
        check(rp.get("rope_type") == "llama3" and rp.get("factor") == 32, f"{label}: llama3 rope read by transformers: {rp}")
    check(list(cfg.eos_token_id) == [2, 3] if isinstance(cfg.eos_token_id, list) else False, f"{label}: eos list {cfg.eos_token_id}")
    ours = c_dump(d)
    sd = model.state_dict()
    worst = 0.0
    for name, v in ours.items():
        t = sd[name].detach().float().numpy().reshape(-1)
        worst = max(worst, float(np.max(np.abs(t - v))) if v.size else 0.0)
    check(worst == 0.0, f"{label}: all {len(ours)} tensors equal between transformers and our loader (max diff {worst})")
    if tied:
        check(model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), f"{label}: transformers ties lm_head")
    with torch.no_grad():
        out = model(torch.tensor([[1, 5, 9, 2]])).logits
    check(bool(torch.isfinite(out).all()), f"{label}: forward pass finite")
    if tok:
        t = AutoTokenizer.from_pretrained(d)
        check(t("w1 w2").input_ids == [1, 2], f"{label}: copied tokenizer loads")


def hf_to_ours(label, tied, dtype, shard):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
                      num_key_value_heads=2, tie_word_embeddings=tied, rope_theta=10000.0,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 256})
    model = LlamaForCausalLM(cfg).to(dtype)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(1 + 0.1 * torch.randn_like(p))
    d = os.path.join(TMP, label)
    model.save_pretrained(d, max_shard_size=shard)
    print(f"--- {label}: {sorted(os.listdir(d))}")
    ours = c_dump(d)
    sd = model.state_dict()
    names = [n for n in sd if not (tied and n == "lm_head.weight")]
    check(sorted(names) == sorted(ours), f"{label}: same tensor names ({len(ours)})")
    worst = max(float(np.max(np.abs(sd[n].float().numpy().reshape(-1) - ours[n]))) for n in ours)
    check(worst == 0.0, f"{label}: our loader reads transformers' {dtype} tensors exactly (max diff {worst})")


def main():
    build_tool()
    tok = tokenizer_dir()
    ours_to_hf("ours_f32_untied_gqa", 96, 48, 80, 2, 6, 2, tied=0, bf16=0, shard=0, llama3=0)
    ours_to_hf("ours_bf16_tied_llama3_sharded", 96, 48, 80, 3, 6, 3, tied=1, bf16=1, shard=20000, llama3=1, tok=tok)
    ours_to_hf("ours_f32_mha", 64, 32, 64, 1, 4, 4, tied=0, bf16=0, shard=0, llama3=1)
    hf_to_ours("hf_f32_untied", False, torch.float32, "5GB")
    hf_to_ours("hf_bf16_tied_sharded", True, torch.bfloat16, "10KB")
    hf_to_ours("hf_f16_untied", False, torch.float16, "5GB")
    shutil.rmtree(TMP)
    print("FAILED: %d" % failures if failures else "all transformers round trips passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
