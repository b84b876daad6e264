import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers.js';

const README = readFileSync(join(ROOT, 'README.md'), 'utf8');

/** The commands of the README's first-hour block ("in the order written"), continuation comments dropped. */
function inOrderBlock(): string[] {
  const at = README.indexOf('in the order written');
  expect(at, 'the README has its in-order block').toBeGreaterThan(0);
  const block = /```sh\n([\s\S]*?)```/.exec(README.slice(at))![1]!;
  return block
    .split('\n')
    .filter((line) => line.trim() !== '' && !/^\s/.test(line))
    .map((line) => line.replace(/\s+#.*$/, ''));
}

/** The data folder a command writes or reads: DATA_DIR=…, --out …, else the default ./data. */
const dataDirOf = (cmd: string): string => (/(?:DATA_DIR=|--out )(\S+)/.exec(cmd)?.[1] ?? 'data').replace(/^\.\//, '').replace(/\/$/, '');

/** Runs that write into a data folder: the stack, historical backfill, the in-process mode. */
const writes = (cmd: string): boolean => /npm start|candlewick (stack|backfill|bars)\b/.test(cmd);

describe("the README's first-hour commands", () => {
  it('each run of the in-order block has a data folder of its own, none the first `npm start` filled', () => {
    const cmds = inOrderBlock();
    const runs = cmds.filter(writes);
    expect(runs.length).toBeGreaterThanOrEqual(4);
    const dirs = runs.map(dataDirOf);
    // ./data is the first command's (`npm ci && npm start`): a second run into it counts the tape as late
    expect(dirs).not.toContain('data');
    expect(new Set(dirs).size, dirs.join(' ')).toBe(dirs.length);
    // tap reads the Redis of a stack started before it, found through that stack's DATA_DIR
    for (const [i, cmd] of cmds.entries())
      if (/candlewick tap\b/.test(cmd)) expect(cmds.slice(0, i).filter(writes).map(dataDirOf)).toContain(dataDirOf(cmd));
  });

  it('.gitignore covers every data folder the README creates', () => {
    const ignored = readFileSync(join(ROOT, '.gitignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim().replace(/^\//, '').replace(/\/$/, ''))
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => new RegExp(`^${l.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*')}$`));
    // (DIR and the like are placeholders)
    const dirs = new Set([...README.matchAll(/(?:DATA_DIR=|--out )(\.\/)?([a-z][\w.-]*)/g)].map((m) => m[2]!));
    dirs.add('data');
    for (const dir of dirs)
      expect(
        ignored.some((re) => re.test(dir)),
        dir,
      ).toBe(true);
  });
});
