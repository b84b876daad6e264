export * from './csv.js';
export * from './writer.js';
export * from './carry.js';
