import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';

/**
 * Reads a range of rows from a bar CSV file — the source of truth the API serves — without reading
 * the file: rows are in start order (the writer appends only newer rows), so the first row of a
 * range is found by a binary search on byte offsets (a 1 KiB read per step), and only the rows of
 * the range are read after it. A last row still being appended (no newline yet) is left out.
 */

/** a probe's read: a few rows */
const CHUNK = 1024;

export interface RowRange {
  /** the file's header line */
  header: string;
  /** the rows, as written (no newline) */
  lines: string[];
  /** rows of the range were left out at the limit (after the last row returned with `from`, else before the first) */
  truncated: boolean;
  /** bytes read from the file to answer */
  bytesRead: number;
}

export interface RangeQuery {
  /** first start (UTC ms, inclusive) */
  from?: number;
  /** end (UTC ms, exclusive) */
  to?: number;
  /** at most this many rows */
  limit: number;
  /** without `from`: the newest `limit` rows before `to` (default); with `from`: the oldest after it */
}

class LineReader {
  private readonly fd: number;
  readonly size: number;
  /** offset of the first data row */
  readonly dataStart: number;
  readonly header: string;
  bytesRead = 0;

  constructor(path: string) {
    this.fd = openSync(path, 'r');
    const size = fstatSync(this.fd).size;
    const first = this.lineAt(0, size);
    // a file with a header and no whole row yet: no rows
    this.header = first?.text ?? '';
    this.dataStart = first ? first.next : size;
    // only whole rows: the size up to the last newline
    this.size = this.completeSize(size);
  }

  close(): void {
    closeSync(this.fd);
  }

  private read(pos: number, len: number): Buffer {
    const buf = Buffer.alloc(len);
    const n = readSync(this.fd, buf, 0, len, pos);
    this.bytesRead += n;
    return buf.subarray(0, n);
  }

  private completeSize(size: number): number {
    let end = size;
    while (end > this.dataStart) {
      const from = Math.max(this.dataStart, end - CHUNK);
      const buf = this.read(from, end - from);
      const nl = buf.lastIndexOf(0x0a);
      if (nl >= 0) return from + nl + 1;
      end = from;
    }
    return this.dataStart;
  }

  /** The line starting at pos (a line start), with the offset of the next one; undefined past the end. */
  lineAt(pos: number, limit = this.size): { text: string; next: number } | undefined {
    const parts: Buffer[] = [];
    let at = pos;
    while (at < limit) {
      const buf = this.read(at, Math.min(CHUNK, limit - at));
      if (buf.length === 0) break;
      const nl = buf.indexOf(0x0a);
      if (nl >= 0) {
        parts.push(buf.subarray(0, nl));
        return { text: Buffer.concat(parts).toString('utf8').replace(/\r$/, ''), next: at + nl + 1 };
      }
      parts.push(buf);
      at += buf.length;
    }
    return undefined;
  }

  /** The first line start at or after pos. */
  lineStartFrom(pos: number): number {
    if (pos <= this.dataStart) return this.dataStart;
    let at = pos - 1;
    while (at < this.size) {
      const buf = this.read(at, Math.min(CHUNK, this.size - at));
      const nl = buf.indexOf(0x0a);
      if (nl >= 0) return at + nl + 1;
      at += buf.length;
    }
    return this.size;
  }

  /** Offset of the first row whose start is ≥ t (this.size when none). */
  seek(t: number, startOf: (line: string) => number): number {
    let lo = this.dataStart;
    let hi = this.size;
    while (lo < hi) {
      const mid = lo + Math.floor((hi - lo) / 2);
      const ls = this.lineStartFrom(mid);
      if (ls >= hi) {
        hi = mid;
        continue;
      }
      const line = this.lineAt(ls)!;
      if (startOf(line.text) < t) lo = line.next;
      else hi = ls;
    }
    return lo;
  }

  /** Up to `n` rows ending before offset `end` (a line start), oldest first, and whether rows are before them. */
  before(end: number, n: number): { lines: string[]; more: boolean } {
    const bufs: Buffer[] = [];
    let at = end;
    let newlines = 0;
    // back until the rows read are more than n (the first may be cut) or reach the first row
    while (at > this.dataStart && newlines <= n) {
      const from = Math.max(this.dataStart, at - 64 * 1024);
      const buf = this.read(from, at - from);
      for (let i = 0; i < buf.length; i++) if (buf[i] === 0x0a) newlines++;
      bufs.unshift(buf);
      at = from;
    }
    const parts = Buffer.concat(bufs).toString('utf8').split('\n');
    parts.pop(); // after the last newline
    if (at > this.dataStart) parts.shift(); // a row cut by the read
    const lines = parts.slice(Math.max(0, parts.length - n)).map((l) => l.replace(/\r$/, ''));
    return { lines, more: at > this.dataStart || parts.length > n };
  }

  /** Rows from offset `pos` while `keep` says so, at most n; and whether the limit cut them. */
  after(pos: number, n: number, keep: (line: string) => boolean): { lines: string[]; more: boolean } {
    const lines: string[] = [];
    let at = pos;
    let rest = '';
    let block = CHUNK;
    while (at < this.size) {
      const buf = this.read(at, Math.min(block, this.size - at));
      at += buf.length;
      block = Math.min(block * 4, 1 << 20);
      const parts = (rest + buf.toString('utf8')).split('\n');
      rest = parts.pop()!;
      for (const raw of parts) {
        const line = raw.replace(/\r$/, '');
        if (!keep(line)) return { lines, more: false };
        if (lines.length === n) return { lines, more: true };
        lines.push(line);
      }
    }
    return { lines, more: false };
  }
}

/**
 * The rows of `path` in [from, to), at most `limit`: with `from`, the oldest such rows; without
 * it, the newest. `startOf` reads a row's start (UTC ms) from its line. A missing file has no rows.
 */
export function readRows(path: string, q: RangeQuery, startOf: (line: string) => number): RowRange {
  if (!existsSync(path)) return { header: '', lines: [], truncated: false, bytesRead: 0 };
  const r = new LineReader(path);
  try {
    const end = q.to === undefined ? r.size : r.seek(q.to, startOf);
    if (q.from === undefined) {
      const { lines, more } = r.before(end, q.limit);
      return { header: r.header, lines, truncated: more, bytesRead: r.bytesRead };
    }
    const begin = r.seek(q.from, startOf);
    const { lines, more } = r.after(begin, q.limit, (line) => q.to === undefined || startOf(line) < q.to);
    return { header: r.header, lines, truncated: more, bytesRead: r.bytesRead };
  } finally {
    r.close();
  }
}

/**
 * LATE=amend: the newest revision of each corrected bar in a corrections file (its rows are the main
 * file's columns plus `revision`), by the row's label; the line without its revision column.
 */
export function readCorrections(path: string): Map<string, { line: string; rev: number }> {
  const out = new Map<string, { line: string; rev: number }>();
  if (!existsSync(path)) return out;
  const lines = readFileSync(path, 'utf8').split('\n');
  for (let i = 1; i < lines.length; i++) {
    const l = lines[i]!;
    const cut = l.lastIndexOf(',');
    if (cut < 0) continue;
    const rev = Number(l.slice(cut + 1));
    const label = l.slice(0, l.indexOf(','));
    if (!Number.isInteger(rev)) continue;
    const cur = out.get(label);
    if (!cur || rev > cur.rev) out.set(label, { line: l.slice(0, cut), rev });
  }
  return out;
}
