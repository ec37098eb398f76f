// A 3-member cluster in one process: three OrdoServers, each with its own
// LMDB data directory and a real TCP bus on loopback. What a client sees:
// any node answers any key (forwarding), a cluster-aware connection gets
// MOVED to the leader, keys of one command must share a group, the
// keyspace-wide commands act on the groups a node leads, CLUSTER and INFO
// describe the cluster, and the data directory holds the membership.

import assert from 'node:assert/strict';
import { cpSync, rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { DEFAULT_CONFIG, type Config } from '../src/config.js';
import { keySlot } from '../src/cluster/slots.js';
import { OrdoServer } from '../src/server/server.js';
import { DataDirectoryError } from '../src/storage/store.js';
import { keyOfGroup as keyOfGroupIn, settledLeaders } from '../testkit/cluster.js';
import { parseRaftGroups } from '../testkit/info.js';
import { freePort, removeDir, tempDir } from '../testkit/processes.js';

const GROUPS = 4;

interface Member {
  readonly port: number;
  readonly busPort: number;
  readonly dataDir: string;
  server: OrdoServer | null;
}

function configOf(m: Member, list: string, extra: Partial<Config> = {}): Config {
  return {
    ...DEFAULT_CONFIG,
    port: m.port,
    dataDir: m.dataDir,
    cluster: list,
    groups: GROUPS,
    busPort: m.busPort,
    explicit: new Set(['port', 'cluster', 'groups']),
    ...extra,
  };
}

/** A key of data group `groupId`. */
function keyOfGroup(groupId: number, tag = ''): string {
  return keyOfGroupIn(GROUPS, groupId, tag);
}

describe('cluster: three members in one process', () => {
  const members: Member[] = [];
  let list = '';
  const clients: Redis[] = [];
  const byPort = new Map<number, Redis>();
  /** A plain client of the member on `port` (one per port; a fresh one with `fresh`). */
  const client = (port: number, fresh = false): Redis => {
    const cached = byPort.get(port);
    if (cached !== undefined && !fresh) return cached;
    const c = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 0 });
    c.on('error', () => {}); // a stopped member's clients reconnect quietly
    clients.push(c);
    if (!fresh) byPort.set(port, c);
    return c;
  };

  /** Waits until every data group has a leader that all three members name. */
  function settled(): Promise<Map<number, string>> {
    return settledLeaders(
      members.map((m) => client(m.port)),
      GROUPS,
    );
  }

  before(async () => {
    for (let i = 0; i < 3; i++) members.push({ port: await freePort(), busPort: await freePort(), dataDir: tempDir(`cluster-${i}`), server: null });
    list = members.map((m) => `127.0.0.1:${m.port}@${m.busPort}`).join(',');
    await Promise.all(members.map(async (m) => (m.server = await OrdoServer.start(configOf(m, list)))));
  });

  after(async () => {
    for (const c of clients) c.disconnect();
    await Promise.all(members.map((m) => m.server?.stop() ?? Promise.resolve()));
    for (const m of members) removeDir(m.dataDir);
  });

  it('every member answers every key, and they agree', async () => {
    await settled();
    const keys = [1, 2, 3, 4].map((g) => keyOfGroup(g));
    let expected = 0;
    for (let round = 0; round < 3; round++) {
      for (const m of members) {
        expected++;
        for (const key of keys) assert.equal(await client(m.port).incr(key), expected);
      }
    }
    for (const m of members) for (const key of keys) assert.equal(await client(m.port).get(key), String(expected));
  });

  it('pipelined writes and reads on a forwarding member keep their order', async () => {
    const key = keyOfGroup(2, 'p');
    const c = client(members[0]?.port as number);
    const p = c.pipeline();
    p.set(key, '5');
    p.incr(key);
    p.get(key);
    p.incrby(key, 10);
    p.get(key);
    p.del(key);
    p.get(key);
    const replies = (await p.exec())?.map(([e, v]) => e?.message ?? v);
    assert.deepEqual(replies, ['OK', 6, '6', 16, '16', 1, null]);
  });

  it("CLUSTER SLOTS covers every slot with each group's leader first; the asker then gets MOVED", async () => {
    const c = client(members[0]?.port as number, true);
    const myId = String(await c.call('CLUSTER', 'MYID'));
    // Leaders spread over the members (the balancer moves them once a second): wait until one leads elsewhere.
    const deadline = Date.now() + 15_000;
    let leaders = await settled();
    while ([1, 2, 3, 4].every((g) => leaders.get(g) === myId) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      leaders = await settled();
    }
    const slots = (await c.call('CLUSTER', 'SLOTS')) as [number, number, [string, number, string]][];
    let next = 0;
    for (const [start, end, master] of slots) {
      assert.equal(start, next);
      next = end + 1;
      const groupId = Math.floor(start / (16384 / GROUPS)) + 1;
      assert.equal(master[2], leaders.get(groupId));
    }
    assert.equal(next, 16384);
    // This connection is cluster-aware now: a key led elsewhere is redirected.
    const elsewhere = [1, 2, 3, 4].find((g) => leaders.get(g) !== myId);
    assert.ok(elsewhere !== undefined, 'some group is led by another member');
    const key = keyOfGroup(elsewhere);
    const leaderPort = members.find((m) => m.server?.context.cluster?.myId === leaders.get(elsewhere))?.port;
    await assert.rejects(c.incr(key), (e: Error) => e.message === `MOVED ${keySlot(key)} 127.0.0.1:${leaderPort}`);
    // A connection that never asked is served by forwarding.
    assert.ok((await client(members[0]?.port as number, true).incr(key)) > 0);
  });

  it('keys of one command must share a group; hash tags put them together', async () => {
    const c = client(members[1]?.port as number);
    const [a, b] = [keyOfGroup(1, 'x'), keyOfGroup(3, 'y')];
    await assert.rejects(c.mget(a, b), /^ReplyError: CROSSSLOT Keys in request don't hash to the same slot$/);
    await assert.rejects(c.del(a, b), /CROSSSLOT/);
    assert.equal(await c.mset('{user1}:a', '1', '{user1}:b', '2'), 'OK');
    assert.deepEqual(await c.mget('{user1}:a', '{user1}:b'), ['1', '2']);
    await assert.rejects(c.msetnx(a, '1', b, '2'), /^ReplyError: CROSSSLOT Keys in request don't hash to the same slot$/);
    await assert.rejects(c.call('LCS', a, b), /^ReplyError: CROSSSLOT Keys in request don't hash to the same slot$/);
    assert.equal(await c.msetnx('{user2}:a', 'abcd', '{user2}:b', 'xbxd'), 1);
    assert.equal(await c.msetnx('{user2}:a', '1', '{user2}:c', '2'), 0);
    assert.equal(await c.call('LCS', '{user2}:a', '{user2}:b'), 'bd');
  });

  it('DBSIZE, KEYS and SCAN of all members together list every key once', async () => {
    const c0 = client(members[0]?.port as number);
    await c0.flushall(); // flushes the groups member 0 leads
    for (const m of members.slice(1)) await client(m.port).flushall();
    const keys = Array.from({ length: 40 }, (_, i) => `scan:${i}`);
    for (const k of keys) await c0.set(k, 'v');
    const sizes = await Promise.all(members.map((m) => client(m.port).dbsize()));
    assert.equal(
      sizes.reduce((a, b) => a + b, 0),
      keys.length,
    );
    const listed = (await Promise.all(members.map((m) => client(m.port).keys('scan:*')))).flat();
    assert.deepEqual(listed.sort(), [...keys].sort());
    const scanned: string[] = [];
    for (const m of members) {
      let cursor = '0';
      do {
        const [next, batch] = await client(m.port).scan(cursor, 'COUNT', 7);
        scanned.push(...batch);
        cursor = next;
      } while (cursor !== '0');
    }
    assert.deepEqual(scanned.sort(), [...keys].sort());
  });

  it('HELLO, INFO and CLUSTER INFO say cluster mode; INFO raft shows every group', async () => {
    const c = client(members[2]?.port as number);
    const hello = (await c.call('HELLO', '2')) as unknown[];
    assert.equal(hello[hello.indexOf('mode') + 1], 'cluster');
    const info = String(await c.info());
    assert.match(info, /redis_mode:cluster/);
    assert.match(info, /cluster_enabled:1/);
    assert.match(String(await c.call('CLUSTER', 'INFO')), /cluster_state:ok/);
    const raft = parseRaftGroups(String(await c.info('raft')));
    assert.deepEqual([...raft.keys()].sort(), [0, 1, 2, 3, 4]);
    for (const g of raft.values()) assert.match(g.role, /^(leader|follower|candidate|preCandidate)$/);
    // Window counters add up over the groups of the node that serves the key.
    const key = keyOfGroup(3, 'win');
    assert.equal(await c.call('SEQCREATE', key, 'MODE', 'window', 'WINDOW', '100'), 'OK');
    for (let i = 1; i <= 5; i++) assert.equal(await c.call('SEQNEXT', key), i);
    const served = await Promise.all(members.map(async (m) => Number(/window_allocations:(\d+)/.exec(String(await client(m.port).info('ordo')))?.[1] ?? -1)));
    assert.equal(
      served.reduce((a, b) => a + b, 0),
      5,
    );
  });

  it('a stopped member restarts from its data directory alone; contradicting flags are refused', async () => {
    const m = members[2] as Member;
    await m.server?.stop();
    m.server = null;
    const restartOnly: Config = { ...DEFAULT_CONFIG, dataDir: m.dataDir, explicit: new Set(['data']) };
    const other = members
      .map((x) => `127.0.0.1:${x.port}@${x.busPort}`)
      .slice(0, 2)
      .join(',');
    await assert.rejects(
      OrdoServer.start({ ...restartOnly, cluster: other, explicit: new Set(['cluster']) }),
      (e: unknown) => e instanceof DataDirectoryError && /bootstrapped with .* but --cluster\/--groups say/.test(e.message),
    );
    await assert.rejects(
      OrdoServer.start({ ...restartOnly, port: m.port + 1, explicit: new Set(['port']) }),
      (e: unknown) => e instanceof DataDirectoryError && /contradicts it/.test(e.message),
    );
    m.server = await OrdoServer.start(restartOnly);
    assert.equal(m.server.port, m.port);
    await settled();
    const key = keyOfGroup(4, 'r');
    assert.equal(await client(m.port).incr(key), 1);
    assert.equal(await client(members[0]?.port as number).get(key), '1');
  });

  it('a member restarted on an older copy of its data directory, or on an emptied one, refuses to start', async () => {
    const m = members[1] as Member;
    const backup = `${m.dataDir}.copy`;
    try {
      await m.server?.stop();
      m.server = null;
      cpSync(m.dataDir, backup, { recursive: true });
      m.server = await OrdoServer.start(configOf(m, list)); // a newer start than the copy
      await m.server.stop();
      m.server = null;
      rmSync(m.dataDir, { recursive: true, force: true });
      cpSync(backup, m.dataDir, { recursive: true });
      await assert.rejects(
        OrdoServer.start(configOf(m, list)),
        (e: unknown) => e instanceof DataDirectoryError && /restored from an older copy/.test(e.message),
      );
      // Refused for good: a later start refuses too, without asking anyone.
      await assert.rejects(OrdoServer.start(configOf(m, list)), (e: unknown) => e instanceof DataDirectoryError && /older copy/.test(e.message));
      rmSync(m.dataDir, { recursive: true, force: true });
      await assert.rejects(OrdoServer.start(configOf(m, list)), (e: unknown) => e instanceof DataDirectoryError && /wiped or replaced/.test(e.message));
      // The other two still serve every group.
      await servesEveryGroup(members.filter((x) => x !== m));
    } finally {
      removeDir(backup);
    }
  });

  async function servesEveryGroup(alive: Member[]): Promise<void> {
    for (const g of [1, 2, 3, 4]) {
      const key = keyOfGroup(g, 'alive');
      for (const x of alive) assert.ok((await client(x.port).incr(key)) > 0);
    }
  }
});
