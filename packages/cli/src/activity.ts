import { existsSync, mkdirSync, readFileSync, writeFileSync, appendFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { stringify } from 'csv-stringify/sync';
import { ACTIVITY_CSV_HEADER, activityRow, csvPath } from '@candlewick/common';
import {
  ALL,
  ActivityCutter,
  VOLUME,
  isAroundTheClock,
  type ActivityBar,
  type ActivityInterval,
  type BarCalendar,
  type ConditionRules,
  type RawEntry,
} from '@candlewick/core';

/** A trade waiting for its turn in event order: its place in the tape breaks ties of one millisecond. */
interface Waiting {
  s: string;
  t: number;
  p: string;
  v: number;
  elig: number;
  side: string | undefined;
  seq: number;
  /** the end of its base window: it is taken once the partition's close horizon reaches this */
  end: number;
}

const byEventOrder = (a: Waiting, b: Waiting): number => a.t - b.t || a.seq - b.seq;

/**
 * `candlewick bars`' activity bars (docs/activity-bars.md): the trades the time bars take, held per
 * partition until no trade before them can still come on time (the close horizon has passed their
 * base window), then given to the cutter in event order. Rows are kept in memory and written at
 * the end, one file per symbol and interval: a file already there must begin with the same rows
 * (a second run over the same tape), and only what follows is appended.
 */
export class InProcessActivity {
  private readonly cutter: ActivityCutter;
  private readonly waiting: Waiting[][] = [];
  private readonly rows = new Map<string, { interval: string; symbol: string; lines: string[] }>();
  /** trades taken (each once, whatever the number of intervals) */
  taken = 0;

  constructor(
    intervals: readonly ActivityInterval[],
    private readonly calendar: BarCalendar,
    private readonly conditions: ConditionRules | undefined,
    private readonly dataDir: string,
    partitions: number,
  ) {
    this.cutter = new ActivityCutter(intervals);
    for (let p = 0; p < partitions; p++) this.waiting.push([]);
  }

  /** A trade the time bars took: on time, kept by SESSIONS; seq is its place in the tape. */
  offer(p: number, e: RawEntry, seq: number): void {
    const elig = this.conditions === undefined || isAroundTheClock(e.s) ? ALL : this.conditions.eligibility(e.c);
    if ((elig & VOLUME) === 0) return;
    const end = this.calendar.baseWindow(e.s, e.t)[1];
    this.waiting[p]!.push({ s: e.s, t: e.t, p: e.p, v: e.v, elig, side: e.a, seq, end });
  }

  /** Cuts the trades of partition p whose base window ends by `horizon` (Infinity: all), in event order. */
  release(p: number, horizon: number): void {
    const list = this.waiting[p]!;
    if (list.length === 0) return;
    list.sort(byEventOrder);
    const keep: Waiting[] = [];
    for (const w of list) {
      // a symbol's trades after one that must wait wait too: their windows end no earlier
      if (w.end > horizon) keep.push(w);
      else {
        this.taken++;
        this.cutter.push(w, this.emit);
      }
    }
    this.waiting[p] = keep;
  }

  private readonly emit = (bar: ActivityBar): void => {
    const key = `${bar.interval}\u0000${bar.symbol}`;
    let r = this.rows.get(key);
    if (r === undefined) this.rows.set(key, (r = { interval: bar.interval, symbol: bar.symbol, lines: [] }));
    r.lines.push(activityRow(this.calendar.clock, bar));
  };

  /** Bars that had not reached their threshold when the tape ended (not written). */
  forming(): number {
    let n = 0;
    for (const _ of this.cutter.forming()) n++;
    return n;
  }

  /**
   * Writes the rows: a new file whole, a file that begins with them gets what follows. A file that
   * does not is left as it is and named in the error (another tape, or other settings, wrote it).
   */
  write(written: Record<string, number>): { present: number; problems: string[] } {
    const header = stringify([[...ACTIVITY_CSV_HEADER]]);
    let present = 0;
    const problems: string[] = [];
    for (const { interval, symbol, lines } of this.rows.values()) {
      const path = csvPath(this.dataDir, interval, symbol);
      let have = 0;
      if (existsSync(path)) {
        const text = readFileSync(path, 'utf8');
        let at = header.length;
        const ok = text.startsWith(header);
        while (ok && have < lines.length && text.startsWith(lines[have]!, at)) at += lines[have++]!.length;
        if (!ok || at !== text.length) {
          problems.push(
            `${path}: its rows are not the first rows of these ${interval} bars (another tape or other settings wrote it); left as it is — move it away to write these`,
          );
          continue;
        }
        if (have < lines.length) appendFileSync(path, lines.slice(have).join(''));
      } else {
        mkdirSync(dirname(path), { recursive: true });
        writeFileSync(path, header + lines.join(''));
      }
      present += have;
      if (lines.length > have) written[interval] = (written[interval] ?? 0) + lines.length - have;
    }
    return { present, problems };
  }
}
