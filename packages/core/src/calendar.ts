import { barId } from './bar.js';
import { Clock, WindowCache, baseIntervalMs, baseIsDay, type Interval } from './time.js';

/**
 * The US-equity exchange calendar (NYSE rules, which Nasdaq follows): weekends, holidays, early
 * closes, and the sessions of a trading day in New York time:
 *   pre-market 04:00-09:30, regular 09:30-16:00, after-hours 16:00-20:00;
 * on an early-close day regular ends at 13:00 and after-hours at 17:00.
 * Holidays follow the exchange's rules (with their weekend shifts) plus the one-off closures listed
 * below; the calendar covers FIRST_YEAR..LAST_YEAR and says so for any other year.
 */
export const FIRST_YEAR = 2000;
export const LAST_YEAR = 2030;

export type Session = 'pre' | 'regular' | 'post' | 'closed';

export class CalendarRangeError extends Error {
  constructor(year: number) {
    super(
      `the US-equity calendar covers ${FIRST_YEAR}-${LAST_YEAR}; ${year} is outside it ` +
        '(extend packages/core/src/calendar.ts, or use SESSIONS=all, which needs no calendar)',
    );
    this.name = 'CalendarRangeError';
  }
}

/** One-off closures: national days of mourning, 9/11, Hurricane Sandy. */
const SPECIAL_CLOSURES = new Set([
  '2001-09-11',
  '2001-09-12',
  '2001-09-13',
  '2001-09-14',
  '2004-06-11',
  '2007-01-02',
  '2012-10-29',
  '2012-10-30',
  '2018-12-05',
  '2025-01-09',
]);

const NY = 'America/New_York';
const H = 3_600_000;
const M = 60_000;

function iso(y: number, m: number, d: number): string {
  return `${y}-${String(m).padStart(2, '0')}-${String(d).padStart(2, '0')}`;
}

/** Weekday (0 = Sunday) of a civil date. */
function weekday(y: number, m: number, d: number): number {
  return new Date(Date.UTC(y, m - 1, d)).getUTCDay();
}

/** The n-th (1-based) weekday `wd` of a month; n = -1 for the last. */
function nthWeekday(y: number, m: number, wd: number, n: number): number {
  if (n > 0) {
    const first = weekday(y, m, 1);
    return 1 + ((wd - first + 7) % 7) + (n - 1) * 7;
  }
  const days = new Date(Date.UTC(y, m, 0)).getUTCDate();
  const last = weekday(y, m, days);
  return days - ((last - wd + 7) % 7);
}

/** Easter Sunday (Gregorian, anonymous algorithm). */
function easter(y: number): [number, number] {
  const a = y % 19;
  const b = Math.floor(y / 100);
  const c = y % 100;
  const d = Math.floor(b / 4);
  const e = b % 4;
  const f = Math.floor((b + 8) / 25);
  const g = Math.floor((b - f + 1) / 3);
  const h = (19 * a + b - d - g + 15) % 30;
  const i = Math.floor(c / 4);
  const k = c % 4;
  const l = (32 + 2 * e + 2 * i - h - k) % 7;
  const m = Math.floor((a + 11 * h + 22 * l) / 451);
  const month = Math.floor((h + l - 7 * m + 114) / 31);
  const day = ((h + l - 7 * m + 114) % 31) + 1;
  return [month, day];
}

/** A fixed-date holiday observed on Friday when it falls on Saturday, Monday when on Sunday. */
function observed(y: number, m: number, d: number): string {
  const wd = weekday(y, m, d);
  const t = Date.UTC(y, m - 1, d) + (wd === 6 ? -1 : wd === 0 ? 1 : 0) * 86_400_000;
  const o = new Date(t);
  return iso(o.getUTCFullYear(), o.getUTCMonth() + 1, o.getUTCDate());
}

export interface YearCalendar {
  holidays: Set<string>;
  earlyCloses: Set<string>;
}

const cache = new Map<number, YearCalendar>();

