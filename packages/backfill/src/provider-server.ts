import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TapeTrade } from '@candlewick/common';

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
  /** page size of /v3/trades and aggregates (next_url beyond) */
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
 * /v3/trades (ticks with SIP timestamps and sequence numbers, paginated by next_url). Faults make it
 * answer 403, 429 with Retry-After, 500 or a malformed body. For tests and demos; nothing here
 * reaches the internet.
 */
export class ProviderServer {
  private server: Server | undefined;
  private base = '';
  private readonly bySymbol = new Map<string, { tr: TapeTrade; seq: number }[]>();
  /** every request: path (no query), status, time */
  readonly requests: { path: string; status: number; at: number }[] = [];

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
    await new Promise<void>((resolve) => this.server!.listen(this.opts.port ?? 0, this.opts.host ?? '127.0.0.1', resolve));
    const { port } = this.server.address() as AddressInfo;
    this.base = `http://${this.opts.host ?? '127.0.0.1'}:${port}`;
    return this.base;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private send(res: ServerResponse, path: string, status: number, body: string, headers: Record<string, string> = {}): void {
    this.requests.push({ path, status, at: Date.now() });
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(body);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', this.base);
    const path = url.pathname;
    const fault = this.opts.faults?.find((f) => f.times > 0 && f.path.test(path));
    if (fault) {
      fault.times--;
      return this.send(res, path, fault.status, fault.body ?? JSON.stringify({ error: `fault ${fault.status}` }), fault.headers);
    }
    let m: RegExpExecArray | null;
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
