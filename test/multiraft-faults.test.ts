// Clients write through whichever node leads their group (or, with no leader
// known, through any replica, where the write waits for the election) while
// partitions, isolations and crashes (losing unflushed writes) come and go. Afterwards:
// replicas agree, no acknowledged increment is lost, no value is handed out
// twice, and no write answered "not applied" was applied.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryHub, type MemoryTransport } from '../src/transport/memory.js';
import { MultiRaftHost } from '../src/multiraft/host.js';
import { MemoryRaftLogStore } from '../src/multiraft/memory-stores.js';
import { ERROR_KEY_OF, type RaftGroup } from '../src/multiraft/raft-group.js';
import { WRITE_NOT_APPLIED } from '../src/errors.js';
import type { OpResult } from '../src/sequencer/state-machine.js';
import { prng, sleep } from '../testkit/index.js';
import { snapshotState } from '../src/sequencer/codec.js';

const NODES = ['a', 'b', 'c'];
const GROUPS = [1, 2, 3, 4];
const RUN_MS = 5000;
const CLIENTS_PER_GROUP = 8;
const SHARED_KEYS = 3;

describe('multiraft under faults', () => {
  it('partitions and crashes: no lost, duplicate or falsely failed write', async (t) => {
    const seed = Number(process.env['MULTIRAFT_SEED'] ?? 12345);
    const random = prng(seed);
    const hub = new MemoryHub({ random: prng(seed + 1) });
    const stores = new Map(NODES.map((n) => [n, new MemoryRaftLogStore()]));
    const hosts = new Map<string, MultiRaftHost>();
    const transports = new Map<string, MemoryTransport>();
    let starts = 0;
    const start = (id: string): void => {
      const transport = hub.transport(id);
      transport.setPeers(new Map(NODES.filter((n) => n !== id).map((n) => [n, { host: n, port: 0 }])));
      const store = stores.get(id);
      assert.ok(store !== undefined);
      const host = new MultiRaftHost({
        nodeId: id,
        transport,
        store,
        random: prng(seed * 31 + starts++),
        tickIntervalMs: 10,
        requestTimeoutMs: 500,
        snapshotEntries: 60,
        logKeepEntries: 10,
      });
      for (const g of GROUPS) host.addGroup(g, NODES);
      hosts.set(id, host);
      transports.set(id, transport);
    };
    const crash = async (id: string): Promise<void> => {
      hosts.get(id)?.halt();
      hosts.delete(id);
      stores.get(id)?.crash();
      await transports.get(id)?.close();
      transports.delete(id);
    };
    for (const n of NODES) start(n);

    const leaderOf = (gid: number): RaftGroup | undefined => {
      for (const h of hosts.values()) {
        const g = h.group(gid);
        if (g !== undefined && g.isLeader()) return g;
      }
      return undefined;
    };

    // Acknowledged values per shared key; per unique key, how its single write was answered.
    const acked = new Map<string, bigint[]>();
    const unknownPerKey = new Map<string, number>();
    const uniqueOutcome = new Map<string, 'ok' | 'notApplied' | 'unknown'>();
    const counts = { ok: 0, notApplied: 0, unknown: 0 };
    const errors = new Map<string, number>();
    /** Writes issued at a replica that knew no leader and acknowledged once the election ended there. */
    let okAfterWaiting = 0;
    const classify = (r: OpResult): 'ok' | 'notApplied' | 'unknown' => {
      if (r.type === 'int') return 'ok';
      assert.equal(r.type, 'error');
      if (r.type !== 'error') throw new Error('unreachable');
      errors.set(r.error, (errors.get(r.error) ?? 0) + 1);
      if (r.error === ERROR_KEY_OF.outcomeUnknown) return 'unknown';
      assert.ok(WRITE_NOT_APPLIED.has(r.error), `unexpected error ${r.error}`);
      return 'notApplied';
    };
    const incr = (g: RaftGroup, key: string): Promise<OpResult> => new Promise((resolve) => g.propose({ type: 'incrby', key, delta: 1n }, resolve));

    const t0 = Date.now();
    let stop = false;
    let reads = 0;
    const client = async (gid: number, c: number): Promise<void> => {
      let n = 0;
      while (!stop) {
        // Without a known leader, write at any replica: it waits (bounded) for the election.
        let g = leaderOf(gid);
        let atLeader = true;
        if (g === undefined) {
          const live = [...hosts.values()].map((h) => h.group(gid)).filter((x): x is RaftGroup => x !== undefined);
          g = live[Math.floor(random() * live.length)];
          atLeader = false;
          if (g === undefined) {
            await sleep(5);
            continue;
          }
        }
        const shared = `s${gid}:${c % SHARED_KEYS}`;
        if (n % 4 === 3) {
          // A linearizable read, at a random replica (followers forward ReadIndex to the leader).
          const replicas = [...hosts.values()].map((h) => h.group(gid)).filter((x): x is RaftGroup => x !== undefined);
          const at = replicas[Math.floor(random() * replicas.length)] ?? g;
          let floor = 0n;
          for (const v of acked.get(shared) ?? []) if (v > floor) floor = v;
          const seen = await new Promise<bigint | null>((resolve) =>
            at.read(
              (m) => m.getValue(shared),
              (o) => resolve(o.ok ? (typeof o.value === 'bigint' ? o.value : 0n) : null),
            ),
          );
          if (seen !== null) {
            reads++;
            assert.ok(seen >= floor, `stale read of ${shared}: ${seen} < ${floor}`);
          }
        }
        const unique = `u${gid}:${c}:${n++}`;
        const [rs, ru] = await Promise.all([incr(g, shared), incr(g, unique)]);
        const cs = classify(rs);
        counts[cs]++;
        if (rs.type === 'int') {
          let list = acked.get(shared);
          if (list === undefined) acked.set(shared, (list = []));
          list.push(rs.value);
        } else if (cs === 'unknown') {
          unknownPerKey.set(shared, (unknownPerKey.get(shared) ?? 0) + 1);
        }
        uniqueOutcome.set(unique, classify(ru));
        if (ru.type === 'int') assert.equal(ru.value, 1n);
        if (!atLeader && rs.type === 'int') okAfterWaiting++;
        if (!atLeader && rs.type === 'error') await sleep(5); // refused at once (a leader is known elsewhere): let it be found
      }
    };
    const clients: Promise<void>[] = [];
    for (const gid of GROUPS) for (let c = 0; c < CLIENTS_PER_GROUP; c++) clients.push(client(gid, c));

    const faults: string[] = [];
    const down = new Set<string>();
    while (Date.now() - t0 < RUN_MS) {
      await sleep(100 + Math.floor(random() * 250));
      const pick = NODES[Math.floor(random() * NODES.length)] as string;
      const roll = random();
      if (roll < 0.25) {
        hub.isolate(pick);
        faults.push(`isolate ${pick}`);
      } else if (roll < 0.45) {
        const other = NODES[(NODES.indexOf(pick) + 1) % NODES.length] as string;
        hub.partition(pick, other);
        faults.push(`partition ${pick}-${other}`);
      } else if (roll < 0.75) {
        hub.healAll();
        faults.push('heal');
      } else if (down.size === 0) {
        await crash(pick);
        down.add(pick);
        faults.push(`crash ${pick}`);
      } else {
        for (const d of down) {
          start(d);
          faults.push(`restart ${d}`);
        }
        down.clear();
      }
    }
    hub.healAll();
    for (const d of down) start(d);
    down.clear();
    await sleep(300); // clients make progress after the heal
    stop = true;
    await Promise.all(clients);

    // Convergence: every replica of every group applied the leader's commit.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const converged = GROUPS.every((gid) => {
        const rs = [...hosts.values()].map((h) => h.group(gid)).filter((g): g is RaftGroup => g !== undefined);
        const l = rs.find((r) => r.isLeader());
        return l !== undefined && rs.every((r) => r.appliedIndex === l.node.status().commit);
      });
      if (converged) break;
      assert.ok(Date.now() < deadline, `no convergence; faults: ${faults.join(', ')}`);
      await sleep(10);
    }
    const ctx = `seed ${seed}; faults: ${faults.join(', ')}`;
    for (const gid of GROUPS) {
      const rs = [...hosts.values()].map((h) => h.group(gid)).filter((g): g is RaftGroup => g !== undefined);
      // The whole state, byte for byte (values, sequences, tokens).
      const state = (g: RaftGroup): string => snapshotState(g.stateMachine).toString('base64');
      for (const r of rs) assert.equal(state(r), state(rs[0] as RaftGroup), `group ${gid} replicas differ; ${ctx}`);
    }
    const sm = (gid: number): RaftGroup => {
      const g = [...hosts.values()].map((h) => h.group(gid)).find((x) => x !== undefined);
      assert.ok(g !== undefined);
      return g;
    };
    for (const [key, values] of acked) {
      assert.equal(new Set(values).size, values.length, `duplicate value on ${key}; ${ctx}`);
      const gid = Number(key.slice(1, key.indexOf(':')));
      const final = sm(gid).stateMachine.getValue(key);
      assert.equal(typeof final, 'bigint');
      const finalValue = final as bigint;
      let max = 0n;
      for (const v of values) if (v > max) max = v;
      assert.ok(finalValue >= max, `acknowledged increment lost on ${key}; ${ctx}`);
      const unknown = BigInt(unknownPerKey.get(key) ?? 0);
      assert.ok(finalValue <= BigInt(values.length) + unknown, `more increments applied than possible on ${key}; ${ctx}`);
      assert.ok(finalValue >= BigInt(values.length), `fewer increments applied than acknowledged on ${key}; ${ctx}`);
    }
    for (const [key, outcome] of uniqueOutcome) {
      const gid = Number(key.slice(1, key.indexOf(':')));
      const v = sm(gid).stateMachine.getValue(key);
      if (outcome === 'ok') assert.equal(v, 1n, `acknowledged write lost: ${key}; ${ctx}`);
      if (outcome === 'notApplied') assert.equal(v, undefined, `write answered "not applied" was applied: ${key}; ${ctx}`);
    }
    t.diagnostic(
      `seed ${seed}: ${counts.ok} acknowledged (${okAfterWaiting} after waiting for an election), ${counts.notApplied} not applied, ` +
        `${counts.unknown} unknown, ${reads} reads; ${faults.length} faults; errors ${JSON.stringify(Object.fromEntries(errors))}`,
    );
    assert.ok(counts.ok > 100, `too little progress: ${JSON.stringify(counts)}; ${ctx}`);
    assert.ok(reads > 0, `no read succeeded, so none was checked for staleness; ${ctx}`);
    for (const h of hosts.values()) h.halt();
    await hub.close();
  });
});
