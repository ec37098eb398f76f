import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { MemoryHub } from '../src/transport/memory.js';
import { MultiRaftHost } from '../src/multiraft/host.js';
import { MemoryRaftLogStore } from '../src/multiraft/memory-stores.js';
import { ERROR_KEY_OF, type RaftGroup } from '../src/multiraft/raft-group.js';
import { WRITE_NOT_APPLIED, type ErrorKey } from '../src/errors.js';
import { snapshotState } from '../src/sequencer/codec.js';
import type { OpResult, StoredValue } from '../src/sequencer/state-machine.js';
import { prng, sleep, waitFor } from '../testkit/index.js';
import { Hosts, type HostExtra } from './helpers/hosts.js';

const NODES = ['n1', 'n2', 'n3'];
const GROUPS = [1, 2, 3, 4];
const TICK_MS = 10;
const NOT_APPLIED = ERROR_KEY_OF.notLeader;
const notApplied = (e: string): boolean => WRITE_NOT_APPLIED.has(e as ErrorKey);
const UNKNOWN = ERROR_KEY_OF.outcomeUnknown;

/** The hosts of these tests: three nodes replicating four groups, state in memory. */
class Cluster extends Hosts {
  constructor(extra: HostExtra = {}, commitDelayMs = 0) {
    super({ ids: NODES, groups: GROUPS, extra, commitDelayMs });
  }
}

function incr(g: RaftGroup, key: string): Promise<OpResult> {
  return new Promise((resolve) => g.propose({ type: 'incrby', key, delta: 1n }, resolve));
}

function get(g: RaftGroup, key: string): Promise<StoredValue | undefined> {
  return new Promise((resolve, reject) =>
    g.read(
      (sm) => sm.getValue(key),
      (o) => (o.ok ? resolve(o.value) : reject(new Error(`read failed: ${o.error}`))),
    ),
  );
}

/** Every acknowledged INCR value per key: unique, and never above what a later read sees. */
class Ledger {
  readonly acked = new Map<string, bigint[]>();
  record(key: string, r: OpResult): void {
    if (r.type !== 'int') return;
    let list = this.acked.get(key);
    if (list === undefined) this.acked.set(key, (list = []));
    list.push(r.value);
  }
  checkUnique(): void {
    for (const [key, values] of this.acked) {
      assert.equal(new Set(values).size, values.length, `duplicate value acknowledged for ${key}`);
    }
  }
  max(key: string): bigint {
    let m = 0n;
    for (const v of this.acked.get(key) ?? []) if (v > m) m = v;
    return m;
  }
}

