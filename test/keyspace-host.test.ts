// MultiRaftHost with a keyspace (`keyspace.mdb`): groups checkpoint their
// changes off the reply path and keep only what changed since in memory; the
// log is cut behind each checkpoint; a restart starts from the checkpoint and
// replays the log after it; a follower that fell behind the leaders' logs
// catches up through a snapshot exported from LMDB.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { inspect } from 'node:util';
import { MultiRaftHost } from '../src/multiraft/host.js';
import { MemoryKeyspace } from '../src/multiraft/memory-stores.js';
import type { RaftGroup } from '../src/multiraft/raft-group.js';
import { StateMachine, type OpResult, type StoredValue } from '../src/sequencer/state-machine.js';
import { KeyspaceStore } from '../src/storage/keyspace.js';
import { RaftLogStore } from '../src/storage/raft-lmdb.js';
import { MemoryHub, type MemoryTransport } from '../src/transport/memory.js';
import { prng, sleep, waitFor as waitUntil } from '../testkit/index.js';
import { scratchDirs } from './helpers/dirs.js';
import { Hosts, type HostExtra } from './helpers/hosts.js';

const TICK_MS = 10;
const tempDir = scratchDirs('ordo-keyspace-host-');

/** testkit's waitFor with this file's longer bound. */
const waitFor = (what: string, cond: () => boolean, timeoutMs = 8000): Promise<void> => waitUntil(what, cond, timeoutMs);

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

/** Nodes with a memory log each and a keyspace each (LMDB in a directory of its own, or in memory), every node replicating every group. */
class Nodes extends Hosts {
  constructor(ids: readonly string[], groups: readonly number[], extra: HostExtra, inMemory = false) {
    super({ ids, groups, extra, keyspace: inMemory ? 'memory' : 'lmdb', tempDir, waitMs: 8000 });
  }
}

