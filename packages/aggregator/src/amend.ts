import {
  BAR_FLAGS,
  BarCalendar,
  Preaggregator,
  alpacaAmend,
  applyAmends,
  conditionRules,
  decodeBarState,
  encodeBarState,
  idLess,
  mergeInto,
  parseBarId,
  rawEntries,
  type BarState,
  type IdentifiedTrade,
  type RawEntry,
  type TradeAmend,
} from '@candlewick/core';
import {
  applyFix,
  crashPoint,
  field,
  noteAmends,
  partitionOf,
  redisLink,
  type AmendNote,
  type Config,
  type Keys,
  type Logger,
  type RedisClient,
} from '@candlewick/common';

/** feed:corrections entries read per XRANGE, and raw entries per XRANGE of a recompute. */
const READ = 500;
/** a symbol's raw trades are kept in the closer this long after a settle last wanted them */
const RAW_CACHE_IDLE_MS = 10 * 60_000;
/**
 * An amend is taken this long after it was kept (by Redis's clock): the trade it names came before
 * it from the feed and is on the raw stream by then (the ingestor appends its batches within
 * milliseconds; an amend is kept at once).
 */
export const AMEND_SETTLE_MS = 1000;
/** source bits of BAR_FLAGS other than the live feed's: a bar with them holds trades the raw stream has not */
const BACKFILLED = ~(BAR_FLAGS.LIVE | BAR_FLAGS.INCOMPLETE | BAR_FLAGS.APPROXIMATE) & 0xffff;

/**
 * How long the raw and late streams are kept: TRADES_RETENTION, and with a feed that amends trades
 * (FEED=alpaca) at least as long as a bar's trades can still be needed — the longest interval, then
 * LATE_AMEND_WINDOW, with GRACE_MS and FUTURE_LIMIT_MS (a trade may come that far ahead) besides:
 * an amend recomputes its bars from their trades.
 */
export function rawRetentionMs(cfg: Config): number {
  if (cfg.feed !== 'alpaca' || cfg.tradesRetentionMs === 0) return cfg.tradesRetentionMs;
  const longest = Math.max(...cfg.intervals.map((iv) => (iv.day ? 25 * 3_600_000 : iv.ms)));
  return Math.max(cfg.tradesRetentionMs, longest + cfg.lateAmendWindowMs + cfg.graceMs + cfg.futureLimitMs);
}

/** Whether a raw entry's lines (`d`) hold one of `symbol`'s: a line starts with the symbol and a tab. */
function hasLineOf(d: string, symbol: string): boolean {
  return d.startsWith(`${symbol}\t`) || d.includes(`\n${symbol}\t`);
}

/** A bar waiting in fix-todo:{p}, as read. */
interface Todo {
  id: string;
  value: string;
  symbol: string;
  start: number;
  end: number;
  /** held at its close (its state as it closed), else closed before: a revision */
  held?: BarState;
}

/**
 * The feed's corrections and cancels applied to bars (docs/feeds.md, "Corrections and cancels"), in
 * the closer, per partition. `note` reads feed:corrections past where this partition had got to
 * and, in one step (noteAmends), keeps each symbol's amends and marks the bars they are in: a bar
 * not closed yet is held at its close (closeBars puts it in fix-todo instead of the outbox), a closed
 * one waits there for a revision. `settle` recomputes each waiting bar from its trades on the raw
 * stream (and, LATE=amend, its late trades), the amends applied with the fold the aggregators use,
 * and writes it with applyFix — as it closes, or as its next revision — exactly once.
 */
export class AmendStep {
  private readonly calendar: BarCalendar;
  private readonly onTime: Preaggregator;
  private readonly late: Preaggregator | undefined;
  private readonly windowMs: number;
  private unreadableSaid = false;
  private corrTrimmedSaid = false;
  private notFoundSaid = 0;

  constructor(
    private readonly redis: RedisClient,
    private readonly cfg: Config,
    private readonly keys: Keys,
    private readonly log: Logger,
  ) {
    this.calendar = new BarCalendar(cfg);
    const conditions = conditionRules(cfg, cfg.feed === 'massive' || cfg.feed === 'alpaca' ? 'other' : 'finnhub');
    const flags = cfg.backfill ? BAR_FLAGS.LIVE : 0;
    this.onTime = new Preaggregator(this.calendar, { conditions, flags });
    this.late =
      cfg.late === 'amend' ? new Preaggregator(this.calendar, { amendWindowMs: cfg.lateAmendWindowMs, conditions, flags }) : undefined;
    this.windowMs = cfg.lateAmendWindowMs;
    this.hasDay = cfg.intervals.some((iv) => iv.day === true);
  }

