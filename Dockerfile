# syntax=docker/dockerfile:1
# First draft (issue 6 hardens it): one image, every role; the command picks the role.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.base.json tsconfig.json ./
COPY packages ./packages
RUN npm ci --no-audit --no-fund && npx tsc -b

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
COPY --from=build /app/packages ./packages
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force \
  && find packages -name '*.ts' -not -name '*.d.ts' -delete
COPY tapes ./tapes
USER node
ENTRYPOINT ["node", "packages/cli/dist/cli.js"]
CMD ["help"]
