import type { Cluster, Redis, ChainableCommander, ClusterOptions, RedisOptions } from 'ioredis';
import { readFileSync } from 'node:fs';
import calculateSlot from 'cluster-key-slot';
import { lazyRequire } from './lazy.js';
import { registerScripts } from './scripts.js';
import { redactUrl, type Logger } from './logger.js';
import { RedisUnavailableError, isConnectionError, isRefusal } from './errors.js';
import { ConfigError, type Config } from './config.js';
import type { RedisClient } from './client.js';

export type { RedisClient } from './client.js';

/** ioredis, loaded by the first client made (see lazy.ts). */
export const ioredis = lazyRequire<typeof import('ioredis')>('ioredis');

/**
 * Milliseconds on the monotonic clock. Every interval, timeout and "how long since" in candlewick is
 * measured on it, never on Date.now(): a step of the wall clock (NTP, a resumed VM, `date -s`) then
 * neither starves nor fires them. Anything compared across processes uses Redis's time instead.
 */
export const monoMs = (): number => performance.now();

/**
 * The process's link to Redis. Every connection (and every BullMQ object, through
 * reportRedisError) reports its connection errors and recoveries here, so an outage is said once
 * when it starts, once a minute while it lasts, and once when it ends, however many connections
 * see it — a Redis gone for minutes costs a few log lines, not thousands.
 */
