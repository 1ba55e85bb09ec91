#!/usr/bin/env bash
# Builds edgetun's container image with Debian's podman, without any registry: the base image
# is a Debian (trixie: Node.js 20) root made here with debootstrap and imported into podman.
#
#   sudo scripts/build-image.sh [TAG]        (default edgetun:<package.json version>)
#
# Needs: apt-get install podman debootstrap. Builds run with --isolation chroot, so no
# user namespaces or runc are needed. The base image is built once and reused.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(node -p 'require("./package.json").version')
tag=${1:-edgetun:${version}}
base=localhost/edgetun-base:trixie
suite=${DEBIAN_SUITE:-trixie}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

for tool in podman debootstrap; do
  command -v "$tool" >/dev/null || { echo "build-image: needs $tool (apt-get install $tool)" >&2; exit 1; }
done

if ! podman image exists "$base"; then
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  echo "build-image: debootstrap $suite into $root" >&2
  debootstrap --variant=minbase \
    --include=nodejs,npm,python3,make,g++,iproute2,wireguard-tools,libcap2-bin,ca-certificates \
    "$suite" "$root" "$mirror"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" -c . | podman import --change 'CMD ["/bin/bash"]' - "$base"
fi

podman build --isolation chroot \
  --build-arg BUILD_IMAGE="$base" --build-arg RUNTIME_IMAGE="$base" \
  -t "$tag" .
echo "build-image: built $tag" >&2
