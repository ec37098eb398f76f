// Storage errors, the interface of a node's Raft log store, and the
// interface of the old single-node keyspace store (lmdb.ts, read once at start
// to import a data directory of earlier versions).

import type { ConfState, WritableStorage } from '../raft/index.js';
import type { ChangeSet, StateMachine } from '../sequencer/state-machine.js';
import { OrdoError } from '../ordo-error.js';

/**
 * Thrown by `persist` and `commitTurn`. `applied` says whether the batch may
 * have reached disk. `retryable`: nothing of it was written and the store kept
 * it (the disk is full); a later commit writes it first, so the caller may
 * wait and commit again instead of stopping.
 */
export class PersistError extends OrdoError {
  override readonly code = 'ORDO_ERR_PERSIST';

  constructor(
    message: string,
    readonly applied: 'no' | 'unknown',
    readonly retryable = false,
  ) {
    super(message);
  }
}

/** A data directory that cannot be used: the node refuses to start, saying why. */
export class DataDirectoryError extends OrdoError {
  override readonly code = 'ORDO_ERR_DATA_DIRECTORY';
}

/**
 * Where a node keeps the Raft state of all its groups and its metadata
 * (WalStore; RaftLogStore in data directories of earlier versions). Writes
 * (through a group's storage, or putMeta) are durable once the next
 * commitTurn() resolves; docs/storage.md.
 */
export interface NodeLogStore {
  /** Where the data lives, for logs and INFO. */
  readonly description: string;
  /** Commit turns off the event loop's thread (a node with peers) or on it (a node alone). */
  commitOffThread: boolean;
  /** The storage of group `groupId`, created (empty, with `initialConf`) if the node has none yet. */
  group(groupId: number, initialConf: ConfState): WritableStorage;
  /** Ids of every group this node stores, ascending. */
  groups(): number[];
  hasGroup(groupId: number): boolean;
  getMeta(key: string): Uint8Array | undefined;
  /** Written with the next turn. The store keeps `value`: do not change it. */
  putMeta(key: string, value: Uint8Array): void;
  deleteMeta(key: string): void;
  metaKeys(): string[];
  /** Makes every write since the last turn durable; rejects with PersistError. Turns settle in call order. */
  commitTurn(): Promise<void>;
  /** Releases the store; writes not committed are dropped, as a crash would. */
  close(): Promise<void>;
}

export interface LegacyKeyspaceStore {
  /** Where the data lives, for logs and INFO. */
  readonly description: string;
  /** Loads every stored key into `sm` (which must be empty). */
  recover(sm: StateMachine): void;
  /** Writes one batch of changes atomically; resolves once durable (or committed, under fsync never). */
  persist(changes: ChangeSet): Promise<void>;
  /** Flushes and releases the store. */
  close(): Promise<void>;
}
