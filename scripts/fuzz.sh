#!/usr/bin/env bash
# Short, time-bounded coverage-guided runs of every fuzz target in fuzz/ (cargo-fuzz, libFuzzer),
# each seeded with its committed corpus fuzz/corpus/<target>/. New inputs go to a scratch dir
# unless FUZZ_KEEP=1, which adds them to the committed corpus (review and commit them then).
# A crash or a broken property stops the run with the input in fuzz/artifacts/<target>/; add it
# to fuzz/corpus/<target>/ with the fix, so tests/fuzz_corpus.rs replays it in every cargo test.
#
#   FUZZ_SECONDS=20 [FUZZ_DEV=1] [FUZZ_KEEP=1] scripts/fuzz.sh [target...]
#
# Only the stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets it take the nightly flags that
# cargo-fuzz passes (-Zsanitizer, -Cpasses=sancov-module). The sanitizer is off: the parsers are
# safe Rust, so what fuzzing can find is a panic, an overflow (debug assertions are on) or a
# broken property asserted in src/fuzzing.rs, and without ASan each run does several times more
# executions.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-20}"
cargo_fuzz="${CARGO_FUZZ_BIN:-}"
if [ -z "$cargo_fuzz" ] && [ -f target/test-env ]; then
  cargo_fuzz="$(sed -n 's/^CARGO_FUZZ_BIN=//p' target/test-env | tail -n 1)"
fi
if [ -z "$cargo_fuzz" ] || [ ! -x "$cargo_fuzz" ]; then
  echo "cargo-fuzz not found: run scripts/setup.d/50-cargo-fuzz.sh (or scripts/test.sh)" >&2
  exit 1
fi
export RUSTC_BOOTSTRAP=1
# The instrumented release build goes to fuzz/target unless FUZZ_TARGET_DIR says otherwise.
flags=(-s none --debug-assertions)
# FUZZ_DEV=1 builds without optimizations: a fraction of the release build's time, fewer
# executions per second; what a short smoke run in `make test` wants.
if [ "${FUZZ_DEV:-0}" = 1 ]; then
  flags+=(--dev)
fi
if [ -n "${FUZZ_TARGET_DIR:-}" ]; then
  flags+=(--target-dir "$FUZZ_TARGET_DIR")
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(ls fuzz/fuzz_targets | sed -n 's/\.rs$//p' | sort)
fi
"$cargo_fuzz" build "${flags[@]}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  if [ "${FUZZ_KEEP:-0}" = 1 ]; then
    dirs=("fuzz/corpus/$t")
  else
    mkdir -p "$scratch/$t"
    dirs=("$scratch/$t" "fuzz/corpus/$t")
  fi
  echo "==> fuzz $t for ${seconds}s"
  log="$(mktemp)"
  rc=0
  "$cargo_fuzz" run "${flags[@]}" "$t" "${dirs[@]}" -- \
    -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 >"$log" 2>&1 || rc=$?
  grep -E '^(stat::number_of_executed_units|stat::new_units_added|INFO: seed corpus)' "$log" || true
  if [ "$rc" -ne 0 ]; then
    tail -n 60 "$log"
    echo "fuzz $t failed (exit $rc); the input is in fuzz/artifacts/$t/" >&2
    exit "$rc"
  fi
  rm -f "$log"
done
