// Wire format of the bus: every frame is a 12-byte header and a body.
//
//   offset  size  field
//   0       4     magic "ORDB" (0x4f 0x52 0x44 0x42)
//   4       1     protocol version (PROTOCOL_VERSION)
//   5       1     frame type (FrameType)
//   6       2     reserved, must be 0
//   8       4     body length in bytes, unsigned big-endian
//   12      n     body
//
// A data frame's body is a message count (u32) followed by that many
// messages, each a u32 length and that many bytes. All integers big-endian.
// No sockets here: bytes in, frames out.

import assert from 'node:assert/strict';
import { OrdoError } from '../ordo-error.js';

export const FRAME_MAGIC = Uint8Array.of(0x4f, 0x52, 0x44, 0x42);
export const PROTOCOL_VERSION = 1;
export const FRAME_HEADER_BYTES = 12;
/** Bytes a data frame spends on its message count. */
export const DATA_BODY_HEADER_BYTES = 4;
/** Bytes each message costs in a data frame besides its payload (its length). */
export const MESSAGE_OVERHEAD_BYTES = 4;

/** Default largest frame (header and body) a node sends or accepts after the handshake. */
export const DEFAULT_FRAME_BYTES_MAX = 16 * 1024 * 1024;
/** Largest frame accepted before the handshake completes: handshake frames are small. */
export const HANDSHAKE_FRAME_BYTES_MAX = 4096;
/** Smallest frame limit that can be configured. */
export const FRAME_BYTES_MAX_FLOOR = 1024;
/** The length field is a u32. */
export const FRAME_BYTES_MAX_CEILING = 0xffff_ffff;

export const FrameType = {
  Hello: 1,
  Auth: 2,
  Welcome: 3,
  Refuse: 4,
  Data: 5,
  Ping: 6,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

const FRAME_TYPES: ReadonlySet<number> = new Set(Object.values(FrameType));

export interface Frame {
  readonly type: FrameType;
  readonly body: Uint8Array;
}

/** The largest payload a single message may have under a frame limit. */
export function messageBytesMaxFor(frameBytesMax: number): number {
  return frameBytesMax - FRAME_HEADER_BYTES - DATA_BODY_HEADER_BYTES - MESSAGE_OVERHEAD_BYTES;
}

export function encodeFrame(type: FrameType, body: Uint8Array): Buffer {
  assert.ok(body.length <= FRAME_BYTES_MAX_CEILING - FRAME_HEADER_BYTES, 'frame body too long');
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + body.length);
  out.set(FRAME_MAGIC, 0);
  out[4] = PROTOCOL_VERSION;
  out[5] = type;
  out.writeUInt16BE(0, 6);
  out.writeUInt32BE(body.length, 8);
  out.set(body, FRAME_HEADER_BYTES);
  return out;
}

/** Size of the data frame that carries messages of these payload sizes. */
export function dataFrameBytes(payloadBytes: number, messages: number): number {
  return FRAME_HEADER_BYTES + DATA_BODY_HEADER_BYTES + payloadBytes + messages * MESSAGE_OVERHEAD_BYTES;
}

/** One data frame carrying `messages` in order. */
export function encodeDataFrame(messages: readonly Uint8Array[]): Buffer {
  let payloadBytes = 0;
  for (const m of messages) payloadBytes += m.length;
  const total = dataFrameBytes(payloadBytes, messages.length);
  assert.ok(total <= FRAME_BYTES_MAX_CEILING, 'data frame too long');
  const out = Buffer.allocUnsafe(total);
  out.set(FRAME_MAGIC, 0);
  out[4] = PROTOCOL_VERSION;
  out[5] = FrameType.Data;
  out.writeUInt16BE(0, 6);
  out.writeUInt32BE(total - FRAME_HEADER_BYTES, 8);
  out.writeUInt32BE(messages.length, FRAME_HEADER_BYTES);
  let at = FRAME_HEADER_BYTES + DATA_BODY_HEADER_BYTES;
  for (const m of messages) {
    out.writeUInt32BE(m.length, at);
    at += MESSAGE_OVERHEAD_BYTES;
    out.set(m, at);
    at += m.length;
  }
  assert.equal(at, total);
  return out;
}

export class ProtocolError extends OrdoError {
  override readonly code = 'ORDO_ERR_BUS_PROTOCOL';
}

/** The messages of a data frame's body (views into it, no copies). Throws ProtocolError if malformed. */
export function decodeDataBody(body: Uint8Array): Uint8Array[] {
  if (body.length < DATA_BODY_HEADER_BYTES) throw new ProtocolError('data frame shorter than its message count');
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const count = view.getUint32(0);
  // Every message costs at least its length field: reject absurd counts before looping.
  if (count > (body.length - DATA_BODY_HEADER_BYTES) / MESSAGE_OVERHEAD_BYTES) {
    throw new ProtocolError(`data frame claims ${count} messages in ${body.length} bytes`);
  }
  const out: Uint8Array[] = [];
  let at = DATA_BODY_HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    if (at + MESSAGE_OVERHEAD_BYTES > body.length) throw new ProtocolError('data frame truncated in a message length');
    const len = view.getUint32(at);
    at += MESSAGE_OVERHEAD_BYTES;
    if (len > body.length - at) throw new ProtocolError('data frame truncated in a message');
    out.push(body.subarray(at, at + len));
    at += len;
  }
  if (at !== body.length) throw new ProtocolError(`data frame has ${body.length - at} bytes after its last message`);
  return out;
}

