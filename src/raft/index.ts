// Public surface of the pure Raft implementation.
export * from './types.js';
export * from './storage.js';
export * from './log.js';
export * from './progress.js';
export * from './confchange.js';
export * from './node.js';
export * from './reads.js';
export * from './snapshot-stream.js';
