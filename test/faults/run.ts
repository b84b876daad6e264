/**
 * `npm run faults`: the fault campaign over several seeds (FAULT_SEEDS, default 1-3; FAULTS, a comma
 * list of fault names, default all), then its table. Exit 1 when any run was not exact.
 */
import { FAULTS, canRun, referenceRun, runFault, table, type FaultRun } from './campaign.js';

function seeds(spec: string): number[] {
  const [a, b] = spec.split('-').map(Number);
  return Array.from({ length: (b ?? a!) - a! + 1 }, (_, i) => a! + i);
}

const wanted = (
  process.env.FAULTS ??
  Object.keys(FAULTS)
    .filter((f) => f !== 'Redis killed 35 s' && f !== 'Redis paused 10 s')
    .join(',')
)
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
const list = seeds(process.env.FAULT_SEEDS ?? '1-3');
const reference = await referenceRun();
const runs: FaultRun[] = [];
for (const name of wanted) {
  if (!canRun(name)) {
    process.stdout.write(
      `skipped "${name}": it needs ${FAULTS[name]?.root ? 'root (a tmpfs mount)' : "libfaketime (Debian's faketime)"}\n`,
    );
    continue;
  }
  for (const seed of list) {
    const r = await runFault(name, seed, reference);
    runs.push(r);
    process.stdout.write(
      `${name} seed ${seed}: ${r.exact && r.problems.length === 0 ? 'exact' : `NOT EXACT: ${r.problems.join('; ')}`} (exit ${r.code}, trades in ${r.tradesIn}, merged ${r.merged}, longest stall ${(r.stallMs / 1000).toFixed(1)} s)\n`,
    );
  }
}
process.stdout.write(`\n${table(runs)}\n`);
process.exit(runs.every((r) => r.exact && r.problems.length === 0) ? 0 : 1);