export function yearCalendar(y: number): YearCalendar {
  if (y < FIRST_YEAR || y > LAST_YEAR) throw new CalendarRangeError(y);
  let cal = cache.get(y);
  if (cal) return cal;
  const holidays = new Set<string>();
  // New Year's Day: a Saturday New Year is not made up on the Friday before (NYSE rule 7.2).
  if (weekday(y, 1, 1) !== 6) holidays.add(observed(y, 1, 1));
  holidays.add(iso(y, 1, nthWeekday(y, 1, 1, 3))); // Martin Luther King Jr. Day
  holidays.add(iso(y, 2, nthWeekday(y, 2, 1, 3))); // Washington's Birthday
  const [em, ed] = easter(y);
  const gf = new Date(Date.UTC(y, em - 1, ed) - 2 * 86_400_000);
  holidays.add(iso(y, gf.getUTCMonth() + 1, gf.getUTCDate())); // Good Friday
  holidays.add(iso(y, 5, nthWeekday(y, 5, 1, -1))); // Memorial Day
  if (y >= 2022) holidays.add(observed(y, 6, 19)); // Juneteenth
  holidays.add(observed(y, 7, 4)); // Independence Day
  holidays.add(iso(y, 9, nthWeekday(y, 9, 1, 1))); // Labor Day
  const thanksgiving = nthWeekday(y, 11, 4, 4);
  holidays.add(iso(y, 11, thanksgiving));
  holidays.add(observed(y, 12, 25)); // Christmas
  for (const d of SPECIAL_CLOSURES) if (d.startsWith(`${y}-`)) holidays.add(d);

  const earlyCloses = new Set<string>();
  const weekdayOpen = (m: number, d: number) => {
    const wd = weekday(y, m, d);
    return wd !== 0 && wd !== 6 && !holidays.has(iso(y, m, d));
  };
  // The day before Independence Day, when July 4 falls Tuesday to Friday.
  if ([2, 3, 4, 5].includes(weekday(y, 7, 4)) && weekdayOpen(7, 3)) earlyCloses.add(iso(y, 7, 3));
  earlyCloses.add(iso(y, 11, thanksgiving + 1)); // the Friday after Thanksgiving
  if (weekdayOpen(12, 24)) earlyCloses.add(iso(y, 12, 24)); // Christmas Eve
  cal = { holidays, earlyCloses };
  cache.set(y, cal);
  return cal;
}

/** Sessions of US equities at event time t. */
export class EquityCalendar {
  private readonly clock = new Clock(NY);
  private dayKey = -1;
  private day: { start: number; kind: 'closed' | 'full' | 'early' } = { start: 0, kind: 'closed' };

  /** What the New York day containing t is: closed, a full day, or an early close. */
  private dayOf(t: number): { start: number; kind: 'closed' | 'full' | 'early' } {
    const off = this.clock.offset(t);
    const local = t + off;
    const key = Math.floor(local / 86_400_000);
    if (key !== this.dayKey) {
      const d = new Date(key * 86_400_000);
      const y = d.getUTCFullYear();
      const m = d.getUTCMonth() + 1;
      const dd = d.getUTCDate();
      const cal = yearCalendar(y);
      const wd = d.getUTCDay();
      const date = iso(y, m, dd);
      const kind = wd === 0 || wd === 6 || cal.holidays.has(date) ? 'closed' : cal.earlyCloses.has(date) ? 'early' : 'full';
      this.dayKey = key;
      this.day = { start: key * 86_400_000, kind };
    }
    return this.day;
  }

  session(t: number): Session {
    const day = this.dayOf(t);
    if (day.kind === 'closed') return 'closed';
    // sessions are wall-clock times in New York, so work in local milliseconds of the day
    const ms = t + this.clock.offset(t) - day.start;
    const close = day.kind === 'early' ? 13 * H : 16 * H;
    if (ms < 4 * H) return 'closed';
    if (ms < 9 * H + 30 * M) return 'pre';
    if (ms < close) return 'regular';
    if (ms < close + 4 * H) return 'post';
    return 'closed';
  }

  /**
   * The end (UTC ms) of the last of `kept` sessions on the New York date containing t: the
   * regular close (16:00, 13:00 on an early close) or the end of after-hours (4 h later); undefined
   * on a day without sessions or when every session is kept (the day ends at midnight).
   */
  sessionsEnd(t: number, kept: ReadonlySet<Session> | undefined): number | undefined {
    if (kept === undefined) return undefined;
    const day = this.dayOf(t);
    if (day.kind === 'closed') return undefined;
    const close = day.kind === 'early' ? 13 * H : 16 * H;
    const endLocal = day.start + (kept.has('post') ? close + 4 * H : kept.has('regular') ? close : 9 * H + 30 * M);
    // local to UTC: the offset at the session's end (no DST change falls inside a trading day)
    return endLocal - this.clock.offset(endLocal - this.clock.offset(day.start + 12 * H));
  }

  /** Whether the New York date containing t is a trading day. */
  tradingDay(t: number): boolean {
    return this.dayOf(t).kind !== 'closed';
  }

  isHoliday(date: string): boolean {
    return yearCalendar(Number(date.slice(0, 4))).holidays.has(date);
  }

  isEarlyClose(date: string): boolean {
    return yearCalendar(Number(date.slice(0, 4))).earlyCloses.has(date);
  }
}

