import { mkdtempSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Clock } from '@candlewick/core';
import { readRows } from './bars-file.js';

const clock = new Clock('America/New_York');
const startOf = (line: string) => clock.parseLabel(line.slice(0, line.indexOf(',')));
const HEADER = 'timestamp,open,high,low,close,vwap,volume,num_transactions';

/** n one-minute rows from t0 (with gaps: every 7th minute has no bar), labelled as the writer labels them. */
function bigFile(n: number, t0: number): { path: string; rows: { start: number; line: string }[] } {
  const dir = mkdtempSync(join(tmpdir(), 'cw-bars-file-'));
  const path = join(dir, 'X_1min.csv');
  const rows: { start: number; line: string }[] = [];
  for (let i = 0, k = 0; rows.length < n; i++) {
    if (i % 7 === 3) continue;
    const start = t0 + i * 60_000;
    rows.push({ start, line: `${clock.label(start)},1.${k},1.5,0.5,1.${k++},1.1,100,3` });
  }
  writeFileSync(path, `${HEADER}\n${rows.map((r) => r.line).join('\n')}\n`);
  return { path, rows };
}

describe('readRows: a range of a bar file by binary search', () => {
  // 2019-10-01 .. over the November DST night: labels change offset from -04:00 to -05:00
  const { path, rows } = bigFile(200_000, Date.parse('2019-10-01T00:00:00Z'));

  it('every range agrees with a filter over the whole file, at the edges too, reading a few KiB', () => {
    const naive = (from?: number, to?: number) =>
      rows.filter((r) => (from === undefined || r.start >= from) && (to === undefined || r.start < to));
    const probes: [number | undefined, number | undefined, number][] = [
      [rows[0]!.start, rows[10]!.start, 100], // from the first row, to exclusive
      [rows[0]!.start - 1, rows[0]!.start, 100], // empty: to is the first row
      [undefined, rows[0]!.start, 100], // nothing before the first
      [rows[rows.length - 1]!.start, undefined, 100], // the last row alone
      [rows[rows.length - 1]!.start + 1, undefined, 100], // after the last: none
      [rows[5000]!.start + 30_000, rows[5003]!.start + 30_000, 100], // inside windows, not on a start
      [rows[123_456]!.start, undefined, 50], // cut at the limit
      [undefined, undefined, 25], // the newest 25
      [undefined, rows[777]!.start, 10], // the newest 10 before a time
    ];
    for (let i = 0; i < 40; i++) {
      const a = Math.floor(Math.random() * rows.length);
      const b = a + Math.floor(Math.random() * 300);
      probes.push([rows[a]!.start, rows[Math.min(b, rows.length - 1)]!.start + 1, 1000]);
    }
    for (const [from, to, limit] of probes) {
      const all = naive(from, to);
      const want = from === undefined ? all.slice(Math.max(0, all.length - limit)) : all.slice(0, limit);
      const got = readRows(path, { from, to, limit }, startOf);
      expect(got.header).toBe(HEADER);
      expect(got.lines, `from ${from} to ${to} limit ${limit}`).toEqual(want.map((r) => r.line));
      expect(got.truncated).toBe(all.length > limit);
      // a 12 MB file: a binary search and the rows asked for, never the file
      expect(got.bytesRead).toBeLessThan(200_000);
    }
  });

  it('a row still being appended (no newline yet) is not returned; a missing file has no rows', () => {
    const { path: p, rows: r } = bigFile(10, Date.parse('2024-03-05T15:00:00Z'));
    appendFileSync(p, '2024-03-05T10:20:00-05:00,1.0,1.');
    expect(readRows(p, { limit: 100 }, startOf).lines).toEqual(r.map((x) => x.line));
    expect(readRows(p, { from: r[9]!.start, limit: 100 }, startOf).lines).toEqual([r[9]!.line]);
    expect(readRows(join(p, '..', 'none.csv'), { limit: 5 }, startOf)).toMatchObject({ lines: [], truncated: false });
  });
});
