// What the host needs from the node's keyspace store (storage/keyspace.ts
// KeyspaceStore, or MemoryKeyspace below for tests and the simulator): each
// group's state machine reads through to it, checkpoints of every group's
// changes are written to it off the reply path, a restart replays the log from
// each group's checkpointed index, and lagging followers are sent a snapshot
// exported from it. A host without a keyspace keeps each group's keyspace in
// memory and snapshots it into the log store, as before.

import assert from "node:assert/strict";
import type { ConfState, Entry, HardState, Snapshot, SnapshotMeta, WritableStorage } from "../raft/index.js";
import { MemoryKeyspaceBacking, type KeyspaceBacking } from "../sequencer/backing.js";
import { snapshotState } from "../sequencer/codec.js";
import { StateMachine } from "../sequencer/state-machine.js";
import { realScheduler, type MemoryScheduler } from "../transport/memory.js";

// A group's state as of its last durable checkpoint, and one group's part of a
// checkpoint: defined with the store that writes them (types only, erased at run time).
export type { GroupCheckpointState, KeyspaceCheckpointItem } from "../storage/keyspace.js";
import type { GroupCheckpointState, KeyspaceCheckpointItem } from "../storage/keyspace.js";

export interface HostKeyspace {
  /** The group's last durable checkpoint; undefined when it has none. */
  groupState(groupId: number): GroupCheckpointState | undefined;
  /** The group's keys as of its last durable checkpoint, for its StateMachine. */
  backing(groupId: number): KeyspaceBacking;
  /** Writes every item atomically; resolves once durable. One at a time (the host waits for each). */
  checkpoint(items: readonly KeyspaceCheckpointItem[]): Promise<void>;
  /**
   * One consistent read of the group's last durable checkpoint, open until
   * `close`: its state, and its data in snapshotState's format if asked.
   */
  openCheckpoint(groupId: number): GroupCheckpointView;
}

export interface GroupCheckpointView {
  /** undefined: the group has no checkpoint. */
  readonly state: GroupCheckpointState | undefined;
  exportData(): Uint8Array;
  close(): void;
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
 * no data: the log is only compacted behind a durable checkpoint). The data is
 * exported from the keyspace when first read (a snapshot sent to a follower),
 * and shared by the transfers of that checkpoint still in progress.
 */
export class CheckpointedStorage implements WritableStorage {
  /** The last export, while something (a follower's transfer) still holds it. */
  private cachedExport: { readonly index: number; readonly data: WeakRef<Uint8Array> } | null = null;

  constructor(
    /** The log store's storage of the group. */
    readonly log: WritableStorage,
    private readonly keyspace: HostKeyspace,
    private readonly groupId: number,
  ) {}

  snapshot(): Snapshot {
    // State and data from one read of the keyspace: a checkpoint committing meanwhile must not mix in.
    const view = this.keyspace.openCheckpoint(this.groupId);
    const ck = view.state;
    if (!checkpointUsable(ck, this.log)) {
      view.close();
      return this.log.snapshot();
    }
    const index = ck.appliedIndex;
    const meta: SnapshotMeta = { index, term: ck.appliedTerm, conf: ck.conf };
    // The raft node reads the data at once when it starts sending the snapshot, or never (it asked for the meta).
    queueMicrotask(() => view.close());
    let data: Uint8Array | null = null;
    const exported = (): Uint8Array => {
      const cached = this.cachedExport?.index === index ? this.cachedExport.data.deref() : undefined;
      if (cached !== undefined) return cached;
      const fresh = view.exportData();
      this.cachedExport = { index, data: new WeakRef(fresh) };
      return fresh;
    };
    return {
      meta,
      get data(): Uint8Array {
        return (data ??= exported());
      },
    };
  }

  initialState(): { hardState: HardState; snapshotConf: ConfState } {
    return this.log.initialState();
  }
  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    return this.log.entries(lo, hi, maxBytes);
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
    this.cachedExport = null;
    this.log.applySnapshot(snap);
  }
  createSnapshot(index: number, conf: ConfState, data: Uint8Array): Snapshot {
    return this.log.createSnapshot(index, conf, data);
  }
  compact(index: number): void {
    this.log.compact(index);
  }
}

/** Milliseconds a MemoryKeyspace checkpoint takes (0: resolves at the next macrotask). */
export const DEFAULT_MEMORY_CHECKPOINT_DELAY_MS = 0;

/**
 * An in-memory HostKeyspace for tests and the simulator: a checkpoint is
 * applied when it completes; `crash()` drops checkpoints still in flight.
 */
export class MemoryKeyspace implements HostKeyspace {
  private readonly groups = new Map<number, { backing: MemoryKeyspaceBacking; state: GroupCheckpointState }>();
  private epoch = 0;
  checkpoints = 0;

  constructor(
    private readonly delayMs: number = DEFAULT_MEMORY_CHECKPOINT_DELAY_MS,
    private readonly timers: MemoryScheduler = realScheduler,
  ) {}

  private group(groupId: number): { backing: MemoryKeyspaceBacking; state: GroupCheckpointState } {
    let g = this.groups.get(groupId);
    if (g === undefined) {
      g = { backing: new MemoryKeyspaceBacking(), state: { appliedIndex: 0, appliedTerm: 0, conf: { voters: [], learners: [] } } };
      this.groups.set(groupId, g);
    }
    return g;
  }

  groupState(groupId: number): GroupCheckpointState | undefined {
    const g = this.groups.get(groupId);
    return g === undefined || g.state.appliedIndex === 0 ? undefined : g.state;
  }

  backing(groupId: number): KeyspaceBacking {
    return this.group(groupId).backing;
  }

  checkpoint(items: readonly KeyspaceCheckpointItem[]): Promise<void> {
    const epoch = this.epoch;
    return new Promise<void>((resolve) => {
      const complete = (): void => {
        if (epoch === this.epoch) {
          for (const item of items) {
            const g = this.group(item.groupId);
            g.backing.write(item.changes);
            assert.equal(g.backing.count, item.keyCount, "checkpoint key count differs from the keys written");
            g.state = { appliedIndex: item.appliedIndex, appliedTerm: item.appliedTerm, conf: item.conf };
          }
          this.checkpoints++;
        }
        resolve();
      };
      if (this.delayMs > 0) this.timers.after(this.delayMs, complete);
      else this.timers.endOfTurn(complete);
    });
  }

  openCheckpoint(groupId: number): GroupCheckpointView {
    const state = this.groupState(groupId);
    const backing = this.group(groupId).backing;
    return {
      state,
      exportData: () => {
        assert.equal(this.groupState(groupId), state, "MemoryKeyspace: a checkpoint completed while a view was open");
        return snapshotState(new StateMachine(backing));
      },
      close: () => undefined,
    };
  }

  /** Loses every checkpoint not yet complete. */
  crash(): void {
    this.epoch++;
  }
}
