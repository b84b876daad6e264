/**
 * npm run bench:wide: the wide-universe setup alone, at full size (BENCH_WIDE_SYMBOLS, default
 * 8,000, over BENCH_WIDE_SECONDS of tape at live pace); `npm run bench` runs a shorter form of it.
 */
import { join } from 'node:path';
import { ROOT, benchSettings } from './settings.js';
import { DEFAULT_WIDE_INTERVALS, runWide, wideReport, type WideOptions } from './wide.js';
import { WIDE_DEFAULTS } from './wide-tape.js';
import { startWidePg, wideSinkReport } from './wide-pg.js';

const settings = benchSettings();
const out = (line = '') => process.stdout.write(`${line}\n`);
const o: WideOptions = {
  ...WIDE_DEFAULTS,
  symbols: settings.BENCH_WIDE_SYMBOLS || WIDE_DEFAULTS.symbols,
  seconds: settings.BENCH_WIDE_SECONDS,
  root: settings.BENCH_BASELINE ?? ROOT,
  graceMs: 2000,
  aggregators: 2,
  intervals: DEFAULT_WIDE_INTERVALS,
  redisServerBin: settings.REDIS_SERVER_BIN,
  exact: true,
  env: {
    ...settings.BENCH_WIDE_ENV,
    ...(settings.BENCH_WIDE_TZ ? { BAR_TZ: settings.BENCH_WIDE_TZ } : {}),
    ...(settings.BENCH_WIDE_PROFILE ? { BENCH_PROFILE_DIR: settings.BENCH_WIDE_PROFILE } : {}),
    ...(settings.BENCH_WIDE_GC ? { BENCH_GC_DIR: settings.BENCH_WIDE_GC } : {}),
    // every process the stack starts loads these (a CPU profile, a log of the collector's pauses)
    ...(settings.BENCH_WIDE_PROFILE || settings.BENCH_WIDE_GC
      ? {
          NODE_OPTIONS: [
            ...(settings.BENCH_WIDE_PROFILE ? [`--require ${join(ROOT, 'bench/cpu-profile.cjs')}`] : []),
            ...(settings.BENCH_WIDE_GC ? [`--require ${join(ROOT, 'bench/gc-log.cjs')}`] : []),
          ].join(' '),
        }
      : {}),
  },
  log: (l) => out(`  ${l}`),
};
out(
  `Wide universe at live pace (CLOCK=wall${settings.BENCH_WIDE_TZ ? `, BAR_TZ=${settings.BENCH_WIDE_TZ}` : ''}${Object.entries(
    settings.BENCH_WIDE_ENV,
  )
    .map(([k, v]) => `, ${k}=${v}`)
    .join('')})${settings.BENCH_WIDE_PG ? ', pg-sink on (BENCH_WIDE_PG)' : ''}`,
);
const pg = settings.BENCH_WIDE_PG ? await startWidePg() : undefined;
const r = await runWide({ ...o, pg }).finally(() => pg?.stop());
for (const line of wideReport(o, r)) out(line);
if (r.sink) for (const line of wideSinkReport(r.sink, o.graceMs)) out(line);
out(
  `  worst bars: ${r.worst.map((w) => `${w.interval} ${w.symbol} ${new Date(w.start).toISOString().slice(11, 16)} ${w.lag} ms`).join('; ')}`,
);
if (settings.BENCH_VERBOSE) out(r.stdout.slice(r.stdout.indexOf('candlewick summary')));
if (r.missing.length || r.exact?.problems.length || r.sink?.missing) {
  for (const p of r.exact?.problems ?? []) out(p);
  process.exitCode = 1;
}
