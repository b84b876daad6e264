/**
 * A whole market at live pace: `candlewick stack` (CLOCK=wall, GRACE_MS=2000, two aggregators, the
 * default intervals) replaying a generated tape in which every symbol trades (bench/wide-tape.ts),
 * so each minute boundary closes a bar of every symbol in every interval ending there.
 *
 * Measured:
 *  - close lag of every bar: the moment it was published on bars:{interval} (its entry id; the
 *    writer publishes a job's bars once their rows are in their files, so a row is in its file by
 *    then) minus its window's end;
 *  - peak RSS of every process of the stack (VmHWM, sampled) and Redis's used_memory peak;
 *  - bytes per open bar in Redis (the open hash and its index), sampled mid-minute;
 *  - exactness: the pipeline's files against `candlewick bars` over the trades the pipeline ingested
 *    (read back from the raw stream, with their event times as stamped), byte for byte, for every
 *    window that ended before the stack was stopped.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, execFileSync } from 'node:child_process';
import { Redis } from 'ioredis';
import { Queue } from 'bullmq';
import { BARS_QUEUE, decodeBarEntry, makeKeys } from '@candlewick/common';
import { Clock, decodeTradeEntries, parseInterval } from '@candlewick/core';
import { PrivateRedis } from '@candlewick/cli';
import { writeWideTape, type WideTapeOptions } from './wide-tape.js';
import { descendants, procMemory } from '../test/procs.js';
import type { WidePg, WideSink } from './wide-pg.js';

export const DEFAULT_WIDE_INTERVALS = ['1min', '5min', '15min', '30min', '1h'];

export interface WideOptions extends WideTapeOptions {
  /** the candlewick checkout to run (built) */
  root: string;
  graceMs: number;
  aggregators: number;
  intervals: string[];
  redisServerBin: string;
  /** compare the files with `candlewick bars` (needs the raw stream kept: it is, for the run) */
  exact: boolean;
  /**
   * stop at the first minute boundary at least 10 s into the replay (the bars of the minute before
   * it timed, the tape cut there) rather than after the whole tape: a short run of a full boundary
   */
  firstBoundaryOnly?: boolean;
  /** extra environment for the stack (e.g. NODE_OPTIONS=--cpu-prof) */
  env?: Record<string, string>;
  /** pg-sink on too, into this PostgreSQL (bench/wide-pg.ts, BENCH_WIDE_PG) */
  pg?: WidePg;
  log?: (line: string) => void;
}

export interface WideResult {
  trades: number;
  /** bars published, by interval */
  bars: Map<string, number>;
  /** close lag (ms) of every bar, sorted */
  lags: number[];
  /** per boundary (window end, UTC ms): its bars and their close lag */
  boundaries: {
    end: number;
    bars: number;
    p50: number;
    p99: number;
    worst: number;
    redisMs: number;
    /** each process's CPU ms (threads included) in the boundary's first 5 s, by role */
    cpuMs: Map<string, number>;
    handOff: HandOff | undefined;
  }[];
  /** Redis's busiest commands over the run: calls and CPU time (INFO commandstats) */
  redisCommands: string[];
  /** the worst bars: interval, label, lag */
  worst: { interval: string; symbol: string; start: number; lag: number }[];
  /** peak RSS (bytes) of each process of the stack, by role */
  peakRss: Map<string, number>;
  redisPeak: number;
  /** Redis bytes of the open bars (hash + index) and how many there were, at the sample */
  openBars: { count: number; bytes: number; usedMemory: number };
  /** files compared with `candlewick bars`, and their differences (empty: exact) */
  exact?: { files: number; rows: number; problems: string[] };
  /** windows that ended this long before the stack was stopped must all be published */
  missing: string[];
  /** with `pg`: the sink's lag of every row */
  sink?: WideSink;
  stdout: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

export function procName(pid: number): string {
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    if (cmd[0]?.includes('redis-server')) return 'redis';
    const i = cmd.findIndex((a) => a.endsWith('cli.js'));
    return i >= 0 ? (cmd[i + 1] ?? 'stack') : (cmd[0] ?? '?');
  } catch {
    return '';
  }
}

