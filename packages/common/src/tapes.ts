import { readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { gunzipSync, inflateRawSync } from 'node:zlib';
import { Unzip, type AsyncFlateStreamHandler, type UnzipDecoder } from 'fflate';
import { DateTime } from 'luxon';
import { leanConditions } from '@candlewick/core';

/** A frame recorded verbatim (a *.frames tape): replayed as is, malformed or not. */
export interface RawFrame {
  raw: string;
}

/**
 * A line of a *.jsonl tape that is a JSON object but not a well-formed trade (a string price, a
 * missing time...): replayed verbatim inside a trade frame, so the ingestor rejects it alone, as it
 * would such a trade from the feed.
 */
export interface RawTrade {
  rawTrade: string;
  /** its symbol, when it has one (for subscription filtering) */
  s: string | undefined;
}

export type TapeItem = TapeTrade | RawFrame | RawTrade;

export function isRawFrame(x: TapeItem): x is RawFrame {
  return (x as RawFrame).raw !== undefined;
}

export function isRawTrade(x: TapeItem): x is RawTrade {
  return (x as RawTrade).rawTrade !== undefined;
}

export function isTapeTrade(x: TapeItem): x is TapeTrade {
  return !isRawFrame(x) && !isRawTrade(x);
}

/** The well-formed trades of a tape (raw frames and verbatim trades left out): what a test or a benchmark compares with. */
export function readTapeTrades(spec: string): TapeTrade[] {
  return readTape(spec).filter(isTapeTrade);
}

/** A tape that cannot be read at all (a missing file, an unknown format). */
export class TapeError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TapeError';
  }
}

