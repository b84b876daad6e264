/**
 * Trades from the future. One trade stamped far ahead (a feed's bad clock, a ms/µs mix-up, 2099)
 * would move the watermark there and make every later trade late. The rule, applied to valid
 * trades in arrival order, the same in the ingestor and in `candlewick bars` (so a replay gives the
 * same result both ways):
 *  - ahead of the clock: t > now + limit is rejected (never "behind": a replayed tape is years old;
 *    in the ingestor the clock is Redis's, so a step of its host's clock rejects nothing);
 *  - CLOCK=event only, ahead of the feed: the feed time is the highest event time accepted so far
 *    (unknown before the first trade). A trade with t > feed time + limit is held back, not passed
 *    on, and so are the trades after it that are ahead of the feed too. The jump is confirmed — the
 *    held trades pass on, in arrival order — once CONFIRM_TRADES of them (3) span CONFIRM_SPAN_MS
 *    (10 s) of event time or more, none of them more than the limit behind the first: a new day of
 *    a multi-day tape, a feed after a quiet night, whose trades go on. A trade that is not ahead of
 *    the feed rejects what is held (outliers: a burst of bad trades, a few at one instant, never
 *    spans 10 s), as does one more than the limit behind the first held (which then starts a new
 *    hold); what is still held when the input ends is rejected. More than HOLD_MAX (10,000) trades
 *    held is a feed living at the new time: the jump is confirmed.
 * Under CLOCK=wall the watermark is the clock, so the clock bound alone keeps it safe.
 */
export class FutureGuard<T extends { t: number }> {
  private feed = 0;
  private held: T[] = [];

  constructor(
    /** FUTURE_LIMIT_MS */
    private readonly limitMs: number,
    /** CLOCK=event: the feed rule applies too */
    private readonly eventClock: boolean,
    private readonly now: () => number = Date.now,
  ) {}

  /** The feed time known from before (the watermark a previous ingestor left in Redis). */
  seed(feedMs: number): void {
    if (feedMs > this.feed) this.feed = feedMs;
  }

  /** trades held back for confirmation */
  get holding(): number {
    return this.held.length;
  }

  /**
   * One valid trade: `accept` is called for what passes on, in arrival order (confirmed held
   * trades in the order they came), `reject` for what is refused, with its reason. `keep` copies a
   * trade that is held back (the caller may reuse its object).
   */
  offer(tr: T, keep: (tr: T) => T, accept: (tr: T) => void, reject: (tr: T, reason: string) => void): void {
    const now = this.now();
    if (tr.t > now + this.limitMs) {
      reject(tr, `t (event time) is ahead of the clock by ${duration(tr.t - now)} (more than FUTURE_LIMIT_MS=${this.limitMs})`);
      return;
    }
    if (!this.eventClock) {
      accept(tr);
      return;
    }
    if (this.feed !== 0 && tr.t > this.feed + this.limitMs) {
      const first = this.held[0];
      // far behind what is held, yet ahead of the feed: what is held is not confirmed; this starts anew
      if (first !== undefined && tr.t < first.t - this.limitMs)
        this.rejectHeld(reject, `the next trade was ${duration(first.t - tr.t)} behind it, so the jump is not confirmed`);
      this.held.push(keep(tr));
      if (this.confirmed()) this.release(accept);
      return;
    }
    if (this.held.length > 0)
      this.rejectHeld(reject, `the next trade was ${duration(this.held[0]!.t - tr.t)} behind it, so the jump is not confirmed`);
    accept(tr);
    if (tr.t > this.feed) this.feed = tr.t;
  }

  /** The input ended: trades still held are rejected (too few came to confirm the jump). */
  end(reject: (tr: T, reason: string) => void): void {
    this.rejectHeld(reject, 'no later trade came to confirm the jump');
  }

  /** enough held trades, over enough event time, to take the jump as real */
  private confirmed(): boolean {
    const n = this.held.length;
    return n > HOLD_MAX || (n >= CONFIRM_TRADES && spanOf(this.held) >= CONFIRM_SPAN_MS);
  }

  private release(accept: (tr: T) => void): void {
    const held = this.held;
    this.held = [];
    for (const h of held) {
      accept(h);
      if (h.t > this.feed) this.feed = h.t;
    }
  }

  private rejectHeld(reject: (tr: T, reason: string) => void, why: string): void {
    const held = this.held;
    if (held.length === 0) return;
    this.held = [];
    const of = ` (${held.length} held, spanning ${duration(spanOf(held))}: a jump needs ${CONFIRM_TRADES} trades over ${duration(CONFIRM_SPAN_MS)} or more)`;
    for (const h of held) reject(h, `${this.aheadOfFeed(h)}: ${why}${of}`);
  }

  private aheadOfFeed(tr: T): string {
    return `t (event time) is ahead of the feed by ${duration(tr.t - this.feed)} (more than FUTURE_LIMIT_MS=${this.limitMs})`;
  }
}

/** held trades that confirm a jump ahead of the feed: at least this many ... */
export const CONFIRM_TRADES = 3;
/** ... spanning at least this much event time */
export const CONFIRM_SPAN_MS = 10_000;
/** more held trades than this confirm a jump whatever their span (a feed living at the new time) */
const HOLD_MAX = 10_000;

function spanOf(trades: readonly { t: number }[]): number {
  let lo = Infinity;
  let hi = -Infinity;
  for (const h of trades) {
    if (h.t < lo) lo = h.t;
    if (h.t > hi) hi = h.t;
  }
  return hi - lo;
}

/** A span for people: 24h, 15min, 3.5d, 40s. */
export function duration(ms: number): string {
  const fmt = (x: number, unit: string) => `${+x.toFixed(1)}${unit}`;
  if (ms >= 72 * 3_600_000) return fmt(ms / 86_400_000, 'd');
  if (ms >= 3_600_000) return fmt(ms / 3_600_000, 'h');
  if (ms >= 60_000) return fmt(ms / 60_000, 'min');
  return fmt(ms / 1000, 's');
}
