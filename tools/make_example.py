#!/usr/bin/env python3
"""Makes the files of the built-in demo in examples/ (dev tool; nothing at run time needs it).

    python3 tools/make_example.py            # writes examples/tiny-llama/, pairs.jsonl, pairs_eval.jsonl, prompts.jsonl

What it makes, all from our own generated text (no third-party model or tokenizer files):
  - a CLAIR-style preference set: for each prompt, `rejected` is a "student" answer with a flaw
    (a wrong sum, a wrong capital, typos, a grammar slip) and `chosen` is its minimal revision:
    the same answer with only the flaw corrected, as CLAIR's reviser is asked to do;
  - a byte-level BPE tokenizer trained with Hugging Face `tokenizers` on that text (GPT-2 style
    ByteLevel pre-tokenizer), with a ChatML chat template in tokenizer_config.json;
  - a tiny Llama (2 layers, hidden 64, GQA 4/2 heads, tied embeddings), briefly fine-tuned with
    torch on the *rejected* answers, so that it behaves like the student whose answers CLAIR
    revises (the rejected side is the model's own kind of answer, as in the paper).
Needs: tokenizers, torch, safetensors, numpy. Deterministic for a torch version (seeded); the
committed files are the reference, the script documents how they were made.
"""
import json
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EX = os.path.join(ROOT, "examples")
MODEL_DIR = os.path.join(EX, "tiny-llama")

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ---------------------------------------------------------------------------------------------
# Data: prompts with a flawed answer (rejected) and its minimal revision (chosen)

CAPITALS = [  # (country, capital, a tempting wrong answer)
    ("Australia", "Canberra", "Sydney"), ("Canada", "Ottawa", "Toronto"), ("Turkey", "Ankara", "Istanbul"),
    ("Brazil", "Brasilia", "Rio de Janeiro"), ("Switzerland", "Bern", "Zurich"), ("Morocco", "Rabat", "Casablanca"),
    ("Nigeria", "Abuja", "Lagos"), ("Vietnam", "Hanoi", "Ho Chi Minh City"), ("New Zealand", "Wellington", "Auckland"),
    ("Pakistan", "Islamabad", "Karachi"), ("India", "New Delhi", "Mumbai"), ("China", "Beijing", "Shanghai"),
    ("Scotland", "Edinburgh", "Glasgow"), ("Bolivia", "Sucre", "La Paz"), ("Kazakhstan", "Astana", "Almaty"),
    ("Tanzania", "Dodoma", "Dar es Salaam"), ("Myanmar", "Naypyidaw", "Yangon"), ("Ecuador", "Quito", "Guayaquil"),
    ("South Africa", "Pretoria", "Johannesburg"), ("United States", "Washington", "New York"),
    ("Germany", "Berlin", "Munich"), ("Italy", "Rome", "Milan"), ("Spain", "Madrid", "Barcelona"),
    ("Japan", "Tokyo", "Osaka"), ("Egypt", "Cairo", "Alexandria"), ("Chile", "Santiago", "Valparaiso"),
]
TYPOS = [("the", "teh"), ("receive", "recieve"), ("definitely", "definately"), ("separate", "seperate"),
         ("occurred", "occured"), ("because", "becuase"), ("believe", "beleive"), ("friend", "freind"),
         ("which", "wich"), ("until", "untill"), ("tomorrow", "tommorow"), ("really", "realy")]
TOPICS = {
    "the sea": "The sea is really calm today, and the water is warm because the sun was out until late.",
    "a friend": "My friend said she will definitely visit tomorrow, because the trip was planned long ago.",
    "a library": "I believe the library will receive new books tomorrow, which is really good news.",
    "the weather": "The weather was really cold until noon, because the wind occurred from the north.",
    "a garden": "The garden has separate beds for herbs, which my friend planted because they smell good.",
    "a letter": "I will definitely receive the letter tomorrow, because my friend sent it which I believe.",
    "a train": "The train was really late until the evening, because a problem occurred on the line.",
    "cooking": "I believe cooking is really fun, because you can share the meal with a friend tomorrow.",
    "music": "The music was really loud until midnight, which is why I believe we will sleep late tomorrow.",
    "a city": "The city is really busy, because the market occurred on the same day, which I believe is rare.",
}
ANIMALS = [("elephant", "lives in Africa and Asia"), ("owl", "hunts at night"), ("eagle", "has sharp eyes"),
           ("ant", "lives in large colonies"), ("octopus", "has eight arms"), ("iguana", "likes warm places"),
           ("otter", "swims in rivers"), ("emu", "cannot fly"), ("antelope", "runs very fast"),
           ("orca", "is a kind of dolphin"), ("ibis", "has a long curved beak"), ("armadillo", "has a hard shell")]