describe('multiraft: 3 hosts, 4 groups, memory bus', () => {
  const clusters: Cluster[] = [];
  after(async () => {
    for (const c of clusters) await c.close();
  });

  it('elects leaders, batches a turn into one entry, replicas agree, reads see writes', async () => {
    const c = new Cluster();
    clusters.push(c);
    const leaders = await c.waitLeaders();
    const ledger = new Ledger();
    const CLIENTS = 200;
    for (const [gid, leader] of leaders) {
      // Wait until the leader's no-op committed so the turn's entry is the only one we look at.
      await waitFor('no-op applied', () => leader.appliedIndex >= leader.node.status().commit && leader.node.status().commit > 0);
      const before = leader.stats;
      const pending: Promise<void>[] = [];
      for (let i = 0; i < CLIENTS; i++) {
        const key = `g${gid}:k${i % 10}`;
        pending.push(incr(leader, key).then((r) => ledger.record(key, r)));
      }
      await Promise.all(pending);
      const after = leader.stats;
      assert.equal(after.entriesProposed - before.entriesProposed, 1, 'one entry for the whole turn');
      assert.equal(after.opsProposed - before.opsProposed, CLIENTS);
      assert.ok(after.opsPerEntryMax >= CLIENTS);
      assert.equal(after.opsPersisted - before.opsPersisted, CLIENTS);
    }
    ledger.checkUnique();
    for (const gid of GROUPS) {
      for (let k = 0; k < 10; k++) assert.equal(ledger.max(`g${gid}:k${k}`), BigInt(CLIENTS / 10));
    }
    // Linearizable reads at the leader and through followers (forwarded ReadIndex).
    for (const gid of GROUPS) {
      for (const r of c.replicas(gid)) {
        assert.equal(await get(r, `g${gid}:k3`), BigInt(CLIENTS / 10));
      }
    }
    await c.waitConverged();
    const hs = c.host('n1').stats();
    assert.ok(hs.framesSent > 0 && hs.badFrames === 0);
    // A bad frame from a peer is dropped and counted; the node keeps going.
    c.transports.get('n2')?.send('n1', Uint8Array.of(1, 5, 0, 0xff));
    c.transports.get('n2')?.send('n1', Uint8Array.of(77));
    await waitFor('bad frames counted', () => c.host('n1').stats().badFrames === 2);
    const l1 = c.leader(1);
    assert.ok(l1 !== undefined);
    assert.equal((await incr(l1, 'after-junk')).type, 'int');
  });

  it('a follower refuses writes cleanly; backpressure past the in-flight limit', async () => {
    const c = new Cluster({ proposalsInFlightMax: 50 });
    clusters.push(c);
    const leaders = await c.waitLeaders();
    const leader = leaders.get(1);
    assert.ok(leader !== undefined);
    const follower = c.replicas(1).find((r) => !r.isLeader());
    assert.ok(follower !== undefined);
    const r = await incr(follower, 'x');
    assert.deepStrictEqual(r, { type: 'error', error: NOT_APPLIED });
    const results = await Promise.all(Array.from({ length: 80 }, () => incr(leader, 'bp')));
    const ok = results.filter((x) => x.type === 'int').length;
    const refused = results.filter((x) => x.type === 'error' && notApplied(x.error)).length;
    assert.equal(ok, 50);
    assert.equal(refused, 30);
    assert.equal(await get(leader, 'bp'), 50n);
    // close() answers what is in flight, then refuses new work.
    const last = incr(leader, 'bp');
    const host = c.host(leader.node.id);
    await host.close();
    const lastResult = await last;
    assert.ok(lastResult.type === 'int' || (lastResult.type === 'error' && (lastResult.error === UNKNOWN || notApplied(lastResult.error))));
    assert.deepStrictEqual(await incr(leader, 'bp'), { type: 'error', error: 'shuttingDown' });
  });

  it('partitioned leader: truthful errors, new leader, writes resume, nothing falsely failed', async () => {
    const c = new Cluster();
    clusters.push(c);
    const leaders = await c.waitLeaders();
    const old = leaders.get(1);
    assert.ok(old !== undefined);
    const oldId = old.node.id;
    const ledger = new Ledger();
    // Warm up the group.
    ledger.record('w', await incr(old, 'w'));

    c.hub.isolate(oldId);
    // Writes to the isolated leader, each on its own key so its fate can be checked later.
    const attempts: { key: string; result: Promise<OpResult> }[] = [];
    for (let i = 0; i < 30; i++) {
      const key = `p${i}`;
      attempts.push({ key, result: incr(old, key) });
      if (i % 5 === 4) await sleep(30);
    }
    const settled = await Promise.all(attempts.map((a) => a.result));
    for (const r of settled) {
      assert.equal(r.type, 'error', 'an isolated leader cannot commit');
      if (r.type === 'error') assert.ok(notApplied(r.error) || r.error === UNKNOWN, `unexpected ${r.error}`);
    }
    assert.ok(
      settled.some((r) => r.type === 'error' && r.error === UNKNOWN),
      'some writes were proposed before step-down',
    );
    assert.equal(old.isLeader(), false, 'check-quorum stepped the isolated leader down');

    const fresh = (await c.waitLeaders([oldId])).get(1);
    assert.ok(fresh !== undefined && fresh.node.id !== oldId);
    for (let i = 0; i < 20; i++) ledger.record('w', await incr(fresh, 'w'));

    c.hub.healAll();
    await c.waitConverged();
    // A write answered "not applied" is not in the state; "unknown" may be either.
    const leaderNow = c.leader(1);
    assert.ok(leaderNow !== undefined);
    for (let i = 0; i < attempts.length; i++) {
      const r = settled[i];
      const v = await get(leaderNow, `p${i}`);
      if (r !== undefined && r.type === 'error' && notApplied(r.error)) assert.equal(v, undefined, `p${i} applied but reported not applied`);
    }
    ledger.checkUnique();
    assert.equal(await get(leaderNow, 'w'), ledger.max('w'));
  });

  it('crash and restart: catches up through a snapshot; state machines match', async () => {
    const c = new Cluster({ snapshotEntries: 40, logKeepEntries: 5 });
    clusters.push(c);
    let leaders = await c.waitLeaders();
    const ledger = new Ledger();
    const write = async (rounds: number): Promise<void> => {
      for (let round = 0; round < rounds; round++) {
        const ps: Promise<void>[] = [];
        for (const gid of GROUPS) {
          const l = c.leader(gid);
          if (l === undefined) continue;
          for (let i = 0; i < 5; i++) {
            const key = `c${gid}:${i}`;
            ps.push(incr(l, key).then((r) => ledger.record(key, r)));
          }
        }
        await Promise.all(ps);
      }
    };
    await write(10);
    // Crash the node leading group 1 (in-flight writes there become "outcome unknown").
    const victim = leaders.get(1)?.node.id;
    assert.ok(victim !== undefined);
    const inFlight = incr(c.leader(1) as RaftGroup, 'c1:0');
    await c.crash(victim);
    const r = await inFlight;
    ledger.record('c1:0', r);
    if (r.type === 'error') assert.ok(r.error === UNKNOWN || notApplied(r.error), r.error); // queued only: not applied

    leaders = await c.waitLeaders([victim]);
    await write(80); // past the snapshot threshold: the survivors compact beyond the victim's log
    for (const l of leaders.values()) assert.ok(l.stats.snapshotsCreated > 0, 'leaders snapshotted');

    const restarted = c.start(victim);
    await c.waitConverged(8000);
    let restored = 0;
    for (const g of restarted.allGroups()) restored += g.stats.snapshotsRestored;
    assert.ok(restored > 0, 'the restarted node caught up through a snapshot');
    await write(5);
    await c.waitConverged();
    ledger.checkUnique();
    for (const gid of GROUPS) {
      const l = c.leader(gid);
      assert.ok(l !== undefined);
      for (let i = 0; i < 5; i++) {
        const v = await get(l, `c${gid}:${i}`);
        assert.ok(typeof v === 'bigint' && v >= ledger.max(`c${gid}:${i}`), 'no acknowledged increment lost');
      }
    }
  });

  it('restart of every node recovers state from storage (log replay and snapshot)', async () => {
    const c = new Cluster({ snapshotEntries: 30, logKeepEntries: 5 });
    clusters.push(c);
    await c.waitLeaders();
    const ledger = new Ledger();
    for (let round = 0; round < 45; round++) {
      const l = c.leader(2);
      if (l === undefined) {
        await sleep(10);
        continue;
      }
      ledger.record('r', await incr(l, 'r'));
    }
    const expected = ledger.max('r');
    await c.waitConverged();
    for (const id of NODES) await c.crash(id);
    for (const id of NODES) c.start(id);
    // Before any new election, each replica already holds what was durable and committed on it.
    for (const r of c.replicas(2)) {
      await waitFor('replay', () => r.appliedIndex >= r.node.status().commit);
    }
    const leaders = await c.waitLeaders();
    const l2 = leaders.get(2);
    assert.ok(l2 !== undefined);
    assert.equal(await get(l2, 'r'), expected);
    ledger.record('r', await incr(l2, 'r'));
    ledger.checkUnique();
    assert.equal(ledger.max('r'), expected + 1n);
    await c.waitConverged();
  });

  it('a write that cannot commit in time is answered "outcome unknown"; reads time out', async () => {
    // Without check-quorum the isolated leader keeps believing it leads; only the timeout answers.
    const c = new Cluster({ requestTimeoutMs: 150, raft: { checkQuorum: false } });
    clusters.push(c);
    const leaders = await c.waitLeaders();
    const l = leaders.get(4);
    assert.ok(l !== undefined);
    assert.equal((await incr(l, 'to')).type, 'int');
    c.hub.isolate(l.node.id);
    const t0 = Date.now();
    const r = await incr(l, 'to');
    assert.deepStrictEqual(r, { type: 'error', error: UNKNOWN });
    assert.ok(Date.now() - t0 >= 140);
    await assert.rejects(get(l, 'to'), /read failed/);
    assert.ok(l.stats.failures.outcomeUnknown >= 1 && l.stats.failures.readTimeout >= 1);
    c.hub.healAll();
    await c.waitConverged();
  });

  it('leadership listeners fire on gain and loss', async () => {
    const c = new Cluster();
    clusters.push(c);
    const events: string[] = [];
    for (const r of c.replicas(3)) r.onLeadershipChange((isLeader) => events.push(`${r.node.id}:${isLeader ? 'up' : 'down'}`));
    const leaders = await c.waitLeaders();
    const l = leaders.get(3);
    assert.ok(l !== undefined);
    await waitFor('gain event', () => events.includes(`${l.node.id}:up`));
    c.hub.isolate(l.node.id);
    await waitFor('loss event', () => events.includes(`${l.node.id}:down`));
    c.hub.healAll();
  });

  for (const commitDelayMs of [0, 2]) {
    it(`throughput through 3 in-process hosts, ${commitDelayMs} ms per storage commit (reported, not asserted)`, async (t) => {
      const c = new Cluster({}, commitDelayMs);
      clusters.push(c);
      const leaders = await c.waitLeaders();
      const start = performance.now();
      let done = 0;
      const CLIENTS = 500;
      const DURATION_MS = 1000;
      const client = async (gid: number, n: number): Promise<void> => {
        const l = leaders.get(gid);
        assert.ok(l !== undefined);
        while (performance.now() - start < DURATION_MS) {
          const r = await incr(l, `t${n % 50}`);
          assert.equal(r.type, 'int');
          done++;
        }
      };
      await Promise.all(Array.from({ length: CLIENTS }, (_, n) => client(GROUPS[n % GROUPS.length] as number, n)));
      const secs = (performance.now() - start) / 1000;
      t.diagnostic(`${Math.round(done / secs)} INCR/s with ${commitDelayMs} ms commits, ${CLIENTS} clients over 4 groups, 3 hosts in one process`);
      const l = leaders.get(1);
      if (l !== undefined) t.diagnostic(`group 1: ${l.stats.opsProposed} ops in ${l.stats.entriesProposed} entries`);
      assert.ok(done > 0);
      await c.waitConverged();
      for (const gid of GROUPS) {
        // The whole state, byte for byte (keys, values, sequences, tokens), not just its size.
        const states = c.replicas(gid).map((r) => snapshotState(r.stateMachine).toString('base64'));
        assert.equal(new Set(states).size, 1);
      }
    });
  }
});

