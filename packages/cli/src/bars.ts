import {
  CsvFiles,
  ConfigError,
  isRawFrame,
  isRawTrade,
  partitionOf,
  rowCells,
  type BarRowCells,
  type Config,
  type TapeItem,
} from '@candlewick/common';
import {
  BarCalendar,
  FutureGuard,
  JSON_NUMBER,
  Preaggregator,
  conditionRules,
  conditionsText,
  mergeInto,
  parseBarId,
  readFrame,
  readTrade,
  type BarState,
  type PartialBar,
  type RawEntry,
  type TradeFields,
} from '@candlewick/core';
// the writer's carry alone: the package index would load the writer's BullMQ worker too
import { Carry } from '@candlewick/writer/dist/carry.js';
import { InProcessActivity } from './activity.js';

/**
 * `candlewick bars`: a tape folded into bars in this one process — no Redis, no other process, no
 * durability — through the same pure core the pipeline uses (validation, sessions, conditions,
 * the fold) and written through the same CSV files and empty-bar carry as the writer, so the files
 * are byte for byte those a `stack` run of the same tape with the same settings writes.
 *
 * What the pipeline decides by arrival it decides the same way here: trades in tape order, each
 * partition's watermark the highest event time appended so far, a trade late when its window plus
 * GRACE_MS had passed that watermark when it came (CLOCK=event); a bar closes once the watermark
 * passes its end plus grace, and the tape's end closes every bar. EMPTY_BARS=carry fills the empty
 * windows between a file's bars and up to each partition's last event time, as the closer's final
 * horizon does. LATE=amend is refused: which late trades fold into which correction depends on when
 * the closer ran, which a replay in one process cannot reproduce.
 */

/** Trades folded per step (bounded memory for the batch; open bars are kept until they close). */
const CHUNK = 16_384;

/** A tape's value as the replay server sends it: a JSON number when its text is one. */
const sentText = new Map<string, string | number>();
const asSent = (x: string | number): string | number => {
  if (typeof x === 'number') return x;
  let v = sentText.get(x);
  if (v === undefined) {
    v = JSON_NUMBER.test(x) ? Number(x) : x;
    if (sentText.size > 100_000) sentText.clear();
    sentText.set(x, v);
  }
  return v;
};

export interface BarsCounts {
  /** tape items read */
  items: number;
  /** valid trades folded (late ones included) */
  trades: number;
  rejected: number;
  /** of the rejected: ahead of the clock or the feed (FUTURE_LIMIT_MS) */
  future: number;
  /** trades for symbols not subscribed, dropped */
  foreign: number;
  badFrames: number;
  late: number;
  /** outside SESSIONS */
  filtered: number;
  /** CONDITIONS let them set nothing */
  excluded: number;
  /** rows written per interval (flat rows of EMPTY_BARS=carry included) */
  written: Record<string, number>;
  /** rows already in the files (a second run over the same folder) */
  present: number;
  /** activity bars that had not reached their threshold when the tape ended (not written) */
  forming: number;
  /** activity bar files left as they were: they did not begin with these bars */
  problems: string[];
}

export interface BarsProgress {
  start(total: number): void;
  update(done: number): void;
  stop(): void;
}

const NO_PROGRESS: BarsProgress = { start: () => undefined, update: () => undefined, stop: () => undefined };

export class InProcessBars {
  readonly counts: BarsCounts = {
    items: 0,
    trades: 0,
    rejected: 0,
    future: 0,
    foreign: 0,
    badFrames: 0,
    late: 0,
    filtered: 0,
    excluded: 0,
    written: {},
    present: 0,
    forming: 0,
    problems: [],
  };
  private readonly calendar: BarCalendar;
  private readonly pre: Preaggregator;
  private readonly files: CsvFiles;
  private readonly carry: Carry | undefined;
  private readonly cfg: Config;
  /** per partition: open bars, watermark, trades waiting to be folded */
  private readonly open: Map<string, PartialBar>[] = [];
  private readonly wm: number[] = [];
  private readonly pending: RawEntry[][] = [];
  private waiting = 0;
  private seq = 0;
  private readonly wanted: ReadonlySet<string> | undefined;
  /** the subscription: SYMBOLS, or the tape's symbols */
  private readonly subscribed: ReadonlySet<string>;
  private readonly future: FutureGuard<TradeFields>;
  private readonly activity: InProcessActivity | undefined;
  /** FEED=binance: the tape's aggressor sides reach the stream, and so activity bars */
  private readonly sides: boolean;

