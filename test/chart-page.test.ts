/// <reference lib="dom" />
// (the functions given to page.evaluate run in the page)
import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DateTime } from 'luxon';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { csvPath } from '../packages/common/src/csv.js';
import { freePort } from '../packages/cli/src/redis-server.js';
import { redisUrl, startCli, tempDir, uniquePrefix, waitFor, type CliProcess } from './helpers.js';

/**
 * The chart page in headless Chromium over files alone (`serve` with a token, no pipeline): the
 * November DST night's axis in New York time with bars at their true instants, a daily bar labelled
 * by its date, prices with the decimals they were written with, a shared link kept across the
 * sign-in, Bull Board with no request beyond this server; and, under a stack whose market has gone
 * quiet, the forming bar on a second page.
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
const TZ = 'America/New_York';
const TOKEN = 'tok-page-5b1e0c9d';

type Page$ = { candlewick: { bars: { start: number; time: number }[]; axisLabels: Record<string, string>; precision: number } };

const ready = (page: Page, what: string) => page.waitForFunction((w) => document.body?.dataset.ready === w, what, { timeout: 30_000 });

/** The time-axis labels the page drew, after two frames. */
async function axisLabels(page: Page): Promise<string[]> {
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  return page.evaluate(() => Object.values((window as unknown as Page$).candlewick.axisLabels));
}

