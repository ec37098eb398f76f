// Sequences without a server: the state machine's sequence ops (SEQCREATE,
// adopt, SEQNEXT, reserve, token), their snapshot round trip, and the window
// allocator driven by a single-voter group over an in-memory store.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { LocalGroup } from './helpers/local-group.js';
import { WindowAllocator, type Allocation } from '../src/multiraft/window.js';
import { encodeValue, restoreState, snapshotState } from '../src/sequencer/codec.js';
import { INT64_MAX } from '../src/sequencer/numbers.js';
import { isSequence, type Sequence, type SequenceSpec, type TokenPolicy } from '../src/sequencer/sequence.js';
import { StateMachine, type Op, type OpResult } from '../src/sequencer/state-machine.js';
import { PersistError } from '../src/storage/store.js';
import { MemoryStore } from './helpers/local-group.js';

const POLICY: TokenPolicy = { retentionMs: 10 * 60 * 1000, perKeyMax: 10_000 };

function spec(overrides: Partial<SequenceSpec> = {}): SequenceSpec {
  return { id: 'seq-1', mode: 'strict', start: 1n, step: 1n, max: INT64_MAX, windowSize: 10n, ...overrides };
}

function create(sm: StateMachine, key: string, overrides: Partial<SequenceSpec> = {}): void {
  assert.deepEqual(sm.apply({ type: 'seqcreate', key, spec: spec(overrides), replace: false }), { type: 'ok' });
}

interface NextOptions {
  count?: bigint;
  range?: boolean;
  token?: string | null;
  nowMs?: number;
  policy?: TokenPolicy;
}

function seqnext(sm: StateMachine, key: string, o: NextOptions = {}): OpResult {
  const count = o.count ?? 1n;
  return sm.apply({
    type: 'seqnext',
    key,
    count,
    range: o.range ?? o.count !== undefined,
    token: o.token ?? null,
    nowMs: o.nowMs ?? 1_000,
    policy: o.policy ?? POLICY,
  });
}

const int = (value: bigint): OpResult => ({ type: 'int', value });
const range = (first: bigint, last: bigint): OpResult => ({ type: 'range', first, last });
const error = (e: string): OpResult => ({ type: 'error', error: e }) as OpResult;

function sequenceAt(sm: StateMachine, key: string): Sequence {
  const value = sm.getValue(key);
  assert.ok(isSequence(value), `${key} holds a sequence`);
  return value;
}

describe('state machine: SEQCREATE', () => {
  it('creates with defaults and refuses an existing key unless REPLACE', () => {
    const sm = new StateMachine();
    create(sm, 's');
    const seq = sequenceAt(sm, 's');
    assert.equal(seq.mode, 'strict');
    assert.equal(seq.start, 1n);
    assert.equal(seq.step, 1n);
    assert.equal(seq.max, INT64_MAX);
    assert.equal(seq.current, null);
    assert.deepEqual(sm.apply({ type: 'seqcreate', key: 's', spec: spec(), replace: false }), error('seqExists'));
    sm.apply({ type: 'incrby', key: 'plain', delta: 5n });
    assert.deepEqual(sm.apply({ type: 'seqcreate', key: 'plain', spec: spec(), replace: false }), error('seqExists'));
    assert.equal(sm.getValue('plain'), 5n, 'a refused SEQCREATE leaves the key alone');
  });

  it('REPLACE starts over and forgets the tokens of the old sequence', () => {
    const sm = new StateMachine();
    create(sm, 's');
    assert.deepEqual(seqnext(sm, 's', { count: 3n, token: 't' }), range(1n, 3n));
    const replaced = sm.apply({ type: 'seqcreate', key: 's', spec: spec({ id: 'seq-2', start: 100n }), replace: true });
    assert.deepEqual(replaced, { type: 'ok' });
    assert.equal([...sm.tokenEntries()].length, 0);
    assert.deepEqual(seqnext(sm, 's', { count: 3n, token: 't' }), range(100n, 102n), 'the token belongs to the old sequence');
  });
});

