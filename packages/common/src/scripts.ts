import { readFileSync } from 'node:fs';
import type { Redis, Cluster, ChainableCommander, Result } from 'ioredis';
import type { Keys } from './keys.js';
import { encodeBarState, feedIdAndSide, tradeLine, tradeSides, type PartialBar, type Preaggregated, type Trade } from '@candlewick/core';
import type { RedisClient } from './client.js';

/**
 * Every Lua script, defined once: registered here (each lua/<verbNoun>-<numKeys>.lua becomes an
 * ioredis command, EVALSHA with NOSCRIPT fallback, its name carrying the script version so two
 * versions of candlewick sharing one Redis never run each other's script), and called through one
 * typed function per script below — its keys, its arguments from named parameters, its reply
 * decoded with named outcomes — which production and tests both use.
 */
const SCRIPT_VERSION = 3;
const LUA_DIR = new URL('../lua/', import.meta.url);

export const SCRIPTS = {
  addTrades: 'addTrades-7.lua',
  mergeBatch: 'mergeBatch-8.lua',
  closeBars: 'closeBars-16.lua',
  mergeBackfill: 'mergeBackfill-7.lua',
  publishBars: 'publishBars-1.lua',
  commitActivity: 'commitActivity-2.lua',
  noteAmends: 'noteAmends-6.lua',
  applyFix: 'applyFix-10.lua',
} as const;

type Arg = string | number;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    cwAddTrades_v3(...args: Arg[]): Result<[number, string | number, number?, number?], Context>;
    cwMergeBatch_v3(...args: Arg[]): Result<(string | number)[], Context>;
    cwCloseBars_v3(...args: Arg[]): Result<number[], Context>;
    cwMergeBackfill_v3(...args: Arg[]): Result<number, Context>;
    cwPublishBars_v3(...args: Arg[]): Result<number, Context>;
    cwCommitActivity_v3(...args: Arg[]): Result<number, Context>;
    cwNoteAmends_v3(...args: Arg[]): Result<number[], Context>;
    cwApplyFix_v3(...args: Arg[]): Result<number, Context>;
  }
}

const cache = new Map<string, string>();
/**
 * A script's source with its `--- @include "name"` lines replaced by lua/includes/name.lua, includes
 * of includes too, each once (a second include of the same file is dropped).
 */
function source(file: string): string {
  let lua = cache.get(file);
  if (lua === undefined) {
    const seen = new Set<string>();
    const expand = (text: string): string =>
      text.replace(/^--- @include "([A-Za-z]+)"$/gm, (_, name: string) => {
        if (seen.has(name)) return `-- (${name}: included above)`;
        seen.add(name);
        return expand(readFileSync(new URL(`includes/${name}.lua`, LUA_DIR), 'utf8'));
      });
    lua = expand(readFileSync(new URL(file, LUA_DIR), 'utf8'));
    cache.set(file, lua);
  }
  return lua;
}

/** A script's whole source as Redis runs it (includes expanded): what it calls, for the ACL of its callers. */
export function scriptSource(name: keyof typeof SCRIPTS): string {
  return source(SCRIPTS[name]);
}

/**
 * The commands a Lua script calls (`redis.call('HSET', …)`, `redis.pcall(…)`, `pcall(redis.call,
 * 'XINFO', 'GROUPS', …)`), lower case, a container command with its subcommand (`xinfo|groups`).
 * Redis checks each against the caller's user, so the caller's ACL must allow them.
 */
