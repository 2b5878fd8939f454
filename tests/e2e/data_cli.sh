#!/usr/bin/env bash
# data_cli.sh DISTILL_BIN FIXTURES_DIR SCRATCH_DIR - `distill data` as a user runs it: help for
# every subcommand, usage errors (exit 2), import/export/show/head/stats, merging shards, and
# foreign, corrupt or truncated files refused with a clear message and exit 1, never a crash.
set -uo pipefail
bin=$1
scratch=$3
rm -rf "$scratch"
mkdir -p "$scratch"
cd "$scratch" || exit 1
fails=0

# expect CODE DESCRIPTION -- COMMAND...: run, capture stdout+stderr in $out, check the exit code
expect() {
  local want=$1 what=$2
  shift 3
  out=$("$@" 2>&1)
  local got=$?
  if [ "$got" != "$want" ]; then
    echo "FAIL: $what: exit $got, wanted $want: $*"
    echo "$out" | head -20
    fails=$((fails + 1))
  fi
}
# has TEXT DESCRIPTION / lacks TEXT DESCRIPTION: about the last output
has() {
  if ! grep -qF -- "$1" <<<"$out"; then
    echo "FAIL: $2: output lacks '$1'"
    echo "$out" | head -20
    fails=$((fails + 1))
  fi
}
lacks() {
  if grep -qF -- "$1" <<<"$out"; then
    echo "FAIL: $2: output has '$1'"
    fails=$((fails + 1))
  fi
}

# --- help and usage errors -----------------------------------------------------------------
expect 0 "data --help" -- "$bin" data --help
has "usage: distill data" "data help"
for sub in import export show head stats merge bench; do
  expect 0 "data $sub --help" -- "$bin" data "$sub" --help
  has "usage: distill data $sub" "$sub help"
done
expect 0 "import help documents its flags" -- "$bin" data import --help
for flag in --kind --prompt-field --answer-field --id-field --messages-field --generation-field --sample-field \
  --verdict-field --field --source --teacher --seed --on-error --max-line-bytes --batch-bytes --threads --fast --name; do
  has -- "$flag" "import --help documents $flag"
done
expect 2 "no subcommand" -- "$bin" data
expect 2 "unknown subcommand" -- "$bin" data frob
has "'frob' is not a data subcommand" "unknown subcommand"
expect 2 "import without a file" -- "$bin" data import ds
has "see 'distill data import --help'" "usage hint"
expect 2 "bad kind" -- "$bin" data import ds x.jsonl --kind essays
has "unknown --kind 'essays'" "bad kind"
expect 2 "bad policy" -- "$bin" data import ds x.jsonl --on-error maybe
expect 2 "bad --field" -- "$bin" data import ds x.jsonl --field question
expect 2 "bad size" -- "$bin" data import ds x.jsonl --batch-bytes lots
expect 2 "show without an id" -- "$bin" data show ds
expect 2 "show with a bad id" -- "$bin" data show ds seven
expect 2 "head with a bad db" -- "$bin" data head ds --db tables
expect 2 "merge without shards" -- "$bin" data merge out

# --- import, export, show, head, stats ------------------------------------------------------
cat >p.jsonl <<'EOF'
{"question": "What is 1+1?", "answer": "2", "level": 1}
{"question": "Name a prime.", "answer": "7", "tags": ["nt"]}
this line is not JSON
{"question": "Last one", "answer": "x"}
EOF
expect 1 "import stops at a bad line" -- "$bin" data import ds p.jsonl --source math-set
has "p.jsonl:3: not JSON" "the bad line is named"
expect 0 "import skips with --on-error skip" -- "$bin" data import ds p.jsonl --on-error skip --source math-set
has "p.jsonl:3: not JSON" "skipped line reported"
has "3 prompts" "summary counts"
expect 0 "rerun is a no-op" -- "$bin" data import ds p.jsonl --on-error skip --source math-set
has "already imported" "no-op"
expect 1 "other options are refused" -- "$bin" data import ds p.jsonl --on-error skip --source other
has "with other options" "options changed"
expect 0 "export to stdout" -- "$bin" data export ds
[ "$(grep -c question <<<"$out")" = 3 ] || { echo "FAIL: export has $(grep -c question <<<"$out") lines"; fails=$((fails + 1)); }
has '{"question":"Name a prime.","answer":"7","tags":["nt"]}' "export keeps the names and extras"
expect 0 "export to a file" -- "$bin" data export ds -o out.jsonl
[ "$(wc -l <out.jsonl)" = 3 ] || { echo "FAIL: out.jsonl"; fails=$((fails + 1)); }
expect 0 "show" -- "$bin" data show ds 1
has "prompt 1" "show"
has "Name a prime." "show text"
has "lineage    1: import of 'math-set'" "show lineage"
has '"tags":["nt"]' "show extra"
expect 1 "show a missing prompt" -- "$bin" data show ds 99
has "no prompt 99" "missing prompt named"
expect 0 "head" -- "$bin" data head ds -n 2
has "prompt 0" "head"
lacks "prompt 2" "head -n 2"
expect 0 "stats" -- "$bin" data stats ds
has "prompts                 3" "stats count"
has "math-set (import)" "stats per source"
has "prompt length (characters)" "stats histogram"
expect 0 "stats --json" -- "$bin" data stats ds --json
has '"prompts": 3' "stats json"

