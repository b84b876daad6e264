import { partitionOf, type Config } from '@candlewick/common';
import {
  EquityCalendar,
  TRADING_SESSIONS,
  isAroundTheClock,
  sessionsKept,
  windowAnchorMs,
  type BarState,
  type Clock,
  type Session,
} from '@candlewick/core';
import type { CsvFiles } from '@candlewick/common';

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
  private readonly calendar = new EquityCalendar();
  private readonly sessions: ReadonlySet<Session>;
  private readonly ms = new Map<string, number>();
  private readonly days = new Set<string>();

  constructor(
    private readonly cfg: Config,
    private readonly clock: Clock,
  ) {
    this.sessions = sessionsKept(cfg.sessions) ?? TRADING_SESSIONS;
    for (const iv of cfg.intervals) {
      this.ms.set(iv.name, iv.ms);
      if (iv.day) this.days.add(iv.name);
    }
  }

  symbolsOf(partition: number): string[] {
    return this.cfg.symbols.filter((s) => partitionOf(s, this.cfg.partitions) === partition);
  }

  private window(symbol: string, t: number, ms: number, day: boolean): [number, number] {
    return this.clock.window(t, ms, day ? 0 : windowAnchorMs(symbol, this.cfg.align), day);
  }

  /** Whether a window starting at `start` gets a flat bar: inside the sessions, or (daily) a trading day. */
  private inSession(symbol: string, start: number, day: boolean): boolean {
    if (isAroundTheClock(symbol)) return true;
    try {
      return day ? this.calendar.tradingDay(start + 12 * 3_600_000) : this.sessions.has(this.calendar.session(start));
    } catch {
      return false; // outside the calendar's years: no flat bars
    }
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
    const ms = this.ms.get(interval);
    const last = files.lastOf(interval, symbol);
    if (ms === undefined || last === undefined) return [];
    const out: { start: number; state: BarState }[] = [];
    const day = this.days.has(interval);
    let [, end] = this.window(symbol, last.start, ms, day);
    for (let i = 0; i < MAX_FILL; i++) {
      const [start, next] = this.window(symbol, end, ms, day);
      if (before !== undefined ? start >= before : next > (through ?? -Infinity)) break;
      if (this.inSession(symbol, start, day)) {
        const p = last.close;
        const state: BarState = { open: p, openKey: '', high: p, low: p, close: p, closeKey: '', volume: 0n, pv: 0n, n: 0 };
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
