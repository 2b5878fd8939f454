#!/usr/bin/env python3
"""bench_tokenizers.py TOKDIR CORPUS.jsonl [--repeat R] - the peer of `distill bench tokenize`:
HuggingFace `tokenizers` encode throughput on the same corpus, add_special_tokens=False.

TOKDIR is a folder with tokenizer.json. Reports, best of R passes (default 3):
  batch-1t  encode_batch in a child process with RAYON_NUM_THREADS=1 (Rust, one thread)
  loop-1t   encode() per text from Python, one thread (includes Python call overhead)
  batch-Nt  encode_batch on all cores (Rayon's default)
Prints one JSON object per line. Runs where `tokenizers` is installed (the GPU machine).
"""
import json, os, subprocess, sys, time

def load(path):
    data = open(path, "rb").read().decode("utf-8")
    return [json.loads(l)["text"] for l in data.split("\n") if l]

def run(tokdir, corpus, mode, repeat):
    from tokenizers import Tokenizer
    import tokenizers
    tok = Tokenizer.from_file(os.path.join(tokdir, "tokenizer.json"))
    texts = load(corpus)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    best, ntok = 1e30, 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        if mode == "loop-1t":
            encs = [tok.encode(t, add_special_tokens=False) for t in texts]
        else:
            encs = tok.encode_batch(texts, add_special_tokens=False)
        best = min(best, time.perf_counter() - t0)
        ntok = sum(len(e.ids) for e in encs)
    print(json.dumps({"peer": "hf-tokenizers", "version": tokenizers.__version__, "mode": mode,
                      "tokenizer": tokdir, "texts": len(texts), "bytes": nbytes, "tokens": ntok,
                      "mb_s": nbytes / 1e6 / best, "tok_s": ntok / best}), flush=True)

if __name__ == "__main__":
    tokdir, corpus = sys.argv[1], sys.argv[2]
    repeat = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 3
    if "--mode" in sys.argv:
        run(tokdir, corpus, sys.argv[sys.argv.index("--mode") + 1], repeat)
        sys.exit(0)
    env1 = dict(os.environ, RAYON_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    for mode, env in (("batch-1t", env1), ("loop-1t", env1), ("batch-Nt", os.environ)):
        subprocess.run([sys.executable, __file__, tokdir, corpus, "--mode", mode, "--repeat", str(repeat)],
                       env=env, check=True)