describe('multiraft: storage failure', () => {
  it('a failed storage commit stops the host; waiting writes are "outcome unknown"', async () => {
    const hub = new MemoryHub();
    const inner = new MemoryRaftLogStore();
    let failNext = false;
    const store = {
      group: inner.group.bind(inner),
      commitTurn: (): Promise<void> => (failNext ? Promise.reject(new Error('disk full')) : inner.commitTurn()),
    };
    const host = new MultiRaftHost({ nodeId: 'solo', transport: hub.transport('solo'), store, random: prng(5), tickIntervalMs: TICK_MS });
    const g = host.addGroup(1, ['solo']);
    try {
      await waitFor('single voter leads', () => g.isLeader());
      assert.equal((await incr(g, 'k')).type, 'int');
      failNext = true;
      const r = await incr(g, 'k');
      assert.deepStrictEqual(r, { type: 'error', error: UNKNOWN });
      assert.equal(host.stats().failed, true);
      assert.deepStrictEqual(await incr(g, 'k'), { type: 'error', error: ERROR_KEY_OF.hostFailed });
    } finally {
      host.halt();
      await hub.close();
    }
  });
});

/** A write whose answer is recorded with the leader its replica named at that moment. */
interface Tracked {
  readonly key: string;
  readonly at: RaftGroup;
  result: OpResult | null;
  /** `at.leaderId()` when the answer came (the router's forward / redirect target). */
  leaderAtAnswer: string | null;
  readonly answered: Promise<void>;
}

