// Durable Raft storage for every group on one node, in one LMDB environment
// (`raft.mdb` in the data directory; the single-node keyspace lives apart in
// `ordo.mdb`). See docs/storage.md for the layout and the guarantees.
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
import { crc32 } from 'node:zlib';
import type { RootDatabase } from 'lmdb';
import { MemoryStorage } from '../raft/storage.js';
import { EntryType, assertIndex, type ConfState, type Entry, type HardState, type NodeId, type Snapshot } from '../raft/types.js';
import { openLmdbStore, RAFT_FILES, releasePidLock, type FsyncMode } from './files.js';
import { DataDirectoryError, PersistError } from './store.js';
import { OrdoError } from '../ordo-error.js';

/** The LMDB file holding every Raft group of the node, in the data directory. */
export const RAFT_DATA_FILE = RAFT_FILES.dataFile;
/** Holds the pid of the process that has `raft.mdb` open (one process per file). */
export const RAFT_LOCK_FILE = RAFT_FILES.lockFile;
/** Version of the key layout and record encodings below; another version is refused. */
export const RAFT_FORMAT_VERSION = 1;
/** Default largest value holding snapshot data; bigger snapshots are split into chunks of this size. */
export const SNAPSHOT_CHUNK_BYTES_DEFAULT = 1024 * 1024;
/** Longest node metadata key, in UTF-8 bytes (LMDB keys are limited to 511 bytes). */
export const META_KEY_BYTES_MAX = 256;
/** Longest node id stored in a hard state or a membership, in UTF-8 bytes. */
export const NODE_ID_BYTES_MAX = 1024;
/** Group ids are stored as u32. */
export const GROUP_ID_MAX = 0xffff_ffff;
/** Largest snapshotChunkBytes accepted. */
export const SNAPSHOT_CHUNK_BYTES_MAX = 256 * 1024 * 1024;
/** Size of the buffers that keys and entry records of one turn are carved from. */
const SLAB_BYTES = 256 * 1024;

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
// Key layout. Every key starts with a kind byte; numbers are big-endian so
// that LMDB's byte order is numeric order and a group's records of one kind
// are one contiguous range.
//
//   [0x00]                          format marker: "ordo-raft" u32 version
//   [0x00][0x01]                    number of groups (u32)
//   [0x01][utf8 name]               node metadata value (opaque bytes)
//   [0x02][u32 group]               group state: hard state, log start, last index
//   [0x03][u32 group]               snapshot meta: index, term, size, chunks, membership
//   [0x04][u32 group][u32 chunk]    snapshot data, chunk by chunk
//   [0x05][u32 group][u64 index]    log entry: u8 type, u64 term, data
//
// Every value but the format marker ends with a u32 CRC-32 of the key and the
// rest of the value, so a damaged or misplaced record is refused on open
// instead of being read back as valid state.
// ---------------------------------------------------------------------------

const KIND_FORMAT = 0x00;
const KIND_META = 0x01;
const KIND_GROUP = 0x02;
const KIND_SNAPSHOT = 0x03;
const KIND_CHUNK = 0x04;
const KIND_ENTRY = 0x05;

const FORMAT_MAGIC = Buffer.from('ordo-raft', 'latin1');
const FORMAT_KEY = Buffer.from([KIND_FORMAT]);
const GROUP_COUNT_KEY = Buffer.from([KIND_FORMAT, 0x01]);
const GROUP_KEY_BYTES = 5;
const CHUNK_KEY_BYTES = 9;
const ENTRY_KEY_BYTES = 13;
/** u8 type + u64 term before the entry data. */
const ENTRY_HEADER_BYTES = 9;
/** The CRC-32 that ends every record. */
const CRC_BYTES = 4;
/** term, commit, log start index, log start term, last index (u64 each) and a vote flag. */
const GROUP_STATE_FIXED_BYTES = 41;
const GROUP_STATE_VOTE_FLAG_AT = 40;
const TWO_POW_32 = 0x1_0000_0000;
/** Largest high word of a u64 that still makes a safe integer. */
const SAFE_HIGH_WORD_MAX = 0x1f_ffff;

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true });
const EMPTY = new Uint8Array(0);

function writeU64(buf: Buffer, n: number, at: number): void {
  buf.writeUInt32BE(Math.floor(n / TWO_POW_32), at);
  buf.writeUInt32BE(n >>> 0, at + 4);
}

