import { appendFileSync, closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, readSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { stringify } from 'csv-stringify/sync';
import { DateTime } from 'luxon';
import { BAR_FLAGS, barSources, fileSafeSymbol, formatNumber, volumeNumber, vwap, type BarState, type Clock } from '@candlewick/common';

export const CSV_HEADER = ['timestamp', 'open', 'high', 'low', 'close', 'vwap', 'volume', 'num_transactions'] as const;
/** CSV_EXTRA_COLUMNS=true adds these after the notebook's columns. */
export const CSV_EXTRA_HEADER = ['complete', 'sources'] as const;

export function csvPath(dataDir: string, interval: string, symbol: string): string {
  return join(dataDir, 'raw', interval, `${fileSafeSymbol(symbol)}_${interval}.csv`);
}

/** Corrections of bars by late trades (LATE=amend), beside the main file. */
export function correctionsPath(dataDir: string, interval: string, symbol: string): string {
  return join(dataDir, 'raw', interval, `${fileSafeSymbol(symbol)}_${interval}.corrections.csv`);
}

/**
 * VWAP and num_transactions as written: empty where unknown, i.e. no volume (VWAP), or part of the
 * bar from candles without them (APPROXIMATE): never made up.
 */
export function barCells(b: BarState): { vwap: string; n: string } {
  if ((b.flags ?? 0) & BAR_FLAGS.APPROXIMATE) return { vwap: '', n: '' };
  const v = vwap(b);
  return { vwap: Number.isNaN(v) ? '' : formatNumber(v), n: String(b.n) };
}

export function csvRow(clock: Clock, start: number, b: BarState, extraColumns = false): string {
  const { vwap: vw, n } = barCells(b);
  const row: (string | number)[] = [clock.label(start), b.open, b.high, b.low, b.close, vw, formatNumber(volumeNumber(b.volume)), n];
  if (extraColumns) row.push((b.flags ?? 0) & BAR_FLAGS.INCOMPLETE ? 'false' : 'true', barSources(b.flags ?? 0));
  return stringify([row]);
}

/** Start (UTC ms) of the last row of a CSV file, or undefined when it has no data rows. */
export function lastRowStart(path: string): number | undefined {
  return lastRow(path)?.start;
}

/** Start (UTC ms) and close (as written) of the last row of a CSV file. */
export function lastRow(path: string): { start: number; close: string } | undefined {
  if (!existsSync(path)) return undefined;
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const len = Math.min(size, 4096);
    const buf = Buffer.alloc(len);
    readSync(fd, buf, 0, len, size - len);
    const lines = buf.toString('utf8').split('\n').filter((l) => l.trim() !== '');
    const last = lines[lines.length - 1];
    if (!last || last.startsWith('timestamp')) return undefined;
    const ts = DateTime.fromISO(last.slice(0, last.indexOf(',')), { setZone: true });
    if (!ts.isValid) throw new Error(`${path}: last row does not start with an ISO timestamp; fix or move the file`);
    return { start: ts.toMillis(), close: last.split(',')[4] ?? '' };
  } finally {
    closeSync(fd);
  }
}

/**
 * Appends bars to per-(interval, symbol) CSV files, never a row that is not newer than the file's
 * last row, so a retried or re-enqueued bar is written once. The file is the source of truth: the
 * last start is read back from it when a file is first touched.
 */
export class CsvFiles {
  private readonly last = new Map<string, { start: number; close: string } | undefined>();
  /** corrections file -> "start#rev" already in it */
  private readonly revisions = new Map<string, Set<string>>();

  private readonly header: string[];

  constructor(
    private readonly dataDir: string,
    private readonly clock: Clock,
    private readonly extraColumns = false,
  ) {
    this.header = extraColumns ? [...CSV_HEADER, ...CSV_EXTRA_HEADER] : [...CSV_HEADER];
  }

  /** 'written' | 'present' (this very bar is the file's last row) | 'stale' (an older bar) */
  append(interval: string, symbol: string, start: number, state: BarState): 'written' | 'present' | 'stale' {
    const path = csvPath(this.dataDir, interval, symbol);
    const last = this.lastOf(interval, symbol);
    if (last !== undefined && start <= last.start) return start === last.start ? 'present' : 'stale';
    let text = csvRow(this.clock, start, state, this.extraColumns);
    if (!existsSync(path)) {
      mkdirSync(dirname(path), { recursive: true });
      text = stringify([this.header]) + text;
    }
    appendFileSync(path, text);
    // A bar of volume-only prints (CONDITIONS=cta-utp) has no close: carry keeps the one before.
    this.last.set(path, { start, close: state.close !== '' ? state.close : (last?.close ?? '') });
    return 'written';
  }

  /** The last row of a file: start and close (read from the file the first time). */
  lastOf(interval: string, symbol: string): { start: number; close: string } | undefined {
    const path = csvPath(this.dataDir, interval, symbol);
    if (!this.last.has(path)) this.last.set(path, lastRow(path));
    return this.last.get(path);
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
        for (const line of readFileSync(path, 'utf8').split('\n').slice(1)) {
          if (line.trim() === '') continue;
          const cells = line.split(',');
          seen.add(`${DateTime.fromISO(cells[0]!, { setZone: true }).toMillis()}#${cells[cells.length - 1]}`);
        }
      }
      this.revisions.set(path, seen);
    }
    const key = `${start}#${rev}`;
    if (seen.has(key)) return 'present';
    let text = csvRow(this.clock, start, state, this.extraColumns).replace(/\n$/, `,${rev}\n`);
    if (!existsSync(path)) {
      mkdirSync(dirname(path), { recursive: true });
      text = stringify([[...this.header, 'revision']]) + text;
    }
    appendFileSync(path, text);
    seen.add(key);
    return 'written';
  }
}