  /**
   * @param onRow each row as written to its file (or found there already, a second run), for the
   *   table in PostgreSQL (DATABASE_URL)
   */
  constructor(
    cfg: Config,
    tapeSymbolsOf: readonly string[],
    private readonly onRow?: (interval: string, symbol: string, start: number, cells: BarRowCells) => void,
  ) {
    if (cfg.late === 'amend')
      throw new ConfigError([
        'LATE=amend: bars cannot make corrections (which late trades fold into which correction depends on when the closer ran); use LATE=drop, or replay the tape through `candlewick stack`',
      ]);
    if (cfg.clock !== 'event')
      throw new ConfigError(['CLOCK=wall: bars folds by event time, as a replay does; leave CLOCK unset or set it to event']);
    this.wanted = cfg.symbols.length ? new Set(cfg.symbols) : undefined;
    // as `stack` does: without SYMBOLS, the tape's symbols are the subscription (and what carry fills)
    this.cfg = cfg.symbols.length ? cfg : Object.freeze({ ...cfg, symbols: tapeSymbolsOf });
    this.subscribed = new Set(this.cfg.symbols);
    this.future = new FutureGuard(cfg.futureLimitMs, true);
    this.calendar = new BarCalendar(cfg);
    this.pre = new Preaggregator(this.calendar, { conditions: conditionRules(cfg) });
    this.files = new CsvFiles(cfg.dataDir, this.calendar.clock, cfg.csvExtraColumns, undefined, this.calendar.days, true);
    this.carry = cfg.emptyBars === 'carry' ? new Carry(this.cfg, this.calendar) : undefined;
    this.sides = cfg.feed === 'binance';
    this.activity = cfg.activity.length
      ? new InProcessActivity(cfg.activity, this.calendar, conditionRules(cfg), cfg.dataDir, cfg.partitions)
      : undefined;
    for (let p = 0; p < cfg.partitions; p++) {
      this.open.push(new Map());
      this.wm.push(0);
      this.pending.push([]);
    }
  }

  /** Folds a whole tape and writes its bars; the tape's end closes every bar. */
  run(items: readonly TapeItem[], progress: BarsProgress = NO_PROGRESS): BarsCounts {
    progress.start(items.length);
    for (let i = 0; i < items.length; i++) {
      this.item(items[i]!);
      if (this.waiting >= CHUNK) {
        this.step(false);
        progress.update(i + 1);
      }
    }
    this.future.end(this.refuse);
    this.step(true);
    if (this.activity) {
      const { present, problems } = this.activity.write(this.counts.written);
      this.counts.present += present;
      this.counts.problems.push(...problems);
      this.counts.forming = this.activity.forming();
    }
    progress.update(items.length);
    progress.stop();
    return this.counts;
  }

  private item(it: TapeItem): void {
    this.counts.items++;
    if (isRawFrame(it)) return this.frame(it.raw);
    if (isRawTrade(it)) {
      if (it.s !== undefined && this.wanted && !this.wanted.has(it.s)) return;
      return this.trade(JSON.parse(it.rawTrade));
    }
    if (this.wanted && !this.wanted.has(it.s)) return;
    // as the replay server sends it (validateTrade keeps nothing of the object it reads)
    const raw = this.scratch;
    raw.s = it.s;
    raw.p = asSent(it.p);
    raw.v = asSent(it.v);
    raw.t = it.t;
    raw.c = it.c;
    // the aggressor side, where the feed the stack would replay the tape through gives one
    raw.a = this.sides ? it.a : undefined;
    this.trade(raw);
  }

  private readonly scratch: { s: string; p: string | number; v: string | number; t: number; c: readonly string[]; a?: string } = {
    s: '',
    p: 0,
    v: 0,
    t: 0,
    c: [],
  };

  /** A recorded frame, read as the ingestor reads one. */
  private frame(text: string): void {
    const f = readFrame(text);
    if (f.kind === 'trade') for (const raw of f.data) this.trade(raw);
    else if (f.kind !== 'ping' && f.kind !== 'error') this.counts.badFrames++;
  }

  private trade(raw: unknown): void {
    const tr = this.read;
    if (readTrade(raw, 0, tr) !== undefined) {
      this.counts.rejected++;
      return;
    }
    // as the ingestor: only subscribed symbols, and no trade from the future (core/future.ts)
    if (!this.subscribed.has(tr.s)) {
      this.counts.foreign++;
      return;
    }
    this.future.offer(tr, this.keep, this.accept, this.refuse);
  }

