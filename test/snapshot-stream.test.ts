// Snapshots streamed to a lagging follower in chunks (multiraft/snapshot-transfer.ts
// over storage/keyspace.ts): the keyspace read in chunks from one read
// transaction and staged and installed on the other side; a follower far
// behind a group of many keys catches up with bounded chunks and buffers; a
// crash in the middle of a transfer leaves the old state (staging removed at
// open) and a later transfer succeeds; a leader change abandons a transfer
// on both sides.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { decodeFrame, encodeFrame, encodeTransfer, type TransferMessage } from '../src/multiraft/message-codec.js';
import { adoptInstalledCheckpoint, checkpointUsable } from '../src/multiraft/keyspace.js';
import type { RaftGroup } from '../src/multiraft/raft-group.js';
import { MemoryStorage } from '../src/raft/index.js';
import { SNAPSHOT_CHUNK_BYTES, SNAPSHOT_CHUNKS_IN_FLIGHT_MAX } from '../src/multiraft/snapshot-transfer.js';
import { snapshotState } from '../src/sequencer/codec.js';
import { ChunkWriter, ITEM_VALUE, readItems } from '../src/sequencer/snapshot-items.js';
import { encodeValue } from '../src/sequencer/codec.js';
import { StateMachine, type Op, type OpResult } from '../src/sequencer/state-machine.js';
import { KeyspaceStore } from '../src/storage/keyspace.js';
import { sleep, waitFor as waitUntil } from '../testkit/index.js';
import { scratchDirs } from './helpers/dirs.js';
import { Hosts, type HostExtra } from './helpers/hosts.js';

const GROUP = 1;
const tempDir = scratchDirs('ordo-snapshot-stream-');

/** testkit's waitFor with this file's longer bound. */
const waitFor = (what: string, cond: () => boolean, timeoutMs = 30_000): Promise<void> => waitUntil(what, cond, timeoutMs);

function propose(g: RaftGroup, op: Op): Promise<OpResult> {
  return new Promise((resolve) => g.propose(op, resolve));
}

/** Three nodes, one group; each with a memory log and an LMDB keyspace of its own. */
class Trio extends Hosts {
  constructor(extra: HostExtra) {
    super({ ids: ['n1', 'n2', 'n3'], groups: [GROUP], extra, keyspace: 'lmdb', tempDir, seed: 11, waitMs: 30_000 });
  }

  group(id: string): RaftGroup {
    return this.host(id).group(GROUP) as RaftGroup;
  }

  async waitLeader(): Promise<RaftGroup> {
    await waitFor('a leader', () => this.leader(GROUP) !== undefined);
    return this.leader(GROUP) as RaftGroup;
  }

  /** Writes `keys` keys (values of `valueBytes`) with MSETs of `perOp` keys, at whatever node leads. */
  async fill(prefix: string, keys: number, perOp = 2000, valueBytes = 24): Promise<void> {
    const value = Buffer.alloc(valueBytes, 'v');
    for (let at = 0; at < keys;) {
      const n = Math.min(perOp, keys - at);
      const op: Op = {
        type: 'mset',
        keys: Array.from({ length: n }, (_, i) => `${prefix}:${at + i}`),
        values: Array.from({ length: n }, () => value),
      };
      const l = await this.waitLeader();
      const r = await propose(l, op);
      if (r.type === 'ok') at += n;
      else await sleep(10);
    }
  }

  /** Until the leader's checkpoint is past every write so far and its log no longer holds what `behind` lacks. */
  async waitCompactedPast(behind: string): Promise<void> {
    const lastOfBehind = this.group(behind).node.status().lastIndex;
    // A few small writes so that entries follow the last big one (a checkpoint then covers it).
    for (let i = 0; i < 10; i++) await propose(await this.waitLeader(), { type: 'incrby', key: 'tail', delta: 1n });
    await waitFor('the leader to compact past the follower', () => {
      const l = this.leader(GROUP);
      return l !== undefined && l.node.status().firstIndex > lastOfBehind + 1 && l.stats.checkpointIndex >= l.appliedIndex - 20;
    });
  }
}