/** Reads a u64 that must be a safe integer; `undefined` otherwise (corrupt). */
function readU64(buf: Uint8Array, at: number): number | undefined {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const hi = view.getUint32(at);
  if (hi > SAFE_HIGH_WORD_MAX) return undefined;
  return hi * TWO_POW_32 + view.getUint32(at + 4);
}

/** Writes the CRC of `key` and the value into the last CRC_BYTES of `value` (reserved by the caller). */
function seal(key: Buffer, value: Buffer): Buffer {
  const end = value.length - CRC_BYTES;
  value.writeUInt32BE(crc32(value.subarray(0, end), crc32(key)), end);
  return value;
}

/** The value without its CRC, after checking the CRC. */
function unseal(key: Buffer, value: Buffer): Buffer {
  corruptIf(value.length < CRC_BYTES, `record of ${value.length} bytes`);
  const end = value.length - CRC_BYTES;
  const body = value.subarray(0, end);
  corruptIf(value.readUInt32BE(end) !== crc32(body, crc32(key)), 'checksum mismatch');
  return body;
}

/** Thrown while decoding a record; turned into a DataDirectoryError naming the record. */
class CorruptError extends OrdoError {
  override readonly code = 'ORDO_ERR_RAFT_LMDB_CORRUPT';
}

function corruptIf(cond: boolean, why: string): void {
  if (cond) throw new CorruptError(why);
}

/** Allocates many small buffers out of few big ones (keys and entry records of one turn). */
class Slab {
  private buf = Buffer.allocUnsafeSlow(SLAB_BYTES);
  private used = 0;

  take(n: number): Buffer {
    if (n > SLAB_BYTES / 4) return Buffer.allocUnsafeSlow(n);
    if (this.used + n > this.buf.length) {
      // Earlier pieces of this turn stay referenced by its batch.
      this.buf = Buffer.allocUnsafeSlow(SLAB_BYTES);
      this.used = 0;
    }
    const piece = this.buf.subarray(this.used, this.used + n);
    this.used += n;
    return piece;
  }

  /** Reuses the buffer from its start: the turn that referenced the pieces taken so far is committed. */
  rewind(): void {
    this.used = 0;
  }
}

/** The puts and removes of one turn, collected when commitTurn is called, then written in one transaction. */
class WriteBatch {
  readonly keys: Buffer[] = [];
  readonly values: (Buffer | null)[] = [];
  constructor(readonly slab: Slab) {}

  put(key: Buffer, value: Uint8Array): void {
    this.keys.push(key);
    this.values.push(Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength));
  }

  remove(key: Buffer): void {
    this.keys.push(key);
    this.values.push(null);
  }

  get size(): number {
    return this.keys.length;
  }

  groupKey(kind: number, group: number): Buffer {
    const k = this.slab.take(GROUP_KEY_BYTES);
    k[0] = kind;
    k.writeUInt32BE(group, 1);
    return k;
  }

  chunkKey(group: number, chunk: number): Buffer {
    const k = this.slab.take(CHUNK_KEY_BYTES);
    k[0] = KIND_CHUNK;
    k.writeUInt32BE(group, 1);
    k.writeUInt32BE(chunk, 5);
    return k;
  }

  entryKey(group: number, index: number): Buffer {
    const k = this.slab.take(ENTRY_KEY_BYTES);
    k[0] = KIND_ENTRY;
    k.writeUInt32BE(group, 1);
    writeU64(k, index, 5);
    return k;
  }
}

// ---------------------------------------------------------------------------
// Record encodings
// ---------------------------------------------------------------------------

function encodeFormat(): Buffer {
  const b = Buffer.alloc(FORMAT_MAGIC.length + 4);
  FORMAT_MAGIC.copy(b, 0);
  b.writeUInt32BE(RAFT_FORMAT_VERSION, FORMAT_MAGIC.length);
  return b;
}

function nodeIdBytes(id: NodeId): Uint8Array {
  const bytes = utf8.encode(id);
  assert.ok(bytes.length <= NODE_ID_BYTES_MAX, `node id longer than ${NODE_ID_BYTES_MAX} bytes`);
  return bytes;
}

function encodeGroupState(hs: HardState, logStart: number, logStartTerm: number, lastIndex: number): Buffer {
  const vote = hs.vote === null ? EMPTY : nodeIdBytes(hs.vote);
  const b = Buffer.allocUnsafe(GROUP_STATE_FIXED_BYTES + vote.length + CRC_BYTES);
  writeU64(b, hs.term, 0);
  writeU64(b, hs.commit, 8);
  writeU64(b, logStart, 16);
  writeU64(b, logStartTerm, 24);
  writeU64(b, lastIndex, 32);
  b[GROUP_STATE_VOTE_FLAG_AT] = hs.vote === null ? 0 : 1;
  b.set(vote, GROUP_STATE_FIXED_BYTES);
  return b;
}

