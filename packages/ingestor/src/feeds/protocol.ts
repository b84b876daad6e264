import type { Frame } from '@candlewick/core';

/**
 * A frame of a feed, read: its trades as raw objects in the shape validateTrade reads
 * ({s, p, v, t, c} and, where the feed gives them, the trade id i and aggressor side a), a
 * keep-alive, the feed's acknowledgement of a request, the feed's error (with what to do about it,
 * where known), or something unreadable.
 */
export type FeedFrame = Exclude<Frame, { kind: 'error' }> | { kind: 'ack' } | { kind: 'error'; msg: string; hint?: string };

/**
 * What differs from one feed to the next: where to connect, how to subscribe, how to read a frame
 * and what a refused handshake means. The connection itself (backoff, watchdog, backpressure,
 * validation, outages) is TradeFeed's, the same for every feed.
 */
export interface FeedProtocol {
  /** the provider's name, for messages */
  readonly name: string;
  /** the URL to open (logged only through redactUrl) */
  url(): string;
  /** the messages that subscribe `symbols`, in the order to send them */
  subscribe(symbols: readonly string[]): string[];
  /** messages a second the feed accepts from a client (Infinity: it does not count) */
  readonly messagesPerSecond: number;
  /** one text frame */
  readFrame(text: string): FeedFrame;
  /** a handshake refused with this HTTP status that retrying cannot fix: what to check; else undefined */
  authError(status: number): string | undefined;
}
