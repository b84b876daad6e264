import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CLI,
  needs,
  BUNDLED_TAPE,
  LEAN_AIG_TAPE,
  csvOutputs,
  loadKlines,
  readCsv,
  redisUrl,
  rollUpKlines,
  runCli,
  tempDir,
  uniquePrefix,
  compareBars,
} from './helpers.js';
import { csvPath } from '@candlewick/common';

/**
 * `candlewick bars`: a tape folded in one process, no Redis. Its files must be byte for byte what
 * `candlewick stack` writes for the same tape and settings — each setting that changes what is
 * written (sessions, conditions, daily bars, empty bars, partitions) — and equal the exchange's
 * own bars.
 */
async function both(
  name: string,
  env: Record<string, string>,
): Promise<{ stack: Map<string, string>; bars: Map<string, string>; out: string }> {
  const stackDir = tempDir(`${name}-stack`);
  const stack = await runCli(['stack'], {
    REDIS_URL: redisUrl(),
    KEY_PREFIX: uniquePrefix(name),
    DATA_DIR: stackDir,
    EXIT_WHEN_IDLE_MS: '500',
    ...env,
  });
  expect(stack.code, stack.stdout.slice(-2000)).toBe(0);
  const barsDir = tempDir(`${name}-bars`);
  // no REDIS_URL: nothing to connect to, and nothing needed
  const bars = await runCli(['bars', '--out', barsDir], { ...env, REDIS_URL: 'redis://127.0.0.1:1' });
  expect(bars.code, bars.stderr).toBe(0);
  return { stack: csvOutputs(stackDir), bars: csvOutputs(barsDir), out: bars.stdout };
}

describe('candlewick bars', () => {
  it('the bundled tape: the same files as the stack, equal to Binance’s klines; a second run over the folder writes nothing', async () => {
    const r = await both('bars-bundled', { REPLAY_TAPE: BUNDLED_TAPE });
    expect(r.bars.size).toBe(5);
    expect(r.bars).toEqual(r.stack);
    expect(r.out).toMatch(/trades\s+12477\n/);
    expect(r.out).toMatch(/bars written\s+1min=2469 5min=706 15min=238 30min=119 1h=60/);
    const dir = tempDir('bars-oracle');
    expect((await runCli(['bars', '--tape', BUNDLED_TAPE, '--out', dir], {})).code).toBe(0);
    const klines = loadKlines();
    for (const [iv, minutes] of [
      ['1min', 1],
      ['1h', 60],
    ] as const)
      expect(compareBars(readCsv(csvPath(dir, iv, 'BINANCE:XRPETH')).rows, rollUpKlines(klines, minutes)), iv).toEqual([]);
    const again = await runCli(['bars', '--tape', BUNDLED_TAPE, '--out', dir], {});
    expect(again.stdout).toMatch(/bars written\s+none \(3592 already in the files\)/);
  });

  it('EMPTY_BARS=carry over two partitions: the same files as the stack', async () => {
    const r = await both('bars-carry', { REPLAY_TAPE: BUNDLED_TAPE, EMPTY_BARS: 'carry', STREAM_PARTITIONS: '2', AGGREGATORS: '2' });
    expect(r.bars).toEqual(r.stack);
    expect([...r.bars.values()].join('').split('\n').length).toBeGreaterThan(4600);
  });

  it('an equity day with SESSIONS=regular, CONDITIONS=cta-utp and daily bars: the same files as the stack', async () => {
    const r = await both('bars-lean', {
      REPLAY_TAPE: LEAN_AIG_TAPE,
      SESSIONS: 'regular',
      CONDITIONS: 'cta-utp',
      INTERVALS: '1min,5min,1h,1d',
    });
    expect(r.bars).toEqual(r.stack);
    expect(r.out).toMatch(/of them \d+ outside SESSIONS, \d+ whose CONDITIONS set nothing/);
  });

  it('a tape with malformed lines, an out-of-order trade and a late one: rejected and late as in the stack, the rest the same files', async () => {
    const dir = tempDir('bars-bad');
    const tape = join(dir, 'tape.jsonl');
    const at = (hms: string) => Date.parse(`2024-03-05T${hms}Z`);
    writeFileSync(
      tape,
      [
        { s: 'TEST', p: 10, v: 1, t: at('10:00:10'), c: [] },
        'not json',
        { s: 'TEST', p: 'abc', v: 1, t: at('10:00:20') },
        { s: 'TEST', p: 12, v: 2, t: at('10:01:01'), c: ['x'] },
        { s: 'TEST', p: 9, v: 1, t: at('10:00:59.500') }, // behind, within grace: on time
        { s: 'TEST', p: 13, v: 1, t: at('10:01:40') },
        { s: 'TEST', p: 100, v: 1, t: at('10:00:30') }, // its window closed: late
        { s: 'TEST', p: 14, v: 1, t: at('10:02:10') },
      ]
        .map((x) => (typeof x === 'string' ? x : JSON.stringify(x)))
        .join('\n'),
    );
    const r = await both('bars-bad', { REPLAY_TAPE: tape, INTERVALS: '1min,5min', GRACE_MS: '2000' });
    expect(r.bars).toEqual(r.stack);
    expect(r.out).toMatch(/rejected\s+1 /);
    expect(r.out).toMatch(/late\s+1\n/);
    expect(r.bars.get('1min/TEST_1min.csv')!.trim().split('\n')).toHaveLength(4);
  });

  it('in a terminal it draws a progress bar (on stderr), and the summary still comes', (ctx) => {
    const script = spawnSync('sh', ['-c', 'command -v script']).status === 0;
    needs(ctx, script, 'drawing in a terminal needs `script` (util-linux) for a pseudo-terminal');
    const dir = tempDir('bars-tty');
    const r = spawnSync('script', ['-qec', `${process.execPath} ${CLI} bars --out ${dir}`, '/dev/null'], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, TERM: 'xterm' },
    });
    expect(r.status, r.stdout).toBe(0);
    expect(r.stdout).toMatch(/bars \[[█░]+\] 100% 12477\/12477 tape items/);
    expect(r.stdout).toMatch(/candlewick bars/);
  });

  it('refuses what it cannot do the stack’s way, saying why', async () => {
    const amend = await runCli(['bars', '--out', tempDir('bars-amend')], { LATE: 'amend' });
    expect(amend.code).toBe(2);
    expect(amend.stderr).toMatch(/LATE=amend: bars cannot make corrections/);
    const wall = await runCli(['bars', '--out', tempDir('bars-wall')], { CLOCK: 'wall' });
    expect(wall.code).toBe(2);
    expect(wall.stderr).toMatch(/CLOCK=wall: bars folds by event time/);
    const missing = await runCli(['bars', '--tape', '/nonexistent/tape.jsonl', '--out', tempDir('bars-missing')], {});
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/REPLAY_TAPE="\/nonexistent\/tape.jsonl"/);
  });
});
