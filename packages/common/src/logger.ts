import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

/** Where a process keeps its log file: `path` without extension, rotated at `size`, `count` old files kept. */
export interface LogFile {
  path: string;
  size: string;
  count: number;
}

const REDACT = ['token', '*.token', 'finnhubToken', '*.finnhubToken', 'massiveApiKey', '*.massiveApiKey', 'apiKey', '*.apiKey', 'headers.authorization', '*.headers.authorization'];

/**
 * One root logger per process; components take `logger.child({ component })`. Lines go to the
 * terminal (pretty there, JSON otherwise, or to `write`) and, with `file`, also as JSON to a file
 * that pino-roll rotates by size (`{path}.{n}.log`, the newest number the current file). The
 * Finnhub token is redacted wherever it could appear as a field, and URLs are logged only
 * through redactUrl.
 */
export function createLogger(opts: { level: string; pretty: boolean; name: string; write?: (line: string) => void; file?: LogFile }): Logger {
  const options = { name: opts.name, level: opts.level, redact: { paths: REDACT, censor: '[redacted]' } };
  const terminal = opts.pretty
    ? pretty({ colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', sync: true })
    : opts.write
      ? { write: opts.write }
      : pino.destination({ dest: 1, sync: true });
  if (!opts.file) return pino(options, terminal);
  const file = pino.transport({
    target: 'pino-roll',
    options: { file: opts.file.path, extension: '.log', size: opts.file.size, mkdir: true, limit: { count: opts.file.count } },
  });
  const level = opts.level as pino.Level;
  return pino(options, pino.multistream([{ stream: terminal, level }, { stream: file, level }]));
}

/** A URL fit for a log line: query parameters that carry credentials are masked. */
export function redactUrl(url: string): string {
  if (url.includes(',')) return url.split(',').map((u) => redactUrl(u.trim())).join(',');
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
