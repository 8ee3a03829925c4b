#!/usr/bin/env bash
# Prometheus and promtool for the backtest range-query tests (Debian package; the tests start it
# themselves on a loopback port).
set -euo pipefail
command -v prometheus >/dev/null && command -v promtool >/dev/null || (apt-get update && apt-get install -y prometheus)
