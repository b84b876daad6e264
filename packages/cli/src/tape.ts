import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import {
  ConfigError,
  EXIT,
  TapeError,
  createLogger,
  readTape,
  symbolProblems,
  tapeSymbols,
  type BarRowCells,
  type Config,
  type TapeItem,
} from '@candlewick/common';
import { InProcessBars, type BarsProgress } from './bars.js';

/*
 * Tapes as the roles read them, and `candlewick bars`: nothing here needs Redis, a queue or a
 * server, so `bars` starts without loading any of them.
 */

/** The bundled tape: Binance XRP/ETH aggTrades, 2019-10-11 .. 2019-10-13 (see tapes/README.md). */
export const BUNDLED_TAPE = fileURLToPath(new URL('../../../tapes/binance-xrpeth-aggtrades-2019-10-11.json.gz', import.meta.url));

/** The bundled US-equity day: every AIG trade of 2013-10-10 (Lean's tick file), FEED=massive's and FEED=alpaca's default tape. */
export const BUNDLED_EQUITY_TAPE = fileURLToPath(new URL('../../../tapes/lean-aig-20131010/tick/aig_20131010_trade.zip', import.meta.url));

/**
 * The tape to replay (REPLAY_TAPE, or the bundled one: FEED=massive or FEED=alpaca, stocks feeds,
 * the equity day). A tape that cannot be read is a
 * configuration error naming the variable; lines that cannot be trades are left out and listed in
 * `problems` (file and line), so one bad line costs nothing else.
 */
export function replayTape(cfg: Config): { path: string; items: TapeItem[]; problems: string[] } {
  const path = cfg.replayTape ?? (cfg.feed === 'massive' || cfg.feed === 'alpaca' ? BUNDLED_EQUITY_TAPE : BUNDLED_TAPE);
  const problems: string[] = [];
  try {
    return { path, items: readTape(path, problems), problems };
  } catch (err) {
    if (err instanceof TapeError) throw new ConfigError([`REPLAY_TAPE=${JSON.stringify(path)}: ${err.message}`]);
    throw err;
  }
}

/**
 * The symbols a replay subscribes to: SYMBOLS, or without it the tape's own, which must then be
 * symbols (SYMBOL_PATTERN) whose files stay apart; a tape with none (raw frames, or no well-formed
 * trade) needs SYMBOLS. A ConfigError names the tape otherwise.
 */
export function tapeSubscription(cfg: Config, tape: { path: string; items: readonly TapeItem[]; problems?: string[] }): readonly string[] {
  if (cfg.symbols.length) return cfg.symbols;
  const symbols = tapeSymbols(tape.items);
  const where = `REPLAY_TAPE=${JSON.stringify(tape.path)}`;
  if (symbols.length === 0)
    throw new ConfigError([
      `${where}: SYMBOLS is unset and the tape has no well-formed trade to take symbols from${tape.problems?.length ? ` (${tape.problems[0]})` : ''}; set SYMBOLS, e.g. SYMBOLS=AAPL`,
    ]);
  const problems = symbolProblems(symbols, `${where} (its symbols, SYMBOLS unset)`);
  if (problems.length) throw new ConfigError(problems);
  return symbols;
}

/**
 * `candlewick bars --tape … --out …`: the tape folded into bars in this process (no Redis), into the
 * same CSV files a stack run writes. A progress bar in a terminal; a summary on stdout.
 */
