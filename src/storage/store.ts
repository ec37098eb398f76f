// Storage errors, and the interface of the old single-node keyspace store
// (lmdb.ts, read once at start to import a data directory of earlier versions).

import type { ChangeSet, StateMachine } from '../sequencer/state-machine.js';

/** Thrown by `persist`. `applied` says whether the batch may have reached disk. */
export class PersistError extends Error {
  constructor(
    message: string,
    readonly applied: 'no' | 'unknown',
  ) {
    super(message);
  }
}

/** A data directory that cannot be used: the node refuses to start, saying why. */
export class DataDirectoryError extends Error {}

export interface KeyspaceStore {
  /** Where the data lives, for logs and INFO. */
  readonly description: string;
  /** Loads every stored key into `sm` (which must be empty). */
  recover(sm: StateMachine): void;
  /** Writes one batch of changes atomically; resolves once durable (or committed, under fsync never). */
  persist(changes: ChangeSet): Promise<void>;
  /** Flushes and releases the store. */
  close(): Promise<void>;
}
