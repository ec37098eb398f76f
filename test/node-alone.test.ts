// A node alone serves its keyspace from a Raft group of one (MultiRaftHost +
// RaftGroup, the log in the data directory), on real processes. It answers
// like redis-server, keeps pipelined INCRs unique and ordered, loses no
// acknowledged increment and hands out no value twice across kill -9 and
// restart, stops gracefully on SIGTERM, and imports the data directory of the
// old single-node store once.

import assert from 'node:assert/strict';
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { EntryType } from '../src/raft/types.js';
import { snapshotState } from '../src/sequencer/codec.js';
import { encodeOps } from '../src/sequencer/op-codec.js';
import { LmdbStore } from '../src/storage/lmdb.js';
import { RaftLogStore } from '../src/storage/raft-lmdb.js';
import { StateMachine } from '../src/sequencer/state-machine.js';
import { removeDir, startOrdo, startRedis, tempDir } from '../testkit/processes.js';

const RAFT: readonly string[] = [];

function connect(port: number): Redis {
  return new Redis({
    port,
    host: '127.0.0.1',
    lazyConnect: false,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: true,
    retryStrategy: () => null,
    reconnectOnError: () => false,
  });
}

/** A reply as comparable text: errors become `ERR!<message>`. */
async function reply(client: Redis, args: readonly string[]): Promise<unknown> {
  try {
    return await client.call(args[0] as string, ...args.slice(1));
  } catch (e) {
    return `ERR!${(e as Error).message}`;
  }
}

const COMMANDS: readonly (readonly string[])[] = [
  ['SET', 'a', '10'],
  ['GET', 'a'],
  ['INCR', 'a'],
  ['INCR', 'fresh'],
  ['INCRBY', 'a', '5'],
  ['DECR', 'a'],
  ['DECRBY', 'a', '3'],
  ['GET', 'a'],
  ['GET', 'missing'],
  ['SET', 's', 'text'],
  ['INCR', 's'],
  ['INCRBYFLOAT', 'f', '1.5'],
  ['INCRBYFLOAT', 'f', '2.25'],
  ['INCRBYFLOAT', 's', '1'],
  ['GET', 'f'],
  ['MSET', 'm1', 'x', 'm2', 'y'],
  ['MGET', 'a', 'm1', 'm2', 'missing', 'f'],
  ['EXISTS', 'a', 'm1', 'missing'],
  ['DEL', 'm1', 'missing', 'm2'],
  ['MGET', 'm1', 'm2'],
  ['SEQCREATE', 'q', 'START', '100', 'STEP', '2'],
  ['SEQNEXT', 'q'],
  ['SEQNEXT', 'q', 'COUNT', '5'],
  ['SEQNEXT', 'q'],
  ['SEQCURRENT', 'q'],
  ['SEQCREATE', 'q'],
  ['SEQCREATE', 'w', 'MODE', 'window', 'WINDOW', '50'],
  ['SEQNEXT', 'w'],
  ['SEQNEXT', 'w', 'COUNT', '10'],
  ['INCR', 'w'],
  ['SEQNEXT', 'w', 'COUNT', '100'],
  ['SEQCURRENT', 'w'],
  ['GET', 'w'],
  ['SEQNEXT', 'tok', 'TOKEN', 't1'],
  ['SEQNEXT', 'tok', 'TOKEN', 't1'],
  ['SEQNEXT', 'tok'],
  ['DEL', 'a', 'w', 'q'],
  ['GET', 'a'],
  ['INCR', 'a'],
  ['SEQNEXT', 'q', 'COUNT', '0'],
  ['DBSIZE'],
  ['TYPE', 'f'],
  ['STRLEN', 'f'],
];

const PIPELINED: readonly (readonly string[])[] = [
  ['SET', 'p', '5'],
  ['INCR', 'p'],
  ['GET', 'p'],
  ['DEL', 'p'],
  ['INCR', 'p'],
  ['GET', 'p'],
  ['MSET', 'pa', '1', 'pb', '2'],
  ['MGET', 'pa', 'pb', 'p'],
  ['INCRBYFLOAT', 'pf', '1.5'],
  ['GET', 'pf'],
  ['SEQCREATE', 'pq', 'START', '7'],
  ['SEQNEXT', 'pq', 'COUNT', '3'],
  ['SEQCURRENT', 'pq'],
  ['EXISTS', 'p', 'pa', 'pq'],
  ['DBSIZE'],
];

