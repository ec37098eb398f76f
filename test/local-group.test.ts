// LocalGroup: ops apply at once, replies wait for the batch's persist; one
// persist per loop turn; reads wait for unflushed writes; a failed persist
// fails every waiting op and reloads the state from the store.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LocalGroup } from '../src/multiraft/local-group.js';
import type { ReadOutcome } from '../src/multiraft/group.js';
import { StateMachine, type ChangeSet, type Op, type OpResult } from '../src/sequencer/state-machine.js';
import { DEFAULT_TOKEN_POLICY } from '../src/sequencer/sequence.js';
import { MemoryStore, PersistError } from '../src/storage/store.js';

const incr = (key: string, delta = 1n): Op => ({ type: 'incrby', key, delta });
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await nextTurn();
}

/** A MemoryStore whose persists stay pending until the test releases them. */
class GatedStore extends MemoryStore {
  readonly gates: { changes: ChangeSet; release: () => void; fail: (e: Error) => void }[] = [];
  gated = true;
  closed = false;

  override persist(changes: ChangeSet): Promise<void> {
    if (!this.gated) return super.persist(changes);
    // Snapshot what would be written now; write it when released.
    const copy: ChangeSet = { cleared: changes.cleared, values: new Map(changes.values), tokens: new Map(changes.tokens) };
    return new Promise<void>((resolve, reject) => {
      this.gates.push({
        changes: copy,
        release: () => {
          this.gated = false;
          super.persist(copy).then(resolve, reject);
          this.gated = true;
        },
        fail: reject,
      });
    });
  }

  override close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}

function propose(group: LocalGroup, op: Op): { result: OpResult | null; promise: Promise<OpResult> } {
  const entry: { result: OpResult | null; promise: Promise<OpResult> } = { result: null, promise: Promise.resolve({ type: 'ok' }) };
  entry.promise = new Promise((resolve) =>
    group.propose(op, (r) => {
      entry.result = r;
      resolve(r);
    }),
  );
  return entry;
}

function read<T>(group: LocalGroup, query: (sm: StateMachine) => T): { outcome: ReadOutcome<T> | null; promise: Promise<ReadOutcome<T>> } {
  const entry: { outcome: ReadOutcome<T> | null; promise: Promise<ReadOutcome<T>> } = { outcome: null, promise: Promise.resolve({ ok: false, error: 'persistFailed' }) };
  entry.promise = new Promise((resolve) =>
    group.read(query, (o) => {
      entry.outcome = o;
      resolve(o);
    }),
  );
  return entry;
}

const valueOf = (key: string) => (sm: StateMachine): string | null => sm.getBytes(key)?.toString() ?? null;

