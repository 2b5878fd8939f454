#!/usr/bin/env bash
# curate_crash.sh DISTILL_BIN FIXTURES_DIR SCRATCH_DIR
# Crash safety of `distill data tokenize`: import ~20k generations, kill -9 the
# tokenize at seeded random points several times, rerun to the end, and check
# exact counts, no duplicate or missing examples, examples that decode, and
# that a rerun of the finished job is a no-op. Needs the qwen3 tokenizer in the
# cache (DISTILL_CACHE); skips (exit 0 with a note) without it.
set -euo pipefail
BIN=$1
SCRATCH=$3
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"
cd "$SCRATCH"
if [ -z "${DISTILL_CACHE:-}" ] && [ -d /tmp/dcache ]; then export DISTILL_CACHE=/tmp/dcache; fi
cache=${DISTILL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/distill}
if [ ! -f "$cache/tokenizers/qwen3/tokenizer.json" ]; then
    echo "skip: no qwen3 tokenizer under $cache (scripts/setup.sh)"
    exit 0
fi

N=10000 # prompts; 2 samples each = 20000 generations
python3 - "$N" > gen.jsonl <<'PY'
import json, random, sys
n = int(sys.argv[1]); r = random.Random(7)
w = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi pi rho sigma tau".split()
for i in range(n):
    p = "Problem %d: " % i + " ".join(r.choice(w) for _ in range(r.randint(5, 30)))
    gens = ["<think>" + " ".join(r.choice(w) for _ in range(r.randint(300, 1500))) + "</think> answer %d" % i for _ in range(2)]
    print(json.dumps({"problem": p, "answer": str(i), "generations": gens}))
PY
"$BIN" -q data import ds gen.jsonl --kind generations --fast
want=$((2 * N))

seed=${CURATE_CRASH_SEED:-12345}
RANDOM=$seed
kills=0
for run in 1 2 3 4 5 6; do
    "$BIN" data tokenize ds tok --template chatml --tokenizer qwen3 --batch 64 --threads 1 --no-progress 2>>kill.log &
    pid=$!
    # a random point once the job is writing (after the tokenizer loads)
    for _ in $(seq 100); do [ -f tok.partial/data.mdb ] && break; sleep 0.02; done
    sleep "0.$((RANDOM % 8 + 2))$((RANDOM % 10))"
    if kill -9 "$pid" 2>/dev/null; then kills=$((kills + 1)); fi
    wait "$pid" 2>/dev/null || true
    if [ -d tok ]; then break; fi
done
echo "killed $kills times; $(grep -c resuming kill.log || true) runs resumed a partial output"
"$BIN" -q data tokenize ds tok --template chatml --tokenizer qwen3 --batch 64 --threads 2 --no-progress
[ -d tok ] && [ ! -d tok.partial ] || { echo "FAIL: no finished output"; exit 1; }

"$BIN" data stats tok --json > stats.json
python3 - "$want" <<'PY'
import json, sys
want = int(sys.argv[1])
s = json.load(open("stats.json"))
c = s["counts"]
assert c["examples"] == want, ("examples", c["examples"], want)
assert c["generations"] == want, ("generations", c["generations"], want)
assert c["prompts"] == want // 2, ("prompts", c["prompts"])
print("counts ok:", c)
PY
# every example readable, each from a distinct unit (no duplicates), with
# tokens in the loss; `head` decodes every record (a damaged one is an error)
"$BIN" data head tok --db examples -n "$want" --max-chars 1 > head.txt
python3 - "$want" <<'PY'
import re, sys
want = int(sys.argv[1])
origins, ids = set(), set()
for line in open("head.txt"):
    m = re.match(r"example (\d+)  (\d+) tokens, (\d+) in the loss, from prompt (\d+) sample (\d+)", line)
    if m:
        ids.add(int(m.group(1)))
        assert int(m.group(3)) > 0, line
        origins.add((int(m.group(4)), int(m.group(5))))
assert ids == set(range(want)), ("example ids", len(ids), want)
assert len(origins) == want, ("distinct origins", len(origins), want)
print("examples ok:", len(ids), "ids, all origins distinct")
PY
out=$("$BIN" data tokenize ds tok --template chatml --tokenizer qwen3 --batch 64 --threads 2 --no-progress 2>&1)
echo "$out" | grep -q "already done" || { echo "FAIL: rerun not a no-op: $out"; exit 1; }
echo "ok: $kills kills, $want examples, rerun no-op"
