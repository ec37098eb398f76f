// MultiRaftHost: every Raft group of one node, driven from one event loop.
//
// A loop turn (scheduled with setImmediate whenever something happened: a
// proposal, a read, a message, a tick) does, for all groups together:
//   1. each group proposes the ops queued since the last turn as one entry
//      and hands queued reads to its node;
//   2. every group with a Ready gives it up; its messages are encoded and
//      gathered per peer, its snapshot / entries / hard state are written to
//      its storage (not yet durable);
//   3. one transport send per peer carries the messages of all groups (the
//      leader's appends leave before its own write is durable, thesis §10.2.1);
//   4. ONE storage commit (`commitTurn`) makes every group's writes durable;
//   5. every group advances, installs a received snapshot, applies its
//      committed entries, answers its proposals and reads, and snapshots /
//      compacts past its thresholds.
// While a turn waits for its commit, messages, ticks and proposals keep
// arriving; they go into the next turn, so batches grow with load.
//
// A group whose only voter is this node campaigns as soon as it is added
// (started or restarted), so a one-node cluster serves at once instead of
// after an election timeout.
//
// A failed storage commit stops the host (fail-stop): what is durable is
// unknown, so every waiting write is answered "outcome unknown" and nothing
// more is sent. Restarting the node recovers from what storage holds. The
// exception is a full disk (a retryable PersistError: nothing was written and
// the store kept it): the host refuses new writes (`diskFull`), keeps serving
// what needs no write, and retries the same commit or checkpoint every
// DISK_FULL_RETRY_MS until it succeeds.
//
// With a keyspace (`keyspace` option, storage/keyspace.ts), each group's state
// machine reads through to it and keeps in memory only what changed since the
// last checkpoint. Between turns, past a threshold (checkpointDue, or
// `checkpointIntervalMs` since the last one, or `checkpointKeysMax` entries in
// memory), the host checkpoints every group's changes in one keyspace write,
// never awaited by a turn (at most one in flight); once it is durable each
// group forgets what it wrote and cuts its log behind it. A failed checkpoint
// stops the host like a failed commit (a full disk is retried, as above).
//
// Snapshots for lagging followers are streamed in chunks outside Raft
// (snapshot-transfer.ts): the raft nodes run with external snapshot transfer,
// the host turns a node's request into a transfer, and on a follower installs
// the staged snapshot (into the keyspace, in one transaction) before the turn
// that records it in the log commits, so a crash leaves either the old state
// or the new one (a keyspace ahead of the log is adopted at restart).

import assert from 'node:assert/strict';
import {
  RAFT_DEFAULTS,
  RaftNode,
  isExternalSnapshot,
  type ConfState,
  type Entry,
  type Message,
  type NodeId,
  type RaftConfig,
  type Ready,
  type WritableStorage,
} from '../raft/index.js';
import { StateMachine } from '../sequencer/state-machine.js';
import { PersistError } from '../storage/store.js';
import { CheckpointedStorage, adoptInstalledCheckpoint, type HostKeyspace, type KeyspaceCheckpointItem } from './keyspace.js';
import { SnapshotTransfers, type SnapshotTransferStats } from './snapshot-transfer.js';
import { realScheduler, type MemoryScheduler } from '../transport/memory.js';
import type { Transport } from '../transport/types.js';
import {
  FRAME_HEADER_BYTES_MAX,
  FRAME_ITEM_OVERHEAD_BYTES_MAX,
  MessageDecodeError,
  decodeFrame,
  encodeFrame,
  encodeMessage,
  encodeTransfer,
  type TransferMessage,
} from './message-codec.js';
import {
  DEFAULT_LOG_KEEP_ENTRIES,
  DEFAULT_PROPOSALS_IN_FLIGHT_MAX,
  DEFAULT_READ_WAITERS_MAX,
  DEFAULT_REQUEST_TIMEOUT_MS,
  DEFAULT_SNAPSHOT_BYTES,
  DEFAULT_SNAPSHOT_ENTRIES,
  RaftGroup,
  type RaftGroupLimits,
  type ReadMode,
} from './raft-group.js';