describe('state machine: SEQNEXT', () => {
  it('hands out values by START and STEP, one or COUNT at once', () => {
    const sm = new StateMachine();
    create(sm, 's', { start: 10n, step: 5n });
    assert.deepEqual(seqnext(sm, 's'), int(10n));
    assert.deepEqual(seqnext(sm, 's', { count: 3n }), range(15n, 25n));
    assert.deepEqual(seqnext(sm, 's'), int(30n));
    assert.equal(sequenceAt(sm, 's').current, 30n);
    assert.equal(sm.getBytes('s')?.toString(), '30');
  });

  it('negative START works', () => {
    const sm = new StateMachine();
    create(sm, 's', { start: -2n });
    assert.deepEqual(seqnext(sm, 's', { count: 3n }), range(-2n, 0n));
  });

  it('an allocation that would pass MAX fails whole and allocates nothing', () => {
    const sm = new StateMachine();
    create(sm, 's', { max: 10n, step: 2n });
    assert.deepEqual(seqnext(sm, 's', { count: 4n }), range(1n, 7n));
    assert.deepEqual(seqnext(sm, 's', { count: 2n }), error('seqMax'));
    assert.equal(sequenceAt(sm, 's').current, 7n, 'nothing allocated');
    assert.deepEqual(seqnext(sm, 's'), int(9n), 'a smaller request still fits');
    assert.deepEqual(seqnext(sm, 's'), error('seqMax'));
    assert.equal(sequenceAt(sm, 's').current, 9n);
  });

  it('MAX at the largest signed 64-bit value: the last value is served, then the error', () => {
    const sm = new StateMachine();
    create(sm, 's', { start: INT64_MAX - 1n });
    assert.deepEqual(seqnext(sm, 's', { count: 2n }), range(INT64_MAX - 1n, INT64_MAX));
    assert.deepEqual(seqnext(sm, 's'), error('seqMax'));
    assert.doesNotThrow(() => encodeValue(sequenceAt(sm, 's')));
  });

  it('on a missing key or a plain counter allocates with step 1 and leaves a plain counter', () => {
    const sm = new StateMachine();
    assert.deepEqual(seqnext(sm, 'missing'), int(1n));
    assert.equal(sm.getValue('missing'), 1n);
    sm.apply({ type: 'incrby', key: 'c', delta: 41n });
    assert.deepEqual(seqnext(sm, 'c', { count: 10n }), range(42n, 51n));
    assert.equal(sm.getValue('c'), 51n, 'still a plain counter');
    sm.apply({ type: 'set', key: 'text', value: Buffer.from('7'), condition: 'always', get: false });
    assert.deepEqual(seqnext(sm, 'text'), int(8n));
    sm.apply({ type: 'set', key: 'word', value: Buffer.from('abc'), condition: 'always', get: false });
    assert.deepEqual(seqnext(sm, 'word'), error('notInteger'));
    sm.apply({ type: 'incrby', key: 'big', delta: INT64_MAX - 1n });
    assert.deepEqual(seqnext(sm, 'big', { count: 2n }), error('overflow'));
    assert.equal(sm.getValue('big'), INT64_MAX - 1n);
  });
});

