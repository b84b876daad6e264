import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BARS_QUEUE, makeKeys } from '@candlewick/common';
import { csvOutputs, klineProblems, ROOT, runCli, tempDir, waitFor } from './helpers.js';
import { barsAsFiles, BARS_AS_CSV_SQL, csvLines, type BarLine } from './postgres.js';
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
 * stack up with the replay and postgres profiles and three aggregators, every container healthy, every
 * CSV byte for byte what `candlewick stack` writes from the same bundled tape, and every row of the
 * PostgreSQL table (written by the pg-sink service) its CSV row; then everything torn down. Then the same with docker-compose.ha.yml on top (a master, a replica, three Sentinels), the
 * master container killed mid-replay: every role follows the promoted replica, every bar exact. The
 * test talks only to the Docker engine's socket, to its own containers (through `docker inspect`,
 * `docker exec` and the bind-mounted data folder; no Redis port is published) and to loopback (the
 * reference stack). Building the image runs `npm ci`, which reaches the npm registry, as npm does.
 */

const problem = dockerProblem(true);
if (problem && !DOCKER_REQUIRED) {
  console.warn(`compose end-to-end test skipped: ${problem}. CANDLEWICK_REQUIRE_DOCKER=1 makes this a failure (CI sets it).`);
}

/** The replay line of docker-compose.yml with the bars in PostgreSQL too: what a user types in front of `docker compose … up`. */
const REPLAY = replayLine('docker-compose.yml', ['replay', 'postgres']);
const AGGREGATORS = REPLAY.aggregators;
/** redis, replay-server, ingestor, closer, writer, backfill, serve, postgres, pg-sink and the aggregators: all long-running and health-checked */
const SERVICES = 9 + AGGREGATORS;
/** the chart page's token (secrets/http_token) */
const HTTP_TOKEN = randomBytes(12).toString('hex');
/** the stream partitions of docker-compose.yml (its default STREAM_PARTITIONS) */
const PARTITIONS = Number(
  /STREAM_PARTITIONS: \$\{STREAM_PARTITIONS:-(\d+)\}/.exec(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'))![1],
);
/** the tape's trades */
const TAPE_TRADES = 12477;

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

const measured: string[] = [];
const note = (line: string) => {
  measured.push(line);
  console.log(`compose e2e: ${line}`);
};

// set in the outer beforeAll: the compose tool, the image built for this run, and what `npm start` writes
let compose: string[] = [];
const image = `candlewick-e2e:${process.pid}-${randomBytes(3).toString('hex')}`;
let reference = new Map<string, string>();

interface Container {
  name: string;
  service: string;
  status: string;
  exit: number;
  health: string;
  restarts: number;
}

/**
 * A compose project of this run only (its own name, secrets, .env and data folder), so nothing of a
 * user's own deployment is touched, run with the files and variables of a replay line, plus `extra`
 * files (test settings).
 */
function composeProject(label: string, line: ReturnType<typeof replayLine>, extra: string[] = []) {
  const project = `cw-${label}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const dir = tempDir(`compose-${label}`);
  // not created here: Docker creates a missing bind-mount source owned by root, as on a fresh clone
  const dataDir = join(dir, 'data');
  const envFile = join(dir, 'compose.env');
  const files = [...line.files.map((f) => join(ROOT, f)), ...extra.map((f) => join(dir, f))];

  /** compose with this project's files and a clean environment: nothing of the caller's shell leaks in. */
  function run(args: string[], timeout = 300_000) {
    const env: Record<string, string> = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...line.env };
    for (const k of ['DOCKER_HOST', 'DOCKER_CONFIG', 'DOCKER_CONTEXT', 'DOCKER_CERT_PATH', 'DOCKER_TLS_VERIFY']) {
      if (process.env[k]) env[k] = process.env[k]!;
    }
    const [cmd, ...pre] = compose;
    const profiles = line.profiles.flatMap((p) => ['--profile', p]);
    const full = [...pre, '--env-file', envFile, ...files.flatMap((f) => ['-f', f]), '-p', project, ...profiles, ...args];
    return spawnSync(cmd!, full, { encoding: 'utf8', env, timeout });
  }

  function ok(args: string[], timeout?: number): string {
    const r = run(args, timeout);
    if (r.status !== 0)
      throw new Error(
        `${compose.join(' ')} ${args.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`}):\n${r.stdout}\n${r.stderr}`,
      );
    return r.stdout;
  }

  /** service, state, exit code and health of every container of the project */
  function containers(): Container[] {
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

  /** the one container of a service */
  function container(service: string): string {
    const c = containers().find((c) => c.service === service);
    if (!c) throw new Error(`no container of ${service} in ${project}`);
    return c.name;
  }

  function logs(services: string[] = [], tail = 40): string {
    const r = run(['logs', '--no-color', '--tail', String(tail), ...services], 60_000);
    return `${r.stdout}${r.stderr}`;
  }

  /** What a user's .env and secrets/ hold; then `up` with the line's aggregators. */
  function up(): void {
    // readable by the containers' uid 1000 whatever this process's umask
    const secret = (name: string, value: string) => {
      writeFileSync(join(dir, name), value);
      chmodSync(join(dir, name), 0o644);
      return join(dir, name);
    };
    const env = {
      REDIS_PASSWORD_FILE: secret('redis_password', randomBytes(18).toString('hex')),
      POSTGRES_PASSWORD_FILE: secret('postgres_password', randomBytes(18).toString('hex')),
      FINNHUB_TOKEN_FILE: secret('finnhub_token', ''),
      MASSIVE_API_KEY_FILE: secret('massive_api_key', ''),
      ALPACA_API_KEY_FILE: secret('alpaca_api_key', ''),
      ALPACA_API_SECRET_FILE: secret('alpaca_api_secret', ''),
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
    ok(['up', '-d', '--no-build', '--scale', `aggregator=${line.aggregators}`]);
  }

  /** Down with its volumes, its folder removed; throws naming anything of the project left behind. */
  function down(): void {
    if (compose.length) run(['down', '-v', '--remove-orphans', '-t', '20']);
    // the writer's files belong to uid 1000: where this test is not root or that user, remove them as root in a container
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      if (existsSync(dataDir))
        dockerQuiet(['run', '--rm', '--user', '0', '--entrypoint', 'rm', '-v', `${dataDir}:/data`, image, '-rf', '/data/raw']);
      rmSync(dir, { recursive: true, force: true });
    }
    const left = [
      ...dockerQuiet(['ps', '-a', '-q', '--filter', `label=com.docker.compose.project=${project}`]).split('\n'),
      ...dockerQuiet(['network', 'ls', '-q', '--filter', `label=com.docker.compose.project=${project}`]).split('\n'),
      ...dockerQuiet(['volume', 'ls', '-q', '--filter', `label=com.docker.compose.project=${project}`]).split('\n'),
    ].filter(Boolean);
    if (left.length) throw new Error(`left behind by compose project ${project}: ${left.join(' ')}`);
  }

  /** The CSV files as they are now (none before the writer's first row). */
  const current = () => (existsSync(join(dataDir, 'raw')) ? csvOutputs(dataDir) : new Map<string, string>());

  /**
   * Waits until the files equal the reference; otherwise until they have not changed for 30 s
   * (the tape takes seconds), or `until` at the latest. Returns them.
   */
  async function settledFiles(until: number): Promise<Map<string, string>> {
    let files = current();
    let lastChange = Date.now();
    while (!sameFiles(files, reference) && Date.now() < until && Date.now() - lastChange < 30_000) {
      await new Promise((r) => setTimeout(r, 500));
      const now = current();
      if (!sameFiles(now, files)) lastChange = Date.now();
      files = now;
    }
    return files;
  }

  return { project, dir, dataDir, run, ok, containers, container, logs, up, down, settledFiles };
}

const sameFiles = (a: Map<string, string>, b: Map<string, string>) => a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);
/** data rows per file */
const rows = (m: Map<string, string>) => Object.fromEntries([...m].map(([k, v]) => [k, v.trimEnd().split('\n').length - 1]).sort());

