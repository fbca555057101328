#!/usr/bin/env python3
"""Builds the Llama fixtures that tests/model/test_model.c checks our C model against.

For each case: a tiny random LlamaForCausalLM in float32 (eager attention), saved with
save_pretrained (safetensors) into tests/fixtures/llama/<name>/, plus expected.safetensors:

  tokens         I32 [T]        several sequences of different lengths, packed back to back
  seq_start      I32 [S+1]      sequence s is tokens[seq_start[s] : seq_start[s+1]]
  completion     I32 [T]        1 for completion (label) tokens, 0 for prompt tokens
  weight         F32 [S]        the per-sequence weights w_s of the objective (both signs)
  logp           F32 [T]        logp[i] = log p(tokens[i] | sequence prefix), 0 at a sequence start
                                (HF computed in float64 on the float32 weights; see below)
  completion_logp F32 [S]       sum of logp over each sequence's completion tokens
  grad.<param>   F32 (shape of param)  dJ/dparam for J = sum_s w_s * completion_logp[s]

HF runs each sequence on its own (batch of one, no padding), so packing is ours to get right.
config.json is rewritten in the classic layout real checkpoints use (top-level rope_theta and
rope_scaling; transformers 5 would write rope_parameters); the expected values come from
transformers loading that directory back.

Needs torch + transformers (dev only; CI uses the committed output). Run from the repo root:
    python3 tools/gen_llama_fixtures.py
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

OUT = os.path.join("tests", "fixtures", "llama")

# name -> config overrides. Covers: GQA, MHA, MQA; tied/untied; llama3 rope scaling with a
# frequency in the smoothed band; rope_theta != 10000; odd head counts; hidden not a multiple
# of 8; head_dim from config != hidden/heads; vocab and intermediate sizes that are prime-ish.
CASES = {
    "gqa_tied": dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                     num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                     rope_theta=10000.0, tie_word_embeddings=True, rms_norm_eps=1e-5),
    "mha_untied": dict(vocab_size=101, hidden_size=40, intermediate_size=72, num_hidden_layers=2,
                       num_attention_heads=5, num_key_value_heads=5, head_dim=8,
                       rope_theta=500000.0, tie_word_embeddings=False, rms_norm_eps=1e-6),
    "llama3_mqa": dict(vocab_size=89, hidden_size=36, intermediate_size=60, num_hidden_layers=2,
                       num_attention_heads=3, num_key_value_heads=1, head_dim=16,
                       rope_theta=20000.0, tie_word_embeddings=False, rms_norm_eps=1e-5,
                       rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                         high_freq_factor=4.0,
                                         original_max_position_embeddings=32)),
    "awkward_tied": dict(vocab_size=53, hidden_size=30, intermediate_size=47, num_hidden_layers=3,
                         num_attention_heads=3, num_key_value_heads=3, head_dim=10,
                         rope_theta=1000.0, tie_word_embeddings=True, rms_norm_eps=1e-6),
}

SEQ_LENS = [9, 17, 2, 24, 1]          # includes a 1-token sequence (no log-probs at all)
WEIGHTS = [1.0, -0.7, 0.5, -1.3, 0.9]  # DPO-style: chosen +, rejected -


def classic_config(path):
    """Rewrites transformers-5 config.json (rope_parameters) to the classic layout."""
    with open(path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters", None)
    if rp is not None:
        cfg["rope_theta"] = rp.pop("rope_theta")
        if rp.get("rope_type", "default") != "default":
            cfg["rope_scaling"] = rp
        else:
            cfg["rope_scaling"] = None
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def randomise(model, gen):
    """Weights with enough spread that attention, norms and the MLP all matter (HF's init with
    std 0.02 gives near-uniform predictions and gradients too small to test much)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:  # norm weights: around 1, not exactly 1, so their grads count
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:  # std 0.3: tied logits ~ N(0, 0.3^2 D), not saturated
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))


