import { Redis, type RedisOptions } from 'ioredis';
import { registerScripts } from './scripts.js';
import { redactUrl, type Logger } from './logger.js';

/**
 * A Redis connection with candlewick's Lua scripts registered. `maxRetriesPerRequest: null` makes
 * commands wait through a Redis restart instead of failing, which BullMQ also requires for its
 * blocking connections; reconnects are retried forever with a capped delay.
 */
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
