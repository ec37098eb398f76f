// Wire encoding of Raft messages for the bus, and of the frame that carries
// the messages of many groups to one peer in one loop turn.
//
// message := u8 version, u8 type, str from, str to, u8 flags,
//            uint term, index, logTerm, commit, hintIndex, hintTerm, readSeq,
//            sentTick, offset, totalBytes, requestId,
//            uint entryCount, entry*, [snapshotMeta], [bytes chunk]
// entry   := uint term, uint index, u8 type, bytes data
// meta    := uint index, uint term, uint voterCount, str*, uint learnerCount, str*
// frame   := u8 frameVersion, uint count, (uint groupId, bytes message)*
//
// A frame item may instead carry a snapshot transfer message
// (multiraft/snapshot-transfer.ts), told apart by its first byte:
// transfer := u8 TRANSFER_CODEC_VERSION, u8 kind, str from, str to, uint term,
//             uint transferId, uint seq, u8 last, [meta (chunk only)], [bytes data (chunk only)]
// uint    := unsigned LEB128 varint of a safe integer (at most 8 bytes)
// str     := bytes (UTF-8); bytes := uint length, raw bytes
//
// Decoding never trusts a length: every count and length is checked against
// the bytes that remain, and every failure is a MessageDecodeError, so a bad
// frame from a peer is dropped, never a crash.

import assert from 'node:assert/strict';
import { EntryType, newMessage, type Entry, type Message, type MessageType, type SnapshotMeta } from '../raft/types.js';
import { OrdoError } from '../ordo-error.js';

export const MESSAGE_CODEC_VERSION = 1;
export const FRAME_CODEC_VERSION = 1;

/** Bytes of a node id on the wire; longer ids are refused on both sides. */
export const NODE_ID_BYTES_MAX = 255;

/** First byte of a frame item that is a snapshot transfer message (a Raft message starts with MESSAGE_CODEC_VERSION). */
export const TRANSFER_CODEC_VERSION = 0x81;

export class MessageDecodeError extends OrdoError {
  override readonly code = 'ORDO_ERR_MESSAGE_DECODE';
}

/**
 * One message of a snapshot transfer (snapshot-transfer.ts): a chunk of
 * records from the leader, the follower's acknowledgement (`seq`: the next
 * chunk it wants; every chunk before it is staged), or either side giving up.
 */
export interface TransferMessage {
  readonly kind: 'chunk' | 'ack' | 'abort';
  readonly from: string;
  readonly to: string;
  /** The leader's term when the transfer started. */
  readonly term: number;
  readonly transferId: number;
  readonly seq: number;
  /** chunk: the last one of the snapshot. */
  readonly last: boolean;
  /** chunk: the snapshot being sent. */
  readonly meta: SnapshotMeta | null;
  /** chunk: records (sequencer/snapshot-items.ts); empty otherwise. */
  readonly data: Uint8Array;
}

const TRANSFER_KINDS = ['chunk', 'ack', 'abort'] as const;

/** Each message type's code on the wire: fixed forever (a new type takes a new code); the compiler sees every type has one. */
const TYPE_CODE: Readonly<Record<MessageType, number>> = {
  preVote: 0,
  preVoteResp: 1,
  vote: 2,
  voteResp: 3,
  append: 4,
  appendResp: 5,
  heartbeat: 6,
  heartbeatResp: 7,
  snapshot: 8,
  snapshotResp: 9,
  timeoutNow: 10,
  readIndex: 11,
  readIndexResp: 12,
};
const TYPE_OF_CODE = new Map<number, MessageType>(Object.entries(TYPE_CODE).map(([t, code]) => [code, t as MessageType]));

const FLAG_REJECT = 1;
const FLAG_TRANSFER = 2;
const FLAG_META = 4;
const FLAG_CHUNK = 8;
const FLAGS_KNOWN = FLAG_REJECT | FLAG_TRANSFER | FLAG_META | FLAG_CHUNK;

const EMPTY = new Uint8Array(0);

/** Growable byte buffer. */
class Writer {
  private buf: Buffer;
  private pos = 0;

  constructor(initialBytes = 256) {
    this.buf = Buffer.allocUnsafe(initialBytes);
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  u8(v: number): void {
    this.room(1);
    this.buf[this.pos++] = v;
  }

  uint(v: number): void {
    assert.ok(Number.isSafeInteger(v) && v >= 0, `varint must be a non-negative safe integer, got ${v}`);
    this.room(8);
    while (v >= 0x80) {
      this.buf[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.pos++] = v;
  }

  bytes(b: Uint8Array): void {
    this.uint(b.length);
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    assert.ok(b.length <= NODE_ID_BYTES_MAX, `node id longer than ${NODE_ID_BYTES_MAX} bytes`);
    this.bytes(b);
  }

  finish(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }
}

class Reader {
  private pos = 0;

  constructor(private readonly buf: Uint8Array) {}

  remaining(): number {
    return this.buf.length - this.pos;
  }

  u8(): number {
    const v = this.buf[this.pos];
    if (v === undefined) throw new MessageDecodeError('truncated');
    this.pos++;
    return v;
  }

  uint(): number {
    let v = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8();
      v += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) {
        if (!Number.isSafeInteger(v)) throw new MessageDecodeError('integer beyond the safe range');
        if (i > 0 && b === 0) throw new MessageDecodeError('non-minimal integer');
        return v;
      }
      scale *= 0x80;
    }
    throw new MessageDecodeError('integer too long');
  }