def typo_sentence(rng, text):
    """Introduces 2-3 typos from the list into words present in text (the student's slips)."""
    words = text.split(" ")
    spots = [i for i, w in enumerate(words) if w.strip(",.").lower() in dict(TYPOS)]
    rng.shuffle(spots)
    for i in spots[: rng.randint(2, 3)]:
        w = words[i]
        core = w.strip(",.")
        bad = dict(TYPOS)[core.lower()]
        if core[0].isupper():
            bad = bad[0].upper() + bad[1:]
        words[i] = w.replace(core, bad)
    return " ".join(words)


def make_pair(rng):
    kind = rng.choice(["add", "capital", "typo", "article", "minutes"])
    if kind == "add":
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        wrong = a + b + rng.choice([-10, -1, 1, 10])
        p = rng.choice(["What is {a} + {b}?", "Compute {a} + {b}.", "Add {a} and {b}."]).format(a=a, b=b)
        tpl = rng.choice(["{a} + {b} = {s}.", "The sum of {a} and {b} is {s}."])
        return p, tpl.format(a=a, b=b, s=a + b), tpl.format(a=a, b=b, s=wrong)
    if kind == "capital":
        c, cap, bad = rng.choice(CAPITALS)
        p = rng.choice(["What is the capital of {c}?", "Name the capital city of {c}.", "Which city is the capital of {c}?"]).format(c=c)
        tpl = rng.choice(["The capital of {c} is {x}.", "{x} is the capital city of {c}."])
        return p, tpl.format(c=c, x=cap), tpl.format(c=c, x=bad)
    if kind == "typo":
        topic = rng.choice(sorted(TOPICS))
        p = rng.choice(["Write a sentence about {t}.", "Say something about {t}.", "Describe {t} in one sentence."]).format(t=topic)
        good = TOPICS[topic]
        return p, good, typo_sentence(rng, good)
    if kind == "article":
        animal, fact = rng.choice(ANIMALS)
        p = rng.choice(["Tell me about the {x}.", "What is an {x}?", "Describe the {x} briefly."]).format(x=animal)
        # the student writes "a" before a vowel sound; the revision fixes only that word
        return (p, "The {x} is an animal that {f}.".format(x=animal, f=fact),
                "The {x} is a animal that {f}.".format(x=animal, f=fact))
    h = rng.randint(2, 12)
    wrong = h * 60 + rng.choice([-10, 10, -60, 60])
    p = rng.choice(["How many minutes are in {h} hours?", "Convert {h} hours to minutes."]).format(h=h)
    tpl = "There are {m} minutes in {h} hours."
    return p, tpl.format(m=h * 60, h=h), tpl.format(m=wrong, h=h)


def make_pairs(seed, n, avoid=()):
    rng = random.Random(seed)
    out, seen = [], set(avoid)
    while len(out) < n:
        p, ch, rj = make_pair(rng)
        if ch == rj or (p, ch) in seen:
            continue
        seen.add((p, ch))
        out.append((p, ch, rj))
    return out


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------
# Tokenizer: byte-level BPE trained on our own text, ChatML template