/**
 * Incremental frame decoder. push() socket chunks, then take frames with
 * next() one at a time, so the limit can change between two frames of the
 * same chunk (it is raised when the handshake completes). It never holds
 * more than one frame (at most the limit) plus the rest of the last chunk.
 * A bad header throws ProtocolError; the caller closes the connection.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Body length of the frame being assembled, once its header is complete. */
  private bodyBytes = -1;

  constructor(private frameBytesMax: number) {}

  setLimit(frameBytesMax: number): void {
    this.frameBytesMax = frameBytesMax;
  }

  get bufferedBytes(): number {
    return this.buffered;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /** The next complete frame, or null until more bytes arrive. */
  next(): Frame | null {
    if (this.bodyBytes < 0) {
      if (this.buffered < FRAME_HEADER_BYTES) {
        // Check what has arrived of the magic early so garbage is refused at once.
        if (this.buffered > 0) this.checkMagicPrefix();
        return null;
      }
      this.bodyBytes = parseHeader(this.peek(FRAME_HEADER_BYTES), this.frameBytesMax);
    }
    const total = FRAME_HEADER_BYTES + this.bodyBytes;
    if (this.buffered < total) return null;
    const whole = this.take(total);
    this.bodyBytes = -1;
    return { type: whole[5] as FrameType, body: whole.subarray(FRAME_HEADER_BYTES) };
  }

  /** push() then every complete frame (for callers that do not change the limit mid-chunk). */
  pushAll(chunk: Buffer): Frame[] {
    this.push(chunk);
    const out: Frame[] = [];
    for (let f = this.next(); f !== null; f = this.next()) out.push(f);
    return out;
  }

  private checkMagicPrefix(): void {
    const n = Math.min(this.buffered, FRAME_MAGIC.length);
    const head = this.peek(n);
    for (let i = 0; i < n; i++) {
      if (head[i] !== FRAME_MAGIC[i]) throw new ProtocolError('bad frame magic (not an ordo bus peer?)');
    }
  }

  /** The first n buffered bytes, without consuming them. */
  private peek(n: number): Buffer {
    assert.ok(n <= this.buffered);
    const first = this.chunks[0];
    assert.ok(first !== undefined);
    if (first.length >= n) return first.subarray(0, n);
    // Join just enough leading chunks to cover n bytes.
    let count = 0;
    let bytes = 0;
    while (bytes < n) {
      const c = this.chunks[count];
      assert.ok(c !== undefined);
      bytes += c.length;
      count++;
    }
    const joined = Buffer.concat(this.chunks.slice(0, count), bytes);
    this.chunks.splice(0, count, joined);
    return joined.subarray(0, n);
  }

  /** Consume the first n buffered bytes. */
  private take(n: number): Buffer {
    assert.ok(n <= this.buffered);
    let out: Buffer;
    const first = this.chunks[0];
    assert.ok(first !== undefined);
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      const parts: Buffer[] = [];
      let need = n;
      while (need > 0) {
        const c = this.chunks[0];
        assert.ok(c !== undefined);
        if (c.length <= need) {
          parts.push(c);
          this.chunks.shift();
          need -= c.length;
        } else {
          parts.push(c.subarray(0, need));
          this.chunks[0] = c.subarray(need);
          need = 0;
        }
      }
      out = Buffer.concat(parts, n);
    }
    this.buffered -= n;
    return out;
  }
}

/** Validate a frame header and return its body length. */
export function parseHeader(header: Uint8Array, frameBytesMax: number): number {
  assert.ok(header.length >= FRAME_HEADER_BYTES);
  for (let i = 0; i < FRAME_MAGIC.length; i++) {
    if (header[i] !== FRAME_MAGIC[i]) throw new ProtocolError('bad frame magic (not an ordo bus peer?)');
  }
  const version = header[4];
  if (version !== PROTOCOL_VERSION) {
    throw new ProtocolError(`unsupported protocol version ${String(version)} (this node speaks ${PROTOCOL_VERSION})`);
  }
  const type = header[5];
  if (type === undefined || !FRAME_TYPES.has(type)) throw new ProtocolError(`unknown frame type ${String(type)}`);
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  if (view.getUint16(6) !== 0) throw new ProtocolError('reserved header bits set');
  const bodyBytes = view.getUint32(8);
  if (FRAME_HEADER_BYTES + bodyBytes > frameBytesMax) {
    throw new ProtocolError(`frame of ${FRAME_HEADER_BYTES + bodyBytes} bytes exceeds the limit of ${frameBytesMax}`);
  }
  return bodyBytes;
}