export class RedisLink {
  /** `now`: a monotonic clock in ms (tests give their own) */
  constructor(private readonly now: () => number = monoMs) {}

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
    return this.downSince === 0 ? 0 : this.now() - this.downSince;
  }

  /** ms since the last outage ended (Infinity if there was none): others' heartbeats may still be catching up */
  get upForMs(): number {
    return this.upSince === 0 ? Infinity : this.now() - this.upSince;
  }

  private upSince = 0;

  /** why the link is down, for /healthz */
  get reason(): string {
    return this.lastError;
  }

  error(err: unknown, where: string): void {
    this.silent = false;
    this.down(
      err instanceof Error ? err.message : String(err),
      where,
      0,
      'lost the connection to Redis; retrying (every role waits, nothing is dropped)',
    );
  }

  /**
   * A connection closed without an error and reconnects. Under Sentinel that is a failover learnt
   * from the Sentinels (+switch-master): a connection idle through it may never have seen the old
   * master go, and follows the new one without an error. Said like a lost connection, once.
   */
  reconnecting(where: string): void {
    if (this.downSince === 0) this.error(new Error('reconnecting to the master the Sentinels name'), where);
  }

  /**
   * A connected Redis has not answered for `ms` (paused with SIGSTOP, swapping, a stuck script):
   * an outage like a lost connection — said once, reminders once a minute, "Redis is back" when it answers.
   */
  notAnswering(ms: number, where = 'redis'): void {
    if (this.downSince === 0) this.silent = true;
    const s = Math.round(ms / 1000);
    this.down(
      `not answering for ${s} s`,
      where,
      ms,
      `Redis is not answering for ${s} s (paused, swapping or stuck?); every role waits, nothing is dropped`,
    );
  }

  /** the outage is a Redis not answering (not a lost connection) */
  private silent = false;

  /** A probe was answered: an outage that was only silence has ended (a lost connection ends with 'ready'). */
  answered(): void {
    if (this.silent) this.ready();
  }

  /**
   * An outage within TAIL_MS of the end of the last one is that outage's tail (a failover's last
   * dropped connection, a node that answered once before it went): said only if it lasts TAIL_MS.
   */
  private tail: string | undefined;

  private down(reason: string, where: string, sinceMs: number, first: string): void {
    const now = this.now();
    this.lastError = reason;
    if (this.downSince === 0) {
      this.downSince = now - sinceMs;
      this.lastSaid = now;
      this.where = where;
      if (this.upForMs < TAIL_MS) {
        this.tail = first;
        this.log?.debug({ redis: where, reason }, 'Redis lost again just after it came back: the same outage, said if it lasts');
      } else this.log?.warn({ redis: where, reason }, first);
    } else if (this.tail !== undefined && now - this.downSince >= TAIL_MS) {
      this.log?.warn({ redis: this.where, reason }, this.tail);
      this.tail = undefined;
      this.lastSaid = now;
    } else if (now - this.lastSaid >= 60_000) {
      this.lastSaid = now;
      this.log?.warn({ redis: this.where, reason, downS: Math.round((now - this.downSince) / 1000) }, 'still no Redis; retrying');
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

  /**
   * Redis refuses writes (MISCONF: its disk; OOM: its maxmemory; READONLY, ...): said once, then
   * once a minute, until a write goes through. Out of memory is said as such, with Redis's own
   * figures, for its remedy (maxmemory) is not a disk's.
   */
  refused(err: unknown): void {
    const now = this.now();
    // (a MULTI Redis discarded: the refusal is among the errors of the commands it queued)
    const cause = (err as { previousErrors?: unknown[] } | undefined)?.previousErrors?.find(isRefusal) ?? err;
    const reason = cause instanceof Error ? cause.message.split('\n')[0]!.replace(/ script: .*$/, '') : String(cause);
    const oom = /\bOOM\b/.test(reason);
    this.refusedAt = now;
    if (this.refusingSince === 0) {
      this.refusingSince = now;
      this.refusingSaid = now;
      if (oom)
        void this.memory().then((mem) =>
          this.log?.error(
            { reason, ...mem },
            `Redis is out of memory${mem.usedMemory ? ` (${mem.usedMemory} used of maxmemory ${mem.maxmemory})` : ''}; every role keeps what it holds and tries again (nothing is dropped). ` +
              'Raise maxmemory (redis-cli CONFIG SET maxmemory <bytes>, and in redis.conf) or give Redis more memory: the pipeline resumes by itself',
          ),
        );
      else
        this.log?.error(
          { reason },
          'Redis refuses writes; every role waits and tries again (nothing is dropped). MISCONF: the disk under Redis is full or failing: free space',
        );
    } else if (now - this.refusingSaid >= 60_000) {
      this.refusingSaid = now;
      const forS = Math.round((now - this.refusingSince) / 1000);
      if (oom) void this.memory().then((mem) => this.log?.error({ reason, forS, ...mem }, 'Redis is still out of memory'));
      else this.log?.error({ reason, forS }, 'Redis still refuses writes');
    }
  }

  /** Redis's memory figures (INFO memory), for the out-of-memory message; {} if it cannot say. */
  private async memory(): Promise<{ usedMemory?: string; maxmemory?: string }> {
    const conn = [...this.connections].find((c) => c.status === 'ready');
    if (!conn) return {};
    try {
      const nodes = conn instanceof ioredis().Cluster ? conn.nodes('master') : [conn];
      const infos = await Promise.all(nodes.map((n) => n.info('memory')));
      // the fullest node of a cluster is the one refusing
      const parsed = infos
        .map((info) => ({ used: infoField(info, 'used_memory'), max: infoField(info, 'maxmemory'), info }))
        .sort((a, b) => Number(b.used) / Number(b.max || Infinity) - Number(a.used) / Number(a.max || Infinity));
      const top = parsed[0];
      if (!top) return {};
      return { usedMemory: infoField(top.info, 'used_memory_human'), maxmemory: infoField(top.info, 'maxmemory_human') };
    } catch {
      return {};
    }
  }

  private refusedAt = 0;

  /**
   * A write went through: a refusal has ended — once nothing has been refused for a second (at a
   * memory limit deletes still go through while appends are refused).
   */
  wrote(): void {
    if (this.refusingSince === 0 || this.now() - this.refusedAt < 1000) return;
    this.log?.info({ afterS: Number(((this.now() - this.refusingSince) / 1000).toFixed(1)) }, 'Redis takes writes again');
    this.refusingSince = 0;
  }

  private policySaid = 0;
  /** what is wrong with Redis's maxmemory-policy, as last checked (see watchRedis) */
  policyProblem: string | undefined;

  /** The latest policy check: a policy that can evict is said loudly (again each minute), its end too. */
  policy(problem: string | undefined): void {
    const now = this.now();
    if (problem && (this.policyProblem === undefined || now - this.policySaid >= 60_000)) {
      this.policySaid = now;
      this.log?.error(
        { problem },
        "Redis may now evict candlewick's keys (its maxmemory-policy changed while running): bars can be lost or wrong",
      );
    } else if (!problem && this.policyProblem) {
      this.log?.info("Redis's maxmemory-policy is noeviction again");
    }
    this.policyProblem = problem;
  }

  /** keys Redis evicted while this process watched it (INFO stats evicted_keys): each one may have been candlewick's */
  evicted = 0;
  /** when the first of them was seen (ms, this host's clock) */
  evictedAt: number | undefined;
  /** Redis's evicted_keys as last read (undefined before the first reading) */
  private evictedTotal: number | undefined;
  private evictedSaid = 0;

  /**
   * A reading of Redis's evicted_keys (summed over its masters). The first is the baseline; any
   * rise after it is keys evicted while candlewick ran — a data loss, whatever the policy is now:
   * said loudly once, then again each minute while the count grows. (A Redis restarted or
   * CONFIG RESETSTAT counts from 0 again: what it counts since is added.)
   */
  evictions(total: number): void {
    const before = this.evictedTotal;
    this.evictedTotal = total;
    if (before === undefined) return;
    const more = total >= before ? total - before : total;
    if (more === 0) return;
    const first = this.evicted === 0;
    this.evicted += more;
    this.evictedAt ??= Date.now();
    const now = this.now();
    if (!first && now - this.evictedSaid < 60_000) return;
    this.evictedSaid = now;
    this.log?.error(
      { evicted: this.evicted, policy: this.policyProblem },
      `Redis evicted ${this.evicted} key${this.evicted === 1 ? '' : 's'} while candlewick ran (INFO stats evicted_keys): DATA LOST — ` +
        "candlewick's streams, consumer groups, open bars or queued jobs may be among them, so bars may be missing or wrong. " +
        'Set maxmemory-policy noeviction (redis-cli CONFIG SET maxmemory-policy noeviction, and in redis.conf) and give Redis the memory it needs',
    );
  }

  private skewSaid = false;
  /** this host's clock minus Redis's, as last measured (0 until then) */
  skewMs = 0;
  /** Redis's time minus this process's monotonic clock, as last measured (undefined until then) */
  private redisFromMono: number | undefined;

  /**
   * Redis's time now (ms), the clock anything compared across processes is read by: this process's
   * monotonic clock plus its offset to Redis's as last measured (each second, by watchRedis), so a
   * step of this host's wall clock (NTP, `date -s`, a resumed VM) changes nothing, not even until
   * the next measurement. This host's clock before a first measurement.
   */
  redisNowMs(): number {
    return this.redisFromMono === undefined ? Date.now() : Math.round(monoMs() + this.redisFromMono);
  }

  /**
   * A reading of Redis's clock (TIME, `redisMs`), taken when this host's clock said `hostMs` and the
   * monotonic clock `monoAt`: the offset redisNowMs() uses, and this host's clock against Redis's
   * (+ = ahead), a big difference said once, its end too.
   */
  clockReading(redisMs: number, hostMs: number, monoAt: number): void {
    this.redisFromMono = redisMs - monoAt;
    const ms = hostMs - redisMs;
    this.skewMs = ms;
    const big = Math.abs(ms) >= 5000;
    if (big && !this.skewSaid) {
      this.skewSaid = true;
      this.log?.warn(
        { skewS: Math.round(ms / 1000) },
        `this host's clock is ${Math.abs(Math.round(ms / 1000))} s ${ms > 0 ? 'ahead of' : 'behind'} Redis's: bars still close on time ` +
          "and no trade is taken for one from the future (the watermark and every time compared across processes is Redis's, intervals are monotonic), but fix the host's time sync",
      );
    } else if (!big && this.skewSaid && Math.abs(ms) < 1000) {
      this.skewSaid = false;
      this.log?.info("this host's clock agrees with Redis's again");
    }
  }

  /** Redis refuses writes right now (as far as this process has seen) */
  get refusing(): boolean {
    return this.refusingSince !== 0;
  }

  /**
   * A connection is ready again, or a silent Redis answered. The outage is over once every
   * connection of the process is back: under Sentinel one connection may reach the new master
   * while another, on its own backoff, still tries the old one (and fails once more) — "back"
   * said at the first would be followed by a second "lost". So with Cluster clients: one ready
   * while another still connects (see CONNECT_STUCK_MS) is not the end.
   */
  ready(): void {
    if (this.downSince === 0) return;
    if ([...this.connections].some((c) => RECONNECTING.has(c.status))) return;
    const back = { redis: this.where, downS: Number(((this.now() - this.downSince) / 1000).toFixed(1)) };
    if (this.tail !== undefined) this.log?.debug(back, 'Redis is back (the tail of the outage said before)');
    else this.log?.info(back, 'Redis is back');
    this.tail = undefined;
    this.downSince = 0;
    this.silent = false;
    this.upSince = this.now();
    this.lastError = '';
  }
}

/** how soon after an outage's end a new one is its tail, and how long a tail lasts before it is said */
const TAIL_MS = 5000;

/** the states of a connection that lost its server and has not had it back (not 'wait': never used; not 'end': closed) */
const RECONNECTING = new Set(['connecting', 'connect', 'reconnecting', 'close']);

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
  if (redis instanceof ioredis().Cluster) watchClusterNodes(redis);
  else if (redis.options.sentinels?.length) redis.on('reconnecting', () => redisLink.reconnecting(where));
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
  guardClusterNodes(cluster);
}

