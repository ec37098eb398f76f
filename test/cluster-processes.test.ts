// A cluster of real ordo processes on loopback: cluster-aware clients route
// through CLUSTER SLOTS to the group leaders, plain clients work through any
// node, kill -9 of a leader while clients increment loses and repeats nothing,
// a restarted node catches up, restarts need only the data directory and refuse
// a contradicting member list, and a bus peer without the cluster secret is
// kept out. Every process is stopped in `after`, also when a test fails.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Cluster, Redis } from 'ioredis';
import { keySlot } from '../src/cluster/slots.js';
import {
  clusterList,
  freeClusterPorts,
  keyInSlots,
  keysInSlots,
  LocalCluster,
  parseClusterSlots,
  slotCoverageProblem,
  waitForCatchUp,
  waitForStableLeaders,
  type ClusterNode,
  type ClusterState,
} from '../testkit/cluster.js';
import { CLI_PATH, removeDir, runProgram, runToExit, tempDir, type ProgramRun } from '../testkit/processes.js';
import { prng } from '../testkit/random.js';
import { command, RespClient, RespErrorReply, RespNoReply } from '../testkit/resp.js';
import { sleep } from '../testkit/wait.js';

const NODE_COUNT = 3;
const SECRET = 'test-cluster-secret';

/** A unique key prefix per run, so counters start at 0 whatever ran before. */
const RUN = `t${process.pid}:${Date.now().toString(36)}`;

async function startCluster(dir: string, secret?: readonly (string | null)[]): Promise<LocalCluster> {
  const { ports, busPorts } = await freeClusterPorts(NODE_COUNT);
  return LocalCluster.start({
    ports,
    busPorts,
    dataDirs: ports.map((p) => join(dir, String(p))),
    ...(secret === undefined ? {} : { secret }),
  });
}

function describeState(state: ClusterState): string {
  return state.groups.map((g) => `group ${g.group} ${g.start}-${g.end} led by ${g.leader.port}`).join('; ');
}

/** Runs redis-cli with `args`, `input` on stdin. */
function redisCli(args: readonly string[], input = ''): Promise<ProgramRun> {
  return runProgram('redis-cli', args, { input, timeoutMs: 15_000 });
}

interface Ack {
  readonly key: string;
  readonly value: bigint;
  readonly worker: number;
  readonly atMs: number;
}

/**
 * A client that increments random keys one at a time until stopped, through a
 * plain connection; when the connection is lost it reconnects to a running node
 * other than `avoid()`. Error replies and lost replies are not acknowledgements.
 */
async function incrementer(
  worker: number,
  cluster: LocalCluster,
  keys: readonly string[],
  random: () => number,
  stop: () => boolean,
  avoid: () => ClusterNode | null,
  acks: Ack[],
  errors: string[],
): Promise<void> {
  // Worker w starts on node w mod N; after a lost connection, on a running node.
  const pickNode = (): ClusterNode => {
    const candidates = cluster.running.filter((n) => n !== avoid());
    const node = candidates[worker % Math.max(1, candidates.length)];
    if (node === undefined) throw new Error('no running node');
    return node;
  };
  let client: RespClient | null = await RespClient.connect(cluster.nodes[worker % cluster.nodes.length]?.port ?? pickNode().port);
  while (!stop()) {
    try {
      client ??= await RespClient.connect(pickNode().port);
      const key = keys[Math.floor(random() * keys.length)] as string;
      const reply = await client.call(['INCR', key], 10_000);
      if (typeof reply !== 'string') throw new Error(`INCR answered ${JSON.stringify(reply)}`);
      acks.push({ key, value: BigInt(reply), worker, atMs: performance.now() });
    } catch (e) {
      if (e instanceof RespErrorReply) {
        errors.push(e.message);
        await sleep(10);
      } else if (e instanceof RespNoReply) {
        errors.push(`no reply: ${e.message}`);
        client?.close();
        client = null;
        await sleep(10);
      } else {
        throw e;
      }
    }
  }
  client?.close();
}

