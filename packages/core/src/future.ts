/**
 * Trades from the future. One trade stamped far ahead (a feed's bad clock, a ms/µs mix-up, 2099)
 * would move the watermark there and make every later trade late. The rule, applied to valid
 * trades in arrival order, the same in the ingestor and in `candlewick bars` (so a replay gives the
 * same result both ways):
 *  - ahead of the clock: t > now + limit is rejected (never "behind": a replayed tape is years old);
 *  - CLOCK=event only, ahead of the feed: the feed time is the highest event time accepted so far
 *    (unknown before the first trade). A trade with t > feed time + limit is held back, not passed
 *    on, and the next trade decides: if the next trade is not behind it by more than the limit, the
 *    jump is confirmed and the held trade passes on first (a new day of a multi-day tape, a feed
 *    after a quiet night); otherwise it is rejected (a lone outlier). A trade still held when the
 *    input ends is rejected.
 * Under CLOCK=wall the watermark is the clock, so the clock bound alone keeps it safe.
 */
export class FutureGuard<T extends { t: number }> {
  private feed = 0;
  private held: T | undefined;

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

  /** trades held back (0 or 1) */
  get holding(): number {
    return this.held === undefined ? 0 : 1;
  }

  /**
   * One valid trade: `accept` is called for what passes on, in arrival order (a confirmed held
   * trade before the one confirming it), `reject` for what is refused, with its reason. `keep`
   * copies a trade that is held back (the caller may reuse its object).
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
    const held = this.held;
    if (held !== undefined) {
      this.held = undefined;
      if (tr.t >= held.t - this.limitMs) {
        accept(held);
        if (held.t > this.feed) this.feed = held.t;
      } else
        reject(held, `${this.aheadOfFeed(held)}: the next trade was ${duration(held.t - tr.t)} behind it, so the jump is not confirmed`);
    }
    if (this.feed !== 0 && tr.t > this.feed + this.limitMs) {
      this.held = keep(tr);
      return;
    }
    accept(tr);
    if (tr.t > this.feed) this.feed = tr.t;
  }

  /** The input ended: a trade still held is rejected (nothing came to confirm it). */
  end(reject: (tr: T, reason: string) => void): void {
    const held = this.held;
    if (held === undefined) return;
    this.held = undefined;
    reject(held, `${this.aheadOfFeed(held)}: no later trade came to confirm the jump`);
  }

  private aheadOfFeed(tr: T): string {
    return `t (event time) is ahead of the feed by ${duration(tr.t - this.feed)} (more than FUTURE_LIMIT_MS=${this.limitMs})`;
  }
}

/** A span for people: 24h, 15min, 3.5d, 40s. */
export function duration(ms: number): string {
  const fmt = (x: number, unit: string) => `${+x.toFixed(1)}${unit}`;
  if (ms >= 72 * 3_600_000) return fmt(ms / 86_400_000, 'd');
  if (ms >= 3_600_000) return fmt(ms / 3_600_000, 'h');
  if (ms >= 60_000) return fmt(ms / 60_000, 'min');
  return fmt(ms / 1000, 's');
}
