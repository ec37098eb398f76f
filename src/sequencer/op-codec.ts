// Binary encoding of ops, so a batch of them can travel as one replicated log
// entry (an opaque byte payload to Raft) and be applied on every replica.
//
// entry := u8 version, u32 count, op*
// op    := u8 tag, fields (keys and byte strings as u32 length + bytes,
//          integers as int64 big-endian, offsets as u32, flags as u8)
//
// A tag, once given, keeps its meaning and layout: entries written before a
// new op kind existed still decode. A new kind takes the next free tag.

import type { SequenceSpec, TokenPolicy, TokenRecord } from './sequence.js';
import type { Op } from './state-machine.js';
import { OrdoError } from '../ordo-error.js';

const ENTRY_VERSION = 1;

const TAG = {
  incrby: 1,
  incrbyfloat: 2,
  set: 3,
  mset: 4,
  del: 5,
  flushall: 6,
  seqcreate: 7,
  adopt: 8,
  seqnext: 9,
  reserve: 10,
  token: 11,
  msetnx: 12,
  append: 13,
  setrange: 14,
  setbit: 15,
} as const;
const CONDITIONS = ['always', 'nx', 'xx'] as const;
const MODES = ['strict', 'window'] as const;

export class OpDecodeError extends OrdoError {
  override readonly code = 'ORDO_ERR_OP_DECODE';
}

class Writer {
  private parts: Buffer[] = [];
  private scratch = Buffer.allocUnsafe(4096);
  private used = 0;

  private room(n: number): void {
    if (this.used + n <= this.scratch.length) return;
    this.parts.push(this.scratch.subarray(0, this.used));
    this.scratch = Buffer.allocUnsafe(Math.max(4096, n));
    this.used = 0;
  }

  u8(v: number): void {
    this.room(1);
    this.scratch[this.used++] = v;
  }

  u32(v: number): void {
    this.room(4);
    this.scratch.writeUInt32BE(v, this.used);
    this.used += 4;
  }

  i64(v: bigint): void {
    this.room(8);
    this.scratch.writeBigInt64BE(v, this.used);
    this.used += 8;
  }

  f64(v: number): void {
    this.room(8);
    this.scratch.writeDoubleBE(v, this.used);
    this.used += 8;
  }

  bytes(b: Buffer): void {
    this.u32(b.length);
    this.room(b.length);
    b.copy(this.scratch, this.used);
    this.used += b.length;
  }

  key(k: string): void {
    this.u32(k.length);
    this.room(k.length);
    this.used += this.scratch.write(k, this.used, 'latin1');
  }

  finish(): Buffer {
    this.parts.push(this.scratch.subarray(0, this.used));
    return this.parts.length === 1 ? (this.parts[0] as Buffer) : Buffer.concat(this.parts);
  }
}

class Reader {
  private offset = 0;
  constructor(private readonly buf: Buffer) {}

  private need(n: number): void {
    if (this.offset + n > this.buf.length) throw new OpDecodeError('entry truncated');
  }

  u8(): number {
    this.need(1);
    return this.buf[this.offset++] as number;
  }

  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.offset);
    this.offset += 4;
    return v;
  }

  i64(): bigint {
    this.need(8);
    const v = this.buf.readBigInt64BE(this.offset);
    this.offset += 8;
    return v;
  }

  f64(): number {
    this.need(8);
    const v = this.buf.readDoubleBE(this.offset);
    this.offset += 8;
    return v;
  }

  bytes(): Buffer {
    const n = this.u32();
    this.need(n);
    const b = Buffer.from(this.buf.subarray(this.offset, this.offset + n));
    this.offset += n;
    return b;
  }

  key(): string {
    const n = this.u32();
    this.need(n);
    const k = this.buf.toString('latin1', this.offset, this.offset + n);
    this.offset += n;
    return k;
  }

  done(): boolean {
    return this.offset === this.buf.length;
  }
}

function writeOp(w: Writer, op: Op): void {
  // Every op type has an encoding: the compiler checks the switch is exhaustive.
  switch (op.type) {
    case 'incrby':
      w.u8(TAG.incrby);
      w.key(op.key);
      w.i64(op.delta);
      return;
    case 'incrbyfloat':
      w.u8(TAG.incrbyfloat);
      w.key(op.key);
      w.bytes(op.increment);
      return;
    case 'set':
      w.u8(TAG.set);
      w.key(op.key);
      w.bytes(op.value);
      w.u8(CONDITIONS.indexOf(op.condition));
      w.u8(op.get ? 1 : 0);
      return;
    case 'mset':
    case 'msetnx':
      w.u8(op.type === 'mset' ? TAG.mset : TAG.msetnx);
      w.u32(op.keys.length);
      op.keys.forEach((k, i) => {
        w.key(k);
        w.bytes(op.values[i] as Buffer);
      });
      return;
    case 'append':
      w.u8(TAG.append);
      w.key(op.key);
      w.bytes(op.value);
      return;
    case 'setrange':
      w.u8(TAG.setrange);
      w.key(op.key);
      w.u32(op.offset);
      w.bytes(op.value);
      return;
    case 'setbit':
      w.u8(TAG.setbit);
      w.key(op.key);
      w.u32(op.offset);
      w.u8(op.bit);
      return;
    case 'del':
      w.u8(TAG.del);
      w.u32(op.keys.length);
      for (const k of op.keys) w.key(k);
      return;
    case 'flushall':
      w.u8(TAG.flushall);
      return;
    case 'seqcreate':
      w.u8(TAG.seqcreate);
      w.key(op.key);
      writeSpec(w, op.spec);
      w.u8(op.replace ? 1 : 0);
      return;
    case 'adopt':
      w.u8(TAG.adopt);
      w.key(op.key);
      writeSpec(w, op.spec);
      return;
    case 'seqnext':
      w.u8(TAG.seqnext);
      w.key(op.key);
      w.i64(op.count);
      w.u8(op.range ? 1 : 0);
      w.u8(op.token === null ? 0 : 1);
      if (op.token !== null) w.key(op.token);
      w.f64(op.nowMs);
      writePolicy(w, op.policy);
      return;
    case 'reserve':
      w.u8(TAG.reserve);
      w.key(op.key);
      w.key(op.id);
      w.i64(op.countMin);
      return;
    case 'token':
      w.u8(TAG.token);
      w.key(op.key);
      w.key(op.token);
      w.i64(op.record.first);
      w.i64(op.record.last);
      w.i64(op.record.count);
      w.u8(op.record.range ? 1 : 0);
      w.f64(op.record.atMs);
      writePolicy(w, op.policy);
      return;
    default: {
      const unknown: never = op;
      throw new Error(`op codec: no encoding for ${JSON.stringify(unknown)}`);
    }
  }
}

