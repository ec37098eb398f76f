// Snapshot transfers between the nodes of a MultiRaftHost: how a leader
// sends a lagging follower its group's state in chunks of bounded size, and
// how the follower stages them and hands the staged snapshot to Raft.
//
// The raft nodes run with external snapshot transfer (raft/snapshot-stream.ts):
// a leader's node asks for a snapshot to be sent with a meta-only "snapshot"
// message; the host opens the group's snapshot source (an LMDB read
// transaction of the last checkpoint, or the log's snapshot kept in memory
// without a keyspace) and streams it here:
//
//   leader                                   follower
//   chunk(seq 0, meta, records) ──────────▶  stage (LMDB staging range, never read)
//   chunk(seq 1) ...  at most CHUNKS_IN_FLIGHT unacknowledged
//                    ◀────────────────────── ack(next seq wanted), once staged
//   chunk(last) ──────────────────────────▶  stage, step Raft (meta, no data):
//                    ◀────────────────────── ack  Raft restores, the host installs
//   reportSnapshot(ok), probe after it        the staging in one step, then Raft acks
//
// Memory: a sender holds at most SNAPSHOT_CHUNKS_IN_FLIGHT_MAX chunks of
// SNAPSHOT_CHUNK_BYTES (plus the one record that did not fit, if any); a
// receiver at most as many chunks waiting for their staging write (with a
// keyspace; without one the received state is kept in memory, as the whole
// state machine is). At most SNAPSHOT_SENDS_MAX and SNAPSHOT_RECEIVES_MAX
// transfers run at once per node.
//
// A transfer is abandoned, and cleaned up on its side (source closed, or
// staging discarded), when it makes no progress for SNAPSHOT_TRANSFER_IDLE_MS_MAX,
// when the term changes or the leader steps down, when the other side aborts,
// when a newer transfer for the same group replaces it, or when the host stops.
// A sender that gives up tells its raft node (reportSnapshot(false)), which
// asks again later if the follower still needs it.

import assert from 'node:assert/strict';
import { Role, type NodeId, type SnapshotMeta } from '../raft/index.js';
import type { TransferMessage } from './message-codec.js';

/** Bytes of records per chunk (one record larger than this travels alone). */
export const SNAPSHOT_CHUNK_BYTES = 256 * 1024;
/** Chunks sent and not yet acknowledged, per transfer (flow control). */
export const SNAPSHOT_CHUNKS_IN_FLIGHT_MAX = 4;
/** Transfers this node sends at once (all groups, all followers); more are refused and asked again later by Raft. */
export const SNAPSHOT_SENDS_MAX = 4;
/** Transfers this node receives at once (one per group at most); more are refused (aborted). */
export const SNAPSHOT_RECEIVES_MAX = 4;
/** Unacknowledged chunks are sent again after this long without an acknowledgement. */
export const SNAPSHOT_CHUNK_RESEND_MS = 1000;
/**
 * After a transfer of index I finished, the leader keeps its log from I on
 * until the follower acknowledges I (it installed the snapshot), for at most
 * this long: a follower installing a big snapshot then continues from the log
 * instead of needing another snapshot. Bounds how long the log may grow for it.
 */
export const SNAPSHOT_INSTALL_WAIT_MS_MAX = 60_000;
/** A transfer without progress (a chunk acknowledged, or staged) for this long is abandoned. */
export const SNAPSHOT_TRANSFER_IDLE_MS_MAX = 10_000;

/** A snapshot read in chunks (an LMDB read transaction, or a snapshot kept in memory). */
export interface SnapshotSource {
  readonly meta: SnapshotMeta;
  nextChunk(bytesMax: number): { readonly data: Uint8Array; readonly last: boolean };
  close(): void;
}

/** What the transfers need of a group (RaftGroup). */
export interface TransferGroup {
  readonly groupId: number;
  readonly node: {
    readonly role: Role;
    readonly term: number;
    reportSnapshot(to: NodeId, ok: boolean): void;
    followers(): readonly { readonly id: NodeId; readonly match: number }[];
  };
  /** Opens the source of the snapshot the raft node asked to send (its meta is at or past `requested`). */
  openSnapshotSource(requested: SnapshotMeta): SnapshotSource;
  /** Stages one received chunk (durably with a keyspace; in memory without). */
  stageSnapshotChunk(data: Uint8Array): Promise<void>;
  /** Drops what was staged. */
  discardStagedSnapshot(): Promise<void>;
  /** Every chunk is staged: hands the snapshot to the raft node; true when it restores it (then the group installs the staging). */
  snapshotStaged(from: NodeId, term: number, meta: SnapshotMeta): boolean;
}