interface GroupStateRecord {
  hardState: HardState;
  logStart: number;
  logStartTerm: number;
  lastIndex: number;
}

function decodeGroupState(v: Uint8Array): GroupStateRecord {
  corruptIf(v.length < GROUP_STATE_FIXED_BYTES, `group state of ${v.length} bytes`);
  const term = readU64(v, 0);
  const commit = readU64(v, 8);
  const logStart = readU64(v, 16);
  const logStartTerm = readU64(v, 24);
  const lastIndex = readU64(v, 32);
  if (term === undefined || commit === undefined || logStart === undefined || logStartTerm === undefined || lastIndex === undefined) {
    throw new CorruptError('group state number out of range');
  }
  corruptIf(lastIndex < logStart, `last index ${lastIndex} below log start ${logStart}`);
  const flag = v[GROUP_STATE_VOTE_FLAG_AT];
  corruptIf(flag !== 0 && flag !== 1, `group state vote flag ${String(flag)}`);
  corruptIf(flag === 0 && v.length !== GROUP_STATE_FIXED_BYTES, 'group state has trailing bytes');
  const vote = flag === 0 ? null : decodeUtf8(v.subarray(GROUP_STATE_FIXED_BYTES));
  corruptIf(logStartTerm > 0 && logStart === 0, 'log start term without a log start');
  return { hardState: { term, vote, commit }, logStart, logStartTerm, lastIndex };
}

function decodeUtf8(bytes: Uint8Array): string {
  try {
    return utf8Strict.decode(bytes);
  } catch {
    throw new CorruptError('invalid UTF-8 text');
  }
}

interface SnapshotMetaRecord {
  index: number;
  term: number;
  dataBytes: number;
  chunks: number;
  conf: ConfState;
}

function encodeSnapshotMeta(snap: Snapshot, chunks: number): Buffer {
  const voters = snap.meta.conf.voters.map(nodeIdBytes);
  const learners = snap.meta.conf.learners.map(nodeIdBytes);
  let size = 8 + 8 + 8 + 4 + 4 + 4;
  for (const id of voters) size += 2 + id.length;
  for (const id of learners) size += 2 + id.length;
  const b = Buffer.allocUnsafe(size + CRC_BYTES);
  writeU64(b, snap.meta.index, 0);
  writeU64(b, snap.meta.term, 8);
  writeU64(b, snap.data.length, 16);
  b.writeUInt32BE(chunks, 24);
  let at = 28;
  for (const list of [voters, learners]) {
    b.writeUInt32BE(list.length, at);
    at += 4;
    for (const id of list) {
      b.writeUInt16BE(id.length, at);
      b.set(id, at + 2);
      at += 2 + id.length;
    }
  }
  assert.equal(at, size);
  return b;
}

