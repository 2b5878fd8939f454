#!/usr/bin/env bash
# parity.sh DISTILL_BIN FIXTURES_DIR SCRATCH_DIR - `distill parity` end to end:
# the dense fixtures pass with ok lines, so do the DeepSeek ones (the teacher),
# a missing folder exits 1, usage errors exit 2, --help 0.
set -euo pipefail

if [ $# -ne 3 ]; then
    echo "usage: $0 DISTILL_BIN FIXTURES_DIR SCRATCH_DIR" >&2
    exit 2
fi
BIN=$1
FIX=$2
TMP=$3
mkdir -p "$TMP"

failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

# run CMD...: sets rc, and the output in $TMP/out and $TMP/err
run() {
    set +e
    "$@" >"$TMP/out" 2>"$TMP/err"
    rc=$?
    set -e
}

for fx in tiny-qwen2 tiny-llama3; do
    run "$BIN" parity "$FIX/$fx"
    cat "$TMP/out"
    [ "$rc" -eq 0 ] || fail "$fx: exit $rc: $(cat "$TMP/err")"
    for check in logits generate kvcache loss grad adamw; do
        grep -q "^ok   $check " "$TMP/out" || fail "$fx: no 'ok $check' line"
    done
    if grep -q "^FAIL" "$TMP/out"; then fail "$fx: a FAIL line"; fi
    grep -q "step on reference grads" "$TMP/out" || fail "$fx: adamw line does not say what it checks"
    grep -q "^info adamw-e2e" "$TMP/out" || fail "$fx: no end-to-end adamw figure"
done

# the fixtures of several shapes (tools/refgen.py): tied/untied, GQA 1:1, 3:1,
# 4:1, rope default/linear/llama3, Llama biases, BF16 weights; each with the
# packed-row and gradient-accumulation references
for fx in tiny-qwen2-untied tiny-qwen2-mha tiny-llama32-tied tiny-llama-norope tiny-qwen2-bf16; do
    run "$BIN" parity "$FIX/$fx"
    [ "$rc" -eq 0 ] || fail "$fx: exit $rc: $(cat "$TMP/err") $(grep FAIL "$TMP/out")"
    for check in logits generate kvcache loss grad adamw packed accum; do
        grep -q "^ok   $check " "$TMP/out" || fail "$fx: no 'ok $check' line"
    done
    grep -q "^ok   accum    grad norm" "$TMP/out" || fail "$fx: no grad norm check"
    grep -q "AdamW after clipping" "$TMP/out" || fail "$fx: no clipped step check"
    if grep -q "^FAIL" "$TMP/out"; then fail "$fx: a FAIL line"; fi
    grep -c "^ok" "$TMP/out" | sed "s/^/$fx: ok lines: /"
done

run "$BIN" parity "$FIX/tiny-qwen2" --device cpu
[ "$rc" -eq 0 ] || fail "--device cpu: exit $rc"
run "$BIN" parity "$FIX/tiny-qwen2" --device cuda
[ "$rc" -eq 1 ] || fail "--device cuda: exit $rc, want 1"
grep -q "KD_E_UNSUPPORTED\|KD_E_CUDA" "$TMP/err" || fail "--device cuda: $(cat "$TMP/err")"
if ! nvidia-smi >/dev/null 2>&1; then # the teacher's CUDA path, on a machine without a GPU
    run "$BIN" parity "$FIX/tiny-deepseek-v3" --device cuda
    [ "$rc" -eq 1 ] && grep -q "KD_E_CUDA" "$TMP/err" || fail "teacher --device cuda without a GPU: $rc $(cat "$TMP/err")"
fi

# the teacher: DeepSeek-V3 (yarn, noaux_tc group-limited routing), V2 (softmax,
# group-limited greedy, routed scaling 16) and V2-Lite (no q_lora, greedy); MLA both ways
for fx in tiny-deepseek-v3 tiny-deepseek-v3-train tiny-deepseek-v2-lite tiny-deepseek-v2; do
    run "$BIN" parity "$FIX/$fx"
    cat "$TMP/out"
    [ "$rc" -eq 0 ] || fail "$fx: exit $rc: $(cat "$TMP/err") $(grep FAIL "$TMP/out")"
    for check in logits generate kvcache mla; do
        grep -q "^ok   $check " "$TMP/out" || fail "$fx: no 'ok $check' line"
    done
    if [ "$fx" = tiny-deepseek-v3-train ]; then # the MoE trains: loss, every gradient, one AdamW step
        grep -q "^ok   loss " "$TMP/out" || fail "$fx: no 'ok loss' line"
        [ "$(grep -c "^ok   grad " "$TMP/out")" -ge 20 ] || fail "$fx: fewer than 20 'ok grad' lines"
        grep -q "^ok   adamw " "$TMP/out" || fail "$fx: no 'ok adamw' line"
    fi
done
run "$BIN" parity "$FIX/tiny-deepseek-v3" --device cuda
[ "$rc" -eq 1 ] && grep -q "no CUDA backend" "$TMP/err" || fail "deepseek --device cuda: $rc $(cat "$TMP/err")"

run "$BIN" parity "$TMP/no-such-folder"
[ "$rc" -eq 1 ] || fail "missing folder: exit $rc, want 1"
grep -q "^error:" "$TMP/err" || fail "missing folder: no error line"

run "$BIN" parity
[ "$rc" -eq 2 ] || fail "no args: exit $rc, want 2"
run "$BIN" parity "$FIX/tiny-qwen2" --device tpu
[ "$rc" -eq 2 ] || fail "bad device: exit $rc, want 2"
run "$BIN" parity --help
[ "$rc" -eq 0 ] || fail "--help: exit $rc"
grep -q "usage: distill parity" "$TMP/out" || fail "--help: no usage"

if [ "$failures" -ne 0 ]; then
    echo "$failures failure(s)" >&2
    exit 1
fi
echo "parity.sh: all passed"