/** A process's CPU time so far, user and system, all its threads, in ms (/proc/<pid>/stat, in ticks of USER_HZ, 100 a second on Linux). */
function procCpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the fields after the command's closing parenthesis: utime and stime are the 12th and 13th
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return NaN;
  }
}

const pick = (env: Record<string, string> | undefined, name: string) => (env?.[name] ? { [name]: env[name] } : {});

export const percentile = (sorted: readonly number[], q: number): number =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;

export async function runWide(o: WideOptions): Promise<WideResult> {
  const say = o.log ?? (() => undefined);
  const dir = mkdtempSync(join(tmpdir(), 'cw-wide-'));
  const dataDir = join(dir, 'data');
  const tape = join(dir, 'wide.jsonl');
  const trades = writeWideTape(tape, o);
  say(`tape: ${trades.toLocaleString('en-US')} trades of ${o.symbols} symbols over ${o.seconds} s`);
  const server = new PrivateRedis(join(dir, 'redis'), o.redisServerBin, true);
  const url = await server.start();
  const redis = new Redis(url);
  const prefix = 'wide';
  const keys = makeKeys(prefix);
  // (BAR_TZ in `env`: a half-hour zone's hour ends at :30 UTC)
  const clock = new Clock(o.env?.BAR_TZ ?? 'America/New_York');
  const ivMs = new Map(o.intervals.map((iv) => [iv, parseInterval(iv).ms]));
  const cli = join(o.root, 'packages/cli/dist/cli.js');
  try {
    const proc = spawn(process.execPath, [cli, 'stack'], {
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        REDIS_URL: url,
        KEY_PREFIX: prefix,
        DATA_DIR: dataDir,
        REPLAY_TAPE: tape,
        REPLAY_SPEED: '1',
        REPLAY_SHIFT: 'true',
        CLOCK: 'wall',
        GRACE_MS: String(o.graceMs),
        AGGREGATORS: String(o.aggregators),
        INTERVALS: o.intervals.join(','),
        EXIT_WHEN_IDLE_MS: '0',
        LOG_LEVEL: 'info',
        HTTP_PORT: '0',
        ...o.env,
        ...o.pg?.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
    let gone = false;
    void exited.then(() => (gone = true));

    // peak memory: every process's VmHWM, kept by role (the largest of a role's processes)
    const peakRss = new Map<string, number>();
    let redisPeak = 0;
    /** every process's CPU ms so far (its threads included), by role, Redis's as 'redis': sampled with the memory */
    const procCpuAt: [number, Map<string, number>][] = [];
    const sample = async () => {
      const pids = [proc.pid!, ...descendants(proc.pid!)];
      const seen = new Map<string, number>();
      const cpu = new Map<string, number>();
      for (const pid of pids) {
        let name = procName(pid);
        if (name === '' || name === 'redis') continue;
        const n = (seen.get(name) ?? 0) + 1;
        seen.set(name, n);
        if (name === 'aggregate' || n > 1) name = `${name}.${n}`;
        peakRss.set(name, Math.max(peakRss.get(name) ?? 0, procMemory(pid, 'VmHWM')));
        cpu.set(name, procCpuMs(pid));
      }
      const info = await redis.info('memory');
      redisPeak = Math.max(redisPeak, Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0));
      const cpuInfo = await redis.info('cpu');
      const used = (f: string) => Number(new RegExp(`${f}:([\\d.]+)`).exec(cpuInfo)?.[1] ?? 0);
      // Redis's own CPU (user + sys, in seconds) from the server itself
      cpu.set('redis', (used('used_cpu_user') + used('used_cpu_sys')) * 1000);
      procCpuAt.push([Date.now(), cpu]);
    };
    const sampler = setInterval(() => void sample().catch(() => undefined), 250);

    const waitOut = async (re: RegExp, ms: number) => {
      const until = Date.now() + ms;
      while (!re.test(stdout)) {
        if (gone) throw new Error(`stack exited before ${re}\n${stdout.slice(-3000)}\n${stderr.slice(-3000)}`);
        if (Date.now() > until) throw new Error(`no ${re} within ${ms} ms\n${stdout.slice(-3000)}\n${stderr.slice(-3000)}`);
        await sleep(100);
      }
    };
    await waitOut(/replaying tape/, 120_000);
    const started = Date.now();
    say(`replaying at live pace from ${new Date(started).toISOString().slice(11, 19)}`);

    // open bars in Redis, mid-minute once the first minute of the tape has passed
    const midMinute = Math.ceil((started + 60_000) / 60_000) * 60_000 + 30_000;
    let openBars = { count: 0, bytes: 0, usedMemory: 0 };
    const tapeEnd = started + o.seconds * 1000;
    if (midMinute < tapeEnd) {
      await sleep(midMinute - Date.now());
      const count = Number(await redis.hlen(keys.openBars(0)));
      const bytes =
        Number(await redis.call('MEMORY', 'USAGE', keys.openBars(0), 'SAMPLES', '0')) +
        Number(await redis.call('MEMORY', 'USAGE', keys.openIndex(0), 'SAMPLES', '0'));
      const usedMemory = Number(/used_memory:(\d+)/.exec(await redis.info('memory'))?.[1] ?? 0);
      openBars = { count, bytes, usedMemory };
    }
    // the tape's end, then the next minute boundary's bars closed and written
    const lastBoundary = o.firstBoundaryOnly ? Math.ceil((started + 10_000) / 60_000) * 60_000 : Math.ceil(tapeEnd / 60_000) * 60_000;
    await sleep(lastBoundary + o.graceMs + 4000 - Date.now());
    clearInterval(sampler);
    await sample();
    // (a script's commands are counted both on their own and in its EVALSHA)
    const redisCommands = [...(await redis.info('commandstats')).matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)]
      .map(([, name, calls, usec]) => ({ name: name!, calls: Number(calls), usec: Number(usec) }))
      .sort((a, b) => b.usec - a.usec)
      .slice(0, 8)
      .map((c) => `${c.name} ${c.calls.toLocaleString('en-US')}, ${(c.usec / 1e6).toFixed(1)} s`);
    proc.kill('SIGTERM');
    const code = await exited;
    if (code !== 0) throw new Error(`stack exited ${code}\n${stdout.slice(-3000)}\n${stderr.slice(-3000)}`);

    // close lag of every published bar
    const lags: number[] = [];
    const all: { interval: string; symbol: string; start: number; lag: number }[] = [];
    const bars = new Map<string, number>();
    const published = new Set<string>();
    const atEnd = new Map<number, number[]>();
    for (const iv of o.intervals) {
      let from = '-';
      for (;;) {
        const page = (await redis.xrange(keys.bars(iv), from, '+', 'COUNT', 5000)) as [string, string[]][];
        for (const [id, f] of page) {
          const b = decodeBarEntry(id, iv, f);
          const end = clock.window(b.start, ivMs.get(iv)!, 0)[1];
          // windows still open when the stack was stopped are closed by its way down: not timed
          if (b.rev !== 0 || end > lastBoundary) continue;
          const lag = Number(id.split('-')[0]) - end;
          lags.push(lag);
          if (!atEnd.has(end)) atEnd.set(end, []);
          atEnd.get(end)!.push(lag);
          all.push({ interval: iv, symbol: b.symbol, start: b.start, lag });
          bars.set(iv, (bars.get(iv) ?? 0) + 1);
          published.add(`${iv}|${b.symbol}|${b.start}`);
        }
        if (page.length < 5000) break;
        from = `(${page[page.length - 1]![0]}`;
      }
    }
    // the writer's jobs, as BullMQ stamped them (kept an hour once done)
    const queue = new Queue(BARS_QUEUE, { connection: redis, prefix: keys.queuePrefix() });
    const jobs = (await queue.getJobs(['completed'])).map((j) => ({
      added: j.timestamp,
      taken: j.processedOn ?? NaN,
      done: j.finishedOn ?? NaN,
    }));
    await queue.close();
    const handOff = (end: number): HandOff | undefined => {
      const of = jobs.filter((j) => j.added >= end && j.added < end + 30_000);
      if (of.length === 0) return undefined;
      const sorted = (xs: number[]) => xs.sort((a, b) => a - b);
      const waited = sorted(of.map((j) => j.taken - j.added));
      const took = sorted(of.map((j) => j.done - j.taken));
      return {
        jobs: of.length,
        firstAdded: Math.min(...of.map((j) => j.added)) - end,
        lastAdded: Math.max(...of.map((j) => j.added)) - end,
        waited: [percentile(waited, 0.5), waited[waited.length - 1]!],
        took: [percentile(took, 0.5), took[took.length - 1]!],
        lastDone: Math.max(...of.map((j) => j.done)) - end,
      };
    };
    lags.sort((a, b) => a - b);
    all.sort((a, b) => b.lag - a.lag);
    const boundaries = [...atEnd]
      .sort((a, b) => a[0] - b[0])
      .map(([end, l]) => {
        l.sort((a, b) => a - b);
        // each process's CPU, and Redis's, over the boundary's first 5 s (samples every 250 ms)
        const cpuAt = (t: number) => procCpuAt.find(([ms]) => ms >= t)?.[1];
        const [from, to] = [cpuAt(end), cpuAt(end + 5000)];
        const cpuMs = new Map<string, number>();
        if (from && to) for (const [name, ms] of to) if (from.has(name)) cpuMs.set(name, Math.round(ms - from.get(name)!));
        const redisMs = cpuMs.get('redis') ?? NaN;
        cpuMs.delete('redis');
        return {
          end,
          bars: l.length,
          p50: percentile(l, 0.5),
          p99: percentile(l, 0.99),
          worst: l[l.length - 1]!,
          redisMs,
          cpuMs,
          handOff: handOff(end),
        };
      });

    const sink = await o.pg?.measure(clock, ivMs, lastBoundary, published);

    // the trades as ingested (event times as stamped at send): a tape for `candlewick bars`
    const ingested: string[] = [];
    let from = '-';
    for (;;) {
      const page = (await redis.xrange(keys.trades(0), from, '+', 'COUNT', 1000)) as [string, string[]][];
      for (const [id, f] of page)
        for (const { trade } of decodeTradeEntries(id, f))
          ingested.push(JSON.stringify({ s: trade.s, p: Number(trade.p), v: trade.v, t: trade.t, c: trade.c }));
      if (page.length < 1000) break;
      from = `(${page[page.length - 1]![0]}`;
    }
    const ingestedTape = join(dir, 'ingested.jsonl');
    writeFileSync(ingestedTape, `${ingested.join('\n')}\n`);

    // every window that ended by the last boundary is published, and (exact) equals `candlewick bars`
    const oracleDir = join(dir, 'oracle');
    execFileSync(process.execPath, [cli, 'bars', '--tape', ingestedTape, '--out', oracleDir], {
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        INTERVALS: o.intervals.join(','),
        LOG_LEVEL: 'warn',
        ...pick(o.env, 'BAR_TZ'),
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    /** a file's header and its rows of windows ended by the last boundary */
    const dueRows = (path: string, iv: string): string[] => {
      const [header, ...lines] = readFileSync(path, 'utf8').split('\n');
      const due = lines.filter((l) => {
        if (l === '') return false;
        const start = clock.parseLabel(l.slice(0, l.indexOf(',')));
        return clock.window(start, ivMs.get(iv)!, 0)[1] <= lastBoundary;
      });
      return [header!, ...due];
    };
    const missing: string[] = [];
    const problems: string[] = [];
    let files = 0;
    let rows = 0;
    for (const iv of o.intervals) {
      const odir = join(oracleDir, 'raw', iv);
      if (!existsSync(odir)) continue;
      for (const name of readdirSync(odir)) {
        const [header, ...due] = dueRows(join(odir, name), iv);
        if (due.length === 0) continue;
        const symbol = name.slice(0, -`_${iv}.csv`.length);
        for (const l of due) {
          const start = clock.parseLabel(l.slice(0, l.indexOf(',')));
          if (!published.has(`${iv}|${symbol}|${start}`)) missing.push(`${iv} ${symbol} ${l.slice(0, l.indexOf(','))}`);
        }
        if (!o.exact) continue;
        files++;
        rows += due.length;
        const want = [header, ...due].join('\n');
        const path = join(dataDir, 'raw', iv, name);
        const got = existsSync(path) ? dueRows(path, iv).join('\n') : '(no file)';
        if (got !== want && problems.length < 10) problems.push(`${iv}/${name}: got\n${got.slice(0, 400)}\nwant\n${want.slice(0, 400)}`);
      }
    }
    return {
      trades,
      bars,
      lags,
      boundaries,
      redisCommands,
      worst: all.slice(0, 5),
      peakRss,
      redisPeak,
      openBars,
      exact: o.exact ? { files, rows, problems } : undefined,
      missing,
      sink,
      stdout,
    };
  } finally {
    redis.disconnect();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const mb = (b: number) => `${(b / 2 ** 20).toFixed(0)} MB`;

/**
 * The writer's jobs of a boundary (added in the 30 s after its end), from BullMQ's own stamps: when
 * the closer added the first and last (ms after the window's end), how long they waited for the
 * writer and how long it took each (added to taken, taken to done, p50 and worst), when the last
 * was done. Jobs waiting long: the writer is behind; jobs added late: the closing is.
 */
export interface HandOff {
  jobs: number;
  firstAdded: number;
  lastAdded: number;
  waited: [p50: number, worst: number];
  took: [p50: number, worst: number];
  lastDone: number;
}

/** The figures of a run, as the bench prints them. */
export function wideReport(o: WideOptions, r: WideResult): string[] {
  const lines: string[] = [];
  const per = [...r.bars].map(([iv, n]) => `${iv}=${n}`).join(' ');
  lines.push(
    `  ${o.symbols.toLocaleString('en-US')} symbols, ${r.trades.toLocaleString('en-US')} trades in ${o.seconds} s (${Math.round(r.trades / o.seconds)} trades/s), grace ${o.graceMs} ms, ${o.aggregators} aggregators`,
  );
  lines.push(`  bars published: ${per}`);
  lines.push(
    `  close lag (published - window end): p50 ${percentile(r.lags, 0.5)} ms, p99 ${percentile(r.lags, 0.99)} ms, worst ${r.lags[r.lags.length - 1]} ms`,
  );
  for (const b of r.boundaries)
    lines.push(
      `    boundary ${new Date(b.end).toISOString().slice(11, 16)}: ${b.bars.toLocaleString('en-US')} bars, p50 ${b.p50} ms, p99 ${b.p99} ms, worst ${b.worst} ms; Redis CPU ${b.redisMs} ms in its first 5 s`,
      ...(b.cpuMs.size
        ? [
            `      CPU in its first 5 s (ms, threads included): ${[...b.cpuMs]
              .sort((x, y) => y[1] - x[1])
              .map(([n, ms]) => `${n} ${ms.toLocaleString('en-US')}`)
              .join(', ')}, redis ${b.redisMs.toLocaleString('en-US')}`,
          ]
        : []),
      ...(b.handOff
        ? [
            `      writer's jobs: ${b.handOff.jobs} added ${b.handOff.firstAdded}-${b.handOff.lastAdded} ms after the end, waited p50 ${b.handOff.waited[0]} (worst ${b.handOff.waited[1]}) ms, took p50 ${b.handOff.took[0]} (worst ${b.handOff.took[1]}) ms, the last done ${b.handOff.lastDone} ms after the end`,
          ]
        : []),
    );
  const total = [...r.peakRss.values()].reduce((a, b) => a + b, 0) + r.redisPeak;
  lines.push(
    `  peak memory: ${[...r.peakRss].map(([n, b]) => `${n} ${mb(b)}`).join(', ')}, redis used_memory ${mb(r.redisPeak)}; total ${mb(total)}`,
  );
  if (r.openBars.count > 0)
    lines.push(
      `  open bars mid-minute: ${r.openBars.count.toLocaleString('en-US')} (${(r.openBars.bytes / r.openBars.count).toFixed(0)} bytes each in Redis, ${(r.openBars.bytes / o.symbols).toFixed(0)} per symbol)`,
    );
  lines.push(`  Redis's busiest commands (calls, CPU): ${r.redisCommands.join('; ')}`);
  if (r.exact)
    lines.push(
      `  exact: ${r.exact.files} files, ${r.exact.rows} rows against candlewick bars: ${r.exact.problems.length ? 'DIFFERENT' : 'identical'}`,
    );
  if (r.missing.length) lines.push(`  MISSING ${r.missing.length} bars, e.g. ${r.missing.slice(0, 3).join('; ')}`);
  return lines;
}
