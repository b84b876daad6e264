import { randomBytes } from 'node:crypto';
import type { StartedTestContainer } from 'testcontainers';

export interface RedisContainer {
  url: string;
  container: StartedTestContainer;
}

/**
 * A Redis 7 (`redis:7-alpine`) started through Testcontainers. Its port is published on the host,
 * so it gets a password of its own, and the URL names 127.0.0.1 rather than whatever "localhost"
 * resolves to. Ryuk, Testcontainers' reaper, is an image from Docker Hub, which CI cannot reach: it
 * stays off unless TESTCONTAINERS_RYUK_DISABLED says otherwise, and the caller stops the container
 * (containers carry the label org.candlewick.test=testcontainers, to find any a killed run left).
 */
export async function startRedisContainer(): Promise<RedisContainer> {
  process.env.TESTCONTAINERS_RYUK_DISABLED ??= 'true';
  const { GenericContainer, Wait } = await import('testcontainers');
  const password = randomBytes(18).toString('hex');
  const container = await new GenericContainer('redis:7-alpine')
    .withCommand(['redis-server', '--requirepass', password, '--save', '', '--appendonly', 'no'])
    .withExposedPorts(6379)
    .withWaitStrategy(Wait.forLogMessage(/Ready to accept connections/))
    .withLabels({ 'org.candlewick.test': 'testcontainers' })
    .start();
  const host = container.getHost() === 'localhost' ? '127.0.0.1' : container.getHost();
  return { url: `redis://:${password}@${host}:${container.getMappedPort(6379)}`, container };
}
