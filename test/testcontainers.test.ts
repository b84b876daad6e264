import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { klineProblems, runCli, tempDir, uniquePrefix } from './helpers.js';
import { DOCKER_REQUIRED, dockerProblem, ensureBaseImages } from './docker/docker.js';
import { startRedisContainer, type RedisContainer } from './docker/testcontainers.js';

/**
 * Testcontainers for real: the path test/global-setup.ts takes where there is Docker but no
 * redis-server (or CANDLEWICK_TEST_REDIS=testcontainers), run here on every engine: a Redis
 * container started by the testcontainers package, and the bundled tape through a real stack on it.
 */

const problem = dockerProblem(false);
if (problem && !DOCKER_REQUIRED) {
  console.warn(`Testcontainers test skipped: ${problem}. CANDLEWICK_REQUIRE_DOCKER=1 makes this a failure (CI sets it).`);
}

describe.skipIf(problem !== undefined && !DOCKER_REQUIRED)('a Testcontainers Redis', () => {
  let redis: RedisContainer | undefined;
  const dataDir = tempDir('testcontainers');

  beforeAll(async () => {
    if (problem) throw new Error(`CANDLEWICK_REQUIRE_DOCKER=1, but ${problem}`);
    ensureBaseImages(['redis:7-alpine']);
    const t = Date.now();
    redis = await startRedisContainer();
    console.log(`testcontainers: redis:7-alpine up in ${Date.now() - t} ms`);
  }, 15 * 60_000);

  afterAll(async () => {
    await redis?.container.stop(); // removes the container and its volumes
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('carries the bundled tape through a real stack: every bar equals Binance klines', async () => {
    const r = await runCli(['stack'], { REDIS_URL: redis!.url, DATA_DIR: dataDir, KEY_PREFIX: uniquePrefix('tc'), LOG_LEVEL: 'warn' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('bars written     1min=2469 5min=706 15min=238 30min=119 1h=60');
    expect(klineProblems(dataDir)).toEqual([]);
  });
});
