// What the host needs from the node's keyspace store (storage/keyspace.ts
// KeyspaceStore, or MemoryKeyspace in memory-stores.ts for tests and the
// simulator): each group's state machine reads through to it, checkpoints of
// every group's changes are written to it off the reply path, a restart
// replays the log from each group's checkpointed index, lagging followers are
// sent a snapshot read from it in chunks, and a snapshot received from a
// leader is staged in it chunk by chunk and installed in one step
// (multiraft/snapshot-transfer.ts).
// A host without a keyspace keeps each group's keyspace in memory and
// snapshots it into the log store, as before.

import assert from 'node:assert/strict';
import type { ConfState, Entry, HardState, Snapshot, SnapshotMeta, WritableStorage } from '../raft/index.js';
import type { KeyspaceBacking } from '../sequencer/backing.js';

// A group's state as of its last durable checkpoint, and one group's part of a
// checkpoint: defined with the store that writes them (types only, erased at run time).
export type { GroupCheckpointState, GroupSnapshotReader, KeyspaceCheckpointItem } from '../storage/keyspace.js';
import type { GroupCheckpointState, GroupSnapshotReader, KeyspaceCheckpointItem } from '../storage/keyspace.js';

export interface HostKeyspace {
  /** The group's last durable checkpoint; undefined when it has none. */
  groupState(groupId: number): GroupCheckpointState | undefined;
  /** The group's keys as of its last durable checkpoint, for its StateMachine. */
  backing(groupId: number): KeyspaceBacking;
  /** Writes every item atomically; resolves once durable. One at a time (the host waits for each). */
  checkpoint(items: readonly KeyspaceCheckpointItem[]): Promise<void>;
  /**
   * One consistent read of the group's last durable checkpoint, open until
   * `close`: its state, and its records in chunks (snapshot-items.ts).
   */
  openSnapshotReader(groupId: number): GroupSnapshotReader;
  /** Whether the group's last durable state is a snapshot installed from its leader with no checkpoint since (its index and term). */
  installedSnapshot(groupId: number): { readonly index: number; readonly term: number } | undefined;
  /** Writes one received chunk into the group's staging area (never read); rejects on a malformed chunk. */
  stageChunk(groupId: number, chunk: Uint8Array): Promise<void>;
  /** Drops the group's staging area. */
  discardStaging(groupId: number): Promise<void>;
  /** Replaces the group's keyspace by its staging area and sets its state, atomically and durably, after every checkpoint asked for before. */
  installStaged(groupId: number, state: GroupCheckpointState): Promise<void>;
}

/**
 * With a keyspace, a group state that is a snapshot installed from the
 * leader (and no checkpoint since) but that the log does not hold, past the
 * log's snapshot: the install was durable and the log's write of it was not
 * (a crash between the two). It is committed state of the group at that
 * index, so the log adopts it as its snapshot (what the raft node did with
 * it before the crash) and the group starts from it. Any other checkpoint
 * outside the log (left by an earlier replica of the group) is not adopted.
 * Returns whether it did; the caller must make the log write durable.
 */
export function adoptInstalledCheckpoint(keyspace: HostKeyspace, groupId: number, log: WritableStorage): boolean {
  const ck = keyspace.groupState(groupId);
  const installed = keyspace.installedSnapshot(groupId);
  const usable: boolean = checkpointUsable(ck, log);
  if (ck === undefined || ck.appliedIndex === 0 || usable) return false;
  if (installed === undefined || installed.index !== ck.appliedIndex || installed.term !== ck.appliedTerm) return false;
  if (ck.appliedIndex <= log.snapshot().meta.index) return false;
  assert.ok(
    log.initialState().hardState.commit < ck.appliedIndex || log.term(ck.appliedIndex) === ck.appliedTerm,
    'a committed entry conflicts with an installed snapshot',
  );
  log.applySnapshot({ meta: { index: ck.appliedIndex, term: ck.appliedTerm, conf: ck.conf }, data: new Uint8Array(0) });
  return true;
}

/**
 * Whether a group's checkpoint is the state to start from, given its log:
 * at or past the log's snapshot and inside the log with the same term (a
 * checkpoint left by an earlier replica of the group on this node is not).
 */
export function checkpointUsable(ck: GroupCheckpointState | undefined, log: WritableStorage): ck is GroupCheckpointState {
  if (ck === undefined || ck.appliedIndex === 0) return false;
  const logSnapshotIndex = log.snapshot().meta.index;
  if (ck.appliedIndex < logSnapshotIndex || ck.appliedIndex > log.lastIndex()) return false;
  return log.term(ck.appliedIndex) === ck.appliedTerm;
}

/**
 * The storage a group's RaftNode reads when the host has a keyspace: the log
 * store's storage, except that its snapshot is the group's last durable
 * checkpoint when that is at or past the log's own snapshot (which then holds
 * no data: the log is only compacted behind a durable checkpoint). Only its
 * meta is read: the host streams the data from the keyspace
 * (snapshot-transfer.ts), so `data` is empty.
 */
export class CheckpointedStorage implements WritableStorage {
  constructor(
    /** The log store's storage of the group. */
    readonly log: WritableStorage,
    private readonly keyspace: HostKeyspace,
    private readonly groupId: number,
  ) {}

  snapshot(): Snapshot {
    const ck = this.keyspace.groupState(this.groupId);
    if (!checkpointUsable(ck, this.log)) return this.log.snapshot();
    const meta: SnapshotMeta = { index: ck.appliedIndex, term: ck.appliedTerm, conf: ck.conf };
    return { meta, data: EMPTY_DATA };
  }

  initialState(): { hardState: HardState; snapshotConf: ConfState } {
    return this.log.initialState();
  }
  entries(lo: number, hi: number, bytesMax: number): Entry[] {
    return this.log.entries(lo, hi, bytesMax);
  }
  term(i: number): number | undefined {
    return this.log.term(i);
  }
  firstIndex(): number {
    return this.log.firstIndex();
  }
  lastIndex(): number {
    return this.log.lastIndex();
  }
  setHardState(hs: HardState): void {
    this.log.setHardState(hs);
  }
  append(entries: readonly Entry[]): void {
    this.log.append(entries);
  }
  applySnapshot(snap: Snapshot): void {
    this.log.applySnapshot(snap);
  }
  createSnapshot(index: number, conf: ConfState, data: Uint8Array): Snapshot {
    return this.log.createSnapshot(index, conf, data);
  }
  compact(index: number): void {
    this.log.compact(index);
  }
}

const EMPTY_DATA = new Uint8Array(0);
