import {
  ALL,
  ActivityCutter,
  BarCalendar,
  VOLUME,
  conditionRules,
  encodeBarState,
  entrySides,
  idLess,
  isAroundTheClock,
  rawEntries,
  type ActivityBar,
  type ActivityTrade,
  type ConditionRules,
  type RawEntry,
} from '@candlewick/core';
import {
  commitActivity,
  crashPoint,
  encodeActivityOutbox,
  type Config,
  type Keys,
  type Logger,
  type RedisClient,
} from '@candlewick/common';

/** Raw entries read per XRANGE. */
const READ = 500;

/** A trade a cut read: its eligibility, its side and its base window's end worked out once. */
interface KeptTrade {
  e: RawEntry;
  elig: number;
  side: string | undefined;
  end: number;
}

/** A raw entry's trades left for a later cut. */
interface KeptEntry {
  id: string;
  trades: KeptTrade[];
}

const inEventOrder = (a: RawEntry, b: RawEntry): number => a.t - b.t || (a.id === b.id ? 0 : idLess(a.id, b.id) ? -1 : 1);

/**
 * Activity bars in the pipeline (docs/activity-bars.md): after each close of partition p through
 * horizon H, every trade of p whose base window ends by H is final — no trade before it in event
 * order can still come on time — so the closer cuts those (not cut before) in event order, straight
 * from the raw stream, with the rules `candlewick bars` uses (ActivityCutter).
 *
 * A cut is one step, exactly once: what it read from (`cursor`, the first raw entry that may still
 * hold a trade not cut) and through which horizon (`h`) are checked and moved, each symbol's state
 * saved and the bars closed put in the outbox, in one script (commitActivity) — a closer killed
 * before it leaves everything as it was, and two closers racing commit one cut. The writer appends a
 * bar only after its file's last bar number, so an outbox entry handed over twice is written once.
 */
export class ActivityStep {
  private readonly calendar: BarCalendar;
  private readonly conditions: ConditionRules | undefined;
  private trimmedSaid = false;
  private readonly cutter: ActivityCutter;
  /**
   * Per partition, what the last cut this closer committed left for the next: the cursor it set,
   * the last entry it read, and the trades left in the entries from the cursor on — read again only
   * when another closer cut between
   */
  private readonly kept = new Map<number, { cursor: string; last: string; entries: KeptEntry[] }>();

  constructor(
    private readonly redis: RedisClient,
    cfg: Config,
    private readonly keys: Keys,
    private readonly log: Logger,
  ) {
    this.calendar = new BarCalendar(cfg);
    this.conditions = conditionRules(cfg);
    this.cutter = new ActivityCutter(cfg.activity);
  }

