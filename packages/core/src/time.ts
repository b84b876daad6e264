import { DateTime, IANAZone } from 'luxon';

/** A bar interval: its name as configured ("5min", "1h", "1d") and its nominal length in ms. */
export interface Interval {
  readonly name: string;
  readonly ms: number;
  /**
   * `1d`: one window per local date in BAR_TZ, 23 or 25 hours long on the DST days and never
   * split (unlike `24h`, a fixed length that is cut where the offset changes)
   */
  readonly day?: boolean;
}

export const MINUTE = 60_000;
export const HOUR = 3_600_000;
const DAY = 86_400_000;
// Every UTC offset change in the tz database since 1970 happens on a 15-minute boundary, so the
// offset is constant inside each 15-minute slot and can be cached per slot.
const SLOT = 15 * MINUTE;

/** Parses "1min", "15min", "1h", "4h", "1d"; anything else is an error naming the rule. */
export function parseInterval(text: string): Interval {
  const d = /^\s*(\d+)\s*d\s*$/i.exec(text);
  if (d) {
    if (Number(d[1]) !== 1) throw new Error(`invalid interval "${text}": a daily bar is 1d (one per date in BAR_TZ)`);
    return { name: '1d', ms: DAY, day: true };
  }
  const m = /^\s*(\d+)\s*(min|m|h)\s*$/i.exec(text);
  const n = m ? Number(m[1]) : NaN;
  if (!m || !Number.isSafeInteger(n) || n <= 0) {
    throw new Error(`invalid interval "${text}": use a whole number of minutes or hours, or 1d, e.g. 1min, 5min, 1h, 1d`);
  }
  const unit = m[2]!.toLowerCase() === 'h' ? HOUR : MINUTE;
  const ms = n * unit;
  if (ms > DAY) throw new Error(`invalid interval "${text}": at most 24h`);
  return { name: unit === HOUR ? `${n}h` : `${n}min`, ms };
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** The base interval: every configured interval is a whole number of it. */
export function baseIntervalMs(intervals: readonly Interval[]): number {
  return intervals.reduce((g, i) => gcd(g, i.ms), 0);
}

/** With only daily bars configured, the base windows are dates too. */
export function baseIsDay(intervals: readonly Interval[]): boolean {
  return intervals.length > 0 && intervals.every((i) => i.day === true);
}

/**
 * Window arithmetic in one time zone. A window is floored in local wall time from local midnight;
 * its identity is the UTC instant at which it starts. Where the UTC offset changes inside a window
 * (the DST nights), the window is split at the change, so the repeated hour in November is two bars
 * (01:00-04:00 and 01:00-05:00 in New York) and every instant belongs to exactly one window.
 */
export class Clock {
  readonly zone: IANAZone;
  private readonly offsets = new Map<number, number>();

  constructor(readonly tz: string) {
    const zone = IANAZone.create(tz);
    if (!zone.isValid) throw new Error(`invalid time zone "${tz}": use an IANA name such as America/New_York`);
    this.zone = zone;
  }

  /** UTC offset in ms at instant t. */
  offset(t: number): number {
    const slot = Math.floor(t / SLOT);
    let off = this.offsets.get(slot);
    if (off === undefined) {
      if (this.offsets.size > 50_000) this.offsets.clear();
      off = this.zone.offset(slot * SLOT) * MINUTE;
      this.offsets.set(slot, off);
    }
    return off;
  }

  /** First instant in (lo, hi] whose offset differs from offset(lo); transitions sit on slot boundaries. */
  private transitionAfter(lo: number, hi: number): number {
    const base = this.offset(lo);
    let a = Math.floor(lo / SLOT) + 1;
    let b = Math.ceil(hi / SLOT);
    if (this.offset(b * SLOT) === base) return hi; // no change up to hi
    while (a < b) {
      const mid = (a + b) >> 1;
      if (this.offset(mid * SLOT) === base) a = mid + 1;
      else b = mid;
    }
    return a * SLOT;
  }

  /**
   * [start, end) in UTC ms of the window of length `ms` that contains instant t. Windows start at
   * local midnight plus `anchorMs` (e.g. 09:30 for bars aligned on the equity open) and never
   * cross local midnight: the first and last windows of a day are cut there.
   */
  window(t: number, ms: number, anchorMs = 0, day = false): [number, number] {
    if (day) return this.dayWindow(t);
    const off = this.offset(t);
    const local = t + off;
    const dayStart = Math.floor(local / DAY) * DAY;
    const a = anchorMs % ms;
    const sl = Math.max(dayStart, dayStart + a + Math.floor((local - dayStart - a) / ms) * ms);
    const el = Math.min(dayStart + a + (Math.floor((local - dayStart - a) / ms) + 1) * ms, dayStart + DAY);
    let start = sl - off;
    if (start > t || this.offset(start) !== off) {
      // The window began under another offset: it starts for us where our offset took effect.
      start = this.transitionAfter(Math.min(start, t) - 1, t);
      if (this.offset(start) !== off) start = t; // defensive: never after t
    }
    let end = el - off;
    if (end <= t || this.offset(end - 1) !== off) {
      end = Math.max(t + 1, this.transitionAfter(t, Math.max(end, t + 1)));
    }
    return [start, end];
  }

  start(t: number, ms: number): number {
    return this.window(t, ms)[0];
  }

  private lastDay: [number, number] = [1, 0];

  /** [start, end) of the local date containing t: midnight to midnight, 23, 24 or 25 hours. */
  dayWindow(t: number): [number, number] {
    if (t >= this.lastDay[0] && t < this.lastDay[1]) return this.lastDay;
    const d = DateTime.fromMillis(t, { zone: this.zone }).startOf('day');
    this.lastDay = [d.toMillis(), d.plus({ days: 1 }).startOf('day').toMillis()];
    return this.lastDay;
  }

  /** The local date of instant t, e.g. 2019-10-11: the label of a daily bar. */
  date(t: number): string {
    return DateTime.fromMillis(t, { zone: this.zone }).toISODate()!;
  }

  /** A row's label as written: the date for a daily bar, else the local start time with its offset. */
  labelOf(t: number, day: boolean): string {
    return day ? this.date(t) : this.label(t);
  }

  /** The start (UTC ms) of a label written by labelOf, read back in this zone. */
  parseLabel(label: string): number {
    const t = /^\d{4}-\d{2}-\d{2}$/.test(label) ? DateTime.fromISO(label, { zone: this.zone }) : DateTime.fromISO(label, { setZone: true });
    return t.isValid ? t.toMillis() : NaN;
  }

  /**
   * ISO-8601 local time with its offset, e.g. 2019-10-10T20:00:00-04:00. Kept for the instants
   * last asked: at a boundary every symbol's bar has the same start, and luxon's formatting was
   * the writer's largest cost per bar after its file calls (a profile at 8,000 symbols).
   */
  label(t: number): string {
    let text = this.labels.get(t);
    if (text === undefined) {
      if (this.labels.size >= 1024) this.labels.clear();
      text = DateTime.fromMillis(t, { zone: this.zone }).toISO({ suppressMilliseconds: true })!;
      this.labels.set(t, text);
    }
    return text;
  }

  private readonly labels = new Map<number, string>();
}

/** A small per-interval cache: consecutive trades mostly fall into the window of the one before. */
export class WindowCache {
  private lo = 1;
  private hi = 0;
  constructor(
    private readonly clock: Clock,
    readonly ms: number,
    private readonly anchorMs = 0,
    private readonly day = false,
  ) {}
  private last: readonly [number, number] = [0, 0];
  /** [start, end) of the window holding t (the same array while t stays in one window: do not change it) */
  window(t: number): readonly [number, number] {
    if (t >= this.lo && t < this.hi) return this.last;
    const w = this.clock.window(t, this.ms, this.anchorMs, this.day);
    this.lo = w[0];
    this.hi = w[1];
    this.last = w;
    return w;
  }
}

/** "90s", "30m", "2h", "1d" or plain milliseconds. */
export function parseDurationMs(text: string): number {
  const m = /^\s*(\d+)\s*(ms|s|m|min|h|d)?\s*$/i.exec(text);
  if (!m) throw new Error(`invalid duration "${text}": use e.g. 500ms, 30s, 15m, 2h, 1d`);
  const n = Number(m[1]);
  const unit = (m[2] ?? 'ms').toLowerCase();
  const f = { ms: 1, s: 1000, m: MINUTE, min: MINUTE, h: HOUR, d: DAY }[unit]!;
  return n * f;
}
