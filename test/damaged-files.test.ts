import { mkdirSync, readFileSync, readdirSync, truncateSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { csvPath } from '@candlewick/common';
import { csvOutputs, runCli, startCli, tempDir, waitFor } from './helpers.js';

/**
 * CSV files damaged by hand or by a crash: a garbage last line, a row cut short, rows deleted from
 * the end while the writer runs. The damaged file is set aside (renamed, reported) and every other
 * file keeps flowing; a partial row is cut back; missing rows are noticed, said and written again.
 */
let reference: Map<string, string>;
beforeAll(async () => {
  const dir = tempDir('damaged-reference');
  const res = await runCli(['stack'], { DATA_DIR: dir });
  expect(res.code).toBe(0);
  reference = csvOutputs(dir);
});

const file = (dir: string, interval: string) => csvPath(dir, interval, 'BINANCE:XRPETH');

function put(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
}

describe('damaged CSV files', () => {
  it('a file whose last line is garbage is set aside and reported; a row cut short is cut back; every other file flows', async () => {
    const dir = tempDir('damaged');
    const ref1m = reference.get('1min/BINANCE_XRPETH_1min.csv')!;
    const ref5m = reference.get('5min/BINANCE_XRPETH_5min.csv')!;
    // 1min: the first 100 rows of a previous run, then a line someone typed
    const rows1m = ref1m.split('\n');
    put(file(dir, '1min'), `${rows1m.slice(0, 101).join('\n')}\nthis is not a row\n`);
    // 5min: the first 40 rows, then half of the 41st (a process killed mid-write)
    const rows5m = ref5m.split('\n');
    put(file(dir, '5min'), `${rows5m.slice(0, 41).join('\n')}\n${rows5m[41]!.slice(0, 20)}`);
    const res = await runCli(['stack'], { DATA_DIR: dir });
    expect(res.code, res.stdout.slice(-3000)).toBe(0);
    expect(res.stdout).toMatch(
      /a CSV file could not be read back: set it aside and started a new one .*reason=its last row is not a bar row: "this is not a row"/,
    );
    expect(res.stdout).toMatch(/cut a partial last row .*BINANCE_XRPETH_5min\.csv/);
    // the damaged file is kept aside as it was; the new one has every bar of this run
    const aside = readdirSync(join(dir, 'raw', '1min')).filter((f) => f.includes('.damaged-'));
    expect(aside).toHaveLength(1);
    expect(readFileSync(join(dir, 'raw', '1min', aside[0]!), 'utf8')).toMatch(/this is not a row\n$/);
    expect(readFileSync(file(dir, '1min'), 'utf8')).toBe(ref1m);
    // the cut file continues from its last whole row: the same bytes as a run that was never cut
    expect(readFileSync(file(dir, '5min'), 'utf8')).toBe(ref5m);
    for (const iv of ['15min', '30min', '1h'])
      expect(readFileSync(file(dir, iv), 'utf8'), iv).toBe(reference.get(`${iv}/BINANCE_XRPETH_${iv}.csv`));
  });

  it('rows deleted from the end of a file while the writer runs are noticed, said, and written again from bars:{interval}', async () => {
    const dir = tempDir('rows-missing');
    const stack = startCli(['stack'], { DATA_DIR: dir, REPLAY_SPEED: '20000', REPLAY_SHIFT: 'false', EXIT_WHEN_IDLE_MS: '2000' });
    const path = file(dir, '1min');
    await waitFor(
      () => {
        try {
          return readFileSync(path, 'utf8').split('\n').length > 500;
        } catch {
          return false;
        }
      },
      60_000,
      '500 rows',
    );
    // someone cuts the last 20 rows
    const text = readFileSync(path, 'utf8');
    const lines = text.split('\n');
    const keep = lines.slice(0, lines.length - 21).join('\n') + '\n';
    truncateSync(path, Buffer.byteLength(keep));
    const code = await stack.exited;
    const out = stack.output().stdout;
    expect(code, out.slice(-3000)).toBe(0);
    expect(out).toMatch(
      /rows went missing from the end of a CSV file while the writer ran: wrote them again from cw:bars:1min .*restored=\d+/,
    );
    expect(readFileSync(path, 'utf8')).toBe(reference.get('1min/BINANCE_XRPETH_1min.csv'));
  });
});
