#!/usr/bin/env bash
# generate.sh DISTILL_BIN FIXTURES_DIR SCRATCH_DIR - `distill generate` end to
# end with a small random Qwen2 of the real Qwen vocabulary (a dense teacher):
# one record per (prompt, sample); killed with SIGKILL three times mid-job (each
# time after it committed some units, with samples in flight) and rerun, the
# dataset ends with every unit once and the same texts as an uninterrupted run
# (counter-based randomness); a prompt longer than the context is recorded as
# skipped; on the batched engine (paged cache, preemption) the dense teacher and
# a DeepSeek teacher give the same texts as one sample at a time; a kv pool
# that cannot hold one sample's sequence is refused before anything is
# generated, and one that just can (or the default pool with a prompt past
# 2048 tokens at batch 1) lets a sample alone run to its end; bad settings are
# refused before anything is generated.
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

"$BIN" init "$ROOT/configs/models/tiny-qwen2" "$TMP/model" --tokenizer "$TOK/qwen3" --seed 7 >/dev/null
python3 - "$TMP/p.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(5):
        f.write(json.dumps({"problem": f"What is {i} + {i * 3}?", "answer": str(4 * i)}) + "\n")
PY
for d in a b; do
    "$BIN" data import "$TMP/$d" "$TMP/p.jsonl" --kind prompts >/dev/null 2>&1 || fail "import $d"
done
GEN=(generate "$ROOT/configs/generate/r1.yaml" --set "model=$TMP/model" --set template=qwen3 --set samples=3
    --set sampling.max_new_tokens=40 --set commit_every=1 --set runtime.threads=1)
gen() { # DATASET [more --set ...]
    local ds=$1
    shift
    "$BIN" "${GEN[@]}" --set "input=$ds" "$@"
}
export_texts() { # DATASET -> prompt_id sample finish text, sorted
    "$BIN" data export "$1" --kind generations 2>/dev/null | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin]
for r in sorted(rows, key=lambda r: (r["prompt_id"], r["sample"])):
    print(r["prompt_id"], r["sample"], r["finish_reason"], json.dumps(r["generation"]))'
}

# 1. uninterrupted
gen "$TMP/a" >"$TMP/a.out" 2>"$TMP/a.err" || fail "generate a: $(tail -3 "$TMP/a.err")"
grep -q "15 units: 0 already there, 15 generated" "$TMP/a.out" || fail "generate a: $(cat "$TMP/a.out")"
grep -q "progress: generate" "$TMP/a.err" || fail "no progress lines"
[ "$(export_texts "$TMP/a" | wc -l)" -eq 15 ] || fail "a: not 15 records"

# 2. killed with SIGKILL three times mid-job, then finished. Two samples at a
#    time, so units finish and are committed one or two at a time (commit_every
#    1) while others run; each run is killed once the dataset holds 3 more
#    units than when it started
committed() { # DATASET -> generations in it
    local n
    n=$("$BIN" data stats "$1" 2>/dev/null | awk '$1 == "generations" {print $2; exit}') || true
    echo "${n:-0}"
}
there=0
kills=""
for k in 1 2 3; do
    # distill itself in the background (not `gen`, whose subshell a kill would
    # leave distill running)
    "$BIN" "${GEN[@]}" --set "input=$TMP/b" --set batch=2 >/dev/null 2>"$TMP/b$k.err" &
    pid=$!
    want=$((there + 3))
    while kill -0 $pid 2>/dev/null && [ "$(committed "$TMP/b")" -lt $want ]; do
        sleep 0.1
    done
    kill -9 $pid 2>/dev/null || true
    wait $pid 2>/dev/null || true
    now=$(export_texts "$TMP/b" | wc -l)
    [ "$now" -ge $want ] && [ "$now" -lt 15 ] ||
        fail "kill $k: $now units committed (wanted $want to 14): $(grep -v ^progress "$TMP/b$k.err" | tail -3)"
    there=$now
    kills="$kills $now"
