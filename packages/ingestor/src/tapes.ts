import { readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { unzipSync, strFromU8 } from 'fflate';
import { DateTime } from 'luxon';
import { leanConditions } from '@candlewick/common';

/** A frame recorded verbatim (a *.frames tape): replayed as is, malformed or not. */
export interface RawFrame {
  raw: string;
}

export type TapeItem = TapeTrade | RawFrame;

export function isRawFrame(x: TapeItem): x is RawFrame {
  return (x as RawFrame).raw !== undefined;
}

/** One trade of a recorded tape, in the Finnhub protocol's terms. */
export interface TapeTrade {
  s: string;
  /** price text as recorded */
  p: string;
  v: number;
  t: number;
  c: string[];
}

/**
 * Reads a tape: a file, a comma-separated list of files, or a folder of files. Formats, by name:
 *  - *.jsonl[.gz]: one {s,p,v,t,c} object per line, in arrival order
 *  - *.json[.gz]: Binance aggTrades as ccxt records (XRP_OLD-trades.json), symbol BINANCE:<BASEQUOTE>
 *  - *.frames: raw WebSocket frames, one per line, replayed verbatim (for tests of bad input)
 *  - *_yyyymmdd_trade.zip: QuantConnect Lean tick trades (several files are merged by time, file
 *    order breaking ties)
 * The trades come back in arrival order.
 */
export function readTape(spec: string): TapeItem[] {
  const files: string[] = [];
  for (const part of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    if (statSync(part).isDirectory()) {
      for (const f of readdirSync(part).sort()) files.push(join(part, f));
    } else files.push(part);
  }
  if (files.length === 0) throw new Error(`tape "${spec}" names no files`);
  if (files.length === 1 && /\.frames$/i.test(files[0]!)) {
    return readText(files[0]!).split('\n').filter((l) => l !== '').map((raw) => ({ raw }));
  }
  const tapes = files.map(readTapeFile);
  return tapes.length === 1 ? tapes[0]! : mergeByTime(tapes);
}

/** Symbols present in a tape, in first-seen order. */
export function tapeSymbols(items: readonly TapeItem[]): string[] {
  const seen = new Set<string>();
  for (const it of items) if (!isRawFrame(it)) seen.add(it.s);
  return [...seen];
}

function readText(file: string): string {
  const buf = readFileSync(file);
  return (file.endsWith('.gz') ? gunzipSync(buf) : buf).toString('utf8');
}

export function readTapeFile(file: string): TapeTrade[] {
  const name = basename(file).toLowerCase();
  if (name.endsWith('.zip')) return readLeanZip(file);
  if (/\.jsonl(\.gz)?$/.test(name)) return readJsonl(file);
  if (/\.json(\.gz)?$/.test(name)) return readBinanceAggTrades(file);
  throw new Error(`unknown tape format "${file}": use .jsonl, Binance aggTrades .json, or Lean *_trade.zip`);
}

function readJsonl(file: string): TapeTrade[] {
  const out: TapeTrade[] = [];
  const lines = readText(file).split('\n');
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    const r = JSON.parse(line) as { s: string; p: number | string; v: number; t: number; c?: string[] };
    if (typeof r.s !== 'string' || typeof r.t !== 'number') throw new Error(`${file}:${i + 1}: not a {s,p,v,t,c} trade`);
    out.push({ s: r.s, p: String(r.p), v: Number(r.v), t: r.t, c: r.c ?? [] });
  });
  return out;
}

interface CcxtTrade {
  symbol: string;
  info: { p: string; q: string; T: number };
}

function readBinanceAggTrades(file: string): TapeTrade[] {
  const rows = JSON.parse(readText(file)) as CcxtTrade[];
  if (!Array.isArray(rows)) throw new Error(`${file}: expected a JSON array of Binance aggTrades`);
  return rows.map((r) => ({
    s: `BINANCE:${r.symbol.replace('/', '')}`,
    p: r.info.p.replace(/(\.\d*?)0+$/, '$1').replace(/\.$/, ''),
    v: Number(r.info.q),
    t: r.info.T,
    c: [],
  }));
}

/** Lean's sale-condition word as condition names (cached: a day has a few dozen distinct words). */
const leanNames = new Map<string, string[]>();
function conditionsOf(word: string, suspicious: boolean): string[] {
  const key = suspicious ? `${word}!` : word;
  let names = leanNames.get(key);
  if (names === undefined) {
    names = [...leanConditions(word), ...(suspicious ? ['Suspicious'] : [])];
    leanNames.set(key, names);
  }
  return names;
}

function readLeanZip(file: string): TapeTrade[] {
  const m = /^([a-z0-9.]+)_(\d{4})(\d{2})(\d{2})_trade\.zip$/i.exec(basename(file));
  if (!m) throw new Error(`${file}: Lean tick files are named <symbol>_<yyyymmdd>_trade.zip`);
  const symbol = m[1]!.toUpperCase();
  const midnight = DateTime.fromObject(
    { year: Number(m[2]), month: Number(m[3]), day: Number(m[4]) },
    { zone: 'America/New_York' },
  ).toMillis();
  const entries = unzipSync(readFileSync(file));
  const csv = Object.values(entries)[0];
  if (!csv) throw new Error(`${file}: empty zip`);
  const text = strFromU8(csv);
  const out: TapeTrade[] = [];
  let pos = 0;
  while (pos < text.length) {
    let nl = text.indexOf('\n', pos);
    if (nl < 0) nl = text.length;
    const line = text.slice(pos, nl);
    pos = nl + 1;
    if (line.length < 3) continue;
    const f = line.split(',');
    // ms since local midnight, price x 10000, quantity, exchange, sale condition, suspicious
    out.push({
      s: symbol,
      p: String(Number(f[1]) / 10000),
      v: Number(f[2]),
      t: midnight + Number(f[0]),
      c: conditionsOf(f[4]!.trim(), f[5]?.trim() === '1'),
    });
  }
  return out;
}

/** k-way merge by event time; ties go to the earlier file, then file order. */
function mergeByTime(tapes: TapeTrade[][]): TapeTrade[] {
  const idx = tapes.map(() => 0);
  const total = tapes.reduce((n, t) => n + t.length, 0);
  const out: TapeTrade[] = new Array(total);
  for (let k = 0; k < total; k++) {
    let best = -1;
    let bestT = Infinity;
    for (let i = 0; i < tapes.length; i++) {
      const tr = tapes[i]![idx[i]!];
      if (tr && tr.t < bestT) {
        best = i;
        bestT = tr.t;
      }
    }
    out[k] = tapes[best]![idx[best]!++]!;
  }
  return out;
}
