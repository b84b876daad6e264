import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { commitActivity, csvPath, readTapeTrades } from '@candlewick/common';
import { formatNumber, volumeNumber, vwapOf } from '@candlewick/core';
import { referenceBars, type RefTrade } from './activity-reference.js';
import { freePort } from '@candlewick/cli';
import {
  BUNDLED_TAPE,
  LEAN_AIG_TAPE,
  csvOutputs,
  redisUrl,
  runCli,
  startCli,
  tempDir,
  testKeys,
  testRedis,
  uniquePrefix,
  waitFor,
} from './helpers.js';

/**
 * Activity bars as a user makes them: `candlewick bars` with activity names in INTERVALS, as a
 * child process. Its files hold the bars the reference (test/activity-reference.ts, written from
 * docs/activity-bars.md alone) makes from the tape's trades in event order; the same with one
 * partition and with three; the time bars beside them unchanged; a second run writes nothing; a
 * late trade in no activity bar; a role that cannot build them refuses them.
 */

const XRP_KINDS = [
  '100t',
  '50000v',
  '50val',
  '30t-imb',
  '30000v-imb',
  '100val-run',
  't-imb-e100',
  't-run-e50-w5-k10-min5-max200',
  'v-run-e100',
];
const AIG_KINDS = [
  '500t',
  '100000v',
  '5000000val',
  '50t-imb',
  '100000v-run',
  't-imb-e20-w5-k20-min10-max100',
  'val-imb-e100-k200-min50-max150',
];

/** A tape's trades in event order: by time, the tape's order breaking ties; with `sides`, the feed's aggressor sides too. */
function eventOrder(trades: readonly RefTrade[], sides = false): RefTrade[] {
  return trades
    .map((x, i) => ({ x, i }))
    .sort((a, b) => a.x.t - b.x.t || a.i - b.i)
    .map(({ x }) => ({ s: x.s, t: x.t, p: x.p, v: x.v, ...(sides && x.a ? { a: x.a } : {}) }));
}

/** The rows the reference's bars make, in the file's form (times compared as instants). */
function referenceRows(trades: readonly RefTrade[], name: string, symbol: string): string[][] {
  return referenceBars(
    trades.filter((t) => t.s === symbol),
    name,
  ).map((b) => [
    String(b.seq),
    String(b.start),
    String(b.end),
    b.open,
    b.high,
    b.low,
    b.close,
    formatNumber(vwapOf(b.vwapNumerator, b.volume)),
    formatNumber(volumeNumber(b.volume)),
    String(b.trades),
  ]);
}

function fileRows(path: string): { header: string; rows: string[][] } {
  const [header, ...lines] = readFileSync(path, 'utf8').trimEnd().split('\n');
  return {
    header: header!,
    rows: lines.map((l) => l.split(',')).map(([n, s, e, ...rest]) => [n!, String(Date.parse(s!)), String(Date.parse(e!)), ...rest]),
  };
}

async function bars(tape: string, out: string, env: Record<string, string>) {
  const r = await runCli(['bars', '--tape', tape, '--out', out], env);
  expect(r.code, r.stderr).toBe(0);
  return r;
}

