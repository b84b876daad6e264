export * from './csv.js';
export * from './writer.js';
