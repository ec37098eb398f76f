import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster, text } from '../sim/cluster.js';
import { RaftNode, Ready, Role } from '../src/raft/node.js';
import { MemoryStorage } from '../src/raft/storage.js';
import { EntryType, Message, newMessage } from '../src/raft/types.js';

const ET = 10;

function rawNode(id: string, voters: string[]): { node: RaftNode; storage: MemoryStorage } {
  const storage = new MemoryStorage({ voters, learners: [] });
  let x = 0.25;
  const node = new RaftNode({ id, storage, random: () => (x = (x * 7.13) % 1), electionTimeoutTicks: ET });
  return { node, storage };
}

function persist(storage: MemoryStorage, rd: Ready): void {
  if (rd.snapshot !== null) storage.applySnapshot(rd.snapshot);
  if (rd.entries.length > 0) storage.append(rd.entries);
  if (rd.hardState !== null) storage.setHardState(rd.hardState);
}

test('persistence contract: a follower acks appended entries only after advance() confirms them durable', () => {
  const { node, storage } = rawNode('b', ['a', 'b', 'c']);
  const app = newMessage('append', 'a', 'b', 1);
  app.index = 0;
  app.logTerm = 0;
  app.entries = [
    { term: 1, index: 1, type: EntryType.Normal, data: new Uint8Array(0) },
    { term: 1, index: 2, type: EntryType.Normal, data: text('x') },
  ];
  node.step(app);
  const rd1 = node.ready();
  assert.equal(rd1.entries.length, 2);
  assert.equal(rd1.hardState?.term, 1);
  assert.equal(rd1.messages.filter((m) => m.type === 'appendResp').length, 0, 'no ack before the entries are durable');
  persist(storage, rd1);
  node.advance();
  const rd2 = node.ready();
  const acks = rd2.messages.filter((m) => m.type === 'appendResp' && !m.reject);
  assert.equal(acks.length, 1);
  assert.equal(acks[0]?.index, 2);
  node.advance();
});

test('persistence contract: a vote is granted only after it is durable', () => {
  const { node, storage } = rawNode('b', ['a', 'b', 'c']);
  for (let i = 0; i < ET; i++) node.tick(); // leave the start-up guard (nothing to guard at term 0 anyway)
  const v = newMessage('vote', 'a', 'b', 5);
  v.index = 0;
  v.logTerm = 0;
  node.step(v);
  const rd1 = node.ready();
  assert.deepEqual(rd1.hardState, { term: 5, vote: 'a', commit: 0 });
  assert.equal(rd1.messages.filter((m) => m.type === 'voteResp').length, 0);
  persist(storage, rd1);
  node.advance();
  const rd2 = node.ready();
  const grants = rd2.messages.filter((m) => m.type === 'voteResp' && !m.reject);
  assert.equal(grants.length, 1);
  assert.equal(grants[0]?.term, 5);
});

test('leader self-ack: a single-node leader commits only what advance() confirmed durable', () => {
  const { node, storage } = rawNode('a', ['a']);
  node.hup();
  assert.equal(node.role, Role.Leader);
  assert.ok(node.propose(text('p1')).ok);
  const rd = node.ready();
  assert.equal(rd.entries.length, 2, 'no-op and p1');
  assert.equal(node.status().commit, 0, 'nothing durable yet, nothing committed');
  persist(storage, rd);
  node.advance();
  assert.equal(node.status().commit, 2);
  const rd2 = node.ready();
  assert.deepEqual(
    rd2.committedEntries.map((e) => e.index),
    [1, 2],
  );
});

