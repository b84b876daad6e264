export * from './writer.js';
export * from './carry.js';
