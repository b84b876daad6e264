/**
 * The garbage collector's pauses around a minute boundary, from the logs bench/gc-log.cjs writes
 * (`BENCH_WIDE_GC=DIR npm run bench:wide`): for each process (and its worker threads together),
 * the pauses that started in the FROM_MS..TO_MS after the boundary HH:MM (UTC) ends, by kind —
 * how many, their sum, median and longest — and the largest heap seen there.
 *
 *   tsx bench/gc-top.ts DIR HH:MM [FROM_MS=0] [TO_MS=5000]
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { percentile } from './wide.js';

const [dir, minute, fromArg, toArg] = process.argv.slice(2);
if (!dir || !minute || !/^\d\d:\d\d$/.test(minute)) throw new Error('usage: tsx bench/gc-top.ts DIR HH:MM [FROM_MS] [TO_MS]');
interface Pause {
  kind: string;
  at: number;
  ms: number;
  heapMb: number;
}
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.jsonl'))
  .sort();
// each file read once
const pausesOf = new Map(
  files.map((f) => [
    f,
    readFileSync(join(dir, f), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Pause),
  ]),
);
// the boundary: the last time of day HH:MM (UTC) the logs reach
const last = Math.max(...[...pausesOf.values()].flatMap((ps) => ps.map((p) => p.at)));
const day = new Date(last);
let end = Date.UTC(day.getUTCFullYear(), day.getUTCMonth(), day.getUTCDate(), Number(minute.slice(0, 2)), Number(minute.slice(3)));
if (end > last) end -= 86_400_000;
const [from, to] = [end + Number(fromArg ?? 0), end + Number(toArg ?? 5000)];
// a worker thread's log is named by its process's pid: name it after that process's role
const roleOf = new Map(
  files.filter((f) => !f.startsWith('threads-')).map((f) => [f.slice(f.lastIndexOf('-') + 1), f.slice(0, f.lastIndexOf('-'))]),
);
console.log(`garbage collection ${from - end}..${to - end} ms after ${minute} UTC's end`);
for (const [f, pauses] of pausesOf) {
  const name = f.startsWith('threads-') ? `${roleOf.get(f.slice('threads-'.length)) ?? '?'} (threads)` : f.slice(0, f.lastIndexOf('-'));
  const these = pauses.filter((p) => p.at >= from && p.at < to);
  if (these.length === 0) continue;
  const kinds = new Map<string, number[]>();
  for (const p of these) kinds.set(p.kind, [...(kinds.get(p.kind) ?? []), p.ms]);
  const total = these.reduce((n, p) => n + p.ms, 0);
  console.log(
    `  ${name.padEnd(22)} ${total.toFixed(0).padStart(5)} ms: ` +
      [...kinds]
        .map(
          ([k, ms]) =>
            `${k} ${ms.length} (${ms.reduce((a, b) => a + b, 0).toFixed(0)} ms, median ${percentile(
              [...ms].sort((a, b) => a - b),
              0.5,
            ).toFixed(1)}, longest ${Math.max(...ms).toFixed(1)})`,
        )
        .join(', ') +
      `; heap up to ${Math.max(...these.map((p) => p.heapMb))} MB`,
  );
}
