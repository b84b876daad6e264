import type { Config } from '@candlewick/common';
import { alpacaProtocol } from './alpaca.js';
import { binanceProtocol } from './binance.js';
import { finnhubProtocol } from './finnhub.js';
import { massiveProtocol } from './massive.js';
import type { FeedProtocol } from './protocol.js';

export * from './feed.js';
export * from './protocol.js';
export { alpacaError, alpacaProtocol, alpacaSubscriptions, alpacaTradeId, ALPACA_SUBSCRIBE_SYMBOLS } from './alpaca.js';
export { binanceProtocol, shortDecimal } from './binance.js';
export { finnhubProtocol } from './finnhub.js';
export { massiveProtocol, massiveSubscriptions, MASSIVE_PARAMS_CHARS } from './massive.js';

/** The protocol of the configured FEED; a configuration it cannot serve is a ConfigError. */
export function feedProtocol(cfg: Config): FeedProtocol {
  switch (cfg.feed) {
    case 'binance':
      return binanceProtocol({ url: cfg.binanceWsUrl, stream: cfg.binanceStream, symbols: cfg.symbols });
    case 'massive':
      // replaying, the stand-in checks the key only when it has one: any text logs in
      return massiveProtocol({ url: cfg.massiveWsUrl, key: cfg.massiveApiKey ?? '', symbols: cfg.symbols });
    case 'alpaca':
      // replaying, the stand-in checks the key only when it has one: any text logs in
      return alpacaProtocol({
        url: cfg.alpacaWsUrl,
        key: cfg.alpacaApiKey ?? '',
        secret: cfg.alpacaApiSecret ?? '',
        symbols: cfg.symbols,
      });
    case 'finnhub':
      return finnhubProtocol({ url: cfg.finnhubWsUrl, token: cfg.mode === 'live' ? cfg.finnhubToken : undefined });
  }
}

/**
 * Whether the feed's trade ids increase per symbol (ingestion can then drop a trade seen twice):
 * Binance's aggregate or trade ids, Massive's sequence numbers (q). Not Alpaca's: see feedIdsUnique.
 */
export function feedIdsIncrease(cfg: Config): boolean {
  return cfg.feed === 'binance' || cfg.feed === 'massive';
}

/**
 * Whether the feed's trade ids are unique but in no order: Alpaca's `i` is unique per symbol,
 * exchange and day (the adapter carries it as `<exchange>:<i>`), and does not increase per symbol
 * across exchanges; ingestion drops a trade seen twice within TRADE_IDS_WINDOW.
 */
export function feedIdsUnique(cfg: Config): boolean {
  return cfg.feed === 'alpaca';
}
