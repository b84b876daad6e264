import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, type TestContext } from 'vitest';
import { makeKeys } from '@candlewick/common';
import { Clock, parseInterval } from '@candlewick/core';
import { childPids, cmdline, rawTrades, redisUrl, startCli, tempDir, testRedis, uniquePrefix, waitFor } from './helpers.js';

/**
 * Crash recovery at live pace (CLOCK=wall, GRACE_MS=2000): roles killed with SIGKILL (and an
 * aggregator paused past the takeover deadline) a second before a minute ends. Every bar must still
 * be exact — equal to the bars folded straight from the raw stream — and reach its CSV at most
 * grace + 3 s after its window's end.
 */
const GRACE = 2000;
const LIMIT = GRACE + 3000;
const clock = new Clock('America/New_York');

/** Every row of every CSV under dir/raw, with the moment it was first seen. */
class RowWatch {
  readonly seen = new Map<string, number>();
  private timer: NodeJS.Timeout;
  constructor(private readonly dir: string) {
    this.timer = setInterval(() => this.poll(), 100);
  }
  private poll(): void {
    const raw = join(this.dir, 'raw');
    if (!existsSync(raw)) return;
    const now = Date.now();
    for (const iv of readdirSync(raw)) {
      for (const f of readdirSync(join(raw, iv))) {
        if (!f.endsWith('.csv')) continue;
        for (const line of readFileSync(join(raw, iv, f), 'utf8')
          .split('\n')
          .slice(1)) {
          if (line === '') continue;
          const key = `${iv}|${line}`;
          if (!this.seen.has(key)) this.seen.set(key, now);
        }
      }
    }
  }
  stoppedAt = 0;
  stop(): void {
    clearInterval(this.timer);
    this.poll();
    this.stoppedAt = Date.now();
  }
}

/** 1-minute bars folded from the raw stream itself (t, p, v in stream order): the oracle. */
async function barsFromStream(prefix: string): Promise<Map<number, { o: number; h: number; l: number; c: number; v: number; n: number }>> {
  const redis = testRedis();
  try {
    const bars = new Map<number, { o: number; h: number; l: number; c: number; v: number; n: number; ot: number; ct: number }>();
    for (const { trade } of await rawTrades(redis, makeKeys(prefix).trades(0))) {
      const { t, v } = trade;
      const p = Number(trade.p);
      const start = Math.floor(t / 60_000) * 60_000;
      const b = bars.get(start);
      if (!b) bars.set(start, { o: p, h: p, l: p, c: p, v, n: 1, ot: t, ct: t });
      else {
        if (t < b.ot) [b.o, b.ot] = [p, t];
        if (t >= b.ct) [b.c, b.ct] = [p, t];
        b.h = Math.max(b.h, p);
        b.l = Math.min(b.l, p);
        b.v += v;
        b.n++;
      }
    }
    return bars;
  } finally {
    await redis.quit();
  }
}

const nextMinute = () => Math.ceil((Date.now() + 1500) / 60_000) * 60_000;
const until = (t: number) => new Promise((r) => setTimeout(r, Math.max(0, t - Date.now())));

function rolePids(stackPid: number, role: RegExp): number[] {
  return childPids(stackPid).filter((p) => role.test(cmdline(p)));
}

async function liveRun(ctx: TestContext, name: string, aggregators: number, faults: ((stackPid: number) => Promise<string>)[]) {
  const dir = tempDir(name);
  const prefix = uniquePrefix(name);
  const stack = startCli(['stack'], {
    REDIS_URL: redisUrl(),
    KEY_PREFIX: prefix,
    DATA_DIR: dir,
    REPLAY_SPEED: '60',
    REPLAY_SHIFT: 'true',
    CLOCK: 'wall',
    GRACE_MS: String(GRACE),
    EXIT_WHEN_IDLE_MS: '0',
    AGGREGATORS: String(aggregators),
    INTERVALS: '1min,5min',
  });
  ctx.onTestFinished(() => stack.kill('SIGKILL'));
  const watch = new RowWatch(dir);
  await waitFor(() => /replaying tape/.test(stack.output().stdout), 60_000, 'the replay');
  const done: string[] = [];
  // each fault a second before a minute ends, the next one at the next minute
  for (const fault of faults) {
    const boundary = nextMinute();
    await until(boundary - 1000);
    done.push(await fault(stack.pid));
  }
  // one more minute: every bar the faults touched has closed (and one closed after them, checked)
  await until(nextMinute() + LIMIT + 2000);
  watch.stop();
  const res = await stack.stop();
  expect(res.code, res.stdout.slice(-3000)).toBe(0);
  return { watch, out: res.stdout, prefix, done };
}

