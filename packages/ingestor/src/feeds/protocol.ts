import { ConfigError } from '@candlewick/common';
import type { Frame } from '@candlewick/core';

/**
 * A feed's correction or cancel of a trade it sent before (Alpaca's `c` and `x` messages): read,
 * counted and kept as received (the feed:corrections stream), where the closer reads and applies it
 * to the trade's bars (aggregator/src/amend.ts).
 */
export interface FeedAmend {
  kind: 'correction' | 'cancel';
  /** the symbol it is for, as the feed wrote it */
  symbol: string;
  /** the event as received, for the stream */
  event: unknown;
}

/**
 * A frame of a feed, read: its trades as raw objects in the shape validateTrade reads
 * ({s, p, v, t, c} and, where the feed gives them, the trade id i and aggressor side a), a
 * keep-alive, corrections and cancels of trades sent before (with the trades of the same message), the feed's acknowledgement of a request, the feed's acceptance of the login (the
 * subscriptions follow), the feed's error (with what to do about it, where known), a refusal in a
 * message that retrying cannot fix (`fatal`: the feed stops, exit 2), a limit that closes the
 * connection until a while has passed (`limited`), or something unreadable.
 */
export type FeedFrame =
  | Exclude<Frame, { kind: 'error' }>
  | { kind: 'amends'; amends: FeedAmend[]; data: unknown[] }
  | { kind: 'ack' }
  | { kind: 'authorized' }
  | { kind: 'error'; msg: string; hint?: string }
  | { kind: 'fatal'; msg: string }
  | { kind: 'limited'; msg: string; retryAfterMs: number };

/**
 * What differs from one feed to the next: where to connect, how to subscribe, how to read a frame
 * and what a refused handshake means. The connection itself (backoff, watchdog, backpressure,
 * validation, outages) is TradeFeed's, the same for every feed.
 */
export interface FeedProtocol {
  /** the provider's name, for messages */
  readonly name: string;
  /** the setting that holds its URL, for messages */
  readonly urlSetting: string;
  /** the URL to open (logged only through redactUrl) */
  url(): string;
  /**
   * A feed that logs in by message (the key in it): the message sent first on every connection;
   * the subscriptions wait for the frame read as `authorized`. Never logged.
   */
  login?(): string;
  /** the messages that subscribe `symbols`, in the order to send them (never logged) */
  subscribe(symbols: readonly string[]): string[];
  /** messages a second the feed accepts from a client (Infinity: it does not count) */
  readonly messagesPerSecond: number;
  /** one text frame */
  readFrame(text: string): FeedFrame;
  /** a handshake refused with this HTTP status that retrying cannot fix: what to check; else undefined */
  authError(status: number): string | undefined;
}

/**
 * A frame of a feed that sends JSON arrays of events (Massive, Alpaca): its events, each an object
 * or undefined where an element is not one (a lone object counts as an array of one); undefined
 * when the text is not JSON.
 */
export function jsonEvents(text: string): (Record<string, unknown> | undefined)[] | undefined {
  let msg: unknown;
  try {
    msg = JSON.parse(text);
  } catch {
    return undefined;
  }
  return (Array.isArray(msg) ? (msg as unknown[]) : [msg]).map((e) =>
    e !== null && typeof e === 'object' && !Array.isArray(e) ? (e as Record<string, unknown>) : undefined,
  );
}

/**
 * What a message of events comes to: what ends the connection (`fatal`, `limited`) first, then the
 * trades, then whatever else it said (unknown when it said nothing).
 */
export function eventsFrame(trades: unknown[], other: FeedFrame | undefined): FeedFrame {
  if (other && (other.kind === 'fatal' || other.kind === 'limited')) return other;
  if (trades.length) return { kind: 'trade', data: trades };
  return other ?? { kind: 'unknown', type: undefined };
}

/**
 * SYMBOLS a US-stocks feed cannot have (not matching `ticker`, e.g. another venue's BINANCE:XRPETH):
 * a configuration error naming each, and how `provider` writes its tickers.
 */
export function checkStockTickers(symbols: readonly string[], ticker: RegExp, feed: string, provider: string, reads: string): void {
  const problems = symbols
    .filter((s) => !ticker.test(s))
    .map(
      (s) =>
        `SYMBOLS: ${JSON.stringify(s)} is not a US stock ticker (FEED=${feed} reads ${reads}): write it as ${provider} does, e.g. AAPL or BRK.A`,
    );
  if (problems.length) throw new ConfigError(problems);
}