test("leader appends in parallel with its own write: followers' durable acks commit without the leader's disk", () => {
  const nodes = new Map<string, { node: RaftNode; storage: MemoryStorage }>();
  for (const id of ['a', 'b', 'c']) nodes.set(id, rawNode(id, ['a', 'b', 'c']));
  const get = (id: string): { node: RaftNode; storage: MemoryStorage } => nodes.get(id) as { node: RaftNode; storage: MemoryStorage };
  const inbox: Message[] = [];
  const cycle = (id: string, persistIt: boolean): Ready | null => {
    const n = get(id);
    if (!n.node.hasReady()) return null;
    const rd = n.node.ready();
    inbox.push(...rd.messages);
    if (persistIt) {
      persist(n.storage, rd);
      n.node.advance();
    }
    return rd;
  };
  const run = (heldLeader: boolean): void => {
    for (let round = 0; round < 20; round++) {
      for (const id of ['b', 'c']) while (cycle(id, true) !== null);
      if (!heldLeader) while (cycle('a', true) !== null);
      const batch = inbox.splice(0);
      for (const m of batch) get(m.to).node.step(m);
    }
  };
  get('a').node.hup();
  run(false);
  assert.equal(get('a').node.role, Role.Leader);
  const before = get('a').node.status().commit;
  get('a').node.propose(text('fast'));
  // The leader hands out its Ready (messages go out) but its disk write is still in flight.
  const held = cycle('a', false);
  assert.ok(held !== null && held.entries.length === 1);
  run(true);
  assert.equal(get('a').node.status().commit, before + 1, 'b and c made it durable: committed');
  assert.equal(get('a').node.status().persistedIndex, before, "the leader's own copy is not durable yet");
  persist(get('a').storage, held);
  get('a').node.advance();
  assert.equal(get('a').node.status().persistedIndex, before + 1);
});

test("leader self-ack: the leader's own undurable copy does not count toward the quorum", () => {
  const nodes = new Map<string, { node: RaftNode; storage: MemoryStorage }>();
  for (const id of ['a', 'b', 'c']) nodes.set(id, rawNode(id, ['a', 'b', 'c']));
  const get = (id: string): { node: RaftNode; storage: MemoryStorage } => nodes.get(id) as { node: RaftNode; storage: MemoryStorage };
  let inbox: Message[] = [];
  const cycleAll = (ids: string[]): void => {
    for (const id of ids) {
      const n = get(id);
      while (n.node.hasReady()) {
        const rd = n.node.ready();
        inbox.push(...rd.messages);
        persist(n.storage, rd);
        n.node.advance();
      }
    }
  };
  const deliver = (blocked: string | null): void => {
    const batch = inbox;
    inbox = [];
    for (const m of batch) if (m.to !== blocked && m.from !== blocked) get(m.to).node.step(m);
  };
  get('a').node.hup();
  for (let i = 0; i < 10; i++) {
    cycleAll(['a', 'b', 'c']);
    deliver(null);
  }
  assert.equal(get('a').node.role, Role.Leader);
  const before = get('a').node.status().commit;
  // c is unreachable; a's own write of the new entry is still in flight.
  get('a').node.propose(text('needs-two-durable-copies'));
  const held = get('a').node.ready();
  inbox.push(...held.messages);
  for (let i = 0; i < 10; i++) {
    cycleAll(['b']);
    deliver('c');
  }
  assert.equal(get('a').node.status().commit, before, 'only b has it durable: 1 of 3');
  persist(get('a').storage, held);
  get('a').node.advance();
  assert.equal(get('a').node.status().commit, before + 1, "a's durable copy makes 2 of 3");
});

test('conflicting logs: the new leader overwrites uncommitted entries, with fast back-off', () => {
  const c = new TestCluster({ voters: ['a', 'b', 'c', 'd', 'e'], raft: { electionTimeoutTicks: ET, checkQuorum: false } });
  assert.ok(c.elect('a'));
  c.node('a').propose(text('base'));
  c.stabilize();
  c.isolate('a');
  for (let i = 0; i < 40; i++) c.node('a').propose(text(`stale${i}`));
  c.stabilize();
  assert.ok(c.elect('b'));
  for (let i = 0; i < 3; i++) c.node('b').propose(text(`new${i}`));
  c.stabilize();
  c.sent = [];
  c.heal();
  c.tick(2 * ET);
  const rejects = c.sent.filter((m) => m.type === 'appendResp' && m.reject && m.from === 'a').length;
  assert.ok(rejects <= 3, `fast back-off: ${rejects} rejects for 40 conflicting entries`);
  for (const id of ['a', 'b', 'c', 'd', 'e']) {
    assert.deepEqual(c.appliedData(id), ['base', 'new0', 'new1', 'new2'], `${id}`);
  }
  assert.equal(c.node('a').status().lastIndex, c.node('b').status().lastIndex);
});

