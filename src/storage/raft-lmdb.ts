// Durable Raft storage for every group on one node, in one LMDB environment
// (`raft.mdb` in the data directory; the single-node keyspace lives apart in
// `ordo.mdb`). The key layout and record encodings are in raft-lmdb-format.ts,
// reading the file back at open in raft-lmdb-recovery.ts. See docs/storage.md
// for the layout and the guarantees.
//
// Each group's storage keeps an in-memory mirror of its uncompacted log, hard
// state and latest snapshot, so the Raft node reads synchronously and sees
// every write at once. Writes only mark the group dirty; `commitTurn()` turns
// everything that changed since the previous call (in all groups, plus the
// node metadata) into LMDB puts and removes, written in one transaction
// committed with its fsync: synchronously on the event loop's thread, or (with
// `commitOffThread`, for a node with peers) committed on lmdb-js's write thread
// so the event loop keeps reading and sending while the disk syncs. The promise
// resolves once the commit is done; turns are written one after the other.
// After a failed turn every later turn fails, so a failed transaction is never
// followed by one that assumed it succeeded.

import assert from 'node:assert/strict';
import type { RootDatabase } from 'lmdb';
import { MemoryStorage } from '../raft/storage.js';
import { type ConfState, type Entry, type HardState, type Snapshot } from '../raft/types.js';
import { openLmdbStore, RAFT_FILES, releasePidLock, type FsyncMode } from './files.js';
import {
  META_KEY_BYTES_MAX,
  GROUP_ID_MAX,
  KIND_META,
  KIND_GROUP,
  KIND_SNAPSHOT,
  GROUP_COUNT_KEY,
  ENTRY_HEADER_BYTES,
  CRC_BYTES,
  seal,
  Slab,
  WriteBatch,
  nodeIdBytes,
  encodeGroupState,
  type GroupStateRecord,
  encodeSnapshotMeta,
} from './raft-lmdb-format.js';
import { utf8, writeU64 } from './bytes.js';
import { readRaftData } from './raft-lmdb-recovery.js';
import { PersistError } from './store.js';

/** The LMDB file holding every Raft group of the node, in the data directory. */
export const RAFT_DATA_FILE = RAFT_FILES.dataFile;
/** Holds the pid of the process that has `raft.mdb` open (one process per file). */
export const RAFT_LOCK_FILE = RAFT_FILES.lockFile;
/** Default largest value holding snapshot data; bigger snapshots are split into chunks of this size. */
export const SNAPSHOT_CHUNK_BYTES_DEFAULT = 1024 * 1024;
/** Largest snapshotChunkBytes accepted. */
export const SNAPSHOT_CHUNK_BYTES_MAX = 256 * 1024 * 1024;

export type RaftFsyncMode = FsyncMode;

export interface RaftLogStoreOptions {
  /** 'always': commitTurn resolves after fsync. 'never': after commit only (benchmarks; a crash can lose turns). */
  readonly fsync: RaftFsyncMode;
  /** Commit on lmdb-js's write thread instead of the calling thread (default false; see `commitOffThread`). */
  readonly commitOffThread?: boolean;
  /** Largest value holding snapshot data (default SNAPSHOT_CHUNK_BYTES_DEFAULT). Only affects new writes. */
  readonly snapshotChunkBytes?: number;
}

// ---------------------------------------------------------------------------
// One group's storage
// ---------------------------------------------------------------------------

/**
 * The storage of one Raft group: MemoryStorage (the in-memory mirror every read
 * is served from), with stricter checks on writes and a record of what changed,
 * which RaftLogStore writes to LMDB at the next commitTurn().
 */
export class RaftGroupStorage extends MemoryStorage {
  // What changed since the last turn, and what the writes issued so far leave on disk.
  private stateDirty: boolean;
  private snapDirty: boolean;
  /** Lowest index appended since the last turn (Infinity: none). */
  private dirtyFrom = Infinity;
  private diskFirst = 1;
  private diskLast = 0;
  private diskChunks = 0;

  /** @internal Only RaftLogStore creates these: `isNew` means nothing of the group is on disk yet. */
  constructor(
    readonly groupId: number,
    initialConf: ConfState,
    private readonly onDirty: (g: RaftGroupStorage) => void,
    isNew: boolean,
  ) {
    super(initialConf);
    this.stateDirty = isNew;
    this.snapDirty = isNew;
  }

  /** @internal Restores recovered state (nothing is dirty afterwards). */
  restore(state: GroupStateRecord, snap: Snapshot, chunks: number, ents: Entry[]): void {
    this.hard = state.hardState;
    this.snap = snap;
    this.ents = ents;
    this.diskFirst = state.logStart + 1;
    this.diskLast = state.logStart + ents.length - 1;
    this.diskChunks = chunks;
  }