export interface SnapshotTransferDeps {
  readonly nodeId: NodeId;
  readonly now: () => number;
  readonly group: (groupId: number) => TransferGroup | undefined;
  /** Puts one transfer message on the bus to `to` (false: the bus refused it; resends cover a loss). */
  readonly send: (to: NodeId, groupId: number, message: TransferMessage) => boolean;
  /** Something changed that a loop turn should act on (a raft node was told something). */
  readonly scheduleTurn: () => void;
  /** Runs `fn` once the event loop had its turn (setImmediate; the simulator's virtual one): chunks are read one per loop turn. */
  readonly defer: (fn: () => void) => void;
}

export interface SnapshotTransferStats {
  readonly sendsStarted: number;
  readonly sendsFinished: number;
  readonly sendsAbandoned: number;
  /** Requests refused because SNAPSHOT_SENDS_MAX transfers were running. */
  readonly sendsRefused: number;
  readonly receivesStarted: number;
  /** Received transfers whose staging Raft took and that were installed. */
  readonly receivesInstalled: number;
  readonly receivesAbandoned: number;
  readonly chunksSent: number;
  readonly chunksResent: number;
  readonly chunksStaged: number;
  /** Largest chunk sent, in bytes. */
  readonly chunkBytesMax: number;
  /** Most chunk bytes held by all sending transfers at once. */
  readonly sendBufferedBytesMax: number;
  /** Most chunk bytes held by all receiving transfers (waiting for staging) at once. */
  readonly receiveBufferedBytesMax: number;
}

interface Chunk {
  readonly seq: number;
  readonly data: Uint8Array;
  readonly last: boolean;
}

interface Outgoing {
  readonly groupId: number;
  readonly to: NodeId;
  readonly term: number;
  readonly id: number;
  readonly source: SnapshotSource;
  /** Chunks sent and not acknowledged, ascending seq. */
  readonly unacked: Chunk[];
  /** Next chunk to read from the source. */
  nextSeq: number;
  sourceDone: boolean;
  /** A chunk read is scheduled (one at a time, one per loop turn). */
  reading: boolean;
  lastProgressMs: number;
  lastSendMs: number;
}

interface Incoming {
  readonly groupId: number;
  readonly from: NodeId;
  readonly term: number;
  readonly id: number;
  readonly meta: SnapshotMeta;
  /** Next chunk accepted; chunks before it are staged or waiting in `queue`. */
  nextSeq: number;
  /** Every chunk before it is staged. */
  stagedSeq: number;
  readonly queue: Chunk[];
  writing: boolean;
  /** The last chunk is staged and Raft took the snapshot: waiting for the group to install it. */
  installing: boolean;
  lastProgressMs: number;
}

const sendKey = (groupId: number, to: NodeId): string => `${groupId}\u0000${to}`;

export class SnapshotTransfers {
  private readonly outgoing = new Map<string, Outgoing>();
  private readonly incoming = new Map<number, Incoming>();
  /** Finished transfers whose follower has not acknowledged the snapshot yet: the log is kept from their index. */
  private readonly delivered = new Map<string, { readonly groupId: number; readonly to: NodeId; readonly index: number; readonly atMs: number }>();
  private nextId = 1;
  private stopped = false;
  private readonly counters = {
    sendsStarted: 0,
    sendsFinished: 0,
    sendsAbandoned: 0,
    sendsRefused: 0,
    receivesStarted: 0,
    receivesInstalled: 0,
    receivesAbandoned: 0,
    chunksSent: 0,
    chunksResent: 0,
    chunksStaged: 0,
    chunkBytesMax: 0,
    sendBufferedBytesMax: 0,
    receiveBufferedBytesMax: 0,
  };

  constructor(private readonly deps: SnapshotTransferDeps) {}

  stats(): SnapshotTransferStats {
    return { ...this.counters };
  }

  /** Transfers running now (tests). */
  get active(): { readonly sending: number; readonly receiving: number } {
    return { sending: this.outgoing.size, receiving: this.incoming.size };
  }

  // ------------------------------------------------------------ leader side