# --- merge: shards from two generation nodes ------------------------------------------------
cat >g1.jsonl <<'EOF'
{"id": 0, "s": 0, "problem": "p0", "generation": "a", "ok": true}
{"id": 0, "s": 1, "problem": "p0", "generation": "b", "ok": false}
{"id": 1, "s": 0, "problem": "p1", "generation": "c", "ok": true}
EOF
cat >g2.jsonl <<'EOF'
{"id": 0, "s": 1, "problem": "p0", "generation": "b again", "ok": true}
{"id": 1, "s": 1, "problem": "p1", "generation": "d"}
{"id": 2, "s": 0, "problem": "p2", "generation": "e", "ok": false}
EOF
cat >g4.jsonl <<'EOF'
{"id": 0, "s": 0, "problem": "p0", "generation": "a, no verdict"}
EOF
cat >g3.jsonl <<'EOF'
{"id": 1, "s": 5, "problem": "not p1", "generation": "z"}
EOF
gen=(--kind generations --id-field id --sample-field s --verdict-field ok --teacher r1)
expect 0 "shard 1" -- "$bin" data import shard1 g1.jsonl "${gen[@]}" --seed 1
expect 0 "shard 2" -- "$bin" data import shard2 g2.jsonl "${gen[@]}" --seed 2
expect 0 "shard 3" -- "$bin" data import shard3 g3.jsonl "${gen[@]}" --seed 3
expect 0 "merge" -- "$bin" data merge merged shard1 shard2
has "generations: 5 added, 1 duplicates skipped" "merge dedupes units"
has "prompts: 3 added, 2 duplicates skipped" "merge shares prompts"
expect 0 "merged stats" -- "$bin" data stats merged --json
has '"generations": 5' "merged count"
has '"accepted": 2' "merged verdicts"
expect 0 "merged show" -- "$bin" data show merged 0
has "generation (0, 0)" "show lists the samples"
has "generation (0, 1)" "show lists the samples"
has "| b" "the first shard's unit is kept"
lacks "b again" "the duplicate unit is dropped"
has "teacher r1" "lineage of generations"
expect 0 "show one unit" -- "$bin" data show merged 0 1
lacks "generation (0, 0)" "show ID SAMPLE shows that unit only"
has "verdict (0, 1)  rejected" "the unit's verdict"
expect 0 "merge again (a rerun)" -- "$bin" data merge merged shard1 shard2
expect 0 "merged stats after the rerun" -- "$bin" data stats merged --json
has '"generations": 5' "a rerun adds nothing"
expect 0 "shard 4" -- "$bin" data import shard4 g4.jsonl "${gen[@]}" --seed 4
expect 0 "merge: a unit without a verdict first" -- "$bin" data merge merged4 shard4 shard1
has "verdicts: 2 added, 1 duplicates skipped" "shard 1's verdict of (0, 0) is not paired with shard 4's generation"
expect 0 "merged show" -- "$bin" data show merged4 0 0
lacks "verdict (0, 0)" "no foreign verdict"
expect 1 "shards that disagree on a prompt" -- "$bin" data merge merged2 shard1 shard3
has "prompt 1 in shard 'shard3' has a different text" "conflict named"

# --- foreign, corrupt and truncated files ---------------------------------------------------
python3 -c '
import json
with open("big.jsonl", "w") as f:
    for i in range(20000):
        f.write(json.dumps({"problem": "problem %d " % i + "x" * 300, "answer": str(i)}) + "\n")'
expect 0 "a bigger dataset" -- "$bin" -q data import big big.jsonl
mkdir -p rnd txt trunc
head -c 65536 /dev/urandom >rnd/data.mdb
echo '{"problem": "this is JSONL"}' >txt/data.mdb
size=$(stat -c %s big/data.mdb)
head -c $((size / 2)) big/data.mdb >trunc/data.mdb
for d in rnd txt; do
  expect 1 "stats on $d" -- "$bin" data stats "$d"
  has "is not an LMDB file" "$d refused"
  expect 1 "import into $d" -- "$bin" data import "$d" p.jsonl
  has "is not an LMDB file" "$d refused for writing"
done
expect 1 "stats on a truncated copy" -- "$bin" data stats trunc
has "data.mdb is truncated" "truncated refused"
expect 1 "export of a truncated copy" -- "$bin" data export trunc
has "truncated" "truncated refused by export"
expect 1 "a file for a dataset" -- "$bin" data stats p.jsonl
has "is a file, not a dataset directory" "file refused"
expect 1 "no dataset" -- "$bin" data stats nowhere
has "no dataset at 'nowhere'" "missing named"
expect 1 "merge a corrupt shard" -- "$bin" data merge m2 shard1 rnd
has "is not an LMDB file" "corrupt shard refused"

if [ "$fails" -gt 0 ]; then
  echo "$fails failure(s)"
  exit 1
fi
echo "data_cli: all checks passed"
