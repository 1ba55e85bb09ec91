# edgetun sidecar image. Build: docker build -t edgetun . (needs a Docker engine).
# The build stage runs the same install steps as CI (npm ci builds the addon and TypeScript).
FROM node:20-bookworm AS build
WORKDIR /app
COPY package.json package-lock.json binding.gyp tsconfig.json tsconfig.build.json ./
COPY native ./native
COPY src ./src
COPY bench ./bench
COPY test/support/fixtures ./test/support/fixtures
RUN npm ci && npm prune --omit=dev

FROM node:20-bookworm-slim
# iproute2 sets addresses and routes; wireguard-tools gives `wg` for managing the interface.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 wireguard-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/build/Release/edgetun.node ./build/Release/edgetun.node
COPY --from=build /app/dist/src ./dist/src
RUN ln -s /app/dist/src/cli/main.js /usr/local/bin/edgetun && chmod +x /app/dist/src/cli/main.js
ENTRYPOINT ["edgetun"]
CMD ["--help"]
