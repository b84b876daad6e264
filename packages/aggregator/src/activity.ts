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
  type ActivityBar,
  type ActivityTrade,
  type ConditionRules,
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

/**
 * A trade a cut read, as the cutter takes it, with its base window's end and its stream position
 * (entry id's ms, and its seq plus the trade's place in the entry) worked out once.
 */
interface CutTrade extends ActivityTrade {
  end: number;
  ms: number;
  seq: number;
}

/** A raw entry's trades left for a later cut. */
interface KeptEntry {
  id: string;
  trades: CutTrade[];
}

/** (t, stream position): the order time bars take open and close from. */
const inEventOrder = (a: CutTrade, b: CutTrade): number => a.t - b.t || a.ms - b.ms || a.seq - b.seq;

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

    // what this cut takes
    const taken: CutTrade[] = [];
    let pendingFrom: string | undefined;
    let last: string | undefined;
    /** the entries from the first with a trade left for a later cut, with those trades (kept for it) */
    const left: KeptEntry[] = [];
    const consider = (id: string, trades: readonly CutTrade[]) => {
      last = id;
      let rest: CutTrade[] | undefined;
      for (const x of trades) {
        if (x.end <= done) continue; // cut before
        if (x.end <= through) taken.push(x);
        else (rest ??= []).push(x);
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
      for (const [id, fields] of rows) consider(id, this.decode(id, fields));
      if (rows.length < READ) break;
      start = `(${last}`;
    }
    const cursor = pendingFrom ?? (last !== undefined ? `(${last}` : from.cursor);

    // each symbol's state as the last cut left it, then its trades in event order
    taken.sort(inEventOrder);
    // (one cutter for every cut: its caches stay warm; each symbol cut here gets its state as committed)
    const cutter = this.cutter;
    cutter.takeTouched();
    const symbols = [...new Set(taken.map((x) => x.s))];
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
    for (const x of taken) cutter.push(x, emit);
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
      for (const x of taken) upTo = Math.max(upTo, x.end);
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

  /**
   * The trades of a raw entry that activity bars take (kept by SESSIONS, on time, let by CONDITIONS
   * set something), read from its lines by position as rawEntries does, without what the cut does not
   * need (receive times, a stream id per trade).
   */
  private decode(id: string, fields: readonly string[]): CutTrade[] {
    const out: CutTrade[] = [];
    let d = '';
    for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === 'd') d = fields[i + 1]!;
    if (d === '') return out;
    const sides = entrySides(fields);
    const dash = id.indexOf('-');
    const ms = +id.slice(0, dash);
    const seq0 = +id.slice(dash + 1);
    const n = d.length;
    const cal = this.calendar;
    for (let k = 0, a = 0; ; k++) {
      let nl = d.indexOf('\n', a);
      if (nl < 0) nl = n;
      const t1 = d.indexOf('\t', a);
      const t2 = d.indexOf('\t', t1 + 1);
      const t3 = d.indexOf('\t', t2 + 1);
      const t4 = d.indexOf('\t', t3 + 1);
      const t5 = d.indexOf('\t', t4 + 1);
      let t6 = d.indexOf('\t', t5 + 1);
      if (t6 > nl) t6 = -1;
      const s = d.slice(a, t1);
      const t = +d.slice(t3 + 1, t4);
      const w = t6 < 0 ? 0 : +d.slice(t6 + 1, nl);
      if (cal.keeps(s, t) && !cal.isLate(s, t, w)) {
        const elig = this.conditions === undefined || isAroundTheClock(s) ? ALL : this.conditions.eligibility(d.slice(t4 + 1, t5));
        if (elig & VOLUME)
          out.push({
            s,
            t,
            p: d.slice(t1 + 1, t2),
            v: +d.slice(t2 + 1, t3),
            elig,
            side: sides?.[k],
            end: cal.baseWindow(s, t)[1],
            ms,
            seq: seq0 + k,
          });
      }
      if (nl >= n) break;
      a = nl + 1;
    }
    return out;
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
