import { isRawFrame, isRawTrade, type TapeItem, type TapeTrade } from '@candlewick/common';
import { arrayFrame, jsonValue, type SessionContext, type Wire, type WireSession } from './wire.js';

export interface MassiveWireOptions {
  /** a WebSocket ping frame this often (5 s), so a client's stale-feed watchdog sees a live socket in a quiet stretch */
  pingMs?: number;
  /** when set, the auth message must carry this key, else auth_failed and the connection is closed */
  token?: string;
}

/**
 * Massive's numeric trade conditions (its stocks condition ids, as on its trades and on
 * /v3/reference/conditions) for the condition names a tape carries (CONDITION_TABLE's, e.g. a Lean
 * tape's); a name without one is left out of the replayed `c`.
 */
export const MASSIVE_CONDITION_IDS: Readonly<Record<string, number>> = Object.freeze({
  Regular: 0,
  Acquisition: 1,
  AveragePrice: 2,
  AutoExecution: 3,
  Bunched: 4,
  BunchedSold: 5,
  CapElection: 6,
  Cash: 7,
  ClosingPrints: 8,
  Cross: 9,
  DerivativelyPriced: 10,
  Distribution: 11,
  FormT: 12,
  ExtendedHours: 12,
  IntermarketSweep: 14,
  OfficialClose: 15,
  OfficialOpen: 16,
  NextDay: 20,
  PriceVariation: 21,
  PriorReferencePrice: 22,
  Rule155: 23,
  Rule127: 24,
  OpeningPrints: 25,
  Stopped: 27,
  ReOpeningPrints: 28,
  Seller: 29,
  Sold: 30,
  OutOfSequence: 32,
  Split: 34,
  StockOption: 35,
  YellowFlag: 36,
  OddLot: 37,
  TradeThroughExempt: 41,
  Contingent: 52,
  QualifiedContingent: 53,
});

/** A tape trade's condition names as Massive's ids, each once, in the tape's order. */
export function massiveConditions(names: readonly string[]): number[] {
  const ids: number[] = [];
  for (const name of names) {
    const id = MASSIVE_CONDITION_IDS[name];
    if (id !== undefined && !ids.includes(id)) ids.push(id);
  }
  return ids;
}

const status = (status: string, message: string): string => JSON.stringify([{ ev: 'status', status, message }]);

/** A subscription parameter: a channel and a ticker (T.AAPL), or all tickers (T.*). */
const CHANNEL = /^([A-Z]+)\.(\*|[A-Za-z0-9][A-Za-z0-9.-]*)$/;

/**
 * Massive's (formerly Polygon.io's) stocks WebSocket, at /stocks: a `connected` status on connect;
 * {"action":"auth","params":"<key>"} answered auth_success, or auth_failed (and the connection
 * closed) when the stand-in has a key and this is not it; {"action":"subscribe"|"unsubscribe",
 * "params":"T.AIG,T.MSFT"} answered with a `success` status per channel (a subscription before the
 * login is an error status); then the subscribed tickers' trades as JSON arrays of
 * {"ev":"T","sym","i","p","s","c","t","q"} events, a frame at most `frameTrades` of them: q counts
 * each ticker's trades in tape order from 1, i counts every trade of the tape, c is the tape's
 * condition names as Massive's ids (MASSIVE_CONDITION_IDS). The tape keeps no exchange, so x and z
 * are left out. A WebSocket ping every pingMs keeps a quiet connection alive.
 */
