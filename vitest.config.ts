import { configDefaults, defineConfig } from 'vitest/config';
import { fileURLToPath } from 'node:url';

const pkg = (name: string) => fileURLToPath(new URL(`./packages/${name}/src/index.ts`, import.meta.url));

/**
 * Tests that run alone, after the others: images built and containers run on a Docker engine, and
 * the live-pace recovery test, whose deadlines are wall-clock seconds.
 */
const SERIAL_TESTS = [
  'test/compose-e2e.test.ts',
  'test/testcontainers.test.ts',
  'test/recovery.test.ts',
  'test/wide.test.ts',
  'test/browser.test.ts',
  'test/chart-page.test.ts',
];

export default defineConfig({
  resolve: {
    // Tests run the TypeScript sources, never built output.
    // (a module imported by its path, @candlewick/writer/dist/carry.js, is its source too)
    alias: [
      { find: /^@candlewick\/([a-z]+)\/dist\/(.+)\.js$/, replacement: fileURLToPath(new URL('./packages/$1/src/$2.ts', import.meta.url)) },
      ...['core', 'common', 'ingestor', 'aggregator', 'writer', 'backfill', 'serve', 'cli'].map((n) => ({
        find: new RegExp(`^@candlewick/${n}$`),
        replacement: pkg(n),
      })),
    ],
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
          exclude: [...configDefaults.exclude, ...SERIAL_TESTS],
          globalSetup: ['test/global-setup.ts'],
        },
      },
      {
        // After every other test, one file at a time: an image build and a dozen containers on a
        // small machine would disturb the timing-sensitive tests running beside them, and those
        // tests would be disturbed by everything else.
        extends: true,
        test: {
          name: 'serial',
          include: SERIAL_TESTS,
          globalSetup: ['test/global-setup.ts'],
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