describe('state machine: tokens', () => {
  it('a retry with the same token returns the same reply without allocating', () => {
    const sm = new StateMachine();
    create(sm, 's');
    assert.deepEqual(seqnext(sm, 's', { count: 5n, token: 'a' }), range(1n, 5n));
    assert.deepEqual(seqnext(sm, 's', { count: 5n, token: 'a' }), range(1n, 5n));
    assert.equal(sequenceAt(sm, 's').current, 5n);
    assert.deepEqual(seqnext(sm, 's', { token: 'b' }), int(6n));
    assert.deepEqual(seqnext(sm, 's', { token: 'b' }), int(6n));
    assert.deepEqual(seqnext(sm, 's', { count: 5n, token: 'a' }), range(1n, 5n));
    assert.equal(sequenceAt(sm, 's').current, 6n);
  });

  it('the same token with a different COUNT (or without COUNT) is an error', () => {
    const sm = new StateMachine();
    create(sm, 's');
    assert.deepEqual(seqnext(sm, 's', { count: 5n, token: 'a' }), range(1n, 5n));
    assert.deepEqual(seqnext(sm, 's', { count: 6n, token: 'a' }), error('tokenMismatch'));
    assert.deepEqual(seqnext(sm, 's', { count: 1n, range: false, token: 'a' }), error('tokenMismatch'));
    assert.equal(sequenceAt(sm, 's').current, 5n, 'nothing allocated');
  });

  it('tokens are per key', () => {
    const sm = new StateMachine();
    create(sm, 's');
    create(sm, 'u', { id: 'seq-u', start: 100n });
    assert.deepEqual(seqnext(sm, 's', { count: 2n, token: 'a' }), range(1n, 2n));
    assert.deepEqual(seqnext(sm, 'u', { count: 2n, token: 'a' }), range(100n, 101n));
  });

  it('tokens work on plain counters too', () => {
    const sm = new StateMachine();
    assert.deepEqual(seqnext(sm, 'c', { count: 3n, token: 'a' }), range(1n, 3n));
    assert.deepEqual(seqnext(sm, 'c', { count: 3n, token: 'a' }), range(1n, 3n));
    assert.equal(sm.getValue('c'), 3n);
  });

  it('a token is forgotten after the retention', () => {
    const sm = new StateMachine();
    create(sm, 's');
    const policy: TokenPolicy = { retentionMs: 1000, perKeyMax: 100 };
    assert.deepEqual(seqnext(sm, 's', { token: 'a', nowMs: 10_000, policy }), int(1n));
    assert.deepEqual(seqnext(sm, 's', { token: 'a', nowMs: 11_000, policy }), int(1n), 'at the retention: remembered');
    assert.deepEqual(seqnext(sm, 's', { token: 'a', nowMs: 11_001, policy }), int(2n), 'past it: a new allocation');
  });

  it('at most perKeyMax tokens per key; the oldest is forgotten first', () => {
    const sm = new StateMachine();
    create(sm, 's');
    const policy: TokenPolicy = { retentionMs: 60_000, perKeyMax: 2 };
    assert.deepEqual(seqnext(sm, 's', { token: 'a', policy }), int(1n));
    assert.deepEqual(seqnext(sm, 's', { token: 'b', policy }), int(2n));
    assert.deepEqual(seqnext(sm, 's', { token: 'c', policy }), int(3n));
    const table = new Map([...sm.tokenEntries()]).get('s');
    assert.deepEqual([...(table?.keys() ?? [])], ['b', 'c']);
    assert.deepEqual(seqnext(sm, 's', { token: 'c', policy }), int(3n));
    assert.deepEqual(seqnext(sm, 's', { token: 'b', policy }), int(2n));
    assert.deepEqual(seqnext(sm, 's', { token: 'a', policy }), int(4n), 'a was evicted');
  });

  it('DEL forgets the key and its tokens', () => {
    const sm = new StateMachine();
    create(sm, 's');
    assert.deepEqual(seqnext(sm, 's', { count: 2n, token: 'a' }), range(1n, 2n));
    assert.deepEqual(sm.apply({ type: 'del', keys: ['s'] }), int(1n));
    assert.equal([...sm.tokenEntries()].length, 0);
    assert.deepEqual(seqnext(sm, 's', { count: 2n, token: 'a' }), range(1n, 2n), 'a plain counter from scratch');
    assert.equal(sm.getValue('s'), 2n);
  });

  it('the token op remembers values served from a window, and a retry gets them back', () => {
    const sm = new StateMachine();
    create(sm, 'w', { mode: 'window' });
    const record = { first: 11n, last: 15n, count: 5n, range: true, atMs: 1000 };
    assert.deepEqual(sm.apply({ type: 'token', key: 'w', token: 't', record, policy: POLICY }), range(11n, 15n));
    const retry = { ...record, first: 16n, last: 20n, atMs: 2000 };
    assert.deepEqual(sm.apply({ type: 'token', key: 'w', token: 't', record: retry, policy: POLICY }), range(11n, 15n));
    const other = { ...record, count: 4n, first: 16n, last: 19n };
    assert.deepEqual(sm.apply({ type: 'token', key: 'w', token: 't', record: other, policy: POLICY }), error('tokenMismatch'));
  });
});

