import { isRawFrame, isRawTrade, type TapeItem } from '@candlewick/common';
import { toScaled } from '@candlewick/core';
import { jsonValue, type SessionContext, type Wire, type WireSession } from './wire.js';

export interface BinanceWireOptions {
  /** a WebSocket ping frame this often (20 s, Binance's interval) */
  pingMs?: number;
}

/** Binance's limits on one connection (web-socket-streams.md, "WebSocket Limits"). */
export const BINANCE_MAX_STREAMS = 1024;
export const BINANCE_MAX_MESSAGES_PER_SECOND = 5;

/** The stream kinds served: a tape's trades as aggregate trades, or as one fill each. */
const STREAM = /^([a-z0-9]+)@(aggTrade|trade)$/;
const METHODS = ['SUBSCRIBE', 'UNSUBSCRIBE', 'LIST_SUBSCRIPTIONS', 'SET_PROPERTY', 'GET_PROPERTY'];

/** A tape's symbol as Binance names it: BINANCE:XRPETH or XRPETH is XRPETH; any other can't be a Binance stream. */
export function binanceSymbol(tapeSymbol: string): string | undefined {
  const s = tapeSymbol.startsWith('BINANCE:') ? tapeSymbol.slice('BINANCE:'.length) : tapeSymbol;
  return /^[A-Za-z0-9]+$/.test(s) ? s.toUpperCase() : undefined;
}

/** A price or quantity as Binance writes it, with 8 decimals: the tape's text padded (or a number's exact digits), never rounded. */
export function decimal8(x: string | number): string {
  const text = String(x);
  const m = /^(\d+)(?:\.(\d*))?$/.exec(text);
  if (m) return `${m[1]}.${(m[2] ?? '').padEnd(8, '0')}`;
  // a number's shortest text may be in exponent form (1e-7): its digits, the point moved
  const digits = 30;
  const scaled = toScaled(text, digits)
    .toString()
    .padStart(digits + 1, '0');
  return `${scaled.slice(0, -digits)}.${scaled.slice(-digits).replace(/0+$/, '').padEnd(8, '0')}`;
}

/** One tape trade's fields as Binance sends them, made once. */
interface Fill {
  /** lowercase Binance symbol: the streams' prefix */
  stream: string;
  symbol: string;
  id: string;
  p: string;
  q: string;
  t: number;
  m: boolean;
}

/** Why a stream name or a request is refused, as Binance's error replies say it. */
class Refusal extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Binance's spot market-data WebSocket (web-socket-streams.md): raw streams at /ws[/<stream>...],
 * combined at /stream?streams=<a>/<b> (each event as {"stream","data"}); SUBSCRIBE, UNSUBSCRIBE,
 * LIST_SUBSCRIPTIONS, SET_PROPERTY and GET_PROPERTY ("combined") with their replies and errors;
 * `<symbol>@aggTrade` and `<symbol>@trade` events; a ping frame every pingMs; and Binance's limits:
 * more than 5 incoming messages a second (ping and pong frames too) closes the connection, and a
 * connection listens to at most 1024 streams.
 */
