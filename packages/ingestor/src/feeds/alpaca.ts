import { STOCK_TICKER, alpacaTradeIdOf, rfc3339Ms } from '@candlewick/core';
import { checkStockTickers, eventsFrame, jsonEvents, type FeedAmend, type FeedFrame, type FeedProtocol } from './protocol.js';

export interface AlpacaOptions {
  /** ALPACA_WS_URL: wss://stream.data.alpaca.markets/v2/iex (free, IEX only) or /v2/sip (paid, the whole market) */
  url: string;
  /** ALPACA_API_KEY and ALPACA_API_SECRET, sent in the auth message (never in the URL, never logged) */
  key: string;
  secret: string;
  /** SYMBOLS as configured: US stock tickers (AAPL, BRK.A) */
  symbols: readonly string[];
}

/**
 * Symbols in one subscribe message. Alpaca documents no size limit for one message; candlewick
 * keeps each to this many so that no server-side frame limit is ever near, and sends a long list
 * as several messages.
 */
export const ALPACA_SUBSCRIBE_SYMBOLS = 1000;
/** A connection limit said in a message (406): the wait before connecting again. */
export const ALPACA_LIMIT_WAIT_MS = 60_000;

/** The subscribe messages for `symbols`: {"action":"subscribe","trades":[...]}, at most ALPACA_SUBSCRIBE_SYMBOLS each. */
export function alpacaSubscriptions(symbols: readonly string[]): string[] {
  const messages: string[] = [];
  for (let k = 0; k < symbols.length; k += ALPACA_SUBSCRIBE_SYMBOLS)
    messages.push(JSON.stringify({ action: 'subscribe', trades: symbols.slice(k, k + ALPACA_SUBSCRIBE_SYMBOLS) }));
  return messages;
}

/** An error message's text, short, for a message. */
const said = (m: Record<string, unknown>): string => String(m.msg ?? '').slice(0, 200);

/** How many symbols a plan allows, where the feed's message says (e.g. "symbol limit exceeded (30)"). */
const limitIn = (text: string): string | undefined => /(\d+)/.exec(text)?.[1];

/**
 * What one of Alpaca's error codes means (docs: "Real-time Stock Data", errors), as a frame:
 * a refused key or a plan without the feed stops the feed; a connection limit waits; the rest are said.
 */
export function alpacaError(code: unknown, msg: string): FeedFrame {
  const text = `${String(code)}${msg ? ` ${msg}` : ''}`;
  switch (code) {
    case 402:
      return {
        kind: 'fatal',
        msg:
          `Alpaca refused ALPACA_API_KEY / ALPACA_API_SECRET (${text}): check the key id and its secret on your Alpaca dashboard ` +
          '(a paper-trading key works for market data too; a regenerated key has a new secret); not retrying',
      };
    case 409:
      return {
        kind: 'fatal',
        msg:
          `Alpaca refused this key the data of ALPACA_WS_URL (${text}): the plan does not include this feed; ` +
          'the free plan reads IEX only: set ALPACA_WS_URL=wss://stream.data.alpaca.markets/v2/iex (use /v2/iex), else upgrade the plan for /v2/sip; not retrying',
      };
    case 408:
      return {
        kind: 'fatal',
        msg: `Alpaca has not enabled the v2 stream for this account (${text}): enable market data v2 on the Alpaca dashboard; not retrying`,
      };
    case 406:
      return {
        kind: 'limited',
        msg:
          `Alpaca closed the connection: this key has reached its number of connections at once (${text}); ` +
          'another client or ingestor is using it (the free plan allows one)',
        retryAfterMs: ALPACA_LIMIT_WAIT_MS,
      };
    case 405: {
      const n = limitIn(msg);
      return {
        kind: 'error',
        msg: text,
        hint:
          `more symbols than the plan allows${n ? ` (${n})` : ''}: the symbols past the limit get no trades; ` +
          'subscribe to fewer (SYMBOLS), or a plan with more (the free plan allows 30)',
      };
    }
    case 401:
      return { kind: 'error', msg: text, hint: 'a request before the login was accepted: candlewick subscribes only once authenticated' };
    case 403:
      return { kind: 'error', msg: text, hint: 'a second login on one connection: ignored' };
    case 404:
      return { kind: 'error', msg: text, hint: 'the login came too late: Alpaca closes the connection, and candlewick connects again' };
    case 407:
      return {
        kind: 'error',
        msg: text,
        hint: "Alpaca says candlewick reads too slowly (its buffer for this connection filled): check this host's CPU and network, or Redis",
      };
    case 400:
      return { kind: 'error', msg: text, hint: 'Alpaca could not read a message candlewick sent' };
    case 410:
      return { kind: 'error', msg: text, hint: 'a subscription this feed does not offer' };
    case 500:
      return { kind: 'error', msg: text, hint: "Alpaca's own error: it closes the connection, and candlewick connects again" };
    default:
      return { kind: 'error', msg: text };
  }
}

