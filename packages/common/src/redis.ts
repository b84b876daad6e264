import { Cluster, Redis, type ChainableCommander, type RedisOptions } from 'ioredis';
import calculateSlot from 'cluster-key-slot';
import { registerScripts } from './scripts.js';
import { redactUrl, type Logger } from './logger.js';

/** A single Redis or a Redis Cluster: every role works on either. */
export type RedisClient = Redis | Cluster;

/**
 * Watches a connection: the first error of an outage is logged once, the recovery once. `ready`
 * on a Cluster means its slot map is loaded.
 */
function watch(redis: RedisClient, log: Logger | undefined, where: string): void {
  let down = false;
  redis.on('error', (err: Error) => {
    if (!down) log?.warn({ err, redis: where }, 'redis connection error; retrying');
    down = true;
  });
  redis.on('ready', () => {
    if (down) log?.info({ redis: where }, 'redis connection restored');
    down = false;
  });
}

/** A second connection like `redis` (for blocking reads and BullMQ workers), its errors logged. */
export function duplicateRedis<T extends RedisClient>(redis: T, log?: Logger): T {
  const dup = redis.duplicate() as T;
  watch(dup, log, 'duplicate');
  return dup;
}

const RETRY = (times: number) => Math.min(50 * 2 ** Math.min(times, 6), 2000);

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
export function connectRedis(url: string, log?: Logger, opts: { cluster?: boolean; extra?: RedisOptions } = {}): RedisClient {
  const base: RedisOptions = { maxRetriesPerRequest: null, enableReadyCheck: true, retryStrategy: RETRY, ...opts.extra };
  let redis: RedisClient;
  if (opts.cluster) {
    const { nodes, options } = clusterSeeds(url);
    redis = new Cluster(nodes, {
      redisOptions: { ...base, ...options },
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