/**
 * A Cluster master paused (SIGSTOP, a frozen VM) keeps its TCP connections open and answers
 * nothing: the commands already sent to it wait, with no timeout in ioredis. Once its replica is
 * elected, a client's slot map no longer names it and ioredis drops its connection with a graceful
 * close that a frozen peer never completes — destroyed after `disconnectTimeout` (NODE_DROP_MS, set
 * in connectRedis); the waiting commands then fail as a closed connection, which ioredis retries on
 * the new master (blocking reads, BullMQ's, included). What is left to do here, per process:
 * a master whose PING (watchRedis's probe, on the role's own connection, which never blocks) goes
 * unanswered for NODE_SILENT_MS has every Cluster client, BullMQ's duplicates included, read its
 * slot map again each second, so the election is seen at once rather than at the next periodic
 * read (5 s); a silent master dropped that way is said ("not answering", once per outage: the
 * role's commands were held); and the outage is not said to be over while a dropped connection
 * still holds commands, or a master is still silent.
 */
const NODE_SILENT_MS = 1000;
const NODE_DROP_MS = 1000;

/** per guarded Cluster client: each node connection its pool has held, and since when it is out of the pool (0: in it) */
const guardedClusters = new Map<Cluster, Map<Redis, number>>();
/** master node ("host:port") -> since when (monotonic) its PING has gone unanswered */
const silentNodes = new Map<string, number>();
let nodeGuard: NodeJS.Timeout | undefined;
let refreshedAt = 0;