  /** The raft node of `group` asked to send `meta`'s snapshot to `to` (it leads in `term`). */
  startSend(group: TransferGroup, to: NodeId, term: number, meta: SnapshotMeta): void {
    if (this.stopped) return;
    const key = sendKey(group.groupId, to);
    const previous = this.outgoing.get(key);
    if (previous !== undefined) this.abandonSend(previous, true, false);
    if (this.outgoing.size >= SNAPSHOT_SENDS_MAX) {
      this.counters.sendsRefused++;
      group.node.reportSnapshot(to, false);
      this.deps.scheduleTurn();
      return;
    }
    const source = group.openSnapshotSource(meta);
    assert.ok(source.meta.index >= meta.index, `snapshot source at ${source.meta.index}, behind the ${meta.index} Raft asked for`);
    const now = this.deps.now();
    const t: Outgoing = {
      groupId: group.groupId,
      to,
      term,
      id: this.nextId++,
      source,
      unacked: [],
      nextSeq: 0,
      sourceDone: false,
      reading: false,
      lastProgressMs: now,
      lastSendMs: now,
    };
    this.outgoing.set(key, t);
    this.counters.sendsStarted++;
    this.fillWindow(t);
  }

  /** Reads and sends the next chunk while the window has room: one per loop turn, so a big read never holds the loop for long. */
  private fillWindow(t: Outgoing): void {
    if (t.reading || t.sourceDone || t.unacked.length >= SNAPSHOT_CHUNKS_IN_FLIGHT_MAX) return;
    t.reading = true;
    this.deps.defer(() => {
      t.reading = false;
      if (this.stopped || this.outgoing.get(sendKey(t.groupId, t.to)) !== t) return; // abandoned meanwhile
      const { data, last } = t.source.nextChunk(SNAPSHOT_CHUNK_BYTES);
      const chunk: Chunk = { seq: t.nextSeq++, data, last };
      t.unacked.push(chunk);
      assert.ok(t.unacked.length <= SNAPSHOT_CHUNKS_IN_FLIGHT_MAX);
      if (last) {
        t.sourceDone = true;
        t.source.close();
      }
      this.sendChunk(t, chunk);
      this.counters.chunksSent++;
      this.counters.chunkBytesMax = Math.max(this.counters.chunkBytesMax, data.length);
      this.counters.sendBufferedBytesMax = Math.max(this.counters.sendBufferedBytesMax, this.sendBufferedBytes());
      this.fillWindow(t);
    });
  }

  private sendChunk(t: Outgoing, c: Chunk): void {
    t.lastSendMs = this.deps.now();
    this.deps.send(t.to, t.groupId, {
      kind: 'chunk',
      from: this.deps.nodeId,
      to: t.to,
      term: t.term,
      transferId: t.id,
      seq: c.seq,
      last: c.last,
      meta: t.source.meta,
      data: c.data,
    });
  }

  /** The lowest snapshot index this node is sending to a follower of `groupId` (Infinity: none): the group keeps its log from there. */
  sendingFloor(groupId: number): number {
    let floor = Infinity;
    for (const t of this.outgoing.values()) if (t.groupId === groupId) floor = Math.min(floor, t.source.meta.index);
    for (const d of this.delivered.values()) if (d.groupId === groupId) floor = Math.min(floor, d.index);
    return floor;
  }

  /** Bytes of chunks held by sending transfers now. */
  sendBufferedBytes(): number {
    let bytes = 0;
    for (const t of this.outgoing.values()) for (const c of t.unacked) bytes += c.data.length;
    return bytes;
  }

  private onAck(t: Outgoing, m: TransferMessage): void {
    if (m.seq > t.nextSeq) return; // acknowledges what was never sent: not this transfer's
    let freed = 0;
    while (t.unacked.length > 0 && (t.unacked[0] as Chunk).seq < m.seq) {
      t.unacked.shift();
      freed++;
    }
    if (freed > 0) t.lastProgressMs = this.deps.now();
    if (t.sourceDone && t.unacked.length === 0) {
      this.outgoing.delete(sendKey(t.groupId, t.to));
      this.counters.sendsFinished++;
      this.delivered.set(sendKey(t.groupId, t.to), { groupId: t.groupId, to: t.to, index: t.source.meta.index, atMs: this.deps.now() });
      this.leaderOf(t)?.node.reportSnapshot(t.to, true);
      this.deps.scheduleTurn();
      return;
    }
    this.fillWindow(t);
  }

  /** The group's raft node still leads in the transfer's term, or undefined. */
  private leaderOf(t: Outgoing): TransferGroup | undefined {
    const g = this.deps.group(t.groupId);
    if (g === undefined || g.node.role !== Role.Leader || g.node.term !== t.term) return undefined;
    return g;
  }