describe('the chart page over files, in headless Chromium', () => {
  let browser: Browser;
  const running: CliProcess[] = [];

  beforeAll(async () => {
    if (!existsSync(CHROMIUM))
      throw new Error(`no Chromium at ${CHROMIUM}: install Debian's chromium (apt-get install chromium; .ci/run does) or set CHROMIUM_BIN`);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });

  afterAll(async () => {
    await browser?.close();
    for (const p of running) await p.stop();
  });

  it('the DST night at true instants with New York labels, a daily bar by its date, the sign-in keeping the link, no request off-host', async () => {
    const dir = tempDir('chart-page');
    const write = (interval: string, lines: string[]) => {
      const path = csvPath(dir, interval, 'BINANCE:NIGHTUSD');
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, `timestamp,open,high,low,close,vwap,volume,num_transactions\n${lines.join('\n')}\n`);
    };
    // 5-minute bars of a 24/7 symbol from 00:00 EDT to 03:00 EST on 2026-11-01: 01:00–02:00 happens twice
    const from = Date.parse('2026-11-01T04:00:00Z');
    const night: string[] = [];
    for (let t = from; t < from + 4 * 3_600_000; t += 300_000) {
      const label = DateTime.fromMillis(t, { zone: TZ }).toISO({ suppressMilliseconds: true })!;
      night.push(`${label},1.10,1.25,1.05,1.20,1.1534482758620689655,10,3`);
    }
    write('5min', night);
    // one daily bar, of tiny prices
    write('1d', ['2026-11-01,0.00000012,0.00000015,0.00000010,0.00000013,0.000000127,4000,2']);

    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    running.push(
      startCli(['serve'], {
        REDIS_URL: redisUrl(),
        KEY_PREFIX: uniquePrefix('chart-page'),
        DATA_DIR: dir,
        INTERVALS: '1min,5min,1d',
        CLOCK: 'wall',
        HTTP_PORT: String(port),
        HTTP_TOKEN: TOKEN,
      }),
    );
    await waitFor(async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.ok === true, 30_000, 'serve');

    const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
    const requests: string[] = [];
    context.on('request', (r) => requests.push(r.url()));
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));

    // a shared link: the sign-in first, then the chart it names (not the first interval, 1min)
    await page.goto(`${base}/#symbol=BINANCE_NIGHTUSD&interval=5min`);
    await page.waitForURL(/\/login\.html/);
    await page.fill('input[name=token]', TOKEN);
    await page.click('button[type=submit]');
    await page.waitForURL((u) => u.pathname === '/');
    await ready(page, 'BINANCE_NIGHTUSD|5min');
    expect(new URL(page.url()).hash).toBe('#symbol=BINANCE_NIGHTUSD&interval=5min');

    // every bar at its true instant: 5 minutes apart through the repeated hour (not squeezed a second apart)
    const bars = await page.evaluate(() => (window as unknown as Page$).candlewick.bars);
    expect(bars.length).toBe(48);
    expect(bars.slice(1).map((b, i) => b.time - bars[i]!.time)).toEqual(Array<number>(47).fill(300));
    // the axis in New York time: both 01:00s, told apart by their zone, no label twice
    const labels = await axisLabels(page);
    expect(labels).toEqual(expect.arrayContaining(['01:00 EDT', '01:00 EST']));
    expect(new Set(labels).size).toBe(labels.length);
    expect(
      labels.every((l) => /^(\d{2}:\d{2}( E[DS]T)?|11-01)$/.test(l)),
      labels.join(' | '),
    ).toBe(true);
    // the legend's VWAP with the prices' decimals; the strip: no pipeline, and no "event clock" under CLOCK=wall
    expect(await page.textContent('#legend')).toContain('VWAP 1.15 ');
    await page.waitForFunction(() => !document.querySelector('[data-k="feed"]')?.textContent?.includes('…'), undefined, {
      timeout: 10_000,
    });
    expect(await page.textContent('[data-k="feed"]')).toBe('files only: no pipeline');
    expect(await page.textContent('[data-k="lag"]')).toBe('close lag — (no bar closed yet)');
    await page.screenshot({ path: join(dir, 'dst-night.png') });
    expect(statSync(join(dir, 'dst-night.png')).size).toBeGreaterThan(10_000);

    // a single daily bar: labelled by its date, tiny prices with all their decimals
    await page.selectOption('#interval', '1d');
    await ready(page, 'BINANCE_NIGHTUSD|1d');
    const days = await axisLabels(page);
    expect(days.length).toBeGreaterThan(0);
    expect(
      days.every((l) => /^\d{4}(-\d{2}){0,2}$/.test(l)),
      days.join(' | '),
    ).toBe(true);
    expect(await page.evaluate(() => (window as unknown as Page$).candlewick.precision)).toBe(8);
    expect(await page.textContent('#legend')).toContain('2026-11-01  O 0.00000012');
    await page.screenshot({ path: join(dir, 'one-day.png') });

    // Bull Board, signed in: drawn from this server alone
    const board = await context.newPage();
    await board.goto(`${base}/queues/`);
    await board.waitForLoadState('networkidle');
    expect(await board.title()).toMatch(/candlewick queues/);
    const offHost = requests.filter((u) => !u.startsWith(`${base}/`) && !u.startsWith('data:'));
    expect(offHost).toEqual([]);
    expect(errors).toEqual([]);
    await context.close();
  }, 90_000);

  it('a second page opened while the market is quiet shows the bar forming', async () => {
    const dir = tempDir('chart-quiet');
    // a few trades, then nothing: the last minute's bar stays forming while the stack runs on
    const at = (hms: string) => Date.parse(`2024-03-05T${hms}Z`);
    const tape = join(dir, 'quiet.jsonl');
    const trades = ['10:00:10', '10:00:40', '10:01:05', '10:01:20', '10:01:30'].map((t, i) =>
      JSON.stringify({ s: 'BINANCE:QUIETUSD', p: `2.${i}0`, v: 1, t: at(t), c: [] }),
    );
    writeFileSync(tape, trades.join('\n'));
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    running.push(
      startCli(['stack'], { DATA_DIR: dir, REPLAY_TAPE: tape, INTERVALS: '1min', HTTP_PORT: String(port), EXIT_WHEN_IDLE_MS: '0' }),
    );
    await waitFor(async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.ok === true, 60_000, 'the page');
    const open = async () => {
      const page = await browser.newPage({ viewport: { width: 1000, height: 600 } });
      await page.goto(`${base}/#symbol=BINANCE%3AQUIETUSD&interval=1min`);
      await ready(page, 'BINANCE:QUIETUSD|1min');
      await page.waitForFunction(() => !!document.body.dataset.forming, undefined, { timeout: 20_000 });
      return {
        page,
        forming: JSON.parse((await page.evaluate(() => document.body.dataset.forming))!) as { start: number; trades: number },
      };
    };
    const first = await open();
    expect(first.forming).toMatchObject({ start: at('10:01:00'), trades: 3 });
    // the market is quiet: nothing changes, and a page opened now is sent the forming bar all the same
    const second = await open();
    expect(second.forming).toEqual(first.forming);
    await first.page.close();
    await second.page.close();
  }, 90_000);
});