const nodeKey = (node: Redis): string => `${node.options.host ?? '127.0.0.1'}:${node.options.port ?? 6379}`;

function guardClusterNodes(cluster: Cluster): void {
  if (guardedClusters.has(cluster)) return;
  guardedClusters.set(cluster, new Map());
  cluster.once('end', () => {
    guardedClusters.delete(cluster);
    connectingSince.delete(cluster);
  });
  // BullMQ makes its connections with duplicate(): guarded like the one they copy
  const duplicate = cluster.duplicate.bind(cluster);
  cluster.duplicate = (...args: Parameters<Cluster['duplicate']>) => {
    const dup = duplicate(...args);
    guardClusterNodes(dup);
    return dup;
  };
  nodeGuard ??= setInterval(checkClusterNodes, 250).unref();
}

/**
 * A Cluster client that connects while a master is paused can send its ready check (CLUSTER INFO,
 * to a master picked at random) to the paused one: the answer never comes, the client stays in
 * 'connect' for good, and ioredis reads its slot map again only once it is ready. Past
 * CONNECT_STUCK_MS its slot map is read again each second: once a replica has taken the paused
 * master's slots the paused node leaves the pool, the check fails as a closed connection and the
 * client connects again, to the masters that answer.
 */
const CONNECT_STUCK_MS = 2000;
/** Cluster client -> since when (monotonic) it has been in 'connect' */
const connectingSince = new Map<Cluster, number>();

