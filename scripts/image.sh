#!/usr/bin/env bash
# Builds the controller image from the Dockerfile without a Docker daemon (Debian's buildah with
# the vfs storage driver and chroot isolation), or with docker when only docker is installed.
#
#   scripts/image.sh [TAG]              # default tag: pulsar-autoscaler:<crate version>
#   PROFILE=dev scripts/image.sh        # the debug build (quicker, larger; for tests)
#   PUSH=registry.example.com/pulsar-autoscaler:0.1.0 scripts/image.sh
#
# Steps: cargo builds the binary; target/image/rootfs/ gets the binary, the shared libraries
# `ldd` lists for it (glibc, libm, libgcc_s and the loader, from this Debian system), the CA
# bundle and /etc/passwd with the nonroot user; then the Dockerfile copies that tree into an
# image FROM scratch. Output: the image in buildah's (or docker's) local storage, and
# target/image/pulsar-autoscaler.oci.tar (an OCI archive) when buildah built it.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)
tag="${1:-pulsar-autoscaler:$version}"
profile="${PROFILE:-release}"
context=target/image
rootfs="$context/rootfs"

case "$profile" in
  release) cargo build --release --locked --bin pulsar-autoscaler; binary=target/release/pulsar-autoscaler ;;
  dev) cargo build --locked --bin pulsar-autoscaler; binary=target/debug/pulsar-autoscaler ;;
  *) echo "image.sh: PROFILE must be release or dev, not $profile" >&2; exit 1 ;;
esac

rm -rf "$context"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
cp "$binary" "$rootfs/usr/local/bin/pulsar-autoscaler"
# The shared libraries the binary links, at the paths the loader looks for them.
# `libc.so.6 => /lib/.../libc.so.6 (0x...)` names a library, `/lib64/ld-linux-x86-64.so.2 (0x...)`
# the loader (the ELF interpreter, without which exec fails with "no such file or directory").
for lib in $(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
interpreter=$(readelf -l "$binary" | awk -F': ' '/Requesting program interpreter/ { sub(/]$/, "", $2); print $2 }')
if [ ! -e "$rootfs$interpreter" ]; then
  echo "image.sh: the loader $interpreter did not make it into the image" >&2
  exit 1
fi
cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
# Host names resolve through files and DNS, which glibc has built in since 2.34.
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"

if command -v buildah >/dev/null 2>&1; then
  # vfs and chroot isolation need neither a daemon nor overlay mounts nor user namespaces.
  # vfs stores every layer as a full copy: drop the previous build of this tag first.
  buildah --storage-driver vfs rmi "$tag" >/dev/null 2>&1 || true
  buildah --storage-driver vfs bud --isolation chroot --layers=false -f Dockerfile -t "$tag" "$context"
  rm -f "$context/pulsar-autoscaler.oci.tar"
  buildah --storage-driver vfs push "$tag" "oci-archive:$context/pulsar-autoscaler.oci.tar:$tag"
  if [ -n "${PUSH:-}" ]; then
    buildah --storage-driver vfs push "$tag" "docker://$PUSH"
  fi
elif command -v docker >/dev/null 2>&1; then
  docker build -f Dockerfile -t "$tag" "$context"
  if [ -n "${PUSH:-}" ]; then
    docker tag "$tag" "$PUSH"
    docker push "$PUSH"
  fi
else
  echo "image.sh: neither buildah nor docker is installed; run scripts/setup.d/70-buildah.sh" >&2
  exit 1
fi
echo "image.sh: built $tag"
