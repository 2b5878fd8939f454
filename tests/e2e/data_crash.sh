#!/usr/bin/env bash
# data_crash.sh DISTILL_BIN FIXTURES_DIR SCRATCH_DIR - crash safety of `distill data import`:
# kill -9 it at random points (several seeded runs, different batch sizes, threads, --fast),
# rerun it to completion, and check exact record counts, no duplicates, and that every record
# reads back equal to its input line. Also: a killed export leaves no partial output file.
set -uo pipefail
bin=$1
scratch=$3
rm -rf "$scratch"
mkdir -p "$scratch"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
RANDOM=4242 # seeded: the same kill points every time

in=$scratch/in.jsonl
n=200000
python3 - "$in" "$n" <<'EOF'
import json, random, sys
random.seed(20240601)
words = ["the", "number", "of", "ways", "$x^2$", "\\frac{1}{2}", "triangle", "é", "漢字", "🙂",
         "\"quoted\"", "tab\there", "line\nbreak"]
with open(sys.argv[1], "w", encoding="utf-8") as f:
    for i in range(int(sys.argv[2])):
        p = " ".join(random.choice(words) for _ in range(random.randint(3, 60)))
        o = {"problem": f"{i}: {p}", "answer": str(random.randint(0, 10**6)), "level": f"Level {i % 5 + 1}", "i": i}
        if i % 3 == 0:
            o["extra"] = {"tags": ["a", "b"], "score": i / 7, "big": 2**53 + 1}
        if i % 50 == 0:
            o["solution"] = "long " * random.randint(200, 2000)  # over 4 KiB: zstd-compressed fields too
        f.write(json.dumps(o, ensure_ascii=(i % 2 == 0)) + "\n")
EOF

# check_ref: the uninterrupted import, exported, equals the input line by line (as JSON
# values: key order and number spelling may differ), with the exact count and no duplicates.
check_ref() {
  "$bin" -q data export "$scratch/ref" -o "$scratch/ref.jsonl" || { fail "reference export failed"; return; }
  python3 - "$in" "$scratch/ref.jsonl" "$n" <<'EOF' || fail "reference: data differs from the input"
import json, sys
inp, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
a = open(inp, encoding="utf-8").read().splitlines()
b = open(out, encoding="utf-8").read().splitlines()
bad = []
if len(b) != n: bad.append(f"export has {len(b)} lines, want {n}")
seen = set()
for i, (x, y) in enumerate(zip(a, b)):
    ox, oy = json.loads(x), json.loads(y)
    if oy["i"] in seen: bad.append(f"line {i + 1}: duplicate of input {oy['i']}")
    seen.add(oy["i"])
    if ox != oy: bad.append(f"line {i + 1} differs: {x[:80]} vs {y[:80]}")
    if len(bad) > 5: break
for line in bad: print("  " + line)
sys.exit(1 if bad else 0)
EOF
}

# verify DATASET WHAT: the same records as the reference (its export is byte-identical, so
# every record equals its input line, none is missing and none is doubled), and the counts in
# stats and in the manifest are exact.
verify() {
  local ds=$1 what=$2
  "$bin" -q data export "$ds" -o "$scratch/out.jsonl" || { fail "$what: export failed"; return; }
  cmp -s "$scratch/out.jsonl" "$scratch/ref.jsonl" || fail "$what: records differ from the uninterrupted import"
  local c
  c=$("$bin" data stats "$ds" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["counts"]["prompts"])')
  [ "$c" = "$n" ] || fail "$what: stats counts $c prompts, want $n"
  c=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["counts"]["prompts"])' "$ds/manifest.json")
  [ "$c" = "$n" ] || fail "$what: the manifest counts $c prompts, want $n"
}

# The reference: one uninterrupted import, timed, to place the kills.
t0=$(date +%s%N)
"$bin" -q data import "$scratch/ref" "$in" --batch-bytes 256K || fail "reference import failed"
t_ms=$((($(date +%s%N) - t0) / 1000000))
[ "$t_ms" -lt 100 ] && t_ms=100
check_ref

runs=6
for run in $(seq 1 $runs); do
  ds=$scratch/run$run
  case $((run % 3)) in
    0) opts=(--batch-bytes 64K --threads 1 --fast) ;;
    1) opts=(--batch-bytes 256K --threads 2) ;;
    2) opts=(--batch-bytes 1M) ;;
  esac
  killed=0
  before=$fails
  for k in 1 2 3; do
    ms=$((t_ms / 20 + RANDOM % (t_ms / 3)))
    "$bin" -q data import "$ds" "$in" "${opts[@]}" &
    pid=$!
    sleep "$(awk -v ms="$ms" 'BEGIN { printf "%.3f", ms / 1000 }')"
    if kill -9 "$pid" 2>/dev/null; then killed=$((killed + 1)); fi
    wait "$pid" 2>/dev/null
    # a killed import leaves a readable dataset (or none at all, if killed before creating it)
    if [ -e "$ds/data.mdb" ]; then
      "$bin" data stats "$ds" --json >/dev/null 2>"$scratch/err.txt" || { fail "run $run: stats after kill $k"; cat "$scratch/err.txt"; }
    fi
  done
  out=$("$bin" data import "$ds" "$in" "${opts[@]}" 2>&1) || { fail "run $run: final import failed"; echo "$out" | tail -5; }
  again=$("$bin" data import "$ds" "$in" "${opts[@]}" 2>&1) || fail "run $run: rerun of a finished import failed"
  grep -q "already imported" <<<"$again" || fail "run $run: rerun of a finished import was not a no-op: $again"
  verify "$ds" "run $run"
  [ "$fails" -eq "$before" ] && echo "run $run (${opts[*]}): killed $killed time(s) at random points; counts, uniqueness and contents ok"
done

# kill -9 an export: the output file appears only when complete
"$bin" -q data export "$scratch/ref" -o "$scratch/partial.jsonl" &
pid=$!
sleep 0.05
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
if [ -e "$scratch/partial.jsonl" ]; then
  lines=$(wc -l <"$scratch/partial.jsonl")
  [ "$lines" -eq "$n" ] || fail "a killed export left a partial output file ($lines lines)"
fi

if [ "$fails" -gt 0 ]; then echo "$fails failure(s)"; exit 1; fi
echo "data_crash: all checks passed"
