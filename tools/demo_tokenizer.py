#!/usr/bin/env python3
"""demo_tokenizer.py - train the demo's byte-level BPE tokenizer (HF tokenizer.json).

The demo (configs/demo.yaml) trains its teacher and student from scratch in
minutes on a CPU, so it cannot afford a 150K-token vocabulary: the embedding
and the output projection would be most of the compute. This script trains a
small byte-level BPE vocabulary on the demo's own problems, in the exact
tokenizer.json format of Qwen2/Qwen3 (the same pre-tokenizer regex, so digits
are single tokens; the ByteLevel byte map; NFC), and writes it with
tokenizer_config.json to configs/demo/tokenizer/. It is run once and its
output committed; any HF-compatible implementation loads the files (the e2e
test tokenizer_js checks `distill tokenize` against @lenml/tokenizers on it).

The committed files were made with exactly these commands (rerunning them
gives the same bytes):
    distill data problems /tmp/pp --steps-min 2 --steps-max 3 --max-operand 20 \
        --max-factor 5 --train 6000 --files-only
    tools/demo_tokenizer.py /tmp/pp/train_chats.jsonl /tmp/pp/gen_prompts.jsonl \
        configs/demo/tokenizer --vocab 640
"""
import argparse
import collections
import json
import os
import re

# The Qwen2 pre-tokenizer pattern, and an ASCII equivalent for training (the corpus is ASCII).
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
ASCII_PATTERN = re.compile(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\nA-Za-z0-9]?[A-Za-z]+|[0-9]| ?[^\sA-Za-z0-9]+[\r\n]*|"
                           r"\s*[\r\n]+|\s+(?!\S)|\s+")

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>",
           "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"]
NOT_SPECIAL = ["<think>", "</think>"]  # added tokens, as in Qwen3 and DeepSeek-R1


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def texts(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            o = json.loads(line)
            if "messages" in o:
                for m in o["messages"]:
                    yield m["content"]
            elif "problem" in o:
                yield o["problem"]


def train(corpus, vocab_size):
    b2u = bytes_to_unicode()
    words = collections.Counter()
    for t in corpus:
        for part in re.split(r"(<think>|</think>)", t):
            if part in NOT_SPECIAL:
                continue
            for w in ASCII_PATTERN.findall(part):
                words[tuple(b2u[b] for b in w.encode("utf-8"))] += 1
    # ids 0..255 in the byte map's order of bytes (printable first, as GPT-2/Qwen)
    order = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    order += [b for b in range(256) if b not in order]
    vocab = [b2u[b] for b in order]
    merges = []
    words = dict(words)
    while len(vocab) < vocab_size:
        pairs = collections.Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), c = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if c < 2:
            break
        merges.append((a, b))
        vocab.append(a + b)
        nw = {}
        for w, cnt in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            nw[tuple(out)] = nw.get(tuple(out), 0) + cnt
        words = nw
    return vocab, merges


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", nargs="+", help="JSONL files: chats (messages) or prompts (problem)")
    ap.add_argument("out", help="output folder")
    ap.add_argument("--vocab", type=int, default=640, help="BPE vocabulary before the added tokens")
    a = ap.parse_args()
    corpus = [t for p in a.corpus for t in texts(p)]
    corpus += ["user\nassistant\nsystem\n"] * 100  # the chat templates' role names
    vocab, merges = train(corpus, a.vocab)
    n = len(vocab)
    added = []
    for i, tok in enumerate(SPECIAL + NOT_SPECIAL):
        added.append({"id": n + i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": tok in SPECIAL})
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    tj = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN_PATTERN}, "behavior": "Isolated", "invert": False}, bl]},
        "post_processor": bl, "decoder": bl,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(vocab)}, "merges": [[x, y] for x, y in merges]},
    }
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False, indent=1)
        f.write("\n")
    cfg = {"add_bos_token": False, "add_prefix_space": False, "bos_token": None, "eos_token": "<|im_end|>",
           "pad_token": "<|endoftext|>", "model_max_length": 1024, "tokenizer_class": "Qwen2Tokenizer",
           "clean_up_tokenization_spaces": False, "errors": "replace", "split_special_tokens": False,
           "unk_token": None}
    with open(os.path.join(a.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{a.out}: {n} BPE tokens ({len(merges)} merges) + {len(added)} added = {n + len(added)}")


if __name__ == "__main__":
    main()