function track(at: RaftGroup, key: string): Tracked {
  let resolve: () => void = () => {};
  const answered = new Promise<void>((r) => (resolve = r));
  const t: Tracked = { key, at, result: null, leaderAtAnswer: null, answered };
  at.propose({ type: 'incrby', key, delta: 1n }, (r) => {
    assert.equal(t.result, null, `${key} answered twice`);
    t.result = r;
    t.leaderAtAnswer = at.leaderId();
    resolve();
  });
  return t;
}

describe('multiraft: writes wait (bounded) for an election', () => {
  const clusters: Cluster[] = [];
  after(async () => {
    for (const c of clusters) await c.close();
  });

  it('writes issued during an election are proposed by the winner, refused with its name elsewhere', async () => {
    const c = new Cluster();
    clusters.push(c);
    const leaders = await c.waitLeaders();
    const old = leaders.get(1);
    assert.ok(old !== undefined);
    const oldId = old.node.id;
    assert.equal((await incr(old, 'e:warm')).type, 'int');
    const [a, b] = NODES.filter((n) => n !== oldId) as [string, string];
    // Kill the leader, and keep the survivors apart so the election cannot end before the writes arrive.
    c.hub.partition(a, b);
    await c.crash(oldId);
    const survivors = c.replicas(1);
    assert.equal(survivors.length, 2);
    await waitFor('both survivors know no leader (election in progress)', () => survivors.every((r) => !r.isLeader() && r.leaderId() === null));
    const writes: Tracked[] = [];
    const reads: Promise<StoredValue | undefined>[] = [];
    for (const r of survivors) {
      for (let i = 0; i < 5; i++) writes.push(track(r, `e:${r.node.id}:${i}`));
      reads.push(get(r, 'e:warm'));
    }
    // Before: refused at once with noLeader. Now: nothing is answered while the election runs.
    assert.ok(
      writes.every((w) => w.result === null),
      'writes wait for the election instead of failing at once',
    );

    c.hub.heal(a, b);
    await Promise.all(writes.map((w) => w.answered));
    const winner = c.leader(1);
    assert.ok(winner !== undefined && winner.node.id !== oldId);
    for (const w of writes) {
      if (w.at === winner) {
        assert.deepStrictEqual(w.result, { type: 'int', value: 1n }, `${w.key} proposed once at the new leader`);
      } else {
        assert.deepStrictEqual(w.result, { type: 'error', error: ERROR_KEY_OF.notLeader }, w.key);
        assert.equal(w.leaderAtAnswer, winner.node.id, `${w.key}: notLeader names the new leader`);
      }
    }
    // Reads issued during the election were served once a leader existed.
    for (const v of await Promise.all(reads)) assert.equal(v, 1n);

    // After the old leader returns: the proposed writes are there once, the refused ones are not.
    c.start(oldId);
    await c.waitConverged(8000);
    const l = c.leader(1);
    assert.ok(l !== undefined);
    for (const w of writes) {
      assert.equal(await get(l, w.key), w.result?.type === 'int' ? 1n : undefined, w.key);
    }
  });

  it('with no possible leader, a write gets noLeader after the bound and was not applied; the wait is bounded in count', async () => {
    const LEADER_WAIT_MS = 300;
    const IN_FLIGHT_MAX = 4;
    const c = new Cluster({ requestTimeoutMs: LEADER_WAIT_MS, proposalsInFlightMax: IN_FLIGHT_MAX });
    clusters.push(c);
    await c.waitLeaders();
    for (const id of NODES) c.hub.isolate(id); // no majority anywhere
    const replicas = c.replicas(2);
    await waitFor('group 2 knows no leader on any replica', () => replicas.every((r) => !r.isLeader() && r.leaderId() === null));
    const writes: Tracked[] = [];
    for (const r of replicas) {
      const here: Tracked[] = [];
      for (let i = 0; i < IN_FLIGHT_MAX + 2; i++) here.push(track(r, `nl:${r.node.id}:${i}`));
      // Past the count bound: refused at once; the others wait.
      assert.equal(here.filter((w) => w.result === null).length, IN_FLIGHT_MAX);
      for (const w of here.slice(IN_FLIGHT_MAX)) assert.deepStrictEqual(w.result, { type: 'error', error: ERROR_KEY_OF.overloaded });
      writes.push(...here);
    }
    // A read also waits for a leader, bounded by the request timeout.
    const first = replicas[0];
    assert.ok(first !== undefined);
    const readTimedOut = assert.rejects(get(first, 'nl:x'), /read failed: readTimeout/);
    await Promise.all(writes.map((w) => w.answered));
    for (const w of writes.filter((x) => x.result?.type === 'error' && x.result.error !== ERROR_KEY_OF.overloaded)) {
      assert.deepStrictEqual(w.result, { type: 'error', error: ERROR_KEY_OF.noLeader }, w.key);
    }
    await readTimedOut;
    for (const r of replicas) assert.ok(r.stats.failures.noLeader >= IN_FLIGHT_MAX);

    c.hub.healAll();
    const l = (await c.waitLeaders()).get(2);
    assert.ok(l !== undefined);
    assert.equal((await incr(l, 'nl:after')).type, 'int');
    await c.waitConverged();
    for (const w of writes) assert.equal(await get(l, w.key), undefined, `${w.key} answered "not applied" but applied`);
  });
});

