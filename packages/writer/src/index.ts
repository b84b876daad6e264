export * from './writer.js';
export * from './carry.js';
export * from './pg-sink.js';
