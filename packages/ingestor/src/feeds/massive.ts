import { STOCK_TICKER } from '@candlewick/core';
import { checkStockTickers, eventsFrame, jsonEvents, type FeedFrame, type FeedProtocol } from './protocol.js';

export interface MassiveOptions {
  /** MASSIVE_WS_URL: the stocks cluster, real-time (socket.massive.com) or delayed (delayed.massive.com) */
  url: string;
  /** MASSIVE_API_KEY, sent in the auth message (never in the URL, never logged) */
  key: string;
  /** SYMBOLS as configured: Massive's tickers (AAPL, BRK.A) */
  symbols: readonly string[];
}

/**
 * Characters of the params of one subscribe message. Massive documents no size limit for one
 * message; candlewick keeps each under this (about 1,500 tickers) so that no server-side frame
 * limit is ever near, and sends a long list as several messages.
 */
export const MASSIVE_PARAMS_CHARS = 8192;
/** A connection limit said in a message (max_connections): the wait before connecting again. */
export const MASSIVE_LIMIT_WAIT_MS = 60_000;

/** The subscribe messages for `symbols`: `T.<ticker>` channels, comma-separated, each message's params at most MASSIVE_PARAMS_CHARS. */
export function massiveSubscriptions(symbols: readonly string[]): string[] {
  const messages: string[] = [];
  let params = '';
  const cut = () => {
    if (params) messages.push(JSON.stringify({ action: 'subscribe', params }));
    params = '';
  };
  for (const s of symbols) {
    const channel = `T.${s}`;
    if (params && params.length + 1 + channel.length > MASSIVE_PARAMS_CHARS) cut();
    params = params ? `${params},${channel}` : channel;
  }
  cut();
  return messages;
}

/** A status event's text, short, for a message. */
const said = (m: Record<string, unknown>): string => String(m.message ?? '').slice(0, 200);

/** What a status event means for the connection. */
function status(m: Record<string, unknown>): FeedFrame {
  const text = said(m);
  switch (m.status) {
    case 'connected':
    case 'success':
      return { kind: 'ack' };
    case 'auth_success':
      return { kind: 'authorized' };
    case 'auth_failed':
      return {
        kind: 'fatal',
        msg:
          `Massive refused MASSIVE_API_KEY (auth_failed${text ? `: ${text}` : ''}): check the key on your Massive dashboard ` +
          'and that its plan includes WebSocket access to stocks; not retrying',
      };
    case 'max_connections':
      return {
        kind: 'limited',
        msg:
          `Massive closed the connection: this key has reached its number of WebSocket connections at once (max_connections${text ? `: ${text}` : ''}); ` +
          'another client or ingestor is using it',
        retryAfterMs: MASSIVE_LIMIT_WAIT_MS,
      };
    case 'error':
    case 'auth_timeout':
      // a plan without this cluster or without real-time data: retrying cannot fix it
      if (/not authori[sz]ed|not entitled|doesn't include|does not include|upgrade/i.test(text))
        return {
          kind: 'fatal',
          msg:
            `Massive refused this key access to MASSIVE_WS_URL's data (${text}): a plan with delayed data reads ` +
            'wss://delayed.massive.com/stocks (set MASSIVE_WS_URL), else upgrade the plan; not retrying',
        };
      return {
        kind: 'error',
        msg: `${String(m.status)}: ${text}`,
        hint:
          m.status === 'auth_timeout' ? 'the login came too late: Massive closes the connection, and candlewick connects again' : undefined,
      };
    default:
      return { kind: 'unknown', type: `status ${String(m.status)}` };
  }
}

/**
 * Massive's (formerly Polygon.io's) stocks WebSocket, whose protocol is Polygon's: on connect a
 * status event {"ev":"status","status":"connected"}; the client logs in with
 * {"action":"auth","params":"<key>"} (auth_success or auth_failed), then subscribes
 * {"action":"subscribe","params":"T.AAPL,T.MSFT"}. Every message is a JSON array of events; a trade
 * is {"ev":"T","sym","x","i","z","p","s","c","t","q"}: price p, size s, time t (Unix ms),
 * conditions c (Massive's numeric codes, passed as they are: the trade keeps them as text, as the
 * Massive backfill does), and q, the sequence number, which increases per ticker: candlewick
 * carries q as the trade id (Massive's `i` is the exchange's own id, unique per exchange only and
 * in no order, so it cannot tell a trade sent twice). A connection limit (max_connections) waits a
 * minute before connecting again; a refused key stops the feed.
 */
export function massiveProtocol(opts: MassiveOptions): FeedProtocol {
  checkStockTickers(opts.symbols, STOCK_TICKER, 'massive', 'Massive', "Massive's stocks cluster");
  return {
    name: 'Massive',
    urlSetting: 'MASSIVE_WS_URL',
    url: () => opts.url,
    login: () => JSON.stringify({ action: 'auth', params: opts.key }),
    subscribe: massiveSubscriptions,
    // Massive documents no limit on client messages; a long list still goes out unhurried
    messagesPerSecond: 10,
    readFrame(text): FeedFrame {
      const events = jsonEvents(text);
      if (!events) return { kind: 'not-json' };
      const trades: unknown[] = [];
      let other: FeedFrame | undefined;
      for (const m of events) {
        if (!m) {
          other ??= { kind: 'unknown', type: undefined };
          continue;
        }
        if (m.ev === 'T') trades.push({ s: m.sym, p: m.p, v: m.s, t: m.t, c: m.c, i: m.q });
        else if (m.ev === 'status') {
          const f = status(m);
          // what ends the connection outweighs an acknowledgement in the same message
          if (other === undefined || f.kind === 'fatal' || f.kind === 'limited' || f.kind === 'authorized') other = f;
        } else other ??= { kind: 'unknown', type: m.ev };
      }
      return eventsFrame(trades, other);
    },
    // Massive refuses a key by message; a handshake refused with 401/403 means the same
    authError: (status) =>
      status === 401 || status === 403
        ? `Massive refused the connection (HTTP ${status}): check MASSIVE_API_KEY and MASSIVE_WS_URL; not retrying`
        : undefined,
  };
}
