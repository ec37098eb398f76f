// The keyspace of every Raft group of the node, in one LMDB environment
// (`keyspace.mdb` in the data directory): each group's applied state as of its
// last checkpoint, with the applied index, term and membership it reflects.
// Groups apply entries into memory and answer from there; every so often the
// host hands the keys changed since the previous checkpoint, for all groups
// together, to `checkpoint`, written as ONE transaction committed (with its
// fsync) on lmdb-js's write thread, off the reply path. State machines read the
// keys they do not hold in memory from here (`backing`), a restart replays the
// log from each group's checkpointed applied index. A lagging follower is sent
// its group's records read in chunks from one read transaction
// (`openSnapshotReader`); a follower stages the chunks it receives under a
// key prefix no read looks at (`stageChunk`) and swaps them in with one
// transaction (`installStaged`); staging left by a crash is removed at open.
// The key layout and record encodings are in keyspace-format.ts. See
// docs/storage.md, "The keyspace".

import assert from 'node:assert/strict';
import { statfsSync, statSync } from 'node:fs';
import type { RootDatabase, Transaction } from 'lmdb';
import type { ConfState } from '../raft/types.js';
import type { BackingScanItem, KeyspaceBacking } from '../sequencer/backing.js';
import { CorruptRecordError, decodeTokens, decodeValue, encodeSnapshot, encodeTokens, encodeValue } from '../sequencer/codec.js';
import { ChunkWriter, ITEM_TOKENS, ITEM_VALUE, readItems, type ItemKind } from '../sequencer/snapshot-items.js';
import type { TokenTable } from '../sequencer/sequence.js';
import type { ChangeSet, StoredValue } from '../sequencer/state-machine.js';
import { KEYSPACE_FILES, openLmdbStore, releasePidLock, type FsyncMode } from './files.js';
import {
  KEYSPACE_FORMAT_VERSION,
  KEYSPACE_GROUP_ID_MAX,
  KIND_GROUP,
  KIND_VALUE,
  KIND_TOKENS,
  KIND_STAGED_VALUE,
  KIND_STAGED_TOKENS,
  KIND_INSTALLED,
  FORMAT_MAGIC,
  FORMAT_KEY,
  GROUP_PREFIX_BYTES,
  readU64,
  seal,
  unseal,
  groupPrefix,
  groupEnd,
  hashPrefix,
  recordKey,
  recordBody,
  splitRecord,
  nodeIdBytes,
  type GroupRecord,
  encodeGroup,
  decodeGroup,
  recordOf,
} from './keyspace-format.js';
import { writeU64 } from './bytes.js';
import { DataDirectoryError, PersistError } from './store.js';

/** The LMDB file holding every group's keyspace, in the data directory. */
export const KEYSPACE_DATA_FILE = KEYSPACE_FILES.dataFile;
/** Holds the pid of the process that has `keyspace.mdb` open (one process per file). */
export const KEYSPACE_LOCK_FILE = KEYSPACE_FILES.lockFile;
/**
 * Records a checkpoint encodes and writes on the event loop's thread before it
 * lets the loop run again (the transaction stays open): at a few microseconds
 * a record, a slice holds replies back for some milliseconds.
 */
export const CHECKPOINT_SLICE_WRITES = 2000;
/** Disk bytes a checkpoint may write per changed key at most (an LMDB page), for the free-space check before it starts. */
export const CHECKPOINT_PAGE_BYTES_PER_KEY = 4096;
/** Bytes a new record adds to the tree, estimated high (keys and values are small), for the same check. */
export const CHECKPOINT_RECORD_BYTES_EST = 512;
/** Free disk space kept beyond a checkpoint's worst case before it starts. */
export const CHECKPOINT_DISK_MARGIN_BYTES = 16 * 1024 * 1024;
const MiB = 1024 * 1024;

/** Staged records removed per transaction when discarding staging left by a crash at open. */
const STAGING_DISCARD_BATCH = 10_000;

/** A group's state as of its last durable checkpoint. */
export interface GroupCheckpointState {
  readonly appliedIndex: number;
  readonly appliedTerm: number;
  readonly conf: ConfState;
}

