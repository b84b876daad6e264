import { readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { Clock, barFromTrade, orderKey } from '@candlewick/core';
import { CsvFiles, csvPath } from '@candlewick/common';
import { mountTmpfs, fillDisk } from './full-disk.js';
import { csvOutputs, needs, runCli, startCli, tempDir, waitFor } from './helpers.js';

/**
 * A full disk, as users meet it: the CSV folder, or the whole DATA_DIR (Redis's AOF and the log
 * files too), filling up mid-run and freed again. Small tmpfs mounts stand in for the disk, so
 * these tests need root (CI runs as root; elsewhere they say why they are skipped).
 */
const root = process.getuid?.() === 0;

/** A tmpfs of `kb` KiB at `dir`, unmounted when the test ends. */
function tmpfs(dir: string, kb: number): void {
  onTestFinished(mountTmpfs(dir, kb));
}

const clock = new Clock('America/New_York');
const T = Date.parse('2019-11-03T05:00:00Z');
const bar = (i: number) => ({ ...barFromTrade(`${100 + i}.123456`, 1234.5, orderKey(T + i * 60_000, '1-0')), trades: 7 });

describe('a full disk', () => {
  it('never leaves half a row or a file without its header: a failed append is cut back, and the next one starts clean', (ctx) => {
    needs(ctx, root, 'mounting a small tmpfs needs root');
    const dir = tempDir('enospc-unit');
    tmpfs(dir, 64);
    const files = new CsvFiles(dir, clock);
    for (let i = 0; i < 3; i++) expect(files.append('1min', 'AAPL', T + i * 60_000, bar(i))).toBe('written');
    const path = csvPath(dir, '1min', 'AAPL');
    const filler = fillDisk(dir);
    // the file's last page has room for a few rows; the row that does not fit is written in part, then refused
    let i = 3;
    let failed: unknown;
    for (; i < 200; i++) {
      try {
        files.append('1min', 'AAPL', T + i * 60_000, bar(i));
      } catch (err) {
        failed = err;
        break;
      }
    }
    expect((failed as NodeJS.ErrnoException).code).toBe('ENOSPC');
    const text = readFileSync(path, 'utf8');
    expect(text.endsWith('\n')).toBe(true);
    expect(text.trimEnd().split('\n')).toHaveLength(1 + i);
    // a new file on the full disk: created, refused, left empty — not headerless with a row
    expect(() => files.append('1min', 'MSFT', T, bar(0))).toThrow(/ENOSPC/);
    // space again: the same rows go on whole, the new file gets its header
    rmSync(filler);
    expect(files.append('1min', 'AAPL', T + i * 60_000, bar(i))).toBe('written');
    expect(files.append('1min', 'MSFT', T, bar(0))).toBe('written');
    const after = readFileSync(path, 'utf8').trimEnd().split('\n');
    expect(after).toHaveLength(2 + i);
    expect(after.slice(1).every((l) => /^2019-11-03T0\d:\d\d:00-0[45]:00,\d+\.123456,/.test(l) && l.split(',').length === 8)).toBe(true);
    expect(readFileSync(csvPath(dir, '1min', 'MSFT'), 'utf8').split('\n')[0]).toBe(
      'timestamp,open,high,low,close,vwap,volume,num_transactions',
    );
  });

  let reference: Map<string, string>;
  beforeAll(async () => {
    const dir = tempDir('disk-reference');
    const res = await runCli(['stack'], { DATA_DIR: dir });
    expect(res.code).toBe(0);
    reference = csvOutputs(dir);
  });

  it('the CSV folder fills mid-run: the writer waits, says so once, resumes by itself when space returns, and every file is byte-identical', async (ctx) => {
    needs(ctx, root, 'mounting a small tmpfs needs root');
    const dir = tempDir('enospc-csv');
    const raw = join(dir, 'raw');
    tmpfs(raw, 512);
    const filler = fillDisk(raw, 150);
    // the writer is the stack's second child: its /healthz is on METRICS_PORT + 1
    const metrics = 20_000 + Math.floor(Math.random() * 20_000);
    const stack = startCli(['stack'], {
      DATA_DIR: dir,
      REPLAY_SPEED: '20000',
      REPLAY_SHIFT: 'false',
      EXIT_WHEN_IDLE_MS: '2000',
      METRICS_PORT: String(metrics),
    });
    await waitFor(() => /appending to the CSV files failed/.test(stack.output().stdout), 90_000, 'the disk to fill');
    // health means working: a writer that cannot append says so, with the reason
    const health = await fetch(`http://127.0.0.1:${metrics + 1}/healthz`);
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({ role: 'write', ok: false, redis: 'ready', csv: expect.stringMatching(/appends failing/) });
    await new Promise((r) => setTimeout(r, 3000));
    rmSync(filler);
    await waitFor(
      async () =>
        (await fetch(`http://127.0.0.1:${metrics + 1}/healthz`).catch(() => undefined))?.status === 200 ||
        stack.output().stdout.includes('candlewick summary'),
      30_000,
      'healthy again',
    );
    const code = await stack.exited;
    const out = stack.output().stdout;
    expect(code, out.slice(-3000)).toBe(0);
    expect(out.match(/appending to the CSV files failed; retrying/g)).toHaveLength(1);
    expect(out).toMatch(/the CSV files take writes again/);
    expect(csvOutputs(dir)).toEqual(reference);
  });

  it('the whole DATA_DIR fills mid-run (Redis refuses writes, the log files stop): every role waits, nothing restarts, and every file is byte-identical once space returns', async (ctx) => {
    needs(ctx, root, 'mounting a small tmpfs needs root');
    const dir = tempDir('enospc-all');
    tmpfs(dir, 24 * 1024);
    const filler = fillDisk(dir, 3 * 1024);
    const stack = startCli(['stack'], { DATA_DIR: dir, REPLAY_SPEED: '20000', REPLAY_SHIFT: 'false', EXIT_WHEN_IDLE_MS: '3000' });
    await waitFor(() => /MISCONF|No space left|ENOSPC/.test(stack.output().stdout), 90_000, 'the disk to fill');
    await new Promise((r) => setTimeout(r, 3000));
    rmSync(filler);
    const code = await stack.exited;
    const out = stack.output().stdout;
    if (process.env.CW_DEBUG_OUT) (await import('node:fs')).writeFileSync(process.env.CW_DEBUG_OUT, out);
    expect(code, out.slice(-4000)).toBe(0);
    expect(out).not.toMatch(/exited unexpectedly|uncaught|unhandled/);
    expect(out).toMatch(/trades in\s+12477\n/);
    expect(out).toMatch(/merged\s+12477\n/);
    expect(csvOutputs(dir)).toEqual(reference);
    expect(statSync(join(dir, 'logs')).isDirectory()).toBe(true);
    expect(readdirSync(dir)).not.toContain('filler');
  });
});