export function binanceWire(tape: readonly TapeItem[], opts: BinanceWireOptions): Wire {
  // each trade's fields, made once: the recorded aggregate id, else a count per symbol in tape order
  const counters = new Map<string, number>();
  const streamOf = new Map<string, string | undefined>();
  const fills = tape.map((tr): Fill | undefined => {
    if (isRawFrame(tr) || isRawTrade(tr)) return undefined;
    const symbol = binanceSymbol(tr.s);
    if (symbol === undefined) return undefined;
    const n = (counters.get(symbol) ?? 0) + 1;
    counters.set(symbol, n);
    return { stream: symbol.toLowerCase(), symbol, id: tr.i ?? String(n), p: decimal8(tr.p), q: decimal8(tr.v), t: tr.t, m: tr.a === 's' };
  });
  const streamSymbol = (tapeSymbol: string): string | undefined => {
    if (!streamOf.has(tapeSymbol)) streamOf.set(tapeSymbol, binanceSymbol(tapeSymbol)?.toLowerCase());
    return streamOf.get(tapeSymbol);
  };

  return {
    refuse(url) {
      const asked = handshakeStreams(url);
      if (asked === undefined)
        return { status: 404, reason: `no such path: use /ws/<stream> (raw) or /stream?streams=<stream>/<stream> (combined)` };
      try {
        checkStreams(asked.streams, 0);
        return undefined;
      } catch (err) {
        if (!(err instanceof Refusal)) throw err;
        return { status: 400, reason: err.message };
      }
    },

    session(ctx: SessionContext): WireSession {
      const { streams: given, combined: byPath } = handshakeStreams(ctx.url)!;
      let combined = byPath;
      /** the subscribed streams, in the order they came (LIST_SUBSCRIPTIONS) */
      const streams = new Set<string>();
      const add = (names: readonly string[]) => {
        for (const s of names) streams.add(s);
        if (streams.size > 0) ctx.subscribed();
      };
      add(given);

      // Binance pings every connection on a fixed beat, busy or not; the client answers with a pong.
      const ping = setInterval(() => ctx.ws.ping(), opts.pingMs ?? 20_000);

      // more than 5 incoming messages in a second, pings and pongs included: the connection is closed
      const arrivals: number[] = [];
      const counted = (): boolean => {
        const now = Date.now();
        arrivals.push(now);
        while (arrivals[0]! <= now - 1000) arrivals.shift();
        if (arrivals.length <= BINANCE_MAX_MESSAGES_PER_SECOND) return true;
        ctx.log.warn({ messages: arrivals.length }, 'more than 5 incoming messages in a second: closing the connection, as Binance does');
        ctx.ws.close(1008, 'Too many messages: more than 5 incoming messages per second');
        return false;
      };
      ctx.ws.on('ping', counted);
      ctx.ws.on('pong', counted);
      ctx.ws.on('message', (data) => {
        if (!counted()) return;
        const reply = answer(data.toString());
        if (reply !== undefined) ctx.send(JSON.stringify(reply));
      });

      /** A request's reply: {result, id} or Binance's {code, msg[, id]}. */
      const answer = (text: string): object | undefined => {
        let req: unknown;
        try {
          req = JSON.parse(text);
        } catch (err) {
          return { code: 3, msg: `Invalid JSON: ${(err as Error).message}` };
        }
        if (req === null || typeof req !== 'object' || Array.isArray(req)) return { code: 3, msg: 'Invalid JSON: expected a JSON object' };
        const { method, params, id } = req as { method?: unknown; params?: unknown; id?: unknown };
        const withId = (x: object) => (validId(id) ? { ...x, id } : x);
        try {
          if (!validId(id)) throw new Refusal(2, 'Invalid request: request ID must be an unsigned integer');
          if (method === undefined) throw new Refusal(2, 'Invalid request: missing field `method`');
          if (typeof method !== 'string' || !METHODS.includes(method))
            throw new Refusal(
              2,
              `Invalid request: unknown variant \`${String(method)}\`, expected one of ${METHODS.map((m) => `\`${m}\``).join(', ')}`,
            );
          if (method === 'LIST_SUBSCRIPTIONS') return { result: [...streams], id };
          if (method === 'SUBSCRIBE' || method === 'UNSUBSCRIBE') {
            if (!Array.isArray(params) || !params.every((p) => typeof p === 'string'))
              throw new Refusal(2, 'Invalid request: params must be an array of stream names, e.g. ["xrpeth@aggTrade"]');
            if (method === 'UNSUBSCRIBE') for (const s of params) streams.delete(s);
            else {
              checkStreams(
                params.filter((s) => !streams.has(s)),
                streams.size,
              );
              add(params);
            }
            return { result: null, id };
          }
          // SET_PROPERTY / GET_PROPERTY: "combined" is the only property
          const [name, value] = Array.isArray(params) ? (params as unknown[]) : [];
          if (typeof name !== 'string') throw new Refusal(2, 'Invalid request: property name must be a string');
          if (name !== 'combined') throw new Refusal(0, 'Unknown property');
          if (method === 'GET_PROPERTY') return { result: combined, id };
          if (typeof value !== 'boolean') throw new Refusal(1, 'Invalid value type: expected Boolean');
          combined = value;
          return { result: null, id };
        } catch (err) {
          if (!(err instanceof Refusal)) throw err;
          ctx.log.info({ msg: err.message }, 'refused a request');
          return withId({ code: err.code, msg: err.message });
        }
      };

      const event = (stream: string, payload: string) => (combined ? `{"stream":${JSON.stringify(stream)},"data":${payload}}` : payload);

      return {
        wants: (symbol) => {
          if (symbol === undefined) return streams.size > 0;
          const s = streamSymbol(symbol);
          return s !== undefined && (streams.has(`${s}@aggTrade`) || streams.has(`${s}@trade`));
        },
        subscriptions: () => [...streams],
        encode(indexes, times) {
          const out: string[] = [];
          indexes.forEach((i, k) => {
            const tr = tape[i]!;
            if (isRawTrade(tr)) {
              // a verbatim trade goes as it is, on its symbol's stream (or the first one)
              const s = tr.s === undefined ? undefined : streamSymbol(tr.s);
              const stream = [...streams].find((x) => s === undefined || x.startsWith(`${s}@`)) ?? [...streams][0]!;
              out.push(event(stream, tr.rawTrade));
              return;
            }
            const f = fills[i];
            if (f === undefined) return;
            const t = times?.[k] ?? f.t;
            const agg = `${f.stream}@aggTrade`;
            const one = `${f.stream}@trade`;
            if (streams.has(agg))
              out.push(
                event(
                  agg,
                  `{"e":"aggTrade","E":${t},"s":"${f.symbol}","a":${jsonValue(f.id)},"p":"${f.p}","q":"${f.q}","f":${jsonValue(f.id)},"l":${jsonValue(f.id)},"T":${t},"m":${f.m},"M":true}`,
                ),
              );
            if (streams.has(one))
              out.push(
                event(
                  one,
                  `{"e":"trade","E":${t},"s":"${f.symbol}","t":${jsonValue(f.id)},"p":"${f.p}","q":"${f.q}","T":${t},"m":${f.m},"M":true}`,
                ),
              );
          });
          return out;
        },
        whole: () => undefined,
        end: () => clearInterval(ping),
      };
    },
  };
}

/** The streams a handshake's URL names, and whether its events are combined; undefined for a path Binance has not. */
function handshakeStreams(url: string): { streams: string[]; combined: boolean } | undefined {
  const u = new URL(url, 'ws://x');
  const path = u.pathname.replace(/\/+$/, '');
  if (path === '/stream') return { streams: (u.searchParams.get('streams') ?? '').split('/').filter(Boolean), combined: true };
  if (path === '/ws' || path.startsWith('/ws/')) return { streams: path.slice('/ws'.length).split('/').filter(Boolean), combined: false };
  return undefined;
}

/** Binance's request ids: a 64-bit integer, up to 36 letters and digits, or null. */
function validId(id: unknown): boolean {
  return id === null || (typeof id === 'number' && Number.isInteger(id)) || (typeof id === 'string' && /^[A-Za-z0-9]{1,36}$/.test(id));
}

/** Stream names to add to a connection that has `have`: each served, and no more than 1024 in all (the wording is the stand-in's own). */
function checkStreams(names: readonly string[], have: number): void {
  for (const name of names)
    if (!STREAM.test(name))
      throw new Refusal(
        2,
        `Invalid request: unknown stream "${name}": the replay serves <lowercase symbol>@aggTrade and <lowercase symbol>@trade`,
      );
  const fresh = new Set(names).size;
  if (have + fresh > BINANCE_MAX_STREAMS)
    throw new Refusal(
      2,
      `Invalid request: too many streams: a connection listens to at most ${BINANCE_MAX_STREAMS} (${have} now, ${fresh} more asked); open another connection`,
    );
}
