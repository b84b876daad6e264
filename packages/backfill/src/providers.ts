import { z } from 'zod';
import type { Config, Logger } from '@candlewick/common';
import { BAR_FLAGS, alpacaTime, binanceSymbol, rfc3339Ms, type Candle, type ProviderTrade } from '@candlewick/core';
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

const binanceKlines = z.array(
  z.tuple([z.number(), z.string(), z.string(), z.string(), z.string(), z.string(), z.number(), z.string(), z.number()]).rest(z.unknown()),
);
const binanceAggTrades = z.array(z.object({ a: z.number(), p: z.string(), q: z.string(), T: z.number() }).passthrough());
const binanceError = z.object({ code: z.number(), msg: z.string() });

/** Binance answers at most this many klines or aggregate trades a request. */
const BINANCE_LIMIT = 1000;
/** aggTrades with startTime and endTime: the span must be less than an hour. */
const BINANCE_SPAN_MS = 3_600_000;

/**
 * Binance spot market data (/api/v3, no key): 1-minute klines with quote volume (so VWAP) and trade
 * counts, and aggregate trades (/api/v3/aggTrades: a taker order's fills at one price as one trade,
 * with its id). A symbol is configured as BINANCE:XRPETH or XRPETH; Binance's name is XRPETH.
 */
export class BinanceHistory implements Provider {
  readonly name = 'binance';
  readonly candleFlag = BAR_FLAGS.BINANCE_CANDLES;
  readonly tradeFlag = BAR_FLAGS.BINANCE_TRADES;
  constructor(
    private readonly base: string,
    private readonly http: HttpOptions,
    /** klines or aggregate trades a request (Binance's most: 1,000) */
    private readonly limit = BINANCE_LIMIT,
  ) {}

  private get(symbol: string, path: string, query: Record<string, number | string>): Promise<unknown> {
    const q = Object.entries(query)
      .map(([k, v]) => `&${k}=${v}`)
      .join('');
    return getJson(`${this.base}${path}?symbol=${encodeURIComponent(binanceSymbol(symbol))}${q}`, {
      ...this.http,
      refusal: (status, body, retryAfter, where) => binanceRefusal(symbol, status, body, retryAfter, where),
    });
  }

  /** Klines of the minutes that start in [fromMs, toMs], `limit` a page; Binance's zero-volume minutes left out. */
  async candles(symbol: string, fromMs: number, toMs: number): Promise<Candle[]> {
    const out: Candle[] = [];
    for (let start = fromMs; start <= toMs;) {
      const parsed = binanceKlines.safeParse(
        await this.get(symbol, '/api/v3/klines', { interval: '1m', startTime: start, endTime: toMs, limit: this.limit }),
      );
      if (!parsed.success) throw malformed(this.name, `klines of ${symbol}`, parsed.error);
      for (const [t, o, h, l, c, v, , quote, n] of parsed.data) {
        // a minute without trades: Binance's flat kline, not a bar
        if (n === 0 || Number(v) === 0) continue;
        out.push({
          start: t,
          open: Number(o),
          high: Number(h),
          low: Number(l),
          close: Number(c),
          volume: Number(v),
          vwap: Number(quote) / Number(v),
          n,
        });
      }
      const last = parsed.data.at(-1);
      if (parsed.data.length < this.limit || !last) break;
      start = last[0] + 60_000;
    }
    return out;
  }

