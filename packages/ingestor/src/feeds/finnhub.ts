import { readFrame } from '@candlewick/core';
import type { FeedProtocol } from './protocol.js';

export interface FinnhubOptions {
  /** FINNHUB_WS_URL */
  url: string;
  /** FINNHUB_TOKEN (live only), sent as the URL's token parameter */
  token: string | undefined;
}

/**
 * Finnhub's trade WebSocket: the key in the URL, one {"type":"subscribe","symbol"} message per
 * symbol, trades as {"type":"trade","data":[{s, p, v, t, c}…]}, {"type":"ping"} keep-alives and
 * {"type":"error","msg"} for what it refuses (core/frames.ts reads them: `candlewick bars` reads
 * recorded frames the same way).
 */
export function finnhubProtocol(opts: FinnhubOptions): FeedProtocol {
  return {
    name: 'Finnhub',
    urlSetting: 'FINNHUB_WS_URL',
    url() {
      if (!opts.token) return opts.url;
      const u = new URL(opts.url);
      u.searchParams.set('token', opts.token);
      return u.toString();
    },
    subscribe: (symbols) => symbols.map((symbol) => JSON.stringify({ type: 'subscribe', symbol })),
    messagesPerSecond: Infinity,
    readFrame,
    authError: (status) =>
      status === 401 || status === 403
        ? `the feed refused FINNHUB_TOKEN (HTTP ${status}): check the API key on your Finnhub dashboard ` +
          '(a sandbox key does not work on the live socket); not retrying'
        : undefined,
  };
}
