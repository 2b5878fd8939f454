#!/usr/bin/env bash
# run.sh DISTILL_BIN FIXTURES_DIR SCRATCH_DIR - `distill run` end to end: a
# five-stage pipeline (generate, reject, curate, sft, eval) on a small random
# Qwen2 and the demo traces runs every stage and writes its state, stage
# configs and report; a rerun skips every stage; `from` reruns a stage and the
# ones after it; a changed stage config reruns that stage and the later ones
# only; a bad `from` is refused. Stages that fit the runner's threads run at
# once unless one writes what the other names; a failed one lets the others
# finish, and the rerun keeps what they did. runtime.device cuda is taken by
# generate stages and refused by a reject stage.
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

"$BIN" init "$ROOT/configs/models/tiny-qwen2" "$TMP/model" --tokenizer "$TOK/qwen3" --seed 3 >/dev/null
"$BIN" data import "$TMP/traces" "$ROOT/configs/demo/traces.jsonl" --kind generations >/dev/null 2>&1 || fail "import"
python3 -c '
import json
for i in range(2):
    print(json.dumps({"problem": "What is %d + %d?" % (i, i + 1), "answer": str(2 * i + 1), "source": "toy"}))' >"$TMP/h.jsonl"
"$BIN" data import "$TMP/heldout" "$TMP/h.jsonl" --kind prompts >/dev/null 2>&1 || fail "import heldout"

write_pipeline() { # K (eval samples)
    cat >"$TMP/pipe.yaml" <<EOF
output: $TMP/pipe
stages:
  - generate:
      model: $TMP/model
      input: $TMP/traces
      samples: 3
      template: qwen3
      progress: false
      sampling: {max_new_tokens: 8}
      runtime: {threads: 1}
  - reject:
      input: $TMP/traces
      progress: false
      text: {think_in_prompt: false}
  - curate:
      input: $TMP/traces
      output: $TMP/cur
      steps:
        - filter: {where: "verdict == accepted"}
        - tokenize: {template: qwen3, tokenizer: $TOK/qwen3, max_tokens: 256}
  - sft:
      model: $TMP/model
      data: {train: $TMP/cur/final, eval_fraction: 0, max_len: 128}
      train: {max_steps: 2, micro_batch: 1, grad_accum: 1}
      output: {dir: $TMP/sft, progress: false, save_every: 0, eval_every: 0}
      runtime: {threads: 1}
  - eval:
      model: $TMP/sft/final
      input: $TMP/heldout
      output: $TMP/ev
      k: $1
      template: qwen3
      progress: false
      sampling: {max_new_tokens: 8}
      runtime: {threads: 1}
EOF
}

# 1. every stage runs
write_pipeline 2
"$BIN" run "$TMP/pipe.yaml" >"$TMP/r1.out" 2>"$TMP/r1.err" || fail "run: $(tail -5 "$TMP/r1.err")"
grep -q "run: 5 stages, 5 ran, 0 skipped" "$TMP/r1.out" || fail "first run: $(tail -3 "$TMP/r1.out")"
for f in pipeline.json report.json report.md stages/01-generate.yaml stages/05-eval.yaml; do
    [ -f "$TMP/pipe/$f" ] || fail "no $f"
done
python3 - "$TMP/pipe/report.json" <<'PY' || fail "report.json"
import json, sys
r = json.load(open(sys.argv[1]))
kinds = [s["kind"] for s in r["stages"]]
assert kinds == ["generate", "reject", "curate", "sft", "eval"], kinds
assert all(s["done"] for s in r["stages"]), r
assert r["stages"][1]["summary"]["kept"] == 4, r["stages"][1]["summary"]   # the demo traces' 4 correct samples
assert r["stages"][3]["summary"]["steps"] == 2, r["stages"][3]["summary"]
assert r["stages"][4]["summary"]["prompts"] == 2, r["stages"][4]["summary"]
print("report: 5 stages done; reject kept 4; sft 2 steps; eval over 2 prompts")
PY

# 2. a rerun skips every stage
"$BIN" run "$TMP/pipe.yaml" >"$TMP/r2.out" 2>&1 || fail "rerun"
grep -q "run: 5 stages, 0 ran, 5 skipped" "$TMP/r2.out" || fail "rerun: $(tail -2 "$TMP/r2.out")"