/** One group's part of a checkpoint: the state machine's changes since the previous one and what they bring it to. */
export interface KeyspaceCheckpointItem extends GroupCheckpointState {
  readonly groupId: number;
  /** What to write (StateMachine.beginCheckpoint); `cleared` removes the group's keys first. */
  readonly changes: ChangeSet;
  /** Keys with a value once the changes are written (the state machine's size). */
  readonly keyCount: number;
}

/** A group exported in snapshotState's format, with the checkpoint it is. */
export interface GroupExport extends GroupCheckpointState {
  readonly data: Uint8Array;
}

/** One read of a group's last durable checkpoint (KeyspaceStore.openCheckpoint). */
export interface GroupCheckpointView {
  /** undefined: the group has no checkpoint. */
  readonly state: GroupCheckpointState | undefined;
  /** The checkpoint's data in snapshotState's format, from the same read. */
  exportData(): Uint8Array;
  /** Ends the read (idempotent). */
  close(): void;
}

/** One read of a group's last durable checkpoint, served in chunks (KeyspaceStore.openSnapshotReader). */
export interface GroupSnapshotReader {
  /** undefined: the group has no checkpoint. */
  readonly state: GroupCheckpointState | undefined;
  /**
   * The next records (snapshot-items.ts format), at most `bytesMax` bytes
   * unless one record alone is larger; `last` once nothing follows.
   */
  nextChunk(bytesMax: number): { readonly data: Uint8Array; readonly last: boolean };
  /** Ends the read (idempotent). */
  close(): void;
}

export interface KeyspaceStoreOptions {
  /** 'always': a checkpoint resolves after its fsync. 'never': after its commit only (benchmarks). */
  readonly fsync: FsyncMode;
}

export class KeyspaceStore {
  /** Where the data lives, for logs and INFO. */
  readonly description: string;
  private readonly groups = new Map<number, GroupRecord>();
  private closed = false;
  /** The first failed checkpoint; every later one fails too (the node must stop and restart). */
  private failure: PersistError | null = null;
  /** The write being committed, a checkpoint or an install (close waits for it). */
  private inFlight: Promise<void> | null = null;
  /**
   * Per group, the index of the last snapshot installed by this process: a
   * checkpoint taken before it (a lower applied index, retried after a full
   * disk) must not write stale keys over it, and is skipped for that group.
   */
  private readonly installedAt = new Map<number, number>();
  /** Groups whose state is a snapshot installed from the leader with no checkpoint since (the 0x06 records). */
  private readonly installedSnapshots = new Map<number, { readonly index: number; readonly term: number }>();
  /** The last checkpoint: records written, main-thread milliseconds in total and in its longest slice (encoding plus LMDB writes). */
  lastCheckpoint: { readonly writes: number; readonly blockedMs: number; readonly sliceMsMax: number } = { writes: 0, blockedMs: 0, sliceMsMax: 0 };

  private constructor(
    private readonly dataPath: string,
    private readonly root: RootDatabase<Buffer, Buffer>,
    private readonly lockPath: string,
  ) {
    this.description = `lmdb:${dataPath}`;
  }

  /**
   * A checkpoint that runs out of disk space fails inside LMDB as an I/O
   * error that leaves the environment unusable until it is reopened (measured
   * on a full file system). So a checkpoint starts only when the file system
   * has room for its worst case; otherwise it is refused as retryable (the
   * host refuses writes and tries again) with nothing written.
   */
  private roomFor(items: readonly KeyspaceCheckpointItem[]): PersistError | null {
    let changed = 0;
    for (const item of items) changed += item.changes.values.size + item.changes.tokens.size;
    let fileBytes = 0;
    let freeBytes = 0;
    try {
      fileBytes = statSync(this.dataPath).size;
      const fs = statfsSync(this.dataPath);
      freeBytes = fs.bavail * fs.bsize;
    } catch {
      return null; // no answer: let LMDB try
    }
    // Copy-on-write: each changed record dirties at most one leaf page, and a
    // transaction rewrites at most the pages the tree holds plus the new records.
    const neededBytes = Math.min(changed * CHECKPOINT_PAGE_BYTES_PER_KEY, fileBytes + changed * CHECKPOINT_RECORD_BYTES_EST) + CHECKPOINT_DISK_MARGIN_BYTES;
    if (freeBytes >= neededBytes) return null;
    return new PersistError(
      `no space left on device for a checkpoint of ${this.dataPath}: ${Math.floor(freeBytes / MiB)} MiB free, up to ${Math.ceil(neededBytes / MiB)} MiB needed; not written`,
      'no',
      true,
    );
  }

