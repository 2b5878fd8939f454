#!/usr/bin/env bash
# fuzz.sh BUILD_DIR SECONDS - run every libFuzzer harness in BUILD_DIR/tests for
# SECONDS each, starting from its seed corpus in tests/fuzz/corpus/<name>/.
# New inputs go to a scratch copy, never into the repository. A crash fails
# the run and leaves the reproducer in BUILD_DIR/fuzz-artifacts/.
set -euo pipefail
build=${1:?usage: fuzz.sh BUILD_DIR SECONDS}
secs=${2:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$build/fuzz-artifacts"
status=0
for bin in "$build"/tests/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin"); name=${name#fuzz_}
  work=$(mktemp -d)
  [ -d "$root/tests/fuzz/corpus/$name" ] && cp -r "$root/tests/fuzz/corpus/$name/." "$work/"
  echo "fuzz: $name for ${secs}s"
  if ! "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$build/fuzz-artifacts/$name-" "$work" 2>"$build/fuzz-$name.log"; then
    echo "fuzz: $name FAILED; see $build/fuzz-$name.log and $build/fuzz-artifacts/"
    tail -40 "$build/fuzz-$name.log"
    status=1
  else
    grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' "$build/fuzz-$name.log" | sed "s/^/fuzz: $name /"
  fi
  rm -rf "$work"
done
exit $status