  private readonly keep = (tr: TradeFields): TradeFields => ({ ...tr });
  private readonly refuse = (): void => {
    this.counts.rejected++;
    this.counts.future++;
  };
  private readonly accept = (tr: TradeFields): void => {
    const p = this.cfg.partitions === 1 ? 0 : partitionOf(tr.s, this.cfg.partitions);
    const wm = this.wm[p]!;
    // the watermark before this trade, written only where it could be late (addTrades)
    const w = this.calendar.watermarkFor(tr.t, wm);
    if (tr.t > wm) this.wm[p] = tr.t;
    // its place in the tape orders trades of the same millisecond, as its stream position does
    const id = `1-${this.seq++}`;
    // entries are taken from a pool: the fold keeps nothing of them past a step
    const pending = this.pending[p]!;
    let e = this.pool[this.waiting];
    if (e === undefined) this.pool.push((e = { id, entry: id, s: '', p: '', v: 0, t: 0, w: 0, c: '', rx: 0 }));
    e.id = id;
    e.entry = id;
    e.s = tr.s;
    e.p = tr.p;
    e.v = tr.v;
    e.t = tr.t;
    e.w = w;
    e.c = conditionsText(tr.c);
    e.a = tr.a;
    pending.push(e);
    this.counts.trades++;
    this.waiting++;
  };

  private readonly read: TradeFields = { s: '', p: '', v: 0, t: 0, c: [], rx: 0 };
  private readonly pool: RawEntry[] = [];

  /** Folds what waits, then closes the bars each partition's watermark has passed (all at the end). */
  private step(end: boolean): void {
    for (let p = 0; p < this.pending.length; p++) {
      const entries = this.pending[p]!;
      if (entries.length) {
        const activity = this.activity;
        if (activity)
          for (const e of entries)
            if (this.calendar.keeps(e.s, e.t) && !this.calendar.isLate(e.s, e.t, e.w)) activity.offer(p, e, Number(e.id.slice(2)));
        const r = this.pre.run(entries);
        this.counts.late += r.late.length;
        this.counts.filtered += r.filtered;
        this.counts.excluded += r.excluded;
        const open = this.open[p]!;
        for (const [id, part] of r.bars) {
          const cur = open.get(id);
          if (cur === undefined) open.set(id, part);
          else mergeInto(cur.state, part.state);
        }
        entries.length = 0;
      }
      this.close(p, end ? Infinity : this.calendar.closeHorizon(this.wm[p]!));
      this.activity?.release(p, end ? Infinity : this.calendar.closeHorizon(this.wm[p]!));
      if (end && this.carry) {
        // the closer's last horizon: every window ending by the partition's last event time
        for (const symbol of this.carry.symbolsOf(p))
          for (const iv of this.cfg.intervals)
            this.carry.fill(this.files, iv.name, symbol, undefined, this.wm[p]!, (r) => this.wrote(iv.name, symbol, r));
      }
    }
    this.files.flush();
    this.waiting = 0;
  }

  /** Writes the bars of partition p ending by `horizon`, in window-end order (as closeBars hands them over). */
  private close(p: number, horizon: number): void {
    const open = this.open[p]!;
    const due: [string, PartialBar][] = [];
    for (const e of open) if (e[1].end <= horizon) due.push(e);
    if (due.length === 0) return;
    due.sort((a, b) => a[1].end - b[1].end || (a[0] < b[0] ? -1 : 1));
    for (const [id, part] of due) {
      open.delete(id);
      const { interval, symbol, start } = parseBarId(id);
      this.carry?.fill(this.files, interval, symbol, start, undefined, (r) => this.wrote(interval, symbol, r));
      const outcome = this.files.append(interval, symbol, start, part.state);
      if (outcome === 'written') this.wrote(interval, symbol, { start, state: part.state });
      else {
        this.counts.present++;
        this.onRow?.(interval, symbol, start, rowCells(this.calendar.clock, start, part.state, this.calendar.days.has(interval)));
      }
    }
  }

  private wrote(interval: string, symbol: string, row: { start: number; state: BarState }): void {
    this.counts.written[interval] = (this.counts.written[interval] ?? 0) + 1;
    this.onRow?.(interval, symbol, row.start, rowCells(this.calendar.clock, row.start, row.state, this.calendar.days.has(interval)));
  }
}