export function luaCommands(lua: string): string[] {
  const out = new Set<string>();
  for (const m of lua.matchAll(/redis\.p?call(?:\(|,)\s*'([A-Za-z]+)'(?:,\s*'([A-Za-z]+)')?/g)) {
    const cmd = m[1]!.toLowerCase();
    out.add(CONTAINERS.has(cmd) && m[2] ? `${cmd}|${m[2].toLowerCase()}` : cmd);
  }
  return [...out].sort();
}

/** Commands whose first argument is a subcommand an ACL names on its own. */
const CONTAINERS = new Set(['xinfo', 'xgroup', 'client', 'cluster', 'config', 'object', 'memory', 'script', 'function']);

export function registerScripts(redis: Redis | Cluster): void {
  for (const [name, file] of Object.entries(SCRIPTS)) {
    const numberOfKeys = Number(/-(\d+)\.lua$/.exec(file)![1]);
    const command = `cw${name[0]!.toUpperCase()}${name.slice(1)}_v${SCRIPT_VERSION}`;
    redis.defineCommand(command, { lua: source(file), numberOfKeys });
  }
}

// ---------------------------------------------------------------------------------------------
// addTrades: the ingestor appends a batch of trades to a partition's raw stream

/** KEYS of addTrades for partition p. */
export function addTradesKeys(k: Keys, p: number, o: Pick<AddTradesOptions, 'idsWindowMs'> = {}): string[] {
  const ids = o.idsWindowMs !== undefined ? k.seenIds(p) : k.highIds(p);
  return [k.trades(p), k.clock(p), k.lastTrade(p), k.holds(p), k.holdRequests(p), k.backfillRequests(p), ids];
}

/** How addTrades stamps and checks a batch (ARGV[1..8] of addTrades-7.lua). */
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
  /**
   * The data marker (the run's epoch, see epoch.ts): without `seen` this sender's first batch in
   * the partition sets it where missing; with `seen` (the newest event time the sender has seen)
   * a missing marker is Redis having lost candlewick's data, recorded in the same step.
   */
  marker?: { epoch: string; seen?: number };
  /**
   * The feed's trade ids increase per symbol (Binance): drop a trade whose id is not above the
   * highest already appended for its symbol (highIds), so a trade sent twice lands once.
   */
  idsIncrease?: boolean;
  /**
   * The feed's trade ids are unique per symbol but in no order (Alpaca's, the exchange carried in
   * the id): drop a trade whose (symbol, id, event time) was appended within this many ms by
   * Redis's clock (seenIds), so a trade sent twice within the window lands once.
   */
  idsWindowMs?: number;
}

/** A backfill request addTrades files with a batch (the first trade of a symbol on a feed connection). */
export interface BackfillAsk {
  /** the trade's place in the batch, 1-based */
  at: number;
  /** where the span starts when the symbol has no earlier trade */
  floorMs: number;
  /** the earliest the span may start */
  capMs: number;
}

/**
 * One addTrades call's ARGV, built once by addTradesArgs: the options (ARGV[1..8]) kept typed, so a
 * batch is sent again with other options (`force`) without touching the list, and the rest
 * (requests, symbols, trades) encoded once.
 */
export interface AddTradesArgs {
  readonly options: Readonly<AddTradesOptions>;
  readonly body: readonly string[];
}

/** ARGV[1..8] of addTrades, from its options. */
function addTradesHead(o: AddTradesOptions): string[] {
  return [
    o.clock,
    String(o.graceMs),
    o.backfillHoldMs !== undefined ? '1' : '0',
    String(o.backfillHoldMs ?? 0),
    o.sender ?? '',
    `${o.seq ?? 0}${o.force ? '!' : ''}`,
    o.marker ? (o.marker.seen === undefined ? `a:${o.marker.epoch}` : `m:${o.marker.epoch}:${Math.max(0, Math.floor(o.marker.seen))}`) : '',
    o.idsIncrease ? '1' : o.idsWindowMs !== undefined ? `w:${Math.max(1, Math.round(o.idsWindowMs))}` : '',
  ];
}

/**
 * The arguments of addTrades: the options, backfill requests, with backfill on each symbol's latest
 * event time in the batch, and the trades (each its event time and its line of the raw entry, and
 * its id when some trade of the batch has one; their sides in one string when some has one).
 */