test('batching, bounded append size and bounded pipelining', () => {
  const appendBytesMax = 200;
  const inflightAppendsMax = 3;
  const c = new TestCluster({ voters: ['a', 'b', 'c'], raft: { electionTimeoutTicks: ET, appendBytesMax, inflightAppendsMax } });
  assert.ok(c.elect('a'));
  c.node('a').propose(text('warm'));
  c.stabilize();
  c.sent = [];
  // b's acks are lost: the leader may have at most inflightAppendsMax appends in flight to b.
  c.block('b', 'a');
  for (let i = 0; i < 60; i++) c.node('a').propose(new Uint8Array(50));
  c.stabilize();
  const toB = c.sent.filter((m) => m.type === 'append' && m.to === 'b' && m.entries.length > 0);
  assert.equal(toB.length, inflightAppendsMax);
  for (const m of c.sent.filter((x) => x.type === 'append')) {
    const bytes = m.entries.reduce((s, e) => s + e.data.length + 24, 0);
    assert.ok(m.entries.length <= 1 || bytes <= appendBytesMax, `append of ${bytes} bytes`);
  }
  // Many proposals made in one turn leave in few messages (several entries each).
  const toC = c.sent.filter((m) => m.type === 'append' && m.to === 'c' && m.entries.length > 0);
  assert.ok(
    toC.some((m) => m.entries.length >= 2),
    'entries are batched',
  );
  c.heal();
  c.tick(2 * ET);
  assert.equal(c.member('b').appliedIndex, c.node('a').status().commit);
});

test('snapshot install: a follower behind a compacted log receives the snapshot in chunks', () => {
  const c = new TestCluster({ voters: ['a', 'b', 'c'], raft: { electionTimeoutTicks: ET, snapshotChunkBytes: 16 } });
  assert.ok(c.elect('a'));
  c.isolate('c');
  for (let i = 0; i < 30; i++) c.node('a').propose(text(`v${i}`));
  c.stabilize();
  const a = c.member('a');
  const applied = a.appliedIndex;
  assert.equal(applied, 31);
  const data = new Uint8Array(200).map((_, i) => i % 251);
  a.storage.createSnapshot(applied, a.node.confStateAt(applied), data);
  a.storage.compact(applied);
  c.sent = [];
  c.heal();
  c.tick(3 * ET);
  const chunks = c.sent.filter((m) => m.type === 'snapshot' && m.to === 'c');
  assert.ok(chunks.length >= Math.ceil(200 / 16), `${chunks.length} chunks`);
  for (const m of chunks) assert.ok((m.chunk?.length ?? 0) <= 16);
  assert.deepEqual(c.member('c').restoredSnapshot, data);
  assert.equal(c.member('c').appliedIndex, applied);
  c.node('a').propose(text('after'));
  c.stabilize();
  c.tick(2);
  assert.deepEqual(c.appliedData('c'), ['after']);
  assert.equal(c.member('c').storage.snapshot().meta.index, applied);
});

test('restart: a node recovers term, vote and log from storage and catches up', () => {
  const c = new TestCluster({ voters: ['a', 'b', 'c'], raft: { electionTimeoutTicks: ET } });
  assert.ok(c.elect('a'));
  for (let i = 0; i < 5; i++) c.node('a').propose(text(`r${i}`));
  c.stabilize();
  c.member('b').down = true;
  for (let i = 5; i < 8; i++) c.node('a').propose(text(`r${i}`));
  c.stabilize();
  c.restart('b');
  assert.equal(c.node('b').term, 1);
  c.member('b').applied = [];
  c.tick(2 * ET);
  assert.equal(c.member('b').appliedIndex, c.node('a').status().commit);
  assert.equal(c.leaderId(), 'a');
});
