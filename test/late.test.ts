import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeKeys } from '@candlewick/common';
import { correctionsPath, csvPath } from '@candlewick/common';
import { readTape, type TapeTrade } from '@candlewick/common';
import { BUNDLED_TAPE, readCsv, redisUrl, runCli, tempDir, testRedis, uniquePrefix } from './helpers.js';

const redis = testRedis();
afterAll(() => redis.quit());

const at = (hms: string) => Date.parse(`2024-03-05T${hms}Z`); // 10:00Z = 05:00 EST

describe('event-time windows, out-of-order and late trades', () => {
  const trades = [
    { p: 10, t: at('10:00:10') },
    { p: 11, t: at('10:00:50') },
    { p: 12, t: at('10:01:01') },
    { p: 9, t: at('10:00:59.500') }, // behind the watermark, but 10:01:00 + 2 s grace has not passed: on time
    { p: 13, t: at('10:01:30') },
    { p: 100, t: at('10:00:30') }, // 10:01:00 + 2 s is behind the watermark (10:01:30): late
    { p: 14, t: at('10:02:10') },
  ];

  /** The trades above through the stack (1min and 5min, 2 s grace). */
  async function runTrades(name: string, env: Record<string, string> = {}) {
    const dir = tempDir(name);
    const tape = join(dir, 'tape.jsonl');
    writeFileSync(tape, trades.map((x) => JSON.stringify({ s: 'TEST', p: x.p, v: 1, t: x.t, c: [] })).join('\n'));
    const prefix = uniquePrefix(name);
    const res = await runCli(['stack'], {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: prefix,
      DATA_DIR: dir,
      EXIT_WHEN_IDLE_MS: '400',
      REPLAY_TAPE: tape,
      INTERVALS: '1min,5min',
      GRACE_MS: '2000',
      ...env,
    });
    return { dir, prefix, res };
  }

  it('puts out-of-order trades inside the grace period in their bar, and keeps late ones out, counted and stored', async () => {
    const { dir, prefix, res } = await runTrades('late');
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/late\s+1 /);
    expect(res.stdout).toMatch(/late trades kept in trades:late/);

    const m1 = readCsv(csvPath(dir, '1min', 'TEST')).rows;
    expect(m1.map((r) => [r.timestamp, r.open, r.high, r.low, r.close, r.volume, r.n])).toEqual([
      ['2024-03-05T05:00:00-05:00', 10, 11, 9, 9, 3, 3],
      ['2024-03-05T05:01:00-05:00', 12, 13, 12, 13, 2, 2],
      ['2024-03-05T05:02:00-05:00', 14, 14, 14, 14, 1, 1],
    ]);
    const m5 = readCsv(csvPath(dir, '5min', 'TEST')).rows;
    expect(m5.map((r) => [r.open, r.high, r.low, r.close, r.n])).toEqual([[10, 14, 9, 14, 6]]);

    const late = (await redis.xrange(makeKeys(prefix).late(0), '-', '+')) as [string, string[]][];
    expect(late).toHaveLength(1);
    const f = late[0]![1];
    expect(f[f.indexOf('p') + 1]).toBe('100');
    expect(f[f.indexOf('t') + 1]).toBe(String(at('10:00:30')));
    expect(f[f.indexOf('reason') + 1]).toBe('window-closed-at-ingestion');
    expect(existsSync(correctionsPath(dir, '1min', 'TEST'))).toBe(false); // LATE=drop
  });

  it('LATE=amend: a late trade re-opens nothing but produces corrected bars with a revision, beside the main file', async () => {
    const { dir, prefix, res } = await runTrades('amend', { LATE: 'amend' });
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/late\s+1 /);
    // the main files are exactly as with LATE=drop
    expect(readCsv(csvPath(dir, '1min', 'TEST')).rows.map((r) => [r.high, r.n])).toEqual([
      [11, 3],
      [13, 2],
      [14, 1],
    ]);
    expect(readCsv(csvPath(dir, '5min', 'TEST')).rows.map((r) => [r.high, r.n])).toEqual([[14, 6]]);
    // corrections: the 05:00 bars with the late trade folded in, revision 1
    const c1 = readFileSync(correctionsPath(dir, '1min', 'TEST'), 'utf8')
      .trim()
      .split('\n');
    expect(c1[0]).toBe('timestamp,open,high,low,close,vwap,volume,num_transactions,revision');
    expect(c1.slice(1)).toEqual(['2024-03-05T05:00:00-05:00,10,100,9,9,32.5,4,4,1']);
    const c5 = readFileSync(correctionsPath(dir, '5min', 'TEST'), 'utf8')
      .trim()
      .split('\n');
    expect(c5.slice(1)).toEqual([expect.stringMatching(/^2024-03-05T05:00:00-05:00,10,100,9,14,[\d.]+,7,7,1$/)]);
    // published on bars:{interval} with the revision
    const bars = (await redis.xrange(makeKeys(prefix).bars('1min'), '-', '+')) as [string, string[]][];
    const revs = bars.map(([, f]) => [f[f.indexOf('start') + 1], f[f.indexOf('rev') + 1], f[f.indexOf('n') + 1]]);
    expect(revs).toContainEqual([String(at('10:00:00')), '1', '4']);
    expect(revs.filter((r) => r[1] === '0')).toHaveLength(3);
  });
});

