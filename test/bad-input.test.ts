import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { makeKeys } from '@candlewick/common';
import { csvPath } from '@candlewick/common';
import {
  BUNDLED_TAPE,
  compareBars,
  loadKlines,
  readCsv,
  redisUrl,
  rollUpKlines,
  runCli,
  tempDir,
  testRedis,
  uniquePrefix,
} from './helpers.js';

const redis = testRedis();
afterAll(() => redis.quit());

/** Bad frames and bad trades interleaved with the real tape, as a raw-frames tape. */
function writeHostileTape(path: string): { invalidTrades: number; badFrames: number } {
  const rows = JSON.parse(gunzipSync(readFileSync(BUNDLED_TAPE)).toString('utf8')) as { info: { p: string; q: string; T: number } }[];
  const badTrades = [
    '{"s":"","p":1,"v":1,"t":1570752011620}',
    '{"p":1,"v":1,"t":1570752011620}',
    '{"s":"BINANCE:XRPETH","p":1e999,"v":1,"t":1570752011620}', // JSON for Infinity
    '{"s":"BINANCE:XRPETH","p":"NaN","v":1,"t":1570752011620}',
    '{"s":"BINANCE:XRPETH","p":-0.0014,"v":1,"t":1570752011620}',
    '{"s":"BINANCE:XRPETH","p":0.0014,"v":-3,"t":1570752011620}',
    '{"s":"BINANCE:XRPETH","p":0.0014,"v":1,"t":"yesterday"}',
    '{"s":"BINANCE:XRPETH","p":0.0014,"v":1,"t":1570752011620.5}',
    '{"s":42,"p":0.0014,"v":1,"t":1570752011620}',
    'null',
  ];
  const badFrames = [
    'not json at all',
    '{"type":"news","data":[]}',
    '{"type":"trade"}',
    '{"type":"trade","data":"x"}',
    '[1,2,3]',
    '{"type":',
  ];
  const lines: string[] = [];
  let invalidTrades = 0;
  let nBadFrames = 0;
  for (let i = 0, k = 0; i < rows.length; i += 40, k++) {
    const good = rows.slice(i, i + 40).map((r) => `{"s":"BINANCE:XRPETH","p":${r.info.p},"v":${Number(r.info.q)},"t":${r.info.T},"c":[]}`);
    if (k % 3 === 0) {
      // a bad trade in the middle of a good frame: only it is rejected
      good.splice(good.length >> 1, 0, badTrades[k % badTrades.length]!);
      invalidTrades++;
    }
    lines.push(`{"type":"trade","data":[${good.join(',')}]}`);
    if (k % 5 === 0) {
      lines.push(badFrames[k % badFrames.length]!);
      nBadFrames++;
    }
    if (k % 7 === 0) lines.push('{"type":"ping"}');
  }
  writeFileSync(path, `${lines.join('\n')}\n`);
  return { invalidTrades, badFrames: nBadFrames };
}

describe('malformed frames and trades', () => {
  it('are counted and kept with their reason, and the valid trades still give exact bars', async () => {
    const dataDir = tempDir('bad');
    const tape = join(dataDir, 'hostile.frames');
    const { invalidTrades, badFrames } = writeHostileTape(tape);
    const prefix = uniquePrefix('bad');
    const res = await runCli(['stack'], {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: prefix,
      DATA_DIR: dataDir,
      EXIT_WHEN_IDLE_MS: '500',
      REPLAY_TAPE: tape,
      SYMBOLS: 'BINANCE:XRPETH',
      INTERVALS: '1min,1h',
    });
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/trades in\s+12477\n/);
    expect(res.stdout).toContain(`rejected         ${invalidTrades} (plus ${badFrames} unreadable frames)`);
    expect(res.stdout).toMatch(/trade rejected/);
    expect(res.stdout).toMatch(/frame is not JSON/);

    const keys = makeKeys(prefix);
    const rejected = (await redis.xrange(keys.rejected(), '-', '+')) as [string, string[]][];
    expect(rejected).toHaveLength(invalidTrades);
    const reasons = rejected.map(([, f]) => f[f.indexOf('reason') + 1]!);
    expect(reasons.some((r) => /price/.test(r))).toBe(true);
    expect(reasons.some((r) => /symbol/.test(r))).toBe(true);
    expect(reasons.some((r) => /event time/.test(r))).toBe(true);
    expect(reasons.some((r) => /volume/.test(r))).toBe(true);

    const klines = loadKlines();
    expect(compareBars(readCsv(csvPath(dataDir, '1min', 'BINANCE:XRPETH')).rows, rollUpKlines(klines, 1))).toEqual([]);
    expect(compareBars(readCsv(csvPath(dataDir, '1h', 'BINANCE:XRPETH')).rows, rollUpKlines(klines, 60))).toEqual([]);
  });
});

