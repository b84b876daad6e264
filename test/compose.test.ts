import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ENV_SCHEMA, loadConfig } from '@candlewick/common';
import { readTape, tapeSymbols } from '@candlewick/common';
import { ROLES } from '@candlewick/cli';
import { BUNDLED_TAPE, ROOT, tempDir } from './helpers.js';
import { composeCommand, DOCKER_REQUIRED, replayLine } from './docker/docker.js';

interface Service {
  image?: string;
  build?: unknown;
  command?: string[];
  entrypoint?: string[];
  user?: string;
  environment?: Record<string, string>;
  healthcheck?: { test?: string[]; disable?: boolean };
  volumes?: string[];
  secrets?: string[];
  depends_on?: Record<string, { condition: string }>;
  ports?: unknown;
  container_name?: string;
  profiles?: string[];
}

const composeText = readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8');
const compose = parse(composeText, { merge: true }) as { services: Record<string, Service>; secrets: Record<string, { file: string }> };
const services = compose.services;
/** The secret file a role's variable names, where the test keeps it (the container's /run/secrets/…). */
function secretFileOf(key: string): string | undefined {
  if (key in SECRETS) return secretFiles[SECRETS[key as keyof typeof SECRETS]]!;
  if (key === 'REDIS_SENTINEL_PASSWORD_FILE') return secretFiles.redis_password!;
  if (key === 'HTTP_TOKEN_FILE') return secretFiles.http_token!;
  if (key === 'DATABASE_PASSWORD_FILE') return secretFiles.postgres_password!;
  return undefined;
}

/** the services that run a candlewick role (data-init runs the image as a one-shot root step) */
const candlewick = Object.entries(services).filter(([, s]) => s.build !== undefined && s.entrypoint === undefined);
const SECRETS = {
  REDIS_PASSWORD_FILE: 'redis_password',
  FINNHUB_TOKEN_FILE: 'finnhub_token',
  MASSIVE_API_KEY_FILE: 'massive_api_key',
  ALPACA_API_KEY_FILE: 'alpaca_api_key',
  ALPACA_API_SECRET_FILE: 'alpaca_api_secret',
} as const;

/** Compose's ${VAR:-default} / ${VAR:?message} / ${VAR} interpolation, from `vars`. */
function interpolate(text: string, vars: Record<string, string>): string {
  return text.replace(/\$\{([A-Z_]+)(?::([-?])([^}]*))?\}/g, (_, name: string, op: string | undefined, arg: string) => {
    const v = vars[name];
    if (v !== undefined && v !== '') return v;
    if (op === '?') throw new Error(`${name}: ${arg}`);
    return op === '-' ? arg : '';
  });
}

// what a user's secrets/ holds: a password, and no Finnhub or Massive key (replay)
const secretsDir = tempDir('compose-secrets');
const secretFiles: Record<string, string> = {};
for (const [name, value] of [
  ['redis_password', 'pw'],
  ['finnhub_token', ''],
  ['massive_api_key', ''],
  ['alpaca_api_key', ''],
  ['alpaca_api_secret', ''],
  ['http_token', ''],
  ['postgres_password', 'pgpw'],
] as const) {
  secretFiles[name] = join(secretsDir, name);
  writeFileSync(secretFiles[name]!, value);
}
afterAll(() => rmSync(secretsDir, { recursive: true, force: true }));

/**
 * `docker compose -f … --profile replay --profile postgres config -q` on `files`, with the secret files and `vars` in a
 * clean environment and an env file of its own (a developer's .env changes nothing); undefined where
 * no compose tool runs: the parse checks are what can run there (CI installs one).
 */