  private readonly hasDay: boolean;

  /** Notes the amends of partition p kept since the last note (all of them when `flush`); how many bars wait for a revision. */
  async note(p: number, flush: boolean): Promise<number> {
    const fix = this.keys.fix(p);
    const from = (await this.redis.hget(fix, 'cursor')) ?? '';
    const stream = this.keys.corrections();
    const ripe = flush ? Infinity : redisLink.redisNowMs() - AMEND_SETTLE_MS;
    const bySymbol = new Map<string, { amends: TradeAmend[]; last: number; bars: Map<string, number> }>();
    if (from !== '' && !this.corrTrimmedSaid && ((await this.redis.xrange(stream, from, from)) as unknown[]).length === 0) {
      // the entry last noted was trimmed (TRADES_RETENTION): those after it may be gone too
      this.corrTrimmedSaid = true;
      this.log.error(
        { stream, cursor: from },
        "feed:corrections was trimmed past where the closer had read it: the feed's corrections and cancels kept in between may be gone unapplied. TRADES_RETENTION must outlast a closer's absence (said once)",
      );
    }
    let cursor = from;
    let start = from === '' ? '-' : `(${from}`;
    /** the highest watermark an amend read came under, and the bars past LATE_AMEND_WINDOW at theirs */
    let maxW = 0;
    let tooOld = 0;
    read: for (;;) {
      const rows = (await this.redis.xrange(stream, start, '+', 'COUNT', READ)) as [string, string[]][];
      for (const [id, fields] of rows) {
        if (Number(id.slice(0, id.indexOf('-'))) > ripe) break read;
        cursor = id;
        const s = field(fields, 's');
        if (partitionOf(s, this.cfg.partitions) !== p) continue;
        const a = this.read(id, fields);
        if (a === undefined) continue;
        // whether a bar may still be amended is judged by the watermark the amend came under, as a
        // late trade's is: it depends on the feed alone, never on how far the closer has got
        const w = Number(field(fields, 'w') || 0);
        maxW = Math.max(maxW, w);
        let x = bySymbol.get(a.s);
        if (!x) bySymbol.set(a.s, (x = { amends: [], last: 0, bars: new Map() }));
        x.amends.push(a);
        if (this.calendar.keeps(a.s, a.t))
          this.calendar.forEachBar(a.s, a.t, (_iv, bar, end) => {
            if (end + this.windowMs <= w) {
              tooOld++;
              return;
            }
            x.bars.set(bar, end);
            x.last = Math.max(x.last, end);
          });
      }
      if (rows.length < READ) break;
      start = `(${rows[rows.length - 1]![0]}`;
    }
    if (cursor === from) return 0;
    const notes: AmendNote[] = [...bySymbol].map(([symbol, x]) => ({
      symbol,
      amends: JSON.stringify(x.amends),
      last: x.last,
      bars: [...x.bars].map(([id, end]) => ({ id, end })),
    }));
    const due = await noteAmends(this.redis, this.keys, p, { from, cursor, windowMs: this.windowMs, w: maxW, tooOld, notes });
    if (due === undefined) this.log.debug({ p }, 'amends: another closer noted them first');
    return due ?? 0;
  }

  /** An amend kept on feed:corrections, read; undefined (said once) when it cannot be. */
  private read(id: string, fields: readonly string[]): TradeAmend | undefined {
    let why: string;
    try {
      const a = alpacaAmend(JSON.parse(field(fields, 'raw')));
      if (typeof a !== 'string') return a;
      why = a;
    } catch {
      why = 'not JSON';
    }
    if (!this.unreadableSaid) {
      this.unreadableSaid = true;
      this.log.error(
        { entry: id, stream: this.keys.corrections(), why },
        'a correction or cancel the feed sent cannot be read, so it is not applied (it stays on feed:corrections as received; said once)',
      );
    }
    return undefined;
  }

  /**
   * Writes every bar of partition p waiting for its amends (held at its close, or for a revision);
   * how many were written. Read again while another closer's note or a late trade changed what a
   * bar is made of between the read and the write.
   */
  async settle(p: number): Promise<number> {
    let written = 0;
    for (let round = 0; round < 20; round++) {
      const r = await this.settleOnce(p);
      written += r.written;
      if (r.done) return written;
    }
    this.log.warn({ p }, 'amends: bars kept changing while they were written; the next tick goes on');
    return written;
  }