  /**
   * Opens (or creates) `keyspace.mdb` in `dataDir` and reads every group's
   * record. Refuses, with a DataDirectoryError saying why, a file another live
   * process holds, a file that is not LMDB, an environment without the
   * keyspace format marker or with another version, and a damaged group record.
   * Key records are checked when read.
   */
  static open(dataDir: string, options: KeyspaceStoreOptions): KeyspaceStore {
    return openLmdbStore(dataDir, KEYSPACE_FILES, 'the keyspace data file', options.fsync, (root, dataPath, lockPath) => {
      const store = new KeyspaceStore(dataPath, root, lockPath);
      store.recover(dataPath);
      return store;
    });
  }

  private recover(dataPath: string): void {
    const marker = this.root.getBinary(FORMAT_KEY);
    if (marker === undefined) {
      const anyKey = this.root.getKeys({ limit: 1 })[Symbol.iterator]().next();
      if (anyKey.done !== true) {
        throw new DataDirectoryError(`${dataPath} is not an ordo keyspace file (no format marker); refusing to use it`);
      }
      const v = Buffer.allocUnsafe(FORMAT_MAGIC.length + 4);
      FORMAT_MAGIC.copy(v, 0);
      v.writeUInt32BE(KEYSPACE_FORMAT_VERSION, FORMAT_MAGIC.length);
      this.root.putSync(FORMAT_KEY, v);
      return;
    }
    if (marker.length !== FORMAT_MAGIC.length + 4 || !marker.subarray(0, FORMAT_MAGIC.length).equals(FORMAT_MAGIC)) {
      throw new DataDirectoryError(`${dataPath} is not an ordo keyspace file (foreign format marker); refusing to use it`);
    }
    const version = marker.readUInt32BE(FORMAT_MAGIC.length);
    if (version !== KEYSPACE_FORMAT_VERSION) {
      throw new DataDirectoryError(`${dataPath} has keyspace format ${version}, this ordo reads format ${KEYSPACE_FORMAT_VERSION}; refusing to start`);
    }
    this.discardAllStaging();
    for (const { key, value } of this.root.getRange({ start: Buffer.of(KIND_INSTALLED), end: Buffer.of(KIND_INSTALLED + 1) })) {
      const group = key.length === GROUP_PREFIX_BYTES ? key.readUInt32BE(1) : -1;
      try {
        if (group < 0) throw new CorruptRecordError(`installed-snapshot key of ${key.length} bytes`);
        const body = unseal(key, value);
        if (body.length !== 16) throw new CorruptRecordError(`installed-snapshot record of ${body.length} bytes`);
        this.installedSnapshots.set(group, { index: readU64(body, 0), term: readU64(body, 8) });
      } catch (e) {
        if (!(e instanceof CorruptRecordError)) throw e;
        throw new DataDirectoryError(`${dataPath}: installed-snapshot record of group ${group}: ${e.message}; refusing to start on a corrupt keyspace`);
      }
    }
    for (const { key, value } of this.root.getRange({ start: Buffer.of(KIND_GROUP), end: Buffer.of(KIND_GROUP + 1) })) {
      const group = key.length === GROUP_PREFIX_BYTES ? key.readUInt32BE(1) : -1;
      try {
        if (group < 0) throw new CorruptRecordError(`group key of ${key.length} bytes`);
        this.groups.set(group, decodeGroup(unseal(key, value)));
      } catch (e) {
        if (!(e instanceof CorruptRecordError)) throw e;
        throw new DataDirectoryError(`${dataPath}: record of group ${group}: ${e.message}; refusing to start on a corrupt keyspace`);
      }
    }
  }

  /** Staged records of every group (snapshots being received when the process stopped): removed, never installed. */
  private discardAllStaging(): void {
    const range = { start: Buffer.of(KIND_STAGED_VALUE), end: Buffer.of(KIND_STAGED_TOKENS + 1), limit: STAGING_DISCARD_BATCH };
    let removed = 0;
    for (;;) {
      const keys = [...this.root.getKeys(range)];
      if (keys.length === 0) break;
      this.root.transactionSync(() => {
        for (const key of keys) this.root.removeSync(key);
      });
      removed += keys.length;
    }
    if (removed > 0) process.emitWarning(`ordo: ${this.description}: removed ${removed} records of a snapshot transfer cut short`);
  }