/** ioredis pipelines of INCR on `keys`, `depth` at a time, until stopped or the connection fails. */
class PipelinedIncrementer {
  /** Acknowledged values per key, in the order this client received them. */
  readonly acked = new Map<string, bigint[]>();
  errors = 0;
  private stopped = false;
  readonly done: Promise<void>;

  constructor(
    readonly client: Redis,
    private readonly keys: readonly string[],
    private readonly depth: number,
    rounds = Infinity,
  ) {
    for (const k of keys) this.acked.set(k, []);
    this.client.on('error', () => undefined);
    this.done = this.run(rounds);
  }

  stop(): void {
    this.stopped = true;
  }

  get ackedCount(): number {
    let n = 0;
    for (const v of this.acked.values()) n += v.length;
    return n;
  }

  private async run(rounds: number): Promise<void> {
    for (let round = 0; round < rounds && !this.stopped; round++) {
      const pipeline = this.client.pipeline();
      const sent: string[] = [];
      for (let i = 0; i < this.depth; i++) {
        const key = this.keys[(round * this.depth + i) % this.keys.length] as string;
        sent.push(key);
        pipeline.incr(key);
      }
      let results: [Error | null, unknown][] | null;
      try {
        results = await pipeline.exec();
      } catch {
        this.errors += sent.length;
        return;
      }
      if (results === null) return;
      results.forEach(([error, value], i) => {
        if (error !== null) {
          this.errors++;
          return;
        }
        (this.acked.get(sent[i] as string) as bigint[]).push(BigInt(value as number));
      });
      if (results.some(([error]) => error !== null)) return; // the connection failed
    }
  }
}

