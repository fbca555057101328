#!/usr/bin/env python3
"""The PyTorch baseline of bench/gpu_bench.c: the same APO-zero training steps on the same Llama
shapes, written the usual way with transformers + torch on the GPU.

    python3 bench/gpu_bench_torch.py --shape 8b|1b|tiny|toy [--pairs P] [--seq-len n] [--accum A]
        [--steps N] [--checkpointing] [--cap-gib G] [--peak-tflops P] [--dry-run]

The model is transformers' LlamaForCausalLM built from a config (random init, nothing
downloaded), its parameters in bf16, SDPA attention, torch.optim.AdamW(fused=True) with
bf16 moments (8 bytes per parameter: what the CUDA backend's lean mode holds); --checkpointing
turns on gradient checkpointing (the backend's recompute). A micro-batch is P pairs of sequences
of n random tokens (chosen, rejected; the second half of each sequence is its completion), one
[2P, n] batch without padding. A step: for each of A micro-batches, forward, summed completion
log-probs, APO-zero loss against reference log-probs computed once before training (as TRL's
precompute_ref_log_probs), backward; then clip the gradient norm to 1 and step AdamW.

Prints one RESULT line like cuda_bench's: median step time, tokens/s, MFU (the same model-FLOP
count: 6 x matmul params x tokens + causal attention, over --peak-tflops), and
torch.cuda.max_memory_allocated. --cap-gib G limits the process to G GiB
(torch.cuda.set_per_process_memory_fraction), so a larger card behaves like one of G GiB; a
configuration that runs out of memory prints REFUSED and exits 2.

--dry-run runs the toy shape for one step on whatever device there is, to check the script
itself; without torch or transformers it prints SKIP and exits 77.
"""
import argparse
import statistics
import sys
import time

# The shapes of cuda_bench. RoPE's theta and llama3 scaling do not change the cost: they are left
# at transformers' defaults, so the script does not depend on how a transformers version spells them.
SHAPES = {
    # Meta-Llama-3-8B
    "8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=8192, tie_word_embeddings=False),
    # Llama-3.2-1B
    "1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072, tie_word_embeddings=True),
    "tiny": dict(vocab_size=1000, hidden_size=256, intermediate_size=704, num_hidden_layers=2,
                 num_attention_heads=8, num_key_value_heads=2, head_dim=32, max_position_embeddings=131072, tie_word_embeddings=False),
    "toy": dict(vocab_size=256, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=131072, tie_word_embeddings=False),
}
GIB = 1024.0 ** 3
BETA = 0.1   # APO-zero's beta, as apo_default_params(APO_ZERO)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing (recompute)")
    p.add_argument("--cap-gib", type=float, default=0.0, help="behave like a card of this many GiB")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak for MFU (H100/H200 SXM: 989)")
    p.add_argument("--dry-run", action="store_true", help="toy shape, one step, any device; SKIP without torch")
    a = p.parse_args()
    if a.dry_run:
        a.shape, a.pairs, a.seq_len, a.accum, a.steps = "toy", 1, 16, 2, 1
    if a.pairs < 1 or a.seq_len < 2 or a.accum < 1 or a.steps < 1 or a.cap_gib < 0:
        p.error("--pairs, --accum, --steps must be >= 1, --seq-len >= 2, --cap-gib >= 0")
    return a


def model_flops(cfg, n_params, tokens, seq_len, n_seq):
    """cuda_bench's count: 6 x matmul params x tokens + causal attention (no recomputation)."""
    embed = cfg["vocab_size"] * cfg["hidden_size"]
    matmul = n_params - embed + (embed if cfg["tie_word_embeddings"] else 0)
    attn = 6.0 * cfg["num_hidden_layers"] * cfg["num_attention_heads"] * cfg["head_dim"] * seq_len * seq_len * n_seq
    return 6.0 * matmul * tokens + attn


