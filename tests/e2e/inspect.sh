#!/usr/bin/env bash
# inspect.sh DISTILL_BIN FIXTURES_DIR SCRATCH_DIR - `distill inspect` end to end:
# each fixture passes with its parameter count (text and --json), a missing
# folder fails with exit 1 and an "error:" line, usage errors exit 2, --help 0.
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

# run CMD...: sets rc, and out/err to the files holding stdout/stderr
run() {
    rc=0
    "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
}

# total parameters of each fixture, from the sum of numel in its model.safetensors
declare -A TOTAL=(
    [tiny-qwen2]=435,328
    [tiny-llama3]=508,544
    [tiny-deepseek-v3]=4,346,112
    [tiny-deepseek-v3-train]=445,224
)

for name in tiny-qwen2 tiny-llama3 tiny-deepseek-v3 tiny-deepseek-v3-train; do
    want=${TOTAL[$name]}
    run "$BIN" inspect "$FIX/$name"
    if [ "$rc" -ne 0 ]; then
        fail "inspect $name exited $rc: $(cat "$TMP/err")"
    elif ! grep -q "parameters .*$want" "$TMP/out"; then
        fail "inspect $name does not print $want parameters:"; cat "$TMP/out" >&2
    fi

    run "$BIN" inspect --json "$FIX/$name"
    if [ "$rc" -ne 0 ]; then
        fail "inspect --json $name exited $rc: $(cat "$TMP/err")"
        continue
    fi
    got=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["params"]["total"])' <"$TMP/out") ||
        { fail "inspect --json $name: output is not JSON:"; cat "$TMP/out" >&2; continue; }
    if [ "$got" != "${want//,/}" ]; then
        fail "inspect --json $name: params.total is $got, want ${want//,/}"
    fi
done

# the option may also follow the folder
run "$BIN" inspect "$FIX/tiny-qwen2" --json
[ "$rc" -eq 0 ] && python3 -c 'import json,sys; json.load(sys.stdin)' <"$TMP/out" ||
    fail "inspect DIR --json: exit $rc or not JSON"

run "$BIN" inspect "$TMP/no-such-model"
[ "$rc" -eq 1 ] || fail "inspect of a missing folder exited $rc, want 1"
grep -q '^error: .*no-such-model' "$TMP/err" || { fail "no 'error:' line for a missing folder:"; cat "$TMP/err" >&2; }

run "$BIN" inspect
[ "$rc" -eq 2 ] || fail "inspect without DIR exited $rc, want 2"
grep -q '^error:' "$TMP/err" || fail "inspect without DIR printed no 'error:' line"

run "$BIN" inspect "$FIX/tiny-qwen2" extra
[ "$rc" -eq 2 ] || fail "inspect with two folders exited $rc, want 2"

run "$BIN" inspect --frobnicate "$FIX/tiny-qwen2"
[ "$rc" -eq 2 ] || fail "inspect with an unknown option exited $rc, want 2"

run "$BIN" inspect --help
[ "$rc" -eq 0 ] || fail "inspect --help exited $rc, want 0"
grep -q -- '--json' "$TMP/out" || fail "inspect --help does not document --json"
run "$BIN" inspect -h
[ "$rc" -eq 0 ] || fail "inspect -h exited $rc, want 0"

if [ "$failures" -ne 0 ]; then
    echo "$failures failure(s)" >&2
    exit 1
fi
echo "ok: inspect e2e"
