// The seam between the server and replication. The server proposes ops and
// asks for reads; a group answers each once it is safe to: a write once it is
// durable, a read once every write it could have observed is durable. Raft
// groups serve it (a node alone: one group whose only voter is the node).

import type { ErrorKey } from '../errors.js';
import type { Op, OpResult, StateMachine, StoredValue } from '../sequencer/state-machine.js';

/**
 * Whether a replica may hand out window-sequence values from memory now:
 * 'serve'; 'wait' (no leader holding its lease yet: an election, or a new
 * leader waiting out its predecessors' leases); or the error to answer at once
 * because it will not serve them here (another node leads, the host failed,
 * the group is closing). Nothing is allocated in the last two cases.
 */
export type WindowLease = 'serve' | 'wait' | ErrorKey;

export type ReadOutcome<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: ErrorKey };

export interface GroupStats {
  readonly batchesPersisted: number;
  readonly opsPersisted: number;
  readonly batchesInFlight: number;
  readonly persistFailures: number;
}

export interface Group {
  /** Applies `op` in order with every other proposal; `done` runs once the result may be shown. */
  propose(op: Op, done: (result: OpResult) => void): void;
  /** Runs `query` against a linearizable view; `done` gets its value once it may be shown. */
  read<T>(query: (sm: StateMachine) => T, done: (outcome: ReadOutcome<T>) => void): void;
  /**
   * The value as this replica has applied it, for routing decisions (is this
   * key a window sequence?); not a linearizable read.
   */
  peek(key: string): StoredValue | undefined;
  readonly stats: GroupStats;
  /** Key count, for INFO keyspace (not linearizable). */
  readonly keyCount: number;
  /** Whether this replica may take writes now (a single-voter group always may). */
  isLeader(): boolean;
  /** Node id of the group's leader as this replica knows it; null when unknown or when the group has no node ids (single voter). */
  leaderId(): string | null;
  /**
   * Whether this replica may hand out window-sequence values from memory now:
   * 'serve' only while it leads, holds its leader lease, and no earlier
   * leader's lease can still hold (docs/sequences.md, "Leader lease and clock
   * drift"). A single voter always may.
   */
  windowLease(): WindowLease;
  /**
   * Calls `listener` whenever windowLease() may have changed, and
   * periodically while it is not 'serve' (so that waiting requests can time
   * out); returns a function that removes the listener.
   */
  onWindowLeaseChange(listener: () => void): () => void;
  /** Waits for every accepted write to be durable, then releases storage. */
  close(): Promise<void>;
}