/** Where the groups of one node keep their Raft state. */
export interface GroupLogStore {
  /** The storage of group `groupId` (created with `initialConf` if new). Writes are durable only after commitTurn. */
  group(groupId: number, initialConf: ConfState): WritableStorage;
  /** Makes every write of every group since the last commitTurn durable, in one step. */
  commitTurn(): Promise<void>;
}

/** Milliseconds between Raft ticks. */
export const DEFAULT_TICK_INTERVAL_MS = 100;
/** Phases of one loop turn: the first proposes; later ones handle what a flush released (see turn()). */
export const TURN_PHASES_MAX = 2;
/**
 * A tick overdue by more than this many tick intervals means the event loop
 * or the process was paused (GC, SIGSTOP, a long synchronous task): the tick
 * count, which leases are counted in, fell behind real time. While a tick is
 * that overdue, groups act on no lease (work that runs before the late tick,
 * such as client requests read after a SIGCONT, must not use a lease that
 * really ran out); when the late tick comes, the host ticks once per interval
 * that passed (at most an election timeout and one), so the count catches up
 * with real time and leases count the pause.
 */
export const TICK_LATE_INTERVALS_MAX = 1;

/** How the host schedules its work (the in-memory bus's end of turn, plus a ticker); replaceable for a virtual clock (the simulator). */
export interface HostScheduler extends Pick<MemoryScheduler, 'endOfTurn'> {
  /** Run `fn` every `ms` until the returned function is called (setInterval). */
  readonly every: (ms: number, fn: () => void) => () => void;
}

export const realHostScheduler: HostScheduler = {
  endOfTurn: realScheduler.endOfTurn,
  every: (ms, fn) => {
    const t = setInterval(fn, ms);
    return () => clearInterval(t);
  },
};
/**
 * With a keyspace: at most this long between a change and the checkpoint that
 * writes it (when none is in flight). Larger checkpoints rewrite fewer B-tree
 * pages per key but hold more keys in memory, and a restart replays at most
 * this much of the log. Measured with a keyspace growing to 3M random keys
 * (npm run bench -- --only storage, INCR/s overall / anonymous memory against
 * redis-server / restart after kill -9): 1 s and 200,000 keys 44K / 1.00x /
 * 1.1 s; 2 s and 300,000 55K / 1.23x / 1.5 s; 5 s and 500,000 76K / 1.80x /
 * 2.1 s.
 */
export const DEFAULT_CHECKPOINT_INTERVAL_MS = 2000;
/** With a keyspace: checkpoint once the groups hold this many changed keys in memory (values, tombstones, token tables). */
export const DEFAULT_CHECKPOINT_KEYS_MAX = 300_000;
/** Milliseconds between attempts to write a turn or a checkpoint again while the disk is full. */
export const DISK_FULL_RETRY_MS = 1000;
/** Upper bound of one peer frame (all groups' messages to one peer in one turn); more frames past it. */
export const PEER_FRAME_BYTES_MAX = 8 * 1024 * 1024;

export type HostRaftOptions = Omit<RaftConfig, 'id' | 'storage' | 'random'>;

export interface MultiRaftHostOptions {
  readonly nodeId: NodeId;
  readonly transport: Transport;
  readonly store: GroupLogStore;
  /** Uniform in [0, 1): election timeouts. */
  readonly random: () => number;
  readonly tickIntervalMs?: number;
  /** Raft limits and timeouts (in ticks), shared by every group. */
  readonly raft?: HostRaftOptions;
  readonly requestTimeoutMs?: number;
  /** How long a write waits for an election while no leader is known (0: answer `noLeader` at once); default requestTimeoutMs. */
  readonly leaderWaitMs?: number;
  readonly proposalsInFlightMax?: number;
  readonly readWaitersMax?: number;
  readonly snapshotEntries?: number;
  readonly snapshotBytes?: number;
  readonly logKeepEntries?: number;
  /** 'lease' (default when check-quorum is on) or 'safe' (ReadIndex round for every read). */
  readonly readMode?: ReadMode;
  /**
   * The node's keyspace (storage/keyspace.ts KeyspaceStore, or MemoryKeyspace
   * in memory-stores.ts): state machines read through to it and are
   * checkpointed into it instead of snapshotted into the log store. Without
   * it, every group's keyspace lives in memory. The owner opens it before and closes it after the host.
   */
  readonly keyspace?: HostKeyspace;
  /** With a keyspace: default DEFAULT_CHECKPOINT_INTERVAL_MS. */
  readonly checkpointIntervalMs?: number;
  /** With a keyspace: default DEFAULT_CHECKPOINT_KEYS_MAX. */
  readonly checkpointKeysMax?: number;
  /** Milliseconds clock for request timeouts and late ticks. Default performance.now. */
  readonly now?: () => number;
  /** Default: setImmediate and setInterval. */
  readonly scheduler?: HostScheduler;
}

