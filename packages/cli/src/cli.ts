#!/usr/bin/env node
import { ConfigError, EXIT, RedisUnavailableError, configEnvNames, loadConfig, type Config } from '@candlewick/common';
import { ALIASES, HELP, ROLES, flagOf, roleHelp, settingsHelp, version } from './usage.js';
import type { TapRequest } from './roles.js';

/*
 * The one binary. Only what every role needs is imported here (the settings, the help); the role's
 * own code is imported once it is known, so `candlewick bars` or `--help` never loads BullMQ,
 * ioredis or fastify.
 */

type Role = (typeof ROLES)[number];

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

const isHelp = (a: string) => a === '--help' || a === '-h';

async function main(): Promise<void> {
  const [role = 'help', ...rest] = process.argv.slice(2);
  if (role === '--version' || role === '-v') {
    process.stdout.write(`candlewick ${version()}\n`);
    return;
  }
  if (role === 'help' || isHelp(role)) {
    const topic = rest[0];
    if (topic === 'settings') process.stdout.write(settingsHelp());
    else if (topic !== undefined && (ROLES as readonly string[]).includes(topic)) process.stdout.write(roleHelp(topic as Role));
    else process.stdout.write(`${HELP}\n`);
    return;
  }
  if (!(ROLES as readonly string[]).includes(role)) {
    process.stderr.write(`candlewick: unknown role "${role}"\n\n${HELP}\n`);
    process.exit(EXIT.CONFIG);
  }
  // `candlewick bars --help`: the role's usage and the settings it reads, nothing run
  if (rest.some(isHelp)) {
    process.stdout.write(roleHelp(role as Role));
    return;
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
    // a stand-in serves a tape: it replays, whatever mode the feed's settings would mean for an ingestor
    // (and `bars` folds a tape: never live, whatever feed the tape is taken as coming through)
    if ((role === 'replay-server' || role === 'provider-server' || role === 'bars') && !process.env.MODE && !flags.MODE)
      flags.MODE = 'replay';
    cfg = loadConfig(process.env, flags);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`candlewick ${role}: ${err.message}\n`);
      process.exit(EXIT.CONFIG);
    }
    throw err;
  }
  switch (role) {
    case 'stack': {
      const { runStack } = await import('./stack.js');
      // the children see the flags as the variables they stand for
      process.exitCode = await runStack(cfg, { ...process.env, ...flags });
      // Children, timers and sockets are all closed by now; exit explicitly in case a library left a handle.
      process.exit(process.exitCode);
    }
    case 'bars':
      process.exitCode = await (await import('./tape.js')).runBars(cfg);
      return;
    case 'pg-load':
      process.exitCode = await (await import('./tape.js')).runPgLoad(cfg);
      return;
    case 'acl':
      process.stdout.write((await import('./acl.js')).aclFile(cfg.keyPrefix, cfg.redisUsers));
      return;
  }
  const roles = await import('./roles.js');
  switch (role) {
    case 'replay-server':
      return roles.runReplayServer(cfg);
    case 'provider-server':
      return roles.runProviderServer(cfg);
    case 'tap':
      process.exitCode = await roles.runTap(cfg, tap!);
      return;
    case 'backfill':
      if (cfg.backfillFrom !== undefined) {
        process.exitCode = await roles.runHistoricalBackfill(cfg);
        return;
      }
      return roles.runService(cfg, role);
    default:
      if (role in roles.SERVICES) return roles.runService(cfg, role);
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
