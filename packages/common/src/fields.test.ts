import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CLOCK, PARTITION_STATS } from './fields.js';

/**
 * The scripts spell the clock and stats hashes' field names as literals; each must be one of the
 * table in fields.ts, so a name written by Lua is the name TypeScript reads.
 */
const LUA_DIR = new URL('../lua/', import.meta.url);
/** the Lua variables holding each hash's key, and the table of its fields */
const HASHES: Record<string, Readonly<Record<string, string>>> = {
  clock: CLOCK,
  'k.clock': CLOCK,
  stats: PARTITION_STATS,
  'k.stats': PARTITION_STATS,
};
/** which arguments after the key are field names */
const FIELD_ARGS: Record<string, (i: number) => boolean> = {
  HGET: (i) => i === 0,
  HEXISTS: (i) => i === 0,
  HINCRBY: (i) => i === 0,
  HSET: (i) => i % 2 === 0,
  HDEL: () => true,
  HMGET: () => true,
};

/** The arguments of a call, split at its top-level commas (strings and nested calls kept whole). */
function splitArgs(text: string): { args: string[]; end: number } {
  const args: string[] = [];
  let depth = 0;
  let cur = '';
  let quote = '';
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quote) {
      if (ch === quote && text[i - 1] !== '\\') quote = '';
    } else if (ch === "'" || ch === '"') quote = ch;
    else if (ch === '(' || ch === '{') depth++;
    else if (ch === ')' || ch === '}') {
      if (depth === 0) {
        args.push(cur.trim());
        return { args, end: i };
      }
      depth--;
    } else if (ch === ',' && depth === 0) {
      args.push(cur.trim());
      cur = '';
      continue;
    }
    cur += ch;
  }
  throw new Error(`unclosed call: ${text.slice(0, 80)}`);
}

/** Every field a Lua source names on the clock or stats hash that is not in the table, as `file:line: what`. */
function unknownFields(file: string, lua: string): { problems: string[]; seen: number } {
  const problems: string[] = [];
  let seen = 0;
  for (const m of lua.matchAll(/redis\.call\('(H[A-Z]+)',\s*/g)) {
    const cmd = m[1]!;
    const { args } = splitArgs(lua.slice(m.index + m[0].length));
    const table = HASHES[args[0]!];
    if (!table || !FIELD_ARGS[cmd]) continue;
    const line = lua.slice(0, m.index).split('\n').length;
    const names = new Set(Object.values(table));
    args.slice(1).forEach((arg, i) => {
      if (!FIELD_ARGS[cmd]!(i)) return;
      seen++;
      const literal = /^'([^']*)'$/.exec(arg);
      const prefix = /^'([^']*)'\s*\.\./.exec(arg);
      if (literal && names.has(literal[1]!)) return;
      if (prefix && names.has(prefix[1]!) && Object.entries(table).some(([k, v]) => v === prefix[1] && k.endsWith('Prefix'))) return;
      problems.push(`${file}:${line}: ${cmd} ${args[0]} ${arg} is not a field of its table in fields.ts`);
    });
  }
  return { problems, seen };
}

describe('the scripts use the field names of fields.ts', () => {
  it('every field literal of the clock and stats hashes in lua/ is in the table', () => {
    const files = [
      ...readdirSync(LUA_DIR).filter((f) => f.endsWith('.lua')),
      ...readdirSync(new URL('includes/', LUA_DIR)).map((f) => `includes/${f}`),
    ];
    let seen = 0;
    const problems: string[] = [];
    for (const f of files) {
      const r = unknownFields(f, readFileSync(new URL(f, LUA_DIR), 'utf8'));
      seen += r.seen;
      problems.push(...r.problems);
    }
    expect(problems).toEqual([]);
    // the scripts read and write dozens of fields: a scan that found none is a broken scan
    expect(seen).toBeGreaterThan(30);
  });

  it('a name the table lacks, or one that is not a literal, is found', () => {
    const lua = [
      "redis.call('HINCRBY', stats, 'amendToOld', 1)",
      "redis.call('HSET', clock, 'wm', string.format('%d', wm), 'lastID', id)",
      "redis.call('HGET', k.clock, name)",
      "redis.call('HGET', clock, 'batch:' .. sender)",
      "redis.call('HGET', clock, 'wm' .. sender)",
    ].join('\n');
    expect(unknownFields('x.lua', lua).problems).toEqual([
      "x.lua:1: HINCRBY stats 'amendToOld' is not a field of its table in fields.ts",
      "x.lua:2: HSET clock 'lastID' is not a field of its table in fields.ts",
      'x.lua:3: HGET k.clock name is not a field of its table in fields.ts',
      "x.lua:5: HGET clock 'wm' .. sender is not a field of its table in fields.ts",
    ]);
  });
});
