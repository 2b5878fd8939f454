#!/usr/bin/env bash
# eval.sh DISTILL_BIN FIXTURES_DIR SCRATCH_DIR - `distill eval` end to end:
# the figures (pass@1, cons@k, pass@k, per source) on generations whose
# correctness is known, computed by hand here; then a real run that samples a
# small random model k times per prompt into an output dataset, verifies the
# samples and writes eval.json; bad settings are refused.
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
failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}
export DISTILL_PROGRESS_SECONDS=0

# 1. known generations (model: ~): 3 prompts x 4 samples
#    p0 (src a): answers 4,4,5,-  -> 2/4 correct, majority 4 correct, pass@k 1
#    p1 (src a): answers 7,7,6,6  -> 2/4 correct (gold 6): tie 7/6, first seen (7) wins: cons 0
#    p2 (src b): answers 1,2,3,9  -> 0/4, cons 0, pass@k 0
python3 - "$TMP/g.jsonl" <<'PY'
import json, sys
T = "\nworking\n</think>\n\n"
data = [(0, "a", "4", ["4", "4", "5", None]), (1, "a", "6", ["7", "7", "6", "6"]), (2, "b", "8", ["1", "2", "3", "9"])]
with open(sys.argv[1], "w") as f:
    for pid, src, gold, answers in data:
        for s, a in enumerate(answers):
            g = T + ("The answer is $\\boxed{%s}$." % a if a else "I do not know.")
            f.write(json.dumps({"id": pid, "sample": s, "problem": "Problem %d?" % pid, "answer": gold,
                                "generation": g, "source": src}) + "\n")
PY
"$BIN" data import "$TMP/known" "$TMP/g.jsonl" --kind generations --id-field id --sample-field sample >/dev/null 2>&1 ||
    fail "import"
"$BIN" eval "$ROOT/configs/eval/r1.yaml" --set 'model=~' --set "input=$TMP/known" --set k=4 >"$TMP/e1.out" 2>&1 ||
    fail "eval known: $(tail -3 "$TMP/e1.out")"
cat "$TMP/e1.out"
python3 - "$TMP/known/eval.json" <<'PY' || fail "figures"
import json, sys
e = json.load(open(sys.argv[1]))
close = lambda a, b: abs(a - b) < 1e-9
assert close(e["pass1"], (2/4 + 2/4 + 0) / 3), e["pass1"]
assert close(e["cons_k"], 1/3), e["cons_k"]
assert close(e["pass_k"], 2/3), e["pass_k"]
a, b = e["by_source"]["a"], e["by_source"]["b"]
assert a["prompts"] == 2 and b["prompts"] == 1 and a["samples"] == 8, e["by_source"]
assert close(a["pass1"], 0.5) and close(a["cons_k"], 0.5) and close(a["pass_k"], 1.0), a
assert close(b["pass1"], 0) and b["correct"] == 0, b
print("eval figures: pass@1 %.4f cons@k %.4f pass@k %.4f as computed by hand" % (e["pass1"], e["cons_k"], e["pass_k"]))
PY

# 2. a real run: a small random Qwen2, k = 2 samples of 3 held-out prompts
"$BIN" init "$ROOT/configs/models/tiny-qwen2" "$TMP/model" --tokenizer "$TOK/qwen3" --seed 3 >/dev/null
python3 -c '
import json
for i in range(3):
    print(json.dumps({"problem": "What is %d + %d?" % (i, i + 1), "answer": str(2 * i + 1), "source": "toy"}))' >"$TMP/h.jsonl"
"$BIN" data import "$TMP/heldout" "$TMP/h.jsonl" --kind prompts >/dev/null 2>&1 || fail "import heldout"
"$BIN" eval "$ROOT/configs/eval/r1.yaml" --set "model=$TMP/model" --set "input=$TMP/heldout" \
    --set "output=$TMP/ev" --set k=2 --set template=qwen3 --set sampling.max_new_tokens=12 \
    --set runtime.threads=1 >"$TMP/e2.out" 2>&1 || fail "eval run: $(tail -3 "$TMP/e2.out")"
grep -q "over 3 prompts (6 samples)" "$TMP/e2.out" || fail "eval run: $(cat "$TMP/e2.out")"
[ -f "$TMP/ev/eval.json" ] || fail "no eval.json"
"$BIN" data stats "$TMP/ev" | grep -Eq "^  verdicts +6$" || fail "samples not kept with verdicts"
# a rerun generates nothing new and gives the same figures
"$BIN" eval "$ROOT/configs/eval/r1.yaml" --set "model=$TMP/model" --set "input=$TMP/heldout" \
    --set "output=$TMP/ev" --set k=2 --set template=qwen3 --set sampling.max_new_tokens=12 \
    --set runtime.threads=1 >"$TMP/e3.out" 2>&1 || fail "eval rerun"
grep -q "0 samples generated (6 already there)" "$TMP/e3.out" || fail "rerun generated: $(cat "$TMP/e3.out")"

# 3. bad settings
"$BIN" eval "$ROOT/configs/eval/r1.yaml" --set k=0 >/dev/null 2>"$TMP/err" && fail "k=0 accepted"
"$BIN" eval "$ROOT/configs/eval/r1.yaml" --set 'input=~' --set 'model=~' >/dev/null 2>"$TMP/err" && fail "no input accepted"
grep -q "input" "$TMP/err" || fail "no input: $(cat "$TMP/err")"
# eval runs on the CPU: runtime.device cuda is refused, saying so (generate is the command that takes it)
"$BIN" eval "$ROOT/configs/eval/r1.yaml" --set 'model=~' --set "input=$TMP/known" --set runtime.device=cuda \
    >/dev/null 2>"$TMP/err" && fail "eval on cuda accepted"
grep -q "CPU reference backend" "$TMP/err" || fail "eval on cuda: $(cat "$TMP/err")"

if [ $failures -ne 0 ]; then
    echo "$failures failure(s)" >&2
    exit 1
fi
echo "eval: all checks passed"
