#!/usr/bin/env node
// The comparison `npm run bench` times against `candlewick bars`, as a whole process: a tape read
// from disk, offline, and folded into 1min, 5min, 15min, 30min and 1h time bars by tardis-dev's
// compute() with computeTradeBars, fed the trades through its custom-message-stream API. Bars stay
// in memory (candlewick also validates every trade and writes CSV files). Plain JavaScript run by
// node, as a user of tardis-dev would write it: no TypeScript loader in the timing.
//
//   node bench/tardis-bars.mjs <tape>   a *.jsonl file ({s,p,v,t,c} per line), Binance aggTrades
//                                       (*.json[.gz], the bundled tape), or a comma list of Lean
//                                       *_yyyymmdd_trade.zip tick files (merged by time)
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { unzipSync, strFromU8 } from 'fflate';
import { DateTime } from 'luxon';
import { compute, computeTradeBars } from 'tardis-dev';

const INTERVALS_MS = [60_000, 300_000, 900_000, 1_800_000, 3_600_000];

function trade(symbol, price, amount, t, id) {
  const timestamp = new Date(t);
  return { type: 'trade', symbol, exchange: 'lean', id: String(id), price, amount, side: 'unknown', timestamp, localTimestamp: timestamp };
}

/** A Lean tick zip: ms since New York midnight, price x 10000, quantity, ... */
function leanTrades(file) {
  const m = /^([a-z0-9.]+)_(\d{4})(\d{2})(\d{2})_trade\.zip$/i.exec(basename(file));
  if (!m) throw new Error(`${file}: not a Lean <symbol>_<yyyymmdd>_trade.zip`);
  const symbol = m[1].toUpperCase();
  const midnight = DateTime.fromObject({ year: +m[2], month: +m[3], day: +m[4] }, { zone: 'America/New_York' }).toMillis();
  const csv = Object.values(unzipSync(readFileSync(file)))[0];
  const out = [];
  for (const line of strFromU8(csv).split('\n')) {
    if (line.length < 3) continue;
    const f = line.split(',');
    out.push(trade(symbol, Number(f[1]) / 10000, Number(f[2]), midnight + Number(f[0]), out.length));
  }
  return out;
}

function jsonlTrades(file) {
  const out = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (line.trim() === '') continue;
    const r = JSON.parse(line);
    out.push(trade(r.s, Number(r.p), Number(r.v), r.t, out.length));
  }
  return out;
}

/** Binance aggTrades as ccxt records (the bundled tape): info.p price, info.q quantity, info.T time. */
function binanceTrades(file) {
  const buf = readFileSync(file);
  const records = JSON.parse((file.endsWith('.gz') ? gunzipSync(buf) : buf).toString('utf8'));
  return records.map((r, i) => trade(r.symbol, Number(r.info.p), Number(r.info.q), r.info.T, i));
}

const tradesOf = (file) => (file.endsWith('.zip') ? leanTrades(file) : /\.jsonl$/.test(file) ? jsonlTrades(file) : binanceTrades(file));

/** Several files in event-time order (a stable sort keeps file order for equal times). */
function readTrades(spec) {
  const files = spec.split(',').filter(Boolean);
  const all = files.flatMap(tradesOf);
  return files.length > 1 ? all.sort((a, b) => a.timestamp - b.timestamp) : all;
}

async function* feed(trades) {
  yield* trades;
}

const spec = process.argv[2];
if (!spec) {
  process.stderr.write('usage: node bench/tardis-bars.mjs <tape.jsonl | aggTrades.json[.gz] | lean zips, comma-separated>\n');
  process.exit(2);
}
const t0 = performance.now();
const trades = readTrades(spec);
const bars = {};
const factories = INTERVALS_MS.map((interval) => computeTradeBars({ kind: 'time', interval }));
for await (const m of compute(feed(trades), ...factories)) if (m.type === 'trade_bar') bars[m.name] = (bars[m.name] ?? 0) + 1;
const seconds = (performance.now() - t0) / 1000;
process.stdout.write(`tardis-dev: ${trades.length} trades, bars ${JSON.stringify(bars)}, ${seconds.toFixed(2)} s\n`);
