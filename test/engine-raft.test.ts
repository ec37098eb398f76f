// --engine raft: a single node serves its keyspace from a Raft group of one
// (MultiRaftHost + RaftGroup, the log in DIR/raft.mdb), on real processes.
// It answers like the local engine, keeps pipelined INCRs unique and ordered,
// loses no acknowledged increment and hands out no value twice across kill -9
// and restart, stops gracefully on SIGTERM, and a data directory of one engine
// is refused by the other.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { removeDir, startOrdo, tempDir, type RunningOrdo } from './helpers/processes.js';

const RAFT = ['--engine', 'raft'] as const;

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

describe('--engine raft', () => {
  it('answers a fixed command list exactly like the local engine, and INFO names the engine', async () => {
    const local = await startOrdo();
    const raft = await startOrdo({ args: RAFT });
    const lc = connect(local.port);
    const rc = connect(raft.port);
    try {
      for (const cmd of COMMANDS) {
        const expected = await reply(lc, cmd);
        const got = await reply(rc, cmd);
        assert.deepEqual(got, expected, `${cmd.join(' ')}: raft ${JSON.stringify(got)}, local ${JSON.stringify(expected)}`);
      }
      // Pipelined on one connection, a command sees every write sent before it, as with the local engine.
      const pipelined = async (client: Redis): Promise<unknown> => {
        const p = client.pipeline();
        for (const cmd of PIPELINED) p.call(cmd[0] as string, ...cmd.slice(1));
        return ((await p.exec()) ?? []).map(([e, v]) => (e === null ? v : `ERR!${e.message}`));
      };
      assert.deepEqual(await pipelined(rc), await pipelined(lc));
      const rinfo = String(await rc.info('ordo'));
      assert.match(rinfo, /\r\nengine:raft\r\n/);
      assert.match(rinfo, /\r\nraft_role:leader\r\n/);
      const term = Number(/raft_term:(\d+)/.exec(rinfo)?.[1]);
      const commit = Number(/raft_commit_index:(\d+)/.exec(rinfo)?.[1]);
      const applied = Number(/raft_applied_index:(\d+)/.exec(rinfo)?.[1]);
      assert.ok(term >= 1, rinfo);
      assert.ok(commit > 1 && applied === commit, rinfo);
      const linfo = String(await lc.info('ordo'));
      assert.match(linfo, /\r\nengine:local\r\n/);
      assert.doesNotMatch(linfo, /raft_/);
      assert.ok(existsSync(join(raft.dataDir, 'raft.mdb')) && !existsSync(join(raft.dataDir, 'ordo.mdb')));
    } finally {
      lc.disconnect();
      rc.disconnect();
      assert.equal(await local.stop(), 0);
      assert.equal(await raft.stop(), 0);
      removeDir(local.dataDir);
      removeDir(raft.dataDir);
    }
  });

  it('pipelined INCRs from several clients are unique, and ordered per client', async () => {
    const node = await startOrdo({ args: RAFT });
    const clients = Array.from({ length: 8 }, () => new PipelinedIncrementer(connect(node.port), ['shared', 'other'], 100, 10));
    try {
      await Promise.all(clients.map((c) => c.done));
      const seen = new Map<string, Set<bigint>>([['shared', new Set()], ['other', new Set()]]);
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
    const maxAcked = new Map<string, bigint>(keys.map((k) => [k, 0n]));
    try {
      for (let cycle = 0; cycle < 3; cycle++) {
        const node = await startOrdo({ dataDir, args: RAFT });
        const before = await getCounters(node.port, keys);
        for (const k of keys) {
          const v = before.get(k) as bigint;
          assert.ok(v >= (maxAcked.get(k) as bigint), `cycle ${cycle}: ${k} is ${v} after restart, ${maxAcked.get(k)} was acknowledged`);
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
              if (v > (maxAcked.get(key) as bigint)) maxAcked.set(key, v);
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
        for (const k of keys) assert.ok((after.get(k) as bigint) >= (maxAcked.get(k) as bigint), `${k} lost acknowledged increments`);
        // The next value is new.
        const client = connect(node.port);
        for (const k of keys) {
          const v = BigInt(await client.incr(k));
          assert.ok(!(everAcked.get(k) as Set<bigint>).has(v) && v > (maxAcked.get(k) as bigint));
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
      const maxAcked = new Map<string, bigint>(keys.map((k) => [k, 0n]));
      for (const c of clients) {
        for (const [key, values] of c.acked) for (const v of values) if (v > (maxAcked.get(key) as bigint)) maxAcked.set(key, v);
      }
      const again = await startOrdo({ dataDir, args: RAFT });
      try {
        const after = await getCounters(again.port, keys);
        for (const k of keys) {
          assert.ok((maxAcked.get(k) as bigint) > 0n, `${k}: nothing was acknowledged before SIGTERM`);
          assert.ok((after.get(k) as bigint) >= (maxAcked.get(k) as bigint), `${k}: ${after.get(k)} < ${maxAcked.get(k)}`);
        }
      } finally {
        assert.equal(await again.stop(), 0);
      }
    } finally {
      removeDir(dataDir);
    }
  });

  it('a data directory of one engine is refused by the other, with a clear message', async () => {
    const cases: [string, readonly string[], readonly string[], RegExp][] = [
      ['local', [], RAFT, /holds data of the local engine \(ordo\.mdb\).*--engine local/],
      ['raft', RAFT, ['--engine', 'local'], /holds data of the raft engine \(raft\.mdb\).*--engine raft/],
    ];
    for (const [name, createWith, refuseWith, message] of cases) {
      const dataDir = tempDir(`engine-${name}`);
      try {
        const first: RunningOrdo = await startOrdo({ dataDir, args: createWith });
        const client = connect(first.port);
        await client.incr('x');
        client.disconnect();
        assert.equal(await first.stop(), 0);
        const other = await startOrdo({ dataDir, args: refuseWith, noWait: true });
        assert.equal(await other.exited, 1, other.output());
        assert.match(other.output(), message);
        // Nothing of the refusing engine was left behind, and the owner still starts.
        assert.equal(existsSync(join(dataDir, name === 'local' ? 'raft.mdb' : 'ordo.mdb')), false);
        const owner = await startOrdo({ dataDir, args: createWith });
        const c2 = connect(owner.port);
        assert.equal(await c2.get('x'), '1');
        c2.disconnect();
        assert.equal(await owner.stop(), 0);
      } finally {
        removeDir(dataDir);
      }
    }
  });
});
