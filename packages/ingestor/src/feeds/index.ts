import type { Config } from '@candlewick/common';
import { binanceProtocol } from './binance.js';
import { finnhubProtocol } from './finnhub.js';
import type { FeedProtocol } from './protocol.js';

export * from './feed.js';
export * from './protocol.js';
export { binanceProtocol, shortDecimal, BINANCE_MAX_STREAMS } from './binance.js';
export { finnhubProtocol } from './finnhub.js';

/** The protocol of the configured FEED; a configuration it cannot serve is a ConfigError. */
export function feedProtocol(cfg: Config): FeedProtocol {
  switch (cfg.feed) {
    case 'binance':
      return binanceProtocol({ url: cfg.binanceWsUrl, stream: cfg.binanceStream, symbols: cfg.symbols });
    case 'finnhub':
      return finnhubProtocol({ url: cfg.finnhubWsUrl, token: cfg.mode === 'live' ? cfg.finnhubToken : undefined });
  }
}

/** Whether the feed's trade ids increase per symbol (ingestion can then drop a trade seen twice). */
export function feedIdsIncrease(cfg: Config): boolean {
  return cfg.feed === 'binance';
}
