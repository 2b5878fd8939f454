#!/usr/bin/env bash
# chat_jinja.sh DISTILL_BIN FIXTURES_DIR SCRATCH_DIR - differential test of distill's native chat
# templates (`distill tokenize --template`) against the real Jinja chat templates rendered by the
# HF Jinja engine (@huggingface/jinja, in tests/js), on 400 seeded conversations (each rendered
# with and without the generation prompt) for every template: chatml, qwen3, llama3, llama3_1,
# deepseek_v3, deepseek_r1. Text must match byte for byte; token ids must match @lenml/tokenizers
# on the Jinja text; the assistant mask is recomputed and compared. Every difference is printed
# with its conversation; any difference fails the test. See tests/js/chatdiff.mjs.
#
# Needs node, tests/js/node_modules and the tokenizer files: all three come from scripts/setup.sh
# (run with the same DISTILL_CACHE as the tests). FIXTURES_DIR is not used here.
set -euo pipefail
bin=${1:?usage: chat_jinja.sh DISTILL_BIN FIXTURES_DIR SCRATCH_DIR}
scratch=${3:?usage: chat_jinja.sh DISTILL_BIN FIXTURES_DIR SCRATCH_DIR}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

fail() { printf 'chat_jinja: error: %s\n' "$*" >&2; exit 1; }
command -v node >/dev/null || fail "node is not installed: run scripts/setup.sh"
[ -d "$root/tests/js/node_modules/@huggingface/jinja" ] ||
  fail "tests/js/node_modules/@huggingface/jinja is missing: run scripts/setup.sh"
[ -d "$root/tests/js/node_modules/@lenml/tokenizers" ] ||
  fail "tests/js/node_modules/@lenml/tokenizers is missing: run scripts/setup.sh"
[ -x "$bin" ] || fail "'$bin' is not an executable"

mkdir -p "$scratch"
exec node "$root/tests/js/chatdiff.mjs" --distill "$bin" --scratch "$scratch" \
  --n "${CHATDIFF_N:-400}" --seed "${CHATDIFF_SEED:-1}" --show "${CHATDIFF_SHOW:-1000000}"
