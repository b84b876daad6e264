import { isRawFrame, isRawTrade, type TapeItem, type TapeTrade } from '@candlewick/common';
import { alpacaConditions, alpacaSubMs, alpacaTime } from '@candlewick/core';
import { arrayFrame, jsonValue, type SessionContext, type Wire, type WireSession } from './wire.js';

export interface AlpacaWireOptions {
  /** a WebSocket ping frame this often (5 s), so a client's stale-feed watchdog sees a live socket in a quiet stretch */
  pingMs?: number;
  /** when set, the auth message's key must be this, else 402 auth failed and the connection is closed */
  token?: string;
  /** when set, the auth message's secret must be this, else 402 auth failed and the connection is closed */
  secret?: string;
}

const error = (code: number, msg: string): string => JSON.stringify([{ T: 'error', code, msg }]);

/** A stock symbol as a trades subscription may name one, or all of them (*). */
const SYMBOL = /^(\*|[A-Za-z0-9][A-Za-z0-9./-]{0,19})$/;

/**
 * Alpaca's stocks market-data stream (v2), at /v2/iex or /v2/sip: [{"T":"success","msg":"connected"}]
 * on connect; {"action":"auth","key","secret"} answered [{"T":"success","msg":"authenticated"}], or
 * 402 auth failed (and the connection closed) when the stand-in has a key or a secret and the login
 * does not carry it; a second login 403; {"action":"subscribe"|"unsubscribe","trades":[…]} answered
 * with the subscription as it now stands ({"T":"subscription","trades","quotes","bars"}; before the
 * login, 401 not authenticated); then the subscribed symbols' trades as JSON arrays of
 * {"T":"t","S","i","p","s","t","c"}: i counts every trade of the tape from 1, t is RFC-3339 with
 * nanoseconds (sub-millisecond digits that a reader cuts), c the tape's condition names as the
 * SIP's letters (ALPACA_CONDITION_LETTERS, in core). The tape keeps no exchange or tape letter, so x and z
 * are left out. A *.frames tape's lines go out verbatim (corrections {"T":"c"} and cancels
 * {"T":"x"} for tests). A WebSocket ping every pingMs keeps a quiet connection alive.
 */
export function alpacaWire(tape: readonly TapeItem[], opts: AlpacaWireOptions): Wire {
  // each trade's message, cut at its time so a shifted time costs one concatenation: made once
  let serial = 0;
  const events = tape.map((tr): [string, string] | undefined => {
    if (isRawFrame(tr) || isRawTrade(tr)) return undefined;
    serial++;
    return eventParts(tr, serial);
  });

  return {
    refuse(url) {
      const path = new URL(url, 'ws://x').pathname.replace(/\/+$/, '');
      return path === '/v2/iex' || path === '/v2/sip'
        ? undefined
        : { status: 404, reason: 'no such feed: the replay serves /v2/iex and /v2/sip' };
    },

    session(ctx: SessionContext): WireSession {
      const symbols = new Set<string>();
      let all = false;
      let authed = false;
      const ping = setInterval(() => ctx.ws.ping(), opts.pingMs ?? 5000);
      ctx.send(JSON.stringify([{ T: 'success', msg: 'connected' }]));

      ctx.ws.on('message', (data) => {
        let req: { action?: unknown; key?: unknown; secret?: unknown; trades?: unknown };
        try {
          req = JSON.parse(data.toString()) as typeof req;
        } catch {
          ctx.send(error(400, 'invalid syntax'));
          return;
        }
        if (req === null || typeof req !== 'object') {
          ctx.send(error(400, 'invalid syntax'));
          return;
        }
        // the key and secret are in this message: nothing of them is logged
        if (req.action === 'auth') {
          if (authed) {
            ctx.send(error(403, 'already authenticated'));
            return;
          }
          if ((opts.token !== undefined && req.key !== opts.token) || (opts.secret !== undefined && req.secret !== opts.secret)) {
            ctx.log.info('auth failed: a login with another key or secret');
            ctx.send(error(402, 'auth failed'));
            ctx.ws.close(1008, 'auth failed');
            return;
          }
          authed = true;
          ctx.send(JSON.stringify([{ T: 'success', msg: 'authenticated' }]));
          return;
        }
        if (req.action !== 'subscribe' && req.action !== 'unsubscribe') {
          ctx.send(error(400, 'invalid syntax'));
          return;
        }
        if (!authed) {
          ctx.send(error(401, 'not authenticated'));
          return;
        }
        const trades = req.trades ?? [];
        if (!Array.isArray(trades) || !trades.every((s) => typeof s === 'string' && SYMBOL.test(s))) {
          ctx.send(error(400, 'invalid syntax'));
          return;
        }
        for (const s of trades as string[]) {
          const on = req.action === 'subscribe';
          if (s === '*') all = on;
          else if (on) symbols.add(s);
          else symbols.delete(s);
        }
        ctx.send(JSON.stringify([{ T: 'subscription', trades: [...(all ? ['*'] : []), ...symbols], quotes: [], bars: [] }]));
        if (all || symbols.size > 0) ctx.subscribed();
      });

      return {
        wants: (symbol) => (symbol === undefined ? all || symbols.size > 0 : all || symbols.has(symbol)),
        subscriptions: () => [...(all ? ['*'] : []), ...symbols],
        encode: (indexes, times) => arrayFrame(tape, events, indexes, times, (ms, i) => JSON.stringify(alpacaTime(ms, alpacaSubMs(i)))),
        whole: () => undefined,
        end: () => clearInterval(ping),
      };
    },
  };
}

/** One tape trade as an Alpaca trade message, in two parts around its time t. */
function eventParts(tr: TapeTrade, serial: number): [string, string] {
  const c = alpacaConditions(tr.c);
  return [
    `{"T":"t","S":${JSON.stringify(tr.s)},"i":${serial},"p":${jsonValue(tr.p)},"s":${jsonValue(tr.v)},"t":`,
    `${c.length ? `,"c":${JSON.stringify(c)}` : ''}}`,
  ];
}
