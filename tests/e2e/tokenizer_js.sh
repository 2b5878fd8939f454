#!/usr/bin/env bash
# tokenizer_js.sh DISTILL_BIN FIXTURES_DIR SCRATCH_DIR - differential test of `distill tokenize`
# against the JavaScript port of HF tokenizers (@lenml/tokenizers, in tests/js), on 2000 seeded
# random Unicode strings for each of the Qwen3, Llama 3.1 and DeepSeek-V3 tokenizers, and for
# the demo's small BPE (configs/demo/tokenizer).
# Every difference is printed with the string that caused it; any difference fails the test.
# See tests/js/tokdiff.mjs for what it checks and the one documented class of JS bugs it excuses.
#
# Needs node, tests/js/node_modules and the tokenizer files: all three come from scripts/setup.sh
# (run with the same DISTILL_CACHE as the tests). FIXTURES_DIR (the unpacked HF model fixtures)
# is not used here; the tokenizer reference ids live in tests/fixtures/tokenizer.
set -euo pipefail
bin=${1:?usage: tokenizer_js.sh DISTILL_BIN FIXTURES_DIR SCRATCH_DIR}
scratch=${3:?usage: tokenizer_js.sh DISTILL_BIN FIXTURES_DIR SCRATCH_DIR}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

fail() { printf 'tokenizer_js: error: %s\n' "$*" >&2; exit 1; }
command -v node >/dev/null || fail "node is not installed: run scripts/setup.sh"
[ -d "$root/tests/js/node_modules/@lenml/tokenizers" ] ||
  fail "tests/js/node_modules/@lenml/tokenizers is missing: run scripts/setup.sh"
[ -x "$bin" ] || fail "'$bin' is not an executable"

mkdir -p "$scratch"
node "$root/tests/js/tokdiff.mjs" --distill "$bin" --scratch "$scratch" \
  --fixtures "$root/tests/fixtures/tokenizer" --n "${TOKDIFF_N:-2000}" --seed "${TOKDIFF_SEED:-1}"
# the demo's own small BPE (configs/demo/tokenizer, made by tools/demo_tokenizer.py)
exec node "$root/tests/js/tokdiff.mjs" --distill "$bin" --scratch "$scratch/demo" \
  --tokenizers "$root/configs/demo" --names tokenizer \
  --fixtures "$root/tests/fixtures/tokenizer" --n "${TOKDIFF_N:-2000}" --seed "${TOKDIFF_SEED:-1}"