  /**
   * Aggregate trades with T in [fromMs, toMs]: the first page of each hour by time (Binance takes
   * startTime..endTime under an hour), then on by id (fromId) while pages come full.
   */
  async trades(symbol: string, fromMs: number, toMs: number): Promise<ProviderTrade[]> {
    const out: ProviderTrade[] = [];
    const take = (page: z.infer<typeof binanceAggTrades>): void => {
      for (const r of page) if (r.T >= fromMs && r.T <= toMs) out.push({ t: r.T, p: r.p, v: Number(r.q), seq: r.a, c: [] });
    };
    const read = async (query: Record<string, number>) => {
      const parsed = binanceAggTrades.safeParse(await this.get(symbol, '/api/v3/aggTrades', { ...query, limit: this.limit }));
      if (!parsed.success) throw malformed(this.name, `aggregate trades of ${symbol}`, parsed.error);
      return parsed.data;
    };
    for (let start = fromMs; start <= toMs; start += BINANCE_SPAN_MS) {
      let page = await read({ startTime: start, endTime: Math.min(start + BINANCE_SPAN_MS - 1, toMs) });
      take(page);
      if (page.length < this.limit) continue;
      // a full page: on by id to the end of the span (ids rise with time)
      while (page.length === this.limit && page.at(-1)!.T <= toMs) {
        page = await read({ fromId: page.at(-1)!.a + 1 });
        take(page);
      }
      break;
    }
    out.sort((a, b) => a.t - b.t || a.seq - b.seq);
    return out;
  }
}

/** Binance's refusals ({"code":…,"msg":…} with 400, 403, 418, 451) as messages that say what to do. */
function binanceRefusal(symbol: string, status: number, body: string, retryAfter: string | null, where: string): ProviderError | undefined {
  let parsed: z.infer<typeof binanceError> | undefined;
  try {
    parsed = binanceError.parse(JSON.parse(body));
  } catch {
    parsed = undefined;
  }
  const said = parsed ? ` (Binance ${parsed.code}: ${parsed.msg})` : '';
  if (parsed?.code === -1121)
    return new ProviderError(
      'binance',
      status,
      `Binance has no symbol ${binanceSymbol(symbol)}${binanceSymbol(symbol) !== symbol ? ` (configured as ${symbol})` : ''}${said}: Binance spells a pair as base and quote asset in capitals with no separator, e.g. XRPETH or BTCUSDT; configure it as BINANCE:XRPETH or XRPETH`,
      true,
      symbol,
    );
  if (status === 418) {
    const secs = retryAfter !== null && retryAfter.trim() !== '' ? ` for ${retryAfter.trim()} s` : '';
    return new ProviderError(
      'binance',
      418,
      `Binance has banned this IP address${secs} (HTTP 418) for sending requests after rate-limit refusals: wait, and lower BACKFILL_RATE`,
      true,
    );
  }
  if (status === 451 || status === 403)
    return new ProviderError(
      'binance',
      status,
      `HTTP ${status} from ${where}: Binance refuses requests from this location (or its firewall refused this request)${said}; Binance's terms restrict some countries, so run candlewick where they allow it, or set BINANCE_REST_URL to an endpoint you may use`,
      true,
    );
  if (parsed) return new ProviderError('binance', status, `HTTP ${status} from ${where}: the request was refused${said}`, true);
  return undefined;
}

const alpacaTrades = z.object({
  trades: z
    .array(
      z.object({
        t: z.string(),
        p: z.number(),
        s: z.number(),
        c: z.array(z.string()).nullish(),
        i: z.number().optional(),
      }),
    )
    .nullish(),
  next_page_token: z.string().nullish(),
});
const alpacaBars = z.object({
  bars: z
    .array(
      z.object({
        t: z.string(),
        o: z.number(),
        h: z.number(),
        l: z.number(),
        c: z.number(),
        v: z.number(),
        n: z.number().optional(),
        vw: z.number().optional(),
      }),
    )
    .nullish(),
  next_page_token: z.string().nullish(),
});
const alpacaError = z.object({ message: z.string() }).passthrough();

/** Alpaca answers at most this many trades or bars a request. */
const ALPACA_LIMIT = 10_000;
/** The feeds Alpaca's historical stock data takes (`feed`), as the stream's path names them (/v2/iex, /v2/sip). */
const ALPACA_FEEDS = ['iex', 'sip', 'delayed_sip', 'boats', 'overnight'];

/**
 * The `feed` of Alpaca's history that matches the stream ALPACA_WS_URL reads: its last path segment
 * (wss://stream.data.alpaca.markets/v2/iex: iex; /v2/sip: sip), so backfill fills from the trades
 * the live feed would have carried. Another path (a test stream, a proxy): undefined, and the
 * parameter is left out (Alpaca then reads the best feed the key's plan has).
 */
