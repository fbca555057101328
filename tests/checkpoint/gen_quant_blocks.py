#!/usr/bin/env python3
"""Writes tests/checkpoint/quant_blocks.bin: random blocks of every quantised ggml type the GGUF
reader takes, with the fp32 values the `gguf` package's dequantize gives them (pip install gguf
numpy). Layout: "GQTB", then per type: u32 type, u32 elements, u32 bytes, the blocks, the floats.
The scale fields (fp16) are set to small finite values; every other byte is random.
    python3 tests/checkpoint/gen_quant_blocks.py tests/checkpoint/quant_blocks.bin
"""
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

# type: (elements per block, bytes per block, byte offsets of its fp16 scale fields)
LAYOUT = {
    T.Q4_0: (32, 18, [0]), T.Q4_1: (32, 20, [0, 2]), T.Q5_0: (32, 22, [0]), T.Q5_1: (32, 24, [0, 2]),
    T.Q8_0: (32, 34, [0]), T.Q2_K: (256, 84, [80, 82]), T.Q3_K: (256, 110, [108]),
    T.Q4_K: (256, 144, [0, 2]), T.Q5_K: (256, 176, [0, 2]), T.Q6_K: (256, 210, [208]),
}

def main(out):
    rng = np.random.default_rng(20261129)
    parts = [b"GQTB"]
    for qt, (be, bb, scales) in LAYOUT.items():
        nblocks = 3
        raw = rng.integers(0, 256, size=(nblocks, bb), dtype=np.uint8)
        for off in scales:
            vals = rng.uniform(-0.05, 0.05, size=nblocks).astype(np.float16)
            raw[:, off:off + 2] = vals.view(np.uint8).reshape(nblocks, 2)
        ref = quants.dequantize(raw.reshape(-1), qt).astype(np.float32).reshape(-1)
        assert ref.size == nblocks * be and np.all(np.isfinite(ref))
        parts.append(struct.pack("<III", int(qt), ref.size, raw.size) + raw.tobytes() + ref.astype("<f4").tobytes())
    with open(out, "wb") as f:
        f.write(b"".join(parts))

if __name__ == "__main__":
    main(sys.argv[1])