describe('LocalGroup', () => {
  it('replies to a write only after its persist resolved', async () => {
    const store = new GatedStore();
    const group = new LocalGroup(new StateMachine(), store);
    const p = propose(group, incr('a'));
    await turns(3);
    assert.equal(store.gates.length, 1, 'the batch is being persisted');
    assert.equal(p.result, null, 'no reply before the persist resolved');
    assert.equal(store.values.size, 0);
    store.gates[0]?.release();
    assert.deepEqual(await p.promise, { type: 'int', value: 1n });
    assert.equal(store.values.get('a'), 1n);
  });

  it('persists everything proposed in one loop turn with one persist call', async () => {
    const store = new MemoryStore();
    const group = new LocalGroup(new StateMachine(), store);
    const entries = [];
    for (let i = 0; i < 500; i++) entries.push(propose(group, incr(`k${i % 7}`)));
    const results = await Promise.all(entries.map((e) => e.promise));
    assert.equal(store.persistCount, 1);
    assert.equal(group.stats.batchesPersisted, 1);
    assert.equal(group.stats.opsPersisted, 500);
    // Results are in proposal order: per key 1, 2, 3...
    const perKey = new Map<string, bigint>();
    results.forEach((r, i) => {
      const key = `k${i % 7}`;
      const expected = (perKey.get(key) ?? 0n) + 1n;
      perKey.set(key, expected);
      assert.deepEqual(r, { type: 'int', value: expected });
    });
    assert.equal(store.values.get('k0'), perKey.get('k0'));
  });

  it('merges turns that arrive while a persist is in flight into the next persist', async () => {
    const store = new GatedStore();
    const group = new LocalGroup(new StateMachine(), store);
    const first = propose(group, incr('a'));
    await turns(2);
    assert.equal(store.gates.length, 1);
    const later: ReturnType<typeof propose>[] = [];
    for (let turn = 0; turn < 5; turn++) {
      later.push(propose(group, incr('a')), propose(group, incr('b')));
      await nextTurn();
    }
    assert.equal(store.gates.length, 1, 'one persist at a time');
    store.gates[0]?.release();
    await first.promise;
    await turns(2);
    assert.equal(store.gates.length, 2, 'the five later turns went into one persist');
    assert.ok(later.every((e) => e.result === null));
    assert.deepEqual(store.gates[1]?.changes.values, new Map([['a', 6n], ['b', 5n]]));
    store.gates[1]?.release();
    const results = await Promise.all(later.map((e) => e.promise));
    assert.deepEqual(results.at(-2), { type: 'int', value: 6n });
    assert.deepEqual(results.at(-1), { type: 'int', value: 5n });
  });

  it('answers a read at once when nothing is waiting for disk', async () => {
    const store = new MemoryStore();
    store.values.set('a', 7n);
    const sm = new StateMachine();
    store.recover(sm);
    const group = new LocalGroup(sm, store);
    const r = read(group, valueOf('a'));
    assert.deepEqual(r.outcome, { ok: true, value: '7' }, 'synchronously');
  });

  it('holds a read that saw an unflushed write until that write is durable', async () => {
    const store = new GatedStore();
    const group = new LocalGroup(new StateMachine(), store);
    const w = propose(group, incr('a', 5n));
    const r1 = read(group, valueOf('a'));
    await turns(2);
    const r2 = read(group, valueOf('a')); // issued while the write is being persisted
    await turns(2);
    assert.equal(r1.outcome, null);
    assert.equal(r2.outcome, null);
    store.gates[0]?.release();
    assert.deepEqual(await r1.promise, { ok: true, value: '5' });
    await w.promise;
    assert.deepEqual(await r2.promise, { ok: true, value: '5' });
    await turns(2);
    for (const gate of store.gates.slice(1)) gate.release();
  });

  it('a failed persist fails every waiting op and read, and the failed writes are gone', async () => {
    const store = new GatedStore();
    const sm = new StateMachine();
    const group = new LocalGroup(sm, store);
    // A durable starting point.
    const base = propose(group, incr('a', 10n));
    await turns(2);
    store.gates[0]?.release();
    assert.deepEqual(await base.promise, { type: 'int', value: 10n });

    const doomed = [propose(group, incr('a')), propose(group, incr('b')), propose(group, { type: 'del', keys: ['a'] })];
    const doomedRead = read(group, valueOf('a'));
    await turns(2);
    assert.equal(store.gates.length, 2);
    // More ops arrive while the doomed batch is in flight: they were applied on top of it.
    const onTop = [propose(group, incr('a')), propose(group, incr('c'))];
    const onTopRead = read(group, valueOf('c'));
    await nextTurn();
    store.gates[1]?.fail(new PersistError('disk full', 'no'));
    for (const e of [...doomed, ...onTop]) {
      assert.deepEqual(await e.promise, { type: 'error', error: 'persistFailed' });
    }
    assert.deepEqual(await doomedRead.promise, { ok: false, error: 'persistFailed' });
    assert.deepEqual(await onTopRead.promise, { ok: false, error: 'persistFailed' });
    assert.equal(group.stats.persistFailures, 1);

    // The state is what the store holds: the failed increments are not visible.
    assert.deepEqual(read(group, valueOf('a')).outcome, { ok: true, value: '10' });
    assert.equal(sm.has('b'), false);
    assert.equal(sm.has('c'), false);
    const after = propose(group, incr('a'));
    await turns(2);
    store.gates.at(-1)?.release();
    assert.deepEqual(await after.promise, { type: 'int', value: 11n }, 'counting goes on from the durable value');
    assert.equal(store.values.get('a'), 11n);
  });

  it('a persist failure with unknown outcome is reported as unknown (TRYAGAIN), not as a clean failure', async () => {
    const store = new MemoryStore();
    const group = new LocalGroup(new StateMachine(), store);
    store.failNext = new PersistError('flush failed', 'unknown');
    const e = propose(group, incr('a'));
    assert.deepEqual(await e.promise, { type: 'error', error: 'persistUnknown' });
    const next = propose(group, incr('a'));
    assert.deepEqual(await next.promise, { type: 'int', value: 1n });
  });

  it('MemoryStore.failNext fails one persist only', async () => {
    const store = new MemoryStore();
    const group = new LocalGroup(new StateMachine(), store);
    assert.deepEqual(await propose(group, incr('x')).promise, { type: 'int', value: 1n });
    store.failNext = new PersistError('disk full', 'no');
    assert.deepEqual(await propose(group, incr('x')).promise, { type: 'error', error: 'persistFailed' });
    assert.deepEqual(await propose(group, incr('x')).promise, { type: 'int', value: 2n });
    assert.equal(store.values.get('x'), 2n);
  });

  it('close waits for in-flight writes, then closes the store; later proposals are refused', async () => {
    const store = new GatedStore();
    const group = new LocalGroup(new StateMachine(), store);
    const w1 = propose(group, incr('a'));
    await turns(2);
    const w2 = propose(group, incr('a')); // still in the open batch when close starts
    let closed = false;
    const closing = group.close().then(() => (closed = true));
    await turns(3);
    assert.equal(closed, false);
    assert.equal(store.closed, false);
    store.gates[0]?.release();
    await w1.promise;
    await turns(3);
    assert.equal(closed, false, 'the second batch is still in flight');
    store.gates[1]?.release();
    await closing;
    assert.equal(store.closed, true);
    assert.deepEqual(await w2.promise, { type: 'int', value: 2n });
    assert.equal(store.values.get('a'), 2n);
    assert.deepEqual(await propose(group, incr('a')).promise, { type: 'error', error: 'shuttingDown' });
  });

  it('a turn that changed only idempotency tokens is persisted before its reply', async () => {
    const store = new GatedStore();
    const group = new LocalGroup(new StateMachine(), store);
    const record = { first: 5n, last: 5n, count: 1n, range: false, atMs: 1000 };
    const p = propose(group, { type: 'token', key: 'seq', token: 't1', record, policy: DEFAULT_TOKEN_POLICY });
    await turns(3);
    assert.equal(store.gates.length, 1, 'the token table went to the store');
    assert.equal(p.result, null, 'no reply before it is durable');
    store.gates[0]?.release();
    assert.deepEqual(await p.promise, { type: 'int', value: 5n });
    assert.deepEqual(store.tokens.get('seq'), new Map([['t1', record]]));
  });

  it('a read-only turn does not call persist', async () => {
    const store = new MemoryStore();
    const group = new LocalGroup(new StateMachine(), store);
    await propose(group, incr('a')).promise;
    const before = store.persistCount;
    await propose(group, { type: 'incrby', key: 'a', delta: (1n << 63n) }).promise; // overflow: no change
    await read(group, valueOf('a')).promise;
    assert.equal(store.persistCount, before);
  });
});
