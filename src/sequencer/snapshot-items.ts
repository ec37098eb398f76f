// The records of a state machine as a stream of self-delimited items: what a
// snapshot sent to a follower carries, cut into chunks of bounded size. Each
// item is one key's value record (encodeValue) or token table (encodeTokens):
//
//   item := u8 kind (1 value, 2 tokens), u32 key length, key (latin1), u32 record length, record
//
// A chunk holds whole items, so a receiver stages each chunk on its own. The
// same records read from a snapshotState blob (BlobItemReader) or from the
// keyspace's LMDB range (storage/keyspace.ts), and turned back into a blob
// (itemsToSnapshot) for a state machine kept in memory.

import { CorruptRecordError, encodeSnapshot } from './codec.js';

export const ITEM_VALUE = 1;
export const ITEM_TOKENS = 2;
export type ItemKind = typeof ITEM_VALUE | typeof ITEM_TOKENS;

/** Bytes an item adds around its key and record. */
export const ITEM_OVERHEAD_BYTES = 9;

export interface SnapshotItem {
  readonly kind: ItemKind;
  readonly key: string;
  readonly record: Buffer;
}

export function itemBytes(key: string, record: Uint8Array): number {
  return ITEM_OVERHEAD_BYTES + key.length + record.length;
}

/** Appends items into a buffer of `bytesMax` (an item larger than that gets a buffer of its own). */
export class ChunkWriter {
  private buf: Buffer;
  private at = 0;
  items = 0;

  constructor(private readonly bytesMax: number) {
    this.buf = Buffer.allocUnsafe(Math.min(bytesMax, 64 * 1024));
  }

  get bytes(): number {
    return this.at;
  }

  /** Whether `key`/`record` fits (always true for the first item of a chunk). */
  fits(key: string, record: Uint8Array): boolean {
    return this.items === 0 || this.at + itemBytes(key, record) <= this.bytesMax;
  }

  push(kind: ItemKind, key: string, record: Uint8Array): void {
    const n = itemBytes(key, record);
    if (this.at + n > this.buf.length) {
      const next = Buffer.allocUnsafe(Math.max(this.at + n, Math.min(this.bytesMax, this.buf.length * 2)));
      this.buf.copy(next, 0, 0, this.at);
      this.buf = next;
    }
    this.buf[this.at] = kind;
    this.buf.writeUInt32BE(key.length, this.at + 1);
    this.buf.write(key, this.at + 5, 'latin1');
    let o = this.at + 5 + key.length;
    this.buf.writeUInt32BE(record.length, o);
    o += 4;
    this.buf.set(record, o);
    this.at = o + record.length;
    this.items++;
  }

  /** The chunk (a view of this writer's buffer: copy or send it before pushing more). */
  take(): Uint8Array {
    const out = this.buf.subarray(0, this.at);
    this.buf = Buffer.allocUnsafe(Math.min(this.bytesMax, 64 * 1024));
    this.at = 0;
    this.items = 0;
    return out;
  }
}

/** The items of one chunk, in order; throws CorruptRecordError on a malformed chunk. */
export function* readItems(chunk: Uint8Array): Generator<SnapshotItem, undefined, undefined> {
  const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  let o = 0;
  while (o < buf.length) {
    if (o + 5 > buf.length) throw new CorruptRecordError('snapshot chunk truncated');
    const kind = buf[o];
    if (kind !== ITEM_VALUE && kind !== ITEM_TOKENS) throw new CorruptRecordError(`unknown snapshot item kind ${String(kind)}`);
    const keyLength = buf.readUInt32BE(o + 1);
    o += 5;
    if (o + keyLength + 4 > buf.length) throw new CorruptRecordError('snapshot chunk truncated');
    const key = buf.toString('latin1', o, o + keyLength);
    o += keyLength;
    const recordLength = buf.readUInt32BE(o);
    o += 4;
    if (o + recordLength > buf.length) throw new CorruptRecordError('snapshot chunk truncated');
    yield { kind, key, record: buf.subarray(o, o + recordLength) };
    o += recordLength;
  }
  return undefined;
}

/**
 * Reads a snapshotState blob (codec.ts) item by item, from where it stopped:
 * the source of a snapshot kept whole in memory (a host without a keyspace).
 */
export class BlobItemReader {
  private offset = 12;
  /** Items left in the current section; the section: values, then tokens. */
  private left: number;
  private kind: ItemKind = ITEM_VALUE;

  constructor(private readonly blob: Buffer) {
    if (blob.length < 12) throw new CorruptRecordError('not an ordo snapshot');
    this.left = blob.readUInt32BE(8);
  }

  next(): SnapshotItem | null {
    const b = this.blob;
    while (this.left === 0) {
      if (this.kind === ITEM_TOKENS) return null;
      if (this.offset + 4 > b.length) throw new CorruptRecordError('snapshot truncated');
      this.left = b.readUInt32BE(this.offset);
      this.offset += 4;
      this.kind = ITEM_TOKENS;
    }
    if (this.offset + 4 > b.length) throw new CorruptRecordError('snapshot truncated');
    const keyLength = b.readUInt32BE(this.offset);
    const key = b.toString('latin1', this.offset + 4, this.offset + 4 + keyLength);
    this.offset += 4 + keyLength;
    if (this.offset + 4 > b.length) throw new CorruptRecordError('snapshot truncated');
    const recordLength = b.readUInt32BE(this.offset);
    this.offset += 4;
    if (this.offset + recordLength > b.length) throw new CorruptRecordError('snapshot truncated');
    const record = b.subarray(this.offset, this.offset + recordLength);
    this.offset += recordLength;
    this.left--;
    return { kind: this.kind, key, record };
  }
}

/** Items (in any order of kinds) as a snapshotState blob. */
export function itemsToSnapshot(chunks: readonly Uint8Array[]): Buffer {
  const values: [string, Buffer][] = [];
  const tokens: [string, Buffer][] = [];
  for (const chunk of chunks) {
    for (const item of readItems(chunk)) (item.kind === ITEM_VALUE ? values : tokens).push([item.key, item.record]);
  }
  return encodeSnapshot(values, tokens);
}
