import { writeFileSync } from 'node:fs';

/**
 * A generated tape of a whole market: `symbols` names that all trade (each once every
 * `lightEveryMs`, at its own phase, with a little jitter) and `heavy` of them that trade
 * `heavyPerSec` times a second besides, for `seconds`. Deterministic for a seed. Replayed at live
 * pace (REPLAY_SPEED=1, REPLAY_SHIFT=true) it closes a bar of every symbol in every interval that
 * ends at a boundary: the load a full-market subscription puts on the closer and the writer.
 */
export interface WideTapeOptions {
  symbols: number;
  heavy: number;
  seconds: number;
  lightEveryMs: number;
  heavyPerSec: number;
  seed: number;
}

export const WIDE_DEFAULTS: WideTapeOptions = {
  symbols: 8000,
  heavy: 5,
  seconds: 240,
  // 8,000 / 6 s = 1,333 trades/s, and 5 x 75 = 375: ~1,700 trades/s
  lightEveryMs: 6000,
  heavyPerSec: 75,
  seed: 1,
};

/** mulberry32: a small seeded generator, so a tape is the same for a seed */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function wideSymbol(i: number): string {
  return `W${String(i).padStart(5, '0')}`;
}

/** The tape's lines ({s,p,v,t,c} JSON), in time order, and its trade count. */
export function wideTapeLines(o: WideTapeOptions): string[] {
  const rnd = random(o.seed);
  // an arbitrary weekday noon in New York: REPLAY_SHIFT stamps every trade with its send time anyway
  const t0 = Date.UTC(2026, 0, 6, 17, 0, 0);
  const spanMs = o.seconds * 1000;
  const trades: { t: number; s: number }[] = [];
  for (let s = 0; s < o.symbols; s++) {
    const phase = Math.floor(rnd() * o.lightEveryMs);
    for (let at = phase; at < spanMs; at += o.lightEveryMs) trades.push({ t: t0 + at + Math.floor(rnd() * 200), s });
  }
  for (let s = 0; s < Math.min(o.heavy, o.symbols); s++) {
    const n = Math.round(o.seconds * o.heavyPerSec);
    for (let k = 0; k < n; k++) trades.push({ t: t0 + Math.floor(rnd() * spanMs), s });
  }
  trades.sort((a, b) => a.t - b.t || a.s - b.s);
  const cents = Array.from({ length: o.symbols }, () => 1000 + Math.floor(rnd() * 50_000));
  return trades.map(({ t, s }) => {
    cents[s] = Math.max(1, cents[s]! + Math.floor(rnd() * 21) - 10);
    const p = (cents[s]! / 100).toFixed(2);
    const v = 1 + Math.floor(rnd() * 500);
    return `{"s":"${wideSymbol(s)}","p":${p},"v":${v},"t":${t},"c":["1"]}`;
  });
}

/** Writes the tape as *.jsonl; returns its trade count. */
export function writeWideTape(path: string, o: WideTapeOptions): number {
  const lines = wideTapeLines(o);
  writeFileSync(path, `${lines.join('\n')}\n`);
  return lines.length;
}
