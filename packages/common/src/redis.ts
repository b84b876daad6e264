import { Cluster, Redis, type ChainableCommander, type RedisOptions } from 'ioredis';
import { readFileSync } from 'node:fs';
import calculateSlot from 'cluster-key-slot';
import { registerScripts } from './scripts.js';
import { redactUrl, type Logger } from './logger.js';
import { RedisUnavailableError, isConnectionError, isRefusal } from './errors.js';
import type { Config } from './config.js';

/** A single Redis or a Redis Cluster: every role works on either. */
export type RedisClient = Redis | Cluster;

/**
 * The process's link to Redis. Every connection (and every BullMQ object, through
 * reportRedisError) reports its connection errors and recoveries here, so an outage is said once
 * when it starts, once a minute while it lasts, and once when it ends, however many connections
 * see it — a Redis gone for minutes costs a few log lines, not thousands.
 */
export class RedisLink {
  private log: Logger | undefined;
  private downSince = 0;
  private lastSaid = 0;
  private lastError = '';
  private where = '';

  /** the first logger given is where the link speaks */
  useLogger(log: Logger | undefined): void {
    this.log ??= log;
  }

  /** ms since the outage started, 0 while connected */
  get downForMs(): number {
    return this.downSince === 0 ? 0 : Date.now() - this.downSince;
  }

  /** why the link is down, for /healthz */
  get reason(): string {
    return this.lastError;
  }

  error(err: unknown, where: string): void {
    const now = Date.now();
    this.lastError = err instanceof Error ? err.message : String(err);
    if (this.downSince === 0) {
      this.downSince = now;
      this.lastSaid = now;
      this.where = where;
      this.log?.warn(
        { redis: where, reason: this.lastError },
        'lost the connection to Redis; retrying (every role waits, nothing is dropped)',
      );
    } else if (now - this.lastSaid >= 60_000) {
      this.lastSaid = now;
      this.log?.warn(
        { redis: this.where, reason: this.lastError, downS: Math.round((now - this.downSince) / 1000) },
        'still no Redis; retrying',
      );
    }
  }

  /** every connection of this process (connectRedis, duplicateRedis) */
  readonly connections = new Set<RedisClient>();

  /**
   * Closes every connection at once: their waiting commands fail. For a stop while Redis is
   * unreachable, so a process answers SIGTERM instead of waiting for a Redis that may never return.
   */
  disconnectAll(): void {
    for (const c of this.connections) c.disconnect();
  }

  private refusingSince = 0;
  private refusingSaid = 0;

  /** Redis refuses writes (MISCONF, OOM, ...): said once, then once a minute, until a write goes through. */
  refused(err: unknown): void {
    const now = Date.now();
    const reason = err instanceof Error ? err.message.split('\n')[0]!.replace(/ script: .*$/, '') : String(err);
    if (this.refusingSince === 0) {
      this.refusingSince = now;
      this.refusingSaid = now;
      this.log?.error(
        { reason },
        'Redis refuses writes; every role waits and tries again (nothing is dropped). A full disk under Redis: free space',
      );
    } else if (now - this.refusingSaid >= 60_000) {
      this.refusingSaid = now;
      this.log?.error({ reason, forS: Math.round((now - this.refusingSince) / 1000) }, 'Redis still refuses writes');
    }
  }

  /** A write went through: a refusal has ended. */
  wrote(): void {
    if (this.refusingSince === 0) return;
    this.log?.info({ afterS: Number(((Date.now() - this.refusingSince) / 1000).toFixed(1)) }, 'Redis takes writes again');
    this.refusingSince = 0;
  }

  /** Redis refuses writes right now (as far as this process has seen) */
  get refusing(): boolean {
    return this.refusingSince !== 0;
  }

  ready(): void {
    if (this.downSince === 0) return;
    this.log?.info({ redis: this.where, downS: Number(((Date.now() - this.downSince) / 1000).toFixed(1)) }, 'Redis is back');
    this.downSince = 0;
    this.lastError = '';
  }
}

export const redisLink = new RedisLink();

