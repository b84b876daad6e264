#!/usr/bin/env node
// `npx candlewick <role>` from a clone: the CLI, compiled first if this checkout has not been built
// yet (npm links this file at install time, before any build, so it must not be the compiled one).
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const cli = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(cli)) {
  const root = fileURLToPath(new URL('../../../', import.meta.url));
  process.stderr.write('candlewick: not built yet; building it first (npm run build)\n');
  const tsc = fileURLToPath(new URL('node_modules/typescript/bin/tsc', `file://${root}/`));
  const r = spawnSync(process.execPath, [tsc, '-b'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
await import(cli.href);
