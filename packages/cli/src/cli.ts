#!/usr/bin/env node
import { ConfigError, EXIT, RedisUnavailableError, configEnvNames, loadConfig, settingsTable, type Config } from '@candlewick/common';
import {
  ROLES,
  SERVICES,
  runHistoricalBackfill,
  runBars,
  runProviderServer,
  runReplayServer,
  runService,
  runTap,
  type TapRequest,
} from './roles.js';
import { runStack } from './stack.js';
import { aclFile } from './acl.js';

const HELP = `candlewick: trades -> OHLCV bars on Redis Streams

usage: candlewick <role> [--flag value ...]

roles
  stack           every role below in one terminal (private redis-server unless REDIS_URL is set;
                  replays the bundled tape unless FINNHUB_TOKEN is set)
  ingest          Finnhub trade WebSocket -> raw trade stream
  replay-server   a Finnhub-protocol WebSocket that replays REPLAY_TAPE
  aggregate       consumer-group worker: raw trades -> open bars (run several)
  close           closes bars (driven by a BullMQ job scheduler) and enqueues them for the writer
  write           appends closed bars to CSV and publishes them on bars:{interval}
  pg-sink         closed bars of every interval into PostgreSQL (DATABASE_URL; stack starts it then)
  tap             prints a stream live as JSON lines, without disturbing the pipeline:
                  tap trades | tap bars:5min  [--symbols A,B] [--from $|0|id] [--group name]
  backfill        fills the span before each symbol's first live trade and every feed outage
                  (BACKFILL=on); with --symbols A,B --from … --to … builds bars for a past range
                  from the provider alone, into the same CSV layout
  bars            a tape folded into bars in this one process, no Redis: the same CSV files a
                  stack run of it writes, at in-memory speed (--tape FILE --out DIR)
  serve           the live chart page, the HTTP API (bars as JSON/CSV, Server-Sent Events) and
                  Bull Board at /queues, on HTTP_PORT (8080); stack starts it
  provider-server REPLAY_TAPE as Finnhub/Massive history on REPLAY_PORT (8766): backfill and
                  historical mode from a clone, without keys
  acl             prints the Redis ACL file of a user per role for KEY_PREFIX (REDIS_USERS_FILE:
                  its users, with their passwords' SHA-256)
  help            this text

Every setting is an environment variable (see README, or: candlewick help settings); a flag
--some-name value sets SOME_NAME.
Short forms: --tape (REPLAY_TAPE), --out (DATA_DIR), --speed (REPLAY_SPEED), --port (REPLAY_PORT), --from (BACKFILL_FROM), --to (BACKFILL_TO).`;

const ALIASES: Record<string, string> = {
  TAPE: 'REPLAY_TAPE',
  OUT: 'DATA_DIR',
  SPEED: 'REPLAY_SPEED',
  PORT: 'REPLAY_PORT',
  FROM: 'BACKFILL_FROM',
  TO: 'BACKFILL_TO',
};

/** The flag for a variable: REPLAY_TAPE -> --replay-tape. */
const flagOf = (name: string) => `--${name.toLowerCase().replace(/_/g, '-')}`;

/** Edit distance, for "did you mean" on a mistyped flag. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

/**
 * Flags `--some-name value` (or `--some-name=value`) as variables (SOME_NAME). A flag that is not a
 * setting is an error naming the closest known one and listing them all: a typo must not be
 * silently ignored.
 */
function parseFlags(args: string[], extra: readonly string[] = []): Record<string, string> {
  const known = new Set([...configEnvNames(), ...extra]);
  const out: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/i.exec(a);
    if (!m) throw new ConfigError([`unexpected argument "${a}": flags look like --symbols AAPL,MSFT`]);
    let name = m[1]!.toUpperCase().replace(/-/g, '_');
    name = ALIASES[name] ?? name;
    if (!known.has(name)) {
      const flags = [...Object.keys(ALIASES), ...known].map(flagOf);
      const closest = flags.map((f) => [f, distance(f, `--${m[1]!.toLowerCase()}`)] as const).sort((x, y) => x[1] - y[1])[0];
      const hint = closest && closest[1] <= 3 ? `did you mean ${closest[0]}? ` : '';
      throw new ConfigError([`unknown flag --${m[1]}: ${hint}known flags: ${[...new Set(flags)].sort().join(' ')}`]);
    }
    const value = m[2] ?? args[++i];
    if (value === undefined) throw new ConfigError([`--${m[1]} needs a value`]);
    out[name] = value;
  }
  return out;
}

