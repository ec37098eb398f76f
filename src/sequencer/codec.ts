// Binary encodings of stored values and of whole-state snapshots. Used by the
// storage layer (one record per key) and by snapshots (all keys in one blob).

import assert from 'node:assert/strict';
import type { StateMachine, StoredValue } from './state-machine.js';

const TAG_INT64 = 1;
const TAG_BYTES = 2;
const SNAPSHOT_MAGIC = 0x6f72646f; // "ordo"
const SNAPSHOT_VERSION = 1;

/** A tagged value record: 1 + int64 big-endian, or 2 + the bytes. */
export function encodeValue(value: StoredValue): Buffer {
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

export class CorruptRecordError extends Error {}

export function decodeValue(record: Uint8Array): StoredValue {
  const buf = Buffer.from(record.buffer, record.byteOffset, record.byteLength);
  if (buf[0] === TAG_INT64 && buf.length === 9) return buf.readBigInt64BE(1);
  if (buf[0] === TAG_BYTES) return Buffer.from(buf.subarray(1));
  throw new CorruptRecordError(`unknown value record (tag ${String(buf[0])}, ${buf.length} bytes)`);
}

/** The whole keyspace as one blob: header, then (u32 key length, key, u32 record length, record) per key. */
export function snapshotState(sm: StateMachine): Buffer {
  const parts: Buffer[] = [];
  const header = Buffer.allocUnsafe(12);
  header.writeUInt32BE(SNAPSHOT_MAGIC, 0);
  header.writeUInt32BE(SNAPSHOT_VERSION, 4);
  header.writeUInt32BE(sm.size, 8);
  parts.push(header);
  for (const [key, value] of sm.entries()) {
    const keyBytes = Buffer.from(key, 'latin1');
    const record = encodeValue(value);
    const lengths = Buffer.allocUnsafe(4);
    lengths.writeUInt32BE(keyBytes.length, 0);
    const recordLength = Buffer.allocUnsafe(4);
    recordLength.writeUInt32BE(record.length, 0);
    parts.push(lengths, keyBytes, recordLength, record);
  }
  return Buffer.concat(parts);
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
  let offset = 12;
  for (let i = 0; i < count; i++) {
    if (offset + 4 > snapshot.length) throw new CorruptRecordError('snapshot truncated');
    const keyLength = snapshot.readUInt32BE(offset);
    offset += 4;
    const key = snapshot.toString('latin1', offset, offset + keyLength);
    offset += keyLength;
    if (offset + 4 > snapshot.length) throw new CorruptRecordError('snapshot truncated');
    const recordLength = snapshot.readUInt32BE(offset);
    offset += 4;
    if (offset + recordLength > snapshot.length) throw new CorruptRecordError('snapshot truncated');
    sm.load(key, decodeValue(snapshot.subarray(offset, offset + recordLength)));
    offset += recordLength;
  }
  assert.equal(sm.size, count, 'snapshot holds duplicate keys');
  if (offset !== snapshot.length) throw new CorruptRecordError('snapshot has trailing bytes');
}
