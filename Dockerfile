# edgetun's image: runs as the unprivileged user edgetun (uid 10001) and needs only the
# NET_ADMIN capability and the /dev/net/tun device.
#
#   docker build -t edgetun:0.1.0 .                   (with a Docker engine)
#   scripts/build-image.sh                            (Debian's podman, every image made locally)
#
# BUILD_IMAGE and RUNTIME_IMAGE are any Debian-like image with Node.js >= 20.19; the build stage
# also needs python3, make and g++ (node-gyp), the runtime stage iproute2, wireguard-tools and
# libcap2-bin (setcap). Missing packages are installed with apt-get. APP_IMAGE is where /app
# comes from: the build stage below, or an image holding /app already built and pruned the same
# way (scripts/build-image.sh builds it on the host; the build stage is then skipped).
ARG BUILD_IMAGE=node:20-bookworm
ARG RUNTIME_IMAGE=node:20-bookworm-slim
ARG APP_IMAGE=build

FROM ${BUILD_IMAGE} AS build
RUN command -v g++ >/dev/null && command -v make >/dev/null && command -v python3 >/dev/null \
 || (apt-get update && apt-get install -y --no-install-recommends python3 make g++ \
     && rm -rf /var/lib/apt/lists/*)
WORKDIR /app
COPY package.json package-lock.json binding.gyp tsconfig.json tsconfig.build.json ./
COPY native ./native
COPY src ./src
COPY bench ./bench
COPY test/support/fixtures ./test/support/fixtures
# The same install as CI (npm ci builds the addon and the TypeScript), then run-time deps only.
RUN npm ci && npm prune --omit=dev

FROM ${APP_IMAGE} AS app

FROM ${RUNTIME_IMAGE}
RUN (command -v ip && command -v wg && command -v setcap) >/dev/null \
 || (apt-get update \
     && apt-get install -y --no-install-recommends iproute2 wireguard-tools libcap2-bin \
     && rm -rf /var/lib/apt/lists/*)
WORKDIR /app
COPY --from=app /app/package.json ./
COPY --from=app /app/node_modules ./node_modules
COPY --from=app /app/build/Release/edgetun.node ./build/Release/edgetun.node
COPY --from=app /app/dist/src ./dist/src
# A non-root process gets no capability on exec unless the file carries it: node (the TUN
# device), ip (addresses, routes) and wg (hooks such as "PostUp = wg set %i ...") carry
# NET_ADMIN, effective only where the runtime grants it (--cap-add NET_ADMIN). The control
# socket and pid file go to /run/wireguard and /run/edgetun, which the user owns; mount an
# emptyDir there when the root filesystem is read-only. Files that already carry it are left
# alone: a changed attribute copies the whole file (node: 100 MB) into this layer.
RUN chmod +x dist/src/cli/main.js dist/src/cli/wgo-entry.js \
 && ln -s /app/dist/src/cli/main.js /usr/local/bin/edgetun \
 && ln -s /app/dist/src/cli/wgo-entry.js /usr/local/bin/edgetun-go \
 && for tool in node ip wg; do \
      file=$(readlink -f "$(command -v "$tool")"); \
      getcap "$file" | grep -q 'cap_net_admin=ep' || setcap cap_net_admin+ep "$file"; \
    done \
 && (getent group 10001 || groupadd --gid 10001 edgetun) \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin edgetun \
 && mkdir -p /run/wireguard /run/edgetun /etc/edgetun \
 && chown edgetun:edgetun /run/wireguard /run/edgetun
USER 10001:10001
ENTRYPOINT ["edgetun"]
CMD ["--help"]