  private abandonSend(t: Outgoing, tellFollower: boolean, tellRaft: boolean): void {
    this.outgoing.delete(sendKey(t.groupId, t.to));
    if (!t.sourceDone) t.source.close();
    t.unacked.length = 0;
    this.counters.sendsAbandoned++;
    if (tellFollower) this.sendControl('abort', t.to, t.groupId, t.term, t.id, 0);
    if (tellRaft) {
      this.leaderOf(t)?.node.reportSnapshot(t.to, false);
      this.deps.scheduleTurn();
    }
  }

  // ---------------------------------------------------------- follower side

  private onChunk(from: NodeId, groupId: number, m: TransferMessage): void {
    const g = this.deps.group(groupId);
    const meta = m.meta;
    if (g === undefined || meta === null) return;
    let t = this.incoming.get(groupId);
    if (t !== undefined && (t.from !== from || t.id !== m.transferId || t.term !== m.term)) {
      // Another transfer for the group: the newer one replaces it, unless it is being installed.
      if (t.installing || m.term < t.term || m.seq !== 0) {
        this.sendControl('abort', from, groupId, m.term, m.transferId, 0);
        return;
      }
      this.abandonReceive(t, true);
      t = undefined;
    }
    if (t === undefined) {
      if (m.seq !== 0 || m.term < g.node.term || this.incoming.size >= SNAPSHOT_RECEIVES_MAX) {
        this.sendControl('abort', from, groupId, m.term, m.transferId, 0);
        return;
      }
      t = {
        groupId,
        from,
        term: m.term,
        id: m.transferId,
        meta,
        nextSeq: 0,
        stagedSeq: 0,
        queue: [],
        writing: false,
        installing: false,
        lastProgressMs: this.deps.now(),
      };
      this.incoming.set(groupId, t);
      this.counters.receivesStarted++;
    }
    if (meta.index !== t.meta.index || meta.term !== t.meta.term) return; // impossible from a sound leader: drop
    if (m.seq !== t.nextSeq || t.queue.length >= SNAPSHOT_CHUNKS_IN_FLIGHT_MAX) {
      // A duplicate (maybe of the last chunk, its ack lost), or a gap (a chunk lost): say where staging stands.
      if (!t.writing) this.ack(t);
      return;
    }
    t.queue.push({ seq: m.seq, data: m.data, last: m.last });
    t.nextSeq++;
    this.counters.receiveBufferedBytesMax = Math.max(this.counters.receiveBufferedBytesMax, this.receiveBufferedBytes());
    this.pump(g, t);
  }

  /** Bytes of received chunks waiting for their staging write now. */
  receiveBufferedBytes(): number {
    let bytes = 0;
    for (const t of this.incoming.values()) for (const c of t.queue) bytes += c.data.length;
    return bytes;
  }

  private pump(g: TransferGroup, t: Incoming): void {
    if (t.writing || t.installing) return;
    const c = t.queue[0];
    if (c === undefined) return;
    t.writing = true;
    g.stageSnapshotChunk(c.data).then(
      () => {
        if (this.incoming.get(t.groupId) !== t) return; // abandoned meanwhile (its staging discarded after this write)
        t.writing = false;
        t.queue.shift();
        t.stagedSeq = c.seq + 1;
        t.lastProgressMs = this.deps.now();
        this.counters.chunksStaged++;
        if (c.last) {
          this.complete(g, t);
          return;
        }
        this.ack(t);
        this.pump(g, t);
      },
      (e: unknown) => {
        if (this.incoming.get(t.groupId) !== t) return;
        process.emitWarning(
          `ordo: ${this.deps.nodeId}: group ${t.groupId}: snapshot chunk from ${t.from} not staged, transfer abandoned: ${e instanceof Error ? e.message : String(e)}`,
        );
        this.abandonReceive(t, true);
      },
    );
  }

  /** Every chunk is staged: Raft decides; the last ack goes out after it, so the leader's probe finds the snapshot taken. */
  private complete(g: TransferGroup, t: Incoming): void {
    const taken = g.snapshotStaged(t.from, t.term, t.meta);
    this.ack(t);
    this.deps.scheduleTurn();
    if (taken) {
      t.installing = true;
      return;
    }
    // Raft did not need it (its log covers it already, or the term moved on).
    this.incoming.delete(t.groupId);
    void g.discardStagedSnapshot().catch(() => undefined);
  }

