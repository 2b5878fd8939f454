#!/usr/bin/env bash
# demo.sh DISTILL_BIN FIXTURES_DIR SCRATCH_DIR - the demo end to end, shortened:
# `distill demo --quick` on configs/demo.yaml (its outputs moved to the scratch
# folder) runs every stage (problems, init, cold start of the DeepSeek-V3
# teacher, generate, reject, curate x2, init, sft x2, eval x4) and writes a
# well-formed report.json and report.md with the demo's figures and bars; a
# rerun skips every stage. Then a pipeline killed (SIGKILL) in the middle of
# the teacher's cold start resumes from its last checkpoint when rerun, and
# finishes with one loss line per step.
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

# the demo's own config, its outputs under TMP and its inputs found from anywhere
sed -e "s|runs/demo|$TMP/demo|g" -e "s|configs/demo/|$ROOT/configs/demo/|g" "$ROOT/configs/demo.yaml" >"$TMP/demo.yaml"

if ! "$BIN" demo -c "$TMP/demo.yaml" --quick >"$TMP/demo.out" 2>"$TMP/demo.err"; then
    fail "distill demo --quick failed"
    tail -n 30 "$TMP/demo.err" >&2
fi
out=$(cat "$TMP/demo.out")
case $out in *"report: $TMP/demo/report.json"*) ;; *) fail "the report's path is not printed: $out" ;; esac
python3 - "$TMP/demo" <<'EOF' || fail "report.json"
import json, os, sys
d = sys.argv[1]
r = json.load(open(os.path.join(d, "report.json")))
kinds = [s["kind"] for s in r["stages"]]
want = ["problems", "init", "cold_start", "generate", "reject", "curate", "curate", "init", "sft", "sft",
        "eval", "eval", "eval", "eval"]
assert kinds == want, kinds
assert all(s["done"] for s in r["stages"]), [s["kind"] for s in r["stages"] if not s["done"]]
for k in ("teacher_pass1", "student_pass1", "baseline_pass1", "unfiltered_pass1", "acceptance"):
    assert isinstance(r[k], float) and 0 <= r[k] <= 1, (k, r[k])
# quick: 12 generation prompts x 4 samples
assert r["generated"] == 48, r["generated"]
assert 0 <= r["accepted"] <= r["generated"], r["accepted"]
assert abs(r["acceptance"] - r["accepted"] / r["generated"]) < 1e-12
assert r["quick"] is True
assert r["wall_seconds"] > 0 and len(r["stage_seconds"]) == 14
# stages that ran at once count once: between the longest stage and the sum, within this run's time
secs = [s["seconds"] for s in r["stage_seconds"]]
assert max(secs) - 1e-3 <= r["wall_seconds"] <= min(sum(secs), r["run_seconds"]) + 1e-3, (secs, r)
assert len(r["bars"]) == 6 and all(isinstance(b["pass"], bool) and b["detail"] for b in r["bars"])
# each eval's pass@1 is the one its own eval.json holds
names = {"teacher": "teacher_pass1", "student": "student_pass1", "baseline": "baseline_pass1",
         "unfiltered": "unfiltered_pass1"}
for s in r["stages"]:
    if s["kind"] == "eval":
        e = json.load(open(s["summary"]["report"]))
        assert e["name"] == s["summary"]["name"] and abs(e["pass1"] - r[names[e["name"]]]) < 1e-12, e["name"]
# the teacher's cold start trained the DeepSeek model: its export is a deepseek_v3 folder
c = json.load(open(os.path.join(d, "teacher", "final", "config.json")))
assert c["model_type"] == "deepseek_v3", c["model_type"]
for p in ("loss", "acceptance", "lengths", "pass1"):
    assert os.path.getsize(os.path.join(d, "plots", p + ".svg")) > 0, p
