import { readFileSync } from 'node:fs';
import type { Redis, Cluster, Result } from 'ioredis';
import type { Keys } from './keys.js';
import type { Trade } from './bar.js';
import type { RedisClient } from './redis.js';
import { writeTradeArgs } from './trade.js';

/**
 * The single place Lua scripts are registered. Each lua/<verbNoun>-<numKeys>.lua becomes an ioredis
 * command (EVALSHA with NOSCRIPT fallback). The command name carries the script version so two
 * versions of candlewick sharing one Redis never run each other's script.
 */
const SCRIPT_VERSION = 1;
const LUA_DIR = new URL('../lua/', import.meta.url);

export const SCRIPTS = {
  addTrades: 'addTrades-6.lua',
  mergeBatch: 'mergeBatch-8.lua',
  closeBars: 'closeBars-12.lua',
  mergeBackfill: 'mergeBackfill-7.lua',
} as const;

type Arg = string | number;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    cwAddTrades_v1(...args: Arg[]): Result<[number, string | number], Context>;
    cwMergeBatch_v1(...args: Arg[]): Result<(string | number)[], Context>;
    cwCloseBars_v1(...args: Arg[]): Result<number[], Context>;
    cwMergeBackfill_v1(...args: Arg[]): Result<number, Context>;
  }
}

const cache = new Map<string, string>();
/** A script's source with its `--- @include "name"` lines replaced by lua/includes/name.lua. */
function source(file: string): string {
  let lua = cache.get(file);
  if (lua === undefined) {
    lua = readFileSync(new URL(file, LUA_DIR), 'utf8').replace(/^--- @include "([A-Za-z]+)"$/gm, (_, name: string) =>
      readFileSync(new URL(`includes/${name}.lua`, LUA_DIR), 'utf8'),
    );
    cache.set(file, lua);
  }
  return lua;
}

export function registerScripts(redis: Redis | Cluster): void {
  for (const [name, file] of Object.entries(SCRIPTS)) {
    const numberOfKeys = Number(/-(\d+)\.lua$/.exec(file)![1]);
    const command = `cw${name[0]!.toUpperCase()}${name.slice(1)}_v${SCRIPT_VERSION}`;
    redis.defineCommand(command, { lua: source(file), numberOfKeys });
  }
}

/** KEYS of addTrades for partition p. */
export function addTradesKeys(k: Keys, p: number): string[] {
  return [k.trades(p), k.clock(p), k.lastTrade(p), k.holds(p), k.holdRequests(p), k.backfillRequests(p)];
}

/** How addTrades stamps and checks a batch (ARGV[1..6] of addTrades-6.lua). */
export interface AddTradesOptions {
  clock: 'wall' | 'event';
  graceMs: number;
  /** BACKFILL=on: hold a symbol's bars this long at most for its backfill */
  backfillHoldMs?: number;
  /** the appending process and its batch number in this partition (0, 1, 2, ... without holes) */
  sender?: string;
  seq?: number;
  /** apply this batch whatever came before: the sender no longer holds the batches Redis lost */
  force?: boolean;
}

/**
 * ARGV of addTrades: the options, backfill requests (triples: 1-based index of the trade in the
 * batch, floor ms, cap ms) and the trades.
 */
export function addTradesArgs(o: AddTradesOptions, requests: readonly string[], trades: readonly Trade[]): string[] {
  const args: string[] = new Array(7 + requests.length + trades.length * 6);
  args[0] = o.clock;
  args[1] = String(o.graceMs);
  args[2] = o.backfillHoldMs !== undefined ? '1' : '0';
  args[3] = String(o.backfillHoldMs ?? 0);
  args[4] = o.sender ?? '';
  args[5] = `${o.seq ?? 0}${o.force ? '!' : ''}`;
  args[6] = String(requests.length / 3);
  let k = 7;
  for (const x of requests) args[k++] = x;
  for (const tr of trades) k = writeTradeArgs(tr, args, k);
  return args;
}

/** What addTrades did with a batch. */
export type AddTradesReply =
  | { status: 'applied'; lastId: string }
  /** applied before (a resend): nothing done */
  | { status: 'duplicate'; applied: number }
  /** batches before this one are missing (Redis lost them): nothing done; send from applied + 1 */
  | { status: 'hole'; applied: number };

/** Appends a batch of trades to partition p's raw stream (addTrades-6.lua). */
export async function addTrades(redis: RedisClient, k: Keys, p: number, args: readonly string[]): Promise<AddTradesReply> {
  const [code, value] = await redis.cwAddTrades_v1(...addTradesKeys(k, p), ...args);
  if (code === 1) return { status: 'applied', lastId: String(value) };
  return { status: code === 0 ? 'duplicate' : 'hole', applied: Number(value) };
}

/** KEYS of mergeBatch for partition p. */
export function mergeBatchKeys(k: Keys, p: number): string[] {
  return [k.trades(p), k.openBars(p), k.openIndex(p), k.late(p), k.partitionStats(p), k.clock(p), k.amends(p), k.amendIndex(p)];
}

/** Every script with its KEYS for partition p: each list lies in one Redis Cluster slot. */
export function scriptKeys(k: Keys, p: number): Record<keyof typeof SCRIPTS, string[]> {
  return { addTrades: addTradesKeys(k, p), mergeBatch: mergeBatchKeys(k, p), closeBars: closeBarsKeys(k, p), mergeBackfill: mergeBackfillKeys(k, p) };
}

/** KEYS of closeBars for partition p. */
export function closeBarsKeys(k: Keys, p: number): string[] {
  return [
    k.trades(p), k.clock(p), k.openBars(p), k.openIndex(p), k.outbox(p), k.late(p),
    k.closed(p), k.closedIndex(p), k.amends(p), k.amendIndex(p), k.holds(p), k.barFlags(p),
  ];
}

/** KEYS of mergeBackfill for partition p. */
export function mergeBackfillKeys(k: Keys, p: number): string[] {
  return [k.backfillRequests(p), k.openBars(p), k.openIndex(p), k.holds(p), k.holdRequests(p), k.barFlags(p), k.partitionStats(p)];
}