function decodeSnapshotMeta(v: Uint8Array): SnapshotMetaRecord {
  corruptIf(v.length < 36, `snapshot meta of ${v.length} bytes`);
  const view = new DataView(v.buffer, v.byteOffset, v.byteLength);
  const index = readU64(v, 0);
  const term = readU64(v, 8);
  const dataBytes = readU64(v, 16);
  if (index === undefined || term === undefined || dataBytes === undefined) throw new CorruptError('snapshot meta number out of range');
  const chunks = view.getUint32(24);
  let at = 28;
  const lists: NodeId[][] = [];
  for (let l = 0; l < 2; l++) {
    corruptIf(at + 4 > v.length, 'snapshot membership truncated');
    const count = view.getUint32(at);
    at += 4;
    const ids: NodeId[] = [];
    for (let i = 0; i < count; i++) {
      corruptIf(at + 2 > v.length, 'snapshot membership truncated');
      const len = view.getUint16(at);
      corruptIf(at + 2 + len > v.length, 'snapshot membership truncated');
      ids.push(decodeUtf8(v.subarray(at + 2, at + 2 + len)));
      at += 2 + len;
    }
    lists.push(ids);
  }
  corruptIf(at !== v.length, 'snapshot meta has trailing bytes');
  corruptIf(index === 0 && (term !== 0 || dataBytes !== 0), 'empty snapshot with a term or data');
  return { index, term, dataBytes, chunks, conf: { voters: lists[0] ?? [], learners: lists[1] ?? [] } };
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
    if (entries.length === 0) return;
    const first = (entries[0] as Entry).index;
    const off = this.offset();
    const last = this.lastIndex();
    assert.ok(first <= last + 1, `append gap: first ${first}, last ${last}`);
    const skip = first <= off ? off + 1 - first : 0; // already covered by the log start
    if (skip >= entries.length) return;
    const start = first + skip;
    // Check everything before changing anything. Entries up to the snapshot are committed: never replaced.
    assert.ok(start > this.snap.meta.index, `append at ${start} would replace entries up to the snapshot at ${this.snap.meta.index}`);
    let prevTerm = this.term(start - 1) as number;
    for (let k = skip; k < entries.length; k++) {
      const e = entries[k] as Entry;
      assert.equal(e.index, start + k - skip, 'append: non-contiguous entries');
      assertIndex(e.term, 'entry term');
      assert.ok(e.term >= prevTerm, `append: term ${e.term} at ${e.index} below the preceding term ${prevTerm}`);
      assert.ok(e.type === EntryType.Normal || e.type === EntryType.ConfChange, `append: unknown entry type ${String(e.type)}`);
      prevTerm = e.term;
    }
    super.append(entries);
    if (start < this.dirtyFrom) this.dirtyFrom = start;
    this.stateDirty = true; // the last index is part of the group state
    this.onDirty(this);
  }

  override applySnapshot(snap: Snapshot): void {
    assertIndex(snap.meta.index, 'snapshot index');
    assertIndex(snap.meta.term, 'snapshot term');
    assert.ok(snap.meta.index > 0 || (snap.meta.term === 0 && snap.data.length === 0), 'applySnapshot: empty snapshot with a term or data');
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
    const refuse = (where: string, why: string): DataDirectoryError =>
      new DataDirectoryError(`${dataPath}: ${where}: ${why}; refusing to start on corrupt or foreign Raft data`);
    let sawFormat = false;
    let keys = 0;
    let groupCount: number | null = null;
    const states = new Map<number, GroupStateRecord>();
    const snaps = new Map<number, SnapshotMetaRecord>();
    const chunkLists = new Map<number, Uint8Array[]>();
    const logs = new Map<number, Entry[]>();
    // Keys come in byte order: the marker, the group count, metadata, then
    // each kind of group record, every group's records of one kind in a row.
    for (const { key: k, value } of this.root.getRange({})) {
      keys++;
      const kind = k[0];
      if (!sawFormat) {
        if (!k.equals(FORMAT_KEY)) {
          throw new DataDirectoryError(`${dataPath} is not an ordo Raft data file (no format marker); refusing to use it`);
        }
        if (value.length !== FORMAT_MAGIC.length + 4 || !value.subarray(0, FORMAT_MAGIC.length).equals(FORMAT_MAGIC)) {
          throw new DataDirectoryError(`${dataPath} is not an ordo Raft data file (foreign format marker); refusing to use it`);
        }
        const version = value.readUInt32BE(FORMAT_MAGIC.length);
        if (version !== RAFT_FORMAT_VERSION) {
          throw new DataDirectoryError(`${dataPath} has Raft data format ${version}, this ordo reads format ${RAFT_FORMAT_VERSION}; refusing to start`);
        }
        sawFormat = true;
        continue;
      }
      const group = k.length >= GROUP_KEY_BYTES ? k.readUInt32BE(1) : -1;
      let label = `record with key ${k.toString('hex').slice(0, 40)}`;
      try {
        switch (kind) {
          case KIND_FORMAT: {
            corruptIf(!k.equals(GROUP_COUNT_KEY), 'unknown node record');
            label = 'group count';
            const body = unseal(k, value);
            corruptIf(body.length !== 4, `group count of ${body.length} bytes`);
            groupCount = body.readUInt32BE(0);
            break;
          }
          case KIND_META: {
            label = 'metadata record';
            corruptIf(k.length < 2 || k.length > 1 + META_KEY_BYTES_MAX, `key of ${k.length} bytes`);
            const name = decodeUtf8(k.subarray(1));
            label = `metadata ${JSON.stringify(name)}`;
            this.meta.set(name, new Uint8Array(unseal(k, value)));
            break;
          }
          case KIND_GROUP:
            corruptIf(k.length !== GROUP_KEY_BYTES, `group key of ${k.length} bytes`);
            label = `state of group ${group}`;
            states.set(group, decodeGroupState(unseal(k, value)));
            break;
          case KIND_SNAPSHOT:
            corruptIf(k.length !== GROUP_KEY_BYTES, `snapshot key of ${k.length} bytes`);
            label = `snapshot of group ${group}`;
            corruptIf(!states.has(group), 'no state record for this group');
            snaps.set(group, decodeSnapshotMeta(unseal(k, value)));
            break;
          case KIND_CHUNK: {
            corruptIf(k.length !== CHUNK_KEY_BYTES, `chunk key of ${k.length} bytes`);
            const n = k.readUInt32BE(5);
            label = `snapshot chunk ${n} of group ${group}`;
            const meta = snaps.get(group);
            if (meta === undefined) throw new CorruptError('no snapshot record for this group');
            let list = chunkLists.get(group);
            if (list === undefined) chunkLists.set(group, (list = []));
            corruptIf(n !== list.length, `chunk ${list.length} was expected`);
            corruptIf(n >= meta.chunks, `the snapshot has ${meta.chunks} chunks`);
            list.push(new Uint8Array(unseal(k, value)));
            break;
          }
          case KIND_ENTRY: {
            corruptIf(k.length !== ENTRY_KEY_BYTES, `entry key of ${k.length} bytes`);
            const index = readU64(k, 5);
            label = `entry ${String(index)} of group ${group}`;
            const state = states.get(group);
            if (state === undefined) throw new CorruptError('no state record for this group');
            let log = logs.get(group);
            if (log === undefined) {
              log = [{ term: state.logStartTerm, index: state.logStart, type: EntryType.Normal, data: EMPTY }];
              logs.set(group, log);
            }
            const prev = log[log.length - 1] as Entry;
            corruptIf(index !== prev.index + 1, `entry ${prev.index + 1} was expected`);
            corruptIf(value.length < ENTRY_HEADER_BYTES + CRC_BYTES, `${value.length} bytes`);
            const body = unseal(k, value);
            const type = body[0];
            corruptIf(type !== EntryType.Normal && type !== EntryType.ConfChange, `unknown entry type ${String(type)}`);
            const term = readU64(body, 1);
            if (term === undefined || term < prev.term) throw new CorruptError(`term below the preceding term ${prev.term}`);
            log.push({ term, index: index as number, type: type as EntryType, data: new Uint8Array(body.subarray(ENTRY_HEADER_BYTES)) });
            break;
          }
          default:
            throw new CorruptError(`unknown record kind ${String(kind)}`);
        }
      } catch (e) {
        if (e instanceof CorruptError) throw refuse(label, e.message);
        throw e;
      }
    }
    if (keys === 0) {
      // A new environment (or one created by a process that died before writing anything).
      this.root.putSync(FORMAT_KEY, encodeFormat());
      return;
    }
    if ((groupCount ?? 0) !== states.size) {
      throw refuse('groups', `${states.size} groups found, ${groupCount ?? 0} recorded`);
    }
    for (const [group, state] of states) {
      const where = `group ${group}`;
      const meta = snaps.get(group);
      if (meta === undefined) throw refuse(where, 'no snapshot record');
      const chunks = chunkLists.get(group) ?? [];
      if (chunks.length !== meta.chunks) throw refuse(where, `snapshot has ${chunks.length} of ${meta.chunks} chunks`);
      let total = 0;
      for (const c of chunks) total += c.length;
      if (total !== meta.dataBytes) throw refuse(where, `snapshot has ${total} of ${meta.dataBytes} bytes`);
      let data: Uint8Array = EMPTY;
      if (chunks.length === 1) data = chunks[0] as Uint8Array;
      else if (chunks.length > 1) {
        data = new Uint8Array(total);
        let at = 0;
        for (const c of chunks) {
          data.set(c, at);
          at += c.length;
        }
      }
      if (meta.index < state.logStart) throw refuse(where, `snapshot at ${meta.index} below log start ${state.logStart}`);
      const log = logs.get(group) ?? [{ term: state.logStartTerm, index: state.logStart, type: EntryType.Normal, data: EMPTY }];
      const last = (log[log.length - 1] as Entry).index;
      if (last !== state.lastIndex) throw refuse(where, `log ends at ${last}, its last index is ${state.lastIndex}`);
      const g = new RaftGroupStorage(group, meta.conf, this.markDirty, false);
      g.restore(state, { meta: { index: meta.index, term: meta.term, conf: meta.conf }, data }, meta.chunks, log);
      this.groupsById.set(group, g);
    }
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
