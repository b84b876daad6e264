export * from './feeds/index.js';
export * from './ingestor.js';
export * from './replay-server.js';
export * from './sink.js';
