// The in-memory stores a MultiRaftHost runs on in tests and the simulator:
// MemoryRaftLogStore, a GroupLogStore whose "disk" copy only takes a turn's
// writes when its commit completes, and MemoryKeyspace, a HostKeyspace whose
// checkpoints and installs apply when they complete. A crash drops what is
// not yet complete in either. Production code uses storage/wal-store.ts and
// storage/keyspace.ts instead.

import assert from 'node:assert/strict';
import { MemoryStorage, type ConfState, type Entry, type HardState, type Snapshot, type WritableStorage } from '../raft/index.js';
import { MemoryKeyspaceBacking, type KeyspaceBacking } from '../sequencer/backing.js';
import { decodeTokens, decodeValue, encodeTokens as encodeTokensRecord, encodeValue as encodeValueRecord } from '../sequencer/codec.js';
import { ChunkWriter, ITEM_TOKENS, ITEM_VALUE, readItems, type SnapshotItem } from '../sequencer/snapshot-items.js';
import type { TokenTable } from '../sequencer/sequence.js';
import { StateMachine, type StoredValue } from '../sequencer/state-machine.js';
import { realScheduler, type MemoryScheduler } from '../transport/memory.js';
import type { GroupLogStore } from './host.js';
import type { GroupCheckpointState, GroupSnapshotReader, HostKeyspace, KeyspaceCheckpointItem } from './keyspace.js';

// ------------------------------------------------------------ memory log store

/** Milliseconds a MemoryRaftLogStore commit takes (0: resolves at the next macrotask). */
export const DEFAULT_MEMORY_COMMIT_DELAY_MS = 0;

/**
 * An in-memory GroupLogStore for tests: writes go to a live copy at once and
 * to the "disk" copy only when the turn's commit completes; `crash()` drops
 * every write not yet committed (including commits still in flight).
 * `commitDelayMs` may be a function, asked once per commit (a disk whose
 * latency varies).
 */
export class MemoryRaftLogStore implements GroupLogStore {
  private readonly durable = new Map<number, MemoryStorage>();
  private pending: (() => void)[] = [];
  private epoch = 0;
  commits = 0;

  constructor(
    private readonly commitDelayMs: number | (() => number) = DEFAULT_MEMORY_COMMIT_DELAY_MS,
    /** How commits complete (replaceable for a virtual clock). */
    private readonly timers: MemoryScheduler = realScheduler,
  ) {}

  group(groupId: number, initialConf: ConfState): WritableStorage {
    let disk = this.durable.get(groupId);
    if (disk === undefined) {
      disk = new MemoryStorage(initialConf);
      this.durable.set(groupId, disk);
    }
    return new MemoryLogView(this, disk, cloneStorage(disk, initialConf), this.epoch);
  }

  commitTurn(): Promise<void> {
    const ops = this.pending;
    this.pending = [];
    const epoch = this.epoch;
    return new Promise<void>((resolve) => {
      const complete = (): void => {
        if (epoch === this.epoch) {
          for (const op of ops) op();
          this.commits++;
        }
        resolve();
      };
      const delayMs = typeof this.commitDelayMs === 'number' ? this.commitDelayMs : this.commitDelayMs();
      if (delayMs > 0) this.timers.after(delayMs, complete);
      else this.timers.endOfTurn(complete);
    });
  }

  /** Loses every write not yet durable. Storages handed out before must not be used again. */
  crash(): void {
    this.epoch++;
    this.pending = [];
  }

  /** @internal */
  record(epoch: number, op: () => void): void {
    assert.equal(epoch, this.epoch, 'write through a storage handed out before a crash');
    this.pending.push(op);
  }
}

function cloneStorage(src: MemoryStorage, conf: ConfState): MemoryStorage {
  const out = new MemoryStorage(conf);
  const snap = src.snapshot();
  if (snap.meta.index > 0) out.applySnapshot(snap);
  const first = src.firstIndex();
  const last = src.lastIndex();
  if (last >= first) out.append(src.entries(first, last + 1, Number.MAX_SAFE_INTEGER));
  out.setHardState(src.hardState());
  return out;
}

/** The live side of one group's memory log: reads and writes here, writes replayed on the disk copy at commit. */
class MemoryLogView implements WritableStorage {
  constructor(
    private readonly store: MemoryRaftLogStore,
    private readonly disk: MemoryStorage,
    private readonly live: MemoryStorage,
    private readonly epoch: number,
  ) {}

  initialState(): { hardState: HardState; snapshotConf: ConfState } {
    return this.live.initialState();
  }
  entries(lo: number, hi: number, bytesMax: number): Entry[] {
    return this.live.entries(lo, hi, bytesMax);
  }
  term(i: number): number | undefined {
    return this.live.term(i);
  }
  firstIndex(): number {
    return this.live.firstIndex();
  }
  lastIndex(): number {
    return this.live.lastIndex();
  }
  snapshot(): Snapshot {
    return this.live.snapshot();
  }
  setHardState(hs: HardState): void {
    this.live.setHardState(hs);
    this.store.record(this.epoch, () => this.disk.setHardState(hs));
  }
  append(entries: readonly Entry[]): void {
    this.live.append(entries);
    const copy = entries.slice();
    this.store.record(this.epoch, () => this.disk.append(copy));
  }
  applySnapshot(snap: Snapshot): void {
    this.live.applySnapshot(snap);
    this.store.record(this.epoch, () => this.disk.applySnapshot(snap));
  }
  createSnapshot(index: number, conf: ConfState, data: Uint8Array): Snapshot {
    const snap = this.live.createSnapshot(index, conf, data);
    this.store.record(this.epoch, () => this.disk.createSnapshot(index, conf, data));
    return snap;
  }
  compact(index: number): void {
    this.live.compact(index);
    this.store.record(this.epoch, () => this.disk.compact(index));
  }
}