def seq_logp(model, ids):
    """Per-token log-probs of one sequence, in our convention (0 at position 0)."""
    logits = model(input_ids=ids[None, :]).logits[0]          # [n, V]
    lp = torch.log_softmax(logits[:-1], dim=-1)                # position t predicts t + 1
    out = torch.zeros(ids.shape[0], dtype=logits.dtype)
    out[1:] = lp.gather(1, ids[1:, None])[:, 0]
    return out


def build(name, overrides, seed):
    gen = torch.Generator().manual_seed(seed)
    cfg = LlamaConfig(max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
                      attention_bias=False, mlp_bias=False, hidden_act="silu", **overrides)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).float().eval()
    randomise(model, gen)

    V = cfg.vocab_size
    seqs = [torch.randint(0, V, (n,), generator=gen) for n in SEQ_LENS]
    # prompt: the first ~40% (at least one token); completion: the rest
    comp = []
    for s in seqs:
        c = torch.zeros(len(s), dtype=torch.int32)
        c[max(1, (2 * len(s)) // 5):] = 1
        comp.append(c)

    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    classic_config(os.path.join(d, "config.json"))
    gen_cfg = os.path.join(d, "generation_config.json")
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)

    def run(dtype):
        """HF on the saved checkpoint in dtype: per-token logp, completion sums, grads of J."""
        m = LlamaForCausalLM.from_pretrained(d, attn_implementation="eager", dtype=dtype).eval()
        m.zero_grad()
        logps, sums, J = [], [], 0.0
        for s, c, w in zip(seqs, comp, WEIGHTS):
            lp = seq_logp(m, s)
            tot = (lp * c.to(dtype)).sum()
            J = J + w * tot
            logps.append(lp.detach())
            sums.append(tot.detach())
        J.backward()
        grads = {n: p.grad.detach().clone() for n, p in m.named_parameters()}
        return torch.cat(logps), torch.stack(sums), grads, J.item()

    # The expected values are HF's modeling_llama run in float64 on the (float32) checkpoint:
    # HF in float32 is itself only ~1e-4 (relative) from the exact values on these fixtures
    # (printed below), which is the whole tolerance; against fp64 our fp32 error shows alone.
    lp64, sum64, g64, J64 = run(torch.float64)
    lp32, _, g32, _ = run(torch.float32)

    tensors = {
        "tokens": torch.cat(seqs).to(torch.int32),
        "seq_start": torch.tensor([0] + list(torch.cumsum(torch.tensor(SEQ_LENS), 0)), dtype=torch.int32),
        "completion": torch.cat(comp).to(torch.int32),
        "weight": torch.tensor(WEIGHTS, dtype=torch.float32),
        "logp": lp64.float(),
        "completion_logp": sum64.float(),
    }
    for pname, g in g64.items():
        tensors["grad." + pname] = g.float().contiguous()
    save_file(tensors, os.path.join(d, "expected.safetensors"))

    # the same relative error as tests/model/test_model.c: |a-b| / max(|b|, floor * max|b|)
    worst = {1e-2: 0.0, 5e-2: 0.0}
    for pname, ref in g64.items():
        for fl in worst:
            floor = fl * ref.abs().max().item()
            e = ((g32[pname].double() - ref).abs() / ref.abs().clamp_min(floor)).max().item()
            worst[fl] = max(worst[fl], e)
    lpd = (lp32.double() - lp64).abs().max().item()
    print(f"{name}: T={sum(SEQ_LENS)} params={sum(p.numel() for p in model.parameters())} "
          f"J={J64:.4f}  HF fp32 vs fp64: max |dlogp| {lpd:.2e}, max grad rel err "
          f"{worst[1e-2]:.2e} (floor 1e-2 max), {worst[5e-2]:.2e} (floor 5e-2 max)")


def main():
    torch.set_num_threads(1)
    for i, (name, ov) in enumerate(CASES.items()):
        build(name, ov, 1234 + i)


if __name__ == "__main__":
    sys.exit(main())
