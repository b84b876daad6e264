import { readFileSync } from 'node:fs';
import { settingsTable } from '@candlewick/common';

/**
 * What `candlewick help`, `candlewick <role> --help` and `--version` print. Light on purpose: the
 * CLI imports it before it knows the role, so it loads no role's code (each role is imported when
 * it runs), and a setting's text comes from the one settings table (common/src/config.ts).
 */

interface RoleHelp {
  /** the role's own arguments, after `candlewick <role>` */
  args?: string;
  /** what it does, as wrapped lines */
  about: string[];
}

const ROLE_HELP = {
  stack: {
    about: [
      'every role below in one terminal (private redis-server unless REDIS_URL is set;',
      "live with the feed's key, or FEED=binance (no key); else replays the bundled tape)",
    ],
  },
  ingest: { about: ["the feed's trade WebSocket (FEED: finnhub, binance, massive, alpaca) -> raw trade stream"] },
  'replay-server': {
    about: [
      "a WebSocket that replays REPLAY_TAPE in FEED's protocol: Finnhub's (type subscribe / trade / ping),",
      "Binance's (/ws and /stream, SUBSCRIBE, @aggTrade and @trade, ping frames, Binance's limits),",
      "Massive's (/stocks, auth, T.<ticker>) or Alpaca's (/v2/iex and /v2/sip, auth, trades)",
    ],
  },
  aggregate: { about: ['consumer-group worker: raw trades -> open bars (run several)'] },
  close: { about: ['closes bars (driven by a BullMQ job scheduler) and enqueues them for the writer'] },
  write: { about: ['appends closed bars to CSV and publishes them on bars:{interval}'] },
  'pg-sink': { about: ['closed bars of every interval into PostgreSQL (DATABASE_URL; stack starts it then)'] },
  tap: {
    args: 'trades|bars:{interval} [--symbols A,B] [--from $|0|id] [--group name]',
    about: [
      'prints a stream live as JSON lines, without disturbing the pipeline:',
      'tap trades | tap bars:5min  [--symbols A,B] [--from $|0|id] [--group name]',
    ],
  },
  backfill: {
    about: [
      "fills the span before each symbol's first live trade and every feed outage",
      '(BACKFILL=on); with --symbols A,B --from … --to … builds bars for a past range',
      'from the provider alone, into the same CSV layout',
    ],
  },
  bars: {
    about: [
      'a tape folded into bars in this one process, no Redis: the same CSV files a',
      'stack run of it writes, at in-memory speed (--tape FILE --out DIR)',
    ],
  },
  'pg-load': {
    about: [
      'the CSV files under DATA_DIR (bars and corrections) into the PostgreSQL table',
      '(DATABASE_URL), once or again: a row there with a newer revision stays',
    ],
  },
  serve: {
    about: [
      'the live chart page, the HTTP API (bars as JSON/CSV, Server-Sent Events) and',
      'Bull Board at /queues, on HTTP_PORT (8080); stack starts it',
    ],
  },
  'provider-server': {
    about: [
      'REPLAY_TAPE as Finnhub, Massive, Binance and Alpaca history on REPLAY_PORT (8766):',
      'backfill and historical mode from a clone, without keys',
    ],
  },
  acl: {
    about: ['prints the Redis ACL file of a user per role for KEY_PREFIX (REDIS_USERS_FILE:', "its users, with their passwords' SHA-256)"],
  },
  help: { args: '[settings|<role>]', about: ['this text'] },
} satisfies Record<string, RoleHelp>;

/** Every role the CLI runs (`candlewick <role>`). */
export const ROLES = Object.keys(ROLE_HELP) as (keyof typeof ROLE_HELP)[];

/** The short forms of a few flags: --tape is --replay-tape. */
export const ALIASES: Readonly<Record<string, string>> = {
  TAPE: 'REPLAY_TAPE',
  OUT: 'DATA_DIR',
  SPEED: 'REPLAY_SPEED',
  PORT: 'REPLAY_PORT',
  FROM: 'BACKFILL_FROM',
  TO: 'BACKFILL_TO',
};

/** The flag for a variable: REPLAY_TAPE -> --replay-tape. */
export const flagOf = (name: string) => `--${name.toLowerCase().replace(/_/g, '-')}`;

export const HELP = `candlewick: trades -> OHLCV bars on Redis Streams

usage: candlewick <role> [--flag value ...]
       candlewick <role> --help     that role's usage and the settings it reads
       candlewick --version

roles
${Object.entries(ROLE_HELP)
  .map(([name, h]) => h.about.map((line, i) => `  ${(i === 0 ? name : '').padEnd(16)}${line}`).join('\n'))
  .join('\n')}

Every setting is an environment variable (see docs/configuration.md, or: candlewick help settings); a flag
--some-name value sets SOME_NAME.
Short forms: ${Object.entries(ALIASES)
  .map(([short, name]) => `${flagOf(short)} (${name})`)
  .join(', ')}.`;

/**
 * `candlewick help settings`: every setting, as the table has it; with a role, the settings it
 * reads, each with its short flag where it has one.
 */
export function settingsHelp(role?: string): string {
  const rows = settingsTable(role);
  const short = new Map(Object.entries(ALIASES).map(([s, name]) => [name, s]));
  const names = rows.map((r) => (role !== undefined && short.has(r.env) ? `${r.env} (${flagOf(short.get(r.env)!)})` : r.env));
  const w = Math.max(...names.map((n) => n.length));
  return rows.map((r, i) => `${names[i]!.padEnd(w)}  ${r.doc} (default: ${r.shown})\n`).join('');
}

/** `candlewick <role> --help`: what the role does, how it is called, and only the settings it reads. */
export function roleHelp(role: keyof typeof ROLE_HELP): string {
  const h: RoleHelp = ROLE_HELP[role];
  if (role === 'help') return `${HELP}\n`;
  const about = h.about.join('\n  ');
  const settings = settingsHelp(role)
    .split('\n')
    .map((line) => (line ? `  ${line}` : line))
    .join('\n');
  const whose = role === 'stack' ? 'every setting (it passes them on to its roles)' : 'the settings it reads';
  return (
    `candlewick ${role}: ${about}\n\nusage: candlewick ${role} ${h.args ? `${h.args} ` : ''}[--flag value ...]\n\n` +
    `${whose}: each an environment variable, or its flag (SOME_NAME is --some-name value)\n${settings}`
  );
}

/** The version of this candlewick (its package.json). */
export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}
