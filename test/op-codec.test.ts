import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { decodeOps, encodeOps, OpDecodeError } from '../src/sequencer/op-codec.js';
import { StateMachine, type Op } from '../src/sequencer/state-machine.js';
import { BIT_OFFSET_MAX, STRING_BYTES_MAX } from '../src/sequencer/string-ops.js';

const key = fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b).toString('latin1'));
const bytes = fc.uint8Array({ maxLength: 60 }).map((b) => Buffer.from(b));
const int64 = fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n });

// fast-check records have no prototype; spread them into plain objects like the decoder makes.
const plain = <T extends object>(arb: fc.Arbitrary<T>): fc.Arbitrary<T> => arb.map((r) => ({ ...r }));

const spec = plain(
  fc.record({
    id: key,
    mode: fc.constantFrom('strict' as const, 'window' as const),
    start: int64,
    step: fc.bigInt({ min: 1n, max: 1000n }),
    max: int64,
    windowSize: fc.bigInt({ min: 1n, max: 100000n }),
  }),
);
const policy = plain(fc.record({ retentionMs: fc.nat(), perKeyMax: fc.integer({ min: 1, max: 100000 }) }));

const op: fc.Arbitrary<Op> = fc.oneof(
  plain(fc.record({ type: fc.constant('incrby' as const), key, delta: int64 })),
  plain(fc.record({ type: fc.constant('incrbyfloat' as const), key, increment: bytes })),
  plain(
    fc.record({
      type: fc.constant('set' as const),
      key,
      value: bytes,
      condition: fc.constantFrom('always' as const, 'nx' as const, 'xx' as const),
      get: fc.boolean(),
    }),
  ),
  fc.array(fc.tuple(key, bytes), { maxLength: 5 }).map((pairs) => ({ type: 'mset' as const, keys: pairs.map((p) => p[0]), values: pairs.map((p) => p[1]) })),
  fc.array(fc.tuple(key, bytes), { maxLength: 5 }).map((pairs) => ({ type: 'msetnx' as const, keys: pairs.map((p) => p[0]), values: pairs.map((p) => p[1]) })),
  plain(fc.record({ type: fc.constant('append' as const), key, value: bytes })),
  plain(fc.record({ type: fc.constant('setrange' as const), key, offset: fc.integer({ min: 0, max: 100 }), value: bytes })),
  plain(fc.record({ type: fc.constant('setbit' as const), key, offset: fc.integer({ min: 0, max: 1000 }), bit: fc.constantFrom(0 as const, 1 as const) })),
  plain(fc.record({ type: fc.constant('del' as const), keys: fc.array(key, { maxLength: 5 }) })),
  fc.constant({ type: 'flushall' as const }),
  plain(fc.record({ type: fc.constant('seqcreate' as const), key, spec, replace: fc.boolean() })),
  plain(fc.record({ type: fc.constant('adopt' as const), key, spec })),
  plain(
    fc.record({
      type: fc.constant('seqnext' as const),
      key,
      count: fc.bigInt({ min: 1n, max: 1n << 40n }),
      range: fc.boolean(),
      token: fc.option(key, { nil: null }),
      nowMs: fc.nat(),
      policy,
    }),
  ),
  plain(fc.record({ type: fc.constant('reserve' as const), key, id: key, countMin: fc.bigInt({ min: 1n, max: 1n << 40n }) })),
  plain(
    fc.record({
      type: fc.constant('token' as const),
      key,
      token: key,
      record: plain(fc.record({ first: int64, last: int64, count: fc.bigInt({ min: 1n, max: 1n << 40n }), range: fc.boolean(), atMs: fc.nat() })),
      policy,
    }),
  ),
);