describe('state machine: INCR family on a sequence', () => {
  it('INCRBY adds the delta and returns the new value (leaving the step grid)', () => {
    const sm = new StateMachine();
    create(sm, 's', { start: 10n, step: 10n });
    assert.deepEqual(sm.apply({ type: 'incrby', key: 's', delta: 1n }), int(10n), 'the first INCR gives START');
    assert.deepEqual(sm.apply({ type: 'incrby', key: 's', delta: 3n }), int(13n));
    assert.deepEqual(seqnext(sm, 's'), int(23n), 'SEQNEXT continues by STEP from there');
  });

  it('refuses to move backwards: negative INCRBY, SET, MSET, INCRBYFLOAT, GETSET', () => {
    const sm = new StateMachine();
    create(sm, 's');
    seqnext(sm, 's', { count: 5n });
    assert.deepEqual(sm.apply({ type: 'incrby', key: 's', delta: -1n }), error('seqBackwards'));
    const set: Op = { type: 'set', key: 's', value: Buffer.from('1'), condition: 'always', get: false };
    assert.deepEqual(sm.apply(set), error('seqBackwards'));
    assert.deepEqual(sm.apply({ ...set, get: true }), error('seqBackwards'));
    assert.deepEqual(sm.apply({ ...set, condition: 'xx' }), error('seqBackwards'));
    assert.deepEqual(sm.apply({ type: 'mset', keys: ['other', 's'], values: [Buffer.from('1'), Buffer.from('2')] }), error('seqBackwards'));
    assert.equal(sm.has('other'), false, 'MSET refused whole');
    assert.deepEqual(sm.apply({ type: 'incrbyfloat', key: 's', increment: Buffer.from('1.5') }), error('seqBackwards'));
    assert.equal(sequenceAt(sm, 's').current, 5n);
  });

  it('INCRBY past MAX fails and changes nothing', () => {
    const sm = new StateMachine();
    create(sm, 's', { max: 10n });
    assert.deepEqual(sm.apply({ type: 'incrby', key: 's', delta: 10n }), int(10n));
    assert.deepEqual(sm.apply({ type: 'incrby', key: 's', delta: 1n }), error('seqMax'));
    assert.equal(sequenceAt(sm, 's').current, 10n);
  });

  it('on a window sequence, INCRBY through the log moves the reservation too', () => {
    const sm = new StateMachine();
    create(sm, 'w', { mode: 'window' });
    assert.deepEqual(sm.apply({ type: 'reserve', key: 'w', id: 'seq-1', countMin: 1n }), range(1n, 10n));
    assert.deepEqual(sm.apply({ type: 'incrby', key: 'w', delta: 2n }), int(12n));
    assert.deepEqual(sm.apply({ type: 'reserve', key: 'w', id: 'seq-1', countMin: 1n }), range(13n, 22n));
  });
});

describe('state machine: adopt', () => {
  const windowSpec = spec({ id: 'adopted', mode: 'window', windowSize: 100n });

  it('a missing key becomes a sequence from 1', () => {
    const sm = new StateMachine();
    assert.deepEqual(sm.apply({ type: 'adopt', key: 'k', spec: windowSpec }), { type: 'ok' });
    const seq = sequenceAt(sm, 'k');
    assert.equal(seq.mode, 'window');
    assert.equal(seq.start, 1n);
    assert.equal(seq.current, null);
    assert.deepEqual(sm.apply({ type: 'reserve', key: 'k', id: 'adopted', countMin: 1n }), range(1n, 100n));
  });

  it('a plain counter continues above its value', () => {
    const sm = new StateMachine();
    sm.apply({ type: 'incrby', key: 'k', delta: 41n });
    sm.apply({ type: 'set', key: 't', value: Buffer.from('-5'), condition: 'always', get: false });
    assert.deepEqual(sm.apply({ type: 'adopt', key: 'k', spec: windowSpec }), { type: 'ok' });
    assert.deepEqual(sm.apply({ type: 'adopt', key: 't', spec: windowSpec }), { type: 'ok' });
    assert.equal(sm.getBytes('k')?.toString(), '41', 'GET still shows the counter');
    assert.deepEqual(sm.apply({ type: 'reserve', key: 'k', id: 'adopted', countMin: 1n }), range(42n, 141n));
    assert.deepEqual(sm.apply({ type: 'reserve', key: 't', id: 'adopted', countMin: 1n }), range(-4n, 95n));
  });

  it('a sequence stays as it is; a non-integer is refused', () => {
    const sm = new StateMachine();
    create(sm, 's', { start: 7n });
    assert.deepEqual(sm.apply({ type: 'adopt', key: 's', spec: windowSpec }), { type: 'ok' });
    assert.equal(sequenceAt(sm, 's').mode, 'strict');
    assert.equal(sequenceAt(sm, 's').id, 'seq-1');
    sm.apply({ type: 'set', key: 'x', value: Buffer.from('abc'), condition: 'always', get: false });
    assert.deepEqual(sm.apply({ type: 'adopt', key: 'x', spec: windowSpec }), error('notInteger'));
    assert.equal(sm.getBytes('x')?.toString(), 'abc');
  });

  it('a counter at the largest 64-bit value is not turned into an unstorable sequence', () => {
    const sm = new StateMachine();
    sm.apply({ type: 'incrby', key: 'k', delta: INT64_MAX });
    const result = sm.apply({ type: 'adopt', key: 'k', spec: windowSpec });
    // INCR there overflows, as in Redis; the key stays the plain counter it was.
    assert.deepEqual(result, error('overflow'));
    const value = sm.getValue('k');
    assert.equal(value, INT64_MAX);
    assert.doesNotThrow(() => encodeValue(value ?? 0n));
  });
});

