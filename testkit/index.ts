// The testkit in one import: processes (ordo, redis-server, clusters), the
// RESP client and raw connection, the INFO parser, the seeded PRNG and the
// waits. test/, bench/ and chaos/ take their tools from here (or from the
// module that holds one), never from each other.

export * from './cluster.js';
export * from './info.js';
export * from './processes.js';
export * from './random.js';
export * from './resp.js';
export * from './wait.js';
