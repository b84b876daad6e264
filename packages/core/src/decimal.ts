/**
 * Exact sums. Volume and Σ price × volume are kept as integers scaled by fixed powers of ten, so
 * adding partial bars in any order (N aggregators, batches cut anywhere, backfill) gives the same
 * bits: N = 1, 2 or 4 aggregators write byte-identical files. A trade's price is taken to 12
 * decimals and its volume to 10 (beyond that, rounded half up, the same way every time).
 */

export const PRICE_DIGITS = 12;
export const VOLUME_DIGITS = 10;
/** Σ p·v carries PRICE_DIGITS + VOLUME_DIGITS decimals */
export const PV_DIGITS = PRICE_DIGITS + VOLUME_DIGITS;

/**
 * The largest price and volume a trade may have. The sums are exact at any size (bigint here,
 * decimal strings in Lua), but the VWAP divides them as doubles and CSV prints numbers: a price
 * of 1e308 overflows Σp·v (scaled by 10^22) to Infinity and leaves the VWAP empty. Below these
 * bounds p·v·10^22 stays under 1e50, so even 10^250 trades in one bar keep the VWAP finite, and
 * a price or volume prints without an exponent (JavaScript switches to one at 1e21).
 */
export const MAX_PRICE = 1e12;
export const MAX_VOLUME = 1e15;

const pow10 = (n: number): bigint => 10n ** BigInt(n);
const VOLUME_UNIT = Number(pow10(VOLUME_DIGITS));
const PRICE_UNIT = Number(pow10(PRICE_DIGITS));

/** A decimal (text, or a number through its shortest text, exponent notation included) as an integer of `digits` decimals. */
export function toScaled(x: string | number, digits: number): bigint {
  const text = typeof x === 'number' ? String(x) : x.trim();
  const m = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(text);
  if (!m || (m[2] === '' && (m[3] ?? '') === '')) throw new Error(`not a decimal number: "${text}"`);
  const sign = m[1] === '-' ? -1n : 1n;
  let int = m[2] || '0';
  let frac = m[3] ?? '';
  const exp = Number(m[4] ?? '0');
  // move the point by the exponent
  if (exp > 0) {
    const take = frac.slice(0, exp).padEnd(exp, '0');
    int += take;
    frac = frac.slice(exp);
  } else if (exp < 0) {
    const pad = int.padStart(-exp + 1, '0');
    frac = pad.slice(pad.length + exp) + frac;
    int = pad.slice(0, pad.length + exp);
  }
  const kept = frac.slice(0, digits).padEnd(digits, '0');
  let v = BigInt(int + kept);
  if (frac.length > digits && frac.charCodeAt(digits) >= 53 /* '5' */) v += 1n;
  return sign * v;
}

/** toScaled(·, digits) remembered for up to 100,000 distinct inputs. */
function memoScaled<K extends string | number>(digits: number): (x: K) => bigint {
  const seen = new Map<K, bigint>();
  return (x) => {
    let v = seen.get(x);
    if (v === undefined) {
      v = toScaled(x, digits);
      if (seen.size > 100_000) seen.clear();
      seen.set(x, v);
    }
    return v;
  };
}

/** Caches of scaled values: a day of prints has few distinct prices and sizes. */
export class ScaledCache {
  readonly price = memoScaled<string>(PRICE_DIGITS);
  readonly volume = memoScaled<number>(VOLUME_DIGITS);
  private readonly volumeNumbers = new Map<number, number>();
  /** The scaled volume as an exact number, or -1 when it is too large to be one. */
  volumeNumber(v: number): number {
    let n = this.volumeNumbers.get(v);
    if (n === undefined) {
      const big = this.volume(v);
      n = big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : -1;
      if (this.volumeNumbers.size > 100_000) this.volumeNumbers.clear();
      this.volumeNumbers.set(v, n);
    }
    return n;
  }
}

/** A scaled volume as a plain number, for printing. */
export function volumeNumber(v: bigint): number {
  return Number(v) / VOLUME_UNIT;
}

/** Σp·v / Σv as a number (NaN without volume). The same exact inputs always give the same bits. */
export function vwapOf(pv: bigint, volume: bigint): number {
  return volume > 0n ? Number(pv) / Number(volume) / PRICE_UNIT : NaN;
}