describe('state machine: reserve', () => {
  it('reserves windows one after another, at least countMin, cut at MAX', () => {
    const sm = new StateMachine();
    create(sm, 'w', { mode: 'window', start: 5n, step: 2n, max: 100n, windowSize: 10n });
    assert.deepEqual(sm.apply({ type: 'reserve', key: 'w', id: 'seq-1', countMin: 1n }), range(5n, 23n));
    assert.deepEqual(sm.apply({ type: 'reserve', key: 'w', id: 'seq-1', countMin: 20n }), range(25n, 63n));
    assert.deepEqual(sm.apply({ type: 'reserve', key: 'w', id: 'seq-1', countMin: 1n }), range(65n, 83n));
    assert.deepEqual(sm.apply({ type: 'reserve', key: 'w', id: 'seq-1', countMin: 1n }), range(85n, 99n), 'cut at MAX');
    assert.deepEqual(sm.apply({ type: 'reserve', key: 'w', id: 'seq-1', countMin: 1n }), error('seqMax'));
    assert.equal(sequenceAt(sm, 'w').reservedHigh, 99n);
    assert.equal(sm.getBytes('w')?.toString(), '99', 'the state machine shows the highest reserved');
  });

  it('refuses a reservation for another incarnation of the key, or a strict one', () => {
    const sm = new StateMachine();
    create(sm, 'w', { mode: 'window' });
    assert.deepEqual(sm.apply({ type: 'reserve', key: 'w', id: 'old', countMin: 1n }), error('seqGone'));
    create(sm, 's');
    assert.deepEqual(sm.apply({ type: 'reserve', key: 's', id: 'seq-1', countMin: 1n }), error('seqGone'));
    assert.deepEqual(sm.apply({ type: 'reserve', key: 'none', id: 'seq-1', countMin: 1n }), error('seqGone'));
  });

  it('SEQNEXT through the log on a window sequence goes above the reservation', () => {
    const sm = new StateMachine();
    create(sm, 'w', { mode: 'window' });
    sm.apply({ type: 'reserve', key: 'w', id: 'seq-1', countMin: 1n });
    assert.deepEqual(seqnext(sm, 'w', { count: 2n }), range(11n, 12n));
    assert.deepEqual(sm.apply({ type: 'reserve', key: 'w', id: 'seq-1', countMin: 1n }), range(13n, 22n));
  });
});

