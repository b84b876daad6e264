/**
 * npm run lean-check: how many of Lean's published minute bars the pipeline's 1-minute bars match,
 * with every print counted (CONDITIONS=all) and with the trade-condition table (CONDITIONS=cta-utp).
 * Reads the Lean set from ../shared/data/real/lean-usa-equity (or LEAN_DATA_DIR).
 */
import { LEAN_DIR, addAgreement, agreement, leanDays, minuteBars, readLeanMinutes, type Agreement } from './lean.js';

const days = leanDays();
if (days.length === 0) {
  process.stdout.write(`the Lean set is absent (looked in ${LEAN_DIR}); set LEAN_DATA_DIR to its folder\n`);
  process.exit(1);
}
const zero = (): Agreement => ({ minutes: 0, ohlcv: 0, volume: 0, prices: 0 });
let all = zero();
let cta = zero();
const pct = (n: number, of: number) => `${((100 * n) / of).toFixed(1)}%`;
process.stdout.write('symbol date      minutes | all: OHLCV  volume | cta-utp: OHLCV  volume\n');
for (const d of days) {
  const lean = readLeanMinutes(d.minute);
  const a = agreement(lean, minuteBars(d.tick, false));
  const c = agreement(lean, minuteBars(d.tick, true));
  all = addAgreement(all, a);
  cta = addAgreement(cta, c);
  process.stdout.write(
    `${d.symbol.padEnd(6)} ${d.date}  ${String(a.minutes).padStart(6)} | ${String(a.ohlcv).padStart(10)} ${String(a.volume).padStart(7)} | ${String(c.ohlcv).padStart(14)} ${String(c.volume).padStart(7)}\n`,
  );
}
process.stdout.write(
  `total            ${String(all.minutes).padStart(6)} | ${String(all.ohlcv).padStart(10)} ${String(all.volume).padStart(7)} | ${String(cta.ohlcv).padStart(14)} ${String(cta.volume).padStart(7)}\n` +
    `OHLCV match: ${all.ohlcv} (${pct(all.ohlcv, all.minutes)}) with every print, ${cta.ohlcv} (${pct(cta.ohlcv, cta.minutes)}) with CONDITIONS=cta-utp; ` +
    `prices alone ${all.prices} -> ${cta.prices}, volume alone ${all.volume} -> ${cta.volume}\n`,
);