export interface HostStats {
  /** Raft ticks driven so far (every group ticks once per host tick). */
  readonly ticks: number;
  readonly turns: number;
  readonly storageCommits: number;
  readonly framesSent: number;
  readonly messagesSent: number;
  /** Frames the transport refused at once (queue full, oversize, unknown peer). */
  readonly framesDropped: number;
  readonly framesReceived: number;
  readonly messagesReceived: number;
  /** Frames that failed to decode (dropped whole). */
  readonly badFrames: number;
  /** Messages for an unknown group, whose from/to do not match the link, or whose shape is impossible. */
  readonly strayMessages: number;
  /** Keyspace checkpoints made durable (all groups in each). */
  readonly checkpoints: number;
  /** Main-thread milliseconds the last checkpoint took to start (taking every group's changes); its encoding and write are the store's. */
  readonly checkpointTakeMs: number;
  /** State machine entries held in memory, all groups (with a keyspace: changed since the last checkpoint). */
  readonly keysInMemory: number;
  readonly failed: boolean;
  /** A disk is full: new writes are refused until a retry succeeds. */
  readonly diskFull: boolean;
  /** Snapshot transfers sent and received (snapshot-transfer.ts). */
  readonly snapshots: SnapshotTransferStats;
}

interface OutItem {
  readonly groupId: number;
  readonly bytes: Uint8Array;
}

export class MultiRaftHost {
  readonly nodeId: NodeId;
  private readonly transport: Transport;
  private readonly store: GroupLogStore;
  private readonly random: () => number;
  private readonly raftOptions: HostRaftOptions;
  private readonly limits: RaftGroupLimits;
  private readonly now: () => number;
  private readonly groups = new Map<number, RaftGroup>();
  private readonly scheduler: HostScheduler;
  private readonly tickIntervalMs: number;
  private readonly stopTicker: () => void;
  /** now() at the last tick (or at the start). */
  private lastTickMs: number;
  private readonly unsubscribe: () => void;
  private turnScheduled = false;
  /** The turn in progress (its promise settles after endTurn), or null. */
  private runningTurn: Promise<void> | null = null;
  private turnAgain = false;
  private storageDirty = false;
  private stopped = false;
  /** Stopped as by a crash (halt, or a storage failure): nothing more is written. */
  private halted = false;
  private failure: unknown = null;
  /** Why writes are refused, per store, while a disk is full (empty: writable). */
  private readonly diskFull = new Map<'log' | 'keyspace', string>();
  /** close() was called: a wait for disk space gives up. */
  private closeRequested = false;
  private readonly keyspace: HostKeyspace | null;
  private readonly checkpointIntervalMs: number;
  private readonly checkpointKeysMax: number;
  /** The checkpoint being written, or null (at most one at a time). */
  private checkpointing: Promise<void> | null = null;
  /** now() when the last checkpoint was taken (or at the start). */
  private lastCheckpointMs: number;
  private checkpointTakeMs = 0;
  private readonly transfers: SnapshotTransfers;
  /** Readys restoring a staged snapshot, waiting for the keyspace to install it (parkForInstall). */
  private readonly parked = new Map<RaftGroup, { readonly rd: Ready; installed: boolean }>();
  private readonly counters = {
    ticks: 0,
    turns: 0,
    storageCommits: 0,
    framesSent: 0,
    messagesSent: 0,
    framesDropped: 0,
    framesReceived: 0,
    messagesReceived: 0,
    badFrames: 0,
    strayMessages: 0,
    checkpoints: 0,
  };

