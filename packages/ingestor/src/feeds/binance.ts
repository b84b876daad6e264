import { binanceSymbol } from '@candlewick/core';
import type { FeedFrame, FeedProtocol } from './protocol.js';

export interface BinanceOptions {
  /** BINANCE_WS_URL: the combined-stream endpoint (/stream), or a raw one (/ws) */
  url: string;
  /** BINANCE_STREAM: aggTrade (id a) or trade (id t) */
  stream: 'aggTrade' | 'trade';
  /** SYMBOLS as configured: BINANCE:BTCUSDT (Finnhub's name for it) or BTCUSDT */
  symbols: readonly string[];
}

/** Streams per SUBSCRIBE message: about 2.5 kB, well under the size Binance accepts in one message. */
const STREAMS_PER_MESSAGE = 100;

/** Binance's fixed-decimal text ("0.00141300", "23.00000000") as the shortest decimal ("0.001413", "23"). */
export function shortDecimal(text: string): string {
  if (!/^\d+\.\d+$/.test(text)) return text;
  return text.replace(/0+$/, '').replace(/\.$/, '');
}

/** Binance's name of each configured pair -> the configured name (config.ts has checked them: binancePairs). */
function nativeNames(symbols: readonly string[]): Map<string, string> {
  return new Map(symbols.map((s) => [binanceSymbol(s), s]));
}

/** What to do about an error Binance sends (its documented codes). */
function hint(code: unknown): string | undefined {
  if (code === 3) return 'a message candlewick sent was not valid JSON to Binance: please report it';
  if (code === 2) return 'Binance refused a subscription message: check SYMBOLS and BINANCE_STREAM';
  return undefined;
}

/**
 * Binance's spot market-data WebSocket (https://github.com/binance/binance-spot-api-docs,
 * web-socket-streams.md): no key; streams `<pair>@aggTrade` or `<pair>@trade` subscribed by
 * SUBSCRIBE messages (at most 5 incoming messages a second counting pong frames, so 3 are sent a
 * second; 1024 streams a connection), events wrapped {"stream","data"} on /stream or bare on /ws,
 * ping frames every 20 s (answered by the WebSocket library), a connection closed after 24 h (then
 * candlewick reconnects like after any drop, and backfill fills the gap). A trade's price keeps its
 * digits without Binance's padding zeros, so the bars equal those of the same trades from Finnhub;
 * its id is `a` (aggTrade) or `t` (trade); its aggressor side is the seller's when the buyer was the
 * maker (`m`).
 */
export function binanceProtocol(opts: BinanceOptions): FeedProtocol {
  const byNative = nativeNames(opts.symbols);
  const idField = opts.stream === 'aggTrade' ? 'a' : 't';
  const event = opts.stream;
  return {
    name: 'Binance',
    urlSetting: 'BINANCE_WS_URL',
    url: () => opts.url,
    subscribe(symbols) {
      const streams = symbols.map((s) => `${binanceSymbol(s).toLowerCase()}@${opts.stream}`);
      const messages: string[] = [];
      for (let k = 0; k < streams.length; k += STREAMS_PER_MESSAGE)
        messages.push(JSON.stringify({ method: 'SUBSCRIBE', params: streams.slice(k, k + STREAMS_PER_MESSAGE), id: messages.length + 1 }));
      return messages;
    },
    messagesPerSecond: 3,
    readFrame(text): FeedFrame {
      let msg: unknown;
      try {
        msg = JSON.parse(text);
      } catch {
        return { kind: 'not-json' };
      }
      if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) return { kind: 'unknown', type: undefined };
      const m = msg as Record<string, unknown>;
      // a reply to SUBSCRIBE: {"result":null,"id":1}
      if ('result' in m && 'id' in m) return { kind: 'ack' };
      // an error: {"code":2,"msg":"…"} or {"error":{"code","msg"},"id"}
      const err = (typeof m.error === 'object' && m.error !== null ? m.error : 'code' in m && 'msg' in m ? m : undefined) as
        { code?: unknown; msg?: unknown } | undefined;
      if (err) return { kind: 'error', msg: `code ${String(err.code)}: ${String(err.msg ?? '')}`, hint: hint(err.code) };
      const data = (typeof m.data === 'object' && m.data !== null && 'stream' in m ? m.data : m) as Record<string, unknown>;
      if (data.e === event) {
        const native = data.s;
        const trade = {
          s: typeof native === 'string' ? (byNative.get(native) ?? native) : native,
          p: typeof data.p === 'string' ? shortDecimal(data.p) : data.p,
          v: data.q,
          t: data.T,
          i: data[idField],
          ...(data.m === true ? { a: 's' } : data.m === false ? { a: 'b' } : {}),
        };
        return { kind: 'trade', data: [trade] };
      }
      // Binance says it is about to close the connection: the reconnect follows
      if (data.e === 'serverShutdown') return { kind: 'ack' };
      return { kind: 'unknown', type: data.e ?? m.stream };
    },
    authError: (status) =>
      status === 451 || status === 403
        ? `Binance refused the connection (HTTP ${status}): it serves no market data to this location or address ` +
          '(Binance.US and others are other venues with other endpoints); check BINANCE_WS_URL; not retrying'
        : undefined,
  };
}
