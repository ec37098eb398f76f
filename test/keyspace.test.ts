// The keyspace store (`keyspace.mdb`): checkpoints of many groups in one
// transaction, reopen, groups kept apart, long and empty keys, token tables,
// FLUSHALL (cleared), the export format, a backed state machine reading
// through to it against an in-memory one, refusals; and the cost of a
// checkpoint (reported, never asserted).

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { restoreState, snapshotState } from '../src/sequencer/codec.js';
import { DEFAULT_TOKEN_POLICY } from '../src/sequencer/sequence.js';
import { StateMachine, type ChangeSet, type Op } from '../src/sequencer/state-machine.js';
import { KEYSPACE_DATA_FILE, KeyspaceStore, type KeyspaceCheckpointItem } from '../src/storage/keyspace.js';
import { DataDirectoryError } from '../src/storage/store.js';
import { prng } from '../testkit/random.js';
import { scratchDirs } from './helpers/dirs.js';

const tempDir = scratchDirs('ordo-keyspace-');

const CONF = { voters: ['n1', 'n2', 'n3'], learners: ['n4'] };
const LONG_KEY = 'L'.repeat(5000);
const NEAR_LIMIT_KEY = 'N'.repeat(1024);
const PAST_LIMIT_KEY = 'P'.repeat(1025);

function item(groupId: number, sm: StateMachine, appliedIndex: number, changes?: ChangeSet): KeyspaceCheckpointItem {
  return { groupId, changes: changes ?? sm.beginCheckpoint(), appliedIndex, appliedTerm: 2, conf: CONF, keyCount: sm.size };
}

/** Checkpoints a backed state machine fully: begin, write, acknowledge. */
async function checkpointAll(store: KeyspaceStore, groups: readonly [number, StateMachine][], appliedIndex: number): Promise<void> {
  const items = groups.map(([g, sm]) => item(g, sm, appliedIndex));
  await store.checkpoint(items);
  groups.forEach(([, sm], i) => sm.checkpointed((items[i] as KeyspaceCheckpointItem).changes));
}

function sameState(a: StateMachine, b: StateMachine): void {
  assert.equal(a.size, b.size);
  assert.deepEqual(new Map(a.entries()), new Map(b.entries()));
  assert.deepEqual(new Map(a.tokenEntries()), new Map(b.tokenEntries()));
}

const incr = (key: string, delta = 1n): Op => ({ type: 'incrby', key, delta });
const token = (key: string, t: string): Op => ({
  type: 'seqnext',
  key,
  count: 1n,
  range: false,
  token: t,
  nowMs: 5,
  policy: DEFAULT_TOKEN_POLICY,
});

