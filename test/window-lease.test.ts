// Window values are handed out only while the group allows it (its leader
// holds the lease and its predecessors' leases have run out): the Raft rule,
// and what the allocator does while it may not serve.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TestCluster } from '../sim/cluster.js';
import type { Group, GroupStats, ReadOutcome, WindowLease } from '../src/multiraft/group.js';
import { LocalGroup } from './helpers/local-group.js';
import { WindowAllocator, type Allocation } from '../src/multiraft/window.js';
import { RAFT_DEFAULTS } from '../src/raft/node.js';
import { INT64_MAX } from '../src/sequencer/numbers.js';
import { isSequence, type Sequence } from '../src/sequencer/sequence.js';
import { StateMachine, type Op, type OpResult, type StoredValue } from '../src/sequencer/state-machine.js';
import { MemoryStore } from './helpers/local-group.js';

const ET = RAFT_DEFAULTS.electionTimeoutTicks;
const DRIFT = RAFT_DEFAULTS.leaseClockDriftTicks;

describe("raft: a new leader waits out its predecessors' leases", () => {
  it('predecessorLeaseExpired turns true electionTimeout + drift + 1 ticks after winning, on the leader only', () => {
    const c = new TestCluster({ voters: ['a', 'b', 'c'] });
    assert.ok(c.elect('a'));
    const a = c.node('a');
    assert.equal(a.predecessorLeaseTicks, ET + DRIFT + 1);
    assert.equal(a.predecessorLeaseExpired(), false, 'not right after the election');
    c.tick(ET + DRIFT);
    assert.equal(a.predecessorLeaseExpired(), false);
    c.tick(1);
    assert.equal(a.predecessorLeaseExpired(), true);
    assert.equal(c.node('b').predecessorLeaseExpired(), false, 'a follower never');
  });

  it('a leader elected again waits again', () => {
    const c = new TestCluster({ voters: ['a', 'b', 'c'] });
    assert.ok(c.elect('a'));
    c.tick(ET + DRIFT + 1);
    assert.ok(c.node('a').predecessorLeaseExpired());
    c.isolate('a');
    c.tickUntil(() => c.leaders().some((n) => n.id !== 'a' && n.predecessorLeaseExpired()));
    assert.equal(c.node('a').predecessorLeaseExpired(), false, 'the cut-off leader stepped down');
    const b = c.leaders().find((n) => n.id !== 'a');
    assert.ok(b !== undefined);
    assert.equal(b.leaseValid() && b.predecessorLeaseExpired(), true);
    c.heal();
    c.stabilize();
    c.isolate(b.id);
    const ticks = c.tickUntil(() => c.leaders().some((n) => n.id !== b.id));
    const next = c.leaders().find((n) => n.id !== b.id);
    assert.ok(next !== undefined && ticks > 0);
    assert.equal(next.predecessorLeaseExpired(), false);
  });
});

/** A group whose window lease a test sets; everything else goes to a single-voter LocalGroup. */
class LeaseGroup implements Group {
  lease: WindowLease = 'wait';
  proposals = 0;
  private readonly listeners = new Set<() => void>();
  readonly inner: LocalGroup;
  readonly sm = new StateMachine();

  constructor() {
    const store = new MemoryStore();
    store.recover(this.sm);
    this.inner = new LocalGroup(this.sm, store);
  }

  set(lease: WindowLease): void {
    this.lease = lease;
    this.tick();
  }

  /** What a Raft group does at every tick while it may not serve. */
  tick(): void {
    for (const l of [...this.listeners]) l();
  }