done
gen "$TMP/b" --set batch=2 >"$TMP/b.out" 2>"$TMP/b.err" || fail "generate b: $(tail -3 "$TMP/b.err")"
echo "killed with$kills units committed, then: $(head -1 "$TMP/b.out")"
grep -q "15 units: $there already there, $((15 - there)) generated" "$TMP/b.out" || fail "b: $(cat "$TMP/b.out")"
[ "$there" -gt 0 ] || fail "the kills landed before any unit was committed"
# every (prompt, sample) once, nothing lost, and the uninterrupted run's texts
[ "$(export_texts "$TMP/b" | awk '{print $1, $2}' | sort -u | wc -l)" -eq 15 ] || fail "b: not 15 distinct units"
diff <(export_texts "$TMP/a") <(export_texts "$TMP/b") >/dev/null ||
    fail "killed and resumed run differs: $(diff <(export_texts "$TMP/a") <(export_texts "$TMP/b") | head -4)"
# a rerun of a finished job generates nothing
gen "$TMP/b" >"$TMP/b2.out" 2>/dev/null || fail "rerun"
grep -q "15 already there, 0 generated" "$TMP/b2.out" || fail "rerun generated: $(cat "$TMP/b2.out")"

# 3. a prompt longer than the context is recorded as skipped, with its reason
python3 -c 'import json; print(json.dumps({"problem": "word " * 5000, "answer": "x"}))' >"$TMP/long.jsonl"
"$BIN" data import "$TMP/c" "$TMP/long.jsonl" --kind prompts >/dev/null 2>&1
gen "$TMP/c" --set samples=1 >"$TMP/c.out" 2>&1 || fail "generate c: $(tail -3 "$TMP/c.out")"
grep -q "1 skipped" "$TMP/c.out" || fail "long prompt: $(cat "$TMP/c.out")"
"$BIN" data export "$TMP/c" --kind generations 2>/dev/null | grep -q '"finish_reason":"skipped".*does not fit the context' ||
    fail "long prompt: no skipped record with its reason"

# 3a. generations into another dataset: it gets the units' prompts too (lineage
#     copied), so reject and eval can read it alone
gen "$TMP/a" --set "output=$TMP/ao" --set samples=1 --set limit=2 >/dev/null 2>&1 || fail "generate to another dataset"
"$BIN" data stats "$TMP/ao" >"$TMP/ao.stats" 2>&1
grep -Eq "^  prompts +2$" "$TMP/ao.stats" || fail "output dataset prompts: $(head -8 "$TMP/ao.stats")"
aox=$("$BIN" data export "$TMP/ao" --kind generations 2>/dev/null)
grep -q '"problem":"What is 0 + 0?"' <<<"$aox" || fail "output dataset: generation without its prompt"

# 3b. the dense teacher on the engine: one sample at a time (batch 1) and a pool so
#     small that samples are preempted give the texts of run 1 (batch 16)
for d in q1 qp; do
    "$BIN" data import "$TMP/$d" "$TMP/p.jsonl" --kind prompts >/dev/null 2>&1
done
gen "$TMP/q1" --set batch=1 >/dev/null 2>"$TMP/q1.err" || fail "dense batch 1: $(tail -3 "$TMP/q1.err")"
gen "$TMP/qp" --set kv_block=4 --set kv_blocks=40 --set runtime.log_level=debug >/dev/null 2>"$TMP/qp.err" ||
    fail "dense small pool: $(tail -3 "$TMP/qp.err")"
grep -q "preempted" "$TMP/qp.err" || fail "dense: the small pool preempted nothing"
echo "dense engine: $(grep -c preempted "$TMP/qp.err") preemptions with a 40-block pool"
diff <(export_texts "$TMP/a") <(export_texts "$TMP/q1") >/dev/null || fail "dense batch 1 differs from batch 16"
diff <(export_texts "$TMP/a") <(export_texts "$TMP/qp") >/dev/null || fail "dense preempted run differs from batch 16"

# 3c. a kv pool that cannot hold one sample's whole sequence (prompt and
#     max_new_tokens) is refused before anything is generated, naming the keys;
#     with the smallest pool that can, three samples start together, are
#     preempted down to one, and that one alone fills the pool to its end: the
#     texts of run 1. (A lone sample that outgrew the pool used to end the job
#     with "kv pool full".)
"$BIN" data import "$TMP/k" "$TMP/p.jsonl" --kind prompts >/dev/null 2>&1
set +e
gen "$TMP/k" --set limit=1 --set kv_block=4 --set kv_blocks=14 >/dev/null 2>"$TMP/k.err"
krc=$?
set -e
[ $krc -eq 1 ] && grep -q "kv_blocks 14 of kv_block 4 positions) cannot hold prompt 0 alone" "$TMP/k.err" &&
    grep -q "raise kv_blocks (or kv_block), or lower sampling.max_new_tokens" "$TMP/k.err" ||
    fail "a pool too small for one sample: $(cat "$TMP/k.err")"
