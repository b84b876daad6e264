import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { RedisUnavailableError } from '../packages/common/src/errors.js';
import { PrivateRedis } from '../packages/cli/src/redis-server.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}

/** A Testcontainers Redis for the run (see test/docker/testcontainers.ts). */
async function containerRedis(project: TestProject): Promise<() => Promise<void>> {
  const { startRedisContainer } = await import('./docker/testcontainers.js');
  const { url, container } = await startRedisContainer();
  project.provide('redisUrl', url);
  return async () => {
    await container.stop();
  };
}

/**
 * One Redis for the whole run: REDIS_URL when set, otherwise a private redis-server on a free
 * loopback port (never the shared one on 6379), or a Testcontainers Redis where there is no
 * redis-server but a Docker engine (CANDLEWICK_TEST_REDIS=testcontainers asks for that one).
 * Test files isolate themselves by key prefix.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  if (process.env.REDIS_URL) {
    project.provide('redisUrl', process.env.REDIS_URL);
    return async () => undefined;
  }
  if (process.env.CANDLEWICK_TEST_REDIS === 'testcontainers') return containerRedis(project);
  const dir = mkdtempSync(join(tmpdir(), 'cw-test-redis-'));
  const server = new PrivateRedis(dir, process.env.REDIS_SERVER_BIN ?? 'redis-server', false);
  let url: string;
  try {
    url = await server.start();
  } catch (err) {
    if (!(err instanceof RedisUnavailableError)) throw err;
    rmSync(dir, { recursive: true, force: true });
    // No redis-server on PATH: a Testcontainers Redis where a Docker engine is available.
    return containerRedis(project);
  }
  project.provide('redisUrl', url);
  return async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  };
}
