import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TapeTrade } from '@candlewick/common';
import {
  PRICE_DIGITS,
  STOCK_TICKER,
  VOLUME_DIGITS,
  alpacaConditions,
  alpacaSubMs,
  alpacaTime,
  binanceSymbol,
  toScaled,
} from '@candlewick/core';

/** An answer the server gives instead of the real one, `times` times, to requests whose path matches. */
export interface Fault {
  path: RegExp;
  status: number;
  times: number;
  headers?: Record<string, string>;
  body?: string;
}

export interface ProviderServerOptions {
  host?: string;
  port?: number;
  /** the Finnhub token it accepts (X-Finnhub-Token header) */
  finnhubToken?: string;
  /** the Massive key it accepts (Authorization: Bearer) */
  massiveKey?: string;
  /** the Alpaca key id and secret it accepts (APCA-API-KEY-ID, APCA-API-SECRET-KEY); neither set: any */
  alpacaKey?: string;
  alpacaSecret?: string;
  /** page size of /v3/trades and aggregates (next_url beyond), of Alpaca's trades and bars (next_page_token beyond), and the most Binance's endpoints answer */
  pageSize?: number;
  faults?: Fault[];
}

interface Minute {
  t: number;
  o: number;
  h: number;
  l: number;
  c: number;
  v: number;
  pv: number;
  n: number;
}

/**
 * A local HTTP server with the history providers' REST shapes, computed from a recorded tape:
 * Finnhub /api/v1/stock/candle (OHLCV, no VWAP or count), Massive /v2/aggs (with vw and n) and
 * /v3/trades (ticks with SIP timestamps and sequence numbers, paginated by next_url), Binance
 * /api/v3/klines and /api/v3/aggTrades (no key; Binance's limits and error shape), Alpaca
 * /v2/stocks/{symbol}/trades and /bars (the two key headers, page_token). Faults make it
 * answer 403, 429 with Retry-After, 500 or a malformed body. For tests and demos; nothing here
 * reaches the internet.
 */
export class ProviderServer {
  private server: Server | undefined;
  private base = '';
  private readonly bySymbol = new Map<string, { tr: TapeTrade; seq: number }[]>();
  /** every request: path, query (without the leading ?), status, time */
  readonly requests: { path: string; query: string; status: number; at: number }[] = [];

  constructor(
    tape: readonly TapeTrade[],
    private readonly opts: ProviderServerOptions = {},
  ) {
    tape.forEach((tr, seq) => {
      if (!this.bySymbol.has(tr.s)) this.bySymbol.set(tr.s, []);
      this.bySymbol.get(tr.s)!.push({ tr, seq });
    });
  }