  constructor(opts: MultiRaftHostOptions) {
    this.nodeId = opts.nodeId;
    this.transport = opts.transport;
    assert.equal(this.transport.nodeId, this.nodeId, 'transport of another node');
    this.store = opts.store;
    this.random = opts.random;
    this.raftOptions = opts.raft ?? {};
    this.now = opts.now ?? (() => performance.now());
    const requestTimeoutMs = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.limits = {
      proposalsInFlightMax: opts.proposalsInFlightMax ?? DEFAULT_PROPOSALS_IN_FLIGHT_MAX,
      readWaitersMax: opts.readWaitersMax ?? DEFAULT_READ_WAITERS_MAX,
      requestTimeoutMs,
      leaderWaitMs: opts.leaderWaitMs ?? requestTimeoutMs,
      snapshotEntries: opts.snapshotEntries ?? DEFAULT_SNAPSHOT_ENTRIES,
      snapshotBytes: opts.snapshotBytes ?? DEFAULT_SNAPSHOT_BYTES,
      logKeepEntries: opts.logKeepEntries ?? DEFAULT_LOG_KEEP_ENTRIES,
      readMode: opts.readMode ?? (this.raftOptions.checkQuorum === false ? 'safe' : 'lease'),
    };
    assert.ok(this.limits.proposalsInFlightMax > 0 && this.limits.readWaitersMax > 0);
    assert.ok(this.limits.requestTimeoutMs > 0 && this.limits.snapshotEntries > 0 && this.limits.logKeepEntries >= 0);
    assert.ok(this.limits.leaderWaitMs >= 0, 'leaderWaitMs must not be negative');
    const tickMs = opts.tickIntervalMs ?? DEFAULT_TICK_INTERVAL_MS;
    assert.ok(tickMs > 0, 'tickIntervalMs must be positive');
    this.tickIntervalMs = tickMs;
    this.scheduler = opts.scheduler ?? realHostScheduler;
    this.lastTickMs = this.now();
    this.keyspace = opts.keyspace ?? null;
    this.checkpointIntervalMs = opts.checkpointIntervalMs ?? DEFAULT_CHECKPOINT_INTERVAL_MS;
    this.checkpointKeysMax = opts.checkpointKeysMax ?? DEFAULT_CHECKPOINT_KEYS_MAX;
    assert.ok(this.checkpointIntervalMs > 0 && this.checkpointKeysMax > 0, 'checkpoint limits must be positive');
    this.lastCheckpointMs = this.now();
    this.transfers = new SnapshotTransfers({
      nodeId: this.nodeId,
      now: this.now,
      group: (groupId) => this.groups.get(groupId),
      send: (to, groupId, message) => this.sendTransfer(to, groupId, message),
      scheduleTurn: this.scheduleTurn,
      defer: (fn) => this.scheduler.endOfTurn(fn),
    });
    this.stopTicker = this.scheduler.every(tickMs, () => this.tick());
    this.unsubscribe = this.transport.onMessage((from, payload) => this.receive(from, payload));
  }

