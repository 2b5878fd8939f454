#!/usr/bin/env bash
# problems.sh DISTILL_BIN FIXTURES_DIR SCRATCH_DIR - `distill data problems`:
# the three JSONL files and datasets with the asked counts; every cold-start
# chat's boxed answer verifies against its answer (distill verify); a rerun
# does nothing; bad settings are refused.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 DISTILL_BIN FIXTURES_DIR SCRATCH_DIR" >&2; exit 2; }
BIN=$1
TMP=$3
rm -rf "$TMP" && mkdir -p "$TMP"
failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}
export DISTILL_PROGRESS_SECONDS=0

"$BIN" data problems "$TMP/p" --train 30 --gen 20 --heldout 10 --steps-min 2 --steps-max 5 >"$TMP/out" 2>&1 ||
    fail "problems: $(cat "$TMP/out")"
[ "$(wc -l <"$TMP/p/train_chats.jsonl")" -eq 30 ] || fail "train lines"
[ "$(wc -l <"$TMP/p/gen_prompts.jsonl")" -eq 20 ] || fail "gen lines"
[ "$(wc -l <"$TMP/p/heldout_prompts.jsonl")" -eq 10 ] || fail "heldout lines"
"$BIN" data stats "$TMP/p/heldout" | grep -Eq "^  prompts +10$" || fail "heldout dataset"
"$BIN" data stats "$TMP/p/train" | grep -Eq "^  prompts +30 +\(30 chats\)$" || fail "train dataset"
# the solver's chains of thought are right, by the verifier
python3 - "$TMP/p/train_chats.jsonl" >"$TMP/v.jsonl" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print(json.dumps({"gold": r["answer"], "pred": r["messages"][1]["content"], "question": r["messages"][0]["content"]}))
PY
"$BIN" verify --jsonl "$TMP/v.jsonl" -o "$TMP/v.out" 2>"$TMP/v.err" || fail "verify"
grep -q "30 lines, 30 accepted" "$TMP/v.err" || fail "cold-start CoT not all verified: $(cat "$TMP/v.err")"
"$BIN" data problems "$TMP/p" --train 30 --gen 20 --heldout 10 --steps-min 2 --steps-max 5 >/dev/null 2>&1 || fail "rerun"
"$BIN" data stats "$TMP/p/heldout" | grep -Eq "^  prompts +10$" || fail "rerun changed the heldout dataset"
"$BIN" data problems "$TMP/q" --steps-max 9 >/dev/null 2>"$TMP/err" && fail "steps-max 9 accepted"
grep -q "steps_max" "$TMP/err" || fail "steps-max 9: $(cat "$TMP/err")"
rc=0
"$BIN" data problems "$TMP/q" --train x >/dev/null 2>&1 || rc=$?
[ $rc -eq 2 ] || fail "--train x: exit $rc, not a usage error"
"$BIN" data problems >/dev/null 2>&1 && fail "no DIR accepted"
[ $failures -eq 0 ] || { echo "$failures failure(s)" >&2; exit 1; }
echo "problems: all checks passed"
