import { Redis, type RedisOptions } from 'ioredis';
import { registerScripts } from './scripts.js';
import { redactUrl, type Logger } from './logger.js';

/**
 * A Redis connection with candlewick's Lua scripts registered. `maxRetriesPerRequest: null` makes
 * commands wait through a Redis restart instead of failing, which BullMQ also requires for its
 * blocking connections; reconnects are retried forever with a capped delay.
 */
/** A second connection like `redis` (for blocking reads and BullMQ workers), its errors logged. */
export function duplicateRedis(redis: Redis, log?: Logger): Redis {
  const dup = redis.duplicate();
  let down = false;
  dup.on('error', (err: Error) => {
    if (!down) log?.warn({ err }, 'redis connection error; retrying');
    down = true;
  });
  dup.on('ready', () => {
    down = false;
  });
  return dup;
}

export function connectRedis(url: string, log?: Logger, extra: RedisOptions = {}): Redis {
  const redis = new Redis(url, {
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
    ...extra,
  });
  let down = false;
  redis.on('error', (err: Error) => {
    if (!down) log?.warn({ err, redis: redactUrl(url) }, 'redis connection error; retrying');
    down = true;
  });
  redis.on('ready', () => {
    if (down) log?.info({ redis: redactUrl(url) }, 'redis connection restored');
    down = false;
  });
  registerScripts(redis);
  return redis;
}
