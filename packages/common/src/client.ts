import type { Cluster, Redis } from 'ioredis';

/** A single Redis or a Redis Cluster: every role works on either. (Its own module: redis.ts and scripts.ts both need it.) */
export type RedisClient = Redis | Cluster;
