#!/usr/bin/env python3
"""Writes tests/fixtures/checkpoint/tiny_llama.gguf, a tiny random Llama in llama.cpp's layout
(q/k rows permuted as llama.cpp's converter does, every tensor type our GGUF reader takes:
F32, F16, BF16, Q8_0, Q4_0, Q4_1), and tiny_llama_expected.safetensors, the Hugging Face
tensors that file must load as, computed with the reference `gguf` package (GGUFReader +
quants.dequantize) and tools/gguf_to_hf.py's unpermute. Dev tool; outputs committed (~150 KB).

    python3 tools/gen_gguf_fixture.py
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q, quants
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gguf_to_hf import hf_name, unpermute  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "checkpoint")
V, D, I, L, H, K = 64, 64, 96, 2, 4, 2
HD = D // H
rng = np.random.default_rng(7)


def permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf permute(): rotate-half rows -> interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# (gguf name, HF-layout shape, ggml type)
plan = [("token_embd.weight", (V, D), Q.Q8_0)]
for l in range(L):
    plan += [
        (f"blk.{l}.attn_norm.weight", (D,), Q.F32),
        (f"blk.{l}.attn_q.weight", (H * HD, D), Q.Q4_1),
        (f"blk.{l}.attn_k.weight", (K * HD, D), Q.Q4_0 if l == 0 else Q.Q8_0),
        (f"blk.{l}.attn_v.weight", (K * HD, D), Q.F16),
        (f"blk.{l}.attn_output.weight", (D, H * HD), Q.BF16),
        (f"blk.{l}.ffn_norm.weight", (D,), Q.F32),
        (f"blk.{l}.ffn_gate.weight", (I, D), Q.Q4_1),
        (f"blk.{l}.ffn_up.weight", (I, D), Q.Q8_0),
        (f"blk.{l}.ffn_down.weight", (D, I), Q.Q4_1),
    ]
plan += [("output_norm.weight", (D,), Q.F32), ("output.weight", (V, D), Q.Q8_0)]

path = os.path.join(OUT, "tiny_llama.gguf")
w = gguf.GGUFWriter(path, "llama")
w.add_block_count(L)
w.add_context_length(256)
w.add_embedding_length(D)
w.add_feed_forward_length(I)
w.add_head_count(H)
w.add_head_count_kv(K)
w.add_rope_freq_base(10000.0)
w.add_layer_norm_rms_eps(1e-5)
w.add_rope_dimension_count(HD)
w.add_vocab_size(V)
w.add_bos_token_id(1)
w.add_eos_token_id(2)
# a token list like a real file has (an array of strings our reader must skip)
w.add_tokenizer_model("gpt2")
w.add_token_list([f"t{i}" for i in range(V)])
for name, shape, qt in plan:
    x = rng.standard_normal(shape).astype(np.float32) * (0.5 if len(shape) == 2 else 0.1)
    if len(shape) == 1:
        x += 1.0
    if ".attn_q." in name:
        x = permute(x, H)
    elif ".attn_k." in name:
        x = permute(x, K)
    if qt == Q.F32:
        w.add_tensor(name, x)
    elif qt == Q.F16:
        w.add_tensor(name, x.astype(np.float16))
    else:
        w.add_tensor(name, quants.quantize(x, qt), raw_dtype=qt)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()

# Expected Hugging Face tensors, through the reference reader and dequantiser.
r = gguf.GGUFReader(path)
exp = {}
for t in r.tensors:
    x = quants.dequantize(t.data, t.tensor_type).astype(np.float32)
    x = x.reshape([int(s) for s in reversed(t.shape)]) if len(t.shape) > 1 else x.reshape(-1)
    n = hf_name(t.name)
    if n.endswith("q_proj.weight"):
        x = unpermute(x, H)
    elif n.endswith("k_proj.weight"):
        x = unpermute(x, K)
    exp[n] = np.ascontiguousarray(x)
save_file(exp, os.path.join(OUT, "tiny_llama_expected.safetensors"))
print("wrote", os.path.normpath(path), os.path.getsize(path), "bytes;", len(exp), "expected tensors")
