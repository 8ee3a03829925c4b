#!/usr/bin/env bash
# Rust toolchain components the suite runs (rustfmt, clippy).
set -euo pipefail
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
