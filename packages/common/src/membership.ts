import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import type { Keys } from './keys.js';
import type { Logger } from './logger.js';
import { processId, sleep } from './lifecycle.js';
import { monoMs, redisLink, type RedisClient } from './redis.js';
import { ConfigError } from './config.js';

/**
 * A consumer group member's name, stable across restarts, so a restarted worker finds the entries
 * its predecessor had read (its own pending list) instead of leaving them to a takeover: CONSUMER_NAME
 * when set; under `candlewick stack` its slot (the stack sets CONSUMER_NAME); in a container its
 * hostname (a container keeps it across restarts); otherwise a name of this process alone.
 */
export function workerName(configured: string | undefined): string {
  if (configured) return configured;
  if (existsSync('/.dockerenv') || existsSync('/var/run/secrets/kubernetes.io')) return hostname();
  return processId();
}

/** This process on this host: `host:pid:startedAt`. */
const token = `${hostname()}:${process.pid}:${Date.now()}`;

/**
 * Membership of a consumer group with liveness (Kafka's static membership with a session timeout):
 * a member keeps a heartbeat key with a short TTL; a member whose key has lapsed is dead, and the
 * others take over its pending entries at once rather than after a fixed idle time. The Lua
 * ownership checks (mergeBatch, mergeBackfill) keep that exactly-once when a paused member wakes up:
 * its late merge finds the entries gone from its pending list and leaves them out.
 */
export class Membership {
  private timer: NodeJS.Timeout | undefined;
  private readonly key: string;

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: Keys,
    readonly group: string,
    readonly name: string,
    /** a member silent this long is dead */
    readonly ttlMs: number,
    private readonly log: Logger,
  ) {
    this.key = keys.member(group, name);
  }

  /**
   * Takes the name. A predecessor of this host that is gone (its pid dead, or this very pid: a
   * restarted container) hands it over at once; a live holder elsewhere is waited for until its
   * heartbeat lapses; one that stays alive is a configuration error (two workers, one name).
   */
  async join(): Promise<void> {
    const until = monoMs() + 3 * this.ttlMs;
    let said = false;
    for (;;) {
      const holder = await this.redis.get(this.key);
      if (holder === null || holder === token || this.gone(holder)) {
        await this.redis.set(this.key, token, 'PX', this.ttlMs);
        break;
      }
      if (monoMs() > until) {
        throw new ConfigError([
          `CONSUMER_NAME=${this.name}: another running worker (${holder.split(':').slice(0, 2).join(' pid ')}) uses this name in group ${this.group}; give each worker its own`,
        ]);
      }
      if (!said) {
        said = true;
        this.log.info(
          { name: this.name, holder: holder.split(':').slice(0, 2).join(' pid ') },
          'this worker name is still held: waiting for its heartbeat to lapse',
        );
      }
      await sleep(Math.min(250, this.ttlMs / 4));
    }
    this.timer = setInterval(
      () => {
        void this.redis.set(this.key, token, 'PX', this.ttlMs).catch(() => undefined);
      },
      Math.max(50, Math.floor(this.ttlMs / 3)),
    );
    this.timer.unref();
  }

  /** A holder token of this host whose process is gone. */
  private gone(holder: string): boolean {
    const [host, pid] = holder.split(':');
    if (host !== hostname()) return false;
    if (Number(pid) === process.pid) return true; // a restarted container: same host name, same pid 1
    try {
      process.kill(Number(pid), 0);
      return false;
    } catch {
      return true;
    }
  }

  /** Of these members, the ones without a heartbeat (dead, or never had one). */
  async dead(members: readonly string[]): Promise<string[]> {
    const others = members.filter((m) => m !== this.name);
    if (others.length === 0) return [];
    // Redis was away (a restart, a Cluster failover): every member's heartbeat lapsed with it, and
    // the others need a heartbeat's time after it is back before a lapse means they are dead
    if (redisLink.downForMs > 0 || redisLink.upForMs < this.ttlMs) return [];
    const beats = await Promise.all(others.map((m) => this.redis.exists(this.keys.member(this.group, m))));
    return others.filter((_, i) => beats[i] === 0);
  }

  /** Leaves: the heartbeat goes at once, so others take over anything left without waiting. */
  async leave(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    const holder = await this.redis.get(this.key).catch(() => null);
    if (holder === token) await this.redis.del(this.key).catch(() => undefined);
  }
}
