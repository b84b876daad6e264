import { rowCells, type BarRowCells, type Config, type Logger } from '@candlewick/common';
import { BAR_FLAGS, candleState, parseBarId, tradeEntries } from '@candlewick/core';
import { CsvFiles } from '@candlewick/common';
import type { PartialBar } from '@candlewick/core';
import { ProviderError } from './http.js';
import { makeProvider } from './providers.js';
import { backfillPreaggregator } from './worker.js';

export interface HistoricalResult {
  written: number;
  /** bars already in the files (a second run, or an overlap): left as they are */
  present: number;
  trades: number;
  candles: number;
  /** symbols the provider refused (an unknown name), with its message: the others were filled */
  refused: { symbol: string; reason: string }[];
}

export interface Progress {
  start(total: number): void;
  step(what: string): void;
  stop(): void;
}

/**
 * `candlewick backfill --symbols … --from … --to …`: bars for a past range, from the provider
 * alone, into the same CSV layout as the live pipeline. Works a day (in BAR_TZ) at a time, so
 * memory stays bounded; bars never cross midnight, so every day's bars are final once fetched.
 * A bar whose window reaches outside the range is marked incomplete. Rows already in a file are
 * never rewritten, so running it twice changes nothing. A symbol the provider does not know is
 * left out with its reason (`refused`), and the others are filled.
 */
export async function runHistorical(
  cfg: Config,
  symbols: readonly string[],
  from: number,
  to: number,
  log: Logger,
  progress: Progress,
  /** each day's rows, written or found in the files already: into the table in PostgreSQL (DATABASE_URL) */
  onRows?: (rows: { interval: string; symbol: string; start: number; cells: BarRowCells }[]) => Promise<void>,
): Promise<HistoricalResult> {
  const provider = makeProvider(cfg, log);
  const pre = backfillPreaggregator(cfg);
  const { clock } = pre.calendar;
  const files = new CsvFiles(cfg.dataDir, clock, cfg.csvExtraColumns, undefined, pre.calendar.days);
  const days: [number, number][] = [];
  for (let t = from; t < to;) {
    const [, end] = clock.dayWindow(t);
    days.push([t, Math.min(end, to)]);
    t = end;
  }
  const ticks = cfg.backfillMode === 'ticks' && provider.trades !== undefined;
  const res: HistoricalResult = { written: 0, present: 0, trades: 0, candles: 0, refused: [] };
  progress.start(symbols.length * days.length);
  try {
    for (const symbol of symbols) {
      try {
        await fill(symbol);
      } catch (err) {
        if (!(err instanceof ProviderError) || err.symbol === undefined) throw err;
        res.refused.push({ symbol, reason: err.message });
      }
    }
  } finally {
    progress.stop();
  }
  return res;

  async function fill(symbol: string): Promise<void> {
    for (const [a, b] of days) {
      let bars: Map<string, PartialBar>;
      if (ticks) {
        const trades = (await provider.trades!(symbol, a, b - 1)).filter((tr) => tr.t >= a && tr.t < b);
        res.trades += trades.length;
        bars = pre.run(tradeEntries(symbol, trades)).bars;
        for (const part of bars.values()) part.state.flags = (part.state.flags ?? 0) | provider.tradeFlag;
      } else {
        if (!provider.candles) throw new Error(`${provider.name} gives no candles`);
        const candles = (await provider.candles(symbol, a, b - 1)).filter((c) => c.start >= a && c.start + 60_000 <= b);
        res.candles += candles.length;
        bars = pre.foldStates(candles.map((c) => ({ s: symbol, t: c.start, state: candleState(c, provider.candleFlag) })));
      }
      const ordered = [...bars].map(([id, part]) => ({ ...parseBarId(id), part })).sort((x, y) => x.start - y.start);
      for (const { interval, start, part } of ordered) {
        if (start < from || part.end > to) part.state.flags = (part.state.flags ?? 0) | BAR_FLAGS.INCOMPLETE;
        const outcome = files.append(interval, symbol, start, part.state);
        if (outcome === 'written') res.written++;
        else res.present++;
      }
      // after the files: a table that fails leaves the files as they would be without it
      if (onRows)
        await onRows(
          ordered.map(({ interval, start, part }) => ({
            interval,
            symbol,
            start,
            cells: rowCells(clock, start, part.state, pre.calendar.days.has(interval)),
          })),
        );
      progress.step(`${symbol} ${clock.label(a).slice(0, 10)}`);
    }
  }
}
