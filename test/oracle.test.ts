import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { csvPath } from '@candlewick/writer';
import { compareBars, loadKlines, readCsv, redisUrl, rollUpKlines, runCli, tempDir, uniquePrefix } from './helpers.js';

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
    for (const [interval, minutes] of [['1min', 1], ['5min', 5], ['15min', 15], ['30min', 30], ['1h', 60]] as const) {
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
      REDIS_URL: redisUrl(), KEY_PREFIX: uniquePrefix('carry'), DATA_DIR: dataDir, EXIT_WHEN_IDLE_MS: '500',
      EMPTY_BARS: 'carry', INTERVALS: '1min,1h',
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