[ "$(export_texts "$TMP/k" | wc -l)" -eq 0 ] || fail "a refused pool generated something"
kneed=$(sed -n 's/.* need \([0-9]*\) blocks.*/\1/p' "$TMP/k.err")
gen "$TMP/k" --set limit=1 --set kv_block=4 --set "kv_blocks=${kneed:-0}" --set runtime.log_level=debug \
    >/dev/null 2>"$TMP/k.err" || fail "the smallest pool ($kneed blocks): $(grep -v ^progress "$TMP/k.err" | tail -3)"
grep -q "preempted" "$TMP/k.err" || fail "the smallest pool preempted nothing"
diff <(export_texts "$TMP/a" | awk '$1 == 0') <(export_texts "$TMP/k") >/dev/null ||
    fail "the smallest pool's run differs from batch 16"
echo "smallest pool: $kneed blocks of 4 for a prompt and 40 new tokens, $(grep -c preempted "$TMP/k.err") preemptions"
# the default pool (batch x (max_new_tokens + 2048) positions) grows to the
# longest prompt's sequence: a prompt past 2048 tokens at batch 1 runs
python3 -c 'import json; print(json.dumps({"problem": "word " * 2200, "answer": "x"}))' >"$TMP/long2.jsonl"
"$BIN" data import "$TMP/l" "$TMP/long2.jsonl" --kind prompts >/dev/null 2>&1
gen "$TMP/l" --set samples=1 --set batch=1 --set sampling.max_new_tokens=8 >"$TMP/l.out" 2>"$TMP/l.err" ||
    fail "a 2200-word prompt at batch 1: $(tail -3 "$TMP/l.err")"
grep -q "1 units: 0 already there, 1 generated, 0 skipped" "$TMP/l.out" || fail "long prompt, batch 1: $(cat "$TMP/l.out")"

# 5. a DeepSeek-V3 teacher (random weights, the real DeepSeek-V3 vocabulary) on the
#    engine: continuous batching over the paged cache gives the same texts as one
#    sample at a time, and so does a pool so small that samples are preempted and
#    recomputed
"$BIN" init "$ROOT/configs/models/tiny-deepseek-v3" "$TMP/ds" --tokenizer "$TOK/deepseek_v3" --seed 3 >/dev/null
for d in d1 d8 dp; do
    "$BIN" data import "$TMP/$d" "$TMP/p.jsonl" --kind prompts >/dev/null 2>&1
done
dsgen() { # DATASET [more --set ...]
    local ds=$1
    shift
    "$BIN" generate "$ROOT/configs/generate/r1.yaml" --set "model=$TMP/ds" --set "input=$ds" --set samples=3 \
        --set sampling.max_new_tokens=32 --set runtime.threads=2 "$@"
}
dsgen "$TMP/d1" --set batch=1 >/dev/null 2>"$TMP/d1.err" || fail "deepseek batch 1: $(tail -3 "$TMP/d1.err")"
dsgen "$TMP/d8" --set batch=8 >/dev/null 2>"$TMP/d8.err" || fail "deepseek batch 8: $(tail -3 "$TMP/d8.err")"
dsgen "$TMP/dp" --set batch=8 --set kv_block=4 --set kv_blocks=40 --set runtime.log_level=debug \
    >/dev/null 2>"$TMP/dp.err" || fail "deepseek small pool: $(tail -3 "$TMP/dp.err")"
