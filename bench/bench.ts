/**
 * npm run bench: what a trade costs, end to end and per process, next to ceilings measured in the
 * same run.
 *
 *  1. Redis-only ceiling: the tape's trades appended by one Node process with pipelined XADD, one
 *     entry per trade (and, for comparison, with addTrades as the ingestor appends them).
 *  2. End to end: `candlewick stack` over the tape (child processes, private redis-server, AOF on)
 *     for each setup of BENCH_SETUPS (partitions x aggregators), the median of BENCH_RUNS runs;
 *     trades/s and its ratio to the ceiling.
 *  3. CPU per trade of every process (its own accounting, from each role's start: see the stack's
 *     summary), Redis included; the replay server shown apart. With BENCH_BASELINE (another
 *     checkout, built) its stack runs too, in the same run, and the totals are compared.
 *  4. A sizing estimate from those figures, checked against what each setup measured.
 *  5. In one process: `candlewick bars` (the same core, no Redis) against tardis-dev's
 *     computeTradeBars over the same trades in memory, alternating, the median of
 *     BENCH_INPROCESS_RUNS each; and `candlewick bars` as a user runs it, tape reading included.
 *  6. As whole processes, as a user runs them: `candlewick bars` against bench/tardis-bars.mjs
 *     (tardis-dev over the same tape file), start-up on a 100-trade tape and the whole tape, the
 *     best of BENCH_COMMAND_RUNS alternating runs each. BENCH_PART=commands runs this part alone.
 *  7. A wide universe at live pace (bench/wide.ts): BENCH_WIDE_SYMBOLS symbols that all trade, for
 *     BENCH_WIDE_SECONDS; the close lag p50/p99/worst of every bar and the peak memory of every
 *     process and of Redis. With BENCH_WIDE_PG=1, pg-sink too (bench/wide-pg.ts): its lag per boundary.
 *  8. The PostgreSQL sink (bench/pg.ts): pg-sink's upsert of BENCH_PG_ROWS real bars, then the same
 *     rows again (unchanged), against a COPY of them, on a private cluster; and the stack (1 x 1)
 *     with DATABASE_URL against the same stack without, alternating. BENCH_PART=pg runs this
 *     part alone; without PostgreSQL it is said and skipped.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, existsSync, statSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { Redis } from 'ioredis';
import { compute, computeTradeBars } from 'tardis-dev';
import {
  addTrades,
  addTradesArgs,
  ensureGroup,
  isTapeTrade,
  loadConfig,
  makeKeys,
  readTape,
  registerScripts,
  type TapeItem,
} from '@candlewick/common';
import { BarCalendar, Preaggregator, encodeBarState, validateTrade, type Trade } from '@candlewick/core';
import { BUNDLED_TAPE, InProcessBars, PrivateRedis } from '@candlewick/cli';
import { tapeSymbols } from '@candlewick/common';
import { ROOT, benchSettings } from './settings.js';
import { DEFAULT_WIDE_INTERVALS, runWide, wideReport, type WideOptions } from './wide.js';
import { WIDE_DEFAULTS } from './wide-tape.js';
import { pgSection } from './pg.js';
import { mergeCost, type MergeCost } from './merge-cost.js';
import { startWidePg, wideSinkReport } from './wide-pg.js';

const settings = benchSettings();
const LEAN_TICKS = join(settings.LEAN_DATA_DIR, 'tick');
const out = (line = '') => process.stdout.write(`${line}\n`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

function defaultTape(): { spec: string; what: string } {
  if (existsSync(LEAN_TICKS)) {
    const files = readdirSync(LEAN_TICKS)
      .filter((f) => f.endsWith('_20131007_trade.zip'))
      .map((f) => join(LEAN_TICKS, f));
    if (files.length) return { spec: files.join(','), what: `Lean US equities, ${files.length} symbols, 2013-10-07` };
  }
  out(
    `note: the Lean tick set is absent (looked in ${LEAN_TICKS}); benchmarking the bundled XRP/ETH tape instead (small: start-up dominates its figures)`,
  );
  return { spec: BUNDLED_TAPE, what: 'bundled Binance XRP/ETH tape' };
}

/** Each tape trade as the ingestor takes it (validated, as the replay server sends it). */
function validTrades(items: readonly TapeItem[]): Trade[] {
  const trades: Trade[] = [];
  for (const it of items) {
    if (!isTapeTrade(it)) continue;
    const v = validateTrade({ s: it.s, p: Number(it.p), v: it.v, t: it.t, c: it.c }, it.t);
    if (v.ok) trades.push(v.trade);
  }
  return trades;
}

