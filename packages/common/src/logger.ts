import type { Level, Logger, pino as Pino } from 'pino';
import { lazyRequire } from './lazy.js';

/** pino and pino-pretty, loaded by the first logger (`candlewick bars` and `--help` make none). */
const pinoLib = lazyRequire<typeof import('pino')>('pino');
const prettyLib = lazyRequire<typeof import('pino-pretty')>('pino-pretty');

export type { Logger };

/** Where a process keeps its log file: `path` without extension, rotated at `size`, `count` old files kept. */
export interface LogFile {
  path: string;
  size: string;
  count: number;
}

const REDACT = [
  'token',
  '*.token',
  'finnhubToken',
  '*.finnhubToken',
  'massiveApiKey',
  '*.massiveApiKey',
  'alpacaApiKey',
  '*.alpacaApiKey',
  'alpacaApiSecret',
  '*.alpacaApiSecret',
  'secret',
  '*.secret',
  'apiKey',
  '*.apiKey',
  'headers.authorization',
  '*.headers.authorization',
];

/**
 * One root logger per process; components take `logger.child({ component })`. Lines go to the
 * terminal (pretty there, JSON otherwise, or to `write`) and, with `file`, also as JSON to a file
 * that pino-roll rotates by size (`{path}.{n}.log`, the newest number the current file). The
 * Finnhub token is redacted wherever it could appear as a field, and URLs are logged only
 * through redactUrl.
 */
export function createLogger(opts: {
  level: string;
  pretty: boolean;
  name: string;
  write?: (line: string) => void;
  file?: LogFile;
}): Logger {
  const { pino } = pinoLib();
  const options = { name: opts.name, level: opts.level, redact: { paths: REDACT, censor: '[redacted]' } };
  const terminal = opts.pretty
    ? prettyLib()({ colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', sync: true })
    : opts.write
      ? { write: opts.write }
      : pino.destination({ dest: 1, sync: true });
  if (!opts.file) return pino(options, terminal);
  const level = opts.level as Level;
  const file = new LogFileStream(opts.file, (line) => terminal.write(line));
  return pino(
    options,
    pino.multistream([
      { stream: terminal, level },
      { stream: file, level },
    ]),
  );
}

/**
 * The log file (pino-roll in a worker thread) as a stream that never takes the process down: a
 * full disk or a lost folder turns the file off with one line on the terminal, and the file is
 * tried again a minute later — logging must not be the fault that stops a pipeline.
 */
class LogFileStream {
  private transport: ReturnType<typeof Pino.transport> | undefined;
  private brokenAt = 0;

  constructor(
    private readonly file: LogFile,
    private readonly say: (line: string) => void,
  ) {
    this.open();
  }

  private open(): void {
    try {
      const t = pinoLib().pino.transport({
        target: 'pino-roll',
        options: { file: this.file.path, extension: '.log', size: this.file.size, mkdir: true, limit: { count: this.file.count } },
      });
      t.on('error', (err: Error) => this.broken(t, err));
      this.transport = t;
    } catch (err) {
      this.broken(undefined, err as Error);
    }
  }

  private broken(t: ReturnType<typeof Pino.transport> | undefined, err: Error): void {
    if (t !== undefined && t !== this.transport) return;
    this.transport = undefined;
    this.brokenAt = Date.now();
    this.say(
      `${JSON.stringify({ level: 40, time: Date.now(), msg: `log file ${this.file.path}.*.log stopped (${err.message}); logging to the terminal only, trying the file again in a minute` })}\n`,
    );
  }

  write(line: string): void {
    if (this.transport === undefined) {
      if (Date.now() - this.brokenAt < 60_000) return;
      this.open();
      if (this.transport === undefined) return;
    }
    try {
      this.transport.write(line);
    } catch (err) {
      this.broken(this.transport, err as Error);
    }
  }
}

/**
 * Logs an error that recurs (a retry loop against a refusing Redis or a full disk) when it first
 * happens, then at most once per `everyMs` with how often it happened meanwhile, and once when it
 * stops: a fault lasting minutes costs a few lines, not thousands.
 */
export class RecurringError {
  private first = 0;
  private lastSaid = 0;
  private since = 0;

  constructor(
    private readonly log: Logger,
    private readonly msg: string,
    private readonly everyMs = 60_000,
  ) {}

  /** whether the error is happening (since its first report, until ok()) */
  get active(): boolean {
    return this.first !== 0;
  }

  report(err: unknown, extra: Record<string, unknown> = {}): void {
    const now = performance.now();
    this.since++;
    if (this.first === 0) {
      this.first = now;
      this.lastSaid = now;
      this.since = 0;
      this.log.error({ err, ...extra }, this.msg);
    } else if (now - this.lastSaid >= this.everyMs) {
      this.log.error({ err, ...extra, repeated: this.since, forS: Math.round((now - this.first) / 1000) }, `${this.msg} (still)`);
      this.lastSaid = now;
      this.since = 0;
    }
  }

  ok(what = 'recovered'): void {
    if (this.first === 0) return;
    this.log.info({ afterS: Number(((performance.now() - this.first) / 1000).toFixed(1)) }, `${what}: ${this.msg.replace(/;.*$/, '')}`);
    this.first = 0;
  }
}

/** A URL fit for a log line: query parameters that carry credentials are masked. */
export function redactUrl(url: string): string {
  if (url.includes(','))
    return url
      .split(',')
      .map((u) => redactUrl(u.trim()))
      .join(',');
  try {
    const u = new URL(url);
    for (const k of [...u.searchParams.keys()]) {
      if (/token|key|secret|password|apikey/i.test(k)) u.searchParams.set(k, '***');
    }
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '[unparseable url]';
  }
}
