import { appendFileSync, existsSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { Queue, Worker } from 'bullmq';
import {
  AGGREGATOR_GROUP,
  BARS_QUEUE,
  closeBars,
  decodeBarEntry,
  ensureGroup,
  incompletePath,
  loadConfig,
  parseBarsJob,
} from '@candlewick/common';
import { BAR_FLAGS, BarCalendar, Clock, barFromTrade, encodeBarState, orderKey } from '@candlewick/core';
import { BarCloser, CLOSE_BARS_PER_CALL, JOB_BARS, barsQueue } from '@candlewick/aggregator';
import { AppendThreads, CsvFiles, FileChangedError, appendHooks, csvPath, lastRowStart, type FileEvent } from '@candlewick/common';
import { Carry, WriterService } from '@candlewick/writer';
import { tempDir, testKeys, testRedis, waitFor } from './helpers.js';

const redis = testRedis();
afterAll(() => redis.quit());
const quiet = pino({ level: 'silent' });
const clock = new Clock('America/New_York');
const start = Date.parse('2019-11-03T05:00:00Z');
const bar = (p: string, n = 1) => ({ ...barFromTrade(p, 2, orderKey(start, '1-0')), trades: n });

describe('CSV files', () => {
  it('never write a bar twice, and learn the last row back from the file after a restart', () => {
    const dir = tempDir('csv');
    const a = new CsvFiles(dir, clock);
    expect(a.append('1h', 'BINANCE:BTCUSDT', start, bar('10'))).toBe('written');
    expect(a.append('1h', 'BINANCE:BTCUSDT', start, bar('10'))).toBe('present');
    expect(a.append('1h', 'BINANCE:BTCUSDT', start + 3_600_000, bar('11'))).toBe('written');
    expect(a.append('1h', 'BINANCE:BTCUSDT', start, bar('10'))).toBe('stale');
    // a new process knows nothing but the file
    const b = new CsvFiles(dir, clock);
    expect(b.append('1h', 'BINANCE:BTCUSDT', start + 3_600_000, bar('11'))).toBe('present');
    expect(b.append('1h', 'BINANCE:BTCUSDT', start + 7_200_000, bar('12'))).toBe('written');
    const path = csvPath(dir, '1h', 'BINANCE:BTCUSDT');
    expect(path).toMatch(/raw\/1h\/BINANCE_BTCUSDT_1h\.csv$/);
    expect(readFileSync(path, 'utf8')).toBe(
      'timestamp,open,high,low,close,vwap,volume,num_transactions\n' +
        '2019-11-03T01:00:00-04:00,10,10,10,10,10,2,1\n' +
        '2019-11-03T01:00:00-05:00,11,11,11,11,11,2,1\n' +
        '2019-11-03T02:00:00-05:00,12,12,12,12,12,2,1\n',
    );
    expect(lastRowStart(path)).toBe(start + 7_200_000);
  });
});

describe('a file cut while a row is appended', () => {
  it("rows cut from a file's end between the append's check and its write: the row is taken out again, the rows cut are said missing, nothing lands after a gap", () => {
    const dir = tempDir('csv-cut-mid-append');
    const events: FileEvent[] = [];
    const files = new CsvFiles(dir, clock, false, (e) => events.push(e));
    const hour = 3_600_000;
    for (let k = 0; k < 10; k++) expect(files.append('1h', 'BINANCE:BTCUSDT', start + k * hour, bar(String(10 + k)))).toBe('written');
    const path = csvPath(dir, '1h', 'BINANCE:BTCUSDT');
    const full = readFileSync(path, 'utf8');
    // the last 3 rows cut by someone else, right between the 11th append's check and its write
    const kept = full.split('\n').slice(0, -4).join('\n') + '\n';
    appendHooks.betweenCheckAndWrite = (p) => {
      appendHooks.betweenCheckAndWrite = undefined;
      truncateSync(p, Buffer.byteLength(kept));
    };
    try {
      expect(() => files.append('1h', 'BINANCE:BTCUSDT', start + 10 * hour, bar('20'))).toThrow(FileChangedError);
    } finally {
      appendHooks.betweenCheckAndWrite = undefined;
    }
    // the file as it was cut (the 11th row not after the gap), and the rows missing said: after the 7th, through the 10th
    expect(readFileSync(path, 'utf8')).toBe(kept);
    expect(events).toEqual([
      { kind: 'rows-missing', path, interval: '1h', symbol: 'BINANCE:BTCUSDT', after: start + 6 * hour, through: start + 9 * hour },
    ]);
  });
});

describe('append threads', () => {
  it("each file's rows in one thread and in order; a file changed under them is 'changed', the rest of that thread's share untried, the other's done", async () => {
    const dir = tempDir('append-threads');
    const paths = Array.from({ length: 40 }, (_, k) => join(dir, `f${k}.csv`));
    for (const p of paths) writeFileSync(p, 'h\n');
    const threads = new AppendThreads(2);
    try {
      const plan = (p: string, text: string) => {
        const st = statSync(p);
        return { path: p, text, size: st.size, ino: st.ino };
      };
      const first = await threads.appendMany(paths.map((p) => plan(p, 'a\n')));
      expect(first.every((r) => typeof r === 'object' && r !== null && 'size' in r && r.size === 4)).toBe(true);
      // someone writes to f7 between the plan and the append
      const planned = paths.map((p) => plan(p, 'b\n'));
      appendFileSync(paths[7]!, 'x\n');
      const replies = await threads.appendMany(planned);
      expect(replies[7]).toBe('changed');
      const untried = replies.flatMap((r, k) => (r === undefined ? [k] : []));
      const done = replies.flatMap((r, k) => (typeof r === 'object' && r !== null && 'size' in r ? [k] : []));
      // the two threads each took a share: the changed file stopped only its own, after f7
      expect(untried.length).toBeGreaterThan(0);
      expect(untried.every((k) => k > 7)).toBe(true);
      expect(done.some((k) => k > 7)).toBe(true);
      expect(done.length + untried.length + 1).toBe(paths.length);
      for (const k of done) expect(readFileSync(paths[k]!, 'utf8')).toBe('h\na\nb\n');
      for (const k of untried) expect(readFileSync(paths[k]!, 'utf8')).toBe('h\na\n');
      expect(readFileSync(paths[7]!, 'utf8')).toBe('h\na\nx\n');
    } finally {
      await threads.stop();
    }
    expect(threads.usable).toBe(false);
  });
});

/** A 1min bar of each symbol open at `start`, its window past grace: one closeBars call of up to `maxBars`; how many it closed. */
async function closeOpenBars(keys: ReturnType<typeof testKeys>, symbols: readonly string[], maxBars: number): Promise<number> {
  await ensureGroup(redis, keys.trades(0), AGGREGATOR_GROUP);
  const p = redis.pipeline();
  for (const s of symbols) {
    p.hset(keys.openBars(0), `1min|${s}|${start}`, encodeBarState(bar('1')));
    p.zadd(keys.openIndex(0), start + 60_000, `1min|${s}|${start}`);
  }
  await p.exec();
  await redis.hset(keys.clock(0), 'wm', String(start + 62_000));
  const o = { group: AGGREGATOR_GROUP, graceMs: 2000, clock: 'event', flush: false, retentionMs: 0, maxBars, amendWindowMs: 0 } as const;
  return (await closeBars(redis, keys, 0, o)).closed;
}

describe('writer', () => {
  it('writes each bar of a retried batch once and publishes it on bars:{interval}', async () => {
    const dir = tempDir('writer');
    const keys = testKeys('writer');
    const cfg = loadConfig({ DATA_DIR: dir, KEY_PREFIX: keys.prefix });
    const w = new WriterService(redis, cfg, keys, quiet);
    const batch = parseBarsJob({
      bars: [0, 1, 2].map((i) => ({
        interval: '1min',
        symbol: 'AAPL',
        start: start + i * 60_000,
        state: encodeBarState(bar(String(100 + i), 3)),
      })),
    });
    expect(await w.processBatch(batch)).toEqual({ written: 3, skipped: 0 });
    // the same job again (a retry after a crash, or a re-enqueued outbox read)
    expect(await w.processBatch(batch)).toEqual({ written: 0, skipped: 2 });
    const rows = readFileSync(csvPath(dir, '1min', 'AAPL'), 'utf8')
      .trim()
      .split('\n');
    expect(rows).toHaveLength(4);
    const published = (await redis.xrange(keys.bars('1min'), '-', '+')) as [string, string[]][];
    // the last bar of the batch is re-published (at least once); nothing is written twice
    expect(published.length).toBe(4);
    expect(published[0]![1]).toEqual(expect.arrayContaining(['s', 'AAPL', 'o', '100', 'n', '3', 'ts', '2019-11-03T01:00:00-04:00']));
    expect(Number(await redis.hget(keys.stats(), 'written:1min'))).toBe(3);
  });

  it('two jobs taken at once (the worker takes two): rows reach each file, and entries each bars:{interval}, in the order the jobs came', async () => {
    const dir = tempDir('writer-two');
    const keys = testKeys('writer-two');
    const cfg = loadConfig({ DATA_DIR: dir, KEY_PREFIX: keys.prefix });
    const w = new WriterService(redis, cfg, keys, quiet);
    const symbols = Array.from({ length: 300 }, (_, k) => `S${k}`);
    // minute m of every symbol, one job a minute: the next job's bars follow the last one's in each
    // file; the first job leads with bars of other files, so a later job left to run beside it
    // would reach each shared file first
    const others = Array.from({ length: 300 }, (_, k) => `T${k}`);
    const job = (m: number) =>
      parseBarsJob({
        bars: [...(m === 0 ? others : []), ...symbols].map((symbol) => ({
          interval: '1min',
          symbol,
          start: start + m * 60_000,
          state: encodeBarState(bar(String(100 + m), m + 1)),
        })),
      });
    // taken together, as the worker does with two at once: none waits for the other to finish
    const results = await Promise.all([0, 1, 2].map((m) => w.processBatch(job(m))));
    expect(results).toEqual([0, 1, 2].map((m) => ({ written: symbols.length + (m === 0 ? others.length : 0), skipped: 0 })));
    for (const symbol of symbols) {
      const rows = readFileSync(csvPath(dir, '1min', symbol), 'utf8')
        .trim()
        .split('\n')
        .slice(1);
      expect(rows.map((r) => r.split(',')[1])).toEqual(['100', '101', '102']);
    }
    const published = ((await redis.xrange(keys.bars('1min'), '-', '+')) as [string, string[]][]).map(([id, f]) =>
      decodeBarEntry(id, '1min', f),
    );
    expect(published.map((b) => `${b.symbol}@${(b.start - start) / 60_000}`)).toEqual(
      [0, 1, 2].flatMap((m) => [...(m === 0 ? others : []), ...symbols].map((symbol) => `${symbol}@${m}`)),
    );
  });

  it('a bar Redis lost the data of (LOST) goes beside its file, in its .incomplete.csv, once; with CSV_EXTRA_COLUMNS in the file, complete=false', async () => {
    const lost = { ...bar('101', 2), flags: BAR_FLAGS.INCOMPLETE | BAR_FLAGS.LOST };
    const job = parseBarsJob({
      bars: [bar('100', 3), lost, bar('102', 4)].map((state, i) => ({
        interval: '1min',
        symbol: 'AAPL',
        start: start + i * 60_000,
        state: encodeBarState(state),
      })),
    });
    const header = 'timestamp,open,high,low,close,vwap,volume,num_transactions';
    {
      const dir = tempDir('writer-lost');
      const keys = testKeys('writer-lost');
      const w = new WriterService(redis, loadConfig({ DATA_DIR: dir, KEY_PREFIX: keys.prefix }), keys, quiet);
      expect(await w.processBatch(job)).toEqual({ written: 3, skipped: 0 });
      // written again whole (a retried job): nothing twice, in either file (the first two skipped as older than the bar file's last row, the lost one included: a bar the bar file is past is not news)
      expect(await w.processBatch(job)).toEqual({ written: 0, skipped: 2 });
      // and by a new writer, which knows only the files
      expect(await new WriterService(redis, loadConfig({ DATA_DIR: dir, KEY_PREFIX: keys.prefix }), keys, quiet).processBatch(job)).toEqual(
        {
          written: 0,
          skipped: 2,
        },
      );
      expect(readFileSync(csvPath(dir, '1min', 'AAPL'), 'utf8')).toBe(
        `${header}\n2019-11-03T01:00:00-04:00,100,100,100,100,100,2,3\n2019-11-03T01:02:00-04:00,102,102,102,102,102,2,4\n`,
      );
      expect(readFileSync(incompletePath(dir, '1min', 'AAPL'), 'utf8')).toBe(
        `${header}\n2019-11-03T01:01:00-04:00,101,101,101,101,101,2,2\n`,
      );
      expect(incompletePath(dir, '1min', 'AAPL')).toMatch(/raw\/1min\/AAPL_1min\.incomplete\.csv$/);
      // published all the same (again with the retries: an append found present is published again), saying it is incomplete and lost
      const published = ((await redis.xrange(keys.bars('1min'), '-', '+')) as [string, string[]][]).map(([id, f]) =>
        decodeBarEntry(id, '1min', f),
      );
      expect(new Set(published.filter((b) => b.start === start + 60_000).map((b) => `${b.complete} ${b.lost}`))).toEqual(
        new Set(['false true']),
      );
    }
    {
      const dir = tempDir('writer-lost-extra');
      const keys = testKeys('writer-lost-extra');
      const w = new WriterService(redis, loadConfig({ DATA_DIR: dir, KEY_PREFIX: keys.prefix, CSV_EXTRA_COLUMNS: 'true' }), keys, quiet);
      expect(await w.processBatch(job)).toEqual({ written: 3, skipped: 0 });
      expect(
        readFileSync(csvPath(dir, '1min', 'AAPL'), 'utf8')
          .trim()
          .split('\n')
          .map((l) => l.split(',')[8]),
      ).toEqual(['complete', 'true', 'false', 'true']);
      expect(existsSync(incompletePath(dir, '1min', 'AAPL'))).toBe(false);
    }
  });

  it('a closer that enqueues the same outbox read twice makes one job', async () => {
    const keys = testKeys('outbox');
    const cfg = loadConfig({ KEY_PREFIX: keys.prefix });
    const queue: Queue = barsQueue(redis, keys);
    const closer = new BarCloser(redis, queue, cfg, keys, quiet);
    const add = () => redis.xadd(keys.outbox(0), '*', 'bar', `1min|AAPL|${start}`, 'state', encodeBarState(bar('1')));
    await add();
    expect(await closer.drainOutbox(0)).toBe(1);
    // crash between enqueue and XDEL: the same entry is read again
    await add();
    expect(await closer.drainOutbox(0)).toBe(1);
    const counts = await queue.getJobCounts('waiting');
    expect(counts.waiting).toBe(1);
    expect(await redis.xlen(keys.outbox(0))).toBe(0);
    await queue.obliterate({ force: true });
    await queue.close();
  });

  it("a closeBars call's bars are one outbox entry, handed over as one job, once even when read twice", async () => {
    const keys = testKeys('outbox-batch');
    const cfg = loadConfig({ KEY_PREFIX: keys.prefix, INTERVALS: '1min' });
    const symbols = ['AAPL', 'BINANCE:BTCUSDT', 'MSFT'];
    expect(await closeOpenBars(keys, symbols, 1000)).toBe(3);
    const fields = ((await redis.xrange(keys.outbox(0), '-', '+')) as [string, string[]][])[0]![1];
    expect(await redis.xlen(keys.outbox(0))).toBe(1);
    const queue: Queue = barsQueue(redis, keys);
    const closer = new BarCloser(redis, queue, cfg, keys, quiet);
    expect(await closer.drainOutbox(0)).toBe(3);
    // a closer that died between enqueueing and deleting reads the same entry again
    await redis.xadd(keys.outbox(0), '*', ...fields);
    expect(await closer.drainOutbox(0)).toBe(3);
    const jobs = await queue.getJobs(['waiting']);
    expect(jobs).toHaveLength(1);
    expect(
      parseBarsJob(jobs[0]!.data)
        .bars.map((b) => `${b.symbol} ${b.start} ${b.rev}`)
        .sort(),
    ).toEqual(symbols.map((s) => `${s} ${start} 0`));
    expect(await redis.xlen(keys.outbox(0))).toBe(0);
    await queue.obliterate({ force: true });
    await queue.close();
  });
});

describe('a writer killed with jobs under way', () => {
  it("its successor finishes them in the order they were added, though one hand-over's jobs share a timestamp: every row kept", async () => {
    const dir = tempDir('writer-orphans');
    const keys = testKeys('writer-orphans');
    const cfg = loadConfig({ DATA_DIR: dir, KEY_PREFIX: keys.prefix, INTERVALS: '1min' });
    const queue: Queue = barsQueue(redis, keys);
    // four jobs of one hand-over (one addBulk: one timestamp), each the next minute of the same file
    const minutes = [0, 1, 2, 3];
    await queue.addBulk(
      minutes.map((m) => ({
        name: 'bars',
        data: { bars: [{ interval: '1min', symbol: 'AAPL', start: start + m * 60_000, state: encodeBarState(bar(String(100 + m))) }] },
        opts: { jobId: `orphan-${m}` },
      })),
    );
    expect(new Set((await queue.getJobs(['waiting'])).map((j) => j.timestamp)).size).toBe(1);
    // a writer that took all four and died before writing any (its worker is never run again)
    const dead = new Worker(BARS_QUEUE, null, { connection: redis.duplicate(), prefix: keys.queuePrefix() });
    for (const _ of minutes) expect(await dead.getNextJob('dead-writer')).toBeDefined();
    await dead.close(true);
    expect(await queue.getJobCounts('active')).toEqual({ active: 4 });
    const w = new WriterService(redis, cfg, keys, quiet);
    await w.start();
    try {
      const rows = readFileSync(csvPath(dir, '1min', 'AAPL'), 'utf8')
        .trim()
        .split('\n')
        .slice(1);
      expect(rows.map((r) => r.split(',')[1])).toEqual(['100', '101', '102', '103']);
    } finally {
      await w.stop();
      await queue.obliterate({ force: true });
      await queue.close();
    }
  });
});

describe('hand-over in pieces', () => {
  it("a closing call's 2,500 bars (one outbox entry) go to the writer as jobs of at most JOB_BARS, the same jobs when the entry is read twice", async () => {
    const keys = testKeys('outbox-pieces');
    const cfg = loadConfig({ KEY_PREFIX: keys.prefix, INTERVALS: '1min' });
    const symbols = Array.from({ length: 2500 }, (_, k) => `S${k}`);
    expect(await closeOpenBars(keys, symbols, CLOSE_BARS_PER_CALL)).toBe(2500);
    expect(await redis.xlen(keys.outbox(0))).toBe(1);
    const fields = ((await redis.xrange(keys.outbox(0), '-', '+')) as [string, string[]][])[0]![1];
    const queue: Queue = barsQueue(redis, keys);
    const closer = new BarCloser(redis, queue, cfg, keys, quiet);
    expect(await closer.drainOutbox(0)).toBe(2500);
    // read again (a closer that died between enqueueing and deleting): nothing more
    await redis.xadd(keys.outbox(0), '*', ...fields);
    expect(await closer.drainOutbox(0)).toBe(2500);
    const jobs = await queue.getJobs(['waiting']);
    expect(jobs.map((j) => parseBarsJob(j.data).bars.length).sort((a, b) => b - a)).toEqual([JOB_BARS, JOB_BARS, 2500 - 2 * JOB_BARS]);
    const handed = jobs.flatMap((j) => parseBarsJob(j.data).bars.map((b) => b.symbol));
    expect(handed.sort()).toEqual([...symbols].sort());
    expect(await redis.xlen(keys.outbox(0))).toBe(0);
    await queue.obliterate({ force: true });
    await queue.close();
  });
});

describe('EMPTY_BARS=carry', () => {
  it('fills flat bars at the previous close only inside the selected sessions for equities, always for 24/7 symbols', () => {
    const dir = tempDir('carry-sessions');
    const cfg = loadConfig({ DATA_DIR: dir, INTERVALS: '1min', SESSIONS: 'regular', EMPTY_BARS: 'carry', SYMBOLS: 'SPY,BINANCE:BTCUSDT' });
    const files = new CsvFiles(dir, clock);
    const carry = new Carry(cfg, new BarCalendar(cfg, clock));
    const t = Date.parse('2013-10-07T19:58:00Z'); // 15:58 EDT
    files.append('1min', 'SPY', t, bar('167.5'));
    files.append('1min', 'BINANCE:BTCUSDT', t, bar('300'));
    const through = Date.parse('2013-10-08T14:00:00Z'); // 10:00 EDT the next day
    const spy = carry.fill(files, '1min', 'SPY', undefined, through);
    const labels = spy.map((f) => clock.label(f.start));
    expect(labels[0]).toBe('2013-10-07T15:59:00-04:00');
    expect(labels[1]).toBe('2013-10-08T09:30:00-04:00'); // nothing after the close, nothing overnight
    expect(labels).toHaveLength(1 + 30);
    expect(spy.every((f) => f.state.close === '167.5' && f.state.volume === 0n && f.state.trades === 0)).toBe(true);
    const btc = carry.fill(files, '1min', 'BINANCE:BTCUSDT', undefined, through);
    expect(btc).toHaveLength(18 * 60 + 1); // every minute from 15:59 to 09:59
    // a real bar later: the gap before it is filled first, in order, and nothing twice
    expect(carry.fill(files, '1min', 'SPY', undefined, through)).toHaveLength(0);
    const rows = readFileSync(csvPath(dir, '1min', 'SPY'), 'utf8')
      .trim()
      .split('\n');
    expect(rows).toHaveLength(1 + 1 + 31);
    expect(rows[2]).toBe('2013-10-07T15:59:00-04:00,167.5,167.5,167.5,167.5,,0,0');
  });
});

describe('files made ready ahead', () => {
  it("every open bar's file gets its header before its first row: the open bars' index read page by page (450 bars, past two pages)", async () => {
    const dir = tempDir('writer-prepare');
    const keys = testKeys('writer-prepare');
    const cfg = loadConfig({ DATA_DIR: dir, KEY_PREFIX: keys.prefix, INTERVALS: '1min,5min,15min' });
    // 150 symbols each with a bar open in three intervals: 450 ids in the index
    const symbols = Array.from({ length: 150 }, (_, k) => `P${k}`);
    const ids = symbols.flatMap((s) => ['1min', '5min', '15min'].map((iv) => `${iv}|${s}|${start}`));
    await redis.zadd(keys.openIndex(0), ...ids.flatMap((id) => [start + 60_000, id]));
    const w = new WriterService(redis, cfg, keys, quiet);
    await w.start();
    try {
      const paths = ids.map((id) => {
        const [iv, s] = id.split('|');
        return csvPath(dir, iv!, s!);
      });
      await waitFor(() => paths.every((p) => existsSync(p)), 20_000, 'every open bar’s file');
      for (const p of paths) expect(readFileSync(p, 'utf8')).toBe('timestamp,open,high,low,close,vwap,volume,num_transactions\n');
    } finally {
      await w.stop();
    }
  });
});
