#!/usr/bin/env bash
# sft.sh DISTILL_BIN FIXTURES_DIR SCRATCH_DIR - `distill init` and `distill sft`
# end to end with the real Qwen tokenizer: a random 2-layer Qwen2 of the real
# vocabulary trained on R1-style chats (JSONL, tokenized on the fly) and on a
# dataset made by `distill data tokenize`; stop and --resume equal to one run
# (a resume with other optimizer settings refused, one with another checkpoint
# cadence allowed); the export loads back; a dataset of another vocabulary, bad
# configs and usage errors are refused with clear messages.
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 DISTILL_BIN FIXTURES_DIR SCRATCH_DIR" >&2
    exit 2
fi
BIN=$1
TMP=$3
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TOK=${DISTILL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/distill}/tokenizers
rm -rf "$TMP" && mkdir -p "$TMP"
if [ ! -f "$TOK/qwen3/tokenizer.json" ] || [ ! -f "$TOK/llama3_1/tokenizer.json" ]; then
    echo "FAIL: tokenizers missing under $TOK (run scripts/setup.sh)" >&2
    exit 1
fi
failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}
run() {
    set +e
    "$@" >"$TMP/out" 2>"$TMP/err"
    rc=$?
    set -e
}
export DISTILL_PROGRESS_SECONDS=0

# a random model of the real vocabulary
run "$BIN" init "$ROOT/configs/models/tiny-qwen2" "$TMP/model" --tokenizer "$TOK/qwen3" --seed 3
[ "$rc" -eq 0 ] || fail "init: exit $rc: $(cat "$TMP/err")"
"$BIN" inspect "$TMP/model" | grep -q "vocab 151936" || fail "init: not the config's shape"

common=(--set "model=$TMP/model" --set "data.train=$ROOT/tests/fixtures/sft/chats.jsonl" --set data.max_len=128 --set train.micro_batch=1
        --set train.grad_accum=2 --set train.max_steps=4 --set output.eval_every=2
        --set output.save_every=2 --set runtime.threads=2)

# 1. JSONL chats, one run
run "$BIN" sft "$ROOT/configs/sft/tiny_cpu.yaml" "${common[@]}" --set "output.dir=$TMP/a"
[ "$rc" -eq 0 ] || fail "sft a: exit $rc: $(tail -3 "$TMP/err")"
grep -q "^sft: 4 steps" "$TMP/out" || fail "sft a: $(cat "$TMP/out")"
grep -q "progress: sft" "$TMP/err" || fail "sft a: no progress lines"
grep -q "loss .* lr .* gnorm .* tok/s" "$TMP/err" || fail "sft a: progress lacks loss/lr/gnorm/tok/s"
[ "$(grep -c '"loss"' "$TMP/a/metrics.jsonl")" -eq 4 ] || fail "sft a: metrics lines"
grep -q '"eval_loss"' "$TMP/a/metrics.jsonl" || fail "sft a: no eval loss"
[ -f "$TMP/a/final/model.safetensors" ] && [ -f "$TMP/a/final/tokenizer.json" ] &&
    [ -f "$TMP/a/final/generation_config.json" ] || fail "sft a: export incomplete"
grep -q "151645" "$TMP/a/final/generation_config.json" || fail "sft a: eos is not <|im_end|>"
"$BIN" inspect "$TMP/a/final" >/dev/null || fail "sft a: the export does not load"

# 2. the same, stopped after 1 step and resumed: every figure but the timings equal
run "$BIN" sft "$ROOT/configs/sft/tiny_cpu.yaml" "${common[@]}" --set "output.dir=$TMP/b" \
    --set train.stop_after=1
[ "$rc" -eq 0 ] || fail "sft b: exit $rc: $(tail -3 "$TMP/err")"
run "$BIN" sft "$ROOT/configs/sft/tiny_cpu.yaml" "${common[@]}" --set "output.dir=$TMP/b"
[ "$rc" -eq 1 ] && grep -q "already holds checkpoints" "$TMP/err" || fail "sft b: rerun without --resume: $rc"
# other optimizer settings on resume: refused, naming the first differing key and both values
run "$BIN" sft "$ROOT/configs/sft/tiny_cpu.yaml" "${common[@]}" --set "output.dir=$TMP/b" --resume \
    --set optim.lr=1e-2 --set optim.schedule=constant --set optim.weight_decay=0.5
[ "$rc" -eq 1 ] && grep -q "KD_E_CONFIG: checkpoint .* does not match this run: optim.lr is 0.001 there and 0.01 here" "$TMP/err" ||
    fail "resume with another lr: exit $rc: $(tail -3 "$TMP/err")"
run "$BIN" sft "$ROOT/configs/sft/tiny_cpu.yaml" "${common[@]}" --set "output.dir=$TMP/b" --resume \
    --set optim.schedule=constant
[ "$rc" -eq 1 ] && grep -q 'optim.schedule is "cosine" there and "constant" here' "$TMP/err" ||
    fail "resume with another schedule: exit $rc: $(tail -3 "$TMP/err")"