function composeConfig(files: string[], vars: Record<string, string>) {
  const tool = composeCommand();
  if (!tool) {
    expect(DOCKER_REQUIRED, 'CANDLEWICK_REQUIRE_DOCKER=1 but neither `docker compose` nor `docker-compose` runs').toBe(false);
    return undefined;
  }
  const [cmd, ...pre] = tool;
  const envFile = join(secretsDir, 'compose.env');
  writeFileSync(envFile, '');
  const secrets = {
    ...Object.fromEntries(Object.entries(SECRETS).map(([k, s]) => [k, secretFiles[s]!])),
    POSTGRES_PASSWORD_FILE: secretFiles.postgres_password!,
  };
  return spawnSync(
    cmd!,
    [
      ...pre,
      '--env-file',
      envFile,
      ...files.flatMap((f) => ['-f', join(ROOT, f)]),
      ...['replay', 'postgres'].flatMap((p) => ['--profile', p]),
      'config',
      '-q',
    ],
    {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...secrets, ...vars },
      encoding: 'utf8',
    },
  );
}

describe('docker-compose.yml, .env.example and Dockerfile', () => {
  it('every candlewick service runs a real CLI role with variables the configuration knows, and values it accepts', () => {
    const roles = new Set<string>(ROLES);
    const known = new Set(Object.keys(ENV_SCHEMA.shape));
    expect(candlewick.map(([name]) => name).sort()).toEqual([
      'aggregator',
      'backfill',
      'closer',
      'ingestor',
      'pg-sink',
      'replay-server',
      'serve',
      'writer',
    ]);
    for (const [name, svc] of candlewick) {
      expect(svc.command?.length, name).toBe(1);
      expect(roles.has(svc.command![0]!), `${name}: ${svc.command![0]} is a role`).toBe(true);
      const env = svc.environment ?? {};
      for (const key of Object.keys(env)) expect(known.has(key), `${name}: ${key} is a configuration variable`).toBe(true);
      // with the README's replay line, the configuration loads as the container would load it,
      // its secret files where compose mounts them
      const vars = replayLine().env;
      const resolved = Object.fromEntries(Object.entries(env).map(([k, v]) => [k, secretFileOf(k) ?? interpolate(String(v), vars)]));
      expect(() => loadConfig(resolved), name).not.toThrow();
    }
  });

  it('secrets are files: no secret value in any environment, each role reads the mounted file, no usable default', () => {
    for (const [name, svc] of candlewick) {
      const env = svc.environment!;
      for (const key of ['REDIS_PASSWORD', 'FINNHUB_TOKEN', 'MASSIVE_API_KEY'])
        expect(env[key], `${name}: ${key} is not in its environment`).toBeUndefined();
      expect(env.REDIS_URL, name).not.toMatch(/@/);
      for (const [key, secret] of Object.entries(SECRETS)) {
        expect(env[key], name).toBe(`/run/secrets/${secret}`);
        expect(svc.secrets, name).toContain(secret);
      }
    }
    // the page's token, for the page alone
    expect([services.serve!.environment!.HTTP_TOKEN_FILE, services.serve!.secrets]).toEqual([
      '/run/secrets/http_token',
      ['redis_password', 'finnhub_token', 'massive_api_key', 'alpaca_api_key', 'alpaca_api_secret', 'http_token'],
    ]);
    expect(interpolate(compose.secrets.http_token!.file, {})).toBe('./secrets/http_token');
    // the secret files default to secrets/ beside the compose file; a missing one stops `up` (the bind
    // source does not exist), and there is no default password anywhere
    for (const secret of Object.values(SECRETS)) expect(interpolate(compose.secrets[secret]!.file, {})).toBe(`./secrets/${secret}`);
    // .env.example: paths, never values; every name one the compose file reads (set or commented out)
    const example = readFileSync(join(ROOT, '.env.example'), 'utf8');
    const entries = example
      .split('\n')
      .filter((l) => /^#?[A-Z_]+=/.test(l))
      .map((l) => l.replace(/^#/, '').split('=') as [string, string]);
    const used = new Set([...composeText.matchAll(/\$\{([A-Z_]+)/g)].map((m) => m[1]));
    for (const [key] of entries) expect(used.has(key), `.env.example: ${key} is read by docker-compose.yml`).toBe(true);
    expect(entries.filter(([k, v]) => /PASSWORD|TOKEN|KEY/.test(k) && !k.endsWith('_FILE') && v !== '')).toEqual([]);
    expect(Object.fromEntries(entries).REDIS_PASSWORD_FILE).toMatch(/^\.\/secrets\//);
    // the one line that makes them, in the compose file and .env.example alike
    const line =
      "mkdir -p secrets && head -c 24 /dev/urandom | base64 | tr -d '/+=' > secrets/redis_password && touch secrets/finnhub_token secrets/massive_api_key secrets/alpaca_api_key secrets/alpaca_api_secret secrets/http_token";
    expect(composeText).toContain(line);
    expect(example).toContain(line);
    const pgLine = "head -c 24 /dev/urandom | base64 | tr -d '/+=' > secrets/postgres_password";
    expect(composeText).toContain(pgLine);
    expect(example).toContain(pgLine);
    expect(interpolate(compose.secrets.postgres_password!.file, {})).toBe('./secrets/postgres_password');
  });

  it('the postgres profile: PostgreSQL with its password from a secret file, a volume and a health check; pg-sink writing to it', () => {
    const pg = services.postgres!;
    const sink = services['pg-sink']!;
    expect([pg.profiles, sink.profiles]).toEqual([['postgres'], ['postgres']]);
    // the official image (a local stand-in where Docker Hub is out of reach: test/docker/base-images.sh)
    expect(pg.image).toBe('postgres:15-bookworm');
    expect(pg.environment).toEqual({
      POSTGRES_USER: 'candlewick',
      POSTGRES_DB: 'candlewick',
      POSTGRES_PASSWORD_FILE: '/run/secrets/postgres_password',
    });
    expect(pg.secrets).toEqual(['postgres_password']);
    expect(pg.volumes).toEqual(['postgres-data:/var/lib/postgresql/data']);
    expect(pg.ports).toBeUndefined();
    expect(pg.healthcheck!.test!.slice(0, 2)).toEqual(['CMD', 'pg_isready']);
    expect(pg.healthcheck!.test!.join(' ')).toContain('-h 127.0.0.1 -U candlewick -d candlewick');
    expect(sink.command).toEqual(['pg-sink']);
    const env = sink.environment!;
    const url = new URL(env.DATABASE_URL!);
    expect([url.protocol, url.username, url.password, url.host, url.pathname]).toEqual([
      'postgres:',
      'candlewick',
      '',
      'postgres:5432',
      '/candlewick',
    ]);
    expect(env.DATABASE_PASSWORD).toBeUndefined();
    expect(env.DATABASE_PASSWORD_FILE).toBe('/run/secrets/postgres_password');
    expect(sink.secrets).toContain('postgres_password');
    expect(sink.depends_on).toEqual({ redis: { condition: 'service_healthy' }, postgres: { condition: 'service_healthy' } });
    // the password file for pg-sink alone: no other role gets it
    for (const [name, svc] of candlewick) if (name !== 'pg-sink') expect(svc.secrets ?? [], name).not.toContain('postgres_password');
    // the same replay line with the profile on
    const line = replayLine('docker-compose.yml', ['replay', 'postgres']);
    expect({ ...line, profiles: [] }).toEqual({ ...replayLine(), profiles: [] });
  });

  it("the replay line of docker-compose.yml needs no symbols (a replaying ingestor takes the tape's), with three aggregators", () => {
    const line = replayLine();
    expect(line.env.SYMBOLS).toBeUndefined();
    expect(tapeSymbols(readTape(BUNDLED_TAPE))).toEqual(['BINANCE:XRPETH']);
    expect(line.env.FINNHUB_WS_URL).toBe(`ws://replay-server:${services['replay-server']!.environment!.REPLAY_PORT}`);
    expect(line.aggregators).toBe(3);
  });

  it('health checks everywhere, Redis with AOF, a password file and a volume, aggregators scalable, CSV on a mounted folder the writer owns', () => {
    for (const [name, svc] of Object.entries(services)) {
      if (name === 'data-init') continue;
      expect(svc.healthcheck?.test?.length, `${name} has a health check`).toBeGreaterThan(0);
    }
    for (const [name, svc] of candlewick) {
      const port = svc.environment!.METRICS_PORT;
      expect(svc.healthcheck!.test!.join(' '), name).toContain(`127.0.0.1:${port}/healthz`);
    }
    const redis = services.redis!;
    const cmd = redis.command!.join(' ');
    expect(cmd).toMatch(/--appendonly yes/);
    expect(cmd).toContain('--requirepass "$$(cat /run/secrets/redis_password)"');
    expect(redis.secrets).toEqual(['redis_password']);
    expect(redis.healthcheck!.test!.join(' ')).toContain('REDISCLI_AUTH=');
    expect(redis.volumes?.some((v) => v.endsWith(':/data'))).toBe(true);
    // scaling needs no fixed name and no host port
    expect(services.aggregator!.container_name).toBeUndefined();
    expect(services.aggregator!.ports).toBeUndefined();
    const writer = services.writer!;
    const mount = writer.volumes!.find((v) => v.endsWith(`:${writer.environment!.DATA_DIR}`));
    expect(mount).toBeDefined();
    // Docker creates a missing ./data as root: a root one-shot hands it to uid 1000 before the writer starts
    const init = services['data-init']!;
    expect(init.user).toBe('0:0');
    expect(init.volumes).toEqual([mount]);
    expect(init.entrypoint!.join(' ')).toContain('chown 1000:1000');
    expect(init.healthcheck?.disable).toBe(true);
    expect(writer.depends_on?.['data-init']?.condition).toBe('service_completed_successfully');
  });

  it('the Dockerfile: multi-stage, the project compiler, a failed install fails, no anonymous volume, a health check, non-root', () => {
    const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
    // no frontend fetched from Docker Hub
    expect(text).not.toMatch(/^#\s*syntax=/m);
    const docker = text
      .split('\n')
      .filter((l) => !l.startsWith('#'))
      .join('\n');
    expect(docker.match(/^FROM /gm)?.length).toBeGreaterThanOrEqual(2);
    expect(docker).toMatch(/npm ci --omit=dev/);
    // every npm ci is checked by npm ls in the same step (npm has exited 0 from a failed install)
    for (const line of docker.split('\n').filter((l) => l.startsWith('RUN npm ci'))) expect(line).toMatch(/&& npm ls [^&]*--all/);
    expect(docker).toContain('node_modules/.bin/tsc -b');
    expect(docker).not.toMatch(/npx tsc/);
    expect(docker).not.toMatch(/^VOLUME/m);
    expect(docker).toMatch(/^HEALTHCHECK [\s\S]*METRICS_PORT[\s\S]*\/healthz/m);
    const user = /^USER (\S+)/m.exec(docker);
    expect(user?.[1]).toBeDefined();
    expect(['root', '0']).not.toContain(user![1]);
    expect(docker.indexOf('USER')).toBeGreaterThan(docker.lastIndexOf('RUN '));
  });

  it('the compose tool accepts the file', () => {
    const r = composeConfig(['docker-compose.yml'], replayLine().env);
    if (!r) return;
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});

describe('docker-compose.ha.yml (Redis with a replica and three Sentinels, on top of docker-compose.yml)', () => {
  const haText = readFileSync(join(ROOT, 'docker-compose.ha.yml'), 'utf8');
  const ha = parse(haText, { merge: true }) as {
    services: Record<string, Service & { depends_on?: Record<string, { condition: string }> }>;
  };
  const sentinels = Object.keys(ha.services).filter((n) => n.startsWith('sentinel-'));
  const roles = candlewick.map(([name]) => name).filter((n) => n !== 'replay-server');

  it('every role finds the master through the three Sentinels, with the same password file, and waits for them to be healthy', () => {
    expect(sentinels).toEqual(['sentinel-1', 'sentinel-2', 'sentinel-3']);
    for (const role of roles) {
      const svc = ha.services[role];
      expect(svc, `${role} is pointed at the Sentinels`).toBeDefined();
      const env = svc!.environment!;
      expect(env.REDIS_SENTINELS, role).toBe(sentinels.map((s) => `${s}:26379`).join(','));
      expect(env.REDIS_SENTINEL_PASSWORD_FILE, role).toBe('/run/secrets/redis_password');
      for (const dep of [...sentinels, 'redis-replica'])
        expect(svc!.depends_on?.[dep]?.condition, `${role} waits for ${dep}`).toBe('service_healthy');
      // the merged environment loads as the container loads it
      const merged = { ...services[role]!.environment!, ...env };
      const vars = replayLine('docker-compose.ha.yml').env;
      const resolved = Object.fromEntries(Object.entries(merged).map(([k, v]) => [k, secretFileOf(k) ?? interpolate(String(v), vars)]));
      const cfg = loadConfig(resolved);
      expect(cfg.redisSentinels, role).toEqual(sentinels.map((s) => `${s}:26379`));
    }
  });

  it('Redis nodes with AOF that announce their service names and keep their role in a file; Sentinels that agree by majority', () => {
    for (const node of ['redis', 'redis-replica']) {
      const svc = ha.services[node]!;
      const cmd = svc.command!.join(' ');
      expect(cmd, node).toMatch(/--appendonly yes --appendfsync everysec/);
      expect(cmd, node).toContain('--replica-announce-ip "$$NODE_NAME"');
      expect(cmd, node).toContain('--requirepass "$$pw" --masterauth "$$pw"');
      // the role lives in the node's own file on its volume (Sentinel rewrites it), never on the command line
      expect(cmd, node).not.toMatch(/--replicaof|--slaveof/);
      expect(svc.environment!.NODE_NAME, node).toBe(node);
      expect(svc.healthcheck!.test!.join(' '), node).toContain('master_link_status:up');
    }
    expect(ha.services['redis-replica']!.environment!.FIRST_ROLE).toBe('replicaof redis 6379');
    expect(ha.services['redis-replica']!.volumes).toEqual(['redis-replica-data:/data']);
    for (const s of sentinels) {
      const svc = ha.services[s]!;
      const cmd = svc.command!.join(' ');
      // quorum 2 of 3: a majority must agree that the master is down
      expect(cmd, s).toContain('sentinel monitor mymaster redis 6379 2');
      expect(cmd, s).toMatch(/--sentinel resolve-hostnames yes --sentinel announce-hostnames yes --sentinel announce-ip "\$\$NODE_NAME"/);
      expect(cmd, s).toContain('--sentinel auth-pass mymaster "$$pw"');
      expect(svc.environment!.NODE_NAME, s).toBe(s);
      expect(svc.volumes, s).toEqual([`${s}:/data`]);
      expect(svc.healthcheck!.test!.join(' '), s).toContain('sentinel ckquorum mymaster');
    }
  });

  it('the ingestor keeps what Redis acknowledged longer than a failover takes with these settings', () => {
    const downAfter = Number(/down-after-milliseconds mymaster \$\{SENTINEL_DOWN_AFTER_MS:-(\d+)\}/.exec(haText)![1]);
    const retain = loadConfig({ INGEST_RETAIN: interpolate(String(ha.services.ingestor!.environment!.INGEST_RETAIN), {}) }).ingestRetainMs;
    // a failover: the master silent down-after, then the vote, the promotion and every role's reconnect (seconds)
    expect(retain).toBeGreaterThanOrEqual(downAfter + 20_000);
  });

  it('the replay line names both files, and the compose tool accepts them together', () => {
    const line = replayLine('docker-compose.ha.yml');
    expect(line.files).toEqual(['docker-compose.yml', 'docker-compose.ha.yml']);
    expect(line.env).toEqual(replayLine().env);
    const r = composeConfig(line.files, { HTTP_TOKEN_FILE: secretFiles.http_token!, ...line.env });
    if (!r) return;
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
