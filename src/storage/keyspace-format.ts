// The on-disk format of `keyspace.mdb` (keyspace.ts): the key layout, the
// two key forms (inline, or by SHA-256 for long keys), the CRC every record
// ends with, and the group record. See docs/storage.md, "The keyspace".

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import type { NodeId } from '../raft/types.js';
import { scanHash } from '../sequencer/backing.js';
import { CorruptRecordError } from '../sequencer/codec.js';
import type { GroupCheckpointState, KeyspaceCheckpointItem } from './keyspace.js';
import { SAFE_HIGH_WORD_MAX, TWO_POW_32, utf8, utf8Strict, writeU64 } from './bytes.js';

/** Version of the key layout and record encodings below; another version is refused. */
export const KEYSPACE_FORMAT_VERSION = 1;
/**
 * Keys up to this many bytes are stored inline in their LMDB key; longer ones
 * (LMDB keys are at most 1978 bytes, Redis keys up to 512 MB) by their SHA-256,
 * with the whole key at the start of the record.
 */
export const KEY_INLINE_BYTES_MAX = 1024;
/** Group ids are stored as u32. */
export const KEYSPACE_GROUP_ID_MAX = 0xffff_ffff;
/** Longest node id in a stored membership, in UTF-8 bytes. */
export const KEYSPACE_NODE_ID_BYTES_MAX = 1024;

// ---------------------------------------------------------------------------
// Key layout. Numbers big-endian, so LMDB's byte order is numeric order: one
// group's keys are one range, in SCAN order (hash, then the stored key).
//
//   [0x00]                                      format marker: "ordo-keyspace" u32 version
//   [0x01][u32 group]                           group: u64 applied index, u64 applied term,
//                                               u64 key count, voters, learners
//   [0x02][u32 group][u32 hash][0x00][key]      value record (sequencer/codec.ts encodeValue)
//   [0x02][u32 group][u32 hash][0x01][sha256]   long key: u32 key length, key, value record
//   [0x03][u32 group][u32 hash][form as above]  token table (encodeTokens), same key forms
//   [0x04][u32 group][u32 hash][form as above]  a value record of a snapshot being received (staged)
//   [0x05][u32 group][u32 hash][form as above]  a token table of a snapshot being received (staged)
//   [0x06][u32 group]                           the group's state is a snapshot installed from its
//                                               leader, no checkpoint since: u64 index, u64 term
//
// Every value but the format marker ends with a u32 CRC-32 of the key and the
// rest of the value: LMDB keeps no checksums, and a damaged record must be
// refused, not served.
// ---------------------------------------------------------------------------

export const KIND_FORMAT = 0x00;
export const KIND_GROUP = 0x01;
export const KIND_VALUE = 0x02;
export const KIND_TOKENS = 0x03;
export const KIND_STAGED_VALUE = 0x04;
export const KIND_STAGED_TOKENS = 0x05;
export const KIND_INSTALLED = 0x06;
export const FORM_INLINE = 0x00;
export const FORM_HASHED = 0x01;
export const FORMAT_MAGIC = Buffer.from('ordo-keyspace', 'latin1');
export const FORMAT_KEY = Buffer.of(KIND_FORMAT);
/** kind + u32 group. */
export const GROUP_PREFIX_BYTES = 5;
/** kind + u32 group + u32 hash + form. */
export const KEY_HEAD_BYTES = 10;
export const SHA256_BYTES = 32;
export const CRC_BYTES = 4;
/** applied index, applied term, key count (u64 each). */
export const GROUP_FIXED_BYTES = 24;

export function readU64(buf: Buffer, at: number): number {
  const hi = buf.readUInt32BE(at);
  if (hi > SAFE_HIGH_WORD_MAX) throw new CorruptRecordError('number out of range');
  return hi * TWO_POW_32 + buf.readUInt32BE(at + 4);
}

/** The value with the CRC of `key` and the value appended. */
export function seal(key: Buffer, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(body.length + CRC_BYTES);
  body.copy(out, 0);
  out.writeUInt32BE(crc32(body, crc32(key)), body.length);
  return out;
}

/** The value without its CRC, after checking it. */
export function unseal(key: Buffer, value: Buffer): Buffer {
  if (value.length < CRC_BYTES) throw new CorruptRecordError(`record of ${value.length} bytes`);
  const end = value.length - CRC_BYTES;
  const body = value.subarray(0, end);
  if (value.readUInt32BE(end) !== crc32(body, crc32(key))) throw new CorruptRecordError('checksum mismatch');
  return body;
}

export function groupPrefix(kind: number, group: number): Buffer {
  const k = Buffer.allocUnsafe(GROUP_PREFIX_BYTES);
  k[0] = kind;
  k.writeUInt32BE(group, 1);
  return k;
}

/** The first key past every record of `kind` of `group`. */
export function groupEnd(kind: number, group: number): Buffer {
  return group < KEYSPACE_GROUP_ID_MAX ? groupPrefix(kind, group + 1) : Buffer.of(kind + 1);
}

export function hashPrefix(kind: number, group: number, hash: number): Buffer {
  const k = Buffer.allocUnsafe(GROUP_PREFIX_BYTES + 4);
  k[0] = kind;
  k.writeUInt32BE(group, 1);
  k.writeUInt32BE(hash, GROUP_PREFIX_BYTES);
  return k;
}