  /** The group installed the staged snapshot (its Ready was durable). */
  installed(groupId: number): void {
    const t = this.incoming.get(groupId);
    if (t === undefined || !t.installing) return;
    this.incoming.delete(groupId);
    this.counters.receivesInstalled++;
  }

  /** Whether the group's staging holds a complete snapshot at `index` that its raft node took. */
  stagedFor(groupId: number, index: number): boolean {
    const t = this.incoming.get(groupId);
    return t !== undefined && t.installing && t.meta.index === index;
  }

  private ack(t: Incoming): void {
    this.sendControl('ack', t.from, t.groupId, t.term, t.id, t.stagedSeq);
  }

  private abandonReceive(t: Incoming, tellLeader: boolean): void {
    assert.ok(!t.installing, 'abandoning a snapshot being installed');
    this.incoming.delete(t.groupId);
    t.queue.length = 0;
    this.counters.receivesAbandoned++;
    if (tellLeader) this.sendControl('abort', t.from, t.groupId, t.term, t.id, 0);
    const g = this.deps.group(t.groupId);
    if (g !== undefined) void g.discardStagedSnapshot().catch(() => undefined);
  }

  // ------------------------------------------------------------- both sides

  private sendControl(kind: 'ack' | 'abort', to: NodeId, groupId: number, term: number, transferId: number, seq: number): void {
    this.deps.send(to, groupId, { kind, from: this.deps.nodeId, to, term, transferId, seq, last: false, meta: null, data: EMPTY });
  }

  /** A transfer message from peer `from` (already checked to be addressed to this node by `from`). */
  receive(from: NodeId, groupId: number, m: TransferMessage): void {
    if (this.stopped) return;
    if (m.kind === 'chunk') {
      this.onChunk(from, groupId, m);
      return;
    }
    // ack and abort: for a transfer this node sends, or (abort) one it receives.
    const out = this.outgoing.get(sendKey(groupId, from));
    if (out !== undefined && out.id === m.transferId && out.term === m.term) {
      if (m.kind === 'ack') this.onAck(out, m);
      else this.abandonSend(out, false, true);
      return;
    }
    const inc = this.incoming.get(groupId);
    if (m.kind === 'abort' && inc !== undefined && inc.from === from && inc.id === m.transferId && !inc.installing) this.abandonReceive(inc, false);
  }

  /** At every host tick: resend what was not acknowledged, abandon what stalled or lost its term. */
  tick(): void {
    if (this.stopped) return;
    const now = this.deps.now();
    for (const [key, d] of this.delivered) {
      const g = this.deps.group(d.groupId);
      const match = g?.node.role === Role.Leader ? g.node.followers().find((f) => f.id === d.to)?.match : undefined;
      if (match === undefined || match >= d.index || now - d.atMs >= SNAPSHOT_INSTALL_WAIT_MS_MAX) this.delivered.delete(key);
    }
    for (const t of [...this.outgoing.values()]) {
      if (this.leaderOf(t) === undefined) {
        this.abandonSend(t, true, false); // leadership lost or the term changed: Raft forgot this follower's progress
      } else if (now - t.lastProgressMs >= SNAPSHOT_TRANSFER_IDLE_MS_MAX) {
        this.abandonSend(t, true, true);
      } else if (now - t.lastSendMs >= SNAPSHOT_CHUNK_RESEND_MS) {
        for (const c of t.unacked) {
          this.sendChunk(t, c);
          this.counters.chunksResent++;
        }
      }
    }
    for (const t of [...this.incoming.values()]) {
      if (t.installing) continue; // the group's Ready finishes it
      const g = this.deps.group(t.groupId);
      if (g === undefined || g.node.term > t.term || now - t.lastProgressMs >= SNAPSHOT_TRANSFER_IDLE_MS_MAX) this.abandonReceive(t, true);
    }
  }

  /**
   * The host stops: every sending transfer's source is closed, and every
   * receiving transfer forgotten (its staging is discarded when `discard`,
   * else left for the keyspace to remove at its next open).
   */
  stop(discard: boolean): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.outgoing.values()) if (!t.sourceDone) t.source.close();
    this.outgoing.clear();
    this.delivered.clear();
    for (const t of this.incoming.values()) {
      const g = this.deps.group(t.groupId);
      if (discard && !t.installing && g !== undefined) void g.discardStagedSnapshot().catch(() => undefined);
    }
    this.incoming.clear();
  }
}

const EMPTY = new Uint8Array(0);