# 3. from=reject reruns reject and the three after it
"$BIN" run "$TMP/pipe.yaml" --set from=reject >"$TMP/r3.out" 2>&1 || fail "from reject: $(tail -3 "$TMP/r3.out")"
grep -q "run: 5 stages, 4 ran, 1 skipped" "$TMP/r3.out" || fail "from reject: $(tail -2 "$TMP/r3.out")"

# 4. a changed eval config reruns eval only
write_pipeline 3
"$BIN" run "$TMP/pipe.yaml" >"$TMP/r4.out" 2>&1 || fail "changed eval: $(tail -3 "$TMP/r4.out")"
grep -q "run: 5 stages, 1 ran, 4 skipped" "$TMP/r4.out" || fail "changed eval: $(tail -2 "$TMP/r4.out")"

# 5. bad settings
"$BIN" run "$TMP/pipe.yaml" --set from=nothing >/dev/null 2>"$TMP/err" && fail "from=nothing accepted"
grep -q "from 'nothing'" "$TMP/err" || fail "from=nothing: $(cat "$TMP/err")"
"$BIN" run "$TMP/pipe.yaml" --set from=9 >/dev/null 2>"$TMP/err" && fail "from=9 accepted"

# 6. two one-thread sfts on a two-thread runner run at once; the eval of the
#    first one's model waits for it (it names what that sft writes)
write_par() { # DATA_OF_THE_FIRST_SFT
    cat >"$TMP/par.yaml" <<EOF
output: $TMP/par
stages:
  - sft:
      model: $TMP/model
      data: {train: $1, eval_fraction: 0, max_len: 128}
      train: {max_steps: 3, micro_batch: 1, grad_accum: 1}
      output: {dir: $TMP/par-a, progress: false, save_every: 0, eval_every: 0}
      runtime: {threads: 1}
  - sft:
      model: $TMP/model
      data: {train: $TMP/cur/final, eval_fraction: 0, max_len: 128}
      train: {max_steps: 3, micro_batch: 1, grad_accum: 1}
      output: {dir: $TMP/par-b, progress: false, save_every: 0, eval_every: 0}
      runtime: {threads: 1}
  - eval:
      model: $TMP/par-a/final
      input: $TMP/heldout
      output: $TMP/par-ev
      k: 1
      template: qwen3
      progress: false
      sampling: {max_new_tokens: 4}
      runtime: {threads: 1}
runtime: {threads: 2}
EOF
}
write_par "$TMP/cur/final"
"$BIN" run "$TMP/par.yaml" >"$TMP/p1.out" 2>"$TMP/p1.err" || fail "parallel run: $(tail -5 "$TMP/p1.err")"
grep -q "run: 3 stages, 3 ran, 0 skipped" "$TMP/p1.out" || fail "parallel run: $(tail -3 "$TMP/p1.out")"
line() { grep -n -- "$1" "$TMP/p1.err" | head -1 | cut -d: -f1; }
s2=$(line "stage 2 of 3: sft"); d1=$(line "stage 1 (sft) done"); s3=$(line "stage 3 of 3: eval")
[ -n "$s2" ] && [ -n "$d1" ] && [ -n "$s3" ] || fail "parallel run log: $(cat "$TMP/p1.err")"
[ "${s2:-0}" -lt "${d1:-0}" ] || fail "the second sft did not start beside the first"
[ "${d1:-0}" -lt "${s3:-0}" ] || fail "the eval started before the sft whose model it samples had finished"
grep -q "info: 2 sft: " "$TMP/p1.err" || fail "the stages' lines are not tagged"
cmp -s "$TMP/par-a/final/model.safetensors" "$TMP/par-b/final/model.safetensors" ||
    fail "the same sft gave other weights beside another one"
#    a failed stage lets the running one finish (its state says so); the rerun starts
#    again from the failed stage, as a sequential one does
write_par "$TMP/no-such-dataset"
"$BIN" run "$TMP/par.yaml" --set from=1 >"$TMP/p2.out" 2>"$TMP/p2.err" && fail "a failed stage was not reported"
grep -q "stage 1 (sft)" "$TMP/p2.err" || fail "the failure does not name stage 1: $(tail -3 "$TMP/p2.err")"
grep -q "stage 2 (sft) done" "$TMP/p2.err" || fail "stage 2 did not finish beside the failed one"
grep -q "stage 3 of 3" "$TMP/p2.err" && fail "stage 3 started after stage 1 failed"
python3 - "$TMP/par/pipeline.json" <<'PY' || fail "state after the failure"
import json, sys
st = json.load(open(sys.argv[1]))["stages"]
assert [s["done"] for s in st[:2]] == [False, True], st
PY
write_par "$TMP/cur/final"
"$BIN" run "$TMP/par.yaml" >"$TMP/p3.out" 2>&1 || fail "rerun after the failure: $(tail -3 "$TMP/p3.out")"
grep -q "run: 3 stages, 3 ran, 0 skipped" "$TMP/p3.out" || fail "rerun after the failure: $(tail -2 "$TMP/p3.out")"

