import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/**
 * A CommonJS library loaded on first use rather than when this package is imported. The package
 * index is imported by every role, `candlewick bars` and `--help` included, which never open a
 * Redis connection: loading ioredis for them cost a fifth of their start-up.
 */
export function lazyRequire<T>(id: string): () => T {
  let loaded: T | undefined;
  return () => (loaded ??= require(id) as T);
}
