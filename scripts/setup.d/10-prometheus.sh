#!/usr/bin/env bash
# Prometheus (with promtool) and VictoriaMetrics for the backtest range-query tests, from
# Debian's packages; the tests start them themselves on loopback ports.
set -euo pipefail
command -v prometheus >/dev/null && command -v promtool >/dev/null || (apt-get update && apt-get install -y prometheus)
command -v victoria-metrics >/dev/null || (apt-get update && apt-get install -y victoria-metrics)
