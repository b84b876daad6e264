import { timingSafeEqual } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import fastifyStatic from '@fastify/static';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import { Queue } from 'bullmq';
import { z } from 'zod';
import {
  ACTIVITY_CSV_HEADER,
  BARS_QUEUE,
  CLOSE_QUEUE,
  listenError,
  correctionsPath,
  csvPath,
  field,
  fileSafeSymbol,
  redisAccess,
  type Component,
  type Config,
  type Health,
  type Keys,
  type Logger,
  type RedisClient,
} from '@candlewick/common';
import { Clock } from '@candlewick/core';
import { DateTime } from 'luxon';
import { readCorrections, readRows, type RangeQuery } from './bars-file.js';
import { LiveHub, apiBar, type ApiBar } from './live.js';

const PUBLIC = join(dirname(fileURLToPath(import.meta.url)), '..', 'public');
const CHARTS_DIST = join(dirname(createRequire(import.meta.url).resolve('lightweight-charts/package.json')), 'dist');

/** The most rows one request returns; a larger range is cut (`truncated` says so) and read in pages. */
export const MAX_ROWS = 50_000;

/** Sign-in attempts a client address may fail within LOGIN_WINDOW_MS before /login answers 429. */
export const LOGIN_ATTEMPTS = 10;
export const LOGIN_WINDOW_MS = 60_000;

/**
 * The bars table in PostgreSQL, as serve reads it (DATABASE_URL; the CLI hands it over, so this
 * package loads no database client of its own).
 */
export interface BarsTable {
  /** DATABASE_URL as it may be printed */
  readonly where: string;
  range(
    interval: string,
    symbol: string,
    q: { from?: number; to?: number; limit: number },
  ): Promise<{ header: string; rows: { line: string; rev: number }[]; truncated: boolean }>;
  symbols(): Promise<string[]>;
  close(): Promise<void>;
}

/** A 4xx answer (or a 503: the database away): what is wrong, with the parameter it concerns. */
class BadRequest extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * `candlewick serve`: the chart page, the HTTP API over the CSV files and Redis's live state, and
 * Bull Board, on HTTP_PORT. Reads only: it never writes a bar.
 */
export class ServeService implements Component {
  private app: FastifyInstance | undefined;
  private readonly hub: LiveHub;
  private readonly clock: Clock;
  private readonly queues: Queue[] = [];
  /** the address it listens on, once started */
  url = '';

  constructor(
    private readonly redis: RedisClient,
    private readonly cfg: Config,
    private readonly keys: Keys,
    private readonly log: Logger,
    /** with DATABASE_URL: /api/bars answers from the table */
    private readonly table?: BarsTable,
  ) {
    this.hub = new LiveHub(redis, cfg, keys, log.child({ component: 'live' }));
    this.clock = new Clock(cfg.tz);
  }

  health(): Health {
    return { ok: this.app !== undefined };
  }