/** The LMDB key of a key's record of `kind`. */
export function recordKey(kind: number, group: number, key: string): Buffer {
  const long = key.length > KEY_INLINE_BYTES_MAX;
  const k = Buffer.allocUnsafe(KEY_HEAD_BYTES + (long ? SHA256_BYTES : key.length));
  k[0] = kind;
  k.writeUInt32BE(group, 1);
  k.writeUInt32BE(scanHash(key), 5);
  k[9] = long ? FORM_HASHED : FORM_INLINE;
  if (long) createHash('sha256').update(Buffer.from(key, 'latin1')).digest().copy(k, KEY_HEAD_BYTES);
  else k.write(key, KEY_HEAD_BYTES, 'latin1');
  return k;
}

/** A record's stored value (before the CRC): for a long key, u32 key length and the key first. */
export function recordBody(key: string, record: Buffer): Buffer {
  if (key.length <= KEY_INLINE_BYTES_MAX) return record;
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(key.length, 0);
  return Buffer.concat([head, Buffer.from(key, 'latin1'), record]);
}

/** The key, its hash and its record (encodeValue / encodeTokens) from a stored entry. */
export function splitRecord(storedKey: Buffer, stored: Buffer): { hash: number; key: string; record: Buffer } {
  if (storedKey.length < KEY_HEAD_BYTES) throw new CorruptRecordError(`key of ${storedKey.length} bytes`);
  const body = unseal(storedKey, stored);
  const hash = storedKey.readUInt32BE(5);
  const form = storedKey[9];
  if (form === FORM_INLINE) return { hash, key: storedKey.toString('latin1', KEY_HEAD_BYTES), record: body };
  if (form !== FORM_HASHED || storedKey.length !== KEY_HEAD_BYTES + SHA256_BYTES || body.length < 4) {
    throw new CorruptRecordError(`unknown key form ${String(form)}`);
  }
  const length = body.readUInt32BE(0);
  if (4 + length > body.length) throw new CorruptRecordError('long key truncated');
  return { hash, key: body.toString('latin1', 4, 4 + length), record: body.subarray(4 + length) };
}

export function nodeIdBytes(id: NodeId): Uint8Array {
  const bytes = utf8.encode(id);
  assert.ok(bytes.length <= KEYSPACE_NODE_ID_BYTES_MAX, `node id longer than ${KEYSPACE_NODE_ID_BYTES_MAX} bytes`);
  return bytes;
}

export interface GroupRecord extends GroupCheckpointState {
  readonly keyCount: number;
}

export function encodeGroup(g: GroupRecord): Buffer {
  const lists = [g.conf.voters.map(nodeIdBytes), g.conf.learners.map(nodeIdBytes)];
  let size = GROUP_FIXED_BYTES;
  for (const list of lists) {
    size += 4;
    for (const id of list) size += 2 + id.length;
  }
  const b = Buffer.allocUnsafe(size);
  writeU64(b, g.appliedIndex, 0);
  writeU64(b, g.appliedTerm, 8);
  writeU64(b, g.keyCount, 16);
  let at = GROUP_FIXED_BYTES;
  for (const list of lists) {
    b.writeUInt32BE(list.length, at);
    at += 4;
    for (const id of list) {
      b.writeUInt16BE(id.length, at);
      b.set(id, at + 2);
      at += 2 + id.length;
    }
  }
  return b;
}

export function decodeGroup(b: Buffer): GroupRecord {
  if (b.length < GROUP_FIXED_BYTES + 8) throw new CorruptRecordError(`group record of ${b.length} bytes`);
  let at = GROUP_FIXED_BYTES;
  const lists: NodeId[][] = [];
  for (let l = 0; l < 2; l++) {
    if (at + 4 > b.length) throw new CorruptRecordError('membership truncated');
    const count = b.readUInt32BE(at);
    at += 4;
    const ids: NodeId[] = [];
    for (let i = 0; i < count; i++) {
      if (at + 2 > b.length) throw new CorruptRecordError('membership truncated');
      const length = b.readUInt16BE(at);
      if (at + 2 + length > b.length) throw new CorruptRecordError('membership truncated');
      try {
        ids.push(utf8Strict.decode(b.subarray(at + 2, at + 2 + length)));
      } catch {
        throw new CorruptRecordError('node id is not UTF-8');
      }
      at += 2 + length;
    }
    lists.push(ids);
  }
  if (at !== b.length) throw new CorruptRecordError('group record has trailing bytes');
  return {
    appliedIndex: readU64(b, 0),
    appliedTerm: readU64(b, 8),
    keyCount: readU64(b, 16),
    conf: { voters: lists[0] ?? [], learners: lists[1] ?? [] },
  };
}

export function recordOf(item: KeyspaceCheckpointItem): GroupRecord {
  return { appliedIndex: item.appliedIndex, appliedTerm: item.appliedTerm, keyCount: item.keyCount, conf: item.conf };
}

/** Exported for tests: the stored key of a record (`tokens`: of a token table). */
export function storedKeyOf(groupId: number, key: string, tokens = false): Buffer {
  return recordKey(tokens ? KIND_TOKENS : KIND_VALUE, groupId, key);
}
