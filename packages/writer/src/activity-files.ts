import { appendFileSync, closeSync, existsSync, fstatSync, ftruncateSync, mkdirSync, openSync, readSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { stringify } from 'csv-stringify/sync';
import { ACTIVITY_CSV_HEADER, activityRow, csvPath, lastActivityBar, type ActivityBarJob, type Logger } from '@candlewick/common';
import type { BarState, Clock } from '@candlewick/core';

const HEADER = stringify([[...ACTIVITY_CSV_HEADER]]);

/**
 * The writer's activity-bar files (docs/activity-bars.md): a bar is appended only after its file's
 * last bar number, so a cut handed over twice (a closer killed between enqueueing and deleting its
 * outbox entry) is written once. A row cut short by a kill is cut back to the last whole row first.
 */
export class ActivityFiles {
  /** path -> the number of its last bar */
  private readonly last = new Map<string, number>();

  constructor(
    private readonly dataDir: string,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  /**
   * Appends a job's activity bars, each file's rows in one write; which were written (the others were
   * in their files already).
   */
  appendAll(bars: readonly { bar: ActivityBarJob; state: BarState }[]): boolean[] {
    const written = bars.map(() => false);
    const byPath = new Map<string, number[]>();
    bars.forEach(({ bar }, i) => {
      const path = csvPath(this.dataDir, bar.interval, bar.symbol);
      let list = byPath.get(path);
      if (!list) byPath.set(path, (list = []));
      list.push(i);
    });
    for (const [path, list] of byPath) {
      let last = this.last.get(path) ?? this.open(path);
      let text = '';
      for (const i of list) {
        const { bar, state } = bars[i]!;
        if (bar.seq <= last) continue;
        if (bar.seq > last + 1)
          this.log.error(
            { path, last, bar: bar.seq },
            `${path}: bar ${bar.seq} follows bar ${last}: bars ${last + 1}..${bar.seq - 1} are not in the file (it was changed or moved while the writer ran)`,
          );
        text += activityRow(this.clock, { seq: bar.seq, start: bar.start, end: bar.end, state });
        last = bar.seq;
        written[i] = true;
      }
      if (text === '') continue;
      try {
        appendFileSync(path, text);
      } catch (err) {
        // what the file holds now is read again at the retry
        this.last.delete(path);
        throw err;
      }
      this.last.set(path, last);
    }
    return written;
  }

  /** A file's last bar number, the file created with its header if new, a torn last row cut off. */
  private open(path: string): number {
    if (!existsSync(path)) {
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, HEADER);
      this.last.set(path, 0);
      return 0;
    }
    const fd = openSync(path, 'r+');
    try {
      const size = fstatSync(fd).size;
      const len = Math.min(size, 4096);
      const buf = Buffer.alloc(len);
      readSync(fd, buf, 0, len, size - len);
      const nl = buf.lastIndexOf(0x0a);
      if (len > 0 && nl !== len - 1) {
        const keep = size - len + nl + 1;
        ftruncateSync(fd, keep);
        this.log.warn(
          { path, cut: size - keep },
          `${path}: its last row was cut short (a process killed mid-write): cut back to the last whole row`,
        );
      }
      if (size - len + nl + 1 === 0) writeFileSync(path, HEADER);
    } finally {
      closeSync(fd);
    }
    const n = lastActivityBar(path);
    this.last.set(path, n);
    return n;
  }
}
