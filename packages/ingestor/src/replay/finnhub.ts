import { isRawFrame, isRawTrade, type TapeItem, type TapeTrade } from '@candlewick/common';
import { jsonValue, type SessionContext, type Wire, type WireSession } from './wire.js';

export interface FinnhubWireOptions {
  /** 0: the whole tape's frames are made once, for the connections that take all of it */
  speed: number;
  frameTrades: number;
  /** a JSON ping once a connection has had nothing sent this long (1 s) */
  pingMs?: number;
  /** when set, a connection must carry ?token=<this>, else HTTP 401 as Finnhub answers */
  token?: string;
}

/**
 * Finnhub's trade WebSocket: {"type":"subscribe","symbol":...} in, {"type":"trade","data":[{s,p,v,t,c}...]}
 * frames out, and {"type":"ping"} when a connection has been idle.
 */
export function finnhubWire(tape: readonly TapeItem[], opts: FinnhubWireOptions): Wire {
  // each trade's JSON, encoded once and reused by every session
  const encoded = tape.map((tr) => (isRawFrame(tr) ? undefined : isRawTrade(tr) ? tr.rawTrade : encodeTrade(tr, tr.t)));
  // whole frames for the common case of a session that subscribes to every symbol of the tape
  const fullFrames: Buffer[] = [];
  const tapeSymbols = new Set<string>();
  if (opts.speed === 0) {
    let frame: string[] = [];
    const cut = () => {
      if (frame.length) fullFrames.push(Buffer.from(tradeFrame(frame)));
      frame = [];
    };
    tape.forEach((tr, i) => {
      if (isRawFrame(tr)) {
        cut();
        fullFrames.push(Buffer.from(tr.raw));
        return;
      }
      if (tr.s !== undefined) tapeSymbols.add(tr.s);
      frame.push(encoded[i]!);
      if (frame.length >= opts.frameTrades) cut();
    });
    cut();
  }

  return {
    refuse(url) {
      if (opts.token === undefined) return undefined;
      const token = new URL(url, 'ws://x').searchParams.get('token');
      return token === opts.token ? undefined : { status: 401, reason: 'Unauthorized' };
    },

    session(ctx: SessionContext): WireSession {
      const symbols = new Set<string>();
      // Finnhub pings a connection that has had nothing to send for a while; so does the replay
      // (also inside quiet stretches of a paced tape), so a client's stale-feed watchdog sees a live socket.
      const pingMs = opts.pingMs ?? 1000;
      const keepalive = setInterval(
        () => {
          if (Date.now() - ctx.lastSend() >= pingMs) ctx.send('{"type":"ping"}');
        },
        Math.max(20, pingMs / 2),
      );
      ctx.ws.on('message', (data) => {
        try {
          const msg = JSON.parse(data.toString()) as { type?: string; symbol?: string };
          if (msg.type === 'subscribe' && typeof msg.symbol === 'string') {
            symbols.add(msg.symbol);
            ctx.subscribed();
          } else if (msg.type === 'unsubscribe' && typeof msg.symbol === 'string') symbols.delete(msg.symbol);
        } catch {
          ctx.send(JSON.stringify({ type: 'error', msg: 'invalid JSON' }));
        }
      });
      return {
        wants: (symbol) => symbol === undefined || symbols.has(symbol),
        subscriptions: () => [...symbols],
        encode(indexes, times) {
          const trades = indexes.map((i, k) => {
            const tr = tape[i]!;
            return times !== undefined && !isRawTrade(tr) && !isRawFrame(tr) ? encodeTrade(tr, times[k]!) : encoded[i]!;
          });
          return trades.length ? [tradeFrame(trades)] : [];
        },
        whole: () => (opts.speed === 0 && [...tapeSymbols].every((s) => symbols.has(s)) ? fullFrames : undefined),
        end: () => clearInterval(keepalive),
      };
    },
  };
}

const tradeFrame = (trades: readonly string[]): string => `{"type":"trade","data":[${trades.join(',')}]}`;

/** One trade as Finnhub sends it: {"s","p","v","t","c"}, with event time `t`. */
function encodeTrade(tr: TapeTrade, t: number): string {
  return `{"s":${JSON.stringify(tr.s)},"p":${jsonValue(tr.p)},"v":${jsonValue(tr.v)},"t":${jsonValue(t)},"c":${JSON.stringify(tr.c)}}`;
}
