import { readFileSync } from 'node:fs';
import { DateTime } from 'luxon';
import { z } from 'zod';
import {
  ConditionCodesError,
  Clock,
  SYMBOL_PATTERN,
  SYMBOL_RULE,
  STOCK_TICKER,
  visibleSymbol,
  baseIntervalMs,
  parseConditionCodes,
  parseDurationMs,
  parseInterval,
  isActivityName,
  parseActivityInterval,
  type ActivityInterval,
  type Interval,
} from '@candlewick/core';
import { fileSafeSymbol } from './keys.js';
import { redactUrl } from './logger.js';

/**
 * The one configuration. Every setting is written once below — its variable, how its text is read
 * (a zod schema), its default (a value, or one that follows settings read before it) and what it
 * means — and the Config type, the list of variables and `candlewick help settings` all come from
 * that table. Every role parses the environment (plus CLI flags) once, at its entry point, into a
 * frozen Config; nothing else reads process.env. A bad value is a ConfigError that names the
 * variable and the rule, all problems at once.
 */

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

export type Mode = 'live' | 'replay';

/** The feeds candlewick reads (packages/ingestor/src/feeds). */
export const FEEDS = ['finnhub', 'binance', 'massive', 'alpaca'] as const;
export type Feed = (typeof FEEDS)[number];

// ---------------------------------------------------------------------------------------------
// How a variable's text is read

const int = (min: number, max: number) =>
  z
    .string()
    .trim()
    .regex(/^\d+$/, `must be a whole number from ${min} to ${max}`)
    .transform(Number)
    .pipe(
      z.number().int().min(min, `must be a whole number from ${min} to ${max}`).max(max, `must be a whole number from ${min} to ${max}`),
    );

const ms = (what: string) => z.string().trim().regex(/^\d+$/, `must be a whole number of ms (${what})`).transform(Number);

const bool = () =>
  z
    .string()
    .trim()
    .toLowerCase()
    .refine((v) => ['true', 'false', '1', '0', 'yes', 'no', 'on', 'off'].includes(v), 'must be true or false')
    .transform((v) => ['true', '1', 'yes', 'on'].includes(v));

const onOff = () => z.enum(['on', 'off'], { message: 'must be on or off' }).transform((v) => v === 'on');

