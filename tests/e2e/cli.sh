#!/usr/bin/env bash
# cli.sh DISTILL_BIN FIXTURES_DIR SCRATCH_DIR - the command table, exit codes,
# --help everywhere, and `distill config` as a user runs it.
set -uo pipefail
bin=$1
scratch=$3
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$scratch"
fails=0

# expect CODE DESCRIPTION -- COMMAND...: run, capture stdout+stderr in $out, check the exit code
expect() {
  local want=$1 what=$2; shift 3
  out=$("$@" 2>&1); local got=$?
  if [ "$got" != "$want" ]; then
    echo "FAIL: $what: exit $got, wanted $want: $*"; echo "$out" | head -20; fails=$((fails + 1))
  fi
}
# has TEXT DESCRIPTION: the last output contains TEXT
has() {
  if ! grep -qF -- "$1" <<<"$out"; then
    echo "FAIL: $2: output lacks '$1'"; echo "$out" | head -20; fails=$((fails + 1))
  fi
}

expect 0 "top-level help" -- "$bin" --help; has "usage: distill" "help"; has "inspect" "help lists inspect"
expect 2 "no command" -- "$bin"
expect 2 "unknown command" -- "$bin" frobnicate; has "'frobnicate' is not a distill command" "unknown command"
expect 2 "bad log level" -- "$bin" --log-level loud version; has "unknown log level 'loud'" "bad level"
expect 2 "unknown global option" -- "$bin" --frob version
expect 0 "version" -- "$bin" version; has "distill " "version"; has "CUDA backend" "version"
expect 0 "--version" -- "$bin" --version
for cmd in $("$bin" --help | awk '/^commands:/{on=1; next} /^$/{on=0} on{print $1}'); do
  expect 0 "$cmd --help" -- "$bin" "$cmd" --help; has "usage: distill $cmd" "$cmd --help"
done

# config: valid file, overrides, print round trip
expect 0 "config check" -- "$bin" config -c "$root/configs/runtime.yaml"; has "ok:" "config check"
expect 0 "config defaults" -- "$bin" config
expect 0 "print-config" -- "$bin" config -c "$root/configs/runtime.yaml" --set runtime.seed=7 --set runtime.device=cpu --print-config
has "seed: 7" "override applied"; has "device: cpu" "enum override"
printf '%s\n' "$out" >"$scratch/printed.yaml"
expect 0 "printed config reloads" -- "$bin" config -c "$scratch/printed.yaml"
expect 0 "printed config is stable" -- "$bin" config -c "$scratch/printed.yaml" --print-config
cmp -s <(printf '%s\n' "$out") "$scratch/printed.yaml" || { echo "FAIL: print-config of printed config differs"; fails=$((fails + 1)); }

# config errors name file:line:col and the key path
printf 'runtime:\n  seed: 3\n  thredas: 4\n' >"$scratch/typo.yaml"
expect 1 "unknown key" -- "$bin" config -c "$scratch/typo.yaml"; has "typo.yaml:3:3" "unknown key position"; has "runtime.thredas" "unknown key path"
printf 'runtime:\n  threads: many\n' >"$scratch/type.yaml"
expect 1 "wrong type" -- "$bin" config -c "$scratch/type.yaml"; has "type.yaml:2:12" "wrong type position"; has "runtime.threads" "wrong type path"
printf 'runtime:\n  device: tpu\n' >"$scratch/enum.yaml"
expect 1 "bad enum" -- "$bin" config -c "$scratch/enum.yaml"; has "auto|cpu|cuda" "enum choices"
printf 'runtime: [1, 2\n' >"$scratch/syntax.yaml"
expect 1 "syntax error" -- "$bin" config -c "$scratch/syntax.yaml"; has "syntax.yaml:" "syntax error position"
expect 1 "out of range override" -- "$bin" config --set runtime.threads=-1; has "runtime.threads" "range path"; has "out of range" "range"
expect 1 "unknown override" -- "$bin" config --set runtime.sed=1; has "runtime.sed" "override path"
expect 2 "override without =" -- "$bin" config --set runtime.seed
expect 1 "missing file" -- "$bin" config -c "$scratch/nope.yaml"; has "nope.yaml" "missing file named"
expect 2 "unknown schema" -- "$bin" config --schema nope; has "known: runtime" "schema list"
expect 2 "stray argument" -- "$bin" config "$scratch/typo.yaml"

if [ "$fails" -gt 0 ]; then echo "$fails failure(s)"; exit 1; fi
echo "cli: all checks passed"