/**
 * An error from a Redis command or a BullMQ object: a lost connection goes to the link (said once
 * per outage), anything else is logged with `msg`.
 */
export function reportRedisError(log: Logger, err: unknown, msg: string, extra: Record<string, unknown> = {}): void {
  if (isConnectionError(err)) redisLink.error(err, 'redis');
  else if (isRefusal(err)) redisLink.refused(err);
  else log.error({ err, ...extra }, msg);
}

/** Watches a connection: its errors and recoveries go to the process's link. */
function watch(redis: RedisClient, log: Logger | undefined, where: string): void {
  redisLink.useLogger(log);
  redisLink.connections.add(redis);
  redis.once('end', () => redisLink.connections.delete(redis));
  redis.on('error', (err: Error) => redisLink.error(err, where));
  redis.on('ready', () => redisLink.ready());
}

/**
 * Resolves once `redis` is ready; a Redis not reached within `timeoutMs` is a
 * RedisUnavailableError naming the URL (without its password), the last error and what to check.
 */
export async function waitForRedis(redis: RedisClient, url: string, timeoutMs: number): Promise<void> {
  if (redis.status === 'ready') return;
  let last = '';
  let refuse: (err: Error) => void = () => undefined;
  const onError = (err: Error) => {
    last = err.message;
    // credentials Redis refuses are not fixed by waiting
    if (/WRONGPASS|NOAUTH|invalid password|invalid username-password/i.test(err.message)) {
      refuse(
        new RedisUnavailableError(
          `Redis at ${redactUrl(url)} refused the credentials (${err.message.split('\n')[0]}): check REDIS_PASSWORD or REDIS_PASSWORD_FILE (or the password in REDIS_URL), and REDIS_USERNAME or REDIS_USERS_FILE`,
        ),
      );
    } else if (tlsRefusal(err)) refuse(tlsRefusal(err)!(url));
  };
  redis.on('error', onError);
  try {
    await new Promise<void>((resolve, reject) => {
      refuse = (err) => {
        clearTimeout(timer);
        redis.off('ready', ready);
        reject(err);
      };
      const timer = setTimeout(() => {
        redis.off('ready', ready);
        reject(
          new RedisUnavailableError(
            `cannot reach Redis at ${redactUrl(url)} within ${Math.round(timeoutMs / 1000)} s${last ? ` (${last})` : ''}: ` +
              'check that it is running and that REDIS_URL (and REDIS_PASSWORD) are right, or wait longer with REDIS_CONNECT_TIMEOUT',
          ),
        );
      }, timeoutMs);
      const ready = () => {
        clearTimeout(timer);
        resolve();
      };
      redis.once('ready', ready);
    });
  } finally {
    redis.off('error', onError);
  }
}

/**
 * A TLS handshake that failed on a certificate is not fixed by waiting: the error names the
 * settings that decide it (the key's contents never appear, only the settings' names).
 */
function tlsRefusal(err: Error): ((url: string) => RedisUnavailableError) | undefined {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (!TLS_REFUSAL.test(err.message) && !/CERT|TLS|SSL/.test(code)) return undefined;
  return (url) =>
    new RedisUnavailableError(
      `TLS to Redis at ${redactUrl(url)} failed: ${err.message.split('\n')[0]}: check REDIS_TLS_CA_FILE (the CA that signed Redis's certificate), ` +
        'REDIS_TLS_SERVERNAME (the name in it), and REDIS_TLS_CERT_FILE / REDIS_TLS_KEY_FILE if Redis asks for a client certificate',
    );
}

/** A second connection like `redis` (for blocking reads and BullMQ workers), its errors logged. */
export function duplicateRedis<T extends RedisClient>(redis: T, log?: Logger): T {
  const dup = redis.duplicate() as T;
  watch(dup, log, 'duplicate');
  return dup;
}

const RETRY = (times: number) => Math.min(50 * 2 ** Math.min(times, 6), 2000);

function urlHasPassword(urls: string): boolean {
  try {
    return urls.split(',').some((u) => new URL(u.trim()).password !== '');
  } catch {
    return false;
  }
}

