import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { pino } from 'pino';
import { readTape, readTapeTrades, type TapeItem, type TapeTrade } from '@candlewick/common';
import { ReplayServer, type ReplayOptions } from '@candlewick/ingestor';
import { freePort } from '@candlewick/cli';
import { BUNDLED_TAPE, startCli, waitFor } from './helpers.js';

const quiet = pino({ level: 'silent' });
const TAPE = readTape(BUNDLED_TAPE);
const TRADES = readTapeTrades(BUNDLED_TAPE);

interface AggTrade {
  e: string;
  E: number;
  s: string;
  a: number;
  p: string;
  q: string;
  f: number;
  l: number;
  T: number;
  m: boolean;
  M: boolean;
}

const servers: ReplayServer[] = [];
const sockets: WebSocket[] = [];
afterEach(async () => {
  for (const ws of sockets.splice(0)) ws.terminate();
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

async function serve(tape: readonly TapeItem[], opts: Partial<ReplayOptions> = {}): Promise<number> {
  const server = new ReplayServer(tape, { port: 0, speed: 0, frameTrades: 500, settleMs: 10, feed: 'binance', ...opts }, quiet);
  servers.push(server);
  return server.start();
}

/** A plain client: every text frame it gets, parsed, and how the connection ended. */
async function connect(url: string) {
  const ws = new WebSocket(url);
  sockets.push(ws);
  const got: unknown[] = [];
  const pings: number[] = [];
  let closed: { code: number; reason: string } | undefined;
  ws.on('message', (d) => got.push(JSON.parse(d.toString())));
  ws.on('ping', () => pings.push(Date.now()));
  ws.on('close', (code, reason) => (closed = { code, reason: reason.toString() }));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  return {
    ws,
    got,
    pings,
    closed: () => closed,
    request: (req: object) => ws.send(JSON.stringify(req)),
  };
}

/** How a handshake the server refuses ends, as the client says it. */
async function refusal(url: string): Promise<string> {
  const ws = new WebSocket(url);
  const err = await new Promise<Error>((resolve) => ws.once('error', resolve));
  return err.message;
}

/** The tape trade as Binance's aggTrade event: the recorded aggregate id and side, 8-decimal strings. */
const expectedAgg = (tr: TapeTrade): AggTrade => {
  const [int, frac = ''] = tr.p.split('.');
  return {
    e: 'aggTrade',
    E: tr.t,
    s: 'XRPETH',
    a: Number(tr.i),
    p: `${int}.${frac.padEnd(8, '0')}`,
    q: expect.stringMatching(/^\d+\.\d{8}$/) as unknown as string,
    f: Number(tr.i),
    l: Number(tr.i),
    T: tr.t,
    m: tr.a === 's',
    M: true,
  };
};

describe('replay server, Binance protocol', () => {
  it('a combined stream named in the URL gets every trade of the bundled tape in order, as aggTrade events with the recorded ids and sides', async () => {
    expect(TRADES[0]).toMatchObject({ i: expect.stringMatching(/^\d+$/), a: expect.stringMatching(/^[bs]$/) });
    const port = await serve(TAPE);
    const c = await connect(`ws://127.0.0.1:${port}/stream?streams=xrpeth@aggTrade`);
    await waitFor(() => c.got.length >= TRADES.length, 30_000, 'the whole tape');
    await new Promise((r) => setTimeout(r, 100));
    expect(c.got).toHaveLength(TRADES.length);
    const events = c.got as { stream: string; data: AggTrade }[];
    expect(events.every((x) => x.stream === 'xrpeth@aggTrade')).toBe(true);
    events.forEach((x, k) => expect(x.data).toEqual(expectedAgg(TRADES[k]!)));
    // the first trade, byte for byte as Binance writes it
    expect(JSON.stringify(events[0]!.data)).toBe(
      `{"e":"aggTrade","E":1570752011620,"s":"XRPETH","a":${TRADES[0]!.i},"p":"0.00141342","q":"23.00000000","f":${TRADES[0]!.i},"l":${TRADES[0]!.i},"T":1570752011620,"m":${TRADES[0]!.a === 's'},"M":true}`,
    );
    // quantities are the tape's, only padded
    events.forEach((x, k) => expect(Number(x.data.q)).toBe(TRADES[k]!.v));
    expect(new Set(events.map((x) => x.data.m)).size).toBe(2); // both sides occur
  });

  it('a raw connection that SUBSCRIBEs gets the ack, then bare events; @trade serves the same trades with t ids; a pair the tape lacks is accepted and quiet', async () => {
    const port = await serve(TAPE);
    const c = await connect(`ws://127.0.0.1:${port}/ws`);
    c.request({ method: 'SUBSCRIBE', params: ['xrpeth@trade', 'btcusdt@aggTrade'], id: 1 });
    await waitFor(() => c.got.length >= TRADES.length + 1, 30_000, 'the ack and the whole tape');
    await new Promise((r) => setTimeout(r, 100));
    expect(c.got[0]).toEqual({ result: null, id: 1 });
    const events = c.got.slice(1) as Record<string, unknown>[];
    expect(events).toHaveLength(TRADES.length);
    events.forEach((x, k) => {
      const tr = TRADES[k]!;
      expect(Object.keys(x)).toEqual(['e', 'E', 's', 't', 'p', 'q', 'T', 'm', 'M']);
      expect(x).toMatchObject({ e: 'trade', s: 'XRPETH', t: Number(tr.i), T: tr.t, E: tr.t, m: tr.a === 's', M: true });
      expect(x.p).toBe(expectedAgg(tr).p);
    });
    c.request({ method: 'LIST_SUBSCRIPTIONS', id: 'list7' });
    await waitFor(() => c.got.length === TRADES.length + 2, 5000, 'the list');
    expect(c.got.at(-1)).toEqual({ result: ['xrpeth@trade', 'btcusdt@aggTrade'], id: 'list7' });
  });

  it('both streams of a symbol on one combined connection: each trade once on each, and UNSUBSCRIBE / LIST_SUBSCRIPTIONS / properties answer as documented', async () => {
    const tape = TAPE.slice(0, 20);
    const port = await serve(tape);
    const c = await connect(`ws://127.0.0.1:${port}/stream`);
    c.request({ method: 'SUBSCRIBE', params: ['xrpeth@aggTrade', 'xrpeth@trade'], id: 1 });
    await waitFor(() => c.got.length === 41, 5000, 'ack and 40 events');
    const events = c.got.slice(1) as { stream: string; data: { T: number } }[];
    expect(events.map((x) => x.stream)).toEqual(tape.flatMap(() => ['xrpeth@aggTrade', 'xrpeth@trade']));
    c.request({ method: 'UNSUBSCRIBE', params: ['xrpeth@trade'], id: 2 });
    c.request({ method: 'LIST_SUBSCRIPTIONS', id: 3 });
    c.request({ method: 'GET_PROPERTY', params: ['combined'], id: 4 });
    await waitFor(() => c.got.length === 44, 5000, 'three replies');
    expect(c.got.slice(41)).toEqual([
      { result: null, id: 2 },
      { result: ['xrpeth@aggTrade'], id: 3 },
      { result: true, id: 4 },
    ]);
  });

  it("bad JSON, an unknown method and a stream it doesn't serve get Binance's error replies; the connection goes on", async () => {
    const port = await serve(TAPE.slice(0, 3));
    const c = await connect(`ws://127.0.0.1:${port}/ws`);
    c.ws.send('{"method":"SUBSCRIBE",');
    c.request({ method: 'SUBSCRIB', params: ['xrpeth@aggTrade'], id: 5 });
    c.request({ method: 'SUBSCRIBE', params: ['XRPETH@aggTrade'], id: 6 });
    c.request({ params: [], id: 7 });
    await waitFor(() => c.got.length === 4, 5000, 'four replies');
    const [json, method, stream, missing] = c.got as { code: number; msg: string; id?: unknown }[];
    expect(json).toMatchObject({ code: 3, msg: expect.stringMatching(/^Invalid JSON: /) });
    expect(json!.id).toBeUndefined();
    expect(method).toEqual({
      code: 2,
      msg: 'Invalid request: unknown variant `SUBSCRIB`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`',
      id: 5,
    });
    expect(stream).toMatchObject({
      code: 2,
      msg: expect.stringMatching(/^Invalid request: unknown stream "XRPETH@aggTrade".*lowercase/),
      id: 6,
    });
    expect(missing).toEqual({ code: 2, msg: 'Invalid request: missing field `method`', id: 7 });
    // still served: a good request afterwards works
    await new Promise((r) => setTimeout(r, 1000)); // out of the 5-a-second window
    c.request({ method: 'SUBSCRIBE', params: ['xrpeth@aggTrade'], id: 8 });
    await waitFor(() => c.got.length === 8, 5000, 'the ack and three trades');
    expect(c.got[4]).toEqual({ result: null, id: 8 });
    expect(c.closed()).toBeUndefined();
  });

  it('5 incoming messages in a second are fine; a 6th (pings and pongs count) closes the connection', async () => {
    const port = await serve(TAPE.slice(0, 3));
    const c = await connect(`ws://127.0.0.1:${port}/ws`);
    for (let id = 1; id <= 5; id++) c.request({ method: 'LIST_SUBSCRIPTIONS', id });
    await waitFor(() => c.got.length === 5, 5000, 'five replies');
    await new Promise((r) => setTimeout(r, 300));
    expect(c.closed()).toBeUndefined();

    const d = await connect(`ws://127.0.0.1:${port}/ws`);
    d.request({ method: 'LIST_SUBSCRIPTIONS', id: 1 });
    d.request({ method: 'LIST_SUBSCRIPTIONS', id: 2 });
    d.ws.ping();
    d.ws.ping();
    d.ws.pong();
    d.request({ method: 'LIST_SUBSCRIPTIONS', id: 3 });
    await waitFor(() => d.closed() !== undefined, 5000, 'the close');
    expect(d.closed()).toEqual({ code: 1008, reason: expect.stringMatching(/more than 5 incoming messages per second/) });
    expect(d.got).toEqual([
      { result: [], id: 1 },
      { result: [], id: 2 },
    ]);
  });

  it('a connection listens to at most 1024 streams: the 1025th is refused with an error reply, by SUBSCRIBE or in the URL', async () => {
    const port = await serve(TAPE.slice(0, 3));
    const names = (n: number, from = 0) => Array.from({ length: n }, (_, k) => `pair${from + k}@aggTrade`);
    const c = await connect(`ws://127.0.0.1:${port}/ws`);
    c.request({ method: 'SUBSCRIBE', params: names(1000), id: 1 });
    c.request({ method: 'SUBSCRIBE', params: names(24, 1000), id: 2 });
    c.request({ method: 'SUBSCRIBE', params: ['xrpeth@aggTrade'], id: 3 });
    c.request({ method: 'LIST_SUBSCRIPTIONS', id: 4 });
    await waitFor(() => c.got.length === 4, 5000, 'four replies');
    expect(c.got.slice(0, 2)).toEqual([
      { result: null, id: 1 },
      { result: null, id: 2 },
    ]);
    expect(c.got[2]).toMatchObject({ code: 2, msg: expect.stringMatching(/^Invalid request: too many streams.*at most 1024/), id: 3 });
    const list = c.got[3] as { result: string[] };
    expect(list.result).toHaveLength(1024);
    expect(list.result).not.toContain('xrpeth@aggTrade');

    // in the URL: the handshake is refused (short names: the URL must fit in Node's 16 KB of headers)
    const short = Array.from({ length: 1025 }, (_, k) => `p${k}@trade`);
    expect(await refusal(`ws://127.0.0.1:${port}/stream?streams=${short.join('/')}`)).toBe('Unexpected server response: 400');
    const ok = await connect(`ws://127.0.0.1:${port}/stream?streams=${short.slice(1).join('/')}`);
    ok.request({ method: 'LIST_SUBSCRIPTIONS', id: 1 });
    await waitFor(() => ok.got.length === 1, 5000, 'the list');
    expect((ok.got[0] as { result: string[] }).result).toEqual(short.slice(1));
  });

  it('sends a ping frame every pingMs, busy or not, and no JSON ping', async () => {
    const port = await serve(TAPE.slice(0, 3), { pingMs: 300 });
    const c = await connect(`ws://127.0.0.1:${port}/stream?streams=xrpeth@aggTrade`);
    await waitFor(() => c.pings.length >= 5, 5000, 'five pings');
    const gaps = c.pings.slice(1).map((at, k) => at - c.pings[k]!);
    for (const gap of gaps) {
      expect(gap).toBeGreaterThanOrEqual(250);
      expect(gap).toBeLessThan(450);
    }
    expect(c.got).toHaveLength(3); // the three trades, nothing else
    expect(c.closed()).toBeUndefined(); // the client's pongs, 3 a second, are within the limit
  });

  it('paced with shift-to-now: the recorded spacing / speed, each trade stamped with the moment it is sent', async () => {
    const t0 = Date.parse('2019-10-11T00:00:00Z');
    const tape: TapeTrade[] = [0, 1, 2].map((k) => ({ s: 'BINANCE:XRPETH', p: '0.0014', v: 1.5, t: t0 + k * 2000, c: [] }));
    const port = await serve(tape, { speed: 10, shiftToNow: true });
    const got: { T: number; E: number; a: number; q: string; at: number }[] = [];
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/xrpeth@aggTrade`);
    sockets.push(ws);
    ws.on('message', (d) => got.push({ ...(JSON.parse(d.toString()) as { T: number; E: number; a: number; q: string }), at: Date.now() }));
    await waitFor(() => got.length === 3, 5000, 'three trades');
    for (const g of got) expect(Math.abs(g.at - g.T)).toBeLessThan(150);
    expect(got[1]!.T - got[0]!.T).toBe(200);
    expect(got[2]!.T - got[1]!.T).toBe(200);
    expect(got.map((g) => g.E)).toEqual(got.map((g) => g.T));
    // no recorded ids: a count per symbol
    expect(got.map((g) => [g.a, g.q])).toEqual([
      [1, '1.50000000'],
      [2, '1.50000000'],
      [3, '1.50000000'],
    ]);
  });

  it('a .frames tape is sent verbatim; an unknown path is refused with 404', async () => {
    const port = await serve([{ raw: 'not json at all' }, { raw: '{"e":"aggTrade"' }]);
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/xrpeth@aggTrade`);
    sockets.push(ws);
    const frames: string[] = [];
    ws.on('message', (d) => frames.push(d.toString()));
    await waitFor(() => frames.length === 2, 5000, 'two frames');
    expect(frames).toEqual(['not json at all', '{"e":"aggTrade"']);

    expect(await refusal(`ws://127.0.0.1:${port}/streams?streams=xrpeth@aggTrade`)).toBe('Unexpected server response: 404');
  });

  it('`candlewick replay-server` with FEED=binance speaks it, and stops cleanly', async () => {
    const port = await freePort();
    const cli = startCli(['replay-server'], { FEED: 'binance', MODE: 'replay', REPLAY_PORT: String(port), LOG_FILE: 'false' });
    try {
      await waitFor(() => /replay server listening/.test(cli.output().stdout), 20_000, 'the replay server');
      expect(cli.output().stdout).toMatch(/"feed":"binance"/);
      const c = await connect(`ws://127.0.0.1:${port}/ws`);
      c.request({ method: 'SUBSCRIBE', params: ['xrpeth@aggTrade'], id: 1 });
      await waitFor(() => c.got.length >= 11, 10_000, 'the ack and ten trades');
      expect(c.got[0]).toEqual({ result: null, id: 1 });
      expect((c.got.slice(1, 11) as AggTrade[]).map((x) => x.a)).toEqual(TRADES.slice(0, 10).map((tr) => Number(tr.i)));
    } finally {
      const res = await cli.stop();
      expect(res.code).toBe(0);
    }
  });
});
