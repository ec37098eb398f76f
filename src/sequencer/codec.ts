// Binary encodings of stored values and of whole-state snapshots. Used by the
// storage layer (one record per key) and by snapshots (all keys in one blob).

import assert from 'node:assert/strict';
import { isSequence, type Sequence, type TokenRecord, type TokenTable } from './sequence.js';
import type { StateMachine, StoredValue } from './state-machine.js';
import { OrdoError } from '../ordo-error.js';

const TAG_INT64 = 1;
const TAG_BYTES = 2;
const TAG_SEQUENCE = 3;
const MODES = ['strict', 'window'] as const;
const SNAPSHOT_MAGIC = 0x6f72646f; // "ordo"
const SNAPSHOT_VERSION = 1;

/** A tagged value record: 1 + int64 big-endian, 2 + the bytes, or 3 + a sequence. */
export function encodeValue(value: StoredValue): Buffer {
  if (isSequence(value)) return encodeSequence(value);
  if (typeof value === 'bigint') {
    const buf = Buffer.allocUnsafe(9);
    buf[0] = TAG_INT64;
    buf.writeBigInt64BE(value, 1);
    return buf;
  }
  const buf = Buffer.allocUnsafe(1 + value.length);
  buf[0] = TAG_BYTES;
  value.copy(buf, 1);
  return buf;
}

export class CorruptRecordError extends OrdoError {
  override readonly code = 'ORDO_ERR_VALUE_RECORD_CORRUPT';
}

export function decodeValue(record: Uint8Array): StoredValue {
  const buf = Buffer.from(record.buffer, record.byteOffset, record.byteLength);
  if (buf[0] === TAG_INT64 && buf.length === 9) return buf.readBigInt64BE(1);
  if (buf[0] === TAG_BYTES) return Buffer.from(buf.subarray(1));
  if (buf[0] === TAG_SEQUENCE) return decodeSequence(buf);
  throw new CorruptRecordError(`unknown value record (tag ${String(buf[0])}, ${buf.length} bytes)`);
}

// Sequence: tag, u8 mode, start, step, max, window (int64 each), u8 flags
// (1: current set, 2: reservedHigh set), current, reservedHigh, then the id.
function encodeSequence(seq: Sequence): Buffer {
  const id = Buffer.from(seq.id, 'utf8');
  const buf = Buffer.alloc(1 + 1 + 8 * 4 + 1 + 16 + id.length);
  buf[0] = TAG_SEQUENCE;
  buf[1] = MODES.indexOf(seq.mode);
  buf.writeBigInt64BE(seq.start, 2);
  buf.writeBigInt64BE(seq.step, 10);
  buf.writeBigInt64BE(seq.max, 18);
  buf.writeBigInt64BE(seq.windowSize, 26);
  buf[34] = (seq.current === null ? 0 : 1) | (seq.reservedHigh === null ? 0 : 2);
  buf.writeBigInt64BE(seq.current ?? 0n, 35);
  buf.writeBigInt64BE(seq.reservedHigh ?? 0n, 43);
  id.copy(buf, 51);
  return buf;
}

function decodeSequence(buf: Buffer): Sequence {
  const mode = MODES[buf[1] ?? 99];
  if (buf.length < 51 || mode === undefined) throw new CorruptRecordError(`bad sequence record (${buf.length} bytes)`);
  const flags = buf[34] ?? 0;
  return {
    kind: 'sequence',
    id: buf.toString('utf8', 51),
    mode,
    start: buf.readBigInt64BE(2),
    step: buf.readBigInt64BE(10),
    max: buf.readBigInt64BE(18),
    windowSize: buf.readBigInt64BE(26),
    current: flags & 1 ? buf.readBigInt64BE(35) : null,
    reservedHigh: flags & 2 ? buf.readBigInt64BE(43) : null,
  };
}

// Token table: u32 count, then per token u32 length + token bytes, first, last,
// count (int64), u8 range, f64 atMs.
export function encodeTokens(table: TokenTable): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(table.size, 0);
  parts.push(head);
  for (const [token, r] of table) {
    const t = Buffer.from(token, 'latin1');
    const rec = Buffer.allocUnsafe(4 + t.length + 24 + 1 + 8);
    rec.writeUInt32BE(t.length, 0);
    t.copy(rec, 4);
    const o = 4 + t.length;
    rec.writeBigInt64BE(r.first, o);
    rec.writeBigInt64BE(r.last, o + 8);
    rec.writeBigInt64BE(r.count, o + 16);
    rec[o + 24] = r.range ? 1 : 0;
    rec.writeDoubleBE(r.atMs, o + 25);
    parts.push(rec);
  }
  return Buffer.concat(parts);
}

