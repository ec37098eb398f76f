// A 3-member cluster in one process over the in-memory bus: three
// OrdoServers, each with its own LMDB data directory and a client port on
// loopback, their bus one MemoryHub, so a test can cut members apart. What a
// client sees: any member answers every key; when the leader of a group is
// isolated, writes through the others resume under a new leader and no value
// is handed out twice, and once healed the member catches up and leads again;
// across a partition between two members, the member in between serves every
// group and a write that cannot reach its group's leader is answered "not
// applied" and is not applied.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { DEFAULT_CONFIG, type Config } from '../src/config.js';
import { bootstrapFromList } from '../src/cluster/members.js';
import { ERR } from '../src/errors.js';
import { OrdoServer } from '../src/server/server.js';
import { MemoryHub } from '../src/transport/memory.js';
import { keyOfGroup, settledLeaders } from '../testkit/cluster.js';
import { parseRaftGroups, type RaftGroupInfo } from '../testkit/info.js';
import { freePort, removeDir, tempDir } from '../testkit/processes.js';
import { sleep, waitFor } from '../testkit/wait.js';

const GROUPS = 4;
/** Short, so that a write that cannot be served is answered quickly. */
const REQUEST_TIMEOUT_MS = 2000;
/** The longest a test waits for the cluster to recover from a fault. */
const RECOVERY_WAIT_MS = 10_000;

interface Member {
  readonly port: number;
  readonly dataDir: string;
  /** Its node id, as CLUSTER MYID answers. */
  id: string;
  server: OrdoServer | null;
}

/** Polls `check` until it returns true, failing with `what` after RECOVERY_WAIT_MS. */
function eventually(what: string, check: () => Promise<boolean>): Promise<void> {
  return waitFor(what, check, RECOVERY_WAIT_MS, 50);
}

/** How a write that failed was answered: not applied (certain), or outcome unknown. */
function failure(e: unknown): 'notApplied' | 'unknown' {
  const message = (e as Error).message;
  if (/^TIMEOUT /.test(message)) return 'unknown';
  assert.match(message, /not applied$/, 'a failed write says whether it was applied');
  return 'notApplied';
}

/** Per key, acknowledged values only grow and none repeats; gaps are at most the writes whose outcome is unknown. */
function assertNoValueTwice(acked: readonly number[], unknown: number): void {
  for (let i = 1; i < acked.length; i++) {
    assert.ok((acked[i] as number) > (acked[i - 1] as number), `value ${acked[i]} acknowledged after ${acked[i - 1]}: ${acked.join(',')}`);
  }
  assert.equal(new Set(acked).size, acked.length);
  assert.ok((acked.at(-1) as number) <= acked.length + unknown, `acknowledged ${acked.join(',')} with ${unknown} unknown outcomes`);
}