  /** The group's last durable checkpoint, or undefined when it has none. */
  groupState(groupId: number): GroupCheckpointState | undefined {
    const g = this.groups.get(groupId);
    return g === undefined ? undefined : { appliedIndex: g.appliedIndex, appliedTerm: g.appliedTerm, conf: g.conf };
  }

  /**
   * Whether the group's last durable state is a snapshot installed from its
   * leader (installStaged) with no checkpoint since: then, should the log not
   * hold it (a crash before the log recorded it), the log may adopt it.
   */
  installedSnapshot(groupId: number): { readonly index: number; readonly term: number } | undefined {
    return this.installedSnapshots.get(groupId);
  }

  /** Ids of the groups with a checkpoint, ascending. */
  groupIds(): number[] {
    return [...this.groups.keys()].sort((a, b) => a - b);
  }

  /** The group's keys as of its last durable checkpoint, read in place (for a StateMachine). */
  backing(groupId: number): KeyspaceBacking {
    assertGroupId(groupId);
    return new LmdbGroupBacking(this, groupId);
  }

  /** @internal Keys of the group as last committed. */
  keyCount(groupId: number): number {
    return this.groups.get(groupId)?.keyCount ?? 0;
  }

  /** @internal */
  readRecord(kind: number, groupId: number, key: string): Buffer | undefined {
    assert.ok(!this.closed, 'keyspace store is closed');
    const k = recordKey(kind, groupId, key);
    const stored = this.root.getBinaryFast(k);
    if (stored === undefined) return undefined;
    const entry = this.checked(k, stored);
    if (entry.key !== key) return undefined; // another key with the same SHA-256 prefix form: impossible in practice
    return entry.record;
  }

  /** @internal The records of `kind` of a group from `fromHash` on, in key order, read lazily. */
  *readRange(
    kind: number,
    groupId: number,
    fromHash: number,
    transaction?: Transaction,
  ): Generator<{ hash: number; key: string; record: Buffer }, undefined, undefined> {
    assert.ok(!this.closed, 'keyspace store is closed');
    const options = { start: hashPrefix(kind, groupId, fromHash), end: groupEnd(kind, groupId) };
    const range = transaction === undefined ? this.root.getRange(options) : this.root.getRange({ ...options, transaction });
    for (const { key, value } of range) yield this.checked(key, value);
    return undefined;
  }

  private checked(key: Buffer, stored: Buffer): { hash: number; key: string; record: Buffer } {
    try {
      return splitRecord(key, stored);
    } catch (e) {
      if (e instanceof CorruptRecordError) {
        throw new CorruptRecordError(`${this.description}: record ${key.toString('hex').slice(0, 40)}: ${e.message}`);
      }
      throw e;
    }
  }

  /**
   * Writes every item (each group's changes, applied index, term, membership
   * and key count) in ONE LMDB transaction, committed (with its fsync under
   * fsync 'always') on lmdb-js's write thread; resolves once the commit is
   * done, with the groups' states updated. The records are encoded and written
   * into the open transaction on this thread in slices of
   * CHECKPOINT_SLICE_WRITES, yielding to the event loop between slices, so a
   * big checkpoint does not hold replies back for long. Reads made meanwhile
   * may see part of it: a state machine reads from the backing only keys its
   * overlay does not hold, which no checkpoint in flight changes (and
   * exportGroup reads in a transaction of its own). Checkpoints are written one
   * after the other, in call order. Rejects with a PersistError ('no' when the
   * transaction was aborted, 'unknown' when its commit failed); after a
   * failure every later checkpoint fails too: the node must stop (its log still
   * holds everything applied since the last good checkpoint).
   */
  checkpoint(items: readonly KeyspaceCheckpointItem[]): Promise<void> {
    if (this.closed) return Promise.reject(new PersistError('keyspace store is closed; checkpoint not written', 'no'));
    for (const item of items) this.check(item);
    return this.serialized(() => this.write(items));
  }

  /** Runs `run` after every write asked for before it (checkpoints and installs go to LMDB in call order). */
  private serialized(run: () => Promise<void>): Promise<void> {
    const previous = this.inFlight;
    const done = previous === null ? run() : previous.then(run, run);
    this.inFlight = done;
    const settled = (): void => {
      if (this.inFlight === done) this.inFlight = null;
    };
    done.then(settled, settled);
    return done;
  }

