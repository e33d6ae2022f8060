#!/usr/bin/python3
"""Writes tiny_str.json / tiny_pairs.json: a hand-made byte-level BPE tokenizer
(Qwen2 pipeline, 256 byte tokens + a few merges + added tokens) for unit tests.
Ids: byte b -> id b; merges below -> ids 256.. in order; added tokens after.
The two files differ only in the merges format ("a b" strings vs [a, b] pairs)."""
import json

QWEN_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"
              " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))

B2U = bytes_to_unicode()
MERGES = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("\u0120", "w"), ("o", "r"),
          ("\u0120w", "or"), ("\u0120wor", "l"), ("\u0120worl", "d"), ("a", "a"), ("aa", "aa")]
ADDED = [("<|end|>", True), ("<think>", False), ("<a>", True), ("<a>>", True)]

def build(pairs):
    vocab = {B2U[b]: b for b in range(256)}
    for a, b in MERGES:
        vocab[a + b] = len(vocab)
    added = []
    for content, special in ADDED:
        added.append({"id": len(vocab) + len(added), "content": content, "single_word": False,
                      "lstrip": False, "rstrip": False, "normalized": False, "special": special})
    merges = [[a, b] for a, b in MERGES] if pairs else [a + " " + b for a, b in MERGES]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN_REGEX}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": merges},
    }

for name, pairs in (("tiny_str.json", False), ("tiny_pairs.json", True)):
    with open(name, "w", encoding="utf-8") as f:
        json.dump(build(pairs), f, ensure_ascii=False, indent=1)
        f.write("\n")
