import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { Redis } from 'ioredis';
import { PrivateRedis, freePort } from '@candlewick/cli';
import { ProviderServer } from '@candlewick/backfill';
import { isTapeTrade, makeKeys, readTape } from '@candlewick/common';
import { decodeTradeEntries } from '@candlewick/core';
import { cmdline, descendants } from '../procs.js';
import { ReplayServer } from '@candlewick/ingestor';
import { fillDisk, mountTmpfs } from '../full-disk.js';

/**
 * The fault campaign: the bundled tape through a real stack (child processes, a real Redis) while
 * one fault strikes at a seed-chosen moment — a role killed with SIGKILL, an aggregator paused, Redis
 * killed for a second or for minutes, the CSV disk full, rows cut from a file, Ctrl-C — and the
 * files compared byte for byte with a run without faults. `npm run faults` runs it over several
 * seeds and prints a table; CI runs one seed of each (test/faults.test.ts).
 */

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'packages/cli/dist/cli.js');
const TAPE = join(ROOT, 'tapes/binance-xrpeth-aggtrades-2019-10-11.json.gz');
const quiet = pino({ level: 'silent' });

export interface FaultRun {
  fault: string;
  seed: number;
  /** the files equal the run without the fault (for Ctrl-C: every file a whole-row prefix of it) */
  exact: boolean;
  code: number | null;
  tradesIn: number;
  merged: number;
  late: number;
  /** the longest time the CSV files did not grow while the run was under way */
  stallMs: number;
  problems: string[];
}

interface Ctx {
  dir: string;
  seed: number;
  /** ms after the replay started when the fault strikes */
  at: number;
  stack: Stack;
  redis?: PrivateRedis;
  cleanup: (() => Promise<void> | void)[];
  /** what the fault itself found wrong (a process it started did not say what it must) */
  problems: string[];
}

interface Fault {
  /** extra environment of the stack */
  env?: (ctx: Omit<Ctx, 'stack' | 'problems'>) => Promise<Record<string, string>> | Record<string, string>;
  /** the fault itself, once the replay has run `ctx.at` ms */
  strike: (ctx: Ctx) => Promise<void>;
  /** exit code the run ends with (default 0) */
  code?: number;
  /** an interrupted run is judged by its prefix */
  prefix?: boolean;
  /** needs root (a tmpfs mount) */
  root?: boolean;
  /** needs libfaketime (Debian's faketime package) */
  faketime?: boolean;
  /** a Redis of its own (the fault kills it) */
  ownRedis?: boolean;
  /**
   * Where the files cannot equal the run without the fault (Redis lost the data), the account the
   * run gave is judged instead: what is wrong with it (empty = exact account).
   */
  account?: (out: string, files: Map<string, string>, reference: Map<string, string>) => string[];
  /** problems the strike itself found (a second writer not refused) */
  found?: string[];
  /** the CSV files never stall longer than this (bars keep closing on time through the fault) */
  maxStallMs?: number;
  /** what the stack's output must say of the fault */
  says?: RegExp;
  /** what the stack says once its feed is under way (default: the replay started, or the feed connected) */
  started?: RegExp;
  /**
   * The files to compare with, where not the run without the fault's (a live run's trades are
   * stamped with the moment they are sent): made once the stack has ended, its Redis still up (ownRedis)
   */
  oracle?: (ctx: Ctx) => Promise<Map<string, string>>;
}

interface Stack {
  proc: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}

function startStack(env: Record<string, string>): Stack {
  const proc = spawn(process.execPath, [CLI, 'stack'], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'info', HTTP_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code, sig) => r(code ?? (sig ? 128 : null))));
  return { proc, out: () => out, exited };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Deterministic numbers from a seed (mulberry32). */
