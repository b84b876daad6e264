#!/usr/bin/env node
// `npx candlewick <role>` from a clone: the CLI, compiled first if this checkout has not been built
// yet or its sources changed since the last build (a pull, an edit), so it never runs a stale
// dist/. npm links this file at install time, before any build, so it must not be the compiled one.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const cli = new URL('../dist/cli.js', import.meta.url);

/** Newest modification time (ms) of a file or of the sources under a folder (tests are not built); 0 when absent. */
function newest(path) {
  let st;
  try {
    st = statSync(path);
  } catch {
    return 0;
  }
  if (!st.isDirectory()) return st.mtimeMs;
  let max = 0;
  for (const name of readdirSync(path)) if (!name.endsWith('.test.ts')) max = Math.max(max, newest(join(path, name)));
  return max;
}

/**
 * Why this checkout needs building, or undefined: a package whose sources or tsconfig are newer
 * than its last build (tsc -b writes tsconfig.tsbuildinfo on every build that changed something).
 * A few stats per file: cheap beside starting Node.
 */
function staleBecause() {
  if (!existsSync(cli)) return 'not built yet';
  const packages = join(root, 'packages');
  const base = newest(join(root, 'tsconfig.base.json'));
  for (const pkg of readdirSync(packages)) {
    const dir = join(packages, pkg);
    if (!existsSync(join(dir, 'tsconfig.json'))) continue;
    const built = newest(join(dir, 'tsconfig.tsbuildinfo'));
    if (Math.max(base, newest(join(dir, 'tsconfig.json')), newest(join(dir, 'src'))) > built)
      return `packages/${pkg} changed since it was built`;
  }
  return undefined;
}

const why = staleBecause();
if (why) {
  process.stderr.write(`candlewick: ${why}; building it first (npm run build)\n`);
  const tsc = join(root, 'node_modules/typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-b'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
await import(cli.href);
