import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { csvOutputs, ROOT, runCli, tempDir } from './helpers.js';
import {
  composeCommand,
  docker,
  DOCKER,
  DOCKER_REQUIRED,
  dockerProblem,
  dockerQuiet,
  ensureBaseImages,
  imageIds,
  removeNewDanglingImages,
  replayLine,
} from './docker/docker.js';

/**
 * The README's compose commands on a real Docker engine: the image built from the Dockerfile, the
 * stack up with the replay profile and three aggregators, every container healthy, and every CSV
 * byte for byte what `candlewick stack` writes from the same bundled tape; then everything torn
 * down. The test talks only to the Docker engine's socket, to its own containers (through
 * `docker inspect` and the bind-mounted data folder; no port is published) and to loopback (the
 * reference stack). Building the image runs `npm ci`, which reaches the npm registry, as npm does.
 */

const problem = dockerProblem(true);
if (problem && !DOCKER_REQUIRED) {
  console.warn(`compose end-to-end test skipped: ${problem}. CANDLEWICK_REQUIRE_DOCKER=1 makes this a failure (CI sets it).`);
}

/** The replay line of docker-compose.yml and the README: what a user types in front of `docker compose … up`. */
const REPLAY = replayLine();
const REPLAY_ENV = REPLAY.env;
const AGGREGATORS = REPLAY.aggregators;
/** redis, replay-server, ingestor, closer, writer, backfill, serve and the aggregators: all long-running and health-checked */
const SERVICES = 7 + AGGREGATORS;
/** the chart page's token (secrets/http_token) */
const HTTP_TOKEN = randomBytes(12).toString('hex');

const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** How a CSV file differs from the stack's, in one line: missing rows at the end, or the first differing line. */
function difference(got: string | undefined, want: string): string {
  if (got === undefined) return 'missing';
  const g = got.split('\n');
  const w = want.split('\n');
  let i = 0;
  while (i < g.length && i < w.length && g[i] === w[i]) i++;
  if (i === g.length - 1 && g[i] === '' && w.length > g.length)
    return `the stack's first ${g.length - 2} rows, without its last ${w.length - g.length}: ${w.slice(i, -1).join(' | ')}`;
  return `line ${i + 1}: ${JSON.stringify(g[i] ?? null)}, stack: ${JSON.stringify(w[i] ?? null)}`;
}

