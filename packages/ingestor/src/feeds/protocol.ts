import type { Frame } from '@candlewick/core';

/**
 * A feed's correction or cancel of a trade it sent before (Alpaca's `c` and `x` messages): read,
 * counted and kept as received (the feed:corrections stream), not applied to any bar.
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