// ---------------------------------------------------------------------------------------------
// 1. Redis-only ceilings

interface Ceiling {
  xadd: number;
  addTrades: number;
  bytesPerTrade: number;
  bytesPerBar: number;
  merge: MergeCost;
}

async function ceilings(trades: Trade[]): Promise<Ceiling> {
  const dir = mkdtempSync(join(tmpdir(), 'cw-bench-redis-'));
  const server = new PrivateRedis(dir, settings.REDIS_SERVER_BIN, false);
  const url = await server.start();
  const redis = new Redis(url);
  registerScripts(redis);
  try {
    // one entry per trade, pipelined 1000 at a time
    let t0 = performance.now();
    for (let i = 0; i < trades.length; i += 1000) {
      const pipe = redis.pipeline();
      for (const tr of trades.slice(i, i + 1000))
        pipe.xadd(
          'ceiling',
          '*',
          's',
          tr.s,
          'p',
          tr.p,
          'v',
          String(tr.v),
          't',
          String(tr.t),
          'c',
          JSON.stringify(tr.c),
          'rx',
          String(tr.rx),
        );
      await pipe.exec();
    }
    const xadd = trades.length / ((performance.now() - t0) / 1000);
    // addTrades in batches of 1000, as the ingestor appends them (one raw entry per batch)
    const keys = makeKeys('bench');
    await ensureGroup(redis, keys.trades(0), 'aggregator');
    t0 = performance.now();
    const pending: Promise<unknown>[] = [];
    for (let i = 0, seq = 0; i < trades.length; i += 1000, seq++) {
      pending.push(
        addTrades(redis, keys, 0, addTradesArgs({ clock: 'event', graceMs: 2000, sender: 'bench', seq }, [], trades.slice(i, i + 1000))),
      );
      if (pending.length >= 8) await pending.shift();
    }
    await Promise.all(pending);
    const viaScript = trades.length / ((performance.now() - t0) / 1000);
    const bytesPerTrade = Number(await redis.call('MEMORY', 'USAGE', keys.trades(0), 'SAMPLES', '0')) / trades.length;
    // an open bar: its state and its index entry
    const cfg = loadConfig({ MODE: 'replay' });
    const pre = new Preaggregator(new BarCalendar(cfg));
    const bars = pre.run(
      trades.map((tr, i) => ({ id: `1-${i}`, entry: '1-0', s: tr.s, p: tr.p, v: tr.v, t: tr.t, w: 0, c: '', rx: 0 })),
    ).bars;
    const pipe = redis.pipeline();
    for (const [id, part] of bars) pipe.hset('open', id, encodeBarState(part.state)).zadd('open-index', part.end, id);
    await pipe.exec();
    const barBytes =
      Number(await redis.call('MEMORY', 'USAGE', 'open', 'SAMPLES', '0')) +
      Number(await redis.call('MEMORY', 'USAGE', 'open-index', 'SAMPLES', '0'));
    const merge = await mergeCost(redis);
    return { xadd, addTrades: viaScript, bytesPerTrade, bytesPerBar: barBytes / bars.size, merge };
  } finally {
    redis.disconnect();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// 2, 3. The stack

interface CpuRow {
  name: string;
  us: number;
  busy: number;
}

interface StackRun {
  tradesPerSec: number;
  wall: number;
  holdMean: number;
  holdMax: number;
  cpu: CpuRow[];
  summary: string;
  /** the CSV rows it wrote, and when the last of them was (the newest file's mtime, ms) */
  rows: number;
  lastRowAt: number;
}

/** The CSV files under DATA_DIR/raw: their rows, and the newest one's mtime. */
function csvFiles(dataDir: string): { rows: number; lastRowAt: number } {
  let rows = 0;
  let lastRowAt = 0;
  const raw = join(dataDir, 'raw');
  for (const iv of existsSync(raw) ? readdirSync(raw) : [])
    for (const f of readdirSync(join(raw, iv))) {
      const path = join(raw, iv, f);
      rows += readFileSync(path, 'utf8').trimEnd().split('\n').length - 1;
      lastRowAt = Math.max(lastRowAt, statSync(path).mtimeMs);
    }
  return { rows, lastRowAt };
}

/** Runs `candlewick stack` of the checkout at `root` over the tape (`env`: settings added, DATABASE_URL for section 8). */
function runStack(
  root: string,
  tape: string,
  partitions: number,
  aggregators: number,
  env: Record<string, string> = {},
): Promise<StackRun> {
  const dataDir = mkdtempSync(join(tmpdir(), 'cw-bench-'));
  const cli = join(root, 'packages/cli/dist/cli.js');
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const proc = spawn(process.execPath, [cli, 'stack'], {
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        DATA_DIR: dataDir,
        REPLAY_TAPE: tape,
        STREAM_PARTITIONS: String(partitions),
        AGGREGATORS: String(aggregators),
        EXIT_WHEN_IDLE_MS: '500',
        LOG_LEVEL: 'warn',
        HTTP_PORT: '0',
        REDIS_SERVER_BIN: settings.REDIS_SERVER_BIN,
        ...env,
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let text = '';
    proc.stdout.on('data', (d: Buffer) => (text += d.toString()));
    proc.on('exit', (code) => {
      const files = csvFiles(dataDir);
      rmSync(dataDir, { recursive: true, force: true });
      if (code !== 0) return reject(new Error(`stack (${root}) exited ${code}\n${text}`));
      const m = /throughput\s+(\d+) trades\/s/.exec(text);
      const h = /ingest hold\s+mean ([\d.]+) ms, max (\d+) ms/.exec(text);
      const cpu: CpuRow[] = [];
      for (const line of text.slice(text.indexOf('  cpu ')).split('\n').slice(1)) {
        const c = /^ {4}(\S.*?)\s+([\d.]+)\s+(\d+) %$/.exec(line);
        if (!c) break;
        cpu.push({ name: c[1]!.trim(), us: Number(c[2]), busy: Number(c[3]) });
      }
      resolve({
        tradesPerSec: Number(m?.[1] ?? 0),
        wall: (performance.now() - t0) / 1000,
        holdMean: Number(h?.[1] ?? NaN),
        holdMax: Number(h?.[2] ?? NaN),
        cpu,
        summary: text.slice(text.indexOf('candlewick summary')),
        ...files,
      });
    });
  });
}

/** The median run (by throughput) of `runs`. */
async function medianRun(root: string, tape: string, p: number, a: number): Promise<{ run: StackRun; all: StackRun[] }> {
  const all: StackRun[] = [];
  for (let i = 0; i < settings.BENCH_RUNS; i++) {
    const r = await runStack(root, tape, p, a);
    if (settings.BENCH_VERBOSE) out(r.summary);
    all.push(r);
  }
  const sorted = [...all].sort((x, y) => x.tradesPerSec - y.tradesPerSec);
  return { run: sorted[sorted.length >> 1]!, all };
}

/** µs per trade of a role (summed over processes of that role: aggregate.1, aggregate.2, ...). */
function roleUs(cpu: CpuRow[], role: string): number {
  return cpu.filter((c) => c.name === role || c.name.startsWith(`${role}.`)).reduce((a, c) => a + c.us, 0);
}

const ROLE_ORDER = ['ingest', 'aggregate', 'close', 'write', 'stack', 'redis', 'total', '(replay server)'];

function cpuTable(cols: { label: string; cpu: CpuRow[] }[]): string[] {
  const lines = [`  ${'process'.padEnd(18)}${cols.map((c) => c.label.padStart(22)).join('')}`];
  const names = new Set<string>();
  for (const c of cols) for (const r of c.cpu) names.add(r.name);
  const ordered = [...names].sort(
    (a, b) => ROLE_ORDER.indexOf(a.split('.')[0]!) - ROLE_ORDER.indexOf(b.split('.')[0]!) || a.localeCompare(b),
  );
  for (const name of ordered) {
    const cells = cols.map((c) => {
      const r = c.cpu.find((x) => x.name === name);
      return (r ? `${r.us.toFixed(1)} µs  ${String(r.busy).padStart(3)} %` : '-').padStart(22);
    });
    lines.push(`  ${name.padEnd(18)}${cells.join('')}`);
  }
  return lines;
}

// ---------------------------------------------------------------------------------------------
// 5. In one process

async function tardisRun(messages: unknown[]): Promise<{ ms: number; bars: number }> {
  async function* feed() {
    for (const m of messages) yield m;
  }
  const t0 = performance.now();
  let bars = 0;
  const factories = [60_000, 300_000, 900_000, 1_800_000, 3_600_000].map((ms) => computeTradeBars({ kind: 'time', interval: ms }));
  for await (const m of compute(feed() as never, ...factories)) if ((m as { type: string }).type === 'trade_bar') bars++;
  return { ms: performance.now() - t0, bars };
}

function oursRun(items: readonly TapeItem[], intervals?: string): { ms: number; bars: number } {
  const dir = mkdtempSync(join(tmpdir(), 'cw-bench-bars-'));
  try {
    const cfg = loadConfig({ MODE: 'replay', DATA_DIR: dir, ...(intervals ? { INTERVALS: intervals } : {}) });
    const t0 = performance.now();
    const c = new InProcessBars(cfg, tapeSymbols(items)).run(items);
    const ms = performance.now() - t0;
    return { ms, bars: Object.values(c.written).reduce((a, n) => a + n, 0) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Seconds a command takes as a whole process, from spawn to exit. */
function timeCommand(args: string[]): number {
  const t0 = performance.now();
  execFileSync(process.execPath, args, { stdio: 'ignore' });
  return (performance.now() - t0) / 1000;
}

function barsCommand(tape: string): number {
  const dir = mkdtempSync(join(tmpdir(), 'cw-bench-bars-'));
  try {
    return timeCommand([join(ROOT, 'packages/cli/dist/cli.js'), 'bars', '--tape', tape, '--out', dir]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const tardisCommand = (tape: string) => timeCommand([join(ROOT, 'bench/tardis-bars.mjs'), tape]);

/** The best of `runs` alternating runs of each command on one tape. */
function bestOf(runs: number, tape: string): { ours: number; theirs: number } {
  let ours = Infinity;
  let theirs = Infinity;
  for (let i = 0; i < runs; i++) {
    ours = Math.min(ours, barsCommand(tape));
    theirs = Math.min(theirs, tardisCommand(tape));
  }
  return { ours, theirs };
}

/** Activity bars (docs/activity-bars.md): each kind's cost per trade beside the time bars' in `bars`. */
const ACTIVITY_KINDS = ['100t', '30000v', '2000000val', '100t-imb', '100t-run', 't-imb-e100', 'v-run-e100', 'val-imb-e100-min20'] as const;

function activitySection(items: readonly TapeItem[], trades: number): string[] {
  const runs = settings.BENCH_INPROCESS_RUNS;
  const best = (intervals: string) => {
    let ms = Infinity;
    let bars = 0;
    for (let i = 0; i < runs; i++) {
      const r = oursRun(items, intervals);
      ms = Math.min(ms, r.ms);
      bars = r.bars;
    }
    return { ms, bars };
  };
  const us = (ms: number) => (ms * 1000) / trades;
  const base = best('1min');
  const time = best('1min,5min,15min,30min,1h');
  const lines = [
    `5b. Activity bars in one process (candlewick bars), best of ${runs} runs: µs per trade`,
    `  1min alone (validation, the fold, CSV)        ${us(base.ms).toFixed(3)} µs per trade   <- what time bars cost: the ratios' base`,
    `  the five default time intervals               ${us(time.ms).toFixed(3)} µs per trade`,
  ];
  for (const kind of ACTIVITY_KINDS) {
    const r = best(`1min,${kind}`);
    const extra = us(r.ms) - us(base.ms);
    lines.push(
      `  1min + ${kind.padEnd(14)} ${us(r.ms).toFixed(3)} µs per trade: ${extra.toFixed(3)} µs for ${kind} (${(extra / us(base.ms)).toFixed(2)}x the 1min bars; ${r.bars - base.bars} bars)`,
    );
  }
  return lines;
}

// ---------------------------------------------------------------------------------------------
// 6. As whole processes

function commands(spec: string, what: string): void {
  const runs = settings.BENCH_COMMAND_RUNS;
  const dir = mkdtempSync(join(tmpdir(), 'cw-bench-tiny-'));
  try {
    // start-up: a tape so small that the trades cost nothing
    const tiny = join(dir, 'tiny.jsonl');
    const lines = Array.from({ length: 100 }, (_, i) =>
      JSON.stringify({ s: 'AAPL', p: (150 + (i % 7) / 100).toFixed(2), v: 1 + (i % 5), t: 1_700_000_000_000 + i * 1500, c: [] }),
    );
    writeFileSync(tiny, `${lines.join('\n')}\n`);
    let node = Infinity;
    for (let i = 0; i < runs; i++) node = Math.min(node, timeCommand(['-e', '0']));
    const start = bestOf(runs, tiny);
    const day = bestOf(runs, spec);
    const s = (x: number) => `${x.toFixed(3)} s`;
    out(`6. As whole processes (spawn to exit), best of ${runs} alternating runs each`);
    out(`  node -e 0 (the floor)                                  ${s(node)}`);
    out(`  start-up, a 100-trade tape: candlewick bars            ${s(start.ours)}   (goal <= 0.2 s)`);
    out(`                              tardis-dev script          ${s(start.theirs)}`);
    out(`  ${what}: candlewick bars   ${s(day.ours)}`);
    out(`  ${' '.repeat(what.length)}  tardis-dev script ${s(day.theirs)}`);
    out(`  ratio on the whole tape: ${(day.theirs / day.ours).toFixed(2)}x (goal >= 1.5x)`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { spec, what } = settings.BENCH_TAPE ? { spec: settings.BENCH_TAPE, what: settings.BENCH_TAPE } : defaultTape();
  const items = readTape(spec);
  const trades = validTrades(items);
  const cpu = cpus();
  const redisVersion = execFileSync(settings.REDIS_SERVER_BIN, ['--version']).toString().trim().split(' ')[2] ?? '';
  out(
    `machine: ${cpu.length} cores, ${cpu[0]?.model.trim() ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB; node ${process.version}; redis ${redisVersion.replace('v=', '')}`,
  );
  out(`tape: ${what}: ${fmt(trades.length)} trades; intervals 1min,5min,15min,30min,1h; AOF on; runs per figure: ${settings.BENCH_RUNS}`);
  out();
  if (settings.BENCH_PART === 'commands') return commands(spec, what);
  const pgPart = async () => {
    const stack = (env: Record<string, string>) => runStack(ROOT, spec, 1, 1, env);
    for (const line of await pgSection(items, what, { rows: settings.BENCH_PG_ROWS, runs: settings.BENCH_RUNS, stack })) out(line);
  };
  if (settings.BENCH_PART === 'pg') return pgPart();
  if (settings.BENCH_PART === 'activity') {
    for (const line of activitySection(items, trades.length)) out(line);
    return;
  }

  const ceil = await ceilings(trades);
  out('1. Redis-only ceilings (one Node process, this machine, this run)');
  out(`  pipelined XADD, one entry per trade       ${fmt(ceil.xadd).padStart(10)} trades/s   <- the ceiling`);
  out(`  addTrades, 1000 trades per raw entry      ${fmt(ceil.addTrades).padStart(10)} trades/s`);
  out(
    `  mergeBatch, distinct symbols: Redis time per bar ${ceil.merge.opened.toFixed(1)} µs opened, ${ceil.merge.merged.toFixed(1)} µs merged into`,
  );
  out(`  memory: ${ceil.bytesPerTrade.toFixed(1)} bytes per retained raw trade, ${ceil.bytesPerBar.toFixed(0)} bytes per open bar`);
  out();

  out('2. End to end (candlewick stack), median of runs');
  out(
    `  ${'partitions x aggregators'.padEnd(26)}${'trades/s'.padStart(10)}${'x ceiling'.padStart(11)}${'range'.padStart(22)}  ingest hold mean/max`,
  );
  const results = new Map<string, StackRun>();
  for (const [p, a] of settings.BENCH_SETUPS) {
    const { run, all } = await medianRun(ROOT, spec, p, a);
    results.set(`${p}x${a}`, run);
    const tps = all.map((r) => r.tradesPerSec);
    out(
      `  ${`${p} x ${a}`.padEnd(26)}${fmt(run.tradesPerSec).padStart(10)}${`${(run.tradesPerSec / ceil.xadd).toFixed(2)}x`.padStart(11)}${`${fmt(Math.min(...tps))}-${fmt(Math.max(...tps))}`.padStart(22)}  ${run.holdMean} / ${run.holdMax} ms`,
    );
  }
  out();

  const first = results.values().next().value as StackRun;
  const cols = [...results].map(([k, r]) => ({ label: k, cpu: r.cpu }));
  let baseline: StackRun | undefined;
  if (settings.BENCH_BASELINE) {
    baseline = (await medianRun(settings.BENCH_BASELINE, spec, 1, 1)).run;
    cols.push({ label: `baseline 1x1`, cpu: baseline.cpu });
  }
  out('3. CPU per trade (µs, user + system) and how busy each process was (100 % = one core)');
  for (const line of cpuTable(cols)) out(line);
  if (baseline) {
    const now = first.cpu.find((c) => c.name === 'total')!.us;
    const then = baseline.cpu.find((c) => c.name === 'total')!.us;
    out(
      `  total, replay server apart: ${now.toFixed(1)} µs per trade vs ${then.toFixed(1)} for ${settings.BENCH_BASELINE} (${(now / then).toFixed(2)}x); end to end ${fmt(first.tradesPerSec)} vs ${fmt(baseline.tradesPerSec)} trades/s (${(baseline.tradesPerSec / ceil.xadd).toFixed(2)}x the ceiling)`,
    );
  }
  out();

  // 4. Sizing: each stage's trades/s per core from its CPU per trade
  const us = (role: string) => roleUs(first.cpu, role);
  const perCore = (x: number) => (x > 0 ? 1e6 / x : Infinity);
  const total = first.cpu.find((c) => c.name === 'total')?.us ?? 0;
  out('4. Sizing, from the first setup: trades/s one core sustains in each stage');
  for (const role of ['ingest', 'aggregate', 'redis', 'close', 'write'])
    out(`  ${role.padEnd(12)} ${fmt(perCore(us(role))).padStart(12)} trades/s per core (${us(role).toFixed(1)} µs per trade)`);
  out(`  all of them  ${fmt(perCore(total)).padStart(12)} trades/s per core (${total.toFixed(1)} µs per trade)`);
  const estimate = (p: number, a: number, masters: number, cores: number) =>
    Math.min(
      perCore(us('ingest')),
      Math.min(a, p) * perCore(us('aggregate')),
      Math.min(masters, p) * perCore(us('redis')),
      (cores * 1e6) / total,
    );
  out(`  estimate = min(one ingestor, min(N, P) aggregators, min(M, P) Redis masters, cores x all of them):`);
  for (const [k, r] of results) {
    const [p, a] = k.split('x').map(Number) as [number, number];
    out(
      `    P=${p} N=${a} M=1 on ${cpu.length} cores: estimate ${fmt(estimate(p, a, 1, cpu.length))}, measured ${fmt(r.tradesPerSec)} trades/s`,
    );
  }
  const busy = first.cpu.find((c) => c.name === 'total')?.busy ?? 0;
  const redisBusy = first.cpu.find((c) => c.name.startsWith('redis'))?.busy ?? 0;
  const scaled = [...results].find(([k]) => k !== [...results.keys()][0] && k.endsWith('x2'));
  if (scaled)
    out(
      `  a second aggregator: ${fmt(scaled[1].tradesPerSec)} vs ${fmt(first.tradesPerSec)} trades/s (${((scaled[1].tradesPerSec / first.tradesPerSec - 1) * 100).toFixed(0)} %). With one of each the processes already keep ${busy} % of a core busy (Redis ${redisBusy} %) on ${cpu.length} cores, so a second aggregator here competes for the same cores; it adds throughput where cores are free: N aggregators on P >= N partitions, with M masters for the Redis share, until the ingestor (one per feed) is the limit.`,
    );
  out();

  // 5. In one process
  const messages = trades.map((tr, i) => ({
    type: 'trade',
    symbol: tr.s,
    exchange: 'lean',
    id: String(i),
    price: Number(tr.p),
    amount: tr.v,
    side: 'unknown',
    timestamp: new Date(tr.t),
    localTimestamp: new Date(tr.t),
  }));
  const ours: number[] = [];
  const theirs: number[] = [];
  let oursBars = 0;
  let theirBars = 0;
  for (let i = 0; i < settings.BENCH_INPROCESS_RUNS; i++) {
    const o = oursRun(items);
    ours.push(o.ms);
    oursBars = o.bars;
    const t = await tardisRun(messages);
    theirs.push(t.ms);
    theirBars = t.bars;
  }
  const oursTps = trades.length / (median(ours) / 1000);
  const theirTps = trades.length / (median(theirs) / 1000);
  const cmd = barsCommand(spec);
  out(`5. In one process, no Redis: the same trades in memory, median of ${settings.BENCH_INPROCESS_RUNS} alternating runs`);
  out(`  candlewick bars (validation, the fold, CSV files)   ${fmt(oursTps).padStart(10)} trades/s (${oursBars} bars written)`);
  out(`  tardis-dev computeTradeBars (bars in memory)        ${fmt(theirTps).padStart(10)} trades/s (${theirBars} bars)`);
  out(`  ratio: ${(oursTps / theirTps).toFixed(2)}x`);
  out(
    `  \`candlewick bars --tape …\` as a command, tape reading and start-up included: ${cmd.toFixed(2)} s, ${fmt(trades.length / cmd)} trades/s`,
  );
  out();
  for (const line of activitySection(items, trades.length)) out(line);
  out();
  commands(spec, what);

  // 7. A whole market at live pace: bars per boundary rather than trades per second
  if (settings.BENCH_WIDE_SYMBOLS > 0) {
    out(`7. Wide universe at live pace: every symbol closes a bar at each boundary (npm run bench:wide for the full size)`);
    const runs: { label: string; root: string }[] = [{ label: 'this checkout', root: ROOT }];
    if (settings.BENCH_BASELINE) runs.push({ label: settings.BENCH_BASELINE, root: settings.BENCH_BASELINE });
    for (const { label, root } of runs) {
      const o: WideOptions = {
        ...WIDE_DEFAULTS,
        symbols: settings.BENCH_WIDE_SYMBOLS,
        seconds: settings.BENCH_WIDE_SECONDS,
        root,
        graceMs: 2000,
        aggregators: 2,
        intervals: DEFAULT_WIDE_INTERVALS,
        redisServerBin: settings.REDIS_SERVER_BIN,
        exact: false,
      };
      if (runs.length > 1) out(`  ${label}:`);
      const pg = settings.BENCH_WIDE_PG ? await startWidePg() : undefined;
      const r = await runWide({ ...o, pg }).finally(() => pg?.stop());
      for (const line of wideReport(o, r)) out(line);
      if (r.sink) for (const line of wideSinkReport(r.sink, o.graceMs)) out(line);
    }
    out();
  }

  // 8. The PostgreSQL sink against a COPY of the same rows
  await pgPart();
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