  private async settleOnce(p: number): Promise<{ written: number; done: boolean }> {
    const todoKey = this.keys.fixTodo(p);
    const raw = await this.redis.hgetall(todoKey);
    const todos: Todo[] = [];
    for (const [id, value] of Object.entries(raw)) {
      const { symbol, start } = parseBarId(id);
      const held = value.startsWith('h#') ? decodeBarState(value.slice(2)) : undefined;
      const end = held ? (this.calendar.barsAt(symbol, start).find((b) => b.id === id)?.end ?? start) : Number(value.slice(2));
      todos.push({ id, value, symbol, start, end, held });
    }
    if (todos.length === 0) return { written: 0, done: true };
    const symbols = [...new Set(todos.map((t) => t.symbol))];
    const fix = this.keys.fix(p);
    const lists = await this.redis.hmget(fix, ...symbols.map((s) => `a:${s}`));
    const versions = await this.redis.hmget(fix, ...symbols.map((s) => `v:${s}`));
    const amends = new Map<string, { list: TradeAmend[]; version: string }>();
    symbols.forEach((s, k) => amends.set(s, { list: lists[k] ? (JSON.parse(lists[k]!) as TradeAmend[]) : [], version: versions[k] ?? '' }));

    // the trades of these symbols on the raw stream, from the earliest bar's start (less FUTURE_LIMIT_MS: a
    // trade may come that far ahead of the clock) under CLOCK=wall; all that is kept under CLOCK=event
    const wanted = new Set(symbols);
    const from = this.cfg.clock === 'wall' ? `${Math.max(0, Math.min(...todos.map((t) => t.start)) - this.cfg.futureLimitMs)}` : '-';
    const trades = await this.rawTrades(p, from, wanted);
    // (CLOCK=wall) a bar whose first trades may have been trimmed from the raw stream cannot be
    // recomputed: written as it closed, or its revision left out, and said
    let kept = -Infinity;
    if (this.cfg.clock === 'wall') {
      // the newest entry a trim (or anything) deleted: trades that came before it may be gone
      const info = (await this.redis.xinfo('STREAM', this.keys.trades(p))) as unknown[];
      const at = info.indexOf('max-deleted-entry-id');
      const id = at >= 0 ? String(info[at + 1]) : '0-0';
      if (id !== '0-0') kept = Number(id.slice(0, id.indexOf('-')));
    }
    const revisions = todos.some((t) => !t.held);
    let lateTrades: IdentifiedTrade[] = [];
    let lateLast = '';
    if (this.late && revisions) {
      const last = (await this.redis.xrevrange(this.keys.late(p), '+', '-', 'COUNT', 1)) as [string, string[]][];
      lateLast = last[0]?.[0] ?? '';
      if (lateLast !== '')
        lateTrades = (await this.scan(this.keys.late(p), `${Math.min(...todos.map((t) => t.end))}`, wanted, true, lateLast)).out;
    }

    // each symbol's bars with its amends applied: on time (and, LATE=amend, its late trades' corrections)
    const bySymbol = new Map<string, { bars: Map<string, BarState>; late: Map<string, BarState> }>();
    for (const s of symbols) {
      const list = amends.get(s)!.list;
      // only the trades inside the windows settled now (a daily bar's end is its session's close)
      const settling = todos.filter((t) => t.symbol === s);
      const tMin = Math.min(...settling.map((t) => t.start));
      const tMax = Math.max(...settling.map((t) => t.end)) + (this.hasDay ? 86_400_000 : 0);
      const mine = trades.filter((x) => x.entry.s === s && x.entry.t >= tMin && x.entry.t < tMax);
      const applied = applyAmends(mine, list);
      const lateMine = lateTrades.filter((x) => x.entry.s === s);
      const lateApplied = applyAmends(lateMine, list);
      this.sayNotFound(
        s,
        list.filter((a, n) => !applied.found[n] && !lateApplied.found[n] && settling.some((t) => a.t >= t.start && a.t < t.end)),
      );
      const bars = new Map<string, BarState>();
      for (const [id, part] of this.onTime.run(applied.trades).bars) bars.set(id, part.state);
      const late = new Map<string, BarState>();
      if (this.late) for (const [id, part] of this.late.run(lateApplied.trades).lateBars) late.set(id, part.state);
      bySymbol.set(s, { bars, late });
    }

    // closed bars that closed with trades the raw stream has not (closeBars marked them)
    const revised = todos.filter((t) => !t.held);
    const partial = revised.length ? await this.redis.hmget(fix, ...revised.map((t) => `u:${t.id}`)) : [];
    const unmadeRevision = new Set(revised.filter((_, k) => partial[k] !== null).map((t) => t.id));

    crashPoint('amend:settle'); // recomputed, nothing written: the next tick does it again
    let written = 0;
    for (const t of todos) {
      const mine = bySymbol.get(t.symbol)!;
      let state: BarState | undefined = mine.bars.get(t.id);
      // the raw stream has not all of its trades: a backfill, a trim (CLOCK=wall), Redis's loss
      const trimmed = t.start - this.cfg.graceMs < kept;
      const unmade =
        trimmed || unmadeRevision.has(t.id) || (t.held !== undefined && ((t.held.flags ?? 0) & (BACKFILLED | BAR_FLAGS.LOST)) !== 0);
      if (unmade) this.sayUnmade(t.id, trimmed);
      if (t.held && unmade)
        state = t.held; // written as it closed
      else if (t.held) {
        if (state) state = { ...state, flags: t.held.flags };
      } else if (this.late) {
        const late = mine.late.get(t.id);
        if (late) state = state ? mergeInto({ ...state }, late) : late;
      }
      const r = await applyFix(this.redis, this.keys, p, {
        id: t.id,
        todo: t.value,
        version: amends.get(t.symbol)!.version,
        state: state ? encodeBarState(state) : '',
        end: t.end,
        amendWindowMs: this.late ? this.windowMs : 0,
        lateLast: t.held ? '' : lateLast,
        unmade,
      });
      if (r === 'written') written++;
      else if (r === 'read-again') return { written, done: false };
      else if (r === 'emptied' && !t.held)
        this.log.warn(
          { bar: t.id },
          "the feed's corrections and cancels took every trade out of a bar already written: it stays as written (a bar file has no way to take a row back; counted as amendsEmptied)",
        );
    }
    return { written, done: true };
  }

