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
  /**
   * the closed bars of one outbox read, in closing order, as objects: jobs of earlier versions
   * (and those written by hand, in tests); the closer now enqueues them `packed`
   */
  bars: z.array(CLOSED_BAR).optional(),
  /**
   * the closed bars as the outbox entries hold them, each an entry's `bars` field (a JSON list of
   * [bar id, state, rev]), in closing order: the closer hands the text on without taking it apart
   * (a whole market's boundary is tens of thousands of bars), the writer unpacks it (unpackBars)
   */
  packed: z.array(z.string()).optional(),
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
/** A job as the closer enqueues it. */
export type BarsJobData = z.input<typeof BARS_JOB>;
/** A job as the writer takes it: its bars unpacked, in closing order. */
export type BarsJob = Omit<z.infer<typeof BARS_JOB>, 'packed' | 'bars'> & { bars: ClosedBar[] };

/** A bar of an outbox entry's `bars` list: [bar id (interval|symbol|start), state, rev]. */
export type PackedBar = [id: string, state: string, rev: number];

/** An outbox entry's `bars` list, checked: each a [bar id, state, rev]. */
export function packedBars(text: string): PackedBar[] {
  const list = JSON.parse(text) as unknown;
  if (!Array.isArray(list)) throw new Error(`closed bars whose list is not a list: ${text.slice(0, 80)}`);
  for (const b of list as unknown[]) {
    if (
      !Array.isArray(b) ||
      typeof b[0] !== 'string' ||
      typeof b[1] !== 'string' ||
      typeof b[2] !== 'number' ||
      !Number.isInteger(b[2]) ||
      b[2] < 0
    )
      throw new Error(`closed bars with a bar of another shape: ${JSON.stringify(b).slice(0, 80)}`);
  }
  return list as PackedBar[];
}

/** A packed bar as the writer works it: its id taken apart (interval|symbol|start). */
export function closedBarOf(b: PackedBar): ClosedBar {
  const id = b[0];
  const first = id.indexOf('|');
  const last = id.lastIndexOf('|');
  const start = Number(id.slice(last + 1));
  if (first < 1 || last <= first + 1 || !Number.isSafeInteger(start))
    throw new Error(`a closed bar with an id of another shape: ${id.slice(0, 80)}`);
  return { interval: id.slice(0, first), symbol: id.slice(first + 1, last), start, state: b[1], rev: b[2] };
}

/** The bars of `packed` lists, in order, appended to `into`. */
export function unpackBars(packed: readonly string[], into: ClosedBar[] = []): ClosedBar[] {
  for (const text of packed) for (const b of packedBars(text)) into.push(closedBarOf(b));
  return into;
}

/** A job as the writer takes it: checked, with its defaults, its packed bars unpacked. */
export function parseBarsJob(data: unknown): BarsJob {
  const r = BARS_JOB.safeParse(data);
  if (!r.success)
    throw new Error(`a bars job of another shape: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const { packed, bars, ...rest } = r.data;
  try {
    return { ...rest, bars: packed ? unpackBars(packed, bars ?? []) : (bars ?? []) };
  } catch (err) {
    throw new Error(`a bars job of another shape: ${(err as Error).message}`);
  }
}

/**
 * A deterministic job id for a batch of bars: the identities of its first and last bar and its
 * count, so the same outbox read enqueued twice (a closer that died between enqueueing and
 * deleting) is one job.
 */
export function barsJobId(bars: readonly ClosedBar[]): string {
  return barsJobIdOf(bars[0]!, bars[bars.length - 1]!, bars.length);
}

/** barsJobId from a batch's first and last bar and its count. */
export function barsJobIdOf(first: ClosedBar, last: ClosedBar, count: number): string {
  return `${barJobId(first.interval, first.symbol, first.start, first.rev)}_${barJobId(last.interval, last.symbol, last.start, last.rev)}_${count}`;
}

/** The job that tells the writer a partition is final through `through` (EMPTY_BARS=carry). */
export function horizonJobId(partition: number, through: number): string {
  return `horizon-${partition}-${through}`;
}