export function addTradesArgs(o: AddTradesOptions, requests: readonly BackfillAsk[], trades: readonly Trade[]): AddTradesArgs {
  const backfill = o.backfillHoldMs !== undefined;
  let latest: Map<string, number> | undefined;
  if (backfill) {
    latest = new Map();
    for (const tr of trades) {
      const cur = latest.get(tr.s);
      if (cur === undefined || tr.t > cur) latest.set(tr.s, tr.t);
    }
  }
  const u = latest?.size ?? 0;
  const withIds = trades.some((tr) => tr.i !== undefined);
  const stride = withIds ? 3 : 2;
  const body: string[] = new Array(5 + 3 * requests.length + 2 * u + trades.length * stride);
  body[0] = String(requests.length);
  let k = 1;
  for (const r of requests) {
    body[k++] = String(r.at);
    body[k++] = String(r.floorMs);
    body[k++] = String(r.capMs);
  }
  body[k++] = String(u);
  if (latest) {
    for (const [s, t] of latest) {
      body[k++] = s;
      body[k++] = String(t);
    }
  }
  const rx0 = trades[0]?.rx ?? 0;
  body[k++] = String(rx0);
  body[k++] = withIds ? '1' : '0';
  body[k++] = tradeSides(trades);
  for (const tr of trades) {
    body[k++] = String(tr.t);
    body[k++] = tradeLine(tr, rx0);
    if (withIds) body[k++] = tr.i ?? '';
  }
  return { options: { ...o }, body };
}

/** The same batch marked "apply whatever came before" (`force`), its encoded part shared. */
export function forcedArgs(a: AddTradesArgs): AddTradesArgs {
  return { options: { ...a.options, force: true }, body: a.body };
}

/** addTrades' reply codes. */
export const ADD_TRADES = Object.freeze({ APPLIED: 1, DUPLICATE: 0, HOLE: -1 });

/** What addTrades did with a batch. */
export type AddTradesReply = (
  | {
      status: 'applied';
      /** the entry added ('' when no trade was left to append) */
      entryId: string;
      /** trades dropped as already appended: their id not above their symbol's highest (idsIncrease), or seen within the window (idsWindowMs) */
      dup: number;
    }
  /** applied before (a resend): nothing done */
  | { status: 'duplicate'; applied: number }
  /** batches before this one are missing (Redis lost them): nothing done; send from applied + 1 */
  | { status: 'hole'; applied: number }
) & {
  /** this call found the data marker missing: Redis lost candlewick's data (recorded as `lost` in the clock hash) */
  lost?: boolean;
};

/** Appends a batch of trades to partition p's raw stream (addTrades-7.lua). */
export async function addTrades(redis: RedisClient, k: Keys, p: number, args: AddTradesArgs): Promise<AddTradesReply> {
  const [code, value, lost, dup] = await redis.cwAddTrades_v3(
    ...addTradesKeys(k, p, args.options),
    ...addTradesHead(args.options),
    ...args.body,
  );
  const found = lost === 1 ? { lost: true } : {};
  if (code === ADD_TRADES.APPLIED) return { status: 'applied', entryId: String(value), dup: Number(dup ?? 0), ...found };
  return { status: code === ADD_TRADES.DUPLICATE ? 'duplicate' : 'hole', applied: Number(value), ...found };
}

// ---------------------------------------------------------------------------------------------
// mergeBatch: an aggregator merges a pre-aggregated batch into the open bars and acknowledges it

/** KEYS of mergeBatch for partition p. */
export function mergeBatchKeys(k: Keys, p: number): string[] {
  return [k.trades(p), k.openBars(p), k.openIndex(p), k.late(p), k.partitionStats(p), k.clock(p), k.amends(p), k.amendIndex(p)];
}

/** Why a late trade is kept in trades:late (the `reason` field). */
export const LATE_REASON = 'window-closed-at-ingestion';

/**
 * ARGV of mergeBatch: group, consumer, the batch's ids, its late trades and its partial bars. Late
 * trades are kept whole, their feed ids and sides too: `fields` gives the raw entries' fields by
 * entry id (without it they go without).
 */
export function mergeBatchArgs(
  group: string,
  consumer: string,
  ids: readonly string[],
  pre: Preaggregated,
  fields?: ReadonlyMap<string, readonly string[] | null>,
): string[] {
  const args: string[] = [group, consumer, String(ids.length), ...ids, String(pre.trades), String(pre.late.length)];
  for (const e of pre.late) {
    const f = fields?.get(e.entry);
    const { i, a } = f ? feedIdAndSide(e, f) : { i: '', a: '' };
    args.push(e.id, e.s, e.p, String(e.v), String(e.t), e.c || '[]', String(e.rx), String(e.w), LATE_REASON, i, a);
  }
  const partials = (bars: ReadonlyMap<string, PartialBar>) => {
    args.push(String(bars.size));
    for (const [id, part] of bars) args.push(id, String(part.end), encodeBarState(part.state));
  };
  partials(pre.bars);
  partials(pre.lateBars);
  return args;
}