describe('LATE=amend at full replay speed', () => {
  const T = Date.parse('2019-10-11T12:03:17.123Z');
  const T2 = Date.parse('2019-10-12T09:41:07.321Z');
  const lateA = { s: 'BINANCE:XRPETH', p: '0.0015', v: 100, t: T, c: [] as string[] };
  const lateB = { s: 'BINANCE:XRPETH', p: '0.0016', v: 7, t: T2, c: [] as string[] };

  /** The bundled tape with `extra` trades inserted where the tape's time reaches `at` (or their own time). */
  function tapeWith(dir: string, name: string, extra: { trade: typeof lateA; at: number }[]): string {
    const tape = readTape(BUNDLED_TAPE) as TapeTrade[];
    for (const { trade, at } of extra) {
      const i = tape.findIndex((x) => x.t > at);
      tape.splice(i, 0, trade);
    }
    const path = join(dir, `${name}.jsonl`);
    writeFileSync(path, tape.map((x) => JSON.stringify(x)).join('\n'));
    return path;
  }

  async function run(dir: string, tape: string, extra: Record<string, string> = {}) {
    const res = await runCli(['stack'], {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: uniquePrefix('amend-fast'),
      DATA_DIR: dir,
      EXIT_WHEN_IDLE_MS: '500',
      REPLAY_TAPE: tape,
      ...extra,
    });
    expect(res.code, res.stdout.slice(-2000)).toBe(0);
    return res;
  }

  it('a correction is the whole corrected bar (as if the trade had come on time), and nothing past LATE_AMEND_WINDOW is corrected', async () => {
    const base = tempDir('amend-fast');
    const truthDir = join(base, 'truth');
    const lateDir = join(base, 'late');
    const plainDir = join(base, 'plain');
    // the truth: trade A in its place, on time
    await run(truthDir, tapeWith(base, 'truth', [{ trade: lateA, at: T }]));
    await run(plainDir, BUNDLED_TAPE);
    // A arrives 10 minutes late, B 3 hours late (past the 1 h amend window for every interval)
    const res = await run(
      lateDir,
      tapeWith(base, 'late', [
        { trade: lateA, at: T + 10 * 60_000 },
        { trade: lateB, at: T2 + 3 * 3_600_000 },
      ]),
      { LATE: 'amend' },
    );
    expect(res.stdout).toMatch(/late\s+2 \(kept in trades:late; 1 past LATE_AMEND_WINDOW, in no correction\)/);
    for (const interval of ['1min', '5min', '15min', '30min', '1h']) {
      // the main file never changes: it equals the run without the late trades
      expect(readFileSync(csvPath(lateDir, interval, 'BINANCE:XRPETH'), 'utf8'), interval).toBe(
        readFileSync(csvPath(plainDir, interval, 'BINANCE:XRPETH'), 'utf8'),
      );
      const corrections = readFileSync(correctionsPath(lateDir, interval, 'BINANCE:XRPETH'), 'utf8')
        .trim()
        .split('\n')
        .slice(1);
      // exactly one correction per interval: A's bar, revision 1, equal to the truth run's row for it
      expect(corrections, interval).toHaveLength(1);
      const row = corrections[0]!;
      expect(row.endsWith(',1'), row).toBe(true);
      const truth = readFileSync(csvPath(truthDir, interval, 'BINANCE:XRPETH'), 'utf8').split('\n');
      const start = row.slice(0, row.indexOf(','));
      expect(Date.parse(start)).toBeLessThanOrEqual(T);
      expect(
        truth.find((l) => l.startsWith(`${start},`)),
        interval,
      ).toBe(row.slice(0, -2));
    }
  });
});
