#!/usr/bin/env python3
"""Writes tests/fixtures/checkpoint/reference.safetensors with the reference safetensors writer
(the `safetensors` PyPI package, via torch), so the C reader is tested against files it did not
write itself. Dev tool; the output is committed (a few hundred bytes). Values are exact in
every dtype: x[i] = (i - 3.5) / 4.

    python3 tools/gen_st_fixture.py
"""
import os
import torch
from safetensors.torch import save_file

out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "checkpoint", "reference.safetensors")
x = ((torch.arange(8, dtype=torch.float32) - 3.5) / 4).reshape(2, 4)
tensors = {
    "x_f32": x,
    "x_bf16": x.to(torch.bfloat16),
    "x_f16": x.to(torch.float16),
    "ids_i64": torch.tensor([0, 1, 49151, -100], dtype=torch.int64),
    "big_i64": torch.tensor([1 << 40], dtype=torch.int64),
}
save_file(tensors, out, metadata={"format": "pt"})
print("wrote", os.path.normpath(out), os.path.getsize(out), "bytes")
