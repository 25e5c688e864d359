# qbd as a storage sidecar. Build stage: compile with dev dependencies.
FROM node:20-bookworm-slim AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json binding.gyp ./
COPY native ./native
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY bench ./bench
COPY schema ./schema
RUN npm run build && npm prune --omit=dev

# Run stage: production dependencies and the build only, as a non-root user.
FROM node:20-bookworm-slim
WORKDIR /opt/qbd
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/build ./build
COPY --from=build /src/dist ./dist
COPY --from=build /src/schema ./schema
COPY bin ./bin
RUN mkdir -p /run/qbd && chown node:node /run/qbd && chmod 0700 /run/qbd
USER node
ENV QBD_RUNTIME_DIR=/run/qbd QBD_QMP_SOCKET=/run/qbd/qmp.sock
VOLUME ["/run/qbd"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=6s --retries=3 CMD ["node", "/opt/qbd/dist/src/container/healthcheck.js"]
# With no arguments the entry point builds the command line from /etc/qbd/config.json and QBD_* variables.
ENTRYPOINT ["node", "/opt/qbd/dist/src/container/entrypoint.js"]