/** Row counts first (readable when they differ), then every byte: the files are the reference stack's. */
function expectReferenceFiles(files: Map<string, string>): void {
  if (!sameFiles(files, reference))
    for (const [name, text] of reference) if (files.get(name) !== text) note(`${name} differs: ${difference(files.get(name), text)}`);
  expect(rows(files)).toEqual(rows(reference));
  for (const [name, text] of reference) expect(files.get(name), name).toBe(text);
}

describe.skipIf(problem !== undefined && !DOCKER_REQUIRED)('docker compose on a Docker engine', () => {
  let imagesBefore = new Set<string>();

  beforeAll(async () => {
    if (problem) throw new Error(`CANDLEWICK_REQUIRE_DOCKER=1, but ${problem}`);
    compose = composeCommand()!;
    note(`engine ${docker(['version', '--format', '{{.Server.Version}}'])}, compose: ${compose.join(' ')}`);

    let t = Date.now();
    ensureBaseImages(['node:20-bookworm-slim', 'redis:7-alpine', 'postgres:15-bookworm']);
    note(`base images ready in ${secs(Date.now() - t)}`);

    // what `npm start` writes from the bundled tape
    const refDir = tempDir('compose-reference');
    const stack = await runCli(['stack'], { DATA_DIR: refDir, LOG_LEVEL: 'warn' });
    if (stack.code !== 0) throw new Error(`the reference stack failed (exit ${stack.code}):\n${stack.stdout}\n${stack.stderr}`);
    reference = csvOutputs(refDir);
    rmSync(refDir, { recursive: true, force: true });

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
  }, 30 * 60_000);

  afterAll(() => {
    if (problem) return;
    dockerQuiet(['rmi', image]);
    removeNewDanglingImages(imagesBefore);
    console.log(`compose e2e measured:\n  ${measured.join('\n  ')}`);
    const left = dockerQuiet(['images', '-q', image]);
    if (left) throw new Error(`image ${image} left behind`);
  }, 5 * 60_000);

  describe('docker-compose.yml, end to end', () => {
    const p = composeProject('e2e', REPLAY);
    const { project, dir, dataDir, containers } = p;
    let upAt = 0;
    let healthyAt = 0;
    let filesExact = false;
    let tableExact = false;
    let stopped = false;

    beforeAll(() => {
      upAt = Date.now();
      p.up();
    }, 10 * 60_000);

    afterAll(() => p.down(), 5 * 60_000);

    it(`comes up with ${AGGREGATORS} aggregators, and every container reports healthy`, async () => {
      const until = Date.now() + 180_000;
      let state = containers();
      const ready = () =>
        state.filter((c) => c.health === 'healthy').length === SERVICES &&
        state.filter((c) => c.service === 'aggregator').length === AGGREGATORS &&
        state.some((c) => c.service === 'data-init' && c.status === 'exited' && c.exit === 0);
      // a role that keeps crashing will not become healthy: stop waiting at its third restart
      const crashing = () => state.filter((c) => c.restarts >= 3).map((c) => c.name);
      // when the services of the postgres profile, and all the others, were first seen healthy: what the profile adds
      const PG = ['postgres', 'pg-sink'];
      const seen = new Map<string, number>();
      const watch = () => {
        for (const service of PG)
          if (!seen.has(service) && state.some((c) => c.service === service && c.health === 'healthy')) seen.set(service, Date.now());
        if (!seen.has('others') && state.filter((c) => !PG.includes(c.service) && c.health === 'healthy').length === SERVICES - PG.length)
          seen.set('others', Date.now());
      };
      watch();
      while (!ready() && Date.now() < until && crashing().length === 0) {
        await new Promise((r) => setTimeout(r, 1000));
        state = containers();
        watch();
      }
      if (!ready()) console.log(`crash-looping: ${crashing().join(' ') || 'none'}\n${p.logs([], 30)}`);
      expect(state.map((c) => `${c.service} ${c.status} ${c.health || `exit ${c.exit}`}`).sort()).toEqual(
        [
          'backfill running healthy',
          'closer running healthy',
          'data-init exited exit 0',
          'ingestor running healthy',
          'pg-sink running healthy',
          'postgres running healthy',
          'redis running healthy',
          'replay-server running healthy',
          'serve running healthy',
          'writer running healthy',
          ...Array.from({ length: AGGREGATORS }, () => 'aggregator running healthy'),
        ].sort(),
      );
      healthyAt = Date.now();
      note(`every container healthy ${secs(healthyAt - upAt)} after up`);
      note(
        `first seen healthy after up: the services outside the postgres profile ${secs(seen.get('others')! - upAt)}, postgres ${secs(seen.get('postgres')! - upAt)}, pg-sink ${secs(seen.get('pg-sink')! - upAt)}`,
      );
    }, 200_000);

    it("shows no secret: not in any container's configuration (docker inspect), not in Redis's or PostgreSQL's process list", () => {
      expect(healthyAt, 'the stack came up healthy').toBeGreaterThan(0);
      const passwords = ['redis_password', 'postgres_password'].map((f) => readFileSync(join(dir, f), 'utf8'));
      for (const c of containers()) {
        const config = dockerQuiet(['inspect', '-f', '{{json .Config}} {{json .HostConfig}}', c.name]);
        // the two that use the database password name its file, never its value
        if (c.service === 'postgres' || c.service === 'pg-sink') expect(config, c.name).toContain('/run/secrets/postgres_password');
        for (const password of passwords) expect(config, c.name).not.toContain(password);
      }
      for (const [service, process] of [
        ['redis', 'redis-server'],
        ['postgres', 'postgres'],
      ] as const) {
        const top = dockerQuiet(['top', p.container(service)]);
        expect(top, service).toContain(process);
        for (const password of passwords) expect(top, service).not.toContain(password);
      }
    });

    it('writes every CSV file byte for byte as `candlewick stack` does from the same tape', async () => {
      expect(healthyAt, 'the stack came up healthy').toBeGreaterThan(0);
      // 2 minutes after health at the latest
      const files = await p.settledFiles(healthyAt + 120_000);
      // the writer's last append, by the files' own modification times (one kernel clock for host and containers)
      const lastRow = Math.max(0, ...[...files.keys()].map((k) => statSync(join(dataDir, 'raw', k)).mtimeMs));
      note(`CSV rows ${JSON.stringify(rows(files))} (stack: ${JSON.stringify(rows(reference))})`);
      if (lastRow > 0) note(`last row written ${secs(lastRow - upAt)} after up`);
      if (!sameFiles(files, reference)) console.log(p.logs(['writer', 'closer', 'ingestor'], 20));
      expectReferenceFiles(files);
      filesExact = true;
    }, 200_000);

    /** The bars table through psql inside the postgres container, on its socket (the image trusts its own socket), by CSV file. */
    const tableFiles = () => {
      const US = '\x1f';
      const out = docker([
        'exec',
        p.container('postgres'),
        'psql',
        '-X',
        '-q',
        '-v',
        'ON_ERROR_STOP=1',
        '-U',
        'candlewick',
        '-d',
        'candlewick',
        '-At',
        '-F',
        US,
        '-c',
        BARS_AS_CSV_SQL,
      ]);
      const rows = out
        .split('\n')
        .filter(Boolean)
        .map((l): BarLine => {
          const [interval, symbol, line] = l.split(US) as [string, string, string];
          return { interval, symbol, line };
        });
      return barsAsFiles(rows);
    };

    it('writes every bar into PostgreSQL: each row of the table is its CSV row, no row more', async () => {
      expect(filesExact, "the CSV files are the stack's").toBe(true);
      const t = Date.now();
      const files = csvLines(csvOutputs(dataDir));
      // psql inside the postgres container, on its socket (the image trusts its own socket): one line a bar
      const same = (a: Map<string, string[]>) =>
        a.size === files.size && [...files].every(([k, v]) => JSON.stringify(a.get(k)) === JSON.stringify(v));
      // pg-sink writes a moment after the writer: 30 s at the most
      let rows = tableFiles();
      while (!same(rows) && Date.now() - t < 30_000) {
        await new Promise((r) => setTimeout(r, 500));
        rows = tableFiles();
      }
      note(
        `PostgreSQL: ${[...rows.values()].reduce((n, l) => n + l.length, 0)} rows in bars, equal to the CSV files ${secs(Date.now() - t)} after they were`,
      );
      if (!same(rows)) console.log(p.logs(['pg-sink', 'postgres'], 30));
      expect([...rows.keys()].sort()).toEqual([...files.keys()].sort());
      for (const [file, lines] of files) expect(rows.get(file), file).toEqual(lines);
      tableExact = true;
    }, 60_000);

    it("serves the chart page and the API on the host: the bars it returns are the files'", async () => {
      expect(healthyAt, 'the stack came up healthy').toBeGreaterThan(0);
      const port = p.ok(['port', 'serve', '8080']).trim().split(':').pop();
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
      const queues = (await (await fetch(`${base}/queues/api/queues`, { headers: auth })).json()) as {
        queues: { readOnlyMode: boolean }[];
      };
      expect(queues.queues.map((q) => q.readOnlyMode)).toEqual([true, true]);
      // the token is in no container's configuration
      for (const c of containers()) expect(dockerQuiet(['inspect', '-f', '{{json .Config}}', c.name]), c.name).not.toContain(HTTP_TOKEN);
    }, 60_000);

    it('stops cleanly: every role exits 0 on SIGTERM within its grace period', () => {
      p.ok(['stop', '-t', '20'], 120_000);
      const state = containers();
      expect(state.filter((c) => c.exit !== 0).map((c) => `${c.name}: exit ${c.exit}`)).toEqual([]);
      // no anonymous volumes: only the named Redis and PostgreSQL volumes belong to the project
      const volumes = state.flatMap((c) =>
        dockerQuiet(['inspect', '-f', '{{range .Mounts}}{{.Type}}:{{.Name}} {{end}}', c.name])
          .split(' ')
          .filter((m) => m.startsWith('volume:')),
      );
      expect([...new Set(volumes)].sort()).toEqual([`volume:${project}_postgres-data`, `volume:${project}_redis-data`]);
      stopped = true;
    }, 150_000);

    it('postgres started again keeps the table on its volume: no second initdb, every process as the postgres user (uid 999)', async () => {
      expect(stopped && tableExact, 'the table was the files, and the project stopped cleanly').toBe(true);
      const t = Date.now();
      p.ok(['start', 'postgres']);
      await waitFor(() => containers().find((c) => c.service === 'postgres')?.health === 'healthy', 60_000, 'postgres healthy again');
      note(`PostgreSQL started again: healthy ${secs(Date.now() - t)} after its start`);
      expect(tableFiles()).toEqual(csvLines(csvOutputs(dataDir)));
      const name = p.container('postgres');
      const log = spawnSync(DOCKER, ['logs', name], { encoding: 'utf8' });
      expect(`${log.stdout}${log.stderr}`.match(/PostgreSQL init process complete/g)).toHaveLength(1);
      const uids = dockerQuiet(['top', name, '-o', 'pid,uid,comm'])
        .split('\n')
        .slice(1)
        .filter(Boolean)
        .map((l) => l.trim().split(/\s+/)[1]);
      expect(uids.length).toBeGreaterThan(1);
      expect([...new Set(uids)]).toEqual(['999']);
      p.ok(['stop', '-t', '20', 'postgres'], 60_000);
      expect(containers().find((c) => c.service === 'postgres')?.exit).toBe(0);
    }, 120_000);
  });

  describe('docker-compose.ha.yml: a replica and three Sentinels, the master container killed mid-replay', () => {
    const HA = replayLine('docker-compose.ha.yml');
    const p = composeProject('ha', HA, ['pace.yml']);
    const keys = makeKeys('cw');
    /** the services that run a role and talk to Redis (the replay server does not) */
    const ROLES = ['ingestor', 'aggregator', 'closer', 'writer', 'backfill', 'serve'];
    const names = new Map<string, string>();
    const name = (service: string) => {
      if (!names.has(service)) names.set(service, p.container(service));
      return names.get(service)!;
    };
    let killedAt = 0;
    let filesExact = false;

    /** redis-cli in a container of the project, with the password from its secret file: one command a line, the raw replies */
    function redisCli(service: string, commands: string[], port = 6379): string {
      return execFileSync(
        DOCKER,
        [
          'exec',
          '-i',
          name(service),
          'sh',
          '-c',
          'REDISCLI_AUTH="$(cat /run/secrets/redis_password)" exec redis-cli -p "$0"',
          String(port),
        ],
        { input: `${commands.join('\n')}\n`, encoding: 'utf8', timeout: 30_000, stdio: ['pipe', 'pipe', 'pipe'] },
      );
    }

    /** trades in, merged and late as a node holds them, summed over the partitions; undefined while it cannot say */
    function counters(service: string): { in: number; merged: number; late: number } | undefined {
      const fields = [
        ['in', (q: number) => keys.clock(q)],
        ['merged', (q: number) => keys.partitionStats(q)],
        ['late', (q: number) => keys.partitionStats(q)],
      ] as const;
      const commands = fields.flatMap(([field, key]) => Array.from({ length: PARTITIONS }, (_, q) => `HGET ${key(q)} ${field}`));
      let out: string[];
      try {
        out = redisCli(service, commands).split('\n').slice(0, commands.length);
      } catch {
        return undefined;
      }
      if (out.length < commands.length || out.some((v) => !/^\d*$/.test(v))) return undefined;
      const sum = (i: number) => out.slice(i * PARTITIONS, (i + 1) * PARTITIONS).reduce((s, v) => s + Number(v || 0), 0);
      return { in: sum(0), merged: sum(1), late: sum(2) };
    }

    /** the master the Sentinels name now */
    const sentinelMaster = () => redisCli('sentinel-1', ['SENTINEL GET-MASTER-ADDR-BY-NAME mymaster'], 26379).split('\n')[0];

    beforeAll(() => {
      // test settings: the tape at 10,000× its recorded pace (~20 s), each trade with its recorded
      // time (so the bars are the reference's), so that the kill lands mid-replay
      writeFileSync(
        join(p.dir, 'pace.yml'),
        "services:\n  replay-server:\n    environment:\n      REPLAY_SPEED: '10000'\n      REPLAY_SHIFT: 'false'\n",
      );
      p.up();
    }, 10 * 60_000);

    afterAll(() => p.down(), 5 * 60_000);

    it('the master killed (docker kill) a quarter into the replay: the Sentinels promote the replica, and trades flow again', async () => {
      await waitFor(() => (counters('redis-replica')?.in ?? 0) > 3000, 240_000, 'a quarter of the tape ingested (read on the replica)');
      const atKill = counters('redis-replica')!.in;
      killedAt = Date.now();
      docker(['kill', name('redis')]);
      await waitFor(() => sentinelMaster() === 'redis-replica', 60_000, 'the Sentinels to promote redis-replica');
      const promotedMs = Date.now() - killedAt;
      // what the replica had when it was promoted (all the master could send it): only the roles
      // writing to it as the new master raise it now
      const atPromotion = counters('redis-replica')!.in;
      await waitFor(() => (counters('redis-replica')?.in ?? 0) > atPromotion, 60_000, 'trades flowing into the promoted replica');
      const resumedMs = Date.now() - killedAt;
      note(
        `HA: master killed with ${atKill} of ${TAPE_TRADES} trades ingested; replica promoted ${secs(promotedMs)} after the kill, trades flowing again ${secs(resumedMs)} after it`,
      );
      // the kill landed mid-replay: most of the tape came after it
      expect(atKill).toBeLessThan(TAPE_TRADES / 2);
      expect(promotedMs).toBeLessThan(30_000);
    }, 360_000);

    it("every bar exact: the files byte for byte those of `candlewick stack`, equal to Binance's klines; trades in = merged", async () => {
      expect(killedAt, 'the master was killed mid-replay').toBeGreaterThan(0);
      const files = await p.settledFiles(Date.now() + 180_000);
      note(`HA: CSV rows ${JSON.stringify(rows(files))}`);
      if (!sameFiles(files, reference)) {
        // where the bars stopped, in the failure's own message (a CI log keeps only its end): each
        // stage's counts on the promoted node, the writer's queue, and every role's last lines
        const q = `${keys.queuePrefix()}:${BARS_QUEUE}`;
        let queue: string;
        try {
          queue = redisCli('redis-replica', [
            `LLEN ${q}:wait`,
            `LLEN ${q}:active`,
            `ZCARD ${q}:completed`,
            `ZCARD ${q}:failed`,
            `ZCARD ${q}:delayed`,
          ])
            .trim()
            .split('\n')
            .join('/');
        } catch (err) {
          queue = `unreadable (${(err as Error).message.split('\n')[0]})`;
        }
        const health = p
          .containers()
          .map((c) => `${c.service} ${c.status} ${c.health}`.trim())
          .join(', ');
        const state = `trades ${JSON.stringify(counters('redis-replica'))}; bars queue wait/active/completed/failed/delayed ${queue}; ${health}`;
        expect.soft(sameFiles(files, reference), `${state}\n${p.logs(ROLES, 25)}`).toBe(true);
      }
      expectReferenceFiles(files);
      expect(klineProblems(p.dataDir)).toEqual([]);
      expect(counters('redis-replica')).toEqual({ in: TAPE_TRADES, merged: TAPE_TRADES, late: 0 });
      filesExact = true;
    }, 240_000);

    it('every role healthy again, and said the failover once: one WARN when it started, one "Redis is back", no ERROR, no stack trace', async () => {
      expect(filesExact, 'every bar exact').toBe(true);
      // /healthz fails while Redis is away; the next check after it is back passes
      const format = (c: Container) =>
        `${c.service} ${c.status === 'running' ? `running ${c.health}` : `exit ${c.exit}`} restarts ${c.restarts}`;
      const expected = [
        'backfill running healthy restarts 0',
        'closer running healthy restarts 0',
        'data-init exit 0 restarts 0',
        'ingestor running healthy restarts 0',
        // docker kill is a stop by hand for Docker: `restart: unless-stopped` leaves it down
        'redis exit 137 restarts 0',
        'redis-replica running healthy restarts 0',
        'replay-server running healthy restarts 0',
        'sentinel-1 running healthy restarts 0',
        'sentinel-2 running healthy restarts 0',
        'sentinel-3 running healthy restarts 0',
        'serve running healthy restarts 0',
        'writer running healthy restarts 0',
        ...Array.from({ length: HA.aggregators }, () => 'aggregator running healthy restarts 0'),
      ].sort();
      let state = p.containers().map(format).sort();
      const until = Date.now() + 60_000;
      while (JSON.stringify(state) !== JSON.stringify(expected) && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 1000));
        state = p.containers().map(format).sort();
      }
      expect(state).toEqual(expected);

      const said: Record<string, string> = {};
      const outages: number[] = [];
      for (const c of p.containers().filter((c) => ROLES.includes(c.service) || c.service === 'replay-server')) {
        const log = spawnSync(DOCKER, ['logs', c.name], { encoding: 'utf8', maxBuffer: 64 << 20 });
        const text = `${log.stdout}${log.stderr}`;
        const count = (re: RegExp) => text.match(re)?.length ?? 0;
        const errors = text.split('\n').filter((l) => /"level":(50|60)\b/.test(l));
        for (const m of text.matchAll(/"downS":([\d.]+),"msg":"Redis is back"/g)) outages.push(Number(m[1]));
        if (errors.length) console.log(`${c.name}:\n${errors.slice(0, 5).join('\n')}`);
        said[c.name] = [
          ...(c.service === 'replay-server' ? [] : [`lost ${count(/lost the connection to Redis/g)}`, `back ${count(/"Redis is back"/g)}`]),
          `errors ${errors.length}`,
          `stack traces ${count(/\n\s+at .*\(.*\.js:\d+:\d+\)/g)}`,
        ].join(', ');
      }
      expect(said).toEqual(
        Object.fromEntries(
          Object.keys(said).map((n) => [
            n,
            n.includes('replay-server') ? 'errors 0, stack traces 0' : 'lost 1, back 1, errors 0, stack traces 0',
          ]),
        ),
      );
      if (outages.length) note(`HA: each role's outage, by its "Redis is back": ${Math.min(...outages)}–${Math.max(...outages)} s`);
      const sentinel = spawnSync(DOCKER, ['logs', name('sentinel-1')], { encoding: 'utf8' });
      expect(`${sentinel.stdout}${sentinel.stderr}`).toMatch(/\+switch-master mymaster redis 6379 redis-replica 6379/);
    }, 120_000);

    it('the killed master, started again, comes back as a replica of the promoted one with every trade, and keeps that role', async () => {
      expect(filesExact, 'every bar exact').toBe(true);
      const startedAt = Date.now();
      p.ok(['start', 'redis']);
      const replication = () => {
        try {
          return redisCli('redis', ['INFO replication']);
        } catch {
          return '';
        }
      };
      const healthy = () => p.containers().find((c) => c.service === 'redis')?.health === 'healthy';
      await waitFor(
        () =>
          /role:slave/.test(replication()) &&
          /master_host:redis-replica\b/.test(replication()) &&
          /master_link_status:up/.test(replication()) &&
          healthy(),
        120_000,
        'the old master to follow redis-replica, healthy',
      );
      note(
        `HA: the old master started again: a replica of redis-replica, in sync and healthy ${secs(Date.now() - startedAt)} after its start`,
      );
      expect(counters('redis')).toEqual({ in: TAPE_TRADES, merged: TAPE_TRADES, late: 0 });
      // Sentinel rewrote its config file: a later restart keeps it a replica
      expect(docker(['exec', name('redis'), 'grep', '^replicaof', '/data/redis.conf'])).toBe('replicaof redis-replica 6379');
      expect(sentinelMaster()).toBe('redis-replica');
    }, 180_000);

    it('stops cleanly: every container exits 0; only the named volumes', () => {
      expect(filesExact, 'every bar exact').toBe(true);
      p.ok(['stop', '-t', '20'], 120_000);
      const state = p.containers();
      expect(state.filter((c) => c.exit !== 0).map((c) => `${c.name}: exit ${c.exit}`)).toEqual([]);
      const volumes = state.flatMap((c) =>
        dockerQuiet(['inspect', '-f', '{{range .Mounts}}{{.Type}}:{{.Name}} {{end}}', c.name])
          .split(' ')
          .filter((m) => m.startsWith('volume:')),
      );
      expect([...new Set(volumes)].sort()).toEqual(
        ['redis-data', 'redis-replica-data', 'sentinel-1', 'sentinel-2', 'sentinel-3'].map((v) => `volume:${p.project}_${v}`),
      );
    }, 150_000);
  });
});
