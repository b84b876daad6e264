import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkDocs } from './doc-check.js';
import { ROOT, tempDir } from './helpers.js';

describe('the docs name only what exists', () => {
  it('every file, function, setting, script, command and link the README, docs/ and the package READMEs name is in the tree', () => {
    const problems = checkDocs(ROOT).map((p) => `${p.doc}:${p.line}: ${p.what}`);
    expect(problems).toEqual([]);
  });

  it('the check finds each kind of drift (a tree with one of each)', () => {
    const root = tempDir('doc-check');
    const put = (path: string, text: string) => {
      mkdirSync(join(root, path, '..'), { recursive: true });
      writeFileSync(join(root, path), text);
    };
    put('package.json', JSON.stringify({ scripts: { bench: 'x' } }));
    put('packages/cli/src/cli.ts', "switch (x) { case 'stack': }\n");
    put('packages/cli/src/usage.ts', 'const ROLE_HELP = {\n  write: {},\n};\n');
    put('packages/cli/src/config.ts', 'export function loadConfig(env) { return env.GRACE_MS; }\n// see packages/cli/src/gone.ts\n');
    put('packages/cli/README.md', '- `src/cli.ts`, `src/usage.ts`\n');
    put('docs/ops.md', '# Operations\n\n## Running it\n');
    put(
      'README.md',
      [
        '`npm run bench` and `npm run nope`; `candlewick stack`, `candlewick write` and `candlewick fly`.',
        '`loadConfig(env)` and `unloadConfig(env)`; `GRACE_MS=2000` and `GRACE_MX`.',
        '`packages/cli/src/cli.ts` and `packages/cli/src/old.ts`.',
        '[ops](docs/ops.md#running-it), [gone](docs/none.md), [bad anchor](docs/ops.md#walking-it).',
        '```sh\ncandlewick sail\n```',
      ].join('\n'),
    );
    execFileSync('git', ['init', '-q'], { cwd: root });
    const found = checkDocs(root).map((p) => p.what);
    expect(found.sort()).toEqual(
      [
        '`npm run nope`: no such script in package.json',
        '`candlewick fly`: no such command',
        '`candlewick sail`: no such command',
        '`unloadConfig(env)`: unloadConfig is not in the code',
        '`packages/cli/src/old.ts`: no such file',
        'link to docs/none.md: docs/none.md does not exist',
        'link to docs/ops.md#walking-it: no heading #walking-it in docs/ops.md',
        'packages/cli/src/gone.ts: no such file',
        'src/config.ts is not described',
        '`GRACE_MX`: no code reads GRACE_MX',
      ].sort(),
    );
  });
});

describe('the Node the project declares', () => {
  it("is admitted by every locked package's engines.node (npm ci warns EBADENGINE on no supported Node), and the README says it", () => {
    const semver = createRequire(import.meta.url)('semver') as { subset(sub: string, dom: string): boolean };
    const declared = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string } }).engines.node;
    const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { engines?: { node?: string } | string[] }>;
    };
    const refusing = Object.entries(lock.packages)
      .map(([path, p]) => [path, Array.isArray(p.engines) ? undefined : p.engines?.node] as const)
      .filter(([, node]) => node !== undefined && !semver.subset(declared, node))
      .map(([path, node]) => `${path || 'package.json'}: ${node}`);
    expect(refusing).toEqual([]);
    expect(readFileSync(join(ROOT, 'README.md'), 'utf8')).toContain(`\`${declared}\``);
  });
});