describe('multiraft: a single-voter group', () => {
  it('leads at once on start and on restart, with no tick elapsed', async () => {
    const hub = new MemoryHub();
    const store = new MemoryRaftLogStore();
    // No tick can fire during this test: any election timeout would need ticks.
    const NO_TICKS_MS = 3_600_000;
    const start = (): MultiRaftHost =>
      new MultiRaftHost({ nodeId: 'solo', transport: hub.transport('solo'), store, random: prng(11), tickIntervalMs: NO_TICKS_MS });
    let host = start();
    try {
      const g = host.addGroup(1, ['solo']);
      assert.equal(g.isLeader(), true, 'leader before any tick or loop turn');
      assert.equal(g.leaderId(), 'solo');
      assert.deepStrictEqual(await incr(g, 'k'), { type: 'int', value: 1n });
      assert.deepStrictEqual(await get(g, 'k'), 1n);
      // A group with other voters still waits for an election.
      const multi = host.addGroup(2, ['solo', 'other1', 'other2']);
      assert.equal(multi.isLeader(), false);
      assert.equal(host.stats().ticks, 0);
      const term = g.node.status().term;

      // Restart from storage (kill -9 after the acknowledged write): leads again at once, in a newer term.
      host.halt();
      store.crash();
      await hub.close();
      host = start();
      const again = host.addGroup(1, ['solo']);
      assert.equal(again.isLeader(), true, 'leader again before any tick');
      assert.ok(again.node.status().term > term);
      assert.deepStrictEqual(await incr(again, 'k'), { type: 'int', value: 2n });
      assert.equal(host.stats().ticks, 0);
    } finally {
      host.halt();
      await hub.close();
    }
  });
});