  override setHardState(hs: HardState): void {
    if (hs.vote !== null) nodeIdBytes(hs.vote);
    super.setHardState(hs);
    this.stateDirty = true;
    this.onDirty(this);
  }

  override append(entries: readonly Entry[]): void {
    // Everything is checked before anything changes.
    const start = this.checkedAppendStart(entries);
    if (start === null) return;
    super.append(entries);
    if (start < this.dirtyFrom) this.dirtyFrom = start;
    this.stateDirty = true; // the last index is part of the group state
    this.onDirty(this);
  }

  override applySnapshot(snap: Snapshot): void {
    this.checkSnapshotMeta(snap);
    this.checkConf(snap.meta.conf);
    super.applySnapshot(snap);
    this.stateDirty = true;
    this.snapDirty = true;
    this.dirtyFrom = snap.meta.index + 1;
    this.onDirty(this);
  }

  override createSnapshot(index: number, conf: ConfState, data: Uint8Array): Snapshot {
    this.checkConf(conf);
    const snap = super.createSnapshot(index, conf, data);
    this.snapDirty = true;
    this.onDirty(this);
    return snap;
  }

  override compact(index: number): void {
    const before = this.offset();
    super.compact(index);
    if (this.offset() === before) return;
    this.stateDirty = true;
    this.onDirty(this);
  }

  private checkConf(conf: ConfState): void {
    for (const id of conf.voters) nodeIdBytes(id);
    for (const id of conf.learners) nodeIdBytes(id);
  }

  /** @internal Adds this turn's changes to `batch` and records them as on disk. */
  collect(batch: WriteBatch, chunkBytes: number): void {
    const g = this.groupId;
    const off = this.offset();
    if (this.stateDirty) {
      const key = batch.groupKey(KIND_GROUP, g);
      batch.put(key, seal(key, encodeGroupState(this.hard, off, (this.ents[0] as Entry).term, this.lastIndex())));
      this.stateDirty = false;
    }
    if (this.snapDirty) {
      const data = this.snap.data;
      const chunks = Math.ceil(data.length / chunkBytes);
      const metaKey = batch.groupKey(KIND_SNAPSHOT, g);
      batch.put(metaKey, seal(metaKey, encodeSnapshotMeta(this.snap, chunks)));
      for (let c = 0; c < chunks; c++) {
        const piece = data.subarray(c * chunkBytes, Math.min(data.length, (c + 1) * chunkBytes));
        const key = batch.chunkKey(g, c);
        const v = batch.slab.take(piece.length + CRC_BYTES);
        v.set(piece, 0);
        batch.put(key, seal(key, v));
      }
      for (let c = chunks; c < this.diskChunks; c++) batch.remove(batch.chunkKey(g, c));
      this.diskChunks = chunks;
      this.snapDirty = false;
    }
    // Entries: remove what is on disk but no longer in the log, put what this turn appended.
    const first = off + 1;
    const last = this.lastIndex();
    const belowEnd = Math.min(this.diskLast, first - 1);
    for (let i = this.diskFirst; i <= belowEnd; i++) batch.remove(batch.entryKey(g, i));
    for (let i = Math.max(this.diskFirst, last + 1); i <= this.diskLast; i++) batch.remove(batch.entryKey(g, i));
    const putFrom = Math.max(this.dirtyFrom, first);
    for (let i = putFrom; i <= last; i++) {
      const e = this.ents[i - off] as Entry;
      const key = batch.entryKey(g, i);
      const v = batch.slab.take(ENTRY_HEADER_BYTES + e.data.length + CRC_BYTES);
      v[0] = e.type;
      writeU64(v, e.term, 1);
      v.set(e.data, ENTRY_HEADER_BYTES);
      batch.put(key, seal(key, v));
    }
    this.diskFirst = first;
    this.diskLast = last;
    this.dirtyFrom = Infinity;
  }
}

// ---------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------

export class RaftLogStore {
  /** Where the data lives, for logs and INFO. */
  readonly description: string;
  private readonly groupsById = new Map<number, RaftGroupStorage>();
  /** A group was created since the last turn: the group count record is rewritten. */
  private groupCountDirty = false;
  private readonly dirty = new Set<RaftGroupStorage>();
  private readonly meta = new Map<string, Uint8Array>();
  /** Metadata keys changed since the last turn (value null: removed). */
  private readonly metaDirty = new Map<string, Uint8Array | null>();
  private readonly markDirty = (g: RaftGroupStorage): void => {
    assert.ok(!this.closed, 'raft log store is closed');
    this.dirty.add(g);
  };
  private slab = new Slab();
  /** The first write failure; every later turn fails too (the store must be reopened). */
  private failure: PersistError | null = null;
  private closed = false;
  /** The turn being committed (its values live in the slab until then). */
  private inFlight: Promise<void> | null = null;
  /**
   * false: a turn's transaction is committed, with its fsync, synchronously on
   * the calling thread. true: its writes are made on the calling thread and
   * the commit runs on lmdb-js's write thread, so the event loop goes on
   * while the disk syncs. A node with peers gains (they send acks and appends
   * meanwhile); a node alone loses the hand-offs (docs/storage.md). May change
   * between turns.
   */
  commitOffThread: boolean;
  private readonly chunkBytes: number;