  /**
   * Per partition, the raw stream's trades of the symbols recent settles wanted, read up to `upTo`
   * (each symbol's from the entry `from` on): a settle reads only what was appended since, and a
   * symbol not wanted for RAW_CACHE_IDLE_MS is let go. Entries never change once appended.
   */
  private readonly cache = new Map<
    number,
    { upTo: string; symbols: Map<string, { from: string; trades: IdentifiedTrade[]; used: number }> }
  >();

  /** `wanted`'s trades on partition p's raw stream from `from` ('-' or ms), through the cache. */
  private async rawTrades(p: number, from: string, wanted: ReadonlySet<string>): Promise<IdentifiedTrade[]> {
    const stream = this.keys.trades(p);
    const first = (await this.redis.xrange(stream, '-', '+', 'COUNT', 1)) as [string, string[]][];
    const firstId = first[0]?.[0];
    let c = this.cache.get(p);
    // a stream begun anew (Redis lost its data, or another KEY_PREFIX run): nothing cached holds
    if (c && firstId !== undefined && idLess(c.upTo, firstId)) c = undefined;
    if (!c) this.cache.set(p, (c = { upTo: '', symbols: new Map() }));
    const now = performance.now();
    const asId = (x: string) => (x === '-' ? '0-0' : `${x}-0`);
    // symbols not cached from `from`: read from there to what the cache has read
    const cold = [...wanted].filter((s) => {
      const k = c.symbols.get(s);
      return !k || idLess(asId(from), asId(k.from));
    });
    if (cold.length && c.upTo !== '') {
      const { out } = await this.scan(stream, from, new Set(cold), false, c.upTo);
      for (const s of cold) c.symbols.set(s, { from, trades: out.filter((x) => x.entry.s === s), used: now });
    } else for (const s of cold) c.symbols.set(s, { from, trades: [], used: now });
    // everything appended since, for every symbol cached
    const { out, last } = await this.scan(stream, c.upTo === '' ? from : `(${c.upTo}`, new Set(c.symbols.keys()), false);
    if (last !== undefined) c.upTo = last;
    for (const x of out) c.symbols.get(x.entry.s)!.trades.push(x);
    for (const s of wanted) c.symbols.get(s)!.used = now;
    for (const [s, k] of c.symbols) {
      if (now - k.used > RAW_CACHE_IDLE_MS) c.symbols.delete(s);
      else if (firstId !== undefined && k.trades.length && idLess(k.trades[0]!.entry.entry, firstId))
        k.trades = k.trades.filter((x) => !idLess(x.entry.entry, firstId)); // trimmed from the stream: gone here too
    }
    const lo = asId(from);
    const mine: IdentifiedTrade[] = [];
    for (const s of wanted) {
      const list = c.symbols.get(s)!.trades;
      // in stream order: from the first at or after `from`
      let a = 0;
      let b = from === '-' ? 0 : list.length;
      while (a < b) {
        const m = (a + b) >>> 1;
        if (idLess(list[m]!.entry.entry, lo)) a = m + 1;
        else b = m;
      }
      for (let i = a; i < list.length; i++) mine.push(list[i]!);
    }
    return mine;
  }

