import { configDefaults, defineConfig } from 'vitest/config';
import { fileURLToPath } from 'node:url';

const pkg = (name: string) => fileURLToPath(new URL(`./packages/${name}/src/index.ts`, import.meta.url));

/** Tests that build images and run containers on a Docker engine. */
const DOCKER_TESTS = ['test/compose-e2e.test.ts', 'test/testcontainers.test.ts'];

export default defineConfig({
  resolve: {
    // Tests run the TypeScript sources, never built output.
    alias: Object.fromEntries(['common', 'ingestor', 'aggregator', 'writer', 'backfill', 'cli'].map((n) => [`@candlewick/${n}`, pkg(n)])),
  },
  test: {
    testTimeout: 120_000,
    hookTimeout: 60_000,
    projects: [
      {
        extends: true,
        test: {
          name: 'candlewick',
          include: ['packages/*/src/**/*.test.ts', 'test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, ...DOCKER_TESTS],
          globalSetup: ['test/global-setup.ts'],
        },
      },
      {
        // After every other test, one file at a time: an image build and a dozen containers on a
        // small machine would disturb the timing-sensitive tests running beside them.
        extends: true,
        test: {
          name: 'docker',
          include: DOCKER_TESTS,
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
