import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, statSync, mkdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { connect } from 'node:net';
import { describe, expect, it, onTestFinished } from 'vitest';
import { Redis } from 'ioredis';
import { freePort } from '@candlewick/cli';
import { csvPath, incompletePath } from '@candlewick/common';
import {
  alive,
  compareBars,
  klineProblems,
  loadKlines,
  readCsv,
  redisUrl,
  rollUpKlines,
  runCli,
  startCli,
  tempDir,
  uniquePrefix,
  waitFor,
} from './helpers.js';

/** A stack replaying the bundled tape slowly enough to act on it while it runs (~10 s). */
const paced = (dir: string) => ({ DATA_DIR: dir, REPLAY_SPEED: '20000', REPLAY_SHIFT: 'false', EXIT_WHEN_IDLE_MS: '3000' });

/** Modes of a folder and everything under it, "path -> octal". */
function modes(dir: string, base = dir): Map<string, string> {
  const out = new Map<string, string>([[dir.slice(base.length) || '.', (statSync(dir).mode & 0o777).toString(8)]]);
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) for (const [k, v] of modes(p, base)) out.set(k, v);
    else out.set(p.slice(base.length), (statSync(p).mode & 0o777).toString(8));
  }
  return out;
}

/** Who owns the data: the private Redis, a second stack or writer, a stale pid or address file. */
describe('who owns the data', () => {
  it("a pid file naming another project's redis-server does not stop it; the private Redis needs a password and only its owner reads its files; tap finds it, and says so once the stack has stopped", async () => {
    const dir = tempDir('own');
    // another project's redis-server, on a port and folder of its own, with data in it
    const otherDir = tempDir('other-redis');
    const otherPort = await freePort();
    const other = spawn(
      'redis-server',
      ['--port', String(otherPort), '--bind', '127.0.0.1', '--dir', otherDir, '--save', '', '--appendonly', 'no'],
      {
        stdio: 'ignore',
      },
    );
    onTestFinished(() => void other.kill('SIGKILL'));
    const otherClient = new Redis(`redis://127.0.0.1:${otherPort}`, { lazyConnect: true, retryStrategy: () => 100 });
    otherClient.on('error', () => undefined);
    onTestFinished(() => otherClient.disconnect());
    await waitFor(
      () =>
        otherClient.connect().then(
          () => true,
          () => false,
        ),
      10_000,
      'the other redis-server',
    );
    await otherClient.set('their-data', 'precious');
    // a stale pid file (and address file) naming it, as a reused pid would
    mkdirSync(join(dir, 'redis'), { recursive: true });
    writeFileSync(join(dir, 'redis', 'candlewick-redis.pid'), String(other.pid));
    writeFileSync(join(dir, 'redis', 'candlewick-redis.url'), `redis://127.0.0.1:${otherPort}`);

    const stack = startCli(['stack'], paced(dir));
    onTestFinished(() => void stack.kill('SIGKILL'));
    await waitFor(
      () => /replaying tape/.test(stack.output().stdout) || stack.output().stdout.includes('summary'),
      60_000,
      'the replay to start',
    );

    // the other server was not stopped, its data is there
    expect(alive(other.pid!)).toBe(true);
    expect(await otherClient.get('their-data')).toBe('precious');

    // the private Redis refuses a client without its password
    const url = readFileSync(join(dir, 'redis', 'candlewick-redis.url'), 'utf8').trim();
    expect(url).not.toContain(String(otherPort));
    const port = Number(new URL(url).port);
    const reply = await new Promise<string>((resolve, reject) => {
      const sock = connect(port, '127.0.0.1', () => sock.write('GET x\r\n'));
      sock.once('data', (d) => (sock.destroy(), resolve(d.toString())));
      sock.once('error', reject);
    });
    expect(reply).toMatch(/^-NOAUTH/);
    const password = readFileSync(join(dir, 'redis', 'candlewick-redis.pass'), 'utf8').trim();
    expect(password.length).toBeGreaterThanOrEqual(32);

    // tap beside the stack finds its Redis (address file + password) without REDIS_URL
    const tap = startCli(['tap', 'bars:1min', '--from', '0'], { DATA_DIR: dir, LOG_LEVEL: 'warn' });
    onTestFinished(() => void tap.kill('SIGKILL'));
    await waitFor(() => tap.output().stdout.split('\n').filter(Boolean).length > 10, 60_000, 'tapped bars');
    await tap.stop();

    const code = await stack.exited;
    const out = stack.output();
    expect(code, out.stdout.slice(-3000)).toBe(0);
    expect(klineProblems(dir)).toEqual([]);
    // the password is in no log line or printed URL
    expect(out.stdout + out.stderr + tap.output().stdout + tap.output().stderr).not.toContain(password);
    // its folder and files are its owner's alone (the AOF included)
    const m = modes(join(dir, 'redis'));
    expect(m.get('.')).toBe('700');
    expect([...m.keys()].some((k) => k.includes('appendonly'))).toBe(true);
    for (const [path, mode] of m) expect(mode, path).toBe(statSync(join(dir, 'redis', path)).isDirectory() ? '700' : '600');

    // the stack has stopped: tap says so and exits 3 rather than trying another Redis
    const t0 = Date.now();
    const late = await runCli(['tap', 'trades'], { DATA_DIR: dir, REDIS_CONNECT_TIMEOUT: '20s' }, 30_000);
    expect(late.code, late.stderr).toBe(3);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(late.stderr).toMatch(/the stack on DATA_DIR .* is not running: its address file .*candlewick-redis\.url is stale/);
    expect(alive(other.pid!)).toBe(true);
  });

  it('a second stack on the same Redis, or on the same DATA_DIR, and extra writers are refused naming the holder; the first run stays exact', async () => {
    const dir = tempDir('own-first');
    const prefix = uniquePrefix('own');
    const env = { REDIS_URL: redisUrl(), KEY_PREFIX: prefix };
    const first = startCli(['stack'], { ...env, ...paced(dir) });
    onTestFinished(() => void first.kill('SIGKILL'));
    await waitFor(() => /replaying tape/.test(first.output().stdout), 60_000, 'the replay to start');
    const holder = new RegExp(`already held by a running process \\(host \\S+ pid ${first.pid}, since \\d{4}-`);

    // the same Redis and prefix, its own DATA_DIR
    const second = await runCli(['stack'], { ...env, ...paced(tempDir('own-second')) }, 60_000);
    expect(second.code, second.stdout + second.stderr).toBe(2);
    expect(second.stderr).toMatch(holder);
    expect(second.stderr).toMatch(/one stack per DATA_DIR and key prefix/);
    // the same DATA_DIR, another prefix
    const third = await runCli(['stack'], { REDIS_URL: redisUrl(), KEY_PREFIX: uniquePrefix('own3'), ...paced(dir) }, 60_000);
    expect(third.code, third.stdout + third.stderr).toBe(2);
    expect(third.stderr).toMatch(holder);

    // two extra writers: one on the same files and prefix, one on other files and the same prefix
    const writers = await Promise.all([
      runCli(['write'], { ...env, DATA_DIR: dir }, 30_000),
      runCli(['write'], { ...env, DATA_DIR: tempDir('own-writer') }, 30_000),
    ]);
    for (const w of writers) {
      expect(w.code, w.stdout + w.stderr).toBe(2);
      expect(w.stderr).toMatch(/already held by a running process \(host \S+ pid \d+, since /);
      expect(w.stderr).toMatch(/one writer per DATA_DIR and key prefix/);
    }

    const code = await first.exited;
    const out = first.output().stdout;
    expect(code, out.slice(-3000)).toBe(0);
    expect(out).toMatch(/merged\s+12477\n/);
    expect(klineProblems(dir)).toEqual([]);
  });
});

/** The rows of a CSV written with CSV_EXTRA_COLUMNS: the bar and its `complete` cell. */
function rowsWithComplete(dir: string, interval: string): { bar: ReturnType<typeof readCsv>['rows'][number]; complete: string }[] {
  const { rows } = readCsv(csvPath(dir, interval, 'BINANCE:XRPETH'));
  const lines = readFileSync(csvPath(dir, interval, 'BINANCE:XRPETH'), 'utf8')
    .trimEnd()
    .split('\n')
    .slice(1);
  return rows.map((bar, i) => ({ bar, complete: lines[i]!.split(',')[8]! }));
}

describe('Redis comes back empty', () => {
  /**
   * A paced stack whose Redis `empty` empties well into the replay; the account it gives is checked,
   * in the default CSV format (the bars open then beside their files, in .incomplete.csv) or with
   * CSV_EXTRA_COLUMNS (in the files, complete=false).
   */
  async function runEmptied(dir: string, format: 'default' | 'extra', empty: (redisDir: string) => Promise<void>): Promise<void> {
    const stack = startCli(['stack'], { ...paced(dir), ...(format === 'extra' ? { CSV_EXTRA_COLUMNS: 'true' } : {}) });
    onTestFinished(() => void stack.kill('SIGKILL'));
    await waitFor(
      () => {
        try {
          // well into the replay: more than INGEST_RETAIN (3 s) of trades the ingestor no longer holds
          return readCsv(csvPath(dir, '1min', 'BINANCE:XRPETH')).rows.length > 1000;
        } catch {
          return false;
        }
      },
      60_000,
      'rows to be written',
    );
    await empty(join(dir, 'redis'));

    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([stack.exited, new Promise<'hung'>((r) => (timer = setTimeout(() => r('hung'), 120_000)))]);
    clearTimeout(timer);
    const out = stack.output().stdout;
    expect(
      code,
      out
        .split('\n')
        .filter((l) => /lost|Lost|LOST|gone/.test(l))
        .join('\n') + out.slice(-3000),
    ).toBe(1);
    // said once, in plain words, with the span of the bars that were open
    const said = out.match(
      /Redis lost candlewick's data \(the marker key \S+ is gone[^)]*\): open bars from (\S+) to (\S+) are incomplete/g,
    );
    expect(said, out.slice(-5000)).toHaveLength(1);
    const lostThrough = Date.parse(/open bars from \S+ to (\S+) are incomplete/.exec(out)![1]!);
    expect(out).toMatch(/candlewick summary[\s\S]*DATA LOST {8}Redis lost candlewick's data at/);
    // the loss is said by the ingestor and the stack alone: no other role's alarm about what went with it
    expect(out).not.toMatch(/consumer group missing|they are gone/);

    const klines = loadKlines();
    if (format === 'default') {
      // the bar files hold whole bars only, every one exact; the bars open at the loss are beside them
      const files = /in (\d+) \.incomplete\.csv files?\n((?: {21}\S+\n)+)/.exec(out);
      expect(files, out.slice(-3000)).not.toBeNull();
      const named = files![2]!.trim().split(/\s+/);
      let aside = 0;
      for (const [interval, minutes] of [
        ['1min', 1],
        ['5min', 5],
        ['1h', 60],
      ] as const) {
        const { rows } = readCsv(csvPath(dir, interval, 'BINANCE:XRPETH'));
        expect(new Set(rows.map((r) => r.start)).size, `${interval}: a row twice`).toBe(rows.length);
        expect(
          compareBars(rows, rollUpKlines(klines, minutes)).filter((p) => !p.endsWith('missing bar')),
          interval,
        ).toEqual([]);
        const sidecar = incompletePath(dir, interval, 'BINANCE:XRPETH');
        if (!existsSync(sidecar)) continue;
        expect(named).toContain(join('raw', interval, basename(sidecar)));
        const beside = readCsv(sidecar);
        expect(beside.header).toBe(readCsv(csvPath(dir, interval, 'BINANCE:XRPETH')).header);
        const inFile = new Set(rows.map((r) => r.start));
        for (const r of beside.rows) {
          expect(r.start, `${interval} ${r.timestamp}`).toBeLessThanOrEqual(lostThrough);
          expect(inFile.has(r.start), `${interval} ${r.timestamp} in both files`).toBe(false);
        }
        aside += beside.rows.length;
      }
      expect(named.length).toBeGreaterThanOrEqual(3);
      expect(aside).toBeGreaterThanOrEqual(3);
      return;
    }
    let incomplete = 0;
    for (const [interval, minutes] of [
      ['1min', 1],
      ['5min', 5],
      ['1h', 60],
    ] as const) {
      const rows = rowsWithComplete(dir, interval);
      expect(new Set(rows.map((r) => r.bar.start)).size, `${interval}: a row twice`).toBe(rows.length);
      // every row written as whole is exact; the bars open at the loss say they are not
      const whole = rows.filter((r) => r.complete === 'true').map((r) => r.bar);
      expect(
        compareBars(whole, rollUpKlines(klines, minutes)).filter((p) => !p.endsWith('missing bar')),
        interval,
      ).toEqual([]);
      const partial = rows.filter((r) => r.complete === 'false');
      expect(partial.length, `${interval}: incomplete rows`).toBeGreaterThan(0);
      // only bars that were open when the data went: none starts after the newest trade seen then
      for (const r of partial) expect(r.bar.start, `${interval} ${r.bar.timestamp}`).toBeLessThanOrEqual(lostThrough);
      incomplete += partial.length;
    }
    expect(incomplete).toBeGreaterThanOrEqual(3);
  }

  /** FLUSHALL on the stack's private Redis */
  const flushAll = async (redisDir: string) => {
    const url = readFileSync(join(redisDir, 'candlewick-redis.url'), 'utf8').trim();
    const passFile = join(redisDir, 'candlewick-redis.pass');
    const admin = new Redis(url, existsSync(passFile) ? { password: readFileSync(passFile, 'utf8').trim() } : {});
    try {
      await admin.flushall();
    } finally {
      admin.disconnect();
    }
  };

  it(
    'FLUSHALL mid-run: said once, the bars open then beside their files (.incomplete.csv, named in the summary), never in them as whole, every row of the files exact, and the run ends with a summary and exit 1',
    { timeout: 240_000 },
    () => runEmptied(tempDir('flushall'), 'default', flushAll),
  );

  it(
    'FLUSHALL mid-run with CSV_EXTRA_COLUMNS: the bars open then in their files, complete=false, every other row exact',
    { timeout: 240_000 },
    () => runEmptied(tempDir('flushall-extra'), 'extra', flushAll),
  );

  it(
    'the private Redis killed and restarted on an empty AOF: the same account (default format), and the run ends',
    { timeout: 240_000 },
    async () => {
      await runEmptied(tempDir('empty-aof'), 'default', async (redisDir) => {
        // its AOF gone (a lost disk), then the server killed outright: the stack restarts it on nothing
        rmSync(join(redisDir, 'appendonlydir'), { recursive: true, force: true });
        process.kill(Number(readFileSync(join(redisDir, 'candlewick-redis.pid'), 'utf8')), 'SIGKILL');
      });
    },
  );
});