describe('MultiRaftHost with a keyspace', () => {
  const all: Nodes[] = [];
  after(async () => {
    for (const n of all) await n.close();
  });

  it('one node: checkpoints shrink memory and cut the log; values survive a stop, and a crash with the keyspace behind the log', async () => {
    const nodes = new Nodes(['n1'], [1, 2], { checkpointIntervalMs: 30, snapshotEntries: 20, logKeepEntries: 5 });
    all.push(nodes);
    await nodes.waitLeaders();
    const expected = new Map<string, bigint>();
    const write = async (rounds: number): Promise<void> => {
      for (let round = 0; round < rounds; round++) {
        const ps: Promise<void>[] = [];
        for (const gid of nodes.groups) {
          const g = nodes.leader(gid) as RaftGroup;
          for (let i = 0; i < 10; i++) {
            const key = `g${gid}:k${(round * 7 + i) % 40}`;
            ps.push(
              incr(g, key).then((r) => {
                assert.equal(r.type, 'int');
                if (r.type === 'int') expected.set(key, r.value);
              }),
            );
          }
        }
        await Promise.all(ps);
      }
    };
    await write(60);
    const host = nodes.host('n1');
    await waitFor('checkpoints', () => host.stats().checkpoints >= 2);
    // With no writes, the next checkpoint leaves nothing in memory.
    await waitFor('the overlay to empty', () => host.stats().keysInMemory === 0);
    for (const gid of nodes.groups) {
      const g = host.group(gid) as RaftGroup;
      assert.equal(g.keyCount, 40);
      assert.ok(g.stats.checkpoints > 0 && g.stats.checkpointIndex > 0);
      assert.ok(g.node.status().firstIndex > 1, 'the log was compacted behind a checkpoint');
      assert.equal(g.stats.keysInMemory, 0);
      assert.equal(nodes.keyspace('n1').groupState(gid)?.appliedIndex, g.stats.checkpointIndex);
    }
    const check = async (): Promise<void> => {
      for (const [key, value] of expected) {
        const gid = Number(key.slice(1, key.indexOf(':')));
        assert.equal(await get(nodes.leader(gid) as RaftGroup, key), value, key);
      }
    };
    await check();

    // A clean stop checkpoints everything; the restart replays nothing. It
    // restarts with checkpoints far apart, so that the writes below stay in the
    // log only, however slowly they run.
    await nodes.stop('n1');
    nodes.start('n1', { checkpointIntervalMs: 60_000 });
    await nodes.waitLeaders();
    for (const gid of nodes.groups) assert.equal((nodes.leader(gid) as RaftGroup).keyCount, 40);
    await check();

    // No checkpoint for a while: a crash leaves the keyspace behind the log, the restart replays the log.
    const keyspaceIndex = nodes.keyspace('n1').groupState(1)?.appliedIndex ?? 0;
    await write(5);
    const appliedBefore = (nodes.leader(1) as RaftGroup).appliedIndex;
    await nodes.crash('n1');
    const restarted = nodes.start('n1');
    const g1 = restarted.group(1) as RaftGroup;
    const started = nodes.keyspace('n1').groupState(1)?.appliedIndex ?? 0;
    assert.ok(started < appliedBefore, `the keyspace (${started}) is behind the log (${appliedBefore})`);
    assert.ok(started >= keyspaceIndex);
    await nodes.waitLeaders();
    await waitFor('replay', () => g1.appliedIndex >= appliedBefore);
    await check();
  });

  it("three nodes: a follower behind the leaders' logs catches up through a snapshot exported from LMDB", async () => {
    const nodes = new Nodes(['n1', 'n2', 'n3'], [1, 2, 3], { checkpointIntervalMs: 20, snapshotEntries: 30, logKeepEntries: 5 });
    all.push(nodes);
    await nodes.waitLeaders();
    const acked = new Map<string, bigint>();
    const write = async (rounds: number): Promise<void> => {
      for (let round = 0; round < rounds; round++) {
        const ps: Promise<void>[] = [];
        for (const gid of nodes.groups) {
          const l = nodes.leader(gid);
          if (l === undefined) continue;
          for (let i = 0; i < 5; i++) {
            const key = `c${gid}:${i}:${round % 3}`;
            ps.push(
              incr(l, key).then((r) => {
                if (r.type === 'int' && r.value > (acked.get(key) ?? 0n)) acked.set(key, r.value);
              }),
            );
          }
        }
        await Promise.all(ps);
      }
    };
    await write(10);
    // Crash a node that leads no group if there is one, else any.
    const victim = nodes.ids.find((id) => nodes.groups.every((g) => nodes.leader(g)?.node.id !== id)) ?? 'n3';
    await nodes.crash(victim);
    await nodes.waitLeaders();
    await write(80);
    for (const gid of nodes.groups) {
      const l = nodes.leader(gid) as RaftGroup;
      await waitFor('a checkpoint past the victim', () => l.stats.checkpoints > 0 && l.node.status().firstIndex > 40);
    }
    const restarted = nodes.start(victim);
    await nodes.waitConverged();
    let restored = 0;
    for (const g of restarted.allGroups()) restored += g.stats.snapshotsRestored;
    assert.ok(restored > 0, 'the restarted node caught up through a snapshot');
    // What it restored is checkpointed into its own keyspace, and leaves its memory.
    await waitFor('the restarted node to checkpoint', () =>
      nodes.groups.every(
        (gid) => (restarted.group(gid) as RaftGroup).stats.checkpointIndex >= (restarted.group(gid) as RaftGroup).node.status().firstIndex - 1,
      ),
    );
    await waitFor('its overlay to empty', () => restarted.stats().keysInMemory === 0);
    for (const gid of nodes.groups) {
      const g = restarted.group(gid) as RaftGroup;
      assert.ok((nodes.keyspace(victim).groupState(gid)?.appliedIndex ?? 0) > 0);
      for (const [key, value] of acked) {
        if (!key.startsWith(`c${gid}:`)) continue;
        const v = g.peek(key);
        assert.ok(typeof v === 'bigint' && v >= value, `${key}: no acknowledged increment lost`);
      }
    }
    await write(5);
    await nodes.waitConverged();
  });

  it('a checkpoint left by an earlier replica of a group (outside its log) is ignored and wiped', async () => {
    const dir = tempDir();
    const stale = KeyspaceStore.open(dir, { fsync: 'never' });
    const old = new StateMachine(stale.backing(1));
    old.apply({ type: 'incrby', key: 'stale', delta: 5n });
    const changes = old.beginCheckpoint();
    await stale.checkpoint([{ groupId: 1, changes, appliedIndex: 500, appliedTerm: 9, conf: { voters: ['n1'], learners: [] }, keyCount: 1 }]);
    await stale.close();
    const nodes = new Nodes(['n1'], [1], { checkpointIntervalMs: 20 });
    all.push(nodes);
    // The Nodes helper opened its own directory: reopen on the stale one instead.
    await nodes.crash('n1');
    nodes.dirs.set('n1', dir);
    nodes.keyspaces.delete('n1');
    const host = nodes.start('n1');
    await nodes.waitLeaders();
    const g = host.group(1) as RaftGroup;
    assert.equal(g.peek('stale'), undefined);
    assert.equal(g.keyCount, 0);
    assert.equal((await incr(g, 'fresh')).type, 'int');
    await waitFor('a checkpoint', () => g.stats.checkpoints > 0);
    assert.equal(new StateMachine(nodes.keyspace('n1').backing(1)).getValue('stale'), undefined, 'wiped by the checkpoint');
    assert.equal(new StateMachine(nodes.keyspace('n1').backing(1)).getValue('fresh'), 1n);
  });

  it('crashes and restarts at random moments (checkpoints in flight lost): no acknowledged increment lost, replicas agree', async () => {
    const rand = prng(20261203);
    const nodes = new Nodes(['n1', 'n2', 'n3'], [1, 2], { checkpointIntervalMs: 15, snapshotEntries: 15, logKeepEntries: 3 }, true);
    all.push(nodes);
    for (const k of nodes.keyspaces.values()) assert.ok(k instanceof MemoryKeyspace);
    await nodes.waitLeaders();
    const acked = new Map<string, bigint>();
    const down = new Set<string>();
    for (let cycle = 0; cycle < 6; cycle++) {
      const writes: Promise<void>[] = [];
      for (let i = 0; i < 60; i++) {
        const gid = 1 + Math.floor(rand() * 2);
        const l = nodes.leader(gid);
        if (l === undefined) {
          await sleep(5);
          continue;
        }
        const key = `r${gid}:${Math.floor(rand() * 8)}`;
        writes.push(
          incr(l, key).then((r) => {
            if (r.type === 'int' && r.value > (acked.get(key) ?? 0n)) acked.set(key, r.value);
          }),
        );
        if (i % 10 === 0) await sleep(Math.floor(rand() * 10));
      }
      // Crash one node while writes and checkpoints are in flight; restart it (or another) later.
      const victim = nodes.ids[Math.floor(rand() * 3)] as string;
      if (!down.has(victim) && down.size === 0) {
        await nodes.crash(victim);
        down.add(victim);
      }
      await Promise.all(writes);
      if (down.size > 0 && rand() < 0.7) {
        for (const id of down) nodes.start(id);
        down.clear();
      }
      await nodes.waitLeaders();
    }
    for (const id of down) nodes.start(id);
    await nodes.waitLeaders();
    // A write per group so every replica learns the final commit index.
    for (const gid of nodes.groups) await incr(nodes.leader(gid) as RaftGroup, `r${gid}:final`);
    await nodes.waitConverged();
    for (const [key, value] of acked) {
      const gid = Number(key.slice(1, key.indexOf(':')));
      const v = await get(nodes.leader(gid) as RaftGroup, key);
      assert.ok(typeof v === 'bigint' && v >= value, `${key}: ${inspect(v)} below the acknowledged ${value}`);
    }
    let checkpoints = 0;
    for (const h of nodes.hosts.values()) checkpoints += h.stats().checkpoints;
    assert.ok(checkpoints > 0);
    let restored = 0;
    for (const h of nodes.hosts.values()) for (const g of h.allGroups()) restored += g.stats.snapshotsRestored;
    assert.ok(restored > 0, 'some replica caught up through a snapshot');
  });

  it('one node on disk (raft.mdb and keyspace.mdb): values and the cut log survive a stop, and a crash behind the log', async () => {
    const dir = tempDir();
    const hub = new MemoryHub();
    const open = (): { host: MultiRaftHost; log: RaftLogStore; keyspace: KeyspaceStore; transport: MemoryTransport } => {
      const log = RaftLogStore.open(dir, { fsync: 'never' });
      const keyspace = KeyspaceStore.open(dir, { fsync: 'never' });
      const transport = hub.transport('n1');
      transport.setPeers(new Map());
      const host = new MultiRaftHost({
        nodeId: 'n1',
        transport,
        store: log,
        keyspace,
        random: prng(3),
        tickIntervalMs: TICK_MS,
        checkpointIntervalMs: 20,
        snapshotEntries: 10,
        logKeepEntries: 2,
      });
      host.addGroup(1, ['n1']);
      return { host, log, keyspace, transport };
    };
    let node = open();
    const leader = async (): Promise<RaftGroup> => {
      const g = node.host.group(1) as RaftGroup;
      await waitFor('leader', () => g.isLeader());
      return g;
    };
    let g = await leader();
    for (let i = 0; i < 100; i++) assert.deepEqual(await incr(g, `d${i % 20}`), { type: 'int', value: BigInt(Math.floor(i / 20) + 1) });
    await waitFor('a checkpoint', () => g.stats.checkpoints > 0 && g.node.status().firstIndex > 1);
    // A clean stop: host, then the stores.
    await node.host.close();
    await node.keyspace.close();
    await node.log.close();
    await node.transport.close();
    node = open();
    g = await leader();
    assert.equal(g.keyCount, 20);
    assert.equal(await get(g, 'd7'), 5n);
    // A crash right after more writes: the keyspace is behind the log, the restart replays it.
    for (let i = 0; i < 7; i++) await incr(g, 'late');
    const applied = g.appliedIndex;
    node.host.halt();
    await node.keyspace.close();
    await node.log.close();
    await node.transport.close();
    node = open();
    g = await leader();
    await waitFor('replay', () => g.appliedIndex >= applied);
    assert.equal(await get(g, 'late'), 7n);
    assert.equal(await get(g, 'd19'), 5n);
    node.host.halt();
    await node.keyspace.close();
    await node.log.close();
    await node.transport.close();
    await hub.close();
  });

  it('an in-memory keyspace (MemoryKeyspace) serves the same path', async () => {
    const nodes = new Nodes(['n1', 'n2', 'n3'], [1], { checkpointIntervalMs: 20, snapshotEntries: 20, logKeepEntries: 3 }, true);
    all.push(nodes);
    await nodes.waitLeaders();
    for (let i = 0; i < 100; i++) assert.equal((await incr(nodes.leader(1) as RaftGroup, `m${i % 10}`)).type, 'int');
    await nodes.waitConverged();
    await waitFor('checkpoints', () => nodes.replicas(1).every((r) => r.stats.checkpoints > 0));
    assert.equal(await get(nodes.leader(1) as RaftGroup, 'm3'), 10n);
  });
});
