import {
  closeSync,
  existsSync,
  fstatSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  statSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { stringify } from 'csv-stringify/sync';
import { DateTime } from 'luxon';
import { BAR_FLAGS, barSources, eventLabel, formatNumber, volumeNumber, vwap, type BarState, type Clock } from '@candlewick/core';
import { fileSafeSymbol } from './keys.js';
import { SymbolFileClashError } from './errors.js';
import type { BarRowCells } from './entries.js';
import { AppendError, appendText, type AppendDone, type PlannedAppend } from './append.js';

export const CSV_HEADER = ['timestamp', 'open', 'high', 'low', 'close', 'vwap', 'volume', 'num_transactions'] as const;
/** CSV_EXTRA_COLUMNS=true adds these after the notebook's columns. */
export const CSV_EXTRA_HEADER = ['complete', 'sources'] as const;

export function csvPath(dataDir: string, interval: string, symbol: string): string {
  return join(dataDir, 'raw', interval, `${fileSafeSymbol(symbol)}_${interval}.csv`);
}

/**
 * Bars left incomplete by Redis losing candlewick's data (BAR_FLAGS.LOST), beside the bar file in
 * the default format (without CSV_EXTRA_COLUMNS nothing in a row says it is incomplete): the same
 * header and columns, so the bar file holds whole bars only and nothing is thrown away.
 */
export function incompletePath(dataDir: string, interval: string, symbol: string): string {
  return join(dataDir, 'raw', interval, `${fileSafeSymbol(symbol)}_${interval}.incomplete.csv`);
}

/** Which file of a bar a row goes to: the bar file, or its `.incomplete.csv` beside it. */
export type BarFile = 'bars' | 'incomplete';

/** Corrections of bars by late trades (LATE=amend), beside the main file. */
export function correctionsPath(dataDir: string, interval: string, symbol: string): string {
  return join(dataDir, 'raw', interval, `${fileSafeSymbol(symbol)}_${interval}.corrections.csv`);
}

/**
 * VWAP and num_transactions as written: empty where unknown, i.e. no volume (VWAP), or part of the
 * bar from candles without them (APPROXIMATE): never made up.
 */
export function barCells(b: BarState): { vwap: string; trades: string } {
  if ((b.flags ?? 0) & BAR_FLAGS.APPROXIMATE) return { vwap: '', trades: '' };
  const v = vwap(b);
  return { vwap: Number.isNaN(v) ? '' : formatNumber(v), trades: String(b.trades) };
}

/**
 * The cells of a row, as written: the bar's label (its start in BAR_TZ with its offset, or for a
 * daily bar its date), prices as received, VWAP, volume, count.
 */
export function rowCells(clock: Clock, start: number, b: BarState, day = false): BarRowCells {
  const { vwap: vw, trades } = barCells(b);
  const flags = b.flags ?? 0;
  return {
    timestamp: clock.labelOf(start, day),
    open: b.open,
    high: b.high,
    low: b.low,
    close: b.close,
    vwap: vw,
    volume: formatNumber(volumeNumber(b.volume)),
    trades,
    complete: (flags & BAR_FLAGS.INCOMPLETE) === 0,
    sources: barSources(flags),
    ...(flags & BAR_FLAGS.LOST ? { lost: true } : {}),
  };
}

/** a cell csv-stringify would quote (a delimiter, a quote, a line break) */
const NEEDS_QUOTES = /[",\r\n]/;

export function formatRow(c: BarRowCells, extraColumns = false): string {
  const row: string[] = [c.timestamp, c.open, c.high, c.low, c.close, c.vwap, c.volume, c.trades];
  if (extraColumns) row.push(c.complete ? 'true' : 'false', c.sources);
  // A bar's cells are numbers and a label: joined as they are, which is what csv-stringify writes
  // for them, at a small part of its cost per row (tens of thousands of rows close at once on a
  // wide market). Anything it would quote goes through it.
  return row.some((cell) => NEEDS_QUOTES.test(cell)) ? stringify([row]) : `${row.join(',')}\n`;
}

export function csvRow(clock: Clock, start: number, b: BarState, extraColumns = false, day = false): string {
  return formatRow(rowCells(clock, start, b, day), extraColumns);
}

/** An activity bar's file (docs/activity-bars.md): its number, its first and last trade's times, then a time bar's columns. */
export const ACTIVITY_CSV_HEADER = ['bar', 'start', 'end', 'open', 'high', 'low', 'close', 'vwap', 'volume', 'num_transactions'] as const;

/** An activity bar's row, as `candlewick bars` and the writer both write it. */
export function activityRow(clock: Clock, bar: { seq: number; start: number; end: number; state: BarState }): string {
  const { vwap, trades } = barCells(bar.state);
  const b = bar.state;
  const row = [String(bar.seq), eventLabel(bar.start, clock), eventLabel(bar.end, clock), b.open, b.high, b.low, b.close, vwap];
  row.push(formatNumber(volumeNumber(b.volume)), trades);
  return row.some((cell) => NEEDS_QUOTES.test(cell)) ? stringify([row]) : `${row.join(',')}\n`;
}

/** The number of the last activity bar in a file (its last row's first cell), or 0 without rows. */
export function lastActivityBar(path: string): number {
  if (!existsSync(path)) return 0;
  const lines = readTail(path, 4096)
    .split('\n')
    .filter((l) => l.trim() !== '');
  const last = lines[lines.length - 1];
  if (!last || last.startsWith('bar,')) return 0;
  const n = Number(last.slice(0, last.indexOf(',')));
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${path}: its last row does not begin with a bar number`);
  return n;
}

/** Start (UTC ms) of the last row of a CSV file, or undefined when it has no data rows. */
export function lastRowStart(path: string): number | undefined {
  return lastRow(path)?.start;
}

/** Start (UTC ms) and close (as written) of the last row of a CSV file; throws on a row that is not one. */
export function lastRow(path: string): { start: number; close: string } | undefined {
  if (!existsSync(path)) return undefined;
  const tail = readTail(path, 4096);
  const lines = tail.split('\n').filter((l) => l.trim() !== '');
  const last = lines[lines.length - 1];
  if (!last || last.startsWith('timestamp')) return undefined;
  const row = parseRowStart(last);
  if (row === undefined) throw new Error(`${path}: last row does not start with an ISO timestamp`);
  return row;
}

function readTail(path: string, bytes: number): string {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const len = Math.min(size, bytes);
    const buf = Buffer.alloc(len);
    readSync(fd, buf, 0, len, size - len);
    return buf.toString('utf8');
  } finally {
    closeSync(fd);
  }
}

function parseRowStart(line: string): { start: number; close: string } | undefined {
  const comma = line.indexOf(',');
  if (comma < 0) return undefined;
  const ts = DateTime.fromISO(line.slice(0, comma), { setZone: true });
  if (!ts.isValid) return undefined;
  return { start: ts.toMillis(), close: line.split(',')[4] ?? '' };
}

/** What the writer noticed about a file and did about it: the writer logs and counts each. */
export type FileEvent =
  /** a last row without its newline (a process killed mid-write): cut back to the last whole row */
  | { kind: 'cut-partial-row'; path: string; bytes: number }
  /** a file that cannot be read back (a damaged last row, another header): renamed, a new one started */
  | { kind: 'set-aside'; path: string; asidePath: string; reason: string }
  /** rows after `after` up to `through` went missing from the end of a file while the writer ran */
  | { kind: 'rows-missing'; path: string; interval: string; symbol: string; after: number | undefined; through: number };

/** A file changed under the writer between its last check and an append: check it again (verify) first. */
export class FileChangedError extends Error {
  constructor(readonly path: string) {
    super(`${path} changed while the writer was about to append to it`);
    this.name = 'FileChangedError';
  }
}

interface FileState {
  /** start and close of the last row (undefined: no data rows) */
  last: { start: number; close: string } | undefined;
  /** the file's size and inode as the writer left it: anything else means someone else changed it */
  size: number;
  ino: number;
}

/**
 * Appends bars to per-(interval, symbol) CSV files, never a row that is not newer than the file's
 * last row, so a retried or re-enqueued bar is written once. The file is the source of truth: the
 * last row is read back from it when a file is first touched, and again whenever its size or
 * inode is not what this writer left.
 *
 * A row is written whole or not at all: a failed append (a full disk) is cut back to where it
 * started before the error goes to the caller, and a new file gets its header in the same write
 * as its first row, so a retry never finds half a row or a file without its header. A file that
 * cannot be read back (its last row is not a row, its header is not this configuration's) is
 * renamed aside and a new one started, so one damaged file never stops the others.
 */
export class CsvFiles {
  private readonly state = new Map<string, FileState>();
  /**
   * file (case folded) -> the one symbol whose bars it holds: file names are file-safe symbols, so
   * two could meet, and on a filesystem that ignores case (macOS's, Windows' by default) aapl's and
   * AAPL's would be one file
   */
  private readonly owners = new Map<string, string>();
  /** buffered mode: rows held per file until flush() */
  private readonly pending: Map<string, { f: FileState; text: string }> | undefined;
  /** corrections file -> "start#rev" already in it */
  private readonly revisions = new Map<string, Set<string>>();
  private readonly header: string;
  private readonly headerCells: string[];

  constructor(
    private readonly dataDir: string,
    private readonly clock: Clock,
    private readonly extraColumns = false,
    private readonly onEvent: (e: FileEvent) => void = () => undefined,
    /** the daily intervals (1d): their rows are labelled with the date */
    private readonly days: ReadonlySet<string> = new Set(),
    /**
     * hold appended rows until flush(), then write each file's in one append (one process folding a
     * whole tape: a write per file per step rather than per row)
     */
    buffered = false,
  ) {
    this.pending = buffered ? new Map() : undefined;
    this.headerCells = extraColumns ? [...CSV_HEADER, ...CSV_EXTRA_HEADER] : [...CSV_HEADER];
    this.header = stringify([this.headerCells]);
  }

  /** interval -> symbol -> its file (csvPath, worked out once: a whole market's boundary asks for tens of thousands) */
  private readonly paths = new Map<string, Map<string, string>>();

  private pathOf(interval: string, symbol: string, file: BarFile = 'bars'): string {
    if (file === 'incomplete') return incompletePath(this.dataDir, interval, symbol);
    let bySymbol = this.paths.get(interval);
    if (!bySymbol) this.paths.set(interval, (bySymbol = new Map()));
    let path = bySymbol.get(symbol);
    if (path === undefined) bySymbol.set(symbol, (path = csvPath(this.dataDir, interval, symbol)));
    return path;
  }

  get columns(): { extra: boolean } {
    return { extra: this.extraColumns };
  }

  /** 'written' | 'present' (this very bar is the file's last row) | 'stale' (an older bar) */
  append(interval: string, symbol: string, start: number, state: BarState): 'written' | 'present' | 'stale' {
    return this.appendRow(
      interval,
      symbol,
      start,
      csvRow(this.clock, start, state, this.extraColumns, this.days.has(interval)),
      state.close,
    );
  }

  /**
   * Appends a row already formatted (a row restored from bars:{interval}) to the bar's file, or
   * (`file` 'incomplete') to the `.incomplete.csv` beside it: each is kept in order and written once
   * by its own last row, as the bar file is.
   */
  appendRow(
    interval: string,
    symbol: string,
    start: number,
    text: string,
    close: string,
    file: BarFile = 'bars',
  ): 'written' | 'present' | 'stale' {
    if (file === 'incomplete') {
      // a bar the bar file already has, or is past, is not news: the trades an ingestor sent again
      // after Redis lost the data open bars it had written whole before
      const written = this.fileState(this.pathOf(interval, symbol), interval, symbol).last;
      if (written !== undefined && start <= written.start) return 'stale';
    }
    const path = this.pathOf(interval, symbol, file);
    const f = this.fileState(path, interval, symbol);
    if (f.last !== undefined && start <= f.last.start) {
      // judged by the last row as this writer left it: only once the file is found as it was
      // (an append checks that itself, in the same open)
      if (!this.pending && this.changed(path, f)) {
        this.verifyFile(path, interval, symbol, file);
        throw new FileChangedError(path);
      }
      return start === f.last.start ? 'present' : 'stale';
    }
    if (this.pending) {
      const held = this.pending.get(path);
      if (held) held.text += text;
      else this.pending.set(path, { f, text: f.size === 0 ? this.header + text : text });
      f.last = { start, close: close !== '' ? close : (f.last?.close ?? '') };
      return 'written';
    }
    if (f.size === 0) text = this.header + text;
    if (!this.write(path, f, text)) {
      // someone else changed the file since it was last checked: check it now (rows cut from its
      // end are reported), and let the caller restore what is missing before it appends again
      this.verifyFile(path, interval, symbol, file);
      throw new FileChangedError(path);
    }
    // A bar of volume-only prints (CONDITIONS=cta-utp) has no close: carry keeps the one before.
    f.last = { start, close: close !== '' ? close : (f.last?.close ?? '') };
    return 'written';
  }

  /**
   * Makes a bar's file ready before its first row: created with its header, so the row's append
   * finds it there. Creating a file costs tens of times an append to one (a new inode and directory
   * entry: 0.4 ms each on a busy two-core machine), and a whole market's boundary would otherwise
   * create 8,000 files at once in the writer's path; made ready while the bars are still open, only
   * the appends are left for the boundary. A file already known, or already holding rows, is left
   * as it is. Returns whether it created one.
   */
  prepare(interval: string, symbol: string): boolean {
    const path = this.pathOf(interval, symbol);
    if (this.state.has(path) || this.pending) return false;
    const f = this.fileState(path, interval, symbol);
    if (f.size !== 0) return false;
    // the header alone is a whole file: the first row's append then adds no header
    return this.write(path, f, this.header);
  }

  /** Buffered mode: writes every file's held rows, one append each (whole, or cut back and thrown). */
  flush(): void {
    if (!this.pending) return;
    for (const [path, held] of this.pending) {
      if (!this.write(path, held.f, held.text)) throw new FileChangedError(path);
      this.pending.delete(path);
    }
  }

  /**
   * The last bar written of an (interval, symbol): the bar file's last row, or its
   * `.incomplete.csv`'s where that is later (read from the files the first time).
   */
  lastOf(interval: string, symbol: string): { start: number; close: string } | undefined {
    const last = this.fileState(this.pathOf(interval, symbol), interval, symbol).last;
    if (this.extraColumns) return last;
    const aside = this.fileState(this.pathOf(interval, symbol, 'incomplete'), interval, symbol).last;
    return aside !== undefined && (last === undefined || aside.start > last.start) ? aside : last;
  }

  /**
   * Checks a file against what this writer left (size and inode): a file changed by someone else
   * is read back again — and rows that went missing from its end are reported (`rows-missing`),
   * for the writer to restore before it appends anything after them.
   */
  verify(interval: string, symbol: string): void {
    this.verifyFile(this.pathOf(interval, symbol), interval, symbol, 'bars');
  }

  /** verify() of either file of a bar: rows missing from an `.incomplete.csv` are not restored (read back only). */
  private verifyFile(path: string, interval: string, symbol: string, file: BarFile): void {
    const f = this.state.get(path);
    if (f === undefined || !this.changed(path, f)) return;
    this.state.delete(path);
    const now = this.fileState(path, interval, symbol);
    if (file === 'bars' && f.last !== undefined && (now.last === undefined || now.last.start < f.last.start)) {
      this.onEvent({ kind: 'rows-missing', path, interval, symbol, after: now.last?.start, through: f.last.start });
    }
  }

  /** whether a file's size or inode is not what this writer left */
  private changed(path: string, f: FileState): boolean {
    let st: { size: number; ino: number } | undefined;
    try {
      st = statSync(path);
    } catch {
      st = undefined;
    }
    return st === undefined || st.size !== f.size || st.ino !== f.ino;
  }

  private fileState(path: string, interval: string, symbol: string): FileState {
    let f = this.state.get(path);
    const folded = path.toLowerCase();
    const owner = this.owners.get(folded);
    if (owner === undefined) this.owners.set(folded, symbol);
    else if (owner !== symbol) throw new SymbolFileClashError(path, [owner, symbol]);
    if (f === undefined) {
      f = this.inspect(path);
      this.state.set(path, f);
    }
    return f;
  }

  /** Reads a file's end back: cuts a partial last row, sets aside a file that cannot be read back. */
  private inspect(path: string): FileState {
    let st: { size: number; ino: number };
    try {
      st = statSync(path);
    } catch {
      return { last: undefined, size: 0, ino: 0 };
    }
    if (st.size === 0) return { last: undefined, size: 0, ino: st.ino };
    const head = readHead(path, this.header.length + 1);
    const headerLine = head.split('\n')[0] ?? '';
    if (`${headerLine}\n` !== this.header) {
      return this.setAside(
        path,
        headerLine.startsWith('timestamp,')
          ? `its header is not this configuration's columns (CSV_EXTRA_COLUMNS=${this.extraColumns})`
          : 'it does not start with the CSV header',
      );
    }
    let tail = readTail(path, 8192);
    if (!tail.endsWith('\n')) {
      // a row cut short (the process died mid-write, or a disk filled before this version cut rows back)
      const keep = tail.lastIndexOf('\n') + 1;
      const cut = tail.length - keep;
      const size = st.size - Buffer.byteLength(tail.slice(keep));
      ftruncate(path, size);
      this.onEvent({ kind: 'cut-partial-row', path, bytes: cut });
      tail = tail.slice(0, keep);
      st = { size, ino: st.ino };
    }
    const lines = tail.split('\n').filter((l) => l !== '');
    const last = lines[lines.length - 1];
    if (last === undefined || last === headerLine) return { last: undefined, size: st.size, ino: st.ino };
    const row = this.parseRow(last);
    if (row === undefined || last.split(',').length !== this.headerCells.length) {
      return this.setAside(path, `its last row is not a bar row: ${JSON.stringify(last.slice(0, 80))}`);
    }
    return { last: row, size: st.size, ino: st.ino };
  }

  /** Start and close of a row as this writer labels it (a daily bar's date is read in BAR_TZ). */
  private parseRow(line: string): { start: number; close: string } | undefined {
    const comma = line.indexOf(',');
    if (comma < 0) return undefined;
    const start = this.clock.parseLabel(line.slice(0, comma));
    return Number.isNaN(start) ? undefined : { start, close: line.split(',')[4] ?? '' };
  }

  private setAside(path: string, reason: string): FileState {
    const stamp = new Date()
      .toISOString()
      .replace(/[-:]/g, '')
      .replace(/\.\d+Z$/, 'Z');
    const asidePath = join(dirname(path), `${basename(path)}.damaged-${stamp}`);
    renameSync(path, asidePath);
    this.onEvent({ kind: 'set-aside', path, asidePath, reason });
    return { last: undefined, size: 0, ino: 0 };
  }

  /**
   * Appends `text` whole, or cuts the file back to where it was and throws. False, writing nothing,
   * when the file is not as the writer left it (its size or inode changed since it was checked).
   */
  private write(path: string, f: FileState, text: string, check = true): boolean {
    if (f.size === 0) mkdirSync(dirname(path), { recursive: true });
    let done: AppendDone | 'changed';
    try {
      done = appendText(path, text, f.size, f.ino, check);
    } catch (err) {
      // the next inspection cuts the partial row instead
      if (err instanceof AppendError && err.partialRow) this.state.delete(path);
      throw err instanceof AppendError ? err.cause : err;
    }
    if (done === 'changed') return false;
    // appends are this writer's alone (the lock file), so the file is now its size and ours
    f.size = done.size;
    f.ino = done.ino;
    return true;
  }

  /**
   * A bar's row planned for an append elsewhere (the writer's append threads, `appendText` there),
   * or undefined where the append must go through appendRow here: a file not yet read back or
   * still without rows' header, a bar not newer than the file's last row (present or stale, judged
   * with its checks), a file that holds another symbol's bars (refused there), buffered mode.
   */
  plan(interval: string, symbol: string, start: number, text: string): PlannedAppend | undefined {
    if (this.pending) return undefined;
    const path = this.pathOf(interval, symbol);
    const f = this.state.get(path);
    if (f === undefined || f.size === 0 || (f.last !== undefined && start <= f.last.start)) return undefined;
    // another symbol's file (file-safe names, or case, meeting): appendRow refuses it, saying so
    if (this.owners.get(path.toLowerCase()) !== symbol) return undefined;
    return { path, text, size: f.size, ino: f.ino };
  }

  /** A planned append done elsewhere: the file is now the size it left, and `start` its last row. */
  commit(planned: PlannedAppend, done: AppendDone, start: number, close: string): void {
    const f = this.state.get(planned.path);
    if (f === undefined) return;
    f.size = done.size;
    f.ino = done.ino;
    // the last row's object changed in place, not replaced: a whole market's boundary commits
    // tens of thousands of these, and each new one would be copied out of the young generation
    if (f.last === undefined) f.last = { start, close };
    else {
      f.last.start = start;
      if (close !== '') f.last.close = close;
    }
  }

  /** A planned append that failed elsewhere and may have left part of its row: read the file back before the next. */
  forget(planned: PlannedAppend): void {
    this.state.delete(planned.path);
  }

  /**
   * Appends revision `rev` of a bar to its corrections file, once: corrections come in any order of
   * bars, so the file's (start, revision) pairs are read back when it is first touched.
   */
  appendCorrection(interval: string, symbol: string, start: number, rev: number, state: BarState): 'written' | 'present' {
    const path = correctionsPath(this.dataDir, interval, symbol);
    let seen = this.revisions.get(path);
    if (!seen) {
      seen = new Set();
      if (existsSync(path)) {
        let text = readFileSync(path, 'utf8');
        if (text !== '' && !text.endsWith('\n')) {
          const keep = text.lastIndexOf('\n') + 1;
          ftruncate(path, Buffer.byteLength(text.slice(0, keep)));
          this.onEvent({ kind: 'cut-partial-row', path, bytes: text.length - keep });
          text = text.slice(0, keep);
        }
        for (const line of text.split('\n').slice(1)) {
          if (line.trim() === '') continue;
          const cells = line.split(',');
          seen.add(`${this.clock.parseLabel(cells[0]!)}#${cells[cells.length - 1]}`);
        }
      }
      this.revisions.set(path, seen);
    }
    const key = `${start}#${rev}`;
    if (seen.has(key)) return 'present';
    let text = csvRow(this.clock, start, state, this.extraColumns, this.days.has(interval)).replace(/\n$/, `,${rev}\n`);
    let size = 0;
    try {
      size = statSync(path).size;
    } catch {
      // a new file
    }
    if (size === 0) text = stringify([[...this.headerCells, 'revision']]) + text;
    this.write(path, { last: undefined, size, ino: 0 }, text, false);
    seen.add(key);
    return 'written';
  }
}

function readHead(path: string, bytes: number): string {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(bytes);
    const n = readSync(fd, buf, 0, bytes, 0);
    return buf.subarray(0, n).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

function ftruncate(path: string, size: number): void {
  const fd = openSync(path, 'r+');
  try {
    ftruncateSync(fd, size);
  } finally {
    closeSync(fd);
  }
}
