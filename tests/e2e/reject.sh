#!/usr/bin/env bash
# reject.sh DISTILL_BIN FIXTURES_DIR SCRATCH_DIR - `distill verify` and
# `distill reject` end to end: a verdict line per input line, in order, with
# bad lines reported and the stream going on; rejection sampling over an
# imported dataset of math and code prompts writes one verdict per sample
# with the expected reason, applies the policies (all, k, shortest) and the
# pass-rate window, prints the summary, skips finished prompts on request;
# bad settings are refused before anything is written; the cases of issue 7's
# audit of the math verifier get the verdicts a person would give.
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 DISTILL_BIN FIXTURES_DIR SCRATCH_DIR" >&2
    exit 2
fi
BIN=$1
TMP=$3
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$TMP" && mkdir -p "$TMP"
failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}
export DISTILL_PROGRESS_SECONDS=0

# 1. distill verify --jsonl: one line out per line in, in order
python3 - "$TMP/v.jsonl" <<'PY'
import json, sys
rows = [
    {"gold": "$\\frac{3}{4}$", "pred": "<think>\nadd\n</think>\nThe answer is $\\boxed{\\frac{3}{4}}$.", "expected": True},
    {"gold": "3/4", "pred": "so \\boxed{0.75}", "expected": True},
    {"gold": "3/4", "pred": "\\boxed{1/2}", "expected": False},
    {"gold": "2^{64}", "pred": "\\boxed{2^{64}-1}", "expected": False},
    {"gold": "3/4", "pred": "What is 1/2 + 1/4?", "question": "What is 1/2 + 1/4?", "expected": False},
    {"gold": "$\\{1, 2\\}$", "pred": "\\boxed{\\{2,1\\}}", "kind": "math", "expected": True},
    {"pred": "```python\na, b = map(int, input().split())\nprint(a + b)\n```", "kind": "code",
     "tests": {"inputs": ["1 2\n", "5 7\n"], "outputs": ["3\n", "12\n"]}, "expected": True},
    {"pred": "```python\nprint(0)\n```", "kind": "code",
     "tests": {"inputs": ["1 2\n"], "outputs": ["3\n"]}, "expected": False},
]
with open(sys.argv[1], "w") as f:
    for r in rows[:3]:
        f.write(json.dumps(r) + "\n")
    f.write("this is not json\n")
    for r in rows[3:]:
        f.write(json.dumps(r) + "\n")
    f.write(json.dumps({"gold": 3, "pred": "3"}) + "\n")
PY
"$BIN" verify --jsonl "$TMP/v.jsonl" -o "$TMP/v.out" 2>"$TMP/v.err" || fail "verify: $(cat "$TMP/v.err")"
python3 - "$TMP/v.out" <<'PY' || fail "verify output"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 10, len(rows)
want = [True, True, False, None, False, False, True, True, False, None]
for i, (r, w) in enumerate(zip(rows, want)):
    if w is None:
        assert r["verdict"] is False and r["reason"] == "bad_input", (i, r)
    else:
        assert r["verdict"] is w, (i, r)
        assert r["expected"] is w, (i, r)
assert rows[0]["extracted"] is not None
print("verify: 10 lines, 2 malformed, every verdict as expected")
PY
grep -q "agreement with \"expected\": 8/8" "$TMP/v.err" || fail "verify summary: $(cat "$TMP/v.err")"
"$BIN" verify >/dev/null 2>&1 && fail "verify without --jsonl succeeded"
"$BIN" verify --jsonl "$TMP/none.jsonl" >/dev/null 2>"$TMP/err" && fail "verify of a missing file succeeded"
grep -q "none.jsonl" "$TMP/err" || fail "missing file not named: $(cat "$TMP/err")"
# the public Math-Verify cases, each with its note's settings
"$BIN" verify --jsonl "$ROOT/bench/math_verify_public.jsonl" -o "$TMP/mv.out" 2>"$TMP/mv.err" ||
    fail "verify public cases: $(cat "$TMP/mv.err")"
echo "public cases: $(cat "$TMP/mv.err")"
[ "$(wc -l <"$TMP/mv.out")" -eq "$(wc -l <"$ROOT/bench/math_verify_public.jsonl")" ] || fail "public cases: line count"