  private constructor(
    dataPath: string,
    private readonly root: RootDatabase<Buffer, Buffer>,
    private readonly lockPath: string,
    chunkBytes: number,
    commitOffThread: boolean,
  ) {
    this.description = `lmdb:${dataPath}`;
    this.chunkBytes = chunkBytes;
    this.commitOffThread = commitOffThread;
  }

  /**
   * Opens (or creates) `raft.mdb` in `dataDir` and restores every group in it.
   * Refuses, with a DataDirectoryError saying why, a file another live process
   * holds, a file that is not LMDB, an environment without ordo's Raft format
   * marker or with another format version, and any record that does not decode
   * or does not fit the others (a gap in a log, a chunk without its snapshot).
   */
  static open(dataDir: string, options: RaftLogStoreOptions): RaftLogStore {
    const chunkBytes = options.snapshotChunkBytes ?? SNAPSHOT_CHUNK_BYTES_DEFAULT;
    assert.ok(
      Number.isSafeInteger(chunkBytes) && chunkBytes > 0 && chunkBytes <= SNAPSHOT_CHUNK_BYTES_MAX,
      `snapshotChunkBytes must be an integer in 1..${SNAPSHOT_CHUNK_BYTES_MAX}`,
    );
    return openLmdbStore(dataDir, RAFT_FILES, 'the Raft data file', options.fsync, (root, dataPath, lockPath) => {
      const store = new RaftLogStore(dataPath, root, lockPath, chunkBytes, options.commitOffThread === true);
      store.recover(dataPath);
      return store;
    });
  }

  /** Reads the whole environment back into the mirrors; writes the format marker into a new one. */
  private recover(dataPath: string): void {
    readRaftData(this.root, dataPath, {
      meta: (name, value) => this.meta.set(name, value),
      group: (group, state, snap, chunks, log) => {
        const g = new RaftGroupStorage(group, snap.meta.conf, this.markDirty, false);
        g.restore(state, snap, chunks, log);
        this.groupsById.set(group, g);
      },
    });
  }

  /** The storage of group `groupId`, created (empty, with `initialConf`) if the node has none yet. */
  group(groupId: number, initialConf: ConfState): RaftGroupStorage {
    assert.ok(Number.isInteger(groupId) && groupId >= 0 && groupId <= GROUP_ID_MAX, `group id ${groupId} is not a u32`);
    assert.ok(!this.closed, 'raft log store is closed');
    let g = this.groupsById.get(groupId);
    if (g === undefined) {
      for (const id of initialConf.voters) nodeIdBytes(id);
      for (const id of initialConf.learners) nodeIdBytes(id);
      g = new RaftGroupStorage(groupId, initialConf, this.markDirty, true);
      this.groupsById.set(groupId, g);
      this.dirty.add(g);
      this.groupCountDirty = true;
    }
    return g;
  }

  /** Ids of every group this node stores (recovered or created), ascending. */
  groups(): number[] {
    return [...this.groupsById.keys()].sort((a, b) => a - b);
  }

  hasGroup(groupId: number): boolean {
    return this.groupsById.has(groupId);
  }

  /** A node metadata value (as last put, committed or not). */
  getMeta(key: string): Uint8Array | undefined {
    return this.meta.get(key);
  }

  /** Sets a node metadata value; written with the next turn. The store keeps `value`: do not change it. */
  putMeta(key: string, value: Uint8Array): void {
    assert.ok(!this.closed, 'raft log store is closed');
    const bytes = utf8.encode(key).length;
    assert.ok(bytes > 0 && bytes <= META_KEY_BYTES_MAX, `metadata key must have 1 to ${META_KEY_BYTES_MAX} bytes`);
    this.meta.set(key, value);
    this.metaDirty.set(key, value);
  }

  /** Removes a node metadata value; written with the next turn. */
  deleteMeta(key: string): void {
    assert.ok(!this.closed, 'raft log store is closed');
    if (!this.meta.delete(key)) return;
    this.metaDirty.set(key, null);
  }

  /** Metadata keys in ascending order. */
  metaKeys(): string[] {
    return [...this.meta.keys()].sort();
  }

