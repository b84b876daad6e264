import { join } from 'node:path';
import type { Counters } from '@candlewick/common';

/** The counters a run's summary shows as what this run added. */
const COUNTED = [
  'duplicates',
  'rejected',
  'future',
  'foreign',
  'badFrames',
  'corrections',
  'cancels',
  'amendedBars',
  'amendsTooOld',
  'amendsEmptied',
  'amendsUnmade',
  'late',
  'merged',
  'filtered',
  'excluded',
  'unknownConditions',
  'amendTooOld',
  'lateAfterClose',
  'holdsExpired',
  'backfillTooLate',
] as const satisfies readonly (keyof Counters)[];
type Counted = (typeof COUNTED)[number];

/** One run's summary: the counters' differences, plus timing. */
export type StackSummary = Pick<Counters, Counted | 'written' | 'holdMaxMs' | 'holdMeanMs'> & {
  tradesIn: number;
  wallMs: number;
  /** the time trades spent in the pipeline (what throughput divides by) */
  spanMs: number;
  tradesPerSec: number;
  /** CPU per process over the run, from the feed's start */
  cpu?: CpuUse[];
  /** the wall time the CPU figures cover */
  cpuWallMs?: number;
  /** when Redis lost candlewick's data mid-run (its marker gone): the counts are only since then */
  dataLostAt?: number;
  /**
   * with dataLostAt, in the default CSV format: the `.incomplete.csv` files (under DATA_DIR/raw)
   * this run wrote the bars open then to, beside their bar files
   */
  incompleteFiles?: string[];
  /** keys Redis evicted during the run (INFO stats evicted_keys), and when the first was seen */
  evicted?: { keys: number; at: number };
};

/** One process's CPU over a run. */
export interface CpuUse {
  /** e.g. aggregate.2 */
  name: string;
  /** ingest, aggregate, close, write, backfill, replay-server, stack, redis */
  role: string;
  /** user + system, µs */
  us: number;
}

/**
 * This run's summary: counters now minus counters at start (Redis keeps them across runs).
 * Throughput counts the time trades spent in the pipeline: from the first trade received to the
 * last batch merged, plus the final close-and-write; the idle wait before the exit is not counted.
 */
export function summarize(before: Counters, after: Counters, startedAt: number, endedAt: number, finishMs: number): StackSummary {
  const tradesIn = after.in - before.in;
  const firstRx = after.firstRx >= startedAt ? after.firstRx : startedAt;
  const lastMerge = after.lastMerge > before.lastMerge ? after.lastMerge : endedAt;
  const span = Math.max(1, lastMerge - firstRx + finishMs);
  const written: Record<string, number> = {};
  for (const [k, v] of Object.entries(after.written)) written[k] = v - (before.written[k] ?? 0);
  const counted = Object.fromEntries(COUNTED.map((k) => [k, after[k] - before[k]])) as Record<Counted, number>;
  return {
    tradesIn,
    ...counted,
    written,
    holdMaxMs: after.holdMaxMs,
    holdMeanMs: after.holdMeanMs,
    wallMs: endedAt - startedAt,
    spanMs: span,
    tradesPerSec: Math.round((tradesIn / span) * 1000),
  };
}

function lateNote(s: StackSummary): string {
  if (s.late === 0) return '';
  const notes = ['kept in trades:late'];
  if (s.amendTooOld) notes.push(`${s.amendTooOld} past LATE_AMEND_WINDOW, in no correction`);
  if (s.late === s.tradesIn) notes.push('a replay of an already-seen day is all late: start from an empty DATA_DIR');
  return ` (${notes.join('; ')})`;
}

function backfillLines(s: StackSummary): string[] {
  const notes: string[] = [];
  if (s.holdsExpired) notes.push(`${s.holdsExpired} holds past BACKFILL_HOLD (their bars closed without the backfill)`);
  if (s.backfillTooLate) notes.push(`${s.backfillTooLate} backfilled trades or candles came after their hold, in no bar`);
  return notes.length ? [`  backfill         ${notes.join('; ')}`] : [];
}