describe.skipIf(problem !== undefined && !DOCKER_REQUIRED)('docker compose, end to end on a Docker engine', () => {
  // a project and an image of this run only, so nothing of a user's own deployment is touched
  const project = `cw-e2e-${process.pid}-${randomBytes(3).toString('hex')}`;
  const image = `candlewick-e2e:${project}`;
  const dir = tempDir('compose');
  // not created here: Docker creates a missing bind-mount source owned by root, as on a fresh clone
  const dataDir = join(dir, 'data');
  const envFile = join(dir, 'compose.env');
  const measured: string[] = [];
  let compose: string[] = [];
  let imagesBefore = new Set<string>();
  let reference = new Map<string, string>();
  let upAt = 0;
  let healthyAt = 0;

  const note = (line: string) => {
    measured.push(line);
    console.log(`compose e2e: ${line}`);
  };

  /** compose with this run's files and project, and a clean environment: nothing of the caller's shell leaks in. */
  function composeRun(args: string[], timeout = 300_000) {
    const env: Record<string, string> = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...REPLAY_ENV };
    for (const k of ['DOCKER_HOST', 'DOCKER_CONFIG', 'DOCKER_CONTEXT', 'DOCKER_CERT_PATH', 'DOCKER_TLS_VERIFY']) {
      if (process.env[k]) env[k] = process.env[k]!;
    }
    const [cmd, ...pre] = compose;
    const full = [...pre, '--env-file', envFile, '-f', join(ROOT, 'docker-compose.yml'), '-p', project, '--profile', 'replay', ...args];
    return spawnSync(cmd!, full, { encoding: 'utf8', env, timeout });
  }

  function composeOk(args: string[], timeout?: number): string {
    const r = composeRun(args, timeout);
    if (r.status !== 0)
      throw new Error(
        `${compose.join(' ')} ${args.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`}):\n${r.stdout}\n${r.stderr}`,
      );
    return r.stdout;
  }

  /** service, state, exit code and health of every container of the project */
  function containers(): { name: string; service: string; status: string; exit: number; health: string; restarts: number }[] {
    const ids = dockerQuiet(['ps', '-a', '-q', '--filter', `label=com.docker.compose.project=${project}`])
      .split('\n')
      .filter(Boolean);
    if (ids.length === 0) return [];
    const format =
      '{{.Name}}|{{index .Config.Labels "com.docker.compose.service"}}|{{.State.Status}}|{{.State.ExitCode}}|{{.RestartCount}}|{{if .State.Health}}{{.State.Health.Status}}{{end}}';
    return dockerQuiet(['inspect', '-f', format, ...ids])
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [name, service, status, exit, restarts, health] = line.split('|');
        return {
          name: name!.replace(/^\//, ''),
          service: service!,
          status: status!,
          exit: Number(exit),
          restarts: Number(restarts),
          health: health ?? '',
        };
      });
  }

  function logs(services: string[] = [], tail = 40): string {
    const r = composeRun(['logs', '--no-color', '--tail', String(tail), ...services], 60_000);
    return `${r.stdout}${r.stderr}`;
  }

  beforeAll(async () => {
    if (problem) throw new Error(`CANDLEWICK_REQUIRE_DOCKER=1, but ${problem}`);
    compose = composeCommand()!;
    note(`engine ${docker(['version', '--format', '{{.Server.Version}}'])}, compose: ${compose.join(' ')}`);

    let t = Date.now();
    ensureBaseImages(['node:20-bookworm-slim', 'redis:7-alpine']);
    note(`base images ready in ${secs(Date.now() - t)}`);

    // what `npm start` writes from the bundled tape
    const refDir = join(dir, 'reference');
    const stack = await runCli(['stack'], { DATA_DIR: refDir, LOG_LEVEL: 'warn' });
    if (stack.code !== 0) throw new Error(`the reference stack failed (exit ${stack.code}):\n${stack.stdout}\n${stack.stderr}`);
    reference = csvOutputs(refDir);

    imagesBefore = imageIds();
    t = Date.now();
    // --force-rm: the legacy builder keeps a failed step's container otherwise
    const build = spawnSync(DOCKER, ['build', '--force-rm', '-t', image, ROOT], { encoding: 'utf8', timeout: 15 * 60_000 });
    if (build.status !== 0)
      throw new Error(
        `docker build failed (${build.error?.message ?? `exit ${build.status}`}):\n${`${build.stdout}\n${build.stderr}`.slice(-6000)}`,
      );
    const size = Number(docker(['image', 'inspect', '-f', '{{.Size}}', image]));
    note(`image built in ${secs(Date.now() - t)}, ${(size / 1e6).toFixed(0)} MB`);

    // what a user's .env and secrets/ hold
    // readable by the containers' uid 1000 whatever this process's umask
    const secret = (name: string, value: string) => {
      writeFileSync(join(dir, name), value);
      chmodSync(join(dir, name), 0o644);
      return join(dir, name);
    };
    const env = {
      REDIS_PASSWORD_FILE: secret('redis_password', randomBytes(18).toString('hex')),
      FINNHUB_TOKEN_FILE: secret('finnhub_token', ''),
      MASSIVE_API_KEY_FILE: secret('massive_api_key', ''),
      HTTP_TOKEN_FILE: secret('http_token', HTTP_TOKEN),
      // a free host port for the page (a user's default is 127.0.0.1:8080)
      HTTP_PUBLISH: '127.0.0.1:',
      CANDLEWICK_IMAGE: image,
      HOST_DATA_DIR: dataDir,
    };
    writeFileSync(
      envFile,
      Object.entries(env)
        .map(([k, v]) => `${k}=${v}\n`)
        .join(''),
    );

    upAt = Date.now();
    composeOk(['up', '-d', '--no-build', '--scale', `aggregator=${AGGREGATORS}`]);
  }, 30 * 60_000);

  afterAll(async () => {
    if (problem) return;
    if (compose.length) composeRun(['down', '-v', '--remove-orphans', '-t', '20']);
    // the writer's files belong to uid 1000: where this test is not root or that user, remove them as root in a container
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      if (existsSync(dataDir))
        dockerQuiet(['run', '--rm', '--user', '0', '--entrypoint', 'rm', '-v', `${dataDir}:/data`, image, '-rf', '/data/raw']);
      rmSync(dir, { recursive: true, force: true });
    }
    dockerQuiet(['rmi', image]);
    removeNewDanglingImages(imagesBefore);
    console.log(`compose e2e measured:\n  ${measured.join('\n  ')}`);
    const left = [
      ...dockerQuiet(['ps', '-a', '-q', '--filter', `label=com.docker.compose.project=${project}`]).split('\n'),
      ...dockerQuiet(['network', 'ls', '-q', '--filter', `label=com.docker.compose.project=${project}`]).split('\n'),
      ...dockerQuiet(['volume', 'ls', '-q', '--filter', `label=com.docker.compose.project=${project}`]).split('\n'),
      ...dockerQuiet(['images', '-q', image]).split('\n'),
    ].filter(Boolean);
    if (left.length) throw new Error(`left behind by compose project ${project}: ${left.join(' ')}`);
  }, 5 * 60_000);

  it(`comes up with ${AGGREGATORS} aggregators, and every container reports healthy`, async () => {
    const until = Date.now() + 180_000;
    let state = containers();
    const ready = () =>
      state.filter((c) => c.health === 'healthy').length === SERVICES &&
      state.filter((c) => c.service === 'aggregator').length === AGGREGATORS &&
      state.some((c) => c.service === 'data-init' && c.status === 'exited' && c.exit === 0);
    // a role that keeps crashing will not become healthy: stop waiting at its third restart
    const crashing = () => state.filter((c) => c.restarts >= 3).map((c) => c.name);
    while (!ready() && Date.now() < until && crashing().length === 0) {
      await new Promise((r) => setTimeout(r, 1000));
      state = containers();
    }
    if (!ready()) console.log(`crash-looping: ${crashing().join(' ') || 'none'}\n${logs([], 30)}`);
    expect(state.map((c) => `${c.service} ${c.status} ${c.health || `exit ${c.exit}`}`).sort()).toEqual(
      [
        'backfill running healthy',
        'closer running healthy',
        'data-init exited exit 0',
        'ingestor running healthy',
        'redis running healthy',
        'replay-server running healthy',
        'serve running healthy',
        'writer running healthy',
        ...Array.from({ length: AGGREGATORS }, () => 'aggregator running healthy'),
      ].sort(),
    );
    healthyAt = Date.now();
    note(`every container healthy ${secs(healthyAt - upAt)} after up`);
  }, 200_000);

  it("shows no secret: not in any container's configuration (docker inspect), not in Redis's process list", () => {
    expect(healthyAt, 'the stack came up healthy').toBeGreaterThan(0);
    const password = readFileSync(join(dir, 'redis_password'), 'utf8');
    for (const c of containers()) {
      expect(dockerQuiet(['inspect', '-f', '{{json .Config}} {{json .HostConfig}}', c.name]), c.name).not.toContain(password);
    }
    const redis = containers().find((c) => c.service === 'redis')!;
    const top = dockerQuiet(['top', redis.name]);
    expect(top).toContain('redis-server');
    expect(top).not.toContain(password);
  });

  it('writes every CSV file byte for byte as `candlewick stack` does from the same tape', async () => {
    expect(healthyAt, 'the stack came up healthy').toBeGreaterThan(0);
    const current = () => (existsSync(join(dataDir, 'raw')) ? csvOutputs(dataDir) : new Map<string, string>());
    const same = (a: Map<string, string>, b: Map<string, string>) => a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);
    // Done when the files equal the reference; otherwise once they have not changed for 30 s
    // (the tape takes seconds), or 2 minutes after health at the latest.
    const until = healthyAt + 120_000;
    let files = current();
    let lastChange = Date.now();
    while (!same(files, reference) && Date.now() < until && Date.now() - lastChange < 30_000) {
      await new Promise((r) => setTimeout(r, 500));
      const now = current();
      if (!same(now, files)) lastChange = Date.now();
      files = now;
    }
    const rows = (m: Map<string, string>) => Object.fromEntries([...m].map(([k, v]) => [k, v.trimEnd().split('\n').length - 1]).sort());
    // the writer's last append, by the files' own modification times (one kernel clock for host and containers)
    const lastRow = Math.max(0, ...[...files.keys()].map((k) => statSync(join(dataDir, 'raw', k)).mtimeMs));
    note(`CSV rows ${JSON.stringify(rows(files))} (stack: ${JSON.stringify(rows(reference))})`);
    if (lastRow > 0) note(`last row written ${secs(lastRow - upAt)} after up`);
    if (!same(files, reference)) {
      for (const [name, text] of reference) if (files.get(name) !== text) note(`${name} differs: ${difference(files.get(name), text)}`);
      console.log(logs(['writer', 'closer', 'ingestor'], 20));
    }
    // row counts first (readable when they differ), then every byte
    expect(rows(files)).toEqual(rows(reference));
    for (const [name, text] of reference) expect(files.get(name), name).toBe(text);
  }, 200_000);

  it("serves the chart page and the API on the host: the bars it returns are the files'", async () => {
    expect(healthyAt, 'the stack came up healthy').toBeGreaterThan(0);
    const port = composeOk(['port', 'serve', '8080']).trim().split(':').pop();
    const base = `http://127.0.0.1:${port}`;
    const auth = { authorization: `Bearer ${HTTP_TOKEN}` };
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/api/meta`)).status).toBe(401);
    const meta = (await (await fetch(`${base}/api/meta`, { headers: auth })).json()) as { symbols: string[] };
    expect(meta.symbols).toEqual(['BINANCE:XRPETH']);
    for (const [name, text] of reference) {
      const [interval] = name.split('/');
      const csv = await (
        await fetch(`${base}/api/bars?symbol=BINANCE:XRPETH&interval=${interval}&from=0&limit=50000&format=csv`, { headers: auth })
      ).text();
      expect(csv, name).toBe(text);
    }
    const page = await (await fetch(`${base}/`, { headers: auth })).text();
    expect(page).toContain('lightweight-charts.standalone.production.js');
    const queues = (await (await fetch(`${base}/queues/api/queues`, { headers: auth })).json()) as { queues: { readOnlyMode: boolean }[] };
    expect(queues.queues.map((q) => q.readOnlyMode)).toEqual([true, true]);
    // the token is in no container's configuration
    for (const c of containers()) expect(dockerQuiet(['inspect', '-f', '{{json .Config}}', c.name]), c.name).not.toContain(HTTP_TOKEN);
  }, 60_000);

  it('stops cleanly: every role exits 0 on SIGTERM within its grace period', () => {
    composeOk(['stop', '-t', '20'], 120_000);
    const state = containers();
    expect(state.filter((c) => c.exit !== 0).map((c) => `${c.name}: exit ${c.exit}`)).toEqual([]);
    // no anonymous volumes: only the named Redis volume belongs to the project
    const volumes = state.flatMap((c) =>
      dockerQuiet(['inspect', '-f', '{{range .Mounts}}{{.Type}}:{{.Name}} {{end}}', c.name])
        .split(' ')
        .filter((m) => m.startsWith('volume:')),
    );
    expect([...new Set(volumes)]).toEqual([`volume:${project}_redis-data`]);
  }, 150_000);
});