export function alpacaFeed(wsUrl: string): string | undefined {
  let path: string;
  try {
    path = new URL(wsUrl).pathname;
  } catch {
    return undefined;
  }
  const last = path.replace(/\/+$/, '').split('/').pop() ?? '';
  return ALPACA_FEEDS.includes(last) ? last : undefined;
}

/**
 * Alpaca's market-data REST history for US stocks (v2): tick-level trades (/v2/stocks/{symbol}/trades:
 * time t in RFC-3339 with nanoseconds, cut to the millisecond as the live adapter cuts it; price p;
 * size s; the SIP's condition letters c, passed as the live feed passes them; id i) and 1-minute
 * bars (/v2/stocks/{symbol}/bars, timeframe=1Min, raw prices, with VWAP `vw` and trade count `n`),
 * both from the stream's feed (`feed`: iex or sip), followed page by page with next_page_token.
 * The key id and secret go in the APCA-API-KEY-ID and APCA-API-SECRET-KEY headers. Alpaca's trade
 * ids do not increase per symbol, so a trade's sequence is its place in the answer (time order,
 * nanoseconds included).
 */
export class AlpacaHistory implements Provider {
  readonly name = 'alpaca';
  readonly candleFlag = BAR_FLAGS.ALPACA_CANDLES;
  readonly tradeFlag = BAR_FLAGS.ALPACA_TRADES;
  private readonly http: HttpOptions;
  constructor(
    private readonly base: string,
    http: HttpOptions,
    /** the `feed` parameter (alpacaFeed); undefined leaves it out */
    private readonly feed: string | undefined,
    /** trades or bars a request (Alpaca's most: 10,000) */
    private readonly limit = ALPACA_LIMIT,
  ) {
    // words of the headers (the key id, the secret) never reach a message, whatever Alpaca's body says
    const secrets = Object.values(http.headers).filter((v) => v.length >= 4);
    this.http = { ...http, refusal: (status, body, _retryAfter, where) => alpacaRefusal(status, scrub(body, secrets), where) };
  }

  /** Every page of `path` for [fromMs, toMs] (both inclusive, to the nanosecond) in time order. */
  private async *pages(
    symbol: string,
    path: string,
    fromMs: number,
    toMs: number,
    query: Record<string, string> = {},
  ): AsyncGenerator<unknown> {
    let token: string | undefined;
    do {
      const q = new URLSearchParams({
        ...query,
        start: new Date(fromMs).toISOString(),
        end: alpacaTime(toMs, 999_999),
        limit: String(this.limit),
        sort: 'asc',
        ...(this.feed ? { feed: this.feed } : {}),
        ...(token ? { page_token: token } : {}),
      });
      const body = await getJson(`${this.base}/v2/stocks/${encodeURIComponent(symbol)}/${path}?${q}`, this.http);
      yield body;
      const next = (body as { next_page_token?: unknown } | null)?.next_page_token;
      token = typeof next === 'string' && next !== '' ? next : undefined;
    } while (token);
  }

  /** An answer's RFC-3339 time as the live adapter reads it (cut to the ms), or a malformed-body error naming `what`. */
  private timeOf(text: string, what: string): number {
    const t = rfc3339Ms(text);
    if (typeof t !== 'number')
      throw new ProviderError(this.name, 200, `malformed body for ${what}: t ${JSON.stringify(text)} is not an RFC-3339 time`, false);
    return t;
  }

  async trades(symbol: string, fromMs: number, toMs: number): Promise<ProviderTrade[]> {
    const out: ProviderTrade[] = [];
    for await (const body of this.pages(symbol, 'trades', fromMs, toMs)) {
      const parsed = alpacaTrades.safeParse(body);
      if (!parsed.success) throw malformed(this.name, `trades of ${symbol}`, parsed.error);
      for (const r of parsed.data.trades ?? []) {
        const t = this.timeOf(r.t, `trades of ${symbol}`);
        if (t < fromMs || t > toMs) continue;
        // the price as the live adapter reads it: the shortest text of the JSON number
        out.push({ t, p: String(r.p), v: r.s, seq: out.length, c: r.c ?? [] });
      }
    }
    out.sort((a, b) => a.t - b.t || a.seq - b.seq);
    return out;
  }

