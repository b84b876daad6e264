export * from './http.js';
export * from './providers.js';
export * from './worker.js';
export * from './historical.js';
export * from './provider-server.js';
