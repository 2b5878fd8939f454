#!/usr/bin/env python3
"""The PyTorch peer of `distill bench sft --device cuda`: a full fine-tune step of a
HF transformers model (random weights, the shape of a config.json) with bf16
autocast, fp32 master weights and fused AdamW, on random tokens with labels = ids
(every token a target, one document per row), timed after warm-up.

  python3 tools/bench_sft_peer.py --model-config configs/models/qwen2.5-1.5b \\
      --run 4096x2 --run 8192x1 --run 8192x1:compile --run 16384x1:ckpt --run 32768x1

Each --run is SEQxBATCH with optional :compile (torch.compile) and :ckpt
(gradient checkpointing). Prints one JSON line per run (tokens_per_s, mfu,
peak_mem_gib, or "error": "out of memory ..."), and writes them all to --out.
MFU counts 6 x params + 6 x layers x seq x hidden FLOPs per token (causal
attention), against 989 TFLOP/s (H100 SXM dense bf16), as the distill bench does.
Needs torch and transformers (on the GPU machine).
"""
import argparse
import json
import time

PEAK = 989e12


def run_one(cfg_path, seq, bsz, compile_, ckpt, steps):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(cfg_path)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device("cuda"):
        m = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").float()
    if ckpt:
        m.gradient_checkpointing_enable()
    m.train()
    n = sum(p.numel() for p in m.parameters())
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5, fused=True)
    fwd = torch.compile(m) if compile_ else m
    ids = torch.randint(0, cfg.vocab_size, (bsz, seq), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fwd(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    try:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
        t = time.time()
        for _ in range(steps):
            loss = step()
        torch.cuda.synchronize()
        dt = (time.time() - t) / steps
        tok = bsz * seq / dt
        L, d = cfg.num_hidden_layers, cfg.hidden_size
        mfu = tok * (6 * n + 6 * L * seq * d) / PEAK
        res = {"tokens_per_s": round(tok, 1), "mfu": round(mfu, 4), "ms_per_step": round(dt * 1e3, 1),
               "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "params": n,
               "loss": round(float(loss), 4)}
    except torch.OutOfMemoryError as e:
        res = {"error": "out of memory: " + str(e)[:160]}
    del m, opt, fwd
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-config", required=True, help="folder with config.json")
    ap.add_argument("--run", action="append", required=True, help="SEQxBATCH[:compile][:ckpt]")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per run (default 5)")
    ap.add_argument("--out", help="write the results as one JSON object here")
    a = ap.parse_args()
    import torch
    import transformers

    res = {"torch": torch.__version__, "transformers": transformers.__version__,
           "gpu": torch.cuda.get_device_name(0), "runs": {}}
    for spec in a.run:
        parts = spec.split(":")
        seq, bsz = (int(x) for x in parts[0].split("x"))
        r = run_one(a.model_config, seq, bsz, "compile" in parts[1:], "ckpt" in parts[1:], a.steps)
        res["runs"][spec] = r
        print(json.dumps({"run": spec, **r}), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