describe('candlewick bars with activity bars', () => {
  for (const [what, tape, kinds, symbol] of [
    ['the bundled tape', BUNDLED_TAPE, XRP_KINDS, 'BINANCE:XRPETH'],
    ['the Lean AIG day', LEAN_AIG_TAPE, AIG_KINDS, 'AIG'],
  ] as const) {
    it(`${what}: every kind's file holds the reference's bars, with one partition or three; the time bars are unchanged`, async () => {
      const intervals = ['1min', '5min', ...kinds].join(',');
      const one = tempDir('activity-1');
      const three = tempDir('activity-3');
      const timeOnly = tempDir('activity-time');
      const r = await bars(tape, one, { INTERVALS: intervals });
      await bars(tape, three, { INTERVALS: intervals, STREAM_PARTITIONS: '3' });
      await bars(tape, timeOnly, { INTERVALS: '1min,5min' });
      const trades = eventOrder(readTapeTrades(tape));
      for (const kind of kinds) {
        const path = csvPath(one, kind, symbol);
        const { header, rows } = fileRows(path);
        expect(header).toBe('bar,start,end,open,high,low,close,vwap,volume,num_transactions');
        const want = referenceRows(trades, kind, symbol);
        expect(want.length, kind).toBeGreaterThan(10);
        expect(rows, kind).toEqual(want);
        expect(r.stdout).toContain(`${kind}=${want.length}`);
      }
      const files = csvOutputs(one);
      expect(csvOutputs(three)).toEqual(files);
      const time = csvOutputs(timeOnly);
      expect(time.size).toBe(2);
      for (const [k, text] of time) expect(files.get(k), k).toBe(text);
      expect(files.size).toBe(2 + kinds.length);
      // an activity bar that had not reached its threshold at the tape's end is said, not written
      expect(r.stdout).toMatch(/activity bars +\d+ still forming at the tape's end/);
    });
  }

  it('a second run writes nothing; a file that does not begin with these bars is left as it is, named, exit 2', async () => {
    const out = tempDir('activity-again');
    const env = { INTERVALS: '1min,100t,t-imb-e100' };
    await bars(BUNDLED_TAPE, out, env);
    const before = csvOutputs(out);
    const again = await bars(BUNDLED_TAPE, out, env);
    expect(again.stdout).toMatch(/bars written +none \(\d+ already in the files\)/);
    expect(csvOutputs(out)).toEqual(before);

    const path = csvPath(out, '100t', 'BINANCE:XRPETH');
    const text = readFileSync(path, 'utf8');
    const lines = text.split('\n');
    lines[3] = lines[3]!.replace(/,100$/, ',99');
    writeFileSync(path, lines.join('\n'));
    const clash = await runCli(['bars', '--tape', BUNDLED_TAPE, '--out', out], env);
    expect(clash.code).toBe(2);
    expect(clash.stderr).toContain(`${path}: its rows are not the first rows of these 100t bars`);
    expect(readFileSync(path, 'utf8')).toBe(lines.join('\n'));
    expect(before.get('t-imb-e100/BINANCE_XRPETH_t-imb-e100.csv')).toMatch(/^bar,start,end,/);
    expect(csvOutputs(out).get('t-imb-e100/BINANCE_XRPETH_t-imb-e100.csv')).toBe(before.get('t-imb-e100/BINANCE_XRPETH_t-imb-e100.csv'));
  });

  it('a late trade goes into no activity bar: the bars are those of the on-time trades', async () => {
    const dir = tempDir('activity-late');
    const tape = join(dir, 'late.jsonl');
    const t0 = Date.parse('2024-03-04T15:00:00Z');
    const trades: RefTrade[] = [];
    const lines: string[] = [];
    for (let i = 0; i < 300; i++) {
      // prices as JSON numbers: the text a trade's price keeps is the number's (170.1, not 170.10)
      const tr = { s: 'AAPL', p: String(170 + ((i * 7) % 13) / 100), v: 1 + (i % 4), t: t0 + i * 1000 };
      trades.push(tr);
      lines.push(JSON.stringify({ ...tr, p: Number(tr.p), c: [] }));
      // at 200 s, a trade from 120 s before: its minute and grace long past
      if (i === 200) lines.push(JSON.stringify({ s: 'AAPL', p: 999, v: 1000, t: t0 + 80_000, c: [] }));
    }
    writeFileSync(tape, `${lines.join('\n')}\n`);
    const out = join(dir, 'out');
    const r = await bars(tape, out, { INTERVALS: '1min,10t,100v,3t-imb' });
    expect(r.stdout).toMatch(/late +1\n/);
    for (const kind of ['10t', '100v', '3t-imb']) {
      const { rows } = fileRows(csvPath(out, kind, 'AAPL'));
      const want = referenceRows(trades, kind, 'AAPL');
      expect(want.length, kind).toBeGreaterThan(5);
      expect(rows, kind).toEqual(want);
    }
  });

  it('a name that is not one, or activity bars alone, is refused naming the rule (exit 2)', async () => {
    const bad = await runCli(['bars', '--out', tempDir('activity-bad')], { INTERVALS: '1min,2.5t' });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('invalid interval "2.5t": a number of trades is a whole number');
    for (const role of ['bars', 'stack']) {
      const alone = await runCli([role], { INTERVALS: '100t', DATA_DIR: tempDir('activity-alone') });
      expect(alone.code, role).toBe(2);
      expect(alone.stderr, role).toContain('name a time interval beside activity bars');
    }
  });
});

/** The activity kinds the pipeline tests cut: every rule, fixed and EWMA. */
const PIPELINE = '1min,5min,100t,50000v,50val,30t-imb,100val-run,t-imb-e100,v-run-e100';

describe('activity bars in the pipeline (candlewick stack)', () => {
  it('two partitions, two aggregators: the files `candlewick bars` writes, byte for byte, on bars:{interval} and from the API', async () => {
    const dir = tempDir('activity-stack');
    const prefix = uniquePrefix('activity-stack');
    const env = { INTERVALS: PIPELINE, STREAM_PARTITIONS: '2' };
    const res = await runCli(['stack'], {
      ...env,
      REDIS_URL: redisUrl(),
      KEY_PREFIX: prefix,
      DATA_DIR: dir,
      AGGREGATORS: '2',
      EXIT_WHEN_IDLE_MS: '500',
    });
    expect(res.code, res.stdout.slice(-3000)).toBe(0);
    const out = tempDir('activity-stack-bars');
    await bars(BUNDLED_TAPE, out, env);
    const want = csvOutputs(out);
    expect(want.size).toBe(9);
    expect(csvOutputs(dir)).toEqual(want);
    expect(res.stdout).toMatch(/bars written +.*100t=124 /);
    // published for other services: one entry per bar, with its number and end
    const tapped = await runCli(
      ['tap', 'bars:100t', '--from', '0'],
      { REDIS_URL: redisUrl(), KEY_PREFIX: prefix, INTERVALS: PIPELINE },
      20_000,
      3000,
    );
    const entries = tapped.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { symbol: string; close: string });
    expect(entries).toHaveLength(124);
    const rows = readFileSync(csvPath(dir, '100t', 'BINANCE:XRPETH'), 'utf8')
      .trimEnd()
      .split('\n')
      .slice(1);
    expect(entries.map((e) => e.close)).toEqual(rows.map((r) => r.split(',')[6]));

    // the API, from the files: every bar as its row, by number, with its end; a range; the CSV as the file
    const port = await freePort();
    const serve = startCli(['serve'], {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: prefix,
      DATA_DIR: dir,
      INTERVALS: PIPELINE,
      HTTP_PORT: String(port),
    });
    try {
      const base = `http://127.0.0.1:${port}`;
      await waitFor(async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.ok === true, 30_000, 'serve /healthz');
      const meta = (await (await fetch(`${base}/api/meta`)).json()) as { intervals: string[]; activityIntervals: string[] };
      expect(meta.activityIntervals).toEqual(['100t', '50000v', '50val', '30t-imb', '100val-run', 't-imb-e100', 'v-run-e100']);
      expect(meta.intervals).toContain('100t');
      const q = (extra: string) => fetch(`${base}/api/bars?symbol=BINANCE%3AXRPETH&interval=100t&${extra}`);
      const all = (await (await q('from=0&limit=5000')).json()) as {
        bars: { bar: number; start: number; end: number; close: string; trades: number }[];
      };
      expect(all.bars.map((b) => [b.bar, b.start, b.end, b.close, b.trades])).toEqual(
        rows.map((r) => r.split(',')).map((f) => [Number(f[0]), Date.parse(f[1]!), Date.parse(f[2]!), f[6], Number(f[9])]),
      );
      const some = (await (await q(`from=${all.bars[9]!.start}&limit=3`)).json()) as { bars: { bar: number }[]; truncated: boolean };
      expect([some.bars.map((b) => b.bar), some.truncated]).toEqual([[10, 11, 12], true]);
      expect(await (await q('from=0&limit=5000&format=csv')).text()).toBe(readFileSync(csvPath(dir, '100t', 'BINANCE:XRPETH'), 'utf8'));
      const bad = await fetch(`${base}/api/bars?symbol=BINANCE%3AXRPETH&interval=7t`);
      expect(bad.status).toBe(400);
      expect(await bad.text()).toContain('100t');
    } finally {
      await serve.stop();
    }
  });

  it("FEED=binance: the feed's aggressor sides decide, in the stack and in `bars` alike", async () => {
    const env = { INTERVALS: '1min,100t,30t-imb,t-imb-e100', MODE: 'replay', FEED: 'binance' };
    const dir = tempDir('activity-sides');
    const res = await runCli(['stack'], {
      ...env,
      REDIS_URL: redisUrl(),
      KEY_PREFIX: uniquePrefix('activity-sides'),
      DATA_DIR: dir,
      EXIT_WHEN_IDLE_MS: '500',
    });
    expect(res.code, res.stdout.slice(-3000)).toBe(0);
    const out = tempDir('activity-sides-bars');
    await bars(BUNDLED_TAPE, out, env);
    const sides = csvOutputs(out);
    expect(csvOutputs(dir)).toEqual(sides);
    // with the tick rule (FEED=finnhub: no sides) the imbalance bars differ, the tick bars do not
    const tick = tempDir('activity-sides-tick');
    await bars(BUNDLED_TAPE, tick, { INTERVALS: env.INTERVALS });
    const ticks = csvOutputs(tick);
    const file = (iv: string) => `${iv}/BINANCE_XRPETH_${iv}.csv`;
    expect(ticks.get(file('100t'))).toBe(sides.get(file('100t')));
    expect(ticks.get(file('30t-imb'))).not.toBe(sides.get(file('30t-imb')));
    const trades = eventOrder(readTapeTrades(BUNDLED_TAPE), true);
    expect(fileRows(join(out, 'raw', file('30t-imb'))).rows).toEqual(referenceRows(trades, '30t-imb', 'BINANCE:XRPETH'));
  });

  it('the closer killed before its cut is committed and after handing it over, the writer after appending: the same bytes', async () => {
    const dir = tempDir('activity-crash');
    const once = mkdtempSync(join(tmpdir(), 'cw-activity-once-'));
    const env = { INTERVALS: PIPELINE };
    const res = await runCli(
      ['stack'],
      {
        ...env,
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('activity-crash'),
        DATA_DIR: dir,
        EXIT_WHEN_IDLE_MS: '1500',
        CLOSE_EVERY_MS: '100',
        INGEST_BATCH: '200',
        REPLAY_SPEED: '30000',
        REPLAY_SHIFT: 'false',
        CANDLEWICK_CRASH: 'activity:cut@3,close:enqueued@4,write:activity@5',
        CANDLEWICK_CRASH_ONCE_DIR: once,
      },
      180_000,
    );
    expect(res.code, res.stdout.slice(-3000)).toBe(0);
    expect(readdirSync(once).sort()).toEqual(['activity_cut', 'close_enqueued', 'write_activity']);
    const out = tempDir('activity-crash-bars');
    await bars(BUNDLED_TAPE, out, env);
    expect(csvOutputs(dir)).toEqual(csvOutputs(out));
  });
});