  async start(): Promise<void> {
    const app = Fastify({ logger: false });
    this.app = app;
    app.setErrorHandler((err: Error & { statusCode?: number }, req, reply) => {
      const status = err instanceof BadRequest ? err.status : (err.statusCode ?? 500);
      if (status >= 500) this.log.error({ err: err.message, path: req.routeOptions.url }, 'request failed');
      void reply
        .status(status)
        .send({ error: status >= 500 && !(err instanceof BadRequest) ? 'internal error (see the serve log)' : err.message });
    });
    app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) =>
      done(null, Object.fromEntries(new URLSearchParams(body as string))),
    );
    this.auth(app);

    app.get('/healthz', async (_req, reply) => {
      const ok = this.redis.status === 'ready';
      return reply.status(ok ? 200 : 503).send({ ok, redis: this.redis.status });
    });
    app.get('/api/meta', async () => this.meta());
    app.get('/api/status', async () => this.hub.status());
    app.get('/api/bars', async (req, reply) => this.bars(req, reply));
    app.get('/api/gaps', async (req) => {
      const q = parseQuery(gapsQuery, req.query);
      const symbol = q.symbol === undefined ? undefined : await this.symbol(q.symbol);
      return { gaps: await this.hub.gaps(symbol, this.time(q.from, 'from'), this.time(q.to, 'to')) };
    });
    app.get('/api/stream', (req, reply) => this.stream(req, reply));

    await app.register(fastifyStatic, { root: PUBLIC, prefix: '/', index: ['index.html'] });
    // the chart library from the installed package (no CDN), with its licence and notice
    await app.register(fastifyStatic, {
      root: CHARTS_DIST,
      prefix: '/vendor/lightweight-charts/',
      decorateReply: false,
      allowedPath: (path) => path === '/lightweight-charts.standalone.production.js',
    });
    app.get('/vendor/lightweight-charts/LICENSE', async (_req, reply) =>
      reply.type('text/plain').sendFile('LICENSE', join(CHARTS_DIST, '..')),
    );

    if (this.cfg.bullBoard !== 'off') await this.bullBoard(app);

    try {
      await app.listen({ port: this.cfg.httpPort, host: this.cfg.httpHost });
    } catch (err) {
      throw listenError(err, {
        port: this.cfg.httpPort,
        host: this.cfg.httpHost,
        portSetting: 'HTTP_PORT',
        hostSetting: 'HTTP_HOST',
        todo: 'choose a free port with HTTP_PORT (0 turns the page off under stack)',
      });
    }
    const addr = app.server.address();
    const port = typeof addr === 'object' && addr ? addr.port : this.cfg.httpPort;
    const host = this.cfg.httpHost === '0.0.0.0' || this.cfg.httpHost === '::' ? '127.0.0.1' : this.cfg.httpHost;
    this.url = `http://${host.includes(':') ? `[${host}]` : host}:${port}/`;
    this.hub.start();
    if (!this.cfg.httpToken && !isLoopback(this.cfg.httpHost))
      this.log.warn(
        { host: this.cfg.httpHost },
        `HTTP_HOST=${this.cfg.httpHost} WITHOUT HTTP_TOKEN: the chart page, the API and the queues are open to anyone who can reach this machine; set HTTP_TOKEN (or HTTP_TOKEN_FILE), or bind 127.0.0.1`,
      );
    this.log.info(
      { url: this.url, auth: this.cfg.httpToken ? 'bearer token (HTTP_TOKEN)' : 'open', queues: this.cfg.bullBoard },
      `chart page and API at ${this.url}`,
    );
  }

  async stop(): Promise<void> {
    this.hub.stop();
    await this.app?.close();
    await Promise.all(this.queues.map((q) => q.close().catch(() => undefined)));
    await this.table?.close();
  }

  /** HTTP_TOKEN: every path but /healthz (and the login form) needs it, as a bearer token or the login cookie. */
  private auth(app: FastifyInstance): void {
    const token = this.cfg.httpToken;
    if (!token) return;
    const expected = Buffer.from(token);
    const matches = (given: string | undefined) => {
      if (given === undefined) return false;
      const b = Buffer.from(given);
      return b.length === expected.length && timingSafeEqual(b, expected);
    };
    app.addHook('onRequest', async (req, reply) => {
      const path = req.url.split('?')[0]!;
      if (path === '/healthz' || path === '/login' || path === '/login.html' || path === '/style.css') return;
      const header = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '')?.[1];
      const cookie = /(?:^|;\s*)cw_token=([^;]+)/.exec(req.headers.cookie ?? '')?.[1];
      if (matches(header) || matches(cookieValue(cookie))) return;
      if (req.method === 'GET' && (req.headers.accept ?? '').includes('text/html')) return reply.redirect('/login.html');
      return reply
        .status(401)
        .header('www-authenticate', 'Bearer')
        .send({ error: 'this server needs its HTTP_TOKEN: send "Authorization: Bearer <token>"' });
    });
    // failed sign-ins by client address (the socket's: behind a proxy, every client is the proxy's)
    const failures = new Map<string, number[]>();
    app.post('/login', async (req, reply) => {
      const body = req.body as { token?: string; hash?: string } | undefined;
      // the page's selection (#symbol=…&interval=…) rides along, so a shared link survives the sign-in
      const hash = /^#[\w%=&.:~+-]{1,500}$/.test(body?.hash ?? '') ? body!.hash! : '';
      const now = Date.now();
      const recent = (failures.get(req.ip) ?? []).filter((t) => now - t < LOGIN_WINDOW_MS);
      if (recent.length >= LOGIN_ATTEMPTS) {
        const retry = Math.max(1, Math.ceil((recent[0]! + LOGIN_WINDOW_MS - now) / 1000));
        return reply
          .status(429)
          .header('retry-after', String(retry))
          .send({
            error: `too many sign-in attempts from ${req.ip}: ${LOGIN_ATTEMPTS} wrong tokens within ${LOGIN_WINDOW_MS / 1000} s; try again in ${retry} s`,
          });
      }
      if (!matches(body?.token)) {
        recent.push(now);
        failures.set(req.ip, recent);
        if (failures.size > 10_000) failures.delete(failures.keys().next().value!);
        return reply.redirect(`/login.html?wrong=1${hash}`, 303);
      }
      failures.delete(req.ip);
      return reply
        .header('set-cookie', `cw_token=${encodeURIComponent(token)}; HttpOnly; SameSite=Strict; Path=/`)
        .redirect(`/${hash}`, 303);
    });
  }

  private async bullBoard(app: FastifyInstance): Promise<void> {
    const readOnlyMode = this.cfg.bullBoard !== 'manage';
    for (const name of [BARS_QUEUE, CLOSE_QUEUE]) {
      // read-only Bull Board writes nothing, not even the queue's meta: serve's Redis user may be read-only
      const q = new Queue(name, { connection: this.redis, prefix: this.keys.queuePrefix(), skipMetasUpdate: readOnlyMode });
      q.on('error', () => undefined); // the connection's errors are said once by its link
      this.queues.push(q);
    }
    const serverAdapter = new FastifyAdapter();
    createBullBoard({
      queues: this.queues.map((q) => new BullMQAdapter(q, { readOnlyMode })),
      serverAdapter,
      // its worker list asks Redis for every client (CLIENT LIST, an admin command): not under a
      // user of its own (REDIS_USERS_FILE, REDIS_USERNAME), which is not allowed it
      options: { uiConfig: { boardTitle: 'candlewick queues', showWorkers: redisAccess(this.cfg, 'serve').username === undefined } },
    });
    serverAdapter.setBasePath('/queues');
    // Bull Board's page links its fonts from fonts.googleapis.com: dropped, so the page makes no request
    // beyond this server (it falls back to the system's sans-serif and monospace fonts)
    app.addHook('onSend', async (req, reply, payload) => {
      if (!req.url.startsWith('/queues') || typeof payload !== 'string' || !String(reply.getHeader('content-type')).includes('text/html'))
        return payload;
      return payload.replace(/<link\b[^>]*\bhref="https?:\/\/[^"]*"[^>]*>/gi, '');
    });
    await app.register(serverAdapter.registerPlugin(), { prefix: '/queues' });
  }

  /** The symbols with bars (SYMBOLS, recent bars on Redis, files under DATA_DIR/raw), the intervals, the zone. */
  async meta(): Promise<{
    symbols: string[];
    intervals: string[];
    dayIntervals: string[];
    /** activity bars (docs/activity-bars.md): charted at their last trade's time, keyed by their number */
    activityIntervals: string[];
    tz: string;
    clock: string;
    late: string;
    partitions: number;
  }> {
    return {
      symbols: await this.symbols(),
      intervals: [...this.cfg.intervals, ...this.cfg.activity].map((i) => i.name),
      dayIntervals: this.cfg.intervals.filter((i) => i.day === true).map((i) => i.name),
      activityIntervals: this.cfg.activity.map((i) => i.name),
      tz: this.cfg.tz,
      clock: this.cfg.clock,
      late: this.cfg.late,
      partitions: this.cfg.partitions,
    };
  }

  private known: { at: number; symbols: Promise<string[]> } | undefined;

  /** The symbols there are, looked up at most every 5 s (not on every request). */
  private symbols(): Promise<string[]> {
    if (!this.known || Date.now() - this.known.at >= 5_000) this.known = { at: Date.now(), symbols: this.lookUpSymbols() };
    return this.known.symbols;
  }

  /** As the feed spells them (SYMBOLS and the newest published bars), then every file's, by its file name. */
  private async lookUpSymbols(): Promise<string[]> {
    const named = new Set(this.cfg.symbols);
    const recent = (await this.redis.xrevrange(this.keys.bars(this.cfg.intervals[0]!.name), '+', '-', 'COUNT', 5000).catch(() => [])) as [
      string,
      string[],
    ][];
    for (const [, f] of recent) if (field(f, 's')) named.add(field(f, 's'));
    if (this.table) for (const s of await this.table.symbols()) named.add(s);
    const known = new Map([...named].map((s) => [fileSafeSymbol(s), s]));
    const out = new Set(named);
    for (const iv of this.cfg.intervals) {
      const dir = join(this.cfg.dataDir, 'raw', iv.name);
      if (!existsSync(dir)) continue;
      const suffix = `_${iv.name}.csv`;
      for (const f of readdirSync(dir)) {
        if (!f.endsWith(suffix) || f.endsWith(`.corrections.csv`)) continue;
        const safe = f.slice(0, -suffix.length);
        out.add(known.get(safe) ?? safe);
      }
    }
    return [...out].sort();
  }

  /** A symbol the API knows (as the feed spells it, or as in its file name), else 404. */
  private async symbol(s: string): Promise<string> {
    const all = await this.symbols();
    if (all.includes(s)) return s;
    // the feed's spelling of a symbol known only by its file (serve on files alone), or the other way round
    const safe = fileSafeSymbol(s);
    const bySafe = all.find((x) => fileSafeSymbol(x) === s || fileSafeSymbol(x) === safe);
    if (bySafe) return bySafe;
    throw new BadRequest(404, `unknown symbol "${s}": this server has bars for ${all.join(', ') || 'no symbol yet'}`);
  }

  private interval(s: string): { name: string; day: boolean; activity: boolean } {
    const iv = this.cfg.intervals.find((i) => i.name === s);
    if (iv) return { name: iv.name, day: iv.day === true, activity: false };
    const a = this.cfg.activity.find((i) => i.name === s);
    if (a) return { name: a.name, day: false, activity: true };
    throw new BadRequest(
      400,
      `interval "${s}" is not one of INTERVALS: ${[...this.cfg.intervals, ...this.cfg.activity].map((i) => i.name).join(', ')}`,
    );
  }

  /** A time parameter: ms since the epoch, an ISO-8601 time (its offset, or BAR_TZ), or a date in BAR_TZ. */
  private time(s: string | undefined, name: string): number | undefined {
    if (s === undefined || s === '') return undefined;
    let t: number;
    if (/^\d+$/.test(s)) t = Number(s);
    else if (/^\d{4}-\d{2}-\d{2}$/.test(s)) t = this.clock.parseLabel(s);
    else if (/[zZ]|[+-]\d{2}:?\d{2}$/.test(s)) t = Date.parse(s);
    // a local time without an offset is BAR_TZ's
    else t = DateTime.fromISO(s, { zone: this.clock.zone }).toMillis();
    if (!Number.isFinite(t))
      throw new BadRequest(
        400,
        `${name}=${JSON.stringify(s)} is not a time: give ms since the epoch, an ISO-8601 time such as 2019-10-11T09:30:00-04:00, or a date`,
      );
    return t;
  }

  private async bars(req: FastifyRequest, reply: FastifyReply) {
    const q = parseQuery(barsQuery, req.query);
    const symbol = await this.symbol(q.symbol);
    const iv = this.interval(q.interval);
    const from = this.time(q.from, 'from');
    const to = this.time(q.to, 'to');
    if (from !== undefined && to !== undefined && from >= to)
      throw new BadRequest(400, `from must be before to (from=${q.from}, to=${q.to})`);
    if (iv.activity) return this.activityBars(symbol, iv.name, { from, to, limit: q.limit }, q.format, reply);
    const startOf = (line: string) => this.clock.parseLabel(line.slice(0, line.indexOf(',')));
    // with DATABASE_URL, the table (which keeps the newest revision of each bar); revisions=original from the files
    const range = this.table && q.revisions === 'latest' ? await this.fromTable(iv.name, symbol, { from, to, limit: q.limit }) : undefined;
    const fromFile = range ? undefined : readRows(csvPath(this.cfg.dataDir, iv.name, symbol), { from, to, limit: q.limit }, startOf);
    // LATE=amend: the newest revision of each corrected bar replaces it (revisions=original: as first written)
    const corrections =
      !range && q.revisions === 'latest' ? readCorrections(correctionsPath(this.cfg.dataDir, iv.name, symbol)) : new Map();
    const rows =
      range?.rows ??
      fromFile!.lines.map((line) => {
        const label = line.slice(0, line.indexOf(','));
        const c = corrections.get(label);
        return c ? { line: c.line, rev: c.rev } : { line, rev: 0 };
      });
    const truncated = (range ?? fromFile!).truncated;
    const header = range?.header ?? fromFile!.header;
    reply.header('x-truncated', String(truncated));
    if (q.format === 'csv') {
      const head = header || 'timestamp,open,high,low,close,vwap,volume,num_transactions';
      return reply.type('text/csv; charset=utf-8').send(`${[head, ...rows.map((r) => r.line)].join('\n')}\n`);
    }
    const bars: ApiBar[] = rows.map(({ line, rev }) => rowToBar(line, rev, symbol, iv.name, startOf));
    return { symbol, interval: iv.name, tz: this.cfg.tz, truncated, bars };
  }

  /**
   * An activity bar's range, from its file (docs/activity-bars.md): bars whose first trade is in
   * [from, to), each with its number and its last trade's time. (The table holds time bars only.)
   */
  private activityBars(symbol: string, interval: string, q: RangeQuery, format: 'json' | 'csv', reply: FastifyReply) {
    const startOf = (line: string) => {
      const a = line.indexOf(',') + 1;
      return Date.parse(line.slice(a, line.indexOf(',', a)));
    };
    const range = readRows(csvPath(this.cfg.dataDir, interval, symbol), q, startOf);
    reply.header('x-truncated', String(range.truncated));
    if (format === 'csv')
      return reply.type('text/csv; charset=utf-8').send(`${[range.header || ACTIVITY_CSV_HEADER.join(','), ...range.lines].join('\n')}\n`);
    const bars = range.lines.map((line) => {
      const [n, start, end, open, high, low, close, vwap, volume, trades] = line.split(',') as string[];
      const cells = {
        timestamp: start!,
        open: open!,
        high: high!,
        low: low!,
        close: close!,
        vwap: vwap ?? '',
        volume: volume!,
        trades: trades ?? '',
        complete: true,
        sources: 'live',
      };
      return { ...apiBar(interval, symbol, Date.parse(start!), cells, 0), bar: Number(n), end: Date.parse(end!), endTimestamp: end! };
    });
    return { symbol, interval, tz: this.cfg.tz, truncated: range.truncated, bars };
  }

  /** A range from the table; the database away or refusing: 503 with the reason (the rest of the API goes on). */
  private async fromTable(interval: string, symbol: string, q: { from?: number; to?: number; limit: number }) {
    try {
      return await this.table!.range(interval, symbol, q);
    } catch (err) {
      throw new BadRequest(
        503,
        `the bars database (DATABASE_URL=${this.table!.where}) did not answer: ${(err as Error).message}; live bars and the rest of the API go on, and revisions=original reads the CSV files`,
      );
    }
  }

  /** Server-Sent Events: closed bars (`bar`), the forming bar (`forming`), feed gaps (`gap`), health (`status`). */
  private async stream(req: FastifyRequest, reply: FastifyReply): Promise<void> {
    const q = parseQuery(streamQuery, req.query);
    const symbols = new Set(
      await Promise.all(
        q.symbols
          .split(',')
          .filter(Boolean)
          .map((s) => this.symbol(s)),
      ),
    );
    const intervals = new Set(
      q.intervals
        .split(',')
        .filter(Boolean)
        .map((s) => this.interval(s).name),
    );
    if (symbols.size === 0) throw new BadRequest(400, 'symbols: give one or more, comma-separated');
    if (intervals.size === 0) for (const iv of this.cfg.intervals) intervals.add(iv.name);
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.write('retry: 2000\n\n');
    const unsubscribe = this.hub.subscribe({
      symbols,
      intervals,
      send: (event, data) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`),
    });
    const ping = setInterval(() => res.write(': ping\n\n'), 15_000);
    req.raw.on('close', () => {
      clearInterval(ping);
      unsubscribe();
    });
  }
}

/** The login cookie's value, or undefined when absent or not valid percent-encoding (a 401, not a 500). */
function cookieValue(raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined;
  try {
    return decodeURIComponent(raw);
  } catch {
    return undefined;
  }
}

const isLoopback = (host: string) => host === 'localhost' || host === '::1' || /^127\./.test(host);

/** A CSV row (the main file's columns, with or without complete and sources) as an API bar. */
function rowToBar(line: string, rev: number, symbol: string, interval: string, startOf: (line: string) => number): ApiBar {
  const f = line.split(',');
  const cells = {
    timestamp: f[0]!,
    open: f[1]!,
    high: f[2]!,
    low: f[3]!,
    close: f[4]!,
    vwap: f[5] ?? '',
    volume: f[6]!,
    trades: f[7] ?? '',
    complete: f[8] === undefined ? true : f[8] === 'true',
    sources: f[9] ?? 'live',
  };
  return apiBar(interval, symbol, startOf(line), cells, rev);
}

const barsQuery = z.object({
  symbol: z.string({ message: 'symbol is required, e.g. ?symbol=AAPL' }).min(1, 'symbol is required'),
  interval: z.string({ message: 'interval is required, e.g. &interval=1min' }).min(1, 'interval is required'),
  from: z.string().optional(),
  to: z.string().optional(),
  limit: z.coerce
    .number({ message: 'limit must be a number' })
    .int('limit must be a whole number')
    .min(1, 'limit must be at least 1')
    .max(MAX_ROWS, `limit is at most ${MAX_ROWS}`)
    .default(1000),
  format: z.enum(['json', 'csv'], { message: 'format is json or csv' }).default('json'),
  revisions: z.enum(['latest', 'original'], { message: 'revisions is latest or original' }).default('latest'),
});

const gapsQuery = z.object({ symbol: z.string().optional(), from: z.string().optional(), to: z.string().optional() });

const streamQuery = z.object({
  symbols: z.string({ message: 'symbols is required, e.g. ?symbols=AAPL,MSFT' }),
  intervals: z.string().default(''),
});

function parseQuery<T extends z.ZodType>(schema: T, query: unknown): z.infer<T> {
  const r = schema.safeParse(query);
  if (!r.success) throw new BadRequest(400, r.error.issues.map((i) => i.message).join('; '));
  return r.data;
}
