#!/usr/bin/env bash
# tour.sh DISTILL_BIN - what `make tour` runs: a walk through the commands one
# by one on real components (`make demo` runs the whole distillation instead,
# configs/demo.yaml):
#   1. inspect a DeepSeek-V3-architecture model written by HF transformers;
#   2. import R1-style traces with their verdicts into an LMDB dataset and show it;
#   3. render one trace with the DeepSeek-R1 chat template and tokenize it with the
#      real DeepSeek-V3 tokenizer, with the assistant-only loss mask;
#   4. check and print the runtime configuration;
#   5. fine-tune a small random Qwen2 (the real Qwen vocabulary) on R1-style chats with the
#      SFT trainer, and inspect its HF export;
#   6. sample traces from it for the imported problems with distill generate.
set -euo pipefail
bin=${1:?usage: tour.sh DISTILL_BIN}
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$(dirname "$bin")" && pwd)
fixtures=$build/fixtures
work=$build/tour
rm -rf "$work" && mkdir -p "$work"
say() { printf '\n== %s\n' "$*"; }

say "distill version"
"$bin" version

say "distill inspect $fixtures/tiny-deepseek-v3   (a tiny DeepSeek-V3 MoE written by transformers)"
"$bin" inspect "$fixtures/tiny-deepseek-v3"

say "distill data import $work/traces configs/demo/traces.jsonl --kind generations --verdict-field correct"
"$bin" data import "$work/traces" "$root/configs/demo/traces.jsonl" --kind generations \
  --verdict-field correct --teacher demo-teacher --seed 1234
"$bin" data stats "$work/traces"
"$bin" data head "$work/traces" -n 1

say "distill tokenize --template deepseek_r1 (ids and assistant-loss mask, real DeepSeek-V3 tokenizer)"
tokdir=${DISTILL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/distill}/tokenizers/deepseek_v3
printf '%s\n' '{"messages": [{"role": "user", "content": "What is 17 * 23?"}, {"role": "assistant", "content": "<think>\n17 * 20 + 17 * 3 = 391.\n</think>\nThe answer is \\boxed{391}."}]}' >"$work/chat.jsonl"
"$bin" tokenize --template deepseek_r1 --messages "$work/chat.jsonl" --text
"$bin" tokenize --template deepseek_r1 --messages "$work/chat.jsonl" --tokenizer "$tokdir"

say "distill config -c configs/runtime.yaml --set runtime.seed=7 --print-config"
"$bin" config -c "$root/configs/runtime.yaml" --set runtime.seed=7 --print-config

say "distill init + distill sft: a 2-layer Qwen2 of the real vocabulary (random weights) fine-tuned on R1-style chats"
qwen=${DISTILL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/distill}/tokenizers/qwen3
"$bin" init "$root/configs/models/tiny-qwen2" "$work/tiny-model" --tokenizer "$qwen" --seed 1
DISTILL_PROGRESS_SECONDS=2 "$bin" sft "$root/configs/sft/tiny_cpu.yaml" --set "model=$work/tiny-model" \
  --set "data.train=$root/tests/fixtures/sft/chats.jsonl" --set "output.dir=$work/sft" \
  --set train.max_steps=6 --set data.max_len=128
tail -n 3 "$work/sft/metrics.jsonl"
"$bin" inspect "$work/sft/final" | head -4

say "distill generate: R1-style sampling from the small model for the demo problems (2 samples each)"
"$bin" data import "$work/problems" "$root/configs/demo/traces.jsonl" --kind prompts >/dev/null
DISTILL_PROGRESS_SECONDS=2 "$bin" generate "$root/configs/generate/r1.yaml" --set "model=$work/sft/final" \
  --set "input=$work/problems" --set template=qwen3 --set samples=2 --set sampling.max_new_tokens=16
"$bin" data stats "$work/problems" | grep -E "^  generations|finish reason"

say "distill reject: verify the demo traces (math answers, format, language, readability) and keep the correct ones"
"$bin" data import "$work/judge" "$root/configs/demo/traces.jsonl" --kind generations >/dev/null
DISTILL_PROGRESS_SECONDS=0 "$bin" reject "$root/configs/reject/r1_math.yaml" --set "input=$work/judge" \
  --set text.think_in_prompt=false
"$bin" data export "$work/judge" --kind generations | head -n 1

say "distill verify --jsonl: one verdict per line (math here; code lines run in the sandbox)"
printf '%s\n' '{"gold": "$\\frac{1}{2}$", "pred": "The answer is \\boxed{0.5}"}' \
  '{"gold": "2^{64}", "pred": "\\boxed{2^{64}-1}"}' >"$work/verify.jsonl"
"$bin" verify --jsonl "$work/verify.jsonl"
