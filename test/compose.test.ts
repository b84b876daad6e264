import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ENV_SCHEMA, loadConfig } from '@candlewick/common';
import { ROLES } from '@candlewick/cli';
import { ROOT } from './helpers.js';

interface Service {
  image?: string;
  build?: unknown;
  command?: string[];
  environment?: Record<string, string>;
  healthcheck?: { test: string[] };
  volumes?: string[];
  ports?: unknown;
  container_name?: string;
  profiles?: string[];
}

const compose = parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as { services: Record<string, Service> };
const services = compose.services;
const candlewick = Object.entries(services).filter(([, s]) => s.build !== undefined);

/** Compose's ${VAR:-default} / ${VAR:?message} / ${VAR} interpolation, from `vars`. */
function interpolate(text: string, vars: Record<string, string>): string {
  return text.replace(/\$\{([A-Z_]+)(?::([-?])([^}]*))?\}/g, (_, name: string, op: string | undefined, arg: string) => {
    const v = vars[name];
    if (v !== undefined && v !== '') return v;
    if (op === '?') throw new Error(`${name}: ${arg}`);
    return op === '-' ? arg : '';
  });
}

describe('docker-compose.yml and Dockerfile', () => {
  it('every candlewick service runs a real CLI role with variables the configuration knows, and values it accepts', () => {
    const roles = new Set<string>(ROLES);
    const known = new Set(Object.keys(ENV_SCHEMA.shape));
    expect(candlewick.map(([name]) => name).sort()).toEqual(['aggregator', 'backfill', 'closer', 'ingestor', 'replay-server', 'writer']);
    for (const [name, svc] of candlewick) {
      expect(svc.command?.length, name).toBe(1);
      expect(roles.has(svc.command![0]!), `${name}: ${svc.command![0]} is a role`).toBe(true);
      const env = svc.environment ?? {};
      for (const key of Object.keys(env)) expect(known.has(key), `${name}: ${key} is a configuration variable`).toBe(true);
      // with .env's required values, the configuration loads as the container would load it
      const vars = { REDIS_PASSWORD: 'pw' };
      const resolved = Object.fromEntries(Object.entries(env).map(([k, v]) => [k, interpolate(String(v), vars)]));
      expect(() => loadConfig(resolved), name).not.toThrow();
    }
    // no password: compose refuses to start, naming the variable
    expect(() => interpolate(String(services.ingestor!.environment!.REDIS_URL), {})).toThrow(/REDIS_PASSWORD: set REDIS_PASSWORD in \.env/);
  });

  it('health checks everywhere, Redis with AOF, a password and a volume, aggregators scalable, CSV on a mounted volume', () => {
    for (const [name, svc] of Object.entries(services)) expect(svc.healthcheck?.test.length, `${name} has a health check`).toBeGreaterThan(0);
    for (const [name, svc] of candlewick) {
      const port = svc.environment!.METRICS_PORT;
      expect(svc.healthcheck!.test.join(' '), name).toContain(`127.0.0.1:${port}/healthz`);
    }
    const redis = services.redis!;
    const cmd = redis.command!.join(' ');
    expect(cmd).toMatch(/--appendonly yes/);
    expect(cmd).toMatch(/--requirepass "\$\$REDIS_PASSWORD"/);
    expect(redis.volumes?.some((v) => v.endsWith(':/data'))).toBe(true);
    // scaling needs no fixed name and no host port
    expect(services.aggregator!.container_name).toBeUndefined();
    expect(services.aggregator!.ports).toBeUndefined();
    expect(services.writer!.volumes?.some((v) => v.endsWith(`:${services.writer!.environment!.DATA_DIR}`))).toBe(true);
    // the password never sits in the file itself
    expect(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8')).not.toMatch(/REDIS_PASSWORD:\s*\w+\s*$/m);
  });

  it('the Dockerfile is multi-stage, installs production dependencies only and runs as a non-root user', () => {
    const docker = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
    expect(docker.match(/^FROM /gm)?.length).toBeGreaterThanOrEqual(2);
    expect(docker).toMatch(/npm ci --omit=dev/);
    const user = /^USER (\S+)/m.exec(docker);
    expect(user?.[1]).toBeDefined();
    expect(['root', '0']).not.toContain(user![1]);
    expect(docker.indexOf('USER')).toBeGreaterThan(docker.lastIndexOf('RUN '));
  });

  it('docker compose config accepts the file where a Docker client is installed', () => {
    const probe = spawnSync('docker', ['compose', 'version'], { encoding: 'utf8' });
    if (probe.status !== 0) {
      // no Docker client on this machine: the parse checks above are what can run here
      expect(probe.error ?? probe.stderr).toBeTruthy();
      return;
    }
    const out = execFileSync('docker', ['compose', '-f', join(ROOT, 'docker-compose.yml'), 'config', '--quiet'], {
      env: { ...process.env, REDIS_PASSWORD: 'pw' },
      encoding: 'utf8',
    });
    expect(out).toBe('');
  });
});
