export * from './feeds/finnhub.js';
export * from './ingestor.js';
export * from './replay-server.js';
export * from './sink.js';
