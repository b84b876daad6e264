import { randomBytes } from 'node:crypto';
import type { Keys } from './keys.js';
import type { RedisClient } from './redis.js';

/**
 * The run's data marker ("epoch"): an id written once per key prefix, at the first start on an
 * empty Redis, and kept in each partition's clock hash by the ingestor's appends (addTrades). Redis
 * coming back without candlewick's data (FLUSHALL, an AOF lost, a failover to an empty replica)
 * takes the marker with it, and that is how the loss is told from a first start: the ingestor's
 * next append finds its partition's marker gone and records the loss in the same step, so the bars
 * open then close incomplete rather than as if whole (closeDue).
 */
export async function ensureEpoch(redis: RedisClient, keys: Keys): Promise<string> {
  await redis.set(keys.epoch(), randomBytes(8).toString('hex'), 'NX');
  return (await redis.get(keys.epoch())) ?? '';
}

/**
 * Whether the marker `epoch` is still in Redis; a missing one is set again (so a loss is found
 * once). The stack asks every second: its summary says what a loss did to its counts.
 */
export async function epochHeld(redis: RedisClient, keys: Keys, epoch: string): Promise<boolean> {
  if ((await redis.get(keys.epoch())) !== null) return true;
  await redis.set(keys.epoch(), epoch, 'NX');
  return false;
}