grep -q "preempted" "$TMP/dp.err" || fail "the small pool preempted nothing"
echo "deepseek engine: $(grep -c preempted "$TMP/dp.err") preemptions with a 40-block pool"
[ "$(export_texts "$TMP/d1" | wc -l)" -eq 15 ] || fail "deepseek: not 15 records"
diff <(export_texts "$TMP/d1") <(export_texts "$TMP/d8") >/dev/null || fail "batch 8 differs from batch 1"
diff <(export_texts "$TMP/d1") <(export_texts "$TMP/dp") >/dev/null || fail "preempted run differs from batch 1"
# the thinking budget closes the reasoning: finish "budget", "</think>" in the text
"$BIN" data import "$TMP/db" "$TMP/p.jsonl" --kind prompts >/dev/null 2>&1
dsgen "$TMP/db" --set samples=1 --set sampling.thinking_budget=6 --set sampling.max_new_tokens=20 >/dev/null 2>&1 ||
    fail "thinking budget run"
export_texts "$TMP/db" | awk '{print $3}' | sort -u | grep -qx budget || fail "no finish 'budget'"
[ "$(export_texts "$TMP/db" | grep -c '</think>')" -eq 5 ] || fail "budget: </think> not forced in every text"
# a stop string ends the text where it starts: greedy once, then stop at a piece of it
"$BIN" data import "$TMP/dg" "$TMP/p.jsonl" --kind prompts >/dev/null 2>&1
dsgen "$TMP/dg" --set samples=1 --set limit=1 --set sampling.temperature=0 >/dev/null 2>&1 || fail "greedy run"
stop=$("$BIN" data export "$TMP/dg" --kind generations 2>/dev/null | python3 -c '
import json, sys
t = json.loads(sys.stdin.readline())["generation"]
print(t[len("<think>\n") + 12:len("<think>\n") + 18])')
"$BIN" data import "$TMP/ds2" "$TMP/p.jsonl" --kind prompts >/dev/null 2>&1
dsgen "$TMP/ds2" --set samples=1 --set limit=1 --set sampling.temperature=0 --set "sampling.stop=[\"$stop\"]" \
    >/dev/null 2>&1 || fail "stop string run"
python3 - "$("$BIN" data export "$TMP/dg" --kind generations 2>/dev/null)" \
    "$("$BIN" data export "$TMP/ds2" --kind generations 2>/dev/null)" "$stop" <<'PY' || fail "stop string: text not cut where it starts"
import json, sys
full, cut, stop = json.loads(sys.argv[1])["generation"], json.loads(sys.argv[2]), sys.argv[3]
assert cut["finish_reason"] == "stop", cut["finish_reason"]
assert cut["generation"] == full[:full.index(stop)], (cut["generation"], full, stop)
PY

rm -rf "$TMP/d2" && "$BIN" data import "$TMP/d2" "$TMP/p.jsonl" --kind prompts >/dev/null 2>&1
set +e
dsgen "$TMP/d2" --set kv_blocks=2 >/dev/null 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "raise kv_blocks" "$TMP/err" || fail "a pool too small for a prompt: $(cat "$TMP/err")"
set -e

# 4. bad settings
set +e
gen "$TMP/a" --set sampling.max_new_tokens=5000 >/dev/null 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "max_new_tokens 5000" "$TMP/err" || fail "max_new_tokens past the context: $(cat "$TMP/err")"
gen "$TMP/a" --set sampling.top_p=0 >/dev/null 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "top_p" "$TMP/err" || fail "top_p 0: $(cat "$TMP/err")"
gen "$TMP/nope" >/dev/null 2>"$TMP/err"
[ $? -eq 1 ] || fail "missing dataset"
gen "$TMP/a" --set "model=$TMP/nomodel" >/dev/null 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "nomodel" "$TMP/err" || fail "missing model: $(cat "$TMP/err")"
"$BIN" generate >/dev/null 2>&1
[ $? -eq 2 ] || fail "no config: not a usage error"
"$BIN" generate --help | grep -q "Rerun after a crash" || fail "--help"
# runtime.device cuda where there is no GPU (CI): a clear error, nothing generated
# (with a GPU, tools/device_run.sh gpugenjob runs it)
if ! "$BIN" version 2>/dev/null | grep -q "cuda:0"; then
    gen "$TMP/a" --set runtime.device=cuda >/dev/null 2>"$TMP/err"
    [ $? -eq 1 ] && grep -q "KD_E_CUDA" "$TMP/err" || fail "generate on cuda without a GPU: $(cat "$TMP/err")"
fi
set -e
if [ "$failures" -ne 0 ]; then
    echo "$failures failure(s)" >&2
    exit 1
fi
echo "generate.sh: all passed"
