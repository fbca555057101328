#!/usr/bin/env python3
"""Tokenizer directories for the tokenization tests (tests/trainer/run.sh tokenize) and for
tools/gen_trl_tokenize_expected.py, made from the tiny tokenizers of tests/tokenizer/:

    tiny-llama3, tiny-smol, tiny-spm   as they are (no special token around plain text)
    tiny-spm-bos      as the hub's Llama 2 files: a TemplateProcessing post-processor that adds <s>,
                      tokenizer_class LlamaTokenizerFast, add_bos_token true
    tiny-llama3-bos   as the hub's Llama 3 files: ByteLevel + TemplateProcessing adding <|begin_of_text|>

    python3 tests/trainer/tok_variants.py OUT_DIR     # writes OUT_DIR/NAME/tokenizer*.json
Standard library only.
"""
import json, os, shutil, sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "tests", "tokenizer")
NAMES = ["tiny-llama3", "tiny-smol", "tiny-spm", "tiny-spm-bos", "tiny-llama3-bos"]


def template(tok, bos, before):
    """A TemplateProcessing post-processor putting `bos` before the text (after `before`, if any)."""
    bos_id = [t["id"] for t in tok["added_tokens"] if t["content"] == bos][0]
    tp = {"type": "TemplateProcessing",
          "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
          "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
          "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}}
    return {"type": "Sequence", "processors": [before, tp]} if before else tp


def make(out_dir):
    for name in NAMES:
        base = name.replace("-bos", "")
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        tok = json.load(open(os.path.join(TINY, base, "tokenizer.json"), encoding="utf-8"))
        cfg = json.load(open(os.path.join(TINY, base, "tokenizer_config.json"), encoding="utf-8"))
        if name == "tiny-spm-bos":
            cfg.update({"tokenizer_class": "LlamaTokenizerFast", "add_bos_token": True, "add_eos_token": False})
            tok["post_processor"] = template(tok, "<s>", None)
        if name == "tiny-llama3-bos":
            tok["post_processor"] = template(tok, "<|begin_of_text|>", {
                "type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True})
        json.dump(tok, open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False)
        json.dump(cfg, open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8"), ensure_ascii=False)
    return [os.path.join(out_dir, n) for n in NAMES]


if __name__ == "__main__":
    make(sys.argv[1])