/** Symbols with an exchange prefix (BINANCE:BTCUSDT) trade around the clock: no sessions. */
export function isAroundTheClock(symbol: string): boolean {
  return symbol.includes(':');
}

/** The regular session opens at 09:30 New York time: the anchor of bars aligned on the open. */
export const EQUITY_OPEN_MS = (9 * 60 + 30) * 60_000;

/** The sessions of a trading day, 04:00-20:00 (early close: 04:00-17:00). */
export const TRADING_SESSIONS: ReadonlySet<Session> = new Set(['pre', 'regular', 'post']);

/** The sessions whose trades a SESSIONS setting keeps; undefined keeps every trade. */
export function sessionsKept(setting: 'regular' | 'extended' | 'all'): ReadonlySet<Session> | undefined {
  if (setting === 'regular') return new Set(['regular']);
  return setting === 'extended' ? TRADING_SESSIONS : undefined;
}

/** Where a symbol's windows start within the day: the open for equities with ALIGN=session. */
export function windowAnchorMs(symbol: string, align: 'clock' | 'session'): number {
  return align === 'session' && !isAroundTheClock(symbol) ? EQUITY_OPEN_MS : 0;
}

/** What a bar calendar is built from: the calendar settings (a Config has every one). */
export interface BarCalendarSettings {
  /** INTERVALS, parsed */
  readonly intervals: readonly Interval[];
  /** BAR_TZ */
  readonly tz: string;
  /** SESSIONS: which US-equity sessions make bars (default all) */
  readonly sessions?: 'regular' | 'extended' | 'all';
  /** ALIGN: equity windows on the clock or anchored at the 09:30 open (default clock) */
  readonly align?: 'clock' | 'session';
  /** GRACE_MS: how long after a window's end its trades are still on time (default 0) */
  readonly graceMs?: number;
}

/** Window caches for one alignment: one per interval, and the base interval's. */
class Windows {
  readonly intervals: WindowCache[];
  readonly base: WindowCache;
  constructor(clock: Clock, intervals: readonly Interval[], baseMs: number, anchorMs: number) {
    // a daily window is the date, whatever the alignment
    this.intervals = intervals.map((iv) => new WindowCache(clock, iv.ms, iv.day ? 0 : anchorMs, iv.day));
    const day = baseIsDay(intervals);
    this.base = new WindowCache(clock, baseMs, day ? 0 : anchorMs, day);
  }
}

/**
 * The bar calendar: every rule of which bars there are, built once from the calendar settings
 * (INTERVALS, BAR_TZ, SESSIONS, ALIGN, GRACE_MS) and asked by every part that needs one — the fold
 * (aggregator, backfill, `candlewick bars`), the writer's empty-bar carry, the live chart, the
 * ingestor's backfill hold. It answers which bar windows an instant falls in, whether a trade is in
 * session, when a bar closes (the daily bar's rule, grace) and whether a trade is late.
 *
 * The Lua steps apply the same grace rule to the same numbers (addTrades' watermark, closeBars'
 * horizon); GRACE_MS reaches them as an argument.
 */
export class BarCalendar {
  readonly clock: Clock;
  readonly intervals: readonly Interval[];
  /** the base interval: the gcd of the intervals, what trades are folded into first */
  readonly baseMs: number;
  readonly graceMs: number;
  /** the daily intervals (1d): one bar per local date, rows labelled with the date */
  readonly days: ReadonlySet<string>;
  private readonly byName: ReadonlyMap<string, Interval>;
  private readonly align: 'clock' | 'session';
  /** the sessions whose trades make bars; undefined keeps every trade */
  private readonly kept: ReadonlySet<Session> | undefined;
  /** the sessions whose empty windows get a flat bar (EMPTY_BARS=carry): never the closed hours */
  private readonly flatSessions: ReadonlySet<Session>;
  private readonly equity = new EquityCalendar();
  private readonly clockWindows: Windows;
  /** equities' windows (anchored at the open with ALIGN=session) */
  private readonly equityWindows: Windows;

  constructor(settings: BarCalendarSettings, clock = new Clock(settings.tz)) {
    this.clock = clock;
    this.intervals = settings.intervals;
    this.baseMs = baseIntervalMs(settings.intervals);
    this.graceMs = settings.graceMs ?? 0;
    this.days = new Set(settings.intervals.filter((iv) => iv.day).map((iv) => iv.name));
    this.byName = new Map(settings.intervals.map((iv) => [iv.name, iv]));
    this.align = settings.align ?? 'clock';
    this.kept = sessionsKept(settings.sessions ?? 'all');
    this.flatSessions = this.kept ?? TRADING_SESSIONS;
    this.clockWindows = new Windows(clock, this.intervals, this.baseMs, 0);
    this.equityWindows = this.align === 'session' ? new Windows(clock, this.intervals, this.baseMs, EQUITY_OPEN_MS) : this.clockWindows;
  }

