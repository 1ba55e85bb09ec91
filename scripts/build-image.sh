#!/usr/bin/env bash
# Builds edgetun's container image with Debian's podman and nothing from a container registry.
#
#   sudo scripts/build-image.sh [TAG]        (default edgetun:<package.json version>)
#
# Needs: apt-get install podman mmdebstrap, and the repository set up (npm ci: it builds the
# addon). Three images, all made on this machine:
#   base   localhost/edgetun-base:bookworm-node<version>: Debian bookworm's essential packages
#          plus iproute2, wireguard-tools, libcap2-bin and passwd (mmdebstrap, about a minute),
#          and this machine's own node binary as /usr/local/bin/node, the node the tests run
#          on (as in the official node images; a nodejs.org-style build needs only libc and
#          libstdc++, which the hook below checks by running it). node, ip and wg get their
#          file capability here, as the Dockerfile would give it, so that no layer above
#          copies them again. Made once, then reused.
#   app    localhost/edgetun-app:<version>: dist/src (rebuilt here) and the addon as built by
#          npm ci, with the production node_modules from package-lock.json.
#   TAG    the Dockerfile's runtime stage on the base, /app copied from the app image
#          (APP_IMAGE), built with --isolation chroot (no user namespaces, no runc).
# File dates are the last commit's (SOURCE_DATE_EPOCH), so unchanged inputs give the same
# layers. DEBIAN_MIRROR may point at a snapshot of the archive to pin the packages too.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in podman mmdebstrap node npm; do
  command -v "$tool" >/dev/null || { echo "build-image: needs $tool (apt-get install $tool)" >&2; exit 1; }
done
[ -f build/Release/edgetun.node ] || { echo "build-image: no addon build; run npm ci first" >&2; exit 1; }

version=$(node -p 'require("./package.json").version')
tag=${1:-edgetun:${version}}
node_bin=$(readlink -f "$(command -v node)")
node_version=$("$node_bin" --version)
base=localhost/edgetun-base:bookworm-node${node_version#v}
app=localhost/edgetun-app:${version}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

if ! podman image exists "$base"; then
  echo "build-image: making $base" >&2
  # merged-usr by a hook rather than the usrmerge package (which pulls in perl); no manuals,
  # translations or docs but the copyright files.
  mmdebstrap --variant=essential --quiet \
    --include=iproute2,wireguard-tools,libcap2-bin,passwd,libstdc++6 \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook="copy-in $node_bin /usr/local/bin" \
    --customize-hook='chroot "$1" /usr/local/bin/node --version' \
    --customize-hook='for f in /usr/local/bin/node /usr/bin/ip /usr/bin/wg; do chroot "$1" setcap cap_net_admin+ep "$f"; done' \
    bookworm "$stage/base.tar" "$mirror"
  podman import --change 'CMD ["/bin/bash"]' "$stage/base.tar" "$base"
  rm "$stage/base.tar"
fi

echo "build-image: making $app" >&2
npm run --silent build
mkdir -p "$stage/app/dist" "$stage/app/build/Release"
cp package.json package-lock.json "$stage/app/"
cp -r dist/src "$stage/app/dist/src"
cp build/Release/edgetun.node "$stage/app/build/Release/"
# Only the run-time dependencies; no scripts: the addon and dist are the ones built above.
(cd "$stage/app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
tar -C "$stage" --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
  -cf "$stage/app.tar" app
podman image rm "$app" >/dev/null 2>&1 || true # the previous one, not to leave it dangling
podman import "$stage/app.tar" "$app"

podman build --isolation chroot --timestamp "$SOURCE_DATE_EPOCH" \
  --build-arg RUNTIME_IMAGE="$base" --build-arg APP_IMAGE="$app" \
  -t "$tag" .
echo "build-image: built $tag" >&2