run "$BIN" sft "$ROOT/configs/sft/tiny_cpu.yaml" "${common[@]}" --set "output.dir=$TMP/b" --resume \
    --set optim.weight_decay=0.5
[ "$rc" -eq 1 ] && grep -q "optim.weight_decay is 0 there and 0.5 here" "$TMP/err" ||
    fail "resume with another weight decay: exit $rc: $(tail -3 "$TMP/err")"
# ... while the output's cadence may change (and the refusals above changed nothing)
run "$BIN" sft "$ROOT/configs/sft/tiny_cpu.yaml" "${common[@]}" --set "output.dir=$TMP/b" --resume \
    --set output.save_every=1 --set output.keep_last=5 --set output.progress=false
[ "$rc" -eq 0 ] || fail "sft b resume: exit $rc: $(tail -3 "$TMP/err")"
strip() { sed 's/, "step_seconds".*//' "$1"; }
diff <(strip "$TMP/a/metrics.jsonl") <(strip "$TMP/b/metrics.jsonl") >/dev/null ||
    fail "resume: metrics differ: $(diff <(strip "$TMP/a/metrics.jsonl") <(strip "$TMP/b/metrics.jsonl") | head -5)"
cmp -s "$TMP/a/final/model.safetensors" "$TMP/b/final/model.safetensors" || fail "resume: exports differ"

# 3. a dataset tokenized by `distill data tokenize` with the model's tokenizer trains
"$BIN" data import "$TMP/chats" "$ROOT/tests/fixtures/sft/chats.jsonl" --kind chats >/dev/null 2>&1 ||
    fail "import chats"
run "$BIN" data tokenize "$TMP/chats" "$TMP/tok-qwen" --template chatml --tokenizer "$TOK/qwen3" --no-progress
[ "$rc" -eq 0 ] || fail "tokenize qwen: $(cat "$TMP/err")"
run "$BIN" sft "$ROOT/configs/sft/tiny_cpu.yaml" "${common[@]}" --set "output.dir=$TMP/c" \
    --set "data.train=$TMP/tok-qwen" --set train.max_steps=2 --set output.export=false
[ "$rc" -eq 0 ] || fail "sft from a dataset: exit $rc: $(tail -3 "$TMP/err")"

# 4. ... but one tokenized with another vocabulary (Llama 3.1's) is refused
run "$BIN" data tokenize "$TMP/chats" "$TMP/tok-llama" --template llama3_1 --tokenizer "$TOK/llama3_1" --no-progress
[ "$rc" -eq 0 ] || fail "tokenize llama: $(cat "$TMP/err")"
run "$BIN" sft "$ROOT/configs/sft/tiny_cpu.yaml" "${common[@]}" --set "output.dir=$TMP/d" \
    --set "data.train=$TMP/tok-llama"
[ "$rc" -eq 1 ] && grep -q "tokenized with another vocabulary" "$TMP/err" ||
    fail "another vocabulary: exit $rc: $(cat "$TMP/err")"

# 5. hostile JSONL chats: each refused with FILE:LINE and why
good='{"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]}'
check_bad() { # LINE2 EXPECTED
    printf '%s\n%s\n' "$good" "$1" >"$TMP/bad.jsonl"
    run "$BIN" sft "$ROOT/configs/sft/tiny_cpu.yaml" "${common[@]}" --set "output.dir=$TMP/f" \
        --set "data.train=$TMP/bad.jsonl"
    [ "$rc" -eq 1 ] && grep -q "bad.jsonl:2: .*$2" "$TMP/err" || fail "bad jsonl '$1': exit $rc: $(cat "$TMP/err")"
}
check_bad '{"messages": [' "expected near end of file"
check_bad '[1, 2]' "not a JSON object"
check_bad '{"messages": "hi"}' "must be a non-empty array"
check_bad '{"messages": []}' "must be a non-empty array"
check_bad '{"messages": [{"role": "user"}]}' "needs string"
check_bad '{"messages": [{"role": "tool", "content": "x"}]}' "tool"
printf '%s\n' "$good" "$good" | sed 's/"2"/"\xff"/' >"$TMP/bad.jsonl"
run "$BIN" sft "$ROOT/configs/sft/tiny_cpu.yaml" "${common[@]}" --set "output.dir=$TMP/f" --set "data.train=$TMP/bad.jsonl"
[ "$rc" -eq 1 ] || fail "invalid UTF-8 in a chat: exit $rc"