  /** Cuts partition p's trades through horizon H (Infinity: all, at the end of a replay); how many bars closed. */
  async cut(p: number, through: number): Promise<number> {
    const key = this.keys.activity(p);
    const [cursorRead, hRead] = await this.redis.hmget(key, 'cursor', 'h');
    const from = { cursor: cursorRead ?? '', h: hRead ?? '' };
    const done = from.h === '' ? -Infinity : Number(from.h);
    if (!(through > done)) return 0;
    const stream = this.keys.trades(p);
    await this.checkTrimmed(stream, from.cursor);

    // what this cut takes: the trades, their eligibility and side (arrays side by side: a cut may take hundreds of thousands)
    const taken: RawEntry[] = [];
    const eligOf: number[] = [];
    const sideOf: (string | undefined)[] = [];
    let pendingFrom: string | undefined;
    let last: string | undefined;
    /** the entries from the first with a trade left for a later cut, with those trades (kept for it) */
    const left: KeptEntry[] = [];
    const consider = (id: string, trades: readonly KeptTrade[]) => {
      last = id;
      let rest: KeptTrade[] | undefined;
      for (const x of trades) {
        if (x.end <= done) continue; // cut before
        if (x.end <= through) {
          taken.push(x.e);
          eligOf.push(x.elig);
          sideOf.push(x.side);
        } else (rest ??= []).push(x);
      }
      if (rest) pendingFrom ??= id;
      if (pendingFrom !== undefined && rest) left.push({ id, trades: rest });
    };
    // the entries the last cut read and left trades in, decoded then (when no other cut came between)
    const kept = this.kept.get(p);
    let start = from.cursor === '' ? '-' : from.cursor;
    if (kept && kept.cursor === from.cursor && from.cursor !== '') {
      for (const k of kept.entries) consider(k.id, k.trades);
      last = kept.last;
      start = `(${kept.last}`;
    }
    for (;;) {
      const rows = (await this.redis.xrange(stream, start, '+', 'COUNT', READ)) as [string, string[]][];
      for (const [id, fields] of rows) {
        const sides = entrySides(fields);
        const trades = rawEntries(id, fields);
        const worth: KeptTrade[] = [];
        for (let k = 0; k < trades.length; k++) {
          const e = trades[k]!;
          if (!this.calendar.keeps(e.s, e.t) || this.calendar.isLate(e.s, e.t, e.w)) continue;
          const elig = this.conditions === undefined || isAroundTheClock(e.s) ? ALL : this.conditions.eligibility(e.c);
          if ((elig & VOLUME) === 0) continue;
          worth.push({ e, elig, side: sides?.[k], end: this.calendar.baseWindow(e.s, e.t)[1] });
        }
        consider(id, worth);
      }
      if (rows.length < READ) break;
      start = `(${last}`;
    }
    const cursor = pendingFrom ?? (last !== undefined ? `(${last}` : from.cursor);

    // each symbol's state as the last cut left it, then its trades in event order
    const order = Array.from(taken.keys()).sort((a, b) => inEventOrder(taken[a]!, taken[b]!));
    // (one cutter for every cut: its caches stay warm; each symbol cut here gets its state as committed)
    const cutter = this.cutter;
    cutter.takeTouched();
    const symbols = [...new Set(taken.map((e) => e.s))];
    for (let i = 0; i < symbols.length; i += 1000) {
      const chunk = symbols.slice(i, i + 1000);
      const states = await this.redis.hmget(key, ...chunk.map((s) => `s:${s}`));
      chunk.forEach((s, k) => {
        if (states[k]) cutter.load(s, states[k]!);
        else cutter.forget(s);
      });
    }
    const bars: ActivityBar[] = [];
    const emit = (b: ActivityBar) => bars.push(b);
    const tr: ActivityTrade = { s: '', t: 0, p: '', v: 0, elig: 0, side: undefined };
    for (const i of order) {
      const e = taken[i]!;
      tr.s = e.s;
      tr.t = e.t;
      tr.p = e.p;
      tr.v = e.v;
      tr.elig = eligOf[i]!;
      tr.side = sideOf[i];
      cutter.push(tr, emit);
    }
    const states = new Map<string, string>();
    for (const s of cutter.takeTouched()) states.set(s, cutter.save(s)!);
    // the bars in outbox entries (and so writer jobs) of up to 1,000, as the time bars'
    const outbox: string[] = [];
    for (let i = 0; i < bars.length; i += 1000)
      outbox.push(
        encodeActivityOutbox(
          bars.slice(i, i + 1000).map((b) => ({
            interval: b.interval,
            symbol: b.symbol,
            seq: b.seq,
            start: b.start,
            end: b.end,
            state: encodeBarState(b.state),
          })),
        ),
      );
    crashPoint('activity:cut'); // cut, not committed: the next cut does it again
    // the end of a replay cuts everything: through the last window cut, so a later run goes on from there
    let upTo = through;
    if (upTo === Infinity) {
      upTo = done;
      for (const e of taken) upTo = Math.max(upTo, this.calendar.baseWindow(e.s, e.t)[1]);
    }
    const h = upTo === -Infinity ? '' : String(upTo);
    if (!(await commitActivity(this.redis, this.keys, p, { from, cursor, h, bars: outbox, states }))) {
      this.kept.delete(p);
      this.log.debug({ p }, 'activity: another closer cut first');
      return 0;
    }
    if (last !== undefined) this.kept.set(p, { cursor, last, entries: left });
    if (bars.length) this.log.debug({ p, bars: bars.length, trades: taken.length }, 'activity bars cut');
    return bars.length;
  }

  /** The raw stream trimmed past the cursor (TRADES_RETENTION shorter than the closer was away): said once, loudly. */
  private async checkTrimmed(stream: string, cursor: string): Promise<void> {
    // (a cursor past an entry, `(id`: that entry was cut whole, its trim loses nothing)
    if (cursor === '' || cursor.startsWith('(') || this.trimmedSaid) return;
    const first = (await this.redis.xrange(stream, '-', '+', 'COUNT', 1)) as [string, string[]][];
    const at = cursor;
    if (first.length && idLess(at, first[0]![0])) {
      this.trimmedSaid = true;
      this.log.error(
        { stream, cursor: at, first: first[0]![0] },
        `activity bars: ${stream} was trimmed past where their cut had got to (${at}; it now begins at ${first[0]![0]}): the trades in between are in no activity bar. TRADES_RETENTION must outlast a closer's absence`,
      );
    }
  }
}