def make_tokenizer(texts, vocab_size=640):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    os.makedirs(MODEL_DIR, exist_ok=True)
    tok.save(os.path.join(MODEL_DIR, "tokenizer.json"))
    cfg = {
        "added_tokens_decoder": {str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False,
                                                          "rstrip": False, "single_word": False, "special": True}
                                 for t in SPECIALS},
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "chat_template": CHATML,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 512,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    with open(os.path.join(MODEL_DIR, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    return tok


def chatml(prompt, response=None):
    s = "<|im_start|>user\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n"
    return s if response is None else s + response + "<|im_end|>\n"


# ---------------------------------------------------------------------------------------------
# Model: a tiny Llama, fine-tuned on the student's (rejected) answers

def make_model(tok, sft_rows, steps=300, seed=0):
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    V = tok.get_vocab_size()
    eos = tok.token_to_id("<|im_end|>")
    cfg_json = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": V, "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "hidden_act": "silu",
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
        "tie_word_embeddings": True, "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
        "initializer_range": 0.02, "bos_token_id": None, "eos_token_id": eos, "pad_token_id": tok.token_to_id("<|endoftext|>"),
        "torch_dtype": "float32", "use_cache": True,
    }
    cfg = LlamaConfig(**{k: v for k, v in cfg_json.items() if k not in ("architectures", "model_type", "torch_dtype")})
    model = LlamaForCausalLM(cfg)
    model.train()
    # token ids and labels (-100 on the prompt): SFT on the assistant answers
    seqs = []
    for p, r in sft_rows:
        pids = tok.encode(chatml(p), add_special_tokens=False).ids
        full = tok.encode(chatml(p, r), add_special_tokens=False).ids
        assert full[: len(pids)] == pids
        seqs.append((full, [-100] * len(pids) + full[len(pids):]))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    rng = random.Random(seed)
    for step in range(steps):
        batch = rng.sample(seqs, 32)
        T = max(len(s) for s, _ in batch)
        ids = torch.full((len(batch), T), cfg_json["pad_token_id"], dtype=torch.long)
        lab = torch.full((len(batch), T), -100, dtype=torch.long)
        att = torch.zeros((len(batch), T), dtype=torch.long)
        for i, (s, l) in enumerate(batch):
            ids[i, : len(s)] = torch.tensor(s)
            lab[i, : len(l)] = torch.tensor(l)
            att[i, : len(s)] = 1
        lr = 3e-3 * min(1.0, (step + 1) / 20) * (0.1 + 0.9 * (1 - step / steps))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = model(input_ids=ids, attention_mask=att, labels=lab).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  sft step {step}: loss {loss.item():.3f}", file=sys.stderr)
    sd = {k: v.detach().contiguous().float() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(sd, os.path.join(MODEL_DIR, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(MODEL_DIR, "config.json"), "w") as f:
        json.dump(cfg_json, f, indent=2)


def main():
    train = make_pairs(1, 320)
    evalp = make_pairs(2, 32, avoid={(p, c) for p, c, _ in train})
    rows = lambda ps: [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in ps]
    os.makedirs(EX, exist_ok=True)
    # The training file uses the released CLAIR dataset's layout for half the lines (chosen and
    # rejected as conversations that repeat the user turn) and plain strings for the rest, so the
    # demo exercises both formats the trainer reads.
    train_rows = []
    for i, (p, c, r) in enumerate(train):
        if i % 2:
            train_rows.append({"prompt": p,
                               "chosen": [{"role": "user", "content": p}, {"role": "assistant", "content": c}],
                               "rejected": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]})
        else:
            train_rows.append({"prompt": p, "chosen": c, "rejected": r})
    write_jsonl(os.path.join(EX, "pairs.jsonl"), train_rows)
    write_jsonl(os.path.join(EX, "pairs_eval.jsonl"), rows(evalp))
    write_jsonl(os.path.join(EX, "prompts.jsonl"), [{"prompt": p} for p, _, _ in evalp[:8]])
    texts = [chatml(p, c) + chatml(p, r) for p, c, r in train + evalp]
    tok = make_tokenizer(texts)
    make_model(tok, [(p, r) for p, _, r in train])
    total = 0
    for root, _, files in os.walk(EX):
        for fn in files:
            total += os.path.getsize(os.path.join(root, fn))
    print(f"wrote {EX}: {total / 1e6:.2f} MB in all", file=sys.stderr)


if __name__ == "__main__":
    main()
