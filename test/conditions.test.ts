import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CONDITION_TABLE, ConditionRules, FINNHUB_CONDITION_CODES, conditionRules } from '@candlewick/core';
import { isTapeTrade, readTape } from '@candlewick/common';
import { describe, expect, it } from 'vitest';
import { csvPath } from '@candlewick/common';
import { agreement, minuteBars, readLeanMinutes, type OhlcvRow } from '../bench/lean.js';
import { ROOT, csvOutputs, readCsv, redisUrl, runCli, tempDir, uniquePrefix } from './helpers.js';

/**
 * Trade conditions against an independent oracle: QuantConnect Lean's own minute bars for AIG on
 * 2013-10-10 (bundled in tapes/lean-aig-20131010), built by Lean from the same consolidated prints
 * with condition filtering. The tick file goes through the real stack with CONDITIONS=cta-utp.
 */
const TICK = join(ROOT, 'tapes/lean-aig-20131010/tick/aig_20131010_trade.zip');
const MINUTE = join(ROOT, 'tapes/lean-aig-20131010/minute/aig_20131010_trade.zip');

describe('CONDITIONS=cta-utp through the whole stack', () => {
  it('builds the condition-aware bars, which match Lean’s minute bars more often than counting every print', async () => {
    const dataDir = tempDir('conditions');
    const res = await runCli(['stack'], {
      REDIS_URL: redisUrl(),
      KEY_PREFIX: uniquePrefix('conditions'),
      DATA_DIR: dataDir,
      REPLAY_TAPE: TICK,
      INTERVALS: '1min,1h',
      CONDITIONS: 'cta-utp',
      EXIT_WHEN_IDLE_MS: '500',
    });
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    // the official open and close prints restate trades already counted: left out, and said so
    expect(res.stdout).toMatch(/merged\s+\d+ \(plus [1-9]\d* whose CONDITIONS set nothing\)/);
    expect(res.stdout).toMatch(/late\s+0\n/);

    const { rows } = readCsv(csvPath(dataDir, '1min', 'AIG'));
    const ours = new Map<number, OhlcvRow>(rows.map((r) => [r.start, r]));
    // the stack's bars are exactly the aggregator's condition-aware fold of the tape
    const want = minuteBars(TICK, true);
    expect(rows.length).toBe(want.size);
    for (const [start, w] of want) expect(ours.get(start), new Date(start).toISOString()).toMatchObject(w);

    const lean = readLeanMinutes(MINUTE);
    const withRules = agreement(lean, ours);
    const plain = agreement(lean, minuteBars(TICK, false));
    expect(withRules.minutes).toBe(432);
    expect(withRules.ohlcv).toBeGreaterThan(plain.ohlcv);
    expect(withRules.volume).toBeGreaterThanOrEqual(plain.volume);
    // volume is where Lean and the table agree almost everywhere
    expect(withRules.volume / withRules.minutes).toBeGreaterThan(0.99);

    // the hour bars are the roll-up of the minute bars
    const hours = readCsv(csvPath(dataDir, '1h', 'AIG')).rows;
    for (const h of hours) {
      const inHour = rows.filter((r) => r.start >= h.start && r.start < h.start + 3_600_000);
      expect(h.volume).toBeCloseTo(
        inHour.reduce((v, r) => v + r.volume, 0),
        6,
      );
      expect(h.n).toBe(inHour.reduce((n, r) => n + r.n, 0));
      const priced = inHour.filter((r) => r.high !== 0);
      expect(h.high).toBe(Math.max(...priced.map((r) => r.high)));
      expect(h.low).toBe(Math.min(...priced.map((r) => r.low)));
    }
  });
});

describe("Finnhub's numeric condition codes", () => {
  it('a tape with Finnhub codes through the stack with CONDITIONS=cta-utp and no CONDITION_CODES gives the condition-aware bars', async () => {
    // the bundled AIG day with each named condition replaced by a Finnhub code of the same effect
    const names = new ConditionRules();
    const finnhub = conditionRules({ conditions: 'cta-utp', conditionCodes: {} })!;
    const codeFor = new Map<string, string>();
    for (const name of Object.keys(CONDITION_TABLE)) {
      const want = names.eligibility(JSON.stringify([name]));
      const exact = Object.entries(FINNHUB_CONDITION_CODES).find(([, ns]) => ns.length === 1 && ns[0] === name)?.[0];
      codeFor.set(name, exact ?? Object.keys(FINNHUB_CONDITION_CODES).find((c) => finnhub.eligibility(JSON.stringify([c])) === want)!);
    }
    const dir = tempDir('finnhub-codes');
    const tape = join(dir, 'aig-finnhub.jsonl');
    const trades = readTape(TICK).filter(isTapeTrade);
    writeFileSync(
      tape,
      trades.map((t) => JSON.stringify({ s: t.s, p: Number(t.p), v: t.v, t: t.t, c: t.c.map((n) => codeFor.get(n)!) })).join('\n'),
    );
    expect(trades.some((t) => t.c.length > 0)).toBe(true);
    const run = async (name: string, tapePath: string) => {
      const dataDir = join(dir, name);
      const res = await runCli(['stack'], {
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix(name),
        DATA_DIR: dataDir,
        REPLAY_TAPE: tapePath,
        INTERVALS: '1min,1h',
        CONDITIONS: 'cta-utp',
        EXIT_WHEN_IDLE_MS: '500',
      });
      expect(res.code, res.stdout.slice(-2000)).toBe(0);
      return { res, files: csvOutputs(dataDir) };
    };
    const named = await run('named', TICK);
    const coded = await run('coded', tape);
    // every code was known: none counted as regular for want of a map
    expect(coded.res.stdout).not.toMatch(/codes not in the table/);
    expect(coded.files).toEqual(named.files);
    // and the codes were read: the official open and close prints (Finnhub 16, 20) set nothing
    expect(coded.res.stdout).toMatch(/whose CONDITIONS set nothing/);
  });
});
