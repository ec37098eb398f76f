// Topology (slot ranges, placement, preferred leaders, encoding, validation)
// and the CLUSTER replies built from it, including their exact shape next to a
// real redis-server in cluster mode.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import {
  clusterCountKeysInSlotReply,
  clusterInfoCounts,
  clusterInfoReply,
  clusterInfoText,
  clusterKeySlotReply,
  clusterMyIdReply,
  clusterNodesReply,
  clusterNodesText,
  clusterShardsReply,
  clusterSlotsReply,
  parseSlotArgument,
  type ClusterView,
} from '../src/cluster/replies.js';
import { SLOT_COUNT, keySlot } from '../src/cluster/slots.js';
import {
  Topology,
  TopologyError,
  bootstrapTopology,
  decodeTopology,
  encodeTopology,
  placeReplicas,
  preferredLeaders,
  slotRanges,
  type Member,
  type TopologyInit,
} from '../src/cluster/topology.js';
import { encodeReply, type Reply } from '../src/resp/encoder.js';
import { RawClient, encodeCommand } from '../testkit/resp.js';
import { freePort, startRedis, type RunningProcess } from '../testkit/processes.js';
import { sleep } from '../testkit/wait.js';

function memberId(i: number): string {
  return (0xabc000 + i).toString(16).padStart(40, '0');
}

function members(n: number): Member[] {
  return Array.from({ length: n }, (_, i) => ({ id: memberId(i), host: `10.0.0.${i + 1}`, port: 6379, busPort: 16379 }));
}

function countBy<T>(items: readonly T[]): Map<T, number> {
  const m = new Map<T, number>();
  for (const x of items) m.set(x, (m.get(x) ?? 0) + 1);
  return m;
}

function spread(counts: Map<string, number>, ids: readonly string[]): number {
  const values = ids.map((id) => counts.get(id) ?? 0);
  return Math.max(...values) - Math.min(...values);
}

describe('slotRanges', () => {
  it('covers 0..16383 exactly, contiguous, sizes within 1, for every G', () => {
    for (let g = 1; g <= SLOT_COUNT; g++) {
      const ranges = slotRanges(g);
      assert.equal(ranges.length, g);
      let next = 0;
      let min = Infinity;
      let max = 0;
      for (const r of ranges) {
        assert.equal(r.start, next);
        assert.ok(r.end >= r.start);
        const size = r.end - r.start + 1;
        min = Math.min(min, size);
        max = Math.max(max, size);
        next = r.end + 1;
      }
      assert.equal(next, SLOT_COUNT);
      assert.ok(max - min <= 1, `G=${g}`);
    }
  });

  it('refuses G outside 1..16384', () => {
    for (const g of [0, -1, 16385, 1.5, NaN]) assert.throws(() => slotRanges(g), TopologyError);
  });
});

describe('placement and preferred leaders', () => {
  it('is deterministic, distinct per group, balanced within 1', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 24 }), fc.integer({ min: 1, max: 400 }), fc.integer({ min: 1, max: 5 }), (n, g, factor) => {
        const ids = members(n).map((m) => m.id);
        const placement = placeReplicas(ids, g, factor);
        assert.deepEqual(placeReplicas(ids, g, factor), placement);
        const r = Math.min(factor, n);
        for (const replicas of placement) {
          assert.equal(replicas.length, r);
          assert.equal(new Set(replicas).size, r);
        }
        assert.ok(spread(countBy(placement.flat()), ids) <= 1, 'replicas per member');
        const leaders = preferredLeaders(ids, placement);
        assert.deepEqual(preferredLeaders(ids, placement), leaders);
        leaders.forEach((l, i) => assert.ok(placement[i]?.includes(l)));
        // Every member holding a replica leads within 1 of every other.
        const holders = [...new Set(placement.flat())];
        assert.ok(spread(countBy(leaders), holders) <= 1, `leaders per member n=${n} g=${g} r=${r}`);
      }),
      { numRuns: 300 },
    );
  });

  it('uses all members when fewer than 3, three otherwise', () => {
    assert.equal(bootstrapTopology({ members: members(2), groupCount: 4 }).group(1)?.replicas.length, 2);
    assert.equal(bootstrapTopology({ members: members(5), groupCount: 4 }).group(1)?.replicas.length, 3);
  });
});

