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

const pow10 = (n: number): bigint => 10n ** BigInt(n);
const VOLUME_UNIT = Number(pow10(VOLUME_DIGITS));
const PRICE_UNIT = Number(pow10(PRICE_DIGITS));

/** A decimal (text, or a number through its shortest text, exponent notation included) as an integer of `digits` decimals. */
export function toScaled(x: string | number, digits: number): bigint {
  let text = typeof x === 'number' ? String(x) : x.trim();
  const m = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(text);
  if (!m || (m[2] === '' && (m[3] ?? '') === '')) throw new Error(`not a decimal number: "${text}"`);
  const sign = m[1] === '-' ? -1n : 1n;
  let int = m[2] || '0';
  let frac = m[3] ?? '';
  let exp = Number(m[4] ?? '0');
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
  exp = 0;
  text = '';
  const kept = frac.slice(0, digits).padEnd(digits, '0');
  let v = BigInt(int + kept);
  if (frac.length > digits && frac.charCodeAt(digits) >= 53 /* '5' */) v += 1n;
  return sign * v;
}

/** Caches of scaled values: a day of prints has few distinct prices and sizes. */
export class ScaledCache {
  private readonly prices = new Map<string, bigint>();
  private readonly volumes = new Map<number, bigint>();

  price(p: string): bigint {
    let v = this.prices.get(p);
    if (v === undefined) {
      v = toScaled(p, PRICE_DIGITS);
      if (this.prices.size > 100_000) this.prices.clear();
      this.prices.set(p, v);
    }
    return v;
  }

  volume(x: number): bigint {
    let v = this.volumes.get(x);
    if (v === undefined) {
      v = toScaled(x, VOLUME_DIGITS);
      if (this.volumes.size > 100_000) this.volumes.clear();
      this.volumes.set(x, v);
    }
    return v;
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
