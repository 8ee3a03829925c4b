#!/usr/bin/env bash
# Prometheus and VictoriaMetrics from Debian's packages; the tests start them on loopback.
# Their services are not started here: the packages' init does not run in a container.
set -euo pipefail
missing=()
[ -x /usr/bin/prometheus ] || missing+=(prometheus)
[ -x /usr/bin/victoria-metrics ] || missing+=(victoria-metrics)
if [ "${#missing[@]}" -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y --no-install-recommends "${missing[@]}"
fi