describe('commitActivity', () => {
  it('commits a cut once: a second cut read from the same place writes nothing', async () => {
    const redis = testRedis();
    const keys = testKeys('activity-commit');
    try {
      const from = { cursor: '', h: '' };
      const cut = {
        from,
        cursor: '5-0',
        h: '60000',
        bars: ['[["100t","X",1,1,2,"s"]]', '[["100t","X",2,3,4,"s"]]'],
        states: new Map([['X', '{"a":1}']]),
      };
      expect(await commitActivity(redis, keys, 0, cut)).toBe(true);
      // a second closer that read before the first committed
      expect(await commitActivity(redis, keys, 0, { ...cut, states: new Map([['X', '{"a":2}']]) })).toBe(false);
      expect(await redis.xlen(keys.outbox(0))).toBe(2);
      expect(await redis.hgetall(keys.activity(0))).toEqual({ cursor: '5-0', h: '60000', 's:X': '{"a":1}' });
      // the next cut, read after it
      expect(
        await commitActivity(redis, keys, 0, { ...cut, from: { cursor: '5-0', h: '60000' }, cursor: '(9-0', h: '120000', bars: [] }),
      ).toBe(true);
      expect(await redis.xlen(keys.outbox(0))).toBe(2);
    } finally {
      redis.disconnect();
    }
  });
});