describe('Topology', () => {
  const topology = bootstrapTopology({ members: members(5), groupCount: 7 });

  it('maps every slot and key to the group owning its range', () => {
    for (const g of topology.groups) {
      for (const s of [g.range.start, g.range.end, (g.range.start + g.range.end) >> 1]) assert.equal(topology.groupOfSlot(s), g.id);
    }
    assert.equal(topology.groupOfKey('foo'), topology.groupOfSlot(keySlot('foo')));
    assert.equal(topology.groupOfKey('{foo}:x'), topology.groupOfKey(Buffer.from('foo')));
    assert.throws(() => topology.groupOfSlot(16384), RangeError);
    assert.throws(() => topology.groupOfSlot(-1), RangeError);
    assert.equal(topology.groupCount, 7);
    assert.ok(Object.isFrozen(topology) && Object.isFrozen(topology.groups));
  });

  it('round-trips through bytes', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 300 }), fc.integer({ min: 0, max: 2 ** 40 }), (n, g, epoch) => {
        const t = bootstrapTopology({ members: members(n), groupCount: g, epoch });
        const back = decodeTopology(encodeTopology(t));
        assert.equal(back.epoch, t.epoch);
        assert.deepEqual(back.members, t.members);
        assert.deepEqual(back.groups, t.groups);
        assert.deepEqual(encodeTopology(back), encodeTopology(t));
      }),
      { numRuns: 100 },
    );
    const big = bootstrapTopology({ members: members(4), groupCount: SLOT_COUNT });
    assert.deepEqual(decodeTopology(encodeTopology(big)).groups, big.groups);
  });

  it('refuses bytes that are not a topology', () => {
    const bytes = encodeTopology(topology);
    assert.throws(() => decodeTopology(bytes.subarray(0, bytes.length - 1)), /end early/);
    assert.throws(() => decodeTopology(Buffer.concat([bytes, Buffer.from([0])])), /unexpected bytes/);
    const other = Buffer.from(bytes);
    other[0] = 9;
    assert.throws(() => decodeTopology(other), /version 9/);
    assert.throws(() => decodeTopology(Buffer.alloc(0)), TopologyError);
  });

  it('refuses bad topologies with clear errors', () => {
    const one = bootstrapTopology({ members: members(3), groupCount: 2 });
    const init = (over: Partial<TopologyInit>): TopologyInit => ({ epoch: 1, members: members(3), groups: one.groups, ...over });
    const bad = (over: Partial<TopologyInit>, message: RegExp): void => assert.throws(() => new Topology(init(over)), message);
    const m = members(3);
    bad({ members: [...m, m[0] as Member] }, /duplicate member id/);
    bad({ members: [m[0] as Member, { ...(m[1] as Member), host: '10.0.0.1' }, m[2] as Member] }, /duplicate address 10\.0\.0\.1:6379/);
    bad({ members: [{ ...(m[0] as Member), id: 'xyz' }, m[1] as Member, m[2] as Member] }, /not 40 lowercase hex/);
    bad({ members: [{ ...(m[0] as Member), port: 70000 }, m[1] as Member, m[2] as Member] }, /not a port/);
    bad({ members: [] }, /at least one member/);
    bad({ groups: [] }, /group count 0 is out of range/);
    const [g1, g2] = one.groups as [TopologyInit['groups'][number], TopologyInit['groups'][number]];
    bad({ groups: [{ ...g1, range: { start: 0, end: 8000 } }, g2] }, /slots 8001-8191 belong to no group/);
    bad({ groups: [{ ...g1, range: { start: 0, end: 8200 } }, g2] }, /overlap at slot 8192/);
    bad({ groups: [g2, g1] }, /ids must be 1\.\.G/);
    bad({ groups: [{ ...g1, range: { start: 5, end: 4 } }, g2] }, /bad slot range/);
    bad({ groups: [{ ...g1, replicas: [] }, g2] }, /no replicas/);
    bad({ groups: [{ ...g1, replicas: ['f'.repeat(40)] }, g2] }, /not a member/);
    bad({ groups: [{ ...g1, replicas: [memberId(0), memberId(0)], preferredLeader: memberId(0) }, g2] }, /twice/);
    bad({ groups: [{ ...g1, replicas: [memberId(0)], preferredLeader: memberId(1) }, g2] }, /not one of its replicas/);
    bad({ epoch: -1 }, /epoch/);
    assert.doesNotThrow(() => new Topology(init({})));
  });
});