  private check(item: KeyspaceCheckpointItem): void {
    assertGroupId(item.groupId);
    assert.ok(Number.isSafeInteger(item.appliedIndex) && item.appliedIndex >= 0, 'applied index must be a safe integer');
    assert.ok(Number.isSafeInteger(item.appliedTerm) && item.appliedTerm >= 0, 'applied term must be a safe integer');
    assert.ok(Number.isSafeInteger(item.keyCount) && item.keyCount >= 0, 'key count must be a safe integer');
    for (const id of item.conf.voters) nodeIdBytes(id);
    for (const id of item.conf.learners) nodeIdBytes(id);
  }

  private write(allItems: readonly KeyspaceCheckpointItem[]): Promise<void> {
    if (this.failure !== null) {
      return Promise.reject(new PersistError(`checkpoint not written: an earlier one failed (${this.failure.message})`, 'no'));
    }
    const items = allItems.filter((item) => item.appliedIndex >= (this.installedAt.get(item.groupId) ?? 0));
    const noRoom = this.roomFor(items);
    if (noRoom !== null) return Promise.reject(noRoom);
    let writing = true;
    let blockedMs = 0;
    let sliceMsMax = 0;
    let sliceStartMs = performance.now();
    let writes = 0;
    /** Whether a slice is full: then the caller lets the event loop run (the transaction stays open). */
    const sliceFull = (): boolean => ++writes % CHECKPOINT_SLICE_WRITES === 0;
    const yieldLoop = async (): Promise<void> => {
      const ms = performance.now() - sliceStartMs;
      blockedMs += ms;
      sliceMsMax = Math.max(sliceMsMax, ms);
      await new Promise<void>((resolve) => setImmediate(resolve));
      sliceStartMs = performance.now();
    };
    const writeAll = async (): Promise<void> => {
      sliceStartMs = performance.now();
      for (const item of items) {
        const g = item.groupId;
        if (item.changes.cleared) {
          for (const kind of [KIND_VALUE, KIND_TOKENS]) {
            for (;;) {
              const keys = [...this.root.getKeys({ start: groupPrefix(kind, g), end: groupEnd(kind, g), limit: CHECKPOINT_SLICE_WRITES })];
              if (keys.length === 0) break;
              for (const key of keys) this.root.removeSync(key);
              writes += keys.length;
              await yieldLoop();
            }
          }
        }
        for (const [key, value] of item.changes.values) {
          const k = recordKey(KIND_VALUE, g, key);
          if (value === null) this.root.removeSync(k);
          else this.root.putSync(k, seal(k, recordBody(key, encodeValue(value))));
          if (sliceFull()) await yieldLoop();
        }
        for (const [key, table] of item.changes.tokens) {
          const k = recordKey(KIND_TOKENS, g, key);
          if (table === null) this.root.removeSync(k);
          else this.root.putSync(k, seal(k, recordBody(key, encodeTokens(table))));
          if (sliceFull()) await yieldLoop();
        }
        const groupKey = groupPrefix(KIND_GROUP, g);
        this.root.putSync(groupKey, seal(groupKey, encodeGroup(recordOf(item))));
        if (this.installedSnapshots.has(g)) this.root.removeSync(groupPrefix(KIND_INSTALLED, g));
      }
      writing = false;
      const ms = performance.now() - sliceStartMs;
      blockedMs += ms;
      sliceMsMax = Math.max(sliceMsMax, ms);
    };
    return this.root.transaction(writeAll).then(
      () => {
        for (const item of items) {
          this.groups.set(item.groupId, recordOf(item));
          this.installedSnapshots.delete(item.groupId);
        }
        this.lastCheckpoint = { writes, blockedMs, sliceMsMax };
      },
      (e: unknown) => {
        // lmdb-js hangs a second rejected promise on a failed commit; it is this one's cause, not news.
        const commitError = (e as { commitError?: unknown }).commitError;
        if (commitError instanceof Promise) commitError.catch(() => undefined);
        const failure = writing
          ? new PersistError(`keyspace write failed, not applied: ${(e as Error).message}`, 'no')
          : new PersistError(`keyspace commit failed, outcome unknown: ${(e as Error).message}`, 'unknown');
        this.failure ??= failure;
        throw failure;
      },
    );
  }