function check(run: Awaited<ReturnType<typeof liveRun>>, oracle: Awaited<ReturnType<typeof barsFromStream>>) {
  const lags: number[] = [];
  let checked = 0;
  for (const [key, seenAt] of run.watch.seen) {
    const [iv, line] = key.split('|') as [string, string];
    const cells = line.split(',');
    const start = Date.parse(cells[0]!);
    const end = clock.window(start, parseInterval(iv).ms, 0)[1];
    lags.push(seenAt - end);
    if (seenAt - end > LIMIT)
      throw new Error(
        `${iv} ${cells[0]} reached its CSV ${seenAt - end} ms after its window ended (limit ${LIMIT})\n${run.done.join('\n')}`,
      );
    if (iv !== '1min') continue;
    const want = oracle.get(start);
    expect(want, `${cells[0]} is a bar of the raw stream`).toBeDefined();
    expect([Number(cells[1]), Number(cells[2]), Number(cells[3]), Number(cells[4]), Number(cells[7])], cells[0]).toEqual([
      want!.o,
      want!.h,
      want!.l,
      want!.c,
      want!.n,
    ]);
    expect(Math.abs(Number(cells[6]) - want!.v)).toBeLessThan(1e-6 * Math.max(1, want!.v));
    checked++;
  }
  // REPLAY_SHIFT compresses an hour of tape into a wall minute: a 1min bar per minute of the run.
  // Nothing lost: every minute of the raw stream that was due by the end has its row.
  expect(checked).toBeGreaterThanOrEqual(run.done.length + 1);
  const written = new Set(
    [...run.watch.seen.keys()].filter((k) => k.startsWith('1min|')).map((k) => Date.parse(k.split('|')[1]!.split(',')[0]!)),
  );
  for (const start of oracle.keys())
    if (start + 60_000 + LIMIT < run.watch.stoppedAt)
      expect(written.has(start), `the bar of ${new Date(start).toISOString()} was written`).toBe(true);
  lags.sort((a, b) => a - b);
  console.log(
    `close lag over ${lags.length} rows: median ${lags[lags.length >> 1]} ms, worst ${lags[lags.length - 1]} ms (${run.done.join('; ')})`,
  );
}

const kill = (role: RegExp, label: string) => async (stackPid: number) => {
  const pid = rolePids(stackPid, role)[0]!;
  process.kill(pid, 'SIGKILL');
  return `${label} killed at ${new Date().toISOString().slice(11, 23)}`;
};

// the runs side by side (each a light paced replay, its faults at the same minute ends): a third of the wall time
describe.concurrent('crash recovery at live pace: every bar exact and in its CSV within grace + 3 s', () => {
  it('two aggregators: one killed, then the other paused past the takeover deadline, each a second before a minute ends', async (ctx) => {
    const run = await liveRun(ctx, 'recovery-2a', 2, [
      kill(/cli\.js aggregate/, 'aggregate.1'),
      async (stackPid) => {
        const pid = rolePids(stackPid, /cli\.js aggregate/)[1]!;
        process.kill(pid, 'SIGSTOP');
        setTimeout(() => process.kill(pid, 'SIGCONT'), 8000);
        return `aggregate paused 8 s at ${new Date().toISOString().slice(11, 23)}`;
      },
    ]);
    check(run, await barsFromStream(run.prefix));
    expect(run.out).not.toMatch(/late trades kept/);
  }, 600_000);

  it('two aggregators: the closer killed, then the writer, each a second before a minute ends', async (ctx) => {
    const run = await liveRun(ctx, 'recovery-2b', 2, [kill(/cli\.js close/, 'close'), kill(/cli\.js write/, 'write')]);
    check(run, await barsFromStream(run.prefix));
    expect(run.out).not.toMatch(/late trades kept/);
  }, 600_000);

  it('one aggregator, killed a second before a minute ends: its successor of the same name takes over', async (ctx) => {
    const run = await liveRun(ctx, 'recovery-1', 1, [kill(/cli\.js aggregate/, 'aggregate')]);
    check(run, await barsFromStream(run.prefix));
    expect(run.out).not.toMatch(/late trades kept/);
  }, 400_000);
});
