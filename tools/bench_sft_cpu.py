# bench_sft_cpu.py CONFIG_DIR [--seq T] [--batch B] [--steps N] - the PyTorch
# peer of `distill bench sft`: full training steps (forward, loss, backward,
# AdamW) of a transformers model with random weights of CONFIG_DIR/config.json,
# fp32 on the CPU, on random tokens, with torch.set_num_threads(OMP_NUM_THREADS).
# One untimed warm-up step, then N timed; prints median and best ms/step and
# tokens/s as one JSON line. Needs torch and transformers (the GPU machine).
import argparse, json, os, statistics, time
import torch
from transformers import AutoConfig, AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("config_dir")
ap.add_argument("--seq", type=int, default=512)
ap.add_argument("--batch", type=int, default=1)
ap.add_argument("--steps", type=int, default=3)
ap.add_argument("--attn", default="sdpa", help="attn_implementation: sdpa (default) or eager")
a = ap.parse_args()
threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count()))
torch.set_num_threads(threads)
torch.manual_seed(1)
cfg = AutoConfig.from_pretrained(a.config_dir)
cfg._attn_implementation = a.attn
model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
g = torch.Generator().manual_seed(7)
ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq), generator=g)
ms = []
for s in range(a.steps + 1):
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    if s:
        ms.append((time.perf_counter() - t0) * 1e3)
med = statistics.median(ms)
print(json.dumps({"bench": "sft", "peer": f"torch {torch.__version__} cpu fp32 {a.attn}",
                  "model_config": a.config_dir, "params": sum(p.numel() for p in model.parameters()),
                  "batch": a.batch, "seq": a.seq, "steps": a.steps, "threads": threads,
                  "ms_per_step_median": round(med, 1), "ms_per_step_best": round(min(ms), 1),
                  "tokens_per_second": round(a.batch * a.seq / (med / 1e3), 1), "loss": round(loss.item(), 6)}))
