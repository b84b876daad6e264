/// <reference lib="dom" />
// (the functions given to page.evaluate run in the page)
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { correctionsPath, csvPath } from '../packages/common/src/csv.js';
import { readTape, type TapeTrade } from '../packages/common/src/tapes.js';
import { freePort } from '../packages/cli/src/redis-server.js';
import { BUNDLED_TAPE, LEAN_AIG_TAPE, readCsv, runCli, startCli, tempDir, waitFor, type CliProcess } from './helpers.js';

/**
 * The chart page in a real headless Chromium (Debian's, driven by playwright-core) during a paced
 * replay of the bundled tape under `candlewick stack`: candles drawn, the forming bar changing and
 * then closed, a switch of symbol and interval, a phone-sized screen, a screenshot.
 */
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
// As root, in a sandbox with no internet: no sandboxing of its own, no background connections.
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

interface Shown {
  ready: string;
  candles: number;
  forming: { start: number; close: number; volume: number; trades: number } | null;
  formingUpdates: number;
  closedEvents: number;
}

async function shown(page: Page): Promise<Shown> {
  return page.evaluate(() => {
    const d = document.body.dataset;
    return {
      ready: d.ready ?? '',
      candles: Number(d.candles ?? 0),
      forming: d.forming ? (JSON.parse(d.forming) as Shown['forming']) : null,
      formingUpdates: Number(d.formingUpdates ?? 0),
      closedEvents: Number(d.closedEvents ?? 0),
    };
  });
}

/** Pixels of the candle colours on the chart's canvases: candles were drawn. */
async function candlePixels(page: Page): Promise<number> {
  return page.evaluate(() => {
    let n = 0;
    for (const c of Array.from(document.querySelectorAll<HTMLCanvasElement>('#chart canvas'))) {
      const ctx = c.getContext('2d');
      if (!ctx || c.width === 0 || c.height === 0) continue;
      const px = ctx.getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < px.length; i += 4) {
        const [r, g, b] = [px[i]!, px[i + 1]!, px[i + 2]!];
        if (
          (Math.abs(r - 38) < 6 && Math.abs(g - 166) < 6 && Math.abs(b - 154) < 6) ||
          (Math.abs(r - 239) < 6 && Math.abs(g - 83) < 6 && Math.abs(b - 80) < 6)
        )
          n++;
      }
    }
    return n;
  });
}