export function decodeTokens(record: Uint8Array): Map<string, TokenRecord> {
  const buf = Buffer.from(record.buffer, record.byteOffset, record.byteLength);
  const table = new Map<string, TokenRecord>();
  if (buf.length < 4) throw new CorruptRecordError('token table truncated');
  const n = buf.readUInt32BE(0);
  let o = 4;
  for (let i = 0; i < n; i++) {
    if (o + 4 > buf.length) throw new CorruptRecordError('token table truncated');
    const len = buf.readUInt32BE(o);
    o += 4;
    if (o + len + 33 > buf.length) throw new CorruptRecordError('token table truncated');
    const token = buf.toString('latin1', o, o + len);
    o += len;
    table.set(token, {
      first: buf.readBigInt64BE(o),
      last: buf.readBigInt64BE(o + 8),
      count: buf.readBigInt64BE(o + 16),
      range: buf[o + 24] === 1,
      atMs: buf.readDoubleBE(o + 25),
    });
    o += 33;
  }
  if (o !== buf.length) throw new CorruptRecordError('token table has trailing bytes');
  return table;
}

/**
 * The whole keyspace as one blob: a header with the key count, then (u32 key
 * length, key, u32 record length, record) per key; then the count of keys with
 * tokens and the same layout for their token tables.
 */
export function snapshotState(sm: StateMachine): Buffer {
  return encodeSnapshot(mapEntries(sm.entries(), encodeValue), mapEntries(sm.tokenEntries(), encodeTokens));
}

/**
 * A snapshot in snapshotState's format from records already encoded
 * (encodeValue, encodeTokens), per key. storage/keyspace.ts exports a group
 * from its stored records with it, without decoding them.
 */
export function encodeSnapshot(values: Iterable<[string, Buffer]>, tokens: Iterable<[string, Buffer]>): Buffer {
  const parts: Buffer[] = [];
  const header = Buffer.allocUnsafe(12);
  header.writeUInt32BE(SNAPSHOT_MAGIC, 0);
  header.writeUInt32BE(SNAPSHOT_VERSION, 4);
  parts.push(header);
  let count = 0;
  for (const [key, record] of values) {
    pushKeyedRecord(parts, key, record);
    count++;
  }
  header.writeUInt32BE(count, 8);
  const tokenHeader = Buffer.allocUnsafe(4);
  parts.push(tokenHeader);
  let tokenKeys = 0;
  for (const [key, record] of tokens) {
    pushKeyedRecord(parts, key, record);
    tokenKeys++;
  }
  tokenHeader.writeUInt32BE(tokenKeys, 0);
  return Buffer.concat(parts);
}

function* mapEntries<T>(entries: Iterable<[string, T]>, encode: (value: T) => Buffer): Generator<[string, Buffer], undefined, undefined> {
  for (const [key, value] of entries) yield [key, encode(value)];
  return undefined;
}

function pushKeyedRecord(parts: Buffer[], key: string, record: Buffer): void {
  const keyBytes = Buffer.from(key, 'latin1');
  const keyLength = Buffer.allocUnsafe(4);
  keyLength.writeUInt32BE(keyBytes.length, 0);
  const recordLength = Buffer.allocUnsafe(4);
  recordLength.writeUInt32BE(record.length, 0);
  parts.push(keyLength, keyBytes, recordLength, record);
}

/** Replaces the state machine's contents with a snapshot's. */
export function restoreState(sm: StateMachine, snapshot: Buffer): void {
  if (snapshot.length < 12 || snapshot.readUInt32BE(0) !== SNAPSHOT_MAGIC) {
    throw new CorruptRecordError('not an ordo snapshot');
  }
  const version = snapshot.readUInt32BE(4);
  if (version !== SNAPSHOT_VERSION) throw new CorruptRecordError(`unknown snapshot version ${version}`);
  const count = snapshot.readUInt32BE(8);
  sm.clear();
  let offset = readKeyedRecords(snapshot, 12, count, (key, record) => sm.load(key, decodeValue(record)));
  assert.equal(sm.size, count, 'snapshot holds duplicate keys');
  if (offset + 4 > snapshot.length) throw new CorruptRecordError('snapshot truncated');
  const tokenKeys = snapshot.readUInt32BE(offset);
  offset = readKeyedRecords(snapshot, offset + 4, tokenKeys, (key, record) => sm.loadTokens(key, decodeTokens(record)));
  if (offset !== snapshot.length) throw new CorruptRecordError('snapshot has trailing bytes');
}

/** Reads `count` (u32 key length, key, u32 record length, record) items from `offset`; returns the offset after them. */
function readKeyedRecords(buf: Buffer, offset: number, count: number, each: (key: string, record: Buffer) => void): number {
  const u32At = (at: number): number => {
    if (at + 4 > buf.length) throw new CorruptRecordError('snapshot truncated');
    return buf.readUInt32BE(at);
  };
  for (let i = 0; i < count; i++) {
    const keyLength = u32At(offset);
    const key = buf.toString('latin1', offset + 4, offset + 4 + keyLength);
    offset += 4 + keyLength;
    const recordLength = u32At(offset);
    offset += 4;
    if (offset + recordLength > buf.length) throw new CorruptRecordError('snapshot truncated');
    each(key, buf.subarray(offset, offset + recordLength));
    offset += recordLength;
  }
  return offset;
}
