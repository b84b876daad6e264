import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { strToU8, zipSync } from 'fflate';
import { pino } from 'pino';
import { readTape, tapeSymbols, type TapeTrade } from '@candlewick/common';
import { ReplayServer } from '@candlewick/ingestor';
import { BUNDLED_TAPE, runCli, tempDir, testRedis, uniquePrefix, redisUrl, waitFor } from './helpers.js';

const quiet = pino({ level: 'silent' });
const redis = testRedis();
afterAll(() => redis.quit());

describe('tape readers', () => {
  it('read the bundled Binance aggTrades in file order with Finnhub symbols', () => {
    const tape = readTape(BUNDLED_TAPE) as TapeTrade[];
    expect(tape).toHaveLength(12477);
    expect(tape[0]).toEqual({ s: 'BINANCE:XRPETH', p: '0.00141342', v: 23, t: 1570752011620, c: [], i: '13519807', a: 's' });
    expect(tapeSymbols(tape)).toEqual(['BINANCE:XRPETH']);
  });

  it('read Lean tick zips (ms since New York midnight, price x 10000, condition words as names) and merge several by time', () => {
    const dir = tempDir('lean');
    const a = join(dir, 'spy_20131007_trade.zip');
    const b = join(dir, 'ibm_20131007_trade.zip');
    writeFileSync(
      a,
      zipSync({ '20131007_spy_Trade_Tick.csv': strToU8('14400464,1674100,100,P,20002000,0\n14400465,1674200,1400,P,20002000,1\n') }),
    );
    writeFileSync(b, zipSync({ '20131007_ibm_Trade_Tick.csv': strToU8('14400464,1850000,5,N,00000000,0\n') }));
    const tape = readTape(`${a},${b}`) as TapeTrade[];
    const t = Date.parse('2013-10-07T08:00:00.464Z'); // 04:00:00.464 EDT
    expect(tape).toEqual([
      { s: 'SPY', p: '167.41', v: 100, t, c: ['ExtendedHours', 'TradeThroughExempt'] },
      { s: 'IBM', p: '185', v: 5, t, c: [] },
      { s: 'SPY', p: '167.42', v: 1400, t: t + 1, c: ['ExtendedHours', 'TradeThroughExempt', 'Suspicious'] },
    ]);
  });

  it('say what formats exist when a file is not one', () => {
    const dir = tempDir('fmt');
    writeFileSync(join(dir, 'x.csv'), 'a,b');
    expect(() => readTape(join(dir, 'x.csv'))).toThrow(/unknown tape format.*jsonl/);
  });
});