describe('op codec', () => {
  it('decodes what it encodes, for any batch of ops', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 30 }), (ops) => {
        assert.deepEqual(decodeOps(encodeOps(ops)), ops);
      }),
      { numRuns: 500 },
    );
  });

  it('a replica applying the decoded entry ends in the same state as the leader', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 30 }), (ops) => {
        const leader = new StateMachine();
        const replica = new StateMachine();
        const leaderResults = ops.map((o) => leader.apply(o));
        const replicaResults = decodeOps(encodeOps(ops)).map((o) => replica.apply(o));
        assert.deepEqual(replicaResults, leaderResults);
        assert.deepEqual([...replica.entries()].sort(), [...leader.entries()].sort());
      }),
      { numRuns: 300 },
    );
  });

  it('offsets up to the string limit survive the trip', () => {
    const ops: Op[] = [
      { type: 'setrange', key: 'r', offset: STRING_BYTES_MAX, value: Buffer.from('x') },
      { type: 'setbit', key: 'b', offset: BIT_OFFSET_MAX, bit: 1 },
    ];
    assert.deepEqual(decodeOps(encodeOps(ops)), ops);
  });

  // Entries in logs written before an op kind was added must decode as they always did: these bytes are fixed.
  it('decodes entries encoded before the string ops existed, byte for byte', () => {
    const old = Buffer.from(
      [
        [1, 0, 0, 0, 3],
        [1, 0, 0, 0, 1, 0x6b, 0, 0, 0, 0, 0, 0, 0, 5], // incrby k 5
        [3, 0, 0, 0, 1, 0x73, 0, 0, 0, 2, 0x68, 0x69, 1, 0], // set s hi NX
        [4, 0, 0, 0, 1, 0, 0, 0, 1, 0x6d, 0, 0, 0, 1, 0x76], // mset m v
      ].flat(),
    );
    assert.deepEqual(decodeOps(old), [
      { type: 'incrby', key: 'k', delta: 5n },
      { type: 'set', key: 's', value: Buffer.from('hi'), condition: 'nx', get: false },
      { type: 'mset', keys: ['m'], values: [Buffer.from('v')] },
    ]);
    assert.deepEqual(encodeOps(decodeOps(old)), old);
  });

  it('fixes the bytes of the string ops', () => {
    const entry = encodeOps([
      { type: 'msetnx', keys: ['a'], values: [Buffer.from('1')] },
      { type: 'append', key: 'a', value: Buffer.from('x') },
      { type: 'setrange', key: 'a', offset: 258, value: Buffer.from('y') },
      { type: 'setbit', key: 'a', offset: 7, bit: 1 },
    ]);
    const expected = [
      [1, 0, 0, 0, 4],
      [12, 0, 0, 0, 1, 0, 0, 0, 1, 0x61, 0, 0, 0, 1, 0x31],
      [13, 0, 0, 0, 1, 0x61, 0, 0, 0, 1, 0x78],
      [14, 0, 0, 0, 1, 0x61, 0, 0, 1, 2, 0, 0, 0, 1, 0x79],
      [15, 0, 0, 0, 1, 0x61, 0, 0, 0, 7, 1],
    ].flat();
    assert.deepEqual([...entry], expected);
    assert.throws(() => decodeOps(Buffer.from([1, 0, 0, 0, 1, 15, 0, 0, 0, 1, 0x61, 0, 0, 0, 7, 2])), /bad SETBIT bit/);
  });

  it('refuses truncated, trailing and unknown input', () => {
    const entry = encodeOps([{ type: 'incrby', key: 'k', delta: 5n }]);
    assert.throws(() => decodeOps(entry.subarray(0, entry.length - 1)), OpDecodeError);
    assert.throws(() => decodeOps(Buffer.concat([entry, Buffer.from([0])])), OpDecodeError);
    assert.throws(() => decodeOps(Buffer.from([9, 0, 0, 0, 0])), /unknown entry version 9/);
    assert.throws(() => decodeOps(Buffer.from([1, 0, 0, 0, 1, 77])), /unknown op tag 77/);
  });

  it('encodes a large batch (10000 increments) in one entry', () => {
    const ops: Op[] = Array.from({ length: 10000 }, (_, i) => ({ type: 'incrby', key: `counter:${i % 100}`, delta: 1n }));
    const decoded = decodeOps(encodeOps(ops));
    assert.equal(decoded.length, 10000);
    assert.deepEqual(decoded[9999], ops[9999]);
  });
});
