/**
 * Activity bars as docs/activity-bars.md defines them, written from that page alone, for tests to
 * compare the production cutter with. Plain and slow on purpose: one trade at a time, every step of
 * the page's rules in the order the page gives it.
 *
 * Fixed thresholds are exact: sizes are integers scaled by 10^10, values (price × size) by 10^22,
 * prices by 10^12. The expected-value (EWMA) forms work in doubles, with `E ← E + α·(x − E)`.
 *
 * Readings chosen where the page leaves room (the most literal one each time):
 *  - a price update (v = 0) sets prices (it may open a bar, so it sets `start` and `open`) but is
 *    no sale for the tick rule, has no x, adds to no measure, count or EWMA, and is never a bar's
 *    closing trade;
 *  - in the EWMA forms x is a double: 1, the size, or Number(price) × size; θ is a sum of doubles;
 *  - the first bar of an EWMA form closes on its T0-th trade whatever `-min`/`-max` say; only the
 *    E[T] after it is kept within [min, max];
 *  - a high or a low moves only on a strictly higher or lower price (the first text of a level stays).
 */

export type Measure = 't' | 'v' | 'val';

/** A fixed threshold: `100t` (sum), `500t-imb`, `20000v-run`... `threshold` is scaled as the measure's exact sum is (t: 1, v: 10^10, val: 10^22). */
export interface FixedInterval {
  name: string;
  kind: 'fixed';
  measure: Measure;
  rule: 'sum' | 'imb' | 'run';
  threshold: bigint;
}

/** An expected-value threshold: `t-imb-e100`, `v-run-e100-w20-k50-min10-max1000`... */
export interface EwmaInterval {
  name: string;
  kind: 'ewma';
  measure: Measure;
  rule: 'imb' | 'run';
  /** the initial length E[T] starts at, in trades */
  t0: number;
  /** span of the EWMA of bar lengths */
  w: number;
  /** span of the EWMAs of the flow */
  k: number;
  min: number;
  max: number;
}

export type RefInterval = FixedInterval | EwmaInterval;

/** A trade in event order: every one may set every field (no CONDITIONS). */
export interface RefTrade {
  s: string;
  t: number;
  p: string;
  v: number;
  /** the feed's aggressor side (b: the buyer, s: the seller), where it gives one */
  a?: 'b' | 's';
}

/** A closed bar. */
export interface RefBar {
  symbol: string;
  /** 1 for a symbol's first bar of the interval, then 2, 3... */
  seq: number;
  /** event times (ms) of its first and last trade */
  start: number;
  end: number;
  open: string;
  high: string;
  low: string;
  close: string;
  /** Σ size, scaled by 10^10 */
  volume: bigint;
  /** Σ price × size, scaled by 10^22 (VWAP = vwapNumerator / volume, after rescaling) */
  vwapNumerator: bigint;
  trades: number;
}

const SIZE_DECIMALS = 10;
const PRICE_DECIMALS = 12;
const VALUE_DECIMALS = SIZE_DECIMALS + PRICE_DECIMALS;

/**
 * A plain decimal ("12", "0.5", "1e-7", "2.5e+21") as an integer scaled by 10^decimals. With
 * `round`, digits past `decimals` are rounded half away from zero; without, they are an error.
 */
export function scaled(text: string, decimals: number, round = false): bigint {
  const m = /^(-?)(\d+)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(text);
  if (!m) throw new Error(`not a decimal: "${text}"`);
  const negative = m[1] === '-';
  let digits = m[2]! + (m[3] ?? '');
  // the decimal point sits `point` digits from the right of `digits`
  let point = (m[3] ?? '').length - Number(m[4] ?? '0');
  if (point < 0) {
    digits += '0'.repeat(-point);
    point = 0;
  }
  let n: bigint;
  if (point <= decimals) n = BigInt(digits) * 10n ** BigInt(decimals - point);
  else {
    const cut = point - decimals;
    const kept = digits.slice(0, digits.length - cut) || '0';
    const dropped = digits.slice(digits.length - cut);
    if (!round && /[1-9]/.test(dropped)) throw new Error(`"${text}" has more than ${decimals} decimals`);
    n = BigInt(kept) + (round && dropped[0]! >= '5' ? 1n : 0n);
  }
  return negative ? -n : n;
}

const MEASURE_DECIMALS: Record<Measure, number> = { t: 0, v: SIZE_DECIMALS, val: VALUE_DECIMALS };

