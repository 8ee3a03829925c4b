#!/usr/bin/env bash
# buildah from Debian's packages, for scripts/image.sh and tests/image.rs: it builds the image
# from the Dockerfile without a Docker daemon (vfs storage, chroot isolation) and runs a command
# inside it. The location is written to target/test-env as BUILDAH_BIN.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p target

if ! command -v buildah >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y --no-install-recommends buildah
fi
buildah=$(command -v buildah)
"$buildah" --version

env_file=target/test-env
touch "$env_file"
grep -v -e '^BUILDAH_BIN=' "$env_file" >"$env_file.tmp" || true
echo "BUILDAH_BIN=$buildah" >>"$env_file.tmp"
mv "$env_file.tmp" "$env_file"