  async candles(symbol: string, fromMs: number, toMs: number): Promise<Candle[]> {
    const out: Candle[] = [];
    for await (const body of this.pages(symbol, 'bars', fromMs, toMs, { timeframe: '1Min', adjustment: 'raw' })) {
      const parsed = alpacaBars.safeParse(body);
      if (!parsed.success) throw malformed(this.name, `bars of ${symbol}`, parsed.error);
      for (const r of parsed.data.bars ?? []) {
        const start = this.timeOf(r.t, `bars of ${symbol}`);
        if (start < fromMs || start > toMs) continue;
        out.push({ start, open: r.o, high: r.h, low: r.l, close: r.c, volume: r.v, vwap: r.vw, n: r.n });
      }
    }
    return out;
  }
}

function scrub(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) out = out.split(s).join('[redacted]');
  return out;
}

/** Alpaca's refusals ({"message":…}, with a code on some) as messages that say what to do. */
function alpacaRefusal(status: number, body: string, where: string): ProviderError | undefined {
  let said = '';
  try {
    said = alpacaError.parse(JSON.parse(body)).message;
  } catch {
    said = body.trim();
  }
  const quoted = said ? `: ${said.slice(0, 160)}` : '';
  if ((status === 401 || status === 403) && /subscription does not permit|insufficient subscription/i.test(said))
    return new ProviderError(
      'alpaca',
      status,
      `HTTP ${status} from ${where}${quoted}: the key's plan does not include this data; the free plan reads IEX (ALPACA_WS_URL ending /v2/iex) and SIP history older than 15 minutes; not retrying`,
      true,
    );
  if (status === 401 || status === 403)
    return new ProviderError(
      'alpaca',
      status,
      `Alpaca refused ALPACA_API_KEY / ALPACA_API_SECRET (HTTP ${status}${quoted}): check the key id and its secret on your Alpaca dashboard ` +
        '(a paper-trading key reads market data too; a regenerated key has a new secret); not retrying',
      true,
    );
  if (status === 422) {
    const symbol = /symbol/i.test(said) ? /\/v2\/stocks\/([^/]+)\//.exec(where)?.[1] : undefined;
    if (symbol !== undefined)
      return new ProviderError(
        'alpaca',
        422,
        `Alpaca does not take the symbol ${decodeURIComponent(symbol)} (HTTP 422${quoted}): write it as Alpaca does, e.g. AAPL or BRK.A`,
        true,
        decodeURIComponent(symbol),
      );
    return new ProviderError('alpaca', 422, `HTTP 422 from ${where}: Alpaca could not take the request${quoted}`, true);
  }
  return undefined;
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
  // market data needs no key
  if (cfg.backfillProvider === 'binance')
    return new BinanceHistory(cfg.binanceRestUrl.replace(/\/$/, ''), { ...common, provider: 'binance', headers: {} });
  if (cfg.backfillProvider === 'alpaca') {
    if (!cfg.alpacaApiKey || !cfg.alpacaApiSecret)
      throw new ProviderError(
        'alpaca',
        0,
        'ALPACA_API_KEY and ALPACA_API_SECRET are not both set; set them (an Alpaca key id and its secret), or another BACKFILL_PROVIDER, or BACKFILL=off',
        true,
      );
    return new AlpacaHistory(
      cfg.alpacaRestUrl.replace(/\/$/, ''),
      {
        ...common,
        provider: 'alpaca',
        headers: { 'APCA-API-KEY-ID': cfg.alpacaApiKey, 'APCA-API-SECRET-KEY': cfg.alpacaApiSecret },
      },
      alpacaFeed(cfg.alpacaWsUrl),
    );
  }
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