  /** A count of items each taking at least `itemBytesMin`: checked against what remains. */
  count(itemBytesMin: number): number {
    const n = this.uint();
    if (n * itemBytesMin > this.remaining()) throw new MessageDecodeError('count larger than the bytes that follow');
    return n;
  }

  bytes(): Uint8Array {
    const n = this.uint();
    if (n > this.remaining()) throw new MessageDecodeError('length beyond the end');
    // A copy: the transport's buffer may be reused; entries live on in logs.
    let out = EMPTY;
    if (n > 0) {
      out = new Uint8Array(n);
      out.set(this.buf.subarray(this.pos, this.pos + n));
    }
    this.pos += n;
    return out;
  }

  str(): string {
    const n = this.uint();
    if (n > NODE_ID_BYTES_MAX) throw new MessageDecodeError('node id too long');
    if (n > this.remaining()) throw new MessageDecodeError('length beyond the end');
    const s = Buffer.from(this.buf.buffer, this.buf.byteOffset + this.pos, n).toString('utf8');
    this.pos += n;
    return s;
  }

  /** A sub-range of the input without copying (for nested messages). */
  view(): Uint8Array {
    const n = this.uint();
    if (n > this.remaining()) throw new MessageDecodeError('length beyond the end');
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  done(): boolean {
    return this.pos === this.buf.length;
  }
}

function writeMeta(w: Writer, meta: SnapshotMeta): void {
  w.uint(meta.index);
  w.uint(meta.term);
  w.uint(meta.conf.voters.length);
  for (const v of meta.conf.voters) w.str(v);
  w.uint(meta.conf.learners.length);
  for (const l of meta.conf.learners) w.str(l);
}

function readMeta(r: Reader): SnapshotMeta {
  const index = r.uint();
  const term = r.uint();
  const voters: string[] = [];
  for (let n = r.count(1), i = 0; i < n; i++) voters.push(r.str());
  const learners: string[] = [];
  for (let n = r.count(1), i = 0; i < n; i++) learners.push(r.str());
  return { index, term, conf: { voters, learners } };
}

/** One transfer message as bytes (a frame item). */
export function encodeTransfer(t: TransferMessage): Uint8Array {
  assert.equal(t.kind === 'chunk', t.meta !== null, 'a chunk, and only a chunk, carries the snapshot meta');
  const w = new Writer(64 + t.data.length);
  w.u8(TRANSFER_CODEC_VERSION);
  w.u8(TRANSFER_KINDS.indexOf(t.kind));
  w.str(t.from);
  w.str(t.to);
  w.uint(t.term);
  w.uint(t.transferId);
  w.uint(t.seq);
  w.u8(t.last ? 1 : 0);
  if (t.meta !== null) {
    writeMeta(w, t.meta);
    w.bytes(t.data);
  }
  return w.finish();
}

function readTransfer(r: Reader): TransferMessage {
  if (r.u8() !== TRANSFER_CODEC_VERSION) throw new MessageDecodeError('not a transfer message');
  const kind = TRANSFER_KINDS[r.u8()];
  if (kind === undefined) throw new MessageDecodeError('unknown transfer message kind');
  const from = r.str();
  const to = r.str();
  const term = r.uint();
  const transferId = r.uint();
  const seq = r.uint();
  const lastByte = r.u8();
  if (lastByte > 1) throw new MessageDecodeError('bad last flag');
  const meta = kind === 'chunk' ? readMeta(r) : null;
  const data = kind === 'chunk' ? r.bytes() : EMPTY;
  return { kind, from, to, term, transferId, seq, last: lastByte === 1, meta, data };
}

function writeMessage(w: Writer, m: Message): void {
  w.u8(MESSAGE_CODEC_VERSION);
  w.u8(TYPE_CODE[m.type]);
  w.str(m.from);
  w.str(m.to);
  let flags = 0;
  if (m.reject) flags |= FLAG_REJECT;
  if (m.transfer) flags |= FLAG_TRANSFER;
  if (m.snapshotMeta !== null) flags |= FLAG_META;
  if (m.chunk !== null) flags |= FLAG_CHUNK;
  w.u8(flags);
  w.uint(m.term);
  w.uint(m.index);
  w.uint(m.logTerm);
  w.uint(m.commit);
  w.uint(m.hintIndex);
  w.uint(m.hintTerm);
  w.uint(m.readSeq);
  w.uint(m.sentTick);
  w.uint(m.offset);
  w.uint(m.totalBytes);
  w.uint(m.requestId);
  w.uint(m.entries.length);
  for (const e of m.entries) {
    w.uint(e.term);
    w.uint(e.index);
    w.u8(e.type);
    w.bytes(e.data);
  }
  if (m.snapshotMeta !== null) writeMeta(w, m.snapshotMeta);
  if (m.chunk !== null) w.bytes(m.chunk);
}

function readMessage(r: Reader): Message {
  const version = r.u8();
  if (version !== MESSAGE_CODEC_VERSION) throw new MessageDecodeError(`unknown message version ${version}`);
  const type = TYPE_OF_CODE.get(r.u8());
  if (type === undefined) throw new MessageDecodeError('unknown message type');
  const from = r.str();
  const to = r.str();
  const flags = r.u8();
  if ((flags & ~FLAGS_KNOWN) !== 0) throw new MessageDecodeError('unknown message flags');
  const m = newMessage(type, from, to, r.uint());
  m.reject = (flags & FLAG_REJECT) !== 0;
  m.transfer = (flags & FLAG_TRANSFER) !== 0;
  m.index = r.uint();
  m.logTerm = r.uint();
  m.commit = r.uint();
  m.hintIndex = r.uint();
  m.hintTerm = r.uint();
  m.readSeq = r.uint();
  m.sentTick = r.uint();
  m.offset = r.uint();
  m.totalBytes = r.uint();
  m.requestId = r.uint();
  const entryCount = r.count(4);
  if (entryCount > 0) {
    const entries: Entry[] = [];
    for (let i = 0; i < entryCount; i++) {
      const term = r.uint();
      const index = r.uint();
      const t = r.u8();
      if (t !== EntryType.Normal && t !== EntryType.ConfChange) throw new MessageDecodeError('unknown entry type');
      entries.push({ term, index, type: t, data: r.bytes() });
    }
    m.entries = entries;
  }
  if ((flags & FLAG_META) !== 0) m.snapshotMeta = readMeta(r);
  if ((flags & FLAG_CHUNK) !== 0) m.chunk = r.bytes();
  return m;
}

/** One message as bytes. */
export function encodeMessage(m: Message): Uint8Array {
  const w = new Writer(64 + m.entries.length * 32);
  writeMessage(w, m);
  return w.finish();
}

/** Bytes back to a message; throws MessageDecodeError on anything malformed. */
export function decodeMessage(bytes: Uint8Array): Message {
  const r = new Reader(bytes);
  const m = readMessage(r);
  if (!r.done()) throw new MessageDecodeError('trailing bytes after the message');
  return m;
}

/** A message of one group, as carried in a peer frame. */
export interface GroupMessage {
  readonly groupId: number;
  readonly message: Message;
}

/** A snapshot transfer message of one group, as carried in a peer frame. */
export interface GroupTransfer {
  readonly groupId: number;
  readonly transfer: TransferMessage;
}

export type FrameItem = GroupMessage | GroupTransfer;

/** Bytes a frame adds around its messages: version and count (at most 1 + 8). */
export const FRAME_HEADER_BYTES_MAX = 9;
/** Bytes a frame adds per message at most: group id and length varints. */
export const FRAME_ITEM_OVERHEAD_BYTES_MAX = 16;

/** A frame from already encoded messages (see encodeMessage), so a sender can size frames first. */
export function encodeFrame(items: readonly { readonly groupId: number; readonly bytes: Uint8Array }[]): Uint8Array {
  let size = FRAME_HEADER_BYTES_MAX;
  for (const it of items) size += it.bytes.length + FRAME_ITEM_OVERHEAD_BYTES_MAX;
  const w = new Writer(size);
  w.u8(FRAME_CODEC_VERSION);
  w.uint(items.length);
  for (const it of items) {
    w.uint(it.groupId);
    w.bytes(it.bytes);
  }
  return w.finish();
}

/** Encodes the messages of many groups for one peer. */
export function encodeGroupMessages(messages: readonly GroupMessage[]): Uint8Array {
  return encodeFrame(messages.map((gm) => ({ groupId: gm.groupId, bytes: encodeMessage(gm.message) })));
}

/** Decodes a peer frame; throws MessageDecodeError on anything malformed (nothing is returned then). */
export function decodeFrame(bytes: Uint8Array): FrameItem[] {
  const r = new Reader(bytes);
  const version = r.u8();
  if (version !== FRAME_CODEC_VERSION) throw new MessageDecodeError(`unknown frame version ${version}`);
  const n = r.count(2);
  const out: FrameItem[] = [];
  for (let i = 0; i < n; i++) {
    const groupId = r.uint();
    const view = r.view();
    const inner = new Reader(view);
    if (view[0] === TRANSFER_CODEC_VERSION) {
      const transfer = readTransfer(inner);
      if (!inner.done()) throw new MessageDecodeError('trailing bytes after a transfer message');
      out.push({ groupId, transfer });
      continue;
    }
    const message = readMessage(inner);
    if (!inner.done()) throw new MessageDecodeError('trailing bytes after a message');
    out.push({ groupId, message });
  }
  if (!r.done()) throw new MessageDecodeError('trailing bytes after the frame');
  return out;
}