describe('snapshot streaming', () => {
  const all: Trio[] = [];
  after(async () => {
    for (const t of all) await t.close();
  });

  it('a keyspace is read in bounded chunks from one read transaction, staged and installed whole', async () => {
    const source = KeyspaceStore.open(tempDir(), { fsync: 'never' });
    const target = KeyspaceStore.open(tempDir(), { fsync: 'never' });
    try {
      const sm = new StateMachine(source.backing(3));
      for (let i = 0; i < 5000; i++) sm.apply({ type: 'incrby', key: `k${i}`, delta: BigInt(i + 1) });
      sm.apply({ type: 'set', key: 'long'.padEnd(3000, 'x'), value: Buffer.alloc(100, 1), condition: 'always', get: false });
      const spec = { id: 's1', mode: 'strict', start: 1n, step: 1n, max: 1000n, windowSize: 1n } as const;
      sm.apply({ type: 'seqcreate', key: 'tok', spec, replace: false });
      const next = sm.apply({ type: 'seqnext', key: 'tok', count: 1n, range: false, token: 't1', nowMs: 1, policy: { retentionMs: 60_000, perKeyMax: 16 } });
      assert.equal(next.type, 'int');
      const conf = { voters: ['a'], learners: [] };
      await source.checkpoint([{ groupId: 3, changes: sm.beginCheckpoint(), appliedIndex: 40, appliedTerm: 2, conf, keyCount: sm.size }]);
      const reader = source.openSnapshotReader(3);
      // A checkpoint committed while the read is open is not seen by it.
      const more = new StateMachine(source.backing(3));
      more.apply({ type: 'incrby', key: 'late', delta: 1n });
      await source.checkpoint([{ groupId: 3, changes: more.beginCheckpoint(), appliedIndex: 41, appliedTerm: 2, conf, keyCount: more.size }]);
      assert.equal(reader.state?.appliedIndex, 40);
      const bytesMax = 4096;
      let chunks = 0;
      let items = 0;
      for (;;) {
        const { data, last } = reader.nextChunk(bytesMax);
        assert.ok(data.length <= bytesMax || [...readItems(data)].length === 1, `a chunk of ${data.length} bytes`);
        for (const item of readItems(data)) {
          items++;
          assert.notEqual(item.key, 'late');
        }
        await target.stageChunk(3, data);
        chunks++;
        if (last) break;
      }
      reader.close();
      assert.ok(chunks > 10, `${chunks} chunks`);
      assert.equal(items, 5000 + 2 + 1); // values (the long key and the sequence among them) and one token table
      // Staged records are not visible until installed, then all of them are.
      assert.equal(new StateMachine(target.backing(3)).getValue('k0'), undefined);
      await target.installStaged(3, { appliedIndex: 40, appliedTerm: 2, conf });
      assert.deepEqual(target.groupState(3), { appliedIndex: 40, appliedTerm: 2, conf });
      assert.deepEqual(target.installedSnapshot(3), { index: 40, term: 2 });
      const installed = new StateMachine(target.backing(3));
      assert.equal(installed.size, 5002);
      const expected = new StateMachine(source.backing(3));
      assert.equal(expected.getValue('late'), 1n);
      expected.apply({ type: 'del', keys: ['late'] });
      assert.ok(snapshotState(installed).equals(snapshotState(expected)), 'the installed keyspace is the checkpoint read');
    } finally {
      await source.close();
      await target.close();
    }
  });

  it('an installed snapshot whose log write a crash lost is adopted by the log at restart; a later checkpoint ends that', async () => {
    const dir = tempDir();
    const conf = { voters: ['n1', 'n2', 'n3'], learners: [] };
    let ks = KeyspaceStore.open(dir, { fsync: 'never' });
    try {
      const chunk = new ChunkWriter(1024);
      chunk.push(ITEM_VALUE, 'x', encodeValue(7n));
      await ks.stageChunk(5, chunk.take());
      await ks.installStaged(5, { appliedIndex: 40, appliedTerm: 3, conf });
      await ks.close();
      ks = KeyspaceStore.open(dir, { fsync: 'never' });
      assert.deepEqual(ks.installedSnapshot(5), { index: 40, term: 3 });
      const log = new MemoryStorage(conf); // the crash lost the log's record of the snapshot
      assert.ok(adoptInstalledCheckpoint(ks, 5, log));
      assert.deepEqual(log.snapshot().meta, { index: 40, term: 3, conf });
      assert.ok(checkpointUsable(ks.groupState(5), log));
      assert.equal(new StateMachine(ks.backing(5)).getValue('x'), 7n);
      const sm = new StateMachine(ks.backing(5));
      sm.apply({ type: 'incrby', key: 'x', delta: 1n });
      await ks.checkpoint([{ groupId: 5, changes: sm.beginCheckpoint(), appliedIndex: 41, appliedTerm: 3, conf, keyCount: sm.size }]);
      await ks.close();
      ks = KeyspaceStore.open(dir, { fsync: 'never' });
      assert.equal(ks.installedSnapshot(5), undefined);
      assert.equal(adoptInstalledCheckpoint(ks, 5, new MemoryStorage(conf)), false, 'a plain checkpoint outside the log is not adopted');
    } finally {
      await ks.close();
    }
  });

  it('transfer messages round-trip in a peer frame', () => {
    const chunk: TransferMessage = {
      kind: 'chunk',
      from: 'n1',
      to: 'n2',
      term: 7,
      transferId: 3,
      seq: 12,
      last: true,
      meta: { index: 900, term: 7, conf: { voters: ['n1', 'n2', 'n3'], learners: ['n4'] } },
      data: Uint8Array.of(1, 2, 3),
    };
    const ack: TransferMessage = { kind: 'ack', from: 'n2', to: 'n1', term: 7, transferId: 3, seq: 13, last: false, meta: null, data: new Uint8Array(0) };
    const items = decodeFrame(
      encodeFrame([
        { groupId: 4, bytes: encodeTransfer(chunk) },
        { groupId: 5, bytes: encodeTransfer(ack) },
      ]),
    );
    assert.deepEqual(items, [
      { groupId: 4, transfer: chunk },
      { groupId: 5, transfer: ack },
    ]);
  });

  it("a follower far behind a group of 200 000 keys catches up in bounded chunks; its state equals the leader's", async () => {
    const trio = new Trio({ checkpointIntervalMs: 50, snapshotEntries: 50, logKeepEntries: 5 });
    all.push(trio);
    const leader = await trio.waitLeader();
    const victim = trio.ids.find((id) => id !== leader.node.id) as string;
    await trio.fill('early', 100, 100);
    await waitFor('the victim to apply the early keys', () => trio.group(victim).appliedIndex >= leader.appliedIndex);
    trio.hub.isolate(victim);
    await trio.fill('big', 200_000);
    await trio.waitCompactedPast(victim);
    const rssBeforeBytes = process.memoryUsage().rss;
    let rssPeakBytes = rssBeforeBytes;
    const sampler = setInterval(() => {
      rssPeakBytes = Math.max(rssPeakBytes, process.memoryUsage().rss);
    }, 5);
    const startedMs = Date.now();
    trio.hub.unisolate(victim);
    let tookMs = 0;
    try {
      await waitFor('the snapshot installed', () => trio.group(victim).stats.snapshotsRestored > 0);
      tookMs = Date.now() - startedMs;
      await trio.waitConverged();
    } finally {
      clearInterval(sampler);
    }
    const v = trio.group(victim);
    assert.ok(v.stats.snapshotsRestored > 0, 'the follower caught up through a snapshot');
    assert.equal(v.keyCount, 200_000 + 100 + 1);
    const received = trio.host(victim).stats().snapshots;
    let sent = trio.host(leader.node.id).stats().snapshots;
    for (const id of trio.ids) if (id !== victim && trio.host(id).stats().snapshots.sendsFinished > 0) sent = trio.host(id).stats().snapshots;
    assert.ok(received.chunksStaged >= 20, `${received.chunksStaged} chunks staged`);
    assert.ok(sent.chunkBytesMax <= SNAPSHOT_CHUNK_BYTES, `largest chunk ${sent.chunkBytesMax} bytes`);
    const windowBytes = SNAPSHOT_CHUNKS_IN_FLIGHT_MAX * SNAPSHOT_CHUNK_BYTES;
    assert.ok(sent.sendBufferedBytesMax <= windowBytes, `sender held ${sent.sendBufferedBytesMax} bytes`);
    assert.ok(received.receiveBufferedBytesMax <= windowBytes, `receiver held ${received.receiveBufferedBytesMax} bytes`);
    // The installed state is in the follower's keyspace, not in its memory.
    assert.ok(v.stateMachine.keysInMemory < 10_000, `${v.stateMachine.keysInMemory} keys in memory`);
    const mib = (n: number): string => (n / 1024 / 1024).toFixed(1);
    console.log(
      `# snapshot of ${v.keyCount} keys: ${received.chunksStaged} chunks staged (largest ${sent.chunkBytesMax} B), installed ${tookMs} ms after the follower came back; ` +
        `buffered at most ${mib(sent.sendBufferedBytesMax)} MiB sending, ${mib(received.receiveBufferedBytesMax)} MiB receiving; ` +
        `process RSS ${mib(rssBeforeBytes)} -> peak ${mib(rssPeakBytes)} MiB (three nodes in one process)`,
    );
  });

  it('a crash in the middle of a transfer leaves the old state; staging is removed at open and a later transfer succeeds', async () => {
    const trio = new Trio({ checkpointIntervalMs: 50, snapshotEntries: 50, logKeepEntries: 5 });
    all.push(trio);
    const leader = await trio.waitLeader();
    const victim = trio.ids.find((id) => id !== leader.node.id) as string;
    await trio.fill('old', 50, 50);
    await waitFor('the victim to checkpoint the old keys', () => trio.group(victim).stats.checkpointIndex >= leader.appliedIndex);
    const oldIndex = trio.group(victim).stats.checkpointIndex;
    trio.hub.isolate(victim);
    await trio.fill('new', 60_000);
    await trio.waitCompactedPast(victim);
    trio.hub.unisolate(victim);
    await waitFor('some chunks staged', () => trio.host(victim).stats().snapshots.chunksStaged >= 2);
    // The leader's chunks stop reaching the follower: the transfer is cut in the middle.
    for (const id of trio.ids) if (id !== victim) trio.hub.partitionOneWay(id, victim);
    assert.equal(trio.group(victim).stats.snapshotsRestored, 0);
    const warnings: string[] = [];
    const onWarning = (w: Error): void => {
      warnings.push(w.message);
    };
    process.on('warning', onWarning);
    await trio.crash(victim);
    const reopened = KeyspaceStore.open(trio.dirs.get(victim) as string, { fsync: 'never' });
    await sleep(1); // warnings are emitted on the next tick
    process.off('warning', onWarning);
    assert.ok(
      warnings.some((w) => /removed \d+ records of a snapshot transfer cut short/.test(w)),
      `warnings: ${warnings.join('; ')}`,
    );
    assert.equal(reopened.groupState(GROUP)?.appliedIndex, oldIndex, 'the old checkpoint is intact');
    assert.equal(reopened.installedSnapshot(GROUP), undefined);
    const old = new StateMachine(reopened.backing(GROUP));
    assert.equal(old.getValue('new:0'), undefined, 'nothing of the transfer is visible');
    assert.ok(old.getValue('old:0') !== undefined);
    assert.equal(old.size, 50);
    trio.keyspaces.set(victim, reopened);
    for (const id of trio.ids) if (id !== victim) trio.hub.heal(id, victim);
    trio.start(victim);
    await trio.waitConverged();
    assert.ok(trio.group(victim).stats.snapshotsRestored > 0, 'caught up through a later transfer');
    assert.equal(trio.group(victim).keyCount, 60_000 + 50 + 1);
  });

  it("a leader change in the middle of a transfer abandons it on both sides; the new leader's transfer succeeds", async () => {
    // Elections far apart (0.5 s): the leader change is the transfer's, not a loaded machine's stalled event loop.
    const trio = new Trio({ checkpointIntervalMs: 50, snapshotEntries: 50, logKeepEntries: 5, raft: { electionTimeoutTicks: 50 } });
    all.push(trio);
    const leader = await trio.waitLeader();
    const oldLeaderId = leader.node.id;
    const victim = trio.ids.find((id) => id !== oldLeaderId) as string;
    const other = trio.ids.find((id) => id !== oldLeaderId && id !== victim) as string;
    await trio.fill('a', 50, 50);
    trio.hub.isolate(victim);
    await trio.fill('b', 60_000);
    await trio.waitCompactedPast(victim);
    trio.hub.unisolate(victim);
    await waitFor('some chunks staged', () => trio.host(victim).stats().snapshots.chunksStaged >= 2);
    trio.hub.partitionOneWay(oldLeaderId, victim); // the transfer stalls
    await waitFor('the other follower to be up to date', () => trio.group(other).appliedIndex === leader.appliedIndex);
    assert.ok(leader.transferLeadership(other), 'leadership transfer started');
    await waitFor('the new leader', () => trio.group(other).isLeader());
    await waitFor('the old leader to abandon its transfer', () => trio.host(oldLeaderId).stats().snapshots.sendsAbandoned >= 1);
    assert.equal(trio.host(oldLeaderId).stats().snapshots.sendsFinished, 0);
    await waitFor('the follower to abandon what it received', () => trio.host(victim).stats().snapshots.receivesAbandoned >= 1);
    trio.hub.heal(oldLeaderId, victim);
    await trio.waitConverged();
    assert.ok(trio.group(victim).stats.snapshotsRestored > 0);
    assert.ok(trio.host(other).stats().snapshots.sendsFinished >= 1, 'the new leader sent the snapshot');
    assert.equal(trio.group(victim).keyCount, 60_000 + 50 + 1);
  });
});