  /**
   * Writes everything changed since the previous call (all groups, metadata)
   * in one LMDB transaction, committed with its fsync (fsync 'always') or
   * without (fsync 'never'), on this thread or on lmdb-js's write thread (see
   * `commitOffThread`); resolves when that commit is done. A call made while a
   * turn is in flight collects at once into buffers of its own (LMDB reads a
   * turn's values until its commit) and is written once the earlier turn has
   * settled, so turns settle in call order. Rejects with a PersistError:
   * applied 'no' when a write was refused inside the transaction (it is
   * aborted), when an earlier turn failed (nothing is written) or when the
   * store is closed; 'unknown' when the commit failed (pages may have been
   * written before its fsync failed). After any failure every later turn fails
   * too: close and reopen the store.
   */
  commitTurn(): Promise<void> {
    if (this.closed) return Promise.reject(new PersistError('raft log store is closed; turn not written', 'no'));
    const batch = this.collect();
    const previous = this.inFlight;
    const turn =
      previous === null
        ? this.write(batch)
        : previous.then(
            () => this.write(batch),
            () => this.write(batch),
          );
    // A synchronous commit (or an empty turn) is over already: nothing is in flight.
    if (previous === null && (batch.size === 0 || !this.commitOffThread)) return turn;
    this.inFlight = turn;
    const settled = (): void => {
      if (this.inFlight === turn) this.inFlight = null;
    };
    turn.then(settled, settled);
    return turn;
  }

  /** Writes one collected turn as one LMDB transaction (once the turns before it have settled). */
  private write(batch: WriteBatch): Promise<void> {
    if (this.failure !== null) {
      return Promise.reject(new PersistError(`turn not written: an earlier turn failed (${this.failure.message}); reopen the store`, 'no'));
    }
    if (batch.size === 0) return Promise.resolve();
    let writing = true;
    const writeAll = (): void => {
      for (let i = 0; i < batch.size; i++) {
        const key = batch.keys[i] as Buffer;
        const value = batch.values[i] as Buffer | null;
        if (value === null) this.root.removeSync(key);
        else this.root.putSync(key, value);
      }
      writing = false;
    };
    // A write refused inside the transaction aborts it: nothing applied. A
    // failed commit may have written pages before its sync failed.
    const failed = (e: unknown): PersistError =>
      this.fail(
        writing
          ? new PersistError(`raft log write failed, not applied: ${(e as Error).message}`, 'no')
          : new PersistError(`raft log commit failed, outcome unknown: ${(e as Error).message}`, 'unknown'),
      );
    if (!this.commitOffThread) {
      try {
        this.root.transactionSync(writeAll);
      } catch (e) {
        return Promise.reject(failed(e));
      }
      return Promise.resolve();
    }
    // A child transaction: lmdb-js runs writeAll on this thread inside its
    // write transaction (a throw aborts the child, so all of the turn's writes),
    // then commits, with its fsync, on its write thread.
    return this.root.childTransaction(writeAll).then(
      () => undefined,
      (e: unknown) => {
        throw failed(e);
      },
    );
  }

  private collect(): WriteBatch {
    // LMDB reads a turn's values from the slab until the turn is committed:
    // while one is in flight, this turn is carved from a new slab.
    if (this.inFlight === null) this.slab.rewind();
    else this.slab = new Slab();
    const batch = new WriteBatch(this.slab);
    if (this.groupCountDirty) {
      const v = batch.slab.take(4 + CRC_BYTES);
      v.writeUInt32BE(this.groupsById.size, 0);
      batch.put(GROUP_COUNT_KEY, seal(GROUP_COUNT_KEY, v));
      this.groupCountDirty = false;
    }
    if (this.dirty.size > 0) {
      const groups = [...this.dirty].sort((a, b) => a.groupId - b.groupId);
      this.dirty.clear();
      for (const g of groups) g.collect(batch, this.chunkBytes);
    }
    for (const [key, value] of this.metaDirty) {
      const name = utf8.encode(key);
      const k = batch.slab.take(1 + name.length);
      k[0] = KIND_META;
      k.set(name, 1);
      if (value === null) {
        batch.remove(k);
      } else {
        const v = batch.slab.take(value.length + CRC_BYTES);
        v.set(value, 0);
        batch.put(k, seal(k, v));
      }
    }
    this.metaDirty.clear();
    return batch;
  }

  private fail(e: PersistError): PersistError {
    if (this.failure === null) this.failure = e;
    return e;
  }

  /**
   * Closes the environment. Writes made since the last commitTurn() are
   * dropped, as a crash would drop them.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.dirty.clear();
    this.metaDirty.clear();
    try {
      // Turns asked for before close are written (their callers learn how); nothing after them is.
      while (this.inFlight !== null) await this.inFlight.catch(() => undefined);
      await this.root.close();
    } finally {
      releasePidLock(this.lockPath);
    }
  }
}
