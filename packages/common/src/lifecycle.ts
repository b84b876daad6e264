import { hostname } from 'node:os';
import type { Logger } from './logger.js';
import type { Health } from './metrics.js';

export interface Component {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** what /healthz reports beyond the Redis connection (default: healthy) */
  health?(): Health;
}

/**
 * The one shutdown path of a process: SIGINT/SIGTERM stop the components in reverse order (so
 * in-flight work finishes), then exit 0; a second signal or a stop that takes longer than
 * `graceMs` exits 1. An unhandled error is logged and exits 1.
 */
export function handleShutdown(log: Logger, stopAll: () => Promise<void>, graceMs = 15_000): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'stopping');
    const timer = setTimeout(() => {
      log.error({ graceMs }, 'shutdown took too long; exiting');
      process.exit(1);
    }, graceMs);
    timer.unref();
    stopAll().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('unhandledRejection', (err) => {
    log.fatal({ err }, 'unhandled rejection');
    process.exit(1);
  });
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'uncaught exception');
    process.exit(1);
  });
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