// ------------------------------------------------------------ memory keyspace

/** Milliseconds a MemoryKeyspace checkpoint takes (0: resolves at the next macrotask). */
export const DEFAULT_MEMORY_CHECKPOINT_DELAY_MS = 0;

/**
 * An in-memory HostKeyspace for tests and the simulator: a checkpoint is
 * applied when it completes; `crash()` drops checkpoints still in flight.
 */
export class MemoryKeyspace implements HostKeyspace {
  private readonly groups = new Map<number, { backing: MemoryKeyspaceBacking; state: GroupCheckpointState }>();
  /** Per group, the records of a snapshot being received (lost on crash, like LMDB's staging after a restart). */
  private readonly staging = new Map<number, { values: Map<string, StoredValue>; tokens: Map<string, TokenTable> }>();
  /** Per group, the index of the last installed snapshot (checkpoints taken before it are skipped). */
  private readonly installedAt = new Map<number, number>();
  private readonly installedSnapshots = new Map<number, { readonly index: number; readonly term: number }>();
  /** Writes (checkpoints, installs) not yet complete, in call order. */
  private queue: Promise<void> = Promise.resolve();
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

  /** Runs `apply` when the write completes (after the delay), after every write asked for before it; not at all after a crash. */
  private write(apply: () => void): Promise<void> {
    const epoch = this.epoch;
    const run = (): Promise<void> =>
      new Promise<void>((resolve) => {
        const complete = (): void => {
          if (epoch === this.epoch) apply();
          resolve();
        };
        if (this.delayMs > 0) this.timers.after(this.delayMs, complete);
        else this.timers.endOfTurn(complete);
      });
    const done = this.queue.then(run);
    this.queue = done;
    return done;
  }

  checkpoint(items: readonly KeyspaceCheckpointItem[]): Promise<void> {
    return this.write(() => {
      for (const item of items) {
        if (item.appliedIndex < (this.installedAt.get(item.groupId) ?? 0)) continue;
        this.installedSnapshots.delete(item.groupId);
        const g = this.group(item.groupId);
        g.backing.write(item.changes);
        assert.equal(g.backing.count, item.keyCount, 'checkpoint key count differs from the keys written');
        g.state = { appliedIndex: item.appliedIndex, appliedTerm: item.appliedTerm, conf: item.conf };
      }
      this.checkpoints++;
    });
  }

  installedSnapshot(groupId: number): { readonly index: number; readonly term: number } | undefined {
    return this.installedSnapshots.get(groupId);
  }

  openSnapshotReader(groupId: number): GroupSnapshotReader {
    const state = this.groupState(groupId);
    // A copy of the checkpoint's records, as a read transaction would see them however checkpoints go on.
    const sm = new StateMachine(this.group(groupId).backing, { recordChanges: false });
    const items: SnapshotItem[] = [];
    for (const [key, value] of sm.entries()) items.push({ kind: ITEM_VALUE, key, record: encodeValueRecord(value) });
    for (const [key, table] of sm.tokenEntries()) items.push({ kind: ITEM_TOKENS, key, record: encodeTokensRecord(table) });
    let at = 0;
    return {
      state,
      nextChunk: (bytesMax: number) => {
        const out = new ChunkWriter(bytesMax);
        for (; at < items.length; at++) {
          const item = items[at] as SnapshotItem;
          if (!out.fits(item.key, item.record)) return { data: out.take(), last: false };
          out.push(item.kind, item.key, item.record);
        }
        return { data: out.take(), last: true };
      },
      close: () => undefined,
    };
  }

  stageChunk(groupId: number, chunk: Uint8Array): Promise<void> {
    let staged = this.staging.get(groupId);
    if (staged === undefined) {
      staged = { values: new Map(), tokens: new Map() };
      this.staging.set(groupId, staged);
    }
    try {
      for (const item of readItems(chunk)) {
        if (item.kind === ITEM_VALUE) staged.values.set(item.key, decodeValue(item.record));
        else staged.tokens.set(item.key, decodeTokens(item.record));
      }
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    return Promise.resolve();
  }

  discardStaging(groupId: number): Promise<void> {
    this.staging.delete(groupId);
    return Promise.resolve();
  }

  installStaged(groupId: number, state: GroupCheckpointState): Promise<void> {
    const staged = this.staging.get(groupId) ?? { values: new Map<string, StoredValue>(), tokens: new Map<string, TokenTable>() };
    this.staging.delete(groupId);
    return this.write(() => {
      const g = this.group(groupId);
      g.backing.write({ cleared: true, values: staged.values, tokens: staged.tokens });
      g.state = state;
      this.installedAt.set(groupId, state.appliedIndex);
      this.installedSnapshots.set(groupId, { index: state.appliedIndex, term: state.appliedTerm });
    });
  }

  /** Loses every checkpoint and install not yet complete, and every staging area. */
  crash(): void {
    this.epoch++;
    this.staging.clear();
  }
}
