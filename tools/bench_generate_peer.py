#!/usr/bin/env python3
"""The peer of `distill bench generate`: transformers `generate` on the same
DeepSeek-V3-shaped model (random bf16 weights from the same config.json), the
same prompt length, tokens and sampling, on the same GPU.

usage: bench_generate_peer.py --model-config DIR [--prompt 128] [--new 256]
           [--conc 1,64,256] [--temperature 0.6] [--top-p 0.95] [--out FILE]

Prints one JSON line per concurrency (output tokens/s over the whole generate
call: prefill and decode, as a user of generate sees it) and writes them all to
--out. A concurrency that runs out of memory or time is reported as failed."""
import argparse, json, sys, time

import torch
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-config", required=True)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--conc", default="1,64,256")
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--budget-s", type=float, default=400, help="skip what would start after this")
    ap.add_argument("--out")
    a = ap.parse_args()
    raw = json.load(open(a.model_config + "/config.json"))
    keep = {k: v for k, v in raw.items() if k not in ("architectures", "model_type", "torch_dtype")}
    cfg = DeepseekV3Config(**keep, attn_implementation="sdpa")
    torch.manual_seed(0)
    t0 = time.time()
    with torch.device("cuda"):
        m = DeepseekV3ForCausalLM(cfg).to(torch.bfloat16)
    m.eval()
    print(f"peer: model made in {time.time() - t0:.1f} s, {sum(p.numel() for p in m.parameters()) / 1e9:.2f}B params",
          file=sys.stderr, flush=True)
    res = []
    start = time.time()
    with torch.no_grad():
        ids = torch.randint(0, cfg.vocab_size, (1, 16), device="cuda")
        m.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)  # warm-up
        for c in [int(x) for x in a.conc.split(",")]:
            if time.time() - start > a.budget_s:
                print(json.dumps({"bench": "generate_peer", "concurrency": c, "failed": "time budget"}), flush=True)
                continue
            try:
                ids = torch.randint(0, cfg.vocab_size, (c, a.prompt), device="cuda")
                torch.cuda.synchronize()
                t = time.time()
                out = m.generate(ids, max_new_tokens=a.new, min_new_tokens=a.new, do_sample=a.temperature > 0,
                                 temperature=a.temperature if a.temperature > 0 else None,
                                 top_p=a.top_p if a.temperature > 0 else None, top_k=0 if a.temperature > 0 else None)
                torch.cuda.synchronize()
                dt = time.time() - t
                r = {"bench": "generate_peer", "concurrency": c, "prompt": a.prompt, "new": a.new,
                     "output_tokens_per_second": round((out.shape[1] - a.prompt) * c / dt, 1), "wall_s": round(dt, 1),
                     "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1),
                     "torch": torch.__version__, "transformers": __import__("transformers").__version__}
            except Exception as e:  # out of memory at the largest concurrency, say
                r = {"bench": "generate_peer", "concurrency": c, "failed": repr(e)[:200]}
                torch.cuda.empty_cache()
            res.append(r)
            print(json.dumps(r), flush=True)
    if a.out:
        json.dump(res, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