/** mergeBatch's reply codes (the first element of its reply). */
export const MERGE_BATCH = Object.freeze({ MERGED: 1, PARTLY_TAKEN: 0 });

export type MergeBatchReply =
  /** merged and acknowledged: this many trades folded in, this many kept as late */
  | { status: 'merged'; merged: number; late: number }
  /** some entries are no longer this consumer's (reclaimed or acknowledged elsewhere): nothing done; these still are */
  | { status: 'partly-taken'; stillMine: string[] };

/** Merges a pre-aggregated batch and acknowledges its entries, exactly once (mergeBatch-8.lua). */
export async function mergeBatch(redis: RedisClient, k: Keys, p: number, args: readonly string[]): Promise<MergeBatchReply> {
  const r = await redis.cwMergeBatch_v3(...mergeBatchKeys(k, p), ...args);
  if (Number(r[0]) === MERGE_BATCH.MERGED) return { status: 'merged', merged: Number(r[1]), late: Number(r[2]) };
  return { status: 'partly-taken', stillMine: r.slice(1).map(String) };
}

// ---------------------------------------------------------------------------------------------
// closeBars: the closer finalizes bars past the watermark and moves them to the outbox

/** KEYS of closeBars for partition p. */
export function closeBarsKeys(k: Keys, p: number): string[] {
  return [
    k.trades(p),
    k.clock(p),
    k.openBars(p),
    k.openIndex(p),
    k.outbox(p),
    k.late(p),
    k.closed(p),
    k.closedIndex(p),
    k.amends(p),
    k.amendIndex(p),
    k.holds(p),
    k.barFlags(p),
    k.partitionStats(p),
    k.fix(p),
    k.fixTodo(p),
    k.fixIndex(p),
  ];
}

export interface CloseBarsOptions {
  group: string;
  graceMs: number;
  clock: 'wall' | 'event';
  /** close every open bar once everything ingested is merged (the end of an input) */
  flush: boolean;
  /** raw stream retention (0 = keep everything) */
  retentionMs: number;
  /** at most this many bars per call */
  maxBars: number;
  /** LATE=amend: how long closed bars are kept for corrections (0 = LATE=drop) */
  amendWindowMs: number;
  /**
   * FEED=alpaca (the feed amends trades; 0 = it does not): a closed bar part of which the raw stream
   * has not (backfilled, lost) is marked so, for this long past its end (LATE_AMEND_WINDOW)
   */
  feedAmendWindowMs?: number;
}

export function closeBarsArgs(o: CloseBarsOptions): (string | number)[] {
  return [o.group, o.graceMs, o.clock, o.flush ? '1' : '0', o.retentionMs, o.maxBars, o.amendWindowMs, o.feedAmendWindowMs ?? 0];
}

/** What one closeBars call did. */
export interface CloseBarsReply {
  closed: number;
  /** closed through this window end; 'all' after a flush; undefined when nothing could close */
  horizon: number | 'all' | undefined;
  /** it stopped at maxBars with more ready: call again */
  more: boolean;
  /** everything ingested so far is merged */
  merged: boolean;
  /** of the closed, bars the feed's amends are in: held in fix-todo for the closer to apply them (applyFix) */
  held: number;
  /** nothing closed: bars held before (by this closer or another) wait in fix-todo to be written first */
  blocked: boolean;
}

/** Closes due bars of partition p into its outbox (closeBars-16.lua). */
export async function closeBars(redis: RedisClient, k: Keys, p: number, o: CloseBarsOptions): Promise<CloseBarsReply> {
  const [closed, horizon, more, merged, held, blocked] = (await redis.cwCloseBars_v3(...closeBarsKeys(k, p), ...closeBarsArgs(o))).map(
    Number,
  ) as [number, number, number, number, number, number];
  return {
    closed,
    horizon: horizon === -2 ? 'all' : horizon === -1 ? undefined : horizon,
    more: more === 1,
    merged: merged === 1,
    held: held ?? 0,
    blocked: blocked === 1,
  };
}

