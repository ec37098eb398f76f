// Bodies of the handshake frames and the HMAC proofs (see docs/transport.md,
// "Handshake"). Pure functions over bytes; the sequence of frames is driven
// by tcp.ts.
//
//   Hello:  u8 flags (bit 0: the sender has a cluster secret)
//           32 bytes nonce
//           u8 length + node id (UTF-8)
//           u8 length + cluster id (UTF-8)
//           u8 length + proof (0 or 32 bytes)
//   Auth:   u8 length + proof (0 or 32 bytes)
//   Refuse: reason (UTF-8, at most REFUSE_REASON_BYTES_MAX bytes)
//   Welcome: empty

import assert from 'node:assert/strict';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { ProtocolError } from './frame.js';

export const NONCE_BYTES = 32;
export const PROOF_BYTES = 32;
/** Node ids and cluster ids travel with a one-byte length. */
export const ID_BYTES_MAX = 255;
export const REFUSE_REASON_BYTES_MAX = 512;

const FLAG_HAS_SECRET = 1;

export interface Hello {
  readonly hasSecret: boolean;
  readonly nonce: Uint8Array;
  readonly nodeId: string;
  readonly clusterId: string;
  /** Empty in the dialer's Hello; the acceptor's proof when it has a secret. */
  readonly proof: Uint8Array;
}

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

/** Throws a RangeError unless `id` is a usable node or cluster id. */
export function checkId(what: string, id: string): void {
  const n = utf8.encode(id).length;
  if (n === 0 || n > ID_BYTES_MAX) throw new RangeError(`${what} must be 1 to ${ID_BYTES_MAX} bytes of UTF-8, got ${n}`);
}

export function encodeHello(h: Hello): Uint8Array {
  assert.equal(h.nonce.length, NONCE_BYTES);
  assert.ok(h.proof.length === 0 || h.proof.length === PROOF_BYTES);
  const id = utf8.encode(h.nodeId);
  const cluster = utf8.encode(h.clusterId);
  assert.ok(id.length > 0 && id.length <= ID_BYTES_MAX);
  assert.ok(cluster.length > 0 && cluster.length <= ID_BYTES_MAX);
  const out = new Uint8Array(1 + NONCE_BYTES + 1 + id.length + 1 + cluster.length + 1 + h.proof.length);
  let at = 0;
  out[at++] = h.hasSecret ? FLAG_HAS_SECRET : 0;
  out.set(h.nonce, at);
  at += NONCE_BYTES;
  out[at++] = id.length;
  out.set(id, at);
  at += id.length;
  out[at++] = cluster.length;
  out.set(cluster, at);
  at += cluster.length;
  out[at++] = h.proof.length;
  out.set(h.proof, at);
  at += h.proof.length;
  assert.equal(at, out.length);
  return out;
}

class Reader {
  private at = 0;
  constructor(
    private readonly bytes: Uint8Array,
    private readonly what: string,
  ) {}
  u8(): number {
    const v = this.bytes[this.at];
    if (v === undefined) throw new ProtocolError(`${this.what} truncated`);
    this.at++;
    return v;
  }
  take(n: number): Uint8Array {
    if (this.at + n > this.bytes.length) throw new ProtocolError(`${this.what} truncated`);
    const out = this.bytes.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }
  text(): string {
    const raw = this.take(this.u8());
    try {
      return utf8Strict.decode(raw);
    } catch {
      throw new ProtocolError(`${this.what} has an id that is not UTF-8`);
    }
  }
  proof(): Uint8Array {
    const n = this.u8();
    if (n !== 0 && n !== PROOF_BYTES) throw new ProtocolError(`${this.what} has a proof of ${n} bytes`);
    return this.take(n);
  }
  end(): void {
    if (this.at !== this.bytes.length) throw new ProtocolError(`${this.what} has trailing bytes`);
  }
}

export function decodeHello(body: Uint8Array): Hello {
  const r = new Reader(body, 'hello');
  const flags = r.u8();
  if ((flags & ~FLAG_HAS_SECRET) !== 0) throw new ProtocolError('hello has unknown flags');
  const nonce = r.take(NONCE_BYTES);
  const nodeId = r.text();
  const clusterId = r.text();
  const proof = r.proof();
  r.end();
  if (nodeId.length === 0 || clusterId.length === 0) throw new ProtocolError('hello has an empty id');
  return { hasSecret: (flags & FLAG_HAS_SECRET) !== 0, nonce, nodeId, clusterId, proof };
}

export function encodeAuth(proof: Uint8Array): Uint8Array {
  assert.ok(proof.length === 0 || proof.length === PROOF_BYTES);
  const out = new Uint8Array(1 + proof.length);
  out[0] = proof.length;
  out.set(proof, 1);
  return out;
}

export function decodeAuth(body: Uint8Array): Uint8Array {
  const r = new Reader(body, 'auth');
  const proof = r.proof();
  r.end();
  return proof;
}

export function encodeRefuse(reason: string): Uint8Array {
  const bytes = utf8.encode(reason);
  return bytes.length <= REFUSE_REASON_BYTES_MAX ? bytes : bytes.subarray(0, REFUSE_REASON_BYTES_MAX);
}

export function decodeRefuse(body: Uint8Array): string {
  // Shown in logs only: replace anything unprintable.
  const text = new TextDecoder('utf-8').decode(body.subarray(0, REFUSE_REASON_BYTES_MAX));
  return text.replace(/[^\x20-\x7e]/g, '?');
}

export type ProofRole = 'dialer' | 'acceptor';

export interface ProofContext {
  readonly clusterId: string;
  readonly dialerId: string;
  readonly acceptorId: string;
  readonly dialerNonce: Uint8Array;
  readonly acceptorNonce: Uint8Array;
}

/**
 * HMAC-SHA256 keyed with the cluster secret over the role, both ids, the
 * cluster id and both nonces. The role label keeps one side's proof from
 * being reflected back as the other's; the nonces keep it from being replayed.
 */
export function computeProof(secret: Uint8Array, role: ProofRole, ctx: ProofContext): Uint8Array {
  assert.equal(ctx.dialerNonce.length, NONCE_BYTES);
  assert.equal(ctx.acceptorNonce.length, NONCE_BYTES);
  const h = createHmac('sha256', secret);
  h.update(utf8.encode(`ordo-bus/1/${role}`));
  for (const s of [ctx.clusterId, ctx.dialerId, ctx.acceptorId]) {
    const b = utf8.encode(s);
    h.update(Uint8Array.of(b.length));
    h.update(b);
  }
  h.update(ctx.dialerNonce);
  h.update(ctx.acceptorNonce);
  const out = new Uint8Array(h.digest());
  assert.equal(out.length, PROOF_BYTES);
  return out;
}

export function proofMatches(expected: Uint8Array, got: Uint8Array): boolean {
  return got.length === expected.length && timingSafeEqual(expected, got);
}
