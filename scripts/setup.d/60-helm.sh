#!/usr/bin/env bash
# Helm for tests/helm_chart.rs: built once from helm.sh/helm/v3's Go module (fetched through the
# Go module proxy, like kube-apiserver in 20-apiserver.sh) into the per-user cache, then reused.
# The location is written to target/test-env as HELM_BIN.
set -euo pipefail
cd "$(dirname "$0")/../.."

HELM_VERSION=v3.19.5
cache="${XDG_CACHE_HOME:-$HOME/.cache}/pulsar-autoscaler"
mkdir -p "$cache" target
helm="$cache/helm-$HELM_VERSION/helm"

if [ -x "$helm" ]; then
  echo "60-helm: reusing $helm"
else
  if ! command -v go >/dev/null 2>&1; then
    echo "60-helm: Go 1.24 or newer is needed to build helm $HELM_VERSION" >&2
    exit 1
  fi
  echo "60-helm: building helm $HELM_VERSION (a few minutes when cold)"
  start=$(date +%s)
  tmp_dir="$cache/helm-$HELM_VERSION.tmp.$$"
  rm -rf "$tmp_dir"
  mkdir -p "$tmp_dir"
  trap 'rm -rf "$tmp_dir"' EXIT
  # The version stamp helm prints (`helm version`) is set the way its own Makefile sets it.
  CGO_ENABLED=0 GOBIN="$tmp_dir" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -rf "$cache/helm-$HELM_VERSION"
  mv "$tmp_dir" "$cache/helm-$HELM_VERSION"
  trap - EXIT
  echo "60-helm: built $helm in $(($(date +%s) - start))s"
fi
"$helm" version --short

env_file=target/test-env
touch "$env_file"
grep -v -e '^HELM_BIN=' "$env_file" >"$env_file.tmp" || true
echo "HELM_BIN=$helm" >>"$env_file.tmp"
mv "$env_file.tmp" "$env_file"