function writeSpec(w: Writer, spec: SequenceSpec): void {
  w.key(spec.id);
  w.u8(MODES.indexOf(spec.mode));
  w.i64(spec.start);
  w.i64(spec.step);
  w.i64(spec.max);
  w.i64(spec.windowSize);
}

function readSpec(r: Reader): SequenceSpec {
  const id = r.key();
  const mode = MODES[r.u8()];
  if (mode === undefined) throw new OpDecodeError('bad sequence mode');
  return { id, mode, start: r.i64(), step: r.i64(), max: r.i64(), windowSize: r.i64() };
}

function writePolicy(w: Writer, policy: TokenPolicy): void {
  w.f64(policy.retentionMs);
  w.u32(policy.perKeyMax);
}

function readPolicy(r: Reader): TokenPolicy {
  return { retentionMs: r.f64(), perKeyMax: r.u32() };
}

function readOp(r: Reader): Op {
  const tag = r.u8();
  switch (tag) {
    case TAG.incrby:
      return { type: 'incrby', key: r.key(), delta: r.i64() };
    case TAG.incrbyfloat:
      return { type: 'incrbyfloat', key: r.key(), increment: r.bytes() };
    case TAG.set: {
      const key = r.key();
      const value = r.bytes();
      const condition = CONDITIONS[r.u8()];
      if (condition === undefined) throw new OpDecodeError('bad SET condition');
      return { type: 'set', key, value, condition, get: r.u8() === 1 };
    }
    case TAG.mset:
    case TAG.msetnx: {
      const n = r.u32();
      const keys: string[] = [];
      const values: Buffer[] = [];
      for (let i = 0; i < n; i++) {
        keys.push(r.key());
        values.push(r.bytes());
      }
      return { type: tag === TAG.mset ? 'mset' : 'msetnx', keys, values };
    }
    case TAG.append:
      return { type: 'append', key: r.key(), value: r.bytes() };
    case TAG.setrange: {
      const key = r.key();
      const offset = r.u32();
      return { type: 'setrange', key, offset, value: r.bytes() };
    }
    case TAG.setbit: {
      const key = r.key();
      const offset = r.u32();
      const bit = r.u8();
      if (bit !== 0 && bit !== 1) throw new OpDecodeError('bad SETBIT bit');
      return { type: 'setbit', key, offset, bit };
    }
    case TAG.del: {
      const n = r.u32();
      const keys: string[] = [];
      for (let i = 0; i < n; i++) keys.push(r.key());
      return { type: 'del', keys };
    }
    case TAG.flushall:
      return { type: 'flushall' };
    case TAG.seqcreate: {
      const key = r.key();
      const spec = readSpec(r);
      return { type: 'seqcreate', key, spec, replace: r.u8() === 1 };
    }
    case TAG.adopt: {
      const key = r.key();
      return { type: 'adopt', key, spec: readSpec(r) };
    }
    case TAG.seqnext: {
      const key = r.key();
      const count = r.i64();
      const range = r.u8() === 1;
      const token = r.u8() === 1 ? r.key() : null;
      const nowMs = r.f64();
      return { type: 'seqnext', key, count, range, token, nowMs, policy: readPolicy(r) };
    }
    case TAG.reserve: {
      const key = r.key();
      const id = r.key();
      return { type: 'reserve', key, id, countMin: r.i64() };
    }
    case TAG.token: {
      const key = r.key();
      const token = r.key();
      const record: TokenRecord = { first: r.i64(), last: r.i64(), count: r.i64(), range: r.u8() === 1, atMs: r.f64() };
      return { type: 'token', key, token, record, policy: readPolicy(r) };
    }
    default:
      throw new OpDecodeError(`unknown op tag ${tag}`);
  }
}

/** Encodes a batch of ops as one entry payload. */
export function encodeOps(ops: readonly Op[]): Buffer {
  const w = new Writer();
  w.u8(ENTRY_VERSION);
  w.u32(ops.length);
  for (const op of ops) writeOp(w, op);
  return w.finish();
}

/** Decodes an entry payload; throws OpDecodeError on anything malformed. */
export function decodeOps(payload: Uint8Array): Op[] {
  const r = new Reader(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength));
  const version = r.u8();
  if (version !== ENTRY_VERSION) throw new OpDecodeError(`unknown entry version ${version}`);
  const count = r.u32();
  const ops: Op[] = [];
  for (let i = 0; i < count; i++) ops.push(readOp(r));
  if (!r.done()) throw new OpDecodeError('trailing bytes after the last op');
  return ops;
}
