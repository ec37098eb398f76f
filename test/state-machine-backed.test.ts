// The state machine reading through to a backing (the keyspace as of the last
// durable checkpoint), against the same state machine holding everything in
// memory: random ops, checkpoints begun, made durable and acknowledged at
// random moments (a FLUSHALL may fall between), and every read compared
// after every step: values, tokens, DBSIZE, KEYS, every SCAN step, snapshots.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { MemoryKeyspaceBacking, scanHash } from '../src/sequencer/backing.js';
import { restoreState, snapshotState } from '../src/sequencer/codec.js';
import { DEFAULT_TOKEN_POLICY, type SequenceSpec } from '../src/sequencer/sequence.js';
import { StateMachine, type ChangeSet, type Op } from '../src/sequencer/state-machine.js';

/** Two keys with the same scan hash (found by search), so SCAN's "all keys of a hash together" is exercised. */
function collidingPair(): [string, string] {
  const seen = new Map<number, string>();
  for (let i = 0; ; i++) {
    const key = `c${i}`;
    const h = scanHash(key);
    const other = seen.get(h);
    if (other !== undefined) return [other, key];
    seen.set(h, key);
  }
}

const [COLLIDE_A, COLLIDE_B] = collidingPair();
const KEYS = ['a', 'b', 'c', 'd', 'e', '', 'x'.repeat(300), COLLIDE_A, COLLIDE_B];
const key = fc.constantFrom(...KEYS);
const b = (s: string): Buffer => Buffer.from(s, 'latin1');

const spec = (id: string, mode: 'strict' | 'window'): SequenceSpec => ({ id, mode, start: 1n, step: 2n, max: 1000n, windowSize: 5n });

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ type: fc.constant('incrby' as const), key, delta: fc.bigInt(-3n, 5n) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      type: fc.constant('set' as const),
      key,
      value: fc.constantFrom(b('7'), b('x'), b('1.5'), b('')),
      condition: fc.constantFrom('always' as const, 'nx' as const, 'xx' as const),
      get: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.array(key, { minLength: 1, maxLength: 3 }).map((keys): Op => ({ type: 'mset', keys, values: keys.map((_, i) => b(String(i))) })),
  },
  { weight: 3, arbitrary: fc.array(key, { minLength: 1, maxLength: 3 }).map((keys): Op => ({ type: 'del', keys })) },
  { weight: 1, arbitrary: fc.constant<Op>({ type: 'flushall' }) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(key, fc.constantFrom('s1', 's2'), fc.constantFrom('strict' as const, 'window' as const), fc.boolean())
      .map(([k, id, mode, replace]): Op => ({ type: 'seqcreate', key: k, spec: spec(id, mode), replace })),
  },
  { weight: 1, arbitrary: key.map((k): Op => ({ type: 'adopt', key: k, spec: spec('s3', 'window') })) },
  {
    weight: 3,
    arbitrary: fc.tuple(key, fc.bigInt(1n, 3n), fc.option(fc.constantFrom('t1', 't2'), { nil: null })).map(([k, count, token]): Op => ({
      type: 'seqnext',
      key: k,
      count,
      range: count > 1n,
      token,
      nowMs: 1000,
      policy: DEFAULT_TOKEN_POLICY,
    })),
  },
  {
    weight: 1,
    arbitrary: fc.tuple(key, fc.constantFrom('s1', 's2', 's3')).map(([k, id]): Op => ({ type: 'reserve', key: k, id, countMin: 2n })),
  },
  {
    weight: 1,
    arbitrary: fc.tuple(key, fc.constantFrom('t1', 't3')).map(([k, token]): Op => ({
      type: 'token',
      key: k,
      token,
      record: { first: 1n, last: 2n, count: 2n, range: true, atMs: 1000 },
      policy: DEFAULT_TOKEN_POLICY,
    })),
  },
);

/** A step: an op, or one move of the checkpoint cycle (begin, make durable, acknowledge). */
type Step = { readonly op: Op } | { readonly checkpoint: true } | { readonly scanCount: number };
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 6, arbitrary: opArb.map((op): Step => ({ op })) },
  { weight: 3, arbitrary: fc.constant<Step>({ checkpoint: true }) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 4 }).map((scanCount): Step => ({ scanCount })) },
);

/** Every SCAN step from cursor 0 with `count`, as [cursor, keys] pairs. */
function scanSteps(sm: StateMachine, count: number): [number, string[]][] {
  const steps: [number, string[]][] = [];
  let cursor = 0;
  do {
    const step = sm.scan(cursor, count);
    steps.push([cursor, step.keys]);
    cursor = step.next;
    assert.ok(steps.length < 1000, 'scan terminates');
  } while (cursor !== 0);
  return steps;
}

function sameView(backed: StateMachine, plain: StateMachine, scanCount: number): void {
  assert.equal(backed.size, plain.size, 'DBSIZE');
  const plainKeys = [...plain.keys()].sort();
  assert.deepEqual([...backed.keys()].sort(), plainKeys, 'KEYS');
  for (const k of KEYS) {
    assert.deepEqual(backed.getValue(k), plain.getValue(k), `value of ${k}`);
    assert.equal(backed.has(k), plain.has(k));
  }
  assert.deepEqual(new Map(backed.entries()), new Map(plain.entries()), 'entries');
  assert.deepEqual(new Map(backed.tokenEntries()), new Map(plain.tokenEntries()), 'tokens');
  assert.deepEqual(scanSteps(backed, scanCount), scanSteps(plain, scanCount), 'SCAN steps');
  // A snapshot of the backed state machine restores to the same state.
  const restored = new StateMachine();
  restoreState(restored, snapshotState(backed));
  assert.deepEqual(new Map(restored.entries()), new Map(plain.entries()), 'snapshot of the backed state machine');
  assert.deepEqual(new Map(restored.tokenEntries()), new Map(plain.tokenEntries()));
}