  /** Starts (or restarts from storage) this node's replica of a group. */
  addGroup(groupId: number, voters: readonly NodeId[], learners: readonly NodeId[] = []): RaftGroup {
    assert.ok(Number.isSafeInteger(groupId) && groupId >= 0, 'group id must be a non-negative safe integer');
    assert.ok(!this.groups.has(groupId), `group ${groupId} already on this node`);
    assert.ok(!this.stopped, 'host stopped');
    const logStorage = this.store.group(groupId, { voters: [...voters], learners: [...learners] });
    const keyspace = this.keyspace;
    // A snapshot installed into the keyspace whose log write a crash cut off: the log takes it now.
    if (keyspace !== null && adoptInstalledCheckpoint(keyspace, groupId, logStorage)) this.storageDirty = true;
    const storage = keyspace === null ? logStorage : new CheckpointedStorage(logStorage, keyspace, groupId);
    const node = new RaftNode({ ...this.raftOptions, snapshotTransfer: 'external', id: this.nodeId, storage, random: this.random });
    const group = new RaftGroup({
      groupId,
      node,
      storage,
      sm: new StateMachine(keyspace === null ? undefined : keyspace.backing(groupId), { recordChanges: false }),
      ...(keyspace === null ? {} : { keyspace: { store: keyspace, logStorage } }),
      limits: this.limits,
      scheduleTurn: this.scheduleTurn,
      storageWritten: () => {
        this.storageDirty = true;
      },
      snapshotSendFloor: () => this.transfers.sendingFloor(groupId),
      writable: this.writable,
      now: this.now,
      clockTrusted: this.clockTrusted,
    });
    this.groups.set(groupId, group);
    // The only voter needs no one's vote: campaign now rather than after an
    // election timeout of ticks. The raft node wins at once (its term and
    // vote are persisted by the first turn, before it can commit anything).
    const conf = node.status().conf;
    if (conf.voters.length === 1 && conf.voters[0] === this.nodeId) node.hup();
    this.scheduleTurn();
    return group;
  }

  group(groupId: number): RaftGroup | undefined {
    return this.groups.get(groupId);
  }

  allGroups(): IterableIterator<RaftGroup> {
    return this.groups.values();
  }

  stats(): HostStats {
    let keysInMemory = 0;
    for (const g of this.groups.values()) keysInMemory += g.stateMachine.keysInMemory;
    return {
      ...this.counters,
      checkpointTakeMs: this.checkpointTakeMs,
      keysInMemory,
      failed: this.failure !== null,
      diskFull: this.diskFull.size > 0,
      snapshots: this.transfers.stats(),
    };
  }

  /** Answers what can be answered (bounded by the request timeout), makes storage durable, stops. */
  async close(): Promise<void> {
    if (this.stopped) return;
    this.closeRequested = true;
    await Promise.all([...this.groups.values()].map((g) => g.close()));
    while (this.runningTurn !== null) await this.runningTurn;
    this.stopped = true;
    this.stopTicker();
    this.unsubscribe();
    this.transfers.stop(true);
    // A last checkpoint of everything applied, so a restart replays little.
    while (this.checkpointing !== null) await this.checkpointing;
    if (!this.halted && this.keyspace !== null) {
      const started = this.takeCheckpoint();
      if (started !== null) await started;
    }
    if (!this.halted && this.storageDirty) await this.store.commitTurn();
  }

  /** Stops at once, as a crash would (for tests): nothing more is written or sent; waiters get "outcome unknown". */
  halt(): void {
    this.halted = true;
    if (this.stopped) return;
    this.stopped = true;
    this.stopTicker();
    this.unsubscribe();
    this.transfers.stop(false);
    for (const g of this.groups.values()) g.failHost();
  }

  // ------------------------------------------------------------------ loop

  private readonly scheduleTurn = (): void => {
    if (this.turnScheduled || this.stopped) return;
    this.turnScheduled = true;
    this.scheduler.endOfTurn(this.startTurn);
  };

  /** Whether the tick count keeps up with real time (see TICK_LATE_INTERVALS_MAX). */
  private readonly clockTrusted = (): boolean => this.now() - this.lastTickMs <= this.tickLateLimitMs();

  private tickLateLimitMs(): number {
    return this.tickIntervalMs * (1 + TICK_LATE_INTERVALS_MAX);
  }

  private readonly startTurn = (): void => {
    this.turnScheduled = false;
    if (this.stopped) return;
    if (this.runningTurn !== null) {
      this.turnAgain = true;
      return;
    }
    // Anything but a storage failure thrown by a turn is a broken invariant:
    // the rejection is left unhandled, which stops the process loudly.
    this.runningTurn = this.turn().then(() => this.endTurn());
  };