  /**
   * A consistent view of the group's last durable checkpoint (one LMDB read
   * transaction, open until `close`): its state, and its data in
   * snapshotState's format (restoreState reads it) if asked. Building the
   * data holds the whole group in memory (O(group size)).
   */
  openCheckpoint(groupId: number): GroupCheckpointView {
    assert.ok(!this.closed, 'keyspace store is closed');
    const txn = this.root.useReadTransaction();
    let open = true;
    try {
      // getRange honours the read transaction even while a checkpoint's write transaction is open (get may not).
      let record: GroupRecord | null = null;
      for (const { key, value } of this.root.getRange({ start: groupPrefix(KIND_GROUP, groupId), end: groupEnd(KIND_GROUP, groupId), transaction: txn })) {
        record = decodeGroup(unseal(key, value));
      }
      const state = record === null ? undefined : { appliedIndex: record.appliedIndex, appliedTerm: record.appliedTerm, conf: record.conf };
      return {
        state,
        exportData: (): Uint8Array => {
          assert.ok(open, 'openCheckpoint: the view is closed');
          const entries = (kind: number): Generator<[string, Buffer], undefined, undefined> => mapRecords(this.readRange(kind, groupId, 0, txn));
          return encodeSnapshot(entries(KIND_VALUE), entries(KIND_TOKENS));
        },
        close: (): void => {
          if (!open) return;
          open = false;
          txn.done();
        },
      };
    } catch (e) {
      txn.done();
      throw e;
    }
  }

  /** The group as of its last durable checkpoint, in snapshotState's format, with the checkpoint it is (index 0: none). */
  exportGroup(groupId: number): GroupExport {
    const view = this.openCheckpoint(groupId);
    try {
      const state = view.state ?? { appliedIndex: 0, appliedTerm: 0, conf: { voters: [], learners: [] } };
      return { ...state, data: view.exportData() };
    } finally {
      view.close();
    }
  }

  /**
   * A read of the group's last durable checkpoint (one LMDB read transaction,
   * open until `close`) served in chunks: its state, then its value records
   * and token tables, in key order, each chunk read where the previous one
   * stopped. Holds at most one chunk (and the record that did not fit in it)
   * in memory. While it is open LMDB cannot reuse the pages it reads, so the
   * file may grow with checkpoints written meanwhile.
   */
  openSnapshotReader(groupId: number): GroupSnapshotReader {
    assert.ok(!this.closed, 'keyspace store is closed');
    assertGroupId(groupId);
    const txn = this.root.useReadTransaction();
    let open = true;
    let state: GroupCheckpointState | undefined;
    try {
      for (const { key, value } of this.root.getRange({ start: groupPrefix(KIND_GROUP, groupId), end: groupEnd(KIND_GROUP, groupId), transaction: txn })) {
        const record = decodeGroup(unseal(key, value));
        state = { appliedIndex: record.appliedIndex, appliedTerm: record.appliedTerm, conf: record.conf };
      }
    } catch (e) {
      txn.done();
      throw e;
    }
    const sections: { readonly kind: number; readonly item: ItemKind }[] = [
      { kind: KIND_VALUE, item: ITEM_VALUE },
      { kind: KIND_TOKENS, item: ITEM_TOKENS },
    ];
    let section = 0;
    /** Where the next read starts (inclusive): the group's range, then just past the last record taken. */
    let from: Buffer | null = null;
    let held: { readonly key: string; readonly record: Buffer; readonly next: Buffer } | null = null;
    const nextChunk = (bytesMax: number): { data: Uint8Array; last: boolean } => {
      assert.ok(open, 'openSnapshotReader: the reader is closed');
      assert.ok(Number.isSafeInteger(bytesMax) && bytesMax > 0);
      const out = new ChunkWriter(bytesMax);
      for (; section < sections.length; section++, from = null) {
        const { kind, item } = sections[section] as { readonly kind: number; readonly item: ItemKind };
        if (held !== null) {
          out.push(item, held.key, held.record);
          from = held.next;
          held = null;
        }
        const range = { start: from ?? groupPrefix(kind, groupId), end: groupEnd(kind, groupId), transaction: txn };
        for (const { key, value } of this.root.getRange(range)) {
          const { key: name, record } = this.checked(key, value);
          if (!out.fits(name, record)) {
            // The first key after this one is the key with a zero byte appended.
            held = { key: name, record: Buffer.from(record), next: Buffer.concat([key, ZERO_BYTE]) };
            return { data: out.take(), last: false };
          }
          out.push(item, name, record);
        }
      }
      return { data: out.take(), last: true };
    };
    return {
      state,
      nextChunk,
      close: (): void => {
        if (!open) return;
        open = false;
        txn.done();
      },
    };
  }

