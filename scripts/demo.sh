#!/usr/bin/env bash
# demo.sh DISTILL_BIN - what `make demo` runs. Until the pipeline demo exists
# (teacher -> traces -> rejection -> student; see docs/roadmap.md), it runs the
# most complete path there is: inspect a DeepSeek-V3-architecture model made
# by HF transformers, then check and print the runtime configuration.
set -euo pipefail
bin=${1:?usage: demo.sh DISTILL_BIN}
root=$(cd "$(dirname "$0")/.." && pwd)
fixtures=$(dirname "$bin")/fixtures
echo "== distill version"
"$bin" version
echo
echo "== distill inspect $fixtures/tiny-deepseek-v3   (a tiny DeepSeek-V3 MoE written by transformers)"
"$bin" inspect "$fixtures/tiny-deepseek-v3"
echo
echo "== distill config -c configs/runtime.yaml --set runtime.seed=7 --print-config"
"$bin" config -c "$root/configs/runtime.yaml" --set runtime.seed=7 --print-config
