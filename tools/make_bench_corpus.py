#!/usr/bin/env python3
"""make_bench_corpus.py OUT.jsonl [MB] - a large mixed corpus for `distill bench tokenize`.

Texts: the tokenizer fixture corpora (prose, random Unicode, the wide corpus of code, LaTeX,
CJK, Arabic, Cyrillic, emoji), the Math-Verify cases (LaTeX answers), and this repository's
C sources and Markdown, cut into documents of about 4 KB. The set is cycled until the output
holds MB megabytes (default 16) of UTF-8 text; MB = 0 writes each distinct document once (a
cold-cache corpus, for one pass). Deterministic; lines are split on "\\n" only.
"""
import json, os, sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out, mb = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 16.0
docs = []
for rel in ["tests/fixtures/tokenizer/corpus.jsonl", "tests/fixtures/tokenizer/wide_corpus.jsonl"]:
    data = open(os.path.join(root, rel), "rb").read().decode("utf-8")
    for line in data.split("\n"):
        try:
            docs.append(json.loads(line)["text"])
        except Exception:
            pass  # the shared corpus.jsonl has 4 records split at U+2028; skip the pieces
for line in open(os.path.join(root, "bench/math_verify_public.jsonl"), encoding="utf-8"):
    c = json.loads(line)
    docs.append(f"The reference answer is {c['gold']}. The model wrote: {c['pred']}")
for d, _, files in sorted(os.walk(root)):
    if any(p in d for p in ("/build", "/.git", "node_modules", "/tests/fixtures")):
        continue
    for f in sorted(files):
        if f.endswith((".c", ".h", ".md", ".py", ".sh", ".yaml")):
            text = open(os.path.join(d, f), encoding="utf-8", errors="replace").read()
            docs += [text[i:i + 4096] for i in range(0, len(text), 4096)]
target, size, n = int(mb * 1e6), 0, 0
with open(out, "w", encoding="utf-8") as o:
    while size < target or (target == 0 and n < len(docs)):
        t = docs[n % len(docs)]
        o.write(json.dumps({"text": t}, ensure_ascii=True) + "\n")
        size += len(t.encode("utf-8"))
        n += 1
print(f"{out}: {n} texts, {size / 1e6:.2f} MB from {len(docs)} distinct documents")
