# One image for every role; the command picks it (docker-compose.yml runs one service per role).
# No `# syntax=` line: the builder's own Dockerfile frontend is enough, and fetching one from Docker
# Hub breaks builds where Docker Hub is out of reach (air-gapped hosts, registry mirrors).

# build: dev dependencies and the TypeScript compiler, then the compiled packages
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.base.json tsconfig.json ./
COPY packages ./packages
# npm has exited 0 from a failed install ("Exit handler never called!"): `npm ls` fails the step
# when the tree is incomplete, so a broken install stops the build here, where it broke.
RUN npm ci --no-audit --no-fund && npm ls --all >/dev/null
# The project's own compiler: `npx tsc` would fetch an unrelated package named tsc when it is missing.
RUN node_modules/.bin/tsc -b

# runtime: production dependencies, compiled JavaScript, Lua scripts and the bundled tapes only
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    DATA_DIR=/data \
    LOG_FILE=false \
    METRICS_PORT=9464 \
    METRICS_HOST=0.0.0.0 \
    HTTP_HOST=0.0.0.0
WORKDIR /app
COPY package.json package-lock.json ./
COPY --from=build /app/packages ./packages
RUN npm ci --omit=dev --no-audit --no-fund && npm ls --omit=dev --all >/dev/null && npm cache clean --force
RUN find packages -name '*.ts' -not -name '*.d.ts' -delete \
  && find packages -name '*.tsbuildinfo' -delete \
  && mkdir -p /data && chown node:node /data
COPY tapes ./tapes
USER node
EXPOSE 9464 8080
# /data is not a VOLUME: every container of this image would get an anonymous volume it never uses;
# the writer's compose service mounts it. Plain `docker run` gets this health check; compose sets its own.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.METRICS_PORT || 9464) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "packages/cli/dist/cli.js"]
CMD ["help"]