  /** A configured interval by its name ("5min", "1d"), or undefined. */
  interval(name: string): Interval | undefined {
    return this.byName.get(name);
  }

  private windowsOf(symbol: string): Windows {
    return isAroundTheClock(symbol) ? this.clockWindows : this.equityWindows;
  }

  /** [start, end) of the window of interval `iv` that holds t, for this symbol's alignment. */
  window(symbol: string, t: number, iv: Interval): [number, number] {
    return this.clock.window(t, iv.ms, iv.day ? 0 : windowAnchorMs(symbol, this.align), iv.day);
  }

  /** [start, end) of the base-interval window holding t (the same array while t stays in one window: do not change it). */
  baseWindow(symbol: string, t: number): readonly [number, number] {
    return this.windowsOf(symbol).base.window(t);
  }

  /**
   * Calls `each` with the bar of every interval whose window holds t, in the order of INTERVALS:
   * its interval, its id, and `end`, when it closes before grace (the daily bar's rule applied).
   */
  forEachBar(symbol: string, t: number, each: (iv: Interval, id: string, end: number) => void): void {
    const caches = this.windowsOf(symbol).intervals;
    for (let i = 0; i < this.intervals.length; i++) {
      const iv = this.intervals[i]!;
      const [start, end] = caches[i]!.window(t);
      each(iv, barId(iv.name, symbol, start), iv.day ? this.dayCloses(symbol, t, end) : end);
    }
  }

  /** The bar ids (one per interval) whose windows contain t, with when they close (before grace). */
  barsAt(symbol: string, t: number): { id: string; end: number }[] {
    const out: { id: string; end: number }[] = [];
    this.forEachBar(symbol, t, (_iv, id, end) => out.push({ id, end }));
    return out;
  }

  /**
   * The daily bar's rule: when the daily bar of the date holding t (which ends at `dayEnd`, local
   * midnight) closes. An equity's at the end of its last kept session that day (16:00, or 13:00 on
   * an early close, with SESSIONS=regular; 20:00 or 17:00 with extended), so it is written after
   * the close rather than at midnight; a 24/7 symbol's, or every session kept, at midnight.
   */
  dayCloses(symbol: string, t: number, dayEnd: number): number {
    if (!this.kept || isAroundTheClock(symbol)) return dayEnd;
    try {
      return Math.min(dayEnd, this.equity.sessionsEnd(t, this.kept) ?? dayEnd);
    } catch {
      return dayEnd; // outside the calendar's years: such trades are left out anyway
    }
  }

  /**
   * Whether the session rules keep a trade at t (24/7 symbols, SESSIONS=all: always). A year the
   * exchange calendar does not cover keeps nothing and is noted in `uncovered`.
   */
  keeps(symbol: string, t: number, uncovered?: number[]): boolean {
    if (!this.kept || isAroundTheClock(symbol)) return true;
    try {
      return this.kept.has(this.equity.session(t));
    } catch (err) {
      if (!(err instanceof CalendarRangeError)) throw err;
      uncovered?.push(new Date(t).getUTCFullYear());
      return false;
    }
  }

  /**
   * EMPTY_BARS=carry: whether the empty window of `iv` starting at `start` gets a flat bar — a 24/7
   * symbol's always, an equity's inside the kept sessions (SESSIONS=all: pre-market to
   * after-hours), a daily bar on a trading day; none outside the exchange calendar's years.
   */
  hasFlatBar(symbol: string, start: number, iv: Interval): boolean {
    if (isAroundTheClock(symbol)) return true;
    try {
      return iv.day ? this.equity.tradingDay(start + 12 * H) : this.flatSessions.has(this.equity.session(start));
    } catch {
      return false;
    }
  }

  /**
   * Whether a trade at t, ingested under watermark w, is late: the end of its base window plus
   * grace is at or before w (w = 0: ingested on time, never late).
   */
  isLate(symbol: string, t: number, w: number): boolean {
    return w !== 0 && this.windowsOf(symbol).base.window(t)[1] + this.graceMs <= w;
  }

  /**
   * The watermark a trade at t carries when ingested under watermark `wm`: `wm` where the trade
   * could be late (grace has passed t), else 0 — as addTrades writes it.
   */
  watermarkFor(t: number, wm: number): number {
    return t + this.graceMs < wm ? wm : 0;
  }

  /** The bars that close under watermark `wm`: those whose end (before grace) is at or before this. */
  closeHorizon(wm: number): number {
    return wm - this.graceMs;
  }
}