describe('snapshot round trip', () => {
  it('keeps counters, strings, sequences of both modes and tokens', () => {
    const sm = new StateMachine();
    sm.apply({ type: 'incrby', key: 'counter', delta: -7n });
    sm.apply({ type: 'set', key: 'text', value: Buffer.from([0, 1, 255]), condition: 'always', get: false });
    create(sm, 'fresh', { id: 'id-fresh', start: -3n, step: 4n, max: 1000n });
    create(sm, 'strict', { id: 'id-strict' });
    seqnext(sm, 'strict', { count: 3n, token: 'tok-1', nowMs: 500 });
    seqnext(sm, 'strict', { token: 'tok-2', nowMs: 600 });
    create(sm, 'window', { id: 'id-window', mode: 'window', windowSize: 1000n });
    sm.apply({ type: 'reserve', key: 'window', id: 'id-window', countMin: 1n });
    sm.apply({
      type: 'token',
      key: 'window',
      token: Buffer.from([0xff, 0x00]).toString('latin1'),
      record: { first: 1n, last: 1n, count: 1n, range: false, atMs: 700 },
      policy: POLICY,
    });
    const blob = snapshotState(sm);
    const copy = new StateMachine();
    copy.apply({ type: 'incrby', key: 'stale', delta: 1n });
    restoreState(copy, blob);
    assert.equal(copy.has('stale'), false, 'restore replaces the contents');
    assert.deepEqual(new Map(copy.entries()), new Map(sm.entries()));
    assert.deepEqual(new Map(copy.tokenEntries()), new Map(sm.tokenEntries()));
    assert.ok(snapshotState(copy).equals(blob));
    // The restored state behaves the same.
    assert.deepEqual(seqnext(copy, 'strict', { count: 3n, token: 'tok-1', nowMs: 800 }), range(1n, 3n));
    assert.deepEqual(seqnext(copy, 'strict', { token: 'tok-3', nowMs: 800 }), int(5n));
    assert.deepEqual(copy.apply({ type: 'reserve', key: 'window', id: 'id-window', countMin: 1n }), range(1001n, 2000n));
    assert.deepEqual(seqnext(copy, 'fresh'), int(-3n));
  });
});

describe('property: values only move forward, and a snapshot changes nothing', () => {
  type Step =
    | { readonly kind: 'next'; readonly count: bigint; readonly range: boolean; readonly token: string | null; readonly dtMs: number }
    | { readonly kind: 'incr'; readonly delta: bigint }
    | { readonly kind: 'reserve'; readonly countMin: bigint };

  const step: fc.Arbitrary<Step> = fc.oneof(
    fc.record({
      kind: fc.constant('next' as const),
      count: fc.bigInt({ min: 1n, max: 30n }),
      range: fc.boolean(),
      token: fc.option(fc.constantFrom('a', 'b', 'c', 'd'), { nil: null }),
      dtMs: fc.integer({ min: 0, max: 400 }),
    }),
    fc.record({ kind: fc.constant('incr' as const), delta: fc.bigInt({ min: 1n, max: 5n }) }),
    fc.record({ kind: fc.constant('reserve' as const), countMin: fc.bigInt({ min: 1n, max: 40n }) }),
  );

  it('every new allocation is above everything handed out or reserved before; token retries repeat exactly', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('strict' as const, 'window' as const),
        fc.bigInt({ min: -50n, max: 50n }),
        fc.bigInt({ min: 1n, max: 7n }),
        fc.bigInt({ min: 100n, max: 2000n }),
        fc.array(step, { maxLength: 60 }),
        fc.nat({ max: 60 }),
        (mode, start, stepSize, room, steps, snapshotAt) => {
          let sm = new StateMachine();
          const policy: TokenPolicy = { retentionMs: 1000, perKeyMax: 3 };
          create(sm, 'k', { mode, start, step: stepSize, max: start + room, windowSize: 8n });
          let high: bigint | null = null;
          let nowMs = 0;
          const seen = new Map<string, { reply: OpResult; atMs: number }>();
          steps.forEach((s, i) => {
            if (i === snapshotAt) {
              const copy = new StateMachine();
              restoreState(copy, snapshotState(sm));
              sm = copy;
            }
            let result: OpResult;
            if (s.kind === 'next') {
              nowMs += s.dtMs;
              result = seqnext(sm, 'k', { count: s.count, range: s.range, token: s.token, nowMs, policy });
            } else if (s.kind === 'incr') result = sm.apply({ type: 'incrby', key: 'k', delta: s.delta });
            else if (mode === 'window') result = sm.apply({ type: 'reserve', key: 'k', id: 'seq-1', countMin: s.countMin });
            else return;
            if (result.type === 'error') {
              assert.ok(['seqMax', 'tokenMismatch'].includes(result.error), result.error);
              return;
            }
            const first = result.type === 'range' ? result.first : result.type === 'int' ? result.value : null;
            const last = result.type === 'range' ? result.last : result.type === 'int' ? result.value : null;
            assert.ok(first !== null && last !== null && first <= last);
            assert.ok(last <= start + room, 'never past MAX');
            if (high !== null && last <= high) {
              // Not a new allocation: only a token retry repeats values, and it repeats its reply exactly.
              assert.ok(s.kind === 'next' && s.token !== null, 'only a token retry repeats values');
              assert.deepEqual(result, seen.get(s.token)?.reply);
              return;
            }
            assert.ok(high === null || first > high, `${first} after ${String(high)}`);
            high = last;
            if (s.kind === 'next' && s.token !== null) seen.set(s.token, { reply: result, atMs: nowMs });
          });
        },
      ),
      { numRuns: 300 },
    );
  });
});