describe('the chart page in headless Chromium', () => {
  const stacks: CliProcess[] = [];
  let browser: Browser | undefined;

  afterAll(async () => {
    await browser?.close();
    for (const s of stacks) await s.stop();
  });

  it('draws candles, follows the forming bar to its close, switches symbol and interval, fits a phone', async () => {
    if (!existsSync(CHROMIUM))
      throw new Error(`no Chromium at ${CHROMIUM}: install Debian's chromium (apt-get install chromium; .ci/run does) or set CHROMIUM_BIN`);
    const dir = tempDir('browser');
    // a second symbol's history, rebuilt in one process into the same folder (an equity day of 2013)
    const aig = await runCli(['bars', '--tape', LEAN_AIG_TAPE, '--out', dir], {});
    expect(aig.code, aig.stderr).toBe(0);
    const port = await freePort();
    // the bundled tape at 300x, stamped with the moment each trade is sent: a minute bar forms in a wall minute
    const stack = startCli(['stack'], { DATA_DIR: dir, REPLAY_SPEED: '300', HTTP_PORT: String(port), EXIT_WHEN_IDLE_MS: '0' });
    stacks.push(stack);
    const base = `http://127.0.0.1:${port}`;
    await waitFor(async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.ok === true, 60_000, 'the page');

    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    // (the symbols are listed in order, AIG first: the address picks the live one)
    await page.goto(`${base}/#symbol=BINANCE%3AXRPETH&interval=1min`);
    await page.waitForFunction(() => document.body.dataset.ready === 'BINANCE:XRPETH|1min', undefined, { timeout: 30_000 });

    // the bar forming now changes as trades are merged ...
    await page.waitForFunction(() => Number(document.body.dataset.formingUpdates ?? 0) >= 3, undefined, { timeout: 60_000 });
    // (a window that ends while it is watched: the next one is)
    let first = (await shown(page)).forming!;
    let grown = false;
    for (let i = 0; i < 3 && !grown; i++) {
      await page.waitForFunction(() => !!document.body.dataset.forming, undefined, { timeout: 30_000 });
      first = (await shown(page)).forming!;
      expect(first.trades).toBeGreaterThan(0);
      const seen = await page.waitForFunction(
        (was) => {
          const f = document.body.dataset.forming;
          if (!f) return false;
          const now = JSON.parse(f) as { start: number; trades: number };
          if (now.start !== was.start) return 'moved on';
          return now.trades > was.trades ? 'grown' : false;
        },
        first,
        { timeout: 30_000 },
      );
      grown = (await seen.jsonValue()) === 'grown';
    }
    expect(grown, 'the forming bar grew').toBe(true);
    // ... and is replaced by the closed bar when its window closes: the same bar the CSV gets
    await page.waitForFunction(
      (start) => (window as unknown as { candlewick: { bars: { start: number }[] } }).candlewick.bars.some((b) => b.start === start),
      first.start,
      { timeout: 90_000 },
    );
    const closed = await page.evaluate(
      (start) =>
        (
          window as unknown as { candlewick: { bars: { start: number; close: string; volume: string; trades: number }[] } }
        ).candlewick.bars.find((b) => b.start === start)!,
      first.start,
    );
    await waitFor(() => existsSync(csvPath(dir, '1min', 'BINANCE:XRPETH')), 10_000, 'the CSV');
    const row = readCsv(csvPath(dir, '1min', 'BINANCE:XRPETH')).rows.find((r) => r.start === first.start)!;
    expect([Number(closed.close), Number(closed.volume), closed.trades]).toEqual([row.close, row.volume, row.n]);
    expect((await shown(page)).closedEvents).toBeGreaterThanOrEqual(1);
    expect(await candlePixels(page)).toBeGreaterThan(50);
    // the status strip speaks from the pipeline's counters
    await page.waitForFunction(() => document.querySelector('[data-k="feed"]')?.textContent === 'feed connected', undefined, {
      timeout: 10_000,
    });
    await page.screenshot({ path: join(dir, 'chart-live.png') });

    // another interval, then another symbol: the history from the files, drawn
    await page.selectOption('#interval', '5min');
    await page.waitForFunction(() => document.body.dataset.ready === 'BINANCE:XRPETH|5min', undefined, { timeout: 15_000 });
    await page.selectOption('#symbol', 'AIG');
    await page.waitForFunction(() => document.body.dataset.ready === 'AIG|5min', undefined, { timeout: 15_000 });
    const aigRows = readCsv(csvPath(dir, '5min', 'AIG')).rows;
    expect((await shown(page)).candles).toBe(Math.min(aigRows.length, 1500));
    expect(await page.textContent('#legend')).toContain(aigRows.at(-1)!.timestamp);
    expect(await candlePixels(page)).toBeGreaterThan(50);
    await page.screenshot({ path: join(dir, 'chart-aig.png') });

    // a phone: nothing wider than the screen, the chart still drawn
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(300);
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    expect(await candlePixels(page)).toBeGreaterThan(20);
    await page.screenshot({ path: join(dir, 'chart-phone.png') });
    for (const f of ['chart-live.png', 'chart-aig.png', 'chart-phone.png']) expect(statSync(join(dir, f)).size).toBeGreaterThan(10_000);
    expect(errors).toEqual([]);
    await page.close();
    await stack.stop();
  }, 240_000);

  it('activity bars: drawn at their last trade, new ones live as they are cut, the bars of their file', async () => {
    if (!existsSync(CHROMIUM))
      throw new Error(`no Chromium at ${CHROMIUM}: install Debian's chromium (apt-get install chromium; .ci/run does) or set CHROMIUM_BIN`);
    const dir = tempDir('browser-activity');
    const port = await freePort();
    // the bundled tape at 2000x: a 100t bar every second or so
    const stack = startCli(['stack'], {
      DATA_DIR: dir,
      REPLAY_SPEED: '2000',
      HTTP_PORT: String(port),
      EXIT_WHEN_IDLE_MS: '0',
      INTERVALS: '1min,100t,t-imb-e100',
    });
    stacks.push(stack);
    const base = `http://127.0.0.1:${port}`;
    await waitFor(async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.ok === true, 60_000, 'the page');
    browser ??= await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${base}/#symbol=BINANCE%3AXRPETH&interval=100t`);
    await page.waitForFunction(() => document.body.dataset.ready === 'BINANCE:XRPETH|100t', undefined, { timeout: 30_000 });
    // bars arrive live (Server-Sent Events) as the closer cuts them
    await page.waitForFunction(() => Number(document.body.dataset.closedEvents ?? 0) >= 2, undefined, { timeout: 60_000 });
    const path = csvPath(dir, '100t', 'BINANCE:XRPETH');
    const drawn = await page.evaluate(() =>
      (window as unknown as { candlewick: { bars: { bar: number; end: number; close: string; time: number }[] } }).candlewick.bars.map(
        (b) => [b.bar, b.end, b.close, b.time],
      ),
    );
    const rows = readFileSync(path, 'utf8')
      .trimEnd()
      .split('\n')
      .slice(1)
      .map((r) => r.split(','));
    expect(drawn.length).toBeGreaterThan(2);
    // every bar drawn is its file's row, at its last trade's time, by number from the first
    expect(drawn.map(([n, end, close]) => [n, end, close])).toEqual(
      rows.slice(0, drawn.length).map((f) => [Number(f[0]), Date.parse(f[2]!), f[6]]),
    );
    for (const [, end, , time] of drawn) expect(Math.abs((time as number) - (end as number) / 1000)).toBeLessThan(0.01);
    expect(await candlePixels(page)).toBeGreaterThan(50);
    // imbalance bars: many end in the same millisecond, drawn all the same
    await page.selectOption('#interval', 't-imb-e100');
    await page.waitForFunction(() => document.body.dataset.ready === 'BINANCE:XRPETH|t-imb-e100', undefined, { timeout: 15_000 });
    expect((await shown(page)).candles).toBeGreaterThan(2);
    await page.screenshot({ path: join(dir, 'chart-activity.png') });
    expect(errors).toEqual([]);
    await page.close();
    await stack.stop();
  }, 180_000);

  it('redraws a bar when a late trade corrects it (LATE=amend), in place', async () => {
    const dir = tempDir('browser-amend');
    // twenty minutes of the bundled tape, and a trade of 12:01:17 (a minute of 29 trades) arriving ten minutes late
    const T = Date.parse('2019-10-11T12:01:17.123Z');
    const from = Date.parse('2019-10-11T12:00:00Z');
    const tape = (readTape(BUNDLED_TAPE) as TapeTrade[]).filter((t) => t.t >= from && t.t < from + 20 * 60_000);
    tape.splice(
      tape.findIndex((t) => t.t > T + 10 * 60_000),
      0,
      { s: 'BINANCE:XRPETH', p: '0.0015', v: 100, t: T, c: [] },
    );
    const path = join(dir, 'late.jsonl');
    writeFileSync(path, tape.map((t) => JSON.stringify(t)).join('\n'));
    const port = await freePort();
    // paced at 20x on the tape's own times: a tape minute every 3 s, the late trade ~30 s in
    const stack = startCli(['stack'], {
      DATA_DIR: dir,
      REPLAY_TAPE: path,
      REPLAY_SPEED: '20',
      REPLAY_SHIFT: 'false',
      LATE: 'amend',
      HTTP_PORT: String(port),
      EXIT_WHEN_IDLE_MS: '0',
    });
    stacks.push(stack);
    const base = `http://127.0.0.1:${port}`;
    await waitFor(async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.ok === true, 60_000, 'the page');
    browser ??= await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
    await page.goto(`${base}/#symbol=BINANCE%3AXRPETH&interval=1min`);
    await page.waitForFunction(() => document.body.dataset.ready === 'BINANCE:XRPETH|1min', undefined, { timeout: 30_000 });
    const start = Math.floor(T / 60_000) * 60_000;
    // the bar is on the page as first closed, then the correction replaces it where it stands
    await page.waitForFunction(
      (s) =>
        (window as unknown as { candlewick: { bars: { start: number; rev: number }[] } }).candlewick.bars.some(
          (b) => b.start === s && b.rev === 0,
        ),
      start,
      { timeout: 60_000 },
    );
    await page.waitForFunction(() => Number(document.body.dataset.corrections ?? 0) >= 1, undefined, { timeout: 120_000 });
    const bars = await page.evaluate(
      () =>
        (window as unknown as { candlewick: { bars: { start: number; high: string; volume: string; trades: number; rev: number }[] } })
          .candlewick.bars,
    );
    const bar = bars.find((b) => b.start === start)!;
    const row = readFileSync(correctionsPath(dir, '1min', 'BINANCE:XRPETH'), 'utf8')
      .trim()
      .split('\n')[1]!
      .split(',');
    // prices and volume as the file has them (text)
    expect([bar.rev, bar.high, bar.volume, bar.trades]).toEqual([Number(row[8]), row[2], row[6], Number(row[7])]);
    expect(bar.rev).toBe(1);
    // one bar per minute, in order: the correction was not drawn as a new bar
    expect(bars.map((b) => b.start)).toEqual([...new Set(bars.map((b) => b.start))].sort((a, b) => a - b));
    expect(await page.textContent('#legend')).toBeTruthy();
    await page.close();
  }, 240_000);
});
