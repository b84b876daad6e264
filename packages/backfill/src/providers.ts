import { z } from 'zod';
import type { Config, Logger } from '@candlewick/common';
import { BAR_FLAGS, type Candle, type ProviderTrade } from '@candlewick/core';
import { ProviderError, TokenBucket, getJson, type HttpOptions } from './http.js';

/**
 * A source of history for one symbol and span [fromMs, toMs]. A provider gives candles, trades or
 * both; `flag` is the BAR_FLAGS source bit its data carries into bars.
 */
export interface Provider {
  readonly name: string;
  candles?(symbol: string, fromMs: number, toMs: number): Promise<Candle[]>;
  trades?(symbol: string, fromMs: number, toMs: number): Promise<ProviderTrade[]>;
  readonly candleFlag: number;
  readonly tradeFlag: number;
}

const finnhubCandles = z.union([
  z.object({ s: z.literal('no_data') }).passthrough(),
  z.object({
    s: z.literal('ok'),
    t: z.array(z.number()),
    o: z.array(z.number()),
    h: z.array(z.number()),
    l: z.array(z.number()),
    c: z.array(z.number()),
    v: z.array(z.number()),
  }),
]);

function malformed(provider: string, what: string, err: z.ZodError): ProviderError {
  const issue = err.issues[0];
  return new ProviderError(
    provider,
    200,
    `malformed body for ${what}: ${issue ? `${issue.path.join('.') || 'body'}: ${issue.message}` : 'unexpected shape'}`,
    false,
  );
}

/**
 * Finnhub /stock/candle at resolution 1: OHLCV per minute, no VWAP, no trade count (a premium
 * endpoint: keys without access get HTTP 403). The key goes in the X-Finnhub-Token header.
 */
export class FinnhubCandles implements Provider {
  readonly name = 'finnhub';
  readonly candleFlag = BAR_FLAGS.FINNHUB_CANDLES;
  readonly tradeFlag = 0;
  constructor(
    private readonly base: string,
    private readonly http: HttpOptions,
  ) {}

  async candles(symbol: string, fromMs: number, toMs: number): Promise<Candle[]> {
    const url = `${this.base}/stock/candle?symbol=${encodeURIComponent(symbol)}&resolution=1&from=${Math.floor(fromMs / 1000)}&to=${Math.ceil(toMs / 1000)}`;
    const parsed = finnhubCandles.safeParse(await getJson(url, this.http));
    if (!parsed.success) throw malformed(this.name, `/stock/candle ${symbol}`, parsed.error);
    const b = parsed.data;
    if (b.s !== 'ok') return [];
    const n = b.t.length;
    if ([b.o, b.h, b.l, b.c, b.v].some((a) => a.length !== n)) {
      throw new ProviderError(this.name, 200, `malformed body for /stock/candle ${symbol}: arrays of different lengths`, false);
    }
    return b.t.map((t, i) => ({ start: t * 1000, open: b.o[i]!, high: b.h[i]!, low: b.l[i]!, close: b.c[i]!, volume: b.v[i]! }));
  }
}

const massiveAggs = z.object({
  results: z
    .array(
      z.object({
        t: z.number(),
        o: z.number(),
        h: z.number(),
        l: z.number(),
        c: z.number(),
        v: z.number(),
        vw: z.number().optional(),
        n: z.number().optional(),
      }),
    )
    .optional(),
  next_url: z.string().optional(),
});
const massiveTrades = z.object({
  results: z
    .array(
      z.object({
        sip_timestamp: z.number(),
        price: z.number(),
        size: z.number(),
        sequence_number: z.number(),
        conditions: z.array(z.number()).optional(),
      }),
    )
    .optional(),
  next_url: z.string().optional(),
});

/**
 * Massive (formerly Polygon.io): minute aggregates with VWAP (`vw`) and trade counts (`n`), and
 * tick-level trades with SIP timestamps and sequence numbers (/v3/trades). Pages are followed via
 * next_url. The key goes in the Authorization header.
 */