md = open(os.path.join(d, "report.md")).read()
assert "## The demo" in md and "| teacher (DeepSeek-V3 MoE, cold-started) |" in md
EOF
# the student saw only accepted traces: its examples number the accepted samples
acc=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["accepted"])' "$TMP/demo/report.json" 2>/dev/null || echo x)
stats=$("$BIN" data stats "$TMP/demo/sft-accepted/final" 2>/dev/null || true)
n=$(printf '%s\n' "$stats" | grep -E '^  examples +[0-9]+' | head -n1 | grep -Eo '[0-9]+$' || true)
[ -n "$n" ] && [ "$n" = "$acc" ] || fail "the accepted set has '$n' examples, the report says $acc accepted"

# an sft stage with nothing to learn fails, unless data.allow_empty (then the model is exported unchanged)
printf '%s\n' '{"messages": [{"role": "user", "content": "What is 1 + 1?"}]}' >"$TMP/none.jsonl"
SFT=(sft "$ROOT/configs/sft/tiny_cpu.yaml" --set "model=$TMP/demo/models/student-init" --set "data.train=$TMP/none.jsonl"
     --set data.template=qwen3 --set "data.tokenizer=$ROOT/configs/demo/tokenizer" --set output.progress=false)
if "$BIN" "${SFT[@]}" --set "output.dir=$TMP/empty1" >"$TMP/empty1.out" 2>&1; then
    fail "sft trained on nothing without data.allow_empty"
fi
err=$(cat "$TMP/empty1.out")
case $err in *"no usable train example"*) ;; *) fail "empty training set: unclear error: $err" ;; esac
"$BIN" "${SFT[@]}" --set "output.dir=$TMP/empty2" --set data.allow_empty=true >"$TMP/empty2.out" 2>&1 ||
    fail "sft with data.allow_empty failed: $(cat "$TMP/empty2.out")"
cmp -s "$TMP/empty2/final/model.safetensors" "$TMP/demo/models/student-init/model.safetensors" ||
    fail "data.allow_empty did not export the model unchanged"

# a rerun skips everything
"$BIN" demo -c "$TMP/demo.yaml" --quick >"$TMP/demo2.out" 2>&1 || fail "demo rerun"
rerun=$(cat "$TMP/demo2.out")
case $rerun in *"14 stages, 0 ran, 14 skipped"*) ;; *) fail "the rerun ran stages: $(grep 'stages,' "$TMP/demo2.out")" ;; esac

# a changed config of both students: those stages and the later ones rerun, each from scratch
# (the old checkpoints of the second student do not match its new batch and must be cleared)
python3 - "$TMP/demo.yaml" <<'EOF'
import re, sys
lines = open(sys.argv[1]).read().split("\n")
kind = None
for i, l in enumerate(lines):
    m = re.match(r"  - (\w+):", l)
    if m:
        kind = m.group(1)
    if kind == "sft":
        lines[i] = re.sub(r"micro_batch: (\d+)", lambda m: "micro_batch: %d" % (int(m.group(1)) + 1), l)
open(sys.argv[1], "w").write("\n".join(lines))
EOF
"$BIN" demo -c "$TMP/demo.yaml" --quick >"$TMP/demo3.out" 2>&1 || fail "demo after a student change: $(tail -n 3 "$TMP/demo3.out")"
changed=$(cat "$TMP/demo3.out")
case $changed in *"14 stages, 6 ran, 8 skipped"*) ;; *) fail "a student change did not rerun stages 9-14 only: $(grep 'stages,' "$TMP/demo3.out")" ;; esac

