import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster, text } from '../sim/cluster.js';
import { Role } from '../src/raft/node.js';

const ET = 10;

function electedCluster(ids: string[], leader: string, raft: ConstructorParameters<typeof TestCluster>[0]['raft'] = {}): TestCluster {
  const c = new TestCluster({ voters: ids, raft: { electionTimeoutTicks: ET, ...raft } });
  assert.ok(c.elect(leader), `${leader} should win the first election`);
  return c;
}

test('split vote: no leader in the split term, a single leader in a later one', () => {
  const c = new TestCluster({ voters: ['a', 'b', 'c', 'd'], raft: { electionTimeoutTicks: ET, preVote: false } });
  // a and b campaign at the same time; c only hears a, d only hears b.
  c.block('b', 'c');
  c.block('a', 'd');
  c.node('a').hup();
  c.node('b').hup();
  c.stabilize();
  assert.equal(c.node('a').term, 1);
  assert.equal(c.node('b').term, 1);
  assert.equal(c.leaders().length, 0, '2 of 4 votes each is no majority');
  c.heal();
  c.tickUntil(() => c.leaders().length === 1, 20 * ET);
  const leader = c.leaders()[0];
  assert.ok(leader !== undefined && leader.term >= 2);
  c.tick(3 * ET);
  assert.equal(c.leaders().length, 1);
});

test('stale leader: its proposals never commit and are replaced after it rejoins', () => {
  const c = electedCluster(['a', 'b', 'c'], 'a', { checkQuorum: false });
  c.node('a').propose(text('committed-1'));
  c.stabilize();
  c.isolate('a');
  // a still believes it leads (no check-quorum here) and accepts a proposal.
  const stale = c.node('a').propose(text('stale'));
  assert.ok(stale.ok);
  c.stabilize();
  assert.ok(c.elect('b'));
  c.node('b').propose(text('committed-2'));
  c.stabilize();
  assert.equal(c.node('a').role, Role.Leader, 'the isolated node has not noticed');
  assert.ok(!c.appliedData('a').includes('stale'));
  c.heal();
  c.tick(ET);
  assert.equal(c.leaderId(), 'b');
  for (const id of ['a', 'b', 'c']) {
    assert.deepEqual(c.appliedData(id), ['committed-1', 'committed-2'], `${id} applied`);
  }
});

test('partitioned leader returning steps down without disturbing the new leader', () => {
  const c = electedCluster(['a', 'b', 'c'], 'a');
  c.isolate('a');
  c.tickUntil(() => c.leaders().some((l) => l.id !== 'a'), 10 * ET);
  const newLeader = c.leaders().find((l) => l.id !== 'a');
  assert.ok(newLeader !== undefined);
  const term = newLeader.term;
  c.tick(5 * ET); // a stays away for a long time
  c.heal();
  c.tick(3 * ET);
  assert.equal(c.leaderId(), newLeader.id, 'the new leader keeps leading');
  assert.equal(newLeader.term, term, 'no term inflation from the returning node');
  assert.equal(c.node('a').role, Role.Follower);
  assert.equal(c.node('a').leader, newLeader.id);
});

test('pre-vote prevents a partitioned node from disrupting the cluster', () => {
  for (const preVote of [true, false]) {
    const c = electedCluster(['a', 'b', 'c'], 'a', { preVote, checkQuorum: false });
    c.isolate('c');
    c.tick(10 * ET);
    c.heal();
    c.tick(3 * ET);
    const leader = c.leaders()[0];
    assert.ok(leader !== undefined);
    if (preVote) {
      assert.equal(leader.id, 'a');
      assert.equal(leader.term, 1, 'with pre-vote the term does not move');
      assert.equal(c.node('c').term, 1);
    } else {
      assert.ok(leader.term > 1, "without pre-vote the isolated node's campaigns force a new election");
    }
  }
});

test('check-quorum: a leader cut off from its quorum steps down within an election timeout', () => {
  const c = electedCluster(['a', 'b', 'c'], 'a');
  c.isolate('a');
  let ticks = 0;
  while (c.node('a').role === Role.Leader) {
    c.tick();
    ticks++;
    assert.ok(ticks <= 2 * ET, 'leader did not step down');
  }
  assert.ok(ticks <= 2 * ET);
  assert.equal(c.node('a').propose(text('x')).ok, false);
});

test('leadership transfer: the target takes over in the next term', () => {
  const c = electedCluster(['a', 'b', 'c'], 'a');
  c.node('a').propose(text('before'));
  c.stabilize();
  assert.ok(c.node('a').transferLeadership('c'));
  assert.equal(c.node('a').propose(text('during')).ok, false, 'no proposals while transferring');
  c.stabilize();
  assert.equal(c.leaderId(), 'c');
  assert.equal(c.node('c').term, 2);
  assert.ok(c.node('c').propose(text('after')).ok);
  c.stabilize();
  c.tick(2);
  for (const id of ['a', 'b', 'c']) assert.deepEqual(c.appliedData(id), ['before', 'after']);
});

test('leadership transfer to a lagging follower first catches it up', () => {
  const c = electedCluster(['a', 'b', 'c'], 'a');
  c.isolate('c');
  for (let i = 0; i < 20; i++) c.node('a').propose(text(`e${i}`));
  c.stabilize();
  c.heal();
  assert.ok(c.node('a').transferLeadership('c'));
  c.stabilize();
  assert.equal(c.leaderId(), 'c');
  assert.equal(c.appliedData('c').length, 20);
});
