import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * One root logger per process; components take `logger.child({ component })`. The Finnhub token
 * is redacted wherever it could appear as a field, and URLs are logged only through redactUrl.
 */
export function createLogger(opts: { level: string; pretty: boolean; name: string; write?: (line: string) => void }): Logger {
  const dest = opts.write && !opts.pretty ? { write: opts.write } : undefined;
  return pino({
    name: opts.name,
    level: opts.level,
    redact: { paths: ['token', '*.token', 'finnhubToken', '*.finnhubToken', 'massiveApiKey', '*.massiveApiKey', 'apiKey', '*.apiKey', 'headers.authorization', '*.headers.authorization'], censor: '[redacted]' },
    ...(opts.pretty
      ? { transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } }
      : {}),
  }, dest);
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