export async function runBars(cfg: Config): Promise<number> {
  // A tape is read into millions of short-lived objects: semi-spaces of 32 MB (V8's default is
  // 16) let most of them die young rather than be copied, a quarter off the Lean day
  // (bench: 0.69 -> 0.53 s). This process does nothing else, so the memory is no one's loss.
  setFlagsFromString('--max-semi-space-size=32');
  const t0 = performance.now();
  const tape = replayTape(cfg);
  const { path, items, problems } = tape;
  for (const problem of problems.slice(0, 20)) process.stderr.write(`candlewick bars: ${problem}\n`);
  if (problems.length > 20) process.stderr.write(`candlewick bars: ${problems.length - 20} more tape lines left out\n`);
  // DATABASE_URL: every row into the table too (connected first, so a database not there costs no work: exit 3)
  const table = cfg.databaseUrl ? await openTable(cfg, 'candlewick bars') : undefined;
  const bars = new InProcessBars(
    cfg,
    tapeSubscription(cfg, tape),
    table && ((interval, symbol, start, cells) => table.add({ interval, symbol, start, rev: 0, ...tableCells(cells) })),
  );
  let progress: BarsProgress | undefined;
  if (process.stderr.isTTY) {
    const { SingleBar, Presets } = await import('cli-progress');
    const bar = new SingleBar(
      { format: 'bars [{bar}] {percentage}% {value}/{total} tape items | eta {eta_formatted}', stream: process.stderr },
      Presets.shades_classic,
    );
    progress = { start: (n) => bar.start(n, 0), update: (n) => bar.update(n), stop: () => bar.stop() };
  }
  const c = bars.run(items, progress);
  if (table) {
    try {
      await table.flush();
    } finally {
      await table.close();
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  // in the order of INTERVALS, time bars first; an activity interval that closed no bar says 0
  const names = [...cfg.intervals, ...cfg.activity].map((i) => i.name);
  const written = [
    ...names.filter((n) => c.written[n] !== undefined || cfg.activity.some((a) => a.name === n)),
    ...Object.keys(c.written).filter((n) => !names.includes(n)),
  ]
    .map((k) => `${k}=${c.written[k] ?? 0}`)
    .join(' ');
  const left: string[] = [];
  if (c.filtered) left.push(`${c.filtered} outside SESSIONS`);
  if (c.excluded) left.push(`${c.excluded} whose CONDITIONS set nothing`);
  process.stdout.write(
    [
      'candlewick bars',
      `  tape             ${path}`,
      `  trades           ${c.trades}${left.length ? ` (of them ${left.join(', ')})` : ''}`,
      `  rejected         ${c.rejected} (plus ${c.badFrames} unreadable frames)${c.future ? `, ${c.future} of them ahead of the clock or the feed (FUTURE_LIMIT_MS)` : ''}`,
      ...(c.foreign ? [`  foreign          ${c.foreign} trades for symbols not in SYMBOLS, dropped`] : []),
      `  late             ${c.late}`,
      `  bars written     ${Object.values(c.written).some((n) => n > 0) ? written : 'none'}${c.present ? ` (${c.present} already in the files)` : ''}`,
      ...(cfg.activity.length
        ? [`  activity bars    ${c.forming} still forming at the tape's end (their threshold not reached: not written)`]
        : []),
      `  time             ${seconds.toFixed(2)} s, ${Math.round(c.trades / seconds)} trades/s (reading the tape included)`,
      `  CSV              ${join(cfg.dataDir, 'raw')}`,
      ...(table ? [`  PostgreSQL       ${table.written} rows upserted into bars (${table.where})`] : []),
      '',
    ].join('\n'),
  );
  for (const problem of c.problems) process.stderr.write(`candlewick bars: ${problem}\n`);
  return c.problems.length ? EXIT.CONFIG : EXIT.OK;
}

/** The bars table (DATABASE_URL) for a one-off writer, connected and migrated. */
export async function openTable(cfg: Config, application: string) {
  const { TableWriter } = await import('@candlewick/writer/dist/bars-table.js');
  const log = createLogger({
    level: cfg.logLevel,
    pretty: cfg.logPretty,
    name: application.replace(/^candlewick /, ''),
    write: (l) => process.stderr.write(l),
  });
  const table = new TableWriter(cfg, log, application);
  await table.open();
  return table;
}

/** A row's cells as the table has them (trades a number; complete and sources known). */
export function tableCells(c: BarRowCells) {
  return {
    timestamp: c.timestamp,
    open: c.open,
    high: c.high,
    low: c.low,
    close: c.close,
    vwap: c.vwap,
    volume: c.volume,
    trades: c.trades === '' ? undefined : Number(c.trades),
    complete: c.complete,
    sources: c.sources,
  };
}

/**
 * `candlewick pg-load`: the CSV files under DATA_DIR into the bars table (DATABASE_URL), through
 * the upsert every writer of the table uses: run twice, the table is the same.
 */
export async function runPgLoad(cfg: Config): Promise<number> {
  if (!cfg.databaseUrl) throw new ConfigError(['pg-load needs DATABASE_URL (postgres://user@host:port/database) to load into']);
  const { loadCsvFiles } = await import('@candlewick/writer/dist/bars-table.js');
  const log = createLogger({ level: cfg.logLevel, pretty: cfg.logPretty, name: 'pg-load', write: (l) => process.stderr.write(l) });
  const t0 = performance.now();
  const c = await loadCsvFiles(cfg, log);
  const seconds = (performance.now() - t0) / 1000;
  process.stdout.write(
    [
      'candlewick pg-load',
      `  CSV              ${join(cfg.dataDir, 'raw')}: ${c.files} files`,
      `  rows             ${c.rows} bars, ${c.corrections} corrections upserted (a row there with a newer revision stays)`,
      ...(c.namedByFile.length
        ? [
            `  symbols          named by their file (not in SYMBOLS nor the table): ${c.namedByFile.join(', ')}; set SYMBOLS to give the feed's spelling`,
          ]
        : []),
      `  time             ${seconds.toFixed(2)} s`,
      '',
    ].join('\n'),
  );
  return EXIT.OK;
}