/** One round of the guard: slot maps read again while a master is silent or a client is stuck connecting; dropped connections followed until closed. */
function checkClusterNodes(): void {
  const now = monoMs();
  const due = now - refreshedAt >= 1000;
  const refresh = silentFor(NODE_SILENT_MS) !== undefined && due;
  let refreshed = refresh;
  for (const [cluster, seen] of guardedClusters) {
    if (cluster.status === 'connect') {
      const since = connectingSince.get(cluster) ?? now;
      connectingSince.set(cluster, since);
      if (due && now - since >= CONNECT_STUCK_MS) {
        cluster.refreshSlotsCache();
        refreshed = true;
      }
    } else connectingSince.delete(cluster);
    if (refresh && cluster.status === 'ready') cluster.refreshSlotsCache();
    const pool = new Set(cluster.nodes('all'));
    for (const node of pool) seen.set(node, 0);
    for (const [node, droppedAt] of seen) {
      if (pool.has(node)) continue;
      if (node.status === 'end') seen.delete(node);
      else if (droppedAt === 0) {
        seen.set(node, now);
        // a silent master replaced: the commands it holds are this role's outage (said once), handed on within NODE_DROP_MS
        const since = silentNodes.get(nodeKey(node));
        if (since !== undefined && now - since >= NODE_SILENT_MS) {
          redisLink.notAnswering(now - since, `cluster node ${nodeKey(node)}`);
          probeClusters();
        }
      }
    }
  }
  if (refreshed) refreshedAt = now;
}

/** A master silent for `ms` or more: the longest silence and its node, or undefined. */
function silentFor(ms: number): { ms: number; node: string } | undefined {
  const now = monoMs();
  let out: { ms: number; node: string } | undefined;
  for (const [node, since] of silentNodes) if (now - since >= ms && (!out || now - since > out.ms)) out = { ms: now - since, node };
  return out;
}

/** The nodes ("host:port") of connections dropped from a pool (their master replaced) still open, their commands not yet handed on. */
function droppedStillOpen(): Set<string> {
  const out = new Set<string>();
  for (const seen of guardedClusters.values())
    for (const [node, droppedAt] of seen) if (droppedAt !== 0 && node.status !== 'end') out.add(nodeKey(node));
  return out;
}

/** A PING to each master of `cluster` that has none in flight; silences are kept in silentNodes. */
function probeClusterMasters(cluster: Cluster): void {
  const now = monoMs();
  const masters = new Map(cluster.nodes('master').map((n) => [nodeKey(n), n]));
  const dropped = droppedStillOpen();
  for (const key of silentNodes.keys()) if (!masters.has(key) && !dropped.has(key)) silentNodes.delete(key);
  for (const [key, node] of masters) {
    if (node.status !== 'ready' || silentNodes.has(key)) continue;
    silentNodes.set(key, now);
    const done = () => {
      if (silentNodes.get(key) === now) silentNodes.delete(key);
    };
    node.ping().then(done, done);
  }
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
    (c): c is Cluster => c instanceof ioredis().Cluster && c.status !== 'end' && c.status !== 'wait',
  );
  if (clusters.length === 0 || clusters.some((c) => c.status !== 'ready')) return false;
  // (a paused master: its dropped connection still holds commands, or it is still a silent master)
  if (droppedStillOpen().size > 0 || silentFor(NODE_SILENT_MS)) return false;
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
              'check that it is running and that REDIS_URL (and REDIS_PASSWORD) are right, or wait longer with REDIS_CONNECT_TIMEOUT' +
              (resetOverTlsWithoutCert(redis, last)
                ? '; the connection was reset during the TLS handshake and no client certificate is set: if Redis asks for one ' +
                  '(tls-auth-clients yes), set REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE'
                : ''),
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
 * A Redis with tls-auth-clients refuses a client without a certificate by a TLS alert or, as often,
 * by resetting the connection mid-handshake: the reset alone could be a restart, so it is not
 * refused at once, but the timeout's message names the certificate settings.
 */