/** A view where every group is led by its preferred leader unless `leaders` says otherwise. */
function view(topology: Topology, myId: string, leaders: ReadonlyMap<number, string | null> = new Map(), failed: readonly string[] = []): ClusterView {
  return {
    topology,
    myId,
    leaderOf: (g) => (leaders.has(g) ? (leaders.get(g) ?? null) : (topology.group(g)?.preferredLeader ?? null)),
    failedNodes: new Set(failed),
  };
}

/** Reads the integers and texts out of a reply tree, for readable assertions. */
function plain(reply: Reply): unknown {
  switch (reply.kind) {
    case 'integer':
      return Number(reply.value);
    case 'bulk':
      return reply.value.toString('latin1');
    case 'simple':
    case 'verbatim':
      return reply.value;
    case 'array':
    case 'set':
      return reply.items.map(plain);
    case 'map':
      return Object.fromEntries(reply.entries.map(([k, v]) => [String(plain(k)), plain(v)]));
    default:
      return reply.kind;
  }
}

describe('CLUSTER replies', () => {
  const t = bootstrapTopology({ members: members(4), groupCount: 6, epoch: 3 });
  const me = memberId(0);

  it('SLOTS covers 0..16383 in order with the leader first, even when a leader is unknown', () => {
    const g2 = t.group(2);
    assert.ok(g2);
    const other = g2.replicas.find((r) => r !== g2.preferredLeader) as string;
    const slots = plain(
      clusterSlotsReply(
        view(
          t,
          me,
          new Map([
            [1, null],
            [2, other],
          ]),
        ),
      ),
    ) as [number, number, ...[string, number, string, object][]][];
    assert.equal(slots.length, 6);
    let next = 0;
    for (const [i, entry] of slots.entries()) {
      const group = t.groups[i];
      assert.ok(group);
      assert.equal(entry[0], next);
      next = entry[1] + 1;
      const nodes = entry.slice(2) as [string, number, string, object][];
      assert.deepEqual(nodes.map((n) => n[2]).sort(), [...group.replicas].sort());
      for (const n of nodes) {
        assert.equal(n[0], t.member(n[2])?.host);
        assert.equal(n[1], 6379);
        assert.deepEqual(n[3], {});
      }
      assert.equal(nodes[0]?.[2], i === 1 ? other : group.preferredLeader);
    }
    assert.equal(next, SLOT_COUNT);
  });

  it('SLOTS leaves out failed replicas, never the master', () => {
    const g1 = t.group(1);
    assert.ok(g1);
    const follower = g1.replicas.find((r) => r !== g1.preferredLeader) as string;
    // Asked on a node outside group 1, so the master is not kept for being the asking node.
    const outsider = memberId(3);
    assert.ok(!g1.replicas.includes(outsider));
    const slots = plain(clusterSlotsReply(view(t, outsider, new Map(), [follower, g1.preferredLeader]))) as unknown[][];
    const nodes = (slots[0] as unknown[]).slice(2) as string[][];
    assert.equal(nodes.length, g1.replicas.length - 1);
    assert.equal(nodes[0]?.[2], g1.preferredLeader);
  });

  it('SHARDS lists each group with roles and health', () => {
    const g1 = t.group(1);
    assert.ok(g1);
    const follower = g1.replicas.find((r) => r !== g1.preferredLeader) as string;
    const shards = plain(clusterShardsReply(view(t, me, new Map(), [follower]))) as { slots: number[]; nodes: Record<string, unknown>[] }[];
    assert.equal(shards.length, 6);
    assert.deepEqual(shards[0]?.slots, [g1.range.start, g1.range.end]);
    const nodes = shards[0]?.nodes ?? [];
    assert.deepEqual(
      nodes.map((n) => n['role']),
      ['master', 'replica', 'replica'],
    );
    assert.equal(nodes[0]?.['id'], g1.preferredLeader);
    assert.equal(nodes.find((n) => n['id'] === follower)?.['health'], 'fail');
    assert.deepEqual(Object.keys(nodes[0] ?? {}), ['id', 'port', 'ip', 'endpoint', 'role', 'replication-offset', 'health']);
  });

  it('NODES lists every member once as a master with the ranges it leads', () => {
    const g1 = t.group(1);
    assert.ok(g1);
    const other = g1.replicas.find((r) => r !== g1.preferredLeader) as string;
    const text = clusterNodesText(view(t, me, new Map([[1, other]])));
    const lines = text.split('\n');
    assert.equal(lines.pop(), '');
    assert.equal(lines.length, 4);
    const owned = new Map<number, number>();
    for (const [i, line] of lines.entries()) {
      const f = line.split(' ');
      assert.equal(f[0], memberId(i));
      assert.equal(f[1], `10.0.0.${i + 1}:6379@16379`);
      assert.equal(f[2], i === 0 ? 'myself,master' : 'master');
      assert.deepEqual(f.slice(3, 8), ['-', '0', '0', '3', 'connected']);
      for (const r of f.slice(8)) {
        const [a, b] = r.split('-').map(Number) as [number, number | undefined];
        for (let s = a; s <= (b ?? a); s++) owned.set(s, i);
      }
    }
    assert.equal(owned.size, SLOT_COUNT);
    assert.equal(memberId(owned.get(0) ?? -1), other); // group 1's slots go to its current leader
    const failed = clusterNodesText(view(t, me, new Map(), [memberId(2)])).split('\n')[2] ?? '';
    assert.match(failed, / master,fail - 0 0 3 disconnected/);
  });

  it('INFO says ok only when every group has a leader', () => {
    const ok = clusterInfoCounts(view(t, me));
    assert.deepEqual(ok, { state: 'ok', slotsAssigned: 16384, slotsOk: 16384, slotsFail: 0, knownNodes: 4, size: 4 });
    const g3 = t.group(3);
    assert.ok(g3);
    const down = clusterInfoCounts(view(t, me, new Map([[3, null]])));
    assert.equal(down.state, 'fail');
    assert.equal(down.slotsFail, g3.range.end - g3.range.start + 1);
    assert.match(clusterInfoText(view(t, me)), /^cluster_state:ok\r\ncluster_slots_assigned:16384\r\n/);
    // A leader that is not a replica of the group counts as unknown.
    assert.equal(clusterInfoCounts(view(t, me, new Map([[1, 'f'.repeat(40)]]))).state, 'fail');
  });

  it('parses slot arguments as Redis does', () => {
    assert.deepEqual(parseSlotArgument('0'), { slot: 0 });
    assert.deepEqual(parseSlotArgument(Buffer.from('16383')), { slot: 16383 });
    for (const a of ['16384', '-1', '9223372036854775807']) assert.deepEqual(parseSlotArgument(a), { error: 'invalidSlot' });
    for (const a of ['x', '05', '+5', ' 5', '-0', '', '9223372036854775808', '1.0']) assert.deepEqual(parseSlotArgument(a), { error: 'notInteger' });
    assert.throws(() => clusterCountKeysInSlotReply(16384, 0), RangeError);
  });
});

