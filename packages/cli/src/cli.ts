#!/usr/bin/env node
import { ConfigError, loadConfig, type Config } from '@candlewick/common';
import { ROLES, SERVICES, runHistoricalBackfill, runReplayServer, runService, runTap, type TapRequest } from './roles.js';
import { RedisUnavailableError } from './redis-server.js';
import { runStack } from './stack.js';

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
  tap             prints a stream live as JSON lines, without disturbing the pipeline:
                  tap trades | tap bars:5min  [--symbols A,B] [--from $|0|id] [--group name]
  backfill        fills the span before each symbol's first live trade and every feed outage
                  (BACKFILL=on); with --symbols A,B --from … --to … builds bars for a past range
                  from the provider alone, into the same CSV layout
  help            this text

Every setting is an environment variable (see README); a flag --some-name value sets SOME_NAME.
Short forms: --tape (REPLAY_TAPE), --speed (REPLAY_SPEED), --port (REPLAY_PORT), --from (BACKFILL_FROM), --to (BACKFILL_TO).`;

const ALIASES: Record<string, string> = { TAPE: 'REPLAY_TAPE', SPEED: 'REPLAY_SPEED', PORT: 'REPLAY_PORT', FROM: 'BACKFILL_FROM', TO: 'BACKFILL_TO' };

function parseFlags(args: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/i.exec(a);
    if (!m) throw new ConfigError([`unexpected argument "${a}": flags look like --symbols AAPL,MSFT`]);
    let name = m[1]!.toUpperCase().replace(/-/g, '_');
    name = ALIASES[name] ?? name;
    const value = m[2] ?? args[++i];
    if (value === undefined) throw new ConfigError([`--${m[1]} needs a value`]);
    out[name] = value;
  }
  return out;
}

async function main(): Promise<void> {
  const [role = 'help', ...rest] = process.argv.slice(2);
  if (role === 'help' || role === '--help' || role === '-h') {
    process.stdout.write(`${HELP}\n`);
    return;
  }
  if (!(ROLES as readonly string[]).includes(role)) {
    process.stderr.write(`candlewick: unknown role "${role}"\n\n${HELP}\n`);
    process.exit(2);
  }
  let cfg: Config;
  let tap: TapRequest | undefined;
  try {
    let flags: Record<string, string>;
    if (role === 'tap') {
      // tap's own flags are not settings: take them out before the configuration is read
      flags = parseFlags(rest.slice(1));
      tap = { target: rest[0] ?? '', symbols: flags.SYMBOLS, from: flags.BACKFILL_FROM, group: flags.GROUP };
      for (const k of ['SYMBOLS', 'BACKFILL_FROM', 'GROUP']) delete flags[k];
    } else {
      flags = parseFlags(rest);
    }
    cfg = loadConfig(process.env, flags);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`candlewick ${role}: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  switch (role) {
    case 'stack':
      process.exitCode = await runStack(cfg, process.env);
      // Children, timers and sockets are all closed by now; exit explicitly in case a library left a handle.
      process.exit(process.exitCode);
    case 'replay-server':
      return runReplayServer(cfg);
    case 'tap':
      process.exitCode = await runTap(cfg, tap!);
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
      process.exit(2);
  }
}

main().catch((err: unknown) => {
  if (err instanceof RedisUnavailableError) {
    process.stderr.write(`candlewick: ${err.message}\n`);
    process.exit(3);
  }
  process.stderr.write(`candlewick: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