  private endTurn(): void {
    this.runningTurn = null;
    if (this.stopped) return;
    this.maybeCheckpoint();
    let more = this.turnAgain || this.storageDirty;
    for (const parked of this.parked.values()) more ||= parked.installed;
    this.turnAgain = false;
    if (!more) {
      for (const g of this.groups.values()) {
        if (g.hasQueuedWork() || g.node.hasReady()) {
          more = true;
          break;
        }
      }
    }
    if (more) this.scheduleTurn();
  }

  private async turn(): Promise<void> {
    this.counters.turns++;
    for (const g of this.groups.values()) g.beginTurn();
    // A flush can release more work at once: a leader whose only vote is its
    // own commits its entries on its own flush. A follow-up phase (no new
    // proposals) applies and answers them in this turn, so their replies go out
    // right after the flush instead of one flush later.
    for (let phase = 0; phase < TURN_PHASES_MAX; phase++) {
      const flushed = await this.phase();
      if (!flushed || this.stopped) return;
    }
  }

  /** Collects, persists, sends, applies and advances every group's Ready once; true when it flushed storage. */
  private async phase(): Promise<boolean> {
    const readies: [RaftGroup, Ready][] = [];
    const out = new Map<NodeId, OutItem[]>();
    let wrote = this.storageDirty;
    // Readys whose staged snapshot the keyspace now holds: recorded in the log and finished in this phase.
    for (const [g, parked] of this.parked) {
      if (!parked.installed) continue;
      this.parked.delete(g);
      readies.push([g, parked.rd]);
      if (g.persistReady(parked.rd)) wrote = true;
    }
    for (const g of this.groups.values()) {
      if (!g.node.hasReady()) continue;
      const rd = g.node.ready();
      for (const m of rd.messages) {
        if (isExternalSnapshot(m)) {
          assert.ok(m.snapshotMeta !== null);
          this.transfers.startSend(g, m.to, m.term, m.snapshotMeta);
          continue;
        }
        let items = out.get(m.to);
        if (items === undefined) {
          items = [];
          out.set(m.to, items);
        }
        items.push({ groupId: g.groupId, bytes: encodeMessage(m) });
      }
      if (rd.snapshot !== null && rd.snapshot.data.length === 0) {
        // Restored from staged chunks (external transfer): the staging must be this snapshot's.
        assert.ok(this.transfers.stagedFor(g.groupId, rd.snapshot.meta.index), `group ${g.groupId}: a snapshot restored without staged data`);
        if (g.needsStagedInstall(rd.snapshot)) {
          this.parkForInstall(g, rd);
          continue;
        }
      }
      readies.push([g, rd]);
      if (g.persistReady(rd)) wrote = true;
    }
    for (const [peer, items] of out) this.sendFrames(peer, items);
    if (readies.length === 0 && !wrote) return false;
    // Committed entries are answered now, not after this phase's flush: one
    // await lets the replies they released be written to their sockets
    // (queued as microtasks) before the commit.
    for (const [g, rd] of readies) g.applyCommitted(rd);
    await Promise.resolve();
    if (this.stopped) return false;
    if (wrote) {
      this.storageDirty = false;
      try {
        await this.store.commitTurn();
      } catch (e) {
        if (!(await this.retryWhileDiskFull('log', e, () => this.store.commitTurn()))) return false;
      }
      this.counters.storageCommits++;
      if (this.stopped) return false; // halted while the write was in flight: it never "completed" for this node
    }
    for (const [g, rd] of readies) {
      g.finishReady(rd);
      if (rd.snapshot !== null) this.transfers.installed(g.groupId);
    }
    return wrote;
  }

  /**
   * A Ready restoring a staged snapshot waits, with its messages sent, while
   * the keyspace installs the snapshot (an O(group size) transaction); the
   * other groups' turns go on meanwhile. Once installed, a later phase records
   * it in the log and finishes it (the raft node gives this group no other
   * Ready until then).
   */
  private parkForInstall(g: RaftGroup, rd: Ready): void {
    const snap = rd.snapshot;
    assert.ok(snap !== null && !this.parked.has(g));
    const parked = { rd, installed: false };
    this.parked.set(g, parked);
    g.beginStagedInstall(snap.meta).then(
      () => {
        parked.installed = true;
        this.scheduleTurn();
      },
      (e: unknown) => {
        if (!this.halted) this.fail(e);
      },
    );
  }

