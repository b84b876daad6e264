import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { z } from 'zod';
import { ConfigError } from '@candlewick/common';

/**
 * The benchmarks' and data checks' settings, read once from the environment like the pipeline's own
 * (a zod schema; a bad value names the variable and the rule).
 */
export const ROOT = fileURLToPath(new URL('../', import.meta.url));

const BENCH_ENV = z.object({
  /** tape to replay (default: one day of the four Lean symbols in ../shared/data/real) */
  BENCH_TAPE: z.string().optional(),
  /** stack setups to run, partitions x aggregators */
  BENCH_SETUPS: z
    .string()
    .regex(/^\d+x\d+(,\d+x\d+)*$/, 'must be a comma list of PARTITIONSxAGGREGATORS, e.g. 1x1,2x2')
    .transform((v) => v.split(',').map((s) => s.split('x').map(Number) as [number, number]))
    .default([
      [1, 1],
      [2, 1],
      [2, 2],
    ]),
  /** another candlewick checkout (built): its stack runs too, and the CPU per trade is compared */
  BENCH_BASELINE: z.string().optional(),
  /** in-process runs of each side */
  BENCH_INPROCESS_RUNS: z
    .string()
    .regex(/^[1-9]\d*$/, 'must be a whole number of at least 1')
    .transform(Number)
    .default(5),
  /** what to run: everything, or only the commands as whole processes (section 6), the PostgreSQL sink (section 8) or the activity bars (section 5b) */
  BENCH_PART: z.enum(['all', 'commands', 'pg', 'activity'], { message: 'must be all, commands, pg or activity' }).default('all'),
  /** rows the PostgreSQL sink's section writes (the tape's bars repeated over copies of its symbols) */
  BENCH_PG_ROWS: z
    .string()
    .regex(/^[1-9]\d*$/, 'must be a whole number of rows, at least 1')
    .transform(Number)
    .default(200_000),
  /** runs of each command as a whole process; the best is reported */
  BENCH_COMMAND_RUNS: z
    .string()
    .regex(/^[1-9]\d*$/, 'must be a whole number of at least 1')
    .transform(Number)
    .default(5),
  /** runs per figure; the median is reported */
  BENCH_RUNS: z
    .string()
    .regex(/^[1-9]\d*$/, 'must be a whole number of at least 1')
    .transform(Number)
    .default(3),
  /** print each run's stack summary */
  BENCH_VERBOSE: z
    .string()
    .optional()
    .transform((v) => v !== undefined && v !== '' && v !== '0' && v !== 'false'),
  /** the Lean US equity set (tick and minute zips) */
  LEAN_DATA_DIR: z.string().default(join(ROOT, '../shared/data/real/lean-usa-equity')),
  /** the wide-universe setup: symbols (0 leaves it out), the tape's seconds at live pace */
  BENCH_WIDE_SYMBOLS: z.string().regex(/^\d+$/, 'must be a whole number (0: no wide-universe run)').transform(Number).default(8000),
  BENCH_WIDE_SECONDS: z
    .string()
    .regex(/^[1-9]\d*$/, 'must be a whole number of seconds')
    .transform(Number)
    .default(130),
  /** the wide-universe setup: pg-sink on too, into a private PostgreSQL, and its lag per boundary */
  BENCH_WIDE_PG: z
    .string()
    .optional()
    .transform((v) => v !== undefined && v !== '' && v !== '0' && v !== 'false'),
  /** bench:wide: the bars' zone (BAR_TZ); in a half-hour zone (Asia/Kolkata) the hour ends at :30 UTC, where every interval closes at once */
  BENCH_WIDE_TZ: z.string().optional(),
  /** bench:wide: more settings for its stack, as NAME=value pairs split by spaces (STACK_FEED_NICE=0 to compare) */
  BENCH_WIDE_ENV: z
    .string()
    .optional()
    .transform((v, ctx) => {
      const env: Record<string, string> = {};
      for (const pair of (v ?? '').split(/\s+/).filter(Boolean)) {
        const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(pair);
        if (!m) {
          ctx.addIssue({ code: 'custom', message: `"${pair}" is not NAME=value` });
          return z.NEVER;
        }
        env[m[1]!] = m[2]!;
      }
      return env;
    }),
  /** the wide-universe setup: write each process's V8 CPU profile into this folder (bench/profile-top.ts reads them) */
  BENCH_WIDE_PROFILE: z.string().optional(),
  /** the wide-universe setup: every process logs its garbage collector's pauses into this folder (bench/gc-top.ts reads them) */
  BENCH_WIDE_GC: z.string().optional(),
  /** the soak (npm run bench:soak): how long, how many symbols, and the slope under which memory counts as flat */
  SOAK_MINUTES: z
    .string()
    .regex(/^[1-9]\d*$/, 'must be a whole number of minutes')
    .transform(Number)
    .default(120),
  SOAK_SYMBOLS: z
    .string()
    .regex(/^[1-9]\d*$/, 'must be a whole number of symbols')
    .transform(Number)
    .default(8000),
  SOAK_FLAT_MB_PER_HOUR: z
    .string()
    .regex(/^\d+(\.\d+)?$/, 'must be a number of MB per hour')
    .transform(Number)
    .default(10),
  /** the redis-server binary the benchmark starts */
  REDIS_SERVER_BIN: z.string().default('redis-server'),
});

export type BenchSettings = z.infer<typeof BENCH_ENV>;

export function benchSettings(env: Record<string, string | undefined> = process.env): BenchSettings {
  const r = BENCH_ENV.safeParse(Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== '')));
  if (!r.success) throw new ConfigError(r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`));
  return r.data;
}
