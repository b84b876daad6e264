import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { createServer, type AddressInfo } from 'node:net';
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { CsvFiles, SymbolFileClashError, makeKeys } from '@candlewick/common';
import { csvPath } from '@candlewick/common';
import { Clock, barFromTrade } from '@candlewick/core';
import {
  BUNDLED_TAPE,
  ROOT,
  compareBars,
  csvOutputs,
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

  it('a port in use (REPLAY_PORT for the replay server, under stack too, and the provider stand-in; METRICS_PORT): exit 2 naming the setting and what to do', async () => {
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    onTestFinished(() => void busy.close());
    const port = String((busy.address() as AddressInfo).port);
    const dir = tempDir('busy-port');
    const inUse = `port ${port} is in use on 127.0.0.1`;
    const [replay, stack, provider, metrics] = await Promise.all([
      runCli(['replay-server'], { DATA_DIR: dir, REPLAY_PORT: port }),
      runCli(['stack'], { DATA_DIR: join(dir, 'stack'), REPLAY_PORT: port }),
      runCli(['provider-server', '--port', port], { DATA_DIR: dir }),
      runCli(['replay-server'], { DATA_DIR: dir, METRICS_PORT: port }),
    ]);
    for (const r of [replay, stack, provider, metrics]) {
      expect(r.code, r.stderr).toBe(2);
      expect(r.stdout + r.stderr).not.toMatch(/\n\s+at /); // a message, not a stack trace
    }
    expect(replay.stderr).toContain(
      `cannot listen: ${inUse} (REPLAY_PORT=${port}, REPLAY_HOST=127.0.0.1); choose a free port with REPLAY_PORT`,
    );
    // (the stack prints its roles' lines on its stdout, after the role's name)
    expect(stack.stdout).toContain(
      `replay-server  candlewick replay-server: cannot listen: ${inUse} (REPLAY_PORT=${port}, REPLAY_HOST=127.0.0.1); choose a free port with REPLAY_PORT, or leave it unset and stack picks one`,
    );
    expect(stack.stdout).toMatch(/replay-server stopped on a configuration problem \(exit 2/);
    expect(provider.stderr).toContain(
      `cannot listen: ${inUse} (REPLAY_PORT=${port}, REPLAY_HOST=127.0.0.1); choose a free port with REPLAY_PORT (or --port)`,
    );
    expect(metrics.stderr).toContain(
      `cannot serve metrics: ${inUse} (METRICS_PORT=${port}, METRICS_HOST=127.0.0.1); choose another METRICS_PORT`,
    );
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

describe('input that is not what it seems', () => {
  const rows = () => JSON.parse(gunzipSync(readFileSync(BUNDLED_TAPE)).toString('utf8')) as { info: { p: string; q: string; T: number } }[];

  it('foreign symbols are dropped and counted (said once), and invisible characters, p or v = 1e308 are rejected with their reason', async () => {
    const dir = tempDir('foreign');
    const tape = join(dir, 'foreign.frames');
    const lines: string[] = [];
    let foreign = 0;
    const bad = [
      '{"s":"A\\u200bB","p":1,"v":1,"t":1570752011620}', // a zero-width space
      '{"s":"BINANCE:XRPETH","p":1e308,"v":1,"t":1570752011620}',
      '{"s":"BINANCE:XRPETH","p":0.0014,"v":1e308,"t":1570752011620}',
    ];
    const all = rows();
    for (let i = 0, k = 0; i < all.length; i += 40, k++) {
      const frame = all
        .slice(i, i + 40)
        .map((r) => `{"s":"BINANCE:XRPETH","p":${r.info.p},"v":${Number(r.info.q)},"t":${r.info.T},"c":[]}`);
      if (k % 4 === 0) {
        // not subscribed: one with a file name of its own, one that would share BINANCE:XRPETH's files
        const r = all[i]!;
        frame.push(`{"s":"${k % 8 ? 'BINANCE_XRPETH' : 'BINANCE:ETHBTC'}","p":${r.info.p},"v":5,"t":${r.info.T}}`);
        foreign++;
      }
      if (k < bad.length) frame.splice(3, 0, bad[k]!);
      lines.push(`{"type":"trade","data":[${frame.join(',')}]}`);
    }
    writeFileSync(tape, `${lines.join('\n')}\n`);
    const prefix = uniquePrefix('foreign');
    const res = await runCli(['stack'], {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: prefix,
      DATA_DIR: dir,
      EXIT_WHEN_IDLE_MS: '500',
      REPLAY_TAPE: tape,
      SYMBOLS: 'BINANCE:XRPETH',
      INTERVALS: '1min,1h',
    });
    expect(res.code, res.stdout.slice(-2000)).toBe(0);
    expect(res.stdout).toMatch(/trades in\s+12477\n/);
    expect(res.stdout).toContain(`foreign          ${foreign} trades for symbols not in SYMBOLS, dropped`);
    expect(res.stdout.match(/not in SYMBOLS: such trades are dropped/g)).toHaveLength(1);
    expect(res.stdout).toContain('rejected         3 (plus 0 unreadable frames)');
    const rejected = (await redis.xrange(makeKeys(prefix).rejected(), '-', '+')) as [string, string[]][];
    expect(rejected.map(([, f]) => f[f.indexOf('reason') + 1])).toEqual([
      expect.stringMatching(/s \(symbol\) must be 1 to 64 of the characters .*, got "A\\u200bB"/),
      expect.stringMatching(/p \(price\) must be at most 1000000000000 \(1e12\), got 1e\+308/),
      expect.stringMatching(/v \(volume\) must be at most 1000000000000000 \(1e15\), got 1e\+308/),
    ]);
    // one file per interval, exactly Binance's bars: nothing foreign in them
    expect([...csvOutputs(dir).keys()].sort()).toEqual(['1h/BINANCE_XRPETH_1h.csv', '1min/BINANCE_XRPETH_1min.csv']);
    const klines = loadKlines();
    expect(compareBars(readCsv(csvPath(dir, '1min', 'BINANCE:XRPETH')).rows, rollUpKlines(klines, 1))).toEqual([]);
    expect(compareBars(readCsv(csvPath(dir, '1h', 'BINANCE:XRPETH')).rows, rollUpKlines(klines, 60))).toEqual([]);
  });

  it('two symbols that would share a file are refused at start, naming both (SYMBOLS, or a tape’s own symbols)', async () => {
    const dir = tempDir('clash');
    const res = await runCli(['stack'], { DATA_DIR: dir, SYMBOLS: 'BINANCE:XRPETH,BINANCE_XRPETH' });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/SYMBOLS: "BINANCE:XRPETH" and "BINANCE_XRPETH" would share the files BINANCE_XRPETH_\{interval\}\.csv/);
    expect(existsSync(join(dir, 'redis'))).toBe(false);
    const tape = join(dir, 'clash.jsonl');
    writeFileSync(
      tape,
      ['BINANCE:XRPETH', 'BINANCE_XRPETH'].map((s) => JSON.stringify({ s, p: 1, v: 1, t: 1570752011620, c: [] })).join('\n'),
    );
    const bars = await runCli(['bars', '--tape', tape, '--out', dir], {});
    expect(bars.code).toBe(2);
    expect(bars.stderr).toMatch(/"BINANCE:XRPETH" and "BINANCE_XRPETH" would share/);
    // and the writer's own guard: it never mixes two symbols in one file
    const files = new CsvFiles(join(dir, 'w'), new Clock('UTC'));
    const state = barFromTrade('1', 1, 'k');
    expect(files.append('1min', 'BINANCE:XRPETH', 60_000, state)).toBe('written');
    expect(() => files.append('1min', 'BINANCE_XRPETH', 120_000, state)).toThrow(SymbolFileClashError);
    // nor plans another symbol's row into it for the writer's append threads: appendRow refuses it
    expect(files.plan('1min', 'BINANCE:XRPETH', 120_000, 'x')).toBeDefined();
    expect(files.plan('1min', 'BINANCE_XRPETH', 120_000, 'x')).toBeUndefined();
    // symbols that differ only in case: one file on a filesystem that ignores case (macOS's, Windows')
    const cased = await runCli(['stack'], { DATA_DIR: dir, SYMBOLS: 'AAPL,MSFT,aapl' });
    expect(cased.code).toBe(2);
    expect(cased.stderr).toMatch(/SYMBOLS: "AAPL" and "aapl" would share the files aapl_\{interval\}\.csv/);
    expect(files.append('1min', 'AAPL', 60_000, state)).toBe('written');
    expect(() => files.append('1min', 'aapl', 120_000, state)).toThrow(SymbolFileClashError);
    expect(files.plan('1min', 'aapl', 120_000, 'x')).toBeUndefined();
  });

  it('a JSONL tape whose volumes are decimal strings is read as numbers; one whose volumes are words is a configuration error, said once', async () => {
    const dir = tempDir('vstrings');
    const tape = join(dir, 'tape.jsonl');
    writeFileSync(
      tape,
      rows()
        .map((r) => JSON.stringify({ s: 'BINANCE:XRPETH', p: Number(r.info.p), v: r.info.q, t: r.info.T, c: [] }))
        .join('\n'),
    );
    const res = await runCli(['stack'], {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: uniquePrefix('vstrings'),
      DATA_DIR: dir,
      EXIT_WHEN_IDLE_MS: '500',
      REPLAY_TAPE: tape,
      INTERVALS: '1min',
    });
    expect(res.code, res.stderr.slice(-2000)).toBe(0);
    expect(res.stdout).toMatch(/trades in\s+12477\n/);
    expect(res.stdout).toContain('rejected         0 (plus 0 unreadable frames)');
    expect(compareBars(readCsv(csvPath(dir, '1min', 'BINANCE:XRPETH')).rows, rollUpKlines(loadKlines(), 1))).toEqual([]);
    // volumes that are strings but no numbers: no trade in the tape, so not a tape: a configuration error (exit 2) said once, nothing started
    const words = join(dir, 'words.jsonl');
    writeFileSync(
      words,
      [1, 2, 3].map((i) => JSON.stringify({ s: 'BINANCE:XRPETH', p: 1, v: 'lots', t: 1570752011620 + i, c: [] })).join('\n'),
    );
    const bad = await runCli(['stack'], { DATA_DIR: tempDir('vwords'), REPLAY_TAPE: words });
    expect(bad.code, bad.stderr).toBe(2);
    const said = `${bad.stdout}${bad.stderr}`.match(/words\.jsonl: not a tape: no line is a trade/g) ?? [];
    expect(said, bad.stdout + bad.stderr).toHaveLength(1);
    expect(bad.stdout).not.toMatch(/replaying tape|started/);
  });

  it('anything that is not a tape is refused with exit 2, naming the file and what was expected', async () => {
    const out = tempDir('notatape');
    const minute = await runCli(['bars', '--tape', join(ROOT, 'tapes/lean-aig-20131010/minute'), '--out', out], {});
    expect(minute.code).toBe(2);
    expect(minute.stderr).toMatch(
      /minute\/aig_20131010_trade\.zip: not a tape: it holds 20131010_aig_minute_trade\.csv, expected Lean tick trades/,
    );
    const folder = await runCli(['bars', '--tape', join(ROOT, 'tapes') + '/', '--out', out], {});
    expect(folder.code).toBe(2);
    expect(folder.stderr).toMatch(
      /binance-xrpeth-klines-1m-2019-10-11\.json\.gz: not a tape: element 1 is \[1570752000000,.*expected a JSON array of Binance aggTrades/,
    );
    expect(folder.stderr).not.toMatch(/\n\s+at /);
    // the replay server reads tapes through the same code
    const server = await runCli(['replay-server'], { REPLAY_TAPE: join(ROOT, 'tapes/lean-aig-20131010/minute/aig_20131010_trade.zip') });
    expect(server.code).toBe(2);
    expect(server.stderr).toMatch(/not a tape: it holds 20131010_aig_minute_trade\.csv/);
    // a tape with no well-formed trade and no SYMBOLS: a configuration error naming the tape (was "SYMBOLS is empty" and exit 1)
    const frames = join(out, 'only.frames');
    writeFileSync(frames, '{"type":"ping"}\n');
    const stack = await runCli(['stack'], { DATA_DIR: out, REPLAY_TAPE: frames });
    expect(stack.code).toBe(2);
    expect(stack.stderr).toMatch(/REPLAY_TAPE=".*only\.frames": SYMBOLS is unset and the tape has no well-formed trade/);
  });

  it('a .jsonl whose lines are JSON objects but never a trade (klines) is refused like a .json that is not aggTrades: exit 2, the file, its first line, what was expected', async () => {
    const dir = tempDir('jsonl-klines');
    const klines = join(dir, 'klines.jsonl');
    writeFileSync(
      klines,
      loadKlines()
        .slice(0, 3)
        .map(([t, o, h, l, c, v]) => JSON.stringify({ t, o, h, l, c, v }) + '\n')
        .join(''),
    );
    // (with SYMBOLS set, as here, it was read as a tape of bad trades: nothing written, exit 0)
    const r = await runCli(['bars', '--tape', klines, '--out', join(dir, 'out')], { SYMBOLS: 'BINANCE:XRPETH' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /klines\.jsonl: not a tape: no line is a trade \(line 1 is \{"t":1570752000000,"o":.*\), expected one trade per line, \{"s": symbol, "p": price/,
    );
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(existsSync(join(dir, 'out', 'raw'))).toBe(false);
  });
});
