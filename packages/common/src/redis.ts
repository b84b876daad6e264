import { Cluster, Redis, type ChainableCommander, type ClusterOptions, type RedisOptions } from 'ioredis';
import calculateSlot from 'cluster-key-slot';
import { registerScripts } from './scripts.js';
import { redactUrl, type Logger } from './logger.js';
import { RedisUnavailableError, isConnectionError, isRefusal } from './errors.js';

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

  /** ms since the last outage ended (Infinity if there was none): others' heartbeats may still be catching up */
  get upForMs(): number {
    return this.upSince === 0 ? Infinity : Date.now() - this.upSince;
  }

  private upSince = 0;

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
    this.upSince = Date.now();
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

/**
 * An error of a BullMQ worker. A job's lock kept on a master that died lapses with it (a Cluster
 * failover outlasts the lock): BullMQ says "could not renew lock" or "Missing lock" and hands the job
 * back as stalled, and the job is safe to run again (the writer skips rows it wrote, a close tick is
 * idempotent) — part of the outage the link already reports, said at debug level, while Redis is
 * away and for LOCK_LAPSE_MS after it is back. Anything else goes to reportRedisError.
 */
export function reportWorkerError(log: Logger, err: Error, msg: string): void {
  if (
    /^(could not renew lock for job|Missing lock for job)/.test(err.message) &&
    (redisLink.downForMs > 0 || redisLink.upForMs < LOCK_LAPSE_MS)
  )
    log.debug({ reason: err.message }, 'a job lock lapsed while Redis was away; the job is handed back');
  else reportRedisError(log, err, msg);
}

const LOCK_LAPSE_MS = 30_000;

/** Watches a connection: its errors and recoveries go to the process's link. */
function watch(redis: RedisClient, log: Logger | undefined, where: string): void {
  redisLink.useLogger(log);
  redisLink.connections.add(redis);
  redis.once('end', () => redisLink.connections.delete(redis));
  redis.on('error', (err: Error) => redisLink.error(err, where));
  redis.on('ready', () => redisLink.ready());
  if (redis instanceof Cluster) watchClusterNodes(redis);
}

/**
 * How long a command waits through a Redis Cluster failover before it fails (with a connection
 * error its caller retries): longer than Redis's default cluster-node-timeout (15 s) plus the
 * replicas' election, with room to spare.
 */
export const CLUSTER_FAILOVER_WAIT_MS = 60_000;

/**
 * ioredis Cluster options that ride out a failover (a master dies, its replica takes over after
 * cluster-node-timeout). A command for the dead master's slots meets "Connection is closed" (the
 * dead node), MOVED from a node that still names it, or CLUSTERDOWN; each is retried after a pause
 * with the slot map read again, and each counts as one "redirection". ioredis's defaults (16
 * redirections, 100 ms apart) gave up after about 2 s — every command during a failover failed with
 * "Too many Cluster redirections" — so the budget here covers CLUSTER_FAILOVER_WAIT_MS (two
 * redirections per pause: MOVED to the dead node, then its closed connection). The slot map is
 * also read every few seconds, so a new master is found even by a client that sent nothing.
 */
function failoverOptions(): ClusterOptions {
  const pauseMs = 250;
  return {
    retryDelayOnFailover: pauseMs,
    retryDelayOnClusterDown: pauseMs,
    retryDelayOnTryAgain: 100,
    maxRedirections: Math.ceil((2 * CLUSTER_FAILOVER_WAIT_MS) / pauseMs),
    slotsRefreshTimeout: 2000,
    slotsRefreshInterval: 5000,
  };
}

/**
 * A Cluster client stays "ready" while one of its masters dies and a replica takes over, so its own
 * events never say an outage started or ended. Its nodes' errors say it started; while the link is
 * down, every Cluster client of the process reads its slot map again every half second, and once
 * each has a master for every slot and every master answers PING (the dead one gone from the maps:
 * a replica took its slots), it is over — one WARN and one INFO per process for a failover, however
 * many clients (BullMQ's included) saw it.
 */
function watchClusterNodes(cluster: Cluster): void {
  cluster.on('node error', (err: Error, key: string) => {
    redisLink.error(err, `cluster node ${key}`);
    probeClusters();
  });
}

let clusterProbe: NodeJS.Timeout | undefined;

function probeClusters(): void {
  clusterProbe ??= setTimeout(() => {
    void clustersServe().then((ok) => {
      clusterProbe = undefined;
      if (redisLink.downForMs === 0) return;
      if (ok) redisLink.ready();
      else probeClusters();
    });
  }, 500).unref();
}

/** Every live Cluster client of this process, its slot map read again, serves every slot. */
async function clustersServe(): Promise<boolean> {
  // (a client never connected, 'wait', has nothing to recover)
  const clusters = [...redisLink.connections].filter(
    (c): c is Cluster => c instanceof Cluster && c.status !== 'end' && c.status !== 'wait',
  );
  if (clusters.length === 0 || clusters.some((c) => c.status !== 'ready')) return false;
  const fresh = await Promise.all(clusters.map((c) => new Promise<boolean>((resolve) => c.refreshSlotsCache((err) => resolve(!err)))));
  if (fresh.includes(false)) return false;
  return (await Promise.all(clusters.map(clusterServes))).every(Boolean);
}

/** Every slot of the client's slot map has a master, and every master answers PING within a second. */
async function clusterServes(cluster: Cluster): Promise<boolean> {
  const keys = new Set<string>();
  for (let slot = 0; slot < 16384; slot++) {
    const master = cluster.slots[slot]?.[0];
    if (master === undefined) return false;
    keys.add(master);
  }
  const masters = cluster.nodes('master');
  const byKey = new Map(masters.map((m) => [`${m.options.host}:${m.options.port}`, m]));
  if ([...keys].some((k) => !byKey.has(k))) return false;
  // a paused master answers nothing: give it a second, then the next probe tries
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 1000)));
  const pings = Promise.all([...keys].map((k) => byKey.get(k)!.ping())).then(
    () => true,
    () => false,
  );
  try {
    return await Promise.race([pings, late]);
  } finally {
    clearTimeout(timer);
  }
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
          `Redis at ${redactUrl(url)} refused the credentials (${err.message.split('\n')[0]}): check REDIS_PASSWORD or REDIS_PASSWORD_FILE (or the password in REDIS_URL)`,
        ),
      );
    }
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
 * A Redis connection with candlewick's Lua scripts registered. `maxRetriesPerRequest: null` makes
 * commands wait through a Redis restart instead of failing, which BullMQ also requires for its
 * blocking connections; reconnects are retried forever with a capped delay. With `cluster`, `url`
 * is a comma-separated list of seed nodes of a Redis Cluster and the client follows its slot map.
 */
export function connectRedis(
  url: string,
  log?: Logger,
  opts: { cluster?: boolean; password?: string; extra?: RedisOptions } = {},
): RedisClient {
  // a password from REDIS_PASSWORD(_FILE) keeps it out of REDIS_URL (and so out of `docker inspect`)
  const base: RedisOptions = {
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    retryStrategy: RETRY,
    ...(opts.password && !urlHasPassword(url) ? { password: opts.password } : {}),
    ...opts.extra,
  };
  let redis: RedisClient;
  if (opts.cluster) {
    const { nodes, options } = clusterSeeds(url);
    redis = new Cluster(nodes, {
      redisOptions: { ...base, ...options },
      clusterRetryStrategy: RETRY,
      enableReadyCheck: true,
      ...failoverOptions(),
    });
  } else {
    redis = new Redis(url, base);
  }
  watch(redis, log, redactUrl(url));
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