describe('KeyspaceStore', () => {
  it('checkpoints groups in one write; reopened, each group reads back its own keys, tokens and state', async () => {
    const dir = tempDir();
    let store = KeyspaceStore.open(dir, { fsync: 'always' });
    assert.equal(store.groupState(1), undefined);
    const g1 = new StateMachine(store.backing(1));
    const g2 = new StateMachine(store.backing(2));
    const plain1 = new StateMachine();
    const plain2 = new StateMachine();
    const ops1: Op[] = [incr('a'), incr('b', 5n), incr(''), incr(LONG_KEY, 7n), incr(NEAR_LIMIT_KEY), incr(PAST_LIMIT_KEY, 3n), token('a', 't1')];
    const ops2: Op[] = [incr('a', 100n), { type: 'set', key: 'b', value: Buffer.from('text'), condition: 'always', get: false }];
    for (const op of ops1) assert.deepEqual(g1.apply(op), plain1.apply(op));
    for (const op of ops2) assert.deepEqual(g2.apply(op), plain2.apply(op));
    await checkpointAll(
      store,
      [
        [1, g1],
        [2, g2],
      ],
      10,
    );
    assert.equal(g1.keysInMemory, 0);
    sameState(g1, plain1);
    assert.deepEqual(store.groupState(1), { appliedIndex: 10, appliedTerm: 2, conf: CONF });
    await store.close();

    store = KeyspaceStore.open(dir, { fsync: 'always' });
    assert.deepEqual(store.groupIds(), [1, 2]);
    assert.deepEqual(store.groupState(2), { appliedIndex: 10, appliedTerm: 2, conf: CONF });
    const r1 = new StateMachine(store.backing(1));
    const r2 = new StateMachine(store.backing(2));
    sameState(r1, plain1);
    sameState(r2, plain2);
    assert.equal(r1.getValue(LONG_KEY), 7n);
    assert.equal(r1.getValue(PAST_LIMIT_KEY), 3n);
    assert.equal(r1.getValue(''), 1n);
    assert.equal(r2.getValue('a'), 100n);
    assert.equal(store.groupState(3), undefined);
    assert.equal(new StateMachine(store.backing(3)).size, 0, 'a group with no checkpoint is empty');

    // Deletes, and a FLUSHALL of one group, leave the other alone.
    for (const op of [{ type: 'del', keys: ['a', LONG_KEY] } as Op, incr('c')]) assert.deepEqual(r1.apply(op), plain1.apply(op));
    assert.deepEqual(r2.apply({ type: 'flushall' }), plain2.apply({ type: 'flushall' }));
    assert.deepEqual(r2.apply(incr('z')), plain2.apply(incr('z')));
    await checkpointAll(
      store,
      [
        [1, r1],
        [2, r2],
      ],
      20,
    );
    await store.close();

    store = KeyspaceStore.open(dir, { fsync: 'never' });
    sameState(new StateMachine(store.backing(1)), plain1);
    sameState(new StateMachine(store.backing(2)), plain2);
    assert.equal(new StateMachine(store.backing(1)).getValue(LONG_KEY), undefined);
    assert.equal(store.groupState(1)?.appliedIndex, 20);
    await store.close();
  });

  it('exports a group in snapshotState format, from its last checkpoint', async () => {
    const store = KeyspaceStore.open(tempDir(), { fsync: 'never' });
    const sm = new StateMachine(store.backing(7));
    const plain = new StateMachine();
    const rand = prng(7);
    for (let i = 0; i < 500; i++) {
      const key = `k${Math.floor(rand() * 200)}`;
      const op = rand() < 0.1 ? token(key, `t${i}`) : rand() < 0.1 ? ({ type: 'del', keys: [key] } as Op) : incr(key);
      assert.deepEqual(sm.apply(op), plain.apply(op));
    }
    sm.apply(incr(LONG_KEY));
    plain.apply(incr(LONG_KEY));
    await checkpointAll(store, [[7, sm]], 42);
    sm.apply(incr('after')); // not checkpointed: not exported
    const exported = store.exportGroup(7);
    assert.equal(exported.appliedIndex, 42);
    assert.deepEqual(exported.conf, CONF);
    const restored = new StateMachine();
    restoreState(restored, Buffer.from(exported.data));
    sameState(restored, plain);
    // Byte for byte what snapshotState gives for the checkpointed state.
    assert.ok(Buffer.from(exported.data).equals(snapshotState(new StateMachine(store.backing(7)))));
    await store.close();
  });

  it('a backed state machine reading LMDB answers as an in-memory one; checkpoints in flight while ops go on', async () => {
    const dir = tempDir();
    let store = KeyspaceStore.open(dir, { fsync: 'never' });
    let sm = new StateMachine(store.backing(3));
    const plain = new StateMachine();
    const rand = prng(1234);
    const keys = ['a', 'b', 'c', 'd', '', LONG_KEY, ...Array.from({ length: 30 }, (_, i) => `key:${i}`)];
    const pick = (): string => keys[Math.floor(rand() * keys.length)] as string;
    let index = 0;
    let inFlight: { item: KeyspaceCheckpointItem; done: Promise<void> } | null = null;
    for (let step = 0; step < 1500; step++) {
      const r = rand();
      let op: Op;
      if (r < 0.4) op = incr(pick());
      else if (r < 0.55) op = { type: 'del', keys: [pick(), pick()] };
      else if (r < 0.6) op = token(pick(), `t${Math.floor(rand() * 3)}`);
      else if (r < 0.62) op = { type: 'flushall' };
      else if (r < 0.7) op = { type: 'set', key: pick(), value: Buffer.from(String(step)), condition: 'always', get: false };
      else {
        if (inFlight === null) {
          const it = item(3, sm, ++index);
          inFlight = { item: it, done: store.checkpoint([it]) };
        } else if (rand() < 0.5) {
          await inFlight.done;
          sm.checkpointed(inFlight.item.changes);
          inFlight = null;
        }
        continue;
      }
      assert.deepEqual(sm.apply(op), plain.apply(op), `step ${step}`);
      if (step % 50 === 0) {
        sameState(sm, plain);
        // Every SCAN step matches.
        for (const count of [1, 3, 10]) {
          let a = 0;
          let b = 0;
          do {
            const x = sm.scan(a, count);
            const y = plain.scan(b, count);
            assert.deepEqual(x, y);
            a = x.next;
            b = y.next;
          } while (a !== 0);
        }
        assert.deepEqual([...sm.keys()].sort(), [...plain.keys()].sort());
      }
    }
    if (inFlight !== null) {
      await inFlight.done;
      sm.checkpointed(inFlight.item.changes);
    }
    await checkpointAll(store, [[3, sm]], ++index);
    await store.close();
    store = KeyspaceStore.open(dir, { fsync: 'never' });
    sm = new StateMachine(store.backing(3));
    sameState(sm, plain);
    await store.close();
  });

  it('refuses a second open, a file that is not LMDB and an environment without its marker', async () => {
    const dir = tempDir();
    const store = KeyspaceStore.open(dir, { fsync: 'never' });
    assert.throws(() => KeyspaceStore.open(dir, { fsync: 'never' }), DataDirectoryError);
    await store.close();
    const bad = tempDir();
    writeFileSync(join(bad, KEYSPACE_DATA_FILE), Buffer.alloc(16384, 7));
    assert.throws(() => KeyspaceStore.open(bad, { fsync: 'never' }), /not a valid LMDB file/);
  });

  it('a closed store refuses checkpoints', async () => {
    const store = KeyspaceStore.open(tempDir(), { fsync: 'never' });
    const sm = new StateMachine(store.backing(1));
    sm.apply(incr('a'));
    await store.close();
    await assert.rejects(store.checkpoint([item(1, sm, 1)]), /closed/);
  });

  it('reports what a checkpoint costs the event loop (never asserted)', async () => {
    const store = KeyspaceStore.open(tempDir(), { fsync: 'always' });
    const groups: [number, StateMachine][] = [];
    for (let g = 1; g <= 16; g++) groups.push([g, new StateMachine(store.backing(g))]);
    const lines: string[] = [];
    for (const keysPerGroup of [1000, 6250]) {
      for (let round = 0; round < 3; round++) {
        for (const [g, sm] of groups) for (let i = 0; i < keysPerGroup; i++) sm.apply(incr(`g${g}:key:${i}:${round % 2}`));
        const items = groups.map(([g, sm]) => item(g, sm, 1000 * (round + 1) + keysPerGroup));
        const t0 = performance.now();
        const done = store.checkpoint(items);
        const syncMs = performance.now() - t0;
        // How long the event loop is held from here to the commit: timers that fire late show it.
        let ticks = 0;
        let worstGapMs = 0;
        let last = performance.now();
        const timer = setInterval(() => {
          const now = performance.now();
          worstGapMs = Math.max(worstGapMs, now - last);
          last = now;
          ticks++;
        }, 1);
        await done;
        clearInterval(timer);
        const totalMs = performance.now() - t0;
        groups.forEach(([, sm], i) => sm.checkpointed((items[i] as KeyspaceCheckpointItem).changes));
        lines.push(
          `${16 * keysPerGroup} keys over 16 groups: checkpoint() ${syncMs.toFixed(1)} ms on the caller, main thread in total ${store.lastCheckpoint.blockedMs.toFixed(1)} ms (longest slice ${store.lastCheckpoint.sliceMsMax.toFixed(1)} ms), ` +
            `durable after ${totalMs.toFixed(1)} ms, worst event-loop gap ${worstGapMs.toFixed(1)} ms (${ticks} timer ticks)`,
        );
      }
    }
    const t0 = performance.now();
    const exported = store.exportGroup(1);
    lines.push(
      `export of one group (${new StateMachine(store.backing(1)).size} keys, ${exported.data.length} bytes): ${(performance.now() - t0).toFixed(1)} ms`,
    );
    process.stdout.write(`# keyspace checkpoint cost (fsync always):\n${lines.map((l) => `#   ${l}`).join('\n')}\n`);
    await store.close();
  });
});