describe('StateMachine with a backing', () => {
  it('answers every op and read as the in-memory state machine does, checkpoints at random moments', () => {
    fc.assert(
      fc.property(fc.array(stepArb, { maxLength: 120 }), (steps) => {
        const backing = new MemoryKeyspaceBacking();
        const backed = new StateMachine(backing);
        const plain = new StateMachine();
        // The checkpoint cycle: taken (in flight), then written to the backing, then acknowledged.
        let taken: ChangeSet | null = null;
        let written = false;
        let scanCount = 2;
        for (const step of steps) {
          if ('op' in step) {
            assert.deepEqual(
              backed.apply(step.op),
              plain.apply(step.op),
              JSON.stringify(step.op, (_, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v)),
            );
          } else if ('scanCount' in step) {
            scanCount = step.scanCount;
          } else if (taken === null) {
            taken = backed.beginCheckpoint();
          } else if (!written) {
            backing.write(taken);
            written = true;
          } else {
            backed.checkpointed(taken);
            taken = null;
            written = false;
          }
          sameView(backed, plain, scanCount);
        }
        // Finish the cycle and checkpoint everything: the overlay empties, the backing holds it all.
        if (taken !== null) {
          if (!written) backing.write(taken);
          backed.checkpointed(taken);
        }
        const last = backed.beginCheckpoint();
        backing.write(last);
        backed.checkpointed(last);
        assert.equal(backed.keysInMemory, 0, 'nothing left in memory after a checkpoint with no write since');
        assert.equal(backing.count, plain.size);
        sameView(backed, plain, scanCount);
        // A new state machine over the backing alone sees the same keyspace (a restart).
        sameView(new StateMachine(backing), plain, scanCount);
      }),
      { numRuns: 300 },
    );
  });

  it('keeps in memory only what changed since the last durable checkpoint', () => {
    const backing = new MemoryKeyspaceBacking();
    const sm = new StateMachine(backing);
    for (let i = 0; i < 100; i++) sm.apply({ type: 'incrby', key: `k${i}`, delta: 1n });
    assert.equal(sm.keysInMemory, 100);
    const c = sm.beginCheckpoint();
    sm.apply({ type: 'incrby', key: 'k0', delta: 1n }); // changed while the checkpoint is in flight: kept
    backing.write(c);
    sm.checkpointed(c);
    assert.equal(sm.keysInMemory, 1);
    assert.equal(sm.size, 100);
    assert.equal(sm.getValue('k0'), 2n);
    assert.equal(sm.getValue('k5'), 1n);
    sm.apply({ type: 'del', keys: ['k5'] });
    assert.equal(sm.keysInMemory, 2, 'a tombstone hides the backing value');
    assert.equal(sm.getValue('k5'), undefined);
    assert.equal(sm.size, 99);
  });

  it('a FLUSHALL while a checkpoint is in flight: what it wrote no longer counts', () => {
    const backing = new MemoryKeyspaceBacking();
    const sm = new StateMachine(backing);
    sm.apply({ type: 'incrby', key: 'a', delta: 1n });
    sm.apply({ type: 'incrby', key: 'b', delta: 1n });
    const c = sm.beginCheckpoint();
    sm.apply({ type: 'flushall' });
    sm.apply({ type: 'incrby', key: 'a', delta: 1n }); // 1n again: the same value the checkpoint wrote
    backing.write(c);
    sm.checkpointed(c);
    assert.equal(sm.getValue('a'), 1n);
    assert.equal(sm.getValue('b'), undefined, 'b was flushed');
    assert.equal(sm.size, 1);
    assert.deepEqual([...sm.keys()], ['a']);
    const d = sm.beginCheckpoint();
    assert.equal(d.cleared, true);
    backing.write(d);
    sm.checkpointed(d);
    assert.equal(sm.keysInMemory, 0);
    assert.equal(backing.count, 1);
    assert.equal(sm.getValue('b'), undefined);
  });

  it('restores a snapshot into the overlay, written by the next checkpoint', () => {
    const source = new StateMachine();
    for (let i = 0; i < 10; i++) source.apply({ type: 'incrby', key: `s${i}`, delta: BigInt(i + 1) });
    const backing = new MemoryKeyspaceBacking();
    const sm = new StateMachine(backing);
    sm.apply({ type: 'incrby', key: 'old', delta: 1n });
    const c0 = sm.beginCheckpoint();
    backing.write(c0);
    sm.checkpointed(c0);
    restoreState(sm, snapshotState(source));
    assert.equal(sm.size, 10);
    assert.equal(sm.getValue('old'), undefined);
    const c = sm.beginCheckpoint();
    assert.equal(c.cleared, true);
    backing.write(c);
    sm.checkpointed(c);
    assert.equal(backing.count, 10);
    assert.equal(sm.keysInMemory, 0);
    assert.equal(sm.getValue('s9'), 10n);
  });
});