/** An activity interval's name, per the page's table of names; an Error for anything else. */
export function parseName(name: string): RefInterval {
  const fixed = /^(\d+(?:\.\d+)?)(t|v|val)(?:-(imb|run))?$/.exec(name);
  if (fixed) {
    const measure = fixed[2] as Measure;
    // "Numbers of a fixed threshold may have decimals for volume and value, not for trades."
    if (measure === 't' && fixed[1]!.includes('.')) throw new Error(`${name}: a number of trades has no decimals`);
    const threshold = scaled(fixed[1]!, MEASURE_DECIMALS[measure]);
    if (threshold <= 0n) throw new Error(`${name}: the threshold must be above 0`);
    return { name, kind: 'fixed', measure, rule: (fixed[3] as 'imb' | 'run' | undefined) ?? 'sum', threshold };
  }
  const ewma = /^(t|v|val)-(imb|run)-e(\d+)((?:-(?:w|k|min|max)\d+)*)$/.exec(name);
  if (ewma) {
    const t0 = Number(ewma[3]);
    const opts = new Map<string, number>();
    for (const [, key, value] of ewma[4]!.matchAll(/-(w|k|min|max)(\d+)/g)) {
      if (opts.has(key!)) throw new Error(`${name}: -${key} given twice`);
      opts.set(key!, Number(value));
    }
    const iv: EwmaInterval = {
      name,
      kind: 'ewma',
      measure: ewma[1] as Measure,
      rule: ewma[2] as 'imb' | 'run',
      t0,
      w: opts.get('w') ?? 20,
      k: opts.get('k') ?? t0,
      min: opts.get('min') ?? 1,
      max: opts.get('max') ?? Infinity,
    };
    if (iv.t0 < 1 || iv.w < 1 || iv.k < 1 || iv.min > iv.max) throw new Error(`${name}: impossible options`);
    return iv;
  }
  throw new Error(`"${name}" is not an activity interval`);
}

/** An EWMA of span n: α = 2 / (n + 1), `E ← E + α·(x − E)`, its first value x itself. */
class Ewma {
  private readonly alpha: number;
  value: number | undefined;

  constructor(span: number, first?: number) {
    this.alpha = 2 / (span + 1);
    this.value = first;
  }

  take(x: number): void {
    this.value = this.value === undefined ? x : this.value + this.alpha * (x - this.value);
  }

  /** "one not seen yet counts 0" */
  get orZero(): number {
    return this.value ?? 0;
  }
}

/** The bar being formed. */
interface Forming {
  start: number;
  end: number;
  open: string;
  high: string;
  highN: bigint;
  low: string;
  lowN: bigint;
  close: string;
  volume: bigint;
  pv: bigint;
  trades: number;
  // θ's parts, exact (fixed forms): Σ x, Σ b·x, Σ x of buys, Σ x of sells
  sum: bigint;
  signed: bigint;
  buys: bigint;
  sells: bigint;
  // θ's parts in doubles (EWMA forms)
  signedD: number;
  buysD: number;
  sellsD: number;
  /** EWMA forms: the threshold fixed at the bar's start; undefined for the first bar (T0 trades) */
  threshold: number | undefined;
}

/** One symbol's state for one interval. */
interface SymbolState {
  lastSale: bigint | undefined;
  lastSide: 1 | -1;
  bar: Forming | undefined;
  closed: number;
  // EWMA forms
  eT: Ewma;
  eBx: Ewma;
  p: Ewma;
  eBuy: Ewma;
  eSell: Ewma;
  /** the threshold for the next bar, from the expectations after the last closed bar; undefined before the first closes */
  next: number | undefined;
}

const abs = (n: bigint): bigint => (n < 0n ? -n : n);
const maxB = (a: bigint, b: bigint): bigint => (a > b ? a : b);

/**
 * The closed bars of one interval over trades in event order (any symbols; each has its own
 * state), in the order they close. The bar still forming at the end is not returned.
 */