def main():
    a = parse_args()
    try:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as e:
        print(f"SKIP: torch and transformers are needed ({e})")
        return 77
    if not torch.cuda.is_available() and not a.dry_run:
        print("SKIP: no CUDA device (torch.cuda.is_available() is False)")
        return 77
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg_dict = dict(SHAPES[a.shape], rms_norm_eps=1e-5, initializer_range=0.02, use_cache=False)
    if dev.type == "cuda" and a.cap_gib > 0:
        total = torch.cuda.get_device_properties(dev).total_memory
        if a.cap_gib * GIB < total:
            torch.cuda.set_per_process_memory_fraction(a.cap_gib * GIB / total, dev)
    torch.manual_seed(0)
    n, n_seq, A = a.seq_len, 2 * a.pairs, a.accum
    label = (f"shape={a.shape} pairs={a.pairs} seq_len={n} accum={A} tokens={n_seq * n * A} "
             f"checkpointing={int(a.checkpointing)} cap_gib={a.cap_gib:.1f}")
    try:
        cfg = LlamaConfig(**cfg_dict)
        cfg._attn_implementation = "sdpa"
        torch.set_default_dtype(torch.bfloat16)
        with dev:
            model = LlamaForCausalLM(cfg)         # initialised on the device, in bf16
        torch.set_default_dtype(torch.float32)
        model.to(torch.bfloat16)                  # (a no-op unless a version ignored the default dtype)
        model.config._attn_implementation = "sdpa"
        if a.checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0,
                                fused=dev.type == "cuda")
        n_params = sum(p.numel() for p in model.parameters())
        g = torch.Generator(device="cpu").manual_seed(12345)
        batches = [torch.randint(0, cfg_dict["vocab_size"], (n_seq, n), generator=g).to(dev) for _ in range(A)]
        completion = torch.zeros((n_seq, n - 1), device=dev)
        completion[:, n // 2 - 1:] = 1.0       # logp of token i (i >= n/2) sits at column i - 1

        def summed_logps(ids):
            logits = model(input_ids=ids).logits[:, :-1]
            # one sequence at a time in fp32, as TRL's selective_log_softmax does for bf16 logits
            # (the [2P, n, V] fp32 log-softmax of an 8B micro-batch alone would be 8 GB)
            rows = [torch.log_softmax(logits[b].float(), -1).gather(-1, ids[b, 1:, None]).squeeze(-1)
                    for b in range(n_seq)]
            return (torch.stack(rows) * completion).sum(-1)

        with torch.no_grad():
            refs = [summed_logps(ids) for ids in batches]
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)   # the peak of training steps, not of the set-up
        times, loss = [], 0.0
        for step in range(a.steps + 1):     # step 0 warms up, untimed
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = 0.0
            for ids, ref in zip(batches, refs):
                lr = summed_logps(ids) - ref          # log-ratios: chosen at even rows, rejected at odd
                chosen, rejected = lr[0::2], lr[1::2]
                l = ((1 - torch.sigmoid(BETA * chosen)) + torch.sigmoid(BETA * rejected)).mean() / A   # TRL apo_zero
                l.backward()
                loss += float(l)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if step > 0:
                times.append(time.perf_counter() - t0)
            print(f"step {step}: {(time.perf_counter() - t0) * 1e3:.1f} ms, loss {loss:.6f}", file=sys.stderr)
    except torch.cuda.OutOfMemoryError as e:
        print(f"REFUSED torch {label}: out of memory ({str(e).splitlines()[0]})")
        return 2
    med = statistics.median(times)
    tokens = n_seq * n * A
    flops = A * model_flops(cfg_dict, n_params, n_seq * n, n, n_seq)
    mem = torch.cuda.max_memory_allocated(dev) / GIB if dev.type == "cuda" else 0.0
    print(f"RESULT torch {label} device={dev.type} torch={torch.__version__} params={n_params / 1e9:.3f}B "
          f"step_ms={med * 1e3:.1f} tok_s={tokens / med:.0f} tflops={flops / med / 1e12:.1f} "
          f"mfu={100 * flops / med / (a.peak_tflops * 1e12):.1f}% max_mem_gib={mem:.2f} loss={loss:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