# 6. bad configs and usage
printf 'model: x\ndata:\n  max_lenn: 5\n' >"$TMP/bad.yaml"
run "$BIN" sft "$TMP/bad.yaml"
[ "$rc" -eq 1 ] && grep -q "bad.yaml:3:3: data.max_lenn" "$TMP/err" || fail "unknown key: $rc $(cat "$TMP/err")"
run "$BIN" sft "$ROOT/configs/sft/tiny_cpu.yaml" --set optim.lr=-1
[ "$rc" -eq 1 ] && grep -q "optim.lr" "$TMP/err" || fail "negative lr: $rc $(cat "$TMP/err")"
run "$BIN" sft "$ROOT/configs/sft/tiny_cpu.yaml" --set "model=$TMP/nope" --set "output.dir=$TMP/e"
[ "$rc" -eq 1 ] && grep -q "nope" "$TMP/err" || fail "missing model: $rc $(cat "$TMP/err")"
run "$BIN" sft
[ "$rc" -eq 2 ] || fail "no config: exit $rc"
run "$BIN" sft --bogus
[ "$rc" -eq 2 ] || fail "bad option: exit $rc"
run "$BIN" sft --help
[ "$rc" -eq 0 ] && grep -q -- "--resume" "$TMP/out" || fail "--help"
grep -q "runtime.device picks the backend" "$TMP/out" || fail "--help names the device"
# the CUDA trainer where there is no GPU (CI): a clear error, nothing trained
if ! "$BIN" version 2>/dev/null | grep -q "cuda:0"; then
    run "$BIN" sft "$ROOT/configs/sft/tiny_cpu.yaml" "${common[@]}" --set "output.dir=$TMP/g" --set runtime.device=cuda
    [ "$rc" -eq 1 ] && grep -q "KD_E_CUDA" "$TMP/err" && [ ! -e "$TMP/g/metrics.jsonl" ] \
        || fail "sft on cuda without a GPU: $rc $(cat "$TMP/err")"
    run "$BIN" bench sft --model-config "$ROOT/configs/models/tiny-qwen2" --device cuda --seq 64
    [ "$rc" -eq 1 ] && grep -q "KD_E_CUDA" "$TMP/err" || fail "bench sft --device cuda without a GPU: $rc $(cat "$TMP/err")"
    run "$BIN" bench generate --model-config "$ROOT/configs/models/tiny-deepseek-v3" --conc 2 --new 4
    [ "$rc" -eq 1 ] && grep -q "KD_E_CUDA" "$TMP/err" || fail "bench generate without a GPU: $rc $(cat "$TMP/err")"
fi
# bench generate's usage errors (checked before any GPU work)
run "$BIN" bench generate --model-config "$ROOT/configs/models/tiny-deepseek-v3" --dtype fp16
[ "$rc" -eq 2 ] && grep -q "bf16 or fp8" "$TMP/err" || fail "bench generate --dtype fp16: $rc $(cat "$TMP/err")"
run "$BIN" bench generate --model-config "$ROOT/configs/models/tiny-deepseek-v3" --conc 4,0
[ "$rc" -eq 2 ] && grep -q "conc" "$TMP/err" || fail "bench generate --conc 4,0: $rc $(cat "$TMP/err")"
run "$BIN" bench generate --model-config "$ROOT/configs/models/tiny-deepseek-v3" --split-kv 65
[ "$rc" -eq 2 ] && grep -q "split-kv" "$TMP/err" || fail "bench generate --split-kv 65: $rc $(cat "$TMP/err")"
run "$BIN" bench generate --top-p 1.5 --model-config "$ROOT/configs/models/tiny-deepseek-v3"
[ "$rc" -eq 2 ] && grep -q "top-p" "$TMP/err" || fail "bench generate --top-p 1.5: $rc $(cat "$TMP/err")"
run "$BIN" bench generate
[ "$rc" -eq 2 ] && grep -q "model-config" "$TMP/err" || fail "bench generate without a model: $rc $(cat "$TMP/err")"
run "$BIN" bench generate --help
[ "$rc" -eq 0 ] && grep -q "roofline" "$TMP/out" || fail "bench generate --help"
run "$BIN" bench sft --model-config "$ROOT/configs/models/tiny-qwen2" --device tpu
[ "$rc" -eq 2 ] && grep -q "cpu or cuda" "$TMP/err" || fail "bench sft --device tpu: $rc $(cat "$TMP/err")"
run "$BIN" bench sft --model-config "$ROOT/configs/models/tiny-qwen2" --docs 4 --seq 64
[ "$rc" -eq 2 ] && grep -q "device cuda" "$TMP/err" || fail "bench sft --docs on the CPU: $rc $(cat "$TMP/err")"
run "$BIN" sft "$ROOT/configs/sft/tiny_cpu.yaml" --print-config
[ "$rc" -eq 0 ] && grep -q "grad_clip: 1" "$TMP/out" || fail "--print-config"
run "$BIN" init "$ROOT/configs/models/tiny-qwen2"
[ "$rc" -eq 2 ] || fail "init without OUT: exit $rc"
run "$BIN" init "$ROOT/tests/fixtures" "$TMP/x"
[ "$rc" -eq 1 ] || fail "init without config.json: exit $rc"

if [ "$failures" -ne 0 ]; then
    echo "$failures failure(s)" >&2
    exit 1
fi
echo "sft e2e: all checks passed"