# 2. a dataset: math prompts (one sample per line, scalar form) and a code prompt
python3 - "$TMP/g.jsonl" <<'PY'
import json, sys
T = "\nreasoning about the problem step by step.\n</think>\n\n"
rows = [
    # prompt 0: 4 samples, 2 correct (the second is longer), 1 wrong, 1 without an answer
    (0, 0, "What is 1/2 + 1/4?", "\\frac{3}{4}", T + "The answer is $\\boxed{\\frac{3}{4}}$."),
    (0, 1, "What is 1/2 + 1/4?", "\\frac{3}{4}", T + "Adding the fractions gives a final result of $\\boxed{0.75}$."),
    (0, 2, "What is 1/2 + 1/4?", "\\frac{3}{4}", T + "The answer is $\\boxed{\\frac{1}{2}}$."),
    (0, 3, "What is 1/2 + 1/4?", "\\frac{3}{4}", T + "I am not sure."),
    # prompt 1: 2 samples, both correct; a third only restates the question
    (1, 0, "What is 2 + 2?", "4", T + "$\\boxed{4}$"),
    (1, 1, "What is 2 + 2?", "4", T + "So it is $\\boxed{4}$."),
    (1, 2, "What is 2 + 2?", "4", T + "What is 2 + 2?"),
    # prompt 2: 2 samples, format broken (no </think>) and a repetition loop
    (2, 0, "What is 3 + 3?", "6", "I think the answer is \\boxed{6}"),
    (2, 1, "What is 3 + 3?", "6", "\nthe the the " + "and then again " * 400 + "\n</think>\n\n$\\boxed{6}$"),
]
with open(sys.argv[1], "w") as f:
    for pid, s, p, a, g in rows:
        f.write(json.dumps({"id": pid, "sample": s, "problem": p, "answer": a, "generation": g, "source": "toy"}) + "\n")
    tests = {"inputs": ["1 2\n", "10 20\n"], "outputs": ["3\n", "30\n"]}
    code = [
        "```python\na, b = map(int, input().split())\nprint(a + b)\n```",
        "```python\na, b = map(int, input().split())\nprint(a - b)\n```",
        "```python\nwhile True:\n    pass\n```",
    ]
    for s, c in enumerate(code):
        f.write(json.dumps({"id": 3, "sample": s, "problem": "Read two integers, print their sum.",
                            "generation": T + c, "tests": tests, "source": "code"}) + "\n")
PY
"$BIN" data import "$TMP/d" "$TMP/g.jsonl" --kind generations --id-field id --sample-field sample >/dev/null 2>"$TMP/err" ||
    fail "import: $(cat "$TMP/err")"
cp -r "$TMP/d" "$TMP/d2"
cp -r "$TMP/d" "$TMP/d3"
rj() { # DATASET [more --set ...]
    local ds=$1
    shift
    "$BIN" reject "$ROOT/configs/reject/r1_math.yaml" --set "input=$ds" --set code.cpu_seconds=1 \
        --set code.wall_seconds=2 --set code.workers=2 "$@"
}
verdicts() { # DATASET -> prompt sample accepted reason
    "$BIN" data export "$1" --kind generations 2>/dev/null | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin]
for r in sorted(rows, key=lambda r: (r["id"], r["sample"])):
    v = r.get("verdict") or {}
    print(r["id"], r["sample"], v.get("accepted"), v.get("reason"))'
}
rj "$TMP/d" >"$TMP/r.out" 2>"$TMP/r.err" || fail "reject: $(tail -3 "$TMP/r.err")"
cat "$TMP/r.out"
verdicts "$TMP/d" >"$TMP/r.v"
want="0 0 True correct
0 1 True correct
0 2 False wrong_answer
0 3 False no_answer
1 0 True correct
1 1 True correct
1 2 False no_answer
2 0 False unclosed_think
2 1 False repetition
3 0 True correct
3 1 False wrong_answer
3 2 False timeout"
diff <(echo "$want") "$TMP/r.v" >"$TMP/diff" || fail "verdicts (policy all): $(cat "$TMP/diff")"
grep -q "4 prompts, 12 samples: 5 correct" "$TMP/r.out" || fail "summary: $(head -1 "$TMP/r.out")"
grep -Eq "^ +toy +9 +4 +4" "$TMP/r.out" || fail "by source: $(cat "$TMP/r.out")"

# 3. policies: shortest keeps one per prompt; k=1 keeps the first; the pass-rate
#    window [0.1, 0.6] drops prompt 1 (2 of 3 correct) and prompt 2 (none)
rj "$TMP/d2" --set policy=shortest >/dev/null 2>&1 || fail "reject shortest"
v2=$(verdicts "$TMP/d2") # (captured: grep -q closing a pipe early would fail it under pipefail)
grep -q "^0 1 False policy" <<<"$v2" || fail "shortest: $v2"
grep -q "^0 0 True correct" <<<"$v2" || fail "shortest kept the wrong sample"
rj "$TMP/d3" --set policy=k --set k=1 --set pass_rate_min=0.1 --set pass_rate_max=0.6 >"$TMP/r3.out" 2>&1 ||
    fail "reject k window"