// ---------------------------------------------------------------------------------------------
// mergeBackfill: the backfill worker merges one request's bars, exactly once

/** KEYS of mergeBackfill for partition p. */
export function mergeBackfillKeys(k: Keys, p: number): string[] {
  return [k.backfillRequests(p), k.openBars(p), k.openIndex(p), k.holds(p), k.holdRequests(p), k.barFlags(p), k.partitionStats(p)];
}

export interface MergeBackfillInput {
  group: string;
  consumer: string;
  requestId: string;
  symbol: string;
  partials: ReadonlyMap<string, PartialBar>;
  /** bar id -> BAR_FLAGS bits to add when it closes */
  flags: ReadonlyMap<string, number>;
  /** trades or candles the partials hold (for the stats) */
  used: number;
}

export function mergeBackfillArgs(m: MergeBackfillInput): (string | number)[] {
  const args: (string | number)[] = [m.group, m.consumer, m.requestId, m.symbol, m.partials.size];
  for (const [id, part] of m.partials) args.push(id, part.end, encodeBarState(part.state));
  args.push(m.flags.size);
  for (const [id, bits] of m.flags) args.push(id, bits);
  args.push(m.used);
  return args;
}

/** mergeBackfill's reply codes. */
export const MERGE_BACKFILL = Object.freeze({ MERGED: 1, HOLD_EXPIRED: 0, NOT_MINE: -1 });

/** merged; the symbol's hold had expired (nothing merged, its bars may be written); or the request is not this consumer's */
export type MergeBackfillReply = 'merged' | 'hold-expired' | 'not-mine';

export async function mergeBackfill(redis: RedisClient, k: Keys, p: number, m: MergeBackfillInput): Promise<MergeBackfillReply> {
  const r = await redis.cwMergeBackfill_v3(...mergeBackfillKeys(k, p), ...mergeBackfillArgs(m));
  return r === MERGE_BACKFILL.MERGED ? 'merged' : r === MERGE_BACKFILL.HOLD_EXPIRED ? 'hold-expired' : 'not-mine';
}

// ---------------------------------------------------------------------------------------------
// publishBars: the writer publishes a job's bars on bars:{interval}

/** bars per publishBars call: a script call holds Redis a millisecond or two, not longer */
export const PUBLISH_BARS_PER_CALL = 500;

/**
 * Adds publishBars calls for `entries` (each encodeBarEntryJson: a bar's fields as a JSON list) on bars:{interval} to a
 * transaction or pipeline: PUBLISH_BARS_PER_CALL bars a call, in order.
 */
export function publishBars(tx: ChainableCommander, stream: string, minId: string, entries: readonly string[]): void {
  for (let i = 0; i < entries.length; i += PUBLISH_BARS_PER_CALL)
    tx.cwPublishBars_v3(stream, minId, `[${entries.slice(i, i + PUBLISH_BARS_PER_CALL).join(',')}]`);
}

// ---------------------------------------------------------------------------------------------
// commitActivity: the closer commits a cut of activity bars, exactly once

export function commitActivityKeys(k: Keys, p: number): string[] {
  return [k.activity(p), k.outbox(p)];
}

export interface ActivityCut {
  /** cursor and h as read ('' when none) */
  from: { cursor: string; h: string };
  cursor: string;
  h: string;
  /** the outbox entries' `activity` fields (encodeActivityOutbox, up to 1,000 bars each); none when the cut closed no bar */
  bars: readonly string[];
  states: ReadonlyMap<string, string>;
}

/** Commits a cut (commitActivity-2.lua): false when another closer's cut came first (nothing written). */
export async function commitActivity(redis: RedisClient, k: Keys, p: number, c: ActivityCut): Promise<boolean> {
  const args: string[] = [c.from.cursor, c.from.h, c.cursor, c.h, String(c.bars.length), ...c.bars];
  for (const [symbol, state] of c.states) args.push(symbol, state);
  return (await redis.cwCommitActivity_v3(...commitActivityKeys(k, p), ...args)) === 1;
}

