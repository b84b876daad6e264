import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { makeKeys } from '@candlewick/common';
import { csvPath } from '@candlewick/common';
import { CLI, readCsv, redisUrl, tempDir, testRedis, uniquePrefix, waitFor } from './helpers.js';

const redis = testRedis();
afterAll(() => redis.quit());

function startStack(env: Record<string, string>) {
  const proc = spawn(process.execPath, [CLI, 'stack'], {
    env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'info', HTTP_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const state = { out: '' };
  proc.stdout.on('data', (d: Buffer) => (state.out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (state.out += d.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  return { proc, state, exited };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Child pids of a process, from /proc (Linux). */
function children(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

describe('candlewick stack lifecycle', () => {
  it('a stack killed outright leaves no role behind: each notices its parent is gone and stops', async () => {
    const dir = tempDir('orphans');
    const { proc, state, exited } = startStack({ DATA_DIR: dir, EXIT_WHEN_IDLE_MS: '0' });
    await waitFor(() => state.out.includes('tape finished'), 60_000, 'the replay to finish');
    const kids = children(proc.pid!);
    expect(kids.length).toBeGreaterThanOrEqual(6);
    proc.kill('SIGKILL');
    await exited;
    // the Node roles stop through their shutdown path; the private redis-server is told by no one
    const redisPid = kids.find((k) => readFileSync(`/proc/${k}/cmdline`, 'utf8').includes('redis-server'))!;
    await waitFor(() => kids.filter((k) => k !== redisPid).every((k) => !alive(k)), 20_000, 'every role to stop');
    expect(alive(redisPid)).toBe(true);
    // the next stack on this DATA_DIR stops the leftover server before starting its own on the same AOF
    const again = startStack({ DATA_DIR: dir, EXIT_WHEN_IDLE_MS: '500' });
    expect(await again.exited).toBe(0);
    expect(alive(redisPid)).toBe(false);
    // (the same tape again is no resume: a replay re-sends trades the killed run had already
    // ingested, so only the server hand-over is checked here)
    expect(again.state.out).toMatch(/candlewick summary/);
  });

  it('starts its own redis-server, and Ctrl-C stops every role and the server cleanly', async () => {
    const dir = tempDir('sigint');
    const proc = spawn(process.execPath, [CLI, 'stack'], {
      env: { PATH: process.env.PATH ?? '', DATA_DIR: dir, EXIT_WHEN_IDLE_MS: '0', LOG_LEVEL: 'info', HTTP_PORT: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
    // runs until the tape is replayed and every bar the watermark allows is written
    await waitFor(() => out.includes('tape finished'), 60_000, 'the replay to finish');
    await waitFor(
      () => {
        try {
          return readCsv(csvPath(dir, '1h', 'BINANCE:XRPETH')).rows.length >= 59;
        } catch {
          return false;
        }
      },
      60_000,
      'closed bars in the CSV',
    );
    const kids = children(proc.pid!);
    expect(kids.length).toBeGreaterThanOrEqual(6); // redis-server, replay-server, write, close, aggregate, ingest
    proc.kill('SIGINT');
    expect(await exited).toBe(0);
    expect(out).toMatch(/stopping every role/);
    for (const k of kids) expect(alive(k)).toBe(false);
    // the tape was done: Ctrl-C ends the replay as it would have ended by itself, every bar written
    // once (issue 22; test/signals.test.ts compares the files with such a run)
    expect(out).toMatch(/candlewick summary/);
    const rows = readCsv(csvPath(dir, '1min', 'BINANCE:XRPETH')).rows;
    expect(rows).toHaveLength(2469);
    expect(new Set(rows.map((r) => r.start)).size).toBe(rows.length);
  });

  it('a second run of the same tape over the same DATA_DIR counts its trades as late and writes nothing twice', async () => {
    const dir = tempDir('resume');
    const tape = join(dir, 'tape.jsonl');
    const t0 = Date.parse('2024-03-05T15:00:00Z');
    const lines = Array.from({ length: 300 }, (_, i) => JSON.stringify({ s: 'TEST', p: 100 + (i % 7), v: 1, t: t0 + i * 1000, c: [] }));
    writeFileSync(tape, lines.join('\n'));
    const run = (idle: string) =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        const p = spawn(process.execPath, [CLI, 'stack'], {
          env: {
            PATH: process.env.PATH ?? '',
            DATA_DIR: dir,
            REPLAY_TAPE: tape,
            EXIT_WHEN_IDLE_MS: idle,
            INTERVALS: '1min',
            HTTP_PORT: '0',
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        p.stdout.on('data', (d: Buffer) => (out += d.toString()));
        p.on('exit', (code) => resolve({ code, out }));
      });
    const first = await run('500');
    expect(first.code).toBe(0);
    expect(first.out).toMatch(/bars written\s+1min=5/);
    // the same tape again: every trade is behind the stored watermark, so late; the CSV is unchanged
    const second = await run('500');
    expect(second.code).toBe(0);
    expect(second.out).toMatch(/late\s+300 /);
    expect(second.out).toMatch(/bars written\s+1min=0/);
    expect(readCsv(csvPath(dir, '1min', 'TEST')).rows.map((r) => r.n)).toEqual([60, 60, 60, 60, 60]);
  });
});

describe('wall-clock closing', () => {
  it('closes a bar by Redis time within grace + 1 s of its end, with no further trades, no flush, and a second closer process racing', async () => {
    const dir = tempDir('wall');
    const tape = join(dir, 'day.jsonl');
    // 40 trades 5 ms apart, replayed at their pace and stamped when sent (REPLAY_SHIFT), so they are
    // on time however long the stack takes to start; then both symbols stop trading
    const base = Date.parse('2020-01-02T15:00:00Z');
    writeFileSync(
      tape,
      Array.from({ length: 40 }, (_, i) => JSON.stringify({ s: i % 2 ? 'AAA' : 'BBB', p: 10 + i, v: 1, t: base + i * 5, c: [] })).join(
        '\n',
      ),
    );
    const prefix = uniquePrefix('wall');
    const env = {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: prefix,
      DATA_DIR: dir,
      REPLAY_TAPE: tape,
      REPLAY_SPEED: '1',
      CLOCK: 'wall',
      EXIT_WHEN_IDLE_MS: '0',
      INTERVALS: '1min',
      GRACE_MS: '2000',
    };
    const { proc, state, exited } = startStack(env);
    // a second closer on the same Redis: the scheduler's ticks go to either, no bar may close twice
    const closer2 = spawn(process.execPath, [CLI, 'close'], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: 'ignore' });
    onTestFinished(() => {
      closer2.kill('SIGTERM');
      proc.kill('SIGTERM');
    });
    const rows = (sym: string) => {
      try {
        return readCsv(csvPath(dir, '1min', sym)).rows;
      } catch {
        return [];
      }
    };
    // every trade in exactly one bar: all 40 are in once the last bar is written (the 200 ms burst
    // may straddle a minute, and then the first minute's bars hold only some of them)
    const trades = () => [...rows('AAA'), ...rows('BBB')].reduce((n, r) => n + r.n, 0);
    let seenAt = 0;
    await waitFor(
      () => {
        const done = trades() >= 40;
        if (done) seenAt = Date.now();
        return done;
      },
      100_000,
      'every trade in a bar in the CSV',
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n--- stack output ---\n${state.out.slice(-4000)}`);
    });
    expect(trades()).toBe(40);
    // the last bar's window ended a minute after its start; it was seen within grace + 1 s of that
    const last = Math.max(...[...rows('AAA'), ...rows('BBB')].map((r) => r.start));
    const end = last + 60_000;
    expect(seenAt).toBeGreaterThanOrEqual(end + 2000);
    expect(seenAt).toBeLessThanOrEqual(end + 2000 + 1000);
    expect(state.out).not.toMatch(/late trades/);
    await new Promise((r) => setTimeout(r, 1000)); // a few more ticks from both closers
    expect(await redis.xlen(makeKeys(prefix).bars('1min'))).toBe(rows('AAA').length + rows('BBB').length);
    closer2.kill('SIGTERM');
    proc.kill('SIGINT');
    expect(await exited).toBe(0);
  });
});