describe('cluster over the in-memory bus: three members in one process', () => {
  const hub = new MemoryHub();
  const members: Member[] = [];
  let list = '';
  const clients: Redis[] = [];
  const byPort = new Map<number, Redis>();
  /** A plain client of `m` (one per member; a fresh one with `fresh`). */
  const client = (m: Member, fresh = false): Redis => {
    const cached = byPort.get(m.port);
    if (cached !== undefined && !fresh) return cached;
    const c = new Redis({ port: m.port, host: '127.0.0.1', maxRetriesPerRequest: 0 });
    c.on('error', () => {});
    clients.push(c);
    if (!fresh) byPort.set(m.port, c);
    return c;
  };
  const byId = (id: string | undefined): Member => {
    const m = members.find((x) => x.id === id);
    assert.ok(m !== undefined, `no member ${id}`);
    return m;
  };
  const raftOf = async (m: Member, groupId: number): Promise<RaftGroupInfo | undefined> => parseRaftGroups(String(await client(m).info('raft'))).get(groupId);
  /** Members `m` shows as down in CLUSTER NODES (asked on a connection of its own: asking makes it cluster-aware). */
  const failedSeenBy = async (m: Member): Promise<string[]> => {
    const c = client(m, true);
    const nodes = String(await c.call('CLUSTER', 'NODES'));
    c.disconnect();
    return nodes
      .split('\n')
      .filter((line) => /^\S+ \S+ \S*fail/.test(line))
      .map((line) => line.split(' ')[0] as string);
  };

  /** Waits until every group is led by its preferred leader (where balancing leaves them), which all members name. */
  async function balanced(): Promise<Map<number, string>> {
    const preferred = new Map(bootstrapFromList(list, GROUPS).groups.map((g) => [g.id, g.preferredLeader] as const));
    let leaders = new Map<number, string>();
    await eventually('leaders settle on their preferred members', async () => {
      leaders = await settledLeaders(
        members.map((m) => client(m)),
        GROUPS,
      );
      return [...preferred].every(([g, id]) => leaders.get(g) === id);
    });
    return leaders;
  }

  before(async () => {
    for (let i = 0; i < 3; i++) members.push({ port: await freePort(), dataDir: tempDir(`cluster-mem-${i}`), id: '', server: null });
    // The bus ports are part of the member list (and of the node ids' topology) but nothing listens on them: the bus is the hub.
    const busPorts = [await freePort(), await freePort(), await freePort()];
    list = members.map((m, i) => `127.0.0.1:${m.port}@${busPorts[i]}`).join(',');
    const config = (m: Member): Config => ({
      ...DEFAULT_CONFIG,
      port: m.port,
      dataDir: m.dataDir,
      cluster: list,
      groups: GROUPS,
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
      explicit: new Set(['port', 'cluster', 'groups']),
    });
    // Every start settles before `after` runs, so each server that started is stopped.
    const started = await Promise.allSettled(members.map(async (m) => (m.server = await OrdoServer.start(config(m), { bus: hub }))));
    for (const r of started) if (r.status === 'rejected') throw r.reason;
    for (const m of members) m.id = String(await client(m).call('CLUSTER', 'MYID'));
  });

  after(async () => {
    for (const c of clients) c.disconnect();
    hub.healAll(); // a stopping member hands its groups over
    await Promise.allSettled(members.map((m) => m.server?.stop() ?? Promise.resolve()));
    await hub.close();
    for (const m of members) removeDir(m.dataDir);
  });

  it('any member answers INCR on keys of every group, values consecutive; CLUSTER SLOTS covers every slot', async () => {
    await settledLeaders(
      members.map((m) => client(m)),
      GROUPS,
    );
    const keys = Array.from({ length: GROUPS }, (_, i) => keyOfGroup(GROUPS, i + 1, 'fw'));
    let expected = 0;
    for (let round = 0; round < 3; round++) {
      for (const m of members) {
        expected++;
        for (const key of keys) assert.equal(await client(m).incr(key), expected, `INCR ${key} through ${m.port}`);
      }
    }
    for (const m of members) for (const key of keys) assert.equal(await client(m).get(key), String(expected));
    const slots = (await client(members[0] as Member, true).call('CLUSTER', 'SLOTS')) as [number, number, [string, number, string]][];
    let next = 0;
    for (const [start, end, master] of slots) {
      assert.equal(start, next);
      next = end + 1;
      assert.equal(byId(master[2]).port, master[1]); // a member, at its client port
    }
    assert.equal(next, 16384);
  });

  it('an isolated leader is replaced, no value is handed out twice; healed, it catches up and leads again', async () => {
    const groupId = 2;
    const leaders = await balanced();
    const isolated = byId(leaders.get(groupId));
    const [other, third] = members.filter((m) => m !== isolated) as [Member, Member];
    const key = keyOfGroup(GROUPS, groupId, 'iso');
    const acked: number[] = [];
    let unknown = 0;
    for (let i = 0; i < 3; i++) acked.push(await client(other).incr(key));

    hub.isolate(isolated.id);
    let committed: number;
    try {
      // A write through the isolated leader cannot be replicated: it is refused, never acknowledged.
      const throughIsolated = client(isolated)
        .incr(key)
        .then(
          (v) => assert.fail(`the isolated member acknowledged ${v}`),
          (e: unknown) => {
            if (failure(e) === 'unknown') unknown++;
          },
        );
      // Through another member, writes resume once a new leader is elected.
      const deadline = Date.now() + RECOVERY_WAIT_MS;
      for (let resumed = 0; resumed < 5;) {
        assert.ok(Date.now() < deadline, `writes through another member did not resume within ${RECOVERY_WAIT_MS} ms`);
        try {
          acked.push(await client(other).incr(key));
          resumed++;
        } catch (e) {
          if (failure(e) === 'unknown') unknown++;
          await sleep(50);
        }
      }
      await throughIsolated;
      const newLeader = byId((await raftOf(other, groupId))?.leader ?? undefined);
      assert.notEqual(newLeader, isolated);
      committed = (await raftOf(newLeader, groupId))?.commit ?? Number.NaN;
      assert.deepEqual(await failedSeenBy(other), [isolated.id]);
      assert.deepEqual(await failedSeenBy(third), [isolated.id]);
    } finally {
      hub.unisolate(isolated.id);
    }
    assertNoValueTwice(acked, unknown);

    // Healed: its replica applies everything committed meanwhile, and GET through it returns the latest value.
    const last = acked.at(-1) as number;
    await eventually(
      'the healed member applies what was committed while it was cut off',
      async () => ((await raftOf(isolated, groupId))?.applied ?? Number.NaN) >= committed,
    );
    const latest = Number(await client(isolated).get(key));
    assert.ok(latest >= last && latest <= last + unknown, `GET ${latest} after the last acknowledged ${last}`);
    // Leadership returns to it (its preferred leader) and it serves the latest value itself.
    await eventually('leadership returns to the healed member', async () => (await raftOf(isolated, groupId))?.role === 'leader');
    assert.equal(Number(await client(isolated).get(key)), latest);
    assert.equal(await client(third).incr(key), latest + 1);
    assert.deepEqual(await failedSeenBy(other), []);
  });

  it('a cut link between two members is routed around: the member in between relays', async () => {
    const leaders = await balanced();
    const [a, b, between] = members as [Member, Member, Member];
    const keys = Array.from({ length: GROUPS }, (_, i) => keyOfGroup(GROUPS, i + 1, 'part'));
    const value = new Map<string, number>(keys.map((k) => [k, 0]));
    const incr = async (m: Member, key: string): Promise<void> => {
      const expected = (value.get(key) as number) + 1;
      assert.equal(await client(m).incr(key), expected, `INCR ${key} through ${m.port}`);
      value.set(key, expected);
    };
    const ledBy = (m: Member): string[] => keys.filter((_, i) => leaders.get(i + 1) === m.id);
    assert.ok(ledBy(a).length > 0 && ledBy(b).length > 0, 'every member leads a group once balanced');

    hub.partition(a.id, b.id);
    try {
      // Every member serves every group: a write whose leader is across the cut link goes through the member in between.
      for (const m of [between, a, b]) for (const key of keys) await incr(m, key);
      const across = [
        [a, ledBy(b)[0] as string],
        [b, ledBy(a)[0] as string],
      ] as const;
      assert.deepEqual(await failedSeenBy(a), [b.id]);
      assert.deepEqual(await failedSeenBy(b), [a.id]);
      assert.deepEqual(await failedSeenBy(between), []);
      for (const [, key] of across) assert.equal(Number(await client(between).get(key)), value.get(key));
    } finally {
      hub.heal(a.id, b.id);
    }
    // Healed: both sides serve every group again.
    for (const m of [a, b]) for (const key of keys) await incr(m, key);
    for (const key of keys) assert.equal(Number(await client(between).get(key)), value.get(key));
  });
  it('a write too large to replicate is refused, not applied, and the group behind it goes on', async () => {
    const leaders = await balanced();
    const leader = byId(leaders.get(1));
    const key = keyOfGroup(GROUPS, 1, 'big');
    const counter = keyOfGroup(GROUPS, 1, 'after-big');
    // Within the limits: replicated to a majority, so acknowledged.
    const fits = Buffer.alloc(5 * 1024 * 1024, 'a');
    assert.equal(await client(leader).set(key, fits), 'OK');
    // Past the 8 MiB a write may carry: refused before it is proposed.
    await assert.rejects(client(leader).set(key, Buffer.alloc(9 * 1024 * 1024, 'b')), (e: Error) => {
      assert.equal(e.message, ERR.opTooLarge);
      return true;
    });
    // Past the 6 MiB a value may hold: Redis's error for a string past its limit.
    await assert.rejects(client(leader).append(key, Buffer.alloc(2 * 1024 * 1024, 'c')), (e: Error) => {
      assert.equal(e.message, ERR.stringTooLong);
      return true;
    });
    for (const m of members) assert.equal(await client(m).strlen(key), fits.length, `STRLEN through ${m.port}`);
    // The group was not stalled by either: writes through every member are answered.
    for (const [i, m] of members.entries()) assert.equal(await client(m).incr(counter), i + 1, `INCR through ${m.port}`);
  });
});
