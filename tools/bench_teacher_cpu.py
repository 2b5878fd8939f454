# bench_teacher_cpu.py MODEL_DIR [--prompt P] [--new N] [--batch B,B,...] - the
# PyTorch peer of `distill bench teacher`: a deepseek_v3/v2 or dense qwen2/llama
# model folder (e.g. from `distill init`) loaded with transformers' native classes,
# fp32 on the CPU, with torch.set_num_threads(OMP_NUM_THREADS). For each batch
# size B, like ours: B prompts of P random ids (generator seeded 11 per B),
# prefilled one sequence at a time, each into its own DynamicCache (prefill
# tokens/s = B*P / prefill s); the B caches are then joined along the batch dim
# (untimed) and N decode steps of all B sequences run together, one random id
# per sequence per step (decode tokens/s = B*N / decode s). Logits: last token
# only in prefill (logits_to_keep=1 where supported), all B in decode, as ours.
# One untimed warm-up (short prefill + one decode step) first. Prints one JSON
# line per batch size, with our keys. Difference from ours (DeepSeek): HF's MLA decompresses
# the latent into full per-head K/V and caches those (also in decode), while our
# decode uses the absorbed form over a paged latent cache. Needs torch and
# transformers >= 4.5x (DeepSeek built in; no trust_remote_code).
import argparse, inspect, json, os, time
import torch
import transformers
from transformers import AutoModelForCausalLM, DynamicCache

ap = argparse.ArgumentParser()
ap.add_argument("model_dir")
ap.add_argument("--prompt", type=int, default=128)
ap.add_argument("--new", type=int, default=32)
ap.add_argument("--batch", default="1,4,16", help="comma-separated batch sizes")
ap.add_argument("--attn", default="sdpa", help="attn_implementation: sdpa (default) or eager")
a = ap.parse_args()
batches = [int(b) for b in a.batch.split(",") if b]
if a.prompt <= 0 or a.new <= 0 or not batches or min(batches) <= 0:
    ap.error("--prompt, --new and --batch take positive integers")
thr = os.environ.get("OMP_NUM_THREADS")
torch.set_num_threads(int(thr) if thr else os.cpu_count())
model = AutoModelForCausalLM.from_pretrained(a.model_dir, torch_dtype=torch.float32,
                                             attn_implementation=a.attn).eval()
V, P, N = model.config.vocab_size, a.prompt, a.new
params = inspect.signature(model.forward).parameters
keep = {"logits_to_keep": 1} if "logits_to_keep" in params else \
       {"num_logits_to_keep": 1} if "num_logits_to_keep" in params else {}


def layers_kv(cache):
    """[(keys, values)] per layer: cache.layers[i].keys/.values (newer
    transformers) or cache.key_cache/.value_cache lists (older)."""
    if hasattr(cache, "layers"):
        return [(l.keys, l.values) for l in cache.layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache))
    return [cache[i] for i in range(len(cache))]


def join_caches(caches):
    """One DynamicCache holding the per-sequence caches stacked on the batch dim;
    update() on an empty DynamicCache exists in both API generations."""
    out = DynamicCache()
    per = [layers_kv(c) for c in caches]
    for i in range(len(per[0])):
        out.update(torch.cat([p[i][0] for p in per], 0), torch.cat([p[i][1] for p in per], 0), i)
    return out


def prefill(ids):
    cache = DynamicCache()
    pos = torch.arange(ids.shape[1]).unsqueeze(0)
    model(input_ids=ids, position_ids=pos, past_key_values=cache, use_cache=True, **keep)
    return cache


def decode(cache, ids, at):
    pos = torch.full((ids.shape[0], 1), at, dtype=torch.long)
    return model(input_ids=ids, position_ids=pos, past_key_values=cache, use_cache=True).logits


with torch.inference_mode():
    g = torch.Generator().manual_seed(11)  # warm-up, untimed
    w = min(P, 8)
    decode(join_caches([prefill(torch.randint(0, V, (1, w), generator=g))]),
           torch.randint(0, V, (1, 1), generator=g), w)
    for B in batches:
        g = torch.Generator().manual_seed(11)
        t0 = time.perf_counter()
        caches = [prefill(torch.randint(0, V, (1, P), generator=g)) for _ in range(B)]
        t_pre = time.perf_counter() - t0
        cache = join_caches(caches)
        del caches
        t0 = time.perf_counter()
        for s in range(N):
            decode(cache, torch.randint(0, V, (B, 1), generator=g), P + s)
        t_dec = time.perf_counter() - t0
        del cache
        print(json.dumps({"bench": "teacher", "backend": "pytorch-cpu-fp32", "model": a.model_dir,
                          "batch": B, "prompt": P, "new": N, "threads": thr or "all",
                          "prefill_tokens_per_second": round(B * P / t_pre, 1),
                          "decode_tokens_per_second": round(B * N / t_dec, 1),
                          "decode_ms_per_step": round(t_dec * 1e3 / N, 2),
                          "attn": a.attn, "torch": torch.__version__,
                          "transformers": transformers.__version__}), flush=True)
