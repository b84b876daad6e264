/**
 * The check of the trade-condition table against QuantConnect Lean's own minute bars (the Lean set
 * in ../shared/data/real): Lean builds its minute bars from the same prints with condition and
 * suspicious-print filtering, so how many minutes match says how close a rule set comes to it.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { benchSettings } from './settings.js';
import { strFromU8, unzipSync } from 'fflate';
import { DateTime } from 'luxon';
import { BarCalendar, ConditionRules, parseInterval, volumeNumber, type Candle } from '@candlewick/core';
import { Preaggregator, type RawEntry } from '@candlewick/core';
import { isTapeTrade, readTapeFile } from '@candlewick/common';

/** Where the Lean set lives: LEAN_DATA_DIR, or ../shared/data/real/lean-usa-equity beside the repo. */
export const LEAN_DIR = benchSettings().LEAN_DATA_DIR;

export interface LeanDay {
  symbol: string;
  /** yyyymmdd */
  date: string;
  tick: string;
  minute: string;
}

/** The (tick, minute) file pairs of the Lean set, or [] when it is absent. */
export function leanDays(dir = LEAN_DIR): LeanDay[] {
  const ticks = join(dir, 'tick');
  if (!existsSync(ticks)) return [];
  const out: LeanDay[] = [];
  for (const f of readdirSync(ticks).sort()) {
    const m = /^([a-z0-9.]+)_(\d{8})_trade\.zip$/i.exec(f);
    const minute = join(dir, 'minute', f);
    if (m && existsSync(minute)) out.push({ symbol: m[1]!.toUpperCase(), date: m[2]!, tick: join(ticks, f), minute });
  }
  return out;
}

/** A minute bar as Lean and the comparison see it (a provider's candle shape). */
export type OhlcvRow = Candle;

/** Lean minute bars: ms since New York midnight (bar start), o, h, l, c (x 10,000), volume. */
export function readLeanMinutes(file: string): OhlcvRow[] {
  const m = /_(\d{4})(\d{2})(\d{2})_trade\.zip$/.exec(basename(file));
  if (!m) throw new Error(`${file}: Lean minute files are named <symbol>_<yyyymmdd>_trade.zip`);
  const midnight = DateTime.fromObject({ year: +m[1]!, month: +m[2]!, day: +m[3]! }, { zone: 'America/New_York' }).toMillis();
  const text = strFromU8(Object.values(unzipSync(readFileSync(file)))[0]!);
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const f = l.split(',').map(Number);
      return { start: midnight + f[0]!, open: f[1]! / 1e4, high: f[2]! / 1e4, low: f[3]! / 1e4, close: f[4]! / 1e4, volume: f[5]! };
    });
}

/** 1-minute bars of a tick file through the aggregator's own fold, with or without the condition table. */
export function minuteBars(tickFile: string, conditions: boolean): Map<number, OhlcvRow> {
  const trades = readTapeFile(tickFile).filter(isTapeTrade);
  const entries: RawEntry[] = trades.map((tr, i) => ({
    id: `1-${i}`,
    entry: `1-${i}`,
    s: tr.s,
    p: tr.p,
    v: tr.v,
    t: tr.t,
    w: 0,
    c: JSON.stringify(tr.c),
    rx: 0,
  }));
  const pre = new Preaggregator(new BarCalendar({ tz: 'America/New_York', intervals: [parseInterval('1min')] }), {
    conditions: conditions ? new ConditionRules() : undefined,
  });
  const out = new Map<number, OhlcvRow>();
  for (const [id, part] of pre.run(entries).bars) {
    const start = Number(id.slice(id.lastIndexOf('|') + 1));
    const st = part.state;
    out.set(start, { start, open: +st.open, high: +st.high, low: +st.low, close: +st.close, volume: volumeNumber(st.volume) });
  }
  return out;
}

export interface Agreement {
  minutes: number;
  ohlcv: number;
  volume: number;
  prices: number;
}

const near = (a: number, b: number) => Math.abs(a - b) < 1e-9;

/** How many of Lean's minutes a set of bars matches: all five fields, volume alone, the four prices. */
export function agreement(lean: readonly OhlcvRow[], ours: ReadonlyMap<number, OhlcvRow>): Agreement {
  const r: Agreement = { minutes: lean.length, ohlcv: 0, volume: 0, prices: 0 };
  for (const l of lean) {
    const o = ours.get(l.start);
    if (!o) continue;
    const prices = near(o.open, l.open) && near(o.high, l.high) && near(o.low, l.low) && near(o.close, l.close);
    const vol = near(o.volume, l.volume);
    if (prices) r.prices++;
    if (vol) r.volume++;
    if (prices && vol) r.ohlcv++;
  }
  return r;
}

export function addAgreement(a: Agreement, b: Agreement): Agreement {
  return { minutes: a.minutes + b.minutes, ohlcv: a.ohlcv + b.ohlcv, volume: a.volume + b.volume, prices: a.prices + b.prices };
}
