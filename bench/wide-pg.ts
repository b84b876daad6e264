/**
 * The wide universe with pg-sink on (BENCH_WIDE_PG=1): a private PostgreSQL (test/postgres.ts,
 * fsync on as a deployment has it, commit times kept) whose DATABASE_URL the stack gets, and the
 * sink's lag of every bar: the commit time of its row (`pg_xact_commit_timestamp(xmin)`) minus its
 * window's end, per boundary, against grace + 2 s.
 */
import { rmSync } from 'node:fs';
import type { Clock } from '@candlewick/core';
import { startPostgres } from '../test/postgres.js';
import { percentile } from './wide.js';

export interface WideSink {
  /** rows of bars timed (revision 0, window ended by the last boundary) */
  rows: number;
  /** the sink's lag (ms) of every such row, sorted */
  lags: number[];
  boundaries: { end: number; rows: number; p50: number; p99: number; worst: number }[];
  /** bars published on bars:{interval} whose row is not in the table */
  missing: number;
}

export interface WidePg {
  env: Record<string, string>;
  /** the table's rows against the bars published (`published`: interval|symbol|start) */
  measure(clock: Clock, ivMs: Map<string, number>, lastBoundary: number, published: ReadonlySet<string>): Promise<WideSink>;
  stop(): void;
}

export async function startWidePg(): Promise<WidePg> {
  const db = await startPostgres('bench-wide-pg', { fsync: true, commitTimestamps: true });
  return {
    env: { DATABASE_URL: db.url, DATABASE_PASSWORD: db.password },
    async measure(clock, ivMs, lastBoundary, published) {
      const rows = await db.query<{ interval: string; symbol: string; start: number; at: number }>(
        `SELECT "interval", symbol, (extract(epoch FROM start) * 1000)::float8 AS start,
           (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000)::float8 AS at FROM bars WHERE rev = 0`,
      );
      const lags: number[] = [];
      const atEnd = new Map<number, number[]>();
      const inTable = new Set<string>();
      for (const r of rows) {
        inTable.add(`${r.interval}|${r.symbol}|${r.start}`);
        const end = clock.window(r.start, ivMs.get(r.interval)!, 0)[1];
        if (end > lastBoundary) continue;
        const lag = Math.round(r.at - end);
        lags.push(lag);
        if (!atEnd.has(end)) atEnd.set(end, []);
        atEnd.get(end)!.push(lag);
      }
      lags.sort((a, b) => a - b);
      const boundaries = [...atEnd]
        .sort((a, b) => a[0] - b[0])
        .map(([end, l]) => {
          l.sort((a, b) => a - b);
          return { end, rows: l.length, p50: percentile(l, 0.5), p99: percentile(l, 0.99), worst: l[l.length - 1]! };
        });
      return { rows: lags.length, lags, boundaries, missing: [...published].filter((k) => !inTable.has(k)).length };
    },
    stop() {
      db.stop();
      rmSync(db.dir, { recursive: true, force: true });
    },
  };
}

/** The sink's lines of the report: overall and per boundary, each against grace + 2 s. */
export function wideSinkReport(s: WideSink, graceMs: number): string[] {
  const limit = graceMs + 2000;
  const within = (ms: number) => (ms <= limit ? `within grace + 2 s (${limit} ms)` : `PAST grace + 2 s (${limit} ms)`);
  const worst = s.lags[s.lags.length - 1] ?? NaN;
  return [
    `  pg-sink lag (row committed - window end), ${s.rows.toLocaleString('en-US')} rows: p50 ${percentile(s.lags, 0.5)} ms, p99 ${percentile(s.lags, 0.99)} ms, worst ${worst} ms, ${within(worst)}${s.missing ? `; ${s.missing} published bars MISSING from the table` : '; every published bar in the table'}`,
    ...s.boundaries.map(
      (b) =>
        `    boundary ${new Date(b.end).toISOString().slice(11, 16)}: ${b.rows.toLocaleString('en-US')} rows, p50 ${b.p50} ms, p99 ${b.p99} ms, worst ${b.worst} ms, ${within(b.worst)}`,
    ),
  ];
}
