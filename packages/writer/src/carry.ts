import { partitionOf, type Config, type CsvFiles } from '@candlewick/common';
import type { BarCalendar, BarState } from '@candlewick/core';

/** a file that has not traded for this many windows is not carried further (a delisted symbol) */
const MAX_FILL = 50_000;

/**
 * EMPTY_BARS=carry: a flat bar at the previous close, volume 0, for every window without trades of
 * every subscribed symbol that has traded before — for US equities only inside their sessions
 * (SESSIONS=regular: the regular session; otherwise pre-market to after-hours), for 24/7 symbols
 * always. Flat rows are written in window order before the next real bar of their file, and up to
 * the closer's horizon when a symbol stops trading.
 */
export class Carry {
  constructor(
    private readonly cfg: Config,
    private readonly calendar: BarCalendar,
  ) {}

  symbolsOf(partition: number): string[] {
    return this.cfg.symbols.filter((s) => partitionOf(s, this.cfg.partitions) === partition);
  }

  /**
   * Writes the flat rows after the file's last row: windows that start before `before` (the next
   * real bar) or end by `through` (the closer's horizon). Returns what it wrote, and tells
   * `onWritten` of each row as it is written (a fill cut short by a failed write has still written
   * those).
   */
  fill(
    files: CsvFiles,
    interval: string,
    symbol: string,
    before: number | undefined,
    through: number | undefined,
    onWritten: (row: { start: number; state: BarState }) => void = () => undefined,
  ): { start: number; state: BarState }[] {
    const iv = this.calendar.interval(interval);
    const last = files.lastOf(interval, symbol);
    if (iv === undefined || last === undefined) return [];
    const out: { start: number; state: BarState }[] = [];
    let [, end] = this.calendar.window(symbol, last.start, iv);
    for (let i = 0; i < MAX_FILL; i++) {
      const [start, next] = this.calendar.window(symbol, end, iv);
      if (before !== undefined ? start >= before : next > (through ?? -Infinity)) break;
      if (this.calendar.hasFlatBar(symbol, start, iv)) {
        const p = last.close;
        const state: BarState = { open: p, openKey: '', high: p, low: p, close: p, closeKey: '', volume: 0n, pv: 0n, trades: 0 };
        if (files.append(interval, symbol, start, state) === 'written') {
          out.push({ start, state });
          onWritten({ start, state });
        }
      }
      end = next;
    }
    return out;
  }
}
