import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { alpacaConditions, alpacaSubMs, alpacaTime } from '@candlewick/core';
import { readTapeTrades, type TapeTrade } from '@candlewick/common';

/**
 * The recipe of an Alpaca-protocol tape with corrections and cancels, built from a recorded day
 * (docs/feeds.md, "Corrections and cancels"), and the trades that tape amounts to once they are
 * applied — what `candlewick bars` folds into the bars the pipeline must write.
 *
 * Trade k of the day (from 1) goes out as {"T":"t","S","i":k,"x":"N","p","s","t","c"} (exchange N,
 * so candlewick carries it as `N:k`), 20 messages a frame. Then, in message order:
 *  - every 97th trade is cancelled ({"T":"x","i":k,...});
 *  - every 131st (not cancelled) is corrected: price × 1.005 to the cent, size + 100, corrected id
 *    k + 10,000,000 ({"T":"c","oi":k,"ci":...});
 *  - every 1,009th (neither) is corrected, and 50 trades later that correction is cancelled (a
 *    cancel naming the corrected id);
 *  - each amend goes out 0, 10, 300 or 4,000 trades after its trade (by turns), so some find their
 *    bars still open and some closed long before;
 *  - at the end, a cancel of a trade the day never had (i = 99,999,999), which finds nothing.
 * Every amend's `t` is its trade's time, as Alpaca's are.
 */
export interface AmendedTape {
  /** the tape's frames, one JSON array per line (a *.frames tape) */
  frames: string[];
  /** the day's trades with the amends applied, in arrival order */
  corrected: TapeTrade[];
  cancels: number;
  corrections: number;
}

const DELAYS = [0, 10, 300, 4000];
const PER_FRAME = 20;
/** the corrected trade's id: the original's plus this */
export const CORRECTED_ID = 10_000_000;
/** the id of a trade the day never had, cancelled at the end */
export const UNKNOWN_ID = 99_999_999;

export function amendedAlpacaTape(trades: readonly TapeTrade[]): AmendedTape {
  const time = (k: number) => alpacaTime(trades[k - 1]!.t, alpacaSubMs(k));
  const message = (k: number) => {
    const tr = trades[k - 1]!;
    const c = alpacaConditions(tr.c);
    return { T: 't', S: tr.s, i: k, x: 'N', p: Number(tr.p), s: tr.v, t: time(k), ...(c.length ? { c } : {}) };
  };
  const corrected = (k: number) => {
    const tr = trades[k - 1]!;
    return { p: Math.round(Number(tr.p) * 100.5) / 100, s: tr.v + 100 };
  };
  /** messages to send after trade j */
  const after = new Map<number, object[]>();
  const later = (j: number, m: object) => {
    const at = Math.min(j, trades.length);
    after.set(at, [...(after.get(at) ?? []), m]);
  };
  /** per trade: removed, or replaced by */
  const fate = new Map<number, 'cancel' | { p: number; s: number }>();
  let cancels = 0;
  let corrections = 0;
  let turn = 0;
  for (let k = 1; k <= trades.length; k++) {
    const tr = trades[k - 1]!;
    const delay = () => DELAYS[turn++ % DELAYS.length]!;
    const c = alpacaConditions(tr.c);
    if (k % 97 === 0) {
      later(k + delay(), { T: 'x', S: tr.s, i: k, x: 'N', p: Number(tr.p), s: tr.v, a: 'C', z: 'A', t: time(k) });
      fate.set(k, 'cancel');
      cancels++;
    } else if (k % 131 === 0 || k % 1009 === 0) {
      const to = corrected(k);
      const d = delay();
      later(k + d, {
        T: 'c',
        S: tr.s,
        x: 'N',
        oi: k,
        op: Number(tr.p),
        os: tr.v,
        oc: c,
        ci: k + CORRECTED_ID,
        cp: to.p,
        cs: to.s,
        cc: c,
        z: 'A',
        t: time(k),
      });
      corrections++;
      fate.set(k, to);
      if (k % 1009 === 0 && k % 131 !== 0) {
        later(k + d + 50, { T: 'x', S: tr.s, i: k + CORRECTED_ID, x: 'N', p: to.p, s: to.s, a: 'C', z: 'A', t: time(k) });
        fate.set(k, 'cancel');
        cancels++;
      }
    }
  }
  const last = trades[trades.length - 1]!;
  later(trades.length, { T: 'x', S: last.s, i: UNKNOWN_ID, x: 'N', p: Number(last.p), s: 1, a: 'C', z: 'A', t: time(trades.length) });
  cancels++;

  const frames: string[] = [];
  let frame: object[] = [];
  for (let k = 1; k <= trades.length; k++) {
    frame.push(message(k));
    for (const m of after.get(k) ?? []) frame.push(m);
    if (frame.length >= PER_FRAME || k === trades.length) {
      frames.push(JSON.stringify(frame));
      frame = [];
    }
  }
  const out: TapeTrade[] = [];
  trades.forEach((tr, n) => {
    const f = fate.get(n + 1);
    if (f === 'cancel') return;
    // the price as a JSON number, read back: the text the pipeline keeps
    out.push({ ...tr, p: String(f ? f.p : Number(tr.p)), v: f ? f.s : tr.v });
  });
  return { frames, corrected: out, cancels, corrections };
}

/** Writes `alpaca-amended.frames` and `corrected.jsonl` for a tape into `dir`; their paths. */
export function writeAmendedTape(tape: string, dir: string): { frames: string; corrected: string; tape: AmendedTape } {
  mkdirSync(dir, { recursive: true });
  const t = amendedAlpacaTape(readTapeTrades(tape));
  const frames = join(dir, 'alpaca-amended.frames');
  const corrected = join(dir, 'corrected.jsonl');
  writeFileSync(frames, `${t.frames.join('\n')}\n`);
  writeFileSync(corrected, `${t.corrected.map((tr) => JSON.stringify({ s: tr.s, p: tr.p, v: tr.v, t: tr.t, c: tr.c })).join('\n')}\n`);
  return { frames, corrected, tape: t };
}

// npx tsx test/amend-tape.ts OUT_DIR [TAPE]: the recipe applied to the bundled AIG day (or TAPE)
if (process.argv[1]?.endsWith('amend-tape.ts')) {
  const [dir, tape] = process.argv.slice(2);
  if (!dir) {
    console.error('usage: npx tsx test/amend-tape.ts OUT_DIR [TAPE]   (TAPE: the bundled AIG day by default)');
    process.exit(2);
  }
  const {
    frames,
    corrected,
    tape: t,
  } = writeAmendedTape(tape ?? new URL('../tapes/lean-aig-20131010/tick/aig_20131010_trade.zip', import.meta.url).pathname, dir);
  console.log(`${frames}: ${t.frames.length} frames, ${t.cancels} cancels, ${t.corrections} corrections`);
  console.log(`${corrected}: ${t.corrected.length} trades, the amends applied`);
}