function rng(seed: number): () => number {
  let a = seed * 0x9e3779b9;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The pid of a role the stack runs (the first, for several aggregators). */
function rolePid(stack: Stack, role: string): number {
  const pid = descendants(stack.proc.pid!).find((p) => new RegExp(`cli\\.js ${role}\\b`).test(cmdline(p)));
  if (pid === undefined) throw new Error(`no ${role} process under the stack`);
  return pid;
}

export function csvFiles(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const raw = join(dir, 'raw');
  if (!existsSync(raw)) return out;
  for (const iv of intervalDirs(raw))
    for (const f of readdirSync(join(raw, iv))) out.set(`${iv}/${f}`, readFileSync(join(raw, iv, f), 'utf8'));
  return out;
}

/** The interval folders under raw/ (a disk-filling file may sit beside them). */
function intervalDirs(raw: string): string[] {
  return readdirSync(raw, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name);
}

function csvBytes(dir: string): number {
  const raw = join(dir, 'raw');
  if (!existsSync(raw)) return 0;
  let n = 0;
  for (const iv of intervalDirs(raw)) for (const f of readdirSync(join(raw, iv))) n += statSync(join(raw, iv, f)).size;
  return n;
}

const kill = (role: string): Fault => ({ strike: async (ctx) => void process.kill(rolePid(ctx.stack, role), 'SIGKILL') });

/** Redis killed outright (SIGKILL: no shutdown, AOF as it was) and started again on its port after `ms`. */
const redisDown = (ms: number): Fault => ({
  ownRedis: true,
  env: () => ({}),
  strike: async (ctx) => {
    const r = ctx.redis!;
    const port = r.port;
    r.kill();
    await sleep(ms);
    await r.start(port);
  },
});

/** The stack's private Redis, as a client with its password (DATA_DIR/redis). */
function privateRedisOf(dir: string): Redis {
  const url = readFileSync(join(dir, 'redis', 'candlewick-redis.url'), 'utf8').trim();
  return new Redis(url, { password: readFileSync(join(dir, 'redis', 'candlewick-redis.pass'), 'utf8').trim() });
}

/**
 * The account of a run whose Redis lost its data: said with the span of the bars open then; every
 * row of the bar files the same bytes as the run without the fault (the bars open then are not in
 * them but beside them, in `.incomplete.csv` files the summary names, none after the span said and
 * none in its bar file too); rows missing only up to the span's end (bars closed but not yet written
 * when the data went); no row that run did not have.
 */
function lossAccount(out: string, files: Map<string, string>, reference: Map<string, string>): string[] {
  const said = [
    ...out.matchAll(/Redis lost candlewick's data \(the marker key \S+ is gone[^)]*\): open bars from (\S+) to (\S+) are incomplete/g),
  ];
  if (said.length !== 1) return [`the loss said ${said.length} times, not once`];
  if (!/DATA LOST/.test(out)) return ['no DATA LOST in the summary'];
  const to = Date.parse(said[0]![2]!);
  const problems: string[] = [];
  const rows = (text: string) =>
    new Map(
      text
        .trimEnd()
        .split('\n')
        .slice(1)
        .map((l) => [l.split(',')[0]!, l] as const),
    );
  const startOf = (label: string) => (/^\d{4}-\d{2}-\d{2}$/.test(label) ? Date.parse(`${label}T00:00:00-04:00`) : Date.parse(label));
  for (const [f, text] of reference) {
    const want = rows(text);
    const got = rows(files.get(f) ?? 'header\n');
    for (const label of got.keys()) if (!want.has(label)) problems.push(`${f}: ${label} is extra`);
    for (const [label, line] of want) {
      const row = got.get(label);
      if (row === undefined) {
        if (startOf(label) > to) problems.push(`${f}: ${label} missing after the loss`);
      } else if (row !== line) problems.push(`${f}: ${label} differs (a bar file holds whole bars only)`);
    }
    const asideName = f.replace(/\.csv$/, '.incomplete.csv');
    const aside = files.get(asideName);
    if (aside === undefined) continue;
    if (!out.includes(`raw/${asideName}`)) problems.push(`${asideName} is not named in the summary`);
    for (const label of rows(aside).keys()) {
      const start = startOf(label);
      // (not before `from` either, but for the bars the ingestor sent again from what it still held)
      if (start > to) problems.push(`${asideName}: ${label} is after the span said`);
      if (got.has(label)) problems.push(`${asideName}: ${label} is in the bar file too`);
    }
  }
  if (![...files.keys()].some((f) => f.endsWith('.incomplete.csv'))) problems.push('no bar written aside (.incomplete.csv)');
  return problems;
}
/** Redis paused (SIGSTOP: its connections stay open, nothing answers) for `ms`, then resumed. */
const redisPaused = (ms: number): Fault => ({
  ownRedis: true,
  says: /Redis is not answering for \d+ s[^]*Redis is back/,
  strike: async (ctx) => {
    const pid = ctx.redis!.pid!;
    process.kill(pid, 'SIGSTOP');
    await sleep(ms);
    process.kill(pid, 'SIGCONT');
  },
});

export const LIBFAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';

/** A process's environment for libfaketime: its wall clock read from `clock` (an offset such as -1h), re-read at each call; its monotonic clock left alone. */
function fakedClock(clock: string): Record<string, string> {
  return { LD_PRELOAD: LIBFAKETIME, FAKETIME_TIMESTAMP_FILE: clock, FAKETIME_NO_CACHE: '1', FAKETIME_DONT_FAKE_MONOTONIC: '1' };
}

/**
 * The closer's host clock stepped by `offset` (libfaketime's syntax, "-1h") while it runs, as NTP or
 * `date -s` would: the stack's own closer is paused and a closer on the same Redis and DATA_DIR
 * whose clock steps takes over for 8 s (the monotonic clock is left alone, as a real step leaves it).
 * Bars must keep closing on time meanwhile.
 */
const closerClock = (offset: string): Fault => ({
  faketime: true,
  maxStallMs: 5000,
  strike: async (ctx) => {
    const own = rolePid(ctx.stack, 'close');
    const clock = join(ctx.dir, 'faketime');
    writeFileSync(clock, '+0\n');
    const closer = spawn(process.execPath, [CLI, 'close'], {
      env: {
        PATH: process.env.PATH ?? '',
        DATA_DIR: ctx.dir,
        LOG_LEVEL: 'info',
        // a closer on its own, as in docker compose: it also closes everything once the feed is quiet
        // CLOSE_WHEN_IDLE_MS — judged how long the feed has been quiet by its own clock, a step must
        // neither close bars under trades still coming (ahead) nor never (behind)
        ...fakedClock(clock),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    closer.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise((r) => closer.once('exit', r));
    try {
      for (let i = 0; i < 300 && !/closer started/.test(out); i++) await sleep(50);
      process.kill(own, 'SIGSTOP');
      writeFileSync(clock, `${offset}\n`);
      await sleep(8000);
    } finally {
      process.kill(own, 'SIGCONT');
      closer.kill('SIGTERM');
      await exited;
    }
    const side = offset.startsWith('-') ? 'behind' : 'ahead of';
    if (!new RegExp(`this host's clock is 3600 s ${side} Redis's`).test(out))
      ctx.problems.push(`the stepped closer did not say its clock is ${side} Redis's`);
  },
});

/**
 * The ingestor's host clock stepped by `offset` while it runs, live at the clock (MODE=live,
 * CLOCK=wall; the feed, in this process, stamps each trade with the moment it sends it, as a live
 * feed does): "ahead of the clock" (FUTURE_LIMIT_MS) is judged by Redis's clock, so no trade is
 * taken for one from the future: every trade the feed sent is on the raw stream and the files equal
 * `candlewick bars` over them. The ingestor on the feed runs beside the stack (on its Redis and
 * settings, with libfaketime); the stack's own finds no feed at its URL.
 */
const ingestorClock = (offset: string): Fault => {
  let feed: ReplayServer | undefined;
  let feedDone: Promise<void> = Promise.resolve();
  let trades = 0;
  const settings = { MODE: 'live', CLOCK: 'wall', SYMBOLS: 'BINANCE:XRPETH', FINNHUB_TOKEN: 'campaign-token' };
  return {
    faketime: true,
    ownRedis: true,
    started: /feed connection failed/,
    env: async (ctx) => {
      const tape = readTape(TAPE).filter(isTapeTrade);
      trades = tape.length;
      let finished: () => void = () => undefined;
      feedDone = new Promise((r) => (finished = r));
      feed = new ReplayServer(
        tape,
        { port: 0, speed: 20000, frameTrades: 200, settleMs: 10, live: true, shiftToNow: true, onFinished: () => finished() },
        quiet,
      );
      await feed.start();
      const nowhere = await freePort();
      ctx.cleanup.push(() => feed!.stop());
      return { ...settings, FINNHUB_WS_URL: `ws://127.0.0.1:${nowhere}` };
    },
    strike: async (ctx) => {
      const clock = join(ctx.dir, 'faketime');
      writeFileSync(clock, '+0\n');
      const ingestor = spawn(process.execPath, [CLI, 'ingest'], {
        env: {
          PATH: process.env.PATH ?? '',
          DATA_DIR: ctx.dir,
          LOG_LEVEL: 'info',
          REDIS_URL: ctx.redis!.url,
          ...settings,
          FINNHUB_WS_URL: `ws://127.0.0.1:${feed!.port}`,
          ...fakedClock(clock),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      ingestor.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      ingestor.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise((r) => ingestor.once('exit', r));
      try {
        for (let i = 0; i < 300 && !/feed connected/.test(out); i++) await sleep(50);
        // the step a second into the tape's 4 s: trades before it and after it
        await sleep(1000);
        writeFileSync(clock, `${offset}\n`);
        await feedDone;
        await sleep(500);
      } finally {
        ingestor.kill('SIGTERM');
        await exited;
      }
      const side = offset.startsWith('-') ? 'behind' : 'ahead of';
      if (!new RegExp(`this host's clock is 3600 s ${side} Redis's`).test(out))
        ctx.problems.push(`the stepped ingestor did not say its clock is ${side} Redis's`);
      if (/trade rejected/.test(out)) ctx.problems.push(`the stepped ingestor rejected trades: ${/"reason":"([^"]*)"/.exec(out)?.[1]}`);
    },
    oracle: async (ctx) => {
      const redis = new Redis(ctx.redis!.url);
      const lines: string[] = [];
      try {
        const entries = (await redis.xrange(makeKeys('cw').trades(0), '-', '+')) as [string, string[]][];
        for (const [id, f] of entries)
          for (const { trade } of decodeTradeEntries(id, f))
            lines.push(JSON.stringify({ s: trade.s, p: Number(trade.p), v: trade.v, t: trade.t, c: trade.c }));
      } finally {
        redis.disconnect();
      }
      if (lines.length !== trades) ctx.problems.push(`${lines.length} trades on the raw stream of the ${trades} the feed sent`);
      const tape = join(ctx.dir, 'ingested.jsonl');
      writeFileSync(tape, `${lines.join('\n')}\n`);
      const out = join(ctx.dir, 'oracle');
      execFileSync(process.execPath, [CLI, 'bars', '--tape', tape, '--out', out], {
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'warn' },
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      return csvFiles(out);
    },
  };
};

export const FAULTS: Record<string, Fault> = {
  'kill -9 aggregate': kill('aggregate'),
  'kill -9 close': kill('close'),
  'kill -9 write': kill('write'),
  // a live feed: what the ingestor had not appended, and what was sent while it was away, comes back by backfill
  'kill -9 ingest': {
    env: async (ctx) => {
      const tape = readTape(TAPE).filter(isTapeTrade);
      const feed = new ReplayServer(tape, { port: 0, speed: 20000, frameTrades: 200, settleMs: 10, live: true }, quiet);
      const feedPort = await feed.start();
      const provider = new ProviderServer(tape, { massiveKey: 'campaign-key', pageSize: 5000 });
      const base = await provider.start();
      ctx.cleanup.push(
        () => feed.stop(),
        () => provider.stop(),
      );
      return {
        MODE: 'live',
        FINNHUB_TOKEN: 'campaign-token',
        FINNHUB_WS_URL: `ws://127.0.0.1:${feedPort}`,
        SYMBOLS: 'BINANCE:XRPETH',
        CLOCK: 'event',
        BACKFILL: 'on',
        BACKFILL_PROVIDER: 'massive',
        MASSIVE_API_KEY: 'campaign-key',
        MASSIVE_REST_URL: base,
        BACKFILL_RATE: '6000',
      };
    },
    strike: async (ctx) => void process.kill(rolePid(ctx.stack, 'ingest'), 'SIGKILL'),
  },
  // a worker paused longer than the takeover deadline wakes up to find its batch taken over
  'STOP/CONT aggregate': {
    env: () => ({ AGGREGATORS: '2' }),
    strike: async (ctx) => {
      const pid = rolePid(ctx.stack, 'aggregate');
      process.kill(pid, 'SIGSTOP');
      await sleep(6000);
      process.kill(pid, 'SIGCONT');
    },
  },
  'Redis killed 1 s': redisDown(1000),
  // longer than STALE_MS (30 s): the ingestor holds its socket all the while
  'Redis killed 35 s': redisDown(35_000),
  'Redis killed 90 s': redisDown(90_000),
  'Redis paused 10 s': redisPaused(10_000),
  'Redis paused 60 s': redisPaused(60_000),
  'closer clock −1 h': closerClock('-1h'),
  'closer clock +1 h': closerClock('+1h'),
  'ingestor clock −1 h': ingestorClock('-1h'),
  'CSV disk full': {
    root: true,
    env: (ctx) => {
      ctx.cleanup.push(mountTmpfs(join(ctx.dir, 'raw'), 512));
      return {};
    },
    strike: async (ctx) => {
      const filler = fillDisk(join(ctx.dir, 'raw'), 0);
      await sleep(3000);
      rmSync(filler);
    },
  },
  'rows cut from a file': {
    strike: async (ctx) => {
      const path = join(ctx.dir, 'raw', '1min', 'BINANCE_XRPETH_1min.csv');
      const lines = readFileSync(path, 'utf8').split('\n');
      truncateSync(path, Buffer.byteLength(`${lines.slice(0, Math.max(2, lines.length - 31)).join('\n')}\n`));
    },
  },
  // a feed's bad clock or a ms/µs mix-up: one trade stamped in 2099 and one 24 h ahead of its
  // neighbours, at seed-chosen places in the tape. Both are rejected (FUTURE_LIMIT_MS) and never move
  // the watermark, so the files are the run's without them. The tape goes as raw frames, which the
  // replay server sends unpaced (a paced replay would wait for a trade's time to come).
  'a trade from the future': {
    env: (ctx) => {
      const random = rng(ctx.seed + 7919);
      const trades = readTape(TAPE).filter(isTapeTrade);
      const line = (tr: { s: string; p: string; v: number; t: number }) =>
        `{"s":${JSON.stringify(tr.s)},"p":${tr.p},"v":${JSON.stringify(tr.v)},"t":${tr.t},"c":[]}`;
      const data = trades.map(line);
      const ahead = 1000 + Math.floor(random() * (trades.length - 2000));
      data.splice(ahead, 0, line({ ...trades[ahead - 1]!, p: '0.002', t: trades[ahead - 1]!.t + 24 * 3_600_000 }));
      const y2099 = 1000 + Math.floor(random() * (trades.length - 2000));
      data.splice(y2099, 0, line({ ...trades[y2099]!, p: '0.003', t: Date.UTC(2099, 11, 31) }));
      const frames: string[] = [];
      for (let i = 0; i < data.length; i += 200) frames.push(`{"type":"trade","data":[${data.slice(i, i + 200).join(',')}]}`);
      const tape = join(ctx.dir, 'future.frames');
      writeFileSync(tape, `${frames.join('\n')}\n`);
      return { REPLAY_TAPE: tape, SYMBOLS: 'BINANCE:XRPETH' };
    },
    strike: async () => undefined,
  },
  // Redis comes back empty: the loss is said once, with the bars it left incomplete, and the run ends (exit 1)
  FLUSHALL: {
    code: 1,
    account: lossAccount,
    strike: async (ctx) => {
      const redis = privateRedisOf(ctx.dir);
      try {
        await redis.flushall();
      } finally {
        redis.disconnect();
      }
    },
  },
  // a second writer on the stack's files and key prefix (finding its Redis as `tap` does): refused, exit 2
  'a second writer': {
    strike: async (ctx) => {
      const second = spawn(process.execPath, [CLI, 'write'], {
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', DATA_DIR: ctx.dir, LOG_LEVEL: 'warn' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let said = '';
      second.stderr!.on('data', (d: Buffer) => (said += d.toString()));
      const code = await new Promise<number | null>((r) => second.on('exit', (c) => r(c)));
      if (code !== 2 || !/already held by a running process \(host \S+ pid \d+, since /.test(said))
        (FAULTS['a second writer']!.found ??= []).push(`the second writer exited ${code}, not refused: ${said.slice(0, 300)}`);
    },
  },
  'Ctrl-C': {
    code: 130,
    prefix: true,
    strike: async (ctx) => void process.kill(-ctx.stack.proc.pid!, 'SIGINT'),
  },
};

/** The files of a run of the tape without faults. */
export async function referenceRun(): Promise<Map<string, string>> {
  const dir = mkdtempSync(join(tmpdir(), 'cw-faults-ref-'));
  const stack = startStack({ DATA_DIR: dir });
  const code = await stack.exited;
  if (code !== 0) throw new Error(`the reference run failed (exit ${code}):\n${stack.out().slice(-3000)}`);
  const files = csvFiles(dir);
  rmSync(dir, { recursive: true, force: true });
  return files;
}

/** One run of the tape with `fault` striking at a moment chosen by `seed`. */
export async function runFault(name: string, seed: number, reference: Map<string, string>): Promise<FaultRun> {
  const fault = FAULTS[name];
  if (!fault) throw new Error(`unknown fault "${name}": ${Object.keys(FAULTS).join(', ')}`);
  const random = rng(seed);
  const base = {
    dir: mkdtempSync(join(tmpdir(), 'cw-fault-')),
    seed,
    at: 1500 + Math.floor(random() * 3500),
    cleanup: [] as Ctx['cleanup'],
  };
  const problems: string[] = [];
  try {
    let redisEnv: Record<string, string> = {};
    let redis: PrivateRedis | undefined;
    if (fault.ownRedis) {
      redis = new PrivateRedis(join(base.dir, 'own-redis'));
      redisEnv = { REDIS_URL: await redis.start() };
      base.cleanup.push(() => redis!.stop());
    }
    const env = { ...(await fault.env?.({ ...base, redis })), ...redisEnv };
    const stack = startStack({ DATA_DIR: base.dir, REPLAY_SPEED: '20000', REPLAY_SHIFT: 'false', EXIT_WHEN_IDLE_MS: '3000', ...env });
    const ctx: Ctx = { ...base, stack, redis, problems };
    base.cleanup.push(() => {
      try {
        process.kill(-stack.proc.pid!, 'SIGKILL');
      } catch {
        // gone
      }
    });
    // the CSV files' growth, sampled: the longest pause while the run is under way
    let lastSize = 0;
    let lastGrowth = 0;
    let stallMs = 0;
    let ended = false;
    void stack.exited.then(() => (ended = true));
    const sampler = (async () => {
      // (until the final close: the wait for the feed to go idle is not a stall)
      while (!ended && !/feed idle and every stage drained/.test(stack.out())) {
        const size = csvBytes(base.dir);
        const now = Date.now();
        if (size !== lastSize) {
          if (lastGrowth !== 0) stallMs = Math.max(stallMs, now - lastGrowth);
          lastGrowth = now;
          lastSize = size;
        }
        await sleep(100);
      }
    })();
    const started = Date.now();
    while (!(fault.started ?? /replaying tape|feed connected/).test(stack.out())) {
      if (ended || Date.now() - started > 60_000) break;
      await sleep(50);
    }
    await sleep(ctx.at);
    if (!ended) await fault.strike(ctx);
    const timeout = sleep(240_000).then(() => 'timeout' as const);
    const code = await Promise.race([stack.exited, timeout]);
    ended = true;
    await sampler;
    const out = stack.out();
    if (code === 'timeout') problems.push('did not end within 240 s');
    const want = fault.code ?? 0;
    if (code !== want) problems.push(`exit ${code}, not ${want}`);
    const num = (re: RegExp) => Number(re.exec(out)?.[1] ?? NaN);
    const files = csvFiles(base.dir);
    const expected = fault.oracle ? await fault.oracle(ctx) : reference;
    let exact = true;
    if (fault.found?.length) problems.push(...fault.found.splice(0));
    if (fault.account) {
      problems.push(...fault.account(out, files, expected));
      exact = problems.length === 0;
    } else
      for (const [f, text] of expected) {
        const got = files.get(f);
        const ok = fault.prefix ? got === undefined || (text.startsWith(got) && (got === '' || got.endsWith('\n'))) : got === text;
        if (!ok) {
          exact = false;
          problems.push(`${f} differs`);
        }
      }
    for (const f of files.keys()) {
      if (!expected.has(f) && !fault.account) {
        exact = false;
        problems.push(`${f} is extra`);
      }
    }
    if (/uncaught|unhandled rejection/.test(out)) problems.push('an uncaught error');
    if (fault.maxStallMs !== undefined && stallMs > fault.maxStallMs)
      problems.push(`the files stalled ${(stallMs / 1000).toFixed(1)} s (at most ${fault.maxStallMs / 1000} s)`);
    if (fault.says && !fault.says.test(out)) problems.push(`the output does not say ${fault.says}`);
    const left = descendants(stack.proc.pid!).filter((p) => cmdline(p) !== '');
    if (left.length) problems.push(`${left.length} processes left running`);
    if (problems.length && process.env.FAULTS_VERBOSE) problems.push(out.slice(-4000));
    return {
      fault: name,
      seed,
      exact,
      code: code === 'timeout' ? null : code,
      stallMs,
      tradesIn: num(/trades in\s+(\d+)/),
      merged: num(/merged\s+(\d+)/),
      late: num(/late\s+(\d+)/),
      problems,
    };
  } finally {
    for (const c of base.cleanup.reverse()) await c();
    rmSync(base.dir, { recursive: true, force: true });
  }
}

/** The campaign's table: per fault, runs, exact, trades in/merged, longest stall. */
export function table(runs: readonly FaultRun[]): string {
  const rows = [['fault', 'runs', 'exact', 'trades in / merged', 'longest stall'].join(' | ')];
  rows.push('--- | ---: | ---: | --- | ---:');
  for (const name of [...new Set(runs.map((r) => r.fault))]) {
    const rs = runs.filter((r) => r.fault === name);
    const ins = [...new Set(rs.map((r) => (Number.isNaN(r.tradesIn) ? '–' : `${r.tradesIn} / ${r.merged}`)))].join(', ');
    const stall = Math.max(...rs.map((r) => r.stallMs));
    rows.push(
      [
        name,
        rs.length,
        `${rs.filter((r) => r.exact && r.problems.length === 0).length}/${rs.length}`,
        ins,
        `${(stall / 1000).toFixed(1)} s`,
      ].join(' | '),
    );
  }
  return rows.map((r) => `| ${r} |`).join('\n');
}

/** Whether this machine can run a fault (root for a tmpfs, libfaketime for a clock step). */
export function canRun(name: string): boolean {
  const f = FAULTS[name];
  return (!f?.root || process.getuid?.() === 0) && (!f?.faketime || existsSync(LIBFAKETIME));
}

export { freePort };
