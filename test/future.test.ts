import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { csvPath, makeKeys } from '@candlewick/common';
import { BUNDLED_TAPE, csvOutputs, readCsv, redisUrl, runCli, tempDir, testRedis, uniquePrefix } from './helpers.js';

/**
 * Trades from the future (issue 21, item 2): a trade stamped far ahead of the feed or the clock
 * never moves the watermark. It is rejected and kept in trades:rejected with its reason, and the
 * files are those of a clean run — through the real stack and in `candlewick bars` alike, under
 * CLOCK=event and CLOCK=wall; a jump the following trades confirm (a new day) is accepted.
 */
const redis = testRedis();
afterAll(() => redis.quit());

const H = 3_600_000;
const Y2099 = Date.UTC(2099, 11, 31, 12);

interface Row {
  s: string;
  p: number | string;
  v: number;
  t: number;
  c: string[];
}

function bundledRows(): Row[] {
  const rows = JSON.parse(gunzipSync(readFileSync(BUNDLED_TAPE)).toString('utf8')) as { info: { p: string; q: string; T: number } }[];
  return rows.map((r) => ({ s: 'BINANCE:XRPETH', p: Number(r.info.p), v: Number(r.info.q), t: r.info.T, c: [] }));
}

function writeTape(dir: string, name: string, rows: Row[]): string {
  const path = join(dir, name);
  writeFileSync(path, rows.map((r) => JSON.stringify(r)).join('\n'));
  return path;
}

async function rejectedReasons(prefix: string): Promise<string[]> {
  const entries = (await redis.xrange(makeKeys(prefix).rejected(), '-', '+')) as [string, string[]][];
  return entries.map(([, f]) => f[f.indexOf('reason') + 1]!);
}

async function stack(name: string, env: Record<string, string>) {
  const dir = env.DATA_DIR ?? tempDir(name);
  const prefix = env.KEY_PREFIX ?? uniquePrefix(name);
  const res = await runCli(['stack'], {
    REDIS_URL: redisUrl(),
    KEY_PREFIX: prefix,
    DATA_DIR: dir,
    EXIT_WHEN_IDLE_MS: '500',
    INTERVALS: '1min,1h',
    ...env,
  });
  expect(res.code, `${res.stdout.slice(-3000)}\n${res.stderr.slice(-2000)}`).toBe(0);
  return { dir, prefix, res };
}

async function bars(tape: string, env: Record<string, string> = {}) {
  const dir = tempDir('future-bars');
  const res = await runCli(['bars', '--tape', tape, '--out', dir], { INTERVALS: '1min,1h', REDIS_URL: 'redis://127.0.0.1:1', ...env });
  expect(res.code, res.stderr).toBe(0);
  return { dir, res };
}

