export * from './redis-server.js';
export * from './roles.js';
export * from './tape.js';
export * from './usage.js';
export * from './stack.js';
export * from './summary.js';
export * from './bars.js';
export * from './acl.js';