describe('a 3-node cluster of real processes', { timeout: 120_000 }, () => {
  const dir = tempDir('cluster');
  let cluster: LocalCluster;
  let state: ClusterState;

  before(async () => {
    cluster = await startCluster(dir);
    state = (await waitForStableLeaders(cluster)).state;
  });

  after(async () => {
    await cluster?.stopAll();
    removeDir(dir);
  });

  it('CLUSTER SLOTS covers 0..16383 without holes and names each group leader (per INFO raft) as master', async () => {
    for (const node of cluster.nodes) {
      const ranges = parseClusterSlots(await command(node.port, ['CLUSTER', 'SLOTS']));
      assert.equal(slotCoverageProblem(ranges), null, `CLUSTER SLOTS on ${node.port}`);
      assert.equal(ranges.length, state.groups.length);
    }
    const fresh = await cluster.waitForLeaders();
    for (const g of fresh.groups) {
      const leaderId = await g.leader.id();
      const info = await g.leader.raftInfo();
      assert.equal(info.get(g.group)?.role, 'leader');
      for (const node of cluster.nodes) {
        const seen = (await node.raftInfo()).get(g.group);
        if (seen !== undefined) assert.equal(seen.leader, leaderId, `node ${node.port} on group ${g.group}`);
      }
      assert.equal(g.slotsMasterPort, g.leader.port, `group ${g.group}: ${describeState(fresh)}`);
    }
  });

  it('ioredis Cluster routes every key through CLUSTER SLOTS to its group leader', async () => {
    const fresh = await cluster.waitForLeaders();
    const client = new Cluster([{ host: '127.0.0.1', port: cluster.nodes[0]?.port ?? 0 }], {
      slotsRefreshTimeout: 5000,
      redisOptions: { connectTimeout: 5000 },
    });
    try {
      const keys = fresh.groups.flatMap((g) => keysInSlots(g.start, g.end, 5, `${RUN}:ioc:`));
      for (let round = 1; round <= 3; round++) {
        const values = await Promise.all(keys.map((k) => client.incr(k)));
        assert.deepEqual(
          values,
          keys.map(() => round),
        );
      }
      assert.deepEqual(
        await Promise.all(keys.map((k) => client.get(k))),
        keys.map(() => '3'),
      );
      for (const g of fresh.groups) {
        for (const slot of [g.start, g.end]) {
          assert.equal(client.slots[slot]?.[0], `127.0.0.1:${g.leader.port}`, `slot ${slot} of group ${g.group}`);
        }
      }
    } finally {
      client.disconnect();
    }
  });

  it('redis-cli -c follows MOVED to the leader once the connection asked CLUSTER SLOTS; without it, any node answers', async () => {
    const fresh = await cluster.waitForLeaders();
    for (const g of fresh.groups) {
      const other = cluster.nodes.find((n) => n !== g.leader);
      assert.ok(other !== undefined);
      const key = keyInSlots(g.start, g.end, `${RUN}:cli:`);
      // Plain: forwarded.
      const plain = await redisCli(['-c', '-p', String(other.port), 'INCR', key]);
      assert.equal(plain.stdout.trim(), '1', plain.stderr);
      // Cluster-aware connection: MOVED, which redis-cli -c follows.
      const aware = await redisCli(['-c', '-p', String(other.port)], `CLUSTER SLOTS\nINCR ${key}\nGET ${key}\n`);
      const lines = aware.stdout.trim().split('\n');
      assert.deepEqual(lines.slice(-2), ['2', '2'], aware.stdout + aware.stderr);
      // And the MOVED itself, seen by a raw connection.
      const raw = await RespClient.connect(other.port);
      try {
        await raw.call(['CLUSTER', 'SLOTS']);
        await assert.rejects(raw.call(['INCR', key]), (e: Error) => {
          assert.equal(e.message, `MOVED ${keySlot(key)} 127.0.0.1:${g.leader.port}`);
          return true;
        });
      } finally {
        raw.close();
      }
    }
  });

  it('a plain ioredis client connected to a node that does not lead the key gets correct INCR and GET results', async () => {
    const fresh = await cluster.waitForLeaders();
    let forwardedGroups = 0;
    for (const node of cluster.nodes) {
      const client = new Redis({ host: '127.0.0.1', port: node.port, maxRetriesPerRequest: 1 });
      try {
        for (const g of fresh.groups) {
          if (g.leader === node) continue;
          forwardedGroups++;
          const key = keyInSlots(g.start, g.end, `${RUN}:plain:${node.port}:`);
          for (let i = 1; i <= 20; i++) assert.equal(await client.incr(key), i);
          const pipelined = await client.pipeline(Array.from({ length: 50 }, () => ['incr', key])).exec();
          assert.deepEqual(
            pipelined?.map(([err, v]) => [err, v]),
            Array.from({ length: 50 }, (_, i) => [null, 21 + i]),
          );
          assert.equal(await client.get(key), '70');
          assert.equal(await command(g.leader.port, ['GET', key]), '70');
        }
      } finally {
        client.disconnect();
      }
    }
    assert.ok(forwardedGroups > 0, 'some node does not lead some group');
  });

  it('a multi-key command over keys of different groups answers CROSSSLOT', async () => {
    const fresh = await cluster.waitForLeaders();
    const [g1, g2] = fresh.groups;
    // The cluster is started with several groups: a skip here would hide a broken setup.
    assert.ok(g1 !== undefined && g2 !== undefined, `the cluster has ${fresh.groups.length} group(s), the test needs two`);
    const a = keyInSlots(g1.start, g1.end, `${RUN}:x:`);
    const b = keyInSlots(g2.start, g2.end, `${RUN}:x:`);
    await assert.rejects(command(cluster.nodes[0]?.port ?? 0, ['MGET', a, b]), /^RespErrorReply: CROSSSLOT Keys in request don't hash to the same slot$/);
  });

  let killed: ClusterNode | null = null;

  it('kill -9 of a group leader while clients increment: no value repeated, no acknowledged value lost, writes resume', async () => {
    const fresh = await cluster.waitForLeaders();
    const victim = fresh.groups[0];
    assert.ok(victim !== undefined);
    const keys = keysInSlots(victim.start, victim.end, 6, `${RUN}:kill:`);
    const acks: Ack[] = [];
    const errors: string[] = [];
    let stopping = false;
    const random = prng(42);
    const workers = Array.from({ length: 6 }, (_, w) =>
      incrementer(
        w,
        cluster,
        keys,
        random,
        () => stopping,
        () => killed,
        acks,
        errors,
      ),
    );
    await sleep(1000);
    const before = acks.length;
    assert.ok(before > 0, `no INCR acknowledged before the kill: ${errors.slice(0, 3).join('; ')}`);
    killed = victim.leader;
    const killedAt = performance.now();
    await killed.kill9();
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && acks.filter((a) => a.atMs > killedAt + 200).length < 50) await sleep(50);
    stopping = true;
    await Promise.all(workers);
    const afterKill = acks.filter((a) => a.atMs > killedAt);
    assert.ok(
      afterKill.length >= 50,
      `writes did not resume after the kill (${afterKill.length} acknowledged; errors: ${[...new Set(errors)].slice(0, 5).join('; ')})`,
    );

    const survivor = cluster.running[0];
    assert.ok(survivor !== undefined);
    for (const key of keys) {
      const values = acks.filter((a) => a.key === key).map((a) => a.value);
      assert.equal(new Set(values).size, values.length, `a value of ${key} was handed out twice`);
      const final = await command(survivor.port, ['GET', key]);
      assert.equal(typeof final, 'string');
      const finalValue = BigInt(final as string);
      for (const v of values) assert.ok(v >= 1n && v <= finalValue, `${key}: acknowledged ${v}, but the counter is ${finalValue}`);
      for (let w = 0; w < workers.length; w++) {
        const mine = acks.filter((a) => a.key === key && a.worker === w).map((a) => a.value);
        for (let i = 1; i < mine.length; i++) assert.ok((mine[i] ?? 0n) > (mine[i - 1] ?? 0n), `${key} went backwards for one client`);
      }
    }
  });

  it('the killed node restarts with the same command line, rejoins and catches up', async (t) => {
    if (killed === null) {
      t.skip('the kill test did not run');
      return;
    }
    const node = killed;
    await node.restart();
    killed = null;
    await waitForStableLeaders(cluster);
    const targets = new Map<number, number>();
    for (const n of cluster.running) {
      for (const g of (await n.raftInfo()).values()) if (g.role === 'leader') targets.set(g.group, g.commit);
    }
    await waitForCatchUp(cluster, node);
    const mine = await node.raftInfo();
    assert.ok(mine.size > 0, 'INFO raft lists groups');
    for (const [group, commit] of targets) {
      const g = mine.get(group);
      if (g === undefined) continue; // not a replica of that group
      assert.ok(g.applied >= commit, `group ${group}: applied ${g.applied} < leader commit ${commit}`);
    }
  });

  it('a node restarts with only --data', async () => {
    const node = cluster.nodes[1];
    assert.ok(node !== undefined);
    assert.equal(await node.stop(), 'exit code 0');
    await node.start(['--data', node.dataDir]);
    const { state: fresh } = await waitForStableLeaders(cluster);
    for (const g of fresh.groups) {
      const key = keyInSlots(g.start, g.end, `${RUN}:dataonly:`);
      assert.equal(await command(node.port, ['INCR', key]), '1');
    }
  });

  it('a restart with a contradicting --cluster list is refused with a message and exit code 1', async () => {
    const node = cluster.nodes[2];
    assert.ok(node !== undefined);
    assert.equal(await node.stop(), 'exit code 0');
    try {
      const ports = cluster.nodes.map((n) => n.port);
      const busPorts = cluster.nodes.map((n) => n.busPort);
      // The same node, with another member in place of the first.
      const contradicting = clusterList([ports[0] === 1 ? 2 : 1, ports[1] ?? 0, ports[2] ?? 0], busPorts);
      const refused = await runToExit(process.execPath, [
        CLI_PATH,
        '--host',
        '127.0.0.1',
        '--port',
        String(node.port),
        '--data',
        node.dataDir,
        '--cluster',
        contradicting,
      ]);
      assert.equal(refused.code, 1, refused.output);
      assert.match(refused.output, /cluster/i);
      assert.doesNotMatch(refused.output, /ready on/);
    } finally {
      await node.start();
    }
    await waitForStableLeaders(cluster);
  });
});