/** One trade of a recorded tape, in the Finnhub protocol's terms. */
export interface TapeTrade {
  s: string;
  /** price text as recorded */
  p: string;
  v: number;
  t: number;
  c: string[];
  /** the feed's trade id, where the recording has one (Binance's aggregate trade id) */
  i?: string;
  /** the aggressor side, where the recording has it (Binance: s when the buyer was the maker) */
  a?: 'b' | 's';
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
export function readTape(spec: string, problems?: string[]): TapeItem[] {
  const files = tapeFiles(spec);
  if (files.length === 1 && /\.frames$/i.test(files[0]!)) {
    return readText(files[0]!)
      .split('\n')
      .filter((l) => l !== '')
      .map((raw) => ({ raw }));
  }
  const tapes = files.map((f) => readTapeFile(f, problems));
  if (tapes.length === 1) return tapes[0]!;
  // files are merged by time; a line kept verbatim has no time, so it goes with the file it came from
  return mergeByTime(tapes.map((t) => t.filter(isTapeTrade)));
}

/**
 * The files a tape names (a file, a comma list, a folder), each checked to exist and be of a
 * known format; a TapeError says which part is wrong.
 */
export function tapeFiles(spec: string): string[] {
  const files: string[] = [];
  for (const part of spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    let dir: boolean;
    try {
      dir = statSync(part).isDirectory();
    } catch (err) {
      throw new TapeError(`"${part}" cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { cause: err });
    }
    if (dir) {
      for (const f of readdirSync(part).sort()) if (TAPE_NAME.test(f)) files.push(join(part, f));
    } else files.push(part);
  }
  if (files.length === 0) throw new TapeError(`"${spec}" names no tape files (${TAPE_FORMATS})`);
  for (const f of files) if (!TAPE_NAME.test(basename(f))) throw new TapeError(`unknown tape format "${f}": use ${TAPE_FORMATS}`);
  return files;
}

const TAPE_NAME = /\.(jsonl|json)(\.gz)?$|\.frames$|_\d{8}_trade\.zip$/i;
const TAPE_FORMATS = '*.jsonl[.gz] ({s,p,v,t,c} per line), Binance aggTrades *.json[.gz], Lean *_yyyymmdd_trade.zip or *.frames';

/** Symbols present in a tape, in first-seen order. */
export function tapeSymbols(items: readonly TapeItem[]): string[] {
  const seen = new Set<string>();
  for (const it of items) if (isTapeTrade(it)) seen.add(it.s);
  return [...seen];
}

function readText(file: string): string {
  const buf = readFileSync(file);
  return (file.endsWith('.gz') ? gunzipSync(buf) : buf).toString('utf8');
}

/**
 * One tape file. A line that cannot be a trade at all (not JSON, not an object) is left out and
 * described in `problems` (file and line); without `problems` it is a TapeError.
 */
export function readTapeFile(file: string, problems?: string[]): TapeItem[] {
  const name = basename(file).toLowerCase();
  try {
    if (name.endsWith('.zip')) return readLeanZip(file);
    if (/\.jsonl(\.gz)?$/.test(name)) return readJsonl(file, problems);
    if (/\.json(\.gz)?$/.test(name)) return readBinanceAggTrades(file);
  } catch (err) {
    if (err instanceof TapeError) throw err;
    throw new TapeError(`${file}: ${(err as Error).message}`, { cause: err });
  }
  throw new TapeError(`unknown tape format "${file}": use ${TAPE_FORMATS}`);
}

/** Finnhub's prices and sizes are JSON numbers; anything else is replayed as it is, for the ingestor to judge. */
const isNumberish = (x: unknown): boolean => typeof x === 'number' || (typeof x === 'string' && /^\d+(\.\d+)?$/.test(x));

function readJsonl(file: string, problems?: string[]): TapeItem[] {
  const out: TapeItem[] = [];
  const lines = readText(file).split('\n');
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    let r: unknown;
    try {
      r = JSON.parse(line);
    } catch (err) {
      const problem = `${file}:${i + 1}: not JSON (${(err as Error).message}); line left out`;
      if (!problems) throw new TapeError(problem);
      problems.push(problem);
      return;
    }
    if (r === null || typeof r !== 'object' || Array.isArray(r)) {
      const problem = `${file}:${i + 1}: not a {s,p,v,t,c} trade object; line left out`;
      if (!problems) throw new TapeError(problem);
      problems.push(problem);
      return;
    }
    const t = r as { s?: unknown; p?: unknown; v?: unknown; t?: unknown; c?: unknown };
    if (
      typeof t.s === 'string' &&
      Number.isSafeInteger(t.t) &&
      isNumberish(t.p) &&
      isNumberish(t.v) &&
      Number.isFinite(Number(t.v)) &&
      (t.c === undefined || Array.isArray(t.c))
    ) {
      // a volume written as a plain decimal string ("v":"100") is read as its number, as validation reads it
      out.push({ s: t.s, p: String(t.p), v: Number(t.v), t: t.t as number, c: ((t.c as unknown[] | undefined) ?? []).map(String) });
    } else {
      out.push({ rawTrade: line.trim(), s: typeof t.s === 'string' ? t.s : undefined });
    }
  });
  // objects, but not one of them a trade (klines, metadata, another program's log): not a tape, as
  // a *.json file that is not aggTrades is not; its objects are never replayed as bad trades
  const first = out.find(isRawTrade);
  if (first && !out.some(isTapeTrade))
    throw new TapeError(
      `${file}: not a tape: no line is a trade (line ${lines.findIndex((l) => l.trim() === first.rawTrade) + 1} is ${first.rawTrade.slice(0, 80)}), expected ${JSONL_TRADE}`,
    );
  return out;
}

const JSONL_TRADE = 'one trade per line, {"s": symbol, "p": price, "v": volume, "t": ms since the epoch, "c": [conditions] (optional)}';

interface CcxtTrade {
  symbol: string;
  info: { p: string; q: string; T: number; a?: number; m?: boolean };
}

const AGG_TRADES = 'a JSON array of Binance aggTrades as ccxt records ({symbol, info: {p, q, T}})';

function readBinanceAggTrades(file: string): TapeTrade[] {
  const rows = JSON.parse(readText(file)) as unknown;
  if (!Array.isArray(rows)) throw new TapeError(`${file}: not a tape: expected ${AGG_TRADES}`);
  // anything else in a *.json file (klines, metadata) is refused by name, never read as trades
  rows.forEach((r: unknown, i) => {
    const x = r as Partial<CcxtTrade> | null;
    const info = x?.info as Partial<CcxtTrade['info']> | undefined;
    if (
      x === null ||
      typeof x !== 'object' ||
      typeof x.symbol !== 'string' ||
      typeof info !== 'object' ||
      info === null ||
      typeof info.p !== 'string' ||
      !/^\d+(\.\d+)?$/.test(info.p) ||
      !/^\d+(\.\d+)?$/.test(String(info.q)) ||
      !Number.isSafeInteger(info.T)
    )
      throw new TapeError(`${file}: not a tape: element ${i + 1} is ${JSON.stringify(r)?.slice(0, 80)}, expected ${AGG_TRADES}`);
  });
  return (rows as CcxtTrade[]).map((r) => ({
    s: `BINANCE:${r.symbol.replace('/', '')}`,
    p: r.info.p.replace(/(\.\d*?)0+$/, '$1').replace(/\.$/, ''),
    v: Number(r.info.q),
    t: r.info.T,
    c: [],
    ...(Number.isSafeInteger(r.info.a) ? { i: String(r.info.a) } : {}),
    ...(typeof r.info.m === 'boolean' ? { a: r.info.m ? ('s' as const) : ('b' as const) } : {}),
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

/**
 * Deflate inside a zip inflated by Node's zlib, through fflate's decoder hook: native code takes a
 * fifth of the time of fflate's own inflate on a Lean day, which was a sixth of `candlewick bars`.
 */
class NativeInflate implements UnzipDecoder {
  static compression = 8;
  ondata: AsyncFlateStreamHandler = () => undefined;
  private readonly parts: Uint8Array[] = [];

  push(data: Uint8Array, final: boolean): void {
    this.parts.push(data);
    if (final) this.ondata(null, new Uint8Array(inflateRawSync(Buffer.concat(this.parts))), true);
  }
}

/** The files of a zip, name -> contents, in the zip's order. */
function unzipFiles(zip: Uint8Array): [string, Buffer][] {
  const files: [string, Buffer][] = [];
  const unzip = new Unzip((file) => {
    const parts: Uint8Array[] = [];
    file.ondata = (err, data, final) => {
      if (err) throw err;
      parts.push(data);
      if (final) files.push([file.name, Buffer.concat(parts)]);
    };
    file.start();
  });
  unzip.register(NativeInflate);
  unzip.push(zip, true);
  return files;
}

function readLeanZip(file: string): TapeTrade[] {
  const m = /^([a-z0-9.]+)_(\d{4})(\d{2})(\d{2})_trade\.zip$/i.exec(basename(file));
  if (!m) throw new Error(`${file}: Lean tick files are named <symbol>_<yyyymmdd>_trade.zip`);
  const symbol = m[1]!.toUpperCase();
  const midnight = DateTime.fromObject(
    { year: Number(m[2]), month: Number(m[3]), day: Number(m[4]) },
    { zone: 'America/New_York' },
  ).toMillis();
  const [name, csv] = unzipFiles(readFileSync(file))[0] ?? [];
  if (!csv) throw new Error(`${file}: empty zip`);
  // Lean keeps minute, second and hour trade bars in zips of the same name: only tick files are trades
  if (!/_trade_tick\.csv$/i.test(name!))
    throw new TapeError(
      `${file}: not a tape: it holds ${name}, expected Lean tick trades (<date>_<symbol>_Trade_Tick.csv: ms, price × 10000, quantity, exchange, condition, suspicious); Lean's minute or second bars are not trades`,
    );
  const text = csv.toString('utf8');
  const out: TapeTrade[] = [];
  let pos = 0;
  let lineNo = 0;
  while (pos < text.length) {
    lineNo++;
    let nl = text.indexOf('\n', pos);
    if (nl < 0) nl = text.length;
    const from = pos;
    pos = nl + 1;
    if (nl - from < 3) continue;
    // the fields by their commas, with no line or array made for them: a day is millions of fields
    const c1 = text.indexOf(',', from);
    const c2 = c1 < 0 ? -1 : text.indexOf(',', c1 + 1);
    const c3 = c2 < 0 ? -1 : text.indexOf(',', c2 + 1);
    const c4 = c3 < 0 ? -1 : text.indexOf(',', c3 + 1);
    if (out.length === 0 || c4 < 0 || c4 >= nl) {
      out.push(leanLine(file, lineNo, text.slice(from, nl), symbol, midnight, out.length === 0));
      continue;
    }
    let c5 = text.indexOf(',', c4 + 1);
    if (c5 < 0 || c5 > nl) c5 = nl;
    // ms since local midnight, price x 10000, quantity, exchange, sale condition, suspicious
    out.push({
      s: symbol,
      p: String(Number(text.slice(c1 + 1, c2)) / 10000),
      v: Number(text.slice(c2 + 1, c3)),
      t: midnight + Number(text.slice(from, c1)),
      c: conditionsOf(text.slice(c4 + 1, c5).trim(), c5 < nl && text.slice(c5 + 1, nl).trim() === '1'),
    });
  }
  return out;
}

/**
 * One Lean tick line read by splitting it: the first of a file, whose shape is checked (the
 * entry's name already said what the file is: not every row is checked, for speed), and any line
 * short of five fields.
 */
function leanLine(file: string, lineNo: number, line: string, symbol: string, midnight: number, first: boolean): TapeTrade {
  const f = line.split(',');
  if (first && (f.length < 5 || !/^\d+$/.test(f[0]!) || !/^\d+(\.\d+)?$/.test(f[1]!) || /^[\d.]*$/.test(f[3]!)))
    throw new TapeError(
      `${file}: line ${lineNo} is not a Lean tick trade (ms, price × 10000, quantity, exchange, condition, suspicious): ${line.slice(0, 80)}`,
    );
  return {
    s: symbol,
    p: String(Number(f[1]) / 10000),
    v: Number(f[2]),
    t: midnight + Number(f[0]),
    c: conditionsOf(f[4]!.trim(), f[5]?.trim() === '1'),
  };
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
