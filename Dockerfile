# syntax=docker/dockerfile:1
# One image for every role; the command picks it (docker-compose.yml runs one service per role).

# build: dev dependencies and the TypeScript compiler, then the compiled packages
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.base.json tsconfig.json ./
COPY packages ./packages
RUN npm ci --no-audit --no-fund && npx tsc -b

# runtime: production dependencies, compiled JavaScript, Lua scripts and the bundled tapes only
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    DATA_DIR=/data \
    LOG_FILE=false \
    METRICS_PORT=9464 \
    METRICS_HOST=0.0.0.0
WORKDIR /app
COPY package.json package-lock.json ./
COPY --from=build /app/packages ./packages
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force \
  && find packages -name '*.ts' -not -name '*.d.ts' -delete \
  && find packages -name '*.tsbuildinfo' -delete \
  && mkdir -p /data && chown node:node /data
COPY tapes ./tapes
USER node
EXPOSE 9464
VOLUME ["/data"]
ENTRYPOINT ["node", "packages/cli/dist/cli.js"]
CMD ["help"]