const duration = () =>
  z.string().transform((v, ctx) => {
    try {
      return parseDurationMs(v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
  });

const oneOf = <const T extends readonly [string, ...string[]]>(values: T) =>
  z.enum(values, { message: `must be ${values.slice(0, -1).join(', ')} or ${values.at(-1)}` });

const text = () => z.string();

const list = () =>
  z.string().transform((v) =>
    Object.freeze(
      v
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== ''),
    ),
  );

const intervals = () =>
  z.string().transform((v, ctx): readonly Interval[] => {
    try {
      const seen = new Map<string, Interval>();
      let activity = 0;
      for (const part of v.split(',')) {
        if (part.trim() === '') continue;
        // activity bars (100t, 10000v, t-imb-e100): checked here, kept in `activity` (activityIntervals)
        if (isActivityName(part)) {
          parseActivityInterval(part);
          activity++;
          continue;
        }
        let iv: Interval;
        try {
          iv = parseInterval(part);
        } catch (err) {
          throw new Error(
            `${(err as Error).message}; or an activity bar such as 100t, 10000v, 1000000val, 500t-imb, t-imb-e100 (docs/activity-bars.md)`,
          );
        }
        // 60min and 1h are one interval; 24h and 1d are not (1d is a date, 24h a length)
        const key = iv.day ? 'day' : String(iv.ms);
        if (!seen.has(key)) seen.set(key, iv);
      }
      const out = [...seen.values()].sort((a, b) => a.ms - b.ms);
      if (out.length === 0)
        ctx.addIssue({
          code: 'custom',
          message: activity
            ? 'name a time interval beside activity bars, e.g. 1min,100t: the base window judges which trades are late, for activity bars too'
            : 'name at least one interval, e.g. 1min,5min',
        });
      return Object.freeze(out);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
      return z.NEVER;
    }
  });

const zone = () =>
  z.string().transform((tz, ctx) => {
    try {
      new Clock(tz);
      return tz;
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
      return z.NEVER;
    }
  });

const instant = () =>
  z.string().transform((v, ctx) => {
    const t = Date.parse(v);
    if (!Number.isFinite(t)) {
      ctx.addIssue({ code: 'custom', message: 'is not a date-time; use ISO 8601, e.g. 2013-10-10T12:17:30-04:00' });
      return z.NEVER;
    }
    return t;
  });

const conditionCodes = () =>
  z.string().transform((path, ctx): Readonly<Record<string, readonly string[]>> => {
    try {
      return Object.freeze(Object.fromEntries(parseConditionCodes(readFileSync(path, 'utf8'), path)));
    } catch (err) {
      ctx.addIssue({
        code: 'custom',
        message: err instanceof ConditionCodesError ? err.message : `cannot read ${path}: ${(err as Error).message}`,
      });
      return z.NEVER;
    }
  });

// ---------------------------------------------------------------------------------------------
// The table

const DEFAULT_INTERVALS: readonly Interval[] = Object.freeze(['1min', '5min', '15min', '30min', '1h'].map(parseInterval));

/** Settings read before this one, for a default that follows them. */
type Known = Readonly<Record<string, unknown>>;

interface Setting<T> {
  /** the environment variable (and the flag --its-name) */
  readonly env: string;
  readonly read: z.ZodType<T, string>;
  /** a value, or one computed from the settings above (undefined: unset) */
  readonly def: T | undefined | ((c: Known) => T | undefined);
  /** the default as a person reads it, for `help settings` */
  readonly shown: string;
  readonly doc: string;
}

function setting<T>(
  env: string,
  read: z.ZodType<T, string>,
  def: T | undefined | ((c: Known) => T | undefined),
  shown: string,
  doc: string,
): Setting<T> {
  return { env, read, def, shown, doc };
}

/** Every setting, in the order defaults are worked out (a default may follow those above it). */
const SETTINGS = {
  // the feed
  feed: setting<Feed>(
    'FEED',
    oneOf(FEEDS),
    'finnhub',
    'finnhub',
    "whose trade WebSocket: finnhub (FINNHUB_*), binance (BINANCE_*; market data needs no key), massive (MASSIVE_WS_URL, MASSIVE_API_KEY), alpaca (ALPACA_WS_URL, ALPACA_API_KEY, ALPACA_API_SECRET); replay-server speaks this feed's protocol",
  ),
  finnhubToken: setting(
    'FINNHUB_TOKEN',
    text(),
    undefined,
    '—',
    'Finnhub API key: set, candlewick runs live (also FINNHUB_TOKEN_FILE); never logged',
  ),
  massiveApiKey: setting(
    'MASSIVE_API_KEY',
    text(),
    undefined,
    '—',
    'Massive (formerly Polygon) key: backfill sends it in a header, FEED=massive in its auth message (also MASSIVE_API_KEY_FILE); never logged',
  ),
  alpacaApiKey: setting(
    'ALPACA_API_KEY',
    text(),
    undefined,
    '—',
    'Alpaca API key id: FEED=alpaca sends it in its auth message (also ALPACA_API_KEY_FILE); never logged',
  ),
  alpacaApiSecret: setting(
    'ALPACA_API_SECRET',
    text(),
    undefined,
    '—',
    'Alpaca API secret key: FEED=alpaca sends it in its auth message (also ALPACA_API_SECRET_FILE); never logged',
  ),
  mode: setting<Mode>(
    'MODE',
    oneOf(['live', 'replay']),
    (c) =>
      c.feed === 'binance' ||
      (c.feed === 'massive' ? c.massiveApiKey : c.feed === 'alpaca' ? c.alpacaApiKey && c.alpacaApiSecret : c.finnhubToken)
        ? 'live'
        : 'replay',
    "live with the feed's key (FINNHUB_TOKEN; FEED=massive: MASSIVE_API_KEY; FEED=alpaca: ALPACA_API_KEY and ALPACA_API_SECRET) or FEED=binance, else replay",
    'force a mode',
  ),
  finnhubWsUrl: setting(
    'FINNHUB_WS_URL',
    z.string().regex(/^wss?:\/\/[^/]/, 'must be a ws:// or wss:// URL'),
    'wss://ws.finnhub.io',
    'wss://ws.finnhub.io',
    'the trade WebSocket (stack points it at its replay server when replaying)',
  ),
  binanceWsUrl: setting(
    'BINANCE_WS_URL',
    z.string().regex(/^wss?:\/\/[^/]/, 'must be a ws:// or wss:// URL'),
    'wss://stream.binance.com:9443/stream',
    'wss://stream.binance.com:9443/stream',
    "Binance's combined-stream WebSocket (FEED=binance; stack points it at its replay server when replaying)",
  ),
  massiveWsUrl: setting(
    'MASSIVE_WS_URL',
    z.string().regex(/^wss?:\/\/[^/]/, 'must be a ws:// or wss:// URL'),
    'wss://socket.massive.com/stocks',
    'wss://socket.massive.com/stocks',
    "Massive's stocks WebSocket (FEED=massive; the 15-minute delayed feed is wss://delayed.massive.com/stocks; stack points it at its replay server when replaying)",
  ),
  alpacaWsUrl: setting(
    'ALPACA_WS_URL',
    z.string().regex(/^wss?:\/\/[^/]/, 'must be a ws:// or wss:// URL'),
    'wss://stream.data.alpaca.markets/v2/iex',
    'wss://stream.data.alpaca.markets/v2/iex',
    "Alpaca's stocks market-data stream (FEED=alpaca): /v2/iex, the free IEX feed; /v2/sip is the paid full-market (SIP) feed; stack points it at its replay server when replaying",
  ),
  binanceStream: setting<'aggTrade' | 'trade'>(
    'BINANCE_STREAM',
    oneOf(['aggTrade', 'trade']),
    'aggTrade',
    'aggTrade',
    "FEED=binance: aggTrade (a taker order's fills at one price as one trade, id a) or trade (every fill, id t: the trade count Binance's klines give)",
  ),
  finnhubRestUrl: setting(
    'FINNHUB_REST_URL',
    z.string().url('must be an http(s) URL'),
    'https://finnhub.io/api/v1',
    'https://finnhub.io/api/v1',
    'REST base for Finnhub backfill (/stock/candle)',
  ),
  symbols: setting(
    'SYMBOLS',
    list(),
    Object.freeze([]) as readonly string[],
    "the tape's when replaying",
    'comma list of symbols, e.g. AAPL,MSFT,BINANCE:BTCUSDT',
  ),
  staleMs: setting(
    'STALE_MS',
    int(1000, 3_600_000),
    30_000,
    '30000',
    'no frame from the feed this long (pings included): the socket is replaced; not while the ingestor holds it back for Redis',
  ),
  // bars
  intervals: setting(
    'INTERVALS',
    intervals(),
    () => DEFAULT_INTERVALS,
    '1min,5min,15min,30min,1h',
    'bar intervals: whole minutes or hours up to 24h, and 1d; activity bars too (100t, 10000v, 1000000val, imbalance and runs bars: docs/activity-bars.md)',
  ),
  tz: setting('BAR_TZ', zone(), 'America/New_York', 'America/New_York', 'IANA zone bars are floored and labelled in'),
  graceMs: setting('GRACE_MS', int(0, 3_600_000), 2000, '2000', "how long after a window's end trades for it are still on time"),
  futureLimitMs: setting(
    'FUTURE_LIMIT_MS',
    int(1000, 7 * 86_400_000),
    900_000,
    '900000',
    "how far a trade's time may be ahead of the clock, and (CLOCK=event) of the feed's highest time, before it is held back or rejected (see Validation)",
  ),
  clock: setting(
    'CLOCK',
    oneOf(['wall', 'event']),
    (c) => (c.mode === 'live' ? 'wall' : 'event'),
    'wall live, event replay',
    'watermark: Redis server time, or the highest event time ingested',
  ),
  sessions: setting(
    'SESSIONS',
    oneOf(['regular', 'extended', 'all']),
    'all',
    'all',
    'US-equity trades that make bars: regular (09:30-16:00), extended (04:00-20:00), all',
  ),
  align: setting(
    'ALIGN',
    oneOf(['clock', 'session']),
    'clock',
    'clock',
    'equity bars over 30 minutes on the clock (09:00) or from the open (09:30)',
  ),
  late: setting('LATE', oneOf(['drop', 'amend']), 'drop', 'drop', 'a late trade is kept (drop), or also corrects its closed bars (amend)'),
  lateAmendWindowMs: setting(
    'LATE_AMEND_WINDOW',
    duration(),
    3_600_000,
    '1h',
    'LATE=amend: how long past the watermark a closed bar can still be corrected',
  ),
  emptyBars: setting(
    'EMPTY_BARS',
    oneOf(['skip', 'carry']),
    'skip',
    'skip',
    'a window without trades: no row, or a flat row at the previous close',
  ),
  conditions: setting(
    'CONDITIONS',
    oneOf(['all', 'cta-utp']),
    'all',
    'all',
    'which prints set which bar fields: all alike, or the trade-condition table',
  ),
  conditionCodes: setting(
    'CONDITION_CODES',
    conditionCodes(),
    Object.freeze({}) as Readonly<Record<string, readonly string[]>>,
    '—',
    "a JSON file mapping the feed's condition codes to condition names",
  ),
  csvExtraColumns: setting('CSV_EXTRA_COLUMNS', bool(), false, 'false', 'add the complete and sources columns'),
  // where things are
  dataDir: setting('DATA_DIR', text(), './data', './data', 'CSV output (raw/), logs (logs/), the private Redis (redis/)'),
  redisUrl: setting(
    'REDIS_URL',
    text(),
    undefined,
    '—',
    'the Redis to use (a comma list of seed nodes with REDIS_CLUSTER=on); without it stack starts its own, and the other commands use the one of the stack running on DATA_DIR',
  ),
  redisPassword: setting('REDIS_PASSWORD', text(), undefined, '—', "Redis's password, kept out of REDIS_URL (also REDIS_PASSWORD_FILE)"),
  redisCluster: setting(
    'REDIS_CLUSTER',
    onOff(),
    false,
    'off',
    'on: REDIS_URL is a Redis Cluster (without it, stack starts a private one)',
  ),
  redisUsername: setting(
    'REDIS_USERNAME',
    text(),
    undefined,
    '—',
    'the Redis ACL user this process connects as (with REDIS_PASSWORD); REDIS_USERS_FILE gives each role its own',
  ),
  redisUsersFile: setting(
    'REDIS_USERS_FILE',
    text(),
    undefined,
    '—',
    'a file of lines "role user password": each role (and stack, tap) connects as its own user; never logged',
  ),
  redisSentinels: setting(
    'REDIS_SENTINELS',
    list(),
    Object.freeze([]) as readonly string[],
    '—',
    'host:port list of Redis Sentinels: every role finds the master through them (REDIS_URL unused)',
  ),
  redisSentinelMaster: setting('REDIS_SENTINEL_MASTER', text(), 'mymaster', 'mymaster', 'the master name the sentinels watch'),
  redisSentinelPassword: setting(
    'REDIS_SENTINEL_PASSWORD',
    text(),
    undefined,
    '—',
    "the sentinels' own password, when they have one (also REDIS_SENTINEL_PASSWORD_FILE)",
  ),
  redisTlsCaFile: setting(
    'REDIS_TLS_CA_FILE',
    text(),
    undefined,
    "the system's CAs",
    "rediss://: the CA (PEM) Redis's certificate must chain to",
  ),
  redisTlsCertFile: setting('REDIS_TLS_CERT_FILE', text(), undefined, '—', 'rediss://: a client certificate (PEM), for tls-auth-clients'),
  redisTlsKeyFile: setting(
    'REDIS_TLS_KEY_FILE',
    text(),
    undefined,
    '—',
    "rediss://: the client certificate's private key (PEM); never logged",
  ),
  redisTlsServername: setting(
    'REDIS_TLS_SERVERNAME',
    text(),
    undefined,
    '—',
    "rediss://: the name Redis's certificate must carry, when it is not the URL's host",
  ),
  redisConnectTimeoutMs: setting(
    'REDIS_CONNECT_TIMEOUT',
    duration(),
    30_000,
    '30s',
    'a role that cannot reach Redis this long at start exits 3',
  ),
  databaseUrl: setting(
    'DATABASE_URL',
    text(),
    undefined,
    '—',
    'postgres://user@host:port/db: bars in PostgreSQL (`pg-sink`, `bars`, `backfill --from`, `pg-load` write them; `serve` reads them); its password is never logged',
  ),
  databasePassword: setting(
    'DATABASE_PASSWORD',
    text(),
    undefined,
    '—',
    'the database password, when DATABASE_URL does not carry it; never logged',
  ),
  databaseBatch: setting('DATABASE_BATCH', int(1, 100_000), 1000, '1000', 'pg-sink: stream entries per read, written in one transaction'),
  databaseConnectTimeoutMs: setting(
    'DATABASE_CONNECT_TIMEOUT',
    duration(),
    30_000,
    '30s',
    'a role that cannot reach the database this long at start (or is refused its login) exits 3',
  ),
  redisAnswerTimeoutMs: setting(
    'REDIS_ANSWER_TIMEOUT',
    duration(),
    5_000,
    '5s',
    'a connected Redis that answers nothing this long (paused, swapping, stuck) is said like an outage, and /healthz fails until it answers (0: not watched)',
  ),
  redisCheckEveryMs: setting(
    'REDIS_CHECK_EVERY',
    duration(),
    60_000,
    '1m',
    "a running role checks this often that Redis's maxmemory-policy is still noeviction (at start always; 0: only then)",
  ),
  redisServerBin: setting('REDIS_SERVER_BIN', text(), 'redis-server', 'redis-server', 'the binary stack starts without REDIS_URL'),
  keyPrefix: setting(
    'KEY_PREFIX',
    z.string().regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, _ . - only'),
    'cw',
    'cw',
    'prefix of every Redis key and BullMQ queue',
  ),
  // workers
  partitions: setting('STREAM_PARTITIONS', int(1, 1024), 1, '1', 'raw stream partitions; symbols map to one by a stable hash'),
  aggregators: setting('AGGREGATORS', int(1, 64), 1, '1', 'aggregator processes stack starts'),
  aggregatorBatch: setting(
    'AGGREGATOR_BATCH',
    int(1, 100_000),
    2000,
    '2000',
    'trades per merge, about: an aggregator reads AGGREGATOR_BATCH / INGEST_BATCH raw entries (each an ingested batch) at a time, at least one',
  ),
  consumerName: setting(
    'CONSUMER_NAME',
    z.string().regex(/^[A-Za-z0-9_.:-]{1,100}$/, 'letters, digits, _ . : - only (at most 100)'),
    undefined,
    'slot, hostname or process',
    "an aggregator's stable name in its consumer group",
  ),
  takeoverMs: setting(
    'TAKEOVER_MS',
    duration(),
    3000,
    '3s',
    "a worker silent this long is dead: the others take over its pending entries (also the lapse of the writer's and the stack's hold)",
  ),
  reclaimIdleMs: setting(
    'RECLAIM_IDLE_MS',
    int(100, 3_600_000),
    30_000,
    '30000',
    'the backstop: entries pending this long are taken over whatever the heartbeats say',
  ),
  ingestBatch: setting('INGEST_BATCH', int(1, 10_000), 1000, '1000', 'the ingestor appends when this many trades are buffered ...'),
  ingestFlushMs: setting('INGEST_FLUSH_MS', int(0, 1000), 2, '2', '... or the oldest has waited this long'),
  ingestRetainMs: setting(
    'INGEST_RETAIN',
    duration(),
    3000,
    '3s',
    'how long the ingestor keeps a batch Redis acknowledged, to send it again if Redis loses it',
  ),
  ingestWaitReplicas: setting(
    'INGEST_WAIT_REPLICAS',
    int(0, 16),
    1,
    '1',
    'where a master has replicas, the ingestor keeps each batch until this many have it (WAIT); 0: INGEST_RETAIN alone',
  ),
  closeEveryMs: setting('CLOSE_EVERY_MS', int(50, 60_000), 250, '250', 'closer tick'),
  tradesRetentionMs: setting(
    'TRADES_RETENTION',
    duration(),
    3_600_000,
    '1h',
    'raw and late streams are trimmed by age, never past an unmerged entry; feed:corrections by age',
  ),
  tradeIdsWindowMs: setting(
    'TRADE_IDS_WINDOW',
    duration(),
    300_000,
    '5min',
    'FEED=alpaca: a trade whose (symbol, exchange, id, time) was appended this long before is dropped as sent twice',
  ),
  barsRetentionMs: setting('BARS_RETENTION', duration(), 7 * 86_400_000, '7d', 'bars:{interval} streams are trimmed by age'),
  exitWhenIdleMs: setting(
    'EXIT_WHEN_IDLE_MS',
    ms('0 = never exit'),
    (c) => (c.mode === 'replay' ? 2000 : 0),
    '2000 replay, 0 live',
    'stack only: quiet this long and drained: close everything, summary, exit 0',
  ),
  closeWhenIdleMs: setting(
    'CLOSE_WHEN_IDLE_MS',
    ms('0 = never'),
    (c) => (c.mode === 'replay' ? 2000 : 0),
    '2000 replay, 0 live',
    'the closer on the event clock: quiet this long and merged: close every open bar',
  ),
  stackNice: setting(
    'STACK_NICE',
    int(0, 19),
    5,
    '5',
    'stack runs its Node roles this many nice levels below its own (Redis at its own) so Redis gets the CPU first',
  ),
  stackFeedNice: setting(
    'STACK_FEED_NICE',
    int(0, 19),
    0,
    '0',
    'stack runs the feed roles (replay server, ingestor, aggregators, backfill) this many nice levels below the other roles, so closing and writing get the CPU first at a boundary',
  ),
  // logs and metrics
  logLevel: setting('LOG_LEVEL', oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']), 'info', 'info', 'pino level'),
  logPretty: setting('LOG_PRETTY', bool(), () => process.stdout.isTTY ?? false, 'on in a terminal', 'pretty logs instead of JSON'),
  logFile: setting(
    'LOG_FILE',
    bool(),
    true,
    'true',
    'also keep the log as JSON in DATA_DIR/logs, rotated by size (not `serve`: it writes nothing, its log is on stdout)',
  ),
  logFileSize: setting(
    'LOG_FILE_SIZE',
    z.string().regex(/^\d+[kmg]?$/i, 'a size such as 10m, 500k or 1g'),
    '10m',
    '10m',
    'rotate the log file at this size',
  ),
  logFileCount: setting('LOG_FILE_COUNT', int(1, 1000), 5, '5', 'old log files kept'),
  logName: setting(
    'LOG_NAME',
    z.string().regex(/^[A-Za-z0-9_-]+$/, 'letters, digits, _ and - only'),
    undefined,
    'the role',
    "the log file's name",
  ),
  metricsPort: setting(
    'METRICS_PORT',
    int(0, 65535),
    0,
    '0 (off)',
    'serve /metrics and /healthz on this port (stack: one port per role from here)',
  ),
  metricsHost: setting('METRICS_HOST', text(), '127.0.0.1', '127.0.0.1', 'address the metrics endpoint binds'),
  // the chart page and HTTP API (candlewick serve)
  httpPort: setting(
    'HTTP_PORT',
    int(0, 65535),
    8080,
    '8080',
    'candlewick serve: the chart page, the HTTP API and Bull Board on this port (stack: 0 = do not start it)',
  ),
  httpHost: setting('HTTP_HOST', text(), '127.0.0.1', '127.0.0.1 (0.0.0.0 in the image)', 'address the page and API bind'),
  httpToken: setting(
    'HTTP_TOKEN',
    text(),
    undefined,
    '— (open)',
    'bearer token every HTTP path but /healthz needs (also HTTP_TOKEN_FILE); never logged',
  ),
  bullBoard: setting(
    'BULL_BOARD',
    oneOf(['read-only', 'manage', 'off']),
    'read-only',
    'read-only',
    'Bull Board at /queues: read-only, manage (retry, clean, remove jobs) or off',
  ),
  // replay
  replayTape: setting(
    'REPLAY_TAPE',
    text(),
    undefined,
    'the bundled tape (FEED=massive or alpaca: the bundled AIG day)',
    'file, comma list or folder of tapes to replay',
  ),
  replaySpeed: setting(
    'REPLAY_SPEED',
    z.string().transform((v, ctx) => {
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0) {
        ctx.addIssue({ code: 'custom', message: 'must be 0 (as fast as possible) or a positive speed factor' });
        return z.NEVER;
      }
      return n;
    }),
    0,
    '0',
    '0: as fast as the socket takes it; else the recorded pace times this',
  ),
  replayPort: setting('REPLAY_PORT', int(0, 65535), 0, 'a free port', 'where the replay server (or provider-server) listens'),
  replayHost: setting('REPLAY_HOST', text(), '127.0.0.1', '127.0.0.1', 'the address it listens on'),
  replayShift: setting('REPLAY_SHIFT', bool(), true, 'true', 'paced replay: stamp each trade with the moment it is sent'),
  replayFrameTrades: setting('REPLAY_FRAME_TRADES', int(1, 10_000), 500, '500', 'trades per replayed frame at full speed'),
  replayProgressMs: setting(
    'REPLAY_PROGRESS_MS',
    int(0, 3_600_000),
    10_000,
    '10000',
    'paced replay: a "replayed N% of the tape" line at each 1 % of its span, at most this often (0: at each 1 %)',
  ),
  replayFrom: setting('REPLAY_FROM', instant(), undefined, '—', "the replay server skips the tape's trades before this ISO date-time"),
  // backfill
  massiveRestUrl: setting('MASSIVE_REST_URL', text(), 'https://api.massive.com', 'https://api.massive.com', "Massive's REST base"),
  alpacaRestUrl: setting(
    'ALPACA_REST_URL',
    z.string().url('must be an http(s) URL'),
    'https://data.alpaca.markets',
    'https://data.alpaca.markets',
    "Alpaca's market-data REST base for backfill (/v2/stocks/{symbol}/trades and /bars; the feed parameter is ALPACA_WS_URL's last path segment, iex or sip)",
  ),
  binanceRestUrl: setting(
    'BINANCE_REST_URL',
    z.string().url('must be an http(s) URL'),
    'https://api.binance.com',
    'https://api.binance.com',
    "Binance's REST base for backfill (/api/v3/klines, /api/v3/aggTrades; market data needs no key)",
  ),
  backfill: setting(
    'BACKFILL',
    onOff(),
    (c) => c.mode === 'live',
    'on live, off replay',
    "fill the span before each symbol's first live trade and every outage",
  ),
  backfillProvider: setting(
    'BACKFILL_PROVIDER',
    oneOf(['finnhub', 'massive', 'binance', 'alpaca']),
    (c) =>
      c.feed === 'binance'
        ? 'binance'
        : c.feed === 'alpaca' && c.alpacaApiKey && c.alpacaApiSecret
          ? 'alpaca'
          : c.massiveApiKey
            ? 'massive'
            : 'finnhub',
    'binance with FEED=binance, alpaca with FEED=alpaca and its key and secret, else massive with a key, else finnhub',
    'where history comes from',
  ),
  backfillMode: setting(
    'BACKFILL_MODE',
    oneOf(['ticks', 'candles']),
    (c) => (c.backfillProvider === 'finnhub' ? 'candles' : 'ticks'),
    'ticks Massive, Binance and Alpaca, candles Finnhub',
    'tick-level trades (an exact splice) or 1-minute candles',
  ),
  backfillRate: setting(
    'BACKFILL_RATE',
    int(1, 100_000),
    (c) => ({ massive: 5, binance: 240, finnhub: 60, alpaca: 200 })[c.backfillProvider as string] ?? 60,
    '60 Finnhub, 5 Massive, 240 Binance, 200 Alpaca',
    "provider requests a minute (Finnhub's, Massive's and Alpaca's free tiers; Binance: at most 960 of its 6,000 request weight a minute)",
  ),
  backfillRetries: setting('BACKFILL_RETRIES', int(0, 20), 4, '4', 'further attempts after a 429, a 5xx or no answer'),
  backfillHoldMs: setting('BACKFILL_HOLD', duration(), 120_000, '2min', "how long a symbol's bars wait for its backfill at most"),
  backfillMaxSpanMs: setting('BACKFILL_MAX_SPAN', duration(), 86_400_000, '24h', 'a backfill never reaches further back than this'),
  backfillFrom: setting(
    'BACKFILL_FROM',
    text(),
    undefined,
    '—',
    'historical mode (--from): a date (midnight in BAR_TZ) or an ISO date-time',
  ),
  backfillTo: setting('BACKFILL_TO', text(), undefined, '—', 'historical mode (--to), exclusive'),
} as const;

type Value<S> = S extends Setting<infer T> ? T : never;
type Read = { -readonly [K in keyof typeof SETTINGS]: Value<(typeof SETTINGS)[K]> };

/** The parsed configuration: every setting of the table, plus what follows from them. */
export interface Config extends Readonly<Omit<Read, 'intervals' | 'tz' | 'backfillFrom' | 'backfillTo'>> {
  readonly intervals: readonly Interval[];
  /** activity bars named in INTERVALS (100t, 10000v, t-imb-e100; docs/activity-bars.md), apart from the time intervals */
  readonly activity: readonly ActivityInterval[];
  /** the base interval: the gcd of the intervals */
  readonly baseMs: number;
  readonly tz: string;
  /** historical mode's range (UTC ms) */
  readonly backfillFrom: number | undefined;
  readonly backfillTo: number | undefined;
  /** REDIS_USERS_FILE read: role -> its Redis user (empty without the file) */
  readonly redisUsers: Readonly<Record<string, { username: string; password: string }>>;
}

/** Secrets that may come from a file (`X_FILE`, the Docker and Kubernetes secrets convention) instead of `X`. */
const SECRETS = [
  'FINNHUB_TOKEN',
  'MASSIVE_API_KEY',
  'ALPACA_API_KEY',
  'ALPACA_API_SECRET',
  'REDIS_PASSWORD',
  'REDIS_SENTINEL_PASSWORD',
  'HTTP_TOKEN',
  'DATABASE_PASSWORD',
] as const;

/** Every variable a Config is read from, for flags and child processes. */
export function configEnvNames(): string[] {
  return [...Object.values(SETTINGS).map((s) => s.env), ...SECRETS.map((s) => `${s}_FILE`)];
}

type SettingKey = keyof typeof SETTINGS;

const REDIS_SETTINGS: readonly SettingKey[] = [
  'redisUrl',
  'redisPassword',
  'redisUsername',
  'redisUsersFile',
  'redisCluster',
  'redisSentinels',
  'redisSentinelMaster',
  'redisSentinelPassword',
  'redisTlsCaFile',
  'redisTlsCertFile',
  'redisTlsKeyFile',
  'redisTlsServername',
  'redisConnectTimeoutMs',
  'redisAnswerTimeoutMs',
  'redisCheckEveryMs',
  'keyPrefix',
];
const LOG_SETTINGS: readonly SettingKey[] = ['logLevel', 'logPretty', 'logFile', 'logFileSize', 'logFileCount', 'logName', 'dataDir'];
const METRICS_SETTINGS: readonly SettingKey[] = ['metricsPort', 'metricsHost'];
/** what a role on one Redis connection reads besides its own: Redis, its log, /metrics and /healthz */
const SERVICE_SETTINGS = [...REDIS_SETTINGS, ...LOG_SETTINGS, ...METRICS_SETTINGS];
const CALENDAR_SETTINGS: readonly SettingKey[] = ['intervals', 'tz', 'sessions', 'align', 'graceMs'];

/**
 * The settings each role reads (`candlewick <role> --help`), by the role's name; `stack` passes
 * every one on to its roles. Every role accepts every setting as a flag, so one set of flags
 * works for all of them; this says which ones change what the role does.
 */
/** DATABASE_URL and what goes with it: pg-sink, and the roles that write or read the bars table when it is set. */
const DATABASE_SETTINGS: readonly SettingKey[] = ['databaseUrl', 'databasePassword', 'databaseConnectTimeoutMs'];

const READ_BY: Readonly<Record<string, readonly SettingKey[]>> = {
  ingest: [
    'feed',
    'finnhubToken',
    'mode',
    'finnhubWsUrl',
    'binanceWsUrl',
    'binanceStream',
    'massiveWsUrl',
    'massiveApiKey',
    'alpacaWsUrl',
    'alpacaApiKey',
    'alpacaApiSecret',
    'symbols',
    'replayTape',
    'staleMs',
    ...CALENDAR_SETTINGS,
    'futureLimitMs',
    'clock',
    'partitions',
    'ingestBatch',
    'ingestFlushMs',
    'ingestRetainMs',
    'ingestWaitReplicas',
    'tradesRetentionMs',
    'tradeIdsWindowMs',
    'backfill',
    'backfillHoldMs',
    'backfillMaxSpanMs',
    ...SERVICE_SETTINGS,
  ],
  'replay-server': [
    'feed',
    'replayTape',
    'replaySpeed',
    'replayPort',
    'replayHost',
    'replayShift',
    'replayFrameTrades',
    'replayProgressMs',
    'replayFrom',
    'massiveApiKey',
    'alpacaApiKey',
    'alpacaApiSecret',
    ...LOG_SETTINGS,
    ...METRICS_SETTINGS,
  ],
  aggregate: [
    ...CALENDAR_SETTINGS,
    'late',
    'lateAmendWindowMs',
    'conditions',
    'conditionCodes',
    'feed',
    'partitions',
    'aggregatorBatch',
    'ingestBatch',
    'consumerName',
    'takeoverMs',
    'reclaimIdleMs',
    'backfill',
    ...SERVICE_SETTINGS,
  ],
  close: [
    ...CALENDAR_SETTINGS,
    'mode',
    'clock',
    'late',
    'lateAmendWindowMs',
    'emptyBars',
    'partitions',
    'closeEveryMs',
    'closeWhenIdleMs',
    'tradesRetentionMs',
    ...SERVICE_SETTINGS,
  ],
  write: [
    ...CALENDAR_SETTINGS,
    'symbols',
    'emptyBars',
    'csvExtraColumns',
    'partitions',
    'takeoverMs',
    'barsRetentionMs',
    ...SERVICE_SETTINGS,
  ],
  'pg-sink': [
    'databaseUrl',
    'databasePassword',
    'databaseBatch',
    'databaseConnectTimeoutMs',
    'intervals',
    'consumerName',
    ...SERVICE_SETTINGS,
  ],
  backfill: [
    'backfill',
    'backfillProvider',
    'backfillMode',
    'backfillRate',
    'backfillRetries',
    'backfillFrom',
    'backfillTo',
    'symbols',
    'finnhubToken',
    'finnhubRestUrl',
    'massiveApiKey',
    'massiveRestUrl',
    'binanceRestUrl',
    'alpacaApiKey',
    'alpacaApiSecret',
    'alpacaRestUrl',
    'alpacaWsUrl',
    'feed',
    ...CALENDAR_SETTINGS,
    'conditions',
    'conditionCodes',
    'csvExtraColumns',
    'partitions',
    ...DATABASE_SETTINGS,
    ...SERVICE_SETTINGS,
  ],
  tap: ['dataDir', 'intervals', 'partitions', 'logLevel', 'logPretty', ...REDIS_SETTINGS],
  'provider-server': [
    'replayTape',
    'replayHost',
    'replayPort',
    'finnhubToken',
    'massiveApiKey',
    'alpacaApiKey',
    'alpacaApiSecret',
    ...LOG_SETTINGS,
  ],
  bars: [
    'replayTape',
    'dataDir',
    'symbols',
    ...CALENDAR_SETTINGS,
    'futureLimitMs',
    'clock',
    'late',
    'emptyBars',
    'conditions',
    'conditionCodes',
    'csvExtraColumns',
    'partitions',
    ...DATABASE_SETTINGS,
    'logLevel',
  ],
  serve: [
    'httpPort',
    'httpHost',
    'httpToken',
    'bullBoard',
    ...CALENDAR_SETTINGS,
    'clock',
    'late',
    'symbols',
    'partitions',
    'csvExtraColumns',
    ...DATABASE_SETTINGS,
    ...SERVICE_SETTINGS,
  ],
  'pg-load': ['dataDir', 'intervals', 'tz', 'symbols', ...DATABASE_SETTINGS, 'logLevel'],
  acl: ['keyPrefix', 'redisUsersFile'],
};

/**
 * The settings as a table: variable, default, meaning (`candlewick help settings`); with a role,
 * only the settings that role reads, in the table's order (`candlewick <role> --help`).
 */
export function settingsTable(role?: string): { env: string; shown: string; doc: string }[] {
  const only = role === undefined || role === 'stack' ? undefined : new Set(READ_BY[role] ?? []);
  return (Object.entries(SETTINGS) as [SettingKey, Setting<unknown>][])
    .filter(([key]) => only === undefined || only.has(key))
    .map(([, { env, shown, doc }]) => ({ env, shown, doc }));
}

/** A schema of every variable, each optional, for tests that check what a compose file sets. */
export const ENV_SCHEMA = z.object(Object.fromEntries(configEnvNames().map((name) => [name, z.string().optional()])));

export type EnvLike = Record<string, string | undefined>;

const nonEmpty = (s: string | undefined) => (s === undefined || s.trim() === '' ? undefined : s.trim());

/**
 * `X_FILE` read into `X`: trimmed, an empty file counts as unset. Both set, or a file that cannot
 * be read, is a problem naming the variable (never the secret).
 */
function readSecretFiles(merged: EnvLike, problems: string[]): void {
  for (const name of SECRETS) {
    const file = merged[`${name}_FILE`];
    if (file === undefined) continue;
    if (merged[name] !== undefined) {
      problems.push(`${name} and ${name}_FILE are both set: give the secret one way`);
      continue;
    }
    try {
      const value = readFileSync(file, 'utf8').trim();
      if (value !== '') merged[name] = value;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      problems.push(
        `${name}_FILE=${JSON.stringify(file)}: cannot read it (${code}); it must be a file this process (uid ${process.getuid?.() ?? '?'}) can read`,
      );
    }
  }
}

/** The activity bars of an INTERVALS value (already checked by its setting), first of each name. */
function activityIntervals(v: string | undefined): readonly ActivityInterval[] {
  const out = new Map<string, ActivityInterval>();
  for (const part of (v ?? '').split(','))
    if (part.trim() !== '' && isActivityName(part)) {
      const iv = parseActivityInterval(part);
      if (!out.has(iv.name)) out.set(iv.name, iv);
    }
  return Object.freeze([...out.values()]);
}

/** Parses the environment (and overrides, e.g. CLI flags, by variable name) into a frozen Config. */
export function loadConfig(env: EnvLike, overrides: EnvLike = {}): Config {
  const merged: EnvLike = {};
  for (const key of configEnvNames()) {
    const v = nonEmpty(overrides[key] ?? env[key]);
    if (v !== undefined) merged[key] = v;
  }
  const problems: string[] = [];
  readSecretFiles(merged, problems);

  const c: Record<string, unknown> = {};
  for (const [key, s] of Object.entries(SETTINGS) as [string, Setting<unknown>][]) {
    const raw = merged[s.env];
    if (raw !== undefined) {
      const r = s.read.safeParse(raw);
      if (r.success) c[key] = r.data;
      else {
        const secret = /TOKEN|KEY|PASSWORD/.test(s.env);
        // a message that names what is wrong itself ('invalid interval "3sec"', a file's path) needs no copy of the value
        for (const issue of r.error.issues) {
          // (quoted, or a path: a bare word such as "binanc" may be inside the rule itself)
          const m = issue.message;
          const named = !secret && (/^invalid /.test(m) || m.includes(JSON.stringify(raw)) || (raw.includes('/') && m.includes(raw)));
          problems.push(named ? `${s.env}: ${issue.message}` : `${s.env}=${JSON.stringify(secret ? '***' : raw)}: ${issue.message}`);
        }
      }
    }
    if (c[key] === undefined) c[key] = typeof s.def === 'function' ? (s.def as (k: Known) => unknown)(c) : s.def;
  }
  checkTogether(c, merged, problems);
  if (problems.length) throw new ConfigError(problems);
  const intervalsRead = c.intervals as readonly Interval[];
  return Object.freeze({ ...c, activity: activityIntervals(merged.INTERVALS), baseMs: baseIntervalMs(intervalsRead) }) as unknown as Config;
}

/**
 * What is wrong with a list of symbols to subscribe (SYMBOLS, or a tape's symbols): a symbol outside
 * the allowed characters, or two symbols whose files would be one (BINANCE:XRPETH and
 * BINANCE_XRPETH both write BINANCE_XRPETH_1min.csv).
 */
export function symbolProblems(symbols: readonly string[], where: string): string[] {
  const problems: string[] = [];
  const byFile = new Map<string, string>();
  for (const s of symbols) {
    if (!SYMBOL_PATTERN.test(s)) {
      problems.push(`${where}: ${visibleSymbol(s)} is not a symbol (${SYMBOL_RULE})`);
      continue;
    }
    // (case folded: on a filesystem that ignores case, as macOS's and Windows' do by default, aapl and AAPL are one file)
    const file = fileSafeSymbol(s);
    const other = byFile.get(file.toLowerCase());
    if (other !== undefined && other !== s)
      problems.push(
        `${where}: "${other}" and "${s}" would share the files ${file}_{interval}.csv (":" and "/" become "_", and a filesystem that ignores case makes aapl and AAPL one file); subscribe to one of them`,
      );
    else byFile.set(file.toLowerCase(), s);
  }
  return problems;
}

/** Pairs one connection to Binance carries (its limit). */
export const BINANCE_MAX_STREAMS = 1024;

/**
 * FEED=binance (or Binance's history): a pair named bare is Finnhub's BINANCE:<PAIR>, for every role
 * alike — the same files and bars whichever feed brought the trades, and crypto's calendar (around
 * the clock). A name Binance cannot have, one pair named twice, or more pairs than one connection
 * carries is a problem naming what was written.
 */
function binancePairs(symbols: readonly string[], problems: string[]): readonly string[] {
  const seen = new Map<string, string>();
  const out: string[] = [];
  for (const s of symbols) {
    const colon = s.indexOf(':');
    const pair = s.slice(colon + 1).toUpperCase();
    if ((colon >= 0 && s.slice(0, colon).toUpperCase() !== 'BINANCE') || !/^[A-Z0-9]{2,30}$/.test(pair)) {
      problems.push(`SYMBOLS: "${s}" is not a Binance pair: write it as Binance does, e.g. BTCUSDT or BINANCE:BTCUSDT`);
      out.push(s); // (still named: the list is not empty because of it)
      continue;
    }
    const name = `BINANCE:${pair}`;
    const other = seen.get(name);
    if (other !== undefined) problems.push(`SYMBOLS: "${other}" and "${s}" are one Binance pair, ${name}: name it once`);
    else {
      seen.set(name, s);
      out.push(name);
    }
  }
  if (out.length > BINANCE_MAX_STREAMS)
    problems.push(
      `SYMBOLS names ${out.length} Binance pairs; one connection to Binance carries at most ${BINANCE_MAX_STREAMS}: ` +
        `subscribe to fewer, or run an ingestor per subset (\`candlewick ingest\` with its own SYMBOLS, on one Redis)`,
    );
  return Object.freeze(out);
}

/** The rules that span settings; also turns --from/--to into instants in BAR_TZ. */
function checkTogether(c: Record<string, unknown>, merged: EnvLike, problems: string[]): void {
  // half of Alpaca's credentials: neither live (it needs both) nor quietly a replay
  if ((c.feed === 'alpaca' || c.backfillProvider === 'alpaca') && !c.alpacaApiKey !== !c.alpacaApiSecret)
    problems.push(
      `${c.alpacaApiKey ? 'ALPACA_API_KEY' : 'ALPACA_API_SECRET'} is set but ${c.alpacaApiKey ? 'ALPACA_API_SECRET' : 'ALPACA_API_KEY'} is not: ` +
        (c.feed === 'alpaca'
          ? 'FEED=alpaca reads live with both (the key id and its secret), and replays with neither'
          : 'BACKFILL_PROVIDER=alpaca sends both (the key id and its secret) with every request'),
    );
  if (c.mode === 'live' && !c.massiveApiKey && c.feed === 'massive')
    problems.push('MODE=live with FEED=massive needs MASSIVE_API_KEY (a Massive API key); unset MODE to replay the bundled tape');
  if (c.mode === 'live' && c.feed === 'alpaca' && !(c.alpacaApiKey && c.alpacaApiSecret)) {
    const missing = [c.alpacaApiKey ? undefined : 'ALPACA_API_KEY', c.alpacaApiSecret ? undefined : 'ALPACA_API_SECRET'].filter(Boolean);
    problems.push(
      `MODE=live with FEED=alpaca needs ALPACA_API_KEY and ALPACA_API_SECRET (an Alpaca API key id and its secret; ${missing.join(' and ')} not set); unset MODE to replay the bundled tape`,
    );
  }
  if (c.mode === 'live' && !c.finnhubToken && c.feed === 'finnhub')
    problems.push(
      'MODE=live needs FINNHUB_TOKEN (a Finnhub API key); unset MODE to replay the bundled tape, or read Binance (FEED=binance: no key)',
    );
  if (c.feed === 'binance' || c.backfillProvider === 'binance') c.symbols = binancePairs(c.symbols as readonly string[], problems);
  // the stocks streams take US tickers only: another venue's name or a crypto pair is said before anything starts
  if (c.feed === 'massive' || c.feed === 'alpaca')
    for (const s of c.symbols as readonly string[])
      if (!STOCK_TICKER.test(s))
        problems.push(
          `SYMBOLS: ${JSON.stringify(s)} is not a US stock ticker (FEED=${String(c.feed)} reads stocks): write it as the provider does, e.g. AAPL or BRK.A`,
        );
  const symbols = c.symbols as readonly string[];
  problems.push(...symbolProblems(symbols, 'SYMBOLS'));
  if (c.mode === 'live' && symbols.length === 0)
    problems.push('SYMBOLS: name the symbols to subscribe in live mode, e.g. SYMBOLS=AAPL,MSFT,BINANCE:BTCUSDT');
  if (c.backfillProvider === 'finnhub' && c.backfillMode === 'ticks') {
    problems.push(
      'BACKFILL_MODE=ticks: Finnhub has no tick history for this; use BACKFILL_PROVIDER=massive, alpaca or binance, or BACKFILL_MODE=candles',
    );
  }
  const redisUrl = (c.redisUrl as string | undefined) ?? '';
  for (const u of redisUrl.split(',').filter((x) => x.trim() !== '')) {
    if (!/^rediss?:\/\/[^/]/.test(u.trim()))
      problems.push(`REDIS_URL: "${redactUrl(u.trim())}" is not a redis:// or rediss:// URL, e.g. redis://127.0.0.1:6379`);
  }
  if (!c.redisCluster && redisUrl.includes(','))
    problems.push('REDIS_URL: several URLs are the seed nodes of a Redis Cluster; set REDIS_CLUSTER=on, or give one URL');
  redisAccessProblems(c, redisUrl, problems);
  const tz = c.tz as string;
  const when = (name: string, v: unknown): number | undefined => {
    if (v === undefined) return undefined;
    const text = String(v);
    // a bare date is midnight in BAR_TZ
    const t = /^\d{4}-\d{2}-\d{2}$/.test(text) ? DateTime.fromISO(text, { zone: tz }).toMillis() : Date.parse(text);
    if (!Number.isFinite(t))
      problems.push(`${name}: "${text}" is not a date or date-time; use e.g. 2013-10-10 or 2013-10-10T09:30:00-04:00`);
    return t;
  };
  c.backfillFrom = when('--from (BACKFILL_FROM)', c.backfillFrom);
  c.backfillTo = when('--to (BACKFILL_TO)', c.backfillTo);
  if ((c.backfillFrom === undefined) !== (c.backfillTo === undefined))
    problems.push('--from and --to go together: name both ends of the range');
  else if (c.backfillFrom !== undefined && (c.backfillFrom as number) >= (c.backfillTo as number))
    problems.push('--from must be before --to');
  void merged;
}

/** Sentinel, TLS and per-role users: what must hold together (files readable, each named by its setting). */
function redisAccessProblems(c: Record<string, unknown>, redisUrl: string, problems: string[]): void {
  const sentinels = c.redisSentinels as readonly string[];
  for (const s of sentinels)
    if (!/^[^\s:,]+:\d{1,5}$/.test(s)) problems.push(`REDIS_SENTINELS: "${s}" is not host:port, e.g. 10.0.0.1:26379`);
  if (sentinels.length > 0 && c.redisCluster)
    problems.push('REDIS_SENTINELS and REDIS_CLUSTER=on: a Redis is either watched by sentinels or a cluster; choose one');
  const readable = (name: string, file: unknown) => {
    if (file === undefined) return;
    try {
      readFileSync(String(file));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      problems.push(
        `${name}=${JSON.stringify(file)}: cannot read it (${code}); it must be a file this process (uid ${process.getuid?.() ?? '?'}) can read`,
      );
    }
  };
  readable('REDIS_TLS_CA_FILE', c.redisTlsCaFile);
  readable('REDIS_TLS_CERT_FILE', c.redisTlsCertFile);
  readable('REDIS_TLS_KEY_FILE', c.redisTlsKeyFile);
  if ((c.redisTlsCertFile === undefined) !== (c.redisTlsKeyFile === undefined))
    problems.push('REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together: a client certificate needs its key');
  const tlsSet = ['redisTlsCaFile', 'redisTlsCertFile', 'redisTlsKeyFile', 'redisTlsServername'].some((k) => c[k] !== undefined);
  // (without REDIS_URL there is no TLS either: stack's private Redis and the default are plain)
  if (tlsSet && sentinels.length === 0 && !(redisUrl !== '' && redisUrl.split(',').every((u) => u.trim().startsWith('rediss://'))))
    problems.push('REDIS_TLS_* settings are for a TLS Redis: write REDIS_URL as rediss://host:port');
  const usersFile = c.redisUsersFile as string | undefined;
  if (usersFile !== undefined) {
    try {
      c.redisUsers = parseRedisUsers(readFileSync(usersFile, 'utf8'));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      problems.push(
        code
          ? `REDIS_USERS_FILE=${JSON.stringify(usersFile)}: cannot read it (${code}); it must be a file this process (uid ${process.getuid?.() ?? '?'}) can read`
          : `REDIS_USERS_FILE=${JSON.stringify(usersFile)}: ${(err as Error).message}`,
      );
    }
  }
  c.redisUsers ??= Object.freeze({});
}

/** The roles a REDIS_USERS_FILE names (each connects as its own user). */
export const REDIS_USER_ROLES = ['stack', 'ingest', 'aggregate', 'close', 'write', 'pg-sink', 'backfill', 'serve', 'tap'] as const;

/** REDIS_USERS_FILE's lines `role user password` (# comments); an error names the line, never a password. */
export function parseRedisUsers(text: string): Readonly<Record<string, { username: string; password: string }>> {
  const out: Record<string, { username: string; password: string }> = {};
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const [role, username, password, ...rest] = line.split(/\s+/);
    if (!role || !username || !password || rest.length > 0)
      throw new Error(`line ${i + 1}: write "role user password" (three words), e.g. "ingest cw-ingest <password>"`);
    if (!(REDIS_USER_ROLES as readonly string[]).includes(role))
      throw new Error(`line ${i + 1}: "${role}" is not a role; use one of ${REDIS_USER_ROLES.join(', ')}`);
    out[role] = { username, password };
  });
  return Object.freeze(out);
}