describe('CLUSTER replies next to redis-server', () => {
  let redis: (RunningProcess & { readonly dir: string }) | null = null;
  let busPort = 0;
  let redisId = '';

  async function ask(protocol: 2 | 3, args: readonly string[]): Promise<string> {
    assert.ok(redis);
    const conn = await RawClient.connect(redis.port);
    try {
      await conn.write(Buffer.concat([encodeCommand(['HELLO', String(protocol)]), encodeCommand(args)]));
      const [, reply] = await conn.read(2);
      return (reply as Buffer).toString('latin1');
    } finally {
      conn.close();
    }
  }

  before(async () => {
    busPort = await freePort();
    redis = await startRedis([
      '--cluster-enabled',
      'yes',
      '--cluster-config-file',
      'nodes.conf',
      '--cluster-port',
      String(busPort),
      '--cluster-announce-ip',
      '127.0.0.1',
    ]);
    await ask(2, ['CLUSTER', 'ADDSLOTSRANGE', '0', '16383']);
    redisId = (await ask(2, ['CLUSTER', 'MYID'])).split('\r\n')[1] ?? '';
    for (let i = 0; i < 100 && !(await ask(2, ['CLUSTER', 'INFO'])).includes('cluster_state:ok'); i++) await sleep(50);
  });
  after(async () => {
    await redis?.stop();
  });

  /** ordo's view of a one-node, one-group cluster that is exactly the redis-server's. */
  function sameAsRedis(): ClusterView {
    assert.ok(redis);
    const topology = bootstrapTopology({
      members: [{ id: redisId, host: '127.0.0.1', port: redis.port, busPort }],
      groupCount: 1,
      epoch: 0,
    });
    return view(topology, redisId);
  }

  for (const protocol of [2, 3] as const) {
    it(`matches a one-node redis cluster byte for byte (RESP${protocol})`, async () => {
      const v = sameAsRedis();
      const cases: [string[], Reply][] = [
        [['CLUSTER', 'SLOTS'], clusterSlotsReply(v)],
        [['CLUSTER', 'SHARDS'], clusterShardsReply(v)],
        [['CLUSTER', 'NODES'], clusterNodesReply(v)],
        [['CLUSTER', 'INFO'], clusterInfoReply(v)],
        [['CLUSTER', 'MYID'], clusterMyIdReply(v)],
        [['CLUSTER', 'KEYSLOT', '{user}:1'], clusterKeySlotReply('{user}:1')],
        [['CLUSTER', 'COUNTKEYSINSLOT', '7'], clusterCountKeysInSlotReply(7, 0)],
      ];
      for (const [args, reply] of cases) {
        assert.equal(encodeReply(reply, protocol).toString('latin1'), await ask(protocol, args), args.join(' '));
      }
    });

    it(`gives every node of a bigger cluster the shape of redis's master entry (RESP${protocol})`, async () => {
      const t = bootstrapTopology({ members: members(5), groupCount: 9 });
      const v = view(t, memberId(1));
      const mask = (text: string): string =>
        text
          .replace(/\$40\r\n[0-9a-f]{40}\r\n/g, '<id>')
          .replace(/\$\d+\r\n(?:127\.0\.0\.1|10\.0\.0\.\d+)\r\n/g, '<ip>')
          .replace(/:\d+\r\n/g, '<int>')
          .replace(/\$6\r\nmaster\r\n|\$7\r\nreplica\r\n/g, '<role>');
      // SLOTS: each entry is <int><int> then nodes of redis's node shape.
      const redisSlots = mask(await ask(protocol, ['CLUSTER', 'SLOTS']));
      const nodeShape = redisSlots.replace(/^\*1\r\n\*3\r\n<int><int>/, '');
      const ours = mask(encodeReply(clusterSlotsReply(v), protocol).toString('latin1'));
      assert.equal(ours, `*9\r\n${`*5\r\n<int><int>${nodeShape.repeat(3)}`.repeat(9)}`);
      // SHARDS: each shard has redis's keys, each node redis's node map.
      const redisShards = mask(await ask(protocol, ['CLUSTER', 'SHARDS']));
      const open = protocol === 3 ? '%7\r\n' : '*14\r\n';
      const shardNode = redisShards.slice(redisShards.indexOf(open));
      const shardHead = redisShards.slice('*1\r\n'.length, redisShards.indexOf(open)).replace(/\*1\r\n$/, '');
      const shardsOurs = mask(encodeReply(clusterShardsReply(v), protocol).toString('latin1'));
      assert.equal(shardsOurs, `*9\r\n${`${shardHead}*3\r\n${shardNode.repeat(3)}`.repeat(9)}`);
      // NODES and INFO: the same reply type and line format.
      const nodes = encodeReply(clusterNodesReply(v), protocol).toString('latin1');
      const redisNodes = await ask(protocol, ['CLUSTER', 'NODES']);
      assert.equal(nodes[0], redisNodes[0]);
      const line = /^[0-9a-f]{40} [^ :]+:\d+@\d+ (myself,)?master - \d+ \d+ \d+ connected( \d+(-\d+)?)*$/;
      for (const text of [nodes, redisNodes]) {
        const body = text.slice(text.indexOf('\r\n') + 2, -2).replace(/^txt:/, '');
        for (const l of body.split('\n').slice(0, -1)) assert.match(l, line);
      }
      const infoKeys = (text: string): string[] => [...text.matchAll(/^(?:txt:)?([a-z_]+):/gm)].map((m) => m[1] as string);
      assert.deepEqual(infoKeys(encodeReply(clusterInfoReply(v), protocol).toString('latin1')), infoKeys(await ask(protocol, ['CLUSTER', 'INFO'])));
    });
  }
});
