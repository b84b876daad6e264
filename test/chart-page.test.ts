/// <reference lib="dom" />
// (the functions given to page.evaluate run in the page)
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DateTime } from 'luxon';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { csvPath } from '../packages/common/src/csv.js';
import { freePort } from '../packages/cli/src/redis-server.js';
import { redisUrl, startCli, tempDir, uniquePrefix, waitFor, type CliProcess } from './helpers.js';

/**
 * The chart page in headless Chromium over files alone (`serve` with a token, no pipeline): the
 * November DST night's axis in New York time with bars at their true instants (its labels read back
 * from a screenshot), a daily bar labelled by its date, prices with the decimals they were written
 * with, a shared link kept across the sign-in, Bull Board with no request beyond this server; and,
 * under a stack whose market has gone quiet, the forming bar on a second page.
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

/**
 * Every fillText of the page, with how and where (run before the page's scripts): the texts the
 * chart draws on its canvases, to be found again in a screenshot. `frame` numbers the animation
 * frames, so the last paint of a canvas can be told from earlier ones.
 */
function recordCanvasText(): void {
  type Draw = {
    text: string;
    x: number;
    y: number;
    font: string;
    fillStyle: unknown;
    textAlign: string;
    textBaseline: string;
    m: number[];
    canvas: HTMLCanvasElement;
    frame: number;
  };
  const draws: Draw[] = [];
  let frame = 0;
  const tick = () => {
    frame++;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  const fillText = CanvasRenderingContext2D.prototype.fillText;
  CanvasRenderingContext2D.prototype.fillText = function (
    this: CanvasRenderingContext2D,
    text: string,
    x: number,
    y: number,
    maxWidth?: number,
  ) {
    const t = this.getTransform();
    draws.push({
      text: String(text),
      x,
      y,
      font: this.font,
      fillStyle: this.fillStyle,
      textAlign: this.textAlign,
      textBaseline: this.textBaseline,
      m: [t.a, t.b, t.c, t.d, t.e, t.f],
      canvas: this.canvas,
      frame,
    });
    return maxWidth === undefined ? fillText.call(this, text, x, y) : fillText.call(this, text, x, y, maxWidth);
  };
  (window as unknown as { canvasText: Draw[] }).canvasText = draws;
}

/**
 * The time-axis labels read from a screenshot: for each label of the axis canvas's last paint, the
 * screenshot's pixels where it was drawn, against that place drawn afresh (same font, colour,
 * alignment, transform) with each label of the paint in turn, compared by their ink (the pixels
 * that differ from the strip's background): `read` is the label whose drawing the screenshot
 * matches best, `match` how well (ink in both / ink in either).
 */
async function labelsInScreenshot(
  page: Page,
  png: Buffer,
  label: RegExp,
): Promise<{ drawn: string; read: string; match: number; whole: boolean }[]> {
  return page.evaluate(
    async ({ png, source }) => {
      type Draw = {
        text: string;
        x: number;
        y: number;
        font: string;
        fillStyle: string;
        textAlign: CanvasTextAlign;
        textBaseline: CanvasTextBaseline;
        m: number[];
        canvas: HTMLCanvasElement;
        frame: number;
      };
      const re = new RegExp(source);
      const all = (window as unknown as { canvasText: Draw[] }).canvasText.filter((d) => re.test(d.text) && d.canvas.isConnected);
      const canvas = all.at(-1)!.canvas;
      const lastFrame = Math.max(...all.filter((d) => d.canvas === canvas).map((d) => d.frame));
      const paint = all.filter((d) => d.canvas === canvas && d.frame === lastFrame);
      const img = new Image();
      img.src = `data:image/png;base64,${png}`;
      await img.decode();
      const shot = document.createElement('canvas');
      shot.width = img.width;
      shot.height = img.height;
      const sctx = shot.getContext('2d', { willReadFrequently: true })!;
      sctx.drawImage(img, 0, 0);
      const rect = canvas.getBoundingClientRect();
      const scale = rect.width / canvas.width; // CSS pixels per canvas pixel (1 at devicePixelRatio 1)
      const dark = (d: Uint8ClampedArray, i: number, bg: number[]) =>
        Math.abs(d[i]! - bg[0]!) + Math.abs(d[i + 1]! - bg[1]!) + Math.abs(d[i + 2]! - bg[2]!) > 90;
      return paint.map((d) => {
        // the label's box in canvas pixels, then on the page, with a margin
        const probe = document.createElement('canvas').getContext('2d')!;
        Object.assign(probe, { font: d.font, textAlign: d.textAlign, textBaseline: d.textBaseline });
        const w = Math.max(...paint.map((o) => probe.measureText(o.text).width));
        const mt = probe.measureText(d.text);
        const [a, , , dd, e, f] = d.m as [number, number, number, number, number, number];
        const cx = a * (d.x - mt.actualBoundingBoxLeft + (mt.actualBoundingBoxLeft + mt.actualBoundingBoxRight) / 2) + e;
        const top = dd * (d.y - mt.actualBoundingBoxAscent) + f - 3;
        const bottom = dd * (d.y + mt.actualBoundingBoxDescent) + f + 3;
        const left = Math.floor(cx - (a * w) / 2 - 3);
        const width = Math.ceil(a * w + 6);
        const height = Math.ceil(bottom - top);
        const px = Math.round(rect.left + left * scale);
        const py = Math.round(rect.top + Math.floor(top) * scale);
        const crop = sctx.getImageData(px, py, width, height).data;
        // the background: the strip's commonest colour there
        const counts = new Map<number, number>();
        for (let i = 0; i < crop.length; i += 4) {
          const k = (crop[i]! << 16) | (crop[i + 1]! << 8) | crop[i + 2]!;
          counts.set(k, (counts.get(k) ?? 0) + 1);
        }
        const k = [...counts].sort((x, y) => y[1] - x[1])[0]![0];
        const bg = [(k >> 16) & 255, (k >> 8) & 255, k & 255];
        const scores = paint.map((other) => {
          const ref = document.createElement('canvas');
          ref.width = width;
          ref.height = height;
          const r = ref.getContext('2d', { willReadFrequently: true })!;
          r.fillStyle = `rgb(${bg.join(',')})`;
          r.fillRect(0, 0, width, height);
          r.setTransform(a, 0, 0, dd, e - left, f - Math.floor(top));
          Object.assign(r, { font: d.font, fillStyle: d.fillStyle, textAlign: d.textAlign, textBaseline: d.textBaseline });
          r.fillText(other.text, d.x, d.y);
          const want = r.getImageData(0, 0, width, height).data;
          let both = 0;
          let either = 0;
          for (let i = 0; i < crop.length; i += 4) {
            const x = dark(crop, i, bg);
            const y = dark(want, i, bg);
            if (x && y) both++;
            if (x || y) either++;
          }
          return { text: other.text, match: either === 0 ? 0 : both / either };
        });
        const best = scores.reduce((x, y) => (y.match > x.match ? y : x));
        // (a label the canvas's edge cuts is cut in the screenshot too, not in the drawing afresh)
        const whole = left >= 0 && left + width <= canvas.width;
        return { drawn: d.text, read: best.text, match: Math.round(best.match * 100) / 100, whole };
      });
    },
    { png: png.toString('base64'), source: label.source },
  );
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
    await context.addInitScript(recordCanvasText);
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
    // the same labels read in a screenshot: each drawn where the page says, and told from the others
    const shot = await page.screenshot({ path: join(dir, 'dst-night.png') });
    const read = await labelsInScreenshot(page, shot, /^(\d{2}:\d{2}( E[DS]T)?|11-01)$/);
    expect(read.map((r) => r.drawn)).toEqual(expect.arrayContaining(['01:00 EDT', '01:00 EST']));
    for (const r of read) {
      expect(r.read, JSON.stringify(read)).toBe(r.drawn);
      if (r.whole) expect(r.match, JSON.stringify(read)).toBeGreaterThan(0.9);
    }
    expect(new Set(read.map((r) => r.drawn)).size).toBe(read.length);

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