  private sendFrames(peer: NodeId, items: readonly OutItem[]): void {
    const limit = Math.min(this.transport.messageBytesMax, PEER_FRAME_BYTES_MAX) - FRAME_HEADER_BYTES_MAX;
    let start = 0;
    while (start < items.length) {
      let bytes = 0;
      let end = start;
      while (end < items.length) {
        const size = (items[end] as OutItem).bytes.length + FRAME_ITEM_OVERHEAD_BYTES_MAX;
        if (end > start && bytes + size > limit) break;
        bytes += size;
        end++;
      }
      const frame = encodeFrame(start === 0 && end === items.length ? items : items.slice(start, end));
      if (this.transport.send(peer, frame)) {
        this.counters.framesSent++;
        this.counters.messagesSent += end - start;
      } else {
        this.counters.framesDropped++; // Raft retransmits what matters
      }
      start = end;
    }
  }

  /** One transfer message in a frame of its own (chunks are big; the window bounds how many are queued). */
  private sendTransfer(to: NodeId, groupId: number, message: TransferMessage): boolean {
    const frame = encodeFrame([{ groupId, bytes: encodeTransfer(message) }]);
    const sent = this.transport.send(to, frame);
    if (sent) {
      this.counters.framesSent++;
      this.counters.messagesSent++;
    } else {
      this.counters.framesDropped++;
    }
    return sent;
  }

  private tick(): void {
    if (this.stopped) return;
    const now = this.now();
    let ticks = 1;
    if (now - this.lastTickMs > this.tickLateLimitMs()) {
      const electionTimeoutTicks = this.raftOptions.electionTimeoutTicks ?? RAFT_DEFAULTS.electionTimeoutTicks;
      ticks = Math.min(Math.floor((now - this.lastTickMs) / this.tickIntervalMs), electionTimeoutTicks + 1);
    }
    this.lastTickMs = now;
    for (let t = 0; t < ticks; t++) {
      this.counters.ticks++;
      for (const g of this.groups.values()) g.node.tick();
    }
    for (const g of this.groups.values()) g.expire();
    this.transfers.tick();
    this.maybeCheckpoint();
    this.scheduleTurn();
  }

  // ------------------------------------------------------------ checkpoints

  /**
   * With a keyspace and none in flight: checkpoints every group when one is
   * due, or the interval passed. Only between turns: in the middle of one, a
   * group may have written a received snapshot into its log that its state
   * machine has not installed yet.
   */
  private maybeCheckpoint(): void {
    if (this.keyspace === null || this.checkpointing !== null || this.stopped || this.runningTurn !== null) return;
    let due = this.now() - this.lastCheckpointMs >= this.checkpointIntervalMs;
    if (!due) {
      let keysInMemory = 0;
      for (const g of this.groups.values()) {
        if (g.checkpointDue()) {
          due = true;
          break;
        }
        keysInMemory += g.stateMachine.keysInMemory;
      }
      due ||= keysInMemory >= this.checkpointKeysMax;
    }
    if (due) void this.takeCheckpoint();
  }