describe('configuration and environment errors', () => {
  it('a bad value exits non-zero naming the variable and the rule', async () => {
    const res = await runCli(['aggregate'], { GRACE_MS: 'soon', INTERVALS: '1min,3sec' });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/GRACE_MS="soon": must be a whole number/);
    expect(res.stderr).toMatch(/INTERVALS: invalid interval "3sec"/);
  });

  it('no Redis at all: the stack names the three ways out', async () => {
    const res = await runCli(['stack'], { DATA_DIR: tempDir('noredis'), REDIS_SERVER_BIN: 'no-such-redis-server' });
    expect(res.code).toBe(3);
    expect(res.stderr).toMatch(/install Redis/);
    expect(res.stderr).toMatch(/REDIS_URL/);
    expect(res.stderr).toMatch(/docker compose up/);
  });
});

describe('bad tapes and flags', () => {
  it('a REPLAY_TAPE that does not exist: exit 2 naming the variable and the path, nothing started', async () => {
    const dir = tempDir('notape');
    const res = await runCli(['stack'], { DATA_DIR: dir, REPLAY_TAPE: join(dir, 'nope.jsonl') });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/REPLAY_TAPE=".*nope\.jsonl": .*cannot be read \(ENOENT\)/);
    expect(res.stderr).not.toMatch(/\n\s+at /); // a message, not a stack trace
    expect(existsSync(join(dir, 'redis'))).toBe(false);
  });

  it('a tape line that is not JSON is left out with its file and line; a trade with a price that is not a number is rejected alone', async () => {
    const dir = tempDir('badlines');
    const rows = JSON.parse(gunzipSync(readFileSync(BUNDLED_TAPE)).toString('utf8')) as { info: { p: string; q: string; T: number } }[];
    const lines = rows.map((r) => JSON.stringify({ s: 'BINANCE:XRPETH', p: Number(r.info.p), v: Number(r.info.q), t: r.info.T, c: [] }));
    lines.splice(100, 0, '{"s":"BINANCE:XRPETH","p":0.0014,"v":');
    lines.splice(5000, 0, JSON.stringify({ s: 'BINANCE:XRPETH', p: 'abc', v: 1, t: rows[4998]!.info.T, c: [] }));
    const tape = join(dir, 'tape.jsonl');
    writeFileSync(tape, lines.join('\n'));
    const prefix = uniquePrefix('badlines');
    const res = await runCli(['stack'], {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: prefix,
      DATA_DIR: dir,
      EXIT_WHEN_IDLE_MS: '500',
      REPLAY_TAPE: tape,
      INTERVALS: '1min,1h',
    });
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/tape\.jsonl:101: not JSON .*line left out/);
    // the bad price travels as a string, so the ingestor rejects that trade alone: the other 499 of its frame are kept
    expect(res.stdout).toMatch(/trades in\s+12477\n/);
    expect(res.stdout).toContain('rejected         1 (plus 0 unreadable frames)');
    const rejected = (await redis.xrange(makeKeys(prefix).rejected(), '-', '+')) as [string, string[]][];
    expect(rejected.map(([, f]) => f[f.indexOf('reason') + 1])).toEqual([
      expect.stringMatching(/p \(price\) must be a finite number > 0, got "abc"/),
    ]);
    const klines = loadKlines();
    expect(compareBars(readCsv(csvPath(dir, '1min', 'BINANCE:XRPETH')).rows, rollUpKlines(klines, 1))).toEqual([]);
  });

  it('an unknown flag is an error that names the closest one and lists them all', async () => {
    const res = await runCli(['stack', '--tapee', 'x.jsonl'], {});
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/unknown flag --tapee: did you mean --tape\? known flags: .*--replay-tape/);
  });
});