# an interrupted run left the state listing stages 1-10 only (10 unfinished) while the evals'
# outputs stayed: the rerun resumes stage 10, then must redo the evals from scratch, not reuse
# the old samples
python3 - "$TMP/demo/pipeline.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
s["stages"] = s["stages"][:10]
s["stages"][9]["done"] = False
json.dump(s, open(sys.argv[1], "w"))
EOF
"$BIN" demo -c "$TMP/demo.yaml" --quick >"$TMP/demo4.out" 2>&1 || fail "demo after an interrupted run: $(tail -n 3 "$TMP/demo4.out")"
again=$(cat "$TMP/demo4.out")
case $again in *"14 stages, 5 ran, 9 skipped"*) ;; *) fail "after the interruption: $(grep 'stages,' "$TMP/demo4.out")" ;; esac
if grep -Eq '\(([1-9][0-9]*) already there\)' "$TMP/demo4.out"; then
    fail "an eval reused samples of the earlier run: $(grep -E 'already there' "$TMP/demo4.out")"
fi

# killed in the middle of the cold start, then resumed
cat >"$TMP/kill.yaml" <<EOF
output: $TMP/kill
stages:
  - problems: {output: $TMP/kill/data, seed: 3, steps_min: 2, steps_max: 3, max_operand: 20, max_factor: 5,
               train: 300, gen: 8, heldout: 8}
  - init: {config: $ROOT/configs/demo/teacher, tokenizer: $ROOT/configs/demo/tokenizer, output: $TMP/kill/t0}
  - cold_start:
      model: $TMP/kill/t0
      data: {train: $TMP/kill/data/train_chats.jsonl, template: deepseek_r1, max_len: 256}
      train: {max_steps: 16, micro_batch: 2}
      output: {dir: $TMP/kill/teacher, save_every: 4, log_every: 1, progress: false}
runtime: {threads: 1}
EOF
"$BIN" run "$TMP/kill.yaml" >"$TMP/kill1.out" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
    [ -d "$TMP/kill/teacher/checkpoints/step-00000008" ] && break
    sleep 0.1
done
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
if [ -d "$TMP/kill/teacher/final" ]; then
    fail "the cold start finished before the kill (too fast to test the resume)"
else
    "$BIN" run "$TMP/kill.yaml" >"$TMP/kill2.out" 2>&1 || fail "the resumed run failed"
    log=$(cat "$TMP/kill2.out")
    case $log in *"stage 1 (problems) finished before"*) ;; *) fail "problems not skipped on resume" ;; esac
    case $log in *"sft: resuming from $TMP/kill/teacher/checkpoints/step-"*) ;; *) fail "cold start did not resume: $log" ;; esac
    python3 - "$TMP/kill/teacher/metrics.jsonl" <<'EOF' || fail "metrics after the resume"
import json, sys
steps = [json.loads(l)["step"] for l in open(sys.argv[1]) if "loss" in json.loads(l)]
assert steps == list(range(1, 17)), (steps[:5], len(steps))
EOF
    [ -f "$TMP/kill/teacher/final/model.safetensors" ] || fail "no export after the resume"
    # the same cold start uninterrupted: every loss and the exported teacher bit for bit
    # (with the same thread count: OpenBLAS splits the rows among the threads, and
    # a row's sums depend on where it falls)
    "$BIN" sft "$TMP/kill/stages/03-cold_start.yaml" --set "output.dir=$TMP/kill-ref" --set runtime.threads=1 >"$TMP/ref.out" 2>&1 ||
        fail "uninterrupted cold start: $(tail -n 3 "$TMP/ref.out")"
    python3 - "$TMP/kill/teacher/metrics.jsonl" "$TMP/kill-ref/metrics.jsonl" <<'EOF' || fail "resumed losses differ"
import json, sys
a, b = ([json.loads(l)["loss"] for l in open(f) if "loss" in json.loads(l)] for f in sys.argv[1:])
assert a == b, [(i, x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y][:3]
EOF
    cmp -s "$TMP/kill/teacher/final/model.safetensors" "$TMP/kill-ref/final/model.safetensors" ||
        fail "the resumed teacher differs from the uninterrupted one"
fi

if [ "$failures" -ne 0 ]; then
    echo "demo: $failures failure(s)" >&2
    exit 1
fi
echo "demo: ok"
