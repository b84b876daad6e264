import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, tempDir } from './helpers.js';

/**
 * `npx candlewick` runs packages/cli/bin/candlewick.js, which builds the checkout when it has to.
 * Here the real wrapper runs in a checkout of its own shape, with a stand-in `tsc` that records each
 * build and writes a dist/cli.js saying which build it came from: no build of this tree is disturbed.
 */
function checkout() {
  const root = tempDir('bin');
  const bin = join(root, 'packages/cli/bin');
  mkdirSync(bin, { recursive: true });
  copyFileSync(join(ROOT, 'packages/cli/bin/candlewick.js'), join(bin, 'candlewick.js'));
  for (const pkg of ['core', 'cli']) {
    mkdirSync(join(root, 'packages', pkg, 'src'), { recursive: true });
    writeFileSync(join(root, 'packages', pkg, 'tsconfig.json'), '{}');
    writeFileSync(join(root, 'packages', pkg, 'src/index.ts'), 'export {};\n');
  }
  writeFileSync(join(root, 'tsconfig.base.json'), '{}');
  mkdirSync(join(root, 'node_modules/typescript/bin'), { recursive: true });
  // tsc -b: count the build, write dist/cli.js printing the build's number, and each package's tsbuildinfo
  writeFileSync(
    join(root, 'node_modules/typescript/bin/tsc'),
    `const fs = require('node:fs');
const n = (fs.existsSync('builds') ? Number(fs.readFileSync('builds', 'utf8')) : 0) + 1;
fs.writeFileSync('builds', String(n));
fs.mkdirSync('packages/cli/dist', { recursive: true });
fs.writeFileSync('packages/cli/dist/cli.js', 'console.log("build ' + n + '");\\n');
for (const p of ['core', 'cli']) fs.writeFileSync('packages/' + p + '/tsconfig.tsbuildinfo', '{}');
`,
  );
  writeFileSync(join(root, 'node_modules/typescript/package.json'), '{"type":"commonjs"}');
  const run = () => {
    const r = spawnSync(process.execPath, [join(bin, 'candlewick.js')], { cwd: root, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    return { out: r.stdout.trim(), err: r.stderr, builds: Number(readFileSync(join(root, 'builds'), 'utf8')) };
  };
  return { root, run };
}

describe('the candlewick bin wrapper', () => {
  it('builds a checkout never built, then runs the built CLI without building again', () => {
    const c = checkout();
    expect(c.run()).toMatchObject({ out: 'build 1', builds: 1 });
    expect(c.run()).toMatchObject({ out: 'build 1', builds: 1, err: '' });
  });

  it('rebuilds when a source changed since the last build (a pull, an edit), and says why', () => {
    const c = checkout();
    c.run();
    // a pull: a source newer than the package's last build
    const later = new Date(Date.now() + 5000);
    utimesSync(join(c.root, 'packages/core/src/index.ts'), later, later);
    const r = c.run();
    expect(r).toMatchObject({ out: 'build 2', builds: 2 });
    expect(r.err).toMatch(/packages\/core changed since it was built; building it first/);
  });

  it('does not rebuild for a test file beside the sources (tsc -b does not build those)', () => {
    const c = checkout();
    c.run();
    const later = new Date(Date.now() + 5000);
    writeFileSync(join(c.root, 'packages/core/src/index.test.ts'), '');
    utimesSync(join(c.root, 'packages/core/src/index.test.ts'), later, later);
    expect(c.run()).toMatchObject({ out: 'build 1', builds: 1 });
  });
});