  async start(): Promise<string> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.opts.port ?? 0, this.opts.host ?? '127.0.0.1', () => {
        this.server!.off('error', reject);
        resolve();
      });
    });
    const { port } = this.server.address() as AddressInfo;
    this.base = `http://${this.opts.host ?? '127.0.0.1'}:${port}`;
    return this.base;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private send(res: ServerResponse, path: string, status: number, body: string, headers: Record<string, string> = {}): void {
    this.requests.push({ path, query: this.query, status, at: Date.now() });
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(body);
  }

  /** the query of the request being answered (answers are made synchronously, one at a time) */
  private query = '';

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', this.base);
    const path = url.pathname;
    this.query = url.search.slice(1);
    const fault = this.opts.faults?.find((f) => f.times > 0 && f.path.test(path));
    if (fault) {
      fault.times--;
      return this.send(res, path, fault.status, fault.body ?? JSON.stringify({ error: `fault ${fault.status}` }), fault.headers);
    }
    let m: RegExpExecArray | null;
    if (path === '/api/v3/klines' || path === '/api/v3/aggTrades') return this.binance(res, path, url.searchParams);
    if ((m = /^\/v2\/stocks\/([^/]+)\/(trades|bars)$/.exec(path)))
      return this.alpaca(req, res, path, decodeURIComponent(m[1]!), m[2]!, url.searchParams);
    if (path === '/api/v1/stock/candle') {
      if (req.headers['x-finnhub-token'] !== this.opts.finnhubToken) return this.send(res, path, 401, '{"error":"Invalid API key"}');
      const q = url.searchParams;
      const minutes = this.minutes(q.get('symbol') ?? '', Number(q.get('from')) * 1000, Number(q.get('to')) * 1000);
      if (minutes.length === 0) return this.send(res, path, 200, '{"s":"no_data"}');
      return this.send(
        res,
        path,
        200,
        JSON.stringify({
          s: 'ok',
          t: minutes.map((x) => x.t / 1000),
          o: minutes.map((x) => x.o),
          h: minutes.map((x) => x.h),
          l: minutes.map((x) => x.l),
          c: minutes.map((x) => x.c),
          v: minutes.map((x) => x.v),
        }),
      );
    }
    if (req.headers.authorization !== `Bearer ${this.opts.massiveKey}`)
      return this.send(res, path, 401, '{"status":"ERROR","error":"Unknown API Key"}');
    if ((m = /^\/v2\/aggs\/ticker\/([^/]+)\/range\/1\/minute\/(\d+)\/(\d+)$/.exec(path))) {
      const results = this.minutes(decodeURIComponent(m[1]!), Number(m[2]), Number(m[3])).map((x) => ({
        t: x.t,
        o: x.o,
        h: x.h,
        l: x.l,
        c: x.c,
        v: x.v,
        vw: x.pv / x.v,
        n: x.n,
      }));
      return this.send(res, path, 200, JSON.stringify({ status: 'OK', resultsCount: results.length, results }));
    }
    if ((m = /^\/v3\/trades\/([^/]+)$/.exec(path))) {
      const q = url.searchParams;
      const gte = Number(BigInt(q.get('timestamp.gte') ?? '0') / 1_000_000n);
      const lt = Number(BigInt(q.get('timestamp.lt') ?? '0') / 1_000_000n);
      const cursor = Number(q.get('cursor') ?? '0');
      const limit = Math.min(Number(q.get('limit') ?? '1000'), this.opts.pageSize ?? 50_000);
      const all = (this.bySymbol.get(decodeURIComponent(m[1]!)) ?? []).filter(({ tr }) => tr.t >= gte && tr.t < lt);
      const page = all.slice(cursor, cursor + limit);
      const next = new URL(url);
      next.searchParams.set('cursor', String(cursor + limit));
      return this.send(
        res,
        path,
        200,
        JSON.stringify({
          status: 'OK',
          results: page.map(({ tr, seq }) => ({
            sip_timestamp: tr.t * 1e6,
            participant_timestamp: tr.t * 1e6,
            price: Number(tr.p),
            size: tr.v,
            sequence_number: seq,
          })),
          ...(cursor + limit < all.length ? { next_url: next.toString() } : {}),
        }),
      );
    }
    return this.send(res, path, 404, '{"error":"not found"}');
  }

  /**
   * Alpaca's /v2/stocks/{symbol}/trades and /v2/stocks/{symbol}/bars (timeframe 1Min) from the tape:
   * with keys set, both headers must carry them (else 403, as Alpaca answers a refused key);
   * start and end inclusive, RFC-3339 to the nanosecond; limit 1..10,000 (default 1,000; at most
   * pageSize a page), next_page_token beyond; feed iex, sip, … (any serves the tape); a request it
   * cannot take is 422 with Alpaca's {"code","message"}. A trade is {"t","p","s","c","i"}: i its
   * place among the tape's trades from 1, t its time with the nanoseconds the replay server gives
   * it (alpacaSubMs), p the tape's price text, c its condition names as the SIP's letters; the tape
   * keeps no exchange, so x and z are left out. A bar is the tape's minute with VWAP vw and count n.
   */
  private alpaca(req: IncomingMessage, res: ServerResponse, path: string, symbol: string, what: string, q: URLSearchParams): void {
    const refuse = (message: string) => this.send(res, path, 422, JSON.stringify({ code: 42210000, message }));
    const { alpacaKey, alpacaSecret } = this.opts;
    if (
      (alpacaKey !== undefined || alpacaSecret !== undefined) &&
      (req.headers['apca-api-key-id'] !== alpacaKey || req.headers['apca-api-secret-key'] !== alpacaSecret)
    )
      return this.send(res, path, 403, '{"message":"forbidden."}');
    if (!STOCK_TICKER.test(symbol)) return refuse('invalid symbol');
    const feed = q.get('feed');
    if (feed !== null && !['iex', 'sip', 'delayed_sip', 'boats', 'overnight', 'otc'].includes(feed)) return refuse(`invalid feed: ${feed}`);
    const start = q.get('start') === null ? 0n : rfc3339Ns(q.get('start')!);
    if (start === undefined) return refuse('invalid start');
    const end = q.get('end') === null ? BigInt(Number.MAX_SAFE_INTEGER) * 1_000_000n : rfc3339Ns(q.get('end')!);
    if (end === undefined) return refuse('invalid end');
    const limitText = q.get('limit') ?? '1000';
    const limitAsked = /^\d{1,6}$/.test(limitText) ? Number(limitText) : NaN;
    if (!(limitAsked >= 1 && limitAsked <= 10_000)) return refuse('invalid limit: must be between 1 and 10000');
    const limit = Math.min(limitAsked, this.opts.pageSize ?? 10_000);
    const token = q.get('page_token');
    const offset = token === null ? 0 : Number(Buffer.from(token, 'base64url').toString());
    if (!Number.isSafeInteger(offset) || offset < 0) return refuse('invalid page token');
    const sort = q.get('sort') ?? 'asc';
    if (sort !== 'asc' && sort !== 'desc') return refuse('invalid sort');
    let rows: string[];
    if (what === 'trades') {
      rows = [];
      // i and the nanoseconds: the trade's place among all the tape's trades, as the replay server numbers them
      for (const { tr, seq } of this.bySymbol.get(symbol) ?? []) {
        const sub = alpacaSubMs(seq + 1);
        const ns = BigInt(tr.t) * 1_000_000n + BigInt(sub);
        if (ns < start || ns > end) continue;
        const price = /^-?\d+(\.\d+)?([eE][+-]?\d+)?$/.test(tr.p) ? tr.p : String(Number(tr.p));
        rows.push(
          `{"t":${JSON.stringify(alpacaTime(tr.t, sub))},"p":${price},"s":${tr.v},"c":${JSON.stringify(alpacaConditions(tr.c))},"i":${seq + 1}}`,
        );
      }
    } else {
      const timeframe = q.get('timeframe');
      if (timeframe !== '1Min' && timeframe !== '1T') return refuse(`invalid timeframe: ${timeframe ?? 'missing'}`);
      rows = this.minutes(symbol, 0, Number.MAX_SAFE_INTEGER)
        .filter((x) => BigInt(x.t) * 1_000_000n >= start && BigInt(x.t) * 1_000_000n <= end)
        .map((x) =>
          JSON.stringify({
            t: new Date(x.t).toISOString().replace('.000Z', 'Z'),
            o: x.o,
            h: x.h,
            l: x.l,
            c: x.c,
            v: x.v,
            n: x.n,
            vw: x.pv / x.v,
          }),
        );
    }
    if (sort === 'desc') rows.reverse();
    const page = rows.slice(offset, offset + limit);
    const next = offset + limit < rows.length ? JSON.stringify(Buffer.from(String(offset + limit)).toString('base64url')) : 'null';
    return this.send(res, path, 200, `{"${what}":[${page.join(',')}],"symbol":${JSON.stringify(symbol)},"next_page_token":${next}}`);
  }

  /**
   * Binance's /api/v3/klines (1m) and /api/v3/aggTrades from the tape, for the tape's symbols under
   * Binance's names (BINANCE:XRPETH as XRPETH). A kline counts the tape's trades (a tape of
   * aggregate trades: aggregate trades, where Binance counts every fill); an aggregate trade's id is
   * the one recorded (else its place in the tape), and a tape records no fill ids, so f = l = a.
   */
  private binance(res: ServerResponse, path: string, q: URLSearchParams): void {
    const refuse = (code: number, msg: string) => this.send(res, path, 400, JSON.stringify({ code, msg }));
    const symbol = q.get('symbol');
    if (!symbol) return refuse(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.");
    const tape = [...this.bySymbol].find(([s]) => binanceSymbol(s) === symbol)?.[1];
    if (!tape) return refuse(-1121, 'Invalid symbol.');
    const bad = ['startTime', 'endTime', 'fromId', 'limit'].find((n) => q.get(n) !== null && !/^\d{1,20}$/.test(q.get(n)!));
    if (bad) return refuse(-1100, `Illegal characters found in parameter '${bad}'; legal range is '^[0-9]{1,20}$'.`);
    const num = (name: string): number | undefined => (q.get(name) === null ? undefined : Number(q.get(name)));
    const [startTime, endTime, fromId, limitAsked] = [num('startTime'), num('endTime'), num('fromId'), num('limit')];
    if (limitAsked !== undefined && (limitAsked < 1 || limitAsked > 1000))
      return refuse(-1130, "Invalid data sent for a parameter: 'limit'.");
    const limit = Math.min(limitAsked ?? 500, this.opts.pageSize ?? 1000);
    const from = startTime ?? 0;
    const to = endTime ?? Number.MAX_SAFE_INTEGER;
    if (path === '/api/v3/klines') {
      if (q.get('interval') !== '1m') return refuse(-1120, 'Invalid interval.');
      const klines = this.klines(tape, from, to).slice(0, limit);
      return this.send(res, path, 200, JSON.stringify(klines));
    }
    if (fromId !== undefined && (startTime !== undefined || endTime !== undefined))
      return refuse(-1128, 'Combination of optional parameters invalid.');
    if (startTime !== undefined && endTime !== undefined && endTime - startTime >= 3_600_000)
      return refuse(-1127, 'More than 1 hours between startTime and endTime.');
    const all = tape
      .map(({ tr, seq }) => ({ tr, id: tr.i !== undefined && /^\d+$/.test(tr.i) ? Number(tr.i) : seq }))
      .filter(({ tr, id }) => (fromId !== undefined ? id >= fromId : tr.t >= from && tr.t <= to));
    // none of fromId, startTime, endTime: the most recent
    const recent = fromId === undefined && startTime === undefined && endTime === undefined;
    const trades = (recent ? all.slice(-limit) : all.slice(0, limit)).map(({ tr, id }) => ({
      a: id,
      p: tr.p,
      q: tr.v.toFixed(8),
      f: id,
      l: id,
      T: tr.t,
      m: tr.a === 's',
      M: true,
    }));
    return this.send(res, path, 200, JSON.stringify(trades));
  }

  /**
   * Binance's 1-minute klines of [from, to] from the tape's trades, exact decimals: [open time, o, h,
   * l, c, volume, close time, quote volume, trades, taker buy volume, taker buy quote volume, "0"];
   * a minute without trades between two with trades is Binance's flat kline at the last close.
   */
  private klines(tape: readonly { tr: TapeTrade }[], from: number, to: number): unknown[] {
    interface K {
      t: number;
      o: string;
      h: string;
      l: string;
      c: string;
      v: bigint;
      pv: bigint;
      n: number;
      bv: bigint;
      bpv: bigint;
    }
    const byMinute = new Map<number, K>();
    for (const { tr } of tape) {
      const t = Math.floor(tr.t / 60_000) * 60_000;
      const v = toScaled(tr.v, VOLUME_DIGITS);
      const pv = toScaled(tr.p, PRICE_DIGITS) * v;
      const buy = tr.a === 'b';
      const k = byMinute.get(t);
      if (!k) byMinute.set(t, { t, o: tr.p, h: tr.p, l: tr.p, c: tr.p, v, pv, n: 1, bv: buy ? v : 0n, bpv: buy ? pv : 0n });
      else {
        if (Number(tr.p) > Number(k.h)) k.h = tr.p;
        if (Number(tr.p) < Number(k.l)) k.l = tr.p;
        k.c = tr.p;
        k.v += v;
        k.pv += pv;
        k.n++;
        if (buy) {
          k.bv += v;
          k.bpv += pv;
        }
      }
    }
    const minutes = [...byMinute.keys()].sort((a, b) => a - b);
    const out: unknown[] = [];
    let last: K | undefined;
    for (let t = minutes[0] ?? 0; minutes.length && t <= minutes.at(-1)!; t += 60_000) {
      const k = byMinute.get(t) ?? { t, o: last!.c, h: last!.c, l: last!.c, c: last!.c, v: 0n, pv: 0n, n: 0, bv: 0n, bpv: 0n };
      last = k;
      if (t < from || t > to) continue;
      const pvDigits = PRICE_DIGITS + VOLUME_DIGITS;
      out.push([
        t,
        k.o,
        k.h,
        k.l,
        k.c,
        decimalText(k.v, VOLUME_DIGITS),
        t + 59_999,
        decimalText(k.pv, pvDigits),
        k.n,
        decimalText(k.bv, VOLUME_DIGITS),
        decimalText(k.bpv, pvDigits),
        '0',
      ]);
    }
    return out;
  }

  /** 1-minute OHLCV (with Σp·v and count) of a symbol, for the minutes that start in [from, to]. */
  private minutes(symbol: string, from: number, to: number): Minute[] {
    const out = new Map<number, Minute>();
    for (const { tr } of this.bySymbol.get(symbol) ?? []) {
      const t = Math.floor(tr.t / 60_000) * 60_000;
      if (t < from || t > to) continue;
      const p = Number(tr.p);
      const cur = out.get(t);
      if (!cur) out.set(t, { t, o: p, h: p, l: p, c: p, v: tr.v, pv: p * tr.v, n: 1 });
      else {
        cur.h = Math.max(cur.h, p);
        cur.l = Math.min(cur.l, p);
        cur.c = p;
        cur.v += tr.v;
        cur.pv += p * tr.v;
        cur.n++;
      }
    }
    return [...out.values()].sort((a, b) => a.t - b.t);
  }
}

/** An RFC-3339 time with up to nanoseconds as Unix ns (Alpaca's start and end); undefined when it is not one. */
function rfc3339Ns(text: string): bigint | undefined {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/i.exec(text);
  if (!m) return undefined;
  const whole = Date.parse(`${m[1]}${m[3]!.toUpperCase()}`);
  if (!Number.isFinite(whole)) return undefined;
  return BigInt(whole) * 1_000_000n + BigInt((m[2] ?? '').padEnd(9, '0'));
}

/** A scaled decimal as text with at least 8 decimals, as Binance writes them, and no digit lost. */
function decimalText(x: bigint, digits: number): string {
  const s = x.toString().padStart(digits + 1, '0');
  const frac = s.slice(-digits).replace(/0+$/, '').padEnd(8, '0');
  return `${s.slice(0, -digits)}.${frac}`;
}
