import { hostname } from 'node:os';
import type { Logger } from './logger.js';
import type { Health } from './metrics.js';
import { EXIT } from './errors.js';
import { redisLink } from './redis.js';

/** Where a role is, for a supervisor that cannot ask Redis (the ingestor's newest receive time, trades held). */
export interface RoleProgress {
  lastRx: number;
  pending: number;
  held?: number;
}

/** What a role says to the `candlewick stack` that started it, over the IPC channel. */
export type RoleMessage =
  /** started: the stack starts the next stage (cpu: µs used so far, user + system) */
  | { type: 'ready'; cpu: number }
  /** the CPU used so far, as asked */
  | { type: 'cpu'; cpu: number }
  | { type: 'progress'; progress: RoleProgress }
  /** the replay server has sent the whole tape */
  | { type: 'tape-done' };

/** What `candlewick stack` asks of a role: the CPU it has used, or (the ingestor) to end its input. */
export type StackMessage = { type: 'cpu' } | { type: 'end-input' };

export interface Component {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** what /healthz reports beyond the Redis connection (default: healthy) */
  health?(): Health;
  /**
   * What it holds that is not in Redis yet, said exactly (e.g. "120 trades received 10:00:01–10:00:03"),
   * or undefined: a stop that cannot hand it over loses it, says so and exits 1.
   */
  unsaved?(): string | undefined;
  /**
   * Where it is, for a supervisor that cannot ask Redis (Redis away or refusing writes): the
   * ingestor's newest receive time and the trades it holds that Redis does not have yet.
   */
  progress?(): RoleProgress;
  /**
   * The input is over (a supervisor saw the feed quiet and everything drained): decide what is held
   * back waiting for more input (the ingestor: a trade from the future waiting for confirmation).
   */
  endInput?(): void;
}

export interface ShutdownOptions {
  /** a stop taking longer than this exits 1 */
  stopTimeoutMs?: number;
  /** what would be lost by stopping now (Component.unsaved) */
  unsaved?: () => string | undefined;
  /** Redis unreachable this long during a stop: stop without it (default 2 s) */
  redisWaitMs?: number;
}

/**
 * The one shutdown path of a process: SIGINT/SIGTERM (and SIGHUP) run `stopAll` once, so
 * in-flight work finishes, then exit 0; a second signal exits at once (the same signal within half
 * a second of the first is that one request: `npm run` and `npx` forward the terminal's Ctrl-C to
 * a process that had it from the terminal too). A stop cannot wait for a
 * Redis that is not there: once Redis has been unreachable for `redisWaitMs` during the stop,
 * every connection is closed (waiting commands fail and loops end) and the process exits — 1 if it
 * held something not in Redis yet (said exactly), else 0. A stop longer than `stopTimeoutMs` exits 1.
 * An unhandled error is logged and exits 1.
 */
export function handleShutdown(log: Logger, stopAll: () => Promise<void>, opts: ShutdownOptions = {}): void {
  const stopTimeoutMs = opts.stopTimeoutMs ?? 15_000;
  const redisWaitMs = opts.redisWaitMs ?? 2000;
  let stopping: { signal: string; at: number } | undefined;
  const exit = (code: number) => {
    const lost = opts.unsaved?.();
    if (lost) {
      log.error(
        { lost },
        'stopped before this could be handed to Redis: it is lost (a live ingestor restarted later records the span in feed:gaps, and backfill fills it)',
      );
      process.exit(EXIT.FAILURE);
    }
    process.exit(code);
  };
  const stop = (signal: string) => {
    if (stopping?.signal === signal && Date.now() - stopping.at < 500) return;
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      exit(EXIT.FAILURE);
    }
    stopping = { signal, at: Date.now() };
    log.info({ signal }, 'stopping');
    const timer = setTimeout(() => {
      log.error({ stopTimeoutMs }, 'shutdown took too long; exiting');
      exit(EXIT.FAILURE);
    }, stopTimeoutMs);
    timer.unref();
    const watch = setInterval(() => {
      if (redisLink.downForMs < redisWaitMs) return;
      clearInterval(watch);
      log.warn({ reason: redisLink.reason }, 'Redis is unreachable: stopping without it');
      redisLink.disconnectAll();
      setTimeout(() => exit(EXIT.OK), 1000).unref();
    }, 100);
    watch.unref();
    stopAll().then(
      () => exit(EXIT.OK),
      (err: unknown) => {
        log.error({ err }, 'error while stopping');
        exit(EXIT.FAILURE);
      },
    );
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => stop(sig));
  process.on('unhandledRejection', (err) => {
    log.fatal({ err }, 'unhandled rejection');
    process.exit(EXIT.FAILURE);
  });
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'uncaught exception');
    process.exit(EXIT.FAILURE);
  });
}

/**
 * A BullMQ worker's close, bounded. `Worker.close` waits for the job in progress, then for its fetch
 * loop; a fetch held on a Cluster connection that will never answer (its node frozen and failed over
 * while the blocking client was between nodes) would hold the stop until the shutdown grace ran out.
 * So once no job of this process is in progress (`busy`) and `waitMs` has passed, the worker's
 * connections are let go: nothing it holds is lost (a job in progress is always waited for).
 */
export async function closeWorker(
  worker: { close(): Promise<void>; disconnect(): Promise<void> },
  busy: () => boolean,
  log: Logger,
  waitMs = 3000,
): Promise<void> {
  const closed = worker.close().then(
    () => true,
    () => true,
  );
  for (;;) {
    if (await Promise.race([closed, sleep(waitMs).then(() => false)])) return;
    if (!busy()) break;
  }
  log.debug({ waitMs }, 'the worker did not close in time with no job in progress; letting its connections go');
  await Promise.race([worker.disconnect().catch(() => undefined), sleep(1000)]);
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * A name for this process that no other process (here or on another host, now or after a
 * restart) shares: consumer names in the consumer groups, the ingestor's batch sender.
 */
export function processId(): string {
  return `${hostname()}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
}