function resetOverTlsWithoutCert(redis: RedisClient, last: string): boolean {
  if (!/ECONNRESET|EPIPE|socket disconnected before secure TLS/i.test(last)) return false;
  const options = ('redisOptions' in redis.options ? redis.options.redisOptions : redis.options) as RedisOptions | undefined;
  const tls = options?.tls;
  return tls !== undefined && !tls.cert;
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

/** the longest a connection waits between two tries to reconnect */
const RETRY_CAP_MS = 2000;
const RETRY = (times: number) => Math.min(50 * 2 ** Math.min(times, 6), RETRY_CAP_MS);
/**
 * After an outage, every process of candlewick is back within this of Redis being reachable again
 * (its next try, RETRY_CAP_MS at most, and a connection: a Sentinel's answer, the ready check).
 */
export const RECONNECT_WITHIN_MS = RETRY_CAP_MS + 1000;

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
    // no CLIENT SETINFO (Redis 7.2+): a per-role ACL user is not allowed it, and each refusal would
    // fill Redis's ACL LOG (deploy/redis-acl.conf cannot name it: Redis 7.0 refuses a subcommand it does not know)
    disableClientInfo: true,
    ...(opts.password && !urlHasPassword(url) ? { password: opts.password } : {}),
    ...accessOptions(opts),
    ...opts.extra,
  };
  let redis: RedisClient;
  if (opts.sentinels?.length) {
    redis = new (ioredis().Redis)(sentinelOptions(opts, base));
  } else if (opts.cluster) {
    const { nodes, options } = clusterSeeds(url);
    redis = new (ioredis().Cluster)(nodes, {
      // rediss:// seeds ask for TLS; REDIS_TLS_* files, when set, say with what
      // (a node connection dropped from the pool is destroyed if its graceful close stalls: a paused master)
      redisOptions: { ...base, ...options, ...(base.tls ? { tls: base.tls } : {}), disconnectTimeout: NODE_DROP_MS },
      clusterRetryStrategy: RETRY,
      enableReadyCheck: true,
      ...failoverOptions(),
    });
  } else {
    redis = new (ioredis().Redis)(url, base);
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
    const slot = this.redis instanceof ioredis().Cluster ? calculateSlot(key) : 0;
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

/** A field of an INFO reply ("used_memory:1234"), or undefined. */
function infoField(info: string, field: string): string | undefined {
  return new RegExp(`^${field}:(\\S+)`, 'm').exec(info)?.[1];
}

/**
 * Each master's maxmemory-policy: INFO memory (Redis 4+), which every role's user may send, or CONFIG
 * GET where INFO does not say it. (INFO first: CONFIG is refused by managed Redis and by the per-role
 * ACL users, which must not read the server's configuration.)
 */
export async function memoryPolicies(redis: RedisClient): Promise<{ node: string; policy: string }[]> {
  const nodes = redis instanceof ioredis().Cluster ? redis.nodes('master') : [redis];
  return Promise.all(
    nodes.map(async (node) => {
      const name = `${node.options.host ?? '127.0.0.1'}:${node.options.port ?? 6379}`;
      let policy = infoField(await node.info('memory').catch(() => ''), 'maxmemory_policy');
      if (policy === undefined) {
        try {
          const reply = (await node.config('GET', 'maxmemory-policy')) as string[];
          policy = reply[1];
        } catch {
          // CONFIG renamed or refused too: nothing to judge by
        }
      }
      return { node: name, policy: policy ?? 'unknown' };
    }),
  );
}

/**
 * What is wrong with Redis's eviction policy, or undefined. Only noeviction is safe: every other
 * policy lets Redis delete keys to make room — allkeys-* any of them, volatile-* those with a TTL,
 * which candlewick uses (heartbeats, locks, BullMQ's) — and a deleted stream, consumer group or open
 * bar loses or corrupts bars without an error. BullMQ says the same ("IMPORTANT! Eviction policy is
 * … It should be noeviction").
 */
export async function evictionProblem(redis: RedisClient): Promise<string | undefined> {
  // (a Redis that tells neither CONFIG nor INFO is given the benefit of the doubt)
  const bad = (await memoryPolicies(redis)).filter((n) => n.policy !== 'noeviction' && n.policy !== 'unknown');
  if (bad.length === 0) return undefined;
  return (
    `Redis ${bad.map((n) => `at ${n.node} has maxmemory-policy ${n.policy}`).join(', ')}: it may evict candlewick's keys ` +
    '(streams, consumer groups, open bars, queued jobs) when it fills, losing or corrupting bars without an error. ' +
    'Set it to noeviction (redis-cli CONFIG SET maxmemory-policy noeviction, and maxmemory-policy noeviction in redis.conf), ' +
    'or give candlewick a Redis of its own'
  );
}

/** Keys Redis has evicted since it started (INFO stats evicted_keys), summed over its masters; undefined if it does not say. */
export async function evictedKeys(redis: RedisClient): Promise<number | undefined> {
  const nodes = redis instanceof ioredis().Cluster ? redis.nodes('master') : [redis];
  const counts = await Promise.all(nodes.map(async (n) => infoField(await n.info('stats').catch(() => ''), 'evicted_keys')));
  if (counts.some((c) => c === undefined)) return undefined;
  return counts.reduce((a, c) => a + Number(c), 0);
}

/** Reads evicted_keys into the link (its first reading is the baseline): the stack's last look before its summary. */
export async function checkEvictions(redis: RedisClient): Promise<void> {
  const n = await evictedKeys(redis).catch(() => undefined);
  if (n !== undefined) redisLink.evictions(n);
}

/**
 * The eviction policy at start: anything but noeviction is a ConfigError (exit 2) saying what to set.
 */
export async function requireNoEviction(redis: RedisClient): Promise<void> {
  const problem = await evictionProblem(redis);
  if (problem) throw new ConfigError([problem]);
}

/**
 * Reads Redis's clock once (TIME) for redisLink.redisNowMs(), before a role starts: watchRedis reads
 * it again each second, but a trade checked against the clock (FUTURE_LIMIT_MS) may come sooner.
 * An answer slower than a second (or none) leaves it to watchRedis.
 */
export async function readRedisClock(redis: RedisClient): Promise<void> {
  const sent = monoMs();
  const [s, us] = await redis.time().catch(() => [NaN, NaN] as const);
  const rtt = monoMs() - sent;
  if (Number.isFinite(Number(s)) && rtt < 1000)
    redisLink.clockReading(Number(s) * 1000 + Number(us) / 1000, Date.now() - rtt / 2, sent + rtt / 2);
}

/**
 * Watches a connected Redis from this process, on the monotonic clock: a probe (TIME) every second
 * that has no answer within `answerTimeoutMs` is said as an outage (a paused Redis keeps its TCP
 * connection, so only an unanswered command shows it); the answer gives this host's clock against
 * Redis's; every `checkEveryMs` the eviction policy is checked again, and the keys Redis has evicted
 * (INFO stats evicted_keys, from a baseline read at once): any evicted while it runs is a data loss,
 * said loudly (redisLink.evictions). Returns a stop function.
 */
export function watchRedis(redis: RedisClient, opts: { answerTimeoutMs: number; checkEveryMs: number }): () => void {
  let probeAt = 0;
  let checkedAt = monoMs();
  let checking = false;
  void checkEvictions(redis);
  const timer = setInterval(
    () => {
      if (redis.status !== 'ready') {
        probeAt = 0; // a lost connection is said by its own events
        return;
      }
      const now = monoMs();
      // a Cluster's masters each: one of them paused is an outage of the roles whose keys it holds
      if (redis instanceof ioredis().Cluster) {
        probeClusterMasters(redis);
        const silent = opts.answerTimeoutMs > 0 ? silentFor(opts.answerTimeoutMs) : undefined;
        if (silent) redisLink.notAnswering(silent.ms, `cluster node ${silent.node}`);
      }
      if (probeAt !== 0) {
        // (a Cluster's silence is its masters', probed each above: a TIME that went to a paused master
        // and is answered by its successor later says nothing new — said again, one outage was two)
        if (opts.answerTimeoutMs > 0 && now - probeAt >= opts.answerTimeoutMs && !(redis instanceof ioredis().Cluster))
          redisLink.notAnswering(now - probeAt);
        return;
      }
      const sent = (probeAt = now);
      redis.time().then(
        ([s, us]) => {
          if (probeAt !== sent) return;
          const rtt = monoMs() - sent;
          probeAt = 0;
          // (a Cluster's TIME goes to any master: it says nothing of a silent one)
          if (!(redis instanceof ioredis().Cluster) || (!silentFor(NODE_SILENT_MS) && droppedStillOpen().size === 0)) redisLink.answered();
          // (an answer that waited, on a paused master, says nothing of the clocks)
          if (rtt < 1000) redisLink.clockReading(Number(s) * 1000 + Number(us) / 1000, Date.now() - rtt / 2, sent + rtt / 2);
        },
        () => {
          if (probeAt === sent) probeAt = 0;
        },
      );
      if (opts.checkEveryMs > 0 && now - checkedAt >= opts.checkEveryMs && !checking) {
        checkedAt = now;
        checking = true;
        evictionProblem(redis)
          .then((problem) => redisLink.policy(problem))
          .catch(() => undefined)
          .then(() => checkEvictions(redis))
          .finally(() => (checking = false));
      }
    },
    Math.max(50, Math.min(1000, opts.answerTimeoutMs / 4 || 1000)),
  );
  timer.unref();
  return () => clearInterval(timer);
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