# runtime.device cuda in a stage: a reject stage refuses it before anything runs; a generate stage
# takes it (where there is no GPU, as in CI, its process fails with the CUDA error and nothing more runs)
cat >"$TMP/rcuda.yaml" <<EOF
output: $TMP/rcuda
stages:
  - reject:
      input: $TMP/traces
      runtime: {device: cuda}
EOF
"$BIN" run "$TMP/rcuda.yaml" >/dev/null 2>"$TMP/rc.err" && fail "a reject stage on cuda was accepted"
grep -q "runtime.device cuda is for generate, sft and cold_start stages" "$TMP/rc.err" ||
    fail "reject stage on cuda: $(cat "$TMP/rc.err")"
[ -e "$TMP/rcuda/stages/01-reject.yaml" ] && fail "reject stage on cuda: the stage was prepared"
if ! "$BIN" version 2>/dev/null | grep -q "cuda:0"; then
    cat >"$TMP/gcuda.yaml" <<EOF
output: $TMP/gcuda
stages:
  - generate:
      model: $TMP/model
      input: $TMP/traces
      samples: 1
      template: qwen3
      progress: false
      sampling: {max_new_tokens: 4}
      runtime: {device: cuda}
  - reject:
      input: $TMP/traces
      progress: false
EOF
    "$BIN" run "$TMP/gcuda.yaml" >"$TMP/gc.out" 2>&1 && fail "a generate stage on cuda without a GPU succeeded"
    grep -q "stage 1 (generate).*runtime.device is cuda" "$TMP/gc.out" ||
        fail "generate stage on cuda without a GPU: $(tail -3 "$TMP/gc.out")"
    grep -q "stage 2 of 2" "$TMP/gc.out" && fail "stage 2 started after the cuda stage failed"
    # two GPU stages with nothing in common and threads to spare: the second waits for the first
    # (which fails here), so it never starts; started beside it, it would print its line
    "$BIN" data import "$TMP/traces2" "$ROOT/configs/demo/traces.jsonl" --kind generations >/dev/null 2>&1 ||
        fail "import traces2"
    cat >"$TMP/g2cuda.yaml" <<EOF
output: $TMP/g2cuda
runtime: {threads: 2}
stages:
  - generate: {model: $TMP/model, input: $TMP/traces, samples: 1, template: qwen3, progress: false,
               sampling: {max_new_tokens: 4}, runtime: {device: cuda, threads: 1}}
  - generate: {model: $TMP/model, input: $TMP/traces2, samples: 1, template: qwen3, progress: false,
               sampling: {max_new_tokens: 4}, runtime: {device: cuda, threads: 1}}
EOF
    "$BIN" run "$TMP/g2cuda.yaml" >"$TMP/g2.out" 2>&1 && fail "two generate stages on cuda without a GPU succeeded"
    grep -q "stage 1 of 2" "$TMP/g2.out" || fail "two cuda stages: $(tail -3 "$TMP/g2.out")"
    grep -q "stage 2 of 2" "$TMP/g2.out" && fail "a second cuda stage started beside the first"
    # the same two on the CPU do run side by side (what the check above would miss otherwise)
    sed -e 's/device: cuda, //' -e "s|$TMP/g2cuda|$TMP/g2cpu|" "$TMP/g2cuda.yaml" >"$TMP/g2cpu.yaml"
    "$BIN" run "$TMP/g2cpu.yaml" >"$TMP/g2c.out" 2>&1 || fail "two generate stages on the CPU: $(tail -3 "$TMP/g2c.out")"
    grep -q "stage 2 of 2: generate.*beside the others" "$TMP/g2c.out" ||
        fail "two cpu stages did not run side by side: $(grep 'stage 2' "$TMP/g2c.out")"
fi

if [ $failures -ne 0 ]; then
    echo "$failures failure(s)" >&2
    exit 1
fi
echo "run: all checks passed"