v3=$(verdicts "$TMP/d3")
grep -q "^0 0 True correct" <<<"$v3" || fail "k=1: first correct not kept"
grep -q "^0 1 False policy" <<<"$v3" || fail "k=1: second correct kept"
grep -q "^1 0 False pass_rate" <<<"$v3" || fail "window: prompt 1 kept: $v3"
grep -q "2 prompts outside the pass-rate window" "$TMP/r3.out" || fail "window count: $(head -1 "$TMP/r3.out")"

# 4. a rerun with skip_existing does nothing; without, it recomputes the same
rj "$TMP/d" --set skip_existing=true >"$TMP/r4.out" 2>&1 || fail "rerun"
grep -q "4 skipped" "$TMP/r4.out" || fail "skip_existing: $(head -1 "$TMP/r4.out")"
rj "$TMP/d" >/dev/null 2>&1 || fail "recompute"
diff <(verdicts "$TMP/d") "$TMP/r.v" >/dev/null || fail "recomputed verdicts differ"

# 5. bad settings: refused before anything is written
rj "$TMP/d" --set pass_rate_min=0.9 --set pass_rate_max=0.1 >/dev/null 2>"$TMP/err" && fail "min > max accepted"
grep -q "pass_rate_min" "$TMP/err" || fail "min > max: $(cat "$TMP/err")"
rj "$TMP/d" --set policy=best >/dev/null 2>"$TMP/err" && fail "unknown policy accepted"
rj "$TMP/d" --set nonsense=1 >/dev/null 2>"$TMP/err" && fail "unknown key accepted"
rj "$TMP/missing" >/dev/null 2>"$TMP/err" && fail "missing dataset accepted"

# 6. issue 7's audit through distill reject: dataset golds in bare LaTeX are
#    read whole (no "2" out of "2\sqrt{3}"), the last box after a correction
#    is the answer, expressions differ where they differ at negative points
#    (|x| is not x); and through distill verify (a reject would call it a
#    repetition first), a fraction nested past max_depth is not its core
python3 - "$TMP/a.jsonl" <<'PY'
import json, sys
T = "\nreasoning about the problem step by step.\n</think>\n\n"
rows = [
    ("2\\sqrt{3}", "The answer is $\\boxed{2}$."),
    ("2\\sqrt{3}", "The answer is $\\boxed{2\\sqrt{3}}$."),
    ("12\\pi", "The answer is $\\boxed{12}$."),
    ("12\\pi", "The answer is $\\boxed{12\\pi}$."),
    ("4i", "The answer is $\\boxed{4}$."),
    ("\\sqrt{2}", "The answer is $\\boxed{\\sqrt{2}}$."),
    ("(2,3)", "The answer is $\\boxed{(2,3)}$."),
    ("C", "The answer is $\\boxed{C}$."),
    ("x^2+1", "The answer is $\\boxed{1+x^2}$."),
    ("5", "I first got \\boxed{3}. Wait, that is wrong: \\boxed{5}"),
    ("3", "I first got \\boxed{3}. Wait, that is wrong: \\boxed{5}"),
    ("|x|", "The answer is $\\boxed{x}$."),
]
with open(sys.argv[1], "w") as f:
    for i, (a, g) in enumerate(rows):
        f.write(json.dumps({"id": i, "sample": 0, "problem": "Compute it.", "answer": a, "generation": T + g,
                            "source": "audit"}) + "\n")
PY
"$BIN" data import "$TMP/a" "$TMP/a.jsonl" --kind generations --id-field id --sample-field sample >/dev/null 2>"$TMP/err" ||
    fail "import audit: $(cat "$TMP/err")"
rj "$TMP/a" >/dev/null 2>"$TMP/err" || fail "reject audit: $(tail -3 "$TMP/err")"
want="0 0 False wrong_answer
1 0 True correct
2 0 False wrong_answer
3 0 True correct
4 0 False wrong_answer
5 0 True correct
6 0 True correct
7 0 True correct
8 0 True correct
9 0 True correct
10 0 False wrong_answer
11 0 False wrong_answer"
diff <(echo "$want") <(verdicts "$TMP/a") >"$TMP/diff" || fail "audit verdicts: $(cat "$TMP/diff")"
python3 -c '
import json
deep = "\\frac{1}{" * 400 + "2" + "}" * 400  # 1/2 at its core, 2 in all
print(json.dumps({"gold": "\\frac{1}{2}", "pred": "so \\boxed{" + deep + "}"}))' >"$TMP/deep.jsonl"
"$BIN" verify --jsonl "$TMP/deep.jsonl" 2>/dev/null | grep -q '"verdict":false,"reason":"too_large"' ||
    fail "deep fraction: $("$BIN" verify --jsonl "$TMP/deep.jsonl" 2>&1 | cut -c1-200)"

if [ $failures -ne 0 ]; then
    echo "$failures failure(s)" >&2
    exit 1
fi
echo "reject: all checks passed"