// The window allocator over a real single-voter group.

interface Harness {
  sm: StateMachine;
  store: MemoryStore;
  group: LocalGroup;
  windows: WindowAllocator;
}

function harness(store = new MemoryStore()): Harness {
  const sm = new StateMachine();
  store.recover(sm);
  const group = new LocalGroup(sm, store);
  return { sm, store, group, windows: new WindowAllocator(group) };
}

function propose(h: Harness, op: Op): Promise<OpResult> {
  return new Promise((resolve) => h.group.propose(op, resolve));
}

async function createWindow(h: Harness, key: string, overrides: Partial<SequenceSpec> = {}, replace = false): Promise<Sequence> {
  const result = await propose(h, { type: 'seqcreate', key, spec: spec({ mode: 'window', ...overrides }), replace });
  assert.deepEqual(result, { type: 'ok' });
  return sequenceAt(h.sm, key);
}

function allocate(h: Harness, key: string, seq: Sequence, count: bigint): Promise<Allocation> {
  return new Promise((resolve) => h.windows.allocate(key, seq, count, resolve));
}

const ok = (first: bigint, last: bigint): Allocation => ({ ok: true, first, last });

/** Lets every pending persist (and the callbacks it releases) finish. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

describe('window allocator', () => {
  it('serves requests in arrival order with contiguous values across windows', async () => {
    const h = harness();
    const seq = await createWindow(h, 'w', { windowSize: 10n });
    const counts = [1n, 3n, 25n, 1n, 7n, 2n, 12n, 1n, 1n, 9n];
    const order: number[] = [];
    const results = await Promise.all(
      counts.map((count, i) =>
        allocate(h, 'w', seq, count).then((a) => {
          order.push(i);
          return a;
        }),
      ),
    );
    assert.deepEqual(
      order,
      counts.map((_c, i) => i),
      'answered in arrival order',
    );
    let expected = 1n;
    results.forEach((a, i) => {
      const count = counts[i] ?? 0n;
      assert.deepEqual(a, ok(expected, expected + count - 1n), `request ${i}`);
      expected += count;
    });
    assert.ok(h.windows.stats.reservations >= 3);
  });

  it('follows STEP and START', async () => {
    const h = harness();
    const seq = await createWindow(h, 'w', { start: 100n, step: 10n, windowSize: 4n });
    assert.deepEqual(await allocate(h, 'w', seq, 1n), ok(100n, 100n));
    assert.deepEqual(await allocate(h, 'w', seq, 6n), ok(110n, 160n));
    assert.deepEqual(await allocate(h, 'w', seq, 1n), ok(170n, 170n));
    assert.equal(h.windows.lastServed('w', seq), 170n);
  });

  it('reserves the next window before the current one runs out', async () => {
    const h = harness();
    const seq = await createWindow(h, 'w', { windowSize: 10n });
    assert.deepEqual(await allocate(h, 'w', seq, 4n), ok(1n, 4n));
    await settle();
    assert.equal(h.windows.stats.reservations, 1, 'above the low-water mark: no reservation yet');
    assert.deepEqual(await allocate(h, 'w', seq, 2n), ok(5n, 6n));
    await settle();
    assert.equal(h.windows.stats.reservations, 2, 'at half the window, the next one is reserved');
    assert.equal(sequenceAt(h.sm, 'w').reservedHigh, 20n);
    assert.equal(h.store.values.has('w'), true);
    const persisted = h.store.values.get('w');
    assert.ok(isSequence(persisted) && persisted.reservedHigh === 20n, 'the reservation is durable');
    // The rest is served from memory: no new reservation until the low-water mark again.
    const before = h.store.persistCount;
    for (let i = 7n; i <= 15n; i++) assert.deepEqual(await allocate(h, 'w', seq, 1n), ok(i, i));
    assert.ok(h.store.persistCount - before <= 1, 'served from memory, at most the next reservation written');
    await settle();
    assert.deepEqual(h.windows.window('w', seq), { next: 16n, end: sequenceAt(h.sm, 'w').reservedHigh });
  });

  it('a request larger than the window gets a reservation of its size', async () => {
    const h = harness();
    const seq = await createWindow(h, 'w', { windowSize: 10n });
    assert.deepEqual(await allocate(h, 'w', seq, 1000n), ok(1n, 1000n));
    assert.deepEqual(await allocate(h, 'w', seq, 1n), ok(1001n, 1001n));
  });

  it('at MAX: the window is cut, a request that does not fit fails whole, a smaller one still fits', async () => {
    const h = harness();
    const seq = await createWindow(h, 'w', { windowSize: 10n, max: 15n });
    assert.deepEqual(await allocate(h, 'w', seq, 10n), ok(1n, 10n));
    assert.deepEqual(await allocate(h, 'w', seq, 6n), { ok: false, error: 'seqMax' });
    assert.deepEqual(await allocate(h, 'w', seq, 5n), ok(11n, 15n));
    assert.deepEqual(await allocate(h, 'w', seq, 1n), { ok: false, error: 'seqMax' });
    assert.equal(sequenceAt(h.sm, 'w').reservedHigh, 15n);
  });

  it('never serves a window of a recreated key', async () => {
    const h = harness();
    const old = await createWindow(h, 'w', { id: 'old', windowSize: 100n });
    assert.deepEqual(await allocate(h, 'w', old, 1n), ok(1n, 1n));
    const fresh = await createWindow(h, 'w', { id: 'new', windowSize: 100n, start: 1000n }, true);
    assert.deepEqual(await allocate(h, 'w', fresh, 1n), ok(1000n, 1000n), 'not 2 from the old window');
    assert.equal(h.windows.lastServed('w', old), null);
  });

  it('a request waiting on a reservation when the key is recreated is told to retry, not served', async () => {
    const h = harness();
    const old = await createWindow(h, 'w', { id: 'old', windowSize: 100n });
    const waiting = allocate(h, 'w', old, 1n);
    h.group.propose({ type: 'seqcreate', key: 'w', spec: spec({ id: 'new', mode: 'window' }), replace: true }, () => undefined);
    assert.deepEqual(await waiting, { ok: false, error: 'retry' });
    const waitingOnDeleted = allocate(h, 'w', sequenceAt(h.sm, 'w'), 1n);
    h.group.propose({ type: 'del', keys: ['w'] }, () => undefined);
    assert.deepEqual(await waitingOnDeleted, { ok: false, error: 'retry' });
  });

  it('after a restart, serving starts above everything reserved before (a gap, never a repeat)', async () => {
    const h = harness();
    const seq = await createWindow(h, 'w', { windowSize: 50n });
    let high = 0n;
    for (let i = 0; i < 30; i++) {
      const a = await allocate(h, 'w', seq, 1n);
      assert.ok(a.ok);
      high = a.last;
    }
    await settle();
    await h.group.close();
    const reservedBefore = sequenceAt(h.sm, 'w').reservedHigh ?? 0n;
    const h2 = harness(h.store);
    const seq2 = sequenceAt(h2.sm, 'w');
    assert.equal(seq2.id, seq.id);
    const a = await allocate(h2, 'w', seq2, 1n);
    assert.ok(a.ok);
    assert.ok(a.first > high, `${a.first} > ${high}`);
    assert.equal(a.first, reservedBefore + 1n);
  });

  it('reset answers waiting requests with retry', async () => {
    const h = harness();
    const seq = await createWindow(h, 'w');
    const waiting = allocate(h, 'w', seq, 1n);
    h.windows.reset();
    assert.deepEqual(await waiting, { ok: false, error: 'retry' });
    assert.equal(h.windows.stats.keys, 0);
  });

  it('a failed reservation persist fails the waiting requests with that error', async () => {
    const h = harness();
    const seq = await createWindow(h, 'w');
    h.store.failNext = new PersistError('disk full', 'no');
    const result = await allocate(h, 'w', seq, 1n);
    assert.deepEqual(result, { ok: false, error: 'persistFailed' });
    const again = await allocate(h, 'w', sequenceAt(h.sm, 'w'), 1n);
    assert.deepEqual(again, ok(1n, 1n), 'the failed reservation did not count');
  });
});