/**
 * The id an Alpaca trade is carried under (alpacaTradeIdOf), or `i` as it came where the message
 * names no exchange or `i` is not a whole number (the trade's validation then judges it; a whole
 * number is carried as its text, as alpacaTradeIdOf gives it). Exported for tests.
 */
export function alpacaTradeId(x: unknown, i: unknown): unknown {
  const id = alpacaTradeIdOf(x, i);
  return id?.includes(':') ? id : i;
}

/**
 * Alpaca's market-data stream for stocks (v2), at ALPACA_WS_URL: on connect
 * [{"T":"success","msg":"connected"}]; the client logs in with {"action":"auth","key","secret"}
 * ([{"T":"success","msg":"authenticated"}] or an error), then subscribes
 * {"action":"subscribe","trades":["AAPL",…]} ([{"T":"subscription",…}]). Every message is a JSON
 * array; a trade is {"T":"t","S","i","x","p","s","t","c","z"}: price p, size s, time t (RFC-3339 with
 * up to nanoseconds: to whole ms, floor), conditions c (the SIP's letters, passed as they are), i
 * the trade id, unique per symbol, exchange and day but in no order, carried as `<x>:<i>`
 * (alpacaTradeId; feedIdsUnique), no aggressor side. Corrections
 * {"T":"c"} and cancels {"T":"x"} of trades sent before come on the trade subscription: read as
 * `amends`, kept and counted; the closer applies them (aggregator/src/amend.ts). Errors {"T":"error","code","msg"}: alpacaError.
 */
export function alpacaProtocol(opts: AlpacaOptions): FeedProtocol {
  checkStockTickers(opts.symbols, STOCK_TICKER, 'alpaca', 'Alpaca', "Alpaca's stocks stream");
  return {
    name: 'Alpaca',
    urlSetting: 'ALPACA_WS_URL',
    url: () => opts.url,
    login: () => JSON.stringify({ action: 'auth', key: opts.key, secret: opts.secret }),
    subscribe: alpacaSubscriptions,
    // Alpaca documents no limit on client messages; a long list still goes out unhurried
    messagesPerSecond: 10,
    readFrame(text): FeedFrame {
      const events = jsonEvents(text);
      if (!events) return { kind: 'not-json' };
      const trades: unknown[] = [];
      const amends: FeedAmend[] = [];
      let other: FeedFrame | undefined;
      for (const m of events) {
        if (!m) {
          other ??= { kind: 'unknown', type: undefined };
          continue;
        }
        switch (m.T) {
          case 't':
            trades.push({ s: m.S, p: m.p, v: m.s, t: rfc3339Ms(m.t), c: m.c, i: alpacaTradeId(m.x, m.i) });
            break;
          case 'c':
            amends.push({ kind: 'correction', symbol: String(m.S), event: m });
            break;
          case 'x':
            amends.push({ kind: 'cancel', symbol: String(m.S), event: m });
            break;
          case 'success': {
            const f: FeedFrame = m.msg === 'authenticated' ? { kind: 'authorized' } : { kind: 'ack' };
            if (other === undefined || f.kind === 'authorized') other = f;
            break;
          }
          case 'subscription':
            other ??= { kind: 'ack' };
            break;
          case 'error': {
            const f = alpacaError(m.code, said(m));
            // what ends the connection outweighs an acknowledgement in the same message
            if (other === undefined || other.kind === 'ack' || other.kind === 'unknown' || f.kind === 'fatal' || f.kind === 'limited')
              other = f;
            break;
          }
          default:
            other ??= { kind: 'unknown', type: m.T };
        }
      }
      if (amends.length && !(other && (other.kind === 'fatal' || other.kind === 'limited')))
        return { kind: 'amends', amends, data: trades };
      return eventsFrame(trades, other);
    },
    // Alpaca refuses a key by message; a handshake refused with 401/403 means the same
    authError: (status) =>
      status === 401 || status === 403
        ? `Alpaca refused the connection (HTTP ${status}): check ALPACA_API_KEY, ALPACA_API_SECRET and ALPACA_WS_URL; not retrying`
        : undefined,
  };
}