/** The seed nodes and shared credentials of a comma-separated REDIS_URL list. */
function clusterSeeds(urls: string): { nodes: { host: string; port: number }[]; options: RedisOptions } {
  const options: RedisOptions = {};
  const nodes = urls
    .split(',')
    .map((u) => u.trim())
    .filter((u) => u !== '')
    .map((u) => {
      const url = new URL(u);
      if (url.username) options.username = decodeURIComponent(url.username);
      if (url.password) options.password = decodeURIComponent(url.password);
      if (url.protocol === 'rediss:') options.tls = {};
      return { host: url.hostname, port: Number(url.port || 6379) };
    });
  return { nodes, options };
}

/**
 * How a process reaches Redis beyond its URL: a Cluster, Sentinel, TLS files, its ACL user. Built
 * from the configuration by redisAccess (cli), so library code reads no environment.
 */
export interface RedisAccess {
  cluster?: boolean;
  username?: string;
  password?: string;
  /** host:port of each sentinel; with them, the URL is only a label */
  sentinels?: readonly string[];
  sentinelMaster?: string;
  sentinelPassword?: string;
  tls?: { caFile?: string; certFile?: string; keyFile?: string; servername?: string };
}

/** A TLS handshake refused over a certificate or a name: waiting does not fix it (tlsRefusal). */
const TLS_REFUSAL =
  /certificate|self[- ]signed|unable to (get|verify)|CERT_|ERR_TLS|SSL routines|alert|wrong version number|Hostname\/IP does not match/i;

/** ioredis options for a user and TLS files (read here, at connect time; never logged). */
function accessOptions(opts: RedisAccess): RedisOptions {
  const out: RedisOptions = {};
  if (opts.username) out.username = opts.username;
  const t = opts.tls;
  if (t && (t.caFile || t.certFile || t.keyFile || t.servername)) {
    out.tls = {
      ...(t.caFile ? { ca: readFileSync(t.caFile) } : {}),
      ...(t.certFile ? { cert: readFileSync(t.certFile) } : {}),
      ...(t.keyFile ? { key: readFileSync(t.keyFile) } : {}),
      ...(t.servername ? { servername: t.servername } : {}),
    };
  }
  return out;
}

/**
 * A master found through Sentinel. ioredis asks the sentinels for the master at every (re)connect,
 * and `failoverDetector` listens for +switch-master so a promotion is followed at once; a node that
 * answers READONLY (an old master come back as a replica) makes it reconnect to the new master.
 * BullMQ's connections are duplicates of this one, so they follow the same master.
 */
function sentinelOptions(opts: RedisAccess, base: RedisOptions): RedisOptions {
  return {
    ...base,
    sentinels: opts.sentinels!.map((s) => {
      const i = s.lastIndexOf(':');
      return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
    }),
    name: opts.sentinelMaster ?? 'mymaster',
    ...(opts.sentinelPassword ? { sentinelPassword: opts.sentinelPassword } : {}),
    ...(base.tls ? { enableTLSForSentinelMode: true } : {}),
    sentinelRetryStrategy: RETRY,
    failoverDetector: true,
    reconnectOnError: (err) => (/READONLY/.test(err.message) ? 2 : false),
  };
}

/** What a log line says for a connection: the URL without its password, or the sentinels and master. */
export function describeRedis(url: string, access: RedisAccess = {}): string {
  // one URL-like word (no comma), so redactUrl and waitForRedis's messages take it as it is
  return access.sentinels?.length
    ? `sentinel://${access.sentinelMaster ?? 'mymaster'}?sentinels=${access.sentinels.join(';')}`
    : redactUrl(url);
}

/**
 * A Redis connection with candlewick's Lua scripts registered. `maxRetriesPerRequest: null` makes
 * commands wait through a Redis restart instead of failing, which BullMQ also requires for its
 * blocking connections; reconnects are retried forever with a capped delay. With `cluster`, `url`
 * is a comma-separated list of seed nodes of a Redis Cluster and the client follows its slot map.
 */
