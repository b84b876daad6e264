import { closeSync, openSync, readFileSync, statSync, unlinkSync, utimesSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { ConfigError } from './config.js';
import { sleep } from './lifecycle.js';
import type { Logger } from './logger.js';
import type { RedisClient } from './redis.js';

/**
 * Who owns something only one process may do at a time (the writer of a DATA_DIR and key prefix,
 * the stack on a Redis and DATA_DIR): a holder named by host, pid and since when, kept alive by a
 * heartbeat. Two writers on one set of files skip each other's bars as stale (issue 21: 416 and
 * 582 bars missing), so a second one is refused, naming the holder, before it takes any work.
 */
export interface Holder {
  host: string;
  pid: number;
  /** ms since the epoch: when it took hold */
  since: number;
}

const me: Holder = { host: hostname(), pid: process.pid, since: Date.now() };

function parseHolder(text: string | null): Holder | undefined {
  if (!text) return undefined;
  try {
    const h = JSON.parse(text) as Partial<Holder>;
    if (typeof h.host === 'string' && Number.isInteger(h.pid) && typeof h.since === 'number') return h as Holder;
  } catch {
    // unreadable: nobody holds it
  }
  return undefined;
}

/** "host H pid P since ISO": how a holder is named in a refusal. */
export function describeHolder(h: Holder): string {
  return `host ${h.host} pid ${h.pid}, since ${new Date(h.since).toISOString()}`;
}

const isMe = (h: Holder) => h.host === me.host && h.pid === me.pid && h.since === me.since;

/**
 * A holder of this host whose process is gone (a kill -9: its successor takes over at once), or
 * with this very pid (a restarted container: same host name, same pid 1).
 */
function goneHere(h: Holder): boolean {
  if (h.host !== me.host) return false;
  if (h.pid === process.pid) return true;
  try {
    process.kill(h.pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

interface Lock {
  /** the holder now, undefined when free or lapsed */
  holder(): Promise<Holder | undefined>;
  /** takes it if it is free (or `over` still holds it); true when taken */
  take(over: Holder | undefined): Promise<boolean>;
  beat(): Promise<void>;
  release(): Promise<void>;
}

/**
 * Takes `lock` for this process. A holder of this host that is gone hands over at once; one alive
 * on this host is refused at once; one on another host is waited for until its heartbeat lapses
 * (3 TTLs at most: a host that died), then refused — a ConfigError (exit 2) naming the holder.
 */
async function acquire(lock: Lock, ttlMs: number, what: string, fix: string, log: Logger): Promise<void> {
  const until = Date.now() + 3 * ttlMs;
  let said = false;
  for (;;) {
    const holder = await lock.holder();
    if (holder === undefined || isMe(holder) || goneHere(holder)) {
      if (await lock.take(holder)) return;
      continue;
    }
    if (holder.host === me.host || Date.now() > until)
      throw new ConfigError([`${what} is already held by a running process (${describeHolder(holder)}): ${fix}`]);
    if (!said) {
      said = true;
      log.warn({ holder: describeHolder(holder) }, `${what} is held elsewhere: waiting for its heartbeat to lapse`);
    }
    await sleep(Math.min(250, ttlMs / 4));
  }
}

/**
 * Ownership held in Redis (a key with a short TTL, renewed every third of it), as the aggregators'
 * membership is: per key prefix, so it binds every process on that Redis whatever its host.
 */
export class RedisLease {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly redis: RedisClient,
    private readonly key: string,
    private readonly ttlMs: number,
    private readonly log: Logger,
  ) {}

  private readonly lock: Lock = {
    holder: async () => parseHolder(await this.redis.get(this.key)),
    take: async (over) => {
      const value = JSON.stringify(me);
      if (over === undefined) return (await this.redis.set(this.key, value, 'PX', this.ttlMs, 'NX')) === 'OK';
      await this.redis.set(this.key, value, 'PX', this.ttlMs);
      return true;
    },
    beat: async () => {
      // gone (a Redis that lost its data, a lapse during an outage) is taken back; another's is not touched
      const value = JSON.stringify(me);
      const now = await this.redis.get(this.key);
      if (now === null) await this.redis.set(this.key, value, 'PX', this.ttlMs, 'NX');
      else if (now === value) await this.redis.pexpire(this.key, this.ttlMs);
      else this.onLost?.(parseHolder(now));
    },
    release: async () => {
      if ((await this.redis.get(this.key)) === JSON.stringify(me)) await this.redis.del(this.key);
    },
  };

  /** called when another process has taken it (this one was silent past its TTL) */
  onLost: ((by: Holder | undefined) => void) | undefined;

  async acquire(what: string, fix: string): Promise<void> {
    await acquire(this.lock, this.ttlMs, what, fix, this.log);
    this.timer = setInterval(() => void this.lock.beat().catch(() => undefined), Math.max(50, Math.floor(this.ttlMs / 3)));
    this.timer.unref();
  }

  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.lock.release().catch(() => undefined);
  }
}

/**
 * Ownership held in a file (created exclusively; its mtime the heartbeat): binds every process on
 * those files, whatever Redis or key prefix it uses.
 */
export class FileLock {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly path: string,
    private readonly ttlMs: number,
    private readonly log: Logger,
  ) {}

  private readonly lock: Lock = {
    holder: () => {
      try {
        const h = parseHolder(readFileSync(this.path, 'utf8'));
        // a file not touched for 3 TTLs: its holder (on another host) is gone
        if (h && !isMe(h) && Date.now() - statSync(this.path).mtimeMs > 3 * this.ttlMs) return Promise.resolve(undefined);
        return Promise.resolve(h);
      } catch {
        return Promise.resolve(undefined);
      }
    },
    take: async (over) => {
      if (over !== undefined) this.remove(); // a holder that is gone
      try {
        const fd = openSync(this.path, 'wx', 0o644);
        try {
          writeSync(fd, `${JSON.stringify(me)}\n`);
        } finally {
          closeSync(fd);
        }
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        // a file left unreadable or lapsed goes; one another process just made stays: look again
        if (this.ageMs() > 1000 && (await this.lock.holder()) === undefined) this.remove();
        return false;
      }
    },
    beat: () => {
      const now = new Date();
      utimesSync(this.path, now, now);
      return Promise.resolve();
    },
    release: () => {
      try {
        if (isMe(parseHolder(readFileSync(this.path, 'utf8')) ?? { host: '', pid: 0, since: 0 })) unlinkSync(this.path);
      } catch {
        // gone already
      }
      return Promise.resolve();
    },
  };

  private ageMs(): number {
    try {
      return Date.now() - statSync(this.path).mtimeMs;
    } catch {
      return 0;
    }
  }

  private remove(): void {
    try {
      unlinkSync(this.path);
    } catch {
      // gone already
    }
  }

  async acquire(what: string, fix: string): Promise<void> {
    await acquire(this.lock, this.ttlMs, what, fix, this.log);
    this.timer = setInterval(() => void this.lock.beat().catch(() => undefined), Math.max(50, Math.floor(this.ttlMs / 3)));
    this.timer.unref();
  }

  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.lock.release();
  }
}
