import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster, text } from '../sim/cluster.js';
import { RAFT_DEFAULTS } from '../src/raft/node.js';
import { Message } from '../src/raft/types.js';

const ET = 10;

test('ReadIndex: the read index is the commit index, confirmed by a heartbeat round', () => {
  const c = new TestCluster({ voters: ['a', 'b', 'c'], raft: { electionTimeoutTicks: ET, checkQuorum: false } });
  assert.ok(c.elect('a'));
  c.node('a').propose(text('w1'));
  c.stabilize();
  const commit = c.node('a').status().commit;
  assert.equal(c.node('a').read(1, 'safe'), 'ok');
  assert.equal(c.member('a').readStates.length, 0, 'not answered before a quorum confirms leadership');
  c.stabilize();
  assert.deepEqual(c.member('a').readStates, [{ requestId: 1, index: commit }]);
  // A leader cut off from the quorum cannot confirm: no answer until the partition heals.
  c.isolate('a');
  assert.equal(c.node('a').read(2, 'safe'), 'ok');
  c.stabilize();
  assert.equal(c.member('a').readStates.length, 1);
  c.heal();
  c.tick(1);
  assert.deepEqual(c.member('a').readStates[1], { requestId: 2, index: commit });
});

test('ReadIndex on a follower is forwarded to the leader', () => {
  const c = new TestCluster({ voters: ['a', 'b', 'c'], raft: { electionTimeoutTicks: ET } });
  assert.ok(c.elect('a'));
  c.node('a').propose(text('w1'));
  c.stabilize();
  assert.equal(c.node('b').read(9, 'safe'), 'ok');
  c.stabilize();
  const commit = c.node('a').status().commit;
  assert.deepEqual(c.member('b').readStates, [{ requestId: 9, index: commit }]);
  c.tick(1);
  assert.ok(c.member('b').appliedIndex >= commit, 'b can serve once it applied the read index');
});

test("ReadIndex waits for the new leader's no-op to commit", () => {
  const c = new TestCluster({ voters: ['a', 'b', 'c'], raft: { electionTimeoutTicks: ET } });
  c.dropIf = (m) => m.type === 'appendResp';
  assert.ok(c.elect('a'));
  assert.equal(c.node('a').read(1, 'safe'), 'notReady');
  c.dropIf = null;
  c.tick(ET);
  assert.equal(c.node('a').read(2, 'safe'), 'ok');
});

test('ReadIndex: reads pending when leadership is lost are reported dropped', () => {
  const c = new TestCluster({ voters: ['a', 'b', 'c'], raft: { electionTimeoutTicks: ET } });
  assert.ok(c.elect('a'));
  c.isolate('a');
  assert.equal(c.node('a').read(5, 'safe'), 'ok');
  c.tick(2 * ET); // check-quorum makes a step down
  assert.deepEqual(c.member('a').droppedReads, [5]);
});

test('lease read: served locally while check-quorum holds, refused once the lease may have expired', () => {
  const c = new TestCluster({ voters: ['a', 'b', 'c'], raft: { electionTimeoutTicks: ET } });
  assert.ok(c.elect('a'));
  c.node('a').propose(text('w1'));
  c.stabilize();
  c.tick(1); // heartbeats acknowledged: the lease starts
  assert.ok(c.node('a').leaseValid());
  c.sent = [];
  assert.equal(c.node('a').read(1, 'lease'), 'ok');
  c.processReady(c.member('a'));
  assert.deepEqual(c.member('a').readStates, [{ requestId: 1, index: c.node('a').status().commit }]);
  // processReady only queues messages: look at what the read made the leader send.
  assert.deepEqual(c.sent, [], 'no message exchange for a lease read');
  c.sent = null;
  // Cut off: after electionTimeout - drift ticks the lease is gone and the read falls back to ReadIndex.
  c.isolate('a');
  c.tick(ET - RAFT_DEFAULTS.leaseClockDriftTicks);
  assert.equal(c.node('a').leaseValid(), false);
  assert.equal(c.node('a').read(2, 'lease'), 'ok');
  c.stabilize();
  assert.equal(c.member('a').readStates.length, 1, 'no answer without a quorum');
});

test('lease read: a follower inside the lease does not vote for a disruptive candidate', () => {
  const c = new TestCluster({ voters: ['a', 'b', 'c'], raft: { electionTimeoutTicks: ET, preVote: false } });
  assert.ok(c.elect('a'));
  c.tick(1);
  assert.ok(c.node('a').leaseValid());
  // c campaigns (no pre-vote) while a's lease holds: b ignores the request, so no
  // leader can exist in c's term before the lease expires.
  c.node('c').hup();
  c.stabilize();
  assert.equal(c.node('c').term, 2);
  assert.notEqual(c.node('c').role, 'leader');
  assert.equal(c.node('b').term, 1, 'b did not even adopt the new term');
  assert.equal(c.node('b').vote, 'a');
});

test("lease read: a node restarted inside a leader's lease does not vote until it expires", () => {
  // Without the start-up guard the restarted node, having forgotten that it
  // just acknowledged the leader, would elect someone else while the old
  // leader still served lease reads.
  const c = new TestCluster({ voters: ['a', 'b', 'c'], raft: { electionTimeoutTicks: ET } });
  assert.ok(c.elect('a'));
  c.node('a').propose(text('w1'));
  c.stabilize();
  c.tick(1);
  assert.ok(c.node('a').leaseValid());
  // c loses contact with a; b crashes and restarts at once.
  c.block('a', 'c');
  c.block('c', 'a');
  c.block('a', 'b'); // a will not reach b before the election below is decided
  c.restart('b');
  for (let i = 0; i < ET - 1 && c.node('a').leaseValid(); i++) {
    c.node('c').hup(); // c tries to get elected with b's vote
    c.stabilize();
    assert.notEqual(c.node('c').role, 'leader', `c elected while a's lease holds (tick ${i})`);
    c.tick(1);
  }
});

test('lease read: no lease for the rest of the term once TimeoutNow was sent', () => {
  // A TimeoutNow can arrive long after the transfer was abandoned; the target
  // then wins an election that ignores leases. The old leader must not keep
  // serving lease reads in that term.
  const c = new TestCluster({ voters: ['a', 'b', 'c'], raft: { electionTimeoutTicks: ET } });
  assert.ok(c.elect('a'));
  c.tick(1);
  let held: Message | null = null;
  c.dropIf = (m) => {
    if (m.type === 'timeoutNow') {
      held = m;
      return true;
    }
    return false;
  };
  assert.ok(c.node('a').transferLeadership('b'));
  c.stabilize();
  assert.ok(held !== null, 'TimeoutNow sent');
  c.tick(ET + 1); // the transfer is abandoned; a keeps leading and collects fresh acks
  assert.equal(c.leaderId(), 'a');
  assert.ok(c.node('a').propose(text('after-abandon')).ok);
  c.stabilize();
  assert.equal(c.node('a').leaseValid(), false);
  // The late TimeoutNow now makes b leader without a hearing of it.
  c.dropIf = (m) => m.to === 'a' || m.from === 'a';
  c.node('b').step(held);
  c.stabilize();
  assert.equal(c.node('b').role, 'leader');
  assert.equal(c.node('a').role, 'leader', 'a has not heard yet');
  assert.equal(c.node('a').read(1, 'lease'), 'ok');
  c.processReady(c.member('a'));
  assert.equal(c.member('a').readStates.length, 0, 'a must not answer from its lease');
});
