// The on-disk format of `raft.mdb` (raft-lmdb.ts): the key layout, the record
// encodings with their CRCs, and the batch a turn's keys and records are built
// in. See docs/storage.md.

import assert from 'node:assert/strict';
import { crc32 } from 'node:zlib';
import type { ConfState, HardState, NodeId, Snapshot } from '../raft/types.js';
import { OrdoError } from '../ordo-error.js';
import { SAFE_HIGH_WORD_MAX, TWO_POW_32, utf8, utf8Strict, writeU64 } from './bytes.js';

/** Version of the key layout and record encodings below; another version is refused. */
export const RAFT_FORMAT_VERSION = 1;
/** Longest node metadata key, in UTF-8 bytes (LMDB keys are limited to 511 bytes). */
export const META_KEY_BYTES_MAX = 256;
/** Longest node id stored in a hard state or a membership, in UTF-8 bytes. */
export const NODE_ID_BYTES_MAX = 1024;
/** Group ids are stored as u32. */
export const GROUP_ID_MAX = 0xffff_ffff;
/** Size of the buffers that keys and entry records of one turn are carved from. */
export const SLAB_BYTES = 256 * 1024;

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

export const KIND_FORMAT = 0x00;
export const KIND_META = 0x01;
export const KIND_GROUP = 0x02;
export const KIND_SNAPSHOT = 0x03;
export const KIND_CHUNK = 0x04;
export const KIND_ENTRY = 0x05;

export const FORMAT_MAGIC = Buffer.from('ordo-raft', 'latin1');
export const FORMAT_KEY = Buffer.from([KIND_FORMAT]);
export const GROUP_COUNT_KEY = Buffer.from([KIND_FORMAT, 0x01]);
export const GROUP_KEY_BYTES = 5;
export const CHUNK_KEY_BYTES = 9;
export const ENTRY_KEY_BYTES = 13;
/** u8 type + u64 term before the entry data. */
export const ENTRY_HEADER_BYTES = 9;
/** The CRC-32 that ends every record. */
export const CRC_BYTES = 4;
/** term, commit, log start index, log start term, last index (u64 each) and a vote flag. */
export const GROUP_STATE_FIXED_BYTES = 41;
export const GROUP_STATE_VOTE_FLAG_AT = 40;

export const EMPTY = new Uint8Array(0);

/** Reads a u64 that must be a safe integer; `undefined` otherwise (corrupt). */
export function readU64(buf: Uint8Array, at: number): number | undefined {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const hi = view.getUint32(at);
  if (hi > SAFE_HIGH_WORD_MAX) return undefined;
  return hi * TWO_POW_32 + view.getUint32(at + 4);
}

/** Writes the CRC of `key` and the value into the last CRC_BYTES of `value` (reserved by the caller). */
export function seal(key: Buffer, value: Buffer): Buffer {
  const end = value.length - CRC_BYTES;
  value.writeUInt32BE(crc32(value.subarray(0, end), crc32(key)), end);
  return value;
}

/** The value without its CRC, after checking the CRC. */
export function unseal(key: Buffer, value: Buffer): Buffer {
  corruptIf(value.length < CRC_BYTES, `record of ${value.length} bytes`);
  const end = value.length - CRC_BYTES;
  const body = value.subarray(0, end);
  corruptIf(value.readUInt32BE(end) !== crc32(body, crc32(key)), 'checksum mismatch');
  return body;
}

/** Thrown while decoding a record; turned into a DataDirectoryError naming the record. */
export class CorruptError extends OrdoError {
  override readonly code = 'ORDO_ERR_RAFT_LMDB_CORRUPT';
}

export function corruptIf(cond: boolean, why: string): void {
  if (cond) throw new CorruptError(why);
}

/** Allocates many small buffers out of few big ones (keys and entry records of one turn). */
export class Slab {
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
export class WriteBatch {
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

export function encodeFormat(): Buffer {
  const b = Buffer.alloc(FORMAT_MAGIC.length + 4);
  FORMAT_MAGIC.copy(b, 0);
  b.writeUInt32BE(RAFT_FORMAT_VERSION, FORMAT_MAGIC.length);
  return b;
}

export function nodeIdBytes(id: NodeId): Uint8Array {
  const bytes = utf8.encode(id);
  assert.ok(bytes.length <= NODE_ID_BYTES_MAX, `node id longer than ${NODE_ID_BYTES_MAX} bytes`);
  return bytes;
}

export function encodeGroupState(hs: HardState, logStart: number, logStartTerm: number, lastIndex: number): Buffer {
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

export interface GroupStateRecord {
  hardState: HardState;
  logStart: number;
  logStartTerm: number;
  lastIndex: number;
}

export function decodeGroupState(v: Uint8Array): GroupStateRecord {
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

export function decodeUtf8(bytes: Uint8Array): string {
  try {
    return utf8Strict.decode(bytes);
  } catch {
    throw new CorruptError('invalid UTF-8 text');
  }
}

export interface SnapshotMetaRecord {
  index: number;
  term: number;
  dataBytes: number;
  chunks: number;
  conf: ConfState;
}

export function encodeSnapshotMeta(snap: Snapshot, chunks: number): Buffer {
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

export function decodeSnapshotMeta(v: Uint8Array): SnapshotMetaRecord {
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