  /**
   * Takes every group's changes and writes them as one checkpoint, not
   * awaited by any turn; once durable, each group forgets what it wrote and
   * cuts its log (written by the next turn). Returns the checkpoint's
   * completion, or null when no group had anything to write.
   */
  private takeCheckpoint(): Promise<void> | null {
    const keyspace = this.keyspace;
    assert.ok(keyspace !== null && this.checkpointing === null);
    const started = this.now();
    this.lastCheckpointMs = started;
    const taken: [RaftGroup, KeyspaceCheckpointItem][] = [];
    for (const g of this.groups.values()) {
      const item = g.beginCheckpoint();
      if (item !== null) taken.push([g, item]);
    }
    this.checkpointTakeMs = this.now() - started;
    if (taken.length === 0) return null;
    const items = taken.map(([, item]) => item);
    const done = keyspace
      .checkpoint(items)
      .catch(async (e: unknown) => {
        if (!(await this.retryWhileDiskFull('keyspace', e, () => keyspace.checkpoint(items)))) throw e;
      })
      .then(
        () => {
          this.checkpointing = null;
          if (this.halted) return;
          this.counters.checkpoints++;
          for (const [g, item] of taken) g.checkpointDone(item);
          if (this.storageDirty) this.scheduleTurn();
          this.maybeCheckpoint();
        },
        (e: unknown) => {
          this.checkpointing = null;
          this.fail(e);
        },
      );
    this.checkpointing = done;
    return done;
  }

  private receive(from: NodeId, payload: Uint8Array): void {
    if (this.stopped) return;
    let items;
    try {
      items = decodeFrame(payload);
    } catch (e) {
      if (!(e instanceof MessageDecodeError)) throw e;
      this.counters.badFrames++;
      return;
    }
    this.counters.framesReceived++;
    for (const item of items) {
      if ('transfer' in item) {
        const t = item.transfer;
        if (t.to !== this.nodeId || t.from !== from || !this.groups.has(item.groupId)) {
          this.counters.strayMessages++;
          continue;
        }
        this.counters.messagesReceived++;
        this.transfers.receive(from, item.groupId, t);
        continue;
      }
      const { groupId, message } = item;
      const g = this.groups.get(groupId);
      if (g === undefined || message.to !== this.nodeId || message.from !== from || !wellFormed(message)) {
        this.counters.strayMessages++;
        continue;
      }
      this.counters.messagesReceived++;
      g.node.step(message);
    }
    this.scheduleTurn();
  }

  /** Whether new writes may be proposed (false while a disk is full). */
  private readonly writable = (): boolean => this.diskFull.size === 0;

  /**
   * After `e`: while it says the disk is full (a retryable PersistError:
   * nothing was written, the store kept it), refuses new writes and calls
   * `attempt` every DISK_FULL_RETRY_MS until it succeeds (true: writes go on)
   * or fails otherwise, or the host is closed (then the host fails: false).
   */
  private async retryWhileDiskFull(store: 'log' | 'keyspace', e: unknown, attempt: () => Promise<void>): Promise<boolean> {
    let error = e;
    while (error instanceof PersistError && error.retryable && !this.stopped && !this.closeRequested) {
      if (!this.diskFull.has(store))
        process.emitWarning(`ordo: ${this.nodeId}: the ${store} cannot be written, writes are refused until it can: ${error.message}`);
      this.diskFull.set(store, error.message);
      await new Promise<void>((resolve) => {
        const stop = this.scheduler.every(DISK_FULL_RETRY_MS, () => {
          stop();
          resolve();
        });
      });
      if (this.stopped || this.closeRequested) break;
      try {
        await attempt();
        this.diskFull.delete(store);
        process.emitWarning(`ordo: ${this.nodeId}: the ${store} is written again; writes resume`);
        return true;
      } catch (e2) {
        error = e2;
      }
    }
    this.diskFull.delete(store);
    this.fail(error);
    return false;
  }

  private fail(e: unknown): void {
    if (this.failure !== null) return;
    this.failure = e;
    process.emitWarning(`ordo: replication stopped on ${this.nodeId}: ${e instanceof Error ? e.message : String(e)}`);
    this.halt();
  }
}

/**
 * Shape checks the raft node asserts rather than handles (a peer that sends
 * these is broken; its message is dropped instead of stopping this node).
 */
function wellFormed(m: Message): boolean {
  if (m.type === 'append') {
    for (let i = 0; i < m.entries.length; i++) {
      if ((m.entries[i] as Entry).index !== m.index + 1 + i) return false;
    }
  }
  if (m.type === 'snapshot') {
    if (m.snapshotMeta === null || m.chunk === null) return false;
    if (m.offset + m.chunk.length > m.totalBytes) return false;
  }
  return true;
}
