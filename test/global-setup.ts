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

/**
 * One Redis for the whole run: REDIS_URL when set, otherwise a private redis-server on a free
 * loopback port (never the shared one on 6379). Test files isolate themselves by key prefix.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  if (process.env.REDIS_URL) {
    project.provide('redisUrl', process.env.REDIS_URL);
    return async () => undefined;
  }
  const dir = mkdtempSync(join(tmpdir(), 'cw-test-redis-'));
  const server = new PrivateRedis(dir, process.env.REDIS_SERVER_BIN ?? 'redis-server', false);
  let url: string;
  try {
    url = await server.start();
  } catch (err) {
    if (!(err instanceof RedisUnavailableError)) throw err;
    // No redis-server on PATH: a Testcontainers Redis where a Docker engine is available.
    const { GenericContainer } = await import('testcontainers');
    const container = await new GenericContainer('redis:7-alpine').withExposedPorts(6379).start();
    project.provide('redisUrl', `redis://${container.getHost()}:${container.getMappedPort(6379)}`);
    return async () => {
      await container.stop();
    };
  }
  project.provide('redisUrl', url);
  return async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  };
}
