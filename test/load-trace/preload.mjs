// `node --import ./test/load-trace/preload.mjs …`: every module the process loads — ES modules as
// they are resolved, CommonJS ones from require's cache at exit — appended, one a line, to the
// file LOAD_TRACE names. What a role loads is then a fact to test, not a guess.
import { appendFileSync } from 'node:fs';
import { createRequire, register } from 'node:module';

const out = process.env.LOAD_TRACE;
if (!out) throw new Error('LOAD_TRACE: set it to the file the loaded modules are written to');
register('./hooks.mjs', import.meta.url, { data: { out } });
const cache = createRequire(import.meta.url).cache;
process.on('exit', () =>
  appendFileSync(
    out,
    Object.keys(cache)
      .map((path) => `${path}\n`)
      .join(''),
  ),
);
