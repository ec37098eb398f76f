// Throughput of the Raft core: proposals through a 3-replica group in one
// process (in-memory storage, messages handed over directly), 100 operations
// per entry. Prints numbers; never fails on time.
//
//   node dist/bench/raft.js

import { pathToFileURL } from 'node:url';
import { RaftNode, Role } from '../src/raft/node.js';
import { MemoryStorage } from '../src/raft/storage.js';
import { Message } from '../src/raft/types.js';

export interface RaftBenchResult {
  readonly replicas: number;
  readonly opsPerEntry: number;
  readonly entries: number;
  readonly ops: number;
  readonly seconds: number;
  readonly opsPerSec: number;
  readonly entriesPerSec: number;
  readonly messages: number;
}

const OPS_PER_ENTRY = 100;
/** Bytes per operation in an entry (a key id and a delta, as the sequencer would encode them). */
const OP_BYTES = 16;
/** Entries proposed per loop turn (one turn = one batch the multiraft host would collect). */
const ENTRIES_PER_TURN = 8;

function runOnce(totalEntries: number): RaftBenchResult {
  const ids = ['r1', 'r2', 'r3'];
  const conf = { voters: ids, learners: [] };
  let seed = 12345;
  const random = (): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed / 4294967296;
  };
  const storages = new Map<string, MemoryStorage>();
  const nodes = new Map<string, RaftNode>();
  for (const id of ids) {
    const storage = new MemoryStorage(conf);
    storages.set(id, storage);
    nodes.set(id, new RaftNode({ id, storage, random }));
  }
  let queue: Message[] = [];
  let messages = 0;
  let leaderApplied = 0;
  const leader = nodes.get('r1') as RaftNode;
  const pump = (): void => {
    for (const id of ids) {
      const n = nodes.get(id) as RaftNode;
      const s = storages.get(id) as MemoryStorage;
      while (n.hasReady()) {
        const rd = n.ready();
        for (const m of rd.messages) queue.push(m);
        if (rd.snapshot !== null) s.applySnapshot(rd.snapshot);
        if (rd.entries.length > 0) s.append(rd.entries);
        if (rd.hardState !== null) s.setHardState(rd.hardState);
        n.advance();
        if (n === leader) leaderApplied += rd.committedEntries.length;
      }
    }
    const q = queue;
    queue = [];
    messages += q.length;
    for (const m of q) (nodes.get(m.to) as RaftNode).step(m);
  };
  leader.hup();
  for (let i = 0; i < 100 && leader.role !== Role.Leader; i++) pump();
  if (leader.role !== Role.Leader) throw new Error('no leader');
  for (let i = 0; i < 10; i++) pump();
  const startApplied = leaderApplied;
  const t0 = performance.now();
  let proposed = 0;
  let turns = 0;
  while (leaderApplied - startApplied < totalEntries) {
    for (let k = 0; k < ENTRIES_PER_TURN && proposed < totalEntries; k++) {
      const res = leader.propose(new Uint8Array(OPS_PER_ENTRY * OP_BYTES));
      if (!res.ok) break;
      proposed++;
    }
    pump();
    if (++turns % 64 === 0) for (const n of nodes.values()) n.tick();
    // Bounded: a leader that lost its role would never apply the rest.
    if (leader.role !== Role.Leader) throw new Error(`the leader lost its role after ${leaderApplied - startApplied} entries`);
  }
  const seconds = (performance.now() - t0) / 1000;
  const entries = leaderApplied - startApplied;
  return {
    replicas: ids.length,
    opsPerEntry: OPS_PER_ENTRY,
    entries,
    ops: entries * OPS_PER_ENTRY,
    seconds,
    opsPerSec: (entries * OPS_PER_ENTRY) / seconds,
    entriesPerSec: entries / seconds,
    messages,
  };
}

export function runRaftBench(): Promise<RaftBenchResult> {
  runOnce(5_000); // warm-up
  return Promise.resolve(runOnce(100_000));
}

function format(r: RaftBenchResult): string {
  return (
    `raft: ${r.replicas} replicas, ${r.opsPerEntry} ops/entry: ${r.entries} entries in ${r.seconds.toFixed(2)} s = ` +
    `${Math.round(r.entriesPerSec).toLocaleString('en-US')} entries/s, ${Math.round(r.opsPerSec).toLocaleString('en-US')} ops/s ` +
    `(${r.messages} messages)`
  );
}

const invokedPath = process.argv[1];
if (invokedPath !== undefined && import.meta.url === pathToFileURL(invokedPath).href) {
  const r = await runRaftBench();
  console.log(format(r));
}