export class Massive implements Provider {
  readonly name = 'massive';
  readonly candleFlag = BAR_FLAGS.MASSIVE_CANDLES;
  readonly tradeFlag = BAR_FLAGS.MASSIVE_TRADES;
  constructor(
    private readonly base: string,
    private readonly http: HttpOptions,
  ) {}

  async candles(symbol: string, fromMs: number, toMs: number): Promise<Candle[]> {
    const out: Candle[] = [];
    let url: string | undefined =
      `${this.base}/v2/aggs/ticker/${encodeURIComponent(symbol)}/range/1/minute/${fromMs}/${toMs}?adjusted=false&sort=asc&limit=50000`;
    while (url) {
      const parsed = massiveAggs.safeParse(await getJson(url, this.http));
      if (!parsed.success) throw malformed(this.name, `aggregates of ${symbol}`, parsed.error);
      for (const r of parsed.data.results ?? [])
        out.push({ start: r.t, open: r.o, high: r.h, low: r.l, close: r.c, volume: r.v, vwap: r.vw, n: r.n });
      url = parsed.data.next_url;
    }
    return out;
  }

  async trades(symbol: string, fromMs: number, toMs: number): Promise<ProviderTrade[]> {
    const out: ProviderTrade[] = [];
    const gte = BigInt(fromMs) * 1_000_000n;
    const lt = (BigInt(toMs) + 1n) * 1_000_000n;
    let url: string | undefined =
      `${this.base}/v3/trades/${encodeURIComponent(symbol)}?timestamp.gte=${gte}&timestamp.lt=${lt}&order=asc&sort=timestamp&limit=50000`;
    while (url) {
      const parsed = massiveTrades.safeParse(await getJson(url, this.http));
      if (!parsed.success) throw malformed(this.name, `trades of ${symbol}`, parsed.error);
      for (const r of parsed.data.results ?? []) {
        out.push({
          t: nsToMs(r.sip_timestamp),
          p: String(r.price),
          v: r.size,
          seq: r.sequence_number,
          c: (r.conditions ?? []).map(String),
        });
      }
      url = parsed.data.next_url;
    }
    out.sort((a, b) => a.t - b.t || a.seq - b.seq);
    return out;
  }
}

/**
 * Milliseconds of a nanosecond timestamp read from JSON. Past 2^53 the number arrives rounded (to a
 * multiple of 256 ns here), so a trade on a millisecond boundary may read a few ns short of it.
 */
export function nsToMs(ns: number): number {
  const ms = Math.floor(ns / 1e6);
  return (ms + 1) * 1e6 - ns <= 256 ? ms + 1 : ms;
}

/** The provider BACKFILL_PROVIDER names, with its key from the environment and its rate limit. */
export function makeProvider(cfg: Config, log: Logger, signal?: AbortSignal): Provider {
  const common = { bucket: new TokenBucket(cfg.backfillRate), retries: cfg.backfillRetries, log, signal };
  if (cfg.backfillProvider === 'massive') {
    if (!cfg.massiveApiKey)
      throw new ProviderError('massive', 0, 'MASSIVE_API_KEY is not set; set it, or BACKFILL_PROVIDER=finnhub, or BACKFILL=off', true);
    return new Massive(cfg.massiveRestUrl.replace(/\/$/, ''), {
      ...common,
      provider: 'massive',
      headers: { authorization: `Bearer ${cfg.massiveApiKey}` },
    });
  }
  if (!cfg.finnhubToken)
    throw new ProviderError('finnhub', 0, 'FINNHUB_TOKEN is not set; backfill from Finnhub needs it (or set BACKFILL=off)', true);
  return new FinnhubCandles(cfg.finnhubRestUrl.replace(/\/$/, ''), {
    ...common,
    provider: 'finnhub',
    headers: { 'x-finnhub-token': cfg.finnhubToken },
  });
}
