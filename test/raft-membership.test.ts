import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster, text } from '../sim/cluster.js';
import { Role } from '../src/raft/node.js';

const ET = 10;
const EMPTY_CONF = { voters: [], learners: [] };

test('learner promotion: a learner catches up without voting, then is promoted to voter', () => {
  const c = new TestCluster({ voters: ['a', 'b', 'c'], raft: { electionTimeoutTicks: ET, promoteLagEntriesMax: 10 } });
  assert.ok(c.elect('a'));
  c.addMember('d', EMPTY_CONF);
  c.isolate('d');
  const add = c.node('a').proposeConfChange({ op: 'addLearner', nodeId: 'd' });
  assert.ok(add.ok);
  for (let i = 0; i < 30; i++) c.node('a').propose(text(`x${i}`));
  c.stabilize();
  assert.deepEqual(c.node('a').status().conf, { voters: ['a', 'b', 'c'], learners: ['d'] });
  const early = c.node('a').proposeConfChange({ op: 'promote', nodeId: 'd' });
  assert.equal(early.ok, false, 'a learner that has not caught up is not promoted');
  c.heal();
  c.tick(3 * ET);
  assert.equal(c.member('d').appliedIndex, c.node('a').status().commit, 'the learner caught up');
  assert.equal(c.appliedData('d').length, 30);
  // A learner does not count toward commit: with b and c cut off, nothing commits.
  c.isolate('b');
  c.isolate('c');
  c.heal();
  c.block('b', 'a');
  c.block('c', 'a');
  const commitBefore = c.node('a').status().commit;
  c.node('a').propose(text('needs-a-voter'));
  c.stabilize();
  assert.equal(c.node('a').status().commit, commitBefore);
  c.heal();
  c.tick(2);
  assert.ok(c.node('a').status().commit > commitBefore);
  const promote = c.node('a').proposeConfChange({ op: 'promote', nodeId: 'd' });
  assert.ok(promote.ok);
  c.stabilize();
  c.tick(2);
  for (const id of ['a', 'b', 'c', 'd']) {
    assert.deepEqual(c.node(id).status().conf, { voters: ['a', 'b', 'c', 'd'], learners: [] }, id);
  }
  // As a voter, d can now lead.
  assert.ok(c.node('a').transferLeadership('d'));
  c.stabilize();
  assert.equal(c.leaderId(), 'd');
});

test('one membership change at a time', () => {
  const c = new TestCluster({ voters: ['a', 'b', 'c'], raft: { electionTimeoutTicks: ET } });
  assert.ok(c.elect('a'));
  c.addMember('d', EMPTY_CONF);
  c.addMember('e', EMPTY_CONF);
  assert.ok(c.node('a').proposeConfChange({ op: 'addLearner', nodeId: 'd' }).ok);
  const second = c.node('a').proposeConfChange({ op: 'addLearner', nodeId: 'e' });
  assert.equal(second.ok, false);
  assert.equal(second.ok ? '' : second.reason, 'confChangePending');
  c.stabilize();
  assert.ok(c.node('a').proposeConfChange({ op: 'addLearner', nodeId: 'e' }).ok, 'allowed once the first is committed');
});

test('removal of the leader: it steps down once the change commits and the rest carry on', () => {
  const c = new TestCluster({ voters: ['a', 'b', 'c'], raft: { electionTimeoutTicks: ET } });
  assert.ok(c.elect('a'));
  c.node('a').propose(text('before'));
  c.stabilize();
  const rm = c.node('a').proposeConfChange({ op: 'remove', nodeId: 'a' });
  assert.ok(rm.ok);
  c.stabilize();
  c.tickUntil(() => c.leaders().some((l) => l.id !== 'a'), 5 * ET);
  assert.notEqual(c.node('a').role, Role.Leader);
  const leader = c.leaders()[0];
  assert.ok(leader !== undefined && leader.id !== 'a');
  assert.deepEqual(leader.status().conf.voters, ['b', 'c']);
  // The removed node no longer matters for commit.
  c.member('a').down = true;
  assert.ok(leader.propose(text('after')).ok);
  c.stabilize();
  c.tick(2);
  for (const id of ['b', 'c']) assert.deepEqual(c.appliedData(id), ['before', 'after']);
  // And it does not campaign by itself.
  c.member('a').down = false;
  c.isolate('a');
  c.tick(5 * ET);
  assert.equal(c.node('a').role, Role.Follower);
});

test('removal of a follower shrinks the quorum', () => {
  const c = new TestCluster({ voters: ['a', 'b', 'c', 'd'], raft: { electionTimeoutTicks: ET } });
  assert.ok(c.elect('a'));
  assert.ok(c.node('a').proposeConfChange({ op: 'remove', nodeId: 'd' }).ok);
  c.stabilize();
  c.member('d').down = true;
  c.member('c').down = true;
  // With voters a, b, c a quorum is 2: a and b commit alone.
  assert.ok(c.node('a').propose(text('two-of-three')).ok);
  c.stabilize();
  c.tick(2);
  assert.deepEqual(c.appliedData('b'), ['two-of-three']);
});
