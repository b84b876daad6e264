import { readFileSync } from 'node:fs';
import { DateTime } from 'luxon';
import { z } from 'zod';
import { ConditionCodesError, baseIntervalMs, Clock, parseConditionCodes, parseDurationMs, parseInterval, type Interval } from '@candlewick/core';
import { redactUrl } from './logger.js';

/**
 * The one configuration schema. Every role parses the environment (plus CLI flags) once, at its
 * entry point, into a frozen Config; nothing else reads process.env. A bad value is a ConfigError
 * that names the variable and the rule.
 */

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

const int = (min: number, max: number, def: number) =>
  z
    .string()
    .trim()
    .regex(/^\d+$/, `must be a whole number from ${min} to ${max}`)
    .transform(Number)
    .pipe(z.number().int().min(min).max(max))
    .optional()
    .transform((v) => v ?? def);

const bool = (def: boolean) =>
  z
    .string()
    .trim()
    .toLowerCase()
    .refine((v) => ['true', 'false', '1', '0', 'yes', 'no', 'on', 'off'].includes(v), 'must be true or false')
    .transform((v) => ['true', '1', 'yes', 'on'].includes(v))
    .optional()
    .transform((v) => v ?? def);

const duration = (def: string) =>
  z
    .string()
    .optional()
    .transform((v, ctx) => {
      try {
        return parseDurationMs(v ?? def);
      } catch (e) {
        ctx.addIssue({ code: 'custom', message: (e as Error).message });
        return z.NEVER;
      }
    });

const nonEmpty = (s: string | undefined) => (s === undefined || s.trim() === '' ? undefined : s.trim());

export const ENV_SCHEMA = z.object({
  MODE: z.enum(['live', 'replay']).optional(),
  FINNHUB_TOKEN: z.string().optional(),
  FINNHUB_TOKEN_FILE: z.string().optional(),
  REDIS_PASSWORD: z.string().optional(),
  REDIS_PASSWORD_FILE: z.string().optional(),
  MASSIVE_API_KEY_FILE: z.string().optional(),
  FINNHUB_WS_URL: z.string().url('must be a ws:// or wss:// URL').optional(),
  FINNHUB_REST_URL: z.string().url('must be an http(s) URL').optional(),
  SYMBOLS: z.string().optional(),
  INTERVALS: z.string().optional(),
  BAR_TZ: z.string().optional(),
  GRACE_MS: int(0, 3_600_000, 2000),
  CLOCK: z.enum(['wall', 'event'], { message: 'must be wall or event' }).optional(),
  DATA_DIR: z.string().optional(),
  REDIS_URL: z.string().optional(),
  REDIS_CLUSTER: z.enum(['on', 'off'], { message: 'must be on or off' }).default('off'),
  KEY_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, _ . - only')
    .optional(),
  STREAM_PARTITIONS: int(1, 1024, 1),
  AGGREGATORS: int(1, 64, 1),
  AGGREGATOR_BATCH: int(1, 10_000, 2000),
  INGEST_BATCH: int(1, 10_000, 1000),
  INGEST_FLUSH_MS: int(0, 1000, 2),
  INGEST_RETAIN: duration('3s'),
  REDIS_CONNECT_TIMEOUT: duration('30s'),
  CLOSE_EVERY_MS: int(50, 60_000, 250),
  RECLAIM_IDLE_MS: int(100, 3_600_000, 30_000),
  CONSUMER_NAME: z
    .string()
    .regex(/^[A-Za-z0-9_.:-]{1,100}$/, 'letters, digits, _ . : - only (at most 100)')
    .optional(),
  TAKEOVER_MS: duration('3s'),
  TRADES_RETENTION: duration('1h'),
  BARS_RETENTION: duration('7d'),
  CLOSE_WHEN_IDLE_MS: z
    .string()
    .trim()
    .regex(/^\d+$/, 'must be a whole number of ms (0 = never)')
    .transform(Number)
    .optional(),
  EXIT_WHEN_IDLE_MS: z
    .string()
    .trim()
    .regex(/^\d+$/, 'must be a whole number of ms (0 = never exit)')
    .transform(Number)
    .optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).optional(),
  LOG_PRETTY: bool(process.stdout.isTTY ?? false),
  LOG_FILE: bool(true),
  LOG_FILE_SIZE: z.string().regex(/^\d+[kmg]?$/i, 'a size such as 10m, 500k or 1g').default('10m'),
  LOG_FILE_COUNT: int(1, 1000, 5),
  LOG_NAME: z.string().regex(/^[A-Za-z0-9_-]+$/, 'letters, digits, _ and - only').optional(),
  METRICS_PORT: int(0, 65535, 0),
  METRICS_HOST: z.string().default('127.0.0.1'),
  REPLAY_TAPE: z.string().optional(),
  REPLAY_SPEED: z
    .string()
    .optional()
    .transform((v, ctx) => {
      const n = Number(v ?? '0');
      if (!Number.isFinite(n) || n < 0) {
        ctx.addIssue({ code: 'custom', message: 'must be 0 (as fast as possible) or a positive speed factor' });
        return z.NEVER;
      }
      return n;
    }),
  REPLAY_PORT: int(0, 65535, 0),
  REPLAY_HOST: z.string().optional(),
  REPLAY_SHIFT: bool(true),
  REPLAY_FRAME_TRADES: int(1, 10_000, 500),
  BACKFILL: z.enum(['on', 'off']).optional(),
  REDIS_SERVER_BIN: z.string().optional(),
  STACK_NICE: int(0, 19, 5),
  STALE_MS: int(1000, 3_600_000, 30_000),
  SESSIONS: z.enum(['regular', 'extended', 'all'], { message: 'must be regular, extended or all' }).optional(),
  ALIGN: z.enum(['clock', 'session'], { message: 'must be clock or session' }).optional(),
  LATE: z.enum(['drop', 'amend'], { message: 'must be drop or amend' }).optional(),
  EMPTY_BARS: z.enum(['skip', 'carry'], { message: 'must be skip or carry' }).optional(),
  LATE_AMEND_WINDOW: duration('1h'),
  BACKFILL_PROVIDER: z.enum(['finnhub', 'massive'], { message: 'must be finnhub or massive' }).optional(),
  BACKFILL_MODE: z.enum(['ticks', 'candles'], { message: 'must be ticks or candles' }).optional(),
  MASSIVE_API_KEY: z.string().optional(),
  MASSIVE_REST_URL: z.string().optional(),
  BACKFILL_RATE: int(1, 100_000, 0),
  BACKFILL_RETRIES: int(0, 20, 4),
  BACKFILL_HOLD: duration('2min'),
  BACKFILL_MAX_SPAN: duration('24h'),
  CSV_EXTRA_COLUMNS: bool(false),
  REPLAY_FROM: z.string().optional(),
  BACKFILL_FROM: z.string().optional(),
  BACKFILL_TO: z.string().optional(),
  CONDITIONS: z.enum(['all', 'cta-utp'], { message: 'must be all or cta-utp' }).optional(),
  CONDITION_CODES: z.string().optional(),
});