export function connectRedis(url: string, log?: Logger, opts: RedisAccess & { extra?: RedisOptions } = {}): RedisClient {
  // a password from REDIS_PASSWORD(_FILE) keeps it out of REDIS_URL (and so out of `docker inspect`)
  const base: RedisOptions = {
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    retryStrategy: RETRY,
    ...(opts.password && !urlHasPassword(url) ? { password: opts.password } : {}),
    ...accessOptions(opts),
    ...opts.extra,
  };
  let redis: RedisClient;
  if (opts.sentinels?.length) {
    redis = new Redis(sentinelOptions(opts, base));
  } else if (opts.cluster) {
    const { nodes, options } = clusterSeeds(url);
    redis = new Cluster(nodes, {
      // rediss:// seeds ask for TLS; REDIS_TLS_* files, when set, say with what
      redisOptions: { ...base, ...options, ...(base.tls ? { tls: base.tls } : {}) },
      clusterRetryStrategy: RETRY,
      enableReadyCheck: true,
      // a MOVED/ASK/TRYAGAIN or CLUSTERDOWN during a failover: wait and retry rather than fail
      retryDelayOnClusterDown: 300,
      retryDelayOnTryAgain: 100,
      slotsRefreshTimeout: 2000,
    });
  } else {
    redis = new Redis(url, base);
  }
  watch(redis, log, describeRedis(url, opts));
  registerScripts(redis);
  return redis;
}

/**
 * Writes that go together, sent as one MULTI per hash slot. On a single Redis that is one MULTI;
 * on a Cluster, keys in different slots cannot share a transaction, so each slot's commands are
 * atomic among themselves and the groups run side by side. Callers only group writes that are
 * safe to repeat (every caller here retries a whole group after a failure).
 */
export class SlotTransactions {
  private readonly groups = new Map<number, ChainableCommander>();

  constructor(private readonly redis: RedisClient) {}

  /** The transaction that `key` belongs in; chain the command for `key` on it. */
  on(key: string): ChainableCommander {
    const slot = this.redis instanceof Cluster ? calculateSlot(key) : 0;
    let tx = this.groups.get(slot);
    if (!tx) {
      tx = this.redis.multi();
      this.groups.set(slot, tx);
    }
    return tx;
  }

  /** Runs every group; rejects with the first command error. */
  async exec(): Promise<void> {
    const results = await Promise.all([...this.groups.values()].map((tx) => tx.exec()));
    this.groups.clear();
    for (const res of results) {
      if (res === null) throw new Error('redis transaction aborted');
      for (const [err] of res) if (err) throw err;
    }
  }
}

/** A stream entry as XREADGROUP / XCLAIM return it (fields null for an entry deleted meanwhile). */
export type StreamEntry = [id: string, fields: string[] | null];

/** Creates a consumer group from the stream's start (and the stream with it), or finds it there. */
export async function ensureGroup(redis: RedisClient, stream: string, group: string): Promise<void> {
  try {
    await redis.xgroup('CREATE', stream, group, '0', 'MKSTREAM');
  } catch (err) {
    if (!String((err as Error).message).includes('BUSYGROUP')) throw err;
  }
}

/**
 * How the process of `role` reaches Redis, from the configuration: its own user from
 * REDIS_USERS_FILE when the file names the role, else REDIS_USERNAME and REDIS_PASSWORD.
 */
export function redisAccess(cfg: Config, role: string): RedisAccess {
  const own = cfg.redisUsers[role];
  return {
    cluster: cfg.redisCluster,
    username: own?.username ?? cfg.redisUsername,
    password: own?.password ?? cfg.redisPassword,
    sentinels: cfg.redisSentinels,
    sentinelMaster: cfg.redisSentinelMaster,
    sentinelPassword: cfg.redisSentinelPassword,
    tls: { caFile: cfg.redisTlsCaFile, certFile: cfg.redisTlsCertFile, keyFile: cfg.redisTlsKeyFile, servername: cfg.redisTlsServername },
  };
}