export function massiveWire(tape: readonly TapeItem[], opts: MassiveWireOptions): Wire {
  // each trade's event, cut at its time so a shifted time costs one concatenation: made once
  const counters = new Map<string, number>();
  let serial = 0;
  const events = tape.map((tr): [string, string] | undefined => {
    if (isRawFrame(tr) || isRawTrade(tr)) return undefined;
    const q = (counters.get(tr.s) ?? 0) + 1;
    counters.set(tr.s, q);
    serial++;
    return eventParts(tr, q, serial);
  });

  return {
    refuse(url) {
      const path = new URL(url, 'ws://x').pathname.replace(/\/+$/, '');
      return path === '/stocks' ? undefined : { status: 404, reason: 'no such cluster: the replay serves /stocks' };
    },

    session(ctx: SessionContext): WireSession {
      const tickers = new Set<string>();
      let all = false;
      let authed = false;
      const ping = setInterval(() => ctx.ws.ping(), opts.pingMs ?? 5000);
      ctx.send(status('connected', 'Connected Successfully'));

      ctx.ws.on('message', (data) => {
        let req: { action?: unknown; params?: unknown };
        try {
          req = JSON.parse(data.toString()) as typeof req;
        } catch {
          ctx.send(status('error', 'invalid JSON'));
          return;
        }
        if (req === null || typeof req !== 'object' || typeof req.params !== 'string') {
          ctx.send(status('error', 'expected {"action": "auth" | "subscribe" | "unsubscribe", "params": "<text>"}'));
          return;
        }
        // the key is in this message: nothing of it is logged
        if (req.action === 'auth') {
          if (opts.token !== undefined && req.params !== opts.token) {
            ctx.log.info('auth_failed: a login with another key');
            ctx.send(status('auth_failed', 'authentication failed'));
            ctx.ws.close(1008, 'authentication failed');
            return;
          }
          authed = true;
          ctx.send(status('auth_success', 'authenticated'));
          return;
        }
        if (req.action !== 'subscribe' && req.action !== 'unsubscribe') {
          ctx.send(status('error', `unknown action ${JSON.stringify(String(req.action)).slice(0, 40)}: auth, subscribe or unsubscribe`));
          return;
        }
        if (!authed) {
          ctx.send(status('error', 'log in first: send {"action":"auth","params":"<key>"} before subscribing'));
          return;
        }
        const replies: object[] = [];
        for (const param of req.params
          .split(',')
          .map((p) => p.trim())
          .filter(Boolean)) {
          const m = CHANNEL.exec(param);
          if (!m) {
            replies.push({
              ev: 'status',
              status: 'error',
              message: `invalid subscription ${JSON.stringify(param).slice(0, 40)}: e.g. T.AAPL`,
            });
            continue;
          }
          // only trades (T) are replayed; other channels are taken and stay quiet
          if (m[1] === 'T') {
            const on = req.action === 'subscribe';
            if (m[2] === '*') all = on;
            else if (on) tickers.add(m[2]!);
            else tickers.delete(m[2]!);
          }
          replies.push({
            ev: 'status',
            status: 'success',
            message: `${req.action === 'subscribe' ? 'subscribed to' : 'unsubscribed to'}: ${param}`,
          });
        }
        if (replies.length) ctx.send(JSON.stringify(replies));
        if (all || tickers.size > 0) ctx.subscribed();
      });

      return {
        wants: (symbol) => (symbol === undefined ? all || tickers.size > 0 : all || tickers.has(symbol)),
        subscriptions: () => [...(all ? ['T.*'] : []), ...[...tickers].map((s) => `T.${s}`)],
        encode: (indexes, times) => arrayFrame(tape, events, indexes, times, (ms) => jsonValue(ms)),
        whole: () => undefined,
        end: () => clearInterval(ping),
      };
    },
  };
}

/** One tape trade as a Massive trade event, in two parts around its time t. */
function eventParts(tr: TapeTrade, q: number, serial: number): [string, string] {
  const c = massiveConditions(tr.c);
  return [
    `{"ev":"T","sym":${JSON.stringify(tr.s)},"i":"${serial}","p":${jsonValue(tr.p)},"s":${jsonValue(tr.v)}${c.length ? `,"c":[${c.join(',')}]` : ''},"t":`,
    `,"q":${q}}`,
  ];
}
