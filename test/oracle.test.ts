import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { partitionOf } from '@candlewick/common';
import { describe, expect, it } from 'vitest';
import { csvPath } from '@candlewick/common';
import { BUNDLED_TAPE, compareBars, loadKlines, readCsv, redisUrl, rollUpKlines, runCli, tempDir, uniquePrefix } from './helpers.js';

/**
 * The end-to-end oracle: the bundled Binance XRP/ETH tape through the real stack (replay server ->
 * ingestor -> Redis -> aggregator -> closer -> writer, each a child process) must reproduce
 * Binance's own published 1-minute klines for every non-empty minute, and the klines rolled up for
 * the longer intervals.
 */
describe('bundled tape through the whole stack', () => {
  it('equals Binance klines at every interval', async () => {
    const dataDir = tempDir('oracle');
    const res = await runCli(['stack'], {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: uniquePrefix('oracle'),
      DATA_DIR: dataDir,
      EXIT_WHEN_IDLE_MS: '500',
    });
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/trades in\s+12477\n/);
    expect(res.stdout).toMatch(/late\s+0\n/);
    expect(res.stdout).toMatch(/bars written\s+1min=2469 5min=706 15min=238 30min=119 1h=60/);

    const klines = loadKlines();
    for (const [interval, minutes] of [
      ['1min', 1],
      ['5min', 5],
      ['15min', 15],
      ['30min', 30],
      ['1h', 60],
    ] as const) {
      const { header, rows } = readCsv(csvPath(dataDir, interval, 'BINANCE:XRPETH'));
      expect(header).toBe('timestamp,open,high,low,close,vwap,volume,num_transactions');
      expect(compareBars(rows, rollUpKlines(klines, minutes))).toEqual([]);
      // rows strictly in time order, stamped in New York time
      for (let i = 1; i < rows.length; i++) expect(rows[i]!.start).toBeGreaterThan(rows[i - 1]!.start);
      expect(rows[0]!.timestamp).toMatch(/^2019-10-10T20:00:00-04:00$/);
      // every trade counted once per interval; vwap inside the bar's range
      expect(rows.reduce((n, r) => n + r.n, 0)).toBe(12477);
      for (const r of rows) expect(r.vwap >= r.low - 1e-12 && r.vwap <= r.high + 1e-12).toBe(true);
    }
    expect(readCsv(join(dataDir, 'raw/1min/BINANCE_XRPETH_1min.csv')).rows).toHaveLength(2469);
  });
});

describe('EMPTY_BARS=carry', () => {
  it('writes Binance’s flat zero-volume minutes too: all 3,560 klines, empty minutes at the previous close', async () => {
    const dataDir = tempDir('carry');
    const res = await runCli(['stack'], {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: uniquePrefix('carry'),
      DATA_DIR: dataDir,
      EXIT_WHEN_IDLE_MS: '500',
      EMPTY_BARS: 'carry',
      INTERVALS: '1min,1h',
    });
    expect(res.code).toBe(0);
    const klines = loadKlines();
    expect(klines).toHaveLength(3560);
    const { rows } = readCsv(csvPath(dataDir, '1min', 'BINANCE:XRPETH'));
    expect(rows).toHaveLength(3560);
    const all = new Map(klines.map((k) => [k[0], k]));
    expect(compareBars(rows, all)).toEqual([]);
    const flat = rows.filter((r) => r.n === 0);
    expect(flat).toHaveLength(3560 - 2469);
    for (const r of flat) expect(r.volume).toBe(0);
    // hours are all traded here, so carry adds none: the 1h file is the same as without it
    expect(readCsv(csvPath(dataDir, '1h', 'BINANCE:XRPETH')).rows).toHaveLength(60);
  });
});

describe('partitions and several aggregators', () => {
  it('three symbols over STREAM_PARTITIONS=3 with AGGREGATORS=2 each equal the klines, and the files equal a one-partition run', async () => {
    const dataDir = tempDir('partitions');
    const tape = join(dataDir, 'three.jsonl');
    const rows = JSON.parse(gunzipSync(readFileSync(BUNDLED_TAPE)).toString('utf8')) as { info: { p: string; q: string; T: number } }[];
    const symbols = ['BINANCE:XRPETH', 'BINANCE:XRPETH2', 'BINANCE:XRPETH3'];
    expect(new Set(symbols.map((s) => partitionOf(s, 3))).size).toBeGreaterThan(1); // they really spread
    const lines: string[] = [];
    for (const r of rows) for (const s of symbols) lines.push(JSON.stringify({ s, p: r.info.p, v: Number(r.info.q), t: r.info.T, c: [] }));
    writeFileSync(tape, lines.join('\n'));
    const run = (dir: string, env: Record<string, string>) =>
      runCli(['stack'], {
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('parts'),
        DATA_DIR: dir,
        EXIT_WHEN_IDLE_MS: '500',
        REPLAY_TAPE: tape,
        INTERVALS: '1min,15min',
        ...env,
      });
    const many = await run(join(dataDir, 'many'), { STREAM_PARTITIONS: '3', AGGREGATORS: '2' });
    expect(many.code).toBe(0);
    expect(many.stdout).toMatch(/trades in\s+37431\n/);
    const klines = loadKlines();
    for (const s of symbols)
      expect(compareBars(readCsv(csvPath(join(dataDir, 'many'), '1min', s)).rows, rollUpKlines(klines, 1))).toEqual([]);
    const one = await run(join(dataDir, 'one'), { STREAM_PARTITIONS: '1', AGGREGATORS: '1' });
    expect(one.code).toBe(0);
    for (const s of symbols) {
      for (const iv of ['1min', '15min']) {
        expect(readFileSync(csvPath(join(dataDir, 'many'), iv, s), 'utf8')).toBe(
          readFileSync(csvPath(join(dataDir, 'one'), iv, s), 'utf8'),
        );
      }
    }
  });
});