export function formatSummary(s: StackSummary, dataDir: string): string {
  const bars = Object.entries(s.written)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  const left: string[] = [];
  if (s.filtered) left.push(`${s.filtered} outside SESSIONS, left out`);
  if (s.excluded) left.push(`${s.excluded} whose CONDITIONS set nothing`);
  return [
    'candlewick summary',
    `  trades in        ${s.tradesIn}`,
    ...(s.duplicates
      ? [
          `  duplicates       ${s.duplicates} trades dropped as already on the raw stream (their trade id appended before: a resend, a replay, a second ingestor)`,
        ]
      : []),
    `  rejected         ${s.rejected} (plus ${s.badFrames} unreadable frames)${s.future ? `, ${s.future} of them ahead of the clock or the feed (FUTURE_LIMIT_MS; kept in trades:rejected)` : ''}`,
    ...(s.corrections || s.cancels
      ? [
          `  amended          ${s.corrections} corrections and ${s.cancels} cancels received (kept in feed:corrections): ${s.amendedBars} bars written with them (as they closed, or as a revision in .corrections.csv)` +
            (s.amendsTooOld ? `; ${s.amendsTooOld} bars past LATE_AMEND_WINDOW not amended` : '') +
            (s.amendsEmptied ? `; ${s.amendsEmptied} bars left without a trade (a written one stays as written)` : '') +
            (s.amendsUnmade ? `; ${s.amendsUnmade} bars with trades the raw stream has not (a backfill, a trim) not amended` : ''),
        ]
      : []),
    ...(s.foreign ? [`  foreign          ${s.foreign} trades for symbols not in SYMBOLS, dropped`] : []),
    `  late             ${s.late}${lateNote(s)}`,
    ...(s.lateAfterClose
      ? [
          `  after close      ${s.lateAfterClose} trades for windows already closed, in no bar (kept in trades:late; a clock that went back?)`,
        ]
      : []),
    `  merged           ${s.merged - s.filtered - s.excluded}${left.length ? ` (plus ${left.join(', ')})` : ''}`,
    ...(s.unknownConditions
      ? [`  conditions       ${s.unknownConditions} trades with codes not in the table, counted as regular (see CONDITION_CODES)`]
      : []),
    ...backfillLines(s),
    `  bars written     ${bars}`,
    `  ingest hold      mean ${s.holdMeanMs} ms, max ${s.holdMaxMs} ms (a trade's time outside Redis: receipt to Redis's answer)`,
    `  wall time        ${(s.wallMs / 1000).toFixed(2)} s`,
    `  throughput       ${s.tradesPerSec} trades/s (first trade received to last merge, plus the final close and write)`,
    ...cpuLines(s),
    ...(s.dataLostAt !== undefined
      ? [
          `  DATA LOST        Redis lost candlewick's data at ${new Date(s.dataLostAt).toISOString()} (its marker key gone): the counts above are only`,
          ...(s.incompleteFiles === undefined
            ? [
                '                   since then; the bars open then are written complete=false, bars closed but not yet written then are missing',
              ]
            : [
                `                   since then; the bars open then are incomplete: not in the bar files but beside them, in ${s.incompleteFiles.length} .incomplete.csv file${s.incompleteFiles.length === 1 ? '' : 's'}`,
                ...s.incompleteFiles.slice(0, 10).map((f) => `                     ${f}`),
                ...(s.incompleteFiles.length > 10
                  ? [`                     … and ${s.incompleteFiles.length - 10} more (raw/*/*.incomplete.csv)`]
                  : []),
                '                   bars closed but not yet written then are missing',
              ]),
        ]
      : []),
    ...(s.evicted
      ? [
          `  DATA LOST        Redis evicted ${s.evicted.keys} key${s.evicted.keys === 1 ? '' : 's'} during the run (first seen ${new Date(s.evicted.at).toISOString()}; INFO stats evicted_keys):`,
          "                   candlewick's streams, consumer groups, open bars or jobs may be among them, so bars may be missing or wrong;",
          '                   set maxmemory-policy noeviction and give Redis the memory it needs',
        ]
      : []),
    `  CSV              ${join(dataDir, 'raw')}`,
  ].join('\n');
}

/**
 * CPU per trade of each process, and how busy it was from the feed's start to the end (100 % = one core);
 * the replay server stands apart: a live feed's sender is not on this machine.
 */
export function cpuLines(s: StackSummary): string[] {
  if (!s.cpu?.length || s.tradesIn === 0) return [];
  const per = (us: number) => (us / s.tradesIn).toFixed(1).padStart(6);
  const wall = s.cpuWallMs ?? s.spanMs;
  const busy = (us: number) => `${Math.round((us / 1000 / wall) * 100)} %`.padStart(6);
  const lines = ['  cpu              µs/trade   busy'];
  const pipeline = s.cpu.filter((c) => c.role !== 'replay-server');
  for (const c of pipeline) lines.push(`    ${c.name.padEnd(16)}${per(c.us)}  ${busy(c.us)}`);
  const total = pipeline.reduce((a, c) => a + c.us, 0);
  lines.push(`    ${'total'.padEnd(16)}${per(total)}  ${busy(total)}`);
  for (const c of s.cpu.filter((c) => c.role === 'replay-server'))
    lines.push(`    ${'(replay server)'.padEnd(16)}${per(c.us)}  ${busy(c.us)}`);
  return lines;
}
