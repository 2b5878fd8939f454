#!/usr/bin/env python3
"""tokref.py - reference token ids from HuggingFace `tokenizers`, for tests/unit/test_tokenizer.c.

Runs on the GPU machine (where `tokenizers` 0.23 is installed); needs no GPU and no network.

    python3 tools/tokref.py CORPUS.jsonl TOKDIR OUTDIR [--suffix SUFFIX] [--names a,b,c]

CORPUS.jsonl  one {"text": ...} per line (tests/fixtures/tokenizer/wide_corpus.jsonl)
TOKDIR        holds <name>/tokenizer.json for each name: the layout setup.sh makes in
              $DISTILL_CACHE/tokenizers (copy that folder to the GPU machine)
OUTDIR        receives <name><SUFFIX> for each name, one line per corpus line, in the format of
              tests/fixtures/tokenizer/<name>.ids.jsonl: {"ids": [...], "roundtrip": bool}
              ids = Tokenizer.from_file(...).encode(text, add_special_tokens=False).ids
              roundtrip = (decode(ids, skip_special_tokens=False) == text)

--suffix defaults to ".wide.ids.jsonl" (what the unit test looks for next to wide_corpus.jsonl);
use ".ids.jsonl" with corpus.jsonl to remake the base fixtures. --names defaults to
qwen3,llama3_1,deepseek_v3.

Lines are split on "\\n" only: str.splitlines() would also split at U+2028, U+2029 and U+0085,
which occur inside texts (that mistake once damaged corpus.jsonl). Output JSON is ASCII-escaped
for the same reason.
"""
import argparse
import json
import os
import sys


def read_corpus(path):
    with open(path, "rb") as f:
        data = f.read().decode("utf-8")
    lines = data.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    texts = []
    for i, line in enumerate(lines, 1):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            sys.exit(f"tokref: {path}:{i}: not valid JSON: {e}")
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            sys.exit(f"tokref: {path}:{i}: expected {{\"text\": \"...\"}}")
        texts.append(obj["text"])
    return texts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("tokdir")
    ap.add_argument("outdir")
    ap.add_argument("--suffix", default=".wide.ids.jsonl")
    ap.add_argument("--names", default="qwen3,llama3_1,deepseek_v3")
    args = ap.parse_args()

    import tokenizers
    from tokenizers import Tokenizer

    print(f"tokref: tokenizers {tokenizers.__version__}", flush=True)
    texts = read_corpus(args.corpus)
    os.makedirs(args.outdir, exist_ok=True)
    for name in args.names.split(","):
        tok = Tokenizer.from_file(os.path.join(args.tokdir, name, "tokenizer.json"))
        out = os.path.join(args.outdir, name + args.suffix)
        same = 0
        with open(out, "w", encoding="ascii", newline="\n") as f:
            for text in texts:
                ids = tok.encode(text, add_special_tokens=False).ids
                back = tok.decode(ids, skip_special_tokens=False)
                same += back == text
                f.write(json.dumps({"ids": ids, "roundtrip": back == text}) + "\n")
        print(f"tokref: {out}: {len(texts)} lines, {same} round-trip", flush=True)


if __name__ == "__main__":
    main()