describe('replay server', () => {
  it('sends only subscribed symbols, at the recorded pace times the speed factor', async () => {
    const t0 = Date.parse('2024-01-02T15:00:00Z');
    const tape: TapeTrade[] = [0, 1, 2, 3].map((i) => ({
      s: i === 2 ? 'OTHER' : 'AAPL',
      p: String(100 + i),
      v: 1,
      t: t0 + i * 1000,
      c: [],
    }));
    const server = new ReplayServer(tape, { port: 0, speed: 10, frameTrades: 100, settleMs: 10 }, quiet);
    const port = await server.start();
    const ws = new WebSocket(`ws://127.0.0.1:${port}`);
    const got: { t: number; at: number }[] = [];
    ws.on('message', (d) => {
      const msg = JSON.parse(d.toString()) as { type: string; data?: { s: string; t: number }[] };
      for (const tr of msg.data ?? []) {
        expect(tr.s).toBe('AAPL');
        got.push({ t: tr.t, at: Date.now() });
      }
    });
    await new Promise((r) => ws.on('open', r));
    ws.send(JSON.stringify({ type: 'subscribe', symbol: 'AAPL' }));
    const until = Date.now() + 5000;
    while (got.length < 3 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    ws.close();
    await server.stop();
    expect(got.map((g) => g.t)).toEqual([t0, t0 + 1000, t0 + 3000]);
    // 1 s of tape at speed 10 is 100 ms of wall time; 2 s is 200 ms
    expect(got[1]!.at - got[0]!.at).toBeGreaterThanOrEqual(80);
    expect(got[2]!.at - got[1]!.at).toBeGreaterThanOrEqual(180);
  });
});

describe('replay server, live day', () => {
  it('with shiftToNow stamps each trade with the moment it is sent, keeping the recorded spacing / speed', async () => {
    const t0 = Date.parse('2013-10-07T13:30:00Z');
    const tape: TapeTrade[] = [0, 1, 2].map((i) => ({ s: 'SPY', p: '167', v: 1, t: t0 + i * 2000, c: [] }));
    const server = new ReplayServer(tape, { port: 0, speed: 10, frameTrades: 100, settleMs: 10, shiftToNow: true }, quiet);
    const port = await server.start();
    const ws = new WebSocket(`ws://127.0.0.1:${port}`);
    const got: { t: number; at: number }[] = [];
    ws.on('message', (d) => {
      for (const tr of (JSON.parse(d.toString()) as { data?: { t: number }[] }).data ?? []) got.push({ t: tr.t, at: Date.now() });
    });
    await new Promise((r) => ws.on('open', r));
    ws.send(JSON.stringify({ type: 'subscribe', symbol: 'SPY' }));
    await waitFor(() => got.length === 3, 5000, 'three trades');
    ws.close();
    await server.stop();
    for (const g of got) expect(Math.abs(g.at - g.t)).toBeLessThan(150);
    expect(got[1]!.t - got[0]!.t).toBe(200);
    expect(got[2]!.t - got[1]!.t).toBe(200);
  });
});

describe('secrets', () => {
  it('the Finnhub token reaches the server but never a log line', async () => {
    const token = 'fake-test-token-0042';
    const seen: string[] = [];
    const tape = readTape(BUNDLED_TAPE).slice(0, 50);
    const server = new ReplayServer(tape, { port: 0, speed: 0, frameTrades: 10, settleMs: 10 }, quiet);
    const port = await server.start();
    // capture the URL the ingestor connects with
    (server as unknown as { wss: { on: (e: string, f: (ws: unknown, req: { url: string }) => void) => void } }).wss.on(
      'connection',
      (_ws, req) => seen.push(req.url),
    );
    const res = await runCli(
      ['ingest'],
      {
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('token'),
        FINNHUB_TOKEN: token,
        FINNHUB_WS_URL: `ws://127.0.0.1:${port}`,
        SYMBOLS: 'BINANCE:XRPETH',
        LOG_LEVEL: 'debug',
      },
      30_000,
      3000,
    );
    await server.stop();
    expect(seen.some((u) => u.includes(`token=${token}`))).toBe(true);
    expect(res.code).toBe(0); // SIGTERM: a clean stop
    expect(res.stdout).toMatch(/feed connected/);
    expect(res.stdout + res.stderr).not.toContain(token);
  });

  it('a paced replay says where it is in the tape now and then, and when it has sent it all', async () => {
    const tape = readTape(BUNDLED_TAPE).slice(0, 3000);
    const trades = tape.filter((x): x is TapeTrade => 't' in x);
    const spanMs = trades.at(-1)!.t - trades[0]!.t;
    const lines: { msg: string; tapeTime?: string }[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as { msg: string }) });
    let finished = 0;
    // the slice in about 1.5 s, a progress line at most every 100 ms
    const server = new ReplayServer(
      tape,
      { port: 0, speed: spanMs / 1500, frameTrades: 50, settleMs: 10, progressEveryMs: 100, onFinished: () => finished++ },
      log,
    );
    const port = await server.start();
    const ws = new WebSocket(`ws://127.0.0.1:${port}`);
    await new Promise((r) => ws.once('open', r));
    for (const symbol of tapeSymbols(tape)) ws.send(JSON.stringify({ type: 'subscribe', symbol }));
    await waitFor(() => finished === 1, 20_000, 'the end of the tape');
    ws.close();
    await server.stop();
    const said = lines.filter((l) => /^replayed \d+% of the tape$/.test(l.msg));
    expect(said.length).toBeGreaterThanOrEqual(5);
    const pcts = said.map((l) => Number(/\d+/.exec(l.msg)![0]));
    expect(pcts).toEqual([...pcts].sort((a, b) => a - b));
    expect(pcts.at(-1)!).toBeLessThanOrEqual(100);
    expect(new Set(pcts).size).toBe(pcts.length);
    expect(lines.some((l) => /tape finished/.test(l.msg))).toBe(true);
  });
});
