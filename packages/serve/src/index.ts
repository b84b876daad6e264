export * from './bars-file.js';
export * from './live.js';
export * from './server.js';
