/**
 * Exit codes and the error classes that carry them: one place, so a supervisor (`candlewick
 * stack`, docker compose, systemd) and a user reading `$?` know what happened.
 */
export const EXIT = Object.freeze({
  /** done: a replay to its end, or stopped on request with everything handed over */
  OK: 0,
  /** a runtime failure, or a stop that could not hand over what it held (the log says what) */
  FAILURE: 1,
  /** bad configuration or input: restarting cannot help, so supervisors do not restart it */
  CONFIG: 2,
  /** no Redis: none to start, unreachable within REDIS_CONNECT_TIMEOUT, or lost for good */
  NO_REDIS: 3,
});

/** `candlewick stack` stopped by signal n before its replay finished: 128 + n, as shells report it. */
export function signalExitCode(signal: NodeJS.Signals): number {
  const n = { SIGHUP: 1, SIGINT: 2, SIGPIPE: 13, SIGTERM: 15 }[signal as string] ?? 15;
  return 128 + n;
}

/** Redis cannot be had: the message says what was tried and what to do. */
export class RedisUnavailableError extends Error {
  readonly exitCode = EXIT.NO_REDIS;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RedisUnavailableError';
  }
}

/** A port a server cannot listen on (in use, or not allowed): the variable to change and the port are named. */
export class PortUnavailableError extends Error {
  readonly exitCode = EXIT.CONFIG;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PortUnavailableError';
  }
}

/** Where a server listens, by its settings: the port and address asked for, and what to do instead. */
export interface ListenAt {
  port: number;
  host: string;
  /** the settings that chose them (HTTP_PORT, HTTP_HOST) */
  portSetting: string;
  hostSetting: string;
  /** what failed, said first ("cannot listen") */
  what?: string;
  /** what to do about it ("choose a free port with HTTP_PORT") */
  todo: string;
}

/**
 * A listen that failed on its port or address (in use, not allowed to this user, not one of this
 * machine's): a PortUnavailableError (exit 2) naming the settings and what to do; any other error
 * as it was.
 */
export function listenError(err: unknown, at: ListenAt): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const { port, host } = at;
  const why =
    code === 'EADDRINUSE'
      ? `port ${port} is in use on ${host}`
      : code === 'EACCES'
        ? `port ${port} is not allowed to this user on ${host} (ports below 1024 need privileges)`
        : code === 'EADDRNOTAVAIL'
          ? `address ${host} is not one of this machine's`
          : undefined;
  if (!why) return err;
  return new PortUnavailableError(
    `${at.what ?? 'cannot listen'}: ${why} (${at.portSetting}=${port}, ${at.hostSetting}=${host}); ${at.todo}`,
    { cause: err },
  );
}

/**
 * Errors that mean Redis is up but refuses writes for now (its disk is full: MISCONF; out of
 * memory: OOM; a replica or a failover: READONLY, MASTERDOWN; busy with a script: BUSY): like an
 * outage, said once and retried — the command had no effect.
 */
export function isRefusal(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  // (a MULTI discarded for one of them, and BullMQ's own wrapping of an OOM, are the same refusal)
  const queued = (err as { previousErrors?: unknown[] }).previousErrors;
  if (/^EXECABORT\b/.test(err.message) && queued?.some(isRefusal)) return true;
  return (
    /^(EXECABORT Transaction discarded because of: )?(MISCONF|OOM|READONLY|MASTERDOWN|NOREPLICAS|BUSY|LOADING|TRYAGAIN)\b/.test(
      err.message,
    ) || /\bOOM command not allowed\b/.test(err.message)
  );
}

/**
 * Errors that mean the connection to Redis is down or going (as opposed to a command Redis
 * refused): these are an outage, reported once, and retried.
 */
/** ioredis under Sentinel while a master is down and not yet replaced: a failover, not a fault. */
const SENTINEL_FAILOVER = /All sentinels are unreachable|failed to connect to sentinel|connected to sentinel .* but got an invalid reply/;

export function isConnectionError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (SENTINEL_FAILOVER.test(err.message)) return true;
  if (['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'EAI_AGAIN', 'ENETUNREACH'].includes(code))
    return true;
  return /Connection is closed|Stream isn't writeable|connect ECONNREFUSED|Reached the max retries|CLUSTERDOWN|LOADING|None of startup nodes is available|Failed to refresh slots cache|Too many Cluster redirections/.test(
    err.message,
  );
}

/**
 * Two symbols whose file-safe names are one (BINANCE:XRPETH and BINANCE_XRPETH): the writer refuses
 * to mix their bars in one file. SYMBOLS is checked for this at start; this is the last guard.
 */
export class SymbolFileClashError extends Error {
  readonly exitCode = EXIT.CONFIG;
  constructor(
    readonly file: string,
    readonly symbols: readonly [string, string],
  ) {
    super(
      `"${symbols[0]}" and "${symbols[1]}" would share ${file}: their bars are not written into one file; subscribe to one of them (SYMBOLS)`,
    );
    this.name = 'SymbolFileClashError';
  }
}