  /** The trades of `symbols` on a stream (the raw stream, or trades:late whole), from `from` (ms or an exclusive id) to `to` (an id) or the end; and the last entry read. */
  private async scan(
    stream: string,
    from: string,
    symbols: ReadonlySet<string>,
    late: boolean,
    to = '+',
  ): Promise<{ out: IdentifiedTrade[]; last: string | undefined }> {
    const out: IdentifiedTrade[] = [];
    let last: string | undefined;
    const few = symbols.size <= 8 ? [...symbols] : undefined;
    let start = from;
    for (;;) {
      const rows = (await this.redis.xrange(stream, start, to, 'COUNT', READ)) as [string, string[]][];
      if (rows.length) last = rows[rows.length - 1]![0];
      for (const [id, fields] of rows) {
        if (late) {
          const s = field(fields, 's');
          if (!symbols.has(s)) continue;
          const entry: RawEntry = {
            id: field(fields, 'id'),
            entry: id,
            s,
            p: field(fields, 'p'),
            v: Number(field(fields, 'v')),
            t: Number(field(fields, 't')),
            w: Number(field(fields, 'w')),
            c: field(fields, 'c'),
            rx: Number(field(fields, 'rx')),
          };
          out.push({ entry, i: field(fields, 'i') });
          continue;
        }
        // an entry without a line of these symbols is passed over unread (a few symbols: a search of its text)
        if (few && !few.some((s) => hasLineOf(field(fields, 'd'), s))) continue;
        const entries = rawEntries(id, fields);
        let ids: string[] | undefined;
        entries.forEach((e, k) => {
          if (!symbols.has(e.s)) return;
          ids ??= field(fields, 'i').split('\n');
          out.push({ entry: e, i: ids[k] ?? '' });
        });
      }
      if (rows.length < READ) return { out, last };
      start = `(${rows[rows.length - 1]![0]}`;
    }
  }

  private trimmedSaid = false;
  private unmadeSaid = false;

  /** A bar the raw stream has not all the trades of: said once per cause. */
  private sayUnmade(bar: string, trimmed: boolean): void {
    if (trimmed) {
      if (this.trimmedSaid) return;
      this.trimmedSaid = true;
      this.log.error(
        { bar, stream: this.keys.trades(0).replace(/\{0\}$/, '{p}') },
        "the raw stream no longer has all of a bar's trades, so the feed's corrections and cancels cannot be applied to it: it is written as it closed, or its revision left out (counted as amendsUnmade); TRADES_RETENTION must outlast the longest interval and LATE_AMEND_WINDOW (said once)",
      );
      return;
    }
    if (this.unmadeSaid) return;
    this.unmadeSaid = true;
    this.log.warn(
      { bar },
      "the feed corrected or cancelled a trade of a bar part of which came from a backfill (or was lost with Redis's data), whose trades are not all on the raw stream: it is written as it closed, or its revision left out (counted as amendsUnmade; said once)",
    );
  }

  /** Amends whose trade is in none of the bars settled now: said, at most once a minute. */
  private sayNotFound(s: string, missing: readonly TradeAmend[]): void {
    if (missing.length === 0) return;
    const now = Date.now();
    if (now - this.notFoundSaid < 60_000) return;
    this.notFoundSaid = now;
    this.log.warn(
      { symbol: s, amend: missing[0], count: missing.length },
      'the feed amended a trade candlewick does not have in its bars (one it never received, one outside SESSIONS, or one that came late and is in no bar): nothing to take out there',
    );
  }
}