/** Waits for `cond`; a wait that runs out is a failure, not a silent pass. */
async function waitUntil(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() >= deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function getCounters(port: number, keys: readonly string[]): Promise<Map<string, bigint>> {
  const client = connect(port);
  try {
    const values = await client.mget(...keys);
    return new Map(keys.map((k, i) => [k, BigInt(values[i] ?? '0')]));
  } finally {
    client.disconnect();
  }
}

/** The Redis commands of a list (ordo's SEQ* commands have no redis-server counterpart). */
const redisOnly = (list: readonly (readonly string[])[]): (readonly string[])[] => list.filter((c) => !(c[0] as string).startsWith('SEQ'));

describe('a node alone', () => {
  it('answers a fixed command list exactly like redis-server, and INFO names the engine', async () => {
    const redis = await startRedis();
    const node = await startOrdo({ args: RAFT });
    const lc = connect(redis.port);
    const rc = connect(node.port);
    try {
      for (const cmd of redisOnly(COMMANDS)) {
        const expected = await reply(lc, cmd);
        const got = await reply(rc, cmd);
        assert.deepEqual(got, expected, `${cmd.join(' ')}: ordo ${JSON.stringify(got)}, redis-server ${JSON.stringify(expected)}`);
      }
      // Pipelined on one connection, a command sees every write sent before it, as in redis-server.
      const pipelined = async (client: Redis): Promise<unknown> => {
        const p = client.pipeline();
        for (const cmd of redisOnly(PIPELINED)) p.call(cmd[0] as string, ...cmd.slice(1));
        return ((await p.exec()) ?? []).map(([e, v]) => (e === null ? v : `ERR!${e.message}`));
      };
      assert.deepEqual(await pipelined(rc), await pipelined(lc));
      // The sequence commands answer through the same group.
      for (const cmd of COMMANDS.filter((c) => (c[0] as string).startsWith('SEQ'))) assert.doesNotMatch(String(await reply(rc, cmd)), /ERR!ERR unknown/);
      const rinfo = String(await rc.info('ordo'));
      assert.match(rinfo, /\r\nengine:raft\r\n/);
      assert.match(rinfo, /\r\nraft_role:leader\r\n/);
      const term = Number(/raft_term:(\d+)/.exec(rinfo)?.[1]);
      const commit = Number(/raft_commit_index:(\d+)/.exec(rinfo)?.[1]);
      const applied = Number(/raft_applied_index:(\d+)/.exec(rinfo)?.[1]);
      assert.ok(term >= 1, rinfo);
      assert.ok(commit > 1 && applied === commit, rinfo);
      assert.ok(existsSync(join(node.dataDir, 'wal')) && !existsSync(join(node.dataDir, 'raft.mdb')) && !existsSync(join(node.dataDir, 'ordo.mdb')));
    } finally {
      lc.disconnect();
      rc.disconnect();
      await redis.stop();
      assert.equal(await node.stop(), 0);
      removeDir(node.dataDir);
    }
  });

  it('pipelined INCRs from several clients are unique, and ordered per client', async () => {
    const node = await startOrdo({ args: RAFT });
    const clients = Array.from({ length: 8 }, () => new PipelinedIncrementer(connect(node.port), ['shared', 'other'], 100, 10));
    try {
      await Promise.all(clients.map((c) => c.done));
      const seen = new Map<string, Set<bigint>>([
        ['shared', new Set()],
        ['other', new Set()],
      ]);
      for (const c of clients) {
        assert.equal(c.errors, 0);
        for (const [key, values] of c.acked) {
          for (let i = 1; i < values.length; i++) assert.ok((values[i] as bigint) > (values[i - 1] as bigint), `${key} went backwards for one client`);
          const set = seen.get(key) as Set<bigint>;
          for (const v of values) {
            assert.ok(!set.has(v), `${key}=${v} handed out twice`);
            set.add(v);
          }
        }
      }
      const total = clients.reduce((n, c) => n + c.ackedCount, 0);
      assert.equal(total, 8 * 100 * 10);
      const values = await getCounters(node.port, ['shared', 'other']);
      assert.equal(values.get('shared'), BigInt(seen.get('shared')?.size ?? 0));
      assert.equal(values.get('other'), BigInt(seen.get('other')?.size ?? 0));
    } finally {
      for (const c of clients) c.client.disconnect();
      assert.equal(await node.stop(), 0);
      removeDir(node.dataDir);
    }
  });

  it('kill -9 under pipelined load, then restart: no acknowledged increment lost, no value handed out twice (3 cycles)', async (t) => {
    const dataDir = tempDir('raft-kill');
    const keys = ['k0', 'k1', 'k2', 'k3'];
    const everAcked = new Map<string, Set<bigint>>(keys.map((k) => [k, new Set()]));
    const highestAcked = new Map<string, bigint>(keys.map((k) => [k, 0n]));
    try {
      for (let cycle = 0; cycle < 3; cycle++) {
        const node = await startOrdo({ dataDir, args: RAFT });
        const before = await getCounters(node.port, keys);
        for (const k of keys) {
          const v = before.get(k) as bigint;
          assert.ok(v >= (highestAcked.get(k) as bigint), `cycle ${cycle}: ${k} is ${v} after restart, ${highestAcked.get(k)} was acknowledged`);
        }
        const clients = Array.from({ length: 6 }, () => new PipelinedIncrementer(connect(node.port), keys, 64));
        await waitUntil(() => clients.every((c) => c.ackedCount >= 500), 10_000, 'every client to have 500 acknowledged INCRs');
        await new Promise((r) => setTimeout(r, 100 + 150 * cycle));
        node.kill('SIGKILL');
        await node.exited;
        await Promise.all(clients.map((c) => c.done));
        for (const c of clients) c.client.disconnect();
        let acked = 0;
        for (const c of clients) {
          for (const [key, values] of c.acked) {
            const set = everAcked.get(key) as Set<bigint>;
            for (let i = 0; i < values.length; i++) {
              const v = values[i] as bigint;
              if (i > 0) assert.ok(v > (values[i - 1] as bigint), `${key} went backwards for one client`);
              assert.ok(!set.has(v), `${key}=${v} handed out twice (cycle ${cycle})`);
              set.add(v);
              if (v > (highestAcked.get(key) as bigint)) highestAcked.set(key, v);
              acked++;
            }
          }
        }
        assert.ok(acked > 0, `cycle ${cycle}: nothing acknowledged`);
        const unanswered = clients.reduce((n, c) => n + c.errors, 0);
        t.diagnostic(`cycle ${cycle}: ${acked} INCRs acknowledged, ${unanswered} unanswered at the kill`);
      }
      const node = await startOrdo({ dataDir, args: RAFT });
      try {
        const after = await getCounters(node.port, keys);
        for (const k of keys) assert.ok((after.get(k) as bigint) >= (highestAcked.get(k) as bigint), `${k} lost acknowledged increments`);
        // The next value is new.
        const client = connect(node.port);
        for (const k of keys) {
          const v = BigInt(await client.incr(k));
          assert.ok(!(everAcked.get(k) as Set<bigint>).has(v) && v > (highestAcked.get(k) as bigint));
        }
        client.disconnect();
      } finally {
        assert.equal(await node.stop(), 0);
      }
    } finally {
      removeDir(dataDir);
    }
  });

  it('SIGTERM answers in-flight writes, exits 0, and acknowledged writes survive a restart', async () => {
    const dataDir = tempDir('raft-term');
    const keys = ['t0', 't1'];
    try {
      const node = await startOrdo({ dataDir, args: RAFT });
      const clients = Array.from({ length: 4 }, () => new PipelinedIncrementer(connect(node.port), keys, 64));
      await waitUntil(() => clients.every((c) => c.ackedCount >= 300), 10_000, 'every client to have 300 acknowledged INCRs');
      node.kill('SIGTERM');
      assert.equal(await node.exited, 0, node.output());
      await Promise.all(clients.map((c) => c.done));
      for (const c of clients) c.client.disconnect();
      const highestAcked = new Map<string, bigint>(keys.map((k) => [k, 0n]));
      for (const c of clients) {
        for (const [key, values] of c.acked) for (const v of values) if (v > (highestAcked.get(key) as bigint)) highestAcked.set(key, v);
      }
      const again = await startOrdo({ dataDir, args: RAFT });
      try {
        const after = await getCounters(again.port, keys);
        for (const k of keys) {
          assert.ok((highestAcked.get(k) as bigint) > 0n, `${k}: nothing was acknowledged before SIGTERM`);
          assert.ok((after.get(k) as bigint) >= (highestAcked.get(k) as bigint), `${k}: ${after.get(k)} < ${highestAcked.get(k)}`);
        }
      } finally {
        assert.equal(await again.stop(), 0);
      }
    } finally {
      removeDir(dataDir);
    }
  });

  it('imports the data directory of the old single-node store once: values, sequences and tokens', async () => {
    const dataDir = tempDir('legacy-import');
    try {
      // Written by the old store: a counter, bytes, a strict and a window sequence, and a token.
      const legacy = LmdbStore.open(dataDir, 'always');
      const sm = new StateMachine();
      const policy = { retentionMs: 600_000, perKeyMax: 100 };
      const spec = { mode: 'strict', start: 1n, step: 1n, max: 2n ** 63n - 1n, windowSize: 10n } as const;
      sm.apply({ type: 'incrby', key: 'counter', delta: 41n });
      sm.apply({ type: 'set', key: 'text', value: Buffer.from('hello'), condition: 'always', get: false });
      sm.apply({ type: 'seqcreate', key: 'strict', spec: { ...spec, id: 's1', start: 100n }, replace: false });
      sm.apply({ type: 'seqcreate', key: 'window', spec: { ...spec, id: 'w1', mode: 'window', windowSize: 50n }, replace: false });
      sm.apply({ type: 'reserve', key: 'window', id: 'w1', countMin: 1n });
      sm.apply({ type: 'seqnext', key: 'tok', count: 3n, range: true, token: 't1', nowMs: Date.now(), policy });
      await legacy.persist(sm.takeChanges());
      await legacy.close();

      const node = await startOrdo({ dataDir, args: RAFT });
      const c = connect(node.port);
      try {
        assert.match(node.output(), /imported 5 keys from .*ordo\.mdb/);
        assert.equal(await c.get('counter'), '41');
        assert.equal(await c.incr('counter'), 42);
        assert.equal(await c.get('text'), 'hello');
        assert.equal(await c.call('SEQNEXT', 'strict'), 100);
        // The window reserved by the old node (1..50) is never handed out again.
        assert.ok(Number(await c.call('SEQNEXT', 'window')) > 50);
        assert.deepEqual(await c.call('SEQNEXT', 'tok', 'COUNT', '3', 'TOKEN', 't1'), [1, 3]);
        assert.equal(await c.dbsize(), 5);
      } finally {
        c.disconnect();
        assert.equal(await node.stop(), 0);
      }
      assert.ok(!existsSync(join(dataDir, 'ordo.mdb')) && existsSync(join(dataDir, 'ordo.mdb.imported')));

      // A crash between the import's commit and the rename: the next start renames, and imports nothing again.
      renameSync(join(dataDir, 'ordo.mdb.imported'), join(dataDir, 'ordo.mdb'));
      const again = await startOrdo({ dataDir, args: RAFT });
      const c2 = connect(again.port);
      try {
        assert.doesNotMatch(again.output(), /imported/);
        assert.equal(await c2.get('counter'), '42');
      } finally {
        c2.disconnect();
        assert.equal(await again.stop(), 0);
      }
      assert.ok(!existsSync(join(dataDir, 'ordo.mdb')) && existsSync(join(dataDir, 'ordo.mdb.imported')));
    } finally {
      removeDir(dataDir);
    }
  });

  it('imports the Raft log of earlier versions (raft.mdb) once: snapshot, entries and metadata', async () => {
    const dataDir = tempDir('raft-mdb-import');
    try {
      // A node alone of an earlier version: a snapshot at index 2 and two entries after it, all committed.
      const old = RaftLogStore.open(dataDir, { fsync: 'always' });
      const conf = { voters: ['n1'], learners: [] };
      const sm = new StateMachine();
      sm.apply({ type: 'incrby', key: 'snapped', delta: 7n });
      const g = old.group(1, conf);
      g.append([
        { index: 1, term: 1, type: EntryType.Normal, data: new Uint8Array(0) },
        { index: 2, term: 1, type: EntryType.Normal, data: encodeOps([{ type: 'incrby', key: 'snapped', delta: 7n }]) },
        { index: 3, term: 1, type: EntryType.Normal, data: encodeOps([{ type: 'incrby', key: 'logged', delta: 5n }]) },
        { index: 4, term: 1, type: EntryType.Normal, data: encodeOps([{ type: 'incrby', key: 'logged', delta: 1n }]) },
      ]);
      g.createSnapshot(2, conf, snapshotState(sm));
      g.compact(2);
      g.setHardState({ term: 1, vote: 'n1', commit: 4 });
      old.putMeta('node-id', Buffer.from('n1'));
      await old.commitTurn();
      await old.close();

      const node = await startOrdo({ dataDir, args: RAFT });
      const c = connect(node.port);
      try {
        assert.match(node.output(), /imported 1 Raft groups from .*raft\.mdb/);
        assert.equal(await c.get('snapped'), '7');
        assert.equal(await c.get('logged'), '6');
        assert.equal(await c.incr('logged'), 7);
      } finally {
        c.disconnect();
        assert.equal(await node.stop(), 0);
      }
      assert.ok(!existsSync(join(dataDir, 'raft.mdb')) && existsSync(join(dataDir, 'raft.mdb.imported')));
      const again = await startOrdo({ dataDir, args: RAFT });
      const c2 = connect(again.port);
      try {
        assert.doesNotMatch(again.output(), /imported/);
        assert.equal(await c2.get('logged'), '7');
      } finally {
        c2.disconnect();
        assert.equal(await again.stop(), 0);
      }
    } finally {
      removeDir(dataDir);
    }
  });

  it('refuses --cluster on the data directory of a node alone, and a directory of other files, with a clear message', async () => {
    const dataDir = tempDir('alone-then-cluster');
    const foreign = tempDir('foreign');
    try {
      const first = await startOrdo({ dataDir, args: RAFT });
      const client = connect(first.port);
      await client.incr('x');
      client.disconnect();
      assert.equal(await first.stop(), 0);
      const member = await startOrdo({ dataDir, args: ['--cluster', `127.0.0.1:${first.port}`], noWait: true });
      assert.equal(await member.exited, 1, member.output());
      assert.match(member.output(), /holds the data of a node that runs alone/);
      const owner = await startOrdo({ dataDir, args: RAFT });
      const c2 = connect(owner.port);
      assert.equal(await c2.get('x'), '1');
      c2.disconnect();
      assert.equal(await owner.stop(), 0);

      writeFileSync(join(foreign, 'notes.txt'), 'not ordo');
      const wrong = await startOrdo({ dataDir: foreign, args: RAFT, noWait: true });
      assert.equal(await wrong.exited, 1, wrong.output());
      assert.match(wrong.output(), /holds other files \(notes\.txt\) and no ordo data/);
    } finally {
      removeDir(dataDir);
      removeDir(foreign);
    }
  });
});