  /**
   * Writes one chunk of a snapshot being received (snapshot-items.ts format)
   * into the group's staging range, which no read looks at, in a transaction
   * of its own. Every record is decoded first (a malformed chunk is refused
   * with a CorruptRecordError and nothing of it is written). Staging is not
   * meant to survive a crash: open() removes whatever is left.
   */
  stageChunk(groupId: number, chunk: Uint8Array): Promise<void> {
    if (this.closed) return Promise.reject(new PersistError('keyspace store is closed; snapshot chunk not staged', 'no'));
    assertGroupId(groupId);
    // Decoded, checked and written in slices of CHECKPOINT_SLICE_WRITES, letting the event loop run between them.
    return this.root
      .transaction(async () => {
        let n = 0;
        for (const item of readItems(chunk)) {
          if (item.kind === ITEM_VALUE) decodeValue(item.record);
          else decodeTokens(item.record);
          const k = recordKey(item.kind === ITEM_VALUE ? KIND_STAGED_VALUE : KIND_STAGED_TOKENS, groupId, item.key);
          this.root.putSync(k, seal(k, recordBody(item.key, item.record)));
          if (++n % CHECKPOINT_SLICE_WRITES === 0) await new Promise<void>((resolve) => setImmediate(resolve));
        }
      })
      .then(() => undefined);
  }

  /** Removes the group's staged records (a transfer abandoned), in slices of CHECKPOINT_SLICE_WRITES. */
  discardStaging(groupId: number): Promise<void> {
    if (this.closed) return Promise.resolve();
    assertGroupId(groupId);
    return this.root
      .transaction(async () => {
        for (const kind of [KIND_STAGED_VALUE, KIND_STAGED_TOKENS]) {
          for (;;) {
            const keys = [...this.root.getKeys({ start: groupPrefix(kind, groupId), end: groupEnd(kind, groupId), limit: CHECKPOINT_SLICE_WRITES })];
            if (keys.length === 0) break;
            for (const key of keys) this.root.removeSync(key);
            await new Promise<void>((resolve) => setImmediate(resolve));
          }
        }
      })
      .then(() => undefined);
  }

  /**
   * Replaces the group's keyspace with its staged records and sets its
   * state (applied index, term, membership, key count) in ONE transaction,
   * after every checkpoint asked for before it: a crash leaves the old
   * keyspace whole (and the staging, removed at open) or the new one whole.
   * Records are moved in slices of CHECKPOINT_SLICE_WRITES, letting the
   * event loop run between them (reads made meanwhile may see part of it:
   * the group's state machine reads nothing from here until it is done).
   * Fails like a checkpoint (PersistError; every later write fails after it).
   */
  installStaged(groupId: number, state: GroupCheckpointState): Promise<void> {
    if (this.closed) return Promise.reject(new PersistError('keyspace store is closed; snapshot not installed', 'no'));
    assertGroupId(groupId);
    for (const id of [...state.conf.voters, ...state.conf.learners]) nodeIdBytes(id);
    return this.serialized(() => this.install(groupId, state));
  }