  propose(op: Op, done: (result: OpResult) => void): void {
    this.proposals++;
    this.inner.propose(op, done);
  }
  read<T>(query: (sm: StateMachine) => T, done: (outcome: ReadOutcome<T>) => void): void {
    this.inner.read(query, done);
  }
  peek(key: string): StoredValue | undefined {
    return this.inner.peek(key);
  }
  get stats(): GroupStats {
    return this.inner.stats;
  }
  get keyCount(): number {
    return this.inner.keyCount;
  }
  isLeader(): boolean {
    return this.lease === 'serve' || this.lease === 'wait';
  }
  leaderId(): string | null {
    return null;
  }
  windowLease(): WindowLease {
    return this.lease;
  }
  onWindowLeaseChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

async function windowKey(g: LeaseGroup, key: string, windowSize = 10n): Promise<Sequence> {
  const spec = { id: `id-${key}`, mode: 'window' as const, start: 1n, step: 1n, max: INT64_MAX, windowSize };
  const r = await new Promise<OpResult>((resolve) => g.propose({ type: 'seqcreate', key, spec, replace: false }, resolve));
  assert.deepEqual(r, { type: 'ok' });
  const seq = g.peek(key);
  assert.ok(isSequence(seq));
  return seq;
}

describe('window allocator under the lease', () => {
  it('requests wait while the group may not serve, then are served in arrival order', async () => {
    const g = new LeaseGroup();
    const seq = await windowKey(g, 'w');
    let clock = 0;
    const windows = new WindowAllocator(g, { now: () => clock, leaseWaitMs: 1000 });
    const answers: [number, Allocation][] = [];
    const counts = [2n, 1n, 15n, 3n];
    counts.forEach((count, i) => windows.allocate('w', seq, count, (a) => answers.push([i, a])));
    await settle();
    assert.deepEqual(answers, [], 'nothing served without the lease');
    const proposalsWhileWaiting = g.proposals;
    assert.ok(proposalsWhileWaiting >= 2, 'reservations go ahead while waiting');
    for (let i = 0; i < 5; i++) {
      clock += 100;
      g.tick();
      await settle();
    }
    assert.equal(g.proposals, proposalsWhileWaiting, 'no further reservations while the window holds enough');
    g.set('serve');
    await settle();
    assert.deepEqual(answers, [
      [0, { ok: true, first: 1n, last: 2n }],
      [1, { ok: true, first: 3n, last: 3n }],
      [2, { ok: true, first: 4n, last: 18n }],
      [3, { ok: true, first: 19n, last: 21n }],
    ]);
  });

  it('a request that cannot be served within leaseWaitMs fails with windowLease, nothing allocated; later ones keep waiting', async () => {
    const g = new LeaseGroup();
    const seq = await windowKey(g, 'w');
    let clock = 0;
    const windows = new WindowAllocator(g, { now: () => clock, leaseWaitMs: 1000 });
    const answers: Allocation[] = [];
    windows.allocate('w', seq, 1n, (a) => answers.push(a));
    clock = 600;
    windows.allocate('w', seq, 1n, (a) => answers.push(a));
    clock = 1000;
    g.tick();
    assert.deepEqual(answers, [{ ok: false, error: 'windowLease' }]);
    clock = 1500;
    g.tick();
    assert.equal(answers.length, 1);
    g.set('serve');
    await settle();
    assert.deepEqual(answers[1], { ok: true, first: 1n, last: 1n }, 'the expired request used no value');
  });

  it('when another node leads (or the host fails), waiting requests are answered at once with that error', async () => {
    const g = new LeaseGroup();
    const seq = await windowKey(g, 'w');
    const windows = new WindowAllocator(g, { now: () => 0 });
    const answers: Allocation[] = [];
    windows.allocate('w', seq, 1n, (a) => answers.push(a));
    windows.allocate('w', seq, 1n, (a) => answers.push(a));
    g.set('notLeader');
    assert.deepEqual(answers, [
      { ok: false, error: 'notLeader' },
      { ok: false, error: 'notLeader' },
    ]);
    windows.allocate('w', seq, 1n, (a) => answers.push(a));
    assert.deepEqual(answers[2], { ok: false, error: 'notLeader' }, 'a new request on a follower is refused at once');
    g.lease = 'wait';
    windows.allocate('w', seq, 1n, (a) => answers.push(a));
    g.set('hostFailed');
    assert.deepEqual(answers[3], { ok: false, error: 'hostFailed' });
  });

  it('a single-voter group always serves (no lease to wait for)', () => {
    const sm = new StateMachine();
    const store = new MemoryStore();
    store.recover(sm);
    const local = new LocalGroup(sm, store);
    assert.equal(local.windowLease(), 'serve');
  });
});
