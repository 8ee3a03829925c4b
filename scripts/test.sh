#!/usr/bin/env bash
# The whole test suite: installs and builds what the tests need (idempotent), then runs
# formatting, lint and every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

for step in scripts/setup.d/*.sh; do
  [ -e "$step" ] || continue
  echo "==> setup: $step"
  bash "$step"
done
# Setup steps may leave tool locations here (e.g. binaries built into a cache).
if [ -f target/test-env ]; then
  set -a
  # shellcheck disable=SC1091
  . target/test-env
  set +a
fi

echo "==> cargo fmt --check"
cargo fmt --check
echo "==> cargo clippy"
cargo clippy --all-targets -- -D warnings
# A short coverage-guided run of every fuzz target (tests/fuzz_corpus.rs replays the corpora
# in cargo test below), first, so the suite's last line is the tests' count.
echo "==> fuzz (${FUZZ_SECONDS:-20}s per target)"
FUZZ_SECONDS="${FUZZ_SECONDS:-20}" FUZZ_DEV="${FUZZ_DEV:-1}" scripts/fuzz.sh
echo "==> cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --all-targets --no-fail-fast -- --test-threads="${TEST_THREADS:-2}" 2>&1 | tee "$log"
# One closing line over every test binary (the last binary alone may hold no tests).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
