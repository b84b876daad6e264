import { z } from 'zod';
import { barJobId } from './keys.js';

/**
 * The writer's job, defined once: the closer enqueues it, the writer takes it, both through this
 * schema (the writer checks what it takes, so a job from another version says what is wrong).
 */
export const CLOSED_BAR = z.object({
  interval: z.string().min(1),
  symbol: z.string().min(1),
  /** window start, UTC ms */
  start: z.number().int(),
  /** encoded bar state (encodeBarState) */
  state: z.string(),
  /** 0 for the bar as closed; 1, 2, ... for corrections by late trades */
  rev: z.number().int().min(0).default(0),
});

/** An activity bar (docs/activity-bars.md) as the closer cut it: its number and its first and last trade's times. */
export const ACTIVITY_BAR = z.object({
  interval: z.string().min(1),
  symbol: z.string().min(1),
  /** 1, 2, ... per symbol and interval */
  seq: z.number().int().min(1),
  start: z.number().int(),
  end: z.number().int(),
  /** encoded bar state (encodeBarState) */
  state: z.string(),
});

export const BARS_JOB = z.object({
  /** the closed bars of one outbox read, in closing order */
  bars: z.array(CLOSED_BAR),
  /** activity bars of one cut, in the order cut */
  activity: z.array(ACTIVITY_BAR).optional(),
  /**
   * EMPTY_BARS=carry: every window of this partition ending at or before `through` is final and its
   * bars were enqueued before this job, so the writer may fill the empty ones
   */
  horizon: z.object({ partition: z.number().int().min(0), through: z.number() }).optional(),
});

export type ClosedBar = z.infer<typeof CLOSED_BAR>;
export type ActivityBarJob = z.infer<typeof ACTIVITY_BAR>;
export type BarsJob = z.infer<typeof BARS_JOB>;

/** A job as the writer takes it: checked, with its defaults. */
export function parseBarsJob(data: unknown): BarsJob {
  const r = BARS_JOB.safeParse(data);
  if (!r.success)
    throw new Error(`a bars job of another shape: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return r.data;
}

/**
 * A deterministic job id for a batch of bars: the identities of its first and last bar and its
 * count, so the same outbox read enqueued twice (a closer that died between enqueueing and
 * deleting) is one job.
 */
export function barsJobId(bars: readonly ClosedBar[]): string {
  const first = bars[0]!;
  const last = bars[bars.length - 1]!;
  return `${barJobId(first.interval, first.symbol, first.start, first.rev)}_${barJobId(last.interval, last.symbol, last.start, last.rev)}_${bars.length}`;
}

/** The job that tells the writer a partition is final through `through` (EMPTY_BARS=carry). */
export function horizonJobId(partition: number, through: number): string {
  return `horizon-${partition}-${through}`;
}