// ---------------------------------------------------------------------------------------------
// noteAmends and applyFix: the closer applies the feed's corrections and cancels

export function noteAmendsKeys(k: Keys, p: number): string[] {
  return [k.fix(p), k.fixTodo(p), k.fixIndex(p), k.clock(p), k.partitionStats(p), k.openBars(p)];
}

/** One symbol's amends read in one step, and the bars they are in. */
export interface AmendNote {
  symbol: string;
  /** the amends, a JSON list (appended to the symbol's) */
  amends: string;
  /** the last window end of their bars */
  last: number;
  bars: readonly { id: string; end: number }[];
}

/** Notes amends read from feed:corrections up to `cursor` (noteAmends-6.lua): undefined when another closer noted first; else how many bars wait for a revision. */
export async function noteAmends(
  redis: RedisClient,
  k: Keys,
  p: number,
  n: {
    from: string;
    cursor: string;
    windowMs: number;
    /** the highest watermark the amends came under */
    w: number;
    /** bars of theirs already past LATE_AMEND_WINDOW (counted) */
    tooOld: number;
    notes: readonly AmendNote[];
  },
): Promise<number | undefined> {
  const args: (string | number)[] = [n.from, n.cursor, n.windowMs, n.w, n.tooOld, n.notes.length];
  for (const x of n.notes) {
    args.push(x.symbol, x.amends, x.last, x.bars.length);
    for (const b of x.bars) args.push(b.id, b.end);
  }
  const [ok, due] = (await redis.cwNoteAmends_v3(...noteAmendsKeys(k, p), ...args)).map(Number) as [number, number?];
  return ok === 1 ? (due ?? 0) : undefined;
}

export function applyFixKeys(k: Keys, p: number): string[] {
  return [
    k.fix(p),
    k.fixTodo(p),
    k.fixIndex(p),
    k.outbox(p),
    k.closed(p),
    k.closedIndex(p),
    k.amends(p),
    k.amendIndex(p),
    k.late(p),
    k.partitionStats(p),
  ];
}

export interface FixInput {
  id: string;
  /** its fix-todo value as read */
  todo: string;
  /** its symbol's amend version as read ('' when none) */
  version: string;
  /** the amended state ('' when no trade is left) */
  state: string;
  end: number;
  /** LATE=amend: LATE_AMEND_WINDOW (0 = LATE=drop) */
  amendWindowMs: number;
  /** LATE=amend, a revision: the late stream's last id as read */
  lateLast: string;
  /** the raw stream has not all of the bar's trades (backfilled, trimmed, lost): not amended, counted */
  unmade: boolean;
}

/** applyFix-10.lua's outcomes. */
export type FixReply = 'written' | 'done-by-another' | 'read-again' | 'emptied' | 'too-old';

export async function applyFix(redis: RedisClient, k: Keys, p: number, f: FixInput): Promise<FixReply> {
  const r = await redis.cwApplyFix_v3(
    ...applyFixKeys(k, p),
    f.id,
    f.todo,
    f.version,
    f.state,
    f.end,
    f.amendWindowMs,
    f.lateLast,
    f.unmade ? '1' : '0',
  );
  return r === 1 ? 'written' : r === 0 ? 'done-by-another' : r === -1 ? 'read-again' : r === 2 ? 'emptied' : 'too-old';
}

/** Every script with its KEYS for partition p: each list lies in one Redis Cluster slot. */
export function scriptKeys(k: Keys, p: number): Record<keyof typeof SCRIPTS, string[]> {
  return {
    addTrades: addTradesKeys(k, p),
    mergeBatch: mergeBatchKeys(k, p),
    closeBars: closeBarsKeys(k, p),
    mergeBackfill: mergeBackfillKeys(k, p),
    publishBars: [k.bars('1min')],
    commitActivity: commitActivityKeys(k, p),
    noteAmends: noteAmendsKeys(k, p),
    applyFix: applyFixKeys(k, p),
  };
}
