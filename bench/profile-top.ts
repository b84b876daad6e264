/**
 * Where a process's time went around minute boundaries: reads the V8 CPU profiles (.cpuprofile, from
 * `NODE_OPTIONS=--cpu-prof --cpu-prof-dir=DIR`) in a folder and prints, for each, the busy time in
 * the WINDOW_MS after every minute boundary and the functions with the most self time there.
 *
 *   tsx bench/profile-top.ts DIR [WINDOW_MS=8000] [TOP=15]
 *
 * PROFILE_MINUTE=HH:MM (UTC) keeps one boundary only (say, the one where every interval closes),
 * and prints its timeline besides: busy ms in each 100 ms from the boundary's end + 1.8 s, for
 * PROFILE_STEPS (30) steps.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface Profile {
  nodes: Node[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

const [dir, windowArg, topArg] = process.argv.slice(2);
if (!dir) throw new Error('usage: tsx bench/profile-top.ts DIR [WINDOW_MS] [TOP]');
const windowMs = Number(windowArg ?? 8000);
const top = Number(topArg ?? 15);
// V8 stamps samples on the monotonic clock (µs), as process.hrtime does: the offset to wall time
// (the same for every process since boot) places them against the minute boundaries
const wallOffsetUs = Date.now() * 1000 - Number(process.hrtime.bigint() / 1000n);
const IDLE = new Set(['(idle)', '(program)', '(garbage collector)']);
const minute = process.env.PROFILE_MINUTE;
const TIMELINE_FROM_MS = 1800;
const TIMELINE_STEPS = Number(process.env.PROFILE_STEPS ?? 30);

for (const file of readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'))) {
  const prof = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Profile;
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let t = prof.startTime + wallOffsetUs; // wall µs
  let busy = 0;
  let gc = 0;
  const timeline = new Array<number>(TIMELINE_STEPS).fill(0);
  const boundaries = new Set<number>();
  for (let i = 0; i < prof.samples.length; i++) {
    const dt = prof.timeDeltas[i] ?? 0;
    t += dt;
    const ms = t / 1000;
    const since = ms % 60_000;
    if (since >= windowMs) continue;
    if (minute && new Date(ms).toISOString().slice(11, 16) !== minute) continue;
    boundaries.add(Math.floor(ms / 60_000));
    const n = byId.get(prof.samples[i]!)!;
    const name = n.callFrame.functionName || '(anonymous)';
    if (name === '(garbage collector)') gc += dt;
    if (IDLE.has(name) && name !== '(garbage collector)') continue;
    busy += dt;
    const step = Math.floor((since - TIMELINE_FROM_MS) / 100);
    if (step >= 0 && step < TIMELINE_STEPS) timeline[step] = (timeline[step] ?? 0) + dt / 1000;
    const url = n.callFrame.url.replace(/^.*\/(node_modules|packages)\//, '$1/');
    const key = `${name} ${url}:${n.callFrame.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + dt);
  }
  const per = boundaries.size || 1;
  process.stdout.write(
    `${file}: ${boundaries.size} boundaries, busy ${(busy / 1000 / per).toFixed(0)} ms per boundary in its first ${windowMs} ms (gc ${(gc / 1000 / per).toFixed(0)} ms)\n`,
  );
  if (minute) process.stdout.write(`  timeline: ${timeline.map((v) => v.toFixed(0)).join(' ')}\n`);
  for (const [key, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top))
    process.stdout.write(`  ${(us / 1000 / per).toFixed(0).padStart(6)} ms  ${key}\n`);
}