export type Mode = 'live' | 'replay';

export interface Config {
  readonly mode: Mode;
  readonly finnhubToken: string | undefined;
  readonly finnhubWsUrl: string;
  readonly finnhubRestUrl: string;
  readonly symbols: readonly string[];
  readonly intervals: readonly Interval[];
  readonly baseMs: number;
  readonly tz: string;
  readonly graceMs: number;
  readonly clock: 'wall' | 'event';
  readonly dataDir: string;
  readonly redisUrl: string | undefined;
  /** REDIS_PASSWORD or the content of REDIS_PASSWORD_FILE (a REDIS_URL carrying one wins) */
  readonly redisPassword: string | undefined;
  /** REDIS_URL names Redis Cluster nodes (comma-separated seeds); without REDIS_URL the stack starts a private cluster */
  readonly redisCluster: boolean;
  readonly keyPrefix: string;
  readonly partitions: number;
  readonly aggregators: number;
  readonly aggregatorBatch: number;
  readonly ingestBatch: number;
  readonly ingestFlushMs: number;
  /** how long the ingestor keeps a batch Redis acknowledged, to send it again if Redis loses it */
  readonly ingestRetainMs: number;
  /** a role that cannot reach Redis this long at start exits 3 */
  readonly redisConnectTimeoutMs: number;
  readonly closeEveryMs: number;
  readonly reclaimIdleMs: number;
  /** this worker's stable name in its consumer group (default: the stack's slot, a container's hostname, else this process) */
  readonly consumerName: string | undefined;
  /** a worker whose heartbeat is older than this is dead: the others take over its pending entries */
  readonly takeoverMs: number;
  readonly tradesRetentionMs: number;
  /** closed-bar streams bars:{interval} are trimmed by age (MINID) to this */
  readonly barsRetentionMs: number;
  readonly exitWhenIdleMs: number;
  /** event clock: the closer closes every open bar once the feed has been quiet this long and all is merged (the end of a replay); 0 = never */
  readonly closeWhenIdleMs: number;
  readonly logLevel: string;
  readonly logPretty: boolean;
  /** also keep the log, rotated, in DATA_DIR/logs/{logName}.{n}.log */
  readonly logFile: boolean;
  readonly logFileSize: string;
  readonly logFileCount: number;
  /** file stem of this process's log (default: the role) */
  readonly logName: string | undefined;
  /** serve /metrics and /healthz on this port (0 = off) */
  readonly metricsPort: number;
  readonly metricsHost: string;
  readonly replayTape: string | undefined;
  readonly replaySpeed: number;
  readonly replayPort: number;
  readonly replayHost: string;
  readonly replayShift: boolean;
  readonly replayFrameTrades: number;
  readonly backfill: boolean;
  readonly redisServerBin: string;
  readonly stackNice: number;
  readonly staleMs: number;
  /** which US-equity sessions' trades make bars (symbols with an exchange prefix are never filtered) */
  readonly sessions: 'regular' | 'extended' | 'all';
  /** equity bars on the clock (09:00, 10:00) or from the open (09:30, 10:30) */
  readonly align: 'clock' | 'session';
  /** late trades: only kept (drop), or also folded into corrected bars (amend) */
  readonly late: 'drop' | 'amend';
  /** windows without trades: no row (skip) or a flat row at the previous close (carry) */
  readonly emptyBars: 'skip' | 'carry';
  /** how long past the watermark a closed bar can still be corrected */
  readonly lateAmendWindowMs: number;
  /** which prints set which bar fields: every print alike (all), or the trade-condition table (cta-utp) */
  readonly conditions: 'all' | 'cta-utp';
  /** where backfill comes from, and how */
  readonly backfillProvider: 'finnhub' | 'massive';
  readonly backfillMode: 'ticks' | 'candles';
  readonly massiveApiKey: string | undefined;
  readonly massiveRestUrl: string;
  /** provider requests per minute (token bucket) */
  readonly backfillRate: number;
  readonly backfillRetries: number;
  /** how long a symbol's bars wait for its backfill at most */
  readonly backfillHoldMs: number;
  /** how far back a backfill span reaches at most */
  readonly backfillMaxSpanMs: number;
  /** CSV: add the complete and sources columns */
  readonly csvExtraColumns: boolean;
  /** replay: skip the tape's trades before this time (UTC ms) */
  readonly replayFrom: number | undefined;
  /** `candlewick backfill --from … --to …`: the historical range (UTC ms) */
  readonly backfillFrom: number | undefined;
  readonly backfillTo: number | undefined;
  /** the feed's condition codes -> condition names, from the CONDITION_CODES file */
  readonly conditionCodes: Readonly<Record<string, readonly string[]>>;
}

