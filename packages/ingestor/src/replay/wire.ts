import type { WebSocket } from 'ws';
import { isRawTrade, type Logger, type TapeItem, type TapeTrade } from '@candlewick/common';
import { JSON_NUMBER } from '@candlewick/core';

/**
 * What differs between the feeds a replay server stands in for: the handshake, the subscription
 * messages, how trades are encoded into frames and how an idle connection is kept alive. The tape's
 * timeline, its pacing and the socket's backpressure are the server's own (replay-server.ts), the
 * same for every protocol.
 */
export interface Wire {
  /** a handshake this protocol refuses (a wrong path, a missing token): its HTTP status and reason */
  refuse(url: string): { status: number; reason: string } | undefined;
  /** one connection's side of the protocol */
  session(ctx: SessionContext): WireSession;
}

/** What a connection's protocol side is given by the server. */
export interface SessionContext {
  ws: WebSocket;
  /** the handshake's request URL (path and query) */
  url: string;
  log: Logger;
  /** sends a frame and notes when */
  send(data: string | Buffer): void;
  /** when a frame was last sent */
  lastSend(): number;
  /** the connection's first subscription has come: the replay starts once the rest have settled */
  subscribed(): void;
}

/** One connection's side of a protocol. */
export interface WireSession {
  /** whether this connection gets the trades of this tape symbol (undefined: a verbatim trade without one) */
  wants(symbol: string | undefined): boolean;
  /** the subscriptions so far, for the log and for seeing when they stop arriving */
  subscriptions(): readonly string[];
  /** the tape's items at these indexes as frames, each with its event time (shifted) or the recorded one */
  encode(indexes: readonly number[], times: readonly number[] | undefined): (string | Buffer)[];
  /** at full speed, the whole tape as frames made once, when this connection takes it all as it is */
  whole(): readonly Buffer[] | undefined;
  /** the connection is over: timers stop */
  end(): void;
}

/** A JSON number as written, or else its text as a JSON string: a replayed frame is always valid JSON. */
export const jsonValue = (x: string | number): string => {
  const text = String(x);
  return JSON_NUMBER.test(text) ? text : JSON.stringify(text);
};

/**
 * The tape's items at `indexes` as one frame, a JSON array (Massive's, Alpaca's): each trade's event
 * made once in two parts around its time (`events`, by tape index), the time written by `time` (the
 * recorded one, or the shifted one of `times`); a verbatim trade as it is; nothing for no trade.
 */
export function arrayFrame(
  tape: readonly TapeItem[],
  events: readonly ([string, string] | undefined)[],
  indexes: readonly number[],
  times: readonly number[] | undefined,
  time: (ms: number, index: number) => string,
): string[] {
  const out: string[] = [];
  indexes.forEach((i, k) => {
    const tr = tape[i]!;
    if (isRawTrade(tr)) {
      out.push(tr.rawTrade);
      return;
    }
    const e = events[i];
    if (e === undefined) return;
    const t = times?.[k];
    out.push(`${e[0]}${time(t === undefined || t === 0 ? (tr as TapeTrade).t : t, i)}${e[1]}`);
  });
  return out.length ? [`[${out.join(',')}]`] : [];
}