describe('a bus peer without the cluster secret', { timeout: 60_000 }, () => {
  const dir = tempDir('cluster-secret');
  let cluster: LocalCluster;

  before(async () => {
    const { ports, busPorts } = await freeClusterPorts(NODE_COUNT);
    cluster = LocalCluster.create({
      ports,
      busPorts,
      dataDirs: ports.map((p) => join(dir, String(p))),
      secret: [SECRET, SECRET, null],
    });
    const [a, b, outsider] = cluster.nodes;
    assert.ok(a !== undefined && b !== undefined && outsider !== undefined);
    // The outsider may never become ready (it cannot have its data directory
    // confirmed by anyone): it is launched, not waited for.
    outsider.launch();
    await Promise.all([a.start(), b.start()]);
  });

  after(async () => {
    await cluster?.stopAll();
    removeDir(dir);
  });

  it('is refused: the secret-holding majority serves every group, the node without it serves none', async () => {
    const [a, b, outsider] = cluster.nodes;
    assert.ok(a !== undefined && b !== undefined && outsider !== undefined);
    // The two with the secret elect leaders for every group and accept writes.
    const ranges = parseClusterSlots(await command(a.port, ['CLUSTER', 'SLOTS']));
    assert.equal(slotCoverageProblem(ranges), null);
    const deadline = Date.now() + 30_000;
    for (const r of ranges) {
      const key = keyInSlots(r.start, r.end, `${RUN}:secret:`);
      for (;;) {
        try {
          assert.equal(typeof (await command(a.port, ['INCR', key], 8000)), 'string');
          break;
        } catch (e) {
          if (Date.now() > deadline)
            throw new Error(`slots ${r.start}-${r.end} never accepted a write through the nodes with the secret: ${(e as Error).message}`);
          await sleep(200);
        }
      }
    }
    // The outsider is told why, and no member counts it in.
    assert.match(outsider.output(), /secret/i, `the outsider says nothing about the secret:\n${outsider.output()}`);
    const outsiderId = await nodeIdFromNodes(a.port, outsider.port);
    for (const n of [a, b]) {
      for (const g of (await n.raftInfo()).values()) assert.notEqual(g.leader, outsiderId, `node ${n.port} follows the outsider in group ${g.group}`);
    }
    // Through the outsider no write succeeds: it is not ready (no client port), or it refuses.
    if (outsider.running && (await outsider.waitUntilReady(1)) === 'ready') {
      for (const g of (await outsider.raftInfo()).values()) assert.notEqual(g.role, 'leader', `the outsider leads group ${g.group}`);
      const key = keyInSlots(ranges[0]?.start ?? 0, ranges[0]?.end ?? 0, `${RUN}:outsider:`);
      await assert.rejects(command(outsider.port, ['INCR', key], 10_000), (e: Error) => e instanceof RespErrorReply || e instanceof RespNoReply);
      assert.equal(await command(a.port, ['GET', key]), null, 'the write through the outsider did not happen');
    } else {
      await assert.rejects(command(outsider.port, ['PING'], 2000), RespNoReply);
    }
  });
});

/** The id CLUSTER NODES (asked on `askPort`) gives the member with client port `port`. */
async function nodeIdFromNodes(askPort: number, port: number): Promise<string> {
  const text = await command(askPort, ['CLUSTER', 'NODES']);
  assert.equal(typeof text, 'string');
  const line = (text as string).split('\n').find((l) => l.split(' ')[1]?.startsWith(`127.0.0.1:${port}@`) === true);
  const id = line?.split(' ')[0];
  assert.ok(id !== undefined && id !== '', `no member on port ${port} in CLUSTER NODES:\n${String(text)}`);
  return id;
}