describe('a trade from the future', () => {
  it('CLOCK=event: a 2099 trade and one 24 h ahead in the bundled tape are rejected with their reason; the files are a clean run’s', async () => {
    const dir = tempDir('future-event');
    const rows = bundledRows();
    const clean = writeTape(dir, 'clean.jsonl', rows);
    const poisoned = rows.slice();
    // the 24 h one first (later indexes shift by one)
    poisoned.splice(7000, 0, { ...rows[6999]!, p: 0.002, t: rows[6999]!.t + 24 * H });
    poisoned.splice(3000, 0, { ...rows[2999]!, p: 0.003, t: Y2099 });
    const tape = writeTape(dir, 'poisoned.jsonl', poisoned);

    const run = await stack('future-event', { REPLAY_TAPE: tape });
    expect(run.res.stdout).toMatch(/trades in\s+12477\n/);
    expect(run.res.stdout).toMatch(/rejected\s+2 \(plus 0 unreadable frames\), 2 of them ahead of the clock or the feed/);
    expect(run.res.stdout).toMatch(/late\s+0\n/);
    const reasons = await rejectedReasons(run.prefix);
    expect(reasons).toHaveLength(2);
    expect(reasons).toContainEqual(
      expect.stringMatching(/^t \(event time\) is ahead of the clock by \d+(\.\d)?d \(more than FUTURE_LIMIT_MS=900000\)/),
    );
    expect(reasons).toContainEqual(expect.stringMatching(/^t \(event time\) is ahead of the feed by 24h .*jump is not confirmed/));

    // byte for byte a clean run's files, and `candlewick bars` of the same tape decides the same
    const reference = await bars(clean);
    const inProcess = await bars(tape);
    expect(inProcess.res.stdout).toMatch(/rejected\s+2 \(plus 0 unreadable frames\), 2 of them ahead/);
    expect(csvOutputs(run.dir)).toEqual(csvOutputs(reference.dir));
    expect(csvOutputs(inProcess.dir)).toEqual(csvOutputs(reference.dir));
  });

  it('CLOCK=wall: trades ahead of the clock are rejected, the final close keeps the watermark, and the next run is not poisoned', async () => {
    const dir = tempDir('future-wall');
    const prefix = uniquePrefix('future-wall');
    const now = Date.now();
    const minute = (k: number) => Math.floor(now / 60_000) * 60_000 + k * 60_000;
    // run 1: trades in the minutes 5 and 4 ago, with a 2099 trade and one 24 h ahead among them
    const first: Row[] = Array.from({ length: 40 }, (_, i) => ({ s: 'AAA', p: 10 + i, v: 1, t: minute(-5) + i * 3000, c: [] }));
    first.splice(10, 0, { s: 'AAA', p: 99, v: 1, t: Y2099, c: [] });
    first.splice(30, 0, { s: 'AAA', p: 98, v: 1, t: now + 24 * H, c: [] });
    const env = { KEY_PREFIX: prefix, DATA_DIR: dir, CLOCK: 'wall', GRACE_MS: '600000', INTERVALS: '1min' };
    const run1 = await stack('future-wall', { ...env, REPLAY_TAPE: writeTape(dir, 'one.jsonl', first) });
    expect(run1.res.stdout).toMatch(/trades in\s+40\n/);
    expect(run1.res.stdout).toMatch(/rejected\s+2 \(plus 0 unreadable frames\), 2 of them ahead/);
    const reasons = await rejectedReasons(prefix);
    expect(reasons).toEqual([expect.stringMatching(/ahead of the clock by/), expect.stringMatching(/ahead of the clock by 24h/)]);
    const rows1 = readCsv(csvPath(dir, '1min', 'AAA')).rows;
    expect(rows1.map((r) => r.start)).toEqual([minute(-5), minute(-4)]);
    expect(rows1.reduce((n, r) => n + r.n, 0)).toBe(40);
    expect(rows1.every((r) => r.high < 98)).toBe(true);
    // the watermark is the clock's (the final close moves it past the last window closed, plus grace), not 2099's
    expect(Number(await redis.hget(makeKeys(prefix).clock(0), 'wm'))).toBeLessThan(Date.now() + 600_000 + 120_000);

    // run 2 on the same Redis and DATA_DIR: the next minutes' trades are on time and written
    const second: Row[] = Array.from({ length: 20 }, (_, i) => ({ s: 'AAA', p: 50 + i, v: 2, t: minute(-2) + i * 3000, c: [] }));
    const run2 = await stack('future-wall', { ...env, REPLAY_TAPE: writeTape(dir, 'two.jsonl', second) });
    expect(run2.res.stdout).toMatch(/trades in\s+20\n/);
    expect(run2.res.stdout).toMatch(/late\s+0\n/);
    const rows2 = readCsv(csvPath(dir, '1min', 'AAA')).rows;
    expect(rows2.map((r) => r.start)).toEqual([minute(-5), minute(-4), minute(-2)]);
    expect(rows2.slice(2).reduce((n, r) => n + r.n, 0)).toBe(20);
  });

  it('a multi-day tape: the overnight jump, confirmed by the next day’s trades, is accepted; a lone jump at the end is rejected (stack and bars alike)', async () => {
    const dir = tempDir('future-days');
    // one symbol's afternoon, then the next morning 13 h later: every trade belongs in a bar
    const day1 = Date.parse('2024-03-05T15:00:00-05:00');
    const day2 = Date.parse('2024-03-06T04:00:00-05:00');
    const rows: Row[] = [
      ...Array.from({ length: 60 }, (_, i) => ({ s: 'BINANCE:AAABBB', p: 1 + i / 100, v: 1, t: day1 + i * 60_000, c: [] })),
      ...Array.from({ length: 60 }, (_, i) => ({ s: 'BINANCE:AAABBB', p: 2 + i / 100, v: 1, t: day2 + i * 60_000, c: [] })),
      // the tape's last trade, a day ahead: nothing comes to confirm it (decided when the input ends)
      { s: 'BINANCE:AAABBB', p: 9, v: 1, t: day2 + 24 * H, c: [] },
    ];
    const tape = writeTape(dir, 'days.jsonl', rows);
    const run = await stack('future-days', { REPLAY_TAPE: tape });
    expect(run.res.stdout).toMatch(/trades in\s+120\n/);
    expect(run.res.stdout).toMatch(/rejected\s+1 \(plus 0 unreadable frames\), 1 of them ahead/);
    expect(await rejectedReasons(run.prefix)).toEqual([expect.stringMatching(/ahead of the feed by 23h .*no later trade came to confirm/)]);
    expect(run.res.stdout).toMatch(/late\s+0\n/);
    const m1 = readCsv(csvPath(run.dir, '1min', 'BINANCE:AAABBB')).rows;
    expect(m1).toHaveLength(120);
    expect(m1[60]!.start).toBe(day2);
    const inProcess = await bars(tape);
    expect(inProcess.res.stdout).toMatch(/rejected\s+1 \(plus 0 unreadable frames\), 1 of them ahead/);
    expect(csvOutputs(inProcess.dir)).toEqual(csvOutputs(run.dir));
  });
});