export type EnvLike = Record<string, string | undefined>;

/** Secrets that may come from a file (`X_FILE`, the Docker and Kubernetes secrets convention) instead of `X`. */
const SECRETS = ['FINNHUB_TOKEN', 'MASSIVE_API_KEY', 'REDIS_PASSWORD'] as const;

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
      problems.push(`${name}_FILE=${JSON.stringify(file)}: cannot read it (${code}); it must be a file this process (uid ${process.getuid?.() ?? '?'}) can read`);
    }
  }
}

/** Parses the environment (and overrides, e.g. CLI flags, by variable name) into a frozen Config. */
export function loadConfig(env: EnvLike, overrides: EnvLike = {}): Config {
  const merged: EnvLike = {};
  for (const key of Object.keys(ENV_SCHEMA.shape)) {
    const v = nonEmpty(overrides[key] ?? env[key]);
    if (v !== undefined) merged[key] = v;
  }
  const secretProblems: string[] = [];
  readSecretFiles(merged, secretProblems);
  const parsed = ENV_SCHEMA.safeParse(merged);
  const problems: string[] = [...secretProblems];
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const name = String(issue.path[0] ?? '?');
      problems.push(`${name}=${JSON.stringify(merged[name] ?? '')}: ${issue.message}`);
    }
  }

  // Checked from the raw values too, so one run reports every problem at once.
  let intervals: Interval[] = [];
  try {
    const seen = new Map<string, Interval>();
    for (const part of (merged.INTERVALS ?? '1min,5min,15min,30min,1h').split(',')) {
      if (part.trim() === '') continue;
      const iv = parseInterval(part);
      // 60min and 1h are one interval; 24h and 1d are not (1d is a date, 24h a length)
      const key = iv.day ? 'day' : String(iv.ms);
      if (!seen.has(key)) seen.set(key, iv);
    }
    intervals = [...seen.values()].sort((a, b) => a.ms - b.ms);
    if (intervals.length === 0) problems.push('INTERVALS: name at least one interval, e.g. 1min,5min');
  } catch (err) {
    problems.push(`INTERVALS: ${(err as Error).message}`);
  }

  const tz = merged.BAR_TZ ?? 'America/New_York';
  try {
    new Clock(tz);
  } catch (err) {
    problems.push(`BAR_TZ: ${(err as Error).message}`);
  }
  if (!parsed.success || problems.length) throw new ConfigError(problems);
  const e = parsed.data;

  const token = e.FINNHUB_TOKEN;
  const mode: Mode = e.MODE ?? (token ? 'live' : 'replay');
  if (mode === 'live' && !token) {
    problems.push('MODE=live needs FINNHUB_TOKEN (a Finnhub API key); unset MODE to replay the bundled tape');
  }
  const symbols = (e.SYMBOLS ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const s of symbols) {
    if (!/^[A-Za-z0-9:._^/=-]{1,64}$/.test(s)) problems.push(`SYMBOLS: "${s}" is not a symbol (letters, digits, : . _ - / ^ =)`);
  }
  if (mode === 'live' && symbols.length === 0) {
    problems.push('SYMBOLS: name the symbols to subscribe in live mode, e.g. SYMBOLS=AAPL,MSFT,BINANCE:BTCUSDT');
  }
  const wsUrl = e.FINNHUB_WS_URL ?? 'wss://ws.finnhub.io';
  if (!/^wss?:\/\//.test(wsUrl)) problems.push(`FINNHUB_WS_URL: must start with ws:// or wss://`);
  const provider = e.BACKFILL_PROVIDER ?? (e.MASSIVE_API_KEY ? 'massive' : 'finnhub');
  const backfillMode = e.BACKFILL_MODE ?? (provider === 'massive' ? 'ticks' : 'candles');
  if (provider === 'finnhub' && backfillMode === 'ticks') {
    problems.push('BACKFILL_MODE=ticks: Finnhub has no tick history for this; use BACKFILL_PROVIDER=massive or BACKFILL_MODE=candles');
  }
  for (const u of (e.REDIS_URL ?? '').split(',').filter((x) => x.trim() !== '')) {
    if (!/^rediss?:\/\/[^/]/.test(u.trim())) problems.push(`REDIS_URL: "${redactUrl(u.trim())}" is not a redis:// or rediss:// URL, e.g. redis://127.0.0.1:6379`);
  }
  if (e.REDIS_CLUSTER === 'off' && (e.REDIS_URL ?? '').includes(',')) {
    problems.push('REDIS_URL: several URLs are the seed nodes of a Redis Cluster; set REDIS_CLUSTER=on, or give one URL');
  }
  let replayFrom: number | undefined;
  if (e.REPLAY_FROM !== undefined) {
    replayFrom = Date.parse(e.REPLAY_FROM);
    if (!Number.isFinite(replayFrom)) problems.push(`REPLAY_FROM: "${e.REPLAY_FROM}" is not a date-time; use ISO 8601, e.g. 2013-10-10T12:17:30-04:00`);
  }
  const when = (name: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    // a bare date is midnight in BAR_TZ
    const t = /^\d{4}-\d{2}-\d{2}$/.test(v) ? DateTime.fromISO(v, { zone: tz }).toMillis() : Date.parse(v);
    if (!Number.isFinite(t)) problems.push(`${name}: "${v}" is not a date or date-time; use e.g. 2013-10-10 or 2013-10-10T09:30:00-04:00`);
    return t;
  };
  const backfillFrom = when('--from (BACKFILL_FROM)', e.BACKFILL_FROM);
  const backfillTo = when('--to (BACKFILL_TO)', e.BACKFILL_TO);
  if ((backfillFrom === undefined) !== (backfillTo === undefined)) problems.push('--from and --to go together: name both ends of the range');
  else if (backfillFrom !== undefined && backfillTo !== undefined && backfillFrom >= backfillTo) problems.push('--from must be before --to');
  let conditionCodes: Record<string, readonly string[]> = {};
  if (e.CONDITION_CODES) {
    try {
      conditionCodes = Object.fromEntries(parseConditionCodes(readFileSync(e.CONDITION_CODES, 'utf8'), e.CONDITION_CODES));
    } catch (err) {
      const msg = err instanceof ConditionCodesError ? err.message : `cannot read ${e.CONDITION_CODES}: ${(err as Error).message}`;
      problems.push(`CONDITION_CODES: ${msg}`);
    }
  }
  if (problems.length) throw new ConfigError(problems);

  return Object.freeze({
    mode,
    finnhubToken: token,
    finnhubWsUrl: wsUrl,
    finnhubRestUrl: e.FINNHUB_REST_URL ?? 'https://finnhub.io/api/v1',
    symbols: Object.freeze(symbols),
    intervals: Object.freeze(intervals),
    baseMs: baseIntervalMs(intervals),
    tz,
    graceMs: e.GRACE_MS,
    clock: e.CLOCK ?? (mode === 'live' ? 'wall' : 'event'),
    dataDir: e.DATA_DIR ?? './data',
    redisUrl: e.REDIS_URL,
    redisPassword: e.REDIS_PASSWORD,
    redisCluster: e.REDIS_CLUSTER === 'on',
    keyPrefix: e.KEY_PREFIX ?? 'cw',
    partitions: e.STREAM_PARTITIONS,
    aggregators: e.AGGREGATORS,
    aggregatorBatch: e.AGGREGATOR_BATCH,
    ingestBatch: e.INGEST_BATCH,
    ingestFlushMs: e.INGEST_FLUSH_MS,
    ingestRetainMs: e.INGEST_RETAIN,
    redisConnectTimeoutMs: e.REDIS_CONNECT_TIMEOUT,
    closeEveryMs: e.CLOSE_EVERY_MS,
    reclaimIdleMs: e.RECLAIM_IDLE_MS,
    consumerName: e.CONSUMER_NAME,
    takeoverMs: e.TAKEOVER_MS,
    tradesRetentionMs: e.TRADES_RETENTION,
    barsRetentionMs: e.BARS_RETENTION,
    // A replay ends: by default the stack exits 2 s after the tape; live runs until stopped.
    exitWhenIdleMs: e.EXIT_WHEN_IDLE_MS ?? (mode === 'replay' ? 2000 : 0),
    closeWhenIdleMs: e.CLOSE_WHEN_IDLE_MS ?? (mode === 'replay' ? 2000 : 0),
    logLevel: e.LOG_LEVEL ?? 'info',
    logPretty: e.LOG_PRETTY,
    logFile: e.LOG_FILE,
    logFileSize: e.LOG_FILE_SIZE,
    logFileCount: e.LOG_FILE_COUNT,
    logName: e.LOG_NAME,
    metricsPort: e.METRICS_PORT,
    metricsHost: e.METRICS_HOST,
    replayTape: e.REPLAY_TAPE,
    replaySpeed: e.REPLAY_SPEED,
    replayPort: e.REPLAY_PORT,
    replayHost: e.REPLAY_HOST ?? '127.0.0.1',
    replayShift: e.REPLAY_SHIFT,
    replayFrameTrades: e.REPLAY_FRAME_TRADES,
    backfill: (e.BACKFILL ?? (mode === 'live' ? 'on' : 'off')) === 'on',
    redisServerBin: e.REDIS_SERVER_BIN ?? 'redis-server',
    stackNice: e.STACK_NICE,
    staleMs: e.STALE_MS,
    sessions: e.SESSIONS ?? 'all',
    align: e.ALIGN ?? 'clock',
    late: e.LATE ?? 'drop',
    emptyBars: e.EMPTY_BARS ?? 'skip',
    lateAmendWindowMs: e.LATE_AMEND_WINDOW,
    backfillProvider: provider,
    backfillMode,
    massiveApiKey: e.MASSIVE_API_KEY,
    massiveRestUrl: e.MASSIVE_REST_URL ?? 'https://api.massive.com',
    // free tiers: Finnhub allows 60 calls a minute, Massive 5
    backfillRate: e.BACKFILL_RATE || (provider === 'massive' ? 5 : 60),
    backfillRetries: e.BACKFILL_RETRIES,
    backfillHoldMs: e.BACKFILL_HOLD,
    backfillMaxSpanMs: e.BACKFILL_MAX_SPAN,
    csvExtraColumns: e.CSV_EXTRA_COLUMNS,
    replayFrom,
    backfillFrom,
    backfillTo,
    conditions: e.CONDITIONS ?? 'all',
    conditionCodes: Object.freeze(conditionCodes),
  });
}

/** The variables a Config is built from, for child processes that must see the same settings. */
export function configEnvNames(): string[] {
  return Object.keys(ENV_SCHEMA.shape);
}
