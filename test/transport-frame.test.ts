// Wire format pieces without sockets: framing under arbitrary chunking,
// header checks, handshake bodies and proofs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  FRAME_HEADER_BYTES,
  FrameDecoder,
  FrameType,
  ProtocolError,
  decodeDataBody,
  encodeDataFrame,
  encodeFrame,
  messageBytesMaxFor,
} from '../src/transport/frame.js';
import { NONCE_BYTES, computeProof, decodeAuth, decodeHello, encodeAuth, encodeHello, proofMatches } from '../src/transport/handshake.js';

test('frames survive any chunking; messages come back exactly', () => {
  fc.assert(
    fc.property(
      fc.array(fc.array(fc.uint8Array({ maxLength: 300 }), { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 6 }),
      fc.array(fc.integer({ min: 1, max: 97 }), { minLength: 1, maxLength: 20 }),
      (frames, cuts) => {
        const wire = Buffer.concat(frames.map((msgs) => encodeDataFrame(msgs)));
        const decoder = new FrameDecoder(64 * 1024);
        const got: Uint8Array[][] = [];
        let at = 0;
        let i = 0;
        while (at < wire.length) {
          const n = cuts[i++ % cuts.length] ?? 1;
          for (const f of decoder.pushAll(wire.subarray(at, at + n))) {
            assert.equal(f.type, FrameType.Data);
            got.push(decodeDataBody(f.body).map((m) => Uint8Array.from(m)));
          }
          at += n;
        }
        assert.deepEqual(
          got,
          frames.map((msgs) => msgs.map((m) => Uint8Array.from(m))),
        );
        assert.equal(decoder.bufferedBytes, 0);
      },
    ),
    { numRuns: 200, seed: 7 },
  );
});

test('a frame exactly at the limit passes, one byte more is refused from its header alone', () => {
  const limit = 2048;
  const max = messageBytesMaxFor(limit);
  const exact = encodeDataFrame([new Uint8Array(max)]);
  assert.equal(exact.length, limit);
  assert.equal(new FrameDecoder(limit).pushAll(exact).length, 1);
  const over = encodeDataFrame([new Uint8Array(max + 1)]);
  const d = new FrameDecoder(limit);
  assert.throws(
    () => d.pushAll(over.subarray(0, FRAME_HEADER_BYTES)),
    (e: unknown) => e instanceof ProtocolError && /exceeds the limit/.test(e.message),
  );
});

test('garbage is refused at its first byte; bad version, type and reserved bits too', () => {
  assert.throws(() => new FrameDecoder(4096).pushAll(Buffer.from('G')), /bad frame magic/);
  const good = encodeFrame(FrameType.Ping, new Uint8Array(0));
  for (const [offset, value, reason] of [
    [4, 9, /unsupported protocol version 9/],
    [5, 0, /unknown frame type/],
    [5, 200, /unknown frame type/],
    [7, 1, /reserved/],
  ] as const) {
    const bad = Buffer.from(good);
    bad[offset] = value;
    assert.throws(() => new FrameDecoder(4096).pushAll(bad), reason);
  }
});

test('malformed data bodies are refused', () => {
  const body = (...words: number[]): Uint8Array => {
    const b = Buffer.alloc(words.length * 4);
    words.forEach((w, i) => b.writeUInt32BE(w, i * 4));
    return b;
  };
  assert.throws(() => decodeDataBody(new Uint8Array(3)), ProtocolError);
  assert.throws(() => decodeDataBody(body(0xffffffff)), /claims/);
  assert.throws(() => decodeDataBody(body(1, 8)), /truncated/);
  assert.throws(() => decodeDataBody(body(1, 0, 0)), /after its last message/);
  assert.deepEqual(
    decodeDataBody(body(2, 0, 0)).map((m) => m.length),
    [0, 0],
  );
});

test('hello and auth bodies round-trip; truncated or padded ones are refused', () => {
  const nonce = new Uint8Array(NONCE_BYTES).fill(3);
  const hello = { hasSecret: true, nonce, nodeId: 'nœud-1', clusterId: 'prod', proof: new Uint8Array(32).fill(9) };
  const wire = encodeHello(hello);
  assert.deepEqual(decodeHello(wire), hello);
  assert.throws(() => decodeHello(wire.subarray(0, wire.length - 1)), /truncated/);
  assert.throws(() => decodeHello(Buffer.concat([wire, Buffer.of(0)])), /trailing/);
  assert.deepEqual(decodeAuth(encodeAuth(new Uint8Array(0))), new Uint8Array(0));
  assert.throws(() => decodeAuth(Uint8Array.of(5, 1, 2, 3, 4, 5)), /proof of 5 bytes/);
});

test('proofs depend on the secret, the role, both ids and both nonces', () => {
  const ctx = {
    clusterId: 'c',
    dialerId: 'a',
    acceptorId: 'b',
    dialerNonce: new Uint8Array(NONCE_BYTES).fill(1),
    acceptorNonce: new Uint8Array(NONCE_BYTES).fill(2),
  };
  const secret = new TextEncoder().encode('s');
  const base = computeProof(secret, 'dialer', ctx);
  assert.ok(proofMatches(base, computeProof(secret, 'dialer', ctx)));
  const variants = [
    computeProof(new TextEncoder().encode('t'), 'dialer', ctx),
    computeProof(secret, 'acceptor', ctx),
    computeProof(secret, 'dialer', { ...ctx, dialerId: 'x' }),
    computeProof(secret, 'dialer', { ...ctx, acceptorId: 'x' }),
    computeProof(secret, 'dialer', { ...ctx, clusterId: 'x' }),
    computeProof(secret, 'dialer', { ...ctx, dialerNonce: new Uint8Array(NONCE_BYTES) }),
    computeProof(secret, 'dialer', { ...ctx, acceptorNonce: new Uint8Array(NONCE_BYTES) }),
  ];
  for (const v of variants) assert.ok(!proofMatches(base, v));
  // Length prefixes keep id boundaries apart: ids ("ab", "c") are not ("a", "bc").
  assert.ok(
    !proofMatches(
      computeProof(secret, 'dialer', { ...ctx, dialerId: 'ab', acceptorId: 'c' }),
      computeProof(secret, 'dialer', { ...ctx, dialerId: 'a', acceptorId: 'bc' }),
    ),
  );
  assert.ok(!proofMatches(base, new Uint8Array(0)));
});