async function main(): Promise<void> {
  const [role = 'help', ...rest] = process.argv.slice(2);
  if (role === 'help' || role === '--help' || role === '-h') {
    if (rest[0] === 'settings') {
      // the table every setting is written in, as it stands
      const rows = settingsTable();
      const w = Math.max(...rows.map((r) => r.env.length));
      for (const r of rows) process.stdout.write(`${r.env.padEnd(w)}  ${r.doc} (default: ${r.shown})\n`);
      return;
    }
    process.stdout.write(`${HELP}\n`);
    return;
  }
  if (!(ROLES as readonly string[]).includes(role)) {
    process.stderr.write(`candlewick: unknown role "${role}"\n\n${HELP}\n`);
    process.exit(EXIT.CONFIG);
  }
  let cfg: Config;
  let tap: TapRequest | undefined;
  let flags: Record<string, string> = {};
  try {
    if (role === 'tap') {
      // tap's own flags are not settings: take them out before the configuration is read
      flags = parseFlags(rest.slice(1), ['GROUP']);
      tap = { target: rest[0] ?? '', symbols: flags.SYMBOLS, from: flags.BACKFILL_FROM, group: flags.GROUP };
      for (const k of ['SYMBOLS', 'BACKFILL_FROM', 'GROUP']) delete flags[k];
    } else {
      flags = parseFlags(rest);
    }
    cfg = loadConfig(process.env, flags);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`candlewick ${role}: ${err.message}\n`);
      process.exit(EXIT.CONFIG);
    }
    throw err;
  }
  switch (role) {
    case 'stack':
      // the children see the flags as the variables they stand for
      process.exitCode = await runStack(cfg, { ...process.env, ...flags });
      // Children, timers and sockets are all closed by now; exit explicitly in case a library left a handle.
      process.exit(process.exitCode);
    case 'replay-server':
      return runReplayServer(cfg);
    case 'provider-server':
      return runProviderServer(cfg);
    case 'bars':
      process.exitCode = runBars(cfg);
      return;
    case 'tap':
      process.exitCode = await runTap(cfg, tap!);
      return;
    case 'acl':
      process.stdout.write(aclFile(cfg.keyPrefix, cfg.redisUsers));
      return;
    case 'backfill':
      if (cfg.backfillFrom !== undefined) {
        process.exitCode = await runHistoricalBackfill(cfg);
        return;
      }
      return runService(cfg, role);
    default:
      if (role in SERVICES) return runService(cfg, role);
      process.stderr.write(`candlewick: unknown role "${role}"\n\n${HELP}\n`);
      process.exit(EXIT.CONFIG);
  }
}

main().catch((err: unknown) => {
  const role = process.argv[2] ?? '';
  // no Redis, or no database (pg-sink): exit 3
  if (err instanceof RedisUnavailableError || (err instanceof Error && (err as { exitCode?: number }).exitCode === EXIT.NO_REDIS)) {
    process.stderr.write(`candlewick ${role}: ${err.message}\n`);
    process.exit(EXIT.NO_REDIS);
  }
  // bad configuration, or an error that says it is one (a port in use: PortUnavailableError)
  if (err instanceof ConfigError || (err instanceof Error && (err as { exitCode?: number }).exitCode === EXIT.CONFIG)) {
    process.stderr.write(`candlewick ${role}: ${err.message}\n`);
    process.exit(EXIT.CONFIG);
  }
  process.stderr.write(`candlewick ${role}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(EXIT.FAILURE);
});
