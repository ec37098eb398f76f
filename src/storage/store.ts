// Durable storage of the applied keyspace. The group driving a state machine
// hands each batch of changes to `persist`, and replies only once it resolves.

import type { TokenTable } from '../sequencer/sequence.js';
import type { ChangeSet, StateMachine, StoredValue } from '../sequencer/state-machine.js';

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

/** In-memory store for tests. `failNext` makes the next persist fail the way a full disk would. */
export class MemoryStore implements KeyspaceStore {
  readonly description = 'memory';
  readonly values = new Map<string, StoredValue>();
  readonly tokens = new Map<string, TokenTable>();
  failNext: PersistError | null = null;
  persistCount = 0;

  recover(sm: StateMachine): void {
    for (const [k, v] of this.values) sm.load(k, v);
    for (const [k, t] of this.tokens) sm.loadTokens(k, t);
  }

  persist(changes: ChangeSet): Promise<void> {
    this.persistCount++;
    const failure = this.failNext;
    if (failure !== null) {
      this.failNext = null;
      return Promise.reject(failure);
    }
    if (changes.cleared) {
      this.values.clear();
      this.tokens.clear();
    }
    for (const [k, v] of changes.values) {
      if (v === null) this.values.delete(k);
      else this.values.set(k, v);
    }
    for (const [k, t] of changes.tokens) {
      if (t === null) this.tokens.delete(k);
      else this.tokens.set(k, t);
    }
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