  private install(groupId: number, state: GroupCheckpointState): Promise<void> {
    if (this.failure !== null) {
      return Promise.reject(new PersistError(`snapshot not installed: an earlier write failed (${this.failure.message})`, 'no'));
    }
    let writing = true;
    let keyCount = 0;
    const yieldLoop = (): Promise<void> => new Promise<void>((resolve) => setImmediate(resolve));
    const moveAll = async (): Promise<void> => {
      for (const kind of [KIND_VALUE, KIND_TOKENS]) {
        for (;;) {
          const keys = [...this.root.getKeys({ start: groupPrefix(kind, groupId), end: groupEnd(kind, groupId), limit: CHECKPOINT_SLICE_WRITES })];
          if (keys.length === 0) break;
          for (const key of keys) this.root.removeSync(key);
          await yieldLoop();
        }
      }
      for (const [staged, live] of [
        [KIND_STAGED_VALUE, KIND_VALUE],
        [KIND_STAGED_TOKENS, KIND_TOKENS],
      ] as const) {
        for (;;) {
          const batch: [Buffer, Buffer][] = [];
          for (const { key, value } of this.root.getRange({
            start: groupPrefix(staged, groupId),
            end: groupEnd(staged, groupId),
            limit: CHECKPOINT_SLICE_WRITES,
          })) {
            batch.push([Buffer.from(key), Buffer.from(value)]);
          }
          if (batch.length === 0) break;
          for (const [key, value] of batch) {
            const body = unseal(key, value);
            const moved = Buffer.from(key);
            moved[0] = live;
            this.root.putSync(moved, seal(moved, body));
            this.root.removeSync(key);
          }
          if (live === KIND_VALUE) keyCount += batch.length;
          await yieldLoop();
        }
      }
      const groupKey = groupPrefix(KIND_GROUP, groupId);
      this.root.putSync(groupKey, seal(groupKey, encodeGroup({ ...state, keyCount })));
      const installedKey = groupPrefix(KIND_INSTALLED, groupId);
      const installed = Buffer.allocUnsafe(16);
      writeU64(installed, state.appliedIndex, 0);
      writeU64(installed, state.appliedTerm, 8);
      this.root.putSync(installedKey, seal(installedKey, installed));
      writing = false;
    };
    return this.root.transaction(moveAll).then(
      () => {
        this.groups.set(groupId, { appliedIndex: state.appliedIndex, appliedTerm: state.appliedTerm, conf: state.conf, keyCount });
        this.installedAt.set(groupId, state.appliedIndex);
        this.installedSnapshots.set(groupId, { index: state.appliedIndex, term: state.appliedTerm });
      },
      (e: unknown) => {
        const commitError = (e as { commitError?: unknown }).commitError;
        if (commitError instanceof Promise) commitError.catch(() => undefined);
        const failure = writing
          ? new PersistError(`snapshot install failed, not applied: ${(e as Error).message}`, 'no')
          : new PersistError(`snapshot install commit failed, outcome unknown: ${(e as Error).message}`, 'unknown');
        this.failure ??= failure;
        throw failure;
      },
    );
  }

  /** Waits for the checkpoint in flight, then closes the environment. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      while (this.inFlight !== null) await this.inFlight.catch(() => undefined);
      await this.root.close();
    } finally {
      releasePidLock(this.lockPath);
    }
  }
}

const ZERO_BYTE = Buffer.of(0);

function* mapRecords(records: Iterable<{ key: string; record: Buffer }>): Generator<[string, Buffer], undefined, undefined> {
  for (const { key, record } of records) yield [key, record];
  return undefined;
}

function assertGroupId(groupId: number): void {
  assert.ok(Number.isInteger(groupId) && groupId >= 0 && groupId <= KEYSPACE_GROUP_ID_MAX, `group id ${groupId} is not a u32`);
}

/** One group's records as a StateMachine's backing. */
class LmdbGroupBacking implements KeyspaceBacking {
  constructor(
    private readonly store: KeyspaceStore,
    private readonly groupId: number,
  ) {}

  get count(): number {
    return this.store.keyCount(this.groupId);
  }

  get(key: string): StoredValue | undefined {
    const record = this.store.readRecord(KIND_VALUE, this.groupId, key);
    return record === undefined ? undefined : decodeValue(record);
  }

  getTokens(key: string): TokenTable | undefined {
    const record = this.store.readRecord(KIND_TOKENS, this.groupId, key);
    return record === undefined ? undefined : decodeTokens(record);
  }

  scanFrom(fromHash: number): Iterator<BackingScanItem> {
    return scanItems(this.store.readRange(KIND_VALUE, this.groupId, fromHash));
  }

  tokenKeys(): Iterator<BackingScanItem> {
    return scanItems(this.store.readRange(KIND_TOKENS, this.groupId, 0));
  }
}

function* scanItems(records: Iterable<{ hash: number; key: string }>): Generator<BackingScanItem, undefined, undefined> {
  for (const { hash, key } of records) yield { hash, key };
  return undefined;
}