export function referenceBars(trades: readonly RefTrade[], interval: string | RefInterval): RefBar[] {
  const iv = typeof interval === 'string' ? parseName(interval) : interval;
  const states = new Map<string, SymbolState>();
  const out: RefBar[] = [];
  for (const tr of trades) {
    let st = states.get(tr.s);
    if (!st) {
      const k = iv.kind === 'ewma' ? iv.k : 1;
      st = {
        lastSale: undefined,
        lastSide: 1,
        bar: undefined,
        closed: 0,
        // E[T]'s first value is T0, not a bar's length
        eT: new Ewma(iv.kind === 'ewma' ? iv.w : 1, iv.kind === 'ewma' ? iv.t0 : undefined),
        eBx: new Ewma(k),
        p: new Ewma(k),
        eBuy: new Ewma(k),
        eSell: new Ewma(k),
        next: undefined,
      };
      states.set(tr.s, st);
    }
    const price = scaled(tr.p, PRICE_DECIMALS);

    // b, the tick rule: above the last sale a buy, below a sell, at it the side before; the first a buy
    // (a price update, v = 0, is not a sale: it moves neither); the feed's aggressor side, where given, decides
    let b: 1 | -1 = st.lastSide;
    if (tr.v > 0 && tr.a !== undefined) {
      b = tr.a === 'b' ? 1 : -1;
      st.lastSale = price;
      st.lastSide = b;
    } else if (tr.v > 0) {
      if (st.lastSale === undefined) b = 1;
      else if (price > st.lastSale) b = 1;
      else if (price < st.lastSale) b = -1;
      st.lastSale = price;
      st.lastSide = b;
    }

    // prices: the trade (or price update) opens a bar if none is forming
    if (!st.bar)
      st.bar = {
        start: tr.t,
        end: tr.t,
        open: tr.p,
        high: tr.p,
        highN: price,
        low: tr.p,
        lowN: price,
        close: tr.p,
        volume: 0n,
        pv: 0n,
        trades: 0,
        sum: 0n,
        signed: 0n,
        buys: 0n,
        sells: 0n,
        signedD: 0,
        buysD: 0,
        sellsD: 0,
        threshold: st.next,
      };
    const bar = st.bar;
    bar.end = tr.t;
    bar.close = tr.p;
    if (price > bar.highN) {
      bar.high = tr.p;
      bar.highN = price;
    }
    if (price < bar.lowN) {
      bar.low = tr.p;
      bar.lowN = price;
    }

    // a price update (v = 0) adds nothing to any measure or count, and is not checked against the threshold
    if (tr.v === 0) continue;

    const size = scaled(String(tr.v), SIZE_DECIMALS, true);
    const value = price * size; // 10^12 × 10^10 = 10^22
    bar.volume += size;
    bar.pv += value;
    bar.trades += 1;

    let reached: boolean;
    if (iv.kind === 'fixed') {
      const x = iv.measure === 't' ? 1n : iv.measure === 'v' ? size : value;
      bar.sum += x;
      bar.signed += BigInt(b) * x;
      if (b === 1) bar.buys += x;
      else bar.sells += x;
      const theta = iv.rule === 'sum' ? bar.sum : iv.rule === 'imb' ? abs(bar.signed) : maxB(bar.buys, bar.sells);
      reached = theta >= iv.threshold;
    } else {
      const x = iv.measure === 't' ? 1 : iv.measure === 'v' ? tr.v : Number(tr.p) * tr.v;
      bar.signedD += b * x;
      if (b === 1) bar.buysD += x;
      else bar.sellsD += x;
      // step 1: the flow's expectations, per trade
      if (iv.rule === 'imb') st.eBx.take(b * x);
      else {
        st.p.take(b === 1 ? 1 : 0);
        if (b === 1) st.eBuy.take(x);
        else st.eSell.take(x);
      }
      // steps 3 and 5: θ against the threshold fixed at the bar's start; the first bar takes T0 trades
      if (bar.threshold === undefined) reached = bar.trades >= iv.t0;
      else {
        const theta = iv.rule === 'imb' ? Math.abs(bar.signedD) : Math.max(bar.buysD, bar.sellsD);
        reached = theta >= bar.threshold;
      }
    }
    if (!reached) continue;

    st.closed += 1;
    out.push({
      symbol: tr.s,
      seq: st.closed,
      start: bar.start,
      end: bar.end,
      open: bar.open,
      high: bar.high,
      low: bar.low,
      close: bar.close,
      volume: bar.volume,
      vwapNumerator: bar.pv,
      trades: bar.trades,
    });
    st.bar = undefined;
    if (iv.kind === 'ewma') {
      // step 4: E[T] takes the bar's length, then is kept within [min, max]
      st.eT.take(bar.trades);
      st.eT.value = Math.min(iv.max, Math.max(iv.min, st.eT.value!));
      // step 2: the next bar's threshold, from the expectations after this bar's last trade
      const eT = st.eT.value;
      if (iv.rule === 'imb') st.next = eT * Math.abs(st.eBx.orZero);
      else {
        const p = st.p.orZero;
        st.next = eT * Math.max(p * st.eBuy.orZero, (1 - p) * st.eSell.orZero);
      }
    }
  }
  return out;
}
