#!/usr/bin/env bash
# cargo-fuzz (crates.io) for the short coverage-guided runs of fuzz/ in scripts/test.sh. Built once
# into the per-user cache; only the stable toolchain is needed (the nightly flags it passes are
# accepted with RUSTC_BOOTSTRAP=1). The location is written to target/test-env as CARGO_FUZZ_BIN.
set -euo pipefail
cd "$(dirname "$0")/../.."

CARGO_FUZZ_VERSION=0.13.2
cache="${XDG_CACHE_HOME:-$HOME/.cache}/pulsar-autoscaler"
root="$cache/cargo-fuzz-$CARGO_FUZZ_VERSION"
bin="$root/bin/cargo-fuzz"
mkdir -p "$cache" target

if [ -x "$bin" ]; then
  echo "50-cargo-fuzz: reusing $bin"
else
  echo "50-cargo-fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked --quiet --root "$root.tmp.$$" --version "$CARGO_FUZZ_VERSION" cargo-fuzz
  rm -rf "$root"
  mv "$root.tmp.$$" "$root"
fi
"$bin" --version

env_file=target/test-env
touch "$env_file"
grep -v -e '^CARGO_FUZZ_BIN=' "$env_file" >"$env_file.tmp" || true
echo "CARGO_FUZZ_BIN=$bin" >>"$env_file.tmp"
mv "$env_file.tmp" "$env_file"
